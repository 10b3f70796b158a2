"""Private pooling kernels (tier 1).

Inputs are viewed as ``(planes, H, W)`` with ``planes = N*C``; one OpenMP
thread owns a whole plane at a time, so backward scatter-adds never race.
No validation here: ``cnnext.functional`` checks shapes and indices.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.math cimport INFINITY, isnan


def max_pool2d_forward(const floating[:, :, ::1] x,   # IN  (planes, H, W)
                       floating[:, :, ::1] out,       # OUT (planes, OH, OW)
                       int64_t[:, :, ::1] idx,        # OUT (planes, OH, OW) flat h*W+w
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw,
                       int n_threads):
    """First maximum in row-major window order wins; NaN propagates
    (PyTorch's ``val > maxval || isnan(val)`` rule); padding is never chosen."""
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef Py_ssize_t q, oh, ow, h0, h1, w0, w1, ih, iw, best
    cdef floating v, m
    with nogil:
        for q in prange(planes, schedule="static", num_threads=n_threads):
            for oh in range(OH):
                h0 = oh * sh - ph
                h1 = min(h0 + kh, H)
                h0 = max(h0, 0)
                for ow in range(OW):
                    w0 = ow * sw - pw
                    w1 = min(w0 + kw, W)
                    w0 = max(w0, 0)
                    m = -INFINITY
                    best = h0 * W + w0
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            v = x[q, ih, iw]
                            if v > m or isnan(v):
                                m = v
                                best = ih * W + iw
                    out[q, oh, ow] = m
                    idx[q, oh, ow] = best


def max_pool2d_backward(const floating[:, ::1] gout,   # IN  (planes, OH*OW)
                        const int64_t[:, ::1] idx,     # IN  (planes, OH*OW), all in [0, H*W)
                        floating[:, ::1] gx,           # OUT (planes, H*W), overwritten
                        int n_threads):
    """Route each gradient to its argmax; overlapping windows accumulate."""
    cdef Py_ssize_t planes = gout.shape[0], P = gout.shape[1], HW = gx.shape[1]
    cdef Py_ssize_t q, p
    with nogil:
        for q in prange(planes, schedule="static", num_threads=n_threads):
            for p in range(HW):
                gx[q, p] = 0
            for p in range(P):
                gx[q, idx[q, p]] += gout[q, p]


def avg_pool2d_forward(const floating[:, :, ::1] x,    # IN  (planes, H, W)
                       floating[:, :, ::1] out,        # OUT (planes, OH, OW)
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw,
                       int n_threads):
    """count_include_pad=True: the divisor is always kh*kw."""
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef Py_ssize_t q, oh, ow, h0, h1, w0, w1, ih, iw
    cdef floating s
    cdef floating inv = <floating>1 / <floating>(kh * kw)
    with nogil:
        for q in prange(planes, schedule="static", num_threads=n_threads):
            for oh in range(OH):
                h0 = oh * sh - ph
                h1 = min(h0 + kh, H)
                h0 = max(h0, 0)
                for ow in range(OW):
                    w0 = ow * sw - pw
                    w1 = min(w0 + kw, W)
                    w0 = max(w0, 0)
                    s = 0
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            s = s + x[q, ih, iw]
                    out[q, oh, ow] = s * inv


def avg_pool2d_backward(const floating[:, :, ::1] gout,   # IN  (planes, OH, OW)
                        floating[:, :, ::1] gx,           # OUT (planes, H, W), overwritten
                        Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw,
                        int n_threads):
    cdef Py_ssize_t planes = gx.shape[0], H = gx.shape[1], W = gx.shape[2]
    cdef Py_ssize_t OH = gout.shape[1], OW = gout.shape[2]
    cdef Py_ssize_t q, oh, ow, h0, h1, w0, w1, ih, iw
    cdef floating g
    cdef floating inv = <floating>1 / <floating>(kh * kw)
    with nogil:
        for q in prange(planes, schedule="static", num_threads=n_threads):
            for ih in range(H):
                for iw in range(W):
                    gx[q, ih, iw] = 0
            for oh in range(OH):
                h0 = oh * sh - ph
                h1 = min(h0 + kh, H)
                h0 = max(h0, 0)
                for ow in range(OW):
                    w0 = ow * sw - pw
                    w1 = min(w0 + kw, W)
                    w0 = max(w0, 0)
                    g = gout[q, oh, ow] * inv
                    for ih in range(h0, h1):
                        for iw in range(w0, w1):
                            gx[q, ih, iw] += g
