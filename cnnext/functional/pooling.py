"""Pooling: max, average, adaptive and unpooling, 2-D and 1-D, forward and
backward."""
from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import TYPE_CHECKING, Literal, cast, overload

import numpy as np
import numpy.typing as npt

from .. import _config, _eltwise, _plan
from .. import _validate as V
from ._common import (
    _GRAD_LAYOUT, _ONE, _POOL_LAYOUT, _POOL_NDIM, _ZERO, _as, _float_operands, _numpy_backend,
    _operands,
)

if TYPE_CHECKING:
    from .. import reference as _ref
    from .._typing import (
        AdaptiveSize, FloatArray, FloatDType, IndexArray, IntOrPair, IntOrSingle, Pair, Shape,
    )
else:  # imported at its first use (the numpy backend)
    from ._common import _reference as _ref

__all__ = [
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "max_unpool2d",
    "max_unpool2d_backward",
    "max_pool1d",
    "max_pool1d_backward",
    "avg_pool1d",
    "avg_pool1d_backward",
]


def _pool_params(
    fname: str, kernel_size: IntOrPair, stride: IntOrPair | None, padding: IntOrPair
) -> tuple[Pair, Pair, Pair]:
    k = V.pair(fname, "kernel_size", kernel_size, 1)
    s = k if stride is None else V.pair(fname, "stride", stride, 1)
    p = V.pair(fname, "padding", padding, 0)
    return k, s, p


def _pool_plan(
    fname: str, kind: str, x: FloatArray, dt: FloatDType, kernel_size: IntOrPair,
    stride: IntOrPair | None, padding: IntOrPair, dilation: IntOrPair = 1,
    ceil_mode: bool = False, count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> _plan.PoolPlan:
    nt = _config._kernel_threads
    plain = (
        type(kernel_size) is int
        and (padding is _ZERO or type(padding) is int)
        and (dilation is _ONE or type(dilation) is int)
        and (stride is None or type(stride) is int)
        and (ceil_mode is False or ceil_mode is True)
        and (count_include_pad is True or count_include_pad is False)
        and (divisor_override is None or type(divisor_override) is int)
    )
    opts = (ceil_mode, count_include_pad, divisor_override)
    if plain:  # see _conv2d_plan
        key: Hashable = (kind, x.shape, dt, kernel_size, stride, padding, dilation, opts, nt)
        plan: _plan.PoolPlan | None = _plan.lookup(key)
        if plan is not None:
            return plan
    k, s, p = _pool_params(fname, kernel_size, stride, padding)
    d = V.pair(fname, "dilation", dilation, 1)
    opts = (V.boolean(fname, "ceil_mode", ceil_mode),
            V.boolean(fname, "count_include_pad", count_include_pad),
            V.divisor_override(fname, divisor_override))
    if not plain:
        key = (kind, x.shape, dt, k, s, p, d, opts, nt)
        plan = _plan.lookup(key)
        if plan is not None:
            return plan  # type: ignore[no-any-return]  # a pooling key's plan is a PoolPlan
    return _plan.store(key, _plan.pool2d_plan(fname, kind, x.shape, dt, k, s, p, d, *opts))


def _adaptive_plan(
    fname: str, kind: str, shape: Shape, dt: FloatDType, output_size: AdaptiveSize,
) -> _plan.PoolPlan:
    nt = _config._kernel_threads
    if type(output_size) is int:  # see _conv2d_plan
        key: Hashable = (kind, shape, dt, output_size, nt)
        plan: _plan.PoolPlan | None = _plan.lookup(key)
        if plan is not None:
            return plan
    V.nonempty_planes(fname, shape)
    o = V.adaptive_output_size(fname, output_size, cast("Pair", tuple(shape[-2:])))
    if type(output_size) is not int:
        key = (kind, shape, dt, o, nt)
        plan = _plan.lookup(key)
        if plan is not None:
            return plan  # type: ignore[no-any-return]  # an adaptive key's plan is a PoolPlan
    return _plan.store(key, _plan.adaptive_pool2d_plan(fname, kind, shape, dt, o))


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------


@overload
def max_pool2d(
    x: npt.ArrayLike, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
    return_indices: Literal[False] = False,
) -> FloatArray: ...
@overload
def max_pool2d(
    x: npt.ArrayLike, kernel_size: IntOrPair, stride: IntOrPair | None, padding: IntOrPair,
    dilation: IntOrPair, ceil_mode: bool, return_indices: Literal[True],
) -> tuple[FloatArray, IndexArray]: ...
@overload
def max_pool2d(
    x: npt.ArrayLike, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False, *,
    return_indices: Literal[True],
) -> tuple[FloatArray, IndexArray]: ...
@overload
def max_pool2d(
    x: npt.ArrayLike, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
    return_indices: bool = False,
) -> FloatArray | tuple[FloatArray, IndexArray]: ...
def max_pool2d(
    x: npt.ArrayLike, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
    return_indices: bool = False,
) -> FloatArray | tuple[FloatArray, IndexArray]:
    """2-D max pooling with argmax, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit ``-inf`` padding (never selected), at most half the kernel.
    dilation : int or (int, int)
        Spacing between the window's taps (1: adjacent).
    ceil_mode : bool
        Round the output size up instead of down (see Notes).
    return_indices : bool
        Also return the argmax positions.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
    indices : ndarray of int64, same shape, only if ``return_indices``
        Flat position ``h*W + w`` of each maximum inside its input plane.
        The first maximum in row-major window order wins ties; a NaN in a
        window wins (propagates).

    Notes
    -----
    ``OH = floor((H + 2*pH - dH*(kH - 1) - 1) / sH) + 1`` (``ceil`` with
    ``ceil_mode``, where a last window that would start in the bottom
    padding is dropped; windows past the input are clipped to it).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([[[[1., 3., 2., 2.],
    ...                 [3., 0., 1., 2.]]]])
    >>> y, idx = F.max_pool2d(x, 2, return_indices=True)
    >>> y, idx
    (array([[[[3., 2.]]]]), array([[[[1, 2]]]]))
    >>> F.max_pool2d(np.arange(5.).reshape(1, 1, 1, 5), (1, 2), ceil_mode=True)
    array([[[[1., 3., 4.]]]])
    """
    fname = "max_pool2d"
    if return_indices is not True and return_indices is not False:
        return_indices = V.boolean(fname, "return_indices", return_indices)
    xa, dt = x, _float_operands((x,), _POOL_NDIM)
    if dt is None:
        (xa,), dt = _operands(fname, (x,), ("x",), _POOL_NDIM, _POOL_LAYOUT)
    elif TYPE_CHECKING:  # the one-step check passed: a native float array
        xa = cast("FloatArray", xa)
    plan = _pool_plan(fname, "max", xa, dt, kernel_size, stride, padding, dilation, ceil_mode)
    idx: IndexArray | None  # None: not computed (return_indices=False)
    if _numpy_backend():
        y, idx = _ref.max_pool2d(xa, kernel_size, stride=stride, padding=padding,
                                 dilation=dilation, ceil_mode=ceil_mode, return_indices=True)
        y, idx = _as(y, dt), np.asarray(idx, dtype=np.int64)
    else:
        y, idx = plan.forward(xa, return_indices)
    # (idx is an array whenever return_indices is True)
    return (y, idx) if return_indices else y  # type: ignore[return-value]


def _argmax_backward(
    fname: str, grad_out: npt.ArrayLike, indices: npt.ArrayLike, input_shape: Sequence[int],
    one_d: bool = False,
) -> tuple[FloatArray, IndexArray, Shape, FloatDType]:
    """The checked (grad_out, int64 indices, input_shape, dtype) of a backward
    pass that routes each gradient to its argmax index (2-D, or 1-D)."""
    idx = V.as_array(fname, "indices", indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{fname}: indices must be an integer array, got dtype {idx.dtype}")
    ndims, layouts = (_POOL1D_NDIM, _GRAD1D_LAYOUT) if one_d else (_POOL_NDIM, _GRAD_LAYOUT)
    (g,), dt = _operands(fname, (grad_out,), ("grad_out",), ndims, layouts)
    shape = V.shape_tuple(fname, "input_shape", input_shape, g.ndim)
    if idx.shape != g.shape:
        raise ValueError(
            f"{fname}: indices.shape {idx.shape} must equal grad_out.shape {g.shape}"
        )
    spatial = 1 if one_d else 2
    if g.shape[:-spatial] != shape[:-spatial]:
        raise ValueError(
            f"{fname}: grad_out.shape {g.shape} and input_shape {shape} must agree on "
            f"the batch and channel axes"
        )
    size = math.prod(shape[-spatial:])
    V.check_alloc(fname, shape, dt.itemsize)
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if idx.size and not _eltwise.indices_within(idx.reshape(-1), 0, size):
        what = "L" if one_d else "H*W"
        raise ValueError(
            f"{fname}: indices must lie in [0, {what}) = [0, {size}) for input_shape "
            f"{shape}; got values in [{idx.min()}, {idx.max()}]"
        )
    return g, idx, shape, dt


def _argmax_backward_run(
    fname: str, g: FloatArray, idx: IndexArray, shape: Shape, dt: FloatDType
) -> FloatArray:
    plan = _plan.cached(("max_pool2d_backward", shape, g.shape, dt, _config.get_num_threads()),
                        _plan.max_pool2d_backward_plan, fname, shape, g.shape, dt)
    return plan.backward(g, idx)


def max_pool2d_backward(
    grad_out: npt.ArrayLike, indices: npt.ArrayLike, input_shape: Sequence[int]
) -> FloatArray:
    """Gradient of :func:`max_pool2d`: route each gradient to its argmax.

    The indices carry the whole geometry (kernel, stride, padding, dilation,
    ``ceil_mode``), so no pooling option is needed here.

    Parameters
    ----------
    grad_out : array_like, shape (N, C, OH, OW) or (C, OH, OW)
    indices : array_like of int, same shape
        As returned by ``max_pool2d(..., return_indices=True)``.
    input_shape : tuple of int
        Shape of the forward input, ``(N, C, H, W)`` or ``(C, H, W)``.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``
        Zero except at argmax positions; where overlapping windows chose the
        same input, their gradients *accumulate*.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.max_pool2d_backward(np.array([[[[5.]]]]), np.array([[[[3]]]]), (1, 1, 2, 2))
    array([[[[0., 0.],
             [0., 5.]]]])
    """
    fname = "max_pool2d_backward"
    g, idx, shape, dt = _argmax_backward(fname, grad_out, indices, input_shape)
    if _numpy_backend():
        return _as(_ref.max_pool2d_backward(g, idx, shape), dt)
    return _argmax_backward_run(fname, g, idx, shape, dt)


def avg_pool2d(
    x: npt.ArrayLike, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> FloatArray:
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Zero padding, at most half the kernel.
    ceil_mode : bool
        Round the output size up instead of down (see Notes).
    count_include_pad : bool
        Divide by the window's size including its padded part (clipped to
        the padded input); False divides by the number of input elements
        in the window.
    divisor_override : int, optional
        A fixed nonzero divisor instead of either.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)

    Notes
    -----
    ``OH = floor((H + 2*pH - kH) / sH) + 1`` (``ceil`` with ``ceil_mode``,
    where a last window that would start in the bottom padding is dropped).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.avg_pool2d(np.arange(4.).reshape(1, 1, 2, 2), 2)
    array([[[[1.5]]]])
    >>> F.avg_pool2d(np.ones((1, 1, 2, 2)), 2, padding=1, count_include_pad=False)
    array([[[[1., 1.],
             [1., 1.]]]])
    """
    fname = "avg_pool2d"
    (xa,), dt = _operands(fname, (x,), ("x",), _POOL_NDIM, _POOL_LAYOUT)
    plan = _pool_plan(fname, "avg", xa, dt, kernel_size, stride, padding, 1, ceil_mode,
                      count_include_pad, divisor_override)
    if _numpy_backend():
        return _as(_ref.avg_pool2d(xa, kernel_size, stride=stride, padding=padding,
                                   ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                                   divisor_override=divisor_override), dt)
    return cast("FloatArray", plan.forward(xa))


def avg_pool2d_backward(
    grad_out: npt.ArrayLike, input_shape: Sequence[int], kernel_size: IntOrPair,
    stride: IntOrPair | None = None, padding: IntOrPair = 0, ceil_mode: bool = False,
    count_include_pad: bool = True, divisor_override: int | None = None,
) -> FloatArray:
    """Gradient of :func:`avg_pool2d`.

    Parameters
    ----------
    grad_out : array_like, shape (N, C, OH, OW) or (C, OH, OW)
    input_shape : tuple of int
        Shape of the forward input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to :func:`avg_pool2d`.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``
        Each upstream value divided by its window's divisor and added over
        the window's input elements; overlapping windows accumulate.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.avg_pool2d_backward(np.array([[[[4.]]]]), (1, 1, 2, 2), 2)
    array([[[[1., 1.],
             [1., 1.]]]])
    """
    fname = "avg_pool2d_backward"
    (g,), dt = _operands(fname, (grad_out,), ("grad_out",), _POOL_NDIM, _GRAD_LAYOUT)
    shape = V.shape_tuple(fname, "input_shape", input_shape, g.ndim)
    plan = _avg_backward_plan(fname, shape, dt, kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override)
    if g.shape != plan.out_shape:
        raise ValueError(
            f"{fname}: grad_out.shape must be the avg_pool2d output shape {plan.out_shape} "
            f"for input_shape {shape}, kernel_size {plan.kernel_size}, stride {plan.stride}, "
            f"padding {plan.padding}, ceil_mode {plan.ceil_mode}; got {g.shape}"
        )
    if _numpy_backend():
        return _as(_ref.avg_pool2d_backward(
            g, input_shape, kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
            count_include_pad=count_include_pad, divisor_override=divisor_override), dt)
    return plan.backward(g)


def _avg_backward_plan(
    fname: str, shape: Shape, dt: FloatDType, kernel_size: IntOrPair,
    stride: IntOrPair | None, padding: IntOrPair, ceil_mode: bool, count_include_pad: bool,
    divisor_override: int | None, axes: tuple[str, str] = ("height", "width"),
) -> _plan.PoolPlan:
    """The (checked) average-pool plan of a backward pass to ``shape``."""
    k, s, p = _pool_params(fname, kernel_size, stride, padding)
    opts = (V.boolean(fname, "ceil_mode", ceil_mode),
            V.boolean(fname, "count_include_pad", count_include_pad),
            V.divisor_override(fname, divisor_override))
    V.check_alloc(fname, shape, dt.itemsize)
    return _plan.cached(
        ("avg_pool2d", shape, dt, k, s, p, opts, _config.get_num_threads()),
        _plan.pool2d_plan, fname, "avg", shape, dt, k, s, p, (1, 1), *opts, axes,
    )


def adaptive_avg_pool2d(x: npt.ArrayLike, output_size: AdaptiveSize) -> FloatArray:
    """2-D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
        Only the batch axis may be empty.
    output_size : int or (int or None, int or None)
        ``(OH, OW)``; an int means ``(n, n)``; None keeps the input size
        along that axis.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        Output ``(i, j)`` is the mean of rows ``floor(i*H/OH)`` to
        ``ceil((i+1)*H/OH) - 1`` and the columns likewise (windows may
        overlap or differ in size).

    Notes
    -----
    ``output_size=1`` is global average pooling (the mean of each plane),
    which runs as one contiguous sum per plane.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.adaptive_avg_pool2d(np.arange(6.).reshape(1, 1, 2, 3), (1, 2))
    array([[[[2., 3.]]]])
    """
    fname = "adaptive_avg_pool2d"
    xa, dt = x, _float_operands((x,), _POOL_NDIM)
    if dt is None:
        (xa,), dt = _operands(fname, (x,), ("x",), _POOL_NDIM, _POOL_LAYOUT)
    elif TYPE_CHECKING:  # the one-step check passed: a native float array
        xa = cast("FloatArray", xa)
    plan = _adaptive_plan(fname, "adaptive_avg", xa.shape, dt, output_size)
    if _numpy_backend():
        return _as(_ref.adaptive_avg_pool2d(xa, output_size), dt)
    return cast("FloatArray", plan.forward(xa))


def adaptive_avg_pool2d_backward(
    grad_out: npt.ArrayLike, input_shape: Sequence[int]
) -> FloatArray:
    """Gradient of :func:`adaptive_avg_pool2d` (the output size is ``grad_out``'s).

    Parameters
    ----------
    grad_out : array_like, shape (N, C, OH, OW) or (C, OH, OW)
    input_shape : tuple of int
        Shape of the forward input.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``
        Each upstream value divided by its window's size and added over the
        window; overlapping windows accumulate.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.adaptive_avg_pool2d_backward(np.array([[[[4.]]]]), (1, 1, 2, 2))
    array([[[[1., 1.],
             [1., 1.]]]])
    """
    fname = "adaptive_avg_pool2d_backward"
    (g,), dt = _operands(fname, (grad_out,), ("grad_out",), _POOL_NDIM, _GRAD_LAYOUT)
    shape = V.shape_tuple(fname, "input_shape", input_shape, g.ndim)
    if g.shape[:-2] != shape[:-2]:
        raise ValueError(
            f"{fname}: grad_out.shape {g.shape} and input_shape {shape} must agree on "
            f"the batch and channel axes"
        )
    V.check_alloc(fname, shape, dt.itemsize)
    plan = _adaptive_plan(fname, "adaptive_avg", shape, dt, cast("Pair", g.shape[-2:]))
    if _numpy_backend():
        return _as(_ref.adaptive_avg_pool2d_backward(g, shape), dt)
    return plan.backward(g)


@overload
def adaptive_max_pool2d(
    x: npt.ArrayLike, output_size: AdaptiveSize, return_indices: Literal[False] = False
) -> FloatArray: ...
@overload
def adaptive_max_pool2d(
    x: npt.ArrayLike, output_size: AdaptiveSize, return_indices: Literal[True]
) -> tuple[FloatArray, IndexArray]: ...
@overload
def adaptive_max_pool2d(
    x: npt.ArrayLike, output_size: AdaptiveSize, return_indices: bool = False
) -> FloatArray | tuple[FloatArray, IndexArray]: ...
def adaptive_max_pool2d(
    x: npt.ArrayLike, output_size: AdaptiveSize, return_indices: bool = False
) -> FloatArray | tuple[FloatArray, IndexArray]:
    """2-D adaptive max pooling, as ``torch.nn.functional.adaptive_max_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
        Only the batch axis may be empty.
    output_size : int or (int or None, int or None)
        As :func:`adaptive_avg_pool2d`.
    return_indices : bool
        Also return the argmax positions.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        The maximum of each adaptive window (the windows of
        :func:`adaptive_avg_pool2d`).
    indices : ndarray of int64, same shape, only if ``return_indices``
        Flat position ``h*W + w`` of each maximum in its input plane; ties
        and NaN follow :func:`max_pool2d`'s rules.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.adaptive_max_pool2d(np.arange(6.).reshape(1, 1, 2, 3), 1, return_indices=True)
    (array([[[[5.]]]]), array([[[[5]]]]))
    """
    fname = "adaptive_max_pool2d"
    if return_indices is not True and return_indices is not False:
        return_indices = V.boolean(fname, "return_indices", return_indices)
    (xa,), dt = _operands(fname, (x,), ("x",), _POOL_NDIM, _POOL_LAYOUT)
    plan = _adaptive_plan(fname, "adaptive_max", xa.shape, dt, output_size)
    idx: IndexArray | None
    if _numpy_backend():
        y, idx = _ref.adaptive_max_pool2d(xa, output_size, return_indices=True)
        y, idx = _as(y, dt), np.asarray(idx, dtype=np.int64)
    else:
        y, idx = plan.forward(xa, return_indices)
    return (y, idx) if return_indices else y  # type: ignore[return-value]


def adaptive_max_pool2d_backward(
    grad_out: npt.ArrayLike, indices: npt.ArrayLike, input_shape: Sequence[int]
) -> FloatArray:
    """Gradient of :func:`adaptive_max_pool2d`: route each gradient to its argmax.

    Parameters
    ----------
    grad_out : array_like, shape (N, C, OH, OW) or (C, OH, OW)
    indices : array_like of int, same shape
        As returned by ``adaptive_max_pool2d(..., return_indices=True)``.
    input_shape : tuple of int
        Shape of the forward input.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``
        Zero except at argmax positions (overlapping windows accumulate).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.adaptive_max_pool2d_backward(np.array([[[[2.]]]]), np.array([[[[1]]]]), (1, 1, 1, 2))
    array([[[[0., 2.]]]])
    """
    fname = "adaptive_max_pool2d_backward"
    g, idx, shape, dt = _argmax_backward(fname, grad_out, indices, input_shape)
    if _numpy_backend():
        return _as(_ref.adaptive_max_pool2d_backward(g, idx, shape), dt)
    return _argmax_backward_run(fname, g, idx, shape, dt)


def max_unpool2d(
    x: npt.ArrayLike, indices: npt.ArrayLike, kernel_size: IntOrPair,
    stride: IntOrPair | None = None, padding: IntOrPair = 0,
    output_size: Sequence[int] | None = None,
) -> FloatArray:
    """Partial inverse of :func:`max_pool2d`, as ``torch.nn.functional.max_unpool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
        Values to place (typically a max-pool's output).
    indices : array_like of int, same shape
        Flat position ``oh*OW + ow`` of each value in its output plane
        (typically the max-pool's indices).
    kernel_size, stride, padding
        The max-pool's; they give the default output size.
    output_size : (int, int), optional
        ``(OH, OW)`` (or a full shape ending in it), strictly within
        ``stride`` of the default size (which it disambiguates).

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)
        Zero except at the indices; where indices repeat in a plane, the
        last value (row-major order of ``x``) is kept.

    Notes
    -----
    Default ``OH = (H - 1)*sH - 2*pH + kH``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.max_unpool2d(np.array([[[[7.]]]]), np.array([[[[2]]]]), 2)
    array([[[[0., 0.],
             [7., 0.]]]])
    """
    fname = "max_unpool2d"
    (xa,), dt = _operands(fname, (x,), ("x",), _POOL_NDIM, _POOL_LAYOUT)
    idx = V.index_array(fname, "indices", indices)
    if idx.shape != xa.shape:
        raise ValueError(f"{fname}: indices.shape {idx.shape} must equal x.shape {xa.shape}")
    k, s, p = _pool_params(fname, kernel_size, stride, padding)
    H, W = xa.shape[-2:]
    default = ((H - 1) * s[0] - 2 * p[0] + k[0], (W - 1) * s[1] - 2 * p[1] + k[1])
    o = V.unpool_output_size(fname, output_size, default, s, xa.shape[:-2])
    if min(o) < 0:
        raise ValueError(
            f"{fname}: the output size {o} would be negative: input size {(H, W)}, "
            f"kernel_size {k}, stride {s}, padding {p}"
        )
    V.check_alloc(fname, xa.shape[:-2] + o, dt.itemsize,
                  f"output for kernel_size {k}, stride {s}, padding {p}")
    size = o[0] * o[1]
    if idx.size and not _eltwise.indices_within(idx.reshape(-1), 0, size):
        raise ValueError(
            f"{fname}: indices must lie in [0, OH*OW) = [0, {size}) for the output size "
            f"{o}; got values in [{idx.min()}, {idx.max()}]"
        )
    if _numpy_backend():
        return _as(_ref.max_unpool2d(xa, idx, k, s, p, output_size=o), dt)
    plan = _plan.cached(("max_unpool2d", xa.shape, dt, o, _config.get_num_threads()),
                        _plan.max_unpool2d_plan, fname, xa.shape, dt, o)
    return plan.forward(xa, idx)


def max_unpool2d_backward(grad_out: npt.ArrayLike, indices: npt.ArrayLike) -> FloatArray:
    """Gradient of :func:`max_unpool2d`: the upstream gradient at each index.

    Parameters
    ----------
    grad_out : array_like, shape (N, C, OH, OW) or (C, OH, OW)
    indices : array_like of int, shape (N, C, H, W) or (C, H, W)
        The indices given to the forward call.

    Returns
    -------
    grad_x : ndarray, shape of ``indices``
        ``grad_x[n, c, h, w] = grad_out[n, c].flat[indices[n, c, h, w]]``
        (a gather; repeated indices all read the same gradient).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.max_unpool2d_backward(np.arange(4.).reshape(1, 1, 2, 2), np.array([[[[3, 1]]]]))
    array([[[[3., 1.]]]])
    """
    fname = "max_unpool2d_backward"
    (g,), dt = _operands(fname, (grad_out,), ("grad_out",), _POOL_NDIM, _GRAD_LAYOUT)
    idx = V.index_array(fname, "indices", indices)
    if idx.ndim != g.ndim or idx.shape[:-2] != g.shape[:-2]:
        raise ValueError(
            f"{fname}: indices.shape {idx.shape} and grad_out.shape {g.shape} must agree on "
            f"the number of axes and on the batch and channel axes"
        )
    size = g.shape[-2] * g.shape[-1]
    if idx.size and not _eltwise.indices_within(idx.reshape(-1), 0, size):
        raise ValueError(
            f"{fname}: indices must lie in [0, OH*OW) = [0, {size}) for grad_out.shape "
            f"{g.shape}; got values in [{idx.min()}, {idx.max()}]"
        )
    V.check_alloc(fname, idx.shape, dt.itemsize)
    if _numpy_backend():
        return _as(_ref.max_unpool2d_backward(g, idx), dt)
    plan = _plan.cached(
        ("max_unpool2d", idx.shape, dt, g.shape[-2:], _config.get_num_threads()),
        _plan.max_unpool2d_plan, fname, idx.shape, dt, g.shape[-2:],
    )
    return plan.backward(g, idx)


# 1-D pooling: a 2-D pool of height 1 (the same plans and kernels).

_POOL1D_NDIM = ((2, 3),)
_POOL1D_LAYOUT = {"x": "(N, C, L) or (C, L)"}
_GRAD1D_LAYOUT = {"grad_out": "(N, C, OL) or (C, OL)"}
_AXES1D = ("height", "length")


def _pool1d_params(
    fname: str, kernel_size: IntOrSingle, stride: IntOrSingle | None,
    padding: IntOrSingle, dilation: IntOrSingle = 1,
) -> tuple[Pair, Pair, Pair, Pair]:
    k = V.single(fname, "kernel_size", kernel_size, 1)
    s = k if stride is None else V.single(fname, "stride", stride, 1)
    p = V.single(fname, "padding", padding, 0)
    d = V.single(fname, "dilation", dilation, 1)
    return (1, k), (1, s), (0, p), (1, d)


def _pool1d_plan(
    fname: str, kind: str, shape2: Shape, dt: FloatDType, k: Pair, s: Pair, p: Pair, d: Pair,
    ceil_mode: bool, count_include_pad: bool,
) -> _plan.PoolPlan:
    """The cached 2-D plan of a 1-D pool (validated options; ``shape2`` has H = 1)."""
    return _plan.cached(
        (fname, shape2, dt, k, s, p, d, ceil_mode, count_include_pad, _config._kernel_threads),
        _plan.pool2d_plan, fname, kind, shape2, dt, k, s, p, d, ceil_mode, count_include_pad,
        None, _AXES1D,
    )


def _as_2d(a: FloatArray) -> FloatArray:
    """(N, C, L) -> (N, C, 1, L) and (C, L) -> (C, 1, L), a view."""
    return a[..., None, :]


@overload
def max_pool1d(
    x: npt.ArrayLike, kernel_size: IntOrSingle, stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0, dilation: IntOrSingle = 1, ceil_mode: bool = False,
    return_indices: Literal[False] = False,
) -> FloatArray: ...
@overload
def max_pool1d(
    x: npt.ArrayLike, kernel_size: IntOrSingle, stride: IntOrSingle | None,
    padding: IntOrSingle, dilation: IntOrSingle, ceil_mode: bool,
    return_indices: Literal[True],
) -> tuple[FloatArray, IndexArray]: ...
@overload
def max_pool1d(
    x: npt.ArrayLike, kernel_size: IntOrSingle, stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0, dilation: IntOrSingle = 1, ceil_mode: bool = False,
    *, return_indices: Literal[True],
) -> tuple[FloatArray, IndexArray]: ...
@overload
def max_pool1d(
    x: npt.ArrayLike, kernel_size: IntOrSingle, stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0, dilation: IntOrSingle = 1, ceil_mode: bool = False,
    return_indices: bool = False,
) -> FloatArray | tuple[FloatArray, IndexArray]: ...
def max_pool1d(
    x: npt.ArrayLike, kernel_size: IntOrSingle, stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0, dilation: IntOrSingle = 1, ceil_mode: bool = False,
    return_indices: bool = False,
) -> FloatArray | tuple[FloatArray, IndexArray]:
    """1-D max pooling with argmax, as ``torch.nn.functional.max_pool1d``.

    Parameters
    ----------
    x : array_like, shape (N, C, L) or (C, L)
    kernel_size, stride, padding, dilation : int (or a 1-tuple)
        As :func:`max_pool2d`, along the one axis; ``stride`` defaults to
        ``kernel_size``.
    ceil_mode : bool
        Round the output length up (as :func:`max_pool2d`).
    return_indices : bool
        Also return the argmax positions.

    Returns
    -------
    y : ndarray, shape (N, C, OL) or (C, OL)
    indices : ndarray of int64, same shape, only if ``return_indices``
        Position of each maximum along ``L``.

    Notes
    -----
    ``OL = floor((L + 2*p - d*(k - 1) - 1) / s) + 1`` (``ceil`` with
    ``ceil_mode``). Runs as a 2-D pool of height 1.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.max_pool1d(np.array([[[1., 4., 2., 3., 0.]]]), 2, return_indices=True)
    (array([[[4., 3.]]]), array([[[1, 3]]]))
    """
    fname = "max_pool1d"
    return_indices = V.boolean(fname, "return_indices", return_indices)
    (xa,), dt = _operands(fname, (x,), ("x",), _POOL1D_NDIM, _POOL1D_LAYOUT)
    x2 = _as_2d(xa)
    k, s, p, d = _pool1d_params(fname, kernel_size, stride, padding, dilation)
    cm = V.boolean(fname, "ceil_mode", ceil_mode)
    plan = _pool1d_plan(fname, "max", x2.shape, dt, k, s, p, d, cm, True)
    idx: IndexArray | None
    if _numpy_backend():
        y, idx = _ref.max_pool1d(xa, kernel_size, stride, padding, dilation, ceil_mode,
                                 return_indices=True)
        y, idx = _as(y, dt), np.asarray(idx, dtype=np.int64)
    else:
        y2, idx2 = cast("tuple[FloatArray, IndexArray | None]", plan.forward(x2, return_indices))
        y = y2[..., 0, :]
        idx = None if idx2 is None else idx2[..., 0, :]
    return (y, idx) if return_indices else y  # type: ignore[return-value]


def max_pool1d_backward(
    grad_out: npt.ArrayLike, indices: npt.ArrayLike, input_shape: Sequence[int]
) -> FloatArray:
    """Gradient of :func:`max_pool1d`: route each gradient to its argmax.

    Parameters
    ----------
    grad_out : array_like, shape (N, C, OL) or (C, OL)
    indices : array_like of int, same shape
        As returned by ``max_pool1d(..., return_indices=True)``.
    input_shape : tuple of int
        ``(N, C, L)`` or ``(C, L)``.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``
        Zero except at argmax positions (overlapping windows accumulate).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.max_pool1d_backward(np.array([[[5., 6.]]]), np.array([[[1, 1]]]), (1, 1, 3))
    array([[[ 0., 11.,  0.]]])
    """
    fname = "max_pool1d_backward"
    g, idx, shape, dt = _argmax_backward(fname, grad_out, indices, input_shape, one_d=True)
    if _numpy_backend():
        return _as(_ref.max_pool1d_backward(g, idx, shape), dt)
    shape2 = tuple(shape[:-1]) + (1, shape[-1])
    gx = _argmax_backward_run(fname, _as_2d(g), idx[..., None, :], shape2, dt)
    return gx[..., 0, :]


def avg_pool1d(
    x: npt.ArrayLike, kernel_size: IntOrSingle, stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0, ceil_mode: bool = False, count_include_pad: bool = True,
) -> FloatArray:
    """1-D average pooling, as ``torch.nn.functional.avg_pool1d``.

    Parameters
    ----------
    x : array_like, shape (N, C, L) or (C, L)
    kernel_size, stride, padding : int (or a 1-tuple)
        As :func:`avg_pool2d`, along the one axis; ``stride`` defaults to
        ``kernel_size``.
    ceil_mode, count_include_pad : bool
        As :func:`avg_pool2d`.

    Returns
    -------
    y : ndarray, shape (N, C, OL) or (C, OL)

    Notes
    -----
    ``OL = floor((L + 2*p - k) / s) + 1`` (``ceil`` with ``ceil_mode``).
    Runs as a 2-D pool of height 1.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.avg_pool1d(np.array([[[1., 3., 5., 7.]]]), 2)
    array([[[2., 6.]]])
    """
    fname = "avg_pool1d"
    (xa,), dt = _operands(fname, (x,), ("x",), _POOL1D_NDIM, _POOL1D_LAYOUT)
    x2 = _as_2d(xa)
    k, s, p, _ = _pool1d_params(fname, kernel_size, stride, padding)
    opts = (V.boolean(fname, "ceil_mode", ceil_mode),
            V.boolean(fname, "count_include_pad", count_include_pad))
    plan = _pool1d_plan(fname, "avg", x2.shape, dt, k, s, p, (1, 1), *opts)
    if _numpy_backend():
        return _as(_ref.avg_pool1d(xa, kernel_size, stride, padding, ceil_mode,
                                   count_include_pad), dt)
    return cast("FloatArray", plan.forward(x2))[..., 0, :]


def avg_pool1d_backward(
    grad_out: npt.ArrayLike, input_shape: Sequence[int], kernel_size: IntOrSingle,
    stride: IntOrSingle | None = None, padding: IntOrSingle = 0,
    ceil_mode: bool = False, count_include_pad: bool = True,
) -> FloatArray:
    """Gradient of :func:`avg_pool1d`.

    Parameters
    ----------
    grad_out : array_like, shape (N, C, OL) or (C, OL)
    input_shape : tuple of int
        ``(N, C, L)`` or ``(C, L)``.
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As given to :func:`avg_pool1d`.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.avg_pool1d_backward(np.array([[[2., 4.]]]), (1, 1, 4), 2)
    array([[[1., 1., 2., 2.]]])
    """
    fname = "avg_pool1d_backward"
    (g,), dt = _operands(fname, (grad_out,), ("grad_out",), _POOL1D_NDIM, _GRAD1D_LAYOUT)
    shape = V.shape_tuple(fname, "input_shape", input_shape, g.ndim)
    k, s, p, _ = _pool1d_params(fname, kernel_size, stride, padding)
    shape2 = tuple(shape[:-1]) + (1, shape[-1])
    plan = _avg_backward_plan(fname, shape2, dt, k, s, p, ceil_mode, count_include_pad, None,
                              _AXES1D)
    out_shape = plan.out_shape[:-2] + plan.out_shape[-1:]
    if g.shape != out_shape:
        raise ValueError(
            f"{fname}: grad_out.shape must be the avg_pool1d output shape {out_shape} for "
            f"input_shape {shape}, kernel_size {k[1]}, stride {s[1]}, padding {p[1]}, "
            f"ceil_mode {plan.ceil_mode}; got {g.shape}"
        )
    if _numpy_backend():
        return _as(_ref.avg_pool1d_backward(g, shape, kernel_size, stride, padding, ceil_mode,
                                            count_include_pad), dt)
    return plan.backward(_as_2d(g))[..., 0, :]


