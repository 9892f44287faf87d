/* divcheck.c -- exhaustive check of cypool's exact float32 division by
 * reciprocals (cp_rdiv_row_f32 in src/cypool_lanes.h): for every odd divisor
 * d in [lo, hi] and every float a in [1, 2) (every significand), the
 * reciprocal path must give exactly the IEEE quotient a / d.  Even divisors
 * and other exponents of a scale both sides exactly, so this covers every
 * divisor up to hi and every a in the range the path takes.
 *
 *   cc -O2 -Isrc tests/divcheck.c -o divcheck && ./divcheck 1 65535 [level]
 *
 * With lo = 0, it checks the dividends outside that range instead (every
 * sign and exponent, subnormals, zeros, inf and NaN, a sample of
 * significands) for every divisor up to hi: those must take the true
 * division, so NaN payloads included, every bit must match.
 *
 * level limits the instruction set (2: AVX-512F, 1: AVX2+FMA) as the tests'
 * limit_window_isa does.  Prints the number of divisors that fail (0) and
 * how many quotients went through the vector path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cypool_lanes.h"

enum { B = 1 << 16 };
static float a[B], y[B];

/* Quotients of the B dividends in a[] by d that the reciprocal path gets
 * wrong (against the true division); adds the vector ones to *vec. */
static long check_block(float td, float tr, long *vec)
{
    long nb = 0;
    memcpy(y, a, sizeof y);
    ptrdiff_t n = cp_rdiv_row_f32(y, B, &td, &tr, 0);
    *vec += n;
    for (ptrdiff_t j = 0; j < n; j++) {
        float q = 0 + a[j] / td;
        nb += memcmp(&q, &y[j], sizeof q) != 0;
    }
    return nb;
}

/* lo = -1: every divisor d up to hi (even ones too: near the underflow,
 * the exponent does not just scale), every positive significand at the
 * dividend exponents where the quotient's first product q0 meets the
 * subnormals (the subnormal a, and a below 2^-124 * d), and at the largest
 * exponent (a in [2^127, 2^128)).  A negative a is the same computation
 * mirrored, but where q0 is -0 (which takes the true division). */
static int check_extremes(long hi, long *vec)
{
    long bad = 0;
    for (long d = 1; d <= hi; d++) {
        float td = (float)d, tr = 1.0f / td;
        long nb = 0;
        int top = 3;
        while ((1L << (top - 3)) < d)
            top++;
        for (int e = 0; e <= top + 1; e++) {
            unsigned ex = e <= top ? (unsigned)e : 254u;
            for (unsigned long k = 0; k < (1ul << 23) / B; k++) {
                for (unsigned j = 0; j < B; j++) {
                    unsigned bits = ex << 23 | (unsigned)(k * B + j);
                    memcpy(&a[j], &bits, sizeof bits);
                }
                nb += check_block(td, tr, vec);
            }
        }
        if (nb) {
            if (bad < 10)
                printf("divisor %ld: %ld quotients differ\n", d, nb);
            bad++;
        }
    }
    printf("divisors failing: %ld, vector quotients: %ld\n", bad, *vec);
    return bad != 0;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    long lo = atol(argv[1]), hi = atol(argv[2]), bad = 0, vec = 0;
#ifdef CP_HAVE_WINDOW_MAX
    if (argc > 3)
        cp_window_limit_isa(atoi(argv[3]));
#endif
    if (lo < 0)
        return check_extremes(hi, &vec);
    /* lo = 0: every divisor up to hi, dividends sampled from all 2^32 bit
     * patterns; else odd divisors, every significand in [1, 2) */
    const int edges = lo == 0;
    for (long d = edges ? 1 : lo | 1; d <= hi; d += edges ? 1 : 2) {
        float td = (float)d, tr = 1.0f / td;
        long nb = 0;
        const unsigned long blocks = edges ? (1ul << 32) / (B * 61ul) + 1 : (1ul << 23) / B;
        for (unsigned long k = 0; k < blocks; k++) {
            for (unsigned j = 0; j < B; j++) {
                unsigned bits = edges ? (unsigned)((k * B + j) * 61ul)
                                      : 0x3f800000u + (unsigned)(k * B) + j;
                memcpy(&a[j], &bits, sizeof bits);
            }
            nb += check_block(td, tr, &vec);
        }
        if (nb) {
            if (bad < 10)
                printf("divisor %ld: %ld quotients differ\n", d, nb);
            bad++;
        }
    }
    printf("divisors failing: %ld, vector quotients: %ld\n", bad, vec);
    return bad != 0;
}
