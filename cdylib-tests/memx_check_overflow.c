/*
 * memx_check_overflow: checked mode (MEMX_CHECK=1) catches writes past the
 * end of an object when it is freed (or reallocated), with one line naming
 * the object's address, size class, request and the first bad offset
 * (memx only).
 *
 * Checked mode puts canary bytes (at least 32) right after the requested
 * bytes of every small object, and up to 15 after a large one, before its
 * guard page (memx_check_large). Each case runs in a child
 * (memx_check_cases.h) that must abort.
 */
// ENV: MEMX_CHECK=1
#include "memx_check_cases.h"

static void body(int which, int fd)
{
    switch (which) {
    case 0: { /* one byte past 40: class 9 (64 + 40 + 40 -> 144-byte objects) */
        char *p = malloc_v(40);
        CHECK(p != NULL, "malloc failed");
        send_ptr(fd, p);
        memset(p, 'x', 41);
        free_v(p);
        break;
    }
    case 1: { /* an odd size: a byte past 13 */
        char *p = malloc_v(13);
        CHECK(p != NULL, "malloc failed");
        send_ptr(fd, p);
        p[escape(NULL) ? 0 : 13] = 0;
        free_v(p);
        break;
    }
    case 2: { /* found by realloc */
        char *p = malloc_v(100);
        CHECK(p != NULL, "malloc failed");
        send_ptr(fd, p);
        p[escape(NULL) ? 0 : 104] = 1;
        escape(realloc_v(p, 200));
        break;
    }
    case 3: { /* a large object: 300001 bytes, 15 canary bytes before the
               * guard page (memx_check_large: past them, a fault) */
        char *p = malloc_v(300001);
        CHECK(p != NULL, "malloc failed");
        send_ptr(fd, p);
        memset(p, 'y', 300002);
        free_v(p);
        break;
    }
    case 5: { /* 32 bytes past the end of a tiny object: still its canary */
        char *p = malloc_v(8);
        CHECK(p != NULL, "malloc failed");
        send_ptr(fd, p);
        p[escape(NULL) ? 0 : 8 - 1 + 32] ^= 'A';
        free_v(p);
        break;
    }
    case 4: { /* an aligned object */
        void *v = NULL;
        CHECK(posix_memalign(&v, 64, 64) == 0, "posix_memalign failed");
        char *p = v;
        send_ptr(fd, p);
        p[escape(NULL) ? 0 : 64] = 2;
        free_v(p);
        break;
    }
    }
}

int main(void)
{
    static const char *const w0[] = {
        "memx: heap overflow detected in free(): object 0x",
        "(size class 9, 144-byte objects, 40 bytes requested): the canary after the object was "
        "overwritten at offset 40",
        NULL};
    expect_abort("41 bytes written to malloc(40)", body, 0, w0);
    static const char *const w1[] = {"(size class 8, 128-byte objects, 13 bytes requested)",
                                     "at offset 13", NULL};
    expect_abort("p[13] of malloc(13)", body, 1, w1);
    static const char *const w2[] = {"memx: heap overflow detected in realloc(): object 0x",
                                     "100 bytes requested", "at offset 104", NULL};
    expect_abort("p[104] of malloc(100), then realloc", body, 2, w2);
    static const char *const w3[] = {"memx: heap overflow detected in free(): object 0x",
                                     "(size class 0, 311296-byte span, 300001 bytes requested)",
                                     "at offset 300001", NULL};
    expect_abort("300002 bytes written to malloc(300001)", body, 3, w3);
    static const char *const w4[] = {"heap overflow detected in free()", "64 bytes requested",
                                     "at offset 64", NULL};
    expect_abort("p[64] of posix_memalign(64, 64)", body, 4, w4);

    static const char *const w5[] = {"heap overflow detected in free()", "8 bytes requested",
                                     "the canary after the object was overwritten at offset 39",
                                     NULL};
    expect_abort("p[39] of malloc(8)", body, 5, w5);

    /* Writing exactly the requested bytes (and the usable size) is fine. */
    for (size_t n = 1; n < 5000; n += 7) {
        char *p = malloc(n);
        CHECK(p != NULL, "malloc failed");
        memset(p, 0xfd ^ 1, n);
        free(p);
    }
    return 0;
}
