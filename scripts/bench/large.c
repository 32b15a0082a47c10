/* large: churn of large objects, 64 KiB - 32 MiB (log-uniform).
 *
 *   large [SCALE]
 *
 * 12 slots; each step replaces a random slot: one new object in four comes
 * from calloc (checked to be zero), one step in eight reallocs an existing
 * object to a new size instead (prefix checked). Every page of a new object
 * is written, so page-fault and madvise/munmap policy matter, and peak RSS
 * shows how much memory the allocator keeps cached.
 */
#include "common.h"

enum { SLOTS = 12, PAGE = 4096 };
#define LO (64u * 1024)
#define HI (32u * 1024 * 1024)

typedef struct { unsigned char *p; size_t sz; unsigned char seed; } obj_t;

static void fill(obj_t *o, size_t from) {
    /* one byte per page plus the last byte */
    for (size_t i = from; i < o->sz; i += PAGE) o->p[i] = (unsigned char)(o->seed + (i >> 12));
    o->p[o->sz - 1] = o->seed ^ 0xa5;
}

static void check(const obj_t *o, size_t upto) {
    size_t n = upto < o->sz ? upto : o->sz;
    for (size_t i = 0; i < n; i += PAGE)
        if (i != o->sz - 1 && o->p[i] != (unsigned char)(o->seed + (i >> 12)))
            die("corruption detected: large object %p (%zu B) page %zu", (void *)o->p, o->sz, i / PAGE);
}

int main(int argc, char **argv) {
    bench_name = "large";
    double scale = arg_double(argc, argv, 1, 1.0);
    rng_t r;
    rng_seed(&r, 5);
    obj_t slot[SLOTS];
    memset(slot, 0, sizeof slot);
    uint64_t steps = (uint64_t)(6000 * scale), callocs = 0, reallocs = 0;
    for (uint64_t n = 0; n < steps; n++) {
        obj_t *o = &slot[rng_below(&r, SLOTS)];
        size_t sz = rng_logsize(&r, LO, HI);
        unsigned kind = (unsigned)rng_below(&r, 8);
        if (o->p && kind == 0) {
            /* realloc to a new size, keeping the content */
            check(o, o->sz);
            size_t keep = o->sz < sz ? o->sz : sz;
            unsigned char *np = realloc(o->p, sz);
            if (!np) die("realloc(%zu) returned NULL", sz);
            o->p = np;
            size_t old = o->sz;
            o->sz = sz;
            check(o, keep - (keep == old ? 1 : 0));
            fill(o, 0);
            reallocs++;
            continue;
        }
        if (o->p) {
            check(o, o->sz);
            if (o->p[o->sz - 1] != (unsigned char)(o->seed ^ 0xa5)) die("corruption detected: large object tail");
            free(o->p);
        }
        o->sz = sz;
        o->seed = (unsigned char)n;
        if (kind < 3) {
            o->p = calloc(1, sz);
            if (!o->p) die("calloc(%zu) returned NULL", sz);
            for (size_t i = 0; i < sz; i += PAGE / 2)
                if (o->p[i]) die("calloc(%zu) returned non-zero memory at offset %zu", sz, i);
            if (o->p[sz - 1]) die("calloc(%zu) returned non-zero memory at its end", sz);
            callocs++;
        } else {
            o->p = xmalloc(sz);
        }
        fill(o, 0);
    }
    for (int i = 0; i < SLOTS; i++)
        if (slot[i].p) {
            check(&slot[i], slot[i].sz);
            free(slot[i].p);
        }
    printf("large: ok steps=%llu callocs=%llu reallocs=%llu\n", (unsigned long long)steps,
           (unsigned long long)callocs, (unsigned long long)reallocs);
    return 0;
}
