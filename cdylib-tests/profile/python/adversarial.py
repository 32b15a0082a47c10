"""python stacks: objects whose __del__ grows the very list the program is
appending to, with a GC threshold of 3 and a high sample rate: sampling
inside malloc must never run Python code (a collection, a finalizer)."""
import gc

gc.set_threshold(3)
victims = []


class Grower:
    def __init__(self):
        self.cycle = self  # only the cyclic collector frees it

    def __del__(self):
        victims.append(bytearray(600))
        victims.extend([None] * 50)


for i in range(20000):
    Grower()
    victims.append(bytearray(700))
    if len(victims) > 20000:
        del victims[:10000]
gc.collect()
print("done", len(victims) > 0)
