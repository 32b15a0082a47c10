/* which_malloc: prints the file that the process's malloc and free come
 * from, so the driver can check that LD_PRELOAD took effect. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    Dl_info m, f;
    void *pm = dlsym(RTLD_DEFAULT, "malloc"), *pf = dlsym(RTLD_DEFAULT, "free");
    if (!pm || !pf || !dladdr(pm, &m) || !dladdr(pf, &f)) {
        fprintf(stderr, "which_malloc: dlsym/dladdr failed\n");
        return 1;
    }
    void *p = malloc(100);
    free(p);
    printf("%s %s\n", m.dli_fname, f.dli_fname);
    return 0;
}
