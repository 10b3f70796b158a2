"""Private GEMM kernels and the building blocks the other kernels share (tier 1).

Stateless, GIL-free, no validation: callers pass valid, C-contiguous arrays
of one floating dtype (``cnnext._plan`` is the only Python caller).

* The arithmetic is done by register-blocked micro-kernels
  (``src/cnnext_ukernel.h``: AVX-512, AVX2+FMA or portable C, chosen once at
  import from CPUID and ``CNNEXT_ISA``) on packed panels: A panels of MR
  rows, B panels of NR columns (BLIS's scheme).  Other kernel modules reach
  the chosen variant through :c:func:`kernels`.
* :func:`gemm` routes by shape: a product whose rows are few (a batch-1
  dense layer) is a set of dot products (no packing); one whose reduction is
  short (a dense layer's weight gradient at batch 1) is a sum of scaled rows;
  everything else is the packed GEMM, split over threads.  With one thread
  no OpenMP region is entered.
* Kernel scratch is ``malloc``'d per call through :c:func:`alloc_scratch`,
  which records the largest request (``scratch_high_water``).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy

import numpy as np

from cnnext._common cimport (
    ACT_NONE, cnx_kernels, cnx_select_kernels, KC, MC, act_rows, cdiv, round16, ukr,
)

cdef cnx_kernels KER = cnx_select_kernels()


cdef const cnx_kernels* kernels() noexcept nogil:
    """The micro-kernel variant chosen for this CPU."""
    return &KER


def isa():
    """Name of the micro-kernel variant in use ("avx512", "avx2", "generic")."""
    return KER.name.decode()


def block_sizes(dtype):
    """(MR, NR, KC) for ``dtype`` (float32 or float64)."""
    if np.dtype(dtype) == np.float32:
        return KER.s_mr, KER.s_nr, KC
    return KER.d_mr, KER.d_nr, KC


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


cdef void pack_a(const floating* src, Py_ssize_t rs, Py_ssize_t cs,
                 Py_ssize_t m, Py_ssize_t k, Py_ssize_t MR,
                 floating* dst) noexcept nogil:
    """Pack A(m, k) (element (i, kk) at src[i*rs + kk*cs]) into MR-row panels:
    dst[panel*k*MR + kk*MR + i], rows past m zero-filled."""
    cdef Py_ssize_t panel, i, kk, rows
    cdef floating* d
    cdef const floating* s
    # One pass over each panel, kk by kk (row by row, the panel's writes
    # were MR elements apart: a 14-row float64 panel's lines were written
    # 14 times, 2x slower on 256x2304 weights).
    for panel in range(cdiv(m, MR)):
        d = dst + panel * k * MR
        s = src + panel * MR * rs
        rows = min(MR, m - panel * MR)
        for kk in range(k):
            for i in range(rows):
                d[i] = s[i * rs + kk * cs]
            for i in range(rows, MR):
                d[i] = 0
            d = d + MR


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

    apack needs (min(MC, M) + MR) * KC elements, bpack KC*NR.
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
        kc = min(<Py_ssize_t>KC, Kd - pc)
        ic = 0
        while ic < M:
            mc = min(<Py_ssize_t>MC, M - ic)
            pack_a(A + ic * rsa + pc * csa, rsa, csa, mc, kc, MR, apack)
            jc = 0
            while jc < N:
                nr = min(NR, N - jc)
                pack_b(B + pc * rsb + jc * csb, rsb, csb, kc, nr, NR, bpack)
                ir = 0
                while ir < mc:
                    mr = min(MR, mc - ir)
                    ukr(&KER, kc, apack + (ir // MR) * kc * MR, bpack,
                        C + (ic + ir) * ldc + jc, ldc, <int>mr, <int>nr,
                        accumulate or pc > 0, <const floating*>NULL)
                    ir += MR
                jc += NR
            ic += MC
        pc += KC


# --------------------------------------------------------------------------
# Small products: no packing, no threads.
# --------------------------------------------------------------------------

# Rows of op(A) up to which C = A @ B^T (B's rows contiguous) is computed as
# dot products, and reduction depths up to which C = op(A) @ B is a sum of
# scaled rows of B.
cdef enum:
    DOT_MAX_ROWS = 4
    AXPY_MAX_DEPTH = 16


cdef void gemm_dot_rows(Py_ssize_t M, Py_ssize_t N, Py_ssize_t Kd,
                        const floating* A, const floating* B, floating* C,
                        bint accumulate) noexcept nogil:
    """C(M, N) (+)= A(M, Kd) @ B(N, Kd)^T for few rows: each row of A against
    four rows of B at a time, dot products over contiguous rows."""
    cdef const floating* pb[4]
    cdef Py_ssize_t i, j, j0, nb
    if not accumulate:
        for i in range(M * N):
            C[i] = 0
    for j0 in range(0, N, 4):
        nb = min(4, N - j0)
        for j in range(4):
            pb[j] = B + (j0 + min(j, nb - 1)) * Kd
        for i in range(M):
            if floating is float:
                KER.dot1_s(Kd, A + i * Kd, <const float* const*>pb, <int>nb, C + i * N + j0)
            else:
                KER.dot1_d(Kd, A + i * Kd, <const double* const*>pb, <int>nb, C + i * N + j0)


cdef void gemm_scaled_rows(Py_ssize_t M, Py_ssize_t N, Py_ssize_t Kd,
                           const floating* A, Py_ssize_t rsa, Py_ssize_t csa,
                           const floating* B, floating* C, bint accumulate) noexcept nogil:
    """C(M, N) (+)= op(A)(M, Kd) @ B(Kd, N) for a short reduction: row i of C
    is the sum of the rows of B scaled by A[i, k] (contiguous, vectorised)."""
    cdef Py_ssize_t i, j, k
    cdef floating a
    cdef floating* c
    cdef const floating* b
    for i in range(M):
        c = C + i * N
        if not accumulate:
            for j in range(N):
                c[j] = 0
        for k in range(Kd):
            a = A[i * rsa + k * csa]
            b = B + k * N
            for j in range(N):
                c[j] += a * b[j]


def gemm(const floating[:, ::1] A,      # IN  (M, K), or (K, M) if trans_a
         const floating[:, ::1] B,      # IN  (K, N), or (N, K) if trans_b
         floating[:, ::1] C,            # OUT (M, N); holds the addend if accumulate
         bint trans_a, bint trans_b, bint accumulate, int n_threads,
         const floating[::1] bias=None,   # IN  (N,): C = bias + op(A) @ op(B)
         int act=0, double alpha=0.0):
    """C (+)= op(A) @ op(B) on the micro-kernels, no BLAS; with ``bias``,
    every row of C starts from it (a dense layer's forward); then the
    epilogue ``act`` (``_common`` ACT_*: 0 none, 1 ReLU, 2 leaky ReLU of
    slope ``alpha``) on C, while it is in cache."""
    gemm_into(A, B, C, trans_a, trans_b, accumulate, n_threads, bias)
    if act != ACT_NONE and C.shape[0] > 0 and C.shape[1] > 0:
        with nogil:
            act_rows(&KER, &C[0, 0], C.shape[1], &C[0, 0], C.shape[1], C.shape[0], C.shape[1],
                     act, <floating>alpha)


cdef int gemm_into(const floating[:, ::1] A, const floating[:, ::1] B, floating[:, ::1] C,
                   bint trans_a, bint trans_b, bint accumulate, int n_threads,
                   const floating[::1] bias) except -1:
    """C (+)= op(A) @ op(B) (+ bias), see :func:`gemm`.

    Few rows times a transposed B: dot products.  A short reduction: scaled
    rows.  Otherwise the packed GEMM with the larger of M and N split into
    contiguous, panel-aligned ranges, one per thread (each thread packs its
    own panels)."""
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
    cdef Py_ssize_t s_a = round16((min(<Py_ssize_t>MC, M) + MR) * KC)
    cdef Py_ssize_t per = s_a + round16(KC * NR)
    cdef Py_ssize_t tid, u0, u1, lo, hi
    cdef floating* scr
    cdef Py_ssize_t i, j
    if M == 0 or N == 0:
        return 0
    if bias is not None:
        for i in range(M):
            for j in range(N):
                C[i, j] = bias[j]
        accumulate = True
    if Kd == 0:  # empty reduction: never form a pointer into an empty operand
        if not accumulate:
            for i in range(M):
                for j in range(N):
                    C[i, j] = 0
        return 0
    if trans_b and not trans_a and M <= DOT_MAX_ROWS:
        with nogil:
            gemm_dot_rows(M, N, Kd, &A[0, 0], &B[0, 0], &C[0, 0], accumulate)
        return 0
    if not trans_b and Kd <= AXPY_MAX_DEPTH:
        with nogil:
            gemm_scaled_rows(M, N, Kd, &A[0, 0], rsa, csa, &B[0, 0], &C[0, 0], accumulate)
        return 0
    scr = <floating*>alloc_scratch(nt * per * sizeof(floating))
    with nogil:
        if nt == 1:
            gemm_st(M, N, Kd, &A[0, 0], rsa, csa, &B[0, 0], rsb, csb, &C[0, 0], N,
                    accumulate, scr, scr + s_a, MR, NR)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                u0 = nunits * tid // nt
                u1 = nunits * (tid + 1) // nt
                lo = u0 * unit
                if split_n:
                    hi = min(N, u1 * unit)
                    if hi > lo:
                        gemm_st(M, hi - lo, Kd, &A[0, 0], rsa, csa, &B[0, 0] + lo * csb,
                                rsb, csb, &C[0, 0] + lo, N, accumulate,
                                scr + tid * per, scr + tid * per + s_a, MR, NR)
                else:
                    hi = min(M, u1 * unit)
                    if hi > lo:
                        gemm_st(hi - lo, N, Kd, &A[0, 0] + lo * rsa, rsa, csa, &B[0, 0],
                                rsb, csb, &C[0, 0] + lo * N, N, accumulate,
                                scr + tid * per, scr + tid * per + s_a, MR, NR)
        free(scr)
    return 0


# --------------------------------------------------------------------------
# Kept copies (whole-network plans keep what they derive from a weight)
# --------------------------------------------------------------------------


def refresh_copy(const floating[::1] src,  # IN
                 floating[::1] kept):      # IN/OUT: src's values at the last call
    """True when ``kept`` differed from ``src`` byte for byte (it now holds
    ``src``'s values); False, nothing written, when they were the same."""
    cdef Py_ssize_t nbytes = src.shape[0] * sizeof(floating)
    cdef bint changed = False
    if nbytes == 0:
        return False
    with nogil:
        if memcmp(&src[0], &kept[0], nbytes) != 0:
            memcpy(&kept[0], &src[0], nbytes)
            changed = True
    return changed


# --------------------------------------------------------------------------
# Narrow products: C(M, N) = A(M, K) @ B(N, K)^T with N at most one vector
# (a dense layer to a few classes), B kept packed by the caller
# --------------------------------------------------------------------------


def narrow_width(dtype):
    """Columns of one vector of the indirect-A 16-row kernel for ``dtype``
    (0 when the variant in use has none)."""
    if np.dtype(dtype) == np.float32:
        return KER.s_nr // 2 if KER.s_inda_n1 != NULL else 0
    return KER.d_nr // 2 if KER.d_inda_n1 != NULL else 0


def pack_narrow(const floating[:, ::1] B,   # IN  (N, K), N <= W
                floating[:, ::1] bpk):      # OUT (K, W): bpk[k, j] = B[j, k], 0 past N
    """B^T as the narrow kernel's one packed panel of W columns."""
    cdef Py_ssize_t N = B.shape[0], K = B.shape[1], W = bpk.shape[1], k, j
    with nogil:
        for k in range(K):
            for j in range(N):
                bpk[k, j] = B[j, k]
            for j in range(N, W):
                bpk[k, j] = 0


cdef void narrow_tiles(const floating* A, const floating* bpk, floating* C,
                       const floating* bias, Py_ssize_t M, Py_ssize_t N, Py_ssize_t K,
                       Py_ssize_t W, Py_ssize_t t0, Py_ssize_t t1, int act,
                       floating alpha) noexcept nogil:
    """Row tiles [t0, t1) of 16 rows: C = bias + A @ B^T, KC-deep blocks
    summed in order (the packed GEMM's order, see gemm_st), then ``act``."""
    cdef int64_t aoff[16]
    cdef Py_ssize_t t, r0, i, j, pc, kc
    cdef int mr
    cdef floating* c
    for i in range(16):
        aoff[i] = i * K
    for t in range(t0, t1):
        r0 = t * 16
        mr = <int>min(16, M - r0)
        c = C + r0 * N
        for i in range(mr):
            for j in range(N):
                c[i * N + j] = bias[j] if bias != NULL else 0
        pc = 0
        while pc < K:
            kc = min(<Py_ssize_t>KC, K - pc)
            if floating is float:
                KER.s_inda_n1(kc, A + r0 * K + pc, aoff, bpk + pc * W, NULL, c, N, mr,
                              <int>N, 1, NULL)
            else:
                KER.d_inda_n1(kc, A + r0 * K + pc, aoff, bpk + pc * W, NULL, c, N, mr,
                              <int>N, 1, NULL)
            pc = pc + KC
        if act != ACT_NONE:
            act_rows(&KER, c, N, c, N, mr, N, act, alpha)


def gemm_narrow(const floating[:, ::1] A,     # IN  (M, K)
                const floating[:, ::1] bpk,   # IN  (K, W) from pack_narrow
                floating[:, ::1] C,           # OUT (M, N), N <= W
                const floating[::1] bias,     # IN  (N,) or None
                int n_threads, int act=0, double alpha=0.0):
    """C = bias + A @ B^T, then the epilogue ``act`` (as :func:`gemm` with
    ``trans_b``, the same sums in the same order as its packed path): tiles of
    16 rows of A read in place against B's one packed panel, split over
    threads.  Needs an indirect-A 16-row kernel (:func:`narrow_width` > 0)."""
    cdef Py_ssize_t M = C.shape[0], N = C.shape[1], K = A.shape[1], W = bpk.shape[1]
    cdef Py_ssize_t T = cdiv(M, 16), tid, i, j
    cdef int nt = <int>max(1, min(n_threads, T))
    cdef const floating* b = &bias[0] if bias is not None else NULL
    if M == 0 or N == 0:
        return
    if K == 0:  # empty reduction: never form a pointer into an empty operand
        for i in range(M):
            for j in range(N):
                C[i, j] = b[j] if b != NULL else 0
        if act != ACT_NONE:
            act_rows(&KER, &C[0, 0], N, &C[0, 0], N, M, N, act, <floating>alpha)
        return
    with nogil:
        if nt == 1:
            narrow_tiles(&A[0, 0], &bpk[0, 0], &C[0, 0], b, M, N, K, W, 0, T, act,
                         <floating>alpha)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                narrow_tiles(&A[0, 0], &bpk[0, 0], &C[0, 0], b, M, N, K, W, T * tid // nt,
                             T * (tid + 1) // nt, act, <floating>alpha)
