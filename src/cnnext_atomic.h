/*
 * The few atomic operations two threads need to share a loop's iterations
 * (GCC/Clang builtins; MSVC's interlocked functions, full barriers): a
 * load that acquires, a store that releases, a compare-and-swap, an add,
 * and a pause for spin-waits.
 */
#ifndef CNNEXT_ATOMIC_H
#define CNNEXT_ATOMIC_H

#include <stdint.h>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>

static __inline int64_t cnx_atomic_load(int64_t *p) { return _InterlockedOr64((volatile __int64 *)p, 0); }
static __inline void cnx_atomic_store(int64_t *p, int64_t v) { _InterlockedExchange64((volatile __int64 *)p, v); }
static __inline int cnx_atomic_cas(int64_t *p, int64_t expected, int64_t v) {
    return _InterlockedCompareExchange64((volatile __int64 *)p, v, expected) == expected;
}
static __inline int64_t cnx_atomic_add(int64_t *p, int64_t v) {
    return _InterlockedExchangeAdd64((volatile __int64 *)p, v) + v;
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
