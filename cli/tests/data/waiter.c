/* Holds memory at a known site, says "ready <pid>", and waits for its
 * standard input to close; exits with status 3 (for exit-code pass-through). */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void *held[200]; /* global: the allocations must stay */

__attribute__((noinline)) void held_site(void) {
    for (int i = 0; i < 200; i++) {
        held[i] = malloc(5000); /* SITE_HELD */
    }
}

int main(void) {
    held_site();
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 3;
}
