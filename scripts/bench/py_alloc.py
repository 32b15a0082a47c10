"""Allocation-heavy pure-Python workload for the memx benchmark suite.

    python3 py_alloc.py [SCALE]

JSON round trips of nested documents, dict and list building, string
formatting, bytes concatenation and slicing, sorting, a transient object
graph. Run by the driver twice: as is (pymalloc handles objects of up to
512 B and malloc sees only the larger ones) and with PYTHONMALLOC=malloc
(every object goes through malloc). The result is checked, so an allocator
that corrupts memory fails the run.
"""
import collections
import json
import random
import sys


def make_doc(rng, i):
    return {
        "id": i,
        "name": "user-%06d" % i,
        "email": "user%d@example.%s" % (i, rng.choice(("com", "org", "net"))),
        "score": rng.random() * 1000.0,
        "tags": [rng.choice(("alpha", "beta", "gamma", "delta", "eps")) * rng.randint(1, 4)
                 for _ in range(rng.randint(0, 8))],
        "history": [{"t": rng.randint(0, 10**9), "v": rng.random()} for _ in range(rng.randint(0, 6))],
        "blob": "x" * rng.randint(0, 2000),
        "nested": {"a": [1, 2, 3], "b": {"c": [None, True, False]}, "d": str(i) * 3},
    }


class Node:
    __slots__ = ("key", "children", "payload")

    def __init__(self, key, payload):
        self.key = key
        self.children = []
        self.payload = payload


def one_iteration(rng, it):
    # JSON round trips
    docs = [make_doc(rng, it * 1000 + k) for k in range(120)]
    text = json.dumps(docs)
    back = json.loads(text)
    if back[7]["id"] != docs[7]["id"] or back[-1]["name"] != docs[-1]["name"]:
        raise SystemExit("py_alloc: JSON round trip mismatch")
    total = len(text)

    # dicts and lists: index, group, invert
    index = {d["name"]: d for d in back}
    groups = {}
    for d in back:
        for t in d["tags"]:
            groups.setdefault(t, []).append(d["id"])
    inverted = {v: k for k, v in ((d["id"], d["email"]) for d in back)}
    total += len(index) + sum(len(v) for v in groups.values()) + len(inverted)

    # bytes: build, concatenate, slice, join
    chunks = [bytes([k & 0xFF]) * rng.randint(1, 3000) for k in range(200)]
    joined = b"".join(chunks)
    acc = b""
    for c in chunks[:60]:
        acc += c[: len(c) // 2]
    pieces = [joined[k:k + 97] for k in range(0, len(joined), 97)]
    total += len(acc) + len(pieces)

    # strings and sorting
    words = ["%s-%d-%x" % (rng.choice(("foo", "bar", "bazz", "quux")), k, k * 7919) for k in range(3000)]
    words.sort()
    total += len(" ".join(words[::10]))
    nums = [rng.random() for _ in range(5000)]
    nums.sort()

    # transient object graph with cycles (exercises the GC and frees in bulk)
    root = Node(0, None)
    nodes = [root]
    for k in range(1, 3000):
        n = Node(k, [k] * (k % 7))
        parent = nodes[rng.randrange(len(nodes))]
        parent.children.append(n)
        n.children.append(parent)
        nodes.append(n)
    total += len(nodes)
    del nodes, root
    return total, back


def work(scale=1.0, seed=1):
    rng = random.Random(seed)
    iterations = max(1, int(round(60 * scale)))
    total = 0
    live = collections.deque(maxlen=8)  # a rolling live set of decoded documents
    for it in range(iterations):
        t, docs = one_iteration(rng, it)
        total += t
        live.append(docs)
    return total


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    total = work(scale)
    print("py_alloc: ok total=%d" % total)


if __name__ == "__main__":
    main()
