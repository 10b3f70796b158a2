/*
 * cnnext batch-normalization loops over float32 rows, computed in float64,
 * with runtime CPU dispatch.
 *
 * Loops that accumulate need permission to reassociate before a compiler
 * vectorizes them (cnnext is not built with -ffast-math); "omp simd
 * reduction" gives it for these loops only (the build enables OpenMP;
 * without OpenMP 4 they run as plain loops, with the same results up to the
 * order of the additions).  As for the GEMM micro-kernels (cnnext_ukernel.h,
 * whose CPU detection and CNNEXT_ISA rule this file shares), wheels cannot
 * be built with -march=native: each loop is compiled three times, portable,
 * with an AVX2 and with an AVX-512 target attribute, and the variant is
 * chosen at run time.  The variants give the same elementwise results; the
 * float64 sums (statistics, gradient sums) run over 4 or 8 lanes, so they
 * differ in the order of the additions -- a few float64 ulps (~1e-15
 * relative), which reaches a float32 output or gradient only when it lies
 * at a rounding tie, rarely and by one float32 ulp.
 */
#ifndef CNNEXT_NORM_H
#define CNNEXT_NORM_H

#include <stddef.h>
#include <stdint.h>

#include "cnnext_ukernel.h"

#if defined(_OPENMP) && _OPENMP >= 201307
#define CNX_NORM_SIMD_REDUCE _Pragma("omp simd reduction(+:a, b)")
#define CNX_NORM_SIMD _Pragma("omp simd")
#else
#define CNX_NORM_SIMD_REDUCE
#define CNX_NORM_SIMD
#endif

typedef struct {
    /* *s1 += sum (r[p] - k);  *s2 += sum (r[p] - k)**2 */
    void (*shifted_sums)(const float *r, ptrdiff_t n, double k, double *s1, double *s2);
    /* *sg += sum g[p];  *sgx += sum g[p] * (x[p] - m) */
    void (*grad_sums)(const float *g, const float *x, ptrdiff_t n, double m, double *sg,
                      double *sgx);
    /* y[p] = (x[p] - m) * a + b */
    void (*affine)(const float *x, float *y, ptrdiff_t n, double m, double a, double b);
    /* gx[p] = ((g[p] - mg) - (x[p] - m) * k) * s */
    void (*grad_input)(const float *g, const float *x, float *gx, ptrdiff_t n, double mg,
                       double m, double k, double s);
    /* y[p] = relu((float)((x[p] - m) * a + b)): affine, then a ReLU on the
     * stored value (NaN kept, -0.0 -> 0.0, as the separate ReLU) */
    void (*affine_relu)(const float *x, float *y, ptrdiff_t n, double m, double a, double b);
    /* o[p] = ref[p] <= 0 ? 0 : g[p]: a ReLU's backward from its output (a
     * NaN output passes g, as the separate ReLU's backward) */
    void (*relu_mask)(const float *g, const float *ref, float *o, ptrdiff_t n);
    /* v = (float)((x[p] - m) * a + b) + s[p], then (relu) the ReLU on v: a
     * residual block's last normalisation, its sum and the ReLU after it */
    void (*affine_add)(const float *x, const float *s, float *y, ptrdiff_t n, double m,
                       double a, double b, int relu);
    /* grad_sums and grad_input of the masked gradient relu_mask(g, ref)
     * without storing it: each masked value computed as relu_mask stores
     * it, then used as those loops use g (the same numbers) */
    void (*grad_sums_masked)(const float *g, const float *ref, const float *x, ptrdiff_t n,
                             double m, double *sg, double *sgx);
    void (*grad_input_masked)(const float *g, const float *ref, const float *x, float *gx,
                              ptrdiff_t n, double mg, double m, double k, double s);
    const char *name;
} cnx_norm_kernels;

/* ref <= 0 ? +0.0f : g, as bit operations (the select vectorizes) */
static inline float cnx_norm_masked(float g, float ref) {
    union { float f; uint32_t u; } v;
    v.f = g;
    v.u &= (uint32_t)0 - (uint32_t)!(ref <= 0.0f);
    return v.f;
}

#define CNX_NORM_DEF(SUF, TARGET)                                                 \
    TARGET static void cnx_norm_shifted_sums_##SUF(const float *r, ptrdiff_t n,   \
                                                   double k, double *s1,          \
                                                   double *s2) {                  \
        double a = 0, b = 0;                                                      \
        ptrdiff_t p;                                                              \
        CNX_NORM_SIMD_REDUCE                                                      \
        for (p = 0; p < n; ++p) {                                                 \
            double d = (double)r[p] - k;                                          \
            a += d;                                                               \
            b += d * d;                                                           \
        }                                                                         \
        *s1 += a;                                                                 \
        *s2 += b;                                                                 \
    }                                                                             \
    TARGET static void cnx_norm_grad_sums_##SUF(const float *g, const float *x,   \
                                                ptrdiff_t n, double m, double *sg, \
                                                double *sgx) {                    \
        double a = 0, b = 0;                                                      \
        ptrdiff_t p;                                                              \
        CNX_NORM_SIMD_REDUCE                                                      \
        for (p = 0; p < n; ++p) {                                                 \
            double gv = (double)g[p];                                             \
            a += gv;                                                              \
            b += gv * ((double)x[p] - m);                                         \
        }                                                                         \
        *sg += a;                                                                 \
        *sgx += b;                                                                \
    }                                                                             \
    TARGET static void cnx_norm_affine_##SUF(const float *x, float *y, ptrdiff_t n, \
                                             double m, double a, double b) {      \
        ptrdiff_t p;                                                              \
        CNX_NORM_SIMD                                                             \
        for (p = 0; p < n; ++p)                                                   \
            y[p] = (float)(((double)x[p] - m) * a + b);                           \
    }                                                                             \
    TARGET static void cnx_norm_grad_input_##SUF(const float *g, const float *x,  \
                                                 float *gx, ptrdiff_t n, double mg, \
                                                 double m, double k, double s) {  \
        ptrdiff_t p;                                                              \
        CNX_NORM_SIMD                                                             \
        for (p = 0; p < n; ++p)                                                   \
            gx[p] = (float)((((double)g[p] - mg) - ((double)x[p] - m) * k) * s);  \
    }                                                                             \
    TARGET static void cnx_norm_affine_relu_##SUF(const float *x, float *y,       \
                                                  ptrdiff_t n, double m, double a, \
                                                  double b) {                     \
        ptrdiff_t p;                                                              \
        CNX_NORM_SIMD                                                             \
        for (p = 0; p < n; ++p) {                                                 \
            float v = (float)(((double)x[p] - m) * a + b);                        \
            y[p] = (v > 0.0f || v != v) ? v : 0.0f;                               \
        }                                                                         \
    }                                                                             \
    TARGET static void cnx_norm_affine_add_##SUF(const float *x, const float *s,  \
                                                 float *y, ptrdiff_t n, double m, \
                                                 double a, double b, int relu) {  \
        ptrdiff_t p;                                                              \
        if (relu) {                                                               \
            CNX_NORM_SIMD                                                         \
            for (p = 0; p < n; ++p) {                                             \
                float v = (float)(((double)x[p] - m) * a + b);                    \
                v = v + s[p];                                                     \
                y[p] = (v > 0.0f || v != v) ? v : 0.0f;                           \
            }                                                                     \
        } else {                                                                  \
            CNX_NORM_SIMD                                                         \
            for (p = 0; p < n; ++p) {                                             \
                float v = (float)(((double)x[p] - m) * a + b);                    \
                y[p] = v + s[p];                                                  \
            }                                                                     \
        }                                                                         \
    }                                                                             \
    TARGET static void cnx_norm_relu_mask_##SUF(const float *g, const float *ref, \
                                                float *o, ptrdiff_t n) {          \
        ptrdiff_t p;                                                              \
        for (p = 0; p < n; ++p) {                                                 \
            float gv = g[p], rv = ref[p];                                         \
            o[p] = rv <= 0.0f ? 0.0f : gv;                                        \
        }                                                                         \
    }                                                                             \
    TARGET static void cnx_norm_grad_sums_masked_##SUF(                           \
        const float *g, const float *ref, const float *x, ptrdiff_t n, double m,  \
        double *sg, double *sgx) {                                                \
        double a = 0, b = 0;                                                      \
        ptrdiff_t p;                                                              \
        CNX_NORM_SIMD_REDUCE                                                      \
        for (p = 0; p < n; ++p) {                                                 \
            float gm = cnx_norm_masked(g[p], ref[p]);                             \
            double gv = (double)gm;                                               \
            a += gv;                                                              \
            b += gv * ((double)x[p] - m);                                         \
        }                                                                         \
        *sg += a;                                                                 \
        *sgx += b;                                                                \
    }                                                                             \
    TARGET static void cnx_norm_grad_input_masked_##SUF(                          \
        const float *g, const float *ref, const float *x, float *gx, ptrdiff_t n, \
        double mg, double m, double k, double s) {                                \
        ptrdiff_t p;                                                              \
        CNX_NORM_SIMD                                                             \
        for (p = 0; p < n; ++p) {                                                 \
            float gm = cnx_norm_masked(g[p], ref[p]);                             \
            gx[p] = (float)((((double)gm - mg) - ((double)x[p] - m) * k) * s);    \
        }                                                                         \
    }

CNX_NORM_DEF(generic, )
#ifdef CNX_X86
CNX_NORM_DEF(avx2, CNX_TARGET_AVX2)
CNX_NORM_DEF(avx512, CNX_TARGET_AVX512)
#endif

/* float64 loops of the fused steps, compiled as the .pyx's own loops are
 * (no target attribute, so no contraction into FMA that the separate
 * loops would not also do): y = (x - m) * s * w + b, the sum, the ReLU
 * and its mask, in the separate ops' order. */
static void cnx_norm_affine_act_d(const double *x, const double *add, double *y, ptrdiff_t n,
                                  double m, double s, double w, double b, int relu) {
    ptrdiff_t p;
    if (add != NULL && relu) {
        for (p = 0; p < n; ++p) {
            double v = (x[p] - m) * s * w + b;
            v = v + add[p];
            y[p] = (v > 0.0 || v != v) ? v : 0.0;
        }
    } else if (add != NULL) {
        for (p = 0; p < n; ++p) {
            double v = (x[p] - m) * s * w + b;
            y[p] = v + add[p];
        }
    } else if (relu) {
        for (p = 0; p < n; ++p) {
            double v = (x[p] - m) * s * w + b;
            y[p] = (v > 0.0 || v != v) ? v : 0.0;
        }
    } else {
        for (p = 0; p < n; ++p)
            y[p] = (x[p] - m) * s * w + b;
    }
}

static void cnx_norm_relu_mask_d(const double *g, const double *ref, double *o, ptrdiff_t n) {
    ptrdiff_t p;
    for (p = 0; p < n; ++p) {
        double gv = g[p], rv = ref[p];
        o[p] = rv <= 0.0 ? 0.0 : gv;
    }
}

/* The float32 loops of one instruction set (suffix ISA) into k. */
#define CNX_NORM_SET(ISA)                                                      \
    do {                                                                       \
        k.shifted_sums = cnx_norm_shifted_sums_##ISA;                          \
        k.grad_sums = cnx_norm_grad_sums_##ISA;                                \
        k.affine = cnx_norm_affine_##ISA;                                      \
        k.grad_input = cnx_norm_grad_input_##ISA;                              \
        k.affine_relu = cnx_norm_affine_relu_##ISA;                            \
        k.relu_mask = cnx_norm_relu_mask_##ISA;                                \
        k.affine_add = cnx_norm_affine_add_##ISA;                              \
        k.grad_sums_masked = cnx_norm_grad_sums_masked_##ISA;                  \
        k.grad_input_masked = cnx_norm_grad_input_masked_##ISA;                \
        k.name = #ISA;                                                         \
    } while (0)

static cnx_norm_kernels cnx_norm_select(void) {
    cnx_norm_kernels k;
    CNX_NORM_SET(generic);
#ifdef CNX_X86
    {
        int isa = cnx_isa_from_env(cnx_detect_isa());
        if (isa >= 2)
            CNX_NORM_SET(avx512);
        else if (isa >= 1)
            CNX_NORM_SET(avx2);
    }
#endif
    return k;
}

#endif /* CNNEXT_NORM_H */
