/* churn: single-threaded churn of mixed small objects (8 B - 1 KiB).
 *
 *   churn [SCALE]
 *
 * Phase 1 (LIFO): push a random number (1..4096) of objects, pop them in
 * reverse order, repeat. Phase 2 (random): a table of 50,000 live objects,
 * each step frees a random slot and fills it with a new random size.
 * Phase 3 (FIFO): a ring of 20,000 objects, oldest freed first.
 */
#include "common.h"

int main(int argc, char **argv) {
    bench_name = "churn";
    double scale = arg_double(argc, argv, 1, 1.0);
    rng_t r;
    rng_seed(&r, 42);
    uint64_t checksum = 0;

    /* phase 1: LIFO */
    {
        enum { MAXD = 4096 };
        void **stack = xmalloc(MAXD * sizeof(void *));
        size_t *sizes = xmalloc(MAXD * sizeof(size_t));
        uint64_t target = (uint64_t)(6e6 * scale), done = 0;
        while (done < target) {
            size_t d = 1 + rng_below(&r, MAXD);
            for (size_t i = 0; i < d; i++) {
                size_t sz = rng_small_size(&r, 8);
                void *p = xmalloc(sz);
                obj_init(p, sz);
                stack[i] = p;
                sizes[i] = sz;
            }
            for (size_t i = d; i-- > 0;) {
                obj_check(stack[i], sizes[i]);
                checksum += sizes[i];
                free(stack[i]);
            }
            done += d;
        }
        free(stack);
        free(sizes);
    }

    /* phase 2: random replacement in a large live set */
    {
        enum { K = 50000 };
        void **slot = calloc(K, sizeof(void *));
        size_t *sizes = calloc(K, sizeof(size_t));
        uint64_t ops = (uint64_t)(8e6 * scale);
        for (uint64_t i = 0; i < ops; i++) {
            size_t k = rng_below(&r, K);
            if (slot[k]) {
                obj_check(slot[k], sizes[k]);
                free(slot[k]);
            }
            size_t sz = rng_small_size(&r, 8);
            void *p = xmalloc(sz);
            obj_init(p, sz);
            slot[k] = p;
            sizes[k] = sz;
            checksum += sz;
        }
        for (size_t k = 0; k < K; k++)
            if (slot[k]) {
                obj_check(slot[k], sizes[k]);
                free(slot[k]);
            }
        free(slot);
        free(sizes);
    }

    /* phase 3: FIFO ring */
    {
        enum { F = 20000 };
        void **ring = calloc(F, sizeof(void *));
        size_t *sizes = calloc(F, sizeof(size_t));
        uint64_t ops = (uint64_t)(6e6 * scale);
        for (uint64_t i = 0; i < ops; i++) {
            size_t k = (size_t)(i % F);
            if (ring[k]) {
                obj_check(ring[k], sizes[k]);
                free(ring[k]);
            }
            size_t sz = rng_small_size(&r, 8);
            void *p = xmalloc(sz);
            obj_init(p, sz);
            ring[k] = p;
            sizes[k] = sz;
            checksum += sz;
        }
        for (size_t k = 0; k < F; k++)
            if (ring[k]) {
                obj_check(ring[k], sizes[k]);
                free(ring[k]);
            }
        free(ring);
        free(sizes);
    }

    printf("churn: ok checksum=%llu\n", (unsigned long long)checksum);
    return 0;
}
