"""Private depthwise-convolution kernels (tier 1).

Depthwise convolution is ``conv2d`` with ``groups == C``: weight
``(C*M, 1, kh, kw)``, output channel ``o`` reads input channel ``o // M``
(``M`` is the channel multiplier).  Each output plane is a small 2-D
correlation of one input plane: too little arithmetic per byte for the
GEMM path, so these kernels work plane by plane, directly.

Stateless, GIL-free, no validation: arrays are C-contiguous NCHW of one
floating dtype, outputs are allocated by the caller, sizes follow PyTorch's
output-size formula.

Design:

* **Prepared plane.**  A thread copies the plane it works on into its own
  scratch, zero-padded and split by column phase (``prepare``):
  ``prep[r, b*Wq + v] = xpad[r, v*sw + b]``.  Tap ``(i, j)`` of output
  ``(oh, ow)`` is then ``prep[oh*sh + i*dh, coff[j] + ow]`` with
  ``coff[j] = ((j*dw) % sw)*Wq + (j*dw) // sw``: contiguous along the output
  row for every stride and dilation, and the padding is already there, so
  the row loops have no bounds checks at all.  The plane is small (it stays
  in cache) and is reused by the ``M`` outputs of its channel.
* **Row loops** are C (``src/cnnext_depthwise_body.h``), compiled for
  AVX-512, AVX2+FMA and the baseline and chosen at run time like the GEMM
  micro-kernels (``CNNEXT_ISA`` applies).  They keep a whole vector of
  outputs in a register while adding the taps in (i, j) order; rows are
  padded to whole vectors and the last vector of a row is a masked
  load/store.  3x3 and 5x5 kernels (any stride, padding and dilation) have
  fully unrolled loops, and at a unit row step (``sh == dh``) compute two
  output rows per pass that share their loads; other sizes loop over the
  taps.
* **forward**: one (n, c) input plane per work unit, its ``M`` outputs.
* **input gradient**, one (n, c) plane per work unit, summed over the ``M``
  outputs of channel c: at stride 1, the forward kernel on the zero-padded
  upstream gradient with the 180-degree-rotated kernel (a full
  correlation); at a larger stride, each row and column phase of the
  padded input's gradient gathers its taps from a zero-padded copy of the
  upstream gradient plane, and is then cropped into ``grad_x``.  A
  non-finite weight must never meet that zero padding (inf*0 = NaN where
  PyTorch's result is finite): it takes a scatter form instead, which adds
  ``w * g`` for the real upstream values only.
* **non-finite values**: padding is multiplied like data, as in PyTorch's
  float64 and ``groups=1`` convolutions (and cnnext's ``conv2d``): a NaN
  upstream gradient or weight reaches the taps that read padding.
  (PyTorch's float32 depthwise kernel skips padded taps instead.)
* **weight gradient**: a thread owns whole input channels (and so the ``M``
  filters reading them) and sums over the batch in order: no partial
  results to combine and no race; the result does not depend on the thread
  count.  The reduction runs in vector accumulators along the row.

A ``*_task(args, u0, u1, tid)`` body computes work units ``[u0, u1)`` in the
scratch of thread ``tid``.  With one thread it is called once for all units
(no OpenMP region); otherwise a ``prange`` with a guided schedule hands the
units out, so a thread that the operating system holds up (a shared
machine) does not hold up the call.  A unit is computed the same way
whichever thread takes it: the results never depend on the thread count.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from cnnext._common cimport cdiv, round16
from cnnext._gemm cimport alloc_scratch

cdef extern from "cnnext_depthwise.h" nogil:
    ctypedef void (*cnx_dw_fwd_s)(const float* x, int64_t rs, int64_t ts, const int64_t* coff,
                                  const float* w, float b, float* out, int64_t ldo,
                                  int64_t nrows, int64_t n, int kh, int kw,
                                  int accumulate) noexcept nogil
    ctypedef void (*cnx_dw_fwd_d)(const double* x, int64_t rs, int64_t ts, const int64_t* coff,
                                  const double* w, double b, double* out, int64_t ldo,
                                  int64_t nrows, int64_t n, int kh, int kw,
                                  int accumulate) noexcept nogil
    ctypedef void (*cnx_dw_scatter_s)(const float* g, int64_t ldg, int64_t nrows, int64_t n,
                                      const float* w, int kh, int kw, float* y, int64_t rs,
                                      int64_t ts, const int64_t* coff) noexcept nogil
    ctypedef void (*cnx_dw_scatter_d)(const double* g, int64_t ldg, int64_t nrows, int64_t n,
                                      const double* w, int kh, int kw, double* y, int64_t rs,
                                      int64_t ts, const int64_t* coff) noexcept nogil
    ctypedef void (*cnx_dw_gw_s)(const float* x, int64_t rs, int64_t ts, const int64_t* coff,
                                 const float* g, int64_t ldg, int64_t nrows, int64_t n,
                                 int kh, int kw, float* acc) noexcept nogil
    ctypedef void (*cnx_dw_gw_d)(const double* x, int64_t rs, int64_t ts, const int64_t* coff,
                                 const double* g, int64_t ldg, int64_t nrows, int64_t n,
                                 int kh, int kw, double* acc) noexcept nogil
    ctypedef void (*cnx_dw_copy_s)(const float* s, int64_t sw, float* d,
                                   int64_t n) noexcept nogil
    ctypedef void (*cnx_dw_copy_d)(const double* s, int64_t sw, double* d,
                                   int64_t n) noexcept nogil
    ctypedef void (*cnx_dw_spread_s)(const float* s, float* d, int64_t sw,
                                     int64_t n) noexcept nogil
    ctypedef void (*cnx_dw_spread_d)(const double* s, double* d, int64_t sw,
                                     int64_t n) noexcept nogil
    ctypedef void (*cnx_dw_gx_s)(const float* g, int64_t ldg, int64_t nrows, const float* w,
                                 int kh, int kw, int64_t sh, int64_t dh, const int64_t* jtab,
                                 int64_t* ir, int64_t sw, int64_t lp, int64_t wq, float* y,
                                 int64_t ldy, int64_t hy, int accumulate) noexcept nogil
    ctypedef void (*cnx_dw_gx_d)(const double* g, int64_t ldg, int64_t nrows, const double* w,
                                 int kh, int kw, int64_t sh, int64_t dh, const int64_t* jtab,
                                 int64_t* ir, int64_t sw, int64_t lp, int64_t wq, double* y,
                                 int64_t ldy, int64_t hy, int accumulate) noexcept nogil
    ctypedef struct cnx_dw_kernels:
        cnx_dw_gx_s gx_rows_s
        cnx_dw_gx_d gx_rows_d
        cnx_dw_copy_s gather_s
        cnx_dw_copy_d gather_d
        cnx_dw_spread_s spread_s
        cnx_dw_spread_d spread_d
        cnx_dw_fwd_s fwd_s
        cnx_dw_fwd_d fwd_d
        cnx_dw_scatter_s scatter_s
        cnx_dw_scatter_d scatter_d
        cnx_dw_gw_s gw_s
        cnx_dw_gw_d gw_d
        int vec_bytes
        const char* name
    cnx_dw_kernels cnx_dw_select() noexcept nogil

cdef cnx_dw_kernels DK = cnx_dw_select()

#: The instruction set the row loops were chosen for ("avx512", "avx2" or
#: "generic").
ISA = DK.name.decode()


# --------------------------------------------------------------------------
# Prepared planes
# --------------------------------------------------------------------------

ctypedef struct Prep:
    # prep[r, b*Wq + v] = src[r - top, v*sw + b - left], zero outside src;
    # rows x ld elements, ld = sw*Wq.
    Py_ssize_t top, left, rows, sw, Wq, ld


cdef inline Prep make_prep(Py_ssize_t top, Py_ssize_t left, Py_ssize_t rows,
                           Py_ssize_t sw, Py_ssize_t Wq) noexcept nogil:
    cdef Prep p
    p.top = top; p.left = left; p.rows = rows; p.sw = sw; p.Wq = Wq; p.ld = sw * Wq
    return p


cdef inline void copy_strided(const floating* s, Py_ssize_t sw, floating* d,
                              Py_ssize_t n) noexcept nogil:
    """d[v] = s[v*sw] for v < n."""
    if floating is float:
        DK.gather_s(s, sw, d, n)
    else:
        DK.gather_d(s, sw, d, n)


cdef inline void store_strided(const floating* s, floating* d, Py_ssize_t sw,
                               Py_ssize_t n) noexcept nogil:
    """d[v*sw] = s[v] for v < n."""
    if floating is float:
        DK.spread_s(s, d, sw, n)
    else:
        DK.spread_d(s, d, sw, n)


cdef void prepare(const floating* src, Py_ssize_t H, Py_ssize_t W, const Prep* p,
                  floating* dst) noexcept nogil:
    """Copy the plane src (H, W) into its prepared layout dst (p.rows, p.ld)."""
    cdef Py_ssize_t r, h, b, v, col, lo, hi, Wq = p.Wq, sw = p.sw
    cdef floating* d
    cdef const floating* s
    for r in range(p.rows):
        d = dst + r * p.ld
        h = r - p.top
        if h < 0 or h >= H:
            memset(d, 0, p.ld * sizeof(floating))
            continue
        s = src + h * W
        if sw == 1:
            lo = min(max(p.left, 0), Wq)
            hi = max(lo, min(p.left + W, Wq))
            memset(d, 0, lo * sizeof(floating))
            memcpy(d + lo, s + lo - p.left, (hi - lo) * sizeof(floating))
            memset(d + hi, 0, (Wq - hi) * sizeof(floating))
        else:
            # Phase b holds columns v*sw + b - left: those in [0, W) are
            # v in [lo, hi), a strided copy; the rest are zero.
            for b in range(sw):
                lo = min(max(cdiv(p.left - b, sw), 0), Wq)
                hi = max(lo, min(cdiv(p.left + W - b, sw), Wq))
                for v in range(lo):
                    d[v] = 0
                copy_strided(s + lo * sw + b - p.left, sw, d + lo, hi - lo)
                for v in range(hi, Wq):
                    d[v] = 0
                d = d + Wq


cdef bint all_finite(const floating* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef bint ok = True
    for i in range(n):
        ok = ok & (a[i] - a[i] == 0)  # False for inf and NaN
    return ok


cdef inline Py_ssize_t padded_run(Py_ssize_t n, floating* tag) noexcept nogil:
    """n rounded up to whole vectors: the row loops work in whole vectors,
    so every tap's run in a prepared row has room for the last one."""
    cdef Py_ssize_t lanes = DK.vec_bytes // sizeof(floating)
    return cdiv(n, lanes) * lanes


cdef void phase_taps(int64_t* jtab, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dw) noexcept nogil:
    """The taps j of each column phase b = (j*dw) % sw, in order: entries
    jtab[b] to jtab[b+1] - 1 of the (j, (j*dw) // sw) pairs at jtab + sw + 1."""
    cdef Py_ssize_t b, j, k = 0
    cdef int64_t* pairs = jtab + sw + 1
    for b in range(sw):
        jtab[b] = k
        for j in range(kw):
            if (j * dw) % sw == b:
                pairs[2 * k] = j
                pairs[2 * k + 1] = (j * dw) // sw
                k += 1
    jtab[sw] = k


cdef void tap_columns(int64_t* coff, Py_ssize_t kw, Py_ssize_t sw, Py_ssize_t dw,
                      Py_ssize_t Wq) noexcept nogil:
    """Where tap column j starts in a prepared row (see the module docstring)."""
    cdef Py_ssize_t j
    for j in range(kw):
        coff[j] = ((j * dw) % sw) * Wq + (j * dw) // sw


ctypedef struct Args:
    const void* x            # forward, weight gradient: the input (N, C, H, W)
    const void* g            # input and weight gradient: grad_out (N, C*M, OH, OW)
    const void* w            # weight (C*M, kh*kw) (rotated for the input gradient)
    const void* bias         # (C*M,) or NULL
    void* out                # the output of the kernel
    void* scr                # per-thread scratch, ``per`` elements each
    const int64_t* coff      # (kw,) tap column offsets in a prepared row
    const int64_t* jtab      # gathered input gradient: the taps of each column phase
    int64_t* ir              # gathered input gradient: 2*kh integers per thread
    Prep p
    Prep gp                  # strided input gradient: the prepared upstream gradient
    Py_ssize_t N, C, M, H, W, OH, OW, kh, kw, sh, dh, ph, pw, rs, ts, per, units
    bint gather              # strided input gradient: gathered (else scattered)
    int nt


cdef inline void fwd_rows(const floating* x, const Args* a, const floating* w, floating b,
                          floating* out, Py_ssize_t ldo, Py_ssize_t nrows, Py_ssize_t n,
                          int accumulate) noexcept nogil:
    if floating is float:
        DK.fwd_s(x, a.rs, a.ts, a.coff, w, b, out, ldo, nrows, n, <int>a.kh, <int>a.kw,
                 accumulate)
    else:
        DK.fwd_d(x, a.rs, a.ts, a.coff, w, b, out, ldo, nrows, n, <int>a.kh, <int>a.kw,
                 accumulate)


cdef inline int n_workers(Py_ssize_t units, int n_threads) noexcept nogil:
    """Threads to use: at most one per work unit, at least one."""
    return <int>max(1, min(<Py_ssize_t>n_threads, units))


# --------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------

cdef void fwd_task(const Args* a, Py_ssize_t u0, Py_ssize_t u1, int tid,
                   floating* tag) noexcept nogil:
    """(n, c) input planes [u0, u1), M outputs each."""
    cdef const floating* x = <const floating*>a.x
    cdef const floating* w = <const floating*>a.w
    cdef const floating* bias = <const floating*>a.bias
    cdef floating* out = <floating*>a.out
    cdef floating* buf = <floating*>a.scr + tid * a.per
    cdef Py_ssize_t khw = a.kh * a.kw, P = a.OH * a.OW, M = a.M
    cdef Py_ssize_t u, m, o
    for u in range(u0, u1):
        prepare(x + u * a.H * a.W, a.H, a.W, &a.p, buf)
        for m in range(M):
            o = (u % a.C) * M + m
            fwd_rows(buf, a, w + o * khw, bias[o] if bias != NULL else 0,
                     out + (u * M + m) * P, a.OW, a.OH, a.OW, 0)


def depthwise_forward(const floating[:, :, :, ::1] x,       # IN  (N, C, H, W)
                      const floating[:, :, :, ::1] weight,  # IN  (C*M, 1, kh, kw)
                      const floating[::1] bias,             # IN  (C*M,) or None
                      floating[:, :, :, ::1] out,           # OUT (N, C*M, OH, OW)
                      Py_ssize_t sh, Py_ssize_t sw,
                      Py_ssize_t ph, Py_ssize_t pw,
                      Py_ssize_t dh, Py_ssize_t dw,
                      int n_threads):
    """out[n, o] = bias[o] + correlate(zero_pad(x[n, o // M]), weight[o, 0]),
    strided and dilated; threads split the (n, c) input planes."""
    cdef Args a
    cdef Py_ssize_t u
    a.N = x.shape[0]; a.C = x.shape[1]; a.H = x.shape[2]; a.W = x.shape[3]
    a.M = weight.shape[0] // a.C if a.C > 0 else 1
    a.kh = weight.shape[2]; a.kw = weight.shape[3]
    a.OH = out.shape[2]; a.OW = out.shape[3]
    # A single output along an axis never uses the stride (a huge one would
    # only blow up the prepared plane).
    sh = 1 if a.OH == 1 else sh
    sw = 1 if a.OW == 1 else sw
    a.units = a.N * a.C
    if a.units == 0 or a.OH == 0 or a.OW == 0:
        return
    cdef Py_ssize_t Wq = padded_run(a.OW, <floating*>NULL) + (a.kw - 1) * dw // sw
    a.p = make_prep(ph, pw, (a.OH - 1) * sh + (a.kh - 1) * dh + 1, sw, Wq)
    a.rs = sh * a.p.ld
    a.ts = dh * a.p.ld
    a.nt = n_workers(a.units, n_threads)
    a.per = round16(a.p.rows * a.p.ld)
    cdef int64_t* coff = <int64_t*>alloc_scratch(a.kw * sizeof(int64_t))
    tap_columns(coff, a.kw, sw, dw, Wq)
    cdef floating* scr
    try:
        scr = <floating*>alloc_scratch(a.nt * a.per * sizeof(floating))
    except MemoryError:
        free(coff)
        raise
    a.coff = coff
    a.scr = scr
    a.x = &x[0, 0, 0, 0]
    a.w = &weight[0, 0, 0, 0]
    a.bias = &bias[0] if bias is not None else NULL
    a.out = &out[0, 0, 0, 0]
    with nogil:
        if a.nt == 1:
            fwd_task(&a, 0, a.units, 0, <floating*>NULL)
        else:
            for u in prange(a.units, schedule="guided", num_threads=a.nt):
                fwd_task(&a, u, u + 1, threadid(), <floating*>NULL)
    free(scr)
    free(coff)


# --------------------------------------------------------------------------
# Input gradient
# --------------------------------------------------------------------------

cdef void gx_full_task(const Args* a, Py_ssize_t u0, Py_ssize_t u1, int tid,
                       floating* tag) noexcept nogil:
    """Stride 1: grad_x[n, c] = sum_m correlate(zero_pad(g[n, c*M+m]),
    rot180(w[c*M+m])), for the (n, c) planes [u0, u1)."""
    cdef const floating* g = <const floating*>a.g
    cdef const floating* w = <const floating*>a.w
    cdef floating* out = <floating*>a.out
    cdef floating* buf = <floating*>a.scr + tid * a.per
    cdef Py_ssize_t khw = a.kh * a.kw, P = a.OH * a.OW, M = a.M
    cdef Py_ssize_t u, m, o
    for u in range(u0, u1):
        for m in range(M):
            o = (u % a.C) * M + m
            prepare(g + (u * M + m) * P, a.OH, a.OW, &a.p, buf)
            fwd_rows(buf, a, w + o * khw, 0, out + u * a.H * a.W, a.W, a.H, a.W, m > 0)


cdef void gx_padded_task(const Args* a, Py_ssize_t u0, Py_ssize_t u1, int tid,
                         floating* tag) noexcept nogil:
    """Any stride: the gradient of the zero-padded input, in the prepared
    layout, either gathered row by row from the zero-padded g planes or,
    for a non-finite weight, scatter-added from every g row; then cropped
    into grad_x, for the (n, c) planes [u0, u1)."""
    cdef const floating* g = <const floating*>a.g
    cdef const floating* w = <const floating*>a.w
    cdef floating* out = <floating*>a.out
    cdef floating* buf = <floating*>a.scr + tid * a.per
    cdef Py_ssize_t khw = a.kh * a.kw, P = a.OH * a.OW, M = a.M, H = a.H, W = a.W
    cdef Py_ssize_t sw = a.p.sw, Wq = a.p.Wq, ld = a.p.ld
    cdef Py_ssize_t u, m, o, h, r, b, lo, hi
    cdef floating* orow
    cdef const floating* brow
    cdef floating* gbuf = buf + round16(a.p.rows * ld)
    cdef int64_t* ir = a.ir + tid * 2 * a.kh
    for u in range(u0, u1):
        if not a.gather:
            memset(buf, 0, a.p.rows * ld * sizeof(floating))
        for m in range(M):
            o = (u % a.C) * M + m
            if a.gather:
                prepare(g + (u * M + m) * P, a.OH, a.OW, &a.gp, gbuf)
                if floating is float:
                    DK.gx_rows_s(gbuf, a.gp.ld, a.OH, w + o * khw, <int>a.kh, <int>a.kw,
                                 a.sh, a.dh, a.jtab, ir, sw, a.gp.left, Wq, buf, ld,
                                 a.p.rows, m > 0)
                else:
                    DK.gx_rows_d(gbuf, a.gp.ld, a.OH, w + o * khw, <int>a.kh, <int>a.kw,
                                 a.sh, a.dh, a.jtab, ir, sw, a.gp.left, Wq, buf, ld,
                                 a.p.rows, m > 0)
            elif floating is float:
                DK.scatter_s(g + (u * M + m) * P, a.OW, a.OH, a.OW, w + o * khw,
                             <int>a.kh, <int>a.kw, buf, a.rs, a.ts, a.coff)
            else:
                DK.scatter_d(g + (u * M + m) * P, a.OW, a.OH, a.OW, w + o * khw,
                             <int>a.kh, <int>a.kw, buf, a.rs, a.ts, a.coff)
        for h in range(H):
            orow = out + (u * H + h) * W
            r = h + a.ph
            if r >= a.p.rows:
                memset(orow, 0, W * sizeof(floating))
                continue
            brow = buf + r * ld
            if W + a.pw > ld:  # columns past the last output's reach
                memset(orow, 0, W * sizeof(floating))
            # Phase b holds the columns iw = v*sw + b - pw (the inverse of
            # prepare).
            for b in range(sw):
                lo = cdiv(a.pw - b, sw) if a.pw > b else 0
                hi = min(Wq, cdiv(W + a.pw - b, sw))
                if hi > lo:
                    store_strided(brow + b * Wq + lo, orow + lo * sw + b - a.pw, sw, hi - lo)


def depthwise_grad_input(const floating[:, :, :, ::1] grad_out,  # IN  (N, C*M, OH, OW)
                         const floating[:, :, :, ::1] weight,    # IN  (C*M, 1, kh, kw)
                         floating[:, :, :, ::1] grad_x,          # OUT (N, C, H, W)
                         Py_ssize_t sh, Py_ssize_t sw,
                         Py_ssize_t ph, Py_ssize_t pw,
                         Py_ssize_t dh, Py_ssize_t dw,
                         int n_threads):
    """grad_x[n, c] = sum over the M outputs o of channel c of the full
    correlation of grad_out[n, o] with the 180-degree-rotated weight[o, 0];
    overwrites grad_x.  Threads split the (n, c) planes."""
    cdef Args a
    cdef Py_ssize_t u, o, t, khw
    a.N = grad_x.shape[0]; a.C = grad_x.shape[1]; a.H = grad_x.shape[2]; a.W = grad_x.shape[3]
    a.M = weight.shape[0] // a.C if a.C > 0 else 1
    a.kh = weight.shape[2]; a.kw = weight.shape[3]
    a.OH = grad_out.shape[2]; a.OW = grad_out.shape[3]
    # A single output along an axis never uses the stride (a huge one would
    # only blow up the prepared plane).
    sh = 1 if a.OH == 1 else sh
    sw = 1 if a.OW == 1 else sw
    a.ph = ph; a.pw = pw
    a.units = a.N * a.C
    khw = a.kh * a.kw
    if a.units == 0 or a.H == 0 or a.W == 0:
        return
    # A non-finite weight takes the scatter path at stride 1 too: the full
    # correlation would multiply it by the gradient's zero padding (inf*0 =
    # NaN) where PyTorch's result is finite.
    cdef bint full = sh == 1 and sw == 1 and all_finite(&weight[0, 0, 0, 0], weight.shape[0] * khw)
    a.gather = False
    cdef Py_ssize_t Wq
    if full:
        # The forward kernel over the output gradient, padded by the
        # kernel's reach minus the forward padding (negative: cropped).
        Wq = padded_run(a.W, <floating*>NULL) + (a.kw - 1) * dw
        a.p = make_prep((a.kh - 1) * dh - ph, (a.kw - 1) * dw - pw,
                        a.H + (a.kh - 1) * dh, 1, Wq)
        a.rs = a.p.ld
    else:
        Wq = a.OW + (a.kw - 1) * dw // sw
        a.p = make_prep(0, 0, (a.OH - 1) * sh + (a.kh - 1) * dh + 1, sw, Wq)
        a.rs = sh * a.p.ld
        # Gathering reads each g row from (j*dw)//sw columns left of the
        # output column, in whole pairs of vectors: a zero margin on both
        # sides.
        a.gather = all_finite(&weight[0, 0, 0, 0], weight.shape[0] * khw)
        a.gp = make_prep(0, (a.kw - 1) * dw // sw, a.OH, 1,
                         (a.kw - 1) * dw // sw + 2 * padded_run(cdiv(Wq, 2), <floating*>NULL))
    a.sh = sh; a.dh = dh
    a.ts = dh * a.p.ld
    a.nt = n_workers(a.units, n_threads)
    a.per = round16(a.p.rows * a.p.ld) + (round16(a.gp.rows * a.gp.ld) if a.gather else 0)
    # coff (kw), jtab (sw + 1 + 2*kw), ir (2*kh per thread)
    cdef int64_t* coff = <int64_t*>alloc_scratch(
        (3 * a.kw + sw + 1 + 2 * a.kh * a.nt) * sizeof(int64_t))
    tap_columns(coff, a.kw, 1 if full else sw, dw, Wq)
    a.jtab = coff + a.kw
    a.ir = coff + 3 * a.kw + sw + 1
    if a.gather:
        phase_taps(coff + a.kw, a.kw, sw, dw)
    cdef floating* scr
    try:
        scr = <floating*>alloc_scratch((a.nt * a.per + weight.shape[0] * khw)
                                       * sizeof(floating))
    except MemoryError:
        free(coff)
        raise
    cdef floating* wrot = scr + a.nt * a.per
    cdef const floating* w = &weight[0, 0, 0, 0]
    if full:
        for o in range(weight.shape[0]):
            for t in range(khw):
                wrot[o * khw + t] = w[o * khw + khw - 1 - t]
        a.w = wrot
    else:
        a.w = w
    a.coff = coff
    a.scr = scr
    a.g = &grad_out[0, 0, 0, 0]
    a.out = &grad_x[0, 0, 0, 0]
    with nogil:
        if a.nt == 1:
            if full:
                gx_full_task(&a, 0, a.units, 0, <floating*>NULL)
            else:
                gx_padded_task(&a, 0, a.units, 0, <floating*>NULL)
        else:
            for u in prange(a.units, schedule="guided", num_threads=a.nt):
                if full:
                    gx_full_task(&a, u, u + 1, threadid(), <floating*>NULL)
                else:
                    gx_padded_task(&a, u, u + 1, threadid(), <floating*>NULL)
    free(scr)
    free(coff)


# --------------------------------------------------------------------------
# Weight gradient
# --------------------------------------------------------------------------

cdef void gw_task(const Args* a, Py_ssize_t u0, Py_ssize_t u1, int tid,
                  floating* tag) noexcept nogil:
    """Input channels [u0, u1): grad_weight[o] = sum_n
    correlate(zero_pad(x[n, c]), g[n, o]) for the M filters o of channel c,
    the batch summed in order."""
    cdef const floating* x = <const floating*>a.x
    cdef const floating* g = <const floating*>a.g
    cdef floating* gw = <floating*>a.out
    cdef floating* buf = <floating*>a.scr + tid * a.per
    cdef Py_ssize_t khw = a.kh * a.kw, P = a.OH * a.OW, M = a.M, C = a.C, OW = a.OW
    cdef Py_ssize_t c, n, m, o
    for c in range(u0, u1):
        memset(gw + c * M * khw, 0, M * khw * sizeof(floating))
        for n in range(a.N):
            prepare(x + (n * C + c) * a.H * a.W, a.H, a.W, &a.p, buf)
            for m in range(M):
                o = c * M + m
                if floating is float:
                    DK.gw_s(buf, a.rs, a.ts, a.coff, g + (n * C * M + o) * P, OW, a.OH, OW,
                            <int>a.kh, <int>a.kw, gw + o * khw)
                else:
                    DK.gw_d(buf, a.rs, a.ts, a.coff, g + (n * C * M + o) * P, OW, a.OH, OW,
                            <int>a.kh, <int>a.kw, gw + o * khw)


def depthwise_grad_weight(const floating[:, :, :, ::1] x,         # IN  (N, C, H, W)
                          const floating[:, :, :, ::1] grad_out,  # IN  (N, C*M, OH, OW)
                          floating[:, :, :, ::1] grad_weight,     # OUT (C*M, 1, kh, kw)
                          Py_ssize_t sh, Py_ssize_t sw,
                          Py_ssize_t ph, Py_ssize_t pw,
                          Py_ssize_t dh, Py_ssize_t dw,
                          int n_threads):
    """grad_weight[o, 0] = sum_n correlate(zero_pad(x[n, o // M]), grad_out[n, o])
    (strided, dilated); overwrites grad_weight.  Threads own input channels,
    so the result does not depend on the thread count."""
    cdef Args a
    cdef Py_ssize_t u
    a.N = x.shape[0]; a.C = x.shape[1]; a.H = x.shape[2]; a.W = x.shape[3]
    a.M = grad_weight.shape[0] // a.C if a.C > 0 else 1
    a.kh = grad_weight.shape[2]; a.kw = grad_weight.shape[3]
    a.OH = grad_out.shape[2]; a.OW = grad_out.shape[3]
    # A single output along an axis never uses the stride (a huge one would
    # only blow up the prepared plane).
    sh = 1 if a.OH == 1 else sh
    sw = 1 if a.OW == 1 else sw
    a.units = a.C
    if a.C == 0:
        return
    if a.N == 0 or a.OH == 0 or a.OW == 0:
        grad_weight[...] = 0
        return
    cdef Py_ssize_t Wq = padded_run(a.OW, <floating*>NULL) + (a.kw - 1) * dw // sw
    a.p = make_prep(ph, pw, (a.OH - 1) * sh + (a.kh - 1) * dh + 1, sw, Wq)
    a.rs = sh * a.p.ld
    a.ts = dh * a.p.ld
    a.nt = n_workers(a.units, n_threads)
    a.per = round16(a.p.rows * a.p.ld)
    cdef int64_t* coff = <int64_t*>alloc_scratch(a.kw * sizeof(int64_t))
    tap_columns(coff, a.kw, sw, dw, Wq)
    cdef floating* scr
    try:
        scr = <floating*>alloc_scratch(a.nt * a.per * sizeof(floating))
    except MemoryError:
        free(coff)
        raise
    a.coff = coff
    a.scr = scr
    a.x = &x[0, 0, 0, 0]
    a.g = &grad_out[0, 0, 0, 0]
    a.out = &grad_weight[0, 0, 0, 0]
    with nogil:
        if a.nt == 1:
            gw_task(&a, 0, a.units, 0, <floating*>NULL)
        else:
            for u in prange(a.units, schedule="guided", num_threads=a.nt):
                gw_task(&a, u, u + 1, threadid(), <floating*>NULL)
    free(scr)
    free(coff)
