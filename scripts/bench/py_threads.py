"""Threaded variant of py_alloc.py: THREADS threads run the same workload
concurrently (the GIL serialises the Python code, but allocations and frees
happen on several OS threads and objects die on threads other than the one
that created them via the shared result list).

    python3 py_threads.py [THREADS] [SCALE]

The total amount of work is fixed (independent of THREADS).
"""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import py_alloc  # noqa: E402


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 4
    scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    threads = max(1, threads)
    results = [None] * threads
    errors = []

    def run(k):
        try:
            results[k] = py_alloc.work(scale / threads, seed=100 + k)
        except BaseException as e:  # reported below, fails the run
            errors.append(repr(e))

    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors or any(r is None for r in results):
        raise SystemExit("py_threads: a thread failed: %s" % "; ".join(errors))
    print("py_threads: ok threads=%d total=%d" % (threads, sum(results)))


if __name__ == "__main__":
    main()
