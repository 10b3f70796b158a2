"""Private batch-normalization kernels (tier 1).

Inputs are C-contiguous ``(N, C, P)`` views (``P`` the product of the
spatial sizes, 1 for ``(N, C)`` input); channel ``c`` is the ``N`` rows
``x[n, c, :]``, visited channel by channel (``*_channels``) -- or, when
``P == 1`` and a channel is one strided column, row by row over a range of
channels with per-channel float64 accumulators (``*_rows``: contiguous inner
loops).  Each thread owns a contiguous range of whole channels, so no two
threads write the same value, and with one thread no OpenMP region is
entered.  Per-channel statistics (``mean``, ``var``, ``invstd`` and the
backward sums) are float64 and every sum is accumulated in float64 with
independent partial sums (pipelined, and vectorised by the compiler); the
elementwise passes also compute in float64 and round once.  No validation here:
``cnnext._plan`` is the caller.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc

cdef extern from "cnnext_norm.h" nogil:
    ctypedef struct cnx_norm_kernels:
        void (*shifted_sums)(const float* r, Py_ssize_t n, double k, double* s1,
                             double* s2) noexcept nogil
        void (*grad_sums)(const float* g, const float* x, Py_ssize_t n, double m,
                          double* sg, double* sgx) noexcept nogil
        void (*affine)(const float* x, float* y, Py_ssize_t n, double m, double a,
                       double b) noexcept nogil
        void (*grad_input)(const float* g, const float* x, float* gx, Py_ssize_t n,
                           double mg, double m, double k, double s) noexcept nogil
        void (*affine_relu)(const float* x, float* y, Py_ssize_t n, double m, double a,
                            double b) noexcept nogil
        void (*relu_mask)(const float* g, const float* ref, float* o,
                          Py_ssize_t n) noexcept nogil
        void (*affine_add)(const float* x, const float* s, float* y, Py_ssize_t n, double m,
                           double a, double b, int relu) noexcept nogil
        void (*grad_sums_masked)(const float* g, const float* ref, const float* x, Py_ssize_t n,
                                 double m, double* sg, double* sgx) noexcept nogil
        void (*grad_input_masked)(const float* g, const float* ref, const float* x, float* gx,
                                  Py_ssize_t n, double mg, double m, double k,
                                  double s) noexcept nogil
        const char* name
    cnx_norm_kernels cnx_norm_select() noexcept nogil
    void cnx_norm_affine_act_d(const double* x, const double* add, double* y, Py_ssize_t n,
                               double m, double s, double w, double b, int relu) noexcept nogil
    void cnx_norm_relu_mask_d(const double* g, const double* ref, double* o,
                              Py_ssize_t n) noexcept nogil

# The float32 loops (vectorised, AVX-512 or AVX2 where the CPU has it), chosen once.
cdef cnx_norm_kernels KER = cnx_norm_select()


def isa():
    """The variant of the float32 loops in use: ``"avx512"``, ``"avx2"`` or
    ``"generic"``."""
    return KER.name.decode()


# Rows shorter than this (bytes) are visited in memory order (fwd_stream,
# bwd_stream): a channel's rows then lie too far apart and are too short
# for the hardware prefetcher (measured on (64, C, 7, 7) and (64, C, 14, 14)
# float32: about twice as fast from a cold cache); longer rows channel by
# channel in the backward pass, while the channel is in cache for the
# second pass.
cdef Py_ssize_t STREAM_ROW_BYTES = 2048

# The forward pass on longer rows: blocks of channels of about this many
# bytes (in L2 for the second pass), each in memory order (fwd_blocks).
# (Measured at one thread from a cold cache, float32 (64, 16, 28, 28) with
# a ReLU: 0.58-0.76 ms instead of 0.66-0.89 channel by channel, in every
# one of eight alternating runs; (32, 64, 56, 56) as fast; blocks of 512 KB
# no faster, of 2 MB not consistently.)
cdef Py_ssize_t BLOCK_BYTES = 1 << 20


cdef inline double _row_sum(const floating* r, Py_ssize_t P) noexcept nogil:
    cdef double a[8]
    cdef Py_ssize_t p = 0, j
    for j in range(8):
        a[j] = 0
    while p + 8 <= P:
        for j in range(8):
            a[j] += r[p + j]
        p = p + 8
    while p < P:
        a[0] += r[p]
        p = p + 1
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


cdef inline double _row_sqdev(const floating* r, Py_ssize_t P, double m) noexcept nogil:
    """sum_p (r[p] - m)**2: the second pass of the two-pass variance (no
    cancellation, whatever the mean)."""
    cdef double a[8]
    cdef double d
    cdef Py_ssize_t p = 0, j
    for j in range(8):
        a[j] = 0
    while p + 8 <= P:
        for j in range(8):
            d = r[p + j] - m
            a[j] += d * d
        p = p + 8
    while p < P:
        d = r[p] - m
        a[0] += d * d
        p = p + 1
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))


cdef inline void _row_sums_bwd(const double* g, const double* x, Py_ssize_t P, double m,
                               double istd, double* sg, double* sgx) noexcept nogil:
    """sg += sum_p g[p];  sgx += sum_p g[p] * ((x[p] - m) * istd): the
    products of g and xhat, which overflow only with the result (float64
    data; float32 rows go to cnnext_norm.h)."""
    cdef double a[4]
    cdef double b[4]
    cdef double gv
    cdef Py_ssize_t p = 0, j
    for j in range(4):
        a[j] = 0
        b[j] = 0
    while p + 4 <= P:
        for j in range(4):
            gv = g[p + j]
            a[j] += gv
            b[j] += gv * ((x[p + j] - m) * istd)
        p = p + 4
    while p < P:
        gv = g[p]
        a[0] += gv
        b[0] += gv * ((x[p] - m) * istd)
        p = p + 1
    sg[0] += (a[0] + a[1]) + (a[2] + a[3])
    sgx[0] += (b[0] + b[1]) + (b[2] + b[3])


cdef inline void _relu_mask(const floating* g, const floating* ref, floating* o,
                            Py_ssize_t P) noexcept nogil:
    """o = g where ref > 0 (or NaN), else 0: a ReLU's backward from its
    output, as the separate ReLU's."""
    if floating is float:
        KER.relu_mask(g, ref, o, P)
    else:
        cnx_norm_relu_mask_d(g, ref, o, P)


cdef inline void _affine_coeffs(const double* var, const floating* w, const floating* b,
                                double eps, Py_ssize_t c0, Py_ssize_t c1, double* istd,
                                double* wd, double* bd) noexcept nogil:
    """Per channel of [c0, c1): 1/sqrt(var + eps), the weight (1 without
    one) and the bias (0 without one), as the normalising loops use them."""
    cdef Py_ssize_t c
    for c in range(c0, c1):
        istd[c] = 1.0 / sqrt(var[c] + eps)
        wd[c] = w[c] if w != NULL else 1.0
        bd[c] = b[c] if b != NULL else 0.0


cdef void fwd_stream(const floating* x, floating* y, double* mean, double* var, double* scr,
                     const floating* w, const floating* b, Py_ssize_t N, Py_ssize_t C,
                     Py_ssize_t P, double eps, bint training, bint relu, const floating* add,
                     Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Channels [c0, c1): the statistics (training) then the normalisation
    (plus ``add``'s value, then a ReLU on each stored value with ``relu``),
    each pass visiting the rows sample by sample, in memory order (one
    stream the prefetcher follows), accumulating per channel; each
    channel's sums take its rows in sample order.  ``scr`` holds 4*C
    doubles.

    float64 data: two passes (the mean, then the squared deviations).
    float32 data: one pass of float64 sums shifted by the channel's first
    value k: ``var = (S2 - S1**2 / M) / M``.  The cancellation costs at most
    ``eps64 * (mean - k)**2 / var <= eps64 * M`` relative (a data value lies
    within sqrt(M) standard deviations of the mean), far below float32's
    precision for any M below 10**8.  A non-finite k shifts by 0 instead, so
    an infinite mean stays infinite, as with a plain sum."""
    cdef Py_ssize_t c, n, o
    cdef double M = <double>(N * P), v, kc
    cdef double* k = scr
    cdef double* istd = scr + C
    cdef double* wd = scr + 2 * C
    cdef double* bd = scr + 3 * C
    cdef const floating* ar = NULL
    if training:
        for c in range(c0, c1):
            mean[c] = 0
            var[c] = 0
            if floating is float:
                kc = x[c * P]
                k[c] = kc if kc - kc == 0 else 0  # inf or NaN: no shift
        if floating is float:
            for n in range(N):
                for c in range(c0, c1):
                    KER.shifted_sums(x + (n * C + c) * P, P, k[c], &mean[c], &var[c])
            for c in range(c0, c1):
                v = (var[c] - mean[c] * mean[c] / M) / M
                if v < 0:  # rounding; NaN stays NaN
                    v = 0
                mean[c] = k[c] + mean[c] / M
                var[c] = v
        else:
            for n in range(N):
                for c in range(c0, c1):
                    mean[c] += _row_sum(x + (n * C + c) * P, P)
            for c in range(c0, c1):
                mean[c] = mean[c] / M
            for n in range(N):
                for c in range(c0, c1):
                    var[c] += _row_sqdev(x + (n * C + c) * P, P, mean[c])
            for c in range(c0, c1):
                var[c] = var[c] / M
    if y == NULL:
        return
    _affine_coeffs(var, w, b, eps, c0, c1, istd, wd, bd)
    for n in range(N):
        for c in range(c0, c1):
            o = (n * C + c) * P
            if add != NULL:
                ar = add + o
            if floating is double:
                cnx_norm_affine_act_d(x + o, ar, y + o, P, mean[c], istd[c], wd[c], bd[c], relu)
            elif add != NULL:
                KER.affine_add(x + o, ar, y + o, P, mean[c], istd[c] * wd[c], bd[c], relu)
            elif relu:
                KER.affine_relu(x + o, y + o, P, mean[c], istd[c] * wd[c], bd[c])
            else:
                KER.affine(x + o, y + o, P, mean[c], istd[c] * wd[c], bd[c])


cdef void fwd_blocks(const floating* x, floating* y, double* mean, double* var, double* scr,
                     const floating* w, const floating* b, Py_ssize_t N, Py_ssize_t C,
                     Py_ssize_t P, double eps, bint training, bint relu, const floating* add,
                     Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t cb) noexcept nogil:
    """fwd_stream on blocks of ``cb`` channels of [c0, c1): each block's
    statistics then its normalisation, the second pass reading the block
    from cache; within a block the rows in memory order (runs of the
    block's channels, longer than one channel's row)."""
    cdef Py_ssize_t k = c0
    while k < c1:
        fwd_stream(x, y, mean, var, scr, w, b, N, C, P, eps, training, relu, add, k,
                   min(k + cb, c1))
        k = k + cb


cdef void fwd_rows(const floating* x, floating* y, double* mean, double* var, double* scr,
                   const floating* w, const floating* b, Py_ssize_t N, Py_ssize_t C,
                   double eps, bint training, bint relu, const floating* add,
                   Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """(N, C) input, channels [c0, c1): two-pass float64 statistics (for
    both dtypes: the rows are short) and the normalisation of fwd_stream
    (and its ReLU), streaming rows; ``scr`` holds 3*C doubles (inverse std,
    weight, bias per channel)."""
    cdef Py_ssize_t n, c
    cdef double d, M = <double>N
    cdef floating v
    cdef const floating* xr
    cdef floating* yr
    cdef double* istd = scr
    cdef double* wd = scr + C
    cdef double* bd = scr + 2 * C
    if training:
        for c in range(c0, c1):
            mean[c] = 0
            var[c] = 0
        for n in range(N):
            xr = x + n * C
            for c in range(c0, c1):
                mean[c] += xr[c]
        for c in range(c0, c1):
            mean[c] = mean[c] / M
        for n in range(N):
            xr = x + n * C
            for c in range(c0, c1):
                d = xr[c] - mean[c]
                var[c] += d * d
        for c in range(c0, c1):
            var[c] = var[c] / M
    if y == NULL:
        return
    _affine_coeffs(var, w, b, eps, c0, c1, istd, wd, bd)
    for n in range(N):
        xr = x + n * C
        yr = y + n * C
        for c in range(c0, c1):
            v = <floating>((xr[c] - mean[c]) * istd[c] * wd[c] + bd[c])
            if add != NULL:
                v = v + add[n * C + c]
            yr[c] = v if (not relu or v > 0 or v != v) else 0


def batch_norm_forward(const floating[:, :, ::1] x,     # IN    (N, C, P)
                       floating[:, :, ::1] out,         # OUT   (N, C, P), or None: statistics only
                       double[::1] mean,                # INOUT (C,) out when training, else in
                       double[::1] var,                 # INOUT (C,) biased variance, likewise
                       const floating[::1] weight,      # IN    (C,) or None (1)
                       const floating[::1] bias,        # IN    (C,) or None (0)
                       double eps,
                       bint training,
                       int n_threads,
                       bint relu=False,
                       const floating[:, :, ::1] add=None):  # IN (N, C, P) or None
    """Training: per channel, the mean and the biased variance (float64
    sums, see fwd_stream), then the normalisation and affine map in
    another pass while the channels are still in cache (blocks of channels;
    short rows: all of them, in memory order).
    Otherwise ``mean``/``var`` are given and only the last pass runs.
    ``out = (x - mean) * invstd * weight + bias`` evaluated in float64, in
    that order (no cancellation for a large mean, no overflow unless the
    result overflows).  With ``add``, its value is added to each result
    (rounded to the dtype first: a residual sum); with ``relu``, a ReLU is
    applied to each value as it is stored (the separate ReLU's results).
    Needs N*P >= 1."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2], tid
    cdef int nt = <int>max(1, min(n_threads, C))
    cdef floating* yp = NULL
    cdef const floating* wp = NULL
    cdef const floating* bp = NULL
    cdef const floating* ap = NULL
    cdef double* scr
    if C == 0 or N * P == 0:
        return
    if add is not None:
        ap = &add[0, 0, 0]
    if out is not None:
        yp = &out[0, 0, 0]
    if weight is not None:
        wp = &weight[0]
    if bias is not None:
        bp = &bias[0]
    if P == 1:
        scr = <double*>malloc(3 * C * sizeof(double))
        if scr == NULL:
            raise MemoryError("batch_norm: could not allocate scratch")
        with nogil:
            if nt == 1:
                fwd_rows(&x[0, 0, 0], yp, &mean[0], &var[0], scr, wp, bp, N, C, eps, training,
                         relu, ap, 0, C)
            else:
                for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                    fwd_rows(&x[0, 0, 0], yp, &mean[0], &var[0], scr, wp, bp, N, C, eps,
                             training, relu, ap, C * tid // nt, C * (tid + 1) // nt)
        free(scr)
        return
    # Short rows: all of a thread's channels in one stream; longer rows:
    # blocks of channels of about BLOCK_BYTES.
    cdef Py_ssize_t cb = C
    if P * <Py_ssize_t>sizeof(floating) >= STREAM_ROW_BYTES:
        cb = max(1, BLOCK_BYTES // max(1, N * P * <Py_ssize_t>sizeof(floating)))
    scr = <double*>malloc(4 * C * sizeof(double))
    if scr == NULL:
        raise MemoryError("batch_norm: could not allocate scratch")
    with nogil:
        if nt == 1:
            fwd_blocks(&x[0, 0, 0], yp, &mean[0], &var[0], scr, wp, bp, N, C, P, eps,
                       training, relu, ap, 0, C, cb)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                fwd_blocks(&x[0, 0, 0], yp, &mean[0], &var[0], scr, wp, bp, N, C, P, eps,
                           training, relu, ap, C * tid // nt, C * (tid + 1) // nt, cb)
    free(scr)


cdef void bwd_channels(const floating* g, const floating* x, const double* mean,
                       const double* invstd, const floating* w, floating* gx,
                       double* sum_g, double* sum_gx, const floating* ref, bint want_gx,
                       Py_ssize_t N, Py_ssize_t C, Py_ssize_t P, bint training,
                       Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Channels [c0, c1): the two sums, then grad_x (with ``want_gx``).
    With ``ref``, each row of g is first masked by a ReLU's output into the
    row of gx (the separate ReLU's backward), and that row is used as g;
    float32 data in training computing grad_x masks each value as both
    passes read it instead (``masked``: the same values, one store and
    one read of every masked row fewer)."""
    cdef Py_ssize_t c, n, p
    cdef double sg, sgx, istd, mu, mg, k, wc, scale, M = <double>(N * P)
    cdef const floating* gr
    cdef const floating* xr
    cdef floating* gxr
    cdef bint masked = False
    if floating is float:
        masked = ref != NULL and want_gx and training
    for c in range(c0, c1):
        sg = 0
        sgx = 0
        istd = invstd[c]
        for n in range(N):
            gr = g + (n * C + c) * P
            if masked:
                if floating is float:
                    KER.grad_sums_masked(gr, ref + (n * C + c) * P, x + (n * C + c) * P, P,
                                         mean[c], &sg, &sgx)
                continue
            if ref != NULL:
                _relu_mask(gr, ref + (n * C + c) * P, gx + (n * C + c) * P, P)
                gr = gx + (n * C + c) * P
            if floating is float:
                KER.grad_sums(gr, x + (n * C + c) * P, P, mean[c], &sg, &sgx)
            else:
                _row_sums_bwd(gr, x + (n * C + c) * P, P, mean[c], istd, &sg, &sgx)
        if floating is float:
            sgx = sgx * istd
        sum_g[c] = sg
        sum_gx[c] = sgx
        if not want_gx:
            continue
        wc = w[c] if w != NULL else 1.0
        scale = istd * wc  # (float data: no overflow in float64)
        if training:
            # dx = w * invstd * (g - mean(g) - xhat * mean(g * xhat)),
            # xhat = (x - mean) * invstd; in float64, in that order.
            mu = mean[c]
            mg = sg / M
            k = sgx / M
            if floating is float:
                k = k * istd  # float data cannot overflow float64 here: one factor
            for n in range(N):
                gr = (g if ref == NULL or masked else gx) + (n * C + c) * P
                xr = x + (n * C + c) * P
                gxr = gx + (n * C + c) * P
                if floating is float:
                    if masked:
                        KER.grad_input_masked(gr, ref + (n * C + c) * P, xr, gxr, P, mg, mu,
                                              k, scale)
                    else:
                        KER.grad_input(gr, xr, gxr, P, mg, mu, k, scale)
                else:
                    for p in range(P):
                        gxr[p] = ((gr[p] - mg) - (xr[p] - mu) * istd * k) * istd * wc
        else:
            for n in range(N):
                gr = (g if ref == NULL else gx) + (n * C + c) * P
                gxr = gx + (n * C + c) * P
                if floating is float:
                    KER.affine(gr, gxr, P, 0.0, scale, 0.0)
                else:
                    for p in range(P):
                        gxr[p] = gr[p] * istd * wc


cdef void bwd_stream(const floating* g, const floating* x, const double* mean,
                     const double* invstd, const floating* w, floating* gx,
                     double* sum_g, double* sum_gx, const floating* ref, bint want_gx,
                     double* scr, Py_ssize_t N, Py_ssize_t C, Py_ssize_t P, bint training,
                     Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """bwd_channels in memory order (see fwd_stream): the same row kernels,
    each channel's rows in the same order, the same numbers.  With ``ref``
    the masked rows are stored (the second pass, over the whole array, would
    read ``ref`` again from memory).  ``scr`` holds 2*C doubles."""
    cdef Py_ssize_t c, n, p, o
    cdef double M = <double>(N * P), istd, wc, mu, mg_, k_
    cdef const floating* gr
    cdef const floating* xr
    cdef floating* gxr
    cdef double* mg = scr
    cdef double* k = scr + C
    for c in range(c0, c1):
        sum_g[c] = 0
        sum_gx[c] = 0
    for n in range(N):
        for c in range(c0, c1):
            o = (n * C + c) * P
            gr = g + o
            if ref != NULL:
                _relu_mask(gr, ref + o, gx + o, P)
                gr = gx + o
            if floating is float:
                KER.grad_sums(gr, x + o, P, mean[c], &sum_g[c], &sum_gx[c])
            else:
                _row_sums_bwd(gr, x + o, P, mean[c], invstd[c], &sum_g[c], &sum_gx[c])
    for c in range(c0, c1):
        if floating is float:
            sum_gx[c] = sum_gx[c] * invstd[c]
        mg[c] = sum_g[c] / M
        k[c] = sum_gx[c] / M
        if floating is float:
            k[c] = k[c] * invstd[c]
    if not want_gx:
        return
    for n in range(N):
        for c in range(c0, c1):
            o = (n * C + c) * P
            gr = (g if ref == NULL else gx) + o
            xr = x + o
            gxr = gx + o
            istd = invstd[c]
            wc = w[c] if w != NULL else 1.0
            if training:
                mu = mean[c]
                mg_ = mg[c]
                k_ = k[c]
                if floating is float:
                    KER.grad_input(gr, xr, gxr, P, mg_, mu, k_, istd * wc)
                else:
                    for p in range(P):
                        gxr[p] = ((gr[p] - mg_) - (xr[p] - mu) * istd * k_) * istd * wc
            elif floating is float:
                KER.affine(gr, gxr, P, 0.0, istd * wc, 0.0)
            else:
                for p in range(P):
                    gxr[p] = gr[p] * istd * wc


cdef void bwd_rows(const floating* g, const floating* x, const double* mean,
                   const double* invstd, const floating* w, floating* gx, double* sum_g,
                   double* sum_gx, const floating* ref, bint want_gx, double* scr,
                   Py_ssize_t N, Py_ssize_t C, bint training,
                   Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """(N, C) input, channels [c0, c1): bwd_channels streaming rows; ``scr``
    holds 3*C doubles (mean(g), mean(g * xhat), weight per channel)."""
    cdef Py_ssize_t n, c
    cdef double M = <double>N
    cdef const floating* gr
    cdef const floating* xr
    cdef floating* gxr
    cdef double* mg = scr
    cdef double* k = scr + C
    cdef double* wd = scr + 2 * C
    if ref != NULL:
        for n in range(N):
            for c in range(c0, c1):
                gx[n * C + c] = 0 if ref[n * C + c] <= 0 else g[n * C + c]
        g = gx
    for c in range(c0, c1):
        sum_g[c] = 0
        sum_gx[c] = 0
    for n in range(N):
        gr = g + n * C
        xr = x + n * C
        for c in range(c0, c1):
            sum_g[c] += gr[c]
            sum_gx[c] += gr[c] * ((xr[c] - mean[c]) * invstd[c])
    if not want_gx:
        return
    for c in range(c0, c1):
        mg[c] = sum_g[c] / M
        k[c] = sum_gx[c] / M
        wd[c] = w[c] if w != NULL else 1.0
    for n in range(N):
        gr = g + n * C
        xr = x + n * C
        gxr = gx + n * C
        if training:
            for c in range(c0, c1):
                gxr[c] = <floating>(((gr[c] - mg[c]) - (xr[c] - mean[c]) * invstd[c] * k[c])
                                    * invstd[c] * wd[c])
        else:  # (the mean plays no part: a NaN there must not leak in)
            for c in range(c0, c1):
                gxr[c] = <floating>(gr[c] * invstd[c] * wd[c])


def batch_norm_backward(const floating[:, :, ::1] g,     # IN  (N, C, P) upstream gradient
                        const floating[:, :, ::1] x,     # IN  (N, C, P) forward input
                        const double[::1] mean,          # IN  (C,) the mean used forward
                        const double[::1] invstd,        # IN  (C,) 1 / sqrt(var + eps) used
                        const floating[::1] weight,      # IN  (C,) or None (1)
                        floating[:, :, ::1] gx,          # OUT (N, C, P), or None: sums only
                        double[::1] sum_g,               # OUT (C,) sum of g
                        double[::1] sum_gx,              # OUT (C,) sum of g * xhat
                        bint training,
                        int n_threads,
                        const floating[:, :, ::1] ref=None,  # IN (N, C, P) a ReLU's output, or None
                        bint input_grad=True):
    """One fused pass per channel for the sums (grad_bias = sum_g,
    grad_weight = sum_gx, with xhat = (x - mean) * invstd), then one for grad_x: with batch
    statistics (training) the full gradient through the mean and variance,
    otherwise the per-channel scale ``invstd * weight``.

    With ``ref`` (the output of a ReLU applied to this batch norm's output,
    or of a residual sum that a ReLU followed), ``g`` is the ReLU's upstream
    gradient: it is masked (zero where ``ref <= 0``, as the ReLU's backward)
    into ``gx`` row by row and the masked rows are used, which needs ``gx``
    (float32 in training with the input gradient, on rows of 512 values or
    more: each value masked as the two passes read it, nothing stored).
    ``input_grad=False`` computes the sums only (``gx`` then holds the
    masked gradient, or is untouched without ``ref``).  Needs N*P >= 1."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], P = x.shape[2], tid
    cdef int nt = <int>max(1, min(n_threads, C))
    cdef floating* gxp = NULL
    cdef const floating* wp = NULL
    cdef const floating* rp = NULL
    cdef bint want_gx = input_grad and gx is not None
    cdef double* scr
    if ref is not None and gx is None:
        raise ValueError("batch_norm_backward: ref needs gx (the masked gradient's buffer)")
    if C == 0 or N * P == 0:
        return
    if gx is not None:
        gxp = &gx[0, 0, 0]
    if ref is not None:
        rp = &ref[0, 0, 0]
    if weight is not None:
        wp = &weight[0]
    if P == 1:
        scr = <double*>malloc(3 * C * sizeof(double))
        if scr == NULL:
            raise MemoryError("batch_norm_backward: could not allocate scratch")
        with nogil:
            if nt == 1:
                bwd_rows(&g[0, 0, 0], &x[0, 0, 0], &mean[0], &invstd[0], wp, gxp, &sum_g[0],
                         &sum_gx[0], rp, want_gx, scr, N, C, training, 0, C)
            else:
                for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                    bwd_rows(&g[0, 0, 0], &x[0, 0, 0], &mean[0], &invstd[0], wp, gxp,
                             &sum_g[0], &sum_gx[0], rp, want_gx, scr, N, C, training,
                             C * tid // nt, C * (tid + 1) // nt)
        free(scr)
        return
    if P * <Py_ssize_t>sizeof(floating) < STREAM_ROW_BYTES:
        scr = <double*>malloc(2 * C * sizeof(double))
        if scr == NULL:
            raise MemoryError("batch_norm_backward: could not allocate scratch")
        with nogil:
            if nt == 1:
                bwd_stream(&g[0, 0, 0], &x[0, 0, 0], &mean[0], &invstd[0], wp, gxp,
                           &sum_g[0], &sum_gx[0], rp, want_gx, scr, N, C, P, training, 0, C)
            else:
                for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                    bwd_stream(&g[0, 0, 0], &x[0, 0, 0], &mean[0], &invstd[0], wp, gxp,
                               &sum_g[0], &sum_gx[0], rp, want_gx, scr, N, C, P, training,
                               C * tid // nt, C * (tid + 1) // nt)
        free(scr)
        return
    with nogil:
        if nt == 1:
            bwd_channels(&g[0, 0, 0], &x[0, 0, 0], &mean[0], &invstd[0], wp, gxp, &sum_g[0],
                         &sum_gx[0], rp, want_gx, N, C, P, training, 0, C)
        else:
            for tid in prange(nt, schedule="static", chunksize=1, num_threads=nt):
                bwd_channels(&g[0, 0, 0], &x[0, 0, 0], &mean[0], &invstd[0], wp, gxp,
                             &sum_g[0], &sum_gx[0], rp, want_gx, N, C, P, training,
                             C * tid // nt, C * (tid + 1) // nt)
