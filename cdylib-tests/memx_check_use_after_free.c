/*
 * memx_check_use_after_free: checked mode (MEMX_CHECK=1) catches a write to
 * a freed small object when the object is handed out again (memx only).
 *
 * Checked mode fills a freed object with a pattern and checks it when the
 * object is reused; a write over the free-list link in its first word is
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
    send_ptr(fd, p);
    free_v(p);
    char *volatile dangling = p;
    if (which == 0)
        dangling[20] = 'u'; /* write after free */
    else
        memset(dangling, 0, 8); /* over the free-list link */
    char *q = malloc_v(40);
    say("child: malloc returned %p\n", (void *)q);
    free_v(keep);
}

int main(void)
{
    static const char *const w0[] = {
        "memx: use after free detected in malloc(): object 0x",
        "(size class 4, 64-byte objects): the object was written after it was freed at offset 20",
        NULL};
    expect_abort("p[20] written after free(p)", body, 0, w0);
    static const char *const w1[] = {
        "memx: corrupt free list (size class 4, 64-byte objects): link 0x",
        "in free object 0x", "(heap overflow or use after free)", NULL};
    expect_abort("link of a freed object zeroed", body, 1, w1);
    return 0;
}
