"""python stacks: a sub-interpreter, with threads allocating before and
after it exists (PyGILState_Check gives wrong answers from then on)."""
import sys
import threading

try:
    import _xxsubinterpreters as interpreters
except ImportError:
    try:
        import _interpreters as interpreters
    except ImportError:
        print("skip: no sub-interpreter module")
        sys.exit(0)

keep = []


def work():
    for _ in range(300):
        keep.append(bytearray(20000))


def run_threads():
    ts = [threading.Thread(target=work) for _ in range(3)]
    for t in ts:
        t.start()
    work()
    for t in ts:
        t.join()


run_threads()
interp = interpreters.create()
code = "x = [bytearray(30000) for _ in range(300)]\ny = b''.join(bytes(x[0]) for _ in range(50))"
if hasattr(interpreters, "run_string"):
    interpreters.run_string(interp, code)
else:
    interpreters.exec(interp, code)
run_threads()
interpreters.destroy(interp)
run_threads()
print("done")
