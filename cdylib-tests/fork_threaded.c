/*
 * fork_threaded: fork() while other threads are inside the allocator.
 *
 * Allocator hazard: fork copies only the calling thread. Any allocator lock
 * held by another thread at that instant stays locked forever in the child,
 * whose next malloc deadlocks; a structure mid-update is seen half-done.
 * Allocators avoid this with pthread_atfork handlers (take every lock before
 * the fork, release in the parent, reinitialise in the child). The child
 * also inherits the caches of threads that do not exist in it: blocks those
 * threads allocated must still be freeable in the child.
 *
 * Setup: 8 threads hammer malloc/realloc/free and park some blocks in a
 * shared array of atomic slots. Main forks 50 times while they run. Each
 * child frees the blocks parked by the (now absent) threads, churns
 * malloc/free, creates a thread that churns too, and _exit(0)s. The parent
 * requires every child to exit 0 within 10 s (otherwise it is considered
 * deadlocked, killed, and the test fails); each child also arms alarm(10)
 * so a deadlocked child dies even if the parent is gone, and the parent arms
 * alarm(30) against a fork() that never returns.
 */
#include "check.h"
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>

#define NTHREADS 8
#define NFORKS 50
#define NSLOTS 512

static atomic_int stop;
static _Atomic(void *) slots[NSLOTS]; /* parked blocks, each with pattern of size slot_n */
static size_t slot_size(int i) { return 16 + (size_t)i * 61 % 5000; }

static void *hammer(void *arg)
{
    uint64_t rng = (uint64_t)(intptr_t)arg * 12345 + 1;
    void *mine[32] = {0};
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        for (int k = 0; k < 64; k++) {
            int i = (int)(rng_next(&rng) % 32);
            size_t n = (rng_next(&rng) % 16 == 0) ? 200000 : 8 + rng_next(&rng) % 3000;
            free(mine[i]);
            mine[i] = malloc(n);
            CHECK(mine[i] != NULL, "malloc(%zu) returned NULL", n);
            memset(mine[i], 0x5A, n < 256 ? n : 256);
            if (rng_next(&rng) % 8 == 0) {
                mine[i] = realloc(mine[i], n + 777);
                CHECK(mine[i] != NULL, "realloc returned NULL");
            }
        }
        /* Park a fresh block in a random slot; free what was there. */
        int s = (int)(rng_next(&rng) % NSLOTS);
        void *b = malloc(slot_size(s));
        CHECK(b != NULL, "malloc returned NULL");
        pattern_fill(b, slot_size(s));
        void *old = atomic_exchange(&slots[s], b);
        if (old) {
            CHECK(pattern_check(old, slot_size(s)) == (size_t)-1, "parked block %p corrupt",
                  old);
            free(old);
        }
    }
    for (int i = 0; i < 32; i++)
        free(mine[i]);
    return NULL;
}

static void *child_thread(void *arg)
{
    (void)arg;
    void *v[64] = {0};
    for (int i = 0; i < 20000; i++) {
        int k = i % 64;
        free(v[k]);
        v[k] = malloc((size_t)(i * 7 % 4000) + 1);
        CHECK(v[k] != NULL, "child thread: malloc returned NULL");
    }
    for (int k = 0; k < 64; k++)
        free(v[k]);
    return NULL;
}

static void child(void)
{
    alarm(10);
    /* Blocks of threads that do not exist here. */
    for (int s = 0; s < NSLOTS; s++) {
        void *b = atomic_exchange(&slots[s], NULL);
        if (b) {
            size_t bad = pattern_check(b, slot_size(s));
            CHECK(bad == (size_t)-1, "child: parked block %p corrupt at byte %zu", b, bad);
            free(b);
        }
    }
    void *v[128] = {0};
    for (int i = 0; i < 50000; i++) {
        int k = i % 128;
        free(v[k]);
        size_t n = (i % 100 == 0) ? 300000 : (size_t)(i * 13 % 8000) + 1;
        v[k] = malloc(n);
        CHECK(v[k] != NULL, "child: malloc(%zu) returned NULL", n);
        memset(v[k], 1, n < 512 ? n : 512);
    }
    for (int k = 0; k < 128; k++)
        free(v[k]);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, child_thread, NULL) == 0, "child: pthread_create failed");
    pthread_join(t, NULL);
    void *p = calloc(1000, 10);
    CHECK(p != NULL, "child: calloc returned NULL");
    free(p);
    _exit(0);
}

int main(void)
{
    /* Watchdog for the parent itself (a fork that deadlocks in an atfork
     * handler): SIGALRM's default action ends the process. */
    alarm(30);
    pthread_t t[NTHREADS];
    for (int i = 0; i < NTHREADS; i++)
        CHECK(pthread_create(&t[i], NULL, hammer, (void *)(intptr_t)(i + 1)) == 0,
              "pthread_create failed");
    struct timespec pause = {0, 2 * 1000 * 1000};
    nanosleep(&pause, NULL);

    pid_t kids[NFORKS];
    for (int f = 0; f < NFORKS; f++) {
        pid_t pid = fork();
        CHECK(pid >= 0, "fork #%d failed: errno %d", f, errno);
        if (pid == 0)
            child();
        kids[f] = pid;
        /* The parent's allocator must be fully usable right after fork. */
        void *p = malloc(4096);
        CHECK(p != NULL, "parent: malloc after fork returned NULL");
        free(p);
        nanosleep(&pause, NULL);
    }

    /* Collect the children, with a deadline. */
    double deadline = now_sec() + 10.0;
    int done = 0, bad = 0;
    int finished[NFORKS] = {0};
    while (done < NFORKS && now_sec() < deadline) {
        for (int f = 0; f < NFORKS; f++) {
            if (finished[f])
                continue;
            int st;
            pid_t r = waitpid(kids[f], &st, WNOHANG);
            if (r == kids[f]) {
                finished[f] = 1;
                done++;
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                    bad++;
                    if (WIFSIGNALED(st))
                        say("child #%d (pid %d) died of signal %d%s\n", f, (int)kids[f],
                            WTERMSIG(st), WTERMSIG(st) == SIGALRM ? " (its 10 s alarm: deadlock)"
                                                                   : "");
                    else
                        say("child #%d (pid %d) exited with %d\n", f, (int)kids[f],
                            WEXITSTATUS(st));
                }
            }
        }
        struct timespec ms = {0, 1000 * 1000};
        nanosleep(&ms, NULL);
    }
    int hung = NFORKS - done;
    for (int f = 0; f < NFORKS; f++) {
        if (!finished[f]) {
            kill(kids[f], SIGKILL);
            waitpid(kids[f], NULL, 0);
        }
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(t[i], NULL);
    CHECK(hung == 0, "%d of %d children still running after 10 s (deadlocked in the allocator "
          "after fork?)", hung, NFORKS);
    CHECK(bad == 0, "%d of %d children failed (see above)", bad, NFORKS);
    for (int s = 0; s < NSLOTS; s++)
        free(atomic_exchange(&slots[s], NULL));
    return 0;
}
