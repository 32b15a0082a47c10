/*
 * memx_thread_start_faults: a new thread's first malloc touches no more of
 * its stack than a thread that never allocates.
 *
 * A thread on a new stack (glibc caches only 40 MiB of exited threads'
 * stacks, five of the default size) faults in every stack page it
 * touches. memx sets up a thread's cache on its first malloc; when that
 * built the new cache as a temporary on the stack (4 KiB), each such
 * thread faulted one page more than under glibc (mimalloc-bench's mleak,
 * 50 K short threads ten at a time: 90 K page faults against glibc's 60 K).
 *
 * The test runs short threads one after another, each on a stack of its
 * own mapped fresh, some doing nothing and some one malloc and free, and
 * compares the minor faults per thread. Heap pages are faulted in first.
 */
#include "check.h"
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>

enum { THREADS = 1000, ROUNDS = 3, STACK = 256 << 10 };

static void *idle(void *arg) { return arg; }

static void *allocate(void *arg) {
    void *p = malloc(100);
    CHECK(p != NULL, "malloc(100) failed");
    *(volatile char *)p = 1;
    free(p);
    return arg;
}

static long minor_faults(void) {
    struct rusage ru;
    CHECK(getrusage(RUSAGE_SELF, &ru) == 0, "getrusage failed");
    return ru.ru_minflt;
}

/* Minor faults of THREADS threads of `body`, one after another. */
static long faults_of(void *(*body)(void *)) {
    long before = minor_faults();
    for (int i = 0; i < THREADS; i++) {
        void *stack = mmap(NULL, STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        CHECK(stack != MAP_FAILED, "mmap of a stack failed");
        pthread_attr_t attr;
        CHECK(pthread_attr_init(&attr) == 0, "pthread_attr_init failed");
        CHECK(pthread_attr_setstack(&attr, stack, STACK) == 0, "pthread_attr_setstack failed");
        pthread_t t;
        CHECK(pthread_create(&t, &attr, body, NULL) == 0, "pthread_create failed");
        CHECK(pthread_join(t, NULL) == 0, "pthread_join failed");
        pthread_attr_destroy(&attr);
        CHECK(munmap(stack, STACK) == 0, "munmap of a stack failed");
    }
    return minor_faults() - before;
}

int main(void) {
    faults_of(allocate); /* warm: heap pages, thread-cache slots */
    long idle_faults = 0, alloc_faults = 0;
    for (int r = 0; r < ROUNDS; r++) {
        idle_faults += faults_of(idle);
        alloc_faults += faults_of(allocate);
    }
    double extra = (double)(alloc_faults - idle_faults) / (THREADS * ROUNDS);
    printf("minor faults per thread: idle %.2f, with one malloc %.2f (extra %.2f)\n",
           (double)idle_faults / (THREADS * ROUNDS), (double)alloc_faults / (THREADS * ROUNDS), extra);
    CHECK(extra < 0.5, "a thread's first malloc faulted %.2f more pages than an idle thread", extra);
    return 0;
}
