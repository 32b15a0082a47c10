#!/usr/bin/env python3
"""Python under MEMX_HEAP_LIMIT: running out of heap is a MemoryError that
the program can catch and recover from, not a crash or the OOM killer.

    MEMX_HEAP_LIMIT=256M LD_PRELOAD=target/release/libmemx.so python3 scripts/heap-limit.py

Three rounds: grow a list of 1 MiB bytearrays (each written through) until
MemoryError, catch it, check every block, free them all. Each round must get
close to the limit (and not beyond it), the rounds must fit about the same
number of blocks (freed memory is reused), and ordinary work (JSON, dicts,
strings) must still run afterwards. Exits non-zero with a message otherwise;
the last line is a summary.

Run by scripts/real-programs.sh (checks python-heap-limit*), which sets the
limit; `--limit BYTES` tells the script what it is.
"""
import argparse
import gc
import json
import sys

BLOCK = 1 << 20


def fill():
    blocks = []
    try:
        while True:
            b = bytearray(BLOCK)
            b[::4096] = bytes([len(blocks) & 0xFF]) * (BLOCK // 4096)
            blocks.append(b)
            if len(blocks) > 1 << 20:
                sys.exit("no MemoryError after a TiB: is the limit set?")
    except MemoryError:
        pass
    n = len(blocks)
    for i, b in enumerate(blocks):
        if b[::4096] != bytes([i & 0xFF]) * (BLOCK // 4096):
            sys.exit("block %d changed" % i)
    del blocks, b
    gc.collect()
    return n


def work():
    d = {str(i): [i, str(i) * 3, {"k": i}] for i in range(50000)}
    s = json.dumps(d)
    assert json.loads(s) == d
    return len(s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, required=True, help="MEMX_HEAP_LIMIT in bytes")
    args = ap.parse_args()
    rounds = [fill() for _ in range(3)]
    low = args.limit // BLOCK // 2
    high = args.limit // BLOCK
    for n in rounds:
        if not low <= n <= high:
            sys.exit("rounds %s: expected %d..%d blocks of 1 MiB" % (rounds, low, high))
    if max(rounds) - min(rounds) > 8:
        sys.exit("rounds %s: freed memory was not reused" % rounds)
    size = work()
    print("heap-limit: MemoryError after %s MiB of bytearrays; recovered each time; "
          "then %d bytes of JSON" % ("/".join(map(str, rounds)), size))


if __name__ == "__main__":
    main()
