"""The `%memx` line magic (`%load_ext memx`), on the API in _api:

    %memx [--top N] [--by function|line|stack] [--alloc]
        the top sites now (a fresh dump), by Python line
    %memx flamegraph [--alloc]
        the dump's flame graph, shown inline
"""

import argparse
import shlex

from . import _api


def _parser():
    ap = argparse.ArgumentParser(prog="%memx", add_help=False)
    ap.add_argument("what", nargs="?", choices=["report", "flamegraph"], default="report")
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--by", choices=_api._BY, default="line")
    ap.add_argument("--alloc", action="store_true")
    return ap


def memx_magic(line):
    try:
        args = _parser().parse_args(shlex.split(line))
    except SystemExit:
        print(__doc__.split("\n\n", 1)[1].rstrip())
        return None
    try:
        if args.what == "flamegraph":
            from IPython.display import SVG, display

            display(SVG(filename=_api.flamegraph(alloc=args.alloc)))
        else:
            print(_api.report(top=args.top, by=args.by, alloc=args.alloc), end="")
    except _api.MemxError as e:
        # A clear line, not a traceback: the usual cause is the wrong kernel.
        print("memx: %s" % e)
    return None


def load(ipython):
    ipython.register_magic_function(memx_magic, magic_kind="line", magic_name="memx")
