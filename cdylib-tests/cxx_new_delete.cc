/*
 * cxx_new_delete: C++ allocation through operator new/delete.
 *
 * libstdc++'s operator new calls malloc (and loops on the new_handler),
 * its aligned new calls aligned_alloc, and its delete calls free. An
 * allocator may also replace the operators itself (jemalloc exports
 * _Znwm & co.); either way the following must hold:
 * - new/delete, new[]/delete[] (with array cookies for types that have
 *   destructors), sized delete, new of zero-length arrays;
 * - aligned new: types with alignas(64) and alignas(4096), single objects
 *   and arrays, and explicit ::operator new(n, std::align_val_t), with the
 *   matching (sized) aligned deletes;
 * - nothrow new of an impossible size returns nullptr, throwing new of an
 *   impossible size throws std::bad_alloc (not crash, not abort);
 * - the new_handler is called on failure, repeatedly until it uninstalls
 *   itself, and then bad_alloc is thrown (an allocator that replaces
 *   operator new must implement this loop);
 * - std::vector / std::string / std::map churn from 8 threads, with
 *   containers built in one thread and destroyed in another;
 * - under memx, all twenty operators come from memx itself (it exports
 *   them, so C++ skips the runtime's wrappers around malloc), and the
 *   failures above are the runtime's (memx's new hands a failed request
 *   to the C++ runtime's operator, which runs the handler and throws).
 */
#include "check.h"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <vector>

struct alignas(64) Line {
    unsigned char b[64];
};
struct alignas(4096) Page {
    unsigned char b[100];
};

static int live_objects;
struct Tracked {
    long v;
    Tracked() : v(7) { ++live_objects; }
    ~Tracked() { --live_objects; }
};

static int handler_calls;
static void counting_handler()
{
    ++handler_calls;
    if (handler_calls == 3)
        std::set_new_handler(nullptr); /* the next failure throws */
}

static void basic()
{
    for (int round = 0; round < 100; round++) {
        int *i = new int(round);
        CHECK(*i == round, "new int");
        delete i;
        std::size_t n = static_cast<std::size_t>(round) * 37 + 1;
        char *a = new char[n];
        std::memset(a, 1, n);
        delete[] a;
        Tracked *t = new Tracked[n];
        CHECK(live_objects == static_cast<int>(n), "new Tracked[%zu]: %d live", n, live_objects);
        CHECK(t[n - 1].v == 7, "Tracked not constructed");
        delete[] t;
        CHECK(live_objects == 0, "delete[] Tracked: %d still live", live_objects);
        /* sized delete, explicitly */
        void *s = ::operator new(n);
        std::memset(s, 2, n);
        ::operator delete(s, n);
        void *s2 = ::operator new[](n * 3);
        ::operator delete[](s2, n * 3);
    }
    char *z = new char[0];
    CHECK(z != nullptr, "new char[0] returned nullptr");
    delete[] z;
    int *null = nullptr;
    delete null;
    delete[] null;
}

static void aligned()
{
    for (int round = 0; round < 50; round++) {
        Line *l = new Line;
        CHECK(is_aligned(l, 64), "new Line (alignas 64) = %p", (void *)l);
        std::memset(l->b, 3, sizeof l->b);
        delete l;
        Page *p = new Page;
        CHECK(is_aligned(p, 4096), "new Page (alignas 4096) = %p", (void *)p);
        std::memset(p->b, 4, sizeof p->b);
        delete p;
        std::size_t n = static_cast<std::size_t>(round) + 1;
        Line *la = new Line[n];
        CHECK(is_aligned(la, 64), "new Line[%zu] = %p", n, (void *)la);
        std::memset(static_cast<void *>(la), 5, n * sizeof(Line));
        delete[] la;
        Page *pa = new Page[n];
        CHECK(is_aligned(pa, 4096), "new Page[%zu] = %p", n, (void *)pa);
        delete[] pa;
        for (std::size_t al = 16; al <= 1u << 20; al <<= 2) {
            void *q = ::operator new(n * 100, std::align_val_t(al));
            CHECK(is_aligned(q, al), "operator new(%zu, align %zu) = %p", n * 100, al, q);
            std::memset(q, 6, n * 100);
            if (round & 1)
                ::operator delete(q, n * 100, std::align_val_t(al));
            else
                ::operator delete(q, std::align_val_t(al));
            void *nq = ::operator new(n * 10, std::align_val_t(al), std::nothrow);
            CHECK(nq && is_aligned(nq, al), "nothrow aligned new = %p", nq);
            ::operator delete(nq, std::align_val_t(al), std::nothrow);
        }
    }
}

static void failures()
{
    const std::size_t huge = opaque_size(SIZE_MAX / 2);
    void *p = ::operator new(huge, std::nothrow);
    CHECK(p == nullptr, "nothrow operator new(SIZE_MAX/2) = %p", p);
    p = ::operator new[](huge, std::nothrow);
    CHECK(p == nullptr, "nothrow operator new[](SIZE_MAX/2) = %p", p);
    p = ::operator new(huge, std::align_val_t(64), std::nothrow);
    CHECK(p == nullptr, "nothrow aligned operator new(SIZE_MAX/2) = %p", p);

    bool threw = false;
    try {
        p = ::operator new(huge);
        escape(p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw, "operator new(SIZE_MAX/2) did not throw std::bad_alloc");
    threw = false;
    try {
        p = ::operator new(huge, std::align_val_t(256));
        escape(p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw, "aligned operator new(SIZE_MAX/2) did not throw std::bad_alloc");
    threw = false;
    try {
        std::vector<char> v;
        v.reserve(v.max_size() - 1); /* goes to operator new with a huge size */
    } catch (const std::bad_alloc &) {
        threw = true;
    } catch (const std::length_error &) {
        threw = true; /* some versions check max_size first */
    }
    CHECK(threw, "reserving max_size()-1 bytes did not throw");

    /* new_handler: called on each failure until it uninstalls itself. */
    handler_calls = 0;
    std::set_new_handler(counting_handler);
    threw = false;
    try {
        p = ::operator new(huge);
        escape(p);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw, "operator new with a new_handler did not end in bad_alloc");
    CHECK(handler_calls == 3, "new_handler called %d times, expected 3", handler_calls);
    CHECK(std::get_new_handler() == nullptr, "new_handler still installed");

    /* nothrow new also runs the handler (and returns nullptr once it is
     * gone). */
    handler_calls = 0;
    std::set_new_handler(counting_handler);
    p = ::operator new(huge, std::nothrow);
    CHECK(p == nullptr, "nothrow new with a handler = %p", p);
    CHECK(handler_calls == 3, "nothrow new: new_handler called %d times, expected 3",
          handler_calls);

    /* Still works afterwards. */
    std::string s(1000, 'x');
    CHECK(s.size() == 1000, "std::string after failures");
}

static void threads()
{
    std::mutex mu;
    std::vector<std::unique_ptr<std::map<int, std::string>>> handoff;
    std::atomic<long> checks{0};
    auto body = [&](int id) {
        uint64_t rng = static_cast<uint64_t>(id) * 1000003 + 1;
        for (int iter = 0; iter < 300; iter++) {
            std::vector<std::string> v;
            for (int k = 0; k < 50; k++)
                v.emplace_back(static_cast<std::size_t>(rng_next(&rng) % 200), char('a' + k % 26));
            std::vector<int> ints;
            for (int k = 0; k < 1000; k++)
                ints.push_back(k);
            auto m = std::make_unique<std::map<int, std::string>>();
            for (int k = 0; k < 40; k++)
                (*m)[k] = std::string(static_cast<std::size_t>(k) * 3, 'm') + std::to_string(id);
            for (std::size_t k = 0; k < v.size(); k++)
                CHECK(v[k].empty() || v[k][0] == char('a' + k % 26), "vector<string> corrupted");
            CHECK(ints[999] == 999, "vector<int> corrupted");
            std::unique_ptr<std::map<int, std::string>> other;
            {
                std::lock_guard<std::mutex> g(mu);
                handoff.push_back(std::move(m));
                if (handoff.size() > 16) {
                    other = std::move(handoff.front());
                    handoff.erase(handoff.begin());
                }
            }
            if (other) { /* built by some thread, checked and destroyed here */
                CHECK(other->size() == 40, "map from another thread has %zu entries",
                      other->size());
                const std::string &last = (*other)[39];
                CHECK(last.compare(0, 117, std::string(117, 'm')) == 0,
                      "map value from another thread corrupted");
                checks++;
            }
        }
    };
    std::vector<std::thread> ts;
    for (int i = 0; i < 8; i++)
        ts.emplace_back(body, i);
    for (auto &t : ts)
        t.join();
    CHECK(checks > 0, "no cross-thread handoff happened");
    handoff.clear();
}

static void exports()
{
    static const char *const names[] = {
        "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t",
        "_ZnwmSt11align_val_t", "_ZnamSt11align_val_t",
        "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
        "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t",
        "_ZdaPvRKSt9nothrow_t", "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t",
        "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
        "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t",
    };
    if (!lib_is_memx())
        return;
    for (const char *name : names)
        CHECK(same_object_as_malloc(name), "%s is not memx's", name);
}

int main()
{
    exports();
    basic();
    aligned();
    failures();
    threads();
    return 0;
}
