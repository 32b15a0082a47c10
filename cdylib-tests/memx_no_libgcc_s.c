/*
 * memx_no_libgcc_s: preloading memx loads no library besides libc. Its
 * stack walker (guarded sampling, the profiler) is libgcc's unwinder linked
 * in statically, whose symbols stay local: loading libgcc_s.so cost every
 * process about 100 KiB of resident pages. So at main no libgcc_s is
 * mapped, libmemx exports no _Unwind_ symbol, and a guarded object (whose
 * allocation walks the stack) still gets its stack: the crash report of
 * memx_guard_faults reads it; here the walk must simply not load anything
 * (memx only).
 */
// ENV: MEMX_GUARD_SAMPLE=1 MEMX_GUARD_RATE=0
#include "check.h"
#include <link.h>

static int saw_gcc_s;

static int each_object(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    (void)arg;
    if (info->dlpi_name && strstr(info->dlpi_name, "libgcc_s"))
        saw_gcc_s = 1;
    return 0;
}

int main(void) {
    if (strcmp(getenv("MEMX_TEST_LIB") ? getenv("MEMX_TEST_LIB") : "", "libmemx.so") != 0)
        return 0;
    dl_iterate_phdr(each_object, NULL);
    CHECK(!saw_gcc_s, "libgcc_s is loaded at main");
    Dl_info where;
    CHECK(dladdr((void *)malloc, &where) && where.dli_fname, "dladdr(malloc) failed");
    void *memx = dlopen(where.dli_fname, RTLD_NOW | RTLD_NOLOAD);
    CHECK(memx != NULL, "%s (malloc's library) is not loaded", where.dli_fname);
    CHECK(dlsym(memx, "_Unwind_Backtrace") == NULL && dlsym(memx, "_Unwind_GetIP") == NULL,
          "%s exports the unwinder", where.dli_fname);
    for (int i = 0; i < 100; i++) {
        char *volatile p = malloc(100);
        CHECK(p != NULL, "malloc failed");
        p[0] = 1;
        free(p);
    }
    dl_iterate_phdr(each_object, NULL);
    CHECK(!saw_gcc_s, "walking a guarded object's stack loaded libgcc_s");
    return 0;
}
