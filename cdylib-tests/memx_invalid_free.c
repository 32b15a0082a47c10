/*
 * memx_invalid_free: memx detects invalid frees and aborts with a message
 * (memx only).
 *
 * glibc aborts with "free(): invalid pointer" on some of these and silently
 * corrupts its heap on others; memx checks every pointer handed to free/
 * realloc against its own mappings and, for anything it did not hand out,
 * prints "invalid pointer" with the pointer's value and aborts (SIGABRT),
 * instead of corrupting memory or crashing later somewhere unrelated.
 *
 * Each case runs in a forked child with its stderr on a pipe and core dumps
 * disabled (RLIMIT_CORE 0). Before the bad call the child sends the
 * pointer, formatted with %p, through a second pipe; the parent requires
 * the child to die of SIGABRT with stderr containing "invalid pointer" and
 * that hex value (leading zeros and letter case are tolerated).
 */
#include "memx_check_cases.h"

static char global_buf[256];

enum {
    C_STACK,
    C_GLOBAL,
    C_SMALL_INTERIOR,
    C_LARGE_INTERIOR,
    C_LARGE_DOUBLE_FREE,
    C_REALLOC_STACK,
    NCASES
};
static const char *const names[NCASES] = {
    "free(stack address)",
    "free(pointer into a global)",
    "free((char*)malloc(100) + 8)",
    "free((char*)malloc(1 MiB) + 4096)",
    "double free of a 1 MiB block",
    "realloc(stack address, 100)",
};

static void child(int which, int ptr_fd)
{
    char stack_buf[128];
    memset(stack_buf, 1, sizeof stack_buf);
    void *p = NULL;
    switch (which) {
    case C_STACK:
        p = escape(stack_buf + 16);
        send_ptr(ptr_fd, p);
        free(p);
        break;
    case C_GLOBAL:
        p = escape(global_buf + 32);
        send_ptr(ptr_fd, p);
        free(p);
        break;
    case C_SMALL_INTERIOR: {
        char *b = malloc(100);
        CHECK(b != NULL, "malloc failed");
        p = escape(b + 8);
        send_ptr(ptr_fd, p);
        free(p);
        break;
    }
    case C_LARGE_INTERIOR: {
        char *b = malloc(MiB);
        CHECK(b != NULL, "malloc failed");
        memset(b, 2, MiB);
        p = escape(b + 4096);
        send_ptr(ptr_fd, p);
        free(p);
        break;
    }
    case C_LARGE_DOUBLE_FREE: {
        p = escape(malloc(MiB));
        CHECK(p != NULL, "malloc failed");
        memset(p, 3, MiB);
        send_ptr(ptr_fd, p);
        free_v(p);
        free_v(p);
        break;
    }
    case C_REALLOC_STACK: {
        p = escape(stack_buf + 32);
        send_ptr(ptr_fd, p);
        void *q = realloc(p, 100);
        escape(q);
        break;
    }
    }
    say("child: the invalid call returned normally\n");
    _exit(0);
}

int main(void)
{
    static const char *const want[] = {"invalid pointer", NULL};
    for (int c = 0; c < NCASES; c++)
        expect_abort(names[c], child, c, want);
    return 0;
}
