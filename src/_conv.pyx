"""Private convolution kernels (tier 1).

Stateless, GIL-free kernels over typed memoryviews.  They assume valid,
C-contiguous, correctly typed input and never validate: ``cnnext._plan`` is
the only caller.

Design (BLIS-style GEMM with the im2col step fused into packing, on the
micro-kernels of ``_gemm``):

* **forward**: ``out[n] = Wmat(Cout, K) @ col_n(K, P)``.  The weight is packed
  once per call; the im2col matrix is never materialised: the micro-kernel
  reads each tap's contiguous run of the prepared sample in place (or a
  packed copy at the end of the buffer).
* **weight gradient**: ``dW = sum_n g_n(Cout, P) @ col_n(K, P)^T`` -- the
  correlation of the input with the output gradient -- in one of three
  schedules (``packed``, ``transposed``, ``dot``; ``cnnext._plan`` chooses).
  The reduction over (sample, position block) units is split statically over
  the threads, each accumulating into its own partial ``dW`` (summed by the
  caller in a fixed order, so a given thread count gives bitwise-reproducible
  results).
* **input gradient**: at stride 1 the plan runs the forward kernel as a
  full convolution with the 180-degree-rotated kernel; at stride s
  (undilated) ``conv2d_grad_input_phases`` runs the forward kernel's tiles
  once per stride phase, each phase's sub-kernel on the once-padded
  gradient, storing straight into the phase's rows and columns.  Any stride
  and dilation, and ``conv_transpose2d``: per sample, ``col = Wmat^T @ g_n``
  one position block at a time, then ``col2im`` scatter-adds each column
  into the window it came from; one thread owns a sample.

Every kernel body is a ``*_task(args, tid)`` function: with one thread it is
called directly (no OpenMP region), otherwise once per thread in a
``prange``.  All scratch is allocated per call and is bounded by the block
sizes, independent of the batch size.

The forward, phases input-gradient and weight-gradient kernels take
``groups``: a grouped convolution runs as one call, its work units (sample,
group, block of positions) shared by the threads, each group read in place
in its channels of the whole batch (``conv_grad_input``, the col2im input
gradient, takes one group's *channel window* instead: ``g_c0``/``out_c0``,
its first channel).  Samples are then ``C_total*H*W`` elements apart.  A
tap's run may read past the end of a group's channels into the memory that
follows it (junk positions, never stored, or multiplied by a zero
gradient); the last sample gets a prepared copy when its runs would leave
the array (``reach``).
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint16_t, uint32_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from cnnext._common cimport (
    ACT_NONE, COL_ELEMS, KC, MC, Geom, act_rows, act_value, cdiv, cnx_kernels, cnx_ukr2_s,
    cnx_ukr_d, cnx_ukr_s, cnx_ukrf_s, make_geom, reach, round16, ukr,
)
from cnnext._gemm cimport alloc_scratch, gemm_st, kernels, pack_a

cdef extern from "cnnext_gw3.h" nogil:
    int CNX_GW3_MR
    ctypedef void (*cnx_pack_gt16_s)(const float *g, int64_t ldg, int nch, int64_t pb,
                                     int64_t kc, int64_t Wq, int64_t OW,
                                     float *dst) noexcept nogil
    cnx_ukr_s cnx_gw3_s_select()
    cnx_pack_gt16_s cnx_pack_gt16_s_select()

cdef extern from "cnnext_stream.h" nogil:
    ctypedef void (*cnx_stream_rows_d)(const double* src, int64_t lds, int64_t rows,
                                       int64_t npos, double* dst, int64_t ldd) noexcept nogil
    ctypedef void (*cnx_stream_rows_s)(const float* src, int64_t lds, int64_t rows,
                                       int64_t npos, float* dst, int64_t ldd) noexcept nogil
    cnx_stream_rows_d cnx_stream_rows_d_select()
    cnx_stream_rows_s cnx_stream_rows_s_select()

cdef extern from "cnnext_prep.h" nogil:
    ctypedef void (*cnx_pad_row_s)(const float *src, int64_t W, int64_t pw, float *d,
                                   int64_t Wq) noexcept nogil
    ctypedef void (*cnx_merge2x_s)(const float *s0, const float *s1, int64_t lds,
                                   float *dst, int64_t ldd, int64_t rows,
                                   int64_t cols) noexcept nogil
    cnx_pad_row_s cnx_pad_row_s_select()
    void cnx_pack_runs(const char* src, const int64_t* boff, const int64_t* tile0, int64_t esz,
                       int64_t kc, int64_t nt, int64_t run, char* dst, int64_t tstride)
    void cnx_prefetch_runs(const char* src, const int64_t* boff, int64_t esz, int64_t k0,
                           int64_t k1, int64_t start, int64_t bytes)
    void cnx_prefetch_lines(const char* p, int64_t l0, int64_t l1)
    cnx_merge2x_s cnx_merge2x_s_select()

cdef extern from "cnnext_gw3d.h" nogil:
    int CNX_GW3D_MR
    cnx_ukr_d cnx_gw3_d_select()

cdef extern from "cnnext_gwvalid.h" nogil:
    ctypedef void (*cnx_gwvalid_s)(int64_t kc, const float *a, const int64_t *aoff,
                                   const float *b, int64_t ow0, int64_t OW, int64_t Wq,
                                   float *c, int64_t ldc, int mr, int nr,
                                   int accumulate) noexcept nogil
    cnx_gwvalid_s cnx_gwvalid_s_select()

cdef extern from "cnnext_cvd.h" nogil:
    int CNX_CVD_MAXP
    void cnx_cvd_shape(int *nch, int *maxp)
    ctypedef void (*cnx_cvd)(int64_t kc, const double *w, const double *b,
                             const int64_t *boff, double *c, int accumulate,
                             const double *bias) noexcept nogil
    cnx_cvd cnx_cvd_select(int n)

cdef const cnx_kernels* KER = kernels()
# Whole padded rows of a prepared float sample (prep_rows); NULL without
# AVX-512F.
cdef cnx_pad_row_s PAD_ROW_S = cnx_pad_row_s_select()
# The two column phases of a stride-2 input gradient stored interleaved
# (gi_pair_task); NULL without AVX2.
cdef cnx_merge2x_s MERGE2X_S = cnx_merge2x_s_select()
# Result rows stored with streaming stores; NULL without AVX-512F.
cdef cnx_stream_rows_d STREAM_D = cnx_stream_rows_d_select()
cdef cnx_stream_rows_s STREAM_S = cnx_stream_rows_s_select()
# The transposed weight gradient's kernel for taps in threes (float, at
# most 16 output channels); NULL without AVX-512F.
cdef cnx_ukr_s GW3_S = cnx_gw3_s_select()
# Its gradient block, 16 positions at a time (float, one vector of
# channels); NULL without AVX-512F.
cdef cnx_pack_gt16_s PACK_GT16_S = cnx_pack_gt16_s_select()
# The float64 kernel for taps in threes, more than 8 output channels (12
# rows by two vectors); NULL without AVX-512F.
cdef cnx_ukr_d GW3_D = cnx_gw3_d_select()
# The transposed weight gradient's 8 x 32 kernel over valid positions only
# (float); NULL without AVX-512F.
cdef cnx_gwvalid_s GWVALID_S = cnx_gwvalid_s_select()
# The float64 forward's channel-vector tiles: CV_NCH channels by up to
# CV_MAXP positions (16 x 14 with AVX-512F, 8 x 6 with AVX2, 0 x 0
# otherwise), the kernel of n positions at index n - 1.
cdef int CV_NCH, CV_MAXP
cnx_cvd_shape(&CV_NCH, &CV_MAXP)
cdef cnx_cvd CVD[14]  # CNX_CVD_MAXP
for _n in range(CNX_CVD_MAXP):
    CVD[_n] = cnx_cvd_select(_n + 1)


cdef inline Py_ssize_t mr_of(floating* tag) noexcept nogil:
    if floating is float:
        return KER.s_mr
    else:
        return KER.d_mr


cdef inline Py_ssize_t nr_of(floating* tag) noexcept nogil:
    if floating is float:
        return KER.s_nr
    else:
        return KER.d_nr


# --------------------------------------------------------------------------
# Fused im2col over "padded-width" positions.
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


cdef inline void strided_copy(const floating* src, Py_ssize_t step, Py_ssize_t n,
                              floating* dst) noexcept nogil:
    """dst[q] = src[q*step] for q < n (steps 1 and 2 as their own loops)."""
    cdef Py_ssize_t q
    if step == 1:
        memcpy(dst, src, n * sizeof(floating))
    elif step == 2:
        for q in range(n):
            dst[q] = src[2 * q]
    else:
        for q in range(n):
            dst[q] = src[q * step]


# fwd_task prefetches at most this much of the next (sample, group) pair's
# input (measured, 3x3 layers, float32, batch 32, 16 channels on 32x32 per
# group, 4 groups: the padded copy read its input from memory in 8-10% of
# the time).
cdef Py_ssize_t PREFETCH_PAIR_BYTES = 256 * 1024

# prep_rows pads stride-1 rows only up to this width (longer rows: one
# library copy per row costs little next to the row).
cdef Py_ssize_t PREP_ROWS_MAX_WQ = 16


cdef bint prep_rows(const float* xn, const Geom* g, float* dst) noexcept nogil:
    """prep_sample by whole destination rows, padding included (the vector
    row function of cnnext_prep.h), each element written once: float32 at
    stride 1 on rows of at most PREP_ROWS_MAX_WQ padded columns.  Returns
    False, having done nothing, for other geometries or without the vector
    function."""
    cdef Py_ssize_t c, u, h, W = g.W, H = g.H, Hq = g.Hq, Wq = g.Wq
    cdef float* d
    if g.sh != 1 or g.sw != 1 or Wq > PREP_ROWS_MAX_WQ or PAD_ROW_S == NULL:
        return False
    for c in range(g.C):
        for u in range(Hq):
            h = u - g.ph
            d = dst + (c * Hq + u) * Wq
            if 0 <= h < H:
                PAD_ROW_S(xn + (c * H + h) * W, W, g.pw, d, Wq)
            else:
                memset(d, 0, Wq * sizeof(float))
    memset(dst + g.L, 0, (g.Lbuf - g.L) * sizeof(float))
    return True


cdef void prep_sample(const floating* xn, const Geom* g, floating* dst) noexcept nogil:
    """Zero-pad xn (C, H, W) and split it into sh*sw stride phases:
    dst[a, b, c, u, v] = xpad[c, u*sh + a, v*sw + b], each phase (C, Hq, Wq).
    At stride 1 this is plain zero padding."""
    cdef Py_ssize_t c, h, w, a, b, u, v, n
    cdef Py_ssize_t sh = g.sh, sw = g.sw, pw = g.pw, W = g.W, Hq = g.Hq, Wq = g.Wq
    cdef Py_ssize_t ph_sz = g.C * Hq * Wq
    cdef floating* d
    if floating is float:
        if prep_rows(xn, g, dst):
            return
    if sh == 1 and sw == 1:
        # Plain zero padding: each row copied once and only the border and
        # the tail zeroed (the input is read once, the buffer written once).
        for c in range(g.C):
            d = dst + c * Hq * Wq
            memset(d, 0, g.ph * Wq * sizeof(floating))
            for h in range(g.H):
                d = dst + c * Hq * Wq + (g.ph + h) * Wq
                for w in range(pw):
                    d[w] = 0
                memcpy(d + pw, xn + (c * g.H + h) * W, W * sizeof(floating))
                for w in range(pw + W, Wq):
                    d[w] = 0
            memset(dst + c * Hq * Wq + (g.ph + g.H) * Wq, 0,
                   (Hq - g.ph - g.H) * Wq * sizeof(floating))
        memset(dst + g.L, 0, (g.Lbuf - g.L) * sizeof(floating))
        return
    memset(dst, 0, g.Lbuf * sizeof(floating))
    # Column phase b holds padded columns v*sw + b, i.e. input columns
    # w = v*sw + b - pw, from v on; row h goes to row phase a, row u.
    if floating is float:
        if sw == 2 and KER.split2_s != NULL:
            # Input column w goes to column phase (w + pw) % 2, column
            # (w + pw) // 2: even columns to phase pw % 2 from pw // 2,
            # odd ones to the other from (pw + 1) // 2.  A one-row kernel
            # (a 1x1 shortcut) reads row phase 0 only: the other rows stay
            # zero.
            for c in range(g.C):
                a = g.ph % sh
                u = g.ph // sh
                for h in range(g.H):
                    d = dst + a * sw * ph_sz + (c * Hq + u) * Wq
                    if a == 0 or g.kh > 1:
                        KER.split2_s(xn + (c * g.H + h) * W, W,
                                     d + (pw % 2) * ph_sz + pw // 2,
                                     d + (1 - pw % 2) * ph_sz + (pw + 1) // 2)
                    a = a + 1
                    if a == sh:
                        a = 0
                        u = u + 1
            return
    for b in range(sw):
        v = (pw - b + sw - 1) // sw if pw > b else 0
        w = v * sw + b - pw
        if w >= W:
            continue
        n = (W - 1 - w) // sw + 1
        for c in range(g.C):
            a = g.ph % sh
            u = g.ph // sh
            for h in range(g.H):
                strided_copy(xn + (c * g.H + h) * W + w, sw, n,
                             dst + (a * sw + b) * ph_sz + (c * Hq + u) * Wq + v)
                a = a + 1
                if a == sh:
                    a = 0
                    u = u + 1


# Elements a buffer may need to start on a 64-byte line (line_aligned):
# 64 bytes of float.
cdef Py_ssize_t LINE_SLACK = 16


cdef inline floating* line_aligned(floating* p) noexcept nogil:
    """p rounded up to a 64-byte boundary (fewer than LINE_SLACK elements
    on, for an element-aligned p)."""
    return <floating*>((<size_t>p + 63) & ~(<size_t>63))


cdef inline const floating* sample_src(const floating* x, Py_ssize_t n, Py_ssize_t xs,
                                      const Geom* g, floating* buf) noexcept nogil:
    """The sample n (``xs`` elements apart) the taps' runs index: the input
    itself when no padding or stride phases are needed (and the runs stay
    inside the array), else its prepared copy in ``buf``."""
    cdef const floating* xn = x + n * xs
    if not g.prepared or (g.tail_only and n < g.N - 1):
        return xn
    prep_sample(xn, g, buf)
    return buf


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


cdef inline void grad_run(const floating* grow, Py_ssize_t pb, Py_ssize_t kc,
                          Py_ssize_t Wq, Py_ssize_t ow_n,
                          floating* dst, Py_ssize_t dst_stride) noexcept nogil:
    """dst[q*dst_stride] = gradient row ``grow`` (OH x OW) at padded-width
    position pb + q, or 0 at junk positions (ow >= OW); one output row at a
    time (a contiguous copy, then the junk columns)."""
    cdef Py_ssize_t oh = pb // Wq, ow = pb - (pb // Wq) * Wq, q = 0, run, valid, j
    cdef const floating* src
    cdef floating* d
    while q < kc:
        run = min(Wq - ow, kc - q)
        valid = max(0, min(run, ow_n - ow))
        src = grow + oh * ow_n + ow
        d = dst + q * dst_stride
        if dst_stride == 1:
            for j in range(valid):
                d[j] = src[j]
            for j in range(valid, run):
                d[j] = 0
        else:
            for j in range(valid):
                d[j * dst_stride] = src[j]
            for j in range(valid, run):
                d[j * dst_stride] = 0
        q = q + run
        ow = 0
        oh = oh + 1


cdef void grad_block_t(const float* g0, Py_ssize_t P, Py_ssize_t nch, Py_ssize_t pb,
                       Py_ssize_t kc, Py_ssize_t Wq, Py_ssize_t ow_n, float* dst,
                       Py_ssize_t ldd) noexcept nogil:
    """dst[q*ldd + j] = channel j's gradient row (``g0 + j*P``, OH x OW) at
    padded-width position pb + q, 0 at junk positions (ow >= OW) and for the
    channels nch <= j < ldd: grad_run of every channel at once, transposed by
    the vector kernel one output row's run at a time (the same values)."""
    cdef Py_ssize_t oh = pb // Wq, ow = pb - (pb // Wq) * Wq, q = 0, run, valid, j
    while q < kc:
        run = min(Wq - ow, kc - q)
        valid = max(0, min(run, ow_n - ow))
        if valid > 0:
            KER.tcopy_s(g0 + oh * ow_n + ow, P, nch, valid, dst + q * ldd, ldd)
        if run > valid:
            memset(dst + (q + valid) * ldd, 0, (run - valid) * ldd * sizeof(float))
        if nch < ldd:
            for j in range(q, q + valid):
                memset(dst + j * ldd + nch, 0, (ldd - nch) * sizeof(float))
        q = q + run
        ow = 0
        oh = oh + 1


cdef int64_t* tap_offsets(const Geom* g, Py_ssize_t* toff_max) except NULL:
    """toff[k] for tap k = (c, i, j): start of its run in a prepared sample.
    Channel c's taps are channel 0's plus c planes (the divisions once per
    (i, j), not per tap: they cost as much as a small layer's GEMM)."""
    cdef Py_ssize_t k, c, i, j, plane = g.Hq * g.Wq, khw = g.kh * g.kw
    cdef int64_t* toff = <int64_t*>alloc_scratch(g.K * sizeof(int64_t))
    toff_max[0] = 0
    if g.K == 0:
        return toff
    for i in range(g.kh):
        for j in range(g.kw):
            toff[i * g.kw + j] = \
                (((i * g.dh) % g.sh) * g.sw + (j * g.dw) % g.sw) * g.C * plane \
                + ((i * g.dh) // g.sh) * g.Wq + (j * g.dw) // g.sw
    for c in range(1, g.C):
        for k in range(khw):
            toff[c * khw + k] = toff[k] + c * plane
    for k in range(g.K):
        toff_max[0] = max(toff_max[0], toff[k])
    return toff


# --------------------------------------------------------------------------
# Forward, and the strided input gradient by stride phases
#
# Both run "passes" over the prepared sample: a pass is one GEMM of packed
# weight panels with the taps' runs (its own tap offsets and depth K) over
# ``rows`` x Wq padded-width positions, storing the ``cols`` valid columns
# of each row to ``out`` with its own row/column strides.  The forward is a
# single pass; the input gradient at stride s is one pass per stride phase.
# A pass's tiles are NR padded-width positions, computed in a scratch tile
# whose valid columns are then stored, or -- when the results of a row are
# contiguous and row tiles waste no more columns than the Wq - cols junk
# ones (e.g. cols a multiple of NR) -- up to NR columns of one row, which
# the micro-kernel writes in place (``tpr``, tiles per row), or (float32,
# rows of at most NR/2 columns, e.g. 16 or 14) NR/2 columns of each of two
# rows, written in place by the two-row kernel (``tpr2``, tiles per pair of
# rows), which wastes no columns on rows of 16.
# --------------------------------------------------------------------------

ctypedef struct Pass:
    const void* apw          # weight packed in MR-row panels, K columns
    const int64_t* toff      # K tap offsets (from the pass's first position)
    Py_ssize_t K, rows, cols, ntp
    Py_ssize_t tpr             # tiles per row (0: padded-width or two-row tiles)
    Py_ssize_t tpr2            # tiles per pair of rows (0: not two-row tiles)
    Py_ssize_t o0, orow, ocol  # result (r, c) of a channel at out + o0 + r*orow + c*ocol


ctypedef struct FwdArgs:
    Geom g                   # geometry of the prepared sample (x's channels)
    const void* x            # (N, C, H, W)
    const void* bias         # (Co,) or NULL
    void* out                # (N, Co, ...)
    void* scr                # per-thread scratch, ``per`` elements each
    const Pass* passes
    Py_ssize_t npass, Co, ntp  # passes, result channels, tiles per sample (all passes)
    Py_ssize_t per, s_c, MR, NR, npanel, T
    Py_ssize_t tb              # tiles per chunk (fwd_chunk_task when > 1)
    Py_ssize_t s_b             # packed B of a chunk per thread (0: B read in place)
    const int64_t* pboff       # its row offsets k*NR (k < KC), or NULL
    Py_ssize_t xs, os, ocs     # elements between samples of x, of out, channels of out
    Py_ssize_t G, xg, og, wg   # groups; elements between groups of x, out, packed weights
    cnx_ukr_s fs
    cnx_ukr_d fd
    cnx_ukr_s fsl              # fs, fd prefetching the next chunk's lines (NULL: none)
    cnx_ukr_d fdl
    cnx_ukr2_s f2s             # the two-row kernel of MR rows (NULL: none)
    int nt
    int act                  # epilogue on the result (ACT_*; ACT_NONE elsewhere than forward)
    double alpha             # its slope (ACT_LEAKY)


cdef inline const Pass* tile_pass(const FwdArgs* a, Py_ssize_t t, Py_ssize_t* ng,
                                  Py_ssize_t* j, Py_ssize_t step) noexcept nogil:
    """The pass of tile ``t`` (of all samples' tiles, ``ntp`` per (sample,
    group) pair; every ``step``-th pass holds tiles); sets ``ng`` to the
    pair and ``j`` to the tile's index in its pass."""
    cdef const Pass* ps = a.passes
    ng[0] = t // a.ntp
    j[0] = t - ng[0] * a.ntp
    while j[0] >= ps.ntp:
        j[0] = j[0] - ps.ntp
        ps = ps + step
    return ps


cdef inline const floating* pair_input(const FwdArgs* a, const floating* x, Py_ssize_t ng,
                                       Py_ssize_t n, floating* buf, Py_ssize_t* grp,
                                       const floating** bias) noexcept nogil:
    """The input runs of (sample, group) pair ng (sample n): sample_src of
    its group's channels, prepared in ``buf`` if need be; sets ``grp`` and,
    with a bias, ``bias`` to the group's."""
    grp[0] = ng - n * a.G
    if a.bias != NULL:
        bias[0] = <const floating*>a.bias + grp[0] * a.Co
    return sample_src(x + grp[0] * a.xg, n, a.xs, &a.g, buf)


cdef inline Py_ssize_t row_tile(const Pass* ps, Py_ssize_t j, Py_ssize_t NR,
                                const floating* src, Py_ssize_t Wq, floating* obase,
                                const floating** bsrc, floating** cdst) noexcept nogil:
    """Row tile j of a pass (``tpr`` > 0), up to NR results of one row
    computed in place: sets ``bsrc`` to its first tap's run in ``src`` and
    ``cdst`` to its first result (``obase``: the (sample, group) pair's
    results); returns how many results it has."""
    cdef Py_ssize_t r = j // ps.tpr, c = (j - r * ps.tpr) * NR
    bsrc[0] = src + r * Wq + c
    cdst[0] = obase + ps.o0 + r * ps.orow + c
    return min(NR, ps.cols - c)


cdef void fwd_task(const FwdArgs* a, int tid, floating* tag) noexcept nogil:
    """Tiles [T*tid/nt, T*(tid+1)/nt), ``ntp`` per (sample, group) pair: the
    pair's passes' tiles, pass after pass (NR padded-width positions computed
    in ``ct`` and their valid columns stored, or, ``tpr`` > 0, up to NR
    positions of one result row computed in place)."""
    cdef const floating* x = <const floating*>a.x
    cdef const floating* bias = <const floating*>a.bias
    cdef floating* out = <floating*>a.out
    cdef Py_ssize_t NR = a.NR, MR = a.MR, Co = a.Co, Wq = a.g.Wq
    cdef floating* ct = <floating*>a.scr + tid * a.per
    cdef Py_ssize_t t0 = a.T * tid // a.nt, t1 = a.T * (tid + 1) // a.nt
    cdef Py_ssize_t t, n, ng, grp = 0, j, cur = -1, p0, pc, kc, K, panel, co0, r, c
    cdef Py_ssize_t nr, nr2 = 0, ldc, H = NR // 2
    cdef const Pass* ps
    cdef const floating* apw
    cdef const floating* src = NULL
    cdef const floating* bsrc
    cdef const floating* bptr
    cdef const int64_t* boff
    cdef floating* cdst
    # a prepared pair's input (read once, by prep_sample) prefetched during
    # the previous pair's tiles, a share per tile, up to PREFETCH_PAIR_BYTES
    cdef Py_ssize_t pf = 0, jt, nxt
    if a.g.prepared:
        pf = min(a.g.C * a.g.H * a.g.W * sizeof(floating), PREFETCH_PAIR_BYTES) // 64
    for t in range(t0, t1):
        ps = tile_pass(a, t, &ng, &j, 1)
        n = ng // a.G
        p0 = j * NR
        if ng != cur:
            cur = ng
            src = pair_input(a, x, ng, n, ct + a.s_c, &grp, &bias)
        jt = t - ng * a.ntp  # the tile's index among the pair's (all passes)
        if pf > 0 and (ng + 1) * a.ntp < t1:
            nxt = ng + 1
            cnx_prefetch_lines(<const char*>(x + (nxt // a.G) * a.xs + (nxt % a.G) * a.xg),
                               jt * pf // a.ntp, (jt + 1) * pf // a.ntp)
        # B is read in place: every tap's run of NR positions lies inside the
        # (prepared) sample, see reach().
        if ps.tpr > 0:
            nr = row_tile(ps, j, NR, src, Wq, out + n * a.os + grp * a.og, &bsrc, &cdst)
            ldc = a.ocs
        elif ps.tpr2 > 0:
            # Rows r and r + 1 (none past the last row), columns [c, c + H).
            r = j // ps.tpr2
            c = (j - r * ps.tpr2) * H
            r = 2 * r
            nr = min(H, ps.cols - c)
            nr2 = nr if r + 1 < ps.rows else 0
            bsrc = src + r * Wq + c
            cdst = out + n * a.os + grp * a.og + ps.o0 + r * ps.orow + c
            ldc = a.ocs
        else:
            bsrc = src + p0
            cdst = ct
            nr = ldc = NR
        apw = <const floating*>ps.apw + grp * a.wg
        K = ps.K
        pc = 0
        while pc < K:
            kc = min(<Py_ssize_t>KC, K - pc)
            boff = ps.toff + pc
            for panel in range(a.npanel):
                co0 = panel * MR
                bptr = NULL
                if bias != NULL and pc == 0:
                    bptr = bias + co0
                if floating is float:
                    if ps.tpr2 > 0:
                        a.f2s(kc, apw + panel * K * MR + pc * MR, bsrc, boff, Wq,
                              cdst + co0 * ldc, ldc, ps.orow, <int>min(MR, Co - co0),
                              <int>nr, <int>nr2, pc > 0, bptr)
                    else:
                        a.fs(kc, apw + panel * K * MR + pc * MR, NULL, bsrc, boff,
                             cdst + co0 * ldc, ldc, <int>min(MR, Co - co0), <int>nr, pc > 0,
                             bptr)
                else:
                    a.fd(kc, apw + panel * K * MR + pc * MR, NULL, bsrc, boff,
                         cdst + co0 * ldc, ldc, <int>min(MR, Co - co0), <int>nr, pc > 0,
                         bptr)
                if (ps.tpr > 0 or ps.tpr2 > 0) and pc + KC >= K:
                    # The epilogue on the panel's rows while they are in L1
                    # (rows a plane apart share cache sets: after all the
                    # panels, a large Co's first rows would be evicted).
                    act_rows(KER, cdst + co0 * ldc, ldc, cdst + co0 * ldc, ldc,
                             min(MR, Co - co0), nr, a.act, <floating>a.alpha)
                    if ps.tpr2 > 0:
                        act_rows(KER, cdst + ps.orow + co0 * ldc, ldc,
                                 cdst + ps.orow + co0 * ldc, ldc,
                                 min(MR, Co - co0), nr2, a.act, <floating>a.alpha)
            pc = pc + KC
        if ps.tpr > 0 or ps.tpr2 > 0:
            continue
        fwd_store(a, ps, ct, n, grp, p0, tag)


# A pass's weight block of one KC slice (npanel*MR*KC elements) is reused
# across a chunk's tiles while it stays in L2 when the tiles' results (their
# C tiles, npanel*MR*NR elements each) take at most CHUNK_C_BYTES of it; the
# chunked order only pays when the whole packed weight would not stay there
# (over CHUNK_MIN_WEIGHT_BYTES), and holds at most CHUNK_MAX_TILES tiles.
cdef Py_ssize_t CHUNK_C_BYTES = 512 * 1024
cdef Py_ssize_t CHUNK_MIN_WEIGHT_BYTES = 1024 * 1024
cdef enum:
    CHUNK_MAX_TILES = 32
# A chunk's packed B (fwd_chunk_task with pboff) stays within this: with
# AVX2, a quarter of a Zen 3 core's L2, where the next chunk's input,
# prefetched between kernel calls, and the weight's panels stay too.  With
# AVX-512 (L2 of 1-2 MB) four times as much: on a Xeon with 2 MB of L2 per
# core, float64 256 -> 64 channels on 28x28, batch 32, the forward took
# 19.5 ms with 128 KB chunks, 17.4 with 512 KB, 16.8 with 512 KB and no
# prefetch (prefetches issued between kernel calls waited on the reads they
# requested instead of overlapping them; 1 MB chunks no faster).  The
# AVX-512 kernels instead prefetch the next chunk's lines themselves, one
# per step of k (the _pfl kernels, next_chunk_lines): on a Xeon (Emerald
# Rapids, 2 MB of L2), that forward 15.3 -> 13.2-13.3 ms at one thread,
# 7.2 -> 6.5 at two; float32 7.1 -> 6.5 and 3.5-3.7 -> 3.4; 64 -> 256
# channels 0.94-0.95x, float64 128 -> 32 on 16x16 0.92x, smaller layers
# the same.
cdef bint AVX512_KER = KER.d_nr == 16
cdef Py_ssize_t PACK_B_BYTES = (512 if AVX512_KER else 128) * 1024
cdef bint PACK_PREFETCH = not AVX512_KER
# fwd_chunk_task with packed B streams a result of at least
# STREAM_MIN_BYTES to memory (cnnext_stream.h) when its flat tiles' passes
# have at most STREAM_MAX_K taps: a 1x1 input gradient 64 -> 256 channels
# on 28x28 (N=32, 51 MB) ran in 15 ms instead of 35 into a reused array,
# 24 instead of 26 into a new one; the 256 -> 64 forward (K = 256) ran the
# same either way.
cdef Py_ssize_t STREAM_MIN_BYTES = 4 * 1024 * 1024
cdef Py_ssize_t STREAM_MAX_K = 128


cdef Py_ssize_t fwd_chunk_tiles(const FwdArgs* a, Py_ssize_t K, floating* tag) noexcept nogil:
    """Tiles per chunk for a pass of depth K (1: tile by tile, fwd_task).
    float64 only: its 16-column tiles do half the arithmetic per weight byte
    of float32's 32, so a weight streamed from L3 once per tile bounds it."""
    cdef Py_ssize_t tile_c = a.npanel * a.MR * a.NR * sizeof(floating)
    if floating is double:
        if a.npanel * a.MR * K * sizeof(floating) > CHUNK_MIN_WEIGHT_BYTES:
            return max(1, min(CHUNK_MAX_TILES, CHUNK_C_BYTES // tile_c))
    return 1


cdef inline void fwd_store(const FwdArgs* a, const Pass* ps, const floating* ct,
                           Py_ssize_t n, Py_ssize_t grp, Py_ssize_t p0,
                           floating* tag) noexcept nogil:
    """Store the valid columns (c < cols) of the padded-width tile at p0
    (computed in ``ct``, NR columns per channel), run by run."""
    cdef floating* out = <floating*>a.out
    cdef Py_ssize_t NR = a.NR, Wq = a.g.Wq, ocol = ps.ocol, pp = p0, r, c, run, q, co0, kk
    cdef floating* obase
    cdef floating* orow
    cdef const floating* crow
    while pp < min(p0 + NR, ps.rows * Wq):
        r = pp // Wq
        c = pp - r * Wq
        run = min(Wq - c, p0 + NR - pp)
        if c < ps.cols:
            q = min(run, ps.cols - c)
            obase = out + n * a.os + grp * a.og + ps.o0 + r * ps.orow + c * ocol
            if ocol == 1:  # vector copies (with the forward's epilogue)
                store_rows(ct + pp - p0, NR, obase, a.ocs, a.Co, q, a.act,
                           <floating>a.alpha)
            elif floating is float and ocol == 2 and KER.merge2_s != NULL:
                KER.merge2_s(ct + pp - p0, NR, obase, a.ocs, a.Co, q)  # stride-2 phases
            else:
                for co0 in range(a.Co):
                    orow = obase + co0 * a.ocs
                    crow = ct + co0 * NR + pp - p0
                    for kk in range(q):
                        orow[kk * ocol] = crow[kk]
        pp = pp + run


cdef Py_ssize_t packed_flat(Pass* ps, Py_ssize_t Wq, Py_ssize_t NR,
                            Py_ssize_t span) noexcept nogil:
    """A pass of chunks of packed B with no junk columns (rows back to back
    in the result) takes flat tiles, computed in place with nothing wasted
    (pass_tiles counts padded-width tiles' copies, which flat ones do not
    make, and a 28-wide row in row tiles computes 32 columns: the 64 -> 256
    channel input gradient ran 8% faster flat).  Returns the runs' reach
    (``span`` when unchanged)."""
    if ps.cols != Wq or ps.orow != Wq or ps.ocol != 1:
        return span
    ps.tpr = 0
    ps.tpr2 = 0
    ps.ntp = cdiv(ps.rows * Wq, NR)
    return ps.ntp * NR


cdef int64_t* packed_b_chunks(FwdArgs* a, floating* tag) except? NULL:
    """Set ``a`` to run chunks of B packed (fwd_chunk_task with ``pboff``:
    a 1x1 convolution (see copies_1x1_runs), its forward and its input
    gradient): the tiles per chunk, the packed chunk's scratch per thread
    and its row offsets, returned (the caller frees them); ``s_c`` set."""
    cdef Py_ssize_t k
    a.tb = max(1, min(CHUNK_MAX_TILES, CHUNK_C_BYTES // (a.s_c * sizeof(floating)),
                      PACK_B_BYTES // (KC * a.NR * sizeof(floating))))
    a.s_b = a.tb * KC * a.NR + LINE_SLACK
    cdef int64_t* pboff = <int64_t*>alloc_scratch(KC * sizeof(int64_t))
    for k in range(KC):
        pboff[k] = k * a.NR
    a.pboff = pboff
    return pboff


cdef inline Py_ssize_t even_chunk(Py_ssize_t tb, Py_ssize_t left) noexcept nogil:
    """Tiles of the next chunk of ``left`` tiles in chunks of at most ``tb``,
    as even as can be (49 tiles in 13, 12, 12, 12 rather than 16, 16, 16, 1,
    whose last chunk reads the weight for one tile)."""
    return cdiv(left, cdiv(left, tb))


cdef Py_ssize_t next_chunk_lines(const FwdArgs* a, Py_ssize_t t, Py_ssize_t t1,
                                 Py_ssize_t esz, int64_t* pfd) noexcept nogil:
    """Describe in ``pfd`` (CNX_PFL_DECL's aoff) the cache lines of the
    input runs that the chunk starting at tile ``t`` (a thread's tiles end
    at ``t1``) will pack, when it is a 1x1 layer's chunk of flat tiles read
    from the input itself (elements ``esz`` bytes); returns how many lines
    (0: none to prefetch)."""
    cdef Py_ssize_t ng, j, n, grp, nt
    cdef const Pass* ps
    cdef size_t first, last
    if t >= t1 or a.g.kh * a.g.kw != 1:
        return 0
    ps = tile_pass(a, t, &ng, &j, 1)
    n = ng // a.G
    if ps.tpr != 0 or ps.K > KC or ps.K < 1 or (
            a.g.prepared and not (a.g.tail_only and n < a.g.N - 1)):  # as sample_src
        return 0
    grp = ng - n * a.G
    nt = even_chunk(a.tb, min(t1 - t, ps.ntp - j))
    first = <size_t>a.x + <size_t>((grp * a.xg + n * a.xs + ps.toff[0] + j * a.NR) * esz)
    last = first + <size_t>(nt * a.NR * esz) - 1
    pfd[0] = <int64_t>(first & ~(<size_t>63))
    pfd[1] = (ps.toff[1] - ps.toff[0]) * esz if ps.K > 1 else 0
    pfd[2] = <int64_t>((last >> 6) - (first >> 6) + 1)
    return ps.K * pfd[2]


cdef void fwd_chunk_task(const FwdArgs* a, int tid, floating* tag) noexcept nogil:
    """fwd_task's tiles in chunks of up to ``tb`` consecutive tiles of one
    (sample, group) pair and pass, the KC loop outside the chunk's tiles:
    each KC slice of the packed weight is read from memory once per chunk
    instead of once per tile, then reused from L2, one panel at a time over
    the chunk's tiles (the panel's KC x MR block stays in L1, the tiles' B
    runs come from L2).  Every result sums the same KC blocks in the same
    order with the same kernel: bitwise fwd_task's.

    With ``pboff``, each KC block of the chunk's B runs is first copied to a
    packed buffer tile by tile, tile i's KC rows of NR values back to back
    from i*KC*NR (pboff[k] = k*NR; cnx_pack_runs reads tap by tap): a 1x1
    convolution's taps are planes apart, so reading them in place would
    touch a page per tap in every panel's call (TLB and cache misses, and
    one short stream per plane from memory), where the copy reads each
    plane's run once per chunk.  Tile by tile, each kernel call reads one
    stream; rows a chunk apart (tap by tap, a 1 KB stride) mapped a tile's
    rows onto 4 of L1's 64 sets, evicting the weight panel (measured, 256
    -> 64 channels on 28x28, batch 32: forward 0.91-0.93x the time in
    float64, 0.96x in float32 at one thread, 0.88-0.91x at two; the
    float64 backward 0.82x).  With no junk columns (``flat``),
    padded-width tiles are result positions and are computed in place."""
    cdef const floating* x = <const floating*>a.x
    cdef const floating* bias = <const floating*>a.bias
    cdef floating* out = <floating*>a.out
    cdef Py_ssize_t NR = a.NR, MR = a.MR, Co = a.Co, Wq = a.g.Wq
    cdef floating* ct0 = <floating*>a.scr + tid * a.per
    cdef Py_ssize_t t0 = a.T * tid // a.nt, t1 = a.T * (tid + 1) // a.nt
    cdef Py_ssize_t t, n, ng, grp = 0, j, j0, cur = -1, pc, kc, K, panel, co0, r, c
    cdef Py_ssize_t nt, i, nr, ldc, k, pf_n
    cdef int64_t tile0[CHUNK_MAX_TILES]
    cdef bint flat
    cdef const Pass* ps
    cdef const floating* apw
    cdef const floating* src = NULL
    cdef const floating* bsrc
    cdef const floating* bptr
    cdef const int64_t* boff
    cdef floating* cdst
    # the packed B on a 64-byte line (malloc's 16-byte alignment split every
    # vector load of it in two; s_b holds the shift)
    cdef floating* bp = line_aligned(ct0 + a.tb * a.s_c)
    cdef floating* sbuf = ct0 + a.tb * a.s_c + a.s_b
    cdef bint stream = (a.pboff != NULL and a.g.N * a.os * sizeof(floating) >= STREAM_MIN_BYTES
                        and (STREAM_D != NULL if floating is double else STREAM_S != NULL))
    cdef int64_t pfd[5]
    cdef Py_ssize_t pf_lines = 0, pf_per = 0, q
    t = t0
    while t < t1:
        ps = tile_pass(a, t, &ng, &j0, 1)
        n = ng // a.G
        nt = even_chunk(a.tb, min(t1 - t, ps.ntp - j0))
        pf_lines = 0
        if ((a.fsl != NULL if floating is float else a.fdl != NULL) and a.pboff != NULL
                and ps.tpr == 0 and ps.K <= KC):
            pf_lines = next_chunk_lines(a, t + nt, t1, sizeof(floating), pfd)
            pf_per = min(ps.K, cdiv(pf_lines, a.npanel * nt))
        # no junk columns and rows back to back: padded-width tiles are
        # result positions, computed in place
        flat = ps.tpr == 0 and ps.cols == Wq and ps.ocol == 1 and ps.orow == Wq
        if ng != cur:
            cur = ng
            src = pair_input(a, x, ng, n, sbuf, &grp, &bias)
        apw = <const floating*>ps.apw + grp * a.wg
        K = ps.K
        pc = 0
        while pc < K:
            kc = min(<Py_ssize_t>KC, K - pc)
            boff = ps.toff + pc
            # one KC block of contiguous runs (a 1x1 layer of at most KC
            # input channels): the next chunk of the pair is prefetched
            # during this one's products, a share per panel (measured, 256
            # -> 64 channels on 28x28, batch 32, float64 with PACK_B_BYTES
            # halved to leave it room in L2: 0.95-0.97x the time at one
            # thread, 0.84-0.92x at two; float32 0.90x at two)
            pf_n = 0
            if PACK_PREFETCH and a.pboff != NULL and ps.tpr == 0 and K <= KC:
                pf_n = min(a.tb, t1 - t - nt, ps.ntp - j0 - nt)
            if a.pboff != NULL:
                for i in range(nt):
                    j = j0 + i
                    if ps.tpr == 0 or ps.tpr * NR == Wq:  # tile j's run starts at j*NR
                        tile0[i] = j * NR
                    else:
                        r = j // ps.tpr
                        tile0[i] = r * Wq + (j - r * ps.tpr) * NR
                cnx_pack_runs(<const char*>src, boff, tile0, sizeof(floating), kc, nt,
                              NR * sizeof(floating), <char*>bp, KC * NR * sizeof(floating))
                boff = a.pboff
            # panel by panel, each over the chunk's tiles (measured at one
            # thread against every panel tile by tile: the 256 -> 64 channel
            # 1x1 forward, batch 32 on 28x28, 12.4-13.4 ms against 12.6-13.5;
            # a 5x5 64 -> 128 and a 3x3 128 -> 128 on 32x32, batch 8, 2-7%
            # faster; 512 -> 128 1x1 on 14x14 the same)
            for panel in range(a.npanel):
                co0 = panel * MR
                if pf_n > 0:  # the next chunk's runs, a share per panel
                    cnx_prefetch_runs(<const char*>src, ps.toff + pc, sizeof(floating),
                                      kc * panel // a.npanel, kc * (panel + 1) // a.npanel,
                                      (j0 + nt) * NR, pf_n * NR * sizeof(floating))
                for i in range(nt):
                    j = j0 + i
                    if ps.tpr > 0:
                        nr = row_tile(ps, j, NR, src, Wq, out + n * a.os + grp * a.og, &bsrc,
                                      &cdst)
                        ldc = a.ocs
                    elif flat and stream and K <= STREAM_MAX_K:  # in scratch, streamed below
                        bsrc = src + j * NR
                        cdst = ct0 + i * a.s_c
                        nr = min(NR, ps.rows * Wq - j * NR)
                        ldc = NR
                    elif flat:
                        bsrc = src + j * NR
                        cdst = out + n * a.os + grp * a.og + ps.o0 + j * NR
                        nr = min(NR, ps.rows * Wq - j * NR)
                        ldc = a.ocs
                    else:
                        bsrc = src + j * NR
                        cdst = ct0 + i * a.s_c
                        nr = ldc = NR
                    if a.pboff != NULL:
                        bsrc = bp + i * KC * NR
                    bptr = NULL
                    if bias != NULL and pc == 0:
                        bptr = bias + co0
                    if pf_lines > 0:  # a share of the next chunk's lines prefetched
                        q = (panel * nt + i) * pf_per
                        pfd[3] = q
                        pfd[4] = max(0, min(pf_per, pf_lines - q))
                    if floating is float and pf_lines > 0:
                        a.fsl(kc, apw + panel * K * MR + pc * MR, pfd, bsrc, boff,
                              cdst + co0 * ldc, ldc, <int>min(MR, Co - co0), <int>nr, pc > 0,
                              bptr)
                    elif floating is float:
                        a.fs(kc, apw + panel * K * MR + pc * MR, NULL, bsrc, boff,
                             cdst + co0 * ldc, ldc, <int>min(MR, Co - co0), <int>nr, pc > 0,
                             bptr)
                    elif pf_lines > 0:
                        a.fdl(kc, apw + panel * K * MR + pc * MR, pfd, bsrc, boff,
                              cdst + co0 * ldc, ldc, <int>min(MR, Co - co0), <int>nr, pc > 0,
                              bptr)
                    else:
                        a.fd(kc, apw + panel * K * MR + pc * MR, NULL, bsrc, boff,
                             cdst + co0 * ldc, ldc, <int>min(MR, Co - co0), <int>nr, pc > 0,
                             bptr)
                    if (ps.tpr > 0 or flat) and pc + KC >= K:
                        act_rows(KER, cdst + co0 * ldc, ldc, cdst + co0 * ldc, ldc,
                                 min(MR, Co - co0), nr, a.act, <floating>a.alpha)
            pc = pc + KC
        if flat and stream and K <= STREAM_MAX_K:
            if floating is double:
                STREAM_D(ct0, a.s_c, Co, min(nt * NR, ps.rows * Wq - j0 * NR),
                         out + n * a.os + grp * a.og + ps.o0 + j0 * NR, a.ocs)
            else:
                STREAM_S(ct0, a.s_c, Co, min(nt * NR, ps.rows * Wq - j0 * NR),
                         out + n * a.os + grp * a.og + ps.o0 + j0 * NR, a.ocs)
        elif ps.tpr == 0 and not flat:
            for i in range(nt):
                fwd_store(a, ps, ct0 + i * a.s_c, n, grp, (j0 + i) * NR, <floating*>NULL)
        t = t + nt


# Storing a scratch tile's valid columns costs about as much per position as
# this many more taps of the GEMM (measured: a 7x7 stride-2 stem, K = 147,
# spent 13% of its time in those copies when they were scalar; with vector
# copies, store_rows, padded-width tiles still lost to row tiles there and on
# 28-wide rows, measured with 4).
cdef Py_ssize_t STORE_TAPS = 32


cdef inline void store_rows(const floating* src, Py_ssize_t lds, floating* dst,
                            Py_ssize_t ldd, Py_ssize_t rows, Py_ssize_t cols, int act,
                            floating alpha) noexcept nogil:
    """dst = ``act`` of src (a copy for ACT_NONE), ``rows`` rows of ``cols``
    values, vectorised: the same bits as the scalar copy or act_value."""
    if rows <= 0 or cols <= 0:
        return
    if floating is float:
        KER.act_s(src, lds, dst, ldd, rows, cols, act, alpha)
    else:
        KER.act_d(src, lds, dst, ldd, rows, cols, act, alpha)


cdef Py_ssize_t pass_tiles(Pass* ps, Py_ssize_t Wq, Py_ssize_t NR, bint two_row) noexcept nogil:
    """Set the pass's tiles (``tpr``, ``tpr2``, ``ntp``); return how far past
    its first position a tap's runs reach.  Row tiles compute R >= cols
    columns per row in place; padded-width tiles compute Wq per row and copy
    the valid ones: row tiles when R*K <= Wq*(K + STORE_TAPS).  With
    ``two_row`` (a two-row kernel exists), rows of at most NR/2 columns may
    take two-row tiles, which compute R2 >= cols columns (R2 a multiple of
    NR/2) of every row, rounded up to an even number of rows, in place:
    chosen when that is fewer products than the choice above (counting the
    copies as STORE_TAPS taps).  Longer rows never take them: with 28
    columns (a 1x1 layer on 28x28 maps) the count came out a hair lower
    than for padded-width tiles, but the padded-width tiles (contiguous
    runs, prefetched for 1x1 layers, vector copies) ran 30% faster."""
    cdef Py_ssize_t R = cdiv(ps.cols, NR) * NR, H = NR // 2
    cdef Py_ssize_t R2 = cdiv(ps.cols, H) * H, pairs = cdiv(ps.rows, 2)
    cdef bint rows_ok = ps.ocol == 1 and ps.cols > 0 and ps.rows > 0
    cdef Py_ssize_t cost = cdiv(ps.rows * Wq, NR) * NR * (ps.K + STORE_TAPS)
    ps.tpr = 0
    ps.tpr2 = 0
    if rows_ok and R * ps.K <= Wq * (ps.K + STORE_TAPS):
        ps.tpr = R // NR
        cost = ps.rows * R * ps.K
    if rows_ok and two_row and ps.cols <= H and 2 * pairs * R2 * ps.K < cost:
        ps.tpr = 0
        ps.tpr2 = R2 // H
        ps.ntp = pairs * ps.tpr2
        return (2 * pairs - 1) * Wq + R2
    if ps.tpr > 0:
        ps.ntp = ps.rows * ps.tpr
        return (ps.rows - 1) * Wq + R
    ps.ntp = cdiv(ps.rows * Wq, NR)
    return ps.ntp * NR


# Flat tiles only for passes of at most this many taps: a tile spanning two
# rows reads about twice the cache lines of a row tile, which stays in L1
# across the weight panels only for few taps (measured, float32: a 7x7
# stem, K = 147, ran 5% faster, LeNet's 5x5 on 8-wide rows 11%; 3x3 layers
# on 56- and 24-wide rows, K = 576 and 288, 10-15% slower).
cdef Py_ssize_t FLAT_MAX_K = 160


cdef bint flat_tiles_pay(const Pass* ps, Py_ssize_t NR) noexcept nogil:
    """True when the pass (a forward: result rows back to back) runs on
    fewer products as flat tiles, NR consecutive result positions across
    row ends (fwd_flat_task), than as the tiles pass_tiles chose: rows whose
    width is no multiple of NR waste the end of each row's last tile (8 of
    64 columns on a 7x7 stem's 56-wide rows, 8 of 16 on 8-wide ones).  The
    flat-tile kernel reads each half-tile vector from at most two image
    rows: rows of at least NR/2 - 1 columns, or of exactly NR/4."""
    cdef Py_ssize_t P = ps.rows * ps.cols, H = NR // 2, cur
    if P == 0 or ps.ocol != 1 or ps.orow != ps.cols or ps.o0 != 0 or ps.K > FLAT_MAX_K:
        return False
    if not (ps.cols >= H - 1 or 4 * ps.cols == NR):
        return False
    cur = ps.ntp * NR * (ps.K if ps.tpr > 0 or ps.tpr2 > 0 else ps.K + STORE_TAPS)
    return cdiv(P, NR) * NR * ps.K < cur


# Flat tiles computed together, each weight panel over all of them before
# the next panel: the panel stays in L1 across the tiles, and the tiles'
# input runs across the panels (measured on a 7x7 stem, 64 channels in 8
# panels of 37 KB in all: 1-3% faster than tile by tile at 1 and 2 threads;
# groups of 4 to 16 alike).  Also the unit of work sharing (fwd_flat_task).
cdef enum:
    FLAT_GROUP = 8


cdef void flat_group(const FwdArgs* a, const float* src, const float* apw,
                     const float* bias, Py_ssize_t n, Py_ssize_t grp, Py_ssize_t j,
                     Py_ssize_t nq) noexcept nogil:
    """Flat tiles j..j+nq-1 of sample n, group grp (its prepared input
    ``src``, packed weight ``apw`` and ``bias``), panel by panel: tile j is
    result positions [j*NR, j*NR + NR) of the flattened (rows*cols) result,
    computed in place by the flat-tile kernel (cnx_ukrf_s), each of its two
    vectors read from the end of one image row and the start of the next.
    Every result sums the same KC blocks in the same order as with
    fwd_task's kernels: bitwise the same."""
    cdef const Pass* ps = a.passes
    cdef float* out = <float*>a.out
    cdef Py_ssize_t NR = a.NR, MR = a.MR, Co = a.Co, Wq = a.g.Wq, OW = ps.cols
    cdef Py_ssize_t P = ps.rows * ps.cols, K = ps.K, H = NR // 2, ldc = a.ocs
    cdef Py_ssize_t q, p0, pv, pc, kc, panel, co0, mr, r, c, v, cnt, la
    cdef int64_t off[FLAT_GROUP][4]
    cdef uint32_t ma[FLAT_GROUP]
    cdef uint32_t mb[FLAT_GROUP]
    cdef int nr[FLAT_GROUP]
    cdef float* cdst[FLAT_GROUP]
    cdef cnx_ukrf_s f[FLAT_GROUP]
    cdef const float* bptr
    for q in range(nq):
        p0 = (j + q) * NR
        nr[q] = <int>min(NR, P - p0)
        ma[q] = 0
        mb[q] = 0
        for v in range(2):
            pv = p0 + v * H
            cnt = min(H, nr[q] - v * H)
            off[q][2 * v] = 0
            off[q][2 * v + 1] = 0
            if cnt <= 0:
                continue
            r = pv // OW
            c = pv - r * OW
            la = min(cnt, OW - c)
            off[q][2 * v] = r * Wq + c
            off[q][2 * v + 1] = (r + 1) * Wq - la if la < cnt else off[q][2 * v]
            ma[q] = ma[q] | ((((<uint32_t>1) << la) - 1) << (16 * v))
            mb[q] = mb[q] | (((((<uint32_t>1) << cnt) - 1)
                              ^ (((<uint32_t>1) << la) - 1)) << (16 * v))
        # the kernel whose merged loads are those of the spanning vectors
        f[q] = KER.s_indf_mr[8 * ((mb[q] & 0xFFFF) != 0) + 16 * ((mb[q] >> 16) != 0) + MR - 1]
        cdst[q] = out + n * a.os + grp * a.og + p0
    pc = 0
    while pc < K:
        kc = min(<Py_ssize_t>KC, K - pc)
        for panel in range(a.npanel):
            co0 = panel * MR
            mr = min(MR, Co - co0)
            bptr = NULL
            if bias != NULL and pc == 0:
                bptr = bias + co0
            for q in range(nq):
                f[q](kc, apw + panel * K * MR + pc * MR, src, ps.toff + pc, off[q], ma[q],
                     mb[q], cdst[q] + co0 * ldc, ldc, <int>mr, nr[q], pc > 0, bptr)
                if pc + KC >= K:
                    act_rows(KER, cdst[q] + co0 * ldc, ldc, cdst[q] + co0 * ldc, ldc,
                             mr, nr[q], a.act, <float>a.alpha)
        pc = pc + KC


cdef void fwd_flat_task(const FwdArgs* a, int tid) noexcept nogil:
    """fwd_task on flat tiles (float32, one pass; see flat_tiles_pay): the
    thread's contiguous share of the units, FLAT_GROUP tiles of one
    (sample, group) pair each (the last one of a pair shorter), every unit
    by flat_group.  The pair's input is prepared when it changes."""
    cdef const float* x = <const float*>a.x
    cdef const float* bias = <const float*>a.bias
    cdef float* buf = <float*>a.scr + tid * a.per
    cdef const float* apw = <const float*>a.passes.apw
    cdef const float* src = NULL
    cdef Py_ssize_t upp = cdiv(a.ntp, FLAT_GROUP), units = (a.T // a.ntp) * upp
    cdef Py_ssize_t u, n, ng, grp = 0, cur = -1, j
    for u in range(units * tid // a.nt, units * (tid + 1) // a.nt):
        ng = u // upp
        j = (u - ng * upp) * FLAT_GROUP
        n = ng // a.G
        if ng != cur:
            cur = ng
            src = pair_input(a, x, ng, n, buf, &grp, &bias)
            apw = <const float*>a.passes.apw + grp * a.wg
        flat_group(a, src, apw, bias, n, grp, j, min(<Py_ssize_t>FLAT_GROUP, a.ntp - j))


ctypedef void (*fwd_task_t)(const FwdArgs* a, int tid) noexcept nogil


cdef void run_tasks(const FwdArgs* a, fwd_task_t task) noexcept nogil:
    """Run ``task`` on a.nt threads, once per thread (one thread: no
    OpenMP region)."""
    cdef Py_ssize_t tid
    if a.nt == 1:
        task(a, 0)
    else:
        for tid in prange(a.nt, schedule="static", chunksize=1, num_threads=a.nt):
            task(a, <int>tid)


# A float32 1x1 layer with AVX-512 whose input and result take at least
# these bytes copies its runs (and streams a result of K <= STREAM_MAX_K
# taps) instead of reading them in place (measured on 2 cores of a Xeon, 2
# MB of L2 each: 256 -> 64 channels on 28x28, batch 32, the forward 0.83x
# the time at one thread, 0.90x at two, the backward 0.69x and 0.68x (its
# input gradient's 26 MB result streamed); 512 -> 128 on 14x14, batch 8,
# and 32 -> 64 on 56x56, batch 4, 0.80-0.95x; a layer that stays in L2,
# 128 -> 32 on 16x16, batch 16 (2.5 MB), no faster: in place).
cdef Py_ssize_t PACK_1X1_S_BYTES = 3 << 20


cdef inline Py_ssize_t elems4(const floating[:, :, :, ::1] a) noexcept nogil:
    return a.shape[0] * a.shape[1] * a.shape[2] * a.shape[3]


cdef inline bint copies_1x1_runs(Py_ssize_t taps, Py_ssize_t MR, Py_ssize_t nbytes,
                                 floating* tag) noexcept nogil:
    """True when a 1x1 layer's runs (each tap a plane away from the last)
    are copied a block of positions at a time before the micro-kernel reads
    them (its input and result ``nbytes`` long): for AVX-512's wide float64
    panels (more rows than its MR), and on AVX2 (6-row kernels), where
    reading them in place took 1.1-1.9x as long (a Zen 3 core); AVX-512's
    float32 from PACK_1X1_S_BYTES.  AVX-512 otherwise prefetches them (the
    _pf kernels)."""
    if taps != 1:
        return False
    if floating is float:
        if AVX512_KER:
            return nbytes >= PACK_1X1_S_BYTES
    return MR > mr_of(tag) or mr_of(tag) == 6


cdef void fwd_kernel(FwdArgs* a, Py_ssize_t Co, floating* tag) noexcept nogil:
    """Set the micro-kernel, its MR and NR, and the panels of Co result channels:
    as few panels as the full kernel needs, of as few rows as hold Co (e.g. 6
    channels: one 6-row panel, no FMAs on 2 empty rows of an 8-row one; 12:
    two of 6) when the variant has a kernel of that many rows, or 4-row
    panels where 6-row ones would leave over 5% of the rows empty.  The
    rows' sums are the same either way."""
    cdef Py_ssize_t mr
    a.Co = Co
    a.act = ACT_NONE
    a.alpha = 0.0
    a.fs = KER.s_ind
    a.fd = KER.d_ind
    a.fsl = NULL
    a.fdl = NULL
    a.f2s = NULL
    a.MR = mr_of(<floating*>NULL)
    a.NR = nr_of(<floating*>NULL)
    mr = cdiv(Co, max(1, cdiv(Co, a.MR)))
    if mr == a.MR == 6 and Co % 4 == 0 and cdiv(Co, 6) * 6 * 19 > Co * 20:
        # AVX2's 6-row panels: 16 channels in three would compute 18 rows, 32
        # in six 36; panels of 4 rows run at 0.95x the 6-row kernel's rate
        # (a Zen 3 core) and waste none
        mr = 4
    if 0 < mr < a.MR:
        if floating is float:
            if KER.s_ind_mr[mr - 1] != NULL:
                a.fs = KER.s_ind_mr[mr - 1]
                a.MR = mr
        else:
            if KER.d_ind_mr[mr - 1] != NULL:
                a.fd = KER.d_ind_mr[mr - 1]
                a.MR = mr
    if floating is float:
        if a.MR <= 8:
            a.f2s = KER.s_ind2r_mr[a.MR - 1]
        if a.fs == KER.s_ind:
            a.fsl = KER.s_ind_pfl
    a.npanel = cdiv(Co, a.MR)
    fwd_kernel_wide(a, Co, <floating*>NULL)


cdef void fwd_kernel_wide(FwdArgs* a, Py_ssize_t Co, floating* tag) noexcept nogil:
    """float64 with more than 8 result channels: panels of 9..14 rows (as few
    panels of 14 as hold Co, as few rows each as hold it: 256 channels in 19
    panels of 14, 64 in 5 of 13) when the variant has those kernels."""
    cdef Py_ssize_t mr = cdiv(Co, max(1, cdiv(Co, 14)))
    if floating is double:
        if Co > 8 and mr >= 9 and KER.d_ind_wide[mr - 9] != NULL:
            a.fd = KER.d_ind_wide[mr - 9]
            a.fdl = KER.d_ind_wide_pfl[mr - 9]
            a.MR = mr
            a.npanel = cdiv(Co, mr)


cdef void fwd_run(FwdArgs* a, floating* tag) noexcept nogil:
    """Run the tasks of ``a`` (its scratch, passes and arrays set)."""
    cdef Py_ssize_t tid
    if a.tb > 1:
        if a.nt == 1:
            fwd_chunk_task(a, 0, <floating*>NULL)
        else:
            for tid in prange(a.nt, schedule="static", chunksize=1, num_threads=a.nt):
                fwd_chunk_task(a, <int>tid, <floating*>NULL)
        return
    if a.nt == 1:
        fwd_task(a, 0, <floating*>NULL)
    else:
        for tid in prange(a.nt, schedule="static", chunksize=1, num_threads=a.nt):
            fwd_task(a, <int>tid, <floating*>NULL)


# --------------------------------------------------------------------------
# float64 forward on channel-vector tiles (cnnext_cvd.h)
#
# A tile is up to CV_MAXP consecutive positions of one output row by CV_NCH
# output channels (14 x 16 with AVX-512F, 6 x 8 with AVX2): the positions
# broadcast from the taps' runs of the prepared sample, the channels on the
# vectors (the weight packed in CV_NCH-channel panels).  No column is
# computed past the end of a row, so a 14-wide row fills a tile that
# 16-column tiles filled 14/16 of (and 7-wide rows 7/16), or three tiles of
# 5, 5 and 4 positions where 8-column tiles computed 16 columns; 256
# channels are 16 full panels where 14-row panels computed 266 rows (6-row
# panels 258).
# --------------------------------------------------------------------------

# Positions per tile from which the kernels run near the widest tile's rate
# (measured, K = 2304 in KC blocks: AVX-512, 6 positions 90% of 14, 4
# positions 70%; AVX2, an L1-resident K = 256: 5 positions 85-94% of 6, 4
# positions 71-82%, 3 positions 56-69%).
cdef Py_ssize_t CV_MIN_POSITIONS = 6 if CV_NCH == 16 else 5
# Storing a result transposed from the position-major tile costs about as
# much as this many more taps (the cost model of cv_tiles_pay; measured: a
# stride-2 3x3 layer 16 -> 32 channels, K = 144, ran 12% slower on these
# tiles, 32 channels against 33 rows of 11-row panels; 3x3 layers with
# K >= 576 and 64 to 256 channels ran 7-20% faster).
cdef Py_ssize_t CV_STORE_TAPS = 32
# A chunk's position-major results (all panels of up to CHUNK_MAX_TILES
# tiles) take at most CV_CHUNK_BYTES: they stay in L2 from one KC block to
# the next while that block of the weight streams through (AVX2, 256 -> 256
# channels on 14x14, batch 8: the tile-by-tile order, each tile through
# every panel over the whole depth, read the sample from L3 once per panel
# and took 1.4x the time of the 6 x 8 tiles (with 7-position tiles); this
# order 0.91x; chunks of 64 to 512 KB within the host's noise of each
# other).  With AVX-512, whose L2 holds 1-2 MB, four times as much: a
# tile's results over all panels are 2.3x as large as with AVX2 (not
# measured on an AVX-512 CPU).
cdef Py_ssize_t CV_CHUNK_BYTES = (512 if CV_NCH == 16 else 128) * 1024


cdef bint cv_tiles_pay(FwdArgs* a, Pass* ps) noexcept nogil:
    """Set the pass's channel-vector tiles (``tpr`` per row, ``ntp``) and
    ``a.MR`` (positions per tile, CV_MIN_POSITIONS to CV_MAXP, rows split
    evenly) and return True when they compute fewer products than the tiles
    pass_tiles chose (counting a padded-width tile's copies as STORE_TAPS
    taps, a transposed store as CV_STORE_TAPS), for a forward (result rows
    contiguous) of a kernel with more than one tap: a 1x1 layer's taps are
    whole planes apart, and its forward reads them best from a packed copy
    (packed_b_chunks; measured: 256 -> 64 channels on 28x28, batch 32, ran
    in 22 ms instead of 13 on these tiles reading the input in place).
    Leaves ``ps`` and ``a`` as they were otherwise."""
    cdef Py_ssize_t tpr, P, old, new
    if (CV_MAXP == 0 or ps.ocol != 1 or ps.rows <= 0 or ps.cols <= 0
            or a.g.kh * a.g.kw == 1):
        return False
    tpr = cdiv(ps.cols, CV_MAXP)
    P = cdiv(ps.cols, tpr)
    if P < CV_MIN_POSITIONS:
        return False
    old = a.npanel * a.MR * ps.ntp * a.NR * (
        ps.K if ps.tpr > 0 or ps.tpr2 > 0 else ps.K + STORE_TAPS)
    new = cdiv(a.Co, CV_NCH) * CV_NCH * ps.rows * tpr * P * (ps.K + CV_STORE_TAPS)
    if new >= old:
        return False
    ps.tpr = tpr
    ps.tpr2 = 0
    ps.ntp = ps.rows * tpr
    a.MR = P
    a.NR = CV_NCH
    a.npanel = cdiv(a.Co, CV_NCH)
    return True


cdef inline void cv_store(const double* ct, Py_ssize_t npos, Py_ssize_t nch, double* dst,
                          Py_ssize_t ldd, int act, double alpha) noexcept nogil:
    """dst[j*ldd + q] = ``act`` of ct[q*CV_NCH + j] (q < npos, j < nch): a
    position-major tile stored transposed (the operations of act_value)."""
    cdef Py_ssize_t j, q
    for j in range(nch):
        if act == ACT_NONE:
            for q in range(npos):
                dst[j * ldd + q] = ct[q * CV_NCH + j]
        else:
            for q in range(npos):
                dst[j * ldd + q] = act_value(ct[q * CV_NCH + j], act, alpha)


cdef void fwd_cv_task(const FwdArgs* a, int tid) noexcept nogil:
    """The float64 forward on channel-vector tiles: tile j of a (sample,
    group) pair is positions [c, c + MR) of result row r (``tpr`` tiles per
    row; the row's last tile may hold fewer).  Tiles [T*tid/nt,
    T*(tid+1)/nt) in chunks of up to ``tb`` tiles of one pair, the KC loop
    outside the chunk's tiles (as fwd_chunk_task): each KC block of a
    CV_NCH-channel weight panel is read once per chunk and reused from L1
    over its tiles, whose results sum in the chunk's position-major scratch
    tiles (``s_c`` values per tile and panel; the same KC blocks in the same
    order: fwd_task's bits), then are stored transposed with the epilogue.
    ``a.bias`` holds CV_NCH values per panel (zero past Co),
    ``npanel*CV_NCH`` per group."""
    cdef const Pass* ps = a.passes
    cdef const double* x = <const double*>a.x
    cdef const double* bias = NULL
    cdef double* out = <double*>a.out
    cdef Py_ssize_t MR = a.MR, Co = a.Co, Wq = a.g.Wq, K = ps.K, sc = a.s_c
    cdef double* ct0 = <double*>a.scr + tid * a.per
    cdef double* buf = ct0 + round16(a.tb * a.npanel * sc)
    cdef Py_ssize_t t0 = a.T * tid // a.nt, t1 = a.T * (tid + 1) // a.nt
    cdef Py_ssize_t t, n, ng, grp = 0, j0, cur = -1, nt, i, panel, co0, pc, kc
    cdef const double* apw
    cdef const double* src = NULL
    cdef const double* wp
    cdef const double* bp
    cdef double* ct
    cdef double* obase
    cdef const double* bsrc[CHUNK_MAX_TILES]
    cdef double* cdst[CHUNK_MAX_TILES]
    cdef Py_ssize_t npos[CHUNK_MAX_TILES]
    t = t0
    while t < t1:
        ng = t // a.ntp
        j0 = t - ng * a.ntp
        n = ng // a.G
        nt = min(a.tb, t1 - t, a.ntp - j0)
        if ng != cur:
            cur = ng
            grp = ng - n * a.G
            src = sample_src(x + grp * a.xg, n, a.xs, &a.g, buf)
        apw = <const double*>ps.apw + grp * a.wg
        if a.bias != NULL:
            bias = <const double*>a.bias + grp * a.npanel * CV_NCH
        obase = out + n * a.os + grp * a.og
        for i in range(nt):
            npos[i] = row_tile(ps, j0 + i, MR, src, Wq, obase, &bsrc[i], &cdst[i])
        pc = 0
        while pc < K:
            kc = min(<Py_ssize_t>KC, K - pc)
            for panel in range(a.npanel):
                wp = apw + (panel * K + pc) * CV_NCH
                bp = bias + panel * CV_NCH if bias != NULL and pc == 0 else NULL
                ct = ct0 + panel * sc
                for i in range(nt):
                    CVD[npos[i] - 1](kc, wp, bsrc[i], ps.toff + pc, ct + i * a.npanel * sc,
                                     pc > 0, bp)
            pc = pc + KC
        for i in range(nt):
            for panel in range(a.npanel):
                co0 = panel * CV_NCH
                cv_store(ct0 + (i * a.npanel + panel) * sc, npos[i], min(CV_NCH, Co - co0),
                         cdst[i] + co0 * a.ocs, a.ocs, a.act, a.alpha)
        t = t + nt


cdef enum:
    KERNEL_TILES = 0   # the micro-kernels' tiles (fwd_task and its variants)
    KERNEL_SAME = 1    # the in-place 3x3 kernel (same_run)
    KERNEL_OCV = 2     # the result-channel kernel (ocv_run)

KERNEL_NAMES = ("tiles", "in-place 3x3", "result-channel")


cdef int kernel_kind(bint f32, Py_ssize_t C, Py_ssize_t Co, Py_ssize_t H, Py_ssize_t W,
                     Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                     Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                     Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t groups, int act) noexcept nogil:
    """Which kernel conv2d_forward runs (KERNEL_*), from the geometry: the
    one rule, shared with forward_kernel (the plans' record of it)."""
    if not f32 or groups != 1:
        return KERNEL_TILES
    if (act == ACT_NONE and sh == 1 and sw == 1 and dh == 1 and dw == 1
            and same_fits(C, Co, H, W, kh, kw, ph, pw, OH, OW)):
        return KERNEL_SAME
    if ocv_fits(Co, kh, kw, sh, sw, OW):
        return KERNEL_OCV
    return KERNEL_TILES


def forward_kernel(bint f32, Py_ssize_t C, Py_ssize_t Co, Py_ssize_t H, Py_ssize_t W,
                   Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t dh, Py_ssize_t dw,
                   Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t groups=1, int act=0):
    """The name (KERNEL_NAMES) of the kernel conv2d_forward runs for this
    geometry (a float32 one when ``f32``; ``act`` the fused activation):
    "tiles", "in-place 3x3" or "result-channel"."""
    return KERNEL_NAMES[kernel_kind(f32, C, Co, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW,
                                    groups, act)]


def conv2d_forward(const floating[:, :, :, ::1] x,       # IN  (N, G*C, H, W)
                   const floating[:, :, :, ::1] weight,  # IN  (Cout, C, kh, kw)
                   const floating[::1] bias,             # IN  (Cout,) or None
                   floating[:, :, :, ::1] out,           # OUT (N, Cout, OH, OW)
                   Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t ph, Py_ssize_t pw,
                   Py_ssize_t dh, Py_ssize_t dw,
                   int n_threads,
                   Py_ssize_t groups=1,
                   int act=0, double alpha=0.0):
    """out[n] = Wmat @ im2col(x[n]) (+ bias), Wmat = weight as (Cout, C*kh*kw);
    with ``groups`` G, group i's output channels from its weight rows and
    input channels ``[i*C, (i+1)*C)`` (C = weight.shape[1]).  Tiles of NR
    positions of every (sample, group) pair split into contiguous ranges, one
    per thread.  ``act`` (``_common`` ACT_*: 0 none, 1 ReLU, 2 leaky ReLU of
    slope ``alpha``) is applied to each tile as it is stored."""
    cdef FwdArgs a
    cdef Pass ps
    cdef Py_ssize_t grp, toff_max, oh_n = out.shape[2], ow_n = out.shape[3]
    cdef int kind = KERNEL_TILES
    if floating is float and x.shape[0] > 0:
        kind = kernel_kind(True, x.shape[1], weight.shape[0], x.shape[2], x.shape[3],
                           weight.shape[2], weight.shape[3], sh, sw, ph, pw, dh, dw, oh_n,
                           ow_n, groups, act)
    if floating is float:
        if kind == KERNEL_SAME:
            same_run(&x[0, 0, 0, 0], &weight[0, 0, 0, 0], False,
                     &bias[0] if bias is not None else NULL, &out[0, 0, 0, 0], x.shape[0],
                     x.shape[1], weight.shape[0], x.shape[2], x.shape[3], n_threads)
            return
        if kind == KERNEL_OCV:
            ocv_run(&x[0, 0, 0, 0], &weight[0, 0, 0, 0],
                    &bias[0] if bias is not None else NULL, &out[0, 0, 0, 0], x.shape[0],
                    x.shape[1], x.shape[2], x.shape[3], weight.shape[0], weight.shape[2],
                    weight.shape[3], sh, ph, pw, dh, dw, oh_n, ow_n, n_threads, act, alpha)
            return
    a.g = make_geom(x.shape[0], weight.shape[1], x.shape[2], x.shape[3],
                    weight.shape[0] // groups, weight.shape[2], weight.shape[3],
                    sh, sw, ph, pw, dh, dw, oh_n, ow_n)
    cdef Py_ssize_t Co = a.g.Co, K = a.g.K
    fwd_kernel(&a, Co, <floating*>NULL)
    cdef bint packb = copies_1x1_runs(a.g.kh * a.g.kw, a.MR,
                                      (elems4(x) + elems4(out)) * sizeof(floating),
                                      <floating*>NULL)
    if a.g.kh * a.g.kw == 1 and a.MR == mr_of(<floating*>NULL) and not packb:
        # 1x1 read in place: prefetch the taps' runs, planes apart
        a.fs = KER.s_ind_pf
        a.fd = KER.d_ind_pf
    ps.K = K
    ps.rows = oh_n
    ps.cols = ow_n
    ps.o0 = 0
    ps.orow = ow_n
    ps.ocol = 1
    cdef Py_ssize_t span = pass_tiles(&ps, a.g.Wq, a.NR, a.f2s != NULL)
    cdef bint flat = False
    if floating is float:
        flat = (a.NR == nr_of(<float*>NULL) and a.MR <= 8 and KER.s_indf_mr[a.MR - 1] != NULL
                and a.g.kh * a.g.kw > 1 and flat_tiles_pay(&ps, a.NR))
    if flat:
        ps.tpr = 0
        ps.tpr2 = 0
        ps.ntp = cdiv(oh_n * ow_n, a.NR)
        span = (oh_n - 1) * a.g.Wq + ow_n + a.NR // 2  # a last vector's plain load
    if packb:
        span = packed_flat(&ps, a.g.Wq, a.NR, span)
    cdef bint cv = False
    if floating is double:
        cv = not packb and cv_tiles_pay(&a, &ps)
    cdef Py_ssize_t wmr = CV_NCH if cv else a.MR  # rows of a packed weight panel
    if cv:
        span = (oh_n - 1) * a.g.Wq + ow_n  # no position past a row's end
    a.passes = &ps
    a.npass = 1
    a.ntp = ps.ntp
    a.G = groups
    a.act = act
    a.alpha = alpha
    a.T = a.g.N * groups * a.ntp
    a.nt = <int>max(1, min(n_threads, a.T))
    if a.T == 0 or K == 0:
        return
    cdef floating* apw = NULL
    cdef int64_t* toff = tap_offsets(&a.g, &toff_max)
    reach(&a.g, toff_max + span)
    # Per thread: C tile for all panels, prepared sample.
    a.s_c = round16(a.npanel * a.MR * a.NR)
    a.tb = fwd_chunk_tiles(&a, K, <floating*>NULL)
    if cv:
        # a scratch tile per panel and tile of a chunk (CV_CHUNK_BYTES)
        a.s_c = a.MR * a.NR
        a.tb = max(1, min(<Py_ssize_t>CHUNK_MAX_TILES,
                          CV_CHUNK_BYTES // (a.npanel * a.s_c * sizeof(floating))))
    a.s_b = 0
    a.pboff = NULL
    cdef int64_t* pboff = NULL
    cdef Py_ssize_t nbias = groups * a.npanel * CV_NCH if cv and bias is not None else 0
    try:
        if packb:
            pboff = packed_b_chunks(&a, <floating*>NULL)
        a.per = ((round16(a.tb * a.npanel * a.s_c) if cv else a.tb * a.s_c + a.s_b)
                 + (round16(a.g.Lbuf) if a.g.prepared else 0))
        a.wg = a.npanel * wmr * K
        apw = <floating*>alloc_scratch((groups * a.wg + a.nt * a.per + nbias)
                                       * sizeof(floating))
    except MemoryError:
        free(toff)
        free(pboff)
        raise
    ps.apw = apw
    ps.toff = toff
    a.xs = x.shape[1] * x.shape[2] * x.shape[3]
    a.os = out.shape[1] * oh_n * ow_n
    a.ocs = oh_n * ow_n
    a.xg = a.g.C * x.shape[2] * x.shape[3]
    a.og = Co * a.ocs
    a.x = &x[0, 0, 0, 0]
    a.bias = &bias[0] if bias is not None else NULL
    a.out = &out[0, 0, 0, 0]
    a.scr = apw + groups * a.wg
    cdef floating* pbias = apw + groups * a.wg + a.nt * a.per
    cdef Py_ssize_t q
    with nogil:
        for grp in range(groups):
            pack_a(&weight[0, 0, 0, 0] + grp * Co * K, K, 1, Co, K, wmr, apw + grp * a.wg)
        if nbias > 0:
            # CV_NCH values per panel (zero past Co), as the kernels read them
            memset(pbias, 0, nbias * sizeof(floating))
            for grp in range(groups):
                for q in range(Co):
                    pbias[grp * a.npanel * CV_NCH + q] = bias[grp * Co + q]
            a.bias = pbias
        if flat:
            run_tasks(&a, fwd_flat_task)
        elif cv:
            run_tasks(&a, fwd_cv_task)
        else:
            fwd_run(&a, <floating*>NULL)
    free(apw)
    free(toff)
    free(pboff)


# --------------------------------------------------------------------------
# Input gradient at stride > 1 by stride phases (undilated)
# --------------------------------------------------------------------------


cdef void pack_phase(const floating* w, Py_ssize_t Cg, Py_ssize_t Cx, Py_ssize_t kh,
                     Py_ssize_t kw, Py_ssize_t a, Py_ssize_t b, Py_ssize_t sh, Py_ssize_t sw,
                     Py_ssize_t ka, Py_ssize_t kb, Py_ssize_t MR, floating* dst) noexcept nogil:
    """Pack the phase-(a, b) sub-kernel of w (Cg, Cx, kh, kw), transposed and
    rotated by 180 degrees, as A(Cx, Cg*ka*kb) in MR-row panels (as pack_a):
    A[c, (o, i, j)] = w[o, c, a + sh*(ka-1-i), b + sw*(kb-1-j)]."""
    cdef Py_ssize_t K = Cg * ka * kb, panel, r, rows, o, i, j, t
    cdef floating* d
    cdef const floating* wc
    # Each k's MR values written side by side (one pass over the panel),
    # read from the panel's MR filters of gradient channel o (adjacent).
    for panel in range(cdiv(Cx, MR)):
        d = dst + panel * K * MR
        rows = min(MR, Cx - panel * MR)
        for o in range(Cg):
            wc = w + (o * Cx + panel * MR) * kh * kw
            for i in range(ka):
                for j in range(kb):
                    t = (a + sh * (ka - 1 - i)) * kw + b + sw * (kb - 1 - j)
                    for r in range(rows):
                        d[r] = wc[r * kh * kw + t]
                    for r in range(rows, MR):
                        d[r] = 0
                    d = d + MR


ctypedef struct Phase:
    # Phase i of one axis: input indices u*s + i - p, u = first .. first+count-1,
    # inside [0, L) receive taps i, i+s, ... (``taps`` of them) from
    # gradient indices u, u-1, ...; ``pad``: the gradient padding that keeps
    # every tap read inside the padded gradient.
    Py_ssize_t taps, first, count, pad


cdef inline Phase phase_axis(Py_ssize_t i, Py_ssize_t s, Py_ssize_t p, Py_ssize_t k,
                             Py_ssize_t L, Py_ssize_t O) noexcept nogil:
    """Phase i < min(s, k) of an axis of input size L, gradient size O."""
    cdef Phase f
    f.taps = cdiv(k - i, s)
    f.first = cdiv(p - i, s) if p > i else 0
    f.count = max(0, (L - 1 + p - i) // s + 1 - f.first) if L - 1 + p - i >= 0 else 0
    f.pad = max(0, f.taps - 1 - f.first, f.first + f.count - O) if f.count > 0 else 0
    return f


cdef void fill_sample(const FwdArgs* a, Py_ssize_t n, floating* tag) noexcept nogil:
    """Sample n of a.out: zeros, or each channel's bias."""
    cdef floating* o = <floating*>a.out + n * a.os
    cdef const floating* bias = <const floating*>a.bias
    cdef Py_ssize_t c, q
    if bias == NULL:
        memset(o, 0, a.os * sizeof(floating))
        return
    for c in range(a.G * a.Co):
        for q in range(a.ocs):
            o[c * a.ocs + q] = bias[c]


cdef void fill_samples(const FwdArgs* a, Py_ssize_t N, floating* tag) noexcept nogil:
    """fill_sample the N samples of a.out, over a.nt threads."""
    cdef Py_ssize_t n
    if a.nt == 1:
        for n in range(N):
            fill_sample(a, n, <floating*>NULL)
    else:
        for n in prange(N, schedule="static", num_threads=a.nt):
            fill_sample(a, n, <floating*>NULL)


cdef void gi_pair_task(const FwdArgs* a, int tid) noexcept nogil:
    """fwd_task for the float32 input gradient at column stride 2 whose two
    column phases are passes of the same tiles (see pair_passes): passes
    2m and 2m + 1 hold a row phase's phase of the left and of the right
    result column; tile j of the pair computes both into the scratch tiles
    ``ca``, ``cb`` (padded-width or row tiles: fwd_task's sums, the same
    bits) and stores them interleaved, each result row once, contiguous."""
    cdef const float* x = <const float*>a.x
    cdef const float* bias = <const float*>a.bias
    cdef float* out = <float*>a.out
    cdef Py_ssize_t NR = a.NR, MR = a.MR, Co = a.Co, Wq = a.g.Wq
    cdef float* ca = <float*>a.scr + tid * a.per
    cdef float* cb = ca + a.s_c
    cdef Py_ssize_t t0 = a.T * tid // a.nt, t1 = a.T * (tid + 1) // a.nt
    cdef Py_ssize_t t, n, ng, grp = 0, j, cur = -1, p0, pc, kc, K, panel, co0, h, pp, r, c, run
    cdef const Pass* ps
    cdef const Pass* pq
    cdef const float* apw
    cdef const float* src = NULL
    cdef const float* bptr
    cdef float* cdst
    for t in range(t0, t1):
        ps = tile_pass(a, t, &ng, &j, 2)
        n = ng // a.G
        p0 = j * NR
        if ps.tpr > 0:  # row r's tile at column c
            r = j // ps.tpr
            c = (j - r * ps.tpr) * NR
            p0 = r * Wq + c
        if ng != cur:
            cur = ng
            src = pair_input(a, x, ng, n, cb + a.s_c, &grp, &bias)
        for h in range(2):
            pq = ps + h
            cdst = cb if h else ca
            apw = <const float*>pq.apw + grp * a.wg
            K = pq.K
            pc = 0
            while pc < K:
                kc = min(<Py_ssize_t>KC, K - pc)
                for panel in range(a.npanel):
                    co0 = panel * MR
                    bptr = NULL
                    if bias != NULL and pc == 0:
                        bptr = bias + co0
                    a.fs(kc, apw + panel * K * MR + pc * MR, NULL, src + p0, pq.toff + pc,
                         cdst + co0 * NR, NR, <int>min(MR, Co - co0), <int>NR, pc > 0, bptr)
                pc = pc + KC
        # the valid columns of each row of the tile, both phases at once
        if ps.tpr > 0:
            MERGE2X_S(ca, cb, NR, out + n * a.os + grp * a.og + ps.o0 + r * ps.orow + 2 * c,
                      a.ocs, Co, min(NR, ps.cols - c))
            continue
        pp = p0
        while pp < min(p0 + NR, ps.rows * Wq):
            r = pp // Wq
            c = pp - r * Wq
            run = min(Wq - c, p0 + NR - pp)
            if c < ps.cols:
                MERGE2X_S(ca + pp - p0, cb + pp - p0, NR,
                          out + n * a.os + grp * a.og + ps.o0 + r * ps.orow + 2 * c, a.ocs,
                          Co, min(run, ps.cols - c))
            pp = pp + run


cdef bint pair_passes(Pass* passes, Py_ssize_t npass, Py_ssize_t Wq,
                      Py_ssize_t NR) noexcept nogil:
    """Whether gi_pair_task can run these input-gradient passes (column
    stride 2, in row-phase order, two column phases each): every row phase
    has both column phases, of the same rows, columns and padded-width
    tiles, their results in adjacent columns.  Orders each pair left column
    first, and gives it row tiles when they are fewer products."""
    cdef Py_ssize_t m, R
    cdef Pass* p
    cdef Pass tmp
    if MERGE2X_S == NULL or npass % 2 != 0:
        return False
    for m in range(0, npass, 2):
        p = passes + m
        if (p[0].rows != p[1].rows or p[0].cols != p[1].cols or p[0].ntp != p[1].ntp
                or p[0].tpr != 0 or p[0].tpr2 != 0 or p[1].tpr != 0 or p[1].tpr2 != 0
                or p[0].ocol != 2 or p[0].orow != p[1].orow
                or p[0].o0 // p[0].orow != p[1].o0 // p[1].orow
                or (p[0].o0 - p[1].o0 != 1 and p[1].o0 - p[0].o0 != 1)):
            return False
    for m in range(0, npass, 2):
        p = passes + m
        if p[1].o0 < p[0].o0:
            tmp = p[0]
            p[0] = p[1]
            p[1] = tmp
        # row tiles where a row's tiles are fewer columns than the padded
        # width (16 columns of a 4x4 stride-2 transposed convolution's
        # phases: 16 tiles per phase instead of 18)
        R = cdiv(p[0].cols, NR) * NR
        if R < Wq:
            p[0].tpr = p[1].tpr = R // NR
            p[0].ntp = p[1].ntp = p[0].rows * p[0].tpr
    return True


cdef void gi_pair_run(FwdArgs* a) noexcept nogil:
    """Run gi_pair_task on a.nt threads (as fwd_run)."""
    cdef Py_ssize_t tid
    if a.nt == 1:
        gi_pair_task(a, 0)
    else:
        for tid in prange(a.nt, schedule="static", chunksize=1, num_threads=a.nt):
            gi_pair_task(a, <int>tid)


def conv2d_grad_input_phases(const floating[:, :, :, ::1] gout,    # IN  (N, G*Cg, OH, OW)
                             const floating[:, :, :, ::1] weight,  # IN  (G*Cg, Cx, kh, kw)
                             floating[:, :, :, ::1] out,           # OUT (N, G*Cx, H, W)
                             Py_ssize_t sh, Py_ssize_t sw,
                             Py_ssize_t ph, Py_ssize_t pw,
                             int n_threads,
                             Py_ssize_t groups=1,
                             const floating[::1] bias=None):  # IN (G*Cx,) or None
    """out = the input gradient of the undilated convolution with ``weight``
    and ``groups`` at stride (sh, sw) and padding (ph, pw), for the upstream
    gradient gout (any stride and padding): group i's input channels
    ``[i*Cx, (i+1)*Cx)`` from its weight rows and gradient channels
    ``[i*Cg, (i+1)*Cg)``; plus ``bias`` per input channel when given (a
    transposed convolution's), added before the first block of taps as in
    the forward kernel.

    Input row h = u*sh + a - ph (columns likewise, phase b) receives
    sum_t weight[:, :, a + sh*t] @ gout[u - t]: for each stride phase (a, b)
    with taps, one pass of the forward kernel -- the stride-1 correlation of
    the zero-padded gradient with the phase's rotated sub-kernel -- stores
    its results straight to rows a::sh, columns b::sw of the group's
    channels, cropped to the input.  Each (sample, group)'s gradient is
    padded once for all passes; phases without taps (stride > kernel) are
    zeros.  Tiles of every (sample, group) pair split into contiguous
    ranges, one per thread."""
    cdef FwdArgs a
    cdef Py_ssize_t N = gout.shape[0], OH = gout.shape[2], OW = gout.shape[3]
    cdef Py_ssize_t Cg = weight.shape[0] // groups, Cx = weight.shape[1], kh = weight.shape[2]
    cdef Py_ssize_t kw = weight.shape[3], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t na = min(sh, kh), nb = min(sw, kw), i, j, o, ii, jj, k, grp
    cdef Py_ssize_t PT = 0, PL = 0, end = 0, ntot = 0, koff = 0, r0, c0, span
    cdef bint reads = Cg * OH * OW > 0
    cdef bint zero = sh > kh or sw > kw or not reads
    if N == 0 or Cx * H * W == 0:
        return
    if floating is float:
        if (groups == 1 and sh == 1 and sw == 1
                and same_fits(Cg, Cx, OH, OW, kh, kw, ph, pw, H, W)):
            same_run(&gout[0, 0, 0, 0], &weight[0, 0, 0, 0], True,
                     &bias[0] if bias is not None else NULL, &out[0, 0, 0, 0], N, Cg, Cx,
                     H, W, n_threads)
            return
    # The passes, then the row phases (fr) and column phases (fc).
    cdef Pass* ps
    cdef Pass* passes = <Pass*>alloc_scratch(max(1, na * nb) * sizeof(Pass)
                                             + (na + nb) * sizeof(Phase))
    cdef Phase* fr = <Phase*>(passes + na * nb)
    cdef Phase* fc = fr + na
    for i in range(na):
        fr[i] = phase_axis(i, sh, ph, kh, H, OH)
        PT = max(PT, fr[i].pad)
    for j in range(nb):
        fc[j] = phase_axis(j, sw, pw, kw, W, OW)
        PL = max(PL, fc[j].pad)
    # The prepared sample: the gradient zero-padded by (PT, PL).
    a.g = make_geom(N, Cg, OH, OW, Cx, 1, 1, 1, 1, PT, PL, 1, 1, OH, OW)
    cdef Py_ssize_t Hq = a.g.Hq, Wq = a.g.Wq
    fwd_kernel(&a, Cx, <floating*>NULL)
    cdef int64_t* toff = NULL
    cdef floating* apw = NULL
    cdef floating* scr = NULL
    try:
        toff = <int64_t*>alloc_scratch(max(1, Cg * kh * kw) * sizeof(int64_t))
        apw = <floating*>alloc_scratch(max(1, groups * a.npanel * a.MR * Cg * kh * kw)
                                       * sizeof(floating))
    except MemoryError:
        free(passes)
        free(toff)
        raise
    a.passes = passes
    a.npass = 0
    a.G = groups
    a.wg = a.npanel * a.MR * Cg * kh * kw
    # as the forward's (a padded gradient's copy ran 5% slower packed: 256 <-
    # 64 channels, padding 1)
    cdef bint packb = copies_1x1_runs(kh * kw, a.MR,
                                      (elems4(gout) + elems4(out)) * sizeof(floating),
                                      <floating*>NULL) and PT == 0 and PL == 0
    for i in range(na if reads else 0):
        for j in range(nb):
            if fr[i].count == 0 or fc[j].count == 0:
                continue  # no input row (column) in this phase
            ps = passes + a.npass
            ps.K = Cg * fr[i].taps * fc[j].taps
            ps.rows = fr[i].count
            ps.cols = fc[j].count
            ps.o0 = (fr[i].first * sh + i - ph) * W + fc[j].first * sw + j - pw
            ps.orow = sh * W
            ps.ocol = sw
            span = pass_tiles(ps, Wq, a.NR, a.f2s != NULL)
            if packb:
                span = packed_flat(ps, Wq, a.NR, span)
            ps.apw = apw + a.npanel * a.MR * koff
            for grp in range(groups):
                pack_phase(&weight[0, 0, 0, 0] + grp * Cg * Cx * kh * kw, Cg, Cx, kh, kw,
                           i, j, sh, sw, fr[i].taps, fc[j].taps, a.MR,
                           apw + grp * a.wg + a.npanel * a.MR * koff)
            # Result (r, c) reads padded-gradient row r + r0 + ii, column
            # c + c0 + jj for rotated tap (ii, jj) of gradient channel o.
            r0 = fr[i].first - fr[i].taps + 1 + PT
            c0 = fc[j].first - fc[j].taps + 1 + PL
            ps.toff = toff + koff
            k = koff
            for o in range(Cg):
                for ii in range(fr[i].taps):
                    for jj in range(fc[j].taps):
                        toff[k] = (o * Hq + r0 + ii) * Wq + c0 + jj
                        k = k + 1
            koff = k
            # The furthest run starts at the last tap's offset (the largest).
            end = max(end, toff[k - 1] + span)
            ntot = ntot + ps.ntp
            a.npass = a.npass + 1
    reach(&a.g, end)
    cdef bint paired = False
    if floating is float:
        paired = sw == 2 and pair_passes(passes, a.npass, Wq, a.NR)
    if paired:  # a pair's tiles, counted once
        ntot = 0
        for i in range(0, a.npass, 2):
            ntot = ntot + passes[i].ntp
    a.ntp = ntot
    a.T = N * groups * ntot
    a.nt = <int>max(1, min(n_threads, max(a.T, N)))
    a.s_c = round16(a.npanel * a.MR * a.NR)
    a.tb = 1 if paired else fwd_chunk_tiles(&a, koff, <floating*>NULL)
    a.s_b = 0
    a.pboff = NULL
    cdef int64_t* pboff = NULL
    try:
        if packb and a.T > 0:
            pboff = packed_b_chunks(&a, <floating*>NULL)
        a.per = (a.tb + paired) * a.s_c + a.s_b + (round16(a.g.Lbuf) if a.g.prepared else 0)
        scr = <floating*>alloc_scratch(max(1, a.nt * a.per) * sizeof(floating))
    except MemoryError:
        free(passes)
        free(toff)
        free(apw)
        free(pboff)
        raise
    a.xs = gout.shape[1] * OH * OW
    a.xg = Cg * OH * OW
    a.os = out.shape[1] * H * W
    a.ocs = H * W
    a.og = Cx * a.ocs
    a.x = &gout[0, 0, 0, 0] if reads else NULL
    a.bias = &bias[0] if bias is not None else NULL
    a.out = &out[0, 0, 0, 0]
    a.scr = scr
    with nogil:
        if zero:
            fill_samples(&a, N, <floating*>NULL)
        if a.T > 0 and paired:
            gi_pair_run(&a)
        elif a.T > 0:
            fwd_run(&a, <floating*>NULL)
    free(scr)
    free(apw)
    free(toff)
    free(passes)
    free(pboff)


# --------------------------------------------------------------------------
# Weight gradient: three schedules over (sample, group, position block) units
# --------------------------------------------------------------------------

ctypedef struct GwArgs:
    Geom g
    const void* x            # (N, G*C, H, W)
    const void* gout         # (N, G*Co, OH*OW)
    void* gwp                # (T, G, ...) partial sums, one per task
    void* scr
    const int64_t* toff
    const void** ptrs        # dot schedule: 8 row pointers per task
    Py_ssize_t toff_max, per, s_a, s_b, MR, NR, nblk, units, block
    Py_ssize_t xs, gs          # elements between samples of x and gout
    Py_ssize_t G, xg, gg       # groups; elements between groups of x and gout
    int T
    cnx_ukr_s fs               # transposed schedule: its indirect-A kernel
    cnx_ukr_d fd
    cnx_gwvalid_s fv           # transposed schedule, float: its kernel over valid
                               # positions (gw_valid_task), or NULL


cdef inline Py_ssize_t gw_unit(const GwArgs* a, Py_ssize_t u, Py_ssize_t* ng,
                               Py_ssize_t* n, Py_ssize_t* grp) noexcept nogil:
    """Unit u's (sample, group) pair ``ng`` = n*G + grp; returns its block."""
    ng[0] = u // a.nblk
    n[0] = ng[0] // a.G
    grp[0] = ng[0] - n[0] * a.G
    return u - ng[0] * a.nblk


cdef inline const floating* gw_pair(const GwArgs* a, Py_ssize_t n, Py_ssize_t grp,
                                   floating* buf, floating* gw0, const floating** gout,
                                   floating** gw) noexcept nogil:
    """The taps' runs of sample n's group grp (sample_src, prepared in
    ``buf`` if need be); sets ``gout`` to the group's gradient channels and
    ``gw`` to its block of the partial ``gw0`` (Co*K elements a group)."""
    gout[0] = <const floating*>a.gout + grp * a.gg
    gw[0] = gw0 + grp * a.g.Co * a.g.K
    return sample_src(<const floating*>a.x + grp * a.xg, n, a.xs, &a.g, buf)


cdef void gw_packed_task(const GwArgs* a, int task, floating* tag) noexcept nogil:
    """gwp[task] (Co, K) += g_n[:, block] @ im2col(x_n)[:, block]^T, both
    operands packed (junk columns of the gradient packed as zeros)."""
    cdef const Geom* g = &a.g
    cdef Py_ssize_t Co = g.Co, K = g.K, L = g.L, Wq = g.Wq, OW = g.OW
    cdef Py_ssize_t MR = a.MR, NR = a.NR, P = g.OH * g.OW, Pp = g.OH * g.Wq
    cdef Py_ssize_t npanel = cdiv(Co, MR)
    cdef floating* ap = <floating*>a.scr + task * a.per
    cdef floating* bp = ap + a.s_a
    cdef floating* gw0 = <floating*>a.gwp + task * a.G * Co * K
    cdef floating* gw = gw0
    cdef const floating* gout = <const floating*>a.gout
    cdef Py_ssize_t u, u0 = a.units * task // a.T, u1 = a.units * (task + 1) // a.T
    cdef Py_ssize_t n, ng, grp, cur = -1, pb, kc, jc, nr, panel, co0, q, ow, tt, filled = 0
    cdef floating* arow
    cdef const floating* src = NULL
    memset(gw0, 0, a.G * Co * K * sizeof(floating))
    memset(bp, 0, KC * NR * sizeof(floating))
    for u in range(u0, u1):
        pb = gw_unit(a, u, &ng, &n, &grp) * KC
        kc = min(<Py_ssize_t>KC, Pp - pb)
        if ng != cur:
            cur = ng
            src = gw_pair(a, n, grp, bp + a.s_b, gw0, &gout, &gw)
        # A panels: gradient rows in padded-width layout, junk = 0.
        for panel in range(npanel):
            for tt in range(MR):
                co0 = panel * MR + tt
                arow = ap + panel * kc * MR + tt
                if co0 >= Co:
                    for q in range(kc):
                        arow[q * MR] = 0
                    continue
                grad_run(gout + n * a.gs + co0 * P, pb, kc, Wq, OW, arow, MR)
        jc = 0
        while jc < K:
            nr = min(NR, K - jc)
            for tt in range(nr):
                copy_run(src, a.toff[jc + tt] + pb, L, kc, bp + tt, NR)
            # Junk positions (ow >= OW) read real image values; zero them so
            # an inf/NaN there cannot leak in as 0*inf.
            ow = pb - (pb // Wq) * Wq
            for q in range(kc):
                if ow >= OW:
                    for tt in range(nr):
                        bp[q * NR + tt] = 0
                ow = ow + 1
                if ow == Wq:
                    ow = 0
            # Columns past nr must be zero; only clear what an earlier, wider
            # panel may have left there.
            for tt in range(nr, filled):
                for q in range(KC):
                    bp[q * NR + tt] = 0
            filled = nr
            for panel in range(npanel):
                co0 = panel * MR
                ukr(KER, kc, ap + panel * kc * MR, bp, gw + co0 * K + jc, K,
                    <int>min(MR, Co - co0), <int>nr, 1, <const floating*>NULL)
            jc = jc + NR


cdef void grad_panel(const GwArgs* a, const floating* gn, Py_ssize_t jc, Py_ssize_t pb,
                     Py_ssize_t kc, floating* dst) noexcept nogil:
    """The transposed schedule's B panel ``jc`` of the gradient block at
    padded-width position pb (kc positions) of a sample's gradient ``gn``:
    NR output channels per row, junk positions and channels past Co zero."""
    cdef Py_ssize_t NR = a.NR, Co = a.g.Co, P = a.g.OH * a.g.OW, j, q
    cdef floating* bcol
    if floating is float:
        if NR == 16 and PACK_GT16_S != NULL:
            PACK_GT16_S(gn + jc * NR * P, P, <int>min(NR, Co - jc * NR), pb, kc, a.g.Wq,
                        a.g.OW, dst)
            return
        if KER.tcopy_s != NULL:
            grad_block_t(gn + jc * NR * P, P, min(NR, Co - jc * NR), pb, kc, a.g.Wq, a.g.OW,
                         dst, NR)
            return
    for j in range(NR):
        bcol = dst + j
        if jc * NR + j >= Co:
            for q in range(kc):
                bcol[q * NR] = 0
            continue
        grad_run(gn + (jc * NR + j) * P, pb, kc, a.g.Wq, a.g.OW, bcol, NR)


cdef void gw_transposed_task(const GwArgs* a, int task, floating* tag) noexcept nogil:
    """gwp[task] (K, Co) += im2col(x_n)[:, block] @ g_n[:, block]^T: the taps
    are read in place by the indirect-A micro-kernel, only the gradient block
    is packed.  Junk positions pair image values with a zero gradient."""
    cdef const Geom* g = &a.g
    cdef Py_ssize_t Co = g.Co, K = g.K, MR = a.MR, NR = a.NR, Pp = g.OH * g.Wq
    cdef Py_ssize_t ncp = cdiv(Co, NR), ntp = cdiv(K, MR)
    cdef floating* bp = <floating*>a.scr + task * a.per
    cdef floating* ap = bp + a.s_b
    cdef floating* gw0 = <floating*>a.gwp + task * a.G * K * Co
    cdef floating* gwt = gw0
    cdef const floating* gout = <const floating*>a.gout
    cdef Py_ssize_t u, u0 = a.units * task // a.T, u1 = a.units * (task + 1) // a.T
    cdef Py_ssize_t n, ng, grp, cur = -1, pb, kc, jc, ip, mr, nr, t
    cdef int acc
    cdef const floating* src = NULL
    if not (floating is double and a.G == 1 and u1 > u0):
        memset(gw0, 0, a.G * K * Co * sizeof(floating))
    for u in range(u0, u1):
        pb = gw_unit(a, u, &ng, &n, &grp) * KC
        kc = min(<Py_ssize_t>KC, Pp - pb)
        if ng != cur:
            cur = ng
            src = gw_pair(a, n, grp, ap + a.s_a, gw0, &gout, &gwt)
        for jc in range(ncp):
            grad_panel(a, gout + n * a.gs, jc, pb, kc, bp + jc * KC * NR)
        # float64: tap panels outer -- the panel's runs stay in L1 while its
        # row of C tiles (MR whole rows of the partial, megabytes in L3 for
        # many channels) streams in order; the packed gradient stays in L2.
        # A thread's first unit writes every tile (one group): no memset.
        acc = 0 if floating is double and a.G == 1 and u == u0 else 1
        for t in range(ntp * ncp):
            if floating is double:
                ip = t // ncp
                jc = t - ip * ncp
            else:
                jc = t // ntp
                ip = t - jc * ntp
            mr = min(MR, K - ip * MR)
            nr = min(NR, Co - jc * NR)
            if floating is float:
                a.fs(kc, src + pb, a.toff + ip * MR, bp + jc * KC * NR, NULL,
                     gwt + ip * MR * Co + jc * NR, Co, <int>mr, <int>nr, acc, NULL)
            else:
                a.fd(kc, src + pb, a.toff + ip * MR, bp + jc * KC * NR, NULL,
                     gwt + ip * MR * Co + jc * NR, Co, <int>mr, <int>nr, acc, NULL)


cdef void gw_valid_task(const GwArgs* a, int task) noexcept nogil:
    """gw_transposed_task (float) with the kernel ``a.fv`` over the valid
    positions of each block only: its gradient panels hold those positions
    (consecutive in the gradient's OH x OW layout: one transposing copy
    per panel) and the junk columns of the padded-width rows are skipped,
    not multiplied by zero.  Each tap's sum runs over the same blocks, the
    valid positions in the same order."""
    cdef const Geom* g = &a.g
    cdef Py_ssize_t Co = g.Co, K = g.K, MR = a.MR, NR = a.NR, Wq = g.Wq, OW = g.OW
    cdef Py_ssize_t P = g.OH * g.OW, Pp = g.OH * g.Wq
    cdef Py_ssize_t ncp = cdiv(Co, NR), ntp = cdiv(K, MR)
    cdef float* bp = <float*>a.scr + task * a.per
    cdef float* gw0 = <float*>a.gwp + task * a.G * K * Co
    cdef float* gwt = gw0
    cdef const float* gout = <const float*>a.gout
    cdef Py_ssize_t u, u0 = a.units * task // a.T, u1 = a.units * (task + 1) // a.T
    cdef Py_ssize_t n, ng, grp, cur = -1, pb, kc, jc, ip, t, nch, ow0, p0, p1, q
    cdef const float* src = NULL
    memset(gw0, 0, a.G * K * Co * sizeof(float))
    for u in range(u0, u1):
        pb = gw_unit(a, u, &ng, &n, &grp) * KC
        kc = min(<Py_ssize_t>KC, Pp - pb)
        if ng != cur:
            cur = ng
            src = gw_pair(a, n, grp, bp + a.s_b, gw0, &gout, &gwt)
        # The valid positions of [pb, pb + kc): gradient positions [p0, p1).
        ow0 = pb - (pb // Wq) * Wq
        p0 = (pb // Wq) * OW + min(ow0, OW)
        p1 = ((pb + kc) // Wq) * OW + min((pb + kc) - ((pb + kc) // Wq) * Wq, OW)
        for jc in range(ncp):
            nch = min(NR, Co - jc * NR)
            KER.tcopy_s(gout + n * a.gs + jc * NR * P + p0, P, nch, p1 - p0,
                        bp + jc * KC * NR, NR)
            if nch < NR:
                for q in range(p1 - p0):
                    memset(bp + jc * KC * NR + q * NR + nch, 0, (NR - nch) * sizeof(float))
        for t in range(ntp * ncp):
            jc = t // ntp
            ip = t - jc * ntp
            a.fv(kc, src + pb, a.toff + ip * MR, bp + jc * KC * NR, ow0, OW, Wq,
                 gwt + ip * MR * Co + jc * NR, Co, <int>min(MR, K - ip * MR),
                 <int>min(NR, Co - jc * NR), 1)


ctypedef struct SplitUnit:
    # One unit (sample n, position block at pb of kc positions) of the split
    # schedule: its gradient panels in scratch slot ``slot``; ``src``: its
    # sample's prepared copy (in slot n % 2, made with the sample's first
    # unit when ``prep``) or the input itself.
    Py_ssize_t n, pb, kc, slot, items
    bint prep
    const void* src


cdef void split_unit(const GwArgs* a, Py_ssize_t u, SplitUnit* su, floating* tag) noexcept nogil:
    """Unit u's SplitUnit (gradient panels in slot u % 2; ``items``: its
    packing items, the panels and, for the first unit of a sample that needs
    one, the prepared copy: the next sample's goes to the other slot while
    this one's is read)."""
    cdef Py_ssize_t ng, grp
    cdef bint copy
    su.pb = gw_unit(a, u, &ng, &su.n, &grp) * KC
    su.kc = min(<Py_ssize_t>KC, a.g.OH * a.g.Wq - su.pb)
    su.slot = u % 2
    copy = a.g.prepared and not (a.g.tail_only and su.n < a.g.N - 1)
    su.prep = copy and su.pb == 0
    su.items = cdiv(a.g.Co, a.NR) + su.prep
    su.src = (<const floating*>a.scr + (su.n % 2) * a.per + a.s_b if copy
              else <const floating*>a.x + su.n * a.xs)


cdef void split_pack(const GwArgs* a, const SplitUnit* su, Py_ssize_t item,
                     floating* tag) noexcept nogil:
    """Packing item ``item`` of a unit: its gradient panel ``item`` into its
    slot, or (the item after the last panel) its sample's prepared copy."""
    cdef floating* bp = <floating*>a.scr + su.slot * a.per
    cdef Py_ssize_t ncp = cdiv(a.g.Co, a.NR)
    if item < ncp:
        grad_panel(a, <const floating*>a.gout + su.n * a.gs, item, su.pb, su.kc,
                   bp + item * KC * a.NR)
    else:
        prep_sample(<const floating*>a.x + su.n * a.xs, &a.g,
                    <floating*>a.scr + (su.n % 2) * a.per + a.s_b)


cdef void split_taps(const GwArgs* a, const SplitUnit* su, Py_ssize_t ib, Py_ssize_t per,
                     int acc, floating* tag) noexcept nogil:
    """Product item ``ib`` of a unit: the rows of ``per`` tap panels of the
    result (K, Co) += the unit's product, each panel's row of C tiles in
    order (as gw_transposed_task's float64 order)."""
    cdef const floating* bp = <const floating*>a.scr + su.slot * a.per
    cdef const floating* src = <const floating*>su.src + su.pb
    cdef floating* gwt = <floating*>a.gwp
    cdef Py_ssize_t Co = a.g.Co, K = a.g.K, MR = a.MR, NR = a.NR, ip, jc, mr, nr
    cdef Py_ssize_t ncp = cdiv(Co, NR)
    for ip in range(ib * per, min(cdiv(K, MR), (ib + 1) * per)):
        mr = min(MR, K - ip * MR)
        for jc in range(ncp):
            nr = min(NR, Co - jc * NR)
            if floating is float:
                a.fs(su.kc, src, a.toff + ip * MR, bp + jc * KC * NR, NULL,
                     gwt + ip * MR * Co + jc * NR, Co, <int>mr, <int>nr, acc, NULL)
            else:
                a.fd(su.kc, src, a.toff + ip * MR, bp + jc * KC * NR, NULL,
                     gwt + ip * MR * Co + jc * NR, Co, <int>mr, <int>nr, acc, NULL)


cdef void split_item(const GwArgs* a, const SplitUnit* cur, const SplitUnit* nxt,
                     Py_ssize_t i, Py_ssize_t per, floating* tag) noexcept nogil:
    """Item i of a step: the next unit's packing items first, then the
    current unit's product items."""
    if i < nxt.items:
        split_pack(a, nxt, i, <floating*>NULL)
    else:
        split_taps(a, cur, i - nxt.items, per, cur.pb > 0 or cur.n > 0, <floating*>NULL)


cdef void split_run(const GwArgs* a, int nt, floating* tag) noexcept nogil:
    """The split schedule (one group): the units (sample, position block) in
    order, their work shared by the ``nt`` threads one step per unit, items
    handed out as threads become free: the unit's product, blocks of tap
    panels writing disjoint rows of the (K, Co) result, and the packing of
    the next unit (its gradient panels and prepared sample) into the other
    of two scratch slots.  Every result sums the units in order into one
    array: bitwise gw_transposed_task's single partial, at any thread
    count."""
    cdef Py_ssize_t u, i, n1, ntp = cdiv(a.g.K, a.MR)
    cdef Py_ssize_t per = max(1, min(4, ntp // (8 * nt))), nib = cdiv(ntp, per)
    cdef SplitUnit cur, nxt
    nxt.items = 0
    split_unit(a, 0, &cur, <floating*>NULL)
    for i in range(cur.items):
        split_pack(a, &cur, i, <floating*>NULL)
    for u in range(a.units):
        if u + 1 < a.units:
            split_unit(a, u + 1, &nxt, <floating*>NULL)
        else:
            nxt.items = 0
        n1 = nxt.items + nib
        if nt == 1:
            for i in range(n1):
                split_item(a, &cur, &nxt, i, per, <floating*>NULL)
        else:
            for i in prange(n1, schedule="dynamic", num_threads=nt):
                split_item(a, &cur, &nxt, i, per, <floating*>NULL)
        cur = nxt


cdef void gw_dot_task(const GwArgs* a, int task, floating* tag) noexcept nogil:
    """gwp[task] (Co, K) as 4x4 blocks of dot products between gradient rows
    (re-laid in padded-width positions) and the taps' runs: nothing packed.
    Junk positions pair image values with a zero gradient."""
    cdef const Geom* g = &a.g
    cdef Py_ssize_t Co = g.Co, K = g.K, Wq = g.Wq, OW = g.OW
    cdef Py_ssize_t P = g.OH * g.OW, Pp = g.OH * g.Wq, DB = a.block
    cdef floating* gb = <floating*>a.scr + task * a.per
    cdef floating* sbuf = gb + a.s_a
    cdef const floating** pa = <const floating**>(a.ptrs + task * 8)
    cdef const floating** pbp = pa + 4
    cdef floating* gw0 = <floating*>a.gwp + task * a.G * Co * K
    cdef floating* gw = gw0
    cdef const floating* gout = <const floating*>a.gout
    cdef Py_ssize_t u, u0 = a.units * task // a.T, u1 = a.units * (task + 1) // a.T
    cdef Py_ssize_t n, ng, grp, cur = -1, pb, kc, co, k0, i, ma, nb
    cdef const floating* src = NULL
    memset(gw0, 0, a.G * Co * K * sizeof(floating))
    for u in range(u0, u1):
        pb = gw_unit(a, u, &ng, &n, &grp) * DB
        kc = min(DB, Pp - pb)
        if ng != cur:
            cur = ng
            src = gw_pair(a, n, grp, sbuf, gw0, &gout, &gw)
        # Gradient rows in padded-width layout, junk columns zero.
        for co in range(Co):
            grad_run(gout + n * a.gs + co * P, pb, kc, Wq, OW, gb + co * DB, 1)
        # Four gradient rows against every tap: the rows stay in L1 while
        # the taps (shifted runs of a few image rows) stream through it.
        for co in range(0, Co, 4):
            ma = min(4, Co - co)
            for i in range(4):
                pa[i] = gb + (co + min(i, ma - 1)) * DB
            for k0 in range(0, K, 4):
                nb = min(4, K - k0)
                for i in range(4):
                    pbp[i] = src + a.toff[k0 + min(i, nb - 1)] + pb
                if floating is float:
                    KER.dot_s(kc, <const float* const*>pa, <int>ma,
                              <const float* const*>pbp, <int>nb, gw + co * K + k0, K)
                else:
                    KER.dot_d(kc, <const double* const*>pa, <int>ma,
                              <const double* const*>pbp, <int>nb, gw + co * K + k0, K)


# Positions per dot-product unit: long runs amortise the horizontal sums.
cdef Py_ssize_t DOT_BLOCK = 2048

# Schedules of conv2d_grad_weight (the plan's names for them).
SCHEDULES = ("packed", "transposed", "dot")


cdef bint taps_in_threes(const Geom* g, const int64_t* toff) noexcept nogil:
    """Whether GW3_S / GW3_D can read this geometry's taps: every three
    taps (c, i, 0..2) run from consecutive elements (a 3-wide kernel at
    column stride and dilation 1)."""
    cdef Py_ssize_t k
    if g.kw != 3:
        return False
    for k in range(g.K):
        if k % 3 != 0 and toff[k] != toff[k - 1] + 1:
            return False
    return True


def conv2d_grad_weight(const floating[:, :, :, ::1] x,    # IN  (N, G*C, H, W)
                       const floating[:, :, ::1] gout,    # IN  (N, G*Cout, OH*OW)
                       floating[:, :, :, ::1] gwp,        # OUT (T, G, Cout, K) or
                                                          #     (T, G, K, Cout)
                       str schedule,
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t oh_n, Py_ssize_t ow_n,
                       int n_threads=1):
    """gwp[task] = the task's share of the weight gradient, T = gwp.shape[0]
    tasks (one thread each); the caller sums gwp over axis 0 in a fixed
    order.  G = gwp.shape[1] groups: group i's gradient from the input
    channels ``[i*C, (i+1)*C)`` and output channels ``[i*Cout, (i+1)*Cout)``
    (C = x.shape[1] // G, Cout = gout.shape[1] // G).  ``schedule``:

    ``"packed"``      (Cout, K) partials; both operands packed; any input.
    ``"transposed"``  (K, Cout) partials; only the gradient packed (C_out
                      filling a micro-kernel panel).  Finite x only.
    ``"dot"``         (Cout, K) partials; dot products, nothing packed (few
                      taps).  Finite x only.
    ``"split"``       The transposed schedule's product, one group, into one
                      (1, 1, K, Cout) result: the units in order, each
                      shared by ``n_threads`` threads (split_run).

    The last two pair junk positions' image values with a zero gradient, so
    a non-finite x can turn 0*inf into NaN: the caller checks the result."""
    cdef GwArgs a
    cdef int kind = 3 if schedule == "split" else SCHEDULES.index(schedule)
    cdef int task
    cdef bint split = False
    if gwp.shape[0] == 0 or gwp.shape[1] == 0:
        return
    a.G = gwp.shape[1]
    a.g = make_geom(x.shape[0], x.shape[1] // a.G, x.shape[2], x.shape[3],
                    gout.shape[1] // a.G, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n)
    a.T = <int>gwp.shape[0]
    a.MR = mr_of(<floating*>NULL)
    a.NR = nr_of(<floating*>NULL)
    a.fs = KER.s_inda
    a.fd = KER.d_inda
    if kind == 3:
        kind = 1
        split = True
    if kind == 1 and a.g.Co <= a.NR // 2:
        # Few output channels (the wide side of the transposed product):
        # 16 rows of taps by one vector of channels, not half-empty tiles.
        if floating is float:
            if KER.s_inda_n1 != NULL:
                a.fs = KER.s_inda_n1
                a.MR = 16
                a.NR = a.NR // 2
        else:
            if KER.d_inda_n1 != NULL:
                a.fd = KER.d_inda_n1
                a.MR = 16
                a.NR = a.NR // 2
    cdef Py_ssize_t Pp = oh_n * a.g.Wq
    if a.T == 0:
        return
    cdef int64_t* toff = tap_offsets(&a.g, &a.toff_max)
    if floating is float:
        if (kind == 1 and a.fs == KER.s_inda_n1 and a.fs != NULL and a.NR == 16
                and GW3_S != NULL and taps_in_threes(&a.g, toff)):
            a.fs = GW3_S
            a.MR = CNX_GW3_MR
    else:
        if (kind == 1 and a.fd == KER.d_inda and a.NR == 16 and GW3_D != NULL
                and taps_in_threes(&a.g, toff)):
            a.fd = GW3_D
            a.MR = CNX_GW3D_MR
    # Output rows with junk columns (padding, a kernel wider than its
    # stride) run the kernel over valid positions (without any, it measured
    # 7% slower: a 1x1 convolution's 28-wide rows).
    a.fv = NULL
    if floating is float:
        if (kind == 1 and not split and a.fs == KER.s_inda and a.MR == 8 and a.NR == 32
                and a.g.Wq > a.g.OW and GWVALID_S != NULL and KER.tcopy_s != NULL):
            a.fv = GWVALID_S
    if kind != 0:  # the taps' runs are read in place
        reach(&a.g, a.toff_max + Pp)
    cdef Py_ssize_t s_x = round16(a.g.Lbuf) if a.g.prepared else 0
    a.block = KC if kind != 2 else min(DOT_BLOCK, Pp)
    a.nblk = cdiv(Pp, a.block)
    a.units = a.g.N * a.G * a.nblk
    if kind == 0:
        a.s_a = round16(cdiv(a.g.Co, a.MR) * a.MR * KC)
        a.s_b = round16(KC * a.NR)
    elif kind == 1:
        a.s_b = round16(cdiv(a.g.Co, a.NR) * KC * a.NR)
        a.s_a = 0
    else:
        a.s_a = round16(a.g.Co * a.block)
        a.s_b = 0
    a.per = a.s_a + a.s_b + s_x
    a.ptrs = NULL
    cdef floating* scr = NULL
    try:
        scr = <floating*>alloc_scratch((2 if split else a.T) * a.per * sizeof(floating))
        if kind == 2:
            a.ptrs = <const void**>alloc_scratch(a.T * 8 * sizeof(void*))
    except MemoryError:
        free(toff)
        free(scr)
        raise
    a.x = &x[0, 0, 0, 0]
    a.xs = x.shape[1] * x.shape[2] * x.shape[3]
    a.xg = a.g.C * x.shape[2] * x.shape[3]
    a.gout = &gout[0, 0, 0]
    a.gs = gout.shape[1] * gout.shape[2]
    a.gg = a.g.Co * gout.shape[2]
    a.gwp = &gwp[0, 0, 0, 0]
    a.scr = scr
    a.toff = toff
    with nogil:
        if split:
            split_run(&a, max(1, n_threads), <floating*>NULL)
        elif a.T == 1:
            _gw_task(&a, 0, kind, <floating*>NULL)
        else:
            for task in prange(a.T, schedule="static", chunksize=1, num_threads=a.T):
                _gw_task(&a, task, kind, <floating*>NULL)
    free(scr)
    free(a.ptrs)
    free(toff)


cdef void sum_block(const floating* gwp, Py_ssize_t T, Py_ssize_t G, Py_ssize_t K,
                    Py_ssize_t Co, Py_ssize_t blk, floating* out) noexcept nogil:
    """sum_transposed on block ``blk`` of 32 taps (of every group's K/32,
    rounded up): each of its 32 x 32 tiles summed in task order and
    transposed."""
    cdef Py_ssize_t nkb = cdiv(K, 32), grp = blk // nkb, k0 = (blk - grp * nkb) * 32
    cdef Py_ssize_t k1 = min(K, k0 + 32), c0, c1, c, k, t, step = G * K * Co
    cdef const floating* src = gwp + grp * K * Co
    cdef floating* dst = out + grp * Co * K
    cdef floating v
    for c0 in range(0, Co, 32):
        c1 = min(Co, c0 + 32)
        for c in range(c0, c1):
            for k in range(k0, k1):
                v = src[k * Co + c]
                for t in range(1, T):
                    v = v + src[t * step + k * Co + c]
                dst[c * K + k] = v


def sum_transposed(const floating[:, :, :, ::1] gwp,   # IN  (T, G, K, Cout) partials
                   floating[:, :, ::1] out,            # OUT (G, Cout, K)
                   int n_threads=1):
    """out[g] = (gwp[0, g] + gwp[1, g] + ...)^T, the partials summed in task
    order (as numpy's sum over axis 0) and transposed in one pass, 32 x 32
    blocks at a time: the "transposed" weight-gradient schedule's result in
    the weight's layout without an intermediate sum or a strided copy.
    Blocks of 32 taps split over up to ``n_threads`` threads (each value
    summed in the same order: the same bits at any thread count)."""
    cdef Py_ssize_t T = gwp.shape[0], G = gwp.shape[1], K = gwp.shape[2], Co = gwp.shape[3]
    cdef Py_ssize_t blk, nblk = G * cdiv(K, 32)
    cdef int nt = <int>max(1, min(n_threads, nblk))
    if T == 0 or G == 0 or K == 0 or Co == 0:
        return
    cdef const floating* src = &gwp[0, 0, 0, 0]
    cdef floating* dst = &out[0, 0, 0]
    with nogil:
        if nt == 1:
            for blk in range(nblk):
                sum_block(src, T, G, K, Co, blk, dst)
        else:
            for blk in prange(nblk, schedule="static", num_threads=nt):
                sum_block(src, T, G, K, Co, blk, dst)


cdef inline void _gw_task(const GwArgs* a, int task, int kind, floating* tag) noexcept nogil:
    if kind == 0:
        gw_packed_task(a, task, tag)
    elif kind == 1 and floating is float and a.fv != NULL:
        gw_valid_task(a, task)
    elif kind == 1:
        gw_transposed_task(a, task, tag)
    else:
        gw_dot_task(a, task, tag)


# --------------------------------------------------------------------------
# Input gradient by col2im (any stride and dilation), conv_transpose2d
# --------------------------------------------------------------------------


cdef void col2im_block(const floating* col, Py_ssize_t ldcol,
                       floating* outn,                 # (C, H, W) of one sample
                       const Geom* g, Py_ssize_t p0, Py_ssize_t npos) noexcept nogil:
    """Scatter-add col(K, npos) (positions p0..p0+npos) into outn."""
    cdef Py_ssize_t k, c, i, j, q, oh, ow, ih, iw, khw = g.kh * g.kw
    cdef Py_ssize_t H = g.H, W = g.W, OW = g.OW
    cdef const floating* row
    for k in range(g.C * khw):
        c = k // khw
        i = (k - c * khw) // g.kw
        j = k - c * khw - i * g.kw
        row = col + k * ldcol
        oh = p0 // OW
        ow = p0 - oh * OW
        for q in range(npos):
            ih = oh * g.sh - g.ph + i * g.dh
            iw = ow * g.sw - g.pw + j * g.dw
            if ih >= 0 and ih < H and iw >= 0 and iw < W:
                outn[(c * H + ih) * W + iw] += row[q]
            ow = ow + 1
            if ow == OW:
                ow = 0
                oh = oh + 1


ctypedef struct GiArgs:
    Geom g                   # geometry of the convolution whose input gradient this is
    const void* gout         # (N, Cg, P), Cg = g.Co
    const void* wmat         # (Cg, K)
    void* out                # (N, C, H, W)
    void* scr
    Py_ssize_t per, s_c, s_a, PB, MR, NR
    Py_ssize_t gs, os          # elements between samples of gout and out


cdef void gi_sample(const GiArgs* a, Py_ssize_t n, floating* cp) noexcept nogil:
    cdef const Geom* g = &a.g
    cdef Py_ssize_t P = g.OH * g.OW, K = g.K, pb = 0, npos
    cdef floating* outn = <floating*>a.out + n * a.os
    memset(outn, 0, g.C * g.H * g.W * sizeof(floating))
    while pb < P:
        npos = min(a.PB, P - pb)
        gemm_st(K, npos, g.Co, <const floating*>a.wmat, 1, K,
                <const floating*>a.gout + n * a.gs + pb, P, 1,
                cp, npos, False, cp + a.s_c, cp + a.s_c + a.s_a, a.MR, a.NR)
        col2im_block(cp, npos, outn, g, pb, npos)
        pb = pb + a.PB


def conv_grad_input(const floating[:, :, ::1] gout,       # IN  (N, C_g, P)
                    const floating[:, ::1] wmat,          # IN  (Cg, K), K = C*kh*kw
                    floating[:, :, :, ::1] out,           # OUT (N, C_out, H, W); its
                                                          #     window overwritten
                    Py_ssize_t kh, Py_ssize_t kw,
                    Py_ssize_t sh, Py_ssize_t sw,
                    Py_ssize_t ph, Py_ssize_t pw,
                    Py_ssize_t dh, Py_ssize_t dw,
                    Py_ssize_t oh_n, Py_ssize_t ow_n,
                    int n_threads,
                    Py_ssize_t g_c0=0, Py_ssize_t out_c0=0):
    """out[n, out_c0:out_c0+C] = col2im(Wmat^T @ gout[n, g_c0:g_c0+Cg]):
    conv2d's input gradient for any stride, and conv_transpose2d.  One
    thread owns a sample."""
    cdef GiArgs a
    cdef Py_ssize_t n, tid, N = gout.shape[0]
    a.g = make_geom(N, wmat.shape[1] // (kh * kw), out.shape[2], out.shape[3], wmat.shape[0],
                    kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n)
    a.MR = mr_of(<floating*>NULL)
    a.NR = nr_of(<floating*>NULL)
    cdef Py_ssize_t K = a.g.K, P = oh_n * ow_n
    # Positions per column block: K x PB elements of scratch at most ~COL_ELEMS.
    a.PB = max(a.NR, min(P, (COL_ELEMS // max(K, 1)) // a.NR * a.NR))
    cdef int nt = <int>max(1, min(n_threads, N))
    a.s_c = round16(K * a.PB)
    a.s_a = round16((min(<Py_ssize_t>MC, K) + a.MR) * KC)
    a.per = a.s_c + a.s_a + round16(KC * a.NR)
    if N == 0:
        return
    cdef floating* scr = <floating*>alloc_scratch(nt * a.per * sizeof(floating))
    a.gout = &gout[0, 0, 0] + g_c0 * gout.shape[2]
    a.gs = gout.shape[1] * gout.shape[2]
    a.wmat = &wmat[0, 0]
    a.out = &out[0, 0, 0, 0] + out_c0 * out.shape[2] * out.shape[3]
    a.os = out.shape[1] * out.shape[2] * out.shape[3]
    a.scr = scr
    with nogil:
        if nt == 1:
            for n in range(N):
                gi_sample(&a, n, scr)
        else:
            for n in prange(N, schedule="static", num_threads=nt):
                tid = threadid()
                gi_sample(&a, n, scr + tid * a.per)
    free(scr)





# --------------------------------------------------------------------------
# Small float32 convolutions' backward (few channels, tiny maps): direct
# AVX-512 or AVX2 kernels, src/cnnext_smallconv.h.  The plan picks them by
# ``_small_backward`` in cnnext/_plan.py, only where they can run.
# --------------------------------------------------------------------------

cdef extern from "cnnext_smallconv.h" nogil:
    ctypedef void (*cnx_sgw_cvec_fn)(const float *xn, int64_t W, int64_t sh, int64_t sw,
                                     int64_t OH, int64_t OW, const int64_t *toff, int64_t K,
                                     const float *gt, int nco, float *gwt, int64_t ldc)
    ctypedef void (*cnx_sgw_pvec_fn)(const float *xn, const int64_t *toff, int64_t K,
                                     const float *const *grow, int64_t Co, int64_t Q,
                                     float *acc)
    ctypedef void (*cnx_sgi_rows_fn)(const float *gp, int64_t ldg, int64_t Co, const float *wt,
                                     int64_t ldw, const int64_t *tshift, const int64_t *trow,
                                     int64_t KT, int64_t W, int64_t OH, float *gx, int64_t C,
                                     int64_t HW)
    ctypedef struct cnx_smallconv:
        int isa, lanes
        cnx_sgw_cvec_fn cvec
        cnx_sgw_pvec_fn pvec
        cnx_sgi_rows_fn rows
    cnx_smallconv cnx_smallconv_select()


# This CPU's kernels (asked once: the CPU query is slow in a VM); isa 0: none.
cdef cnx_smallconv SMALL = cnx_smallconv_select()


def small_kernels():
    """Whether the small convolutions' direct backward kernels can run here
    (AVX-512F or AVX2, and CNNEXT_ISA allowing it)."""
    return SMALL.isa != 0


ctypedef struct SmallArgs:
    const float* x           # weight gradient: (N, G*C, H, W); input gradient: packed weights
    const float* gout        # (N, G*Co, OH*OW)
    float* out               # (T, G, K, Co) partials / (N, G*C, H, W)
    float* scr
    const int64_t* toff
    Py_ssize_t N, G, C, H, W, Co, K, KT, sh, sw, OH, OW, per, ldg, lead, ldw
    Py_ssize_t ph, pw        # pvec: the padding (the sample copied into a padded plane)
    int T


ctypedef void (*small_task_t)(const SmallArgs*, int) noexcept nogil


cdef int small_setup(SmallArgs* a, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t dh, Py_ssize_t dw,
                     Py_ssize_t H, Py_ssize_t W, Py_ssize_t KT) except -1:
    """a.toff: tap (c, i, j)'s offset in an (a.C, H, W) sample, KT entries
    (those past a.K repeat tap 0); a.scr: a.T tasks' a.per floats."""
    cdef Py_ssize_t c, i, j, k
    cdef int64_t* toff = <int64_t*>alloc_scratch(max(KT, 1) * sizeof(int64_t))
    for c in range(a.C):
        for i in range(kh):
            for j in range(kw):
                toff[(c * kh + i) * kw + j] = c * H * W + i * dh * W + j * dw
    for k in range(a.K, KT):
        toff[k] = toff[0]
    try:
        a.scr = <float*>alloc_scratch(a.T * a.per * sizeof(float))
    except MemoryError:
        free(toff)
        raise
    a.toff = toff
    return 0


cdef void small_run(SmallArgs* a, small_task_t task) noexcept nogil:
    """task(a, t) for the a.T tasks on a.T threads; frees small_setup's
    scratch."""
    cdef int t
    if a.T == 1:
        task(a, 0)
    else:
        for t in prange(a.T, schedule="static", chunksize=1, num_threads=a.T):
            task(a, t)
    free(a.scr)
    free(<void*>a.toff)


cdef void sgw_task(const SmallArgs* a, int task) noexcept nogil:
    """out[task] (G, K, Co) = the weight gradient of the task's share of the
    (sample, group) pairs, summed in order."""
    cdef Py_ssize_t P = a.OH * a.OW, units = a.N * a.G
    cdef Py_ssize_t u, n, grp, cb, nco, co, p
    cdef Py_ssize_t u0 = units * task // a.T, u1 = units * (task + 1) // a.T
    cdef float* gt = a.scr + task * a.per
    cdef float* gw0 = a.out + task * a.G * a.K * a.Co
    cdef const float* xn
    cdef const float* gr
    memset(gw0, 0, a.G * a.K * a.Co * sizeof(float))
    for u in range(u0, u1):
        n = u // a.G
        grp = u - n * a.G
        xn = a.x + (n * a.G + grp) * a.C * a.H * a.W
        for cb in range(0, a.Co, 16):
            nco = min(16, a.Co - cb)
            gr = a.gout + ((n * a.G + grp) * a.Co + cb) * P
            if PACK_GT16_S != NULL:  # 16 x 16 transposes
                PACK_GT16_S(gr, P, <int>nco, 0, P, a.OW, a.OW, gt)
            else:
                if nco < 16:
                    memset(gt, 0, P * 16 * sizeof(float))
                for co in range(nco):
                    for p in range(P):
                        gt[p * 16 + co] = gr[co * P + p]
            SMALL.cvec(xn, a.W, a.sh, a.sw, a.OH, a.OW, a.toff, a.K, gt, <int>nco,
                       gw0 + grp * a.K * a.Co + cb, a.Co)


def conv2d_grad_weight_small(const float[:, :, :, ::1] x,    # IN  (N, G*C, H, W)
                             const float[:, :, ::1] gout,    # IN  (N, G*Cout, OH*OW)
                             float[:, :, :, ::1] gwp,        # OUT (T, G, K, Cout)
                             Py_ssize_t kh, Py_ssize_t kw,
                             Py_ssize_t sh, Py_ssize_t sw,
                             Py_ssize_t dh, Py_ssize_t dw,
                             Py_ssize_t oh_n, Py_ssize_t ow_n):
    """gwp[task] = the task's share of the weight gradient of an unpadded
    float32 convolution, transposed (K, Cout) as the ``"transposed"``
    schedule's partials, T = gwp.shape[0] tasks over the (sample, group)
    pairs; each element summed over the positions in row-major order, then
    the task's samples in order.  Needs ``small_kernels()``."""
    cdef SmallArgs a
    if SMALL.isa == 0:
        raise RuntimeError("conv2d_grad_weight_small: needs AVX-512F or AVX2")
    a.T = <int>gwp.shape[0]
    a.G = gwp.shape[1]
    if a.T == 0 or a.G == 0:
        return
    a.N, a.H, a.W = x.shape[0], x.shape[2], x.shape[3]
    a.C, a.Co = x.shape[1] // a.G, gout.shape[1] // a.G
    a.K = a.C * kh * kw
    a.sh, a.sw, a.OH, a.OW = sh, sw, oh_n, ow_n
    a.per = cdiv(oh_n * ow_n, 16) * 256  # whole 16 x 16 blocks (PACK_GT16_S)
    small_setup(&a, kh, kw, dh, dw, a.H, a.W, a.K)
    a.x = &x[0, 0, 0, 0]
    a.gout = &gout[0, 0, 0]
    a.out = &gwp[0, 0, 0, 0]
    with nogil:
        small_run(&a, sgw_task)


cdef void sgi_sample(const SmallArgs* a, Py_ssize_t u, float* gp) noexcept nogil:
    """The input gradient of (sample, group) pair u: the gradient copied
    into W-wide rows after a lead of zeros (``gp``, zeroed once by the
    caller: its lead, junk columns and tail stay zero), then the
    output-stationary kernel."""
    cdef Py_ssize_t n = u // a.G, grp = u - (u // a.G) * a.G
    cdef Py_ssize_t co, oh, P = a.OH * a.OW
    cdef const float* gr
    cdef float* row
    for co in range(a.Co):
        gr = a.gout + ((n * a.G + grp) * a.Co + co) * P
        row = gp + co * a.ldg + a.lead
        for oh in range(a.OH):
            memcpy(row + oh * a.W, gr + oh * a.OW, a.OW * sizeof(float))
    SMALL.rows(gp + a.lead, a.ldg, a.Co, a.x + grp * a.Co * a.KT * a.ldw, a.ldw,
               a.toff, a.toff + a.KT, a.KT, a.W, a.OH,
               a.out + (n * a.G + grp) * a.C * a.H * a.W, a.C, a.H * a.W)


def conv2d_grad_input_small(const float[:, :, ::1] gout,       # IN  (N, G*Cout, OH*OW)
                            const float[:, :, :, ::1] weight,  # IN  (G*Cout, C, kh, kw)
                            float[:, :, :, ::1] gx,            # OUT (N, G*C, H, W)
                            Py_ssize_t dh, Py_ssize_t dw, int threads):
    """gx = the input gradient of an unpadded stride-1 float32 convolution
    with G = gx.shape[1] // weight.shape[1] groups, one (sample, group) pair
    per task: each element summed over (output channel, tap) in order.
    Needs ``small_kernels()``."""
    cdef SmallArgs a
    cdef Py_ssize_t u, grp, co, c, i, j, t, C3, kh = weight.shape[2], kw = weight.shape[3]
    cdef int T
    if SMALL.isa == 0:
        raise RuntimeError("conv2d_grad_input_small: needs AVX-512F or AVX2")
    a.N, a.H, a.W = gx.shape[0], gx.shape[2], gx.shape[3]
    a.C = weight.shape[1]
    a.G = gx.shape[1] // a.C
    a.Co = gout.shape[1] // a.G
    a.OH, a.OW = a.H - (kh - 1) * dh, a.W - (kw - 1) * dw
    a.KT = kh * kw
    if a.N == 0 or a.G == 0 or a.C == 0 or a.H * a.W == 0:
        return
    C3 = cdiv(a.C, 3) * 3
    a.ldw = C3
    a.lead = round16((kh - 1) * dh * a.W + (kw - 1) * dw)
    a.ldg = a.lead + cdiv(a.H * a.W, 48) * 48 + 16
    a.per = round16(a.Co * a.ldg)
    T = <int>max(1, min(threads, a.N * a.G))
    # tap offsets, then the taps' row offsets
    cdef int64_t* tsh = <int64_t*>alloc_scratch(max(2 * a.KT, 1) * sizeof(int64_t))
    cdef float* wt = NULL
    try:
        wt = <float*>alloc_scratch(max(1, a.G * a.Co * a.KT * C3) * sizeof(float))
        a.scr = <float*>alloc_scratch(T * a.per * sizeof(float))
    except MemoryError:
        free(tsh)
        free(wt)
        raise
    for i in range(kh):
        for j in range(kw):
            tsh[i * kw + j] = i * dh * a.W + j * dw
            tsh[a.KT + i * kw + j] = i * dh
    # wt[grp, co, t, c]: the weights of one (output channel, tap) for the
    # channels side by side, padded to a multiple of 3 with zeros.
    memset(wt, 0, a.G * a.Co * a.KT * C3 * sizeof(float))
    for grp in range(a.G):
        for co in range(a.Co):
            for c in range(a.C):
                for t in range(a.KT):
                    wt[((grp * a.Co + co) * a.KT + t) * C3 + c] = \
                        weight[grp * a.Co + co, c, t // kw, t % kw]
    memset(a.scr, 0, T * a.per * sizeof(float))
    a.toff = tsh
    a.x = wt
    a.gout = &gout[0, 0, 0]
    a.out = &gx[0, 0, 0, 0]
    a.T = T
    with nogil:
        if T == 1:
            for u in range(a.N * a.G):
                sgi_sample(&a, u, a.scr)
        else:
            for u in prange(a.N * a.G, schedule="static", num_threads=T):
                sgi_sample(&a, u, a.scr + threadid() * a.per)
    free(a.scr)
    free(wt)
    free(tsh)


cdef void sgp_task(const SmallArgs* a, int task) noexcept nogil:
    """out[task] (G, Co, K) = the weight gradient of the task's share of the
    (sample, group) pairs, summed in order: each pair's sums in one vector's
    L lanes (a.KT = the taps rounded up to 4, a.ldw = the channels rounded
    up to 6), summed across the lanes (short per-lane sums: less rounding
    error than one sum per lane over every sample).  With padding, each
    sample is copied into the interior of a zeroed padded plane first."""
    cdef Py_ssize_t Hq = a.H + 2 * a.ph, Wq = a.W + 2 * a.pw
    cdef Py_ssize_t units = a.N * a.G, Q = (a.OH - 1) * Wq + a.OW
    cdef Py_ssize_t u, n, grp, co, oh, k, l, c, r, L = SMALL.lanes
    cdef Py_ssize_t u0 = units * task // a.T, u1 = units * (task + 1) // a.T
    cdef bint padded = a.ph != 0 or a.pw != 0
    cdef float* gp = a.scr + task * a.per
    cdef float* acc = gp + a.ldw * a.ldg
    cdef float* xp = acc + a.ldw * a.KT * L
    cdef const float** grow = <const float**>(xp + (a.C * Hq * Wq if padded else 0))
    cdef float* gw = a.out + task * a.G * a.Co * a.K
    cdef const float* gr
    cdef const float* xn
    cdef float sm
    memset(gp, 0, a.ldw * a.ldg * sizeof(float))
    memset(xp, 0, (a.C * Hq * Wq if padded else 0) * sizeof(float))
    memset(gw, 0, a.G * a.Co * a.K * sizeof(float))
    for co in range(a.ldw):
        grow[co] = gp + co * a.ldg
    for u in range(u0, u1):
        n = u // a.G
        grp = u - n * a.G
        for co in range(a.Co):
            gr = a.gout + ((n * a.G + grp) * a.Co + co) * a.OH * a.OW
            for oh in range(a.OH):
                memcpy(gp + co * a.ldg + oh * Wq, gr + oh * a.OW, a.OW * sizeof(float))
        xn = a.x + (n * a.G + grp) * a.C * a.H * a.W
        if padded:
            for c in range(a.C):
                for r in range(a.H):
                    memcpy(xp + (c * Hq + r + a.ph) * Wq + a.pw, xn + (c * a.H + r) * a.W,
                           a.W * sizeof(float))
            xn = xp
        memset(acc, 0, a.ldw * a.KT * L * sizeof(float))
        SMALL.pvec(xn, a.toff, a.KT, grow, a.ldw, Q, acc)
        for co in range(a.Co):
            for k in range(a.K):
                sm = 0
                for l in range(L):
                    sm = sm + acc[(co * a.KT + k) * L + l]
                gw[(grp * a.Co + co) * a.K + k] += sm


def conv2d_grad_weight_pvec(const float[:, :, :, ::1] x,    # IN  (N, G*C, H, W)
                            const float[:, :, ::1] gout,    # IN  (N, G*Cout, OH*OW)
                            float[:, :, :, ::1] gwp,        # OUT (T, G, Cout, K)
                            Py_ssize_t kh, Py_ssize_t kw,
                            Py_ssize_t ph, Py_ssize_t pw,
                            Py_ssize_t dh, Py_ssize_t dw,
                            Py_ssize_t oh_n, Py_ssize_t ow_n):
    """gwp[task] = the task's share of the weight gradient of a stride-1
    float32 convolution with few output channels and taps, as the
    ``"dot"`` schedule's (Cout, K) partials, T = gwp.shape[0] tasks over the
    (sample, group) pairs: each element's products of one pair summed in
    one vector's lanes (positions q mod 16 with AVX-512F, mod 8 with AVX2),
    then across the lanes, then over the task's pairs in order.
    Needs ``small_kernels()``."""
    cdef SmallArgs a
    if SMALL.isa == 0:
        raise RuntimeError("conv2d_grad_weight_pvec: needs AVX-512F or AVX2")
    a.T = <int>gwp.shape[0]
    a.G = gwp.shape[1]
    if a.T == 0 or a.G == 0:
        return
    a.N, a.H, a.W = x.shape[0], x.shape[2], x.shape[3]
    a.C, a.Co = x.shape[1] // a.G, gout.shape[1] // a.G
    a.K = a.C * kh * kw
    a.KT = cdiv(a.K, 4) * 4
    a.ldw = cdiv(a.Co, 6) * 6
    a.OH, a.OW = oh_n, ow_n
    a.ph, a.pw = ph, pw
    cdef Py_ssize_t Hq = a.H + 2 * ph, Wq = a.W + 2 * pw
    a.ldg = round16(a.OH * Wq)
    # per task: the gradient rows, the partial sums, the padded sample (with
    # padding), the row pointers
    a.per = round16(a.ldw * a.ldg + a.ldw * a.KT * SMALL.lanes
                    + (a.C * Hq * Wq if ph != 0 or pw != 0 else 0) + a.ldw * 2)
    small_setup(&a, kh, kw, dh, dw, Hq, Wq, a.KT)
    a.x = &x[0, 0, 0, 0]
    a.gout = &gout[0, 0, 0]
    a.out = &gwp[0, 0, 0, 0]
    with nogil:
        small_run(&a, sgp_task)


# --------------------------------------------------------------------------
# 3x3 stride-1 convolutions with padding 1 and few channels, read in place:
# the direct AVX-512 or AVX2 kernel of src/cnnext_sameconv.h for the forward
# and the stride-1 input gradient (the forward with the rotated, transposed
# kernel) where same_fits says it beats the fused-im2col kernels.
# --------------------------------------------------------------------------

cdef extern from "cnnext_sameconv.h" nogil:
    ctypedef void (*cnx_same3_fn)(const float *xn, int64_t HW, int64_t W, int64_t C,
                                  const uint16_t *mt, const float *wp, const float *bias,
                                  int mc, float *out, int64_t ldo)
    cnx_same3_fn cnx_same3_select()

# The kernel (NULL: none on this CPU), its panels of result channels and
# the positions of its vectors: AVX-512 8 and 16, AVX2 4 and 8.
cdef cnx_same3_fn SAME_FN = cnx_same3_select()
cdef Py_ssize_t SAME_MR = 8 if SMALL.isa == 2 else 4
cdef Py_ssize_t SAME_VL = 16 if SMALL.isa == 2 else 8


ctypedef struct SameArgs:
    const float* x           # (N, C, H, W)
    const float* wp          # npanel panels of (9*C, SAME_MR) weights
    const float* bias        # (Co,) or NULL
    float* out               # (N, Co, H, W)
    const uint16_t* mt       # vector b's lanes that tap t reads inside the map (nvec x 9)
    Py_ssize_t N, C, Co, HW, W, npanel
    int nt


cdef bint same_fits(Py_ssize_t C, Py_ssize_t Co, Py_ssize_t H, Py_ssize_t W, Py_ssize_t kh,
                    Py_ssize_t kw, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t OH,
                    Py_ssize_t OW) noexcept nogil:
    """True when a float32 convolution of one group at stride 1, undilated,
    runs on the in-place kernel: a 3x3 kernel with padding 1, 8 to 16 input
    channels (all taps in one KC block, so the same bits as the GEMM
    kernels) and 8 or 16 result channels (full panels), on AVX-512F or AVX2.
    (Measured at one thread, batch 64, AVX-512: 16 -> 16 channels on 28x28
    ran the forward and the input gradient 8-15% faster, on 14x14 and 7x7
    10-40%; with 1 or 3 channels on either side, 5x5 kernels or 1x1 ones it
    was no faster or slower.  AVX2, a Zen 3 core, the two builds
    alternating: 16 -> 16 on 28x28 forward 6-8% faster, forward and both
    gradients 12%, on 14x14 and 7x7 16%, 8 -> 8 on 28x28 18%.)"""
    return (SAME_FN != NULL and 8 <= C <= 16 and (Co == 8 or Co == 16) and 9 * C <= KC
            and kh == 3 and kw == 3 and ph == 1 and pw == 1
            and OH == H and OW == W and H * W > 0)


cdef void same_task(const SameArgs* a, int tid) noexcept nogil:
    """The (sample, panel) units of thread tid's contiguous share."""
    cdef Py_ssize_t T = a.N * a.npanel, t, n, panel
    cdef Py_ssize_t t0 = T * tid // a.nt, t1 = T * (tid + 1) // a.nt
    for t in range(t0, t1):
        n = t // a.npanel
        panel = t - n * a.npanel
        SAME_FN(a.x + n * a.C * a.HW, a.HW, a.W, a.C, a.mt,
                a.wp + panel * 9 * a.C * SAME_MR,
                a.bias + panel * SAME_MR if a.bias != NULL else NULL,
                <int>min(SAME_MR, a.Co - panel * SAME_MR),
                a.out + (n * a.Co + panel * SAME_MR) * a.HW, a.HW)


cdef int same_run(const float* x, const float* weight, bint rotated, const float* bias,
                  float* out, Py_ssize_t N, Py_ssize_t C, Py_ssize_t Co, Py_ssize_t H,
                  Py_ssize_t W, int n_threads) except -1:
    """out (N, Co, H, W) = the convolution of x (N, C, H, W) with the 3x3
    weight (Co, C, 3, 3) at padding 1, plus bias; with ``rotated``, weight
    is (C, Co, 3, 3) and the convolution's is its transpose rotated by 180
    degrees (the input gradient of a convolution with it)."""
    cdef SameArgs a
    cdef Py_ssize_t HW = H * W, nvec = cdiv(HW, SAME_VL), K = 9 * C, b, l, p, t, i, j, oh, ow
    cdef uint16_t m
    a.N, a.C, a.Co, a.HW, a.W = N, C, Co, HW, W
    a.npanel = cdiv(Co, SAME_MR)
    a.nt = <int>max(1, min(n_threads, N * a.npanel))
    cdef float* wp = <float*>alloc_scratch(a.npanel * SAME_MR * K * sizeof(float)
                                           + nvec * 9 * sizeof(uint16_t))
    cdef uint16_t* mt = <uint16_t*>(wp + a.npanel * SAME_MR * K)
    with nogil:
        if rotated:
            pack_phase(weight, C, Co, 3, 3, 0, 0, 1, 1, 3, 3, SAME_MR, wp)
        else:
            pack_a(weight, K, 1, Co, K, SAME_MR, wp)
        for b in range(nvec):
            for i in range(3):
                for j in range(3):
                    m = 0
                    for l in range(min(SAME_VL, HW - SAME_VL * b)):
                        p = SAME_VL * b + l
                        oh = p // W + i - 1
                        ow = p - (p // W) * W + j - 1
                        if 0 <= oh < H and 0 <= ow < W:
                            m = m | <uint16_t>(1 << l)
                    mt[b * 9 + i * 3 + j] = m
        a.x, a.wp, a.bias, a.out, a.mt = x, wp, bias, out, mt
        if a.nt == 1:
            same_task(&a, 0)
        else:
            for t in prange(a.nt, schedule="static", chunksize=1, num_threads=a.nt):
                same_task(&a, <int>t)
    free(wp)
    return 0


# --------------------------------------------------------------------------
# Strided layers with the result channels in the vector lanes (float32,
# AVX-512; cnnext_ocvec.h): blocks of up to 7 results of one row by 64
# channels, each tap's inputs broadcast from the zero-padded sample, the
# channels transposed into the result's planes per sample.
# --------------------------------------------------------------------------

cdef extern from "cnnext_ocvec.h" nogil:
    ctypedef void (*cnx_ocv_fn)(const float *x, const int64_t *toff, int64_t k0, int64_t k1,
                                const float *wp, int64_t ldw, const float *bias, float *s,
                                int64_t lds, int first)
    cnx_ocv_fn cnx_ocv_select(int NW)


ctypedef struct OcvArgs:
    Geom g                   # the stride-1 geometry of the zero-padded sample
    const float* x           # (N, C, H, W)
    const float* wp          # (K, Co): tap k's weights of every result channel
    const float* bias        # (Co,) or NULL
    float* out               # (N, Co, OH, OW)
    float* scr               # per thread: the padded sample, then (OH*OW, Co) results
    const int64_t* toff      # tap k's offset in the padded sample
    cnx_ocv_fn f             # the kernel of NW positions
    cnx_ocv_fn f_last        # the kernel of a row's last, narrower block (or f)
    Py_ssize_t OH, OW, Co, NW, sh, per, s_off
    int nt, act
    double alpha


cdef bint ocv_fits(Py_ssize_t Co, Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t OW) noexcept nogil:
    """True when a float32 convolution of one group runs on the
    result-channel kernel: column stride 2, a kernel of more than one tap,
    a multiple of 64 result channels and result rows of at most 14 (blocks
    of 7 results by 64 channels), on AVX-512F.  (Measured at one thread:
    resnet's 32 -> 64 3x3 layer on 14x14 at stride 2, batch 64, ran 12-15%
    faster, 64 -> 128 on 28x28 4-8%; 16 -> 32 on 28x28 (blocks of 14 by
    32 channels) no faster, a 7x7 stem on 56-wide rows no faster, a 4x4
    kernel on 16-wide rows 25% slower.)"""
    return (Co % 64 == 0 and Co > 0 and kh * kw > 1 and sw == 2 and 0 < OW <= 14
            and cnx_ocv_select(1) != NULL)


cdef void ocv_sample(const OcvArgs* a, Py_ssize_t n, float* buf) noexcept nogil:
    """Sample n's results: every (row, block of NW, group of 64 channels)
    in ``buf``'s result scratch, KC taps at a time, then
    transposed into the result's planes (and the epilogue)."""
    cdef const float* src = sample_src(a.x, n, a.g.C * a.g.H * a.g.W, &a.g, buf)
    cdef float* s = buf + a.s_off
    cdef Py_ssize_t oh, ow0, nw, cg, k0, K = a.g.K, Co = a.Co, P = a.OH * a.OW
    cdef const float* row
    cdef cnx_ocv_fn f
    cdef float* out = a.out + n * Co * P
    for oh in range(a.OH):
        row = src + oh * a.sh * a.g.Wq
        ow0 = 0
        while ow0 < a.OW:
            nw = min(a.NW, a.OW - ow0)
            f = a.f if nw == a.NW else a.f_last
            cg = 0
            while cg < Co:
                k0 = 0
                while k0 < K:
                    f(row + 2 * ow0, a.toff, k0, min(K, k0 + KC), a.wp + cg, Co,
                      a.bias + cg if a.bias != NULL else NULL,
                      s + (oh * a.OW + ow0) * Co + cg, Co, k0 == 0)
                    k0 = k0 + KC
                cg = cg + 64
            ow0 = ow0 + nw
    KER.tcopy_s(s, Co, P, Co, out, P)
    act_rows(KER, out, P, out, P, Co, P, a.act, <float>a.alpha)


cdef void ocv_task(const OcvArgs* a, int tid) noexcept nogil:
    """The samples of thread tid's contiguous share."""
    cdef Py_ssize_t n
    cdef float* buf = a.scr + tid * a.per
    for n in range(a.g.N * tid // a.nt, a.g.N * (tid + 1) // a.nt):
        ocv_sample(a, n, buf)


cdef int ocv_run(const float* x, const float* weight, const float* bias, float* out,
                 Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W, Py_ssize_t Co,
                 Py_ssize_t kh, Py_ssize_t kw, Py_ssize_t sh, Py_ssize_t ph, Py_ssize_t pw,
                 Py_ssize_t dh, Py_ssize_t dw, Py_ssize_t OH, Py_ssize_t OW, int n_threads,
                 int act, double alpha) except -1:
    """out (N, Co, OH, OW) = the convolution of x (N, C, H, W) with weight
    (Co, C, kh, kw) at row stride sh and column stride 2, plus bias, then
    ``act`` (see ocv_fits)."""
    cdef OcvArgs a
    cdef Py_ssize_t K = C * kh * kw, t, toff_max, nb
    # The padded sample at stride 1: tap (c, i, j) of result (oh, ow) is
    # element toff[k] + oh*sh*Wq + 2*ow.
    a.g = make_geom(N, C, H, W, Co, kh, kw, 1, 1, ph, pw, dh, dw,
                    H + 2 * ph - dh * (kh - 1), W + 2 * pw - dw * (kw - 1))
    a.OH, a.OW, a.Co, a.sh = OH, OW, Co, sh
    nb = cdiv(OW, 7)
    a.NW = cdiv(OW, nb)
    a.f = cnx_ocv_select(<int>a.NW)
    a.f_last = cnx_ocv_select(<int>(OW - (nb - 1) * a.NW))
    a.nt = <int>max(1, min(n_threads, N))
    a.act, a.alpha = act, alpha
    a.s_off = round16(a.g.Lbuf) if a.g.prepared else 0
    a.per = a.s_off + round16(OH * OW * Co)
    cdef int64_t* toff = tap_offsets(&a.g, &toff_max)
    cdef float* wp
    try:
        wp = <float*>alloc_scratch((K * Co + a.nt * a.per) * sizeof(float))
    except MemoryError:
        free(toff)
        raise
    a.x, a.wp, a.bias, a.out, a.toff = x, wp, bias, out, toff
    a.scr = wp + K * Co
    with nogil:
        pack_a(weight, K, 1, Co, K, Co, wp)  # one panel of all Co rows: wp[k*Co + co]
        if a.nt == 1:
            ocv_task(&a, 0)
        else:
            for t in prange(a.nt, schedule="static", chunksize=1, num_threads=a.nt):
                ocv_task(&a, <int>t)
    free(wp)
    free(toff)
    return 0
