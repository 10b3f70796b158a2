/*
 * Winograd F(2x2, 3x3) tile loops, one copy per instruction set.
 *
 * Included by src/cnnext_winograd.h with WG_SUF (the name suffix) defined,
 * inside a region compiled for one instruction set.  Every loop runs along
 * the tiles of a block (the "lanes": contiguous, so the compiler vectorises
 * it with the region's vector width); the transforms are written out with
 * their 0/1/-1 coefficients, never as multiplications by zero.
 *
 * Transforms (Lavin & Gray, "Fast Algorithms for Convolutional Neural
 * Networks", 2016), applied along both axes of a tile:
 *   input  B^T d:  (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
 *   output A^T m:  (m0 + m1 + m2, m1 - m2 - m3)
 *   the output transform's adjoint A y (weight gradient):
 *                  (y0, y0 + y1, y0 - y1, -y1)
 */
#define WG_CAT_(a, b) a##_##b
#define WG_CAT(a, b) WG_CAT_(a, b)
#define WG_FN(name) WG_CAT(name, WG_SUF)

/* p[y*lp + i] = plane[(iy0 + y)*W + ix0 + i] for y < P, i < n: P rows of
 * the plane from column ix0, zero outside it (the convolution's padding).
 * Short rows: the copies stay inline loops (CNX_NO_LIBCALL), as a memcpy or
 * memset call per row costs more than the copy. */
static CNX_NO_LIBCALL void WG_FN(wg_rows)(const float *CNX_RESTRICT plane, int64_t H,
                                          int64_t W, int64_t iy0, int64_t ix0, int64_t n,
                                          int P, float *CNX_RESTRICT p, int64_t lp) {
    int64_t lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0 < n ? W - ix0 : n, i;
    if (hi < lo) hi = lo;
    for (int y = 0; y < P; y++) {
        float *dst = p + y * lp;
        int64_t iy = iy0 + y;
        if (iy < 0 || iy >= H) {
#pragma omp simd
            for (i = 0; i < n; i++) dst[i] = 0.0f;
            continue;
        }
        const float *src = plane + iy * W + ix0;
        for (i = 0; i < lo; i++) dst[i] = 0.0f;
#pragma omp simd
        for (i = lo; i < hi; i++) dst[i] = src[i];
        for (i = hi; i < n; i++) dst[i] = 0.0f;
    }
}

/* 1 when a[0:n] + b (each sum rounded as a float, as the scatters store
 * it) holds no inf or NaN: the sum of (a + b) - (a + b) is then 0. */
static int WG_FN(wg_finite)(const float *CNX_RESTRICT a, int64_t n, float b) {
    float z = 0.0f;
#pragma omp simd reduction(+ : z)
    for (int64_t i = 0; i < n; i++) {
        float v = a[i] + b;
        z += v - v;
    }
    return z == 0.0f;
}

/* dst[k*NR + j] = src[j*ld + k] for j < nr, k < n, zero for nr <= j < NR:
 * nr rows of n lanes transposed into a packed B panel. */
static void WG_FN(wg_pack_lanes)(const float *CNX_RESTRICT src, int64_t ld, int64_t nr,
                                 int64_t n, int64_t NR, float *CNX_RESTRICT dst) {
    for (int64_t k = 0; k < n; k++) {
        float *d = dst + k * NR;
#pragma omp simd
        for (int64_t j = 0; j < nr; j++) d[j] = src[j * ld + k];
        for (int64_t j = nr; j < NR; j++) d[j] = 0.0f;
    }
}

/* v[xi*sxi + j] = (B^T d_j B)[xi] for j < cnt, the 4x4 tile d_j[y][k] =
 * p[y*lp + 2*j + k] (4 rows from wg_rows, tile step 2). */
static void WG_FN(wg_input_rows)(const float *CNX_RESTRICT p, int64_t lp, int64_t cnt,
                                 float *CNX_RESTRICT v, int64_t sxi) {
    const float *p0 = p, *p1 = p + lp, *p2 = p + 2 * lp, *p3 = p + 3 * lp;
#pragma omp simd
    for (int64_t j = 0; j < cnt; j++) {
        float t[4][4];
        for (int k = 0; k < 4; k++) {
            float d0 = p0[2 * j + k], d1 = p1[2 * j + k], d2 = p2[2 * j + k], d3 = p3[2 * j + k];
            t[0][k] = d0 - d2; t[1][k] = d1 + d2; t[2][k] = d2 - d1; t[3][k] = d1 - d3;
        }
        for (int a = 0; a < 4; a++) {
            v[(a * 4 + 0) * sxi + j] = t[a][0] - t[a][2];
            v[(a * 4 + 1) * sxi + j] = t[a][1] + t[a][2];
            v[(a * 4 + 2) * sxi + j] = t[a][2] - t[a][1];
            v[(a * 4 + 3) * sxi + j] = t[a][1] - t[a][3];
        }
    }
}

/* gy[xi*sxi + j] = (A g_j A^T)[xi] for j < cnt, the 2x2 output-gradient
 * tile g_j[i][jj] = p[i*lp + 2*j + jj] (2 rows from wg_rows). */
static void WG_FN(wg_grad_rows)(const float *CNX_RESTRICT p, int64_t lp, int64_t cnt,
                                float *CNX_RESTRICT gy, int64_t sxi) {
#pragma omp simd
    for (int64_t j = 0; j < cnt; j++) {
        float g00 = p[2 * j], g01 = p[2 * j + 1], g10 = p[lp + 2 * j], g11 = p[lp + 2 * j + 1];
        float s[4][2] = {{g00, g01}, {g00 + g10, g01 + g11}, {g00 - g10, g01 - g11},
                         {-g10, -g11}};
        for (int a = 0; a < 4; a++) {
            gy[(a * 4 + 0) * sxi + j] = s[a][0];
            gy[(a * 4 + 1) * sxi + j] = s[a][0] + s[a][1];
            gy[(a * 4 + 2) * sxi + j] = s[a][0] - s[a][1];
            gy[(a * 4 + 3) * sxi + j] = -s[a][1];
        }
    }
}

/* y[(i*2 + jj)*n + l] = (A^T m A)[i, jj] for lanes l < n, m[xi*sxi + l]. */
static void WG_FN(wg_output)(const float *CNX_RESTRICT m, int64_t sxi, int64_t n,
                             float *CNX_RESTRICT y) {
#define WG_M(a, b) m[((a) * 4 + (b)) * sxi + l]
#pragma omp simd
    for (int64_t l = 0; l < n; l++) {
        float z00 = WG_M(0, 0) + WG_M(1, 0) + WG_M(2, 0), z10 = WG_M(1, 0) - WG_M(2, 0) - WG_M(3, 0);
        float z01 = WG_M(0, 1) + WG_M(1, 1) + WG_M(2, 1), z11 = WG_M(1, 1) - WG_M(2, 1) - WG_M(3, 1);
        float z02 = WG_M(0, 2) + WG_M(1, 2) + WG_M(2, 2), z12 = WG_M(1, 2) - WG_M(2, 2) - WG_M(3, 2);
        float z03 = WG_M(0, 3) + WG_M(1, 3) + WG_M(2, 3), z13 = WG_M(1, 3) - WG_M(2, 3) - WG_M(3, 3);
        y[l] = z00 + z01 + z02;
        y[n + l] = z01 - z02 - z03;
        y[2 * n + l] = z10 + z11 + z12;
        y[3 * n + l] = z11 - z12 - z13;
    }
#undef WG_M
}

/* out[(oy0 + i)*OW + ox0 + 2*j + jj] = y[(i*2 + jj)*ld + j] + b for j < cnt,
 * inside the OH x OW plane: the two columns of a tile row interleaved in
 * one vectorised pass, the odd last column (OW odd) on its own.  Returns 1
 * when a stored value is inf or NaN (the sum of v - v over them is then
 * NaN, else 0). */
static int WG_FN(wg_scatter)(const float *CNX_RESTRICT y, int64_t ld, int64_t cnt, float b,
                             float *CNX_RESTRICT out, int64_t OH, int64_t OW,
                             int64_t oy0, int64_t ox0) {
    float z = 0.0f;
    int64_t both = (OW - ox0) / 2; /* tiles whose two columns are inside */
    if (both > cnt) both = cnt;
    for (int i = 0; i < 2 && oy0 + i < OH; i++) {
        float *CNX_RESTRICT row = out + (oy0 + i) * OW + ox0;
        const float *s0 = y + (i * 2) * ld, *s1 = y + (i * 2 + 1) * ld;
#pragma omp simd reduction(+ : z)
        for (int64_t j = 0; j < both; j++) {
            float v0 = s0[j] + b, v1 = s1[j] + b;
            row[2 * j] = v0;
            row[2 * j + 1] = v1;
            z += (v0 - v0) + (v1 - v1);
        }
        if (both < cnt && ox0 + 2 * both < OW) {
            float v = s0[both] + b;
            row[2 * both] = v;
            z += v - v;
        }
    }
    return z != 0.0f;
}
