/*
 * Behaves as a server with a process title does (PostgreSQL, nginx, Redis
 * call it setproctitle): overwrites the argv/environ area, so that
 * /proc/PID/environ no longer holds MEMX_PROFILE, and installs a SIGUSR2
 * handler of its own. Allocates, says "ready <pid>", then waits in read().
 * With the argument "takeover" it also installs its own handler for
 * memx's dump signal (SIGRTMIN+10, or the number given after it), which
 * replaces memx's; with "reset" it sets that signal back to SIG_DFL.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;
static volatile sig_atomic_t got;
static void *keep[32];

static void on_signal(int sig) { (void)sig; got++; }

__attribute__((noinline)) static void proctitle_alloc(void)
{
    for (int i = 0; i < 32; i++) {
        keep[i] = malloc(512 << 10);
        memset(keep[i], 2, 512 << 10);
    }
}

int main(int argc, char **argv)
{
    proctitle_alloc();
    int dump_sig = SIGRTMIN + 10;
    const char *mode = argc > 1 ? strdup(argv[1]) : "";
    if (argc > 2)
        dump_sig = atoi(argv[2]);
    signal(SIGUSR2, on_signal);
    if (strcmp(mode, "takeover") == 0)
        signal(dump_sig, on_signal);
    else if (strcmp(mode, "reset") == 0)
        signal(dump_sig, SIG_DFL);
    /* The area from argv[0] to the end of the last environment string. */
    char *start = argv[0], *end = argv[0];
    for (int i = 0; i < argc; i++)
        end = argv[i] + strlen(argv[i]) + 1;
    for (char **e = environ; *e; e++)
        if (*e == end)
            end = *e + strlen(*e) + 1;
    char **copy = calloc(64, sizeof *copy);
    int n = 0;
    for (char **e = environ; *e && n < 63; e++)
        copy[n++] = strdup(*e);
    environ = copy;
    memset(start, 0, (size_t)(end - start));
    snprintf(start, (size_t)(end - start), "proctitle: accepting connections");
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[16];
    if (read(0, buf, sizeof buf) < 0)
        return 1;
    return 0;
}
