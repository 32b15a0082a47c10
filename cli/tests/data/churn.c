/* Allocates and frees 256 MiB in 4 KiB blocks at one site: with the default
 * sampling rate (512 KiB) the allocated-bytes estimate has about 512 samples
 * behind it. Also keeps 8 MiB (2048 blocks of 4 KiB) at another site. */
#include <stdlib.h>
#include <string.h>

/* Globals, so the compiler cannot drop the allocations. */
void *kept[2048];
void *volatile sink;

__attribute__((noinline)) void churn_site(void) {
    for (int i = 0; i < 65536; i++) {
        char *p = malloc(4096); /* SITE_CHURN */
        p[0] = (char)i;
        sink = p;
        free(p);
    }
}

__attribute__((noinline)) void kept_site(void) {
    for (int i = 0; i < 2048; i++) {
        kept[i] = malloc(4096); /* SITE_KEPT */
        memset(kept[i], 0, 16);
    }
}

int main(void) {
    churn_site();
    kept_site();
    return 0;
}
