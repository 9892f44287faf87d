/*
 * cypool_window.h -- the one definition of pooling window arithmetic.
 *
 * Included by the Cython kernels (src/_kernels.pyx) and by the CUDA kernels
 * alike, so the CPU and GPU paths cannot disagree about which input elements
 * a window covers.  Everything is integer-exact and 64-bit.
 *
 * A window along one dimension is described by three numbers:
 *   start  first input position it reads (already clipped to the input),
 *   count  how many positions it reads: start, start+step, ..., start+(count-1)*step,
 *   factor its contribution to an average's divisor along this dimension.
 * The step is the dilation (1 for adaptive windows).
 */
#ifndef CYPOOL_WINDOW_H
#define CYPOOL_WINDOW_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define CP_HD __host__ __device__ __forceinline__
#else
#define CP_HD static inline
#endif

typedef long long cp_index;

/* Adaptive bin o of O over an input extent I: [floor(o*I/O), ceil((o+1)*I/O)).
 * Written as PyTorch writes it (AdaptivePooling.h) so that o*I cannot
 * overflow before the division for any extent that fits in 63 bits. */
CP_HD cp_index cp_adaptive_start(cp_index o, cp_index O, cp_index I)
{
    return (o / O) * I + ((o % O) * I) / O;
}

CP_HD cp_index cp_adaptive_end(cp_index o, cp_index O, cp_index I)
{
    return 1 + ((o + 1) * I - 1) / O;
}

/* Adaptive window of output o: writes start, count and factor (= count). */
CP_HD void cp_adaptive_window(cp_index o, cp_index O, cp_index I,
                              cp_index *start, cp_index *count, cp_index *factor)
{
    cp_index s = cp_adaptive_start(o, O, I);
    cp_index e = cp_adaptive_end(o, O, I);
    *start = s;
    *count = e - s;
    *factor = e - s;
}

/* Floor division for a possibly negative numerator and positive divisor. */
CP_HD cp_index cp_floordiv(cp_index a, cp_index b)
{
    cp_index q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Output extent of a fixed-window pool (PyTorch's pooling_output_shape_pad_lr):
 * floor((I + pb + pa - d*(k-1) - 1 [+ s-1 if ceil]) / s) + 1, and with
 * ceil_mode one less when the last window would start at or after I + pb. */
CP_HD cp_index cp_fixed_out_size(cp_index I, cp_index k, cp_index s,
                                 cp_index pb, cp_index pa, cp_index d, int ceil_mode)
{
    cp_index num = I + pb + pa - d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    cp_index out = cp_floordiv(num, s) + 1;
    if (ceil_mode && (out - 1) * s >= I + pb)
        out -= 1;
    return out;
}

/* Fixed window of output o (kernel k, stride s, padding before pb and after
 * pa, dilation d) over an input extent I.  Positions in the padding are never
 * read: start moves to the first real tap (as PyTorch's `while (h0 < 0)
 * h0 += d`), count only counts real taps.  factor is what the window adds to
 * the divisor: the number of taps at positions below I + pa (for d = 1
 * that is PyTorch's pool_size: padding counts, the ceil_mode overhang past
 * the padding does not) when count_include_pad, else the number of real
 * taps.  A window lying wholly in
 * the padding gets count 0. */
CP_HD void cp_fixed_window(cp_index o, cp_index I, cp_index k, cp_index s,
                           cp_index pb, cp_index pa, cp_index d, int count_include_pad,
                           cp_index *start, cp_index *count, cp_index *factor)
{
    cp_index first = o * s - pb;                 /* first tap, maybe in padding */
    cp_index last = first + (k - 1) * d;         /* last tap, maybe in padding */
    cp_index s0 = first;
    if (s0 < 0)
        s0 += ((-s0 + d - 1) / d) * d;           /* first real tap */
    cp_index e = last < I - 1 ? last : I - 1;    /* last real position */
    cp_index n = (e >= s0) ? (e - s0) / d + 1 : 0;
    *start = s0;
    *count = n;
    if (count_include_pad) {
        /* taps at positions below I + pa: real or padding, not overhang */
        cp_index lim = I + pa - first;
        cp_index taps = lim <= 0 ? 0 : (lim - 1) / d + 1;
        *factor = taps < k ? taps : k;
    } else {
        *factor = n;
    }
}

#endif /* CYPOOL_WINDOW_H */
