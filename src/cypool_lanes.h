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
    /* acc[i] += x[t*xstep + i] for each tap t < taps, in tap order */                    \
    CP_CLONES static void cp_lanes_add_##SUFFIX(T *restrict acc, const T *restrict x,     \
                                                ptrdiff_t n, ptrdiff_t taps,              \
                                                ptrdiff_t xstep)                          \
    {                                                                                     \
        for (ptrdiff_t t = 0; t < taps; t++)                                              \
            for (ptrdiff_t i = 0; i < n; i++)                                             \
                acc[i] = acc[i] + x[t * xstep + i];                                       \
    }                                                                                     \
    /* running max over taps in order, NaN winning; tap t has index idx + t*istep */      \
    CP_CLONES static void cp_lanes_max_##SUFFIX(T *restrict m, int64_t *restrict mi,      \
                                                const T *restrict x, ptrdiff_t n,         \
                                                ptrdiff_t taps, ptrdiff_t xstep,          \
                                                int64_t idx, int64_t istep)               \
    {                                                                                     \
        for (ptrdiff_t t = 0; t < taps; t++, idx += istep)                                \
            for (ptrdiff_t i = 0; i < n; i++) {                                           \
                T v = x[t * xstep + i], a = m[i];                                         \
                int take = (v > a) | (v != v);                                            \
                m[i] = take ? v : a;                                                      \
                mi[i] = take ? idx : mi[i];                                               \
            }                                                                             \
    }                                                                                     \
    /* the same running max, values only */                                              \
    CP_CLONES static void cp_lanes_maxv_##SUFFIX(T *restrict m, const T *restrict x,      \
                                                 ptrdiff_t n, ptrdiff_t taps,             \
                                                 ptrdiff_t xstep)                         \
    {                                                                                     \
        for (ptrdiff_t t = 0; t < taps; t++)                                              \
            for (ptrdiff_t i = 0; i < n; i++) {                                           \
                T v = x[t * xstep + i], a = m[i];                                         \
                m[i] = ((v > a) | (v != v)) ? v : a;                                      \
            }                                                                             \
    }

/* Loops over a few taps must stay scalar: vectorised 2+1 wide, the next
 * window's loads overlap this one's partial-width stores and stall on
 * store-to-load forwarding (measured: 2x slower backward for k = 3). */
#if defined(__clang__)
#define CP_SCALAR_LOOP _Pragma("clang loop vectorize(disable) interleave(disable)")
#define CP_NO_VECTORIZE
#elif defined(__GNUC__)
#define CP_SCALAR_LOOP
#define CP_NO_VECTORIZE __attribute__((optimize("no-tree-vectorize")))
#else
#define CP_SCALAR_LOOP
#define CP_NO_VECTORIZE
#endif

#define CP_DEFINE_SPREAD(T, SUFFIX)                                                       \
    /* p[t*step] += v for t < n: one output's gradient over its window's taps */         \
    CP_NO_VECTORIZE static void cp_spread_small_##SUFFIX(T *p, T v, ptrdiff_t n,         \
                                                         ptrdiff_t step)                 \
    {                                                                                     \
        CP_SCALAR_LOOP                                                                    \
        for (ptrdiff_t t = 0; t < n; t++)                                                 \
            p[t * step] = p[t * step] + v;                                                \
    }                                                                                     \
    static inline void cp_spread_##SUFFIX(T *restrict p, T v, ptrdiff_t n, ptrdiff_t step) \
    {                                                                                     \
        if (step == 1 && n >= 16) {                                                       \
            for (ptrdiff_t t = 0; t < n; t++)                                             \
                p[t] = p[t] + v;                                                          \
        } else {                                                                          \
            cp_spread_small_##SUFFIX(p, v, n, step);                                      \
        }                                                                                 \
    }

/* Sum of n contiguous values in an order fixed by n alone, never by the
 * vector unit: P running partial sums (element i goes to sum i % P, with
 * P = 64 from 256 values up, else 16), then the partials added in a fixed
 * pairwise tree, then the tail in order.  Every clone (AVX-512, AVX2,
 * baseline) does exactly these additions, so the result is the same bits on
 * every machine and at any thread count. */
#define CP_DEFINE_SUM_P(T, SUFFIX, P)                                                     \
    CP_CLONES static T cp_sum##P##_##SUFFIX(const T *restrict x, ptrdiff_t n)             \
    {                                                                                     \
        T acc[P] = {0};                                                                   \
        ptrdiff_t i = 0, j;                                                               \
        for (; i + P <= n; i += P)                                                        \
            for (j = 0; j < P; j++)                                                       \
                acc[j] = acc[j] + x[i + j];                                               \
        for (ptrdiff_t h = P / 2; h > 0; h /= 2)                                          \
            for (j = 0; j < h; j++)                                                       \
                acc[j] = acc[j] + acc[j + h];                                             \
        T s = acc[0];                                                                     \
        for (; i < n; i++)                                                                \
            s = s + x[i];                                                                 \
        return s;                                                                         \
    }
#define CP_DEFINE_SUM(T, SUFFIX)                                                          \
    CP_DEFINE_SUM_P(T, SUFFIX, 16)                                                        \
    CP_DEFINE_SUM_P(T, SUFFIX, 64)                                                        \
    static inline T cp_sum_##SUFFIX(const T *x, ptrdiff_t n)                              \
    {                                                                                     \
        return n >= 256 ? cp_sum64_##SUFFIX(x, n) : cp_sum16_##SUFFIX(x, n);              \
    }

CP_DEFINE_LANES(float, f32)
CP_DEFINE_LANES(double, f64)
CP_DEFINE_SUM(float, f32)
CP_DEFINE_SUM(double, f64)
CP_DEFINE_SPREAD(float, f32)
CP_DEFINE_SPREAD(double, f64)

#endif /* CYPOOL_LANES_H */
