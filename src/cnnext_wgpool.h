/*
 * Winograd F(2x2, 3x3) output transform with the bias, a 2x2 stride-2 max
 * pool and a ReLU fused (inference): each output tile of F(2x2, 3x3) is
 * one window of the pool, so the tile's four outputs are pooled as they
 * are made and only the pooled value is stored.
 *
 * The same operations in the same order as wg_output, wg_scatter's bias
 * addition, the pool and the ReLU (cnnext_winograd_body.h, cnnext_pool.h):
 * rounding is monotonic, so the largest of the four sums is the largest
 * after the bias is added, and the ReLU maps the pool's choice between
 * -0.0 and 0.0 to 0.0 either way -- the same numbers.  Inf and NaN are
 * reported rather than pooled (the caller recomputes with the direct
 * algorithm, as for the unpooled Winograd forward).
 */
#ifndef CNNEXT_WGPOOL_H
#define CNNEXT_WGPOOL_H

#include <stdint.h>
#include "cnnext_ukernel.h"
#include "cnnext_winograd.h"

/* out[l] = ReLU(max over the 2x2 outputs of tile l of A^T m A, plus b)
 * for lanes l < n, m[xi*sxi + l]; returns 1 when one of those outputs
 * (plus b) is inf or NaN (out is then incomplete), else 0. */
typedef int (*cnx_wgp_output_pool)(const float *m, int64_t sxi, int64_t n, float b,
                                   float *out);

static int cnx_wgp_output_pool_generic(const float *m, int64_t sxi, int64_t n, float b,
                                       float *out) {
    int bad = 0;
#define WGP_M(a, c) m[((a) * 4 + (c)) * sxi + l]
    for (int64_t l = 0; l < n; l++) {
        float z00 = WGP_M(0, 0) + WGP_M(1, 0) + WGP_M(2, 0);
        float z10 = WGP_M(1, 0) - WGP_M(2, 0) - WGP_M(3, 0);
        float z01 = WGP_M(0, 1) + WGP_M(1, 1) + WGP_M(2, 1);
        float z11 = WGP_M(1, 1) - WGP_M(2, 1) - WGP_M(3, 1);
        float z02 = WGP_M(0, 2) + WGP_M(1, 2) + WGP_M(2, 2);
        float z12 = WGP_M(1, 2) - WGP_M(2, 2) - WGP_M(3, 2);
        float z03 = WGP_M(0, 3) + WGP_M(1, 3) + WGP_M(2, 3);
        float z13 = WGP_M(1, 3) - WGP_M(2, 3) - WGP_M(3, 3);
        float v[4] = {z00 + z01 + z02 + b, z01 - z02 - z03 + b, z10 + z11 + z12 + b,
                      z11 - z12 - z13 + b};
        float mx = v[0];
        for (int k = 0; k < 4; k++) {
            bad |= v[k] - v[k] != 0.0f; /* inf - inf and NaN: NaN */
            if (v[k] > mx) mx = v[k];
        }
        out[l] = mx > 0.0f ? mx : 0.0f;
    }
#undef WGP_M
    return bad;
}

#if defined(CNX_X86) && defined(__GNUC__)
#define CNX_WGP_X86 1
__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
static int cnx_wgp_output_pool_avx512(const float *m, int64_t sxi, int64_t n, float b,
                                      float *out) {
    const __m512 vb = _mm512_set1_ps(b), zero = _mm512_setzero_ps();
    __mmask16 bad = 0;
    for (int64_t l = 0; l < n; l += 16) {
        __mmask16 mk = n - l >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - l)) - 1);
        __m512 r0[4], r1[4];
        for (int c = 0; c < 4; c++) {
            __m512 m0 = _mm512_maskz_loadu_ps(mk, m + c * sxi + l);
            __m512 m1 = _mm512_maskz_loadu_ps(mk, m + (4 + c) * sxi + l);
            __m512 m2 = _mm512_maskz_loadu_ps(mk, m + (8 + c) * sxi + l);
            __m512 m3 = _mm512_maskz_loadu_ps(mk, m + (12 + c) * sxi + l);
            r0[c] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
            r1[c] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
        }
        __m512 v00 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(r0[0], r0[1]), r0[2]), vb);
        __m512 v01 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(r0[1], r0[2]), r0[3]), vb);
        __m512 v10 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(r1[0], r1[1]), r1[2]), vb);
        __m512 v11 = _mm512_add_ps(_mm512_sub_ps(_mm512_sub_ps(r1[1], r1[2]), r1[3]), vb);
        /* QNaN, +inf, -inf, SNaN (the masked-off lanes are zeros) */
        bad |= _mm512_fpclass_ps_mask(v00, 0x99) | _mm512_fpclass_ps_mask(v01, 0x99) |
               _mm512_fpclass_ps_mask(v10, 0x99) | _mm512_fpclass_ps_mask(v11, 0x99);
        __m512 mx = _mm512_max_ps(_mm512_max_ps(v00, v01), _mm512_max_ps(v10, v11));
        _mm512_mask_storeu_ps(out + l, mk, _mm512_max_ps(mx, zero));
    }
    return bad != 0;
}

/* The input transform of tiles [t0, t0 + nv) (tile t: sample t / (th*8),
 * tile row t / 8 % th, tile column t % 8) for maps of 8 tile columns and
 * rows of at most 16 values (a 16x16 map with padding 1, say): 16 lanes
 * are two tile rows, each input row one vector, the tiles' columns picked
 * by two-source permutes (zero outside the map: the padding) -- the runs of
 * wg_rows and wg_input_rows would fill half vectors.  Lane l = t - t0 of
 * point xi and channel c goes to v[xi*sxi + c*sc + (l / PN)*sp + l % PN]
 * (PN a multiple of 16), the lanes from nv on untouched.  The same
 * operations in the same order as wg_input_rows. */
typedef void (*cnx_wgp_input_tw8)(const float *x, int64_t C, int64_t H, int64_t W,
                                  int64_t ph, int64_t pw, int64_t th, int64_t t0, int64_t nv,
                                  int64_t PN, float *v, int64_t sp, int64_t sc, int64_t sxi);

__attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
static void cnx_wgp_input_tw8_avx512(const float *x, int64_t C, int64_t H, int64_t W,
                                     int64_t ph, int64_t pw, int64_t th, int64_t t0,
                                     int64_t nv, int64_t PN, float *v, int64_t sp, int64_t sc,
                                     int64_t sxi) {
    __m512i idx[4];
    __mmask16 cols[4], wm = (__mmask16)((1u << W) - 1);
    for (int k = 0; k < 4; k++) { /* lane j of either half: column 2*(j % 8) + k - pw */
        uint32_t m = 0;
        int32_t id[16];
        for (int j = 0; j < 16; j++) {
            int64_t col = 2 * (j % 8) + k - pw;
            id[j] = (int32_t)((col < 0 || col >= W ? 0 : col) + (j < 8 ? 0 : 16));
            if (col >= 0 && col < W) m |= 1u << j;
        }
        idx[k] = _mm512_loadu_si512(id);
        cols[k] = (__mmask16)m;
    }
    for (int64_t c = 0; c < C; c++) {
        for (int64_t l = 0; l < nv; l += 16) {
            __mmask16 lm = nv - l >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (nv - l)) - 1);
            const float *pl[2];
            int64_t iy0[2];
            for (int h = 0; h < 2; h++) { /* the halves' sample planes and first rows */
                int64_t r = (t0 + l) / 8 + h, n = r / th;
                pl[h] = x + (n * C + c) * H * W;
                iy0[h] = 2 * (r - n * th) - ph;
            }
            int half2 = nv - l > 8;
            __m512 d[4][4];
            for (int y = 0; y < 4; y++) {
                __m512 ra = _mm512_setzero_ps(), rb = _mm512_setzero_ps();
                int64_t ya = iy0[0] + y, yb = iy0[1] + y;
                if (ya >= 0 && ya < H) ra = _mm512_maskz_loadu_ps(wm, pl[0] + ya * W);
                if (half2 && yb >= 0 && yb < H) rb = _mm512_maskz_loadu_ps(wm, pl[1] + yb * W);
                for (int k = 0; k < 4; k++)
                    d[y][k] = _mm512_maskz_permutex2var_ps(cols[k], ra, idx[k], rb);
            }
            wg_btdb_store_avx512(d, lm, v + c * sc + (l / PN) * sp + l % PN, sxi);
        }
    }
}
#endif

static cnx_wgp_output_pool cnx_wgp_select(void) {
#ifdef CNX_WGP_X86
    if (cnx_isa_from_env(cnx_detect_isa()) == 2) return cnx_wgp_output_pool_avx512;
#endif
    return cnx_wgp_output_pool_generic;
}

/* The tw8 input transform on AVX-512, else NULL (wg_rows and wg_input_rows). */
static cnx_wgp_input_tw8 cnx_wgp_select_tw8(void) {
#ifdef CNX_WGP_X86
    if (cnx_isa_from_env(cnx_detect_isa()) == 2) return cnx_wgp_input_tw8_avx512;
#endif
    return 0;
}

#endif /* CNNEXT_WGPOOL_H */
