/*
 * run_built.h: runs other tests of this suite, already built, under extra
 * environment settings (a header, so scripts/cdylib-tests.sh does not build
 * it as a test). Used by memx_edge_config and memx_check_stress.
 */
#ifndef RUN_BUILT_H
#define RUN_BUILT_H

#include "check.h"
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;

/* Runs each of `programs` (from CDYLIB_TESTS_BIN, posix_spawn, the preload
 * inherited) with this environment minus its MEMX_* settings (MEMX_TEST_LIB
 * kept) plus `extra` (NULL-terminated); each must exit 0. `label` names the
 * setting in messages. */
static inline void run_built_tests(const char *const *programs, size_t nprograms,
                                   const char *const *extra, const char *label)
{
    const char *dir = getenv("CDYLIB_TESTS_BIN");
    CHECK(dir && *dir, "CDYLIB_TESTS_BIN is not set (run through scripts/cdylib-tests.sh)");
    char *envp[512];
    int n = 0;
    for (char **e = environ; *e && n < 500; e++)
        if (strncmp(*e, "MEMX_", 5) != 0 || strncmp(*e, "MEMX_TEST_LIB=", 14) == 0)
            envp[n++] = *e;
    for (int i = 0; extra[i] && n < 510; i++)
        envp[n++] = (char *)extra[i];
    envp[n] = NULL;
    for (size_t p = 0; p < nprograms; p++) {
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
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s with %s ended with %s %d", programs[p],
              label, WIFSIGNALED(st) ? "signal" : "exit status",
              WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
        say("ok: %s with %s (%.1f s)\n", programs[p], label, now_sec() - t0);
    }
}

#endif
