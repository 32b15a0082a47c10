#!/usr/bin/env python3
"""Profiling real services safely: launchers that drop privileges, programs
that rewrite their environment or take signals over, CPython's fork warning,
and `memx snapshot` of PostgreSQL, nginx and Redis started by the test.

    scripts/service-tests.py [LIB] [TEST...]

Helper programs live in cdylib-tests/services/ and are built into
target/service-tests/. Servers run in temporary directories on random free
ports and are always stopped (also on failure or ^C). A test whose server
is not installed prints SKIP with the reason (scripts/install-deps.sh
installs them). Needs root (to drop privileges and start servers as their
users); without it every test is skipped.
"""

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from testkit import Fail, build_c, check, run_tests  # noqa: E402
SRC = os.path.join(ROOT, "cdylib-tests", "services")
BIN = os.path.join(ROOT, "target", "service-tests")
MEMX = os.path.join(ROOT, "target", "release", "memx")
DUMP_SIGNAL = signal.SIGRTMIN + 10
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1:] or [""]
PG_BIN = PG_BIN[0]


class Skip(Exception):
    pass


def build():
    build_c(SRC, BIN)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def profile_env(prefix, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMX_") or k == "MEMX_LIB"}
    env.update({"LD_PRELOAD": LIB, "MEMX_PROFILE": prefix})
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Scratch:
    """A temporary directory anyone may write (servers run as their own
    users), and the processes started in it, killed on exit."""

    def __init__(self, name):
        self.dir = tempfile.mkdtemp(prefix=f"memx-svc-{name}-")
        os.chmod(self.dir, 0o777)
        self.procs = []

    def __enter__(self):
        return self

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def __exit__(self, *exc):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def answers(port, request, expect):
    """Whether the server on `port` answers `request` with `expect` in it."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
            c.sendall(request)
            return expect in c.recv(4096)
    except OSError:
        return False


def snapshot(pid, *args, timeout=60):
    return subprocess.run([MEMX, "snapshot", str(pid), "--timeout", "20", *args],
                          capture_output=True, text=True, timeout=timeout)


def wait_until(fn, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        r = fn()
        if r:
            return r
        time.sleep(0.05)
    raise Fail(f"timed out after {timeout} s waiting for {what}")


def read_ready(p, timeout=30):
    """The 'ready <pid>' line of a helper program."""
    import select
    r, _, _ = select.select([p.stdout], [], [], timeout)
    check(r, "the program never said ready")
    line = p.stdout.readline().split()
    check(line[:1] == ["ready"], f"program said {line}")
    return int(line[1])


def user_ids(name):
    pw = pwd.getpwnam(name)
    return pw.pw_uid, pw.pw_gid


def nobody():
    for name in ("nobody",):
        try:
            return name, *user_ids(name)
        except KeyError:
            pass
    raise Skip("no user nobody")


# ------------------------------------------------------------------ tests

def test_setpriv_launcher():
    """`setpriv --reuid --regid --init-groups` (which drops capabilities on
    its one thread, then has glibc replay setgroups on every thread) and
    `runuser` run with profiling on and exit 0."""
    user, uid, gid = nobody()
    with Scratch("setpriv") as s:
        env = profile_env(os.path.join(s.dir, "launch"))
        for argv in (["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "id", "-u"],
                     ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                      "--inh-caps=-all", "id", "-u"],
                     ["runuser", "-u", user, "--", "id", "-u"]):
            if not shutil.which(argv[0]):
                raise Skip(f"no {argv[0]}")
            p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
            print(f"    {' '.join(argv[:3])}...: exit {p.returncode}, id -u = {p.stdout.strip()}")
            check(p.returncode == 0, f"{argv} exited {p.returncode}: {p.stderr[-400:]}")
            check(p.stdout.strip() == str(uid), f"{argv}: id -u said {p.stdout!r}")


def test_program_drops_privileges():
    """A program that calls setgroups/setresgid/setresuid itself with
    profiling on runs on, and a dump still arrives on request (memx
    snapshot) while it is blocked in read(); it exits 0."""
    _, uid, gid = nobody()
    with Scratch("privdrop") as s:
        env = profile_env(os.path.join(s.dir, "pd"), MEMX_PROFILE_AT_EXIT=0)
        p = s.start([os.path.join(BIN, "privdrop"), str(uid), str(gid)], env=env,
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    text=True)
        pid = read_ready(p)
        snap = snapshot(pid)
        check(snap.returncode == 0, f"snapshot failed: {snap.stderr}")
        check("after_drop_alloc" in snap.stdout, f"report lacks after_drop_alloc: {snap.stdout}")
        dumps = glob.glob(os.path.join(s.dir, f"pd.{pid}.*.heap"))
        check(len(dumps) == 1 and os.stat(dumps[0]).st_uid == uid,
              f"dump {dumps} not written by the dropped user")
        p.stdin.write("\n")
        p.stdin.close()
        check(p.wait(timeout=30) == 0, f"program exited {p.returncode}: {p.stderr.read()}")


def proctitle(s, *args, **extra):
    env = profile_env(os.path.join(s.dir, "pt"), MEMX_PROFILE_AT_EXIT=0, **extra)
    p = s.start([os.path.join(BIN, "proctitle"), *args], env=env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return p, read_ready(p)


def test_snapshot_after_proctitle():
    """A program that overwrites its environ area (setproctitle) and
    handles SIGUSR2 itself: /proc/PID/environ has no MEMX_PROFILE, yet
    `memx snapshot` finds the settings in its memory and dumps it."""
    with Scratch("proctitle") as s:
        p, pid = proctitle(s)
        with open(f"/proc/{pid}/environ", "rb") as f:
            check(b"MEMX_PROFILE" not in f.read(), "the program did not overwrite its environment")
        t0 = time.time()
        snap = snapshot(pid)
        took = time.time() - t0
        print(f"    snapshot of a process with a rewritten environment: {took:.2f} s")
        check(snap.returncode == 0, f"snapshot failed: {snap.stderr}")
        check("proctitle_alloc" in snap.stdout, f"report lacks proctitle_alloc: {snap.stdout}")
        # SIGUSR2 is the program's: it got none.
        check(p.poll() is None, "the program died")


def test_snapshot_says_when_the_signal_was_taken_over():
    """A program that installs its own handler for memx's dump signal:
    snapshot says so within seconds (not at its timeout), and the program
    lives on. One that resets the signal to its default action (which would
    end it) is not sent the signal at all."""
    with Scratch("takeover") as s:
        p, pid = proctitle(s, "takeover")
        t0 = time.time()
        snap = snapshot(pid)
        took = time.time() - t0
        print(f"    taken over: {snap.stderr.strip()[:110]}... ({took:.1f} s)")
        check(snap.returncode != 0 and "replaced memx's handler" in snap.stderr,
              f"snapshot said {snap.stderr!r}")
        check(took < 10, f"took {took:.1f} s to notice")
        check(p.poll() is None, "the program died")
        p2, pid2 = proctitle(s, "reset")
        snap = snapshot(pid2)
        check(snap.returncode != 0 and "no handler for its dump signal" in snap.stderr,
              f"snapshot said {snap.stderr!r}")
        check(p2.poll() is None, "snapshot killed a program with the default action")


def python_fork_warning(py):
    # A dump asked for before the fork: served without a thread too.
    # CPython warns only once threading is imported; with -W error the
    # warning is swallowed (an exception nobody sees), so print it.
    code = ("import os, signal, threading, time\n"
            "os.kill(os.getpid(), signal.SIGRTMIN + 10)\n"
            "time.sleep(0.2)\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os._exit(0)\n"
            "os.waitpid(pid, 0)\n"
            "print('forked')\n")
    with Scratch("pyfork") as s:
        p = subprocess.run([MEMX, "run", "--profile", os.path.join(s.dir, "py"), "--",
                            py, "-W", "always::DeprecationWarning", "-c", code],
                           capture_output=True, text=True, timeout=120)
        return p


def test_python_fork_warning():
    """CPython 3.12+ warns on os.fork() in a process with more than one
    thread; under memx run (profiling on, a dump asked for by signal just
    before) there is none (-W always::DeprecationWarning prints none), and
    the dump was written."""
    found = 0
    for name in ("python3.12", "python3.13"):
        # The interpreter itself, not a pyenv shim script.
        cands = sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{name[6:]}*/bin/{name}")))
        cands += [c for c in (f"/usr/bin/{name}", f"/usr/local/bin/{name}") if os.path.exists(c)]
        if not cands:
            continue
        p = python_fork_warning(cands[-1])
        print(f"    {name}: exit {p.returncode}, stdout {p.stdout.strip()!r}")
        check(p.returncode == 0 and p.stdout.strip() == "forked",
              f"{name}: {p.stderr[-500:]}")
        check("multi-threaded" not in p.stderr, f"{name} warned: {p.stderr[-500:]}")
        check("2 dumps" in p.stderr, f"{name}: expected the signal's and the exit dump: "
              f"{p.stderr[-300:]}")
        found += 1
    if not found:
        raise Skip("no python3.12 or python3.13")


def report_names(out, names):
    return [n for n in names if n in out]


def test_postgresql():
    """PostgreSQL started under memx through setpriv (the launcher case),
    initdb in a temporary directory, a random port, a short pgbench: memx
    snapshot of the postmaster and of a busy backend each give a report
    naming postgres functions."""
    if not (PG_BIN and os.path.exists(os.path.join(PG_BIN, "postgres"))):
        raise Skip("PostgreSQL is not installed (apt-get install postgresql)")
    if not shutil.which("pgbench"):
        raise Skip("no pgbench (postgresql-contrib / postgresql-client)")
    _, uid, gid = ("postgres", *user_ids("postgres"))
    with Scratch("pg") as s:
        data = os.path.join(s.dir, "data")
        os.makedirs(os.path.join(s.dir, "prof"))
        os.chown(os.path.join(s.dir, "prof"), uid, gid)
        asuser = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups"]
        subprocess.run([*asuser, os.path.join(PG_BIN, "initdb"), "-D", data, "-A", "trust",
                        "-U", "postgres"], check=True, capture_output=True, timeout=120)
        port = free_port()
        # A denser sampling than the default: the postmaster's heap is small.
        env = profile_env(os.path.join(s.dir, "prof", "pg"), MEMX_PROFILE_AT_EXIT=0,
                          MEMX_PROFILE_SAMPLE="64K")
        log = open(os.path.join(s.dir, "pg.log"), "w")
        pm = s.start([*asuser, os.path.join(PG_BIN, "postgres"), "-D", data, "-p", str(port),
                      "-k", s.dir, "-c", "listen_addresses="], env=env, stdout=log, stderr=log)
        client = ["runuser", "-u", "postgres", "--"]
        conn = ["-h", s.dir, "-p", str(port)]

        def ready():
            return subprocess.run([*client, "psql", *conn, "-Atc", "select 1", "postgres"],
                                  capture_output=True, timeout=30).returncode == 0
        wait_until(ready, 60, "PostgreSQL to accept connections")
        subprocess.run([*client, "pgbench", *conn, "-i", "-s", "2", "postgres"], check=True,
                       capture_output=True, timeout=300)
        bench = subprocess.run([*client, "pgbench", *conn, "-T", "3", "-c", "2", "postgres"],
                               capture_output=True, text=True, timeout=120)
        check(bench.returncode == 0, f"pgbench failed: {bench.stderr[-400:]}")
        tps = [ln for ln in bench.stdout.splitlines() if ln.startswith("tps")]
        print(f"    pgbench under memx with profiling on: {tps[:1]}")
        # A backend busy with a join, then sleeping: its process stays.
        s.start([*client, "psql", *conn, "-Atc",
                 "select count(*) from pgbench_accounts a join pgbench_accounts b using (aid);"
                 " select pg_sleep(60)", "postgres"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def backend():
            out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pm.pid)],
                                 capture_output=True, text=True).stdout
            for ln in out.splitlines():
                if "[local]" in ln:
                    return int(ln.split()[0])
            return None
        bk = wait_until(backend, 30, "a backend")
        time.sleep(1)
        wanted = ["PostmasterMain", "PostgresMain", "InitProcessGlobals", "ServerLoop",
                  "BackendStartup", "InitPostgres", "AllocSetContextCreateInternal",
                  "MemoryContextAlloc", "palloc", "GetSnapshotData", "PortalRun"]
        for what, pid in (("postmaster", pm.pid), ("backend", bk)):
            snap = snapshot(pid)
            check(snap.returncode == 0, f"snapshot of the {what} failed: {snap.stderr}")
            named = report_names(snap.stdout, wanted)
            print(f"    {what} {pid}: {snap.stderr.strip()}; names {named}")
            check(len(named) >= 2, f"{what} report names no postgres functions:\n{snap.stdout}")
        pm.send_signal(signal.SIGINT)
        pm.wait(timeout=60)
        with open(os.path.join(s.dir, "pg.log")) as f:
            text = f.read()
        check("database system is shut down" in text, f"postgres did not shut down cleanly:\n"
              f"{text[-800:]}")


def test_nginx():
    """nginx (daemon off, a master and one worker, a temporary prefix, a
    random port) under memx: snapshot of the master and of the worker each
    give a report naming nginx functions (its exported ngx_* ones); Debian's
    nginx is stripped, and the report says so and how to get symbols."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)
    if not nginx:
        raise Skip("nginx is not installed (apt-get install nginx-light)")
    with Scratch("nginx") as s:
        port = free_port()
        for d in ("logs", "tmp"):
            os.makedirs(os.path.join(s.dir, d))
        conf = os.path.join(s.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off;
master_process on;
worker_processes 1;
user nobody nogroup;
pid {s.dir}/nginx.pid;
error_log {s.dir}/logs/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {s.dir}/tmp; proxy_temp_path {s.dir}/tmp;
    fastcgi_temp_path {s.dir}/tmp; uwsgi_temp_path {s.dir}/tmp; scgi_temp_path {s.dir}/tmp;
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello\\n"; }} }}
}}
""")
        env = profile_env(os.path.join(s.dir, "ng"), MEMX_PROFILE_AT_EXIT=0,
                          MEMX_PROFILE_SAMPLE="4K")
        master = s.start([nginx, "-p", s.dir, "-c", conf], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def serving():
            return answers(port, b"GET / HTTP/1.0\r\n\r\n", b"hello")
        wait_until(serving, 30, "nginx to answer")
        for _ in range(200):
            serving()
        out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(master.pid)],
                             capture_output=True, text=True).stdout
        workers = [int(ln.split()[0]) for ln in out.splitlines() if "worker" in ln]
        check(workers, f"no nginx worker: {out}")
        for what, pid in (("master", master.pid), ("worker", workers[0])):
            snap = snapshot(pid)
            check(snap.returncode == 0, f"snapshot of the nginx {what} failed: {snap.stderr}")
            print(f"    nginx {what} {pid}: {snap.stderr.strip()}")
            check("ngx_" in snap.stdout, f"{what} report names no nginx function:\n{snap.stdout}")
            check("no symbols" in snap.stdout and "--symbols" in snap.stdout,
                  f"{what} report does not say nginx has no symbols:\n{snap.stdout}")
        check(master.poll() is None, "nginx master died")


def test_redis():
    """redis-server (random port, no persistence) under memx: snapshot finds
    its settings although Redis rewrites its process title."""
    redis = shutil.which("redis-server")
    if not redis:
        raise Skip("redis-server is not installed (apt-get install redis-server)")
    with Scratch("redis") as s:
        port = free_port()
        env = profile_env(os.path.join(s.dir, "rd"), MEMX_PROFILE_AT_EXIT=0)
        server = s.start([redis, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", s.dir], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        wait_until(lambda: answers(port, b"PING\r\n", b"PONG"), 30, "redis to answer")
        snap = snapshot(server.pid)
        check(snap.returncode == 0, f"snapshot of redis failed: {snap.stderr}")
        print(f"    redis {server.pid}: {snap.stderr.strip()}")
        check(server.poll() is None, "redis died")


TESTS = [
    test_setpriv_launcher,
    test_program_drops_privileges,
    test_snapshot_after_proctitle,
    test_snapshot_says_when_the_signal_was_taken_over,
    test_python_fork_warning,
    test_postgresql,
    test_nginx,
    test_redis,
]


def main():
    global LIB
    args = sys.argv[1:]
    LIB = os.path.abspath(args.pop(0)) if args and args[0].endswith(".so") else \
        os.path.join(ROOT, "target", "release", "libmemx.so")
    if os.geteuid() != 0:
        print("SKIP service tests: they need root (to drop privileges and start servers "
              "as their users)")
        return 0
    build()
    failed = run_tests(TESTS, args, skip=(Skip,))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
