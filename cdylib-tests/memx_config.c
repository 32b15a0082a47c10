/*
 * memx_config: memx's MEMX_* environment variables (memx only).
 *
 * A malloc replacement reads its configuration before main (or on the first
 * malloc), where a bad value must neither crash the process nor be ignored
 * silently: memx warns with exactly one line on stderr naming the variable
 * and goes on with the default. A valid value prints nothing.
 * MEMX_STATS_AT_EXIT=1 prints a report at exit (it must mention memx and the
 * mapped bytes).
 *
 * Each case runs this program again (posix_spawn of /proc/self/exe with
 * argument "child", so LD_PRELOAD is inherited) with one variable set and
 * every other MEMX_* variable removed, captures the child's stderr through
 * a pipe, and checks the child exited 0. The child allocates from several
 * threads at once, so a configuration read lazily and racily would warn
 * more than once.
 */
#include "check.h"
#include <pthread.h>
#include <spawn.h>
#include <strings.h>
#include <sys/wait.h>

extern char **environ;

static void *child_thread(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++) {
        void *p = malloc((size_t)(i % 300) * 17 + 1);
        if (!p)
            _exit(3);
        free(p);
    }
    void *big = malloc(5 * MiB);
    if (!big)
        _exit(3);
    memset(big, 1, 5 * MiB);
    free(big);
    return NULL;
}

static int child_main(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        if (pthread_create(&t[i], NULL, child_thread, NULL) != 0)
            return 4;
    child_thread(NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    return 0; /* a normal exit, so exit-time reports run */
}

/* Runs the child with the extra variable `assignment` ("NAME=value", or
 * NULL for none); returns its stderr (static buffer) and stores the wait
 * status. */
static const char *run_child(const char *assignment, int *status)
{
    static char out[1 << 16];
    char *envp[512];
    int n = 0;
    for (char **e = environ; *e && n < 500; e++)
        if (strncmp(*e, "MEMX_", 5) != 0)
            envp[n++] = *e;
    if (assignment)
        envp[n++] = (char *)assignment;
    envp[n] = NULL;

    int fds[2];
    CHECK(pipe(fds) == 0, "pipe failed");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    char *argv[] = {(char *)"memx_config", (char *)"child", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/proc/self/exe", &fa, NULL, argv, envp);
    CHECK(rc == 0, "posix_spawn failed: %d", rc);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);

    size_t len = 0;
    ssize_t r;
    while ((r = read(fds[0], out + len, sizeof out - 1 - len)) > 0 ||
           (r < 0 && errno == EINTR))
        if (r > 0)
            len += (size_t)r;
    out[len] = 0;
    close(fds[0]);
    CHECK(waitpid(pid, status, 0) == pid, "waitpid failed");
    return out;
}

static int count_lines_with(const char *text, const char *needle)
{
    int count = 0;
    const char *line = text;
    while (*line) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[4096];
        size_t m = len < sizeof buf - 1 ? len : sizeof buf - 1;
        memcpy(buf, line, m);
        buf[m] = 0;
        if (strstr(buf, needle))
            count++;
        line += len + (end ? 1 : 0);
    }
    return count;
}

static void expect_clean_exit(const char *assignment, int status, const char *err)
{
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "child with %s ended with %s %d; its stderr:\n%s", assignment ? assignment : "(none)",
          WIFSIGNALED(status) ? "signal" : "status",
          WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status), err);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "child") == 0)
        return child_main();

    int st;
    const char *err;

    /* No MEMX_* at all: silent. */
    err = run_child(NULL, &st);
    expect_clean_exit(NULL, st, err);
    CHECK(err[0] == 0, "child with no MEMX_* variables wrote to stderr:\n%s", err);

    /* Garbage values: exactly one warning line naming the variable. */
    static const char *const bad[] = {
        "MEMX_RELEASE_RATE=abc",
        "MEMX_RELEASE_RATE=-5",
        "MEMX_RELEASE_RATE=",
        "MEMX_THREAD_CACHE_BYTES=99999999999999999999999",
        "MEMX_THREAD_CACHE_BYTES=12Q",
        "MEMX_STATS_AT_EXIT=maybe",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[64];
        const char *eq = strchr(bad[i], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - bad[i]), bad[i]);
        err = run_child(bad[i], &st);
        expect_clean_exit(bad[i], st, err);
        int lines = count_lines_with(err, name);
        CHECK(lines == 1, "child with %s: %d stderr lines mention %s, expected exactly 1; "
              "stderr:\n%s", bad[i], lines, name, err);
    }

    /* Valid values: silent. */
    static const char *const good[] = {"MEMX_THREAD_CACHE_BYTES=4M"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        err = run_child(good[i], &st);
        expect_clean_exit(good[i], st, err);
        CHECK(err[0] == 0, "child with valid %s wrote to stderr:\n%s", good[i], err);
    }

    /* Stats at exit. */
    err = run_child("MEMX_STATS_AT_EXIT=1", &st);
    expect_clean_exit("MEMX_STATS_AT_EXIT=1", st, err);
    CHECK(strcasestr(err, "memx") != NULL, "MEMX_STATS_AT_EXIT=1: the report does not mention "
          "memx; stderr:\n%s", err);
    CHECK(strstr(err, "mapped") != NULL, "MEMX_STATS_AT_EXIT=1: the report does not contain "
          "'mapped'; stderr:\n%s", err);

    /* For information only: what an unknown MEMX_* variable does (the test
     * runner itself sets MEMX_TEST_LIB for every test). */
    err = run_child("MEMX_TEST_LIB=libmemx.so", &st);
    expect_clean_exit("MEMX_TEST_LIB=libmemx.so", st, err);
    say("note: with MEMX_TEST_LIB set the child's stderr was: \"%s\"\n", err);
    return 0;
}
