/*
 * Depthwise-convolution row kernels, one copy per (instruction set, dtype).
 *
 * Included by src/cnnext_depthwise.h with DW_T (float or double), DW_I (the
 * integer type of DW_T's width), DW_VB (vector bytes) and DW_SUF (the name
 * suffix) defined, inside a region compiled for one instruction set.  The
 * loops are plain C (the compiler vectorises them along the output row) and,
 * on GCC/Clang, vector-extension code for the weight gradient's reductions.
 *
 * Every kernel reads a "prepared" plane: zero-padded and split by column
 * phase (see _depthwise.pyx), so that tap (i, j) of output column q sits at
 *     x[r*rs + i*ts + coff[j] + q]          (r = output row)
 * for every stride and dilation: contiguous in q, no bounds checks.
 */
#define DW_CAT_(a, b) a##_##b
#define DW_CAT(a, b) DW_CAT_(a, b)
#define DW_FN(name) DW_CAT(name, DW_SUF)

#if defined(__GNUC__)
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

/* out[r*ldo + q] = base + sum_{i,j} w[i*KW+j] * x[r*rs + i*ts + coff[j] + q],
 * base = out[...] (accumulate) or b; the taps are added in (i, j) order,
 * each output in a vector register.  Whole vectors throughout: the last one
 * reads past n (inside the prepared row) and stores only its first lanes. */
#define DW_FWD_FIXED(NAME, KH, KW)                                             \
    static void NAME(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,       \
                     const int64_t *coff, const DW_T *CNX_RESTRICT w, DW_T b,  \
                     DW_T *CNX_RESTRICT out, int64_t ldo, int64_t nrows,       \
                     int64_t n, int accumulate) {                              \
        int64_t r, q, co[KW];                                                  \
        int i, j;                                                              \
        DW_T wr[(KH) * (KW)];                                                  \
        for (i = 0; i < (KH) * (KW); i++) wr[i] = w[i];                        \
        for (j = 0; j < (KW); j++) co[j] = coff[j];                            \
        for (r = 0; r < nrows; r++) {                                          \
            const DW_T *CNX_RESTRICT xr = x + r * rs;                          \
            DW_T *CNX_RESTRICT o = out + r * ldo;                              \
            for (q = 0; q < n; q += DW_L) {                                    \
                int64_t m = n - q < DW_L ? n - q : DW_L;                       \
                DW_V s = (DW_V){0} + b;                                        \
                if (accumulate) memcpy(&s, o + q, m * sizeof(DW_T));           \
                for (i = 0; i < (KH); i++)                                     \
                    for (j = 0; j < (KW); j++)                                 \
                        s += wr[i * (KW) + j] * DW_FN(dw_load)(xr + i * ts + co[j] + q); \
                memcpy(o + q, &s, m * sizeof(DW_T));                           \
            }                                                                  \
        }                                                                      \
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

/* Any kernel size: tap by tap over the row (the same summation order). */
static void DW_FN(dw_fwd)(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,
                          const int64_t *coff, const DW_T *CNX_RESTRICT w, DW_T b,
                          DW_T *CNX_RESTRICT out, int64_t ldo, int64_t nrows, int64_t n,
                          int kh, int kw, int accumulate) {
    int64_t r, q;
    int i, j;
    if (kh == 3 && kw == 3) {
        DW_FN(dw_fwd33)(x, rs, ts, coff, w, b, out, ldo, nrows, n, accumulate);
        return;
    }
    if (kh == 5 && kw == 5) {
        DW_FN(dw_fwd55)(x, rs, ts, coff, w, b, out, ldo, nrows, n, accumulate);
        return;
    }
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

#if defined(__GNUC__)
/* Weight gradient with KW vector accumulators along the row.  g rows are
 * zero-padded to a multiple of DW_L (ldg), and x has room for the last
 * vector: the tail lanes of x are masked to zero (they may hold real data,
 * possibly NaN, that belongs to no product). */
#define DW_GW_FIXED(NAME, KW)                                                  \
    static void NAME(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,           \
                     const int64_t *coff, const DW_T *CNX_RESTRICT g, int64_t ldg, \
                     int64_t nrows, int64_t n, int kh, DW_T *acc) {            \
        int64_t r, q, nfull = n / DW_L * DW_L, co[KW];                         \
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
                    DW_V gv = DW_FN(dw_load)(gr + q);                          \
                    for (j = 0; j < (KW); j++)                                 \
                        a[j] += gv * (DW_V)((DW_IV)DW_FN(dw_load)(xr + co[j] + q) & mask); \
                }                                                              \
            }                                                                  \
            for (j = 0; j < (KW); j++) {                                       \
                DW_T s = 0;                                                    \
                for (l = 0; l < DW_L; l++) s += a[j][l];                       \
                acc[i * (KW) + j] += s;                                        \
            }                                                                  \
        }                                                                      \
    }

DW_GW_FIXED(DW_FN(dw_gw3), 3)
DW_GW_FIXED(DW_FN(dw_gw5), 5)
#undef DW_V
#undef DW_IV
#undef DW_L
#endif

static void DW_FN(dw_gw)(const DW_T *CNX_RESTRICT x, int64_t rs, int64_t ts,
                         const int64_t *coff, const DW_T *CNX_RESTRICT g, int64_t ldg,
                         int64_t nrows, int64_t n, int kh, int kw, DW_T *acc) {
#if defined(__GNUC__)
    if (kw == 3) {
        DW_FN(dw_gw3)(x, rs, ts, coff, g, ldg, nrows, n, kh, acc);
        return;
    }
    if (kw == 5) {
        DW_FN(dw_gw5)(x, rs, ts, coff, g, ldg, nrows, n, kh, acc);
        return;
    }
#endif
    DW_FN(dw_gw_any)(x, rs, ts, coff, g, ldg, nrows, n, kh, kw, acc);
}

#undef DW_FWD_FIXED
#undef DW_GW_FIXED
#undef DW_FN
#undef DW_CAT
#undef DW_CAT_
