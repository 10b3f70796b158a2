/*
 * Max pooling's common window, 2x2 at stride 2 without padding, one output
 * row at a time, with AVX-512 intrinsics (runtime dispatch: the GEMM
 * micro-kernels' instruction-set choice, CNNEXT_ISA included).
 *
 * A row of OW outputs reads 2*OW values of each of its two input rows; 16
 * (float) or 8 (double) outputs a step, the last step masked, the even and
 * odd columns split by permutes.  The taps are taken in row-major order with
 * src/_pool.pyx's rule -- a value replaces the running maximum when it is
 * strictly greater or NaN -- so values, argmax indices, -0.0 and NaN are
 * those of the portable loops (_max_2x2, _max_2x2_values), which run when
 * these return 0 (no AVX-512).  Rows of a few outputs (LeNet's 14 and 5)
 * would otherwise leave a compiled loop all scalar tail.
 */
#ifndef CNNEXT_POOL_H
#define CNNEXT_POOL_H

#include <stdint.h>
#include "cnnext_ukernel.h"

#if defined(CNX_X86) && !(defined(_MSC_VER) && !defined(__clang__))

/* 1 when the AVX-512 row kernels run on this CPU (and CNNEXT_ISA allows). */
static int cnx_pool_avx512(void) { return cnx_isa_from_env(cnx_detect_isa()) == 2; }

/* take: v replaces the running maximum mo (strictly greater, or NaN). */
#define CNX_POOL_TAKE_S(v, mo)                                                 \
    (_mm512_cmp_ps_mask((v), (mo), _CMP_GT_OQ) | _mm512_cmp_ps_mask((v), (v), _CMP_UNORD_Q))
#define CNX_POOL_TAKE_D(v, mo)                                                 \
    (_mm512_cmp_pd_mask((v), (mo), _CMP_GT_OQ) | _mm512_cmp_pd_mask((v), (v), _CMP_UNORD_Q))

/* Output row m[0:OW] (and idx[0:OW] = flat plane positions, base = the
 * row's first input position, when idx is not NULL) of input rows r0 and
 * r0 + W. */
CNX_TARGET_AVX512
static void cnx_pool2x2_s(const float *r0, int64_t W, float *m, int64_t *idx, int64_t OW,
                          int64_t base) {
    const float *r1 = r0 + W;
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                         28, 30);
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    int64_t ow;
    for (ow = 0; ow < OW; ow += 16) {
        int64_t n = OW - ow < 16 ? OW - ow : 16, n2 = 2 * n;
        __mmask16 mk = (__mmask16)(n == 16 ? 0xFFFF : (1u << n) - 1u);
        __mmask16 ml = (__mmask16)(n2 >= 16 ? 0xFFFF : (1u << n2) - 1u);
        __mmask16 mh = (__mmask16)(n2 >= 32 ? 0xFFFF : n2 > 16 ? (1u << (n2 - 16)) - 1u : 0);
        __m512 a0 = _mm512_maskz_loadu_ps(ml, r0 + 2 * ow);
        __m512 a1 = _mm512_maskz_loadu_ps(mh, r0 + 2 * ow + 16);
        __m512 b0 = _mm512_maskz_loadu_ps(ml, r1 + 2 * ow);
        __m512 b1 = _mm512_maskz_loadu_ps(mh, r1 + 2 * ow + 16);
        __m512 mo = _mm512_permutex2var_ps(a0, ie, a1);
        __m512 v1 = _mm512_permutex2var_ps(a0, io, a1);
        __m512 v2 = _mm512_permutex2var_ps(b0, ie, b1);
        __m512 v3 = _mm512_permutex2var_ps(b0, io, b1);
        __mmask16 t1 = CNX_POOL_TAKE_S(v1, mo), t2, t3;
        mo = _mm512_mask_blend_ps(t1, mo, v1);
        t2 = CNX_POOL_TAKE_S(v2, mo);
        mo = _mm512_mask_blend_ps(t2, mo, v2);
        t3 = CNX_POOL_TAKE_S(v3, mo);
        mo = _mm512_mask_blend_ps(t3, mo, v3);
        _mm512_mask_storeu_ps(m + ow, mk, mo);
        if (idx) {
            /* positions base + 2*ow + 2*lane (+1; + W; + W + 1) */
            __m512i p = _mm512_add_epi32(_mm512_set1_epi32((int)(base + 2 * ow)), ie);
            __m512i bo = _mm512_mask_add_epi32(p, t1, p, _mm512_set1_epi32(1));
            bo = _mm512_mask_add_epi32(bo, t2, p, _mm512_set1_epi32((int)W));
            bo = _mm512_mask_add_epi32(bo, t3, p, _mm512_set1_epi32((int)W + 1));
            _mm512_mask_storeu_epi64(idx + ow, (__mmask8)(mk & 0xFF),
                                     _mm512_cvtepi32_epi64(_mm512_castsi512_si256(bo)));
            _mm512_mask_storeu_epi64(idx + ow + 8, (__mmask8)(mk >> 8),
                                     _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(bo, 1)));
        }
    }
}

CNX_TARGET_AVX512
static void cnx_pool2x2_d(const double *r0, int64_t W, double *m, int64_t *idx, int64_t OW,
                          int64_t base) {
    const double *r1 = r0 + W;
    const __m512i ie = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512i io = _mm512_add_epi64(ie, _mm512_set1_epi64(1));
    int64_t ow;
    for (ow = 0; ow < OW; ow += 8) {
        int64_t n = OW - ow < 8 ? OW - ow : 8, n2 = 2 * n;
        __mmask8 mk = (__mmask8)(n == 8 ? 0xFF : (1u << n) - 1u);
        __mmask8 ml = (__mmask8)(n2 >= 8 ? 0xFF : (1u << n2) - 1u);
        __mmask8 mh = (__mmask8)(n2 >= 16 ? 0xFF : n2 > 8 ? (1u << (n2 - 8)) - 1u : 0);
        __m512d a0 = _mm512_maskz_loadu_pd(ml, r0 + 2 * ow);
        __m512d a1 = _mm512_maskz_loadu_pd(mh, r0 + 2 * ow + 8);
        __m512d b0 = _mm512_maskz_loadu_pd(ml, r1 + 2 * ow);
        __m512d b1 = _mm512_maskz_loadu_pd(mh, r1 + 2 * ow + 8);
        __m512d mo = _mm512_permutex2var_pd(a0, ie, a1);
        __m512d v1 = _mm512_permutex2var_pd(a0, io, a1);
        __m512d v2 = _mm512_permutex2var_pd(b0, ie, b1);
        __m512d v3 = _mm512_permutex2var_pd(b0, io, b1);
        __mmask8 t1 = CNX_POOL_TAKE_D(v1, mo), t2, t3;
        mo = _mm512_mask_blend_pd(t1, mo, v1);
        t2 = CNX_POOL_TAKE_D(v2, mo);
        mo = _mm512_mask_blend_pd(t2, mo, v2);
        t3 = CNX_POOL_TAKE_D(v3, mo);
        mo = _mm512_mask_blend_pd(t3, mo, v3);
        _mm512_mask_storeu_pd(m + ow, mk, mo);
        if (idx) {
            __m512i p = _mm512_add_epi64(_mm512_set1_epi64(base + 2 * ow), ie);
            __m512i bo = _mm512_mask_add_epi64(p, t1, p, _mm512_set1_epi64(1));
            bo = _mm512_mask_add_epi64(bo, t2, p, _mm512_set1_epi64(W));
            bo = _mm512_mask_add_epi64(bo, t3, p, _mm512_set1_epi64(W + 1));
            _mm512_mask_storeu_epi64(idx + ow, mk, bo);
        }
    }
}

/* Backward of one output row of an exactly tiled 2x2 pool: input rows r0
 * and r0 + W (2*OW values each) get 0 + g where their position is the
 * window's argmax (idx, flat plane positions; base = r0's first position)
 * and +0 elsewhere -- the zero-then-add of max_pool2d_backward's scatter,
 * bit for bit, when every input belongs to exactly one window.  With
 * ``ref`` (the pool's input rows, laid out as r0's), a ReLU's backward
 * follows: +0 where ref <= 0 (relu_backward's rule, a NaN ref passing). */
CNX_TARGET_AVX512
static void cnx_pool2x2_bwd_s(const float *g, const int64_t *idx, float *r0, int64_t W,
                              int64_t OW, int64_t base, const float *ref) {
    float *r1 = r0 + W;
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7,
                                         23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    const __m512i two = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512 zero = _mm512_setzero_ps();
    int64_t ow;
    for (ow = 0; ow < OW; ow += 16) {
        int64_t n = OW - ow < 16 ? OW - ow : 16, n2 = 2 * n;
        __mmask16 mk = (__mmask16)(n == 16 ? 0xFFFF : (1u << n) - 1u);
        __mmask16 ml = (__mmask16)(n2 >= 16 ? 0xFFFF : (1u << n2) - 1u);
        __mmask16 mh = (__mmask16)(n2 >= 32 ? 0xFFFF : n2 > 16 ? (1u << (n2 - 16)) - 1u : 0);
        __m512 v = _mm512_add_ps(zero, _mm512_maskz_loadu_ps(mk, g + ow));
        __m512i p = _mm512_add_epi64(_mm512_set1_epi64(base + 2 * ow), two);
        __m512i d0 = _mm512_sub_epi64(_mm512_maskz_loadu_epi64((__mmask8)(mk & 0xFF), idx + ow), p);
        __m512i d1 = _mm512_sub_epi64(
            _mm512_maskz_loadu_epi64((__mmask8)(mk >> 8), idx + ow + 8),
            _mm512_add_epi64(p, _mm512_set1_epi64(16)));
        __m512i dw = _mm512_set1_epi64(W);
        __m512i one = _mm512_set1_epi64(1), dw1 = _mm512_set1_epi64(W + 1);
#define CNX_SEL(dv) ((__mmask16)(_mm512_cmpeq_epi64_mask(d0, (dv)) |                 \
                                 ((unsigned)_mm512_cmpeq_epi64_mask(d1, (dv)) << 8)))
        __mmask16 s0 = CNX_SEL(_mm512_setzero_si512()), s1 = CNX_SEL(one);
        __mmask16 s2 = CNX_SEL(dw), s3 = CNX_SEL(dw1);
#undef CNX_SEL
        __m512 e0 = _mm512_mask_blend_ps(s0, zero, v), o0 = _mm512_mask_blend_ps(s1, zero, v);
        __m512 e1 = _mm512_mask_blend_ps(s2, zero, v), o1 = _mm512_mask_blend_ps(s3, zero, v);
        __m512 a0 = _mm512_permutex2var_ps(e0, lo, o0), a1 = _mm512_permutex2var_ps(e0, hi, o0);
        __m512 b0 = _mm512_permutex2var_ps(e1, lo, o1), b1 = _mm512_permutex2var_ps(e1, hi, o1);
        if (ref) {
#define CNX_REF_POS(p, m) _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps((m), (p)), zero, _CMP_NLE_UQ)
            a0 = _mm512_maskz_mov_ps(CNX_REF_POS(ref + 2 * ow, ml), a0);
            a1 = _mm512_maskz_mov_ps(CNX_REF_POS(ref + 2 * ow + 16, mh), a1);
            b0 = _mm512_maskz_mov_ps(CNX_REF_POS(ref + W + 2 * ow, ml), b0);
            b1 = _mm512_maskz_mov_ps(CNX_REF_POS(ref + W + 2 * ow + 16, mh), b1);
#undef CNX_REF_POS
        }
        _mm512_mask_storeu_ps(r0 + 2 * ow, ml, a0);
        _mm512_mask_storeu_ps(r0 + 2 * ow + 16, mh, a1);
        _mm512_mask_storeu_ps(r1 + 2 * ow, ml, b0);
        _mm512_mask_storeu_ps(r1 + 2 * ow + 16, mh, b1);
    }
}

CNX_TARGET_AVX512
static void cnx_pool2x2_bwd_d(const double *g, const int64_t *idx, double *r0, int64_t W,
                              int64_t OW, int64_t base) {
    double *r1 = r0 + W;
    const __m512i lo = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    const __m512i hi = _mm512_add_epi64(lo, _mm512_set1_epi64(4));
    const __m512i two = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    const __m512d zero = _mm512_setzero_pd();
    int64_t ow;
    for (ow = 0; ow < OW; ow += 8) {
        int64_t n = OW - ow < 8 ? OW - ow : 8, n2 = 2 * n;
        __mmask8 mk = (__mmask8)(n == 8 ? 0xFF : (1u << n) - 1u);
        __mmask8 ml = (__mmask8)(n2 >= 8 ? 0xFF : (1u << n2) - 1u);
        __mmask8 mh = (__mmask8)(n2 >= 16 ? 0xFF : n2 > 8 ? (1u << (n2 - 8)) - 1u : 0);
        __m512d v = _mm512_add_pd(zero, _mm512_maskz_loadu_pd(mk, g + ow));
        __m512i d = _mm512_sub_epi64(_mm512_maskz_loadu_epi64(mk, idx + ow),
                                     _mm512_add_epi64(_mm512_set1_epi64(base + 2 * ow), two));
        __mmask8 s0 = _mm512_cmpeq_epi64_mask(d, _mm512_setzero_si512());
        __mmask8 s1 = _mm512_cmpeq_epi64_mask(d, _mm512_set1_epi64(1));
        __mmask8 s2 = _mm512_cmpeq_epi64_mask(d, _mm512_set1_epi64(W));
        __mmask8 s3 = _mm512_cmpeq_epi64_mask(d, _mm512_set1_epi64(W + 1));
        __m512d e0 = _mm512_mask_blend_pd(s0, zero, v), o0 = _mm512_mask_blend_pd(s1, zero, v);
        __m512d e1 = _mm512_mask_blend_pd(s2, zero, v), o1 = _mm512_mask_blend_pd(s3, zero, v);
        _mm512_mask_storeu_pd(r0 + 2 * ow, ml, _mm512_permutex2var_pd(e0, lo, o0));
        _mm512_mask_storeu_pd(r0 + 2 * ow + 8, mh, _mm512_permutex2var_pd(e0, hi, o0));
        _mm512_mask_storeu_pd(r1 + 2 * ow, ml, _mm512_permutex2var_pd(e1, lo, o1));
        _mm512_mask_storeu_pd(r1 + 2 * ow + 8, mh, _mm512_permutex2var_pd(e1, hi, o1));
    }
}

/* m[0:n] = ReLU(m[0:n]) in place: the fused epilogue's CNX_RELU_Z_S (NaN
 * kept, -0.0 to 0.0), 16 values a step, the last masked. */
CNX_TARGET_AVX512
static void cnx_relu_row_s(float *m, int64_t n) {
    const __m512 z = _mm512_setzero_ps();
    int64_t j;
    for (j = 0; j < n; j += 16) {
        int64_t k = n - j < 16 ? n - j : 16;
        __mmask16 mk = (__mmask16)(k == 16 ? 0xFFFF : (1u << k) - 1u);
        __m512 v = _mm512_maskz_loadu_ps(mk, m + j);
        _mm512_mask_storeu_ps(m + j, mk, CNX_RELU_Z_S(v, z));
    }
}

/* A convolution of few input taps (K = C*kh*kw, stride 1, no dilation), its
 * bias, an optional ReLU and a 2x2 stride-2 max pool, for one sample, float32:
 *
 *     out[co, ph, pw] = max over the 2x2 window at (2ph, 2pw) of
 *                       act(sum_k w[co, k] * x[k-th tap] + b[co])
 *
 * xp is the sample's (C, Hp, Wp) input with its zero padding written out and
 * at least 32 + kw readable floats after it; w is (Co, K), b (Co,) or NULL,
 * out (Co, PH, PW) with 2*PH <= Hp - kh + 1 and 2*PW <= Wp - kw + 1.
 *
 * Four output channels by two convolution rows by 32 columns (16 pooled
 * outputs) a block, in 16 accumulators; each tap is 4 row loads and 16
 * FMAs with the weights broadcast from w itself (so no packed copy to keep
 * in step with the weight).  The arithmetic of the direct convolution's
 * micro-kernels: every tap's product accumulated by FMA from zero in tap
 * order (padding included), then the bias added, then the ReLU epilogue
 * (CNX_RELU_Z_S); then the pool rows' rule (CNX_POOL_TAKE_S in row-major
 * window order): the values of the convolution, ReLU and pool run apart.
 * Columns past the output's (the last block's) read the next row or the
 * slack and are never stored. */
#define CNX_CP_FMA4(cb, t)                                                     \
    a##cb##0 = _mm512_fmadd_ps(t, x0, a##cb##0);                                \
    a##cb##1 = _mm512_fmadd_ps(t, x1, a##cb##1);                                \
    a##cb##2 = _mm512_fmadd_ps(t, x2, a##cb##2);                                \
    a##cb##3 = _mm512_fmadd_ps(t, x3, a##cb##3);

#define CNX_CP_STORE(cb)                                                       \
    if (co0 + (cb) < Co) {                                                     \
        __m512 v0 = a##cb##0, v1 = a##cb##1, v2 = a##cb##2, v3 = a##cb##3;      \
        __m512 mo, e1, e2, e3;                                                 \
        __mmask16 t_;                                                          \
        if (b) {                                                               \
            __m512 bb = _mm512_set1_ps(b[co0 + (cb)]);                         \
            v0 = _mm512_add_ps(v0, bb); v1 = _mm512_add_ps(v1, bb);            \
            v2 = _mm512_add_ps(v2, bb); v3 = _mm512_add_ps(v3, bb);            \
        }                                                                      \
        if (act) {                                                             \
            v0 = CNX_RELU_Z_S(v0, z); v1 = CNX_RELU_Z_S(v1, z);                \
            v2 = CNX_RELU_Z_S(v2, z); v3 = CNX_RELU_Z_S(v3, z);                \
        }                                                                      \
        mo = _mm512_permutex2var_ps(v0, ie, v1);                               \
        e1 = _mm512_permutex2var_ps(v0, io, v1);                               \
        e2 = _mm512_permutex2var_ps(v2, ie, v3);                               \
        e3 = _mm512_permutex2var_ps(v2, io, v3);                               \
        t_ = CNX_POOL_TAKE_S(e1, mo);                                          \
        mo = _mm512_mask_blend_ps(t_, mo, e1);                                 \
        t_ = CNX_POOL_TAKE_S(e2, mo);                                          \
        mo = _mm512_mask_blend_ps(t_, mo, e2);                                 \
        t_ = CNX_POOL_TAKE_S(e3, mo);                                          \
        mo = _mm512_mask_blend_ps(t_, mo, e3);                                 \
        _mm512_mask_storeu_ps(out + ((co0 + (cb)) * PH + ph) * PW + pw0, mk, mo); \
    }

CNX_TARGET_AVX512
static void cnx_conv_pool2x2_s(const float *xp, int64_t C, int64_t Hp, int64_t Wp,
                               const float *w, const float *b, int64_t Co, int64_t kh,
                               int64_t kw, int act, float *out, int64_t PH, int64_t PW) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                         28, 30);
    const __m512i io = _mm512_add_epi32(ie, _mm512_set1_epi32(1));
    const __m512 z = _mm512_setzero_ps();
    const int64_t K = C * kh * kw, HW = Hp * Wp;
    int64_t co0, ph, pw0, c, i, j;
    for (co0 = 0; co0 < Co; co0 += 4) {
        /* a block's missing channels repeat its last one (never stored) */
        const float *w0 = w + co0 * K;
        const float *w1 = w + (co0 + 1 < Co ? co0 + 1 : Co - 1) * K;
        const float *w2 = w + (co0 + 2 < Co ? co0 + 2 : Co - 1) * K;
        const float *w3 = w + (co0 + 3 < Co ? co0 + 3 : Co - 1) * K;
        for (ph = 0; ph < PH; ph++) {
            for (pw0 = 0; pw0 < PW; pw0 += 16) {
                int64_t n = PW - pw0 < 16 ? PW - pw0 : 16, k = 0;
                __mmask16 mk = (__mmask16)(n == 16 ? 0xFFFF : (1u << n) - 1u);
                __m512 a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
                __m512 a20 = z, a21 = z, a22 = z, a23 = z, a30 = z, a31 = z, a32 = z, a33 = z;
                const float *base = xp + 2 * ph * Wp + 2 * pw0;
                for (c = 0; c < C; c++) {
                    for (i = 0; i < kh; i++) {
                        const float *r = base + c * HW + i * Wp;
                        for (j = 0; j < kw; j++, k++) {
                            __m512 x0 = _mm512_loadu_ps(r + j);
                            __m512 x1 = _mm512_loadu_ps(r + j + 16);
                            __m512 x2 = _mm512_loadu_ps(r + Wp + j);
                            __m512 x3 = _mm512_loadu_ps(r + Wp + j + 16);
                            __m512 t0 = _mm512_set1_ps(w0[k]), t1 = _mm512_set1_ps(w1[k]);
                            __m512 t2 = _mm512_set1_ps(w2[k]), t3 = _mm512_set1_ps(w3[k]);
                            CNX_CP_FMA4(0, t0)
                            CNX_CP_FMA4(1, t1)
                            CNX_CP_FMA4(2, t2)
                            CNX_CP_FMA4(3, t3)
                        }
                    }
                }
                CNX_CP_STORE(0)
                CNX_CP_STORE(1)
                CNX_CP_STORE(2)
                CNX_CP_STORE(3)
            }
        }
    }
}
#undef CNX_CP_FMA4
#undef CNX_CP_STORE

/* The same convolution, bias, ReLU and pool with the output channels in
 * the vector lanes, for maps too narrow for the row kernel's 32 columns
 * (LeNet-5's second layer: 6 -> 16 channels, 5x5, 10x10 outputs pooled to
 * 5x5).  wt is the weight packed (K, Co16) (Co16 = Co rounded up to 16,
 * zero lanes past Co; cnx_pack_wt_s).  A block is 16 output channels by
 * two convolution rows by 2*PB columns (PB pooled outputs), 4*PB
 * accumulators; each tap is one weight vector load and 4*PB FMAs with the
 * input broadcast.  The arithmetic of cnx_conv_pool2x2_s lane by lane (FMA
 * from zero in tap order, the bias, the ReLU, the pool's rule in row-major
 * window order), so the same numbers; the 16 channels of each pooled
 * output are scattered to their planes. */
static void cnx_pack_wt_s(const float *w, int64_t Co, int64_t K, float *wt) {
    int64_t Co16 = (Co + 15) / 16 * 16, co, k;
    for (co = 0; co < Co; co++)
        for (k = 0; k < K; k++) wt[k * Co16 + co] = w[co * K + k];
    for (co = Co; co < Co16; co++)
        for (k = 0; k < K; k++) wt[k * Co16 + co] = 0.0f;
}

/* (GCC's predictive commoning would carry each loaded input value over to
 * the next taps through the stack: measured 3x slower.) */
#if defined(__GNUC__) && !defined(__clang__)
#define CNX_NO_PCOM __attribute__((optimize("no-predictive-commoning")))
#else
#define CNX_NO_PCOM
#endif

CNX_TARGET_AVX512 CNX_NO_PCOM static inline __attribute__((always_inline)) void
cnx_cv_block_s(const float *xp, int64_t C, int64_t HW, int64_t Wp, const float *wt,
               int64_t Co16, int64_t kh, int64_t kw, __m512 bias, int has_bias, int act,
               float *out, __m512i sidx, __mmask16 lanes, int64_t ph, int64_t pw0, int64_t PW,
               const int PB) {
    __m512 acc[2][12];
    const __m512 z = _mm512_setzero_ps();
    const float *base = xp + 2 * ph * Wp + 2 * pw0;
    int64_t c, i, j, k = 0;
    int q, r;
    for (r = 0; r < 2; r++)
        for (q = 0; q < 2 * PB; q++) acc[r][q] = z;
    for (c = 0; c < C; c++)
        for (i = 0; i < kh; i++) {
            const float *r0 = base + c * HW + i * Wp, *r1 = r0 + Wp;
            for (j = 0; j < kw; j++, k++) {
                __m512 wv = _mm512_loadu_ps(wt + k * Co16);
                for (q = 0; q < 2 * PB; q++) {
                    acc[0][q] = _mm512_fmadd_ps(wv, _mm512_set1_ps(r0[j + q]), acc[0][q]);
                    acc[1][q] = _mm512_fmadd_ps(wv, _mm512_set1_ps(r1[j + q]), acc[1][q]);
                }
            }
        }
    for (q = 0; q < PB; q++) {
        __m512 v[4], mo;
        __mmask16 t_;
        int e;
        v[0] = acc[0][2 * q]; v[1] = acc[0][2 * q + 1];
        v[2] = acc[1][2 * q]; v[3] = acc[1][2 * q + 1];
        for (e = 0; e < 4; e++) {
            if (has_bias) v[e] = _mm512_add_ps(v[e], bias);
            if (act) v[e] = CNX_RELU_Z_S(v[e], z);
        }
        mo = v[0];
        for (e = 1; e < 4; e++) {
            t_ = CNX_POOL_TAKE_S(v[e], mo);
            mo = _mm512_mask_blend_ps(t_, mo, v[e]);
        }
        _mm512_mask_i32scatter_ps(out + ph * PW + pw0 + q, lanes, sidx, mo, 4);
    }
}

CNX_TARGET_AVX512 CNX_NO_PCOM
static void cnx_conv_pool2x2_cv_s(const float *xp, int64_t C, int64_t Hp, int64_t Wp,
                                  const float *wt, const float *b, int64_t Co, int64_t kh,
                                  int64_t kw, int act, float *out, int64_t PH, int64_t PW) {
    const int64_t Co16 = (Co + 15) / 16 * 16, HW = Hp * Wp;
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i sidx = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)(PH * PW)));
    int64_t co0, ph, pw0;
    for (co0 = 0; co0 < Co; co0 += 16) {
        int64_t nc = Co - co0 < 16 ? Co - co0 : 16;
        __mmask16 lanes = (__mmask16)(nc == 16 ? 0xFFFF : (1u << nc) - 1u);
        __m512 bias = b ? _mm512_maskz_loadu_ps(lanes, b + co0) : _mm512_setzero_ps();
        float *o = out + co0 * PH * PW;
        for (ph = 0; ph < PH; ph++)
            for (pw0 = 0; pw0 < PW; pw0 += 6) {
                const float *w0 = wt + co0;
                switch (PW - pw0 < 6 ? PW - pw0 : 6) {
#define CNX_CV_CASE(n)                                                          \
                case n:                                                         \
                    cnx_cv_block_s(xp, C, HW, Wp, w0, Co16, kh, kw, bias, b != NULL, act, \
                                   o, sidx, lanes, ph, pw0, PW, n);             \
                    break;
                CNX_CV_CASE(6) CNX_CV_CASE(5) CNX_CV_CASE(4) CNX_CV_CASE(3)
                CNX_CV_CASE(2) CNX_CV_CASE(1)
#undef CNX_CV_CASE
                default: break;
                }
            }
    }
}

#else

static int cnx_pool_avx512(void) { return 0; }
static void cnx_relu_row_s(float *m, int64_t n) { (void)m; (void)n; }
static void cnx_pack_wt_s(const float *w, int64_t Co, int64_t K, float *wt) {
    (void)w; (void)Co; (void)K; (void)wt;
}
static void cnx_conv_pool2x2_cv_s(const float *xp, int64_t C, int64_t Hp, int64_t Wp,
                                  const float *wt, const float *b, int64_t Co, int64_t kh,
                                  int64_t kw, int act, float *out, int64_t PH, int64_t PW) {
    (void)xp; (void)C; (void)Hp; (void)Wp; (void)wt; (void)b; (void)Co; (void)kh; (void)kw;
    (void)act; (void)out; (void)PH; (void)PW;
}
static void cnx_conv_pool2x2_s(const float *xp, int64_t C, int64_t Hp, int64_t Wp,
                               const float *w, const float *b, int64_t Co, int64_t kh,
                               int64_t kw, int act, float *out, int64_t PH, int64_t PW) {
    (void)xp; (void)C; (void)Hp; (void)Wp; (void)w; (void)b; (void)Co; (void)kh; (void)kw;
    (void)act; (void)out; (void)PH; (void)PW;
}
static void cnx_pool2x2_bwd_s(const float *g, const int64_t *idx, float *r0, int64_t W,
                              int64_t OW, int64_t base, const float *ref) {
    (void)g; (void)idx; (void)r0; (void)W; (void)OW; (void)base; (void)ref;
}
static void cnx_pool2x2_bwd_d(const double *g, const int64_t *idx, double *r0, int64_t W,
                              int64_t OW, int64_t base) {
    (void)g; (void)idx; (void)r0; (void)W; (void)OW; (void)base;
}
static void cnx_pool2x2_s(const float *r0, int64_t W, float *m, int64_t *idx, int64_t OW,
                          int64_t base) {
    (void)r0; (void)W; (void)m; (void)idx; (void)OW; (void)base;
}
static void cnx_pool2x2_d(const double *r0, int64_t W, double *m, int64_t *idx, int64_t OW,
                          int64_t base) {
    (void)r0; (void)W; (void)m; (void)idx; (void)OW; (void)base;
}
#endif

#endif /* CNNEXT_POOL_H */
