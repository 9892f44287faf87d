/*
 * cypool_transpose.h -- blocked matrix transposes for the plane-lanes path.
 *
 * dst[c*ds + r] = src[r*ss + c] for r < rows, c < cols.  Pure data movement
 * (bit patterns, NaN payloads included, are copied unchanged), so the
 * vector and scalar versions give identical results; the AVX-512F 16x16 and
 * AVX2 8x8 (32-bit) and 4x4 (64-bit) tiles are picked at run time, so a
 * baseline x86-64 build uses them where the CPU has them.
 */
#ifndef CYPOOL_TRANSPOSE_H
#define CYPOOL_TRANSPOSE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) \
    && !defined(CYPOOL_NO_MULTIVERSION)
#define CP_HAVE_AVX2_TILES 1
#include <immintrin.h>

__attribute__((target("avx2"))) static void cp_tile8_32(const float *s, ptrdiff_t ss,
                                                         float *d, ptrdiff_t ds)
{
    __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + ss),
           r2 = _mm256_loadu_ps(s + 2 * ss), r3 = _mm256_loadu_ps(s + 3 * ss),
           r4 = _mm256_loadu_ps(s + 4 * ss), r5 = _mm256_loadu_ps(s + 5 * ss),
           r6 = _mm256_loadu_ps(s + 6 * ss), r7 = _mm256_loadu_ps(s + 7 * ss);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1),
           t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3),
           t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
           t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
           u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
           u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_storeu_ps(d + ds, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_storeu_ps(d + 2 * ds, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_storeu_ps(d + 3 * ds, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_storeu_ps(d + 4 * ds, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_storeu_ps(d + 5 * ds, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_storeu_ps(d + 6 * ds, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_storeu_ps(d + 7 * ds, _mm256_permute2f128_ps(u3, u7, 0x31));
}

__attribute__((target("avx2"))) static void cp_tile4_64(const double *s, ptrdiff_t ss,
                                                         double *d, ptrdiff_t ds)
{
    __m256d r0 = _mm256_loadu_pd(s), r1 = _mm256_loadu_pd(s + ss),
            r2 = _mm256_loadu_pd(s + 2 * ss), r3 = _mm256_loadu_pd(s + 3 * ss);
    __m256d t0 = _mm256_unpacklo_pd(r0, r1), t1 = _mm256_unpackhi_pd(r0, r1),
            t2 = _mm256_unpacklo_pd(r2, r3), t3 = _mm256_unpackhi_pd(r2, r3);
    _mm256_storeu_pd(d, _mm256_permute2f128_pd(t0, t2, 0x20));
    _mm256_storeu_pd(d + ds, _mm256_permute2f128_pd(t1, t3, 0x20));
    _mm256_storeu_pd(d + 2 * ds, _mm256_permute2f128_pd(t0, t2, 0x31));
    _mm256_storeu_pd(d + 3 * ds, _mm256_permute2f128_pd(t1, t3, 0x31));
}

/* 16 x 16 floats, AVX-512F: each vector is first gathered from four rows'
 * 128-bit pieces (row i, i+4, i+8, i+12 of a column block, by loads that
 * insert), so that one 4 x 4 transpose inside the 128-bit lanes finishes it:
 * half the shuffles of a four-stage transpose, the rest done by the loads. */
__attribute__((target("avx512f"))) static inline __m512 cp_ld4x128(const float *s, ptrdiff_t ss)
{
    __m512 v = _mm512_castps128_ps512(_mm_loadu_ps(s));
    v = _mm512_insertf32x4(v, _mm_loadu_ps(s + 4 * ss), 1);
    v = _mm512_insertf32x4(v, _mm_loadu_ps(s + 8 * ss), 2);
    return _mm512_insertf32x4(v, _mm_loadu_ps(s + 12 * ss), 3);
}

__attribute__((target("avx512f"))) static void cp_tile16_32(const float *s, ptrdiff_t ss,
                                                            float *d, ptrdiff_t ds)
{
    for (int j = 0; j < 4; j++) {            /* columns 4j .. 4j+3 */
        const float *q = s + 4 * j;
        __m512 v0 = cp_ld4x128(q, ss), v1 = cp_ld4x128(q + ss, ss),
               v2 = cp_ld4x128(q + 2 * ss, ss), v3 = cp_ld4x128(q + 3 * ss, ss);
        __m512 t0 = _mm512_unpacklo_ps(v0, v1), t1 = _mm512_unpackhi_ps(v0, v1),
               t2 = _mm512_unpacklo_ps(v2, v3), t3 = _mm512_unpackhi_ps(v2, v3);
        _mm512_storeu_ps(d + (4 * j) * ds, _mm512_shuffle_ps(t0, t2, 0x44));
        _mm512_storeu_ps(d + (4 * j + 1) * ds, _mm512_shuffle_ps(t0, t2, 0xEE));
        _mm512_storeu_ps(d + (4 * j + 2) * ds, _mm512_shuffle_ps(t1, t3, 0x44));
        _mm512_storeu_ps(d + (4 * j + 3) * ds, _mm512_shuffle_ps(t1, t3, 0xEE));
    }
}

/* 2: AVX-512F, 1: AVX2, 0: neither (the tiles are pure data movement, so
 * the test hook that limits the lane loops' ISA leaves them alone) */
static int cp_tile_isa(void)
{
    static int level = -1;
    if (level < 0) {
        __builtin_cpu_init();
        level = __builtin_cpu_supports("avx512f") ? 2 : __builtin_cpu_supports("avx2") ? 1 : 0;
    }
    return level;
}
#endif

/* Element size 4 or 8 bytes; T is a same-size type used for the scalar copy. */
#define CP_DEFINE_TRANSPOSE(NAME, T, TILE, TILEFN, VT)                                    \
    static void NAME(const void *src_, ptrdiff_t ss, void *dst_, ptrdiff_t ds,            \
                     ptrdiff_t rows, ptrdiff_t cols)                                      \
    {                                                                                     \
        const T *src = (const T *)src_;                                                   \
        T *dst = (T *)dst_;                                                               \
        ptrdiff_t r0 = 0, c0, r, c;                                                       \
        CP_TILES(TILE, TILEFN, VT)                                                        \
        for (r = r0; r < rows; r++)            /* rows left over below the tiles */       \
            for (c = 0; c < cols; c++)                                                    \
                dst[c * ds + r] = src[r * ss + c];                                        \
    }

#ifdef CP_HAVE_AVX2_TILES
/* float: 16 x 16 tiles first where AVX-512F is there (the columns right of
 * them in 8 x 8 tiles), then the 8 x 8 tiles for the rows below */
#define CP_TILES16(TILE, TILEFN, VT)                                                      \
    if (TILE == 8 && cp_tile_isa() >= 2) {                                                \
        for (; r0 + 16 <= rows; r0 += 16) {                                               \
            for (c0 = 0; c0 + 16 <= cols; c0 += 16)                                       \
                cp_tile16_32((const float *)(src + r0 * ss + c0), ss,                     \
                             (float *)(dst + c0 * ds + r0), ds);                          \
            for (; c0 + 8 <= cols; c0 += 8) {                                             \
                TILEFN((const VT *)(src + r0 * ss + c0), ss, (VT *)(dst + c0 * ds + r0), ds); \
                TILEFN((const VT *)(src + (r0 + 8) * ss + c0), ss,                        \
                       (VT *)(dst + c0 * ds + r0 + 8), ds);                               \
            }                                                                             \
            for (r = r0; r < r0 + 16; r++)                                                \
                for (c = c0; c < cols; c++)                                               \
                    dst[c * ds + r] = src[r * ss + c];                                    \
        }                                                                                 \
    }
#define CP_TILES(TILE, TILEFN, VT)                                                        \
    CP_TILES16(TILE, TILEFN, VT)                                                          \
    if (cp_tile_isa() >= 1) {                                                             \
        for (; r0 + TILE <= rows; r0 += TILE) {                                           \
            for (c0 = 0; c0 + TILE <= cols; c0 += TILE)                                   \
                TILEFN((const VT *)(src + r0 * ss + c0), ss, (VT *)(dst + c0 * ds + r0), ds); \
            for (r = r0; r < r0 + TILE; r++)   /* columns left over right of the tiles */ \
                for (c = c0; c < cols; c++)                                               \
                    dst[c * ds + r] = src[r * ss + c];                                    \
        }                                                                                 \
    }
#else
#define CP_TILES(TILE, TILEFN, VT)
#endif

CP_DEFINE_TRANSPOSE(cp_transpose_32, uint32_t, 8, cp_tile8_32, float)
CP_DEFINE_TRANSPOSE(cp_transpose_64, uint64_t, 4, cp_tile4_64, double)

#endif /* CYPOOL_TRANSPOSE_H */
