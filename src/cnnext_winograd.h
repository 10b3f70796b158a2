/*
 * Winograd F(2x2, 3x3) tile loops with runtime CPU dispatch (the same
 * instruction-set choice as the GEMM micro-kernels, CNNEXT_ISA included).
 *
 * The loops live in cnnext_winograd_body.h, compiled here once per
 * instruction set (AVX-512, AVX2+FMA, baseline): plain C along contiguous
 * lanes that each region's compiler vectorises at its own width.  With
 * AVX-512, the products' micro-kernels and the per-run transforms (input,
 * upstream gradient, scatter: runs of a few dozen tiles, where a compiled
 * loop's scalar tail would cost as much as its vector body) are written
 * here with intrinsics and masked last vectors.  MSVC builds only the
 * baseline copy.
 */
#ifndef CNNEXT_WINOGRAD_H
#define CNNEXT_WINOGRAD_H

#include <stdint.h>
#include "cnnext_ukernel.h"

#if defined(_MSC_VER) && !defined(__clang__)
#define CNX_RESTRICT __restrict
#else
#define CNX_RESTRICT restrict
#endif

/* GCC turns plain copy and fill loops into memcpy / memset calls; on rows of
 * a few dozen floats the call costs more than the inline vector loop. */
#if defined(__GNUC__) && !defined(__clang__)
#define CNX_NO_LIBCALL __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define CNX_NO_LIBCALL
#endif

/* Prefetch rows [iy0, iy0 + P) x columns [ix0, ix0 + n) of an H x W plane
 * (the part inside it): the rows a run of tiles reads next, one channel
 * ahead, where the hardware prefetchers do not follow the jump between
 * channel planes. */
static inline void cnx_wg_prefetch(const float *plane, int64_t H, int64_t W, int64_t iy0,
                                   int64_t ix0, int64_t n, int P) {
#if defined(__GNUC__)
    int64_t lo = ix0 < 0 ? 0 : ix0, hi = ix0 + n < W ? ix0 + n : W;
    for (int64_t iy = iy0 < 0 ? 0 : iy0; iy < iy0 + P && iy < H; iy++) {
        const char *a = (const char *)(plane + iy * W + lo), *e = (const char *)(plane + iy * W + hi);
        for (; a < e; a += 64) __builtin_prefetch(a, 0, 3);
        if (hi > lo) __builtin_prefetch(e - 1, 0, 3);
    }
#else
    (void)plane; (void)H; (void)W; (void)iy0; (void)ix0; (void)n; (void)P;
#endif
}

typedef void (*cnx_wg_output)(const float *m, int64_t sxi, int64_t n, float *y);
/* The scatters return 1 when a value they store is inf or NaN. */
typedef int (*cnx_wg_scatter)(const float *y, int64_t ld, int64_t cnt, float b, float *out,
                              int64_t OH, int64_t OW, int64_t oy0, int64_t ox0);
typedef void (*cnx_wg_rows)(const float *plane, int64_t H, int64_t W, int64_t iy0,
                            int64_t ix0, int64_t n, int P, float *p, int64_t lp);
typedef int (*cnx_wg_finite)(const float *a, int64_t n, float b);
typedef void (*cnx_wg_pack_lanes)(const float *src, int64_t ld, int64_t nr, int64_t n,
                                  int64_t NR, float *dst);
typedef void (*cnx_wg_input_rows)(const float *p, int64_t lp, int64_t cnt, float *v,
                                  int64_t sxi);
typedef void (*cnx_wg_input_tw4)(const float *x, int64_t C, int64_t H, int64_t W, int64_t ph,
                                 int64_t pw, int64_t th, int64_t t0, int64_t nv, int64_t PN,
                                 float *v, int64_t sp, int64_t sc, int64_t sxi);
typedef void (*cnx_wg_scatter_tw4)(const float *y, int64_t ld, int64_t nv, float b, float *out,
                                   int64_t Co, int64_t co, int64_t OH, int64_t OW, int64_t th,
                                   int64_t t0);
typedef void (*cnx_wg_grad_tw4)(const float *g, int64_t Co, int64_t OH, int64_t OW, int64_t th,
                                int64_t t0, int64_t nv, float *gy, int64_t ld, int64_t sxi);
typedef void (*cnx_wg_input_tw16)(const float *x, int64_t C, int64_t H, int64_t W, int64_t ph,
                                  int64_t pw, int64_t th, int64_t tw, int64_t t0, int64_t nv,
                                  int64_t PN, float *v, int64_t sp, int64_t sc, int64_t sxi);
typedef void (*cnx_wg_input_plane)(const float *plane, int64_t H, int64_t W, int64_t iy0,
                                   int64_t ix0, int64_t cnt, float *v, int64_t sxi);

/* c[i*ldc + j] (+)= sum_k a[k*8 + i] * b[k*48 + j], i < 8, j < 48 (ukr;
 * j < 16 * n for ukr_n[n - 1]): the products' micro-kernels where the
 * instruction set has them (NULL: the GEMM micro-kernel instead). */
typedef void (*cnx_wg_ukr)(int64_t kc, const float *a, const float *b, float *c,
                           int64_t ldc, int accumulate);

/* dst[2*m] = src[m] for m < n, the odd positions untouched (a dilation
 * phase's results written back at column stride 2); NULL: the caller's loop. */
typedef void (*cnx_wg_store2)(const float *src, int64_t n, float *dst);

typedef struct {
    cnx_wg_ukr ukr;
    cnx_wg_ukr ukr_n[3]; /* 16, 32, 48 columns (a block's last panel) */
    int pn; /* the lanes of one panel of the products (ukr's columns), 0: GEMM's NR */
    cnx_wg_output output;
    cnx_wg_scatter scatter;
    cnx_wg_rows rows;
    cnx_wg_finite finite;
    cnx_wg_pack_lanes pack_lanes;
    cnx_wg_input_rows input_rows;
    cnx_wg_input_rows grad_rows;
    /* rows then input_rows in one pass, read from the plane (NULL: the two) */
    cnx_wg_input_plane input_plane;
    /* maps of 4 tile columns from rows of <= 8 values, four tile rows per
     * vector (NULL: input_plane or rows then input_rows) */
    cnx_wg_input_tw4 input_tw4;
    cnx_wg_scatter_tw4 scatter_tw4; /* its scatter and upstream gradient transform */
    cnx_wg_grad_tw4 grad_tw4;       /* (set with input_tw4) */
    /* maps of 6-8 tile columns from rows of <= 16 values (NULL: input_plane) */
    cnx_wg_input_tw16 input_tw16;
    cnx_wg_store2 store2;
    const char *name;
} cnx_wg_kernels;

#define WG_SUF generic
#include "cnnext_winograd_body.h"
#undef WG_SUF

#if defined(CNX_X86) && defined(__GNUC__)
#define CNX_WG_X86 1
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
#define WG_SUF avx2
#include "cnnext_winograd_body.h"
#undef WG_SUF
#include "cnnext_winograd_avx2.h"
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx512vl,avx2,fma")
#pragma GCC target("prefer-vector-width=512")
#endif
#define WG_SUF avx512
#include "cnnext_winograd_body.h"
#undef WG_SUF

/* dst[i*ldd + j] = src[j*ld + i] for i, j < 16: a 16 x 16 transpose in
 * registers (pairs of rows interleaved by 32 bits, then 64 bits, then the
 * 128-bit lanes gathered). */
static void wg_transpose16_avx512(const float *src, int64_t ld, float *dst, int64_t ldd) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * ld);
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* r[4i + q], 128-bit lane L: column 4L + q of rows 4i .. 4i + 3 */
    for (int i = 0; i < 4; i++) {
        __m512d a0 = _mm512_castps_pd(t[4 * i]), a1 = _mm512_castps_pd(t[4 * i + 1]);
        __m512d a2 = _mm512_castps_pd(t[4 * i + 2]), a3 = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
    for (int q = 0; q < 4; q++) {
        __m512 u0 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0x88);
        __m512 u1 = _mm512_shuffle_f32x4(r[q], r[4 + q], 0xDD);
        __m512 v0 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0x88);
        __m512 v1 = _mm512_shuffle_f32x4(r[8 + q], r[12 + q], 0xDD);
        _mm512_storeu_ps(dst + q * ldd, _mm512_shuffle_f32x4(u0, v0, 0x88));
        _mm512_storeu_ps(dst + (4 + q) * ldd, _mm512_shuffle_f32x4(u1, v1, 0x88));
        _mm512_storeu_ps(dst + (8 + q) * ldd, _mm512_shuffle_f32x4(u0, v0, 0xDD));
        _mm512_storeu_ps(dst + (12 + q) * ldd, _mm512_shuffle_f32x4(u1, v1, 0xDD));
    }
}

/* wg_pack_lanes by 16 x 16 transposes where the panel is full. */
static void wg_pack_lanes_avx512_t(const float *src, int64_t ld, int64_t nr, int64_t n,
                                   int64_t NR, float *dst) {
    int64_t n16 = n / 16 * 16, k, j;
    if (nr != NR || NR % 16 != 0) {
        wg_pack_lanes_avx512(src, ld, nr, n, NR, dst);
        return;
    }
    for (k = 0; k < n16; k += 16)
        for (j = 0; j < NR; j += 16)
            wg_transpose16_avx512(src + j * ld + k, ld, dst + k * NR + j, NR);
    for (k = n16; k < n; k++)
        for (j = 0; j < NR; j++) dst[k * NR + j] = src[j * ld + k];
}

/* wg_rows in 16-float vectors: a masked load (no access outside the
 * plane's row) and a full store, so the rows are written up to n rounded
 * up to 16 (the caller's rows have that room). */
static void wg_rows_avx512_m(const float *CNX_RESTRICT plane, int64_t H, int64_t W,
                             int64_t iy0, int64_t ix0, int64_t n, int P,
                             float *CNX_RESTRICT p, int64_t lp) {
    int64_t lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0 < n ? W - ix0 : n;
    for (int y = 0; y < P; y++) {
        float *dst = p + y * lp;
        int64_t iy = iy0 + y;
        if (iy < 0 || iy >= H) {
            for (int64_t i = 0; i < n; i += 16) _mm512_storeu_ps(dst + i, _mm512_setzero_ps());
            continue;
        }
        const float *src = plane + iy * W + ix0;
        for (int64_t i = 0; i < n; i += 16) {
            /* lanes k with lo <= i + k < hi */
            int64_t a = lo - i < 0 ? 0 : lo - i, e = hi - i > 16 ? 16 : hi - i;
            uint32_t m = e > a ? ((1u << e) - 1) & ~((1u << a) - 1) : 0;
            _mm512_storeu_ps(dst + i, _mm512_maskz_loadu_ps((__mmask16)m, src + i));
        }
    }
}

/* B^T d B of 16 tiles at once (d[y][x]: the 4x4 input tile's row y, column
 * x, one tile per lane), its 16 points stored at o + (4*a + b)*sxi for the
 * lanes in m: the arithmetic of wg_input_rows, once for every AVX-512
 * input transform. */
static inline __attribute__((always_inline)) void
wg_btdb_store_avx512(__m512 d[4][4], __mmask16 m, float *o, int64_t sxi) {
    __m512 t[4][4];
    for (int k = 0; k < 4; k++) {
        t[0][k] = _mm512_sub_ps(d[0][k], d[2][k]);
        t[1][k] = _mm512_add_ps(d[1][k], d[2][k]);
        t[2][k] = _mm512_sub_ps(d[2][k], d[1][k]);
        t[3][k] = _mm512_sub_ps(d[1][k], d[3][k]);
    }
    for (int a = 0; a < 4; a++, o += 4 * sxi) {
        _mm512_mask_storeu_ps(o, m, _mm512_sub_ps(t[a][0], t[a][2]));
        _mm512_mask_storeu_ps(o + sxi, m, _mm512_add_ps(t[a][1], t[a][2]));
        _mm512_mask_storeu_ps(o + 2 * sxi, m, _mm512_sub_ps(t[a][2], t[a][1]));
        _mm512_mask_storeu_ps(o + 3 * sxi, m, _mm512_sub_ps(t[a][1], t[a][3]));
    }
}

/* wg_input_rows in 16-tile vectors, the last one masked (the compiler's
 * loop would finish a run of, say, 28 tiles with 8-lane and scalar
 * iterations).  The two 16-float loads per row and offset read up to 32
 * floats past the run's 2*cnt + 2 (inside the caller's row buffer); the
 * lanes they fill beyond cnt are zeroed by the permutes and never stored.
 * Same operations in the same order as the generic loop. */
static void wg_input_rows_avx512_m(const float *CNX_RESTRICT p, int64_t lp, int64_t cnt,
                                   float *CNX_RESTRICT v, int64_t sxi) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                         28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                         29, 31);
    for (int64_t j = 0; j < cnt; j += 16) {
        __mmask16 m = cnt - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cnt - j)) - 1);
        __m512 d[4][4];
        for (int y = 0; y < 4; y++) {
            const float *r = p + y * lp + 2 * j;
            __m512 a0 = _mm512_loadu_ps(r), a1 = _mm512_loadu_ps(r + 16);
            __m512 b0 = _mm512_loadu_ps(r + 2), b1 = _mm512_loadu_ps(r + 18);
            d[y][0] = _mm512_maskz_permutex2var_ps(m, a0, ie, a1);
            d[y][1] = _mm512_maskz_permutex2var_ps(m, a0, io, a1);
            d[y][2] = _mm512_maskz_permutex2var_ps(m, b0, ie, b1);
            d[y][3] = _mm512_maskz_permutex2var_ps(m, b0, io, b1);
        }
        wg_btdb_store_avx512(d, m, v + j, sxi);
    }
}

/* wg_rows followed by wg_input_rows_avx512_m in one pass: the 4 rows of
 * cnt tiles starting at input row iy0, column ix0 of an H x W plane are
 * read from the plane by masked loads (zero outside it: the padding) and
 * transformed, without the zero-padded copy.  The lanes kept (< cnt) see
 * the values the copy would hold, so the results are the same bits. */
static void wg_input_plane_avx512_m(const float *CNX_RESTRICT plane, int64_t H, int64_t W,
                                    int64_t iy0, int64_t ix0, int64_t cnt,
                                    float *CNX_RESTRICT v, int64_t sxi) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                         28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                         29, 31);
    /* columns ix0 + i with lo <= i < hi are inside the plane */
    int64_t lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0;
    for (int64_t j = 0; j < cnt; j += 16) {
        __mmask16 m = cnt - j >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (cnt - j)) - 1);
        __mmask16 mk[4];
        for (int q = 0; q < 4; q++) { /* the loads at offsets 2j, 2j + 16, 2j + 2, 2j + 18 */
            int64_t off = 2 * j + (q & 1) * 16 + (q >> 1) * 2;
            int64_t a = lo - off < 0 ? 0 : lo - off, e = hi - off > 16 ? 16 : hi - off;
            mk[q] = e > a ? (__mmask16)(((1u << e) - 1) & ~((1u << a) - 1)) : (__mmask16)0;
        }
        __m512 d[4][4];
        for (int y = 0; y < 4; y++) {
            int64_t iy = iy0 + y;
            if (iy < 0 || iy >= H) {
                for (int k = 0; k < 4; k++) d[y][k] = _mm512_setzero_ps();
                continue;
            }
            const float *r = plane + iy * W + ix0 + 2 * j;
            __m512 a0 = _mm512_maskz_loadu_ps(mk[0], r), a1 = _mm512_maskz_loadu_ps(mk[1], r + 16);
            __m512 b0 = _mm512_maskz_loadu_ps(mk[2], r + 2);
            __m512 b1 = _mm512_maskz_loadu_ps(mk[3], r + 18);
            d[y][0] = _mm512_maskz_permutex2var_ps(m, a0, ie, a1);
            d[y][1] = _mm512_maskz_permutex2var_ps(m, a0, io, a1);
            d[y][2] = _mm512_maskz_permutex2var_ps(m, b0, ie, b1);
            d[y][3] = _mm512_maskz_permutex2var_ps(m, b0, io, b1);
        }
        wg_btdb_store_avx512(d, m, v + j, sxi);
    }
}

/* The input transform of tiles [t0, t0 + nv) (t0 a multiple of 4) for maps
 * of 4 tile columns and rows of at most 8 values (7x7 or 8x8 with padding
 * 1): 16 lanes are four tile rows (tile t: sample t / (th*4), tile row
 * t / 4 % th), the four input rows a y of them reads packed in two vectors,
 * the tiles' columns picked by two-source permutes (zero outside the map:
 * the padding) -- the runs of wg_input_plane would fill a quarter vector.
 * Lane l = t - t0 of point xi and channel c goes to
 * v[xi*sxi + c*sc + (l / PN)*sp + l % PN] (PN a multiple of 16), the lanes
 * from nv on untouched.  The same operations in the same order as
 * wg_input_rows, so the same bits. */
static void wg_input_tw4_avx512(const float *CNX_RESTRICT x, int64_t C, int64_t H, int64_t W,
                                int64_t ph, int64_t pw, int64_t th, int64_t t0, int64_t nv,
                                int64_t PN, float *CNX_RESTRICT v, int64_t sp, int64_t sc,
                                int64_t sxi) {
    __m512i idx[4];
    __mmask16 cols[4];
    const __mmask8 wm = (__mmask8)((1u << W) - 1);
    for (int k = 0; k < 4; k++) { /* lane 4q + j: column 2j + k - pw of packed row q */
        uint32_t m = 0;
        int32_t id[16];
        for (int j = 0; j < 16; j++) {
            int64_t col = 2 * (j % 4) + k - pw;
            id[j] = (int32_t)((col < 0 || col >= W ? 0 : col) + 8 * (j / 4));
            if (col >= 0 && col < W) m |= 1u << j;
        }
        idx[k] = _mm512_loadu_si512(id);
        cols[k] = (__mmask16)m;
    }
    for (int64_t l = 0; l < nv; l += 16) {
        __mmask16 lm = nv - l >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nv - l)) - 1);
        int64_t off[4], iy0[4], nq = (nv - l + 3) / 4;
        for (int q = 0; q < 4; q++) { /* the quarters' sample planes and first rows */
            int64_t r = (t0 + l) / 4 + q, n = r / th;
            off[q] = n * C * H * W;
            iy0[q] = q < nq ? 2 * (r - n * th) - ph : -1000;
        }
        for (int64_t c = 0; c < C; c++) {
            const float *xc = x + c * H * W;
            __m512 d[4][4];
            for (int y = 0; y < 4; y++) {
                __m256 rw[4];
                for (int q = 0; q < 4; q++) {
                    int64_t iy = iy0[q] + y;
                    rw[q] = iy >= 0 && iy < H ? _mm256_maskz_loadu_ps(wm, xc + off[q] + iy * W)
                                              : _mm256_setzero_ps();
                }
                __m512 lo = _mm512_insertf32x8(_mm512_castps256_ps512(rw[0]), rw[1], 1);
                __m512 hi = _mm512_insertf32x8(_mm512_castps256_ps512(rw[2]), rw[3], 1);
                for (int k = 0; k < 4; k++)
                    d[y][k] = _mm512_maskz_permutex2var_ps(cols[k], lo, idx[k], hi);
            }
            wg_btdb_store_avx512(d, lm, v + c * sc + (l / PN) * sp + l % PN, sxi);
        }
    }
}

/* wg_scatter for the tiles [t0, t0 + nv) of output channel co on maps of 4
 * tile columns (OW <= 8; tiles as in wg_input_tw4_avx512): y[(i*2 + jj)*ld
 * + l] + b goes to out[((n*Co + co)*OH + 2*(tile row) + i)*OW + 2*(l % 4)
 * + jj] inside the map, two tile rows' output rows interleaved by one
 * permute, each stored by a masked 8-float store.  The same additions as
 * wg_scatter. */
static void wg_scatter_tw4_avx512(const float *CNX_RESTRICT y, int64_t ld, int64_t nv, float b,
                                  float *CNX_RESTRICT out, int64_t Co, int64_t co, int64_t OH,
                                  int64_t OW, int64_t th, int64_t t0) {
    __m512i idx[2];
    for (int h = 0; h < 2; h++) { /* lane 8e + 2j + jj: tile row 2h + e, column j, jj */
        int32_t id[16];
        for (int e = 0; e < 2; e++)
            for (int j = 0; j < 4; j++)
                for (int jj = 0; jj < 2; jj++)
                    id[8 * e + 2 * j + jj] = 16 * jj + 4 * (2 * h + e) + j;
        idx[h] = _mm512_loadu_si512(id);
    }
    const __mmask8 wm = (__mmask8)((1u << OW) - 1);
    const __m512 vb = _mm512_set1_ps(b);
    for (int64_t l = 0; l < nv; l += 16) {
        __mmask16 lm = nv - l >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nv - l)) - 1);
        __m512 s[4];
        for (int k = 0; k < 4; k++)
            s[k] = _mm512_add_ps(_mm512_maskz_loadu_ps(lm, y + k * ld + l), vb);
        for (int q = 0; q < 4 && 4 * q < nv - l; q++) {
            int64_t r = (t0 + l) / 4 + q, n = r / th, oy = 2 * (r - n * th);
            float *plane = out + (n * Co + co) * OH * OW;
            for (int i = 0; i < 2 && oy + i < OH; i++) {
                __m512 v = _mm512_permutex2var_ps(s[2 * i], idx[q / 2], s[2 * i + 1]);
                __m256 half = q % 2 ? _mm512_extractf32x8_ps(v, 1) : _mm512_castps512_ps256(v);
                _mm256_mask_storeu_ps(plane + (oy + i) * OW, wm, half);
            }
        }
    }
}

/* wg_grad_rows for the tiles [t0, t0 + nv) of every output channel on maps
 * of 4 tile columns (OW <= 8; tiles as in wg_input_tw4_avx512): lane l of
 * point xi and channel co goes to gy[xi*sxi + co*ld + l], the transform of
 * the 2x2 tile of g (N, Co, OH, OW) at (2*(tile row), 2*(l % 4)), zero
 * outside g.  Four tile rows per vector, each gradient row one masked
 * 8-float load, the tiles' columns picked by permutes; the same operations
 * as wg_grad_rows on the zero-filled rows, so the same bits. */
static void wg_grad_tw4_avx512(const float *CNX_RESTRICT g, int64_t Co, int64_t OH, int64_t OW,
                               int64_t th, int64_t t0, int64_t nv, float *CNX_RESTRICT gy,
                               int64_t ld, int64_t sxi) {
    __m512i idx[2];
    for (int jj = 0; jj < 2; jj++) { /* lane 4q + j: column 2j + jj of packed row q */
        int32_t id[16];
        for (int j = 0; j < 16; j++) id[j] = 8 * (j / 4) + 2 * (j % 4) + jj;
        idx[jj] = _mm512_loadu_si512(id);
    }
    const __mmask8 wm = (__mmask8)((1u << OW) - 1);
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t l = 0; l < nv; l += 16) {
        __mmask16 lm = nv - l >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nv - l)) - 1);
        int64_t off[4], oy[4], nq = (nv - l + 3) / 4;
        for (int q = 0; q < 4; q++) {
            int64_t r = (t0 + l) / 4 + q, n = r / th;
            off[q] = n * Co * OH * OW;
            oy[q] = q < nq ? 2 * (r - n * th) : OH;
        }
        for (int64_t co = 0; co < Co; co++) {
            const float *gc = g + co * OH * OW;
            __m512 gv[2][2], t[4][2];
            for (int i = 0; i < 2; i++) {
                __m256 rw[4];
                for (int q = 0; q < 4; q++)
                    rw[q] = oy[q] + i < OH
                                ? _mm256_maskz_loadu_ps(wm, gc + off[q] + (oy[q] + i) * OW)
                                : _mm256_setzero_ps();
                __m512 lo = _mm512_insertf32x8(_mm512_castps256_ps512(rw[0]), rw[1], 1);
                __m512 hi = _mm512_insertf32x8(_mm512_castps256_ps512(rw[2]), rw[3], 1);
                gv[i][0] = _mm512_permutex2var_ps(lo, idx[0], hi);
                gv[i][1] = _mm512_permutex2var_ps(lo, idx[1], hi);
            }
            for (int k = 0; k < 2; k++) {
                t[0][k] = gv[0][k];
                t[1][k] = _mm512_add_ps(gv[0][k], gv[1][k]);
                t[2][k] = _mm512_sub_ps(gv[0][k], gv[1][k]);
                t[3][k] = _mm512_xor_ps(gv[1][k], sign);
            }
            for (int a = 0; a < 4; a++) {
                float *o = gy + a * 4 * sxi + co * ld + l;
                _mm512_mask_storeu_ps(o, lm, t[a][0]);
                _mm512_mask_storeu_ps(o + sxi, lm, _mm512_add_ps(t[a][0], t[a][1]));
                _mm512_mask_storeu_ps(o + 2 * sxi, lm, _mm512_sub_ps(t[a][0], t[a][1]));
                _mm512_mask_storeu_ps(o + 3 * sxi, lm, _mm512_xor_ps(t[a][1], sign));
            }
        }
    }
}

/* The input transform of tiles [t0, t0 + nv) (t0 a multiple of 16) for maps
 * of 6 to 8 tile columns from rows of at most 16 values (12x12 to 16x16
 * with padding 1): the 16 tiles of a vector span at most four tile rows
 * (tile t: sample t / (th*tw), tile row t / tw % th, column t % tw), whose
 * input rows are one vector each, the tiles' columns picked by two-source
 * permutes (zero outside the map: the padding) -- the runs of
 * wg_input_plane would fill 6 to 8 lanes of 16.  Output as
 * wg_input_tw4_avx512; the same operations as wg_input_rows. */
static void wg_input_tw16_avx512(const float *CNX_RESTRICT x, int64_t C, int64_t H, int64_t W,
                                 int64_t ph, int64_t pw, int64_t th, int64_t tw, int64_t t0,
                                 int64_t nv, int64_t PN, float *CNX_RESTRICT v, int64_t sp,
                                 int64_t sc, int64_t sxi) {
    const __mmask16 wm = (__mmask16)((1u << W) - 1);
    for (int64_t l = 0; l < nv; l += 16) {
        __mmask16 lm = nv - l >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nv - l)) - 1);
        int64_t r0 = (t0 + l) / tw, off[4], iy0[4];
        int32_t id[4][16];
        uint32_t cm[4] = {0, 0, 0, 0}, hs = 0;
        int ns = 1;
        for (int q = 0; q < 4; q++) { /* slot q: global tile row r0 + q */
            int64_t r = r0 + q, n = r / th;
            off[q] = n * C * H * W;
            iy0[q] = 2 * (r - n * th) - ph;
        }
        for (int j = 0; j < 16; j++) {
            int64_t t = t0 + l + j, q = t / tw - r0, tc = t % tw;
            if (j < nv - l && q + 1 > ns) ns = (int)(q + 1);
            if (q >= 2) hs |= 1u << j;
            for (int k = 0; k < 4; k++) {
                int64_t col = 2 * tc + k - pw;
                int ok = j < nv - l && col >= 0 && col < W;
                id[k][j] = (int32_t)((ok ? col : 0) + 16 * (q % 2));
                if (ok) cm[k] |= 1u << j;
            }
        }
        __m512i idx[4];
        for (int k = 0; k < 4; k++) idx[k] = _mm512_loadu_si512(id[k]);
        for (int64_t c = 0; c < C; c++) {
            const float *xc = x + c * H * W;
            __m512 d[4][4];
            for (int y = 0; y < 4; y++) {
                __m512 rw[4];
                for (int q = 0; q < 4; q++) {
                    int64_t iy = iy0[q] + y;
                    rw[q] = q < ns && iy >= 0 && iy < H
                                ? _mm512_maskz_loadu_ps(wm, xc + off[q] + iy * W)
                                : _mm512_setzero_ps();
                }
                for (int k = 0; k < 4; k++) {
                    __m512 lo = _mm512_maskz_permutex2var_ps((__mmask16)(cm[k] & ~hs), rw[0],
                                                             idx[k], rw[1]);
                    if (ns > 2)
                        lo = _mm512_or_ps(lo, _mm512_maskz_permutex2var_ps(
                                                  (__mmask16)(cm[k] & hs), rw[2], idx[k], rw[3]));
                    d[y][k] = lo;
                }
            }
            wg_btdb_store_avx512(d, lm, v + c * sc + (l / PN) * sp + l % PN, sxi);
        }
    }
}

/* cnx_wg_store2: 8 values per masked store into every other lane. */
static void wg_store2_avx512(const float *CNX_RESTRICT src, int64_t n, float *CNX_RESTRICT dst) {
    for (int64_t m = 0; m < n; m += 8) {
        int k = n - m < 8 ? (int)(n - m) : 8;
        __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << k) - 1), src + m);
        __m512 e = _mm512_maskz_expand_ps((__mmask16)0x5555, v);
        _mm512_mask_storeu_ps(dst + 2 * m, (__mmask16)(0x5555u & ((1u << (2 * k)) - 1)), e);
    }
}

/* wg_scatter with the two columns of 16 tiles interleaved by two permutes,
 * the last vector masked (as wg_input_rows_avx512_m). */
static int wg_scatter_avx512_m(const float *CNX_RESTRICT y, int64_t ld, int64_t cnt, float b,
                               float *CNX_RESTRICT out, int64_t OH, int64_t OW,
                               int64_t oy0, int64_t ox0) {
    const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7,
                                         23);
    const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30,
                                         15, 31);
    const __m512 vb = _mm512_set1_ps(b);
    __m512 z = _mm512_setzero_ps();
    float last = 0.0f;
    int64_t both = (OW - ox0) / 2; /* tiles whose two columns are inside */
    if (both > cnt) both = cnt;
    for (int i = 0; i < 2 && oy0 + i < OH; i++) {
        float *CNX_RESTRICT row = out + (oy0 + i) * OW + ox0;
        const float *s0 = y + (i * 2) * ld, *s1 = y + (i * 2 + 1) * ld;
        for (int64_t j = 0; j < both; j += 16) {
            int64_t n = both - j < 16 ? both - j : 16;
            __mmask16 m = (__mmask16)((1u << n) - 1);
            __m512 v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m, s0 + j), vb);
            __m512 v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m, s1 + j), vb);
            z = _mm512_add_ps(z, _mm512_add_ps(_mm512_sub_ps(v0, v0), _mm512_sub_ps(v1, v1)));
            __mmask16 ml = n >= 8 ? (__mmask16)0xFFFF : (__mmask16)((1u << (2 * n)) - 1);
            __mmask16 mh = n <= 8 ? (__mmask16)0 : (__mmask16)((1u << (2 * n - 16)) - 1);
            _mm512_mask_storeu_ps(row + 2 * j, ml, _mm512_permutex2var_ps(v0, il, v1));
            _mm512_mask_storeu_ps(row + 2 * j + 16, mh, _mm512_permutex2var_ps(v0, ih, v1));
        }
        if (both < cnt && ox0 + 2 * both < OW) {
            float v = s0[both] + b;
            row[2 * both] = v;
            last += v - v;
        }
    }
    return _mm512_reduce_add_ps(z) + last != 0.0f;
}

/* wg_grad_rows in 16-tile vectors, the last one masked; the loads are
 * masked too (the rows may be the upstream gradient itself, read in place
 * up to its last element). */
static void wg_grad_rows_avx512_m(const float *CNX_RESTRICT p, int64_t lp, int64_t cnt,
                                  float *CNX_RESTRICT gy, int64_t sxi) {
    const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                         28, 30);
    const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27,
                                         29, 31);
    const __m512 sign = _mm512_set1_ps(-0.0f);
    for (int64_t j = 0; j < cnt; j += 16) {
        int64_t n = cnt - j < 16 ? cnt - j : 16;
        __mmask16 m = (__mmask16)((1u << n) - 1);
        __mmask16 ml = n >= 8 ? (__mmask16)0xFFFF : (__mmask16)((1u << (2 * n)) - 1);
        __mmask16 mh = n <= 8 ? (__mmask16)0 : (__mmask16)((1u << (2 * n - 16)) - 1);
        __m512 g[2][2], t[4][2];
        for (int r = 0; r < 2; r++) {
            const float *q = p + r * lp + 2 * j;
            __m512 a0 = _mm512_maskz_loadu_ps(ml, q), a1 = _mm512_maskz_loadu_ps(mh, q + 16);
            g[r][0] = _mm512_permutex2var_ps(a0, ie, a1);
            g[r][1] = _mm512_permutex2var_ps(a0, io, a1);
        }
        for (int k = 0; k < 2; k++) {
            t[0][k] = g[0][k];
            t[1][k] = _mm512_add_ps(g[0][k], g[1][k]);
            t[2][k] = _mm512_sub_ps(g[0][k], g[1][k]);
            t[3][k] = _mm512_xor_ps(g[1][k], sign);
        }
        for (int a = 0; a < 4; a++) {
            float *o = gy + a * 4 * sxi + j;
            _mm512_mask_storeu_ps(o, m, t[a][0]);
            _mm512_mask_storeu_ps(o + sxi, m, _mm512_add_ps(t[a][0], t[a][1]));
            _mm512_mask_storeu_ps(o + 2 * sxi, m, _mm512_sub_ps(t[a][0], t[a][1]));
            _mm512_mask_storeu_ps(o + 3 * sxi, m, _mm512_xor_ps(t[a][1], sign));
        }
    }
}

/* 8 rows x 16*NB columns: 8*NB accumulators, NB B vectors and one
 * broadcast A value per row and step (with NB = 3, more FMAs per load than
 * the GEMM's 8 x 32); NB < 3 for a block's last, narrower panel. */
static inline __attribute__((always_inline)) void
wg_ukr_avx512_nb(int NB, int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                 int accumulate) {
    __m512 acc[8][3];
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < NB; j++) acc[i][j] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        const float *bk = b + k * 48, *ak = a + k * 8;
        __m512 bv[3];
        for (int j = 0; j < NB; j++) bv[j] = _mm512_loadu_ps(bk + 16 * j);
#pragma GCC unroll 8
        for (int i = 0; i < 8; i++) {
            __m512 t = _mm512_set1_ps(ak[i]);
            for (int j = 0; j < NB; j++) acc[i][j] = _mm512_fmadd_ps(t, bv[j], acc[i][j]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        float *row = c + i * ldc;
        for (int j = 0; j < NB; j++) {
            __m512 v = acc[i][j];
            if (accumulate) v = _mm512_add_ps(v, _mm512_loadu_ps(row + 16 * j));
            _mm512_storeu_ps(row + 16 * j, v);
        }
    }
}

static void wg_ukr_avx512(int64_t kc, const float *a, const float *b, float *c, int64_t ldc,
                          int accumulate) {
    wg_ukr_avx512_nb(3, kc, a, b, c, ldc, accumulate);
}
static void wg_ukr_avx512_32(int64_t kc, const float *a, const float *b, float *c,
                             int64_t ldc, int accumulate) {
    wg_ukr_avx512_nb(2, kc, a, b, c, ldc, accumulate);
}
static void wg_ukr_avx512_16(int64_t kc, const float *a, const float *b, float *c,
                             int64_t ldc, int accumulate) {
    wg_ukr_avx512_nb(1, kc, a, b, c, ldc, accumulate);
}
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif

#define WG_SET(k, SUF)                                                          \
    k.output = wg_output_##SUF; k.scatter = wg_scatter_##SUF;                  \
    k.rows = wg_rows_##SUF; k.pack_lanes = wg_pack_lanes_##SUF;                \
    k.finite = wg_finite_##SUF;                                                \
    k.input_rows = wg_input_rows_##SUF; k.grad_rows = wg_grad_rows_##SUF;      \
    k.name = #SUF;

static cnx_wg_kernels cnx_wg_select(void) {
    cnx_wg_kernels k;
    int isa = cnx_isa_from_env(cnx_detect_isa());
    WG_SET(k, generic)
    k.ukr = NULL;
    k.ukr_n[0] = k.ukr_n[1] = k.ukr_n[2] = NULL;
    k.pn = 0;
    k.store2 = NULL;
    k.input_plane = NULL;
    k.input_tw4 = NULL;
    k.scatter_tw4 = NULL;
    k.grad_tw4 = NULL;
    k.input_tw16 = NULL;
#ifdef CNX_WG_X86
    if (isa == 2) {
        WG_SET(k, avx512)
        k.ukr = wg_ukr_avx512;
        k.ukr_n[0] = wg_ukr_avx512_16;
        k.ukr_n[1] = wg_ukr_avx512_32;
        k.ukr_n[2] = wg_ukr_avx512;
        k.pn = 48;
        k.pack_lanes = wg_pack_lanes_avx512_t;
        k.input_rows = wg_input_rows_avx512_m;
        k.input_plane = wg_input_plane_avx512_m;
        k.input_tw4 = wg_input_tw4_avx512;
        k.scatter_tw4 = wg_scatter_tw4_avx512;
        k.grad_tw4 = wg_grad_tw4_avx512;
        k.input_tw16 = wg_input_tw16_avx512;
        k.scatter = wg_scatter_avx512_m;
        k.grad_rows = wg_grad_rows_avx512_m;
        k.rows = wg_rows_avx512_m;
        k.store2 = wg_store2_avx512;
    } else if (isa == 1) {
        WG_SET(k, avx2)
        k.pack_lanes = wg_pack_lanes_avx2_t;
        k.input_rows = wg_input_rows_avx2_m;
        k.input_plane = wg_input_plane_avx2_m;
        k.input_tw4 = wg_input_tw4_avx2;
        k.scatter_tw4 = wg_scatter_tw4_avx2;
        k.grad_tw4 = wg_grad_tw4_avx2;
        k.scatter = wg_scatter_avx2_m;
        k.grad_rows = wg_grad_rows_avx2_m;
    }
#else
    (void)isa;
#endif
    return k;
}

#endif /* CNNEXT_WINOGRAD_H */
