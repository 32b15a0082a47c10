"""The API for a Python program under memx: finds libmemx.so in this
process (/proc/self/maps) and calls its entry points through ctypes
(memx_dump, memx_stats, memx_stats_names); reports run the `memx`
command on a fresh dump."""

import ctypes
import os
import subprocess

from . import _paths

_HOW = (
    "start Python under memx: `memx run -- python script.py`, or in Jupyter "
    'the "Python 3 (memx)" kernel that `memx jupyter install` writes'
)


class MemxError(RuntimeError):
    """memx is loaded but cannot do what was asked."""


class NotActive(MemxError):
    """libmemx.so is not loaded in this process."""


# Shown as memx.MemxError / memx.NotActive in tracebacks.
MemxError.__module__ = NotActive.__module__ = "memx"


def library_path():
    """The path of the libmemx.so loaded in this process, or None."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split(None, 5)
                if len(fields) == 6:
                    path = fields[5].strip()
                    if os.path.basename(path).startswith("libmemx"):
                        return path
    except OSError:
        pass
    return None


def active():
    """Whether libmemx.so is loaded in this process."""
    return library_path() is not None


_lib = None


def _library():
    global _lib
    if _lib is None:
        path = library_path()
        if path is None:
            raise NotActive("memx is not loaded in this process; " + _HOW)
        # dlopen of a loaded library returns it: the preloaded copy.
        lib = ctypes.CDLL(path)
        for name in ("memx_dump", "memx_stats", "memx_stats_names"):
            if not hasattr(lib, name):
                raise MemxError(
                    "the libmemx.so loaded in this process (%s) is older than this "
                    "package: it has no %s" % (path, name)
                )
        lib.memx_dump.restype = ctypes.c_ssize_t
        lib.memx_dump.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        lib.memx_stats.restype = ctypes.c_size_t
        lib.memx_stats.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t]
        lib.memx_stats_names.restype = ctypes.c_char_p
        lib.memx_stats_names.argtypes = []
        _lib = lib
    return _lib


def dump():
    """Writes a heap dump of this process now and returns its path (the
    file is complete when this returns)."""
    lib = _library()
    buf = ctypes.create_string_buffer(4096)
    n = lib.memx_dump(buf, len(buf))
    if n == 0:
        raise MemxError(
            "memx is loaded but heap profiling is off (MEMX_PROFILE is not set); " + _HOW
        )
    if n < 0:
        raise MemxError("memx could not write the heap dump (its reason is on stderr)")
    return os.fsdecode(buf.raw[:n])


def stats():
    """The allocator's figures, as `malloc_stats` prints them: bytes in use,
    in caches, mapped, RSS, ... (a dict of ints, bytes unless a count)."""
    lib = _library()
    names = lib.memx_stats_names().decode().split()
    out = (ctypes.c_uint64 * len(names))()
    n = lib.memx_stats(out, len(names))
    return {name: int(out[i]) for i, name in enumerate(names[: min(n, len(names))])}


def _run_command(args):
    proc = subprocess.run(
        [_paths.command()] + args,
        env=_paths.command_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if proc.returncode != 0:
        raise MemxError(
            "memx %s failed: %s" % (args[0], proc.stderr.decode(errors="replace").strip())
        )
    return proc.stdout.decode(errors="replace")


_BY = ("function", "line", "stack")


def report(path=None, top=10, by="line", alloc=False):
    """The top sites of a dump (by default a fresh one of this process) as
    text, charged to Python lines: `memx report --python`. `by` is
    "function", "line" or "stack"; `alloc` counts every byte allocated
    rather than the bytes still in use."""
    if by not in _BY:
        raise ValueError("by=%r: expected one of %s" % (by, ", ".join(_BY)))
    if path is None:
        path = dump()
    args = ["report", os.fspath(path), "--python", "--top", str(int(top)), "--by", by]
    if alloc:
        args.append("--alloc")
    return _run_command(args)


def flamegraph(path=None, output=None, alloc=False):
    """An SVG flame graph of a dump (by default a fresh one of this
    process), by Python line; returns the SVG file's path (`output`, or the
    dump's path + ".svg")."""
    if path is None:
        path = dump()
    path = os.fspath(path)
    output = os.fspath(output) if output is not None else path + ".svg"
    args = ["flamegraph", path, "--python", "--by", "line", "-o", output]
    if alloc:
        args.append("--alloc")
    _run_command(args)
    return output
