#!/usr/bin/env python3
"""The Python package's tests: the wheel `make wheel` built, installed with
`pip install --no-index` into fresh venvs of two CPython minor versions,
then used as a user would: `memx run -- python app.py`, `python -m memx
report`, the API inside and outside memx, and a Jupyter kernel from `memx
jupyter install` answering `%memx`. `auditwheel show` must agree with the
wheel's platform tag.

    scripts/wheel-tests.py WHEEL TOOLS_VENV

TOOLS_VENV has auditwheel (the Makefile's wheel target made it). PyPI is
needed for jupyter_client and ipykernel (installed into the throw-away venv
of one Python only). Each check prints PASS/FAIL; the exit status is
non-zero if any failed.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap

FAILED = []


def check(name, cond, detail=""):
    print("%s %s%s" % ("PASS" if cond else "FAIL", name, "" if cond else "\n" + detail))
    if not cond:
        FAILED.append(name)
    return cond


def run(cmd, **kw):
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.STDOUT)
    kw.setdefault("timeout", 600)
    p = subprocess.run(cmd, **kw)
    out = p.stdout.decode(errors="replace") if p.stdout is not None else ""
    return p.returncode, out


def top_site(report):
    """The site of a `memx report` table's first row (most bytes)."""
    lines = report.splitlines()
    for i, line in enumerate(lines):
        if line.split()[:2] == ["flat", "flat%"] and i + 1 < len(lines):
            # flat, cum: number and unit; flat%, sum%, cum%, objects; site.
            return lines[i + 1].split(None, 8)[-1]
    return None


def clean_env(**extra):
    """This environment without memx's own variables (the test may itself
    run under a profiling session) plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMX_")}
    env.pop("LD_PRELOAD", None)
    env.pop("PYTHONMALLOC", None)
    env.update(extra)
    return env


def pythons():
    """Two CPython interpreters of different minor versions, 3.8+: the
    oldest and the newest found (pyenv's, then PATH's)."""
    found = {}
    roots = [os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")]
    for minor in range(8, 20):
        name = "python3.%d" % minor
        cands = sorted(glob.glob(os.path.join(roots[0], "versions", "3.%d.*" % minor, "bin", name)))
        if shutil.which(name):
            cands.append(shutil.which(name))
        for c in cands:
            rc, out = run([c, "-c", "import sys, venv; print(sys.version_info[1])"])
            if rc == 0 and out.strip() == str(minor):
                found[minor] = c
                break
    if len(found) < 2:
        return list(found.values())
    return [found[min(found)], found[max(found)]]


APP = textwrap.dedent(
    """\
    import os, sys
    import memx

    def hold_buffers():
        held = []
        for _ in range(300):
            held.append(bytearray(100_000))  # APP_LINE
        return held

    def api_check():
        held = hold_buffers()
        assert memx.active(), "memx.active() is False under memx run"
        path = memx.dump()
        assert os.path.isfile(path), path
        print("DUMP", path)
        print("STATS", memx.stats()["in_use"] >= 30_000_000, memx.stats()["rss"] > 0)
        print(memx.report(top=5))
        return held

    api_check()
    """
)
APP_LINE = next(i + 1 for i, l in enumerate(APP.splitlines()) if "APP_LINE" in l)

OUTSIDE = textwrap.dedent(
    """\
    import memx
    print("ACTIVE", memx.active())
    for f in (memx.dump, memx.stats, memx.report):
        try:
            f()
            print("NO ERROR from", f.__name__)
        except memx.NotActive as e:
            print("NOTACTIVE", f.__name__, e)
    """
)

PROFILING_OFF = textwrap.dedent(
    """\
    import memx
    print("ACTIVE", memx.active(), memx.stats()["in_use"] > 0)
    try:
        memx.dump()
    except memx.NotActive as e:
        print("WRONG", e)
    except memx.MemxError as e:
        print("OFF", e)
    """
)


def check_python(py, wheel, work):
    minor = run([py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])[1].strip()
    tag = "py" + minor
    venv = os.path.join(work, "venv-" + minor)
    rc, out = run([py, "-m", "venv", venv])
    if not check(tag + " venv", rc == 0, out):
        return None
    vpy = os.path.join(venv, "bin", "python")
    rc, out = run([vpy, "-m", "pip", "install", "-q", "--no-index", wheel], env=clean_env())
    if not check(tag + " pip install --no-index the wheel", rc == 0, out):
        return None
    memx_cmd = os.path.join(venv, "bin", "memx")
    appdir = os.path.join(work, "app-" + minor)
    os.makedirs(appdir)
    with open(os.path.join(appdir, "app.py"), "w") as f:
        f.write(APP)
    # The venv's memx finds the library in the package: no MEMX_LIB, and
    # run from a directory with no build tree above it.
    rc, out = run([memx_cmd, "run", "--profile", "prof/app", "--", vpy, "app.py"], cwd=appdir, env=clean_env())
    site = "hold_buffers (app.py:%d)" % APP_LINE
    check(tag + " memx run -- python app.py", rc == 0 and "DUMP " in out, out)
    check(tag + " memx.report() in the process names the caller's line", top_site(out) == site, out)
    check(tag + " memx.stats() figures", "STATS True True" in out, out)
    dumps = sorted(glob.glob(os.path.join(appdir, "prof", "app.*.0001.heap")))
    if check(tag + " memx.dump() wrote the first dump", len(dumps) == 1, out):
        rc, rep = run(
            [vpy, "-m", "memx", "report", "--python", "--by", "line", dumps[0]],
            cwd=appdir,
            env=clean_env(),
        )
        check(tag + " python -m memx report names the script's line", rc == 0 and top_site(rep) == site, rep)
    rc, out = run([vpy, "-c", OUTSIDE], env=clean_env())
    ok = "ACTIVE False" in out and out.count("NOTACTIVE") == 3 and "memx run -- python" in out
    check(tag + " the API outside memx says so", rc == 0 and ok, out)
    lib = run([vpy, "-c", "from memx import _paths; print(_paths.packaged_library())"])[1].strip()
    rc, out = run([vpy, "-c", PROFILING_OFF], env=clean_env(LD_PRELOAD=lib))
    ok = "ACTIVE True True" in out and "OFF " in out and "MEMX_PROFILE is not set" in out
    check(tag + " the API with profiling off says so", rc == 0 and ok, out)
    v1 = run([memx_cmd, "--version"], env=clean_env())[1]
    v2 = run([vpy, "-m", "memx", "--version"], env=clean_env())[1]
    check(tag + " python -m memx is the memx command", v1 == v2 and v1.startswith("memx "), v1 + v2)
    return vpy


KERNEL_DRIVER = textwrap.dedent(
    """\
    import queue, sys
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=sys.argv[1], kernel_spec_manager=KernelSpecManager())
    km.start_kernel()
    kc = km.blocking_client()
    kc.start_channels()
    kc.wait_for_ready(timeout=120)

    def cell(code):
        msg_id = kc.execute(code)
        text = []
        while True:
            msg = kc.get_iopub_msg(timeout=120)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            t, c = msg["msg_type"], msg["content"]
            if t == "stream":
                text.append(c["text"])
            elif t in ("execute_result", "display_data"):
                data = c["data"]
                text.append("<svg>" if "image/svg+xml" in data else data.get("text/plain", ""))
            elif t == "error":
                text.append("ERROR " + c["ename"] + ": " + c["evalue"])
            elif t == "status" and c["execution_state"] == "idle":
                return "".join(text)

    try:
        print("CELL1", cell("import memx; print('loaded', memx.active())"))
        print("CELL2", cell(
            "def notebook_buffers():\\n"
            "    held = []\\n"
            "    for _ in range(300):\\n"
            "        held.append(bytearray(100_000))\\n"
            "    return held\\n"
            "kept = notebook_buffers()"))
        print("CELL3", cell("%load_ext memx\\n%memx"))
        print("CELL4", cell("%memx flamegraph"))
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    """
)


def check_jupyter(vpy, work):
    minor = run([vpy, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"])[1].strip()
    tag = "py" + minor + " jupyter"
    rc, out = run([vpy, "-m", "pip", "install", "-q", "jupyter_client", "ipykernel"], env=clean_env())
    if rc != 0:
        print("SKIP %s: cannot install jupyter_client and ipykernel from PyPI:\n%s" % (tag, out))
        return
    data = os.path.join(work, "jupyter-data")
    prof = os.path.join(work, "kernel-prof", "k")
    env = clean_env(JUPYTER_DATA_DIR=data, JUPYTER_PLATFORM_DIRS="1")
    memx_cmd = os.path.join(os.path.dirname(vpy), "memx")
    rc, out = run(
        [memx_cmd, "jupyter", "install", "--name", "memx-test", "--sample", "64K", "--profile", prof],
        env=env,
    )
    spec_path = os.path.join(data, "kernels", "memx-test", "kernel.json")
    if not check(tag + " memx jupyter install writes the kernel spec", rc == 0 and os.path.isfile(spec_path), out):
        return
    with open(spec_path) as f:
        spec = json.load(f)
    kenv = spec.get("env", {})
    check(
        tag + " kernel.json starts the kernel under memx",
        spec.get("display_name") == "Python 3 (memx, memx-test)"
        and os.path.basename(kenv.get("LD_PRELOAD", "")) == "libmemx.so"
        and os.path.isfile(kenv["LD_PRELOAD"])
        and kenv.get("MEMX_PROFILE") == prof
        and kenv.get("MEMX_PROFILE_SAMPLE") == "64K",
        json.dumps(spec, indent=1),
    )
    rc, out = run([vpy, "-c", KERNEL_DRIVER, "memx-test"], env=env, timeout=300)
    cells = dict(re.findall(r"^(CELL\d) (.*?)(?=^CELL\d |\Z)", out, re.M | re.S))
    check(tag + " the kernel runs under memx", "loaded True" in cells.get("CELL1", ""), out)
    c3 = cells.get("CELL3", "")
    check(tag + " %memx names the cell's function",
          re.match(r"notebook_buffers \(\S+:4\)$", top_site(c3) or "") is not None, out)
    check(tag + " %memx flamegraph shows an SVG", cells.get("CELL4", "").strip() == "<svg>", out)
    print("--- %memx in the kernel:\n" + c3)


def main():
    wheel, tools = sys.argv[1], sys.argv[2]
    name = os.path.basename(wheel)
    m = re.match(r"memx-[^-]+-py3-none-(.+)\.whl$", name)
    check("the wheel is py3-none-<platform>", m is not None, name)
    rc, out = run([os.path.join(tools, "bin", "auditwheel"), "show", wheel])
    platform = m.group(1) if m else "?"
    said = " ".join(out.split())
    check("auditwheel show reports the wheel's tag %s" % platform,
          rc == 0 and ('consistent with the following platform tag: "%s"' % platform) in said, out)
    print("wheel: %s, %d bytes" % (name, os.path.getsize(wheel)))
    pys = pythons()
    if not check("two CPython minor versions 3.8+ found", len(pys) == 2, repr(pys)):
        return 1
    work = tempfile.mkdtemp(prefix="memx-wheel-tests-")
    try:
        venvs = [check_python(py, wheel, work) for py in pys]
        if venvs[-1]:
            check_jupyter(venvs[-1], work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if FAILED:
        print("FAILED: " + ", ".join(FAILED))
        return 1
    print("all wheel tests passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
