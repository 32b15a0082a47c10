"""A cache that grows between two dumps (taken with the dump signal; the
script waits for each file), for memx's Python-first views."""
import glob
import os
import signal
import time


def dump_and_wait(n):
    os.kill(os.getpid(), signal.SIGRTMIN + 10)  # memx's default dump signal
    pattern = "%s.%d.*.heap" % (os.environ["MEMX_PROFILE"], os.getpid())
    while len(glob.glob(pattern)) < n:
        time.sleep(0.01)


def make_cache():
    cache = []
    for _ in range(4000):
        cache.append(bytearray(4096))  # SITE_CACHE
    return cache


def leak_more(cache):
    for _ in range(6000):
        cache.append(bytearray(4096))  # SITE_LEAK


cache = make_cache()
dump_and_wait(1)
leak_more(cache)
dump_and_wait(2)
