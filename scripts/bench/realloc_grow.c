/* realloc: many string builders growing by realloc, interleaved.
 *
 *   realloc_grow [SCALE]
 *
 * 2,000 builders are appended to in random order (1-64 B per append, so
 * neighbours keep getting in the way of in-place growth). A builder grows
 * its buffer with one of three policies - doubling (like Vec/std::string),
 * x1.125 (like CPython lists) or exact size (naive C) - until it reaches its
 * target length (log-uniform 16 B - 256 KiB); then its content is verified,
 * it is freed and a new builder starts in its place.
 */
#include "common.h"

enum { B = 2000 };

typedef struct {
    unsigned char *buf;
    size_t len, cap, target;
    uint32_t id;
    int policy;
} builder_t;

static inline unsigned char pat(uint32_t id, size_t i) { return (unsigned char)(i * 31u + id * 7u + (i >> 8)); }

static void start(builder_t *b, rng_t *r, uint32_t id) {
    b->buf = NULL;
    b->len = b->cap = 0;
    b->target = rng_logsize(r, 16, 256 * 1024);
    b->id = id;
    b->policy = (int)rng_below(r, 3);
}

static void finish(builder_t *b) {
    for (size_t i = 0; i < b->len; i++)
        if (b->buf[i] != pat(b->id, i))
            die("corruption detected: builder %u byte %zu of %zu (cap %zu) is wrong", b->id, i, b->len, b->cap);
    free(b->buf);
}

int main(int argc, char **argv) {
    bench_name = "realloc";
    double scale = arg_double(argc, argv, 1, 1.0);
    rng_t r;
    rng_seed(&r, 99);
    builder_t *bs = calloc(B, sizeof(builder_t));
    uint32_t next_id = 0;
    for (int i = 0; i < B; i++) start(&bs[i], &r, next_id++);
    uint64_t appends = (uint64_t)(12e6 * scale), reallocs = 0, finished = 0;
    for (uint64_t n = 0; n < appends; n++) {
        builder_t *b = &bs[rng_below(&r, B)];
        size_t add = 1 + rng_below(&r, 64);
        size_t need = b->len + add;
        if (need > b->cap) {
            size_t cap;
            if (b->policy == 0) { cap = b->cap ? b->cap * 2 : 16; while (cap < need) cap *= 2; }
            else if (b->policy == 1) { cap = need + (need >> 3) + (need < 9 ? 3 : 6); }
            else cap = need;
            unsigned char *nb = realloc(b->buf, cap);
            if (!nb) die("realloc(%zu) returned NULL", cap);
            /* spot-check that the old content moved with the buffer */
            if (b->len && (nb[0] != pat(b->id, 0) || nb[b->len - 1] != pat(b->id, b->len - 1)))
                die("corruption detected: realloc lost content (len %zu, new cap %zu)", b->len, cap);
            b->buf = nb;
            b->cap = cap;
            reallocs++;
        }
        for (size_t i = b->len; i < need; i++) b->buf[i] = pat(b->id, i);
        b->len = need;
        if (b->len >= b->target) {
            finish(b);
            start(b, &r, next_id++);
            finished++;
        }
    }
    for (int i = 0; i < B; i++) finish(&bs[i]);
    free(bs);
    printf("realloc: ok appends=%llu reallocs=%llu finished=%llu\n", (unsigned long long)appends,
           (unsigned long long)reallocs, (unsigned long long)finished);
    return 0;
}
