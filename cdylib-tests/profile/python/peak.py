"""The peak profile: 96 MiB held inside one function and freed, 8 MiB
kept to exit. The peak profile must name `transient` with ~96 MiB; the
exit dump (after everything is freed) must not."""
import sys

MiB = 1 << 20
kept = [bytearray(64 * 1024) for _ in range(128)]  # 8 MiB


def transient():
    held = []
    for _ in range(96 * 16):
        held.append(bytearray(64 * 1024))  # site:transient
    return len(held)


transient()
sys.stdout.write("done\n")
