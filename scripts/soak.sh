#!/usr/bin/env bash
# The long tests, for `make soak` (not in `make test`, which runs the same
# programs for a few seconds as cdylib tests).
#
#   scripts/soak.sh [LIB] [SECONDS]
#
# LIB      the library to LD_PRELOAD; default target/release/libmemx.so
#          (relative to the repository root); "" or "none" = glibc.
# SECONDS  how long the soak runs (default 300, or $SOAK_SECONDS).
#
# Runs, with LIB preloaded:
#   1. cdylib-tests/soak.c for SECONDS: threads with random sizes and
#      alignments, cross-thread frees and realloc, contents verified before
#      every free, thread storms and fork storms, RSS sampled every 50 ms
#      and required to stay bounded (see the program's header). The RSS
#      samples go to target/soak/rss.txt ("seconds bytes").
#   2. cdylib-tests/fuzz_model.c for SECONDS / 5 (at least 10 s) with a
#      fresh seed: the randomised model test of the whole API.
# Each prints its figures (operations, forks, peak RSS, the seed). The exit
# status is non-zero if either failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
LIB=$(memx_lib soak "$@") || exit 2
SECONDS_WANTED=${2:-${SOAK_SECONDS:-300}}
OUT="$ROOT/target/soak"
mkdir -p "$OUT"
ulimit -c 0 || true

CFLAGS=(-std=gnu11 -O1 -g -pthread -Wall -Werror -I"$ROOT/cdylib-tests")
for t in soak fuzz_model; do
    gcc "${CFLAGS[@]}" "$ROOT/cdylib-tests/$t.c" -o "$OUT/$t" -ldl
done

fuzz_secs=$(awk -v s="$SECONDS_WANTED" 'BEGIN { f = s / 5; if (f < 10) f = 10; print f }')
echo "# soak: lib ${LIB:-none (glibc)}; soak ${SECONDS_WANTED} s, fuzz ${fuzz_secs} s"

failed=0
run() { # name limit-seconds env... -- program
    local name=$1 limit=$2 rc
    shift 2
    local t0
    t0=$(date +%s)
    set +e
    timeout -k 10 "$limit" env LD_PRELOAD="$LIB" MEMX_TEST_LIB="$(basename "${LIB:-}")" "$@" \
        </dev/null 2>&1 | tee "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    if [ "$rc" -eq 0 ]; then
        echo "PASS $name ($(($(date +%s) - t0)) s)"
    else
        echo "FAIL $name (exit $rc; log in $OUT/$name.log)"
        failed=$((failed + 1))
    fi
}

limit=$(awk -v s="$SECONDS_WANTED" 'BEGIN { print int(s * 1.5 + 120) }')
run soak "$limit" SOAK_SECONDS="$SECONDS_WANTED" SOAK_TRACE="$OUT/rss.txt" "$OUT/soak"
limit=$(awk -v s="$fuzz_secs" 'BEGIN { print int(s * 2 + 60) }')
run fuzz_model "$limit" FUZZ_SECONDS="$fuzz_secs" "$OUT/fuzz_model"

[ "$failed" -eq 0 ]
