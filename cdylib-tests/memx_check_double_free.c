/*
 * memx_check_double_free: checked mode (MEMX_CHECK=1) catches a second free
 * of a small object, and a realloc or malloc_usable_size of a freed one,
 * with one line naming the object's address and size class (memx only).
 *
 * Without checked mode a double free of a small object goes unnoticed (the
 * object would sit on a free list twice). Checked mode keeps a bit per
 * object, set while it is allocated. Another object of the same class
 * stays allocated, so the span (and its bitmap) stays in use.
 * Each case runs in a child (memx_check_cases.h) that must abort.
 */
// ENV: MEMX_CHECK=1
#include "memx_check_cases.h"
#include <malloc.h>

static void body(int which, int fd)
{
    /* 64 bytes of header, 24, 40 of canary and trailer: class 8, 128-byte
     * objects. */
    char *keep = malloc_v(24);
    char *p = malloc_v(24);
    CHECK(keep && p, "malloc failed");
    memset(p, 1, 24);
    send_ptr(fd, p);
    free_v(p);
    switch (which) {
    case 0:
        free_v(p);
        break;
    case 1:
        escape(realloc_v(p, 100));
        break;
    case 2:
        escape((void *)malloc_usable_size(escape(p)));
        break;
    }
    free_v(keep);
}

int main(void)
{
    static const char *const twice[] = {
        "memx: double free detected in free(): object 0x",
        "(size class 8, 128-byte objects): the object is not allocated", NULL};
    expect_abort("free(p); free(p) of 24 bytes", body, 0, twice);
    static const char *const re[] = {"memx: use after free detected in realloc(): object 0x",
                                     "(size class 8, 128-byte objects)", NULL};
    expect_abort("free(p); realloc(p, 100)", body, 1, re);
    static const char *const us[] = {
        "memx: use after free detected in malloc_usable_size(): object 0x", NULL};
    expect_abort("free(p); malloc_usable_size(p)", body, 2, us);

    /* And a correct program is left alone: objects of every size class
     * freed once, including through realloc and usable sizes. */
    for (size_t n = 0; n < 300000; n = n * 3 / 2 + 1) {
        char *q = malloc(n);
        CHECK(q != NULL, "malloc(%zu) failed", n);
        CHECK(malloc_usable_size(q) >= n, "usable size of %zu bytes too small", n);
        memset(q, 7, n);
        q = realloc(q, n + 10);
        CHECK(q != NULL, "realloc failed");
        free(q);
    }
    return 0;
}
