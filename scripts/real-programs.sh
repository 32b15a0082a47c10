#!/usr/bin/env bash
# Runs real programs with a malloc replacement preloaded and checks that they
# still work and still produce the same output.
#
#   scripts/real-programs.sh [LIB] [CHECK...]
#
# LIB    the library to LD_PRELOAD; default target/release/libmemx.so
#        (relative to the repository root). "" or "none" runs everything with
#        no preload (glibc), which is how the checks themselves are validated.
#        A relative LIB is taken relative to the current directory.
# CHECK  optional check names (as printed) to run only those.
#
# Environment: PYTHON, the interpreter to use (default: the real binary behind
# `python3`, resolved through sys.executable so that a pyenv shim script is
# not what gets the preload).
#
# Every check runs under `timeout` in its own process group. A preloaded
# program is started as `env LD_PRELOAD=LIB prog`, so whatever it starts
# (gcc's cc1/as/ld, tar's gzip, git's pack-objects, regrtest's workers) has
# the preload too. Reference results come from the same programs run with no
# preload, in the same check; a preloaded program must exit 0 (a crash at exit
# counts) and print the same output. Each check prints PASS/FAIL/SKIP and its
# time (full output in target/real-programs/NAME.log); SKIP is for a tool
# that is not installed. The last line is
# "N passed, N failed" (", N skipped" added when any were skipped); the exit
# status is non-zero if anything failed.
#
# Checks:
#   preload-active      LIB is mapped and malloc() & co. resolve into it
#   python-workload*    scripts/python-workload.py, single and --threads 4,
#                       with pymalloc and with PYTHONMALLOC=malloc; the
#                       checksum must equal the unpreloaded one
#   cpython-tests*      part of CPython's own test suite (-j2), with pymalloc
#                       and with PYTHONMALLOC=malloc
#   cpython-tests-profiled  the same with the heap profiler on (memx only):
#                       MEMX_PROFILE in a scratch directory, 4 KiB sampling,
#                       Python stacks on; every dump must parse
#   cpython-tests-guarded  the same with PYTHONMALLOC=malloc and guarded
#                       sampling at a high rate (MEMX_GUARD_SAMPLE=16K and
#                       MEMX_GUARD_RATE=0, no cap per second; memx
#                       only): any guarded-page fault would kill a test
#   python-heap-limit*  scripts/heap-limit.py under MEMX_HEAP_LIMIT=256M (memx
#                       only): MemoryError, caught, freed, and again; with
#                       pymalloc and with PYTHONMALLOC=malloc
#   gcc, g++            gcc -O2 / g++ -O2 of generated sources; the objects
#                       must be byte-identical to the unpreloaded compile and
#                       the programs (run preloaded) must print the same
#   sort, grep, awk     on a generated ~80 MB text file; same output
#   perl, sqlite3       hash/string/regex and SQL workloads; same output
#   tar                 tar czf / xzf round trip of a generated tree
#   find-sort           find /usr -xdev | sort
#   git                 fast-import, log -p, gc --aggressive, fsck, clone,
#                       archive, blame
# shellcheck disable=SC2016 # awk, perl and sh programs are in single quotes
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SELF")/.." && pwd)

# CPython tests, longest first (which helps -j2). The ones this interpreter
# does not have are left out (test_unicode became test_str in 3.12).
CPYTHON_TESTS=(
    test_ssl test_subprocess test_threading test_io test_fork1 test_capi
    test_tracemalloc test_os test_sys test_pickle test_set test_weakref
    test_bytes test_gc
    test_decimal test_marshal test_ctypes test_json test_unicode test_str
    test_itertools test_bz2 test_re test_long test_thread test_hashlib
    test_zlib test_codecs test_xml_etree_c test_lzma test_deque
    test_ordered_dict test_sqlite3 test_dict test_array test_tuple
    test_threading_local test_heapq test_collections test_memoryview
    test_struct test_list test_mmap test_sort
)
# Test methods that fail with no preload at all, for reasons of the machine
# rather than the allocator: test_import_from_another_thread fails when a
# site-packages .pth file imports threading.
CPYTHON_IGNORE=(test_import_from_another_thread)

# ---------------------------------------------------------------- helpers
# These run inside a check (a fresh `bash SELF --check FUNCTION`), with the
# RP_* variables exported by the runner at the bottom.

pre() { # run a command with the preload
    env LD_PRELOAD="$RP_LIB" "$@"
}

skip() {
    echo "SKIP: $*"
    exit 77
}

need() { # tool... : skip the check unless all are installed
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null 2>&1 || skip "$t not installed"
    done
}

same() { # label expected actual
    if [ "$2" != "$3" ]; then
        echo "MISMATCH in $1:"
        echo "  without preload: $2"
        echo "  with preload:    $3"
        return 1
    fi
    echo "ok: $1 ($3)"
}

sum_of() { # cmd... : md5 of its stdout; fails if it fails
    "$@" | md5sum | cut -d' ' -f1
}

both() { # label cmd... : run cmd without and with the preload; both must
    # exit 0 and print the same
    local label=$1 want got
    shift
    want=$(sum_of "$@") || { echo "FAILED (exit $?) without the preload: $label"; return 1; }
    got=$(sum_of pre "$@") || { echo "FAILED (exit $?) with the preload: $label"; return 1; }
    same "$label" "$want" "$got"
}

# ---------------------------------------------------------------- checks

check_preload_active() {
    [ -n "$RP_LIB" ] || skip "no library to preload"
    local maps
    maps=$(pre cat /proc/self/maps)
    if ! grep -qF "$RP_LIB" <<<"$maps"; then
        echo "$RP_LIB is not mapped into a preloaded cat; what is:"
        awk '{ print $6 }' <<<"$maps" | sort -u | grep .
        return 1
    fi
    echo "ok: mapped into cat"
    [ -n "$RP_PY" ] || return 0
    # The functions the dynamic linker hands out must live in LIB.
    pre "$RP_PY" - "$RP_LIB" <<'EOF'
import ctypes, os, sys
lib = os.path.realpath(sys.argv[1])
maps = []
with open("/proc/self/maps") as f:
    for line in f:
        p = line.split()
        lo, hi = (int(x, 16) for x in p[0].split("-"))
        maps.append((lo, hi, os.path.realpath(p[5]) if len(p) > 5 else "[anon]"))
for fn in ("malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc",
           "malloc_usable_size"):
    addr = ctypes.cast(getattr(ctypes.CDLL(None), fn), ctypes.c_void_p).value
    owner = next((path for lo, hi, path in maps if lo <= addr < hi), None)
    print("%s -> %s" % (fn, owner))
    if owner != lib:
        sys.exit("%s resolves to %s, not %s" % (fn, owner, lib))
EOF
}

python_workload() { # reference-line args...
    [ -n "$RP_PY" ] || skip "no python3"
    local want=$1 got
    shift
    [ -n "$want" ] || { echo "no reference checksum: the unpreloaded run failed"; return 1; }
    got=$(pre "$RP_PY" "$ROOT/scripts/python-workload.py" "$@" | tail -n 1)
    same "python-workload $* (PYTHONMALLOC=${PYTHONMALLOC:-})" "$want" "$got"
}
check_python_workload() { python_workload "$RP_REF_PY1" --quiet; }
check_python_workload_threads() { python_workload "$RP_REF_PY4" --quiet --threads 4; }
check_python_workload_malloc() { PYTHONMALLOC=malloc python_workload "$RP_REF_PY1" --quiet; }
check_python_workload_threads_malloc() {
    PYTHONMALLOC=malloc python_workload "$RP_REF_PY4" --quiet --threads 4
}

python_heap_limit() {
    [ -n "$RP_PY" ] || skip "no python3"
    [ "$(basename "${RP_LIB:-none}")" = libmemx.so ] || skip "MEMX_HEAP_LIMIT is memx's"
    local err="$RP_WORK/heap-limit.$$.err"
    MEMX_HEAP_LIMIT=256M pre "$RP_PY" "$ROOT/scripts/heap-limit.py" --limit $((256 << 20)) \
        2>"$err" || { cat "$err"; return 1; }
    cat "$err"
    [ "$(grep -c 'MEMX_HEAP_LIMIT reached' "$err")" = 1 ] ||
        { echo "expected exactly one 'MEMX_HEAP_LIMIT reached' line on stderr"; return 1; }
}
check_python_heap_limit() { python_heap_limit; }
check_python_heap_limit_malloc() { PYTHONMALLOC=malloc python_heap_limit; }

cpython_tests() {
    [ -n "$RP_PY" ] || skip "no python3"
    [ -n "$RP_PYTESTS" ] || skip "$RP_PY has no test suite (Debian: libpython3.N-testsuite)"
    local ignore=() t
    # shellcheck disable=SC2086 # CPYTHON_EXTRA_IGNORE is a list
    for t in "${CPYTHON_IGNORE[@]}" ${CPYTHON_EXTRA_IGNORE:-}; do ignore+=(-i "$t"); done
    mkdir -p "$RP_WORK/cpython-tests"
    cd "$RP_WORK/cpython-tests"
    # shellcheck disable=SC2086 # RP_PYTESTS is a list
    pre "$RP_PY" -m test -j2 --timeout="${CPYTHON_TIMEOUT:-240}" --slowest "${ignore[@]}" $RP_PYTESTS
}
check_cpython_tests() { cpython_tests; }
check_cpython_tests_malloc() { PYTHONMALLOC=malloc cpython_tests; }
check_cpython_tests_guarded() {
    [ "$(basename "${RP_LIB:-none}")" = libmemx.so ] || skip "guarded sampling is memx's"
    PYTHONMALLOC=malloc MEMX_GUARD_SAMPLE=16K MEMX_GUARD_RATE=0 cpython_tests
}
check_cpython_tests_profiled() {
    [ "$(basename "${RP_LIB:-none}")" = libmemx.so ] || skip "the profiler is memx's"
    local dir="$RP_WORK/cpython-profile"
    rm -rf "$dir" && mkdir -p "$dir"
    # No fork-warning test is left out: without a clock memx starts no
    # thread, so CPython 3.12+'s test_main_thread_after_fork (no fork()
    # warning, no output at all) passes with profiling on.
    # memx's PyMem hook replaces pymalloc as the object allocator, so
    # sys._debugmallocstats() prints no pymalloc statistics (as with
    # tracemalloc on): test_debugmallocstats looks for them.
    # Each test file's limit doubles too: test_subprocess starts hundreds of
    # interpreters, each sampled every 4 KiB from its first import (it took
    # 2.1x the CPU time of the run before the hook).
    CPYTHON_TIMEOUT=480 CPYTHON_EXTRA_IGNORE=test_debugmallocstats MEMX_PROFILE="$dir/p" \
        MEMX_PROFILE_SAMPLE=4K cpython_tests
    python3 - "$dir" "$ROOT/scripts" <<'PY'
import glob, sys
sys.path.insert(0, sys.argv[2])
import heap_dump
dumps = glob.glob(sys.argv[1] + "/*.heap")
py = hooked = 0
# Small objects whose first native frame is one of these functions come
# from pymalloc's pools: only memx's PyMem hook can sample them (without
# it, pymalloc's own _PyObject_Malloc is where malloc is called from).
POOL_CALLERS = {"PyUnicode_New", "_PyObject_GC_New", "_PyObject_GC_NewVar",
                "PyFloat_FromDouble", "_PyLong_New", "PyTuple_New", "_PyObject_New"}
sym = heap_dump.Symbolizer()
for path in dumps:
    d = heap_dump.Dump(path)
    py += bool(d.python)
    hooked += sum(s.allocs for s in d.stacks if s.allocs and s.alloc_bytes <= 512 * s.allocs
                  and sym.function(d, s.frames[0]) in POOL_CALLERS)
print(f"{len(dumps)} dumps parsed, {py} with Python frames, "
      f"{hooked} samples of pymalloc's objects (memx's PyMem hook)")
assert dumps and py, "no dumps, or none with Python frames"
assert hooked, "no sample of a pymalloc object: the PyMem hook was not installed"
PY
}

gen_c_source() { # functions -> C source on stdout
    awk -v n="$1" 'BEGIN {
        print "#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <stdint.h>"
        print "struct node { struct node *next; uint64_t v; char name[24]; };"
        for (i = 0; i < n; i++) {
            printf "static uint64_t f%d(uint64_t x) {\n", i
            printf "    uint64_t a[%d]; struct node *head = 0;\n", 8 + i % 24
            printf "    for (unsigned i = 0; i < sizeof a / sizeof a[0]; i++) a[i] = x * %du + i;\n", 2 * i + 1
            printf "    for (unsigned i = 0; i < %d; i++) {\n", 3 + i % 7
            printf "        struct node *p = malloc(sizeof *p); p->next = head; head = p;\n"
            printf "        p->v = a[i %% (sizeof a / sizeof a[0])] ^ (x >> %d);\n", i % 13
            printf "        snprintf(p->name, sizeof p->name, \"f%d-%%u\", i);\n", i
            printf "    }\n    uint64_t s = 0;\n"
            printf "    switch (x %% %d) {\n", 5 + i % 11
            for (c = 0; c < 5 + i % 11; c++)
                printf "    case %d: s += %d * x + %d; break;\n", c, c + i, (c * 7919 + i) % 1000
            printf "    }\n"
            printf "    while (head) { struct node *p = head; head = p->next;\n"
            printf "        s = s * 31 + p->v + strlen(p->name); free(p); }\n"
            printf "    return s;\n}\n"
        }
        print "int main(void) {\n    uint64_t s = 0;"
        for (i = 0; i < n; i++) printf "    s = s * 1000003u + f%d(s + %d);\n", i, i
        print "    printf(\"%llu\\n\", (unsigned long long)s);\n    return 0;\n}"
    }'
}

check_gcc() {
    need gcc cmp
    local d="$RP_WORK/gcc" want got
    mkdir -p "$d" && cd "$d"
    gen_c_source 600 >big.c
    echo "big.c: $(wc -l <big.c) lines"
    gcc -O2 -c big.c -o ref.o
    gcc ref.o -o ref
    pre gcc -O2 -c big.c -o big.o
    pre gcc big.o -o big
    cmp ref.o big.o || { echo "gcc -O2 made a different object under the preload"; return 1; }
    echo "ok: objects identical"
    want=$(./ref)
    got=$(pre ./big)
    same "program output" "$want" "$got"
}

check_gxx() {
    need g++ cmp
    local d="$RP_WORK/gxx" want got
    mkdir -p "$d" && cd "$d"
    cat >prog.cc <<'EOF'
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

template <int N> struct Gen {
    static std::string make(unsigned seed) {
        std::ostringstream o;
        o << "g" << N << "-" << seed % (N + 7);
        return o.str() + Gen<N - 1>::make(seed * 31 + N);
    }
};
template <> struct Gen<0> {
    static std::string make(unsigned) { return "!"; }
};

int main() {
    std::map<std::string, std::vector<int>> m;
    std::unordered_map<std::string, std::shared_ptr<std::string>> u;
    std::set<std::string> s;
    unsigned x = 12345;
    for (int i = 0; i < 200000; i++) {
        x = x * 1103515245u + 12345u;
        std::string k = "key" + std::to_string(x % 50000);
        m[k].push_back(i);
        u[k] = std::make_shared<std::string>(k + std::string(x % 200, 'z'));
        if (i % 7 == 0) s.insert(Gen<12>::make(x % 97));
    }
    std::regex re("key([0-9]+)");
    unsigned long total = 0;
    for (auto &kv : m) {
        std::smatch mt;
        if (std::regex_match(kv.first, mt, re)) total += std::stoul(mt[1]) * kv.second.size();
    }
    std::vector<std::string> all(s.begin(), s.end());
    std::sort(all.rbegin(), all.rend());
    std::printf("%zu %zu %zu %lu %s\n", m.size(), u.size(), s.size(), total, all.front().c_str());
    return 0;
}
EOF
    g++ -O2 -std=c++17 -c prog.cc -o ref.o
    g++ ref.o -o ref
    pre g++ -O2 -std=c++17 -c prog.cc -o prog.o
    pre g++ prog.o -o prog
    cmp ref.o prog.o || { echo "g++ -O2 made a different object under the preload"; return 1; }
    echo "ok: objects identical"
    want=$(./ref)
    got=$(pre ./prog)
    same "program output" "$want" "$got"
}

check_sort() {
    need sort md5sum
    local f="$RP_DATA" tmp="$RP_WORK/sort-tmp" mode
    mkdir -p "$tmp"
    for mode in LC_ALL=C LC_ALL=C.UTF-8; do
        both "$mode sort" env "$mode" sort "$f"
    done
    # Numeric sort on a field, in threads; then unique with a small buffer,
    # so that it spills to temporary files and merges them.
    both "sort -k3,3n -k1,1 --parallel=2" env LC_ALL=C sort -k3,3n -k1,1 --parallel=2 "$f"
    both "sort -u -k2,2 -S 8M" env LC_ALL=C sort -u -k2,2 -S 8M -T "$tmp" "$f"
}

check_grep() {
    need grep md5sum
    local f="$RP_DATA" pats="$RP_WORK/grep-patterns" args
    # 3000 fixed strings: a big Aho-Corasick / kwset automaton.
    awk 'NR % 397 == 0 { print (NR % 2 ? $2 " " $3 : substr($4, 2, 9)) }' "$f" |
        head -n 3000 >"$pats"
    local cases=(
        "-c word1[0-9]7"
        "-c -E ([a-z])\\1[a-z]*q[a-z]"
        "-i -w -e WORD123 -e word4567 -e 999"
        "-o -E [a-z]{3}q[a-z]{2}"
        "-v -E [aeiou]{2}"
        "-F -f $pats"
    )
    if grep -P x <<<x >/dev/null 2>&1; then
        cases+=("-P (?<=word)(\\d+)(?=\\s\\d+\\s[a-z]+z\\b)")
    fi
    for args in "${cases[@]}"; do
        # shellcheck disable=SC2086 # args is a list
        both "grep $args" env LC_ALL=C grep $args "$f"
    done
    # A multibyte locale takes grep's slower, allocation-heavier paths.
    both "grep -i -c (C.UTF-8)" env LC_ALL=C.UTF-8 grep -i -c 'wOrD1.*Q' "$f"
}

check_awk() {
    local f="$RP_DATA" a prog seen=""
    # Big associative arrays (~50000 distinct words, ~1.2M distinct ids),
    # string concatenation, split().
    prog='{ c[$2]++; s[$2] += $3; id[$1] = $4; if (length(t[$2]) < 400) t[$2] = t[$2] substr($4, 1, 4) }
          NR % 50 == 0 { n = split($4, parts, /[aeiou]/); np += n }
          END { for (k in c) print k, c[k], s[k], t[k]; m = 0; for (k in id) m++; print "ids", m, np }'
    for a in mawk gawk awk; do
        command -v "$a" >/dev/null 2>&1 || continue
        a=$(readlink -f "$(command -v "$a")")
        case " $seen " in *" $a "*) continue ;; esac
        seen="$seen $a"
        both "$a" bash -o pipefail -c '"$0" "$1" "$2" | LC_ALL=C sort' "$a" "$prog" "$f"
    done
    [ -n "$seen" ] || skip "no awk installed"
}

check_perl() {
    need perl md5sum
    local prog='
        srand(7);
        my (%h, @l, $text);
        for my $i (1 .. 300000) {
            my $k = join "", map { chr(97 + int(rand 26)) } 1 .. (1 + int(rand 10));
            $h{$k} .= "$i,";
            push @l, [$k, $i * 3 % 1001] if $i % 3 == 0;
            $text .= "$k=$i;" if $i % 5 == 0;
        }
        delete $h{$_} for grep { length($_) < 4 } keys %h;
        my @s = sort { $a->[1] <=> $b->[1] or $a->[0] cmp $b->[0] } @l;
        my $n = () = $text =~ /([a-z]{3})=(\d+7);/g;
        (my $t2 = $text) =~ s/([a-z]+)=(\d+)/$2:$1/g;
        my %inv; push @{$inv{length $h{$_}}}, $_ for keys %h;
        print scalar(keys %h), " $n ", length($t2), " $s[0][0] $s[-1][0]\n";
        print "$_ ", scalar(@{$inv{$_}}), "\n" for sort { $a <=> $b } keys %inv;
        print join("\n", map { "$_ $h{$_}" } sort keys %h), "\n";'
    both "perl" perl -e "$prog"
}

check_sqlite3() {
    need sqlite3 md5sum
    local d="$RP_WORK/sqlite" sql want got
    mkdir -p "$d"
    sql="
        PRAGMA cache_size = -65536;
        CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v INTEGER, blob TEXT);
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000)
          INSERT INTO t SELECT x, 'k' || (x * 7919 % 50000), x * 31 % 1000,
                               printf('%.*c', x % 300, 'z') FROM c;
        CREATE INDEX t_k ON t(k);
        CREATE INDEX t_v ON t(v, k);
        SELECT count(*), sum(v), sum(length(blob)) FROM t;
        SELECT k, count(*), sum(v), group_concat(id) FROM t GROUP BY k ORDER BY k LIMIT 2000;
        SELECT v, count(DISTINCT k), max(blob) < 'zz' FROM t GROUP BY v ORDER BY 2 DESC, 1;
        UPDATE t SET blob = upper(blob) || k WHERE id % 3 = 0;
        DELETE FROM t WHERE v < 200;
        SELECT count(*), sum(length(blob)), min(k), max(k) FROM t;
        SELECT a.k, b.id FROM t a JOIN t b ON a.k = b.k AND a.id < b.id
          WHERE a.v = 777 ORDER BY a.k, b.id LIMIT 5000;"
    both "sqlite3 :memory:" sqlite3 :memory: "$sql"
    # On disk (plus VACUUM): both runs start from no file.
    rm -f "$d/test.db"
    want=$(sum_of sqlite3 "$d/test.db" "$sql VACUUM; PRAGMA integrity_check;")
    rm -f "$d/test.db"
    got=$(sum_of pre sqlite3 "$d/test.db" "$sql VACUUM; PRAGMA integrity_check;")
    same "sqlite3 file" "$want" "$got"
}

check_tar() {
    need tar gzip diff md5sum
    local d="$RP_WORK/tar"
    rm -rf "$d" && mkdir -p "$d/src" "$d/out"
    cd "$d"
    # A tree: the repository's sources, 2000 small generated files in nested
    # directories, and a 20 MB slice of the data file.
    tar -C "$ROOT" --exclude=./target --exclude=./.git -cf - . | tar -C src -xf -
    awk -v dir="$d/src/gen" 'BEGIN {
        for (i = 0; i < 2000; i++) {
            sub_ = sprintf("%s/d%02d/e%d", dir, i % 40, i % 7)
            if (!(sub_ in made)) { system("mkdir -p " sub_); made[sub_] = 1 }
            f = sprintf("%s/file%04d.txt", sub_, i)
            for (j = 0; j < i % 50; j++) print "line", j, "of file", i > f
            print "end" > f
            close(f)
        }
    }'
    head -c 20000000 "$RP_DATA" >src/data.txt
    echo "tree: $(find src -type f | wc -l) files, $(du -sk src | cut -f1) KiB"
    pre tar -czf pre.tgz -C src .
    pre tar -xzf pre.tgz -C out
    diff -r src out
    echo "ok: czf / xzf round trip"
    both "tar --sort=name -cf" tar --sort=name --mtime=@0 --owner=0 --group=0 -cf - -C src .
    both "tar -tzvf" tar -tzvf pre.tgz
}

check_find_sort() {
    need find sort md5sum
    # find exits 1 when some directory is unreadable (not root): allowed.
    # shellcheck disable=SC2016 # for the inner shell
    both "find /usr -xdev | sort" bash -o pipefail -c \
        '{ find /usr -xdev -printf "%p\t%s\t%y\t%m\n" 2>/dev/null || [ $? -eq 1 ]; } | LC_ALL=C sort'
}

gen_fast_import() { # commits -> a fast-import stream, fixed dates
    awk -v n="$1" 'BEGIN {
        srand(99)
        for (c = 1; c <= n; c++) {
            msg = sprintf("commit %d\n\nChange %d files.\n", c, 1 + c % 9)
            printf "commit refs/heads/main\nmark :%d\n", c
            printf "author A U Thor <a@example.com> %d +0000\n", 1700000000 + c * 60
            printf "committer C O Mitter <c@example.com> %d +0000\n", 1700000000 + c * 60
            printf "data %d\n%s\n", length(msg), msg
            if (c > 1) printf "from :%d\n", c - 1
            for (k = 0; k <= c % 9; k++) {
                f = int(rand() * 150)
                body = ""
                lines = 20 + int(rand() * 200)
                for (l = 0; l < lines; l++)
                    body = body sprintf("file %d line %d rev %d value %d\n", f, l,
                                        (l % 5 == 0) ? c : 0, int(rand() * 1000))
                printf "M 100644 inline dir%d/file%d.txt\ndata %d\n%s\n", f % 10, f, length(body), body
            }
        }
    }'
}

check_git() {
    need git md5sum
    local d="$RP_WORK/git" want got log file
    rm -rf "$d" && mkdir -p "$d/home"
    cd "$d"
    export HOME="$d/home" GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
    gen_fast_import 400 >stream
    git init -q ref
    git init -q pre
    git -C ref fast-import --quiet <stream
    pre git -C pre fast-import --quiet <stream
    git -C ref symbolic-ref HEAD refs/heads/main
    git -C pre symbolic-ref HEAD refs/heads/main
    want=$(git -C ref rev-parse HEAD)
    got=$(pre git -C pre rev-parse HEAD)
    same "HEAD after fast-import" "$want" "$got"
    log=$(sum_of git -C ref log -p --stat)
    got=$(sum_of pre git -C pre log -p --stat)
    same "git log -p --stat" "$log" "$got"
    pre git -C pre gc --aggressive --quiet
    pre git -C pre fsck --strict --no-progress --no-dangling
    echo "ok: gc --aggressive, fsck --strict"
    got=$(sum_of pre git -C pre log -p --stat)
    same "git log -p --stat after gc" "$log" "$got"
    pre git clone -q --no-local pre clone
    got=$(git -C clone rev-parse HEAD)
    same "clone HEAD" "$want" "$got"
    want=$(sum_of git -C ref archive HEAD)
    got=$(sum_of pre git -C clone archive HEAD)
    same "git archive" "$want" "$got"
    file=$(git -C ref ls-tree -r --name-only HEAD | sed -n 1p)
    want=$(sum_of git -C ref blame HEAD -- "$file")
    got=$(sum_of pre git -C clone blame HEAD -- "$file")
    same "git blame $file" "$want" "$got"
}

# A check runs here, in a child of the runner below.
if [ "${1:-}" = --check ]; then
    shift
    set -E
    trap 'echo "command failed (exit $?): $BASH_COMMAND" >&2' ERR
    "$@"
    exit $?
fi

# ---------------------------------------------------------------- runner

# shellcheck source=scripts/lib.sh
. "$ROOT/scripts/lib.sh"
LIB=$(memx_lib real-programs "$@") || exit 2
if [ $# -ge 1 ]; then shift; fi
if [ -n "$LIB" ]; then LIB=$(readlink -f "$LIB"); fi
ONLY=("$@")
CHECKS=" preload-active python-workload python-workload-threads python-workload-malloc
    python-workload-threads-malloc python-heap-limit python-heap-limit-malloc cpython-tests
    cpython-tests-malloc cpython-tests-profiled cpython-tests-guarded gcc g++ sort grep awk
    perl sqlite3 tar find-sort git "
for o in ${ONLY[@]+"${ONLY[@]}"}; do
    case "$CHECKS" in
        *[[:space:]]"$o"[[:space:]]*) ;;
        *)
            echo "real-programs: no check named '$o'; the checks:" "$(tr -s '[:space:]' ' ' <<<"$CHECKS")" >&2
            exit 2
            ;;
    esac
done
unset LD_PRELOAD
ulimit -c 0 || true
START=$(date +%s)

selected() { # name... : true if any of them is to run
    local o n
    [ ${#ONLY[@]} -eq 0 ] && return 0
    for n in "$@"; do
        for o in "${ONLY[@]}"; do [ "$o" = "$n" ] && return 0; done
    done
    return 1
}

elapsed() { # start -> seconds since, one decimal
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/real-programs.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# Full logs of the last run, one per check, are kept here.
LOGS="$ROOT/target/real-programs"
rm -rf "$LOGS"
mkdir -p "$LOGS"

# Python: the real interpreter binary, not a shim script.
PY=${PYTHON:-}
if [ -z "$PY" ] && command -v python3 >/dev/null 2>&1; then
    PY=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || true)
fi
if [ -n "$PY" ] && [ ! -x "$PY" ]; then
    PY=""
fi

# Setup, with no preload: reference checksums, the test list, the data file.
t0=$(date +%s.%N)
REF_PY1="" REF_PY4="" PYTESTS=""
if [ -n "$PY" ] && selected python-workload python-workload-malloc; then
    REF_PY1=$(timeout 300 "$PY" "$ROOT/scripts/python-workload.py" --quiet | tail -n 1) || REF_PY1=""
fi
if [ -n "$PY" ] && selected python-workload-threads python-workload-threads-malloc; then
    REF_PY4=$(timeout 300 "$PY" "$ROOT/scripts/python-workload.py" --quiet --threads 4 |
        tail -n 1) || REF_PY4=""
fi
if [ -n "$PY" ] && "$PY" -c 'import test.libregrtest' 2>/dev/null; then
    PYTESTS=$("$PY" - "${CPYTHON_TESTS[@]}" <<'EOF'
import importlib.util, sys
print(" ".join(t for t in sys.argv[1:] if importlib.util.find_spec("test." + t)))
EOF
)
fi
DATA="$WORK/data.txt"
if selected sort grep awk tar; then
    # ~84 MB, 1.1M lines of "id word number letters".
    LC_ALL=C awk -v n=1100000 'BEGIN {
        srand(12345)
        for (i = 0; i < 4000; i++) pool = pool sprintf("%c", 97 + int(rand() * 26))
        pool = pool pool
        for (i = 0; i < n; i++) {
            w = int(rand() * rand() * 50000)
            printf "%07d word%d %d %s\n", int(rand() * 9999999), w, int(rand() * 100000),
                   substr(pool, 1 + int(rand() * 4000), 1 + int(rand() * 110))
        }
    }' >"$DATA"
fi
echo "# lib: ${LIB:-none (glibc)}; python: ${PY:-none}"
if [ -f "$DATA" ]; then
    echo "# setup (reference runs, $(($(stat -c %s "$DATA") >> 20)) MB data file): $(elapsed "$t0")s"
else
    echo "# setup (reference runs): $(elapsed "$t0")s"
fi

export RP_LIB="$LIB" RP_PY="$PY" RP_WORK="$WORK" RP_DATA="$DATA" RP_REF_PY1="$REF_PY1" \
    RP_REF_PY4="$REF_PY4" RP_PYTESTS="$PYTESTS" ROOT

passed=0
failed=0
skipped=0

run_check() { # name timeout-seconds function
    local name=$1 limit=$2 fn=$3 log="$LOGS/$1.log" t rc secs reason=""
    selected "$name" || return 0
    t=$(date +%s.%N)
    set +e
    # The outer 2>/dev/null only hides bash's own job reports.
    { timeout -k 10 "$limit" bash "$SELF" --check "$fn" </dev/null >"$log" 2>&1; } 2>/dev/null
    rc=$?
    set -e
    secs=$(elapsed "$t")
    if [ $rc -eq 77 ]; then
        echo "SKIP $name ($(sed -n 's/^SKIP: //p' "$log" | tail -n 1))"
        skipped=$((skipped + 1))
        return 0
    fi
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
        reason="timeout after $limit s"
    elif [ $rc -gt 128 ]; then
        reason="signal $(kill -l $((rc - 128)) 2>/dev/null || echo $((rc - 128)))"
    elif [ $rc -ne 0 ]; then
        reason="exit $rc"
    elif [ -n "$LIB" ] && grep -q "ld.so: object .* cannot be preloaded" "$log"; then
        reason="the library could not be preloaded"
    fi
    if [ -z "$reason" ]; then
        echo "PASS $name (${secs}s)"
        passed=$((passed + 1))
    else
        echo "FAIL $name ($reason, ${secs}s)"
        echo "    --- output tail ($log):"
        tail -n 40 "$log" | sed 's/^/    /'
        failed=$((failed + 1))
    fi
}

run_check preload-active 60 check_preload_active
run_check python-workload 180 check_python_workload
run_check python-workload-threads 180 check_python_workload_threads
run_check python-workload-malloc 180 check_python_workload_malloc
run_check python-workload-threads-malloc 180 check_python_workload_threads_malloc
run_check python-heap-limit 120 check_python_heap_limit
run_check python-heap-limit-malloc 120 check_python_heap_limit_malloc
run_check cpython-tests 360 check_cpython_tests
run_check cpython-tests-malloc 360 check_cpython_tests_malloc
# At 4 KiB sampling every ~4 KiB of pymalloc's objects is a sample too
# (memx's PyMem hook), each on a page of its own: test_json + test_unicode
# took 1.7x the CPU time and 1.8x the memory of the same run before the
# hook (3.11), hence the longer limit.
run_check cpython-tests-profiled 900 check_cpython_tests_profiled
run_check cpython-tests-guarded 480 check_cpython_tests_guarded
run_check gcc 300 check_gcc
run_check g++ 300 check_gxx
run_check sort 300 check_sort
run_check grep 180 check_grep
run_check awk 180 check_awk
run_check perl 120 check_perl
run_check sqlite3 180 check_sqlite3
run_check tar 180 check_tar
run_check find-sort 180 check_find_sort
run_check git 300 check_git

echo "# lib: ${LIB:-none (glibc)}; $(($(date +%s) - START)) s in all"
if [ $skipped -gt 0 ]; then
    echo "$passed passed, $failed failed, $skipped skipped"
else
    echo "$passed passed, $failed failed"
fi
[ $failed -eq 0 ]
