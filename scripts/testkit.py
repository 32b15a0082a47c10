"""What the Python test drivers (profile-tests.py, service-tests.py) share:
a failed check, building their C helper programs when the source is newer
than the binary, and running their tests."""

import glob
import os
import subprocess
import time


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def build_c(src_dir, bin_dir, shared=()):
    """Builds each src_dir/*.c into bin_dir/<name> (bin_dir/<name>.so for
    the names in `shared`), skipping those already newer than their source."""
    os.makedirs(bin_dir, exist_ok=True)
    for src in glob.glob(os.path.join(src_dir, "*.c")):
        name = os.path.splitext(os.path.basename(src))[0]
        lib = name in shared
        out = os.path.join(bin_dir, name + (".so" if lib else ""))
        if os.path.exists(out) and os.path.getmtime(out) > os.path.getmtime(src):
            continue
        cmd = ["gcc", "-O1", "-g", "-fno-inline", "-pthread", "-Wall", "-Werror", src, "-o", out]
        if lib:
            cmd[1:1] = ["-shared", "-fPIC"]
        subprocess.run(cmd, check=True)


def run_tests(tests, only, errors=(Fail,), skip=()):
    """Runs each test_* function (all, or those named in `only`), printing
    PASS, SKIP (an exception in `skip`) or FAIL (one in `errors`) with its
    time; returns how many failed."""
    failed = 0
    for t in tests:
        name = t.__name__[len("test_"):]
        if only and name not in only:
            continue
        t0 = time.time()
        try:
            t()
            print(f"PASS {name} ({time.time() - t0:.1f} s)", flush=True)
        except skip as e:
            print(f"SKIP {name}: {e}", flush=True)
        except errors as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
    return failed
