/*
 * memx_check_underflow: checked mode (MEMX_CHECK=1) catches writes before
 * the start of a small object (a heap underflow) when it is freed or
 * reallocated, with one line naming the object's address, size class,
 * request and the offset (negative) of the written byte nearest the object
 * (memx only).
 *
 * Checked mode puts a header of canary bytes before every small object
 * (64 bytes, or the alignment of an aligned one above that). Each case runs in a
 * child (memx_check_cases.h) that must abort. Large objects' underflows
 * are in memx_check_large.
 */
// ENV: MEMX_CHECK=1
#include "memx_check_cases.h"
#include <malloc.h>

static void body(int which, int fd)
{
    switch (which) {
    case 0: { /* the byte before a small object */
        char *p = malloc_v(40);
        CHECK(p != NULL, "malloc failed");
        send_ptr(fd, p);
        p[escape(NULL) ? 0 : -1] = 'u';
        free_v(p);
        break;
    }
    case 1: { /* 32 bytes before a small object, found by realloc */
        char *p = malloc_v(24);
        CHECK(p != NULL, "malloc failed");
        send_ptr(fd, p);
        memset((char *)escape(p) - 32, 'u', 32);
        escape(realloc_v(p, 100));
        break;
    }
    case 2: { /* the byte before a medium object (3 KiB) */
        char *p = malloc_v(3072);
        CHECK(p != NULL, "malloc failed");
        send_ptr(fd, p);
        p[escape(NULL) ? 0 : -1] = 'u';
        free_v(p);
        break;
    }
    case 3: { /* 8 bytes before an object aligned to 64 (header: 64 bytes) */
        void *v = NULL;
        CHECK(posix_memalign(&v, 64, 100) == 0, "posix_memalign failed");
        char *p = v;
        send_ptr(fd, p);
        memset(p - 8, 0, 8);
        free_v(p);
        break;
    }
    case 5: { /* 32 and 64 bytes before a tiny object: still its header */
        char *p = malloc_v(8);
        CHECK(p != NULL, "malloc failed");
        send_ptr(fd, p);
        p[escape(NULL) ? 0 : -32] ^= 'A';
        p[escape(NULL) ? 0 : -64] ^= 'A';
        free_v(p);
        break;
    }
    case 4: { /* 200 bytes before an object aligned to 256 */
        char *p = memalign(256, 1000);
        CHECK(p != NULL, "memalign failed");
        send_ptr(fd, p);
        p[escape(NULL) ? 0 : -200] = 'u';
        free_v(p);
        break;
    }
    }
}

int main(void)
{
    static const char *const w0[] = {
        "memx: heap underflow detected in free(): object 0x",
        "(size class 9, 144-byte objects, 40 bytes requested): the canary before the object was "
        "overwritten at offset -1",
        NULL};
    expect_abort("p[-1] of malloc(40)", body, 0, w0);
    static const char *const w1[] = {"memx: heap underflow detected in realloc(): object 0x",
                                     "24 bytes requested", "at offset -1", NULL};
    expect_abort("32 bytes before malloc(24), then realloc", body, 1, w1);
    static const char *const w2[] = {"memx: heap underflow detected in free(): object 0x",
                                     "3072 bytes requested", "at offset -1", NULL};
    expect_abort("p[-1] of malloc(3072)", body, 2, w2);
    static const char *const w3[] = {"memx: heap underflow detected in free(): object 0x",
                                     "100 bytes requested", "at offset -1", NULL};
    expect_abort("8 bytes before posix_memalign(64, 100)", body, 3, w3);
    static const char *const w4[] = {"memx: heap underflow detected in free(): object 0x",
                                     "1000 bytes requested", "at offset -200", NULL};
    expect_abort("p[-200] of memalign(256, 1000)", body, 4, w4);

    static const char *const w5[] = {"memx: heap underflow detected in free(): object 0x",
                                     "8 bytes requested", "at offset -32", NULL};
    expect_abort("p[-32] and p[-64] of malloc(8)", body, 5, w5);

    /* Aligned objects keep their alignment, and their usable size is the
     * request; writing all of it (and nothing before) is fine. */
    size_t aligns[] = {16, 32, 64, 128, 256, 512, 1024, 4096};
    for (size_t i = 0; i < sizeof aligns / sizeof *aligns; i++) {
        for (size_t n = 1; n < 3000; n += 97) {
            void *v = NULL;
            CHECK(posix_memalign(&v, aligns[i], n) == 0, "posix_memalign failed");
            CHECK(((uintptr_t)v & (aligns[i] - 1)) == 0, "%p not aligned to %zu", v, aligns[i]);
            CHECK(malloc_usable_size(v) == n, "usable size %zu of %zu", malloc_usable_size(v), n);
            memset(v, 0xfd ^ 1, n);
            v = realloc(v, n + 5);
            CHECK(v && ((uintptr_t)v & 15) == 0, "realloc: %p", v);
            free(v);
        }
    }
    for (size_t n = 0; n < 5000; n += 13) {
        char *p = calloc(1, n);
        CHECK(p && ((uintptr_t)p & 15) == 0, "calloc(%zu): %p", n, (void *)p);
        for (size_t j = 0; j < n; j++)
            CHECK(p[j] == 0, "calloc(%zu)[%zu] = %d", n, j, p[j]);
        free(p);
    }
    return 0;
}
