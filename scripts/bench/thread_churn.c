/* thread-churn: many short-lived threads, each allocating a little.
 *
 *   thread_churn THREADS [SCALE]
 *
 * Rounds of THREADS concurrently running threads are created and joined.
 * Each thread frees an object the main thread allocated for it, does 200
 * allocations (16 B - 1 KiB) with a few frees in between, frees most of
 * them and returns 4 objects that the main thread frees after the join.
 * Measures per-thread heap setup/teardown and the cost of thread exit.
 */
#include "common.h"

enum { PER_THREAD = 200, RETURNED = 4 };

typedef struct { int id; void *gift; void *ret[RETURNED]; } targ_t;

static void *worker(void *arg) {
    targ_t *a = arg;
    rng_t r;
    rng_seed(&r, (uint64_t)a->id * 7919 + 1);
    obj_check(a->gift, obj_size(a->gift));
    free(a->gift);
    void *objs[PER_THREAD];
    for (int i = 0; i < PER_THREAD; i++) {
        size_t sz = rng_small_size(&r, 32);
        objs[i] = xmalloc(sz);
        obj_init(objs[i], sz);
        if (i >= 8 && (i & 3) == 0) {
            int k = (int)rng_below(&r, (uint64_t)i);
            if (objs[k]) { obj_check(objs[k], obj_size(objs[k])); free(objs[k]); objs[k] = NULL; }
        }
    }
    int nret = 0;
    for (int i = PER_THREAD; i-- > 0;) {
        if (!objs[i]) continue;
        obj_check(objs[i], obj_size(objs[i]));
        if (nret < RETURNED) a->ret[nret++] = objs[i];
        else free(objs[i]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    bench_name = "thread-churn";
    int nthreads = arg_int(argc, argv, 1, 4);
    double scale = arg_double(argc, argv, 2, 1.0);
    /* total number of threads is fixed (independent of THREADS) */
    uint64_t rounds = (uint64_t)(40000 * scale / nthreads);
    if (rounds < 1) rounds = 1;
    pthread_t *th = xmalloc(sizeof(pthread_t) * (size_t)nthreads);
    targ_t *args = calloc((size_t)nthreads, sizeof(targ_t));
    rng_t r;
    rng_seed(&r, 3);
    uint64_t created = 0;
    for (uint64_t round = 0; round < rounds; round++) {
        for (int i = 0; i < nthreads; i++) {
            memset(&args[i], 0, sizeof args[i]);
            args[i].id = (int)created + i;
            size_t sz = rng_small_size(&r, 32);
            args[i].gift = xmalloc(sz);
            obj_init(args[i].gift, sz);
            if (pthread_create(&th[i], NULL, worker, &args[i])) die("pthread_create failed");
        }
        for (int i = 0; i < nthreads; i++) {
            pthread_join(th[i], NULL);
            for (int k = 0; k < RETURNED; k++)
                if (args[i].ret[k]) { obj_check(args[i].ret[k], obj_size(args[i].ret[k])); free(args[i].ret[k]); }
        }
        created += (uint64_t)nthreads;
    }
    printf("thread-churn: ok threads_created=%llu\n", (unsigned long long)created);
    free(th);
    free(args);
    return 0;
}
