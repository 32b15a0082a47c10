/*
 * memx_edge_config: other tests of this suite again, under extreme but valid
 * memx settings (memx only).
 *
 * The defaults exercise mostly the fast paths. Under
 *   MEMX_THREAD_CACHE_BYTES=0       no thread may cache anything: every
 *                                    malloc/free goes to the central lists;
 *   MEMX_THREAD_CACHE_BYTES=1T      caches never hit their budget;
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
#include "check.h"
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

int main(void)
{
    static const char *const configs[] = {
        "MEMX_THREAD_CACHE_BYTES=0",
        "MEMX_THREAD_CACHE_BYTES=1T",
        "MEMX_RELEASE_RATE=0",
        "MEMX_RELEASE_RATE=1048576",
    };
    static const char *const programs[] = {
        "threads_stress", "thread_first_free", "api_realloc", "api_memalign", "fork_threaded",
    };
    const char *dir = getenv("CDYLIB_TESTS_BIN");
    CHECK(dir && *dir, "CDYLIB_TESTS_BIN is not set (run through scripts/cdylib-tests.sh)");

    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        char *envp[512];
        int n = 0;
        for (char **e = environ; *e && n < 500; e++)
            if (strncmp(*e, "MEMX_", 5) != 0 || strncmp(*e, "MEMX_TEST_LIB=", 14) == 0)
                envp[n++] = *e;
        envp[n++] = (char *)configs[c];
        envp[n++] = (char *)"CDYLIB_STRESS_SECONDS=0.5";
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
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s with %s ended with %s %d",
                  programs[p], configs[c], WIFSIGNALED(st) ? "signal" : "exit status",
                  WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
            say("ok: %s with %s (%.1f s)\n", programs[p], configs[c], now_sec() - t0);
        }
    }
    return 0;
}
