/*
 * exit_teardown: allocation and deallocation during process and thread
 * teardown.
 *
 * Allocator hazard: an allocator that tears down its state at exit (a
 * destructor that unmaps arenas, a thread-exit hook that frees the thread
 * cache and marks it dead) is then called again by code that runs later in
 * the same teardown. The order of all these hooks is not under the
 * allocator's control:
 * - thread exit: C++ thread_local destructors (__call_tls_dtors) run first,
 *   then pthread key destructors in up to PTHREAD_DESTRUCTOR_ITERATIONS
 *   rounds (the allocator's own thread-exit key may run before or after
 *   ours), then glibc frees the thread's DTV/TLS blocks;
 * - process exit: the main thread's thread_local destructors, atexit
 *   handlers and static C++ destructors (in reverse registration order),
 *   ELF destructors (__attribute__((destructor)), .fini_array) of the
 *   program and of each library including the preloaded allocator;
 * - other threads keep running (and allocating) while exit() runs.
 * Each of those here allocates, reallocates and frees, and frees blocks
 * that were allocated by static initialisers. The process must exit 0; the
 * runner also checks for the markers printed at the end of each stage, so a
 * silently skipped stage is noticed.
 */
// EXPECT-STDERR: teardown: thread_local dtors ok
// EXPECT-STDERR: teardown: key dtors ok
// EXPECT-STDERR: teardown: main thread_local dtor ok
// EXPECT-STDERR: teardown: atexit ok
// EXPECT-STDERR: teardown: static dtor ok
// EXPECT-STDERR: teardown: elf destructor ok
#include "check.h"

#include <atomic>
#include <cstring>
#include <pthread.h>
#include <string>
#include <thread>
#include <vector>

/* Churns the allocator a little: small, medium, large, realloc. */
static void churn(const char *where)
{
    void *v[32];
    for (int i = 0; i < 32; i++) {
        std::size_t n = static_cast<std::size_t>(i) * 211 + 1;
        if (i == 31)
            n = 3 * MiB;
        v[i] = malloc(n);
        CHECK(v[i] != nullptr, "%s: malloc(%zu) returned NULL", where, n);
        std::memset(v[i], i, n < 4096 ? n : 4096);
    }
    for (int i = 0; i < 32; i += 2) {
        v[i] = realloc(v[i], static_cast<std::size_t>(i) * 500 + 10);
        CHECK(v[i] != nullptr, "%s: realloc returned NULL", where);
    }
    void *c = calloc(100, 100);
    CHECK(c != nullptr, "%s: calloc returned NULL", where);
    for (int i = 0; i < 32; i++)
        free(v[i]);
    free(c);
    std::string s(5000, 'x');
    std::vector<int> iv(1000, 3);
    CHECK(s.size() + iv.size() == 6000, "%s: containers", where);
}

/* Blocks allocated during static initialisation, freed during teardown. */
struct StaticBlocks {
    std::vector<void *> blocks;
    StaticBlocks()
    {
        for (int i = 0; i < 64; i++) {
            blocks.push_back(malloc(static_cast<std::size_t>(i) * 1000 + 8));
            CHECK(blocks.back() != nullptr, "static init malloc returned NULL");
        }
    }
    ~StaticBlocks()
    {
        churn("static destructor");
        for (void *b : blocks)
            free(b);
        blocks.clear();
        say("teardown: static dtor ok\n");
    }
};
static StaticBlocks static_blocks;      /* destroyed after atexit handlers registered later */
static void *elf_dtor_blocks[16];       /* allocated by an ELF constructor */
static void *atexit_blocks[16];
static std::string *static_string = new std::string(300, 's');

__attribute__((constructor)) static void elf_ctor()
{
    for (int i = 0; i < 16; i++)
        elf_dtor_blocks[i] = malloc(static_cast<std::size_t>(i) * 4000 + 1);
}

__attribute__((destructor)) static void elf_dtor()
{
    churn("ELF destructor");
    for (int i = 0; i < 16; i++)
        free(elf_dtor_blocks[i]);
    delete static_string;
    say("teardown: elf destructor ok\n");
}

static void at_exit_handler()
{
    churn("atexit handler");
    for (int i = 0; i < 16; i++)
        free(atexit_blocks[i]);
    /* Registering more work from a handler is allowed. */
    say("teardown: atexit ok\n");
}

/* thread_local objects whose destructors allocate. */
static std::atomic<int> tl_dtors{0};
struct TlsObject {
    void *p;
    bool main_thread;
    TlsObject() : p(malloc(1234)), main_thread(false) {}
    ~TlsObject()
    {
        churn("thread_local destructor");
        free(p);
        if (main_thread)
            say("teardown: main thread_local dtor ok\n");
        tl_dtors++;
    }
};
static thread_local TlsObject tls_object;

/* pthread key destructor: allocates, and re-arms itself once so that it
 * also runs in a later destructor round (after the allocator's own hook, if
 * that ran in the first). */
static pthread_key_t key;
static std::atomic<int> key_dtors{0};
static void key_dtor(void *v)
{
    churn("pthread key destructor");
    /* The value's first byte says which round this is. */
    int round = *static_cast<unsigned char *>(v);
    free(v);
    key_dtors++;
    if (round == 0) {
        unsigned char *again = static_cast<unsigned char *>(malloc(77));
        CHECK(again != nullptr, "key destructor: malloc returned NULL");
        again[0] = 1;
        pthread_setspecific(key, again); /* runs again next round */
    }
}

static std::atomic<bool> background_started{false};
static void background()
{
    /* Keeps allocating while the main thread exits. */
    void *v[16] = {};
    background_started = true;
    for (unsigned long i = 0;; i++) {
        int k = static_cast<int>(i % 16);
        free(v[k]);
        v[k] = malloc(i % 5000 + 1);
        if (!v[k])
            _exit(3);
    }
}

int main()
{
    CHECK(pthread_key_create(&key, key_dtor) == 0, "pthread_key_create failed");
    for (int i = 0; i < 16; i++)
        atexit_blocks[i] = malloc(static_cast<std::size_t>(i) * 100000 + 1);
    atexit(at_exit_handler);

    /* Threads that exit normally, running thread_local and key destructors. */
    for (int wave = 0; wave < 10; wave++) {
        std::vector<std::thread> ts;
        for (int i = 0; i < 8; i++)
            ts.emplace_back([] {
                tls_object.p = realloc(tls_object.p, 5000); /* touch it: constructs it */
                CHECK(tls_object.p != nullptr, "realloc returned NULL");
                unsigned char *kv = static_cast<unsigned char *>(calloc(1, 100));
                CHECK(kv != nullptr, "calloc returned NULL");
                pthread_setspecific(key, kv);
                churn("thread body");
            });
        for (auto &t : ts)
            t.join();
    }
    CHECK(tl_dtors == 80, "%d thread_local destructors ran, expected 80", tl_dtors.load());
    CHECK(key_dtors == 160, "%d key destructor calls, expected 160 (2 rounds x 80 threads)",
          key_dtors.load());
    say("teardown: thread_local dtors ok\n");
    say("teardown: key dtors ok\n");

    /* The main thread's own thread_local, destroyed by exit(). */
    tls_object.main_thread = true;
    tls_object.p = realloc(tls_object.p, 100);

    /* Detached threads still allocating when exit() runs. */
    for (int i = 0; i < 2; i++)
        std::thread(background).detach();
    while (!background_started)
        std::this_thread::yield();
    static_blocks.blocks.push_back(malloc(10)); /* one more, freed at exit */
    return 0; /* exit(0): all of the above run now */
}
