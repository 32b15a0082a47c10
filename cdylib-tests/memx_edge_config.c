/*
 * memx_edge_config: other tests of this suite again, under extreme but valid
 * memx settings (memx only).
 *
 * The defaults exercise mostly the fast paths. Under
 *   MEMX_THREAD_CACHE_BYTES=0       no thread may cache anything: every
 *                                    malloc/free goes to the central lists;
 *   MEMX_THREAD_CACHE_BYTES=1T      caches never hit their budget;
 *   MEMX_CPU_CACHE_BYTES=0          no per-CPU caches (thread caches talk
 *                                    to the central lists directly);
 *   MEMX_CPU_CACHE_BYTES=16         per-CPU caches of one object per class,
 *                                    so most pushes find them full;
 *   MEMX_RELEASE_RATE=0             nothing is released except by trim;
 *   MEMX_RELEASE_RATE=1048576       free pages are released at once
 *                                    (released/resident spans churn, and
 *                                    reused pages must read back right);
 * the slow and boundary paths run all the time. Each setting runs
 * threads_stress (shortened to 0.5 s), thread_first_free, api_realloc,
 * api_memalign and fork_threaded from the build directory (posix_spawn,
 * the preload inherited); each must exit 0 (their own CHECK messages come
 * through on stderr).
 */
#include "run_built.h"

int main(void)
{
    static const char *const configs[] = {
        "MEMX_THREAD_CACHE_BYTES=0",
        "MEMX_THREAD_CACHE_BYTES=1T",
        "MEMX_CPU_CACHE_BYTES=0",
        "MEMX_CPU_CACHE_BYTES=16",
        "MEMX_RELEASE_RATE=0",
        "MEMX_RELEASE_RATE=1048576",
    };
    static const char *const programs[] = {
        "threads_stress", "thread_first_free", "api_realloc", "api_memalign", "fork_threaded",
    };
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        const char *const extra[] = {configs[c], "CDYLIB_STRESS_SECONDS=0.5", NULL};
        run_built_tests(programs, sizeof programs / sizeof programs[0], extra, configs[c]);
    }
    return 0;
}
