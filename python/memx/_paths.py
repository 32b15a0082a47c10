"""Where this package's two binaries are: libmemx.so inside the package, the
`memx` command among the scripts of the environment it was installed into.
Also the environment for the command when it runs from a process under
memx (that child must not be profiled into the parent's files)."""

import os
import shutil
import sys
import sysconfig

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def packaged_library():
    """libmemx.so of this package, or None (a source tree without one)."""
    p = os.path.join(PACKAGE_DIR, "libmemx.so")
    return p if os.path.isfile(p) else None


def command():
    """The `memx` command installed with this package."""
    # The environment's scripts, then `pip install --user`'s.
    dirs = [sysconfig.get_path("scripts"), sysconfig.get_path("scripts", "posix_user")]
    dirs.append(os.path.dirname(sys.executable))
    for d in dirs:
        p = os.path.join(d, "memx")
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    found = shutil.which("memx")
    if found:
        return found
    raise FileNotFoundError(
        "the memx command is not installed beside this package (looked in %s); "
        "reinstall it: pip install memx" % ", ".join(dirs)
    )


def command_env(base=None):
    """The environment for running the `memx` command: the package's
    library as MEMX_LIB, and neither libmemx.so preloaded nor profiling on
    (a command started from a process under memx would inherit both)."""
    env = dict(os.environ if base is None else base)
    for k in [k for k in env if k.startswith("MEMX_") and k != "MEMX_LIB"]:
        del env[k]
    preload = [
        p
        for p in env.get("LD_PRELOAD", "").replace(" ", ":").split(":")
        if p and not os.path.basename(p).startswith("libmemx")
    ]
    if preload:
        env["LD_PRELOAD"] = ":".join(preload)
    else:
        env.pop("LD_PRELOAD", None)
    return with_library(env)


def with_library(env):
    """`env` with this package's libmemx.so as MEMX_LIB, unless it names
    one already."""
    lib = packaged_library()
    if lib and "MEMX_LIB" not in env:
        env["MEMX_LIB"] = lib
    return env
