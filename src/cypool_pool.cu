/*
 * cypool_pool.cu -- the GPU kernels: every pooling function of cypool,
 * forward and backward, for CuPy (RawModule, compiled by NVRTC at run time)
 * and, through cypool_cuda_host.h, for the host (the tests run each kernel's
 * logic on the CPU, grid by grid, and compare it with the Cython kernels).
 *
 * Arrays are the Cython kernels' 5-d blocks (N, D, H, W, C): channels-first
 * input is (N*C, D, H, W, 1), channels-last (N, D, H, W, C), so one index
 * formula serves both layouts.  Window arithmetic comes from cypool_window.h,
 * the header the Cython kernels' tables are built from, so the two paths
 * cannot disagree about which elements a window covers.
 *
 * Every kernel is a grid-stride loop over its outputs (forward) or inputs
 * (backward) with one thread per element: no atomics, no shared state, so
 * every result, the backward sums included, is the same on every run and for
 * every launch configuration.  The order of every sum is PyTorch's CPU
 * order: taps row-major from +0.0 (forward); for each input element, the
 * gradients of the windows covering it in output order (backward, the
 * gather form of PyTorch's scatter).
 *
 * Template parameters: T the stored type (cp_half for float16), A the
 * compute type (float for float16), I the index type of the element loop (int when every array fits
 * 2^31 - 1 elements, else long long; chosen by cypool._gpu.index_type).
 */
#include "cypool_window.h"

#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
#define CP_GLOBAL __global__
#define CP_DEV __device__ __forceinline__
/* float16 storage without cuda_fp16.h (NVRTC needs no include path): the
 * conversions are the PTX instructions, round to nearest even */
struct cp_half {
    unsigned short bits;
};
#else
#define CP_GLOBAL
#define CP_DEV static inline
typedef _Float16 cp_half;     /* the host shim: the compiler's IEEE half */
#endif

/* The grid-stride loop every kernel runs: element e of [0, total), one per
 * thread, strided by the whole grid (any grid size gives the same results). */
#define CP_GRID_STRIDE(I, e, total)                                              \
    for (I e = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; e < (total);    \
         e += (I)blockDim.x * (I)gridDim.x)

/* Geometry, as 64-bit integers (a small device array, built once per plan):
 *  [0] N  [1] C  [2..4] size D, H, W  [5..7] osize D, H, W
 *  [8 + 8*k ..] dim k: kind (0 adaptive, 1 fixed), kernel, stride,
 *               pad before, pad after, dilation, count_include_pad, unused
 *  [32] div_mode (0 per dim, 1 product, 2 constant)
 */
enum { CP_G_N = 0, CP_G_C = 1, CP_G_SIZE = 2, CP_G_OSIZE = 5, CP_G_DIM = 8, CP_G_MODE = 32,
       CP_G_LEN = 33 };

CP_DEV void cp_window(const long long *g, int k, cp_index o, cp_index *start,
                      cp_index *count, cp_index *factor)
{
    const long long *p = g + CP_G_DIM + 8 * k;
    cp_index I = g[CP_G_SIZE + k];
    if (p[0] == 0)
        cp_adaptive_window(o, g[CP_G_OSIZE + k], I, start, count, factor);
    else
        cp_fixed_window(o, I, p[1], p[2], p[3], p[4], p[5], (int)p[6], start, count, factor);
}

CP_DEV cp_index cp_step(const long long *g, int k)
{
    const long long *p = g + CP_G_DIM + 8 * k;
    return p[0] == 0 ? 1 : p[5];
}

/* The outputs along dimension k whose windows may cover input position i:
 * [*lo, *hi); each still has to be checked (cp_covers). */
CP_DEV void cp_cover_range(const long long *g, int k, cp_index i, cp_index *lo, cp_index *hi)
{
    const long long *p = g + CP_G_DIM + 8 * k;
    cp_index O = g[CP_G_OSIZE + k], I = g[CP_G_SIZE + k];
    cp_index a, b;
    if (p[0] == 0) {
        /* adaptive: start(o) <= i < end(o) */
        a = (i * O) / I - 1;
        b = ((i + 1) * O + I - 1) / I + 1;
    } else {
        /* fixed: o*s - pb <= i <= o*s - pb + (k-1)*d */
        cp_index s = p[2], pb = p[3], span = (p[1] - 1) * p[5];
        a = cp_floordiv(i + pb - span, s);
        b = cp_floordiv(i + pb, s) + 1;
    }
    *lo = a < 0 ? 0 : a;
    *hi = b > O ? O : b;
}

/* Does output o's window along dimension k read input position i? */
CP_DEV int cp_covers(const long long *g, int k, cp_index o, cp_index i)
{
    cp_index s, n, f, st = cp_step(g, k);
    cp_window(g, k, o, &s, &n, &f);
    return n > 0 && i >= s && i <= s + (n - 1) * st && (i - s) % st == 0;
}

/* A window sum made an average, as the Cython kernels divide (_finish_avg):
 * mode 0 by each extent's count in turn, mode 1 once by the product of the
 * factors (+0.0 for a window with no divisor), mode 2 by the override; the
 * quotient added to 0 (a zero sum over a negative divisor gives +0.0). */
template <typename A>
CP_DEV A cp_average(A acc, const long long *g, const cp_index *cnt, const cp_index *fac,
                    double div_value)
{
    long long mode = g[CP_G_MODE];
    if (mode == 0) {
        acc = acc / (A)cnt[0];
        acc = acc / (A)cnt[1];
        return acc / (A)cnt[2];
    }
    double dv = mode == 1 ? (double)(fac[0] * fac[1] * fac[2]) : div_value;
    if (dv == 0)
        return (A)0;
    return (A)0 + acc / (A)dv;
}

template <typename T, typename A>
CP_DEV A cp_load(const T *p) { return (A)*p; }
template <typename T, typename A>
CP_DEV void cp_store(T *p, A v) { *p = (T)v; }
#if defined(__CUDACC_RTC__) || defined(__CUDACC__)
template <>
CP_DEV float cp_load<cp_half, float>(const cp_half *p)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(p->bits));
    return f;
}
template <>
CP_DEV void cp_store<cp_half, float>(cp_half *p, float v)
{
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
    p->bits = h;
}
#endif

template <typename A>
CP_DEV bool cp_isnan(A v) { return v != v; }

/* Split a linear element number of a (N, D, H, W, C) block. */
template <typename I>
CP_DEV void cp_split(I e, const long long *ext, I C, I *n, I *d, I *h, I *w, I *c)
{
    *c = e % C;
    e /= C;
    *w = e % (I)ext[2];
    e /= (I)ext[2];
    *h = e % (I)ext[1];
    e /= (I)ext[1];
    *d = e % (I)ext[0];
    *n = e / (I)ext[0];
}

/* Input element e of a backward: its coordinates and, per dimension, the
 * outputs whose windows may cover it ([lo[k], hi[k]), see cp_cover_range). */
template <typename I>
CP_DEV void cp_input_element(const long long *g, I e, I C, I *n, I *d, I *h, I *w, I *c,
                             cp_index *lo, cp_index *hi)
{
    cp_split<I>(e, g + CP_G_SIZE, C, n, d, h, w, c);
    const cp_index pos[3] = {*d, *h, *w};
    for (int k = 0; k < 3; k++)
        cp_cover_range(g, k, pos[k], &lo[k], &hi[k]);
}

/* Forward: output element e = (n, od, oh, ow, c) of y (and yi: the flat
 * spatial index of the max, when want_indices).  Average (IS_MAX 0): the
 * window's taps summed row-major from +0.0, then divided.  Max: running max
 * from `init` (the type's lowest), a tap taking it when greater or NaN (the
 * last NaN wins, ties keep the first), the index starting at the window's
 * first tap. */
template <typename T, typename A, int IS_MAX, typename I>
CP_GLOBAL void cp_pool_forward(const T *__restrict__ x, T *__restrict__ y,
                               long long *__restrict__ yi, const long long *__restrict__ g,
                               I total, double div_value, A init, int want_indices)
{
    const I C = (I)g[CP_G_C];
    const long long D = g[CP_G_SIZE], H = g[CP_G_SIZE + 1], W = g[CP_G_SIZE + 2];
    CP_GRID_STRIDE(I, e, total) {
        I n, od, oh, ow, c;
        cp_split<I>(e, g + CP_G_OSIZE, C, &n, &od, &oh, &ow, &c);
        cp_index st[3], cnt[3], fac[3], o[3] = {od, oh, ow};
        for (int k = 0; k < 3; k++)
            cp_window(g, k, o[k], &st[k], &cnt[k], &fac[k]);
        const cp_index sd = cp_step(g, 0), sh = cp_step(g, 1), sw = cp_step(g, 2);
        const T *xn = x + (I)n * (I)(D * H * W) * C + c;
        A acc = IS_MAX ? init : (A)0;
        long long best = (cnt[0] > 0 && cnt[1] > 0 && cnt[2] > 0)
                         ? (st[0] * H + st[1]) * W + st[2] : -1;
        for (cp_index a = 0; a < cnt[0]; a++) {
            const cp_index d = st[0] + a * sd;
            for (cp_index b = 0; b < cnt[1]; b++) {
                const cp_index h = st[1] + b * sh;
                const cp_index row = (d * H + h) * W;
                for (cp_index t = 0; t < cnt[2]; t++) {
                    const cp_index w = st[2] + t * sw;
                    const A v = cp_load<T, A>(xn + (I)(row + w) * C);
                    if (IS_MAX) {
                        if (v > acc || cp_isnan(v)) {
                            acc = v;
                            best = row + w;
                        }
                    } else {
                        acc = acc + v;
                    }
                }
            }
        }
        if (!IS_MAX)
            acc = cp_average<A>(acc, g, cnt, fac, div_value);
        cp_store<T, A>(y + e, acc);
        if (IS_MAX && want_indices)
            yi[e] = best;
    }
}

/* Average backward, gathered: input element e = (n, d, h, w, c) sums, from
 * +0.0 and in output order, the gradient of every window covering it,
 * divided as the forward divides that window's sum (PyTorch scatters
 * grad / divisor to each tap in output order: the same additions). */
template <typename T, typename A, typename I>
CP_GLOBAL void cp_avg_backward(const T *__restrict__ go, T *__restrict__ gi,
                               const long long *__restrict__ g, I total, double div_value)
{
    const I C = (I)g[CP_G_C];
    const long long OD = g[CP_G_OSIZE], OH = g[CP_G_OSIZE + 1], OW = g[CP_G_OSIZE + 2];
    CP_GRID_STRIDE(I, e, total) {
        I n, d, h, w, c;
        cp_index lo[3], hi[3];
        cp_input_element<I>(g, e, C, &n, &d, &h, &w, &c, lo, hi);
        const T *gn = go + (I)n * (I)(OD * OH * OW) * C + c;
        A acc = (A)0;
        for (cp_index od = lo[0]; od < hi[0]; od++) {
            if (!cp_covers(g, 0, od, d))
                continue;
            for (cp_index oh = lo[1]; oh < hi[1]; oh++) {
                if (!cp_covers(g, 1, oh, h))
                    continue;
                for (cp_index ow = lo[2]; ow < hi[2]; ow++) {
                    if (!cp_covers(g, 2, ow, w))
                        continue;
                    cp_index st[3], cnt[3], fac[3], o[3] = {od, oh, ow};
                    for (int k = 0; k < 3; k++)
                        cp_window(g, k, o[k], &st[k], &cnt[k], &fac[k]);
                    const A v = cp_load<T, A>(gn + (I)((od * OH + oh) * OW + ow) * C);
                    acc = acc + cp_average<A>(v, g, cnt, fac, div_value);
                }
            }
        }
        cp_store<T, A>(gi + e, acc);
    }
}

/* Max backward, checked first: flags[0] = 1 when an index lies outside its
 * own window (the gather below would miss it: the caller then takes
 * cp_max_backward_planes), flags[1] = 1 when one lies outside [-1, plane)
 * (an error).  Each flag is only ever set to 1, so the result does not
 * depend on which thread writes first. */
template <typename I>
CP_GLOBAL void cp_max_check(const long long *__restrict__ idx, const long long *__restrict__ g,
                            I total, int *__restrict__ flags)
{
    const I C = (I)g[CP_G_C];
    const long long H = g[CP_G_SIZE + 1], W = g[CP_G_SIZE + 2];
    const long long plane = g[CP_G_SIZE] * H * W;
    CP_GRID_STRIDE(I, e, total) {
        const long long j = idx[e];
        if (j == -1)
            continue;
        if (j < -1 || j >= plane) {
            flags[1] = 1;
            continue;
        }
        I n, od, oh, ow, c;
        cp_split<I>(e, g + CP_G_OSIZE, C, &n, &od, &oh, &ow, &c);
        const cp_index pos[3] = {j / (H * W), (j / W) % H, j % W}, o[3] = {od, oh, ow};
        for (int k = 0; k < 3; k++)
            if (!cp_covers(g, k, o[k], pos[k]))
                flags[0] = 1;
    }
}

/* Max backward, gathered (every index inside its window): input element
 * e sums, from +0.0 in output order, the gradients of the covering windows
 * whose index is e's spatial position. */
template <typename T, typename A, typename I>
CP_GLOBAL void cp_max_backward(const T *__restrict__ go, const long long *__restrict__ idx,
                               T *__restrict__ gi, const long long *__restrict__ g, I total)
{
    const I C = (I)g[CP_G_C];
    const long long H = g[CP_G_SIZE + 1], W = g[CP_G_SIZE + 2];
    const long long OD = g[CP_G_OSIZE], OH = g[CP_G_OSIZE + 1], OW = g[CP_G_OSIZE + 2];
    CP_GRID_STRIDE(I, e, total) {
        I n, d, h, w, c;
        cp_index lo[3], hi[3];
        cp_input_element<I>(g, e, C, &n, &d, &h, &w, &c, lo, hi);
        const long long me = ((long long)d * H + h) * W + w;
        const I base = (I)n * (I)(OD * OH * OW) * C + c;
        A acc = (A)0;
        for (cp_index od = lo[0]; od < hi[0]; od++)
            for (cp_index oh = lo[1]; oh < hi[1]; oh++)
                for (cp_index ow = lo[2]; ow < hi[2]; ow++) {
                    const I o = base + (I)((od * OH + oh) * OW + ow) * C;
                    if (idx[o] == me)
                        acc = acc + cp_load<T, A>(go + o);
                }
        cp_store<T, A>(gi + e, acc);
    }
}

/* Max backward for any indices: one thread per (sample, channel) plane
 * scatters its outputs' gradients in output order, as PyTorch's CPU kernel
 * does (gi must be zeroed; index -1 is skipped, the range checked before). */
template <typename T, typename A, typename I>
CP_GLOBAL void cp_max_backward_planes(const T *__restrict__ go,
                                      const long long *__restrict__ idx, T *__restrict__ gi,
                                      const long long *__restrict__ g, I planes)
{
    const I C = (I)g[CP_G_C];
    const long long S = g[CP_G_SIZE] * g[CP_G_SIZE + 1] * g[CP_G_SIZE + 2];
    const long long OS = g[CP_G_OSIZE] * g[CP_G_OSIZE + 1] * g[CP_G_OSIZE + 2];
    CP_GRID_STRIDE(I, p, planes) {
        const I n = p / C, c = p % C;
        const I ib = n * (I)S * C + c, ob = n * (I)OS * C + c;
        for (long long o = 0; o < OS; o++) {
            const long long j = idx[ob + (I)o * C];
            if (j < 0)
                continue;
            T *q = gi + ib + (I)j * C;
            cp_store<T, A>(q, cp_load<T, A>(q) + cp_load<T, A>(go + ob + (I)o * C));
        }
    }
}
