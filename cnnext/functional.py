"""The validated functional API (also importable as ``cnnext.F``).

This is the only layer that checks arguments, coerces dtypes and memory
layout, picks the float32/float64 kernel and allocates outputs.  Semantics
are PyTorch's CPU semantics:

* layout NCHW; a 3-D ``(C, H, W)`` input is one unbatched sample and gives a
  3-D result;
* convolution weight ``(C_out, C_in, kH, kW)``; the forward pass is a
  *cross-correlation* (the kernel is not flipped);
* ``stride``, ``padding``, ``dilation``, ``kernel_size`` take an int or an
  ``(h, w)`` pair;
* the compute dtype is ``numpy.result_type(*inputs, numpy.float32)``
  restricted to float32/float64, so integer inputs promote to float64 and
  uint8 images to float32.  Inputs are never modified.

Which implementation runs is chosen by :func:`cnnext.set_backend`:
``"cython"`` (default, compiled kernels) or ``"numpy"``
(:mod:`cnnext.reference`).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal, ParamSpec, TypeVar, cast, overload

import numpy as np
import numpy.typing as npt

from . import _config, _eltwise, _plan
from . import _validate as V
from . import reference as _ref

if TYPE_CHECKING:
    from ._typing import (
        AdaptiveSize, FloatArray, FloatDType, IndexArray, IntOrPair, IntOrSingle, Pair, Shape,
    )

_P = ParamSpec("_P")
_R = TypeVar("_R")

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv1d",
    "conv1d_backward",
    "full_conv2d",
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
    "linear",
    "linear_backward",
    "relu",
    "relu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "tanh",
    "tanh_backward",
    "softmax",
    "softmax_backward",
    "log_softmax",
    "log_softmax_backward",
    "softmax_cross_entropy",
    "batch_norm",
    "batch_norm_backward",
]

def _numpy_backend() -> bool:
    # (_config.compiled_backend() inlined: this runs on every call)
    return (_config._backend_override.get() or _config._default_backend) != "cython"


def _as(a: npt.ArrayLike, dt: FloatDType) -> FloatArray:
    """The numpy backend's result as an array of the compute dtype."""
    return np.asarray(a, dtype=dt)


# Allowed ndim of each operand.
_CONV_NDIM = ((3, 4), (4,), (1,))
_CONV_GRAD_NDIM = ((3, 4), (3, 4), (4,))
_CONV1D_NDIM = ((2, 3), (3,), (1,))
_CONV1D_GRAD_NDIM = ((2, 3), (2, 3), (3,))
_LINEAR_NDIM = ((2,), (2,), (1,))
_LINEAR_GRAD_NDIM = ((2,), (2,), (2,))
_LINEAR_LAYOUT = {"x": "(N, in_features)"}
_POOL_NDIM = ((3, 4),)
_POOL_LAYOUT = {"x": "(N, C, H, W) or (C, H, W)"}
_GRAD_LAYOUT = {"grad_out": "(N, C, OH, OW) or (C, OH, OW)"}


_float_operands = _eltwise.float_operands  # the one-step check of a steady call
_XWB = ("x", "weight", "bias")
_GXW = ("grad_out", "x", "weight")


@overload
def _operands(
    fname: str, arrays: tuple[npt.ArrayLike, npt.ArrayLike, None], names: tuple[str, ...],
    ndims: tuple[tuple[int, ...] | None, ...], layouts: Mapping[str, str] | None = None,
) -> tuple[tuple[FloatArray, FloatArray, None], FloatDType]: ...
@overload
def _operands(
    fname: str, arrays: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike],
    names: tuple[str, ...], ndims: tuple[tuple[int, ...] | None, ...],
    layouts: Mapping[str, str] | None = None,
) -> tuple[tuple[FloatArray, FloatArray, FloatArray], FloatDType]: ...
# A 3-tuple without None also matches the variadic overload below; the
# first match wins.
@overload
def _operands(  # type: ignore[overload-overlap]
    fname: str, arrays: tuple[npt.ArrayLike, npt.ArrayLike, npt.ArrayLike | None],
    names: tuple[str, ...], ndims: tuple[tuple[int, ...] | None, ...],
    layouts: Mapping[str, str] | None = None,
) -> tuple[tuple[FloatArray, FloatArray, FloatArray | None], FloatDType]: ...
@overload
def _operands(
    fname: str, arrays: tuple[npt.ArrayLike, ...], names: tuple[str, ...],
    ndims: tuple[tuple[int, ...] | None, ...], layouts: Mapping[str, str] | None = None,
) -> tuple[tuple[FloatArray, ...], FloatDType]: ...
def _operands(
    fname: str, arrays: tuple[npt.ArrayLike | None, ...], names: tuple[str, ...],
    ndims: tuple[tuple[int, ...] | None, ...], layouts: Mapping[str, str] | None = None,
) -> tuple[tuple[FloatArray | None, ...], FloatDType]:
    """Check -> (arrays as C-contiguous arrays of the compute dtype, dtype).

    A None bias (an absent one) stays None.  The common case (native
    float32/float64 C-contiguous arrays of one dtype) is one check in C;
    anything else gets the full validation and a converted copy.  The arrays
    keep the caller's shapes (3-D unbatched included): the numpy backend
    receives exactly these.
    """
    optional = names[-1] == "bias"
    dt = _eltwise.float_operands(arrays, ndims, True, optional)
    if dt is not None:
        return cast("tuple[FloatArray | None, ...]", arrays), dt
    dt = _eltwise.float_operands(arrays, ndims, False, optional)
    if dt is not None:  # the right kind of arrays, in another memory layout
        return tuple(None if a is None else np.ascontiguousarray(a) for a in arrays), dt
    present = [i for i, a in enumerate(arrays) if a is not None or names[i] != "bias"]
    arrs, dt = V.float_arrays(
        fname, [(names[i], arrays[i]) for i in present], [ndims[i] for i in present], layouts
    )
    out = list(arrays)
    for i, a in zip(present, arrs):
        out[i] = a
    return cast("tuple[FloatArray | None, ...]", tuple(out)), dt


def _shape(a: FloatArray | None) -> Shape | None:
    return None if a is None else a.shape


def _conv_params(
    fname: str, stride: IntOrPair, padding: IntOrPair, dilation: IntOrPair
) -> tuple[Pair, Pair, Pair]:
    return (
        V.pair(fname, "stride", stride, 1),
        V.pair(fname, "padding", padding, 0),
        V.pair(fname, "dilation", dilation, 1),
    )


def _grad_operands(
    fname: str, grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike,
    ndims: tuple[tuple[int, ...], ...],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatDType]:
    """A convolution backward's checked (grad_out, x, weight, dtype):
    ``grad_out`` and ``x`` both batched or both unbatched."""
    (g, xa, w), dt = _operands(fname, (grad_out, x, weight), _GXW, ndims)
    if g.ndim != xa.ndim:
        batched = max(ndims[1])
        raise ValueError(
            f"{fname}: grad_out ({g.ndim}-D) and x ({xa.ndim}-D) must both be "
            f"batched ({batched}-D) or both unbatched ({batched - 1}-D)"
        )
    return g, xa, w, dt


def _as_grads(
    gx: FloatArray, gw: FloatArray, gb: FloatArray | None, dt: FloatDType, bias: bool
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """The reference's (grad_x, grad_weight, grad_bias or None) in ``dt``."""
    return _as(gx, dt), _as(gw, dt), _as(cast("FloatArray", gb), dt) if bias else None


# Default option values, compared by identity on the hot paths (an int 0 or
# 1 is one object; True and 1.0 are other objects).
_ZERO, _ONE = 0, 1


def _conv2d_plan(
    fname: str, x: FloatArray, w: FloatArray, bias: FloatArray | None, dt: FloatDType,
    stride: IntOrPair, padding: str | IntOrPair, dilation: IntOrPair, groups: int = 1,
) -> _plan.ConvPlan:
    """The cached :class:`cnnext._plan.ConvPlan` for these arrays and options."""
    bshape = None if bias is None else bias.shape
    nt = _config._kernel_threads
    alg = _config.get_conv_algorithm()
    # Plain ints (never bool, never float) are their own normal form: a
    # steady-state call finds its plan before normalising anything.
    plain = ((stride is _ONE or type(stride) is int)
             and (padding is _ZERO or type(padding) is int)
             and (dilation is _ONE or type(dilation) is int)
             and (groups is _ONE or type(groups) is int))
    if plain:
        key: Hashable = (fname, x.shape, w.shape, dt, bshape, stride, padding, dilation, groups,
                         nt, alg)
        plan: _plan.ConvPlan | None = _plan.lookup(key)
        if plan is not None:
            return plan
    s, d = V.pair(fname, "stride", stride, 1), V.pair(fname, "dilation", dilation, 1)
    p = V.conv_padding(fname, padding)
    G = V.groups(fname, groups)
    if not plain:
        key = (fname, x.shape, w.shape, dt, bshape, s, p, d, G, nt, alg)
        plan = _plan.lookup(key)
        if plan is not None:
            return plan  # type: ignore[no-any-return]  # a conv2d key's plan is a ConvPlan
    return _plan.store(key, _plan.conv2d_plan(fname, x.shape, w.shape, bshape, dt, s, p, d, G,
                                              alg))


def _linear_plan(
    fname: str, x: FloatArray, w: FloatArray, bias: FloatArray | None, dt: FloatDType
) -> _plan.LinearPlan:
    bshape = _shape(bias)
    return _plan.cached(
        ("linear", x.shape, w.shape, bshape, dt, _config.get_num_threads()),
        _plan.linear_plan, fname, x.shape, w.shape, bshape, dt,
    )


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
# Convolution
# --------------------------------------------------------------------------


def conv2d(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None,
    stride: IntOrPair = 1, padding: str | IntOrPair = 0, dilation: IntOrPair = 1,
    groups: int = 1,
) -> FloatArray:
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        Input batch (or one unbatched sample).
    weight : array_like, shape (C_out, C_in / groups, kH, kW)
        Filters.  Not flipped: ``y[n, o, i, j] = b[o] + sum_{c, u, v}
        w[o, c, u, v] * x_pad[n, c, i*sH + u*dH, j*sW + v*dW]`` (``c`` over
        the input channels of ``o``'s group).
    bias : array_like, shape (C_out,), optional
    stride, padding, dilation : int or (int, int)
        ``stride >= 1``, ``padding >= 0`` (zeros), ``dilation >= 1`` (1: none).
        ``padding`` may also be ``"valid"`` (no padding) or ``"same"``
        (stride 1 only: the output has the input's size; ``dH*(kH - 1)``
        rows of zeros in total, half above and the rest -- one more for an
        odd total -- below; likewise columns).
    groups : int
        ``>= 1``, dividing ``C_in`` and ``C_out``: input channel block ``g``
        feeds only output channel block ``g`` (``groups == C_in``: a
        depthwise convolution).

    Returns
    -------
    y : ndarray, shape (N, C_out, OH, OW) (3-D when ``x`` was 3-D)
        Of the compute dtype (float32 or float64).

    Notes
    -----
    ``OH = floor((H + 2*pH - dH*(kH - 1) - 1) / sH) + 1`` and likewise ``OW``
    (``OH = H`` for ``"same"``).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 2, 2), dtype=np.float32)
    >>> F.conv2d(x, w, stride=2)
    array([[[[10., 18.],
             [42., 50.]]]], dtype=float32)
    """
    fname = "conv2d"
    dt = _float_operands((x, weight, bias), _CONV_NDIM, True, True)
    if dt is None:
        (x, weight, bias), dt = _operands(fname, (x, weight, bias), _XWB, _CONV_NDIM)
    elif TYPE_CHECKING:  # the one-step check passed: native float arrays
        x, weight, bias = cast("tuple[FloatArray, FloatArray, FloatArray | None]",
                               (x, weight, bias))
    plan = _conv2d_plan(fname, x, weight, bias, dt, stride, padding, dilation, groups)
    if _numpy_backend():
        return _as(_ref.conv2d(x, weight, bias, stride=stride, padding=padding,
                               dilation=dilation, groups=groups), dt)
    return plan.forward(x, weight, bias)


@overload
def conv2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: str | IntOrPair = 0, dilation: IntOrPair = 1, groups: int = 1,
    bias: Literal[True] = True,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def conv2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: str | IntOrPair = 0, dilation: IntOrPair = 1, groups: int = 1,
    bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
def conv2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: str | IntOrPair = 0, dilation: IntOrPair = 1, groups: int = 1,
    bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like, shape (N, C_out, OH, OW) or (C_out, OH, OW)
        Upstream gradient ``dL/dy``.
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        The forward input.
    weight : array_like, shape (C_out, C_in / groups, kH, kW)
    stride, padding, dilation, groups
        As given to :func:`conv2d`.
    bias : bool
        Whether the forward pass had a bias (``grad_bias`` is None if not).

    Returns
    -------
    grad_x : ndarray, shape of ``x``
        The *full convolution* of ``grad_out`` (dilated by the stride) with
        the 180-degree-rotated kernel, summed over C_out, cropped by the
        padding.  At stride 1 without padding it equals
        ``full_conv2d(grad_out, weight)``.
    grad_weight : ndarray, shape (C_out, C_in / groups, kH, kW)
        The correlation of the (padded) input with ``grad_out``, within
        each group.
    grad_bias : ndarray of shape (C_out,), or None
        ``grad_out.sum(axis=(0, 2, 3))``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.ones((1, 1, 3, 3)); w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = F.conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> gx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> gw[0, 0], gb
    (array([[4., 4.],
           [4., 4.]]), array([4.]))
    """
    fname = "conv2d_backward"
    bias = V.boolean(fname, "bias", bias)
    g, xa, w, dt = _grad_operands(fname, grad_out, x, weight, _CONV_GRAD_NDIM)
    plan = _conv2d_plan(fname, xa, w, None, dt, stride, padding, dilation, groups)
    if g.shape != plan.out_shape:
        raise ValueError(
            f"{fname}: grad_out.shape must be the conv2d output shape {plan.out_shape} "
            f"for x {xa.shape}, weight {w.shape}, stride {plan.stride}, padding "
            f"{plan.padding}, dilation {plan.dilation}, groups {plan.groups}; got {g.shape}"
        )
    if _numpy_backend():
        gx, gw, gb = _ref.conv2d_backward(g, xa, w, stride=stride, padding=padding,
                                          dilation=dilation, groups=groups, bias=bias)
        return _as_grads(gx, gw, gb, dt, bias)
    return plan.backward(g, xa, w, bias)


def _conv_transpose2d_plan(
    fname: str, x: FloatArray, w: FloatArray, bias: FloatArray | None, dt: FloatDType,
    stride: IntOrPair, padding: IntOrPair, output_padding: IntOrPair, groups: int,
    dilation: IntOrPair,
) -> _plan.ConvTransposePlan:
    """The cached :class:`cnnext._plan.ConvTransposePlan` for these arrays and options."""
    s, p, d = _conv_params(fname, stride, padding, dilation)
    op = V.pair(fname, "output_padding", output_padding, 0)
    G = V.groups(fname, groups)
    return _plan.cached(
        ("conv_transpose2d", x.shape, w.shape, dt, _shape(bias), s, p, op, d, G,
         _config.get_num_threads()),
        _plan.conv_transpose2d_plan, fname, x.shape, w.shape, _shape(bias), dt, s, p, op, d, G,
    )


def conv_transpose2d(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None,
    stride: IntOrPair = 1, padding: IntOrPair = 0, output_padding: IntOrPair = 0,
    groups: int = 1, dilation: IntOrPair = 1,
) -> FloatArray:
    """Transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    The adjoint of :func:`conv2d`: ``conv_transpose2d(g, w, ...)`` is the
    input gradient of ``conv2d(x, w, ...)`` for upstream gradient ``g``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
    weight : array_like, shape (C_in, C_out / groups, kH, kW)
        Note the order: input channels first, as in PyTorch.
    bias : array_like, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or (int, int)
        ``output_padding`` must be smaller than ``stride`` or ``dilation``.
    groups : int
        ``>= 1``, dividing ``C_in``: input channel block ``g`` feeds only
        output channel block ``g``.

    Returns
    -------
    y : ndarray, shape (N, C_out, OH, OW)

    Notes
    -----
    ``OH = (H - 1)*sH - 2*pH + dH*(kH - 1) + output_padding_h + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2)[0, 0]
    array([[1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.],
           [1., 1., 1., 1.]])
    """
    fname = "conv_transpose2d"
    (x, weight, bias), dt = _operands(fname, (x, weight, bias), _XWB, _CONV_NDIM)
    plan = _conv_transpose2d_plan(fname, x, weight, bias, dt, stride, padding, output_padding,
                                  groups, dilation)
    if _numpy_backend():
        return _as(_ref.conv_transpose2d(x, weight, bias, stride=stride, padding=padding,
                                         output_padding=output_padding, groups=groups,
                                         dilation=dilation), dt)
    return plan.forward(x, weight, bias)


@overload
def conv_transpose2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: IntOrPair = 0, output_padding: IntOrPair = 0, groups: int = 1,
    dilation: IntOrPair = 1, bias: Literal[True] = True,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def conv_transpose2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: IntOrPair = 0, output_padding: IntOrPair = 0, groups: int = 1,
    dilation: IntOrPair = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
def conv_transpose2d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, stride: IntOrPair = 1,
    padding: IntOrPair = 0, output_padding: IntOrPair = 0, groups: int = 1,
    dilation: IntOrPair = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`conv_transpose2d` w.r.t. its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like, shape (N, C_out, OH, OW) or (C_out, OH, OW)
        Upstream gradient ``dL/dy``.
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        The forward input.
    weight : array_like, shape (C_in, C_out / groups, kH, kW)
    stride, padding, output_padding, groups, dilation
        As given to :func:`conv_transpose2d`.
    bias : bool
        Whether the forward pass had a bias (``grad_bias`` is None if not).

    Returns
    -------
    grad_x : ndarray, shape of ``x``
        ``conv2d(grad_out, weight, stride=stride, padding=padding,
        dilation=dilation, groups=groups)`` (the convolution it is the
        adjoint of), cropped to ``x``'s size.
    grad_weight : ndarray, shape of ``weight``
        That convolution's weight gradient, with ``grad_out`` as its input
        and ``x`` as its upstream gradient.
    grad_bias : ndarray of shape (C_out,), or None
        ``grad_out.sum(axis=(0, 2, 3))``.

    Notes
    -----
    ``grad_out`` must have the :func:`conv_transpose2d` output shape.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([[[[1., 2.]]]]); w = np.array([[[[1., 10.]]]])
    >>> gx, gw, gb = F.conv_transpose2d_backward(np.array([[[[1., 0., 2.]]]]), x, w)
    >>> gx[0, 0], gw[0, 0], gb
    (array([[ 1., 20.]]), array([[1., 4.]]), array([3.]))
    """
    fname = "conv_transpose2d_backward"
    bias = V.boolean(fname, "bias", bias)
    g, xa, w, dt = _grad_operands(fname, grad_out, x, weight, _CONV_GRAD_NDIM)
    plan = _conv_transpose2d_plan(fname, xa, w, None, dt, stride, padding, output_padding,
                                  groups, dilation)
    if g.shape != plan.out_shape:
        raise ValueError(
            f"{fname}: grad_out.shape must be the conv_transpose2d output shape "
            f"{plan.out_shape} for x {xa.shape}, weight {w.shape}, stride {plan.stride}, "
            f"padding {plan.padding}, output_padding {plan.output_padding}, groups "
            f"{plan.groups}, dilation {plan.dilation}; got {g.shape}"
        )
    if _numpy_backend():
        gx, gw, gb = _ref.conv_transpose2d_backward(
            g, xa, w, stride=stride, padding=padding, output_padding=output_padding,
            groups=groups, dilation=dilation, bias=bias)
        return _as_grads(gx, gw, gb, dt, bias)
    return plan.backward(g, xa, w, bias)


def _conv1d_plan(
    fname: str, x: FloatArray, w: FloatArray, bias: FloatArray | None, dt: FloatDType,
    stride: int | Sequence[int], padding: str | int | Sequence[int],
    dilation: int | Sequence[int], groups: int,
) -> _plan.Conv1dPlan:
    """The cached :class:`cnnext._plan.Conv1dPlan` for these arrays and options."""
    s, d = V.single(fname, "stride", stride, 1), V.single(fname, "dilation", dilation, 1)
    p = V.conv1d_padding(fname, padding)
    G = V.groups(fname, groups)
    bshape = _shape(bias)
    return _plan.cached(
        ("conv1d", fname, x.shape, w.shape, dt, bshape, s, p, d, G, _config.get_num_threads()),
        _plan.conv1d_plan, fname, x.shape, w.shape, bshape, dt, s, p, d, G,
    )


def conv1d(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None,
    stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1,
) -> FloatArray:
    """1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, L) or (C_in, L)
    weight : array_like, shape (C_out, C_in / groups, k)
    bias : array_like, shape (C_out,), optional
    stride, padding, dilation : int or (int,)
        As for :func:`conv2d`, along the one axis; ``padding`` may be
        ``"valid"`` or ``"same"`` (stride 1; the odd one of an odd total
        padding at the end).
    groups : int
        As for :func:`conv2d`.

    Returns
    -------
    y : ndarray, shape (N, C_out, OL) (2-D when ``x`` was 2-D)

    Notes
    -----
    ``OL = floor((L + 2*p - d*(k - 1) - 1) / s) + 1``.  Runs as
    :func:`conv2d` of the ``(1, L)`` images with the ``(1, k)`` kernels.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.conv1d(np.array([[[1., 2., 3., 4.]]]), np.array([[[1., 10.]]]), padding="same")
    array([[[21., 32., 43.,  4.]]])
    """
    fname = "conv1d"
    (x, weight, bias), dt = _operands(fname, (x, weight, bias), _XWB, _CONV1D_NDIM,
                                      {"x": "(N, C, L) or (C, L)", "weight": "(C_out, C_in, k)"})
    plan = _conv1d_plan(fname, x, weight, bias, dt, stride, padding, dilation, groups)
    if _numpy_backend():
        return _as(_ref.conv1d(x, weight, bias, stride, padding, dilation, groups),
                   dt)
    return plan.forward(x, weight, bias)


@overload
def conv1d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike,
    stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1, bias: Literal[True] = True,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def conv1d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike,
    stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
def conv1d_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike,
    stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`conv1d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like, shape (N, C_out, OL) or (C_out, OL)
    x : array_like, shape (N, C_in, L) or (C_in, L)
    weight : array_like, shape (C_out, C_in / groups, k)
    stride, padding, dilation, groups
        As given to :func:`conv1d`.
    bias : bool
        Whether the forward pass had a bias (``grad_bias`` is None if not).

    Returns
    -------
    grad_x : ndarray, shape of ``x``
    grad_weight : ndarray, shape of ``weight``
    grad_bias : ndarray of shape (C_out,), or None

    Notes
    -----
    :func:`conv2d_backward` of the ``(1, L)`` images.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> gx, gw, gb = F.conv1d_backward(np.ones((1, 1, 2)), np.ones((1, 1, 3)),
    ...                                np.array([[[1., 10.]]]))
    >>> gx, gw, gb
    (array([[[ 1., 11., 10.]]]), array([[[2., 2.]]]), array([2.]))
    """
    fname = "conv1d_backward"
    bias = V.boolean(fname, "bias", bias)
    g, xa, w, dt = _grad_operands(fname, grad_out, x, weight, _CONV1D_GRAD_NDIM)
    plan = _conv1d_plan(fname, xa, w, None, dt, stride, padding, dilation, groups)
    if g.shape != plan.out_shape:
        p2 = plan.plan2d
        raise ValueError(
            f"{fname}: grad_out.shape must be the conv1d output shape {plan.out_shape} "
            f"for x {xa.shape}, weight {w.shape}, stride {p2.stride[1]}, padding "
            f"{p2.padding[1]}, dilation {p2.dilation[1]}, groups {p2.groups}; got {g.shape}"
        )
    if _numpy_backend():
        gx, gw, gb = _ref.conv1d_backward(g, xa, w, stride, padding, dilation,
                                          groups, bias)
        return _as_grads(gx, gw, gb, dt, bias)
    return plan.backward(g, xa, w, bias)


def full_conv2d(x: npt.ArrayLike, weight: npt.ArrayLike) -> FloatArray:
    """Full convolution with the 180-degree-rotated kernel, summed over K.

    ``y[n, c] = sum_k conv_full(x[n, k], weight[k, c])`` where ``conv_full``
    zero-pads by ``(kH-1, kW-1)`` on every side and correlates with
    ``weight[k, c, ::-1, ::-1]``.  This is the input-gradient operation of
    :func:`conv2d` at stride 1: ``full_conv2d(grad_out, w)`` is ``dL/dx``.

    Parameters
    ----------
    x : array_like, shape (N, K, H, W) or (K, H, W)
    weight : array_like, shape (K, C, kH, kW)

    Returns
    -------
    y : ndarray, shape (N, C, H + kH - 1, W + kW - 1)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([[[[1., 2.]]]])             # (1, 1, 1, 2)
    >>> w = np.array([[[[1., 10.]]]])            # (1, 1, 1, 2)
    >>> F.full_conv2d(x, w)[0, 0]
    array([[ 1., 12., 20.]])
    """
    fname = "full_conv2d"
    (xa, w, _), dt = _operands(fname, (x, weight, None), _XWB, _CONV_NDIM)
    one, zero = (1, 1), (0, 0)
    plan = _plan.cached(
        ("full_conv2d", xa.shape, w.shape, dt, _config.get_num_threads()),
        _plan.conv_transpose2d_plan, fname, xa.shape, w.shape, None, dt, one, zero, zero, one,
    )
    if _numpy_backend():
        return _as(_ref.full_conv2d(xa, w), dt)
    # Literally: pad by (kH-1, kW-1) and correlate with the rotated kernel
    # (for inf/NaN weights the scatter form, see cnnext._plan.grad_input).
    return plan.forward(xa, w, None)


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


# --------------------------------------------------------------------------
# Dense
# --------------------------------------------------------------------------


def linear(
    x: npt.ArrayLike, weight: npt.ArrayLike, bias: npt.ArrayLike | None = None
) -> FloatArray:
    """Fully connected layer ``y = x @ weight.T + bias``, as
    ``torch.nn.functional.linear``.

    Runs on cnnext's own GEMM micro-kernels and thread count (no BLAS
    threads competing with the OpenMP kernels).

    Parameters
    ----------
    x : array_like, shape (N, in_features)
    weight : array_like, shape (out_features, in_features)
    bias : array_like, shape (out_features,), optional

    Returns
    -------
    y : ndarray, shape (N, out_features)

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.linear(np.ones((1, 2)), np.array([[1., 2.], [3., 4.]]), np.array([0.5, 0.]))
    array([[3.5, 7. ]])
    """
    fname = "linear"
    dt = _float_operands((x, weight, bias), _LINEAR_NDIM, True, True)
    if dt is None:
        (x, weight, bias), dt = _operands(fname, (x, weight, bias), _XWB, _LINEAR_NDIM,
                                          _LINEAR_LAYOUT)
    elif TYPE_CHECKING:  # the one-step check passed: native float arrays
        x, weight, bias = cast("tuple[FloatArray, FloatArray, FloatArray | None]",
                               (x, weight, bias))
    plan = _linear_plan(fname, x, weight, bias, dt)
    if _numpy_backend():
        return _as(_ref.linear(x, weight, bias), dt)
    return plan.forward(x, weight, bias)


@overload
def linear_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike,
    bias: Literal[True] = True,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@overload
def linear_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, bias: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray | None]: ...
def linear_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, weight: npt.ArrayLike, bias: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`linear`.

    Parameters
    ----------
    grad_out : array_like, shape (N, out_features)
    x : array_like, shape (N, in_features)
    weight : array_like, shape (out_features, in_features)
    bias : bool
        Whether the layer has a bias (``grad_bias`` is None if not).

    Returns
    -------
    grad_x : ndarray, shape (N, in_features)
        ``grad_out @ weight``.
    grad_weight : ndarray, shape (out_features, in_features)
        ``grad_out.T @ x``.
    grad_bias : ndarray of shape (out_features,), or None
        ``grad_out.sum(axis=0)``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.linear_backward(np.ones((1, 1)), np.array([[2., 3.]]), np.array([[1., 1.]]))
    (array([[1., 1.]]), array([[2., 3.]]), array([1.]))
    """
    fname = "linear_backward"
    bias = V.boolean(fname, "bias", bias)
    (g, xa, w), dt = _operands(fname, (grad_out, x, weight), _GXW, _LINEAR_GRAD_NDIM,
                               {"grad_out": "(N, out_features)"})
    plan = _linear_plan(fname, xa, w, None, dt)
    n, n_out = xa.shape[0], w.shape[0]
    if g.shape != (n, n_out):
        raise ValueError(
            f"{fname}: grad_out.shape must be (N, out_features) = {(n, n_out)} for x "
            f"{xa.shape} and weight {w.shape}; got {g.shape}"
        )
    if _numpy_backend():
        gx, gw, gb = _ref.linear_backward(g, xa, w, bias=bias)
        return _as_grads(gx, gw, gb, dt, bias)
    return plan.backward(g, xa, w, bias)


# --------------------------------------------------------------------------
# Activations and loss
# --------------------------------------------------------------------------


# Elementwise results with Python-number constants end in
# .astype(dtype, copy=False): with numpy 1.x, 0-d operands follow
# value-based casting, so a Python 1 could turn a float32 result into
# float64.


def _nan_quiet(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` without numpy's RuntimeWarnings for NaN/inf arithmetic:
    non-finite values propagate silently, as in PyTorch."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def _elementwise(fname: str, named: Sequence[tuple[str, npt.ArrayLike]]) -> tuple[FloatArray, ...]:
    arrs, _ = _operands(fname, tuple(a for _, a in named), tuple(n for n, _ in named),
                        (None,) * len(named))
    if len(arrs) > 1 and arrs[0].shape != arrs[1].shape:
        desc = ", ".join(f"{n}.shape {a.shape}" for (n, _), a in zip(named, arrs))
        raise ValueError(f"{fname}: arrays must have the same shape, got {desc}")
    return arrs


def _axis(fname: str, axis: int, ndim: int) -> int:
    a = V.as_int(fname, "axis", axis)
    if not -ndim <= a < ndim:
        raise ValueError(f"{fname}: axis must be in [{-ndim}, {ndim}), got {a}")
    return a


def relu(x: npt.ArrayLike) -> FloatArray:
    """``max(x, 0)`` elementwise.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.relu([-1.0, 0.0, 2.0])
    array([0., 0., 2.])
    """
    (x,) = _elementwise("relu", [("x", x)])
    if _numpy_backend():
        return _ref.relu(x)
    out = np.empty_like(x)
    _eltwise.relu(x.reshape(-1), out.reshape(-1), _elt_threads(x.size))
    return out


def relu_backward(grad_out: npt.ArrayLike, x: npt.ArrayLike) -> FloatArray:
    """Gradient of :func:`relu`: 0 where ``x <= 0``, else ``grad_out``.

    As in PyTorch (``threshold_backward``), a NaN in ``x`` passes the
    gradient through.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.relu_backward([5.0, 5.0], [-1.0, 1.0])
    array([0., 5.])
    """
    g, x = _elementwise("relu_backward", [("grad_out", grad_out), ("x", x)])
    if _numpy_backend():
        return _ref.relu_backward(g, x)
    out = np.empty_like(g)
    _eltwise.relu_backward(g.reshape(-1), x.reshape(-1), out.reshape(-1), _elt_threads(g.size))
    return out


def _slope(fname: str, negative_slope: float) -> float:
    return V.real(fname, "negative_slope", negative_slope)


def _elt_threads(n: int) -> int:
    return _plan.threads_for(n, _plan.PARALLEL_MIN_ELEMENTS)


@_nan_quiet
def leaky_relu(x: npt.ArrayLike, negative_slope: float = 0.01) -> FloatArray:
    """``x`` where ``x > 0``, else ``negative_slope * x``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.leaky_relu([-2.0, 3.0], 0.5)
    array([-1.,  3.])
    """
    a = _slope("leaky_relu", negative_slope)
    (x,) = _elementwise("leaky_relu", [("x", x)])
    if _numpy_backend():
        return _ref.leaky_relu(x, a)
    return np.where(x > 0, x, x * x.dtype.type(a))


def leaky_relu_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, negative_slope: float = 0.01
) -> FloatArray:
    """Gradient of :func:`leaky_relu` (slope 1 where ``x > 0``, else ``negative_slope``).

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.leaky_relu_backward([2.0, 2.0], [-1.0, 1.0], 0.1)
    array([0.2, 2. ])
    """
    a = _slope("leaky_relu_backward", negative_slope)
    g, x = _elementwise("leaky_relu_backward", [("grad_out", grad_out), ("x", x)])
    if _numpy_backend():
        return _ref.leaky_relu_backward(g, x, a)
    out = np.empty_like(g)
    _eltwise.leaky_relu_backward(
        g.reshape(-1), x.reshape(-1), out.reshape(-1), a, _elt_threads(g.size)
    )
    return out


@_nan_quiet
def sigmoid(x: npt.ArrayLike) -> FloatArray:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, without overflow for large ``|x|``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.sigmoid([-1e4, 0.0, 1e4])
    array([0. , 0.5, 1. ])
    """
    (x,) = _elementwise("sigmoid", [("x", x)])
    if _numpy_backend():
        return _ref.sigmoid(x)
    # exp of a non-positive number never overflows.
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


@_nan_quiet
def sigmoid_backward(grad_out: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
    """Gradient of :func:`sigmoid` given its *output* ``y``: ``grad_out * y * (1 - y)``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.sigmoid_backward([1.0], [0.5])
    array([0.25])
    """
    g, y = _elementwise("sigmoid_backward", [("grad_out", grad_out), ("y", y)])
    if _numpy_backend():
        return _ref.sigmoid_backward(g, y)
    return (g * y * (1 - y)).astype(g.dtype, copy=False)


def tanh(x: npt.ArrayLike) -> FloatArray:
    """Hyperbolic tangent.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.tanh([0.0, 1e4])
    array([0., 1.])
    """
    (x,) = _elementwise("tanh", [("x", x)])
    if _numpy_backend():
        return _ref.tanh(x)
    return np.tanh(x)


@_nan_quiet
def tanh_backward(grad_out: npt.ArrayLike, y: npt.ArrayLike) -> FloatArray:
    """Gradient of :func:`tanh` given its *output* ``y``: ``grad_out * (1 - y**2)``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.tanh_backward([2.0], [0.5])
    array([1.5])
    """
    g, y = _elementwise("tanh_backward", [("grad_out", grad_out), ("y", y)])
    if _numpy_backend():
        return _ref.tanh_backward(g, y)
    return (g * (1 - y * y)).astype(g.dtype, copy=False)


@_nan_quiet
def softmax(x: npt.ArrayLike, axis: int = -1) -> FloatArray:
    """Softmax along ``axis``, stable for large inputs (max subtracted).

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.softmax([[1e4, 1e4]])
    array([[0.5, 0.5]])
    """
    (x,) = _elementwise("softmax", [("x", x)])
    axis = _axis("softmax", axis, x.ndim)
    if x.size == 0:
        return np.empty_like(x)
    if _numpy_backend():
        return _ref.softmax(x, axis=axis)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return cast("FloatArray", e)


@_nan_quiet
def softmax_backward(grad_out: npt.ArrayLike, y: npt.ArrayLike, axis: int = -1) -> FloatArray:
    """Gradient of :func:`softmax` given its output ``y``:
    ``y * (grad_out - sum(grad_out * y, axis))``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.softmax_backward([[1.0, 1.0]], [[0.5, 0.5]])
    array([[0., 0.]])
    """
    g, y = _elementwise("softmax_backward", [("grad_out", grad_out), ("y", y)])
    axis = _axis("softmax_backward", axis, y.ndim)
    if y.size == 0:
        return np.empty_like(y)
    if _numpy_backend():
        return _ref.softmax_backward(g, y, axis=axis)
    return cast(
        "FloatArray", (y * (g - (g * y).sum(axis=axis, keepdims=True))).astype(g.dtype, copy=False)
    )


@_nan_quiet
def log_softmax(x: npt.ArrayLike, axis: int = -1) -> FloatArray:
    """``log(softmax(x))`` computed stably (log-sum-exp).

    Examples
    --------
    >>> from cnnext import functional as F
    >>> F.log_softmax([[0.0, 0.0]])
    array([[-0.69314718, -0.69314718]])
    """
    (x,) = _elementwise("log_softmax", [("x", x)])
    axis = _axis("log_softmax", axis, x.ndim)
    if x.size == 0:
        return np.empty_like(x)
    if _numpy_backend():
        return _ref.log_softmax(x, axis=axis)
    z = x - x.max(axis=axis, keepdims=True)
    return cast(
        "FloatArray",
        (z - np.log(np.exp(z).sum(axis=axis, keepdims=True))).astype(x.dtype, copy=False),
    )


@_nan_quiet
def log_softmax_backward(
    grad_out: npt.ArrayLike, y: npt.ArrayLike, axis: int = -1
) -> FloatArray:
    """Gradient of :func:`log_softmax` given its output ``y``:
    ``grad_out - exp(y) * sum(grad_out, axis)``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.log_softmax_backward([[1.0, 0.0]], np.log([[0.5, 0.5]]))
    array([[ 0.5, -0.5]])
    """
    g, y = _elementwise("log_softmax_backward", [("grad_out", grad_out), ("y", y)])
    axis = _axis("log_softmax_backward", axis, y.ndim)
    if y.size == 0:
        return np.empty_like(y)
    if _numpy_backend():
        return _ref.log_softmax_backward(g, y, axis=axis)
    return cast(
        "FloatArray", (g - np.exp(y) * g.sum(axis=axis, keepdims=True)).astype(g.dtype, copy=False)
    )


@_nan_quiet
def softmax_cross_entropy(
    logits: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[float, FloatArray]:
    """Mean softmax cross-entropy and its gradient, in one stable pass.

    Parameters
    ----------
    logits : array_like, shape (N, K)
    labels : array_like of int, shape (N,)
        Class indices in ``[0, K)``.

    Returns
    -------
    loss : float
        ``mean_i(-log_softmax(logits)[i, labels[i]])`` (0.0 for N = 0).
    grad_logits : ndarray, shape (N, K)
        ``(softmax(logits) - onehot(labels)) / N``.

    Examples
    --------
    >>> from cnnext import functional as F
    >>> loss, g = F.softmax_cross_entropy([[0.0, 0.0]], [1])
    >>> round(loss, 6), g
    (0.693147, array([[ 0.5, -0.5]]))
    """
    fname = "softmax_cross_entropy"
    (z,), dt = V.float_arrays(fname, [("logits", logits)], [(2,)], {"logits": "(N, K)"})
    y = V.as_array(fname, "labels", labels)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{fname}: labels must be integer class indices, got dtype {y.dtype}")
    N, K = z.shape
    if y.shape != (N,):
        raise ValueError(
            f"{fname}: labels.shape must be ({N},) to match logits {z.shape}, got {y.shape}"
        )
    y = np.ascontiguousarray(y, dtype=np.int64)
    if N and not _eltwise.indices_within(y.reshape(-1), 0, K):
        raise ValueError(
            f"{fname}: labels must lie in [0, {K}) for {K} classes, got values in "
            f"[{y.min()}, {y.max()}]"
        )
    if _numpy_backend():
        loss, g = _ref.softmax_cross_entropy(z, y)
        return float(loss), _as(g, dt)
    if N == 0:
        return 0.0, np.zeros((0, K), dtype=dt)
    g = np.empty((N, K), dtype=dt)
    loss = _eltwise.softmax_cross_entropy(z, y, g)
    return float(loss), g


# --------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------


_BN_NDIM = (2, 3, 4)
_BN_FULL = ("x", "grad_out")
_BN_LAYOUTS = {n: "(N, C), (N, C, L) or (N, C, H, W)" for n in _BN_FULL}


def _bn_operands(
    fname: str, named: Sequence[tuple[str, object]]
) -> tuple[dict[str, FloatArray], FloatDType]:
    """Check -> ({name: C-contiguous array of the compute dtype}, dtype) for
    the present operands (``x``, ``grad_out`` and per-channel arrays; None
    ones are left out); per-channel arrays must have shape (C,)."""
    present = [(n, a) for n, a in named if a is not None or n in _BN_FULL]
    ndims = [_BN_NDIM if n in _BN_FULL else None for n, _ in present]
    arrs, dt = V.float_arrays(fname, present, ndims, _BN_LAYOUTS)
    out = dict(zip((n for n, _ in present), arrs))
    xs = out["x"].shape
    for n, a in out.items():
        if n not in _BN_FULL:
            V.per_channel(fname, n, a.shape, xs)
    return out, dt


def _bn_plan(fname: str, x: FloatArray, dt: FloatDType, training: bool) -> _plan.BatchNormPlan:
    return _plan.cached((fname, x.shape, dt, training, _config._kernel_threads),
                        _plan.batch_norm_plan, fname, x.shape, dt, training)


def _bn_running(
    fname: str, ops: Mapping[str, FloatArray], training: bool
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
    """The running statistics as float64 in evaluation mode (required
    there), None in training mode."""
    if training:
        return None
    for name in ("running_mean", "running_var"):
        if name not in ops:
            raise ValueError(
                f"{fname}: {name} must be given in evaluation mode (training=False), got None"
            )
    # copies: the caller's arrays may be read-only or change later
    return (np.array(ops["running_mean"], dtype=np.float64),
            np.array(ops["running_var"], dtype=np.float64))


@_nan_quiet
def _bn_inplace(
    fname: str, dt: FloatDType, running_mean: object, running_var: object,
    others: list[tuple[str, object]],
) -> tuple[FloatArray | None, FloatArray | None]:
    """Training mode: the caller's running statistics, checked to be
    updatable in place (writeable arrays of the compute dtype, sharing no
    memory with each other or with the other operands); None stays None."""
    rm = None if running_mean is None else V.running_stat(fname, "running_mean",
                                                          running_mean, dt)
    rv = None if running_var is None else V.running_stat(fname, "running_var",
                                                         running_var, dt)
    if rm is not None:
        V.no_overlap(fname, "running_mean", rm, others + [("running_var", rv)])
    if rv is not None:
        V.no_overlap(fname, "running_var", rv, others)
    return rm, rv


@_nan_quiet
def batch_norm(
    x: npt.ArrayLike, running_mean: npt.ArrayLike | None, running_var: npt.ArrayLike | None,
    weight: npt.ArrayLike | None = None, bias: npt.ArrayLike | None = None,
    training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
) -> FloatArray:
    """Batch normalization over the channel axis, as
    ``torch.nn.functional.batch_norm``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, per channel.  In
    training mode ``mean`` and ``var`` are the batch's (over every axis but
    axis 1; the *biased* variance), and ``running_mean``/``running_var``
    are **updated in place** (when not None)::

        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var = (1 - momentum) * running_var + momentum * unbiased_var

    In evaluation mode the running statistics are used (and required).
    This is the one function of the module that writes to arrays it is
    given: the running statistics, by design (as PyTorch); ``x``, ``weight``
    and ``bias`` are never modified.

    Parameters
    ----------
    x : array_like, shape (N, C), (N, C, L) or (N, C, H, W)
    running_mean, running_var : ndarray of shape (C,), or None
        In training mode: None, or writeable ndarrays of the compute dtype
        (updated in place).  In evaluation mode: array_like, required.
    weight, bias : array_like of shape (C,), optional
        The affine map (1 and 0 when None).
    training : bool
        Batch statistics (True) or running statistics (False).
    momentum : float in [0, 1]
        The weight of the batch statistics in the running update.
    eps : float > 0
        Added to the variance.

    Returns
    -------
    y : ndarray, shape of ``x``
        Of the compute dtype (float32 or float64).

    Raises
    ------
    ValueError
        In training mode with only one value per channel (``N * L == 1`` or
        ``N * H * W == 1``), as PyTorch.

    Notes
    -----
    The output has the shape of ``x``.  Statistics are computed in float64
    (two passes over each channel: the mean, then the squared deviations).

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> rm, rv = np.zeros(2), np.ones(2)
    >>> F.batch_norm(x, rm, rv, training=True).round(4)
    array([[-1., -1.],
           [ 1.,  1.]])
    >>> rm, rv  # updated in place, with the unbiased batch variance
    (array([0.2, 0.4]), array([1.1, 1.7]))
    >>> F.batch_norm(x, rm, rv).round(4)  # evaluation mode: running statistics
    array([[0.7628, 1.2271],
           [2.6697, 4.295 ]])
    """
    fname = "batch_norm"
    training = V.boolean(fname, "training", training)
    momentum = V.real(fname, "momentum", momentum, 0.0, 1.0)
    eps = V.real(fname, "eps", eps, 0.0, low_open=True)
    ops, dt = _bn_operands(fname, [("x", x), ("running_mean", running_mean),
                                   ("running_var", running_var), ("weight", weight),
                                   ("bias", bias)])
    xa, w, b = ops["x"], ops.get("weight"), ops.get("bias")
    running = _bn_running(fname, ops, training)
    rm, rv = (None, None) if running is not None else _bn_inplace(
        fname, dt, running_mean, running_var, [("x", x), ("weight", weight), ("bias", bias)])
    plan = _bn_plan(fname, xa, dt, training)
    if _numpy_backend():
        if running is not None:
            rm, rv = ops["running_mean"], ops["running_var"]
        return _as(_ref.batch_norm(xa, rm, rv, w, b, training=training, momentum=momentum,
                                   eps=eps), dt)
    if running is None:
        y, mean, var = plan.forward(xa, w, b, eps)
        plan.update_running(rm, rv, mean, var, momentum)
        return y
    return plan.forward(xa, w, b, eps, *running)[0]


@overload
def batch_norm_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, running_mean: npt.ArrayLike | None,
    running_var: npt.ArrayLike | None, weight: None = None, training: bool = False,
    eps: float = 1e-5,
) -> tuple[FloatArray, None, None]: ...
@overload
def batch_norm_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, running_mean: npt.ArrayLike | None,
    running_var: npt.ArrayLike | None, weight: npt.ArrayLike, training: bool = False,
    eps: float = 1e-5,
) -> tuple[FloatArray, FloatArray, FloatArray]: ...
@_nan_quiet
def batch_norm_backward(
    grad_out: npt.ArrayLike, x: npt.ArrayLike, running_mean: npt.ArrayLike | None,
    running_var: npt.ArrayLike | None, weight: npt.ArrayLike | None = None,
    training: bool = False, eps: float = 1e-5,
) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradients of :func:`batch_norm` with respect to ``x``, ``weight`` and
    ``bias``.

    Parameters
    ----------
    grad_out : array_like, shape of ``x``
        Upstream gradient ``dL/dy``.
    x : array_like, shape (N, C), (N, C, L) or (N, C, H, W)
        The forward input.
    running_mean, running_var : array_like of shape (C,), or None
        The running statistics of an evaluation-mode forward (required
        there; unused and never modified in training mode).
    weight : array_like of shape (C,), optional
        The forward's weight (None: no affine map).
    training : bool
        Whether the forward used batch statistics.
    eps : float > 0
        As given to the forward.

    Returns
    -------
    grad_x : ndarray, shape of ``x``
        Training mode: the gradient through the batch mean and variance,
        ``w / sigma * (g - mean(g) - xhat * mean(g * xhat))``; evaluation
        mode: ``g * w / sigma`` (``xhat = (x - mean) / sigma``, ``sigma =
        sqrt(var + eps)``, means per channel).
    grad_weight, grad_bias : ndarray of shape (C,), or None
        ``sum(g * xhat)`` and ``sum(g)`` per channel; None when ``weight``
        is None.

    Notes
    -----
    ``grad_x`` has the shape of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([[1.0], [3.0]])
    >>> gx, gw, gb = F.batch_norm_backward([[1.0], [0.0]], x, None, None, np.ones(1),
    ...                                    training=True)
    >>> gx.round(4), gw.round(4), gb
    (array([[ 0.],
           [-0.]]), array([-1.]), array([1.]))
    """
    fname = "batch_norm_backward"
    training = V.boolean(fname, "training", training)
    eps = V.real(fname, "eps", eps, 0.0, low_open=True)
    named = [("x", x), ("grad_out", grad_out), ("weight", weight)]
    if not training:
        named += [("running_mean", running_mean), ("running_var", running_var)]
    ops, dt = _bn_operands(fname, named)
    xa, g, w = ops["x"], ops["grad_out"], ops.get("weight")
    if g.shape != xa.shape:
        raise ValueError(
            f"{fname}: grad_out.shape must equal x.shape {xa.shape}, got {g.shape}"
        )
    running = _bn_running(fname, ops, training)
    plan = _bn_plan(fname, xa, dt, training)
    if _numpy_backend():
        gx, gw, gb = _ref.batch_norm_backward(g, xa, ops.get("running_mean"),
                                              ops.get("running_var"), w, training=training,
                                              eps=eps)
        return (_as(gx, dt), None if gw is None else _as(gw, dt),
                None if gb is None else _as(gb, dt))
    mean, var = plan.statistics(xa) if running is None else running
    gxo, gwo, gbo = plan.backward(g, xa, mean, 1.0 / np.sqrt(var + eps), w, training)
    return cast("FloatArray", gxo), gwo, gbo
