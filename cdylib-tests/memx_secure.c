/*
 * memx_secure: in a setuid program (AT_SECURE) memx ignores every MEMX_*
 * variable, as glibc ignores MALLOC_* there (memx only).
 *
 * The test copies itself into a fresh directory twice: a plain copy, and
 * one owned by nobody with the set-user-ID bit. Run by root, the second
 * starts with euid nobody and ruid root, so the kernel sets AT_SECURE. The
 * dynamic loader ignores LD_PRELOAD paths in that mode (that is glibc's own
 * protection), so each copy loads memx with dlopen instead, which runs its
 * initialisation (configuration) and, at exit, its destructor (the stats
 * report), and calls memx's malloc through dlsym. Each copy runs with
 *   MEMX_STATS_AT_EXIT=1 MEMX_HEAP_LIMIT=16M MEMX_RELEASE_RATE=junk
 *   MEMX_NO_SUCH_OPTION=1 MEMX_PROFILE=<a directory nobody may write>/prof
 * and asks memx's malloc for 32 MiB.
 * - Plain copy (AT_SECURE=0): the settings act. malloc(32 MiB) fails on the
 *   limit, the bad value and the unknown name are reported, and the stats
 *   report is printed at exit.
 * - Setuid copy (AT_SECURE=1): nothing acts. The 32 MiB succeed, stderr
 *   stays empty (no warning, no limit line, no report), and no profile
 *   file appears.
 * Prints "SKIP" and exits 0 when not run as root, or when the filesystem
 * ignores the set-user-ID bit (nosuid: the copy does not see AT_SECURE).
 */
#include "check.h"
#include <dirent.h>
#include <spawn.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <sys/wait.h>

extern char **environ;

static int child(const char *lib)
{
    int secure = getauxval(AT_SECURE) != 0;
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("dlopen failed: %s\n", dlerror());
        return 20;
    }
    void *(*m)(size_t) = (void *(*)(size_t))dlsym(h, "malloc");
    void (*f)(void *) = (void (*)(void *))dlsym(h, "free");
    if (!m || !f) {
        printf("dlsym failed\n");
        return 21;
    }
    void *p = m(32 * MiB);
    printf("secure=%d limited=%d\n", secure, p == NULL);
    f(p);
    return 0; /* exit normally: memx's destructor prints its report */
}

static void copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    CHECK(in >= 0 && out >= 0, "copying %s to %s: %s", from, to, strerror(errno));
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        CHECK(write(out, buf, (size_t)n) == n, "write failed");
    close(in);
    close(out);
}

static void read_all(int fd, char *out, size_t cap)
{
    size_t len = 0;
    ssize_t r;
    while ((r = read(fd, out + len, cap - 1 - len)) > 0 || (r < 0 && errno == EINTR))
        if (r > 0)
            len += (size_t)r;
    out[len] = 0;
    close(fd);
}

/* Runs `exe child LIB` with a clean environment plus the MEMX_* settings;
 * fills `out` and `err`, returns the exit status (-1 if it did not exit). */
static int run(const char *exe, const char *lib, const char *prefix, char *out, char *err,
               size_t cap)
{
    char prof[1024];
    snprintf(prof, sizeof prof, "MEMX_PROFILE=%s", prefix);
    char *envp[] = {
        (char *)"PATH=/usr/bin:/bin", (char *)"MEMX_STATS_AT_EXIT=1",
        (char *)"MEMX_HEAP_LIMIT=16M", (char *)"MEMX_RELEASE_RATE=junk",
        (char *)"MEMX_NO_SUCH_OPTION=1", prof, NULL,
    };
    int o[2], e[2];
    CHECK(pipe(o) == 0 && pipe(e) == 0, "pipe failed");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, o[1], 1);
    posix_spawn_file_actions_adddup2(&fa, e[1], 2);
    posix_spawn_file_actions_addclose(&fa, o[0]);
    posix_spawn_file_actions_addclose(&fa, e[0]);
    posix_spawn_file_actions_addclose(&fa, o[1]);
    posix_spawn_file_actions_addclose(&fa, e[1]);
    char *argv[] = {(char *)exe, (char *)"child", (char *)lib, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, exe, &fa, NULL, argv, envp);
    CHECK(rc == 0, "posix_spawn(%s) failed: %d", exe, rc);
    posix_spawn_file_actions_destroy(&fa);
    close(o[1]);
    close(e[1]);
    read_all(o[0], out, cap); /* the child's output is small: no deadlock */
    read_all(e[0], err, cap);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int dir_is_empty(const char *path)
{
    DIR *d = opendir(path);
    CHECK(d != NULL, "opendir(%s) failed", path);
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = 0;
    closedir(d);
    return empty;
}

static void cleanup(const char *dir, const char *plain, const char *suid, const char *profdir)
{
    unlink(plain);
    unlink(suid);
    DIR *d = opendir(profdir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", profdir, e->d_name);
        if (e->d_name[0] != '.')
            unlink(path);
    }
    if (d)
        closedir(d);
    rmdir(profdir);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc > 2 && strcmp(argv[1], "child") == 0)
        return child(argv[2]);
    const char *lib = getenv("LD_PRELOAD");
    CHECK(lib && lib[0] == '/', "run through scripts/cdylib-tests.sh with an absolute LIB");
    if (geteuid() != 0) {
        say("memx_secure: SKIP: not root (a setuid copy needs chown)\n");
        return 0;
    }

    char dir[] = "/tmp/memx_secure.XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp failed");
    CHECK(chmod(dir, 0755) == 0, "chmod failed");
    char plain[256], suid[256], profdir[256], prefix[300];
    snprintf(plain, sizeof plain, "%s/plain", dir);
    snprintf(suid, sizeof suid, "%s/setuid", dir);
    snprintf(profdir, sizeof profdir, "%s/prof", dir);
    snprintf(prefix, sizeof prefix, "%s/heap", profdir);
    CHECK(mkdir(profdir, 0777) == 0 && chmod(profdir, 0777) == 0, "mkdir failed");
    copy_file("/proc/self/exe", plain);
    copy_file("/proc/self/exe", suid);
    CHECK(chown(suid, 65534, 65534) == 0, "chown nobody failed: %s", strerror(errno));
    CHECK(chmod(suid, 04755) == 0, "chmod u+s failed");

    static char sout[1 << 16], serr[1 << 16], pout[1 << 16], perr[1 << 16];
    /* Both copies run first, then everything is removed (a setuid binary
     * must not outlive the test, even a failing one), then the checks. */
    int src = run(suid, lib, prefix, sout, serr, sizeof sout);
    int suid_wrote_nothing = dir_is_empty(profdir);
    int prc = run(plain, lib, prefix, pout, perr, sizeof pout);
    cleanup(dir, plain, suid, profdir);

    if (src == 0 && strstr(sout, "secure=0")) {
        say("memx_secure: SKIP: the set-user-ID bit is ignored here (nosuid?): %s", sout);
        return 0;
    }
    CHECK(src == 0, "setuid copy exited %d; stdout: %s\nstderr:\n%s", src, sout, serr);
    CHECK(strstr(sout, "secure=1 limited=0"), "setuid copy: MEMX_HEAP_LIMIT acted under "
          "AT_SECURE (expected 'secure=1 limited=0'): %s", sout);
    CHECK(serr[0] == 0, "setuid copy: memx wrote to stderr under AT_SECURE (MEMX_* must be "
          "ignored):\n%s", serr);
    CHECK(suid_wrote_nothing, "setuid copy: a profile file appeared in %s", profdir);

    /* Plain copy: the same settings act. */
    CHECK(prc == 0, "plain copy exited %d; stdout: %s\nstderr:\n%s", prc, pout, perr);
    CHECK(strstr(pout, "secure=0 limited=1"), "plain copy: expected 'secure=0 limited=1' "
          "(the heap limit acts): %s", pout);
    static const char *const want[] = {
        "ignoring MEMX_RELEASE_RATE=junk", "unknown variable MEMX_NO_SUCH_OPTION",
        "MEMX_HEAP_LIMIT reached", "mapped",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        CHECK(strstr(perr, want[i]), "plain copy: stderr lacks '%s':\n%s", want[i], perr);
    say("memx_secure: AT_SECURE=1 ignored every MEMX_* variable; without it they acted "
        "(%d bytes of stderr)\n", (int)strlen(perr));
    return 0;
}
