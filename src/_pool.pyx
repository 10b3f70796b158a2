"""Private pooling kernels (tier 1).

Inputs are viewed as ``(planes, H, W)`` with ``planes = N*C``; one OpenMP
thread owns a whole plane at a time, so backward scatter-adds never race.
No validation here: ``cnnext.functional`` checks shapes and indices.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.math cimport INFINITY


cdef inline void _max_row(const floating* row, floating* m, int32_t* b,
                          Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t sw, Py_ssize_t off,
                          int32_t base) noexcept nogil:
    """One window position (row, column offset) for output columns [lo, hi).

    Branch-free and free of cross-iteration dependencies, so the compiler
    vectorises it (the int32 argmax has the width of a float lane)."""
    cdef Py_ssize_t ow, iw
    cdef floating v, mo
    cdef bint take
    for ow in range(lo, hi):
        iw = ow * sw + off
        v = row[iw]
        mo = m[ow]
        # Strictly greater (the first maximum wins) or NaN (propagates).
        take = (v > mo) | (v != v)
        m[ow] = v if take else mo
        b[ow] = <int32_t>(base + iw) if take else b[ow]


cdef inline void _max_2x2(const floating* r0, Py_ssize_t W, floating* m, int32_t* b,
                          Py_ssize_t OW, int32_t base) noexcept nogil:
    """The common 2x2, stride-2, unpadded window as straight-line selects
    over a whole output row (vectorised by the compiler)."""
    cdef const floating* r1 = r0 + W
    cdef Py_ssize_t ow
    cdef floating v, mo
    cdef int32_t bo
    cdef bint take
    for ow in range(OW):
        mo = r0[2 * ow]
        bo = base + <int32_t>(2 * ow)
        # -inf start: the first element is taken unless ... it is taken anyway
        # (v > -inf or NaN), except -inf itself, which keeps the same index.
        v = r0[2 * ow + 1]
        take = (v > mo) | (v != v)
        bo = bo + 1 if take else bo
        mo = v if take else mo
        v = r1[2 * ow]
        take = (v > mo) | (v != v)
        bo = base + <int32_t>(W + 2 * ow) if take else bo
        mo = v if take else mo
        v = r1[2 * ow + 1]
        take = (v > mo) | (v != v)
        bo = base + <int32_t>(W + 2 * ow + 1) if take else bo
        mo = v if take else mo
        m[ow] = mo
        b[ow] = bo


def max_pool2d_forward(const floating[:, :, ::1] x,   # IN  (planes, H, W)
                       floating[:, :, ::1] out,       # OUT (planes, OH, OW)
                       int64_t[:, :, ::1] idx,        # OUT (planes, OH, OW) flat h*W+w
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw,
                       int n_threads):
    """First maximum in row-major window order wins; NaN propagates
    (PyTorch's ``val > maxval || isnan(val)`` rule); padding is never chosen.

    Window positions are visited in row-major order, each for a whole output
    row at once; the output row is the running max and an int32 buffer the
    running argmax (requires H*W < 2**31, checked by the caller)."""
    cdef Py_ssize_t planes = x.shape[0], H = x.shape[1], W = x.shape[2]
    cdef Py_ssize_t OH = out.shape[1], OW = out.shape[2]
    cdef int nt = <int>max(1, min(n_threads, planes))
    cdef Py_ssize_t tid, q, q0, q1, oh, ow, h0, h1, ih, j, lo, hi
    cdef floating* mrow
    cdef int32_t* bbuf
    cdef int32_t* scratch = <int32_t*>malloc(nt * (OW + 16) * sizeof(int32_t))
    if scratch == NULL:
        raise MemoryError("max_pool2d: could not allocate scratch")
    with nogil:
        for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
            bbuf = scratch + tid * (OW + 16)
            q0 = planes * tid // nt
            q1 = planes * (tid + 1) // nt
            for q in range(q0, q1):
                for oh in range(OH):
                    h0 = oh * sh - ph
                    h1 = min(h0 + kh, H)
                    h0 = max(h0, 0)
                    mrow = &out[q, oh, 0]
                    for ow in range(OW):
                        mrow[ow] = -INFINITY
                        bbuf[ow] = <int32_t>(h0 * W + max(ow * sw - pw, 0))
                    if kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0:
                        _max_2x2(&x[q, 2 * oh, 0], W, mrow, bbuf, OW, <int32_t>(2 * oh * W))
                    else:
                      for ih in range(h0, h1):
                        # Only column offsets that land inside the image for
                        # some output column (a huge kernel is clipped, not
                        # iterated); increasing j keeps row-major order.
                        for j in range(max(0, pw - (OW - 1) * sw), min(kw, W + pw)):
                            # Output columns whose window has column offset j
                            # inside the image.
                            lo = max(0, (pw - j + sw - 1) // sw)
                            hi = min(OW, (W + pw - j + sw - 1) // sw)
                            _max_row(&x[q, ih, 0], mrow, bbuf, lo, hi, sw, j - pw,
                                     <int32_t>(ih * W))
                    for ow in range(OW):
                        idx[q, oh, ow] = bbuf[ow]
        free(scratch)


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


cdef extern from *:
    """
    /* Plain loops the C compiler vectorises: both operands are loaded
     * unconditionally, so the select needs no branch (a conditional load
     * blocks if-conversion: measured 20x slower). */
    #define CNX_RELU_BWD(NAME, T)                                              \
        static void NAME(Py_ssize_t n, const T *g, const T *x, T *o) {         \
            Py_ssize_t i;                                                      \
            for (i = 0; i < n; i++) {                                          \
                T gv = g[i], xv = x[i];                                        \
                o[i] = xv <= (T)0 ? (T)0 : gv;                                 \
            }                                                                  \
        }
    #define CNX_LRELU_BWD(NAME, T)                                             \
        static void NAME(Py_ssize_t n, const T *g, const T *x, T *o, T a) {    \
            Py_ssize_t i;                                                      \
            for (i = 0; i < n; i++) {                                          \
                T gv = g[i], xv = x[i], ag = a * gv;                           \
                o[i] = xv > (T)0 ? gv : ag;                                    \
            }                                                                  \
        }
    CNX_RELU_BWD(cnx_relu_bwd_s, float)
    CNX_RELU_BWD(cnx_relu_bwd_d, double)
    CNX_LRELU_BWD(cnx_lrelu_bwd_s, float)
    CNX_LRELU_BWD(cnx_lrelu_bwd_d, double)
    """
    void cnx_relu_bwd_s(Py_ssize_t n, const float* g, const float* x, float* o) noexcept nogil
    void cnx_relu_bwd_d(Py_ssize_t n, const double* g, const double* x, double* o) noexcept nogil
    void cnx_lrelu_bwd_s(Py_ssize_t n, const float* g, const float* x, float* o, float a) noexcept nogil
    void cnx_lrelu_bwd_d(Py_ssize_t n, const double* g, const double* x, double* o, double a) noexcept nogil


cdef Py_ssize_t ELT_CHUNK = 1 << 14


def relu_backward(const floating[::1] g,      # IN  upstream gradient (flat)
                  const floating[::1] x,      # IN  forward input (flat)
                  floating[::1] out,          # OUT
                  int n_threads):
    """out = 0 where x <= 0, else g (a NaN x passes g, as PyTorch's
    threshold_backward)."""
    cdef Py_ssize_t n = g.shape[0], c, lo, m
    if n == 0:
        return
    with nogil:
        for c in prange(cdiv_(n, ELT_CHUNK), schedule="static", num_threads=n_threads):
            lo = c * ELT_CHUNK
            m = min(ELT_CHUNK, n - lo)
            if floating is float:
                cnx_relu_bwd_s(m, &g[lo], &x[lo], &out[lo])
            else:
                cnx_relu_bwd_d(m, &g[lo], &x[lo], &out[lo])


def leaky_relu_backward(const floating[::1] g,
                        const floating[::1] x,
                        floating[::1] out,
                        double slope,
                        int n_threads):
    """out = g where x > 0, else slope * g (PyTorch's rule)."""
    cdef Py_ssize_t n = g.shape[0], c, lo, m
    cdef floating a = <floating>slope
    if n == 0:
        return
    with nogil:
        for c in prange(cdiv_(n, ELT_CHUNK), schedule="static", num_threads=n_threads):
            lo = c * ELT_CHUNK
            m = min(ELT_CHUNK, n - lo)
            if floating is float:
                cnx_lrelu_bwd_s(m, &g[lo], &x[lo], &out[lo], a)
            else:
                cnx_lrelu_bwd_d(m, &g[lo], &x[lo], &out[lo], a)


cdef inline Py_ssize_t cdiv_(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b
