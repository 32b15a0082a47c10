"""`python -m memx ...`: the `memx` command with this package's library;
`python -m memx jupyter ...` is handled here, in Python (it writes a
kernel spec for this interpreter)."""

import os
import sys

from . import _paths


def main(argv):
    if argv[:1] == ["jupyter"]:
        from . import jupyter

        return jupyter.main(argv[1:])
    try:
        cmd = _paths.command()
    except FileNotFoundError as e:
        print("memx: %s" % e, file=sys.stderr)
        return 1
    env = _paths.with_library(dict(os.environ))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(cmd, [cmd] + argv, env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
