/*
 * fuzz_model: a randomised differential model test of the whole allocation
 * API (passes under glibc too, which is how the model itself is checked).
 *
 * Random sequences of malloc, calloc, realloc (grow, shrink, NULL, to 0),
 * reallocarray, memalign, posix_memalign, aligned_alloc, valloc and free,
 * with sizes skewed small (most up to 128 bytes, some up to 4 MiB, a few 0)
 * and random power-of-two alignments up to 1 MiB. The model is a table of
 * live objects (static arrays: the test's own bookkeeping never calls
 * malloc) and a sorted array of their [start, start + usable) intervals.
 * After every operation it checks:
 * - no two live objects overlap (the neighbours of each new interval);
 * - alignment (16 bytes for every object, the requested one for aligned
 *   calls) and malloc_usable_size >= the requested size;
 * - calloc memory is zero (sampled beyond 64 KiB);
 * - each object's contents, a pattern keyed on the object's own seed (not its
 *   address, so it follows the object through realloc), are intact before
 *   free and before realloc, and the kept prefix survives realloc;
 * - errors: a failed call (NULL) counts as a failure of the test, except a
 *   request above PTRDIFF_MAX (also tried: it must fail with ENOMEM) and
 *   posix_memalign's EINVAL for a bad alignment (also tried).
 * Objects up to 64 KiB are patterned whole; larger ones in their first and
 * last 4 KiB and one 8-byte word per 4 KiB.
 *
 * Phase 1 runs one thread; phase 2 runs four threads, each with its own
 * model, that also hand objects to one another through a locked mailbox
 * (the receiver checks the contents and takes them into its model), so
 * frees and reallocs of other threads' objects are covered.
 *
 * Bounded: FUZZ_SECONDS (default 4, split between the phases) or FUZZ_OPS
 * operations per thread (default 50 million), whichever comes first. The
 * seed comes from FUZZ_SEED, else the clock; it is printed at the start
 * and in every failure message, so a failing run can be replayed
 * (FUZZ_SEED=S FUZZ_THREADS=0 replays phase 1 alone, deterministically).
 * Prints the number of operations executed.
 */
#include "check.h"
#include <malloc.h>
#include <pthread.h>

#define MAXLIVE 2048
#define LIVE_BYTES_CAP (32 * MiB)
#define WHOLE_LIMIT (64 * 1024)
#define NTHREADS 4
#define MAILBOX 256

static unsigned long long g_seed;

#define FCHECK(m, cond, fmt, ...)                                                              \
    CHECK(cond, "[seed %llu thread %d op %ld] " fmt, g_seed, (m)->tid, (m)->ops, ##__VA_ARGS__)

struct obj {
    unsigned char *p;
    size_t n;      /* requested bytes */
    uint64_t seed; /* pattern key */
};

struct iv {
    uintptr_t lo, hi;
};

enum { OP_MALLOC, OP_CALLOC, OP_REALLOC, OP_REALLOCARRAY, OP_MEMALIGN, OP_POSIX_MEMALIGN,
       OP_ALIGNED_ALLOC, OP_VALLOC, OP_FREE, OP_HANDOFF, NOPS };
static const char *const op_names[NOPS] = {
    "malloc", "calloc", "realloc", "reallocarray", "memalign", "posix_memalign",
    "aligned_alloc", "valloc", "free", "handoff",
};

struct model {
    int tid;
    long ops;
    uint64_t rng;
    int n;
    struct obj obj[MAXLIVE];
    int niv;
    struct iv iv[MAXLIVE];
    size_t live_bytes, peak_bytes;
    long count[NOPS];
};

/* ------------------------------------------------------------ patterns */

static inline unsigned char pat(uint64_t seed, size_t i)
{
    return (unsigned char)((seed >> ((i >> 3) & 31)) + i * 7 + (i >> 12));
}

/* Runs `body` for each patterned offset i below `limit` of an object of n
 * bytes: all of it up to WHOLE_LIMIT, else the first and last 4 KiB and the
 * first 8 bytes of every 4 KiB between. */
#define FOR_FILLED(i, n, limit, body)                                                          \
    do {                                                                                       \
        size_t n_ = (n), lim_ = (limit) < n_ ? (limit) : n_;                                   \
        if (n_ <= WHOLE_LIMIT) {                                                               \
            for (size_t i = 0; i < lim_; i++) { body; }                                        \
            break;                                                                             \
        }                                                                                      \
        size_t tail_ = n_ - 4096;                                                              \
        for (size_t i = 0; i < 4096 && i < lim_; i++) { body; }                                \
        for (size_t j_ = 4096; j_ < tail_ && j_ < lim_; j_ += 4096)                            \
            for (size_t i = j_; i < j_ + 8 && i < tail_ && i < lim_; i++) { body; }            \
        for (size_t i = tail_; i < lim_; i++) { body; }                                        \
    } while (0)

static void fill(struct obj *o)
{
    unsigned char *p = o->p;
    uint64_t s = o->seed;
    FOR_FILLED(i, o->n, o->n, p[i] = pat(s, i));
}

/* Checks the patterned bytes below `limit`; returns the first bad offset. */
static size_t check_pattern(const struct obj *o, size_t limit)
{
    const unsigned char *p = o->p;
    uint64_t s = o->seed;
    FOR_FILLED(i, o->n, limit, if (p[i] != pat(s, i)) return i);
    return (size_t)-1;
}

static size_t check_zero(const unsigned char *p, size_t n)
{
    FOR_FILLED(i, n, n, if (p[i] != 0) return i);
    return (size_t)-1;
}

/* ------------------------------------------------------------ intervals */

static int iv_find(const struct model *m, uintptr_t lo) /* first index with .lo >= lo */
{
    int a = 0, b = m->niv;
    while (a < b) {
        int mid = (a + b) / 2;
        if (m->iv[mid].lo < lo)
            a = mid + 1;
        else
            b = mid;
    }
    return a;
}

static void iv_add(struct model *m, const unsigned char *p, size_t usable)
{
    uintptr_t lo = (uintptr_t)p, hi = lo + (usable ? usable : 1);
    int k = iv_find(m, lo);
    FCHECK(m, k == m->niv || m->iv[k].lo >= hi,
           "new object [%#lx, %#lx) overlaps live [%#lx, %#lx)", (unsigned long)lo,
           (unsigned long)hi, (unsigned long)m->iv[k].lo, (unsigned long)m->iv[k].hi);
    FCHECK(m, k == 0 || m->iv[k - 1].hi <= lo,
           "new object [%#lx, %#lx) overlaps live [%#lx, %#lx)", (unsigned long)lo,
           (unsigned long)hi, (unsigned long)m->iv[k - 1].lo, (unsigned long)m->iv[k - 1].hi);
    memmove(&m->iv[k + 1], &m->iv[k], (size_t)(m->niv - k) * sizeof m->iv[0]);
    m->iv[k].lo = lo;
    m->iv[k].hi = hi;
    m->niv++;
}

static void iv_del(struct model *m, const unsigned char *p)
{
    int k = iv_find(m, (uintptr_t)p);
    FCHECK(m, k < m->niv && m->iv[k].lo == (uintptr_t)p, "model lost object %p", (void *)p);
    memmove(&m->iv[k], &m->iv[k + 1], (size_t)(m->niv - k - 1) * sizeof m->iv[0]);
    m->niv--;
}

/* ------------------------------------------------------------ the model */

static size_t pick_size(struct model *m)
{
    uint64_t r = rng_next(&m->rng) % 1000;
    uint64_t x = rng_next(&m->rng);
    if (r < 10)
        return 0;
    if (r < 600)
        return 1 + x % 128;
    if (r < 850)
        return 129 + x % (4096 - 128);
    if (r < 960)
        return 4097 + x % (256 * 1024 - 4096);
    if (r < 995)
        return 256 * 1024 + x % (768 * 1024);
    return MiB + x % (3 * MiB);
}

static size_t pick_align(struct model *m, size_t min)
{
    uint64_t r = rng_next(&m->rng) % 100;
    int bits = r < 70 ? 3 + (int)(rng_next(&m->rng) % 5)      /* 8 .. 128 */
               : r < 95 ? 8 + (int)(rng_next(&m->rng) % 6)    /* 256 .. 8 KiB */
                        : 14 + (int)(rng_next(&m->rng) % 7);  /* 16 KiB .. 1 MiB */
    size_t a = (size_t)1 << bits;
    return a < min ? min : a;
}

/* A new object from the allocator enters the model. */
static void adopt(struct model *m, unsigned char *p, size_t n, size_t align, int zero,
                  const char *call)
{
    FCHECK(m, p != NULL, "%s(%zu) returned NULL (errno %d)", call, n, errno);
    FCHECK(m, is_aligned(p, 16), "%s(%zu) returned %p: not 16-byte aligned", call, n, (void *)p);
    FCHECK(m, !align || is_aligned(p, align), "%s(align %zu, %zu) returned %p: misaligned",
           call, align, n, (void *)p);
    size_t usable = malloc_usable_size(p);
    FCHECK(m, usable >= n, "%s(%zu): malloc_usable_size %zu", call, n, usable);
    if (zero) {
        size_t bad = check_zero(p, n);
        FCHECK(m, bad == (size_t)-1, "%s(%zu) = %p: byte %zu is not zero", call, n, (void *)p,
               bad);
    }
    iv_add(m, p, usable);
    struct obj *o = &m->obj[m->n++];
    o->p = p;
    o->n = n;
    o->seed = rng_next(&m->rng);
    fill(o);
    m->live_bytes += n;
    if (m->live_bytes > m->peak_bytes)
        m->peak_bytes = m->live_bytes;
}

static void verify(struct model *m, const struct obj *o, const char *why)
{
    size_t bad = check_pattern(o, o->n);
    FCHECK(m, bad == (size_t)-1, "before %s: object %p of %zu bytes changed at offset %zu", why,
           (void *)o->p, o->n, bad);
}

/* Takes object k out of the model (swap-remove). */
static struct obj disown(struct model *m, int k)
{
    struct obj o = m->obj[k];
    iv_del(m, o.p);
    m->obj[k] = m->obj[--m->n];
    m->live_bytes -= o.n;
    return o;
}

static void do_realloc(struct model *m, int k, int array)
{
    struct obj o = m->obj[k];
    verify(m, &o, "realloc");
    size_t n = pick_size(m);
    if (n == 0 && array)
        n = 1;
    if (n == 0) {
        /* glibc and memx: realloc(p, 0) frees p and returns NULL. */
        disown(m, k);
        void *q = realloc(o.p, 0);
        if (q) /* an allocator that returns a minimum-size object instead */
            adopt(m, q, 0, 0, 0, "realloc(p, 0)");
        return;
    }
    disown(m, k);
    unsigned char *q = array ? reallocarray(o.p, n / 4 + 1, 4) : realloc(o.p, n);
    if (array)
        n = (n / 4 + 1) * 4;
    FCHECK(m, q != NULL, "realloc(%p, %zu) returned NULL", (void *)o.p, n);
    /* The kept prefix must be the old contents. */
    struct obj moved = o;
    moved.p = q;
    size_t bad = check_pattern(&moved, n);
    FCHECK(m, bad == (size_t)-1,
           "realloc(%p of %zu, %zu) = %p: byte %zu of the kept prefix changed", (void *)o.p,
           o.n, n, (void *)q, bad);
    size_t usable = malloc_usable_size(q);
    FCHECK(m, usable >= n && is_aligned(q, 16), "realloc to %zu: usable %zu, %p", n, usable,
           (void *)q);
    iv_add(m, q, usable);
    /* Same seed: the prefix keeps its pattern, the rest is filled now. */
    struct obj *no = &m->obj[m->n++];
    *no = o;
    no->p = q;
    no->n = n;
    fill(no);
    m->live_bytes += n;
    if (m->live_bytes > m->peak_bytes)
        m->peak_bytes = m->live_bytes;
}

/* Mailbox for phase 2: objects handed from one thread's model to another. */
static pthread_mutex_t box_mu = PTHREAD_MUTEX_INITIALIZER;
static struct obj box[MAILBOX];
static int box_n;

static void handoff(struct model *m)
{
    pthread_mutex_lock(&box_mu);
    if (box_n > 0 && (rng_next(&m->rng) & 1) && m->n < MAXLIVE) {
        struct obj o = box[--box_n];
        pthread_mutex_unlock(&box_mu);
        verify(m, &o, "taking a handed-off object");
        size_t usable = malloc_usable_size(o.p);
        FCHECK(m, usable >= o.n, "handed-off %p: usable %zu < %zu", (void *)o.p, usable, o.n);
        iv_add(m, o.p, usable);
        m->obj[m->n++] = o;
        m->live_bytes += o.n;
        return;
    }
    if (box_n < MAILBOX && m->n > 0) {
        int k = (int)(rng_next(&m->rng) % (uint64_t)m->n);
        box[box_n++] = disown(m, k);
    }
    pthread_mutex_unlock(&box_mu);
}

static void step(struct model *m, int threaded)
{
    int full = m->n >= MAXLIVE || m->live_bytes > LIVE_BYTES_CAP;
    uint64_t r = rng_next(&m->rng) % 100;
    int op;
    if (m->n == 0 && !full)
        op = (int)(r % 8); /* an allocating call */
    else if (full || r < 38)
        op = (r & 3) == 0 && !full ? OP_REALLOC : OP_FREE;
    else if (r < 60)
        op = OP_MALLOC;
    else if (r < 68)
        op = OP_CALLOC;
    else if (r < 80)
        op = OP_REALLOC;
    else if (r < 83)
        op = OP_REALLOCARRAY;
    else if (r < 87)
        op = OP_MEMALIGN;
    else if (r < 91)
        op = OP_POSIX_MEMALIGN;
    else if (r < 95)
        op = OP_ALIGNED_ALLOC;
    else if (r < 96)
        op = OP_VALLOC;
    else
        op = threaded ? OP_HANDOFF : OP_FREE;
    if ((op == OP_REALLOC || op == OP_REALLOCARRAY || op == OP_FREE) && m->n == 0)
        op = OP_MALLOC;
    m->count[op]++;
    m->ops++;

    switch (op) {
    case OP_MALLOC: {
        size_t n = pick_size(m);
        adopt(m, malloc(n), n, 0, 0, "malloc");
        break;
    }
    case OP_CALLOC: {
        size_t n = pick_size(m);
        size_t each = 1 + (size_t)(rng_next(&m->rng) % 8);
        size_t cnt = n / each;
        adopt(m, calloc(cnt, each), cnt * each, 0, 1, "calloc");
        break;
    }
    case OP_REALLOC:
    case OP_REALLOCARRAY:
        do_realloc(m, (int)(rng_next(&m->rng) % (uint64_t)m->n), op == OP_REALLOCARRAY);
        break;
    case OP_MEMALIGN: {
        size_t n = pick_size(m), a = pick_align(m, 1);
        adopt(m, memalign(a, n), n, a, 0, "memalign");
        break;
    }
    case OP_POSIX_MEMALIGN: {
        size_t n = pick_size(m), a = pick_align(m, sizeof(void *));
        void *p = NULL;
        errno = 4242;
        int rc = posix_memalign(&p, a, n);
        FCHECK(m, rc == 0 && errno == 4242, "posix_memalign(%zu, %zu): %d, errno %d", a, n, rc,
               errno);
        adopt(m, p, n, a, 0, "posix_memalign");
        break;
    }
    case OP_ALIGNED_ALLOC: {
        size_t a = pick_align(m, 1), n = pick_size(m);
        n = (n + a - 1) & ~(a - 1); /* C11's rule, so any glibc accepts it */
        adopt(m, aligned_alloc(a, n), n, a, 0, "aligned_alloc");
        break;
    }
    case OP_VALLOC: {
        size_t n = pick_size(m) % (64 * 1024);
        adopt(m, valloc(n), n, (size_t)sysconf(_SC_PAGESIZE), 0, "valloc");
        break;
    }
    case OP_FREE: {
        struct obj o = disown(m, (int)(rng_next(&m->rng) % (uint64_t)m->n));
        verify(m, &o, "free");
        free(o.p);
        break;
    }
    case OP_HANDOFF:
        handoff(m);
        break;
    }

    /* Now and then, the error paths: they must fail cleanly. */
    if ((m->ops & 4095) == 0) {
        errno = 0;
        void *p = malloc(opaque_size((size_t)PTRDIFF_MAX + 1));
        FCHECK(m, p == NULL && errno == ENOMEM, "malloc(PTRDIFF_MAX + 1) = %p, errno %d", p,
               errno);
        p = (void *)1;
        int rc = posix_memalign(&p, 24, 100);
        FCHECK(m, rc == EINVAL && p == (void *)1, "posix_memalign(24, 100): %d", rc);
    }
}

static void drain(struct model *m)
{
    while (m->n > 0) {
        struct obj o = disown(m, m->n - 1);
        verify(m, &o, "the final free");
        free(o.p);
    }
}

/* ------------------------------------------------------------ phases */

static double g_deadline;
static long g_max_ops;
static struct model models[1 + NTHREADS]; /* static: ~100 KiB each */

static void run(struct model *m, int threaded)
{
    while (m->ops < g_max_ops) {
        for (int i = 0; i < 256; i++)
            step(m, threaded);
        if (now_sec() > g_deadline)
            break;
    }
}

static void *thread_main(void *arg)
{
    struct model *m = arg;
    run(m, 1);
    return NULL;
}

static long total_count(int first, int last, int op)
{
    long c = 0;
    for (int i = first; i <= last; i++)
        c += models[i].count[op];
    return c;
}

int main(void)
{
    const char *s = getenv("FUZZ_SEED");
    g_seed = s && *s ? strtoull(s, NULL, 0)
                     : (unsigned long long)(now_sec() * 1e6) ^ (unsigned long long)getpid();
    if (g_seed == 0)
        g_seed = 1;
    s = getenv("FUZZ_SECONDS");
    double secs = s && *s ? atof(s) : 4.0;
    s = getenv("FUZZ_OPS");
    g_max_ops = s && *s ? atol(s) : 50L * 1000 * 1000;
    s = getenv("FUZZ_THREADS");
    int threads = s && *s ? atoi(s) : NTHREADS;
    if (threads > NTHREADS)
        threads = NTHREADS;
    say("fuzz_model: seed %llu (replay with FUZZ_SEED=%llu), %.1f s, at most %ld ops per "
        "thread\n", g_seed, g_seed, secs, g_max_ops);

    /* Phase 1: one thread, deterministic for a given seed. */
    double t0 = now_sec();
    g_deadline = t0 + (threads > 0 ? secs / 2 : secs);
    struct model *m0 = &models[0];
    m0->tid = 0;
    m0->rng = g_seed;
    run(m0, 0);
    drain(m0);
    double t1 = now_sec();

    /* Phase 2: threads with their own models, handing objects around. */
    pthread_t t[NTHREADS];
    g_deadline = t1 + secs / 2;
    for (int i = 1; i <= threads; i++) {
        models[i].tid = i;
        models[i].rng = g_seed * 0x9E3779B97F4A7C15ull + (uint64_t)i;
        CHECK(pthread_create(&t[i - 1], NULL, thread_main, &models[i]) == 0,
              "pthread_create failed");
    }
    for (int i = 1; i <= threads; i++)
        pthread_join(t[i - 1], NULL);
    for (int i = 1; i <= threads; i++)
        drain(&models[i]);
    for (int k = 0; k < box_n; k++) {
        CHECK(check_pattern(&box[k], box[k].n) == (size_t)-1,
              "[seed %llu] handed-off object %p changed", g_seed, (void *)box[k].p);
        free(box[k].p);
    }
    double t2 = now_sec();

    long ops1 = m0->ops, ops2 = 0;
    size_t peak2 = 0;
    for (int i = 1; i <= threads; i++) {
        ops2 += models[i].ops;
        peak2 += models[i].peak_bytes;
    }
    char counts[1024];
    int len = 0;
    for (int op = 0; op < NOPS; op++)
        len += snprintf(counts + len, sizeof counts - (size_t)len, "%s%s %ld",
                        op ? ", " : "", op_names[op], total_count(0, threads, op));
    say("fuzz_model: %ld operations checked: %ld on one thread (%.1f s, peak %zu KiB live), "
        "%ld on %d threads (%.1f s, peak %zu KiB live)\n",
        ops1 + ops2, ops1, t1 - t0, m0->peak_bytes >> 10, ops2, threads, t2 - t1, peak2 >> 10);
    say("fuzz_model: %s\n", counts);
    printf("%ld\n", ops1 + ops2);
    return 0;
}
