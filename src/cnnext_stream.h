/*
 * cnnext: storing a convolution's result rows (float64 and float32) with
 * non-temporal stores.
 *
 * A store to a line that is not in the cache first reads the line from
 * memory (read for ownership) and holds a fill buffer while it waits: a
 * 1x1 input gradient whose result is 4x its input (256 <- 64 channels)
 * spent more time on those reads than on its FMAs.  Streaming stores write
 * whole lines without reading them.  The forward's chunk of tiles
 * (src/_conv.pyx, fwd_chunk_task) computes its results in scratch, tile t's
 * row r at src + t*lds + r*16, then cnx_stream_rows_d writes row r's npos
 * values to dst + r*ldd: the lines wholly inside the run with streaming
 * stores, the partial lines at its ends with plain ones (a neighbouring
 * chunk writes the rest of them).  The values are copied, not computed:
 * the same bits as stores in place.
 *
 * cnx_stream_rows_s does the same for float32's 32-column tiles.
 *
 * cnx_stream_rows_d_select() and cnx_stream_rows_s_select() return them,
 * or NULL where AVX-512F is not available (or CNNEXT_ISA asks for less).
 */
#ifndef CNNEXT_STREAM_H
#define CNNEXT_STREAM_H

#include "cnnext_ukernel.h"

typedef void (*cnx_stream_rows_d)(const double *src, int64_t lds, int64_t rows,
                                  int64_t npos, double *dst, int64_t ldd);
typedef void (*cnx_stream_rows_s)(const float *src, int64_t lds, int64_t rows,
                                  int64_t npos, float *dst, int64_t ldd);

#ifdef CNX_X86

/* One function per type: tiles of TW values (T, vectors VT of W lanes,
 * intrinsics suffix SUF, masks MT); row r of tile t at src + t*lds + r*TW. */
#define CNX_DEF_STREAM_ROWS(NAME, T, VT, SUF, MT, W, TW)                        \
    CNX_TARGET_AVX512                                                          \
    static void NAME(const T *src, int64_t lds, int64_t rows, int64_t npos,   \
                     T *dst, int64_t ldd) {                                    \
        int64_t r, q;                                                          \
        for (r = 0; r < rows; r++) {                                           \
            const T *s = src + r * (TW);                                       \
            T *d = dst + r * ldd;                                              \
            int64_t head = (int64_t)(((64 - ((uintptr_t)d & 63)) & 63) / sizeof(T)); \
            if (head > npos) head = npos;                                      \
            for (q = 0; q < head; q++) d[q] = s[(q / (TW)) * lds + q % (TW)];  \
            for (; q + (W) <= npos; q += (W)) {                                \
                const T *p = s + (q / (TW)) * lds + q % (TW);                  \
                int64_t c1 = (TW) - q % (TW); /* values left in this tile */   \
                VT v;                                                          \
                if (c1 >= (W)) {                                               \
                    v = _mm512_loadu_##SUF(p);                                 \
                } else {                                                       \
                    MT m = (MT)((1u << c1) - 1u);                              \
                    v = _mm512_maskz_loadu_##SUF(m, p);                        \
                    /* lane l >= c1: the next tile's value l - c1 */           \
                    v = _mm512_mask_loadu_##SUF(v, (MT)~m, p + lds - (TW));    \
                }                                                              \
                _mm512_stream_##SUF(d + q, v);                                 \
            }                                                                  \
            for (; q < npos; q++) d[q] = s[(q / (TW)) * lds + q % (TW)];       \
        }                                                                      \
        _mm_sfence();                                                          \
    }

CNX_DEF_STREAM_ROWS(cnx_stream_rows_d_avx512, double, __m512d, pd, __mmask8, 8, 16)
CNX_DEF_STREAM_ROWS(cnx_stream_rows_s_avx512, float, __m512, ps, __mmask16, 16, 32)
#undef CNX_DEF_STREAM_ROWS

static cnx_stream_rows_d cnx_stream_rows_d_select(void) {
    return cnx_isa_from_env(cnx_detect_isa()) == 2 ? cnx_stream_rows_d_avx512 : NULL;
}

static cnx_stream_rows_s cnx_stream_rows_s_select(void) {
    return cnx_isa_from_env(cnx_detect_isa()) == 2 ? cnx_stream_rows_s_avx512 : NULL;
}

#else

static cnx_stream_rows_d cnx_stream_rows_d_select(void) { return NULL; }
static cnx_stream_rows_s cnx_stream_rows_s_select(void) { return NULL; }

#endif /* CNX_X86 */

#endif /* CNNEXT_STREAM_H */
