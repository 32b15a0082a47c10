#!/usr/bin/env bash
# Builds and runs the C/C++ tests in cdylib-tests/ against a preloaded malloc.
#
#   scripts/cdylib-tests.sh [LIB] [TEST...]
#
# LIB   the library to LD_PRELOAD; default target/release/libmemx.so (relative
#       to the repository root). "" or "none" runs with no preload (glibc),
#       which is how the tests themselves are validated. A relative LIB is
#       taken relative to the current directory.
# TEST  optional test names (file name without extension) to run only those.
#
# Every cdylib-tests/*.c is built with gcc -std=gnu11 and every *.cc with
# g++ -std=c++17 (both -O1 -g -pthread -Wall -Werror) into target/cdylib-tests/,
# and cdylib-tests/lib/*.c into shared objects there. Each test runs under
# `timeout 120` with LD_PRELOAD=LIB and prints PASS/FAIL/SKIP; the last line is
# "N passed, N failed" (", N skipped" added when any were skipped). The exit
# status is non-zero if anything failed.
#
# memx_*.{c,cc} test memx-specific behaviour and are skipped unless LIB's
# basename is libmemx.so.
#
# Directives, in the leading comment of a test source (first 40 lines):
#   // ENV: NAME=value [NAME=value...]   extra environment for the test
#   // EXPECT: exit N | abort | signal NAME   (default: exit 0)
#   // EXPECT-STDERR: text                 must appear in stderr (repeatable)
# Tests also get MEMX_TEST_LIB (basename of LIB, "" for none) and
# CDYLIB_TESTS_BIN (the build directory) in their environment.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC="$ROOT/cdylib-tests"
BIN="$ROOT/target/cdylib-tests"

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
LIB=$(memx_lib cdylib-tests "$@") || exit 2
if [ $# -ge 1 ]; then shift; fi
LIBNAME=""
if [ -n "$LIB" ]; then
    LIBNAME=$(basename "$LIB")
fi
ONLY=("$@")

mkdir -p "$BIN"
CFLAGS=(-O1 -g -pthread -Wall -Werror)
START=$(date +%s)
ulimit -c 0 || true

# ---------------------------------------------------------------- build
# Rebuild a target when its source, a shared header (cdylib-tests/*.h) or
# this script is newer. Builds run in
# parallel (one job per CPU); results are collected afterwards.
declare -A BUILD_LOG=()
JOBS=$(nproc 2>/dev/null || echo 2)
running=0

needs_build() { # out src
    [ ! -e "$1" ] || [ "$2" -nt "$1" ] || [ "${BASH_SOURCE[0]}" -nt "$1" ] && return 0
    local h
    for h in "$SRC"/*.h; do
        [ "$h" -nt "$1" ] && return 0
    done
    return 1
}

start_build() { # name out cmd...
    local name=$1 out=$2
    shift 2
    local log="$BIN/$name.build.log"
    BUILD_LOG[$name]=$log
    (
        if "$@" -o "$out.tmp" >"$log" 2>&1; then
            mv -f "$out.tmp" "$out"
        else
            rm -f "$out" "$out.tmp"
            exit 1
        fi
    ) &
    running=$((running + 1))
    if [ "$running" -ge "$JOBS" ]; then
        wait -n || true
        running=$((running - 1))
    fi
}

shopt -s nullglob
for src in "$SRC"/lib/*.c; do
    name=$(basename "$src" .c)
    out="$BIN/lib$name.so"
    if needs_build "$out" "$src"; then
        start_build "lib$name" "$out" gcc -std=gnu11 "${CFLAGS[@]}" -shared -fPIC -I"$SRC" "$src"
    fi
done

# Everything is built (some tests run other test programs), only the
# selected tests are run.
TESTS=()
for src in "$SRC"/*.c "$SRC"/*.cc; do
    file=$(basename "$src")
    name=${file%.*}
    keep=1
    if [ ${#ONLY[@]} -gt 0 ]; then
        keep=0
        for o in "${ONLY[@]}"; do [ "$o" = "$name" ] && keep=1; done
    fi
    [ $keep = 0 ] || TESTS+=("$src")
    out="$BIN/$name"
    if needs_build "$out" "$src"; then
        case "$file" in
            *.cc) start_build "$name" "$out" g++ -std=c++17 "${CFLAGS[@]}" -I"$SRC" "$src" -ldl ;;
            *) start_build "$name" "$out" gcc -std=gnu11 "${CFLAGS[@]}" -I"$SRC" "$src" -ldl ;;
        esac
    fi
done
wait || true

for o in ${ONLY[@]+"${ONLY[@]}"}; do
    if [ ! -e "$SRC/$o.c" ] && [ ! -e "$SRC/$o.cc" ]; then
        echo "cdylib-tests: no test named $o" >&2
        exit 2
    fi
done
if [ ${#TESTS[@]} -eq 0 ]; then
    echo "cdylib-tests: no tests selected" >&2
    exit 2
fi

# A helper library that failed to build fails the suite on its own line.
passed=0
failed=0
skipped=0
for src in "$SRC"/lib/*.c; do
    name=lib$(basename "$src" .c)
    if [ ! -e "$BIN/$name.so" ]; then
        echo "FAIL $name (build failed)"
        tail -n 30 "${BUILD_LOG[$name]:-/dev/null}" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
done

# ---------------------------------------------------------------- run
directive() { # src key -> values, one per line
    head -n 40 "$1" | sed -n "s|^[[:space:]]*//[[:space:]]*$2:[[:space:]]*||p" | sed 's/[[:space:]]*$//'
}

signame() { # number -> name
    kill -l "$1" 2>/dev/null || echo "$1"
}

for src in "${TESTS[@]}"; do
    file=$(basename "$src")
    name=${file%.*}
    exe="$BIN/$name"

    if [[ $name == memx_* ]] && [ "$LIBNAME" != libmemx.so ]; then
        echo "SKIP $name"
        skipped=$((skipped + 1))
        continue
    fi
    if [ ! -x "$exe" ]; then
        echo "FAIL $name (build failed)"
        tail -n 30 "${BUILD_LOG[$name]:-/dev/null}" | sed 's/^/    /'
        failed=$((failed + 1))
        continue
    fi

    envs=()
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        read -r -a words <<<"$line"
        envs+=("${words[@]}")
    done < <(directive "$src" ENV)
    expect=$(directive "$src" EXPECT | head -n 1)
    [ -n "$expect" ] || expect="exit 0"
    mapfile -t want_stderr < <(directive "$src" EXPECT-STDERR)

    out="$BIN/$name.stdout"
    err="$BIN/$name.stderr"
    t0=$(date +%s.%N)
    set +e
    # The outer 2>/dev/null only hides bash's own "Segmentation fault ..."
    # job report; the test's stderr goes to $err.
    { (cd "$BIN" && exec timeout -k 5 120 env LD_PRELOAD="$LIB" MEMX_TEST_LIB="$LIBNAME" \
        CDYLIB_TESTS_BIN="$BIN" ${envs[@]+"${envs[@]}"} "$exe") </dev/null >"$out" 2>"$err"; } 2>/dev/null
    rc=$?
    set -e
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

    # Describe how it ended. timeout(1) re-raises the child's fatal signal,
    # so a signal death shows up as 128+N here.
    if [ $rc -eq 124 ]; then
        how="timeout after 120 s"
    elif [ $rc -gt 128 ]; then
        how="signal $(signame $((rc - 128)))"
    else
        how="exit $rc"
    fi
    case "$expect" in
        abort) want="signal ABRT" ;;
        signal\ *)
            sig=${expect#signal }
            sig=${sig#SIG}
            case "$sig" in [0-9]*) sig=$(signame "$sig") ;; esac
            want="signal $sig" ;;
        exit\ *) want=$expect ;;
        *) want="(bad EXPECT directive: $expect)" ;;
    esac

    reason=""
    if [ "$how" != "$want" ]; then
        reason="$how, expected $want"
    else
        for s in ${want_stderr[@]+"${want_stderr[@]}"}; do
            if ! grep -qF -- "$s" "$err"; then
                reason="stderr lacks '$s'"
                break
            fi
        done
    fi

    if [ -z "$reason" ]; then
        echo "PASS $name (${secs}s)"
        passed=$((passed + 1))
    else
        echo "FAIL $name ($reason, ${secs}s)"
        echo "    --- stderr tail ($err):"
        tail -n 25 "$err" | sed 's/^/    /'
        if [ -s "$out" ]; then
            echo "    --- stdout tail:"
            tail -n 10 "$out" | sed 's/^/    /'
        fi
        failed=$((failed + 1))
    fi
done

echo "# lib: ${LIB:-none (glibc)}; $(($(date +%s) - START)) s in all"
if [ $skipped -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ $failed -eq 0 ]
