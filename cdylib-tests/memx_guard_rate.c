/*
 * memx_guard_rate: MEMX_GUARD_RATE bounds guarded allocations per second,
 * whatever the allocation rate. With a guard point at every allocation
 * (MEMX_GUARD_SAMPLE=1) and at most 2 a second, a burst of allocations made
 * well within half a second gets exactly one guarded object (the first), and
 * after 0.6 s of quiet the next allocation is guarded again (memx only).
 *
 * A guarded object is told apart by its usable size: the pool keeps the
 * requested size (50 B), while a class object of 50 B has a larger slot.
 */
// ENV: MEMX_GUARD_SAMPLE=1 MEMX_GUARD_RATE=2
#include "check.h"
#include <malloc.h>
#include <time.h>

#define N 1000
#define SIZE 50

static void *(*volatile malloc_v)(size_t) = malloc;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Allocates N objects; returns how many are guarded, and where the first
 * guarded one came (-1 if none). */
static int burst(void **keep, int *first)
{
    int guarded = 0;
    *first = -1;
    for (int i = 0; i < N; i++) {
        keep[i] = malloc_v(SIZE);
        CHECK(keep[i] != NULL, "malloc(%d) #%d returned NULL", SIZE, i);
        if (malloc_usable_size(keep[i]) == SIZE) {
            if (guarded++ == 0)
                *first = i;
        }
    }
    return guarded;
}

int main(void)
{
    static void *keep[N];
    double t0 = now();
    int first, guarded = burst(keep, &first);
    double took = now() - t0;
    for (int i = 0; i < N; i++)
        free(keep[i]);
    if (took < 0.4) {
        CHECK(guarded == 1, "%d of %d allocations guarded in %.3f s at 2 a second", guarded, N,
              took);
        CHECK(first == 0, "the first guarded allocation was #%d, not the first", first);
    } else {
        /* A very slow machine: the limit still holds per half second. */
        CHECK(guarded >= 1 && guarded <= 1 + (int)(took * 2), "%d guarded in %.3f s", guarded,
              took);
    }
    struct timespec pause = {0, 600 * 1000 * 1000};
    nanosleep(&pause, NULL);
    guarded = burst(keep, &first);
    CHECK(guarded >= 1 && first == 0, "after 0.6 s the first allocation was not guarded "
          "(%d guarded, first #%d)", guarded, first);
    for (int i = 0; i < N; i++)
        free(keep[i]);
    return 0;
}
