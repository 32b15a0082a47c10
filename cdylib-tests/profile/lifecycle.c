/*
 * profile lifecycle: the profiler must be invisible to the program.
 * Prints how many descriptors are open (a child that lists its own, as
 * CPython's test_subprocess does, must see no extra ones), then ends with
 * pthread_exit from main while a worker thread finishes: the process must
 * end when that last program thread does, not be kept alive by memx's
 * helper thread.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 1000; i++)
        free(malloc(64 << 10));
    usleep(100000);
    return NULL;
}

int main(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    printf("%d\n", n - 1); /* not counting the directory's own */
    fflush(stdout);
    closedir(d);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_exit(NULL);
}
