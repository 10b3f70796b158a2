"""Pooling layers."""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy.typing as npt

from .. import _config
from .. import _validate as V
from .. import functional as F
from .module import Module, steady

if TYPE_CHECKING:
    from .._plan import PoolPlan
    from .._typing import FloatArray, IndexArray, IntOrPair, Shape


class _Pool2D(Module):
    """What max and average pooling share: options, plan keeping, repr."""

    _kind = ""

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
    ) -> None:
        super().__init__()
        fname = type(self).__name__
        self.kernel_size = V.pair(fname, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else V.pair(fname, "stride", stride, 1)
        self.padding = V.pair(fname, "padding", padding, 0)
        self._plan: PoolPlan | None = None
        self._plan_threads = 0

    def _steady_plan(self, x: object) -> PoolPlan | None:
        """The kept plan if ``x`` is what it expects, else None."""
        plan = self._plan
        if plan is not None and steady(x, plan.x_shape, plan.dtype, self._plan_threads):
            return plan
        return None

    def _keep_plan(self, x: npt.ArrayLike) -> None:
        if _config.get_backend() != "cython":
            self._plan = None
            return
        x = V.float_arrays(type(self).__name__, [("x", x)], [(3, 4)])[0][0]
        self._plan = F._pool_plan(f"{self._kind}_pool2d", self._kind, x, x.dtype,
                                  self.kernel_size, self.stride, self.padding)
        self._plan_threads = _config.get_num_threads()

    def __repr__(self) -> str:
        k, s, p = self.kernel_size, self.stride, self.padding
        return f"{type(self).__name__}(kernel_size={k}, stride={s}, padding={p})"


class MaxPool2D(_Pool2D):
    """2-D max pooling, as ``torch.nn.MaxPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        ``-inf`` padding (never selected), at most half the kernel.

    Notes
    -----
    Shape:

    - Input: ``(N, C, H, W)`` or ``(C, H, W)``
    - Output: ``(N, C, OH, OW)`` or ``(C, OH, OW)``, with
      ``OH = floor((H + 2*pH - kH) / sH) + 1`` (likewise ``OW``)

    The first maximum of each window (row-major) wins; in backward, the
    gradient goes to that position only, and overlapping windows accumulate.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> pool = nn.MaxPool2D(2)
    >>> pool.forward(np.arange(16.).reshape(1, 1, 4, 4))
    array([[[[ 5.,  7.],
             [13., 15.]]]])
    """

    _kind = "max"

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The maximum of each window; caches the argmax positions."""
        plan = self._steady_plan(x)
        if plan is not None:
            x = cast("FloatArray", x)  # what _steady_plan checked
            y, idx = cast("tuple[FloatArray, IndexArray]", plan.forward(x))
        else:
            x = V.as_array("MaxPool2D.forward", "x", x)
            y, idx = F.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                  return_indices=True)
            self._keep_plan(x)
            plan = self._plan
        self._cache = (idx, x.shape, plan)
        return y

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """Each upstream value routed to its window's argmax (accumulating)."""
        idx: IndexArray
        shape: Shape
        plan: PoolPlan | None
        idx, shape, plan = self._saved()
        if plan is not None and steady(grad_y, plan.out_shape, plan.dtype, self._plan_threads):
            return plan.backward(grad_y, idx)
        return F.max_pool2d_backward(grad_y, idx, shape)


class AvgPool2D(_Pool2D):
    """2-D average pooling, as ``torch.nn.AvgPool2d`` (``count_include_pad=True``).

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Zero padding, counted in the average; at most half the kernel.

    Notes
    -----
    Shape:

    - Input: ``(N, C, H, W)`` or ``(C, H, W)``
    - Output: ``(N, C, OH, OW)`` or ``(C, OH, OW)``, as :class:`MaxPool2D`

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> nn.AvgPool2D(2).forward(np.arange(16.).reshape(1, 1, 4, 4))
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])
    """

    _kind = "avg"

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The mean of each window (padding counts as zeros)."""
        plan = self._steady_plan(x)
        if plan is not None:
            x = cast("FloatArray", x)  # what _steady_plan checked
            y = cast("FloatArray", plan.forward(x))
        else:
            x = V.as_array("AvgPool2D.forward", "x", x)
            y = F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)
            self._keep_plan(x)
            plan = self._plan
        self._cache = (x.shape, plan)
        return y

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """Each upstream value spread evenly over its window (accumulating)."""
        shape: Shape
        plan: PoolPlan | None
        shape, plan = self._saved()
        if plan is not None and steady(grad_y, plan.out_shape, plan.dtype, self._plan_threads):
            return plan.backward(grad_y)
        return F.avg_pool2d_backward(grad_y, shape, self.kernel_size, self.stride, self.padding)
