/*
 * profile accuracy: known amounts allocated from distinct, non-inlined
 * functions, all still live at exit (where the profile is dumped), except
 * what churn_4k frees at once. scripts/profile-tests.py compares the
 * unsampled dump with the truth below.
 *
 *   alloc_1k     64 MiB in 1 KiB objects          (malloc)
 *   alloc_256k   32 MiB in 256 KiB objects        (malloc, large path)
 *   leak_100     32 MiB in 100-byte objects       (malloc)
 *   calloc_2k    32 MiB in 2000-byte objects      (calloc)
 *   aligned_4k   32 MiB in 4 KiB objects, 4 KiB-aligned (posix_memalign)
 *   churn_4k    256 MiB in 4 KiB objects, each freed at once
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))
#define MiB (1024L * 1024)

static void *volatile sink;

NOINLINE void *alloc_1k(void) { return malloc(1024); }
NOINLINE void *alloc_256k(void) { return malloc(256 * 1024); }
NOINLINE void *leak_100(void) { return malloc(100); }
NOINLINE void *calloc_2k(void) { return calloc(1, 2000); }
NOINLINE void *aligned_4k(void)
{
    void *p = NULL;
    return posix_memalign(&p, 4096, 4096) == 0 ? p : NULL;
}
NOINLINE void churn_4k(void)
{
    void *p = malloc(4096);
    sink = p;
    free(p);
}

static void keep(void *(*f)(void), long total, long size)
{
    for (long i = 0; i < total / size; i++) {
        char *p = f();
        if (!p) {
            fprintf(stderr, "allocation failed\n");
            exit(1);
        }
        p[0] = 1;
        sink = p;
    }
}

int main(void)
{
    keep(alloc_1k, 64 * MiB, 1024);
    keep(alloc_256k, 32 * MiB, 256 * 1024);
    keep(leak_100, 32 * MiB, 100);
    keep(calloc_2k, 32 * MiB, 2000);
    keep(aligned_4k, 32 * MiB, 4096);
    for (long i = 0; i < 256 * MiB / 4096; i++)
        churn_4k();
    return 0;
}
