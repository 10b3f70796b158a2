"""Private elementwise and row-wise kernels (tier 1): activation gradients,
residual sums with their ReLU, the fused softmax cross-entropy, and
finiteness and index-range tests.

Flat, C-contiguous operands of one floating dtype; no validation.  Large
arrays are split into chunks over threads; small ones (and one-thread calls)
never enter an OpenMP region.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, isfinite, log, logf
from libc.stdint cimport int64_t

from cnnext._common cimport cdiv

cimport numpy as cnp

cnp.import_array()


cdef extern from *:
    """
    /* Plain loops the C compiler vectorises: both operands are loaded
     * unconditionally, so the select needs no branch (a conditional load
     * blocks if-conversion: measured 20x slower). */
    #define CNX_RELU_BWD(NAME, T)                                              \\
        static void NAME(Py_ssize_t n, const T *g, const T *x, T *o) {         \\
            Py_ssize_t i;                                                      \\
            for (i = 0; i < n; i++) {                                          \\
                T gv = g[i], xv = x[i];                                        \\
                o[i] = xv <= (T)0 ? (T)0 : gv;                                 \\
            }                                                                  \\
        }
    #define CNX_LRELU_BWD(NAME, T)                                             \\
        static void NAME(Py_ssize_t n, const T *g, const T *x, T *o, T a) {    \\
            Py_ssize_t i;                                                      \\
            for (i = 0; i < n; i++) {                                          \\
                T gv = g[i], xv = x[i], ag = a * gv;                           \\
                o[i] = xv > (T)0 ? gv : ag;                                    \\
            }                                                                  \\
        }
    #define CNX_RELU_FWD(NAME, T)                                              \
        static void NAME(Py_ssize_t n, const T *x, T *o) {                     \
            Py_ssize_t i;                                                      \
            for (i = 0; i < n; i++) {                                          \
                T xv = x[i];                                                   \
                o[i] = (xv > (T)0 || xv != xv) ? xv : (T)0;                    \
            }                                                                  \
        }
    CNX_RELU_FWD(cnx_relu_fwd_s, float)
    CNX_RELU_FWD(cnx_relu_fwd_d, double)
    CNX_RELU_BWD(cnx_relu_bwd_s, float)
    CNX_RELU_BWD(cnx_relu_bwd_d, double)
    CNX_LRELU_BWD(cnx_lrelu_bwd_s, float)
    CNX_LRELU_BWD(cnx_lrelu_bwd_d, double)

    /* A residual sum: o = a + b, then (relu) the ReLU's formula on the
     * stored sum; and its backward with the ReLU: o = a + (ref <= 0 ? 0 : g)
     * (a branch's input gradient plus the masked upstream gradient, the
     * identity shortcut's). */
    #define CNX_ADD_RELU(NAME, T)                                              \
        static void NAME(Py_ssize_t n, const T *a, const T *b, T *o, int relu) { \
            Py_ssize_t i;                                                      \
            if (relu) {                                                        \
                for (i = 0; i < n; i++) {                                      \
                    T v = a[i] + b[i];                                         \
                    o[i] = (v > (T)0 || v != v) ? v : (T)0;                    \
                }                                                              \
            } else {                                                           \
                for (i = 0; i < n; i++) o[i] = a[i] + b[i];                    \
            }                                                                  \
        }
    #define CNX_ADD_MASKED(NAME, T)                                            \
        static void NAME(Py_ssize_t n, const T *a, const T *g, const T *r, T *o) { \
            Py_ssize_t i;                                                      \
            for (i = 0; i < n; i++) {                                          \
                T gv = g[i], rv = r[i], av = a[i];                             \
                T m = rv <= (T)0 ? (T)0 : gv;                                  \
                o[i] = av + m;                                                 \
            }                                                                  \
        }
    CNX_ADD_RELU(cnx_add_relu_s, float)
    CNX_ADD_RELU(cnx_add_relu_d, double)
    CNX_ADD_MASKED(cnx_add_masked_s, float)
    CNX_ADD_MASKED(cnx_add_masked_d, double)

    /* One Adam step.  The operands never overlap (restrict) and the weight
     * decay test is outside the loops, so the loops vectorise (the build
     * passes -fno-math-errno, which lets sqrt be the vector instruction);
     * vector sqrt and division round exactly as the scalar ones. */
    #if defined(_MSC_VER)
    #define CNX_RESTRICT __restrict
    #else
    #define CNX_RESTRICT restrict
    #endif
    #define CNX_ADAM_BODY(T, SQRT, GRAD)                                       \
        for (i = 0; i < n; i++) {                                              \
            T gi = GRAD;                                                       \
            T mi = m[i] * b1;                                                  \
            T vi = v[i] * b2;                                                  \
            mi = mi + c1 * gi;                                                 \
            vi = vi + c2 * (gi * gi);                                          \
            m[i] = mi;                                                         \
            v[i] = vi;                                                         \
            p[i] = p[i] - st * (mi / (SQRT(vi) / bc + ep));                    \
        }
    #define CNX_ADAM(NAME, T, SQRT)                                            \
        static void NAME(Py_ssize_t n, T *CNX_RESTRICT p,                      \
                         const T *CNX_RESTRICT g,                              \
                         T *CNX_RESTRICT m, T *CNX_RESTRICT v,                 \
                         T b1, T b2, T c1, T c2, T st, T bc, T ep, T wd) {     \
            Py_ssize_t i;                                                      \
            if (wd != (T)0) {                                                  \
                CNX_ADAM_BODY(T, SQRT, g[i] + wd * p[i])                       \
            } else {                                                           \
                CNX_ADAM_BODY(T, SQRT, g[i])                                   \
            }                                                                  \
        }
    CNX_ADAM(cnx_adam_s, float, sqrtf)
    CNX_ADAM(cnx_adam_d, double, sqrt)

    /* One SGD step, the tests of the options outside the loops (so each
     * loop vectorises); the same operations in the same order as
     * optim.SGD's formulas. */
    #define CNX_SGD(NAME, T)                                                   \
        static void NAME(Py_ssize_t n, T *CNX_RESTRICT p,                      \
                         const T *CNX_RESTRICT g, T *buf,                       \
                         T lr, T mu, T wd, int momentum, int decay, int first) { \
            Py_ssize_t i;                                                      \
            if (!momentum && !decay) {                                         \
                for (i = 0; i < n; i++) p[i] = p[i] - lr * g[i];               \
            } else if (!momentum) {                                            \
                for (i = 0; i < n; i++) p[i] = p[i] - lr * (g[i] + wd * p[i]); \
            } else if (first) {                                                \
                for (i = 0; i < n; i++) {                                      \
                    T d = decay ? g[i] + wd * p[i] : g[i];                     \
                    buf[i] = d;                                                \
                    p[i] = p[i] - lr * d;                                      \
                }                                                              \
            } else {                                                           \
                for (i = 0; i < n; i++) {                                      \
                    T d = decay ? g[i] + wd * p[i] : g[i];                     \
                    T b = buf[i] * mu + d;                                     \
                    buf[i] = b;                                                \
                    p[i] = p[i] - lr * b;                                      \
                }                                                              \
            }                                                                  \
        }
    CNX_SGD(cnx_sgd_s, float)
    CNX_SGD(cnx_sgd_d, double)
    """
    void cnx_relu_fwd_s(Py_ssize_t n, const float* x, float* o) noexcept nogil
    void cnx_relu_fwd_d(Py_ssize_t n, const double* x, double* o) noexcept nogil
    void cnx_relu_bwd_s(Py_ssize_t n, const float* g, const float* x, float* o) noexcept nogil
    void cnx_relu_bwd_d(Py_ssize_t n, const double* g, const double* x, double* o) noexcept nogil
    void cnx_lrelu_bwd_s(Py_ssize_t n, const float* g, const float* x, float* o, float a) noexcept nogil
    void cnx_lrelu_bwd_d(Py_ssize_t n, const double* g, const double* x, double* o, double a) noexcept nogil
    void cnx_add_relu_s(Py_ssize_t n, const float* a, const float* b, float* o,
                        int relu) noexcept nogil
    void cnx_add_relu_d(Py_ssize_t n, const double* a, const double* b, double* o,
                        int relu) noexcept nogil
    void cnx_add_masked_s(Py_ssize_t n, const float* a, const float* g, const float* r,
                          float* o) noexcept nogil
    void cnx_add_masked_d(Py_ssize_t n, const double* a, const double* g, const double* r,
                          double* o) noexcept nogil
    void cnx_sgd_s(Py_ssize_t n, float* p, const float* g, float* buf, float lr, float mu,
                   float wd, int momentum, int decay, int first) noexcept nogil
    void cnx_sgd_d(Py_ssize_t n, double* p, const double* g, double* buf, double lr,
                   double mu, double wd, int momentum, int decay, int first) noexcept nogil
    void cnx_adam_s(Py_ssize_t n, float* p, const float* g, float* m, float* v, float b1,
                    float b2, float c1, float c2, float st, float bc, float ep,
                    float wd) noexcept nogil
    void cnx_adam_d(Py_ssize_t n, double* p, const double* g, double* m, double* v, double b1,
                    double b2, double c1, double c2, double st, double bc, double ep,
                    double wd) noexcept nogil


cdef extern from "cnnext_eltwise.h" nogil:
    int cnx_elt_avx512() noexcept nogil
    void cnx_chsum_s(const float* g, Py_ssize_t N, Py_ssize_t C, Py_ssize_t P,
                     float* out) noexcept nogil
    void cnx_chsum_d(const double* g, Py_ssize_t N, Py_ssize_t C, Py_ssize_t P,
                     double* out) noexcept nogil
    void cnx_take2_s(const float* s, Py_ssize_t W, float* d, Py_ssize_t n) noexcept nogil
    void cnx_take2_d(const double* s, Py_ssize_t W, double* d, Py_ssize_t n) noexcept nogil

# channel_sums by AVX-512 intrinsics, the portable loop's values (see
# cnnext_eltwise.h).
cdef bint ELT_AVX512 = cnx_elt_avx512()


def eltwise_isa():
    """Name of the channel-sum loop variant in use ("avx512" or "generic")."""
    return "avx512" if ELT_AVX512 else "generic"


# Elements per chunk of the parallel elementwise loops.
cdef Py_ssize_t ELT_CHUNK = 1 << 14


cdef inline void relu_fwd_chunk(const floating* x, floating* o, Py_ssize_t m) noexcept nogil:
    if floating is float:
        cnx_relu_fwd_s(m, x, o)
    else:
        cnx_relu_fwd_d(m, x, o)


def relu(const floating[::1] x,       # IN  (flat)
         floating[::1] out,           # OUT
         int n_threads):
    """out = max(x, 0); NaN propagates; -0.0 gives 0.0 (numpy's maximum)."""
    cdef Py_ssize_t n = x.shape[0], c, lo, nchunks = cdiv(n, ELT_CHUNK)
    if n == 0:
        return
    with nogil:
        if n_threads == 1 or nchunks == 1:
            relu_fwd_chunk(&x[0], &out[0], n)
        else:
            for c in prange(nchunks, schedule="static", num_threads=n_threads):
                lo = c * ELT_CHUNK
                relu_fwd_chunk(&x[lo], &out[lo], min(ELT_CHUNK, n - lo))


cdef inline void relu_bwd_chunk(const floating* g, const floating* x, floating* o,
                                Py_ssize_t m) noexcept nogil:
    if floating is float:
        cnx_relu_bwd_s(m, g, x, o)
    else:
        cnx_relu_bwd_d(m, g, x, o)


cdef inline void lrelu_bwd_chunk(const floating* g, const floating* x, floating* o,
                                 Py_ssize_t m, floating a) noexcept nogil:
    if floating is float:
        cnx_lrelu_bwd_s(m, g, x, o, a)
    else:
        cnx_lrelu_bwd_d(m, g, x, o, a)


def relu_backward(const floating[::1] g,      # IN  upstream gradient (flat)
                  const floating[::1] x,      # IN  forward input (flat)
                  floating[::1] out,          # OUT
                  int n_threads):
    """out = 0 where x <= 0, else g (a NaN x passes g, as PyTorch's
    threshold_backward)."""
    cdef Py_ssize_t n = g.shape[0], c, lo, nchunks = cdiv(n, ELT_CHUNK)
    if n == 0:
        return
    with nogil:
        if n_threads == 1 or nchunks == 1:
            relu_bwd_chunk(&g[0], &x[0], &out[0], n)
        else:
            for c in prange(nchunks, schedule="static", num_threads=n_threads):
                lo = c * ELT_CHUNK
                relu_bwd_chunk(&g[lo], &x[lo], &out[lo], min(ELT_CHUNK, n - lo))


def leaky_relu_backward(const floating[::1] g,
                        const floating[::1] x,
                        floating[::1] out,
                        double slope,
                        int n_threads):
    """out = g where x > 0, else slope * g (PyTorch's rule)."""
    cdef Py_ssize_t n = g.shape[0], c, lo, nchunks = cdiv(n, ELT_CHUNK)
    cdef floating a = <floating>slope
    if n == 0:
        return
    with nogil:
        if n_threads == 1 or nchunks == 1:
            lrelu_bwd_chunk(&g[0], &x[0], &out[0], n, a)
        else:
            for c in prange(nchunks, schedule="static", num_threads=n_threads):
                lo = c * ELT_CHUNK
                lrelu_bwd_chunk(&g[lo], &x[lo], &out[lo], min(ELT_CHUNK, n - lo), a)


cdef inline void add_relu_chunk(const floating* a, const floating* b, floating* o,
                                Py_ssize_t m, bint relu) noexcept nogil:
    if floating is float:
        cnx_add_relu_s(m, a, b, o, relu)
    else:
        cnx_add_relu_d(m, a, b, o, relu)


def add_relu(const floating[::1] a,       # IN  (flat)
             const floating[::1] b,       # IN  (flat)
             floating[::1] out,           # OUT (may be a or b)
             bint relu,
             int n_threads):
    """out = a + b, then (``relu``) max(out, 0) as ``relu`` computes it: a
    residual sum and the ReLU after it in one pass."""
    cdef Py_ssize_t n = a.shape[0], c, lo, nchunks = cdiv(n, ELT_CHUNK)
    if n == 0:
        return
    with nogil:
        if n_threads == 1 or nchunks == 1:
            add_relu_chunk(&a[0], &b[0], &out[0], n, relu)
        else:
            for c in prange(nchunks, schedule="static", num_threads=n_threads):
                lo = c * ELT_CHUNK
                add_relu_chunk(&a[lo], &b[lo], &out[lo], min(ELT_CHUNK, n - lo), relu)


cdef inline void add_masked_chunk(const floating* a, const floating* g, const floating* r,
                                  floating* o, Py_ssize_t m) noexcept nogil:
    if floating is float:
        cnx_add_masked_s(m, a, g, r, o)
    else:
        cnx_add_masked_d(m, a, g, r, o)


def add_masked(const floating[::1] a,     # IN  (flat)
               const floating[::1] g,     # IN  upstream gradient of a ReLU (flat)
               const floating[::1] ref,   # IN  that ReLU's output (flat)
               floating[::1] out,         # OUT (may be a)
               int n_threads):
    """out = a + relu_backward(g, ref): an input gradient plus the masked
    gradient of an identity shortcut, in one pass."""
    cdef Py_ssize_t n = a.shape[0], c, lo, nchunks = cdiv(n, ELT_CHUNK)
    if n == 0:
        return
    with nogil:
        if n_threads == 1 or nchunks == 1:
            add_masked_chunk(&a[0], &g[0], &ref[0], &out[0], n)
        else:
            for c in prange(nchunks, schedule="static", num_threads=n_threads):
                lo = c * ELT_CHUNK
                add_masked_chunk(&a[lo], &g[lo], &ref[lo], &out[lo], min(ELT_CHUNK, n - lo))


cdef void add_strided_planes(const floating* src, floating* dst, Py_ssize_t h, Py_ssize_t w,
                             Py_ssize_t H, Py_ssize_t W, Py_ssize_t sh, Py_ssize_t sw,
                             Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    cdef Py_ssize_t p, i, j
    cdef const floating* sr
    cdef floating* dr
    for p in range(p0, p1):
        for i in range(h):
            sr = src + (p * h + i) * w
            dr = dst + (p * H + i * sh) * W
            for j in range(w):
                dr[j * sw] = dr[j * sw] + sr[j]


cdef void take_strided_planes(const floating* src, floating* dst, Py_ssize_t h, Py_ssize_t w,
                              Py_ssize_t H, Py_ssize_t W, Py_ssize_t sh, Py_ssize_t sw,
                              Py_ssize_t p0, Py_ssize_t p1) noexcept nogil:
    cdef Py_ssize_t p, i, j
    cdef const floating* sr
    cdef floating* dr
    cdef bint vec = ELT_AVX512 and sw == 2
    for p in range(p0, p1):
        for i in range(h):
            sr = src + (p * H + i * sh) * W
            dr = dst + (p * h + i) * w
            if not vec:
                for j in range(w):
                    dr[j] = sr[j * sw]
            elif floating is float:
                cnx_take2_s(sr, W, dr, w)
            else:
                cnx_take2_d(sr, W, dr, w)


cdef void strided_run(bint take, const floating* a, floating* b, Py_ssize_t planes,
                      Py_ssize_t h, Py_ssize_t w, Py_ssize_t H, Py_ssize_t W, Py_ssize_t sh,
                      Py_ssize_t sw, int n_threads) noexcept nogil:
    """take_strided_planes (``take``: a the full planes, b the grid) or
    add_strided_planes (a the grid, b the full planes) over ``planes``
    planes, split into contiguous ranges over the threads."""
    cdef int nt = <int>max(1, min(n_threads, planes)), t
    if nt == 1:
        if take:
            take_strided_planes(a, b, h, w, H, W, sh, sw, 0, planes)
        else:
            add_strided_planes(a, b, h, w, H, W, sh, sw, 0, planes)
        return
    for t in prange(nt, schedule="static", chunksize=1, num_threads=nt):
        if take:
            take_strided_planes(a, b, h, w, H, W, sh, sw, planes * t // nt,
                                planes * (t + 1) // nt)
        else:
            add_strided_planes(a, b, h, w, H, W, sh, sw, planes * t // nt,
                               planes * (t + 1) // nt)


def add_strided(const floating[:, :, :, ::1] src,   # IN    (N, C, h, w)
                floating[:, :, :, ::1] dst,         # INOUT (N, C, H, W)
                Py_ssize_t sh, Py_ssize_t sw,
                int n_threads):
    """dst[n, c, i*sh, j*sw] += src[n, c, i, j] for every (i, j) of src:
    the input gradient of a strided 1x1 convolution (nonzero on its stride
    grid only) added to another.  Needs (h-1)*sh < H and (w-1)*sw < W."""
    if src.shape[0] * src.shape[1] * src.shape[2] * src.shape[3] == 0:
        return
    with nogil:
        strided_run(False, &src[0, 0, 0, 0], &dst[0, 0, 0, 0], src.shape[0] * src.shape[1],
                    src.shape[2], src.shape[3], dst.shape[2], dst.shape[3], sh, sw, n_threads)


def take_strided(const floating[:, :, :, ::1] src,   # IN  (N, C, H, W)
                 floating[:, :, :, ::1] dst,         # OUT (N, C, h, w)
                 Py_ssize_t sh, Py_ssize_t sw,
                 int n_threads):
    """dst[n, c, i, j] = src[n, c, i*sh, j*sw] for every (i, j) of dst: a
    strided 1x1 convolution's input at its output's positions (add_strided's
    counterpart).  Needs (h-1)*sh < H and (w-1)*sw < W."""
    if dst.shape[0] * dst.shape[1] * dst.shape[2] * dst.shape[3] == 0:
        return
    with nogil:
        strided_run(True, &src[0, 0, 0, 0], &dst[0, 0, 0, 0], dst.shape[0] * dst.shape[1],
                    dst.shape[2], dst.shape[3], src.shape[2], src.shape[3], sh, sw, n_threads)


def all_finite(const floating[::1] a):
    """True when no element is inf or NaN (stops at the first that is)."""
    cdef Py_ssize_t i, n = a.shape[0]
    cdef bint ok = True
    with nogil:
        for i in range(n):
            if not isfinite(a[i]):
                ok = False
                break
    return ok


cdef inline floating exp_(floating v) noexcept nogil:
    if floating is float:
        return expf(v)
    else:
        return exp(v)


cdef inline floating log_(floating v) noexcept nogil:
    if floating is float:
        return logf(v)
    else:
        return log(v)


def softmax_cross_entropy(const floating[:, ::1] z,     # IN  logits (N, K), N >= 1
                          const int64_t[::1] labels,    # IN  (N,), all in [0, K)
                          floating[:, ::1] grad):       # OUT (N, K)
    """Mean cross-entropy of softmax(z) against ``labels``, and its gradient
    ``(softmax(z) - onehot(labels)) / N``, in one pass per row.

    Stable: the row maximum is subtracted first (a NaN in a row propagates
    to its loss and gradient, as in numpy)."""
    cdef Py_ssize_t N = z.shape[0], K = z.shape[1], i, k
    cdef floating m, v, s, nf = <floating>N
    cdef double total = 0
    cdef const floating* row
    cdef floating* g
    with nogil:
        for i in range(N):
            row = &z[i, 0]
            g = &grad[i, 0]
            m = row[0]
            for k in range(1, K):
                v = row[k]
                if v > m or v != v:
                    m = v
                if m != m:
                    break
            s = 0
            for k in range(K):
                v = exp_(row[k] - m)
                g[k] = v
                s = s + v
            total = total + <double>(log_(s) - (row[labels[i]] - m))
            for k in range(K):
                g[k] = g[k] / s
            g[labels[i]] = g[labels[i]] - 1
            for k in range(K):
                g[k] = g[k] / nf
    return total / N


def indices_within(const int64_t[::1] a, int64_t lo, int64_t hi):
    """True when lo <= a[i] < hi for every i (a validation helper that costs
    nothing next to the numpy reductions it replaces on small arrays)."""
    cdef Py_ssize_t i, n = a.shape[0]
    cdef bint ok = True
    with nogil:
        for i in range(n):
            if a[i] < lo or a[i] >= hi:
                ok = False
                break
    return ok


def float_operands(tuple arrays, tuple ndims, bint contiguous=True, bint last_optional=False):
    """The dtype of ``arrays`` if each is a native-byte-order float32 or
    float64 (all the same), C-contiguous ``numpy.ndarray`` whose ndim is in
    ``ndims[i]`` (None: any); with ``last_optional`` the last entry may be
    None (an absent bias).  Otherwise None.  ``contiguous=False`` accepts
    any memory layout.

    The check a training loop's calls pass, done in C: anything else goes
    through the full validation (``cnnext._validate.float_arrays``)."""
    cdef Py_ssize_t i, n = len(arrays)
    cdef int tn, t = -1
    cdef object o, nd
    cdef cnp.ndarray a = None
    for i in range(n):
        o = arrays[i]
        if o is None and last_optional and i == n - 1 and i > 0:
            continue
        if type(o) is not cnp.ndarray:
            return None
        a = <cnp.ndarray>o
        tn = cnp.PyArray_TYPE(a)
        if (tn != cnp.NPY_FLOAT and tn != cnp.NPY_DOUBLE) or (t != -1 and tn != t):
            return None
        if (contiguous and not cnp.PyArray_IS_C_CONTIGUOUS(a)) or not cnp.PyArray_ISNOTSWAPPED(a):
            return None
        nd = ndims[i]
        if nd is not None and cnp.PyArray_NDIM(a) not in nd:
            return None
        t = tn
    return (<cnp.ndarray>arrays[0]).dtype


def channel_sums(const floating[:, :, ::1] g,   # IN  (N, C, P)
                 floating[::1] out):            # OUT (C,)
    """out[c] = sum of g[:, c, :], accumulated in double (a bias gradient;
    inf + -inf gives NaN without a floating-point warning).  Eight
    independent partial sums per row keep the adds pipelined."""
    cdef Py_ssize_t N = g.shape[0], C = g.shape[1], P = g.shape[2], n, c, p, j
    cdef double acc[8]
    cdef double total
    cdef const floating* row
    if ELT_AVX512 and N > 0 and C > 0 and P > 0:
        with nogil:
            if floating is float:
                cnx_chsum_s(&g[0, 0, 0], N, C, P, &out[0])
            else:
                cnx_chsum_d(&g[0, 0, 0], N, C, P, &out[0])
        return
    with nogil:
        for c in range(C):
            for j in range(8):
                acc[j] = 0
            for n in range(N):
                if P == 0:
                    break
                row = &g[n, c, 0]
                p = 0
                while p + 8 <= P:
                    for j in range(8):
                        acc[j] += row[p + j]
                    p = p + 8
                while p < P:
                    acc[0] += row[p]
                    p = p + 1
            total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
            out[c] = <floating>total


def adam_update(floating[::1] p,           # INOUT parameter
                const floating[::1] g,     # IN    gradient
                floating[::1] m,           # INOUT first moment
                floating[::1] v,           # INOUT second moment
                double beta1, double beta2, double step_size, double bc2_sqrt,
                double eps, double weight_decay):
    """One Adam step in one pass, as ``cnnext.optim.Adam`` writes it:
    g += wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g*g;
    p -= step_size * m / (sqrt(v)/bc2_sqrt + eps)."""
    cdef Py_ssize_t n = p.shape[0]
    cdef floating b1 = <floating>beta1, b2 = <floating>beta2
    cdef floating c1 = <floating>(1.0 - beta1), c2 = <floating>(1.0 - beta2)
    cdef floating st = <floating>step_size, bc = <floating>bc2_sqrt, ep = <floating>eps
    cdef floating wd = <floating>weight_decay
    if n == 0:
        return
    with nogil:
        if floating is float:
            cnx_adam_s(n, &p[0], &g[0], &m[0], &v[0], b1, b2, c1, c2, st, bc, ep, wd)
        else:
            cnx_adam_d(n, &p[0], &g[0], &m[0], &v[0], b1, b2, c1, c2, st, bc, ep, wd)


def sgd_update(floating[::1] p,            # INOUT parameter
               const floating[::1] g,      # IN    gradient
               floating[::1] buf,          # INOUT momentum buffer (unused without momentum)
               double lr, double momentum, double weight_decay, bint first):
    """One SGD step in one pass, as ``cnnext.optim.SGD`` writes it:
    d = g + wd*p; with momentum buf = d (first step) or mu*buf + d, d = buf;
    p -= lr*d."""
    cdef Py_ssize_t n = p.shape[0]
    cdef floating a = <floating>lr, mu = <floating>momentum, wd = <floating>weight_decay
    cdef int use_mu = momentum != 0, decay = weight_decay != 0
    if n == 0:
        return
    with nogil:
        if floating is float:
            cnx_sgd_s(n, &p[0], &g[0], &buf[0], a, mu, wd, use_mu, decay, first)
        else:
            cnx_sgd_d(n, &p[0], &g[0], &buf[0], a, mu, wd, use_mu, decay, first)
