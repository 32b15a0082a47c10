/* xmalloc: producer/consumer (after xmalloc-test).
 *
 *   xmalloc THREADS [SCALE]
 *
 * THREADS/2 (at least 1) producer/consumer pairs. The producer allocates
 * objects (24 B - 1 KiB), tags them and hands them over in batches of 256
 * through a bounded single-producer/single-consumer ring of 16 batches; the
 * consumer checks and frees them. Every object is freed by a thread other
 * than the one that allocated it. (Batching keeps the cost of the queue
 * itself, and its sensitivity to scheduling, small.)
 *
 * A side that finds the ring full (or empty) spins briefly, then sleeps on
 * a condition variable until the other side publishes a batch. Spinning
 * with sched_yield alone made the run time bimodal on 2 cores with 4
 * threads (1.2 s or 4-8 s, for every allocator, by how the scheduler
 * placed the pairs), which measured the scheduler rather than malloc.
 */
#include "common.h"

enum { RING = 16, BATCH = 256 };

typedef struct { void *p[BATCH]; unsigned n; int last; } batch_t;

typedef struct {
    _Atomic uint64_t head; char pad0[56];   /* written by the producer */
    _Atomic uint64_t tail; char pad1[56];   /* written by the consumer */
    batch_t slots[RING];
    uint64_t count;
    int id;
    uint64_t freed;
    pthread_mutex_t mu;                     /* guards nothing but the waits */
    pthread_cond_t moved;                   /* head or tail changed */
} pair_t;

/* Waits until the ring has room (producer) or a batch (consumer). */
static int ring_full(pair_t *q, uint64_t head) {
    return head - atomic_load_explicit(&q->tail, memory_order_acquire) >= RING;
}
static int ring_empty(pair_t *q, uint64_t tail) {
    return atomic_load_explicit(&q->head, memory_order_acquire) == tail;
}
static void wait_while(pair_t *q, int (*blocked)(pair_t *, uint64_t), uint64_t pos) {
    for (int i = 0; i < 256; i++) {
        if (!blocked(q, pos)) return;
        cpu_relax();
    }
    pthread_mutex_lock(&q->mu);
    while (blocked(q, pos)) pthread_cond_wait(&q->moved, &q->mu);
    pthread_mutex_unlock(&q->mu);
}
/* After publishing head or tail: wake the other side if it sleeps. Taking
 * the mutex orders this after the sleeper's last check. */
static void announce(pair_t *q) {
    pthread_mutex_lock(&q->mu);
    pthread_cond_signal(&q->moved);
    pthread_mutex_unlock(&q->mu);
}

static void *producer(void *arg) {
    pair_t *q = arg;
    rng_t r;
    rng_seed(&r, 7000 + (uint64_t)q->id);
    uint64_t head = 0, made = 0;
    for (;;) {
        wait_while(q, ring_full, head);
        batch_t *b = &q->slots[head % RING];
        b->n = 0;
        while (b->n < BATCH && made < q->count) {
            size_t sz = rng_small_size(&r, 24);
            void *p = xmalloc(sz);
            obj_init(p, sz);
            b->p[b->n++] = p;
            made++;
        }
        b->last = made == q->count;
        head++;
        atomic_store_explicit(&q->head, head, memory_order_release);
        announce(q);
        if (b->last) break;
    }
    return NULL;
}

static void *consumer(void *arg) {
    pair_t *q = arg;
    uint64_t tail = 0;
    for (;;) {
        wait_while(q, ring_empty, tail);
        batch_t *b = &q->slots[tail % RING];
        for (unsigned i = 0; i < b->n; i++) {
            obj_check(b->p[i], obj_size(b->p[i]));
            free(b->p[i]);
            q->freed++;
        }
        int last = b->last;
        tail++;
        atomic_store_explicit(&q->tail, tail, memory_order_release);
        announce(q);
        if (last) break;
    }
    return NULL;
}

int main(int argc, char **argv) {
    bench_name = "xmalloc";
    int threads = arg_int(argc, argv, 1, 2);
    double scale = arg_double(argc, argv, 2, 1.0);
    int pairs = threads / 2 < 1 ? 1 : threads / 2;
    uint64_t total = (uint64_t)(16e6 * scale);
    pair_t *q = NULL;
    if (posix_memalign((void **)&q, 64, sizeof(pair_t) * (size_t)pairs)) die("posix_memalign failed");
    memset(q, 0, sizeof(pair_t) * (size_t)pairs);
    pthread_t *th = xmalloc(sizeof(pthread_t) * 2 * (size_t)pairs);
    for (int i = 0; i < pairs; i++) {
        q[i].count = total / (uint64_t)pairs;
        q[i].id = i;
        pthread_mutex_init(&q[i].mu, NULL);
        pthread_cond_init(&q[i].moved, NULL);
        if (pthread_create(&th[2 * i], NULL, consumer, &q[i]) ||
            pthread_create(&th[2 * i + 1], NULL, producer, &q[i]))
            die("pthread_create failed");
    }
    uint64_t freed = 0, expect = 0;
    for (int i = 0; i < 2 * pairs; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < pairs; i++) { freed += q[i].freed; expect += q[i].count; }
    if (freed != expect) die("lost objects: %llu of %llu freed", (unsigned long long)freed,
                             (unsigned long long)expect);
    printf("xmalloc: ok pairs=%d objects=%llu\n", pairs, (unsigned long long)freed);
    free(q);
    free(th);
    return 0;
}
