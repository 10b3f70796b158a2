/*
 * Winograd F(2x2, 3x3) filter transform, a micro-kernel panel's filters at
 * a time (AVX-512F: 8; AVX2: up to 8, as two halves of 4 doubles), and the
 * weight gradient's last step, G^T dU G (see cnx_wg_filter_grad_one).
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
 * Returns nonzero when one of the filters' values is inf or NaN (tested as
 * they are loaded: x - x is +0 for every finite x, NaN otherwise).
 *
 * cnx_wg_filter(mr) is NULL where the CPU (or CNNEXT_ISA) has neither
 * AVX-512F with 8-row panels nor AVX2 with at most 8.
 */
#ifndef CNNEXT_WGFILTER_H
#define CNNEXT_WGFILTER_H

#include <stdint.h>
#include "cnnext_ukernel.h"

typedef int (*cnx_wg_filter_fn)(const float *w, int64_t rs, int nvalid, int adjoint,
                                float *dst, int64_t ld, int lanes);

#ifdef CNX_X86
/* Products by 1/2 are exact, so even a fused multiply-add could not change
 * a result; only adds, subtracts and those products are used. */
CNX_TARGET_AVX512 static int cnx_wg_filter8_avx512(const float *w, int64_t rs, int nvalid,
                                                   int adjoint, float *dst, int64_t ld,
                                                   int lanes) {
    const __m512d h = _mm512_set1_pd(0.5);
    const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                           _mm256_set1_epi32((int)rs));
    const __m256 m = _mm256_castsi256_ps(_mm256_cmpgt_epi32(
        _mm256_set1_epi32(nvalid), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    __m512d wd[9], t[12];
    __m256 bad = _mm256_setzero_ps();
    int i;
    for (i = 0; i < 9; i++) {
        const float *src = w + (adjoint ? 8 - i : i);
        __m256 v = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, idx, m, 4);
        bad = _mm256_or_ps(bad, _mm256_sub_ps(v, v));
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
    return !_mm256_testz_si256(_mm256_castps_si256(bad), _mm256_castps_si256(bad));
}

/* The AVX-512 function's operations on two halves of four lanes; the
 * filters are read by scalar loads into vectors (AVX2's gathers take a few
 * cycles per element on some CPUs, and vector loads of scalars just stored
 * stall on store forwarding). */
CNX_TARGET_AVX2 static inline __m128 cnx_wg_filter_half_avx2(const float *w, int64_t rs,
                                                             int nvalid, int adjoint,
                                                             __m256d t[12]) {
    const __m256d h = _mm256_set1_pd(0.5);
    static const float zeros[9];
    const float *p[4];
    __m256d wd[9];
    __m128 bad = _mm_setzero_ps();
    int i, l;
    for (l = 0; l < 4; l++) p[l] = l < nvalid ? w + l * rs : zeros;
    for (i = 0; i < 9; i++) {
        int k = adjoint ? 8 - i : i;
        __m128 v = _mm_setr_ps(p[0][k], p[1][k], p[2][k], p[3][k]);
        bad = _mm_or_ps(bad, _mm_sub_ps(v, v));
        wd[i] = _mm256_cvtps_pd(v);
    }
    for (i = 0; i < 3; i++) { /* columns: t (4, 3) = G wd */
        t[i] = wd[i];
        t[3 + i] = _mm256_mul_pd(h, _mm256_add_pd(_mm256_add_pd(wd[i], wd[3 + i]), wd[6 + i]));
        t[6 + i] = _mm256_mul_pd(h, _mm256_add_pd(_mm256_sub_pd(wd[i], wd[3 + i]), wd[6 + i]));
        t[9 + i] = wd[6 + i];
    }
    return bad;
}

CNX_TARGET_AVX2 static int cnx_wg_filter_avx2(const float *w, int64_t rs, int nvalid,
                                              int adjoint, float *dst, int64_t ld, int lanes) {
    const __m256d h = _mm256_set1_pd(0.5);
    __m256d lo[12], hi[12];
    int i, k;
    __m128 bad = cnx_wg_filter_half_avx2(w, rs, nvalid, adjoint, lo);
    /* lanes 4..: zeros, reading nothing of w, when nvalid <= 4 */
    bad = _mm_or_ps(bad, cnx_wg_filter_half_avx2(nvalid > 4 ? w + 4 * rs : w, rs, nvalid - 4,
                                                 adjoint, hi));
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
    return _mm_movemask_ps(_mm_cmpunord_ps(bad, bad)) != 0;
}
#endif

/* The weight gradient's last step, one input channel (cnx_wg_filter_grad_one)
 * or one output channel's C of them (cnx_wg_filter_grad_avx512):
 * gw[9c + 3i + j] = (G^T u G)[i, j] with u (4 x 4) = the float64 sum, in
 * order t = 0, 1, .., nt - 1, of dup[t*ts + xi*xs + c] (the 16 points xi
 * of the nt partials), G^T applied down the columns of u first, then
 * along the rows, rounded once (G^T's products are by 1/2, exact: a fused
 * multiply-add could not change a result).  AVX-512: 8 input channels at
 * a time, lane by lane the operations of the one-channel function in the
 * same order (the same bits), their 72 results gathered in order from the
 * 9 vectors of a small buffer; the last C % 8 one at a time.  Both return
 * nonzero when a result is inf or NaN. */
static inline void cnx_wg_gt(const double *u, int64_t s, double *t, int64_t ts) {
    t[0] = u[0] + 0.5 * (u[s] + u[2 * s]);
    t[ts] = 0.5 * (u[s] - u[2 * s]);
    t[2 * ts] = 0.5 * (u[s] + u[2 * s]) + u[3 * s];
}

static int cnx_wg_filter_grad_one(const float *dup, int64_t nt, int64_t ts, int64_t xs,
                                  float *gw) {
    double u[16], t[12], r[9];
    int xi, i, bad = 0;
    int64_t tt;
    for (xi = 0; xi < 16; xi++) {
        u[xi] = dup[xi * xs];
        for (tt = 1; tt < nt; tt++) u[xi] += dup[tt * ts + xi * xs];
    }
    for (i = 0; i < 4; i++) cnx_wg_gt(&u[i], 4, &t[i], 4);  /* columns: t (3, 4) */
    for (i = 0; i < 3; i++) cnx_wg_gt(&t[4 * i], 1, &r[3 * i], 1);  /* rows: r (3, 3) */
    for (i = 0; i < 9; i++) {
        float v = (float)r[i];
        gw[i] = v;
        bad |= (v - v) != 0.0f;
    }
    return bad;
}

#ifdef CNX_X86
/* Element e < 72 of 8 input channels' results (9 per channel) is at
 * buf[8*(e % 9) + e / 9] of the 9 vectors of 8 lanes. */
static const int32_t CNX_WG_FG_IDX[72] = {
#define CNX_FG9(e) 8 * ((e) % 9) + (e) / 9
#define CNX_FG8(e) CNX_FG9(e), CNX_FG9(e + 1), CNX_FG9(e + 2), CNX_FG9(e + 3), \
    CNX_FG9(e + 4), CNX_FG9(e + 5), CNX_FG9(e + 6), CNX_FG9(e + 7)
    CNX_FG8(0), CNX_FG8(8), CNX_FG8(16), CNX_FG8(24), CNX_FG8(32), CNX_FG8(40),
    CNX_FG8(48), CNX_FG8(56), CNX_FG8(64)
#undef CNX_FG8
#undef CNX_FG9
};

CNX_TARGET_AVX512 static int cnx_wg_filter_grad_avx512(const float *dup, int64_t nt,
                                                       int64_t ts, int64_t xs, int64_t C,
                                                       float *gw) {
    const __m512d h = _mm512_set1_pd(0.5);
    __m512i bad = _mm512_setzero_si512();
    float buf[72];
    int64_t c = 0, tt;
    int xi, i, q, flag;
    for (; c + 8 <= C; c += 8) {
        __m512d u[16], t[12];
        for (xi = 0; xi < 16; xi++) {
            u[xi] = _mm512_cvtps_pd(_mm256_loadu_ps(dup + xi * xs + c));
            for (tt = 1; tt < nt; tt++)
                u[xi] = _mm512_add_pd(u[xi], _mm512_cvtps_pd(_mm256_loadu_ps(
                                                 dup + tt * ts + xi * xs + c)));
        }
        for (i = 0; i < 4; i++) { /* columns: t[4j + i] */
            __m512d s12 = _mm512_mul_pd(h, _mm512_add_pd(u[4 + i], u[8 + i]));
            t[i] = _mm512_add_pd(u[i], s12);
            t[4 + i] = _mm512_mul_pd(h, _mm512_sub_pd(u[4 + i], u[8 + i]));
            t[8 + i] = _mm512_add_pd(s12, u[12 + i]);
        }
        for (i = 0; i < 3; i++) { /* rows: r[3i + j], lane l at buf[8*(3i + j) + l] */
            __m512d s12 = _mm512_mul_pd(h, _mm512_add_pd(t[4 * i + 1], t[4 * i + 2]));
            _mm256_storeu_ps(buf + 24 * i, _mm512_cvtpd_ps(_mm512_add_pd(t[4 * i], s12)));
            _mm256_storeu_ps(buf + 24 * i + 8, _mm512_cvtpd_ps(
                _mm512_mul_pd(h, _mm512_sub_pd(t[4 * i + 1], t[4 * i + 2]))));
            _mm256_storeu_ps(buf + 24 * i + 16, _mm512_cvtpd_ps(_mm512_add_pd(s12, t[4 * i + 3])));
        }
        for (q = 0; q < 72; q += 16) {
            __mmask16 m = q + 16 <= 72 ? (__mmask16)0xFFFF : (__mmask16)0xFF;
            __m512 v = _mm512_mask_i32gather_ps(
                _mm512_setzero_ps(), m, _mm512_maskz_loadu_epi32(m, CNX_WG_FG_IDX + q), buf, 4);
            bad = _mm512_or_si512(bad, _mm512_castps_si512(_mm512_sub_ps(v, v)));
            _mm512_mask_storeu_ps(gw + 9 * c + q, m, v);
        }
    }
    flag = _mm512_test_epi32_mask(bad, bad) != 0;
    for (; c < C; c++) flag |= cnx_wg_filter_grad_one(dup + c, nt, ts, xs, gw + 9 * c);
    return flag;
}
#endif

/* cnx_wg_filter_grad_avx512 where the CPU has AVX-512F, else NULL. */
typedef int (*cnx_wg_filter_grad_fn)(const float *dup, int64_t nt, int64_t ts, int64_t xs,
                                     int64_t C, float *gw);
static cnx_wg_filter_grad_fn cnx_wg_filter_grad(void) {
#ifdef CNX_X86
    if (cnx_isa_from_env(cnx_detect_isa()) == 2) return cnx_wg_filter_grad_avx512;
#endif
    return NULL;
}

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
