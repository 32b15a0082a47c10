/* runner: runs a command and reports its wall time and peak RSS.
 *
 *   runner RESULT_FILE CMD [ARGS...]
 *
 * Forks and execs CMD, waits for it with wait4() and writes
 * "WALL_SECONDS MAXRSS_KIB WAIT_STATUS CPU_SECONDS MINOR_FAULTS" to
 * RESULT_FILE (CPU = user + system time of CMD and the children it waited
 * for; MINOR_FAULTS = their ru_minflt, the pages the kernel had to map on
 * first touch, which shows an allocator returning memory and faulting it
 * back in). If
 * BENCH_PRELOAD is set, the child gets it as LD_PRELOAD (so this small
 * process, not the allocator under test, is what the child is forked from).
 *
 * The driver does not fork the workloads itself because ru_maxrss carries
 * over across exec: a child forked (or vforked) from the ~20 MiB Python
 * driver would report at least the driver's RSS.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: runner RESULT_FILE CMD [ARGS...]\n");
        return 2;
    }
    const char *preload = getenv("BENCH_PRELOAD");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("runner: fork");
        return 2;
    }
    if (pid == 0) {
        unsetenv("BENCH_PRELOAD");
        if (preload && *preload) setenv("LD_PRELOAD", preload, 1);
        execvp(argv[2], argv + 2);
        fprintf(stderr, "runner: cannot run %s: %s\n", argv[2], strerror(errno));
        _exit(127);
    }
    int status;
    struct rusage ru;
    while (wait4(pid, &status, 0, &ru) < 0) {
        if (errno != EINTR) {
            perror("runner: wait4");
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double wall = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    FILE *f = fopen(argv[1], "w");
    if (!f) {
        perror("runner: result file");
        return 2;
    }
    double cpu = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                 (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
    fprintf(f, "%.6f %ld %d %.6f %ld\n", wall, ru.ru_maxrss, status, cpu, ru.ru_minflt);
    fclose(f);
    return 0;
}
