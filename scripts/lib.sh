# shellcheck shell=bash
# Shared by the test runners (sourced, not run).

# memx_lib TOOL [LIB]: prints the absolute path of the library to preload,
# "" for none (glibc). LIB defaults to target/release/libmemx.so under $ROOT;
# "none" or "" mean no preload. Returns 2 (with a message) if it is missing.
memx_lib() {
    local tool=$1 lib
    if [ $# -ge 2 ]; then lib=$2; else lib="$ROOT/target/release/libmemx.so"; fi
    if [ "$lib" = none ]; then lib=""; fi
    if [ -n "$lib" ]; then
        case "$lib" in
            /*) ;;
            *) lib="$PWD/$lib" ;;
        esac
        if [ ! -f "$lib" ]; then
            echo "$tool: library not found: $lib" >&2
            echo "(build it with 'cargo build --release', or pass \"\" for glibc)" >&2
            return 2
        fi
    fi
    printf '%s\n' "$lib"
}
