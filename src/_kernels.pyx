# cython: language_level=3, boundscheck=False, wraparound=False
# cython: cdivision=True, initializedcheck=False, nonecheck=False
"""CPU pooling kernels.

Every kernel sees the data as a C-contiguous 5-d block ``(N, D, H, W, C)``:
channels-last arrays map onto it directly, channels-first arrays as
``(N*C, D, H, W, 1)``, and 1-d/2-d pooling as ``D = 1`` (and ``H = 1``).
Which input positions a window reads comes from per-dimension tables built
by ``window_table`` from ``cypool_window.h``; the kernels never parse
arguments and check nothing (``cypool._plan`` has done that).

Work is split into items that each own a disjoint part of the result, so
results are bit-identical at any thread count, and every window is summed
or scanned in PyTorch's order (depth, then row, then column).
"""

from cython.parallel cimport parallel, prange
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset
from libc.stdint cimport (int8_t, uint8_t, int16_t, uint16_t, int32_t,
                          uint32_t, int64_t, uint64_t, uintptr_t)

import numpy as np


cdef extern from "cypool_window.h" nogil:
    ctypedef long long cp_index
    void cp_adaptive_window(cp_index o, cp_index O, cp_index I,
                            cp_index *start, cp_index *count, cp_index *factor)
    void cp_fixed_window(cp_index o, cp_index I, cp_index k, cp_index s,
                         cp_index pb, cp_index pa, cp_index d, int count_include_pad,
                         cp_index *start, cp_index *count, cp_index *factor)
    cp_index cp_fixed_out_size(cp_index I, cp_index k, cp_index s,
                               cp_index pb, cp_index pa, cp_index d, int ceil_mode)


cdef extern from "cypool_lanes.h" nogil:
    void cp_lanes_add_f32(float *acc, const float *x, Py_ssize_t n, Py_ssize_t taps,
                          Py_ssize_t xstep)
    void cp_lanes_add_f64(double *acc, const double *x, Py_ssize_t n, Py_ssize_t taps,
                          Py_ssize_t xstep)
    void cp_lanes_max_f32(float *m, int64_t *mi, const float *x, Py_ssize_t n,
                          Py_ssize_t taps, Py_ssize_t xstep, int64_t idx, int64_t istep)
    void cp_lanes_max_f64(double *m, int64_t *mi, const double *x, Py_ssize_t n,
                          Py_ssize_t taps, Py_ssize_t xstep, int64_t idx, int64_t istep)
    void cp_lanes_maxv_f32(float *m, const float *x, Py_ssize_t n, Py_ssize_t taps,
                           Py_ssize_t xstep)
    void cp_lanes_maxv_f64(double *m, const double *x, Py_ssize_t n, Py_ssize_t taps,
                           Py_ssize_t xstep)
    void cp_window_avg_by_f32(float *y, const float *x, Py_ssize_t n, const Py_ssize_t *offs,
                              Py_ssize_t taps, float d, float r, int nt,
                              Py_ssize_t count, Py_ssize_t xstep, Py_ssize_t ystep)
    bint cp_window_avg_by4_f32(float *y, const float *x, Py_ssize_t n, Py_ssize_t C,
                               const Py_ssize_t *ro, Py_ssize_t rows, Py_ssize_t nw,
                               float d, float r, int nt)
    void cp_window_add_f32(float *y, const float *x, Py_ssize_t n, const Py_ssize_t *offs,
                           Py_ssize_t taps, int mode, double d1, double d2, double d3)
    void cp_window_add_f64(double *y, const double *x, Py_ssize_t n, const Py_ssize_t *offs,
                           Py_ssize_t taps, int mode, double d1, double d2, double d3)
    void cp_window_max_f32(float *y, int64_t *yi, const float *x, Py_ssize_t n,
                           const Py_ssize_t *offs, const int64_t *tidx, Py_ssize_t taps,
                           float init, int64_t first, const int64_t *firsts, int64_t lstep,
                           int nt)
    void cp_window_max_f64(double *y, int64_t *yi, const double *x, Py_ssize_t n,
                           const Py_ssize_t *offs, const int64_t *tidx, Py_ssize_t taps,
                           double init, int64_t first, const int64_t *firsts, int64_t lstep,
                           int nt)
    void cp_window_maxv_f32(float *y, const float *x, Py_ssize_t n, const Py_ssize_t *offs,
                            Py_ssize_t taps, float init)
    int cp_clmax_run_f32(float *y, int64_t *yi, const float *x, Py_ssize_t m, Py_ssize_t nv,
                         Py_ssize_t ys, const Py_ssize_t *offs, const int32_t *rel,
                         Py_ssize_t taps, Py_ssize_t xs, int64_t first, int64_t step,
                         float init, const Py_ssize_t *pre, Py_ssize_t npre,
                         Py_ssize_t nbytes, int nt)
    void cp_window_maxv_f64(double *y, const double *x, Py_ssize_t n, const Py_ssize_t *offs,
                            Py_ssize_t taps, double init)
    int cp_window_limit_isa(int level)
    bint cp_index_outside(const int64_t *ip, Py_ssize_t n, int64_t lo, int64_t hi)
    int cp_scatter_lanes_f32(float *gp, const float *op, const int64_t *ip, Py_ssize_t n,
                             Py_ssize_t C, Py_ssize_t c0, Py_ssize_t c1, int64_t jlo, int64_t jhi,
                             int64_t clo, int64_t chi, int *bad)
    void cp_int_rowmax(int code, void *b, const void *r, const void *r2, Py_ssize_t n,
                       int first)
    bint cp_pair_rows_bytes(uint8_t *y, const uint8_t *const *rows, Py_ssize_t nr, Py_ssize_t n,
                            int sgn)
    void cp_int_colmax(int code, void *y, const void *b, void *e, Py_ssize_t W, Py_ssize_t n,
                       Py_ssize_t C, const int64_t *start, const int64_t *count,
                       Py_ssize_t k, Py_ssize_t sw, const void *init, Py_ssize_t ulo,
                       Py_ssize_t uhi)
    bint cp_fmax2_ok()
    bint cp_collanes_ok()
    bint cp_collanes_preferred()
    void cp_collanes_f32(float *y, Py_ssize_t ys, const float *x, const float *xend,
                         Py_ssize_t S, Py_ssize_t nplanes, const Py_ssize_t *roff, Py_ssize_t nr,
                         const int64_t *ws, const int64_t *wc, Py_ssize_t OW)
    void cp_collanes_f64(double *y, Py_ssize_t ys, const double *x, const double *xend,
                         Py_ssize_t S, Py_ssize_t nplanes, const Py_ssize_t *roff, Py_ssize_t nr,
                         const int64_t *ws, const int64_t *wc, Py_ssize_t OW)
    void cp_fmax22_rows_f32(float *y, int64_t *yi, const float *x, Py_ssize_t P,
                            Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t OH, Py_ssize_t OW)
    void cp_favg22_rows_f32(float *y, const float *x, Py_ssize_t P, Py_ssize_t m0,
                            Py_ssize_t m1, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                            Py_ssize_t OW, int mode, float d, int nt, Py_ssize_t ahead)
    int64_t cp_cl_max_back_row_f32(float *gr, const float *go, const int64_t *idx,
                                   const Py_ssize_t *orow, Py_ssize_t nrow, int64_t pbase,
                                   Py_ssize_t W, Py_ssize_t C, const int64_t *wptr,
                                   const int64_t *wouts, Py_ssize_t *off, int nt)
    int64_t cp_count_not_none(const int64_t *ip, Py_ssize_t n)
    void cp_avg22_back_f32(float *gi, const float *go, Py_ssize_t m0, Py_ssize_t m1,
                           Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW, int mode,
                           float d, float *stage, int nt)
    int cp_stream_lines(void *dst, const void *src, size_t n)
    void cp_avg22_back_cl_f32(float *gi, const float *go, Py_ssize_t m0, Py_ssize_t m1,
                              Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                              Py_ssize_t C, int mode, float d, int nt)
    void cp_fmax32_rows_f32(float *yp, int64_t *ip, const float *xp, const float *x,
                            const float *xend, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                            Py_ssize_t OW, Py_ssize_t oh0, Py_ssize_t oh1, float *hv,
                            int32_t *hi, float *yend, float *sv, int32_t *si,
                            Py_ssize_t chunk, int nt)
    int cp_fmax22_back_f32(float *gi, const float *go, const int64_t *idx, Py_ssize_t m0,
                           Py_ssize_t m1, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                           Py_ssize_t OW)
    int cp_fmax222_back_f32(float *gi, const float *go, const int64_t *idx, Py_ssize_t m0,
                            Py_ssize_t m1, Py_ssize_t OD, Py_ssize_t OH, Py_ssize_t OW, int nt)
    int cp_cl_fmax222_back_f32(float *gi, const float *go, const int64_t *idx,
                               Py_ssize_t m0, Py_ssize_t m1, Py_ssize_t OD, Py_ssize_t OH,
                               Py_ssize_t OW, Py_ssize_t C, int nt)
    Py_ssize_t cp_fmax_s2_buf(Py_ssize_t OW, Py_ssize_t W)
    int cp_fmax_s2_back_f32(float *gi, const float *go, const int64_t *idx, Py_ssize_t H,
                            Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW, int kh, int ph, int sh,
                            int kw, int pw, float *buf, int nt)
    bint cp_gather_ok()
    int cp_use_gathers(int flag)
    void cp_fmax_gather_f32(float *y, int64_t *yi, const float *x, Py_ssize_t p0, Py_ssize_t p1,
                            Py_ssize_t S, Py_ssize_t OS, const int32_t *base, const int32_t *poff,
                            Py_ssize_t G, const int32_t *toff, Py_ssize_t T, int nt)
    int cp_cl_gather_row_f32(float *gr, const float *ring, const Py_ssize_t *slot,
                             Py_ssize_t nr, Py_ssize_t W, Py_ssize_t C, const int64_t *pw,
                             const int64_t *ow, int nt, int from_first)
    void cp_fsum2_row_f32(float *y, const float *const *rows, Py_ssize_t nr, Py_ssize_t n,
                          Py_ssize_t kw, Py_ssize_t ahead)
    float cp_fsum_one_f32(const float *const *rows, Py_ssize_t nr, Py_ssize_t c0,
                          Py_ssize_t cnt)
    void cp_fmax2_item_f32(float *y, int64_t *yi, const float *xp, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t OW, Py_ssize_t d0, Py_ssize_t nd, Py_ssize_t dstep,
                           const int64_t *hs, const int64_t *hc, Py_ssize_t hstep,
                           Py_ssize_t oh0, Py_ssize_t oh1, const int64_t *ws, const int64_t *wc,
                           Py_ssize_t kw, Py_ssize_t ulo, Py_ssize_t uhi, float *rv,
                           int32_t *ri, Py_ssize_t *tags, Py_ssize_t RS, Py_ssize_t ahead,
                           int nt)
    float cp_sum_f32(const float *x, Py_ssize_t n)
    double cp_sum_f64(const double *x, Py_ssize_t n)
    void cp_finish_row_f32(float *y, Py_ssize_t n, int mode, double a, double b,
                           const double *w, Py_ssize_t ws, double k)
    void cp_finish_row_f64(double *y, Py_ssize_t n, int mode, double a, double b,
                           const double *w, Py_ssize_t ws, double k)
    bint cp_rdiv_ok(double d)
    void cp_finish_rdiv_f32(float *y, Py_ssize_t n, const float *d, const float *r)
    void cp_window_avg_rdiv_f32(float *y, const float *x, Py_ssize_t n, const Py_ssize_t *offs,
                                Py_ssize_t taps, const float *d, const float *r)
    void cp_window_avg_rdiv2_f32(float *y0, float *y1, const float *x, Py_ssize_t n,
                                 const Py_ssize_t *o0, const Py_ssize_t *o1, Py_ssize_t taps,
                                 const float *d0, const float *r0, const float *d1,
                                 const float *r1)
    bint cp_rows_ok()
    void cp_scale_row_f32(float *y, const float *x, Py_ssize_t n, const float *d, const float *r)
    void cp_scale_cl_row_f32(float *y, const float *x, Py_ssize_t OW, Py_ssize_t C, double a,
                             const double *w)
    void cp_copy_ahead_f32(float *dst, const float *src, Py_ssize_t n, Py_ssize_t ahead)
    void cp_copy_ahead_rows_f32(float *dst, Py_ssize_t ds, const float *src, Py_ssize_t ss,
                                Py_ssize_t n, Py_ssize_t rows, Py_ssize_t ahead)
    Py_ssize_t cp_plane_shared_f32(const float *xn, float *yn, float *xpad, Py_ssize_t L,
                                   Py_ssize_t pb, Py_ssize_t H, Py_ssize_t W, Py_ssize_t col, Py_ssize_t OH,
                                   Py_ssize_t OW, Py_ssize_t hpb, Py_ssize_t K,
                                   const float *rdiv, const int32_t *rdiv_of, int nt, int nz,
                                   Py_ssize_t ahead, Py_ssize_t *done)
    bint cp_rows_shared_f32(float *y, Py_ssize_t ys, const float *xp, Py_ssize_t L, Py_ssize_t n,
                            Py_ssize_t kh, Py_ssize_t nd, Py_ssize_t pstep, Py_ssize_t kw,
                            Py_ssize_t dw, const float **d, const float **r, bint nt,
                            int mode)
    void cp_rows_avg_f32(float *y, Py_ssize_t ys, const float *xp, Py_ssize_t rs, Py_ssize_t nb,
                         Py_ssize_t n, const Py_ssize_t *to, Py_ssize_t T, const float **d,
                         const float **r)
    void cp_rows_sum_f32(float *y, Py_ssize_t ys, const float *xp, Py_ssize_t rs, Py_ssize_t nb,
                         Py_ssize_t n, const Py_ssize_t *to, Py_ssize_t T)
    void cp_sum_planes_f32(const float *x, Py_ssize_t n, Py_ssize_t nplanes, float *out)
    void cp_sum_planes_f64(const double *x, Py_ssize_t n, Py_ssize_t nplanes, double *out)
    void cp_gather_add_f32(float *acc, const float *src, const int32_t *idx, Py_ssize_t n)
    void cp_gather_add_f64(double *acc, const double *src, const int32_t *idx, Py_ssize_t n)
    void cp_spread_f32(float *p, float v, Py_ssize_t n, Py_ssize_t step)
    void cp_spread_f64(double *p, double v, Py_ssize_t n, Py_ssize_t step)
    void cp_rowlanes_finish_f32(float *y, Py_ssize_t n, int mode, double a, double b,
                                const double *w, double k)
    void cp_rowlanes_finish_f64(double *y, Py_ssize_t n, int mode, double a, double b,
                                const double *w, double k)
    void cp_rowlanes_sumw_f32(float *acc, float **rows, Py_ssize_t nr, Py_ssize_t n,
                              const int64_t *start, const int64_t *count, Py_ssize_t sw,
                              int first)
    void cp_rowlanes_sumw_f64(double *acc, double **rows, Py_ssize_t nr, Py_ssize_t n,
                              const int64_t *start, const int64_t *count, Py_ssize_t sw,
                              int first)
    void cp_rowlanes_gatherw_f32(float *acc, float **rows, Py_ssize_t nr, Py_ssize_t W,
                                 const int64_t *ptr, const int64_t *outs)
    void cp_rowlanes_gatherw_f64(double *acc, double **rows, Py_ssize_t nr, Py_ssize_t W,
                                 const int64_t *ptr, const int64_t *outs)
    void cp_rowlanes_max_f32(float *m, int32_t *mi, const float *t, Py_ssize_t n,
                             const int64_t *start, const int64_t *count, Py_ssize_t sw,
                             int64_t rowpos, int first, float init)
    void cp_rowlanes_max_f64(double *m, int64_t *mi, const double *t, Py_ssize_t n,
                             const int64_t *start, const int64_t *count, Py_ssize_t sw,
                             int64_t rowpos, int first, double init)


cdef extern from "cypool_transpose.h" nogil:
    void cp_transpose_32(const void *src, Py_ssize_t ss, void *dst, Py_ssize_t ds,
                         Py_ssize_t rows, Py_ssize_t cols)
    void cp_transpose_64(const void *src, Py_ssize_t ss, void *dst, Py_ssize_t ds,
                         Py_ssize_t rows, Py_ssize_t cols)


cdef extern from "cypool_stream.h" nogil:
    void cp_stream_copy(void *dst, const void *src, size_t n)
    void cp_stream_copy_zero(void *dst, void *src, size_t n)
    void cp_stream_fence()
    void cp_stream_fill(void *dst, size_t n, uint32_t pattern)
    void cp_stream_periodic(void *dst, size_t n, const void *pat2, size_t period)
    void cp_prefetch(const void *p, size_t n)
    void cp_prefetch_l2(const void *p, size_t n)
    void cp_prefetch_w(const void *p)
    float cp_add_f32(float a, float b)
    double cp_add_f64(double a, double b)
    void *cp_amalloc(size_t n, int zero)
    void cp_afree(void *p)


cdef extern from "cypool_threads.h" nogil:
    int cp_openmp_enabled()
    int cp_max_threads()
    void cp_set_max_threads(int n)
    int cp_team_size(int n)


ctypedef fused value_t:
    float
    double
    int8_t
    uint8_t
    int16_t
    uint16_t
    int32_t
    uint32_t
    int64_t
    uint64_t

ctypedef fused real_t:
    float
    double


# Average divisor modes (see Geom.div_mode).
DIV_PER_DIM = 0      # sum / count_d / count_h / count_w (PyTorch adaptive)
DIV_PRODUCT = 1      # sum / (factor_d * factor_h * factor_w) (PyTorch avg_pool)
DIV_CONSTANT = 2     # sum / divisor_override


cdef struct Geom:
    Py_ssize_t N, C                    # batch (planes) and channel lanes
    Py_ssize_t size[3]                 # input extent per dim (D, H, W)
    Py_ssize_t osize[3]                # output extent per dim
    Py_ssize_t step[3]                 # tap step (dilation) per dim
    const int64_t *win[3]              # (3, osize) tables: start, count, factor
    Py_ssize_t max_count_w             # the most taps of any window along W
    Py_ssize_t ow_lo, ow_hi            # output columns a forward item computes
    Py_ssize_t w_lo, w_hi              # input columns a backward item computes (C > 1)
    const double *wdiv                 # per output column: count (div_mode 0) or factor
    Py_ssize_t wk, wpb, wd             # fixed windows of stride 1 along W: kernel,
                                       # pad before, dilation (wk = 0: other windows)
    Py_ssize_t hk, hpb, hs             # fixed windows of dilation 1 along H: kernel,
                                       # pad before, stride (hk = 0: other windows)
    int div_mode
    double div_value
    const float *rdiv                  # float32 channels-first, mode 1: rows of OW
                                       # divisors then OW reciprocals (cp_finish_rdiv_f32)
    const int32_t *rdiv_of             # per output row (od, oh): its rdiv row, or -1
    int rdiv_nz                        # 4 when no divisor in rdiv is 0, else 0 (a
                                       # cp_rows_shared_f32 mode flag)


cdef inline Py_ssize_t _start(const Geom *g, int k, Py_ssize_t o) noexcept nogil:
    return g.win[k][o]

cdef inline Py_ssize_t _count(const Geom *g, int k, Py_ssize_t o) noexcept nogil:
    return g.win[k][g.osize[k] + o]

cdef inline Py_ssize_t _factor(const Geom *g, int k, Py_ssize_t o) noexcept nogil:
    return g.win[k][2 * g.osize[k] + o]


cdef class Geometry:
    """A plan's geometry for the kernels, built once per plan: the Geom
    struct and, for the average backward, the inverse and run tables.
    Holds references to every table it points into."""

    cdef Geom g
    cdef const int64_t *ptr[3]         # inverse tables (CSR) of D, H, W
    cdef const int64_t *outs[3]
    cdef const int64_t *runs[2]        # runs_table of D and H
    cdef Py_ssize_t nruns[2]
    cdef bint overlap_w                # does an input column feed two outputs?
    cdef bint inverse
    cdef const int32_t *wtab           # (wtab_m, W): j-th output reading column w, or OW
    cdef Py_ssize_t wtab_m
    cdef object keep

    def __init__(self, tuple shape, tuple oshape, tuple steps, int div_mode, double div_value,
                 tuple tables, tuple inverse=None, tuple runs=None, tuple unit_stride_w=None,
                 tuple fixed_h=None):
        cdef int k
        cdef const int64_t[:, ::1] t
        cdef const int64_t[::1] v
        cdef Py_ssize_t i
        self.keep = (tables, inverse, runs)
        self.g.N = shape[0]
        self.g.C = shape[4]
        for k in range(3):
            self.g.size[k] = shape[k + 1]
            self.g.osize[k] = oshape[k + 1]
            self.g.step[k] = steps[k]
            t = tables[k]
            self.g.win[k] = &t[0, 0]
        self.g.div_mode = div_mode
        self.g.div_value = div_value
        self.g.ow_lo = 0
        self.g.ow_hi = self.g.osize[2]
        self.g.w_lo = 0
        self.g.w_hi = self.g.size[2]
        self.g.max_count_w = 0
        for i in range(self.g.osize[2]):
            self.g.max_count_w = max(self.g.max_count_w, _count(&self.g, 2, i))
        # the W divisor of each output column, as a double, for cp_finish_row
        t = tables[2]
        wdiv = np.ascontiguousarray(t[1 if div_mode == 0 else 2], dtype=np.float64)
        cdef const double[::1] wv = wdiv
        self.g.wdiv = &wv[0] if wdiv.shape[0] else NULL
        self.keep = self.keep + (wdiv,)
        self._rdiv_rows(tables)
        self.inverse = inverse is not None
        self.overlap_w = False
        self.g.wk = self.g.wpb = self.g.wd = 0
        if unit_stride_w is not None:
            self.g.wk, self.g.wpb, self.g.wd = unit_stride_w
        self.g.hk = self.g.hpb = self.g.hs = 0
        if fixed_h is not None:
            self.g.hk, self.g.hpb, self.g.hs = fixed_h
        if inverse is not None:
            for k in range(3):
                v = inverse[2 * k]
                self.ptr[k] = &v[0]
                v = inverse[2 * k + 1]
                self.outs[k] = &v[0]
            for i in range(self.g.size[2]):
                if self.ptr[2][i + 1] - self.ptr[2][i] > 1:
                    self.overlap_w = True
            for k in range(2):
                v = runs[k]
                self.runs[k] = &v[0]
                self.nruns[k] = v.shape[0] - 1
            self._dense_w(inverse[4], inverse[5])

    def _rdiv_rows(self, tables):
        # Channels-first divisors per output column (div_mode 1): for each
        # distinct factor a = factor_d * factor_h of an output row, the row's
        # float32 divisors a * factor_w and their reciprocals, so that
        # _finish_avg divides by exact reciprocals (cp_finish_rdiv_f32);
        # none when a divisor is too large for that to be exact.
        self.g.rdiv = NULL
        self.g.rdiv_of = NULL
        self.g.rdiv_nz = 0
        OW = self.g.osize[2]
        if self.g.div_mode != 1 or self.g.C != 1 or OW < 16:
            return
        fd, fh, fw = (np.asarray(tables[k][2], dtype=np.int64) for k in range(3))
        a = (fd[:, None] * fh[None, :]).ravel()
        vals, rows = np.unique(a, return_inverse=True)
        if vals.shape[0] > 64:
            return
        d = (vals[:, None] * fw[None, :]).astype(np.float64)
        if not np.all((d == 0) | (np.abs(d) <= 65535)):
            return
        tab = np.empty((vals.shape[0], 2, OW), dtype=np.float32)
        tab[:, 0] = d
        with np.errstate(divide="ignore"):
            tab[:, 1] = np.where(d == 0, np.float32(0), np.float32(1) / tab[:, 0])
        of = np.ascontiguousarray(rows, dtype=np.int32)
        cdef const float[:, :, ::1] tv = tab
        cdef const int32_t[::1] ov = of
        self.keep = self.keep + (tab, of)
        self.g.rdiv = &tv[0, 0, 0]
        self.g.rdiv_of = &ov[0]
        self.g.rdiv_nz = 4 if np.all(d != 0) else 0

    def _dense_w(self, ptr, outs):
        # The inverse table of W as a dense (m, W) int32 table, padded with
        # OW (a zero the gather appends to each output row), so that the
        # channels-first gather is a vector loop: adding +0.0 leaves every
        # partial sum as it was (none is -0.0: each starts from +0.0).
        cdef Py_ssize_t W = self.g.size[2], OW = self.g.osize[2], w, j
        counts = np.diff(ptr)
        m = int(counts.max()) if W else 0
        if OW >= 2**31 - 1 or m * W > 2**26:
            self.wtab_m = 0
            return
        tab = np.full((max(m, 1), max(W, 1)), OW, dtype=np.int32)
        cdef int32_t[:, ::1] tv = tab
        cdef const int64_t[::1] pv = ptr
        cdef const int64_t[::1] ov = outs
        for w in range(W):
            for j in range(pv[w + 1] - pv[w]):
                tv[j, w] = <int32_t> ov[pv[w] + j]
        self.keep = self.keep + (tab,)
        self.wtab = &tv[0, 0]
        self.wtab_m = m


cdef struct Item:
    Py_ssize_t n, a, b, c0, c1       # batch, two outer positions, channel range


cdef inline Item _item(Py_ssize_t it, Py_ssize_t A, Py_ssize_t B, Py_ssize_t nblk,
                       Py_ssize_t cblock, Py_ssize_t C) noexcept nogil:
    """Work item ``it`` of the flattened (n, a < A, b < B, channel block) space."""
    cdef Item r
    cdef Py_ssize_t q = it // nblk
    r.c0 = (it % nblk) * cblock
    r.c1 = min(r.c0 + cblock, C)
    r.b = q % B
    q = q // B
    r.a = q % A
    r.n = q // A
    return r


# --------------------------------------------------------------------------
# Window tables
# --------------------------------------------------------------------------

def adaptive_table(Py_ssize_t size, Py_ssize_t osize):
    """(3, osize) int64 table of adaptive windows: start, count, factor."""
    t = np.empty((3, max(osize, 1)), dtype=np.int64)
    cdef int64_t[:, ::1] tv = t
    cdef Py_ssize_t o
    cdef cp_index s, n, f
    for o in range(osize):
        cp_adaptive_window(o, osize, size, &s, &n, &f)
        tv[0, o] = s
        tv[1, o] = n
        tv[2, o] = f
    return t[:, :osize] if osize else t


def fixed_out_size(Py_ssize_t size, Py_ssize_t k, Py_ssize_t s, Py_ssize_t pb,
                   Py_ssize_t pa, Py_ssize_t d, bint ceil_mode):
    """Output extent of a fixed-window pool along one dimension."""
    return cp_fixed_out_size(size, k, s, pb, pa, d, ceil_mode)


def fixed_table(Py_ssize_t size, Py_ssize_t osize, Py_ssize_t k, Py_ssize_t s,
                Py_ssize_t pb, Py_ssize_t pa, Py_ssize_t d, bint count_include_pad):
    """(3, osize) int64 table of fixed windows: start, count, factor."""
    t = np.empty((3, max(osize, 1)), dtype=np.int64)
    cdef int64_t[:, ::1] tv = t
    cdef Py_ssize_t o
    cdef cp_index st, n, f
    for o in range(osize):
        cp_fixed_window(o, size, k, s, pb, pa, d, count_include_pad, &st, &n, &f)
        tv[0, o] = st
        tv[1, o] = n
        tv[2, o] = f
    return t[:, :osize] if osize else t


def inverse_table(const int64_t[:, ::1] table, Py_ssize_t step, Py_ssize_t size):
    """Which outputs read each input position, as CSR arrays (ptr, outs).

    ``outs[ptr[i]:ptr[i+1]]`` lists, in increasing order, the outputs whose
    window reads input position ``i``.  The backward gathers walk these, so
    each input gradient adds its terms in the order PyTorch's scatter does.
    """
    cdef Py_ssize_t osize = table.shape[1]
    cdef Py_ssize_t o, t, i, total = 0
    ptr = np.zeros(size + 1, dtype=np.int64)
    cdef int64_t[::1] pv = ptr
    for o in range(osize):
        for t in range(table[1, o]):
            pv[table[0, o] + t * step + 1] += 1
            total += 1
    for i in range(size):
        pv[i + 1] += pv[i]
    outs = np.empty(max(total, 1), dtype=np.int64)
    cdef int64_t[::1] ov = outs
    fill = np.array(ptr[:-1], copy=True)
    cdef int64_t[::1] fv = fill
    for o in range(osize):
        for t in range(table[1, o]):
            i = table[0, o] + t * step
            ov[fv[i]] = o
            fv[i] += 1
    return ptr, outs


def runs_table(const int64_t[::1] ptr, const int64_t[::1] outs):
    """Runs of consecutive input positions that read the same outputs.

    From an inverse_table's CSR arrays: an int64 array ``r`` of run starts
    followed by the extent, so run ``k`` is positions ``[r[k], r[k+1])``.
    Input rows in one run receive exactly the same gradient terms in the
    same order, so the average backward computes a run's first row and
    copies it to the others (bit-identical, and no work repeated).
    """
    cdef Py_ssize_t size = ptr.shape[0] - 1, i, t, n = 0
    runs = np.empty(size + 1, dtype=np.int64)
    cdef int64_t[::1] rv = runs
    cdef bint same
    cdef Py_ssize_t prev = 0
    for i in range(size):
        same = i > 0 and ptr[i + 1] - ptr[i] == ptr[i] - ptr[prev]
        t = 0
        while same and t < ptr[i + 1] - ptr[i]:
            same = outs[ptr[i] + t] == outs[ptr[prev] + t]
            t += 1
        prev = i
        if not same:
            rv[n] = i
            n += 1
    rv[n] = size
    return runs[:n + 1].copy()


cdef inline void _zero(real_t *p, Py_ssize_t W, Py_ssize_t C,
                       Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    """Zero lanes [c0, c1) of W rows of C lanes (one loop when that is all)."""
    cdef Py_ssize_t w, c
    if c0 == 0 and c1 == C:
        for w in range(W * C):
            p[w] = 0
    else:
        for w in range(W):
            for c in range(c0, c1):
                p[w * C + c] = 0


# --------------------------------------------------------------------------
# Forward: one item is one output row (n, od, oh) over channels [c0, c1)
# --------------------------------------------------------------------------

# Channels-last windows of up to this many taps are pooled a whole window
# at a time (cp_window_*); larger ones window row by window row.
DEF MAX_WINDOW_TAPS = 256
# inputs of this many bytes and more are taken to be larger than the caches
# (the last level of a core or two): software prefetches pay there only
DEF PREFETCH_BYTES = 16 << 20
DEF AVG22_AHEAD = 1536     # floats (cp_favg22_rows_f32)
DEF STEM_STAGE = 256       # outputs staged at a time (cp_fmax32_rows_f32; 4096: 1.1x the time)


cdef inline value_t _add(value_t a, value_t b) noexcept nogil:
    # a + b; where both are NaN, a's (cp_add_f32): a running sum's NaN
    # wins over the tap's, as in PyTorch's loops, whatever the compiler's
    # choice of operand order for a plain add
    if value_t is float:
        return cp_add_f32(a, b)
    elif value_t is double:
        return cp_add_f64(a, b)
    else:
        return a + b


cdef inline void _pool_window(value_t *y, int64_t *yi, const value_t *x,    # OUT, OUT, IN
                              Py_ssize_t n, const Py_ssize_t *offs, const int64_t *tidx,
                              Py_ssize_t k, bint is_max, value_t init, int64_t first,
                              const int64_t *firsts, int64_t lstep, int mode=-1,
                              double d1=0, double d2=0, double d3=0,
                              bint nt=False) noexcept nogil:
    # n lanes, whole windows of k taps (cp_window_*): a sum (an average when
    # mode >= 0, see CP_AVG_DIVIDE), a max with indices (yi) or a
    # values-only max (yi NULL); float types only.  nt: a max with indices
    # may write whole lines with non-temporal stores (the caller fences)
    if value_t is float:
        if not is_max:
            cp_window_add_f32(y, x, n, offs, k, mode, d1, d2, d3)
        elif yi == NULL:
            cp_window_maxv_f32(y, x, n, offs, k, init)
        else:
            cp_window_max_f32(y, yi, x, n, offs, tidx, k, init, first, firsts, lstep, nt)
    elif value_t is double:
        if not is_max:
            cp_window_add_f64(y, x, n, offs, k, mode, d1, d2, d3)
        elif yi == NULL:
            cp_window_maxv_f64(y, x, n, offs, k, init)
        else:
            cp_window_max_f64(y, yi, x, n, offs, tidx, k, init, first, firsts, lstep, nt)


cdef inline void _sum8(const value_t *xr, value_t *y, const Geom *g,      # IN, IN/OUT
                       Py_ssize_t ow, Py_ssize_t k, Py_ssize_t nw) noexcept nogil:
    # y[j] += the nw taps of output ow + j, for k <= 8 outputs whose windows
    # have nw taps each, as independent chains (each in its own order); the
    # chains past k repeat the last output's and are dropped
    cdef Py_ssize_t sw = g.step[2], t
    cdef Py_ssize_t s0 = _start(g, 2, ow), s1 = _start(g, 2, ow + min(1, k - 1))
    cdef Py_ssize_t s2 = _start(g, 2, ow + min(2, k - 1)), s3 = _start(g, 2, ow + min(3, k - 1))
    cdef Py_ssize_t s4 = _start(g, 2, ow + min(4, k - 1)), s5 = _start(g, 2, ow + min(5, k - 1))
    cdef Py_ssize_t s6 = _start(g, 2, ow + min(6, k - 1)), s7 = _start(g, 2, ow + min(7, k - 1))
    cdef value_t a0 = y[0], a1 = y[min(1, k - 1)], a2 = y[min(2, k - 1)]
    cdef value_t a3 = y[min(3, k - 1)], a4 = y[min(4, k - 1)], a5 = y[min(5, k - 1)]
    cdef value_t a6 = y[min(6, k - 1)], a7 = y[min(7, k - 1)]
    for t in range(nw):
        a0 = _add(a0, xr[s0 + t * sw])
        a1 = _add(a1, xr[s1 + t * sw])
        a2 = _add(a2, xr[s2 + t * sw])
        a3 = _add(a3, xr[s3 + t * sw])
        a4 = _add(a4, xr[s4 + t * sw])
        a5 = _add(a5, xr[s5 + t * sw])
        a6 = _add(a6, xr[s6 + t * sw])
        a7 = _add(a7, xr[s7 + t * sw])
    y[0] = a0
    if k > 1: y[1] = a1
    if k > 2: y[2] = a2
    if k > 3: y[3] = a3
    if k > 4: y[4] = a4
    if k > 5: y[5] = a5
    if k > 6: y[6] = a6
    if k > 7: y[7] = a7


cdef void _avg_cl_row_f32(const float *xr, float *yr, const Geom *g,    # IN, OUT
                          Py_ssize_t od, Py_ssize_t oh, Py_ssize_t n,
                          bint stream) noexcept nogil:
    # _forward_item's channels-last float32 averages of fixed windows (one
    # divisor per output, div_mode 1) of output row (od, oh), n lanes from
    # xr and yr (at the item's first channel): the taps of each window as
    # offsets from its first column, computed again only where the window's
    # column count changes; divisors cp_rdiv_ok takes divide by exact
    # reciprocals (cp_window_avg_by_f32), others as cp_window_add_f32 does.
    cdef Py_ssize_t C = g.C, H = g.size[1], W = g.size[2]
    cdef Py_ssize_t d0 = _start(g, 0, od), nd = _count(g, 0, od), sd = g.step[0]
    cdef Py_ssize_t h0 = _start(g, 1, oh), nh = _count(g, 1, oh), sh = g.step[1]
    cdef Py_ssize_t sw = g.step[2], ow = g.ow_lo, a, b, t, k = 0, nw, last = -1, p
    cdef double da
    cdef bint four
    cdef Py_ssize_t offs[MAX_WINDOW_TAPS]
    cdef Py_ssize_t rows[MAX_WINDOW_TAPS]
    # the input row below the windows, prefetched as the outputs above it
    # are computed, where it is the next output row's new row (windows of
    # stride 1 along H: k=3 s=1 channels-last 2.9x faster on Zen 5).  Not
    # for other strides: it is read a whole output row later and only
    # evicts what is needed now (k=2 s=2 of 1 KiB pixels 1.3x slower).
    # Into the L1 cache on AMD's cores only: on Intel's Emerald Rapids the
    # L1 prefetches held up the loop (a fifth of its cycles), and into the
    # L2 the k=3 s=1 NHWC forward took 0.87-0.99x the time at 1 thread,
    # 0.91-0.94x at 2 (no prefetch: 0.89-0.99x, 0.93x)
    cdef const float *below = NULL
    if nd > 0 and nh > 0 and h0 + (nh - 1) * sh + 1 < H and oh + 1 < g.osize[1] \
            and _start(g, 1, oh + 1) == h0 + 1:
        below = xr + (((d0 + (nd - 1) * sd) * H + h0 + (nh - 1) * sh + 1) * W) * C
    for a in range(nd):
        for b in range(nh):
            rows[a * nh + b] = (((d0 + a * sd) * H + h0 + b * sh) * W) * C
    while ow < g.ow_hi:
        if below != NULL:
            if below_to_l1:
                cp_prefetch(below + _start(g, 2, ow) * C, 4 * C * sizeof(float))
            else:
                cp_prefetch_l2(below + _start(g, 2, ow) * C, 4 * C * sizeof(float))
        nw = _count(g, 2, ow)
        if nw != last:
            k = 0
            for a in range(nd * nh):
                for t in range(nw):
                    offs[k] = rows[a] + t * sw * C
                    k = k + 1
            last = nw
        da = <double> (_factor(g, 0, od) * _factor(g, 1, oh) * _factor(g, 2, ow))
        # four outputs whose windows are one window moved a column at a
        # time, by one divisor
        four = sw == 1 and ow + 4 <= g.ow_hi and nd * nh > 0 and cp_rdiv_ok(da)
        p = 1
        while four and p < 4:
            four = (_count(g, 2, ow + p) == nw and _start(g, 2, ow + p) == _start(g, 2, ow) + p
                    and _factor(g, 2, ow + p) == _factor(g, 2, ow))
            p = p + 1
        if four and cp_window_avg_by4_f32(yr + ow * C, xr + _start(g, 2, ow) * C, n, C, rows,
                                          nd * nh, nw, <float> da, <float> 1 / <float> da,
                                          stream):
            ow += 4
            continue
        if cp_rdiv_ok(da):
            # with no row to prefetch, the run of outputs whose windows are
            # this one moved the same columns at a time, by this divisor, in
            # one call
            p = 1
            if below == NULL and ow + 1 < g.ow_hi:
                a = _start(g, 2, ow + 1) - _start(g, 2, ow)
                while (ow + p < g.ow_hi and _count(g, 2, ow + p) == nw
                       and _start(g, 2, ow + p) == _start(g, 2, ow) + p * a
                       and _factor(g, 2, ow + p) == _factor(g, 2, ow)):
                    p = p + 1
            else:
                a = 0
            cp_window_avg_by_f32(yr + ow * C, xr + _start(g, 2, ow) * C, n, offs, k,
                                 <float> da, <float> 1 / <float> da, stream, p, a * C, C)
            ow += p
            continue
        else:
            cp_window_add_f32(yr + ow * C, xr + _start(g, 2, ow) * C, n, offs, k, 1, da, 0, 0)
        ow += 1


cdef void _forward_item(const value_t *x, value_t *y, int64_t *yi,      # IN, OUT, OUT
                        const Geom *g, Py_ssize_t n, Py_ssize_t od, Py_ssize_t oh,
                        Py_ssize_t c0, Py_ssize_t c1, bint is_max,
                        value_t init, bint stream=False) noexcept nogil:
    cdef Py_ssize_t C = g.C, H = g.size[1], W = g.size[2]
    cdef Py_ssize_t OW = g.osize[2], sw = g.step[2]
    cdef Py_ssize_t d0 = _start(g, 0, od), nd = _count(g, 0, od), sd = g.step[0]
    cdef Py_ssize_t h0 = _start(g, 1, oh), nh = _count(g, 1, oh), sh = g.step[1]
    cdef Py_ssize_t row = ((n * g.osize[0] + od) * g.osize[1] + oh) * OW * C
    cdef value_t *yr = y + row
    cdef int64_t *ir = NULL if yi == NULL else yi + row     # NULL: values only
    cdef const value_t *xr
    cdef const value_t *xp
    cdef Py_ssize_t ow, c, a, b, t, d, h, w, w0, nw, j, plane_row
    cdef value_t acc, v
    cdef int64_t best
    cdef bint take
    cdef Py_ssize_t k, ow1
    cdef int mode
    cdef double da, db, dc
    cdef Py_ssize_t offs[MAX_WINDOW_TAPS]
    cdef int64_t tidx[MAX_WINDOW_TAPS]
    cdef int32_t rel[MAX_WINDOW_TAPS]
    cdef Py_ssize_t pre[32]
    cdef Py_ssize_t npre
    cdef bint ahead

    if (value_t is float or value_t is double) and C > 1 \
            and nd * nh * g.max_count_w <= MAX_WINDOW_TAPS:
        # lanes: a whole window per output, accumulated in registers
        xr = x + n * g.size[0] * H * W * C + c0
        ahead = g.N * g.size[0] * H * W * C * <Py_ssize_t> sizeof(value_t) >= PREFETCH_BYTES
        if value_t is float:
            if not is_max and g.div_mode == 1:
                # (stream: whole aligned lines of 1 KiB blocks of lanes written
                # with non-temporal stores)
                _avg_cl_row_f32(xr, yr + c0, g, od, oh, c1 - c0, stream)
                if stream:
                    cp_stream_fence()
                return
        ow = g.ow_lo
        while ow < g.ow_hi:
            w0 = _start(g, 2, ow)
            nw = _count(g, 2, ow)
            k = 0
            for a in range(nd):
                d = d0 + a * sd
                for b in range(nh):
                    h = h0 + b * sh
                    plane_row = (d * H + h) * W
                    for t in range(nw):
                        offs[k] = (plane_row + w0 + t * sw) * C
                        tidx[k] = plane_row + w0 + t * sw
                        k = k + 1
            j = ow * C + c0
            npre = 0
            w = _start(g, 2, ow + 1) - w0 if ow + 1 < g.ow_hi else 0
            if ahead and ow + 1 < g.ow_hi and k <= 32:
                # the taps of the window 3 outputs on that the window before
                # it does not read: with the input larger than the caches,
                # channels-last max (C = 32 to 64) 1.7-2x faster on Zen 5
                b = 0                           # (t's column in its window, t % nw,
                for t in range(k):              # without a division: 0.95x the time)
                    if w + b * sw > (nw - 1) * sw:
                        pre[npre] = offs[t] + 3 * w * C
                        npre = npre + 1
                    b = b + 1
                    if b == nw:
                        b = 0
            if value_t is float:
                if (is_max and k > 0 and (c1 - c0) % 16 == 0
                        and tidx[k - 1] - tidx[0] <= 2147483647):
                    # the run of outputs whose windows are this one's taps
                    # shifted by w columns each (cp_clmax_run_f32)
                    ow1 = ow + 1
                    while (ow1 < g.ow_hi and _count(g, 2, ow1) == nw
                           and _start(g, 2, ow1) == w0 + (ow1 - ow) * w):
                        ow1 = ow1 + 1
                    for t in range(k):
                        rel[t] = <int32_t> (tidx[t] - tidx[0])
                    if cp_clmax_run_f32(yr + j, NULL if ir == NULL else ir + j, xr, ow1 - ow,
                                        (c1 - c0) // 16, C, offs, rel, k, w * C, tidx[0], w,
                                        init, pre, npre, (c1 - c0) * sizeof(float),
                                        stream and ir != NULL):
                        ow = ow1
                        continue
            for t in range(npre):
                cp_prefetch(xr + pre[t], (c1 - c0) * sizeof(value_t))
            # averages divided in registers, as _finish_avg divides
            if g.div_mode == 0:
                mode, da, db, dc = 0, _count(g, 0, od), _count(g, 1, oh), _count(g, 2, ow)
            elif g.div_mode == 1:
                mode, da, db, dc = 1, <double> (_factor(g, 0, od) * _factor(g, 1, oh)
                                                * _factor(g, 2, ow)), 0, 0
            else:
                mode, da, db, dc = 2, g.div_value, 0, 0
            _pool_window(yr + j, NULL if ir == NULL else ir + j, xr, c1 - c0, offs, tidx, k,
                         is_max, init, tidx[0] if k > 0 else -1, NULL, 0,
                         -1 if is_max else mode, da, db, dc, stream)
            ow = ow + 1
        if stream and is_max and ir != NULL:
            cp_stream_fence()           # (the row's non-temporal stores)
        return

    for ow in range(g.ow_lo, g.ow_hi):
        j = ow * C
        if is_max:
            # the first tap read, or -1 for a window with no input in it
            # (a dilated window lying wholly in the padding)
            if nd == 0 or nh == 0 or _count(g, 2, ow) == 0:
                best = -1
            else:
                best = (d0 * H + h0) * W + _start(g, 2, ow)
            for c in range(c0, c1):
                yr[j + c] = init
                if ir != NULL:
                    ir[j + c] = best
        elif C == 1:
            yr[ow] = 0
        else:
            for c in range(c0, c1):
                yr[j + c] = 0

    for a in range(nd):
        d = d0 + a * sd
        for b in range(nh):
            h = h0 + b * sh
            plane_row = (d * H + h) * W
            xr = x + ((n * g.size[0] + d) * H + h) * W * C
            ow1 = g.ow_lo
            if C == 1 and not is_max:
                # channels-first sums: up to eight outputs' chains side by
                # side while their windows have as many taps (each chain in
                # its own order, so the same sums)
                while ow1 < g.ow_hi:
                    nw = _count(g, 2, ow1)
                    k = 1
                    while k < 8 and ow1 + k < g.ow_hi and _count(g, 2, ow1 + k) == nw:
                        k = k + 1
                    if k < 2:
                        break
                    _sum8(xr, yr + ow1, g, ow1, k, nw)
                    ow1 = ow1 + k
            for ow in range(ow1, g.ow_hi):
                w0 = _start(g, 2, ow)
                nw = _count(g, 2, ow)
                j = ow * C
                if C == 1:
                    # channels-first: one lane, keep the running value in a register
                    acc = yr[ow]
                    if is_max and ir == NULL:
                        for t in range(nw):
                            v = xr[w0 + t * sw]
                            take = (v > acc) | (v != v)
                            acc = v if take else acc
                    elif is_max:
                        # branch-free (conditional moves): random data makes
                        # "is this tap the new max" unpredictable
                        best = ir[ow]
                        for t in range(nw):
                            w = w0 + t * sw
                            v = xr[w]
                            take = (v > acc) | (v != v)
                            acc = v if take else acc
                            best = (plane_row + w) if take else best
                        ir[ow] = best
                    else:
                        for t in range(nw):
                            acc = _add(acc, xr[w0 + t * sw])
                    yr[ow] = acc
                elif value_t is float or value_t is double:
                    # channels-last: C independent lanes, contiguous; one call
                    # runs the window row's taps in order
                    xp = xr + w0 * C + c0
                    if is_max and ir == NULL:
                        if value_t is float:
                            cp_lanes_maxv_f32(yr + j + c0, xp, c1 - c0, nw, sw * C)
                        else:
                            cp_lanes_maxv_f64(yr + j + c0, xp, c1 - c0, nw, sw * C)
                    elif is_max:
                        if value_t is float:
                            cp_lanes_max_f32(yr + j + c0, ir + j + c0, xp, c1 - c0, nw,
                                             sw * C, plane_row + w0, sw)
                        else:
                            cp_lanes_max_f64(yr + j + c0, ir + j + c0, xp, c1 - c0, nw,
                                             sw * C, plane_row + w0, sw)
                    elif value_t is float:
                        cp_lanes_add_f32(yr + j + c0, xp, c1 - c0, nw, sw * C)
                    else:
                        cp_lanes_add_f64(yr + j + c0, xp, c1 - c0, nw, sw * C)
                else:
                    for t in range(nw):
                        w = w0 + t * sw
                        xp = xr + w * C
                        if is_max:
                            best = plane_row + w
                            for c in range(c0, c1):
                                v = xp[c]
                                acc = yr[j + c]
                                take = (v > acc) | (v != v)
                                yr[j + c] = v if take else acc
                                if ir != NULL:
                                    ir[j + c] = best if take else ir[j + c]
                        else:
                            for c in range(c0, c1):
                                yr[j + c] = _add(yr[j + c], xp[c])

    if not is_max:
        _finish_avg(yr, g, od, oh, c0, c1)


cdef void _finish_avg(value_t *yr, const Geom *g, Py_ssize_t od, Py_ssize_t oh,   # IN/OUT
                      Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    # Output row (od, oh) of window sums -> averages, as PyTorch divides:
    # by each extent in turn (adaptive) or once by the divisor (fixed).
    cdef Py_ssize_t C = g.C, ow, c, j
    cdef value_t acc
    cdef double div, acc_b
    cdef const float *rd
    if value_t is float:
        if g.rdiv != NULL and c0 == 0 and g.ow_lo == 0 and g.ow_hi == g.osize[2]:
            # per-column divisors by exact reciprocals (see Geometry._rdiv_rows)
            rd = g.rdiv + 2 * g.osize[2] * g.rdiv_of[od * g.osize[1] + oh]
            cp_finish_rdiv_f32(yr, g.osize[2], rd, rd + g.osize[2])
            return
    if (value_t is float or value_t is double) and g.wdiv != NULL:
        # vectorised, the same divisions: channels-first along the row,
        # channels-last across each output's lanes (by its own divisors:
        # cp_finish_row with a stride of 0)
        if g.div_mode == 0:
            div = <double> _count(g, 0, od)
            acc_b = <double> _count(g, 1, oh)
        else:
            div = <double> (_factor(g, 0, od) * _factor(g, 1, oh))
            acc_b = 0
        if C == 1:
            if value_t is float:
                cp_finish_row_f32(yr, g.osize[2], g.div_mode, div, acc_b, g.wdiv, 1,
                                  g.div_value)
            else:
                cp_finish_row_f64(yr, g.osize[2], g.div_mode, div, acc_b, g.wdiv, 1,
                                  g.div_value)
            return
        for ow in range(g.ow_lo, g.ow_hi):
            if value_t is float:
                cp_finish_row_f32(yr + ow * C + c0, c1 - c0, g.div_mode, div, acc_b,
                                  g.wdiv + ow, 0, g.div_value)
            else:
                cp_finish_row_f64(yr + ow * C + c0, c1 - c0, g.div_mode, div, acc_b,
                                  g.wdiv + ow, 0, g.div_value)
        return
    for ow in range(g.ow_lo, g.ow_hi):
        j = ow * C
        if g.div_mode == 0:
            for c in range(c0, c1):
                acc = yr[j + c] / <value_t> _count(g, 0, od)
                acc = acc / <value_t> _count(g, 1, oh)
                yr[j + c] = acc / <value_t> _count(g, 2, ow)
        else:
            if g.div_mode == 1:
                div = <double> (_factor(g, 0, od) * _factor(g, 1, oh) * _factor(g, 2, ow))
            else:
                div = g.div_value
            if div == 0:        # window wholly in padding, padding not counted
                for c in range(c0, c1):
                    yr[j + c] = 0
            else:
                # 0 + q, as PyTorch adds the quotient to a zeroed output:
                # a zero sum over a negative divisor gives +0.0, not -0.0
                for c in range(c0, c1):
                    yr[j + c] = 0 + yr[j + c] / <value_t> div


cdef void _sum_planes_chunk(const value_t *x, value_t *y, const Geom *g,   # IN, OUT
                           Py_ssize_t S, Py_ssize_t it, Py_ssize_t chunk) noexcept nogil:
    # planes [chunk it, chunk (it + 1)) of a whole-plane average: cp_sum of
    # each, then the divisions across the chunk
    cdef Py_ssize_t p0 = it * chunk, m = min(chunk, g.N - it * chunk)
    if value_t is float:
        cp_sum_planes_f32(x + p0 * S, S, m, y + p0)
        cp_finish_row_f32(y + p0, m, g.div_mode, _whole_a(g), _count(g, 1, 0),
                          g.wdiv, 0, g.div_value)
    elif value_t is double:
        cp_sum_planes_f64(x + p0 * S, S, m, y + p0)
        cp_finish_row_f64(y + p0, m, g.div_mode, _whole_a(g), _count(g, 1, 0),
                          g.wdiv, 0, g.div_value)


cdef inline double _whole_a(const Geom *g) noexcept nogil:
    """cp_finish_row's first divisor for the single window of a plane."""
    if g.div_mode == 0:
        return <double> _count(g, 0, 0)
    return <double> (_factor(g, 0, 0) * _factor(g, 1, 0))


cdef bint _whole_plane(const Geom *g) noexcept nogil:
    """True when the only window is the whole (contiguous) plane."""
    cdef int k
    for k in range(3):
        if g.osize[k] != 1 or g.step[k] != 1 or _start(g, k, 0) != 0 \
                or _count(g, k, 0) != g.size[k]:
            return False
    return True


# Channels-first planes are pooled up to MAX_LANES at a time as lanes of a
# transposed block (see _plane_lanes_item) when at least MIN_LANES planes fit
# in a LANE_BLOCK_BYTES scratch block (per thread; 4 MiB takes 8 planes of
# 224 x 224 or of 32 x 64 x 64).
DEF MAX_LANES = 32
DEF MIN_LANES = 8
DEF LANE_BLOCK_BYTES = 4194304
DEF L2_BLOCK_BYTES = 524288
# Wide windows too are pooled as plane lanes (whole windows in registers,
# cp_window_*) when MIN_LANES planes fit in this much cache.
DEF WIDE_LANES_BYTES = 1048576
# The average backward builds channels-first planes up to this size in a
# per-thread buffer before streaming them out.
DEF PLANE_BUFFER_BYTES = 1048576


cdef void _plane_lanes_item(const value_t *x, value_t *y, int64_t *yi,   # IN, OUT, OUT
                            const Geom *g, Py_ssize_t p0, Py_ssize_t nl,
                            value_t *bx, value_t *by, int64_t *bi,        # scratch
                            bint is_max, value_t init) noexcept nogil:
    # Planes [p0, p0 + nl) of a channels-first array: each one alone is a
    # chain of dependent adds (or compares) per output, too short for the row
    # sweep to overlap.  Transposed into nl lanes they become a channels-last
    # block that the vectorised lane loops pool side by side; each lane still
    # sees its taps in the same order, so the results are bit-identical.
    cdef Geom lg = g[0]
    cdef Py_ssize_t S = g.size[0] * g.size[1] * g.size[2]
    cdef Py_ssize_t OS = g.osize[0] * g.osize[1] * g.osize[2]
    cdef Py_ssize_t od, oh
    lg.N = 1
    lg.C = nl
    _transpose(x + p0 * S, S, bx, nl, nl, S)
    for od in range(g.osize[0]):
        for oh in range(g.osize[1]):
            _forward_item(bx, by, NULL if yi == NULL else bi, &lg, 0, od, oh, 0, nl,
                          is_max, init)
    _transpose(by, nl, y + p0 * OS, OS, OS, nl)
    if is_max and yi != NULL:
        cp_transpose_64(bi, nl, yi + p0 * OS, OS, OS, nl)


cdef inline void _transpose(const value_t *src, Py_ssize_t ss, value_t *dst, Py_ssize_t ds,
                            Py_ssize_t rows, Py_ssize_t cols) noexcept nogil:
    """dst[c*ds + r] = src[r*ss + c] (vector tiles for 4- and 8-byte types)."""
    cdef Py_ssize_t r, c
    if sizeof(value_t) == 4:
        cp_transpose_32(src, ss, dst, ds, rows, cols)
    elif sizeof(value_t) == 8:
        cp_transpose_64(src, ss, dst, ds, rows, cols)
    else:
        for r in range(rows):
            for c in range(cols):
                dst[c * ds + r] = src[r * ss + c]


cdef inline Py_ssize_t _max_rows(const Geom *g) noexcept nogil:
    """The most input rows (D x H) any output row's windows read."""
    cdef Py_ssize_t o, md = 0, mh = 0
    for o in range(g.osize[0]):
        md = max(md, _count(g, 0, o))
    for o in range(g.osize[1]):
        mh = max(mh, _count(g, 1, o))
    return md * mh


# Channels-first float planes are pooled as row lanes (_row_lanes_item) when
# there are enough of them for a full set of lanes and the transposed rows of
# a window span fit ROW_LANES_BYTES per thread.
DEF ROW_LANES_BYTES = 1048576
# Planes this small (times 64 bytes of lanes) are transposed whole, and
# output rows are gathered up to this size before they are transposed back.
DEF WHOLE_PLANES_BYTES = 65536
DEF ROW_OUT_BYTES = 16384
# Sums keep every row of a window transposed when they fit this much.
DEF WINDOW_ROWS_BYTES = 32768


cdef Py_ssize_t _row_ring(const Geom *g) noexcept nogil:
    """Rows of transposed input _row_lanes_item keeps when it goes a row at a
    time: 1, or where consecutive output rows' windows share input rows, the
    most rows such a shared run spans.  The rows an output row shares with
    the one before are the last that one read, each in a slot of its own, so
    they are still there when it starts; a ring the whole window deep (as
    before) kept rows no window would read again, and its slots, out of the
    L1 cache, cost the (32, 64, 113, 97) -> (7, 5) forward 5-8% (Emerald
    Rapids).  A ring too small only transposes a row again: each slot's tag
    says which row it holds."""
    cdef Py_ssize_t o, last, R = 1
    for o in range(1, g.osize[1]):
        if _count(g, 1, o - 1) > 0 and _count(g, 1, o) > 0:
            last = _start(g, 1, o - 1) + (_count(g, 1, o - 1) - 1) * g.step[1]
            R = max(R, last - _start(g, 1, o) + 1)
    return R


cdef inline void _ring_start(const value_t *src, Py_ssize_t S, value_t *t,   # IN, OUT
                             Py_ssize_t G, Py_ssize_t nl, int64_t *tags, Py_ssize_t R,
                             bint whole) noexcept nogil:
    # A row-lanes ring of R transposed rows, empty (tag -1); whole: all R
    # rows of the nl planes (of S elements each) transposed at once, row r
    # in slot r.
    cdef Py_ssize_t slot
    for slot in range(R):
        tags[slot] = -1
    if whole:
        _transpose(src, S, t, G, nl, S)
        for slot in range(R):
            tags[slot] = slot


cdef Py_ssize_t _span(const Geom *g, int k) noexcept nogil:
    """The most input positions along dimension k that one window spans."""
    cdef Py_ssize_t o, span = 1
    for o in range(g.osize[k]):
        if _count(g, k, o) > 0:
            span = max(span, (_count(g, k, o) - 1) * g.step[k] + 1)
    return span


cdef void _row_lanes_item(const value_t *x, value_t *y, int64_t *yi,     # IN, OUT, OUT
                          const Geom *g, Py_ssize_t p0, Py_ssize_t nl,
                          Py_ssize_t r_lo, Py_ssize_t r_hi,
                          value_t *t, int64_t *tags, Py_ssize_t SD, Py_ssize_t SH,
                          value_t **rows,                               # scratch
                          value_t *accb, int64_t *mib, Py_ssize_t FR,
                          bint is_max, value_t init) noexcept nogil:
    # Channels-first planes [p0, p0 + nl), output rows [r_lo, r_hi) of the
    # flattened (od, oh): each input row (d, h) of the planes is transposed
    # once into G lanes, kept in slot (d % SD) * SH + h % SH of a ring while
    # later output rows still read it (SD = D, SH = H: the whole planes,
    # transposed at once), then every output column's taps in that row are
    # vector steps over whole lanes (cp_rowlanes_*).  With rows (sums whose
    # window rows all have slots of their own) a whole window is summed in
    # registers (cp_rowlanes_sumw).  Each lane sees its plane's taps in the row-major
    # order, so sums, maxima and indices are the plane-by-plane ones, bit for
    # bit.  Up to FR output rows are gathered in accb (their indices in mib,
    # of 2 * FR * OW * G) before they are transposed back into the planes.
    # yi NULL: values only.
    cdef Py_ssize_t G = 64 // sizeof(value_t)
    cdef Py_ssize_t H = g.size[1], W = g.size[2], OH = g.osize[1], OW = g.osize[2]
    cdef Py_ssize_t S = g.size[0] * H * W, OS = g.osize[0] * OH * OW
    cdef const value_t *xs = x + p0 * S
    cdef const int64_t *ws = g.win[2]
    cdef Py_ssize_t orow, od, oh, d0, nd, h0, nh, a, b, r, slot, i, f0 = r_lo, nb, d, h
    cdef Py_ssize_t R = SD * SH
    cdef value_t *tr
    cdef value_t *acc
    cdef int32_t *mi32
    cdef int64_t *mi
    cdef int64_t *wide
    cdef int32_t *tmp
    cdef Py_ssize_t o
    cdef double div, acc_b
    cdef int first
    _ring_start(xs, S, t, G, nl, tags, R, SD == g.size[0] and SH == H)
    for orow in range(r_lo, r_hi):
        od = orow // OH
        oh = orow % OH
        d0, nd = _start(g, 0, od), _count(g, 0, od)
        h0, nh = _start(g, 1, oh), _count(g, 1, oh)
        acc = accb + (orow - f0) * OW * G
        mi = mib + (orow - f0) * OW * G
        mi32 = (<int32_t *> mib) + (orow - f0) * OW * G
        if nd == 0 or nh == 0:          # no input rows: the empty window's value
            for i in range(OW * G):
                acc[i] = init if is_max else 0
                if sizeof(value_t) == 4:
                    mi32[i] = -1
                else:
                    mi[i] = -1
        for a in range(nd):
            for b in range(nh):
                d = d0 + a * g.step[0]
                h = h0 + b * g.step[1]
                r = d * H + h
                slot = (d % SD) * SH + h % SH
                tr = t + slot * W * G
                if tags[slot] != r:
                    _transpose(xs + r * W, S, tr, G, nl, W)
                    tags[slot] = r
                if rows != NULL:
                    rows[a * nh + b] = tr
                    continue
                first = a == 0 and b == 0
                if value_t is float:
                    if is_max:
                        cp_rowlanes_max_f32(acc, NULL if yi == NULL else mi32, tr, OW, ws,
                                            ws + OW, g.step[2], r * W, first, init)
                    else:
                        cp_rowlanes_sumw_f32(acc, &tr, 1, OW, ws, ws + OW, g.step[2], first)
                elif value_t is double:
                    if is_max:
                        cp_rowlanes_max_f64(acc, NULL if yi == NULL else mi, tr, OW, ws,
                                            ws + OW, g.step[2], r * W, first, init)
                    else:
                        cp_rowlanes_sumw_f64(acc, &tr, 1, OW, ws, ws + OW, g.step[2], first)
        if rows != NULL and nd > 0 and nh > 0:
            if value_t is float:
                cp_rowlanes_sumw_f32(acc, rows, nd * nh, OW, ws, ws + OW, g.step[2], 1)
            elif value_t is double:
                cp_rowlanes_sumw_f64(acc, rows, nd * nh, OW, ws, ws + OW, g.step[2], 1)
        if not is_max:
            # the divisions _finish_avg makes
            if g.div_mode == 0:
                div, acc_b = <double> nd, <double> nh
            else:
                div, acc_b = <double> (_factor(g, 0, od) * _factor(g, 1, oh)), 0
            if value_t is float:
                cp_rowlanes_finish_f32(acc, OW, g.div_mode, div, acc_b, g.wdiv, g.div_value)
            elif value_t is double:
                cp_rowlanes_finish_f64(acc, OW, g.div_mode, div, acc_b, g.wdiv, g.div_value)
        if orow + 1 - f0 < FR and orow + 1 < r_hi:
            continue
        # the gathered rows back into the planes
        nb = (orow + 1 - f0) * OW
        _transpose(accb, G, y + p0 * OS + f0 * OW, OS, nb, nl)
        if is_max and yi != NULL:
            if sizeof(value_t) == 8:
                cp_transpose_64(mib, G, yi + p0 * OS + f0 * OW, OS, nb, nl)
            else:
                # int32 lanes transposed as such (into the room mib has left),
                # then each plane's run widened as it is stored
                tmp = (<int32_t *> mib) + nb * G
                cp_transpose_32(mib, G, tmp, nb, nb, nl)
                for i in range(nl):
                    wide = yi + (p0 + i) * OS + f0 * OW
                    mi32 = tmp + i * nb
                    for o in range(nb):
                        wide[o] = mi32[o]
        f0 = orow + 1


# Channels-first sums go as column lanes (_col_lanes_item) where every
# output row fits one vector of lanes, windows are this many columns wide or
# more (narrower ones leave most of each transposed tile unused) and barely
# overlap along W (overlapping ones would be read once per window), planes
# are COL_LANES_PLANE_BYTES or more (each lane's rows a stream long enough to
# prefetch), and the input is at least col_lanes_bytes_*: the data then comes
# from memory, where reading 2-6 planes at a time beats the row lanes' 16
# on AMD's cores (Zen 5: the adaptive (1, 256, 224, 224) -> 7 x 7 forward
# 1.9x faster at 2 threads); from the caches the row lanes' transposes are
# the cheaper ones.  On Intel's cores (cp_collanes_preferred) float32 keeps
# the row lanes at every size: its column lanes measured up to 1.4x slower
# there (Emerald Rapids), where float64's measured 1.1x faster.
DEF COL_LANES_MIN_COLUMNS = 12
DEF COL_LANES_PLANE_BYTES = 32768
cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
# the least input (bytes) pooled as column lanes: float32, float64
cdef Py_ssize_t col_lanes_bytes_f32 = 16777216 if cp_collanes_preferred() else PY_SSIZE_T_MAX
cdef Py_ssize_t col_lanes_bytes_f64 = 16777216
# _avg_cl_row_f32's next input row: prefetched into the L1 cache (AMD's
# cores) or the L2 (Intel's)
cdef bint below_to_l1 = cp_collanes_preferred()


def amd_cores():
    """Whether this CPU is AMD's (and the build has the AVX-512 kernels):
    some choices measured one way there and the other way on Intel's."""
    return bool(cp_collanes_preferred())


def col_lanes_threshold(nbytes):
    """Set the least input size (bytes) pooled as column lanes: one for both
    float32 and float64, or a (float32, float64) pair (tests set 0 to run
    them on small arrays); returns the previous pair."""
    global col_lanes_bytes_f32, col_lanes_bytes_f64
    old = (col_lanes_bytes_f32, col_lanes_bytes_f64)
    f32, f64 = nbytes if isinstance(nbytes, tuple) else (nbytes, nbytes)
    col_lanes_bytes_f32, col_lanes_bytes_f64 = f32, f64
    return old


cdef bint _col_lanes_ok(const Geom *g, Py_ssize_t esize) noexcept nogil:
    """True when channels-first window sums go as column lanes."""
    cdef Py_ssize_t S = g.size[0] * g.size[1] * g.size[2], o, taps = 0
    if not (g.C == 1 and cp_collanes_ok() and g.step[2] == 1
            and 0 < g.osize[2] <= 64 // esize and g.max_count_w >= COL_LANES_MIN_COLUMNS
            and S * esize >= COL_LANES_PLANE_BYTES
            and g.N * S * esize >= (col_lanes_bytes_f64 if esize == 8 else col_lanes_bytes_f32)):
        return False
    for o in range(g.osize[2]):
        taps += _count(g, 2, o)
    return taps <= g.size[2] + g.osize[2]


cdef void _col_lanes_item(const value_t *x, value_t *y, const Geom *g,   # IN, OUT
                          Py_ssize_t p0, Py_ssize_t nplanes, Py_ssize_t r_lo, Py_ssize_t r_hi,
                          Py_ssize_t *roff) noexcept nogil:
    # Channels-first planes [p0, p0 + nplanes), output rows [r_lo, r_hi) of the
    # flattened (od, oh): each output row's window sums with lanes of
    # (plane, output column) (cp_collanes_*, which reads the window's input
    # rows roff in the row-major order), then divided as _finish_avg divides.
    # roff: scratch for _max_rows(g) row offsets.
    cdef Py_ssize_t H = g.size[1], W = g.size[2], OH = g.osize[1], OW = g.osize[2]
    cdef Py_ssize_t S = g.size[0] * H * W, OS = g.osize[0] * OH * OW
    cdef Py_ssize_t orow, od, oh, d0, nd, h0, nh, a, b, nr, p
    cdef value_t *yr
    for orow in range(r_lo, r_hi):
        od = orow // OH
        oh = orow % OH
        d0, nd = _start(g, 0, od), _count(g, 0, od)
        h0, nh = _start(g, 1, oh), _count(g, 1, oh)
        nr = 0
        for a in range(nd):
            for b in range(nh):
                roff[nr] = ((d0 + a * g.step[0]) * H + h0 + b * g.step[1]) * W
                nr += 1
        yr = y + p0 * OS + orow * OW
        if value_t is float:
            cp_collanes_f32(yr, OS, x + p0 * S, x + g.N * S, S, nplanes, roff, nr, g.win[2],
                            g.win[2] + OW, OW)
        elif value_t is double:
            cp_collanes_f64(yr, OS, x + p0 * S, x + g.N * S, S, nplanes, roff, nr, g.win[2],
                            g.win[2] + OW, OW)
        for p in range(nplanes):
            _finish_avg(yr + p * OS, g, od, oh, 0, 1)


cdef int _col_lanes_forward(const value_t *x, value_t *y, const Geom *g,   # IN, OUT
                            int nthreads) noexcept nogil:
    # _col_lanes_item over items of planes by chunks of output rows, enough
    # of them for every thread; returns 1 when out of memory
    # planes an item: one vector's, or two vectors' (two chains of additions
    # in flight) where one has at most 3 planes (more streams than 6 read
    # slower)
    cdef Py_ssize_t P = (64 // sizeof(value_t)) // g.osize[2]
    if P <= 3:
        P = 2 * P
    cdef Py_ssize_t groups = (g.N + P - 1) // P, rows_o = g.osize[0] * g.osize[1]
    cdef Py_ssize_t nchunk = min(rows_o, max(1, (4 * nthreads + groups - 1) // groups))
    cdef Py_ssize_t it, p0
    cdef Py_ssize_t *roff
    cdef int failed = 0
    with parallel(num_threads=nthreads):
        roff = <Py_ssize_t *> malloc(max(1, _max_rows(g)) * sizeof(Py_ssize_t))
        for it in prange(groups * nchunk, schedule="static"):
            if roff == NULL:
                failed |= 1
            else:
                p0 = (it // nchunk) * P
                _col_lanes_item(x, y, g, p0, min(P, g.N - p0),
                                (it % nchunk) * rows_o // nchunk,
                                (it % nchunk + 1) * rows_o // nchunk, roff)
        free(roff)
    return failed


DEF INT_AHEAD_BYTES = 8192      # _int_max_row's prefetch distance
DEF INT_PAIR_ROWS = 64          # ... and the most rows of its byte pairs


cdef void _int_max_row(const value_t *x, value_t *y, const Geom *g,      # IN, OUT
                       Py_ssize_t it, value_t *b, value_t init,                  # b: 2 rows
                       Py_ssize_t ulo, Py_ssize_t uhi, Py_ssize_t ahead) noexcept nogil:
    # Output row it of (N, OD, OH), values-only max of an integer type: the
    # window's input rows reduced into b, then each output's columns (any
    # order gives the same integer max; see cp_int_rowmax).  ahead: the
    # prefetch distance in rows (0: none), worked out once by the caller
    cdef Py_ssize_t OD = g.osize[0], OH = g.osize[1], OW = g.osize[2]
    cdef Py_ssize_t n = it // OH, od = 0, oh = it - n * OH   # (one division a row
    if OD > 1:                                               # when 2-d: ~5% of the call)
        od = n % OD
        n = n // OD
    cdef Py_ssize_t L = g.size[2] * g.C, a, c, i, first = 1
    cdef Py_ssize_t d0 = _start(g, 0, od), nd = _count(g, 0, od)
    cdef Py_ssize_t h0 = _start(g, 1, oh), nh = _count(g, 1, oh)
    cdef value_t *yr = y + it * OW * g.C
    cdef int code = 7                   # cp_int_rowmax's type code
    if value_t is int8_t: code = 0
    elif value_t is uint8_t: code = 1
    elif value_t is int16_t: code = 2
    elif value_t is uint16_t: code = 3
    elif value_t is int32_t: code = 4
    elif value_t is uint32_t: code = 5
    elif value_t is int64_t: code = 6
    cdef const value_t *r0 = NULL
    cdef const value_t *r
    cdef const uint8_t *prow[INT_PAIR_ROWS]
    # 1-byte channels-first windows of 2 adjacent columns, every one whole
    # and 2 apart: both reductions straight from the rows (cp_pair_rows_bytes)
    cdef bint pairs = ((value_t is uint8_t or value_t is int8_t) and g.C == 1
                       and g.max_count_w == 2 and g.step[2] == 1 and ulo == 0 and uhi == OW
                       and 0 < nd * nh <= INT_PAIR_ROWS)
    cdef Py_ssize_t nr = 0
    for a in range(nd):
        for c in range(nh):
            r = x + ((n * g.size[0] + d0 + a * g.step[0]) * g.size[1] + h0 + c * g.step[1]) * L
            if ahead:
                cp_prefetch(r + ahead * L, L * sizeof(value_t))
            if pairs:
                prow[nr] = <const uint8_t *> (r + _start(g, 2, 0))
                nr += 1
                continue
            if first and r0 == NULL:
                r0 = r                  # (the first two rows in one pass)
                continue
            cp_int_rowmax(code, b, r0 if first else r, r if first else NULL, L, first)
            first = 0
    if pairs and cp_pair_rows_bytes(<uint8_t *> yr, prow, nr, OW, value_t is int8_t):
        return
    if pairs:                           # (no AVX-512BW: the rows as below)
        for a in range(nr):
            r = <const value_t *> prow[a] - _start(g, 2, 0)
            if a == 0:
                r0 = r
            else:
                cp_int_rowmax(code, b, r0 if first else r, r if first else NULL, L, first)
                first = 0
    if first and r0 != NULL:
        cp_int_rowmax(code, b, r0, NULL, L, 1)
        first = 0
    if first:
        for i in range(OW * g.C):
            yr[i] = init
    else:
        cp_int_colmax(code, yr, b, b + L, g.size[2], OW, g.C, g.win[2], g.win[2] + OW,
                      g.max_count_w, g.step[2], &init, ulo, uhi)


# Channels-first float32 max and average straight from the rows
# (cp_fmax2_item_f32, _favg_row): windows of at most FMAX_ROW_COLUMNS columns
# and FMAX_ROW_ROWS rows, at least FMAX_ROW_MIN_OUT outputs a row whose
# windows start 2 apart (shorter rows go to row lanes, which pool 16 planes
# a vector: measured 1.4-2x faster on rows of 17-24 such outputs and edges)
DEF FMAX_ROW_COLUMNS = 4
DEF FMAX_ROW_ROWS = 64          # CP_FMAX2_ROWS
DEF FMAX_ROW_MIN_OUT = 16
DEF FMAX_ROW_MIN_EDGED = 32     # ... or 32 if other windows (edges) are done one by one
DEF FMAX_AHEAD_ROWS = 16        # prefetch distance, in input rows
DEF FMAX_GATHER_TAPS = 16       # small planes of whole windows: the most taps
DEF FMAX_GATHER_OUTPUTS = 4096  # ... and outputs a plane (cp_fmax_gather_f32)


cdef void _pair_range(const Geom *g, Py_ssize_t *ulo, Py_ssize_t *uhi) noexcept nogil:
    # [ulo, uhi): the output columns whose windows have the most columns
    # (max_count_w) and start 2 apart (cp_fmax2_item_f32, cp_int_colmax)
    cdef Py_ssize_t lo = 0, hi
    while lo < g.osize[2] and _count(g, 2, lo) != g.max_count_w:
        lo += 1
    hi = lo
    while (hi < g.osize[2] and _count(g, 2, hi) == g.max_count_w
           and _start(g, 2, hi) == _start(g, 2, lo) + 2 * (hi - lo)):
        hi += 1
    ulo[0] = lo
    uhi[0] = hi


cdef void _favg_row(const float *x, float *y, const Geom *g, Py_ssize_t it,   # IN, OUT
                    Py_ssize_t ulo, Py_ssize_t uhi) noexcept nogil:
    # Output row it of (N, OD, OH) of a channels-first float32 average whose
    # windows [ulo, uhi) start 2 apart along W: sums straight from the rows
    # (cp_fsum2_row_f32, the others one by one), then divided (_finish_avg)
    cdef Py_ssize_t OD = g.osize[0], OH = g.osize[1], OW = g.osize[2]
    cdef Py_ssize_t n = it // (OD * OH), od = (it // OH) % OD, oh = it % OH
    cdef Py_ssize_t W = g.size[2], a, c, o, nr = 0, roff, s0 = _start(g, 2, ulo)
    cdef Py_ssize_t d0 = _start(g, 0, od), nd = _count(g, 0, od)
    cdef Py_ssize_t h0 = _start(g, 1, oh), nh = _count(g, 1, oh)
    cdef const float *xp = x + n * g.size[0] * g.size[1] * W
    cdef float *yr = y + it * OW
    cdef const float *rows[FMAX_ROW_ROWS]
    cdef const float *erows[FMAX_ROW_ROWS]
    for a in range(nd):
        for c in range(nh):
            roff = ((d0 + a * g.step[0]) * g.size[1] + h0 + c * g.step[1]) * W
            erows[nr] = xp + roff
            rows[nr] = xp + roff + s0
            nr += 1
    cp_fsum2_row_f32(yr + ulo, rows, nr, uhi - ulo, g.max_count_w, FMAX_AHEAD_ROWS * W)
    for o in range(ulo):
        yr[o] = cp_fsum_one_f32(erows, nr, _start(g, 2, o), _count(g, 2, o))
    for o in range(uhi, OW):
        yr[o] = cp_fsum_one_f32(erows, nr, _start(g, 2, o), _count(g, 2, o))
    _finish_avg(yr, g, od, oh, 0, 1)


cdef bint _full_windows(const Geom *g) noexcept nogil:
    # does every window have all its taps (none clipped by an edge), and
    # some (none wholly in the padding)?
    cdef int k
    cdef Py_ssize_t o, m
    for k in range(3):
        m = _count(g, k, 0)
        if m == 0:
            return False
        for o in range(g.osize[k]):
            if _count(g, k, o) != m:
                return False
    return True


cdef bint _pairs22(const Geom *g) noexcept nogil:
    # channels-first 2-d windows of 2 x 2 taps 2 apart, all whole (max_pool2d(2),
    # adaptive halvings): cp_fmax22_rows_f32 and its gradient
    return g.C == 1 and _pair_windows(g)


cdef bint _pair_windows(const Geom *g) noexcept nogil:
    # 2-d windows of 2 x 2 taps 2 apart, all whole, any lanes
    cdef Py_ssize_t o
    if (g.size[0] != 1 or g.osize[0] != 1 or _count(g, 0, 0) != 1
            or g.osize[1] == 0 or g.osize[2] == 0
            or g.step[1] != 1 or g.step[2] != 1 or g.size[1] * g.size[2] >= 2147483647):
        return False
    for o in range(g.osize[1]):
        if _start(g, 1, o) != 2 * o or _count(g, 1, o) != 2:
            return False
    for o in range(g.osize[2]):
        if _start(g, 2, o) != 2 * o or _count(g, 2, o) != 2:
            return False
    return True


cdef int _avg22_mode(const Geom *g) noexcept nogil:
    # the divisor of _pairs22 windows' averages as cp_avg22_back_f32 takes it:
    # 0 adaptive, 1 fixed (every window's divisor 4), 2 divisor_override;
    # -1 otherwise
    cdef Py_ssize_t o
    if g.div_mode == 0:             # DIV_PER_DIM
        return 0
    if g.div_mode == 2:             # DIV_CONSTANT
        return 2
    if g.div_mode != 1 or _factor(g, 0, 0) != 1:
        return -1
    for o in range(g.osize[1]):
        if _factor(g, 1, o) != 2:
            return -1
    for o in range(g.osize[2]):
        if _factor(g, 2, o) != 2:
            return -1
    return 1


cdef bint _stem32(const Geom *g) noexcept nogil:
    # channels-first 2-d windows of 3 x 3 taps 2 apart, padded by 1 (the
    # ResNet stem): rows and columns 2 j - 1 .. 2 j + 1 clipped to the input,
    # only the last row of windows clipped at the bottom (cp_fmax32_rows_f32)
    cdef Py_ssize_t o, H = g.size[1], W = g.size[2]
    if (g.C != 1 or g.size[0] != 1 or g.osize[0] != 1 or _count(g, 0, 0) != 1
            or g.osize[1] == 0 or g.osize[2] == 0
            or g.step[1] != 1 or g.step[2] != 1 or H * W >= 2147483647 - 64):
        return False
    for o in range(g.osize[1]):
        if (_start(g, 1, o) != max(2 * o - 1, 0)
                or _count(g, 1, o) != min(2 * o + 1, H - 1) - max(2 * o - 1, 0) + 1):
            return False
    if _start(g, 2, 0) != 0 or _count(g, 2, 0) != min(2, W):
        return False
    for o in range(1, g.osize[2]):
        if _start(g, 2, o) != 2 * o - 1 or _count(g, 2, o) != 3:
            return False
    return True


cdef void _fmax_gather(const float *x, float *y, int64_t *yi, const Geom *g,   # IN, OUT, OUT
                       int nthreads, bint nt) noexcept nogil:
    # Channels-first float32 max of planes whose windows are all whole
    # (cp_fmax_gather_f32): the windows' first taps and the taps' offsets
    # (PyTorch's order) for a group of G planes whose outputs fill whole
    # vectors (G * OS a multiple of 16, where the tables allow), then chunks
    # of whole groups, enough for every thread
    cdef Py_ssize_t OD = g.osize[0], OH = g.osize[1], OW = g.osize[2]
    cdef Py_ssize_t H = g.size[1], W = g.size[2], S = g.size[0] * H * W, OS = OD * OH * OW
    cdef Py_ssize_t a, b, c, t = 0, o, it, chunk, G = 16, q
    cdef int32_t base[FMAX_GATHER_OUTPUTS]
    cdef int32_t poff[FMAX_GATHER_OUTPUTS]
    cdef int32_t toff[FMAX_GATHER_TAPS]
    while G > 1 and ((OS * G) % 16 == 0 and (OS * (G // 2)) % 16 == 0):
        G //= 2                         # the fewest planes that fill whole vectors
    if OS * G > FMAX_GATHER_OUTPUTS or S * G >= 2147483647:
        G = 1
    for a in range(OD):
        for b in range(OH):
            for c in range(OW):
                base[(a * OH + b) * OW + c] = <int32_t> ((_start(g, 0, a) * H + _start(g, 1, b))
                                                         * W + _start(g, 2, c))
    for q in range(G):
        for o in range(OS):
            base[q * OS + o] = <int32_t> (q * S) + base[o]
            poff[q * OS + o] = <int32_t> (q * S)
    for a in range(_count(g, 0, 0)):
        for b in range(_count(g, 1, 0)):
            for c in range(_count(g, 2, 0)):
                toff[t] = <int32_t> ((a * g.step[0] * H + b * g.step[1]) * W + c * g.step[2])
                t += 1
    chunk = max(1, g.N // (8 * nthreads))
    chunk = (chunk + G - 1) // G * G
    for it in prange((g.N + chunk - 1) // chunk, schedule="static", num_threads=nthreads):
        cp_fmax_gather_f32(y, yi, x, it * chunk, min(g.N, it * chunk + chunk), S, OS, base,
                           poff, G, toff, t, nt)


cdef void _shift_item(const value_t *x, value_t *y, int64_t *yi,       # IN, OUT, OUT
                      const Geom *g, Py_ssize_t n, Py_ssize_t od, Py_ssize_t oh,
                      value_t *xpad, int64_t *firsts,                      # scratch
                      bint is_max, value_t init) noexcept nogil:
    # Channels-first output row (n, od, oh) of windows with stride 1 along
    # W: tap t of output ow reads column ow - pb + t*d, so with the window's
    # input rows copied into zero- (avg) or -inf-padded (max) rows, every
    # tap is one shifted vector step across the whole output row.  A padded
    # position adds +0.0 (no sum is -0.0) or never wins a max, so every
    # output still sees its real taps in PyTorch's order: the same bits.
    cdef Py_ssize_t H = g.size[1], W = g.size[2], OW = g.osize[2]
    cdef Py_ssize_t k_ = g.wk, pb = g.wpb, dl = g.wd, L = OW + (g.wk - 1) * g.wd
    cdef Py_ssize_t d0 = _start(g, 0, od), nd = _count(g, 0, od), sd = g.step[0]
    cdef Py_ssize_t h0 = _start(g, 1, oh), nh = _count(g, 1, oh), sh = g.step[1]
    cdef Py_ssize_t row = ((n * g.osize[0] + od) * g.osize[1] + oh) * OW
    cdef value_t *yr = y + row
    cdef int64_t *ir = NULL if yi == NULL else yi + row
    cdef const value_t *xr
    cdef value_t *xp
    cdef value_t pad = init if is_max else 0
    cdef Py_ssize_t a, b, t, j, col, r = 0, k = 0, d, h, plane_row, ow
    cdef Py_ssize_t offs[MAX_WINDOW_TAPS]
    cdef int64_t tidx[MAX_WINDOW_TAPS]
    for a in range(nd):
        d = d0 + a * sd
        for b in range(nh):
            h = h0 + b * sh
            plane_row = (d * H + h) * W
            xr = x + ((n * g.size[0] + d) * H + h) * W
            xp = xpad + r * L
            col = min(W, L - pb)                # real columns that fit the row
            for j in range(pb):
                xp[j] = pad
            memcpy(xp + pb, xr, col * sizeof(value_t))
            for j in range(pb + col, L):
                xp[j] = pad
            for t in range(k_):
                offs[k] = r * L + t * dl
                tidx[k] = plane_row + t * dl - pb
                k = k + 1
            r = r + 1
    if is_max and ir != NULL:
        for ow in range(OW):
            firsts[ow] = -1 if (nd == 0 or nh == 0 or _count(g, 2, ow) == 0) else \
                (d0 * H + h0) * W + _start(g, 2, ow)
    _pool_window(yr, ir, xpad, OW, offs, tidx, k, is_max, init, -1, firsts, 1)
    if not is_max:
        _finish_avg(yr, g, od, oh, 0, 1)


# Channels-first averages with stride 1 along W are pooled a plane at a time
# (_shift_plane_item) when the plane's zero-padded rows fit this much.
DEF SHIFT_PLANE_BYTES = 262144


cdef void _shift_plane_item(const value_t *x, value_t *y, const Geom *g,   # IN, OUT
                            Py_ssize_t n, value_t *xpad, bint stream) noexcept nogil:
    # Channels-first average of plane n, stride 1 along W: the plane's rows
    # copied once into zero-padded rows of L columns (the pads of xpad are
    # zeroed once by the caller and never written), then every output row's
    # taps are shifted vector steps across the whole row, as _shift_item
    # does for one output row: a padded tap adds +0.0 (no sum is -0.0), so
    # each output sees its real taps in PyTorch's order, the same bits.
    cdef Py_ssize_t D = g.size[0], H = g.size[1], W = g.size[2], OW = g.osize[2]
    cdef Py_ssize_t pb = g.wpb, L = _shift_cols(g)
    cdef Py_ssize_t col = min(W, OW + (g.wk - 1) * g.wd - pb), r, od, oh, a, b, t, k
    cdef Py_ssize_t offs[MAX_WINDOW_TAPS]
    cdef const value_t *xn = x + n * D * H * W
    cdef value_t *yr
    cdef const float *rd
    if value_t is float:
        if g.rdiv != NULL and cp_rows_ok():
            if _padded_rows(g):
                _rows_padded_f32(xn, y + n * g.osize[0] * g.osize[1] * OW, g, xpad, L, col,
                                 stream)
            else:
                _rows_plane_f32(xn, y + n * g.osize[0] * g.osize[1] * OW, g, xpad, L, col,
                                stream)
            return
    for r in range(D * H):
        memcpy(xpad + r * L + pb, xn + r * W, col * sizeof(value_t))
    cdef Py_ssize_t R = g.osize[0] * g.osize[1], q = 0, k2
    cdef Py_ssize_t offs2[MAX_WINDOW_TAPS]
    cdef const float *rd2
    while q < R:
        od, oh = q // g.osize[1], q % g.osize[1]
        k = _shift_offs(g, od, oh, L, offs)
        yr = y + (n * R + q) * OW
        if value_t is float:
            if g.rdiv != NULL:      # sums and divisions in one pass
                rd = g.rdiv + 2 * OW * g.rdiv_of[q]
                if q + 1 < R:
                    k2 = _shift_offs(g, (q + 1) // g.osize[1], (q + 1) % g.osize[1], L, offs2)
                    if k2 == k:     # two rows at once: twice the sums in flight
                        rd2 = g.rdiv + 2 * OW * g.rdiv_of[q + 1]
                        cp_window_avg_rdiv2_f32(yr, yr + OW, xpad, OW, offs, offs2, k,
                                                rd, rd + OW, rd2, rd2 + OW)
                        q += 2
                        continue
                cp_window_avg_rdiv_f32(yr, xpad, OW, offs, k, rd, rd + OW)
                q += 1
                continue
        _pool_window(yr, NULL, xpad, OW, offs, NULL, k, False, 0, -1, NULL, 1)
        _finish_avg(yr, g, od, oh, 0, 1)
        q += 1


DEF COPY_AHEAD_ROWS = 16    # _rows_plane_f32 asks for rows this far ahead


cdef void _rows_plane_f32(const float *xn, float *yn, const Geom *g, float *xpad,   # IN, OUT
                         Py_ssize_t L, Py_ssize_t col, bint stream) noexcept nogil:
    # _shift_plane_item for float32 with AVX-512 and per-column divisors:
    # four output rows at once where their windows are one window moved down
    # dh rows at a time (cp_rows_shared_f32 for 2x2 and 3x3 windows moved one
    # row, cp_rows_avg_f32 otherwise), else one; the input rows are copied
    # into the padded rows as they are first needed, so that reading the
    # plane overlaps the sums; stream: the shared rows are written with
    # non-temporal stores.
    cdef Py_ssize_t H = g.size[1], W = g.size[2], OD = g.osize[0], OH = g.osize[1]
    cdef Py_ssize_t OW = g.osize[2], pb = g.wpb, done = 0, od, oh = 0, q, nb, dh, b
    cdef Py_ssize_t kd, kh, last, r0, k
    cdef Py_ssize_t offs[MAX_WINDOW_TAPS]
    cdef const float *drows[4]
    cdef const float *rrows[4]
    cdef float *yr
    for od in range(OD):
        kd = _count(g, 0, od)
        oh = 0
        while oh < OH:
            q = od * OH + oh
            nb = _shifted_rows(g, oh, &dh)
            kh = _count(g, 1, oh)
            yr = yn + q * OW
            if kd > 0 and kh > 0:
                # the last input row the nb rows read, copied by now
                last = (_start(g, 0, od) + (kd - 1) * g.step[0]) * H \
                    + _start(g, 1, oh + nb - 1) + (_count(g, 1, oh + nb - 1) - 1) * g.step[1]
                while done <= last:
                    cp_copy_ahead_f32(xpad + done * L + pb, xn + done * W, col,
                                      COPY_AHEAD_ROWS * W)
                    done += 1
            for b in range(nb):
                drows[b] = g.rdiv + 2 * OW * g.rdiv_of[q + b]
                rrows[b] = drows[b] + OW
            r0 = _start(g, 0, od) * H + _start(g, 1, oh)
            if not (nb == 4 and dh == 1 and g.step[1] == 1 and kd > 0 and kh > 0
                    and cp_rows_shared_f32(yr, OW, xpad + r0 * L, L, OW, kh, kd,
                                           g.step[0] * H * L, g.wk, g.wd, drows, rrows,
                                           stream, g.rdiv_nz)):
                k = _shift_offs(g, od, oh, L, offs)
                cp_rows_avg_f32(yr, OW, xpad, dh * L, nb, OW, offs, k, drows, rrows)
            oh += nb
    if stream:
        cp_stream_fence()


cdef inline bint _padded_rows(const Geom *g) noexcept nogil:
    # does _rows_plane_f32 keep zero rows around each slice's rows (so that
    # every window has all its rows)?  Fixed windows of dilation 1 along H
    # with per-column divisors and AVX-512 (see _shift_rows)
    return g.hk > 0 and g.step[1] == 1 and g.rdiv != NULL and cp_rows_ok()


cdef inline Py_ssize_t _rows_below(const Geom *g) noexcept nogil:
    # the zero rows _rows_plane_f32 keeps below each slice's H rows
    return max(0, (g.osize[1] - 1) * g.hs - g.hpb + g.hk - g.size[1])


cdef inline Py_ssize_t _shift_rows(const Geom *g) noexcept nogil:
    # rows of _shift_plane_item's buffer: the plane's D x H rows, and with
    # _padded_rows hpb zero rows above and _rows_below below each slice
    if _padded_rows(g):
        return g.size[0] * (g.hpb + g.size[1] + _rows_below(g))
    return g.size[0] * g.size[1]


cdef void _rows_padded_f32(const float *xn, float *yn, const Geom *g, float *xpad,   # IN, OUT
                           Py_ssize_t L, Py_ssize_t col, bint stream) noexcept nogil:
    # _rows_plane_f32 with zero rows above and below each slice's rows, so
    # that every output row reads hk rows (a zero row adds +0.0 to a sum from
    # +0.0: the same bits) and four rows at a time are one window moved down
    # hs rows: cp_rows_shared_f32 (2x2 and 3x3 windows, hs = 1) or
    # cp_rows_avg_f32, the last OH % 4 rows one at a time.
    cdef Py_ssize_t H = g.size[1], W = g.size[2], OD = g.osize[0], OH = g.osize[1]
    cdef Py_ssize_t OW = g.osize[2], hk = g.hk, hs = g.hs, pb = g.wpb
    cdef Py_ssize_t Hp = g.hpb + H + _rows_below(g)
    cdef Py_ssize_t done = 0, dd = 0, hh = 0, od, oh, q, nb, b, i, a, t, kd, d0, hl, need, k
    cdef Py_ssize_t oh0 = 0
    cdef Py_ssize_t offs[MAX_WINDOW_TAPS]
    cdef const float *drows[4]
    cdef const float *rrows[4]
    cdef float *yr
    cdef float *xp
    if OD == 1 and g.size[0] == 1 and _count(g, 0, 0) == 1 and hs == 1 and g.wk == hk \
            and g.wd == 1:
        # one 2-d plane: its groups of 4 rows in one call, the rest below
        oh0 = cp_plane_shared_f32(xn, yn, xpad, L, pb, H, W, col, OH, OW, g.hpb, hk,
                                  g.rdiv, g.rdiv_of, stream, g.rdiv_nz, COPY_AHEAD_ROWS * W,
                                  &done)
        hh = done
    for od in range(OD):
        kd = _count(g, 0, od)
        d0 = _start(g, 0, od)
        oh = oh0 if od == 0 else 0
        while oh < OH:
            nb = 4 if oh + 4 <= OH else 1
            q = od * OH + oh
            yr = yn + q * OW
            if kd > 0:
                # the real rows the nb rows read, copied by now (in order),
                # and those of the next 4 (their reads then overlap the sums)
                hl = min(H - 1, (oh + nb + 3) * hs - g.hpb + hk - 1)
                need = (d0 + (kd - 1) * g.step[0]) * H + hl
                while done <= need:
                    # the slice's rows up to need, in one call
                    t = min(need + 1 - done, H - hh)
                    cp_copy_ahead_rows_f32(xpad + (dd * Hp + g.hpb + hh) * L + pb, L,
                                           xn + done * W, W, col, t, COPY_AHEAD_ROWS * W)
                    done += t
                    hh += t
                    if hh == H:
                        dd, hh = dd + 1, 0
            for b in range(nb):
                drows[b] = g.rdiv + 2 * OW * g.rdiv_of[q + b]
                rrows[b] = drows[b] + OW
            xp = xpad + (d0 * Hp + oh * hs) * L
            if not (nb == 4 and hs == 1 and cp_rows_shared_f32(
                    yr, OW, xp, L, OW, hk, kd, g.step[0] * Hp * L, g.wk, g.wd, drows, rrows,
                    stream, g.rdiv_nz)):
                k = 0
                for i in range(kd):
                    for a in range(hk):
                        for t in range(g.wk):
                            offs[k] = (i * g.step[0] * Hp + a) * L + t * g.wd
                            k = k + 1
                cp_rows_avg_f32(yr, OW, xp, hs * L, nb, OW, offs, k, drows, rrows)
            oh += nb
    if stream:
        cp_stream_fence()


cdef inline Py_ssize_t _shift_lead(const Geom *g) noexcept nogil:
    # zero columns before _shift_plane_item's padded rows, so that each row's
    # data (after the wpb pad columns) starts on a cache line of floats: the
    # row copies then store whole lines
    return ((g.wpb + 15) & ~15) - g.wpb


cdef inline Py_ssize_t _shift_cols(const Geom *g) noexcept nogil:
    # _shift_plane_item's padded row length: the lead and pads and
    # OW + (k-1)*d columns, rounded up to whole cache lines of floats
    return (_shift_lead(g) + g.osize[2] + (g.wk - 1) * g.wd + 15) & ~15


cdef inline Py_ssize_t _shifted_rows(const Geom *g, Py_ssize_t oh, Py_ssize_t *dh) noexcept nogil:
    # 4 when output rows oh..oh+3 (of one od) read the same number of rows
    # starting dh apart (dh >= 0), so that their taps are oh's moved down
    # b * dh rows; else 1
    cdef Py_ssize_t b
    dh[0] = 0
    if oh + 4 > g.osize[1]:
        return 1
    dh[0] = _start(g, 1, oh + 1) - _start(g, 1, oh)
    if dh[0] < 0:
        return 1
    for b in range(1, 4):
        if _count(g, 1, oh + b) != _count(g, 1, oh) or \
                _start(g, 1, oh + b) != _start(g, 1, oh) + b * dh[0]:
            return 1
    return 4


cdef inline Py_ssize_t _shift_offs(const Geom *g, Py_ssize_t od, Py_ssize_t oh, Py_ssize_t L,
                                   Py_ssize_t *offs) noexcept nogil:
    # _shift_plane_item's taps of output row (od, oh): row-major, each an
    # offset into the padded rows of L columns; returns how many
    cdef Py_ssize_t a, b, t, r, k = 0, H = g.size[1]
    for a in range(_count(g, 0, od)):
        for b in range(_count(g, 1, oh)):
            r = (_start(g, 0, od) + a * g.step[0]) * H + _start(g, 1, oh) + b * g.step[1]
            for t in range(g.wk):
                offs[k] = r * L + t * g.wd
                k = k + 1
    return k


def forward(const value_t[::1] x, value_t[::1] y, int64_t[::1] yi, Geometry geo,
            bint is_max, value_t init, Py_ssize_t cblock, int nthreads, bint indices=True,
            bint stream=False):
    """Pool x (N, D, H, W, C) into y (N, OD, OH, OW, C); yi gets max indices.

    x: IN; y, yi: OUT (yi is only written when is_max and indices; max pooling
    without indices runs a values-only loop).  stream: the outputs (y, and
    yi where written) are larger than the caches, so kernels that can write
    them with non-temporal stores do.
    """
    cdef Geom g = geo.g
    cdef Py_ssize_t nblk = (g.C + cblock - 1) // cblock
    cdef Py_ssize_t OD = g.osize[0], OH = g.osize[1]
    cdef Py_ssize_t items = g.N * OD * OH * nblk
    cdef Py_ssize_t S = g.size[0] * g.size[1] * g.size[2]
    cdef Py_ssize_t OS = OD * OH * g.osize[2]
    cdef Py_ssize_t it, groups, lanes, taps
    cdef Item w
    cdef value_t *bx
    cdef value_t *by
    cdef int64_t *bi
    cdef int failed = 0
    cdef int64_t *yp = &yi[0] if (is_max and indices) else NULL
    cdef value_t *rb
    if items == 0:
        return
    cdef Py_ssize_t ulo = 0, uhi = 0, ahead, rowb = g.size[2] * g.C * sizeof(value_t)
    cdef bint nt
    if not (value_t is float or value_t is double) and is_max and yp == NULL:
        # integers, values only: rows reduced first, any layout (_int_max_row)
        _pair_range(&g, &ulo, &uhi)
        # short rows: each prefetches the row INT_AHEAD_BYTES on
        ahead = INT_AHEAD_BYTES // rowb + 1 if rowb <= 4096 else 0
        with nogil, parallel(num_threads=nthreads):
            rb = <value_t *> cp_amalloc(2 * g.size[2] * g.C * sizeof(value_t), 0)
            for it in prange(g.N * OD * OH, schedule="static"):
                if rb == NULL:
                    failed |= 1
                else:
                    _int_max_row(&x[0], &y[0], &g, it, rb, init, ulo, uhi, ahead)
            cp_afree(rb)
        if failed:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
        return
    if value_t is float or value_t is double:
        if not is_max and g.C == 1 and _whole_plane(&g):
            # global average of channels-first planes: one contiguous sum per
            # plane, vectorised in an order fixed by cp_sum (not the row-major
            # chain; PyTorch itself uses mean() here)
            # (chunks of planes per call, then the divisions vectorised
            # across the chunk: the same operations as plane by plane)
            lanes = max(1, min(1024, g.N // (4 * nthreads)))     # planes per chunk
            groups = (g.N + lanes - 1) // lanes
            with nogil:
                if nthreads == 1:           # (no thread team to start for small calls)
                    for it in range(groups):
                        _sum_planes_chunk(&x[0], &y[0], &g, S, it, lanes)
                else:
                    # (chunks of 8 a thread handed out as threads come free,
                    # as the stem's)
                    for it in prange(groups, schedule="dynamic",
                                     chunksize=max(1, groups // (8 * nthreads)),
                                     num_threads=nthreads):
                        _sum_planes_chunk(&x[0], &y[0], &g, S, it, lanes)
            return
    cdef value_t *xpad
    cdef int64_t *firsts
    cdef Py_ssize_t L = g.osize[2] + (g.wk - 1) * g.wd
    cdef void *xbuf
    if ((value_t is float or value_t is double) and not is_max and g.C == 1 and g.wk > 0
            and g.osize[2] >= 16 and _max_rows(&g) * g.wk <= MAX_WINDOW_TAPS
            and _shift_rows(&g) * _shift_cols(&g) * sizeof(value_t) <= SHIFT_PLANE_BYTES):
        # channels-first average, stride 1 along W: a plane at a time, in
        # rows of whole cache lines (64-byte aligned: a third of the taps'
        # loads do not straddle two lines)
        with nogil, parallel(num_threads=nthreads):
            xbuf = cp_amalloc(_shift_rows(&g) * _shift_cols(&g) * sizeof(value_t), 1)
            xpad = <value_t *> xbuf
            for it in prange(g.N, schedule="dynamic", chunksize=4):
                if xbuf == NULL:
                    failed |= 1
                else:
                    _shift_plane_item(&x[0], &y[0], &g, it, xpad + _shift_lead(&g), stream)
            cp_afree(xbuf)
        if failed:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
        return
    cdef Py_ssize_t RS, nout, nfch, n0, od0, oh0, row0, M, OWr, chunk, SV
    cdef void *hbuf
    cdef float *frv
    cdef int32_t *fri
    cdef Py_ssize_t *ftags
    if value_t is float:
        if is_max and cp_fmax2_ok() and _pairs22(&g):
            # channels-first 2 x 2 windows 2 apart: rows of 8 outputs a vector,
            # however short (cp_fmax22_rows_f32), chunks of output rows, 8 a
            # thread, handed out as threads come free
            M = g.N * OH
            nfch = min(M, 8 * nthreads)
            with nogil:
                for it in prange(nfch, schedule="dynamic", chunksize=1, num_threads=nthreads):
                    cp_fmax22_rows_f32(&y[0], yp, &x[0], g.N, it * M // nfch,
                                       (it + 1) * M // nfch, g.size[1], g.size[2], OH,
                                       g.osize[2])
            return
        if not is_max and cp_fmax2_ok() and _pairs22(&g) and _avg22_mode(&g) >= 0:
            # the same windows' averages: 16 outputs a vector, each divided
            # as it is summed (cp_favg22_rows_f32); stream: each range of
            # rows staged and written in whole lines (no line read first:
            # k=2 s=2 NCHW 1.04x at 1 thread, the same at 2)
            M = g.N * OH
            nfch = min(M, 8 * nthreads)
            ahead = AVG22_AHEAD if x.shape[0] * sizeof(float) >= PREFETCH_BYTES else 0
            with nogil:
                for it in prange(nfch, schedule="dynamic", chunksize=1, num_threads=nthreads):
                    cp_favg22_rows_f32(&y[0], &x[0], g.N, it * M // nfch,
                                       (it + 1) * M // nfch, g.size[1], g.size[2], OH,
                                       g.osize[2], _avg22_mode(&g), <float> g.div_value,
                                       stream, ahead)
            return
        if is_max and cp_fmax2_ok() and _stem32(&g):
            # channels-first 3 x 3 windows 2 apart, padded by 1: each input row
            # reduced once (cp_fmax32_rows_f32), items of output rows of a
            # plane, enough of them for every thread; streamed rows that are
            # not whole lines staged STEM_STAGE outputs at a time (the stem's
            # (32, 64, 112, 112): 0.85x the time at 1 and 2 threads)
            nfch = min(OH, max(1, (4 * nthreads + g.N - 1) // g.N))
            OWr = (g.osize[2] + 15) // 16 * 16
            chunk = max(1, STEM_STAGE // g.osize[2])
            SV = (chunk * g.osize[2] + 16 + 15) // 16 * 16
            nt = stream and yp != NULL
            with nogil, parallel(num_threads=nthreads):
                hbuf = cp_amalloc((OWr + SV) * (sizeof(float) + sizeof(int32_t)), 0)
                # (chunks of items, 8 a thread, handed out as threads come
                # free: a thread held up by the machine's other work does not
                # hold up the call; 0.94-0.96x the time at 2 threads on the
                # (32, 64, 112, 112) stem, against halves given out at once)
                for it in prange(g.N * nfch, schedule="dynamic",
                                 chunksize=max(1, g.N * nfch // (8 * nthreads))):
                    if hbuf == NULL:
                        failed |= 1
                    else:
                        n0 = it // nfch
                        oh0 = (it % nfch) * OH // nfch
                        row0 = (it % nfch + 1) * OH // nfch
                        cp_fmax32_rows_f32(&y[0] + n0 * OS, yp + n0 * OS if yp != NULL else NULL,
                                           &x[0] + n0 * S, &x[0], &x[0] + g.N * S,
                                           g.size[1], g.size[2], OH, g.osize[2], oh0, row0,
                                           <float *> hbuf, <int32_t *> hbuf + OWr,
                                           &y[0] + n0 * OS + row0 * g.osize[2],
                                           <float *> hbuf + 2 * OWr,
                                           <int32_t *> hbuf + 2 * OWr + SV, chunk, nt)
                cp_afree(hbuf)
            if failed:
                raise MemoryError("cypool: no memory for the kernels' scratch buffers")
            return
        if g.C == 1 and g.step[2] == 1 and S < 2**31 - 1 and cp_fmax2_ok() \
                and g.max_count_w <= FMAX_ROW_COLUMNS and _max_rows(&g) <= FMAX_ROW_ROWS:
            _pair_range(&g, &ulo, &uhi)
            if uhi - ulo < FMAX_ROW_MIN_EDGED and uhi - ulo < g.osize[2]:
                uhi = ulo               # short rows with edge windows: row lanes
            if not is_max and uhi - ulo >= FMAX_ROW_MIN_OUT:
                # channels-first average, windows 2 apart along W: from the rows
                with nogil:
                    for it in prange(g.N * OD * OH, schedule="static", num_threads=nthreads):
                        _favg_row(&x[0], &y[0], &g, it, ulo, uhi)
                return
            if is_max and uhi - ulo < FMAX_ROW_MIN_OUT and _full_windows(&g) and cp_gather_ok() \
                    and _max_rows(&g) * g.max_count_w <= FMAX_GATHER_TAPS \
                    and OS <= FMAX_GATHER_OUTPUTS:
                # small planes, every window whole: one gather a tap
                with nogil:
                    _fmax_gather(&x[0], &y[0], yp, &g, nthreads, stream and yp != NULL)
                return
            if is_max and uhi - ulo >= FMAX_ROW_MIN_OUT:
                # channels-first max, windows 2 apart along W: from the rows
                # (cp_fmax2_item_f32), items of output rows of a plane and depth,
                # enough of them for every thread
                RS = 0                  # row results kept only where windows share rows
                for it in range(OH - 1):
                    if (_start(&g, 1, it + 1)
                            <= _start(&g, 1, it) + (_count(&g, 1, it) - 1) * g.step[1]):
                        RS = 2 * _max_rows(&g)
                nout = uhi - ulo
                nfch = min(OH, max(1, (4 * nthreads + g.N * OD - 1) // (g.N * OD)))
                # streamed only rows of whole lines, every output a vector's:
                # rows that start mid-line (56 outputs) measured 5-15% slower
                nt = (stream and yp != NULL and ulo == 0 and uhi == g.osize[2]
                      and g.osize[2] % 16 == 0)
                with nogil, parallel(num_threads=nthreads):
                    frv = <float *> cp_amalloc(max(RS, 1) * nout * sizeof(float), 0)
                    fri = <int32_t *> malloc(max(RS, 1) * nout * sizeof(int32_t))
                    ftags = <Py_ssize_t *> malloc(max(2 * RS, 1) * sizeof(Py_ssize_t))
                    for it in prange(g.N * OD * nfch, schedule="static"):
                        if frv == NULL or fri == NULL or ftags == NULL:
                            failed |= 1
                        else:
                            n0 = it // (OD * nfch)
                            od0 = (it // nfch) % OD
                            oh0 = (it % nfch) * OH // nfch
                            row0 = ((n0 * OD + od0) * OH + oh0) * g.osize[2]
                            cp_fmax2_item_f32(
                                &y[0] + row0, yp + row0 if yp != NULL else NULL,
                                &x[0] + n0 * S, g.size[1], g.size[2], g.osize[2],
                                _start(&g, 0, od0), _count(&g, 0, od0), g.step[0],
                                g.win[1], g.win[1] + OH, g.step[1],
                                oh0, (it % nfch + 1) * OH // nfch,
                                g.win[2], g.win[2] + g.osize[2], g.max_count_w, ulo, uhi,
                                frv, fri, ftags, RS, FMAX_AHEAD_ROWS * g.size[2], nt)
                    cp_afree(frv)
                    free(fri)
                    free(ftags)
                if failed:
                    raise MemoryError("cypool: no memory for the kernels' scratch buffers")
                return
    if ((value_t is float or value_t is double) and not is_max
            and _col_lanes_ok(&g, sizeof(value_t))):
        with nogil:
            failed = _col_lanes_forward(&x[0], &y[0], &g, nthreads)
        if failed:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
        return
    cdef value_t *rt
    cdef value_t *racc
    cdef int64_t *rtags
    cdef int64_t *rmi
    cdef Py_ssize_t G = 64 // sizeof(value_t), rows_o = OD * OH, nchunk, FR
    cdef Py_ssize_t SD = 1, SH = _row_ring(&g), R
    cdef bint whole_win = False
    cdef value_t **rrows
    if g.C == 1 and S * 64 <= WHOLE_PLANES_BYTES:
        SD, SH = g.size[0], g.size[1]   # small planes: transposed whole
        whole_win = not is_max
    elif not is_max and _span(&g, 0) * _span(&g, 1) * g.size[2] * 64 <= WINDOW_ROWS_BYTES:
        # sums: a slot for every row of a window, so that whole windows are
        # summed in registers (while those rows stay in the L1 cache)
        SD, SH = _span(&g, 0), _span(&g, 1)
        whole_win = True
    R = SD * SH
    if ((value_t is float or value_t is double) and g.C == 1
            and g.N >= G and R * g.size[2] * 64 <= ROW_LANES_BYTES and S < 2**31 - 1):
        # channels-first: row lanes (_row_lanes_item), items of G planes by
        # chunks of output rows, enough of them for every thread; output rows
        # gathered up to ROW_OUT_BYTES before they go back into the planes
        groups = (g.N + G - 1) // G
        nchunk = min(rows_o, max(1, (4 * nthreads + groups - 1) // groups))
        FR = max(1, ROW_OUT_BYTES // (g.osize[2] * 64))
        with nogil, parallel(num_threads=nthreads):
            rt = <value_t *> cp_amalloc(R * g.size[2] * G * sizeof(value_t), 1)
            racc = <value_t *> cp_amalloc(FR * g.osize[2] * G * sizeof(value_t), 0)
            rmi = <int64_t *> cp_amalloc(2 * FR * g.osize[2] * G * sizeof(int64_t), 0)
            rtags = <int64_t *> malloc(R * sizeof(int64_t))
            rrows = <value_t **> malloc(R * sizeof(value_t *)) if whole_win else NULL
            # (chunks of items, 8 a thread, as the stem's: 0.95-0.99x the
            # time at 2 threads on the adaptive forwards)
            for it in prange(groups * nchunk, schedule="dynamic",
                             chunksize=max(1, groups * nchunk // (8 * nthreads))):
                if rt == NULL or racc == NULL or rmi == NULL or rtags == NULL or \
                        (whole_win and rrows == NULL):
                    failed |= 1
                else:
                    _row_lanes_item(&x[0], &y[0], yp, &g, (it // nchunk) * G,
                                    min(G, g.N - (it // nchunk) * G),
                                    (it % nchunk) * rows_o // nchunk,
                                    (it % nchunk + 1) * rows_o // nchunk, rt, rtags, SD, SH,
                                    rrows, racc, rmi, FR, is_max, init)
            cp_afree(rt)
            cp_afree(racc)
            cp_afree(rmi)
            free(rtags)
            free(rrows)
        if failed:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
        return
    if ((value_t is float or value_t is double) and g.C == 1 and g.wk > 0
            and g.osize[2] >= 16 and _max_rows(&g) * g.wk <= MAX_WINDOW_TAPS):
        # channels-first, stride 1 along W: shifted vector steps (_shift_item)
        with nogil, parallel(num_threads=nthreads):
            xpad = <value_t *> cp_amalloc(_max_rows(&g) * L * sizeof(value_t), 0)
            firsts = <int64_t *> malloc(g.osize[2] * sizeof(int64_t))
            for it in prange(g.N * OD * OH, schedule="static"):
                if xpad == NULL or firsts == NULL:
                    failed |= 1
                else:
                    _shift_item(&x[0], &y[0], yp, &g, it // (OD * OH), (it // OH) % OD, it % OH,
                                xpad, firsts, is_max, init)
            cp_afree(xpad)
            free(firsts)
        if failed:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
        return
    # Channels-first: the row sweep keeps OW chains of taps in flight, which
    # is enough when windows are wide; narrow windows (or a single output
    # column) are better pooled as lanes of transposed planes.
    # as many lanes as fit a cache-sized block (L2_BLOCK_BYTES), but at least
    # MIN_LANES while those fit LANE_BLOCK_BYTES
    lanes = max(L2_BLOCK_BYTES // (S * sizeof(value_t)), MIN_LANES)
    if lanes * S * sizeof(value_t) > LANE_BLOCK_BYTES:
        lanes = 0
    lanes = min(MAX_LANES, lanes, g.N // 2)
    lanes = lanes - lanes % MIN_LANES
    taps = 0
    for it in range(g.osize[2]):
        taps += _count(&g, 2, it)
    if ((value_t is float or value_t is double)     # the types with vector lane loops
            and g.C == 1 and lanes >= MIN_LANES
            and (g.osize[2] < 4 or taps < 8 * g.osize[2]
                 or (sizeof(value_t) == 4 and S * 4 * MIN_LANES <= WIDE_LANES_BYTES))):
        groups = (g.N + lanes - 1) // lanes
        with nogil, parallel(num_threads=nthreads):
            bx = <value_t *> cp_amalloc(S * lanes * sizeof(value_t), 0)
            by = <value_t *> cp_amalloc(OS * lanes * sizeof(value_t), 0)
            bi = <int64_t *> cp_amalloc(OS * lanes * sizeof(int64_t), 0)
            for it in prange(groups, schedule="static"):
                if bx == NULL or by == NULL or bi == NULL:
                    failed |= 1
                else:
                    _plane_lanes_item(&x[0], &y[0], yp, &g, it * lanes,
                                      min(lanes, g.N - it * lanes), bx, by, bi, is_max, init)
            cp_afree(bx)
            cp_afree(by)
            cp_afree(bi)
        if failed:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
        return
    cdef Py_ssize_t rows = g.N * OD * OH, nbw = 0
    cdef Geom lg
    if g.C > 1 and rows < 4 * nthreads and g.osize[2] > 1:
        # channels-last with few output rows (batch 1, small outputs): split
        # each row's output columns rather than its channels, so that every
        # thread reads whole contiguous runs of the input rows
        nbw = min(g.osize[2], (4 * nthreads + rows - 1) // rows)
        with nogil:
            for it in prange(rows * nbw, schedule="dynamic",
                             chunksize=max(1, rows * nbw // (8 * nthreads)), num_threads=nthreads):
                lg = g
                lg.ow_lo = (it % nbw) * g.osize[2] // nbw
                lg.ow_hi = (it % nbw + 1) * g.osize[2] // nbw
                w = _item(it // nbw, OD, OH, 1, g.C, g.C)
                _forward_item(&x[0], &y[0], yp, &lg, w.n, w.a, w.b, 0, g.C, is_max, init,
                              stream)
        return
    with nogil:
        if nthreads == 1:           # (no thread team to start for small calls)
            for it in range(items):
                w = _item(it, OD, OH, nblk, cblock, g.C)
                _forward_item(&x[0], &y[0], yp, &g, w.n, w.a, w.b, w.c0, w.c1, is_max, init,
                              stream)
        else:
            # runs of consecutive items (rows that share input rows) handed
            # out 8 a thread: balanced when one thread is held up
            for it in prange(items, schedule="dynamic", chunksize=max(1, items // (8 * nthreads)),
                             num_threads=nthreads):
                w = _item(it, OD, OH, nblk, cblock, g.C)
                _forward_item(&x[0], &y[0], yp, &g, w.n, w.a, w.b, w.c0, w.c1, is_max, init,
                              stream)


# --------------------------------------------------------------------------
# Average backward: scale the output gradient, then gather it per input row
# --------------------------------------------------------------------------

cdef void _scale_item(const real_t *go, real_t *gs, const Geom *g,     # IN, OUT
                      Py_ssize_t n, Py_ssize_t od, Py_ssize_t oh) noexcept nogil:
    # The gradient reaching each tap of a window: the output gradient divided
    # exactly as the forward pass divides the window's sum.
    cdef Py_ssize_t i, m = g.osize[2] * g.C
    cdef Py_ssize_t row = ((n * g.osize[0] + od) * g.osize[1] + oh) * m
    for i in range(m):
        gs[row + i] = go[row + i]
    _finish_avg(gs + row, g, od, oh, 0, g.C)


cdef void _gather_item(const real_t *gs, real_t *gr, const Geom *g,    # IN, OUT
                       const int64_t **ptr, const int64_t **outs, bint overlap_w,
                       const int32_t *wtab, Py_ssize_t wtab_m, real_t *srx,  # srx: scratch
                       Py_ssize_t n, Py_ssize_t d, Py_ssize_t h,
                       Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    # Input row (n, d, h), computed into gr (a scratch row of W x C), sums
    # the scaled gradients of the output rows whose
    # windows read it (from the inverse tables of D and H).  Along W each
    # output's gradient is spread over its window, or, when windows overlap
    # along W on a channels-first row, gathered per element from the inverse
    # table of W (spreading overlapping windows chains every add through
    # memory).  Either way every element gets its terms in output order
    # (od, oh, ow), the order of PyTorch's scatter, so the sums match it bit
    # for bit.
    cdef Py_ssize_t C = g.C, W = g.size[2], OW = g.osize[2], sw = g.step[2]
    cdef real_t *gp
    cdef const real_t *sr
    cdef const real_t *sp
    cdef Py_ssize_t w, c, a, b, t, ow, od, oh, w0, nw, P
    cdef real_t v
    cdef Py_ssize_t k, j, mw = 0, base
    cdef Py_ssize_t offs[MAX_WINDOW_TAPS]
    if C > 1:
        # channels-last: each input column sums its terms in registers, all
        # lanes at once (cp_window_add: the terms in output order, from +0.0)
        for w in range(g.w_lo, g.w_hi):
            mw = max(mw, ptr[2][w + 1] - ptr[2][w])
        if (ptr[0][d + 1] - ptr[0][d]) * (ptr[1][h + 1] - ptr[1][h]) * mw <= MAX_WINDOW_TAPS:
            sr = gs + n * g.osize[0] * g.osize[1] * OW * C + c0
            for w in range(g.w_lo, g.w_hi):
                k = 0
                for a in range(ptr[0][d], ptr[0][d + 1]):
                    for b in range(ptr[1][h], ptr[1][h + 1]):
                        base = (outs[0][a] * g.osize[1] + outs[1][b]) * OW * C
                        for j in range(ptr[2][w], ptr[2][w + 1]):
                            offs[k] = base + outs[2][j] * C
                            k = k + 1
                if real_t is float:
                    cp_window_add_f32(gr + w * C + c0, sr, c1 - c0, offs, k, -1, 0, 0, 0)
                else:
                    cp_window_add_f64(gr + w * C + c0, sr, c1 - c0, offs, k, -1, 0, 0, 0)
            return
    if C == 1:
        _zero(gr, W, C, c0, c1)
    else:
        _zero(gr + g.w_lo * C, g.w_hi - g.w_lo, C, c0, c1)
    for a in range(ptr[0][d], ptr[0][d + 1]):
        od = outs[0][a]
        for b in range(ptr[1][h], ptr[1][h + 1]):
            oh = outs[1][b]
            sr = gs + ((n * g.osize[0] + od) * g.osize[1] + oh) * OW * C
            if C == 1 and g.wk > 0:
                # stride 1 along W: tap t of output ow reads column
                # ow - pb + t*d, so column w takes the outputs w + pb - t*d
                # for t = k-1 down to 0 (increasing ow): k shifted vector
                # adds over a copy of the row padded with zeros (+0.0 for
                # outputs that do not exist leaves each sum as it was)
                P = (g.wk - 1) * g.wd
                _zero(srx, P + W + g.wpb + OW + 1, 1, 0, 1)
                for ow in range(OW):
                    srx[P + ow] = sr[ow]
                for t in range(g.wk - 1, -1, -1):
                    if real_t is float:
                        cp_lanes_add_f32(gr, srx + P + g.wpb - t * g.wd, W, 1, 0)
                    else:
                        cp_lanes_add_f64(gr, srx + P + g.wpb - t * g.wd, W, 1, 0)
                continue
            if C == 1 and wtab_m > 0 and (overlap_w or g.max_count_w < 16):
                # dense gather: the j-th output reading each column, in order
                for ow in range(OW):
                    srx[ow] = sr[ow]
                srx[OW] = 0
                for t in range(wtab_m):
                    if real_t is float:
                        cp_gather_add_f32(gr, srx, wtab + t * W, W)
                    else:
                        cp_gather_add_f64(gr, srx, wtab + t * W, W)
                continue
            if C == 1 and overlap_w:
                for w in range(W):
                    v = gr[w]
                    for t in range(ptr[2][w], ptr[2][w + 1]):
                        v = _add(v, sr[outs[2][t]])
                    gr[w] = v
                continue
            for ow in range(OW):
                w0 = _start(g, 2, ow)
                nw = _count(g, 2, ow)
                if C == 1:
                    if real_t is float:
                        cp_spread_f32(gr + w0, sr[ow], nw, sw)
                    else:
                        cp_spread_f64(gr + w0, sr[ow], nw, sw)
                else:
                    sp = sr + ow * C
                    for t in range(nw):
                        if not (g.w_lo <= w0 + t * sw < g.w_hi):
                            continue
                        gp = gr + (w0 + t * sw) * C
                        if real_t is float:
                            cp_lanes_add_f32(gp + c0, sp + c0, c1 - c0, 1, 0)
                        else:
                            cp_lanes_add_f64(gp + c0, sp + c0, c1 - c0, 1, 0)


cdef Py_ssize_t _cover(const int64_t *p, Py_ssize_t size) noexcept nogil:
    # the most outputs any input position along a dim feeds (inverse table p)
    cdef Py_ssize_t i, m = 1
    for i in range(size):
        m = max(m, p[i + 1] - p[i])
    return m


cdef void _cl_back_rows_item(const real_t *go, real_t *gi, const Geom *g,   # IN, OUT
                             const int64_t **ptr, const int64_t **outs,
                             Py_ssize_t n, Py_ssize_t d, Py_ssize_t h0, Py_ssize_t h1,
                             real_t *ring, Py_ssize_t *tags, Py_ssize_t RS,
                             bint stream) noexcept nogil:
    # Channels-last input rows h0 .. h1 - 1 of (n, d), each its own run:
    # the output rows covering a row are scaled (as _scale_item) into RS ring
    # slots, tagged by (od, oh), when first needed, so that the next input
    # rows find them in the cache; then each input column sums its terms in
    # output order from +0.0 (cp_window_add, as _gather_item), in place.
    # Scaled by cp_scale_cl_row_f32 (scaled), no term is -0.0 (each is 0 +
    # g / d), so a sum may start from its first term: +0.0 + t is t.
    cdef Py_ssize_t C = g.C, W = g.size[2], OW = g.osize[2], OH = g.osize[1]
    cdef Py_ssize_t m = OW * C, h, a, b, j, w, k, t, r, nr, key, nxt = 0, od, oh
    cdef Py_ssize_t *stamp = tags + RS          # the input row a slot serves last
    cdef Py_ssize_t slot[MAX_WINDOW_TAPS]
    cdef Py_ssize_t offs[MAX_WINDOW_TAPS]
    cdef real_t *gr
    cdef bint scaled = False
    if real_t is float:
        scaled = g.div_mode == 1 and g.wdiv != NULL and cp_rows_ok()
    for k in range(RS):
        tags[k] = -1
        stamp[k] = -1
    for h in range(h0, h1):
        nr = 0
        for a in range(ptr[0][d], ptr[0][d + 1]):
            od = outs[0][a]
            for b in range(ptr[1][h], ptr[1][h + 1]):
                oh = outs[1][b]
                key = od * OH + oh
                k = 0
                while k < RS and tags[k] != key:
                    k += 1
                if k == RS:             # not kept: scaled into a slot this row spares
                    while stamp[nxt] == h:
                        nxt = nxt + 1 if nxt + 1 < RS else 0
                    k = nxt
                    tags[k] = key
                    if real_t is float:
                        if scaled:
                            # (copied and scaled in one pass)
                            cp_scale_cl_row_f32(ring + k * m,
                                                go + ((n * g.osize[0] + od) * OH + oh) * m, OW,
                                                C, <double> (_factor(g, 0, od) * _factor(g, 1, oh)),
                                                g.wdiv)
                            stamp[k] = h
                            slot[nr] = k * m
                            nr += 1
                            continue
                    memcpy(ring + k * m, go + ((n * g.osize[0] + od) * OH + oh) * m,
                           m * sizeof(real_t))
                    _finish_avg(ring + k * m, g, od, oh, 0, C)
                stamp[k] = h
                slot[nr] = k * m
                nr += 1
        gr = gi + ((n * g.size[0] + d) * g.size[1] + h) * W * C
        if real_t is float:
            if cp_cl_gather_row_f32(gr, ring, slot, nr, W, C, ptr[2], outs[2], stream, scaled):
                continue
        for w in range(W):
            t = 0
            for r in range(nr):
                for j in range(ptr[2][w], ptr[2][w + 1]):
                    offs[t] = slot[r] + outs[2][j] * C
                    t += 1
            if real_t is float:
                cp_window_add_f32(gr + w * C, ring, C, offs, t, -1, 0, 0, 0)
            else:
                cp_window_add_f64(gr + w * C, ring, C, offs, t, -1, 0, 0, 0)


cdef void _shift_back_plane_item(const real_t *go, real_t *gi, const Geom *g,   # IN, OUT
                                 const int64_t **ptr, const int64_t **outs,
                                 Py_ssize_t n, real_t *sp) noexcept nogil:
    # Channels-first average backward of plane n, stride 1 along W: the
    # plane's output gradients copied once into zero-padded rows of L
    # columns (pads zeroed once by the caller) and scaled there, then every
    # input row sums,
    # in registers, the output rows whose windows read it (od, oh in order)
    # and in each the outputs ow = w + pb - t*d for t = k-1 down to 0
    # (increasing ow): shifted vector steps across the whole row.  An output
    # that does not exist reads +0.0, which leaves a sum from +0.0 as it
    # was: each element gets PyTorch's terms in PyTorch's order.
    cdef Py_ssize_t D = g.size[0], H = g.size[1], W = g.size[2], OW = g.osize[2]
    cdef Py_ssize_t P = (g.wk - 1) * g.wd, L = _back_shift_cols(g)
    cdef Py_ssize_t orows = g.osize[0] * g.osize[1], r, d, h, a, b, t, k
    cdef Py_ssize_t offs[MAX_WINDOW_TAPS]
    cdef const real_t *gn = go + n * orows * OW
    for r in range(orows):      # each output row scaled as _scale_item scales it
        memcpy(sp + r * L + P, gn + r * OW, OW * sizeof(real_t))
        _finish_avg(sp + r * L + P, g, r // g.osize[1], r % g.osize[1], 0, 1)
    for d in range(D):
        for h in range(H):
            k = 0
            for a in range(ptr[0][d], ptr[0][d + 1]):
                for b in range(ptr[1][h], ptr[1][h + 1]):
                    r = outs[0][a] * g.osize[1] + outs[1][b]
                    for t in range(g.wk - 1, -1, -1):
                        offs[k] = r * L + P + g.wpb - t * g.wd
                        k = k + 1
            if real_t is float:
                cp_window_add_f32(gi + ((n * D + d) * H + h) * W, sp, W, offs, k, -1, 0, 0, 0)
            else:
                cp_window_add_f64(gi + ((n * D + d) * H + h) * W, sp, W, offs, k, -1, 0, 0, 0)


cdef inline bint _rows_back_ok(const Geom *g) noexcept nogil:
    # can _rows_back_f32 take this average backward?  Fixed windows of
    # stride and dilation 1 along H and W, 2x2 or 3x3 (cp_rows_shared_f32),
    # pads below the window, per-column divisors, AVX-512
    return (g.hk > 0 and g.hs == 1 and g.step[1] == 1 and g.wk == g.hk and g.wd == 1
            and (g.hk == 2 or g.hk == 3) and g.hpb < g.hk and g.wpb < g.wk
            and g.size[2] >= 16 and g.rdiv != NULL and cp_rows_ok())


cdef inline Py_ssize_t _rows_back_rows(const Geom *g) noexcept nogil:
    # rows of _rows_back_f32's buffer: per output slice, hk - 1 - hpb zero
    # rows, the OH scaled rows, zero rows down to where the last input row
    # reads (H + hk - 1 rows in all at least)
    return g.osize[0] * max(g.hk - 1 - g.hpb + g.osize[1], g.size[1] + g.hk - 1)


cdef inline Py_ssize_t _rows_back_lead(const Geom *g) noexcept nogil:
    # zero columns before the wk - 1 pad columns of _rows_back_f32's rows, so
    # that each row's scaled gradients start on a cache line of floats
    return ((g.wk - 1 + 15) & ~15) - (g.wk - 1)


cdef inline Py_ssize_t _rows_back_cols(const Geom *g) noexcept nogil:
    # _rows_back_f32's row length: the lead, wk - 1 zeros, the OW scaled
    # gradients, zeros to where the last input column reads; whole lines
    return (_rows_back_lead(g) + max(g.wk - 1 + g.osize[2], g.wpb + g.size[2] + g.wk - 1)
            + 15) & ~15


cdef void _rows_back_f32(const float *go, float *gi, const Geom *g,   # IN, OUT
                         const int64_t **ptr, const int64_t **outs, Py_ssize_t n,
                         float *buf, bint stream) noexcept nogil:
    # Channels-first average backward of plane n where _rows_back_ok: the
    # output gradients scaled into padded rows (zeros around each slice's
    # rows and each row's columns), then each input row sums the hk x wk
    # scaled gradients of the outputs whose windows read it (od, oh, ow in
    # order, from +0.0; a zero adds +0.0: the same bits) from the hk rows
    # starting at its own row number, four input rows at a time sharing
    # their loads (cp_rows_shared_f32, mode 2), the last H % 4 one at a time.
    # With one slice each way the rows are scaled as the gathers first need
    # them, so that reading the gradient overlaps the sums.
    cdef Py_ssize_t D = g.size[0], H = g.size[1], W = g.size[2]
    cdef Py_ssize_t OD = g.osize[0], OH = g.osize[1], OW = g.osize[2]
    cdef Py_ssize_t kh = g.hk, kw = g.wk, top = g.hk - 1 - g.hpb
    cdef Py_ssize_t OHp = _rows_back_rows(g) // OD, Lb = _rows_back_cols(g)
    cdef Py_ssize_t P = _rows_back_lead(g) + kw - 1     # a scaled row's first column
    cdef Py_ssize_t done = 0, total = OD * OH, d, h, nb, kd, od0, i, a, c, k, need
    cdef bint ahead = D == 1 and OD == 1
    cdef Py_ssize_t offs[MAX_WINDOW_TAPS]
    cdef const float *gn = go + n * total * OW
    cdef const float *rd
    cdef float *yr
    cdef float *xp
    if not ahead:
        while done < total:
            rd = g.rdiv + 2 * OW * g.rdiv_of[done]
            cp_scale_row_f32(buf + ((done // OH) * OHp + top + done % OH) * Lb + P,
                             gn + done * OW, OW, rd, rd + OW)
            done += 1
    for d in range(D):
        kd = ptr[0][d + 1] - ptr[0][d]
        od0 = outs[0][ptr[0][d]] if kd > 0 else 0
        h = 0
        while h < H:
            nb = 4 if h + 4 <= H else 1
            yr = gi + ((n * D + d) * H + h) * W
            if ahead:
                # the rows these input rows read, and those of the next 4
                need = min(OH, h + nb + 4 + kh - 1 - top)
                while done < need:
                    rd = g.rdiv + 2 * OW * g.rdiv_of[done]
                    cp_scale_row_f32(buf + (top + done) * Lb + P, gn + done * OW, OW, rd,
                                     rd + OW)
                    done += 1
            xp = buf + (od0 * OHp + h) * Lb + _rows_back_lead(g) + g.wpb
            if not (nb == 4 and cp_rows_shared_f32(yr, W, xp, Lb, W, kh, kd, OHp * Lb, kw, 1,
                                                   NULL, NULL, stream, 2)):
                k = 0
                for i in range(kd):
                    for a in range(kh):
                        for c in range(kw):
                            offs[k] = (i * OHp + a) * Lb + c
                            k = k + 1
                cp_rows_sum_f32(yr, W, xp, Lb, nb, W, offs, k)
            h += nb
    if stream:
        cp_stream_fence()


cdef inline Py_ssize_t _back_shift_cols(const Geom *g) noexcept nogil:
    """Columns of _shift_back_plane_item's padded rows: P zeros, the OW
    gradients, then zeros up to where the last input column's taps reach."""
    return (g.wk - 1) * g.wd + max(g.osize[2], g.size[2] + g.wpb) + 1


cdef Py_ssize_t _back_shift_taps(const Geom *g, const int64_t **ptr) noexcept nogil:
    """The most terms any input row sums in _shift_back_plane_item."""
    cdef Py_ssize_t md = 0, mh = 0, i
    for i in range(g.size[0]):
        md = max(md, ptr[0][i + 1] - ptr[0][i])
    for i in range(g.size[1]):
        mh = max(mh, ptr[1][i + 1] - ptr[1][i])
    return md * mh * g.wk


DEF DISJOINT_PLANE_BYTES = 131072

cdef bint _disjoint_windows(const Geom *g) noexcept nogil:
    # 2-d windows that share no input (stride >= kernel, adaptive sizes that
    # divide), none wholly in the padding: each input has at most one term
    cdef int k
    cdef Py_ssize_t o
    if (g.size[0] != 1 or g.osize[0] != 1 or _count(g, 0, 0) != 1
            or g.step[1] != 1 or g.step[2] != 1):
        return False
    for k in range(1, 3):
        for o in range(g.osize[k]):
            if _count(g, k, o) <= 0:
                return False
            if o > 0 and _start(g, k, o) < _start(g, k, o - 1) + _count(g, k, o - 1):
                return False
    return True


cdef void _disjoint_back_item(const real_t *go, real_t *gi, const Geom *g,   # IN, OUT
                              Py_ssize_t n, Py_ssize_t oh, Py_ssize_t part, Py_ssize_t parts,
                              real_t *srow, real_t *xrow, bint stream) noexcept nogil:
    # Part ``part`` of ``parts`` of the input rows of output row (n, oh) of
    # disjoint windows: every input of a window gets one term, 0 + its
    # output's scaled gradient (scaled as _scale_item does), so all the
    # band's rows are the same row: built once (xrow) and copied, streamed
    # when ``stream``; the last part zeroes the rows that no window reads
    # after the band (and before the first).
    cdef Py_ssize_t C = g.C, W = g.size[2], H = g.size[1], OW = g.osize[2], OH = g.osize[1]
    cdef Py_ssize_t m = OW * C, i, ow, w, h, hs = _start(g, 1, oh), he, hc = _count(g, 1, oh)
    cdef Py_ssize_t rowb = W * C * sizeof(real_t)
    cdef real_t *dst
    cdef real_t v
    memcpy(srow, go + (n * OH + oh) * m, m * sizeof(real_t))
    _finish_avg(srow, g, 0, oh, 0, C)
    for i in range(m):
        if srow[i] == 0:                # 0 + s: -0 becomes +0
            srow[i] = 0
    memset(xrow, 0, rowb)
    for ow in range(OW):
        if C == 1:
            v = srow[ow]
            for w in range(_start(g, 2, ow), _start(g, 2, ow) + _count(g, 2, ow)):
                xrow[w] = v
        else:
            for w in range(_start(g, 2, ow), _start(g, 2, ow) + _count(g, 2, ow)):
                memcpy(xrow + w * C, srow + ow * C, C * sizeof(real_t))
    for h in range(hs + part * hc // parts, hs + (part + 1) * hc // parts):
        dst = gi + (n * H + h) * W * C
        if stream:
            # whole aligned lines: 64-byte stores (16-byte ones measured slower)
            if (<size_t> dst) % 64 != 0 or rowb % 64 != 0 or not cp_stream_lines(dst, xrow, rowb):
                cp_stream_copy(dst, xrow, rowb)
        else:
            memcpy(dst, xrow, rowb)
    if part < parts - 1:
        return
    he = _start(g, 1, oh + 1) if oh + 1 < OH else H
    h = hs + hc
    if he > h:
        memset(gi + (n * H + h) * W * C, 0, (he - h) * rowb)
    if oh == 0 and hs > 0:
        memset(gi + n * H * W * C, 0, hs * rowb)


def avg_backward(const real_t[::1] go, real_t[::1] gi, Geometry geo,
                 Py_ssize_t cblock, int nthreads, bint stream=False, real_t[::1] scratch=None):
    """Gradient of an average pool: gi (N, D, H, W, C) from go (N, OD, OH, OW, C).

    go: IN; gi: OUT.  go is first scaled (each output's gradient divided as
    the forward divides its window sum) into a scratch array of its size:
    ``scratch`` when given (large calls pass a cached buffer), else malloc'd.
    geo carries the inverse tables (CSR) of D, H and W and the runs_table
    of D and H: one work item computes the first row of a run of identical
    rows (in D x H) and writes it to every row of the run, with
    non-temporal stores when ``stream`` (an output larger than the caches).
    """
    cdef Geom g = geo.g
    cdef const int64_t **ptr = geo.ptr
    cdef const int64_t **outs = geo.outs
    cdef const int64_t *r0 = geo.runs[0]
    cdef const int64_t *r1 = geo.runs[1]
    cdef bint overlap_w = geo.overlap_w
    cdef Py_ssize_t OD = g.osize[0], OH = g.osize[1]
    cdef Py_ssize_t RD = geo.nruns[0], RH = geo.nruns[1]
    cdef Py_ssize_t nblk = (g.C + cblock - 1) // cblock
    cdef Py_ssize_t it
    cdef Item w
    cdef Py_ssize_t oitems = g.N * OD * OH
    cdef Py_ssize_t items = g.N * RD * RH * nblk
    if items == 0:
        return
    cdef real_t *row
    cdef real_t *srx
    cdef real_t *pbuf
    cdef int failed = 0
    cdef Py_ssize_t S = g.size[0] * g.size[1] * g.size[2], a, b
    # Channels-first with a large output: a work item is a whole plane,
    # built in a cache-resident buffer and streamed out in one piece (rows
    # streamed one at a time would leave partly written lines at every row
    # boundary).  Otherwise an item is a run of rows (and a channel block).
    cdef bint planes = (stream and g.C == 1 and g.N >= 4 * nthreads
                        and S * sizeof(real_t) <= PLANE_BUFFER_BYTES)
    cdef Py_ssize_t C = g.C, nbw = 0
    cdef Geom lg
    if planes:
        items = g.N
    elif g.C > 1 and g.N * RD * RH < 4 * nthreads and g.size[2] > 1:
        # channels-last with few runs of rows (batch 1): split the rows'
        # columns rather than their channels (contiguous writes per thread)
        nbw = min(g.size[2], (4 * nthreads + g.N * RD * RH - 1) // (g.N * RD * RH))
        items = g.N * RD * RH * nbw
    cdef real_t *gs
    cdef real_t *rt
    cdef real_t *racc
    cdef int64_t *rtags
    cdef Py_ssize_t RG = 64 // sizeof(real_t), RR, MD, MH, groups, nchunk
    cdef real_t **rrows
    # channels-first float32, 2x2 or 3x3 windows of stride 1: the gathers
    # four input rows at once from rows of scaled gradients (_rows_back_f32)
    cdef void *bbuf
    cdef bint rows_back = False
    cdef Py_ssize_t M, nch
    cdef int mode
    if real_t is float:
        mode = _avg22_mode(&g)
        if g.C > 1 and cp_fmax2_ok() and _pair_windows(&g) and mode >= 0:
            # channels-last 2 x 2 windows 2 apart: each output pixel's lanes
            # to the four pixels of its window (cp_avg22_back_cl_f32)
            M = g.N * OH
            nch = min(M, 8 * nthreads)
            stream = stream and g.C % 16 == 0 and (<size_t> &gi[0]) % 64 == 0
            with nogil:
                for it in prange(nch, schedule="static", num_threads=nthreads):
                    cp_avg22_back_cl_f32(<float *> &gi[0], <const float *> &go[0],
                                         it * M // nch, (it + 1) * M // nch, g.size[1],
                                         g.size[2], OH, g.osize[2], g.C, mode,
                                         <float> g.div_value, stream)
            return
        if g.C == 1 and cp_fmax2_ok() and _pairs22(&g) and mode >= 0:
            # channels-first 2 x 2 windows 2 apart: each input one term, rows
            # written densely (cp_avg22_back_f32), streamed whole lines
            M = g.N * OH
            nch = min(M, 8 * nthreads)
            stream = stream and (2 * g.size[2]) % 16 == 0 and (<size_t> &gi[0]) % 64 == 0
            with nogil, parallel(num_threads=nthreads):
                bbuf = cp_amalloc(2 * g.size[2] * sizeof(float), 0)
                for it in prange(nch, schedule="static"):
                    if bbuf == NULL:
                        failed |= 1
                    else:
                        cp_avg22_back_f32(<float *> &gi[0], <const float *> &go[0],
                                          it * M // nch, (it + 1) * M // nch, g.size[1],
                                          g.size[2], OH, g.osize[2], mode, <float> g.div_value,
                                          <float *> bbuf, stream)
                cp_afree(bbuf)
            if failed:
                raise MemoryError("cypool: no memory for the kernels' scratch buffers")
            return
    if _disjoint_windows(&g) and not _whole_plane(&g) and (
            g.C > 1 or (g.size[2] >= 16 and S * sizeof(real_t) <= DISJOINT_PLANE_BYTES)):
        # windows that share no input: each band of input rows one row, built
        # once and copied (_disjoint_back_item), items of output rows.
        # Channels-first planes larger than DISJOINT_PLANE_BYTES go to the
        # whole-plane buffers below (streamed in one piece: 1.15x faster on
        # 200 KB planes; 1.3-1.6x slower on 50-100 KB ones)
        # (bands split in parts when they are too few for the threads)
        nch = max(1, min(_count(&g, 1, 0), (4 * nthreads + g.N * OH - 1) // (g.N * OH)))
        with nogil, parallel(num_threads=nthreads):
            bbuf = cp_amalloc((g.osize[2] + g.size[2]) * g.C * sizeof(real_t), 0)
            for it in prange(g.N * OH * nch, schedule="static"):
                if bbuf == NULL:
                    failed |= 1
                else:
                    _disjoint_back_item(&go[0], &gi[0], &g, it // (OH * nch), it // nch % OH,
                                        it % nch, nch, <real_t *> bbuf,
                                        <real_t *> bbuf + g.osize[2] * g.C, stream)
            cp_afree(bbuf)
            if stream:
                cp_stream_fence()
        if failed:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
        return
    if real_t is float:
        rows_back = (g.C == 1 and _rows_back_ok(&g)
                     and _cover(ptr[0], g.size[0]) * g.hk * g.wk <= MAX_WINDOW_TAPS
                     and _rows_back_rows(&g) * _rows_back_cols(&g) * sizeof(float)
                     <= SHIFT_PLANE_BYTES)
    if rows_back:
        with nogil, parallel(num_threads=nthreads):
            bbuf = cp_amalloc(_rows_back_rows(&g) * _rows_back_cols(&g) * sizeof(float), 1)
            for it in prange(g.N, schedule="dynamic", chunksize=4):
                if bbuf == NULL:
                    failed |= 1
                else:
                    _rows_back_f32(<const float *> &go[0], <float *> &gi[0], &g, ptr, outs, it,
                                   <float *> bbuf, stream)
            cp_afree(bbuf)
        if failed:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
        return
    # channels-first, stride 1 along W: planes scaled and gathered in one
    # pass (_shift_back_plane_item)
    cdef bint shift = (g.C == 1 and g.wk > 0 and g.size[2] >= 16
                       and _back_shift_taps(&g, ptr) <= MAX_WINDOW_TAPS
                       and OD * OH * _back_shift_cols(&g) * sizeof(real_t) <= SHIFT_PLANE_BYTES)
    # channels-last, every row its own run, few terms an element: the
    # scaled output rows kept in a ring as the input rows need them
    # (_cl_back_rows_item), no scaled copy of the whole gradient
    cdef Py_ssize_t CR = _cover(ptr[0], g.size[0]) * _cover(ptr[1], g.size[1])
    cdef Py_ssize_t nhch = 0
    cdef Py_ssize_t *ctags
    if (g.C > 1 and RD == g.size[0] and RH == g.size[1] and not _whole_plane(&g)
            and CR * _cover(ptr[2], g.size[2]) <= MAX_WINDOW_TAPS
            and g.N * g.size[0] * g.size[1] >= 4 * nthreads):
        nhch = min(g.size[1], max(1, (4 * nthreads + g.N * g.size[0] - 1)
                                  // (g.N * g.size[0])))
        with nogil, parallel(num_threads=nthreads):
            # (the ring 64-byte aligned: whole-line loads and stores when C
            # is a multiple of a line)
            bbuf = cp_amalloc(2 * CR * g.osize[2] * g.C * sizeof(real_t), 0)
            rt = <real_t *> bbuf
            ctags = <Py_ssize_t *> malloc(4 * CR * sizeof(Py_ssize_t))
            for it in prange(g.N * g.size[0] * nhch, schedule="static"):
                if bbuf == NULL or ctags == NULL:
                    failed |= 1
                else:
                    _cl_back_rows_item(&go[0], &gi[0], &g, ptr, outs, it // (g.size[0] * nhch),
                                       (it // nhch) % g.size[0],
                                       (it % nhch) * g.size[1] // nhch,
                                       (it % nhch + 1) * g.size[1] // nhch, rt, ctags, 2 * CR,
                                       stream)
                    if stream:
                        cp_stream_fence()
            cp_afree(bbuf)
            free(ctags)
        if failed:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
        return
    if shift:
        gs = NULL                   # (no scaled copy: scaled plane by plane)
    elif scratch is None:
        gs = <real_t *> cp_amalloc(max(go.shape[0], 1) * sizeof(real_t), 0)
        if gs == NULL:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
    else:
        gs = &scratch[0]
    # global pooling of channels-first planes: one gradient a plane, all of
    # them scaled as one row of lanes (one call, not one a plane: the tiny
    # backward of 64 planes 2.80 -> 1.77 us a call)
    cdef bint lane_row = not shift and g.C == 1 and _whole_plane(&g)
    if lane_row:
        lg = g
        lg.C, lg.N = g.N, 1
        lg.rdiv = NULL              # (rows of one column: not lanes)
    with nogil:
        if shift:
            pass
        elif lane_row:
            _scale_item(&go[0], gs, &lg, 0, 0, 0)
        elif nthreads == 1:         # (no thread team to start for small calls)
            for it in range(oitems):
                _scale_item(&go[0], gs, &g, it // (OD * OH), (it // OH) % OD, it % OH)
        elif oitems > 0:
            for it in prange(oitems, schedule="static", num_threads=nthreads):
                _scale_item(&go[0], gs, &g, it // (OD * OH), (it // OH) % OD, it % OH)
        if shift:
            with parallel(num_threads=nthreads):
                pbuf = <real_t *> cp_amalloc(OD * OH * _back_shift_cols(&g) * sizeof(real_t), 1)
                for it in prange(g.N, schedule="dynamic", chunksize=4):
                    if pbuf == NULL:
                        failed |= 1
                    else:
                        _shift_back_plane_item(&go[0], &gi[0], &g, ptr, outs, it, pbuf)
                cp_afree(pbuf)
        elif _whole_plane(&g):
            # global pooling: every position of a plane gets its one scaled
            # gradient (the same single term the general walk would add to 0)
            if nthreads == 1:
                for it in range(g.N):
                    _fill_plane(&gi[it * S * C], &gs[it * C], S, C)
            else:
                for it in prange(g.N, schedule="static", num_threads=nthreads):
                    _fill_plane(&gi[it * S * C], &gs[it * C], S, C)
        elif (g.C == 1 and g.N >= RG and g.size[2] * 64 <= ROW_LANES_BYTES
                and _back_ring(&g, ptr, 0) * _back_ring(&g, ptr, 1) * g.osize[2] * 64
                <= ROW_LANES_BYTES):
            # channels-first planes as row lanes (_row_lanes_back_item): items
            # of RG planes by chunks of runs of rows, enough for every thread
            MD, MH = _back_ring(&g, ptr, 0), _back_ring(&g, ptr, 1)
            RR = MD * MH
            groups = (g.N + RG - 1) // RG
            nchunk = min(RD * RH, max(1, (4 * nthreads + groups - 1) // groups))
            # (rows of 64 bytes and more streamed whole lines at a time: the
            # (32, 64, 113, 97) -> (7, 5) backward 1.6x faster)
            stream = stream and g.size[2] * sizeof(real_t) >= 64
            with parallel(num_threads=nthreads):
                rt = <real_t *> cp_amalloc(RR * g.osize[2] * RG * sizeof(real_t), 1)
                racc = <real_t *> cp_amalloc(g.size[2] * RG * sizeof(real_t), 0)
                pbuf = <real_t *> cp_amalloc(2 * g.size[2] * RG * sizeof(real_t), 0)
                rtags = <int64_t *> malloc(RR * sizeof(int64_t))
                rrows = <real_t **> malloc(RR * sizeof(real_t *))
                for it in prange(groups * nchunk, schedule="static"):
                    if (rt == NULL or racc == NULL or pbuf == NULL or rtags == NULL
                            or rrows == NULL):
                        failed |= 1
                    else:
                        _row_lanes_back_item(gs, &gi[0], &g, ptr, outs, r0, r1, RH,
                                             (it // nchunk) * RG, min(RG, g.N - (it // nchunk) * RG),
                                             (it % nchunk) * (RD * RH) // nchunk,
                                             (it % nchunk + 1) * (RD * RH) // nchunk,
                                             rt, rtags, MD, MH, rrows, racc, pbuf, stream)
                if stream:
                    cp_stream_fence()
                free(rrows)
                cp_afree(rt)
                cp_afree(racc)
                cp_afree(pbuf)
                free(rtags)
        else:
            with parallel(num_threads=nthreads):
                row = <real_t *> cp_amalloc(g.size[2] * g.C * sizeof(real_t), 0)
                srx = <real_t *> cp_amalloc((2 * g.size[2] + 2 * g.osize[2] + 1 + g.wk * g.wd)
                                            * sizeof(real_t), 0)
                pbuf = <real_t *> cp_amalloc(S * sizeof(real_t), 0) if planes else NULL
                for it in prange(items, schedule="static"):
                    if row == NULL or srx == NULL or (planes and pbuf == NULL):
                        failed |= 1
                    elif planes:
                        for a in range(RD):
                            for b in range(RH):
                                _gather_item(gs, row, &g, ptr, outs, overlap_w, geo.wtab,
                                             geo.wtab_m, srx, it, r0[a], r1[b], 0, 1)
                                _write_run(pbuf - it * S, row, &g, it, r0[a], r0[a + 1], r1[b],
                                           r1[b + 1], 0, 1, False)
                        cp_stream_copy(&gi[it * S], pbuf, S * sizeof(real_t))
                    elif nbw:
                        lg = g
                        lg.w_lo = (it % nbw) * g.size[2] // nbw
                        lg.w_hi = (it % nbw + 1) * g.size[2] // nbw
                        w = _item(it // nbw, RD, RH, 1, g.C, g.C)
                        _gather_item(gs, row, &lg, ptr, outs, overlap_w, geo.wtab,
                                     geo.wtab_m, srx, w.n, r0[w.a], r1[w.b], 0, g.C)
                        _write_run(&gi[0], row, &lg, w.n, r0[w.a], r0[w.a + 1], r1[w.b],
                                   r1[w.b + 1], 0, g.C, stream)
                    else:
                        w = _item(it, RD, RH, nblk, cblock, g.C)
                        if g.C > 1 and r0[w.a + 1] - r0[w.a] == 1 and r1[w.b + 1] - r1[w.b] == 1:
                            # channels-last row of its own: gathered in place
                            _gather_item(gs, &gi[((w.n * g.size[0] + r0[w.a]) * g.size[1]
                                                  + r1[w.b]) * g.size[2] * g.C],
                                         &g, ptr, outs, overlap_w, geo.wtab, geo.wtab_m,
                                         srx, w.n, r0[w.a], r1[w.b], w.c0, w.c1)
                            continue
                        _gather_item(gs, row, &g, ptr, outs, overlap_w, geo.wtab, geo.wtab_m,
                                     srx, w.n, r0[w.a], r1[w.b], w.c0, w.c1)
                        _write_run(&gi[0], row, &g, w.n, r0[w.a], r0[w.a + 1], r1[w.b],
                                   r1[w.b + 1], w.c0, w.c1, stream)
                if stream:
                    cp_stream_fence()
                cp_afree(row)
                cp_afree(srx)
                cp_afree(pbuf)
    if scratch is None:
        cp_afree(gs)            # (cp_afree(NULL) is a no-op)
    if failed:
        raise MemoryError("cypool: no memory for the kernels' scratch buffers")


cdef Py_ssize_t _back_ring(const Geom *g, const int64_t **ptr, int k) noexcept nogil:
    """Output rows (k = 1) and depths (k = 0) of transposed gradients that
    _row_lanes_back_item keeps: every one when the planes are small, else the
    most that cover one input row."""
    cdef Py_ssize_t i, m = 1
    if g.osize[0] * g.osize[1] * g.osize[2] * 64 <= WHOLE_PLANES_BYTES:
        return g.osize[k]
    for i in range(g.size[k]):
        m = max(m, ptr[k][i + 1] - ptr[k][i])
    return m


cdef void _row_lanes_back_item(const real_t *gs, real_t *gi, const Geom *g,   # IN, OUT
                               const int64_t **ptr, const int64_t **outs,
                               const int64_t *r0, const int64_t *r1, Py_ssize_t RH,
                               Py_ssize_t p0, Py_ssize_t nl, Py_ssize_t k_lo, Py_ssize_t k_hi,
                               real_t *t, int64_t *tags, Py_ssize_t MD,     # scratch
                               Py_ssize_t MH, real_t **rows, real_t *acc, real_t *rep,
                               bint stream) noexcept nogil:
    # Channels-first average backward of planes [p0, p0 + nl), runs of input
    # rows [k_lo, k_hi) (of the RD x RH runs): the scaled gradients of each
    # output row (od, oh) are transposed once into G lanes (slot
    # (od % MD) * MH + oh % MH of a ring: every output row that reads one
    # input row has its own; all of them, transposed at once, for small
    # planes), the run's first input row gathers its terms lane-wise in
    # output order, in registers (cp_rowlanes_gatherw), and is transposed
    # back into every row of its run.  The same terms in the
    # same order as plane by plane: the same bits.
    # stream: the run's rows of each plane (contiguous) are written from
    # rep (scratch of G rows of 2 W: each transposed row twice) with
    # cp_stream_periodic, whole lines streamed (rows 64 bytes or longer)
    cdef Py_ssize_t G = 64 // sizeof(real_t)
    cdef Py_ssize_t H = g.size[1], W = g.size[2], OH = g.osize[1], OW = g.osize[2]
    cdef Py_ssize_t S = g.size[0] * H * W, OS = g.osize[0] * OH * OW
    cdef const real_t *gsp = gs + p0 * OS
    cdef Py_ssize_t k, a, b, d, h, ja, jb, orow, slot, i, nr
    cdef Py_ssize_t RR = MD * MH
    cdef real_t *tr
    _ring_start(gsp, OS, t, G, nl, tags, RR, MD == g.osize[0] and MH == OH)
    for k in range(k_lo, k_hi):
        a = k // RH
        b = k % RH
        d = r0[a]
        h = r1[b]
        nr = 0
        for ja in range(ptr[0][d], ptr[0][d + 1]):
            for jb in range(ptr[1][h], ptr[1][h + 1]):
                orow = outs[0][ja] * OH + outs[1][jb]
                slot = (outs[0][ja] % MD) * MH + outs[1][jb] % MH
                tr = t + slot * OW * G
                if tags[slot] != orow:
                    _transpose(gsp + orow * OW, OS, tr, G, nl, OW)
                    tags[slot] = orow
                rows[nr] = tr
                nr = nr + 1
        if stream:
            # the lines the run's rows of each plane share with the runs
            # beside them, which cp_stream_periodic writes with plain stores:
            # brought in now, as the row is gathered, so that no store misses
            # (a miss holds up every store behind it: with runs of one row,
            # (113, 97) -> (7, 5), 0.90x the time at 1 thread, 0.77x at 2)
            for i in range(nl):
                for d in range(r0[a], r0[a + 1]):
                    cp_prefetch_w(gi + (p0 + i) * S + (d * H + r1[b]) * W)
                    cp_prefetch_w(gi + (p0 + i) * S + (d * H + r1[b + 1]) * W - 1)
        if real_t is float:             # (no output reading the row: zeros)
            cp_rowlanes_gatherw_f32(acc, rows, nr, W, ptr[2], outs[2])
        else:
            cp_rowlanes_gatherw_f64(acc, rows, nr, W, ptr[2], outs[2])
        if stream:
            _transpose(acc, G, rep, 2 * W, W, nl)
            for i in range(nl):
                memcpy(rep + (2 * i + 1) * W, rep + 2 * i * W, W * sizeof(real_t))
                for d in range(r0[a], r0[a + 1]):
                    cp_stream_periodic(gi + (p0 + i) * S + (d * H + r1[b]) * W,
                                       (r1[b + 1] - r1[b]) * W * sizeof(real_t),
                                       rep + 2 * i * W, W * sizeof(real_t))
        else:
            for d in range(r0[a], r0[a + 1]):
                for h in range(r1[b], r1[b + 1]):
                    _transpose(acc, G, gi + p0 * S + (d * H + h) * W, S, W, nl)


cdef void _fill_plane(real_t *gp, const real_t *v, Py_ssize_t S,      # OUT, IN
                      Py_ssize_t C) noexcept nogil:
    # S positions of C lanes each, lane c set to 0 + v[c]
    cdef Py_ssize_t p, c
    cdef real_t u
    if C == 1:
        u = 0 + v[0]
        for p in range(S):
            gp[p] = u
    else:
        for p in range(S):
            for c in range(C):
                gp[p * C + c] = 0 + v[c]


cdef void _write_run(real_t *gi, const real_t *row, const Geom *g,     # OUT, IN
                     Py_ssize_t n, Py_ssize_t d0, Py_ssize_t d1, Py_ssize_t h0, Py_ssize_t h1,
                     Py_ssize_t c0, Py_ssize_t c1, bint stream) noexcept nogil:
    # Lanes [c0, c1) of one computed input row go to every row of the run
    # [d0, d1) x [h0, h1): those rows receive the same terms in the same order.
    # Whole rows of at least a page are streamed when ``stream``.
    # (channels-last: only input columns [w_lo, w_hi) of the row)
    cdef Py_ssize_t C = g.C, W = g.size[2], H = g.size[1], d, h, w, i
    cdef Py_ssize_t rowlen = W * C, lo = 0
    cdef real_t *dst
    cdef bint whole = c0 == 0 and c1 == C
    if C > 1:
        lo = g.w_lo * C
        rowlen = (g.w_hi - g.w_lo) * C
        row = row + lo
    stream = stream and whole and rowlen * sizeof(real_t) >= 4096
    for d in range(d0, d1):
        for h in range(h0, h1):
            dst = gi + ((n * g.size[0] + d) * H + h) * W * C + lo
            if stream:
                cp_stream_copy(dst, row, rowlen * sizeof(real_t))
            elif whole and rowlen < 64:     # short rows: no call per row
                for i in range(rowlen):
                    dst[i] = row[i]
            elif whole:
                memcpy(dst, row, rowlen * sizeof(real_t))
            else:
                for w in range(g.w_hi - g.w_lo):
                    memcpy(dst + w * C + c0, row + w * C + c0, (c1 - c0) * sizeof(real_t))


# --------------------------------------------------------------------------
# Max backward: scatter per (n, channel block), which owns its gradients
# --------------------------------------------------------------------------

cdef int _scatter_plane(const real_t *op, const int64_t *ip, real_t *gp,     # IN, IN, OUT
                        Py_ssize_t plane, Py_ssize_t oplane) noexcept nogil:
    # The channels-first scatter into a zeroed plane gp, in output order;
    # returns 1 when an index lies outside [-1, plane) (skipped, not
    # written).  (Software prefetches of ip and op 64-1024 outputs on
    # measured no faster.)
    cdef Py_ssize_t o
    cdef int64_t j
    cdef int bad = 0
    for o in range(oplane):
        j = ip[o]
        if <uint64_t> j < <uint64_t> plane:
            gp[j] = gp[j] + op[o]
        elif j != -1:
            bad = 1
    return bad


cdef int _scatter_item(const real_t *go, const int64_t *idx, real_t *gi,   # IN, IN, OUT
                       Py_ssize_t n, Py_ssize_t C, Py_ssize_t plane, Py_ssize_t oplane,
                       Py_ssize_t c0, Py_ssize_t c1) noexcept nogil:
    # Returns 1 when an index lies outside [-1, plane) (skipped, not written).
    cdef real_t *gp = gi + n * plane * C
    cdef const real_t *op = go + n * oplane * C
    cdef const int64_t *ip = idx + n * oplane * C
    cdef Py_ssize_t o, c
    cdef int64_t j
    cdef int bad = 0
    _zero(gp, plane, C, c0, c1)
    if C == 1:              # channels-first planes: one lane, no inner loop
        return _scatter_plane(op, ip, gp, plane, oplane)
    for o in range(oplane):
        for c in range(c0, c1):
            j = ip[o * C + c]
            if <uint64_t> j < <uint64_t> plane:
                gp[j * C + c] = gp[j * C + c] + op[o * C + c]
            elif j != -1:
                bad = 1
    return bad


cdef int _band_item(const real_t *go, const int64_t *idx, real_t *gi,     # IN, IN, OUT
                    const Geom *g, Py_ssize_t n, Py_ssize_t r0, Py_ssize_t r1,
                    real_t *buf=NULL) noexcept nogil:
    # Input rows [r0, r1) (rows of D x H, W x C lanes each) of sample n, for a
    # channels-last max backward with too few samples to keep every thread
    # busy: the item zeroes its band, then walks the output rows whose
    # windows reach into it, in output order, adding the gradients whose
    # index falls inside the band.  Every element still gets its terms in
    # output order (PyTorch's scatter order).  The band holding an output
    # row's first input row also checks that row's indices lie within the
    # rows its windows span: returns 1 for an index outside [-1, plane),
    # 2 for one inside the plane but outside its window's rows (the caller
    # then uses the plain scatter, which takes any index as PyTorch does).
    # buf: the band is summed there, then streamed out (a band of a gradient
    # larger than the caches: zeroing it in place reads every line of it
    # first).  buf comes zeroed and is left zeroed: the copy out zeroes each
    # line it has loaded, which took 0.88-0.89x the time of a pass zeroing
    # the buffer before each band (Emerald Rapids, the (32, 64, 112, 112)
    # k=3 s=2 NHWC backward, 1 and 2 threads)
    cdef Py_ssize_t C = g.C, W = g.size[2]
    cdef int64_t jlo = r0 * W, jhi = r1 * W
    cdef real_t *gp = gi + n * g.size[0] * g.size[1] * W * C
    cdef real_t *band = gp + jlo * C
    cdef int bad
    cdef size_t nbytes = (jhi - jlo) * C * sizeof(real_t)
    if buf != NULL:
        # (the scatter writes elements [jlo, jhi) of gp: of the buffer)
        gp = <real_t *> (<uintptr_t> buf - <uintptr_t> (jlo * C * sizeof(real_t)))
    if buf == NULL:
        _zero(gp + jlo * C, jhi - jlo, C, 0, C)
    bad = _band_walk(go, idx, gp, g, n, r0, r1)
    if buf != NULL and bad == 2:
        memset(buf, 0, nbytes)          # (gi is redone: the buffer left zeroed)
    elif buf != NULL:
        cp_stream_copy_zero(band, buf, nbytes)
    return bad


cdef int _band_walk(const real_t *go, const int64_t *idx, real_t *gp,    # IN, IN, OUT
                    const Geom *g, Py_ssize_t n, Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    # _band_item's scatter of the band [r0, r1) of sample n into gp (the
    # sample's gradient, or a pointer that puts the band in a buffer)
    cdef Py_ssize_t C = g.C, W = g.size[2], H = g.size[1]
    cdef Py_ssize_t OD = g.osize[0], OH = g.osize[1], OW = g.osize[2]
    cdef Py_ssize_t plane = g.size[0] * H * W, oplane = OD * OH * OW
    cdef int64_t jlo = r0 * W, jhi = r1 * W, lo, hi, j
    cdef Py_ssize_t od, oh, ow, c, i, m = OW * C
    cdef Py_ssize_t nd, nh, dfirst, hfirst, first_row, last_row
    cdef const real_t *op
    cdef const int64_t *ip
    cdef bint owner, done
    cdef int bad = 0, outside
    for od in range(OD):
        nd = _count(g, 0, od)
        dfirst = _start(g, 0, od)
        for oh in range(OH):
            nh = _count(g, 1, oh)
            hfirst = _start(g, 1, oh)
            if nd == 0 or nh == 0:        # windows wholly in padding: only -1
                lo = 0
                hi = 0
                owner = r0 == 0
            else:
                first_row = dfirst * H + hfirst
                last_row = (dfirst + (nd - 1) * g.step[0]) * H + hfirst + (nh - 1) * g.step[1]
                lo = first_row * W
                hi = (last_row + 1) * W
                owner = r0 <= first_row < r1
                if not owner and (hi <= jlo or lo >= jhi):
                    continue
            i = ((n * OD + od) * OH + oh) * m
            op = go + i
            ip = idx + i
            # (16 channels a step with AVX-512F, the owner's check made as
            # the indices are loaded; the scatter takes only indices in the
            # band, so the check may follow it)
            outside = 0
            done = False
            if real_t is float and jhi * C < 2147483647:
                done = cp_scatter_lanes_f32(gp, op, ip, OW, C, 0, C, jlo, jhi, lo, hi,
                                            &outside if owner else NULL)
            if owner and not done:
                outside = cp_index_outside(ip, m, lo, hi)
            if outside:
                for i in range(m):
                    j = ip[i]
                    if not (lo <= j < hi) and j != -1:
                        if 0 <= j < plane:
                            return 2
                        bad = 1
            if done:
                continue
            for ow in range(OW):
                for c in range(C):
                    j = ip[ow * C + c]
                    if jlo <= j < jhi:
                        gp[j * C + c] = gp[j * C + c] + op[ow * C + c]
    return bad


def max_backward(const real_t[::1] go, const int64_t[::1] idx, real_t[::1] gi,
                 Py_ssize_t N, Py_ssize_t C, Py_ssize_t plane, Py_ssize_t oplane,
                 Py_ssize_t cblock, int nthreads, bint stream=False):
    """Gradient of a max pool: gi[n, idx[n, o, c], c] += go[n, o, c], in output order.

    go, idx: IN (idx in [0, plane) or -1 for "no input"); gi: OUT.
    Returns 0, or 1 when an index lies outside [-1, plane) (gi is then
    incomplete: the caller reports the bad indices).  stream: gi is larger
    than the caches (channels-first planes are then scattered into a
    cache-resident buffer and streamed out whole).
    """
    cdef Py_ssize_t nblk = (C + cblock - 1) // cblock
    cdef Py_ssize_t items = N * nblk
    cdef Py_ssize_t it, b, c0, c1
    # items handed out in chunks, 8 a thread (balanced when one thread is
    # held up, without a shared counter per small plane)
    cdef Py_ssize_t chunk = max(1, items // (8 * nthreads))
    cdef int bad = 0, failed = 0
    cdef real_t *pbuf
    if items == 0:
        return 0
    if stream and C == 1 and plane * sizeof(real_t) <= PLANE_BUFFER_BYTES:
        # channels-first planes larger than the caches in all: each scattered
        # into a zeroed per-thread buffer, then written with non-temporal
        # stores (no line of gi read first, as zeroing it in place reads
        # them: the (32, 64, 112, 112) k=3 s=2 backward 1.1-1.2x faster)
        with nogil, parallel(num_threads=nthreads):
            # (zeroed once here, then by each copy out: no pass of its own)
            pbuf = <real_t *> cp_amalloc(plane * sizeof(real_t), 1)
            for it in prange(items, schedule="dynamic", chunksize=chunk):
                if pbuf == NULL:
                    failed |= 1
                else:
                    bad |= _scatter_plane(&go[it * oplane], &idx[it * oplane], pbuf, plane,
                                          oplane)
                    cp_stream_copy_zero(&gi[it * plane], pbuf, plane * sizeof(real_t))
            cp_stream_fence()
            cp_afree(pbuf)
        if failed:
            raise MemoryError("cypool: no memory for the kernels' scratch buffers")
        return bad
    with nogil:
        for it in prange(items, schedule="dynamic", chunksize=chunk, num_threads=nthreads):
            b = it % nblk
            c0 = b * cblock
            c1 = min(c0 + cblock, C)
            bad |= _scatter_item(&go[0], &idx[0], &gi[0], it // nblk, C, plane, oplane, c0, c1)
    return bad


cdef bint _halvings3(const Geom *g) noexcept nogil:
    # 3-d windows of 2 x 2 x 2 taps 2 apart that tile the input exactly
    # (each size twice the output's), a plane under 2^31
    cdef Py_ssize_t k, o
    if g.size[0] * g.size[1] * g.size[2] >= 2147483647:
        return False
    for k in range(3):
        if g.osize[k] == 0 or g.size[k] != 2 * g.osize[k] or g.step[k] != 1:
            return False
        for o in range(g.osize[k]):
            if _start(g, k, o) != 2 * o or _count(g, k, o) != 2:
                return False
    return True


def max_backward_pairs(const float[::1] go, const int64_t[::1] idx, float[::1] gi,
                       Geometry geo, int nthreads, bint stream=False):
    """Float32 max backward of windows 2 apart, 2 taps along each dim,
    written densely, with no zeroing pass and no scatter.  Channels-first:
    2-d 2 x 2 windows, all whole (max_pool2d(2), adaptive halvings), by
    cp_fmax22_back_f32; 3-d 2 x 2 x 2 windows tiling the input exactly
    (max_pool3d(2) of even sizes) by cp_fmax222_back_f32, whose whole lines
    are written with non-temporal stores when ``stream``.  Channels-last
    (C > 1): the same 3-d windows by cp_cl_fmax222_back_f32, each window
    writing its 8 pixels (streamed when ``stream``).  The threads take
    chunks of the output rows.  go, idx: IN; gi: OUT.  Returns 0, or 2 when
    an index is neither -1 nor inside its window (gi is then incomplete: use
    max_backward); None when the geometry is neither, or there is no
    AVX-512F."""
    cdef Geom g = geo.g
    cdef Py_ssize_t M, nch, it
    cdef int bad = 0
    cdef bint three
    if not cp_fmax2_ok():
        return None
    if g.C > 1:
        # channels-last 2 x 2 x 2: each window writes its 8 pixels
        if not _halvings3(&g):
            return None
        M = g.N * g.osize[0] * g.osize[1]
        if M == 0:
            return 0
        nch = min(M, 8 * nthreads)
        with nogil:
            for it in prange(nch, schedule="static", num_threads=nthreads):
                bad |= cp_cl_fmax222_back_f32(&gi[0], &go[0], &idx[0], it * M // nch,
                                              (it + 1) * M // nch, g.osize[0], g.osize[1],
                                              g.osize[2], g.C, stream)
        return 2 if bad else 0
    if _pairs22(&g):
        three, M = False, g.N * g.osize[1]
    elif g.C == 1 and _halvings3(&g):
        three, M = True, g.N * g.osize[0] * g.osize[1]
    else:
        return None
    if M == 0:
        return 0
    nch = min(M, 8 * nthreads)
    with nogil, parallel(num_threads=nthreads):
        for it in prange(nch, schedule="static"):
            if three:
                bad |= cp_fmax222_back_f32(&gi[0], &go[0], &idx[0], it * M // nch,
                                           (it + 1) * M // nch, g.osize[0], g.osize[1],
                                           g.osize[2], stream)
            else:
                bad |= cp_fmax22_back_f32(&gi[0], &go[0], &idx[0], it * M // nch,
                                          (it + 1) * M // nch, g.size[1], g.size[2],
                                          g.osize[1], g.osize[2])
        if three and stream:
            cp_stream_fence()
    return 2 if bad else 0


cdef bint _fixed_windows(const Geom *g, int k, Py_ssize_t kern, Py_ssize_t pad,
                         Py_ssize_t stride) noexcept nogil:
    # the windows along dim k are kern taps (dilation 1) from o stride - pad,
    # clipped to the input, none wholly outside it
    cdef Py_ssize_t o, s, e
    if g.step[k] != 1:
        return False
    for o in range(g.osize[k]):
        s = max(o * stride - pad, 0)
        e = min(o * stride - pad + kern, g.size[k])
        if e <= s or _start(g, k, o) != s or _count(g, k, o) != e - s:
            return False
    return True


def max_backward_s2(const float[::1] go, const int64_t[::1] idx, float[::1] gi, Geometry geo,
                    int kh, int ph, int sh, int kw, int pw, int nthreads, bint stream=False):
    """Channels-first float32 max backward of 2-d windows 2 apart along W
    (kw <= 3 columns from 2 ow - pw, pw <= 1) of at most 3 rows along H (kh
    rows from oh sh - ph), such as the ResNet stem's 3 x 3 windows 2 apart:
    each input row written once from the windows that read it
    (cp_fmax_s2_back_f32), a plane an item.  go, idx: IN; gi: OUT.  Returns
    0, or 2 when an index is neither -1 nor one of its window's taps (gi is
    then incomplete: use max_backward); None where this kernel does not run
    (no AVX-512F, or other windows).  stream: rows written with non-temporal
    stores."""
    cdef Geom g = geo.g
    cdef Py_ssize_t H = g.size[1], W = g.size[2], OH = g.osize[1], OW = g.osize[2]
    cdef Py_ssize_t P = g.N, it, L, chunk
    cdef int bad = 0, failed = 0
    cdef float *buf
    if (not cp_fmax2_ok() or g.C != 1 or g.size[0] != 1 or g.osize[0] != 1
            or not (1 <= kh <= 3 and 0 <= ph < kh and sh >= 1)
            or not (1 <= kw <= 3 and 0 <= pw <= 1 and pw < kw)
            or W < 3 or (H + 3) * W + 64 >= 2147483647
            or not _fixed_windows(&g, 1, kh, ph, sh) or not _fixed_windows(&g, 2, kw, pw, 2)):
        return None
    if P == 0 or OH * OW == 0:
        return None
    L = cp_fmax_s2_buf(OW, W)
    chunk = max(1, P // (8 * nthreads))
    with nogil, parallel(num_threads=nthreads):
        buf = <float *> cp_amalloc(8 * L * sizeof(float), 0)
        for it in prange(P, schedule="dynamic", chunksize=chunk):
            if buf == NULL:
                failed |= 1
            elif cp_fmax_s2_back_f32(&gi[0] + it * H * W, &go[0] + it * OH * OW,
                                     &idx[0] + it * OH * OW, H, W, OH, OW, kh, ph, sh, kw, pw,
                                     buf, stream):
                bad |= 1
        cp_afree(buf)
    if failed:
        raise MemoryError("cypool: no memory for the kernels' scratch buffers")
    return 2 if bad else 0


def max_backward_dense(const float[::1] go, const int64_t[::1] idx, float[::1] gi,
                       Geometry geo, Py_ssize_t nbands, int nthreads, bint overlap=False,
                       bint stream=False):
    """Channels-last float32 max backward, each input row written once from
    the windows that read it (cp_cl_max_back_row_f32): no zeroing pass, no
    scatter.  Items: nbands bands of input rows (of D x H) per sample.
    go, idx: IN; gi: OUT.  Returns 0; 2 when some index other than -1 is
    not one of its window's taps (gi is then incomplete: use max_backward,
    which takes any index as PyTorch does); None where this kernel does not
    run (no AVX-512F, a geometry without inverse tables, or windows that
    overlap without ``overlap``: with every input read by several windows,
    re-reading their indices costs more than one scatter of them, unless
    the samples are too few for the scatter's threads).  stream: write with
    non-temporal stores."""
    cdef Geom g = geo.g
    if not geo.inverse or not cp_fmax2_ok():
        return None
    cdef Py_ssize_t D = g.size[0], H = g.size[1], W = g.size[2], C = g.C
    cdef Py_ssize_t OD = g.osize[0], OH = g.osize[1], OW = g.osize[2]
    cdef Py_ssize_t R = D * H, bw = (R + nbands - 1) // nbands
    cdef Py_ssize_t items = g.N * nbands, it, n, r, r0, r1, a, b, nr, od, oh, first
    cdef Py_ssize_t md = 1, mh = 1, mw = 1
    cdef const int64_t *p0 = geo.ptr[0]
    cdef const int64_t *p1 = geo.ptr[1]
    cdef const int64_t *o0 = geo.outs[0]
    cdef const int64_t *o1 = geo.outs[1]
    cdef Py_ssize_t *orow
    cdef int64_t taken = 0, expected = 0
    cdef int failed = 0
    if items == 0 or R == 0 or W == 0:
        return 0
    for r in range(D):
        md = max(md, p0[r + 1] - p0[r])
    for r in range(H):
        mh = max(mh, p1[r + 1] - p1[r])
    for r in range(W):
        mw = max(mw, geo.ptr[2][r + 1] - geo.ptr[2][r])
    if md * mh * mw > 1 and not overlap:
        return None
    with nogil, parallel(num_threads=nthreads):
        orow = <Py_ssize_t *> malloc(md * mh * (1 + mw) * sizeof(Py_ssize_t))
        for it in prange(items, schedule="static"):
            if orow == NULL:
                failed |= 1
                continue
            n = it // nbands
            r0 = (it % nbands) * bw
            r1 = min(r0 + bw, R)
            for r in range(r0, r1):
                # the output rows (od, oh) whose windows read input row r, in order
                nr = 0
                for a in range(p0[r // H], p0[r // H + 1]):
                    for b in range(p1[r % H], p1[r % H + 1]):
                        orow[nr] = ((n * OD + o0[a]) * OH + o1[b]) * OW
                        nr = nr + 1
                taken += cp_cl_max_back_row_f32(&gi[0] + (n * R + r) * W * C, &go[0], &idx[0],
                                                orow, nr, r * W, W, C, geo.ptr[2], geo.outs[2],
                                                orow + md * mh, stream)
            # the indices this band answers for: those of the output rows
            # whose windows start in it (band 0: windows wholly in the padding)
            for od in range(OD):
                for oh in range(OH):
                    if _count(&g, 0, od) == 0 or _count(&g, 1, oh) == 0:
                        first = 0
                    else:
                        first = _start(&g, 0, od) * H + _start(&g, 1, oh)
                    if r0 <= first < r1:
                        expected += cp_count_not_none(
                            &idx[0] + ((n * OD + od) * OH + oh) * OW * C, OW * C)
        free(orow)
    if failed:
        raise MemoryError("cypool: no memory for the kernels' scratch buffers")
    return 0 if taken == expected else 2


def max_backward_bands(const real_t[::1] go, const int64_t[::1] idx, real_t[::1] gi,
                       Geometry geo, Py_ssize_t nbands, int nthreads, bint stream=False):
    """Channels-last max backward split into nbands bands of input rows per
    sample (see _band_item).  go, idx: IN; gi: OUT.  Returns 0, 1 (an index
    outside [-1, plane)) or 2 (an index outside its window's rows: gi is
    incomplete, use max_backward).  stream: each band summed in a per-thread
    buffer and streamed out."""
    cdef Geom g = geo.g
    cdef Py_ssize_t R = g.size[0] * g.size[1], bw = (R + nbands - 1) // nbands
    cdef Py_ssize_t items = g.N * nbands, it, r0
    cdef int bad = 0, failed = 0
    cdef real_t *buf = NULL
    if items == 0:
        return 0
    with nogil, parallel(num_threads=nthreads):
        if stream:
            buf = <real_t *> cp_amalloc(bw * g.size[2] * g.C * sizeof(real_t), 1)   # zeroed
        for it in prange(items, schedule="static"):
            r0 = (it % nbands) * bw
            if stream and buf == NULL:
                failed |= 1
            elif r0 < R:
                bad |= _band_item(&go[0], &idx[0], &gi[0], &g, it // nbands, r0,
                                  min(r0 + bw, R), buf)
        if stream:
            cp_stream_fence()
            cp_afree(buf)
    if failed:
        raise MemoryError("cypool: no memory for the kernels' scratch buffers")
    return 2 if bad & 2 else bad


def index_range(const int64_t[::1] idx, int nthreads):
    """(min, max) of idx in one parallel pass (validating a backward's indices)."""
    cdef Py_ssize_t n = idx.shape[0], chunk = 1 << 16
    cdef Py_ssize_t nchunks = (n + chunk - 1) // chunk, i, j
    if n == 0:
        raise ValueError("index_range of an empty array")
    part = np.empty((max(nchunks, 1), 2), dtype=np.int64)     # per-chunk (min, max)
    cdef int64_t[:, ::1] pv = part
    cdef int64_t a, b
    with nogil:
        for i in prange(nchunks, schedule="static", num_threads=nthreads):
            a = idx[i * chunk]
            b = a
            for j in range(i * chunk, min(n, (i + 1) * chunk)):
                a = min(a, idx[j])
                b = max(b, idx[j])
            pv[i, 0] = a
            pv[i, 1] = b
    return int(part[:, 0].min()), int(part[:, 1].max())


# --------------------------------------------------------------------------
# Memory roofline probe
# --------------------------------------------------------------------------

def stream_probe(const real_t[::1] x, real_t[::1] y, int nthreads, bint stream=False):
    """Read every element of x once and write every element of y once, with
    nthreads threads: the least memory traffic any pooling of x into y needs.
    Returns a checksum (so the reads cannot be optimised away).

    y gets non-zero bits (1.0 in float32 lanes): this machine's memory writes
    lines of zeros back 1.45x faster than any other data (measured on the
    Zen 5 host: 102.8 MB streamed in 1.62 ms as zeros, 2.35 ms as ones or
    random bits, the same from memset), so a zero fill measures a speed no
    pooling result that is not all zeros can reach.  stream: written with
    non-temporal stores, as the kernels write outputs larger than the caches
    (the fastest way to write such data here); else with ordinary stores."""
    cdef Py_ssize_t n = x.shape[0], m = y.shape[0], chunk = 1 << 16
    cdef Py_ssize_t nchunks = (n + chunk - 1) // chunk, mchunks = (m + chunk - 1) // chunk
    cdef Py_ssize_t i, j, lo, hi
    cdef double total = 0
    with nogil:
        for i in prange(nchunks, schedule="static", num_threads=nthreads):
            lo = i * chunk
            hi = min(lo + chunk, n)
            if real_t is float:
                total += cp_sum_f32(&x[lo], hi - lo)
            else:
                total += cp_sum_f64(&x[lo], hi - lo)
        for i in prange(mchunks, schedule="static", num_threads=nthreads):
            lo = i * chunk
            hi = min(lo + chunk, m)
            if stream:
                cp_stream_fill(&y[lo], (hi - lo) * sizeof(real_t), 0x3F800000)
            else:
                for j in range(lo, hi):
                    y[j] = 1
    return total


# --------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------

def limit_window_isa(int level):
    """Run the max-window lane loops with at most this instruction set (2:
    AVX-512F, 1: AVX2, 0: plain loops), for tests; returns the level in force."""
    return cp_window_limit_isa(level)


def use_gathers(int flag):
    """Let the kernels built on 16-lane AVX-512 gathers and scatters run (1),
    not run (0), or run where the CPU makes them pay (-1, the default: not
    on AMD's cores, which run them as microcode), for tests; returns whether
    they run now (0 without AVX-512 support in the build)."""
    return cp_use_gathers(flag)


def openmp_enabled():
    """True when this build's parallel loops were compiled with OpenMP."""
    return bool(cp_openmp_enabled())


def max_threads():
    """Threads a parallel loop started now would use (omp_get_max_threads)."""
    return cp_max_threads()


def set_max_threads(int n):
    """Set the OpenMP thread count of the calling thread (omp_set_num_threads)."""
    cp_set_max_threads(n)


def team_size(int n):
    """How many threads a parallel region asking for n really gets."""
    return cp_team_size(n)


def replay_key(name, a, b, tuple args):
    """cypool._functions' replay key of a call on NumPy arrays ``a`` (and
    ``b``) with arguments ``args``, or None when the call cannot be replayed:
    the array shapes and dtypes, the argument values and their exact types
    (ints, bools, strings, None, and tuples of ints and None only)."""
    if type(a) is not np.ndarray or (b is not None and type(b) is not np.ndarray):
        return None
    cdef Py_ssize_t i, j, n = len(args)
    types = [None] * n
    for i in range(n):
        v = args[i]
        t = type(v)
        if t is tuple:
            for e in <tuple> v:
                if type(e) is not int and e is not None:
                    return None
        elif not (t is int or t is bool or t is str or v is None):
            return None
        types[i] = t
    if b is None:
        return name, a.shape, a.dtype, args, tuple(types)
    return name, a.shape, a.dtype, b.shape, b.dtype, args, tuple(types)
