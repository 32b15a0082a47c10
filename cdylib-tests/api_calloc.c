/*
 * api_calloc: calloc returns zeroed memory and checks nmemb*size overflow.
 *
 * Allocator hazard: calloc skips the memset when it "knows" the memory is
 * fresh from the OS (mmap gives zero pages). An allocator that gets this
 * wrong returns recycled, dirty memory: a block freed to a thread cache, a
 * reused large span, or memory released with MADV_FREE (whose old contents
 * can still be read until the kernel reclaims it). So every size is first
 * allocated, filled with 0xAB and freed, and then calloc'ed again, several
 * times over, including large (>= 1 MiB) sizes, and large free memory of
 * mixed history (some released to the OS by malloc_trim, some dirty).
 *
 * Also: calloc(n, m) with n*m overflowing size_t must fail with NULL and
 * errno ENOMEM (not allocate the wrapped-around small size); calloc(0, x) and
 * calloc(x, 0) return valid unique pointers (glibc behaviour) that free takes.
 */
#include "check.h"
#include <malloc.h>

static void check_zero(const void *p, size_t n, const char *what, size_t a, size_t b)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++)
        CHECK(c[i] == 0, "%s(%zu, %zu)=%p: byte %zu is %#x, not zero", what, a, b, p, i, c[i]);
}

/* Allocates `count` blocks of n bytes, dirties them, frees them, then
 * callocs the same number of blocks (in the same order, which is the order a
 * LIFO free list hands them back) and checks they are all zero. */
static void dirty_then_calloc(size_t n, int count)
{
    void *v[64];
    for (int i = 0; i < count; i++) {
        v[i] = malloc(n);
        CHECK(v[i] != NULL, "malloc(%zu) returned NULL", n);
        memset(v[i], 0xAB, malloc_usable_size(v[i]));
    }
    for (int i = count - 1; i >= 0; i--)
        free(v[i]);
    for (int i = 0; i < count; i++) {
        /* Alternate the factor order: both must be handled identically. */
        size_t a = (i & 1) ? n : 1, b = (i & 1) ? 1 : n;
        v[i] = calloc(a, b);
        CHECK(v[i] != NULL, "calloc(%zu, %zu) returned NULL", a, b);
        CHECK(is_aligned(v[i], min_align(n)), "calloc(%zu, %zu)=%p not %zu-byte aligned", a, b,
              v[i], min_align(n));
        check_zero(v[i], n, "calloc", a, b);
        memset(v[i], 0xCD, n);
    }
    for (int i = 0; i < count; i++)
        free(v[i]);
}

int main(void)
{
    /* Every small size, with a reused dirty block each time. */
    for (size_t n = 1; n <= 4096; n++)
        dirty_then_calloc(n, (n < 1024) ? 8 : 2);
    /* Multi-element callocs (nmemb > 1) of small types. */
    for (size_t n = 1; n <= 512; n++) {
        void *d = malloc(n * 24);
        CHECK(d != NULL, "malloc(%zu) returned NULL", n * 24);
        memset(d, 0xAB, n * 24);
        free(d);
        void *p = calloc(n, 24);
        CHECK(p != NULL, "calloc(%zu, 24) returned NULL", n);
        check_zero(p, n * 24, "calloc", n, 24);
        free(p);
    }
    /* Medium and large sizes, several rounds so cached spans get reused. */
    static const size_t big[] = {5000, 8192, 12345, 32768, 65536, 100000, 131072, 262144, 500000,
                                 1 * MiB, 1 * MiB + 1, 2 * MiB - 4096, 3 * MiB + 17, 8 * MiB,
                                 17 * MiB};
    for (int round = 0; round < 4; round++)
        for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
            dirty_then_calloc(big[i], 3);

    /* Large calloc after freeing a large dirty block of a different size
     * (a split/merged free span must be zeroed too). */
    for (int round = 0; round < 4; round++) {
        void *d = malloc(48 * MiB);
        CHECK(d != NULL, "malloc(48 MiB) returned NULL");
        memset(d, 0xAB, 48 * MiB);
        free(d);
        void *a = calloc(1, 5 * MiB + 123);
        void *b = calloc(7 * MiB, 1);
        void *c = calloc(1024, 1024);
        CHECK(a && b && c, "large calloc returned NULL (%p %p %p)", a, b, c);
        check_zero(a, 5 * MiB + 123, "calloc", 1, 5 * MiB + 123);
        check_zero(b, 7 * MiB, "calloc", 7 * MiB, 1);
        check_zero(c, MiB, "calloc", 1024, 1024);
        free(a);
        free(b);
        free(c);
    }

    /* Free memory of mixed history: half of the blocks are freed and handed
     * back to the OS by malloc_trim (they read as zero afterwards), the
     * other half are freed dirty and stay resident. An allocator that
     * tracks "known zero" pages per span must not let a merge of the two
     * kinds skip the memset. */
    for (int round = 0; round < 3; round++) {
        enum { NB = 64 };
        void *b[NB];
        for (int i = 0; i < NB; i++) {
            b[i] = malloc(MiB);
            CHECK(b[i] != NULL, "malloc(1 MiB) returned NULL");
            memset(b[i], 0xAB, MiB);
        }
        for (int i = 0; i < NB; i += 2)
            free(b[i]);
        malloc_trim(0);
        for (int i = 1; i < NB; i += 2)
            free(b[i]);
        void *big = calloc(1, 60 * MiB);
        CHECK(big != NULL, "calloc(1, 60 MiB) returned NULL");
        check_zero(big, 60 * MiB, "calloc", 1, 60 * MiB);
        free(big);
        for (int i = 0; i < NB; i++) {
            b[i] = calloc(MiB + (size_t)i * 4096, 1);
            CHECK(b[i] != NULL, "calloc(~1 MiB) returned NULL");
            check_zero(b[i], MiB + (size_t)i * 4096, "calloc", MiB + (size_t)i * 4096, 1);
            memset(b[i], 0xEF, MiB);
        }
        for (int i = 0; i < NB; i++)
            free(b[i]);
    }

    /* Overflowing products: NULL + ENOMEM. */
    static const size_t ovf[][2] = {
        {SIZE_MAX, 2},
        {2, SIZE_MAX},
        {SIZE_MAX / 2 + 1, 2},
        {(size_t)1 << 32, (size_t)1 << 32},
        {((size_t)1 << 33) + 1, ((size_t)1 << 31)},
        {SIZE_MAX, SIZE_MAX},
        {65537, SIZE_MAX / 65536},
    };
    for (size_t i = 0; i < sizeof ovf / sizeof ovf[0]; i++) {
        errno = 0;
        void *p = escape(calloc(opaque_size(ovf[i][0]), opaque_size(ovf[i][1])));
        CHECK(p == NULL, "calloc(%#zx, %#zx) (overflows) returned %p", ovf[i][0], ovf[i][1], p);
        CHECK(errno == ENOMEM, "calloc(%#zx, %#zx) set errno %d, expected ENOMEM", ovf[i][0],
              ovf[i][1], errno);
    }
    /* No overflow but impossibly large: NULL + ENOMEM. */
    errno = 0;
    void *p = escape(calloc(1, opaque_size((size_t)PTRDIFF_MAX + 1)));
    CHECK(p == NULL && errno == ENOMEM, "calloc(1, PTRDIFF_MAX+1) = %p, errno %d", p, errno);

    /* Zero-sized: valid, unique, freeable. */
    void *z1 = escape(calloc(0, 16)), *z2 = escape(calloc(16, 0)), *z3 = escape(calloc(0, 0));
    CHECK(z1 && z2 && z3, "calloc with a zero factor returned NULL (%p %p %p)", z1, z2, z3);
    CHECK(z1 != z2 && z2 != z3 && z1 != z3, "zero-sized callocs not unique: %p %p %p", z1, z2,
          z3);
    free(z1);
    free(z2);
    free(z3);
    return 0;
}
