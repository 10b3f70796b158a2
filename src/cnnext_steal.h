/*
 * cnnext: work units shared out in ranges, with stealing.
 *
 * A kernel's units are split into one contiguous range per thread, as a
 * static schedule would split them.  A thread takes the units of its own
 * range from the front, in order; once its range is empty it takes units
 * from the back of the fullest other range.  So each thread still works
 * through consecutive units (a forward's tiles share their prepared
 * sample), while a thread that starts late or runs slower -- woken late,
 * or sharing its core with another process -- gives up the end of its
 * range to the others instead of holding up the call.  Which thread runs a
 * unit never changes what the unit computes.
 *
 * A range is one 64-bit word, its front index in the low half and its back
 * index in the high half (indices below 2**31), changed by compare and
 * swap, padded to 64 bytes (a cache line's size) so that the threads'
 * ranges seldom share a line.
 */
#ifndef CNNEXT_STEAL_H
#define CNNEXT_STEAL_H

#include <stdint.h>

#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#endif

typedef struct {
    int64_t word;
    char pad[56];
} cnx_range;

static inline int64_t cnx_range_load(cnx_range *r) {
#if defined(_MSC_VER) && !defined(__clang__)
    return _InterlockedCompareExchange64((volatile __int64 *)&r->word, 0, 0);
#else
    return __atomic_load_n(&r->word, __ATOMIC_ACQUIRE);
#endif
}

static inline int cnx_range_cas(cnx_range *r, int64_t *old, int64_t new_) {
#if defined(_MSC_VER) && !defined(__clang__)
    int64_t seen = _InterlockedCompareExchange64((volatile __int64 *)&r->word, new_, *old);
    if (seen == *old) return 1;
    *old = seen;
    return 0;
#else
    return __atomic_compare_exchange_n(&r->word, old, new_, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
#endif
}

/* Units [front, back) (0 <= front <= back < 2**31).  Call before the
 * threads start. */
static inline void cnx_range_set(cnx_range *r, int64_t front, int64_t back) {
    r->word = front | (back << 32);
}

/* Units left in the range. */
static inline int64_t cnx_range_left(cnx_range *r) {
    int64_t w = cnx_range_load(r);
    int64_t n = (w >> 32) - (w & 0xFFFFFFFF);
    return n > 0 ? n : 0;
}

/* Take the range's first unit (from_back == 0) or its last one: its index,
 * or -1 when the range is empty. */
static inline int64_t cnx_range_take(cnx_range *r, int from_back) {
    int64_t old = cnx_range_load(r), front, back;
    for (;;) {
        front = old & 0xFFFFFFFF;
        back = old >> 32;
        if (front >= back) return -1;
        if (from_back) {
            if (cnx_range_cas(r, &old, front | ((back - 1) << 32))) return back - 1;
        } else {
            if (cnx_range_cas(r, &old, (front + 1) | (back << 32))) return front;
        }
    }
}

#endif
