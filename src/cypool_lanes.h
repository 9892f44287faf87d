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
#include <string.h>
#include "cypool_stream.h"

#if defined(__x86_64__) && defined(__linux__) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(CYPOOL_NO_MULTIVERSION)
#define CP_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CP_CLONES
#endif

/* The instruction set the hand-picked kernels use, chosen at run time:
 * 2: AVX-512F and DQ, 1: AVX2, 0: neither (the baseline; also every non-x86-64
 * machine).  cp_window_limit_isa lowers it, so that tests run each level's
 * code on one machine and compare the results. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(CYPOOL_NO_MULTIVERSION)
#define CP_ISA_LEVELS 1
static int cp_window_isa_level = -1;

/* Level 2 needs AVX-512DQ besides AVX-512F (every AVX-512 CPU but the Xeon
 * Phis has it): cp_rdiv512 classifies its quotients with vfpclassps. */
static int cp_window_best_isa(void)
{
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") ? 2
           : __builtin_cpu_supports("avx2") ? 1 : 0;
}

static int cp_window_isa(void)
{
    if (cp_window_isa_level < 0)
        cp_window_isa_level = cp_window_best_isa();
    return cp_window_isa_level;
}

/* Use at most ISA level `level` from now on; returns the level in force. */
static int cp_window_limit_isa(int level)
{
    int best = cp_window_best_isa();
    cp_window_isa_level = level < best ? level : best;
    return cp_window_isa_level;
}
#else
static int cp_window_limit_isa(int level) { (void)level; return 0; }
#endif

/* Loops written once with GCC/clang vector types, compiled once a level:
 * VT is T in vectors of the level's register width (64 bytes with
 * AVX-512F, 32 with AVX2, 16 otherwise), HT half of one, VN the lanes of
 * a VT; CP_VLD / CP_VST load and store one unaligned.  Vector types wider
 * than the target's registers (64 bytes in an AVX2 clone) are not kept in
 * registers by GCC: each operation goes through the stack (measured 3-5x
 * slower than the 32-byte loop), so the width is chosen a clone, not fixed.
 * Each lane's operations do not depend on the width: every level gives the
 * same bits.  CP_VCLONES(T, RET, RETKW, NAME, PARAMS, ARGS, BODY) defines
 * NAME PARAMS, whose body BODY(T) runs at the level in force (RETKW: return
 * for a value, empty for void). */
#if defined(__GNUC__) || defined(__clang__)
#define CP_VTYPES(T, B)                                                                   \
    typedef T VT __attribute__((vector_size(B)));                                         \
    typedef T HT __attribute__((vector_size((B) / 2)));                                   \
    enum { VN = (B) / sizeof(T) };
#else
#define CP_VTYPES(T, B) enum { VN = 1 };   /* (the plain loops use no vectors) */
#endif
#define CP_VLD_AS(TYPE, p)                                                                \
    __extension__({                                                                       \
        TYPE v_;                                                                          \
        memcpy(&v_, (p), sizeof v_);                                                      \
        v_;                                                                               \
    })
#define CP_VLD(p) CP_VLD_AS(VT, p)
#define CP_VST(p, v)                                                                      \
    do {                                                                                  \
        __typeof__(v) s_ = (v);                                                           \
        memcpy((p), &s_, sizeof s_);                                                      \
    } while (0)
/* Lanes [i0, n) of a sum over taps t < taps, in tap order, in steps of 512,
 * 256, 64 and 32 bytes while whole steps remain (each step as many of the
 * level's vectors, at most 8 at a time, kept in registers); i0 ends at the
 * first lane left.  (512-byte steps: a 512-byte pixel, float64's 64
 * channels, read whole at each tap, not in two passes of 256 bytes over the
 * window: the adaptive (16, 64, 112, 112) -> 7 x 7 float64 forward took
 * 0.87-0.92x the time at 1 thread, 0.70-0.89x at 2, on Emerald Rapids.)  INIT(TYPE, l): a vector's start at lane l; TAP(t): tap
 * t's lane 0; OUT(a, l): what is done with the sum a of lanes from l.  The
 * steps are the same at every level, so that each lane is summed by the
 * same kind of code at every level: where a sum meets two different NaNs,
 * which one it passes on depends on the code's operand order (vector or
 * scalar), and every level then still gives the same bits. */
#define CP_LANE_STEP(T, BYTES, TYPE, INIT, TAP, OUT)                                      \
    for (; i0 + (ptrdiff_t)((BYTES) / sizeof(T)) <= n; i0 += (BYTES) / sizeof(T)) {      \
        enum { V_ = (BYTES) / sizeof(TYPE) ? (BYTES) / sizeof(TYPE) : 1,                  \
               K_ = V_ < 8 ? V_ : 8, L_ = sizeof(TYPE) / sizeof(T) };                      \
        for (int b = 0; b < V_; b += K_) {                                                \
            const ptrdiff_t l0 = i0 + b * L_;                                             \
            TYPE a[K_];                                                                   \
            _Pragma("GCC unroll 8") for (int q = 0; q < K_; q++) a[q] = INIT(TYPE, l0 + q * L_);\
            for (ptrdiff_t t = 0; t < taps; t++) {                                        \
                const T *p = TAP(t) + l0;                                                 \
                _Pragma("GCC unroll 8") for (int q = 0; q < K_; q++)                      \
                    a[q] = a[q] + CP_VLD_AS(TYPE, p + q * L_);                            \
            }                                                                             \
            _Pragma("GCC unroll 8") for (int q = 0; q < K_; q++) OUT(a[q], l0 + q * L_)   \
        }                                                                                 \
    }
#define CP_LANE_STEPS(T, INIT, TAP, OUT)                                                  \
    CP_LANE_STEP(T, 512, VT, INIT, TAP, OUT)                                              \
    CP_LANE_STEP(T, 256, VT, INIT, TAP, OUT)                                              \
    CP_LANE_STEP(T, 64, VT, INIT, TAP, OUT)                                               \
    if (sizeof(VT) > 32) {      /* 32 bytes: half a 64-byte vector */                     \
        CP_LANE_STEP(T, 32, HT, INIT, TAP, OUT)                                           \
    } else {                                                                              \
        CP_LANE_STEP(T, 32, VT, INIT, TAP, OUT)                                           \
    }
#ifdef CP_ISA_LEVELS
#define CP_VCLONES(T, RET, RETKW, NAME, PARAMS, ARGS, BODY)                               \
    __attribute__((target("avx512f,avx512dq"))) static RET NAME##_v64 PARAMS                       \
    {                                                                                     \
        CP_VTYPES(T, 64)                                                                  \
        BODY(T)                                                                           \
    }                                                                                     \
    __attribute__((target("avx2"))) static RET NAME##_v32 PARAMS                          \
    {                                                                                     \
        CP_VTYPES(T, 32)                                                                  \
        BODY(T)                                                                           \
    }                                                                                     \
    static RET NAME##_v16 PARAMS                                                          \
    {                                                                                     \
        CP_VTYPES(T, 16)                                                                  \
        BODY(T)                                                                           \
    }                                                                                     \
    static RET NAME PARAMS                                                                \
    {                                                                                     \
        switch (cp_window_isa()) {                                                        \
        case 2: RETKW NAME##_v64 ARGS; break;                                             \
        case 1: RETKW NAME##_v32 ARGS; break;                                             \
        default: RETKW NAME##_v16 ARGS; break;                                            \
        }                                                                                 \
    }
#else
#define CP_VCLONES(T, RET, RETKW, NAME, PARAMS, ARGS, BODY)                               \
    static RET NAME PARAMS                                                                \
    {                                                                                     \
        CP_VTYPES(T, 16)                                                                  \
        BODY(T)                                                                           \
    }
#endif

/* cp_lanes_add's taps over N lanes (a constant) summed in registers, stored
 * once: pixels of 256 bytes (64 float32 channels) go 0.83-0.89x the time
 * of a load, add and store a tap (the adaptive (113, 97) -> (7, 5)
 * channels-last forward); 512 bytes of float64 measured the same either way */
#define CP_LANES_ADD_REG(T, N)                                                            \
    do {                                                                                  \
        T a[N];                                                                           \
        for (ptrdiff_t i = 0; i < (N); i++)                                               \
            a[i] = acc[i];                                                                \
        for (ptrdiff_t t = 0; t < taps; t++)                                              \
            for (ptrdiff_t i = 0; i < (N); i++)                                           \
                a[i] = a[i] + x[t * xstep + i];                                           \
        for (ptrdiff_t i = 0; i < (N); i++)                                               \
            acc[i] = a[i];                                                                \
    } while (0)
#define CP_DEFINE_LANES(T, SUFFIX)                                                        \
    /* acc[i] += x[t*xstep + i] for each tap t < taps, in tap order (all lanes a     */   \
    /* tap: the input is read in its order; accumulators kept in registers over the */   \
    /* taps, a block of lanes at a time, measured 1.1-1.2x slower for 1 KiB pixels, */   \
    /* and 256-byte pixels in registers whole: CP_LANES_ADD_REG)                     */   \
    CP_CLONES static void cp_lanes_add_##SUFFIX(T *restrict acc, const T *restrict x,     \
                                                ptrdiff_t n, ptrdiff_t taps,              \
                                                ptrdiff_t xstep)                          \
    {                                                                                     \
        if (n == 256 / (ptrdiff_t)sizeof(T)) { /* (64 float32 lanes: in registers) */     \
            CP_LANES_ADD_REG(T, 256 / (ptrdiff_t)sizeof(T));                              \
            return;                                                                       \
        }                                                                                 \
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
#define CP_TREE_LEVEL(H)                                                                  \
    {                                                                                     \
        for (j = 0; j < (H); j++)                                                         \
            acc[j] = acc[j] + acc[j + (H)];                                               \
    }
#define CP_DEFINE_SUM_P(T, SUFFIX, P)                                                     \
    static inline T cp_sum##P##_body_##SUFFIX(const T *restrict x, ptrdiff_t n)           \
    {                                                                                     \
        T acc[P] = {0};                                                                   \
        ptrdiff_t i = 0, j;                                                               \
        for (; i + P <= n; i += P)                                                        \
            for (j = 0; j < P; j++)                                                       \
                acc[j] = acc[j] + x[i + j];                                               \
        /* the pairwise tree, its levels spelt out so that each is one */                \
        /* constant-length (vector) loop */                                               \
        if (P > 32) CP_TREE_LEVEL(32)                                                     \
        if (P > 16) CP_TREE_LEVEL(16)                                                     \
        CP_TREE_LEVEL(8) CP_TREE_LEVEL(4) CP_TREE_LEVEL(2) CP_TREE_LEVEL(1)               \
        T s = acc[0];                                                                     \
        for (; i < n; i++)                                                                \
            s = s + x[i];                                                                 \
        return s;                                                                         \
    }                                                                                     \
    CP_CLONES static T cp_sum##P##_##SUFFIX(const T *restrict x, ptrdiff_t n)             \
    {                                                                                     \
        return cp_sum##P##_body_##SUFFIX(x, n);                                           \
    }
/* cp_sum of each of np planes of n contiguous values (out[p]), in one call */
#define CP_DEFINE_SUM(T, SUFFIX)                                                          \
    CP_DEFINE_SUM_P(T, SUFFIX, 16)                                                        \
    CP_DEFINE_SUM_P(T, SUFFIX, 64)                                                        \
    static inline T cp_sum_##SUFFIX(const T *x, ptrdiff_t n)                              \
    {                                                                                     \
        return n >= 256 ? cp_sum64_##SUFFIX(x, n) : cp_sum16_##SUFFIX(x, n);              \
    }                                                                                     \
    CP_CLONES static void cp_sum_planes_any_##SUFFIX(const T *restrict x, ptrdiff_t n,    \
                                                     ptrdiff_t np, T *restrict out)       \
    {                                                                                     \
        for (ptrdiff_t p = 0; p < np; p++)                                                \
            out[p] = n >= 256 ? cp_sum64_body_##SUFFIX(x + p * n, n)                      \
                              : cp_sum16_body_##SUFFIX(x + p * n, n);                     \
    }

/* acc[i] += src[idx[i]]: one output row's gradient gathered per input
 * column (vector gathers where the clone's ISA has them) */
#define CP_DEFINE_GATHER(T, SUFFIX)                                                       \
    CP_CLONES static void cp_gather_add_##SUFFIX(T *restrict acc, const T *restrict src,  \
                                                 const int32_t *restrict idx, ptrdiff_t n)\
    {                                                                                     \
        for (ptrdiff_t i = 0; i < n; i++)                                                 \
            acc[i] = acc[i] + src[idx[i]];                                                \
    }

/* One channels-first output row of window sums -> averages, divided as
 * PyTorch divides (see _finish_avg in _kernels.pyx, which this vectorises
 * across the row): mode 0 by each extent in turn (a, b, then w[i*ws]), mode
 * 1 once by the product a * w[i*ws] (0 for a window with no divisor), mode 2 by
 * k; the quotient is added to 0 so that a zero sum over a negative divisor
 * gives +0.0.  Exact operations, so the same bits in any vector width. */
#define CP_DEFINE_FINISH(T, SUFFIX)                                                       \
    CP_CLONES static void cp_finish_row_##SUFFIX(T *restrict y, ptrdiff_t n, int mode,   \
                                                 double a, double b,                     \
                                                 const double *restrict w, ptrdiff_t ws, \
                                                 double k)                               \
    {                                                                                     \
        if (ws == 0 && mode < 2) {   /* one divisor for the whole row */                  \
            T ta = (T)a, tb = (T)b, tw = (T)w[0];                                         \
            double dv = a * w[0];                                                         \
            T td = (T)dv;                                                                 \
            for (ptrdiff_t i = 0; i < n; i++)                                             \
                y[i] = mode == 0 ? ((y[i] / ta) / tb) / tw : dv == 0 ? (T)0 : 0 + y[i] / td;\
        } else if (mode == 0) {                                                           \
            T ta = (T)a, tb = (T)b;                                                       \
            for (ptrdiff_t i = 0; i < n; i++)                                             \
                y[i] = ((y[i] / ta) / tb) / (T)w[i * ws];                                 \
        } else if (mode == 1) {                                                           \
            for (ptrdiff_t i = 0; i < n; i++) {                                           \
                double dv = a * w[i * ws];                                                \
                T q = 0 + y[i] / (T)dv;                                                   \
                y[i] = dv == 0 ? (T)0 : q;                                                \
            }                                                                             \
        } else {                                                                          \
            T tk = (T)k;                                                                  \
            for (ptrdiff_t i = 0; i < n; i++)                                             \
                y[i] = 0 + y[i] / tk;                                                     \
        }                                                                                 \
    }

CP_DEFINE_LANES(float, f32)
CP_DEFINE_LANES(double, f64)
CP_DEFINE_FINISH(float, f32_any)
CP_DEFINE_FINISH(double, f64)
CP_DEFINE_GATHER(float, f32)
CP_DEFINE_GATHER(double, f64)
CP_DEFINE_SUM(float, f32)
CP_DEFINE_SUM(double, f64)
CP_DEFINE_SPREAD(float, f32)
CP_DEFINE_SPREAD(double, f64)

/* A whole window at once, for n channel lanes: lane i of the result is the
 * sum (or running max) of x[offs[t] + i] over the taps t < taps, in tap
 * order, kept in registers (four vectors of lanes at a time) and
 * stored once.  The same additions (comparisons) in the same order as the
 * per-tap loops above, so the same bits; what changes is that the output is
 * not read and written back once per window row.  For max, tap t has index
 * tidx[t], and a window starts from (init, first) as the per-tap loops do.
 * Written with GCC/clang vector types, one copy a level (CP_VCLONES); other
 * compilers get the plain loops. */
/* A window sum a (vector or scalar) made an average, as _finish_avg in
 * _kernels.pyx divides: mode 0 by t1, t2, t3 in turn (adaptive extents),
 * modes 1 and 2 once by d1 (0 for a window with no divisor), the quotient
 * added to 0 (a zero sum over a negative divisor gives +0.0); mode -1 leaves
 * the sum.  Each division is exact, so the same bits in any vector width. */
#define CP_AVG_DIVIDE(a)                                                                  \
    if (mode == 0) {                                                                      \
        a = a / t1;                                                                       \
        a = a / t2;                                                                       \
        a = a / t3;                                                                       \
    } else if (mode > 0) {                                                                \
        if (d1 == 0)                                                                      \
            a = a * 0 + 0;   /* no divisor, no taps: the sum is +0.0, so is this */       \
        else                                                                              \
            a = 0 + a / t1;                                                               \
    }

#if defined(__GNUC__) || defined(__clang__)
/* cp_window_add_v: returns the lanes done.  Lanes of CP_TAP_MAJOR_BYTES and
 * more (1 KiB pixels: 256 float32 channels) are summed a tap at a time over
 * all of them (in y, which stays in the L1 cache), so that the input is
 * read in its order: where it comes from memory, 1.4x faster than the
 * steps of CP_LANE_STEPS, which read each tap's pixel in 256-byte pieces
 * (512-byte ones since)
 * (global pooling of (64, 7, 7, 2048), k=2 s=2 of (32, 56, 56, 256)); for
 * smaller pixels, mostly in the caches, the steps are 1.15x faster (k=3 s=1
 * of 512-byte pixels).  The same additions in the same order either way;
 * the first 256-byte multiple of lanes the one way, the rest the other, at
 * every level. */
#define CP_TAP_MAJOR_BYTES 1024
static void cp_div3_row_f32(float *y, ptrdiff_t n, double d1, double d2, double d3);
#define CP_ZERO_INIT(TYPE, l) ((TYPE){0})
#define CP_WINDOW_TAP(t) (x + offs[t])
#define CP_WINDOW_OUT(a, l)                                                               \
    {                                                                                     \
        CP_AVG_DIVIDE(a)                                                                  \
        CP_VST(y + (l), a);                                                               \
    }
#define CP_WINDOW_ADD_BODY(T)                                                             \
    ptrdiff_t i0 = 0;                                                                     \
    const T t1 = (T)d1, t2 = (T)d2, t3 = (T)d3;                                           \
    if (n * sizeof(T) >= CP_TAP_MAJOR_BYTES) {                                            \
        const ptrdiff_t m = n / (256 / sizeof(T)) * (256 / sizeof(T));                    \
        for (ptrdiff_t t = 0; t < taps; t++) {                                            \
            const T *p = x + offs[t];                                                     \
            if (t == 0)                                                                   \
                for (ptrdiff_t i = 0; i < m; i += VN) CP_VST(y + i, (VT){0} + CP_VLD(p + i));\
            else                                                                          \
                for (ptrdiff_t i = 0; i < m; i += VN) CP_VST(y + i, CP_VLD(y + i) + CP_VLD(p + i));\
        }                                                                                 \
        if (mode == 0 && sizeof(T) == sizeof(float))  /* (float32: by reciprocals) */     \
            cp_div3_row_f32((float *)(void *)y, m, d1, d2, d3);                           \
        else                                                                              \
            for (ptrdiff_t i = 0; i < m; i += VN) {                                       \
                VT a = CP_VLD(y + i);                                                     \
                CP_AVG_DIVIDE(a)                                                          \
                CP_VST(y + i, a);                                                         \
            }                                                                             \
        i0 = m;                                                                           \
    }                                                                                     \
    CP_LANE_STEPS(T, CP_ZERO_INIT, CP_WINDOW_TAP, CP_WINDOW_OUT)                          \
    return i0;
#define CP_DEFINE_WINDOW(T, SUFFIX, I, N)                                                 \
    CP_VCLONES(T, ptrdiff_t, return, cp_window_add_v_##SUFFIX,                            \
               (T *y, const T *x, ptrdiff_t n, const ptrdiff_t *offs, ptrdiff_t taps,     \
                int mode, double d1, double d2, double d3),                               \
               (y, x, n, offs, taps, mode, d1, d2, d3), CP_WINDOW_ADD_BODY)
#else
#define CP_DEFINE_WINDOW(T, SUFFIX, I, N)                                                 \
    static ptrdiff_t cp_window_add_v_##SUFFIX(T *y, const T *x, ptrdiff_t n,              \
                                              const ptrdiff_t *offs, ptrdiff_t taps,      \
                                              int mode, double d1, double d2, double d3)  \
    { return 0; }
#endif


/* Max windows, hand-vectorised: AVX-512F (compare masks, masked loads for
 * the last lanes) and AVX2 (compare-and-blend), chosen at run time, so a
 * baseline build runs them where the CPU has them; other machines get the
 * tap-by-tap loops.  A lane takes a tap when it is greater or NaN, as every
 * other max loop here; lanes track the number of the tap that won (-1:
 * none yet), turned into an index at the end. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(CYPOOL_NO_MULTIVERSION)
#include <immintrin.h>
#define CP_HAVE_WINDOW_MAX 1

/* a + b with a the first operand, whatever the compiler would reorder: where
 * both are NaN the sum is a's (quieted), as in PyTorch's sum += x (the
 * compiler may swap the operands of a plain add, which changes which NaN a
 * sum keeps).  AVX-512 (any zmm register; float32 and float64), 256-bit,
 * 128-bit and scalar float32 forms. */
#define CP_DEFINE_ADD_ORD(NAME, T, ISA, INSN, REG)                                        \
    __attribute__((target(ISA), always_inline)) static inline T NAME(T a, T b)           \
    {                                                                                     \
        T r;                                                                              \
        __asm__(INSN " %2, %1, %0" : "=" REG(r) : REG(a), REG(b));                        \
        return r;                                                                         \
    }
CP_DEFINE_ADD_ORD(cp_add_ord512, __m512, "avx512f", "vaddps", "v")
CP_DEFINE_ADD_ORD(cp_add_ord512d, __m512d, "avx512f", "vaddpd", "v")
CP_DEFINE_ADD_ORD(cp_add_ord256, __m256, "avx2", "vaddps", "x")
CP_DEFINE_ADD_ORD(cp_add_ord128, __m128, "avx2", "vaddps", "x")
CP_DEFINE_ADD_ORD(cp_add_ord_ss, float, "avx2", "vaddss", "x")

/* Whether 16-lane gathers and scatters are fast enough to build kernels
 * on: not on AMD's cores (Zen 4 and 5 run them as microcode). */
static int cp_gather_fast_v = -1;
static inline int cp_gather_fast(void)
{
    if (cp_gather_fast_v < 0)
        cp_gather_fast_v = !__builtin_cpu_is("amd");
    return cp_gather_fast_v;
}

/* Run them (flag 1) or not (0) whatever the CPU, or as it says (-1): for
 * tests, which compare both on one machine; returns the setting now. */
static int cp_use_gathers(int flag)
{
    cp_gather_fast_v = flag < 0 ? !__builtin_cpu_is("amd") : flag != 0;
    return cp_gather_fast_v;
}

/* Masked loads and stores whose mask is mostly all ones take the plain
 * instructions then: AMD's Zen 4 and 5 run the masked forms slower even
 * with every lane set (a stream of full-mask loads and stores measured 2.2x
 * slower than plain ones on Zen 5).  m is evaluated twice. */
#define CP_LD16(m, p) ((m) == 0xFFFF ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps((m), (p)))
#define CP_ST16(p, m, v)                                                                  \
    do {                                                                                  \
        if ((m) == 0xFFFF)                                                                \
            _mm512_storeu_ps((p), (v));                                                   \
        else                                                                              \
            _mm512_mask_storeu_ps((p), (m), (v));                                         \
    } while (0)
#define CP_LD16I(m, p)                                                                    \
    ((m) == 0xFFFF ? _mm512_loadu_si512((const void *)(p))                                \
                   : _mm512_maskz_loadu_epi32((m), (const void *)(p)))
#define CP_ST16I(p, m, v)                                                                 \
    do {                                                                                  \
        if ((m) == 0xFFFF)                                                                \
            _mm512_storeu_si512((void *)(p), (v));                                        \
        else                                                                              \
            _mm512_mask_storeu_epi32((void *)(p), (m), (v));                              \
    } while (0)
#define CP_ST8Q(p, m, v)                                                                  \
    do {                                                                                  \
        if ((__mmask8)(m) == 0xFF)                                                        \
            _mm512_storeu_si512((void *)(p), (v));                                        \
        else                                                                              \
            _mm512_mask_storeu_epi64((void *)(p), (__mmask8)(m), (v));                    \
    } while (0)
#define CP_LD64B(m, p)                                                                    \
    ((m) == ~(__mmask64)0 ? _mm512_loadu_si512((const void *)(p))                         \
                          : _mm512_maskz_loadu_epi8((m), (const void *)(p)))
#define CP_ST64B(p, m, v)                                                                 \
    do {                                                                                  \
        if ((m) == ~(__mmask64)0)                                                         \
            _mm512_storeu_si512((void *)(p), (v));                                        \
        else                                                                              \
            _mm512_mask_storeu_epi8((void *)(p), (m), (v));                               \
    } while (0)


/* AVX-512F, L lanes a vector (16 float, 8 double), masked loads and stores
 * for the last lanes; yi == NULL: values only.  V, P (s/d) and the index width
 * (IT: int32 lanes for float, int64 for double) name the intrinsics. */
#define CP_DEFINE_WMAX512(T, SUFFIX, L, MASK, FULL, V, P, IT, EPI)                       \
    __attribute__((target("avx512f,avx512dq"))) static ptrdiff_t                                   \
    cp_wmax512_##SUFFIX(T *y, int64_t *yi, const T *x, ptrdiff_t n, const ptrdiff_t *offs, \
                        const int64_t *tidx, ptrdiff_t taps, T init, int64_t first,       \
                        const int64_t *firsts, int64_t lstep, int nt)                     \
    {                                                                                     \
        ptrdiff_t i0;                                                                     \
        for (i0 = cp_wmax512x4_##SUFFIX(y, yi, x, n, offs, tidx, taps, init, first, firsts, \
                                        lstep, nt);                                       \
             i0 < n; i0 += L) {                                                           \
            MASK lanes = n - i0 >= L ? (MASK)FULL : (MASK)((1u << (n - i0)) - 1);         \
            V m = _mm512_set1_p##P(init);                                                 \
            __m512i k = _mm512_set1_##EPI(-1), tt = _mm512_setzero_si512();               \
            const __m512i one = _mm512_set1_##EPI(1);                                     \
            for (ptrdiff_t t = 0; t < taps; t++) {                                        \
                V v = _mm512_maskz_loadu_p##P(lanes, x + offs[t] + i0);                   \
                MASK take = _mm512_cmp_p##P##_mask(v, m, _CMP_GT_OQ) |                    \
                            _mm512_cmp_p##P##_mask(v, v, _CMP_UNORD_Q);                   \
                m = _mm512_mask_mov_p##P(m, take, v);                                     \
                k = _mm512_mask_mov_##EPI(k, take, tt);                                   \
                tt = _mm512_add_##EPI(tt, one);                                           \
            }                                                                             \
            _mm512_mask_storeu_p##P(y + i0, lanes, m);                                    \
            if (yi) {                                                                     \
                IT kk[L];                                                                 \
                _mm512_storeu_si512((void *)kk, k);                                       \
                for (int i = 0; i < L && i0 + i < n; i++)                                 \
                    yi[i0 + i] = kk[i] < 0 ? (firsts ? firsts[i0 + i] : first)            \
                                           : tidx[kk[i]] + lstep * (i0 + i);              \
            }                                                                             \
        }                                                                                 \
        return n;                                                                         \
    }

/* cp_wmax256_f32 for 32 lanes at a time from lane 0 (four chains of blends
 * in flight, where one is bound by its latency), the indices of each 4
 * lanes by a masked gather of tidx; returns the lanes done. */
__attribute__((target("avx2"))) static ptrdiff_t
cp_wmax256x4_f32(float *y, int64_t *yi, const float *x, ptrdiff_t n, const ptrdiff_t *offs,
                 const int64_t *tidx, ptrdiff_t taps, float init, int64_t first,
                 const int64_t *firsts, int64_t lstep)
{
    ptrdiff_t i0 = 0;
    const __m256i one = _mm256_set1_epi32(1);
    for (; i0 + 32 <= n; i0 += 32) {
        __m256 m[4];
        __m256i k[4], tt = _mm256_setzero_si256();
        for (int q = 0; q < 4; q++) {
            m[q] = _mm256_set1_ps(init);
            k[q] = _mm256_set1_epi32(-1);
        }
        for (ptrdiff_t t = 0; t < taps; t++) {
            const float *p = x + offs[t] + i0;
            for (int q = 0; q < 4; q++) {
                __m256 v = _mm256_loadu_ps(p + 8 * q);
                __m256 take = _mm256_or_ps(_mm256_cmp_ps(v, m[q], _CMP_GT_OQ),
                                           _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
                m[q] = _mm256_blendv_ps(m[q], v, take);
                k[q] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(k[q]),
                                                            _mm256_castsi256_ps(tt), take));
            }
            tt = _mm256_add_epi32(tt, one);
        }
        for (int q = 0; q < 4; q++)
            _mm256_storeu_ps(y + i0 + 8 * q, m[q]);
        if (!yi)
            continue;
        for (int q = 0; q < 8; q++) {       /* 4 lanes: tidx[k] + lstep * lane, or the start */
            const ptrdiff_t i = i0 + 4 * q;
            __m128i kk = q & 1 ? _mm256_extracti128_si256(k[q / 2], 1)
                               : _mm256_castsi256_si128(k[q / 2]);
            __m256i none = _mm256_cvtepi32_epi64(_mm_cmpgt_epi32(_mm_setzero_si128(), kk));
            __m256i src = firsts ? _mm256_loadu_si256((const __m256i *)(firsts + i))
                                 : _mm256_set1_epi64x(first);
            __m256i got = _mm256_mask_i32gather_epi64(src, (const long long *)tidx, kk,
                                                      _mm256_xor_si256(none, _mm256_set1_epi64x(-1)), 8);
            __m256i step = _mm256_set_epi64x(lstep * (i + 3), lstep * (i + 2), lstep * (i + 1),
                                             lstep * i);
            _mm256_storeu_si256((__m256i *)(yi + i),
                                _mm256_add_epi64(got, _mm256_andnot_si256(none, step)));
        }
    }
    return i0;
}

/* AVX2, L lanes a vector (8 float, 4 double), whole vectors only: compare,
 * then blend values and (as the same bits) winning tap numbers. */
#define CP_DEFINE_WMAX256(T, SUFFIX, L, V, P, IT, SET1, ADD)                              \
    __attribute__((target("avx2"))) static ptrdiff_t                                     \
    cp_wmax256_##SUFFIX(T *y, int64_t *yi, const T *x, ptrdiff_t n, const ptrdiff_t *offs, \
                        const int64_t *tidx, ptrdiff_t taps, T init, int64_t first,       \
                        const int64_t *firsts, int64_t lstep, int nt)                     \
    {                                                                                     \
        ptrdiff_t i0 = 0;                                                                 \
        (void)nt;                       /* (plain stores) */                             \
        if (sizeof(T) == 4)                                                               \
            i0 = cp_wmax256x4_f32((float *)y, yi, (const float *)x, n, offs, tidx, taps,  \
                                  (float)init, first, firsts, lstep);                     \
        for (; i0 + L <= n; i0 += L) {                                                    \
            V m = _mm256_set1_p##P(init);                                                 \
            __m256i k = SET1(-1), tt = _mm256_setzero_si256();                            \
            const __m256i one = SET1(1);                                                  \
            for (ptrdiff_t t = 0; t < taps; t++) {                                        \
                V v = _mm256_loadu_p##P(x + offs[t] + i0);                                \
                V take = _mm256_or_p##P(_mm256_cmp_p##P(v, m, _CMP_GT_OQ),                \
                                        _mm256_cmp_p##P(v, v, _CMP_UNORD_Q));             \
                m = _mm256_blendv_p##P(m, v, take);                                       \
                k = _mm256_castp##P##_si256(_mm256_blendv_p##P(                           \
                    _mm256_castsi256_p##P(k), _mm256_castsi256_p##P(tt), take));          \
                tt = ADD(tt, one);                                                        \
            }                                                                             \
            _mm256_storeu_p##P(y + i0, m);                                                \
            if (yi) {                                                                     \
                IT kk[L];                                                                 \
                _mm256_storeu_si256((__m256i *)kk, k);                                    \
                for (int i = 0; i < L; i++)                                               \
                    yi[i0 + i] = kk[i] < 0 ? (firsts ? firsts[i0 + i] : first)            \
                                           : tidx[kk[i]] + lstep * (i0 + i);              \
            }                                                                             \
        }                                                                                 \
        return i0;                                                                        \
    }

/* the low m bits of 8 (m <= 0: none) */
static inline __mmask8 cp_mask8(ptrdiff_t m)
{
    return m >= 8 ? (__mmask8)0xFF : m <= 0 ? 0 : (__mmask8)((1u << m) - 1);
}

/* Indices of 16 float32 lanes from lane i0 whose winning tap numbers are k
 * (-1: none), as cp_wmax512_f32 computes them one lane at a time.  With
 * perm (at most 16 taps), the taps' indices are looked up in registers
 * (t0: tidx[0..7], t1: tidx[8..15]) by a two-source permute, not gathered. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_wmax_idx16(int64_t *yi, __m512i k, const int64_t *tidx, ptrdiff_t i0, int64_t first,
              const int64_t *firsts, int64_t lstep, __m512i liota, int perm, __m512i t0,
              __m512i t1, int nt)
{
    const __m512i z = _mm512_setzero_si512();
    __mmask16 none = _mm512_cmplt_epi32_mask(k, z);
    __m512i kc = _mm512_max_epi32(k, z);
    for (int h = 0; h < 2; h++) {
        __m256i kh = h ? _mm512_extracti64x4_epi64(kc, 1) : _mm512_castsi512_si256(kc);
        __m512i g = perm ? _mm512_permutex2var_epi64(t0, _mm512_cvtepi32_epi64(kh), t1)
                         : _mm512_i32gather_epi64(kh, (const void *)tidx, 8);
        g = _mm512_add_epi64(g, _mm512_add_epi64(_mm512_set1_epi64(lstep * (i0 + 8 * h)),
                                                 liota));
        __m512i f = firsts ? _mm512_loadu_si512((const void *)(firsts + i0 + 8 * h))
                           : _mm512_set1_epi64(first);
        g = _mm512_mask_blend_epi64((__mmask8)(none >> (8 * h)), g, f);
        if (nt && ((uintptr_t)(yi + i0 + 8 * h) & 63) == 0)
            _mm512_stream_si512((void *)(yi + i0 + 8 * h), g);
        else
            _mm512_storeu_si512((void *)(yi + i0 + 8 * h), g);
    }
}

/* The wmax512 loops' constants: the tap counter's step, the lanes' index
 * steps (lstep apart), and, where the window has at most 16 taps, its
 * taps' indices in two registers (cp_wmax_idx16's permute) */
#define CP_WMAX_IDX_SETUP()                                                               \
    const __m512i one = _mm512_set1_epi32(1);                                             \
    const __m512i liota = _mm512_set_epi64(7 * lstep, 6 * lstep, 5 * lstep, 4 * lstep,   \
                                           3 * lstep, 2 * lstep, lstep, 0);               \
    const int perm = taps <= 16;                                                          \
    const __m512i t0 = perm ? _mm512_maskz_loadu_epi64(cp_mask8(taps), (const void *)tidx) \
                            : _mm512_setzero_si512();                                     \
    const __m512i t1 = perm ? _mm512_maskz_loadu_epi64(cp_mask8(taps - 8),                \
                                                       (const void *)(tidx + 8))          \
                            : _mm512_setzero_si512()

/* cp_wmax512_f32's lanes 32 at a time from lane i0 (two chains of compares
 * in flight, the indices looked up in registers or gathered), while 32
 * remain; returns the lanes done.  The same taps win: each lane's scan is unchanged.  nt:
 * whole cache lines of y and yi are written with non-temporal stores (an
 * output larger than the caches; the caller fences). */
__attribute__((target("avx512f,avx512dq"))) static ptrdiff_t
cp_wmax512x2_f32(float *y, int64_t *yi, const float *x, ptrdiff_t n, const ptrdiff_t *offs,
                 const int64_t *tidx, ptrdiff_t taps, float init, int64_t first,
                 const int64_t *firsts, int64_t lstep, int nt, ptrdiff_t i0)
{
    CP_WMAX_IDX_SETUP();
    for (; i0 + 32 <= n; i0 += 32) {
        __m512 m0 = _mm512_set1_ps(init), m1 = m0;
        __m512i k0 = _mm512_set1_epi32(-1), k1 = k0, tt = _mm512_setzero_si512();
        for (ptrdiff_t t = 0; t < taps; t++) {
            __m512 v0 = _mm512_loadu_ps(x + offs[t] + i0);
            __m512 v1 = _mm512_loadu_ps(x + offs[t] + i0 + 16);
            __mmask16 take0 = _mm512_cmp_ps_mask(v0, m0, _CMP_GT_OQ) |
                              _mm512_cmp_ps_mask(v0, v0, _CMP_UNORD_Q);
            __mmask16 take1 = _mm512_cmp_ps_mask(v1, m1, _CMP_GT_OQ) |
                              _mm512_cmp_ps_mask(v1, v1, _CMP_UNORD_Q);
            m0 = _mm512_mask_mov_ps(m0, take0, v0);
            m1 = _mm512_mask_mov_ps(m1, take1, v1);
            k0 = _mm512_mask_mov_epi32(k0, take0, tt);
            k1 = _mm512_mask_mov_epi32(k1, take1, tt);
            tt = _mm512_add_epi32(tt, one);
        }
        if (nt && ((uintptr_t)(y + i0) & 63) == 0) {
            _mm512_stream_ps(y + i0, m0);
            _mm512_stream_ps(y + i0 + 16, m1);
        } else {
            _mm512_storeu_ps(y + i0, m0);
            _mm512_storeu_ps(y + i0 + 16, m1);
        }
        if (yi) {
            cp_wmax_idx16(yi, k0, tidx, i0, first, firsts, lstep, liota, perm, t0, t1, nt);
            cp_wmax_idx16(yi, k1, tidx, i0 + 16, first, firsts, lstep, liota, perm, t0, t1, nt);
        }
    }
    return i0;
}

/* cp_wmax512x2_f32 for 64 lanes at a time (four chains of compares in
 * flight: each tap's compare waits on the last, so two chains leave the
 * ports idle; the channels-last stem of 64 channels 1.10-1.17x faster on
 * Zen 5), then cp_wmax512x2_f32 from there; returns the lanes done. */
__attribute__((target("avx512f,avx512dq"))) static ptrdiff_t
cp_wmax512x4_f32(float *y, int64_t *yi, const float *x, ptrdiff_t n, const ptrdiff_t *offs,
                 const int64_t *tidx, ptrdiff_t taps, float init, int64_t first,
                 const int64_t *firsts, int64_t lstep, int nt)
{
    ptrdiff_t i0 = 0;
    CP_WMAX_IDX_SETUP();
    for (; i0 + 64 <= n; i0 += 64) {
        __m512 m[4];
        __m512i k[4], tt = _mm512_setzero_si512();
        _Pragma("GCC unroll 4")
        for (int q = 0; q < 4; q++) {
            m[q] = _mm512_set1_ps(init);
            k[q] = _mm512_set1_epi32(-1);
        }
        for (ptrdiff_t t = 0; t < taps; t++) {
            const float *p = x + offs[t] + i0;
            _Pragma("GCC unroll 4")
            for (int q = 0; q < 4; q++) {
                __m512 v = _mm512_loadu_ps(p + 16 * q);
                __mmask16 take = _mm512_cmp_ps_mask(v, m[q], _CMP_GT_OQ) |
                                 _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
                m[q] = _mm512_mask_mov_ps(m[q], take, v);
                k[q] = _mm512_mask_mov_epi32(k[q], take, tt);
            }
            tt = _mm512_add_epi32(tt, one);
        }
        _Pragma("GCC unroll 4")
        for (int q = 0; q < 4; q++) {
            if (nt && ((uintptr_t)(y + i0) & 63) == 0)
                _mm512_stream_ps(y + i0 + 16 * q, m[q]);
            else
                _mm512_storeu_ps(y + i0 + 16 * q, m[q]);
        }
        if (yi) {
            _Pragma("GCC unroll 4")
            for (int q = 0; q < 4; q++)
                cp_wmax_idx16(yi, k[q], tidx, i0 + 16 * q, first, firsts, lstep, liota, perm,
                              t0, t1, nt);
        }
    }
    return cp_wmax512x2_f32(y, yi, x, n, offs, tidx, taps, init, first, firsts, lstep, nt, i0);
}

static inline ptrdiff_t cp_wmax512x4_f64(double *y, int64_t *yi, const double *x, ptrdiff_t n,
                                         const ptrdiff_t *offs, const int64_t *tidx,
                                         ptrdiff_t taps, double init, int64_t first,
                                         const int64_t *firsts, int64_t lstep, int nt)
{
    (void)y; (void)yi; (void)x; (void)n; (void)offs; (void)tidx; (void)taps; (void)init;
    (void)first; (void)firsts; (void)lstep; (void)nt;
    return 0;
}

CP_DEFINE_WMAX512(float, f32, 16, __mmask16, 0xFFFF, __m512, s, int32_t, epi32)
CP_DEFINE_WMAX512(double, f64, 8, __mmask8, 0xFF, __m512d, d, int64_t, epi64)
CP_DEFINE_WMAX256(float, f32, 8, __m256, s, int32_t, _mm256_set1_epi32, _mm256_add_epi32)
CP_DEFINE_WMAX256(double, f64, 4, __m256d, d, int64_t, _mm256_set1_epi64x, _mm256_add_epi64)

/* Channels-last float32 max of a run of m outputs whose windows have the
 * same taps shifted along W: output j's tap t reads x + offs[t] + j xs and
 * has index tidx[0] + rel[t] + j is (rel: each tap's index less the first
 * tap's, as int32).  nv vectors of 16 lanes an output (the lanes of
 * output j are y + j ys, ys apart from one output to the next, the same
 * for yi; yi NULL: values only).  Four (output, vector) units are scanned
 * side by side, units of consecutive outputs when nv < 4 (two outputs of
 * 32 channels), so that four compare chains are in flight, each lane's scan
 * in tap order from init, taking a tap where it is greater or NaN, as
 * cp_wmax512_f32 does; the lanes track the winning tap's rel, set from
 * memory, so no tap numbers are turned into indices afterwards.  pre:
 * npre offsets (from an output's x) prefetched for each output, nbytes
 * each.  nt: vectors of whole lines written with non-temporal stores (the
 * caller fences). */
__attribute__((target("avx512f,avx512dq"))) static void
cp_clmax_run512_f32(float *y, int64_t *yi, const float *x, ptrdiff_t m, ptrdiff_t nv,
                    ptrdiff_t ys, const ptrdiff_t *offs, const int32_t *rel, ptrdiff_t taps,
                    ptrdiff_t xs, int64_t first, int64_t is, float init,
                    const ptrdiff_t *pre, ptrdiff_t npre, ptrdiff_t nbytes, int nt)
{
    const ptrdiff_t units = m * nv;
    /* init -inf: the first tap is the start (a lane that does not take it
     * holds -inf, its bits, with the first tap's index anyway) */
    const int skip = init == -__builtin_inff() && taps > 0;
    ptrdiff_t pj = -1;                  /* the last output whose prefetches went out */
    ptrdiff_t u = 0;
#define CP_CLRUN_UNIT(q)                                                                  \
    const ptrdiff_t j##q = (u + q) / nv, v##q = (u + q) % nv;                             \
    const float *x##q = x + j##q * xs + 16 * v##q;                                        \
    __m512 m##q = skip ? _mm512_loadu_ps(x##q + offs[0]) : _mm512_set1_ps(init);          \
    __m512i k##q = _mm512_setzero_si512();
#define CP_CLRUN_TAP(q)                                                                   \
    {                                                                                     \
        __m512 a = _mm512_loadu_ps(x##q + o);                                             \
        __mmask16 take = _mm512_cmp_ps_mask(a, m##q, _CMP_GT_OQ) |                        \
                         _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);                          \
        m##q = _mm512_mask_mov_ps(m##q, take, a);                                         \
        if (yi)                                                                           \
            k##q = _mm512_mask_mov_epi32(k##q, take, r);                                  \
    }
#define CP_CLRUN_STORE(q)                                                                 \
    {                                                                                     \
        float *yo = y + j##q * ys + 16 * v##q;                                            \
        if (nt && ((uintptr_t)yo & 63) == 0)                                              \
            _mm512_stream_ps(yo, m##q);                                                   \
        else                                                                              \
            _mm512_storeu_ps(yo, m##q);                                                   \
        if (yi) {                                                                         \
            int64_t *io = yi + j##q * ys + 16 * v##q;                                     \
            const __m512i b = _mm512_set1_epi64(first + j##q * is);                       \
            __m512i lo = _mm512_add_epi64(b, _mm512_cvtepi32_epi64(                       \
                                                 _mm512_castsi512_si256(k##q)));          \
            __m512i hi = _mm512_add_epi64(b, _mm512_cvtepi32_epi64(                       \
                                                 _mm512_extracti64x4_epi64(k##q, 1)));    \
            if (nt && ((uintptr_t)io & 63) == 0) {                                        \
                _mm512_stream_si512((void *)io, lo);                                      \
                _mm512_stream_si512((void *)(io + 8), hi);                                \
            } else {                                                                      \
                _mm512_storeu_si512((void *)io, lo);                                      \
                _mm512_storeu_si512((void *)(io + 8), hi);                                \
            }                                                                             \
        }                                                                                 \
    }
#define CP_CLRUN_PREFETCH(q)                                                              \
    if (npre && j##q > pj) {                                                              \
        for (ptrdiff_t i = 0; i < npre; i++)                                              \
            for (ptrdiff_t c = 0; c < nbytes; c += 64)                                    \
                __builtin_prefetch((const char *)(x + j##q * xs + pre[i]) + c, 0, 3);     \
        pj = j##q;                                                                        \
    }
    for (; u + 4 <= units; u += 4) {
        CP_CLRUN_UNIT(0) CP_CLRUN_UNIT(1) CP_CLRUN_UNIT(2) CP_CLRUN_UNIT(3)
        CP_CLRUN_PREFETCH(0) CP_CLRUN_PREFETCH(3)
        for (ptrdiff_t t = skip; t < taps; t++) {
            const ptrdiff_t o = offs[t];
            const __m512i r = _mm512_set1_epi32(rel[t]);
            CP_CLRUN_TAP(0) CP_CLRUN_TAP(1) CP_CLRUN_TAP(2) CP_CLRUN_TAP(3)
        }
        CP_CLRUN_STORE(0) CP_CLRUN_STORE(1) CP_CLRUN_STORE(2) CP_CLRUN_STORE(3)
    }
    for (; u < units; u++) {
        CP_CLRUN_UNIT(0)
        CP_CLRUN_PREFETCH(0)
        for (ptrdiff_t t = skip; t < taps; t++) {
            const ptrdiff_t o = offs[t];
            const __m512i r = _mm512_set1_epi32(rel[t]);
            CP_CLRUN_TAP(0)
        }
        CP_CLRUN_STORE(0)
    }
#undef CP_CLRUN_UNIT
#undef CP_CLRUN_TAP
#undef CP_CLRUN_STORE
#undef CP_CLRUN_PREFETCH
}

#define CP_WMAX_DISPATCH(SUFFIX)                                                          \
    switch (cp_window_isa()) {                                                            \
    case 2: return cp_wmax512_##SUFFIX(y, yi, x, n, offs, tidx, taps, init, first, firsts,  \
                                       lstep, nt);                                        \
    case 1: return cp_wmax256_##SUFFIX(y, yi, x, n, offs, tidx, taps, init, first, firsts,  \
                                       lstep, nt);                                        \
    default: return 0;                                                                    \
    }
#else
#define CP_WMAX_DISPATCH(SUFFIX) (void)nt; return 0;
#endif

#define CP_DEFINE_WINDOW_MAX(T, SUFFIX)                                                   \
    static ptrdiff_t cp_window_max_v_##SUFFIX(T *y, int64_t *yi, const T *x, ptrdiff_t n, \
                                              const ptrdiff_t *offs, const int64_t *tidx, \
                                              ptrdiff_t taps, T init, int64_t first,      \
                                              const int64_t *firsts, int64_t lstep, int nt) \
    {                                                                                     \
        CP_WMAX_DISPATCH(SUFFIX)                                                          \
    }                                                                                     \
    static ptrdiff_t cp_window_maxv_v_##SUFFIX(T *y, const T *x, ptrdiff_t n,             \
                                               const ptrdiff_t *offs, ptrdiff_t taps,     \
                                               T init)                                    \
    {                                                                                     \
        const int64_t *tidx = NULL, *firsts = NULL;                                       \
        int64_t *yi = NULL, first = 0, lstep = 0;                                         \
        int nt = 0;                                                                       \
        CP_WMAX_DISPATCH(SUFFIX)                                                          \
    }

CP_DEFINE_WINDOW_MAX(float, f32)

/* cp_clmax_run512_f32 where the CPU has AVX-512 (returns 1), else 0: the
 * caller pools those outputs one window at a time */
static int cp_clmax_run_f32(float *y, int64_t *yi, const float *x, ptrdiff_t m, ptrdiff_t nv,
                            ptrdiff_t ys, const ptrdiff_t *offs, const int32_t *rel,
                            ptrdiff_t taps, ptrdiff_t xs, int64_t first, int64_t is,
                            float init, const ptrdiff_t *pre, ptrdiff_t npre,
                            ptrdiff_t nbytes, int nt)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() == 2) {
        cp_clmax_run512_f32(y, yi, x, m, nv, ys, offs, rel, taps, xs, first, is, init, pre,
                            npre, nbytes, nt);
        return 1;
    }
#endif
    (void)y; (void)yi; (void)x; (void)m; (void)nv; (void)ys; (void)offs; (void)rel;
    (void)taps; (void)xs; (void)first; (void)is; (void)init; (void)pre; (void)npre;
    (void)nbytes; (void)nt;
    return 0;
}
CP_DEFINE_WINDOW_MAX(double, f64)

/* The vector part above, then the remaining lanes tap by tap. */
#define CP_DEFINE_WINDOW_TAIL(T, SUFFIX)                                                  \
    /* sums of windows, made averages as CP_AVG_DIVIDE says (mode -1: sums) */         \
    static void cp_window_add_##SUFFIX(T *y, const T *x, ptrdiff_t n,                     \
                                       const ptrdiff_t *offs, ptrdiff_t taps, int mode,   \
                                       double d1, double d2, double d3)                   \
    {                                                                                     \
        ptrdiff_t i0 = cp_window_add_v_##SUFFIX(y, x, n, offs, taps, mode, d1, d2, d3);   \
        ptrdiff_t i, t;                                                                   \
        const T t1 = (T)d1, t2 = (T)d2, t3 = (T)d3;                                       \
        for (i = i0; i < n; i++)                                                          \
            y[i] = 0;                                                                     \
        for (t = 0; t < taps; t++)                                                        \
            for (i = i0; i < n; i++)                                                      \
                y[i] = y[i] + x[offs[t] + i];                                             \
        for (i = i0; i < n; i++) {                                                        \
            T a = y[i];                                                                   \
            CP_AVG_DIVIDE(a)                                                              \
            y[i] = a;                                                                     \
        }                                                                                 \
    }                                                                                     \
    static void cp_window_maxv_##SUFFIX(T *y, const T *x, ptrdiff_t n,                    \
                                        const ptrdiff_t *offs, ptrdiff_t taps, T init)    \
    {                                                                                     \
        ptrdiff_t i0 = cp_window_maxv_v_##SUFFIX(y, x, n, offs, taps, init), i, t;        \
        for (i = i0; i < n; i++)                                                          \
            y[i] = init;                                                                  \
        for (t = 0; t < taps; t++)                                                        \
            for (i = i0; i < n; i++) {                                                    \
                T v = x[offs[t] + i], a = y[i];                                           \
                y[i] = ((v > a) | (v != v)) ? v : a;                                      \
            }                                                                             \
    }                                                                                     \
    /* lane i of tap t has index tidx[t] + lstep * i; a lane starts from      */        \
    /* index firsts[i] (or first, when firsts is NULL); nt: whole lines of    */        \
    /* the vector part may be written with non-temporal stores (fence after)  */        \
    static void cp_window_max_##SUFFIX(T *y, int64_t *yi, const T *x, ptrdiff_t n,        \
                                       const ptrdiff_t *offs, const int64_t *tidx,        \
                                       ptrdiff_t taps, T init, int64_t first,             \
                                       const int64_t *firsts, int64_t lstep, int nt)      \
    {                                                                                     \
        ptrdiff_t i0 = cp_window_max_v_##SUFFIX(y, yi, x, n, offs, tidx, taps, init,      \
                                                first, firsts, lstep, nt), i, t;          \
        for (i = i0; i < n; i++) {                                                        \
            y[i] = init;                                                                  \
            yi[i] = firsts ? firsts[i] : first;                                           \
        }                                                                                 \
        for (t = 0; t < taps; t++)                                                        \
            for (i = i0; i < n; i++) {                                                    \
                T v = x[offs[t] + i], a = y[i];                                           \
                int take = (v > a) | (v != v);                                            \
                y[i] = take ? v : a;                                                      \
                yi[i] = take ? tidx[t] + lstep * i : yi[i];                               \
            }                                                                             \
    }

CP_DEFINE_WINDOW(float, f32, int32_t, 16)
CP_DEFINE_WINDOW(double, f64, int64_t, 8)
CP_DEFINE_WINDOW_TAIL(float, f32)
CP_DEFINE_WINDOW_TAIL(double, f64)

/* Row lanes: channels-first planes pooled G = 64 / sizeof(T) at a time, one
 * plane a vector lane.  An input row of those planes is held transposed
 * (t[w*G + i] is column w of plane i), and an output row of sums or maxima
 * the same way (acc[o*G + i]); every lane runs its own plane's taps in
 * PyTorch's order, so the results are the plane-by-plane ones, bit for bit,
 * while G planes share each vector operation.  First the divisions that
 * make window sums averages: */
#if defined(__GNUC__) || defined(__clang__)
/* output o's G lanes divided (the quotient added to 0, as cp_finish_row) */
#define CP_ROWLANES_DIVIDE(T, SUFFIX)                                                     \
            VT q = CP_VLD(y + o * G + h);                                   \
            if (mode == 0) {                                                              \
                q = ((q / ta) / tb) / (T)w[o];                                            \
            } else if (mode == 1) {                                                       \
                const double dv = a * w[o];                                               \
                if (dv == 0)                                                              \
                    q = q * 0 + 0;      /* no divisor, no taps: the sum is +0.0 */        \
                else                                                                      \
                    q = 0 + q / (T)dv;                                                    \
            } else {                                                                      \
                q = 0 + q / tk;                                                           \
            }                                                                             \
            CP_VST(y + o * G + h, q);
#else
#define CP_ROWLANES_DIVIDE(T, SUFFIX)                                                     \
            for (ptrdiff_t i = 0; i < G; i++) {                                           \
                T *q = y + o * G + i;                                                     \
                if (mode == 0) {                                                          \
                    *q = ((*q / ta) / tb) / (T)w[o];                                      \
                } else if (mode == 1) {                                                   \
                    const double dv = a * w[o];                                           \
                    *q = dv == 0 ? (T)0 : 0 + *q / (T)dv;                                 \
                } else {                                                                  \
                    *q = 0 + *q / tk;                                                     \
                }                                                                         \
            }
#endif
/* cp_finish_row's divisions for a row of n outputs of G lanes each */
#if defined(__GNUC__) || defined(__clang__)
#define CP_ROWLANES_FINISH_BODY(T)                                                        \
    enum { G = 64 / sizeof(T) };                                                          \
    const T ta = (T)a, tb = (T)b, tk = (T)k;                                              \
    for (ptrdiff_t o = 0; o < n; o++)                                                     \
        for (ptrdiff_t h = 0; h < G; h += VN) {                                           \
            CP_ROWLANES_DIVIDE(T, SUFFIX)                                                 \
        }
#define CP_DEFINE_ROWLANES(T, SUFFIX, NAME)                                               \
    CP_VCLONES(T, void, , NAME,                                                           \
               (T *restrict y, ptrdiff_t n, int mode, double a, double b,                 \
                const double *restrict w, double k),                                      \
               (y, n, mode, a, b, w, k), CP_ROWLANES_FINISH_BODY)
#else
#define CP_DEFINE_ROWLANES(T, SUFFIX, NAME)                                               \
    static void NAME(T *restrict y, ptrdiff_t n, int mode, double a, double b,            \
                     const double *restrict w, double k)                                  \
    {                                                                                     \
        enum { G = 64 / sizeof(T) };                                                      \
        const T ta = (T)a, tb = (T)b, tk = (T)k;                                          \
        for (ptrdiff_t o = 0; o < n; o++) {                                               \
            CP_ROWLANES_DIVIDE(T, SUFFIX)                                                 \
        }                                                                                 \
    }
#endif

CP_DEFINE_ROWLANES(float, f32, cp_rowlanes_finish_f32_any)
CP_DEFINE_ROWLANES(double, f64, cp_rowlanes_finish_f64)

/* Row lanes, several rows at once: acc[o*G + i] += the sum over the rows
 * rows[0 .. nr) (transposed as above, in the window's order) of lane i's
 * taps start[o] + k*sw, k < count[o], in registers, four outputs' chains
 * side by side (over the taps all four have in a row, then each one's
 * last taps of that row: adaptive windows of 20 and 21 columns had gone one
 * chain at a time, and four took 0.94-0.95x the time of the (2, 64, 113,
 * 97) -> (7, 5) forward from the caches, Emerald Rapids); with first, from
 * +0.0.  Called with a window's rows in order (all at once, or one at a
 * time), each lane adds its plane's taps in the row-major order. */
#if defined(__GNUC__) || defined(__clang__)
#define CP_ROWLANES_SUMW_BODY(T, SUFFIX)                                                  \
    for (ptrdiff_t h = 0; h < G; h += VN) {   /* the G lanes a vector at a time */       \
        ptrdiff_t o = 0;                                                                  \
        while (o < n) {                                                                   \
            const ptrdiff_t c = count[o];                                                 \
            if (o + 4 <= n) {                                                             \
                /* the taps all four have side by side, then each window's */            \
                /* own last taps of the row: each chain in its order       */            \
                const ptrdiff_t c1 = count[o + 1], c2 = count[o + 2], c3 = count[o + 3]; \
                ptrdiff_t cm = c < c1 ? c : c1;                                           \
                cm = cm < c2 ? cm : c2;                                                   \
                cm = cm < c3 ? cm : c3;                                                   \
                VT a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                \
                if (!first) {                                                             \
                    a0 = CP_VLD(acc + o * G + h);                                         \
                    a1 = CP_VLD(acc + (o + 1) * G + h);                                   \
                    a2 = CP_VLD(acc + (o + 2) * G + h);                                   \
                    a3 = CP_VLD(acc + (o + 3) * G + h);                                   \
                }                                                                         \
                const ptrdiff_t s0 = start[o] * G + h, s1 = start[o + 1] * G + h;         \
                const ptrdiff_t s2 = start[o + 2] * G + h, s3 = start[o + 3] * G + h;     \
                for (ptrdiff_t r = 0; r < nr; r++) {                                      \
                    const T *t = rows[r];                                                 \
                    for (ptrdiff_t k = 0; k < cm; k++) {                                  \
                        a0 = a0 + CP_VLD(t + s0 + k * sw * G);                            \
                        a1 = a1 + CP_VLD(t + s1 + k * sw * G);                            \
                        a2 = a2 + CP_VLD(t + s2 + k * sw * G);                            \
                        a3 = a3 + CP_VLD(t + s3 + k * sw * G);                            \
                    }                                                                     \
                    for (ptrdiff_t k = cm; k < c; k++)                                    \
                        a0 = a0 + CP_VLD(t + s0 + k * sw * G);                            \
                    for (ptrdiff_t k = cm; k < c1; k++)                                   \
                        a1 = a1 + CP_VLD(t + s1 + k * sw * G);                            \
                    for (ptrdiff_t k = cm; k < c2; k++)                                   \
                        a2 = a2 + CP_VLD(t + s2 + k * sw * G);                            \
                    for (ptrdiff_t k = cm; k < c3; k++)                                   \
                        a3 = a3 + CP_VLD(t + s3 + k * sw * G);                            \
                }                                                                         \
                CP_VST(acc + o * G + h, a0);                                              \
                CP_VST(acc + (o + 1) * G + h, a1);                                        \
                CP_VST(acc + (o + 2) * G + h, a2);                                        \
                CP_VST(acc + (o + 3) * G + h, a3);                                        \
                o += 4;                                                                   \
                continue;                                                                 \
            }                                                                             \
            VT a = {0};                                                                   \
            if (!first)                                                                   \
                a = CP_VLD(acc + o * G + h);                                              \
            for (ptrdiff_t r = 0; r < nr; r++)                                            \
                for (ptrdiff_t k = 0; k < c; k++)                                         \
                    a = a + CP_VLD(rows[r] + (start[o] + k * sw) * G + h);                \
            CP_VST(acc + o * G + h, a);                                                   \
            o += 1;                                                                       \
        }                                                                                 \
    }
#else
#define CP_ROWLANES_SUMW_BODY(T, SUFFIX)                                                  \
        for (ptrdiff_t o = 0; o < n; o++)                                                 \
            for (ptrdiff_t i = 0; i < G; i++) {                                           \
                T a = first ? (T)0 : acc[o * G + i];                                      \
                for (ptrdiff_t r = 0; r < nr; r++)                                        \
                    for (ptrdiff_t k = 0; k < count[o]; k++)                              \
                        a = a + rows[r][(start[o] + k * sw) * G + i];                     \
                acc[o * G + i] = a;                                                       \
            }
#endif
#define CP_ROWLANES_SUMW_G(T)                                                             \
    enum { G = 64 / sizeof(T) };                                                          \
    CP_ROWLANES_SUMW_BODY(T, SUFFIX)
#define CP_DEFINE_ROWLANES_SUMW(T, SUFFIX)                                                \
    CP_VCLONES(T, void, , cp_rowlanes_sumw_##SUFFIX,                                      \
               (T *restrict acc, T *const *rows, ptrdiff_t nr, ptrdiff_t n,               \
                const int64_t *start, const int64_t *count, ptrdiff_t sw, int first),     \
               (acc, rows, nr, n, start, count, sw, first), CP_ROWLANES_SUMW_G)
CP_DEFINE_ROWLANES_SUMW(float, f32)
CP_DEFINE_ROWLANES_SUMW(double, f64)

/* Row lanes for the average backward: rows[r] for r < nr are the output
 * rows of scaled gradients that read the input row at hand, in output order,
 * each of G planes transposed (rows[r][o*G + i]); input column w adds, in
 * lane i, rows[r][outs[j]*G + i] for j in [ptr[w], ptr[w+1]) (the W inverse
 * table: the outputs reading w, in order) for each r in turn, from +0.0, in
 * registers: each lane in the order of PyTorch's scatter. */
#if defined(__GNUC__) || defined(__clang__)
#define CP_ROWLANES_GATHERW_BODY(T, SUFFIX)                                               \
        for (ptrdiff_t w = 0; w < W; w++)                                                 \
            for (ptrdiff_t h = 0; h < G; h += VN) {                                       \
                VT a = {0};                                                               \
                for (ptrdiff_t r = 0; r < nr; r++) {                                      \
                    const T *t = rows[r] + h;                                             \
                    for (int64_t j = ptr[w]; j < ptr[w + 1]; j++)                         \
                        a = a + CP_VLD(t + outs[j] * G);                                  \
                }                                                                         \
                CP_VST(acc + w * G + h, a);                                               \
            }
#else
#define CP_ROWLANES_GATHERW_BODY(T, SUFFIX)                                               \
        for (ptrdiff_t w = 0; w < W; w++)                                                 \
            for (ptrdiff_t i = 0; i < G; i++) {                                           \
                T a = 0;                                                                  \
                for (ptrdiff_t r = 0; r < nr; r++)                                        \
                    for (int64_t j = ptr[w]; j < ptr[w + 1]; j++)                         \
                        a = a + rows[r][outs[j] * G + i];                                 \
                acc[w * G + i] = a;                                                       \
            }
#endif
#define CP_ROWLANES_GATHERW_G(T)                                                          \
    enum { G = 64 / sizeof(T) };                                                          \
    CP_ROWLANES_GATHERW_BODY(T, SUFFIX)
#define CP_DEFINE_ROWLANES_GATHERW(T, SUFFIX)                                             \
    CP_VCLONES(T, void, , cp_rowlanes_gatherw_##SUFFIX,                                   \
               (T *restrict acc, T *const *rows, ptrdiff_t nr, ptrdiff_t W,               \
                const int64_t *ptr, const int64_t *outs),                                 \
               (acc, rows, nr, W, ptr, outs), CP_ROWLANES_GATHERW_G)
CP_DEFINE_ROWLANES_GATHERW(float, f32)
CP_DEFINE_ROWLANES_GATHERW(double, f64)

/* Row lanes for max: the running max of each output's taps in order (a
 * lane takes a tap when it is greater or NaN, as every max loop here), m
 * and mi laid out as acc above; mi (NULL: values only) gets the winning
 * tap's position in the plane, rowpos + column (int32 lanes for float,
 * int64 for double).  With first (a window's first row) a lane starts from
 * init at the window's first tap, or at -1 when the window has no columns.
 * AVX-512F and AVX2 versions (chosen as cp_window_isa says), else plain. */
#define CP_DEFINE_RLMAX_PLAIN(T, SUFFIX, IT)                                              \
    static void cp_rlmax_plain_##SUFFIX(T *restrict m, IT *restrict mi, const T *restrict t,\
                                        ptrdiff_t n, const int64_t *start,                \
                                        const int64_t *count, ptrdiff_t sw, int64_t rowpos,\
                                        int first, T init)                                \
    {                                                                                     \
        enum { G = 64 / sizeof(T) };                                                      \
        for (ptrdiff_t o = 0; o < n; o++)                                                 \
            for (ptrdiff_t i = 0; i < G; i++) {                                           \
                T a = first ? init : m[o * G + i];                                        \
                IT ia = first ? (IT)(count[o] > 0 ? rowpos + start[o] : -1)               \
                              : (mi ? mi[o * G + i] : 0);                                 \
                for (ptrdiff_t k = 0; k < count[o]; k++) {                                \
                    T v = t[(start[o] + k * sw) * G + i];                                 \
                    int take = (v > a) | (v != v);                                        \
                    a = take ? v : a;                                                     \
                    ia = take ? (IT)(rowpos + start[o] + k * sw) : ia;                    \
                }                                                                         \
                m[o * G + i] = a;                                                         \
                if (mi)                                                                   \
                    mi[o * G + i] = ia;                                                   \
            }                                                                             \
    }
CP_DEFINE_RLMAX_PLAIN(float, f32, int32_t)
CP_DEFINE_RLMAX_PLAIN(double, f64, int64_t)

#ifdef CP_HAVE_WINDOW_MAX
#define CP_DEFINE_RLMAX512(T, SUFFIX, IT, MASK, V, P, EPI)                                \
    __attribute__((target("avx512f,avx512dq"))) static void                                        \
    cp_rlmax512_##SUFFIX(T *m, IT *mi, const T *t, ptrdiff_t n, const int64_t *start,     \
                         const int64_t *count, ptrdiff_t sw, int64_t rowpos, int first,   \
                         T init)                                                          \
    {                                                                                     \
        enum { G = 64 / sizeof(T) };                                                      \
        for (ptrdiff_t o = 0; o < n; o++) {                                               \
            const T *p = t + start[o] * G;                                                \
            V a = first ? _mm512_set1_p##P(init) : _mm512_loadu_p##P(m + o * G);          \
            __m512i ia = _mm512_set1_##EPI(-1);                                           \
            if (first && count[o] > 0)                                                    \
                ia = _mm512_set1_##EPI((IT)(rowpos + start[o]));                          \
            else if (!first && mi)                                                        \
                ia = _mm512_loadu_si512(mi + o * G);                                      \
            for (ptrdiff_t k = 0; k < count[o]; k++) {                                    \
                V v = _mm512_loadu_p##P(p + k * sw * G);                                  \
                MASK take = _mm512_cmp_p##P##_mask(v, a, _CMP_GT_OQ) |                    \
                            _mm512_cmp_p##P##_mask(v, v, _CMP_UNORD_Q);                   \
                a = _mm512_mask_mov_p##P(a, take, v);                                     \
                ia = _mm512_mask_mov_##EPI(ia, take,                                      \
                                           _mm512_set1_##EPI((IT)(rowpos + start[o] + k * sw)));\
            }                                                                             \
            _mm512_storeu_p##P(m + o * G, a);                                             \
            if (mi)                                                                       \
                _mm512_storeu_si512(mi + o * G, ia);                                      \
        }                                                                                 \
    }
#define CP_DEFINE_RLMAX256(T, SUFFIX, IT, V, P, SET1)                                     \
    __attribute__((target("avx2"))) static void                                           \
    cp_rlmax256_##SUFFIX(T *m, IT *mi, const T *t, ptrdiff_t n, const int64_t *start,     \
                         const int64_t *count, ptrdiff_t sw, int64_t rowpos, int first,   \
                         T init)                                                          \
    {                                                                                     \
        enum { G = 64 / sizeof(T), L = 32 / sizeof(T) };                                  \
        for (ptrdiff_t o = 0; o < n; o++)                                                 \
            for (ptrdiff_t h = 0; h < G; h += L) {                                        \
                const T *p = t + start[o] * G + h;                                        \
                V a = first ? _mm256_set1_p##P(init) : _mm256_loadu_p##P(m + o * G + h);  \
                V ia = _mm256_castsi256_p##P(SET1(-1));                                   \
                if (first && count[o] > 0)                                                \
                    ia = _mm256_castsi256_p##P(SET1((IT)(rowpos + start[o])));            \
                else if (!first && mi)                                                    \
                    ia = _mm256_loadu_p##P((const T *)(mi + o * G + h));                  \
                for (ptrdiff_t k = 0; k < count[o]; k++) {                                \
                    V v = _mm256_loadu_p##P(p + k * sw * G);                              \
                    V take = _mm256_or_p##P(_mm256_cmp_p##P(v, a, _CMP_GT_OQ),            \
                                            _mm256_cmp_p##P(v, v, _CMP_UNORD_Q));         \
                    a = _mm256_blendv_p##P(a, v, take);                                   \
                    ia = _mm256_blendv_p##P(ia, _mm256_castsi256_p##P(                    \
                                                SET1((IT)(rowpos + start[o] + k * sw))), take);\
                }                                                                         \
                _mm256_storeu_p##P(m + o * G + h, a);                                     \
                if (mi)                                                                   \
                    _mm256_storeu_p##P((T *)(mi + o * G + h), ia);                        \
            }                                                                             \
    }
CP_DEFINE_RLMAX512(float, f32, int32_t, __mmask16, __m512, s, epi32)
CP_DEFINE_RLMAX512(double, f64, int64_t, __mmask8, __m512d, d, epi64)
CP_DEFINE_RLMAX256(float, f32, int32_t, __m256, s, _mm256_set1_epi32)
CP_DEFINE_RLMAX256(double, f64, int64_t, __m256d, d, _mm256_set1_epi64x)
#define CP_RLMAX_DISPATCH(SUFFIX)                                                         \
    switch (cp_window_isa()) {                                                            \
    case 2: cp_rlmax512_##SUFFIX(m, mi, t, n, start, count, sw, rowpos, first, init); return;\
    case 1: cp_rlmax256_##SUFFIX(m, mi, t, n, start, count, sw, rowpos, first, init); return;\
    default: break;                                                                       \
    }
#else
#define CP_RLMAX_DISPATCH(SUFFIX)
#endif
#define CP_DEFINE_ROWLANES_MAX(T, SUFFIX, IT)                                             \
    static void cp_rowlanes_max_##SUFFIX(T *m, IT *mi, const T *t, ptrdiff_t n,           \
                                         const int64_t *start, const int64_t *count,      \
                                         ptrdiff_t sw, int64_t rowpos, int first, T init) \
    {                                                                                     \
        CP_RLMAX_DISPATCH(SUFFIX)                                                         \
        cp_rlmax_plain_##SUFFIX(m, mi, t, n, start, count, sw, rowpos, first, init);      \
    }
CP_DEFINE_ROWLANES_MAX(float, f32, int32_t)
CP_DEFINE_ROWLANES_MAX(double, f64, int64_t)

/* Values-only max pooling of integers, which is exact in any order: a
 * window's max is the max over its rows of the max over its columns.  So an
 * output row's input rows are first reduced elementwise into one row b
 * (vector max along the contiguous axis, cp_rowmax), then the columns
 * (cp_colmax: the max of the widest windows' taps at every column of b, in
 * shifted vector steps into e, then picked per output; narrower windows at
 * the edges scanned directly, init for a window with no columns).  Types by code: 0 int8, 1 uint8, 2 int16, 3 uint16, 4 int32,
 * 5 uint32, 6 int64, 7 uint64. */
/* y[o*C + c] = r[2*o*C + c] (o < n, c < C): every other pixel of C bytes,
 * the picks of channels-last 1-byte max windows 2 apart; with r2 (not
 * NULL), the larger of that and r2[2*o*C + c] (windows of two taps, r2 at
 * the second; sgn: the bytes are int8).  AVX-512 VBMI: 64 / C pixels a
 * vector, one two-source byte permute (vpermt2b) of the bytes they need,
 * loads and stores masked to those bytes.  Returns the pixels done (0
 * without VBMI, or with cp_window_isa below 2: see cp_compact2_ok). */
#ifdef CP_HAVE_WINDOW_MAX
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vbmi"))) static ptrdiff_t
cp_compact2_vbmi(uint8_t *y, const uint8_t *r, const uint8_t *r2, ptrdiff_t n, ptrdiff_t C,
                 int sgn)
{
    const ptrdiff_t P = 64 / C;                 /* pixels a vector */
    /* byte q of a vector comes from byte 2*(q/C)*C + q%C = q + (q/C)*C, q/C by
       a multiply (exact for q < 64, C <= 64), in 16-bit lanes */
    const __m512i q0 = _mm512_set_epi16(31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19,
                                        18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
                                        4, 3, 2, 1, 0);
    const __m512i q1 = _mm512_add_epi16(q0, _mm512_set1_epi16(32));
    const __m512i inv = _mm512_set1_epi16((short)((65536 + C - 1) / C));
    const __m512i c16 = _mm512_set1_epi16((short)C);
    __m512i t0 = _mm512_add_epi16(q0, _mm512_mullo_epi16(_mm512_mulhi_epu16(q0, inv), c16));
    __m512i t1 = _mm512_add_epi16(q1, _mm512_mullo_epi16(_mm512_mulhi_epu16(q1, inv), c16));
    const __m512i idx = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi16_epi8(t0)),
                                           _mm512_cvtepi16_epi8(t1), 1);
    for (ptrdiff_t o = 0; o < n; o += P) {
        ptrdiff_t m = n - o < P ? n - o : P;
        ptrdiff_t need = 2 * m * C - C, out = m * C;            /* bytes read, written */
        __mmask64 klo = need >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << need) - 1);
        __mmask64 khi = need <= 64 ? 0 : (((__mmask64)1 << (need - 64)) - 1);
        __mmask64 ko = out >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << out) - 1);
        const uint8_t *src = r + 2 * o * C;
        __m512i a = CP_LD64B(klo, src);
        __m512i b = CP_LD64B(khi, src + 64);
        __m512i v = _mm512_permutex2var_epi8(a, idx, b);
        if (r2) {
            const uint8_t *src2 = r2 + 2 * o * C;
            __m512i a2 = CP_LD64B(klo, src2);
            __m512i b2 = CP_LD64B(khi, src2 + 64);
            __m512i v2 = _mm512_permutex2var_epi8(a2, idx, b2);
            v = sgn ? _mm512_max_epi8(v, v2) : _mm512_max_epu8(v, v2);
        }
        CP_ST64B(y + o * C, ko, v);
    }
    return n;
}

static int cp_vbmi = -1;

/* Whether cp_compact2_bytes does all n pixels of C bytes (else none). */
static int cp_compact2_ok(ptrdiff_t C)
{
    if (cp_vbmi < 0)
        cp_vbmi = __builtin_cpu_supports("avx512vbmi")
                  && __builtin_cpu_supports("avx512bw");
    return cp_vbmi && cp_window_isa() >= 2 && C >= 2 && C <= 64;
}

static ptrdiff_t cp_compact2_bytes(uint8_t *y, const uint8_t *r, const uint8_t *r2, ptrdiff_t n,
                                   ptrdiff_t C, int sgn)
{
    return cp_compact2_ok(C) ? cp_compact2_vbmi(y, r, r2, n, C, sgn) : 0;
}
#else
static int cp_compact2_ok(ptrdiff_t C)
{
    (void)C;
    return 0;
}

static ptrdiff_t cp_compact2_bytes(uint8_t *y, const uint8_t *r, const uint8_t *r2, ptrdiff_t n,
                                   ptrdiff_t C, int sgn)
{
    (void)y; (void)r; (void)r2; (void)n; (void)C; (void)sgn;
    return 0;
}
#endif

/* Channels-first 1-byte max windows of 2 adjacent columns starting 2 apart,
 * over nr rows: y[o] = the max over r < nr of rows[r][2o] and rows[r][2o + 1]
 * (o < n; sgn: int8, else uint8), read once from the rows (no row buffer).
 * AVX-512BW, 64 outputs a step: the rows' 128 bytes reduced by vector max,
 * each byte pair by the max of its low byte and the high byte shifted
 * down, then truncated to bytes (vpmovwb).  Returns 0 (nothing done)
 * without AVX-512BW or with cp_window_isa below 2, else 1. */
#ifdef CP_HAVE_WINDOW_MAX
static inline __mmask64 cp_mask64(ptrdiff_t m)   /* the low m bits (m <= 0: none) */
{
    return m >= 64 ? ~(__mmask64)0 : m <= 0 ? 0 : (((__mmask64)1 << m) - 1);
}

__attribute__((target("avx512f,avx512dq,avx512bw"))) static void
cp_pair_rows_bw(uint8_t *y, const uint8_t *const *rows, ptrdiff_t nr, ptrdiff_t n, int sgn)
{
    for (ptrdiff_t o = 0; o < n; o += 64) {
        const ptrdiff_t m = n - o < 64 ? n - o : 64;        /* outputs this step */
        const __mmask64 k0 = cp_mask64(2 * m), k1 = cp_mask64(2 * m - 64);
        __m512i a = CP_LD64B(k0, rows[0] + 2 * o);
        __m512i b = CP_LD64B(k1, rows[0] + 2 * o + 64);
        for (ptrdiff_t r = 1; r < nr; r++) {
            __m512i a2 = CP_LD64B(k0, rows[r] + 2 * o);
            __m512i b2 = CP_LD64B(k1, rows[r] + 2 * o + 64);
            a = sgn ? _mm512_max_epi8(a, a2) : _mm512_max_epu8(a, a2);
            b = sgn ? _mm512_max_epi8(b, b2) : _mm512_max_epu8(b, b2);
        }
        const __m512i ha = _mm512_srli_epi16(a, 8), hb = _mm512_srli_epi16(b, 8);
        a = sgn ? _mm512_max_epi8(a, ha) : _mm512_max_epu8(a, ha);
        b = sgn ? _mm512_max_epi8(b, hb) : _mm512_max_epu8(b, hb);
        const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi16_epi8(a)),
                                             _mm512_cvtepi16_epi8(b), 1);
        CP_ST64B(y + o, cp_mask64(m), v);
    }
}

static int cp_bw = -1;

static int cp_pair_rows_bytes(uint8_t *y, const uint8_t *const *rows, ptrdiff_t nr, ptrdiff_t n,
                              int sgn)
{
    if (cp_bw < 0)
        cp_bw = __builtin_cpu_supports("avx512bw");
    if (!cp_bw || cp_window_isa() < 2)
        return 0;
    cp_pair_rows_bw(y, rows, nr, n, sgn);
    return 1;
}
#else
static int cp_pair_rows_bytes(uint8_t *y, const uint8_t *const *rows, ptrdiff_t nr, ptrdiff_t n,
                              int sgn)
{
    (void)y; (void)rows; (void)nr; (void)n; (void)sgn;
    return 0;
}
#endif

#define CP_DEFINE_IMAX(T, SUFFIX)                                                         \
    /* b = the max of r, r2 (if not NULL) and, unless first, b */                      \
    CP_CLONES static void cp_rowmax_##SUFFIX(T *restrict b, const T *restrict r,          \
                                             const T *restrict r2, ptrdiff_t n, int first) \
    {                                                                                     \
        if (first && r2 == NULL) {                                                        \
            memcpy(b, r, (size_t)n * sizeof(T));                                          \
            return;                                                                       \
        }                                                                                 \
        if (first) {                                                                      \
            for (ptrdiff_t i = 0; i < n; i++)                                             \
                b[i] = r2[i] > r[i] ? r2[i] : r[i];                                       \
            return;                                                                       \
        }                                                                                 \
        for (ptrdiff_t i = 0; i < n; i++)                                                 \
            b[i] = r[i] > b[i] ? r[i] : b[i];                                             \
        if (r2)                                                                           \
            for (ptrdiff_t i = 0; i < n; i++)                                             \
                b[i] = r2[i] > b[i] ? r2[i] : b[i];                                       \
    }                                                                                     \
    static T cp_scanmax_##SUFFIX(const T *p, ptrdiff_t n, ptrdiff_t step, T init)         \
    {                                                                                     \
        for (ptrdiff_t t = 0; t < n; t++)                                                 \
            init = p[t * step] > init ? p[t * step] : init;                               \
        return init;                                                                      \
    }                                                                                     \
    CP_CLONES static void cp_colmax_##SUFFIX(T *restrict y, const T *restrict b,          \
                                             T *restrict e, ptrdiff_t W, ptrdiff_t n,     \
                                             ptrdiff_t C, const int64_t *start,           \
                                             const int64_t *count, ptrdiff_t k,           \
                                             ptrdiff_t sw, T init, ptrdiff_t ulo,         \
                                             ptrdiff_t uhi)                               \
    {                                                                                     \
        ptrdiff_t L, j, o, c, t;                                                          \
        /* pairs of taps 2 apart (channels-first, or 1-byte channels-last by byte        \
           permutes): each output's two taps straight from b, no e */                   \
        const int pair = k == 2 && uhi - ulo >= 16                                        \
                         && (C == 1 || (sizeof(T) == 1 && C < 8 && cp_compact2_ok(C)));   \
        L = (W - (k - 1) * sw) * C;                                                       \
        if (k >= 2 && L > 0 && !pair) {                                                   \
            /* e[j]: the max of k taps from b[j], shifted vector steps */                 \
            for (j = 0; j < L; j++)                                                       \
                e[j] = b[j + sw * C] > b[j] ? b[j + sw * C] : b[j];                       \
            for (t = 2; t < k; t++)                                                       \
                for (j = 0; j < L; j++)                                                   \
                    e[j] = b[j + t * sw * C] > e[j] ? b[j + t * sw * C] : e[j];           \
        }                                                                                 \
        if (C == 1) {            /* a tight loop of picks for the full windows */         \
            const T *r = k >= 2 ? e : b;                                                  \
            const ptrdiff_t lo = ulo, hi = uhi;                                           \
            if (k > 0 && hi - lo >= 16) {   /* windows 2 apart: a strided vector copy */  \
                const T *r0 = (pair ? b : r) + start[lo];                                 \
                T *y0 = y + lo;                                                           \
                if (pair)                                                                 \
                    for (o = 0; o < hi - lo; o++)                                         \
                        y0[o] = r0[2 * o + sw] > r0[2 * o] ? r0[2 * o + sw] : r0[2 * o];  \
                else                                                                      \
                    for (o = 0; o < hi - lo; o++)                                         \
                        y0[o] = r0[2 * o];                                                \
                for (o = 0; o < n; o++) {   /* the windows before and after */            \
                    if (o == lo)                                                          \
                        o = hi;                                                           \
                    if (o < n)                                                            \
                        y[o] = count[o] == k && !pair                                     \
                             ? r[start[o]]                                                \
                             : cp_scanmax_##SUFFIX(b + start[o], count[o], sw, init);     \
                }                                                                         \
                return;                                                                   \
            }                                                                             \
            for (o = 0; o < n; o++)                                                       \
                y[o] = count[o] == k && k > 0 ? r[start[o]]                               \
                                              : cp_scanmax_##SUFFIX(b + start[o], count[o], sw, init);\
            return;                                                                       \
        }                                                                                 \
        ptrdiff_t fast_lo = 0, fast_hi = 0;                                               \
        if (k > 0 && C * (ptrdiff_t)sizeof(T) < 8 && uhi - ulo >= 16) {                   \
            /* windows 2 apart, outputs of under 8 bytes: one 8-byte copy each,           \
               its spill overwritten by the next (and kept inside [ulo, uhi)) */          \
            const T *r = k >= 2 ? e : b;                                                  \
            const ptrdiff_t guard = (8 + C * (ptrdiff_t)sizeof(T) - 1) / (C * (ptrdiff_t)sizeof(T));\
            fast_lo = ulo;                                                                \
            fast_hi = uhi;                                                                \
            o = fast_lo;                                                                  \
            if (sizeof(T) == 1)         /* byte permutes (VBMI), else 8-byte copies */    \
                o += pair ? cp_compact2_bytes((uint8_t *)(y + o * C),                     \
                                              (const uint8_t *)(b + start[o] * C),        \
                                              (const uint8_t *)(b + (start[o] + sw) * C), \
                                              fast_hi - o, C, (T)-1 < 0)                  \
                          : cp_compact2_bytes((uint8_t *)(y + o * C),                     \
                                              (const uint8_t *)(r + start[o] * C), NULL,  \
                                              fast_hi - o, C, 0);                         \
            if (o < fast_hi) {                                                            \
                fast_hi = uhi - guard;                                                    \
                for (; o < fast_hi; o++)                                                  \
                    memcpy(y + o * C, r + start[o] * C, 8);                               \
            }                                                                             \
        }                                                                                 \
        for (o = 0; o < n; o++) {                                                         \
            if (o == fast_lo && fast_hi > fast_lo)                                        \
                o = fast_hi;                                                              \
            if (o >= n)                                                                   \
                break;                                                                    \
            T *q = y + o * C;                                                             \
            const T *p = b + start[o] * C;                                                \
            if (count[o] == k && k > 0 && !pair) {                                        \
                const T *r = (k >= 2 ? e : b) + start[o] * C;                             \
                switch (C) {       /* (fixed sizes: inline copies, not calls) */          \
                case 1: q[0] = r[0]; break;                                               \
                case 2: memcpy(q, r, 2 * sizeof(T)); break;                               \
                case 3: memcpy(q, r, 3 * sizeof(T)); break;                               \
                case 4: memcpy(q, r, 4 * sizeof(T)); break;                               \
                default: memcpy(q, r, (size_t)C * sizeof(T));                             \
                }                                                                         \
                continue;                                                                 \
            }                                                                             \
            for (c = 0; c < C; c++)                                                       \
                q[c] = init;                                                              \
            for (t = 0; t < count[o]; t++)                                                \
                for (c = 0; c < C; c++)                                                   \
                    q[c] = p[t * sw * C + c] > q[c] ? p[t * sw * C + c] : q[c];           \
        }                                                                                 \
    }

CP_DEFINE_IMAX(int8_t, i8)
CP_DEFINE_IMAX(uint8_t, u8)
CP_DEFINE_IMAX(int16_t, i16)
CP_DEFINE_IMAX(uint16_t, u16)
CP_DEFINE_IMAX(int32_t, i32)
CP_DEFINE_IMAX(uint32_t, u32)
CP_DEFINE_IMAX(int64_t, i64)
CP_DEFINE_IMAX(uint64_t, u64)

/* A channels-last input row of the average backward, its W columns of C
 * lanes: column w sums, from +0.0 and in output order, the scaled
 * gradients of outputs ow[j] (pw[w] <= j < pw[w + 1]) of each of the nr
 * output rows at ring + slot[r] (the order of PyTorch's scatter, so its
 * bits).  from_first: no scaled gradient is -0.0 (each is 0 + g / d), so
 * that the sums of whole 64-lane steps start from their first term (+0.0 +
 * t is t), one add fewer a column.  AVX-512F: 64 lanes a step in four accumulators; returns 0 without
 * it (cp_window_isa below 2).  nt: with gr on a line and C a multiple of 16,
 * written with non-temporal stores (the caller fences): k=3 s=1 of 128
 * channels 0.62-0.66x the time, where each line was read before written. */
#ifdef CP_HAVE_WINDOW_MAX
__attribute__((target("avx512f,avx512dq"))) static int
cp_cl_gather_row512_f32(float *gr, const float *ring, const ptrdiff_t *slot, ptrdiff_t nr,
                        ptrdiff_t W, ptrdiff_t C, const int64_t *pw, const int64_t *ow,
                        int nt, int from_first)
{
    nt = nt && ((uintptr_t)gr & 63) == 0 && C % 16 == 0;
    for (ptrdiff_t w = 0; w < W; w++, gr += C) {
        const int64_t j0 = pw[w], j1 = pw[w + 1];
        ptrdiff_t c = 0;
        for (; c + 64 <= C; c += 64) {
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            ptrdiff_t r = 0;
            int64_t j = j0;
            if (from_first && nr > 0 && j1 > j0) {
                const float *p = ring + slot[0] + ow[j0] * C + c;
                a0 = _mm512_loadu_ps(p);
                a1 = _mm512_loadu_ps(p + 16);
                a2 = _mm512_loadu_ps(p + 32);
                a3 = _mm512_loadu_ps(p + 48);
                j++;
            }
            for (; r < nr; r++, j = j0)
                for (; j < j1; j++) {
                    const float *p = ring + slot[r] + ow[j] * C + c;
                    a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p));
                    a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + 16));
                    a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + 32));
                    a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + 48));
                }
            if (nt) {
                _mm512_stream_ps(gr + c, a0);
                _mm512_stream_ps(gr + c + 16, a1);
                _mm512_stream_ps(gr + c + 32, a2);
                _mm512_stream_ps(gr + c + 48, a3);
            } else {
                _mm512_storeu_ps(gr + c, a0);
                _mm512_storeu_ps(gr + c + 16, a1);
                _mm512_storeu_ps(gr + c + 32, a2);
                _mm512_storeu_ps(gr + c + 48, a3);
            }
        }
        for (; c < C; c += 16) {
            __mmask16 k = (__mmask16)(C - c >= 16 ? 0xFFFF : (1u << (C - c)) - 1);
            __m512 a0 = _mm512_setzero_ps();
            for (ptrdiff_t r = 0; r < nr; r++)
                for (int64_t j = j0; j < j1; j++)
                    a0 = _mm512_add_ps(a0, CP_LD16(k, ring + slot[r] + ow[j] * C + c));
            if (nt)
                _mm512_stream_ps(gr + c, a0);
            else
                CP_ST16(gr + c, k, a0);
        }
    }
    return 1;
}

static int cp_cl_gather_row_f32(float *gr, const float *ring, const ptrdiff_t *slot,
                                ptrdiff_t nr, ptrdiff_t W, ptrdiff_t C, const int64_t *pw,
                                const int64_t *ow, int nt, int from_first)
{
    if (cp_window_isa() < 2)
        return 0;
    return cp_cl_gather_row512_f32(gr, ring, slot, nr, W, C, pw, ow, nt, from_first);
}
#else
static int cp_cl_gather_row_f32(float *gr, const float *ring, const ptrdiff_t *slot,
                                ptrdiff_t nr, ptrdiff_t W, ptrdiff_t C, const int64_t *pw,
                                const int64_t *ow, int nt, int from_first)
{
    (void)gr; (void)ring; (void)slot; (void)nr; (void)W; (void)C; (void)pw; (void)ow;
    (void)nt; (void)from_first;
    return 0;
}
#endif

#ifdef CP_HAVE_WINDOW_MAX
/* (v, vi) taken into (best, bi) where greater or NaN: PyTorch's max step */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_take16(__m512 *best, __m512i *bi, __m512 v, __m512i vi)
{
    __mmask16 take = _mm512_cmp_ps_mask(v, *best, _CMP_GT_OQ) |
                     _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    *best = _mm512_mask_mov_ps(*best, take, v);
    *bi = _mm512_mask_mov_epi32(*bi, take, vi);
}

/* the lanes of best at y, and of bi widened to int64 at yi (if not NULL);
 * nt: whole aligned lines with non-temporal stores (the caller fences) */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_store16_max(float *y, int64_t *yi, __mmask16 lanes, __m512 best, __m512i bi, int nt)
{
    nt = nt && lanes == 0xFFFF;
    if (nt && ((uintptr_t)y & 63) == 0)
        _mm512_stream_ps(y, best);
    else
        CP_ST16(y, lanes, best);
    if (yi) {
        __m512i lo = _mm512_cvtepi32_epi64(_mm512_castsi512_si256(bi));
        __m512i hi = _mm512_cvtepi32_epi64(_mm512_extracti64x4_epi64(bi, 1));
        if (nt && ((uintptr_t)yi & 63) == 0) {
            _mm512_stream_si512((void *)yi, lo);
            _mm512_stream_si512((void *)(yi + 8), hi);
        } else {
            CP_ST8Q(yi, lanes & 0xFF, lo);
            CP_ST8Q(yi + 8, lanes >> 8, hi);
        }
    }
}
#endif

/* Channels-first float32 max of small planes whose windows all have the
 * same taps (no window clipped by an edge): output o of a plane reads
 * base[o] + toff[t], t < T in PyTorch's order (toff[0] = 0), and takes each
 * tap that is greater or NaN, so values and indices (base[o] + toff[t], the
 * flat index in the plane) are PyTorch's bits.  AVX-512F: 16 outputs a
 * vector, one gather a tap; planes [p0, p1) of S inputs and OS outputs, in
 * groups of G planes (the last of p1 - p0 may be short) whose outputs are one run
 * of vectors: base covers the group (base[q*OS + o] = q*S + the plane's
 * base[o]), poff[q*OS + o] = q*S turns a tap's offset back into its plane's
 * index, and a G that makes G * OS a multiple of 16 leaves no lane idle. */
#ifdef CP_HAVE_WINDOW_MAX
__attribute__((target("avx512f,avx512dq"))) static void
cp_fmax_gather_f32(float *y, int64_t *yi, const float *x, ptrdiff_t p0, ptrdiff_t p1,
                   ptrdiff_t S, ptrdiff_t OS, const int32_t *base, const int32_t *poff,
                   ptrdiff_t G, const int32_t *toff, ptrdiff_t T, int nt)
{
    for (ptrdiff_t p = p0; p < p1; p += G) {
        const float *xp = x + p * S;
        float *yp = y + p * OS;
        int64_t *ip = yi ? yi + p * OS : NULL;
        ptrdiff_t n = (p1 - p < G ? p1 - p : G) * OS;
        for (ptrdiff_t o = 0; o < n; o += 16) {
            __mmask16 lanes = (__mmask16)(n - o >= 16 ? 0xFFFF : (1u << (n - o)) - 1);
            __m512i b = CP_LD16I(lanes, base + o);
            __m512 best = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, b, xp, 4);
            __m512i bi = b;
            for (ptrdiff_t t = 1; t < T; t++) {
                __m512i vi = _mm512_add_epi32(b, _mm512_set1_epi32(toff[t]));
                cp_take16(&best, &bi,
                          _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, vi, xp, 4), vi);
            }
            if (ip)
                bi = _mm512_sub_epi32(bi, CP_LD16I(lanes, poff + o));
            cp_store16_max(yp + o, ip ? ip + o : NULL, lanes, best, bi, nt);
        }
    }
    if (nt)
        _mm_sfence();
}
#else
static void cp_fmax_gather_f32(float *y, int64_t *yi, const float *x, ptrdiff_t p0,
                               ptrdiff_t p1, ptrdiff_t S, ptrdiff_t OS, const int32_t *base,
                               const int32_t *poff, ptrdiff_t G, const int32_t *toff,
                               ptrdiff_t T, int nt)
{
    (void)y; (void)yi; (void)x; (void)p0; (void)p1; (void)S; (void)OS; (void)base;
    (void)poff; (void)G; (void)toff; (void)T; (void)nt;
}
#endif

/* Channels-first float32 max windows of kw <= 4 columns starting 2 apart
 * (max pools of stride 2 along W, adaptive halvings), straight from the
 * rows, no transposes.  A window's taps are reduced row by row: first each
 * row's columns (16 outputs a vector: two loads of 32 columns split into
 * even and odd columns give taps 0 and 1, two more at +2 columns taps 2 and
 * 3), then the rows in order.  Every step takes the later taps where they are
 * greater or NaN: over taps in PyTorch's order (row by row, column by
 * column) that is PyTorch's scan, and taking the later of two runs of taps
 * on that rule picks the same tap as the scan over both, so a row's result
 * can be kept for the next output row: values and indices are PyTorch's
 * bits. */

/* One output tap by tap in PyTorch's order: columns c0 .. c0 + cnt - 1 of
 * the nr rows (rows[r] at flat offset roff[r] in the plane). */
static void cp_fmax_one_f32(float *y, int64_t *yi, const float *const *rows,
                            const ptrdiff_t *roff, ptrdiff_t nr, ptrdiff_t c0, ptrdiff_t cnt)
{
    float m = rows[0][c0];
    int64_t mi = (int64_t)roff[0] + c0;
    for (ptrdiff_t r = 0; r < nr; r++)
        for (ptrdiff_t c = c0; c < c0 + cnt; c++) {
            float v = rows[r][c];
            int take = (v > m) | (v != v);          /* (no branch: taps are random) */
            m = take ? v : m;
            mi = take ? (int64_t)roff[r] + c : mi;
        }
    *y = m;
    if (yi)
        *yi = mi;
}

/* One window's sum from +0, tap by tap in PyTorch's order. */
static float cp_fsum_one_f32(const float *const *rows, ptrdiff_t nr, ptrdiff_t c0,
                             ptrdiff_t cnt)
{
    float s = 0;
    for (ptrdiff_t r = 0; r < nr; r++)
        for (ptrdiff_t c = c0; c < c0 + cnt; c++)
            s = s + rows[r][c];
    return s;
}

#define CP_FMAX2_ROWS 64        /* the most rows a window may have */

#ifdef CP_HAVE_WINDOW_MAX
static int cp_fmax2_ok(void) { return cp_window_isa() >= 2; }
/* the small-plane gathers (cp_fmax_gather_f32) pay: AVX-512F, not AMD */
static int cp_gather_ok(void) { return cp_window_isa() >= 2 && cp_gather_fast(); }

/* Columns t .. t + 31 of q (t + 31 only if a window reads it) for 16
 * outputs 2 columns apart, m < 16: the row's last m (masked loads: nothing
 * past the windows is read); even columns then give tap t, odd ones tap
 * t + 1 (cp_pair_tap). */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_pair_ld(const float *q, ptrdiff_t t, ptrdiff_t m, ptrdiff_t kw, __m512 *va, __m512 *vb)
{
    if (m == 16 && t + 1 < kw) {                /* columns t .. t + 31: all needed */
        *va = _mm512_loadu_ps(q + t);
        *vb = _mm512_loadu_ps(q + t + 16);
    } else {
        ptrdiff_t cnt = 2 * (m - 1) + (kw - t < 2 ? kw - t : 2);   /* columns read */
        __mmask16 klo = (__mmask16)(cnt >= 16 ? 0xFFFF : (1u << cnt) - 1);
        __mmask16 khi = (__mmask16)(cnt >= 32 ? 0xFFFF
                                    : cnt > 16 ? (1u << (cnt - 16)) - 1 : 0);
        *va = _mm512_maskz_loadu_ps(klo, q + t);
        *vb = _mm512_maskz_loadu_ps(khi, q + t + 16);
    }
}

__attribute__((target("avx512f,avx512dq"), always_inline)) static inline __m512
cp_pair_tap(__m512 va, __m512 vb, int odd)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                         26, 28, 30);
    return _mm512_permutex2var_ps(va, odd ? _mm512_add_epi32(ev, _mm512_set1_epi32(1)) : ev,
                                  vb);
}

/* The pick of one row's kw columns for 16 outputs from q (column s0 + 2o);
 * idx: the flat index of each output's first column. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_fmax2_blk(const float *q, __m512i idx, ptrdiff_t kw, ptrdiff_t m, __m512 *rb,
             __m512i *rbi)
{
    __m512 best = _mm512_setzero_ps();
    __m512i bi = idx;
    for (ptrdiff_t t = 0; t < kw; t += 2) {
        __m512 va, vb;
        cp_pair_ld(q, t, m, kw, &va, &vb);
        for (ptrdiff_t u = t; u < kw && u < t + 2; u++) {
            __m512 v = cp_pair_tap(va, vb, u > t);
            if (u == 0) {
                best = v;
                continue;
            }
            cp_take16(&best, &bi, v, _mm512_add_epi32(idx, _mm512_set1_epi32((int32_t)u)));
        }
    }
    *rb = best;
    *rbi = bi;
}

/* 16 outputs (m < 16: the row's last m) from the window rows: each fresh
 * row reduced from the input (and kept in its slot sv, si), each other row
 * loaded from its slot, the rows taken in order.  KW: a constant. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_fmax2_vec(float *y, int64_t *yi, const float *const *rows, const ptrdiff_t *roff,
             const int *fresh, float *const *sv, int32_t *const *si, ptrdiff_t nr,
             __m512i col, ptrdiff_t o, ptrdiff_t m, ptrdiff_t KW, ptrdiff_t ahead, int nt)
{
    __mmask16 lanes = (__mmask16)((1u << m) - 1);
    __m512 best = _mm512_setzero_ps(), rb;
    __m512i bi = _mm512_setzero_si512(), rbi;
    for (ptrdiff_t r = 0; r < nr; r++) {
        if (fresh[r]) {
            const float *q = rows[r] + 2 * o;
            if (ahead) {
                _mm_prefetch((const char *)(q + ahead), _MM_HINT_T0);
                _mm_prefetch((const char *)(q + ahead + 16), _MM_HINT_T0);
            }
            cp_fmax2_blk(q, _mm512_add_epi32(col, _mm512_set1_epi32((int32_t)roff[r])), KW,
                         m, &rb, &rbi);
            if (sv) {
                CP_ST16(sv[r] + o, lanes, rb);
                CP_ST16I(si[r] + o, lanes, rbi);
            }
        } else {
            rb = CP_LD16(lanes, sv[r] + o);
            rbi = CP_LD16I(lanes, si[r] + o);
        }
        if (r == 0) {
            best = rb;
            bi = rbi;
        } else {
            cp_take16(&best, &bi, rb, rbi);
        }
    }
    cp_store16_max(y + o, yi ? yi + o : NULL, lanes, best, bi, nt);
}

/* Output rows oh0 .. oh1 - 1 of one plane (xp: H x W floats, per depth
 * D x H x W) at one output depth: y, yi (or NULL) point at output row oh0,
 * OW outputs a row.  The window rows of output row oh are depths d0 + a*dstep
 * (a < nd) times rows hs[oh] + c*hstep (c < hc[oh]); its columns ws[o] ..
 * ws[o] + wc[o] - 1, outputs [ulo, uhi) being KW columns starting 2 apart.
 * With RS > 0 (windows that share rows), a row's results are kept for the
 * next output rows: rv, ri: RS >= 2 x nd x max(hc) slots of uhi - ulo
 * results each; tags: 2 x RS (the slots' rows and the output rows they
 * served last).  Rows prefetched `ahead` floats on. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_fmax2_item_body(float *y, int64_t *yi, const float *xp, ptrdiff_t H, ptrdiff_t W,
                   ptrdiff_t OW, ptrdiff_t d0, ptrdiff_t nd, ptrdiff_t dstep,
                   const int64_t *hs, const int64_t *hc, ptrdiff_t hstep, ptrdiff_t oh0,
                   ptrdiff_t oh1, const int64_t *ws, const int64_t *wc, ptrdiff_t ulo,
                   ptrdiff_t uhi, float *rv, int32_t *ri, ptrdiff_t *tags, ptrdiff_t RS,
                   ptrdiff_t ahead, ptrdiff_t KW, int nt)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                         26, 28, 30);
    const ptrdiff_t n = uhi - ulo, s0 = ws[ulo];
    const float *rows[CP_FMAX2_ROWS], *erows[CP_FMAX2_ROWS];
    float *sv[CP_FMAX2_ROWS];
    int32_t *si[CP_FMAX2_ROWS];
    ptrdiff_t roff[CP_FMAX2_ROWS];
    int fresh[CP_FMAX2_ROWS];
    ptrdiff_t nxt = 0, o;
    ptrdiff_t *stamp = tags + RS;           /* the output row a slot serves last */
    for (ptrdiff_t k = 0; k < RS; k++) {
        tags[k] = -1;
        stamp[k] = -1;
    }
    for (ptrdiff_t oh = oh0; oh < oh1; oh++, y += OW, yi = yi ? yi + OW : NULL) {
        ptrdiff_t nr = 0;
        for (ptrdiff_t a = 0; a < nd; a++)
            for (ptrdiff_t c = 0; c < hc[oh]; c++, nr++) {
                ptrdiff_t off = ((d0 + a * dstep) * H + hs[oh] + c * hstep) * W, k = 0;
                erows[nr] = xp + off;
                rows[nr] = xp + off + s0;
                roff[nr] = off;
                fresh[nr] = 1;
                if (RS == 0)
                    continue;
                while (k < RS && tags[k] != off)
                    k++;
                fresh[nr] = k == RS;
                if (k == RS) {          /* not kept: into the next slot this row spares */
                    while (stamp[nxt] == oh)
                        nxt = nxt + 1 == RS ? 0 : nxt + 1;
                    k = nxt;
                    tags[k] = off;
                }
                stamp[k] = oh;
                sv[nr] = rv + k * n;
                si[nr] = ri + k * n;
            }
        __m512i col = _mm512_add_epi32(ev, _mm512_set1_epi32((int32_t)s0));
        const __m512i step = _mm512_set1_epi32(32);
        for (o = 0; o + 16 <= n; o += 16, col = _mm512_add_epi32(col, step))
            cp_fmax2_vec(y + ulo, yi ? yi + ulo : NULL, rows, roff, fresh, RS ? sv : NULL,
                         si, nr, col, o, 16, KW, ahead, nt);
        if (o < n)
            cp_fmax2_vec(y + ulo, yi ? yi + ulo : NULL, rows, roff, fresh, RS ? sv : NULL,
                         si, nr, col, o, n - o, KW, ahead, nt);
        for (o = 0; o < ulo; o++)
            cp_fmax_one_f32(y + o, yi ? yi + o : NULL, erows, roff, nr, ws[o], wc[o]);
        for (o = uhi; o < OW; o++)
            cp_fmax_one_f32(y + o, yi ? yi + o : NULL, erows, roff, nr, ws[o], wc[o]);
    }
}

#define CP_DEFINE_FMAX2_ITEM(KW)                                                          \
    __attribute__((target("avx512f,avx512dq"))) static void                                        \
    cp_fmax2_item##KW##_f32(float *y, int64_t *yi, const float *xp, ptrdiff_t H,          \
                            ptrdiff_t W, ptrdiff_t OW, ptrdiff_t d0, ptrdiff_t nd,        \
                            ptrdiff_t dstep, const int64_t *hs, const int64_t *hc,        \
                            ptrdiff_t hstep, ptrdiff_t oh0, ptrdiff_t oh1,                \
                            const int64_t *ws, const int64_t *wc, ptrdiff_t ulo,          \
                            ptrdiff_t uhi, float *rv, int32_t *ri, ptrdiff_t *tags,       \
                            ptrdiff_t RS, ptrdiff_t ahead, int nt)                        \
    {                                                                                     \
        cp_fmax2_item_body(y, yi, xp, H, W, OW, d0, nd, dstep, hs, hc, hstep, oh0, oh1,   \
                           ws, wc, ulo, uhi, rv, ri, tags, RS, ahead, KW, nt);            \
        if (nt)                                                                           \
            _mm_sfence();                                                                 \
    }

CP_DEFINE_FMAX2_ITEM(1)
CP_DEFINE_FMAX2_ITEM(2)
CP_DEFINE_FMAX2_ITEM(3)
CP_DEFINE_FMAX2_ITEM(4)

/* After super-row oh (input rows 2 oh and 2 oh + 1 at a, R floats each):
 * the next one's first row, the rows past 2 OH zeroed at a plane's end
 * (no window reads them); oh advanced, 0 in the next plane. */
static inline float *cp_pair_next(float *a, ptrdiff_t *oh, ptrdiff_t H, ptrdiff_t OH,
                                  ptrdiff_t R)
{
    a += 2 * R;
    if (++*oh == OH) {
        memset(a, 0, (size_t)((H - 2 * OH) * R) * sizeof(float));
        a += (H - 2 * OH) * R;
        *oh = 0;
    }
    return a;
}

/* n bytes from src to dst with 64-byte non-temporal stores, whole lines
 * (dst 64-byte aligned and n a multiple of 64: the caller checks), no
 * fence (the caller fences once), or, on AMD, from 64 KiB on with the
 * string copy (rep movsb); 1, or 0 where there is no AVX-512F.  (229 KB
 * rows: the string copy 0.80 against 1.18 ms on Zen 5, but 1.6x the time
 * of the stores on Intel's Emerald Rapids.) */
__attribute__((target("avx512f,avx512dq"))) static int
cp_stream_lines(void *dst, const void *src, size_t n)
{
    char *d = (char *)dst;
    const char *s = (const char *)src;
    if (n >= 65536 && __builtin_cpu_is("amd")) {   /* long copies, on AMD: the string copy */
        __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
        return 1;
    }
    for (; n >= 64; n -= 64, d += 64, s += 64)     /* one line a store */
        _mm512_stream_si512((void *)d, _mm512_loadu_si512((const void *)s));
    return 1;
}

/* The gradient of a channels-first float32 average of 2 x 2 windows 2
 * apart, every window whole (the geometry of cp_fmax22_rows_f32), for the
 * input rows of super-rows [m0, m1) (a plane's last also zeroes the rows
 * past 2 OH).  Each output's gradient is scaled as the forward divides its
 * sum: mode 0 (adaptive) (g / 1) / 2 / 2, mode 1 0 + g / 4, mode 2 0 + g / d
 * (+0 where d is 0); halving and quartering are multiplications by 1/2 and
 * 1/4, exact as the divisions.  Each input then gets exactly one term,
 * 0 + s, as PyTorch's scatter from +0.  nt: each super-row (2 W floats, a
 * whole number of cache lines, 64-byte aligned) is built in stage and
 * streamed out; the caller's (2 W) % 16 == 0 and aligned gi make it so. */
__attribute__((target("avx512f,avx512dq"))) static void
cp_avg22_back_f32(float *gi, const float *go, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t H,
                  ptrdiff_t W, ptrdiff_t OH, ptrdiff_t OW, int mode, float d, float *stage,
                  int nt)
{
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512 zero = _mm512_setzero_ps();
    ptrdiff_t oh = m0 % OH;
    float *a = gi + (m0 / OH * H + 2 * oh) * W;
    for (ptrdiff_t m = m0; m < m1; m++) {
        float *dst = nt ? stage : a;
        const float *gr = go + m * OW;
        for (ptrdiff_t o = 0; o < OW; o += 8) {
            ptrdiff_t cnt = OW - o < 8 ? OW - o : 8;
            __m512 v = cnt == 8 ? _mm512_castps256_ps512(_mm256_loadu_ps(gr + o))
                                : _mm512_maskz_loadu_ps((__mmask16)((1u << cnt) - 1), gr + o);
            if (mode == 0)
                v = _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)), _mm512_set1_ps(0.5f));
            else if (mode == 1)
                v = _mm512_mul_ps(v, _mm512_set1_ps(0.25f));
            else
                v = d != 0 ? _mm512_div_ps(v, _mm512_set1_ps(d)) : zero;
            /* 0 + v: -0 becomes +0 (by a blend: an add after the multiply
             * could be contracted into one fused multiply-add, whose exact
             * product keeps the sign of a quotient that rounds to -0) */
            v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_EQ_OQ), v, zero);
            v = _mm512_permutexvar_ps(dup, v);
            __mmask16 k2 = (__mmask16)(cnt == 8 ? 0xFFFF : (1u << (2 * cnt)) - 1);
            CP_ST16(dst + 2 * o, k2, v);
            CP_ST16(dst + W + 2 * o, k2, v);
        }
        for (ptrdiff_t c = 2 * OW; c < W; c++)  /* columns no window reads */
            dst[c] = dst[W + c] = 0;
        if (nt)
            cp_stream_copy(a, stage, (size_t)(2 * W) * sizeof(float));
        a = cp_pair_next(a, &oh, H, OH, W);
    }
    if (nt)
        _mm_sfence();
}

/* The same for channels-last rows of W pixels of C lanes (C > 1): each
 * output pixel's C scaled gradients go to the four pixels of its window,
 * 16 lanes a store (the last C % 16 masked); nt: every store streamed (the
 * caller's C % 16 == 0 and aligned gi make each a whole cache line). */
__attribute__((target("avx512f,avx512dq"))) static void
cp_avg22_back_cl_f32(float *gi, const float *go, ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t H,
                     ptrdiff_t W, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t C, int mode, float d,
                     int nt)
{
    const __m512 zero = _mm512_setzero_ps();
    const ptrdiff_t R = W * C;                  /* floats a row */
    ptrdiff_t oh = m0 % OH;
    float *a = gi + (m0 / OH * H + 2 * oh) * R;
    for (ptrdiff_t m = m0; m < m1; m++) {
        const float *gr = go + m * OW * C;
        for (ptrdiff_t ow = 0; ow < OW; ow++, gr += C) {
            float *p = a + 2 * ow * C;
            for (ptrdiff_t c = 0; c < C; c += 16) {
                __mmask16 k = (__mmask16)(C - c >= 16 ? 0xFFFF : (1u << (C - c)) - 1);
                __m512 v = CP_LD16(k, gr + c);
                if (mode == 0)
                    v = _mm512_mul_ps(_mm512_mul_ps(v, _mm512_set1_ps(0.5f)),
                                      _mm512_set1_ps(0.5f));
                else if (mode == 1)
                    v = _mm512_mul_ps(v, _mm512_set1_ps(0.25f));
                else
                    v = d != 0 ? _mm512_div_ps(v, _mm512_set1_ps(d)) : zero;
                /* 0 + v, by a blend (see cp_avg22_back_f32) */
                v = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(v, zero, _CMP_EQ_OQ), v, zero);
                if (nt) {
                    _mm512_stream_ps(p + c, v);
                    _mm512_stream_ps(p + C + c, v);
                    _mm512_stream_ps(p + R + c, v);
                    _mm512_stream_ps(p + R + C + c, v);
                } else {
                    CP_ST16(p + c, k, v);
                    CP_ST16(p + C + c, k, v);
                    CP_ST16(p + R + c, k, v);
                    CP_ST16(p + R + C + c, k, v);
                }
            }
        }
        if (W > 2 * OW) {                       /* pixels no window reads */
            memset(a + 2 * OW * C, 0, (size_t)((W - 2 * OW) * C) * sizeof(float));
            memset(a + R + 2 * OW * C, 0, (size_t)((W - 2 * OW) * C) * sizeof(float));
        }
        a = cp_pair_next(a, &oh, H, OH, R);
    }
    if (nt)
        _mm_sfence();
}

/* Channels-first float32 max of 3 x 3 windows 2 apart, padded by 1 (the
 * ResNet stem): windows start at rows and columns 2 j - 1, the first clipped
 * to 2 taps by the padding, every other whole.  Output rows [oh0, oh1) of
 * one plane (xp: H x W, yp, ip: OH x OW, at row 0).  Each input row's
 * columns are reduced once, 16 outputs a vector: columns 2 j - 1, 2 j and
 * 2 j + 1 are the even and odd lanes of 32 columns from 2 j - 1 and the
 * even lanes of 32 from 2 j + 1, taken in that order; then the window's rows
 * in order, the last kept (hv, hi: OW + 16 slots) as the next output row's
 * first.  Taking the later of two runs of taps where it is greater or NaN
 * is PyTorch's scan over both (see cp_fmax2), so values and indices are its
 * bits.  Output 0 (its window clipped by the padding) starts lane 0 at
 * column 0, so every output is reduced in the vectors (W = 1 alone is
 * scanned tap by tap).  Rows are stored in whole vectors: where they stay
 * before yend, the range's end (spare lanes rewritten later by the next
 * row), whole lines streamed when nt; or, when nt and rows are not whole
 * lines, into a stage of chunk rows (sv, si: chunk OW + 16 slots) whose
 * whole lines are then streamed out (cp_fmax32_flush): a row of 56 outputs
 * is 3.5 lines, and rows stored in place read every other row's lines
 * first.  The first row of the first plane is loaded
 * masked (nothing before x is read), and so are rows whose loads reach past
 * xend. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_fmax32_hrow(const float *c, const float *x, const float *xend, __m512i col, int first,
               __m512 *hv, __m512i *hi)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                         26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    const __m512i one = _mm512_set1_epi32(1);
    __m512 a, b, a2, b2;
    if (c >= x && c + 34 <= xend) {
        a = _mm512_loadu_ps(c);
        b = _mm512_loadu_ps(c + 16);
        a2 = _mm512_loadu_ps(c + 2);
        b2 = _mm512_loadu_ps(c + 18);
    } else {                                    /* (the lanes outside x: 0, unused) */
        ptrdiff_t lo = x - c > 0 ? x - c : 0, hi = xend - c;
#define CP_LDR(off)                                                                         \
    _mm512_maskz_loadu_ps((__mmask16)(((off) + 16 <= hi ? 0xFFFFu                           \
                                       : (off) >= hi ? 0u : (1u << (hi - (off))) - 1) &     \
                                      ((off) >= lo ? 0xFFFFu                                \
                                       : (off) + 16 <= lo ? 0u : ~((1u << (lo - (off))) - 1))), \
                          c + (off))
        a = CP_LDR(0);
        b = CP_LDR(16);
        a2 = CP_LDR(2);
        b2 = CP_LDR(18);
#undef CP_LDR
    }
    __m512 best = _mm512_permutex2var_ps(a, ev, b);
    __m512i bi = col;
    __m512 t1 = _mm512_permutex2var_ps(a, od, b);
    __m512i c1 = _mm512_add_epi32(col, one);
    if (first) {                                /* output 0: column -1 is padding */
        best = _mm512_mask_mov_ps(best, 1, t1);
        bi = _mm512_mask_mov_epi32(bi, 1, c1);
    }
    cp_take16(&best, &bi, t1, c1);
    cp_take16(&best, &bi, _mm512_permutex2var_ps(a2, ev, b2), _mm512_add_epi32(c1, one));
    *hv = best;
    *hi = bi;
}

/* one output row's vectors, stored at yr, irow or, staged, at ys, is: rows
 * q1 and, if two, q1 + W; kept: the row before (hv, hi) first; out: stored
 * (else only the last row kept) */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_fmax32_row(float *yr, int64_t *irow, float *ys, int32_t *is, const float *q1,
              const float *x, const float *xend, ptrdiff_t W, ptrdiff_t OW, int32_t base,
              float *hv, int32_t *hi, const float *yend, int nt, int staged, int two, int kept,
              int out)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                         26, 28, 30);
    const __m512i step = _mm512_set1_epi32(32);
    __m512i col1 = _mm512_add_epi32(ev, _mm512_set1_epi32(base - 1));
    __m512i col2 = _mm512_add_epi32(col1, _mm512_set1_epi32((int32_t)W));
    for (ptrdiff_t o = 0; o < OW; o += 16) {
        __m512 best, v;
        __m512i bi, vi;
        cp_fmax32_hrow(q1 + 2 * o - 1, x, xend, col1, o == 0, &best, &bi);
        if (two) {
            cp_fmax32_hrow(q1 + W + 2 * o - 1, x, xend, col2, o == 0, &v, &vi);
            if (out)
                cp_take16(&best, &bi, v, vi);
        } else {
            v = best;
            vi = bi;
        }
        col1 = _mm512_add_epi32(col1, step);
        col2 = _mm512_add_epi32(col2, step);
        if (out && kept) {                      /* the kept row first */
            __m512 kv = _mm512_loadu_ps(hv + o);
            __m512i ki = _mm512_loadu_si512((const void *)(hi + o));
            cp_take16(&kv, &ki, best, bi);
            best = kv;
            bi = ki;
        }
        _mm512_storeu_ps(hv + o, v);
        _mm512_storeu_si512((void *)(hi + o), vi);
        if (!out)
            continue;
        if (staged) {
            _mm512_storeu_ps(ys + o, best);
            _mm512_storeu_si512((void *)(is + o), bi);
        } else {
            ptrdiff_t m = OW - o < 16 ? OW - o : 16;
            __mmask16 lanes = (__mmask16)(m == 16 || yr + o + 16 <= yend ? 0xFFFF
                                                                        : (1u << m) - 1);
            cp_store16_max(yr + o, irow ? irow + o : NULL, lanes, best, bi, nt && m == 16);
        }
    }
}

/* output rows [from, to) (those before first only kept), at yp, ip or,
 * staged, row oh at (oh - first) OW of sv, si */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_fmax32_span(float *yp, int64_t *ip, float *sv, int32_t *si, const float *xp,
               const float *x, const float *xend, ptrdiff_t H, ptrdiff_t W, ptrdiff_t OW,
               ptrdiff_t from, ptrdiff_t to, ptrdiff_t first, float *hv, int32_t *hi,
               const float *yend, int nt, int staged)
{
    for (ptrdiff_t oh = from; oh < to; oh++) {
        /* the window's rows: 2 oh - 1 (kept, oh > 0), 2 oh, 2 oh + 1 (if any) */
        int two = 2 * oh + 1 < H, out = oh >= first;
        ptrdiff_t so = staged && out ? (oh - first) * OW : 0;
        float *yr = staged ? sv + so : yp + oh * OW;
        const float *q1 = xp + 2 * oh * W;
        int32_t base = (int32_t)(2 * oh * W);
        int64_t *irow = ip && !staged ? ip + oh * OW : NULL;
        if (two && out && oh > 0)               /* (the rows between the first and last) */
            cp_fmax32_row(yr, irow, sv + so, si + so, q1, x, xend, W, OW, base, hv, hi, yend,
                          nt, staged, 1, 1, 1);
        else
            cp_fmax32_row(yr, irow, sv + so, si + so, q1, x, xend, W, OW, base, hv, hi, yend,
                          nt, staged, two, oh > 0, out);
        if (out && W < 2) {                     /* W = 1: output 0 has one column */
            float v0;
            int64_t i0;
            const float *rows[3];
            ptrdiff_t roff[3], n = 0;
            for (ptrdiff_t r = oh > 0 ? 2 * oh - 1 : 2 * oh; r < 2 * oh + 1 + two; r++) {
                rows[n] = xp + r * W;
                roff[n++] = r * W;
            }
            cp_fmax_one_f32(&v0, &i0, rows, roff, n, 0, 1);
            yr[0] = v0;
            if (staged)
                si[so] = (int32_t)i0;
            else if (irow)
                irow[0] = i0;
        }
    }
}

/* n staged values and int32 indices to y and yi (widened; if not NULL),
 * whole lines streamed (the caller fences) */
__attribute__((target("avx512f,avx512dq"))) static void
cp_fmax32_flush(float *y, int64_t *yi, const float *sv, const int32_t *si, ptrdiff_t n)
{
    ptrdiff_t i = 0;
    if (((uintptr_t)y & 3) == 0) {
        ptrdiff_t h = (ptrdiff_t)(((64 - ((uintptr_t)y & 63)) & 63) / sizeof(float));
        h = h < n ? h : n;
        if (h > 0)
            _mm512_mask_storeu_ps(y, (__mmask16)((1u << h) - 1), _mm512_loadu_ps(sv));
        for (i = h; i + 16 <= n; i += 16)
            _mm512_stream_ps(y + i, _mm512_loadu_ps(sv + i));
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i, _mm512_loadu_ps(sv + i));
    if (i < n)
        _mm512_mask_storeu_ps(y + i, (__mmask16)((1u << (n - i)) - 1), _mm512_loadu_ps(sv + i));
    if (yi == NULL)
        return;
#define CP_WIDEN8(k) _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(si + (k))))
    i = 0;
    if (((uintptr_t)yi & 7) == 0) {
        ptrdiff_t h = (ptrdiff_t)(((64 - ((uintptr_t)yi & 63)) & 63) / sizeof(int64_t));
        h = h < n ? h : n;
        if (h > 0)
            _mm512_mask_storeu_epi64(yi, (__mmask8)((1u << h) - 1), CP_WIDEN8(0));
        for (i = h; i + 8 <= n; i += 8)
            _mm512_stream_si512((void *)(yi + i), CP_WIDEN8(i));
    }
    for (; i + 8 <= n; i += 8)
        _mm512_storeu_si512((void *)(yi + i), CP_WIDEN8(i));
    if (i < n)
        _mm512_mask_storeu_epi64(yi + i, (__mmask8)((1u << (n - i)) - 1), CP_WIDEN8(i));
#undef CP_WIDEN8
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_fmax32_rows_f32(float *yp, int64_t *ip, const float *xp, const float *x, const float *xend,
                   ptrdiff_t H, ptrdiff_t W, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t oh0,
                   ptrdiff_t oh1, float *hv, int32_t *hi, float *yend, float *sv, int32_t *si,
                   ptrdiff_t chunk, int nt)
{
    (void)OH;
    ptrdiff_t from = oh0 > 0 ? oh0 - 1 : 0;     /* (oh0 - 1: only its last row kept) */
    if (!nt || OW % 16 == 0) {                  /* (rows of whole lines: streamed in place) */
        cp_fmax32_span(yp, ip, sv, si, xp, x, xend, H, W, OW, from, oh1, oh0, hv, hi, yend, nt,
                       0);
    } else {
        for (ptrdiff_t a = oh0, b; a < oh1; a = b, from = a) {
            b = a + chunk < oh1 ? a + chunk : oh1;
            cp_fmax32_span(yp, ip, sv, si, xp, x, xend, H, W, OW, from, b, a, hv, hi, yend, 0,
                           1);
            cp_fmax32_flush(yp + a * OW, ip ? ip + a * OW : NULL, sv, si, (b - a) * OW);
        }
    }
    if (nt)
        _mm_sfence();
}

/* Channels-last float32 max backward, one input row written densely: for
 * each column w and 16 lanes, the terms of the windows that read (row, w),
 * in output order (the output rows orow[r] (offsets in outputs), then the
 * columns wouts[wptr[w] ..] of each), each taken where its index is the
 * position pbase + w: PyTorch's scatter order, from +0, so the same bits.
 * An index that is not one of its window's taps is never taken: the call
 * returns the number of lanes taken, which the caller checks against the
 * indices that are not -1 (cp_count_not_none).  off: scratch for the
 * windows of a column (nrow x the most a column has). */
#define CP_CL_MAX_BACK_STEP(LD16, LDQ0, LDQ1)                                               \
    do {                                                                                  \
        __m512 acc = _mm512_setzero_ps();                                                 \
        for (ptrdiff_t k = 0; k < nk; k++) {                                              \
            const int64_t *ip = idx + off[k] + c;                                         \
            __mmask16 m = (__mmask16)(_mm512_cmpeq_epi64_mask(LDQ0(ip), p) |               \
                                      (unsigned)_mm512_cmpeq_epi64_mask(LDQ1(ip + 8), p) << 8); \
            acc = _mm512_mask_add_ps(acc, m, acc, LD16(go + off[k] + c));                 \
            taken = _mm512_mask_add_epi32(taken, m, taken, one);                          \
        }                                                                                 \
        ST16(gr + c, acc);                                                                \
    } while (0)

__attribute__((target("avx512f,avx512dq"))) static int64_t
cp_cl_max_back_row_f32(float *gr, const float *go, const int64_t *idx, const ptrdiff_t *orow,
                       ptrdiff_t nrow, int64_t pbase, ptrdiff_t W, ptrdiff_t C,
                       const int64_t *wptr, const int64_t *wouts, ptrdiff_t *off, int nt)
{
    __m512i taken = _mm512_setzero_si512();
    nt = nt && (C & 15) == 0 && ((uintptr_t)gr & 63) == 0;
    const __m512i one = _mm512_set1_epi32(1);
    const ptrdiff_t cf = C & ~(ptrdiff_t)15;
    const __mmask16 tl = (__mmask16)((1u << (C - cf)) - 1);
    for (ptrdiff_t w = 0; w < W; w++, gr += C) {
        const __m512i p = _mm512_set1_epi64(pbase + w);
        ptrdiff_t nk = 0, c;
        for (ptrdiff_t r = 0; r < nrow; r++)
            for (int64_t t = wptr[w]; t < wptr[w + 1]; t++)
                off[nk++] = (orow[r] + wouts[t]) * C;
#define LD16(q) _mm512_loadu_ps(q)
#define LDQ(q) _mm512_loadu_si512((const void *)(q))
#define ST16(q, v) _mm512_storeu_ps((q), (v))
        if (!nt)
            for (c = 0; c < cf; c += 16)
                CP_CL_MAX_BACK_STEP(LD16, LDQ, LDQ);
#undef ST16
#define ST16(q, v) _mm512_stream_ps((q), (v))
        else
            for (c = 0; c < cf; c += 16)
                CP_CL_MAX_BACK_STEP(LD16, LDQ, LDQ);
#undef LD16
#undef LDQ
#undef ST16
        if (c < C) {
#define LD16(q) _mm512_maskz_loadu_ps(tl, (q))
#define LDQ0(q) _mm512_maskz_loadu_epi64((__mmask8)tl, (const void *)(q))
#define LDQ1(q) _mm512_maskz_loadu_epi64((__mmask8)(tl >> 8), (const void *)(q))
#define ST16(q, v) _mm512_mask_storeu_ps((q), tl, (v))
            CP_CL_MAX_BACK_STEP(LD16, LDQ0, LDQ1);
#undef LD16
#undef LDQ0
#undef LDQ1
#undef ST16
        }
    }
    if (nt)
        _mm_sfence();
    return _mm512_reduce_add_epi32(taken);
}

/* how many of n indices are not -1 */
__attribute__((target("avx512f,avx512dq"))) static int64_t
cp_count_not_none(const int64_t *ip, ptrdiff_t n)
{
    const __m512i none = _mm512_set1_epi64(-1);
    int64_t k = 0;
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        k += __builtin_popcount((unsigned)_mm512_cmpneq_epi64_mask(
            _mm512_loadu_si512((const void *)(ip + i)), none));
    for (; i < n; i++)
        k += ip[i] != -1;
    return k;
}

/* Channels-first float32 max of 2 x 2 windows 2 apart, every window whole
 * (max_pool2d(2), adaptive halvings such as 14 -> 7): super-rows [m0, m1)
 * of P planes of H x W inputs and OH x OW outputs (2 OH <= H, 2 OW <= W);
 * super-row m is output row oh = m % OH of plane m / OH, reading input
 * rows 2 oh and 2 oh + 1.  8 outputs a vector: the two rows' 16 columns
 * give, in the vector's halves, each row's even columns (tap 0) and odd
 * ones (tap 1); the odd are taken into the even where greater or NaN, then
 * the second row's half into the first.  Over PyTorch's order (row by row,
 * column by column) that is its scan (see cp_fmax2 above): values and
 * indices (2 oh W + 2 ow + tap, in the plane) are its bits.  No row state:
 * short rows (OW = 7) cost little more than their loads and stores. */

/* 8 outputs (the first cnt kept) of the rows at a and a + W, column c0 =
 * 2 o at flat index base; k2: the columns loaded (all 16 where the input
 * goes on: the spare lanes are ignored), k1: the outputs stored (all 8
 * where the outputs they reach past the row are rewritten later) */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_fmax22_chunk(float *y, int64_t *yi, const float *a, ptrdiff_t W, int32_t base,
                __mmask16 k2, __mmask8 k1, __m512i col)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                         26, 28, 30);
    const __m512i odd = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    __m512 za = CP_LD16(k2, a), zb = CP_LD16(k2, a + W);
    __m512 best = _mm512_permutex2var_ps(za, ev, zb);
    __m512i bi = _mm512_add_epi32(col, _mm512_set1_epi32(base));
    cp_take16(&best, &bi, _mm512_permutex2var_ps(za, odd, zb),
              _mm512_add_epi32(bi, _mm512_set1_epi32(1)));
    cp_take16(&best, &bi, _mm512_shuffle_f32x4(best, best, _MM_SHUFFLE(3, 2, 3, 2)),
              _mm512_shuffle_i32x4(bi, bi, _MM_SHUFFLE(3, 2, 3, 2)));
    if (k1 == 0xFF)
        _mm256_storeu_ps(y, _mm512_castps512_ps256(best));
    else
        _mm512_mask_storeu_ps(y, k1, best);
    if (yi)
        CP_ST8Q(yi, k1, _mm512_cvtepi32_epi64(_mm512_castsi512_si256(bi)));
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_fmax22_rows_f32(float *y, int64_t *yi, const float *x, ptrdiff_t P, ptrdiff_t m0,
                   ptrdiff_t m1, ptrdiff_t H, ptrdiff_t W, ptrdiff_t OH, ptrdiff_t OW)
{
    const float *xend = x + P * H * W;
    /* a lane's tap-0 index past its chunk's first: 2 l (first row), W + 2 l (second) */
    const __m512i col = _mm512_add_epi32(
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 2, 4, 6, 8, 10, 12, 14),
        _mm512_maskz_set1_epi32(0xFF00, (int32_t)W));
    const ptrdiff_t safe = m1 * OW - 8;     /* outputs from which 8 stay in the range */
    const __mmask16 k2t = (__mmask16)((1u << (2 * ((OW - 1) % 8 + 1))) - 1);
    const __mmask8 k1t = (__mmask8)((1u << ((OW - 1) % 8 + 1)) - 1);
    ptrdiff_t oh = m0 % OH;
    const float *a = x + (m0 / OH * H + 2 * oh) * W;
    int32_t base = (int32_t)(2 * oh * W);
    for (ptrdiff_t m = m0; m < m1; m++) {
        float *yr = y + m * OW;
        int64_t *ir = yi ? yi + m * OW : NULL;
        ptrdiff_t o = 0;
        for (; o + 8 < OW; o += 8)              /* whole chunks */
            cp_fmax22_chunk(yr + o, ir ? ir + o : NULL, a + 2 * o, W, base + (int32_t)(2 * o),
                            0xFFFF, 0xFF, col);
        cp_fmax22_chunk(yr + o, ir ? ir + o : NULL, a + 2 * o, W, base + (int32_t)(2 * o),
                        a + W + 2 * o + 16 <= xend ? 0xFFFF : k2t,
                        m * OW + o <= safe ? 0xFF : k1t, col);
        a += 2 * W;
        base += (int32_t)(2 * W);
        if (++oh == OH) {
            oh = 0;
            base = 0;
            a += (H - 2 * OH) * W;
        }
    }
}

/* Channels-first float32 averages of 2 x 2 windows 2 apart, every window
 * whole (the geometry of cp_fmax22_rows_f32: avg_pool2d(2), adaptive
 * halvings), super-rows [m0, m1) of P planes.  16 outputs a vector: the two
 * rows' 32 columns, each row's even and odd columns gathered apart, summed
 * as PyTorch sums each window, ((a0 + a1) + b0) + b1 (operands in that
 * order: NaN payloads), and divided as its
 * kernels divide (see cp_avg22_back_f32): mode 0 (adaptive) (s / 1) / 2 / 2
 * with s from +0.0, mode 1 0 + s / 4, mode 2 0 + s / d; halving and
 * quartering are multiplications by 1/2 and 1/4, exact as the divisions. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_favg22_chunk(float *y, const float *a, ptrdiff_t W, __mmask16 k0, __mmask16 k1,
                __mmask16 ko, int mode, __m512 dv, ptrdiff_t ahead)
{
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24,
                                         26, 28, 30);
    const __m512i odd = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    const __m512 zero = _mm512_setzero_ps();
    if (ahead) {        /* (prefetches past the input are harmless) */
        _mm_prefetch((const char *)(a + ahead), _MM_HINT_T0);
        _mm_prefetch((const char *)(a + ahead + 16), _MM_HINT_T0);
        _mm_prefetch((const char *)(a + W + ahead), _MM_HINT_T0);
        _mm_prefetch((const char *)(a + W + ahead + 16), _MM_HINT_T0);
    }
    __m512 a0 = CP_LD16(k0, a), a1 = CP_LD16(k1, a + 16);
    __m512 b0 = CP_LD16(k0, a + W), b1 = CP_LD16(k1, a + W + 16);
    __m512 s = cp_add_ord512(_mm512_permutex2var_ps(a0, ev, a1),
                             _mm512_permutex2var_ps(a0, odd, a1));
    s = cp_add_ord512(s, _mm512_permutex2var_ps(b0, ev, b1));
    s = cp_add_ord512(s, _mm512_permutex2var_ps(b0, odd, b1));
    /* the sums start from their first tap: the same bits as from +0.0 but
     * for four -0.0 taps, whose -0.0 either division below takes to +0.0
     * (a blend for each 0 + q: an add after the multiply could be
     * contracted into a fused multiply-add, which keeps the sign of a
     * quotient that rounds to -0) */
    if (mode == 0) {
        s = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(s, zero, _CMP_EQ_OQ), s, zero);
        s = _mm512_mul_ps(_mm512_mul_ps(s, _mm512_set1_ps(0.5f)), _mm512_set1_ps(0.5f));
    } else {
        s = mode == 1 ? _mm512_mul_ps(s, _mm512_set1_ps(0.25f)) : _mm512_div_ps(s, dv);
        s = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(s, zero, _CMP_EQ_OQ), s, zero);
    }
    CP_ST16(y, ko, s);
}

/* Whole lines of the outputs staged in st[*i0 .. fill) streamed to *out (64-byte
 * aligned), the lines' floats consumed (*i0, *out advanced); last: the rest too,
 * with ordinary stores. */
__attribute__((target("avx512f,avx512dq"))) static void
cp_stage_flush(float **out, const float *st, ptrdiff_t *i0, ptrdiff_t fill, int last)
{
    ptrdiff_t i = *i0;
    float *o = *out;
    for (; i + 16 <= fill; i += 16, o += 16)
        _mm512_stream_ps(o, _mm512_loadu_ps(st + i));
    if (last) {
        memcpy(o, st + i, (size_t)(fill - i) * sizeof(float));
        o += fill - i;
        i = fill;
    }
    *i0 = i;
    *out = o;
}

#define CP_FAVG22_STAGE 1024    /* floats staged before whole lines are streamed */

/* nt: the outputs (a contiguous range) are staged and written in whole
 * 64-byte lines with non-temporal stores, so that no line is read first.
 * ahead: the input is prefetched this many floats ahead of the loads (0:
 * not), for inputs larger than the caches: the (32, 256, 56, 56) k=2
 * forward took 0.65-0.70x the time with 1536 on Intel's Emerald Rapids, at
 * one thread and two (its hardware prefetchers fell behind two rows read
 * 224 bytes at a time) */
__attribute__((target("avx512f,avx512dq"))) static void
cp_favg22_rows_f32(float *y, const float *x, ptrdiff_t P, ptrdiff_t m0, ptrdiff_t m1,
                   ptrdiff_t H, ptrdiff_t W, ptrdiff_t OH, ptrdiff_t OW, int mode, float d,
                   int nt, ptrdiff_t ahead)
{
    const float *xend = x + P * H * W;
    const ptrdiff_t safe = m1 * OW - 16;    /* outputs from which 16 stay in the range */
    const ptrdiff_t tail = (OW - 1) % 16 + 1;
    const __mmask16 kot = (__mmask16)((1u << tail) - 1);
    const __mmask16 k0t = (__mmask16)(tail >= 8 ? 0xFFFF : (1u << (2 * tail)) - 1);
    const __mmask16 k1t = (__mmask16)(tail > 8 ? (1u << (2 * tail - 16)) - 1 : 0);
    const __m512 dv = _mm512_set1_ps(d);
    float *out = y + m0 * OW, *st = NULL;
    ptrdiff_t fill = 0, i0 = 0;
    if (nt && ((uintptr_t)out & 3) == 0)
        st = (float *)cp_amalloc((size_t)(CP_FAVG22_STAGE + OW + 16) * sizeof(float), 0);
    if (st != NULL) {
        /* the floats before out's first line boundary, ordinary stores */
        ptrdiff_t head = (ptrdiff_t)(((64 - ((uintptr_t)out & 63)) & 63) / sizeof(float));
        i0 = -head;
    }
    ptrdiff_t oh = m0 % OH;
    const float *a = x + (m0 / OH * H + 2 * oh) * W;
    for (ptrdiff_t m = m0; m < m1; m++) {
        float *yr = st != NULL ? st + fill : y + m * OW;
        int spare = st != NULL || m * OW + (OW - tail) <= safe;
        ptrdiff_t o = 0;
        for (; o + 16 < OW; o += 16)            /* whole chunks */
            cp_favg22_chunk(yr + o, a + 2 * o, W, 0xFFFF, 0xFFFF, 0xFFFF, mode, dv, ahead);
        /* the last chunk: whole loads where the input goes on, a whole store
         * where the outputs past the row are rewritten later (the stage's
         * slack, or this range's next row) */
        int whole = a + W + 2 * o + 32 <= xend;
        cp_favg22_chunk(yr + o, a + 2 * o, W, whole ? 0xFFFF : k0t, whole ? 0xFFFF : k1t,
                        spare ? 0xFFFF : kot, mode, dv, ahead);
        if (st != NULL) {
            fill += OW;
            if (fill >= CP_FAVG22_STAGE || m + 1 == m1) {
                if (i0 < 0) {                   /* the head */
                    ptrdiff_t h = -i0 < fill ? -i0 : fill;
                    memcpy(out, st, (size_t)h * sizeof(float));
                    out += h;
                    i0 = h;
                }
                cp_stage_flush(&out, st, &i0, fill, m + 1 == m1);
                memmove(st, st + i0, (size_t)(fill - i0) * sizeof(float));
                fill -= i0;
                i0 = 0;
            }
        }
        a += 2 * W;
        if (++oh == OH) {
            oh = 0;
            a += (H - 2 * OH) * W;
        }
    }
    if (st != NULL) {
        _mm_sfence();
        cp_afree(st);
    }
}

/* The gradient of cp_fmax22_rows_f32 given its indices, for the input rows
 * of super-rows [m0, m1) (the last super-row of a plane also zeroes the
 * rows past 2 OH): with disjoint windows and every index inside its own
 * window, each input element gets at most one term, 0 + go (PyTorch's
 * scatter from +0), so the rows are written densely, 8 windows a vector,
 * without zeroing them first.  Returns 1 (at the first window whose index
 * is not one of its taps: -1 or any other; rows written so far) so that
 * the caller falls back to the scatter, which takes any index as PyTorch
 * does. */

/* 8 windows (the first cnt kept) at column 2 o of the rows at a and a + W,
 * flat index base; their gradients gr and indices ir (all 8 loaded where
 * full_ld, only cnt otherwise); ka, kb: the lanes stored in each row */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline int
cp_fmax22_back_chunk(float *a, ptrdiff_t W, const float *gr, const int64_t *ir, int32_t base,
                     ptrdiff_t cnt, int full_ld, __mmask16 ka, __mmask16 kb)
{
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                           15);
    __mmask8 k1 = (__mmask8)((1u << cnt) - 1);
    __m512i iq = full_ld ? _mm512_loadu_si512((const void *)ir)
                         : _mm512_maskz_loadu_epi64(k1, (const void *)ir);
    __m512 gv = full_ld ? _mm512_castps256_ps512(_mm256_loadu_ps(gr))
                        : _mm512_maskz_loadu_ps(k1, gr);
    /* (saturated to int32: no index past 2^31 meets a tap's) */
    __m512i i16 = _mm512_permutexvar_epi32(dup,
                                           _mm512_castsi256_si512(_mm512_cvtsepi64_epi32(iq)));
    __m512 g = _mm512_add_ps(_mm512_setzero_ps(), _mm512_permutexvar_ps(dup, gv));
    __m512i pa = _mm512_add_epi32(lane, _mm512_set1_epi32(base));
    __mmask16 ma = _mm512_cmpeq_epi32_mask(i16, pa);
    __mmask16 mb = _mm512_cmpeq_epi32_mask(i16,
                                           _mm512_add_epi32(pa, _mm512_set1_epi32((int32_t)W)));
    unsigned hit = (unsigned)(ma | mb);
    if (((hit | hit >> 1) & 0x5555u & ((1u << (2 * cnt)) - 1)) !=
        (0x5555u & ((1u << (2 * cnt)) - 1)))
        return 1;
    CP_ST16(a, ka, _mm512_maskz_mov_ps(ma, g));
    CP_ST16(a + W, kb, _mm512_maskz_mov_ps(mb, g));
    return 0;
}

__attribute__((target("avx512f,avx512dq"))) static int
cp_fmax22_back_f32(float *gi, const float *go, const int64_t *idx, ptrdiff_t m0,
                   ptrdiff_t m1, ptrdiff_t H, ptrdiff_t W, ptrdiff_t OH, ptrdiff_t OW)
{
    /* the end of the range's inputs, past which nothing may be written */
    const float *lim = gi + (((m1 - 1) / OH * H + 2 * ((m1 - 1) % OH) + 2) * W);
    const ptrdiff_t safe = m1 * OW - 8, ct = (OW - 1) % 8 + 1;
    const __mmask16 k2t = (__mmask16)((1u << (2 * ct)) - 1);
    ptrdiff_t oh = m0 % OH;
    float *a = gi + (m0 / OH * H + 2 * oh) * W;
    int32_t base = (int32_t)(2 * oh * W);
    for (ptrdiff_t m = m0; m < m1; m++) {
        const float *gr = go + m * OW;
        const int64_t *ir = idx + m * OW;
        ptrdiff_t o = 0;
        /* whole vectors where they stay in the range: a short chunk's spare
         * lanes read the next rows' gradients, and its stores reach past
         * the row into inputs written after it (the second row, the spare
         * columns and rows, the next rows); the first row's spill reaches
         * the second row's start, written after it only by a row's first
         * chunk */
        for (; o + 8 < OW; o += 8)
            if (cp_fmax22_back_chunk(a + 2 * o, W, gr + o, ir + o, base + (int32_t)(2 * o), 8,
                                     1, 0xFFFF, 0xFFFF))
                return 1;
        if (cp_fmax22_back_chunk(a + 2 * o, W, gr + o, ir + o, base + (int32_t)(2 * o), ct,
                                 m * OW + o <= safe,
                                 ct == 8 || (o == 0 && a + 16 <= lim) ? 0xFFFF : k2t,
                                 a + W + 2 * o + 16 <= lim ? 0xFFFF : k2t))
            return 1;
        if (W > 2 * OW) {                       /* columns no window reads */
            memset(a + 2 * OW, 0, (size_t)(W - 2 * OW) * sizeof(float));
            memset(a + W + 2 * OW, 0, (size_t)(W - 2 * OW) * sizeof(float));
        }
        a = cp_pair_next(a, &oh, H, OH, W);
        base = (int32_t)(2 * oh * W);
    }
    return 0;
}

/* cp_fmax22_back_f32's 3-d counterpart: the gradient of channels-first
 * 2 x 2 x 2 windows 2 apart that tile the input exactly (D, H, W = 2 OD,
 * 2 OH, 2 OW), for super-rows [m0, m1) of the N x OD x OH output rows: each
 * output row's windows cover 4 input rows (a, a + W, a + HW, a + HW + W),
 * written densely, 8 windows a vector, each input 0 + its window's gradient
 * where the index names it, else +0.  nt: with gi on a line and W a
 * multiple of 16, every store is a whole line, written with non-temporal
 * stores (the caller fences).  Returns 1 at the first window whose index
 * is not one of its 8 taps (-1 or any other; rows written so far), so that
 * the caller falls back to the scatter. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline int
cp_fmax222_back_chunk(float *a, ptrdiff_t W, ptrdiff_t HW, const float *gr, const int64_t *ir,
                      int32_t base, ptrdiff_t cnt, int nt)
{
    const __m512i dup = _mm512_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7);
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                           15);
    const __mmask8 k1 = (__mmask8)((1u << cnt) - 1);
    const unsigned kk = (1u << (2 * cnt)) - 1, need = 0x5555u & kk;
    __m512i iq = cnt == 8 ? _mm512_loadu_si512((const void *)ir)
                          : _mm512_maskz_loadu_epi64(k1, (const void *)ir);
    __m512 gv = cnt == 8 ? _mm512_castps256_ps512(_mm256_loadu_ps(gr))
                         : _mm512_maskz_loadu_ps(k1, gr);
    /* (saturated to int32: no index past 2^31 meets a tap's) */
    __m512i i16 = _mm512_permutexvar_epi32(dup,
                                           _mm512_castsi256_si512(_mm512_cvtsepi64_epi32(iq)));
    __m512 g = _mm512_add_ps(_mm512_setzero_ps(), _mm512_permutexvar_ps(dup, gv));
    __m512i pa = _mm512_add_epi32(lane, _mm512_set1_epi32(base));
    __m512i pc = _mm512_add_epi32(pa, _mm512_set1_epi32((int32_t)HW));
    const __m512i wv = _mm512_set1_epi32((int32_t)W);
    __mmask16 ma = _mm512_cmpeq_epi32_mask(i16, pa);
    __mmask16 mb = _mm512_cmpeq_epi32_mask(i16, _mm512_add_epi32(pa, wv));
    __mmask16 mc = _mm512_cmpeq_epi32_mask(i16, pc);
    __mmask16 md = _mm512_cmpeq_epi32_mask(i16, _mm512_add_epi32(pc, wv));
    unsigned hit = (unsigned)(ma | mb | mc | md);
    if (((hit | hit >> 1) & need) != need)
        return 1;
    if (nt) {
        _mm512_stream_ps(a, _mm512_maskz_mov_ps(ma, g));
        _mm512_stream_ps(a + W, _mm512_maskz_mov_ps(mb, g));
        _mm512_stream_ps(a + HW, _mm512_maskz_mov_ps(mc, g));
        _mm512_stream_ps(a + HW + W, _mm512_maskz_mov_ps(md, g));
    } else {
        CP_ST16(a, (__mmask16)kk, _mm512_maskz_mov_ps(ma, g));
        CP_ST16(a + W, (__mmask16)kk, _mm512_maskz_mov_ps(mb, g));
        CP_ST16(a + HW, (__mmask16)kk, _mm512_maskz_mov_ps(mc, g));
        CP_ST16(a + HW + W, (__mmask16)kk, _mm512_maskz_mov_ps(md, g));
    }
    return 0;
}

/* The channels-last form (C channels a pixel, max_pool3d(x, 2) of even
 * sizes on NDHWC data): each output row's windows write their 8 input
 * pixels densely, 16 channels a vector, from the lanes' tap numbers (the
 * index less the window's first position, which must be one of the 8
 * taps' offsets or the index -1): a tap's lanes get 0 + the gradient, the
 * others +0, as PyTorch's scatter into zeros gives.  Each window's indices
 * and gradients are read once (the row kernel, cp_cl_max_back_row_f32,
 * reads them once for each of the 8 pixels).  Output rows [m0, m1), m =
 * (n OD + od) OH + oh.  nt: with C a multiple of 16 and gi on a line, the
 * pixels (whole lines) written with non-temporal stores.  Returns 1 when
 * some index is neither -1 nor one of its window's taps (gi is then
 * incomplete), else 0. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline int
cp_cl_fmax222_block(float *const *rows, const float *g0, const int64_t *i0, __m512i p,
                    __m512i span, const __m512i *taps, ptrdiff_t C, __mmask16 lm,
                    const int FULL, int nt)
{
    const __m512 z = _mm512_setzero_ps();
    const __m512i none = _mm512_set1_epi64(-1);
    __m512 g;
    __m512i a, b;
    if (FULL) {
        g = _mm512_loadu_ps(g0);
        a = _mm512_loadu_si512((const void *)i0);
        b = _mm512_loadu_si512((const void *)(i0 + 8));
    } else {
        g = _mm512_maskz_loadu_ps(lm, g0);
        a = _mm512_maskz_loadu_epi64((__mmask8)lm, i0);
        b = _mm512_maskz_loadu_epi64((__mmask8)(lm >> 8), i0 + 8);
    }
    /* lanes whose index is -1, and lanes whose offset is in [0, span) */
    __mmask16 nn = (__mmask16)(_mm512_cmpeq_epi64_mask(a, none) |
                               ((unsigned)_mm512_cmpeq_epi64_mask(b, none) << 8));
    a = _mm512_sub_epi64(a, p);
    b = _mm512_sub_epi64(b, p);
    __mmask16 in = (__mmask16)(_mm512_cmplt_epu64_mask(a, span) |
                               ((unsigned)_mm512_cmplt_epu64_mask(b, span) << 8));
    __m512i d = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(a)),
                                   _mm512_cvtepi64_epi32(b), 1);
    __mmask16 any = 0;
    for (int t = 0; t < 8; t++) {
        __mmask16 k = _mm512_mask_cmpeq_epi32_mask(in, d, taps[t]);
        any |= k;
        float *q = rows[t >> 1] + (t & 1) * C;
        __m512 v = _mm512_maskz_add_ps(k, z, g);
        if (FULL && nt)
            _mm512_stream_ps(q, v);
        else if (FULL)
            _mm512_storeu_ps(q, v);
        else
            _mm512_mask_storeu_ps(q, lm, v);
    }
    return ((any | nn) & lm) != lm;
}

__attribute__((target("avx512f,avx512dq"))) static int
cp_cl_fmax222_back_f32(float *gi, const float *go, const int64_t *idx, ptrdiff_t m0,
                      ptrdiff_t m1, ptrdiff_t OD, ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t C,
                      int nt)
{
    const ptrdiff_t H = 2 * OH, W = 2 * OW, HW = H * W;
    const ptrdiff_t cf = C & ~(ptrdiff_t)15;
    const __mmask16 tl = (__mmask16)((1u << (C - cf)) - 1);
    const __m512i span = _mm512_set1_epi64(HW + W + 2);
    __m512i taps[8];
    int bad = 0;
    nt = nt && (C & 15) == 0 && ((uintptr_t)gi & 63) == 0;
    for (int t = 0; t < 8; t++)      /* tap t = (a, b, e): depth a, row b, column e */
        taps[t] = _mm512_set1_epi32((int32_t)((t >> 2) * HW + ((t >> 1) & 1) * W + (t & 1)));
    for (ptrdiff_t m = m0; m < m1; m++) {
        const ptrdiff_t oh = m % OH, od = (m / OH) % OD, n = m / OH / OD;
        const int64_t p00 = ((int64_t)(2 * od) * H + 2 * oh) * W;   /* in the sample */
        float *base = gi + ((n * 2 * OD + 2 * od) * H + 2 * oh) * W * C;
        for (ptrdiff_t ow = 0; ow < OW; ow++) {
            const __m512i p = _mm512_set1_epi64(p00 + 2 * ow);
            const float *g0 = go + (m * OW + ow) * C;
            const int64_t *i0 = idx + (m * OW + ow) * C;
            float *rows[4];
            for (int r = 0; r < 4; r++)
                rows[r] = base + ((r >> 1) * HW + (r & 1) * W + 2 * ow) * C;
            ptrdiff_t c = 0;
            for (; c < cf; c += 16) {
                float *rc[4] = {rows[0] + c, rows[1] + c, rows[2] + c, rows[3] + c};
                bad |= cp_cl_fmax222_block(rc, g0 + c, i0 + c, p, span, taps, C, 0xFFFF, 1,
                                           nt);
            }
            if (c < C) {
                float *rc[4] = {rows[0] + c, rows[1] + c, rows[2] + c, rows[3] + c};
                bad |= cp_cl_fmax222_block(rc, g0 + c, i0 + c, p, span, taps, C, tl, 0, 0);
            }
        }
    }
    if (nt)
        _mm_sfence();
    return bad;
}

__attribute__((target("avx512f,avx512dq"))) static int
cp_fmax222_back_f32(float *gi, const float *go, const int64_t *idx, ptrdiff_t m0,
                    ptrdiff_t m1, ptrdiff_t OD, ptrdiff_t OH, ptrdiff_t OW, int nt)
{
    const ptrdiff_t W = 2 * OW, HW = 2 * OH * W, S = 2 * OD * HW;
    nt = nt && ((uintptr_t)gi & 63) == 0 && W % 16 == 0;
    for (ptrdiff_t m = m0; m < m1; m++) {
        const ptrdiff_t n = m / (OD * OH), od = m / OH % OD, oh = m % OH;
        const int32_t base = (int32_t)(2 * od * HW + 2 * oh * W);
        float *a = gi + n * S + base;
        for (ptrdiff_t o = 0; o < OW; o += 8) {
            const ptrdiff_t cnt = OW - o < 8 ? OW - o : 8;
            if (cp_fmax222_back_chunk(a + 2 * o, W, HW, go + m * OW + o, idx + m * OW + o,
                                      base + (int32_t)(2 * o), cnt, nt && cnt == 8))
                return 1;
        }
    }
    return 0;
}

/* Channels-first float32 window sums of kw <= 4 columns starting 2 apart,
 * 16 outputs a vector straight from the rows (even and odd columns as for
 * the max): y[o] (o < n) = 0 + each tap of output o's window in PyTorch's
 * order, row by row (rows[r], at column s0 + 2o), column by column. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_fsum2_vec(float *y, const float *const *rows, ptrdiff_t nr, ptrdiff_t o, ptrdiff_t m,
             ptrdiff_t KW, ptrdiff_t ahead)
{
    __m512 acc = _mm512_setzero_ps();
    for (ptrdiff_t r = 0; r < nr; r++) {
        const float *q = rows[r] + 2 * o;
        if (ahead) {
            _mm_prefetch((const char *)(q + ahead), _MM_HINT_T0);
            _mm_prefetch((const char *)(q + ahead + 16), _MM_HINT_T0);
        }
        for (ptrdiff_t t = 0; t < KW; t += 2) {
            __m512 va, vb;
            cp_pair_ld(q, t, m, KW, &va, &vb);
            acc = _mm512_add_ps(acc, cp_pair_tap(va, vb, 0));
            if (t + 1 < KW)
                acc = _mm512_add_ps(acc, cp_pair_tap(va, vb, 1));
        }
    }
    _mm512_mask_storeu_ps(y + o, (__mmask16)((1u << m) - 1), acc);
}

#define CP_DEFINE_FSUM2_ROW(KW)                                                           \
    __attribute__((target("avx512f,avx512dq"))) static void                                        \
    cp_fsum2_row##KW##_f32(float *y, const float *const *rows, ptrdiff_t nr, ptrdiff_t n, \
                           ptrdiff_t ahead)                                               \
    {                                                                                     \
        ptrdiff_t o;                                                                      \
        for (o = 0; o + 16 <= n; o += 16)                                                 \
            cp_fsum2_vec(y, rows, nr, o, 16, KW, ahead);                                  \
        if (o < n)                                                                        \
            cp_fsum2_vec(y, rows, nr, o, n - o, KW, ahead);                               \
    }

CP_DEFINE_FSUM2_ROW(1)
CP_DEFINE_FSUM2_ROW(2)
CP_DEFINE_FSUM2_ROW(3)
CP_DEFINE_FSUM2_ROW(4)

/* Channels-first float32 max backward of windows 2 apart along W (at most
 * 3 columns, padded by pw <= 1 before) and at most 3 rows along H (any
 * stride sh, padded by ph before), written densely: each input row once,
 * when no later window reads it, with no zeroing pass and no scatter.
 * Output column o's window has the columns 2 o - pw + dw (dw < kw) and the
 * rows oh sh - ph + dh (dh < kh), those outside the input being padding.
 * Each input row is summed in two halves, A[j] for column 2 j - pw (tap
 * dw = 0 of window j, dw = 2 of window j - 1) and B[j] for column
 * 2 j - pw + 1 (tap dw = 1 of window j), from +0 in PyTorch's scatter
 * order: window by window along the output row (tap dw = 2 of window j - 1
 * before dw = 0 of window j), output row by output row.  A term a window
 * does not take is +0, which leaves every sum as it is (no sum from +0 is
 * -0), so the sums are PyTorch's bits; each add's operands in that order
 * (cp_add_ord512: NaN payloads).  Then the halves, interleaved, are the
 * row (nt: streamed, W a multiple of 16 and gi aligned).  buf: 8 L floats
 * of scratch (4 rows of halves), L = cp_fmax_s2_buf(OW, W).  Returns 1 at
 * the first 16 windows where an index is neither -1 nor one of its own
 * window's taps in the input (rows written so far), so that the caller
 * falls back to the scatter, which takes any index as PyTorch does. */
/* how far ahead (windows) the indices and gradients are prefetched: the
 * (32, 64, 112, 112) k=3 s=2 backward 0.87x the time with 256 on Intel's
 * Emerald Rapids, at one thread and two */
#define CP_S2_AHEAD 256
static inline ptrdiff_t cp_fmax_s2_buf(ptrdiff_t OW, ptrdiff_t W)
{
    ptrdiff_t n = OW + 1 > W / 2 + 1 ? OW + 1 : W / 2 + 1;
    return (n + 15) / 16 * 16 + 32;
}

/* input row r (W floats at g) from its halves a, b (pw: which comes first) */
__attribute__((target("avx512f,avx512dq"))) static void
cp_fmax_s2_emit(float *g, const float *a, const float *b, ptrdiff_t W, int pw, int nt)
{
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7,
                                         23);
    const __m512i hi = _mm512_add_epi32(lo, _mm512_set1_epi32(8));
    /* columns 2 j, 2 j + 1: A[j], B[j] (pw 0) or B[j], A[j + 1] (pw 1) */
    const float *e = pw ? b : a, *o = pw ? a + 1 : b;
    for (ptrdiff_t j = 0; 2 * j < W; j += 16) {
        __m512 x = _mm512_loadu_ps(e + j), y = _mm512_loadu_ps(o + j);
        __m512 v0 = _mm512_permutex2var_ps(x, lo, y), v1 = _mm512_permutex2var_ps(x, hi, y);
        ptrdiff_t left = W - 2 * j;
        if (nt && left >= 32) {
            _mm512_stream_ps(g + 2 * j, v0);
            _mm512_stream_ps(g + 2 * j + 16, v1);
        } else if (nt && left == 16) {
            _mm512_stream_ps(g + 2 * j, v0);
        } else {
            CP_ST16(g + 2 * j, left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1), v0);
            if (left > 16)
                CP_ST16(g + 2 * j + 16,
                        left >= 32 ? 0xFFFF : (__mmask16)((1u << (left - 16)) - 1), v1);
        }
    }
}

__attribute__((target("avx512f,avx512dq"))) static int
cp_fmax_s2_back_f32(float *gi, const float *go, const int64_t *idx, ptrdiff_t H,
                    ptrdiff_t W, ptrdiff_t OH, ptrdiff_t OW, int kh, int ph, int sh, int kw,
                    int pw, float *buf, int nt)
{
    const ptrdiff_t L = cp_fmax_s2_buf(OW, W);
    const __m512i lane2 = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
                                            28, 30);
    const __m512 zero = _mm512_setzero_ps();
    ptrdiff_t rowof[4] = {-1, -1, -1, -1}, next = 0;
    nt = nt && (W & 15) == 0 && ((uintptr_t)gi & 63) == 0;
    for (ptrdiff_t oh = 0; oh < OH; oh++, go += OW, idx += OW) {
        const ptrdiff_t r0 = oh * sh - ph;
        for (; next < H && next < r0; next++) {             /* rows no later window reads */
            float *a = buf + (next & 3) * 2 * L;
            if (rowof[next & 3] != next)
                memset(a, 0, (size_t)(2 * L) * sizeof(float));
            cp_fmax_s2_emit(gi + next * W, a, a + L, W, pw, nt);
            rowof[next & 3] = -1;
        }
        float *ha[3] = {NULL, NULL, NULL};                 /* the window rows' halves */
        for (int dh = 0; dh < kh; dh++) {
            ptrdiff_t r = r0 + dh;
            if (r < 0 || r >= H)
                continue;
            ha[dh] = buf + (r & 3) * 2 * L;
            if (rowof[r & 3] != r) {
                memset(ha[dh], 0, (size_t)(2 * L) * sizeof(float));
                rowof[r & 3] = r;
            }
        }
        __m512 prev[3] = {zero, zero, zero};               /* tap dw = 2 of the last chunk */
        for (ptrdiff_t o0 = 0; o0 <= OW; o0 += 16) {
            ptrdiff_t n = OW - o0 < 16 ? OW - o0 : 16;
            __mmask16 lanes = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1);
            _mm_prefetch((const char *)(idx + o0 + CP_S2_AHEAD), _MM_HINT_T0);
            _mm_prefetch((const char *)(idx + o0 + CP_S2_AHEAD + 8), _MM_HINT_T0);
            _mm_prefetch((const char *)(go + o0 + CP_S2_AHEAD), _MM_HINT_T0);
            __m512 g = _mm512_maskz_loadu_ps(lanes, go + o0);
            __m256i q0 = _mm512_cvtsepi64_epi32(
                _mm512_maskz_loadu_epi64((__mmask8)lanes, (const void *)(idx + o0)));
            __m256i q1 = _mm512_cvtsepi64_epi32(
                _mm512_maskz_loadu_epi64((__mmask8)(lanes >> 8), (const void *)(idx + o0 + 8)));
            __m512i iv = _mm512_inserti64x4(_mm512_castsi256_si512(q0), q1, 1);
            __mmask16 nn = _mm512_mask_cmpneq_epi32_mask(lanes, iv, _mm512_set1_epi32(-1));
            __mmask16 ok = _mm512_mask_cmpge_epi32_mask(lanes, iv, _mm512_setzero_si512());
            /* columns 2 o - pw + dw (dw = 0, 1, 2) inside the input */
            __m512i col = _mm512_add_epi32(lane2, _mm512_set1_epi32((int32_t)(2 * o0 - pw)));
            __mmask16 cm[3];
            for (int dw = 0; dw < 3; dw++)
                cm[dw] = 2 * o0 - pw + dw >= 0 && 2 * o0 - pw + 30 + dw < W
                             ? ok
                             : _mm512_mask_cmplt_epi32_mask(
                                   _mm512_mask_cmpge_epi32_mask(ok, col, _mm512_set1_epi32(-dw)),
                                   col, _mm512_set1_epi32((int32_t)W - dw));
            __m512i rel = _mm512_sub_epi32(
                iv, _mm512_add_epi32(col, _mm512_set1_epi32((int32_t)(r0 * W))));
            __mmask16 hit = 0;
            for (int dh = 0; dh < kh; dh++) {
                if (ha[dh] == NULL)
                    continue;
                float *A = ha[dh] + o0, *B = ha[dh] + L + o0;
                const int32_t t = (int32_t)(dh * W);
                __mmask16 m0 = _mm512_mask_cmpeq_epi32_mask(cm[0], rel, _mm512_set1_epi32(t));
                hit |= m0;
                __m512 acc = _mm512_loadu_ps(A);
                if (kw == 3) {
                    __mmask16 m2 = _mm512_mask_cmpeq_epi32_mask(cm[2], rel,
                                                                _mm512_set1_epi32(t + 2));
                    __m512 v2 = _mm512_maskz_mov_ps(m2, g);
                    hit |= m2;
                    acc = cp_add_ord512(acc, _mm512_castsi512_ps(_mm512_alignr_epi32(
                                                 _mm512_castps_si512(v2),
                                                 _mm512_castps_si512(prev[dh]), 15)));
                    prev[dh] = v2;
                }
                acc = cp_add_ord512(acc, _mm512_maskz_mov_ps(m0, g));
                _mm512_storeu_ps(A, acc);
                if (kw >= 2) {
                    __mmask16 m1 = _mm512_mask_cmpeq_epi32_mask(cm[1], rel,
                                                                _mm512_set1_epi32(t + 1));
                    hit |= m1;
                    _mm512_storeu_ps(B, cp_add_ord512(_mm512_loadu_ps(B),
                                                      _mm512_maskz_mov_ps(m1, g)));
                }
            }
            if (hit != nn)
                return 1;
        }
    }
    for (; next < H; next++) {
        float *a = buf + (next & 3) * 2 * L;
        if (rowof[next & 3] != next)
            memset(a, 0, (size_t)(2 * L) * sizeof(float));
        cp_fmax_s2_emit(gi + next * W, a, a + L, W, pw, nt);
        rowof[next & 3] = -1;
    }
    if (nt)
        _mm_sfence();
    return 0;
}

#else
static int cp_fmax2_ok(void) { return 0; }
static int cp_gather_ok(void) { return 0; }
static int cp_use_gathers(int flag) { (void)flag; return 0; }
static void cp_fmax22_rows_f32(float *y, int64_t *yi, const float *x, ptrdiff_t P,
                               ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t H, ptrdiff_t W,
                               ptrdiff_t OH, ptrdiff_t OW)
{
    (void)y; (void)yi; (void)x; (void)P; (void)m0; (void)m1; (void)H; (void)W; (void)OH; (void)OW;
}
static void cp_favg22_rows_f32(float *y, const float *x, ptrdiff_t P, ptrdiff_t m0,
                               ptrdiff_t m1, ptrdiff_t H, ptrdiff_t W, ptrdiff_t OH,
                               ptrdiff_t OW, int mode, float d, int nt, ptrdiff_t ahead)
{
    (void)y; (void)x; (void)P; (void)m0; (void)m1; (void)H; (void)W; (void)OH; (void)OW;
    (void)mode; (void)d; (void)nt; (void)ahead;
}
static int64_t cp_cl_max_back_row_f32(float *gr, const float *go, const int64_t *idx,
                                      const ptrdiff_t *orow, ptrdiff_t nrow, int64_t pbase,
                                      ptrdiff_t W, ptrdiff_t C, const int64_t *wptr,
                                      const int64_t *wouts, ptrdiff_t *off, int nt)
{
    (void)gr; (void)go; (void)idx; (void)orow; (void)nrow; (void)pbase; (void)W; (void)C;
    (void)wptr; (void)wouts; (void)off; (void)nt;
    return -1;
}
static int64_t cp_count_not_none(const int64_t *ip, ptrdiff_t n)
{
    (void)ip; (void)n;
    return -1;
}
static void cp_avg22_back_f32(float *gi, const float *go, ptrdiff_t m0, ptrdiff_t m1,
                              ptrdiff_t H, ptrdiff_t W, ptrdiff_t OH, ptrdiff_t OW, int mode,
                              float d, float *stage, int nt)
{
    (void)gi; (void)go; (void)m0; (void)m1; (void)H; (void)W; (void)OH; (void)OW; (void)mode;
    (void)d; (void)stage; (void)nt;
}
static int cp_stream_lines(void *dst, const void *src, size_t n)
{
    (void)dst; (void)src; (void)n;
    return 0;
}
static void cp_avg22_back_cl_f32(float *gi, const float *go, ptrdiff_t m0, ptrdiff_t m1,
                                 ptrdiff_t H, ptrdiff_t W, ptrdiff_t OH, ptrdiff_t OW,
                                 ptrdiff_t C, int mode, float d, int nt)
{
    (void)gi; (void)go; (void)m0; (void)m1; (void)H; (void)W; (void)OH; (void)OW; (void)C;
    (void)mode; (void)d; (void)nt;
}
static void cp_fmax32_rows_f32(float *yp, int64_t *ip, const float *xp, const float *x,
                               const float *xend, ptrdiff_t H, ptrdiff_t W, ptrdiff_t OH,
                               ptrdiff_t OW, ptrdiff_t oh0, ptrdiff_t oh1, float *hv,
                               int32_t *hi, float *yend, float *sv, int32_t *si,
                               ptrdiff_t chunk, int nt)
{
    (void)yp; (void)ip; (void)xp; (void)x; (void)xend; (void)H; (void)W; (void)OH; (void)OW;
    (void)oh0; (void)oh1; (void)hv; (void)hi; (void)yend; (void)sv; (void)si; (void)chunk;
    (void)nt;
}
static inline ptrdiff_t cp_fmax_s2_buf(ptrdiff_t OW, ptrdiff_t W)
{
    (void)OW; (void)W;
    return 0;
}
static int cp_fmax_s2_back_f32(float *gi, const float *go, const int64_t *idx, ptrdiff_t H,
                               ptrdiff_t W, ptrdiff_t OH, ptrdiff_t OW, int kh, int ph, int sh,
                               int kw, int pw, float *buf, int nt)
{
    (void)gi; (void)go; (void)idx; (void)H; (void)W; (void)OH; (void)OW; (void)kh; (void)ph;
    (void)sh; (void)kw; (void)pw; (void)buf; (void)nt;
    return 1;
}
static int cp_fmax22_back_f32(float *gi, const float *go, const int64_t *idx, ptrdiff_t m0,
                              ptrdiff_t m1, ptrdiff_t H, ptrdiff_t W, ptrdiff_t OH,
                              ptrdiff_t OW)
{
    (void)gi; (void)go; (void)idx; (void)m0; (void)m1; (void)H; (void)W; (void)OH; (void)OW;
    return 1;
}
static int cp_fmax222_back_f32(float *gi, const float *go, const int64_t *idx, ptrdiff_t m0,
                               ptrdiff_t m1, ptrdiff_t OD, ptrdiff_t OH, ptrdiff_t OW, int nt)
{
    (void)gi; (void)go; (void)idx; (void)m0; (void)m1; (void)OD; (void)OH; (void)OW; (void)nt;
    return 1;
}
static int cp_cl_fmax222_back_f32(float *gi, const float *go, const int64_t *idx,
                                  ptrdiff_t m0, ptrdiff_t m1, ptrdiff_t OD, ptrdiff_t OH,
                                  ptrdiff_t OW, ptrdiff_t C, int nt)
{
    (void)gi; (void)go; (void)idx; (void)m0; (void)m1; (void)OD; (void)OH; (void)OW; (void)C;
    (void)nt;
    return 1;
}
#endif

static void cp_fsum2_row_f32(float *y, const float *const *rows, ptrdiff_t nr, ptrdiff_t n,
                             ptrdiff_t kw, ptrdiff_t ahead)
{
#ifdef CP_HAVE_WINDOW_MAX
    switch (kw) {
    case 1: cp_fsum2_row1_f32(y, rows, nr, n, ahead); break;
    case 2: cp_fsum2_row2_f32(y, rows, nr, n, ahead); break;
    case 3: cp_fsum2_row3_f32(y, rows, nr, n, ahead); break;
    default: cp_fsum2_row4_f32(y, rows, nr, n, ahead); break;
    }
#else
    (void)y; (void)rows; (void)nr; (void)n; (void)kw; (void)ahead;
#endif
}

static void cp_fmax2_item_f32(float *y, int64_t *yi, const float *xp, ptrdiff_t H,
                              ptrdiff_t W, ptrdiff_t OW, ptrdiff_t d0, ptrdiff_t nd,
                              ptrdiff_t dstep, const int64_t *hs, const int64_t *hc,
                              ptrdiff_t hstep, ptrdiff_t oh0, ptrdiff_t oh1,
                              const int64_t *ws, const int64_t *wc, ptrdiff_t kw,
                              ptrdiff_t ulo, ptrdiff_t uhi, float *rv, int32_t *ri,
                              ptrdiff_t *tags, ptrdiff_t RS, ptrdiff_t ahead, int nt)
{
#ifdef CP_HAVE_WINDOW_MAX
#define CP_FMAX2_CALL(KW)                                                                 \
    cp_fmax2_item##KW##_f32(y, yi, xp, H, W, OW, d0, nd, dstep, hs, hc, hstep, oh0, oh1,  \
                            ws, wc, ulo, uhi, rv, ri, tags, RS, ahead, nt)
    switch (kw) {
    case 1: CP_FMAX2_CALL(1); break;
    case 2: CP_FMAX2_CALL(2); break;
    case 3: CP_FMAX2_CALL(3); break;
    default: CP_FMAX2_CALL(4); break;
    }
#undef CP_FMAX2_CALL
#else                                   /* (not called: cp_fmax2_ok() is 0) */
    (void)y; (void)yi; (void)xp; (void)H; (void)W; (void)OW; (void)d0; (void)nd;
    (void)dstep; (void)hs; (void)hc; (void)hstep; (void)oh0; (void)oh1; (void)ws;
    (void)wc; (void)kw; (void)ulo; (void)uhi; (void)rv; (void)ri; (void)tags; (void)RS;
    (void)ahead; (void)nt;
#endif
}

#define CP_IMAX_CASES(CALL)                                                               \
    switch (code) {                                                                       \
    case 0: CALL(int8_t, i8); break;                                                      \
    case 1: CALL(uint8_t, u8); break;                                                     \
    case 2: CALL(int16_t, i16); break;                                                    \
    case 3: CALL(uint16_t, u16); break;                                                   \
    case 4: CALL(int32_t, i32); break;                                                    \
    case 5: CALL(uint32_t, u32); break;                                                   \
    case 6: CALL(int64_t, i64); break;                                                    \
    default: CALL(uint64_t, u64); break;                                                  \
    }

#define CP_ROWMAX_CALL(T, SUFFIX)                                                         \
    cp_rowmax_##SUFFIX((T *)b, (const T *)r, (const T *)r2, n, first)
static void cp_int_rowmax(int code, void *b, const void *r, const void *r2, ptrdiff_t n,
                          int first)
{
    CP_IMAX_CASES(CP_ROWMAX_CALL)
}

/* init: the type's lowest value, as a bit pattern of the type's width */
#define CP_COLMAX_CALL(T, SUFFIX)                                                         \
    cp_colmax_##SUFFIX((T *)y, (const T *)b, (T *)e, W, n, C, start, count, k, sw,        \
                       *(const T *)init, ulo, uhi)
/* k: the most columns of any window (count's maximum); outputs [ulo, uhi):
 * windows of k columns starting 2 apart (none when uhi <= ulo) */
static void cp_int_colmax(int code, void *y, const void *b, void *e, ptrdiff_t W, ptrdiff_t n,
                          ptrdiff_t C, const int64_t *start, const int64_t *count,
                          ptrdiff_t k, ptrdiff_t sw, const void *init, ptrdiff_t ulo,
                          ptrdiff_t uhi)
{
    CP_IMAX_CASES(CP_COLMAX_CALL)
}

/* Whether any of the n indices ip[i] lies outside [lo, hi) and is not -1 (a
 * max backward's check that each index lies within its window's rows): one
 * pass with no early exit, which the compiler vectorizes. */
CP_CLONES static int cp_index_outside(const int64_t *restrict ip, ptrdiff_t n, int64_t lo,
                                      int64_t hi)
{
    int64_t any = 0;
    uint64_t span = (uint64_t)(hi - lo);
    for (ptrdiff_t i = 0; i < n; i++)
        any |= ((uint64_t)(ip[i] - lo) >= span) & (ip[i] != -1);
    return any != 0;
}

/* The channels-last max backward of n outputs (C lanes each) into input
 * positions [jlo, jhi) (a band of rows, see _band_item, or the whole plane,
 * _scatter_item): gp[j*C + c] += op[o*C + c] for j = ip[o*C + c], for the
 * channels c in [c0, c1), in output order.  AVX-512F: 16 channels of an
 * output at a time, a gather, the adds, a scatter; the channels' addresses
 * differ, so the lanes never collide and each element gets its terms in
 * order.  With bad, an index outside [clo, chi) other than -1 sets *bad (the
 * check of cp_index_outside, made on the indices as they are loaded).
 * Needs jhi * C < 2**31.  Returns 1 when done (0 without AVX-512F). */
#ifdef CP_HAVE_WINDOW_MAX
__attribute__((target("avx512f,avx512dq"))) static int
cp_scatter512_f32(float *gp, const float *op, const int64_t *ip, ptrdiff_t n, ptrdiff_t C,
                  ptrdiff_t c0, ptrdiff_t c1, int64_t jlo, int64_t jhi, int64_t clo,
                  int64_t chi, int *bad)
{
    const __m512i lo = _mm512_set1_epi64(jlo), hi = _mm512_set1_epi64(jhi);
    const __m512i none = _mm512_set1_epi64(-1);
    const __m512i cl = _mm512_set1_epi64(clo), cspan = _mm512_set1_epi64(chi - clo);
    const __m512i cc = _mm512_set1_epi32((int32_t)C);
    const __m512i iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    int odd = 0;
    for (ptrdiff_t o = 0; o < n; o++) {
        const int64_t *q = ip + o * C;
        const float *v = op + o * C;
        for (ptrdiff_t c = c0; c < c1; c += 16) {
            ptrdiff_t rem = c1 - c < 16 ? c1 - c : 16;
            __mmask16 lanes = (__mmask16)((1u << rem) - 1);
            __m512i j0 = _mm512_maskz_loadu_epi64((__mmask8)lanes, q + c);
            __m512i j1 = _mm512_maskz_loadu_epi64((__mmask8)(lanes >> 8), q + c + 8);
            __mmask8 k0 = _mm512_cmp_epi64_mask(j0, lo, _MM_CMPINT_NLT) &
                          _mm512_cmp_epi64_mask(j0, hi, _MM_CMPINT_LT) & (__mmask8)lanes;
            __mmask8 k1 = _mm512_cmp_epi64_mask(j1, lo, _MM_CMPINT_NLT) &
                          _mm512_cmp_epi64_mask(j1, hi, _MM_CMPINT_LT) & (__mmask8)(lanes >> 8);
            if (bad)            /* outside [clo, chi), not -1 */
                odd |= _mm512_mask_cmp_epi64_mask(
                           _mm512_mask_cmp_epu64_mask((__mmask8)lanes, _mm512_sub_epi64(j0, cl),
                                                      cspan, _MM_CMPINT_NLT),
                           j0, none, _MM_CMPINT_NE) |
                       _mm512_mask_cmp_epi64_mask(
                           _mm512_mask_cmp_epu64_mask((__mmask8)(lanes >> 8),
                                                      _mm512_sub_epi64(j1, cl), cspan,
                                                      _MM_CMPINT_NLT),
                           j1, none, _MM_CMPINT_NE);
            __mmask16 take = (__mmask16)(k0 | ((unsigned)k1 << 8));
            if (!take)
                continue;
            __m512i j = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(j0)),
                                           _mm512_cvtepi64_epi32(j1), 1);
            __m512i a = _mm512_add_epi32(_mm512_mullo_epi32(j, cc),
                                         _mm512_add_epi32(iota, _mm512_set1_epi32((int32_t)c)));
            __m512 s = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), take, a, gp, 4);
            s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(take, v + c));
            _mm512_mask_i32scatter_ps(gp, take, a, s, 4);
        }
    }
    if (bad && odd)
        *bad = 1;
    return 1;
}
/* Not on AMD's cores: Zen 4 and 5 run a 16-lane scatter as microcode, and
 * the plain loop measured 2.3x faster on Zen 5 (max_pool3d k=2 backward,
 * (4, 32, 32, 64, 64) channels-last; the batch-1 stem backward 1.1x). */
#define CP_SCATTER_DISPATCH                                                               \
    return cp_window_isa() == 2 && cp_gather_fast()                                       \
        ? cp_scatter512_f32(gp, op, ip, n, C, c0, c1, jlo, jhi, clo, chi, bad) : 0;
#else
#define CP_SCATTER_DISPATCH return 0;
#endif

static int cp_scatter_lanes_f32(float *gp, const float *op, const int64_t *ip, ptrdiff_t n,
                                ptrdiff_t C, ptrdiff_t c0, ptrdiff_t c1, int64_t jlo,
                                int64_t jhi, int64_t clo, int64_t chi, int *bad)
{
    CP_SCATTER_DISPATCH
}

/* cp_sum_planes: cp_sum of each of np planes of n contiguous values.  For
 * float32 planes of fewer than 256 values (global pooling of 7 x 7 and the
 * like) AVX-512F and AVX2 versions do cp_sum16's additions with one (two)
 * registers of partial sums and the tree spelt out in halves: the same additions in the
 * same order, so the same bits, without the generic loop's overhead. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(CYPOOL_NO_MULTIVERSION)
#define CP_PLANES_AHEAD 8192   /* bytes: each plane prefetches the planes this far on */
/* the plane at q: prefetch the planes CP_PLANES_AHEAD bytes on */
static inline void cp_planes_prefetch(const float *q, ptrdiff_t n)
{
    /* each line once: the lines that start in [q, q + n) CP_PLANES_AHEAD
     * bytes on (planes of 49 floats prefetching every 16 floats of their
     * own issued 4 prefetches for about 3 lines, consecutive planes the
     * same lines again: the (64, 2048, 7, 7) global average took
     * 0.86-1.0x the time at 1 thread and 0.85-0.94x at 2 with one a line,
     * Emerald Rapids) */
    uintptr_t a = ((uintptr_t)q + CP_PLANES_AHEAD + 63) & ~(uintptr_t)63;
    uintptr_t e = (uintptr_t)(q + n) + CP_PLANES_AHEAD;
    for (; a < e; a += 64)
        __builtin_prefetch((const void *)a, 0, 3);
}


/* cp_sum16's last steps from the sums of partial sums j and j + 8 (a8):
 * the tree in halves, then the values from full to n in order, every add
 * with its operands in cp_sum16's order (so the NaN a sum keeps is the
 * first one in that order, as the AVX-512 and AVX2 loops both give it) */
__attribute__((target("avx2"), always_inline)) static inline float
cp_sum16_finish(__m256 a8, const float *q, ptrdiff_t full, ptrdiff_t n)
{
    __m128 a4 = cp_add_ord128(_mm256_castps256_ps128(a8), _mm256_extractf128_ps(a8, 1));
    __m128 a2 = cp_add_ord128(a4, _mm_movehl_ps(a4, a4));        /* [0]+[2], [1]+[3] */
    float s = cp_add_ord_ss(_mm_cvtss_f32(a2),                    /* [0]+[1] */
                            _mm_cvtss_f32(_mm_shuffle_ps(a2, a2, 1)));
    for (ptrdiff_t i = full; i < n; i++)
        s = cp_add_ord_ss(s, q[i]);
    return s;
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_sum16_planes512_f32(const float *x, ptrdiff_t n, ptrdiff_t np, float *out)
{
    ptrdiff_t full = n / 16 * 16;
    for (ptrdiff_t p = 0; p < np; p++) {
        const float *q = x + p * n;
        cp_planes_prefetch(q, n);
        __m512 acc = _mm512_setzero_ps();
        for (ptrdiff_t i = 0; i < full; i += 16)
            acc = cp_add_ord512(acc, _mm512_loadu_ps(q + i));
        __m256 a8 = cp_add_ord256(_mm512_castps512_ps256(acc),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(acc), 1)));
        out[p] = cp_sum16_finish(a8, q, full, n);
    }
}
/* the same with AVX2: the 16 partial sums in two registers */
__attribute__((target("avx2"))) static void
cp_sum16_planes256_f32(const float *x, ptrdiff_t n, ptrdiff_t np, float *out)
{
    ptrdiff_t full = n / 16 * 16;
    for (ptrdiff_t p = 0; p < np; p++) {
        const float *q = x + p * n;
        cp_planes_prefetch(q, n);
        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
        for (ptrdiff_t i = 0; i < full; i += 16) {
            lo = cp_add_ord256(lo, _mm256_loadu_ps(q + i));
            hi = cp_add_ord256(hi, _mm256_loadu_ps(q + i + 8));
        }
        out[p] = cp_sum16_finish(cp_add_ord256(lo, hi), q, full, n);   /* [j] + [j+8] */
    }
}
#define CP_SUM_PLANES_F32_FAST(x, n, np, out)                                            \
    if ((n) < 256 && cp_window_isa() == 2) {                                              \
        cp_sum16_planes512_f32(x, n, np, out);                                            \
        return;                                                                           \
    }                                                                                     \
    if ((n) < 256 && cp_window_isa() == 1) {                                              \
        cp_sum16_planes256_f32(x, n, np, out);                                            \
        return;                                                                           \
    }
#else
#define CP_SUM_PLANES_F32_FAST(x, n, np, out)
#endif

static void cp_sum_planes_f32(const float *x, ptrdiff_t n, ptrdiff_t np, float *out)
{
    CP_SUM_PLANES_F32_FAST(x, n, np, out)
    cp_sum_planes_any_f32(x, n, np, out);
}

static void cp_sum_planes_f64(const double *x, ptrdiff_t n, ptrdiff_t np, double *out)
{
    cp_sum_planes_any_f64(x, n, np, out);
}

/* Exact float32 division by integer divisors, from their reciprocals.  For a
 * divisor d with |d| <= CP_RDIV_MAX and r = RN(1/d), q0 = RN(a*r), then
 * q = RN(q0 + (a - q0*d)*r) with both steps fused multiply-adds (the
 * remainder is exact) is RN(a/d), the IEEE quotient, bit for bit: Markstein's
 * theorem, and checked exhaustively for every odd d < 65536 against every
 * significand of a (tests/divcheck.c; even divisors and a's exponent only
 * scale both sides).  That holds while nothing underflows or overflows.
 * With AVX-512 (cp_rdiv512) the lanes whose q0 is a normal number or +0
 * keep q: with q0 normal the remainder is a multiple of q0's ulp (at least
 * 2^-149) below 2^16 of them, so exact; where the quotient is just below
 * 2^-126 the subnormal spacing is that of [2^-126, 2^-125), so q still
 * rounds as at the checked exponents; and q0 = +0 comes only from a zero a
 * (-0 only for d < 0, whose quotient is +0, as q is) or a subnormal a whose
 * quotient is at most 2^-150 and so rounds to +0, as q does.  Every other lane (q0 subnormal, -0, inf or NaN)
 * takes a true division; tests/divcheck.c checks every significand at the
 * exponents around 2^-126 and the largest (mode -1).  Elsewhere (AVX2) the
 * lanes kept are |a| in [2^-40, 2^100], or a = +0.  Three multiplies in
 * place of a division, which AVX-512 issues at most once every several
 * cycles. */
#define CP_RDIV_MAX 65535
#define CP_RDIV_LO 0x2B800000     /* 2^-40 as float bits */
#define CP_RDIV_HI 0x71800000     /* 2^100 */

/* True when cp_rdiv_row_f32 may divide by d (an integer, not 0). */
static inline int cp_rdiv_ok(double d)
{
    return d != 0 && d >= -CP_RDIV_MAX && d <= CP_RDIV_MAX && d == (double)(long long)d;
}

#ifdef CP_HAVE_WINDOW_MAX
__attribute__((target("avx512f,avx512dq"))) static inline __m512
cp_rdiv512(__m512 a, __m512 d, __m512 r)
{
    __m512 q0 = _mm512_mul_ps(a, r);
    __m512 q = _mm512_fmadd_ps(_mm512_fnmadd_ps(q0, d, a), r, q0);
    /* the lanes to divide: q0 a NaN (0x01 quiet, 0x80 signalling), -0
     * (0x04), an infinity (0x08, 0x10) or subnormal (0x20) */
    __mmask16 bad = _mm512_fpclass_ps_mask(q0, 0xBD);
    if (bad)
        q = _mm512_mask_div_ps(q, bad, a, d);
    return q;
}

/* y[i] = 0 + y[i] / d[i*ds] for i < the returned count (a multiple of 16),
 * and +0 where d[i*ds] is 0 (a window with no divisor has no taps); r[i*ds]
 * is RN(1/d[i*ds]) (0 where d is 0); ds is 1 or 0 (one divisor for all). */
__attribute__((target("avx512f,avx512dq"))) static ptrdiff_t
cp_rdiv_row512(float *y, ptrdiff_t n, const float *d, const float *r, ptrdiff_t ds)
{
    ptrdiff_t i = 0;
    const __m512 z = _mm512_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m512 dv = ds ? _mm512_loadu_ps(d + i) : _mm512_set1_ps(d[0]);
        __m512 rv = ds ? _mm512_loadu_ps(r + i) : _mm512_set1_ps(r[0]);
        __m512 q = cp_rdiv512(_mm512_loadu_ps(y + i), dv, rv);
        __mmask16 nz = _mm512_cmpneq_ps_mask(dv, z);
        _mm512_storeu_ps(y + i, _mm512_maskz_add_ps(nz, z, q));
    }
    return i;
}

__attribute__((target("avx2,fma"))) static ptrdiff_t
cp_rdiv_row256(float *y, ptrdiff_t n, const float *d, const float *r, ptrdiff_t ds)
{
    ptrdiff_t i = 0;
    const __m256 z = _mm256_setzero_ps();
    const __m256i lo = _mm256_set1_epi32(CP_RDIV_LO - 1), hi = _mm256_set1_epi32(CP_RDIV_HI + 1);
    const __m256i absm = _mm256_set1_epi32(0x7fffffff);
    for (; i + 8 <= n; i += 8) {
        __m256 dv = ds ? _mm256_loadu_ps(d + i) : _mm256_set1_ps(d[0]);
        __m256 rv = ds ? _mm256_loadu_ps(r + i) : _mm256_set1_ps(r[0]);
        __m256 a = _mm256_loadu_ps(y + i);
        __m256 q0 = _mm256_mul_ps(a, rv);
        __m256 q = _mm256_fmadd_ps(_mm256_fnmadd_ps(q0, dv, a), rv, q0);
        __m256i b = _mm256_castps_si256(a), m = _mm256_and_si256(b, absm);
        __m256i ok = _mm256_or_si256(
            _mm256_and_si256(_mm256_cmpgt_epi32(m, lo), _mm256_cmpgt_epi32(hi, m)),
            _mm256_cmpeq_epi32(b, _mm256_setzero_si256()));
        if (_mm256_movemask_ps(_mm256_castsi256_ps(ok)) != 0xFF)
            q = _mm256_blendv_ps(_mm256_div_ps(a, dv), q, _mm256_castsi256_ps(ok));
        q = _mm256_add_ps(z, q);
        _mm256_storeu_ps(y + i, _mm256_and_ps(q, _mm256_cmp_ps(dv, z, _CMP_NEQ_OQ)));
    }
    return i;
}

static int cp_rdiv_level = -1;

static ptrdiff_t cp_rdiv_row_f32(float *y, ptrdiff_t n, const float *d, const float *r,
                                 ptrdiff_t ds)
{
    if (cp_rdiv_level < 0)
        cp_rdiv_level = __builtin_cpu_supports("fma") ? 1 : 0;
    int isa = cp_window_isa();
    if (isa == 2)
        return cp_rdiv_row512(y, n, d, r, ds);
    if (isa == 1 && cp_rdiv_level)
        return cp_rdiv_row256(y, n, d, r, ds);
    return 0;
}
#else
static ptrdiff_t cp_rdiv_row_f32(float *y, ptrdiff_t n, const float *d, const float *r,
                                 ptrdiff_t ds)
{
    (void)y; (void)n; (void)d; (void)r; (void)ds;
    return 0;
}
#endif

/* _finish_avg's mode 0 (adaptive extents) for a row of one set of
 * divisors: y[i] = ((y[i] / d1) / d2) / d3 for i < n, each quotient IEEE's.
 * Divisors of 1 are left out (x / 1 is x; a NaN comes out of the next
 * division quieted as it would out of this one; with all three 1, one is
 * kept), and with AVX-512F the others divide by exact reciprocals where
 * cp_rdiv_ok takes them (cp_rdiv512, which divides the lanes outside its
 * range truly).  vdivps issues once every several cycles: three of them a
 * vector were a tenth of a global average's time. */
#ifdef CP_HAVE_WINDOW_MAX
__attribute__((target("avx512f,avx512dq"))) static void
cp_div3_row512(float *y, ptrdiff_t n, const float *d, int k)
{
    __m512 dv[3], rv[3];
    int ok[3];
    for (int j = 0; j < k; j++) {
        ok[j] = cp_rdiv_ok(d[j]);
        dv[j] = _mm512_set1_ps(d[j]);
        rv[j] = _mm512_set1_ps(ok[j] ? 1.0f / d[j] : 0.0f);
    }
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 a = _mm512_loadu_ps(y + i);
        for (int j = 0; j < k; j++)
            a = ok[j] ? cp_rdiv512(a, dv[j], rv[j]) : _mm512_div_ps(a, dv[j]);
        _mm512_storeu_ps(y + i, a);
    }
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m512 a = _mm512_maskz_loadu_ps(m, y + i);
        for (int j = 0; j < k; j++)
            a = ok[j] ? cp_rdiv512(a, dv[j], rv[j]) : _mm512_div_ps(a, dv[j]);
        _mm512_mask_storeu_ps(y + i, m, a);
    }
}
#endif

static void cp_div3_row_f32(float *y, ptrdiff_t n, double d1, double d2, double d3)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() == 2) {
        float d[3];
        int k = 0;
        if (d1 != 1)
            d[k++] = (float)d1;
        if (d2 != 1)
            d[k++] = (float)d2;
        if (d3 != 1)
            d[k++] = (float)d3;
        if (k == 0)
            d[k++] = 1.0f;
        cp_div3_row512(y, n, d, k);
        return;
    }
#endif
    const float t1 = (float)d1, t2 = (float)d2, t3 = (float)d3;
    for (ptrdiff_t i = 0; i < n; i++)
        y[i] = ((y[i] / t1) / t2) / t3;
}

/* cp_finish_row's mode 1 with one divisor per output: y[i] = 0 + y[i] / d[i]
 * (+0 where d[i] is 0), r[i] = RN(1/d[i]), every d[i] passing cp_rdiv_ok or 0. */
static void cp_finish_rdiv_f32(float *y, ptrdiff_t n, const float *d, const float *r)
{
    for (ptrdiff_t i = cp_rdiv_row_f32(y, n, d, r, 1); i < n; i++)
        y[i] = d[i] == 0 ? 0.0f : 0 + y[i] / d[i];
}

#ifdef CP_HAVE_WINDOW_MAX
/* y[i] = 0 + (the sum of x[offs[t] + i] over taps t, in order, from +0.0)
 * / d[i], +0 where d[i] is 0: cp_window_add's sums and cp_finish_rdiv_f32's
 * divisions in one pass, the sums kept in registers.  Returns how many
 * outputs it did (a multiple of 16). */
__attribute__((target("avx512f,avx512dq"))) static ptrdiff_t
cp_window_avg_rdiv512(float *y, const float *x, ptrdiff_t n, const ptrdiff_t *offs,
                      ptrdiff_t taps, const float *d, const float *r)
{
    const __m512 z = _mm512_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 a[4] = {z, z, z, z};
        for (ptrdiff_t t = 0; t < taps; t++) {
            const float *p = x + offs[t] + i;
            a[0] = _mm512_add_ps(a[0], _mm512_loadu_ps(p));
            a[1] = _mm512_add_ps(a[1], _mm512_loadu_ps(p + 16));
            a[2] = _mm512_add_ps(a[2], _mm512_loadu_ps(p + 32));
            a[3] = _mm512_add_ps(a[3], _mm512_loadu_ps(p + 48));
        }
        for (int j = 0; j < 4; j++) {
            __m512 dv = _mm512_loadu_ps(d + i + 16 * j);
            __m512 q = cp_rdiv512(a[j], dv, _mm512_loadu_ps(r + i + 16 * j));
            _mm512_storeu_ps(y + i + 16 * j,
                             _mm512_maskz_add_ps(_mm512_cmpneq_ps_mask(dv, z), z, q));
        }
    }
    for (; i + 16 <= n; i += 16) {
        __m512 a = z;
        for (ptrdiff_t t = 0; t < taps; t++)
            a = _mm512_add_ps(a, _mm512_loadu_ps(x + offs[t] + i));
        __m512 dv = _mm512_loadu_ps(d + i);
        __m512 q = cp_rdiv512(a, dv, _mm512_loadu_ps(r + i));
        _mm512_storeu_ps(y + i, _mm512_maskz_add_ps(_mm512_cmpneq_ps_mask(dv, z), z, q));
    }
    return i;
}
#endif

/* Window averages of n outputs in one pass: y[i] = 0 + (sum of x[offs[t] + i]
 * over the taps, in order, from +0.0) / d[i] (+0 where d[i] is 0), with
 * r[i] = RN(1/d[i]) and every d[i] passing cp_rdiv_ok or 0. */
static void cp_window_avg_rdiv_f32(float *y, const float *x, ptrdiff_t n,
                                   const ptrdiff_t *offs, ptrdiff_t taps, const float *d,
                                   const float *r)
{
    ptrdiff_t i0 = 0;
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() == 2)
        i0 = cp_window_avg_rdiv512(y, x, n, offs, taps, d, r);
#endif
    if (i0 < n) {
        cp_window_add_f32(y + i0, x + i0, n - i0, offs, taps, -1, 0, 0, 0);
        cp_finish_rdiv_f32(y + i0, n - i0, d + i0, r + i0);
    }
}

#ifdef CP_HAVE_WINDOW_MAX
/* cp_window_avg_by_f32's lanes in whole vectors: the sums start from their
 * first tap (the same bits as from +0.0 but for a sum of -0.0 taps only,
 * which the 0 + q below makes +0.0 as PyTorch's is); returns the lanes done. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline ptrdiff_t
cp_window_avg_by512_one(float *y, const float *x, ptrdiff_t n, const ptrdiff_t *offs,
                        ptrdiff_t taps, float d, float r, int nt)
{
    const __m512 z = _mm512_setzero_ps(), dv = _mm512_set1_ps(d), rv = _mm512_set1_ps(r);
    uint32_t db;
    memcpy(&db, &d, sizeof db);
    const int pow2 = (db & 0x807FFFFFu) == 0 && d != 0;   /* +2^k (d is a normal count) */
    ptrdiff_t i = 0;
    /* 1 KiB of lanes in 16 registers, each tap's 1 KiB loaded in its order:
     * where the input comes from memory, 1.5x faster on Zen 5 than the steps
     * of 64 lanes below (which read four taps' pieces in turn); a divisor
     * that is a power of two is a multiplication by r, exact as the
     * division is (the same real number, rounded once) */
    for (; i + 256 <= n; i += 256) {
        __m512 a[16];
        const float *p = x + offs[0] + i;
        _Pragma("GCC unroll 16")
        for (int k = 0; k < 16; k++)
            a[k] = _mm512_loadu_ps(p + 16 * k);
        for (ptrdiff_t t = 1; t < taps; t++) {
            p = x + offs[t] + i;
            _Pragma("GCC unroll 16")
            for (int k = 0; k < 16; k++)
                a[k] = _mm512_add_ps(a[k], _mm512_loadu_ps(p + 16 * k));
        }
        if (pow2) {
            _Pragma("GCC unroll 16")
            for (int k = 0; k < 16; k++)
                a[k] = _mm512_add_ps(z, _mm512_mul_ps(a[k], rv));
        } else {
            _Pragma("GCC unroll 16")
            for (int k = 0; k < 16; k++)
                a[k] = _mm512_add_ps(z, cp_rdiv512(a[k], dv, rv));
        }
        if (nt && ((uintptr_t)(y + i) & 63) == 0) {
            _Pragma("GCC unroll 16")
            for (int k = 0; k < 16; k++)
                _mm512_stream_ps(y + i + 16 * k, a[k]);
        } else {
            _Pragma("GCC unroll 16")
            for (int k = 0; k < 16; k++)
                _mm512_storeu_ps(y + i + 16 * k, a[k]);
        }
    }
    for (; i + 64 <= n; i += 64) {
        const float *p = x + offs[0] + i;
        __m512 a0 = _mm512_loadu_ps(p), a1 = _mm512_loadu_ps(p + 16);
        __m512 a2 = _mm512_loadu_ps(p + 32), a3 = _mm512_loadu_ps(p + 48);
        for (ptrdiff_t t = 1; t < taps; t++) {
            p = x + offs[t] + i;
            a0 = _mm512_add_ps(a0, _mm512_loadu_ps(p));
            a1 = _mm512_add_ps(a1, _mm512_loadu_ps(p + 16));
            a2 = _mm512_add_ps(a2, _mm512_loadu_ps(p + 32));
            a3 = _mm512_add_ps(a3, _mm512_loadu_ps(p + 48));
        }
        _mm512_storeu_ps(y + i, _mm512_add_ps(z, cp_rdiv512(a0, dv, rv)));
        _mm512_storeu_ps(y + i + 16, _mm512_add_ps(z, cp_rdiv512(a1, dv, rv)));
        _mm512_storeu_ps(y + i + 32, _mm512_add_ps(z, cp_rdiv512(a2, dv, rv)));
        _mm512_storeu_ps(y + i + 48, _mm512_add_ps(z, cp_rdiv512(a3, dv, rv)));
    }
    for (; i + 16 <= n; i += 16) {
        __m512 a = _mm512_loadu_ps(x + offs[0] + i);
        for (ptrdiff_t t = 1; t < taps; t++)
            a = _mm512_add_ps(a, _mm512_loadu_ps(x + offs[t] + i));
        _mm512_storeu_ps(y + i, _mm512_add_ps(z, cp_rdiv512(a, dv, rv)));
    }
    return i;
}

/* cp_window_avg_by512_one for count outputs, output o at y + o*ystep from
 * the window at x + o*xstep (one call for a run of windows moved the same
 * columns at a time, by the same divisor); returns the lanes done of each. */
__attribute__((target("avx512f,avx512dq"))) static ptrdiff_t
cp_window_avg_by512(float *y, const float *x, ptrdiff_t n, const ptrdiff_t *offs,
                    ptrdiff_t taps, float d, float r, int nt, ptrdiff_t count,
                    ptrdiff_t xstep, ptrdiff_t ystep)
{
    ptrdiff_t i0 = 0;
    for (ptrdiff_t o = 0; o < count; o++)
        i0 = cp_window_avg_by512_one(y + o * ystep, x + o * xstep, n, offs, taps, d, r, nt);
    return i0;
}
#endif

#ifdef CP_HAVE_WINDOW_MAX
/* The tap just loaded (v0, v1: a step's two halves) into output B's sums,
 * where it is tap REL (0 .. SPAN-1) of B's window along the shared axis;
 * START: it is B's first tap, which starts the sums (see the callers) */
#define CP_TAP_ADD(B, REL, SPAN, START)                                                    \
    if ((REL) >= 0 && (REL) < (SPAN)) {                                                    \
        if (START) {                                                                       \
            a##B##0 = v0;                                                                  \
            a##B##1 = v1;                                                                  \
        } else {                                                                           \
            a##B##0 = _mm512_add_ps(a##B##0, v0);                                          \
            a##B##1 = _mm512_add_ps(a##B##1, v1);                                          \
        }                                                                                  \
    }
/* ADD(row, FIRST) for each of the 4 rows (outputs) a loaded tap may add to */
#define CP_EACH_ROW(ADD, FIRST)                                                            \
    do {                                                                                   \
        ADD(0, FIRST)                                                                      \
        ADD(1, FIRST)                                                                      \
        ADD(2, FIRST)                                                                      \
        ADD(3, FIRST)                                                                      \
    } while (0)
/* the adds so far stay in row order (not sunk into one chain per sum) */
#define CP_KEEP_ORDER()                                                                    \
    __asm__("" : "+v"(a00), "+v"(a01), "+v"(a10), "+v"(a11), "+v"(a20), "+v"(a21),         \
            "+v"(a30), "+v"(a31))
/* OUT(row, half, accumulator) for each of the 4 rows' (outputs') 2 halves
 * of a 32-lane step, accumulators a00 .. a31 (the shared-row kernels) */
#define CP_EACH_SUM(OUT)                                                                   \
    do {                                                                                   \
        OUT(0, 0, a00);                                                                    \
        OUT(0, 1, a01);                                                                    \
        OUT(1, 0, a10);                                                                    \
        OUT(1, 1, a11);                                                                    \
        OUT(2, 0, a20);                                                                    \
        OUT(2, 1, a21);                                                                    \
        OUT(3, 0, a30);                                                                    \
        OUT(3, 1, a31);                                                                    \
    } while (0)
/* cp_window_avg_by4_f32's step of 32 lanes from lane j (m0, m1: the lanes
 * of each 16 when FULL is 0): each row's NW + 3 columns are loaded once and
 * added to each of the 4 sums that reads them, in each sum's order (rows,
 * then columns); the first row's first tap starts each sum. */
#define CP_CL_ADD(P, FIRST)                                                                \
    CP_TAP_ADD(P, col - (P), NW, FIRST && col == (P))
#define CP_CL_ROW(FIRST)                                                                   \
    do {                                                                                   \
        const float *p = x + ro[k] + j;                                                    \
        _Pragma("GCC unroll 8")                                                            \
        for (int col = 0; col < NW + 3; col++) {                                           \
            __m512 v0 = FULL ? _mm512_loadu_ps(p + col * C)                                \
                             : _mm512_maskz_loadu_ps(m0, p + col * C);                     \
            __m512 v1 = FULL ? _mm512_loadu_ps(p + col * C + 16)                           \
                             : _mm512_maskz_loadu_ps(m1, p + col * C + 16);                \
            __asm__("" : "+v"(v0), "+v"(v1));   /* one load each, in a register */         \
            CP_EACH_ROW(CP_CL_ADD, FIRST);                                                 \
        }                                                                                  \
        CP_KEEP_ORDER();                                                                   \
    } while (0)
#define CP_CL_OUT(P, S, A)                                                                 \
    do {                                                                                   \
        __m512 q = _mm512_add_ps(z, cp_rdiv512(A, dv, rv));                                \
        if (FULL && nt)                                                                    \
            _mm512_stream_ps(y + (P) * C + j + 16 * (S), q);                               \
        else if (FULL)                                                                     \
            _mm512_storeu_ps(y + (P) * C + j + 16 * (S), q);                               \
        else                                                                               \
            _mm512_mask_storeu_ps(y + (P) * C + j + 16 * (S), (S) ? m1 : m0, q);           \
    } while (0)

__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_window_avg_by4_step512(float *y, const float *x, ptrdiff_t C, const ptrdiff_t *ro,
                          ptrdiff_t rows, ptrdiff_t j, __mmask16 m0, __mmask16 m1,
                          __m512 dv, __m512 rv, const int NW, const int FULL, int nt)
{
    const __m512 z = _mm512_setzero_ps();
    __m512 a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z;
    ptrdiff_t k = 0;
    CP_CL_ROW(1);
    for (k = 1; k < rows; k++)
        CP_CL_ROW(0);
    CP_EACH_SUM(CP_CL_OUT);
}
#undef CP_CL_ADD
#undef CP_CL_ROW
#undef CP_CL_OUT

__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_window_avg_by4_512(float *y, const float *x, ptrdiff_t n, ptrdiff_t C, const ptrdiff_t *ro,
                      ptrdiff_t rows, float d, float r, const int NW, int nt)
{
    const __m512 dv = _mm512_set1_ps(d), rv = _mm512_set1_ps(r);
    ptrdiff_t j = 0;
    if (nt && ((uintptr_t)y & 63) == 0 && C % 16 == 0)
        for (; j + 32 <= n; j += 32)
            cp_window_avg_by4_step512(y, x, C, ro, rows, j, 0xFFFF, 0xFFFF, dv, rv, NW, 1, 1);
    for (; j + 32 <= n; j += 32)
        cp_window_avg_by4_step512(y, x, C, ro, rows, j, 0xFFFF, 0xFFFF, dv, rv, NW, 1, 0);
    if (j < n) {
        ptrdiff_t m = n - j;
        __mmask16 m0 = m >= 16 ? 0xFFFF : (__mmask16)((1u << m) - 1);
        __mmask16 m1 = m > 16 ? (__mmask16)((1u << (m - 16)) - 1) : 0;
        cp_window_avg_by4_step512(y, x, C, ro, rows, j, m0, m1, dv, rv, NW, 0, 0);
    }
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_window_avg_by4_2(float *y, const float *x, ptrdiff_t n, ptrdiff_t C, const ptrdiff_t *ro,
                    ptrdiff_t rows, float d, float r, int nt)
{
    cp_window_avg_by4_512(y, x, n, C, ro, rows, d, r, 2, nt);
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_window_avg_by4_3(float *y, const float *x, ptrdiff_t n, ptrdiff_t C, const ptrdiff_t *ro,
                    ptrdiff_t rows, float d, float r, int nt)
{
    cp_window_avg_by4_512(y, x, n, C, ro, rows, d, r, 3, nt);
}
#endif

/* cp_window_avg_by_f32 for 4 adjacent outputs (y, y + C, y + 2C, y + 3C,
 * each by d) whose windows are the same rows (ro[k]: row k's first column,
 * from x) of nw columns, C floats apart, moved one column an output: each
 * column read once for the 4 sums.  n lanes (n <= C); rows >= 1.  Returns
 * 0, having done nothing, unless nw is 2 or 3 and the CPU has AVX-512F.
 * nt: with y on a line and C a multiple of 16, the whole 32-lane steps are
 * written with non-temporal stores (the caller fences): k=3 s=1 of 128
 * channels 0.58-0.61x the time, at the roofline, where they were stored in
 * place (each output line read before it was written). */
static int cp_window_avg_by4_f32(float *y, const float *x, ptrdiff_t n, ptrdiff_t C,
                                 const ptrdiff_t *ro, ptrdiff_t rows, ptrdiff_t nw,
                                 float d, float r, int nt)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() != 2 || rows < 1)
        return 0;
    if (nw == 3)
        cp_window_avg_by4_3(y, x, n, C, ro, rows, d, r, nt);
    else if (nw == 2)
        cp_window_avg_by4_2(y, x, n, C, ro, rows, d, r, nt);
    else
        return 0;
    return 1;
#else
    (void)y; (void)x; (void)n; (void)C; (void)ro; (void)rows; (void)nw; (void)d; (void)r;
    (void)nt;
    return 0;
#endif
}

/* Channels-last window averages of n lanes by one divisor: y[i] = 0 + (sum
 * of x[offs[t] + i] over the taps, in order, from +0.0) / d, as
 * cp_window_add_f32's mode 1 computes them, for a d that cp_rdiv_ok takes
 * and r = RN(1/d): with AVX-512, exact reciprocal divisions (cp_rdiv512) in
 * place of one true division a vector.  count outputs: output o at y +
 * o*ystep, its window at x + o*xstep. */
static void cp_window_avg_by_f32(float *y, const float *x, ptrdiff_t n,
                                 const ptrdiff_t *offs, ptrdiff_t taps, float d, float r,
                                 int nt, ptrdiff_t count, ptrdiff_t xstep, ptrdiff_t ystep)
{
    ptrdiff_t i0 = 0;
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() == 2 && taps > 0)
        i0 = cp_window_avg_by512(y, x, n, offs, taps, d, r, nt, count, xstep, ystep);
#else
    (void)r; (void)nt;
#endif
    if (i0 < n)
        for (ptrdiff_t o = 0; o < count; o++)
            cp_window_add_f32(y + o * ystep + i0, x + o * xstep + i0, n - i0, offs, taps, 1, d,
                              0, 0);
}

#ifdef CP_HAVE_WINDOW_MAX
/* cp_window_avg_rdiv512 for two output rows at once (y0 with taps o0, y1
 * with o1, as many of each): twice the independent sums in flight, so the
 * adds' latency is hidden; each output still adds its own taps in order. */
__attribute__((target("avx512f,avx512dq"))) static ptrdiff_t
cp_window_avg_rdiv2_512(float *y0, float *y1, const float *x, ptrdiff_t n,
                        const ptrdiff_t *o0, const ptrdiff_t *o1, ptrdiff_t taps,
                        const float *d0, const float *r0, const float *d1, const float *r1)
{
    const __m512 z = _mm512_setzero_ps();
    ptrdiff_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 a[8] = {z, z, z, z, z, z, z, z};
        for (ptrdiff_t t = 0; t < taps; t++) {
            const float *p = x + o0[t] + i, *q = x + o1[t] + i;
            for (int j = 0; j < 4; j++) {
                a[j] = _mm512_add_ps(a[j], _mm512_loadu_ps(p + 16 * j));
                a[4 + j] = _mm512_add_ps(a[4 + j], _mm512_loadu_ps(q + 16 * j));
            }
        }
        for (int j = 0; j < 8; j++) {
            float *y = j < 4 ? y0 : y1;
            const float *d = j < 4 ? d0 : d1, *r = j < 4 ? r0 : r1;
            const ptrdiff_t at = i + 16 * (j & 3);
            __m512 dv = _mm512_loadu_ps(d + at);
            __m512 qv = cp_rdiv512(a[j], dv, _mm512_loadu_ps(r + at));
            _mm512_storeu_ps(y + at, _mm512_maskz_add_ps(_mm512_cmpneq_ps_mask(dv, z), z, qv));
        }
    }
    return i;
}
#endif

/* Two rows of window averages (see cp_window_avg_rdiv_f32). */
static void cp_window_avg_rdiv2_f32(float *y0, float *y1, const float *x, ptrdiff_t n,
                                    const ptrdiff_t *o0, const ptrdiff_t *o1, ptrdiff_t taps,
                                    const float *d0, const float *r0, const float *d1,
                                    const float *r1)
{
    ptrdiff_t i0 = 0;
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() == 2)
        i0 = cp_window_avg_rdiv2_512(y0, y1, x, n, o0, o1, taps, d0, r0, d1, r1);
#endif
    if (i0 < n) {
        ptrdiff_t i;
        ptrdiff_t s0[256], s1[256];
        for (i = 0; i < taps; i++) {
            s0[i] = o0[i] + i0;
            s1[i] = o1[i] + i0;
        }
        cp_window_avg_rdiv_f32(y0 + i0, x, n - i0, s0, taps, d0 + i0, r0 + i0);
        cp_window_avg_rdiv_f32(y1 + i0, x, n - i0, s1, taps, d1 + i0, r1 + i0);
    }
}

#ifdef CP_HAVE_WINDOW_MAX
/* Window sums of NB rows of n outputs at once from padded rows (every tap in
 * the buffer, pads +0.0): row b's output i sums xp[b*rs + to[t] + i] over
 * the taps t < T in order, S vectors of 16 a step, so that NB*S sums are in
 * flight.  avg: the forward's y = 0 + sum / d (+0 where d is 0), the sum
 * starting from its first tap (that differs from PyTorch's chain from +0.0
 * only in the sign of a zero sum, which the 0 + makes +0 as PyTorch's is),
 * d[b], r[b] the divisors and reciprocals of row b; otherwise the backward's
 * y = the sum from +0.0.  Lanes past n use masked loads (the buffer may end
 * there). */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_rows_taps512(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t rs, ptrdiff_t n,
                const ptrdiff_t *to, ptrdiff_t T, const int avg, const float *const *d,
                const float *const *r, const int NB, const int S)
{
    const __m512 z = _mm512_setzero_ps();
    for (ptrdiff_t j = 0; j < n; j += 16 * S) {
        __mmask16 om[4];
        int full = j + 16 * S <= n;
        for (int s = 0; s < S; s++) {
            ptrdiff_t m = n - j - 16 * s;
            om[s] = m >= 16 ? 0xFFFF : m > 0 ? (__mmask16)((1u << m) - 1) : 0;
        }
        __m512 a[4][4];
        const float *p = xp + j;
        ptrdiff_t t = 0;
        if (avg && T > 0) {
            for (int b = 0; b < NB; b++)
                for (int s = 0; s < S; s++)
                    a[b][s] = full ? _mm512_loadu_ps(p + b * rs + to[0] + 16 * s)
                                   : _mm512_maskz_loadu_ps(om[s], p + b * rs + to[0] + 16 * s);
            t = 1;
        } else {
            for (int b = 0; b < NB; b++)
                for (int s = 0; s < S; s++)
                    a[b][s] = z;
        }
        if (full)
            for (; t < T; t++) {
                const float *pt = p + to[t];
                for (int b = 0; b < NB; b++)
                    for (int s = 0; s < S; s++)
                        a[b][s] = _mm512_add_ps(a[b][s], _mm512_loadu_ps(pt + b * rs + 16 * s));
            }
        else
            for (; t < T; t++) {
                const float *pt = p + to[t];
                for (int b = 0; b < NB; b++)
                    for (int s = 0; s < S; s++)
                        a[b][s] = _mm512_add_ps(
                            a[b][s], _mm512_maskz_loadu_ps(om[s], pt + b * rs + 16 * s));
            }
        for (int b = 0; b < NB; b++)
            for (int s = 0; s < S; s++) {
                const ptrdiff_t at = j + 16 * s;
                __m512 q = a[b][s];
                if (avg) {
                    __m512 dv = full ? _mm512_loadu_ps(d[b] + at)
                                     : _mm512_maskz_loadu_ps(om[s], d[b] + at);
                    __m512 rv = full ? _mm512_loadu_ps(r[b] + at)
                                     : _mm512_maskz_loadu_ps(om[s], r[b] + at);
                    q = cp_rdiv512(q, dv, rv);
                    q = _mm512_maskz_add_ps(_mm512_cmpneq_ps_mask(dv, z), z, q);
                }
                if (full)
                    _mm512_storeu_ps(y + b * ys + at, q);
                else
                    _mm512_mask_storeu_ps(y + b * ys + at, om[s], q);
            }
    }
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_rows_avg4(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t rs, ptrdiff_t n,
             const ptrdiff_t *to, ptrdiff_t T, const float *const *d, const float *const *r)
{
    cp_rows_taps512(y, ys, xp, rs, n, to, T, 1, d, r, 4, 2);
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_rows_avg1(float *y, const float *xp, ptrdiff_t n, const ptrdiff_t *to, ptrdiff_t T,
             const float *d, const float *r)
{
    cp_rows_taps512(y, 0, xp, 0, n, to, T, 1, &d, &r, 1, 4);
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_rows_sum4(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t rs, ptrdiff_t n,
             const ptrdiff_t *to, ptrdiff_t T)
{
    cp_rows_taps512(y, ys, xp, rs, n, to, T, 0, NULL, NULL, 4, 2);
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_rows_sum1(float *y, const float *xp, ptrdiff_t n, const ptrdiff_t *to, ptrdiff_t T)
{
    cp_rows_taps512(y, 0, xp, 0, n, to, T, 0, NULL, NULL, 1, 4);
}
#endif

#ifdef CP_HAVE_WINDOW_MAX
/* cp_rows_taps512's forward for 4 rows whose windows are KH consecutive
 * buffer rows (L floats apart) moved down SH rows a row, in nd slices pstep
 * apart, KW adjacent columns: each buffer row's taps are loaded once and
 * added to every one of the 4 sums that reads it, in each sum's order
 * (slices, rows, columns).  PyTorch's sums start from +0.0; these start
 * from their first tap, which gives the same bits but where every tap is
 * -0.0 (-0.0 against +0.0: x + -0.0 is x for every other x, NaN payloads
 * included), and the +0.0 added to each result below (0 + q, which
 * PyTorch's quotient of a +0.0 sum already is) makes that +0.0 too.
 * MODE as cp_rows_shared_f32's (0 or 2; mode 2's taps are never -0.0, being
 * the backward's 0 + g / d, so that no sum is -0.0 and none needs the +0.0);
 * NZ: no divisor is 0 (0 + q, not the masked add); SAME: the 4 rows share
 * one divisor row (d[0], r[0]).  One step of 32 columns (m: the lanes of
 * the last 16 when FULL is 0, which masks every load and store); NT: whole
 * steps written with non-temporal stores (y and ys whole cache lines). */
#define CP_SH_ADD(B, FIRST)                                                                \
    CP_TAP_ADD(B, u - (B) * SH, KH, FIRST && u == (B) * SH && c == 0)
#define CP_SH_LOAD(P, S) (FULL ? _mm512_loadu_ps((P) + j + 16 * (S))                       \
                               : _mm512_maskz_loadu_ps((S) ? m1 : m0, (P) + j + 16 * (S)))
#define CP_SH_OUT(B, S, A)                                                                 \
    do {                                                                                   \
        const ptrdiff_t at = j + 16 * (S);                                                 \
        __m512 q = A;                                                                      \
        if (MODE != 2) {                                                                   \
            __m512 dv = SAME ? dd##S : CP_SH_LOAD(d[B], S);                                \
            __m512 rv = SAME ? rr##S : CP_SH_LOAD(r[B], S);                                \
            q = cp_rdiv512(q, dv, rv);                                                     \
            q = NZ ? _mm512_add_ps(z, q)                                                   \
                   : _mm512_maskz_add_ps(_mm512_cmpneq_ps_mask(dv, z), z, q);              \
        }                                                                                  \
        if (FULL && NT)                                                                    \
            _mm512_stream_ps(y + (B) * ys + at, q);                                        \
        else if (FULL)                                                                     \
            _mm512_storeu_ps(y + (B) * ys + at, q);                                        \
        else                                                                               \
            _mm512_mask_storeu_ps(y + (B) * ys + at, (S) ? m1 : m0, q);                    \
    } while (0)
/* one slice's rows of the step (FIRST: the first slice, whose first taps
 * start the sums) */
#define CP_SH_SLICE(FIRST)                                                                 \
    do {                                                                                   \
        const float *pu = xp + i * pstep + j;                                              \
        _Pragma("GCC unroll 16")                                                           \
        for (int u = 0; u < 3 * SH + KH; u++, pu += L) {                                   \
            _Pragma("GCC unroll 8")                                                        \
            for (int c = 0; c < KW; c++) {                                                 \
                __m512 v0 = FULL ? _mm512_loadu_ps(pu + c) : _mm512_maskz_loadu_ps(m0, pu + c); \
                __m512 v1 = FULL ? _mm512_loadu_ps(pu + c + 16)                            \
                                 : _mm512_maskz_loadu_ps(m1, pu + c + 16);                 \
                __asm__("" : "+v"(v0), "+v"(v1));   /* one load each, in a register */     \
                CP_EACH_ROW(CP_SH_ADD, FIRST);                                             \
            }                                                                              \
            CP_KEEP_ORDER();                                                               \
        }                                                                                  \
    } while (0)

__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_rows_shared_step512(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t L, ptrdiff_t j,
                       __mmask16 m0, __mmask16 m1, ptrdiff_t nd, ptrdiff_t pstep,
                       const float *const *d, const float *const *r, const int KH,
                       const int KW, const int SH, const int FULL, const int NT,
                       const int MODE, const int NZ, const int SAME)
{
    const __m512 z = _mm512_setzero_ps();
    __m512 a00 = z, a01 = z, a10 = z, a11 = z, a20 = z, a21 = z, a30 = z, a31 = z;
    __m512 dd0 = z, dd1 = z, rr0 = z, rr1 = z;
    ptrdiff_t i = 0;
    if (nd > 0) {
        CP_SH_SLICE(1);
        for (i = 1; i < nd; i++)
            CP_SH_SLICE(0);
    }
    if (MODE != 2 && SAME) {
        dd0 = CP_SH_LOAD(d[0], 0);
        dd1 = CP_SH_LOAD(d[0], 1);
        rr0 = CP_SH_LOAD(r[0], 0);
        rr1 = CP_SH_LOAD(r[0], 1);
    }
    CP_EACH_SUM(CP_SH_OUT);
}
#undef CP_SH_ADD
#undef CP_SH_LOAD
#undef CP_SH_OUT
#undef CP_SH_SLICE

__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_rows_shared_mode512(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t L, ptrdiff_t n,
                       ptrdiff_t nd, ptrdiff_t pstep, const float *const *d,
                       const float *const *r, const int KH, const int KW, const int SH,
                       int nt, const int MODE, const int NZ, const int SAME)
{
    ptrdiff_t j = 0;
#define CP_SH_STEP(M0, M1, FULL, NT)                                                       \
    cp_rows_shared_step512(y, ys, xp, L, j, M0, M1, nd, pstep, d, r, KH, KW, SH, FULL, NT, \
                           MODE, NZ, SAME)
    if (nt)
        for (; j + 32 <= n; j += 32)
            CP_SH_STEP(0xFFFF, 0xFFFF, 1, 1);
    for (; j + 32 <= n; j += 32)
        CP_SH_STEP(0xFFFF, 0xFFFF, 1, 0);
    if (j < n) {
        ptrdiff_t m = n - j;
        __mmask16 m0 = m >= 16 ? 0xFFFF : (__mmask16)((1u << m) - 1);
        __mmask16 m1 = m >= 32 ? 0xFFFF : m > 16 ? (__mmask16)((1u << (m - 16)) - 1) : 0;
        CP_SH_STEP(m0, m1, 0, 0);
    }
#undef CP_SH_STEP
}

__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_rows_shared512(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t L, ptrdiff_t n,
                  ptrdiff_t nd, ptrdiff_t pstep, const float *const *d, const float *const *r,
                  const int KH, const int KW, const int SH, int nt, int mode)
{
    /* mode: cp_rows_shared_f32's (d and r are NULL in mode 2) */
    int same = (mode & 3) != 2 && d[0] == d[1] && d[0] == d[2] && d[0] == d[3] &&
               r[0] == r[1] && r[0] == r[2] && r[0] == r[3];
    int nz = (mode & 4) != 0;
    nt = nt && ((uintptr_t)y & 63) == 0 && (ys & 15) == 0;
#define CP_SH_MODE(MODE, NZ, SAME)                                                         \
    cp_rows_shared_mode512(y, ys, xp, L, n, nd, pstep, d, r, KH, KW, SH, nt, MODE, NZ, SAME)
    switch (mode & 3) {
    case 0:
        if (nz && same) CP_SH_MODE(0, 1, 1);
        else if (nz) CP_SH_MODE(0, 1, 0);
        else CP_SH_MODE(0, 0, 0);
        break;
    default:
        CP_SH_MODE(2, 0, 0);
    }
#undef CP_SH_MODE
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_rows_shared2(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t L, ptrdiff_t n, ptrdiff_t nd,
                ptrdiff_t pstep, const float *const *d, const float *const *r, int nt, int mode)
{
    cp_rows_shared512(y, ys, xp, L, n, nd, pstep, d, r, 2, 2, 1, nt, mode);
}

__attribute__((target("avx512f,avx512dq"))) static void
cp_rows_shared3(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t L, ptrdiff_t n, ptrdiff_t nd,
                ptrdiff_t pstep, const float *const *d, const float *const *r, int nt, int mode)
{
    cp_rows_shared512(y, ys, xp, L, n, nd, pstep, d, r, 3, 3, 1, nt, mode);
}
#endif

/* cp_rows_avg_f32 for 4 rows whose windows are kh consecutive buffer rows,
 * one row further down for each, of kw adjacent taps (cp_rows_shared512),
 * where kh and kw are both 2 or both 3 and dw is 1, with non-temporal
 * stores when nt (then call cp_stream_fence when done).  mode 0: the
 * forward's divisions; 2: the sums themselves (the average backward's
 * gathers; d and r unused); mode 0 plus 4: no divisor in d is 0.  Returns 0, having done nothing, for other
 * windows. */
static int cp_rows_shared_f32(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t L,
                              ptrdiff_t n, ptrdiff_t kh, ptrdiff_t nd, ptrdiff_t pstep,
                              ptrdiff_t kw, ptrdiff_t dw, const float *const *d,
                              const float *const *r, int nt, int mode)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (dw != 1)
        return 0;
    if (kh == 3 && kw == 3)
        cp_rows_shared3(y, ys, xp, L, n, nd, pstep, d, r, nt, mode);
    else if (kh == 2 && kw == 2)
        cp_rows_shared2(y, ys, xp, L, n, nd, pstep, d, r, nt, mode);
    else
        return 0;
    return 1;
#else
    (void)y; (void)ys; (void)xp; (void)L; (void)n; (void)kh; (void)nd; (void)pstep; (void)kw;
    (void)dw; (void)d; (void)r; (void)nt; (void)mode;
    return 0;
#endif
}

#ifdef CP_HAVE_WINDOW_MAX
__attribute__((target("avx512f,avx512dq"))) static void
cp_copy_ahead512(float *dst, ptrdiff_t ds, const float *src, ptrdiff_t ss, ptrdiff_t n,
                 ptrdiff_t rows, ptrdiff_t ahead)
{
    const __mmask16 m = (__mmask16)((1u << (n & 15)) - 1);
    for (ptrdiff_t k = 0; k < rows; k++, dst += ds, src += ss) {
        ptrdiff_t i = 0;
        for (; i + 16 <= n; i += 16) {
            __builtin_prefetch(src + ahead + i, 0, 3);
            _mm512_storeu_ps(dst + i, _mm512_loadu_ps(src + i));
        }
        if (i < n) {
            __builtin_prefetch(src + ahead + i, 0, 3);
            _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, src + i));
        }
    }
}
#endif

/* memcpy of n floats, with the cache lines of the n floats from src + ahead
 * on asked for (rows read in order: their memory latency then overlaps the
 * work on the rows before them).  (The sums' divisions check their own
 * lanes, cp_rdiv512: a check of the taps here cost more than it saved.) */
static inline void cp_copy_ahead_f32(float *dst, const float *src, ptrdiff_t n, ptrdiff_t ahead)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() == 2) {
        cp_copy_ahead512(dst, 0, src, 0, n, 1, ahead);
        return;
    }
#endif
    for (ptrdiff_t i = 0; i < n; i += 16)
        __builtin_prefetch(src + ahead + i, 0, 3);
    memcpy(dst, src, (size_t)n * sizeof(float));
}

/* cp_copy_ahead_f32 of rows rows of n floats, from src (rows ss floats
 * apart) to dst (ds apart), in one call. */
static inline void cp_copy_ahead_rows_f32(float *dst, ptrdiff_t ds, const float *src,
                                          ptrdiff_t ss, ptrdiff_t n, ptrdiff_t rows,
                                          ptrdiff_t ahead)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() == 2) {
        cp_copy_ahead512(dst, ds, src, ss, n, rows, ahead);
        return;
    }
#endif
    for (ptrdiff_t k = 0; k < rows; k++)
        cp_copy_ahead_f32(dst + k * ds, src + k * ss, n, ahead);
}

#ifdef CP_HAVE_WINDOW_MAX
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline ptrdiff_t
cp_plane_shared512(const float *xn, float *yn, float *xpad, ptrdiff_t L, ptrdiff_t pb,
                   ptrdiff_t H, ptrdiff_t W, ptrdiff_t col, ptrdiff_t OH, ptrdiff_t OW,
                   ptrdiff_t hpb,
                   const float *rdiv, const int32_t *rdiv_of, int nt, int nz, ptrdiff_t ahead,
                   ptrdiff_t *done, const int K)
{
    ptrdiff_t oh = 0, dn = *done;
    const float *d[4], *r[4];
    for (; oh + 4 <= OH; oh += 4) {
        /* the rows these 4 read, and those of the next 4 */
        ptrdiff_t hl = oh + 7 - hpb + K - 1;
        if (hl > H - 1)
            hl = H - 1;
        if (hl >= dn) {
            cp_copy_ahead512(xpad + (hpb + dn) * L + pb, L, xn + dn * W, W, col, hl + 1 - dn,
                             ahead);
            dn = hl + 1;
        }
        for (int b = 0; b < 4; b++) {
            d[b] = rdiv + 2 * OW * rdiv_of[oh + b];
            r[b] = d[b] + OW;
        }
        cp_rows_shared512(yn + oh * OW, OW, xpad + oh * L, L, OW, 1, 0, d, r, K, K, 1, nt,
                          nz ? 4 : 0);
    }
    *done = dn;
    return oh;
}

/* cp_plane_shared512 compiled for K = 2 and K = 3 (cp_plane_shared2, 3) */
#define CP_PLANE_SHARED(K)                                                                 \
    __attribute__((target("avx512f,avx512dq"))) static ptrdiff_t                          \
    cp_plane_shared##K(const float *xn, float *yn, float *xpad, ptrdiff_t L, ptrdiff_t pb,  \
                       ptrdiff_t H, ptrdiff_t W, ptrdiff_t col, ptrdiff_t OH, ptrdiff_t OW, \
                       ptrdiff_t hpb, const float *rdiv, const int32_t *rdiv_of, int nt,    \
                       int nz, ptrdiff_t ahead, ptrdiff_t *done)                           \
    {                                                                                     \
        return cp_plane_shared512(xn, yn, xpad, L, pb, H, W, col, OH, OW, hpb, rdiv,       \
                                  rdiv_of, nt, nz, ahead, done, K);                       \
    }
CP_PLANE_SHARED(2)
CP_PLANE_SHARED(3)
#undef CP_PLANE_SHARED
#endif

/* _rows_padded_f32's loop for a 2-d plane (one slice) of a K x K window
 * (K 2 or 3) of stride and dilation 1, in one call: the plane's H rows of
 * W floats (xn) are copied (col floats of each) into xpad's rows of L
 * floats from row hpb, as the sums first need them (cp_copy_ahead512,
 * asking for the floats ahead floats on), and each 4 output rows are summed
 * and divided at once (cp_rows_shared512, by rdiv's rows as rdiv_of says;
 * nz: none is 0; nt: non-temporal stores).  *done (rows copied) carries
 * over, in and out.
 * Returns the output rows done: OH rounded down to 4, or 0 (having done
 * nothing) for other K or without AVX-512F. */
static ptrdiff_t cp_plane_shared_f32(const float *xn, float *yn, float *xpad, ptrdiff_t L,
                                     ptrdiff_t pb, ptrdiff_t H, ptrdiff_t W, ptrdiff_t col,
                                     ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t hpb, ptrdiff_t K,
                                     const float *rdiv, const int32_t *rdiv_of, int nt, int nz,
                                     ptrdiff_t ahead, ptrdiff_t *done)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() == 2 && K == 3)
        return cp_plane_shared3(xn, yn, xpad, L, pb, H, W, col, OH, OW, hpb, rdiv, rdiv_of, nt, nz,
                                ahead, done);
    if (cp_window_isa() == 2 && K == 2)
        return cp_plane_shared2(xn, yn, xpad, L, pb, H, W, col, OH, OW, hpb, rdiv, rdiv_of, nt, nz,
                                ahead, done);
#endif
    (void)xn; (void)yn; (void)xpad; (void)L; (void)pb; (void)H; (void)W; (void)col; (void)OH;
    (void)OW; (void)hpb; (void)K; (void)rdiv; (void)rdiv_of; (void)nt; (void)nz; (void)ahead;
    (void)done;
    return 0;
}

#ifdef CP_HAVE_WINDOW_MAX
__attribute__((target("avx512f,avx512dq"))) static void
cp_scale_row512(float *y, const float *x, ptrdiff_t n, const float *d, const float *r)
{
    const __m512 z = _mm512_setzero_ps();
    for (ptrdiff_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xFFFF : (__mmask16)((1u << (n - i)) - 1);
        __m512 dv = CP_LD16(m, d + i);
        __m512 q = cp_rdiv512(CP_LD16(m, x + i), dv, CP_LD16(m, r + i));
        CP_ST16(y + i, m, _mm512_maskz_add_ps(_mm512_cmpneq_ps_mask(dv, z), z, q));
    }
}
#endif

/* y[i] = 0 + x[i] / d[i] (+0 where d[i] is 0) for i < n, as
 * cp_finish_rdiv_f32 divides in place: the average backward's scaled output
 * gradients, written where the gathers read them.  Only where cp_rows_ok(). */
static void cp_scale_row_f32(float *y, const float *x, ptrdiff_t n, const float *d,
                             const float *r)
{
#ifdef CP_HAVE_WINDOW_MAX
    cp_scale_row512(y, x, n, d, r);
#else
    (void)y; (void)x; (void)n; (void)d; (void)r;
#endif
}

/* True when cp_rows_avg_f32 and cp_rows_sum_f32 run (AVX-512F). */
static int cp_rows_ok(void)
{
#ifdef CP_HAVE_WINDOW_MAX
    return cp_window_isa() == 2;
#else
    return 0;
#endif
}

/* Forward window averages of nb rows (1 or 4) of n outputs from padded rows:
 * see cp_rows_taps512.  Only where cp_rows_ok(). */
static void cp_rows_avg_f32(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t rs,
                            ptrdiff_t nb, ptrdiff_t n, const ptrdiff_t *to, ptrdiff_t T,
                            const float *const *d, const float *const *r)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (nb == 4)
        cp_rows_avg4(y, ys, xp, rs, n, to, T, d, r);
    else
        cp_rows_avg1(y, xp, n, to, T, d[0], r[0]);
#else
    (void)y; (void)ys; (void)xp; (void)rs; (void)nb; (void)n; (void)to; (void)T; (void)d;
    (void)r;
#endif
}

/* Backward sums (from +0.0) of nb rows (1 or 4) of n terms each from padded
 * rows: see cp_rows_taps512.  Only where cp_rows_ok(). */
static void cp_rows_sum_f32(float *y, ptrdiff_t ys, const float *xp, ptrdiff_t rs,
                            ptrdiff_t nb, ptrdiff_t n, const ptrdiff_t *to, ptrdiff_t T)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (nb == 4)
        cp_rows_sum4(y, ys, xp, rs, n, to, T);
    else
        cp_rows_sum1(y, xp, n, to, T);
#else
    (void)y; (void)ys; (void)xp; (void)rs; (void)nb; (void)n; (void)to; (void)T;
#endif
}

/* cp_finish_row for float32: one divisor for the whole row (mode 1 with a
 * stride of 0, mode 2) divides by its reciprocal, exactly as above. */
static void cp_finish_row_f32(float *y, ptrdiff_t n, int mode, double a, double b,
                              const double *w, ptrdiff_t ws, double k)
{
    if (mode == 0 && ws == 0) {
        cp_div3_row_f32(y, n, a, b, w[0]);
        return;
    }
    double dv = mode == 2 ? k : mode == 1 && ws == 0 ? a * w[0] : 0;
    ptrdiff_t i = 0;
    if (cp_rdiv_ok(dv)) {
        float td = (float)dv, tr = 1.0f / td;
        i = cp_rdiv_row_f32(y, n, &td, &tr, 0);
    }
    if (i < n)
        cp_finish_row_f32_any(y + i, n - i, mode, a, b, ws ? w + i * ws : w, ws, k);
}

#ifdef CP_HAVE_WINDOW_MAX
/* One divisor for 16 lanes, the last one's reciprocal kept: (*last, *td,
 * *tr, *ok) are the previous divisor, it as a float, its reciprocal and
 * whether cp_rdiv_ok accepts it (refused: a true division). */
struct cp_rdiv_memo {
    double last;
    float td, tr;
    int ok;
};

__attribute__((target("avx512f,avx512dq"))) static inline __m512
cp_rdiv512_by(__m512 q, double d, struct cp_rdiv_memo *m)
{
    if (d != m->last) {
        m->last = d;
        m->td = (float)d;
        m->ok = cp_rdiv_ok(d);
        m->tr = m->ok ? 1.0f / m->td : 0.0f;
    }
    if (!m->ok)
        return _mm512_div_ps(q, _mm512_set1_ps(m->td));
    return cp_rdiv512(q, _mm512_set1_ps(m->td), _mm512_set1_ps(m->tr));
}

/* cp_rowlanes_finish_f32 on AVX-512F: CP_ROWLANES_DIVIDE's divisions, each
 * by an exact reciprocal (computed once per distinct divisor in a row). */
__attribute__((target("avx512f,avx512dq"))) static void
cp_rowlanes_rdiv512(float *y, ptrdiff_t n, int mode, double a, double b, const double *w,
                    double k)
{
    const __m512 z = _mm512_setzero_ps();
    /* a NaN "last" divisor: the first one always computes its reciprocal */
    struct cp_rdiv_memo ma = {__builtin_nan(""), 0, 0, 0}, mb = ma, mw = ma;
    for (ptrdiff_t o = 0; o < n; o++) {
        __m512 q = _mm512_loadu_ps(y + o * 16);
        if (mode == 0) {
            q = cp_rdiv512_by(cp_rdiv512_by(cp_rdiv512_by(q, (float)a, &ma), (float)b, &mb),
                              (float)w[o], &mw);
        } else {
            const double dv = mode == 1 ? a * w[o] : k;
            if (dv == 0)
                q = _mm512_add_ps(_mm512_mul_ps(q, z), z);   /* no taps: +0.0 */
            else
                q = _mm512_add_ps(z, cp_rdiv512_by(q, dv, &mw));
        }
        _mm512_storeu_ps(y + o * 16, q);
    }
}
#endif

static void cp_rowlanes_finish_f32(float *y, ptrdiff_t n, int mode, double a, double b,
                                   const double *w, double k)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() == 2) {
        cp_rowlanes_rdiv512(y, n, mode, a, b, w, k);
        return;
    }
#endif
    cp_rowlanes_finish_f32_any(y, n, mode, a, b, w, k);
}

#ifdef CP_HAVE_WINDOW_MAX
/* y = 0 + x / d for C lanes (C < 16: masked), d a float divisor of kind
 * K: 0 divides (cp_rdiv_ok refuses d), 1 by an exact reciprocal
 * (cp_rdiv512), 2 multiplies by r = 1/d, a power of two (the same real
 * number as x / d, rounded once: the IEEE quotient); r = RN(1/d). */
#define CP_SCALE_LANES(K)                                                                  \
    do {                                                                                   \
        ptrdiff_t c = 0;                                                                   \
        for (; c + 16 <= C; c += 16) {                                                     \
            __m512 v = _mm512_loadu_ps(x + c);                                             \
            v = (K) == 2 ? _mm512_mul_ps(v, rv) : (K) == 1 ? cp_rdiv512(v, dv, rv)         \
                                                           : _mm512_div_ps(v, dv);         \
            _mm512_storeu_ps(y + c, _mm512_add_ps(z, v));                                  \
        }                                                                                  \
        if (c < C) {                                                                       \
            __mmask16 m = (__mmask16)((1u << (C - c)) - 1);                                \
            __m512 v = _mm512_maskz_loadu_ps(m, x + c);                                    \
            v = (K) == 2 ? _mm512_mul_ps(v, rv) : (K) == 1 ? cp_rdiv512(v, dv, rv)         \
                                                           : _mm512_div_ps(v, dv);         \
            _mm512_mask_storeu_ps(y + c, m, _mm512_add_ps(z, v));                          \
        }                                                                                  \
    } while (0)

__attribute__((target("avx512f,avx512dq"))) static void
cp_scale_cl_row512(float *y, const float *x, ptrdiff_t OW, ptrdiff_t C, double a,
                   const double *w)
{
    const __m512 z = _mm512_setzero_ps();
    for (ptrdiff_t ow = 0; ow < OW; ow++, x += C, y += C) {
        const double dd = a * w[ow];
        const float d = (float)dd;
        uint32_t db;
        memcpy(&db, &d, sizeof db);
        if (dd == 0) {
            ptrdiff_t c = 0;
            for (; c + 16 <= C; c += 16)
                _mm512_storeu_ps(y + c, z);
            if (c < C)
                _mm512_mask_storeu_ps(y + c, (__mmask16)((1u << (C - c)) - 1), z);
            continue;
        }
        const int ok = cp_rdiv_ok(dd);
        const __m512 dv = _mm512_set1_ps(d), rv = _mm512_set1_ps(ok ? 1.0f / d : 0.0f);
        if (ok && (db & 0x007FFFFFu) == 0)         /* +-2^k */
            CP_SCALE_LANES(2);
        else if (ok)
            CP_SCALE_LANES(1);
        else
            CP_SCALE_LANES(0);
    }
}
#undef CP_SCALE_LANES
#endif

/* A channels-last output row of OW x C window-sum gradients scaled as
 * _finish_avg scales it in divisor mode 1 (y = 0 + x / (a * w[ow]), +0 where
 * that is 0), read from x and written to y in one pass.  Only where
 * cp_rows_ok(). */
static void cp_scale_cl_row_f32(float *y, const float *x, ptrdiff_t OW, ptrdiff_t C, double a,
                                const double *w)
{
#ifdef CP_HAVE_WINDOW_MAX
    if (cp_window_isa() == 2) {
        cp_scale_cl_row512(y, x, OW, C, a, w);
        return;
    }
#endif
    (void)y; (void)x; (void)OW; (void)C; (void)a; (void)w;
}

/* Channels-first window sums with lanes of (plane, output column): lane
 * l = p * OW + ow of a vector is output column ow of plane p, for as many
 * planes as fit (16 // OW float32, 8 // OW float64).  Each input row of a
 * window is read as one piece per lane (its window's columns), the pieces
 * are transposed in registers, and their columns are added to the lanes in
 * order: each lane sees its window's taps in the row-major order, from
 * +0.0, so the sums are the plane-by-plane ones, bit for bit (NaN payloads
 * too: the running sum is always the first operand).  Lanes whose window has
 * fewer columns than another's add -0.0 for the columns they lack, which
 * leaves every sum (+0.0, -0.0, NaN, inf) as it is.  Against row lanes (16
 * planes transposed a row at a time), the input comes in from 2-6 planes at
 * a time, not 16, each lane prefetching its piece CP_CL_AHEAD on: from
 * memory, the row lanes' 16 streams a thread ran at half the read probe's
 * speed.  Only where cp_collanes_ok(). */
#ifdef CP_HAVE_WINDOW_MAX
/* The 4 x 4 transposes inside the 128-bit pieces of each group of four
 * vectors v[4m .. 4m + 3] (n a multiple of 4, at most 16): 128-bit piece k of
 * u[4m + q] = element q of piece k of v[4m], v[4m + 1], v[4m + 2], v[4m + 3] */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_tr4x4_pieces(const __m512 *v, __m512 *u, int n)
{
    __m512 t[16];
#pragma GCC unroll 16
    for (int i = 0; i < n; i += 2) {
        t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < n; i += 4) {
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
}

/* The 4 x 4 transposes of 128-bit pieces across u[g], u[s + g], u[2s + g],
 * u[3s + g], for each g < s (s at most 4): piece k of v[js + g] = piece j of
 * u[ks + g] (pure data movement: float and double tiles alike) */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_tr_pieces(__m512 *v, const __m512 *u, int s)
{
#pragma GCC unroll 4
    for (int g = 0; g < s; g++) {
        __m512 a0 = _mm512_shuffle_f32x4(u[g], u[s + g], 0x88),
               a1 = _mm512_shuffle_f32x4(u[g], u[s + g], 0xDD),
               b0 = _mm512_shuffle_f32x4(u[2 * s + g], u[3 * s + g], 0x88),
               b1 = _mm512_shuffle_f32x4(u[2 * s + g], u[3 * s + g], 0xDD);
        v[g] = _mm512_shuffle_f32x4(a0, b0, 0x88);
        v[s + g] = _mm512_shuffle_f32x4(a1, b1, 0x88);
        v[2 * s + g] = _mm512_shuffle_f32x4(a0, b0, 0xDD);
        v[3 * s + g] = _mm512_shuffle_f32x4(a1, b1, 0xDD);
    }
}

/* v[i] = row i of a 16 x 16 tile -> v[j] = column j */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_tr16_regs(__m512 *v)
{
    __m512 u[16];
    cp_tr4x4_pieces(v, u, 16);
    /* u[4m + q], 128-bit piece k: rows 4m .. 4m+3 of column 4k + q */
    cp_tr_pieces(v, u, 4);
}

/* v[i] = row i of an 8 x 8 tile of doubles -> v[j] = column j */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_tr8d_regs(__m512d *v)
{
    __m512 t[8], w[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i += 2) {    /* columns 0, 2, 4, 6 and 1, 3, 5, 7 */
        t[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(v[i], v[i + 1]));
        t[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(v[i], v[i + 1]));
    }
    /* t[2m + e], 128-bit piece k: rows 2m, 2m+1 of column 2k + e */
    cp_tr_pieces(w, t, 2);
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        v[i] = _mm512_castps_pd(w[i]);
}

/* bytes each lane's row piece prefetches ahead: 4 KiB, 1.2-1.6x from
 * memory against none (1 and 2 threads; 8 KiB and more measured slower) */
#define CP_CL_AHEAD 4096
/* 16 floats (8 doubles) from p, none read at or past xend */
#define CP_CL_LD16(p)                                                                     \
    ((p) + 16 <= xend ? _mm512_loadu_ps(p)                                                \
                      : _mm512_maskz_loadu_ps(                                            \
                            (__mmask16)((1u << ((p) < xend ? xend - (p) : 0)) - 1), (p)))
#define CP_CL_LD8D(p)                                                                     \
    ((p) + 8 <= xend ? _mm512_loadu_pd(p)                                                 \
                     : _mm512_maskz_loadu_pd(                                             \
                           (__mmask8)((1u << ((p) < xend ? xend - (p) : 0)) - 1), (p)))

/* The lanes of np planes (x: the first, planes S apart) for output
 * columns with windows starting at ws[ow], wc[ow] columns long: base[l]
 * (offset of lane l's first column), cnt[l] (0 for lanes past np * OW),
 * the fewest and most columns of a lane in use. */
#define CP_CL_SETUP(NL)                                                                   \
    const ptrdiff_t nl = np * OW;                                                         \
    ptrdiff_t base[NL], minc = PTRDIFF_MAX, maxc = 0;                                     \
    for (ptrdiff_t l = 0; l < NL; l++) {                                                  \
        cnt[l] = l < nl ? wc[l % OW] : 0;                                                 \
        base[l] = l < nl ? (l / OW) * S + ws[l % OW] : 0;                                 \
        if (l < nl) {                                                                     \
            minc = cnt[l] < minc ? cnt[l] : minc;                                         \
            maxc = cnt[l] > maxc ? cnt[l] : maxc;                                         \
        }                                                                                 \
    }

/* The first 8 columns of a 16 x 16 tile (rows at q[l]) as v[0..7]: each
 * row's 8 columns loaded as half a vector, paired (l, l + 4) for l < 4 and
 * (l + 4, l + 8) for l >= 4, so that the transpose inside the 128-bit pieces
 * and one exchange of pieces give the columns with the lanes in order */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline void
cp_tr16x8_load(__m512 *v, const float *const *q)
{
    __m512 w[8], u[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        const int a = i < 4 ? i : i + 4, b = a + 4;
        w[i] = _mm512_castpd_ps(_mm512_insertf64x4(
            _mm512_castpd256_pd512(_mm256_castps_pd(_mm256_loadu_ps(q[a]))),
            _mm256_castps_pd(_mm256_loadu_ps(q[b])), 1));
    }
    cp_tr4x4_pieces(w, u, 8);
#pragma GCC unroll 4
    for (int q4 = 0; q4 < 4; q4++) {
        v[q4] = _mm512_shuffle_f32x4(u[q4], u[4 + q4], 0x88);
        v[4 + q4] = _mm512_shuffle_f32x4(u[q4], u[4 + q4], 0xDD);
    }
}

/* One tile of 16 columns from j0 of each lane's row piece (row + base[l],
 * l < nl) added to acc in column order (lanes with cnt[l] <= j0 + j add -0.0
 * at column j0 + j; none from maxc on); prefetching ahead bytes on. */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline __m512
cp_cl_tile16(__m512 acc, const float *row, const ptrdiff_t *base, ptrdiff_t nl,
             ptrdiff_t j0, ptrdiff_t minc, ptrdiff_t maxc, ptrdiff_t maxb, __m512i cv,
             const float *xend, ptrdiff_t ahead)
{
    const __m512 nz = _mm512_set1_ps(-0.0f);
    __m512 v[16];
    if (maxc - j0 <= 8 && row + maxb + j0 + 8 <= xend) {
        /* 8 columns or fewer left: half the transpose */
        const float *q[16];
#pragma GCC unroll 16
        for (int l = 0; l < 16; l++)
            q[l] = l < nl ? row + base[l] + j0 : row + base[0] + j0;
        cp_tr16x8_load(v, q);
    } else {
#pragma GCC unroll 16
        for (int l = 0; l < 16; l++)
            v[l] = l < nl ? CP_CL_LD16(row + base[l] + j0) : _mm512_setzero_ps();
        cp_tr16_regs(v);
    }
#pragma GCC unroll 16
    for (int l = 0; l < 16; l++)
        if (l < nl)
            _mm_prefetch((const char *)(row + base[l] + j0) + ahead, _MM_HINT_T0);
    if (j0 + 16 <= minc) {
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
            acc = cp_add_ord512(acc, v[j]);
    } else {
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
            if (j0 + j < maxc)
                acc = cp_add_ord512(acc, _mm512_mask_blend_ps(
                    _mm512_cmpgt_epi32_mask(cv, _mm512_set1_epi32((int)(j0 + j))), nz, v[j]));
    }
    return acc;
}

/* cp_cl_tile16 for float64: 8 columns, 8 lanes (maxb unused: no half tiles) */
__attribute__((target("avx512f,avx512dq"), always_inline)) static inline __m512d
cp_cl_tile8d(__m512d acc, const double *row, const ptrdiff_t *base, ptrdiff_t nl,
             ptrdiff_t j0, ptrdiff_t minc, ptrdiff_t maxc, ptrdiff_t maxb, __m512i cv,
             const double *xend, ptrdiff_t ahead)
{
    (void)maxb;
    const __m512d nz = _mm512_set1_pd(-0.0);
    __m512d v[8];
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++)
        v[l] = l < nl ? CP_CL_LD8D(row + base[l] + j0) : _mm512_setzero_pd();
#pragma GCC unroll 8
    for (int l = 0; l < 8; l++)
        if (l < nl)
            _mm_prefetch((const char *)(row + base[l] + j0) + ahead, _MM_HINT_T0);
    cp_tr8d_regs(v);
    if (j0 + 8 <= minc) {
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            acc = cp_add_ord512d(acc, v[j]);
    } else {
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            if (j0 + j < maxc)
                acc = cp_add_ord512d(acc, _mm512_mask_blend_pd(
                    _mm512_cmpgt_epi64_mask(cv, _mm512_set1_epi64(j0 + j)), nz, v[j]));
    }
    return acc;
}

/* y[p * ys + ow] = the sum over input rows x + roff[r] (r < nr, in order) of
 * each lane's window columns, for planes p < np (np <= 2 * (NL / OW)), NL
 * lanes a vector of T (VT), tiles by TILE: two vectors of lanes where np
 * needs them, so that two chains of additions are in flight */
#define CP_DEFINE_COLLANES512(SUFFIX, T, VT, NL, CT, TILE, ZERO, STORE)                    \
    __attribute__((target("avx512f,avx512dq"))) static void                                        \
    cp_collanes512_##SUFFIX(T *y, ptrdiff_t ys, const T *x, const T *xend, ptrdiff_t S,   \
                            ptrdiff_t np, const ptrdiff_t *roff, ptrdiff_t nr,            \
                            const int64_t *ws, const int64_t *wc, ptrdiff_t OW)           \
    {                                                                                     \
        CT cnt[NL];                                                                       \
        const ptrdiff_t P = NL / OW, np1 = np > P ? np - P : 0;                           \
        const ptrdiff_t nl1 = np1 * OW, ahead = CP_CL_AHEAD;                              \
        np -= np1;                                                                        \
        CP_CL_SETUP(NL)                                                                   \
        ptrdiff_t maxb = 0;                                                               \
        for (ptrdiff_t l = 0; l < nl; l++)                                                \
            maxb = base[l] > maxb ? base[l] : maxb;                                       \
        const __m512i cv = _mm512_loadu_si512((const void *)cnt);                         \
        VT acc = ZERO(), acc1 = acc;                                                      \
        for (ptrdiff_t r = 0; r < nr; r++) {                                              \
            const T *row = x + roff[r];                                                   \
            for (ptrdiff_t j0 = 0; j0 < maxc; j0 += NL) {                                 \
                acc = TILE(acc, row, base, nl, j0, minc, maxc, maxb, cv, xend, ahead);    \
                if (nl1)                                                                  \
                    acc1 = TILE(acc1, row + P * S, base, nl1, j0, minc, maxc, maxb, cv,   \
                                xend, ahead);                                             \
            }                                                                             \
        }                                                                                 \
        T out[2 * NL];                                                                    \
        STORE(out, acc);                                                                  \
        STORE(out + NL, acc1);                                                            \
        for (ptrdiff_t l = 0; l < nl; l++)                                                \
            y[(l / OW) * ys + l % OW] = out[l];                                           \
        for (ptrdiff_t l = 0; l < nl1; l++)                                               \
            y[(P + l / OW) * ys + l % OW] = out[NL + l];                                  \
    }

CP_DEFINE_COLLANES512(f32, float, __m512, 16, int32_t, cp_cl_tile16, _mm512_setzero_ps,
                      _mm512_storeu_ps)
CP_DEFINE_COLLANES512(f64, double, __m512d, 8, int64_t, cp_cl_tile8d, _mm512_setzero_pd,
                      _mm512_storeu_pd)
#endif

static int cp_collanes_ok(void)
{
#ifdef CP_HAVE_WINDOW_MAX
    return cp_window_isa() == 2;
#else
    return 0;
#endif
}

/* Whether the float32 column lanes are the faster choice on large inputs:
 * on AMD's cores (Zen 5: the adaptive (1, 256, 224, 224) -> 7x7 forward
 * 1.9x faster than the row lanes at 2 threads), not on Intel's (Emerald
 * Rapids, 2 threads, in-process A/B: (32, 64, 113, 97) -> (7, 5) 1.1-1.4x
 * slower, the 112 x 112 rows even; float64's 1.1x faster there). */
static int cp_collanes_preferred(void)
{
#ifdef CP_HAVE_WINDOW_MAX
    return __builtin_cpu_is("amd");
#else
    return 0;
#endif
}

/* cp_collanes_f32 / _f64: the column lanes (called only where
 * cp_collanes_ok(); a build without them has the entry points only) */
#ifdef CP_HAVE_WINDOW_MAX
#define CP_COLLANES_BODY(SUFFIX) cp_collanes512_##SUFFIX(y, ys, x, xend, S, np, roff, nr, ws, wc, OW);
#else
#define CP_COLLANES_BODY(SUFFIX)                                                          \
    (void)y; (void)ys; (void)x; (void)xend; (void)S; (void)np; (void)roff; (void)nr;      \
    (void)ws; (void)wc; (void)OW;
#endif
#define CP_DEFINE_COLLANES(SUFFIX, T)                                                     \
    static void cp_collanes_##SUFFIX(T *y, ptrdiff_t ys, const T *x, const T *xend,       \
                                     ptrdiff_t S, ptrdiff_t np, const ptrdiff_t *roff,    \
                                     ptrdiff_t nr, const int64_t *ws, const int64_t *wc,  \
                                     ptrdiff_t OW)                                        \
    {                                                                                     \
        CP_COLLANES_BODY(SUFFIX)                                                          \
    }
CP_DEFINE_COLLANES(f32, float)
CP_DEFINE_COLLANES(f64, double)

#endif /* CYPOOL_LANES_H */
