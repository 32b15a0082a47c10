/*
 * What a dump request costs the thread that asks (README, "When it dumps"):
 * fills a heap of MIB MiB, then raises the dump signal ten times; prints
 * how long raise() took (memx's handler returns once its writer exists)
 * and how long until each dump file appeared. Not a test: a measurement.
 * Usage (with LD_PRELOAD=libmemx.so and MEMX_PROFILE=PREFIX set):
 *   dump_cost MIB 'PREFIX.*.heap' SIGNAL
 */
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void *volatile sink;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static size_t count(const char *pat)
{
    glob_t g;
    size_t n = glob(pat, 0, NULL, &g) == 0 ? g.gl_pathc : 0;
    globfree(&g);
    return n;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    size_t mib = (size_t)atoi(argv[1]);
    const char *pat = argv[2];
    int sig = atoi(argv[3]);
    for (size_t i = 0; i < mib; i++) {
        char *p = malloc(1 << 20);
        memset(p, 1, 1 << 20);
        sink = p;
    }
    for (size_t i = 0; i < 2000 * mib / 64 + 2000; i++) {
        free(malloc(100 + i % 4000));
        sink = malloc(64);
    }
    double stall = 0, total = 0;
    const int n = 10;
    for (int k = 0; k < n; k++) {
        size_t before = count(pat);
        double t0 = now();
        raise(sig);
        double t1 = now();
        while (count(pat) <= before)
            usleep(200);
        stall += t1 - t0;
        total += now() - t0;
    }
    printf("heap %zu MiB: raise() returns after %.3f ms, dump file after %.2f ms (mean of %d)\n",
           mib, stall / n * 1e3, total / n * 1e3, n);
    return 0;
}
