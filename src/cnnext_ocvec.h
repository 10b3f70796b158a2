/*
 * cnnext: a direct AVX-512 float32 convolution with the result channels in
 * the vector lanes, for layers at column stride 2 whose result rows are
 * short.
 *
 * The fused-im2col kernels put result positions in the lanes: a strided
 * layer's rows of 7 or 14 results fill 7 or 14 of 16 lanes and read their
 * taps from the sample's stride phases.  Here a block of NW <= 7
 * consecutive results of one row times 4 vectors of 16 result channels is
 * kept in 4*NW <= 28 accumulators; each tap k (channel c, kernel row i,
 * column j) loads the 4 weight vectors of the tap and broadcasts the NW
 * inputs it multiplies (the zero-padded sample's row at sh*oh + i*dh,
 * columns 2*ow + j*dw), 4*NW multiply-adds for NW + 4 loads.
 *
 * Bits: each block of taps [k0, k1) (KC taps at a time, as the GEMM
 * kernels) is summed from zero in tap order with one multiply-add per
 * tap; the first block gets the bias added, the others are added to the
 * stored partial sums: the same operations in the same order as the
 * fused-im2col kernels, so the same results.
 */
#ifndef CNNEXT_OCVEC_H
#define CNNEXT_OCVEC_H

#include "cnnext_ukernel.h"

/* Results of one block: acc[q][v] is position ow0 + q (x points at its
 * first tap's input; position q's is 2q further), channels 16v .. 16v + 15,
 * stored at s[q*lds + 16v]; `first`: add the bias (bias[16v + l], nothing
 * when NULL) and store, else add to s. */
typedef void (*cnx_ocv_fn)(const float *x, const int64_t *toff, int64_t k0, int64_t k1,
                           const float *wp, int64_t ldw, const float *bias, float *s,
                           int64_t lds, int first);

#ifdef CNX_X86

/* NW positions by 4 vectors of result channels: 4*NW <= 28 accumulators. */
CNX_TARGET_AVX512
static inline __attribute__((always_inline)) void
cnx_ocv_block(const float *x, const int64_t *toff, int64_t k0, int64_t k1, const float *wp,
              int64_t ldw, const float *bias, float *s, int64_t lds, int first, const int NW) {
    __m512 acc[7][4];
    int q, v;
    int64_t k;
#pragma GCC unroll 7
    for (q = 0; q < NW; q++)
#pragma GCC unroll 4
        for (v = 0; v < 4; v++)
            acc[q][v] = _mm512_setzero_ps();
    for (k = k0; k < k1; k++) {
        const float *xk = x + toff[k];
        const float *wk = wp + k * ldw;
        __m512 w[4];
#pragma GCC unroll 4
        for (v = 0; v < 4; v++)
            w[v] = _mm512_loadu_ps(wk + 16 * v);
#pragma GCC unroll 7
        for (q = 0; q < NW; q++) {
            __m512 b = _mm512_set1_ps(xk[2 * q]);
#pragma GCC unroll 4
            for (v = 0; v < 4; v++)
                acc[q][v] = _mm512_fmadd_ps(b, w[v], acc[q][v]);
        }
    }
#pragma GCC unroll 7
    for (q = 0; q < NW; q++)
#pragma GCC unroll 4
        for (v = 0; v < 4; v++) {
            float *d = s + q * lds + 16 * v;
            __m512 r = acc[q][v];
            if (!first)
                r = _mm512_add_ps(r, _mm512_loadu_ps(d));
            else if (bias)
                r = _mm512_add_ps(r, _mm512_loadu_ps(bias + 16 * v));
            _mm512_storeu_ps(d, r);
        }
}

#define CNX_OCV_DEF(NW)                                                               \
    CNX_TARGET_AVX512 static void cnx_ocv_##NW(                                       \
        const float *x, const int64_t *toff, int64_t k0, int64_t k1, const float *wp, \
        int64_t ldw, const float *bias, float *s, int64_t lds, int first) {           \
        cnx_ocv_block(x, toff, k0, k1, wp, ldw, bias, s, lds, first, NW);             \
    }
CNX_OCV_DEF(1) CNX_OCV_DEF(2) CNX_OCV_DEF(3) CNX_OCV_DEF(4) CNX_OCV_DEF(5) CNX_OCV_DEF(6)
CNX_OCV_DEF(7)
#undef CNX_OCV_DEF

/* The kernel of NW (1 .. 7) positions; NULL without AVX-512F. */
static cnx_ocv_fn cnx_ocv_select(int NW) {
    static const cnx_ocv_fn fns[7] = {cnx_ocv_1, cnx_ocv_2, cnx_ocv_3, cnx_ocv_4,
                                      cnx_ocv_5, cnx_ocv_6, cnx_ocv_7};
    if (cnx_isa_from_env(cnx_detect_isa()) < 2 || NW < 1 || NW > 7)
        return NULL;
    return fns[NW - 1];
}

#else /* not x86: never selected */

static cnx_ocv_fn cnx_ocv_select(int NW) {
    (void)NW;
    return NULL;
}

#endif
#endif
