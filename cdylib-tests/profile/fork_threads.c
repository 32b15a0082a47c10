/*
 * profile fork_threads: samples survive their thread, and a fork child
 * profiles into files of its own pid.
 *
 *   thread_alloc  16 MiB in 8 KiB objects, from a thread that then exits
 *   parent_alloc  16 MiB in 8 KiB objects, before the fork
 *   child_alloc   32 MiB in 8 KiB objects, in the child only
 * The child asks for a dump with its signal and waits for the file (its
 * own helper thread must write it), then exits (at-exit dump). Prints the
 * child's pid.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
static void *volatile sink;

NOINLINE void *thread_alloc(void) { return malloc(8192); }
NOINLINE void *parent_alloc(void) { return malloc(8192); }
NOINLINE void *child_alloc(void) { return malloc(8192); }

static void grow(void *(*f)(void), long total)
{
    for (long i = 0; i < total / 8192; i++) {
        char *p = f();
        memset(p, 1, 64);
        sink = p;
    }
}

static void *thread_main(void *arg)
{
    (void)arg;
    grow(thread_alloc, 16L << 20);
    return NULL;
}

int main(void)
{
    pthread_t t;
    pthread_create(&t, NULL, thread_main, NULL);
    pthread_join(t, NULL);
    grow(parent_alloc, 16L << 20);
    pid_t pid = fork();
    if (pid == 0) {
        grow(child_alloc, 32L << 20);
        const char *prefix = getenv("MEMX_PROFILE");
        char path[512];
        snprintf(path, sizeof path, "%s.%d.0001.heap", prefix, (int)getpid());
        kill(getpid(), SIGRTMIN + 10);
        struct stat st;
        for (int i = 0; i < 500 && stat(path, &st) != 0; i++)
            usleep(10000);
        if (stat(path, &st) != 0) {
            fprintf(stderr, "child: no dump %s after its signal\n", path);
            exit(3);
        }
        exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    printf("%d\n", (int)pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 99;
}
