"""pymalloc's objects under the default allocator: 300,000 small tuples
with their str, int and float (all from pymalloc's pools, none from
malloc), held while the dump signal is sent. Prints the truth (sum of
sys.getsizeof over everything the appending line built) and the line."""
import os
import signal
import sys
import time

N = 300_000


def build():
    data = []
    for i in range(N):
        data.append((f"item-{i}", i + 1_000_000_000, i * 0.5))  # site:append
    return data


data = build()
truth = sys.getsizeof(data)
for t in data:
    truth += sys.getsizeof(t) + sum(sys.getsizeof(x) for x in t)
sys.stdout.write(f"truth {truth}\n")
sys.stdout.flush()
os.kill(os.getpid(), signal.SIGRTMIN + 10)  # memx's default dump signal
time.sleep(0.3)
sys.stdout.write("done\n")
