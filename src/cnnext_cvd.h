/*
 * cnnext: the float64 forward's channel-vector micro-kernels.
 *
 * The forward's general float64 kernels (src/cnnext_ukernel.h) put output
 * channels on the rows of a tile (broadcast from the packed weight) and
 * output positions on its two vectors (16 consecutive positions of the
 * prepared sample).  A row of 14 outputs (a 14x14 map) then fills 14 of the
 * 16 columns of every tile, 7 fills 7: the FMAs on the other lanes are
 * wasted.  These kernels turn the tile around: 16 output channels on the two
 * vectors (the weight packed in 16-channel panels, tap k's 16 values at
 * w + 16k), and 1..14 consecutive positions of one output row on the rows,
 * each broadcast from the tap's run of the prepared sample:
 *
 *     acc[i][j] = sum_k b[boff[k] + i] * w[16k + j]      (0 <= k < kc)
 *     c[16i + j] = base + acc[i][j]                       (i < MRV, j < 16)
 *
 * with base c[16i + j] when `accumulate`, else bias[j] (or 0 when bias is
 * NULL; bias holds 16 values).  The result tile is position-major (16
 * channels per position); the caller transposes it into the output.  With
 * 14 positions, 28 accumulators, the two weight vectors and the broadcast
 * take 31 of the 32 registers.  Each result is summed over k in the same
 * order and with the same operations as in the other kernels (a product,
 * then the fused add, from zero; then base + sum), so the results are
 * bitwise the same.
 *
 * With AVX2 (16 registers) a tile is 8 output channels (two vectors, tap
 * k's 8 values at w + 8k) by 1..6 positions: 12 accumulators, the two
 * weight vectors and the broadcast take 15 registers, and each step loads
 * as many values as the 6 x 8 tiles of src/cnnext_ukernel.h.  A row of 14
 * outputs takes tiles of 5, 5 and 4 positions where 8-column tiles computed
 * 16.  (Seven positions, the second weight vector read from memory by each
 * FMA, ran slower: 16 loads per 14 FMAs.)
 *
 * cnx_cvd_shape(&nch, &maxp) gives the selected instruction set's tile
 * (16 x 14 with AVX-512F, 8 x 6 with AVX2; 0 x 0 without either,
 * or when CNNEXT_ISA asks for less); cnx_cvd_select(n) returns its kernel of
 * n = 1..maxp positions, or NULL.
 */
#ifndef CNNEXT_CVD_H
#define CNNEXT_CVD_H

#include "cnnext_ukernel.h"

/* Most positions and channels per tile of any instruction set. */
#define CNX_CVD_MAXP 14
#define CNX_CVD_NCH 16

typedef void (*cnx_cvd)(int64_t kc, const double *w, const double *b, const int64_t *boff,
                        double *c, int accumulate, const double *bias);

#ifdef CNX_X86

/* One position's FMAs into its two accumulators and its store, for either
 * instruction set: V the intrinsics' prefix (_mm512, _mm256), L the
 * doubles per vector (a tile row holds 2*L channels). */
#define CNX_CV_ROW(V, i, lo, hi)                                               \
    if (MRV_ > (i)) {                                                          \
        t = V##_set1_pd(bk[i]);                                                \
        lo = V##_fmadd_pd(t, w0, lo);                                          \
        hi = V##_fmadd_pd(t, w1, hi);                                          \
    }

#define CNX_CV_STORE(V, L, i, lo, hi)                                          \
    if (MRV_ > (i)) {                                                          \
        double *row_ = c + 2 * (L) * (i);                                      \
        if (accumulate) {                                                      \
            lo = V##_add_pd(lo, V##_loadu_pd(row_));                           \
            hi = V##_add_pd(hi, V##_loadu_pd(row_ + (L)));                     \
        } else if (bias) {                                                     \
            lo = V##_add_pd(lo, V##_loadu_pd(bias));                           \
            hi = V##_add_pd(hi, V##_loadu_pd(bias + (L)));                     \
        }                                                                      \
        V##_storeu_pd(row_, lo);                                               \
        V##_storeu_pd(row_ + (L), hi);                                         \
    }
#define CNX_CVD_ROW(i, lo, hi) CNX_CV_ROW(_mm512, i, lo, hi)
#define CNX_CVD_STORE(i, lo, hi) CNX_CV_STORE(_mm512, 8, i, lo, hi)

#define CNX_DEF_CVD(NAME, MRV)                                                 \
    CNX_TARGET_AVX512                                                          \
    static void NAME(int64_t kc, const double *w, const double *b,             \
                     const int64_t *boff, double *c, int accumulate,           \
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
        int64_t k;                                                             \
        enum { MRV_ = MRV };                                                   \
        for (k = 0; k < kc; k++) {                                             \
            const double *bk = b + boff[k];                                    \
            __m512d w0 = _mm512_loadu_pd(w + 16 * k);                          \
            __m512d w1 = _mm512_loadu_pd(w + 16 * k + 8), t;                   \
            CNX_CVD_ROW(0, r00, r01) CNX_CVD_ROW(1, r10, r11)                  \
            CNX_CVD_ROW(2, r20, r21) CNX_CVD_ROW(3, r30, r31)                  \
            CNX_CVD_ROW(4, r40, r41) CNX_CVD_ROW(5, r50, r51)                  \
            CNX_CVD_ROW(6, r60, r61) CNX_CVD_ROW(7, r70, r71)                  \
            CNX_CVD_ROW(8, r80, r81) CNX_CVD_ROW(9, r90, r91)                  \
            CNX_CVD_ROW(10, ra0, ra1) CNX_CVD_ROW(11, rb0, rb1)                \
            CNX_CVD_ROW(12, rc0, rc1) CNX_CVD_ROW(13, rd0, rd1)                \
        }                                                                      \
        CNX_CVD_STORE(0, r00, r01) CNX_CVD_STORE(1, r10, r11)                  \
        CNX_CVD_STORE(2, r20, r21) CNX_CVD_STORE(3, r30, r31)                  \
        CNX_CVD_STORE(4, r40, r41) CNX_CVD_STORE(5, r50, r51)                  \
        CNX_CVD_STORE(6, r60, r61) CNX_CVD_STORE(7, r70, r71)                  \
        CNX_CVD_STORE(8, r80, r81) CNX_CVD_STORE(9, r90, r91)                  \
        CNX_CVD_STORE(10, ra0, ra1) CNX_CVD_STORE(11, rb0, rb1)                \
        CNX_CVD_STORE(12, rc0, rc1) CNX_CVD_STORE(13, rd0, rd1)                \
    }

CNX_DEF_CVD(cnx_cvd_1, 1)
CNX_DEF_CVD(cnx_cvd_2, 2)
CNX_DEF_CVD(cnx_cvd_3, 3)
CNX_DEF_CVD(cnx_cvd_4, 4)
CNX_DEF_CVD(cnx_cvd_5, 5)
CNX_DEF_CVD(cnx_cvd_6, 6)
CNX_DEF_CVD(cnx_cvd_7, 7)
CNX_DEF_CVD(cnx_cvd_8, 8)
CNX_DEF_CVD(cnx_cvd_9, 9)
CNX_DEF_CVD(cnx_cvd_10, 10)
CNX_DEF_CVD(cnx_cvd_11, 11)
CNX_DEF_CVD(cnx_cvd_12, 12)
CNX_DEF_CVD(cnx_cvd_13, 13)
CNX_DEF_CVD(cnx_cvd_14, 14)

/* AVX2: 8 channels (two vectors) by up to 6 positions. */
#define CNX_CVY_MAXP 6

#define CNX_CVY_ROW(i, lo, hi) CNX_CV_ROW(_mm256, i, lo, hi)
#define CNX_CVY_STORE(i, lo, hi) CNX_CV_STORE(_mm256, 4, i, lo, hi)

#define CNX_DEF_CVY(NAME, MRV)                                                 \
    CNX_TARGET_AVX2                                                            \
    static void NAME(int64_t kc, const double *w, const double *b,             \
                     const int64_t *boff, double *c, int accumulate,           \
                     const double *bias) {                                     \
        __m256d r00 = _mm256_setzero_pd(), r01 = _mm256_setzero_pd();          \
        __m256d r10 = _mm256_setzero_pd(), r11 = _mm256_setzero_pd();          \
        __m256d r20 = _mm256_setzero_pd(), r21 = _mm256_setzero_pd();          \
        __m256d r30 = _mm256_setzero_pd(), r31 = _mm256_setzero_pd();          \
        __m256d r40 = _mm256_setzero_pd(), r41 = _mm256_setzero_pd();          \
        __m256d r50 = _mm256_setzero_pd(), r51 = _mm256_setzero_pd();          \
        int64_t k;                                                             \
        enum { MRV_ = MRV };                                                   \
        for (k = 0; k < kc; k++) {                                             \
            const double *bk = b + boff[k];                                    \
            __m256d w0 = _mm256_loadu_pd(w + 8 * k);                           \
            __m256d w1 = _mm256_loadu_pd(w + 8 * k + 4), t;                    \
            CNX_CVY_ROW(0, r00, r01) CNX_CVY_ROW(1, r10, r11)                  \
            CNX_CVY_ROW(2, r20, r21) CNX_CVY_ROW(3, r30, r31)                  \
            CNX_CVY_ROW(4, r40, r41) CNX_CVY_ROW(5, r50, r51)                  \
        }                                                                      \
        CNX_CVY_STORE(0, r00, r01) CNX_CVY_STORE(1, r10, r11)                  \
        CNX_CVY_STORE(2, r20, r21) CNX_CVY_STORE(3, r30, r31)                  \
        CNX_CVY_STORE(4, r40, r41) CNX_CVY_STORE(5, r50, r51)                  \
    }

CNX_DEF_CVY(cnx_cvy_1, 1)
CNX_DEF_CVY(cnx_cvy_2, 2)
CNX_DEF_CVY(cnx_cvy_3, 3)
CNX_DEF_CVY(cnx_cvy_4, 4)
CNX_DEF_CVY(cnx_cvy_5, 5)
CNX_DEF_CVY(cnx_cvy_6, 6)

static void cnx_cvd_shape(int *nch, int *maxp) {
    int isa = cnx_isa_from_env(cnx_detect_isa());
    *nch = isa == 2 ? 16 : isa == 1 ? 8 : 0;
    *maxp = isa == 2 ? CNX_CVD_MAXP : isa == 1 ? CNX_CVY_MAXP : 0;
}

static cnx_cvd cnx_cvd_select(int n) {
    static const cnx_cvd avx512[CNX_CVD_MAXP] = {
        cnx_cvd_1, cnx_cvd_2, cnx_cvd_3, cnx_cvd_4, cnx_cvd_5, cnx_cvd_6, cnx_cvd_7,
        cnx_cvd_8, cnx_cvd_9, cnx_cvd_10, cnx_cvd_11, cnx_cvd_12, cnx_cvd_13, cnx_cvd_14};
    static const cnx_cvd avx2[CNX_CVY_MAXP] = {
        cnx_cvy_1, cnx_cvy_2, cnx_cvy_3, cnx_cvy_4, cnx_cvy_5, cnx_cvy_6};
    int nch, maxp;
    cnx_cvd_shape(&nch, &maxp);
    if (n < 1 || n > maxp) return NULL;
    return nch == 16 ? avx512[n - 1] : avx2[n - 1];
}

#else

static void cnx_cvd_shape(int *nch, int *maxp) { *nch = 0; *maxp = 0; }
static cnx_cvd cnx_cvd_select(int n) { (void)n; return NULL; }

#endif /* CNX_X86 */

#endif /* CNNEXT_CVD_H */
