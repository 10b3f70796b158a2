/*
 * cnnext: row copies around the direct kernels (src/_conv.pyx).
 *
 * cnx_pad_row_s (prep_sample): the direct kernels read a zero-padded copy
 * of each sample.  On small maps the general padding costs a library call
 * per 14-value row plus separate zeroing; this writes one destination row,
 * padding included, with masked vector loads (the lanes outside the input
 * row are masked off: never read, zero) and one store per 16 values:
 *     d[v] = src[v - pw] for 0 <= v - pw < W, else 0 (v < Wq).
 *
 * cnx_merge2x_s (the strided input gradient): the two column phases of a
 * stride-2 input gradient, computed as two tiles of the same positions,
 * stored interleaved into contiguous result rows (one pass over each row,
 * whole vectors) instead of one strided pass per phase:
 *     dst[r*ldd + 2k] = s0[r*lds + k], dst[r*ldd + 2k + 1] = s1[r*lds + k]
 * for r < rows, k < cols.
 *
 * The *_select() functions return them, or NULL where AVX-512F (for
 * cnx_merge2x_s, AVX2) is not available (or CNNEXT_ISA asks for less): the
 * callers then keep the general code.  Only values move: the results are
 * the same either way.
 *
 * cnx_pack_runs, cnx_prefetch_runs (fwd_chunk_task, every ISA): a 1x1
 * layer's input runs, whole planes apart, copied a block of positions at a
 * time into the micro-kernel's B layout, the next block prefetched
 * meanwhile.  cnx_prefetch_lines (fwd_task): the next sample's input,
 * prefetched while the current one is multiplied.
 */
#ifndef CNNEXT_PREP_H
#define CNNEXT_PREP_H

#include "cnnext_ukernel.h"

typedef void (*cnx_pad_row_s)(const float *src, int64_t W, int64_t pw, float *d, int64_t Wq);
typedef void (*cnx_merge2x_s)(const float *s0, const float *s1, int64_t lds, float *dst,
                              int64_t ldd, int64_t rows, int64_t cols);

#ifdef CNX_X86

/* Lanes i of a 16-value load from src + s0 with 0 <= s0 + i < W. */
CNX_TARGET_AVX512 static inline __mmask16 cnx_prep_mask(int64_t s0, int64_t W) {
    int64_t lo = s0 < 0 ? -s0 : 0, hi = W - s0;
    if (hi > 16) hi = 16;
    if (hi <= lo) return 0;
    return (__mmask16)((((uint32_t)1 << hi) - 1u) & ~(((uint32_t)1 << lo) - 1u));
}

/* The lanes of a 16-value store at column v0 of a Wq-wide row. */
CNX_TARGET_AVX512 static inline __mmask16 cnx_prep_smask(int64_t v0, int64_t Wq) {
    int64_t n = Wq - v0;
    return (__mmask16)(n >= 16 ? 0xFFFFu : ((uint32_t)1 << n) - 1u);
}

CNX_TARGET_AVX512
static void cnx_pad_row_s_avx512(const float *src, int64_t W, int64_t pw, float *d,
                                 int64_t Wq) {
    int64_t v0;
    for (v0 = 0; v0 < Wq; v0 += 16) {
        int64_t s0 = v0 - pw;
        __mmask16 m = cnx_prep_mask(s0, W);
        /* masked-off lanes are not read: src + s0 may lie before the row */
        __m512 v = m ? _mm512_maskz_loadu_ps(m, src + s0) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(d + v0, cnx_prep_smask(v0, Wq), v);
    }
}

CNX_TARGET_AVX512
static void cnx_merge2x_s_avx512(const float *s0, const float *s1, int64_t lds, float *dst,
                                 int64_t ldd, int64_t rows, int64_t cols) {
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19,
                                         4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27,
                                         12, 28, 13, 29, 14, 30, 15, 31);
    int64_t r, k;
    for (r = 0; r < rows; r++) {
        const float *a_ = s0 + r * lds, *b_ = s1 + r * lds;
        float *d_ = dst + r * ldd;
        for (k = 0; k < cols; k += 16) {
            int64_t m = cols - k < 16 ? cols - k : 16;
            __mmask16 mk = (__mmask16)(((uint32_t)1 << m) - 1u);
            __m512 a = _mm512_maskz_loadu_ps(mk, a_ + k), b = _mm512_maskz_loadu_ps(mk, b_ + k);
            _mm512_mask_storeu_ps(d_ + 2 * k, cnx_prep_smask(0, 2 * m),
                                  _mm512_permutex2var_ps(a, lo, b));
            if (m > 8)
                _mm512_mask_storeu_ps(d_ + 2 * k + 16, cnx_prep_smask(0, 2 * (m - 8)),
                                      _mm512_permutex2var_ps(a, hi, b));
        }
    }
}

/* AVX2: 8 values of each phase make two vectors of 16 interleaved ones. */
CNX_TARGET_AVX2
static void cnx_merge2x_s_avx2(const float *s0, const float *s1, int64_t lds, float *dst,
                               int64_t ldd, int64_t rows, int64_t cols) {
    int64_t r, k;
    for (r = 0; r < rows; r++) {
        const float *a_ = s0 + r * lds, *b_ = s1 + r * lds;
        float *d_ = dst + r * ldd;
        for (k = 0; k < cols; k += 8) {
            int64_t m = cols - k < 8 ? cols - k : 8;
            __m256 a, b, lo, hi;
            if (m == 8) {
                a = _mm256_loadu_ps(a_ + k);
                b = _mm256_loadu_ps(b_ + k);
            } else {
                a = _mm256_maskload_ps(a_ + k, cnx_lanes_avx2(0, m));
                b = _mm256_maskload_ps(b_ + k, cnx_lanes_avx2(0, m));
            }
            lo = _mm256_unpacklo_ps(a, b); /* a0 b0 a1 b1 | a4 b4 a5 b5 */
            hi = _mm256_unpackhi_ps(a, b); /* a2 b2 a3 b3 | a6 b6 a7 b7 */
            CNX_Y_STORE_N(ps, d_ + 2 * k, _mm256_permute2f128_ps(lo, hi, 0x20), 2 * m, 8);
            if (m > 4)
                CNX_Y_STORE_N(ps, d_ + 2 * k + 8, _mm256_permute2f128_ps(lo, hi, 0x31),
                              2 * m - 8, 8);
        }
    }
}

static cnx_merge2x_s cnx_merge2x_s_select(void) {
    int isa = cnx_isa_from_env(cnx_detect_isa());
    return isa == 2 ? cnx_merge2x_s_avx512 : isa == 1 ? cnx_merge2x_s_avx2 : NULL;
}

static cnx_pad_row_s cnx_pad_row_s_select(void) {
    return cnx_isa_from_env(cnx_detect_isa()) == 2 ? cnx_pad_row_s_avx512 : NULL;
}

#else

static cnx_pad_row_s cnx_pad_row_s_select(void) { return NULL; }
static cnx_merge2x_s cnx_merge2x_s_select(void) { return NULL; }

#endif /* CNX_X86 */

/* cnx_pack_runs (fwd_chunk_task): a chunk's B runs packed tile by tile,
 * each tile's kc rows of `run` bytes back to back (one stream for the
 * micro-kernel, instead of rows a chunk's width apart):
 *     dst[i*tstride + k*run ...] = src[(boff[k] + tile0[i])*esz ...]
 * for k < kc, i < nt, read tap by tap (each tap's runs are contiguous
 * across the chunk's tiles).  The common run sizes copy as constants. */
#define CNX_PACK_RUNS(RUN)                                                     \
    for (k = 0; k < kc; k++) {                                                 \
        const char *s_ = src + boff[k] * esz;                                  \
        for (i = 0; i < nt; i++)                                               \
            memcpy(dst + i * tstride + k * (RUN), s_ + tile0[i] * esz, (RUN)); \
    }
static inline void cnx_pack_runs(const char *src, const int64_t *boff, const int64_t *tile0,
                                 int64_t esz, int64_t kc, int64_t nt, int64_t run,
                                 char *dst, int64_t tstride) {
    int64_t k, i;
    if (run == 64) {
        CNX_PACK_RUNS(64)
    } else if (run == 128) {
        CNX_PACK_RUNS(128)
    } else {
        CNX_PACK_RUNS(run)
    }
}
#undef CNX_PACK_RUNS

/* Prefetch (into L2) cache lines l0..l1-1 from p. */
static inline void cnx_prefetch_lines(const char *p, int64_t l0, int64_t l1) {
    int64_t l;
    for (l = l0; l < l1; l++)
        __builtin_prefetch(p + 64 * l, 0, 2);
}

/* Prefetch (into L2) the runs cnx_pack_runs will read for taps k0..k1-1 of
 * a chunk whose tiles start at element `start`, `bytes` long each. */
static inline void cnx_prefetch_runs(const char *src, const int64_t *boff, int64_t esz,
                                     int64_t k0, int64_t k1, int64_t start, int64_t bytes) {
    int64_t k, b;
    for (k = k0; k < k1; k++) {
        const char *s_ = src + (boff[k] + start) * esz;
        for (b = 0; b < bytes; b += 64)
            __builtin_prefetch(s_ + b, 0, 2);
    }
}

#endif /* CNNEXT_PREP_H */
