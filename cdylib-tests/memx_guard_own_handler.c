/*
 * memx_guard_own_handler: with guarded sampling on (every allocation
 * guarded), a program's own SIGSEGV handler still gets its faults (memx
 * only):
 *  - installed before memx's (memx installs its handler when the guarded
 *    pool is first used, and chains to the one it finds): a wild access
 *    reaches the program's handler directly, and a guarded overflow is
 *    reported by memx and then handed to the program's handler too;
 *  - installed after memx's (it replaces memx's): every fault, guarded or
 *    not, reaches the program's handler, and memx reports nothing.
 * Each case runs in a fresh process (this program run again with a case
 * argument, so no allocation has happened before its handler goes in); the
 * handler says which fault it saw and exits 42.
 */
// ENV: MEMX_GUARD_SAMPLE=1 MEMX_GUARD_RATE=0
#include "check.h"
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>

static void *(*volatile malloc_v)(size_t) = malloc;
static volatile uintptr_t guarded_page;

static void own_handler(int sig, siginfo_t *info, void *ctx)
{
    (void)sig;
    (void)ctx;
    uintptr_t a = (uintptr_t)info->si_addr;
    const char *what = guarded_page && a >= guarded_page && a < guarded_page + 8192
                           ? "own handler: guarded fault\n"
                           : "own handler: wild fault\n";
    if (write(2, what, strlen(what)) < 0)
        _exit(3);
    _exit(42);
}

static void install_own(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = own_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGSEGV, &sa, NULL) == 0, "sigaction failed");
}

/* A guarded 64-byte object that ends at a page end (objects alternate). */
static char *end_aligned(void)
{
    for (int i = 0; i < 4; i++) {
        char *p = malloc_v(64);
        if (((uintptr_t)p + 64) % 4096 == 0)
            return p;
    }
    CHECK(0, "no end-aligned guarded object (is guarded sampling on?)");
    return NULL;
}

static int run_case(int which)
{
    int handler_first = which < 2;
    if (handler_first)
        install_own();
    char *p = end_aligned();
    guarded_page = (uintptr_t)p & ~(uintptr_t)4095;
    if (!handler_first)
        install_own();
    if (which % 2 == 0)
        *(volatile int *)(uintptr_t)(escape(NULL) ? 0 : 24) = 1; /* wild */
    else
        p[escape(NULL) ? 0 : 64] = 1; /* guarded overflow */
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1)
        return run_case(atoi(argv[1]));
    struct {
        const char *label, *want, *memx;
    } cases[] = {
        {"handler first, wild fault", "own handler: wild fault", NULL},
        {"handler first, guarded overflow", "own handler: guarded fault",
         "guarded allocation: overflow"},
        {"handler after memx's, wild fault", "own handler: wild fault", NULL},
        {"handler after memx's, guarded overflow", "own handler: guarded fault", NULL},
    };
    for (int i = 0; i < 4; i++) {
        int errp[2];
        CHECK(pipe(errp) == 0, "pipe failed");
        pid_t pid = fork();
        CHECK(pid >= 0, "fork failed");
        if (pid == 0) {
            dup2(errp[1], 2);
            close(errp[0]);
            char arg[4] = {(char)('0' + i), 0};
            execl("/proc/self/exe", argv[0], arg, (char *)NULL);
            _exit(4);
        }
        close(errp[1]);
        char err[8192] = {0};
        size_t n = 0;
        ssize_t r;
        while ((r = read(errp[0], err + n, sizeof err - 1 - n)) > 0)
            n += (size_t)r;
        close(errp[0]);
        int st;
        CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42,
              "%s: the program's handler did not run (status %#x); stderr: \"%s\"", cases[i].label,
              st, err);
        CHECK(strstr(err, cases[i].want) != NULL, "%s: stderr lacks '%s': \"%s\"", cases[i].label,
              cases[i].want, err);
        if (cases[i].memx)
            CHECK(strstr(err, cases[i].memx) != NULL, "%s: memx's report is missing: \"%s\"",
                  cases[i].label, err);
        else
            CHECK(strstr(err, "guarded allocation") == NULL,
                  "%s: memx reported a fault its handler should not have seen: \"%s\"",
                  cases[i].label, err);
        say("ok: %s\n", cases[i].label);
    }
    return 0;
}
