/*
 * check.h: tiny shared helpers for the cdylib tests (C and C++).
 *
 * Every test is a standalone program that exits 0 on success. A failed
 * CHECK prints "FAIL <file>:<line>: CHECK(<cond>): <message>" to stderr and
 * ends the process with _exit(1) at once: no atexit handlers and no stdio
 * flushing, so a corrupted heap cannot turn a clear failure into a hang or a
 * second crash, and the macro is usable from threads, forked children and
 * (with care) signal handlers.
 *
 * The messages are formatted with vsnprintf into a stack buffer and written
 * with write(2), which does not allocate.
 *
 * Environment set by scripts/cdylib-tests.sh:
 *   MEMX_TEST_LIB    basename of the preloaded library ("" = none, glibc)
 *   CDYLIB_TESTS_BIN directory holding the built test programs and helper
 *                    shared objects (also derivable from /proc/self/exe)
 */
#ifndef CDYLIB_TESTS_CHECK_H
#define CDYLIB_TESTS_CHECK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Writes all of buf to fd, retrying on EINTR/short writes; keeps errno. */
static inline void check_write_all(int fd, const char *buf, size_t len)
{
    int saved = errno;
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        buf += n;
        len -= (size_t)n;
    }
    errno = saved;
}

/* printf to stderr without allocating (stack buffer + write(2)). */
__attribute__((format(printf, 1, 2)))
static inline void say(const char *fmt, ...)
{
    char buf[1024];
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf)
        n = sizeof buf - 1;
    check_write_all(2, buf, (size_t)n);
    errno = saved;
}

__attribute__((noreturn, format(printf, 4, 5)))
static inline void check_fail(const char *file, int line, const char *cond,
                              const char *fmt, ...)
{
    char buf[1536];
    int n = snprintf(buf, sizeof buf, "FAIL %s:%d: CHECK(%s): ", file, line, cond);
    if (n < 0 || (size_t)n >= sizeof buf)
        n = 0;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    if ((size_t)(n + m) > sizeof buf - 2)
        m = (int)(sizeof buf - 2) - n;
    buf[n + m] = '\n';
    check_write_all(2, buf, (size_t)(n + m + 1));
    _exit(1);
}

/* CHECK(cond, fmt, ...): the message is mandatory and should name the
 * values involved, e.g. CHECK(p != NULL, "malloc(%zu) returned NULL", n). */
#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (__builtin_expect(!(cond), 0))                                     \
            check_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);               \
    } while (0)

/* Hides a pointer from the optimiser so that malloc/free pairs (and calls
 * whose results are only compared against NULL) are not elided or folded:
 * GCC may delete a malloc whose result is only freed. */
static inline void *escape(void *p)
{
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

/* A size the compiler cannot see through (avoids -Walloc-size-larger-than
 * for deliberately absurd requests, and constant folding). */
static inline size_t opaque_size(size_t n)
{
    __asm__ volatile("" : "+r"(n));
    return n;
}

static inline int is_aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* Basename of the preloaded library, "" when none (plain glibc). */
static inline const char *test_lib(void)
{
    const char *s = getenv("MEMX_TEST_LIB");
    return s ? s : "";
}
static inline int lib_is_memx(void) { return strcmp(test_lib(), "libmemx.so") == 0; }
static inline int lib_is_glibc(void) { return test_lib()[0] == '\0'; }
static inline int lib_is_jemalloc(void) { return strstr(test_lib(), "jemalloc") != NULL; }

/* The alignment malloc(n) must at least have. glibc (x86-64) and memx give
 * 16 bytes to every block; other allocators (jemalloc) only give what C
 * requires: the largest power of two <= n, up to 16, for small blocks. */
static inline size_t min_align(size_t n)
{
    if (lib_is_glibc() || lib_is_memx() || n >= 16)
        return 16;
    size_t a = 1;
    while (a * 2 <= n)
        a *= 2;
    return a;
}

/* Whether the function `name` comes from the same object as malloc. An
 * allocator that does not define, say, pvalloc leaves glibc's in place, and
 * glibc's pvalloc returns glibc heap memory that the preloaded free cannot
 * take; such entry points are only tested when provided by the allocator. */
static inline int same_object_as_malloc(const char *name)
{
    Dl_info a, b;
    void *m = dlsym(RTLD_DEFAULT, "malloc"), *f = dlsym(RTLD_DEFAULT, name);
    if (!m || !f || !dladdr(m, &a) || !dladdr(f, &b))
        return 0;
    return a.dli_fbase == b.dli_fbase;
}

/* Monotonic time in seconds. */
static inline double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Resident set size in bytes from /proc/self/statm (read without stdio so
 * the measurement itself does not allocate). Returns 0 if unreadable. */
static inline size_t rss_bytes(void)
{
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *sp = strchr(buf, ' ');
    if (!sp)
        return 0;
    return (size_t)strtoull(sp + 1, NULL, 10) * (size_t)sysconf(_SC_PAGESIZE);
}

#define MiB ((size_t)1 << 20)

/* Deterministic byte pattern keyed on (pointer, size): a block that is
 * handed to the wrong owner, overlapped by another block, or partly
 * recycled shows up as a mismatch. */
static inline uint64_t pattern_seed(const void *p, size_t n)
{
    uint64_t x = (uint64_t)(uintptr_t)p * 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    x ^= x >> 29;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 32;
    return x;
}

static inline void pattern_fill(void *p, size_t n)
{
    uint64_t s = pattern_seed(p, n);
    unsigned char *b = (unsigned char *)p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = s + i;
        memcpy(b + i, &w, 8);
    }
    for (; i < n; i++)
        b[i] = (unsigned char)(s >> (i & 7));
}

/* Returns the offset of the first wrong byte, or (size_t)-1 if intact. */
static inline size_t pattern_check(const void *p, size_t n)
{
    uint64_t s = pattern_seed(p, n);
    const unsigned char *b = (const unsigned char *)p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = s + i, got;
        memcpy(&got, b + i, 8);
        if (got != w) {
            for (size_t k = 0; k < 8; k++)
                if (b[i + k] != ((const unsigned char *)&w)[k])
                    return i + k;
        }
    }
    for (; i < n; i++)
        if (b[i] != (unsigned char)(s >> (i & 7)))
            return i;
    return (size_t)-1;
}

/* Small, fast, per-thread PRNG (xorshift64*). */
static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

#ifdef __cplusplus
}
#endif

#endif /* CDYLIB_TESTS_CHECK_H */
