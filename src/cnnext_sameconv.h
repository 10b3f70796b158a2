/*
 * cnnext: a direct AVX-512 float32 3x3 convolution at stride 1 with
 * padding 1 (undilated), reading the sample in place.
 *
 * The result keeps the input's H x W, so result position p = oh*W + ow of
 * the flattened map reads tap (i, j) of channel c at input position
 * c*HW + p + (i - 1)*W + (j - 1): one offset per tap for every position.
 * Vectors of 16 consecutive positions (across row ends) load each tap's
 * inputs with one masked load: the lanes whose tap falls outside the map
 * (left of column 0, right of column W - 1, above row 0, below row H - 1)
 * read zero, exactly the zeros a padded copy would hold, so no padded copy
 * of the sample is made and every lane but the map's last vector's tail is
 * a result.  A masked-off lane may point before the sample or past the
 * map: AVX-512 masked loads never touch those addresses.
 *
 * cnx_same3_panel_avx512: one sample's results for one panel of up to 8
 * result channels, in blocks of 3 vectors (48 positions): 24 accumulators,
 * 3 loads + 8 broadcasts per 24 multiply-adds.  The caller's table
 * mt[b*9 + t] holds the lanes of vector b that tap t reads inside the map.
 * Blocks inside rows 1 .. H - 2 only need the column masks (j = 0: not
 * column 0; j = 2: not column W - 1), kept in mask registers; the others
 * (and the last one or two vectors) read every tap's masks from the table.
 * Each result is the sum over the K = 9*C taps in order (c, i, j) from
 * zero, plus the bias: the same bits as the fused-im2col GEMM kernels when
 * K fits their one block of taps (KC >= 9*C; the caller's condition).
 *
 * cnx_same3_panel_avx2: the same for AVX2's 8-position vectors and panels
 * of up to 4 result channels: blocks of 2 vectors (16 positions), 8
 * accumulators, 2 loads + 4 broadcasts per 8 multiply-adds, the 4 column
 * masks in registers too (blocks of 3 vectors, 12 accumulators, left no
 * register for the masks: the compiler spilled accumulators, and it ran 5%
 * slower than the general kernels where these ran 6-8% faster).  Blocks
 * whose taps all fall inside the sample's channel plane (rows 1 .. H - 2,
 * one position more each way) load plainly and AND the left and right
 * columns' taps with the column masks (a lane from the neighbouring row
 * becomes +0, what the padded copy holds); the others load through the
 * table's masks (mt[b*9 + t] for 8-position vector b), never reading
 * outside the map.  The same operations in the same order as the AVX2
 * fused-im2col kernels: the same bits.
 */
#ifndef CNNEXT_SAMECONV_H
#define CNNEXT_SAMECONV_H

#include "cnnext_ukernel.h"

typedef void (*cnx_same3_fn)(const float *xn, int64_t HW, int64_t W, int64_t C,
                             const uint16_t *mt, const float *wp, const float *bias, int mc,
                             float *out, int64_t ldo);

#ifdef CNX_X86

#define CNX_SAME_ROW(r)                                              \
    {                                                                \
        __m512 b_ = _mm512_set1_ps(w[r]);                            \
        a##r##0 = _mm512_fmadd_ps(b_, x0, a##r##0);                  \
        if (NV > 1) a##r##1 = _mm512_fmadd_ps(b_, x1, a##r##1);      \
        if (NV > 2) a##r##2 = _mm512_fmadd_ps(b_, x2, a##r##2);      \
    }
#define CNX_SAME_ZERO(r) \
    __m512 a##r##0 = _mm512_setzero_ps(), a##r##1 = a##r##0, a##r##2 = a##r##0;
#define CNX_SAME_STV(r, v)                                                    \
    if (NV > (v)) {                                                           \
        __m512 s_ = a##r##v;                                                  \
        if (bias)                                                             \
            s_ = _mm512_add_ps(s_, _mm512_set1_ps(bias[r]));                  \
        _mm512_mask_storeu_ps(out + (r) * ldo + p0 + 16 * (v), sm##v, s_);    \
    }
#define CNX_SAME_STORE(r) \
    if (mc > (r)) { CNX_SAME_STV(r, 0) CNX_SAME_STV(r, 1) CNX_SAME_STV(r, 2) }
/* Tap t's mask for vector v: from the table at the edges, else the column's. */
#define CNX_SAME_MASK(v, t)                                                     \
    (EDGE ? (__mmask16)mb[(v) * 9 + (t)]                                        \
          : (t) % 3 == 0 ? l##v : (t) % 3 == 2 ? r##v : (__mmask16)0xFFFF)
#define CNX_SAME_TAP(i, j)                                                      \
    {                                                                           \
        const float *xp = xc + ((i) - 1) * W + (j) - 1;                         \
        const float *w = wc + (3 * (i) + (j)) * 8;                              \
        __m512 x0 = _mm512_maskz_loadu_ps(CNX_SAME_MASK(0, 3 * (i) + (j)), xp); \
        __m512 x1 = x0, x2 = x0;                                                \
        if (NV > 1)                                                             \
            x1 = _mm512_maskz_loadu_ps(CNX_SAME_MASK(1, 3 * (i) + (j)), xp + 16); \
        if (NV > 2)                                                             \
            x2 = _mm512_maskz_loadu_ps(CNX_SAME_MASK(2, 3 * (i) + (j)), xp + 32); \
        CNX_SAME_ROW(0) CNX_SAME_ROW(1) CNX_SAME_ROW(2) CNX_SAME_ROW(3)         \
        CNX_SAME_ROW(4) CNX_SAME_ROW(5) CNX_SAME_ROW(6) CNX_SAME_ROW(7)         \
    }

/* out[r*ldo + p] (r < mc, p0 <= p < p0 + 16*NV, p < HW) = bias[r] + the
 * sum over c < C, taps (i, j) of wp[(9*c + 3*i + j)*8 + r] * the input at
 * tap (i, j) of channel c for position p (zero outside the map).  EDGE:
 * take every tap's masks from mt (else the block lies in rows 1 .. H - 2,
 * NV = 3). */
CNX_TARGET_AVX512
static inline __attribute__((always_inline)) void
cnx_same3_block(const float *xn, int64_t p0, int64_t HW, int64_t W, int64_t C,
                const uint16_t *mt, const float *wp, const float *bias, int mc,
                float *out, int64_t ldo, const int NV, const int EDGE) {
    const uint16_t *mb = mt + (p0 / 16) * 9;
    __mmask16 l0 = (__mmask16)mb[3], l1 = 0, l2 = 0;
    __mmask16 r0 = (__mmask16)mb[5], r1 = 0, r2 = 0;
    int64_t left = HW - p0, c;
    __mmask16 sm0 = (__mmask16)(left >= 16 ? 0xFFFF : ((1u << left) - 1u));
    __mmask16 sm1 = (__mmask16)(left >= 32 ? 0xFFFF
                                : left <= 16 ? 0 : ((1u << (left - 16)) - 1u));
    __mmask16 sm2 = (__mmask16)(left >= 48 ? 0xFFFF
                                : left <= 32 ? 0 : ((1u << (left - 32)) - 1u));
    if (!EDGE) {
        l1 = (__mmask16)mb[12];
        l2 = (__mmask16)mb[21];
        r1 = (__mmask16)mb[14];
        r2 = (__mmask16)mb[23];
    }
    CNX_SAME_ZERO(0) CNX_SAME_ZERO(1) CNX_SAME_ZERO(2) CNX_SAME_ZERO(3)
    CNX_SAME_ZERO(4) CNX_SAME_ZERO(5) CNX_SAME_ZERO(6) CNX_SAME_ZERO(7)
    for (c = 0; c < C; c++) {
        const float *xc = xn + c * HW + p0;
        const float *wc = wp + c * 72;
        CNX_SAME_TAP(0, 0) CNX_SAME_TAP(0, 1) CNX_SAME_TAP(0, 2)
        CNX_SAME_TAP(1, 0) CNX_SAME_TAP(1, 1) CNX_SAME_TAP(1, 2)
        CNX_SAME_TAP(2, 0) CNX_SAME_TAP(2, 1) CNX_SAME_TAP(2, 2)
    }
    CNX_SAME_STORE(0) CNX_SAME_STORE(1) CNX_SAME_STORE(2) CNX_SAME_STORE(3)
    CNX_SAME_STORE(4) CNX_SAME_STORE(5) CNX_SAME_STORE(6) CNX_SAME_STORE(7)
}

/* One sample (C channels of H x W, HW = H*W), one panel of mc <= 8 result
 * channels (their weights wp[(9*c + t)*8 + r], rows past mc zero) to
 * out[r*ldo + p]. */
CNX_TARGET_AVX512
static void cnx_same3_panel_avx512(const float *xn, int64_t HW, int64_t W, int64_t C,
                                   const uint16_t *mt, const float *wp, const float *bias,
                                   int mc, float *out, int64_t ldo) {
    int64_t p0 = 0;
    for (; HW - p0 > 32; p0 += 48)
        if (p0 >= W && p0 + 48 <= HW - W)
            cnx_same3_block(xn, p0, HW, W, C, mt, wp, bias, mc, out, ldo, 3, 0);
        else
            cnx_same3_block(xn, p0, HW, W, C, mt, wp, bias, mc, out, ldo, 3, 1);
    if (HW - p0 > 16)
        cnx_same3_block(xn, p0, HW, W, C, mt, wp, bias, mc, out, ldo, 2, 1);
    else if (HW - p0 > 0)
        cnx_same3_block(xn, p0, HW, W, C, mt, wp, bias, mc, out, ldo, 1, 1);
}

#define CNX_SAME2_ROW(r)                                             \
    {                                                                \
        __m256 b_ = _mm256_broadcast_ss(w + (r));                    \
        a##r##0 = _mm256_fmadd_ps(b_, x0, a##r##0);                  \
        if (NV > 1) a##r##1 = _mm256_fmadd_ps(b_, x1, a##r##1);      \
    }
#define CNX_SAME2_ZERO(r) __m256 a##r##0 = _mm256_setzero_ps(), a##r##1 = a##r##0;
#define CNX_SAME2_STV(r, v)                                                   \
    if (NV > (v) && left > 8 * (v)) {                                         \
        __m256 s_ = a##r##v;                                                  \
        if (bias)                                                             \
            s_ = _mm256_add_ps(s_, _mm256_set1_ps(bias[r]));                  \
        CNX_Y_STORE_N(ps, out + (r) * ldo + p0 + 8 * (v), s_, left - 8 * (v), 8); \
    }
#define CNX_SAME2_STORE(r) \
    if (mc > (r)) { CNX_SAME2_STV(r, 0) CNX_SAME2_STV(r, 1) }
/* Vector v's inputs of tap (i, j): a masked load (EDGE) or a plain one,
 * AND-ed with the column's mask for j = 0 and j = 2. */
#define CNX_SAME2_LOAD(v, i, j)                                                \
    (EDGE ? _mm256_maskload_ps(xp + 8 * (v),                                   \
                               cnx_bits_lanes_avx2(mb[(v) * 9 + 3 * (i) + (j)])) \
          : (j) == 1 ? _mm256_loadu_ps(xp + 8 * (v))                           \
                     : _mm256_and_ps(_mm256_loadu_ps(xp + 8 * (v)), cm[(j) / 2][v]))
#define CNX_SAME2_TAP(i, j)                                                    \
    {                                                                          \
        const float *xp = xc + ((i) - 1) * W + (j) - 1;                        \
        const float *w = wc + (3 * (i) + (j)) * 4;                             \
        __m256 x0 = CNX_SAME2_LOAD(0, i, j), x1 = x0;                          \
        if (NV > 1) x1 = CNX_SAME2_LOAD(1, i, j);                              \
        CNX_SAME2_ROW(0) CNX_SAME2_ROW(1) CNX_SAME2_ROW(2) CNX_SAME2_ROW(3)    \
    }

/* out[r*ldo + p] (r < mc <= 4, p0 <= p < p0 + 8*NV, p < HW) as
 * cnx_same3_block, weights wp[(9*c + 3*i + j)*4 + r].  EDGE: every load
 * masked by the table (else the block's taps all lie inside the plane and
 * rows 1 .. H - 2: NV = 2). */
CNX_TARGET_AVX2
static inline __attribute__((always_inline)) void
cnx_same3_block_avx2(const float *xn, int64_t p0, int64_t HW, int64_t W, int64_t C,
                     const uint16_t *mt, const float *wp, const float *bias, int mc,
                     float *out, int64_t ldo, const int NV, const int EDGE) {
    const uint16_t *mb = mt + (p0 / 8) * 9;
    int64_t left = HW - p0, c;
    __m256 cm[2][2]; /* the left (j = 0) and right (j = 2) columns' lanes */
    if (!EDGE)
        for (int v = 0; v < 2; v++) {
            cm[0][v] = _mm256_castsi256_ps(cnx_bits_lanes_avx2(mb[v * 9 + 3]));
            cm[1][v] = _mm256_castsi256_ps(cnx_bits_lanes_avx2(mb[v * 9 + 5]));
        }
    CNX_SAME2_ZERO(0) CNX_SAME2_ZERO(1) CNX_SAME2_ZERO(2) CNX_SAME2_ZERO(3)
    for (c = 0; c < C; c++) {
        const float *xc = xn + c * HW + p0;
        const float *wc = wp + c * 36;
        CNX_SAME2_TAP(0, 0) CNX_SAME2_TAP(0, 1) CNX_SAME2_TAP(0, 2)
        CNX_SAME2_TAP(1, 0) CNX_SAME2_TAP(1, 1) CNX_SAME2_TAP(1, 2)
        CNX_SAME2_TAP(2, 0) CNX_SAME2_TAP(2, 1) CNX_SAME2_TAP(2, 2)
    }
    CNX_SAME2_STORE(0) CNX_SAME2_STORE(1) CNX_SAME2_STORE(2) CNX_SAME2_STORE(3)
}

/* One sample, one panel of mc <= 4 result channels (weights wp[(9*c + t)*4
 * + r], rows past mc zero) to out[r*ldo + p]. */
CNX_TARGET_AVX2
static void cnx_same3_panel_avx2(const float *xn, int64_t HW, int64_t W, int64_t C,
                                 const uint16_t *mt, const float *wp, const float *bias,
                                 int mc, float *out, int64_t ldo) {
    int64_t p0 = 0;
    for (; HW - p0 > 8; p0 += 16)
        if (p0 >= W + 1 && p0 + 16 + W + 1 <= HW)
            cnx_same3_block_avx2(xn, p0, HW, W, C, mt, wp, bias, mc, out, ldo, 2, 0);
        else
            cnx_same3_block_avx2(xn, p0, HW, W, C, mt, wp, bias, mc, out, ldo, 2, 1);
    if (HW - p0 > 0)
        cnx_same3_block_avx2(xn, p0, HW, W, C, mt, wp, bias, mc, out, ldo, 1, 1);
}

/* The kernel of this CPU (and CNNEXT_ISA): AVX-512's, AVX2's or NULL. */
static cnx_same3_fn cnx_same3_select(void) {
    int isa = cnx_isa_from_env(cnx_detect_isa());
    return isa == 2 ? cnx_same3_panel_avx512 : isa == 1 ? cnx_same3_panel_avx2 : NULL;
}

#else /* not x86: no kernel */

static cnx_same3_fn cnx_same3_select(void) { return NULL; }

#endif
#endif
