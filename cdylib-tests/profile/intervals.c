/*
 * profile intervals: allocation and in-use growth that the interval
 * triggers turn into dumps (the driver sets MEMX_PROFILE_*_INTERVAL).
 *
 *   churn: 256 MiB allocated in 64 KiB objects and freed at once, pausing
 *          5 ms every 8 MiB (so each interval's dump is its own: requests
 *          that arrive while a dump is being written share the next one)
 *   grow:  64 MiB kept, in 64 KiB objects
 * then sleeps argv[1] milliseconds (time interval and stats ticks, from
 * the profiler's clock thread).
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *volatile sink;

int main(int argc, char **argv)
{
    for (int i = 0; i < 4096; i++) {
        char *p = malloc(65536);
        memset(p, 1, 64);
        sink = p;
        free(p);
        if (i % 128 == 127)
            usleep(5000);
    }
    for (int i = 0; i < 1024; i++) {
        char *p = malloc(65536);
        memset(p, 1, 64);
        sink = p;
        if (i % 64 == 0)
            usleep(2000);
    }
    usleep((argc > 1 ? atoi(argv[1]) : 300) * 1000);
    return 0;
}
