/*
 * cnnext GEMM micro-kernels with runtime CPU dispatch.
 *
 * A micro-kernel computes one MR x NR block of C from packed panels:
 *
 *     acc[i][j] = sum_k a[k*MR + i] * b[k*NR + j]      (0 <= k < kc)
 *     c[i*ldc + j] = base + acc[i][j]                 for i < mr, j < nr
 *
 * where base is c[i*ldc + j] when `accumulate`, else bias[i] (or 0 when bias
 * is NULL).  Panels are zero-padded to MR rows / NR columns by the packing
 * code (src/_conv.pyx), so the kernels never read out of bounds.
 *
 * Variants: AVX-512F (x86-64), AVX2+FMA (x86-64) and portable C.  Wheels
 * cannot be built with -march=native, so the vector variants are compiled
 * with per-function target attributes (GCC/Clang; MSVC accepts the
 * intrinsics without /arch) and chosen at run time from CPUID.  The
 * environment variable CNNEXT_ISA=generic|avx2|avx512 restricts the choice
 * (the tests use it to exercise every variant on one machine).
 */
#ifndef CNNEXT_UKERNEL_H
#define CNNEXT_UKERNEL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef void (*cnx_ukr_s)(int64_t kc, const float *a, const float *b, float *c,
                          int64_t ldc, int mr, int nr, int accumulate,
                          const float *bias);
typedef void (*cnx_ukr_d)(int64_t kc, const double *a, const double *b,
                          double *c, int64_t ldc, int mr, int nr,
                          int accumulate, const double *bias);

typedef struct {
    cnx_ukr_s s;
    cnx_ukr_d d;
    int s_mr, s_nr, d_mr, d_nr;
    const char *name;
} cnx_kernels;

/* Largest MR / NR of any variant (stack buffers are sized with these). */
#define CNX_MAX_MR 8
#define CNX_MAX_NR 32

/* ---------------------------------------------------------------- store */

#define CNX_STORE_TILE(T, MR_, NR_, tile)                                      \
    do {                                                                       \
        int i_, j_;                                                            \
        for (i_ = 0; i_ < mr; i_++) {                                          \
            T *row_ = c + i_ * ldc;                                            \
            T base_ = (!accumulate && bias) ? bias[i_] : (T)0;                 \
            if (accumulate) {                                                  \
                for (j_ = 0; j_ < nr; j_++) row_[j_] += tile[i_ * (NR_) + j_]; \
            } else {                                                           \
                for (j_ = 0; j_ < nr; j_++)                                    \
                    row_[j_] = base_ + tile[i_ * (NR_) + j_];                  \
            }                                                                  \
        }                                                                      \
    } while (0)

/* ------------------------------------------------------------ portable C */

#define CNX_GEN_MR 4
#define CNX_GEN_NR_S 16
#define CNX_GEN_NR_D 8

static void cnx_ukr_s_generic(int64_t kc, const float *a, const float *b,
                              float *c, int64_t ldc, int mr, int nr,
                              int accumulate, const float *bias) {
    float acc[CNX_GEN_MR * CNX_GEN_NR_S];
    int64_t k;
    int i, j;
    memset(acc, 0, sizeof(acc));
    for (k = 0; k < kc; k++) {
        for (i = 0; i < CNX_GEN_MR; i++) {
            float ai = a[k * CNX_GEN_MR + i];
            for (j = 0; j < CNX_GEN_NR_S; j++)
                acc[i * CNX_GEN_NR_S + j] += ai * b[k * CNX_GEN_NR_S + j];
        }
    }
    CNX_STORE_TILE(float, CNX_GEN_MR, CNX_GEN_NR_S, acc);
}

static void cnx_ukr_d_generic(int64_t kc, const double *a, const double *b,
                              double *c, int64_t ldc, int mr, int nr,
                              int accumulate, const double *bias) {
    double acc[CNX_GEN_MR * CNX_GEN_NR_D];
    int64_t k;
    int i, j;
    memset(acc, 0, sizeof(acc));
    for (k = 0; k < kc; k++) {
        for (i = 0; i < CNX_GEN_MR; i++) {
            double ai = a[k * CNX_GEN_MR + i];
            for (j = 0; j < CNX_GEN_NR_D; j++)
                acc[i * CNX_GEN_NR_D + j] += ai * b[k * CNX_GEN_NR_D + j];
        }
    }
    CNX_STORE_TILE(double, CNX_GEN_MR, CNX_GEN_NR_D, acc);
}

/* ---------------------------------------------------------------- x86-64 */

#if defined(__x86_64__) || defined(_M_X64) || defined(_M_AMD64)
#define CNX_X86 1
#include <immintrin.h>
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#define CNX_TARGET_AVX2
#define CNX_TARGET_AVX512
#else
#define CNX_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define CNX_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#endif

/* AVX2 + FMA: float 6 x 16 (12 ymm accumulators), double 6 x 8. */
#define CNX_AVX2_MR 6

CNX_TARGET_AVX2
static void cnx_ukr_s_avx2(int64_t kc, const float *a, const float *b,
                           float *c, int64_t ldc, int mr, int nr,
                           int accumulate, const float *bias) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    int64_t k;
    for (k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8), t;
        t = _mm256_broadcast_ss(a + 0); c00 = _mm256_fmadd_ps(t, b0, c00); c01 = _mm256_fmadd_ps(t, b1, c01);
        t = _mm256_broadcast_ss(a + 1); c10 = _mm256_fmadd_ps(t, b0, c10); c11 = _mm256_fmadd_ps(t, b1, c11);
        t = _mm256_broadcast_ss(a + 2); c20 = _mm256_fmadd_ps(t, b0, c20); c21 = _mm256_fmadd_ps(t, b1, c21);
        t = _mm256_broadcast_ss(a + 3); c30 = _mm256_fmadd_ps(t, b0, c30); c31 = _mm256_fmadd_ps(t, b1, c31);
        t = _mm256_broadcast_ss(a + 4); c40 = _mm256_fmadd_ps(t, b0, c40); c41 = _mm256_fmadd_ps(t, b1, c41);
        t = _mm256_broadcast_ss(a + 5); c50 = _mm256_fmadd_ps(t, b0, c50); c51 = _mm256_fmadd_ps(t, b1, c51);
        a += 6;
        b += 16;
    }
    if (mr == 6 && nr == 16) {
        __m256 r[12] = {c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51};
        int i;
        for (i = 0; i < 6; i++) {
            float *row = c + i * ldc;
            __m256 lo = r[2 * i], hi = r[2 * i + 1];
            if (accumulate) {
                lo = _mm256_add_ps(lo, _mm256_loadu_ps(row));
                hi = _mm256_add_ps(hi, _mm256_loadu_ps(row + 8));
            } else if (bias) {
                __m256 bv = _mm256_set1_ps(bias[i]);
                lo = _mm256_add_ps(lo, bv);
                hi = _mm256_add_ps(hi, bv);
            }
            _mm256_storeu_ps(row, lo);
            _mm256_storeu_ps(row + 8, hi);
        }
    } else {
        float tile[6 * 16];
        _mm256_storeu_ps(tile + 0, c00);  _mm256_storeu_ps(tile + 8, c01);
        _mm256_storeu_ps(tile + 16, c10); _mm256_storeu_ps(tile + 24, c11);
        _mm256_storeu_ps(tile + 32, c20); _mm256_storeu_ps(tile + 40, c21);
        _mm256_storeu_ps(tile + 48, c30); _mm256_storeu_ps(tile + 56, c31);
        _mm256_storeu_ps(tile + 64, c40); _mm256_storeu_ps(tile + 72, c41);
        _mm256_storeu_ps(tile + 80, c50); _mm256_storeu_ps(tile + 88, c51);
        CNX_STORE_TILE(float, 6, 16, tile);
    }
}

CNX_TARGET_AVX2
static void cnx_ukr_d_avx2(int64_t kc, const double *a, const double *b,
                           double *c, int64_t ldc, int mr, int nr,
                           int accumulate, const double *bias) {
    __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();
    __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();
    __m256d c20 = _mm256_setzero_pd(), c21 = _mm256_setzero_pd();
    __m256d c30 = _mm256_setzero_pd(), c31 = _mm256_setzero_pd();
    __m256d c40 = _mm256_setzero_pd(), c41 = _mm256_setzero_pd();
    __m256d c50 = _mm256_setzero_pd(), c51 = _mm256_setzero_pd();
    int64_t k;
    for (k = 0; k < kc; k++) {
        __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4), t;
        t = _mm256_broadcast_sd(a + 0); c00 = _mm256_fmadd_pd(t, b0, c00); c01 = _mm256_fmadd_pd(t, b1, c01);
        t = _mm256_broadcast_sd(a + 1); c10 = _mm256_fmadd_pd(t, b0, c10); c11 = _mm256_fmadd_pd(t, b1, c11);
        t = _mm256_broadcast_sd(a + 2); c20 = _mm256_fmadd_pd(t, b0, c20); c21 = _mm256_fmadd_pd(t, b1, c21);
        t = _mm256_broadcast_sd(a + 3); c30 = _mm256_fmadd_pd(t, b0, c30); c31 = _mm256_fmadd_pd(t, b1, c31);
        t = _mm256_broadcast_sd(a + 4); c40 = _mm256_fmadd_pd(t, b0, c40); c41 = _mm256_fmadd_pd(t, b1, c41);
        t = _mm256_broadcast_sd(a + 5); c50 = _mm256_fmadd_pd(t, b0, c50); c51 = _mm256_fmadd_pd(t, b1, c51);
        a += 6;
        b += 8;
    }
    {
        double tile[6 * 8];
        _mm256_storeu_pd(tile + 0, c00);  _mm256_storeu_pd(tile + 4, c01);
        _mm256_storeu_pd(tile + 8, c10);  _mm256_storeu_pd(tile + 12, c11);
        _mm256_storeu_pd(tile + 16, c20); _mm256_storeu_pd(tile + 20, c21);
        _mm256_storeu_pd(tile + 24, c30); _mm256_storeu_pd(tile + 28, c31);
        _mm256_storeu_pd(tile + 32, c40); _mm256_storeu_pd(tile + 36, c41);
        _mm256_storeu_pd(tile + 40, c50); _mm256_storeu_pd(tile + 44, c51);
        CNX_STORE_TILE(double, 6, 8, tile);
    }
}

/* AVX-512F: float 8 x 32 (16 zmm accumulators), double 8 x 16. */
#define CNX_AVX512_ROW(T, SUF, i)                                              \
    t = _mm512_set1_##SUF(a[i]);                                               \
    r[2 * (i)] = _mm512_fmadd_##SUF(t, b0, r[2 * (i)]);                        \
    r[2 * (i) + 1] = _mm512_fmadd_##SUF(t, b1, r[2 * (i) + 1]);

CNX_TARGET_AVX512
static void cnx_ukr_s_avx512(int64_t kc, const float *a, const float *b,
                             float *c, int64_t ldc, int mr, int nr,
                             int accumulate, const float *bias) {
    __m512 r[16];
    int64_t k;
    int i;
    for (i = 0; i < 16; i++) r[i] = _mm512_setzero_ps();
    for (k = 0; k < kc; k++) {
        __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16), t;
        CNX_AVX512_ROW(float, ps, 0) CNX_AVX512_ROW(float, ps, 1)
        CNX_AVX512_ROW(float, ps, 2) CNX_AVX512_ROW(float, ps, 3)
        CNX_AVX512_ROW(float, ps, 4) CNX_AVX512_ROW(float, ps, 5)
        CNX_AVX512_ROW(float, ps, 6) CNX_AVX512_ROW(float, ps, 7)
        a += 8;
        b += 32;
    }
    if (nr == 32) {
        for (i = 0; i < mr; i++) {
            float *row = c + i * ldc;
            __m512 lo = r[2 * i], hi = r[2 * i + 1];
            if (accumulate) {
                lo = _mm512_add_ps(lo, _mm512_loadu_ps(row));
                hi = _mm512_add_ps(hi, _mm512_loadu_ps(row + 16));
            } else if (bias) {
                __m512 bv = _mm512_set1_ps(bias[i]);
                lo = _mm512_add_ps(lo, bv);
                hi = _mm512_add_ps(hi, bv);
            }
            _mm512_storeu_ps(row, lo);
            _mm512_storeu_ps(row + 16, hi);
        }
    } else {
        /* Masked loads/stores: never touch C beyond column nr. */
        __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : ((1u << nr) - 1u));
        __mmask16 m1 = (__mmask16)(nr <= 16 ? 0 : ((1u << (nr - 16)) - 1u));
        for (i = 0; i < mr; i++) {
            float *row = c + i * ldc;
            __m512 lo = r[2 * i], hi = r[2 * i + 1];
            if (accumulate) {
                lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(m0, row));
                hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(m1, row + 16));
            } else if (bias) {
                __m512 bv = _mm512_set1_ps(bias[i]);
                lo = _mm512_add_ps(lo, bv);
                hi = _mm512_add_ps(hi, bv);
            }
            _mm512_mask_storeu_ps(row, m0, lo);
            _mm512_mask_storeu_ps(row + 16, m1, hi);
        }
    }
}

CNX_TARGET_AVX512
static void cnx_ukr_d_avx512(int64_t kc, const double *a, const double *b,
                             double *c, int64_t ldc, int mr, int nr,
                             int accumulate, const double *bias) {
    __m512d r[16];
    int64_t k;
    int i;
    for (i = 0; i < 16; i++) r[i] = _mm512_setzero_pd();
    for (k = 0; k < kc; k++) {
        __m512d b0 = _mm512_loadu_pd(b), b1 = _mm512_loadu_pd(b + 8), t;
        CNX_AVX512_ROW(double, pd, 0) CNX_AVX512_ROW(double, pd, 1)
        CNX_AVX512_ROW(double, pd, 2) CNX_AVX512_ROW(double, pd, 3)
        CNX_AVX512_ROW(double, pd, 4) CNX_AVX512_ROW(double, pd, 5)
        CNX_AVX512_ROW(double, pd, 6) CNX_AVX512_ROW(double, pd, 7)
        a += 8;
        b += 16;
    }
    {
        __mmask8 m0 = (__mmask8)(nr >= 8 ? 0xFF : ((1u << nr) - 1u));
        __mmask8 m1 = (__mmask8)(nr <= 8 ? 0 : ((1u << (nr - 8)) - 1u));
        for (i = 0; i < mr; i++) {
            double *row = c + i * ldc;
            __m512d lo = r[2 * i], hi = r[2 * i + 1];
            if (accumulate) {
                lo = _mm512_add_pd(lo, _mm512_maskz_loadu_pd(m0, row));
                hi = _mm512_add_pd(hi, _mm512_maskz_loadu_pd(m1, row + 8));
            } else if (bias) {
                __m512d bv = _mm512_set1_pd(bias[i]);
                lo = _mm512_add_pd(lo, bv);
                hi = _mm512_add_pd(hi, bv);
            }
            _mm512_mask_storeu_pd(row, m0, lo);
            _mm512_mask_storeu_pd(row + 8, m1, hi);
        }
    }
}

/* CPUID / XGETBV: the CPU has the instructions *and* the OS saves the
 * registers. */
#if defined(_MSC_VER) && !defined(__clang__)
static void cnx_cpuid(int leaf, int sub, int r[4]) { __cpuidex(r, leaf, sub); }
static unsigned long long cnx_xgetbv(void) { return _xgetbv(0); }
#else
#include <cpuid.h>
static void cnx_cpuid(int leaf, int sub, int r[4]) {
    unsigned int a, b, c, d;
    __cpuid_count((unsigned)leaf, (unsigned)sub, a, b, c, d);
    r[0] = (int)a; r[1] = (int)b; r[2] = (int)c; r[3] = (int)d;
}
static unsigned long long cnx_xgetbv(void) {
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

static int cnx_detect_isa(void) { /* 0 generic, 1 avx2, 2 avx512 */
    int r[4], max_leaf;
    unsigned long long xcr0;
    cnx_cpuid(0, 0, r);
    max_leaf = r[0];
    if (max_leaf < 7) return 0;
    cnx_cpuid(1, 0, r);
    if (!(r[2] & (1 << 27)) || !(r[2] & (1 << 28)) || !(r[2] & (1 << 12)))
        return 0; /* OSXSAVE, AVX, FMA */
    xcr0 = cnx_xgetbv();
    if ((xcr0 & 0x6) != 0x6) return 0; /* XMM and YMM state */
    cnx_cpuid(7, 0, r);
    if (!(r[1] & (1 << 5))) return 0; /* AVX2 */
    if ((r[1] & (1 << 16)) && (xcr0 & 0xE6) == 0xE6) return 2; /* AVX512F + ZMM state */
    return 1;
}
#else
static int cnx_detect_isa(void) { return 0; }
#endif

static int cnx_isa_from_env(int detected) {
    const char *e = getenv("CNNEXT_ISA");
    int want = detected;
    if (!e || !*e) return detected;
    if (strcmp(e, "generic") == 0) want = 0;
    else if (strcmp(e, "avx2") == 0) want = 1;
    else if (strcmp(e, "avx512") == 0) want = 2;
    return want < detected ? want : detected; /* never beyond the hardware */
}

static cnx_kernels cnx_select_kernels(void) {
    cnx_kernels k;
    int isa = cnx_isa_from_env(cnx_detect_isa());
    k.s = cnx_ukr_s_generic; k.d = cnx_ukr_d_generic;
    k.s_mr = CNX_GEN_MR; k.s_nr = CNX_GEN_NR_S;
    k.d_mr = CNX_GEN_MR; k.d_nr = CNX_GEN_NR_D;
    k.name = "generic";
#ifdef CNX_X86
    if (isa == 2) {
        k.s = cnx_ukr_s_avx512; k.d = cnx_ukr_d_avx512;
        k.s_mr = 8; k.s_nr = 32; k.d_mr = 8; k.d_nr = 16;
        k.name = "avx512";
    } else if (isa == 1) {
        k.s = cnx_ukr_s_avx2; k.d = cnx_ukr_d_avx2;
        k.s_mr = 6; k.s_nr = 16; k.d_mr = 6; k.d_nr = 8;
        k.name = "avx2";
    }
#endif
    return k;
}

#endif /* CNNEXT_UKERNEL_H */
