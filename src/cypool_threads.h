/*
 * cypool_threads.h -- the one place that talks to the OpenMP runtime.
 *
 * The thread count is resolved at call time (omp_get_max_threads), so
 * OMP_NUM_THREADS, cypool.set_num_threads and threadpoolctl's
 * threadpool_limits all act on the same setting.  Built without OpenMP,
 * every function reports a single thread.
 */
#ifndef CYPOOL_THREADS_H
#define CYPOOL_THREADS_H

#ifdef _OPENMP
#include <omp.h>

static int cp_openmp_enabled(void) { return 1; }
static int cp_max_threads(void) { return omp_get_max_threads(); }
static void cp_set_max_threads(int n) { omp_set_num_threads(n); }

/* Size of the team a parallel region of n threads really gets: catches a
 * build whose parallel loops silently run serial. */
static int cp_team_size(int n)
{
    int team = 1;
#pragma omp parallel num_threads(n)
    {
#pragma omp single
        team = omp_get_num_threads();
    }
    return team;
}

#else

static int cp_openmp_enabled(void) { return 0; }
static int cp_max_threads(void) { return 1; }
static void cp_set_max_threads(int n) { (void)n; }
static int cp_team_size(int n) { (void)n; return 1; }

#endif

#endif /* CYPOOL_THREADS_H */
