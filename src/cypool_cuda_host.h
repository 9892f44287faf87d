/*
 * cypool_cuda_host.h -- the host shim: runs cypool_pool.cu's kernels on the
 * CPU, so that their logic is tested where there is no GPU.
 *
 * Included before cypool_pool.cu in a C++ translation unit (the tests build
 * one, tests/cuda_host.py).  It supplies what the kernels use of CUDA: the
 * built-in thread coordinates threadIdx, blockIdx, blockDim and gridDim
 * (x only: every kernel is a one-dimensional grid-stride loop) and a launch
 * that runs every thread of every block in turn.  The kernels share nothing
 * between threads (no shared memory, no synchronisation, no atomics), so a
 * serial launch computes exactly what the GPU computes; a small grid makes
 * the grid-stride loops wrap.  float16 is the compiler's _Float16 (IEEE
 * binary16, conversions rounding to nearest even, as the PTX ones).
 */
#ifndef CYPOOL_CUDA_HOST_H
#define CYPOOL_CUDA_HOST_H

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#error "cypool_cuda_host.h is for host compilers only"
#endif

struct cp_dim3 {
    unsigned x, y, z;
};

static cp_dim3 threadIdx, blockIdx, blockDim, gridDim;

/* Run kernel f() for every thread of a grid of `grid` blocks of `block`. */
template <class F>
static void cp_host_launch(unsigned grid, unsigned block, F f)
{
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; b++)
        for (unsigned t = 0; t < block; t++) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            f();
        }
}

#endif /* CYPOOL_CUDA_HOST_H */
