/*
 * memx_invalid_free: memx detects invalid frees and aborts with a message
 * (memx only).
 *
 * glibc aborts with "free(): invalid pointer" on some of these and silently
 * corrupts its heap on others; memx checks every pointer handed to free/
 * realloc against its own mappings and, for anything it did not hand out,
 * prints "invalid pointer" with the pointer's value and aborts (SIGABRT),
 * instead of corrupting memory or crashing later somewhere unrelated.
 *
 * Each case runs in a forked child with its stderr on a pipe and core dumps
 * disabled (RLIMIT_CORE 0). Before the bad call the child sends the
 * pointer, formatted with %p, through a second pipe; the parent requires
 * the child to die of SIGABRT with stderr containing "invalid pointer" and
 * that hex value (leading zeros and letter case are tolerated).
 */
#include "check.h"
#include <ctype.h>
#include <strings.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>

static char global_buf[256];
/* Through a volatile pointer so that GCC's -Wuse-after-free and
 * -Wfree-nonheap-object do not reject the deliberate misuse. */
static void (*volatile free_v)(void *) = free;

enum {
    C_STACK,
    C_GLOBAL,
    C_SMALL_INTERIOR,
    C_LARGE_INTERIOR,
    C_LARGE_DOUBLE_FREE,
    C_REALLOC_STACK,
    NCASES
};
static const char *const names[NCASES] = {
    "free(stack address)",
    "free(pointer into a global)",
    "free((char*)malloc(100) + 8)",
    "free((char*)malloc(1 MiB) + 4096)",
    "double free of a 1 MiB block",
    "realloc(stack address, 100)",
};

static void send_ptr(int fd, void *p)
{
    char buf[64];
    int n = snprintf(buf, sizeof buf, "%p", p);
    check_write_all(fd, buf, (size_t)n);
    close(fd);
}

static void child(int which, int ptr_fd)
{
    char stack_buf[128];
    memset(stack_buf, 1, sizeof stack_buf);
    void *p = NULL;
    switch (which) {
    case C_STACK:
        p = escape(stack_buf + 16);
        send_ptr(ptr_fd, p);
        free(p);
        break;
    case C_GLOBAL:
        p = escape(global_buf + 32);
        send_ptr(ptr_fd, p);
        free(p);
        break;
    case C_SMALL_INTERIOR: {
        char *b = malloc(100);
        CHECK(b != NULL, "malloc failed");
        p = escape(b + 8);
        send_ptr(ptr_fd, p);
        free(p);
        break;
    }
    case C_LARGE_INTERIOR: {
        char *b = malloc(MiB);
        CHECK(b != NULL, "malloc failed");
        memset(b, 2, MiB);
        p = escape(b + 4096);
        send_ptr(ptr_fd, p);
        free(p);
        break;
    }
    case C_LARGE_DOUBLE_FREE: {
        p = escape(malloc(MiB));
        CHECK(p != NULL, "malloc failed");
        memset(p, 3, MiB);
        send_ptr(ptr_fd, p);
        free_v(p);
        free_v(p);
        break;
    }
    case C_REALLOC_STACK: {
        p = escape(stack_buf + 32);
        send_ptr(ptr_fd, p);
        void *q = realloc(p, 100);
        escape(q);
        break;
    }
    }
    say("child: the invalid call returned normally\n");
    _exit(0);
}

/* Whether `text` contains the hex number `ptr` ("0x..." as %p prints it),
 * allowing leading zeros after 0x and any letter case. */
static int contains_hex(const char *text, const char *ptr)
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

static void run_case(int which)
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
        child(which, ptrp[1]);
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

    const char *what = names[which];
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
          "%s (%s): child %s %d instead of dying of SIGABRT; its stderr: \"%s\"", what, ptr,
          WIFSIGNALED(st) ? "died of signal" : "exited with status",
          WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), err);
    CHECK(strstr(err, "invalid pointer") != NULL,
          "%s (%s): stderr lacks 'invalid pointer': \"%s\"", what, ptr, err);
    CHECK(ptr[0] && contains_hex(err, ptr), "%s: stderr does not show the pointer %s: \"%s\"",
          what, ptr, err);
    say("ok: %s (%s): %s", what, ptr, err);
}

int main(void)
{
    for (int c = 0; c < NCASES; c++)
        run_case(c);
    return 0;
}
