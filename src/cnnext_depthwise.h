/*
 * Depthwise-convolution kernels with runtime CPU dispatch (the same
 * instruction-set choice as the GEMM micro-kernels, CNNEXT_ISA included).
 *
 * The loops live in cnnext_depthwise_body.h, compiled here once per
 * instruction set (AVX-512, AVX2+FMA, baseline) and dtype: wheels cannot be
 * built with -march=native, so the vector variants get a target region
 * (GCC/Clang) and are chosen at run time from CPUID.  MSVC builds only the
 * baseline copy.
 */
#ifndef CNNEXT_DEPTHWISE_H
#define CNNEXT_DEPTHWISE_H

#include <stdint.h>
#include <string.h>
#include "cnnext_ukernel.h"

#if defined(_MSC_VER) && !defined(__clang__)
#define CNX_RESTRICT __restrict
#else
#define CNX_RESTRICT restrict
#endif

typedef void (*cnx_dw_fwd_s)(const float *x, int64_t rs, int64_t ts, const int64_t *coff,
                             const float *w, float b, float *out, int64_t ldo,
                             int64_t nrows, int64_t n, int kh, int kw, int accumulate);
typedef void (*cnx_dw_fwd_d)(const double *x, int64_t rs, int64_t ts, const int64_t *coff,
                             const double *w, double b, double *out, int64_t ldo,
                             int64_t nrows, int64_t n, int kh, int kw, int accumulate);
typedef void (*cnx_dw_scatter_s)(const float *g, int64_t ldg, int64_t nrows, int64_t n,
                                 const float *w, int kh, int kw, float *y, int64_t rs,
                                 int64_t ts, const int64_t *coff);
typedef void (*cnx_dw_scatter_d)(const double *g, int64_t ldg, int64_t nrows, int64_t n,
                                 const double *w, int kh, int kw, double *y, int64_t rs,
                                 int64_t ts, const int64_t *coff);
typedef void (*cnx_dw_gw_s)(const float *x, int64_t rs, int64_t ts, const int64_t *coff,
                            const float *g, int64_t ldg, int64_t nrows, int64_t n,
                            int kh, int kw, float *acc);
typedef void (*cnx_dw_gw_d)(const double *x, int64_t rs, int64_t ts, const int64_t *coff,
                            const double *g, int64_t ldg, int64_t nrows, int64_t n,
                            int kh, int kw, double *acc);

typedef void (*cnx_dw_copy_s)(const float *s, int64_t sw, float *d, int64_t n);
typedef void (*cnx_dw_copy_d)(const double *s, int64_t sw, double *d, int64_t n);
typedef void (*cnx_dw_spread_s)(const float *s, float *d, int64_t sw, int64_t n);
typedef void (*cnx_dw_spread_d)(const double *s, double *d, int64_t sw, int64_t n);

typedef void (*cnx_dw_gx_s)(const float *g, int64_t ldg, int64_t nrows, const float *w,
                            int kh, int kw, int64_t sh, int64_t dh, const int64_t *jtab,
                            int64_t *ir, int64_t sw, int64_t lp, int64_t wq, float *y,
                            int64_t ldy, int64_t hy, int accumulate);
typedef void (*cnx_dw_gx_d)(const double *g, int64_t ldg, int64_t nrows, const double *w,
                            int kh, int kw, int64_t sh, int64_t dh, const int64_t *jtab,
                            int64_t *ir, int64_t sw, int64_t lp, int64_t wq, double *y,
                            int64_t ldy, int64_t hy, int accumulate);

typedef struct {
    cnx_dw_gx_s gx_rows_s;
    cnx_dw_gx_d gx_rows_d;
    cnx_dw_copy_s gather_s;
    cnx_dw_copy_d gather_d;
    cnx_dw_spread_s spread_s;
    cnx_dw_spread_d spread_d;
    cnx_dw_fwd_s fwd_s;
    cnx_dw_fwd_d fwd_d;
    cnx_dw_scatter_s scatter_s;
    cnx_dw_scatter_d scatter_d;
    cnx_dw_gw_s gw_s;
    cnx_dw_gw_d gw_d;
    int vec_bytes; /* the weight gradient's vector width: rows are padded to it */
    const char *name;
} cnx_dw_kernels;


/* Baseline (SSE2 on x86-64): plain loops, as MSVC builds every variant. */
#define DW_VEXT 0
#define DW_VB 16
#define DW_T float
#define DW_I int32_t
#define DW_SUF s_generic
#include "cnnext_depthwise_body.h"
#undef DW_T
#undef DW_I
#undef DW_SUF
#define DW_T double
#define DW_I int64_t
#define DW_SUF d_generic
#include "cnnext_depthwise_body.h"
#undef DW_T
#undef DW_I
#undef DW_SUF
#undef DW_VB
#undef DW_VEXT

#if defined(CNX_X86) && defined(__GNUC__)
#if defined(__clang__)
#define DW_PUSH_AVX2 _Pragma("clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)")
#define DW_PUSH_AVX512 _Pragma("clang attribute push(__attribute__((target(\"avx512f,avx512dq,avx512vl,avx2,fma\"))), apply_to = function)")
#define DW_POP _Pragma("clang attribute pop")
#else
#define DW_PUSH_AVX2 _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma\")")
#define DW_PUSH_AVX512 _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,avx512dq,avx512vl,avx2,fma\")") _Pragma("GCC target(\"prefer-vector-width=512\")")
#define DW_POP _Pragma("GCC pop_options")
#endif
#define CNX_DW_X86 1
#define DW_VEXT 1

/* The first m lanes of a vector at p (the rest zero / untouched), m < lanes. */
DW_PUSH_AVX2
#define DW_VB 32
#define DW_T float
#define DW_I int32_t
#define DW_SUF s_avx2
#define DW_MASK(m) _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(m)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#define DW_MLOAD(p, m) _mm256_maskload_ps((p), DW_MASK(m))
#define DW_MSTORE(p, v, m) _mm256_maskstore_ps((p), DW_MASK(m), (__m256)(v))
#include "cnnext_depthwise_body.h"
#undef DW_MASK
#undef DW_MLOAD
#undef DW_MSTORE
#undef DW_T
#undef DW_I
#undef DW_SUF
#define DW_T double
#define DW_I int64_t
#define DW_SUF d_avx2
#define DW_MASK(m) _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(m)), _mm256_setr_epi64x(0, 1, 2, 3))
#define DW_MLOAD(p, m) _mm256_maskload_pd((p), DW_MASK(m))
#define DW_MSTORE(p, v, m) _mm256_maskstore_pd((p), DW_MASK(m), (__m256d)(v))
#include "cnnext_depthwise_body.h"
#undef DW_MASK
#undef DW_MLOAD
#undef DW_MSTORE
#undef DW_T
#undef DW_I
#undef DW_SUF
#undef DW_VB
DW_POP

DW_PUSH_AVX512
#define DW_VB 64
#define DW_T float
#define DW_I int32_t
#define DW_SUF s_avx512
#define DW_MLOAD(p, m) _mm512_maskz_loadu_ps((__mmask16)((1u << (m)) - 1), (p))
#define DW_MSTORE(p, v, m) _mm512_mask_storeu_ps((p), (__mmask16)((1u << (m)) - 1), (__m512)(v))
#include "cnnext_depthwise_body.h"
#undef DW_MLOAD
#undef DW_MSTORE
#undef DW_T
#undef DW_I
#undef DW_SUF
#define DW_T double
#define DW_I int64_t
#define DW_SUF d_avx512
#define DW_MLOAD(p, m) _mm512_maskz_loadu_pd((__mmask8)((1u << (m)) - 1), (p))
#define DW_MSTORE(p, v, m) _mm512_mask_storeu_pd((p), (__mmask8)((1u << (m)) - 1), (__m512d)(v))
#include "cnnext_depthwise_body.h"
#undef DW_MLOAD
#undef DW_MSTORE
#undef DW_T
#undef DW_I
#undef DW_SUF
#undef DW_VB
DW_POP
#undef DW_VEXT
#endif

#define DW_SET(k, SUFS, SUFD, VB, NAME)                                        \
    k.gx_rows_s = dw_gx_rows_##SUFS; k.gx_rows_d = dw_gx_rows_##SUFD;          \
    k.gather_s = dw_gather_##SUFS; k.gather_d = dw_gather_##SUFD;              \
    k.spread_s = dw_spread_##SUFS; k.spread_d = dw_spread_##SUFD;              \
    k.fwd_s = dw_fwd_##SUFS; k.fwd_d = dw_fwd_##SUFD;                          \
    k.scatter_s = dw_scatter_##SUFS; k.scatter_d = dw_scatter_##SUFD;          \
    k.gw_s = dw_gw_##SUFS; k.gw_d = dw_gw_##SUFD;                              \
    k.vec_bytes = VB; k.name = NAME;

static cnx_dw_kernels cnx_dw_select(void) {
    cnx_dw_kernels k;
    int isa = cnx_isa_from_env(cnx_detect_isa());
    DW_SET(k, s_generic, d_generic, 16, "generic")
#ifdef CNX_DW_X86
    if (isa == 2) {
        DW_SET(k, s_avx512, d_avx512, 64, "avx512")
    } else if (isa == 1) {
        DW_SET(k, s_avx2, d_avx2, 32, "avx2")
    }
#else
    (void)isa;
#endif
    return k;
}

#endif /* CNNEXT_DEPTHWISE_H */
