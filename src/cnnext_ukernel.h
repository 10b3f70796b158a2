/*
 * cnnext GEMM micro-kernels with runtime CPU dispatch.
 *
 * A micro-kernel computes one MR x NR block of C from packed panels:
 *
 *     acc[i][j] = sum_k a[k*MR + i] * B_k[j]      (0 <= k < kc)
 *     c[i*ldc + j] = base + acc[i][j]                 for i < mr, j < nr
 *
 * where base is c[i*ldc + j] when `accumulate`, else bias[i] (or 0 when bias
 * is NULL).  Panels are zero-padded to MR rows / NR columns by the packing
 * code (src/_gemm.pyx, src/_conv.pyx), so the kernels never read out of
 * bounds.
 *
 * Variants: AVX-512F (x86-64), AVX2+FMA (x86-64) and portable C.  Wheels
 * cannot be built with -march=native, so the vector variants are compiled
 * with per-function target attributes (GCC/Clang; MSVC accepts the
 * intrinsics without /arch) and chosen at run time from CPUID.  The
 * environment variable CNNEXT_ISA=generic|avx2|avx512 restricts the choice
 * (the tests use it to exercise every variant on one machine).
 */
#ifndef CNNEXT_UKERNEL_H
#define CNNEXT_UKERNEL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Every micro-kernel has this signature.  Row k of the B panel is
 *     packed B:    b + k*NR           (boff unused)
 *     indirect B:  b + boff[k]         (B read in place: no packing)
 * and element (i, k) of the A panel is
 *     packed A:    a[k*MR + i]        (aoff unused)
 *     indirect A:  a[aoff[i] + k]     (A rows read in place, i < mr)
 * The indirect variants let the convolution read each tap's contiguous run
 * straight from the prepared image (forward: B rows; weight gradient: A
 * rows). */
typedef void (*cnx_ukr_s)(int64_t kc, const float *a, const int64_t *aoff,
                          const float *b, const int64_t *boff, float *c,
                          int64_t ldc, int mr, int nr, int accumulate,
                          const float *bias);
typedef void (*cnx_ukr_d)(int64_t kc, const double *a, const int64_t *aoff,
                          const double *b, const int64_t *boff, double *c,
                          int64_t ldc, int mr, int nr, int accumulate,
                          const double *bias);

/* Two-row micro-kernel (float): an MR x (2 x one vector) block whose two
 * vectors of B row k are b + boff[k] and b + boff[k] + b2, stored to c and
 * c + c2 (the same rows of two result rows):
 *     c[i*ldc + j]      = base + sum_k a[k*MR + i] * b[boff[k] + j]       (j < nr)
 *     c[i*ldc + c2 + j] = base + sum_k a[k*MR + i] * b[boff[k] + b2 + j]  (j < nr2)
 * with base as for cnx_ukr_s.  Two result rows of at most one vector each
 * fill one 2-vector tile (a convolution whose output rows are 16 floats or
 * shorter).  The sums run over k in the same order as in the 2-vector
 * kernels, so every result is bitwise the same. */
typedef void (*cnx_ukr2_s)(int64_t kc, const float *a, const float *b, const int64_t *boff,
                           int64_t b2, float *c, int64_t ldc, int64_t c2, int mr, int nr,
                           int nr2, int accumulate, const float *bias);

/* Dot-product block: c[i*ldc + j] += sum_{t<n} a[i][t] * b[j][t] for
 * i < ma <= 4, j < nb <= 4 (rows of a/b past ma/nb must still be valid
 * pointers; their results are dropped).  Used for weight gradients of small
 * layers, where both operands are contiguous runs and packing would cost
 * more than the arithmetic. */
typedef void (*cnx_dot_s)(int64_t n, const float *const *a, int ma,
                          const float *const *b, int nb, float *c, int64_t ldc);
typedef void (*cnx_dot_d)(int64_t n, const double *const *a, int ma,
                          const double *const *b, int nb, double *c, int64_t ldc);

/* One row against up to four: c[j] += sum_{t<n} a[t] * b[j][t] for j < nb
 * <= 4 (b rows past nb must still be valid pointers).  A batch-1 dense
 * layer's forward pass. */
typedef void (*cnx_dot1_s)(int64_t n, const float *a, const float *const *b, int nb,
                           float *c);
typedef void (*cnx_dot1_d)(int64_t n, const double *a, const double *const *b, int nb,
                           double *c);

/* Activation epilogue over `rows` rows of `cols` values:
 *     dst[r*ldd + j] = act(src[r*lds + j])       (dst == src: in place)
 * act 1: ReLU, v if (v > 0 or v is NaN) else +0; act 2: leaky ReLU, v if
 * v > 0 else alpha*v; other values copy (act 0 vectorised: the copy of a
 * convolution's scratch tile to its result rows).  The same operations as the
 * scalar act_value of src/cnnext/_common.pxd, so the results are bitwise
 * the same, only vectorised. */
typedef void (*cnx_act_s)(const float *src, int64_t lds, float *dst, int64_t ldd,
                          int64_t rows, int64_t cols, int act, float alpha);
typedef void (*cnx_act_d)(const double *src, int64_t lds, double *dst, int64_t ldd,
                          int64_t rows, int64_t cols, int act, double alpha);

/* Column split of a row of n values into its even and odd columns:
 *     d0[q] = src[2*q] (q < (n + 1) / 2),   d1[q] = src[2*q + 1] (q < n / 2)
 * (the stride-2 column phases of a convolution's input). */
typedef void (*cnx_split2_s)(const float *src, int64_t n, float *d0, float *d1);

/* The inverse, for `rows` rows: every other column of dst from a row of src,
 *     dst[r*ldd + 2*j] = src[r*lds + j]      (j < cols)
 * leaving the odd columns as they are (the input gradient's stride-2 column
 * phases, stored from each phase's tile). */
typedef void (*cnx_merge2_s)(const float *src, int64_t lds, float *dst, int64_t ldd,
                             int64_t rows, int64_t cols);

/* Flat-tile micro-kernel (float): an MR x 2-vector block of consecutive
 * result positions whose vectors may each span the end of one image row and
 * the start of the next.  Lane l of vector v (v = 0, 1) of B row k is
 *     b[boff[k] + off[2v] + l]      for the lanes set in bits 16v..16v+15 of ma
 *     b[boff[k] + off[2v + 1] + l]  for the lanes set in those of mb
 * (other lanes 0), and the block is stored as by the 2-vector kernels (c,
 * ldc, nr columns).  The sums run over k in the same order as in those
 * kernels: bitwise the same results. */
typedef void (*cnx_ukrf_s)(int64_t kc, const float *a, const float *b, const int64_t *boff,
                           const int64_t *off, uint32_t ma, uint32_t mb, float *c,
                           int64_t ldc, int mr, int nr, int accumulate, const float *bias);

/* Transposing copy of `rows` rows of `cols` values:
 *     dst[q*ldd + r] = src[r*lds + q]       (r < rows, q < cols)
 * (a block of a convolution's output gradient, channels by positions, laid
 * out as the weight gradient's packed B panel, positions by channels). */
typedef void (*cnx_tcopy_s)(const float *src, int64_t lds, int64_t rows, int64_t cols,
                            float *dst, int64_t ldd);

typedef struct {
    cnx_ukr_s s, s_ind, s_inda;
    cnx_ukr_d d, d_ind, d_inda;
    /* s_ind / d_ind prefetching B rows ahead (for scattered rows). */
    cnx_ukr_s s_ind_pf;
    cnx_ukr_d d_ind_pf;
    cnx_dot_s dot_s;
    cnx_dot_d dot_d;
    cnx_dot1_s dot1_s;
    cnx_dot1_d dot1_d;
    /* Indirect-B kernels computing exactly MR = 1..8 rows (index MR - 1):
     * panels of few or odd output channels without FMAs on empty rows;
     * NULL where the variant has none (then the full kernel is used). */
    cnx_ukr_s s_ind_mr[8];
    cnx_ukr_d d_ind_mr[8];
    /* Indirect-A kernels of 16 rows and one vector's columns (s_nr / 2,
     * d_nr / 2); NULL where the variant has none. */
    cnx_ukr_s s_inda_n1;
    cnx_ukr_d d_inda_n1;
    /* float64 indirect-B kernels of exactly 9..14 rows (index MR - 9);
     * NULL where the variant has none. */
    cnx_ukr_d d_ind_wide[6];
    /* s_ind and d_ind_wide prefetching lines described by aoff (see
     * CNX_PFL_DECL); NULL where the variant has none. */
    cnx_ukr_s s_ind_pfl;
    cnx_ukr_d d_ind_wide_pfl[6];
    /* Fused activation epilogue (see cnx_act_s). */
    cnx_act_s act_s;
    cnx_act_d act_d;
    /* Column split of a float row in two (NULL: no vector version). */
    cnx_split2_s split2_s;
    /* Stores to every other column (NULL: no vector version). */
    cnx_merge2_s merge2_s;
    /* Two-row kernels of MR = 1..8 rows (index MR - 1); NULL where the
     * variant has none. */
    cnx_ukr2_s s_ind2r_mr[8];
    /* Transposing copy (NULL: no vector version). */
    cnx_tcopy_s tcopy_s;
    /* Flat-tile kernels of MR = 1..8 rows whose vectors v with bit v of S
     * set span two rows (index 8*S + MR - 1); NULL where the variant has
     * none. */
    cnx_ukrf_s s_indf_mr[32];
    int s_mr, s_nr, d_mr, d_nr;
    const char *name;
} cnx_kernels;

#define CNX_BROW_PACKED(NR_) (b + k * (NR_))
#define CNX_BROW_IND(NR_) (b + boff[k])
/* A access: CNX_APRE declares what the element macro needs. */
#define CNX_APRE_PACKED(MR_) (void)aoff;
#define CNX_AEL_PACKED(MR_, i) a[k * (MR_) + (i)]
#define CNX_APRE_IND(MR_)                                                      \
    const T *pa_[MR_];                                                         \
    {                                                                          \
        int i_;                                                                \
        for (i_ = 0; i_ < (MR_); i_++)                                         \
            pa_[i_] = a + aoff[i_ < mr ? i_ : 0];                              \
    }
#define CNX_AEL_IND(MR_, i) pa_[i][k]

/* ---------------------------------------------------------------- store */

#define CNX_STORE_TILE(T, MR_, NR_, tile)                                      \
    do {                                                                       \
        int i_, j_;                                                            \
        for (i_ = 0; i_ < mr; i_++) {                                          \
            T *row_ = c + i_ * ldc;                                            \
            T base_ = (!accumulate && bias) ? bias[i_] : (T)0;                 \
            if (accumulate) {                                                  \
                for (j_ = 0; j_ < nr; j_++) row_[j_] += tile[i_ * (NR_) + j_]; \
            } else {                                                           \
                for (j_ = 0; j_ < nr; j_++)                                    \
                    row_[j_] = base_ + tile[i_ * (NR_) + j_];                  \
            }                                                                  \
        }                                                                      \
    } while (0)

/* ------------------------------------------------------------ portable C */

#define CNX_GEN_MR 4
#define CNX_GEN_NR_S 16
#define CNX_GEN_NR_D 8

#define CNX_DEF_GENERIC(NAME, T, NR_, BROW, APRE, AEL)                        \
    static void NAME(int64_t kc, const T *a, const int64_t *aoff, const T *b,  \
                     const int64_t *boff, T *c, int64_t ldc, int mr, int nr,   \
                     int accumulate, const T *bias) {                          \
        T acc[CNX_GEN_MR * (NR_)];                                             \
        int64_t k;                                                             \
        int i, j;                                                              \
        APRE(CNX_GEN_MR)                                                       \
        (void)boff;                                                            \
        memset(acc, 0, sizeof(acc));                                           \
        for (k = 0; k < kc; k++) {                                             \
            const T *bk = BROW(NR_);                                           \
            for (i = 0; i < CNX_GEN_MR; i++) {                                 \
                T ai = AEL(CNX_GEN_MR, i);                                     \
                for (j = 0; j < (NR_); j++) acc[i * (NR_) + j] += ai * bk[j];  \
            }                                                                  \
        }                                                                      \
        CNX_STORE_TILE(T, CNX_GEN_MR, (NR_), acc);                             \
    }

#define T float
CNX_DEF_GENERIC(cnx_ukr_s_generic, float, CNX_GEN_NR_S, CNX_BROW_PACKED, CNX_APRE_PACKED, CNX_AEL_PACKED)
CNX_DEF_GENERIC(cnx_ukr_s_generic_ind, float, CNX_GEN_NR_S, CNX_BROW_IND, CNX_APRE_PACKED, CNX_AEL_PACKED)
CNX_DEF_GENERIC(cnx_ukr_s_generic_inda, float, CNX_GEN_NR_S, CNX_BROW_PACKED, CNX_APRE_IND, CNX_AEL_IND)
#undef T
#define T double
CNX_DEF_GENERIC(cnx_ukr_d_generic, double, CNX_GEN_NR_D, CNX_BROW_PACKED, CNX_APRE_PACKED, CNX_AEL_PACKED)
CNX_DEF_GENERIC(cnx_ukr_d_generic_ind, double, CNX_GEN_NR_D, CNX_BROW_IND, CNX_APRE_PACKED, CNX_AEL_PACKED)
CNX_DEF_GENERIC(cnx_ukr_d_generic_inda, double, CNX_GEN_NR_D, CNX_BROW_PACKED, CNX_APRE_IND, CNX_AEL_IND)
#undef T

#define CNX_DEF_DOT_GENERIC(NAME, T)                                           \
    static void NAME(int64_t n, const T *const *a, int ma, const T *const *b,  \
                     int nb, T *c, int64_t ldc) {                              \
        int i, j;                                                              \
        int64_t t;                                                             \
        for (i = 0; i < ma; i++)                                               \
            for (j = 0; j < nb; j++) {                                         \
                T acc = 0;                                                     \
                for (t = 0; t < n; t++) acc += a[i][t] * b[j][t];              \
                c[i * ldc + j] += acc;                                         \
            }                                                                  \
    }
CNX_DEF_DOT_GENERIC(cnx_dot_s_generic, float)
CNX_DEF_DOT_GENERIC(cnx_dot_d_generic, double)

#define CNX_DEF_DOT1_GENERIC(NAME, T)                                          \
    static void NAME(int64_t n, const T *a, const T *const *b, int nb, T *c) { \
        int j;                                                                 \
        int64_t t;                                                             \
        for (j = 0; j < nb; j++) {                                             \
            T acc = 0;                                                         \
            for (t = 0; t < n; t++) acc += a[t] * b[j][t];                     \
            c[j] += acc;                                                       \
        }                                                                      \
    }
CNX_DEF_DOT1_GENERIC(cnx_dot1_s_generic, float)
CNX_DEF_DOT1_GENERIC(cnx_dot1_d_generic, double)

#define CNX_ACT1(T, v, act, alpha)                                             \
    ((act) == 1 ? (((v) > 0 || (v) != (v)) ? (v) : (T)0)                       \
     : (act) == 2 ? ((v) > 0 ? (v) : (alpha) * (v)) : (v))

#define CNX_DEF_ACT_GENERIC(NAME, T)                                           \
    static void NAME(const T *src, int64_t lds, T *dst, int64_t ldd,          \
                     int64_t rows, int64_t cols, int act, T alpha) {           \
        int64_t r, j;                                                          \
        for (r = 0; r < rows; r++)                                             \
            for (j = 0; j < cols; j++) {                                       \
                T v = src[r * lds + j];                                        \
                dst[r * ldd + j] = CNX_ACT1(T, v, act, alpha);                 \
            }                                                                  \
    }
CNX_DEF_ACT_GENERIC(cnx_act_s_generic, float)
CNX_DEF_ACT_GENERIC(cnx_act_d_generic, double)

/* ---------------------------------------------------------------- x86-64 */

#if defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64)
#define CNX_X86 1
#include <immintrin.h>
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#define CNX_TARGET_AVX2
#define CNX_TARGET_AVX512
#else
#define CNX_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define CNX_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#endif

/* p[0:n] = v[0:n] for n < one vector's lanes (nothing for n <= 0): stores
 * of 4, 2 and 1 floats (2 and 1 doubles).  AVX2's masked store is
 * microcoded on some CPUs (about 20 cycles on AMD Zen 3); its masked load
 * is not. */
CNX_TARGET_AVX2 static inline void cnx_store_part_ps(float *p, __m256 v, int64_t n) {
    __m128 h = _mm256_castps256_ps128(v);
    if (n <= 0) return;
    if (n & 4) {
        _mm_storeu_ps(p, h);
        h = _mm256_extractf128_ps(v, 1);
        p += 4;
    }
    if (n & 2) {
        _mm_storel_pi((__m64 *)p, h);
        h = _mm_movehl_ps(h, h);
        p += 2;
    }
    if (n & 1) _mm_store_ss(p, h);
}
CNX_TARGET_AVX2 static inline void cnx_store_part_pd(double *p, __m256d v, int64_t n) {
    __m128d h = _mm256_castpd256_pd128(v);
    if (n <= 0) return;
    if (n & 2) {
        _mm_storeu_pd(p, h);
        h = _mm256_extractf128_pd(v, 1);
        p += 2;
    }
    if (n & 1) _mm_store_sd(p, h);
}
/* Shared AVX2 helpers of the kernels' packing and transform code. */
/* An integer mask of the float lanes i < 8 with a <= i < e. */
CNX_TARGET_AVX2 static inline __m256i cnx_lanes_avx2(int64_t a, int64_t e) {
    const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    a = a < 0 ? 0 : a > 8 ? 8 : a;
    e = e < 0 ? 0 : e > 8 ? 8 : e;
    return _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)a), iota),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32((int)e), iota));
}
/* The lanes i < 8 whose bit i of m is set. */
CNX_TARGET_AVX2 static inline __m256i cnx_bits_lanes_avx2(uint32_t m) {
    const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)m), bit), bit);
}
/* The even (odd) positions of the 16 floats a, b: a0 a2 a4 a6 b0 b2 b4 b6. */
CNX_TARGET_AVX2 static inline __m256 cnx_even_ps_avx2(__m256 a, __m256 b) {
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
}
CNX_TARGET_AVX2 static inline __m256 cnx_odd_ps_avx2(__m256 a, __m256 b) {
    return _mm256_castpd_ps(
        _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}
/* r[i][j] becomes r[j][i] for i, j < 8: an 8 x 8 transpose in registers. */
CNX_TARGET_AVX2 static inline void cnx_transpose8_ps_avx2(__m256 r[8]) {
    __m256 u[8], s[8];
    for (int i = 0; i < 4; i++) {
        u[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        u[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        s[4 * i] = _mm256_shuffle_ps(u[4 * i], u[4 * i + 2], 0x44);
        s[4 * i + 1] = _mm256_shuffle_ps(u[4 * i], u[4 * i + 2], 0xEE);
        s[4 * i + 2] = _mm256_shuffle_ps(u[4 * i + 1], u[4 * i + 3], 0x44);
        s[4 * i + 3] = _mm256_shuffle_ps(u[4 * i + 1], u[4 * i + 3], 0xEE);
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm256_permute2f128_ps(s[q], s[4 + q], 0x20);
        r[4 + q] = _mm256_permute2f128_ps(s[q], s[4 + q], 0x31);
    }
}
/* p[0:n] = v[0:n] for n <= W lanes: a full store or cnx_store_part. */
#define CNX_Y_STORE_N(SUF, p, v, n, W)                                         \
    do {                                                                       \
        if ((n) >= (W)) _mm256_storeu_##SUF(p, v);                             \
        else cnx_store_part_##SUF(p, v, n);                                    \
    } while (0)

/* AVX2 + FMA: 6 rows x 2 vectors (float 6 x 16, double 6 x 8); 12 ymm
 * accumulators, stored straight to C (masked loads and partial stores for
 * partial tiles); a tile of at most one vector's columns (the last of a
 * row of 56 in a 7x7 stem) runs only its first vector's FMAs. */
#define CNX_Y_ROW(SUF, BC, i, lo, hi)                                          \
    if (MRV_ > (i)) {                                                          \
        t = BC(&AEL(MRV_, i));                                                 \
        lo = _mm256_fmadd_##SUF(t, b0, lo);                                    \
        hi = _mm256_fmadd_##SUF(t, b1, hi);                                    \
    }

#define CNX_Y_ROW1(SUF, BC, i, lo)                                              \
    if (MRV_ > (i)) lo = _mm256_fmadd_##SUF(BC(&AEL(MRV_, i)), b0, lo);

#define CNX_Y_STORE(SUF, i, lo, hi, W)                                         \
    if (mr > i) {                                                              \
        T *row_ = c + (i) * ldc;                                               \
        if (accumulate) {                                                      \
            lo = _mm256_add_##SUF(lo, full_ ? _mm256_loadu_##SUF(row_)         \
                                            : _mm256_maskload_##SUF(row_, m0)); \
            hi = _mm256_add_##SUF(hi, full_ ? _mm256_loadu_##SUF(row_ + W)     \
                                            : _mm256_maskload_##SUF(row_ + W, m1)); \
        } else if (bias) {                                                     \
            lo = _mm256_add_##SUF(lo, _mm256_set1_##SUF(bias[i]));             \
            hi = _mm256_add_##SUF(hi, _mm256_set1_##SUF(bias[i]));             \
        }                                                                      \
        if (full_) {                                                           \
            _mm256_storeu_##SUF(row_, lo);                                     \
            _mm256_storeu_##SUF(row_ + W, hi);                                 \
        } else {                                                               \
            CNX_Y_STORE_N(SUF, row_, lo, nr, W);                               \
            cnx_store_part_##SUF(row_ + W, hi, nr - (W));                      \
        }                                                                      \
    }

/* Lane masks of the first nr columns: float lanes are 32-bit, double lanes
 * 64-bit integers. */
#define CNX_Y_MASK_ps(W)                                                       \
    __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr),                     \
                                    _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));\
    __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr),                     \
                                    _mm256_setr_epi32(8, 9, 10, 11, 12, 13,    \
                                                      14, 15));
#define CNX_Y_MASK_pd(W)                                                       \
    __m256i m0 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(nr),                    \
                                    _mm256_setr_epi64x(0, 1, 2, 3));           \
    __m256i m1 = _mm256_cmpgt_epi64(_mm256_set1_epi64x(nr),                    \
                                    _mm256_setr_epi64x(4, 5, 6, 7));

/* The 6 x 2 accumulators of the AVX2 kernels, and one B row's FMAs into
 * them (b0, b1 the row's vectors; t a scratch register). */
#define CNX_Y_ZERO12(VT, SUF)                                                  \
    VT r00 = _mm256_setzero_##SUF(), r01 = _mm256_setzero_##SUF();             \
    VT r10 = _mm256_setzero_##SUF(), r11 = _mm256_setzero_##SUF();             \
    VT r20 = _mm256_setzero_##SUF(), r21 = _mm256_setzero_##SUF();             \
    VT r30 = _mm256_setzero_##SUF(), r31 = _mm256_setzero_##SUF();             \
    VT r40 = _mm256_setzero_##SUF(), r41 = _mm256_setzero_##SUF();             \
    VT r50 = _mm256_setzero_##SUF(), r51 = _mm256_setzero_##SUF();
#define CNX_Y_ROWS6(SUF, BC)                                                   \
    CNX_Y_ROW(SUF, BC, 0, r00, r01) CNX_Y_ROW(SUF, BC, 1, r10, r11)            \
    CNX_Y_ROW(SUF, BC, 2, r20, r21) CNX_Y_ROW(SUF, BC, 3, r30, r31)            \
    CNX_Y_ROW(SUF, BC, 4, r40, r41) CNX_Y_ROW(SUF, BC, 5, r50, r51)

#define CNX_DEF_AVX2(NAME, T, VT, SUF, BC, W, BROW, APRE, AEL, MRV)           \
    CNX_TARGET_AVX2                                                            \
    static void NAME(int64_t kc, const T *a, const int64_t *aoff, const T *b,  \
                     const int64_t *boff, T *c, int64_t ldc, int mr, int nr,   \
                     int accumulate, const T *bias) {                          \
        CNX_Y_ZERO12(VT, SUF)                                                  \
        int64_t k;                                                             \
        const int full_ = nr == 2 * (W);                                       \
        enum { MRV_ = MRV };                                                   \
        APRE(MRV)                                                              \
        (void)boff;                                                            \
        if (nr <= (W)) { /* one vector of columns: half the FMAs */          \
            for (k = 0; k < kc; k++) {                                         \
                const T *bk = BROW(2 * (W));                                   \
                VT b0 = _mm256_loadu_##SUF(bk);                                \
                CNX_Y_ROW1(SUF, BC, 0, r00) CNX_Y_ROW1(SUF, BC, 1, r10)        \
                CNX_Y_ROW1(SUF, BC, 2, r20) CNX_Y_ROW1(SUF, BC, 3, r30)        \
                CNX_Y_ROW1(SUF, BC, 4, r40) CNX_Y_ROW1(SUF, BC, 5, r50)        \
            }                                                                  \
        } else {                                                               \
            for (k = 0; k < kc; k++) {                                         \
                const T *bk = BROW(2 * (W));                                   \
                VT b0 = _mm256_loadu_##SUF(bk),                                \
                   b1 = _mm256_loadu_##SUF(bk + (W)), t;                       \
                CNX_Y_ROWS6(SUF, BC)                                           \
            }                                                                  \
        }                                                                      \
        {                                                                      \
            CNX_Y_MASK_##SUF(W)                                                \
            CNX_Y_STORE(SUF, 0, r00, r01, W) CNX_Y_STORE(SUF, 1, r10, r11, W)  \
            CNX_Y_STORE(SUF, 2, r20, r21, W) CNX_Y_STORE(SUF, 3, r30, r31, W)  \
            CNX_Y_STORE(SUF, 4, r40, r41, W) CNX_Y_STORE(SUF, 5, r50, r51, W)  \
        }                                                                      \
    }

#define T float
#define AEL CNX_AEL_PACKED
#define CNX_Y_S(NAME, BROW, MRV)                                               \
    CNX_DEF_AVX2(NAME, float, __m256, ps, _mm256_broadcast_ss, 8, BROW,        \
                 CNX_APRE_PACKED, AEL, MRV)
CNX_Y_S(cnx_ukr_s_avx2, CNX_BROW_PACKED, 6)
CNX_Y_S(cnx_ukr_s_avx2_ind, CNX_BROW_IND, 6)
CNX_Y_S(cnx_ukr_s_avx2_ind1, CNX_BROW_IND, 1)
CNX_Y_S(cnx_ukr_s_avx2_ind2, CNX_BROW_IND, 2)
CNX_Y_S(cnx_ukr_s_avx2_ind3, CNX_BROW_IND, 3)
CNX_Y_S(cnx_ukr_s_avx2_ind4, CNX_BROW_IND, 4)
CNX_Y_S(cnx_ukr_s_avx2_ind5, CNX_BROW_IND, 5)
#undef AEL
#define AEL CNX_AEL_IND
CNX_DEF_AVX2(cnx_ukr_s_avx2_inda, float, __m256, ps, _mm256_broadcast_ss, 8, CNX_BROW_PACKED, CNX_APRE_IND, AEL, 6)
#undef AEL
#undef T
#define T double
#define AEL CNX_AEL_PACKED
#define CNX_Y_D(NAME, BROW, MRV)                                               \
    CNX_DEF_AVX2(NAME, double, __m256d, pd, _mm256_broadcast_sd, 4, BROW,      \
                 CNX_APRE_PACKED, AEL, MRV)
CNX_Y_D(cnx_ukr_d_avx2, CNX_BROW_PACKED, 6)
CNX_Y_D(cnx_ukr_d_avx2_ind, CNX_BROW_IND, 6)
CNX_Y_D(cnx_ukr_d_avx2_ind1, CNX_BROW_IND, 1)
CNX_Y_D(cnx_ukr_d_avx2_ind2, CNX_BROW_IND, 2)
CNX_Y_D(cnx_ukr_d_avx2_ind3, CNX_BROW_IND, 3)
CNX_Y_D(cnx_ukr_d_avx2_ind4, CNX_BROW_IND, 4)
CNX_Y_D(cnx_ukr_d_avx2_ind5, CNX_BROW_IND, 5)
#undef AEL
#define AEL CNX_AEL_IND
CNX_DEF_AVX2(cnx_ukr_d_avx2_inda, double, __m256d, pd, _mm256_broadcast_sd, 4, CNX_BROW_PACKED, CNX_APRE_IND, AEL, 6)
#undef AEL
#undef T

/* AVX2 two-row kernels (see cnx_ukr2_s): the 6 x 2-vector float kernel
 * with the second vector of each B row b2 further on (the next row of
 * the sample) and stored c2 further on (the next output row), for rows of
 * at most 8 outputs: 12 accumulators where a row tile of one vector would
 * have 6 (or 4), too few to cover the FMA latency. */
#define CNX_Y2_STORE(i, lo, hi)                                                \
    if (mr > i) {                                                              \
        float *row_ = c + (i) * ldc;                                           \
        if (accumulate) {                                                      \
            lo = _mm256_add_ps(lo, _mm256_maskload_ps(row_, m0));              \
            hi = _mm256_add_ps(hi, _mm256_maskload_ps(row_ + c2, m1));         \
        } else if (bias) {                                                     \
            lo = _mm256_add_ps(lo, _mm256_set1_ps(bias[i]));                   \
            hi = _mm256_add_ps(hi, _mm256_set1_ps(bias[i]));                   \
        }                                                                      \
        CNX_Y_STORE_N(ps, row_, lo, nr, 8);                                    \
        CNX_Y_STORE_N(ps, row_ + c2, hi, nr2, 8);                              \
    }

#define CNX_DEF_AVX2_2R(NAME, MRV)                                             \
    CNX_TARGET_AVX2                                                            \
    static void NAME(int64_t kc, const float *a, const float *b,               \
                     const int64_t *boff, int64_t b2, float *c, int64_t ldc,   \
                     int64_t c2, int mr, int nr, int nr2, int accumulate,      \
                     const float *bias) {                                      \
        CNX_Y_ZERO12(__m256, ps)                                               \
        __m256i m0 = cnx_lanes_avx2(0, nr), m1 = cnx_lanes_avx2(0, nr2);       \
        int64_t k;                                                             \
        enum { MRV_ = MRV };                                                   \
        for (k = 0; k < kc; k++) {                                             \
            const float *bk = b + boff[k];                                     \
            __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + b2), t; \
            CNX_Y_ROWS6(ps, _mm256_broadcast_ss)                               \
        }                                                                      \
        CNX_Y2_STORE(0, r00, r01) CNX_Y2_STORE(1, r10, r11)                    \
        CNX_Y2_STORE(2, r20, r21) CNX_Y2_STORE(3, r30, r31)                    \
        CNX_Y2_STORE(4, r40, r41) CNX_Y2_STORE(5, r50, r51)                    \
    }

#define T float
#define AEL CNX_AEL_PACKED
CNX_DEF_AVX2_2R(cnx_ukr_s_avx2_2r1, 1)
CNX_DEF_AVX2_2R(cnx_ukr_s_avx2_2r2, 2)
CNX_DEF_AVX2_2R(cnx_ukr_s_avx2_2r3, 3)
CNX_DEF_AVX2_2R(cnx_ukr_s_avx2_2r4, 4)
CNX_DEF_AVX2_2R(cnx_ukr_s_avx2_2r5, 5)
CNX_DEF_AVX2_2R(cnx_ukr_s_avx2_2r6, 6)
#undef AEL
#undef T

/* AVX2 flat-tile kernels (see cnx_ukrf_s): the 6 x 2-vector float kernel;
 * vector v is one plain load at off[2v] unless bit v of SV is set (the
 * tile's vector v spans two rows), then two masked loads (lanes [0, la) of
 * the first row, [la, cnt) of the next; ma and mb hold them) OR-ed.  On a
 * 7x7 stem's 56-wide rows no vector spans (8 divides 56): every tile is
 * 16 full columns where row tiles ran each row's last 8 on one vector. */
#define CNX_YF_LOAD(v, am, bm)                                                 \
    ((SV_ >> (v)) & 1                                                          \
         ? _mm256_or_ps(_mm256_maskload_ps(bk + off[2 * (v)], am),             \
                        _mm256_maskload_ps(bk + off[2 * (v) + 1], bm))         \
         : _mm256_loadu_ps(bk + off[2 * (v)]))
#define CNX_DEF_AVX2_F(NAME, MRV, SV)                                          \
    CNX_TARGET_AVX2                                                            \
    static void NAME(int64_t kc, const float *a, const float *b,               \
                     const int64_t *boff, const int64_t *off, uint32_t ma,     \
                     uint32_t mb, float *c, int64_t ldc, int mr, int nr,       \
                     int accumulate, const float *bias) {                      \
        CNX_Y_ZERO12(__m256, ps)                                               \
        int64_t k;                                                             \
        const int full_ = nr == 16;                                            \
        enum { MRV_ = MRV, SV_ = SV };                                         \
        {                                                                      \
            const __m256i a0 = cnx_bits_lanes_avx2(ma);                        \
            const __m256i a1 = cnx_bits_lanes_avx2(ma >> 16);                  \
            const __m256i c0 = cnx_bits_lanes_avx2(mb);                        \
            const __m256i c1 = cnx_bits_lanes_avx2(mb >> 16);                  \
            (void)a0; (void)a1; (void)c0; (void)c1;                            \
            for (k = 0; k < kc; k++) {                                         \
                const float *bk = b + boff[k];                                 \
                __m256 b0 = CNX_YF_LOAD(0, a0, c0), b1 = CNX_YF_LOAD(1, a1, c1), t; \
                CNX_Y_ROWS6(ps, _mm256_broadcast_ss)                           \
            }                                                                  \
        }                                                                      \
        {                                                                      \
            CNX_Y_MASK_ps(8)                                                   \
            CNX_Y_STORE(ps, 0, r00, r01, 8) CNX_Y_STORE(ps, 1, r10, r11, 8)    \
            CNX_Y_STORE(ps, 2, r20, r21, 8) CNX_Y_STORE(ps, 3, r30, r31, 8)    \
            CNX_Y_STORE(ps, 4, r40, r41, 8) CNX_Y_STORE(ps, 5, r50, r51, 8)    \
        }                                                                      \
    }

#define T float
#define AEL CNX_AEL_PACKED
#define CNX_DEF_AVX2_F6(SUF, SV)                                               \
    CNX_DEF_AVX2_F(cnx_ukr_s_avx2_f1##SUF, 1, SV)                              \
    CNX_DEF_AVX2_F(cnx_ukr_s_avx2_f2##SUF, 2, SV)                              \
    CNX_DEF_AVX2_F(cnx_ukr_s_avx2_f3##SUF, 3, SV)                              \
    CNX_DEF_AVX2_F(cnx_ukr_s_avx2_f4##SUF, 4, SV)                              \
    CNX_DEF_AVX2_F(cnx_ukr_s_avx2_f5##SUF, 5, SV)                              \
    CNX_DEF_AVX2_F(cnx_ukr_s_avx2_f6##SUF, 6, SV)
CNX_DEF_AVX2_F6(_s0, 0)
CNX_DEF_AVX2_F6(_s1, 1)
CNX_DEF_AVX2_F6(_s2, 2)
CNX_DEF_AVX2_F6(_s3, 3)
#undef CNX_DEF_AVX2_F6
#undef AEL
#undef T

/* AVX-512F: 8 rows x 2 vectors (float 8 x 32, double 8 x 16); 16 zmm
 * accumulators kept in named registers; rows stored by unrolled,
 * constant-index code with masks for partial tiles. */
#define CNX_Z_ROW(SUF, i, lo, hi)                                              \
    if (MRV_ > (i)) {                                                          \
        t = _mm512_set1_##SUF(AEL(MRV_, i));                                   \
        lo = _mm512_fmadd_##SUF(t, b0, lo);                                    \
        hi = _mm512_fmadd_##SUF(t, b1, hi);                                    \
    }

#define CNX_Z_STORE(SUF, T, i, lo, hi, W)                                      \
    if (mr > i) {                                                              \
        T *row_ = c + (i) * ldc;                                               \
        if (accumulate) {                                                      \
            lo = _mm512_add_##SUF(lo, _mm512_maskz_loadu_##SUF(m0, row_));     \
            hi = _mm512_add_##SUF(hi, _mm512_maskz_loadu_##SUF(m1, row_ + W)); \
        } else if (bias) {                                                     \
            lo = _mm512_add_##SUF(lo, _mm512_set1_##SUF(bias[i]));             \
            hi = _mm512_add_##SUF(hi, _mm512_set1_##SUF(bias[i]));             \
        }                                                                      \
        _mm512_mask_storeu_##SUF(row_, m0, lo);                                \
        _mm512_mask_storeu_##SUF(row_ + W, m1, hi);                            \
    }

/* Indirect B rows whose runs are scattered over the image (a 1x1
 * convolution's rows are whole planes apart, no row shares a cache line):
 * the first panel of a tile would wait on each row's load, so the _pf
 * kernels prefetch row k + CNX_PF_DIST (both ends of a 2-vector row).
 * Measured on AVX-512: 1x1 convolution -12% (float32) to -23% (float64)
 * time; 5x5, whose taps share lines, +1-2%, hence a separate kernel. */
#define CNX_PF_DIST 12
#define CNX_PF_PACKED(W)
#define CNX_PF_IND(W)                                                          \
    if (k + CNX_PF_DIST < kc) {                                                \
        const char *pf_ = (const char *)(b + boff[k + CNX_PF_DIST]);          \
        _mm_prefetch(pf_, _MM_HINT_T0);                                        \
        _mm_prefetch(pf_ + 2 * (W) * sizeof(T) - 1, _MM_HINT_T0);             \
    }

/* The _pfl variants also prefetch (into L2) one cache line per step of k,
 * from runs of lines described by aoff (the indirect-B kernels read no A
 * through it): the first line of the first run at address aoff[0], runs
 * aoff[1] bytes apart, aoff[2] >= 1 lines each; the kernel prefetches
 * lines aoff[3] to aoff[3] + aoff[4] - 1 of them, counted run after run
 * (the next chunk of a 1x1 convolution's input, read from memory while
 * this chunk's products run instead of when it is packed). */
#define CNX_PFL_NONE (void)aoff;
#define CNX_PFL_DECL                                                           \
    int64_t pfs_ = aoff[1], pfr_ = aoff[2], pfn_ = aoff[4];                    \
    const char *pfp_ = (const char *)(intptr_t)aoff[0] + aoff[3] / pfr_ * pfs_; \
    int64_t pfl_ = aoff[3] % pfr_;
#define CNX_PFL_STEP                                                           \
    if (pfn_ > 0) {                                                            \
        _mm_prefetch(pfp_ + 64 * pfl_, _MM_HINT_T1);                           \
        pfn_--;                                                                \
        if (++pfl_ == pfr_) {                                                  \
            pfl_ = 0;                                                          \
            pfp_ += pfs_;                                                      \
        }                                                                      \
    }
#define CNX_PFL_NOSTEP
#define CNX_APRE_PFL(MR_) CNX_PFL_DECL
#define CNX_PF_PFL(W) CNX_PFL_STEP

#define CNX_DEF_AVX512(NAME, T, VT, SUF, MT, FULL, W, BROW, APRE, AEL, MRV, PF) \
    CNX_TARGET_AVX512                                                          \
    static void NAME(int64_t kc, const T *a, const int64_t *aoff, const T *b,  \
                     const int64_t *boff, T *c, int64_t ldc, int mr, int nr,   \
                     int accumulate, const T *bias) {                          \
        VT r00 = _mm512_setzero_##SUF(), r01 = _mm512_setzero_##SUF();         \
        VT r10 = _mm512_setzero_##SUF(), r11 = _mm512_setzero_##SUF();         \
        VT r20 = _mm512_setzero_##SUF(), r21 = _mm512_setzero_##SUF();         \
        VT r30 = _mm512_setzero_##SUF(), r31 = _mm512_setzero_##SUF();         \
        VT r40 = _mm512_setzero_##SUF(), r41 = _mm512_setzero_##SUF();         \
        VT r50 = _mm512_setzero_##SUF(), r51 = _mm512_setzero_##SUF();         \
        VT r60 = _mm512_setzero_##SUF(), r61 = _mm512_setzero_##SUF();         \
        VT r70 = _mm512_setzero_##SUF(), r71 = _mm512_setzero_##SUF();         \
        MT m0 = (MT)(nr >= (W) ? FULL : ((1u << nr) - 1u));                    \
        MT m1 = (MT)(nr <= (W) ? 0 : (nr >= 2 * (W) ? FULL                     \
                                        : ((1u << (nr - (W))) - 1u)));         \
        int64_t k;                                                             \
        enum { MRV_ = MRV };                                                   \
        APRE(MRV)                                                              \
        (void)boff;                                                            \
        for (k = 0; k < kc; k++) {                                             \
            const T *bk = BROW(2 * (W));                                       \
            VT b0 = _mm512_loadu_##SUF(bk), b1 = _mm512_loadu_##SUF(bk + (W)), \
               t;                                                              \
            PF(W)                                                              \
            CNX_Z_ROW(SUF, 0, r00, r01) CNX_Z_ROW(SUF, 1, r10, r11)            \
            CNX_Z_ROW(SUF, 2, r20, r21) CNX_Z_ROW(SUF, 3, r30, r31)            \
            CNX_Z_ROW(SUF, 4, r40, r41) CNX_Z_ROW(SUF, 5, r50, r51)            \
            CNX_Z_ROW(SUF, 6, r60, r61) CNX_Z_ROW(SUF, 7, r70, r71)            \
        }                                                                      \
        CNX_Z_STORE(SUF, T, 0, r00, r01, W) CNX_Z_STORE(SUF, T, 1, r10, r11, W) \
        CNX_Z_STORE(SUF, T, 2, r20, r21, W) CNX_Z_STORE(SUF, T, 3, r30, r31, W) \
        CNX_Z_STORE(SUF, T, 4, r40, r41, W) CNX_Z_STORE(SUF, T, 5, r50, r51, W) \
        CNX_Z_STORE(SUF, T, 6, r60, r61, W) CNX_Z_STORE(SUF, T, 7, r70, r71, W) \
    }

#define T float
#define AEL CNX_AEL_PACKED
CNX_DEF_AVX512(cnx_ukr_s_avx512, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_PACKED, CNX_APRE_PACKED, AEL, 8, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_s_avx512_ind, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 8, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_s_avx512_ind_pf, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 8, CNX_PF_IND)
CNX_DEF_AVX512(cnx_ukr_s_avx512_ind_pfl, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_IND, CNX_APRE_PFL, AEL, 8, CNX_PF_PFL)
CNX_DEF_AVX512(cnx_ukr_s_avx512_ind1, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 1, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_s_avx512_ind2, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 2, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_s_avx512_ind3, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 3, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_s_avx512_ind4, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 4, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_s_avx512_ind5, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 5, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_s_avx512_ind6, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 6, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_s_avx512_ind7, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 7, CNX_PF_PACKED)
#undef AEL
#define AEL CNX_AEL_IND
CNX_DEF_AVX512(cnx_ukr_s_avx512_inda, float, __m512, ps, __mmask16, 0xFFFF, 16, CNX_BROW_PACKED, CNX_APRE_IND, AEL, 8, CNX_PF_PACKED)
#undef AEL
#undef T
#define T double
#define AEL CNX_AEL_PACKED
CNX_DEF_AVX512(cnx_ukr_d_avx512, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_PACKED, CNX_APRE_PACKED, AEL, 8, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_d_avx512_ind, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 8, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_d_avx512_ind_pf, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 8, CNX_PF_IND)
CNX_DEF_AVX512(cnx_ukr_d_avx512_ind1, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 1, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_d_avx512_ind2, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 2, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_d_avx512_ind3, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 3, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_d_avx512_ind4, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 4, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_d_avx512_ind5, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 5, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_d_avx512_ind6, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 6, CNX_PF_PACKED)
CNX_DEF_AVX512(cnx_ukr_d_avx512_ind7, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_IND, CNX_APRE_PACKED, AEL, 7, CNX_PF_PACKED)
#undef AEL
#define AEL CNX_AEL_IND
CNX_DEF_AVX512(cnx_ukr_d_avx512_inda, double, __m512d, pd, __mmask8, 0xFF, 8, CNX_BROW_PACKED, CNX_APRE_IND, AEL, 8, CNX_PF_PACKED)
#undef AEL
#undef T

/* AVX-512F, float64, up to 14 rows x 2 vectors (14 x 16): 28 zmm
 * accumulators, the two B vectors and the broadcast take 31 of the 32
 * registers.  Per step of k, 28 FMAs share the two B loads and the loop's
 * bookkeeping that 16 share in the 8-row kernel (whose 10 loads for 16 FMAs
 * and a tap offset kept float64 forwards at ~60% of the FMA peak).  Indirect
 * B only (the convolution's forward and stride-phase input gradient); MRV =
 * 9..14 rows; the _pfl variants prefetch as CNX_PFL_DECL says.  Each
 * result is summed over k in the same order as in the 8-row kernels:
 * bitwise the same values. */
#define CNX_DEF_AVX512_D14(NAME, MRV, PFDECL, PFSTEP)                          \
    CNX_TARGET_AVX512                                                          \
    static void NAME(int64_t kc, const double *a, const int64_t *aoff,         \
                     const double *b, const int64_t *boff, double *c,          \
                     int64_t ldc, int mr, int nr, int accumulate,              \
                     const double *bias) {                                     \
        __m512d r00 = _mm512_setzero_pd(), r01 = _mm512_setzero_pd();          \
        __m512d r10 = _mm512_setzero_pd(), r11 = _mm512_setzero_pd();          \
        __m512d r20 = _mm512_setzero_pd(), r21 = _mm512_setzero_pd();          \
        __m512d r30 = _mm512_setzero_pd(), r31 = _mm512_setzero_pd();          \
        __m512d r40 = _mm512_setzero_pd(), r41 = _mm512_setzero_pd();          \
        __m512d r50 = _mm512_setzero_pd(), r51 = _mm512_setzero_pd();          \
        __m512d r60 = _mm512_setzero_pd(), r61 = _mm512_setzero_pd();          \
        __m512d r70 = _mm512_setzero_pd(), r71 = _mm512_setzero_pd();          \
        __m512d r80 = _mm512_setzero_pd(), r81 = _mm512_setzero_pd();          \
        __m512d r90 = _mm512_setzero_pd(), r91 = _mm512_setzero_pd();          \
        __m512d ra0 = _mm512_setzero_pd(), ra1 = _mm512_setzero_pd();          \
        __m512d rb0 = _mm512_setzero_pd(), rb1 = _mm512_setzero_pd();          \
        __m512d rc0 = _mm512_setzero_pd(), rc1 = _mm512_setzero_pd();          \
        __m512d rd0 = _mm512_setzero_pd(), rd1 = _mm512_setzero_pd();          \
        __mmask8 m0 = (__mmask8)(nr >= 8 ? 0xFF : ((1u << nr) - 1u));          \
        __mmask8 m1 = (__mmask8)(nr <= 8 ? 0 : (nr >= 16 ? 0xFF                \
                                                : ((1u << (nr - 8)) - 1u)));    \
        int64_t k;                                                             \
        enum { MRV_ = MRV };                                                   \
        PFDECL                                                                 \
        (void)boff;                                                            \
        for (k = 0; k < kc; k++) {                                             \
            const double *bk = CNX_BROW_IND(16);                               \
            __m512d b0 = _mm512_loadu_pd(bk), b1 = _mm512_loadu_pd(bk + 8), t; \
            PFSTEP                                                             \
            CNX_Z_ROW(pd, 0, r00, r01) CNX_Z_ROW(pd, 1, r10, r11)              \
            CNX_Z_ROW(pd, 2, r20, r21) CNX_Z_ROW(pd, 3, r30, r31)              \
            CNX_Z_ROW(pd, 4, r40, r41) CNX_Z_ROW(pd, 5, r50, r51)              \
            CNX_Z_ROW(pd, 6, r60, r61) CNX_Z_ROW(pd, 7, r70, r71)              \
            CNX_Z_ROW(pd, 8, r80, r81) CNX_Z_ROW(pd, 9, r90, r91)              \
            CNX_Z_ROW(pd, 10, ra0, ra1) CNX_Z_ROW(pd, 11, rb0, rb1)            \
            CNX_Z_ROW(pd, 12, rc0, rc1) CNX_Z_ROW(pd, 13, rd0, rd1)            \
        }                                                                      \
        CNX_Z_STORE(pd, double, 0, r00, r01, 8)                                \
        CNX_Z_STORE(pd, double, 1, r10, r11, 8)                                \
        CNX_Z_STORE(pd, double, 2, r20, r21, 8)                                \
        CNX_Z_STORE(pd, double, 3, r30, r31, 8)                                \
        CNX_Z_STORE(pd, double, 4, r40, r41, 8)                                \
        CNX_Z_STORE(pd, double, 5, r50, r51, 8)                                \
        CNX_Z_STORE(pd, double, 6, r60, r61, 8)                                \
        CNX_Z_STORE(pd, double, 7, r70, r71, 8)                                \
        CNX_Z_STORE(pd, double, 8, r80, r81, 8)                                \
        CNX_Z_STORE(pd, double, 9, r90, r91, 8)                                \
        CNX_Z_STORE(pd, double, 10, ra0, ra1, 8)                               \
        CNX_Z_STORE(pd, double, 11, rb0, rb1, 8)                               \
        CNX_Z_STORE(pd, double, 12, rc0, rc1, 8)                               \
        CNX_Z_STORE(pd, double, 13, rd0, rd1, 8)                               \
    }

#define T double
#define AEL CNX_AEL_PACKED
#define CNX_D14(MRV)                                                           \
    CNX_DEF_AVX512_D14(cnx_ukr_d_avx512_ind##MRV, MRV, CNX_PFL_NONE, CNX_PFL_NOSTEP) \
    CNX_DEF_AVX512_D14(cnx_ukr_d_avx512_ind##MRV##_pfl, MRV, CNX_PFL_DECL, CNX_PFL_STEP)
CNX_D14(9)
CNX_D14(10)
CNX_D14(11)
CNX_D14(12)
CNX_D14(13)
CNX_D14(14)
#undef CNX_D14
#undef AEL
#undef T

/* AVX-512F, one vector wide: 16 rows x 1 vector (float 16 x 16, double
 * 16 x 8), A rows read in place (indirect A).  For a product whose wide
 * side is short: the transposed weight gradient of a layer with at most
 * 16 (float) / 8 (double) output channels, which would leave half of every
 * 2-vector tile empty.  Each element's sum runs over k in the same order as
 * in the 8 x 2-vector kernels. */
#define CNX_Z1_STORE(SUF, i, r)                                                \
    if (mr > (i)) {                                                            \
        T *row_ = c + (i) * ldc;                                               \
        if (accumulate)                                                        \
            r = _mm512_add_##SUF(r, _mm512_maskz_loadu_##SUF(m0, row_));       \
        else if (bias)                                                         \
            r = _mm512_add_##SUF(r, _mm512_set1_##SUF(bias[i]));               \
        _mm512_mask_storeu_##SUF(row_, m0, r);                                 \
    }

#define CNX_DEF_AVX512_N1(NAME, T, VT, SUF, MT, FULL, W)                        \
    CNX_TARGET_AVX512                                                          \
    static void NAME(int64_t kc, const T *a, const int64_t *aoff, const T *b,  \
                     const int64_t *boff, T *c, int64_t ldc, int mr, int nr,   \
                     int accumulate, const T *bias) {                          \
        VT r0 = _mm512_setzero_##SUF();                     \
        VT r1 = _mm512_setzero_##SUF();                     \
        VT r2 = _mm512_setzero_##SUF();                     \
        VT r3 = _mm512_setzero_##SUF();                     \
        VT r4 = _mm512_setzero_##SUF();                     \
        VT r5 = _mm512_setzero_##SUF();                     \
        VT r6 = _mm512_setzero_##SUF();                     \
        VT r7 = _mm512_setzero_##SUF();                     \
        VT r8 = _mm512_setzero_##SUF();                     \
        VT r9 = _mm512_setzero_##SUF();                     \
        VT r10 = _mm512_setzero_##SUF();                    \
        VT r11 = _mm512_setzero_##SUF();                    \
        VT r12 = _mm512_setzero_##SUF();                    \
        VT r13 = _mm512_setzero_##SUF();                    \
        VT r14 = _mm512_setzero_##SUF();                    \
        VT r15 = _mm512_setzero_##SUF();                    \
        MT m0 = (MT)(nr >= (W) ? FULL : ((1u << nr) - 1u));                    \
        int64_t k;                                                             \
        CNX_APRE_IND(16)                                                       \
        (void)boff;                                                            \
        for (k = 0; k < kc; k++) {                                             \
            VT b0 = _mm512_loadu_##SUF(b + k * (W));                           \
            r0 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[0][k]), b0, r0);  \
            r1 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[1][k]), b0, r1);  \
            r2 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[2][k]), b0, r2);  \
            r3 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[3][k]), b0, r3);  \
            r4 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[4][k]), b0, r4);  \
            r5 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[5][k]), b0, r5);  \
            r6 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[6][k]), b0, r6);  \
            r7 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[7][k]), b0, r7);  \
            r8 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[8][k]), b0, r8);  \
            r9 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[9][k]), b0, r9);  \
            r10 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[10][k]), b0, r10);  \
            r11 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[11][k]), b0, r11);  \
            r12 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[12][k]), b0, r12);  \
            r13 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[13][k]), b0, r13);  \
            r14 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[14][k]), b0, r14);  \
            r15 = _mm512_fmadd_##SUF(_mm512_set1_##SUF(pa_[15][k]), b0, r15);  \
        }                                                                      \
        CNX_Z1_STORE(SUF, 0, r0)                                  \
        CNX_Z1_STORE(SUF, 1, r1)                                  \
        CNX_Z1_STORE(SUF, 2, r2)                                  \
        CNX_Z1_STORE(SUF, 3, r3)                                  \
        CNX_Z1_STORE(SUF, 4, r4)                                  \
        CNX_Z1_STORE(SUF, 5, r5)                                  \
        CNX_Z1_STORE(SUF, 6, r6)                                  \
        CNX_Z1_STORE(SUF, 7, r7)                                  \
        CNX_Z1_STORE(SUF, 8, r8)                                  \
        CNX_Z1_STORE(SUF, 9, r9)                                  \
        CNX_Z1_STORE(SUF, 10, r10)                                \
        CNX_Z1_STORE(SUF, 11, r11)                                \
        CNX_Z1_STORE(SUF, 12, r12)                                \
        CNX_Z1_STORE(SUF, 13, r13)                                \
        CNX_Z1_STORE(SUF, 14, r14)                                \
        CNX_Z1_STORE(SUF, 15, r15)                                \
    }

#define T float
CNX_DEF_AVX512_N1(cnx_ukr_s_avx512_inda_n1, float, __m512, ps, __mmask16, 0xFFFF, 16)
#undef T
#define T double
CNX_DEF_AVX512_N1(cnx_ukr_d_avx512_inda_n1, double, __m512d, pd, __mmask8, 0xFF, 8)
#undef T

/* AVX-512F two-row kernels (see cnx_ukr2_s): the 8 x 2-vector float
 * kernel with the second vector of each B row b2 further on and stored c2
 * further on. */
#define CNX_Z2_STORE(i, lo, hi)                                                \
    if (mr > i) {                                                              \
        float *row_ = c + (i) * ldc;                                           \
        if (accumulate) {                                                      \
            lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(m0, row_));           \
            hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(m1, row_ + c2));      \
        } else if (bias) {                                                     \
            lo = _mm512_add_ps(lo, _mm512_set1_ps(bias[i]));                   \
            hi = _mm512_add_ps(hi, _mm512_set1_ps(bias[i]));                   \
        }                                                                      \
        _mm512_mask_storeu_ps(row_, m0, lo);                                   \
        _mm512_mask_storeu_ps(row_ + c2, m1, hi);                              \
    }

#define CNX_DEF_AVX512_2R(NAME, MRV)                                           \
    CNX_TARGET_AVX512                                                          \
    static void NAME(int64_t kc, const float *a, const float *b,               \
                     const int64_t *boff, int64_t b2, float *c, int64_t ldc,   \
                     int64_t c2, int mr, int nr, int nr2, int accumulate,      \
                     const float *bias) {                                      \
        __m512 r00 = _mm512_setzero_ps(), r01 = _mm512_setzero_ps();           \
        __m512 r10 = _mm512_setzero_ps(), r11 = _mm512_setzero_ps();           \
        __m512 r20 = _mm512_setzero_ps(), r21 = _mm512_setzero_ps();           \
        __m512 r30 = _mm512_setzero_ps(), r31 = _mm512_setzero_ps();           \
        __m512 r40 = _mm512_setzero_ps(), r41 = _mm512_setzero_ps();           \
        __m512 r50 = _mm512_setzero_ps(), r51 = _mm512_setzero_ps();           \
        __m512 r60 = _mm512_setzero_ps(), r61 = _mm512_setzero_ps();           \
        __m512 r70 = _mm512_setzero_ps(), r71 = _mm512_setzero_ps();           \
        __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : ((1u << nr) - 1u));     \
        __mmask16 m1 = (__mmask16)(nr2 >= 16 ? 0xFFFF : ((1u << nr2) - 1u));   \
        int64_t k;                                                             \
        enum { MRV_ = MRV };                                                   \
        for (k = 0; k < kc; k++) {                                             \
            const float *bk = b + boff[k];                                     \
            __m512 b0 = _mm512_loadu_ps(bk), b1 = _mm512_loadu_ps(bk + b2), t; \
            CNX_Z_ROW(ps, 0, r00, r01) CNX_Z_ROW(ps, 1, r10, r11)              \
            CNX_Z_ROW(ps, 2, r20, r21) CNX_Z_ROW(ps, 3, r30, r31)              \
            CNX_Z_ROW(ps, 4, r40, r41) CNX_Z_ROW(ps, 5, r50, r51)              \
            CNX_Z_ROW(ps, 6, r60, r61) CNX_Z_ROW(ps, 7, r70, r71)              \
        }                                                                      \
        CNX_Z2_STORE(0, r00, r01) CNX_Z2_STORE(1, r10, r11)                    \
        CNX_Z2_STORE(2, r20, r21) CNX_Z2_STORE(3, r30, r31)                    \
        CNX_Z2_STORE(4, r40, r41) CNX_Z2_STORE(5, r50, r51)                    \
        CNX_Z2_STORE(6, r60, r61) CNX_Z2_STORE(7, r70, r71)                    \
    }

#define AEL CNX_AEL_PACKED
CNX_DEF_AVX512_2R(cnx_ukr_s_avx512_2r1, 1)
CNX_DEF_AVX512_2R(cnx_ukr_s_avx512_2r2, 2)
CNX_DEF_AVX512_2R(cnx_ukr_s_avx512_2r3, 3)
CNX_DEF_AVX512_2R(cnx_ukr_s_avx512_2r4, 4)
CNX_DEF_AVX512_2R(cnx_ukr_s_avx512_2r5, 5)
CNX_DEF_AVX512_2R(cnx_ukr_s_avx512_2r6, 6)
CNX_DEF_AVX512_2R(cnx_ukr_s_avx512_2r7, 7)
CNX_DEF_AVX512_2R(cnx_ukr_s_avx512_2r8, 8)

/* AVX-512F flat-tile kernels (see cnx_ukrf_s): the 8 x 2-vector float
 * kernel; vector v is one plain load at off[2v] unless bit v of SV is set
 * (the tile's vector v spans two rows: ma/mb set for it), then two masked
 * loads merged.  Only the spanning vectors pay the merge (an ALU operation
 * beside the FMAs), and the masks of at most one such vector stay in
 * registers when one vector spans. */
#define CNX_F_LOAD(v, am, bm)                                                  \
    ((SV_ >> (v)) & 1                                                          \
         ? _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(am, bk + off[2 * (v)]),  \
                                bm, bk + off[2 * (v) + 1])                     \
         : _mm512_loadu_ps(bk + off[2 * (v)]))

#define CNX_DEF_AVX512_F(NAME, MRV, SV)                                        \
    CNX_TARGET_AVX512                                                          \
    static void NAME(int64_t kc, const float *a, const float *b,               \
                     const int64_t *boff, const int64_t *off, uint32_t ma,     \
                     uint32_t mb, float *c, int64_t ldc, int mr, int nr,       \
                     int accumulate, const float *bias) {                      \
        __m512 r00 = _mm512_setzero_ps(), r01 = _mm512_setzero_ps();           \
        __m512 r10 = _mm512_setzero_ps(), r11 = _mm512_setzero_ps();           \
        __m512 r20 = _mm512_setzero_ps(), r21 = _mm512_setzero_ps();           \
        __m512 r30 = _mm512_setzero_ps(), r31 = _mm512_setzero_ps();           \
        __m512 r40 = _mm512_setzero_ps(), r41 = _mm512_setzero_ps();           \
        __m512 r50 = _mm512_setzero_ps(), r51 = _mm512_setzero_ps();           \
        __m512 r60 = _mm512_setzero_ps(), r61 = _mm512_setzero_ps();           \
        __m512 r70 = _mm512_setzero_ps(), r71 = _mm512_setzero_ps();           \
        int64_t k;                                                             \
        enum { MRV_ = MRV, SV_ = SV };                                         \
        {                                                                      \
            const __mmask16 a0 = (__mmask16)(ma & 0xFFFFu);                    \
            const __mmask16 a1 = (__mmask16)(ma >> 16);                        \
            const __mmask16 c0 = (__mmask16)(mb & 0xFFFFu);                    \
            const __mmask16 c1 = (__mmask16)(mb >> 16);                        \
            (void)a0; (void)a1; (void)c0; (void)c1;                            \
            for (k = 0; k < kc; k++) {                                         \
                const float *bk = b + boff[k];                                 \
                __m512 b0 = CNX_F_LOAD(0, a0, c0), b1 = CNX_F_LOAD(1, a1, c1), t; \
                CNX_Z_ROW(ps, 0, r00, r01) CNX_Z_ROW(ps, 1, r10, r11)          \
                CNX_Z_ROW(ps, 2, r20, r21) CNX_Z_ROW(ps, 3, r30, r31)          \
                CNX_Z_ROW(ps, 4, r40, r41) CNX_Z_ROW(ps, 5, r50, r51)          \
                CNX_Z_ROW(ps, 6, r60, r61) CNX_Z_ROW(ps, 7, r70, r71)          \
            }                                                                  \
        }                                                                      \
        {                                                                      \
            __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : ((1u << nr) - 1u)); \
            __mmask16 m1 = (__mmask16)(nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF       \
                                                   : ((1u << (nr - 16)) - 1u))); \
            CNX_Z_STORE(ps, float, 0, r00, r01, 16)                            \
            CNX_Z_STORE(ps, float, 1, r10, r11, 16)                            \
            CNX_Z_STORE(ps, float, 2, r20, r21, 16)                            \
            CNX_Z_STORE(ps, float, 3, r30, r31, 16)                            \
            CNX_Z_STORE(ps, float, 4, r40, r41, 16)                            \
            CNX_Z_STORE(ps, float, 5, r50, r51, 16)                            \
            CNX_Z_STORE(ps, float, 6, r60, r61, 16)                            \
            CNX_Z_STORE(ps, float, 7, r70, r71, 16)                            \
        }                                                                      \
    }

#define CNX_DEF_AVX512_F8(SUF, SV)                                             \
    CNX_DEF_AVX512_F(cnx_ukr_s_avx512_f1##SUF, 1, SV)                          \
    CNX_DEF_AVX512_F(cnx_ukr_s_avx512_f2##SUF, 2, SV)                          \
    CNX_DEF_AVX512_F(cnx_ukr_s_avx512_f3##SUF, 3, SV)                          \
    CNX_DEF_AVX512_F(cnx_ukr_s_avx512_f4##SUF, 4, SV)                          \
    CNX_DEF_AVX512_F(cnx_ukr_s_avx512_f5##SUF, 5, SV)                          \
    CNX_DEF_AVX512_F(cnx_ukr_s_avx512_f6##SUF, 6, SV)                          \
    CNX_DEF_AVX512_F(cnx_ukr_s_avx512_f7##SUF, 7, SV)                          \
    CNX_DEF_AVX512_F(cnx_ukr_s_avx512_f8##SUF, 8, SV)
CNX_DEF_AVX512_F8(_s0, 0)
CNX_DEF_AVX512_F8(_s1, 1)
CNX_DEF_AVX512_F8(_s2, 2)
CNX_DEF_AVX512_F8(_s3, 3)
#undef AEL

/* Dot-product blocks, 4 x 4 vector accumulators; VTAIL: the last n % W
 * values as one masked step (or nothing: then a scalar tail added after
 * each horizontal sum). */
#define CNX_DOT_BODY(T, VT, SUF, W, LOAD, FMA, REDUCE, ZERO, VTAIL)            \
    VT acc[16];                                                                \
    int i, j;                                                                  \
    int64_t t = 0;                                                             \
    for (i = 0; i < 16; i++) acc[i] = ZERO();                                  \
    for (; t + (W) <= n; t += (W)) {                                           \
        VT a0 = LOAD(a[0] + t), a1 = LOAD(a[1] + t), a2 = LOAD(a[2] + t),      \
           a3 = LOAD(a[3] + t);                                                \
        VT bv;                                                                 \
        bv = LOAD(b[0] + t);                                                   \
        acc[0] = FMA(a0, bv, acc[0]); acc[4] = FMA(a1, bv, acc[4]);            \
        acc[8] = FMA(a2, bv, acc[8]); acc[12] = FMA(a3, bv, acc[12]);          \
        bv = LOAD(b[1] + t);                                                   \
        acc[1] = FMA(a0, bv, acc[1]); acc[5] = FMA(a1, bv, acc[5]);            \
        acc[9] = FMA(a2, bv, acc[9]); acc[13] = FMA(a3, bv, acc[13]);          \
        bv = LOAD(b[2] + t);                                                   \
        acc[2] = FMA(a0, bv, acc[2]); acc[6] = FMA(a1, bv, acc[6]);            \
        acc[10] = FMA(a2, bv, acc[10]); acc[14] = FMA(a3, bv, acc[14]);        \
        bv = LOAD(b[3] + t);                                                   \
        acc[3] = FMA(a0, bv, acc[3]); acc[7] = FMA(a1, bv, acc[7]);            \
        acc[11] = FMA(a2, bv, acc[11]); acc[15] = FMA(a3, bv, acc[15]);        \
    }                                                                          \
    VTAIL                                                                      \
    for (i = 0; i < ma; i++)                                                   \
        for (j = 0; j < nb; j++) {                                             \
            T tail = 0;                                                        \
            int64_t u;                                                         \
            for (u = t; u < n; u++) tail += a[i][u] * b[j][u];                 \
            c[i * ldc + j] += REDUCE(acc[i * 4 + j]) + tail;                   \
        }


/* One row against four, two vectors per step (eight accumulators). */
#define CNX_DOT1_BODY(T, VT, W, LOAD, FMA, REDUCE, ZERO)                       \
    VT acc[8];                                                                 \
    int j;                                                                     \
    int64_t t = 0, u;                                                          \
    for (j = 0; j < 8; j++) acc[j] = ZERO();                                   \
    for (; t + 2 * (W) <= n; t += 2 * (W)) {                                   \
        VT a0 = LOAD(a + t), a1 = LOAD(a + t + (W));                           \
        for (j = 0; j < 4; j++) {                                              \
            acc[j] = FMA(a0, LOAD(b[j] + t), acc[j]);                          \
            acc[j + 4] = FMA(a1, LOAD(b[j] + t + (W)), acc[j + 4]);            \
        }                                                                      \
    }                                                                          \
    for (; t + (W) <= n; t += (W)) {                                           \
        VT a0 = LOAD(a + t);                                                   \
        for (j = 0; j < 4; j++) acc[j] = FMA(a0, LOAD(b[j] + t), acc[j]);      \
    }                                                                          \
    for (j = 0; j < nb; j++) {                                                 \
        T tail = 0;                                                            \
        for (u = t; u < n; u++) tail += a[u] * b[j][u];                        \
        c[j] += REDUCE(acc[j]) + REDUCE(acc[j + 4]) + tail;                    \
    }

CNX_TARGET_AVX2 static float cnx_hsum_ps256(__m256 v) {
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 1));
    return _mm_cvtss_f32(x);
}
CNX_TARGET_AVX2 static double cnx_hsum_pd256(__m256d v) {
    __m128d x = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    x = _mm_add_sd(x, _mm_unpackhi_pd(x, x));
    return _mm_cvtsd_f64(x);
}
CNX_TARGET_AVX2 static void cnx_dot_s_avx2(int64_t n, const float *const *a, int ma,
                                           const float *const *b, int nb, float *c,
                                           int64_t ldc) {
    CNX_DOT_BODY(float, __m256, ps, 8, _mm256_loadu_ps, _mm256_fmadd_ps,
                 cnx_hsum_ps256, _mm256_setzero_ps, )
}
CNX_TARGET_AVX2 static void cnx_dot_d_avx2(int64_t n, const double *const *a, int ma,
                                           const double *const *b, int nb, double *c,
                                           int64_t ldc) {
    CNX_DOT_BODY(double, __m256d, pd, 4, _mm256_loadu_pd, _mm256_fmadd_pd,
                 cnx_hsum_pd256, _mm256_setzero_pd, )
}
CNX_TARGET_AVX2 static void cnx_dot1_s_avx2(int64_t n, const float *a, const float *const *b,
                                            int nb, float *c) {
    CNX_DOT1_BODY(float, __m256, 8, _mm256_loadu_ps, _mm256_fmadd_ps, cnx_hsum_ps256,
                  _mm256_setzero_ps)
}
CNX_TARGET_AVX2 static void cnx_dot1_d_avx2(int64_t n, const double *a, const double *const *b,
                                            int nb, double *c) {
    CNX_DOT1_BODY(double, __m256d, 4, _mm256_loadu_pd, _mm256_fmadd_pd, cnx_hsum_pd256,
                  _mm256_setzero_pd)
}
CNX_TARGET_AVX512 static float cnx_hsum_ps512(__m512 v) { return _mm512_reduce_add_ps(v); }
CNX_TARGET_AVX512 static double cnx_hsum_pd512(__m512d v) { return _mm512_reduce_add_pd(v); }
/* float32 AVX-512: the last n % 16 values as one masked step, into the
 * lanes they fall in (masked-off lanes keep their sums): a weight gradient
 * over rows of 28 + 2 padded positions had a scalar tail of 8 values per
 * 4 x 4 block, as costly as its last 8 vector steps. */
#define CNX_DOT_TAIL_Z_S                                                       \
    if (t < n) {                                                               \
        __mmask16 m_ = (__mmask16)((1u << (n - t)) - 1u);                      \
        __m512 a0 = _mm512_maskz_loadu_ps(m_, a[0] + t);                       \
        __m512 a1 = _mm512_maskz_loadu_ps(m_, a[1] + t);                       \
        __m512 a2 = _mm512_maskz_loadu_ps(m_, a[2] + t);                       \
        __m512 a3 = _mm512_maskz_loadu_ps(m_, a[3] + t);                       \
        for (j = 0; j < 4; j++) {                                              \
            __m512 bv = _mm512_maskz_loadu_ps(m_, b[j] + t);                   \
            acc[j] = _mm512_mask3_fmadd_ps(a0, bv, acc[j], m_);                \
            acc[4 + j] = _mm512_mask3_fmadd_ps(a1, bv, acc[4 + j], m_);        \
            acc[8 + j] = _mm512_mask3_fmadd_ps(a2, bv, acc[8 + j], m_);        \
            acc[12 + j] = _mm512_mask3_fmadd_ps(a3, bv, acc[12 + j], m_);      \
        }                                                                      \
        t = n;                                                                 \
    }
CNX_TARGET_AVX512 static void cnx_dot_s_avx512(int64_t n, const float *const *a, int ma,
                                               const float *const *b, int nb, float *c,
                                               int64_t ldc) {
    CNX_DOT_BODY(float, __m512, ps, 16, _mm512_loadu_ps, _mm512_fmadd_ps,
                 cnx_hsum_ps512, _mm512_setzero_ps, CNX_DOT_TAIL_Z_S)
}
CNX_TARGET_AVX512 static void cnx_dot1_s_avx512(int64_t n, const float *a,
                                                const float *const *b, int nb, float *c) {
    CNX_DOT1_BODY(float, __m512, 16, _mm512_loadu_ps, _mm512_fmadd_ps, cnx_hsum_ps512,
                  _mm512_setzero_ps)
}
CNX_TARGET_AVX512 static void cnx_dot1_d_avx512(int64_t n, const double *a,
                                                const double *const *b, int nb, double *c) {
    CNX_DOT1_BODY(double, __m512d, 8, _mm512_loadu_pd, _mm512_fmadd_pd, cnx_hsum_pd512,
                  _mm512_setzero_pd)
}
CNX_TARGET_AVX512 static void cnx_dot_d_avx512(int64_t n, const double *const *a, int ma,
                                               const double *const *b, int nb, double *c,
                                               int64_t ldc) {
    CNX_DOT_BODY(double, __m512d, pd, 8, _mm512_loadu_pd, _mm512_fmadd_pd,
                 cnx_hsum_pd512, _mm512_setzero_pd, )
}

/* Activation epilogues: full vectors, then the row's tail as scalars. */
#define CNX_DEF_ACT_VEC(NAME, TARGET, T, VT, W, LOAD, STORE, SET1, ZERO,        \
                        RELU, LEAKY, GENERIC, TAIL)                            \
    TARGET static void NAME(const T *src, int64_t lds, T *dst, int64_t ldd,   \
                            int64_t rows, int64_t cols, int act, T alpha) {    \
        int64_t r, j;                                                          \
        VT z = ZERO(), va = SET1(alpha);                                       \
        if (act != 0 && act != 1 && act != 2) {                                \
            GENERIC(src, lds, dst, ldd, rows, cols, act, alpha);               \
            return;                                                            \
        }                                                                      \
        (void)va;                                                              \
        for (r = 0; r < rows; r++) {                                           \
            const T *s_ = src + r * lds;                                       \
            T *d_ = dst + r * ldd;                                             \
            j = 0;                                                             \
            if (act == 0) {                                                    \
                for (; j + (W) <= cols; j += (W)) STORE(d_ + j, LOAD(s_ + j)); \
                TAIL(v)                                                        \
            } else if (act == 1) {                                             \
                for (; j + (W) <= cols; j += (W)) {                            \
                    VT v = LOAD(s_ + j);                                       \
                    STORE(d_ + j, RELU(v, z));                                 \
                }                                                              \
                TAIL(RELU(v, z))                                               \
            } else {                                                           \
                for (; j + (W) <= cols; j += (W)) {                            \
                    VT v = LOAD(s_ + j);                                       \
                    STORE(d_ + j, LEAKY(v, z, va));                            \
                }                                                              \
                TAIL(LEAKY(v, z, va))                                          \
            }                                                                  \
            for (; j < cols; j++) {                                            \
                T v = s_[j];                                                   \
                d_[j] = CNX_ACT1(T, v, act, alpha);                            \
            }                                                                  \
        }                                                                      \
    }

/* The last cols % W values of a row: one masked vector (AVX-512), or left
 * to the scalar loop (AVX2). */
#define CNX_TAIL_Z(MT, VT, SUF, EXPR)                                            \
    if (j < cols) {                                                            \
        MT m_ = (MT)((1u << (cols - j)) - 1u);                                 \
        VT v = _mm512_maskz_loadu_##SUF(m_, s_ + j);                           \
        _mm512_mask_storeu_##SUF(d_ + j, m_, EXPR);                            \
        j = cols;                                                              \
    }
#define CNX_TAIL_Z_S(EXPR) CNX_TAIL_Z(__mmask16, __m512, ps, EXPR)
#define CNX_TAIL_Z_D(EXPR) CNX_TAIL_Z(__mmask8, __m512d, pd, EXPR)
#define CNX_TAIL_NONE(EXPR)

/* ReLU keeps v where !(v <= 0) (true for NaN), else +0; leaky ReLU keeps v
 * where v > 0, else alpha*v. */
#define CNX_RELU_Z_S(v, z) _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, z, _CMP_NLE_UQ), v)
#define CNX_LEAKY_Z_S(v, z, va)                                                \
    _mm512_mask_mov_ps(_mm512_mul_ps(va, v), _mm512_cmp_ps_mask(v, z, _CMP_GT_OQ), v)
#define CNX_RELU_Z_D(v, z) _mm512_maskz_mov_pd(_mm512_cmp_pd_mask(v, z, _CMP_NLE_UQ), v)
#define CNX_LEAKY_Z_D(v, z, va)                                                \
    _mm512_mask_mov_pd(_mm512_mul_pd(va, v), _mm512_cmp_pd_mask(v, z, _CMP_GT_OQ), v)
#define CNX_RELU_Y_S(v, z) _mm256_and_ps(_mm256_cmp_ps(v, z, _CMP_NLE_UQ), v)
#define CNX_LEAKY_Y_S(v, z, va)                                                \
    _mm256_blendv_ps(_mm256_mul_ps(va, v), v, _mm256_cmp_ps(v, z, _CMP_GT_OQ))
#define CNX_RELU_Y_D(v, z) _mm256_and_pd(_mm256_cmp_pd(v, z, _CMP_NLE_UQ), v)
#define CNX_LEAKY_Y_D(v, z, va)                                                \
    _mm256_blendv_pd(_mm256_mul_pd(va, v), v, _mm256_cmp_pd(v, z, _CMP_GT_OQ))

CNX_DEF_ACT_VEC(cnx_act_s_avx512, CNX_TARGET_AVX512, float, __m512, 16, _mm512_loadu_ps,
                _mm512_storeu_ps, _mm512_set1_ps, _mm512_setzero_ps, CNX_RELU_Z_S,
                CNX_LEAKY_Z_S, cnx_act_s_generic, CNX_TAIL_Z_S)
CNX_DEF_ACT_VEC(cnx_act_d_avx512, CNX_TARGET_AVX512, double, __m512d, 8, _mm512_loadu_pd,
                _mm512_storeu_pd, _mm512_set1_pd, _mm512_setzero_pd, CNX_RELU_Z_D,
                CNX_LEAKY_Z_D, cnx_act_d_generic, CNX_TAIL_Z_D)
CNX_DEF_ACT_VEC(cnx_act_s_avx2, CNX_TARGET_AVX2, float, __m256, 8, _mm256_loadu_ps,
                _mm256_storeu_ps, _mm256_set1_ps, _mm256_setzero_ps, CNX_RELU_Y_S,
                CNX_LEAKY_Y_S, cnx_act_s_generic, CNX_TAIL_NONE)
CNX_DEF_ACT_VEC(cnx_act_d_avx2, CNX_TARGET_AVX2, double, __m256d, 4, _mm256_loadu_pd,
                _mm256_storeu_pd, _mm256_set1_pd, _mm256_setzero_pd, CNX_RELU_Y_D,
                CNX_LEAKY_Y_D, cnx_act_d_generic, CNX_TAIL_NONE)

CNX_TARGET_AVX512 static void cnx_split2_s_avx512(const float *src, int64_t n,
                                                  float *d0, float *d1) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14,
                                         16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15,
                                         17, 19, 21, 23, 25, 27, 29, 31);
    int64_t q = 0, r;
    __m512 a, b;
    for (; 2 * q + 32 <= n; q += 16) {
        a = _mm512_loadu_ps(src + 2 * q);
        b = _mm512_loadu_ps(src + 2 * q + 16);
        _mm512_storeu_ps(d0 + q, _mm512_permutex2var_ps(a, ie, b));
        _mm512_storeu_ps(d1 + q, _mm512_permutex2var_ps(a, io, b));
    }
    r = n - 2 * q; /* 0..31 values left: masked loads and stores */
    if (r > 0) {
        a = _mm512_maskz_loadu_ps((__mmask16)((1u << (r < 16 ? r : 16)) - 1), src + 2 * q);
        b = _mm512_maskz_loadu_ps((__mmask16)(r > 16 ? (1u << (r - 16)) - 1 : 0),
                                  src + 2 * q + 16);
        _mm512_mask_storeu_ps(d0 + q, (__mmask16)((1u << ((r + 1) / 2)) - 1),
                              _mm512_permutex2var_ps(a, ie, b));
        _mm512_mask_storeu_ps(d1 + q, (__mmask16)((1u << (r / 2)) - 1),
                              _mm512_permutex2var_ps(a, io, b));
    }
}

/* cnx_split2_s with AVX2: 16 values per step into their even and odd
 * positions; the last 0..15 by masked loads and partial stores. */
CNX_TARGET_AVX2 static void cnx_split2_s_avx2(const float *src, int64_t n, float *d0,
                                              float *d1) {
    int64_t q = 0, r;
    __m256 a, b;
    for (; 2 * q + 16 <= n; q += 8) {
        a = _mm256_loadu_ps(src + 2 * q);
        b = _mm256_loadu_ps(src + 2 * q + 8);
        _mm256_storeu_ps(d0 + q, cnx_even_ps_avx2(a, b));
        _mm256_storeu_ps(d1 + q, cnx_odd_ps_avx2(a, b));
    }
    r = n - 2 * q; /* 0..15 values left */
    if (r > 0) {
        a = _mm256_maskload_ps(src + 2 * q, cnx_lanes_avx2(0, r));
        b = _mm256_maskload_ps(src + 2 * q + 8, cnx_lanes_avx2(0, r - 8));
        CNX_Y_STORE_N(ps, d0 + q, cnx_even_ps_avx2(a, b), (r + 1) / 2, 8);
        CNX_Y_STORE_N(ps, d1 + q, cnx_odd_ps_avx2(a, b), r / 2, 8);
    }
}

CNX_TARGET_AVX512 static void cnx_merge2_s_avx512(const float *src, int64_t lds, float *dst,
                                                  int64_t ldd, int64_t rows, int64_t cols) {
    /* Value i of a 16-value block goes to lane 2*i of the first or second
     * output vector; the stores write the even lanes of the block only. */
    const __m512i lo = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i hi = _mm512_setr_epi32(8, 8, 9, 9, 10, 10, 11, 11,
                                         12, 12, 13, 13, 14, 14, 15, 15);
    int64_t r, j, m;
    for (r = 0; r < rows; r++) {
        const float *s_ = src + r * lds;
        float *d_ = dst + r * ldd;
        for (j = 0; j < cols; j += 16) {
            __m512 v;
            m = cols - j < 16 ? cols - j : 16;
            v = _mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1u), s_ + j);
            _mm512_mask_storeu_ps(d_ + 2 * j,
                                  (__mmask16)(0x5555u & ((1u << (2 * (m < 8 ? m : 8))) - 1u)),
                                  _mm512_permutexvar_ps(lo, v));
            if (m > 8)
                _mm512_mask_storeu_ps(d_ + 2 * j + 16,
                                      (__mmask16)(0x5555u & ((1u << (2 * (m - 8))) - 1u)),
                                      _mm512_permutexvar_ps(hi, v));
        }
    }
}

/* Sixteen rows at a time: for each column, one gather of the rows' values
 * (lds apart) and one store of the 16 values; the indices are 32-bit, so
 * rows farther apart than INT32_MAX / 16 elements take the scalar loop. */
CNX_TARGET_AVX512 static void cnx_tcopy_s_avx512(const float *src, int64_t lds, int64_t rows,
                                                 int64_t cols, float *dst, int64_t ldd) {
    int64_t r0, q, r;
    if (lds > INT32_MAX / 16) {
        for (r = 0; r < rows; r++)
            for (q = 0; q < cols; q++) dst[q * ldd + r] = src[r * lds + q];
        return;
    }
    {
        const __m512i idx = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32((int)lds));
        for (r0 = 0; r0 < rows; r0 += 16) {
            int64_t m = rows - r0 < 16 ? rows - r0 : 16;
            __mmask16 mk = (__mmask16)((1u << m) - 1u);
            const float *s_ = src + r0 * lds;
            float *d_ = dst + r0;
            for (q = 0; q < cols; q++) {
                __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), mk, idx, s_ + q, 4);
                _mm512_mask_storeu_ps(d_ + q * ldd, mk, v);
            }
        }
    }
}

/* CPUID / XGETBV: the CPU has the instructions *and* the OS saves the
 * registers. */
#if defined(_MSC_VER) && !defined(__clang__)
static void cnx_cpuid(int leaf, int sub, int r[4]) { __cpuidex(r, leaf, sub); }
static unsigned long long cnx_xgetbv(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void cnx_cpuid(int leaf, int sub, int r[4]) {
    unsigned int a, b, c, d;
    __cpuid_count((unsigned)leaf, (unsigned)sub, a, b, c, d);
    r[0] = (int)a; r[1] = (int)b; r[2] = (int)c; r[3] = (int)d;
}
static unsigned long long cnx_xgetbv(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

static int cnx_detect_isa(void) { /* 0 generic, 1 avx2, 2 avx512 */
    int r[4], max_leaf;
    unsigned long long xcr0;
    cnx_cpuid(0, 0, r);
    max_leaf = r[0];
    if (max_leaf < 7) return 0;
    cnx_cpuid(1, 0, r);
    if (!(r[2] & (1 << 27)) || !(r[2] & (1 << 28)) || !(r[2] & (1 << 12)))
        return 0; /* OSXSAVE, AVX, FMA */
    xcr0 = cnx_xgetbv();
    if ((xcr0 & 0x6) != 0x6) return 0; /* XMM and YMM state */
    cnx_cpuid(7, 0, r);
    if (!(r[1] & (1 << 5))) return 0; /* AVX2 */
    /* AVX512F, DQ and VL (every AVX-512 kernel is compiled for them) + ZMM state */
    if ((r[1] & (1 << 16)) && (r[1] & (1 << 17)) && (r[1] & (1u << 31))
        && (xcr0 & 0xE6) == 0xE6)
        return 2;
    return 1;
}
#else
static int cnx_detect_isa(void) { return 0; }
#endif

static int cnx_isa_from_env(int detected) {
    const char *e = getenv("CNNEXT_ISA");
    int want = detected;
    if (!e || !*e) return detected;
    if (strcmp(e, "generic") == 0) want = 0;
    else if (strcmp(e, "avx2") == 0) want = 1;
    else if (strcmp(e, "avx512") == 0) want = 2;
    return want < detected ? want : detected; /* never beyond the hardware */
}

static cnx_kernels cnx_select_kernels(void) {
    cnx_kernels k;
    int isa = cnx_isa_from_env(cnx_detect_isa());
    k.s = cnx_ukr_s_generic; k.d = cnx_ukr_d_generic;
    k.s_ind = cnx_ukr_s_generic_ind; k.d_ind = cnx_ukr_d_generic_ind;
    k.s_inda = cnx_ukr_s_generic_inda; k.d_inda = cnx_ukr_d_generic_inda;
    k.s_ind_pf = k.s_ind; k.d_ind_pf = k.d_ind;
    k.dot_s = cnx_dot_s_generic; k.dot_d = cnx_dot_d_generic;
    k.dot1_s = cnx_dot1_s_generic; k.dot1_d = cnx_dot1_d_generic;
    k.act_s = cnx_act_s_generic; k.act_d = cnx_act_d_generic;
    k.split2_s = NULL;
    k.merge2_s = NULL;
    k.tcopy_s = NULL;
    memset(k.s_indf_mr, 0, sizeof(k.s_indf_mr));
    memset(k.s_ind_mr, 0, sizeof(k.s_ind_mr));
    memset(k.d_ind_mr, 0, sizeof(k.d_ind_mr));
    memset(k.s_ind2r_mr, 0, sizeof(k.s_ind2r_mr));
    memset(k.d_ind_wide, 0, sizeof(k.d_ind_wide));
    memset(k.d_ind_wide_pfl, 0, sizeof(k.d_ind_wide_pfl));
    k.s_ind_pfl = NULL;
    k.s_inda_n1 = NULL; k.d_inda_n1 = NULL;
    k.s_mr = CNX_GEN_MR; k.s_nr = CNX_GEN_NR_S;
    k.d_mr = CNX_GEN_MR; k.d_nr = CNX_GEN_NR_D;
    k.name = "generic";
#ifdef CNX_X86
    if (isa == 2) {
        k.s = cnx_ukr_s_avx512; k.d = cnx_ukr_d_avx512;
        k.s_ind = cnx_ukr_s_avx512_ind; k.d_ind = cnx_ukr_d_avx512_ind;
        k.s_inda = cnx_ukr_s_avx512_inda; k.d_inda = cnx_ukr_d_avx512_inda;
        k.s_ind_pf = cnx_ukr_s_avx512_ind_pf; k.d_ind_pf = cnx_ukr_d_avx512_ind_pf;
        k.dot_s = cnx_dot_s_avx512; k.dot_d = cnx_dot_d_avx512;
        k.dot1_s = cnx_dot1_s_avx512; k.dot1_d = cnx_dot1_d_avx512;
        k.act_s = cnx_act_s_avx512; k.act_d = cnx_act_d_avx512;
        k.split2_s = cnx_split2_s_avx512;
        k.merge2_s = cnx_merge2_s_avx512;
        k.tcopy_s = cnx_tcopy_s_avx512;
#define CNX_SET_F8(S, SUF)                                                     \
        k.s_indf_mr[8 * S + 0] = cnx_ukr_s_avx512_f1##SUF;                     \
        k.s_indf_mr[8 * S + 1] = cnx_ukr_s_avx512_f2##SUF;                     \
        k.s_indf_mr[8 * S + 2] = cnx_ukr_s_avx512_f3##SUF;                     \
        k.s_indf_mr[8 * S + 3] = cnx_ukr_s_avx512_f4##SUF;                     \
        k.s_indf_mr[8 * S + 4] = cnx_ukr_s_avx512_f5##SUF;                     \
        k.s_indf_mr[8 * S + 5] = cnx_ukr_s_avx512_f6##SUF;                     \
        k.s_indf_mr[8 * S + 6] = cnx_ukr_s_avx512_f7##SUF;                     \
        k.s_indf_mr[8 * S + 7] = cnx_ukr_s_avx512_f8##SUF;
        CNX_SET_F8(0, _s0) CNX_SET_F8(1, _s1) CNX_SET_F8(2, _s2) CNX_SET_F8(3, _s3)
#undef CNX_SET_F8
        k.s_ind_mr[0] = cnx_ukr_s_avx512_ind1; k.s_ind_mr[1] = cnx_ukr_s_avx512_ind2;
        k.s_ind_mr[2] = cnx_ukr_s_avx512_ind3; k.s_ind_mr[3] = cnx_ukr_s_avx512_ind4;
        k.s_ind_mr[4] = cnx_ukr_s_avx512_ind5; k.s_ind_mr[5] = cnx_ukr_s_avx512_ind6;
        k.s_ind_mr[6] = cnx_ukr_s_avx512_ind7; k.s_ind_mr[7] = cnx_ukr_s_avx512_ind;
        k.d_ind_mr[0] = cnx_ukr_d_avx512_ind1; k.d_ind_mr[1] = cnx_ukr_d_avx512_ind2;
        k.d_ind_mr[2] = cnx_ukr_d_avx512_ind3; k.d_ind_mr[3] = cnx_ukr_d_avx512_ind4;
        k.d_ind_mr[4] = cnx_ukr_d_avx512_ind5; k.d_ind_mr[5] = cnx_ukr_d_avx512_ind6;
        k.d_ind_mr[6] = cnx_ukr_d_avx512_ind7; k.d_ind_mr[7] = cnx_ukr_d_avx512_ind;
        k.s_inda_n1 = cnx_ukr_s_avx512_inda_n1; k.d_inda_n1 = cnx_ukr_d_avx512_inda_n1;
        k.s_ind2r_mr[0] = cnx_ukr_s_avx512_2r1; k.s_ind2r_mr[1] = cnx_ukr_s_avx512_2r2;
        k.s_ind2r_mr[2] = cnx_ukr_s_avx512_2r3; k.s_ind2r_mr[3] = cnx_ukr_s_avx512_2r4;
        k.s_ind2r_mr[4] = cnx_ukr_s_avx512_2r5; k.s_ind2r_mr[5] = cnx_ukr_s_avx512_2r6;
        k.s_ind2r_mr[6] = cnx_ukr_s_avx512_2r7; k.s_ind2r_mr[7] = cnx_ukr_s_avx512_2r8;
#define CNX_SET_WIDE(MRV)                                                      \
        k.d_ind_wide[MRV - 9] = cnx_ukr_d_avx512_ind##MRV;                     \
        k.d_ind_wide_pfl[MRV - 9] = cnx_ukr_d_avx512_ind##MRV##_pfl;
        CNX_SET_WIDE(9) CNX_SET_WIDE(10) CNX_SET_WIDE(11)
        CNX_SET_WIDE(12) CNX_SET_WIDE(13) CNX_SET_WIDE(14)
#undef CNX_SET_WIDE
        k.s_ind_pfl = cnx_ukr_s_avx512_ind_pfl;
        k.s_mr = 8; k.s_nr = 32; k.d_mr = 8; k.d_nr = 16;
        k.name = "avx512";
    } else if (isa == 1) {
        k.split2_s = cnx_split2_s_avx2;
#define CNX_SET_F6(S, SUF)                                                     \
        k.s_indf_mr[8 * S + 0] = cnx_ukr_s_avx2_f1##SUF;                       \
        k.s_indf_mr[8 * S + 1] = cnx_ukr_s_avx2_f2##SUF;                       \
        k.s_indf_mr[8 * S + 2] = cnx_ukr_s_avx2_f3##SUF;                       \
        k.s_indf_mr[8 * S + 3] = cnx_ukr_s_avx2_f4##SUF;                       \
        k.s_indf_mr[8 * S + 4] = cnx_ukr_s_avx2_f5##SUF;                       \
        k.s_indf_mr[8 * S + 5] = cnx_ukr_s_avx2_f6##SUF;
        CNX_SET_F6(0, _s0) CNX_SET_F6(1, _s1) CNX_SET_F6(2, _s2) CNX_SET_F6(3, _s3)
#undef CNX_SET_F6
        k.s_ind2r_mr[0] = cnx_ukr_s_avx2_2r1; k.s_ind2r_mr[1] = cnx_ukr_s_avx2_2r2;
        k.s_ind2r_mr[2] = cnx_ukr_s_avx2_2r3; k.s_ind2r_mr[3] = cnx_ukr_s_avx2_2r4;
        k.s_ind2r_mr[4] = cnx_ukr_s_avx2_2r5; k.s_ind2r_mr[5] = cnx_ukr_s_avx2_2r6;
        k.s = cnx_ukr_s_avx2; k.d = cnx_ukr_d_avx2;
        k.s_ind = cnx_ukr_s_avx2_ind; k.d_ind = cnx_ukr_d_avx2_ind;
        k.s_inda = cnx_ukr_s_avx2_inda; k.d_inda = cnx_ukr_d_avx2_inda;
        k.s_ind_pf = k.s_ind; k.d_ind_pf = k.d_ind;
        k.s_ind_mr[0] = cnx_ukr_s_avx2_ind1; k.s_ind_mr[1] = cnx_ukr_s_avx2_ind2;
        k.s_ind_mr[2] = cnx_ukr_s_avx2_ind3; k.s_ind_mr[3] = cnx_ukr_s_avx2_ind4;
        k.s_ind_mr[4] = cnx_ukr_s_avx2_ind5;
        k.d_ind_mr[0] = cnx_ukr_d_avx2_ind1; k.d_ind_mr[1] = cnx_ukr_d_avx2_ind2;
        k.d_ind_mr[2] = cnx_ukr_d_avx2_ind3; k.d_ind_mr[3] = cnx_ukr_d_avx2_ind4;
        k.d_ind_mr[4] = cnx_ukr_d_avx2_ind5;
        k.dot_s = cnx_dot_s_avx2; k.dot_d = cnx_dot_d_avx2;
        k.dot1_s = cnx_dot1_s_avx2; k.dot1_d = cnx_dot1_d_avx2;
        k.act_s = cnx_act_s_avx2; k.act_d = cnx_act_d_avx2;
        k.s_mr = 6; k.s_nr = 16; k.d_mr = 6; k.d_nr = 8;
        k.name = "avx2";
    }
#endif
    return k;
}

#endif /* CNNEXT_UKERNEL_H */
