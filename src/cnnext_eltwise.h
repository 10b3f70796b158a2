/*
 * An AVX-512 version of src/_eltwise.pyx's channel_sums, the bias
 * gradient's per-channel sums (runtime dispatch: the GEMM micro-kernels'
 * instruction-set choice, CNNEXT_ISA included).  It gives exactly the
 * numbers of the portable loop, which runs when cnx_elt_avx512() is 0.
 *
 * The portable loop keeps, per channel, eight float64 partial
 * sums acc[j] (row element p + j of each full group of eight; the P % 8
 * elements at the end of each row go into acc[0] one by one) and adds them
 * as ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)).  Here one zmm holds
 * a channel's eight partial sums and four channels run side by side (four
 * independent chains of additions instead of one), each addition the
 * portable loop's; a row's last elements are added into lane 0 one at a
 * time, in order.  With P == 1 (a dense layer's bias) the portable loop's
 * sum of a channel is acc[0] alone (the other seven stay +0.0, and adding
 * +0.0 changes no sum that starts at +0.0), so eight channels share a zmm,
 * one lane each, summed over the batch in order.
 *
 * cnx_take2_s / cnx_take2_d: one row of take_strided at column stride 2,
 * d[j] = s[2*j] for j < n of a W-value row, by two vector loads (masked
 * at the row's end: nothing past it is read) and one permutation keeping
 * their even lanes, where the portable loop reads one value at a time.
 */
#ifndef CNNEXT_ELTWISE_H
#define CNNEXT_ELTWISE_H

#include <stddef.h>
#include <stdint.h>
#include "cnnext_ukernel.h"

#if defined(CNX_X86) && !(defined(_MSC_VER) && !defined(__clang__))

/* 1 when the AVX-512 loops run on this CPU (and CNNEXT_ISA allows). */
static int cnx_elt_avx512(void) { return cnx_isa_from_env(cnx_detect_isa()) == 2; }

/* Eight float32 (load 8, widen) or float64 values at r as float64 lanes. */
#define CNX_LD8_s(r) _mm512_cvtps_pd(_mm256_loadu_ps(r))
#define CNX_LD8_d(r) _mm512_loadu_pd(r)

/* The sums of channels c0 .. c0 + K - 1 (K <= 4) of g (N, C, P), P >= 1,
 * into out; the portable loop's additions (see above). */
#define CNX_CHSUM_BLOCK(SUF, T)                                                 \
    CNX_TARGET_AVX512 static inline __attribute__((always_inline)) void        \
    cnx_chsum_block_##SUF(const T *g, ptrdiff_t N, ptrdiff_t C, ptrdiff_t P,    \
                          ptrdiff_t c0, int K, T *out) {                         \
        __m512d acc[4];                                                         \
        double a[8];                                                            \
        ptrdiff_t n, p, P8 = P - P % 8;                                         \
        int k;                                                                  \
        for (k = 0; k < K; k++) acc[k] = _mm512_setzero_pd();                   \
        for (n = 0; n < N; n++) {                                               \
            const T *row = g + (n * C + c0) * P;                                \
            for (p = 0; p < P8; p += 8)                                         \
                for (k = 0; k < K; k++)                                         \
                    acc[k] = _mm512_add_pd(acc[k], CNX_LD8_##SUF(row + k * P + p)); \
            for (; p < P; p++)                                                  \
                for (k = 0; k < K; k++)                                         \
                    acc[k] = _mm512_mask_add_pd(acc[k], 1, acc[k],              \
                                                _mm512_set1_pd((double)row[k * P + p])); \
        }                                                                       \
        for (k = 0; k < K; k++) {                                               \
            _mm512_storeu_pd(a, acc[k]);                                        \
            out[c0 + k] = (T)(((a[0] + a[1]) + (a[2] + a[3])) +                 \
                              ((a[4] + a[5]) + (a[6] + a[7])));                 \
        }                                                                       \
    }
CNX_CHSUM_BLOCK(s, float)
CNX_CHSUM_BLOCK(d, double)

/* P == 1: lane c of a zmm sums g[:, c] over the batch, in order. */
CNX_TARGET_AVX512
static void cnx_chsum_p1_s(const float *g, ptrdiff_t N, ptrdiff_t C, float *out) {
    ptrdiff_t c, n;
    for (c = 0; c < C; c += 16) {
        ptrdiff_t r = C - c < 16 ? C - c : 16;
        __mmask16 mk = (__mmask16)(r == 16 ? 0xFFFF : (1u << r) - 1u);
        __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
        for (n = 0; n < N; n++) {
            __m512 v = _mm512_maskz_loadu_ps(mk, g + n * C + c);
            lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
            hi = _mm512_add_pd(hi, _mm512_cvtps_pd(
                _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
        }
        _mm512_mask_storeu_ps(
            out + c, mk,
            _mm512_castpd_ps(_mm512_insertf64x4(
                _mm512_castps_pd(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo))),
                _mm256_castps_pd(_mm512_cvtpd_ps(hi)), 1)));
    }
}

CNX_TARGET_AVX512
static void cnx_chsum_p1_d(const double *g, ptrdiff_t N, ptrdiff_t C, double *out) {
    ptrdiff_t c, n;
    for (c = 0; c < C; c += 8) {
        ptrdiff_t r = C - c < 8 ? C - c : 8;
        __mmask8 mk = (__mmask8)(r == 8 ? 0xFF : (1u << r) - 1u);
        __m512d acc = _mm512_setzero_pd();
        for (n = 0; n < N; n++)
            acc = _mm512_add_pd(acc, _mm512_maskz_loadu_pd(mk, g + n * C + c));
        _mm512_mask_storeu_pd(out + c, mk, acc);
    }
}

/* out[c] = the sum of g[:, c, :] for g (N, C, P), the portable loop's value. */
#define CNX_CHSUM(SUF, T)                                                       \
    CNX_TARGET_AVX512 static void cnx_chsum_##SUF(const T *g, ptrdiff_t N,      \
                                                  ptrdiff_t C, ptrdiff_t P, T *out) { \
        ptrdiff_t c;                                                            \
        if (P == 1) {                                                           \
            cnx_chsum_p1_##SUF(g, N, C, out);                                   \
            return;                                                             \
        }                                                                       \
        for (c = 0; c + 4 <= C; c += 4) cnx_chsum_block_##SUF(g, N, C, P, c, 4, out); \
        switch (C - c) {                                                        \
        case 3: cnx_chsum_block_##SUF(g, N, C, P, c, 3, out); break;            \
        case 2: cnx_chsum_block_##SUF(g, N, C, P, c, 2, out); break;            \
        case 1: cnx_chsum_block_##SUF(g, N, C, P, c, 1, out); break;            \
        default: break;                                                         \
        }                                                                       \
    }
CNX_CHSUM(s, float)
CNX_CHSUM(d, double)

/* The lanes [0, n) of a 16-lane (float) or 8-lane (double) vector, n >= 0. */
#define CNX_TAKE_MASK(n, L) \
    ((n) >= (L) ? (uint32_t)((1u << (L)) - 1u) : (uint32_t)((1u << ((n) > 0 ? (n) : 0)) - 1u))

CNX_TARGET_AVX512
static void cnx_take2_s(const float *s, ptrdiff_t W, float *d, ptrdiff_t n) {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14,
                                           16, 18, 20, 22, 24, 26, 28, 30);
    ptrdiff_t j;
    for (j = 0; j < n; j += 16) {
        ptrdiff_t r = W - 2 * j; /* values of the row from s + 2j on */
        __m512 a = _mm512_maskz_loadu_ps((__mmask16)CNX_TAKE_MASK(r, 16), s + 2 * j);
        __m512 b = _mm512_maskz_loadu_ps((__mmask16)CNX_TAKE_MASK(r - 16, 16), s + 2 * j + 16);
        _mm512_mask_storeu_ps(d + j, (__mmask16)CNX_TAKE_MASK(n - j, 16),
                              _mm512_permutex2var_ps(a, even, b));
    }
}

CNX_TARGET_AVX512
static void cnx_take2_d(const double *s, ptrdiff_t W, double *d, ptrdiff_t n) {
    const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
    ptrdiff_t j;
    for (j = 0; j < n; j += 8) {
        ptrdiff_t r = W - 2 * j;
        __m512d a = _mm512_maskz_loadu_pd((__mmask8)CNX_TAKE_MASK(r, 8), s + 2 * j);
        __m512d b = _mm512_maskz_loadu_pd((__mmask8)CNX_TAKE_MASK(r - 8, 8), s + 2 * j + 8);
        _mm512_mask_storeu_pd(d + j, (__mmask8)CNX_TAKE_MASK(n - j, 8),
                              _mm512_permutex2var_pd(a, even, b));
    }
}

#undef CNX_TAKE_MASK

#else

static int cnx_elt_avx512(void) { return 0; }
static void cnx_chsum_s(const float *g, ptrdiff_t N, ptrdiff_t C, ptrdiff_t P, float *out) {
    (void)g; (void)N; (void)C; (void)P; (void)out;
}
static void cnx_chsum_d(const double *g, ptrdiff_t N, ptrdiff_t C, ptrdiff_t P, double *out) {
    (void)g; (void)N; (void)C; (void)P; (void)out;
}
static void cnx_take2_s(const float *s, ptrdiff_t W, float *d, ptrdiff_t n) {
    (void)s; (void)W; (void)d; (void)n;
}
static void cnx_take2_d(const double *s, ptrdiff_t W, double *d, ptrdiff_t n) {
    (void)s; (void)W; (void)d; (void)n;
}

#endif

#endif /* CNNEXT_ELTWISE_H */
