"""pymalloc hook: what must keep working around memx's PyMem hook.

- the allocator name CPython reports (None = a hook is in place);
- tracemalloc started and stopped over the hook (it must see every
  allocation and free: its numbers are compared with sys.getsizeof), and
  objects allocated under it freed after it stopped;
- with PYTHONTRACEMALLOC=1 (tracemalloc below memx's hook-to-be): stopping
  it lets the hook in later;
- threads allocating small objects, some while others hold no GIL;
- fork: the child frees the parent's objects and allocates its own;
- memx's objects freed and grown while its hook is removed.
Prints "done <allocator name at start> <at end>"."""
import ctypes
import os
import sys
import threading
import tracemalloc

name_fn = ctypes.pythonapi._PyMem_GetCurrentAllocatorName
name_fn.restype = ctypes.c_char_p


def name():
    n = name_fn()
    return n.decode() if n else "hooked"


def small(n, tag):
    return [(f"{tag}-{i}", i + 10**9, i * 0.25) for i in range(n)]


def size_of(objs):
    return sum(sys.getsizeof(t) + sum(sys.getsizeof(x) for x in t) for t in objs)


# Enough allocation for a few samples: the hook goes in at one.
warm = small(100_000, "warm")
start_name = name()

if tracemalloc.is_tracing():
    # PYTHONTRACEMALLOC=1: tracemalloc is below; memx waits for it to go.
    tracemalloc.stop()
    after = [small(50_000, f"after{i}") for i in range(8)]
    del after
else:
    tracemalloc.start()
    before, _ = tracemalloc.get_traced_memory()
    traced = small(50_000, "traced")
    grown, _ = tracemalloc.get_traced_memory()
    want = size_of(traced)
    # tracemalloc counts pymalloc's rounded-up request sizes only through
    # the hook chain: every object must be there.
    assert 0.9 < (grown - before) / want < 1.6, (grown - before, want)
    tracemalloc.stop()
    del traced  # allocated under tracemalloc, freed after it left

class Alloc(ctypes.Structure):
    """PyMemAllocatorEx"""
    _fields_ = [(f, ctypes.c_void_p) for f in ("ctx", "malloc", "calloc", "realloc", "free")]


get_alloc = ctypes.pythonapi.PyMem_GetAllocator
set_alloc = ctypes.pythonapi.PyMem_SetAllocator
get_alloc.argtypes = set_alloc.argtypes = [ctypes.c_int, ctypes.POINTER(Alloc)]
get_alloc.restype = set_alloc.restype = None


def without_memx_hook(fn):
    """Runs fn with pymalloc put back in place of memx's hook (whose ctx
    points at the allocator it replaced), then puts the hook back."""
    hooks = {}
    for domain in (1, 2):  # PYMEM_DOMAIN_MEM, PYMEM_DOMAIN_OBJ
        a = Alloc()
        get_alloc(domain, ctypes.byref(a))
        hooks[domain] = a
    prev = {d: Alloc.from_buffer_copy(ctypes.string_at(a.ctx, ctypes.sizeof(Alloc)))
            for d, a in hooks.items()}
    for d, a in prev.items():
        set_alloc(d, ctypes.byref(a))
    try:
        assert name() == "pymalloc", name()
        fn()
    finally:
        for d, a in hooks.items():
            set_alloc(d, ctypes.byref(a))


if name() == "hooked" and not tracemalloc.is_tracing():
    # Objects memx sampled, freed (and grown) while its hook is gone:
    # pymalloc hands them to free/realloc, which are memx's.
    gone = small(50_000, "gone")
    grow = [bytearray(b"x" * 100) for _ in range(20_000)]

    def drop():
        for b in grow:
            b.extend(b"y" * 200)
        del gone[:]
        del grow[:]

    without_memx_hook(drop)
    assert name() == "hooked", name()

held = []


def worker(k):
    for _ in range(20):
        held.append(small(2_000, f"t{k}"))
        held.pop(0) if len(held) > 10 else None
        os.urandom(1)  # a call that drops the GIL


threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()

pid = os.fork()
if pid == 0:
    del warm
    mine = small(50_000, "child")
    del mine
    sys.stdout.flush()
    os._exit(0)
_, status = os.waitpid(pid, 0)
assert status == 0, status
del warm
print("done", start_name, name())
