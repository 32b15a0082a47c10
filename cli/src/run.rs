//! `memx run` (a command under libmemx.so with profiling on) and
//! `memx snapshot` (ask a running process for a dump).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::dump::{pid_seq_from_name, Dump, DumpError};
use crate::profile::SymProfile;

#[derive(Default, Debug)]
pub struct RunOpts {
    pub profile: Option<String>,
    pub sample: Option<String>,
    pub signal: Option<String>,
    pub limit: Option<String>,
    pub stats_interval: Option<String>,
    pub python_all: bool,
    pub native_stacks: bool,
    pub command: Vec<OsString>,
}

/// libmemx.so: `$MEMX_LIB`, beside this binary, in `target/release` of the
/// tree this binary was built in (`<exe dir>/../../target/release`), in
/// `<exe dir>/../lib` (an installed layout), or in the Python package this
/// binary was installed with (`pip install memx`: the binary is a script of
/// the environment, `<exe dir>/../lib/python3.N/site-packages/memx/`).
pub fn find_lib() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("MEMX_LIB") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(absolute(&p))
        } else {
            Err(format!("MEMX_LIB={}: no such file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own path: {e}"))?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [
        dir.join("libmemx.so"),
        dir.join("../../target/release/libmemx.so"),
        dir.join("../lib/libmemx.so"),
    ];
    for c in candidates.iter().chain(packaged_lib(dir, &exe).as_ref()) {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    Err(format!(
        "cannot find libmemx.so (looked beside {} and in ../../target/release, ../lib, \
         ../lib/python3.*/site-packages/memx); build it with `make build` or set MEMX_LIB",
        exe.display()
    ))
}

/// The Python package's libmemx.so in the environment whose script `exe`
/// is (`<bin>/../lib{,64}/python3.*/{site,dist}-packages/memx/`). With one
/// for each of several Pythons, the one installed nearest in time to `exe`
/// (each install rewrites the script).
fn packaged_lib(bin: &Path, exe: &Path) -> Option<PathBuf> {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let exe_time = mtime(exe)?;
    let mut found = Vec::new();
    for lib in ["../lib", "../lib64"] {
        let Ok(entries) = std::fs::read_dir(bin.join(lib)) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with("python3") {
                continue;
            }
            for packages in ["site-packages", "dist-packages"] {
                let p = e.path().join(packages).join("memx/libmemx.so");
                if let Some(t) = mtime(&p) {
                    let gap = match exe_time.duration_since(t) {
                        Ok(d) => d,
                        Err(e) => e.duration(),
                    };
                    found.push((gap, p));
                }
            }
        }
    }
    found.into_iter().min().map(|(_, p)| p)
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// memx's default dump signal, SIGRTMIN+10 (why: src/config.rs).
pub fn default_signal() -> i32 {
    libc::SIGRTMIN() + 10
}

/// `SIGUSR2`, `usr2`, `12`, `SIGRTMIN+10`, `RTMIN+3`, `RTMAX-2` → signal
/// number (0 = none), as libmemx.so reads MEMX_PROFILE_SIGNAL.
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    let glibc_reserved = 32..libc::SIGRTMIN();
    if let Ok(n) = s.parse::<i32>() {
        return ((0..=64).contains(&n) && !glibc_reserved.contains(&n)).then_some(n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let table = [
        ("HUP", libc::SIGHUP),
        ("INT", libc::SIGINT),
        ("QUIT", libc::SIGQUIT),
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("PIPE", libc::SIGPIPE),
        ("ALRM", libc::SIGALRM),
        ("TERM", libc::SIGTERM),
        ("CHLD", libc::SIGCHLD),
        ("CONT", libc::SIGCONT),
        ("TSTP", libc::SIGTSTP),
        ("TTIN", libc::SIGTTIN),
        ("TTOU", libc::SIGTTOU),
        ("URG", libc::SIGURG),
        ("XCPU", libc::SIGXCPU),
        ("XFSZ", libc::SIGXFSZ),
        ("VTALRM", libc::SIGVTALRM),
        ("PROF", libc::SIGPROF),
        ("WINCH", libc::SIGWINCH),
        ("IO", libc::SIGIO),
        ("PWR", libc::SIGPWR),
        ("SYS", libc::SIGSYS),
    ];
    if let Some(&(_, n)) = table.iter().find(|(k, _)| *k == name) {
        return Some(n);
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let n = if let Some(rest) = name.strip_prefix("RTMIN") {
        match rest.strip_prefix('+') {
            None if rest.is_empty() => min,
            Some(off) if off.bytes().all(|c| c.is_ascii_digit()) => {
                min + off.parse::<i32>().ok()?
            }
            _ => return None,
        }
    } else if let Some(rest) = name.strip_prefix("RTMAX") {
        match rest.strip_prefix('-') {
            None if rest.is_empty() => max,
            Some(off) if off.bytes().all(|c| c.is_ascii_digit()) => {
                max - off.parse::<i32>().ok()?
            }
            _ => return None,
        }
    } else {
        return None;
    };
    (min..=max).contains(&n).then_some(n)
}

/// `44` → `SIGRTMIN+10`, `12` → `SIGUSR2`: how messages name a signal.
pub fn signal_name(sig: i32) -> String {
    let min = libc::SIGRTMIN();
    if (min..=libc::SIGRTMAX()).contains(&sig) {
        return format!("SIGRTMIN+{}", sig - min);
    }
    for name in [
        "HUP", "INT", "QUIT", "USR1", "USR2", "PIPE", "ALRM", "TERM", "PROF", "WINCH", "IO",
    ] {
        if parse_signal(name) == Some(sig) {
            return format!("SIG{name}");
        }
    }
    format!("signal {sig}")
}

/// Dump files `<prefix>.<pid>.<seq>.heap` that exist now: (path, pid, seq).
pub fn list_dumps(prefix: &Path) -> Vec<(PathBuf, u32, u32)> {
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base = prefix
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&base) else {
            continue;
        };
        // rest = ".<pid>.<seq>.heap": the prefix must end right there.
        if !rest.starts_with('.') || rest[1..].split('.').count() != 3 {
            continue;
        }
        let path = dir.join(&name);
        if let (Some(pid), Some(seq)) = pid_seq_from_name(&path) {
            out.push((path, pid, seq));
        }
    }
    out.sort_by_key(|a| (a.1, a.2));
    out
}

fn default_prefix(command: &OsStr) -> PathBuf {
    let name = Path::new(command)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "prog".into());
    absolute(Path::new("memx-prof")).join(name)
}

pub fn run(o: RunOpts) -> Result<i32, String> {
    if o.command.is_empty() {
        return Err("run: no command given (memx run [OPTIONS] -- COMMAND ARGS...)".into());
    }
    let lib = find_lib()?;
    let prefix = match (&o.profile, std::env::var_os("MEMX_PROFILE")) {
        (Some(p), _) => absolute(Path::new(p)),
        (None, Some(p)) if !p.is_empty() => absolute(Path::new(&p)),
        _ => default_prefix(&o.command[0]),
    };
    if prefix.as_os_str().len() > 239 {
        return Err(format!(
            "profile prefix {} is longer than 239 bytes; pass a shorter --profile",
            prefix.display()
        ));
    }
    if let Some(s) = &o.sample {
        crate::units::parse_size(s)
            .ok_or_else(|| format!("--sample {s}: expected a size such as 4096, 512K or 1M"))?;
    }
    if let Some(s) = &o.limit {
        crate::units::parse_size(s)
            .ok_or_else(|| format!("--limit {s}: expected a size such as 512M or 2G"))?;
    }
    if let Some(s) = &o.signal {
        parse_signal(s).ok_or_else(|| {
            format!(
                "--signal {s}: expected a signal name (SIGRTMIN+10, RTMIN+3, SIGUSR2) or number"
            )
        })?;
    }
    if let Some(s) = &o.stats_interval {
        s.parse::<u64>()
            .map_err(|_| format!("--stats-interval {s}: expected whole milliseconds"))?;
    }

    if let Some(dir) = prefix.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let before: HashSet<PathBuf> = list_dumps(&prefix).into_iter().map(|d| d.0).collect();
    let mut cmd = Command::new(&o.command[0]);
    cmd.args(&o.command[1..]);
    let mut preload = lib.clone().into_os_string();
    if let Some(old) = std::env::var_os("LD_PRELOAD") {
        if !old.is_empty() {
            preload.push(":");
            preload.push(old);
        }
    }
    cmd.env("LD_PRELOAD", preload);
    cmd.env("MEMX_PROFILE", &prefix);
    let set = |cmd: &mut Command, k: &str, v: &Option<String>| {
        if let Some(v) = v {
            cmd.env(k, v);
        }
    };
    set(&mut cmd, "MEMX_PROFILE_SAMPLE", &o.sample);
    set(&mut cmd, "MEMX_PROFILE_SIGNAL", &o.signal);
    set(&mut cmd, "MEMX_HEAP_LIMIT", &o.limit);
    set(&mut cmd, "MEMX_STATS_INTERVAL", &o.stats_interval);
    if o.python_all {
        cmd.env("PYTHONMALLOC", "malloc");
    }
    if o.native_stacks {
        cmd.env("MEMX_PROFILE_NATIVE", "1");
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", Path::new(&o.command[0]).display()))?;
    let pid = child.id();
    // Like time(1): a ^C goes to the child; we stay to report.
    // SAFETY: installing SIG_IGN has no handler code to run; restored below.
    let (old_int, old_quit) = unsafe {
        (
            libc::signal(libc::SIGINT, libc::SIG_IGN),
            libc::signal(libc::SIGQUIT, libc::SIG_IGN),
        )
    };
    let status = child.wait();
    // SAFETY: restores the dispositions saved above.
    unsafe {
        libc::signal(libc::SIGINT, old_int);
        libc::signal(libc::SIGQUIT, old_quit);
    }
    let status = status.map_err(|e| format!("waiting for the command: {e}"))?;
    let code = match status.code() {
        Some(c) => c,
        None => {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        }
    };

    let new: Vec<(PathBuf, u32, u32)> = list_dumps(&prefix)
        .into_iter()
        .filter(|d| !before.contains(&d.0))
        .collect();
    let dir = prefix
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string();
    let status_text = match status.code() {
        Some(c) => format!("exit status {c}"),
        None => format!("killed by signal {}", code - 128),
    };
    if new.is_empty() {
        eprintln!(
            "memx: {status_text}; no heap dump was written under {} (a static or setuid program cannot load libmemx.so)",
            prefix.display()
        );
        return Ok(code);
    }
    let main: Vec<_> = new.iter().filter(|d| d.1 == pid).collect();
    let pids: HashSet<u32> = new.iter().map(|d| d.1).collect();
    let last = main.last().copied().unwrap_or_else(|| new.last().unwrap());
    let name = |p: &PathBuf| crate::symbolize::basename(&p.to_string_lossy()).to_string();
    let range = if main.len() > 1 {
        format!("{} … {}", name(&main[0].0), name(&last.0))
    } else {
        name(&last.0)
    };
    if pids.len() > 1 {
        eprintln!(
            "memx: {status_text}; {} dumps from {} processes in {dir}/:",
            new.len(),
            pids.len()
        );
        for l in process_lines(&new, pid) {
            eprintln!("memx:   {l}");
        }
        eprintln!(
            "memx: all of them as one: memx report --merge {}.*.heap",
            prefix.display()
        );
    } else {
        eprintln!(
            "memx: {status_text}; {} dump{} in {dir}/: {range}",
            main.len().max(1),
            if main.len() == 1 { "" } else { "s" }
        );
    }
    match Dump::load(&last.0) {
        Ok(d) => {
            // The dump of this process with the most memory in use (only
            // parsed; symbolised if it is not the last one).
            // libmemx's peak profile of the process competes too.
            let peak = PathBuf::from(format!("{}.{}.peak.heap", prefix.display(), last.1));
            let largest = main
                .iter()
                .filter(|m| m.0 != last.0)
                .map(|m| m.0.clone())
                .chain(peak.is_file().then_some(peak))
                .filter_map(|p| Dump::load(&p).ok())
                .max_by(|a, b| a.total().inuse_bytes.total_cmp(&b.total().inuse_bytes))
                .filter(|big| big.total().inuse_bytes > d.total().inuse_bytes)
                .map(python_view);
            let p = python_view(d);
            for l in crate::report::summary(&p, largest.as_ref()) {
                eprintln!("memx: {l}");
            }
        }
        Err(e) => eprintln!("memx: the last dump cannot be read: {e}"),
    }
    let stats = PathBuf::from(format!("{}.{}.stats", prefix.display(), last.1));
    let plot = if stats.is_file() {
        format!("; memx plot {}", stats.display())
    } else {
        String::new()
    };
    eprintln!(
        "memx: next: memx report {} (or diff, flamegraph, pprof){plot}",
        last.0.display()
    );
    Ok(code)
}

/// One line per process that wrote dumps (the command's first, then by
/// pid): who it is (its parent and command line, from the PROCESS section of
/// its last dump) and its dump files.
fn process_lines(dumps: &[(PathBuf, u32, u32)], main: u32) -> Vec<String> {
    let mut pids: Vec<u32> = dumps.iter().map(|d| d.1).collect();
    pids.sort_by_key(|&p| (p != main, p));
    pids.dedup();
    let name = |p: &PathBuf| crate::symbolize::basename(&p.to_string_lossy()).to_string();
    pids.iter()
        .map(|&pid| {
            let mine: Vec<&PathBuf> = dumps.iter().filter(|d| d.1 == pid).map(|d| &d.0).collect();
            let files = match mine.as_slice() {
                [one] => name(one),
                [first, .., last] => {
                    format!("{} dumps {} … {}", mine.len(), name(first), name(last))
                }
                [] => String::new(),
            };
            let who = match Dump::load(mine[mine.len() - 1])
                .ok()
                .and_then(|d| d.process)
            {
                Some(p) => {
                    let parent = match p.ppid {
                        Some(pp) => format!(", parent {pp}"),
                        None => String::new(),
                    };
                    // The program by its file name: the arguments tell
                    // a pool's workers from their parent.
                    let (prog, args) = p.cmdline.split_once(' ').unwrap_or((&p.cmdline, ""));
                    let full = format!("{} {args}", crate::symbolize::basename(prog));
                    let mut cmd: String = full.trim_end().chars().take(90).collect();
                    if full.trim_end().chars().count() > 90 {
                        cmd.push('…');
                    }
                    format!("{parent}: {cmd}")
                }
                None => String::new(),
            };
            let role = if pid == main { " (the command)" } else { "" };
            format!("pid {pid}{role}{who} — {files}")
        })
        .collect()
}

/// Symbolised, Python-first (charged to Python lines) when there are
/// Python frames.
fn python_view(d: Dump) -> SymProfile {
    let mut p = SymProfile::new(d);
    if p.has_python() {
        p.python_first(false);
    }
    p
}

fn read_proc(pid: u32, what: &str) -> Result<Vec<u8>, String> {
    let p = format!("/proc/{pid}/{what}");
    std::fs::read(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("no process {pid}"),
        std::io::ErrorKind::PermissionDenied => format!(
            "cannot read {p}: permission denied (run memx snapshot as the process's user or root)"
        ),
        _ => format!("cannot read {p}: {e}"),
    })
}

pub struct Snapshot {
    pub path: PathBuf,
    pub dump: Dump,
}

/// A process's settings, as `snapshot` found them.
struct Target {
    prefix: PathBuf,
    signal: i32,
    /// What memx published (None: read from the environment instead).
    published: Option<crate::attach::Published>,
    lib: Option<crate::attach::Loaded>,
}

/// The settings of memx in `pid`: from its memory, else its environment.
fn find_target(pid: u32) -> Result<Target, String> {
    let maps = read_proc(pid, "maps")?;
    let maps = String::from_utf8_lossy(&maps);
    let lib = crate::attach::find(pid, &maps)?;
    let Some(lib) = lib else {
        return Err(format!(
            "process {pid} is not running memx (no library exporting memx_profile_info in /proc/{pid}/maps); start it with `memx run` or LD_PRELOAD=libmemx.so"
        ));
    };
    let why_not = match crate::attach::read(pid, &lib) {
        Ok(p) => {
            let Some(prefix) = p.prefix.clone() else {
                return Err(format!(
                    "process {pid} runs memx but profiling is off (it started without MEMX_PROFILE)"
                ));
            };
            return Ok(Target {
                prefix: PathBuf::from(prefix),
                signal: p.signal,
                published: Some(p),
                lib: Some(lib),
            });
        }
        Err(e) => e,
    };
    // No access to its memory: the environment, if it is still there.
    let env = read_proc(pid, "environ")?;
    let mut prefix = None;
    let mut signal = None;
    for var in env.split(|&b| b == 0) {
        let var = String::from_utf8_lossy(var);
        if let Some(v) = var.strip_prefix("MEMX_PROFILE=") {
            prefix = Some(v.to_string());
        } else if let Some(v) = var.strip_prefix("MEMX_PROFILE_SIGNAL=") {
            signal = Some(v.to_string());
        }
    }
    let prefix = match prefix {
        Some(p) if !p.is_empty() => p,
        _ => {
            return Err(format!(
                "cannot read memx's settings in process {pid}: /proc/{pid}/mem: {why_not} (run memx snapshot as the process's user or root; with Yama ptrace_scope 1, as root), and its environment holds no MEMX_PROFILE"
            ))
        }
    };
    let signal = match &signal {
        None => default_signal(),
        Some(s) => parse_signal(s).unwrap_or_else(default_signal),
    };
    Ok(Target {
        prefix: PathBuf::from(prefix),
        signal,
        published: None,
        lib: None,
    })
}

/// Sends `pid` its dump signal and waits for the new dump.
pub fn snapshot(pid: u32, timeout: Duration) -> Result<Snapshot, String> {
    use crate::attach::Disposition;
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("no process {pid}"));
    }
    let Target {
        mut prefix,
        signal: sig,
        published,
        lib,
    } = find_target(pid)?;
    let name = signal_name(sig);
    if sig == 0 {
        return Err(format!(
            "process {pid} has its dump signal turned off (MEMX_PROFILE_SIGNAL=0)"
        ));
    }
    match crate::attach::disposition(pid, sig)? {
        Disposition::Caught => {}
        Disposition::Default => {
            return Err(format!(
                "process {pid} has no handler for its dump signal {name} (the program reset it to the default action, which would end it); not sending it. Start it with MEMX_PROFILE_SIGNAL set to a signal it leaves alone"
            ))
        }
        Disposition::Ignored => {
            return Err(format!(
                "process {pid} ignores its dump signal {name} (the program set it to SIG_IGN after memx installed its handler); start it with MEMX_PROFILE_SIGNAL set to a signal it leaves alone"
            ))
        }
        Disposition::BlockedEverywhere => {
            return Err(format!(
                "every thread of process {pid} blocks its dump signal {name}: a request would wait until one unblocks it; start it with MEMX_PROFILE_SIGNAL set to a signal it leaves alone"
            ))
        }
    }
    if prefix.is_relative() {
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map_err(|e| format!("cannot read /proc/{pid}/cwd: {e}"))?;
        prefix = cwd.join(prefix);
    }
    let mine = |prefix: &Path| -> Vec<(PathBuf, u32)> {
        list_dumps(prefix)
            .into_iter()
            .filter(|d| d.1 == pid)
            .map(|d| (d.0, d.2))
            .collect()
    };
    let last_seq = mine(&prefix).iter().map(|d| d.1).max().unwrap_or(0);
    // SAFETY: kill(2) with a checked pid and signal number.
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        return Err(format!(
            "cannot signal process {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let start = Instant::now();
    let mut last_err = None;
    // memx's handler counts each signal it gets: if the count does not move,
    // the program's own handler got it.
    let handler_deadline = Duration::from_millis(1500).min(timeout);
    let mut handled = published.is_none();
    loop {
        if !handled {
            let now = lib.as_ref().and_then(|l| crate::attach::read(pid, l).ok());
            match (now, &published) {
                (Some(now), Some(before)) => {
                    if now.failed > before.failed && now.dumps == before.dumps {
                        return Err(format!(
                            "process {pid} got {name} but memx could not start its dump writer (clone failed: see the process's stderr; RLIMIT_NPROC or a seccomp filter?)"
                        ));
                    }
                    handled = now.handled > before.handled;
                }
                _ => handled = true,
            }
            if !handled && start.elapsed() >= handler_deadline {
                return Err(format!(
                    "process {pid} replaced memx's handler for {name}: its own handler took the signal, so no dump will come. Start it with MEMX_PROFILE_SIGNAL set to a signal it does not use (e.g. SIGRTMIN+11; `memx run --signal`)"
                ));
            }
        }
        let newer: Vec<(PathBuf, u32)> = mine(&prefix)
            .into_iter()
            .filter(|d| d.1 > last_seq)
            .collect();
        if let Some((path, _)) = newer.first() {
            match Dump::load(path) {
                Ok(dump) => {
                    return Ok(Snapshot {
                        path: path.clone(),
                        dump,
                    })
                }
                // Still being written.
                Err(e @ (DumpError::Truncated(_) | DumpError::Empty)) => last_err = Some(e),
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        if start.elapsed() >= timeout {
            let hint = if published.is_none() {
                " (memx's settings came from its environment, its memory was not readable: it may also have replaced memx's handler)"
            } else {
                ""
            };
            return Err(match last_err {
                Some(e) => format!("the new dump of process {pid} stayed incomplete: {e}"),
                None => format!(
                    "process {pid} wrote no new dump {}.{pid}.*.heap within {} s of {name}{hint}",
                    prefix.display(),
                    timeout.as_secs_f64()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn touch(p: &Path, t: SystemTime) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let f = std::fs::File::create(p).unwrap();
        f.set_modified(t).unwrap();
    }

    #[test]
    fn packaged_lib_is_the_one_installed_with_this_binary() {
        let root = std::env::temp_dir().join(format!("memx-packaged-lib-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let t0 = SystemTime::now() - Duration::from_secs(3600);
        let exe = root.join("bin/memx");
        let bin = root.join("bin");
        touch(&exe, t0);
        let found = || packaged_lib(&bin, &exe).map(|p| p.canonicalize().unwrap());
        assert_eq!(found(), None);
        let old = root.join("lib/python3.8/site-packages/memx/libmemx.so");
        touch(&old, t0 - Duration::from_secs(600));
        assert_eq!(found(), Some(old));
        // Debian's system Python, installed with the binary a second apart.
        let new = root.join("lib/python3.11/dist-packages/memx/libmemx.so");
        touch(&new, t0 + Duration::from_secs(1));
        touch(&root.join("lib/perl5/memx/libmemx.so"), t0);
        assert_eq!(found(), Some(new));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
