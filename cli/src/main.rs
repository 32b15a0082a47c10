//! `memx`: run programs under libmemx.so and read its heap profiles.

mod dump;
mod flame;
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

use profile::{By, SymProfile};

const USAGE: &str = "\
memx — heap profiles from libmemx.so

usage:
  memx run [--profile PREFIX] [--sample SIZE] [--signal SIG] [--limit SIZE]
           [--stats-interval MS] [--python-all] -- COMMAND [ARGS...]
      Run COMMAND with libmemx.so preloaded and heap profiling on; dumps go
      to PREFIX.<pid>.<seq>.heap (default ./memx-prof/<command>).
  memx report DUMP [--top N] [--inuse|--alloc] [--by function|line|stack] [--cum]
                   [--python] [--python-only|--native-only]
      The sites holding (or having allocated) the most memory. --python
      charges memory to the innermost Python frame instead of the
      interpreter's C functions; --python-only and --native-only keep only
      the Python or only the native frames of each stack.
  memx diff OLD NEW [--top N] [--inuse|--alloc] [--by function|line|stack] [--python]
                   [--python-only|--native-only]
      Growth per site between two dumps: the leak suspects.
  memx flamegraph DUMP [-o FILE.svg] [--inuse|--alloc] [--by function|line]
                       [--folded] [--python] [--python-only|--native-only]
      An interactive SVG flame graph (or folded stacks with --folded).
  memx pprof DUMP [-o FILE.pb.gz]
      The dump as gzip'd profile.proto, for `go tool pprof`, Pyroscope, Parca.
  memx plot STATS [-o FILE.svg]
      Memory over time from PREFIX.<pid>.stats (run with --stats-interval).
  memx snapshot PID [--timeout SECS] [report options]
      Ask a running memx process for a dump, wait for it and report it.
";

struct Args {
    items: Vec<OsString>,
    pos: usize,
}

impl Args {
    fn next(&mut self) -> Option<OsString> {
        let a = self.items.get(self.pos).cloned();
        self.pos += 1;
        a
    }

    fn value(&mut self, opt: &str) -> Result<String, String> {
        self.next()
            .map(|v| v.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{opt} needs a value"))
    }
}

/// Options shared by report, diff, flamegraph and snapshot.
struct Common {
    report: report::Options,
    python: bool,
    /// `--python-only` (Some(true)) or `--native-only` (Some(false)).
    only: Option<bool>,
    output: Option<PathBuf>,
    folded: bool,
    timeout: Duration,
    positional: Vec<OsString>,
}

fn parse_common(mut args: Args, allowed: &[&str]) -> Result<Common, String> {
    let mut c = Common {
        report: report::Options::default(),
        python: false,
        only: None,
        output: None,
        folded: false,
        timeout: Duration::from_secs(10),
        positional: Vec::new(),
    };
    while let Some(a) = args.next() {
        let s = a.to_string_lossy().into_owned();
        let (name, inline) = match s.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (s.clone(), None),
        };
        if !name.starts_with('-') || name == "-" {
            c.positional.push(a);
            continue;
        }
        if name == "--" {
            while let Some(a) = args.next() {
                c.positional.push(a);
            }
            break;
        }
        if !allowed.contains(&name.as_str()) {
            return Err(format!("unknown option {name} (see memx --help)"));
        }
        let val = |args: &mut Args| match &inline {
            Some(v) => Ok(v.clone()),
            None => args.value(&name),
        };
        match name.as_str() {
            "--top" => {
                let v = val(&mut args)?;
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
            "--by" => {
                let v = val(&mut args)?;
                c.report.by = By::parse(&v)
                    .ok_or_else(|| format!("--by {v}: expected function, line or stack"))?;
            }
            "-o" | "--output" => c.output = Some(PathBuf::from(val(&mut args)?)),
            "--timeout" => {
                let v = val(&mut args)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && s.is_finite())
                    .ok_or_else(|| format!("--timeout {v}: expected seconds"))?;
                c.timeout = Duration::from_secs_f64(secs);
            }
            _ => unreachable!(),
        }
    }
    Ok(c)
}

const REPORT_OPTS: &[&str] = &[
    "--top",
    "--inuse",
    "--alloc",
    "--by",
    "--cum",
    "--python",
    "--python-only",
    "--native-only",
];

/// Loads and symbolises a dump, in the Python view with `--python`.
fn load(path: &Path, c: &Common) -> Result<SymProfile, String> {
    let mut p = SymProfile::load(path)?;
    if c.python {
        if !p.has_python() {
            eprintln!(
                "memx: note: {} has no Python frames (run Python with `memx run --python-all` on a memx that records them)",
                path.display()
            );
        }
        p.python_view();
    }
    if let Some(python) = c.only {
        p.only(python);
    }
    Ok(p)
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

fn parse_run(mut args: Args) -> Result<run::RunOpts, String> {
    let mut o = run::RunOpts::default();
    while let Some(a) = args.next() {
        let s = a.to_string_lossy().into_owned();
        if s == "--" {
            break;
        }
        if !s.starts_with('-') {
            o.command.push(a);
            break;
        }
        let (name, inline) = match s.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (s.clone(), None),
        };
        let val = |args: &mut Args| match &inline {
            Some(v) => Ok(v.clone()),
            None => args.value(&name),
        };
        match name.as_str() {
            "--profile" => o.profile = Some(val(&mut args)?),
            "--sample" => o.sample = Some(val(&mut args)?),
            "--signal" => o.signal = Some(val(&mut args)?),
            "--limit" => o.limit = Some(val(&mut args)?),
            "--stats-interval" => o.stats_interval = Some(val(&mut args)?),
            "--python-all" => o.python_all = true,
            _ => return Err(format!("run: unknown option {name} (see memx --help)")),
        }
    }
    while let Some(a) = args.next() {
        o.command.push(a);
    }
    Ok(o)
}

fn main_inner() -> Result<i32, String> {
    let mut argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    if argv.is_empty() {
        eprint!("{USAGE}");
        return Ok(2);
    }
    let cmd = argv.remove(0).to_string_lossy().into_owned();
    let args = Args {
        items: argv,
        pos: 0,
    };
    match cmd.as_str() {
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(0)
        }
        "-V" | "--version" => {
            println!("memx {}", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
        "run" => run::run(parse_run(args)?),
        "report" => {
            let c = parse_common(args, REPORT_OPTS)?;
            let p = load(&one_path(&c, "DUMP")?, &c)?;
            print!("{}", report::report(&p, &c.report));
            Ok(0)
        }
        "diff" => {
            let c = parse_common(args, REPORT_OPTS)?;
            let [old, new] = c.positional.as_slice() else {
                return Err("diff needs two dumps: memx diff OLD NEW".into());
            };
            let old = load(Path::new(old), &c)?;
            let new = load(Path::new(new), &c)?;
            if let (Some(a), Some(b)) = (old.dump.pid, new.dump.pid) {
                if a != b {
                    eprintln!("memx: note: the dumps come from different processes ({a} and {b}); sites are matched by name");
                }
            }
            print!("{}", report::diff(&old, &new, &c.report));
            Ok(0)
        }
        "flamegraph" | "flame" => {
            let c = parse_common(
                args,
                &[
                    "--inuse",
                    "--alloc",
                    "--by",
                    "-o",
                    "--output",
                    "--folded",
                    "--python",
                    "--python-only",
                    "--native-only",
                ],
            )?;
            let input = one_path(&c, "DUMP")?;
            let p = load(&input, &c)?;
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
        "pprof" => {
            let c = parse_common(args, &["-o", "--output"])?;
            let input = one_path(&c, "DUMP")?;
            let d = dump::Dump::load_for_message(&input)?;
            let data = pprof::gzip(&d)?;
            let out = c.output.unwrap_or_else(|| default_output(&input, ".pb.gz"));
            write_output(&out, &data)?;
            Ok(0)
        }
        "plot" => {
            let c = parse_common(args, &["-o", "--output"])?;
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
        "snapshot" => {
            let mut allowed = REPORT_OPTS.to_vec();
            allowed.push("--timeout");
            let c = parse_common(args, &allowed)?;
            let pid_s = one_path(&c, "PID")?;
            let pid_s = pid_s.to_string_lossy();
            let pid: u32 = pid_s
                .parse()
                .map_err(|_| format!("snapshot: `{pid_s}` is not a process id"))?;
            let snap = run::snapshot(pid, c.timeout)?;
            eprintln!("memx: new dump {}", snap.path.display());
            let mut p = SymProfile::new(snap.dump);
            if c.python {
                p.python_view();
            }
            print!("{}", report::report(&p, &c.report));
            Ok(0)
        }
        other => Err(format!("unknown command `{other}` (see memx --help)")),
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
