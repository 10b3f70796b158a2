"""Pooling layers."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import numpy.typing as npt

from .. import _config
from .. import _validate as V
from .. import functional as F
from .module import Module, steady

if TYPE_CHECKING:
    from .._plan import PoolPlan
    from .._typing import AdaptiveSize, FloatArray, IndexArray, IntOrPair, IntOrSingle, Shape


class _KeepsPlan(Module):
    """What the pooling layers share: the plan of the last input, kept."""

    def __init__(self) -> None:
        super().__init__()
        self._plan: PoolPlan | None = None
        self._plan_threads = 0

    def _steady_plan(self, x: object) -> PoolPlan | None:
        """The kept plan if ``x`` is what it expects, else None."""
        plan = self._plan
        if plan is not None and steady(x, plan.x_shape, plan.dtype, self._plan_threads):
            return plan
        return None

    def _new_plan(self, x: FloatArray) -> PoolPlan:  # pragma: no cover - abstract
        raise NotImplementedError

    _ndims = (3, 4)

    def _keep_plan(self, x: npt.ArrayLike) -> None:
        if _config.get_backend() != "cython":
            self._plan = None
            return
        xa = V.float_arrays(type(self).__name__, [("x", x)], [self._ndims])[0][0]
        self._plan = self._new_plan(xa)
        self._plan_threads = _config.get_num_threads()

    def _steady_grad(self, grad_y: object, plan: PoolPlan | None) -> PoolPlan | None:
        if plan is not None and steady(grad_y, plan.out_shape, plan.dtype, self._plan_threads):
            return plan
        return None


class _Pool2D(_KeepsPlan):
    """What max and average pooling share: window options, plan keeping, repr."""

    _kind = ""

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        fname = type(self).__name__
        self.kernel_size = V.pair(fname, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else V.pair(fname, "stride", stride, 1)
        self.padding = V.pair(fname, "padding", padding, 0)
        for axis in range(2):
            if 2 * self.padding[axis] > self.kernel_size[axis]:
                raise ValueError(
                    f"{fname}: padding must be at most half the kernel size, got "
                    f"kernel_size {self.kernel_size}, padding {self.padding}"
                )
        self.ceil_mode = V.boolean(fname, "ceil_mode", ceil_mode)

    def _options(self) -> str:
        return ""

    def __repr__(self) -> str:
        k, s, p = self.kernel_size, self.stride, self.padding
        return (f"{type(self).__name__}(kernel_size={k}, stride={s}, padding={p}"
                f"{self._options()}, ceil_mode={self.ceil_mode})")


class MaxPool2D(_Pool2D):
    """2-D max pooling, as ``torch.nn.MaxPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        ``-inf`` padding (never selected), at most half the kernel.
    dilation : int or (int, int)
        Spacing between the window's taps.
    ceil_mode : bool
        Round the output size up (see :func:`cnnext.functional.max_pool2d`).

    Notes
    -----
    Shape:

    - Input: ``(N, C, H, W)`` or ``(C, H, W)``
    - Output: ``(N, C, OH, OW)`` or ``(C, OH, OW)``, with
      ``OH = floor((H + 2*pH - dH*(kH - 1) - 1) / sH) + 1`` (``ceil`` with
      ``ceil_mode``; likewise ``OW``)

    The first maximum of each window (row-major) wins; in backward, the
    gradient goes to that position only, and overlapping windows accumulate.
    The argmax of the last forward is :attr:`indices` (what
    :class:`MaxUnpool2D` takes).

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

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
        dilation: IntOrPair = 1, ceil_mode: bool = False,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = V.pair(type(self).__name__, "dilation", dilation, 1)

    def _options(self) -> str:
        return f", dilation={self.dilation}"

    def _new_plan(self, x: FloatArray) -> PoolPlan:
        return F._pool_plan("max_pool2d", "max", x, x.dtype, self.kernel_size, self.stride,
                            self.padding, self.dilation, self.ceil_mode)

    @property
    def indices(self) -> IndexArray:
        """The argmax positions of the last forward (flat ``h*W + w`` per plane)."""
        return cast("IndexArray", self._saved()[0])

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The maximum of each window; caches the argmax positions."""
        plan = self._steady_plan(x)
        if plan is not None:
            x = cast("FloatArray", x)  # what _steady_plan checked
            y, idx = cast("tuple[FloatArray, IndexArray]", plan.forward(x))
        else:
            x = V.as_array("MaxPool2D.forward", "x", x)
            y, idx = F.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                  self.dilation, self.ceil_mode, return_indices=True)
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
        plan = self._steady_grad(grad_y, plan)
        if plan is not None:
            return plan.backward(cast("FloatArray", grad_y), idx)
        return F.max_pool2d_backward(grad_y, idx, shape)


class AvgPool2D(_Pool2D):
    """2-D average pooling, as ``torch.nn.AvgPool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Zero padding, at most half the kernel.
    ceil_mode : bool
        Round the output size up.
    count_include_pad : bool
        Count the padding in the divisor (see
        :func:`cnnext.functional.avg_pool2d`).
    divisor_override : int, optional
        A fixed nonzero divisor.

    Notes
    -----
    Shape:

    - Input: ``(N, C, H, W)`` or ``(C, H, W)``
    - Output: ``(N, C, OH, OW)`` or ``(C, OH, OW)``, as :class:`MaxPool2D`
      (without dilation)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> nn.AvgPool2D(2).forward(np.arange(16.).reshape(1, 1, 4, 4))
    array([[[[ 2.5,  4.5],
             [10.5, 12.5]]]])
    """

    _kind = "avg"

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
        ceil_mode: bool = False, count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        fname = type(self).__name__
        self.count_include_pad = V.boolean(fname, "count_include_pad", count_include_pad)
        self.divisor_override = V.divisor_override(fname, divisor_override)

    def _options(self) -> str:
        return (f", count_include_pad={self.count_include_pad}, "
                f"divisor_override={self.divisor_override}")

    def _new_plan(self, x: FloatArray) -> PoolPlan:
        return F._pool_plan("avg_pool2d", "avg", x, x.dtype, self.kernel_size, self.stride,
                            self.padding, 1, self.ceil_mode, self.count_include_pad,
                            self.divisor_override)

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The mean of each window."""
        plan = self._steady_plan(x)
        if plan is not None:
            x = cast("FloatArray", x)  # what _steady_plan checked
            y = cast("FloatArray", plan.forward(x))
        else:
            x = V.as_array("AvgPool2D.forward", "x", x)
            y = F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                             self.count_include_pad, self.divisor_override)
            self._keep_plan(x)
            plan = self._plan
        self._cache = (x.shape, plan)
        return y

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """Each upstream value spread evenly over its window (accumulating)."""
        shape: Shape
        plan: PoolPlan | None
        shape, plan = self._saved()
        plan = self._steady_grad(grad_y, plan)
        if plan is not None:
            return plan.backward(cast("FloatArray", grad_y))
        return F.avg_pool2d_backward(grad_y, shape, self.kernel_size, self.stride, self.padding,
                                     self.ceil_mode, self.count_include_pad,
                                     self.divisor_override)


def _drop_h(shape: Shape) -> Shape:
    """(N, C, 1, L) -> (N, C, L): a 1-D pool's shape from its 2-D plan's."""
    return shape[:-2] + shape[-1:]


class _Pool1D(_KeepsPlan):
    """What the 1-D pools share: options, repr, and a kept 2-D plan of height 1."""

    _ndims = (2, 3)
    _kind = ""

    def __init__(
        self, kernel_size: IntOrSingle, stride: IntOrSingle | None, padding: IntOrSingle,
        ceil_mode: bool,
    ) -> None:
        super().__init__()
        fname = type(self).__name__
        self.kernel_size = V.single(fname, "kernel_size", kernel_size, 1)
        self.stride = (self.kernel_size if stride is None
                       else V.single(fname, "stride", stride, 1))
        self.padding = V.single(fname, "padding", padding, 0)
        if 2 * self.padding > self.kernel_size:
            raise ValueError(
                f"{fname}: padding must be at most half the kernel size, got kernel_size "
                f"{self.kernel_size}, padding {self.padding}"
            )
        self.ceil_mode = V.boolean(fname, "ceil_mode", ceil_mode)
        self.dilation = 1
        self.count_include_pad = True

    def _new_plan(self, x: FloatArray) -> PoolPlan:
        return F._pool1d_plan(
            f"{self._kind}_pool1d", self._kind, x.shape[:-1] + (1, x.shape[-1]), x.dtype,
            (1, self.kernel_size), (1, self.stride), (0, self.padding), (1, self.dilation),
            self.ceil_mode, self.count_include_pad,
        )

    def _steady_plan(self, x: object) -> PoolPlan | None:
        plan = self._plan
        if plan is not None and steady(x, _drop_h(plan.x_shape), plan.dtype, self._plan_threads):
            return plan
        return None

    def _steady_grad(self, grad_y: object, plan: PoolPlan | None) -> PoolPlan | None:
        if plan is not None and steady(grad_y, _drop_h(plan.out_shape), plan.dtype,
                                       self._plan_threads):
            return plan
        return None

    def _options(self) -> str:
        return ""

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}{self._options()}, ceil_mode={self.ceil_mode})")


class MaxPool1D(_Pool1D):
    """1-D max pooling, as ``torch.nn.MaxPool1d``.

    Parameters
    ----------
    kernel_size, stride, padding, dilation : int
        As :class:`MaxPool2D`, along the one axis.
    ceil_mode : bool

    Notes
    -----
    Shape:

    - Input: ``(N, C, L)`` or ``(C, L)``
    - Output: ``(N, C, OL)`` or ``(C, OL)``,
      ``OL = floor((L + 2*p - d*(k - 1) - 1) / s) + 1`` (``ceil`` with
      ``ceil_mode``)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> nn.MaxPool1D(2).forward(np.array([[[1., 4., 2., 3.]]]))
    array([[[4., 3.]]])
    """

    _kind = "max"

    def __init__(
        self, kernel_size: IntOrSingle, stride: IntOrSingle | None = None,
        padding: IntOrSingle = 0, dilation: IntOrSingle = 1, ceil_mode: bool = False,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = V.single(type(self).__name__, "dilation", dilation, 1)

    def _options(self) -> str:
        return f", dilation={self.dilation}"

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The maximum of each window; caches the argmax positions."""
        plan = self._steady_plan(x)
        if plan is not None:
            x = cast("FloatArray", x)  # what _steady_plan checked
            y2, idx2 = cast("tuple[FloatArray, IndexArray]", plan.forward(x[..., None, :]))
            y, idx = y2[..., 0, :], idx2[..., 0, :]
        else:
            x = V.as_array("MaxPool1D.forward", "x", x)
            y, idx = F.max_pool1d(x, self.kernel_size, self.stride, self.padding,
                                  self.dilation, self.ceil_mode, return_indices=True)
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
        plan = self._steady_grad(grad_y, plan)
        if plan is not None:
            g = cast("FloatArray", grad_y)
            return plan.backward(g[..., None, :], idx[..., None, :])[..., 0, :]
        return F.max_pool1d_backward(grad_y, idx, shape)


class AvgPool1D(_Pool1D):
    """1-D average pooling, as ``torch.nn.AvgPool1d``.

    Parameters
    ----------
    kernel_size, stride, padding : int
        As :class:`AvgPool2D`, along the one axis.
    ceil_mode, count_include_pad : bool

    Notes
    -----
    Shape: ``(N, C, L)`` or ``(C, L)`` to ``(N, C, OL)`` or ``(C, OL)``, as
    :class:`MaxPool1D` (without dilation).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> nn.AvgPool1D(2).forward(np.array([[[1., 3., 5., 7.]]]))
    array([[[2., 6.]]])
    """

    _kind = "avg"

    def __init__(
        self, kernel_size: IntOrSingle, stride: IntOrSingle | None = None,
        padding: IntOrSingle = 0, ceil_mode: bool = False, count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = V.boolean(type(self).__name__, "count_include_pad",
                                           count_include_pad)

    def _options(self) -> str:
        return f", count_include_pad={self.count_include_pad}"

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The mean of each window."""
        plan = self._steady_plan(x)
        if plan is not None:
            x = cast("FloatArray", x)  # what _steady_plan checked
            y = cast("FloatArray", plan.forward(x[..., None, :]))[..., 0, :]
        else:
            x = V.as_array("AvgPool1D.forward", "x", x)
            y = F.avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                             self.count_include_pad)
            self._keep_plan(x)
            plan = self._plan
        self._cache = (x.shape, plan)
        return y

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """Each upstream value spread over its window (accumulating)."""
        shape: Shape
        plan: PoolPlan | None
        shape, plan = self._saved()
        plan = self._steady_grad(grad_y, plan)
        if plan is not None:
            return plan.backward(cast("FloatArray", grad_y)[..., None, :])[..., 0, :]
        return F.avg_pool1d_backward(grad_y, shape, self.kernel_size, self.stride,
                                     self.padding, self.ceil_mode, self.count_include_pad)


def _output_size(fname: str, output_size: AdaptiveSize) -> AdaptiveSize:
    """Check an adaptive output size without an input (None entries stay)."""
    if isinstance(output_size, np.ndarray) and output_size.shape == (2,):
        output_size = output_size.tolist()
    V.adaptive_output_size(fname, output_size, (1, 1))
    if isinstance(output_size, (tuple, list)):
        return (None if output_size[0] is None else int(output_size[0]),
                None if output_size[1] is None else int(output_size[1]))
    return int(output_size)


class AdaptiveAvgPool2D(_KeepsPlan):
    """2-D adaptive average pooling, as ``torch.nn.AdaptiveAvgPool2d``.

    Parameters
    ----------
    output_size : int or (int or None, int or None)
        ``(OH, OW)``; None keeps the input size along that axis.  ``1`` is
        global average pooling (a fast path).

    Notes
    -----
    Shape: ``(N, C, H, W)`` or ``(C, H, W)`` to ``(N, C, OH, OW)`` or
    ``(C, OH, OW)``; see :func:`cnnext.functional.adaptive_avg_pool2d` for
    the windows.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> nn.AdaptiveAvgPool2D(1).forward(np.arange(8.).reshape(2, 1, 2, 2))
    array([[[[1.5]]],
    <BLANKLINE>
    <BLANKLINE>
           [[[5.5]]]])
    """

    def __init__(self, output_size: AdaptiveSize) -> None:
        super().__init__()
        self.output_size = _output_size(type(self).__name__, output_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_size={self.output_size})"

    def _new_plan(self, x: FloatArray) -> PoolPlan:
        return F._adaptive_plan("adaptive_avg_pool2d", "adaptive_avg", x.shape, x.dtype,
                                self.output_size)

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The mean of each adaptive window."""
        plan = self._steady_plan(x)
        if plan is not None:
            x = cast("FloatArray", x)  # what _steady_plan checked
            y = cast("FloatArray", plan.forward(x))
        else:
            x = V.as_array("AdaptiveAvgPool2D.forward", "x", x)
            y = F.adaptive_avg_pool2d(x, self.output_size)
            self._keep_plan(x)
            plan = self._plan
        self._cache = (x.shape, plan)
        return y

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """Each upstream value spread evenly over its window (accumulating)."""
        shape: Shape
        plan: PoolPlan | None
        shape, plan = self._saved()
        plan = self._steady_grad(grad_y, plan)
        if plan is not None:
            return plan.backward(cast("FloatArray", grad_y))
        return F.adaptive_avg_pool2d_backward(grad_y, shape)


class AdaptiveMaxPool2D(_KeepsPlan):
    """2-D adaptive max pooling, as ``torch.nn.AdaptiveMaxPool2d``.

    Parameters
    ----------
    output_size : int or (int or None, int or None)
        As :class:`AdaptiveAvgPool2D`.

    Notes
    -----
    Shape: as :class:`AdaptiveAvgPool2D`.  Ties and NaN as
    :class:`MaxPool2D`; the argmax of the last forward is :attr:`indices`.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> nn.AdaptiveMaxPool2D((1, 2)).forward(np.arange(6.).reshape(1, 1, 2, 3))
    array([[[[4., 5.]]]])
    """

    def __init__(self, output_size: AdaptiveSize) -> None:
        super().__init__()
        self.output_size = _output_size(type(self).__name__, output_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_size={self.output_size})"

    def _new_plan(self, x: FloatArray) -> PoolPlan:
        return F._adaptive_plan("adaptive_max_pool2d", "adaptive_max", x.shape, x.dtype,
                                self.output_size)

    @property
    def indices(self) -> IndexArray:
        """The argmax positions of the last forward (flat ``h*W + w`` per plane)."""
        return cast("IndexArray", self._saved()[0])

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The maximum of each adaptive window; caches the argmax positions."""
        plan = self._steady_plan(x)
        if plan is not None:
            x = cast("FloatArray", x)  # what _steady_plan checked
            y, idx = cast("tuple[FloatArray, IndexArray]", plan.forward(x))
        else:
            x = V.as_array("AdaptiveMaxPool2D.forward", "x", x)
            y, idx = F.adaptive_max_pool2d(x, self.output_size, return_indices=True)
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
        plan = self._steady_grad(grad_y, plan)
        if plan is not None:
            return plan.backward(cast("FloatArray", grad_y), idx)
        return F.adaptive_max_pool2d_backward(grad_y, idx, shape)


class MaxUnpool2D(Module):
    """Partial inverse of :class:`MaxPool2D`, as ``torch.nn.MaxUnpool2d``.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)

    Notes
    -----
    ``forward(x, indices, output_size=None)`` takes the pool's indices as
    a second argument (so it does not go into :class:`Sequential`); shape
    ``(N, C, H, W)`` to ``(N, C, OH, OW)`` with the default
    ``OH = (H - 1)*sH - 2*pH + kH`` or ``output_size``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import nn
    >>> pool, unpool = nn.MaxPool2D(2), nn.MaxUnpool2D(2)
    >>> x = np.array([[[[1., 2.], [4., 3.]]]])
    >>> unpool.forward(pool.forward(x), pool.indices)
    array([[[[0., 0.],
             [4., 0.]]]])
    """

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0
    ) -> None:
        super().__init__()
        fname = type(self).__name__
        self.kernel_size = V.pair(fname, "kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else V.pair(fname, "stride", stride, 1)
        self.padding = V.pair(fname, "padding", padding, 0)

    def __repr__(self) -> str:
        k, s, p = self.kernel_size, self.stride, self.padding
        return f"{type(self).__name__}(kernel_size={k}, stride={s}, padding={p})"

    def forward(  # type: ignore[override]  # the indices are a second input
        self, x: npt.ArrayLike, indices: npt.ArrayLike,
        output_size: Sequence[int] | None = None,
    ) -> FloatArray:
        """``x``'s values placed at ``indices`` in zero planes."""
        idx = V.index_array("MaxUnpool2D.forward", "indices", indices)
        y = F.max_unpool2d(x, idx, self.kernel_size, self.stride, self.padding, output_size)
        self._cache = idx
        return y

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """The upstream gradient read back at each index."""
        return F.max_unpool2d_backward(grad_y, self._saved())

    def __call__(  # type: ignore[override]  # as forward
        self, x: npt.ArrayLike, indices: npt.ArrayLike,
        output_size: Sequence[int] | None = None,
    ) -> FloatArray:
        return self.forward(x, indices, output_size)
