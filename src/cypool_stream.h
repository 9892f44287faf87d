/*
 * cypool_stream.h -- copies into memory that will not be read again soon.
 *
 * A backward pass writes an input-sized gradient once.  When that array is
 * larger than the caches, ordinary stores first read every destination line
 * (write-allocate), doubling the memory traffic; non-temporal stores write
 * the lines directly.  cp_stream_copy copies bytes that way on x86-64
 * (SSE2, part of the baseline ISA, so no run-time dispatch is needed) and
 * with memcpy elsewhere; cp_stream_fence orders the streamed stores before
 * anything the thread does next (call it once per thread, after its last
 * cp_stream_copy).  Pure data movement: results are the same bits either way.
 */
#ifndef CYPOOL_STREAM_H
#define CYPOOL_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <emmintrin.h>

/* cp_stream_copy, and with zero (a constant) src zeroed behind it */
static inline void cp_stream_move(void *dst, void *src, size_t n, const int zero)
{
    char *d = (char *)dst, *s = (char *)src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    const __m128i z = _mm_setzero_si128();
    if (n < 64 || head > n)
        head = n;
    memcpy(d, s, head);
    if (zero)
        memset(s, 0, head);
    d += head;
    s += head;
    n -= head;
    for (; n >= 64; n -= 64, d += 64, s += 64) {
        __m128i a = _mm_loadu_si128((const __m128i *)s);
        __m128i b = _mm_loadu_si128((const __m128i *)(s + 16));
        __m128i c = _mm_loadu_si128((const __m128i *)(s + 32));
        __m128i e = _mm_loadu_si128((const __m128i *)(s + 48));
        _mm_stream_si128((__m128i *)d, a);
        _mm_stream_si128((__m128i *)(d + 16), b);
        _mm_stream_si128((__m128i *)(d + 32), c);
        _mm_stream_si128((__m128i *)(d + 48), e);
        if (zero) {
            _mm_storeu_si128((__m128i *)s, z);
            _mm_storeu_si128((__m128i *)(s + 16), z);
            _mm_storeu_si128((__m128i *)(s + 32), z);
            _mm_storeu_si128((__m128i *)(s + 48), z);
        }
    }
    for (; n >= 16; n -= 16, d += 16, s += 16) {
        _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)s));
        if (zero)
            _mm_storeu_si128((__m128i *)s, z);
    }
    memcpy(d, s, n);
    if (zero)
        memset(s, 0, n);
}

static inline void cp_stream_copy(void *dst, const void *src, size_t n)
{
    cp_stream_move(dst, (void *)src, n, 0);     /* (src is only read) */
}

/* cp_stream_copy that leaves src zeroed behind it (the lines are in the
 * cache as they are loaded: cheaper than a pass of its own to zero them) */
static inline void cp_stream_copy_zero(void *dst, void *src, size_t n)
{
    cp_stream_move(dst, src, n, 1);
}

static inline void cp_stream_fence(void) { _mm_sfence(); }

/* n bytes at dst set to the 4-byte pattern (repeated from dst on), whole
 * 16-byte pieces streamed; then cp_stream_fence. */
static inline void cp_stream_fill(void *dst, size_t n, uint32_t pattern)
{
    char *d = (char *)dst;
    const __m128i v = _mm_set1_epi32((int)pattern);
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    uint32_t rot = pattern;
    if (n < 64 || head > n) {
        for (size_t i = 0; i < n; i++)
            d[i] = (char)(pattern >> (8 * (i & 3)));
        return;
    }
    for (size_t i = 0; i < head; i++)
        d[i] = (char)(pattern >> (8 * (i & 3)));
    /* the pattern's phase where the aligned part starts */
    if (head & 3)
        rot = (pattern >> (8 * (head & 3))) | (pattern << (32 - 8 * (head & 3)));
    const __m128i w = (head & 3) ? _mm_set1_epi32((int)rot) : v;
    char *e = d + n;
    d += head;
    for (; e - d >= 16; d += 16)
        _mm_stream_si128((__m128i *)d, w);
    for (size_t i = 0; d + i < e; i++)
        d[i] = (char)(rot >> (8 * (i & 3)));
    _mm_sfence();
}

/* n bytes at dst set to a row of `period` bytes repeated from dst on (the
 * region's first row starts at dst), given as pat2: the row twice (2 *
 * period bytes).  The whole 64-byte lines inside the region are streamed,
 * the partial lines at its two ends written with plain stores, so that
 * regions that meet (the runs of rows of one plane, one after another) each
 * write their shared line's bytes plainly and no line is streamed in part.
 * period >= 64.  Call cp_stream_fence after the thread's last one. */
static inline void cp_stream_periodic(void *dst, size_t n, const void *pat2, size_t period)
{
    char *d = (char *)dst;
    const char *s = (const char *)pat2;
    size_t head = (64 - ((uintptr_t)d & 63)) & 63, phase;
    if (n < 128 || period < 64) {
        for (size_t o = 0; o < n; o += period)
            memcpy(d + o, s, n - o < period ? n - o : period);
        return;
    }
    memcpy(d, s, head);             /* head < 64 <= period: one piece */
    d += head;
    n -= head;
    phase = head;
    for (; n >= 64; n -= 64, d += 64) {
        const char *q = s + phase;  /* phase < period: q + 64 <= s + 2 * period */
        _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)q));
        _mm_stream_si128((__m128i *)(d + 16), _mm_loadu_si128((const __m128i *)(q + 16)));
        _mm_stream_si128((__m128i *)(d + 32), _mm_loadu_si128((const __m128i *)(q + 32)));
        _mm_stream_si128((__m128i *)(d + 48), _mm_loadu_si128((const __m128i *)(q + 48)));
        phase += 64;
        if (phase >= period)
            phase -= period;
    }
    memcpy(d, s + phase, n);        /* n < 64: within the doubled row */
}

#else

static inline void cp_stream_periodic(void *dst, size_t n, const void *pat2, size_t period)
{
    char *d = (char *)dst;
    for (size_t o = 0; o < n; o += period)
        memcpy(d + o, pat2, n - o < period ? n - o : period);
}
static inline void cp_stream_copy(void *dst, const void *src, size_t n) { memcpy(dst, src, n); }
static inline void cp_stream_copy_zero(void *dst, void *src, size_t n)
{
    memcpy(dst, src, n);
    memset(src, 0, n);
}
static inline void cp_stream_fence(void) {}
static inline void cp_stream_fill(void *dst, size_t n, uint32_t pattern)
{
    char *d = (char *)dst;
    for (size_t i = 0; i < n; i++)
        d[i] = (char)(pattern >> (8 * (i & 3)));
}

#endif

/* A hint to load the n bytes from p into the caches (prefetches never
 * fault, so p may lie past the end of an array). */
/* a + b where, both being NaN, the sum is a's (quieted): the x86 rule for
 * the first operand of addss and addsd, as in PyTorch's running sums
 * (acc += x).  The compiler may swap a plain add's operands (they commute
 * but for which NaN they keep), and did so as the code around the adds
 * changed: spelt out here, so that it cannot. */
#if defined(__x86_64__) && defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
static inline float cp_add_f32(float a, float b)
{
    __asm__("addss %1, %0" : "+x"(a) : "x"(b));
    return a;
}
static inline double cp_add_f64(double a, double b)
{
    __asm__("addsd %1, %0" : "+x"(a) : "x"(b));
    return a;
}
#else
static inline float cp_add_f32(float a, float b) { return a + b; }
static inline double cp_add_f64(double a, double b) { return a + b; }
#endif

static inline void cp_prefetch(const void *p, size_t n)
{
    const char *c = (const char *)p;
    for (size_t i = 0; i < n; i += 64)
        __builtin_prefetch(c + i, 0, 3);
}

/* cp_prefetch into the L2 cache only (not the L1, where lines needed a
 * while from now evict those needed now) */
static inline void cp_prefetch_l2(const void *p, size_t n)
{
    const char *c = (const char *)p;
    for (size_t i = 0; i < n; i += 64)
        __builtin_prefetch(c + i, 0, 2);
}

/* A hint to bring the line holding p into the cache to be written (a line
 * that plain stores will write only in part, where a miss would hold up
 * every store behind it). */
static inline void cp_prefetch_w(const void *p)
{
    __builtin_prefetch(p, 1, 3);
}

/* malloc (zero: calloc) of n bytes at a 64-byte boundary, so that scratch
 * rows of whole cache lines are loaded and stored without straddling two
 * lines; free with cp_afree.  The block malloc returned is kept just below. */
static inline void *cp_amalloc(size_t n, int zero)
{
    void *raw = zero ? calloc(n + 64, 1) : malloc(n + 64);
    if (raw == NULL)
        return NULL;
    uintptr_t p = ((uintptr_t)raw + 64) & ~(uintptr_t)63;   /* >= raw + 16 */
    ((void **)p)[-1] = raw;
    return (void *)p;
}

static inline void cp_afree(void *p)
{
    if (p != NULL)
        free(((void **)p)[-1]);
}

#endif /* CYPOOL_STREAM_H */
