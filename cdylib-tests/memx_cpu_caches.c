/*
 * memx_cpu_caches: the per-CPU caches (restartable sequences on glibc's rseq
 * registration) through malloc and free, under each hazard rseq has (memx
 * only).
 *
 * Every phase moves objects between threads through shared mailboxes (so
 * chains of one thread's frees reach another thread's mallocs through the
 * CPU caches), fills each object with a pattern derived from its address and
 * size, and checks the pattern when the object is freed: an object handed to
 * two owners, or lost and reused, shows up as a broken pattern.
 *
 * 1. Migration: each worker changes its own CPU affinity every few dozen
 *    operations, so operations begun on one CPU are restarted on another.
 * 2. Signals: a thread sends SIGUSR1 to the workers as fast as it can (the
 *    handler counts), interrupting sections mid-way.
 * 3. Fork: while the workers run, the main thread forks; each child
 *    allocates and frees through the caches it inherited and checks them.
 * 4. Thousands of threads: 4,000 short-lived threads, 256 alive at a time,
 *    each allocating a burst; afterwards malloc_stats' "bytes in per-CPU
 *    caches" stays within its bound (CPUs x classes x MEMX_CPU_CACHE_BYTES).
 * 5. Modes: malloc_stats names "per-CPU (rseq)" when glibc registered rseq
 *    (`__rseq_size` > 0), "idle" while one thread runs on several CPUs and
 *    "in use" while the workers outnumber the CPUs; "thread caches only" in
 *    a child run with
 *    GLIBC_TUNABLES=glibc.pthread.rseq=0, which repeats phases 1-3 there.
 * 6. A spent budget: a child run with MEMX_THREAD_CACHE_BYTES=64K, where
 *    the first thread claims the whole budget and the others pass their
 *    objects one at a time to and from the CPU caches, repeats phases 1-4;
 *    malloc_stats must count such objects when rseq is registered.
 * 7. Sleepers: more request threads than CPUs, each allocating bursts that
 *    it checks and frees, with a short sleep after each. They sleep through
 *    their scavenge periods, so malloc_stats must count thread caches given
 *    back by sleeping threads when rseq is registered, and none without.
 */
#include "check.h"
#include <malloc.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

extern char **environ;
extern const unsigned int __rseq_size __attribute__((weak));

#define WORKERS 6
#define BOX 512

/* Mailboxes: an object's address | its size << 48, or 0. */
static _Atomic uint64_t box[BOX];
static _Atomic int stop;
static _Atomic long handled;

static void check_and_free(uint64_t entry)
{
    void *p = (void *)(entry & ((1ull << 48) - 1));
    size_t n = entry >> 48;
    CHECK(pattern_check(p, n) == (size_t)-1, "object %p of %zu bytes changed while in a mailbox", p, n);
    free(p);
}

static void give(void *p, size_t n)
{
    /* Swap into a random mailbox; free what was there (after checking it). */
    static _Atomic unsigned long slot_seed = 1;
    unsigned long i = ((slot_seed += 0x9e3779b97f4a7c15ul) >> 7) % BOX;
    uint64_t old = atomic_exchange(&box[i], (uint64_t)(uintptr_t)p | (uint64_t)n << 48);
    if (old)
        check_and_free(old);
}

static int ncpus(void)
{
    cpu_set_t set;
    CHECK(sched_getaffinity(0, sizeof set, &set) == 0, "sched_getaffinity");
    return CPU_COUNT(&set);
}

static int cpu_list[CPU_SETSIZE];
static int ncpu_list;

static void pin_to(int k)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu_list[k % ncpu_list], &set);
    CHECK(sched_setaffinity(0, sizeof set, &set) == 0, "sched_setaffinity");
}

struct worker_arg {
    int id;
    int migrate;
};

static void *worker(void *argp)
{
    struct worker_arg *arg = argp;
    uint64_t rng = 0x1234567 + arg->id;
    void *own[64] = {0};
    size_t own_n[64] = {0};
    for (long step = 0; !atomic_load(&stop); step++) {
        if (arg->migrate && step % 32 == 0)
            pin_to(arg->id + (int)(step / 32));
        uint64_t r = rng_next(&rng);
        size_t n = 16 + (r >> 20) % 2048;
        int k = (int)(r >> 40) % 64;
        if (own[k]) {
            CHECK(pattern_check(own[k], own_n[k]) == (size_t)-1, "object %p of %zu bytes changed",
                  own[k], own_n[k]);
            if (r & 1)
                give(own[k], own_n[k]);
            else
                free(own[k]);
            own[k] = NULL;
        }
        own[k] = malloc(n);
        CHECK(own[k] != NULL, "malloc(%zu)", n);
        own_n[k] = n;
        pattern_fill(own[k], n);
    }
    for (int k = 0; k < 64; k++)
        if (own[k]) {
            CHECK(pattern_check(own[k], own_n[k]) == (size_t)-1, "object changed");
            free(own[k]);
        }
    return NULL;
}

static void on_usr1(int sig)
{
    (void)sig;
    handled++;
}

static void stats_report(char *buf, size_t len);
/* What malloc_stats must say while the workers run ("" = nothing). */
static const char *in_use_check = "";

/* Runs WORKERS workers for `seconds`; with `signals`, a thread signals them
 * meanwhile; with `forks`, the main thread forks children that allocate. */
static void run_workers(double seconds, int migrate, int signals, int forks)
{
    pthread_t t[WORKERS], killer = 0;
    struct worker_arg args[WORKERS];
    atomic_store(&stop, 0);
    for (int i = 0; i < WORKERS; i++) {
        args[i] = (struct worker_arg){i, migrate};
        CHECK(pthread_create(&t[i], NULL, worker, &args[i]) == 0, "pthread_create");
    }
    double end = now_sec() + seconds;
    int children = 0;
    if (in_use_check[0]) {
        /* WORKERS threads with caches on fewer CPUs: the layer is in use. */
        usleep(50000);
        char report[4096];
        stats_report(report, sizeof report);
        CHECK(strstr(report, in_use_check) != NULL, "expected \"%s\" with %d threads on %d CPUs:\n%s",
              in_use_check, WORKERS + 1, ncpus(), report);
    }
    while (now_sec() < end) {
        if (signals)
            for (int i = 0; i < WORKERS; i++)
                pthread_kill(t[i], SIGUSR1);
        if (forks && children < 20) {
            pid_t pid = fork();
            CHECK(pid >= 0, "fork");
            if (pid == 0) {
                /* The inherited caches: allocate through them, check, free. */
                void *p[2000];
                for (int round = 0; round < 20; round++) {
                    for (int i = 0; i < 2000; i++) {
                        size_t n = 16 + (size_t)(i * 37 + round) % 2000;
                        p[i] = malloc(n);
                        if (!p[i])
                            _exit(3);
                        pattern_fill(p[i], n);
                    }
                    for (int i = 0; i < 2000; i++) {
                        size_t n = 16 + (size_t)(i * 37 + round) % 2000;
                        if (pattern_check(p[i], n) != (size_t)-1)
                            _exit(4);
                        free(p[i]);
                    }
                }
                _exit(0);
            }
            int status;
            CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
            CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "fork child failed (status %d)", status);
            children++;
        }
        if (!signals && !forks)
            usleep(10000);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < WORKERS; i++)
        CHECK(pthread_join(t[i], NULL) == 0, "pthread_join");
    (void)killer;
    if (forks)
        CHECK(children > 0, "no fork child ran");
    for (int i = 0; i < BOX; i++) {
        uint64_t e = atomic_exchange(&box[i], 0);
        if (e)
            check_and_free(e);
    }
}

static void *burst_thread(void *arg)
{
    (void)arg;
    void *p[128];
    for (int r = 0; r < 4; r++) {
        for (int i = 0; i < 128; i++) {
            size_t n = 16 + (size_t)(i * 131 + r * 7) % 2032;
            p[i] = malloc(n);
            CHECK(p[i] != NULL, "malloc");
            pattern_fill(p[i], n);
        }
        for (int i = 0; i < 128; i++) {
            size_t n = 16 + (size_t)(i * 131 + r * 7) % 2032;
            CHECK(pattern_check(p[i], n) == (size_t)-1, "burst object changed");
            free(p[i]);
        }
    }
    return NULL;
}

static void thousands_of_threads(void)
{
    enum { TOTAL = 4000, ALIVE = 256 };
    pthread_t t[ALIVE];
    for (int done = 0; done < TOTAL; done += ALIVE) {
        for (int i = 0; i < ALIVE; i++)
            CHECK(pthread_create(&t[i], NULL, burst_thread, NULL) == 0, "pthread_create");
        for (int i = 0; i < ALIVE; i++)
            CHECK(pthread_join(t[i], NULL) == 0, "pthread_join");
    }
}

/* malloc_stats' report, captured from fd 2. */
static void stats_report(char *buf, size_t len)
{
    int fd = memfd_create("stats", 0);
    CHECK(fd >= 0, "memfd_create");
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    malloc_stats();
    dup2(saved, 2);
    close(saved);
    ssize_t n = pread(fd, buf, len - 1, 0);
    CHECK(n > 0, "no malloc_stats output");
    buf[n] = 0;
    close(fd);
}

static size_t stats_figure(const char *report, const char *label)
{
    const char *at = strstr(report, label);
    CHECK(at != NULL, "malloc_stats has no line \"%s\":\n%s", label, report);
    at += strlen(label);
    while (*at == ' ')
        at++;
    return strtoull(at, NULL, 10);
}

/* A request thread: bursts of 128 objects (16 B-2 KiB), each checked and
 * freed, then a 2 ms sleep (running under a tenth of the time on any machine);
 * 16 MiB in all, four scavenge periods. */
static void *request_thread(void *arg)
{
    unsigned long seed = (unsigned long)(uintptr_t)arg * 2654435761u + 1;
    void *p[128];
    size_t len[128];
    for (int r = 0; r < 128; r++) {
        for (int i = 0; i < 128; i++) {
            seed = seed * 6364136223846793005ul + 1442695040888963407ul;
            len[i] = 16 + (seed >> 33) % 2033;
            p[i] = malloc(len[i]);
            CHECK(p[i] != NULL, "malloc");
            pattern_fill(p[i], len[i]);
        }
        for (int i = 0; i < 128; i++) {
            CHECK(pattern_check(p[i], len[i]) == (size_t)-1, "request object changed");
            free(p[i]);
        }
        usleep(2000);
    }
    return NULL;
}

/* Phase 7; returns the count of caches given back by sleeping threads. */
static size_t sleepers(void)
{
    enum { MAX = 64 };
    int n = ncpus() + 14;
    n = n > MAX ? MAX : n;
    pthread_t t[MAX];
    for (int i = 0; i < n; i++)
        CHECK(pthread_create(&t[i], NULL, request_thread, (void *)(uintptr_t)i) == 0,
              "pthread_create");
    for (int i = 0; i < n; i++)
        CHECK(pthread_join(t[i], NULL) == 0, "pthread_join");
    char report[4096];
    stats_report(report, sizeof report);
    size_t given = stats_figure(report, "thread caches given back by threads that slept between bursts");
    say("sleepers: %d threads, %zu caches given back\n", n, given);
    return given;
}

/* Runs this program again as `self MODE` with `setting` added to (or
 * replacing its name in) the environment; checks that it passed. */
static void run_child(char *mode, char *setting)
{
    char self[1024];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0, "readlink");
    self[n] = 0;
    size_t name_len = strchr(setting, '=') - setting + 1;
    char *envp[512];
    int k = 0;
    for (char **e = environ; *e && k < 500; e++)
        if (strncmp(*e, setting, name_len) != 0)
            envp[k++] = *e;
    envp[k++] = setting;
    envp[k] = NULL;
    char *args[] = {self, mode, NULL};
    pid_t pid;
    CHECK(posix_spawn(&pid, self, NULL, NULL, args, envp) == 0, "posix_spawn");
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the run \"%s\" (%s) failed (%d)", mode,
          setting, status);
}

int main(int argc, char **argv)
{
    struct sigaction sa = {0};
    sa.sa_handler = on_usr1;
    sa.sa_flags = SA_RESTART;
    CHECK(sigaction(SIGUSR1, &sa, NULL) == 0, "sigaction");
    cpu_set_t set;
    CHECK(sched_getaffinity(0, sizeof set, &set) == 0, "sched_getaffinity");
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &set))
            cpu_list[ncpu_list++] = c;
    int no_rseq_child = argc > 1 && strcmp(argv[1], "no-rseq") == 0;
    int over_budget_child = argc > 1 && strcmp(argv[1], "over-budget") == 0;

    char report[4096];
    stats_report(report, sizeof report);
    const char *bytes = getenv("MEMX_CPU_CACHE_BYTES");
    int registered = &__rseq_size != NULL && __rseq_size > 0 && !(bytes && strcmp(bytes, "0") == 0);
    const char *want = registered ? "cache mode: per-CPU (rseq)" : "cache mode: thread caches only";
    CHECK(strstr(report, want) != NULL, "expected \"%s\" (__rseq_size %u) in:\n%s", want,
          &__rseq_size ? __rseq_size : 0, report);
    CHECK(!no_rseq_child || !registered, "GLIBC_TUNABLES=glibc.pthread.rseq=0 left rseq on");
    if (registered && ncpus() > 1)
        CHECK(strstr(report, "(rseq), idle") != NULL, "one thread on %d CPUs, yet:\n%s", ncpus(),
              report);
    if (registered && ncpus() < WORKERS)
        in_use_check = "(rseq), in use";

    run_workers(0.7, 1, 0, 0);
    say("migration: ok\n");
    run_workers(0.7, 0, 1, 0);
    say("signals: %ld handled\n", (long)handled);
    CHECK(handled > 100, "only %ld signals were handled", (long)handled);
    run_workers(0.7, 1, 0, 1);
    say("fork: ok\n");
    if (no_rseq_child) {
        CHECK(sleepers() == 0, "caches given back by sleeping threads without per-CPU caches");
        return 0;
    }
    if (over_budget_child) {
        thousands_of_threads();
        stats_report(report, sizeof report);
        size_t singly = stats_figure(report, "objects passed one at a time by threads over budget or asleep");
        say("over budget: %zu objects passed one at a time\n", singly);
        CHECK(!registered || singly > 0, "threads over budget never went to the CPU caches:\n%s",
              report);
        return 0;
    }

    double t0 = now_sec();
    thousands_of_threads();
    stats_report(report, sizeof report);
    size_t held = stats_figure(report, "bytes in per-CPU caches");
    /* Possible CPUs x 128 classes x 64 KiB: the layer's bound. */
    long possible = sysconf(_SC_NPROCESSORS_CONF);
    size_t bound = (size_t)possible * 128 * (64 << 10);
    say("4000 threads in %.2f s; per-CPU caches hold %zu bytes (bound %zu, %d usable CPUs)\n",
        now_sec() - t0, held, bound, ncpus());
    CHECK(held <= bound, "per-CPU caches hold %zu bytes, more than their bound %zu", held, bound);
    size_t given = sleepers();
    CHECK(!registered || given > 0, "no sleeping thread gave its cache back");

    /* The same phases with glibc's rseq registration off. */
    run_child("no-rseq", "GLIBC_TUNABLES=glibc.pthread.rseq=0");
    say("without rseq: ok\n");
    /* And with a budget spent by the first thread, so that the others pass
     * their objects one at a time to and from the CPU caches. */
    run_child("over-budget", "MEMX_THREAD_CACHE_BYTES=64K");
    say("over budget: ok\n");
    return 0;
}
