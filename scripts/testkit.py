"""What the Python test drivers (profile-tests.py, service-tests.py) share:
a failed check, and building their C helper programs when the source is
newer than the binary."""

import glob
import os
import subprocess


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
