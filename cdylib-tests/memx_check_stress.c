/*
 * memx_check_stress: correct programs run cleanly in checked mode
 * (MEMX_CHECK=1), with and without the profiler (memx only).
 *
 * Checked mode must report nothing on a correct program: no false double
 * free across threads (objects freed by a thread other than their
 * allocator), no false overflow after realloc, aligned or usable-size
 * writes, and no false use after free across fork. Runs threads_stress
 * (shortened to 1 s), thread_storm, thread_first_free, fork_threaded, the
 * api_* tests and cxx_new_delete from the build directory (posix_spawn,
 * the preload inherited); each must exit 0.
 */
#include "run_built.h"

int main(void)
{
    /* Each row: extra settings, NULL-terminated. */
    static const char *const configs[][7] = {
        {"MEMX_CHECK=1", "CDYLIB_STRESS_SECONDS=1", NULL},
        {"MEMX_CHECK=1", "CDYLIB_STRESS_SECONDS=1", "MEMX_PROFILE=memx_check_stress",
         "MEMX_PROFILE_SAMPLE=16K", "MEMX_PROFILE_AT_EXIT=0", "MEMX_PROFILE_SIGNAL=0", NULL},
    };
    static const char *const programs[] = {
        "threads_stress", "thread_storm", "thread_first_free", "fork_threaded",
        "api_malloc",     "api_calloc",   "api_realloc",       "api_memalign",
        "api_misc",       "cxx_new_delete",
    };
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        const char *label = configs[c][2] ? "MEMX_CHECK=1 and the profiler" : "MEMX_CHECK=1";
        run_built_tests(programs, sizeof programs / sizeof programs[0], configs[c], label);
    }
    return 0;
}
