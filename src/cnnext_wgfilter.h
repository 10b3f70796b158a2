/*
 * Winograd F(2x2, 3x3) filter transform, eight filters at a time (AVX-512F).
 *
 * For the filters w_l = w + l*rs (3x3 floats, l < nvalid; rotated by 180
 * degrees when `adjoint`), stores dst[xi*ld + l] = (G w_l G^T)[xi] for
 * the 16 points xi and l < 8 (lanes l >= nvalid: zeros), with
 *     G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
 * in float64, rounded once to float32: lane by lane the operations of the
 * scalar transform of src/_winograd.pyx (g_apply), in the same order, so
 * the results are the same bits.  The eight lanes are the eight output
 * channels of one micro-kernel panel, adjacent in the packed filters.
 *
 * cnx_wg_filter8() is NULL where the CPU (or CNNEXT_ISA) has no AVX-512F.
 */
#ifndef CNNEXT_WGFILTER_H
#define CNNEXT_WGFILTER_H

#include <stdint.h>
#include "cnnext_ukernel.h"

typedef void (*cnx_wg_filter8_fn)(const float *w, int64_t rs, int nvalid, int adjoint,
                                  float *dst, int64_t ld);

#ifdef CNX_X86
/* Products by 1/2 are exact, so even a fused multiply-add could not change
 * a result; only adds, subtracts and those products are used. */
CNX_TARGET_AVX512 static void cnx_wg_filter8_avx512(const float *w, int64_t rs, int nvalid,
                                                    int adjoint, float *dst, int64_t ld) {
    const __m512d h = _mm512_set1_pd(0.5);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32((int)rs));
    const __m256 m = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
        _mm256_set1_epi32(nvalid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    __m512d wd[9], t[12];
    int i;
    for (i = 0; i < 9; i++) {
        const float *src = w + (adjoint ? 8 - i : i);
        __m256 v = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, idx, m, 4);
        wd[i] = _mm512_cvtps_pd(v);
    }
    for (i = 0; i < 3; i++) { /* columns: t (4, 3) = G wd */
        t[i] = wd[i];
        t[3 + i] = _mm512_mul_pd(h, _mm512_add_pd(_mm512_add_pd(wd[i], wd[3 + i]), wd[6 + i]));
        t[6 + i] = _mm512_mul_pd(h, _mm512_add_pd(_mm512_sub_pd(wd[i], wd[3 + i]), wd[6 + i]));
        t[9 + i] = wd[6 + i];
    }
    for (i = 0; i < 4; i++) { /* rows: (G wd) G^T */
        const __m512d a = t[3 * i], b = t[3 * i + 1], c = t[3 * i + 2];
        __m512d u1 = _mm512_mul_pd(h, _mm512_add_pd(_mm512_add_pd(a, b), c));
        __m512d u2 = _mm512_mul_pd(h, _mm512_add_pd(_mm512_sub_pd(a, b), c));
        _mm256_storeu_ps(dst + (4 * i) * ld, _mm512_cvtpd_ps(a));
        _mm256_storeu_ps(dst + (4 * i + 1) * ld, _mm512_cvtpd_ps(u1));
        _mm256_storeu_ps(dst + (4 * i + 2) * ld, _mm512_cvtpd_ps(u2));
        _mm256_storeu_ps(dst + (4 * i + 3) * ld, _mm512_cvtpd_ps(c));
    }
}
#endif

static cnx_wg_filter8_fn cnx_wg_filter8(void) {
#ifdef CNX_X86
    if (cnx_isa_from_env(cnx_detect_isa()) == 2) return cnx_wg_filter8_avx512;
#endif
    return NULL;
}

#endif /* CNNEXT_WGFILTER_H */
