/*
 * memx_trim_stats: malloc_trim and malloc_stats under memx (memx only).
 *
 * memx semantics (documented here because they differ from glibc's):
 * - freed memory may stay mapped and resident for reuse (in thread caches
 *   and free spans); malloc_trim(0) returns all of it that is free to the
 *   OS and returns 1 if it released anything, 0 if there was nothing to
 *   release. (glibc's malloc_trim also returns 1/0 but only trims its heap
 *   tops and free chunks of its arenas; its large blocks are munmap'ed at
 *   free already.)
 * - malloc_stats() prints a human-readable report to stderr that includes
 *   "bytes in use" and "mapped";
 * - by default memx also returns free pages on its own, during free() (at
 *   the time of writing: whatever exceeds max(2 MiB, in-use / 8) at once,
 *   the rest at MEMX_RELEASE_RATE MiB/s, default 64). MEMX_RELEASE_RATE=0
 *   means "only malloc_trim releases", which makes the trim check below
 *   deterministic, so this test runs with it (ENV directive); a second run
 *   in a child with the default policy only checks that the memory is gone
 *   after trim.
 *
 * Checks: allocate 200 MiB in 1 MiB blocks, touch every page, free them all
 * (the RSS at that point is measured); malloc_trim(0) returns 1 and the RSS
 * drops by more than 150 MiB; a second malloc_trim(0) returns 0. Then
 * malloc_stats() output, captured by pointing fd 2 at a memfd with dup2,
 * contains "bytes in use" and "mapped".
 */
// ENV: MEMX_RELEASE_RATE=0
#include "check.h"
#include <malloc.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define NBLOCKS 200
#define NBLOCKS_DEFAULT 200

extern char **environ;

/* The default release policy: freed memory goes back by itself or at the
 * latest on malloc_trim; either way RSS ends near where it started. */
static int default_policy_child(void)
{
    static void *blocks[NBLOCKS_DEFAULT];
    size_t rss_start = rss_bytes();
    for (int i = 0; i < NBLOCKS_DEFAULT; i++) {
        blocks[i] = malloc(MiB);
        CHECK(blocks[i] != NULL, "malloc(1 MiB) #%d returned NULL", i);
        memset(blocks[i], i + 1, MiB);
    }
    for (int i = 0; i < NBLOCKS_DEFAULT; i++)
        free(blocks[i]);
    size_t rss_freed = rss_bytes();
    int r1 = malloc_trim(0);
    size_t rss_trimmed = rss_bytes();
    int r2 = malloc_trim(0);
    say("default policy: RSS start %zu MiB, all freed %zu MiB, after malloc_trim %zu MiB; "
        "malloc_trim returned %d then %d\n",
        rss_start / MiB, rss_freed / MiB, rss_trimmed / MiB, r1, r2);
    CHECK(rss_trimmed < rss_start + 16 * MiB, "default policy: RSS %zu MiB after freeing %d MiB "
          "and malloc_trim (started at %zu MiB)", rss_trimmed / MiB, NBLOCKS_DEFAULT,
          rss_start / MiB);
    CHECK(r2 == 0, "default policy: second malloc_trim(0) returned %d, expected 0", r2);
    return 0;
}

static void run_default_policy(void)
{
    char *envp[512];
    int n = 0;
    for (char **e = environ; *e && n < 510; e++)
        if (strncmp(*e, "MEMX_RELEASE_RATE=", 18) != 0)
            envp[n++] = *e;
    envp[n] = NULL;
    char *argv[] = {(char *)"memx_trim_stats", (char *)"default", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, envp);
    CHECK(rc == 0, "posix_spawn failed: %d", rc);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the default-policy child failed (status %#x, "
          "see above)", st);
}


int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "default") == 0)
        return default_policy_child();
    static void *blocks[NBLOCKS];
    size_t rss_start = rss_bytes();
    for (int i = 0; i < NBLOCKS; i++) {
        blocks[i] = malloc(MiB);
        CHECK(blocks[i] != NULL, "malloc(1 MiB) #%d returned NULL", i);
        memset(blocks[i], i + 1, MiB);
    }
    size_t rss_peak = rss_bytes();
    for (int i = 0; i < NBLOCKS; i++)
        free(blocks[i]);
    size_t rss_freed = rss_bytes();
    int r1 = malloc_trim(0);
    size_t rss_trimmed = rss_bytes();
    int r2 = malloc_trim(0);
    say("RSS: start %zu MiB, 200 MiB allocated %zu MiB, all freed %zu MiB, after malloc_trim "
        "%zu MiB; malloc_trim returned %d then %d\n",
        rss_start / MiB, rss_peak / MiB, rss_freed / MiB, rss_trimmed / MiB, r1, r2);
    CHECK(rss_peak >= rss_start + 190 * MiB, "RSS did not grow by 200 MiB (%zu -> %zu MiB)",
          rss_start / MiB, rss_peak / MiB);
    CHECK(r1 == 1, "first malloc_trim(0) after freeing 200 MiB returned %d, expected 1", r1);
    CHECK(rss_trimmed + 150 * MiB < rss_freed,
          "malloc_trim(0) lowered RSS only from %zu MiB to %zu MiB (expected a drop > 150 MiB)",
          rss_freed / MiB, rss_trimmed / MiB);
    CHECK(r2 == 0, "second malloc_trim(0) returned %d, expected 0 (nothing left to release)",
          r2);

    /* malloc_stats() to a memfd. */
    void *keep = malloc(12345); /* something in use */
    CHECK(keep != NULL, "malloc returned NULL");
    int mfd = memfd_create("memx-stats", 0);
    CHECK(mfd >= 0, "memfd_create failed: errno %d", errno);
    fflush(stderr);
    int saved = dup(2);
    CHECK(saved >= 0 && dup2(mfd, 2) == 2, "dup2 failed");
    malloc_stats();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    char report[65536];
    ssize_t n = pread(mfd, report, sizeof report - 1, 0);
    close(mfd);
    CHECK(n > 0, "malloc_stats() printed nothing to stderr");
    report[n] = 0;
    CHECK(strstr(report, "bytes in use") != NULL, "malloc_stats() report lacks 'bytes in use':\n%s",
          report);
    CHECK(strstr(report, "mapped") != NULL, "malloc_stats() report lacks 'mapped':\n%s", report);
    free(keep);

    run_default_policy();
    return 0;
}
