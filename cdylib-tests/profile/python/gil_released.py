"""python stacks: threads calling malloc through ctypes (the GIL is released
during the foreign call) while the main thread allocates from Python. No
crash; samples taken without the GIL name the Python line that made the
foreign call (the thread's own frames cannot change while it is in C)."""
import ctypes
import os
import signal
import threading
import time

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
held = []


def native_worker():
    for i in range(4000):
        p = libc.malloc(65536)  # site: foreign
        if i % 2:
            libc.free(p)
        else:
            held.append(p)


threads = [threading.Thread(target=native_worker) for _ in range(3)]
for t in threads:
    t.start()
keep = [bytearray(65536) for _ in range(1500)]
for t in threads:
    t.join()
os.kill(os.getpid(), signal.SIGRTMIN + 10)
time.sleep(0.2)
for p in held:
    libc.free(p)
print("done")
