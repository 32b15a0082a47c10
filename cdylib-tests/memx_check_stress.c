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
#include "check.h"
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

int main(void)
{
    static const char *const configs[][5] = {
        {"MEMX_CHECK=1", NULL},
        {"MEMX_CHECK=1", "MEMX_PROFILE=memx_check_stress", "MEMX_PROFILE_SAMPLE=16K",
         "MEMX_PROFILE_AT_EXIT=0", "MEMX_PROFILE_SIGNAL=0"},
    };
    static const char *const programs[] = {
        "threads_stress", "thread_storm", "thread_first_free", "fork_threaded",
        "api_malloc",     "api_calloc",   "api_realloc",       "api_memalign",
        "api_misc",       "cxx_new_delete",
    };
    const char *dir = getenv("CDYLIB_TESTS_BIN");
    CHECK(dir && *dir, "CDYLIB_TESTS_BIN is not set (run through scripts/cdylib-tests.sh)");

    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        char *envp[512];
        int n = 0;
        for (char **e = environ; *e && n < 500; e++)
            if (strncmp(*e, "MEMX_", 5) != 0 || strncmp(*e, "MEMX_TEST_LIB=", 14) == 0)
                envp[n++] = *e;
        for (int i = 0; i < 5 && configs[c][i]; i++)
            envp[n++] = (char *)configs[c][i];
        envp[n++] = (char *)"CDYLIB_STRESS_SECONDS=1";
        envp[n] = NULL;
        for (size_t p = 0; p < sizeof programs / sizeof programs[0]; p++) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, programs[p]);
            CHECK(access(path, X_OK) == 0, "%s is not built", path);
            char *argv[] = {path, NULL};
            pid_t pid;
            double t0 = now_sec();
            int rc = posix_spawn(&pid, path, NULL, NULL, argv, envp);
            CHECK(rc == 0, "posix_spawn(%s) failed: %d", path, rc);
            int st;
            CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s with %s%s ended with %s %d",
                  programs[p], configs[c][0], configs[c][1] ? " and the profiler" : "",
                  WIFSIGNALED(st) ? "signal" : "exit status",
                  WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
            say("ok: %s with %s%s (%.1f s)\n", programs[p], configs[c][0],
                configs[c][1] ? " and the profiler" : "", now_sec() - t0);
        }
    }
    return 0;
}
