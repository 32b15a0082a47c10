/*
 * memx_guard_crash_dump: with the heap profiler on, a guarded-sampling
 * fault has the profiler's helper thread write a dump before the process
 * dies (the handler itself only waits for it), so `memx report` can show
 * the heap at the crash (memx only).
 *
 * The child keeps 100 KB objects live (sampled by the profiler: a guard
 * point yields to a profiler point in the same allocation, and at a 64 KiB
 * profiler rate most of these have one), then overflows a guarded 64-byte
 * object (every allocation has a guard point at one byte). Its
 * report must say a dump was written, and the one
 * memx_guard_crash_dump.prof.<pid>.0001.heap must hold a heap profile with
 * live objects in it.
 */
// ENV: MEMX_GUARD_SAMPLE=1 MEMX_GUARD_RATE=0 MEMX_PROFILE=memx_guard_crash_dump.prof MEMX_PROFILE_SAMPLE=64K MEMX_PROFILE_AT_EXIT=0
#include "memx_check_cases.h"
#include <glob.h>
#include <stdint.h>

#define PATTERN "memx_guard_crash_dump.prof.*.heap"

static char *live[64];

static void remove_dumps(void)
{
    glob_t g;
    if (glob(PATTERN, 0, NULL, &g) == 0)
        for (size_t i = 0; i < g.gl_pathc; i++)
            unlink(g.gl_pathv[i]);
    globfree(&g);
}

static void body(int which, int fd)
{
    (void)which;
    for (int i = 0; i < 64; i++)
        memset(live[i] = malloc_v(100000), 1, 100000);
    for (int i = 0; i < 64; i++) {
        char *p = malloc_v(64);
        if (((uintptr_t)p + 64) % 4096 == 0) {
            send_ptr(fd, p);
            p[escape(NULL) ? 0 : 64] = 1;
        }
    }
}

int main(void)
{
    remove_dumps();
    const char *want[] = {"guarded allocation: overflow", "heap profile at the crash", NULL};
    expect_signal("overflow with the profiler on", body, 0, SIGSEGV, want);
    glob_t g;
    CHECK(glob(PATTERN, 0, NULL, &g) == 0 && g.gl_pathc == 1, "not one dump %s", PATTERN);
    FILE *f = fopen(g.gl_pathv[0], "r");
    CHECK(f != NULL, "cannot open %s", g.gl_pathv[0]);
    long objects = -1;
    CHECK(fscanf(f, "heap profile: %ld:", &objects) == 1, "%s is not a heap profile", g.gl_pathv[0]);
    fclose(f);
    CHECK(objects > 0, "the dump at the crash holds no live objects (%ld)", objects);
    say("ok: %s holds %ld live objects\n", g.gl_pathv[0], objects);
    globfree(&g);
    remove_dumps();
    return 0;
}
