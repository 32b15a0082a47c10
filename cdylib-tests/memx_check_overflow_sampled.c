/*
 * memx_check_overflow_sampled: with the profiler on, checked mode reports
 * an overflow of a sampled object with the stack that allocated it (memx
 * only).
 *
 * MEMX_PROFILE_SAMPLE=1 samples every allocation; a sampled object has a
 * span of its own, and checked mode puts canary bytes before and after it
 * there (an overflow and an underflow are both reported with the stack). The report's second line lists the allocation's
 * return addresses; one of them must lie in the function that called
 * malloc here (alloc_here). No profile is written (no exit dump, no
 * signal). The case runs in a child (memx_check_cases.h) that must abort.
 */
// ENV: MEMX_CHECK=1 MEMX_PROFILE=memx_check_overflow_sampled MEMX_PROFILE_SAMPLE=1
// ENV: MEMX_PROFILE_AT_EXIT=0 MEMX_PROFILE_SIGNAL=0
#include "memx_check_cases.h"

static __attribute__((noinline)) char *alloc_here(size_t n)
{
    char *p = malloc_v(n);
    __asm__ volatile("" ::: "memory"); /* not a tail call */
    return p;
}

static void body(int which, int fd)
{
    char *p = alloc_here(100);
    CHECK(p != NULL, "malloc failed");
    send_ptr(fd, p);
    if (which == 0)
        memset(p, 'z', 101); /* into the canary after it */
    else
        p[escape(NULL) ? 0 : -1] = 'z'; /* into the canary before it */
    free_v(p);
}

static void check_stack(void);

int main(void)
{
    static const char *const want[] = {
        "memx: heap overflow detected in free(): object 0x",
        "(size class 0, 8192-byte span, 100 bytes requested): the canary after the object was "
        "overwritten at offset 100",
        "memx: allocated at 0x", NULL};
    expect_abort("101 bytes written to a sampled malloc(100)", body, 0, want);

    check_stack();
    static const char *const under[] = {
        "memx: heap underflow detected in free(): object 0x",
        "(size class 0, 8192-byte span, 100 bytes requested): the canary before the object was "
        "overwritten at offset -1",
        "memx: allocated at 0x", NULL};
    expect_abort("p[-1] of a sampled malloc(100)", body, 1, under);
    check_stack();
    return 0;
}

/* One of the frames of the last report's stack is a return address inside
 * alloc_here. */
static void check_stack(void)
{
    const char *line = strstr(last_err, "memx: allocated at");
    CHECK(line != NULL, "no stack line");
    uintptr_t lo = (uintptr_t)alloc_here, hi = lo + 256;
    int found = 0;
    for (const char *s = line; (s = strstr(s, " 0x")) != NULL; s += 3) {
        uintptr_t pc = (uintptr_t)strtoull(s + 1, NULL, 16);
        found |= pc > lo && pc < hi;
        if (strchr(line, '\n') && s > strchr(line, '\n'))
            break;
    }
    CHECK(found, "no frame of the allocation stack lies in alloc_here (%p): %s",
          (void *)alloc_here, line);
}
