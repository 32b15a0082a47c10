/* cache-scratch / cache-thrash: allocator-induced false sharing probes
 * (after the Hoard benchmarks of the same names).
 *
 *   cache_probe scratch|thrash THREADS [SCALE]
 *
 * Each thread repeatedly allocates a small (8 B) object, writes to it many
 * times and frees it. In "thrash" each thread uses only its own objects; an
 * allocator that hands neighbouring bytes of one cache line to different
 * threads makes the writes slow (active false sharing). In "scratch" the
 * main thread first allocates one object per thread and passes it to the
 * worker, which frees it and then allocates its own: an allocator that
 * reuses the freed (main thread's, adjacent) memory in the worker causes
 * passive false sharing. The interesting result is the time.
 */
#include "common.h"

enum { OBJ = 8 };

static uint64_t iterations, repetitions;

typedef struct { int id; void *initial; uint64_t sum; char pad[40]; } targ_t;

static void *worker(void *arg) {
    targ_t *a = arg;
    if (a->initial) {
        volatile unsigned char *o = a->initial;
        if (o[0] != (unsigned char)a->id) die("corruption detected: object from main thread changed");
        free(a->initial);
    }
    uint64_t sum = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        volatile unsigned char *o = xmalloc(OBJ);
        for (int k = 0; k < OBJ; k++) o[k] = 0;
        for (uint64_t j = 0; j < repetitions; j++)
            for (int k = 0; k < OBJ; k++) o[k]++;
        for (int k = 0; k < OBJ; k++) sum += o[k];
        free((void *)o);
    }
    a->sum = sum;
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || (strcmp(argv[1], "scratch") && strcmp(argv[1], "thrash"))) {
        fprintf(stderr, "usage: cache_probe scratch|thrash THREADS [SCALE]\n");
        return 2;
    }
    int scratch = !strcmp(argv[1], "scratch");
    bench_name = scratch ? "cache-scratch" : "cache-thrash";
    int nthreads = arg_int(argc, argv, 2, 4);
    double scale = arg_double(argc, argv, 3, 1.0);
    /* total work is fixed (independent of the thread count) */
    repetitions = 2000;
    iterations = (uint64_t)(100000 * scale / nthreads);
    if (iterations < 1) iterations = 1;
    pthread_t *th = xmalloc(sizeof(pthread_t) * (size_t)nthreads);
    targ_t *args = NULL;
    if (posix_memalign((void **)&args, 64, sizeof(targ_t) * (size_t)nthreads)) die("posix_memalign failed");
    memset(args, 0, sizeof(targ_t) * (size_t)nthreads);
    for (int i = 0; i < nthreads; i++) {
        args[i].id = i;
        if (scratch) {
            unsigned char *o = xmalloc(OBJ);
            memset(o, i, OBJ);
            args[i].initial = o;
        }
    }
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, worker, &args[i])) die("pthread_create failed");
    uint64_t sum = 0;
    for (int i = 0; i < nthreads; i++) {
        pthread_join(th[i], NULL);
        sum += args[i].sum;
    }
    uint64_t expect = (uint64_t)nthreads * iterations * OBJ * (repetitions & 255);
    if (sum != expect) die("wrong result %llu (expected %llu)", (unsigned long long)sum, (unsigned long long)expect);
    printf("%s: ok threads=%d iterations=%llu\n", bench_name, nthreads, (unsigned long long)iterations);
    free(th);
    free(args);
    return 0;
}
