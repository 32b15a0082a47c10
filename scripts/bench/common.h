/* Shared helpers for the memx benchmark workloads (scripts/bench, *.c).
 *
 * Every workload is deterministic (own PRNG, fixed seeds), tags the objects
 * it allocates and checks the tags before freeing, so a broken allocator is
 * reported as a failure ("corruption detected") instead of as a fast run.
 */
#ifndef MEMX_BENCH_COMMON_H
#define MEMX_BENCH_COMMON_H

#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <pthread.h>
#include <sched.h>

#define TAG_MAGIC 0x9E3779B97F4A7C15ULL

static const char *bench_name = "bench";

#define die(...)                                                        \
    do {                                                                \
        fprintf(stderr, "%s: ", bench_name);                            \
        fprintf(stderr, __VA_ARGS__);                                   \
        fputc('\n', stderr);                                            \
        fflush(stderr);                                                 \
        abort();                                                        \
    } while (0)

static inline void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) die("malloc(%zu) returned NULL", n);
    return p;
}

/* xorshift64* */
typedef struct { uint64_t s; } rng_t;
static inline void rng_seed(rng_t *r, uint64_t seed) {
    r->s = seed * 0x2545F4914F6CDD1DULL + 0x9E3779B97F4A7C15ULL;
    if (!r->s) r->s = 1;
}
static inline uint64_t rng_next(rng_t *r) {
    uint64_t x = r->s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}
static inline uint64_t rng_below(rng_t *r, uint64_t n) { return (rng_next(r) >> 11) % n; }
/* log-uniform integer in [lo, hi] */
static inline size_t rng_logsize(rng_t *r, size_t lo, size_t hi) {
    double u = (double)(rng_next(r) >> 11) / 9007199254740992.0;
    double v = (double)lo * __builtin_exp(u * __builtin_log((double)hi / (double)lo));
    size_t s = (size_t)v;
    if (s < lo) s = lo;
    if (s > hi) s = hi;
    return s;
}

/* Mixed small sizes, 8 B - 1 KiB, skewed towards small ones. */
static inline size_t rng_small_size(rng_t *r, size_t min) {
    uint64_t x = rng_next(r);
    unsigned c = (unsigned)(x % 100);
    size_t s;
    x >>= 8;
    if (c < 55) s = 8 + x % 57;          /* 8..64   */
    else if (c < 85) s = 65 + x % 192;   /* 65..256 */
    else s = 257 + x % 768;              /* 257..1024 */
    return s < min ? min : s;
}

/* Object tags: objects >= 24 B carry [size][addr^size*magic] in their first
 * 16 bytes, smaller ones an address tag in their first 8 bytes; objects
 * > 8 B also carry a size-derived byte at the end. obj_size() needs >= 24 B.
 * Objects handed across threads through an inbox need >= 32 B: the word at
 * offset 16 (not covered by the tags) is used as the intrusive list link. */
static inline void obj_init(void *p, size_t sz) {
    uint64_t *w = (uint64_t *)p;
    unsigned char *b = (unsigned char *)p;
    if (sz >= 24) {
        w[0] = sz;
        w[1] = (uint64_t)(uintptr_t)p ^ (sz * TAG_MAGIC);
    } else {
        w[0] = (uint64_t)(uintptr_t)p ^ TAG_MAGIC;
    }
    if (sz > 8) b[sz - 1] = (unsigned char)(sz ^ 0x5a);
}
static inline void obj_check(const void *p, size_t sz) {
    const uint64_t *w = (const uint64_t *)p;
    const unsigned char *b = (const unsigned char *)p;
    if (sz >= 24) {
        if (w[0] != sz || w[1] != ((uint64_t)(uintptr_t)p ^ (sz * TAG_MAGIC)))
            die("corruption detected: object %p size %zu has a bad header", p, sz);
    } else if (w[0] != ((uint64_t)(uintptr_t)p ^ TAG_MAGIC)) {
        die("corruption detected: object %p size %zu has a bad tag", p, sz);
    }
    if (sz > 8 && b[sz - 1] != (unsigned char)(sz ^ 0x5a))
        die("corruption detected: object %p size %zu has a bad tail byte", p, sz);
}
/* size of a tagged object of >= 24 B, read from the object itself */
static inline size_t obj_size(const void *p) { return (size_t)((const uint64_t *)p)[0]; }

static inline double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline double arg_double(int argc, char **argv, int i, double dflt) {
    if (argc > i) {
        double v = atof(argv[i]);
        if (v > 0) return v;
    }
    return dflt;
}
static inline int arg_int(int argc, char **argv, int i, int dflt) {
    if (argc > i) {
        int v = atoi(argv[i]);
        if (v > 0) return v;
    }
    return dflt;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Lock-free multi-producer stack for cross-thread frees: producers push
 * one object at a time, the owner takes the whole list with an exchange
 * (no ABA possible). Objects must be >= 32 B and tagged (obj_init). */
typedef struct { _Atomic(void *) head; char pad[56]; } inbox_t;
#define OBJ_LINK(p) (((void **)(p))[2])
static inline void inbox_push(inbox_t *q, void *p) {
    void *h = atomic_load_explicit(&q->head, memory_order_relaxed);
    do {
        OBJ_LINK(p) = h;
    } while (!atomic_compare_exchange_weak_explicit(&q->head, &h, p, memory_order_release,
                                                    memory_order_relaxed));
}
/* frees everything in the inbox, checking tags; returns the count */
static inline size_t inbox_drain(inbox_t *q) {
    void *p = atomic_exchange_explicit(&q->head, NULL, memory_order_acquire);
    size_t n = 0;
    while (p) {
        void *next = OBJ_LINK(p);
        size_t sz = obj_size(p);
        if (sz < 32 || sz > (1u << 20)) die("corruption detected: inbox object %p has size %zu", p, sz);
        obj_check(p, sz);
        free(p);
        p = next;
        n++;
    }
    return n;
}

#endif
