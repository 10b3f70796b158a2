/*
 * Winograd F(4x4, 3x3) transforms (Lavin & Gray, "Fast Algorithms for
 * Convolutional Neural Networks", CVPR 2016) with the interpolation points
 * 0, 1, -1, 1/2, -2 and infinity (after Barabasz et al., "Error Analysis
 * and Improving the Accuracy of Winograd Convolution for Deep Neural
 * Networks", arXiv:1803.10986; measured: about 1.5x less float32 error than
 * 0, 1, -1, 2, -2): each 4x4 output tile from a 6x6 input tile with 36
 * multiplications per channel pair instead of 144,
 *     Y = A^T [(G w G^T) . (B^T d B)] A.
 *
 * Per run of tiles along one tile row (tile j's input at columns ix0 + 4j):
 *   input:  v[xi*sxi + j] = (B^T d_j B)[xi], xi = 6a + b, for j < cnt;
 *   output: the 4x4 outputs of tile j, (A^T m_j A) + b, stored into an OH x
 *           OW plane at rows oy0.., columns ox0 + 4j.. (those inside it),
 *           from m[xi*sxi + j]; returns 1 when a stored value is inf or NaN
 *           (the caller then recomputes the result: no pass over it).
 * The AVX2 versions take 8 tiles per vector: a row's stride-4 columns are
 * split by an in-lane 4x4 transpose of 128-bit chunks (chunks q and q + 4
 * in one register), the plane read in place by masked loads (zero outside
 * it: the padding).  The portable versions run one tile at a time with the
 * same operations (fmaf where AVX2 fuses), in the same order: the same bits.
 *
 * The filter transform U = G w G^T is done in float64 and rounded once.
 */
#ifndef CNNEXT_WINOGRAD4_H
#define CNNEXT_WINOGRAD4_H

#include <math.h>
#include <string.h>
#include <stdint.h>
#include "cnnext_ukernel.h"

#define CNX_W4_RESTRICT __restrict

typedef void (*cnx_w4_input_fn)(const float *plane, int64_t H, int64_t W, int64_t iy0,
                                 int64_t ix0, int64_t cnt, float *v, int64_t sxi);
typedef int (*cnx_w4_output_fn)(const float *m, int64_t sxi, int64_t cnt, float b,
                                float *out, int64_t OH, int64_t OW, int64_t oy0, int64_t ox0);
typedef struct {
    cnx_w4_input_fn input;
    cnx_w4_output_fn output;
    const char *name;
} cnx_w4_kernels;

/* r = B^T d, the rows of B^T:
 * [1 -3/2 -2 3/2 1 0] [0 -1 1/2 5/2 1 0] [0 1 -5/2 1/2 1 0]
 * [0 -2 -1 2 1 0] [0 1/2 -1 -1/2 1 0] [0 1 -3/2 -2 3/2 1]. */
#define CNX_W4_BT(T, FMA, ADD, SUB, SET, d, r)                                 \
    do {                                                                       \
        T d31_ = SUB(d[3], d[1]), d42_ = SUB(d[4], d[2]);                      \
        r[0] = FMA(SET(1.5f), d31_, FMA(SET(-2.0f), d[2], ADD(d[0], d[4])));   \
        r[1] = FMA(SET(2.5f), d[3], FMA(SET(0.5f), d[2], SUB(d[4], d[1])));    \
        r[2] = FMA(SET(0.5f), d[3], FMA(SET(-2.5f), d[2], ADD(d[4], d[1])));   \
        r[3] = FMA(SET(2.0f), d31_, d42_);                                     \
        r[4] = FMA(SET(-0.5f), d31_, d42_);                                    \
        r[5] = FMA(SET(1.5f), d42_, FMA(SET(-2.0f), d[3], ADD(d[1], d[5])));   \
    } while (0)

/* o = A^T m, the rows of A^T: [1 1 1 1 1 0] [0 1 -1 1/2 -2 0]
 * [0 1 1 1/4 4 0] [0 1 -1 1/8 -8 1]. */
#define CNX_W4_AT(T, FMA, ADD, SUB, SET, m, o)                                 \
    do {                                                                       \
        T s12_ = ADD(m[1], m[2]), d12_ = SUB(m[1], m[2]);                      \
        o[0] = ADD(ADD(ADD(m[0], s12_), m[3]), m[4]);                          \
        o[1] = FMA(SET(-2.0f), m[4], FMA(SET(0.5f), m[3], d12_));              \
        o[2] = FMA(SET(4.0f), m[4], FMA(SET(0.25f), m[3], s12_));              \
        o[3] = ADD(FMA(SET(-8.0f), m[4], FMA(SET(0.125f), m[3], d12_)), m[5]); \
    } while (0)

#define CNX_W4_SADD(a, b) ((a) + (b))
#define CNX_W4_SSUB(a, b) ((a) - (b))
#define CNX_W4_SSET(c) (c)

/* The filter transform of Co x C filters into the products' packed A
 * operand: upk[xi*su + ((co / MR)*C + c)*MR + co % MR] = (G w G^T)[xi] for
 * the filter of output channel co and input channel c: w[co, c] of a (Co,
 * C, 3, 3) array, or with `adjoint` (the input gradient's filters) w[c, co]
 * of a (C, Co, 3, 3) array rotated by 180 degrees; zeros for the rows co >=
 * Co that fill the last MR-row panel.  G's rows: [1 0 0], [1 1 1]/3,
 * -[1 -1 1]/3, -[16 8 4]/15, [1 -2 4]/15, [0 0 1].  Panels [p0, p1) of MR
 * rows; each panel's points are made for CNX_W4_FC channels at a time in
 * `tmp` (36 x CNX_W4_FC x MR floats, the packed order) and copied out in
 * contiguous runs: 36 streams a point stride apart would each miss the
 * TLB.  The arithmetic runs along CNX_W4_LB filters at a time (loops the
 * compiler vectorises), in float64, each value rounded once. */
#define CNX_W4_FC 32
#define CNX_W4_LB 64
/* o[k][l] = (G (a, b, c))[k] for l < n (o[k] = o0 + k*so). */
static inline void cnx_w4_g(const double *CNX_W4_RESTRICT a, const double *CNX_W4_RESTRICT b,
                            const double *CNX_W4_RESTRICT c, int64_t n,
                            double *CNX_W4_RESTRICT o0, int64_t so) {
    const double third = 1.0 / 3, d15 = 1.0 / 15;
    for (int64_t l = 0; l < n; l++) {
        o0[l] = a[l];
        o0[so + l] = (a[l] + b[l] + c[l]) * third;
        o0[2 * so + l] = -(a[l] - b[l] + c[l]) * third;
        o0[3 * so + l] = -(16 * a[l] + 8 * b[l] + 4 * c[l]) * d15;
        o0[4 * so + l] = (a[l] - 2 * b[l] + 4 * c[l]) * d15;
        o0[5 * so + l] = c[l];
    }
}

static void cnx_w4_filters(const float *w, int64_t Co, int64_t C, int adjoint, int64_t MR,
                           int64_t p0, int64_t p1, float *upk, int64_t su, float *tmp) {
    double wd[9][CNX_W4_LB], t[18][CNX_W4_LB], u[6][CNX_W4_LB];
    const int64_t ld = CNX_W4_FC * MR;
    for (int64_t p = p0; p < p1; p++)
        for (int64_t c0 = 0; c0 < C; c0 += CNX_W4_FC) {
            int64_t nc = C - c0 < CNX_W4_FC ? C - c0 : CNX_W4_FC;
            for (int64_t l0 = 0; l0 < nc * MR; l0 += CNX_W4_LB) {
                int64_t n = nc * MR - l0 < CNX_W4_LB ? nc * MR - l0 : CNX_W4_LB;
                for (int64_t l = 0; l < n; l++) { /* lane l: filter (co, c) */
                    int64_t c = c0 + (l0 + l) / MR, co = p * MR + (l0 + l) % MR;
                    const float *f = adjoint ? w + (c * Co + co) * 9 : w + (co * C + c) * 9;
                    if (co >= Co)
                        for (int i = 0; i < 9; i++) wd[i][l] = 0.0;
                    else if (adjoint)
                        for (int i = 0; i < 9; i++) wd[i][l] = f[8 - i];
                    else
                        for (int i = 0; i < 9; i++) wd[i][l] = f[i];
                }
                for (int j = 0; j < 3; j++) /* columns: t[3r + j] = (G w)[r][j] */
                    cnx_w4_g(wd[j], wd[3 + j], wd[6 + j], n, t[j], 3 * CNX_W4_LB);
                for (int r = 0; r < 6; r++) { /* rows: (G w G^T)[r][s] */
                    cnx_w4_g(t[3 * r], t[3 * r + 1], t[3 * r + 2], n, u[0], CNX_W4_LB);
                    for (int s2 = 0; s2 < 6; s2++)
                        for (int64_t l = 0; l < n; l++)
                            tmp[(6 * r + s2) * ld + l0 + l] = (float)u[s2][l];
                }
            }
            for (int64_t co = Co; co < (p + 1) * MR; co++) /* +0.0, not -(0 - 0 + 0)/3 */
                for (int64_t c = 0; c < nc; c++)
                    for (int xi = 0; xi < 36; xi++) tmp[xi * ld + c * MR + co - p * MR] = 0.0f;
            for (int xi = 0; xi < 36; xi++)
                memcpy(upk + xi * su + (p * C + c0) * MR, tmp + xi * ld,
                       (size_t)(nc * MR) * sizeof(float));
        }
}

/* Portable: one tile at a time. */
static void cnx_w4_input_generic(const float *plane, int64_t H, int64_t W, int64_t iy0,
                                 int64_t ix0, int64_t cnt, float *v, int64_t sxi) {
    for (int64_t j = 0; j < cnt; j++) {
        float h[6][6], d[6], r[6], col[6];
        for (int y = 0; y < 6; y++) {
            int64_t iy = iy0 + y;
            for (int k = 0; k < 6; k++) {
                int64_t ix = ix0 + 4 * j + k;
                d[k] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? plane[iy * W + ix] : 0.0f;
            }
            if (iy < 0 || iy >= H) {
                for (int k = 0; k < 6; k++) h[y][k] = 0.0f;
                continue;
            }
            CNX_W4_BT(float, fmaf, CNX_W4_SADD, CNX_W4_SSUB, CNX_W4_SSET, d, h[y]);
        }
        for (int b = 0; b < 6; b++) {
            for (int y = 0; y < 6; y++) col[y] = h[y][b];
            CNX_W4_BT(float, fmaf, CNX_W4_SADD, CNX_W4_SSUB, CNX_W4_SSET, col, r);
            for (int a = 0; a < 6; a++) v[(6 * a + b) * sxi + j] = r[a];
        }
    }
}

static int cnx_w4_output_generic(const float *m, int64_t sxi, int64_t cnt, float b,
                                 float *out, int64_t OH, int64_t OW, int64_t oy0,
                                 int64_t ox0) {
    int bad = 0;
    for (int64_t j = 0; j < cnt; j++) {
        float t[4][6], col[6], o[4], mm[6];
        for (int k = 0; k < 6; k++) { /* columns: t (4, 6) = A^T m */
            for (int a = 0; a < 6; a++) col[a] = m[(6 * a + k) * sxi + j];
            CNX_W4_AT(float, fmaf, CNX_W4_SADD, CNX_W4_SSUB, CNX_W4_SSET, col, o);
            for (int r = 0; r < 4; r++) t[r][k] = o[r];
        }
        for (int r = 0; r < 4; r++) {
            int64_t oy = oy0 + r;
            for (int k = 0; k < 6; k++) mm[k] = t[r][k];
            CNX_W4_AT(float, fmaf, CNX_W4_SADD, CNX_W4_SSUB, CNX_W4_SSET, mm, o);
            if (oy >= OH) continue;
            for (int k = 0; k < 4; k++) {
                int64_t ox = ox0 + 4 * j + k;
                if (ox < OW) {
                    float y = o[k] + b;
                    out[oy * OW + ox] = y;
                    bad |= y - y != 0.0f; /* inf - inf, NaN: NaN */
                }
            }
        }
    }
    return bad;
}

#ifdef CNX_X86
#define CNX_W4_YFMA(a, b, c) _mm256_fmadd_ps(a, b, c)

/* The 4x4 in-lane transpose of y[0..3]: lane half h of d[k] = element k of
 * lane half h of y[0], y[1], y[2], y[3]; only d[0..nk) are formed. */
#define CNX_W4_T4(y, d, nk)                                                    \
    do {                                                                       \
        __m256 u0_ = _mm256_unpacklo_ps(y[0], y[1]), u2_ = _mm256_unpacklo_ps(y[2], y[3]); \
        d[0] = _mm256_shuffle_ps(u0_, u2_, 0x44);                              \
        d[1] = _mm256_shuffle_ps(u0_, u2_, 0xEE);                              \
        if ((nk) > 2) {                                                        \
            __m256 u1_ = _mm256_unpackhi_ps(y[0], y[1]), u3_ = _mm256_unpackhi_ps(y[2], y[3]); \
            d[2] = _mm256_shuffle_ps(u1_, u3_, 0x44);                          \
            d[3] = _mm256_shuffle_ps(u1_, u3_, 0xEE);                          \
        }                                                                      \
    } while (0)

/* The 128-bit chunk of 4 floats at p by its kind: 1 all inside the plane
 * (a plain load), 2 partly (a masked load, lanes outside mk zero), 0 none
 * (zeros).  Masked loads cost several times a plain one on some CPUs. */
CNX_TARGET_AVX2 static inline __attribute__((always_inline)) __m128
cnx_w4_chunk(const float *p, int kind, __m256i mk) {
    if (kind == 1) return _mm_loadu_ps(p);
    if (kind == 2) return _mm_maskload_ps(p, _mm256_castsi256_si128(mk));
    return _mm_setzero_ps();
}

CNX_TARGET_AVX2 static void cnx_w4_input_avx2(const float *CNX_W4_RESTRICT plane, int64_t H,
                                              int64_t W, int64_t iy0, int64_t ix0, int64_t cnt,
                                              float *CNX_W4_RESTRICT v, int64_t sxi) {
    const __m256 zero = _mm256_setzero_ps();
    for (int64_t j = 0; j < cnt; j += 8) {
        int64_t c0 = ix0 + 4 * j; /* the group's first column: chunks at c0 + 4q, q < 9 */
        __m256i mk[9];
        int kind[9];
        __m256 h[6][6];
        for (int q = 0; q < 9; q++) {
            int64_t a = c0 + 4 * q;
            kind[q] = a >= 0 && a + 4 <= W ? 1 : a + 4 <= 0 || a >= W ? 0 : 2;
            mk[q] = cnx_lanes_avx2(-a, W - a);
        }
        for (int y = 0; y < 6; y++) {
            int64_t iy = iy0 + y;
            __m128 q[9];
            __m256 yy[4], d[6];
            if (iy < 0 || iy >= H) {
                for (int k = 0; k < 6; k++) h[y][k] = zero;
                continue;
            }
            const float *r = plane + iy * W + c0;
            for (int i = 0; i < 9; i++) q[i] = cnx_w4_chunk(r + 4 * i, kind[i], mk[i]);
            for (int i = 0; i < 4; i++)
                yy[i] = _mm256_insertf128_ps(_mm256_castps128_ps256(q[i]), q[i + 4], 1);
            CNX_W4_T4(yy, d, 4);
            for (int i = 0; i < 4; i++)
                yy[i] = _mm256_insertf128_ps(_mm256_castps128_ps256(q[i + 1]), q[i + 5], 1);
            CNX_W4_T4(yy, (d + 4), 2);
            CNX_W4_BT(__m256, CNX_W4_YFMA, _mm256_add_ps, _mm256_sub_ps, _mm256_set1_ps, d, h[y]);
        }
        for (int b = 0; b < 6; b++) {
            __m256 col[6], r[6];
            for (int y = 0; y < 6; y++) col[y] = h[y][b];
            CNX_W4_BT(__m256, CNX_W4_YFMA, _mm256_add_ps, _mm256_sub_ps, _mm256_set1_ps, col, r);
            for (int a = 0; a < 6; a++) CNX_Y_STORE_N(ps, v + (6 * a + b) * sxi + j, r[a], cnt - j, 8);
        }
    }
}

/* Lanes < n of v hold an inf or a NaN: OR-ed into *bad (as lanes). */
#define CNX_W4_BAD(bad, v, n)                                                  \
    do {                                                                       \
        if ((n) > 0)                                                           \
            bad = _mm256_or_ps(bad, _mm256_and_ps(                             \
                _mm256_cmp_ps(_mm256_sub_ps(v, v), v, _CMP_UNORD_Q),           \
                _mm256_castsi256_ps(cnx_lanes_avx2(0, n))));                   \
    } while (0)

CNX_TARGET_AVX2 static int cnx_w4_output_avx2(const float *CNX_W4_RESTRICT m, int64_t sxi,
                                              int64_t cnt, float b, float *CNX_W4_RESTRICT out,
                                              int64_t OH, int64_t OW, int64_t oy0,
                                              int64_t ox0) {
    const __m256 vb = _mm256_set1_ps(b);
    __m256 bad = _mm256_setzero_ps();
    for (int64_t j = 0; j < cnt; j += 8) {
        __m256 t[4][6];
        int64_t ox = ox0 + 4 * j;
        /* the columns of the group's outputs to store: of its tiles, inside the plane */
        int64_t n = 4 * (cnt - j) < OW - ox ? 4 * (cnt - j) : OW - ox;
        for (int k = 0; k < 6; k++) { /* columns: t (4, 6) = A^T m */
            __m256 col[6], o[4];
            for (int a = 0; a < 6; a++) col[a] = _mm256_loadu_ps(m + (6 * a + k) * sxi + j);
            CNX_W4_AT(__m256, CNX_W4_YFMA, _mm256_add_ps, _mm256_sub_ps, _mm256_set1_ps, col, o);
            for (int r = 0; r < 4; r++) t[r][k] = o[r];
        }
        for (int r = 0; r < 4 && oy0 + r < OH; r++) {
            __m256 o[4], u[4];
            float *dst = out + (oy0 + r) * OW + ox;
            CNX_W4_AT(__m256, CNX_W4_YFMA, _mm256_add_ps, _mm256_sub_ps, _mm256_set1_ps, t[r], o);
            for (int k = 0; k < 4; k++) o[k] = _mm256_add_ps(o[k], vb);
            CNX_W4_T4(o, u, 4); /* u[i]: tile i's 4 columns, tile i + 4's in the high half */
            __m256 y[4] = {_mm256_permute2f128_ps(u[0], u[1], 0x20),
                           _mm256_permute2f128_ps(u[2], u[3], 0x20),
                           _mm256_permute2f128_ps(u[0], u[1], 0x31),
                           _mm256_permute2f128_ps(u[2], u[3], 0x31)};
            for (int q = 0; q < 4; q++) {
                CNX_Y_STORE_N(ps, dst + 8 * q, y[q], n - 8 * q, 8);
                CNX_W4_BAD(bad, y[q], n - 8 * q);
            }
        }
    }
    return _mm256_movemask_ps(bad) != 0;
}
#endif

static cnx_w4_kernels cnx_w4_select(void) {
    cnx_w4_kernels k;
    int isa = cnx_isa_from_env(cnx_detect_isa());
    k.input = cnx_w4_input_generic;
    k.output = cnx_w4_output_generic;
    k.name = "generic";
#ifdef CNX_X86
    if (isa >= 1) {
        k.input = cnx_w4_input_avx2;
        k.output = cnx_w4_output_avx2;
        k.name = "avx2";
    }
#else
    (void)isa;
#endif
    return k;
}

#endif /* CNNEXT_WINOGRAD4_H */
