/*
 * cnnext: direct AVX-512 and AVX2 backward kernels for small float32
 * convolutions (few channels, tiny maps: LeNet's 6 -> 16 channel 5x5 layer
 * on 12x12).  There the GEMM-style schedules waste most of a vector's lanes
 * and their packing costs as much as the products; these kernels keep one
 * sample's operands in L1 and every lane busy.
 *
 * cnx_sgw_cvec_*: the weight gradient of one sample, vectorised over (up
 * to 16) output channels.  For each group of taps it keeps one accumulator
 * per (tap, vector of channels) -- AVX-512: 8 taps x 16 channels; AVX2: 6
 * taps x 16 or 12 taps x 8 channels -- and walks the sample's output
 * positions: one load of the transposed gradient row, a multiply-add per
 * accumulator with a broadcast image value.  Each element's sum runs over
 * the positions in row-major order, and is then added to gwt (the same
 * bits on either instruction set).
 *
 * cnx_sgi_rows_*: the input gradient of one sample at stride 1 and
 * padding 0, output-stationary over the flattened input map: gx[c, q] =
 * sum over (co, i, j) of w[co, c, i, j] * gp[co, q - i*dh*W - j*dw], where
 * gp is the gradient laid in W-wide rows (columns >= OW zero) after a lead
 * of zeros; a position whose tap falls left of the map reads a zero column
 * of the previous row.  AVX-512: 6 (or 3) channels x 3 vectors of
 * positions per block; AVX2: 6 channels x 2 vectors, or 3 x 3; each element
 * summed over (co, tap) in order (the same bits on either).
 *
 * cnx_sgw_pvec_*: the weight gradient of one sample with few output
 * channels and taps (LeNet's first layer: 1 -> 6 channels, 25 taps over
 * 24x24 positions), vectorised over positions: 6 channels x 4 taps (AVX2:
 * x 2 taps) of one-vector partial sums, which the caller sums across the
 * lanes (16 or 8) after each sample.
 *
 * cnx_smallconv_select() returns the kernels of this CPU (AVX-512F, else
 * AVX2 + FMA, as CNNEXT_ISA allows) with their instruction set, or isa 0:
 * then the callers keep the general schedules.
 */
#ifndef CNNEXT_SMALLCONV_H
#define CNNEXT_SMALLCONV_H

#include "cnnext_ukernel.h"

typedef void (*cnx_sgw_cvec_fn)(const float *xn, int64_t W, int64_t sh, int64_t sw,
                                int64_t OH, int64_t OW, const int64_t *toff, int64_t K,
                                const float *gt, int nco, float *gwt, int64_t ldc);
typedef void (*cnx_sgw_pvec_fn)(const float *xn, const int64_t *toff, int64_t K,
                                const float *const *grow, int64_t Co, int64_t Q,
                                float *acc);
typedef void (*cnx_sgi_rows_fn)(const float *gp, int64_t ldg, int64_t Co,
                                const float *wt, int64_t ldw, const int64_t *tshift,
                                const int64_t *trow, int64_t KT, int64_t W, int64_t OH,
                                float *gx, int64_t C, int64_t HW);

/* The kernels of one instruction set (isa 2: AVX-512F, 1: AVX2, 0: none;
 * lanes: the pvec kernel's partial sums per (channel, tap)). */
typedef struct {
    int isa, lanes;
    cnx_sgw_cvec_fn cvec;
    cnx_sgw_pvec_fn pvec;
    cnx_sgi_rows_fn rows;
} cnx_smallconv;

#ifdef CNX_X86

/* The cvec kernels' walk over one sample's output positions: o is the
 * position's offset in the sample, gp its row of the transposed gradient
 * (16 floats a position); the body multiplies it into the accumulators. */
#define CNX_SGW_WALK(...) /* the body */                                        \
    {                                                                           \
        const float *gp = gt;                                                   \
        for (oh = 0; oh < OH; oh++) {                                           \
            int64_t o = oh * sh * W;                                            \
            for (ow = 0; ow < OW; ow++, o += sw, gp += 16) {                    \
                __VA_ARGS__                                                     \
            }                                                                   \
        }                                                                       \
    }

#define CNX_SGW_FMA(t) \
    r##t = _mm512_fmadd_ps(_mm512_set1_ps(p##t[o]), b, r##t);
#define CNX_SGW_STORE(t)                                                        \
    if (nt > (t)) {                                                             \
        float *row_ = gwt + (k0 + (t)) * ldc;                                   \
        _mm512_mask_storeu_ps(row_, m, _mm512_add_ps(r##t,                      \
                              _mm512_maskz_loadu_ps(m, row_)));                 \
    }

/* gwt[k*ldc + co] += sum over (oh, ow) of xn[toff[k] + oh*sh*W + ow*sw] *
 * gt[(oh*OW + ow)*16 + co], for k < K, co < nco <= 16. */
/* GCC's predictive commoning would carry broadcasts over to the next
 * position (p1[o] is p0[o + 1] at column stride 1) and spill them. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-predictive-commoning")))
#endif
CNX_TARGET_AVX512
static void cnx_sgw_cvec_avx512(const float *xn, int64_t W, int64_t sh, int64_t sw,
                                int64_t OH, int64_t OW, const int64_t *toff, int64_t K,
                                const float *gt, int nco, float *gwt, int64_t ldc) {
    __mmask16 m = (__mmask16)(nco >= 16 ? 0xFFFF : ((1u << nco) - 1u));
    int64_t k0, oh, ow;
    for (k0 = 0; k0 < K; k0 += 8) {
        int64_t nt = K - k0 < 8 ? K - k0 : 8;
        const float *p0 = xn + toff[k0];
        const float *p1 = xn + toff[k0 + (nt > 1 ? 1 : 0)];
        const float *p2 = xn + toff[k0 + (nt > 2 ? 2 : 0)];
        const float *p3 = xn + toff[k0 + (nt > 3 ? 3 : 0)];
        const float *p4 = xn + toff[k0 + (nt > 4 ? 4 : 0)];
        const float *p5 = xn + toff[k0 + (nt > 5 ? 5 : 0)];
        const float *p6 = xn + toff[k0 + (nt > 6 ? 6 : 0)];
        const float *p7 = xn + toff[k0 + (nt > 7 ? 7 : 0)];
        __m512 r0 = _mm512_setzero_ps(), r1 = _mm512_setzero_ps();
        __m512 r2 = _mm512_setzero_ps(), r3 = _mm512_setzero_ps();
        __m512 r4 = _mm512_setzero_ps(), r5 = _mm512_setzero_ps();
        __m512 r6 = _mm512_setzero_ps(), r7 = _mm512_setzero_ps();
        CNX_SGW_WALK(__m512 b = _mm512_loadu_ps(gp);
                     CNX_SGW_FMA(0) CNX_SGW_FMA(1) CNX_SGW_FMA(2) CNX_SGW_FMA(3)
                     CNX_SGW_FMA(4) CNX_SGW_FMA(5) CNX_SGW_FMA(6) CNX_SGW_FMA(7))
        CNX_SGW_STORE(0) CNX_SGW_STORE(1) CNX_SGW_STORE(2) CNX_SGW_STORE(3)
        CNX_SGW_STORE(4) CNX_SGW_STORE(5) CNX_SGW_STORE(6) CNX_SGW_STORE(7)
    }
}

#define CNX_SGI_MASKS                                                           \
    int64_t left = HW - q0;                                                     \
    __mmask16 m0 = (__mmask16)(left >= 16 ? 0xFFFF : ((1u << left) - 1u));      \
    __mmask16 m1 = (__mmask16)(left >= 32 ? 0xFFFF                              \
                               : left <= 16 ? 0 : ((1u << (left - 16)) - 1u));  \
    __mmask16 m2 = (__mmask16)(left >= 48 ? 0xFFFF                              \
                               : left <= 32 ? 0 : ((1u << (left - 32)) - 1u));
#define CNX_SGI_ZERO(c) \
    __m512 a##c##0 = _mm512_setzero_ps(), a##c##1 = a##c##0, a##c##2 = a##c##0;
#define CNX_SGI_FMA(c)                                 \
    {                                                  \
        __m512 b_ = _mm512_set1_ps(w[c]);              \
        a##c##0 = _mm512_fmadd_ps(b_, x0, a##c##0);    \
        a##c##1 = _mm512_fmadd_ps(b_, x1, a##c##1);    \
        a##c##2 = _mm512_fmadd_ps(b_, x2, a##c##2);    \
    }
#define CNX_SGI_STORE(c)                                        \
    if (c0 + (c) < C) {                                         \
        float *o_ = gx + (c0 + (c)) * HW + q0;                  \
        _mm512_mask_storeu_ps(o_, m0, a##c##0);                 \
        _mm512_mask_storeu_ps(o_ + 16, m1, a##c##1);            \
        _mm512_mask_storeu_ps(o_ + 32, m2, a##c##2);            \
    }
#define CNX_SGI_LOOP(LOADS, BODY)                                       \
    for (co = 0; co < Co; co++) {                                       \
        const float *g0 = gp + co * ldg + q0;                           \
        const float *w0 = wt + co * KT * ldw + c0;                      \
        for (t = tlo; t < thi; t++) {                                   \
            const float *g = g0 - tshift[t];                            \
            const float *w = w0 + t * ldw;                              \
            LOADS                                                       \
            BODY                                                        \
        }                                                               \
    }
#define CNX_SGI_LOAD48 __m512 x0 = _mm512_loadu_ps(g), x1 = _mm512_loadu_ps(g + 16), \
                              x2 = _mm512_loadu_ps(g + 32);

/* The taps [*tlo, *thi) that reach positions [q0, q0 + width) of a W-wide
 * map from some output row: tap t's rows trow[t] (ascending) within
 * [r - OH + 1, r] for a row r of the block.  The others read zeros only
 * (junk columns or the lead), so skipping them leaves the sums as they are. */
static inline void cnx_sgi_taps(const int64_t *trow, int64_t KT, int64_t W, int64_t OH,
                                int64_t HW, int64_t q0, int64_t width, int64_t *tlo,
                                int64_t *thi) {
    int64_t last = q0 + width - 1 < HW ? q0 + width - 1 : HW - 1;
    int64_t rlo = q0 / W, rhi = last / W;
    int64_t a = 0, b = KT;
    while (a < KT && trow[a] < rlo - (OH - 1)) a++;
    while (b > a && trow[b - 1] > rhi) b--;
    *tlo = a;
    *thi = b;
}

/* gx[c*HW + q] = sum over co < Co, tap t < KT of
 * wt[(co*KT + t)*ldw + c] * gp[co*ldg + q - tshift[t]] for c < C, q < HW;
 * gp[co*ldg + q] readable for q in [-max(tshift), round48(HW)), wt's rows
 * hold ldw = round3(C) channels (the extra ones zero, never stored).
 * Blocks of 6 channels (18 accumulators: 3 + 6 loads per 18 multiply-adds)
 * while more than 3 are left, then of 3; each block of positions skips the
 * taps that only read zeros there (trow[t]: tap t's row offset, W the row
 * width, OH the gradient's rows). */
CNX_TARGET_AVX512
static void cnx_sgi_rows_avx512(const float *gp, int64_t ldg, int64_t Co,
                                const float *wt, int64_t ldw, const int64_t *tshift,
                                const int64_t *trow, int64_t KT, int64_t W, int64_t OH,
                                float *gx, int64_t C, int64_t HW) {
    int64_t c0 = 0, q0, co, t, tlo, thi;
    for (; C - c0 > 3; c0 += 6) {
        for (q0 = 0; q0 < HW; q0 += 48) {
            cnx_sgi_taps(trow, KT, W, OH, HW, q0, 48, &tlo, &thi);
            CNX_SGI_ZERO(0) CNX_SGI_ZERO(1) CNX_SGI_ZERO(2)
            CNX_SGI_ZERO(3) CNX_SGI_ZERO(4) CNX_SGI_ZERO(5)
            CNX_SGI_LOOP(CNX_SGI_LOAD48,
                         CNX_SGI_FMA(0) CNX_SGI_FMA(1) CNX_SGI_FMA(2)
                         CNX_SGI_FMA(3) CNX_SGI_FMA(4) CNX_SGI_FMA(5))
            {
                CNX_SGI_MASKS
                CNX_SGI_STORE(0) CNX_SGI_STORE(1) CNX_SGI_STORE(2)
                CNX_SGI_STORE(3) CNX_SGI_STORE(4) CNX_SGI_STORE(5)
            }
        }
    }
    for (; c0 < C; c0 += 3) {
        for (q0 = 0; q0 < HW; q0 += 48) {
            cnx_sgi_taps(trow, KT, W, OH, HW, q0, 48, &tlo, &thi);
            CNX_SGI_ZERO(0) CNX_SGI_ZERO(1) CNX_SGI_ZERO(2)
            CNX_SGI_LOOP(CNX_SGI_LOAD48, CNX_SGI_FMA(0) CNX_SGI_FMA(1) CNX_SGI_FMA(2))
            {
                CNX_SGI_MASKS
                CNX_SGI_STORE(0) CNX_SGI_STORE(1) CNX_SGI_STORE(2)
            }
        }
    }
}

#define CNX_SGP_ROW(c)                                                  \
    {                                                                   \
        __m512 g_ = _mm512_maskz_loadu_ps(m, g##c + q);                 \
        a##c##0 = _mm512_fmadd_ps(g_, x0, a##c##0);                     \
        a##c##1 = _mm512_fmadd_ps(g_, x1, a##c##1);                     \
        a##c##2 = _mm512_fmadd_ps(g_, x2, a##c##2);                     \
        a##c##3 = _mm512_fmadd_ps(g_, x3, a##c##3);                     \
    }
#define CNX_SGP_LOAD(c)                                                 \
    __m512 a##c##0 = _mm512_loadu_ps(acc + ((co0 + (c)) * K + k0) * 16),       \
           a##c##1 = _mm512_loadu_ps(acc + ((co0 + (c)) * K + k0 + 1) * 16),   \
           a##c##2 = _mm512_loadu_ps(acc + ((co0 + (c)) * K + k0 + 2) * 16),   \
           a##c##3 = _mm512_loadu_ps(acc + ((co0 + (c)) * K + k0 + 3) * 16);
#define CNX_SGP_STORE(c)                                                        \
    _mm512_storeu_ps(acc + ((co0 + (c)) * K + k0) * 16, a##c##0);               \
    _mm512_storeu_ps(acc + ((co0 + (c)) * K + k0 + 1) * 16, a##c##1);           \
    _mm512_storeu_ps(acc + ((co0 + (c)) * K + k0 + 2) * 16, a##c##2);           \
    _mm512_storeu_ps(acc + ((co0 + (c)) * K + k0 + 3) * 16, a##c##3);

/* acc[(co*K + k)*16 + l] += sum over q < Q, q = l (mod 16), of
 * g[co*ldg + q] * xn[toff[k] + q]: the weight gradient's dot products over
 * one sample's positions q (the gradient in the image's row width, junk
 * columns zero), 16 lanes summed by the caller.  Co and K multiples of 6
 * and 4 in acc (the caller's rows past Co point g at a zero row, toff past
 * K repeat tap 0; those sums are never read).  Blocks of 6 channels x 4
 * taps: 24 accumulators, 4 + 6 loads per 24 multiply-adds. */
CNX_TARGET_AVX512
static void cnx_sgw_pvec_avx512(const float *xn, const int64_t *toff, int64_t K,
                                const float *const *grow, int64_t Co, int64_t Q,
                                float *acc) {
    int64_t co0, k0, q;
    for (co0 = 0; co0 < Co; co0 += 6) {
        const float *g0 = grow[co0], *g1 = grow[co0 + 1], *g2 = grow[co0 + 2],
                    *g3 = grow[co0 + 3], *g4 = grow[co0 + 4], *g5 = grow[co0 + 5];
        for (k0 = 0; k0 < K; k0 += 4) {
            const float *t0 = xn + toff[k0], *t1 = xn + toff[k0 + 1],
                        *t2 = xn + toff[k0 + 2], *t3 = xn + toff[k0 + 3];
            CNX_SGP_LOAD(0) CNX_SGP_LOAD(1) CNX_SGP_LOAD(2)
            CNX_SGP_LOAD(3) CNX_SGP_LOAD(4) CNX_SGP_LOAD(5)
            for (q = 0; q < Q; q += 16) {
                __mmask16 m = (__mmask16)(Q - q >= 16 ? 0xFFFF : ((1u << (Q - q)) - 1u));
                __m512 x0 = _mm512_maskz_loadu_ps(m, t0 + q), x1 = _mm512_maskz_loadu_ps(m, t1 + q),
                       x2 = _mm512_maskz_loadu_ps(m, t2 + q), x3 = _mm512_maskz_loadu_ps(m, t3 + q);
                CNX_SGP_ROW(0) CNX_SGP_ROW(1) CNX_SGP_ROW(2)
                CNX_SGP_ROW(3) CNX_SGP_ROW(4) CNX_SGP_ROW(5)
            }
            CNX_SGP_STORE(0) CNX_SGP_STORE(1) CNX_SGP_STORE(2)
            CNX_SGP_STORE(3) CNX_SGP_STORE(4) CNX_SGP_STORE(5)
        }
    }
}

/* ---- AVX2 + FMA: the same sums on 8-lane vectors (16 registers) ---- */

/* Lanes l < n of an 8-lane mask (n clamped to [0, 8]). */
CNX_TARGET_AVX2
static inline __m256i cnx_sc_mask8(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 0 ? 0 : n > 8 ? 8 : n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#define CNX_SGW2_FMA2(t)                                        \
    {                                                           \
        __m256 v_ = _mm256_broadcast_ss(p##t + o);              \
        r##t = _mm256_fmadd_ps(v_, b0, r##t);                   \
        s##t = _mm256_fmadd_ps(v_, b1, s##t);                   \
    }
#define CNX_SGW2_FMA1(t) r##t = _mm256_fmadd_ps(_mm256_broadcast_ss(p##t + o), b0, r##t);
#define CNX_SGW2_ACC(t) __m256 r##t = _mm256_setzero_ps(), s##t = r##t;
#define CNX_SGW2_PTR(t) const float *p##t = xn + toff[k0 + (nt > (t) ? (t) : 0)];
#define CNX_SGW2_ADD(v, m, row)                                                 \
    _mm256_maskstore_ps((row), (m), _mm256_add_ps((v), _mm256_maskload_ps((row), (m))));
#define CNX_SGW2_STORE2(t)                                                      \
    if (nt > (t)) {                                                             \
        float *row_ = gwt + (k0 + (t)) * ldc;                                   \
        CNX_SGW2_ADD(r##t, m0, row_) CNX_SGW2_ADD(s##t, m1, row_ + 8)           \
    }
#define CNX_SGW2_STORE1(t)                                                      \
    if (nt > (t)) {                                                             \
        float *row_ = gwt + (k0 + (t)) * ldc;                                   \
        CNX_SGW2_ADD(r##t, m0, row_)                                            \
    }

/* As cnx_sgw_cvec_avx512: 6 taps x two vectors of channels (more than 8
 * channels), else 12 taps x one vector. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-predictive-commoning")))
#endif
CNX_TARGET_AVX2
static void cnx_sgw_cvec_avx2(const float *xn, int64_t W, int64_t sh, int64_t sw,
                              int64_t OH, int64_t OW, const int64_t *toff, int64_t K,
                              const float *gt, int nco, float *gwt, int64_t ldc) {
    __m256i m0 = cnx_sc_mask8(nco), m1 = cnx_sc_mask8(nco - 8);
    int64_t k0, oh, ow;
    if (nco > 8) {
        for (k0 = 0; k0 < K; k0 += 6) {
            int64_t nt = K - k0 < 6 ? K - k0 : 6;
            CNX_SGW2_PTR(0) CNX_SGW2_PTR(1) CNX_SGW2_PTR(2)
            CNX_SGW2_PTR(3) CNX_SGW2_PTR(4) CNX_SGW2_PTR(5)
            CNX_SGW2_ACC(0) CNX_SGW2_ACC(1) CNX_SGW2_ACC(2)
            CNX_SGW2_ACC(3) CNX_SGW2_ACC(4) CNX_SGW2_ACC(5)
            CNX_SGW_WALK(__m256 b0 = _mm256_loadu_ps(gp), b1 = _mm256_loadu_ps(gp + 8);
                         CNX_SGW2_FMA2(0) CNX_SGW2_FMA2(1) CNX_SGW2_FMA2(2)
                         CNX_SGW2_FMA2(3) CNX_SGW2_FMA2(4) CNX_SGW2_FMA2(5))
            CNX_SGW2_STORE2(0) CNX_SGW2_STORE2(1) CNX_SGW2_STORE2(2)
            CNX_SGW2_STORE2(3) CNX_SGW2_STORE2(4) CNX_SGW2_STORE2(5)
        }
        return;
    }
    for (k0 = 0; k0 < K; k0 += 12) {
        int64_t nt = K - k0 < 12 ? K - k0 : 12;
        CNX_SGW2_PTR(0) CNX_SGW2_PTR(1) CNX_SGW2_PTR(2) CNX_SGW2_PTR(3)
        CNX_SGW2_PTR(4) CNX_SGW2_PTR(5) CNX_SGW2_PTR(6) CNX_SGW2_PTR(7)
        CNX_SGW2_PTR(8) CNX_SGW2_PTR(9) CNX_SGW2_PTR(10) CNX_SGW2_PTR(11)
        __m256 r0 = _mm256_setzero_ps(), r1 = r0, r2 = r0, r3 = r0, r4 = r0, r5 = r0;
        __m256 r6 = r0, r7 = r0, r8 = r0, r9 = r0, r10 = r0, r11 = r0;
        CNX_SGW_WALK(__m256 b0 = _mm256_loadu_ps(gp);
                     CNX_SGW2_FMA1(0) CNX_SGW2_FMA1(1) CNX_SGW2_FMA1(2) CNX_SGW2_FMA1(3)
                     CNX_SGW2_FMA1(4) CNX_SGW2_FMA1(5) CNX_SGW2_FMA1(6) CNX_SGW2_FMA1(7)
                     CNX_SGW2_FMA1(8) CNX_SGW2_FMA1(9) CNX_SGW2_FMA1(10) CNX_SGW2_FMA1(11))
        CNX_SGW2_STORE1(0) CNX_SGW2_STORE1(1) CNX_SGW2_STORE1(2) CNX_SGW2_STORE1(3)
        CNX_SGW2_STORE1(4) CNX_SGW2_STORE1(5) CNX_SGW2_STORE1(6) CNX_SGW2_STORE1(7)
        CNX_SGW2_STORE1(8) CNX_SGW2_STORE1(9) CNX_SGW2_STORE1(10) CNX_SGW2_STORE1(11)
    }
}

#define CNX_SGI2_ZERO2(c) __m256 a##c##0 = _mm256_setzero_ps(), a##c##1 = a##c##0;
#define CNX_SGI2_ZERO3(c) __m256 a##c##0 = _mm256_setzero_ps(), a##c##1 = a##c##0, \
                                 a##c##2 = a##c##0;
#define CNX_SGI2_FMA2(c)                               \
    {                                                  \
        __m256 b_ = _mm256_broadcast_ss(w + (c));      \
        a##c##0 = _mm256_fmadd_ps(b_, x0, a##c##0);    \
        a##c##1 = _mm256_fmadd_ps(b_, x1, a##c##1);    \
    }
#define CNX_SGI2_FMA3(c)                               \
    {                                                  \
        __m256 b_ = _mm256_broadcast_ss(w + (c));      \
        a##c##0 = _mm256_fmadd_ps(b_, x0, a##c##0);    \
        a##c##1 = _mm256_fmadd_ps(b_, x1, a##c##1);    \
        a##c##2 = _mm256_fmadd_ps(b_, x2, a##c##2);    \
    }
#define CNX_SGI2_LOAD2 __m256 x0 = _mm256_loadu_ps(g), x1 = _mm256_loadu_ps(g + 8);
#define CNX_SGI2_LOAD3 __m256 x0 = _mm256_loadu_ps(g), x1 = _mm256_loadu_ps(g + 8), \
                              x2 = _mm256_loadu_ps(g + 16);
#define CNX_SGI2_STORE(c, v, m)                                         \
    if (c0 + (c) < C)                                                   \
        _mm256_maskstore_ps(gx + (c0 + (c)) * HW + q0 + 8 * (v), (m), a##c##v);

/* As cnx_sgi_rows_avx512: blocks of 6 channels x 16 positions (12
 * accumulators: 2 + 6 loads per 12 multiply-adds) while more than 3
 * channels are left, then of 3 channels x 24 positions. */
CNX_TARGET_AVX2
static void cnx_sgi_rows_avx2(const float *gp, int64_t ldg, int64_t Co,
                              const float *wt, int64_t ldw, const int64_t *tshift,
                              const int64_t *trow, int64_t KT, int64_t W, int64_t OH,
                              float *gx, int64_t C, int64_t HW) {
    int64_t c0 = 0, q0, co, t, tlo, thi;
    for (; C - c0 > 3; c0 += 6) {
        for (q0 = 0; q0 < HW; q0 += 16) {
            __m256i m0 = cnx_sc_mask8(HW - q0), m1 = cnx_sc_mask8(HW - q0 - 8);
            cnx_sgi_taps(trow, KT, W, OH, HW, q0, 16, &tlo, &thi);
            CNX_SGI2_ZERO2(0) CNX_SGI2_ZERO2(1) CNX_SGI2_ZERO2(2)
            CNX_SGI2_ZERO2(3) CNX_SGI2_ZERO2(4) CNX_SGI2_ZERO2(5)
            CNX_SGI_LOOP(CNX_SGI2_LOAD2,
                         CNX_SGI2_FMA2(0) CNX_SGI2_FMA2(1) CNX_SGI2_FMA2(2)
                         CNX_SGI2_FMA2(3) CNX_SGI2_FMA2(4) CNX_SGI2_FMA2(5))
            CNX_SGI2_STORE(0, 0, m0) CNX_SGI2_STORE(0, 1, m1)
            CNX_SGI2_STORE(1, 0, m0) CNX_SGI2_STORE(1, 1, m1)
            CNX_SGI2_STORE(2, 0, m0) CNX_SGI2_STORE(2, 1, m1)
            CNX_SGI2_STORE(3, 0, m0) CNX_SGI2_STORE(3, 1, m1)
            CNX_SGI2_STORE(4, 0, m0) CNX_SGI2_STORE(4, 1, m1)
            CNX_SGI2_STORE(5, 0, m0) CNX_SGI2_STORE(5, 1, m1)
        }
    }
    for (; c0 < C; c0 += 3) {
        for (q0 = 0; q0 < HW; q0 += 24) {
            __m256i m0 = cnx_sc_mask8(HW - q0), m1 = cnx_sc_mask8(HW - q0 - 8),
                    m2 = cnx_sc_mask8(HW - q0 - 16);
            cnx_sgi_taps(trow, KT, W, OH, HW, q0, 24, &tlo, &thi);
            CNX_SGI2_ZERO3(0) CNX_SGI2_ZERO3(1) CNX_SGI2_ZERO3(2)
            CNX_SGI_LOOP(CNX_SGI2_LOAD3,
                         CNX_SGI2_FMA3(0) CNX_SGI2_FMA3(1) CNX_SGI2_FMA3(2))
            CNX_SGI2_STORE(0, 0, m0) CNX_SGI2_STORE(0, 1, m1) CNX_SGI2_STORE(0, 2, m2)
            CNX_SGI2_STORE(1, 0, m0) CNX_SGI2_STORE(1, 1, m1) CNX_SGI2_STORE(1, 2, m2)
            CNX_SGI2_STORE(2, 0, m0) CNX_SGI2_STORE(2, 1, m1) CNX_SGI2_STORE(2, 2, m2)
        }
    }
}

#define CNX_SGP2_ROW(c, LOAD)                                           \
    {                                                                   \
        __m256 g_ = LOAD(g##c + q);                                     \
        a##c##0 = _mm256_fmadd_ps(g_, x0, a##c##0);                     \
        a##c##1 = _mm256_fmadd_ps(g_, x1, a##c##1);                     \
    }
#define CNX_SGP2_LOAD(c)                                                        \
    __m256 a##c##0 = _mm256_loadu_ps(acc + ((co0 + (c)) * K + k0) * 8),        \
           a##c##1 = _mm256_loadu_ps(acc + ((co0 + (c)) * K + k0 + 1) * 8);
#define CNX_SGP2_STORE(c)                                                       \
    _mm256_storeu_ps(acc + ((co0 + (c)) * K + k0) * 8, a##c##0);                \
    _mm256_storeu_ps(acc + ((co0 + (c)) * K + k0 + 1) * 8, a##c##1);
#define CNX_SGP2_FULL(p) _mm256_loadu_ps(p)
#define CNX_SGP2_TAIL(p) _mm256_maskload_ps((p), m)
#define CNX_SGP2_STEP(LOAD)                                                     \
    {                                                                           \
        __m256 x0 = LOAD(t0 + q), x1 = LOAD(t1 + q);                            \
        CNX_SGP2_ROW(0, LOAD) CNX_SGP2_ROW(1, LOAD) CNX_SGP2_ROW(2, LOAD)       \
        CNX_SGP2_ROW(3, LOAD) CNX_SGP2_ROW(4, LOAD) CNX_SGP2_ROW(5, LOAD)       \
    }

/* As cnx_sgw_pvec_avx512 with 8 lanes: acc[(co*K + k)*8 + l] += sum over
 * q < Q, q = l (mod 8); K a multiple of 2 (the caller's, of 4).  Blocks of
 * 6 channels x 2 taps: 12 accumulators, 2 + 6 loads per 12 multiply-adds. */
CNX_TARGET_AVX2
static void cnx_sgw_pvec_avx2(const float *xn, const int64_t *toff, int64_t K,
                              const float *const *grow, int64_t Co, int64_t Q,
                              float *acc) {
    int64_t co0, k0, q, Qf = Q & ~(int64_t)7;
    __m256i m = cnx_sc_mask8(Q - Qf);
    for (co0 = 0; co0 < Co; co0 += 6) {
        const float *g0 = grow[co0], *g1 = grow[co0 + 1], *g2 = grow[co0 + 2],
                    *g3 = grow[co0 + 3], *g4 = grow[co0 + 4], *g5 = grow[co0 + 5];
        for (k0 = 0; k0 < K; k0 += 2) {
            const float *t0 = xn + toff[k0], *t1 = xn + toff[k0 + 1];
            CNX_SGP2_LOAD(0) CNX_SGP2_LOAD(1) CNX_SGP2_LOAD(2)
            CNX_SGP2_LOAD(3) CNX_SGP2_LOAD(4) CNX_SGP2_LOAD(5)
            for (q = 0; q < Qf; q += 8)
                CNX_SGP2_STEP(CNX_SGP2_FULL)
            if (q < Q)
                CNX_SGP2_STEP(CNX_SGP2_TAIL)
            CNX_SGP2_STORE(0) CNX_SGP2_STORE(1) CNX_SGP2_STORE(2)
            CNX_SGP2_STORE(3) CNX_SGP2_STORE(4) CNX_SGP2_STORE(5)
        }
    }
}

static cnx_smallconv cnx_smallconv_select(void) {
    cnx_smallconv k = {0, 0, NULL, NULL, NULL};
    int isa = cnx_isa_from_env(cnx_detect_isa());
    if (isa == 2) {
        k.isa = 2; k.lanes = 16;
        k.cvec = cnx_sgw_cvec_avx512; k.pvec = cnx_sgw_pvec_avx512; k.rows = cnx_sgi_rows_avx512;
    } else if (isa == 1) {
        k.isa = 1; k.lanes = 8;
        k.cvec = cnx_sgw_cvec_avx2; k.pvec = cnx_sgw_pvec_avx2; k.rows = cnx_sgi_rows_avx2;
    }
    return k;
}

#else /* not x86: none */

static cnx_smallconv cnx_smallconv_select(void) {
    cnx_smallconv k = {0, 0, NULL, NULL, NULL};
    return k;
}

#endif
#endif
