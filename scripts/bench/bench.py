#!/usr/bin/env python3
"""memx benchmark driver (stdlib only). Normally started by scripts/bench.sh.

Builds memx and the C workloads, runs every workload under every allocator
(glibc = no preload, jemalloc, mimalloc, tcmalloc, memx via LD_PRELOAD),
interleaved round by round, and reports the median wall time and median
peak RSS of each, each also as a ratio to glibc, with the geometric mean of
each ratio column. Then measures instructions per malloc+free pair under
valgrind --tool=callgrind. Then the heap profiler's overhead (memx with
MEMX_PROFILE vs without, gperftools' HEAPPROFILE, heaptrack:
profile_overhead.py). Prints the tables to stdout and writes BENCHMARKS.md
and bench-ratios.svg.

Run `scripts/bench.sh --help` for the options.
"""

import argparse
import datetime
import glob
import html
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

import md_sections
import mimalloc_bench
import profile_overhead

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(REPO, "target", "bench")
LIBDIR = "/usr/lib/x86_64-linux-gnu"
MEMX_DEFAULT = os.path.join(REPO, "target", "release", "libmemx.so")
PYTHON = os.path.realpath(sys.executable)

ALLOC_ORDER = ["glibc", "jemalloc", "mimalloc", "tcmalloc", "memx"]
LIB_CANDIDATES = {
    "jemalloc": ["libjemalloc.so.2", "libjemalloc.so*"],
    "mimalloc": ["libmimalloc.so.2", "libmimalloc.so.2.*", "libmimalloc.so*"],
    "tcmalloc": ["libtcmalloc_minimal.so.4", "libtcmalloc_minimal.so*"],
}
DEB_PACKAGES = {
    "jemalloc": "libjemalloc2",
    "mimalloc": "libmimalloc2.0",
    "tcmalloc": "libtcmalloc-minimal4",
}
COLORS = {
    "glibc": "#7f7f7f",
    "jemalloc": "#1f77b4",
    "mimalloc": "#2ca02c",
    "tcmalloc": "#ff7f0e",
    "memx": "#d62728",
}

C_PROGRAMS = ["runner", "churn", "larson", "xmalloc", "cache_probe", "realloc_grow", "large",
              "thread_churn", "ipp", "which_malloc", "many_threads"]

QUICK_FACTOR = 0.1
IPP_SIZES = [32, 1000, 20000]


class Workload:
    def __init__(self, name, argv, scale, desc, env=None, threads=None):
        self.name = name
        self.argv = argv          # list; "{S}" = scale, "{T}" = threads, "{PY}" = python
        self.scale = scale        # default (full) scale
        self.desc = desc
        self.env = env or {}
        self.threads = threads    # fixed thread count, or None = --threads
        self.suite = False        # one of mimalloc-bench's programs (mimalloc_bench.py), not ours
        self.cwd = None           # where it runs (None = target/bench)
        self.stdin = None         # file it reads as stdin (None = /dev/null)
        self.time_of = None       # stdout -> its time in s, for programs that report their own; None = wall
        self.ok_marker = ": ok"   # what its stdout must contain to count as a success (None: exit 0 is enough)
        self.per_cpu = False      # time_of's time is already per CPU second (not per wall second)

    def command(self, scale_factor, threads):
        t = self.threads if self.threads is not None else threads
        s = "%g" % (self.scale * scale_factor)
        out = []
        for a in self.argv:
            if a == "{S}":
                out.append(s)
            elif a == "{T}":
                out.append(str(t))
            elif a == "{PY}":
                out.append(PYTHON)
            elif a.startswith("bin:"):
                out.append(os.path.join(BUILD, a[4:]))
            elif a.startswith("src:"):
                out.append(os.path.join(HERE, a[4:]))
            else:
                out.append(a)
        return out


# Scales are calibrated to take ~2-3 s each under glibc on the 2-core
# reference machine (see BENCHMARKS.md for the measured times).
WORKLOADS = [
    Workload("churn", ["bin:churn", "{S}"], 3.0,
             "single thread, 8 B-1 KiB objects: LIFO bursts, random replacement in a 50k live set, FIFO ring"),
    Workload("larson", ["bin:larson", "{T}", "{S}"], 3.0,
             "server-like: THREADS threads replace random objects (32 B-1 KiB) in 2k-object pools; 1 in 8 freed by another thread"),
    Workload("larson-16t", ["bin:larson", "{T}", "{S}"], 2.5,
             "thread scaling: larson with 16 threads (same total work)", threads=16),
    Workload("xmalloc", ["bin:xmalloc", "{T}", "{S}"], 3.0,
             "producer/consumer pairs (THREADS/2): one thread allocates, the other frees, through a ring"),
    Workload("cache-scratch", ["bin:cache_probe", "scratch", "{T}", "{S}"], 5.0,
             "passive false sharing: workers free an 8 B object from the main thread, then allocate/write/free their own"),
    Workload("cache-thrash", ["bin:cache_probe", "thrash", "{T}", "{S}"], 5.0,
             "active false sharing: each thread allocates, writes and frees its own 8 B objects"),
    Workload("realloc", ["bin:realloc_grow", "{S}"], 1.0,
             "2,000 interleaved string builders grown by realloc (x2, x1.125, exact) to 16 B-256 KiB"),
    Workload("large", ["bin:large", "{S}"], 0.6,
             "12 slots of 64 KiB-32 MiB objects replaced at random; calloc (checked zero), realloc, every page written"),
    Workload("thread-churn", ["bin:thread_churn", "{T}", "{S}"], 1.0,
             "short-lived threads (THREADS at a time; 40k at full scale), 200 small allocations each, some freed by the main thread"),
    Workload("many-threads-16", ["bin:many_threads", "{T}", "{S}"], 8.0,
             "thread-per-request server: 16 threads, bursts of 128 objects (16 B-2 KiB) freed, 0.5 ms waits",
             threads=16),
    Workload("many-threads-256", ["bin:many_threads", "{T}", "{S}"], 2.0,
             "the same with 256 threads on the machine's CPUs", threads=256),
    Workload("many-threads-1024", ["bin:many_threads", "{T}", "{S}"], 1.0,
             "the same with 1024 threads (200 requests each)", threads=1024),
    Workload("py-json", ["{PY}", "src:py_alloc.py", "{S}"], 3.5,
             "pure Python: JSON round trips, dicts, lists, bytes, sorting, object graphs (pymalloc on)"),
    Workload("py-json-malloc", ["{PY}", "src:py_alloc.py", "{S}"], 3.5,
             "the same with PYTHONMALLOC=malloc (every object through malloc)", env={"PYTHONMALLOC": "malloc"}),
    Workload("py-threads", ["{PY}", "src:py_threads.py", "{T}", "{S}"], 3.5,
             "the same work split over THREADS Python threads"),
]


def log(msg=""):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    try:
        return int(v)
    except ValueError:
        sys.exit("bench: %s must be an integer, got %r" % (name, v))


def env_float(name, default):
    v = os.environ.get(name, "").strip()
    if not v:
        return default
    try:
        return float(v)
    except ValueError:
        sys.exit("bench: %s must be a number, got %r" % (name, v))


def env_flag(name):
    return os.environ.get(name, "").strip().lower() not in ("", "0", "no", "false", "off")


# --------------------------------------------------------------------------
# setup: allocators, builds


def find_lib(name):
    for pat in LIB_CANDIDATES[name]:
        for path in sorted(glob.glob(os.path.join(LIBDIR, pat))):
            if os.path.isfile(path):
                return path
    return None


def tail(text, lines=15):
    ls = text.rstrip().splitlines()
    return "\n".join(ls[-lines:])


def build_memx(args):
    """Returns (path or None, note)."""
    if args.memx:
        p = os.path.abspath(args.memx)
        return (p, "given with --memx") if os.path.isfile(p) else (None, "%s does not exist" % p)
    if args.no_build:
        if os.path.isfile(MEMX_DEFAULT):
            return MEMX_DEFAULT, "not rebuilt (--no-build)"
        return None, "target/release/libmemx.so missing (--no-build)"
    if not os.path.isfile(os.path.join(REPO, "Cargo.toml")):
        return None, "no Cargo.toml in the repository"
    if not shutil.which("cargo"):
        return None, "cargo not found"
    log("bench: cargo build --release ...")
    os.makedirs(BUILD, exist_ok=True)
    logpath = os.path.join(BUILD, "cargo-build.log")
    with open(logpath, "w") as f:
        rc = subprocess.call(["cargo", "build", "--release"], cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        with open(logpath) as f:
            log(tail(f.read(), 25))
        log("bench: memx failed to build (full log: %s); its column will show n/a" % logpath)
        return None, "cargo build --release failed"
    if not os.path.isfile(MEMX_DEFAULT):
        return None, "cargo build succeeded but target/release/libmemx.so is missing"
    return MEMX_DEFAULT, "built with cargo build --release"


def compile_workloads():
    os.makedirs(BUILD, exist_ok=True)
    common = os.path.join(HERE, "common.h")
    gcc = os.environ.get("CC", "gcc")
    for prog in C_PROGRAMS:
        src = os.path.join(HERE, prog + ".c")
        out = os.path.join(BUILD, prog)
        deps = [src, common, os.path.abspath(__file__)]
        if os.path.isfile(out) and all(os.path.getmtime(out) >= os.path.getmtime(d) for d in deps):
            continue
        cmd = [gcc, "-O2", "-pthread", "-Wall", "-o", out, src, "-lm", "-ldl"]
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        if r.returncode != 0:
            log(r.stdout)
            sys.exit("bench: failed to compile %s: %s" % (src, " ".join(cmd)))


def make_env(lib, extra=None):
    env = dict(os.environ)
    for k in ("LD_PRELOAD", "PYTHONMALLOC", "PYTHONDEVMODE", "PYTHONTRACEMALLOC"):
        env.pop(k, None)
    profile_overhead.clean_env_keys(env)  # MEMX_*, HEAPPROFILE, ...: every run starts from the defaults
    if lib:
        env["LD_PRELOAD"] = lib
    if extra:
        env.update(extra)
    return env


def check_preload(name, lib):
    """Checks that malloc/free resolve into LIB. Returns an error string or None."""
    probe = os.path.join(BUILD, "which_malloc")
    try:
        r = subprocess.run([probe], env=make_env(lib), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "a trivial program hangs with it preloaded"
    if r.returncode != 0:
        return "a trivial program fails with it preloaded (exit %d): %s" % (r.returncode, tail(r.stderr, 3))
    if "cannot be preloaded" in r.stderr or "ERROR: ld.so" in r.stderr:
        return "ld.so could not preload it: %s" % tail(r.stderr, 2)
    got = r.stdout.split()
    if not lib:
        return None if got and "libc.so" in got[0] else "malloc resolves to %s" % r.stdout.strip()
    real = os.path.realpath(lib)
    if len(got) != 2 or any(os.path.realpath(g) != real for g in got):
        return "malloc/free resolve to %s, not to %s" % (" / ".join(got) or "?", lib)
    return None


# --------------------------------------------------------------------------
# running


class Result:
    def __init__(self, ok, wall=None, rss_kib=None, reason=None, stderr_tail=None, cpu=None, elapsed=None,
                 minflt=None):
        self.ok = ok
        self.wall = wall          # the workload's time: wall time, or what it reports (Workload.time_of)
        self.elapsed = elapsed    # wall time of the process
        self.minflt = minflt      # minor page faults (ru_minflt)
        self.work_cpu = None      # CPU seconds for the workload's unit of work (see run_measured)
        self.rss_kib = rss_kib
        self.cpu = cpu            # user + system seconds of the workload (and its reaped children)
        self.reason = reason
        self.stderr_tail = stderr_tail

    def as_json(self):
        return {"ok": self.ok, "wall_s": self.wall, "elapsed_s": self.elapsed, "maxrss_kib": self.rss_kib,
                "cpu_s": self.cpu, "work_cpu_s": self.work_cpu, "minflt": self.minflt, "reason": self.reason, "stderr_tail": self.stderr_tail}


_current = {"proc": None}


def run_measured(cmd, lib, extra_env, timeout, tag, workload=None):
    """Runs CMD with LIB preloaded through target/bench/runner (which forks
    it from a small process and reports wall time and ru_maxrss from
    wait4); returns a Result. WORKLOAD (optional) gives the directory, stdin,
    success marker and time parser (see Workload)."""
    cwd = getattr(workload, "cwd", None) or BUILD
    stdin_path = getattr(workload, "stdin", None)
    ok_marker = getattr(workload, "ok_marker", ": ok")
    time_of = getattr(workload, "time_of", None)
    logdir = os.path.join(BUILD, "logs")
    os.makedirs(logdir, exist_ok=True)
    out_path = os.path.join(logdir, tag + ".out")
    err_path = os.path.join(logdir, tag + ".err")
    res_path = os.path.join(logdir, tag + ".res")
    if os.path.exists(res_path):
        os.unlink(res_path)
    env = make_env(None, extra_env)
    if lib:
        env["BENCH_PRELOAD"] = lib
    timed_out = [False]
    with open(out_path, "w") as out, open(err_path, "w") as err, open(stdin_path or os.devnull) as inp:
        proc = subprocess.Popen([os.path.join(BUILD, "runner"), res_path] + cmd, env=env, stdout=out,
                                stderr=err, stdin=inp, start_new_session=True, cwd=cwd)
        _current["proc"] = proc

        def kill():
            timed_out[0] = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        try:
            rc = proc.wait()
        finally:
            timer.cancel()
            _current["proc"] = None
            # whatever the workload left behind in its process group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
    with open(out_path, errors="replace") as f:
        stdout = f.read()
    with open(err_path, errors="replace") as f:
        stderr = f.read()
    wall = rss = status = cpu = minflt = None
    try:
        with open(res_path) as f:
            wall_s, rss_s, status_s, cpu_s, minflt_s = f.read().split()
        wall, rss, status, cpu, minflt = float(wall_s), int(rss_s), int(status_s), float(cpu_s), int(minflt_s)
    except (OSError, ValueError):
        pass
    reported = time_of(stdout) if time_of and status == 0 else None
    reason = None
    if timed_out[0]:
        reason = "timed out after %d s" % timeout
    elif rc != 0 or status is None:
        reason = "runner failed (exit %d)" % rc
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            sname = signal.Signals(sig).name
        except ValueError:
            sname = str(sig)
        reason = "killed by %s" % sname
    elif os.WEXITSTATUS(status) != 0:
        reason = "exit status %d" % os.WEXITSTATUS(status)
    elif "cannot be preloaded" in stderr or "ERROR: ld.so" in stderr:
        reason = "ld.so could not preload the allocator"
    elif ok_marker and ok_marker not in stdout:
        reason = "no success line on stdout"
    elif time_of and reported is None:
        reason = "no throughput in its output"
    if reason:
        return Result(False, reason=reason, stderr_tail=tail(stderr, 12) or tail(stdout, 5))
    res = Result(True, wall=reported if time_of else wall, rss_kib=rss, cpu=cpu, elapsed=wall, minflt=minflt)
    # The CPU seconds the same work took, steadier than wall time on a loaded machine: the process's CPU
    # time, or for a program that reports its throughput over a fixed time, that time x CPU/wall.
    if not time_of:
        res.work_cpu = cpu
    elif getattr(workload, "per_cpu", False):
        res.work_cpu = reported
    elif wall:
        res.work_cpu = reported * cpu / wall
    return res


def median(xs):
    return statistics.median(xs) if xs else None


def summarize(results, workloads, allocs, available):
    """-> {wl: {alloc: dict(time, rss, tratio, rratio, fail, na, spread)}}"""
    summary = {}
    for w in workloads:
        row = {}
        for a in allocs:
            cell = {"na": a not in available, "fail": None, "time": None, "rss": None, "cpu": None,
                    "tratio": None, "rratio": None, "cratio": None, "spread": None, "n": 0}
            rs = results.get(w.name, {}).get(a, [])
            fails = [r for r in rs if not r.ok]
            if fails:
                cell["fail"] = fails[0].reason
            elif rs:
                ts = [r.wall for r in rs]
                cell["time"] = median(ts)
                cell["rss"] = median([r.rss_kib for r in rs]) / 1024.0
                cpus = [r.work_cpu for r in rs if r.work_cpu is not None]
                cell["cpu"] = median(cpus) if len(cpus) == len(rs) else None
                cell["n"] = len(rs)
                if len(ts) > 1 and cell["time"] > 0:
                    cell["spread"] = (max(ts) - min(ts)) / cell["time"]
            row[a] = cell
        base = row.get("glibc")
        for a in allocs:
            c = row[a]
            if base and base["time"] and c["time"]:
                c["tratio"] = c["time"] / base["time"]
                c["rratio"] = c["rss"] / base["rss"] if base["rss"] else None
            if base and base["cpu"] and c["cpu"]:
                c["cratio"] = c["cpu"] / base["cpu"]
        summary[w.name] = row
    return summary


def geomeans(summary, workloads, allocs):
    out = {}
    for a in allocs:
        g = {}
        for key in ("tratio", "rratio", "cratio"):
            vals = [summary[w.name][a][key] for w in workloads if summary[w.name][a][key]]
            g[key] = math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else None
            g[key + "_n"] = len(vals)
        out[a] = g
    return out


# --------------------------------------------------------------------------
# tables


def fmt_time(c):
    if c["na"]:
        return "n/a"
    if c["fail"]:
        return "FAIL"
    if c["time"] is None:
        return "-"
    return "%.2f" % c["time"] if c["time"] < 100 else "%.0f" % c["time"]


def fmt_rss(c):
    if c["na"]:
        return "n/a"
    if c["fail"]:
        return "FAIL"
    if c["rss"] is None:
        return "-"
    return "%.1f" % c["rss"] if c["rss"] < 1000 else "%.0f" % c["rss"]


def fmt_ratio(v):
    return "-" if v is None else "%.2f" % v


def table_rows(summary, workloads, allocs, gm):
    """-> header (list of (alloc, [4 subheaders])), rows (list of [name, cells...])"""
    rows = []
    for w in workloads:
        r = [w.name]
        for a in allocs:
            c = summary[w.name][a]
            r += [fmt_time(c), fmt_ratio(c["tratio"]), fmt_rss(c), fmt_ratio(c["rratio"])]
        rows.append(r)
    r = ["geomean"]
    nw = len(workloads)
    for a in allocs:
        g = gm[a]
        tr = fmt_ratio(g["tratio"])
        rr = fmt_ratio(g["rratio"])
        if g["tratio"] is not None and g["tratio_n"] < nw:
            tr += "*"
        if g["rratio"] is not None and g["rratio_n"] < nw:
            rr += "*"
        r += ["", tr, "", rr]
    rows.append(r)
    return rows


SUBHEAD = ["time s", "x", "RSS MiB", "x"]


def text_table(summary, workloads, allocs, gm):
    rows = table_rows(summary, workloads, allocs, gm)
    namew = max(len("workload"), max(len(r[0]) for r in rows))
    widths = []
    for i in range(len(allocs) * 4):
        col = [r[1 + i] for r in rows] + [SUBHEAD[i % 4]]
        widths.append(max(len(x) for x in col))
    groupw = [sum(widths[4 * k:4 * k + 4]) + 3 for k in range(len(allocs))]
    sep = " | "
    lines = []
    h1 = "%-*s" % (namew, "") + sep + sep.join("%-*s" % (groupw[k], allocs[k]) for k in range(len(allocs)))
    h2 = "%-*s" % (namew, "workload") + sep + sep.join(
        " ".join("%*s" % (widths[4 * k + j], SUBHEAD[j]) for j in range(4)) for k in range(len(allocs)))
    lines += [h1.rstrip(), h2, "-" * len(h2)]
    for idx, r in enumerate(rows):
        if idx == len(rows) - 1:
            lines.append("-" * len(h2))
        line = "%-*s" % (namew, r[0]) + sep + sep.join(
            " ".join("%*s" % (widths[4 * k + j], r[1 + 4 * k + j]) for j in range(4)) for k in range(len(allocs)))
        lines.append(line)
    return "\n".join(lines)


def md_table(summary, workloads, allocs, gm):
    rows = table_rows(summary, workloads, allocs, gm)
    head = ["workload"]
    for a in allocs:
        head += ["%s time (s)" % a, "x", "%s RSS (MiB)" % a, "x"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] + ["---:"] * (len(head) - 1)) + "|"]
    for idx, r in enumerate(rows):
        cells = list(r)
        if idx == len(rows) - 1:
            cells = ["**geomean**"] + ["**%s**" % c if c else "" for c in cells[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def many_threads_md(summary, workloads, allocs):
    """Issue 14's rows: wall time, CPU time (user + system) and peak RSS per
    allocator for the many-threads workloads, the best of each bolded."""
    rows = [w.name for w in workloads if w.name.startswith("many-threads")]
    if not rows:
        return ""
    head = ["workload"] + ["%s wall / CPU (s) / RSS (MiB)" % a for a in allocs]
    lines = ["| " + " | ".join(head) + " |", "|:---|" + "---:|" * len(allocs)]
    for name in rows:
        row = summary[name]
        best = {}
        for key in ("time", "cpu", "rss"):
            vals = [row[a][key] for a in allocs if row[a][key] is not None]
            best[key] = min(vals) if vals else None
        cells = [name]
        for a in allocs:
            c = row[a]
            if c["na"]:
                cells.append("n/a")
                continue
            if c["fail"]:
                cells.append("FAIL")
                continue
            parts = []
            for key, fmt in (("time", "%.2f"), ("cpu", "%.2f"), ("rss", "%.1f")):
                v = c[key]
                t = "-" if v is None else fmt % v
                parts.append("**%s**" % t if v is not None and v == best[key] else t)
            cells.append(" / ".join(parts))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ipp_rows(ipp, allocs):
    rows = []
    for a in allocs:
        if a not in ipp:
            continue
        r = [a]
        for s in IPP_SIZES:
            v = ipp[a].get(s)
            if isinstance(v, str):
                r.append(v)
            elif v is None:
                r.append("-")
            else:
                r.append("%.0f" % v)
        rows.append(r)
    return rows


def ipp_text(ipp, allocs):
    rows = ipp_rows(ipp, allocs)
    head = ["allocator"] + ["%d B" % s for s in IPP_SIZES]
    w = [max(len(x) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join("%-*s" % (w[0], head[0]) if i == 0 else "%*s" % (w[i], head[i]) for i in range(len(head)))]
    lines.append("-" * len(lines[0]))
    for r in rows:
        lines.append("  ".join("%-*s" % (w[0], r[0]) if i == 0 else "%*s" % (w[i], r[i]) for i in range(len(r))))
    return "\n".join(lines)


def ipp_md(ipp, allocs):
    rows = ipp_rows(ipp, allocs)
    lines = ["| allocator | " + " | ".join("%d B" % s for s in IPP_SIZES) + " |",
             "|:---|" + "---:|" * len(IPP_SIZES)]
    for r in rows:
        lines.append("| " + " | ".join(r) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------
# SVG plot


def svg_plot(summary, workloads, allocs, gm, title_extra=""):
    """Two panels (time ratio, RSS ratio), grouped bars per workload, log2 y
    axis centred on 1.0 (= glibc). glibc itself is the baseline line."""
    bars = [a for a in allocs if a != "glibc"]
    groups = [w.name for w in workloads] + ["geomean"]

    def value(g, a, key):
        if g == "geomean":
            return gm[a][key], None
        c = summary[g][a]
        if c["na"]:
            return None, "n/a"
        if c["fail"]:
            return None, "FAIL"
        return c[key], None

    vals = [value(g, a, k)[0] for g in groups for a in bars for k in ("tratio", "rratio")]
    vals = [v for v in vals if v]
    lo_exp, hi_exp = -1, 1
    if vals:
        lo_exp = min(-1, math.floor(math.log2(min(vals))))
        hi_exp = max(1, math.ceil(math.log2(max(vals))))
    lo_exp, hi_exp = max(lo_exp, -4), min(hi_exp, 4)

    nb = max(1, len(bars))
    bar_w = 11 if nb >= 4 else 16
    gap = 16
    group_w = nb * bar_w + gap
    left, right, top = 64, 20, 70
    panel_h = 250
    label_h = 110
    width = left + right + len(groups) * group_w + 14
    height = top + 2 * (panel_h + label_h) + 10
    out = []
    out.append('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
               'font-family="Helvetica, Arial, sans-serif" font-size="11">' % (width, height, width, height))
    out.append('<rect x="0" y="0" width="%d" height="%d" fill="white"/>' % (width, height))
    out.append('<text x="%d" y="20" font-size="15" font-weight="bold">memx benchmark: ratio to glibc '
               '(lower is better, log scale)%s</text>' % (left, html.escape(title_extra)))
    # legend
    lx = left
    for a in bars:
        out.append('<rect x="%d" y="32" width="12" height="12" fill="%s"/>' % (lx, COLORS.get(a, "#333")))
        out.append('<text x="%d" y="42">%s</text>' % (lx + 16, html.escape(a)))
        lx += 28 + 7 * len(a)
    out.append('<line x1="%d" y1="38" x2="%d" y2="38" stroke="black" stroke-width="1.5"/>' % (lx, lx + 18))
    out.append('<text x="%d" y="42">glibc = 1.0</text>' % (lx + 22))

    for p, (key, ptitle) in enumerate((("tratio", "wall time / glibc"), ("rratio", "peak RSS / glibc"))):
        y0 = top + p * (panel_h + label_h)

        def y(v):
            e = min(max(math.log2(v), lo_exp), hi_exp)
            return y0 + (hi_exp - e) / float(hi_exp - lo_exp) * panel_h

        out.append('<text x="%d" y="%d" font-size="13" font-weight="bold">%s</text>' % (left, y0 - 8, ptitle))
        for e in range(lo_exp, hi_exp + 1):
            yy = y(2.0 ** e)
            lab = ("%g" % (2.0 ** e))
            out.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s" stroke-width="%s"/>'
                       % (left, yy, width - right, yy, "black" if e == 0 else "#dddddd",
                          "1.5" if e == 0 else "1"))
            out.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (left - 6, yy + 4, lab))
        out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>' % (left, y0, left, y0 + panel_h))
        for gi, g in enumerate(groups):
            gx = left + 8 + gi * group_w + (14 if g == "geomean" else 0)
            if g == "geomean":
                out.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999" stroke-dasharray="3,3"/>'
                           % (gx - 10, y0, gx - 10, y0 + panel_h))
            for bi, a in enumerate(bars):
                v, why = value(g, a, key)
                x = gx + bi * bar_w
                color = COLORS.get(a, "#333")
                if v:
                    y1, yv = y(1.0), y(v)
                    ytop, h = min(y1, yv), max(abs(yv - y1), 1.0)
                    out.append('<rect x="%d" y="%.1f" width="%d" height="%.1f" fill="%s"><title>%s %s: %.3f'
                               '</title></rect>' % (x, ytop, bar_w - 2, h, color, html.escape(g),
                                                    html.escape(a), v))
                    if math.log2(v) > hi_exp or math.log2(v) < lo_exp:
                        ty = ytop - 3 if v > 1 else ytop + h + 10
                        out.append('<text x="%.1f" y="%.1f" font-size="8" text-anchor="middle">%.0f</text>'
                                   % (x + (bar_w - 2) / 2.0, ty, v) if v > 1 else
                                   '<text x="%.1f" y="%.1f" font-size="8" text-anchor="middle">%.2f</text>'
                                   % (x + (bar_w - 2) / 2.0, ty, v))
                elif why == "FAIL":
                    out.append('<text x="%.1f" y="%.1f" fill="%s" font-weight="bold" text-anchor="middle">'
                               '\u2715<title>%s %s: FAIL</title></text>'
                               % (x + (bar_w - 2) / 2.0, y(1.0) - 3, color, html.escape(g), html.escape(a)))
            lx0 = gx + nb * bar_w / 2.0
            ly = y0 + panel_h + 12
            out.append('<text x="%.1f" y="%d" text-anchor="end" transform="rotate(-40 %.1f %d)"%s>%s</text>'
                       % (lx0, ly, lx0, ly, ' font-weight="bold"' if g == "geomean" else "", html.escape(g)))
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------
# callgrind: instructions per malloc+free pair


def callgrind_total(path):
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("summary:") or line.startswith("totals:"):
                return int(line.split()[1])
    return None


def run_ipp(allocs, libs, n1, n2, envs=None):
    """ENVS: optional {alloc: extra environment}."""
    envs = envs or {}
    outdir = os.path.join(BUILD, "callgrind")
    os.makedirs(outdir, exist_ok=True)
    prog = os.path.join(BUILD, "ipp")
    res = {}
    for a in allocs:
        res[a] = {}
        for size in IPP_SIZES:
            totals = []
            err = None
            for n in (n1, n2):
                cg = os.path.join(outdir, "%s-%d-%d.out" % (a, size, n))
                if os.path.exists(cg):
                    os.unlink(cg)
                cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=" + cg, prog, str(size), str(n)]
                try:
                    r = subprocess.run(cmd, env=make_env(libs[a], envs.get(a)), stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
                except subprocess.TimeoutExpired:
                    err = "timed out"
                    break
                if r.returncode != 0 or not os.path.exists(cg):
                    err = "exit %d" % r.returncode
                    log("bench: callgrind %s %d B failed (%s):\n%s" % (a, size, err, tail(r.stderr, 12)))
                    break
                t = callgrind_total(cg)
                if t is None:
                    err = "no totals"
                    break
                totals.append(t)
            res[a][size] = "FAIL" if err else (totals[1] - totals[0]) / float(n2 - n1)
        log("bench: callgrind %-9s %s" % (a, "  ".join(
            "%d B: %s" % (s, v if isinstance(v, str) else "%.1f" % v) for s, v in res[a].items())))
    return res


# --------------------------------------------------------------------------
# report


def machine_info():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) / 1024.0 / 1024.0
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    libc = " ".join(os.confstr("CS_GNU_LIBC_VERSION").split()) if hasattr(os, "confstr") else "?"
    return {"cpu": cpu, "cores": cores, "mem_gib": mem, "kernel": platform.release(), "libc": libc,
            "python": "%s (%s)" % (platform.python_version(), PYTHON)}


def git_commit():
    try:
        h = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, universal_newlines=True)
        if h.returncode != 0 or not h.stdout.strip():
            return "uncommitted"
        commit = h.stdout.strip()
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                             ":(exclude)BENCHMARKS.md", ":(exclude)bench-ratios.svg"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True)
        if st.returncode == 0 and st.stdout.strip():
            commit += " (with uncommitted changes)"
        return commit
    except OSError:
        return "uncommitted"


def pkg_version(pkg):
    try:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, universal_newlines=True)
        return r.stdout.strip() if r.returncode == 0 else None
    except OSError:
        return None


def write_report(path_md, path_svg, ctx):
    mi = ctx["machine"]
    L = []
    L.append("# memx benchmarks")
    L.append("")
    L.append("Generated by `scripts/bench.sh` (driver: `scripts/bench/bench.py`); do not edit by hand, "
             "re-run the script instead.%s" % (
                 " **Quick smoke-test run (BENCH_QUICK=1): small scales, numbers are not representative.**"
                 if ctx["quick"] else ""))
    L.append("")
    # a section this run did not measure (no MIMALLOC_BENCH, --no-profiler): the last run's, with its own date
    mb = ctx.get("mb_md") or md_sections.kept(path_md, mimalloc_bench.extract_section)
    if mb:
        L.append(mb)
        L.append("")
    L.append("## memx's own workloads")
    L.append("")
    L += md_sections.header_lines(ctx["date"], ctx["commit"], mi, ctx["alloc_notes"])
    L.append("- Python: %s" % mi["python"])
    L.append("- Settings: %d round(s), interleaved per workload across allocators; %d threads "
             "(BENCH_THREADS) unless the workload name says otherwise; scale factor %g%s; "
             "suite wall time %s" % (
                 ctx["rounds"], ctx["threads"], ctx["scale_factor"], " (quick)" if ctx["quick"] else "",
                 ctx["suite_time"]))
    L.append("- Command: `%s`" % ctx["command"])
    L.append("")
    L.append("### Wall time and peak RSS")
    L.append("")
    L.append("Median over the rounds of the wall time (s) and of the peak RSS (`ru_maxrss`, MiB) of the "
             "whole process; `x` = ratio to glibc (lower is better). The last row is the geometric mean "
             "of each ratio column%s. FAIL = the run crashed, failed its own checks or timed out "
             "(details below); n/a = allocator not available." % (
                 " (* = over fewer workloads, the failed ones left out)" if ctx["gm_partial"] else ""))
    L.append("")
    L.append(ctx["md_table"])
    L.append("")
    L.append("![Time and peak-RSS ratios to glibc per workload](%s)" % os.path.basename(path_svg))
    L.append("")
    if ctx.get("many_md"):
        L.append("### Many threads: wall time, CPU time and peak RSS")
        L.append("")
        L.append("Issue 14's targets, per thread count: wall time and CPU time (user + system, of the whole "
                 "process) at or below the best peer's, peak RSS at or below glibc's. Medians over the "
                 "rounds; in each row the best wall time, CPU time and RSS are in bold.")
        L.append("")
        L.append(ctx["many_md"])
        L.append("")
    if ctx["noisy"]:
        L.append("Noisy cells, where the spread over the rounds (max-min) exceeds 25%% of the median "
                 "(the machine is shared; multi-threaded workloads on 2 cores are sensitive to scheduling): "
                 "%s." % "; ".join(ctx["noisy"]))
        L.append("")
    if ctx["failures"]:
        L.append("### Failures")
        L.append("")
        for f in ctx["failures"]:
            L.append("- **%s** under **%s**: %s" % (f["workload"], f["alloc"], f["reason"]))
            if f["stderr"]:
                L.append("")
                L.append("  ```")
                for line in f["stderr"].splitlines():
                    L.append("  " + line)
                L.append("  ```")
        L.append("")
    L.append("### Instructions per malloc+free pair")
    L.append("")
    if ctx["ipp"]:
        L.append("Measured with `valgrind --tool=callgrind` on `ipp SIZE N` (one object of SIZE kept live, "
                 "10,000 warm-up pairs, then N `malloc(SIZE)`+`free` pairs): (Ir(N=%d) - Ir(N=%d)) / %d, so "
                 "startup cancels out. Includes ~4 instructions of loop overhead." % (
                     ctx["ipp_n"][1], ctx["ipp_n"][0], ctx["ipp_n"][1] - ctx["ipp_n"][0]))
        L.append("")
        L.append(ctx["ipp_md"])
    else:
        L.append("Not measured in this run (%s)." % ctx["ipp_skipped"])
    L.append("")
    prof = ctx.get("profiler_md") or md_sections.kept(path_md, profile_overhead.extract_section)
    if prof:
        L.append(prof)
        L.append("")
    L.append("## Workloads of memx's own suite")
    L.append("")
    L.append("Sources in `scripts/bench/`; C programs built with `gcc -O2 -pthread` into `target/bench/`. "
             "Every workload checks its data (tagged objects, patterns, calloc zeroing), so memory "
             "corruption shows up as FAIL.")
    L.append("")
    L.append("| workload | command | what it does |")
    L.append("|:---|:---|:---|")
    for w in ctx["workloads"]:
        cmd = " ".join(os.path.relpath(x, REPO) if x.startswith(REPO) else
                       ("python3" if x == PYTHON else x) for x in w.command(ctx["scale_factor"], ctx["threads"]))
        if w.env:
            cmd = " ".join("%s=%s" % kv for kv in w.env.items()) + " " + cmd
        L.append("| %s | `%s` | %s |" % (w.name, cmd, w.desc))
    L.append("")
    L.append("## Reproducing")
    L.append("")
    L.append("```sh")
    L.append("scripts/bench.sh                      # full suite, 3 rounds, writes BENCHMARKS.md + bench-ratios.svg")
    L.append("BENCH_QUICK=1 scripts/bench.sh        # smoke test: 1 round, small scales")
    L.append("scripts/bench.sh --only churn,larson --allocs glibc,memx   # a subset (report under target/bench/)")
    L.append("scripts/bench.sh --profiler-only      # only the profiler-overhead section (make bench-profiler)")
    L.append("scripts/bench.sh --help               # all options (BENCH_ROUNDS, BENCH_THREADS, ...)")
    L.append("MIMALLOC_BENCH=/path/to/mimalloc-bench/out/bench scripts/bench.sh   # with the field's suite first")
    L.append("MIMALLOC_BENCH=... scripts/bench.sh --suite-only [--only larsonN,rptestN]   # only the suite")
    L.append("```")
    L.append("")
    with open(path_md, "w") as f:
        f.write("\n".join(L))
    with open(path_svg, "w") as f:
        f.write(ctx["svg"])


# --------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="scripts/bench.sh",
        description="memx benchmark suite: runs workloads under glibc, jemalloc, mimalloc, tcmalloc and memx "
                    "(LD_PRELOAD), prints a table and writes BENCHMARKS.md + bench-ratios.svg.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="environment: BENCH_ROUNDS (default 3, quick 1), BENCH_THREADS (default 4), BENCH_QUICK=1 "
               "(smoke test), BENCH_SCALE (multiplies all workload scales), BENCH_TIMEOUT (s per run), "
               "BENCH_NO_CALLGRIND=1, BENCH_PROFILER_ROUNDS (default 6, quick 1), BENCH_NO_PROFILER=1, "
               "MIMALLOC_BENCH (mimalloc-bench's build directory)."
               "\nworkloads: " + ", ".join(w.name for w in WORKLOADS))
    p.add_argument("--only", metavar="NAME[,NAME]", help="run only these workloads (names or prefixes, e.g. py)")
    p.add_argument("--allocs", metavar="A[,A]", help="allocators to run (default: %s)" % ",".join(ALLOC_ORDER))
    p.add_argument("--rounds", type=int, help="rounds (default: BENCH_ROUNDS or 3; 1 with --quick)")
    p.add_argument("--threads", type=int, help="threads for the threaded workloads (default: BENCH_THREADS or 4)")
    p.add_argument("--quick", action="store_true", help="smoke test, same as BENCH_QUICK=1")
    p.add_argument("--scale", type=float, help="multiply all workload scales (default: BENCH_SCALE or 1)")
    p.add_argument("--timeout", type=int, help="seconds before a run counts as FAIL (default 300, quick 60)")
    p.add_argument("--no-install", action="store_true", help="do not apt-get install missing peers (bench.sh)")
    p.add_argument("--no-build", action="store_true", help="do not run cargo build; use the existing libmemx.so")
    p.add_argument("--memx", metavar="PATH", help="use this libmemx.so (implies no cargo build)")
    p.add_argument("--no-callgrind", action="store_true", help="skip the instruction-count benchmark")
    p.add_argument("--callgrind-only", action="store_true", help="only the instruction-count benchmark")
    p.add_argument("--profiler-only", action="store_true",
                   help="only the heap-profiler overhead section (memx MEMX_PROFILE on/off, gperftools "
                        "HEAPPROFILE, heaptrack); replaces that section of BENCHMARKS.md, keeps the rest")
    p.add_argument("--no-profiler", action="store_true",
                   help="skip the profiler overhead section (BENCHMARKS.md keeps the previous one)")
    p.add_argument("--profiler-rounds", type=int, metavar="N",
                   help="rounds of the profiler section (default: BENCH_PROFILER_ROUNDS or 6; 1 with --quick)")
    p.add_argument("--report-dir", metavar="DIR",
                   help="where BENCHMARKS.md and bench-ratios.svg go (default: the repository root for "
                        "a run of the whole suite, target/bench/ with --only/--allocs)")
    p.add_argument("--no-report", action="store_true", help="print the table only, write no files")
    p.add_argument("--suite", metavar="DIR",
                   help="mimalloc-bench's build directory (its out/bench with the programs built by cmake); "
                        "default: MIMALLOC_BENCH. Without it the suite is skipped")
    p.add_argument("--suite-only", action="store_true",
                   help="only mimalloc-bench's programs (no callgrind, no profiler section); a run of all of "
                        "them replaces the mimalloc-bench section of BENCHMARKS.md and keeps the rest")
    p.add_argument("--no-suite", action="store_true", help="skip mimalloc-bench even if MIMALLOC_BENCH is set")
    p.add_argument("--suite-procs", type=int, metavar="N",
                   help="mimalloc-bench's PROCS (default: the CPUs this process may use, as its bench.sh)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    suite_dir = None if args.no_suite else (args.suite or os.environ.get("MIMALLOC_BENCH", "").strip() or None)
    suite_procs = args.suite_procs or mimalloc_bench.usable_cpus()
    suite, suite_skipped, suite_note = [], [], "MIMALLOC_BENCH not set"
    if args.no_suite:
        suite_note = "--no-suite"
    elif suite_dir:
        suite, suite_skipped, suite_note = mimalloc_bench.workloads(Workload, suite_dir, suite_procs)
    if args.suite_only and not suite:
        sys.exit("bench: --suite-only, but mimalloc-bench is not available: %s" % suite_note)
    if args.list:
        for w in suite:
            print("%-16s %s" % (w.name, w.desc))
        for w in WORKLOADS:
            print("%-16s %s" % (w.name, w.desc))
        return 0
    t_start = time.time()
    quick = args.quick or env_flag("BENCH_QUICK")
    rounds = args.rounds or env_int("BENCH_ROUNDS", 1 if quick else 3)
    threads = args.threads or env_int("BENCH_THREADS", 4)
    scale_factor = (args.scale or env_float("BENCH_SCALE", 1.0)) * (QUICK_FACTOR if quick else 1.0)
    timeout = args.timeout or env_int("BENCH_TIMEOUT", 60 if quick else 300)
    do_callgrind = not (args.no_callgrind or env_flag("BENCH_NO_CALLGRIND"))
    if rounds < 1 or threads < 1:
        sys.exit("bench: rounds and threads must be >= 1")

    # which workloads and allocators: mimalloc-bench's programs first, then ours
    every = suite + ([] if args.suite_only else list(WORKLOADS))
    workloads = list(every)
    subset = False
    if args.only:
        want = [x.strip() for x in args.only.split(",") if x.strip()]
        sel = []
        for x in want:
            m = [w for w in every if w.name == x] or [w for w in every if w.name.startswith(x)]
            if not m:
                sys.exit("bench: unknown workload %r (have: %s)" % (x, ", ".join(w.name for w in every)))
            sel += [w for w in m if w not in sel]
        workloads = [w for w in every if w in sel]
        subset = True
    allocs = list(ALLOC_ORDER)
    if args.allocs:
        allocs = [x.strip() for x in args.allocs.split(",") if x.strip()]
        for a in allocs:
            if a not in ALLOC_ORDER:
                sys.exit("bench: unknown allocator %r (have: %s)" % (a, ", ".join(ALLOC_ORDER)))
        allocs = [a for a in ALLOC_ORDER if a in allocs]
        subset = subset or allocs != ALLOC_ORDER
    if args.callgrind_only:
        workloads = []
        subset = True
    if args.profiler_only:
        if args.only or args.allocs or args.callgrind_only or args.suite_only:
            sys.exit("bench: --profiler-only does not combine with --only, --allocs, --suite-only or "
                     "--callgrind-only")
        workloads, allocs = [], []
    do_profiler = args.profiler_only or not (subset or args.suite_only or args.no_profiler or
                                             env_flag("BENCH_NO_PROFILER"))
    if args.suite_only:
        do_callgrind = False
    if not suite_dir or not suite:
        log("bench: mimalloc-bench skipped (%s); set MIMALLOC_BENCH to its build directory (out/bench) "
            "to run it" % suite_note)
    elif suite_skipped:
        log("bench: mimalloc-bench programs not built in %s, skipped: %s" % (suite_dir, ", ".join(suite_skipped)))

    compile_workloads()

    libs, notes, available = {}, {}, []
    for a in allocs:
        if a == "glibc":
            libs[a], notes[a] = None, "glibc %s (no preload)" % os.confstr("CS_GNU_LIBC_VERSION").split()[-1]
        elif a == "memx":
            libs[a], notes[a] = build_memx(args)
        else:
            libs[a] = find_lib(a)
            ver = pkg_version(DEB_PACKAGES[a])
            notes[a] = ("%s (%s)" % (libs[a], ver)) if libs[a] and ver else (libs[a] or "not installed")
        if a != "glibc" and not libs[a]:
            log("bench: %s not available: %s; its column will show n/a" % (a, notes[a]))
            continue
        err = check_preload(a, libs[a])
        if err:
            log("bench: %s not usable: %s; its column will show n/a" % (a, err))
            notes[a] = "%s - NOT USED: %s" % (notes[a], err)
            continue
        available.append(a)
    for a in allocs:
        if a == "memx" and libs.get(a):
            notes[a] = "%s (%s)" % (os.path.relpath(libs[a], REPO), notes[a])
    alloc_notes = ["%s: %s" % (a, notes[a]) for a in allocs]
    if "glibc" not in allocs and not args.profiler_only:
        log("bench: glibc is not in --allocs, so there are no ratios")

    if not args.profiler_only:
        log("bench: %d workload(s) x %d allocator(s) x %d round(s), %d threads, scale x%g%s" % (
            len(workloads), len(available), rounds, threads, scale_factor, " (quick)" if quick else ""))

    # the timed runs: interleaved, round by round, workload by workload
    results = {w.name: {a: [] for a in allocs} for w in workloads}
    failures = []
    interrupted = False
    try:
        for r in range(rounds):
            for w in workloads:
                for a in available:
                    prev = results[w.name][a]
                    if any(not x.ok for x in prev):
                        continue  # failed in an earlier round: do not waste time on it
                    cmd = w.command(1.0 if w.suite else scale_factor, threads)
                    res = run_measured(cmd, libs[a], w.env, timeout, "%s.%s.r%d" % (w.name, a, r + 1), w)
                    prev.append(res)
                    if res.ok:
                        log("[%d/%d] %-15s %-9s %7.2f s %9.1f MiB" % (
                            r + 1, rounds, w.name, a, res.wall, res.rss_kib / 1024.0))
                    else:
                        log("[%d/%d] %-15s %-9s FAIL: %s" % (r + 1, rounds, w.name, a, res.reason))
                        log("    command: %s%s" % (
                            "".join("%s=%s " % kv for kv in sorted(make_env(libs[a], w.env).items())
                                    if kv[0] in ("LD_PRELOAD", "PYTHONMALLOC")), " ".join(cmd)))
                        if res.stderr_tail:
                            log("    " + res.stderr_tail.replace("\n", "\n    "))
                        failures.append({"workload": w.name, "alloc": a, "reason": res.reason,
                                         "stderr": res.stderr_tail, "round": r + 1})
    except KeyboardInterrupt:
        interrupted = True
        p = _current.get("proc")
        if p:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        log("\nbench: interrupted; partial results follow, no report written")

    # instruction counts
    ipp, ipp_skipped = {}, ""
    n1, n2 = 100000, 200000
    if interrupted:
        ipp_skipped = "interrupted"
    elif args.profiler_only:
        ipp_skipped = "--profiler-only"
    elif not do_callgrind:
        ipp_skipped = "--no-callgrind"
    elif not shutil.which("valgrind"):
        ipp_skipped = "valgrind not installed"
        log("bench: valgrind not found, skipping the instruction-count benchmark")
    else:
        log("bench: instruction counts under callgrind ...")
        ipp = run_ipp(available, libs, n1, n2)
        for a in allocs:
            if a not in available:
                ipp[a] = {s: "n/a" for s in IPP_SIZES}

    summary = summarize(results, workloads, allocs, available)
    mb_workloads = [w for w in workloads if w.suite]
    gm_mb = geomeans(summary, mb_workloads, allocs)
    workloads = [w for w in workloads if not w.suite]  # ours
    gm = geomeans(summary, workloads, allocs)
    elapsed = time.time() - t_start
    suite_time = "%d min %02d s" % (elapsed // 60, elapsed % 60)

    if not args.profiler_only:  # the allocator suite's tables
        print()
        if mb_workloads:
            print("mimalloc-bench (PROCS=%d): median of %d round(s); time in s (the suite's measure), peak RSS "
                  "in MiB, x = ratio to glibc (lower is better)" % (suite_procs, rounds))
            print()
            print(text_table(summary, mb_workloads, allocs, gm_mb))
            print("CPU time for the same work, geomean of the ratios to glibc: %s" %
                  mimalloc_bench.geo_line(gm_mb, allocs, "cratio"))
            print()
        elif not args.profiler_only:
            print("mimalloc-bench: skipped (%s)" % suite_note)
            print()
        if workloads:
            print("memx benchmark: median of %d round(s); time in s, peak RSS in MiB, x = ratio to glibc "
                  "(lower is better)%s" % (rounds, "  [QUICK]" if quick else ""))
            print()
            print(text_table(summary, workloads, allocs, gm))
            if any(gm[a]["tratio"] is not None and gm[a]["tratio_n"] < len(workloads) for a in allocs):
                print("* geomean over the workloads that did not fail")
            print()
        if ipp:
            print("Instructions per malloc+free pair (callgrind, (Ir(2N)-Ir(N))/N, N=%d):" % (n2 - n1))
            print()
            print(ipp_text(ipp, allocs))
            print()
        if failures:
            print("Failures:")
            for f in failures:
                print("  %s under %s: %s" % (f["workload"], f["alloc"], f["reason"]))
            print("  (stderr tails above; logs in %s)" % os.path.relpath(os.path.join(BUILD, "logs"), REPO))
            print()
        print("suite wall time: %s" % suite_time)

        def noisy_cells(wls):
            out = []
            for w in wls:
                cells = ["%s %.0f%%" % (a, 100 * summary[w.name][a]["spread"]) for a in allocs
                         if summary[w.name][a]["spread"] is not None and summary[w.name][a]["spread"] > 0.25]
                if cells:
                    out.append("%s (%s)" % (w.name, ", ".join(cells)))
            return out
        noisy, mb_noisy = noisy_cells(workloads), noisy_cells(mb_workloads)

        os.makedirs(BUILD, exist_ok=True)
        with open(os.path.join(BUILD, "last-results.json"), "w") as f:
            json.dump({"rounds": rounds, "threads": threads, "scale_factor": scale_factor, "quick": quick,
                       "allocators": {a: libs.get(a) for a in allocs}, "available": available,
                       "runs": {w: {a: [x.as_json() for x in rs] for a, rs in d.items()} for w, d in results.items()},
                       "instructions_per_pair": ipp, "mimalloc_bench": suite_dir, "suite_procs": suite_procs},
                      f, indent=1)

    if interrupted:
        return 130

    command = ("MIMALLOC_BENCH=%s " % suite_dir if suite_dir and not args.suite else "") + \
        "scripts/bench.sh" + ("".join(" " + a for a in argv) if argv else "") + \
        ("  (BENCH_QUICK=1)" if quick and not args.quick else "")
    prof_md = None
    if do_profiler:
        ipp_off = ipp.get("memx")  # the suite's profiling-off numbers, if it measured them
        if not ipp_off or not all(isinstance(v, float) for v in ipp_off.values()):
            ipp_off = None
        pctx = profile_overhead.run_section(
            sys.modules[__name__], args, quick, scale_factor, threads, timeout,
            do_callgrind and not args.callgrind_only,
            memx_lib=libs.get("memx") if "memx" in available else None, ipp_off=ipp_off)
        if pctx is None:
            return 130
        prof_md = profile_overhead.section_md(
            sys.modules[__name__], pctx, machine_info(),
            datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), git_commit(), command)
        elapsed = time.time() - t_start
        print("total wall time: %d min %02d s" % (elapsed // 60, elapsed % 60))

    if args.no_report:
        return 0
    if args.profiler_only:
        md_path = os.path.join(args.report_dir or REPO, "BENCHMARKS.md")
        md_sections.replace_in_file(md_path, profile_overhead.splice, prof_md)
        print("wrote the profiler-overhead section of %s" % os.path.relpath(md_path, REPO))
        return 0
    if not workloads and not mb_workloads:
        return 0
    report_dir = args.report_dir or (BUILD if subset else REPO)
    os.makedirs(report_dir, exist_ok=True)
    md_path = os.path.join(report_dir, "BENCHMARKS.md")
    svg_path = os.path.join(report_dir, "bench-ratios.svg")
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mb_md = None
    if mb_workloads:
        mb_md = mimalloc_bench.section_md({
            "machine": machine_info(), "date": date, "commit": git_commit(), "quick": quick,
            "alloc_notes": alloc_notes, "rounds": rounds, "command": command, "suite_procs": suite_procs,
            "suite_commit": mimalloc_bench.checkout_commit(suite_dir), "suite_skipped": suite_skipped,
            "suite_noisy": mb_noisy, "failures": failures}, summary, mb_workloads, allocs, gm_mb)
    if not workloads:  # --suite-only (or --only with the suite's programs): replace that section, keep the rest
        md_sections.replace_in_file(md_path, mimalloc_bench.splice, mb_md)
        print("wrote the mimalloc-bench section of %s" % os.path.relpath(md_path, REPO))
        return 0
    ctx = {
        "machine": machine_info(),
        "date": date,
        "commit": git_commit(),
        "profiler_md": prof_md,
        "mb_md": mb_md,
        "alloc_notes": alloc_notes,
        "rounds": rounds, "threads": threads, "scale_factor": scale_factor, "quick": quick,
        "suite_time": suite_time,
        "command": command,
        "md_table": md_table(summary, workloads, allocs, gm),
        "many_md": many_threads_md(summary, workloads, allocs),
        "gm_partial": any(gm[a]["tratio"] is not None and gm[a]["tratio_n"] < len(workloads) for a in allocs),
        "noisy": noisy,
        "failures": failures,
        "ipp": ipp, "ipp_md": ipp_md(ipp, allocs) if ipp else "", "ipp_n": (n1, n2), "ipp_skipped": ipp_skipped,
        "workloads": workloads,
        "svg": svg_plot(summary, workloads, allocs, gm, "  [quick run]" if quick else ""),
    }
    write_report(md_path, svg_path, ctx)
    print("wrote %s and %s" % (os.path.relpath(md_path, REPO), os.path.relpath(svg_path, REPO)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
