/* many-threads: a thread-per-request server on few CPUs (issue 14).
 *
 *   many_threads THREADS [SCALE]
 *
 * THREADS threads start together; each serves 200 x SCALE requests: a
 * burst of 128 objects of 16 B - 2 KiB (about 130 KiB, tagged and
 * checked), all freed, then a 0.5 ms wait (the request's I/O). With
 * hundreds of threads on two CPUs most threads are waiting at any moment:
 * an allocator whose caches are per thread holds memory for all of them,
 * or, bounded, sends every burst to its central lists.
 */
#include "common.h"

#include <unistd.h>

enum { BURST = 128, WAIT_US = 500 };

static int requests;
static pthread_barrier_t start;

static void *worker(void *arg) {
    rng_t r;
    rng_seed(&r, (uint64_t)(uintptr_t)arg * 7919 + 5);
    void *objs[BURST];
    pthread_barrier_wait(&start);
    for (int q = 0; q < requests; q++) {
        for (int i = 0; i < BURST; i++) {
            size_t sz = 24 + rng_below(&r, 2048 - 24 + 1);
            objs[i] = xmalloc(sz);
            obj_init(objs[i], sz);
        }
        for (int i = 0; i < BURST; i++) {
            obj_check(objs[i], obj_size(objs[i]));
            free(objs[i]);
        }
        usleep(WAIT_US);
    }
    return NULL;
}

int main(int argc, char **argv) {
    bench_name = "many-threads";
    int nthreads = arg_int(argc, argv, 1, 1024);
    double scale = arg_double(argc, argv, 2, 1.0);
    requests = (int)(200 * scale);
    if (requests < 1) requests = 1;
    pthread_t *th = xmalloc(sizeof(pthread_t) * (size_t)nthreads);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    /* 1024 threads of the default 8 MiB stacks would reserve 8 GiB. */
    pthread_attr_setstacksize(&attr, 256 << 10);
    if (pthread_barrier_init(&start, NULL, (unsigned)nthreads + 1)) die("pthread_barrier_init failed");
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], &attr, worker, (void *)(uintptr_t)i)) die("pthread_create failed");
    pthread_barrier_wait(&start);
    for (int i = 0; i < nthreads; i++) pthread_join(th[i], NULL);
    printf("many-threads: ok threads=%d requests=%d\n", nthreads, requests);
    free(th);
    return 0;
}
