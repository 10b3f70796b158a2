"""Convolutions: 2-D, transposed 2-D, 1-D and the full convolution, by
windowed sums and tap-by-tap scatters."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from ._common import (
    _as_2d_option, _by_position, _f64, _h1, _huge_padding, _nan_quiet, _pad_hw, _pad_sides, _pair,
    _sides, _single, _split, _windows,
)

if TYPE_CHECKING:
    from .._typing import FloatArray, IntOrPair, Pair

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "conv1d",
    "conv1d_backward",
    "full_conv2d",
]


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


