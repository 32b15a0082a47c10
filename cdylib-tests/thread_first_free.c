/*
 * thread_first_free: the first allocator call a new thread makes is not
 * malloc.
 *
 * Allocator hazard: per-thread state is usually set up lazily on a thread's
 * first malloc. If the first call is free() of another thread's block,
 * realloc, malloc_usable_size, posix_memalign, calloc, etc., the entry
 * point finds an uninitialised (or static placeholder) thread cache; a fast
 * path that assumes an initialised cache then crashes, loses the block, or
 * files it into the placeholder shared by all threads.
 *
 * Each round starts one thread per variant, all released together by a
 * barrier so that the first calls also race with each other; blocks come
 * from main (and go back to main, which frees them). Each thread then keeps
 * allocating a little to check its state is sane afterwards.
 */
#include "check.h"
#include <malloc.h>
#include <pthread.h>

enum {
    V_FREE_SMALL,
    V_FREE_LARGE,
    V_FREE_NULL,
    V_REALLOC_GROW,
    V_REALLOC_SHRINK_LARGE,
    V_REALLOC_NULL,
    V_USABLE_SIZE,
    V_POSIX_MEMALIGN,
    V_ALIGNED_ALLOC,
    V_CALLOC,
    V_MEMALIGN,
    V_MALLOC, /* the ordinary case, as a control */
    NVARIANTS
};

static const char *const names[NVARIANTS] = {
    "free(small block of main)", "free(2 MiB block of main)", "free(NULL)",
    "realloc(block of main, grow)", "realloc(4 MiB block of main, shrink)", "realloc(NULL, n)",
    "malloc_usable_size(block of main)", "posix_memalign", "aligned_alloc", "calloc",
    "memalign", "malloc"};

struct job {
    int variant;
    void *in;     /* block from main, or NULL */
    size_t in_n;  /* its size */
    void *out;    /* block for main to verify and free */
    size_t out_n;
};

static pthread_barrier_t barrier;

static void *worker(void *arg)
{
    struct job *j = arg;
    pthread_barrier_wait(&barrier); /* no allocator call before this point */
    const char *what = names[j->variant];
    switch (j->variant) {
    case V_FREE_SMALL:
    case V_FREE_LARGE:
        free(j->in);
        break;
    case V_FREE_NULL:
        free(NULL);
        break;
    case V_REALLOC_GROW:
    case V_REALLOC_SHRINK_LARGE: {
        size_t m = j->variant == V_REALLOC_GROW ? j->in_n * 5 + 3000 : j->in_n / 3;
        size_t bad = pattern_check(j->in, j->in_n);
        CHECK(bad == (size_t)-1, "%s: block from main corrupt at byte %zu", what, bad);
        void *q = realloc(j->in, m);
        CHECK(q != NULL, "%s: realloc(%zu -> %zu) returned NULL", what, j->in_n, m);
        CHECK(malloc_usable_size(q) >= m, "%s: usable size %zu < %zu", what,
              malloc_usable_size(q), m);
        pattern_fill(q, m);
        j->out = q;
        j->out_n = m;
        break;
    }
    case V_REALLOC_NULL:
        j->out = realloc(NULL, 777);
        j->out_n = 777;
        break;
    case V_USABLE_SIZE: {
        size_t u = malloc_usable_size(j->in);
        CHECK(u >= j->in_n, "%s: %zu < %zu", what, u, j->in_n);
        j->out = j->in; /* main frees it */
        j->out_n = j->in_n;
        return NULL; /* verified by main; no pattern refill */
    }
    case V_POSIX_MEMALIGN: {
        int rc = posix_memalign(&j->out, 4096, 5000);
        CHECK(rc == 0 && is_aligned(j->out, 4096), "%s: rc %d p %p", what, rc, j->out);
        j->out_n = 5000;
        break;
    }
    case V_ALIGNED_ALLOC:
        j->out = aligned_alloc(256, 512);
        CHECK(j->out && is_aligned(j->out, 256), "%s: %p", what, j->out);
        j->out_n = 512;
        break;
    case V_CALLOC:
        j->out = calloc(100, 33);
        CHECK(j->out != NULL, "%s returned NULL", what);
        for (int i = 0; i < 3300; i++)
            CHECK(((unsigned char *)j->out)[i] == 0, "%s: byte %d not zero", what, i);
        j->out_n = 3300;
        break;
    case V_MEMALIGN:
        j->out = memalign(64, 100);
        CHECK(j->out && is_aligned(j->out, 64), "%s: %p", what, j->out);
        j->out_n = 100;
        break;
    case V_MALLOC:
        j->out = malloc(50);
        j->out_n = 50;
        break;
    }
    if (j->out) {
        if (j->variant != V_REALLOC_GROW && j->variant != V_REALLOC_SHRINK_LARGE)
            pattern_fill(j->out, j->out_n);
    } else {
        CHECK(j->variant <= V_FREE_NULL, "%s: result is NULL", what);
    }
    /* Business as usual afterwards. */
    void *v[100];
    for (int i = 0; i < 100; i++) {
        v[i] = malloc((size_t)i * 13 + 1);
        CHECK(v[i] != NULL, "%s: malloc after the first call returned NULL", what);
        pattern_fill(v[i], (size_t)i * 13 + 1);
    }
    for (int i = 0; i < 100; i++) {
        CHECK(pattern_check(v[i], (size_t)i * 13 + 1) == (size_t)-1,
              "%s: a later block %p was corrupted", what, v[i]);
        free(v[i]);
    }
    return NULL;
}

int main(void)
{
    for (int round = 0; round < 60; round++) {
        struct job jobs[NVARIANTS];
        pthread_t t[NVARIANTS];
        memset(jobs, 0, sizeof jobs);
        for (int v = 0; v < NVARIANTS; v++) {
            jobs[v].variant = v;
            size_t n = 0;
            if (v == V_FREE_SMALL || v == V_REALLOC_GROW || v == V_USABLE_SIZE)
                n = 16 + (size_t)(round * 97 % 2000);
            else if (v == V_FREE_LARGE)
                n = 2 * MiB;
            else if (v == V_REALLOC_SHRINK_LARGE)
                n = 4 * MiB;
            if (n) {
                jobs[v].in = malloc(n);
                CHECK(jobs[v].in != NULL, "main: malloc(%zu) returned NULL", n);
                jobs[v].in_n = n;
                pattern_fill(jobs[v].in, n);
            }
        }
        pthread_barrier_init(&barrier, NULL, NVARIANTS);
        for (int v = 0; v < NVARIANTS; v++)
            CHECK(pthread_create(&t[v], NULL, worker, &jobs[v]) == 0, "pthread_create");
        for (int v = 0; v < NVARIANTS; v++)
            pthread_join(t[v], NULL);
        pthread_barrier_destroy(&barrier);
        /* The blocks the threads made (or resized) outlive them. */
        for (int v = 0; v < NVARIANTS; v++) {
            if (!jobs[v].out)
                continue;
            size_t bad = pattern_check(jobs[v].out, jobs[v].out_n);
            CHECK(bad == (size_t)-1, "round %d, %s: the thread's result %p corrupt at byte %zu",
                  round, names[v], jobs[v].out, bad);
            free(jobs[v].out);
        }
    }
    /* Main's own state is intact after all that. */
    void *p = malloc(1000);
    CHECK(p != NULL, "malloc in main returned NULL at the end");
    free(p);
    return 0;
}
