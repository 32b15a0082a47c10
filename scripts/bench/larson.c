/* larson: server-like workload (after Larson & Krishnan's benchmark).
 *
 *   larson THREADS [SCALE]
 *
 * Each thread owns a pool of 2,000 live objects (32 B - 1 KiB). Each step
 * replaces a random pool entry with a new object of random size; one freed
 * object in eight is instead handed to another (random) thread, which frees
 * it when it next drains its inbox (every 256 steps). Exercises cross-thread
 * frees and per-thread caches under contention. A thread that has done its
 * steps keeps draining its inbox until every thread is done, as a server
 * keeps serving: otherwise objects pile up in the inboxes of early finishers
 * and the peak RSS measures scheduling luck, not the allocator.
 */
#include "common.h"

enum { POOL = 2000 };

static int nthreads;
static uint64_t steps_per_thread;
static inbox_t *inboxes;
static atomic_int running;

typedef struct { int id; uint64_t remote, drained; } targ_t;

static void *worker(void *arg) {
    targ_t *a = arg;
    rng_t r;
    rng_seed(&r, 1000 + (uint64_t)a->id);
    void **pool = calloc(POOL, sizeof(void *));
    size_t *sizes = calloc(POOL, sizeof(size_t));
    for (uint64_t i = 0; i < steps_per_thread; i++) {
        size_t k = rng_below(&r, POOL);
        void *p = pool[k];
        if (p) {
            obj_check(p, sizes[k]);
            if (nthreads > 1 && (rng_next(&r) & 7) == 0) {
                int to = (a->id + 1 + (int)rng_below(&r, (uint64_t)nthreads - 1)) % nthreads;
                inbox_push(&inboxes[to], p);
                a->remote++;
            } else {
                free(p);
            }
        }
        size_t sz = rng_small_size(&r, 32);
        p = xmalloc(sz);
        obj_init(p, sz);
        pool[k] = p;
        sizes[k] = sz;
        if ((i & 255) == 255) a->drained += inbox_drain(&inboxes[a->id]);
    }
    for (size_t k = 0; k < POOL; k++)
        if (pool[k]) {
            obj_check(pool[k], sizes[k]);
            free(pool[k]);
        }
    free(pool);
    free(sizes);
    atomic_fetch_sub(&running, 1);
    while (atomic_load(&running) > 0) {
        a->drained += inbox_drain(&inboxes[a->id]);
        sched_yield();
    }
    a->drained += inbox_drain(&inboxes[a->id]);
    return NULL;
}

int main(int argc, char **argv) {
    bench_name = "larson";
    nthreads = arg_int(argc, argv, 1, 4);
    double scale = arg_double(argc, argv, 2, 1.0);
    /* total work is fixed (independent of the thread count) */
    steps_per_thread = (uint64_t)(24e6 * scale / nthreads);
    inboxes = calloc((size_t)nthreads, sizeof(inbox_t));
    pthread_t *th = xmalloc(sizeof(pthread_t) * (size_t)nthreads);
    targ_t *args = calloc((size_t)nthreads, sizeof(targ_t));
    atomic_store(&running, nthreads);
    for (int i = 0; i < nthreads; i++) {
        args[i].id = i;
        if (pthread_create(&th[i], NULL, worker, &args[i])) die("pthread_create failed");
    }
    uint64_t remote = 0, drained = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        remote += args[i].remote;
        drained += args[i].drained;
    }
    for (int i = 0; i < nthreads; i++) drained += inbox_drain(&inboxes[i]);
    if (remote != drained) die("lost objects: %llu handed over, %llu freed",
                               (unsigned long long)remote, (unsigned long long)drained);
    printf("larson: ok threads=%d steps=%llu remote_frees=%llu\n", nthreads,
           (unsigned long long)(steps_per_thread * (uint64_t)nthreads), (unsigned long long)remote);
    free(inboxes);
    free(th);
    free(args);
    return 0;
}
