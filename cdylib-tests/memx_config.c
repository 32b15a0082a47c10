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
 * Bad values: every variable of the option table (src/config.rs) with
 * garbage, negative, huge (overflowing or above its maximum) and empty
 * values, one at a time and then all at once. Each must give exit 0 and
 * exactly one stderr line, naming the variable and saying which default is
 * used (or that it is left unset); all at once, one line per variable. The
 * defaults must then hold where they can be seen from outside: no stats
 * report, no profile dump in the child's working directory (a fresh
 * temporary directory), and no heap limit (the child allocates 3 x 16 MiB).
 * The variables are cross-checked against the option table in
 * src/config.rs: a new option without bad values here fails the test.
 *
 * Each case runs this program again (posix_spawn of /proc/self/exe with
 * argument "child", so LD_PRELOAD is inherited) with one variable set and
 * every other MEMX_* variable removed, captures the child's stderr through
 * a pipe, and checks the child exited 0. The child allocates from several
 * threads at once, so a configuration read lazily and racily would warn
 * more than once.
 */
#include "check.h"
#include <dirent.h>
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

/* No heap limit unless one was set right: 48 MiB at once. */
static void child_big(void)
{
    void *b[3];
    for (int i = 0; i < 3; i++) {
        b[i] = malloc(16 * MiB);
        if (!b[i])
            _exit(5);
        memset(b[i], 7, 16 * MiB);
    }
    for (int i = 0; i < 3; i++)
        free(b[i]);
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
    child_big();
    return 0; /* a normal exit, so exit-time reports run */
}

/* Runs the child with the extra variable `assignment` ("NAME=value", or
 * NULL for none); returns its stderr (static buffer) and stores the wait
 * status. */
static char workdir[256]; /* the child's working directory, kept empty */
static char self_exe[4096];

static const char *run_children(const char *const *assignments, int count, int *status);

static const char *run_child(const char *assignment, int *status)
{
    return run_children(&assignment, assignment ? 1 : 0, status);
}

static const char *run_children(const char *const *assignments, int count, int *status)
{
    static char out[1 << 16];
    char *envp[512];
    int n = 0;
    for (char **e = environ; *e && n < 400; e++)
        if (strncmp(*e, "MEMX_", 5) != 0)
            envp[n++] = *e;
    for (int i = 0; i < count && n < 500; i++)
        envp[n++] = (char *)assignments[i];
    envp[n] = NULL;

    int fds[2];
    CHECK(pipe(fds) == 0, "pipe failed");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    if (workdir[0])
        posix_spawn_file_actions_addchdir_np(&fa, workdir);
    char *argv[] = {(char *)"memx_config", (char *)"child", NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, self_exe, &fa, NULL, argv, envp);
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

/* Every variable of the option table (src/config.rs). */
static const char *const vars[] = {
    "MEMX_RELEASE_RATE", "MEMX_THREAD_CACHE_BYTES", "MEMX_CPU_CACHE_BYTES",
    "MEMX_STATS_AT_EXIT", "MEMX_HEAP_LIMIT", "MEMX_PROFILE", "MEMX_PROFILE_SAMPLE", "MEMX_PROFILE_SIGNAL",
    "MEMX_PROFILE_ALLOC_INTERVAL", "MEMX_PROFILE_INUSE_INTERVAL",
    "MEMX_PROFILE_TIME_INTERVAL", "MEMX_PROFILE_AT_EXIT", "MEMX_PROFILE_SIGTERM",
    "MEMX_PROFILE_SEED", "MEMX_PROFILE_NATIVE", "MEMX_STATS_INTERVAL", "MEMX_CHECK",
    "MEMX_GUARD_SAMPLE", "MEMX_GUARD_RATE", "MEMX_GUARD_FROM",
};

#define HUGE_NUM "99999999999999999999999"
#define LONG_PATH                                                                              \
    "/tmp/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx" \
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"

/* Garbage, negative, huge and empty values for each: the first listed for
 * a variable is also used in the all-at-once case. */
static const char *const bad[] = {
    "MEMX_RELEASE_RATE=abc", "MEMX_RELEASE_RATE=-5", "MEMX_RELEASE_RATE=",
    "MEMX_RELEASE_RATE=" HUGE_NUM, "MEMX_RELEASE_RATE=1048577", "MEMX_RELEASE_RATE=64MiB",
    "MEMX_THREAD_CACHE_BYTES=12Q", "MEMX_THREAD_CACHE_BYTES=-1", "MEMX_THREAD_CACHE_BYTES=",
    "MEMX_THREAD_CACHE_BYTES=" HUGE_NUM, "MEMX_THREAD_CACHE_BYTES=2T",
    "MEMX_THREAD_CACHE_BYTES=1.5M", "MEMX_THREAD_CACHE_BYTES= 4M",
    "MEMX_CPU_CACHE_BYTES=big", "MEMX_CPU_CACHE_BYTES=-1", "MEMX_CPU_CACHE_BYTES=",
    "MEMX_CPU_CACHE_BYTES=2G",
    "MEMX_STATS_AT_EXIT=maybe", "MEMX_STATS_AT_EXIT=-1", "MEMX_STATS_AT_EXIT=",
    "MEMX_STATS_AT_EXIT=" HUGE_NUM, "MEMX_STATS_AT_EXIT=2",
    "MEMX_HEAP_LIMIT=lots", "MEMX_HEAP_LIMIT=-1", "MEMX_HEAP_LIMIT=",
    "MEMX_HEAP_LIMIT=" HUGE_NUM, "MEMX_HEAP_LIMIT=2048T", "MEMX_HEAP_LIMIT=1M1",
    "MEMX_HEAP_LIMIT=16Q",
    "MEMX_PROFILE=", "MEMX_PROFILE=" LONG_PATH,
    "MEMX_PROFILE_SAMPLE=often", "MEMX_PROFILE_SAMPLE=-512K", "MEMX_PROFILE_SAMPLE=",
    "MEMX_PROFILE_SAMPLE=" HUGE_NUM, "MEMX_PROFILE_SAMPLE=0",
    "MEMX_PROFILE_SIGNAL=SIGNOPE", "MEMX_PROFILE_SIGNAL=-1", "MEMX_PROFILE_SIGNAL=",
    "MEMX_PROFILE_SIGNAL=" HUGE_NUM, "MEMX_PROFILE_SIGNAL=65", "MEMX_PROFILE_SIGNAL=SIGKILL",
    "MEMX_PROFILE_ALLOC_INTERVAL=x", "MEMX_PROFILE_ALLOC_INTERVAL=-1",
    "MEMX_PROFILE_ALLOC_INTERVAL=", "MEMX_PROFILE_ALLOC_INTERVAL=" HUGE_NUM,
    "MEMX_PROFILE_INUSE_INTERVAL=x", "MEMX_PROFILE_INUSE_INTERVAL=-1",
    "MEMX_PROFILE_INUSE_INTERVAL=", "MEMX_PROFILE_INUSE_INTERVAL=" HUGE_NUM,
    "MEMX_PROFILE_TIME_INTERVAL=soon", "MEMX_PROFILE_TIME_INTERVAL=-1",
    "MEMX_PROFILE_TIME_INTERVAL=", "MEMX_PROFILE_TIME_INTERVAL=" HUGE_NUM,
    "MEMX_PROFILE_TIME_INTERVAL=10s",
    "MEMX_PROFILE_AT_EXIT=sometimes", "MEMX_PROFILE_AT_EXIT=-1", "MEMX_PROFILE_AT_EXIT=",
    "MEMX_PROFILE_AT_EXIT=" HUGE_NUM,
    "MEMX_PROFILE_SIGTERM=maybe", "MEMX_PROFILE_SIGTERM=2", "MEMX_PROFILE_SIGTERM=",
    "MEMX_PROFILE_SEED=random", "MEMX_PROFILE_SEED=-7", "MEMX_PROFILE_SEED=",
    "MEMX_PROFILE_SEED=" HUGE_NUM, "MEMX_PROFILE_SEED=0x10",
    "MEMX_PROFILE_NATIVE=all", "MEMX_PROFILE_NATIVE=2", "MEMX_PROFILE_NATIVE=",
    "MEMX_STATS_INTERVAL=often", "MEMX_STATS_INTERVAL=-100", "MEMX_STATS_INTERVAL=",
    "MEMX_STATS_INTERVAL=" HUGE_NUM, "MEMX_STATS_INTERVAL=4294967297",
    "MEMX_STATS_INTERVAL=100ms",
    "MEMX_CHECK=maybe", "MEMX_CHECK=-1", "MEMX_CHECK=", "MEMX_CHECK=" HUGE_NUM, "MEMX_CHECK=2",
    "MEMX_GUARD_SAMPLE=rarely", "MEMX_GUARD_SAMPLE=-1", "MEMX_GUARD_SAMPLE=",
    "MEMX_GUARD_SAMPLE=" HUGE_NUM, "MEMX_GUARD_SAMPLE=2048G",
    "MEMX_GUARD_RATE=often", "MEMX_GUARD_RATE=-1", "MEMX_GUARD_RATE=", "MEMX_GUARD_RATE=1000001",
    "MEMX_GUARD_RATE=" HUGE_NUM, "MEMX_GUARD_RATE=20/s",
    "MEMX_GUARD_FROM=soon", "MEMX_GUARD_FROM=-1", "MEMX_GUARD_FROM=",
    "MEMX_GUARD_FROM=" HUGE_NUM, "MEMX_GUARD_FROM=2048G",
};

/* The option table in src/config.rs must not have grown past `vars`: every
 * `name: "MEMX_..."` there needs its bad values here. */
static void expect_table_covered(void)
{
    const char *bin = getenv("CDYLIB_TESTS_BIN");
    char path[4096];
    snprintf(path, sizeof path, "%s/../../src/config.rs", bin ? bin : ".");
    FILE *f = fopen(path, "r");
    if (!f) {
        say("note: %s not found; the option table was not cross-checked\n", path);
        return;
    }
    char line[1024];
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        char *q = strstr(line, "name: \"MEMX_");
        if (!q)
            continue;
        q += 7;
        char *end = strchr(q, '"');
        CHECK(end != NULL, "odd line in %s: %s", path, line);
        *end = 0;
        int known = 0;
        for (size_t v = 0; v < sizeof vars / sizeof vars[0]; v++)
            known |= strcmp(vars[v], q) == 0;
        CHECK(known, "%s is in the option table (src/config.rs) but memx_config.c does not "
              "test it: add it to vars[] and bad[]", q);
        found++;
    }
    fclose(f);
    CHECK(found == (int)(sizeof vars / sizeof vars[0]),
          "src/config.rs has %d options, memx_config.c lists %zu", found,
          sizeof vars / sizeof vars[0]);
}

/* stderr is exactly one line, from memx, naming the variable and the
 * default it falls back to. */
static void expect_one_line(const char *assignment, const char *name, const char *err)
{
    size_t len = strlen(err);
    int lines = count_lines_with(err, "");
    CHECK(len > 0 && err[len - 1] == '\n' && strchr(err, '\n') == err + len - 1,
          "child with %s: expected exactly one stderr line, got %d:\n%s", assignment, lines,
          err);
    CHECK(strncmp(err, "memx: ", 6) == 0 && strstr(err, name) != NULL,
          "child with %s: the line does not name %s:\n%s", assignment, name, err);
    CHECK(strstr(err, "using the default") != NULL || strstr(err, "left unset") != NULL,
          "child with %s: the line does not say what is used instead:\n%s", assignment, err);
}

/* The child's working directory must still be empty (no profile dump). */
static void expect_empty_workdir(const char *what)
{
    DIR *d = opendir(workdir);
    CHECK(d != NULL, "opendir(%s) failed", workdir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        CHECK(strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0,
              "with %s the child wrote %s into its working directory %s", what, e->d_name,
              workdir);
    closedir(d);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "child") == 0)
        return child_main();

    int st;
    const char *err;
    ssize_t len = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    CHECK(len > 0, "readlink(/proc/self/exe) failed");
    self_exe[len] = 0;
    snprintf(workdir, sizeof workdir, "/tmp/memx_config.XXXXXX");
    CHECK(mkdtemp(workdir) != NULL, "mkdtemp failed");
    expect_table_covered();

    /* No MEMX_* at all: silent. */
    err = run_child(NULL, &st);
    expect_clean_exit(NULL, st, err);
    CHECK(err[0] == 0, "child with no MEMX_* variables wrote to stderr:\n%s", err);

    /* Bad values: exactly one line, naming the variable, and the default. */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char name[64];
        const char *eq = strchr(bad[i], '=');
        snprintf(name, sizeof name, "%.*s", (int)(eq - bad[i]), bad[i]);
        err = run_child(bad[i], &st);
        expect_clean_exit(bad[i], st, err);
        expect_one_line(bad[i], name, err);
        expect_empty_workdir(bad[i]);
    }
    say("memx_config: %zu bad values, one line each\n", sizeof bad / sizeof bad[0]);

    /* All variables bad at once: one line each, nothing else. */
    const char *all[64];
    int nall = 0;
    for (size_t v = 0; v < sizeof vars / sizeof vars[0]; v++) {
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            if (strncmp(bad[i], vars[v], strlen(vars[v])) == 0 &&
                bad[i][strlen(vars[v])] == '=') {
                all[nall++] = bad[i];
                break;
            }
        }
    }
    CHECK(nall == (int)(sizeof vars / sizeof vars[0]), "a variable has no bad value listed");
    err = run_children(all, nall, &st);
    expect_clean_exit("every variable bad", st, err);
    CHECK(count_lines_with(err, "") == nall && count_lines_with(err, "memx: ignoring ") == nall,
          "every variable bad: %d lines, expected %d from memx:\n%s", count_lines_with(err, ""),
          nall, err);
    for (int i = 0; i < nall; i++) {
        char name[64];
        snprintf(name, sizeof name, "ignoring %.*s=", (int)(strchr(all[i], '=') - all[i]),
                 all[i]);
        CHECK(count_lines_with(err, name) == 1, "every variable bad: no single line for %s:\n%s",
              name, err);
    }
    expect_empty_workdir("every variable bad");

    /* Valid values: silent. */
    static const char *const good[] = {
        "MEMX_THREAD_CACHE_BYTES=4M", "MEMX_RELEASE_RATE=0", "MEMX_RELEASE_RATE=1048576",
        "MEMX_STATS_AT_EXIT=0", "MEMX_STATS_AT_EXIT=off", "MEMX_HEAP_LIMIT=2G",
        "MEMX_HEAP_LIMIT=0", "MEMX_HEAP_LIMIT=1073741824", "MEMX_PROFILE_SAMPLE=1M",
        "MEMX_PROFILE_SIGNAL=USR1", "MEMX_PROFILE_SIGNAL=0", "MEMX_PROFILE_ALLOC_INTERVAL=1G",
        "MEMX_PROFILE_INUSE_INTERVAL=100M", "MEMX_PROFILE_TIME_INTERVAL=0",
        "MEMX_PROFILE_AT_EXIT=no", "MEMX_PROFILE_SIGTERM=0", "MEMX_PROFILE_SEED=42",
        "MEMX_PROFILE_SEED=0", "MEMX_PROFILE_NATIVE=1", "MEMX_PROFILE_NATIVE=0",
        "MEMX_STATS_INTERVAL=0", "MEMX_CHECK=0", "MEMX_CHECK=1",
        "MEMX_GUARD_SAMPLE=0", "MEMX_GUARD_SAMPLE=1", "MEMX_GUARD_SAMPLE=64M",
        "MEMX_GUARD_RATE=0", "MEMX_GUARD_RATE=1", "MEMX_GUARD_RATE=1000000",
        "MEMX_GUARD_FROM=0", "MEMX_GUARD_FROM=64M",
    };
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
    rmdir(workdir);
    return 0;
}
