"""Private pooling kernels (tier 1).

Inputs are (N, C, H, W), seen as ``N*C`` planes of (H, W); each thread
owns a contiguous range of whole planes, so backward scatter-adds never race,
and with one thread no OpenMP region is entered.  No validation here:
``cnnext.functional`` checks shapes and indices.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport free, malloc
from libc.math cimport INFINITY
from libc.string cimport memset


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


ctypedef struct PoolGeom:
    Py_ssize_t planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw


cdef inline PoolGeom pool_geom(Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t OH, Py_ssize_t OW,
                               Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                               Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    cdef PoolGeom g
    g.planes = planes; g.H = H; g.W = W; g.OH = OH; g.OW = OW
    g.kh = kh; g.kw = kw; g.sh = sh; g.sw = sw; g.ph = ph; g.pw = pw
    return g


cdef void max_planes(const floating* x, floating* out, int64_t* idx, int32_t* bbuf,
                     const PoolGeom* g, Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    """Max-pool planes [q0, q1); ``bbuf`` holds OW running argmaxes."""
    cdef Py_ssize_t H = g.H, W = g.W, OH = g.OH, OW = g.OW, kh = g.kh, kw = g.kw
    cdef Py_ssize_t sh = g.sh, sw = g.sw, ph = g.ph, pw = g.pw
    cdef Py_ssize_t q, oh, ow, h0, h1, ih, j, lo, hi
    cdef floating* mrow
    cdef const floating* xq
    cdef bint is2x2 = kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
    for q in range(q0, q1):
        xq = x + q * H * W
        for oh in range(OH):
            h0 = oh * sh - ph
            h1 = min(h0 + kh, H)
            h0 = max(h0, 0)
            mrow = out + (q * OH + oh) * OW
            for ow in range(OW):
                mrow[ow] = -INFINITY
                bbuf[ow] = <int32_t>(h0 * W + max(ow * sw - pw, 0))
            if is2x2:
                _max_2x2(xq + 2 * oh * W, W, mrow, bbuf, OW, <int32_t>(2 * oh * W))
            else:
                for ih in range(h0, h1):
                    # Only column offsets that land inside the image for some
                    # output column (a huge kernel is clipped, not iterated);
                    # increasing j keeps row-major order.
                    for j in range(max(0, pw - (OW - 1) * sw), min(kw, W + pw)):
                        # Output columns whose window has column offset j
                        # inside the image.
                        lo = max(0, (pw - j + sw - 1) // sw)
                        hi = min(OW, (W + pw - j + sw - 1) // sw)
                        _max_row(xq + ih * W, mrow, bbuf, lo, hi, sw, j - pw,
                                 <int32_t>(ih * W))
            if idx != NULL:
                for ow in range(OW):
                    idx[(q * OH + oh) * OW + ow] = bbuf[ow]


def max_pool2d_forward(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                       floating[:, :, :, ::1] out,       # OUT (N, C, OH, OW)
                       int64_t[:, :, :, ::1] idx,        # OUT (N, C, OH, OW) flat h*W+w, or None
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw,
                       int n_threads):
    """First maximum in row-major window order wins; NaN propagates
    (PyTorch's ``val > maxval || isnan(val)`` rule); padding is never chosen.

    Window positions are visited in row-major order, each for a whole output
    row at once; the output row is the running max and an int32 buffer the
    running argmax (requires H*W < 2**31, checked by the caller); with
    ``idx`` None the argmax is not stored."""
    cdef PoolGeom g = pool_geom(x.shape[0] * x.shape[1], x.shape[2], x.shape[3], out.shape[2],
                                out.shape[3], kh, kw, sh, sw, ph, pw)
    cdef int nt = <int>max(1, min(n_threads, g.planes))
    cdef Py_ssize_t tid, per = g.OW + 16
    cdef int32_t* scratch
    cdef int64_t* ip = NULL
    if g.planes == 0 or g.OH == 0 or g.OW == 0:
        return
    if idx is not None:
        ip = &idx[0, 0, 0, 0]
    scratch = <int32_t*>malloc(nt * per * sizeof(int32_t))
    if scratch == NULL:
        raise MemoryError("max_pool2d: could not allocate scratch")
    with nogil:
        if nt == 1:
            max_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], ip, scratch, &g, 0, g.planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                max_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], ip, scratch + tid * per,
                           &g, g.planes * tid // nt, g.planes * (tid + 1) // nt)
    free(scratch)


cdef void max_bwd_planes(const floating* gout, const int64_t* idx, floating* gx,
                         Py_ssize_t P, Py_ssize_t HW, Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t q, p
    cdef floating* gq
    cdef const floating* goq
    cdef const int64_t* iq
    for q in range(q0, q1):
        gq = gx + q * HW
        goq = gout + q * P
        iq = idx + q * P
        memset(gq, 0, HW * sizeof(floating))
        for p in range(P):
            gq[iq[p]] += goq[p]


def max_pool2d_backward(const floating[:, :, :, ::1] gout,   # IN  (N, C, OH, OW)
                        const int64_t[:, :, :, ::1] idx,     # IN  same, all in [0, H*W)
                        floating[:, :, :, ::1] gx,           # OUT (N, C, H, W), overwritten
                        int n_threads):
    """Route each gradient to its argmax; overlapping windows accumulate."""
    cdef Py_ssize_t planes = gout.shape[0] * gout.shape[1]
    cdef Py_ssize_t P = gout.shape[2] * gout.shape[3], HW = gx.shape[2] * gx.shape[3]
    cdef int nt = <int>max(1, min(n_threads, planes))
    cdef Py_ssize_t tid
    if planes == 0 or HW == 0:
        return
    if P == 0:
        memset(&gx[0, 0, 0, 0], 0, planes * HW * sizeof(floating))
        return
    with nogil:
        if nt == 1:
            max_bwd_planes(&gout[0, 0, 0, 0], &idx[0, 0, 0, 0], &gx[0, 0, 0, 0], P, HW, 0,
                           planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                max_bwd_planes(&gout[0, 0, 0, 0], &idx[0, 0, 0, 0], &gx[0, 0, 0, 0], P, HW,
                               planes * tid // nt, planes * (tid + 1) // nt)


cdef void avg_planes(const floating* x, floating* out, const PoolGeom* g,
                     Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t H = g.H, W = g.W, OH = g.OH, OW = g.OW
    cdef Py_ssize_t q, oh, ow, h0, h1, w0, w1, ih, iw
    cdef floating s
    cdef floating inv = <floating>1 / <floating>(g.kh * g.kw)
    cdef const floating* xq
    for q in range(q0, q1):
        xq = x + q * H * W
        for oh in range(OH):
            h0 = oh * g.sh - g.ph
            h1 = min(h0 + g.kh, H)
            h0 = max(h0, 0)
            for ow in range(OW):
                w0 = ow * g.sw - g.pw
                w1 = min(w0 + g.kw, W)
                w0 = max(w0, 0)
                s = 0
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        s = s + xq[ih * W + iw]
                out[(q * OH + oh) * OW + ow] = s * inv


def avg_pool2d_forward(const floating[:, :, :, ::1] x,    # IN  (N, C, H, W)
                       floating[:, :, :, ::1] out,        # OUT (N, C, OH, OW)
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw,
                       int n_threads):
    """count_include_pad=True: the divisor is always kh*kw."""
    cdef PoolGeom g = pool_geom(x.shape[0] * x.shape[1], x.shape[2], x.shape[3], out.shape[2],
                                out.shape[3], kh, kw, sh, sw, ph, pw)
    cdef int nt = <int>max(1, min(n_threads, g.planes))
    cdef Py_ssize_t tid
    if g.planes == 0 or g.OH == 0 or g.OW == 0:
        return
    with nogil:
        if nt == 1:
            avg_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], &g, 0, g.planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                avg_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], &g,
                           g.planes * tid // nt, g.planes * (tid + 1) // nt)


cdef void avg_bwd_planes(const floating* gout, floating* gx, const PoolGeom* g,
                         Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t H = g.H, W = g.W, OH = g.OH, OW = g.OW
    cdef Py_ssize_t q, oh, ow, h0, h1, w0, w1, ih, iw
    cdef floating gv
    cdef floating inv = <floating>1 / <floating>(g.kh * g.kw)
    cdef floating* gq
    for q in range(q0, q1):
        gq = gx + q * H * W
        memset(gq, 0, H * W * sizeof(floating))
        for oh in range(OH):
            h0 = oh * g.sh - g.ph
            h1 = min(h0 + g.kh, H)
            h0 = max(h0, 0)
            for ow in range(OW):
                w0 = ow * g.sw - g.pw
                w1 = min(w0 + g.kw, W)
                w0 = max(w0, 0)
                gv = gout[(q * OH + oh) * OW + ow] * inv
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        gq[ih * W + iw] += gv


def avg_pool2d_backward(const floating[:, :, :, ::1] gout,   # IN  (N, C, OH, OW)
                        floating[:, :, :, ::1] gx,           # OUT (N, C, H, W), overwritten
                        Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw,
                        int n_threads):
    cdef PoolGeom g = pool_geom(gx.shape[0] * gx.shape[1], gx.shape[2], gx.shape[3],
                                gout.shape[2], gout.shape[3], kh, kw, sh, sw, ph, pw)
    cdef int nt = <int>max(1, min(n_threads, g.planes))
    cdef Py_ssize_t tid
    if g.planes == 0 or g.H == 0 or g.W == 0:
        return
    if g.OH == 0 or g.OW == 0:
        memset(&gx[0, 0, 0, 0], 0, g.planes * g.H * g.W * sizeof(floating))
        return
    with nogil:
        if nt == 1:
            avg_bwd_planes(&gout[0, 0, 0, 0], &gx[0, 0, 0, 0], &g, 0, g.planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                avg_bwd_planes(&gout[0, 0, 0, 0], &gx[0, 0, 0, 0], &g,
                               g.planes * tid // nt, g.planes * (tid + 1) // nt)


