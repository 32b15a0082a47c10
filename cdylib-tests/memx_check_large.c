/*
 * memx_check_large: checked mode (MEMX_CHECK=1) places each large object
 * (one with a span of its own) between inaccessible guard pages and keeps
 * a freed one inaccessible in a quarantine, so that an overflow, an
 * underflow or a use after free of it faults at the guilty instruction
 * with one line naming the kind, the object and the offset (memx only).
 *
 * The object ends (up to 15 bytes of canary) right before the guard page:
 * a 1-byte overflow of a 1 MiB object faults; an underflow is found by the
 * canary before it on free, or faults in the guard page at the span's
 * start. Each case runs in a child (memx_check_cases.h) that must die of
 * SIGSEGV (faults) or SIGABRT (found on free).
 */
// ENV: MEMX_CHECK=1
#include "memx_check_cases.h"
#include <malloc.h>

#define MIB (1024 * 1024)

static volatile char sink;

static void body(int which, int fd)
{
    char *volatile p = malloc_v(MIB);
    CHECK(p != NULL, "malloc failed");
    memset(p, 1, MIB);
    send_ptr(fd, p);
    switch (which) {
    case 0: /* one byte past the end */
        p[MIB] = 'o';
        break;
    case 1: /* a copy that runs 1 MiB past the end */
        memset(p, 'o', 2 * MIB);
        break;
    case 2: /* the byte before: the canary, found by free */
        p[-1] = 'u';
        free_v(p);
        break;
    case 3: /* 1 MiB before, written downwards: the guard page faults */
        for (size_t i = 1; i <= MIB; i++)
            p[-(ptrdiff_t)i] = 'u';
        break;
    case 4: /* write after free */
        free_v(p);
        p[100] = 'f';
        break;
    case 5: /* read after free */
        free_v(p);
        sink = p[MIB - 1];
        break;
    case 6: { /* the object's memory is not handed out again at once */
        free_v(p);
        char *q = malloc_v(MIB);
        CHECK(q != p, "a freed large object was reused at once");
        p[0] = 'r';
        break;
    }
    case 7: /* a second free */
        free_v(p);
        free_v(p);
        break;
    case 8: /* realloc of a freed object */
        free_v(p);
        escape(realloc_v(p, 10));
        break;
    }
}

/* An aligned large object: its alignment holds, and one byte past it
 * faults. */
static void aligned_body(int which, int fd)
{
    size_t align = which == 0 ? 4096 : 64;
    size_t n = which == 0 ? MIB : 300001;
    void *v = NULL;
    CHECK(posix_memalign(&v, align, n) == 0, "posix_memalign failed");
    CHECK(((uintptr_t)v & (align - 1)) == 0, "%p not aligned to %zu", v, align);
    char *volatile p = v;
    send_ptr(fd, p);
    memset(p, 0, n + 64);
}

int main(void)
{
    static const char *const w0[] = {
        "memx: heap overflow detected by SIGSEGV at instruction 0x",
        "1048576 bytes requested): the guard page after the object was accessed at offset 1048576",
        NULL};
    expect_signal("p[1 MiB] of malloc(1 MiB)", body, 0, SIGSEGV, w0);
    expect_signal("memset 2 MiB into malloc(1 MiB)", body, 1, SIGSEGV, w0);
    static const char *const w2[] = {
        "memx: heap underflow detected in free(): object 0x",
        "1048576 bytes requested): the canary before the object was overwritten at offset -1",
        NULL};
    expect_abort("p[-1] of malloc(1 MiB)", body, 2, w2);
    static const char *const w3[] = {
        "memx: heap underflow detected by SIGSEGV at instruction 0x",
        "the guard page before the object was accessed at offset -", NULL};
    expect_signal("1 MiB below malloc(1 MiB), downwards", body, 3, SIGSEGV, w3);
    static const char *const w4[] = {
        "memx: use after free detected by SIGSEGV at instruction 0x",
        "the freed object (quarantined) was accessed at offset 100", NULL};
    expect_signal("p[100] written after free(p)", body, 4, SIGSEGV, w4);
    static const char *const w5[] = {"memx: use after free detected by SIGSEGV",
                                     "accessed at offset 1048575", NULL};
    expect_signal("p[1 MiB - 1] read after free(p)", body, 5, SIGSEGV, w5);
    static const char *const w6[] = {"memx: use after free detected by SIGSEGV",
                                     "accessed at offset 0", NULL};
    expect_signal("p[0] written after free(p); malloc(1 MiB)", body, 6, SIGSEGV, w6);
    static const char *const w7[] = {
        "memx: double free detected in free(): object 0x",
        "1048576 bytes requested): the object was freed already (it is in the quarantine)", NULL};
    expect_abort("free(p); free(p) of 1 MiB", body, 7, w7);
    static const char *const w8[] = {
        "memx: use after free detected in realloc(): object 0x",
        "1048576 bytes requested): the object was freed already (it is in the quarantine)", NULL};
    expect_abort("free(p); realloc(p, 10) of 1 MiB", body, 8, w8);
    static const char *const a0[] = {"memx: heap overflow detected by SIGSEGV",
                                     "1048576 bytes requested", "at offset 1048576", NULL};
    expect_signal("64 bytes past posix_memalign(4096, 1 MiB)", aligned_body, 0, SIGSEGV, a0);
    static const char *const a1[] = {"memx: heap overflow detected by SIGSEGV",
                                     "300001 bytes requested", NULL};
    expect_signal("64 bytes past posix_memalign(64, 300001)", aligned_body, 1, SIGSEGV, a1);

    /* A correct program is left alone, and the quarantine stays bounded:
     * many large objects of many sizes, freed in turn. */
    for (int i = 0; i < 3000; i++) {
        size_t n = 200000 + (size_t)(i % 37) * 40000;
        char *p = malloc(n);
        CHECK(p != NULL && ((uintptr_t)p & 15) == 0, "malloc(%zu): %p", n, (void *)p);
        CHECK(malloc_usable_size(p) == n, "usable %zu of %zu", malloc_usable_size(p), n);
        memset(p, 7, n);
        char *q = realloc(p, n + 1000);
        CHECK(q != NULL && q[n - 1] == 7, "realloc");
        q[n + 999] = 1;
        free(q);
    }
    char *z = calloc(1, 3 * MIB);
    CHECK(z != NULL, "calloc failed");
    for (size_t i = 0; i < 3 * MIB; i += 4093)
        CHECK(z[i] == 0, "calloc byte %zu", i);
    free(z);
    return 0;
}
