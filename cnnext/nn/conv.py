"""Convolution layers."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .. import _validate as V
from .. import functional as F
from ..functional.conv import _conv1d_plan, _conv2d_plan, _conv_transpose2d_plan
from .module import Weighted, init_params

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .._plan import Conv1dPlan, ConvPlan, ConvTransposePlan
    from .._typing import FloatArray, Init, IntOrPair, Seed


class Conv2D(Weighted):
    """2-D convolution layer (cross-correlation), as ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding, dilation : int or (int, int)
        As in :func:`cnnext.functional.conv2d` (``padding`` may be
        ``"same"`` or ``"valid"``).
    groups : int
        Channel groups, dividing ``in_channels`` and ``out_channels``.
    bias : bool
        Whether to learn a per-channel bias.
    init : {"he", "glorot", "torch"}
        Weight initialization (:mod:`cnnext.nn`); default He normal, for a
        convolution followed by ReLU.
    dtype : float32 or float64
    seed : int, numpy.random.Generator or None

    Attributes
    ----------
    weight : ndarray, shape (out_channels, in_channels / groups, kH, kW)
        The live weight (``params["weight"]``).
    bias : ndarray of shape (out_channels,), or None
        The live bias (``params["bias"]``), None when ``bias=False``.

    Notes
    -----
    Shape:

    - Input: ``(N, C_in, H, W)`` or ``(C_in, H, W)``
    - Output: ``(N, C_out, OH, OW)`` or ``(C_out, OH, OW)``, with
      ``OH = floor((H + 2*pH - dH*(kH - 1) - 1) / sH) + 1`` (likewise ``OW``;
      ``OH = H`` with ``padding="same"``)

    Initialization uses ``fan_in = in_channels/groups*kH*kW`` and ``fan_out
    = out_channels*kH*kW``, as PyTorch.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> conv = nn.Conv2D(1, 8, 3, bias=False, seed=0)
    >>> y = conv.forward(np.zeros((2, 1, 28, 28), dtype=np.float32))
    >>> y.shape, conv.backward(np.ones_like(y)).shape
    ((2, 8, 26, 26), (2, 1, 28, 28))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: str | IntOrPair = 0,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        init: Init = "he",
        dtype: npt.DTypeLike = np.float32,
        seed: Seed = None,
    ) -> None:
        super().__init__()
        fname = "Conv2D"
        self.in_channels = V.as_int(fname, "in_channels", in_channels, 1)
        self.out_channels = V.as_int(fname, "out_channels", out_channels, 1)
        self.kernel_size = V.pair(fname, "kernel_size", kernel_size, 1)
        self.stride = V.pair(fname, "stride", stride, 1)
        self.padding = V.conv_padding(fname, padding)
        self.dilation = V.pair(fname, "dilation", dilation, 1)
        self.groups = V.groups(fname, groups)
        V.group_channels(fname, self.groups, self.in_channels, self.out_channels)
        V.resolve_padding(fname, self.padding, self.stride, self.kernel_size, self.dilation)
        has_bias = V.boolean(fname, "bias", bias)
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        init_params(self, fname, init, dtype, seed, shape, self.out_channels if has_bias else 0)

    def _call_forward(self, x: FloatArray, w: FloatArray, b: FloatArray | None) -> FloatArray:
        if x.ndim in (3, 4):  # the layer's own terms: in_channels
            V.channels_match("Conv2D.forward", x.shape, self.in_channels, "in_channels")
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def _call_backward(
        self, g: FloatArray, x: FloatArray, w: FloatArray, has_bias: bool
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        # The input gradient is the full convolution of g with the
        # 180-degree-rotated kernel.
        return F.conv2d_backward(g, x, w, self.stride, self.padding, self.dilation, self.groups,
                                 bias=has_bias)

    def _plan_of(self, x: FloatArray, w: FloatArray, b: FloatArray | None) -> ConvPlan:
        """The plan ``F.conv2d`` just used."""
        return _conv2d_plan("conv2d", x, w, b, self.dtype, self.stride, self.padding,
                              self.dilation, self.groups)

    def __repr__(self) -> str:
        return _conv_repr("Conv2D", self)


class ConvTranspose2D(Weighted):
    """2-D transposed convolution layer, as ``torch.nn.ConvTranspose2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding, output_padding : int or (int, int)
        As in :func:`cnnext.functional.conv_transpose2d`.
    groups : int
        Channel groups, dividing ``in_channels`` and ``out_channels``.
    bias : bool
        Whether to learn a per-channel bias.
    dilation : int or (int, int)
    init : {"he", "glorot", "torch"}
        Weight initialization (:mod:`cnnext.nn`), with PyTorch's fans of this
        weight: ``fan_in = out_channels/groups*kH*kW``, ``fan_out =
        in_channels*kH*kW``.
    dtype : float32 or float64
    seed : int, numpy.random.Generator or None

    Attributes
    ----------
    weight : ndarray, shape (in_channels, out_channels / groups, kH, kW)
        The live weight (``params["weight"]``), input channels first as in
        PyTorch.
    bias : ndarray of shape (out_channels,), or None

    Notes
    -----
    Shape:

    - Input: ``(N, C_in, H, W)`` or ``(C_in, H, W)``
    - Output: ``(N, C_out, OH, OW)`` or ``(C_out, OH, OW)``, with
      ``OH = (H - 1)*sH - 2*pH + dH*(kH - 1) + output_padding_h + 1``

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> up = nn.ConvTranspose2D(4, 2, 2, stride=2, seed=0)
    >>> y = up.forward(np.zeros((1, 4, 5, 5), dtype=np.float32))
    >>> y.shape, up.backward(np.ones_like(y)).shape
    ((1, 2, 10, 10), (1, 4, 5, 5))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair,
        stride: IntOrPair = 1,
        padding: IntOrPair = 0,
        output_padding: IntOrPair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: IntOrPair = 1,
        *,
        init: Init = "he",
        dtype: npt.DTypeLike = np.float32,
        seed: Seed = None,
    ) -> None:
        super().__init__()
        fname = "ConvTranspose2D"
        self.in_channels = V.as_int(fname, "in_channels", in_channels, 1)
        self.out_channels = V.as_int(fname, "out_channels", out_channels, 1)
        self.kernel_size = V.pair(fname, "kernel_size", kernel_size, 1)
        self.stride = V.pair(fname, "stride", stride, 1)
        self.padding = V.pair(fname, "padding", padding, 0)
        self.output_padding = V.pair(fname, "output_padding", output_padding, 0)
        self.groups = V.groups(fname, groups)
        self.dilation = V.pair(fname, "dilation", dilation, 1)
        V.group_channels(fname, self.groups, self.in_channels, self.out_channels)
        for ax, name in enumerate(("height", "width")):
            op, s, d = self.output_padding[ax], self.stride[ax], self.dilation[ax]
            if op >= max(s, d):
                raise ValueError(
                    f"{fname}: output_padding must be smaller than stride or dilation along "
                    f"{name}: output_padding {op}, stride {s}, dilation {d}"
                )
        has_bias = V.boolean(fname, "bias", bias)
        kh, kw = self.kernel_size
        shape = (self.in_channels, self.out_channels // self.groups, kh, kw)
        init_params(self, fname, init, dtype, seed, shape, self.out_channels if has_bias else 0)

    def _call_forward(self, x: FloatArray, w: FloatArray, b: FloatArray | None) -> FloatArray:
        if x.ndim in (3, 4):
            V.channels_match("ConvTranspose2D.forward", x.shape, self.in_channels,
                             "in_channels")
        return F.conv_transpose2d(x, w, b, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)

    def _call_backward(
        self, g: FloatArray, x: FloatArray, w: FloatArray, has_bias: bool
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        return F.conv_transpose2d_backward(g, x, w, self.stride, self.padding,
                                           self.output_padding, self.groups, self.dilation,
                                           bias=has_bias)

    def _plan_of(
        self, x: FloatArray, w: FloatArray, b: FloatArray | None
    ) -> ConvTransposePlan:
        """The plan ``F.conv_transpose2d`` just used."""
        return _conv_transpose2d_plan("conv_transpose2d", x, w, b, self.dtype, self.stride,
                                        self.padding, self.output_padding, self.groups,
                                        self.dilation)

    def __repr__(self) -> str:
        return (
            f"ConvTranspose2D({self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"output_padding={self.output_padding}, groups={self.groups}, "
            f"bias={self.bias is not None}, dilation={self.dilation})"
        )


class Conv1D(Weighted):
    """1-D convolution layer (cross-correlation), as ``torch.nn.Conv1d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int,)
    stride, padding, dilation : int or (int,)
        As in :func:`cnnext.functional.conv1d` (``padding`` may be
        ``"same"`` or ``"valid"``).
    groups : int
        Channel groups, dividing ``in_channels`` and ``out_channels``.
    bias : bool
        Whether to learn a per-channel bias.
    init : {"he", "glorot", "torch"}
        Weight initialization (:mod:`cnnext.nn`), ``fan_in =
        in_channels/groups*k``.
    dtype : float32 or float64
    seed : int, numpy.random.Generator or None

    Attributes
    ----------
    weight : ndarray, shape (out_channels, in_channels / groups, k)
    bias : ndarray of shape (out_channels,), or None

    Notes
    -----
    Shape:

    - Input: ``(N, C_in, L)`` or ``(C_in, L)``
    - Output: ``(N, C_out, OL)`` or ``(C_out, OL)``, with
      ``OL = floor((L + 2*p - d*(k - 1) - 1) / s) + 1``

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> conv = nn.Conv1D(4, 8, 3, padding="same", groups=2, seed=0)
    >>> y = conv.forward(np.zeros((2, 4, 50), dtype=np.float32))
    >>> y.shape, conv.backward(np.ones_like(y)).shape
    ((2, 8, 50), (2, 4, 50))
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: str | int | Sequence[int] = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        *,
        init: Init = "he",
        dtype: npt.DTypeLike = np.float32,
        seed: Seed = None,
    ) -> None:
        super().__init__()
        fname = "Conv1D"
        self.in_channels = V.as_int(fname, "in_channels", in_channels, 1)
        self.out_channels = V.as_int(fname, "out_channels", out_channels, 1)
        self.kernel_size = V.single(fname, "kernel_size", kernel_size, 1)
        self.stride = V.single(fname, "stride", stride, 1)
        self.padding = V.conv1d_padding(fname, padding)
        self.dilation = V.single(fname, "dilation", dilation, 1)
        self.groups = V.groups(fname, groups)
        V.group_channels(fname, self.groups, self.in_channels, self.out_channels)
        if isinstance(self.padding, str):
            V.resolve_padding(fname, self.padding, (self.stride,), (self.kernel_size,),
                              (self.dilation,))
        has_bias = V.boolean(fname, "bias", bias)
        shape = (self.out_channels, self.in_channels // self.groups, self.kernel_size)
        init_params(self, fname, init, dtype, seed, shape, self.out_channels if has_bias else 0)

    def _call_forward(self, x: FloatArray, w: FloatArray, b: FloatArray | None) -> FloatArray:
        if x.ndim in (2, 3):
            axis = x.ndim - 2
            if x.shape[axis] != self.in_channels:
                raise ValueError(
                    f"Conv1D.forward: x.shape[{axis}] ({x.shape[axis]}) must equal "
                    f"in_channels ({self.in_channels}), the number of input channels"
                )
        return F.conv1d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def _call_backward(
        self, g: FloatArray, x: FloatArray, w: FloatArray, has_bias: bool
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        return F.conv1d_backward(g, x, w, self.stride, self.padding, self.dilation, self.groups,
                                 bias=has_bias)

    def _plan_of(self, x: FloatArray, w: FloatArray, b: FloatArray | None) -> Conv1dPlan:
        """The plan ``F.conv1d`` just used."""
        return _conv1d_plan("conv1d", x, w, b, self.dtype, self.stride, self.padding,
                              self.dilation, self.groups)

    def __repr__(self) -> str:
        return _conv_repr("Conv1D", self)


def _conv_repr(name: str, layer: Conv2D | Conv1D) -> str:
    return (
        f"{name}({layer.in_channels}, {layer.out_channels}, kernel_size={layer.kernel_size}, "
        f"stride={layer.stride}, padding={layer.padding!r}, dilation={layer.dilation}, "
        f"groups={layer.groups}, bias={layer.bias is not None})"
    )
