/*
 * fork_signal: fork() from a signal handler that interrupted malloc/free.
 *
 * A single-threaded process churns malloc/free/realloc/calloc while a fast
 * interval timer (setitimer, SIGALRM every 1 ms) runs a handler that
 * fork()s; each child mallocs and frees a little and _exit(0)s. Programs do
 * this (crash handlers and watchdogs that fork a reporter from a signal
 * handler; POSIX listed fork as async-signal-safe until POSIX.1-2024, which
 * replaced it by _Fork for that purpose).
 *
 * Allocator hazards:
 * - a pthread_atfork "prepare" handler that takes the allocator's locks
 *   deadlocks the parent if the interrupted code already holds one of them
 *   (the locks are not recursive, and the holder is the same thread);
 * - the child inherits whatever lock the interrupted code held, and its
 *   first malloc deadlocks unless the child handler resets the locks;
 * - a thread-cache operation interrupted half-way is seen by the child.
 * What is asserted: nothing deadlocks (neither the parent's fork() nor a
 * child's malloc), and most children (>= half) exit 0. A child may still
 * crash: glibc itself, in a single-threaded process, takes no lock in fork
 * nor in malloc (SINGLE_THREAD_P), so the child runs malloc on a heap that
 * the interrupted call left half-updated; about 7% of the children then
 * abort with "malloc(): mismatching next->prev_size" or a sysmalloc
 * assertion. No allocator can fully avoid that without blocking signals
 * around every call, so such crashes are counted and printed, not failed,
 * as long as they stay a minority (which catches a child allocator that is
 * systematically broken after fork).
 *
 * jemalloc 5.3 fails this test: its prefork handler blocks on an arena
 * mutex that the interrupted malloc holds, and the worker hangs in fork().
 *
 * Structure: the test process forks a worker that does all of the above and
 * supervises it: if the worker does not finish within 20 s it is considered
 * deadlocked, killed and reported. The worker reaps its children with
 * waitpid(WNOHANG) polling and a deadline; each child restores SIGALRM's
 * default action and arms alarm(5), so a deadlocked child dies of SIGALRM.
 */
#include "check.h"
#include <malloc.h>
#include <signal.h>
#include <sys/time.h>
#include <sys/wait.h>

#define RUN_SECONDS 1.5
#define MAX_KIDS 8192

static volatile sig_atomic_t nforks, nfork_errors;

static void child_body(void)
{
    signal(SIGALRM, SIG_DFL);
    alarm(5);
    void *v[16] = {0};
    for (int i = 0; i < 2000; i++) {
        int k = i & 15;
        free(v[k]);
        size_t n = (i % 200 == 0) ? 150000 : (size_t)(i * 37 % 3000) + 1;
        v[k] = malloc(n);
        if (!v[k])
            _exit(3);
        memset(v[k], 0x33, n < 128 ? n : 128);
    }
    for (int k = 0; k < 16; k++)
        free(v[k]);
    _exit(0);
}

static void on_alarm(int sig)
{
    (void)sig;
    int saved = errno;
    pid_t pid = fork();
    if (pid == 0)
        child_body();
    if (pid < 0)
        nfork_errors++;
    else
        nforks++;
    errno = saved;
}

struct tally {
    long reaped, failed, hung_alarm;
};

static void reap(struct tally *t, int flags)
{
    for (;;) {
        int st;
        pid_t r = waitpid(-1, &st, flags);
        if (r <= 0)
            return;
        t->reaped++;
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
            t->hung_alarm++;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            if (t->failed < 5) {
                if (WIFSIGNALED(st))
                    say("child %d died of signal %d%s\n", (int)r, WTERMSIG(st),
                        WTERMSIG(st) == SIGALRM ? " (its 5 s alarm: deadlocked)" : "");
                else
                    say("child %d exited with status %d\n", (int)r, WEXITSTATUS(st));
            }
            t->failed++;
        }
    }
}

static int worker(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGALRM, &sa, NULL) == 0, "sigaction failed");
    struct itimerval it = {{0, 1000}, {0, 1000}};
    CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0, "setitimer failed");

    struct tally t = {0, 0, 0};
    uint64_t rng = 77;
    void *v[256] = {0};
    size_t vn[256] = {0};
    double end = now_sec() + RUN_SECONDS;
    long ops = 0;
    while (now_sec() < end) {
        for (int k = 0; k < 1000; k++, ops++) {
            int i = (int)(rng_next(&rng) % 256);
            if (v[i]) {
                CHECK(pattern_check(v[i], vn[i] < 64 ? vn[i] : 64) == (size_t)-1,
                      "worker: block %p corrupted", v[i]);
                if (rng_next(&rng) % 4 == 0) {
                    size_t m = 1 + rng_next(&rng) % 20000;
                    void *q = realloc(v[i], m);
                    CHECK(q != NULL, "realloc returned NULL");
                    v[i] = q;
                    vn[i] = m;
                    pattern_fill(v[i], m < 64 ? m : 64);
                    continue;
                }
                free(v[i]);
                v[i] = NULL;
            } else {
                size_t n = (rng_next(&rng) % 64 == 0) ? 200000 : 1 + rng_next(&rng) % 2000;
                v[i] = (k & 7) == 0 ? calloc(1, n) : malloc(n);
                CHECK(v[i] != NULL, "malloc(%zu) returned NULL", n);
                vn[i] = n;
                pattern_fill(v[i], n < 64 ? n : 64);
            }
        }
        reap(&t, WNOHANG);
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    signal(SIGALRM, SIG_IGN);
    for (int i = 0; i < 256; i++)
        free(v[i]);

    /* Collect the rest, 10 s at most. */
    double deadline = now_sec() + 10;
    while (t.reaped < nforks && now_sec() < deadline) {
        reap(&t, WNOHANG);
        struct timespec ms = {0, 1000 * 1000};
        nanosleep(&ms, NULL);
    }
    long hung = nforks - t.reaped;
    say("fork_signal: %ld allocator ops, %d forks from the handler, %ld children failed, %ld "
        "still running after 10 s, %d fork errors\n",
        ops, (int)nforks, t.failed, hung, (int)nfork_errors);
    if (hung > 0) {
        /* Our process group holds only us and the children: end them. */
        signal(SIGTERM, SIG_IGN);
        kill(0, SIGTERM);
        reap(&t, 0);
    }
    CHECK(hung == 0, "%ld forked children never finished (deadlocked in malloc after a fork "
          "from a signal handler?)", hung);
    CHECK(nforks >= 50, "only %d forks happened in %.1f s", (int)nforks, RUN_SECONDS);
    CHECK(t.hung_alarm == 0, "%ld children deadlocked (killed by their 5 s alarm)",
          t.hung_alarm);
    CHECK(t.failed * 2 < nforks, "%ld of %d children failed (see above)", t.failed,
          (int)nforks);
    return 0;
}

int main(void)
{
    pid_t w = fork();
    CHECK(w >= 0, "fork failed");
    if (w == 0) {
        /* Own process group, so a deadlocked worker and its children can be
         * killed together. */
        setpgid(0, 0);
        _exit(worker());
    }
    setpgid(w, w);
    double deadline = now_sec() + 20;
    int st = 0;
    pid_t r = 0;
    while ((r = waitpid(w, &st, WNOHANG)) == 0 && now_sec() < deadline) {
        struct timespec ms = {0, 5 * 1000 * 1000};
        nanosleep(&ms, NULL);
    }
    if (r == 0) {
        kill(-w, SIGKILL);
        kill(w, SIGKILL);
        waitpid(w, &st, 0);
        CHECK(0, "the worker did not finish within 20 s: deadlocked in fork() from the signal "
              "handler (atfork handler taking a lock the interrupted malloc holds?) or in a "
              "child's malloc");
    }
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker ended with %s %d (see above)",
          WIFSIGNALED(st) ? "signal" : "exit status",
          WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    /* Anything left in the worker's group (hung grandchildren). */
    kill(-w, SIGKILL);
    return 0;
}
