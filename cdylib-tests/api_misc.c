/*
 * api_misc: the less common entry points a drop-in malloc must provide.
 *
 * - free() preserves errno (glibc >= 2.33 guarantees it, and POSIX 2024
 *   requires it; a munmap/madvise inside free would otherwise clobber errno
 *   between a failing call and the code that reads it), for small, large and
 *   aligned blocks;
 * - cfree (removed from glibc's API in 2.26; only a compat symbol remains) is
 *   exercised if dlsym finds it;
 * - free_sized / free_aligned_sized (C23) through dlsym: glibc 2.36 lacks
 *   them, so they are tested when found; under memx they must be found
 *   (memx exports them as part of its API): free with the right size, or the
 *   right alignment and size, including NULL;
 * - mallinfo2: uordblks grows by about the allocated amount after 10 MiB of
 *   small blocks and drops again once they are freed (glibc, memx);
 *   arena >= uordblks (memx). jemalloc does not replace mallinfo2, so
 *   glibc's version reports on glibc's own (unused) heap there, and it is
 *   only called;
 * - malloc_trim, mallopt, malloc_stats don't crash;
 * - __libc_malloc / __libc_free / __libc_calloc / __libc_realloc /
 *   __libc_memalign / __libc_valloc / __libc_pvalloc, looked up with dlsym
 *   (they are how some preloaded tools and old programs reach "the real
 *   malloc"): allocate, write, free. When they resolve to the same library as
 *   malloc (glibc, memx), blocks must also mix freely between the two
 *   families; under memx they must resolve to memx, since glibc's versions
 *   would be handed memx pointers by such programs.
 */
#include "check.h"
#include <dlfcn.h>
#include <malloc.h>

typedef void (*free_fn)(void *);
typedef void (*free_sized_fn)(void *, size_t);
typedef void (*free_aligned_sized_fn)(void *, size_t, size_t);
typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void *(*memalign_fn)(size_t, size_t);

static void *sym(const char *name)
{
    return dlsym(RTLD_DEFAULT, name);
}

static const char *object_of(void *fn)
{
    Dl_info info;
    if (fn && dladdr(fn, &info) && info.dli_fname)
        return info.dli_fname;
    return "?";
}

static void test_free_errno(void)
{
    static const size_t sizes[] = {1, 16, 100, 1000, 5000, 70000, 300000, MiB, 5 * MiB,
                                   64 * MiB};
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
            void *p = malloc(sizes[i]);
            CHECK(p != NULL, "malloc(%zu) returned NULL", sizes[i]);
            memset(p, 1, sizes[i]);
            errno = 1234;
            free(p);
            CHECK(errno == 1234, "free of a %zu-byte block changed errno to %d", sizes[i], errno);
        }
        /* Many large blocks freed in a row: the release path (munmap,
         * madvise, trimming) is most likely to run here. */
        void *v[40];
        for (int i = 0; i < 40; i++) {
            v[i] = malloc((size_t)(i + 1) * 512 * 1024);
            CHECK(v[i] != NULL, "malloc returned NULL");
            memset(v[i], 2, 4096);
        }
        for (int i = 0; i < 40; i++) {
            errno = 5678;
            free(v[i]);
            CHECK(errno == 5678, "free of a %d KiB block changed errno to %d", (i + 1) * 512,
                  errno);
        }
        void *a = NULL;
        CHECK(posix_memalign(&a, 2 * MiB, 3 * MiB) == 0, "posix_memalign(2M, 3M) failed");
        errno = 4242;
        free(a);
        CHECK(errno == 4242, "free of an aligned 3 MiB block changed errno to %d", errno);
        /* realloc down (may release the tail) keeps errno on success. */
        char *r = malloc(8 * MiB);
        CHECK(r != NULL, "malloc(8 MiB) returned NULL");
        memset(r, 3, 8 * MiB);
        errno = 777;
        r = realloc(r, 100);
        CHECK(r != NULL, "realloc down returned NULL");
        CHECK(errno == 777, "successful realloc(8 MiB -> 100) changed errno to %d", errno);
        free(r);
    }
}

static void test_cfree(void)
{
    free_fn cf = (free_fn)sym("cfree");
    if (!cf) {
        say("note: cfree not found by dlsym (fine: glibc >= 2.26 has only a compat symbol)\n");
        return;
    }
    say("note: cfree found in %s\n", object_of((void *)cf));
    for (int i = 0; i < 100; i++) {
        void *p = malloc((size_t)i * 97 + 1);
        CHECK(p != NULL, "malloc returned NULL");
        cf(p);
    }
    cf(NULL);
}

static void test_free_sized(void)
{
    free_sized_fn fs = (free_sized_fn)sym("free_sized");
    free_aligned_sized_fn fas = (free_aligned_sized_fn)sym("free_aligned_sized");
    if (lib_is_memx()) {
        CHECK(fs != NULL, "free_sized not exported (dlsym found nothing)");
        CHECK(fas != NULL, "free_aligned_sized not exported (dlsym found nothing)");
    }
    if (fs) {
        static const size_t sizes[] = {0, 1, 8, 24, 100, 4096, 70000, 2 * MiB, 20 * MiB};
        for (int round = 0; round < 20; round++) {
            for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
                void *p = malloc(sizes[i]);
                CHECK(p != NULL, "malloc(%zu) returned NULL", sizes[i]);
                memset(p, 9, sizes[i]);
                fs(p, sizes[i]);
                void *c = calloc(3, sizes[i]);
                CHECK(c != NULL, "calloc(3, %zu) returned NULL", sizes[i]);
                fs(c, 3 * sizes[i]);
            }
        }
        fs(NULL, 0);
        fs(NULL, 100);
    } else {
        say("note: free_sized not found, not tested\n");
    }
    if (fas) {
        for (size_t align = 1; align <= MiB; align *= 4) {
            static const size_t sizes[] = {0, 1, 100, 4096, 100000, 3 * MiB};
            for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
                /* aligned_alloc requires size to be a multiple of align in
                 * C11; round it up so the pairing is valid everywhere. */
                size_t n = (sizes[i] + align - 1) / align * align;
                void *p = aligned_alloc(align, n);
                CHECK(p != NULL && is_aligned(p, align), "aligned_alloc(%zu, %zu) = %p", align, n,
                      p);
                memset(p, 5, n);
                fas(p, align, n);
            }
        }
        fas(NULL, 64, 0);
    } else {
        say("note: free_aligned_sized not found, not tested\n");
    }
}

static void test_mallinfo2(void)
{
    struct mallinfo2 before = mallinfo2();
    enum { N = 10 * 1024 * 1024 / 64 };
    void **v = malloc(N * sizeof *v);
    CHECK(v != NULL, "malloc of the pointer array failed");
    for (size_t i = 0; i < N; i++) {
        v[i] = malloc(64);
        CHECK(v[i] != NULL, "malloc(64) #%zu returned NULL", i);
        memset(v[i], 1, 64);
    }
    struct mallinfo2 peak = mallinfo2();
    say("mallinfo2: before arena=%zu uordblks=%zu hblkhd=%zu; after 10 MiB in 64-byte blocks "
        "arena=%zu uordblks=%zu fordblks=%zu hblkhd=%zu\n",
        before.arena, before.uordblks, before.hblkhd, peak.arena, peak.uordblks, peak.fordblks,
        peak.hblkhd);
    if (lib_is_glibc() || lib_is_memx()) {
        size_t want = 9 * MiB + MiB / 2;
        CHECK(peak.uordblks >= before.uordblks + want,
              "uordblks grew by only %zu bytes (from %zu to %zu) after allocating 10 MiB in "
              "64-byte blocks; expected >= %zu",
              peak.uordblks - before.uordblks, before.uordblks, peak.uordblks, want);
    }
    if (lib_is_memx())
        CHECK(peak.arena >= peak.uordblks, "mallinfo2: arena %zu < uordblks %zu", peak.arena,
              peak.uordblks);
    for (size_t i = 0; i < N; i++)
        free(v[i]);
    free(v);
    struct mallinfo2 after = mallinfo2();
    say("mallinfo2 after freeing: arena=%zu uordblks=%zu fordblks=%zu\n", after.arena,
        after.uordblks, after.fordblks);
    if (lib_is_glibc() || lib_is_memx())
        CHECK(after.uordblks < peak.uordblks, "uordblks did not decrease after freeing 10 MiB "
              "(peak %zu, now %zu)", peak.uordblks, after.uordblks);
    if (lib_is_memx())
        CHECK(after.arena >= after.uordblks, "mallinfo2: arena %zu < uordblks %zu", after.arena,
              after.uordblks);
}

static void test_tuning_calls(void)
{
    /* Return values are library-specific; only "no crash, still works". */
    (void)mallopt(M_ARENA_MAX, 1);
    (void)mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    (void)mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
    (void)mallopt(M_TOP_PAD, 0);
    (void)mallopt(M_MXFAST, 64);
    (void)mallopt(12345, 1); /* unknown parameter: must just fail */
    void *p = malloc(3 * MiB);
    CHECK(p != NULL, "malloc after mallopt returned NULL");
    memset(p, 1, 3 * MiB);
    free(p);
    (void)malloc_trim(0);
    (void)malloc_trim(64 * 1024);
    malloc_stats();
    p = malloc(100);
    CHECK(p != NULL, "malloc after malloc_trim/malloc_stats returned NULL");
    free(p);
}

static void test_libc_aliases(void)
{
    malloc_fn lm = (malloc_fn)sym("__libc_malloc");
    free_fn lf = (free_fn)sym("__libc_free");
    calloc_fn lc = (calloc_fn)sym("__libc_calloc");
    realloc_fn lr = (realloc_fn)sym("__libc_realloc");
    memalign_fn lma = (memalign_fn)sym("__libc_memalign");
    malloc_fn lv = (malloc_fn)sym("__libc_valloc");
    malloc_fn lpv = (malloc_fn)sym("__libc_pvalloc");
    CHECK(lm && lf && lc && lr && lma && lv && lpv,
          "a __libc_* allocator symbol is missing: malloc %p free %p calloc %p realloc %p "
          "memalign %p valloc %p pvalloc %p",
          (void *)lm, (void *)lf, (void *)lc, (void *)lr, (void *)lma, (void *)lv, (void *)lpv);

    const char *mobj = object_of(dlsym(RTLD_DEFAULT, "malloc"));
    const char *lobj = object_of((void *)lm);
    say("malloc is in %s, __libc_malloc in %s\n", mobj, lobj);
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);

    /* Each family with itself. */
    for (int round = 0; round < 50; round++) {
        size_t n = (size_t)round * 1000 + 1;
        char *a = lm(n);
        CHECK(a != NULL, "__libc_malloc(%zu) returned NULL", n);
        memset(a, 1, n);
        char *c = lc(n, 3);
        CHECK(c != NULL, "__libc_calloc(%zu, 3) returned NULL", n);
        for (size_t i = 0; i < 3 * n; i++)
            CHECK(c[i] == 0, "__libc_calloc(%zu, 3) byte %zu not zero", n, i);
        a = lr(a, 2 * n);
        CHECK(a != NULL, "__libc_realloc returned NULL");
        CHECK(a[n - 1] == 1, "__libc_realloc lost data");
        memset(a, 2, 2 * n);
        char *m = lma(256, n);
        CHECK(m != NULL && is_aligned(m, 256), "__libc_memalign(256, %zu) = %p", n, (void *)m);
        memset(m, 3, n);
        char *v = lv(n);
        CHECK(v != NULL && is_aligned(v, page), "__libc_valloc(%zu) = %p", n, (void *)v);
        memset(v, 4, n);
        char *pv = lpv(n);
        CHECK(pv != NULL && is_aligned(pv, page), "__libc_pvalloc(%zu) = %p", n, (void *)pv);
        memset(pv, 5, (n + page - 1) / page * page);
        lf(a);
        lf(c);
        lf(m);
        lf(v);
        lf(pv);
    }
    lf(NULL);

    int same = strcmp(mobj, lobj) == 0;
    if (lib_is_memx())
        CHECK(same, "__libc_malloc resolves to %s, not to memx (%s): programs that call "
              "__libc_free on malloc'ed memory would hand memx blocks to glibc", lobj, mobj);
    if (!same) {
        say("note: __libc_* not provided by the malloc library; mixing not tested\n");
        return;
    }
    /* Mixed: malloc -> __libc_free, __libc_malloc -> free/realloc. */
    for (int round = 0; round < 50; round++) {
        size_t n = (size_t)round * 20011 + 7;
        char *a = malloc(n);
        CHECK(a != NULL, "malloc returned NULL");
        memset(a, 1, n);
        a = lr(a, n + 100);
        CHECK(a != NULL && a[n - 1] == 1, "__libc_realloc of a malloc block failed");
        lf(a);
        char *b = lm(n);
        CHECK(b != NULL, "__libc_malloc returned NULL");
        memset(b, 2, n);
        b = realloc(b, n / 2 + 1);
        CHECK(b != NULL && b[n / 2] == 2, "realloc of a __libc_malloc block failed");
        CHECK(malloc_usable_size(b) >= n / 2 + 1, "malloc_usable_size of a __libc block");
        free(b);
    }
}

int main(void)
{
    test_free_errno();
    test_cfree();
    test_free_sized();
    test_mallinfo2();
    test_tuning_calls();
    test_libc_aliases();
    return 0;
}
