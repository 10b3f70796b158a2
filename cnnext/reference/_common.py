"""Helpers shared by the reference ops: padding, windows, output sizes."""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view


if TYPE_CHECKING:
    from .._typing import FloatArray, IntOrPair, IntOrSingle, Pair, Shape

_P = ParamSpec("_P")
_R = TypeVar("_R")


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


