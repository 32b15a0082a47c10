/*
 * thread_storm: 20000 short-lived threads, in waves of 32, each allocating
 * and freeing a little; some blocks are handed back to the main thread and
 * freed there after the allocating thread has exited.
 *
 * Allocator hazards:
 * - thread caches (and per-thread heaps) must be released when a thread
 *   exits: otherwise every dead thread strands the blocks in its cache and
 *   memory grows linearly with the number of threads ever created (servers
 *   that spawn a thread per request). RSS (from /proc/self/statm) must stay
 *   bounded: < 200 MiB above the start, and not grow between the end of the
 *   first quarter of the storm and the end by more than a margin;
 * - blocks of a dead thread freed by another thread ("remote free to a dead
 *   heap") must be accepted and their memory reused;
 * - thread-exit cleanup racing with thread creation (the same thread
 *   descriptor and stack, hence the same TLS addresses, get reused by glibc
 *   for the next thread).
 */
#include "check.h"
#include <malloc.h>
#include <pthread.h>

#define TOTAL 20000
#define WAVE 32
#define PER_THREAD 200
#define HANDBACK 8
#define MAX_GROWTH (200 * MiB)
#define LATE_GROWTH (48 * MiB)

struct slot {
    int id;
    void *back[HANDBACK];
    size_t back_n[HANDBACK];
};

static void *worker(void *arg)
{
    struct slot *s = arg;
    uint64_t rng = 0x9E3779B97F4A7C15ull ^ (uint64_t)s->id * 7919;
    void *v[PER_THREAD];
    size_t n[PER_THREAD];
    for (int i = 0; i < PER_THREAD; i++) {
        n[i] = 16 + (size_t)(rng_next(&rng) % 2048);
        v[i] = malloc(n[i]);
        CHECK(v[i] != NULL, "thread %d: malloc(%zu) returned NULL", s->id, n[i]);
        pattern_fill(v[i], n[i] < 64 ? n[i] : 64);
    }
    /* A medium and a large block, and a realloc chain. */
    void *m = malloc(100000);
    CHECK(m != NULL, "thread %d: malloc(100000) returned NULL", s->id);
    memset(m, 1, 100000);
    void *r = NULL;
    for (size_t k = 1; k <= 8; k++) {
        r = realloc(r, k * 700);
        CHECK(r != NULL, "thread %d: realloc returned NULL", s->id);
        memset(r, (int)k, k * 700);
    }
    free(m);
    free(r);
    for (int i = 0; i < PER_THREAD; i++) {
        size_t bad = pattern_check(v[i], n[i] < 64 ? n[i] : 64);
        CHECK(bad == (size_t)-1, "thread %d: block %p (%zu bytes) byte %zu changed", s->id, v[i],
              n[i], bad);
        if (i < HANDBACK) {
            s->back[i] = v[i];
            s->back_n[i] = n[i];
        } else {
            free(v[i]);
        }
    }
    return NULL;
}

int main(void)
{
    static struct slot slots[WAVE];
    pthread_t t[WAVE];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 128 * 1024);

    double t0 = now_sec();
    size_t rss0 = 0, rss_q1 = 0, rss_peak = 0;
    int waves = TOTAL / WAVE;
    for (int w = 0; w < waves; w++) {
        for (int i = 0; i < WAVE; i++) {
            slots[i].id = w * WAVE + i;
            int rc = pthread_create(&t[i], &attr, worker, &slots[i]);
            CHECK(rc == 0, "pthread_create #%d failed: %d", w * WAVE + i, rc);
        }
        for (int i = 0; i < WAVE; i++)
            pthread_join(t[i], NULL);
        /* Free the handed-back blocks of threads that no longer exist. */
        for (int i = 0; i < WAVE; i++) {
            for (int k = 0; k < HANDBACK; k++) {
                size_t nb = slots[i].back_n[k] < 64 ? slots[i].back_n[k] : 64;
                size_t bad = pattern_check(slots[i].back[k], nb);
                CHECK(bad == (size_t)-1, "block %p handed back by dead thread %d: byte %zu "
                      "changed", slots[i].back[k], slots[i].id, bad);
                free(slots[i].back[k]);
            }
        }
        size_t rss = rss_bytes();
        if (rss > rss_peak)
            rss_peak = rss;
        if (w == 3)
            rss0 = rss; /* after warm-up: arenas, stacks and caches exist */
        if (w == waves / 4)
            rss_q1 = rss;
        if (rss0)
            CHECK(rss < rss0 + MAX_GROWTH, "after %d threads RSS is %zu MiB, %zu MiB above the "
                  "%zu MiB after warm-up: exited threads' memory is not reused",
                  (w + 1) * WAVE, rss / MiB, (rss - rss0) / MiB, rss0 / MiB);
    }
    size_t rss_end = rss_bytes();
    say("thread_storm: %d threads in %.2f s; RSS after warm-up %zu KiB, after 1/4 %zu KiB, end "
        "%zu KiB, peak %zu KiB\n",
        waves * WAVE, now_sec() - t0, rss0 / 1024, rss_q1 / 1024, rss_end / 1024,
        rss_peak / 1024);
    CHECK(rss_end < rss_q1 + LATE_GROWTH, "RSS grew by %zu KiB between the first quarter (%zu "
          "threads) and the end (%d threads): memory grows with the number of dead threads",
          (rss_end - rss_q1) / 1024, (size_t)(waves / 4 + 1) * WAVE, waves * WAVE);
    return 0;
}
