"""Plain-numpy reference implementations of the cnnext layer kernels.

This module is the test oracle for the compiled kernels and the ``numpy``
backend of :mod:`cnnext.functional`. It is **slow on purpose**: every
function is written to be obviously correct, not fast.

To avoid sharing bugs with the fast kernels (GEMM micro-kernels over
im2col-ordered panels, and col2im), nothing here builds an im2col matrix.
Forward convolutions and pools gather with :func:`numpy.lib.stride_tricks.sliding_window_view` and a
windowed :func:`numpy.einsum`; backward passes *scatter* with an explicit
loop over the kernel taps (each tap adds its contribution into a strided
slice of a padded buffer); ``conv_transpose2d`` and ``full_conv2d`` scatter
the same way from its definition (every input value times every tap, added
at its output position), and the gradients of ``conv_transpose2d`` gather
windows of the padded output gradient.

Semantics are those of PyTorch's CPU ``torch.nn.functional``: NCHW layout,
convolution weight ``(C_out, C_in, kH, kW)``, the forward pass is a
cross-correlation (the kernel is not flipped), ``dilation=1`` means no
dilation, and ``stride``/``padding``/``dilation``/``kernel_size``/
``output_padding`` are an int or an ``(h, w)`` pair.

Nothing here validates its arguments: :mod:`cnnext.functional` checks shapes
and dtypes, coerces to C-contiguous float32/float64 and turns unbatched 3-D
input into 4-D before it calls in. Inputs are never modified. Results have
the dtype of the corresponding input; sums are accumulated in float64 and
cast back.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar, cast, overload

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    from ._typing import (
        AdaptiveSize, FloatArray, IndexArray, IntOrPair, IntOrSingle, Pair, Shape,
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


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _pair(v: IntOrPair | list[int] | npt.NDArray[np.integer[Any]]) -> Pair:
    """Return ``v`` as a ``(h, w)`` tuple of Python ints."""
    if isinstance(v, (tuple, list, np.ndarray)):
        h, w = v
        return int(h), int(w)
    return int(v), int(v)


def _f64(a: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """A float64 view or copy of ``a`` (never the caller's array to write)."""
    return np.asarray(a, dtype=np.float64)


def _nan_quiet(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run ``fn`` without numpy's RuntimeWarnings for NaN/inf arithmetic:
    non-finite values propagate silently, as in PyTorch and
    :mod:`cnnext.functional`."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def _pad_hw(x: FloatArray, ph: int, pw: int, value: float = 0.0) -> FloatArray:
    """Pad the last two axes of a 4-D array by ``ph`` rows and ``pw`` columns
    on each side (returns a new array)."""
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)),
                  mode="constant", constant_values=value)


def _windows(xp: FloatArray, kernel: Pair, stride: Pair, dilation: Pair) -> FloatArray:
    """Strided windows of an already padded 4-D array.

    Returns a read-only view of shape ``(N, C, OH, OW, kH, kW)`` with
    ``view[n, c, oh, ow, i, j] == xp[n, c, oh*sh + i*dh, ow*sw + j*dw]``.
    """
    kh, kw = kernel
    sh, sw = stride
    dh, dw = dilation
    span = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    v = sliding_window_view(xp, span, axis=(2, 3))
    return v[:, :, ::sh, ::sw, ::dh, ::dw]


def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _sides(padding: str | IntOrPair, kernel: Sequence[int], dilation: Pair) -> tuple[Pair, Pair]:
    """((top, left), (bottom, right)) zero padding of a convolution.

    An int or pair pads both sides alike; ``"valid"`` pads nothing;
    ``"same"`` pads ``d*(k - 1)`` in total along each axis, ``total // 2``
    before and the rest (one more for an odd total) after, as PyTorch does.
    """
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        total = [d * (k - 1) for d, k in zip(dilation, kernel)]
        return (total[0] // 2, total[1] // 2), (total[0] - total[0] // 2, total[1] - total[1] // 2)
    p = _pair(padding)
    return p, p


def _pad_sides(x: FloatArray, before: Pair, after: Pair) -> FloatArray:
    """Zero-pad the last two axes of a 4-D array, ``before`` rows/columns at
    the top/left and ``after`` at the bottom/right (a new float64 array)."""
    return np.pad(_f64(x), ((0, 0), (0, 0), (before[0], after[0]), (before[1], after[1])))


def _split(a: FloatArray, groups: int, axis: int) -> FloatArray:
    """``a`` with ``axis`` split into (groups, size // groups) (a view)."""
    shape = a.shape[:axis] + (groups, a.shape[axis] // groups) + a.shape[axis + 1:]
    return a.reshape(shape)


def _single(v: int | Sequence[int]) -> int:
    """A 1-D option (int or 1-sequence) as an int."""
    return int(np.asarray(v).reshape(-1)[0])


def _h1(a: npt.ArrayLike) -> npt.NDArray[Any]:
    """A 1-D array ``(..., L)`` as the ``(..., 1, L)`` image (a view)."""
    return np.asarray(a)[..., None, :]


def _h1_shape(shape: Sequence[int]) -> Shape:
    """A 1-D shape ``(..., L)`` as the ``(..., 1, L)`` image's."""
    return tuple(shape[:-1]) + (1, shape[-1])


def _pool1d_window(
    kernel_size: IntOrSingle, stride: IntOrSingle | None, padding: IntOrSingle
) -> tuple[Pair, Pair, Pair]:
    """A 1-D pool's (kernel, stride, padding) as the 2-D pool's of height 1."""
    k = _single(kernel_size)
    s = k if stride is None else _single(stride)
    return (1, k), (1, s), (0, _single(padding))


def _as_2d_option(v: str | int | Sequence[int], fill: int) -> str | Pair:
    """A 1-D option as the 2-D option of the (1, L) image (``fill`` along H)."""
    return v if isinstance(v, str) else (fill, _single(v))


#: Above this many padded elements the convolutions loop over output
#: positions instead of padding the input (padding near 2**31 leaves few
#: outputs but a padded input no machine can hold).
_PAD_LIMIT = 1 << 24


def _huge_padding(x: npt.ArrayLike, padding: Pair) -> bool:
    n, c, h, w = np.shape(x)
    return bool(n * c * (h + 2 * padding[0]) * (w + 2 * padding[1]) > _PAD_LIMIT)


def _taps(
    size: int, k: int, s: int, p: int, d: int, o: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Input indices, and their tap indices, of output position ``o`` along
    one axis that fall inside the input (the rest read padding)."""
    idx = o * s - p + np.arange(k) * d
    keep = (idx >= 0) & (idx < size)
    return idx[keep], np.flatnonzero(keep)


@overload
def _by_position(
    x: FloatArray, weight: FloatArray, g: None, stride: Pair, padding: Pair, dilation: Pair
) -> FloatArray: ...
@overload
def _by_position(
    x: FloatArray, weight: FloatArray, g: FloatArray, stride: Pair, padding: Pair,
    dilation: Pair,
) -> tuple[FloatArray, FloatArray]: ...
def _by_position(
    x: FloatArray, weight: FloatArray, g: FloatArray | None, stride: Pair, padding: Pair,
    dilation: Pair,
) -> FloatArray | tuple[FloatArray, FloatArray]:
    """conv2d (``g is None``) or its (grad_x, grad_w) by a loop over output
    positions, reading only the taps inside the input (no padded copy)."""
    n, c, h, w = x.shape
    co, _, kh, kw = weight.shape
    oh_n = _conv_out(h, kh, stride[0], padding[0], dilation[0])
    ow_n = _conv_out(w, kw, stride[1], padding[1], dilation[1])
    y = np.zeros((n, co, oh_n, ow_n)) if g is None else None
    gx, gw = np.zeros((n, c, h, w)), np.zeros((co, c, kh, kw))
    for oh in range(oh_n):
        rows, ti = _taps(h, kh, stride[0], padding[0], dilation[0], oh)
        for ow in range(ow_n):
            cols, tj = _taps(w, kw, stride[1], padding[1], dilation[1], ow)
            xs = x[:, :, rows][:, :, :, cols]
            ws = weight[:, :, ti][:, :, :, tj]
            if g is None:
                cast("FloatArray", y)[:, :, oh, ow] = np.einsum("ncij,ocij->no", xs, ws)
            else:
                go = g[:, :, oh, ow]
                # numpy's stub for ix_ does not take a range (any integer sequence works).
                gw[np.ix_(range(co), range(c), ti, tj)] += np.einsum("no,ncij->ocij", go, xs)  # type: ignore[arg-type]
                gx[np.ix_(range(n), range(c), rows, cols)] += np.einsum("no,ocij->ncij", go, ws)  # type: ignore[arg-type]
    return cast("FloatArray", y) if g is None else (gx, gw)


# --------------------------------------------------------------------------
# convolution
# --------------------------------------------------------------------------

@_nan_quiet
def conv2d(
    x: FloatArray, weight: FloatArray, bias: FloatArray | None = None, stride: IntOrPair = 1,
    padding: str | IntOrPair = 0, dilation: IntOrPair = 1, groups: int = 1,
) -> FloatArray:
    """2-D cross-correlation, as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
        Input batch, float32 or float64.
    weight : ndarray, shape (C_out, C_in / groups, kH, kW)
        Filters. They are *not* flipped (cross-correlation).
    bias : ndarray of shape (C_out,) or None, optional
        Added to every output position of the matching channel.
    stride, padding, dilation : int or (int, int), optional
        Step between windows, zero padding added to each side, and spacing
        between kernel taps (1 means no dilation).  ``padding`` may also be
        ``"valid"`` (none) or ``"same"`` (stride 1; ``dH*(kH - 1)`` rows in
        total, the odd one at the bottom, likewise for columns).
    groups : int, optional
        Input and output channels split into ``groups`` blocks; output block
        ``g`` sees input block ``g`` only.

    Returns
    -------
    y : ndarray, shape (N, C_out, OH, OW), dtype of ``x``
        ``y[n, o, oh, ow] = bias[o] + sum_{c,i,j} weight[o, c, i, j] *
        xpad[n, g*C_in/groups + c, oh*sh + i*dh, ow*sw + j*dw]`` with
        ``g = o // (C_out/groups)``.

    Notes
    -----
    ``OH = (H + 2*ph - dh*(kH - 1) - 1) // sh + 1`` and likewise for ``OW``.
    Computed as an einsum over a ``sliding_window_view`` of the padded input,
    with the channel axes split into groups.

    Examples
    --------
    >>> x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    >>> w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> conv2d(x, w)
    array([[[[37., 47.],
             [67., 77.]]]])
    """
    if np.ndim(x) == 3:  # one unbatched (C, H, W) sample
        return cast("FloatArray", conv2d(np.asarray(x)[None], weight, bias, stride, padding,
                                         dilation, groups)[0])
    stride, dilation = _pair(stride), _pair(dilation)
    kernel = weight.shape[2:]
    before, after = _sides(padding, kernel, dilation)
    n, co = x.shape[0], weight.shape[0]
    if _huge_padding(x, before):
        xs, ws = _split(_f64(x), groups, 1), _split(_f64(weight), groups, 0)
        y = np.concatenate([_by_position(xs[:, g], ws[g], None, stride, before, dilation)
                            for g in range(groups)], axis=1)
    else:
        win = _windows(_pad_sides(x, before, after), kernel, stride, dilation)
        y5 = np.einsum("ngchwij,gocij->ngohw", _split(win, groups, 1),
                       _split(_f64(weight), groups, 0), optimize=True)
        y = y5.reshape(n, co, *y5.shape[3:])
    if bias is not None:
        y = y + _f64(bias)[None, :, None, None]
    return y.astype(x.dtype, copy=False)


@_nan_quiet
def conv2d_backward(
    grad_out: FloatArray, x: FloatArray, weight: FloatArray, stride: IntOrPair = 1,
    padding: str | IntOrPair = 0, dilation: IntOrPair = 1, groups: int = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : ndarray, shape (N, C_out, OH, OW)
        Upstream gradient dL/dy.
    x : ndarray, shape (N, C_in, H, W)
        The forward input.
    weight : ndarray, shape (C_out, C_in / groups, kH, kW)
        The forward weight.
    stride, padding, dilation, groups : optional
        As given to the forward call.
    bias : bool, optional
        Whether the forward call had a bias; if False ``grad_bias`` is None.

    Returns
    -------
    grad_x : ndarray, shape (N, C_in, H, W), dtype of ``x``
    grad_weight : ndarray, shape (C_out, C_in / groups, kH, kW), dtype of ``weight``
    grad_bias : ndarray of shape (C_out,) or None, dtype of ``grad_out``
        ``grad_out.sum((0, 2, 3))``.

    Notes
    -----
    ``grad_weight[o, c, i, j] = sum_{n,oh,ow} grad_out[n, o, oh, ow] *
    xpad[n, c, oh*sh + i*dh, ow*sw + j*dw]``: the correlation of the padded
    input (read at dilated taps) with ``grad_out`` (within each group).

    ``grad_x`` is a scatter-add: every output position adds
    ``weight * grad_out`` back into the window it read, one kernel tap at a
    time, into a padded buffer of shape ``(N, C_in, H + top + bottom, W +
    left + right)`` that is then cropped to the input. Rows and columns that
    no window reads (when ``(H + 2*ph - dh*(kH-1) - 1) % sh != 0``) get 0. At
    stride 1 this equals a full convolution of ``grad_out`` with the
    180-degree-rotated kernel (see :func:`full_conv2d`).

    Examples
    --------
    >>> x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    >>> w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> g = np.array([[[[1.0, 0.0], [0.0, 2.0]]]])
    >>> gx, gw, gb = conv2d_backward(g, x, w)
    >>> gx[0, 0]
    array([[1., 2., 0.],
           [3., 6., 4.],
           [0., 6., 8.]])
    >>> gw[0, 0]
    array([[11., 14.],
           [20., 23.]])
    >>> gb
    array([3.])
    """
    if np.ndim(x) == 3:  # one unbatched (C, H, W) sample
        gx, gw, gb = conv2d_backward(np.asarray(grad_out)[None], np.asarray(x)[None], weight,
                                     stride, padding, dilation, groups, bias)
        return gx[0], gw, gb
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    n, c_in, h, w = x.shape
    kh, kw = weight.shape[2:]
    before, after = _sides(padding, (kh, kw), (dh, dw))
    g = _f64(grad_out)
    wt = _f64(weight)
    oh, ow = g.shape[2:]
    grad_b = g.sum(axis=(0, 2, 3)).astype(grad_out.dtype) if bias else None
    if _huge_padding(x, before):
        xs, ws, gs = _split(_f64(x), groups, 1), _split(wt, groups, 0), _split(g, groups, 1)
        parts = [_by_position(xs[:, i], ws[i], gs[:, i], (sh, sw), before, (dh, dw))
                 for i in range(groups)]
        grad_x = np.concatenate([gx for gx, _ in parts], axis=1)
        grad_w = np.concatenate([gw for _, gw in parts], axis=0)
        return (grad_x.astype(x.dtype), grad_w.astype(weight.dtype, copy=False), grad_b)

    # weight gradient: windowed correlation of the padded input with g
    win = _windows(_pad_sides(x, before, after), (kh, kw), (sh, sw), (dh, dw))
    g5 = _split(g, groups, 1)
    grad_w = np.einsum("ngchwij,ngohw->gocij", _split(win, groups, 1), g5,
                       optimize=True).reshape(wt.shape)

    # input gradient: scatter-add tap by tap into the padded buffer
    w5 = _split(wt, groups, 0)
    gxp = np.zeros((n, c_in, h + before[0] + after[0], w + before[1] + after[1]))
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dh, j * dw
            gxp[:, :, r0:r0 + sh * (oh - 1) + 1:sh,
                c0:c0 + sw * (ow - 1) + 1:sw] += np.einsum(
                    "ngohw,goc->ngchw", g5, w5[:, :, :, i, j]).reshape(n, c_in, oh, ow)
    grad_x = gxp[:, :, before[0]:before[0] + h, before[1]:before[1] + w]
    return (grad_x.astype(x.dtype), grad_w.astype(weight.dtype, copy=False),
            grad_b)


def _scatter_taps(
    x: FloatArray, weight: FloatArray, groups: int, stride: Pair, dilation: Pair
) -> FloatArray:
    """The uncropped transposed convolution of a non-empty 4-D ``x`` with
    weight (C_in, C_out/groups, kH, kW): for each tap (i, j), input (h, w)
    adds ``x * weight[:, :, i, j]`` at output (h*sh + i*dh, w*sw + j*dw)."""
    n, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    (sh, sw), (dh, dw) = stride, dilation
    c_out = weight.shape[1] * groups
    full = np.zeros((n, c_out, (h - 1) * sh + dh * (kh - 1) + 1, (w - 1) * sw + dw * (kw - 1) + 1))
    x5, w5 = _split(_f64(x), groups, 1), _split(_f64(weight), groups, 0)
    for i in range(kh):
        for j in range(kw):
            full[:, :, i * dh:i * dh + (h - 1) * sh + 1:sh,
                 j * dw:j * dw + (w - 1) * sw + 1:sw] += np.einsum(
                     "ngchw,gco->ngohw", x5, w5[:, :, :, i, j]).reshape(n, c_out, h, w)
    return full


@_nan_quiet
def conv_transpose2d(
    x: FloatArray, weight: FloatArray, bias: FloatArray | None = None, stride: IntOrPair = 1,
    padding: IntOrPair = 0, output_padding: IntOrPair = 0, groups: int = 1,
    dilation: IntOrPair = 1,
) -> FloatArray:
    """Transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W)
        Input batch.
    weight : ndarray, shape (C_in, C_out / groups, kH, kW)
        Filters, laid out as in PyTorch (input channels first).
    bias : ndarray of shape (C_out,) or None, optional
        Added to every output position (including ``output_padding`` rows).
    stride, padding, output_padding, groups, dilation : optional
        ``padding`` is removed from each side of the full output;
        ``output_padding`` adds rows/columns at the bottom/right only; input
        block ``g`` of ``groups`` feeds output block ``g`` only.

    Returns
    -------
    y : ndarray, shape (N, C_out, OH, OW), dtype of ``x``
        ``y[n, o, r, s] = bias[o] + sum x[n, c, h, w] * weight[c, o, i, j]``
        over all ``h, w, i, j`` (and ``c`` of the group of ``o``) with
        ``r = h*sh - ph + i*dh`` and ``s = w*sw - pw + j*dw``.

    Notes
    -----
    ``OH = (H - 1)*sh - 2*ph + dh*(kH - 1) + oph + 1`` and likewise for
    ``OW``. This is the adjoint of :func:`conv2d` with the same stride,
    padding, dilation and groups, and equals ``conv2d_backward``'s ``grad_x``
    for the weight read as ``(C_out_conv, C_in_conv / groups, kH, kW)``.

    Computed by scattering, tap by tap, into the uncropped output of
    ``(H - 1)*sh + dh*(kH - 1) + 1`` rows (only real products of an input
    value and a weight are summed, so a non-finite weight reaches only the
    outputs it touches, as in PyTorch), extended by ``output_padding`` zero
    rows/columns at the end and cropped to ``[ph:ph+OH, pw:pw+OW]``.

    Examples
    --------
    >>> x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> w = np.ones((1, 1, 2, 2))
    >>> conv_transpose2d(x, w, stride=2)[0, 0]
    array([[1., 1., 2., 2.],
           [1., 1., 2., 2.],
           [3., 3., 4., 4.],
           [3., 3., 4., 4.]])
    """
    if np.ndim(x) == 3:  # one unbatched (C, H, W) sample
        return cast("FloatArray", conv_transpose2d(np.asarray(x)[None], weight, bias, stride,
                                                   padding, output_padding, groups,
                                                   dilation)[0])
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    oph, opw = _pair(output_padding)
    dh, dw = _pair(dilation)
    n, c_in, h, w = x.shape
    kh, kw = weight.shape[2:]
    c_out = weight.shape[1] * groups
    out_h = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    if np.size(x) == 0:  # nothing to scatter: the bias alone
        y0 = np.zeros((n, c_out, out_h, out_w))
        if bias is not None:
            y0 = y0 + _f64(bias)[None, :, None, None]
        return y0.astype(x.dtype, copy=False)

    full = _scatter_taps(x, weight, groups, (sh, sw), (dh, dw))
    # extend by output_padding, then crop
    full = np.pad(full, ((0, 0), (0, 0), (0, oph), (0, opw)))
    y = full[:, :, ph:ph + out_h, pw:pw + out_w]
    if bias is not None:
        y = y + _f64(bias)[None, :, None, None]
    return y.astype(x.dtype, copy=False)


@_nan_quiet
def conv_transpose2d_backward(
    grad_out: FloatArray, x: FloatArray, weight: FloatArray, stride: IntOrPair = 1,
    padding: IntOrPair = 0, output_padding: IntOrPair = 0, groups: int = 1,
    dilation: IntOrPair = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`conv_transpose2d` w.r.t. its input, weight and bias.

    Parameters
    ----------
    grad_out : ndarray, shape (N, C_out, OH, OW)
        Upstream gradient dL/dy.
    x : ndarray, shape (N, C_in, H, W)
        The forward input.
    weight : ndarray, shape (C_in, C_out / groups, kH, kW)
    stride, padding, output_padding, groups, dilation : optional
        As given to the forward call.
    bias : bool, optional
        Whether the forward call had a bias; if False ``grad_bias`` is None.

    Returns
    -------
    grad_x : ndarray, shape (N, C_in, H, W)
        ``sum_{o,i,j} grad_out[n, o, h*sh - ph + i*dh, w*sw - pw + j*dw] *
        weight[c, o, i, j]`` over the taps inside ``grad_out``.
    grad_weight : ndarray, shape of ``weight``
        ``sum_{n,h,w} x[n, c, h, w] * grad_out[n, o, h*sh - ph + i*dh,
        w*sw - pw + j*dw]``.
    grad_bias : ndarray of shape (C_out,) or None

    Notes
    -----
    Both gradients read strided, dilated windows of the zero-padded
    ``grad_out`` at every input position (a gather, where the forward pass
    is computed on the stride-dilated input).

    Examples
    --------
    >>> x = np.array([[[[1.0, 2.0]]]])
    >>> w = np.array([[[[1.0, 10.0]]]])
    >>> gx, gw, gb = conv_transpose2d_backward(np.array([[[[1.0, 0.0, 2.0]]]]), x, w)
    >>> gx[0, 0], gw[0, 0], gb
    (array([[ 1., 20.]]), array([[1., 4.]]), array([3.]))
    """
    if np.ndim(x) == 3:  # one unbatched (C, H, W) sample
        gx, gw, gb = conv_transpose2d_backward(
            np.asarray(grad_out)[None], np.asarray(x)[None], weight, stride, padding,
            output_padding, groups, dilation, bias)
        return gx[0], gw, gb
    s, p, d = _pair(stride), _pair(padding), _pair(dilation)
    n, c_in, h, w = x.shape
    kh, kw = weight.shape[2:]
    g = _f64(grad_out)
    grad_b = g.sum(axis=(0, 2, 3)).astype(grad_out.dtype) if bias else None
    if np.size(x) == 0:  # nothing was scattered
        return np.zeros_like(x), np.zeros_like(weight), grad_b
    # Window (h, w) of the padded gradient holds the outputs input (h, w) fed;
    # the padded gradient is long enough for h < H (see the output size).
    gp = _pad_hw(g, p[0], p[1])
    win = _windows(gp, (kh, kw), s, d)[:, :, :h, :w]
    win5 = _split(win, groups, 1)
    w5 = _split(_f64(weight), groups, 0)
    gx = np.einsum("ngohwij,gcoij->ngchw", win5, w5, optimize=True).reshape(n, c_in, h, w)
    gw = np.einsum("ngchw,ngohwij->gcoij", _split(_f64(x), groups, 1), win5,
                   optimize=True).reshape(weight.shape)
    return gx.astype(x.dtype), gw.astype(weight.dtype), grad_b


def conv1d(
    x: FloatArray, weight: FloatArray, bias: FloatArray | None = None,
    stride: int | Sequence[int] = 1, padding: str | int | Sequence[int] = 0,
    dilation: int | Sequence[int] = 1, groups: int = 1,
) -> FloatArray:
    """1-D cross-correlation, as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, L) or (C_in, L)
    weight : ndarray, shape (C_out, C_in / groups, k)
    bias : ndarray of shape (C_out,) or None, optional
    stride, padding, dilation : int or (int,), optional
        ``padding`` may also be ``"valid"`` or ``"same"``.
    groups : int, optional

    Returns
    -------
    y : ndarray, shape (N, C_out, OL) (2-D for a 2-D ``x``)

    Notes
    -----
    ``OL = (L + 2*p - d*(k - 1) - 1) // s + 1``: :func:`conv2d` of the
    ``(1, L)`` images.

    Examples
    --------
    >>> conv1d(np.array([[[1.0, 2.0, 3.0]]]), np.array([[[1.0, 10.0]]]))
    array([[[21., 32.]]])
    """
    y = conv2d(_h1(x), np.asarray(weight)[:, :, None, :], bias, (1, _single(stride)),
               _as_2d_option(padding, 0), (1, _single(dilation)), groups)
    return y[..., 0, :]


def conv1d_backward(
    grad_out: FloatArray, x: FloatArray, weight: FloatArray, stride: int | Sequence[int] = 1,
    padding: str | int | Sequence[int] = 0, dilation: int | Sequence[int] = 1,
    groups: int = 1, bias: bool = True,
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`conv1d` (see :func:`conv2d_backward`).

    Parameters
    ----------
    grad_out : ndarray, shape (N, C_out, OL) or (C_out, OL)
    x : ndarray, shape (N, C_in, L) or (C_in, L)
    weight : ndarray, shape (C_out, C_in / groups, k)
    stride, padding, dilation, groups, bias : optional
        As given to :func:`conv1d` (``bias``: whether it had one).

    Returns
    -------
    grad_x, grad_weight, grad_bias : ndarrays of the shapes of x, weight, (C_out,)
        ``grad_bias`` is None without a bias.

    Notes
    -----
    :func:`conv2d_backward` of the ``(1, L)`` images.

    Examples
    --------
    >>> gx, gw, gb = conv1d_backward(np.ones((1, 1, 2)), np.ones((1, 1, 3)),
    ...                              np.array([[[1.0, 10.0]]]))
    >>> gx, gw, gb
    (array([[[ 1., 11., 10.]]]), array([[[2., 2.]]]), array([2.]))
    """
    gx, gw, gb = conv2d_backward(
        _h1(grad_out), _h1(x), np.asarray(weight)[:, :, None, :], (1, _single(stride)),
        _as_2d_option(padding, 0), (1, _single(dilation)), groups, bias)
    return gx[..., 0, :], gw[:, :, 0, :], gb


@_nan_quiet
def full_conv2d(x: FloatArray, weight: FloatArray) -> FloatArray:
    """Full 2-D convolution summed over input channels.

    Parameters
    ----------
    x : ndarray, shape (N, K, H, W)
        Input batch (e.g. an upstream gradient with K channels).
    weight : ndarray, shape (K, C, kH, kW)
        One kernel per (input channel k, output channel c) pair.

    Returns
    -------
    y : ndarray, shape (N, C, H + kH - 1, W + kW - 1), dtype of ``x``
        ``y[n, c] = sum_k full_convolution(x[n, k], weight[k, c])``.

    Notes
    -----
    Equivalently, ``x`` zero-padded by ``(kH - 1, kW - 1)`` on each side
    and cross-correlated with the 180-degree-rotated kernel ``weight[k, c,
    ::-1, ::-1]``; computed by the tap-by-tap scatter of
    :func:`conv_transpose2d` (stride 1), so that a non-finite weight reaches
    only the outputs it touches, as in PyTorch. This is the input gradient of
    :func:`conv2d` at stride 1, padding 0, dilation 1:
    ``conv2d_backward(g, x, w)[0] == full_conv2d(g, w)``.

    Examples
    --------
    >>> a = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    >>> full_conv2d(a, a)[0, 0]
    array([[ 1.,  4.,  4.],
           [ 6., 20., 16.],
           [ 9., 24., 16.]])
    """
    if np.ndim(x) == 3:  # one unbatched (K, H, W) sample
        return cast("FloatArray", full_conv2d(np.asarray(x)[None], weight)[0])
    if np.size(x) == 0:
        n, _, h, w = np.shape(x)
        kh, kw = weight.shape[2:]
        return np.zeros((n, weight.shape[1], h + kh - 1, w + kw - 1), dtype=x.dtype)
    y = _scatter_taps(x, weight, 1, (1, 1), (1, 1))
    return y.astype(x.dtype, copy=False)


# --------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------

def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    """PyTorch's pooling output size; with ``ceil_mode`` a last window that
    would start at or past the end of the input (in the padding) is dropped."""
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s - p >= size:
        out -= 1
    return out


@overload
def max_pool2d(
    x: FloatArray, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
    return_indices: Literal[False] = False,
) -> FloatArray: ...
@overload
def max_pool2d(
    x: FloatArray, kernel_size: IntOrPair, stride: IntOrPair | None, padding: IntOrPair,
    dilation: IntOrPair, ceil_mode: bool, return_indices: Literal[True],
) -> tuple[FloatArray, IndexArray]: ...
@overload
def max_pool2d(
    x: FloatArray, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False, *,
    return_indices: Literal[True],
) -> tuple[FloatArray, IndexArray]: ...
@overload
def max_pool2d(
    x: FloatArray, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
    return_indices: bool = False,
) -> FloatArray | tuple[FloatArray, IndexArray]: ...
def max_pool2d(
    x: FloatArray, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, dilation: IntOrPair = 1, ceil_mode: bool = False,
    return_indices: bool = False,
) -> FloatArray | tuple[FloatArray, IndexArray]:
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
        Input batch.
    kernel_size : int or (int, int)
        Window size.
    stride : int or (int, int) or None, optional
        Step between windows; None means ``kernel_size``.
    padding : int or (int, int), optional
        Implicit ``-inf`` padding on each side (never selected).
    dilation : int or (int, int), optional
        Spacing between window taps.
    ceil_mode : bool, optional
        Round the output size up; a last window that would start in the
        padding is dropped, windows past the input are clipped.
    return_indices : bool, optional
        Also return the position of each maximum.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW), dtype of ``x``
    indices : ndarray of int64, shape (N, C, OH, OW)
        Only if ``return_indices``. Flat position ``h*W + w`` of the selected
        element inside its input plane (as PyTorch's ``return_indices``).

    Notes
    -----
    ``OH = (H + 2*ph - dh*(kH - 1) - 1) // sh + 1`` (rounded up with
    ``ceil_mode``).

    PyTorch's CPU rule, reproduced exactly: for each window the running
    maximum starts at ``-inf`` and the running index at the first in-bounds
    position of the window; in-bounds taps are scanned in row-major order
    and a tap replaces the maximum if it is strictly greater *or* NaN. So
    the first maximum wins ties, NaN propagates (with several NaNs the last
    one's index is reported), and a window of ``-inf`` values reports its
    first in-bounds position.

    Examples
    --------
    >>> x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    >>> y, idx = max_pool2d(x, 2, return_indices=True)
    >>> float(y[0, 0, 0, 0]), int(idx[0, 0, 0, 0])
    (3.0, 1)
    """
    if np.ndim(x) == 3:  # one unbatched (C, H, W) sample
        out = max_pool2d(np.asarray(x)[None], kernel_size, stride, padding, dilation,
                         ceil_mode, True)
        return (out[0][0], out[1][0]) if return_indices else out[0][0]
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    n, c, h, w = x.shape
    oh = _pool_out(h, kh, sh, ph, dh, bool(ceil_mode))
    ow = _pool_out(w, kw, sw, pw, dw, bool(ceil_mode))
    if n * c == 0:  # no planes: empty results
        y0 = np.zeros((n, c, oh, ow), dtype=x.dtype)
        i0 = np.zeros((n, c, oh, ow), dtype=np.int64)
        return (y0, i0) if return_indices else y0

    # top-left corner of each window in input coordinates
    r0 = np.arange(oh) * sh - ph                      # (OH,)
    c0 = np.arange(ow) * sw - pw                      # (OW,)
    # PyTorch's initial index: the first tap at or below row/column 0
    rf = r0 + (-(r0 // dh)).clip(0) * dh
    cf = c0 + (-(c0 // dw)).clip(0) * dw
    first = (rf[:, None] * w + cf[None, :]).astype(np.int64)
    best = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    best_idx = np.broadcast_to(first, (n, c, oh, ow)).copy()

    for i in range(kh):                 # row-major scan over window taps
        for j in range(kw):
            rr = r0 + i * dh
            cc = c0 + j * dw
            rin = (rr >= 0) & (rr < h)
            cin = (cc >= 0) & (cc < w)
            inb = rin[:, None] & cin[None, :]          # (OH, OW)
            val = x[:, :, np.clip(rr, 0, h - 1)[:, None],
                    np.clip(cc, 0, w - 1)[None, :]]    # (N, C, OH, OW)
            take = inb & ((val > best) | np.isnan(val))
            best = np.where(take, val, best)
            idx = (rr[:, None] * w + cc[None, :]).astype(np.int64)
            best_idx = np.where(take, idx, best_idx)

    if return_indices:
        return best, best_idx
    return best


@_nan_quiet
def max_pool2d_backward(
    grad_out: FloatArray, indices: npt.NDArray[np.integer[Any]], input_shape: Sequence[int]
) -> FloatArray:
    """Gradient of :func:`max_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray, shape (N, C, OH, OW)
        Upstream gradient.
    indices : ndarray of int64, shape (N, C, OH, OW)
        The indices returned by ``max_pool2d(..., return_indices=True)``.
    input_shape : tuple of int
        ``(N, C, H, W)`` of the forward input.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``, dtype of ``grad_out``
        Zero except at selected positions, which receive the *sum* of the
        gradients of every window that selected them.

    Notes
    -----
    ``grad_x.reshape(N, C, H*W)[n, c, indices[n, c, oh, ow]] +=
    grad_out[n, c, oh, ow]`` for every output element (``np.add.at``, so
    overlapping windows that pick the same input accumulate).

    Examples
    --------
    >>> g = np.array([[[[1.0, 2.0]]]])
    >>> idx = np.array([[[[1, 1]]]])
    >>> max_pool2d_backward(g, idx, (1, 1, 1, 3))
    array([[[[0., 3., 0.]]]])
    """
    if len(input_shape) == 3:  # one unbatched (C, H, W) sample
        return cast("FloatArray", max_pool2d_backward(np.asarray(grad_out)[None],
                                                      np.asarray(indices)[None],
                                                      (1,) + tuple(input_shape))[0])
    n, c, h, w = input_shape
    m = grad_out.shape[2] * grad_out.shape[3]
    gx = np.zeros((n * c, h * w), dtype=np.float64)
    rows = np.arange(n * c)[:, None]
    np.add.at(gx, (rows, np.asarray(indices).reshape(n * c, m)),
              _f64(grad_out).reshape(n * c, m))
    return gx.reshape(n, c, h, w).astype(grad_out.dtype, copy=False)


def _avg_geometry(
    h: int, w: int, kernel_size: IntOrPair, stride: IntOrPair | None, padding: IntOrPair,
    ceil_mode: bool, count_include_pad: bool, divisor_override: int | None,
) -> tuple[Pair, Pair, Pair, Pair, Pair, npt.NDArray[np.float64]]:
    """(kernel, stride, padding, output size, extra right/bottom zeros, divisors).

    The divisors are window sums of a 0/1 mask over the padded, extended
    plane: ones on the input plus its padding (``count_include_pad``) or on
    the input alone, so a window clipped by ``ceil_mode`` counts only what
    it covers."""
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    ph, pw = _pair(padding)
    oh = _pool_out(h, kh, sh, ph, 1, bool(ceil_mode))
    ow = _pool_out(w, kw, sw, pw, 1, bool(ceil_mode))
    eh = max(0, (oh - 1) * sh + kh - (h + 2 * ph))
    ew = max(0, (ow - 1) * sw + kw - (w + 2 * pw))
    if divisor_override is not None:
        div = np.full((oh, ow), float(divisor_override))
    else:
        mask = np.zeros((1, 1, h + 2 * ph + eh, w + 2 * pw + ew))
        if count_include_pad:
            mask[:, :, :h + 2 * ph, :w + 2 * pw] = 1.0
        else:
            mask[:, :, ph:ph + h, pw:pw + w] = 1.0
        div = _windows(mask, (kh, kw), (sh, sw), (1, 1)).sum(axis=(4, 5))[0, 0, :oh, :ow]
        # A window with nothing to count (an empty plane) averages to 0, as
        # PyTorch's kernels leave such outputs: divide by inf.
        div[div == 0] = np.inf
    return (kh, kw), (sh, sw), (ph, pw), (oh, ow), (eh, ew), div


@_nan_quiet
def avg_pool2d(
    x: FloatArray, kernel_size: IntOrPair, stride: IntOrPair | None = None,
    padding: IntOrPair = 0, ceil_mode: bool = False, count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> FloatArray:
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
        Input batch.
    kernel_size : int or (int, int)
        Window size.
    stride : int or (int, int) or None, optional
        Step between windows; None means ``kernel_size``.
    padding : int or (int, int), optional
        Zero padding on each side.
    ceil_mode : bool, optional
        Round the output size up (the last window may be clipped).
    count_include_pad : bool, optional
        Count the padded zeros (within the padded input) in the divisor.
    divisor_override : int, optional
        A fixed divisor instead.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW), dtype of ``x``

    Notes
    -----
    ``OH = (H + 2*ph - kH) // sh + 1`` (rounded up with ``ceil_mode``).
    The window sums come from zero-padding the input (plus the extra rows
    and columns a ``ceil_mode`` window reaches) and summing strided windows;
    the divisors are the same window sums of a 0/1 mask.

    Examples
    --------
    >>> x = np.arange(1.0, 10.0).reshape(1, 1, 3, 3)
    >>> avg_pool2d(x, 2, stride=1)
    array([[[[3., 4.],
             [6., 7.]]]])
    """
    if np.ndim(x) == 3:  # one unbatched (C, H, W) sample
        return cast("FloatArray", avg_pool2d(np.asarray(x)[None], kernel_size, stride, padding,
                                             ceil_mode, count_include_pad,
                                             divisor_override)[0])
    n, c, h, w = x.shape
    k, s, (ph, pw), (oh, ow), (eh, ew), div = _avg_geometry(
        h, w, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    xp = np.pad(_f64(x), ((0, 0), (0, 0), (ph, ph + eh), (pw, pw + ew)))
    win = _windows(xp, k, s, (1, 1))[:, :, :oh, :ow]
    y = win.sum(axis=(4, 5)) / div
    return cast("FloatArray", y.astype(x.dtype, copy=False))


@_nan_quiet
def avg_pool2d_backward(
    grad_out: FloatArray, input_shape: Sequence[int], kernel_size: IntOrPair,
    stride: IntOrPair | None = None, padding: IntOrPair = 0, ceil_mode: bool = False,
    count_include_pad: bool = True, divisor_override: int | None = None,
) -> FloatArray:
    """Gradient of :func:`avg_pool2d` with respect to its input.

    Parameters
    ----------
    grad_out : ndarray, shape (N, C, OH, OW)
        Upstream gradient.
    input_shape : tuple of int
        ``(N, C, H, W)`` of the forward input.
    kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override
        As given to the forward call (``stride=None`` means ``kernel_size``).

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``, dtype of ``grad_out``

    Notes
    -----
    Each output position spreads ``grad_out / divisor`` over the window it
    averaged (scatter-add, tap by tap, into a padded buffer that is then
    cropped); overlapping windows accumulate and padding absorbs its share.

    Examples
    --------
    >>> g = np.array([[[[4.0]]]])
    >>> avg_pool2d_backward(g, (1, 1, 2, 3), 2)
    array([[[[1., 1., 0.],
             [1., 1., 0.]]]])
    """
    if len(input_shape) == 3:  # one unbatched (C, H, W) sample
        return cast("FloatArray", avg_pool2d_backward(
            np.asarray(grad_out)[None], (1,) + tuple(input_shape), kernel_size, stride,
            padding, ceil_mode, count_include_pad, divisor_override)[0])
    n, c, h, w = input_shape
    (kh, kw), (sh, sw), (ph, pw), (oh, ow), (eh, ew), div = _avg_geometry(
        h, w, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    g = _f64(grad_out) / div
    gxp = np.zeros((n, c, h + 2 * ph + eh, w + 2 * pw + ew), dtype=np.float64)
    for i in range(kh):
        for j in range(kw):
            gxp[:, :, i:i + sh * (oh - 1) + 1:sh,
                j:j + sw * (ow - 1) + 1:sw] += g
    return gxp[:, :, ph:ph + h, pw:pw + w].astype(grad_out.dtype)


def _adaptive_size(
    output_size: AdaptiveSize | npt.NDArray[np.integer[Any]], h: int, w: int
) -> Pair:
    if isinstance(output_size, (tuple, list, np.ndarray)):
        oh, ow = output_size
        return (h if oh is None else int(oh)), (w if ow is None else int(ow))
    return int(output_size), int(output_size)


def _adaptive_window(i: int, out: int, size: int) -> slice:
    """Rows (or columns) ``[floor(i*size/out), ceil((i+1)*size/out))``."""
    return slice(i * size // out, -(-(i + 1) * size // out))


@_nan_quiet
def adaptive_avg_pool2d(x: FloatArray, output_size: AdaptiveSize) -> FloatArray:
    """2-D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
        None keeps the input size along that axis.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW), dtype of ``x``

    Notes
    -----
    A loop over output positions; output ``(i, j)`` is the mean of the
    window ``[floor(i*H/OH), ceil((i+1)*H/OH))`` by the same along W.

    Examples
    --------
    >>> adaptive_avg_pool2d(np.arange(6.0).reshape(1, 1, 2, 3), (1, 2))
    array([[[[2., 3.]]]])
    """
    xa = np.asarray(x)
    oh, ow = _adaptive_size(output_size, xa.shape[-2], xa.shape[-1])
    y = np.zeros(xa.shape[:-2] + (oh, ow))
    for i in range(oh):
        rs = _adaptive_window(i, oh, xa.shape[-2])
        for j in range(ow):
            cs = _adaptive_window(j, ow, xa.shape[-1])
            y[..., i, j] = _f64(xa[..., rs, cs]).mean(axis=(-2, -1))
    return cast("FloatArray", y.astype(xa.dtype, copy=False))


@_nan_quiet
def adaptive_avg_pool2d_backward(grad_out: FloatArray, input_shape: Sequence[int]) -> FloatArray:
    """Gradient of :func:`adaptive_avg_pool2d` (output size from ``grad_out``).

    Parameters
    ----------
    grad_out : ndarray, shape (N, C, OH, OW) or (C, OH, OW)
    input_shape : tuple of int

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``, dtype of ``grad_out``

    Notes
    -----
    A loop over output positions, each adding ``grad_out / window size``
    to its window.

    Examples
    --------
    >>> adaptive_avg_pool2d_backward(np.array([[[[3.0]]]]), (1, 1, 1, 3))
    array([[[[1., 1., 1.]]]])
    """
    g = np.asarray(grad_out)
    oh, ow = g.shape[-2:]
    h, w = input_shape[-2:]
    gx = np.zeros(tuple(input_shape))
    for i in range(oh):
        rs = _adaptive_window(i, oh, h)
        for j in range(ow):
            cs = _adaptive_window(j, ow, w)
            size = (rs.stop - rs.start) * (cs.stop - cs.start)
            gx[..., rs, cs] += _f64(g[..., i, j])[..., None, None] / size
    return cast("FloatArray", gx.astype(g.dtype, copy=False))


@overload
def adaptive_max_pool2d(
    x: FloatArray, output_size: AdaptiveSize, return_indices: Literal[False] = False
) -> FloatArray: ...
@overload
def adaptive_max_pool2d(
    x: FloatArray, output_size: AdaptiveSize, return_indices: Literal[True]
) -> tuple[FloatArray, IndexArray]: ...
def adaptive_max_pool2d(
    x: FloatArray, output_size: AdaptiveSize, return_indices: bool = False
) -> FloatArray | tuple[FloatArray, IndexArray]:
    """2-D adaptive max pooling, as ``torch.nn.functional.adaptive_max_pool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W)
    output_size : int or (int or None, int or None)
    return_indices : bool, optional

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW), dtype of ``x``
    indices : ndarray of int64, same shape (only if ``return_indices``)

    Notes
    -----
    A loop over output positions, each window flattened in row-major order:
    with a NaN in the window the *last* NaN is chosen, else ``argmax`` (the
    first maximum; a window of ``-inf`` reports its first position) --
    PyTorch's results, by another route than its running maximum.

    Examples
    --------
    >>> adaptive_max_pool2d(np.array([[[[1.0, 5.0, 5.0]]]]), 1, return_indices=True)
    (array([[[[5.]]]]), array([[[[1]]]]))
    """
    xa = np.asarray(x)
    h, w = xa.shape[-2:]
    oh, ow = _adaptive_size(output_size, h, w)
    lead = xa.shape[:-2]
    y = np.zeros(lead + (oh, ow), dtype=xa.dtype)
    idx = np.zeros(lead + (oh, ow), dtype=np.int64)
    for i in range(oh):
        rs = _adaptive_window(i, oh, h)
        for j in range(ow):
            cs = _adaptive_window(j, ow, w)
            width = cs.stop - cs.start
            size = (rs.stop - rs.start) * width
            win: npt.NDArray[Any] = xa[..., rs, cs].reshape(lead + (size,))
            nan = np.isnan(win)
            last_nan = size - 1 - np.argmax(nan[..., ::-1], axis=-1)
            k = np.where(nan.any(axis=-1), last_nan, np.argmax(np.where(nan, 0, win), axis=-1))
            idx[..., i, j] = (rs.start + k // width) * w + cs.start + k % width
            y[..., i, j] = np.take_along_axis(win, k[..., None], axis=-1)[..., 0]
    return (y, idx) if return_indices else y


def adaptive_max_pool2d_backward(
    grad_out: FloatArray, indices: npt.NDArray[np.integer[Any]], input_shape: Sequence[int]
) -> FloatArray:
    """Gradient of :func:`adaptive_max_pool2d`.

    Parameters
    ----------
    grad_out : ndarray, shape (N, C, OH, OW) or (C, OH, OW)
    indices : ndarray of int, same shape
    input_shape : tuple of int

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``, dtype of ``grad_out``

    Notes
    -----
    That of :func:`max_pool2d`: each gradient added at its index.

    Examples
    --------
    >>> adaptive_max_pool2d_backward(np.array([[[[2.0]]]]), np.array([[[[1]]]]), (1, 1, 1, 2))
    array([[[[0., 2.]]]])
    """
    return max_pool2d_backward(grad_out, indices, input_shape)


def max_unpool2d(
    x: FloatArray, indices: npt.NDArray[np.integer[Any]], kernel_size: IntOrPair,
    stride: IntOrPair | None = None, padding: IntOrPair = 0,
    output_size: Sequence[int] | None = None,
) -> FloatArray:
    """Partial inverse of :func:`max_pool2d`, as ``torch.nn.functional.max_unpool2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W)
    indices : ndarray of int, same shape
        Flat positions in each output plane.
    kernel_size, stride, padding : int or (int, int)
        Give the default output size ``(H - 1)*s - 2*p + k``.
    output_size : sequence of int, optional
        ``(OH, OW)`` or a full shape ending in it.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW), dtype of ``x``
        Zeros, with ``x``'s values at their indices; of repeated indices
        the last (row-major) value is kept.

    Notes
    -----
    Written with :func:`numpy.unique` on the reversed flat indices (the
    first occurrence in reverse is the last one).

    Examples
    --------
    >>> max_unpool2d(np.array([[[[7.0, 8.0]]]]), np.array([[[[2, 2]]]]), (1, 2))
    array([[[[0., 0., 8., 0.]]]])
    """
    xa = np.asarray(x)
    h, w = xa.shape[-2:]
    if output_size is None:
        kh, kw = _pair(kernel_size)
        sh, sw = _pair(kernel_size if stride is None else stride)
        ph, pw = _pair(padding)
        oh, ow = (h - 1) * sh - 2 * ph + kh, (w - 1) * sw - 2 * pw + kw
    else:
        oh, ow = (int(v) for v in tuple(output_size)[-2:])
    planes = int(np.prod(xa.shape[:-2]))
    flat = (np.arange(planes)[:, None] * (oh * ow)
            + np.asarray(indices, dtype=np.int64).reshape(planes, h * w)).ravel()[::-1]
    vals = xa.reshape(planes, h * w).ravel()[::-1]
    y = np.zeros(planes * oh * ow, dtype=xa.dtype)
    where, first = np.unique(flat, return_index=True)
    y[where] = vals[first]
    return y.reshape(xa.shape[:-2] + (oh, ow))


def max_unpool2d_backward(
    grad_out: FloatArray, indices: npt.NDArray[np.integer[Any]]
) -> FloatArray:
    """Gradient of :func:`max_unpool2d`.

    Parameters
    ----------
    grad_out : ndarray, shape (N, C, OH, OW) or (C, OH, OW)
    indices : ndarray of int, shape (N, C, H, W) or (C, H, W)

    Returns
    -------
    grad_x : ndarray, shape of ``indices``, dtype of ``grad_out``

    Notes
    -----
    ``grad_out`` read at each index (:func:`numpy.take_along_axis`).

    Examples
    --------
    >>> max_unpool2d_backward(np.array([[[[1.0, 2.0, 3.0]]]]), np.array([[[[2, 0]]]]))
    array([[[[3., 1.]]]])
    """
    g = np.asarray(grad_out)
    idx = np.asarray(indices, dtype=np.int64)
    lead = idx.shape[:-2]
    gx = np.take_along_axis(g.reshape(lead + (g.shape[-2] * g.shape[-1],)),
                            idx.reshape(lead + (idx.shape[-2] * idx.shape[-1],)), axis=-1)
    return cast("FloatArray", gx.reshape(idx.shape))


def max_pool1d(
    x: FloatArray, kernel_size: IntOrSingle, stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0, dilation: IntOrSingle = 1, ceil_mode: bool = False,
    return_indices: bool = False,
) -> FloatArray | tuple[FloatArray, IndexArray]:
    """1-D max pooling, as ``torch.nn.functional.max_pool1d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, L) or (C, L)
    kernel_size, stride, padding, dilation : int or 1-tuple
    ceil_mode, return_indices : bool

    Returns
    -------
    y : ndarray, shape (N, C, OL) or (C, OL)
    indices : ndarray of int64, same shape (only if ``return_indices``)

    Notes
    -----
    :func:`max_pool2d` of height 1.

    Examples
    --------
    >>> max_pool1d(np.array([[[1.0, 4.0, 2.0]]]), 2, ceil_mode=True)
    array([[[4., 2.]]])
    """
    k, s, p = _pool1d_window(kernel_size, stride, padding)
    y, idx = max_pool2d(_h1(x), k, s, p, (1, _single(dilation)), ceil_mode, True)
    return (y[..., 0, :], idx[..., 0, :]) if return_indices else y[..., 0, :]


def max_pool1d_backward(
    grad_out: FloatArray, indices: npt.NDArray[np.integer[Any]], input_shape: Sequence[int]
) -> FloatArray:
    """Gradient of :func:`max_pool1d`.

    Parameters
    ----------
    grad_out : ndarray, shape (N, C, OL) or (C, OL)
    indices : ndarray of int, same shape
    input_shape : tuple of int

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``

    Notes
    -----
    Each gradient added at its index (:func:`max_pool2d_backward`).

    Examples
    --------
    >>> max_pool1d_backward(np.array([[[5.0]]]), np.array([[[1]]]), (1, 1, 2))
    array([[[0., 5.]]])
    """
    gx = max_pool2d_backward(_h1(grad_out), _h1(indices), _h1_shape(input_shape))
    return gx[..., 0, :]


def avg_pool1d(
    x: FloatArray, kernel_size: IntOrSingle, stride: IntOrSingle | None = None,
    padding: IntOrSingle = 0, ceil_mode: bool = False, count_include_pad: bool = True,
) -> FloatArray:
    """1-D average pooling, as ``torch.nn.functional.avg_pool1d``.

    Parameters
    ----------
    x : ndarray, shape (N, C, L) or (C, L)
    kernel_size, stride, padding : int or 1-tuple
    ceil_mode, count_include_pad : bool

    Returns
    -------
    y : ndarray, shape (N, C, OL) or (C, OL)

    Notes
    -----
    :func:`avg_pool2d` of height 1.

    Examples
    --------
    >>> avg_pool1d(np.array([[[1.0, 3.0, 5.0]]]), 2, ceil_mode=True)
    array([[[2., 5.]]])
    """
    k, s, p = _pool1d_window(kernel_size, stride, padding)
    y = avg_pool2d(_h1(x), k, s, p, ceil_mode, count_include_pad)
    return y[..., 0, :]


def avg_pool1d_backward(
    grad_out: FloatArray, input_shape: Sequence[int], kernel_size: IntOrSingle,
    stride: IntOrSingle | None = None, padding: IntOrSingle = 0, ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> FloatArray:
    """Gradient of :func:`avg_pool1d`.

    Parameters
    ----------
    grad_out : ndarray, shape (N, C, OL) or (C, OL)
    input_shape : tuple of int
    kernel_size, stride, padding, ceil_mode, count_include_pad
        As given to :func:`avg_pool1d`.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``

    Notes
    -----
    :func:`avg_pool2d_backward` of height 1.

    Examples
    --------
    >>> avg_pool1d_backward(np.array([[[2.0, 4.0]]]), (1, 1, 4), 2)
    array([[[1., 1., 2., 2.]]])
    """
    k, s, p = _pool1d_window(kernel_size, stride, padding)
    gx = avg_pool2d_backward(_h1(grad_out), _h1_shape(input_shape), k, s, p, ceil_mode,
                             count_include_pad)
    return gx[..., 0, :]


# --------------------------------------------------------------------------
# dense (fully connected)
# --------------------------------------------------------------------------

@_nan_quiet
def linear(x: FloatArray, weight: FloatArray, bias: FloatArray | None = None) -> FloatArray:
    """Fully connected layer ``y = x @ weight.T + bias``, as
    ``torch.nn.functional.linear``, by explicit sums (``einsum``) in float64.

    Parameters
    ----------
    x : ndarray, shape (N, in_features)
    weight : ndarray, shape (out_features, in_features)
    bias : ndarray, shape (out_features,), optional

    Returns
    -------
    y : ndarray, shape (N, out_features), dtype of ``x``

    Notes
    -----
    ``y[n, o] = bias[o] + sum_i x[n, i] * weight[o, i]``.

    Examples
    --------
    >>> import numpy as np
    >>> linear(np.ones((1, 2)), np.array([[1., 2.], [3., 4.]]), np.array([0.5, 0.]))
    array([[3.5, 7. ]])
    """
    y = np.einsum("ni,oi->no", _f64(x), _f64(weight))
    if bias is not None:
        y = y + _f64(bias)
    return cast("FloatArray", y.astype(x.dtype))


@_nan_quiet
def linear_backward(
    grad_out: FloatArray, x: FloatArray, weight: FloatArray, bias: bool = True
) -> tuple[FloatArray, FloatArray, FloatArray | None]:
    """Gradients of :func:`linear`: ``(grad_x, grad_weight, grad_bias)``.

    ``grad_x[n, i] = sum_o g[n, o] w[o, i]``, ``grad_weight[o, i] =
    sum_n g[n, o] x[n, i]``, ``grad_bias[o] = sum_n g[n, o]`` (None when
    ``bias`` is False).

    Parameters
    ----------
    grad_out : ndarray, shape (N, out_features)
    x : ndarray, shape (N, in_features)
    weight : ndarray, shape (out_features, in_features)
    bias : bool

    Returns
    -------
    grad_x, grad_weight, grad_bias : ndarrays (grad_bias None without bias)

    Notes
    -----
    Shapes: ``grad_x`` as ``x``, ``grad_weight`` as ``weight``,
    ``grad_bias`` ``(out_features,)``.

    Examples
    --------
    >>> import numpy as np
    >>> gx, gw, gb = linear_backward(np.ones((1, 1)), np.array([[2., 3.]]), np.array([[1., 1.]]))
    >>> gx, gw, gb
    (array([[1., 1.]]), array([[2., 3.]]), array([1.]))
    """
    g = _f64(grad_out)
    gx = np.einsum("no,oi->ni", g, _f64(weight)).astype(x.dtype)
    gw = np.einsum("no,ni->oi", g, _f64(x)).astype(weight.dtype)
    gb = g.sum(axis=0).astype(grad_out.dtype) if bias else None
    return gx, gw, gb


# --------------------------------------------------------------------------
# activations and loss
# --------------------------------------------------------------------------

def relu(x: FloatArray) -> FloatArray:
    """Rectified linear unit, ``max(x, 0)``.

    Parameters
    ----------
    x : ndarray
        Any shape.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``

    Notes
    -----
    NaN propagates (as ``torch.relu``).

    Examples
    --------
    >>> relu(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 2.])
    """
    return np.where(x > 0, x, np.where(np.isnan(x), x, 0)).astype(
        x.dtype, copy=False)


def relu_backward(grad_out: FloatArray, x: FloatArray) -> FloatArray:
    """Gradient of :func:`relu`.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient, same shape as ``x``.
    x : ndarray
        The forward input (or output: they have the same sign).

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``grad_out`` where ``x > 0``, else 0; at ``x == 0`` the gradient is 0.

    Notes
    -----
    Written as PyTorch's ``threshold_backward``: ``0 if x <= 0 else grad``,
    so a NaN ``x`` passes the gradient through.

    Examples
    --------
    >>> relu_backward(np.array([5.0, 5.0, 5.0]), np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 5.])
    """
    return np.where(x <= 0, 0, grad_out).astype(grad_out.dtype, copy=False)


@_nan_quiet
def leaky_relu(x: FloatArray, negative_slope: float = 0.01) -> FloatArray:
    """Leaky rectified linear unit.

    Parameters
    ----------
    x : ndarray
        Any shape.
    negative_slope : float, optional
        Slope for ``x <= 0``.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
        ``x if x > 0 else x * negative_slope``.

    Notes
    -----
    Elementwise; the output has the shape of the input.

    Examples
    --------
    >>> leaky_relu(np.array([-2.0, 3.0]), 0.5)
    array([-1.,  3.])
    """
    s = x.dtype.type(negative_slope)
    return np.where(x > 0, x, x * s).astype(x.dtype, copy=False)


@_nan_quiet
def leaky_relu_backward(
    grad_out: FloatArray, x: FloatArray, negative_slope: float = 0.01
) -> FloatArray:
    """Gradient of :func:`leaky_relu`.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient, same shape as ``x``.
    x : ndarray
        The forward input.
    negative_slope : float, optional
        As given to the forward call.

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``grad_out if x > 0 else grad_out * negative_slope`` (so the slope
        applies at ``x == 0``, as PyTorch).

    Notes
    -----
    Elementwise; the output has the shape of the input.

    Examples
    --------
    >>> leaky_relu_backward(np.array([2.0, 2.0]), np.array([0.0, 1.0]), 0.5)
    array([1., 2.])
    """
    s = grad_out.dtype.type(negative_slope)
    return np.where(x > 0, grad_out, grad_out * s).astype(
        grad_out.dtype, copy=False)


@_nan_quiet
def sigmoid(x: FloatArray) -> FloatArray:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, without overflow.

    Parameters
    ----------
    x : ndarray
        Any shape.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``

    Notes
    -----
    With ``z = exp(-|x|)`` (which never overflows), ``sigmoid(x)`` is
    ``1 / (1 + z)`` for ``x >= 0`` and ``z / (1 + z)`` for ``x < 0``.

    Examples
    --------
    >>> sigmoid(np.array([0.0, np.log(3.0)]))
    array([0.5 , 0.75])
    """
    x64 = _f64(x)
    z = np.exp(-np.abs(x64))
    y = np.where(x64 >= 0, 1.0 / (1.0 + z), z / (1.0 + z))
    return y.astype(x.dtype, copy=False)


@_nan_quiet
def sigmoid_backward(grad_out: FloatArray, y: FloatArray) -> FloatArray:
    """Gradient of :func:`sigmoid`, from its output.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient.
    y : ndarray
        The sigmoid *output*.

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``grad_out * y * (1 - y)``.

    Notes
    -----
    Elementwise; the output has the shape of the input.

    Examples
    --------
    >>> sigmoid_backward(np.array([2.0]), np.array([0.75]))
    array([0.375])
    """
    y64 = _f64(y)
    return (_f64(grad_out) * y64 * (1.0 - y64)).astype(
        grad_out.dtype, copy=False)


@_nan_quiet
def tanh(x: FloatArray) -> FloatArray:
    """Hyperbolic tangent.

    Parameters
    ----------
    x : ndarray
        Any shape.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``

    Notes
    -----
    ``np.tanh`` saturates to +-1 without overflow.

    Examples
    --------
    >>> tanh(np.array([np.log(2.0)]))
    array([0.6])
    """
    return np.tanh(_f64(x)).astype(x.dtype, copy=False)


@_nan_quiet
def tanh_backward(grad_out: FloatArray, y: FloatArray) -> FloatArray:
    """Gradient of :func:`tanh`, from its output.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient.
    y : ndarray
        The tanh *output*.

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``grad_out * (1 - y**2)``.

    Notes
    -----
    Elementwise; the output has the shape of the input.

    Examples
    --------
    >>> tanh_backward(np.array([2.0]), np.array([0.5]))
    array([1.5])
    """
    y64 = _f64(y)
    return (_f64(grad_out) * (1.0 - y64 * y64)).astype(
        grad_out.dtype, copy=False)


@_nan_quiet
def softmax(x: FloatArray, axis: int = -1) -> FloatArray:
    """Softmax along one axis, shifted by the maximum for stability.

    Parameters
    ----------
    x : ndarray
        Any shape.
    axis : int, optional
        Axis to normalise over.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
        ``exp(x - max) / sum(exp(x - max))`` along ``axis``.

    Notes
    -----
    Subtracting the maximum keeps every exponent <= 0, so nothing overflows.

    Examples
    --------
    >>> softmax(np.array([0.0, np.log(3.0)]))
    array([0.25, 0.75])
    """
    x64 = _f64(x)
    e = np.exp(x64 - np.max(x64, axis=axis, keepdims=True))
    return cast("FloatArray", (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype, copy=False))


@_nan_quiet
def softmax_backward(grad_out: FloatArray, y: FloatArray, axis: int = -1) -> FloatArray:
    """Gradient of :func:`softmax`, from its output.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient.
    y : ndarray
        The softmax *output*.
    axis : int, optional
        As given to the forward call.

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``y * (grad_out - sum(grad_out * y, axis))``.

    Notes
    -----
    The Jacobian-vector product of ``diag(y) - y y^T``.

    Examples
    --------
    >>> softmax_backward(np.array([1.0, 0.0]), np.array([0.25, 0.75]))
    array([ 0.1875, -0.1875])
    """
    g = _f64(grad_out)
    y64 = _f64(y)
    s = (g * y64).sum(axis=axis, keepdims=True)
    return cast("FloatArray", (y64 * (g - s)).astype(grad_out.dtype, copy=False))


@_nan_quiet
def log_softmax(x: FloatArray, axis: int = -1) -> FloatArray:
    """Logarithm of :func:`softmax`, computed directly (log-sum-exp).

    Parameters
    ----------
    x : ndarray
        Any shape.
    axis : int, optional
        Axis to normalise over.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
        ``x - max - log(sum(exp(x - max)))`` along ``axis``.

    Notes
    -----
    Never takes the log of an underflowed softmax, so large negative
    outputs stay finite.

    Examples
    --------
    >>> np.exp(log_softmax(np.array([0.0, np.log(3.0)])))
    array([0.25, 0.75])
    """
    x64 = _f64(x)
    shifted = x64 - np.max(x64, axis=axis, keepdims=True)
    lse = np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return cast("FloatArray", (shifted - lse).astype(x.dtype, copy=False))


@_nan_quiet
def log_softmax_backward(
    grad_out: FloatArray, y: FloatArray, axis: int = -1
) -> FloatArray:
    """Gradient of :func:`log_softmax`, from its output.

    Parameters
    ----------
    grad_out : ndarray
        Upstream gradient.
    y : ndarray
        The log_softmax *output*.
    axis : int, optional
        As given to the forward call.

    Returns
    -------
    grad_x : ndarray, dtype of ``grad_out``
        ``grad_out - exp(y) * sum(grad_out, axis)``.

    Notes
    -----
    The Jacobian-vector product of ``I - 1 softmax^T``.

    Examples
    --------
    >>> log_softmax_backward(np.array([1.0, 0.0]), np.log([0.25, 0.75]))
    array([ 0.75, -0.75])
    """
    g = _f64(grad_out)
    s = g.sum(axis=axis, keepdims=True)
    return cast("FloatArray", (g - np.exp(_f64(y)) * s).astype(grad_out.dtype, copy=False))


@_nan_quiet
def softmax_cross_entropy(
    logits: FloatArray, labels: npt.NDArray[np.integer[Any]]
) -> tuple[float, FloatArray]:
    """Mean softmax cross-entropy loss and its gradient.

    Parameters
    ----------
    logits : ndarray, shape (N, K)
        Unnormalised class scores.
    labels : ndarray of int, shape (N,)
        Target class of each row, in ``[0, K)``.

    Returns
    -------
    loss : float
        ``mean_i(-log_softmax(logits)[i, labels[i]])``; 0.0 when ``N == 0``.
    grad_logits : ndarray, shape (N, K), dtype of ``logits``
        ``(softmax(logits) - onehot(labels)) / N``.

    Notes
    -----
    As ``torch.nn.functional.cross_entropy`` with ``reduction='mean'``,
    except that an empty batch gives 0.0 rather than NaN.

    Examples
    --------
    >>> loss, g = softmax_cross_entropy(np.array([[0.0, np.log(3.0)]]),
    ...                                 np.array([1]))
    >>> print(f"{loss:.6f}")  # -log(0.75)
    0.287682
    >>> g
    array([[ 0.25, -0.25]])
    """
    lsm = log_softmax(_f64(logits), axis=-1)
    n = lsm.shape[0]
    labels = np.asarray(labels, dtype=np.intp)
    if n == 0:
        return 0.0, np.zeros(logits.shape, dtype=logits.dtype)
    rows = np.arange(n)
    loss = float(-lsm[rows, labels].mean())
    grad = np.exp(lsm)
    grad[rows, labels] -= 1.0
    grad /= n
    return loss, grad.astype(logits.dtype, copy=False)


# --------------------------------------------------------------------------
# Batch normalization
# --------------------------------------------------------------------------


def _channel_view(x: npt.NDArray[Any]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(axes reduced per channel, broadcast shape of a per-channel vector)."""
    return (0,) + tuple(range(2, x.ndim)), (1, x.shape[1]) + (1,) * (x.ndim - 2)


def batch_norm(
    x: FloatArray, running_mean: FloatArray | None, running_var: FloatArray | None,
    weight: FloatArray | None = None, bias: FloatArray | None = None, training: bool = False,
    momentum: float = 0.1, eps: float = 1e-5,
) -> FloatArray:
    """Batch normalization over axis 1 of an (N, C, ...) array.

    Parameters
    ----------
    x : ndarray, shape (N, C, ...)
    running_mean, running_var : ndarray of shape (C,), or None
        Updated in place in training mode (when not None); the statistics
        used in evaluation mode.
    weight, bias : ndarray of shape (C,), optional
    training : bool
    momentum : float
    eps : float

    Returns
    -------
    y : ndarray, shape and dtype of ``x``
        ``(x - mean) / sqrt(var + eps) * weight + bias``.

    Notes
    -----
    Training mode normalises with the batch mean and biased variance
    (``numpy.mean``/``numpy.var`` in float64, over every axis but axis 1)
    and updates the running statistics
    ``r = (1 - momentum) * r + momentum * batch_value``, with the *unbiased*
    variance for ``running_var`` (nothing is updated for an empty batch).
    Evaluation mode uses the running statistics.

    Examples
    --------
    >>> rm, rv = np.zeros(1), np.ones(1)
    >>> batch_norm(np.array([[1.0], [3.0]]), rm, rv, training=True)
    array([[-0.999995],
           [ 0.999995]])
    >>> rm, rv
    (array([0.2]), array([1.1]))
    """
    axes, shape = _channel_view(x)
    x64 = _f64(x)
    m = x.size // x.shape[1] if x.shape[1] else 0
    if training:
        mean = x64.mean(axis=axes) if m else np.zeros(x.shape[1])
        var = x64.var(axis=axes) if m else np.ones(x.shape[1])
        if m:
            if running_mean is not None:
                running_mean[...] = (1 - momentum) * _f64(running_mean) + momentum * mean
            if running_var is not None:
                unbiased = var * m / (m - 1)
                running_var[...] = (1 - momentum) * _f64(running_var) + momentum * unbiased
    else:
        mean, var = _f64(cast("FloatArray", running_mean)), _f64(cast("FloatArray", running_var))
    y = (x64 - mean.reshape(shape)) / np.sqrt(var + eps).reshape(shape)
    if weight is not None:
        y = y * _f64(weight).reshape(shape)
    if bias is not None:
        y = y + _f64(bias).reshape(shape)
    return y.astype(x.dtype)


def batch_norm_backward(
    grad_out: FloatArray, x: FloatArray, running_mean: FloatArray | None,
    running_var: FloatArray | None, weight: FloatArray | None = None, training: bool = False,
    eps: float = 1e-5,
) -> tuple[FloatArray, FloatArray | None, FloatArray | None]:
    """Gradients of :func:`batch_norm`: (grad_x, grad_weight, grad_bias).

    Parameters
    ----------
    grad_out, x : ndarray, shape (N, C, ...)
    running_mean, running_var : ndarray of shape (C,), or None
        The statistics of an evaluation-mode forward (unused in training).
    weight : ndarray of shape (C,), optional
    training : bool
    eps : float

    Returns
    -------
    grad_x : ndarray, shape and dtype of ``x``
    grad_weight, grad_bias : ndarray of shape (C,), or None

    Notes
    -----
    In training mode the mean and variance depend on ``x``:
    ``grad_x = w / sigma * (g - mean(g) - xhat * mean(g * xhat))`` with
    ``xhat = (x - mean) / sigma``, ``sigma = sqrt(var + eps)`` (means over
    every axis but the channel axis); in evaluation mode ``grad_x = g * w /
    sigma`` with the running statistics.  ``grad_weight = sum(g * xhat)``,
    ``grad_bias = sum(g)``; both None when ``weight`` is None.

    Examples
    --------
    >>> gx, gw, gb = batch_norm_backward(np.array([[1.0], [0.0]]), np.array([[1.0], [3.0]]),
    ...                                  None, None, np.ones(1), training=True)
    >>> gx.round(4), gw.round(6), gb
    (array([[ 0.],
           [-0.]]), array([-0.999995]), array([1.]))
    """
    axes, shape = _channel_view(x)
    x64, g64 = _f64(x), _f64(grad_out)
    if training:
        mean = x64.mean(axis=axes) if x.size else np.zeros(x.shape[1])
        var = x64.var(axis=axes) if x.size else np.ones(x.shape[1])
    else:
        mean, var = _f64(cast("FloatArray", running_mean)), _f64(cast("FloatArray", running_var))
    sigma = np.sqrt(var + eps).reshape(shape)
    xhat = (x64 - mean.reshape(shape)) / sigma
    w = np.ones(shape) if weight is None else _f64(weight).reshape(shape)
    if training and x.size:
        gx = (g64 - g64.mean(axis=axes, keepdims=True)
              - xhat * (g64 * xhat).mean(axis=axes, keepdims=True)) / sigma * w
    else:
        gx = g64 / sigma * w
    if weight is None:
        return gx.astype(x.dtype), None, None
    gw = (g64 * xhat).sum(axis=axes)
    gb = g64.sum(axis=axes)
    return gx.astype(x.dtype), gw.astype(x.dtype), gb.astype(x.dtype)
