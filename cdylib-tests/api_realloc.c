/*
 * api_realloc: realloc and reallocarray.
 *
 * - growing and shrinking across sizes 1..1 MiB (and large blocks up to
 *   64 MiB, where allocators move pages with mremap or grow in place) keeps
 *   the prefix min(old, new) intact; the result stays 16-byte aligned and
 *   usable_size >= the new size;
 * - realloc(NULL, n) behaves as malloc(n); realloc(NULL, 0) returns non-NULL;
 * - realloc(p, 0) with p != NULL frees p and returns NULL. That is glibc's
 *   behaviour (C17 made it implementation-defined, C23 undefined); memx
 *   promises glibc compatibility, so it is asserted for glibc and memx only.
 *   jemalloc, by default, returns a minimum-size allocation instead, which
 *   is accepted (and freed) for other libraries;
 * - realloc(p, SIZE_MAX) and realloc(p, PTRDIFF_MAX+1) fail with NULL and
 *   ENOMEM and leave the old block valid and unchanged (a classic bug is
 *   freeing it, or the size overflowing into a tiny allocation); jemalloc
 *   5.3 leaves errno alone there, which is tolerated for it only;
 * - reallocarray overflow -> NULL + ENOMEM with the old block intact;
 *   reallocarray without overflow works like realloc;
 * - realloc of a block from posix_memalign keeps its contents.
 */
#include "check.h"
#include <malloc.h>

/* Called through volatile pointers where realloc is expected to FAIL and the
 * old block is used afterwards: GCC's -Wuse-after-free cannot know that. */
static void *(*volatile realloc_v)(void *, size_t) = realloc;
static void *(*volatile reallocarray_v)(void *, size_t, size_t) = reallocarray;

/* Contents of a block, independent of its address (so they survive a move):
 * byte i = f(seed, i). */
static void fill(unsigned char *p, size_t from, size_t to, unsigned seed)
{
    for (size_t i = from; i < to; i++)
        p[i] = (unsigned char)(i * 131 + seed + (i >> 9));
}

static void verify(const unsigned char *p, size_t n, unsigned seed, size_t oldn, size_t newn)
{
    for (size_t i = 0; i < n; i++)
        CHECK(p[i] == (unsigned char)(i * 131 + seed + (i >> 9)),
              "realloc %zu -> %zu (=%p): byte %zu of the kept prefix changed", oldn, newn, p, i);
}

static void *checked_realloc(void *p, size_t oldn, size_t newn, unsigned seed)
{
    unsigned char *q = realloc(p, newn);
    CHECK(q != NULL, "realloc(%p, %zu) from size %zu returned NULL (errno %d)", p, newn, oldn,
          errno);
    CHECK(is_aligned(q, min_align(newn)), "realloc(.., %zu) = %p not %zu-byte aligned", newn, q,
          min_align(newn));
    CHECK(malloc_usable_size(q) >= newn, "usable_size %zu < %zu after realloc",
          malloc_usable_size(q), newn);
    verify(q, oldn < newn ? oldn : newn, seed, oldn, newn);
    if (newn > oldn)
        fill(q, oldn, newn, seed);
    return q;
}

int main(void)
{
    /* Grow 1 -> 1 MiB in ~10% steps, then shrink back down. */
    for (unsigned seed = 1; seed <= 3; seed++) {
        size_t n = 1;
        unsigned char *p = malloc(n);
        CHECK(p != NULL, "malloc(1) returned NULL");
        fill(p, 0, n, seed);
        while (n < MiB) {
            size_t m = n + n / (8 + seed) + 1;
            p = checked_realloc(p, n, m, seed);
            n = m;
        }
        while (n > 1) {
            size_t m = n - n / (7 + seed) - 1;
            if (m < 1)
                m = 1;
            p = checked_realloc(p, n, m, seed);
            n = m;
        }
        free(p);
    }

    /* Every small size to every nearby size (crossing size classes), with
     * other blocks interleaved so that in-place growth is not always
     * possible. */
    for (size_t a = 1; a <= 600; a += 7) {
        for (size_t b = 1; b <= 1200; b += 13) {
            unsigned char *p = malloc(a);
            void *blocker = malloc(a);
            CHECK(p && blocker, "malloc(%zu) returned NULL", a);
            fill(p, 0, a, (unsigned)(a + b));
            p = checked_realloc(p, a, b, (unsigned)(a + b));
            free(blocker);
            free(p);
        }
    }

    /* Large blocks: grow/shrink through sizes where mremap or in-place
     * growth of mapped memory is likely. */
    {
        static const size_t seq[] = {100, 200000, MiB, 3 * MiB + 7, 17 * MiB, 64 * MiB,
                                     2 * MiB,  130000, 70 * MiB, 5000, 1};
        size_t n = seq[0];
        unsigned char *p = malloc(n);
        CHECK(p != NULL, "malloc(%zu) returned NULL", n);
        fill(p, 0, n, 77);
        for (size_t i = 1; i < sizeof seq / sizeof seq[0]; i++) {
            /* An unrelated large block in between, so moves happen. */
            void *other = malloc(seq[i] / 2 + 1);
            p = checked_realloc(p, n, seq[i], 77);
            free(other);
            n = seq[i];
        }
        free(p);
    }

    /* realloc(NULL, n) = malloc(n). */
    for (size_t n = 0; n < 5000; n += 333) {
        unsigned char *p = realloc(NULL, n);
        CHECK(p != NULL, "realloc(NULL, %zu) returned NULL", n);
        CHECK(malloc_usable_size(p) >= n, "realloc(NULL, %zu): usable %zu", n,
              malloc_usable_size(p));
        memset(p, 0x11, n);
        free(p);
    }
    void *z = escape(realloc(NULL, 0));
    CHECK(z != NULL, "realloc(NULL, 0) returned NULL (glibc returns a unique pointer)");
    free(z);

    /* realloc(p, 0): glibc frees p and returns NULL. */
    for (int i = 0; i < 100; i++) {
        void *p = malloc(i < 50 ? 40 : 2 * MiB);
        CHECK(p != NULL, "malloc returned NULL");
        memset(p, 1, 40);
        void *r = realloc_v(p, 0);
        if (lib_is_glibc() || lib_is_memx()) {
            CHECK(r == NULL, "realloc(%p, 0) returned %p; glibc frees and returns NULL", p, r);
        } else {
            free(r); /* e.g. jemalloc: a minimum-size allocation */
        }
    }

    /* Failing realloc keeps the old block. */
    static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 100, (size_t)PTRDIFF_MAX + 1,
                                  SIZE_MAX / 2 + 4096};
    static const size_t olds[] = {24, 1000, 70000, 3 * MiB};
    for (size_t o = 0; o < sizeof olds / sizeof olds[0]; o++) {
        unsigned char *p = malloc(olds[o]);
        CHECK(p != NULL, "malloc(%zu) returned NULL", olds[o]);
        fill(p, 0, olds[o], 5);
        for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
            errno = 0;
            void *r = realloc_v(p, huge[i]);
            CHECK(r == NULL, "realloc(%p, %#zx) returned %p, expected NULL", p, huge[i], r);
            /* jemalloc 5.3 returns NULL here without setting errno. */
            CHECK(errno == ENOMEM || (lib_is_jemalloc() && errno == 0),
                  "realloc(%p, %#zx) set errno %d, expected ENOMEM", p, huge[i], errno);
            verify(p, olds[o], 5, olds[o], huge[i]);
        }
        /* reallocarray overflow. */
        errno = 0;
        void *r = reallocarray_v(p, SIZE_MAX / 2, 3);
        CHECK(r == NULL && errno == ENOMEM, "reallocarray(%p, SIZE_MAX/2, 3) = %p, errno %d", p,
              r, errno);
        errno = 0;
        r = reallocarray_v(p, (size_t)1 << 33, (size_t)1 << 31);
        CHECK(r == NULL && errno == ENOMEM, "reallocarray(%p, 2^33, 2^31) = %p, errno %d", p, r,
              errno);
        verify(p, olds[o], 5, olds[o], 0);
        /* The old block is still a valid, resizable block. */
        p = checked_realloc(p, olds[o], olds[o] * 2, 5);
        free(p);
    }

    /* reallocarray without overflow. */
    {
        unsigned char *p = reallocarray(NULL, 10, 10);
        CHECK(p != NULL, "reallocarray(NULL, 10, 10) returned NULL");
        fill(p, 0, 100, 9);
        p = reallocarray(p, 1000, 12);
        CHECK(p != NULL, "reallocarray(p, 1000, 12) returned NULL");
        verify(p, 100, 9, 100, 12000);
        CHECK(malloc_usable_size(p) >= 12000, "usable %zu < 12000", malloc_usable_size(p));
        memset(p + 100, 0, 12000 - 100);
        p = reallocarray(p, 3, 7);
        CHECK(p != NULL, "reallocarray(p, 3, 7) returned NULL");
        verify(p, 21, 9, 12000, 21);
        free(p);
    }

    /* realloc of an over-aligned block keeps its contents. */
    for (size_t align = 32; align <= 65536; align *= 4) {
        void *v = NULL;
        CHECK(posix_memalign(&v, align, 300) == 0, "posix_memalign(%zu, 300) failed", align);
        unsigned char *p = v;
        fill(p, 0, 300, 3);
        p = checked_realloc(p, 300, 5000, 3);
        p = checked_realloc(p, 5000, 200, 3);
        p = checked_realloc(p, 200, 2 * MiB, 3);
        free(p);
    }
    return 0;
}
