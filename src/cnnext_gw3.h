/*
 * cnnext: the weight gradient's micro-kernel for taps in threes.
 *
 * The "transposed" weight-gradient schedule (src/_conv.pyx) computes
 * gw^T (K x C_out) = im2col(x) @ g^T with the taps' runs read in place
 * (indirect A: row i of the A panel is a + aoff[i]).  With at most 16
 * output channels (float) the product is one vector wide and the kernel is
 * bound by its A reads: one broadcast per multiply-add, from as many row
 * pointers as rows -- 16 pointers do not fit in the general registers and
 * the spilled ones are reloaded every step.
 *
 * A kernel three taps wide (kW == 3, undilated, stride 1) reads each row
 * of taps from one pointer: rows 3t, 3t+1, 3t+2 start at consecutive
 * elements (aoff[3t] + 0, 1, 2).  This kernel takes 8 such triples (24 rows
 * by one vector): 8 pointers, and 24 accumulators plus the B row in the 32
 * vector registers.  Each element's sum runs over k in the same order as in
 * the other kernels (src/cnnext_ukernel.h), so the results are bitwise
 * the same.
 *
 * cnx_gw3_s_select() returns the kernel, or NULL where AVX-512F is not
 * available (or CNNEXT_ISA asks for less): the caller then keeps the
 * 16-row kernel.
 */
#ifndef CNNEXT_GW3_H
#define CNNEXT_GW3_H

#include "cnnext_ukernel.h"

/* Rows of the A panel of cnx_gw3_s (8 triples of taps). */
#define CNX_GW3_MR 24

#ifdef CNX_X86

#define CNX_GW3_PTR(t) \
    const float *p##t = a + aoff[3 * (t) < mr ? 3 * (t) : 0];
#define CNX_GW3_ZERO(t) \
    __m512 r##t##a = _mm512_setzero_ps(), r##t##b = _mm512_setzero_ps(), \
           r##t##c = _mm512_setzero_ps();
#define CNX_GW3_FMA(t)                                                     \
    r##t##a = _mm512_fmadd_ps(_mm512_set1_ps(p##t[k]), b0, r##t##a);       \
    r##t##b = _mm512_fmadd_ps(_mm512_set1_ps(p##t[k + 1]), b0, r##t##b);   \
    r##t##c = _mm512_fmadd_ps(_mm512_set1_ps(p##t[k + 2]), b0, r##t##c);
#define CNX_GW3_ROW(i, r)                                                  \
    if (mr > (i)) {                                                        \
        float *row_ = c + (int64_t)(i) * ldc;                              \
        if (accumulate)                                                    \
            r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m0, row_));         \
        else if (bias)                                                     \
            r = _mm512_add_ps(r, _mm512_set1_ps(bias[i]));                 \
        _mm512_mask_storeu_ps(row_, m0, r);                                \
    }
#define CNX_GW3_STORE(t)          \
    CNX_GW3_ROW(3 * (t), r##t##a)     \
    CNX_GW3_ROW(3 * (t) + 1, r##t##b) \
    CNX_GW3_ROW(3 * (t) + 2, r##t##c)

/* c[i*ldc + j] (+)= sum_k a[aoff[3*(i/3)] + i%3 + k] * b[k*16 + j] for
 * i < mr (a multiple of 3, at most 24), j < nr <= 16; the cnx_ukr_s
 * signature (boff unused). */
/* GCC's predictive commoning would carry each broadcast over to the next
 * step (p[k + 1] is the next step's p[k]) and spill the carried vectors. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-predictive-commoning")))
#endif
CNX_TARGET_AVX512
static void cnx_gw3_s_avx512(int64_t kc, const float *a, const int64_t *aoff,
                             const float *b, const int64_t *boff, float *c,
                             int64_t ldc, int mr, int nr, int accumulate,
                             const float *bias) {
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : ((1u << nr) - 1u));
    int64_t k;
    CNX_GW3_PTR(0) CNX_GW3_PTR(1) CNX_GW3_PTR(2) CNX_GW3_PTR(3)
    CNX_GW3_PTR(4) CNX_GW3_PTR(5) CNX_GW3_PTR(6) CNX_GW3_PTR(7)
    CNX_GW3_ZERO(0) CNX_GW3_ZERO(1) CNX_GW3_ZERO(2) CNX_GW3_ZERO(3)
    CNX_GW3_ZERO(4) CNX_GW3_ZERO(5) CNX_GW3_ZERO(6) CNX_GW3_ZERO(7)
    (void)boff;
    for (k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(b + k * 16);
        CNX_GW3_FMA(0) CNX_GW3_FMA(1) CNX_GW3_FMA(2) CNX_GW3_FMA(3)
        CNX_GW3_FMA(4) CNX_GW3_FMA(5) CNX_GW3_FMA(6) CNX_GW3_FMA(7)
    }
    CNX_GW3_STORE(0) CNX_GW3_STORE(1) CNX_GW3_STORE(2) CNX_GW3_STORE(3)
    CNX_GW3_STORE(4) CNX_GW3_STORE(5) CNX_GW3_STORE(6) CNX_GW3_STORE(7)
}

#undef CNX_GW3_PTR
#undef CNX_GW3_ZERO
#undef CNX_GW3_FMA
#undef CNX_GW3_ROW
#undef CNX_GW3_STORE

static cnx_ukr_s cnx_gw3_s_select(void) {
    return cnx_isa_from_env(cnx_detect_isa()) == 2 ? cnx_gw3_s_avx512 : NULL;
}

#else

static cnx_ukr_s cnx_gw3_s_select(void) { return NULL; }

#endif /* CNX_X86 */

#endif /* CNNEXT_GW3_H */
