/*
 * memx_check_use_after_free: checked mode (MEMX_CHECK=1) catches a write to
 * a freed small object when the object is handed out again (memx only).
 *
 * Checked mode fills a freed object with a pattern and checks it when the
 * object is reused; a write over the free-list link (in the first word of
 * the object's slot, under its header: 16 bytes before the object) is
 * caught by the hardened free lists. Thread caches are off in checked mode,
 * so the next malloc of the class reuses the object just freed (another one
 * stays allocated to keep the span). Each case runs in a child
 * (memx_check_cases.h) that must abort.
 */
// ENV: MEMX_CHECK=1
#include "memx_check_cases.h"

static void body(int which, int fd)
{
    char *keep = malloc_v(40);
    char *p = malloc_v(40);
    CHECK(keep && p, "malloc failed");
    send_ptr(fd, which == 2 ? p - 16 : p);
    free_v(p);
    char *volatile dangling = p;
    if (which == 0)
        dangling[20] = 'u'; /* write after free */
    else if (which == 1)
        memset(dangling, 0, 8); /* its first word */
    else
        memset(dangling - 16, 0, 8); /* over the free-list link */
    char *q = malloc_v(40);
    say("child: malloc returned %p\n", (void *)q);
    free_v(keep);
}

int main(void)
{
    static const char *const w0[] = {
        "memx: use after free detected in malloc(): object 0x",
        "(size class 5, 80-byte objects): the object was written after it was freed at offset 20",
        NULL};
    expect_abort("p[20] written after free(p)", body, 0, w0);
    static const char *const w1[] = {
        "memx: use after free detected in malloc(): object 0x",
        "(size class 5, 80-byte objects): the object was written after it was freed at offset 0",
        NULL};
    expect_abort("p[0..8] zeroed after free(p)", body, 1, w1);
    static const char *const w2[] = {
        "memx: corrupt free list (size class 5, 80-byte objects): link 0x",
        "in free object 0x", "(heap overflow or use after free)", NULL};
    expect_abort("link of a freed object zeroed", body, 2, w2);
    return 0;
}
