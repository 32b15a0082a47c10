/*
 * memx_check_use_after_free: checked mode (MEMX_CHECK=1) catches a write to
 * a freed small object when the object leaves its class's quarantine, and
 * does not hand a freed object out again at once (memx only).
 *
 * Checked mode fills a freed object with a pattern and keeps it in a FIFO
 * quarantine (64 objects of its class at most); when it leaves (here after
 * 200 more objects of the class were freed), the pattern is checked. Thread
 * caches are off in checked mode, so every free of the class goes through
 * the quarantine. Each case runs in a child (memx_check_cases.h) that must
 * abort.
 */
// ENV: MEMX_CHECK=1
#include "memx_check_cases.h"

static void body(int which, int fd)
{
    size_t n = which == 3 ? 3072 : 40;
    char *keep = malloc_v(n);
    char *p = malloc_v(n);
    CHECK(keep && p, "malloc failed");
    send_ptr(fd, p);
    free_v(p);
    char *volatile dangling = p;
    if (which == 0 || which == 3)
        dangling[20] = 'u'; /* write after free */
    else if (which == 1)
        memset(dangling, 0, 8); /* its first word */
    else
        memset(dangling - 16, 0, 8); /* its header (where a free-list link goes) */
    for (int i = 0; i < 200; i++) {
        char *q = malloc_v(n);
        CHECK(q != dangling, "the freed object was handed out again after %d others", i);
        free_v(q);
    }
    free_v(keep);
}

int main(void)
{
    static const char *const w0[] = {
        "memx: use after free detected in free(): object 0x",
        "(size class 9, 144-byte objects): the object was written after it was freed at offset 20",
        NULL};
    expect_abort("p[20] written after free(p)", body, 0, w0);
    static const char *const w1[] = {
        "memx: use after free detected in free(): object 0x",
        "(size class 9, 144-byte objects): the object was written after it was freed at offset 0",
        NULL};
    expect_abort("p[0..8] zeroed after free(p)", body, 1, w1);
    static const char *const w2[] = {"memx: use after free detected in free(): object 0x",
                                     "the object was written after it was freed at offset -16",
                                     NULL};
    expect_abort("p[-16..-8] zeroed after free(p)", body, 2, w2);
    static const char *const w3[] = {"memx: use after free detected in free(): object 0x",
                                     "the object was written after it was freed at offset 20",
                                     NULL};
    expect_abort("p[20] written after free(p) of 3 KiB", body, 3, w3);

    /* A freed object is not the next one handed out. */
    char *a = malloc_v(40);
    CHECK(a != NULL, "malloc failed");
    uintptr_t was = (uintptr_t)a;
    free_v(a);
    char *b = malloc_v(40);
    CHECK((uintptr_t)b != was, "malloc(40) handed out the object just freed (%p)", (void *)b);
    free_v(b);
    return 0;
}
