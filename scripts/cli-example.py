#!/usr/bin/env python3
"""A small program with a leak, for the README's `memx` walk-through.

It parses JSON records and keeps every parsed record in a cache that is
never trimmed (the leak), while the temporary strings it builds are freed.
It asks memx for a heap dump after each round (SIGRTMIN+10, memx's default dump
signal), so `memx diff` can compare the rounds.
"""
import json
import os
import signal
import sys
import time

CACHE = {}


def make_payload(i):
    return json.dumps({"id": i, "name": "item-%d" % i, "tags": ["a", "b", "c"] * 4,
                       "blob": "x" * 2000})


def load_records(start, n):
    for i in range(start, start + n):
        text = make_payload(i)            # temporary: freed each iteration
        CACHE[i] = json.loads(text)       # kept forever: the leak


def dump_and_wait(seq):
    prefix = os.environ.get("MEMX_PROFILE")
    if not prefix:
        return
    path = "%s.%d.%04d.heap" % (prefix, os.getpid(), seq)
    os.kill(os.getpid(), signal.SIGRTMIN + 10)
    for _ in range(10000):
        if os.path.exists(path):
            return
        time.sleep(0.001)
    sys.exit("no dump " + path)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for r in range(rounds):
        load_records(r * 5000, 5000)
        dump_and_wait(r + 1)
    print("cached %d records" % len(CACHE))


if __name__ == "__main__":
    main()
