#!/usr/bin/env python3
"""Allocation-heavy pure-Python workload, shared by the demo and the tests.

    python-workload.py [--scale S] [--threads N] [--quiet]

Runs a fixed, seeded mix of work that makes CPython allocate and free a lot:
JSON round trips of nested dicts/lists, dict/list/set churn, string building,
bytes/bytearray operations (including growing multi-megabyte buffers, which
exercises realloc and the large-allocation path), big-int arithmetic and a
bit of `re`. Many of the objects are bigger than 512 bytes, so they bypass
pymalloc and reach malloc() even without PYTHONMALLOC=malloc.

--threads N (N >= 1) runs the work in N threads, each with its own seed, and
hands every finished round from thread i to thread (i+1) % N through a queue,
so memory allocated by one thread is freed by another. --threads 0 (the
default) runs in the main thread only.

The last line of output is

    python-workload: scale=S threads=N rounds=R checksum=HEX

The checksum depends only on --scale and --threads: never on the allocator,
PYTHONMALLOC, PYTHONHASHSEED, addresses or thread scheduling. At the default
scale the run takes about 2-4 s on one core with glibc malloc.

Importable: run_workload(scale, threads) returns (checksum, rounds).
"""

import argparse
import hashlib
import json
import queue
import random
import re
import sys
import threading
import time

# Rounds per unit of --scale; each round is ~0.15 s with glibc.
ROUNDS_PER_SCALE = 20

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima "
    "mike november oscar papa quebec romeo sierra tango uniform victor whiskey "
    "xray yankee zulu malloc free realloc calloc arena page span slab cache "
    "thread heap chunk block size class bucket magazine"
).split()

WORD_RE = re.compile(r"\b([a-z]+)-(\d+)\b")
KV_RE = re.compile(r"(\w+)=(\w+);")


def _update(h, *parts):
    for p in parts:
        if isinstance(p, bytes):
            h.update(p)
        else:
            h.update(str(p).encode())
        h.update(b"|")


# ----------------------------------------------------------------- pieces

def make_record(rng, depth):
    """A nested dict/list structure of a few KiB."""
    rec = {
        "id": rng.randrange(1 << 40),
        "name": " ".join(rng.choice(WORDS) for _ in range(rng.randrange(2, 12))),
        "score": round(rng.random() * 1000, 3),
        "tags": [rng.choice(WORDS) for _ in range(rng.randrange(0, 40))],
        "flags": {w: rng.random() < 0.5 for w in rng.sample(WORDS, rng.randrange(1, 10))},
        "blob": "".join(chr(97 + rng.randrange(26)) for _ in range(rng.randrange(0, 2000))),
    }
    if depth > 0:
        rec["children"] = [make_record(rng, depth - 1) for _ in range(rng.randrange(0, 4))]
    return rec


def json_work(rng, h):
    records = [make_record(rng, 3) for _ in range(12)]
    text = json.dumps(records)
    back = json.loads(text)
    if back != records:
        raise AssertionError("json round trip mismatch")
    # Second trip through indent/sort_keys formatting: different string sizes.
    pretty = json.dumps(back, indent=2, sort_keys=True)
    again = json.loads(pretty)
    if again != records:
        raise AssertionError("json pretty round trip mismatch")
    _update(h, hashlib.sha256(json.dumps(again, sort_keys=True).encode()).hexdigest(), len(text))


def container_work(rng, h):
    d = {}
    for i in range(12000):
        d["k%d" % rng.randrange(24000)] = [i] * rng.randrange(1, 8)
    # Delete half, re-grow with different value types (dict resizes).
    for k in list(d)[::2]:
        del d[k]
    for i in range(6000):
        d[i] = ("v%d" % i) * rng.randrange(1, 5)
    total = sum(len(v) for v in d.values())

    lists = []
    for i in range(300):
        lst = list(range(rng.randrange(10, 2000)))
        lst.extend(lst[: len(lst) // 2])
        del lst[::3]
        lst.insert(0, i)
        lists.append(lst)
    for _ in range(600):
        a = rng.randrange(len(lists))
        lists[a] = lists[a][::-1] + lists[rng.randrange(len(lists))][:100]
    lsum = sum(sum(x) for x in lists) + sum(len(x) for x in lists)

    s1 = {rng.randrange(100000) for _ in range(12000)}
    s2 = {rng.randrange(100000) for _ in range(12000)}
    u, n, x = s1 | s2, s1 & s2, s1 ^ s2
    fs = frozenset("w%d" % v for v in n)
    ssum = (len(u), len(n), len(x), sum(u) % 1000003, len(fs), sorted(fs)[:3])

    tuples = sorted((rng.randrange(1000), "t%d" % i, i) for i in range(8000))
    _update(h, len(d), total, lsum, ssum, tuples[0], tuples[-1], len(tuples))


def string_work(rng, h):
    parts = []
    for i in range(6000):
        w = rng.choice(WORDS)
        parts.append("%s-%d %s=%s; " % (w, i, w, rng.randrange(1000)))
    text = "".join(parts)
    # Grow a string by repeated concatenation (realloc in place or copy).
    grown = ""
    for i in range(6000):
        grown += parts[i % len(parts)]
    up = text.upper().lower().replace("alpha", "ALPHA-LONGER-REPLACEMENT")
    pieces = up.split(" ")
    joined = "\n".join(reversed(pieces))
    encoded = joined.encode("utf-8")
    wide = (joined[:20000] + "\u20ac\u4e16\U0001f600").encode("utf-32")
    decoded = wide.decode("utf-32")

    found = WORD_RE.findall(text)
    kv = KV_RE.findall(text)
    subbed = WORD_RE.sub(lambda m: m.group(2) + m.group(1), text[:100000])
    counts = {}
    for w, _ in found:
        counts[w] = counts.get(w, 0) + 1
    _update(h, len(grown), len(up), len(pieces), hashlib.md5(encoded).hexdigest(),
            len(decoded), len(found), len(kv), hashlib.md5(subbed.encode()).hexdigest(),
            sorted(counts.items()))


def bytes_work(rng, h):
    buf = bytearray()
    chunk = bytes(range(256)) * 16
    # Grow to a few MiB piecewise: many reallocs, crossing into mmap sizes.
    target = rng.randrange(2 << 20, 8 << 20)
    while len(buf) < target:
        buf += chunk[: rng.randrange(1, len(chunk))]
    del buf[: len(buf) // 3]
    buf[100:200] = b"x" * 5000
    table = bytes.maketrans(b"abcdef", b"ABCDEF")
    out = bytes(buf).translate(table)
    hx = out[:200000].hex()
    back = bytes.fromhex(hx)
    blobs = [bytes(rng.randrange(256) for _ in range(64)) * rng.randrange(1, 200)
             for _ in range(200)]
    joined = b"".join(blobs)
    spl = joined.split(b"\x00")
    mv = memoryview(buf)[1000:50000]
    _update(h, len(buf), hashlib.sha1(out).hexdigest(), back == out[:200000],
            len(joined), len(spl), hashlib.sha1(mv).hexdigest())


def number_work(rng, h):
    x = 1
    for i in range(1, 600):
        x = x * (i + rng.randrange(1000)) + i
    y = x
    for _ in range(60):
        y = (y * y) % (x + 12345)
    fl = [rng.random() for _ in range(50000)]
    fl.sort()
    _update(h, x % (10 ** 18), y % (10 ** 18), x.bit_length(), round(sum(fl), 6))


PIECES = (json_work, container_work, string_work, bytes_work, number_work)


def run_round(seed, index):
    """One round: every piece once, in an order that depends on the seed.
    Returns (digest, a payload of garbage to be freed by someone else)."""
    rng = random.Random(seed * 1000003 + index)
    h = hashlib.sha256()
    order = list(PIECES)
    rng.shuffle(order)
    for fn in order:
        fn(rng, h)
    # Something big-ish to hand to another thread.
    payload = [make_record(rng, 1) for _ in range(20)]
    payload.append(bytearray(rng.randrange(1, 1 << 20)))
    return h.hexdigest(), payload


def _payload_digest(payload):
    h = hashlib.sha256()
    for item in payload:
        if isinstance(item, bytearray):
            # Zero-filled when made: checks calloc-style zeroing too.
            _update(h, len(item), item.count(0))
        else:
            _update(h, json.dumps(item, sort_keys=True))
    return h.hexdigest()


def run_workload(scale=1.0, threads=0):
    """Returns (checksum hex string, number of rounds run)."""
    rounds = max(1, int(round(ROUNDS_PER_SCALE * scale)))
    final = hashlib.sha256()
    _update(final, "rounds", rounds, "threads", threads)
    if threads <= 0:
        for i in range(rounds):
            digest, payload = run_round(0, i)
            _update(final, digest, _payload_digest(payload))
        return final.hexdigest()[:32], rounds

    per_thread = max(1, rounds // threads)
    rounds = per_thread * threads
    queues = [queue.Queue(maxsize=4) for _ in range(threads)]
    made = [[] for _ in range(threads)]      # made[i]: digests produced by thread i
    consumed = [[] for _ in range(threads)]  # consumed[i]: digests of what thread i freed
    errors = []
    abort = threading.Event()

    def receive(t, block):
        """Take one payload from thread t's inbox and free it; False if none."""
        while True:
            try:
                got = queues[t].get(timeout=0.5) if block else queues[t].get_nowait()
            except queue.Empty:
                if block and not abort.is_set():
                    continue
                return False
            consumed[t].append(_payload_digest(got))
            return True

    def worker(t):
        try:
            outbox = queues[(t + 1) % threads]
            received = 0
            for i in range(per_thread):
                digest, payload = run_round(t + 1, i)
                made[t].append(digest)
                # The next thread frees it. A full outbox means the neighbour
                # is behind: drain our own inbox while waiting, so no cycle of
                # full queues can deadlock.
                while True:
                    try:
                        outbox.put(payload, timeout=0.05)
                        break
                    except queue.Full:
                        if abort.is_set():
                            return
                        if receive(t, False):
                            received += 1
                del payload
                while receive(t, False):
                    received += 1
            while received < per_thread and not abort.is_set():
                if receive(t, True):
                    received += 1
        except BaseException as e:  # reported by the main thread
            errors.append((t, repr(e)))
            abort.set()
            raise

    ts = [threading.Thread(target=worker, args=(t,), name="workload-%d" % t)
          for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise RuntimeError("worker thread failed: %r" % (errors,))
    for t in range(threads):
        _update(final, "made", t, *made[t])
        _update(final, "consumed", t, *consumed[t])
    return final.hexdigest()[:32], rounds


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0,
                    help="work multiplier (default 1: about 2-4 s with glibc)")
    ap.add_argument("--threads", type=int, default=0,
                    help="run in N threads that free each other's memory (0: main thread only)")
    ap.add_argument("--quiet", action="store_true", help="print only the result line")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    checksum, rounds = run_workload(args.scale, args.threads)
    dt = time.perf_counter() - t0
    if not args.quiet:
        print("python-workload: %.2f s" % dt, file=sys.stderr)
    print("python-workload: scale=%g threads=%d rounds=%d checksum=%s"
          % (args.scale, args.threads, rounds, checksum))
    return 0


if __name__ == "__main__":
    sys.exit(main())
