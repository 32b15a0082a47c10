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
    pub command: Vec<OsString>,
}

/// libmemx.so: `$MEMX_LIB`, beside this binary, in `target/release` of the
/// tree this binary was built in (`<exe dir>/../../target/release`), or in
/// `<exe dir>/../lib` (an installed layout).
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
    for c in &candidates {
        if c.is_file() {
            return Ok(c.canonicalize().unwrap_or_else(|_| c.clone()));
        }
    }
    Err(format!(
        "cannot find libmemx.so (looked beside {} and in ../../target/release, ../lib); build it with `make build` or set MEMX_LIB",
        exe.display()
    ))
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

/// `SIGUSR2`, `usr2`, `12` → signal number (0 = none).
pub fn parse_signal(s: &str) -> Option<i32> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i32>() {
        return (0..=64).contains(&n).then_some(n);
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
    if let Some(off) = name.strip_prefix("RTMIN+") {
        return off.parse::<i32>().ok().map(|o| libc::SIGRTMIN() + o);
    }
    None
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
            format!("--signal {s}: expected a signal name (SIGUSR2, USR1) or number")
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
    let others = if pids.len() > 1 {
        format!(
            " (and {} more from {} child processes)",
            new.len() - main.len(),
            pids.len() - 1
        )
    } else {
        String::new()
    };
    eprintln!(
        "memx: {status_text}; {} dump{} in {dir}/: {range}{others}",
        main.len().max(1),
        if main.len() == 1 { "" } else { "s" }
    );
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

/// Symbolised, charged to Python lines when there are Python frames.
fn python_view(d: Dump) -> SymProfile {
    let mut p = SymProfile::new(d);
    if p.has_python() {
        p.python_view();
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

/// Sends `pid` its dump signal and waits for the new dump.
pub fn snapshot(pid: u32, timeout: Duration) -> Result<Snapshot, String> {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("no process {pid}"));
    }
    let maps = read_proc(pid, "maps")?;
    let maps = String::from_utf8_lossy(&maps);
    if !maps
        .lines()
        .any(|l| crate::symbolize::basename(l.trim_end()).starts_with("libmemx"))
    {
        return Err(format!(
            "process {pid} is not running memx (libmemx.so is not in /proc/{pid}/maps); start it with `memx run`"
        ));
    }
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
                "process {pid} runs memx but profiling is off (MEMX_PROFILE is not set in its environment)"
            ))
        }
    };
    let sig = match &signal {
        None => libc::SIGUSR2,
        Some(s) => parse_signal(s).unwrap_or(libc::SIGUSR2),
    };
    if sig == 0 {
        return Err(format!(
            "process {pid} has its dump signal turned off (MEMX_PROFILE_SIGNAL=0)"
        ));
    }
    let mut prefix = PathBuf::from(prefix);
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
    loop {
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
            return Err(match last_err {
                Some(e) => format!("the new dump of process {pid} stayed incomplete: {e}"),
                None => format!(
                    "process {pid} wrote no new dump {}.{pid}.*.heap within {} s of signal {sig}",
                    prefix.display(),
                    timeout.as_secs_f64()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
