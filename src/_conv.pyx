# cython: freethreading_compatible = False
"""Private convolution kernels (tier 1).

Stateless, GIL-free kernels over typed memoryviews.  They assume valid,
C-contiguous, correctly typed input and never validate: ``cnnext.functional``
is the only caller and does all checking.

Design: the batch is processed in chunks of ``nb`` samples.  For each chunk a
scratch matrix in the im2col layout ``col[K, nb*P]`` (``K = C*kH*kW`` taps,
``P = OH*OW`` output positions) is filled in an OpenMP ``prange`` (memory-bound
work) and then one large GEMM runs *outside* the parallel region (threaded BLAS
is never called from inside an OpenMP region).  The scratch buffers are
allocated by the caller with a fixed, documented bound on their size.

* forward:          out[n] = Wmat(Cout, K) @ col_n(K, P)            (+ bias)
* weight gradient:  dW     = sum_n gout_n(Cout, P) @ col_n(K, P)^T  -- the
                    correlation of the input with the output gradient
* input gradient / transposed convolution / full convolution:
                    col_n  = Wmat^T(K, Cout) @ gout_n(Cout, P), then col2im
                    scatter-adds every column back to the window it came from.
                    At stride 1 this is exactly the full convolution of the
                    output gradient with the 180-degree-rotated kernel.
"""
from cython cimport floating
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport sgemm, dgemm


cdef inline void gemm_rm(bint trans_a, bint trans_b,
                         int m, int n, int k, floating alpha,
                         const floating* a, int lda,
                         const floating* b, int ldb,
                         floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major C(m, n) = alpha * op(A) @ op(B) + beta * C.

    Fortran BLAS is column-major, so compute C^T = op(B)^T @ op(A)^T.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m == 0 or n == 0:
        return
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda,
              &beta, c, &ldc)


cdef void im2col(const floating[:, :, :, ::1] x,   # IN  (N, C, H, W)
                 floating[:, ::1] col,              # OUT (K, nb*P)
                 Py_ssize_t n0, Py_ssize_t nb,
                 Py_ssize_t kh, Py_ssize_t kw,
                 Py_ssize_t sh, Py_ssize_t sw,
                 Py_ssize_t ph, Py_ssize_t pw,
                 Py_ssize_t dh, Py_ssize_t dw,
                 Py_ssize_t oh_n, Py_ssize_t ow_n,
                 int n_threads) noexcept nogil:
    cdef Py_ssize_t H = x.shape[2], W = x.shape[3]
    cdef Py_ssize_t K = x.shape[1] * kh * kw
    cdef Py_ssize_t P = oh_n * ow_n
    cdef Py_ssize_t r, c, i, j, nl, oh, ow, ih, iw, base
    for r in prange(K, schedule="static", num_threads=n_threads):
        c = r // (kh * kw)
        i = (r // kw) % kh
        j = r % kw
        for nl in range(nb):
            base = nl * P
            for oh in range(oh_n):
                ih = oh * sh - ph + i * dh
                if ih < 0 or ih >= H:
                    for ow in range(ow_n):
                        col[r, base + oh * ow_n + ow] = 0
                else:
                    for ow in range(ow_n):
                        iw = ow * sw - pw + j * dw
                        if iw >= 0 and iw < W:
                            col[r, base + oh * ow_n + ow] = x[n0 + nl, c, ih, iw]
                        else:
                            col[r, base + oh * ow_n + ow] = 0


cdef void col2im(const floating[:, ::1] col,        # IN  (K, nb*P)
                 floating[:, :, :, ::1] out,        # OUT (N, C, H, W), overwritten
                 Py_ssize_t n0, Py_ssize_t nb,
                 Py_ssize_t kh, Py_ssize_t kw,
                 Py_ssize_t sh, Py_ssize_t sw,
                 Py_ssize_t ph, Py_ssize_t pw,
                 Py_ssize_t dh, Py_ssize_t dw,
                 Py_ssize_t oh_n, Py_ssize_t ow_n,
                 int n_threads) noexcept nogil:
    """Scatter-add each column back to its window; one thread owns a plane."""
    cdef Py_ssize_t C = out.shape[1], H = out.shape[2], W = out.shape[3]
    cdef Py_ssize_t P = oh_n * ow_n
    cdef Py_ssize_t q, nl, c, i, j, r, oh, ow, ih, iw, base
    for q in prange(nb * C, schedule="static", num_threads=n_threads):
        nl = q // C
        c = q % C
        base = nl * P
        for ih in range(H):
            for iw in range(W):
                out[n0 + nl, c, ih, iw] = 0
        for i in range(kh):
            for j in range(kw):
                r = (c * kh + i) * kw + j
                for oh in range(oh_n):
                    ih = oh * sh - ph + i * dh
                    if ih < 0 or ih >= H:
                        continue
                    for ow in range(ow_n):
                        iw = ow * sw - pw + j * dw
                        if iw >= 0 and iw < W:
                            out[n0 + nl, c, ih, iw] += col[r, base + oh * ow_n + ow]


cdef void gather_chunk(const floating[:, :, ::1] g,  # IN  (N, Cout, P)
                       floating[:, ::1] buf,          # OUT (Cout, nb*P)
                       Py_ssize_t n0, Py_ssize_t nb, int n_threads) noexcept nogil:
    cdef Py_ssize_t Co = g.shape[1], P = g.shape[2]
    cdef Py_ssize_t q, nl, co, p
    for q in prange(nb * Co, schedule="static", num_threads=n_threads):
        nl = q // Co
        co = q % Co
        for p in range(P):
            buf[co, nl * P + p] = g[n0 + nl, co, p]


def conv2d_forward(const floating[:, :, :, ::1] x,     # IN  (N, C, H, W)
                   const floating[:, ::1] wmat,        # IN  (Cout, K)
                   const floating[::1] bias,           # IN  (Cout,) or None
                   floating[:, :, ::1] out,            # OUT (N, Cout, P)
                   floating[:, ::1] col,               # SCRATCH (K, nb*P)
                   floating[:, ::1] tmp,               # SCRATCH (Cout, nb*P) or unused
                   Py_ssize_t kh, Py_ssize_t kw,
                   Py_ssize_t sh, Py_ssize_t sw,
                   Py_ssize_t ph, Py_ssize_t pw,
                   Py_ssize_t dh, Py_ssize_t dw,
                   Py_ssize_t oh_n, Py_ssize_t ow_n,
                   Py_ssize_t chunk, int n_threads):
    cdef Py_ssize_t N = x.shape[0], Co = wmat.shape[0], K = wmat.shape[1]
    cdef Py_ssize_t P = oh_n * ow_n
    cdef Py_ssize_t n0, nb, q, nl, co, p
    cdef bint has_bias = bias is not None
    cdef floating bv
    with nogil:
        n0 = 0
        while n0 < N:
            nb = min(chunk, N - n0)
            im2col(x, col, n0, nb, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n, n_threads)
            if nb == 1:
                gemm_rm(False, False, <int>Co, <int>P, <int>K, <floating>1,
                        &wmat[0, 0], <int>K, &col[0, 0], <int>(nb * P),
                        <floating>0, &out[n0, 0, 0], <int>P)
                if has_bias:
                    for co in range(Co):
                        bv = bias[co]
                        for p in range(P):
                            out[n0, co, p] += bv
            else:
                gemm_rm(False, False, <int>Co, <int>(nb * P), <int>K, <floating>1,
                        &wmat[0, 0], <int>K, &col[0, 0], <int>(nb * P),
                        <floating>0, &tmp[0, 0], <int>(nb * P))
                for q in prange(nb * Co, schedule="static", num_threads=n_threads):
                    nl = q // Co
                    co = q % Co
                    bv = bias[co] if has_bias else 0
                    for p in range(P):
                        out[n0 + nl, co, p] = tmp[co, nl * P + p] + bv
            n0 = n0 + nb


def conv2d_grad_weight(const floating[:, :, :, ::1] x,    # IN  (N, C, H, W)
                       const floating[:, :, ::1] gout,    # IN  (N, Cout, P)
                       floating[:, ::1] gw,               # OUT (Cout, K)
                       floating[:, ::1] col,              # SCRATCH (K, nb*P)
                       floating[:, ::1] gbuf,             # SCRATCH (Cout, nb*P) or unused
                       Py_ssize_t kh, Py_ssize_t kw,
                       Py_ssize_t sh, Py_ssize_t sw,
                       Py_ssize_t ph, Py_ssize_t pw,
                       Py_ssize_t dh, Py_ssize_t dw,
                       Py_ssize_t oh_n, Py_ssize_t ow_n,
                       Py_ssize_t chunk, int n_threads):
    """dW = sum_n gout_n @ col_n^T: correlation of the input with the gradient."""
    cdef Py_ssize_t N = x.shape[0], Co = gw.shape[0], K = gw.shape[1]
    cdef Py_ssize_t P = oh_n * ow_n
    cdef Py_ssize_t n0, nb, a, b
    cdef floating beta = 0
    with nogil:
        for a in range(Co):
            for b in range(K):
                gw[a, b] = 0
        n0 = 0
        while n0 < N:
            nb = min(chunk, N - n0)
            im2col(x, col, n0, nb, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n, n_threads)
            if nb == 1:
                gemm_rm(False, True, <int>Co, <int>K, <int>P, <floating>1,
                        &gout[n0, 0, 0], <int>P, &col[0, 0], <int>P,
                        beta, &gw[0, 0], <int>K)
            else:
                gather_chunk(gout, gbuf, n0, nb, n_threads)
                gemm_rm(False, True, <int>Co, <int>K, <int>(nb * P), <floating>1,
                        &gbuf[0, 0], <int>(nb * P), &col[0, 0], <int>(nb * P),
                        beta, &gw[0, 0], <int>K)
            beta = 1
            n0 = n0 + nb


def conv_transpose_core(const floating[:, :, ::1] g,      # IN  (N, Cg, P)
                        const floating[:, ::1] wmat,      # IN  (Cg, K) with K = C*kh*kw
                        floating[:, :, :, ::1] out,       # OUT (N, C, H, W), overwritten
                        floating[:, ::1] col,             # SCRATCH (K, nb*P)
                        floating[:, ::1] gbuf,            # SCRATCH (Cg, nb*P) or unused
                        Py_ssize_t kh, Py_ssize_t kw,
                        Py_ssize_t sh, Py_ssize_t sw,
                        Py_ssize_t ph, Py_ssize_t pw,
                        Py_ssize_t dh, Py_ssize_t dw,
                        Py_ssize_t oh_n, Py_ssize_t ow_n,
                        Py_ssize_t chunk, int n_threads):
    """out_n = col2im(Wmat^T @ g_n): conv2d's input gradient, conv_transpose2d
    and (stride 1, no padding) the full convolution with the rotated kernel."""
    cdef Py_ssize_t N = g.shape[0], Cg = wmat.shape[0], K = wmat.shape[1]
    cdef Py_ssize_t P = oh_n * ow_n
    cdef Py_ssize_t n0, nb
    with nogil:
        n0 = 0
        while n0 < N:
            nb = min(chunk, N - n0)
            if nb == 1:
                gemm_rm(True, False, <int>K, <int>P, <int>Cg, <floating>1,
                        &wmat[0, 0], <int>K, &g[n0, 0, 0], <int>P,
                        <floating>0, &col[0, 0], <int>P)
            else:
                gather_chunk(g, gbuf, n0, nb, n_threads)
                gemm_rm(True, False, <int>K, <int>(nb * P), <int>Cg, <floating>1,
                        &wmat[0, 0], <int>K, &gbuf[0, 0], <int>(nb * P),
                        <floating>0, &col[0, 0], <int>(nb * P))
            col2im(col, out, n0, nb, kh, kw, sh, sw, ph, pw, dh, dw, oh_n, ow_n, n_threads)
            n0 = n0 + nb
