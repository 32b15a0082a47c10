/*
 * memx_guard_from: by default guarded sampling waits until memx has mapped
 * MEMX_GUARD_FROM (32 MiB) of heap, so that a small process does not pay
 * guarding's fixed cost in resident memory. With the default sample size
 * (a guard point per 16 MiB allocated on average) and no rate cap, 256 MiB
 * of 50-byte pairs in a 2 MiB heap get no guarded object (about 16 points
 * declined); once 40 MiB are held, the same work gets some (memx only;
 * the chance of none at 16 points is e^-16).
 *
 * A guarded object is told apart by its usable size: the pool keeps the
 * requested size (50 B), while a class object of 50 B has a larger slot.
 */
// ENV: MEMX_GUARD_RATE=0
#include "check.h"
#include <malloc.h>

#define SIZE 50
#define PAIRS ((256u << 20) / SIZE)
#define HOLD 640
#define HOLD_SIZE (64 << 10)

static void *(*volatile malloc_v)(size_t) = malloc;

/* PAIRS allocations of SIZE, each freed at once; how many were guarded. */
static int pairs(void)
{
    int guarded = 0;
    for (unsigned i = 0; i < PAIRS; i++) {
        char *p = malloc_v(SIZE);
        CHECK(p != NULL, "malloc(%d) #%u returned NULL", SIZE, i);
        p[0] = 1;
        guarded += malloc_usable_size(p) == SIZE;
        free(p);
    }
    return guarded;
}

int main(void)
{
    if (strcmp(getenv("MEMX_TEST_LIB") ? getenv("MEMX_TEST_LIB") : "", "libmemx.so") != 0)
        return 0;
    int small = pairs();
    CHECK(small == 0, "%d objects guarded with a 2 MiB heap (MEMX_GUARD_FROM is 32 MiB)", small);
    static char *held[HOLD];
    for (int i = 0; i < HOLD; i++) {
        held[i] = malloc_v(HOLD_SIZE);
        CHECK(held[i] != NULL, "malloc(64 KiB) #%d returned NULL", i);
        memset(held[i], 1, HOLD_SIZE);
    }
    int big = pairs();
    CHECK(big > 0, "no object guarded with 40 MiB held, after 256 MiB allocated");
    for (int i = 0; i < HOLD; i++)
        free(held[i]);
    return 0;
}
