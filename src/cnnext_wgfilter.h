/*
 * Winograd F(2x2, 3x3) filter transform, a micro-kernel panel's filters at
 * a time (AVX-512F: 8; AVX2: up to 8, as two halves of 4 doubles).
 *
 * For the filters w_l = w + l*rs (3x3 floats, l < nvalid; rotated by 180
 * degrees when `adjoint`), stores dst[xi*ld + l] = (G w_l G^T)[xi] for
 * the 16 points xi and l < lanes (lanes l >= nvalid: zeros), with
 *     G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
 * in float64, rounded once to float32: lane by lane the operations of the
 * scalar transform of src/_winograd.pyx (g_apply), in the same order, so
 * the results are the same bits.  The lanes are the output channels of
 * one micro-kernel panel, adjacent in the packed filters.
 *
 * cnx_wg_filter(mr) is NULL where the CPU (or CNNEXT_ISA) has neither
 * AVX-512F with 8-row panels nor AVX2 with at most 8.
 */
#ifndef CNNEXT_WGFILTER_H
#define CNNEXT_WGFILTER_H

#include <stdint.h>
#include "cnnext_ukernel.h"

typedef void (*cnx_wg_filter_fn)(const float *w, int64_t rs, int nvalid, int adjoint,
                                 float *dst, int64_t ld, int lanes);

#ifdef CNX_X86
/* Products by 1/2 are exact, so even a fused multiply-add could not change
 * a result; only adds, subtracts and those products are used. */
CNX_TARGET_AVX512 static void cnx_wg_filter8_avx512(const float *w, int64_t rs, int nvalid,
                                                    int adjoint, float *dst, int64_t ld,
                                                    int lanes) {
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
    (void)lanes; /* 8 */
}

/* The AVX-512 function's operations on two halves of four lanes; the
 * filters are read by scalar loads into vectors (AVX2's gathers take a few
 * cycles per element on some CPUs, and vector loads of scalars just stored
 * stall on store forwarding). */
CNX_TARGET_AVX2 static inline void cnx_wg_filter_half_avx2(const float *w, int64_t rs,
                                                           int nvalid, int adjoint,
                                                           __m256d t[12]) {
    const __m256d h = _mm256_set1_pd(0.5);
    static const float zeros[9];
    const float *p[4];
    __m256d wd[9];
    int i, l;
    for (l = 0; l < 4; l++) p[l] = l < nvalid ? w + l * rs : zeros;
    for (i = 0; i < 9; i++) {
        int k = adjoint ? 8 - i : i;
        wd[i] = _mm256_cvtps_pd(_mm_setr_ps(p[0][k], p[1][k], p[2][k], p[3][k]));
    }
    for (i = 0; i < 3; i++) { /* columns: t (4, 3) = G wd */
        t[i] = wd[i];
        t[3 + i] = _mm256_mul_pd(h, _mm256_add_pd(_mm256_add_pd(wd[i], wd[3 + i]), wd[6 + i]));
        t[6 + i] = _mm256_mul_pd(h, _mm256_add_pd(_mm256_sub_pd(wd[i], wd[3 + i]), wd[6 + i]));
        t[9 + i] = wd[6 + i];
    }
}

CNX_TARGET_AVX2 static void cnx_wg_filter_avx2(const float *w, int64_t rs, int nvalid,
                                               int adjoint, float *dst, int64_t ld, int lanes) {
    const __m256d h = _mm256_set1_pd(0.5);
    __m256d lo[12], hi[12];
    int i, k;
    cnx_wg_filter_half_avx2(w, rs, nvalid, adjoint, lo);
    /* lanes 4..: zeros, reading nothing of w, when nvalid <= 4 */
    cnx_wg_filter_half_avx2(nvalid > 4 ? w + 4 * rs : w, rs, nvalid - 4, adjoint, hi);
    for (i = 0; i < 4; i++) { /* rows: (G wd) G^T */
        __m256 u[4];
        for (k = 0; k < 2; k++) {
            const __m256d *t = k ? hi : lo;
            const __m256d a = t[3 * i], b = t[3 * i + 1], c = t[3 * i + 2];
            __m128 r0 = _mm256_cvtpd_ps(a), r3 = _mm256_cvtpd_ps(c);
            __m128 r1 = _mm256_cvtpd_ps(_mm256_mul_pd(h, _mm256_add_pd(_mm256_add_pd(a, b), c)));
            __m128 r2 = _mm256_cvtpd_ps(_mm256_mul_pd(h, _mm256_add_pd(_mm256_sub_pd(a, b), c)));
            if (k == 0) {
                u[0] = _mm256_castps128_ps256(r0); u[1] = _mm256_castps128_ps256(r1);
                u[2] = _mm256_castps128_ps256(r2); u[3] = _mm256_castps128_ps256(r3);
            } else {
                u[0] = _mm256_insertf128_ps(u[0], r0, 1); u[1] = _mm256_insertf128_ps(u[1], r1, 1);
                u[2] = _mm256_insertf128_ps(u[2], r2, 1); u[3] = _mm256_insertf128_ps(u[3], r3, 1);
            }
        }
        for (k = 0; k < 4; k++) {
            if (lanes == 8) _mm256_storeu_ps(dst + (4 * i + k) * ld, u[k]);
            else cnx_store_part_ps(dst + (4 * i + k) * ld, u[k], lanes);
        }
    }
}
#endif

/* The transform for panels of `mr` rows, or NULL. */
static cnx_wg_filter_fn cnx_wg_filter(int64_t mr) {
#ifdef CNX_X86
    int isa = cnx_isa_from_env(cnx_detect_isa());
    if (isa == 2 && mr == 8) return cnx_wg_filter8_avx512;
    if (isa >= 1 && mr <= 8) return cnx_wg_filter_avx2;
#endif
    (void)mr;
    return NULL;
}

#endif /* CNNEXT_WGFILTER_H */
