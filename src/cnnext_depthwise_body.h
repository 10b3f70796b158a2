/*
 * Depthwise-convolution row kernels, one copy per (instruction set, dtype).
 *
 * Included by src/cnnext_depthwise.h with DW_T (float or double), DW_I (the
 * integer type of DW_T's width), DW_VB (vector bytes), DW_SUF (the name
 * suffix) and DW_VEXT defined, inside a region compiled for one instruction
 * set.  DW_VEXT = 1 (the AVX2 and AVX-512 copies, GCC/Clang): explicit
 * vectors (GCC's vector extensions) along the output row, in registers, the
 * last one partial.  DW_VEXT = 0 (the baseline copy, and every copy MSVC
 * builds): plain C loops in the same summation order, which the compiler
 * vectorises where it can.
 *
 * Every kernel reads a "prepared" plane: zero-padded and split by column
 * phase (see _depthwise.pyx), so that tap (i, j) of output column q sits at
 *     x[r*rs + i*ts + coff[j] + q]          (r = output row)
 * for every stride and dilation: contiguous in q, no bounds checks.
 */
#define DW_CAT_(a, b) a##_##b
#define DW_CAT(a, b) DW_CAT_(a, b)
#define DW_FN(name) DW_CAT(name, DW_SUF)

#if DW_VEXT
typedef DW_T DW_FN(dw_vec) __attribute__((vector_size(DW_VB)));
typedef DW_I DW_FN(dw_ivec) __attribute__((vector_size(DW_VB)));
#define DW_V DW_FN(dw_vec)
#define DW_IV DW_FN(dw_ivec)
#define DW_L ((int64_t)(DW_VB / sizeof(DW_T)))

static inline DW_V DW_FN(dw_load)(const DW_T *p) {
    DW_V v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Whole vectors of an output row: v = p[0:m] (zero beyond) or p[0:m] = v,
 * m <= DW_L lanes: a plain load or store for whole vectors, the ISA's
 * masked one (DW_MLOAD, DW_MSTORE) for the last, partial one. */
#define DW_GET(v, p, m)                                                        \
    do {                                                                       \
        if ((m) == DW_L) memcpy(&(v), (p), sizeof(v));                         \
        else (v) = (DW_V)DW_MLOAD((p), (m));                                   \
    } while (0)
#define DW_PUT(p, v, m)                                                        \
    do {                                                                       \
        if ((m) == DW_L) memcpy((p), &(v), sizeof(v));                         \
        else DW_MSTORE((p), (v), (m));                                         \
    } while (0)

/* out[r*ldo + q] = base + sum_{i,j} w[i*KW+j] * x[r*rs + i*ts + coff[j] + q],
 * base = out[...] (accumulate) or b; the taps are added in (i, j) order,
 * each output in a vector register.  Whole vectors throughout: the last one
 * reads past n (inside the prepared row) and stores only its first lanes.
 * When consecutive output rows are one input row apart (rs == ts), two rows
 * are computed together and share every load but the first and last row's
 * (the same summation order per output). */
#define DW_FWD_FIXED(NAME, KH, KW)                                             \
    static void NAME(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,       \
                     const int64_t *coff, const DW_T *CNX_RESTRICT w, DW_T b,  \
                     DW_T *CNX_RESTRICT out, int64_t ldo, int64_t nrows,       \
                     int64_t n, int accumulate) {                              \
        int64_t r = 0, q, m, co[KW];                                       \
        int i, j;                                                              \
        DW_T wr[(KH) * (KW)];                                                  \
        for (i = 0; i < (KH) * (KW); i++) wr[i] = w[i];                        \
        for (j = 0; j < (KW); j++) co[j] = coff[j];                            \
        if (rs == ts)                                                          \
            for (; r + 1 < nrows; r += 2) {                                    \
                const DW_T *CNX_RESTRICT xr = x + r * rs;                      \
                DW_T *CNX_RESTRICT o0 = out + r * ldo;                         \
                DW_T *CNX_RESTRICT o1 = o0 + ldo;                              \
                for (q = 0; q < n; q += DW_L) {                                \
                    DW_V s0 = (DW_V){0} + b, s1 = s0;                          \
                    m = n - q < DW_L ? n - q : DW_L;                           \
                    if (accumulate) {                                          \
                        DW_GET(s0, o0 + q, m);                                 \
                        DW_GET(s1, o1 + q, m);                                 \
                    }                                                          \
                    for (i = 0; i <= (KH); i++)                                \
                        for (j = 0; j < (KW); j++) {                           \
                            DW_V v = DW_FN(dw_load)(xr + i * ts + co[j] + q);  \
                            if (i < (KH)) s0 += wr[i * (KW) + j] * v;          \
                            if (i > 0) s1 += wr[(i - 1) * (KW) + j] * v;       \
                        }                                                      \
                    DW_PUT(o0 + q, s0, m);                                     \
                    DW_PUT(o1 + q, s1, m);                                     \
                }                                                              \
            }                                                                  \
        for (; r < nrows; r++) {                                               \
            const DW_T *CNX_RESTRICT xr = x + r * rs;                          \
            DW_T *CNX_RESTRICT o = out + r * ldo;                              \
            for (q = 0; q < n; q += DW_L) {                                    \
                DW_V s = (DW_V){0} + b;                                        \
                m = n - q < DW_L ? n - q : DW_L;                               \
                if (accumulate) DW_GET(s, o + q, m);                           \
                for (i = 0; i < (KH); i++)                                     \
                    for (j = 0; j < (KW); j++)                                 \
                        s += wr[i * (KW) + j] * DW_FN(dw_load)(xr + i * ts + co[j] + q); \
                DW_PUT(o + q, s, m);                                           \
            }                                                                  \
        }                                                                      \
    }
/* Any kernel size, the same loops with run-time tap counts. */
static void DW_FN(dw_fwd_any)(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,
                              const int64_t *coff, const DW_T *CNX_RESTRICT w, DW_T b,
                              DW_T *CNX_RESTRICT out, int64_t ldo, int64_t nrows, int64_t n,
                              int kh, int kw, int accumulate) {
    int64_t r, q, m;
    int i, j;
    for (r = 0; r < nrows; r++) {
        const DW_T *CNX_RESTRICT xr = x + r * rs;
        DW_T *CNX_RESTRICT o = out + r * ldo;
        for (q = 0; q < n; q += DW_L) {
            DW_V s = (DW_V){0} + b;
            m = n - q < DW_L ? n - q : DW_L;
            if (accumulate) DW_GET(s, o + q, m);
            for (i = 0; i < kh; i++) {
                const DW_T *xi = xr + i * ts + q;
                const DW_T *wi = w + i * kw;
                for (j = 0; j < kw; j++) s += wi[j] * DW_FN(dw_load)(xi + coff[j]);
            }
            DW_PUT(o + q, s, m);
        }
    }
}
#else
/* out[r*ldo + q] = base + sum_{i,j} w[i*KW+j] * x[r*rs + i*ts + coff[j] + q],
 * base = out[...] (accumulate) or b; the taps are added in (i, j) order,
 * each output in a register. */
#define DW_FWD_FIXED(NAME, KH, KW)                                             \
    static void NAME(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,           \
                     const int64_t *coff, const DW_T *CNX_RESTRICT w, DW_T b,      \
                     DW_T *CNX_RESTRICT out, int64_t ldo, int64_t nrows, int64_t n, \
                     int accumulate) {                                         \
        int64_t r, q;                                                          \
        int i, j;                                                              \
        DW_T wr[(KH) * (KW)];                                                  \
        int64_t co[KW];                                                        \
        for (i = 0; i < (KH) * (KW); i++) wr[i] = w[i];                        \
        for (j = 0; j < (KW); j++) co[j] = coff[j];                            \
        for (r = 0; r < nrows; r++) {                                          \
            const DW_T *CNX_RESTRICT xr = x + r * rs;                              \
            DW_T *CNX_RESTRICT o = out + r * ldo;                                  \
            if (!accumulate)                                                   \
                for (q = 0; q < n; q++) o[q] = b;                              \
            for (q = 0; q < n; q++) {                                          \
                DW_T s = o[q];                                                 \
                for (i = 0; i < (KH); i++)                                     \
                    for (j = 0; j < (KW); j++)                                 \
                        s += wr[i * (KW) + j] * xr[i * ts + co[j] + q];        \
                o[q] = s;                                                      \
            }                                                                  \
        }                                                                      \
    }


#endif

DW_FWD_FIXED(DW_FN(dw_fwd33), 3, 3)
DW_FWD_FIXED(DW_FN(dw_fwd55), 5, 5)

#if !DW_VEXT
/* Any kernel size: tap by tap over the row (the same summation order). */
static void DW_FN(dw_fwd_any)(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,
                          const int64_t *coff, const DW_T *CNX_RESTRICT w, DW_T b,
                          DW_T *CNX_RESTRICT out, int64_t ldo, int64_t nrows, int64_t n,
                          int kh, int kw, int accumulate) {
    int64_t r, q;
    int i, j;
    for (r = 0; r < nrows; r++) {
        DW_T *CNX_RESTRICT o = out + r * ldo;
        if (!accumulate)
            for (q = 0; q < n; q++) o[q] = b;
        for (i = 0; i < kh; i++)
            for (j = 0; j < kw; j++) {
                const DW_T *CNX_RESTRICT xr = x + r * rs + i * ts + coff[j];
                DW_T wv = w[i * kw + j];
                for (q = 0; q < n; q++) o[q] += wv * xr[q];
            }
    }
}

#endif

static void DW_FN(dw_fwd)(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,
                          const int64_t *coff, const DW_T *CNX_RESTRICT w, DW_T b,
                          DW_T *CNX_RESTRICT out, int64_t ldo, int64_t nrows, int64_t n,
                          int kh, int kw, int accumulate) {
    if (kh == 3 && kw == 3)
        DW_FN(dw_fwd33)(x, rs, ts, coff, w, b, out, ldo, nrows, n, accumulate);
    else if (kh == 5 && kw == 5)
        DW_FN(dw_fwd55)(x, rs, ts, coff, w, b, out, ldo, nrows, n, accumulate);
    else
        DW_FN(dw_fwd_any)(x, rs, ts, coff, w, b, out, ldo, nrows, n, kh, kw, accumulate);
}

/* Strided input gradient, gathered: row R, phase b of the prepared-layout
 * gradient y is
 *     y[R*ldy + b*wq + v] = sum_{i, j} w[i*kw+j] * g[r*ldg + lp + v - (j*dw)/sw]
 * over the taps with R = r*sh + i*dh (0 <= r < nrows) and (j*dw) % sw == b,
 * in (i, j) order, added to y when accumulating.  g is zero-padded: lp
 * columns on the left, whole pairs of vectors on the right.  Rows no tap reaches
 * are zero.  jtab lists the taps of each phase: entries jtab[b] to
 * jtab[b+1] - 1 of the pairs at jtab + sw + 1 are (j, (j*dw)/sw); ir is
 * room for 2*kh integers (the kernel rows that reach row R). */
static void DW_FN(dw_gx_rows)(const DW_T *CNX_RESTRICT g, int64_t ldg, int64_t nrows,
                              const DW_T *CNX_RESTRICT w, int kh, int kw, int64_t sh,
                              int64_t dh, const int64_t *jtab, int64_t *ir, int64_t sw,
                              int64_t lp, int64_t wq, DW_T *CNX_RESTRICT y, int64_t ldy,
                              int64_t hy, int accumulate) {
    const int64_t *pairs = jtab + sw + 1;
    int64_t R, b, v, t, r, k, p, nir;
    int i;
    for (R = 0; R < hy; R++) {
        nir = 0;
        for (i = 0; i < kh && (t = R - i * dh) >= 0; i++) {
            r = t / sh;
            if (r * sh == t && r < nrows) {
                ir[2 * nir] = i;
                ir[2 * nir + 1] = r;
                nir++;
            }
        }
        for (b = 0; b < sw; b++) {
            DW_T *CNX_RESTRICT yr = y + R * ldy + b * wq;
#if DW_VEXT
            /* Two vectors per step (few taps per row: halve the loop
             * overhead); g has room for both. */
            int64_t m0, m1;
            for (v = 0; v < wq; v += 2 * DW_L) {
                DW_V s0 = (DW_V){0}, s1 = s0;
                m0 = wq - v < DW_L ? wq - v : DW_L;
                m1 = wq - v - DW_L < DW_L ? wq - v - DW_L : DW_L;
                if (accumulate) {
                    DW_GET(s0, yr + v, m0);
                    if (m1 > 0) DW_GET(s1, yr + v + DW_L, m1);
                }
                for (p = 0; p < nir; p++) {
                    const DW_T *gr = g + ir[2 * p + 1] * ldg + lp + v;
                    const DW_T *wi = w + ir[2 * p] * kw;
                    for (k = jtab[b]; k < jtab[b + 1]; k++) {
                        DW_T wv = wi[pairs[2 * k]];
                        s0 += wv * DW_FN(dw_load)(gr - pairs[2 * k + 1]);
                        s1 += wv * DW_FN(dw_load)(gr - pairs[2 * k + 1] + DW_L);
                    }
                }
                DW_PUT(yr + v, s0, m0);
                if (m1 > 0) DW_PUT(yr + v + DW_L, s1, m1);
            }
#else
            if (!accumulate)
                for (v = 0; v < wq; v++) yr[v] = 0;
            for (p = 0; p < nir; p++) {
                const DW_T *wi = w + ir[2 * p] * kw;
                for (k = jtab[b]; k < jtab[b + 1]; k++) {
                    const DW_T *CNX_RESTRICT gr = g + ir[2 * p + 1] * ldg + lp - pairs[2 * k + 1];
                    DW_T wv = wi[pairs[2 * k]];
                    for (v = 0; v < wq; v++) yr[v] += wv * gr[v];
                }
            }
#endif
        }
    }
}

/* Transposed (scatter) form for the strided input gradient:
 * y[r*rs + i*ts + coff[j] + q] += w[i*kw+j] * g[r*ldg + q]. */
static void DW_FN(dw_scatter)(const DW_T *CNX_RESTRICT g, int64_t ldg, int64_t nrows, int64_t n,
                              const DW_T *CNX_RESTRICT w, int kh, int kw,
                              DW_T *CNX_RESTRICT y, int64_t rs, int64_t ts,
                              const int64_t *coff) {
    int64_t r, q;
    int i, j;
    for (r = 0; r < nrows; r++) {
        const DW_T *CNX_RESTRICT gr = g + r * ldg;
        for (i = 0; i < kh; i++)
            for (j = 0; j < kw; j++) {
                DW_T *CNX_RESTRICT yr = y + r * rs + i * ts + coff[j];
                DW_T wv = w[i * kw + j];
                for (q = 0; q < n; q++) yr[q] += wv * gr[q];
            }
    }
}

#if !DW_VEXT
/* Weight gradient of one plane, any kernel size:
 * acc[i*kw+j] += sum_{r<nrows, q<n} g[r*ldg + q] * x[r*rs + i*ts + coff[j] + q],
 * eight partial sums per tap, added in a fixed order. */
static void DW_FN(dw_gw_any)(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,
                             const int64_t *coff, const DW_T *CNX_RESTRICT g, int64_t ldg,
                             int64_t nrows, int64_t n, int kh, int kw, DW_T *acc) {
    int64_t r, q;
    int i, j, l;
    for (i = 0; i < kh; i++)
        for (j = 0; j < kw; j++) {
            DW_T part[8] = {0, 0, 0, 0, 0, 0, 0, 0}, s = 0;
            for (r = 0; r < nrows; r++) {
                const DW_T *CNX_RESTRICT gr = g + r * ldg;
                const DW_T *CNX_RESTRICT xr = x + r * rs + i * ts + coff[j];
                for (q = 0; q + 8 <= n; q += 8)
                    for (l = 0; l < 8; l++) part[l] += gr[q + l] * xr[q + l];
                for (; q < n; q++) part[0] += gr[q] * xr[q];
            }
            for (l = 0; l < 8; l++) s += part[l];
            acc[i * kw + j] += s;
        }
}

#endif

#if DW_VEXT
/* Weight gradient for KW consecutive taps of every kernel row, acc row
 * stride lda, with KW vector accumulators along the row.  The last vector
 * of a row is partial: g is read lane by lane (zero beyond n), x whole (the
 * prepared row has room) with its lanes beyond n masked to zero, since they
 * may hold real data, possibly NaN, that belongs to no product. */
#define DW_GW_FIXED(NAME, KW)                                                  \
    static void NAME(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,           \
                     const int64_t *coff, const DW_T *CNX_RESTRICT g, int64_t ldg, \
                     int64_t nrows, int64_t n, int kh, DW_T *acc, int lda) {   \
        int64_t r, q, nfull = n / DW_L * DW_L, co[KW];                     \
        int i, j, l;                                                           \
        DW_IV mask;                                                            \
        for (l = 0; l < DW_L; l++) mask[l] = l < n - nfull ? (DW_I)-1 : 0;     \
        for (j = 0; j < (KW); j++) co[j] = coff[j];                            \
        for (i = 0; i < kh; i++) {                                             \
            DW_V a[KW];                                                        \
            for (j = 0; j < (KW); j++) a[j] = (DW_V){0};                       \
            for (r = 0; r < nrows; r++) {                                      \
                const DW_T *CNX_RESTRICT gr = g + r * ldg;                         \
                const DW_T *CNX_RESTRICT xr = x + r * rs + i * ts;                 \
                for (q = 0; q < nfull; q += DW_L) {                            \
                    DW_V gv = DW_FN(dw_load)(gr + q);                          \
                    for (j = 0; j < (KW); j++)                                 \
                        a[j] += gv * DW_FN(dw_load)(xr + co[j] + q);           \
                }                                                              \
                if (nfull < n) {                                               \
                    DW_V gv = (DW_V){0};                                       \
                    DW_GET(gv, gr + q, n - nfull);                             \
                    for (j = 0; j < (KW); j++)                                 \
                        a[j] += gv * (DW_V)((DW_IV)DW_FN(dw_load)(xr + co[j] + q) & mask); \
                }                                                              \
            }                                                                  \
            for (j = 0; j < (KW); j++) {                                       \
                DW_T s = 0;                                                    \
                for (l = 0; l < DW_L; l++) s += a[j][l];                       \
                acc[i * lda + j] += s;                                         \
            }                                                                  \
        }                                                                      \
    }

DW_GW_FIXED(DW_FN(dw_gw1), 1)
DW_GW_FIXED(DW_FN(dw_gw2), 2)
DW_GW_FIXED(DW_FN(dw_gw3), 3)
DW_GW_FIXED(DW_FN(dw_gw4), 4)
DW_GW_FIXED(DW_FN(dw_gw5), 5)
#undef DW_V
#undef DW_IV
#undef DW_L
#endif

static void DW_FN(dw_gw)(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,
                         const int64_t *coff, const DW_T *CNX_RESTRICT g, int64_t ldg,
                         int64_t nrows, int64_t n, int kh, int kw, DW_T *acc) {
#if DW_VEXT
    /* Up to five taps of a kernel row at a time. */
    int j0 = 0;
    for (; kw - j0 > 5; j0 += 4)
        DW_FN(dw_gw4)(x, rs, ts, coff + j0, g, ldg, nrows, n, kh, acc + j0, kw);
    switch (kw - j0) {
    case 1: DW_FN(dw_gw1)(x, rs, ts, coff + j0, g, ldg, nrows, n, kh, acc + j0, kw); break;
    case 2: DW_FN(dw_gw2)(x, rs, ts, coff + j0, g, ldg, nrows, n, kh, acc + j0, kw); break;
    case 3: DW_FN(dw_gw3)(x, rs, ts, coff + j0, g, ldg, nrows, n, kh, acc + j0, kw); break;
    case 4: DW_FN(dw_gw4)(x, rs, ts, coff + j0, g, ldg, nrows, n, kh, acc + j0, kw); break;
    default: DW_FN(dw_gw5)(x, rs, ts, coff + j0, g, ldg, nrows, n, kh, acc + j0, kw); break;
    }
#else
    DW_FN(dw_gw_any)(x, rs, ts, coff, g, ldg, nrows, n, kh, kw, acc);
#endif
}

/* Strided copies between a row and its column phases (the prepared
 * layout): gather d[v] = s[v*sw], spread d[v*sw] = s[v], v < n.  Stride 2
 * has its own loop, which the compiler vectorises with permutes. */
static void DW_FN(dw_gather)(const DW_T *CNX_RESTRICT s, int64_t sw, DW_T *CNX_RESTRICT d,
                             int64_t n) {
    int64_t v;
    if (sw == 2)
        for (v = 0; v < n; v++) d[v] = s[2 * v];
    else
        for (v = 0; v < n; v++) d[v] = s[v * sw];
}

static void DW_FN(dw_spread)(const DW_T *CNX_RESTRICT s, DW_T *CNX_RESTRICT d, int64_t sw,
                             int64_t n) {
    int64_t v;
    if (sw == 2)
        for (v = 0; v < n; v++) d[2 * v] = s[v];
    else
        for (v = 0; v < n; v++) d[v * sw] = s[v];
}

#undef DW_FWD_FIXED
#undef DW_GET
#undef DW_PUT
#undef DW_GW_FIXED
#undef DW_FN
#undef DW_CAT
#undef DW_CAT_
