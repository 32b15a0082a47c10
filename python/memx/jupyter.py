"""`memx jupyter install`: a Jupyter kernel spec ("Python 3 (memx)") that
starts this interpreter's IPython kernel with libmemx.so preloaded and
heap profiling on, so a notebook can use `%load_ext memx` and `%memx`.

A notebook never starts its own interpreter, so LD_PRELOAD cannot be set
from inside it: the kernel spec's `env` sets it before the kernel starts.
"""

import argparse
import json
import os
import sys

from . import _paths

DEFAULT_NAME = "memx"


def data_dir(user=True, prefix=None):
    """Jupyter's data directory to install into: PREFIX/share/jupyter with
    `prefix`, else $JUPYTER_DATA_DIR, else the user's (jupyter_core's own
    answer when it is installed)."""
    if prefix is not None:
        return os.path.join(prefix, "share", "jupyter")
    if os.environ.get("JUPYTER_DATA_DIR"):
        return os.environ["JUPYTER_DATA_DIR"]
    try:
        from jupyter_core.paths import jupyter_data_dir

        return jupyter_data_dir()
    except ImportError:
        base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        return os.path.join(base, "jupyter")


def default_profile_prefix(name):
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "memx", "jupyter", name, "kernel")


def kernel_spec(name, sample=None, profile=None, python=None):
    """kernel.json's contents."""
    lib = _paths.packaged_library()
    if lib is None:
        raise FileNotFoundError(
            "this memx package has no libmemx.so (%s); install the wheel or "
            "`pip install .` from a clone" % _paths.PACKAGE_DIR
        )
    env = {
        "LD_PRELOAD": lib,
        "MEMX_PROFILE": profile or default_profile_prefix(name),
    }
    if sample:
        env["MEMX_PROFILE_SAMPLE"] = sample
    display = "Python 3 (memx)" if name == DEFAULT_NAME else "Python 3 (memx, %s)" % name
    return {
        "argv": [python or sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display,
        "language": "python",
        "env": env,
        "metadata": {"debugger": True},
    }


def install(name=DEFAULT_NAME, sample=None, profile=None, prefix=None, python=None):
    """Writes the kernel spec; returns its directory."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError("kernel name %r: expected a plain name such as memx" % name)
    spec = kernel_spec(name, sample=sample, profile=profile, python=python)
    os.makedirs(os.path.dirname(spec["env"]["MEMX_PROFILE"]), exist_ok=True)
    kdir = os.path.join(data_dir(prefix=prefix), "kernels", name)
    os.makedirs(kdir, exist_ok=True)
    with open(os.path.join(kdir, "kernel.json"), "w") as f:
        json.dump(spec, f, indent=1)
        f.write("\n")
    return kdir


def main(argv):
    ap = argparse.ArgumentParser(
        prog="memx jupyter",
        description="Jupyter kernels that run under memx (heap profiling on).",
    )
    ap.add_argument("action", choices=["install"], help='write the "Python 3 (memx)" kernel spec')
    ap.add_argument("--name", default=DEFAULT_NAME, help="kernel name (default memx)")
    ap.add_argument("--sample", metavar="SIZE", help="mean bytes between samples (512K)")
    ap.add_argument(
        "--profile",
        metavar="PREFIX",
        help="where dumps go (default ~/.cache/memx/jupyter/NAME/kernel)",
    )
    ap.add_argument(
        "--sys-prefix",
        action="store_true",
        help="install into this environment (%s) rather than for the user" % sys.prefix,
    )
    ap.add_argument("--prefix", help="install into PREFIX/share/jupyter")
    args = ap.parse_args(argv)
    prefix = sys.prefix if args.sys_prefix else args.prefix
    try:
        kdir = install(args.name, sample=args.sample, profile=args.profile, prefix=prefix)
    except (OSError, ValueError) as e:
        print("memx jupyter: %s" % e, file=sys.stderr)
        return 1
    print("memx: installed kernel spec %s in %s" % (args.name, kdir))
    try:
        import ipykernel  # noqa: F401
    except ImportError:
        print(
            "memx: note: ipykernel is not installed for %s; the kernel needs it "
            "(pip install ipykernel)" % sys.executable,
            file=sys.stderr,
        )
    return 0
