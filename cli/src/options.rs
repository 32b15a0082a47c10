//! The command line: one table of commands and one of options drive both
//! the parser and the usage text, so an option a command accepts is always
//! one it documents (and acts on).
//!
//! Owns: splitting argv into options and operands per command. It never
//! interprets a value: `main.rs` turns the parsed pairs into each command's
//! settings.

use std::ffi::OsString;

/// The subcommands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cmd {
    Run,
    Report,
    Diff,
    Flamegraph,
    Pprof,
    Plot,
    Snapshot,
    Jupyter,
    Symbolize,
}

use Cmd::*;

/// A subcommand's names, operands and one-paragraph description.
pub struct CmdSpec {
    pub cmd: Cmd,
    /// The first name is the one the usage text shows.
    pub names: &'static [&'static str],
    /// What follows the options in the synopsis.
    pub operands: &'static str,
    pub about: &'static str,
}

pub const COMMANDS: &[CmdSpec] = &[
    CmdSpec {
        cmd: Run,
        names: &["run"],
        operands: "-- COMMAND [ARGS...]",
        about: "Run COMMAND with libmemx.so preloaded and heap profiling on; dumps go \
                to PREFIX.<pid>.<seq>.heap (default ./memx-prof/<command>).",
    },
    CmdSpec {
        cmd: Report,
        names: &["report"],
        operands: "DUMP | --merge DUMP...",
        about: "The sites holding (or having allocated) the most memory.",
    },
    CmdSpec {
        cmd: Diff,
        names: &["diff"],
        operands: "OLD NEW",
        about: "Growth per site between two dumps: the leak suspects.",
    },
    CmdSpec {
        cmd: Flamegraph,
        names: &["flamegraph", "flame"],
        operands: "DUMP | --merge DUMP...",
        about: "An interactive SVG flame graph (or folded stacks with --folded).",
    },
    CmdSpec {
        cmd: Pprof,
        names: &["pprof"],
        operands: "DUMP",
        about: "The dump as gzip'd profile.proto, for `go tool pprof`, Pyroscope, Parca.",
    },
    CmdSpec {
        cmd: Plot,
        names: &["plot"],
        operands: "STATS",
        about: "Memory over time from PREFIX.<pid>.stats (run with --stats-interval).",
    },
    CmdSpec {
        cmd: Snapshot,
        names: &["snapshot"],
        operands: "PID",
        about: "Ask a running memx process for a dump, wait for it and report it.",
    },
    CmdSpec {
        cmd: Jupyter,
        names: &["jupyter"],
        operands: "install",
        about: "Write a Jupyter kernel spec, \"Python 3 (memx)\", that starts the Python \
                installed beside this command under memx with heap profiling on; in it, \
                `%load_ext memx` and `%memx` show the top sites (needs the memx Python \
                package: pip install memx; same as python -m memx jupyter install).",
    },
    CmdSpec {
        cmd: Symbolize,
        names: &["symbolize"],
        operands: "[REPORT]",
        about: "Name the frames of a guarded-sampling report (MEMX_GUARD_SAMPLE) by \
                function, file and line; reads REPORT or standard input (-), \
                writes the report with its frames named.",
    },
];

/// One option: its names, its value's name (None for a flag), the
/// commands that take it, and its help line.
pub struct OptSpec {
    pub long: &'static str,
    pub short: Option<&'static str>,
    pub value: Option<&'static str>,
    pub cmds: &'static [Cmd],
    pub help: &'static str,
}

const VIEWS: &[Cmd] = &[Report, Diff, Flamegraph, Snapshot];
const TABLES: &[Cmd] = &[Report, Diff, Snapshot];
const FILES_OUT: &[Cmd] = &[Flamegraph, Pprof, Plot, Symbolize];

pub const OPTIONS: &[OptSpec] = &[
    OptSpec {
        long: "--profile",
        short: None,
        value: Some("PREFIX"),
        cmds: &[Run, Jupyter],
        help: "where dumps go: PREFIX.<pid>.<seq>.heap",
    },
    OptSpec {
        long: "--sample",
        short: None,
        value: Some("SIZE"),
        cmds: &[Run, Jupyter],
        help: "mean bytes between samples (MEMX_PROFILE_SAMPLE)",
    },
    OptSpec {
        long: "--name",
        short: None,
        value: Some("NAME"),
        cmds: &[Jupyter],
        help: "the kernel's name (default memx)",
    },
    OptSpec {
        long: "--sys-prefix",
        short: None,
        value: None,
        cmds: &[Jupyter],
        help: "install into the Python environment, not for the user",
    },
    OptSpec {
        long: "--prefix",
        short: None,
        value: Some("DIR"),
        cmds: &[Jupyter],
        help: "install into DIR/share/jupyter",
    },
    OptSpec {
        long: "--signal",
        short: None,
        value: Some("SIG"),
        cmds: &[Run],
        help: "signal that asks for a dump (MEMX_PROFILE_SIGNAL; default SIGRTMIN+10)",
    },
    OptSpec {
        long: "--limit",
        short: None,
        value: Some("SIZE"),
        cmds: &[Run],
        help: "heap limit; a dump is written when it is first hit (MEMX_HEAP_LIMIT)",
    },
    OptSpec {
        long: "--stats-interval",
        short: None,
        value: Some("MS"),
        cmds: &[Run],
        help: "write a memory line to PREFIX.<pid>.stats this often",
    },
    OptSpec {
        long: "--python-all",
        short: None,
        value: None,
        cmds: &[Run],
        help: "PYTHONMALLOC=malloc: memx serves every Python object (not needed to profile them)",
    },
    OptSpec {
        long: "--native-stacks",
        short: None,
        value: None,
        cmds: &[Run],
        help: "in Python, record every native frame (MEMX_PROFILE_NATIVE=1; default: native frames \
               up to the innermost Python call, a third of the unwinding cost)",
    },
    OptSpec {
        long: "--top",
        short: None,
        value: Some("N"),
        cmds: TABLES,
        help: "how many sites to show",
    },
    OptSpec {
        long: "--inuse",
        short: None,
        value: None,
        cmds: VIEWS,
        help: "bytes still held when the dump was taken (the default)",
    },
    OptSpec {
        long: "--alloc",
        short: None,
        value: None,
        cmds: VIEWS,
        help: "bytes allocated since the start, freed or not",
    },
    OptSpec {
        long: "--by",
        short: None,
        value: Some("function|line|stack"),
        cmds: VIEWS,
        help: "what a site is (a flame graph takes function or line)",
    },
    OptSpec {
        long: "--cum",
        short: None,
        value: None,
        cmds: TABLES,
        help: "sort by cumulative bytes (the site and its callees)",
    },
    OptSpec {
        long: "--native",
        short: None,
        value: None,
        cmds: VIEWS,
        help: "every native frame as recorded (a dump with Python frames is shown \
               Python-first by default: Python lines, interpreter frames folded)",
    },
    OptSpec {
        long: "--python",
        short: None,
        value: None,
        cmds: VIEWS,
        help: "charge memory to the innermost Python frame, not the interpreter's C functions",
    },
    OptSpec {
        long: "--python-only",
        short: None,
        value: None,
        cmds: VIEWS,
        help: "keep only the Python frames of each stack",
    },
    OptSpec {
        long: "--native-only",
        short: None,
        value: None,
        cmds: VIEWS,
        help: "keep only the native frames of each stack",
    },
    OptSpec {
        long: "--merge",
        short: None,
        value: None,
        cmds: &[Report, Flamegraph],
        help: "DUMP... is several dumps (the processes of one run): one profile of them all",
    },
    OptSpec {
        long: "--folded",
        short: None,
        value: None,
        cmds: &[Flamegraph],
        help: "folded stacks (text) instead of SVG",
    },
    OptSpec {
        long: "--output",
        short: Some("-o"),
        value: Some("FILE"),
        cmds: FILES_OUT,
        help: "output file (- for standard output)",
    },
    OptSpec {
        long: "--symbols",
        short: None,
        value: Some("DIR"),
        cmds: &[Report, Diff, Flamegraph, Pprof, Snapshot],
        help: "debug files for stripped modules: DIR/.build-id/xx/yyyy.debug, DIR/NAME.debug (repeatable)",
    },
    OptSpec {
        long: "--timeout",
        short: None,
        value: Some("SECS"),
        cmds: &[Snapshot],
        help: "how long to wait for the dump (default 10)",
    },
];

/// The command that `name` names.
pub fn command(name: &str) -> Option<&'static CmdSpec> {
    COMMANDS.iter().find(|c| c.names.contains(&name))
}

fn spec(cmd: Cmd) -> &'static CmdSpec {
    COMMANDS
        .iter()
        .find(|c| c.cmd == cmd)
        .expect("every Cmd has a row")
}

/// A command line split into options (by their long name) and operands.
#[derive(Debug, Default)]
pub struct Parsed {
    pub opts: Vec<(&'static str, Option<String>)>,
    pub operands: Vec<OsString>,
}

/// Splits `args` for `cmd`. `--` ends the options. For `run`, the first
/// operand also ends them: what follows is the command to run, untouched.
pub fn parse(cmd: Cmd, args: Vec<OsString>) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy().into_owned();
        if s == "--" {
            out.operands.extend(it.by_ref());
            break;
        }
        if !s.starts_with('-') || s == "-" {
            out.operands.push(a);
            if cmd == Run {
                out.operands.extend(it.by_ref());
                break;
            }
            continue;
        }
        let (name, inline) = match s.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (s.as_str(), None),
        };
        let opt = OPTIONS
            .iter()
            .find(|o| (o.long == name || o.short == Some(name)) && o.cmds.contains(&cmd))
            .ok_or_else(|| {
                format!(
                    "{}: unknown option {name} (see memx {} --help)",
                    spec(cmd).names[0],
                    spec(cmd).names[0]
                )
            })?;
        let value = match (opt.value, inline) {
            (None, None) => None,
            (None, Some(_)) => return Err(format!("{name} takes no value")),
            (Some(_), Some(v)) => Some(v),
            (Some(_), None) => Some(
                it.next()
                    .map(|v| v.to_string_lossy().into_owned())
                    .ok_or_else(|| format!("{name} needs a value"))?,
            ),
        };
        out.opts.push((opt.long, value));
    }
    Ok(out)
}

/// Whether `args` asks for help rather than for the command.
pub fn wants_help(args: &[OsString]) -> bool {
    args.iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "--help" || a == "-h")
}

fn synopsis(c: &CmdSpec) -> String {
    format!("  memx {} [OPTIONS] {}\n", c.names[0], c.operands)
}

/// `text` in lines of at most `width` characters, broken at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("never empty");
        if !last.is_empty() && last.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines
}

/// One command's usage: synopsis, description, its options.
pub fn command_usage(cmd: Cmd) -> String {
    let c = spec(cmd);
    let mut s = synopsis(c);
    for line in wrap(c.about, 72) {
        s.push_str(&format!("      {line}\n"));
    }
    for o in OPTIONS.iter().filter(|o| o.cmds.contains(&cmd)) {
        let mut names = String::new();
        if let Some(short) = o.short {
            names.push_str(short);
            names.push_str(", ");
        }
        names.push_str(o.long);
        if let Some(v) = o.value {
            names.push(' ');
            names.push_str(v);
        }
        s.push_str(&format!("      {names:<28} {}\n", o.help));
    }
    s
}

/// The whole usage text: every command with its options.
pub fn usage() -> String {
    let mut s = String::from("memx — heap profiles from libmemx.so\n\nusage:\n");
    for (i, c) in COMMANDS.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&command_usage(c.cmd));
    }
    s.push_str("\n  memx COMMAND --help shows one command.\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn every_option_is_documented_for_the_commands_that_take_it() {
        for c in COMMANDS {
            let text = command_usage(c.cmd);
            for o in OPTIONS.iter().filter(|o| o.cmds.contains(&c.cmd)) {
                assert!(text.contains(o.long), "{} lacks {}", c.names[0], o.long);
            }
            for o in OPTIONS.iter().filter(|o| !o.cmds.contains(&c.cmd)) {
                let err = parse(c.cmd, args(&[o.long, "x"])).unwrap_err();
                assert!(err.contains("unknown option"), "{err}");
            }
        }
    }

    #[test]
    fn values_inline_or_next_and_flags_take_none() {
        let p = parse(
            Report,
            args(&["--top=3", "d.heap", "--by", "line", "--cum"]),
        )
        .unwrap();
        assert_eq!(
            p.opts,
            vec![
                ("--top", Some("3".into())),
                ("--by", Some("line".into())),
                ("--cum", None)
            ]
        );
        assert_eq!(p.operands, args(&["d.heap"]));
        assert!(parse(Report, args(&["--cum=1"])).is_err());
        assert!(parse(Report, args(&["--top"])).is_err());
        let p = parse(Flamegraph, args(&["-o", "x.svg", "--", "--odd-name"])).unwrap();
        assert_eq!(p.opts, vec![("--output", Some("x.svg".into()))]);
        assert_eq!(p.operands, args(&["--odd-name"]));
    }

    #[test]
    fn run_stops_at_the_command() {
        let p = parse(Run, args(&["--sample", "1", "ls", "--top", "-l"])).unwrap();
        assert_eq!(p.opts, vec![("--sample", Some("1".into()))]);
        assert_eq!(p.operands, args(&["ls", "--top", "-l"]));
        let p = parse(Run, args(&["--python-all", "--", "python3", "-c", "1"])).unwrap();
        assert_eq!(p.operands, args(&["python3", "-c", "1"]));
    }
}
