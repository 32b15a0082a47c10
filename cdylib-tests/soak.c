/*
 * soak: a long multi-threaded stress with random sizes and alignments,
 * cross-thread frees and realloc, thread storms and fork storms, with the
 * resident set sampled throughout and shown to stay bounded.
 *
 * SOAK_SECONDS (default 10, as a cdylib test in `make test`; `make soak`
 * runs scripts/soak.sh, minutes) bounds the run. All the time, WORKERS
 * threads each keep a ring of objects: every step allocates one (malloc,
 * calloc checked zero, posix_memalign, aligned_alloc or memalign with a
 * random alignment up to 64 KiB; sizes log-uniform 8 B .. 64 KiB, 1% up to
 * 2 MiB), and the object it replaces is verified and then freed, grown or
 * shrunk with realloc (the kept prefix re-verified), or posted to another
 * worker, which verifies it and frees or reallocs it. Every object carries a
 * pattern keyed on its own seed, checked in full up to 8 KiB and sampled
 * beyond, before every free and realloc.
 * Meanwhile the main thread cycles through storms:
 * - thread storm: 4 waves of 32 short-lived threads that churn, post some of
 *   their objects to the workers (freed after the thread is gone) and exit;
 * - fork storm: 16 forks while the workers run; each child checks one of the
 *   main thread's objects, churns for ~20 ms and exits 0 (a 10 s alarm
 *   catches a child deadlocked on a lock inherited from the parent);
 * - a quiet spell of 0.5 s.
 * A sampler thread reads /proc/self/statm every 50 ms. Bounded means: the
 * highest RSS of the last third of the run is at most 1.5 x the highest of
 * the first third + 32 MiB (the live set is bounded by construction, so
 * growth beyond that is a leak or unbounded fragmentation).
 * Prints the operations, threads, forks, peak RSS and the RSS per third; with
 * SOAK_TRACE=FILE also writes "seconds rss_bytes" samples there.
 */
#include "check.h"
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#define WORKERS 6
#define RING 256
#define INBOX 1024
#define STORM_THREADS 32
#define STORM_WAVES 4
#define FORKS 16
#define MAX_SAMPLES 200000
#define WHOLE 8192

struct obj {
    unsigned char *p;
    size_t n;
    uint64_t seed;
};

#include "inbox.h"

static struct inbox boxes[WORKERS];
static volatile int stop_workers, stop_sampler;
static long worker_ops[WORKERS];
static long storm_threads, forks_done, fork_failures;
static double t_start;

static struct { float t; size_t rss; } samples[MAX_SAMPLES];
static volatile int nsamples;

/* ------------------------------------------------------------ objects */

static inline unsigned char pat(uint64_t seed, size_t i)
{
    return (unsigned char)((seed >> ((i >> 4) & 31)) ^ (i * 13) ^ (i >> 11));
}

#define FOR_PATTERN(i, n, limit, body)                                                         \
    do {                                                                                       \
        size_t n_ = (n), lim_ = (limit) < n_ ? (limit) : n_;                                   \
        if (n_ <= WHOLE) {                                                                     \
            for (size_t i = 0; i < lim_; i++) { body; }                                        \
            break;                                                                             \
        }                                                                                      \
        size_t tail_ = n_ - 1024;                                                              \
        for (size_t i = 0; i < 1024 && i < lim_; i++) { body; }                                \
        for (size_t j_ = 1024; j_ < tail_ && j_ < lim_; j_ += 4096)                            \
            for (size_t i = j_; i < j_ + 16 && i < tail_ && i < lim_; i++) { body; }           \
        for (size_t i = tail_; i < lim_; i++) { body; }                                        \
    } while (0)

static void fill(const struct obj *o)
{
    FOR_PATTERN(i, o->n, o->n, o->p[i] = pat(o->seed, i));
}

static void verify(const struct obj *o, size_t limit, const char *where)
{
    FOR_PATTERN(i, o->n, limit,
                CHECK(o->p[i] == pat(o->seed, i),
                      "%s: object %p of %zu bytes: byte %zu changed (recycled while live, or "
                      "overlapping another object)", where, (void *)o->p, o->n, i));
}

static size_t pick_size(uint64_t *rng)
{
    if (rng_next(rng) % 100 == 0)
        return 64 * 1024 + (size_t)(rng_next(rng) % (2 * MiB - 64 * 1024));
    int bits = 3 + (int)(rng_next(rng) % 14); /* 8 B .. 64 KiB, log-uniform */
    size_t lo = (size_t)1 << bits;
    return lo + (size_t)(rng_next(rng) % lo);
}

static struct obj new_obj(uint64_t *rng)
{
    struct obj o;
    o.n = pick_size(rng);
    o.seed = rng_next(rng);
    size_t align = (size_t)16 << (rng_next(rng) % 13); /* 16 .. 64 KiB */
    switch (rng_next(rng) % 10) {
    case 0:
        o.p = calloc(1, o.n);
        CHECK(o.p != NULL, "calloc(1, %zu) returned NULL", o.n);
        FOR_PATTERN(i, o.n, o.n,
                    CHECK(o.p[i] == 0, "calloc(1, %zu) = %p: byte %zu is not zero", o.n,
                          (void *)o.p, i));
        align = 16;
        break;
    case 1: {
        void *p = NULL;
        int rc = posix_memalign(&p, align, o.n);
        CHECK(rc == 0, "posix_memalign(%zu, %zu) returned %d", align, o.n, rc);
        o.p = p;
        break;
    }
    case 2:
        o.n = (o.n + align - 1) & ~(align - 1);
        o.p = aligned_alloc(align, o.n);
        CHECK(o.p != NULL, "aligned_alloc(%zu, %zu) returned NULL", align, o.n);
        break;
    case 3:
        o.p = memalign(align, o.n);
        CHECK(o.p != NULL, "memalign(%zu, %zu) returned NULL", align, o.n);
        break;
    default:
        o.p = malloc(o.n);
        CHECK(o.p != NULL, "malloc(%zu) returned NULL", o.n);
        align = 16;
    }
    CHECK(is_aligned(o.p, align), "%p is not aligned to %zu", (void *)o.p, align);
    CHECK(malloc_usable_size(o.p) >= o.n, "usable size %zu < %zu", malloc_usable_size(o.p),
          o.n);
    fill(&o);
    return o;
}

/* Verify, then realloc (kept prefix verified, the object goes on) or free. */
static int consume(struct obj *o, uint64_t *rng, const char *where)
{
    verify(o, o->n, where);
    if (rng_next(rng) % 4 != 0) {
        free(o->p);
        o->p = NULL;
        return 0;
    }
    size_t m = pick_size(rng);
    unsigned char *q = realloc(o->p, m);
    CHECK(q != NULL, "realloc(%zu -> %zu) returned NULL", o->n, m);
    size_t keep = o->n < m ? o->n : m;
    o->p = q;
    /* The old pattern's bytes below `keep`, at their new address. */
    verify(o, keep, "the prefix kept by realloc");
    o->n = m;
    fill(o);
    return 1;
}

/* ------------------------------------------------------------ workers */

static void *worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    uint64_t rng = 0x9E3779B97F4A7C15ull * (uint64_t)(me + 1) ^ (uint64_t)getpid();
    struct obj ring[RING];
    memset(ring, 0, sizeof ring);
    long ops = 0;
    while (!stop_workers) {
        for (int k = 0; k < 64; k++, ops++) {
            int slot = (int)(rng_next(&rng) % RING);
            if (ring[slot].p) {
                uint64_t r = rng_next(&rng) % 8;
                if (r == 0) {
                    int to = (me + 1 + (int)(rng_next(&rng) % (WORKERS - 1))) % WORKERS;
                    if (inbox_post(&boxes[to], ring[slot])) {
                        ring[slot].p = NULL;
                        continue;
                    }
                }
                if (consume(&ring[slot], &rng, "worker ring"))
                    continue; /* reallocated: it stays */
            }
            ring[slot] = new_obj(&rng);
            struct obj in;
            if (inbox_take(&boxes[me], &in) && consume(&in, &rng, "worker inbox")) {
                verify(&in, in.n, "reallocated inbox object");
                free(in.p);
            }
        }
    }
    struct obj in;
    while (inbox_take(&boxes[me], &in))
        if (consume(&in, &rng, "worker inbox at end"))
            free(in.p);
    for (int s = 0; s < RING; s++)
        if (ring[s].p && consume(&ring[s], &rng, "worker ring at end"))
            free(ring[s].p);
    worker_ops[me] = ops;
    return NULL;
}

/* ------------------------------------------------------------ storms */

static void *storm_thread(void *arg)
{
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x2545F4914F6CDD1Dull + 7;
    struct obj ring[32];
    memset(ring, 0, sizeof ring);
    for (int i = 0; i < 1500; i++) {
        int slot = (int)(rng_next(&rng) % 32);
        if (ring[slot].p && consume(&ring[slot], &rng, "storm thread"))
            continue;
        ring[slot] = new_obj(&rng);
    }
    /* Some objects outlive this thread: a worker frees them. */
    for (int s = 0; s < 32; s++) {
        if (!ring[s].p)
            continue;
        if (s % 3 == 0 && inbox_post(&boxes[(int)(rng_next(&rng) % WORKERS)], ring[s]))
            continue;
        verify(&ring[s], ring[s].n, "storm thread at exit");
        free(ring[s].p);
    }
    return NULL;
}

static void thread_storm(uint64_t *seq)
{
    for (int w = 0; w < STORM_WAVES; w++) {
        pthread_t t[STORM_THREADS];
        for (int i = 0; i < STORM_THREADS; i++) {
            int rc = pthread_create(&t[i], NULL, storm_thread, (void *)(uintptr_t)++*seq);
            CHECK(rc == 0, "pthread_create in a thread storm failed: %d", rc);
        }
        for (int i = 0; i < STORM_THREADS; i++)
            pthread_join(t[i], NULL);
        storm_threads += STORM_THREADS;
    }
}

static void fork_child(const struct obj *mine, int n)
{
    signal(SIGALRM, SIG_DFL);
    alarm(10);
    for (int i = 0; i < n; i++)
        verify(&mine[i], mine[i].n, "fork child: an object inherited from the parent");
    uint64_t rng = (uint64_t)getpid() * 0x9E3779B97F4A7C15ull;
    struct obj ring[16];
    memset(ring, 0, sizeof ring);
    double end = now_sec() + 0.02;
    while (now_sec() < end) {
        for (int i = 0; i < 64; i++) {
            int slot = (int)(rng_next(&rng) % 16);
            if (ring[slot].p && consume(&ring[slot], &rng, "fork child"))
                continue;
            ring[slot] = new_obj(&rng);
        }
    }
    for (int s = 0; s < 16; s++)
        if (ring[s].p && consume(&ring[s], &rng, "fork child at end"))
            free(ring[s].p);
    _exit(0);
}

static void fork_storm(const struct obj *mine, int n)
{
    for (int i = 0; i < FORKS; i++) {
        pid_t pid = fork();
        CHECK(pid >= 0, "fork failed: %s", strerror(errno));
        if (pid == 0)
            fork_child(mine, n);
        int st;
        CHECK(waitpid(pid, &st, 0) == pid, "waitpid failed");
        forks_done++;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fork_failures++;
            say("soak: fork child %d ended with %s %d%s\n", (int)pid,
                WIFSIGNALED(st) ? "signal" : "status",
                WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st),
                WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM ? " (deadlocked: its 10 s alarm)"
                                                           : "");
        }
    }
}

/* ------------------------------------------------------------ RSS */

static void *sampler(void *arg)
{
    (void)arg;
    while (!stop_sampler && nsamples < MAX_SAMPLES) {
        samples[nsamples].t = (float)(now_sec() - t_start);
        samples[nsamples].rss = rss_bytes();
        nsamples++;
        struct timespec ts = {0, 50 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static size_t max_rss_between(double from, double to)
{
    size_t m = 0;
    for (int i = 0; i < nsamples; i++)
        if (samples[i].t >= from && samples[i].t < to && samples[i].rss > m)
            m = samples[i].rss;
    return m;
}

int main(void)
{
    const char *env = getenv("SOAK_SECONDS");
    double secs = env && *env ? atof(env) : 10.0;
    t_start = now_sec();
    pthread_t s, w[WORKERS];
    CHECK(pthread_create(&s, NULL, sampler, NULL) == 0, "pthread_create failed");
    for (int i = 0; i < WORKERS; i++) {
        pthread_mutex_init(&boxes[i].mu, NULL);
        CHECK(pthread_create(&w[i], NULL, worker, (void *)(intptr_t)i) == 0,
              "pthread_create failed");
    }

    /* The main thread's own objects, checked by every fork child. */
    uint64_t rng = 12345;
    struct obj mine[8];
    for (int i = 0; i < 8; i++)
        mine[i] = new_obj(&rng);

    uint64_t seq = 0;
    int cycles = 0;
    while (now_sec() - t_start < secs) {
        thread_storm(&seq);
        fork_storm(mine, 8);
        struct timespec ts = {0, 500 * 1000 * 1000};
        nanosleep(&ts, NULL);
        cycles++;
    }
    stop_workers = 1;
    for (int i = 0; i < WORKERS; i++)
        pthread_join(w[i], NULL);
    /* Posted after their receiver had stopped. */
    for (int i = 0; i < WORKERS; i++) {
        struct obj in;
        while (inbox_take(&boxes[i], &in)) {
            verify(&in, in.n, "left in an inbox");
            free(in.p);
        }
    }
    for (int i = 0; i < 8; i++) {
        verify(&mine[i], mine[i].n, "main thread's object");
        free(mine[i].p);
    }
    stop_sampler = 1;
    pthread_join(s, NULL);

    double total = now_sec() - t_start;
    long ops = 0;
    for (int i = 0; i < WORKERS; i++)
        ops += worker_ops[i];
    size_t first = max_rss_between(0, total / 3), mid = max_rss_between(total / 3, 2 * total / 3),
           last = max_rss_between(2 * total / 3, total + 1), peak = max_rss_between(0, total + 1);
    say("soak: %.0f s, %d cycles: %ld worker ops, %ld storm threads, %ld forks (%ld failed); "
        "RSS max per third %zu / %zu / %zu MiB, peak %zu MiB (%d samples)\n",
        total, cycles, ops, storm_threads, forks_done, fork_failures, first >> 20, mid >> 20,
        last >> 20, peak >> 20, nsamples);
    const char *trace = getenv("SOAK_TRACE");
    if (trace && *trace) {
        FILE *f = fopen(trace, "w");
        CHECK(f != NULL, "cannot write %s", trace);
        for (int i = 0; i < nsamples; i++)
            fprintf(f, "%.2f %zu\n", samples[i].t, samples[i].rss);
        fclose(f);
    }
    CHECK(fork_failures == 0, "%ld of %ld fork children failed", fork_failures, forks_done);
    CHECK(cycles >= 1 && ops > 0, "nothing ran");
    CHECK(first > 0, "no RSS samples");
    CHECK(last <= first + first / 2 + 32 * MiB,
          "RSS keeps growing: %zu MiB in the last third vs %zu MiB in the first", last >> 20,
          first >> 20);
    return 0;
}
