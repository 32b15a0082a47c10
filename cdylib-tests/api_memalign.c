/*
 * api_memalign: posix_memalign, aligned_alloc, memalign, valloc, pvalloc.
 *
 * - posix_memalign for every power-of-two alignment from sizeof(void*) to
 *   1 MiB and sizes 0, 1, 7, 100, 4096, 100000, 3 MiB: returns 0, the block
 *   is aligned, writable end to end, usable_size >= size; blocks of each
 *   alignment are kept alive together to catch overlaps;
 * - posix_memalign with an invalid alignment (0, 3, 24, sizeof(void*)/2,
 *   a power of two below sizeof(void*)) returns EINVAL, leaves *memptr
 *   unmodified and does NOT touch errno (POSIX: the error is the return
 *   value; programs that check errno afterwards break otherwise);
 * - posix_memalign of an impossible size returns ENOMEM;
 * - aligned_alloc with power-of-two alignments works; with a non-power-of-two
 *   alignment (24) it fails with NULL and errno EINVAL (C17 7.22.3.1;
 *   glibc >= 2.38). glibc 2.36 (the one on these machines) still accepts it
 *   and rounds the alignment up, so that check is not asserted without a
 *   preload;
 * - memalign(align, n) is aligned for powers of two up to 1 MiB;
 * - valloc is page aligned; pvalloc is page aligned with usable size >= n
 *   rounded up to a page multiple; pvalloc(0) is non-NULL and page aligned
 *   (glibc 2.36 then reports a usable size of only 24, so nothing more is
 *   asked of it);
 * - aligned blocks can be freed with free() and resized with realloc.
 */
#include "check.h"
#include <malloc.h>

static void use_block(void *p, size_t align, size_t n, const char *what)
{
    CHECK(p != NULL, "%s(align %zu, size %zu) returned NULL (errno %d)", what, align, n, errno);
    CHECK(is_aligned(p, align), "%s(align %zu, size %zu) = %p is not aligned", what, align, n,
          p);
    size_t u = malloc_usable_size(p);
    CHECK(u >= n, "%s(align %zu, size %zu) = %p: usable size %zu", what, align, n, p, u);
    pattern_fill(p, n);
}

int main(void)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    static const size_t sizes[] = {0, 1, 7, 100, 4096, 100000, 3 * MiB};
    enum { NS = sizeof sizes / sizeof sizes[0] };

    /* posix_memalign: every alignment x size, the whole row alive at once. */
    for (size_t align = sizeof(void *); align <= MiB; align *= 2) {
        void *row[NS];
        for (int i = 0; i < NS; i++) {
            void *p = (void *)0x1;
            int rc = posix_memalign(&p, align, sizes[i]);
            CHECK(rc == 0, "posix_memalign(align %zu, size %zu) returned %d", align, sizes[i], rc);
            use_block(p, align, sizes[i], "posix_memalign");
            row[i] = p;
        }
        for (int i = 0; i < NS; i++) {
            size_t bad = pattern_check(row[i], sizes[i]);
            CHECK(bad == (size_t)-1, "posix_memalign(%zu, %zu)=%p: byte %zu overwritten "
                  "(overlapping blocks?)", align, sizes[i], row[i], bad);
        }
        for (int i = 0; i < NS; i++)
            free(row[i]);
    }
    /* Many small over-aligned blocks alive together (aligned small-object
     * paths often carve blocks from a shared span). */
    for (size_t align = 32; align <= 8192; align *= 2) {
        void *v[200];
        for (int i = 0; i < 200; i++) {
            size_t n = 1 + (size_t)i * 37 % 3000;
            CHECK(posix_memalign(&v[i], align, n) == 0, "posix_memalign(%zu, %zu) failed", align,
                  n);
            use_block(v[i], align, n, "posix_memalign");
        }
        for (int i = 0; i < 200; i++) {
            size_t n = 1 + (size_t)i * 37 % 3000;
            CHECK(pattern_check(v[i], n) == (size_t)-1,
                  "posix_memalign(%zu, %zu)=%p overwritten (overlap?)", align, n, v[i]);
            free(v[i]);
        }
    }

    /* Invalid alignments: EINVAL, *memptr and errno untouched. */
    static const size_t bad_align[] = {0, 1, 2, 3, sizeof(void *) / 2, 12, 24, 48, 100,
                                       4096 + 8, SIZE_MAX, (size_t)1 << 63 | 8};
    for (size_t i = 0; i < sizeof bad_align / sizeof bad_align[0]; i++) {
        void *p = (void *)0x1234;
        errno = 9876;
        int rc = posix_memalign(&p, opaque_size(bad_align[i]), 64);
        CHECK(rc == EINVAL, "posix_memalign(align %#zx) returned %d, expected EINVAL (%d)",
              bad_align[i], rc, EINVAL);
        CHECK(errno == 9876, "posix_memalign(align %#zx) changed errno to %d", bad_align[i],
              errno);
        CHECK(p == (void *)0x1234, "posix_memalign(align %#zx) failed but wrote *memptr = %p",
              bad_align[i], p);
    }
    /* Impossible size: ENOMEM (errno is unspecified here). */
    {
        void *p = (void *)0x1234;
        int rc = posix_memalign(&p, 64, opaque_size(SIZE_MAX - 1000));
        CHECK(rc == ENOMEM, "posix_memalign(64, SIZE_MAX-1000) returned %d, expected ENOMEM", rc);
        CHECK(p == (void *)0x1234, "failed posix_memalign wrote *memptr = %p", p);
        rc = posix_memalign(&p, MiB, opaque_size((size_t)PTRDIFF_MAX + 1));
        CHECK(rc == ENOMEM, "posix_memalign(1 MiB, PTRDIFF_MAX+1) returned %d", rc);
    }

    /* aligned_alloc. */
    for (size_t align = 1; align <= MiB; align *= 2) {
        for (int i = 0; i < NS; i++) {
            void *p = aligned_alloc(align, sizes[i]);
            use_block(p, align, sizes[i], "aligned_alloc");
            free(p);
        }
    }
    {
        errno = 0;
        void *p = escape(aligned_alloc(opaque_size(24), 96));
        if (lib_is_glibc()) {
            /* glibc 2.36 rounds 24 up to 32 and succeeds. */
            if (p)
                CHECK(is_aligned(p, 8), "aligned_alloc(24, 96) = %p", p);
        } else {
            CHECK(p == NULL, "aligned_alloc(24, 96) returned %p; a non-power-of-two alignment "
                  "must fail (C17, glibc >= 2.38)", p);
            CHECK(errno == EINVAL, "aligned_alloc(24, 96) set errno %d, expected EINVAL", errno);
        }
        free(p);
        errno = 0;
        p = escape(aligned_alloc(64, opaque_size(SIZE_MAX - 10)));
        CHECK(p == NULL && errno == ENOMEM, "aligned_alloc(64, SIZE_MAX-10) = %p errno %d", p,
              errno);
    }

    /* memalign: powers of two up to 1 MiB. */
    for (size_t align = 1; align <= MiB; align *= 2) {
        for (int i = 0; i < NS; i++) {
            void *p = memalign(align, sizes[i]);
            use_block(p, align, sizes[i], "memalign");
            /* and realloc keeps the data */
            size_t n = sizes[i] < 256 ? sizes[i] : 256;
            unsigned char keep[256];
            memcpy(keep, p, n);
            void *q = realloc(p, sizes[i] + 1000);
            CHECK(q != NULL, "realloc of memalign(%zu, %zu) block failed", align, sizes[i]);
            CHECK(memcmp(q, keep, n) == 0, "realloc of memalign(%zu, %zu) lost data", align,
                  sizes[i]);
            free(q);
        }
    }

    /* valloc: page aligned. */
    for (int i = 0; i < NS; i++) {
        void *p = valloc(sizes[i]);
        use_block(p, page, sizes[i], "valloc");
        free(p);
    }
    /* pvalloc: page aligned, usable size rounded up to whole pages. Not
     * defined by jemalloc (glibc's would then run, on glibc's heap). */
    static const size_t psizes[] = {0, 1, 100, 4095, 4096, 4097, 10000, 100000, 3 * MiB + 1};
    int have_pvalloc = same_object_as_malloc("pvalloc");
    if (!have_pvalloc) {
        CHECK(!lib_is_memx(), "pvalloc is not provided by memx");
        say("note: pvalloc not provided by the preloaded allocator; not tested\n");
    }
    for (size_t i = 0; have_pvalloc && i < sizeof psizes / sizeof psizes[0]; i++) {
        size_t n = psizes[i];
        void *p = pvalloc(n);
        size_t rounded = (n + page - 1) / page * page; /* 0 for pvalloc(0) */
        CHECK(p != NULL, "pvalloc(%zu) returned NULL", n);
        CHECK(is_aligned(p, page), "pvalloc(%zu) = %p not page aligned", n, p);
        size_t u = malloc_usable_size(p);
        CHECK(u >= rounded, "pvalloc(%zu) = %p: usable size %zu < %zu (rounded to pages)", n, p,
              u, rounded);
        memset(p, 0x77, rounded);
        (void)escape(p);
        free(p);
    }
    return 0;
}
