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

/* d[(y*P + k)*ld + j] = plane[(iy0 + y)*W + ix0 + 2*j + k] for j < cnt,
 * y, k < P: the P x P patches of cnt tiles along a row (tile step 2),
 * zero outside the H x W plane. */
static void WG_FN(wg_gather)(const float *CNX_RESTRICT plane, int64_t H, int64_t W,
                             int64_t iy0, int64_t ix0, int64_t cnt, int P,
                             float *CNX_RESTRICT d, int64_t ld) {
    for (int y = 0; y < P; y++) {
        int64_t iy = iy0 + y;
        for (int k = 0; k < P; k++) {
            float *dst = d + (int64_t)(y * P + k) * ld;
            int64_t base = ix0 + k, jlo = 0, jhi = 0, j;
            if (iy >= 0 && iy < H) {
                jlo = base >= 0 ? 0 : (1 - base) / 2;
                jhi = W - base <= 0 ? 0 : (W - base + 1) / 2;
                if (jlo > cnt) jlo = cnt;
                if (jhi > cnt) jhi = cnt;
                if (jhi < jlo) jhi = jlo;
            }
            for (j = 0; j < jlo; j++) dst[j] = 0.0f;
            for (j = jlo; j < jhi; j++) dst[j] = plane[iy * W + base + 2 * j];
            for (j = jhi; j < cnt; j++) dst[j] = 0.0f;
        }
    }
}

/* v[xi*sxi + (l / nr)*sp + l % nr] = (B^T d B)[xi] for lanes l < n (a
 * multiple of nr), d[(y*4 + k)*ld + l] the 4x4 input tiles. */
static void WG_FN(wg_input)(const float *CNX_RESTRICT d, int64_t ld, int64_t n, int64_t nr,
                            float *CNX_RESTRICT v, int64_t sxi, int64_t sp) {
    for (int64_t p = 0; p < n; p += nr) {
        const float *CNX_RESTRICT s = d + p;
        float *CNX_RESTRICT o = v + (p / nr) * sp;
        for (int a = 0; a < 4; a++) {  /* row a of B^T d, then its 4 columns */
            const float *r0 = s + (a == 0 ? 0 : 4) * ld;
            const float *r1 = s + (a == 3 ? 12 : 8) * ld;
            float sg = a == 2 ? -1.0f : 1.0f;
            float *CNX_RESTRICT o0 = o + (a * 4) * sxi;
            float *CNX_RESTRICT o1 = o0 + sxi;
            float *CNX_RESTRICT o2 = o1 + sxi;
            float *CNX_RESTRICT o3 = o2 + sxi;
            /* t_k = r0_k - r1_k (a = 0, 3), r0_k + r1_k (a = 1), r1_k - r0_k
             * (a = 2): sg*(r0 - r1) with r1 negated for a = 1 below. */
            if (a == 1) {
#pragma omp simd
                for (int64_t j = 0; j < nr; j++) {
                    float t0 = r0[j] + r1[j], t1 = r0[ld + j] + r1[ld + j];
                    float t2 = r0[2 * ld + j] + r1[2 * ld + j];
                    float t3 = r0[3 * ld + j] + r1[3 * ld + j];
                    o0[j] = t0 - t2; o1[j] = t1 + t2; o2[j] = t2 - t1; o3[j] = t1 - t3;
                }
            } else {
#pragma omp simd
                for (int64_t j = 0; j < nr; j++) {
                    float t0 = sg * (r0[j] - r1[j]), t1 = sg * (r0[ld + j] - r1[ld + j]);
                    float t2 = sg * (r0[2 * ld + j] - r1[2 * ld + j]);
                    float t3 = sg * (r0[3 * ld + j] - r1[3 * ld + j]);
                    o0[j] = t0 - t2; o1[j] = t1 + t2; o2[j] = t2 - t1; o3[j] = t1 - t3;
                }
            }
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
 * inside the OH x OW plane. */
static void WG_FN(wg_scatter)(const float *CNX_RESTRICT y, int64_t ld, int64_t cnt, float b,
                              float *CNX_RESTRICT out, int64_t OH, int64_t OW,
                              int64_t oy0, int64_t ox0) {
    for (int i = 0; i < 2 && oy0 + i < OH; i++) {
        float *row = out + (oy0 + i) * OW + ox0;
        for (int jj = 0; jj < 2; jj++) {
            const float *s = y + (i * 2 + jj) * ld;
            int64_t jhi = OW - ox0 - jj <= 0 ? 0 : (OW - ox0 - jj + 1) / 2;
            if (jhi > cnt) jhi = cnt;
            for (int64_t j = 0; j < jhi; j++) row[2 * j + jj] = s[j] + b;
        }
    }
}

/* gy[xi*sxi + l] = (A g A^T)[xi] for lanes l < n, g[(i*2 + jj)*ld + l] the
 * 2x2 output-gradient tiles (the output transform's adjoint). */
static void WG_FN(wg_grad_output)(const float *CNX_RESTRICT g, int64_t ld, int64_t n,
                                  float *CNX_RESTRICT gy, int64_t sxi) {
#pragma omp simd
    for (int64_t l = 0; l < n; l++) {
        float g00 = g[l], g01 = g[ld + l], g10 = g[2 * ld + l], g11 = g[3 * ld + l];
        float s[4][2] = {{g00, g01}, {g00 + g10, g01 + g11}, {g00 - g10, g01 - g11},
                         {-g10, -g11}};
        for (int a = 0; a < 4; a++) {
            gy[(a * 4 + 0) * sxi + l] = s[a][0];
            gy[(a * 4 + 1) * sxi + l] = s[a][0] + s[a][1];
            gy[(a * 4 + 2) * sxi + l] = s[a][0] - s[a][1];
            gy[(a * 4 + 3) * sxi + l] = -s[a][1];
        }
    }
}
