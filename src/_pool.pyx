"""Private pooling kernels (tier 1).

Inputs are (N, C, H, W), seen as ``N*C`` planes of (H, W); each thread
owns a contiguous range of whole planes, so backward scatter-adds never race,
and with one thread no OpenMP region is entered.  No validation here:
``cnnext.functional`` checks shapes and indices.

Windows follow PyTorch's CPU kernels: output position ``o`` starts at input
``o*s - p``; a window is clipped to the input (max pooling, and the in-bounds
part of an average) or to the input plus its padding (the divisor of an
average with ``count_include_pad``).  Adaptive windows are
``[floor(o*I/O), ceil((o+1)*I/O))``.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport calloc, free, malloc
from libc.math cimport INFINITY
from libc.string cimport memcpy, memset

cimport numpy as cnp

cnp.import_array()

cdef extern from "cnnext_pool.h" nogil:
    int cnx_pool_avx512() noexcept nogil
    void cnx_pool2x2_s(const float* r0, int64_t W, float* m, int64_t* idx, int64_t OW,
                       int64_t base) noexcept nogil
    void cnx_pool2x2_d(const double* r0, int64_t W, double* m, int64_t* idx, int64_t OW,
                       int64_t base) noexcept nogil
    void cnx_pool2x2_bwd_s(const float* g, const int64_t* idx, float* r0, int64_t W,
                           int64_t OW, int64_t base, const float* ref) noexcept nogil
    void cnx_pool2x2_bwd_d(const double* g, const int64_t* idx, double* r0, int64_t W,
                           int64_t OW, int64_t base) noexcept nogil
    void cnx_relu_row_s(float* m, int64_t n) noexcept nogil
    void cnx_conv_pool2x2_s(const float* xp, int64_t C, int64_t Hp, int64_t Wp,
                            const float* w, const float* b, int64_t Co, int64_t kh,
                            int64_t kw, int act, float* out, int64_t PH,
                            int64_t PW) noexcept nogil
    void cnx_pack_wt_s(const float* w, int64_t Co, int64_t K, float* wt) noexcept nogil
    void cnx_conv_pool2x2_cv_s(const float* xp, int64_t C, int64_t Hp, int64_t Wp,
                               const float* wt, const float* b, int64_t Co, int64_t kh,
                               int64_t kw, int act, float* out, int64_t PH,
                               int64_t PW) noexcept nogil

# The 2x2 stride-2 rows by AVX-512 intrinsics (see cnnext_pool.h).
cdef bint POOL_AVX512 = cnx_pool_avx512()


def pool_isa():
    """Name of the 2x2 max-pool row variant in use ("avx512" or "generic")."""
    return "avx512" if POOL_AVX512 else "generic"


cdef inline Py_ssize_t _first_tap(Py_ssize_t start, Py_ssize_t d) noexcept nogil:
    """The smallest tap ``i >= 0`` with ``start + i*d >= 0``."""
    return 0 if start >= 0 else (d - 1 - start) // d


cdef inline Py_ssize_t _taps_below(Py_ssize_t start, Py_ssize_t d, Py_ssize_t n) noexcept nogil:
    """The number of taps ``i`` with ``start + i*d < n`` (0 if none; ``start < n`` or not)."""
    return 0 if start >= n else (n - start + d - 1) // d


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


cdef inline floating _take(floating mo, floating v) noexcept nogil:
    """The running maximum after tap ``v``: strictly greater or NaN replaces it."""
    return v if (v > mo) | (v != v) else mo


cdef inline void _max_2x2_values(const floating* r0, Py_ssize_t W, floating* m,
                                 Py_ssize_t OW) noexcept nogil:
    """:func:`_max_2x2` without the argmax (inference): the same selects in
    the same order, so the same values, -0.0 and NaN included."""
    cdef const floating* r1 = r0 + W
    cdef Py_ssize_t ow
    for ow in range(OW):
        m[ow] = _take(_take(_take(r0[2 * ow], r0[2 * ow + 1]), r1[2 * ow]), r1[2 * ow + 1])


ctypedef struct PoolGeom:
    Py_ssize_t planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw
    bint include_pad       # average: the divisor counts the padding
    Py_ssize_t divisor     # average: a fixed divisor, or 0


cdef inline PoolGeom pool_geom(Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                               Py_ssize_t OH, Py_ssize_t OW,
                               Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                               Py_ssize_t ph, Py_ssize_t pw) noexcept nogil:
    cdef PoolGeom g
    g.planes = planes; g.H = H; g.W = W; g.OH = OH; g.OW = OW
    g.kh = kh; g.kw = kw; g.sh = sh; g.sw = sw; g.ph = ph; g.pw = pw
    g.dh = 1; g.dw = 1; g.include_pad = True; g.divisor = 0
    return g


# --------------------------------------------------------------------------
# max pooling
# --------------------------------------------------------------------------


cdef void max_planes(const floating* x, floating* out, int64_t* idx, int32_t* bbuf,
                     const PoolGeom* g, Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    """Max-pool planes [q0, q1); ``bbuf`` holds OW running argmaxes."""
    cdef Py_ssize_t H = g.H, W = g.W, OH = g.OH, OW = g.OW, kh = g.kh, kw = g.kw
    cdef Py_ssize_t sh = g.sh, sw = g.sw, ph = g.ph, pw = g.pw, dh = g.dh, dw = g.dw
    cdef Py_ssize_t q, oh, ow, hs, ws, i, i0, i1, ih, h0, j, j0, j1, off, lo, hi
    cdef floating* mrow
    cdef const floating* xq
    # The 2x2 fast path only where every window is whole (not the clipped
    # last window of ceil_mode).
    cdef bint is2x2 = (kh == 2 and kw == 2 and sh == 2 and sw == 2 and ph == 0 and pw == 0
                       and dh == 1 and dw == 1 and 2 * OH <= H and 2 * OW <= W)
    # Column taps that land inside the image for some output column (a huge
    # kernel is clipped, not iterated); increasing j keeps row-major order.
    j0 = _first_tap((OW - 1) * sw - pw, dw)
    j1 = min(kw, _taps_below(-pw, dw, W))
    if is2x2 and POOL_AVX512:
        for q in range(q0, q1):
            for oh in range(OH):
                if floating is float:
                    cnx_pool2x2_s(x + q * H * W + 2 * oh * W, W, out + (q * OH + oh) * OW,
                                  idx + (q * OH + oh) * OW if idx != NULL else NULL, OW,
                                  2 * oh * W)
                else:
                    cnx_pool2x2_d(x + q * H * W + 2 * oh * W, W, out + (q * OH + oh) * OW,
                                  idx + (q * OH + oh) * OW if idx != NULL else NULL, OW,
                                  2 * oh * W)
        return
    if is2x2 and idx == NULL:
        for q in range(q0, q1):
            for oh in range(OH):
                _max_2x2_values(x + q * H * W + 2 * oh * W, W, out + (q * OH + oh) * OW, OW)
        return
    for q in range(q0, q1):
        xq = x + q * H * W
        for oh in range(OH):
            hs = oh * sh - ph
            i0 = _first_tap(hs, dh)
            i1 = min(kh, _taps_below(hs, dh, H))
            h0 = hs + i0 * dh          # PyTorch's initial argmax row
            mrow = out + (q * OH + oh) * OW
            for ow in range(OW):
                ws = ow * sw - pw
                mrow[ow] = -INFINITY
                bbuf[ow] = <int32_t>(h0 * W + ws + _first_tap(ws, dw) * dw)
            if is2x2:
                _max_2x2(xq + 2 * oh * W, W, mrow, bbuf, OW, <int32_t>(2 * oh * W))
            else:
                for i in range(i0, i1):
                    ih = hs + i * dh
                    for j in range(j0, j1):
                        # Output columns whose tap j is inside the image.
                        off = j * dw - pw
                        lo = _first_tap(off, sw)
                        hi = min(OW, _taps_below(off, sw, W))
                        _max_row(xq + ih * W, mrow, bbuf, lo, hi, sw, off, <int32_t>(ih * W))
            if idx != NULL:
                for ow in range(OW):
                    idx[(q * OH + oh) * OW + ow] = bbuf[ow]


def max_pool2d_forward(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                       floating[:, :, :, ::1] out,       # OUT (N, C, OH, OW)
                       int64_t[:, :, :, ::1] idx,        # OUT (N, C, OH, OW) flat h*W+w, or None
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t dh, Py_ssize_t dw,
                       int n_threads):
    """First maximum in row-major window order wins; NaN propagates
    (PyTorch's ``val > maxval || isnan(val)`` rule); padding is never chosen.

    Window taps are visited in row-major order, each for a whole output row
    at once; the output row is the running max and an int32 buffer the
    running argmax (requires H*W < 2**31, checked by the caller); with
    ``idx`` None the argmax is not stored.  The output size may include a
    last, clipped window (``ceil_mode``)."""
    cdef PoolGeom g = pool_geom(x.shape[0] * x.shape[1], x.shape[2], x.shape[3], out.shape[2],
                                out.shape[3], kh, kw, sh, sw, ph, pw)
    g.dh = dh
    g.dw = dw
    if g.planes == 0 or g.OH == 0 or g.OW == 0:
        return
    max_run(&x[0, 0, 0, 0], &out[0, 0, 0, 0], &idx[0, 0, 0, 0] if idx is not None else NULL,
            &g, n_threads)


def max_pool2d_forward_new(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                           Py_ssize_t oh, Py_ssize_t ow, bint indices,
                           Py_ssize_t kh, Py_ssize_t kw,
                           Py_ssize_t sh, Py_ssize_t sw,
                           Py_ssize_t ph, Py_ssize_t pw,
                           Py_ssize_t dh, Py_ssize_t dw,
                           int n_threads):
    """``(out, idx or None)``: :func:`max_pool2d_forward` into new (N, C, oh,
    ow) arrays (allocated here, without numpy's Python-level call)."""
    cdef cnp.npy_intp dims[4]
    dims[0] = x.shape[0]
    dims[1] = x.shape[1]
    dims[2] = oh
    dims[3] = ow
    cdef int typenum = cnp.NPY_FLOAT32 if floating is float else cnp.NPY_FLOAT64
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(4, dims, typenum, 0)
    cdef cnp.ndarray idx = cnp.PyArray_EMPTY(4, dims, cnp.NPY_INT64, 0) if indices else None
    cdef PoolGeom g = pool_geom(x.shape[0] * x.shape[1], x.shape[2], x.shape[3], oh, ow,
                                kh, kw, sh, sw, ph, pw)
    g.dh = dh
    g.dw = dw
    if g.planes != 0 and g.OH != 0 and g.OW != 0:
        max_run(&x[0, 0, 0, 0], <floating*>cnp.PyArray_DATA(out),
                <int64_t*>cnp.PyArray_DATA(idx) if indices else NULL, &g, n_threads)
    return out, idx


cdef int max_run(const floating* x, floating* out, int64_t* ip, const PoolGeom* g,
                 int n_threads) except -1:
    """Max pooling of g.planes planes (see max_pool2d_forward), over threads."""
    cdef int nt = <int>max(1, min(n_threads, g.planes))
    cdef Py_ssize_t tid, per = g.OW + 16
    cdef int32_t* scratch = <int32_t*>malloc(nt * per * sizeof(int32_t))
    if scratch == NULL:
        raise MemoryError("max_pool2d: could not allocate scratch")
    with nogil:
        if nt == 1:
            max_planes(x, out, ip, scratch, g, 0, g.planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                max_planes(x, out, ip, scratch + tid * per,
                           g, g.planes * tid // nt, g.planes * (tid + 1) // nt)
    free(scratch)
    return 0


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


cdef void max_bwd_2x2_planes(const floating* gout, const int64_t* idx, floating* gx,
                             Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t q0,
                             Py_ssize_t q1, const float* ref=NULL) noexcept nogil:
    """Planes [q0, q1) of max_pool2d_backward_2x2; with ``ref`` (float: the
    pool's input), each plane's ReLU backward too."""
    cdef Py_ssize_t q, oh, W = 2 * OW, o
    for q in range(q0, q1):
        for oh in range(OH):
            o = (q * OH + oh) * OW
            if floating is float:
                cnx_pool2x2_bwd_s(gout + o, idx + o, gx + q * 4 * OH * OW + 2 * oh * W, W, OW,
                                  2 * oh * W,
                                  ref + q * 4 * OH * OW + 2 * oh * W if ref != NULL else NULL)
            else:
                cnx_pool2x2_bwd_d(gout + o, idx + o, gx + q * 4 * OH * OW + 2 * oh * W, W, OW,
                                  2 * oh * W)


def max_pool2d_backward_2x2(const floating[:, :, :, ::1] gout,   # IN  (N, C, OH, OW)
                            const int64_t[:, :, :, ::1] idx,     # IN  same, from a 2x2 pool
                            floating[:, :, :, ::1] gx,           # OUT (N, C, 2*OH, 2*OW)
                            int n_threads):
    """:func:`max_pool2d_backward` (the same values, bit for bit) for the
    indices of a 2x2, stride-2, unpadded max pool whose windows tile the
    input exactly: every input row written once, no zeroing pass (AVX-512
    rows; the scatter loop without AVX-512)."""
    cdef Py_ssize_t planes = gout.shape[0] * gout.shape[1]
    cdef Py_ssize_t OH = gout.shape[2], OW = gout.shape[3]
    cdef int nt = <int>max(1, min(n_threads, planes))
    cdef Py_ssize_t tid
    if not POOL_AVX512 or planes == 0 or OH == 0 or OW == 0:
        max_pool2d_backward(gout, idx, gx, n_threads)
        return
    with nogil:
        if nt == 1:
            max_bwd_2x2_planes(&gout[0, 0, 0, 0], &idx[0, 0, 0, 0], &gx[0, 0, 0, 0], OH, OW,
                               0, planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                max_bwd_2x2_planes(&gout[0, 0, 0, 0], &idx[0, 0, 0, 0], &gx[0, 0, 0, 0], OH,
                                   OW, planes * tid // nt, planes * (tid + 1) // nt)


def max_pool2d_backward_2x2_relu(const float[:, :, :, ::1] gout,   # IN  (N, C, OH, OW)
                                 const int64_t[:, :, :, ::1] idx,   # IN  same, from a 2x2 pool
                                 const float[:, :, :, ::1] x,       # IN  (N, C, 2*OH, 2*OW)
                                 float[:, :, :, ::1] gx,            # OUT (N, C, 2*OH, 2*OW)
                                 int n_threads):
    """:func:`max_pool2d_backward_2x2`, then the backward of a ReLU whose
    output ``x`` the pool took (``_eltwise.relu_backward(gx, x, gx)``: +0
    where x <= 0) in the same pass: the same values, bit for bit.  AVX-512
    only (``pool_isa() == "avx512"``; the caller checks)."""
    cdef Py_ssize_t planes = gout.shape[0] * gout.shape[1]
    cdef Py_ssize_t OH = gout.shape[2], OW = gout.shape[3]
    cdef int nt = <int>max(1, min(n_threads, planes))
    cdef Py_ssize_t tid
    if planes == 0 or OH == 0 or OW == 0:
        return
    with nogil:
        if nt == 1:
            max_bwd_2x2_planes(&gout[0, 0, 0, 0], &idx[0, 0, 0, 0], &gx[0, 0, 0, 0], OH, OW,
                               0, planes, &x[0, 0, 0, 0])
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                max_bwd_2x2_planes(&gout[0, 0, 0, 0], &idx[0, 0, 0, 0], &gx[0, 0, 0, 0], OH,
                                   OW, planes * tid // nt, planes * (tid + 1) // nt,
                                   &x[0, 0, 0, 0])


def max_pool2d_backward(const floating[:, :, :, ::1] gout,   # IN  (N, C, OH, OW)
                        const int64_t[:, :, :, ::1] idx,     # IN  same, all in [0, H*W)
                        floating[:, :, :, ::1] gx,           # OUT (N, C, H, W), overwritten
                        int n_threads):
    """Route each gradient to its argmax; overlapping windows accumulate.

    Any geometry (dilation, ceil_mode, adaptive windows): the indices carry it."""
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


# --------------------------------------------------------------------------
# average pooling
# --------------------------------------------------------------------------


cdef inline Py_ssize_t _avg_window(const PoolGeom* g, Py_ssize_t oh, Py_ssize_t ow,
                                   Py_ssize_t* h0, Py_ssize_t* h1, Py_ssize_t* w0,
                                   Py_ssize_t* w1) noexcept nogil:
    """The in-bounds window [h0, h1) x [w0, w1) of output (oh, ow) and its
    divisor (PyTorch's: the window clipped to the padded input, or only its
    in-bounds part, or the fixed divisor)."""
    cdef Py_ssize_t hs = oh * g.sh - g.ph, ws = ow * g.sw - g.pw
    cdef Py_ssize_t he = min(hs + g.kh, g.H + g.ph), we = min(ws + g.kw, g.W + g.pw)
    h0[0] = max(hs, 0)
    h1[0] = min(he, g.H)
    w0[0] = max(ws, 0)
    w1[0] = min(we, g.W)
    if g.divisor != 0:
        return g.divisor
    if g.include_pad:
        return (he - hs) * (we - ws)
    return (h1[0] - h0[0]) * (w1[0] - w0[0])


cdef inline bint _whole_2x2(const PoolGeom* g) noexcept nogil:
    """2x2 windows at stride 2, unpadded, all inside the input (no clipped
    last window), divided by 4: every output is one whole window."""
    return (g.kh == 2 and g.kw == 2 and g.sh == 2 and g.sw == 2 and g.ph == 0 and g.pw == 0
            and 2 * g.OH <= g.H and 2 * g.OW <= g.W and (g.divisor == 0 or g.divisor == 4))


cdef void avg_planes(const floating* x, floating* out, const PoolGeom* g,
                     Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t H = g.H, W = g.W, OH = g.OH, OW = g.OW
    cdef Py_ssize_t q, oh, ow, h0, h1, w0, w1, ih, iw, div
    cdef floating s
    cdef const floating* xq
    cdef const floating* r0
    cdef floating* o
    cdef bint whole2x2 = _whole_2x2(g)
    for q in range(q0, q1):
        xq = x + q * H * W
        for oh in range(OH):
            if whole2x2:
                # The same sums in the same order as below (from 0, so a
                # zero's sign is the same); / 4 is * 0.25, exactly.
                r0 = xq + 2 * oh * W
                o = out + (q * OH + oh) * OW
                for ow in range(OW):
                    o[ow] = ((((<floating>0 + r0[2 * ow]) + r0[2 * ow + 1]) + r0[W + 2 * ow])
                             + r0[W + 2 * ow + 1]) * <floating>0.25
                continue
            for ow in range(OW):
                div = _avg_window(g, oh, ow, &h0, &h1, &w0, &w1)
                s = 0
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        s = s + xq[ih * W + iw]
                # An empty window (never produced by a valid geometry) gives 0.
                out[(q * OH + oh) * OW + ow] = s / <floating>div if h0 < h1 and w0 < w1 else 0


def avg_pool2d_forward(const floating[:, :, :, ::1] x,    # IN  (N, C, H, W)
                       floating[:, :, :, ::1] out,        # OUT (N, C, OH, OW)
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw,
                       bint count_include_pad, Py_ssize_t divisor,
                       int n_threads):
    """Sum of the in-bounds window / divisor (``divisor`` 0: PyTorch's
    divisor for ``count_include_pad``)."""
    cdef PoolGeom g = pool_geom(x.shape[0] * x.shape[1], x.shape[2], x.shape[3], out.shape[2],
                                out.shape[3], kh, kw, sh, sw, ph, pw)
    cdef int nt = <int>max(1, min(n_threads, g.planes))
    cdef Py_ssize_t tid
    g.include_pad = count_include_pad
    g.divisor = divisor
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
    cdef Py_ssize_t q, oh, ow, h0, h1, w0, w1, ih, iw, div
    cdef floating gv
    cdef floating* gq
    cdef floating* r0
    cdef const floating* go
    cdef bint whole2x2 = _whole_2x2(g)
    for q in range(q0, q1):
        gq = gx + q * H * W
        memset(gq, 0, H * W * sizeof(floating))
        for oh in range(OH):
            if whole2x2:
                # Disjoint windows: each input gets its window's gout / 4.
                r0 = gq + 2 * oh * W
                go = gout + (q * OH + oh) * OW
                for ow in range(OW):
                    gv = <floating>0 + go[ow] * <floating>0.25  # (0 + as below)
                    r0[2 * ow] = gv
                    r0[2 * ow + 1] = gv
                    r0[W + 2 * ow] = gv
                    r0[W + 2 * ow + 1] = gv
                continue
            for ow in range(OW):
                div = _avg_window(g, oh, ow, &h0, &h1, &w0, &w1)
                gv = gout[(q * OH + oh) * OW + ow] / <floating>div
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        gq[ih * W + iw] += gv


def avg_pool2d_backward(const floating[:, :, :, ::1] gout,   # IN  (N, C, OH, OW)
                        floating[:, :, :, ::1] gx,           # OUT (N, C, H, W), overwritten
                        Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw,
                        bint count_include_pad, Py_ssize_t divisor,
                        int n_threads):
    """Each upstream value / divisor added over its in-bounds window."""
    cdef PoolGeom g = pool_geom(gx.shape[0] * gx.shape[1], gx.shape[2], gx.shape[3],
                                gout.shape[2], gout.shape[3], kh, kw, sh, sw, ph, pw)
    cdef int nt = <int>max(1, min(n_threads, g.planes))
    cdef Py_ssize_t tid
    g.include_pad = count_include_pad
    g.divisor = divisor
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


# --------------------------------------------------------------------------
# adaptive pooling
# --------------------------------------------------------------------------


cdef inline Py_ssize_t _astart(Py_ssize_t o, Py_ssize_t O, Py_ssize_t I) noexcept nogil:
    return (o * I) // O


cdef inline Py_ssize_t _aend(Py_ssize_t o, Py_ssize_t O, Py_ssize_t I) noexcept nogil:
    return ((o + 1) * I + O - 1) // O


cdef inline floating _plane_sum(const floating* p, Py_ssize_t n) noexcept nogil:
    """Sum of n contiguous values with eight independent partial sums (the
    compiler vectorises them without reassociating a single chain)."""
    cdef floating s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0
    cdef Py_ssize_t i, n8 = n - n % 8
    for i in range(0, n8, 8):
        s0 = s0 + p[i]
        s1 = s1 + p[i + 1]
        s2 = s2 + p[i + 2]
        s3 = s3 + p[i + 3]
        s4 = s4 + p[i + 4]
        s5 = s5 + p[i + 5]
        s6 = s6 + p[i + 6]
        s7 = s7 + p[i + 7]
    for i in range(n8, n):
        s0 = s0 + p[i]
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


cdef void adaptive_avg_planes(const floating* x, floating* out, const PoolGeom* g,
                              Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t H = g.H, W = g.W, OH = g.OH, OW = g.OW
    cdef Py_ssize_t q, oh, ow, h0, h1, w0, w1, ih, iw
    cdef floating s
    cdef const floating* xq
    for q in range(q0, q1):
        xq = x + q * H * W
        for oh in range(OH):
            h0 = _astart(oh, OH, H)
            h1 = _aend(oh, OH, H)
            for ow in range(OW):
                w0 = _astart(ow, OW, W)
                w1 = _aend(ow, OW, W)
                s = 0
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        s = s + xq[ih * W + iw]
                out[(q * OH + oh) * OW + ow] = s / <floating>(h1 - h0) / <floating>(w1 - w0)


def adaptive_avg_pool2d_forward(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W), H, W > 0
                                floating[:, :, :, ::1] out,       # OUT (N, C, OH, OW)
                                int n_threads):
    """Mean of each adaptive window (``sum / kh / kw`` as PyTorch)."""
    cdef PoolGeom g = pool_geom(x.shape[0] * x.shape[1], x.shape[2], x.shape[3], out.shape[2],
                                out.shape[3], 0, 0, 0, 0, 0, 0)
    cdef int nt = <int>max(1, min(n_threads, g.planes))
    cdef Py_ssize_t tid
    if g.planes == 0 or g.OH == 0 or g.OW == 0:
        return
    with nogil:
        if nt == 1:
            adaptive_avg_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], &g, 0, g.planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                adaptive_avg_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], &g,
                                    g.planes * tid // nt, g.planes * (tid + 1) // nt)


cdef void adaptive_avg_bwd_planes(const floating* gout, floating* gx, const PoolGeom* g,
                                  Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t H = g.H, W = g.W, OH = g.OH, OW = g.OW
    cdef Py_ssize_t q, oh, ow, h0, h1, w0, w1, ih, iw
    cdef floating gv
    cdef floating* gq
    for q in range(q0, q1):
        gq = gx + q * H * W
        memset(gq, 0, H * W * sizeof(floating))
        for oh in range(OH):
            h0 = _astart(oh, OH, H)
            h1 = _aend(oh, OH, H)
            for ow in range(OW):
                w0 = _astart(ow, OW, W)
                w1 = _aend(ow, OW, W)
                gv = gout[(q * OH + oh) * OW + ow] / <floating>(h1 - h0) / <floating>(w1 - w0)
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        gq[ih * W + iw] += gv


def adaptive_avg_pool2d_backward(const floating[:, :, :, ::1] gout,   # IN  (N, C, OH, OW)
                                 floating[:, :, :, ::1] gx,           # OUT (N, C, H, W), overwritten
                                 int n_threads):
    """Each upstream value / window size added over its adaptive window."""
    cdef PoolGeom g = pool_geom(gx.shape[0] * gx.shape[1], gx.shape[2], gx.shape[3],
                                gout.shape[2], gout.shape[3], 0, 0, 0, 0, 0, 0)
    cdef int nt = <int>max(1, min(n_threads, g.planes))
    cdef Py_ssize_t tid
    if g.planes == 0 or g.H == 0 or g.W == 0:
        return
    if g.OH == 0 or g.OW == 0:
        memset(&gx[0, 0, 0, 0], 0, g.planes * g.H * g.W * sizeof(floating))
        return
    with nogil:
        if nt == 1:
            adaptive_avg_bwd_planes(&gout[0, 0, 0, 0], &gx[0, 0, 0, 0], &g, 0, g.planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                adaptive_avg_bwd_planes(&gout[0, 0, 0, 0], &gx[0, 0, 0, 0], &g,
                                        g.planes * tid // nt, g.planes * (tid + 1) // nt)


cdef void global_avg_planes(const floating* x, floating* out, Py_ssize_t HW, floating H,
                            floating W, Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t q
    for q in range(q0, q1):
        out[q] = _plane_sum(x + q * HW, HW) / H / W


def global_avg_pool2d_forward(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W), H, W > 0
                              floating[:, :, :, ::1] out,       # OUT (N, C, 1, 1)
                              int n_threads):
    """The mean of each plane (adaptive average pooling to 1x1)."""
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], HW = x.shape[2] * x.shape[3]
    cdef floating H = <floating>x.shape[2], W = <floating>x.shape[3]
    cdef int nt = <int>max(1, min(n_threads, planes))
    cdef Py_ssize_t tid
    if planes == 0:
        return
    with nogil:
        if nt == 1:
            global_avg_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], HW, H, W, 0, planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                global_avg_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], HW, H, W,
                                  planes * tid // nt, planes * (tid + 1) // nt)


cdef void global_avg_bwd_planes(const floating* gout, floating* gx, Py_ssize_t HW, floating H,
                                floating W, Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t q, i
    cdef floating gv
    cdef floating* gq
    for q in range(q0, q1):
        gv = gout[q] / H / W
        gq = gx + q * HW
        for i in range(HW):
            gq[i] = gv


def global_avg_pool2d_backward(const floating[:, :, :, ::1] gout,   # IN  (N, C, 1, 1)
                               floating[:, :, :, ::1] gx,           # OUT (N, C, H, W)
                               int n_threads):
    """Each plane filled with its upstream value / (H*W)."""
    cdef Py_ssize_t planes = gx.shape[0] * gx.shape[1], HW = gx.shape[2] * gx.shape[3]
    cdef floating H = <floating>gx.shape[2], W = <floating>gx.shape[3]
    cdef int nt = <int>max(1, min(n_threads, planes))
    cdef Py_ssize_t tid
    if planes == 0 or HW == 0:
        return
    with nogil:
        if nt == 1:
            global_avg_bwd_planes(&gout[0, 0, 0, 0], &gx[0, 0, 0, 0], HW, H, W, 0, planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                global_avg_bwd_planes(&gout[0, 0, 0, 0], &gx[0, 0, 0, 0], HW, H, W,
                                      planes * tid // nt, planes * (tid + 1) // nt)


cdef void adaptive_max_planes(const floating* x, floating* out, int64_t* idx,
                              const PoolGeom* g, Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t H = g.H, W = g.W, OH = g.OH, OW = g.OW
    cdef Py_ssize_t q, oh, ow, h0, h1, w0, w1, ih, iw, o
    cdef int64_t b
    cdef floating m, v
    cdef const floating* xq
    for q in range(q0, q1):
        xq = x + q * H * W
        for oh in range(OH):
            h0 = _astart(oh, OH, H)
            h1 = _aend(oh, OH, H)
            for ow in range(OW):
                w0 = _astart(ow, OW, W)
                w1 = _aend(ow, OW, W)
                m = -INFINITY
                b = h0 * W + w0
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        v = xq[ih * W + iw]
                        if v > m or v != v:  # first maximum wins; NaN propagates
                            m = v
                            b = ih * W + iw
                o = (q * OH + oh) * OW + ow
                out[o] = m
                if idx != NULL:
                    idx[o] = b


def adaptive_max_pool2d_forward(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W), H, W > 0
                                floating[:, :, :, ::1] out,       # OUT (N, C, OH, OW)
                                int64_t[:, :, :, ::1] idx,        # OUT same, flat h*W+w, or None
                                int n_threads):
    """Maximum of each adaptive window, with max_pool2d_forward's tie and
    NaN rules; its backward is :func:`max_pool2d_backward`."""
    cdef PoolGeom g = pool_geom(x.shape[0] * x.shape[1], x.shape[2], x.shape[3], out.shape[2],
                                out.shape[3], 0, 0, 0, 0, 0, 0)
    cdef int nt = <int>max(1, min(n_threads, g.planes))
    cdef Py_ssize_t tid
    cdef int64_t* ip = NULL
    if g.planes == 0 or g.OH == 0 or g.OW == 0:
        return
    if idx is not None:
        ip = &idx[0, 0, 0, 0]
    with nogil:
        if nt == 1:
            adaptive_max_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], ip, &g, 0, g.planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                adaptive_max_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], ip, &g,
                                    g.planes * tid // nt, g.planes * (tid + 1) // nt)


# --------------------------------------------------------------------------
# max unpooling
# --------------------------------------------------------------------------


cdef void unpool_planes(const floating* x, const int64_t* idx, floating* out, Py_ssize_t P,
                        Py_ssize_t HW, Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t q, p
    cdef floating* oq
    for q in range(q0, q1):
        oq = out + q * HW
        memset(oq, 0, HW * sizeof(floating))
        for p in range(P):  # in order: of repeated indices the last one wins
            oq[idx[q * P + p]] = x[q * P + p]


def max_unpool2d_forward(const floating[:, :, :, ::1] x,    # IN  (N, C, H, W)
                         const int64_t[:, :, :, ::1] idx,  # IN  same, all in [0, OH*OW)
                         floating[:, :, :, ::1] out,       # OUT (N, C, OH, OW), overwritten
                         int n_threads):
    """Each value written to its index in a zero plane (last write wins)."""
    cdef Py_ssize_t planes = out.shape[0] * out.shape[1]
    cdef Py_ssize_t P = x.shape[2] * x.shape[3], HW = out.shape[2] * out.shape[3]
    cdef int nt = <int>max(1, min(n_threads, planes))
    cdef Py_ssize_t tid
    if planes == 0 or HW == 0:
        return
    if P == 0:
        memset(&out[0, 0, 0, 0], 0, planes * HW * sizeof(floating))
        return
    with nogil:
        if nt == 1:
            unpool_planes(&x[0, 0, 0, 0], &idx[0, 0, 0, 0], &out[0, 0, 0, 0], P, HW, 0, planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                unpool_planes(&x[0, 0, 0, 0], &idx[0, 0, 0, 0], &out[0, 0, 0, 0], P, HW,
                              planes * tid // nt, planes * (tid + 1) // nt)


cdef void gather_planes(const floating* gout, const int64_t* idx, floating* gx, Py_ssize_t P,
                        Py_ssize_t HW, Py_ssize_t q0, Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t q, p
    for q in range(q0, q1):
        for p in range(P):
            gx[q * P + p] = gout[q * HW + idx[q * P + p]]


def max_unpool2d_backward(const floating[:, :, :, ::1] gout,   # IN  (N, C, OH, OW)
                          const int64_t[:, :, :, ::1] idx,     # IN  (N, C, H, W), in [0, OH*OW)
                          floating[:, :, :, ::1] gx,           # OUT (N, C, H, W)
                          int n_threads):
    """The gradient at each index (a gather)."""
    cdef Py_ssize_t planes = gx.shape[0] * gx.shape[1]
    cdef Py_ssize_t P = gx.shape[2] * gx.shape[3], HW = gout.shape[2] * gout.shape[3]
    cdef int nt = <int>max(1, min(n_threads, planes))
    cdef Py_ssize_t tid
    if planes == 0 or P == 0:
        return
    with nogil:
        if nt == 1:
            gather_planes(&gout[0, 0, 0, 0], &idx[0, 0, 0, 0], &gx[0, 0, 0, 0], P, HW, 0, planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                gather_planes(&gout[0, 0, 0, 0], &idx[0, 0, 0, 0], &gx[0, 0, 0, 0], P, HW,
                              planes * tid // nt, planes * (tid + 1) // nt)


cdef void max_relu_planes(const float* x, float* out, Py_ssize_t H, Py_ssize_t W,
                          Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t q0,
                          Py_ssize_t q1) noexcept nogil:
    cdef Py_ssize_t q, oh
    for q in range(q0, q1):
        for oh in range(OH):
            cnx_pool2x2_s(x + q * H * W + 2 * oh * W, W, out + (q * OH + oh) * OW, NULL, OW, 0)
        cnx_relu_row_s(out + q * OH * OW, OH * OW)


def max_pool2x2_relu(const float[:, :, :, ::1] x,   # IN  (N, C, H, W)
                     float[:, :, :, ::1] out,       # OUT (N, C, OH, OW), 2*OH <= H, 2*OW <= W
                     int n_threads):
    """out = ReLU(2x2 stride-2 max pool of x), no padding, no indices: the
    values of ``max_pool2d_forward`` then ``_eltwise.relu`` on its output
    (ReLU(max) = max(ReLU)), each plane's ReLU while it is in cache.
    AVX-512 only (``pool_isa() == "avx512"``; the caller checks)."""
    cdef Py_ssize_t planes = x.shape[0] * x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t OH = out.shape[2], OW = out.shape[3], tid
    cdef int nt = <int>max(1, min(n_threads, planes))
    if planes == 0 or OH == 0 or OW == 0:
        return
    with nogil:
        if nt == 1:
            max_relu_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], H, W, OH, OW, 0, planes)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                max_relu_planes(&x[0, 0, 0, 0], &out[0, 0, 0, 0], H, W, OH, OW,
                                planes * tid // nt, planes * (tid + 1) // nt)


# ---- a few-tap convolution, its ReLU and a 2x2 max pool in one pass ----------


cdef void conv_pool_samples(const float* x, const float* w, const float* b, float* out,
                            float* xp, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t Co, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t ph,
                            Py_ssize_t pw, int act, Py_ssize_t PH, Py_ssize_t PW,
                            Py_ssize_t n0, Py_ssize_t n1, const float* wt) noexcept nogil:
    """Samples [n0, n1): each copied into the padded buffer ``xp`` (its
    border zeros, written by the caller), then cnx_conv_pool2x2_s, or with
    the packed weight ``wt`` (not NULL) cnx_conv_pool2x2_cv_s."""
    cdef Py_ssize_t n, c, h, Hp = H + 2 * ph, Wp = W + 2 * pw
    for n in range(n0, n1):
        for c in range(C):
            for h in range(H):
                memcpy(xp + (c * Hp + h + ph) * Wp + pw, x + ((n * C + c) * H + h) * W,
                       W * sizeof(float))
        if wt != NULL:
            cnx_conv_pool2x2_cv_s(xp, C, Hp, Wp, wt, b, Co, kh, kw, act,
                                  out + n * Co * PH * PW, PH, PW)
        else:
            cnx_conv_pool2x2_s(xp, C, Hp, Wp, w, b, Co, kh, kw, act, out + n * Co * PH * PW,
                               PH, PW)


def conv_max_pool2x2(const float[:, :, :, ::1] x,   # IN  (N, C, H, W)
                     const float[:, :, :, ::1] weight,   # IN  (Co, C, kh, kw)
                     const float[::1] bias,   # IN  (Co,) or None
                     float[:, :, :, ::1] out,   # OUT (N, Co, PH, PW)
                     Py_ssize_t ph, Py_ssize_t pw, int act, int n_threads,
                     bint channel_lanes=False):
    """out = 2x2 stride-2 max pool of act(conv2d(x, weight, bias, stride 1,
    padding (ph, pw), no dilation)), ``act`` 0 (none) or 1 (ReLU), with
    ``PH <= (H + 2ph - kh + 1) // 2`` and ``PW`` likewise: the numbers of
    ``_conv.conv2d_forward`` with that epilogue followed by
    ``max_pool2d_forward``, for a convolution of few taps (the first layer
    of an image network), each sample's convolution rows pooled while in
    registers.  AVX-512 only (``pool_isa() == "avx512"``; the caller
    checks); samples split over the threads.  ``channel_lanes``: the kernel
    with 16 output channels in the vector lanes (maps narrower than the row
    kernel's 32 columns, more taps), the same numbers."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Co = weight.shape[0], kh = weight.shape[2], kw = weight.shape[3]
    cdef Py_ssize_t PH = out.shape[2], PW = out.shape[3]
    cdef Py_ssize_t per = C * (H + 2 * ph) * (W + 2 * pw) + 32 + kw, tid
    cdef Py_ssize_t K = C * kh * kw, packed = K * ((Co + 15) // 16 * 16) if channel_lanes else 0
    cdef int nt = <int>max(1, min(n_threads, N))
    if N == 0 or Co == 0 or PH == 0 or PW == 0:
        return
    cdef float* scratch = <float*>calloc(nt * per + packed, sizeof(float))
    if scratch == NULL:
        raise MemoryError("conv_max_pool2x2: could not allocate scratch")
    cdef const float* bp = &bias[0] if bias is not None else NULL
    cdef float* wt = scratch + nt * per if channel_lanes else NULL
    with nogil:
        if wt != NULL:
            cnx_pack_wt_s(&weight[0, 0, 0, 0], Co, K, wt)
        if nt == 1:
            conv_pool_samples(&x[0, 0, 0, 0], &weight[0, 0, 0, 0], bp, &out[0, 0, 0, 0],
                              scratch, C, H, W, Co, kh, kw, ph, pw, act, PH, PW, 0, N, wt)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                conv_pool_samples(&x[0, 0, 0, 0], &weight[0, 0, 0, 0], bp, &out[0, 0, 0, 0],
                                  scratch + tid * per, C, H, W, Co, kh, kw, ph, pw, act, PH,
                                  PW, N * tid // nt, N * (tid + 1) // nt, wt)
    free(scratch)
