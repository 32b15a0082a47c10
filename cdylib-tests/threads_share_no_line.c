/*
 * threads_share_no_line: two threads that allocate in step are not handed
 * neighbouring objects that share a cache line.
 *
 * Allocator hazard: a thread cache that refills one object at a time (slow
 * start) from a span shared by all threads gives thread A object 0, thread
 * B object 1, A object 2, ... With objects of 80 B, A's and B's objects
 * then share every other 64-byte line, and each write to them moves the
 * line between the cores for as long as they live (false sharing). glibc's
 * bench-malloc-thread runs the same random sequence in every thread and ran
 * at half speed in about half the runs under memx before refills took
 * never-used objects in whole lines.
 *
 * The threads take turns, one malloc per turn (a spin on a shared counter),
 * for sizes whose objects straddle lines; all their objects are then sorted
 * by address and no two neighbours of different threads may share a line.
 * Only memx promises this (glibc's chunks are adjacent by design).
 */
#include "check.h"
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

enum { PER_THREAD = 192, LINE = 64 };

static const size_t sizes[] = {80, 96, 112, 208, 336, 1008};
static _Atomic unsigned turn;
static size_t cur_size;
static void *objs[2][PER_THREAD];

static void *taker(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg;
    for (unsigned k = 0; k < PER_THREAD; k++) {
        while (atomic_load(&turn) != 2 * k + me)
            sched_yield();
        objs[me][k] = malloc(cur_size);
        CHECK(objs[me][k] != NULL, "malloc(%zu)", cur_size);
        memset(objs[me][k], (int)me + 1, cur_size);
        atomic_fetch_add(&turn, 1);
    }
    return NULL;
}

struct owned {
    uintptr_t addr;
    unsigned owner;
};

static int by_addr(const void *a, const void *b)
{
    uintptr_t x = ((const struct owned *)a)->addr, y = ((const struct owned *)b)->addr;
    return x < y ? -1 : x > y;
}

/* Neighbours (by address) of different threads sharing a line. */
static unsigned shared_lines(size_t size)
{
    static struct owned all[2 * PER_THREAD];
    for (unsigned t = 0; t < 2; t++)
        for (unsigned k = 0; k < PER_THREAD; k++)
            all[t * PER_THREAD + k] = (struct owned){(uintptr_t)objs[t][k], t};
    qsort(all, 2 * PER_THREAD, sizeof all[0], by_addr);
    unsigned shared = 0;
    for (unsigned i = 1; i < 2 * PER_THREAD; i++) {
        const struct owned *lo = &all[i - 1], *hi = &all[i];
        if (lo->owner != hi->owner && (lo->addr + size - 1) / LINE == hi->addr / LINE)
            shared++;
    }
    return shared;
}

int main(void)
{
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        cur_size = sizes[s];
        atomic_store(&turn, 0);
        pthread_t th[2];
        for (unsigned t = 0; t < 2; t++)
            CHECK(pthread_create(&th[t], NULL, taker, (void *)(uintptr_t)t) == 0, "pthread_create");
        for (unsigned t = 0; t < 2; t++)
            pthread_join(th[t], NULL);
        unsigned shared = shared_lines(cur_size);
        say("threads_share_no_line: %zu B: %u line(s) shared between the threads\n", cur_size,
            shared);
        if (lib_is_memx())
            CHECK(shared == 0, "%zu B objects of two threads share %u cache line(s)", cur_size,
                  shared);
        for (unsigned t = 0; t < 2; t++)
            for (unsigned k = 0; k < PER_THREAD; k++) {
                const unsigned char *p = objs[t][k];
                CHECK(p[0] == t + 1 && p[cur_size - 1] == t + 1, "object overwritten");
                free(objs[t][k]);
            }
    }
    return 0;
}
