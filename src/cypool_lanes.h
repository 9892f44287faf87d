/*
 * cypool_lanes.h -- the channels-last inner loops, one lane per channel.
 *
 * Each function updates n independent lanes (channels) with one window tap,
 * so every lane still sees its taps in PyTorch's order and the results do
 * not depend on the vector width.  On x86-64 with GCC or clang each
 * function is compiled for AVX-512, AVX2 and the baseline, and the loader
 * picks the best one the running CPU has (function multiversioning): a
 * wheel built for baseline x86-64 still runs AVX-512 code where it can.
 */
#ifndef CYPOOL_LANES_H
#define CYPOOL_LANES_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(CYPOOL_NO_MULTIVERSION)
#define CP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CP_CLONES
#endif

#define CP_DEFINE_LANES(T, SUFFIX)                                                        \
    /* acc[i] += x[i] */                                                                  \
    CP_CLONES static void cp_lanes_add_##SUFFIX(T *restrict acc, const T *restrict x,     \
                                                ptrdiff_t n)                              \
    {                                                                                     \
        for (ptrdiff_t i = 0; i < n; i++)                                                 \
            acc[i] = acc[i] + x[i];                                                       \
    }                                                                                     \
    /* running max with NaN winning; idx recorded where x[i] is taken */                  \
    CP_CLONES static void cp_lanes_max_##SUFFIX(T *restrict m, int64_t *restrict mi,      \
                                                const T *restrict x, int64_t idx,         \
                                                ptrdiff_t n)                              \
    {                                                                                     \
        for (ptrdiff_t i = 0; i < n; i++) {                                               \
            T v = x[i], a = m[i];                                                         \
            int take = (v > a) | (v != v);                                                \
            m[i] = take ? v : a;                                                          \
            mi[i] = take ? idx : mi[i];                                                   \
        }                                                                                 \
    }

CP_DEFINE_LANES(float, f32)
CP_DEFINE_LANES(double, f64)

#endif /* CYPOOL_LANES_H */
