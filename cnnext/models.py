"""Ready-made networks: LeNet-5, a small ResNet and a MobileNet-style network.

Each function returns a fresh :class:`cnnext.nn.Sequential` of cnnext
layers, in training mode, for ``(N, in_channels, H, W)`` float input
(28x28 MNIST images are what they are sized for; the ResNet and the
MobileNet end in global average pooling, so they accept any image size of
at least 8x8).  ``seed`` fixes every initial weight (an int, a
``numpy.random.Generator`` or None for fresh entropy).

* :func:`lenet5` -- LeCun et al., "Gradient-Based Learning Applied to
  Document Recognition" (1998), with ReLU and max pooling as usually taught.
* :func:`resnet8` -- He et al., "Deep Residual Learning for Image
  Recognition" (2015, https://arxiv.org/abs/1512.03385): the CIFAR-style
  ResNet with one basic block per stage.
* :func:`mobilenet_small` -- Howard et al., "MobileNets: Efficient
  Convolutional Neural Networks for Mobile Vision Applications" (2017,
  https://arxiv.org/abs/1704.04861): depthwise-separable blocks.

Examples
--------
>>> import numpy as np
>>> from cnnext import models
>>> model = models.resnet8(seed=0)
>>> model.forward(np.zeros((2, 1, 28, 28), dtype=np.float32)).shape
(2, 10)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _validate as V
from . import nn

if TYPE_CHECKING:
    from ._typing import Seed

__all__ = ["lenet5", "resnet8", "mobilenet_small"]


class _Layers:
    """Layer factory of one model: its random generator and dtype."""

    def __init__(
        self, fname: str, in_channels: int, num_classes: int, seed: Seed, dtype: npt.DTypeLike
    ) -> None:
        V.as_int(fname, "in_channels", in_channels, 1)
        V.as_int(fname, "num_classes", num_classes, 1)
        self.dtype = V.float_dtype(fname, dtype)
        self.rng = V.rng(fname, seed)

    def conv(self, c_in: int, c_out: int, k: int, **kw: Any) -> nn.Conv2D:
        return nn.Conv2D(c_in, c_out, k, seed=self.rng, dtype=self.dtype, **kw)

    def dense(self, n_in: int, n_out: int, **kw: Any) -> nn.Dense:
        return nn.Dense(n_in, n_out, seed=self.rng, dtype=self.dtype, **kw)

    def conv_bn(self, c_in: int, c_out: int, k: int, stride: int, groups: int = 1
                ) -> list[nn.Module]:
        """Convolution (no bias: batch norm follows) and batch norm."""
        return [
            self.conv(c_in, c_out, k, stride=stride, padding=k // 2, groups=groups, bias=False),
            nn.BatchNorm2D(c_out, dtype=self.dtype),
        ]

    def basic_block(self, c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        """ResNet basic block: ``relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))``.

        The shortcut is the identity when the shape is kept, else a 1x1
        convolution with the block's stride and batch norm (a projection).
        """
        block = nn.Sequential(
            *self.conv_bn(c_in, c_out, 3, stride), nn.ReLU(), *self.conv_bn(c_out, c_out, 3, 1)
        )
        shortcut = None
        if stride != 1 or c_in != c_out:
            shortcut = nn.Sequential(*self.conv_bn(c_in, c_out, 1, stride))
        return [nn.Residual(block, shortcut), nn.ReLU()]

    def separable(self, c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        """Depthwise 3x3 (with the stride) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU."""
        return [
            *self.conv_bn(c_in, c_in, 3, stride, groups=c_in),
            nn.ReLU(),
            *self.conv_bn(c_in, c_out, 1, 1),
            nn.ReLU(),
        ]


def lenet5(
    in_channels: int = 1, num_classes: int = 10, seed: Seed = None, *,
    dtype: npt.DTypeLike = np.float32,
) -> nn.Sequential:
    """LeNet-5 for 28x28 input.

    conv 6@5x5 (padding 2) -> ReLU -> max-pool 2 -> conv 16@5x5 -> ReLU ->
    max-pool 2 -> Dense 120 -> ReLU -> Dense 84 -> ReLU -> Dense
    ``num_classes`` (61,706 parameters for one input channel and 10
    classes).

    Parameters
    ----------
    in_channels : int
    num_classes : int
    seed : int, numpy.random.Generator or None
    dtype : {float32, float64}
        Of the parameters and the computation.

    Returns
    -------
    Sequential
        Input ``(N, in_channels, 28, 28)``, output ``(N, num_classes)``
        logits.
    """
    make = _Layers("lenet5", in_channels, num_classes, seed, dtype)
    return nn.Sequential(
        make.conv(in_channels, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2D(2),
        make.conv(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Flatten(),
        make.dense(16 * 5 * 5, 120),
        nn.ReLU(),
        make.dense(120, 84),
        nn.ReLU(),
        make.dense(84, num_classes, init="glorot"),
    )


def resnet8(
    in_channels: int = 1, num_classes: int = 10, seed: Seed = None, width: int = 16, *,
    dtype: npt.DTypeLike = np.float32,
) -> nn.Sequential:
    """A small ResNet: a stem, three stages of one basic block, a dense head.

    stem: conv 3x3 ``width`` -> batch norm -> ReLU; stages of ``width``,
    ``2*width`` and ``4*width`` channels at strides 1, 2, 2, each one basic
    block (two 3x3 convolutions with batch norm, a projection shortcut
    where the shape changes); global average pooling; Dense to
    ``num_classes``.  Eight weighted layers on the main path (77,754
    parameters at ``width=16``, one input channel and 10 classes).

    Parameters
    ----------
    in_channels : int
    num_classes : int
    seed : int, numpy.random.Generator or None
    dtype : {float32, float64}
        Of the parameters and the computation.
    width : int
        Channels of the stem and the first stage.

    Returns
    -------
    Sequential
        Input ``(N, in_channels, H, W)``, output ``(N, num_classes)``
        logits.
    """
    make = _Layers("resnet8", in_channels, num_classes, seed, dtype)
    width = V.as_int("resnet8", "width", width, 1)
    return nn.Sequential(
        *make.conv_bn(in_channels, width, 3, 1),
        nn.ReLU(),
        *make.basic_block(width, width, 1),
        *make.basic_block(width, 2 * width, 2),
        *make.basic_block(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2D(1),
        nn.Flatten(),
        make.dense(4 * width, num_classes, init="torch"),
    )


def mobilenet_small(
    in_channels: int = 1, num_classes: int = 10, seed: Seed = None, *,
    dtype: npt.DTypeLike = np.float32,
) -> nn.Sequential:
    """A MobileNet-style network of depthwise-separable blocks.

    stem: conv 3x3 32 -> batch norm -> ReLU; separable blocks 32->64,
    64->128 (stride 2), 128->128, 128->256 (stride 2), 256->256 (the first
    blocks of MobileNet v1); global average pooling; Dense to
    ``num_classes``.  A separable block is a depthwise 3x3 convolution
    (``groups`` equal to its channels) and a pointwise 1x1 convolution, each
    followed by batch norm and ReLU (136,202 parameters for one input
    channel and 10 classes).

    Parameters
    ----------
    in_channels : int
    num_classes : int
    seed : int, numpy.random.Generator or None
    dtype : {float32, float64}
        Of the parameters and the computation.

    Returns
    -------
    Sequential
        Input ``(N, in_channels, H, W)``, output ``(N, num_classes)``
        logits.
    """
    make = _Layers("mobilenet_small", in_channels, num_classes, seed, dtype)
    return nn.Sequential(
        *make.conv_bn(in_channels, 32, 3, 1),
        nn.ReLU(),
        *make.separable(32, 64, 1),
        *make.separable(64, 128, 2),
        *make.separable(128, 128, 1),
        *make.separable(128, 256, 2),
        *make.separable(256, 256, 1),
        nn.AdaptiveAvgPool2D(1),
        nn.Flatten(),
        make.dense(256, num_classes, init="torch"),
    )
