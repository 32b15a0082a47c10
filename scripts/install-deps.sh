#!/usr/bin/env bash
# Installs what `make test` (and `make bench`) needs on a Debian machine and
# is missing. Idempotent: with everything present it installs nothing, does
# not touch the network and prints nothing. Prints one line per thing it
# installs.
#
#   apt: gcc g++ make valgrind time (/usr/bin/time) binutils (nm)
#        python3 (only if there is no python3 at all), python3-venv (if
#        python3 cannot make venvs: make wheel, scripts/wheel-tests.py)
#        libjemalloc2 libmimalloc2.0 libtcmalloc-minimal4 google-perftools
#        libgoogle-perftools4 heaptrack (only `make bench` uses them: its
#        profiler overhead section; no test needs them)
#        sqlite3 (the CLI, for scripts/real-programs.sh)
#        postgresql (server, initdb, pgbench), nginx-light, redis-server
#        (scripts/service-tests.py starts them on random ports)
#        libpython3.N-testsuite (only when python3 is Debian's own and lacks
#        its test suite, which scripts/real-programs.sh runs)
#   rustup: the rustfmt and clippy components, if `cargo fmt` / `cargo clippy`
#        do not work
#   (maturin, auditwheel, jupyter_client and ipykernel come from PyPI into
#   venvs that `make wheel` and scripts/wheel-tests.py make themselves)
#
# Runs as root without sudo; otherwise uses sudo where it exists.
set -euo pipefail

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "install-deps: not root and no sudo; will only report what is missing" >&2
        SUDO=(false)
    fi
fi

# package: installed when this test passes.
APT_PKGS=()
want() { # package test...
    local pkg=$1
    shift
    if ! "$@" >/dev/null 2>&1; then
        APT_PKGS+=("$pkg")
    fi
}
have() { command -v "$1"; }
installed() { # dpkg name pattern -> true if a matching package is installed
    dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q 'install ok installed'
}

want gcc have gcc
want g++ have g++
want make have make
want valgrind have valgrind
want time test -x /usr/bin/time
want binutils have nm
want python3 have python3
# venvs for `make wheel` and scripts/wheel-tests.py (Debian splits them off).
want python3-venv python3 -c 'import venv, ensurepip'
# The patterns also accept the t64-renamed packages of Debian 13; which name
# to install is settled below, once the package lists are there.
want libjemalloc2 installed 'libjemalloc2*'
want libmimalloc2.0 installed 'libmimalloc2*'
want libtcmalloc-minimal4 installed 'libtcmalloc-minimal4*'
want sqlite3 have sqlite3
want google-perftools bash -c 'command -v google-pprof || command -v pprof'
want libgoogle-perftools4 installed 'libgoogle-perftools4*'
want heaptrack have heaptrack
want postgresql bash -c 'ls /usr/lib/postgresql/*/bin/postgres && ls /usr/lib/postgresql/*/bin/pgbench'
want nginx-light bash -c 'command -v nginx || test -x /usr/sbin/nginx'
want redis-server bash -c 'command -v redis-server || test -x /usr/bin/redis-server'
want util-linux have setpriv

# Debian's python3 keeps its test suite in a package of its own.
if command -v python3 >/dev/null 2>&1; then
    py=$(python3 -c 'import sys; print(sys.executable)' 2>/dev/null || true)
    case "$py" in
        /usr/bin/python3*)
            if ! python3 -c 'import test.libregrtest' >/dev/null 2>&1; then
                ver=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
                APT_PKGS+=("libpython$ver-testsuite")
            fi
            ;;
    esac
fi

if [ ${#APT_PKGS[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-deps: missing, and no apt-get to install them: ${APT_PKGS[*]}" >&2
        exit 1
    fi
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    apt() { # quiet unless it fails
        if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get "$@" >"$log" 2>&1; then
            cat "$log" >&2
            echo "install-deps: apt-get $* failed" >&2
            exit 1
        fi
    }
    apt update -qq
    pkgs=()
    for pkg in "${APT_PKGS[@]}"; do
        # The t64-renamed library packages of newer Debian releases.
        if ! apt-cache show "$pkg" >/dev/null 2>&1 && apt-cache show "${pkg}t64" >/dev/null 2>&1; then
            pkg=${pkg}t64
        fi
        echo "install-deps: installing $pkg (apt)"
        pkgs+=("$pkg")
    done
    apt install -y -qq --no-install-recommends "${pkgs[@]}"
fi

# Rust components for `make lint`.
if command -v cargo >/dev/null 2>&1; then
    for comp in rustfmt clippy; do
        sub=$comp
        [ "$comp" = rustfmt ] && sub=fmt
        if ! cargo "$sub" --version >/dev/null 2>&1; then
            if ! command -v rustup >/dev/null 2>&1; then
                echo "install-deps: cargo $sub is missing and there is no rustup to add $comp" >&2
                exit 1
            fi
            echo "install-deps: installing $comp (rustup component)"
            rustup component add "$comp" >/dev/null 2>&1 || rustup component add "$comp"
        fi
    done
else
    echo "install-deps: warning: no cargo on PATH (install Rust with rustup)" >&2
fi
