/*
 * dlopen_tls: dlopen'ed libraries with TLS, used from many threads.
 *
 * Allocator hazard: the dynamic loader itself calls malloc/calloc/realloc/
 * free for dlopen'ed modules' TLS: each thread's TLS block of such a module
 * is malloc'ed lazily by __tls_get_addr on the thread's first access (from
 * inside whatever code touches the variable), the DTV (the per-thread table
 * of TLS blocks) is realloc'ed when more modules are loaded than it has
 * room for (glibc leaves 14 spare slots), over-aligned TLS blocks are
 * over-allocated and aligned by hand, and all of it is freed again late in
 * thread exit or when glibc recycles the dead thread's stack (from another
 * thread, after the allocator may have torn down the dead thread's state),
 * and at dlclose. An allocator whose own per-thread state lives in dynamic
 * TLS would recurse into itself here; memx keeps its one TLS slot
 * initial-exec for that reason.
 *
 * The helper library (cdylib-tests/lib/dltls.c, built as libdltls.so next to
 * this program) is copied to 20 distinct files, since the loader treats
 * copies as separate modules, so that the DTV has to grow. Three cycles of:
 * start 6 threads that wait; dlopen all 20 copies; release the threads, which
 * (like main) call into every copy, checking that their TLS is zeroed/
 * initialised on first use, aligned, and private; join them; dlclose all.
 */
#include "check.h"
#include <dlfcn.h>
#include <libgen.h>
#include <pthread.h>
#include <sys/stat.h>

#define NCOPIES 20
#define NTHREADS 6
#define CALLS 40

typedef int (*work_fn)(long);
typedef void (*release_fn)(void);
typedef long (*counter_fn)(void);

struct lib {
    void *h;
    work_fn work;
    release_fn release;
    counter_fn counter;
    long *exported;
};

static struct lib libs[NCOPIES];
static char paths[NCOPIES][512];
static pthread_barrier_t go;

static void copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    CHECK(in >= 0, "cannot open %s: errno %d (is the helper library built?)", from, errno);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
    CHECK(out >= 0, "cannot create %s: errno %d", to, errno);
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        CHECK(write(out, buf, (size_t)n) == n, "short write to %s", to);
    CHECK(n == 0, "read error on %s", from);
    close(in);
    close(out);
}

static void use_all(long tag, const char *who)
{
    for (int c = 0; c < CALLS; c++) {
        for (int i = 0; i < NCOPIES; i++) {
            int rc = libs[i].work(tag * 100 + i);
            CHECK(rc == 0, "%s: copy %d: dltls_work failed check %d (1/2: TLS misaligned, 3/4: "
                  "TLS not initialised on first use, 5/8: malloc failed, 6/7: TLS shared with "
                  "another thread or module)", who, i, rc);
        }
    }
    for (int i = 0; i < NCOPIES; i++) {
        CHECK(libs[i].counter() == CALLS, "%s: copy %d counter %ld != %d", who, i,
              libs[i].counter(), CALLS);
        /* dlsym of a TLS symbol yields this thread's instance. */
        CHECK(*libs[i].exported == 12345, "%s: copy %d: exported TLS variable is %ld", who, i,
              *libs[i].exported);
        libs[i].release();
    }
}

static void *thread_main(void *arg)
{
    long tag = (long)(intptr_t)arg;
    /* Allocate before the modules exist, so this thread's DTV is the
     * small initial one and has to grow once they are loaded. */
    void *p = malloc(100);
    CHECK(p != NULL, "malloc returned NULL");
    pthread_barrier_wait(&go); /* main dlopens here */
    pthread_barrier_wait(&go);
    use_all(tag, "thread");
    free(p);
    return NULL;
}

int main(void)
{
    char self[512];
    const char *dir = getenv("CDYLIB_TESTS_BIN");
    if (!dir || !*dir) {
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        CHECK(n > 0, "readlink(/proc/self/exe) failed");
        self[n] = 0;
        dir = dirname(self);
    }
    char src[600];
    snprintf(src, sizeof src, "%s/libdltls.so", dir);
    char tmpl[] = "/tmp/memx-dltls-XXXXXX";
    char *tmp = mkdtemp(tmpl);
    CHECK(tmp != NULL, "mkdtemp failed: errno %d", errno);
    for (int i = 0; i < NCOPIES; i++) {
        snprintf(paths[i], sizeof paths[i], "%s/libdltls%d.so", tmp, i);
        copy_file(src, paths[i]);
    }

    for (int cycle = 0; cycle < 3; cycle++) {
        pthread_t t[NTHREADS];
        pthread_barrier_init(&go, NULL, NTHREADS + 1);
        for (int i = 0; i < NTHREADS; i++)
            CHECK(pthread_create(&t[i], NULL, thread_main, (void *)(intptr_t)(cycle * 10 + i + 1))
                      == 0, "pthread_create failed");
        pthread_barrier_wait(&go);
        for (int i = 0; i < NCOPIES; i++) {
            libs[i].h = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL);
            CHECK(libs[i].h != NULL, "dlopen(%s) failed: %s", paths[i], dlerror());
            libs[i].work = (work_fn)dlsym(libs[i].h, "dltls_work");
            libs[i].release = (release_fn)dlsym(libs[i].h, "dltls_release");
            libs[i].counter = (counter_fn)dlsym(libs[i].h, "dltls_counter");
            libs[i].exported = (long *)dlsym(libs[i].h, "dltls_exported");
            CHECK(libs[i].work && libs[i].release && libs[i].counter && libs[i].exported,
                  "dlsym failed in %s", paths[i]);
        }
        pthread_barrier_wait(&go);
        use_all(999, "main");
        for (int i = 0; i < NTHREADS; i++)
            pthread_join(t[i], NULL);
        pthread_barrier_destroy(&go);
        for (int i = 0; i < NCOPIES; i++)
            CHECK(dlclose(libs[i].h) == 0, "dlclose(%s) failed: %s", paths[i], dlerror());
        /* The allocator is still fine after the loader freed everything. */
        void *v[100];
        for (int i = 0; i < 100; i++) {
            v[i] = malloc((size_t)i * 1000 + 1);
            CHECK(v[i] != NULL, "malloc after dlclose returned NULL");
            memset(v[i], 1, (size_t)i * 1000 + 1);
        }
        for (int i = 0; i < 100; i++)
            free(v[i]);
    }
    for (int i = 0; i < NCOPIES; i++)
        unlink(paths[i]);
    rmdir(tmp);
    return 0;
}
