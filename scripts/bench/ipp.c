/* ipp: instructions per malloc+free pair, for valgrind --tool=callgrind.
 *
 *   ipp SIZE N
 *
 * Allocates one object of SIZE that stays live (so that a free does not
 * empty the allocator's page/run or merge into the top of the heap every
 * time - the steady state of a real program), warms up with 10,000 pairs,
 * then does N malloc(SIZE)+free pairs. The driver runs it for N and 2N and
 * divides the difference of the total instruction counts by N, so process
 * startup and the warm-up cancel out. The loop adds ~4 instructions/pair.
 */
#include <stdio.h>
#include <stdlib.h>

static void __attribute__((noinline)) pairs(size_t size, long n) {
    for (long i = 0; i < n; i++) {
        void *p = malloc(size);
        /* keeps the compiler from eliding the pair; emits no instruction */
        __asm__ volatile("" : : "r"(p) : "memory");
        free(p);
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: ipp SIZE N\n");
        return 2;
    }
    size_t size = (size_t)atol(argv[1]);
    long n = atol(argv[2]);
    void *live = malloc(size);
    if (!live) return 1;
    __asm__ volatile("" : : "r"(live) : "memory");
    pairs(size, 10000);
    pairs(size, n);
    free(live);
    return 0;
}
