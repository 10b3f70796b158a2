"""Private convolution kernels (tier 1).

Stateless, GIL-free kernels over typed memoryviews.  They assume valid,
C-contiguous, correctly typed input and never validate: ``cnnext.functional``
is the only caller and does all checking.

Design (BLIS-style GEMM with the im2col step fused into packing):

* The arithmetic is done by register-blocked micro-kernels
  (``src/cnnext_ukernel.h``: AVX-512, AVX2+FMA or portable C, chosen at run
  time) on packed panels: A panels of MR rows, B panels of NR columns.
* **forward**: ``out[n] = Wmat(Cout, K) @ col_n(K, P)``.  The weight is packed
  once per call; the im2col matrix is never materialised: each thread packs
  the B panel for NR output positions straight from the image
  (``pack_conv``), contiguous row segments at a time.
* **weight gradient**: ``dW = sum_n g_n(Cout, P) @ col_n(K, P)^T`` -- the
  correlation of the input with the output gradient.  The reduction over
  (sample, position block) units is split statically over the threads, each
  accumulating into its own partial ``dW`` (summed by the caller in a fixed
  order, so a given thread count gives bitwise-reproducible results).
* **input gradient** (any stride), ``conv_transpose2d``: per sample,
  ``col = Wmat^T @ g_n`` one position block at a time, then ``col2im``
  scatter-adds each column into the window it came from; one thread owns a
  sample.  (At stride 1, ``cnnext.functional`` instead runs the forward
  kernel as a full convolution with the 180-degree-rotated kernel.)

All scratch is allocated per call (never shared between calls) and is
bounded by the block sizes, independent of the batch size.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset

import numpy as np

cdef extern from "cnnext_ukernel.h" nogil:
    ctypedef void (*cnx_ukr_s)(int64_t kc, const float *a, const int64_t *aoff,
                               const float *b, const int64_t *boff, float *c,
                               int64_t ldc, int mr, int nr, int accumulate,
                               const float *bias) noexcept nogil
    ctypedef void (*cnx_ukr_d)(int64_t kc, const double *a, const int64_t *aoff,
                               const double *b, const int64_t *boff, double *c,
                               int64_t ldc, int mr, int nr, int accumulate,
                               const double *bias) noexcept nogil
    ctypedef void (*cnx_dot_s)(int64_t n, const float *const *a, int ma,
                               const float *const *b, int nb, float *c, int64_t ldc) noexcept nogil
    ctypedef void (*cnx_dot_d)(int64_t n, const double *const *a, int ma,
                               const double *const *b, int nb, double *c, int64_t ldc) noexcept nogil
    ctypedef struct cnx_kernels:
        cnx_dot_s dot_s
        cnx_dot_d dot_d
        cnx_ukr_s s_ind_small[3]
        cnx_ukr_d d_ind_small[3]
        cnx_ukr_s s
        cnx_ukr_s s_ind
        cnx_ukr_s s_inda
        cnx_ukr_d d
        cnx_ukr_d d_ind
        cnx_ukr_d d_inda
        int s_mr, s_nr, d_mr, d_nr
        const char *name
    cnx_kernels cnx_select_kernels() noexcept nogil

cdef cnx_kernels KER = cnx_select_kernels()

# Block sizes (elements).  KC: reduction depth of one packed panel pair;
# PB: output positions per block in the col2im path.
cdef Py_ssize_t KC = 256
cdef Py_ssize_t MC = 256
cdef Py_ssize_t COL_ELEMS = 1 << 16


def isa():
    """Name of the micro-kernel variant in use ("avx512", "avx2", "generic")."""
    return KER.name.decode()


def block_sizes(dtype):
    """(MR, NR, KC) for ``dtype`` (float32 or float64)."""
    if np.dtype(dtype) == np.float32:
        return KER.s_mr, KER.s_nr, KC
    return KER.d_mr, KER.d_nr, KC


cdef inline void ukr(Py_ssize_t kc, const floating* a, const floating* b, floating* c,
                     Py_ssize_t ldc, int mr, int nr, int accumulate,
                     const floating* bias) noexcept nogil:
    """Micro-kernel on a packed B panel (row k at b + k*NR)."""
    if floating is float:
        KER.s(kc, a, NULL, b, NULL, c, ldc, mr, nr, accumulate, bias)
    else:
        KER.d(kc, a, NULL, b, NULL, c, ldc, mr, nr, accumulate, bias)


cdef inline void ukr_inda(Py_ssize_t kc, const floating* a, const int64_t* aoff,
                          const floating* b, floating* c,
                          Py_ssize_t ldc, int mr, int nr, int accumulate) noexcept nogil:
    """Micro-kernel reading A rows in place: element (i, k) at a[aoff[i] + k]."""
    if floating is float:
        KER.s_inda(kc, a, aoff, b, NULL, c, ldc, mr, nr, accumulate, NULL)
    else:
        KER.d_inda(kc, a, aoff, b, NULL, c, ldc, mr, nr, accumulate, NULL)


cdef inline Py_ssize_t cdiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef void pack_a(const floating* src, Py_ssize_t rs, Py_ssize_t cs,
                 Py_ssize_t m, Py_ssize_t k, Py_ssize_t MR,
                 floating* dst) noexcept nogil:
    """Pack A(m, k) (element (i, kk) at src[i*rs + kk*cs]) into MR-row panels:
    dst[panel*k*MR + kk*MR + i], rows past m zero-filled."""
    cdef Py_ssize_t panel, i, kk, rows
    cdef floating* d
    cdef const floating* s
    for panel in range(cdiv(m, MR)):
        d = dst + panel * k * MR
        rows = min(MR, m - panel * MR)
        for i in range(rows):
            s = src + (panel * MR + i) * rs
            for kk in range(k):
                d[kk * MR + i] = s[kk * cs]
        for i in range(rows, MR):
            for kk in range(k):
                d[kk * MR + i] = 0


cdef void pack_b(const floating* src, Py_ssize_t rs, Py_ssize_t cs,
                 Py_ssize_t k, Py_ssize_t n, Py_ssize_t NR,
                 floating* dst) noexcept nogil:
    """Pack one B panel B(k, n <= NR) (element (kk, j) at src[kk*rs + j*cs])
    as dst[kk*NR + j], columns past n zero-filled."""
    cdef Py_ssize_t kk, j
    if cs == 1:
        for kk in range(k):
            for j in range(n):
                dst[kk * NR + j] = src[kk * rs + j]
            for j in range(n, NR):
                dst[kk * NR + j] = 0
    else:
        for j in range(n):
            for kk in range(k):
                dst[kk * NR + j] = src[kk * rs + j * cs]
        for kk in range(k):
            for j in range(n, NR):
                dst[kk * NR + j] = 0


cdef void gemm_st(Py_ssize_t M, Py_ssize_t N, Py_ssize_t Kd,
                  const floating* A, Py_ssize_t rsa, Py_ssize_t csa,
                  const floating* B, Py_ssize_t rsb, Py_ssize_t csb,
                  floating* C, Py_ssize_t ldc, bint accumulate,
                  floating* apack, floating* bpack,
                  Py_ssize_t MR, Py_ssize_t NR) noexcept nogil:
    """Single-threaded C(M, N) (+)= A(M, Kd) @ B(Kd, N) with packing.

    apack needs MC*KC elements (MC rounded up to MR), bpack KC*NR.
    """
    cdef Py_ssize_t pc, kc, ic, mc, jc, nr, ir, mr, i, j
    if Kd == 0:
        if not accumulate:
            for i in range(M):
                for j in range(N):
                    C[i * ldc + j] = 0
        return
    pc = 0
    while pc < Kd:
        kc = min(KC, Kd - pc)
        ic = 0
        while ic < M:
            mc = min(MC, M - ic)
            pack_a(A + ic * rsa + pc * csa, rsa, csa, mc, kc, MR, apack)
            jc = 0
            while jc < N:
                nr = min(NR, N - jc)
                pack_b(B + pc * rsb + jc * csb, rsb, csb, kc, nr, NR, bpack)
                ir = 0
                while ir < mc:
                    mr = min(MR, mc - ir)
                    ukr(kc, apack + (ir // MR) * kc * MR, bpack,
                        C + (ic + ir) * ldc + jc, ldc, <int>mr, <int>nr,
                        accumulate or pc > 0, NULL)
                    ir += MR
                jc += NR
            ic += MC
        pc += KC


cdef void col2im_block(const floating* col, Py_ssize_t ldcol,
                       floating* outn,                 # (C, H, W) of one sample
                       Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OW,
                       Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t p0, Py_ssize_t npos) noexcept nogil:
    """Scatter-add col(K, npos) (positions p0..p0+npos) into outn."""
    cdef Py_ssize_t k, c, i, j, q, p, oh, ow, ih, iw, khw = kh * kw
    cdef const floating* row
    for k in range(C * khw):
        c = k // khw
        i = (k - c * khw) // kw
        j = k - c * khw - i * kw
        row = col + k * ldcol
        oh = p0 // OW
        ow = p0 - oh * OW
        for q in range(npos):
            ih = oh * sh - ph + i * dh
            iw = ow * sw - pw + j * dw
            if ih >= 0 and ih < H and iw >= 0 and iw < W:
                outn[(c * H + ih) * W + iw] += row[q]
            ow = ow + 1
            if ow == OW:
                ow = 0
                oh = oh + 1


# --------------------------------------------------------------------------
# Fused im2col packing over "padded-width" positions.
#
# The sample is zero-padded and split into its sh*sw stride phases
# (prep_sample), each of shape (C, Hq, Wq).  Output positions are laid out
# as p' = oh*Wq + ow with 0 <= ow < Wq (the Wq - OW extra columns are junk).
# Then the im2col row of tap (c, i, j) is a *contiguous* run of the prepared
# sample starting at
#     toff[k] = phase(i*dh % sh, j*dw % sw) + c*Hq*Wq
#               + (i*dh // sh)*Wq + (j*dw // sw),
# so packing a B panel is one short contiguous copy per tap, for every
# stride and dilation.  Junk columns are not stored (forward) or multiplied
# by zero (weight gradient).  Each thread keeps one prepared sample in its
# own scratch, so scratch does not grow with the batch.
# --------------------------------------------------------------------------


cdef void prep_sample(const floating* xn, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                      Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw,
                      Py_ssize_t Hq, Py_ssize_t Wq, floating* dst) noexcept nogil:
    """Zero-pad xn (C, H, W) and split it into sh*sw stride phases:
    dst[a, b, c, u, v] = xpad[c, u*sh + a, v*sw + b], each phase (C, Hq, Wq).
    At stride 1 this is plain zero padding."""
    cdef Py_ssize_t c, h, w, hp, a, b, u, v
    cdef Py_ssize_t ph_sz = C * Hq * Wq
    cdef floating* d
    cdef const floating* s
    memset(dst, 0, sh * sw * ph_sz * sizeof(floating))
    for c in range(C):
        for h in range(H):
            hp = h + ph
            a = hp % sh
            u = hp // sh
            s = xn + (c * H + h) * W
            if sw == 1:
                d = dst + a * ph_sz + (c * Hq + u) * Wq + pw
                for w in range(W):
                    d[w] = s[w]
            else:
                # Column phase b holds padded columns v*sw + b, i.e. input
                # columns w = v*sw + b - pw; walk them without division.
                for b in range(sw):
                    d = dst + (a * sw + b) * ph_sz + (c * Hq + u) * Wq
                    v = (pw - b + sw - 1) // sw if pw > b else 0
                    w = v * sw + b - pw
                    while w < W:
                        d[v] = s[w]
                        v = v + 1
                        w = w + sw


cdef inline void copy_run(const floating* src, Py_ssize_t start, Py_ssize_t limit,
                          Py_ssize_t n, floating* dst, Py_ssize_t dst_stride) noexcept nogil:
    """dst[q*dst_stride] = src[start + q] for q < n, 0 where start+q >= limit."""
    cdef Py_ssize_t m = max(0, min(n, limit - start)), q
    if dst_stride == 1:
        for q in range(m):
            dst[q] = src[start + q]
        for q in range(m, n):
            dst[q] = 0
    else:
        for q in range(m):
            dst[q * dst_stride] = src[start + q]
        for q in range(m, n):
            dst[q * dst_stride] = 0



cdef inline Py_ssize_t round16(Py_ssize_t n) noexcept nogil:
    """Round a per-thread scratch size up to 16 elements (>= 64 bytes), so
    neighbouring threads' blocks never share a cache line."""
    return (n + 15) // 16 * 16


# Largest scratch request since the last reset (bytes).  Updated with the
# GIL held (alloc_scratch runs before ``with nogil``), so no race.
cdef Py_ssize_t _scratch_high_water = 0


def scratch_high_water(reset=False):
    """Largest single kernel scratch allocation (bytes) since the last reset.

    Kernel scratch is ``malloc``'d per call (invisible to ``tracemalloc``);
    this lets ``cnnext bench --memory`` and the tests show that it stays
    bounded whatever the batch size.
    """
    global _scratch_high_water
    value = _scratch_high_water
    if reset:
        _scratch_high_water = 0
    return value


cdef void* alloc_scratch(Py_ssize_t nbytes) except NULL:
    global _scratch_high_water
    cdef void* ptr = malloc(max(nbytes, 1))
    if ptr == NULL:
        raise MemoryError(f"cnnext: could not allocate {nbytes} bytes of kernel scratch")
    if nbytes > _scratch_high_water:
        _scratch_high_water = nbytes
    return ptr


cdef int64_t* tap_offsets(Py_ssize_t C, Py_ssize_t kh, Py_ssize_t kw,
                          Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t dh, Py_ssize_t dw,
                          Py_ssize_t Hq, Py_ssize_t Wq, Py_ssize_t* toff_max) except NULL:
    """toff[k] for tap k = (c, i, j): start of its run in a prepared sample."""
    cdef Py_ssize_t K = C * kh * kw, k, c, i, j, plane = Hq * Wq
    cdef int64_t* toff = <int64_t*>alloc_scratch(K * sizeof(int64_t))
    toff_max[0] = 0
    for k in range(K):
        c = k // (kh * kw)
        i = (k // kw) % kh
        j = k % kw
        toff[k] = ((((i * dh) % sh) * sw + (j * dw) % sw) * C + c) * plane \
            + ((i * dh) // sh) * Wq + (j * dw) // sw
        toff_max[0] = max(toff_max[0], toff[k])
    return toff


cdef inline const floating* sample_src(const floating* xn, bint prepared,
                                      Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                                      Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t sh, Py_ssize_t sw,
                                      Py_ssize_t Hq, Py_ssize_t Wq,
                                      floating* buf) noexcept nogil:
    """The sample the taps' runs index: the input itself when no padding or
    stride phases are needed, else its prepared copy in ``buf``."""
    if not prepared:
        return xn
    prep_sample(xn, C, H, W, ph, pw, sh, sw, Hq, Wq, buf)
    return buf


cdef inline void grad_run(const floating* grow, Py_ssize_t pb, Py_ssize_t kc,
                          Py_ssize_t Wq, Py_ssize_t ow_n,
                          floating* dst, Py_ssize_t dst_stride) noexcept nogil:
    """dst[q*dst_stride] = gradient row ``grow`` (OH x OW) at padded-width
    position pb + q, or 0 at junk positions (ow >= OW)."""
    cdef Py_ssize_t oh = pb // Wq, ow = pb - (pb // Wq) * Wq, q
    for q in range(kc):
        if ow < ow_n:
            dst[q * dst_stride] = grow[oh * ow_n + ow]
        else:
            dst[q * dst_stride] = 0
        ow = ow + 1
        if ow == Wq:
            ow = 0
            oh = oh + 1


def conv2d_forward(const floating[:, :, :, ::1] x,     # IN  (N, C, H, W)
                   const floating[:, ::1] wmat,        # IN  (Cout, K), K = C*kh*kw
                   const floating[::1] bias,           # IN  (Cout,) or None
                   floating[:, :, ::1] out,            # OUT (N, Cout, OH*OW)
                   Py_ssize_t kh, Py_ssize_t kw,
                   Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t ph, Py_ssize_t pw,
                   Py_ssize_t dh, Py_ssize_t dw,
                   Py_ssize_t oh_n, Py_ssize_t ow_n,
                   int n_threads):
    """out[n] = Wmat @ im2col(x[n]) (+ bias), tiles of NR positions split
    into contiguous ranges, one per thread."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t Co = out.shape[1], K = C * kh * kw
    cdef Py_ssize_t Hq = cdiv(H + 2 * ph, sh), Wq = cdiv(W + 2 * pw, sw)
    cdef Py_ssize_t L = sh * sw * C * Hq * Wq
    cdef Py_ssize_t MR, NR
    cdef cnx_ukr_s fs = KER.s_ind
    cdef cnx_ukr_d fd = KER.d_ind
    cdef int small
    if floating is float:
        MR, NR = KER.s_mr, KER.s_nr
    else:
        MR, NR = KER.d_mr, KER.d_nr
    # Few output channels (e.g. the input gradient of a grayscale or RGB
    # layer): a kernel with fewer rows instead of mostly-empty 8-row tiles.
    if Co <= 4:
        small = 0 if Co == 1 else (1 if Co == 2 else 2)
        if floating is float:
            if KER.s_ind_small[small] != NULL:
                fs = KER.s_ind_small[small]
                MR = 1 << small
        else:
            if KER.d_ind_small[small] != NULL:
                fd = KER.d_ind_small[small]
                MR = 1 << small
    cdef Py_ssize_t Pp = oh_n * Wq, ntp = cdiv(Pp, NR), npanel = cdiv(Co, MR)
    cdef Py_ssize_t T = N * ntp
    cdef int nt = <int>max(1, min(n_threads, T))
    cdef bint prepared = ph > 0 or pw > 0 or sh > 1 or sw > 1
    # Per thread: B panel, C tile for all panels, prepared sample.
    cdef Py_ssize_t s_b = round16(KC * NR), s_c = round16(npanel * MR * NR)
    cdef Py_ssize_t s_x = round16(L) if prepared else 0
    cdef Py_ssize_t per = s_b + s_c + s_x
    cdef Py_ssize_t k, tid, t, t0, t1, n, cur, p0, pc, kc, kk, panel, co0
    cdef Py_ssize_t q, pp, oh, ow, run
    cdef floating* scr
    cdef floating* apw
    cdef floating* bp
    cdef floating* ct
    cdef const floating* src
    cdef const floating* bptr
    cdef int64_t* toff
    cdef int64_t* poff
    cdef const int64_t* boff
    cdef const floating* bsrc
    cdef Py_ssize_t toff_max
    cdef bint has_bias = bias is not None
    cdef bint direct
    if T == 0 or K == 0:
        return
    toff = tap_offsets(C, kh, kw, sh, sw, dh, dw, Hq, Wq, &toff_max)
    poff = NULL
    try:
        # Row offsets of a packed B panel, so packed tiles use the same
        # (indirect-B) kernel as tiles read in place.
        poff = <int64_t*>alloc_scratch(KC * sizeof(int64_t))
        apw = <floating*>alloc_scratch((npanel * MR * K + nt * per) * sizeof(floating))
    except MemoryError:
        free(toff)
        free(poff)
        raise
    for k in range(KC):
        poff[k] = k * NR
    with nogil:
        pack_a(&wmat[0, 0], K, 1, Co, K, MR, apw)
        scr = apw + npanel * MR * K
        for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
            bp = scr + tid * per
            ct = bp + s_b
            t0 = T * tid // nt
            t1 = T * (tid + 1) // nt
            cur = -1
            src = NULL
            for t in range(t0, t1):
                n = t // ntp
                p0 = (t - n * ntp) * NR
                if n != cur:
                    cur = n
                    src = sample_src(&x[n, 0, 0, 0], prepared, C, H, W, ph, pw, sh, sw, Hq, Wq,
                                     ct + s_c)
                # Read B in place unless the tile's runs would cross the end
                # of the sample buffer (then pack, zero-filling past it).
                direct = toff_max + p0 + NR <= L
                pc = 0
                while pc < K:
                    kc = min(KC, K - pc)
                    if not direct:
                        for kk in range(kc):
                            copy_run(src, toff[pc + kk] + p0, L, NR, bp + kk * NR, 1)
                    if direct:
                        bsrc = src + p0
                        boff = toff + pc
                    else:
                        bsrc = bp
                        boff = poff
                    for panel in range(npanel):
                        co0 = panel * MR
                        bptr = NULL
                        if has_bias and pc == 0:
                            bptr = &bias[co0]
                        if floating is float:
                            fs(kc, apw + panel * K * MR + pc * MR, NULL, bsrc, boff,
                               ct + co0 * NR, NR, <int>min(MR, Co - co0), <int>NR, pc > 0, bptr)
                        else:
                            fd(kc, apw + panel * K * MR + pc * MR, NULL, bsrc, boff,
                               ct + co0 * NR, NR, <int>min(MR, Co - co0), <int>NR, pc > 0, bptr)
                    pc = pc + KC
                # Store the valid columns (ow < OW) of the tile, run by run.
                pp = p0
                while pp < min(p0 + NR, Pp):
                    oh = pp // Wq
                    ow = pp - oh * Wq
                    run = min(Wq - ow, p0 + NR - pp)
                    if ow < ow_n:
                        q = min(run, ow_n - ow)
                        for co0 in range(Co):
                            for kk in range(q):
                                out[n, co0, oh * ow_n + ow + kk] = ct[co0 * NR + pp - p0 + kk]
                    pp = pp + run
        free(apw)
        free(poff)
        free(toff)


def conv2d_grad_weight(const floating[:, :, :, ::1] x,    # IN  (N, C, H, W)
                       const floating[:, :, ::1] g,       # IN  (N, Cout, OH*OW)
                       floating[:, :, ::1] gwp,           # OUT (T, Cout, K) partials
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t oh_n, Py_ssize_t ow_n):
    """gwp[task] = sum over the task's (sample, position block) units of
    g_n[:, block] @ im2col(x_n)[:, block]^T (junk columns of the gradient
    packed as zeros).  The caller sums gwp over axis 0 in a fixed order."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t T = gwp.shape[0], Co = gwp.shape[1], K = gwp.shape[2]
    cdef Py_ssize_t Hq = cdiv(H + 2 * ph, sh), Wq = cdiv(W + 2 * pw, sw)
    cdef Py_ssize_t L = sh * sw * C * Hq * Wq
    cdef Py_ssize_t MR, NR
    if floating is float:
        MR, NR = KER.s_mr, KER.s_nr
    else:
        MR, NR = KER.d_mr, KER.d_nr
    cdef Py_ssize_t Pp = oh_n * Wq, nblk = cdiv(Pp, KC), units = N * nblk
    cdef Py_ssize_t npanel = cdiv(Co, MR)
    cdef bint prepared = ph > 0 or pw > 0 or sh > 1 or sw > 1
    cdef Py_ssize_t s_a = round16(npanel * MR * KC), s_b = round16(KC * NR)
    cdef Py_ssize_t per = s_a + s_b + (round16(L) if prepared else 0)
    cdef Py_ssize_t task, u, u0, u1, n, cur, pb, kc, jc, nr, panel, co0
    cdef Py_ssize_t q, oh, ow, tt
    cdef floating* scr
    cdef floating* ap
    cdef floating* bp
    cdef floating* arow
    cdef const floating* src
    cdef int64_t* toff
    cdef Py_ssize_t toff_max, filled
    if T == 0:
        return
    toff = tap_offsets(C, kh, kw, sh, sw, dh, dw, Hq, Wq, &toff_max)
    try:
        scr = <floating*>alloc_scratch(T * per * sizeof(floating))
    except MemoryError:
        free(toff)
        raise
    with nogil:
        for task in prange(T, schedule="static", chunksize=1, num_threads=T):
            ap = scr + task * per
            bp = ap + s_a
            memset(&gwp[task, 0, 0], 0, Co * K * sizeof(floating))
            memset(bp, 0, KC * NR * sizeof(floating))
            filled = 0
            u0 = units * task // T
            u1 = units * (task + 1) // T
            cur = -1
            src = NULL
            for u in range(u0, u1):
                n = u // nblk
                pb = (u - n * nblk) * KC
                kc = min(KC, Pp - pb)
                if n != cur:
                    cur = n
                    src = sample_src(&x[n, 0, 0, 0], prepared, C, H, W, ph, pw, sh, sw, Hq, Wq,
                                     bp + s_b)
                # A panels: gradient rows in padded-width layout, junk = 0.
                for panel in range(npanel):
                    for tt in range(MR):
                        co0 = panel * MR + tt
                        arow = ap + panel * kc * MR + tt
                        if co0 >= Co:
                            for q in range(kc):
                                arow[q * MR] = 0
                            continue
                        grad_run(&g[n, co0, 0], pb, kc, Wq, ow_n, arow, MR)
                jc = 0
                while jc < K:
                    nr = min(NR, K - jc)
                    for tt in range(nr):
                        copy_run(src, toff[jc + tt] + pb, L, kc, bp + tt, NR)
                    # Junk positions (ow >= OW) read real image values; zero
                    # them so an inf/NaN there cannot leak in as 0*inf.
                    ow = pb - (pb // Wq) * Wq
                    for q in range(kc):
                        if ow >= ow_n:
                            for tt in range(nr):
                                bp[q * NR + tt] = 0
                        ow = ow + 1
                        if ow == Wq:
                            ow = 0
                    # Columns past nr must be zero; only clear what an
                    # earlier, wider panel may have left there.
                    for tt in range(nr, filled):
                        for q in range(KC):
                            bp[q * NR + tt] = 0
                    filled = nr
                    for panel in range(npanel):
                        co0 = panel * MR
                        ukr(kc, ap + panel * kc * MR, bp, &gwp[task, co0, jc], K,
                            <int>min(MR, Co - co0), <int>nr, 1, NULL)
                    jc = jc + NR
        free(scr)
        free(toff)


def conv_grad_input(const floating[:, :, ::1] g,          # IN  (N, Cg, P)
                    const floating[:, ::1] wmat,          # IN  (Cg, K), K = C*kh*kw
                    floating[:, :, :, ::1] out,           # OUT (N, C, H, W), overwritten
                    Py_ssize_t kh, Py_ssize_t kw,
                    Py_ssize_t sh, Py_ssize_t sw,
                    Py_ssize_t ph, Py_ssize_t pw,
                    Py_ssize_t dh, Py_ssize_t dw,
                    Py_ssize_t oh_n, Py_ssize_t ow_n,
                    int n_threads):
    """out_n = col2im(Wmat^T @ g_n): conv2d's input gradient for any stride,
    and conv_transpose2d.  One thread owns a sample."""
    cdef Py_ssize_t N = g.shape[0], Cg = wmat.shape[0], K = wmat.shape[1]
    cdef Py_ssize_t C = out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t P = oh_n * ow_n
    cdef Py_ssize_t MR, NR
    if floating is float:
        MR, NR = KER.s_mr, KER.s_nr
    else:
        MR, NR = KER.d_mr, KER.d_nr
    cdef Py_ssize_t PB = max(NR, min(P, (COL_ELEMS // max(K, 1)) // NR * NR))
    cdef int nt = <int>max(1, min(n_threads, N))
    cdef Py_ssize_t s_c = round16(K * PB), s_a = round16((min(MC, K) + MR) * KC)
    cdef Py_ssize_t per = s_c + s_a + round16(KC * NR)
    cdef Py_ssize_t n, pb, npos, tid
    cdef floating* scr
    cdef floating* cp
    if N == 0:
        return
    scr = <floating*>alloc_scratch(nt * per * sizeof(floating))
    with nogil:
        for n in prange(N, schedule="static", num_threads=nt):
            tid = threadid()
            cp = scr + tid * per
            memset(&out[n, 0, 0, 0], 0, C * H * W * sizeof(floating))
            pb = 0
            while pb < P:
                npos = min(PB, P - pb)
                gemm_st(K, npos, Cg, &wmat[0, 0], 1, K, &g[n, 0, pb], P, 1,
                        cp, npos, False, cp + s_c, cp + s_c + s_a, MR, NR)
                col2im_block(cp, npos, &out[n, 0, 0, 0], C, H, W, ow_n,
                             kh, kw, sh, sw, ph, pw, dh, dw, pb, npos)
                pb = pb + PB
        free(scr)


def gemm(const floating[:, ::1] A,      # IN  (M, K), or (K, M) if trans_a
         const floating[:, ::1] B,      # IN  (K, N), or (N, K) if trans_b
         floating[:, ::1] C,            # OUT (M, N)
         bint trans_a, bint trans_b, bint accumulate, int n_threads):
    """C (+)= op(A) @ op(B) on the packed micro-kernels, no BLAS.

    The larger of M and N is split into contiguous, panel-aligned ranges,
    one per thread; each thread packs its own panels (no shared scratch)."""
    cdef Py_ssize_t M = C.shape[0], N = C.shape[1]
    cdef Py_ssize_t Kd = A.shape[0] if trans_a else A.shape[1]
    cdef Py_ssize_t rsa = 1 if trans_a else A.shape[1], csa = A.shape[1] if trans_a else 1
    cdef Py_ssize_t rsb = 1 if trans_b else B.shape[1], csb = B.shape[1] if trans_b else 1
    cdef Py_ssize_t MR, NR
    if floating is float:
        MR, NR = KER.s_mr, KER.s_nr
    else:
        MR, NR = KER.d_mr, KER.d_nr
    cdef bint split_n = N >= M
    cdef Py_ssize_t unit = NR if split_n else MR
    cdef Py_ssize_t nunits = cdiv(N if split_n else M, unit)
    cdef int nt = <int>max(1, min(n_threads, nunits))
    cdef Py_ssize_t s_a = round16((min(MC, M) + MR) * KC), per = s_a + round16(KC * NR)
    cdef Py_ssize_t tid, u0, u1, lo, hi
    cdef floating* scr
    cdef Py_ssize_t i, j
    if M == 0 or N == 0:
        return
    if Kd == 0:  # empty reduction: never form a pointer into an empty operand
        if not accumulate:
            for i in range(M):
                for j in range(N):
                    C[i, j] = 0
        return
    scr = <floating*>alloc_scratch(nt * per * sizeof(floating))
    with nogil:
        for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
            u0 = nunits * tid // nt
            u1 = nunits * (tid + 1) // nt
            lo = u0 * unit
            if split_n:
                hi = min(N, u1 * unit)
                if hi > lo:
                    gemm_st(M, hi - lo, Kd, &A[0, 0], rsa, csa, &B[0, 0] + lo * csb, rsb, csb,
                            &C[0, 0] + lo, N, accumulate,
                            scr + tid * per, scr + tid * per + s_a, MR, NR)
            else:
                hi = min(M, u1 * unit)
                if hi > lo:
                    gemm_st(hi - lo, N, Kd, &A[0, 0] + lo * rsa, rsa, csa, &B[0, 0], rsb, csb,
                            &C[0, 0] + lo * N, N, accumulate,
                            scr + tid * per, scr + tid * per + s_a, MR, NR)
        free(scr)


def conv2d_grad_weight_t(const floating[:, :, :, ::1] x,    # IN  (N, C, H, W), all finite
                         const floating[:, :, ::1] g,       # IN  (N, Cout, OH*OW)
                         floating[:, :, ::1] gwtp,          # OUT (T, K, Cout) partials
                         Py_ssize_t kh, Py_ssize_t kw,
                         Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t ph, Py_ssize_t pw,
                         Py_ssize_t dh, Py_ssize_t dw,
                         Py_ssize_t oh_n, Py_ssize_t ow_n):
    """Transposed weight gradient: gwtp[task] = sum over units of
    im2col(x_n)[:, block] @ g_n[:, block]^T, shape (K, Cout).

    The im2col rows (taps) are read in place from the prepared sample by
    the indirect-A micro-kernel, so only the small gradient block is packed
    (Cout x block instead of K x block).  Junk positions pair an image value
    with a zero gradient, so the caller uses this only for finite ``x``
    (0 * inf would be NaN); otherwise :func:`conv2d_grad_weight`."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t T = gwtp.shape[0], K = gwtp.shape[1], Co = gwtp.shape[2]
    cdef Py_ssize_t Hq = cdiv(H + 2 * ph, sh), Wq = cdiv(W + 2 * pw, sw)
    cdef Py_ssize_t L = sh * sw * C * Hq * Wq
    cdef Py_ssize_t MR, NR
    if floating is float:
        MR, NR = KER.s_mr, KER.s_nr
    else:
        MR, NR = KER.d_mr, KER.d_nr
    cdef Py_ssize_t Pp = oh_n * Wq, nblk = cdiv(Pp, KC), units = N * nblk
    cdef Py_ssize_t ncp = cdiv(Co, NR), ntp = cdiv(K, MR)
    cdef bint prepared = ph > 0 or pw > 0 or sh > 1 or sw > 1
    cdef Py_ssize_t s_b = round16(ncp * KC * NR), s_a = round16(MR * KC)
    cdef Py_ssize_t per = s_b + s_a + (round16(L) if prepared else 0)
    cdef Py_ssize_t task, u, u0, u1, n, cur, pb, kc, jc, ip, q, oh, ow, j, i, mr, nr
    cdef floating* scr
    cdef floating* bp
    cdef floating* ap
    cdef floating* bcol
    cdef const floating* src
    cdef int64_t* toff
    cdef Py_ssize_t toff_max
    if T == 0:
        return
    toff = tap_offsets(C, kh, kw, sh, sw, dh, dw, Hq, Wq, &toff_max)
    try:
        scr = <floating*>alloc_scratch(T * per * sizeof(floating))
    except MemoryError:
        free(toff)
        raise
    with nogil:
        for task in prange(T, schedule="static", chunksize=1, num_threads=T):
            bp = scr + task * per
            ap = bp + s_b
            memset(&gwtp[task, 0, 0], 0, K * Co * sizeof(floating))
            u0 = units * task // T
            u1 = units * (task + 1) // T
            cur = -1
            src = NULL
            for u in range(u0, u1):
                n = u // nblk
                pb = (u - n * nblk) * KC
                kc = min(KC, Pp - pb)
                if n != cur:
                    cur = n
                    src = sample_src(&x[n, 0, 0, 0], prepared, C, H, W, ph, pw, sh, sw, Hq, Wq,
                                     ap + s_a)
                # B panels: gradient block transposed, padded-width positions
                # (junk columns zero), NR output channels per panel.
                for jc in range(ncp):
                    for j in range(NR):
                        bcol = bp + jc * KC * NR + j
                        if jc * NR + j >= Co:
                            for q in range(kc):
                                bcol[q * NR] = 0
                            continue
                        grad_run(&g[n, jc * NR + j, 0], pb, kc, Wq, ow_n, bcol, NR)
                for ip in range(ntp):
                    mr = min(MR, K - ip * MR)
                    if toff_max + pb + kc <= L:
                        for jc in range(ncp):
                            nr = min(NR, Co - jc * NR)
                            ukr_inda(kc, src + pb, toff + ip * MR, bp + jc * KC * NR,
                                     &gwtp[task, ip * MR, jc * NR], Co, <int>mr, <int>nr, 1)
                    else:
                        # Runs would cross the end of the sample buffer:
                        # pack this A panel (zero-filled past the end).
                        for i in range(MR):
                            if i < mr:
                                copy_run(src, toff[ip * MR + i] + pb, L, kc, ap + i, MR)
                            else:
                                for q in range(kc):
                                    ap[q * MR + i] = 0
                        for jc in range(ncp):
                            nr = min(NR, Co - jc * NR)
                            ukr(kc, ap, bp + jc * KC * NR, &gwtp[task, ip * MR, jc * NR], Co,
                                <int>mr, <int>nr, 1, NULL)
        free(scr)
        free(toff)


# Positions per dot-product unit: long runs amortise the horizontal sums.
cdef Py_ssize_t DOT_BLOCK = 2048


def conv2d_grad_weight_dot(const floating[:, :, :, ::1] x,    # IN  (N, C, H, W), all finite
                           const floating[:, :, ::1] g,       # IN  (N, Cout, OH*OW)
                           floating[:, :, ::1] gwp,           # OUT (T, Cout, K) partials
                           Py_ssize_t kh, Py_ssize_t kw,
                           Py_ssize_t sh, Py_ssize_t sw,
                           Py_ssize_t ph, Py_ssize_t pw,
                           Py_ssize_t dh, Py_ssize_t dw,
                           Py_ssize_t oh_n, Py_ssize_t ow_n):
    """Weight gradient of small layers as 4x4 blocks of dot products.

    dW[co, k] = sum_q g_n[co, q] * im2col(x_n)[k, q]: both operands are
    contiguous runs (the gradient re-laid in padded-width positions, the
    tap's run in the prepared sample), so nothing is packed; worthwhile when
    C_out and K are too small to amortise GEMM packing.  Finite x only (junk
    positions pair image values with zero gradient)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t T = gwp.shape[0], Co = gwp.shape[1], K = gwp.shape[2]
    cdef Py_ssize_t Hq = cdiv(H + 2 * ph, sh), Wq = cdiv(W + 2 * pw, sw)
    cdef Py_ssize_t L = sh * sw * C * Hq * Wq
    cdef Py_ssize_t Pp = oh_n * Wq, DB = min(DOT_BLOCK, Pp)
    cdef Py_ssize_t nblk = cdiv(Pp, DB), units = N * nblk
    cdef bint prepared = ph > 0 or pw > 0 or sh > 1 or sw > 1
    cdef Py_ssize_t s_g = round16(Co * DB), s_t = round16(4 * DB)
    cdef Py_ssize_t per = s_g + s_t + (round16(L) if prepared else 0)
    cdef Py_ssize_t task, u, u0, u1, n, cur, pb, kc, co, k0, c0, q, oh, ow, i, ma, nb
    cdef floating* scr
    cdef floating* gb
    cdef floating* tmp
    cdef floating* grow
    cdef const floating* src
    cdef const floating** ptrs
    cdef const floating** pa
    cdef const floating** pbp
    cdef int64_t* toff
    cdef Py_ssize_t toff_max
    if T == 0:
        return
    toff = tap_offsets(C, kh, kw, sh, sw, dh, dw, Hq, Wq, &toff_max)
    scr = NULL
    ptrs = NULL
    try:
        scr = <floating*>alloc_scratch(T * per * sizeof(floating))
        ptrs = <const floating**>alloc_scratch(T * 8 * sizeof(floating*))
    except MemoryError:
        free(toff)
        free(scr)
        raise
    with nogil:
        for task in prange(T, schedule="static", chunksize=1, num_threads=T):
            gb = scr + task * per
            tmp = gb + s_g
            pa = ptrs + task * 8
            pbp = pa + 4
            memset(&gwp[task, 0, 0], 0, Co * K * sizeof(floating))
            u0 = units * task // T
            u1 = units * (task + 1) // T
            cur = -1
            src = NULL
            for u in range(u0, u1):
                n = u // nblk
                pb = (u - n * nblk) * DB
                kc = min(DB, Pp - pb)
                if n != cur:
                    cur = n
                    src = sample_src(&x[n, 0, 0, 0], prepared, C, H, W, ph, pw, sh, sw, Hq, Wq,
                                     tmp + s_t)
                # Gradient rows in padded-width layout, junk columns zero.
                for co in range(Co):
                    grad_run(&g[n, co, 0], pb, kc, Wq, ow_n, gb + co * DB, 1)
                for k0 in range(0, K, 4):
                    nb = min(4, K - k0)
                    for i in range(4):
                        c0 = k0 + min(i, nb - 1)
                        if toff[c0] + pb + kc <= L:
                            pbp[i] = src + toff[c0] + pb
                        else:
                            copy_run(src, toff[c0] + pb, L, kc, tmp + i * DB, 1)
                            pbp[i] = tmp + i * DB
                    for co in range(0, Co, 4):
                        ma = min(4, Co - co)
                        for i in range(4):
                            pa[i] = gb + (co + min(i, ma - 1)) * DB
                        if floating is float:
                            KER.dot_s(kc, <const float* const*>pa, <int>ma,
                                      <const float* const*>pbp, <int>nb, &gwp[task, co, k0], K)
                        else:
                            KER.dot_d(kc, <const double* const*>pa, <int>ma,
                                      <const double* const*>pbp, <int>nb, &gwp[task, co, k0], K)
        free(scr)
        free(ptrs)
        free(toff)
