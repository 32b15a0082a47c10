/*
 * profile signal: grows in two steps and waits on stdin between them, so
 * the driver can send the dump signal at each step (the dumps are written
 * by memx's helper thread while this thread blocks in read).
 *
 *   grow_first    16 MiB in 4 KiB objects, then "ready" and wait
 *   grow_second   48 MiB in 4 KiB objects, then "ready" and wait
 * A line "chain" on stdin first installs a program handler for the signal,
 * which must then run instead of memx's (memx never re-installs its own).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
static void *volatile sink;
static volatile sig_atomic_t program_handler_ran;

NOINLINE void *grow_first(void) { return malloc(4096); }
NOINLINE void *grow_second(void) { return malloc(4096); }

static void on_usr2(int sig) { (void)sig; program_handler_ran = 1; }

static void step(void *(*f)(void), long total)
{
    for (long i = 0; i < total / 4096; i++) {
        char *p = f();
        memset(p, 1, 64);
        sink = p;
    }
    printf("ready\n");
    fflush(stdout);
}

static void wait_line(char *buf, size_t n)
{
    if (!fgets(buf, (int)n, stdin))
        exit(0);
}

int main(void)
{
    char line[64];
    step(grow_first, 16L << 20);
    wait_line(line, sizeof line);
    step(grow_second, 48L << 20);
    wait_line(line, sizeof line);
    if (strncmp(line, "chain", 5) == 0) {
        signal(SIGRTMIN + 10, on_usr2);
        raise(SIGRTMIN + 10);
        printf(program_handler_ran ? "program handler ran\n" : "program handler did not run\n");
        fflush(stdout);
        wait_line(line, sizeof line);
    }
    return 0;
}
