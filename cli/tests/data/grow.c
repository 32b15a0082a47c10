/* A program with known allocation sites for the memx CLI tests.
 *
 * Phase 1: site_one keeps 100 blocks of 1000 bytes; site_temp allocates and
 * frees 1000 blocks of 1024 bytes; then it asks for a dump (its dump signal)
 * and waits until the dump file exists.
 * Phase 2: site_two keeps 300 blocks of 2000 bytes and site_one 50 more;
 * dump again. The at-exit dump follows.
 * Lines marked SITE_* are the malloc calls the reports must name. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Globals, so the compiler cannot drop the allocations. */
void *keep[1000];
int nkeep;
void *volatile sink;

__attribute__((noinline)) void site_one(int n) {
    for (int i = 0; i < n; i++) {
        keep[nkeep++] = malloc(1000); /* SITE_ONE */
    }
}

__attribute__((noinline)) void site_two(int n) {
    for (int i = 0; i < n; i++) {
        keep[nkeep++] = malloc(2000); /* SITE_TWO */
    }
}

__attribute__((noinline)) void site_temp(int n) {
    for (int i = 0; i < n; i++) {
        char *p = malloc(1024); /* SITE_TEMP */
        memset(p, 1, 1024);
        sink = p;
        free(p);
    }
}

/* Raise the dump signal and wait for <MEMX_PROFILE>.<pid>.<seq>.heap. */
static void dump_and_wait(int seq) {
    const char *prefix = getenv("MEMX_PROFILE");
    if (!prefix) {
        return;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s.%d.%04d.heap", prefix, (int)getpid(), seq);
    raise(SIGRTMIN + 10); /* memx's default dump signal */
    for (int i = 0; i < 60000 && access(path, F_OK) != 0; i++) {
        usleep(1000);
    }
    if (access(path, F_OK) != 0) {
        fprintf(stderr, "grow: no dump %s\n", path);
        exit(70);
    }
}

int main(void) {
    site_one(100);
    site_temp(1000);
    dump_and_wait(1);
    site_two(300);
    site_one(50);
    dump_and_wait(2);
    printf("grow: done\n");
    return 0;
}
