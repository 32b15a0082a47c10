/*
 * signal_malloc: signal handlers that call malloc and free, arriving many
 * thousands of times while threads run tight malloc/free loops.
 *
 * POSIX lists neither malloc nor free as async-signal-safe, and neither
 * glibc nor memx makes them so: a handler that allocates on a thread that
 * the signal interrupted inside malloc finds that thread's half-updated
 * cache, or a lock that thread already holds (memx's locks and glibc's arena
 * locks are not recursive). What does hold, and is asserted here:
 *
 * 1. Same thread, between calls. One thread loops over malloc/free with the
 *    signal blocked only for the duration of each call, while an interval
 *    timer (SIGALRM every 50 us) interrupts it; the handler allocates,
 *    fills, verifies and frees objects of several sizes (small, medium and
 *    large), keeping some across invocations. Every signal lands between
 *    two allocator calls of the interrupted thread, on the same thread
 *    cache. Asserted: all contents intact, no hang, thousands of handler
 *    runs.
 * 2. Other threads inside malloc. Two threads loop over malloc/free/realloc
 *    with nothing blocked, holding central and page-heap locks often; a
 *    third thread that does not allocate outside its handler receives
 *    SIGUSR1 as fast as another thread can send it, and its handler
 *    allocates and frees in the same size classes. The handler's thread
 *    may wait for a lock another thread holds, which that thread then
 *    releases: no deadlock. Asserted: contents intact, no hang (the test
 *    runner's timeout), hundreds of handler runs (thousands on an idle
 *    machine).
 * 3. For information only (not asserted): the unprotected case, the
 *    handler interrupting its own thread anywhere, in a forked child with a
 *    2 s watchdog. Under memx it deadlocks within milliseconds: the handler
 *    waits for a central-list lock that the malloc it interrupted holds.
 *    glibc 2.36 deadlocks the same way on its arena lock here (a process
 *    that once had threads); a process that never started a thread takes
 *    no lock in glibc, which then aborts with heap corruption instead.
 *    The outcome is printed.
 */
#include "check.h"
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <sys/wait.h>

#define HRING 16

struct obj {
    unsigned char *p;
    size_t n;
};

static void fill(struct obj *o)
{
    memset(o->p, (int)(((uintptr_t)o->p >> 4) ^ o->n) & 0xff, o->n < 256 ? o->n : 256);
    if (o->n >= 320)
        memset(o->p + o->n - 64, 0x5c, 64);
}

static int intact(const struct obj *o)
{
    unsigned char c = (unsigned char)((((uintptr_t)o->p >> 4) ^ o->n) & 0xff);
    size_t head = o->n < 256 ? o->n : 256;
    for (size_t i = 0; i < head; i++)
        if (o->p[i] != c)
            return 0;
    if (o->n >= 320)
        for (size_t i = o->n - 64; i < o->n; i++)
            if (o->p[i] != 0x5c)
                return 0;
    return 1;
}

/* ------------------------------------------------------------ the handler */

static volatile sig_atomic_t handled, handler_bad;
static struct obj hring[HRING]; /* used by one handler thread at a time */
static uint64_t hrng = 99;

static void allocating_handler(int sig)
{
    (void)sig;
    int saved = errno;
    for (int k = 0; k < 3; k++) {
        int i = (int)(rng_next(&hrng) % HRING);
        if (hring[i].p) {
            if (!intact(&hring[i]))
                handler_bad = 1;
            free(hring[i].p);
            hring[i].p = NULL;
        }
        uint64_t r = rng_next(&hrng) % 64;
        size_t n = r == 0 ? 300 * 1024 : r < 8 ? 2000 + (size_t)r * 100 : 16 + (size_t)r * 8;
        hring[i].p = malloc(n);
        if (!hring[i].p) {
            handler_bad = 2;
            break;
        }
        hring[i].n = n;
        fill(&hring[i]);
    }
    handled++;
    errno = saved;
}

static void free_hring(void)
{
    for (int i = 0; i < HRING; i++) {
        if (hring[i].p) {
            CHECK(intact(&hring[i]), "an object the handler kept changed");
            free(hring[i].p);
            hring[i].p = NULL;
        }
    }
}

static void set_handler(int sig)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = allocating_handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask); /* the signal itself is blocked while it runs */
    CHECK(sigaction(sig, &sa, NULL) == 0, "sigaction failed");
}

/* One step of a malloc/free loop over a ring of 64 objects. */
static void churn(struct obj *ring, uint64_t *rng, int with_realloc)
{
    int i = (int)(rng_next(rng) % 64);
    if (ring[i].p) {
        CHECK(intact(&ring[i]), "loop object %p (%zu bytes) changed", (void *)ring[i].p,
              ring[i].n);
        if (with_realloc && (rng_next(rng) & 7) == 0) {
            size_t n = 16 + (size_t)(rng_next(rng) % 5000);
            unsigned char *q = realloc(ring[i].p, n);
            CHECK(q != NULL, "realloc returned NULL");
            ring[i].p = q;
            ring[i].n = n;
            fill(&ring[i]);
            return;
        }
        free(ring[i].p);
        ring[i].p = NULL;
        return;
    }
    uint64_t r = rng_next(rng) % 256;
    size_t n = r == 0 ? 200 * 1024 + (size_t)rng_next(rng) % 200000 : 16 + (size_t)r * 24;
    ring[i].p = malloc(n);
    CHECK(ring[i].p != NULL, "malloc(%zu) returned NULL", n);
    ring[i].n = n;
    fill(&ring[i]);
}

static void free_ring(struct obj *ring)
{
    for (int i = 0; i < 64; i++)
        if (ring[i].p) {
            CHECK(intact(&ring[i]), "loop object changed");
            free(ring[i].p);
        }
}

/* ------------------------------------------------------------ phase 1 */

static void phase1(double secs)
{
    set_handler(SIGALRM);
    sigset_t alrm;
    sigemptyset(&alrm);
    sigaddset(&alrm, SIGALRM);
    struct itimerval it = {{0, 50}, {0, 50}};
    CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0, "setitimer failed");
    struct obj ring[64];
    memset(ring, 0, sizeof ring);
    uint64_t rng = 7;
    long ops = 0;
    double end = now_sec() + secs;
    while (now_sec() < end) {
        for (int k = 0; k < 256; k++, ops++) {
            /* The allocator calls inside churn() run with SIGALRM blocked;
             * it is delivered when it is unblocked, between two calls. */
            pthread_sigmask(SIG_BLOCK, &alrm, NULL);
            churn(ring, &rng, 1);
            pthread_sigmask(SIG_UNBLOCK, &alrm, NULL);
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_IGN);
    CHECK(handler_bad == 0, "phase 1: the handler found an object changed or malloc failed "
          "(%d)", (int)handler_bad);
    free_ring(ring);
    free_hring();
    say("signal_malloc: phase 1 (same thread, between calls): %ld loop ops, %d handler runs\n",
        ops, (int)handled);
    CHECK(handled >= 1000, "phase 1: only %d signals were handled", (int)handled);
}

/* ------------------------------------------------------------ phase 2 */

static volatile int stop2, receiver_ready;
static pthread_t receiver;

static void *looper(void *arg)
{
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL); /* only the receiver takes it */
    struct obj ring[64];
    memset(ring, 0, sizeof ring);
    uint64_t rng = 1000 + (uintptr_t)arg;
    long ops = 0;
    while (!stop2) {
        for (int k = 0; k < 256; k++, ops++)
            churn(ring, &rng, 1);
    }
    free_ring(ring);
    return (void *)ops;
}

static void *receive(void *arg)
{
    (void)arg;
    /* Allocates nothing outside its handler: never interrupted in malloc. */
    receiver_ready = 1;
    volatile uint64_t x = 1;
    while (!stop2)
        x = x * 6364136223846793005ull + 1;
    return NULL;
}

static void *sender(void *arg)
{
    (void)arg;
    while (!stop2) {
        pthread_kill(receiver, SIGUSR1);
        struct timespec ts = {0, 20 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void phase2(double secs)
{
    handled = 0;
    handler_bad = 0;
    set_handler(SIGUSR1);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, NULL); /* main and sender never take it */
    pthread_t loopers[2], snd;
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&loopers[i], NULL, looper, (void *)(intptr_t)i) == 0,
              "pthread_create failed");
    pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
    CHECK(pthread_create(&receiver, NULL, receive, NULL) == 0, "pthread_create failed");
    pthread_sigmask(SIG_BLOCK, &usr1, NULL);
    while (!receiver_ready)
        sched_yield();
    CHECK(pthread_create(&snd, NULL, sender, NULL) == 0, "pthread_create failed");
    struct timespec ts = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
    nanosleep(&ts, NULL);
    stop2 = 1;
    long ops = 0;
    pthread_join(snd, NULL);
    pthread_join(receiver, NULL);
    for (int i = 0; i < 2; i++) {
        void *r;
        pthread_join(loopers[i], &r);
        ops += (long)r;
    }
    CHECK(handler_bad == 0, "phase 2: the handler found an object changed or malloc failed "
          "(%d)", (int)handler_bad);
    free_hring();
    say("signal_malloc: phase 2 (other threads inside malloc): %ld loop ops, %d handler runs\n",
        ops, (int)handled);
    CHECK(handled >= 200, "phase 2: only %d signals were handled", (int)handled);
}

/* ------------------------------------------------------------ phase 3 */

static void phase3(void)
{
    volatile long *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(shared != MAP_FAILED, "mmap failed");
    pid_t pid = fork();
    CHECK(pid >= 0, "fork failed");
    if (pid == 0) {
        handled = 0;
        set_handler(SIGALRM);
        struct itimerval it = {{0, 50}, {0, 50}};
        setitimer(ITIMER_REAL, &it, NULL);
        struct obj ring[64];
        memset(ring, 0, sizeof ring);
        uint64_t rng = 3;
        double end = now_sec() + 0.5;
        while (now_sec() < end) {
            for (int k = 0; k < 256; k++)
                churn(ring, &rng, 1);
            shared[0] = handled;
        }
        _exit(0);
    }
    int st = 0;
    double deadline = now_sec() + 2;
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG)) == 0 && now_sec() < deadline) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    const char *outcome;
    if (r == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        outcome = "deadlocked (killed after 2 s)";
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        outcome = "survived 0.5 s";
    } else if (WIFSIGNALED(st)) {
        outcome = WTERMSIG(st) == SIGABRT ? "aborted (heap corruption detected)"
                                          : "died of a signal";
    } else {
        outcome = "failed a check (corruption)";
    }
    say("signal_malloc: phase 3 (for information; unprotected, the handler interrupting its "
        "own thread inside malloc): %s after %ld handler runs\n", outcome, shared[0]);
}

int main(void)
{
    double secs = 1.0;
    phase1(secs);
    phase2(secs);
    phase3();
    return 0;
}
