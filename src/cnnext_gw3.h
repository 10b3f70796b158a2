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
 * cnx_pack_gt16_s_avx512 packs that product's B panel (the gradient block,
 * positions x one vector of channels) with vector loads and 16 x 16
 * transposes instead of one scalar store per value.
 *
 * cnx_gw3_s_select() / cnx_pack_gt16_s_select() return them, or NULL where
 * AVX-512F is not available (or CNNEXT_ISA asks for less): the caller then
 * keeps the 16-row kernel and the scalar packing (the packing has an AVX2
 * version too, cnx_pack_gt16_s_avx2).
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

/* The 16 x 16 transpose of r0..r15 in place (r_i becomes column i). */
#define CNX_T16_PAIR(A, B, lo, hi) \
    lo = _mm512_unpacklo_ps(A, B); hi = _mm512_unpackhi_ps(A, B);
#define CNX_T16_SHUF(P, Q, A, B, imm) \
    A = _mm512_shuffle_ps(P, Q, 0x44); B = _mm512_shuffle_ps(P, Q, 0xEE);
#define CNX_T16_LANE(P, Q, A, B) \
    A = _mm512_shuffle_f32x4(P, Q, 0x88); B = _mm512_shuffle_f32x4(P, Q, 0xDD);
#define CNX_TRANSPOSE16()                                                   \
    {                                                                       \
        __m512 t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12, t13,  \
            t14, t15;                                                       \
        CNX_T16_PAIR(r0, r1, t0, t1) CNX_T16_PAIR(r2, r3, t2, t3)           \
        CNX_T16_PAIR(r4, r5, t4, t5) CNX_T16_PAIR(r6, r7, t6, t7)           \
        CNX_T16_PAIR(r8, r9, t8, t9) CNX_T16_PAIR(r10, r11, t10, t11)       \
        CNX_T16_PAIR(r12, r13, t12, t13) CNX_T16_PAIR(r14, r15, t14, t15)   \
        CNX_T16_SHUF(t0, t2, r0, r1, 0) CNX_T16_SHUF(t1, t3, r2, r3, 0)     \
        CNX_T16_SHUF(t4, t6, r4, r5, 0) CNX_T16_SHUF(t5, t7, r6, r7, 0)     \
        CNX_T16_SHUF(t8, t10, r8, r9, 0) CNX_T16_SHUF(t9, t11, r10, r11, 0) \
        CNX_T16_SHUF(t12, t14, r12, r13, 0)                                 \
        CNX_T16_SHUF(t13, t15, r14, r15, 0)                                 \
        CNX_T16_LANE(r0, r4, t0, t4) CNX_T16_LANE(r1, r5, t1, t5)           \
        CNX_T16_LANE(r2, r6, t2, t6) CNX_T16_LANE(r3, r7, t3, t7)           \
        CNX_T16_LANE(r8, r12, t8, t12) CNX_T16_LANE(r9, r13, t9, t13)       \
        CNX_T16_LANE(r10, r14, t10, t14) CNX_T16_LANE(r11, r15, t11, t15)   \
        CNX_T16_LANE(t0, t8, r0, r8) CNX_T16_LANE(t1, t9, r1, r9)           \
        CNX_T16_LANE(t2, t10, r2, r10) CNX_T16_LANE(t3, t11, r3, r11)       \
        CNX_T16_LANE(t4, t12, r4, r12) CNX_T16_LANE(t5, t13, r5, r13)       \
        CNX_T16_LANE(t6, t14, r6, r14) CNX_T16_LANE(t7, t15, r7, r15)       \
    }
#define CNX_PK_LOAD(j) \
    if (nch > (j)) r##j = _mm512_mask_loadu_ps(r##j, m, src + (j) * ldg);
#define CNX_PK_STORE(i) \
    if (n > (i)) _mm512_storeu_ps(dst + (q0 + (i)) * 16, r##i);

/* The lanes [l, *e) of a packing block (lane l at padded position pos, lanes
 * below n) that lie in output row *oh, from column *ow; those below *v hold
 * outputs, the rest padded columns (Wq a row's padded width, OW its
 * outputs). */
static inline void cnx_gt16_run(int64_t pos, int64_t l, int64_t n, int64_t Wq, int64_t OW,
                                int64_t *oh, int64_t *ow, int64_t *e, int64_t *v) {
    *oh = pos / Wq;
    *ow = pos - *oh * Wq;
    *e = l + (Wq - *ow);
    *v = l + (OW - *ow);
    if (*e > n) *e = n;
    if (*v > *e) *v = *e;
}

/* The gradient block of the transposed weight gradient, one vector of
 * output channels: dst[q*16 + j] = g[j*ldg + oh*OW + ow] for the
 * padded-width position pb + q = oh*Wq + ow (q < kc), 0 where ow >= OW (a
 * junk position) or j >= nch.  16 positions at a time: each channel's
 * values loaded under the mask of the lanes each output row covers, then
 * transposed (the scalar loop it replaces stores one value at a time). */
CNX_TARGET_AVX512
static void cnx_pack_gt16_s_avx512(const float *g, int64_t ldg, int nch, int64_t pb,
                                   int64_t kc, int64_t Wq, int64_t OW, float *dst) {
    int64_t q0;
    for (q0 = 0; q0 < kc; q0 += 16) {
        int64_t n = kc - q0 < 16 ? kc - q0 : 16, l = 0;
        __m512 r0 = _mm512_setzero_ps(), r1 = r0, r2 = r0, r3 = r0, r4 = r0, r5 = r0,
               r6 = r0, r7 = r0, r8 = r0, r9 = r0, r10 = r0, r11 = r0, r12 = r0,
               r13 = r0, r14 = r0, r15 = r0;
        while (l < n) { /* lanes [l, e) lie in output row oh */
            int64_t oh, ow, e, v;
            cnx_gt16_run(pb + q0 + l, l, n, Wq, OW, &oh, &ow, &e, &v);
            if (v > l) {
                /* lane t reads src[t]: row oh's column ow + t - l */
                __mmask16 m = (__mmask16)(((1u << v) - 1u) & ~((1u << l) - 1u));
                const float *src = g + oh * OW + ow - l;
                CNX_PK_LOAD(0) CNX_PK_LOAD(1) CNX_PK_LOAD(2) CNX_PK_LOAD(3)
                CNX_PK_LOAD(4) CNX_PK_LOAD(5) CNX_PK_LOAD(6) CNX_PK_LOAD(7)
                CNX_PK_LOAD(8) CNX_PK_LOAD(9) CNX_PK_LOAD(10) CNX_PK_LOAD(11)
                CNX_PK_LOAD(12) CNX_PK_LOAD(13) CNX_PK_LOAD(14) CNX_PK_LOAD(15)
            }
            l = e;
        }
        CNX_TRANSPOSE16()
        CNX_PK_STORE(0) CNX_PK_STORE(1) CNX_PK_STORE(2) CNX_PK_STORE(3)
        CNX_PK_STORE(4) CNX_PK_STORE(5) CNX_PK_STORE(6) CNX_PK_STORE(7)
        CNX_PK_STORE(8) CNX_PK_STORE(9) CNX_PK_STORE(10) CNX_PK_STORE(11)
        CNX_PK_STORE(12) CNX_PK_STORE(13) CNX_PK_STORE(14) CNX_PK_STORE(15)
    }
}

#undef CNX_T16_PAIR
#undef CNX_T16_SHUF
#undef CNX_T16_LANE
#undef CNX_TRANSPOSE16
#undef CNX_PK_LOAD
#undef CNX_PK_STORE

/* cnx_pack_gt16_s_avx512 for AVX2: each channel's run of a row loaded
 * under its lanes' masks into a 16 x 16 block (two vectors a row), then
 * four 8 x 8 transposes. */
CNX_TARGET_AVX2
static void cnx_pack_gt16_s_avx2(const float *g, int64_t ldg, int nch, int64_t pb,
                                 int64_t kc, int64_t Wq, int64_t OW, float *dst) {
    int64_t q0;
    int j, h, i;
    for (q0 = 0; q0 < kc; q0 += 16) {
        int64_t n = kc - q0 < 16 ? kc - q0 : 16, l = 0;
        __m256 blk[16][2]; /* blk[channel][half]: lanes = positions */
        for (j = 0; j < 16; j++) blk[j][0] = blk[j][1] = _mm256_setzero_ps();
        while (l < n) { /* lanes [l, e) lie in output row oh */
            int64_t oh, ow, e, v;
            cnx_gt16_run(pb + q0 + l, l, n, Wq, OW, &oh, &ow, &e, &v);
            if (v > l) {
                /* lane t reads src[t]: row oh's column ow + t - l */
                __m256i m0 = cnx_lanes_avx2(l, v), m1 = cnx_lanes_avx2(l - 8, v - 8);
                const float *src = g + oh * OW + ow - l;
                for (j = 0; j < nch; j++) {
                    blk[j][0] = _mm256_or_ps(blk[j][0], _mm256_maskload_ps(src + j * ldg, m0));
                    blk[j][1] = _mm256_or_ps(blk[j][1], _mm256_maskload_ps(src + j * ldg + 8, m1));
                }
            }
            l = e;
        }
        /* block (channels 8c.., positions 8h..) transposed: rows are positions */
        for (h = 0; h < 2; h++)
            for (i = 0; i < 2; i++) {
                __m256 rr[8];
                int t;
                for (t = 0; t < 8; t++) rr[t] = blk[8 * i + t][h];
                cnx_transpose8_ps_avx2(rr);
                for (t = 0; t < 8 && 8 * h + t < n; t++)
                    _mm256_storeu_ps(dst + (q0 + 8 * h + t) * 16 + 8 * i, rr[t]);
            }
    }
}

typedef void (*cnx_pack_gt16_s)(const float *g, int64_t ldg, int nch, int64_t pb,
                                int64_t kc, int64_t Wq, int64_t OW, float *dst);

static cnx_ukr_s cnx_gw3_s_select(void) {
    return cnx_isa_from_env(cnx_detect_isa()) == 2 ? cnx_gw3_s_avx512 : NULL;
}

static cnx_pack_gt16_s cnx_pack_gt16_s_select(void) {
    int isa = cnx_isa_from_env(cnx_detect_isa());
    return isa == 2 ? cnx_pack_gt16_s_avx512 : isa == 1 ? cnx_pack_gt16_s_avx2 : NULL;
}

#else

typedef void (*cnx_pack_gt16_s)(const float *g, int64_t ldg, int nch, int64_t pb,
                                int64_t kc, int64_t Wq, int64_t OW, float *dst);

static cnx_ukr_s cnx_gw3_s_select(void) { return NULL; }
static cnx_pack_gt16_s cnx_pack_gt16_s_select(void) { return NULL; }

#endif /* CNX_X86 */

#endif /* CNNEXT_GW3_H */
