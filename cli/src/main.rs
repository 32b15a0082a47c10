//! `memx`: run programs under libmemx.so and read its heap profiles.

mod attach;
mod dump;
mod flame;
mod guard_report;
mod jupyter;
mod options;
mod plot;
mod pprof;
mod profile;
mod report;
mod run;
mod symbolize;
mod units;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use options::Cmd;
use profile::{By, SymProfile};

/// Options shared by report, diff, flamegraph, pprof, plot and snapshot.
struct Common {
    report: report::Options,
    python: bool,
    /// `--python-only` (Some(true)) or `--native-only` (Some(false)).
    only: Option<bool>,
    /// `--native`: no Python-first view.
    native: bool,
    /// `--by` was given (else a Python-first table goes by line).
    by_given: bool,
    /// Python-first keeps non-interpreter native leaves (flame graphs).
    leaves: bool,
    /// `--merge`: the operands are several dumps read as one.
    merge: bool,
    output: Option<PathBuf>,
    folded: bool,
    timeout: Duration,
    positional: Vec<OsString>,
}

/// Turns the parsed options into settings; `options::parse` has already
/// checked that `cmd` takes each of them.
fn common(cmd: Cmd, args: Vec<OsString>) -> Result<Common, String> {
    let parsed = options::parse(cmd, args)?;
    let mut c = Common {
        report: report::Options::default(),
        python: false,
        only: None,
        native: false,
        by_given: false,
        leaves: cmd == Cmd::Flamegraph,
        merge: false,
        output: None,
        folded: false,
        timeout: Duration::from_secs(10),
        positional: parsed.operands,
    };
    for (name, value) in parsed.opts {
        let v = value.unwrap_or_default();
        match name {
            "--top" => {
                c.report.top = v
                    .parse()
                    .map_err(|_| format!("--top {v}: expected a whole number"))?;
            }
            "--inuse" => c.report.alloc = false,
            "--alloc" => c.report.alloc = true,
            "--cum" => c.report.sort_cum = true,
            "--folded" => c.folded = true,
            "--python" => c.python = true,
            "--python-only" => c.only = Some(true),
            "--native-only" => c.only = Some(false),
            "--native" => c.native = true,
            "--merge" => c.merge = true,
            "--by" => {
                c.by_given = true;
                c.report.by = By::parse(&v)
                    .ok_or_else(|| format!("--by {v}: expected function, line or stack"))?;
            }
            "--output" => c.output = Some(PathBuf::from(v)),
            "--symbols" => {
                let dir = PathBuf::from(&v);
                if !dir.is_dir() {
                    return Err(format!("--symbols {v}: not a directory"));
                }
                symbolize::add_debug_dir(dir);
            }
            "--timeout" => {
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && s.is_finite())
                    .ok_or_else(|| format!("--timeout {v}: expected seconds"))?;
                c.timeout = Duration::from_secs_f64(secs);
            }
            other => unreachable!("{other} is in the table but not handled"),
        }
    }
    Ok(c)
}

/// Loads and symbolises a dump, in the views the options ask for.
fn load(path: &Path, c: &Common) -> Result<SymProfile, String> {
    Ok(view(SymProfile::load(path)?, path, c))
}

/// The DUMP operand, or with `--merge` every operand merged into one
/// profile (each symbolised with its own maps); (path for messages and
/// default output names, profile).
fn load_operands(c: &Common) -> Result<(PathBuf, SymProfile), String> {
    if !c.merge {
        let path = one_path(c, "DUMP")?;
        let p = load(&path, c)?;
        return Ok((path, p));
    }
    if c.positional.is_empty() {
        return Err("--merge needs the dumps to merge (see memx --help)".into());
    }
    let (kept, dropped) = newest_per_process(&c.positional);
    if !dropped.is_empty() {
        let names: Vec<String> = dropped.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "memx: note: merging each process's newest dump only; left out (older dumps or peak profiles of the same processes): {}",
            names.join(" ")
        );
    }
    let parts = kept
        .iter()
        .map(|p| SymProfile::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let merged = SymProfile::merge(parts).expect("at least one dump");
    let path = PathBuf::from(&c.positional[0]);
    let shown = merged.dump.path.clone();
    Ok((path, view(merged, &shown, c)))
}

/// Of several dumps of one process (`<prefix>.<pid>.<seq>.heap`, and its
/// `<prefix>.<pid>.peak.heap`), only the newest numbered one is merged:
/// each is its process's whole heap at one moment, so two of them would
/// count the same objects twice. A peak profile counts only when it is the
/// process's only dump given; a file not named that way is always kept.
/// Returns (kept, left out), each in the order given.
fn newest_per_process(operands: &[OsString]) -> (Vec<PathBuf>, Vec<PathBuf>) {
    // (pid, rank): rank = seq + 1 for a numbered dump, 0 for a peak profile.
    let identity = |p: &Path| -> Option<(String, u64)> {
        let name = p.file_name()?.to_str()?;
        let mut parts = name.rsplit('.');
        if parts.next()? != "heap" {
            return None;
        }
        let seq = parts.next()?;
        let pid = parts.next()?.parse::<u32>().ok()?;
        let prefix = p.with_file_name(parts.rev().collect::<Vec<_>>().join("."));
        let rank = match seq {
            "peak" => 0,
            s => s.parse::<u64>().ok()? + 1,
        };
        Some((format!("{}.{pid}", prefix.display()), rank))
    };
    let paths: Vec<PathBuf> = operands.iter().map(PathBuf::from).collect();
    let mut best: std::collections::HashMap<String, u64> = Default::default();
    for p in &paths {
        if let Some((id, rank)) = identity(p) {
            let b = best.entry(id).or_insert(rank);
            *b = (*b).max(rank);
        }
    }
    paths
        .into_iter()
        .partition(|p| identity(p).is_none_or(|(id, rank)| best[&id] == rank))
}

/// The Python view with `--python`, then `--python-only`/`--native-only`;
/// without any of them (nor `--native`), Python-first (see
/// `SymProfile::python_first`; a flame graph keeps the native allocation
/// sites as leaves). The same for a dump read from a file and one
/// `snapshot` just waited for.
fn view(mut p: SymProfile, path: &Path, c: &Common) -> SymProfile {
    if c.python {
        if !p.has_python() {
            eprintln!(
                "memx: note: {} has no Python frames (run Python with `memx run` on a memx that records them)",
                path.display()
            );
        }
        p.python_view();
    }
    if let Some(python) = c.only {
        p.only(python);
    }
    if python_first(c) && p.has_python() {
        p.python_first(c.leaves);
    }
    p
}

/// Whether no option chose a view: Python-first applies.
fn python_first(c: &Common) -> bool {
    !c.native && !c.python && c.only.is_none()
}

/// A Python-first table goes by line unless `--by` says otherwise: a
/// Python user reads lines.
fn table_by(c: &mut Common, profiles: &[&SymProfile]) {
    if python_first(c) && !c.by_given && profiles.iter().any(|p| p.has_python()) {
        c.report.by = By::Line;
    }
}

fn one_path(c: &Common, what: &str) -> Result<PathBuf, String> {
    match c.positional.as_slice() {
        [p] => Ok(PathBuf::from(p)),
        [] => Err(format!("missing {what} (see memx --help)")),
        _ => Err(format!("expected one {what}, got {}", c.positional.len())),
    }
}

fn write_output(path: &Path, data: &[u8]) -> Result<(), String> {
    if path.as_os_str() == "-" {
        use std::io::Write;
        return std::io::stdout()
            .write_all(data)
            .map_err(|e| format!("writing to stdout: {e}"));
    }
    std::fs::write(path, data).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("memx: wrote {}", path.display());
    Ok(())
}

fn default_output(input: &Path, ext: &str) -> PathBuf {
    let mut s = input.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

fn parse_run(args: Vec<OsString>) -> Result<run::RunOpts, String> {
    let parsed = options::parse(Cmd::Run, args)?;
    let mut o = run::RunOpts {
        command: parsed.operands,
        ..Default::default()
    };
    for (name, value) in parsed.opts {
        match name {
            "--profile" => o.profile = value,
            "--sample" => o.sample = value,
            "--signal" => o.signal = value,
            "--limit" => o.limit = value,
            "--stats-interval" => o.stats_interval = value,
            "--python-all" => o.python_all = true,
            "--native-stacks" => o.native_stacks = true,
            other => unreachable!("{other} is in the table but not handled"),
        }
    }
    Ok(o)
}

fn main_inner() -> Result<i32, String> {
    let mut argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    if argv.is_empty() {
        eprint!("{}", options::usage());
        return Ok(2);
    }
    let name = argv.remove(0).to_string_lossy().into_owned();
    match name.as_str() {
        "-h" | "--help" | "help" => {
            print!("{}", options::usage());
            return Ok(0);
        }
        "-V" | "--version" => {
            println!("memx {}", env!("CARGO_PKG_VERSION"));
            return Ok(0);
        }
        _ => {}
    }
    let cmd = options::command(&name)
        .ok_or_else(|| format!("unknown command `{name}` (see memx --help)"))?
        .cmd;
    // `run`'s own `--help` comes before its command; after it, the
    // command's (`memx run -- ls --help`).
    let help_args = if cmd == Cmd::Run {
        let first_operand = argv
            .iter()
            .position(|a| a == "--" || !a.to_string_lossy().starts_with('-'));
        &argv[..first_operand.unwrap_or(argv.len())]
    } else {
        &argv[..]
    };
    if options::wants_help(help_args) {
        print!("{}", options::command_usage(cmd));
        return Ok(0);
    }
    match cmd {
        Cmd::Run => run::run(parse_run(argv)?),
        Cmd::Report => {
            let mut c = common(cmd, argv)?;
            let (_, p) = load_operands(&c)?;
            table_by(&mut c, &[&p]);
            print!("{}", report::report(&p, &c.report));
            Ok(0)
        }
        Cmd::Diff => {
            let mut c = common(cmd, argv)?;
            let [old, new] = c.positional.as_slice() else {
                return Err("diff needs two dumps: memx diff OLD NEW".into());
            };
            let old = load(Path::new(old), &c)?;
            let new = load(Path::new(new), &c)?;
            table_by(&mut c, &[&old, &new]);
            if let (Some(a), Some(b)) = (old.dump.pid, new.dump.pid) {
                if a != b {
                    eprintln!("memx: note: the dumps come from different processes ({a} and {b}); sites are matched by name");
                }
            }
            print!("{}", report::diff(&old, &new, &c.report));
            Ok(0)
        }
        Cmd::Flamegraph => {
            let c = common(cmd, argv)?;
            let (input, p) = load_operands(&c)?;
            let by = if c.report.by == By::Stack {
                By::Function
            } else {
                c.report.by
            };
            if c.folded {
                let mut text = flame::folded(&p, c.report.alloc, by).join("\n");
                text.push('\n');
                let out = c.output.unwrap_or_else(|| PathBuf::from("-"));
                write_output(&out, text.as_bytes())?;
            } else {
                let svg = flame::svg(&p, c.report.alloc, by)?;
                let out = c.output.unwrap_or_else(|| default_output(&input, ".svg"));
                write_output(&out, &svg)?;
            }
            Ok(0)
        }
        Cmd::Pprof => {
            let c = common(cmd, argv)?;
            let input = one_path(&c, "DUMP")?;
            let d = dump::Dump::load_for_message(&input)?;
            let data = pprof::gzip(&d)?;
            let out = c.output.unwrap_or_else(|| default_output(&input, ".pb.gz"));
            write_output(&out, &data)?;
            Ok(0)
        }
        Cmd::Plot => {
            let c = common(cmd, argv)?;
            let input = one_path(&c, "STATS")?;
            let st = plot::load(&input)?;
            let title = format!(
                "memx: memory over time{}",
                st.pid.map(|p| format!(" — pid {p}")).unwrap_or_default()
            );
            let svg = plot::svg(&st, &title).map_err(|e| format!("{}: {e}", input.display()))?;
            let out = c.output.unwrap_or_else(|| default_output(&input, ".svg"));
            write_output(&out, svg.as_bytes())?;
            Ok(0)
        }
        Cmd::Jupyter => {
            // Checked against the table here; acted on by the Python package.
            options::parse(cmd, argv.clone())?;
            jupyter::forward(argv)
        }
        Cmd::Snapshot => {
            let mut c = common(cmd, argv)?;
            let pid_s = one_path(&c, "PID")?;
            let pid_s = pid_s.to_string_lossy();
            let pid: u32 = pid_s
                .parse()
                .map_err(|_| format!("snapshot: `{pid_s}` is not a process id"))?;
            let snap = run::snapshot(pid, c.timeout)?;
            eprintln!("memx: new dump {}", snap.path.display());
            let p = view(SymProfile::new(snap.dump), &snap.path, &c);
            table_by(&mut c, &[&p]);
            print!("{}", report::report(&p, &c.report));
            Ok(0)
        }
        Cmd::Symbolize => {
            let c = common(cmd, argv)?;
            let input = match c.positional.as_slice() {
                [] => PathBuf::from("-"),
                _ => one_path(&c, "REPORT")?,
            };
            let text = if input.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| format!("reading standard input: {e}"))?
            } else {
                std::fs::read_to_string(&input)
                    .map_err(|e| format!("cannot read {}: {e}", input.display()))?
            };
            let out = c.output.unwrap_or_else(|| PathBuf::from("-"));
            write_output(&out, guard_report::symbolize(&text).as_bytes())?;
            Ok(0)
        }
    }
}

fn main() -> ExitCode {
    // A closed pipe (`memx report x | head`) ends us quietly.
    // SAFETY: restores the default disposition; no handler code runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    match main_inner() {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("memx: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_takes_each_process_newest_dump_only() {
        let ops: Vec<OsString> = [
            "d/p.10.0001.heap",
            "d/p.10.0002.heap",
            "d/p.10.peak.heap",
            "d/p.11.peak.heap",
            "d/q.10.0001.heap",
            "other.heap",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let (kept, dropped) = newest_per_process(&ops);
        let names = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(&kept),
            [
                "d/p.10.0002.heap",
                "d/p.11.peak.heap",
                "d/q.10.0001.heap",
                "other.heap"
            ]
        );
        assert_eq!(names(&dropped), ["d/p.10.0001.heap", "d/p.10.peak.heap"]);
    }
}
