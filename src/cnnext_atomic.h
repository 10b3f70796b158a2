/*
 * The few atomic operations two threads need to share a loop's iterations
 * (GCC/Clang builtins; MSVC's interlocked compare-and-swap, a full
 * barrier): a load that acquires, a store that releases, a
 * compare-and-swap, an add, and a pause for spin-waits.
 */
#ifndef CNNEXT_ATOMIC_H
#define CNNEXT_ATOMIC_H

#include <stdint.h>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>

/* All by the compare-and-swap, an intrinsic on x86 (32-bit too), x64 and ARM64. */
static __inline int64_t cnx_atomic_load(int64_t *p) {
    return _InterlockedCompareExchange64((volatile __int64 *)p, 0, 0);
}
static __inline int cnx_atomic_cas(int64_t *p, int64_t expected, int64_t v) {
    return _InterlockedCompareExchange64((volatile __int64 *)p, v, expected) == expected;
}
static __inline void cnx_atomic_store(int64_t *p, int64_t v) {
    int64_t old = cnx_atomic_load(p);
    while (!cnx_atomic_cas(p, old, v)) old = cnx_atomic_load(p);
}
static __inline int64_t cnx_atomic_add(int64_t *p, int64_t v) {
    int64_t old = cnx_atomic_load(p);
    while (!cnx_atomic_cas(p, old, old + v)) old = cnx_atomic_load(p);
    return old + v;
}
#if defined(_M_X64) || defined(_M_IX86)
static __inline void cnx_relax(void) { _mm_pause(); }
#elif defined(_M_ARM64)
static __inline void cnx_relax(void) { __yield(); }
#else
static __inline void cnx_relax(void) {}
#endif

#else

static inline int64_t cnx_atomic_load(int64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void cnx_atomic_store(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int cnx_atomic_cas(int64_t *p, int64_t expected, int64_t v) {
    return __atomic_compare_exchange_n(p, &expected, v, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
static inline int64_t cnx_atomic_add(int64_t *p, int64_t v) {
    return __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL);
}
#if defined(__x86_64__) || defined(__i386__)
static inline void cnx_relax(void) { __builtin_ia32_pause(); }
#elif defined(__aarch64__)
static inline void cnx_relax(void) { __asm__ __volatile__("yield"); }
#else
static inline void cnx_relax(void) {}
#endif

#endif
#endif
