"""Convolution layers."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .. import _validate as V
from .. import functional as F
from .module import Weighted, check_init, init_bias, init_weight

if TYPE_CHECKING:
    from .._plan import ConvPlan
    from .._typing import FloatArray, Init, IntOrPair, Seed


class Conv2D(Weighted):
    """2-D convolution layer (cross-correlation), as ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding, dilation : int or (int, int)
        As in :func:`cnnext.functional.conv2d`.
    bias : bool
        Whether to learn a per-channel bias.
    init : {"he", "glorot", "torch"}
        Weight initialization (:mod:`cnnext.nn`); default He normal, for a
        convolution followed by ReLU.
    dtype : float32 or float64
    seed : int, numpy.random.Generator or None

    Attributes
    ----------
    weight : ndarray, shape (out_channels, in_channels, kH, kW)
        The live weight (``params["weight"]``).
    bias : ndarray of shape (out_channels,), or None
        The live bias (``params["bias"]``), None when ``bias=False``.

    Notes
    -----
    Shape:

    - Input: ``(N, C_in, H, W)`` or ``(C_in, H, W)``
    - Output: ``(N, C_out, OH, OW)`` or ``(C_out, OH, OW)``, with
      ``OH = floor((H + 2*pH - dH*(kH - 1) - 1) / sH) + 1`` (likewise ``OW``)

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
        padding: IntOrPair = 0,
        dilation: IntOrPair = 1,
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
        self.padding = V.pair(fname, "padding", padding, 0)
        self.dilation = V.pair(fname, "dilation", dilation, 1)
        has_bias = V.boolean(fname, "bias", bias)
        self.init = check_init(fname, init)
        self.dtype = V.float_dtype(fname, dtype)
        rng = V.rng(fname, seed)
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        fan_out = self.out_channels * kh * kw
        shape = (self.out_channels, self.in_channels, kh, kw)
        self._params["weight"] = init_weight(fname, rng, init, shape, fan_in, fan_out, self.dtype)
        if has_bias:
            self._params["bias"] = init_bias(rng, init, self.out_channels, fan_in, self.dtype)
        self._grads = {k: np.zeros_like(v) for k, v in self._params.items()}

    def _call_forward(self, x: FloatArray, w: FloatArray, b: FloatArray | None) -> FloatArray:
        if x.ndim in (3, 4):  # the layer's own terms: in_channels
            V.channels_match("Conv2D.forward", x.shape, self.in_channels, "in_channels")
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation)

    def _call_backward(
        self, g: FloatArray, x: FloatArray, w: FloatArray, has_bias: bool
    ) -> tuple[FloatArray, FloatArray, FloatArray | None]:
        # The input gradient is the full convolution of g with the
        # 180-degree-rotated kernel.
        return F.conv2d_backward(g, x, w, self.stride, self.padding, self.dilation,
                                 bias=has_bias)

    def _plan_of(self, x: FloatArray, w: FloatArray, b: FloatArray | None) -> ConvPlan:
        """The plan ``F.conv2d`` just used."""
        return F._conv2d_plan("conv2d", x, w, b, self.dtype, self.stride, self.padding,
                              self.dilation)

    def __repr__(self) -> str:
        return (
            f"Conv2D({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"bias={self.bias is not None})"
        )
