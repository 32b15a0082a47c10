#!/usr/bin/env bash
# memx benchmark suite. Compares glibc, jemalloc, mimalloc, tcmalloc and memx
# (target/release/libmemx.so, via LD_PRELOAD) on allocation-heavy workloads,
# prints a table and writes BENCHMARKS.md + bench-ratios.svg in the repo root.
# Then the heap profiler's overhead: memx with MEMX_PROFILE vs without, beside
# gperftools' HEAPPROFILE and heaptrack (scripts/bench/profile_overhead.py).
#
#   scripts/bench.sh                          # full suite (3 interleaved rounds)
#   BENCH_QUICK=1 scripts/bench.sh            # smoke test (1 round, small scales)
#   scripts/bench.sh --only churn,larson --allocs glibc,memx
#   scripts/bench.sh --profiler-only          # only the profiler overhead section
#   MIMALLOC_BENCH=/path/to/mimalloc-bench/out/bench scripts/bench.sh
#                                             # the field's suite first (mimalloc_bench.py)
#   MIMALLOC_BENCH=... scripts/bench.sh --suite-only [--only larsonN]
#   scripts/bench.sh --help                   # all options
#
# Environment: BENCH_ROUNDS, BENCH_THREADS, BENCH_QUICK, BENCH_SCALE,
# BENCH_TIMEOUT, BENCH_NO_CALLGRIND, BENCH_PROFILER_ROUNDS, BENCH_NO_PROFILER,
# MIMALLOC_BENCH.
# The driver is scripts/bench/bench.py.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

no_install=0
for arg in "$@"; do
    case "$arg" in
        --no-install) no_install=1 ;;
        -h|--help|--list) no_install=1 ;;
    esac
done

LIBDIR=/usr/lib/x86_64-linux-gnu
missing_pkgs() {
    local pkgs=()
    [ -e "$LIBDIR/libjemalloc.so.2" ] || pkgs+=(libjemalloc2)
    compgen -G "$LIBDIR/libmimalloc.so*" >/dev/null || pkgs+=(libmimalloc2.0)
    [ -e "$LIBDIR/libtcmalloc_minimal.so.4" ] || pkgs+=(libtcmalloc-minimal4)
    # the profiler overhead section: gperftools' HEAPPROFILE and heaptrack
    [ -e "$LIBDIR/libtcmalloc.so.4" ] || pkgs+=(libgoogle-perftools4)
    command -v heaptrack >/dev/null 2>&1 || pkgs+=(heaptrack)
    command -v valgrind >/dev/null 2>&1 || pkgs+=(valgrind)
    [ -x /usr/bin/time ] || pkgs+=(time)
    command -v gcc >/dev/null 2>&1 || pkgs+=(gcc libc6-dev)
    echo "${pkgs[@]:-}"
}

if [ "$no_install" = 0 ]; then
    pkgs="$(missing_pkgs)"
    if [ -n "$pkgs" ]; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "bench: installing $pkgs ..." >&2
            log="$(mktemp)"
            # shellcheck disable=SC2086
            if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs; } >"$log" 2>&1; then
                tail -n 20 "$log" >&2
                echo "bench: apt-get install failed; continuing with what is there" >&2
            fi
            rm -f "$log"
        else
            echo "bench: missing $pkgs (not root, not installing); those columns will show n/a" >&2
        fi
    fi
fi

# python3 may be a pyenv shim (a shell script): resolve the real interpreter so
# that LD_PRELOAD applies to Python itself in the Python workloads.
PY="$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || true)"
if [ -z "$PY" ] || [ ! -x "$PY" ]; then
    PY="$(command -v python3)"
fi
exec "$PY" "$ROOT/scripts/bench/bench.py" "$@"
