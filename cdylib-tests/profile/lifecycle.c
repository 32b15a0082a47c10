/*
 * profile lifecycle: the profiler must be invisible to the program.
 * Prints how many descriptors are open (a child that lists its own, as
 * CPython's test_subprocess does, must see no extra ones) and how many
 * threads the process has (memx's clock thread only when a clock is set:
 * CPython 3.12+ warns on fork() when there is more than one), then ends with
 * pthread_exit from main while a worker thread finishes: the process must
 * end when that last program thread does, not be kept alive by memx's
 * clock thread.
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
    closedir(d);
    int threads = 0;
    char line[256];
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Threads:", 8) == 0)
            threads = atoi(line + 8);
    if (f)
        fclose(f);
    printf("%d %d\n", n - 1, threads); /* not counting the directory's own fd */
    fflush(stdout);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_exit(NULL);
}
