"""A multiprocessing pool (fork): each worker keeps what pool_work made."""
import multiprocessing as mp
import os

KEEP = []


def pool_work(i):
    for _ in range(16):
        KEEP.append(bytearray(256 << 10))
    return os.getpid()


if __name__ == "__main__":
    mp.set_start_method("fork")
    with mp.Pool(2) as pool:
        workers = set(pool.map(pool_work, range(8), chunksize=1))
        pool.close()
        pool.join()
    print("main", os.getpid(), "workers", *sorted(workers))
