"""memx: a fast malloc replacement with a heap-sampling profiler.

This package holds libmemx.so and the `memx` command (run it as `memx ...`
or `python -m memx ...`), and a small API for a Python program running
under memx (`memx run -- python app.py`, or the Jupyter kernel that
`memx jupyter install` writes):

    memx.active()      is libmemx.so loaded in this process?
    memx.dump()        write a heap dump now; its path
    memx.stats()       the allocator's figures (malloc_stats) as a dict
    memx.report()      a fresh dump's top sites, as text

In IPython or Jupyter, `%load_ext memx` adds the `%memx` magic.
Outside memx, each raises `memx.NotActive`, saying how to start under it.
"""

from ._api import (
    MemxError,
    NotActive,
    active,
    dump,
    flamegraph,
    library_path,
    report,
    stats,
)

__all__ = [
    "MemxError",
    "NotActive",
    "active",
    "dump",
    "flamegraph",
    "library_path",
    "report",
    "stats",
]


def load_ipython_extension(ipython):
    """`%load_ext memx`: registers the `%memx` line magic."""
    from . import _ipython

    _ipython.load(ipython)
