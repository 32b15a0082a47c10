"""Reads memx heap dumps (pprof's legacy "heap_v2" text format) for the tests.

    heap profile: <inuse objs>: <inuse bytes> [<alloc objs>: <alloc bytes>] @ heap_v2/<rate>
    <inuse objs>: <inuse bytes> [<alloc objs>: <alloc bytes>] @ 0xADDR 0xADDR ...
    ...
    MAPPED_LIBRARIES:
    <the process's /proc/self/maps>

    PYTHON_FRAMES:                       (only when stacks hold Python frames)
    0xf000000000000001<TAB>function<TAB>file<TAB>line

    PROCESS:                             (who wrote the dump)
    pid<TAB>N / ppid<TAB>N / cmdline<TAB>ARGS... / thread<TAB>TID<TAB>NAME

Counts are raw samples; `unsample` scales them as pprof does. Addresses are
symbolised offline with binutils (`readelf`, `nm`) from the mapped files, so
a test can say which function each stack's innermost program frame is in.
Standard library only: this runs on a fresh machine before anything else.
"""

import bisect
import math
import re
import subprocess

HEADER = re.compile(
    r"^heap profile:\s*(\d+):\s*(\d+)\s*\[\s*(\d+):\s*(\d+)\]\s*@\s*heap_v2/(\d+)\s*$"
)
LINE = re.compile(r"^\s*(\d+):\s*(\d+)\s*\[\s*(\d+):\s*(\d+)\]\s*@((?:\s+0x[0-9a-f]+)*)\s*$")
MAP = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s+(\S+)\s+([0-9a-f]+)\s+\S+\s+\d+\s*(.*)$")


class DumpError(Exception):
    pass


class Stack:
    def __init__(self, inuse, inuse_bytes, allocs, alloc_bytes, frames):
        self.inuse, self.inuse_bytes = inuse, inuse_bytes
        self.allocs, self.alloc_bytes = allocs, alloc_bytes
        self.frames = frames


class Dump:
    def __init__(self, path):
        self.path = path
        self.stacks = []
        self.maps = []  # (start, end, offset, path)
        self.python = {}  # tagged word -> (function, file, line)
        with open(path) as f:
            lines = f.read().split("\n")
        m = HEADER.match(lines[0]) if lines else None
        if not m:
            raise DumpError(f"{path}: not a heap_v2 dump: {lines[0][:80]!r}")
        self.total = tuple(int(x) for x in m.groups()[:4])
        self.rate = int(m.group(5))
        i = 1
        while i < len(lines) and lines[i].strip() != "MAPPED_LIBRARIES:":
            if lines[i].strip():
                s = LINE.match(lines[i])
                if not s:
                    raise DumpError(f"{path}:{i + 1}: bad stack line {lines[i][:80]!r}")
                frames = [int(a, 16) for a in s.group(5).split()]
                self.stacks.append(Stack(*(int(x) for x in s.groups()[:4]), frames))
            i += 1
        if i == len(lines):
            raise DumpError(f"{path}: no MAPPED_LIBRARIES section (truncated?)")
        self.process = {"threads": []}  # pid, ppid, cmdline, threads [(tid, name)]
        section = "maps"
        for line in lines[i + 1 :]:
            if line.strip() == "PYTHON_FRAMES:":
                section = "python"
                continue
            if line.strip() == "PROCESS:":
                section = "process"
                continue
            if section == "process":
                f = line.split("\t")
                if f[0] == "thread" and len(f) == 3:
                    self.process["threads"].append((int(f[1]), f[2]))
                elif f[0] in ("pid", "ppid") and len(f) == 2:
                    self.process[f[0]] = int(f[1])
                elif f[0] == "cmdline" and len(f) == 2:
                    self.process["cmdline"] = f[1]
                continue
            if section == "python":
                f = line.split("\t")
                if len(f) == 4:
                    self.python[int(f[0], 16)] = (f[1], f[2], int(f[3]))
                continue
            mm = MAP.match(line)
            if mm:
                self.maps.append(
                    (int(mm.group(1), 16), int(mm.group(2), 16), int(mm.group(4), 16), mm.group(5).strip())
                )

    def mapping(self, addr):
        for start, end, off, path in self.maps:
            if start <= addr < end:
                return start, off, path
        return None


PY_TAG = 0xF000000000000000


def is_python(word):
    return word & PY_TAG == PY_TAG


def python_frames(dump, stack):
    """The stack's Python frames, innermost first: [(function, file, line)]."""
    return [dump.python.get(w, ("?", "?", 0)) for w in stack.frames if is_python(w)]


def unsample(count, nbytes, rate):
    """(objects, bytes) estimated from raw sample counts, as pprof does."""
    if count == 0 or rate <= 0:
        return float(count), float(nbytes)
    scale = 1.0 / -math.expm1(-(nbytes / count) / rate)
    return count * scale, nbytes * scale


class Symbolizer:
    """Function names for addresses, from each mapped file's symbol table."""

    def __init__(self):
        self.files = {}

    def _load(self, path):
        if path in self.files:
            return self.files[path]
        loads, syms = [], []
        try:
            out = subprocess.run(["readelf", "-lW", path], capture_output=True, text=True).stdout
            for line in out.splitlines():
                f = line.split()
                if f and f[0] == "LOAD":
                    loads.append((int(f[1], 16), int(f[2], 16), int(f[4], 16)))
            for extra in ([], ["-D"]):  # the dynamic table when stripped
                out = subprocess.run(
                    ["nm", "-S", "--defined-only", *extra, path], capture_output=True, text=True
                ).stdout
                for line in out.splitlines():
                    f = line.split()
                    if len(f) == 4 and f[2] in "tTwWiI":
                        syms.append((int(f[0], 16), int(f[1], 16), f[3]))
                if syms:
                    break
        except OSError:
            pass
        syms.sort()
        entry = (loads, syms, [s[0] for s in syms])
        self.files[path] = entry
        return entry

    def function(self, dump, addr):
        """The function containing the call that `addr` returns to, or None."""
        m = dump.mapping(addr)
        if not m or not m[2].startswith("/"):
            return None
        start, map_off, path = m
        loads, syms, keys = self._load(path)
        file_off = addr - 1 - start + map_off
        for p_off, p_vaddr, p_filesz in loads:
            if p_off <= file_off < p_off + p_filesz:
                vaddr = file_off - p_off + p_vaddr
                i = bisect.bisect_right(keys, vaddr) - 1
                if i >= 0 and vaddr < syms[i][0] + max(syms[i][1], 1):
                    return syms[i][2]
        return None

    def module(self, dump, addr):
        m = dump.mapping(addr)
        return m[2] if m else None


def by_function(dump, symbolizer, module_suffix):
    """Unsampled totals per innermost frame that lies in a file whose path
    ends with `module_suffix`: {name: [inuse objs, inuse bytes, alloc objs,
    alloc bytes]}."""
    out = {}
    for s in dump.stacks:
        name = None
        for a in s.frames:
            mod = symbolizer.module(dump, a)
            if mod and mod.endswith(module_suffix):
                name = symbolizer.function(dump, a)
                break
        if name is None:
            continue
        iu = unsample(s.inuse, s.inuse_bytes, dump.rate)
        al = unsample(s.allocs, s.alloc_bytes, dump.rate)
        acc = out.setdefault(name, [0.0, 0.0, 0.0, 0.0])
        for k, v in enumerate(iu + al):
            acc[k] += v
    return out
