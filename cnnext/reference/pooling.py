"""Pooling: max, average, adaptive and unpooling, 2-D and 1-D, over
explicit windows."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import numpy as np
import numpy.typing as npt

from ._common import _f64, _h1, _h1_shape, _nan_quiet, _pair, _pool1d_window, _single, _windows

if TYPE_CHECKING:
    from .._typing import AdaptiveSize, FloatArray, IndexArray, IntOrPair, IntOrSingle, Pair

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


