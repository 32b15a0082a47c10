/*
 * threads_stress: many threads allocate, hand blocks to each other, verify
 * and free them.
 *
 * Allocator hazard: "remote frees". With per-thread caches, a block freed by
 * a thread other than its allocator must find its way back to the owning
 * heap without corrupting either thread's free lists; races there show up as
 * a block handed out twice (its pattern overwritten by another owner) or
 * memory recycled while still in use. Every block carries a byte pattern
 * derived from its address and size; it is verified by the receiving thread
 * before the free, and on every realloc.
 *
 * Setup: NTHREADS threads, each with a mutex-protected inbox. Each
 * iteration a thread allocates a block (8 B..128 KiB log-uniform, ~1% up to
 * 1 MiB, some via calloc/posix_memalign), then either keeps it in a small
 * local ring (freeing the evicted block), or posts it to a random thread's
 * inbox. It also drains its own inbox: verify, sometimes realloc (grow or
 * shrink, re-verify the kept prefix), then free. Runs for a fixed number of
 * iterations or ~2.5 s (CDYLIB_STRESS_SECONDS overrides; memx_edge_config
 * uses a shorter run), whichever comes first.
 */
#include "check.h"
#include <malloc.h>
#include <pthread.h>

#define NTHREADS 8
#define ITERS 150000
#define LOCAL 64
#define INBOX 4096
#define TIME_LIMIT 2.5 /* seconds, unless CDYLIB_STRESS_SECONDS is set */

struct obj {
    void *p;
    size_t n;
};

#include "inbox.h"

static struct inbox boxes[NTHREADS];
static double deadline;
static pthread_barrier_t start_barrier;

static void verify(const struct obj *o, const char *where)
{
    size_t bad = pattern_check(o->p, o->n);
    CHECK(bad == (size_t)-1, "%s: block %p of %zu bytes: byte %zu is wrong (block recycled or "
          "overlapping another one while live)", where, o->p, o->n, bad);
}

static size_t pick_size(uint64_t *rng)
{
    uint64_t r = rng_next(rng);
    if (r % 100 == 0)
        return 64 * 1024 + (size_t)(rng_next(rng) % (1024 * 1024 - 64 * 1024)); /* large */
    /* log-uniform 8 B .. 64 KiB */
    int bits = 3 + (int)(rng_next(rng) % 14);
    size_t lo = (size_t)1 << bits;
    return lo + (size_t)(rng_next(rng) % lo) - (lo > 8 ? 7 : 0);
}

static struct obj new_obj(uint64_t *rng)
{
    struct obj o;
    o.n = pick_size(rng);
    switch (rng_next(rng) % 16) {
    case 0:
        o.p = calloc(1, o.n);
        CHECK(o.p != NULL, "calloc(1, %zu) returned NULL", o.n);
        for (size_t i = 0; i < o.n; i += 61)
            CHECK(((unsigned char *)o.p)[i] == 0, "calloc(1, %zu)=%p: byte %zu not zero", o.n,
                  o.p, i);
        break;
    case 1: {
        size_t align = (size_t)64 << (rng_next(rng) % 7);
        int rc = posix_memalign(&o.p, align, o.n);
        CHECK(rc == 0, "posix_memalign(%zu, %zu) returned %d", align, o.n, rc);
        CHECK(is_aligned(o.p, align), "posix_memalign(%zu) = %p", align, o.p);
        break;
    }
    default:
        o.p = malloc(o.n);
        CHECK(o.p != NULL, "malloc(%zu) returned NULL", o.n);
    }
    CHECK(malloc_usable_size(o.p) >= o.n, "usable size %zu < %zu", malloc_usable_size(o.p), o.n);
    pattern_fill(o.p, o.n);
    return o;
}

/* Verify, maybe resize, verify again, free. */
static void consume(struct obj o, uint64_t *rng, const char *where)
{
    verify(&o, where);
    if (rng_next(rng) % 4 == 0) {
        size_t m = pick_size(rng);
        /* The kept prefix keeps the pattern of the OLD (address, size). */
        uint64_t s = pattern_seed(o.p, o.n);
        unsigned char *q = realloc(o.p, m);
        CHECK(q != NULL, "realloc(%zu -> %zu) returned NULL", o.n, m);
        size_t keep = o.n < m ? o.n : m;
        unsigned char ref[64];
        /* Rebuild the old pattern in chunks and compare. */
        for (size_t off = 0; off < keep; off += sizeof ref) {
            size_t len = keep - off < sizeof ref ? keep - off : sizeof ref;
            for (size_t k = 0; k < len; k++) {
                size_t i = off + k;
                if (i + 8 - (i & 7) <= o.n) {
                    uint64_t w = s + (i & ~(size_t)7);
                    ref[k] = ((unsigned char *)&w)[i & 7];
                } else {
                    ref[k] = (unsigned char)(s >> (i & 7));
                }
            }
            CHECK(memcmp(q + off, ref, len) == 0,
                  "%s: realloc %zu -> %zu moved the block to %p but bytes %zu..%zu differ", where,
                  o.n, m, (void *)q, off, off + len);
        }
        o.p = q;
        o.n = m;
        pattern_fill(o.p, o.n);
        verify(&o, "after realloc");
    }
    free(o.p);
}

static void *worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint64_t rng = 0x1234567ull * (uint64_t)(me + 1) + 99;
    struct obj local[LOCAL];
    memset(local, 0, sizeof local);
    pthread_barrier_wait(&start_barrier);

    long i;
    for (i = 0; i < ITERS; i++) {
        if ((i & 255) == 0 && now_sec() > deadline)
            break;
        struct obj o = new_obj(&rng);
        if (rng_next(&rng) % 2 == 0) {
            int slot = (int)(rng_next(&rng) % LOCAL);
            if (local[slot].p)
                consume(local[slot], &rng, "local");
            local[slot] = o;
        } else {
            int to = (int)(rng_next(&rng) % NTHREADS);
            if (to == me)
                to = (to + 1) % NTHREADS;
            if (!inbox_post(&boxes[to], o))
                consume(o, &rng, "inbox full");
        }
        struct obj in;
        for (int k = 0; k < 2 && inbox_take(&boxes[me], &in); k++)
            consume(in, &rng, "received");
    }
    for (int s = 0; s < LOCAL; s++)
        if (local[s].p)
            consume(local[s], &rng, "local at end");
    return (void *)(intptr_t)i;
}

int main(void)
{
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        pthread_mutex_init(&boxes[i].mu, NULL);
    pthread_barrier_init(&start_barrier, NULL, NTHREADS);
    double limit = TIME_LIMIT;
    const char *env = getenv("CDYLIB_STRESS_SECONDS");
    if (env && *env)
        limit = atof(env);
    deadline = now_sec() + limit;
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i) == 0, "pthread_create");
    long total = 0;
    for (int i = 0; i < NTHREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        total += (long)(intptr_t)r;
    }
    /* Drain what was posted after its owner stopped: freed by main, a
     * thread that allocated none of them. */
    uint64_t rng = 42;
    long leftover = 0;
    for (int i = 0; i < NTHREADS; i++) {
        struct obj o;
        while (inbox_take(&boxes[i], &o)) {
            consume(o, &rng, "drained by main");
            leftover++;
        }
    }
    say("threads_stress: %ld iterations in %d threads, %ld blocks drained by main\n", total,
        NTHREADS, leftover);
    CHECK(total >= NTHREADS * 256L, "only %ld iterations ran", total);
    return 0;
}
