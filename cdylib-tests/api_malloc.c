/*
 * api_malloc: the basic malloc/free/malloc_usable_size contract.
 *
 * - every size 0..4096, then powers of two and in-between sizes (2^k-1,
 *   2^k+1, 1.5*2^k) up to 64 MiB: non-NULL, 16-byte aligned (x86-64 glibc's
 *   MALLOC_ALIGNMENT, which programs rely on for SSE types and long double;
 *   memx is held to it too, other allocators only to C's minimum),
 *   malloc_usable_size >= requested, every byte (up to the requested size and
 *   up to the usable size, which glibc documents as writable) writable;
 * - all the small blocks are kept alive at once and re-verified at the end,
 *   so two live blocks that overlap (a size-class or free-list bug) are
 *   caught;
 * - malloc(0) returns a unique non-NULL pointer (glibc behaviour, relied on
 *   by code that treats NULL as failure) that free accepts;
 * - free(NULL) is a no-op; malloc_usable_size(NULL) is 0;
 * - malloc(SIZE_MAX) and malloc(PTRDIFF_MAX + 1) fail with NULL and errno
 *   ENOMEM (glibc refuses anything above PTRDIFF_MAX: pointer differences
 *   inside such an object would overflow).
 */
#include "check.h"
#include <malloc.h>

#define NSMALL 4097

static void *small[NSMALL];

static void fill_and_check(void *p, size_t n, size_t usable, const char *what)
{
    /* The requested bytes get the pattern; the slack up to the usable size
     * gets 0x5A and is checked too (glibc documents it as usable). */
    pattern_fill(p, n);
    memset((char *)p + n, 0x5A, usable - n);
    size_t bad = pattern_check(p, n);
    CHECK(bad == (size_t)-1, "%s(%zu)=%p: byte %zu did not read back", what, n, p, bad);
    for (size_t i = n; i < usable; i++)
        CHECK(((unsigned char *)p)[i] == 0x5A, "%s(%zu)=%p: slack byte %zu (usable %zu)",
              what, n, p, i, usable);
}

static void one_large(size_t n)
{
    void *p = malloc(n);
    CHECK(p != NULL, "malloc(%zu) returned NULL (errno %d)", n, errno);
    CHECK(is_aligned(p, min_align(n)), "malloc(%zu)=%p not %zu-byte aligned", n, p, min_align(n));
    size_t u = malloc_usable_size(p);
    CHECK(u >= n, "malloc_usable_size(malloc(%zu)) = %zu", n, u);
    fill_and_check(p, n, u, "malloc");
    free(p);
}

int main(void)
{
    /* Every small size, all alive together. */
    for (size_t n = 0; n < NSMALL; n++) {
        void *p = malloc(n);
        CHECK(p != NULL, "malloc(%zu) returned NULL (errno %d)", n, errno);
        CHECK(is_aligned(p, min_align(n)), "malloc(%zu)=%p not %zu-byte aligned", n, p,
              min_align(n));
        size_t u = malloc_usable_size(p);
        CHECK(u >= n, "malloc_usable_size(malloc(%zu)=%p) = %zu", n, p, u);
        fill_and_check(p, n, u, "malloc");
        /* Leave only the pattern over the requested bytes for the final
         * overlap check (the slack of one block is not another's data). */
        small[n] = p;
    }
    /* Distinctness / no overlap: re-check every pattern after all the
     * allocations, then also check the pointers pairwise are not equal
     * (sort-free check: the pattern depends on the pointer, so two blocks
     * sharing memory would have overwritten each other's pattern, except for
     * size 0, checked separately below). */
    for (size_t n = 1; n < NSMALL; n++) {
        size_t bad = pattern_check(small[n], n);
        CHECK(bad == (size_t)-1, "malloc(%zu)=%p: byte %zu changed while other blocks were "
              "allocated and written (overlapping blocks?)", n, small[n], bad);
    }
    for (size_t n = 0; n < NSMALL; n++)
        free(small[n]);

    /* Powers of two and in-between sizes up to 64 MiB. */
    for (int k = 1; k <= 26; k++) {
        size_t b = (size_t)1 << k;
        one_large(b - 1);
        one_large(b);
        one_large(b + 1);
        if (k < 26)
            one_large(b + b / 2);
    }
    /* Page-ish and odd sizes around typical size-class/large boundaries. */
    static const size_t odd[] = {4095, 4097, 8191, 12288, 16383, 16385, 32767, 65535, 65537,
                                 131071, 131073, 262143, 262145, 524289, 1048575, 1048577,
                                 2097151, 2097153, 4194305, 3 * MiB + 5, 33554431};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++)
        one_large(odd[i]);

    /* malloc(0): unique, non-NULL, freeable. */
    void *z[64];
    for (int i = 0; i < 64; i++) {
        z[i] = escape(malloc(0));
        CHECK(z[i] != NULL, "malloc(0) #%d returned NULL", i);
        CHECK(is_aligned(z[i], min_align(0)), "malloc(0)=%p not %zu-byte aligned", z[i],
              min_align(0));
        for (int j = 0; j < i; j++)
            CHECK(z[i] != z[j], "malloc(0) returned %p twice while both are live", z[i]);
    }
    for (int i = 0; i < 64; i++)
        free(z[i]);

    /* free(NULL) is a no-op and keeps errno. */
    errno = 4321;
    free(NULL);
    CHECK(errno == 4321, "free(NULL) changed errno to %d", errno);
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu",
          malloc_usable_size(NULL));

    /* Impossible sizes: NULL + ENOMEM. */
    static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 4095, SIZE_MAX - 16, (size_t)PTRDIFF_MAX + 1,
                                  (size_t)PTRDIFF_MAX + 4096, SIZE_MAX / 2 + 12345};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        errno = 0;
        void *p = escape(malloc(opaque_size(huge[i])));
        CHECK(p == NULL, "malloc(%#zx) returned %p, expected NULL", huge[i], p);
        CHECK(errno == ENOMEM, "malloc(%#zx) set errno %d, expected ENOMEM (%d)", huge[i], errno,
              ENOMEM);
    }

    /* The allocator still works after the failures. */
    void *p = malloc(100);
    CHECK(p != NULL, "malloc(100) after failed huge requests returned NULL");
    fill_and_check(p, 100, malloc_usable_size(p), "malloc");
    free(p);
    return 0;
}
