"""python stacks: numpy allocates array data with calloc/malloc while the GIL
is released; the dump still names the Python lines that made the arrays."""
import os
import signal
import time

import numpy as np


def make_zeros():
    return np.zeros((1024, 1024))  # site: zeros


def make_empty():
    return np.empty((512, 1024))  # site: empty


held = [make_zeros() for _ in range(4)] + [make_empty() for _ in range(4)]
os.kill(os.getpid(), signal.SIGRTMIN + 10)  # memx's default dump signal
time.sleep(0.3)
print("done", len(held))
