/*
 * Winograd F(2x2, 3x3) per-run transforms written for AVX2 (8 tiles per
 * vector), included by src/cnnext_winograd.h inside its AVX2 region.
 *
 * The compiled loops of cnnext_winograd_body.h run a run of 7 tiles (a
 * 14-column map) or 4 (a 7-column one) entirely in their scalar tails, and
 * copy each run's input rows to a zero-padded buffer first.  These read
 * the plane in place with masked loads (zero outside it: the padding),
 * split even and odd columns by shuffles, and store a partial last vector
 * in parts of 4, 2 and 1 (cnx_store_part_ps: AVX2's masked store is slow
 * on some CPUs).  Each function
 * does the operations of its loop in cnnext_winograd_body.h, in the same
 * order, so the results are the same bits.
 */

/* p[0:n] = v[0:n] (n <= 8): a full store, or the stores of
 * cnx_store_part_ps. */
static inline __attribute__((always_inline)) void wg_store_n_avx2(float *p, __m256 v,
                                                                   int64_t n) {
    CNX_Y_STORE_N(ps, p, v, n, 8);
}

/* The 4 columns d[k][j] = row[2j + k] (j < 8) of 8 tiles from the row's
 * 16 floats at 0 (a0, a1) and at 2 (b0, b1). */
static inline __attribute__((always_inline)) void
wg_tile_cols_avx2(__m256 a0, __m256 a1, __m256 b0, __m256 b1, __m256 d[4]) {
    d[0] = cnx_even_ps_avx2(a0, a1);
    d[1] = cnx_odd_ps_avx2(a0, a1);
    d[2] = cnx_even_ps_avx2(b0, b1);
    d[3] = cnx_odd_ps_avx2(b0, b1);
}

/* B^T d B of 8 tiles (d[y][x]: row y, column x of the 4x4 input tile, one
 * tile per lane), its 16 points stored at o + (4*a + b)*sxi, lanes < n. */
static inline __attribute__((always_inline)) void
wg_btdb_store_avx2(__m256 d[4][4], int64_t n, float *o, int64_t sxi) {
    __m256 t[4][4];
    for (int k = 0; k < 4; k++) {
        t[0][k] = _mm256_sub_ps(d[0][k], d[2][k]);
        t[1][k] = _mm256_add_ps(d[1][k], d[2][k]);
        t[2][k] = _mm256_sub_ps(d[2][k], d[1][k]);
        t[3][k] = _mm256_sub_ps(d[1][k], d[3][k]);
    }
    for (int a = 0; a < 4; a++, o += 4 * sxi) {
        wg_store_n_avx2(o, _mm256_sub_ps(t[a][0], t[a][2]), n);
        wg_store_n_avx2(o + sxi, _mm256_add_ps(t[a][1], t[a][2]), n);
        wg_store_n_avx2(o + 2 * sxi, _mm256_sub_ps(t[a][2], t[a][1]), n);
        wg_store_n_avx2(o + 3 * sxi, _mm256_sub_ps(t[a][1], t[a][3]), n);
    }
}

/* (A g A^T) of 8 tiles from g[i][jj] (the 2x2 gradient tile's row i,
 * column jj), its 16 points stored at o + (4*a + b)*sxi, lanes < n. */
static inline __attribute__((always_inline)) void
wg_agat_store_avx2(__m256 g[2][2], int64_t n, float *o, int64_t sxi) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 t[4][2];
    for (int k = 0; k < 2; k++) {
        t[0][k] = g[0][k];
        t[1][k] = _mm256_add_ps(g[0][k], g[1][k]);
        t[2][k] = _mm256_sub_ps(g[0][k], g[1][k]);
        t[3][k] = _mm256_xor_ps(g[1][k], sign);
    }
    for (int a = 0; a < 4; a++, o += 4 * sxi) {
        wg_store_n_avx2(o, t[a][0], n);
        wg_store_n_avx2(o + sxi, _mm256_add_ps(t[a][0], t[a][1]), n);
        wg_store_n_avx2(o + 2 * sxi, _mm256_sub_ps(t[a][0], t[a][1]), n);
        wg_store_n_avx2(o + 3 * sxi, _mm256_xor_ps(t[a][1], sign), n);
    }
}

/* wg_rows then wg_input_rows in one pass (cnx_wg_input_plane): the 4 rows
 * of cnt tiles from input row iy0, column ix0 of an H x W plane, read in
 * place by masked loads. */
static void wg_input_plane_avx2_m(const float *CNX_RESTRICT plane, int64_t H, int64_t W,
                                  int64_t iy0, int64_t ix0, int64_t cnt,
                                  float *CNX_RESTRICT v, int64_t sxi) {
    int64_t lo = ix0 < 0 ? -ix0 : 0, hi = W - ix0; /* columns ix0 + i inside the plane */
    for (int64_t j = 0; j < cnt; j += 8) {
        /* the loads read columns 2j .. 2j + 17: plain loads inside the plane */
        int inside = lo <= 2 * j && 2 * j + 18 <= hi;
        __m256i mk[4];
        if (!inside)
            for (int q = 0; q < 4; q++) { /* the loads at 2j, 2j + 8, 2j + 2, 2j + 10 */
                int64_t off = 2 * j + (q & 1) * 8 + (q >> 1) * 2;
                mk[q] = cnx_lanes_avx2(lo - off, hi - off);
            }
        __m256 d[4][4];
        for (int y = 0; y < 4; y++) {
            int64_t iy = iy0 + y;
            if (iy < 0 || iy >= H) {
                for (int k = 0; k < 4; k++) d[y][k] = _mm256_setzero_ps();
                continue;
            }
            const float *r = plane + iy * W + ix0 + 2 * j;
            __m256 a0, a1, b0, b1;
            if (inside) {
                a0 = _mm256_loadu_ps(r);
                a1 = _mm256_loadu_ps(r + 8);
                b0 = _mm256_loadu_ps(r + 2);
                b1 = _mm256_loadu_ps(r + 10);
            } else {
                a0 = _mm256_maskload_ps(r, mk[0]);
                a1 = _mm256_maskload_ps(r + 8, mk[1]);
                b0 = _mm256_maskload_ps(r + 2, mk[2]);
                b1 = _mm256_maskload_ps(r + 10, mk[3]);
            }
            wg_tile_cols_avx2(a0, a1, b0, b1, d[y]);
        }
        wg_btdb_store_avx2(d, cnt - j, v + j, sxi);
    }
}

/* wg_input_rows on 8-tile vectors (the rows of wg_rows: room for 16
 * floats past a run's 2*cnt + 2). */
static void wg_input_rows_avx2_m(const float *CNX_RESTRICT p, int64_t lp, int64_t cnt,
                                 float *CNX_RESTRICT v, int64_t sxi) {
    for (int64_t j = 0; j < cnt; j += 8) {
        __m256 d[4][4];
        for (int y = 0; y < 4; y++) {
            const float *r = p + y * lp + 2 * j;
            __m256 a0 = _mm256_loadu_ps(r), a1 = _mm256_loadu_ps(r + 8);
            __m256 b0 = _mm256_loadu_ps(r + 2), b1 = _mm256_loadu_ps(r + 10);
            wg_tile_cols_avx2(a0, a1, b0, b1, d[y]);
        }
        wg_btdb_store_avx2(d, cnt - j, v + j, sxi);
    }
}

/* wg_grad_rows on 8-tile vectors; the loads are masked (the rows may be the
 * upstream gradient itself, read in place up to its last element). */
static void wg_grad_rows_avx2_m(const float *CNX_RESTRICT p, int64_t lp, int64_t cnt,
                                float *CNX_RESTRICT gy, int64_t sxi) {
    for (int64_t j = 0; j < cnt; j += 8) {
        int whole = j + 8 <= cnt; /* plain loads */
        __m256i m0 = cnx_lanes_avx2(0, 2 * (cnt - j));
        __m256i m1 = cnx_lanes_avx2(0, 2 * (cnt - j) - 8);
        __m256 g[2][2];
        for (int r = 0; r < 2; r++) {
            const float *q = p + r * lp + 2 * j;
            __m256 a0 = whole ? _mm256_loadu_ps(q) : _mm256_maskload_ps(q, m0);
            __m256 a1 = whole ? _mm256_loadu_ps(q + 8) : _mm256_maskload_ps(q + 8, m1);
            g[r][0] = cnx_even_ps_avx2(a0, a1);
            g[r][1] = cnx_odd_ps_avx2(a0, a1);
        }
        wg_agat_store_avx2(g, cnt - j, gy + j, sxi);
    }
}

/* wg_scatter with the two columns of 8 tiles interleaved by unpacks. */
static int wg_scatter_avx2_m(const float *CNX_RESTRICT y, int64_t ld, int64_t cnt, float b,
                             float *CNX_RESTRICT out, int64_t OH, int64_t OW, int64_t oy0,
                             int64_t ox0) {
    const __m256 vb = _mm256_set1_ps(b);
    __m256 z = _mm256_setzero_ps();
    float last = 0.0f;
    int64_t both = (OW - ox0) / 2; /* tiles whose two columns are inside */
    if (both > cnt) both = cnt;
    for (int i = 0; i < 2 && oy0 + i < OH; i++) {
        float *CNX_RESTRICT row = out + (oy0 + i) * OW + ox0;
        const float *s0 = y + (i * 2) * ld, *s1 = y + (i * 2 + 1) * ld;
        for (int64_t j = 0; j < both; j += 8) {
            int64_t n = both - j < 8 ? both - j : 8;
            __m256i m = cnx_lanes_avx2(0, n);
            __m256 v0 = _mm256_add_ps(_mm256_maskload_ps(s0 + j, m), vb);
            __m256 v1 = _mm256_add_ps(_mm256_maskload_ps(s1 + j, m), vb);
            __m256 lo = _mm256_unpacklo_ps(v0, v1), hi = _mm256_unpackhi_ps(v0, v1);
            z = _mm256_add_ps(z, _mm256_add_ps(_mm256_sub_ps(v0, v0), _mm256_sub_ps(v1, v1)));
            wg_store_n_avx2(row + 2 * j, _mm256_permute2f128_ps(lo, hi, 0x20),
                            2 * n < 8 ? 2 * n : 8);
            if (n > 4) wg_store_n_avx2(row + 2 * j + 8, _mm256_permute2f128_ps(lo, hi, 0x31),
                                       2 * n - 8);
        }
        if (both < cnt && ox0 + 2 * both < OW) {
            float v = s0[both] + b;
            row[2 * both] = v;
            last += v - v;
        }
    }
    {
        __m128 q = _mm_add_ps(_mm256_castps256_ps128(z), _mm256_extractf128_ps(z, 1));
        q = _mm_add_ps(q, _mm_movehl_ps(q, q));
        q = _mm_add_ss(q, _mm_movehdup_ps(q));
        return _mm_cvtss_f32(q) + last != 0.0f;
    }
}

/* Maps of 4 tile columns from rows of at most 8 values (the geometry of
 * wg_input_tw4_avx512, tiles t0 a multiple of 4): 8 lanes are two tile
 * rows.  A row's values s[i] = row[i + 1 - pw] (i < 8) are split into
 * even and odd positions, the two tile rows' halves joined, and the
 * columns 2j - 1 and 2j + 2 are those shifted by a lane within each half
 * (the zero shifted in: the padding at s[-1] and s[8]; pw >= 1 and
 * W + pw <= 9 for 4 tile columns from <= 8 values). */
static inline __attribute__((always_inline)) void
wg_tw4_cols_avx2(__m256 r0, __m256 r1, __m256 d[4]) {
    const __m256i perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256 p0 = _mm256_permutevar8x32_ps(r0, perm), p1 = _mm256_permutevar8x32_ps(r1, perm);
    d[1] = _mm256_permute2f128_ps(p0, p1, 0x20); /* s[2j] */
    d[2] = _mm256_permute2f128_ps(p0, p1, 0x31); /* s[2j + 1] */
    d[0] = _mm256_castsi256_ps(_mm256_slli_si256(_mm256_castps_si256(d[2]), 4));
    d[3] = _mm256_castsi256_ps(_mm256_srli_si256(_mm256_castps_si256(d[1]), 4));
}

/* cnx_wg_input_tw4 on 8-lane vectors. */
static void wg_input_tw4_avx2(const float *CNX_RESTRICT x, int64_t C, int64_t H, int64_t W,
                              int64_t ph, int64_t pw, int64_t th, int64_t t0, int64_t nv,
                              int64_t PN, float *CNX_RESTRICT v, int64_t sp, int64_t sc,
                              int64_t sxi) {
    const __m256i wm = cnx_lanes_avx2(pw - 1, pw - 1 + W);
    for (int64_t l = 0; l < nv; l += 8) {
        int64_t off[2], iy0[2], nq = (nv - l + 3) / 4;
        for (int q = 0; q < 2; q++) { /* the two tile rows' sample planes and first rows */
            int64_t r = (t0 + l) / 4 + q, n = r / th;
            off[q] = n * C * H * W + 1 - pw;
            iy0[q] = q < nq ? 2 * (r - n * th) - ph : -1000;
        }
        for (int64_t c = 0; c < C; c++) {
            const float *xc = x + c * H * W;
            __m256 d[4][4];
            for (int y = 0; y < 4; y++) {
                __m256 rw[2];
                for (int q = 0; q < 2; q++) {
                    int64_t iy = iy0[q] + y;
                    rw[q] = iy >= 0 && iy < H ? _mm256_maskload_ps(xc + off[q] + iy * W, wm)
                                              : _mm256_setzero_ps();
                }
                wg_tw4_cols_avx2(rw[0], rw[1], d[y]);
            }
            wg_btdb_store_avx2(d, nv - l, v + c * sc + (l / PN) * sp + l % PN, sxi);
        }
    }
}

/* cnx_wg_scatter_tw4 on 8-lane vectors (two tile rows). */
static void wg_scatter_tw4_avx2(const float *CNX_RESTRICT y, int64_t ld, int64_t nv, float b,
                                float *CNX_RESTRICT out, int64_t Co, int64_t co, int64_t OH,
                                int64_t OW, int64_t th, int64_t t0) {
    const __m256 vb = _mm256_set1_ps(b);
    for (int64_t l = 0; l < nv; l += 8) {
        __m256i lm = cnx_lanes_avx2(0, nv - l);
        __m256 s[4], rows[2][2];
        for (int k = 0; k < 4; k++)
            s[k] = _mm256_add_ps(_mm256_maskload_ps(y + k * ld + l, lm), vb);
        for (int i = 0; i < 2; i++) { /* output row i of both tile rows */
            __m256 lo = _mm256_unpacklo_ps(s[2 * i], s[2 * i + 1]);
            __m256 hi = _mm256_unpackhi_ps(s[2 * i], s[2 * i + 1]);
            rows[i][0] = _mm256_permute2f128_ps(lo, hi, 0x20);
            rows[i][1] = _mm256_permute2f128_ps(lo, hi, 0x31);
        }
        for (int q = 0; q < 2 && 4 * q < nv - l; q++) {
            int64_t r = (t0 + l) / 4 + q, n = r / th, oy = 2 * (r - n * th);
            float *plane = out + (n * Co + co) * OH * OW;
            for (int i = 0; i < 2 && oy + i < OH; i++)
                wg_store_n_avx2(plane + (oy + i) * OW, rows[i][q], OW);
        }
    }
}

/* cnx_wg_grad_tw4 on 8-lane vectors (two tile rows). */
static void wg_grad_tw4_avx2(const float *CNX_RESTRICT g, int64_t Co, int64_t OH, int64_t OW,
                             int64_t th, int64_t t0, int64_t nv, float *CNX_RESTRICT gy,
                             int64_t ld, int64_t sxi) {
    const __m256i perm = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    const __m256i wm = cnx_lanes_avx2(0, OW);
    for (int64_t l = 0; l < nv; l += 8) {
        int64_t off[2], oy[2], nq = (nv - l + 3) / 4;
        for (int q = 0; q < 2; q++) {
            int64_t r = (t0 + l) / 4 + q, n = r / th;
            off[q] = n * Co * OH * OW;
            oy[q] = q < nq ? 2 * (r - n * th) : OH;
        }
        for (int64_t co = 0; co < Co; co++) {
            const float *gc = g + co * OH * OW;
            __m256 gv[2][2];
            for (int i = 0; i < 2; i++) {
                __m256 p[2];
                for (int q = 0; q < 2; q++)
                    p[q] = _mm256_permutevar8x32_ps(
                        oy[q] + i < OH ? _mm256_maskload_ps(gc + off[q] + (oy[q] + i) * OW, wm)
                                       : _mm256_setzero_ps(),
                        perm);
                gv[i][0] = _mm256_permute2f128_ps(p[0], p[1], 0x20); /* columns 2j */
                gv[i][1] = _mm256_permute2f128_ps(p[0], p[1], 0x31); /* columns 2j + 1 */
            }
            wg_agat_store_avx2(gv, nv - l, gy + co * ld + l, sxi);
        }
    }
}

/* dst[i*ldd + j] = src[j*ld + i] for i, j < 8: an 8 x 8 transpose. */
static inline void wg_transpose8_avx2(const float *src, int64_t ld, float *dst, int64_t ldd) {
    __m256 r[8];
    for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + i * ld);
    cnx_transpose8_ps_avx2(r);
    for (int i = 0; i < 8; i++) _mm256_storeu_ps(dst + i * ldd, r[i]);
}

/* wg_pack_lanes by 8 x 8 transposes where the panel is full. */
static void wg_pack_lanes_avx2_t(const float *src, int64_t ld, int64_t nr, int64_t n,
                                 int64_t NR, float *dst) {
    int64_t n8 = n / 8 * 8, k, j;
    if (nr != NR || NR % 8 != 0) {
        wg_pack_lanes_avx2(src, ld, nr, n, NR, dst);
        return;
    }
    for (k = 0; k < n8; k += 8)
        for (j = 0; j < NR; j += 8) wg_transpose8_avx2(src + j * ld + k, ld, dst + k * NR + j, NR);
    for (k = n8; k < n; k++)
        for (j = 0; j < NR; j++) dst[k * NR + j] = src[j * ld + k];
}
