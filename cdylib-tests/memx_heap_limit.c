/*
 * memx_heap_limit: MEMX_HEAP_LIMIT fails one allocation, not the process
 * (memx only).
 *
 * With a 64 MiB limit on the heap memx holds from the OS (in-use plus
 * resident free pages):
 * 1. 1 MiB blocks (each written through) until malloc returns NULL: errno
 *    is ENOMEM, at least 48 blocks fit, the resident set stays near the
 *    limit, and memx printed exactly one line about it (stderr is captured
 *    through a memfd for the count, then copied to the real stderr);
 * 2. at the limit, calloc, realloc (growing: the old block stays intact),
 *    posix_memalign (returns ENOMEM, errno untouched) and aligned_alloc fail
 *    the same way; two blocks are freed and small objects fill the 2 MiB
 *    (reused at no charge), then fail too;
 * 3. everything is freed, with contents checked; the same 1 MiB blocks fit
 *    again (no malloc_trim needed), and the limit still holds;
 * 4. four threads race to fill the heap with blocks of 64 KiB .. 2 MiB and
 *    each meets NULL/ENOMEM; after they free, the main thread allocates
 *    again. The limit line is still printed only once.
 */
// ENV: MEMX_HEAP_LIMIT=64M
// EXPECT-STDERR: memx: MEMX_HEAP_LIMIT reached
#include "check.h"
#include <malloc.h>
#include <pthread.h>
#include <sys/mman.h>

#define LIMIT (64 * MiB)
#define MAXBLOCKS 256

static void *blocks[MAXBLOCKS];

/* Fills 1 MiB blocks until NULL; returns how many fit. */
static int fill_big(void)
{
    int n = 0;
    for (;;) {
        CHECK(n < MAXBLOCKS, "%d blocks of 1 MiB fit under a 64 MiB limit", n);
        errno = 0;
        void *p = malloc(MiB);
        if (!p) {
            CHECK(errno == ENOMEM, "malloc at the limit: errno %d, not ENOMEM", errno);
            break;
        }
        pattern_fill(p, MiB);
        blocks[n++] = p;
    }
    return n;
}

static void free_big(int n)
{
    for (int i = 0; i < n; i++) {
        size_t bad = pattern_check(blocks[i], MiB);
        CHECK(bad == (size_t)-1, "block %d (%p) changed at offset %zu", i, blocks[i], bad);
        free(blocks[i]);
        blocks[i] = NULL;
    }
}

/* Small objects chained through their first word, until NULL. */
static void *fill_small(long *count)
{
    void *head = NULL;
    long n = 0;
    for (;;) {
        CHECK(n < 8L * 1000 * 1000, "%ld small objects fit past the limit", n);
        errno = 0;
        void **p = malloc(48);
        if (!p) {
            CHECK(errno == ENOMEM, "small malloc at the limit: errno %d", errno);
            break;
        }
        p[0] = head;
        p[1] = (void *)(uintptr_t)~(uintptr_t)p;
        head = p;
        n++;
    }
    *count = n;
    return head;
}

static void free_small(void *head)
{
    while (head) {
        void **p = head;
        CHECK(p[1] == (void *)(uintptr_t)~(uintptr_t)p, "small object %p corrupted", (void *)p);
        head = p[0];
        free(p);
    }
}

struct racer {
    void **v;
    int n;
    size_t bytes;
};

static void *race(void *arg)
{
    struct racer *r = arg;
    uint64_t rng = 1 + (uintptr_t)arg;
    for (;;) {
        size_t sz = (64 << 10) << (rng_next(&rng) % 6); /* 64 KiB .. 2 MiB */
        errno = 0;
        void *p = malloc(sz);
        if (!p) {
            CHECK(errno == ENOMEM, "thread: malloc(%zu) at the limit: errno %d", sz, errno);
            break;
        }
        memset(p, 0x5a, sz);
        CHECK(r->n < 4096, "a thread holds %d blocks under a 64 MiB limit", r->n);
        r->v[r->n++] = p;
        r->bytes += sz;
    }
    return NULL;
}

int main(void)
{
    CHECK(lib_is_memx(), "memx only");
    /* Capture fd 2 so the limit line can be counted. */
    int saved_err = dup(2);
    int cap = memfd_create("stderr", 0);
    CHECK(saved_err >= 0 && cap >= 0, "dup/memfd_create failed");
    CHECK(dup2(cap, 2) == 2, "dup2 failed");

    /* 1. */
    int n1 = fill_big();
    size_t rss = rss_bytes();
    CHECK(n1 >= 48, "only %d blocks of 1 MiB fit under a 64 MiB limit", n1);
    CHECK(rss < LIMIT + 48 * MiB, "RSS %zu MiB at a 64 MiB heap limit", rss >> 20);

    /* 2. */
    errno = 0;
    CHECK(calloc(1, MiB) == NULL && errno == ENOMEM, "calloc at the limit: errno %d", errno);
    errno = 0;
    void *q = realloc(blocks[0], 4 * MiB);
    CHECK(q == NULL && errno == ENOMEM, "realloc growing at the limit: %p errno %d", q, errno);
    CHECK(pattern_check(blocks[0], MiB) == (size_t)-1, "a failed realloc changed the block");
    void *pm = NULL;
    errno = 1234;
    int rc = posix_memalign(&pm, 4096, 2 * MiB);
    CHECK(rc == ENOMEM && errno == 1234 && pm == NULL,
          "posix_memalign at the limit: rc %d errno %d", rc, errno);
    errno = 0;
    CHECK(aligned_alloc(1 << 16, MiB) == NULL && errno == ENOMEM,
          "aligned_alloc at the limit: errno %d", errno);
    /* Two freed blocks leave 2 MiB of resident free pages: small objects
     * fill them (at no charge) and then fail too. */
    free(blocks[n1 - 1]);
    free(blocks[n1 - 2]);
    long nsmall;
    void *small = fill_small(&nsmall);
    CHECK(nsmall >= 20000, "only %ld objects of 48 bytes fit in 2 MiB freed at the limit",
          nsmall);
    say("memx_heap_limit: %d blocks of 1 MiB, then %ld small objects, fit; RSS %zu MiB\n",
        n1, nsmall, rss >> 20);

    /* 3. */
    free_small(small);
    free_big(n1 - 2);
    int n2 = fill_big();
    CHECK(n2 >= n1 - 4, "after freeing, only %d of %d blocks fit again", n2, n1);
    free_big(n2);

    /* 4. */
    pthread_t t[4];
    struct racer r[4];
    for (int i = 0; i < 4; i++) {
        r[i].v = mmap(NULL, 4096 * sizeof(void *), PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(r[i].v != MAP_FAILED, "mmap failed");
        r[i].n = 0;
        r[i].bytes = 0;
        CHECK(pthread_create(&t[i], NULL, race, &r[i]) == 0, "pthread_create failed");
    }
    size_t total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += r[i].bytes;
    }
    CHECK(total <= LIMIT && total >= LIMIT / 2, "threads got %zu MiB under a 64 MiB limit",
          total >> 20);
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < r[i].n; k++)
            free(r[i].v[k]);
    int n3 = fill_big();
    CHECK(n3 >= n1 - 4, "after the threads freed, only %d of %d blocks fit", n3, n1);
    free_big(n3);

    /* The captured stderr: exactly one limit line; pass it on. */
    dup2(saved_err, 2);
    char buf[8192];
    ssize_t len = pread(cap, buf, sizeof buf - 1, 0);
    CHECK(len >= 0, "reading the captured stderr failed");
    buf[len] = 0;
    check_write_all(2, buf, (size_t)len);
    int lines = 0;
    for (char *s = buf; (s = strstr(s, "MEMX_HEAP_LIMIT")) != NULL; s++)
        lines++;
    CHECK(lines == 1, "%d lines about the limit (expected exactly one):\n%s", lines, buf);
    say("memx_heap_limit: threads held %zu MiB at the limit; %d and %d blocks fit again\n",
        total >> 20, n2, n3);
    return 0;
}
