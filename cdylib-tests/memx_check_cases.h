/*
 * memx_check_cases.h: the harness of the memx_check_* and memx_hardened
 * tests (a header, so scripts/cdylib-tests.sh does not build it as a test).
 *
 * Each case runs in a forked child with its stderr on a pipe and core dumps
 * off. The child sends the pointer it is about to misuse (formatted with
 * %p, or "-" when the report cannot name it) through a second pipe, then
 * misuses it. The parent requires the child to die of SIGABRT (or the
 * signal expect_signal names) with stderr
 * holding every expected piece of text and the pointer's hex value (leading
 * zeros and letter case tolerated).
 */
#ifndef MEMX_CHECK_CASES_H
#define MEMX_CHECK_CASES_H

#include "check.h"
#include <ctype.h>
#include <signal.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/wait.h>

/* Through volatile pointers so that GCC's -Wuse-after-free and friends do
 * not reject the deliberate misuse. */
static void (*volatile free_v)(void *) __attribute__((unused)) = free;
static void *(*volatile malloc_v)(size_t) __attribute__((unused)) = malloc;
static void *(*volatile realloc_v)(void *, size_t) __attribute__((unused)) = realloc;

static inline void send_ptr(int fd, const void *p)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%p", p);
    check_write_all(fd, buf, (size_t)n);
    close(fd);
}

/* Whether `text` contains the hex number `ptr` ("0x..." as %p prints it). */
static inline int contains_hex(const char *text, const char *ptr)
{
    const char *want = ptr;
    if (want[0] == '0' && (want[1] == 'x' || want[1] == 'X'))
        want += 2;
    while (*want == '0' && want[1])
        want++;
    size_t wl = strlen(want);
    for (const char *s = text; *s; s++) {
        if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
            continue;
        const char *d = s + 2;
        while (*d == '0' && isxdigit((unsigned char)d[1]))
            d++;
        if (strncasecmp(d, want, wl) == 0 && !isxdigit((unsigned char)d[wl]))
            return 1;
    }
    return 0;
}

/* The stderr of the last child of expect_abort. */
static char last_err[8192] __attribute__((unused));

/* Runs body(which, ptr_fd) in a child that must die of signal `sig`;
 * `want` is a NULL-terminated list of texts its stderr must contain. */
static inline void expect_signal(const char *name, void (*body)(int, int), int which, int sig,
                                 const char *const *want)
{
    int errp[2], ptrp[2];
    CHECK(pipe(errp) == 0 && pipe(ptrp) == 0, "pipe failed");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        alarm(20);
        close(errp[0]);
        close(ptrp[0]);
        dup2(errp[1], 2);
        close(errp[1]);
        body(which, ptrp[1]);
        say("child: the misuse went undetected\n");
        _exit(0);
    }
    close(errp[1]);
    close(ptrp[1]);
    char ptr[64] = {0}, err[8192] = {0};
    size_t n = 0;
    ssize_t r;
    while ((r = read(ptrp[0], ptr + n, sizeof ptr - 1 - n)) > 0)
        n += (size_t)r;
    close(ptrp[0]);
    n = 0;
    while ((r = read(errp[0], err + n, sizeof err - 1 - n)) > 0)
        n += (size_t)r;
    close(errp[0]);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == sig,
          "%s (%s): child %s %d instead of dying of signal %d; its stderr: \"%s\"", name, ptr,
          WIFSIGNALED(st) ? "died of signal" : "exited with status",
          WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), sig, err);
    for (const char *const *w = want; *w; w++)
        CHECK(strstr(err, *w) != NULL, "%s (%s): stderr lacks '%s': \"%s\"", name, ptr, *w, err);
    /* "-": the misuse is found where the object is no longer known. */
    CHECK(strcmp(ptr, "-") == 0 || (ptr[0] && contains_hex(err, ptr)),
          "%s: stderr does not show the pointer %s: \"%s\"", name, ptr, err);
    memcpy(last_err, err, sizeof last_err);
    say("ok: %s (%s): %s", name, ptr, err);
}

/* Runs body(which, ptr_fd) in a child that must abort (see expect_signal). */
static inline void expect_abort(const char *name, void (*body)(int, int), int which,
                                const char *const *want)
{
    expect_signal(name, body, which, SIGABRT, want);
}

#endif
