/*
 * cnnext: the float64 weight gradient's micro-kernel for taps in threes.
 *
 * The "transposed" weight-gradient schedule (src/_conv.pyx) computes
 * gw^T (K x C_out) = im2col(x) @ g^T with the taps' runs read in place
 * (indirect A: row i of the A panel is a + aoff[i]).  Its general float64
 * kernel (src/cnnext_ukernel.h) takes 8 rows by two vectors (16 output
 * channels): 16 multiply-adds per step of k for 10 loads, one broadcast
 * per row from as many row pointers.
 *
 * With a kernel three taps wide (kW == 3, undilated, stride 1) rows 3t,
 * 3t+1, 3t+2 start at consecutive elements (aoff[3t] + 0, 1, 2), so one
 * pointer reads three rows.  This kernel takes 4 such triples (12 rows by
 * two vectors): 4 pointers, 24 accumulators, the two B vectors and the
 * broadcast in the 32 vector registers; 24 multiply-adds per step for 14
 * loads.  Each element's sum runs over k in the same order as in the other
 * kernels, so the results are bitwise the same.
 *
 * cnx_gw3_d_select() returns it, or NULL where AVX-512F is not available
 * (or CNNEXT_ISA asks for less): the caller keeps the 8-row kernel.
 */
#ifndef CNNEXT_GW3D_H
#define CNNEXT_GW3D_H

#include "cnnext_ukernel.h"

/* Rows of the A panel of cnx_gw3_d (4 triples of taps). */
#define CNX_GW3D_MR 12

#ifdef CNX_X86

#define CNX_GW3D_PTR(t) \
    const double *p##t = a + aoff[3 * (t) < mr ? 3 * (t) : 0];
#define CNX_GW3D_ZERO(t)                                                   \
    __m512d r##t##a0 = _mm512_setzero_pd(), r##t##a1 = _mm512_setzero_pd(), \
            r##t##b0 = _mm512_setzero_pd(), r##t##b1 = _mm512_setzero_pd(), \
            r##t##c0 = _mm512_setzero_pd(), r##t##c1 = _mm512_setzero_pd();
#define CNX_GW3D_FMA1(t, d, r0, r1)                       \
    s = _mm512_set1_pd(p##t[k + (d)]);                    \
    r0 = _mm512_fmadd_pd(s, b0, r0);                      \
    r1 = _mm512_fmadd_pd(s, b1, r1);
#define CNX_GW3D_FMA(t)                            \
    CNX_GW3D_FMA1(t, 0, r##t##a0, r##t##a1)        \
    CNX_GW3D_FMA1(t, 1, r##t##b0, r##t##b1)        \
    CNX_GW3D_FMA1(t, 2, r##t##c0, r##t##c1)
#define CNX_GW3D_ROW(i, r0, r1)                                            \
    if (mr > (i)) {                                                        \
        double *row_ = c + (int64_t)(i) * ldc;                             \
        if (accumulate) {                                                  \
            r0 = _mm512_add_pd(r0, _mm512_maskz_loadu_pd(m0, row_));       \
            r1 = _mm512_add_pd(r1, _mm512_maskz_loadu_pd(m1, row_ + 8));   \
        } else if (bias) {                                                 \
            r0 = _mm512_add_pd(r0, _mm512_set1_pd(bias[i]));               \
            r1 = _mm512_add_pd(r1, _mm512_set1_pd(bias[i]));               \
        }                                                                  \
        _mm512_mask_storeu_pd(row_, m0, r0);                               \
        _mm512_mask_storeu_pd(row_ + 8, m1, r1);                           \
    }
#define CNX_GW3D_STORE(t)                               \
    CNX_GW3D_ROW(3 * (t), r##t##a0, r##t##a1)           \
    CNX_GW3D_ROW(3 * (t) + 1, r##t##b0, r##t##b1)       \
    CNX_GW3D_ROW(3 * (t) + 2, r##t##c0, r##t##c1)

/* c[i*ldc + j] (+)= sum_k a[aoff[3*(i/3)] + i%3 + k] * b[k*16 + j] for
 * i < mr (a multiple of 3, at most 12), j < nr <= 16; the cnx_ukr_d
 * signature (boff unused). */
/* GCC's predictive commoning would carry each broadcast over to the next
 * step (p[k + 1] is the next step's p[k]) and spill the carried vectors. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-predictive-commoning")))
#endif
CNX_TARGET_AVX512
static void cnx_gw3_d_avx512(int64_t kc, const double *a, const int64_t *aoff,
                             const double *b, const int64_t *boff, double *c,
                             int64_t ldc, int mr, int nr, int accumulate,
                             const double *bias) {
    __mmask8 m0 = (__mmask8)(nr >= 8 ? 0xFF : ((1u << nr) - 1u));
    __mmask8 m1 = (__mmask8)(nr <= 8 ? 0 : (nr >= 16 ? 0xFF : ((1u << (nr - 8)) - 1u)));
    int64_t k;
    CNX_GW3D_PTR(0) CNX_GW3D_PTR(1) CNX_GW3D_PTR(2) CNX_GW3D_PTR(3)
    CNX_GW3D_ZERO(0) CNX_GW3D_ZERO(1) CNX_GW3D_ZERO(2) CNX_GW3D_ZERO(3)
    (void)boff;
    for (k = 0; k < kc; k++) {
        __m512d b0 = _mm512_loadu_pd(b + k * 16), b1 = _mm512_loadu_pd(b + k * 16 + 8), s;
        CNX_GW3D_FMA(0) CNX_GW3D_FMA(1) CNX_GW3D_FMA(2) CNX_GW3D_FMA(3)
    }
    CNX_GW3D_STORE(0) CNX_GW3D_STORE(1) CNX_GW3D_STORE(2) CNX_GW3D_STORE(3)
}

#undef CNX_GW3D_PTR
#undef CNX_GW3D_ZERO
#undef CNX_GW3D_FMA1
#undef CNX_GW3D_FMA
#undef CNX_GW3D_ROW
#undef CNX_GW3D_STORE

static cnx_ukr_d cnx_gw3_d_select(void) {
    return cnx_isa_from_env(cnx_detect_isa()) == 2 ? cnx_gw3_d_avx512 : NULL;
}

#else

static cnx_ukr_d cnx_gw3_d_select(void) { return NULL; }

#endif /* CNX_X86 */

#endif /* CNNEXT_GW3D_H */
