/*
 * memx_hardened: a forged free-list link is detected, never followed
 * (memx only; default settings, no checked mode).
 *
 * Free-list links are stored xor a random per-process key whose low four
 * bits are not zero, so a plain pointer (or zeros) written over a freed
 * object's link decodes to a misaligned address, which the next malloc
 * of the class rejects with one line instead of returning the attacker's
 * address. Cases: a write after free over the link of the object on top of
 * the thread cache's list; a heap overflow from one object into its free
 * neighbour; and zeros over a link. Each runs in a child
 * (memx_check_cases.h) that must abort. The thread cache finds the bad
 * link as its list's head, after the object that held it was handed out,
 * so the report names the link's value, not that object.
 */
#include "memx_check_cases.h"

static char target[256] __attribute__((aligned(64)));

static void body(int which, int fd)
{
    char *forged = which == 2 ? NULL : target + 64;
    if (which == 1) {
        /* Find two neighbours a, b = a + 48 (class 3), free b, overflow a. */
        char *objs[64];
        for (int i = 0; i < 64; i++)
            objs[i] = malloc_v(48);
        char *a = NULL, *b = NULL;
        for (int i = 0; i < 64 && !a; i++)
            for (int j = 0; j < 64; j++)
                if (objs[j] == objs[i] + 48) {
                    a = objs[i];
                    b = objs[j];
                    break;
                }
        CHECK(a != NULL, "no two neighbouring 48-byte objects among 64");
        check_write_all(fd, "-", 1); /* reported as a list head: no object */
        close(fd);
        free_v(b);
        memset(a, 'A', 48);
        memcpy(a + 48, &forged, sizeof forged); /* the overflow */
    } else {
        char *p = malloc_v(48);
        CHECK(p != NULL, "malloc failed");
        check_write_all(fd, "-", 1);
        close(fd);
        free_v(p);
        char *volatile dangling = p;
        memcpy(dangling, &forged, sizeof forged);
    }
    char *first = malloc_v(48);  /* the object whose link was forged */
    char *second = malloc_v(48); /* would be the forged address */
    if (second == target + 64)
        say("child: malloc returned the forged address %p\n", (void *)second);
    escape(first);
}

int main(void)
{
    static const char *const want[] = {"memx: corrupt free list (size class 3, 48-byte objects)",
                                       "(heap overflow or use after free)", NULL};
    expect_abort("a pointer written over a freed object's link", body, 0, want);
    expect_abort("an overflow into a free neighbour's link", body, 1, want);
    expect_abort("zeros written over a freed object's link", body, 2, want);
    return 0;
}
