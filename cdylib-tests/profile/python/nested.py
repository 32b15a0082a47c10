"""python stacks: nested functions allocating known amounts, then a dump
of the live heap by signal. The driver finds the lines by their "# site:"
markers and expects these Python stacks, innermost first:

  leaf <- middle <- outer(first call) <- <module>   16 MiB
  leaf <- outer(second call) <- <module>             8 MiB
"""
import os
import signal
import sys
import time

keep = []


def leaf(n):
    for _ in range(n):
        keep.append(bytearray(65536))  # site:leaf


def middle(n):
    leaf(n)  # site:middle


def outer():
    middle(256)  # site:outer1
    leaf(128)  # site:outer2


if __name__ == "__main__":
    outer()  # site:module
    os.kill(os.getpid(), signal.SIGRTMIN + 10)
    time.sleep(0.2)
    sys.stdout.write("done\n")
