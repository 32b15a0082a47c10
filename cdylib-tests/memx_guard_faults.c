/*
 * memx_guard_faults: guarded sampling at a rate of one byte (every
 * allocation guarded) turns an overflow, an underflow and a use after free
 * into a SIGSEGV at the guilty access, after one report block on stderr
 * naming the kind, the faulting address, the object and its allocation
 * (and free) stacks; a double free aborts with the same block (memx only).
 *
 * Each case runs in a forked child that must die of the signal. The stacks
 * are checked against this program's own code: the report's first
 * allocation (free) frame must be a return address inside the function
 * that called malloc (free), and the frames of libc name its exported
 * __libc_start_main, as dladdr would.
 */
// ENV: MEMX_GUARD_SAMPLE=1 MEMX_GUARD_RATE=0
#include "memx_check_cases.h"
#include <malloc.h>
#include <stdint.h>

#define PAGE 4096u

/* The allocation and free sites the report must name. */
__attribute__((noinline)) static char *alloc_site(size_t n)
{
    char *p = malloc_v(n);
    escape(p);
    return p;
}

__attribute__((noinline)) static void free_site(char *p)
{
    free_v(p);
    escape(p);
}

/* The end of each site function, to bound its return addresses. */
__attribute__((noinline)) static void after_sites(void) { escape(NULL); }

/* A guarded object of n bytes placed against the guard page after it
 * (end_aligned) or right after the one before it. Guarded objects alternate
 * between the two, so one of two consecutive allocations is the one. */
static char *guarded(size_t n, int end_aligned)
{
    for (int i = 0; i < 4; i++) {
        char *p = alloc_site(n);
        int at_end = ((uintptr_t)p + n) % PAGE == 0;
        int at_start = (uintptr_t)p % PAGE == 0;
        if (end_aligned ? at_end : at_start)
            return p;
    }
    CHECK(0, "no %s-aligned guarded object among 4 of %zu bytes (is the object guarded?)",
          end_aligned ? "end" : "start", n);
    return NULL;
}

static void body(int which, int fd)
{
    switch (which) {
    case 0: { /* overflow: one byte past a 48-byte object */
        char *p = guarded(48, 1);
        send_ptr(fd, p);
        p[escape(NULL) ? 0 : 48] = 1;
        break;
    }
    case 1: { /* underflow: one byte before */
        char *p = guarded(48, 0);
        send_ptr(fd, p);
        p[escape(NULL) ? 0 : -1] = 1;
        break;
    }
    case 2: { /* use after free: a read */
        char *p = guarded(64, 1);
        send_ptr(fd, p);
        free_site(p);
        escape((void *)(uintptr_t)((volatile char *)p)[escape(NULL) ? 0 : 10]);
        break;
    }
    case 3: { /* double free */
        char *p = guarded(32, 1);
        send_ptr(fd, p);
        free_site(p);
        free_site(p);
        break;
    }
    }
}

/* The first frame's address after the line holding `header`. */
static uintptr_t first_frame(const char *err, const char *header)
{
    const char *h = strstr(err, header);
    CHECK(h != NULL, "no '%s' in the report: \"%s\"", header, err);
    const char *f = strstr(h, "#0 0x");
    CHECK(f != NULL, "no frame after '%s': \"%s\"", header, err);
    return (uintptr_t)strtoull(f + 3, NULL, 16);
}

static void check_site(const char *err, const char *header, void *fn, const char *name)
{
    uintptr_t a = first_frame(err, header);
    uintptr_t lo = (uintptr_t)fn, hi = (uintptr_t)after_sites;
    if (hi < lo)
        hi = lo + 256;
    CHECK(a > lo && a < hi, "the first '%s' frame %#lx is not in %s [%#lx, %#lx): \"%s\"",
          header, (unsigned long)a, name, (unsigned long)lo, (unsigned long)hi, err);
}

static void expect_report(const char *name, int which, int sig, const char *const *want)
{
    expect_signal(name, body, which, sig, want);
    CHECK(strstr(last_err, "__libc_start_main+0x") != NULL,
          "%s: libc's exported __libc_start_main is not named: \"%s\"", name, last_err);
    CHECK(strstr(last_err, "memx_guard_faults+0x") != NULL,
          "%s: no module+offset frame of this program: \"%s\"", name, last_err);
    check_site(last_err, "allocated by thread", (void *)alloc_site, "alloc_site");
}

int main(void)
{
    const char *overflow[] = {"guarded allocation: overflow", "0 bytes past the end of the 48-byte object at",
                              "faulting instruction:", "allocated by thread", "end of report", NULL};
    expect_report("overflow", 0, SIGSEGV, overflow);
    CHECK(strstr(last_err, "freed by thread") == NULL, "a live object has a free stack");

    const char *underflow[] = {"guarded allocation: underflow", "1 bytes before the 48-byte object at",
                               "allocated by thread", NULL};
    expect_report("underflow", 1, SIGSEGV, underflow);

    const char *uaf[] = {"guarded allocation: use-after-free", "10 bytes into the 64-byte object at",
                         "(freed)", "freed by thread", NULL};
    expect_report("use after free", 2, SIGSEGV, uaf);
    check_site(last_err, "freed by thread", (void *)free_site, "free_site");

    const char *twice[] = {"guarded allocation: double-free", "the 32-byte object at",
                           "freed by thread", NULL};
    expect_report("double free", 3, SIGABRT, twice);
    check_site(last_err, "freed by thread", (void *)free_site, "free_site");

    /* Ordinary use of guarded objects still works: realloc, usable size,
     * calloc, and every object's bytes are its own. */
    char *p = malloc_v(100);
    memset(p, 'a', 100);
    CHECK(malloc_usable_size(p) >= 100, "usable size %zu", malloc_usable_size(p));
    p = realloc_v(p, 3000);
    CHECK(p && p[99] == 'a', "realloc lost the contents");
    memset(p, 'b', 3000);
    char *z = calloc(10, 100);
    for (int i = 0; i < 1000; i++)
        CHECK(z[i] == 0, "calloc byte %d not zero", i);
    free_v(z);
    free_v(p);
    /* More objects than the pool's slots: the rest are served unguarded. */
    static char *many[2000];
    for (int i = 0; i < 2000; i++) {
        many[i] = malloc_v(24);
        memset(many[i], i & 0xff, 24);
    }
    for (int i = 0; i < 2000; i++) {
        CHECK(many[i][23] == (char)(i & 0xff), "object %d overwritten", i);
        free_v(many[i]);
    }
    say("ok: ordinary use\n");
    return 0;
}
