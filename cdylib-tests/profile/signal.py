"""profile signal (Python): grows twice, waiting on stdin in between, so the
driver can send the dump signal at each step."""
import sys

keep = []


def grow(n):
    for _ in range(n):
        keep.append(bytearray(8192))
    print("ready", flush=True)
    sys.stdin.readline()


grow(2048)   # 16 MiB
grow(6144)   # 48 MiB more
