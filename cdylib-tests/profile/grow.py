"""profile python: keeps appending bytearrays (64 MiB in all). Under
PYTHONMALLOC=malloc, with MEMX_PROFILE_INUSE_INTERVAL set, the dumps taken
as it grows have the allocation inside the bytearray constructor as their
top stack. (The exit dump comes after the interpreter has freed its objects:
its in-use columns are near empty, its alloc columns hold the totals.)"""
import time

keep = []
for i in range(1024):
    keep.append(bytearray(65536))
    if i % 128 == 0:
        time.sleep(0.005)
