/*
 * memx_guard_crash_dump: with the heap profiler on, a guarded-sampling
 * fault has the profiler's helper thread write a dump before the process
 * dies (the handler itself only waits for it), so `memx report` can show
 * the heap at the crash (memx only).
 *
 * The child keeps objects live (some sampled by the profiler, some
 * guarded: both rates are one byte), then overflows a guarded object. Its
 * report must say a dump was written, and
 * memx_guard_crash_dump.prof.<pid>.0001.heap must hold a heap profile with
 * live objects in it.
 */
// ENV: MEMX_GUARD_SAMPLE=1 MEMX_PROFILE=memx_guard_crash_dump.prof MEMX_PROFILE_SAMPLE=1 MEMX_PROFILE_AT_EXIT=0
#include "check.h"
#include <signal.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/wait.h>

static void *(*volatile malloc_v)(size_t) = malloc;
static char *live[64];

int main(void)
{
    int errp[2];
    CHECK(pipe(errp) == 0, "pipe failed");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        dup2(errp[1], 2);
        close(errp[0]);
        for (int i = 0; i < 64; i++)
            memset(live[i] = malloc_v(1000), 1, 1000);
        for (int i = 0; i < 64; i++) {
            char *p = malloc_v(64);
            if (((uintptr_t)p + 64) % 4096 == 0)
                p[escape(NULL) ? 0 : 64] = 1;
        }
        _exit(5);
    }
    close(errp[1]);
    char err[16384] = {0};
    size_t n = 0;
    ssize_t r;
    while ((r = read(errp[0], err + n, sizeof err - 1 - n)) > 0)
        n += (size_t)r;
    close(errp[0]);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "child status %#x; stderr: \"%s\"", st, err);
    CHECK(strstr(err, "heap profile at the crash") != NULL, "no dump announced: \"%s\"", err);
    char path[128];
    snprintf(path, sizeof path, "memx_guard_crash_dump.prof.%d.0001.heap", (int)pid);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "no dump %s", path);
    long objects = -1;
    CHECK(fscanf(f, "heap profile: %ld:", &objects) == 1, "%s is not a heap profile", path);
    fclose(f);
    unlink(path);
    CHECK(objects > 0, "the dump at the crash holds no live objects (%ld)", objects);
    say("ok: dump %s with %ld live objects\n", path, objects);
    return 0;
}
