"""Pooling layers."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import numpy as np
import numpy.typing as npt

from .. import _config
from .. import _validate as V
from .. import functional as F
from ..functional.pooling import _adaptive_plan, _pool1d_plan, _pool_plan
from .module import Module, steady

if TYPE_CHECKING:
    from .._plan import PoolPlan
    from .._typing import (
        AdaptiveSize, FloatArray, IndexArray, IntOrPair, IntOrSingle, Shape,
    )

_A = TypeVar("_A", bound="np.ndarray[Any, Any]")
_K = TypeVar("_K", int, tuple[int, int])  # a 1-D or 2-D window option


class _KeepsPlan(Module):
    """What the pooling layers share: the plan of the last input, kept, and
    the steady-state forward/backward.

    While the input (and upstream gradient) is the kind of array the kept
    plan expects, ``forward``/``backward`` run the plan; otherwise they call
    the functional op (``_call_forward``/``_call_backward``, the subclass's)
    and keep a new plan (``_new_plan``).  The cache is ``(indices, x.shape,
    plan)``; ``indices`` (the argmax positions) is None for average pooling.
    """

    _ndims = (3, 4)

    def __init__(self) -> None:
        super().__init__()
        self._plan: PoolPlan | None = None
        self._plan_threads = 0

    def forward(self, x: npt.ArrayLike) -> FloatArray:
        """The pooled windows of ``x`` (see the class's Notes); caches what
        backward needs (for max pooling, the argmax positions)."""
        plan = self._steady_plan(x)
        if plan is not None:
            x = cast("FloatArray", x)  # what _steady_plan checked
            y, idx = _split(plan.forward(self._lift(x)))
            y, idx = self._drop(y), None if idx is None else self._drop(idx)
        else:
            x = V.as_array(f"{type(self).__name__}.forward", "x", x)
            y, idx = self._call_forward(x)
            self._keep_plan(x)
            plan = self._plan
        self._cache = (idx, x.shape, plan)
        return y

    def backward(self, grad_y: npt.ArrayLike) -> FloatArray:
        """Each upstream value routed to its window's argmax (max pooling) or
        spread over its window (average pooling); overlapping windows
        accumulate."""
        idx: IndexArray | None
        shape: Shape
        plan: PoolPlan | None
        idx, shape, plan = self._saved()
        plan = self._steady_grad(grad_y, plan)
        if plan is not None:
            g = self._lift(cast("FloatArray", grad_y))
            return self._drop(plan.backward(g, None if idx is None else self._lift(idx)))
        return self._call_backward(grad_y, idx, shape)

    def _call_forward(
        self, x: FloatArray
    ) -> tuple[FloatArray, IndexArray | None]:  # pragma: no cover - abstract
        """The functional op's output (and argmax positions, or None)."""
        raise NotImplementedError

    def _call_backward(
        self, grad_y: npt.ArrayLike, idx: IndexArray | None, shape: Shape
    ) -> FloatArray:  # pragma: no cover - abstract
        """The functional op's input gradient."""
        raise NotImplementedError

    def _new_plan(self, x: FloatArray) -> PoolPlan:  # pragma: no cover - abstract
        raise NotImplementedError

    # A 1-D layer runs a 2-D plan of height 1: how its arrays and shapes map.
    def _lift(self, a: _A) -> _A:
        """A layer array as the plan sees it."""
        return a

    def _drop(self, a: _A) -> _A:
        """A plan array as the layer returns it."""
        return a

    def _layer_shape(self, shape: Shape) -> Shape:
        """A plan shape as the layer sees it."""
        return shape

    def _steady_plan(self, x: object) -> PoolPlan | None:
        """The kept plan if ``x`` is what it expects, else None."""
        plan = self._plan
        if plan is not None and steady(x, self._layer_shape(plan.x_shape), plan.dtype,
                                       self._plan_threads):
            return plan
        return None

    def _steady_grad(self, grad_y: object, plan: PoolPlan | None) -> PoolPlan | None:
        if plan is not None and steady(grad_y, self._layer_shape(plan.out_shape), plan.dtype,
                                       self._plan_threads):
            return plan
        return None

    def _keep_plan(self, x: npt.ArrayLike) -> None:
        if _config.get_backend() != "cython":
            self._plan = None
            return
        xa = V.float_arrays(type(self).__name__, [("x", x)], [self._ndims])[0][0]
        self._plan = self._new_plan(xa)
        self._plan_threads = _config.get_num_threads()


def _split(out: FloatArray | tuple[FloatArray, IndexArray | None]
           ) -> tuple[FloatArray, IndexArray | None]:
    """A plan's forward output as ``(y, indices or None)``."""
    return out if isinstance(out, tuple) else (out, None)


class _Indices(Module):
    """The ``indices`` of the max pools (the first item of their cache)."""

    @property
    def indices(self) -> IndexArray:
        """The argmax positions of the last forward (flat ``h*W + w`` per plane)."""
        return cast("IndexArray", self._saved()[0])


def _window(
    fname: str, arg: Callable[[str, str, object, int], _K], kernel_size: object,
    stride: object, padding: object,
) -> tuple[_K, _K, _K]:
    """A window pool's checked ``(kernel_size, stride, padding)``: ``arg`` is
    :func:`~cnnext._validate.pair` or :func:`~cnnext._validate.single`."""
    k = arg(fname, "kernel_size", kernel_size, 1)
    s = k if stride is None else arg(fname, "stride", stride, 1)
    p = arg(fname, "padding", padding, 0)
    if any(2 * pa > ka for pa, ka in zip(_axes(p), _axes(k))):
        raise ValueError(
            f"{fname}: padding must be at most half the kernel size, got "
            f"kernel_size {k}, padding {p}"
        )
    return k, s, p


def _axes(v: int | tuple[int, int]) -> tuple[int, ...]:
    return v if isinstance(v, tuple) else (v,)


class _WindowPool(_KeepsPlan, Generic[_K]):
    """What the max and average pools share: window options (``_K`` is a
    pair in 2-D, an int in 1-D) and the repr."""

    kernel_size: _K
    stride: _K
    padding: _K
    ceil_mode: bool

    def _options(self) -> str:
        return ""

    def __repr__(self) -> str:
        k, s, p = self.kernel_size, self.stride, self.padding
        return (f"{type(self).__name__}(kernel_size={k}, stride={s}, padding={p}"
                f"{self._options()}, ceil_mode={self.ceil_mode})")


class _Pool2D(_WindowPool[tuple[int, int]]):
    """What 2-D max and average pooling share: window options."""

    def __init__(
        self, kernel_size: IntOrPair, stride: IntOrPair | None = None, padding: IntOrPair = 0,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        fname = type(self).__name__
        self.kernel_size, self.stride, self.padding = _window(
            fname, V.pair, kernel_size, stride, padding)
        self.ceil_mode = V.boolean(fname, "ceil_mode", ceil_mode)


class MaxPool2D(_Indices, _Pool2D):
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
        return _pool_plan("max_pool2d", "max", x, x.dtype, self.kernel_size, self.stride,
                            self.padding, self.dilation, self.ceil_mode)

    def _call_forward(self, x: FloatArray) -> tuple[FloatArray, IndexArray]:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, return_indices=True)

    def _call_backward(
        self, grad_y: npt.ArrayLike, idx: IndexArray | None, shape: Shape
    ) -> FloatArray:
        return F.max_pool2d_backward(grad_y, cast("IndexArray", idx), shape)


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
        return _pool_plan("avg_pool2d", "avg", x, x.dtype, self.kernel_size, self.stride,
                            self.padding, 1, self.ceil_mode, self.count_include_pad,
                            self.divisor_override)

    def _call_forward(self, x: FloatArray) -> tuple[FloatArray, None]:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override), None

    def _call_backward(
        self, grad_y: npt.ArrayLike, idx: IndexArray | None, shape: Shape
    ) -> FloatArray:
        return F.avg_pool2d_backward(grad_y, shape, self.kernel_size, self.stride, self.padding,
                                     self.ceil_mode, self.count_include_pad,
                                     self.divisor_override)


class _Pool1D(_WindowPool[int]):
    """What the 1-D pools share: options, and a kept 2-D plan of height 1."""

    _ndims = (2, 3)
    _kind = ""

    def __init__(
        self, kernel_size: IntOrSingle, stride: IntOrSingle | None, padding: IntOrSingle,
        ceil_mode: bool,
    ) -> None:
        super().__init__()
        fname = type(self).__name__
        self.kernel_size, self.stride, self.padding = _window(
            fname, V.single, kernel_size, stride, padding)
        self.ceil_mode = V.boolean(fname, "ceil_mode", ceil_mode)
        self.dilation = 1
        self.count_include_pad = True

    def _new_plan(self, x: FloatArray) -> PoolPlan:
        return _pool1d_plan(
            f"{self._kind}_pool1d", self._kind, x.shape[:-1] + (1, x.shape[-1]), x.dtype,
            (1, self.kernel_size), (1, self.stride), (0, self.padding), (1, self.dilation),
            self.ceil_mode, self.count_include_pad,
        )

    def _lift(self, a: _A) -> _A:
        return cast("_A", a[..., None, :])

    def _drop(self, a: _A) -> _A:
        return cast("_A", a[..., 0, :])

    def _layer_shape(self, shape: Shape) -> Shape:
        """(N, C, 1, L) -> (N, C, L): a 1-D pool's shape from its 2-D plan's."""
        return shape[:-2] + shape[-1:]


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

    def _call_forward(self, x: FloatArray) -> tuple[FloatArray, IndexArray]:
        return F.max_pool1d(x, self.kernel_size, self.stride, self.padding, self.dilation,
                            self.ceil_mode, return_indices=True)

    def _call_backward(
        self, grad_y: npt.ArrayLike, idx: IndexArray | None, shape: Shape
    ) -> FloatArray:
        return F.max_pool1d_backward(grad_y, cast("IndexArray", idx), shape)


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

    def _call_forward(self, x: FloatArray) -> tuple[FloatArray, None]:
        return F.avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad), None

    def _call_backward(
        self, grad_y: npt.ArrayLike, idx: IndexArray | None, shape: Shape
    ) -> FloatArray:
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


class _Adaptive2D(_KeepsPlan):
    """What the adaptive pools share: the output size, its plan, the repr."""

    _kind = ""

    def __init__(self, output_size: AdaptiveSize) -> None:
        super().__init__()
        self.output_size = _output_size(type(self).__name__, output_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_size={self.output_size})"

    def _new_plan(self, x: FloatArray) -> PoolPlan:
        return _adaptive_plan(f"{self._kind}_pool2d", self._kind, x.shape, x.dtype,
                                self.output_size)


class AdaptiveAvgPool2D(_Adaptive2D):
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

    _kind = "adaptive_avg"

    def _call_forward(self, x: FloatArray) -> tuple[FloatArray, None]:
        return F.adaptive_avg_pool2d(x, self.output_size), None

    def _call_backward(
        self, grad_y: npt.ArrayLike, idx: IndexArray | None, shape: Shape
    ) -> FloatArray:
        return F.adaptive_avg_pool2d_backward(grad_y, shape)


class AdaptiveMaxPool2D(_Indices, _Adaptive2D):
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

    _kind = "adaptive_max"

    def _call_forward(self, x: FloatArray) -> tuple[FloatArray, IndexArray]:
        return F.adaptive_max_pool2d(x, self.output_size, return_indices=True)

    def _call_backward(
        self, grad_y: npt.ArrayLike, idx: IndexArray | None, shape: Shape
    ) -> FloatArray:
        return F.adaptive_max_pool2d_backward(grad_y, cast("IndexArray", idx), shape)


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
