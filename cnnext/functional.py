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
import functools

import numpy as np

from . import _config, _conv, _pool
from . import _validate as V
from . import reference as _ref

__all__ = [
    "conv2d",
    "conv2d_backward",
    "conv_transpose2d",
    "full_conv2d",
    "max_pool2d",
    "max_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
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
]

#: Below this many multiply-adds a convolution runs on one thread: waking a
#: second thread costs more than it saves.
PARALLEL_MIN_MACS = 1 << 20


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _numpy_backend():
    return _config.get_backend() == "numpy"


def _prepare(fname, named, ndims, layout):
    """Arrays -> (list of C-contiguous arrays of the compute dtype, dtype).

    ``named`` is a list of (name, value); ``ndims`` the allowed ndim per
    array (None: any).  Copies only when the dtype or layout requires it.
    """
    # Fast path (the common case in a training loop): native float32/float64
    # C-contiguous ndarrays of one dtype need no conversion at all.
    first = named[0][1]
    if type(first) is np.ndarray:
        dt = first.dtype
        if dt in _FLOAT_DTYPES:
            ok = True
            for (_, a), nd in zip(named, ndims):
                if (
                    type(a) is not np.ndarray
                    or a.dtype != dt
                    or not a.flags.c_contiguous
                    or (nd is not None and a.ndim not in nd)
                ):
                    ok = False
                    break
            if ok:
                return [a for _, a in named], dt
    arrays = [(n, V.as_array(fname, n, v)) for n, v in named]
    for (n, a), nd in zip(arrays, ndims):
        if nd is not None:
            V.check_ndim(fname, n, a, nd, layout.get(n, ""))
    dt = V.compute_dtype(fname, arrays)
    # order='C' (not ascontiguousarray, which turns 0-d into 1-d).
    return [np.asarray(a, dtype=dt, order="C") for _, a in arrays], dt


def _batched(fname, name, x):
    """(4-D view, was_unbatched).  3-D (C, H, W) gets a leading batch axis."""
    V.check_ndim(fname, name, x, (3, 4), "(N, C, H, W) or unbatched (C, H, W)")
    if x.ndim == 3:
        return x[None], True
    return x, False


def _unbatch(y, unbatched):
    return y[0] if unbatched else y


def _threads():
    return _config.get_num_threads()


def _conv_threads(macs):
    return 1 if macs < PARALLEL_MIN_MACS else _threads()


def _pool_threads(elements):
    """Pooling is memory-bound: one thread below ~256 KiB of input."""
    return 1 if elements < (1 << 16) else _threads()


def _forward_kernel(x, weight, bias, s, p, d, OH, OW, dt):
    """Run the fused-packing forward kernel: y (N, Co, OH, OW) = conv2d(x, weight)."""
    N, C, H, W = x.shape
    Co, _, kh, kw = weight.shape
    K, P = C * kh * kw, OH * OW
    if N == 0 or Co == 0 or K == 0 or H == 0 or W == 0:
        # Nothing to read (an empty image: every tap is padding): bias only.
        y = np.zeros((N, Co, OH, OW), dtype=dt)
        if bias is not None:
            y += bias[:, None, None]
        return y
    out = np.empty((N, Co, P), dtype=dt)
    _conv.conv2d_forward(
        x, weight.reshape(Co, K), bias, out, kh, kw, s[0], s[1], p[0], p[1], d[0], d[1],
        OH, OW, _conv_threads(N * Co * K * P),
    )
    return out.reshape(N, Co, OH, OW)


def _rotated_transposed(weight):
    """(A, B, kH, kW) -> (B, A, kH, kW) rotated by 180 degrees, contiguous."""
    return np.ascontiguousarray(weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])


def _grad_input(g, weight, x_shape, s, p, d, dt):
    """dL/dx of conv2d(x, weight) for upstream g (N, Co, OH, OW).

    At stride 1 this *is* a full convolution with the 180-degree-rotated
    kernel: a forward correlation of g, padded by ``d*(k-1) - p``, with the
    rotated, channel-transposed weight, run by the forward kernel.  At
    stride s > 1 (no dilation) the padded gradient splits into s*s phases,
    each the full convolution of g with the rotated sub-kernel
    ``weight[..., a::s, b::s]`` (:func:`_grad_input_phases`).  Otherwise
    (dilation with stride, or padding beyond the effective kernel) columns
    ``Wmat^T @ g`` are scattered back with col2im.
    """
    N, Co, OH, OW = g.shape
    _, C, kh, kw = weight.shape
    H, W = x_shape[2], x_shape[3]
    pf = (d[0] * (kh - 1) - p[0], d[1] * (kw - 1) - p[1])
    if N == 0 or C == 0 or Co == 0 or H == 0 or W == 0 or OH == 0 or OW == 0:
        return np.zeros((N, C, H, W), dtype=dt)
    # The full-convolution forms multiply the implicit zero padding of g by
    # the weight: with an inf/NaN weight that is 0*inf = NaN where PyTorch
    # (summing valid taps only) gives a number, so such weights take col2im.
    finite_w = bool(np.isfinite(weight).all())
    if finite_w and s == (1, 1) and pf[0] >= 0 and pf[1] >= 0:
        return _forward_kernel(g, _rotated_transposed(weight), None, (1, 1), pf, d, H, W, dt)
    if finite_w and d == (1, 1):
        return _grad_input_phases(g, weight, H, W, s, p, dt)
    gx = np.empty((N, C, H, W), dtype=dt)
    _conv.conv_grad_input(
        g.reshape(N, Co, OH * OW), weight.reshape(Co, C * kh * kw), gx,
        kh, kw, s[0], s[1], p[0], p[1], d[0], d[1], OH, OW,
        _conv_threads(N * Co * C * kh * kw * OH * OW),
    )
    return gx


def _grad_input_phases(g, weight, H, W, s, p, dt):
    """Strided input gradient as s_h*s_w stride-1 full convolutions.

    Padded input row ``hp = u*s + a`` receives ``sum_t W[a + s*t] g[u - t]``:
    for each phase (a, b) a full convolution of ``g`` with the sub-kernel of
    taps ``a::s, b::s`` (rotated), computed by the fast forward kernel and
    written to rows ``a::s``, columns ``b::s`` of the padded gradient.
    """
    N, Co, OH, OW = g.shape
    _, C, kh, kw = weight.shape
    Hp, Wp = H + 2 * p[0], W + 2 * p[1]
    gxp = np.zeros((N, C, Hp, Wp), dtype=dt)
    for a in range(min(s[0], Hp)):
        ka = -(-(kh - a) // s[0]) if kh > a else 0
        U = -(-(Hp - a) // s[0])
        for b in range(min(s[1], Wp)):
            kb = -(-(kw - b) // s[1]) if kw > b else 0
            V = -(-(Wp - b) // s[1])
            if ka == 0 or kb == 0:
                continue  # no tap lands on this phase: its gradient is zero
            Ph, Pw = max(ka - 1, U - OH, 0), max(kb - 1, V - OW, 0)
            R, S = OH + 2 * Ph - ka + 1, OW + 2 * Pw - kb + 1
            y = _forward_kernel(
                g, _rotated_transposed(weight[:, :, a :: s[0], b :: s[1]]), None,
                (1, 1), (Ph, Pw), (1, 1), R, S, dt,
            )
            r0, c0 = Ph - ka + 1, Pw - kb + 1
            gxp[:, :, a :: s[0], b :: s[1]] = y[:, :, r0 : r0 + U, c0 : c0 + V]
    return np.ascontiguousarray(gxp[:, :, p[0] : p[0] + H, p[1] : p[1] + W])


def _effective_stride(s, out, padded, k, d):
    """With a single output along an axis the stride is never used; replace
    a huge one by the smallest that still gives one output (<= the padded
    size), so the kernels' stride-phase scratch stays bounded."""
    return tuple(
        min(s_i, n_i - (d_i * (k_i - 1) + 1) + 1) if o_i == 1 else s_i
        for s_i, o_i, n_i, k_i, d_i in zip(s, out, padded, k, d)
    )


def _needs_gather(C, H, W, s, p, itemsize):
    """True when the kernels' padded, phase-split sample would not fit in
    memory (padding near 2**31, say) although the output may be small."""
    elems = s[0] * s[1] * C * (-(-(H + 2 * p[0]) // s[0])) * (-(-(W + 2 * p[1]) // s[1]))
    return elems * itemsize > V._MEMORY_LIMIT // 4


def _gather_taps(fname, x, kh, kw, s, p, d, OH, OW):
    """im2col without padding: (N, C, OH, kH, OW, kW) values and 0/1 mask,
    from index arithmetic only (for geometries whose padding is too large to
    materialise; the windows that reach the input are few)."""
    N, C, H, W = x.shape
    V.check_alloc(fname, (N, C, OH, kh, OW, kw), x.dtype.itemsize, what="gathered input")
    ih = np.arange(OH, dtype=np.int64)[:, None] * s[0] - p[0] + np.arange(kh)[None, :] * d[0]
    iw = np.arange(OW, dtype=np.int64)[:, None] * s[1] - p[1] + np.arange(kw)[None, :] * d[1]
    vh, vw = (ih >= 0) & (ih < H), (iw >= 0) & (iw < W)
    ih, iw = np.clip(ih, 0, H - 1), np.clip(iw, 0, W - 1)
    mask = (vh[:, :, None, None] & vw[None, None, :, :]).astype(x.dtype)
    cols = x[:, :, ih[:, :, None, None], iw[None, None, :, :]] * mask
    return cols, mask, ih, iw


def _conv_gather(fname, x, weight, bias, s, p, d, OH, OW):
    kh, kw = weight.shape[2:]
    cols, _, _, _ = _gather_taps(fname, x, kh, kw, s, p, d, OH, OW)
    y = np.einsum("ncakbl,ockl->noab", cols, weight)
    if bias is not None:
        y += bias[:, None, None]
    return np.ascontiguousarray(y, dtype=x.dtype)


def _conv_backward_gather(fname, g, x, weight, s, p, d):
    N, C, H, W = x.shape
    kh, kw = weight.shape[2:]
    OH, OW = g.shape[2:]
    cols, mask, ih, iw = _gather_taps(fname, x, kh, kw, s, p, d, OH, OW)
    gw = np.einsum("noab,ncakbl->ockl", g, cols).astype(x.dtype)
    contrib = np.einsum("noab,ockl->ncakbl", g, weight) * mask
    gx = np.zeros_like(x)
    np.add.at(gx, (slice(None), slice(None), ih[:, :, None, None], iw[None, None, :, :]),
              contrib)
    return gx, gw


def _conv_params(fname, stride, padding, dilation):
    s = V.pair(fname, "stride", stride, 1)
    p = V.pair(fname, "padding", padding, 0)
    d = V.pair(fname, "dilation", dilation, 1)
    return s, p, d


def _check_weight(fname, x, weight, cin_axis, what):
    if weight.ndim != 4:
        raise ValueError(
            f"{fname}: weight must be 4-D {what}, got {weight.ndim}-D array of "
            f"shape {weight.shape}"
        )
    if x.shape[1] != weight.shape[cin_axis]:
        raise ValueError(
            f"{fname}: x.shape[1] ({x.shape[1]}) must equal weight.shape[{cin_axis}] "
            f"({weight.shape[cin_axis]}), the number of input channels"
        )
    kh, kw = weight.shape[2], weight.shape[3]
    if kh < 1 or kw < 1:
        raise ValueError(f"{fname}: weight kernel size must be >= 1, got {kh}x{kw}")
    return kh, kw


def _check_bias_flag(fname, bias):
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(
            f"{fname}: bias must be a bool (whether the layer has a bias), got {bias!r}"
        )


def _check_bias(fname, bias, n_out):
    if bias is None:
        return
    if bias.shape != (n_out,):
        raise ValueError(
            f"{fname}: bias must have shape ({n_out},) (one value per output "
            f"channel), got {bias.shape}"
        )


# --------------------------------------------------------------------------
# Convolution
# --------------------------------------------------------------------------


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        Input batch (or one unbatched sample).
    weight : array_like, shape (C_out, C_in, kH, kW)
        Filters.  Not flipped: ``y[n, o, i, j] = b[o] + sum_{c, u, v}
        w[o, c, u, v] * x_pad[n, c, i*sH + u*dH, j*sW + v*dW]``.
    bias : array_like, shape (C_out,), optional
    stride, padding, dilation : int or (int, int)
        ``stride >= 1``, ``padding >= 0`` (zeros), ``dilation >= 1`` (1: none).

    Returns
    -------
    y : ndarray, shape (N, C_out, OH, OW) (3-D when ``x`` was 3-D)
        Of the compute dtype (float32 or float64).

    Notes
    -----
    ``OH = floor((H + 2*pH - dH*(kH - 1) - 1) / sH) + 1`` and likewise ``OW``.

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
    named = [("x", x), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    arrs, dt = _prepare(fname, named, [(3, 4), (4,), (1,)], {})
    x, weight = arrs[0], arrs[1]
    bias = arrs[2] if bias is not None else None
    x, unb = _batched(fname, "x", x)
    kh, kw = _check_weight(fname, x, weight, 1, "(C_out, C_in, kH, kW)")
    _check_bias(fname, bias, weight.shape[0])
    s, p, d = _conv_params(fname, stride, padding, dilation)
    N, C, H, W = x.shape
    OH = V.conv_out_size(fname, H, kh, s[0], p[0], d[0], "height")
    OW = V.conv_out_size(fname, W, kw, s[1], p[1], d[1], "width")
    if OH == 1 or OW == 1:
        s = _effective_stride(s, (OH, OW), (H + 2 * p[0], W + 2 * p[1]), (kh, kw), d)
    Co = weight.shape[0]
    V.check_alloc(fname, (N, Co, OH, OW), dt.itemsize)
    if N and Co and _needs_gather(C, H, W, s, p, dt.itemsize):
        # Both backends: neither the kernels' nor the reference's padded
        # copy of the input fits in memory.
        return _unbatch(_conv_gather(fname, x, weight, bias, s, p, d, OH, OW), unb)
    if _numpy_backend():
        y = _ref.conv2d(x, weight, bias, stride=s, padding=p, dilation=d)
        return _unbatch(np.asarray(y, dtype=dt), unb)
    return _unbatch(_forward_kernel(x, weight, bias, s, p, d, OH, OW, dt), unb)


def conv2d_backward(grad_out, x, weight, stride=1, padding=0, dilation=1, bias=True):
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_out : array_like, shape (N, C_out, OH, OW) or (C_out, OH, OW)
        Upstream gradient ``dL/dy``.
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
        The forward input.
    weight : array_like, shape (C_out, C_in, kH, kW)
    stride, padding, dilation : int or (int, int)
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
    grad_weight : ndarray, shape (C_out, C_in, kH, kW)
        The correlation of the (padded) input with ``grad_out``.
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
    _check_bias_flag(fname, bias)
    arrs, dt = _prepare(
        fname, [("grad_out", grad_out), ("x", x), ("weight", weight)], [(3, 4), (3, 4), (4,)], {}
    )
    grad_out, x, weight = arrs
    if grad_out.ndim != x.ndim:
        raise ValueError(
            f"{fname}: grad_out ({grad_out.ndim}-D) and x ({x.ndim}-D) must both be "
            f"batched (4-D) or both unbatched (3-D)"
        )
    x, unb = _batched(fname, "x", x)
    grad_out, _ = _batched(fname, "grad_out", grad_out)
    kh, kw = _check_weight(fname, x, weight, 1, "(C_out, C_in, kH, kW)")
    s, p, d = _conv_params(fname, stride, padding, dilation)
    N, C, H, W = x.shape
    Co = weight.shape[0]
    OH = V.conv_out_size(fname, H, kh, s[0], p[0], d[0], "height")
    OW = V.conv_out_size(fname, W, kw, s[1], p[1], d[1], "width")
    if OH == 1 or OW == 1:
        s = _effective_stride(s, (OH, OW), (H + 2 * p[0], W + 2 * p[1]), (kh, kw), d)
    if grad_out.shape != (N, Co, OH, OW):
        raise ValueError(
            f"{fname}: grad_out.shape must be the conv2d output shape {(N, Co, OH, OW)} "
            f"for x {x.shape}, weight {weight.shape}, stride {s}, padding {p}, "
            f"dilation {d}; got {grad_out.shape}"
        )
    K, P = C * kh * kw, OH * OW
    if N and Co and K and _needs_gather(C, H, W, s, p, dt.itemsize):
        # Both backends: the padded input does not fit in memory (see conv2d).
        gx, gw = _conv_backward_gather(fname, grad_out, x, weight, s, p, d)
        gb = _sum_quiet(grad_out, (0, 2, 3)) if bias else None
        return _unbatch(gx, unb), gw, gb
    if _numpy_backend():
        gx, gw, gb = _ref.conv2d_backward(
            grad_out, x, weight, stride=s, padding=p, dilation=d, bias=bool(bias)
        )
        gx, gw = np.asarray(gx, dtype=dt), np.asarray(gw, dtype=dt)
        gb = np.asarray(gb, dtype=dt) if bias else None
        return _unbatch(gx, unb), gw, gb
    gb = _sum_quiet(grad_out, (0, 2, 3)) if bias else None
    if N == 0 or Co == 0 or K == 0 or H == 0 or W == 0:
        return (
            _unbatch(np.zeros(x.shape, dtype=dt), unb),
            np.zeros(weight.shape, dtype=dt),
            gb,
        )
    _, _, kc = _conv.block_sizes(dt)
    # Work units: (sample, block of kc "padded-width" positions), see _conv.
    units = N * -(-(OH * -(-(W + 2 * p[1]) // s[1])) // kc)
    tasks = max(1, min(_conv_threads(N * Co * K * P), units))
    geom = (kh, kw, s[0], s[1], p[0], p[1], d[0], d[1], OH, OW)
    _, nr, _ = _conv.block_sizes(dt)
    # Three schedules (all read taps from the prepared sample, see _conv):
    # few taps -> 4x4 dot-product blocks, nothing packed; C_out filling a
    # panel -> transposed GEMM packing only the gradient; otherwise GEMM
    # packing the im2col panel.  The first two pair junk positions' image
    # values with a zero gradient, so they need finite x (0*inf = NaN).
    finite = (K <= 64 or 4 * Co >= 3 * nr) and bool(np.isfinite(x).all())
    if finite and K <= 64:
        gwp = np.empty((tasks, Co, K), dtype=dt)
        _conv.conv2d_grad_weight_dot(x, grad_out.reshape(N, Co, P), gwp, *geom)
        gw = gwp[0] if tasks == 1 else gwp.sum(axis=0)
    elif finite:
        gwp = np.empty((tasks, K, Co), dtype=dt)
        _conv.conv2d_grad_weight_t(x, grad_out.reshape(N, Co, P), gwp, *geom)
        gw = (gwp[0] if tasks == 1 else gwp.sum(axis=0)).T
    else:
        gwp = np.empty((tasks, Co, K), dtype=dt)
        _conv.conv2d_grad_weight(x, grad_out.reshape(N, Co, P), gwp, *geom)
        gw = gwp[0] if tasks == 1 else gwp.sum(axis=0)
    gx = _grad_input(grad_out, weight, x.shape, s, p, d, dt)
    return _unbatch(gx, unb), np.ascontiguousarray(gw).reshape(weight.shape), gb


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1):
    """Transposed convolution, as ``torch.nn.functional.conv_transpose2d``.

    The adjoint of :func:`conv2d`: ``conv_transpose2d(g, w, ...)`` is the
    input gradient of ``conv2d(x, w, ...)`` for upstream gradient ``g``.

    Parameters
    ----------
    x : array_like, shape (N, C_in, H, W) or (C_in, H, W)
    weight : array_like, shape (C_in, C_out, kH, kW)
        Note the order: input channels first, as in PyTorch.
    bias : array_like, shape (C_out,), optional
    stride, padding, output_padding, dilation : int or (int, int)
        ``output_padding`` must be smaller than ``stride`` or ``dilation``.

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
    named = [("x", x), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    arrs, dt = _prepare(fname, named, [(3, 4), (4,), (1,)], {})
    x, weight = arrs[0], arrs[1]
    bias = arrs[2] if bias is not None else None
    x, unb = _batched(fname, "x", x)
    kh, kw = _check_weight(fname, x, weight, 0, "(C_in, C_out, kH, kW)")
    Co = weight.shape[1]
    _check_bias(fname, bias, Co)
    s, p, d = _conv_params(fname, stride, padding, dilation)
    op = V.pair(fname, "output_padding", output_padding, 0)
    for ax, name in enumerate(("height", "width")):
        if op[ax] >= max(s[ax], d[ax]):
            raise ValueError(
                f"{fname}: output_padding must be smaller than stride or dilation "
                f"along {name}: output_padding {op[ax]}, stride {s[ax]}, dilation {d[ax]}"
            )
    N, Ci, H, W = x.shape
    out_hw = []
    for ax, (size, k, name) in enumerate(((H, kh, "height"), (W, kw, "width"))):
        o = (size - 1) * s[ax] - 2 * p[ax] + d[ax] * (k - 1) + op[ax] + 1
        if o < 1:
            raise ValueError(
                f"{fname}: output size along {name} would be {o} (< 1): input size "
                f"{size}, kernel {k}, stride {s[ax]}, padding {p[ax]}, dilation "
                f"{d[ax]}, output_padding {op[ax]}"
            )
        out_hw.append(o)
    OH, OW = out_hw
    V.check_alloc(fname, (N, Co, OH, OW), dt.itemsize)
    if x.size == 0:  # nothing to scatter (an empty batch or image): bias only
        y = np.zeros((N, Co, OH, OW), dtype=dt)
        if bias is not None:
            y += bias[:, None, None]
        return _unbatch(y, unb)
    if _numpy_backend():
        y = _ref.conv_transpose2d(
            x, weight, bias, stride=s, padding=p, output_padding=op, dilation=d
        )
        return _unbatch(np.asarray(y, dtype=dt), unb)
    # The transposed convolution is conv2d's input gradient with weight
    # (C_in, C_out, kH, kW) read as a conv2d weight of C_in outputs.
    if op == (0, 0):
        y = _grad_input(x, weight, (N, Co, OH, OW), s, p, d, dt)
    else:
        y = np.empty((N, Co, OH, OW), dtype=dt)
        if y.size:
            _conv.conv_grad_input(
                x.reshape(N, Ci, H * W), weight.reshape(Ci, Co * kh * kw), y,
                kh, kw, s[0], s[1], p[0], p[1], d[0], d[1], H, W,
                _conv_threads(N * Ci * Co * kh * kw * H * W),
            )
    if bias is not None:
        y += bias[:, None, None]
    return _unbatch(y, unb)


def full_conv2d(x, weight):
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
    arrs, dt = _prepare(fname, [("x", x), ("weight", weight)], [(3, 4), (4,)], {})
    x, weight = arrs
    x, unb = _batched(fname, "x", x)
    kh, kw = _check_weight(fname, x, weight, 0, "(K, C, kH, kW)")
    N, K, H, W = x.shape
    C = weight.shape[1]
    out_shape = (N, C, H + kh - 1, W + kw - 1)
    V.check_alloc(fname, out_shape, dt.itemsize)
    if x.size == 0 or weight.size == 0:
        return _unbatch(np.zeros(out_shape, dtype=dt), unb)
    if _numpy_backend():
        return _unbatch(np.asarray(_ref.full_conv2d(x, weight), dtype=dt), unb)
    # Literally: pad by (kH-1, kW-1) and correlate with the rotated kernel
    # (for inf/NaN weights the scatter form, see _grad_input).
    y = _grad_input(x, weight, out_shape, (1, 1), (0, 0), (1, 1), dt)
    return _unbatch(y, unb)


# --------------------------------------------------------------------------
# Pooling
# --------------------------------------------------------------------------


def _pool_params(fname, kernel_size, stride, padding):
    k = V.pair(fname, "kernel_size", kernel_size, 1)
    s = k if stride is None else V.pair(fname, "stride", stride, 1)
    p = V.pair(fname, "padding", padding, 0)
    return k, s, p


def _pool_geometry(fname, H, W, k, s, p):
    OH = V.pool_out_size(fname, H, k[0], s[0], p[0], "height")
    OW = V.pool_out_size(fname, W, k[1], s[1], p[1], "width")
    return OH, OW


def max_pool2d(x, kernel_size, stride=None, padding=0, return_indices=False):
    """2-D max pooling with argmax, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        Implicit ``-inf`` padding (never selected), at most half the kernel.
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
    ``OH = floor((H + 2*pH - kH) / sH) + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> x = np.array([[[[1., 3., 2., 2.],
    ...                 [3., 0., 1., 2.]]]])
    >>> y, idx = F.max_pool2d(x, 2, return_indices=True)
    >>> y, idx
    (array([[[[3., 2.]]]]), array([[[[1, 2]]]]))
    """
    fname = "max_pool2d"
    if not isinstance(return_indices, (bool, np.bool_)):
        raise TypeError(f"{fname}: return_indices must be a bool, got {return_indices!r}")
    (x,), dt = _prepare(fname, [("x", x)], [(3, 4)], {"x": "(N, C, H, W) or (C, H, W)"})
    x, unb = _batched(fname, "x", x)
    k, s, p = _pool_params(fname, kernel_size, stride, padding)
    N, C, H, W = x.shape
    OH, OW = _pool_geometry(fname, H, W, k, s, p)
    V.check_alloc(fname, (N, C, OH, OW), dt.itemsize + 8)
    if H * W >= 2**31:
        raise ValueError(
            f"{fname}: an input plane must have fewer than 2**31 elements "
            f"(H*W = {H}*{W} = {H * W})"
        )
    if _numpy_backend():
        y, idx = _ref.max_pool2d(x, k, stride=s, padding=p, return_indices=True)
        y, idx = np.asarray(y, dtype=dt), np.asarray(idx, dtype=np.int64)
    else:
        y = np.empty((N, C, OH, OW), dtype=dt)
        idx = np.empty((N, C, OH, OW), dtype=np.int64)
        if y.size:
            _pool.max_pool2d_forward(
                x.reshape(N * C, H, W), y.reshape(N * C, OH, OW), idx.reshape(N * C, OH, OW),
                k[0], k[1], s[0], s[1], p[0], p[1], _pool_threads(x.size),
            )
    if return_indices:
        return _unbatch(y, unb), _unbatch(idx, unb)
    return _unbatch(y, unb)


def _input_shape(fname, input_shape, ndim):
    if not isinstance(input_shape, (tuple, list)) and not (
        isinstance(input_shape, np.ndarray) and input_shape.ndim == 1
    ):
        raise TypeError(
            f"{fname}: input_shape must be a tuple of ints, got {type(input_shape).__name__}"
        )
    shape = tuple(V.as_int(fname, f"input_shape[{i}]", v, 0) for i, v in enumerate(input_shape))
    if len(shape) != ndim:
        raise ValueError(
            f"{fname}: input_shape must have {ndim} entries to match grad_out "
            f"({ndim}-D), got {shape}"
        )
    return shape


def max_pool2d_backward(grad_out, indices, input_shape):
    """Gradient of :func:`max_pool2d`: route each gradient to its argmax.

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
    g = V.as_array(fname, "grad_out", grad_out)
    idx = V.as_array(fname, "indices", indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{fname}: indices must be an integer array, got dtype {idx.dtype}")
    (g,), dt = _prepare(fname, [("grad_out", g)], [(3, 4)], {"grad_out": "(N, C, OH, OW)"})
    shape = _input_shape(fname, input_shape, g.ndim)
    if idx.shape != g.shape:
        raise ValueError(
            f"{fname}: indices.shape {idx.shape} must equal grad_out.shape {g.shape}"
        )
    if g.shape[:-2] != shape[:-2]:
        raise ValueError(
            f"{fname}: grad_out.shape {g.shape} and input_shape {shape} must agree on "
            f"the batch and channel axes"
        )
    H, W = shape[-2:]
    V.check_alloc(fname, shape, dt.itemsize)
    if idx.size and (idx.min() < 0 or idx.max() >= H * W):
        raise ValueError(
            f"{fname}: indices must lie in [0, H*W) = [0, {H * W}) for input_shape "
            f"{shape}; got values in [{idx.min()}, {idx.max()}]"
        )
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    if _numpy_backend():
        if g.ndim == 3:  # the reference takes batched arrays
            return np.asarray(
                _ref.max_pool2d_backward(g[None], idx[None], (1,) + shape), dtype=dt
            )[0]
        return np.asarray(_ref.max_pool2d_backward(g, idx, shape), dtype=dt)
    planes = int(np.prod(shape[:-2]))
    gx = np.empty(shape, dtype=dt)
    if gx.size == 0:
        return gx
    if g.size == 0:
        gx.fill(0)
        return gx
    _pool.max_pool2d_backward(
        g.reshape(planes, -1), idx.reshape(planes, -1), gx.reshape(planes, H * W),
        _pool_threads(gx.size),
    )
    return gx


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Zero padding counts towards the average (``count_include_pad=True``): the
    divisor is always ``kH*kW``.

    Parameters
    ----------
    x : array_like, shape (N, C, H, W) or (C, H, W)
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Defaults to ``kernel_size``.
    padding : int or (int, int)
        At most half the kernel.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW)

    Notes
    -----
    ``OH = floor((H + 2*pH - kH) / sH) + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.avg_pool2d(np.arange(4.).reshape(1, 1, 2, 2), 2)
    array([[[[1.5]]]])
    """
    fname = "avg_pool2d"
    (x,), dt = _prepare(fname, [("x", x)], [(3, 4)], {"x": "(N, C, H, W) or (C, H, W)"})
    x, unb = _batched(fname, "x", x)
    k, s, p = _pool_params(fname, kernel_size, stride, padding)
    N, C, H, W = x.shape
    OH, OW = _pool_geometry(fname, H, W, k, s, p)
    V.check_alloc(fname, (N, C, OH, OW), dt.itemsize)
    if _numpy_backend():
        return _unbatch(np.asarray(_ref.avg_pool2d(x, k, stride=s, padding=p), dtype=dt), unb)
    y = np.empty((N, C, OH, OW), dtype=dt)
    if y.size:
        _pool.avg_pool2d_forward(
            x.reshape(N * C, H, W), y.reshape(N * C, OH, OW),
            k[0], k[1], s[0], s[1], p[0], p[1], _pool_threads(x.size),
        )
    return _unbatch(y, unb)


def avg_pool2d_backward(grad_out, input_shape, kernel_size, stride=None, padding=0):
    """Gradient of :func:`avg_pool2d` (``count_include_pad=True``).

    Parameters
    ----------
    grad_out : array_like, shape (N, C, OH, OW) or (C, OH, OW)
    input_shape : tuple of int
        Shape of the forward input.
    kernel_size, stride, padding
        As given to :func:`avg_pool2d`.

    Returns
    -------
    grad_x : ndarray, shape ``input_shape``
        Each upstream value spread evenly (``/ (kH*kW)``) over its window;
        overlapping windows accumulate.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnext import functional as F
    >>> F.avg_pool2d_backward(np.array([[[[4.]]]]), (1, 1, 2, 2), 2)
    array([[[[1., 1.],
             [1., 1.]]]])
    """
    fname = "avg_pool2d_backward"
    (g,), dt = _prepare(fname, [("grad_out", grad_out)], [(3, 4)], {"grad_out": "(N, C, OH, OW)"})
    shape = _input_shape(fname, input_shape, g.ndim)
    k, s, p = _pool_params(fname, kernel_size, stride, padding)
    H, W = shape[-2:]
    OH, OW = _pool_geometry(fname, H, W, k, s, p)
    want = shape[:-2] + (OH, OW)
    if g.shape != want:
        raise ValueError(
            f"{fname}: grad_out.shape must be the avg_pool2d output shape {want} for "
            f"input_shape {shape}, kernel_size {k}, stride {s}, padding {p}; got {g.shape}"
        )
    V.check_alloc(fname, shape, dt.itemsize)
    if _numpy_backend():
        if g.ndim == 3:  # the reference takes batched arrays
            gx = _ref.avg_pool2d_backward(g[None], (1,) + shape, k, stride=s, padding=p)
            return np.asarray(gx, dtype=dt)[0]
        return np.asarray(
            _ref.avg_pool2d_backward(g, shape, k, stride=s, padding=p), dtype=dt
        )
    planes = int(np.prod(shape[:-2]))
    gx = np.empty(shape, dtype=dt)
    if gx.size:
        _pool.avg_pool2d_backward(
            g.reshape(planes, OH, OW), gx.reshape(planes, H, W),
            k[0], k[1], s[0], s[1], p[0], p[1], _pool_threads(gx.size),
        )
    return gx


# --------------------------------------------------------------------------
# Dense
# --------------------------------------------------------------------------


def _check_linear(fname, x, weight):
    if x.shape[1] != weight.shape[1]:
        raise ValueError(
            f"{fname}: x.shape[1] ({x.shape[1]}) must equal weight.shape[1] "
            f"({weight.shape[1]}), the number of input features"
        )


def linear(x, weight, bias=None):
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
    named = [("x", x), ("weight", weight)] + ([("bias", bias)] if bias is not None else [])
    arrs, dt = _prepare(fname, named, [(2,), (2,), (1,)], {"x": "(N, in_features)"})
    x, weight = arrs[0], arrs[1]
    bias = arrs[2] if bias is not None else None
    _check_linear(fname, x, weight)
    _check_bias(fname, bias, weight.shape[0])
    if _numpy_backend():
        return np.asarray(_ref.linear(x, weight, bias), dtype=dt)
    n, n_out = x.shape[0], weight.shape[0]
    y = np.empty((n, n_out), dtype=dt)
    if bias is not None:
        y[...] = bias
    elif x.shape[1] == 0:
        y.fill(0)
    _conv.gemm(x, weight, y, False, True, bias is not None,
               _conv_threads(n * n_out * x.shape[1]))
    return y


def linear_backward(grad_out, x, weight, bias=True):
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
    _check_bias_flag(fname, bias)
    arrs, dt = _prepare(
        fname, [("grad_out", grad_out), ("x", x), ("weight", weight)], [(2,), (2,), (2,)],
        {"grad_out": "(N, out_features)"},
    )
    g, x, weight = arrs
    _check_linear(fname, x, weight)
    n, n_out, n_in = x.shape[0], weight.shape[0], weight.shape[1]
    if g.shape != (n, n_out):
        raise ValueError(
            f"{fname}: grad_out.shape must be (N, out_features) = {(n, n_out)} for x "
            f"{x.shape} and weight {weight.shape}; got {g.shape}"
        )
    if _numpy_backend():
        gx, gw, gb = _ref.linear_backward(g, x, weight, bias=bool(bias))
        gb = np.asarray(gb, dtype=dt) if bias else None
        return np.asarray(gx, dtype=dt), np.asarray(gw, dtype=dt), gb
    nt = _conv_threads(n * n_out * n_in)
    gx = np.empty((n, n_in), dtype=dt)
    gw = np.empty((n_out, n_in), dtype=dt)
    if n_out == 0 or n == 0:
        gx.fill(0)
        gw.fill(0)
    else:
        _conv.gemm(g, weight, gx, False, False, False, nt)
        _conv.gemm(g, x, gw, True, False, False, nt)
    gb = _sum_quiet(g, 0) if bias else None
    return gx, gw, gb


# --------------------------------------------------------------------------
# Activations and loss
# --------------------------------------------------------------------------


# Elementwise results with Python-number constants end in
# .astype(dtype, copy=False): with numpy 1.x, 0-d operands follow
# value-based casting, so a Python 1 could turn a float32 result into
# float64.


def _nan_quiet(fn):
    """Run ``fn`` without numpy's RuntimeWarnings for NaN/inf arithmetic:
    non-finite values propagate silently, as in PyTorch."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return fn(*args, **kwargs)

    return wrapper


def _sum_quiet(a, axis):
    """Bias gradient: a sum where inf + -inf = NaN propagates silently."""
    with np.errstate(invalid="ignore", over="ignore"):
        return a.sum(axis=axis)


def _elementwise(fname, named):
    arrs, _ = _prepare(fname, named, [None] * len(named), {})
    shapes = {a.shape for a in arrs}
    if len(shapes) > 1:
        desc = ", ".join(f"{n}.shape {a.shape}" for (n, _), a in zip(named, arrs))
        raise ValueError(f"{fname}: arrays must have the same shape, got {desc}")
    return arrs


def _axis(fname, axis, ndim):
    a = V.as_int(fname, "axis", axis)
    if not -ndim <= a < ndim:
        raise ValueError(f"{fname}: axis must be in [{-ndim}, {ndim}), got {a}")
    return a


def relu(x):
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
    return np.maximum(x, 0, dtype=x.dtype)


def relu_backward(grad_out, x):
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
    _pool.relu_backward(g.reshape(-1), x.reshape(-1), out.reshape(-1), _pool_threads(g.size))
    return out


def _slope(fname, negative_slope):
    if isinstance(negative_slope, (bool, np.bool_)) or not isinstance(
        negative_slope, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"{fname}: negative_slope must be a real number, got {negative_slope!r}")
    if not np.isfinite(negative_slope):
        raise ValueError(f"{fname}: negative_slope must be finite, got {negative_slope}")
    return float(negative_slope)


@_nan_quiet
def leaky_relu(x, negative_slope=0.01):
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


def leaky_relu_backward(grad_out, x, negative_slope=0.01):
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
    _pool.leaky_relu_backward(
        g.reshape(-1), x.reshape(-1), out.reshape(-1), a, _pool_threads(g.size)
    )
    return out


@_nan_quiet
def sigmoid(x):
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
def sigmoid_backward(grad_out, y):
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


def tanh(x):
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
def tanh_backward(grad_out, y):
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
def softmax(x, axis=-1):
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
    return e


@_nan_quiet
def softmax_backward(grad_out, y, axis=-1):
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
    return (y * (g - (g * y).sum(axis=axis, keepdims=True))).astype(g.dtype, copy=False)


@_nan_quiet
def log_softmax(x, axis=-1):
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
    return (z - np.log(np.exp(z).sum(axis=axis, keepdims=True))).astype(x.dtype, copy=False)


@_nan_quiet
def log_softmax_backward(grad_out, y, axis=-1):
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
    return (g - np.exp(y) * g.sum(axis=axis, keepdims=True)).astype(g.dtype, copy=False)


@_nan_quiet
def softmax_cross_entropy(logits, labels):
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
    (z,), dt = _prepare(fname, [("logits", logits)], [(2,)], {"logits": "(N, K)"})
    y = V.as_array(fname, "labels", labels)
    if y.dtype.kind not in "iu":
        raise TypeError(f"{fname}: labels must be integer class indices, got dtype {y.dtype}")
    N, K = z.shape
    if y.shape != (N,):
        raise ValueError(
            f"{fname}: labels.shape must be ({N},) to match logits {z.shape}, got {y.shape}"
        )
    if N and (y.min() < 0 or y.max() >= K):
        raise ValueError(
            f"{fname}: labels must lie in [0, {K}) for {K} classes, got values in "
            f"[{y.min()}, {y.max()}]"
        )
    if _numpy_backend():
        loss, g = _ref.softmax_cross_entropy(z, y)
        return float(loss), np.asarray(g, dtype=dt)
    if N == 0:
        return 0.0, np.zeros((0, K), dtype=dt)
    shifted = z - z.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    rows = np.arange(N)
    loss = float(np.mean(np.log(s[:, 0]) - shifted[rows, y]))
    g = e / s
    g[rows, y] -= 1
    g /= N
    return loss, g
