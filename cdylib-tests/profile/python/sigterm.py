"""SIGTERM under memx. `getsignal`: Python sees SIGTERM's default action
(memx installs its handler after the interpreter has read the actions) and
can put a saved action back. `term`: once memx's handler is in place
(SigCgt), SIGTERM still ends the process, after the exit dump."""
import signal
import os
import sys
import time


def caught():
    for line in open("/proc/self/status"):
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1))
    return 0


if sys.argv[1] == "getsignal":
    old = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *a: None)
    signal.signal(signal.SIGTERM, old)  # a saved action can be put back
    print(signal.Handlers(old).name)
else:
    end = time.time() + 10
    while not caught() and time.time() < end:
        time.sleep(0.01)
    print("caught" if caught() else "not caught", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
