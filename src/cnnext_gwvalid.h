/*
 * cnnext: the weight gradient's micro-kernel over valid positions only.
 *
 * The "transposed" weight-gradient schedule (src/_conv.pyx) computes
 * gw^T (K x C_out) = im2col(x) @ g^T over blocks of padded-width
 * positions p = oh*Wq + ow of the prepared sample, reading each tap's run
 * in place (indirect A: row i of the A panel is a + aoff[i]).  The
 * Wq - OW junk columns of each output row (the padding and the kernel's
 * overhang: 4 of 36 for a 5x5 kernel with padding 2 on a 32-wide map)
 * are multiplied by a zero gradient: 11% of that product is wasted there.
 *
 * This kernel walks the block's positions row by row and multiplies only
 * the valid ones (ow < OW), its B panel holding the gradient at those
 * positions only (consecutive in the gradient's own OH x OW layout: a
 * plain transposing copy).  An AVX-512F tile of 8 taps by 2 vectors of
 * output channels (8 x 32), as cnx_ukr_s_avx512_inda; each element's sum
 * runs over the valid positions in the same order as there, which only
 * leaves out the zero products of the junk columns.
 *
 * cnx_gwvalid_s_select() returns it, or NULL where AVX-512F is not
 * available (or CNNEXT_ISA asks for less): the caller then keeps the
 * padded-width kernels.
 */
#ifndef CNNEXT_GWVALID_H
#define CNNEXT_GWVALID_H

#include "cnnext_ukernel.h"

/* c[i*ldc + j] (+)= sum_q a[aoff[i] + q] * b[v(q)*32 + j] for i < mr <= 8,
 * j < nr <= 32, over the valid positions q < kc of a block whose first
 * position is column ow0 of an output row of Wq padded-width columns (q is
 * valid when its column is below OW; v(q) counts the valid positions before
 * it). */
typedef void (*cnx_gwvalid_s)(int64_t kc, const float *a, const int64_t *aoff,
                              const float *b, int64_t ow0, int64_t OW, int64_t Wq,
                              float *c, int64_t ldc, int mr, int nr, int accumulate);

#ifdef CNX_X86

#define T float
#define CNX_GWV_AEL(MR_, i) pa_[i][k]
CNX_TARGET_AVX512
static void cnx_gwvalid_s_avx512(int64_t kc, const float *a, const int64_t *aoff,
                                 const float *b, int64_t ow0, int64_t OW, int64_t Wq,
                                 float *c, int64_t ldc, int mr, int nr, int accumulate) {
    __m512 r00 = _mm512_setzero_ps(), r01 = _mm512_setzero_ps();
    __m512 r10 = _mm512_setzero_ps(), r11 = _mm512_setzero_ps();
    __m512 r20 = _mm512_setzero_ps(), r21 = _mm512_setzero_ps();
    __m512 r30 = _mm512_setzero_ps(), r31 = _mm512_setzero_ps();
    __m512 r40 = _mm512_setzero_ps(), r41 = _mm512_setzero_ps();
    __m512 r50 = _mm512_setzero_ps(), r51 = _mm512_setzero_ps();
    __m512 r60 = _mm512_setzero_ps(), r61 = _mm512_setzero_ps();
    __m512 r70 = _mm512_setzero_ps(), r71 = _mm512_setzero_ps();
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : ((1u << nr) - 1u));
    __mmask16 m1 = (__mmask16)(nr <= 16 ? 0 : (nr >= 32 ? 0xFFFF : ((1u << (nr - 16)) - 1u)));
    const float *bias = NULL;
    const float *bk = b;
    int64_t q = 0, ow = ow0, k;
    enum { MRV_ = 8 };
    const float *pa_[8];
    {
        int i_;
        for (i_ = 0; i_ < 8; i_++) pa_[i_] = a + aoff[i_ < mr ? i_ : 0];
    }
    while (q < kc) { /* positions [q, q + run) lie in one output row */
        int64_t run = Wq - ow < kc - q ? Wq - ow : kc - q;
        int64_t end = q + (OW - ow < run ? OW - ow : run);
        for (k = q; k < end; k++) {
            __m512 b0 = _mm512_loadu_ps(bk), b1 = _mm512_loadu_ps(bk + 16), t;
            bk += 32;
#define AEL CNX_GWV_AEL
            CNX_Z_ROW(ps, 0, r00, r01) CNX_Z_ROW(ps, 1, r10, r11)
            CNX_Z_ROW(ps, 2, r20, r21) CNX_Z_ROW(ps, 3, r30, r31)
            CNX_Z_ROW(ps, 4, r40, r41) CNX_Z_ROW(ps, 5, r50, r51)
            CNX_Z_ROW(ps, 6, r60, r61) CNX_Z_ROW(ps, 7, r70, r71)
#undef AEL
        }
        q += run;
        ow = 0;
    }
    CNX_Z_STORE(ps, float, 0, r00, r01, 16) CNX_Z_STORE(ps, float, 1, r10, r11, 16)
    CNX_Z_STORE(ps, float, 2, r20, r21, 16) CNX_Z_STORE(ps, float, 3, r30, r31, 16)
    CNX_Z_STORE(ps, float, 4, r40, r41, 16) CNX_Z_STORE(ps, float, 5, r50, r51, 16)
    CNX_Z_STORE(ps, float, 6, r60, r61, 16) CNX_Z_STORE(ps, float, 7, r70, r71, 16)
}
#undef CNX_GWV_AEL
#undef T

static cnx_gwvalid_s cnx_gwvalid_s_select(void) {
    return cnx_isa_from_env(cnx_detect_isa()) == 2 ? cnx_gwvalid_s_avx512 : NULL;
}

#else

static cnx_gwvalid_s cnx_gwvalid_s_select(void) { return NULL; }

#endif /* CNX_X86 */

#endif /* CNNEXT_GWVALID_H */
