# Declarations shared by every kernel module: ``from cnnext._common cimport ...``.
#
# (Cython finds a cimported module's declarations at <include path>/cnnext/
# <name>.pxd, which is why the .pxd files live in src/cnnext/ while the .pyx
# files sit in src/.)
from cython cimport floating
from libc.stdint cimport int64_t, uint32_t

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
    ctypedef void (*cnx_dot1_s)(int64_t n, const float *a, const float *const *b, int nb,
                                float *c) noexcept nogil
    ctypedef void (*cnx_dot1_d)(int64_t n, const double *a, const double *const *b, int nb,
                                double *c) noexcept nogil
    ctypedef void (*cnx_act_s)(const float *src, int64_t lds, float *dst, int64_t ldd,
                               int64_t rows, int64_t cols, int act, float alpha) noexcept nogil
    ctypedef void (*cnx_act_d)(const double *src, int64_t lds, double *dst, int64_t ldd,
                               int64_t rows, int64_t cols, int act, double alpha) noexcept nogil
    ctypedef void (*cnx_split2_s)(const float *src, int64_t n, float *d0,
                                  float *d1) noexcept nogil
    ctypedef void (*cnx_ukr2_s)(int64_t kc, const float *a, const float *b,
                                const int64_t *boff, int64_t b2, float *c, int64_t ldc,
                                int64_t c2, int mr, int nr, int nr2, int accumulate,
                                const float *bias) noexcept nogil
    ctypedef void (*cnx_merge2_s)(const float *src, int64_t lds, float *dst, int64_t ldd,
                                  int64_t rows, int64_t cols) noexcept nogil
    ctypedef void (*cnx_tcopy_s)(const float *src, int64_t lds, int64_t rows, int64_t cols,
                                 float *dst, int64_t ldd)
    ctypedef void (*cnx_ukrf_s)(int64_t kc, const float *a, const float *b,
                                const int64_t *boff, const int64_t *off, uint32_t ma,
                                uint32_t mb, float *c, int64_t ldc, int mr, int nr,
                                int accumulate, const float *bias)
    ctypedef struct cnx_kernels:
        cnx_ukrf_s s_indf_mr[32]
        cnx_tcopy_s tcopy_s
        cnx_merge2_s merge2_s
        cnx_ukr2_s s_ind2r_mr[8]
        cnx_split2_s split2_s
        cnx_act_s act_s
        cnx_act_d act_d
        cnx_dot_s dot_s
        cnx_dot_d dot_d
        cnx_dot1_s dot1_s
        cnx_dot1_d dot1_d
        cnx_ukr_s s_ind_mr[8]
        cnx_ukr_d d_ind_mr[8]
        cnx_ukr_d d_ind_wide[6]
        cnx_ukr_d d_ind_wide_pfl[6]
        cnx_ukr_s s_ind_pfl
        cnx_ukr_s s_inda_n1
        cnx_ukr_d d_inda_n1
        cnx_ukr_s s
        cnx_ukr_s s_ind
        cnx_ukr_s s_ind_pf
        cnx_ukr_s s_inda
        cnx_ukr_d d
        cnx_ukr_d d_ind
        cnx_ukr_d d_ind_pf
        cnx_ukr_d d_inda
        int s_mr, s_nr, d_mr, d_nr
        const char *name
    cnx_kernels cnx_select_kernels() noexcept nogil


# Block sizes (elements).  KC: reduction depth of one packed panel pair;
# MC: rows of A packed at once by the single-threaded GEMM; COL_ELEMS: the
# column block of the col2im input gradient (K x positions elements).
cdef enum:
    KC = 256
    MC = 256
    COL_ELEMS = 65536


ctypedef struct Geom:
    # One convolution's geometry, computed once per call from the caller's
    # (already validated) sizes.
    Py_ssize_t N, C, H, W        # input (N, C, H, W)
    Py_ssize_t Co, kh, kw, K     # filters (Co, C, kh, kw), K = C*kh*kw
    Py_ssize_t sh, sw, ph, pw, dh, dw
    Py_ssize_t OH, OW            # output size
    # The "prepared sample": the zero-padded input split into its sh*sw
    # stride phases, each (C, Hq, Wq); L elements in all, in a buffer of Lbuf
    # >= L elements whose tail is zero, so that every tap's run of positions
    # (junk columns included) can be read in place.
    Py_ssize_t Hq, Wq, L, Lbuf
    bint prepared                # False: the input itself is the prepared sample
    bint tail_only               # prepared only so that the last sample's runs
                                 # stay in bounds (the others read into the next)


cdef inline Py_ssize_t cdiv(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return (a + b - 1) // b


cdef inline Py_ssize_t round16(Py_ssize_t n) noexcept nogil:
    """Round a per-thread scratch size up to 16 elements (>= 64 bytes), so
    neighbouring threads' blocks never share a cache line."""
    return (n + 15) // 16 * 16


cdef inline Geom make_geom(Py_ssize_t N, Py_ssize_t C, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t Co, Py_ssize_t kh, Py_ssize_t kw,
                           Py_ssize_t sh, Py_ssize_t sw, Py_ssize_t ph, Py_ssize_t pw,
                           Py_ssize_t dh, Py_ssize_t dw,
                           Py_ssize_t OH, Py_ssize_t OW) noexcept nogil:
    cdef Geom g
    g.N = N; g.C = C; g.H = H; g.W = W
    g.Co = Co; g.kh = kh; g.kw = kw; g.K = C * kh * kw
    g.sh = sh; g.sw = sw; g.ph = ph; g.pw = pw; g.dh = dh; g.dw = dw
    g.OH = OH; g.OW = OW
    g.Hq = cdiv(H + 2 * ph, sh)
    g.Wq = cdiv(W + 2 * pw, sw)
    g.L = sh * sw * C * g.Hq * g.Wq
    g.Lbuf = g.L
    g.prepared = ph > 0 or pw > 0 or sh > 1 or sw > 1
    g.tail_only = False
    return g


cdef inline void reach(Geom* g, Py_ssize_t end) noexcept nogil:
    """Make the prepared sample cover element ``end - 1``: the furthest a
    kernel reads in place.  An unpadded input is then still read in place,
    except its last sample, which would be read past the end of the array:
    that one gets a prepared copy with a zero tail."""
    if end > g.L:
        g.tail_only = not g.prepared
        g.prepared = True
        g.Lbuf = end


cdef inline void ukr(const cnx_kernels* ker, Py_ssize_t kc, const floating* a,
                     const floating* b, floating* c, Py_ssize_t ldc, int mr, int nr,
                     int accumulate, const floating* bias) noexcept nogil:
    """Micro-kernel on a packed A panel and a packed B panel (row k at b + k*NR)."""
    if floating is float:
        ker.s(kc, a, NULL, b, NULL, c, ldc, mr, nr, accumulate, bias)
    else:
        ker.d(kc, a, NULL, b, NULL, c, ldc, mr, nr, accumulate, bias)


# Activation epilogues fused into a kernel's output loop (the ``act`` argument
# of ``_conv.conv2d_forward`` and ``_gemm.gemm``): the same value, bit for bit,
# as the separate activation on the stored result.
cdef enum:
    ACT_NONE = 0
    ACT_RELU = 1    # max(v, 0); NaN propagates, -0.0 gives 0.0 (as _eltwise.relu)
    ACT_LEAKY = 2   # v where v > 0, else alpha * v (as functional.leaky_relu)


cdef inline floating act_value(floating v, int act, floating alpha) noexcept nogil:
    if act == ACT_RELU:
        return v if (v > 0 or v != v) else 0
    if act == ACT_LEAKY:
        return v if v > 0 else alpha * v
    return v


cdef inline void act_rows(const cnx_kernels* ker, const floating* src, Py_ssize_t lds,
                          floating* dst, Py_ssize_t ldd, Py_ssize_t rows, Py_ssize_t cols,
                          int act, floating alpha) noexcept nogil:
    """dst = ``act`` of src, ``rows`` rows of ``cols`` values (``lds`` and
    ``ldd`` apart; dst == src: in place), vectorised: the operations of
    act_value, so bitwise the same results."""
    if act == ACT_NONE or rows <= 0 or cols <= 0:
        return
    if floating is float:
        ker.act_s(src, lds, dst, ldd, rows, cols, act, alpha)
    else:
        ker.act_d(src, lds, dst, ldd, rows, cols, act, alpha)
