"""Child processes: a multiprocessing.Pool(2) with the start method argv[1],
used as `with Pool() as p: ...` (argv[2] "with": leaving the block
terminates the workers with SIGTERM) or with `p.close(); p.join()` inside
the block (argv[2] "close": the workers leave by os._exit or exit), whose
workers keep
what `pool_work` allocates; then two fork children doing the same work (their
samples must differ: the sampler is reseeded after fork). Prints the pids
to look for."""
import multiprocessing as mp
import os
import sys

KEEP = []


def pool_work(i):
    KEEP.extend(bytearray(256 << 10) for _ in range(16))  # site: pool_work
    return os.getpid()


def same_work():
    held = [bytearray(3000) for _ in range(20000)]  # site: same_work
    os._exit(0 if held else 1)


if __name__ == "__main__":
    mp.set_start_method(sys.argv[1])
    with mp.Pool(2) as pool:
        workers = set(pool.map(pool_work, range(8), chunksize=1))
        if sys.argv[2] == "close":
            pool.close()
            pool.join()
    twins = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            same_work()
        twins.append(pid)
    for pid in twins:
        os.waitpid(pid, 0)
    print("main", os.getpid())
    print("workers", *sorted(workers))
    print("twins", *twins)
