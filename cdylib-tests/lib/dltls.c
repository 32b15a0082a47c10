/*
 * libdltls.so: helper shared object for dlopen_tls.c (built by the runner
 * with -shared -fPIC; not a test by itself).
 *
 * It has general-dynamic TLS of several shapes: a small counter, a 128 KiB
 * array (ld.so allocates a dlopened module's TLS block per thread with
 * malloc, lazily, on the first access from each thread, and frees it with
 * free at thread exit or dlclose), an over-aligned block (ld.so then
 * over-allocates and aligns by hand), and a pointer array holding blocks
 * malloc'ed by this library. A pthread key destructor frees a per-thread
 * block at thread exit; a constructor/destructor pair allocates and frees
 * at dlopen/dlclose.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GD __attribute__((tls_model("global-dynamic")))

static GD __thread long counter;
static GD __thread unsigned char big[128 * 1024];
static GD __thread double aligned64[8] __attribute__((aligned(64)));
static GD __thread char aligned4k[100] __attribute__((aligned(4096)));
static GD __thread void *ptrs[16];
static GD __thread long my_tag;
__thread long dltls_exported GD = 12345; /* initialised (.tdata) */

static void *global_block;
static pthread_key_t key;
static int key_ok;

static void key_dtor(void *p)
{
    free(p);
}

__attribute__((constructor)) static void dltls_init(void)
{
    global_block = malloc(5000);
    if (global_block)
        memset(global_block, 1, 5000);
    key_ok = pthread_key_create(&key, key_dtor) == 0;
}

__attribute__((destructor)) static void dltls_fini(void)
{
    free(global_block);
    global_block = NULL;
    if (key_ok)
        pthread_key_delete(key);
}

/* Returns 0 when all is well, else a small number naming the failed check. */
int dltls_work(long tag)
{
    if (((uintptr_t)aligned64 & 63) != 0)
        return 1;
    if (((uintptr_t)aligned4k & 4095) != 0)
        return 2;
    if (counter == 0) {
        /* First use in this thread: zero-initialised .tbss, .tdata copied. */
        for (size_t i = 0; i < sizeof big; i += 509)
            if (big[i] != 0)
                return 3;
        if (dltls_exported != 12345)
            return 4;
        my_tag = tag;
        memset(big, (int)(tag & 0xFF), sizeof big);
        if (key_ok && !pthread_getspecific(key)) {
            void *p = malloc(333);
            if (!p)
                return 5;
            pthread_setspecific(key, p);
        }
    }
    if (my_tag != tag)
        return 6; /* another thread's TLS block? */
    for (size_t i = 0; i < sizeof big; i += 4093)
        if (big[i] != (unsigned char)(tag & 0xFF))
            return 7;
    counter++;
    int slot = (int)(counter % 16);
    free(ptrs[slot]);
    size_t n = (size_t)(counter * 97 % 20000) + 1;
    ptrs[slot] = malloc(n);
    if (!ptrs[slot])
        return 8;
    memset(ptrs[slot], (int)tag, n);
    aligned64[counter % 8] = (double)counter;
    aligned4k[counter % 100] = (char)counter;
    return 0;
}

/* Frees this thread's blocks (call before the thread exits). */
void dltls_release(void)
{
    for (int i = 0; i < 16; i++) {
        free(ptrs[i]);
        ptrs[i] = NULL;
    }
}

long dltls_counter(void)
{
    return counter;
}
