/*
 * realloc_aligned_growth: growing an aligned block of 128-256 KiB with
 * realloc must give at least the bytes asked for, with the contents kept.
 *
 * Allocator hazard (found by fuzz_model under memx): a block from memalign
 * with a large alignment is a whole number of pages, which need not be a
 * size class's size (184 KiB, 23 pages, where the classes step by 16 KiB).
 * A realloc shortcut "the new size is in the same class as the old usable
 * size, so stay in place" then returned the old 184 KiB block for a request
 * of up to 192 KiB, and the program wrote past its end.
 *
 * For each alignment (8 KiB .. 1 MiB) and each size from 120 KiB to 256 KiB
 * in 4 KiB + 8 steps: memalign, fill, then realloc to a few sizes above the
 * usable size; each result must have malloc_usable_size >= the request, the
 * old contents, and be writable to its last byte.
 */
#include "check.h"
#include <malloc.h>

static unsigned char pat(size_t i, size_t n)
{
    return (unsigned char)(i * 31 + (i >> 8) + n);
}

int main(void)
{
    long cases = 0;
    for (size_t align = 8192; align <= MiB; align *= 2) {
        for (size_t n = 120 * 1024; n <= 256 * 1024; n += 4096 + 8) {
            unsigned char *p = memalign(align, n);
            CHECK(p != NULL && is_aligned(p, align), "memalign(%zu, %zu) = %p", align, n,
                  (void *)p);
            size_t u = malloc_usable_size(p);
            CHECK(u >= n, "memalign(%zu, %zu): usable %zu", align, n, u);
            for (size_t i = 0; i < n; i++)
                p[i] = pat(i, n);
            size_t targets[] = {u + 1, u + 4096, u + 8191, u + 16 * 1024};
            for (size_t t = 0; t < sizeof targets / sizeof targets[0]; t++) {
                size_t m = targets[t];
                size_t before = malloc_usable_size(p);
                unsigned char *q = realloc(p, m);
                CHECK(q != NULL, "realloc(%zu -> %zu) returned NULL", before, m);
                size_t uq = malloc_usable_size(q);
                CHECK(uq >= m, "memalign(%zu, %zu), realloc from usable %zu to %zu: usable %zu "
                      "(%s)", align, n, before, m, uq, q == p ? "stayed in place" : "moved");
                for (size_t i = 0; i < n; i++)
                    CHECK(q[i] == pat(i, n), "memalign(%zu, %zu), realloc to %zu: byte %zu "
                          "changed", align, n, m, i);
                memset(q + n, 0xee, m - n); /* every byte asked for is ours */
                p = q;
                cases++;
            }
            free(p);
        }
    }
    say("realloc_aligned_growth: %ld reallocs checked\n", cases);
    return 0;
}
