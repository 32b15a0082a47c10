/*
 * profile sigterm_race: SIGTERM while threads are inside the profiler.
 * THREADS threads (argv[2], default 8) allocate and free without pause;
 * with MEMX_PROFILE_SAMPLE=1 every allocation is a sample, so the
 * profiler's lock is often held, by the thread the signal interrupts or by
 * another. After argv[1] microseconds (default 10000) the last thread gets
 * SIGTERM. memx's handler must still leave a dump and the process must die
 * of SIGTERM: the dump is deferred to whoever holds the lock, never
 * dropped.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

NOINLINE static void churn_once(void)
{
    void *volatile p = malloc(64);
    free(p);
}

static void *churn(void *arg)
{
    (void)arg;
    for (;;)
        churn_once();
    return NULL;
}

int main(int argc, char **argv)
{
    long delay_us = argc > 1 ? atol(argv[1]) : 10000;
    int threads = argc > 2 ? atoi(argv[2]) : 8;
    pthread_t t = 0;
    for (int i = 0; i < threads; i++)
        pthread_create(&t, NULL, churn, NULL);
    usleep(delay_us);
    pthread_kill(t, SIGTERM);
    pause();
    return 1;
}
