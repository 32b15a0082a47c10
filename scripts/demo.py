#!/usr/bin/env python3
"""memx demo: run the Python workload in this process, then show the stats.

`make` runs it as

    LD_PRELOAD=target/release/libmemx.so MEMX_STATS_AT_EXIT=1 <python> scripts/demo.py

It runs scripts/python-workload.py's work (single-threaded, then threaded),
calls the C function malloc_stats() through ctypes so the allocator in use
prints its statistics to stderr, and prints a short summary: elapsed time,
peak RSS and whether libmemx.so is really mapped into this process.

Options: --scale S (default 1), --threads N (default 2; 0 skips the threaded
part).
"""

import argparse
import ctypes
import importlib.util
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load_workload():
    path = os.path.join(HERE, "python-workload.py")
    spec = importlib.util.spec_from_file_location("python_workload", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def mapped_allocator_libs():
    """Paths of malloc libraries mapped into this process (from /proc/self/maps)."""
    found = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 6:
                    continue
                path = fields[5]
                base = os.path.basename(path)
                if any(k in base for k in ("libmemx", "jemalloc", "tcmalloc", "mimalloc")):
                    if path not in found:
                        found.append(path)
    except OSError:
        pass
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    workload = load_workload()
    libs = mapped_allocator_libs()
    memx = [p for p in libs if "libmemx" in os.path.basename(p)]

    print("memx demo: python %s (%s)" % (sys.version.split()[0], sys.executable))
    print("  LD_PRELOAD=%s" % (os.environ.get("LD_PRELOAD") or "(unset)"))
    print("  PYTHONMALLOC=%s" % (os.environ.get("PYTHONMALLOC") or "(default: pymalloc)"))
    sys.stdout.flush()

    results = []
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    checksum, rounds = workload.run_workload(args.scale, 0)
    results.append(("single thread", rounds, checksum, time.perf_counter() - t0))
    if args.threads > 0:
        t0 = time.perf_counter()
        checksum, rounds = workload.run_workload(args.scale, args.threads)
        results.append(("%d threads" % args.threads, rounds, checksum,
                        time.perf_counter() - t0))
    elapsed = time.perf_counter() - t_all

    for name, rounds, checksum, secs in results:
        print("  workload, %-13s %3d rounds  %6.2f s  checksum %s"
              % (name + ":", rounds, secs, checksum))
    sys.stdout.flush()

    # The allocator's own statistics, on stderr. glibc, jemalloc and memx all
    # export malloc_stats(); look it up in the global namespace so the
    # preloaded definition wins.
    print("\n--- malloc_stats() ---", file=sys.stderr)
    sys.stderr.flush()
    try:
        ctypes.CDLL(None).malloc_stats()
    except AttributeError:
        print("(no malloc_stats() in this process)", file=sys.stderr)
    print("--- end of malloc_stats() ---\n", file=sys.stderr)
    sys.stderr.flush()

    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    print("summary:")
    print("  elapsed:   %.2f s (workload), %.2f s user + %.2f s sys CPU"
          % (elapsed, cpu.ru_utime, cpu.ru_stime))
    print("  peak RSS:  %.1f MiB" % (peak_kib / 1024.0))
    if memx:
        print("  allocator: memx is loaded (%s)" % memx[0])
    elif libs:
        print("  allocator: memx is NOT loaded; mapped: %s" % ", ".join(libs))
    else:
        print("  allocator: memx is NOT loaded (glibc malloc)")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
