//! The one table of `MEMX_*` options: name, form, default and meaning, parsed
//! once at initialisation.
//!
//! Owns: `Config` and its global instance. Must never: allocate, abort, or
//! let a bad value through. A bad value prints one line to stderr naming the
//! variable and the accepted form, and the default is used.

use crate::util::fmt::FixedBuf;
use core::cell::UnsafeCell;

/// Every tunable of the allocator, with its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// MiB per second of free memory returned to the OS (0: only on malloc_trim).
    pub release_rate_mib: u64,
    /// Budget in bytes for all thread caches together.
    pub thread_cache_bytes: u64,
    /// Whether `MEMX_THREAD_CACHE_BYTES` was given; if not, the budget is
    /// bounded by CPUs where per-CPU caches exist (`init`).
    pub thread_cache_bytes_set: bool,
    /// Most bytes of one size class one CPU's cache may hold (0: no
    /// per-CPU caches).
    pub cpu_cache_bytes: u64,
    /// Print `malloc_stats` to stderr at exit.
    pub stats_at_exit: bool,
    /// Most bytes the page heap may hold from the OS (0: no limit).
    pub heap_limit: u64,
    /// Heap profiling: dump file prefix (empty: profiling off).
    pub profile_prefix: Path,
    /// Mean bytes between samples.
    pub profile_sample: u64,
    /// Signal that asks for a dump (0: none).
    pub profile_signal: u64,
    /// Dump each time this many more bytes were allocated (0: off).
    pub profile_alloc_interval: u64,
    /// Dump each time the in-use high-water mark grows by this much (0: off).
    pub profile_inuse_interval: u64,
    /// Dump every this many seconds (0: off).
    pub profile_time_interval: u64,
    /// Dump when the process exits.
    pub profile_at_exit: bool,
    /// Catch SIGTERM (default action only) for the exit dump.
    pub profile_sigterm: bool,
    /// Fixed seed for the sampler (0: random), for reproducible tests.
    pub profile_seed: u64,
    /// In a Python process, every native frame of a sample; false: native
    /// frames up to the innermost call of the interpreter's evaluation
    /// function only (the Python frames stand for the rest).
    pub profile_native: bool,
    /// Milliseconds between two lines of `<prefix>.<pid>.stats` (0: off).
    pub stats_interval_ms: u64,
    /// Checked mode: double-free, overflow and use-after-free checks.
    pub check: bool,
    /// Mean bytes between guarded allocations (0: guarded sampling off).
    pub guard_sample: u64,
    /// Most guarded allocations per second in the process (0: no limit).
    pub guard_rate: u64,
    /// Whether `MEMX_GUARD_SAMPLE` was given (then `guard_from` defaults
    /// to 0: who asks for guarding gets it in a small process too).
    pub guard_sample_set: bool,
    /// Heap bytes mapped before the first guarded allocation.
    pub guard_from: u64,
    /// Whether `MEMX_GUARD_FROM` was given.
    pub guard_from_set: bool,
}

/// A file-name prefix held inline (the config lives in a static).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Path {
    bytes: [u8; Path::MAX],
    len: usize,
}

impl Path {
    pub const MAX: usize = 240;
    pub const EMPTY: Path = Path {
        bytes: [0; Path::MAX],
        len: 0,
    };

    pub fn from_bytes(b: &[u8]) -> Option<Path> {
        if b.is_empty() || b.len() >= Path::MAX || b.contains(&0) {
            return None;
        }
        let mut p = Path::EMPTY;
        p.bytes[..b.len()].copy_from_slice(b);
        p.len = b.len();
        Some(p)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Config {
    pub const DEFAULT: Config = Config {
        release_rate_mib: 64,
        thread_cache_bytes: 32 << 20,
        thread_cache_bytes_set: false,
        cpu_cache_bytes: 64 << 10,
        stats_at_exit: false,
        heap_limit: 0,
        profile_prefix: Path::EMPTY,
        profile_sample: 512 << 10,
        profile_signal: DEFAULT_SIGNAL,
        profile_alloc_interval: 0,
        profile_inuse_interval: 0,
        profile_time_interval: 0,
        profile_at_exit: true,
        profile_sigterm: true,
        profile_seed: 0,
        profile_native: false,
        stats_interval_ms: 0,
        check: false,
        guard_sample: 16 << 20,
        guard_rate: 20,
        guard_sample_set: false,
        guard_from: 32 << 20,
        guard_from_set: false,
    };

    /// Heap bytes mapped before guarded sampling starts: `MEMX_GUARD_FROM`
    /// when given, else 0 when `MEMX_GUARD_SAMPLE` was, else the default.
    pub fn guard_from_bytes(&self) -> u64 {
        if self.guard_sample_set && !self.guard_from_set {
            0
        } else {
            self.guard_from
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// Bytes, with an optional K, M, G or T suffix (powers of 1024).
    Size,
    /// A whole number.
    Count,
    /// 0/1, true/false, yes/no, on/off.
    Bool,
    /// A file path or prefix (non-empty, at most 239 bytes).
    Path,
    /// A signal name (`SIGUSR2`, `USR2`, `SIGRTMIN+10`, `RTMAX-2`) or
    /// number; 0 = none.
    Signal,
}

impl Form {
    fn describe(self) -> &'static str {
        match self {
            Form::Size => "a size in bytes with an optional K/M/G suffix, e.g. 512K or 4M",
            Form::Count => "a whole number",
            Form::Bool => "0 or 1",
            Form::Path => "a file path prefix (at most 239 bytes)",
            Form::Signal => {
                "a signal name such as SIGRTMIN+10, RTMIN+3, SIGUSR2 or USR2, a number, or 0 for none"
            }
        }
    }
}

pub struct OptionSpec {
    pub name: &'static str,
    pub form: Form,
    pub min: u64,
    pub max: u64,
    pub default: &'static str,
    pub doc: &'static str,
    /// Stores a valid value: the parsed number, and the raw bytes (for paths).
    apply: fn(&mut Config, u64, &[u8]),
}

/// The table. The README's configuration section documents the same rows.
pub static OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "MEMX_RELEASE_RATE",
        form: Form::Count,
        min: 0,
        max: 1 << 20,
        default: "64",
        doc:
            "MiB per second of free pages returned to the OS with madvise; 0 = only on malloc_trim",
        apply: |c, v, _| c.release_rate_mib = v,
    },
    OptionSpec {
        name: "MEMX_THREAD_CACHE_BYTES",
        form: Form::Size,
        min: 0,
        max: 1 << 40,
        default: "32M",
        doc: "budget for all per-thread caches together (each thread takes at most 2M of it)",
        apply: |c, v, _| {
            c.thread_cache_bytes = v;
            c.thread_cache_bytes_set = true;
        },
    },
    OptionSpec {
        name: "MEMX_CPU_CACHE_BYTES",
        form: Form::Size,
        min: 0,
        max: 1 << 30,
        default: "64K",
        doc: "most bytes of one size class each CPU's cache holds (rseq); 0 = thread caches only",
        apply: |c, v, _| c.cpu_cache_bytes = v,
    },
    OptionSpec {
        name: "MEMX_STATS_AT_EXIT",
        form: Form::Bool,
        min: 0,
        max: 1,
        default: "0",
        doc: "1 = print the malloc_stats report to stderr when the process exits",
        apply: |c, v, _| c.stats_at_exit = v != 0,
    },
    OptionSpec {
        name: "MEMX_HEAP_LIMIT",
        form: Form::Size,
        min: 0,
        max: 1 << 50,
        default: "0",
        doc: "most bytes the heap may hold from the OS (in-use plus resident free pages); \
              past it an allocation fails with ENOMEM; 0 = no limit",
        apply: |c, v, _| c.heap_limit = v,
    },
    OptionSpec {
        name: "MEMX_PROFILE",
        form: Form::Path,
        min: 0,
        max: u64::MAX,
        default: "",
        doc: "turns heap profiling on; dumps go to <prefix>.<pid>.<seq>.heap",
        apply: |c, _, raw| c.profile_prefix = Path::from_bytes(raw).unwrap_or(Path::EMPTY),
    },
    OptionSpec {
        name: "MEMX_PROFILE_SAMPLE",
        form: Form::Size,
        min: 1,
        max: 1 << 40,
        default: "512K",
        doc: "mean bytes allocated between two samples",
        apply: |c, v, _| c.profile_sample = v,
    },
    OptionSpec {
        name: "MEMX_PROFILE_SIGNAL",
        form: Form::Signal,
        min: 0,
        max: 64,
        default: "SIGRTMIN+10",
        doc: "signal that asks for a dump (0 = none); the default is one no common program uses",
        apply: |c, v, _| c.profile_signal = v,
    },
    OptionSpec {
        name: "MEMX_PROFILE_ALLOC_INTERVAL",
        form: Form::Size,
        min: 0,
        max: 1 << 50,
        default: "0",
        doc: "dump each time this many more bytes have been allocated (0 = off)",
        apply: |c, v, _| c.profile_alloc_interval = v,
    },
    OptionSpec {
        name: "MEMX_PROFILE_INUSE_INTERVAL",
        form: Form::Size,
        min: 0,
        max: 1 << 50,
        default: "0",
        doc: "dump each time the in-use high-water mark grows by this much (0 = off)",
        apply: |c, v, _| c.profile_inuse_interval = v,
    },
    OptionSpec {
        name: "MEMX_PROFILE_TIME_INTERVAL",
        form: Form::Count,
        min: 0,
        max: 1 << 32,
        default: "0",
        doc: "dump every this many seconds (0 = off)",
        apply: |c, v, _| c.profile_time_interval = v,
    },
    OptionSpec {
        name: "MEMX_PROFILE_AT_EXIT",
        form: Form::Bool,
        min: 0,
        max: 1,
        default: "1",
        doc: "1 = dump when the process exits (with MEMX_PROFILE set)",
        apply: |c, v, _| c.profile_at_exit = v != 0,
    },
    OptionSpec {
        name: "MEMX_PROFILE_SIGTERM",
        form: Form::Bool,
        min: 0,
        max: 1,
        default: "1",
        doc: "1 = write the exit dump when SIGTERM (left at its default action) ends the process",
        apply: |c, v, _| c.profile_sigterm = v != 0,
    },
    OptionSpec {
        name: "MEMX_PROFILE_SEED",
        form: Form::Count,
        min: 0,
        max: u64::MAX,
        default: "0",
        doc: "fixed seed for the sampler, so a single-threaded run samples the same \
              objects every time (0 = random; for tests)",
        apply: |c, v, _| c.profile_seed = v,
    },
    OptionSpec {
        name: "MEMX_PROFILE_NATIVE",
        form: Form::Bool,
        min: 0,
        max: 1,
        default: "0",
        doc: "1 = in a Python process, record every native frame of a sample \
              (0 = native frames up to the innermost Python call; the Python \
              frames stand for the rest, at a third of the unwinding cost)",
        apply: |c, v, _| c.profile_native = v != 0,
    },
    OptionSpec {
        name: "MEMX_STATS_INTERVAL",
        form: Form::Count,
        min: 0,
        max: 1 << 32,
        default: "0",
        doc: "milliseconds between two lines of memory statistics appended to \
              <prefix>.<pid>.stats (needs MEMX_PROFILE; 0 = off)",
        apply: |c, v, _| c.stats_interval_ms = v,
    },
    OptionSpec {
        name: "MEMX_CHECK",
        form: Form::Bool,
        min: 0,
        max: 1,
        default: "0",
        doc: "1 = checked mode: detect double frees, heap overflows (a canary after \
              each object) and writes after free, at a cost (no thread caching)",
        apply: |c, v, _| c.check = v != 0,
    },
    OptionSpec {
        name: "MEMX_GUARD_SAMPLE",
        form: Form::Size,
        min: 0,
        max: 1 << 40,
        default: "16M",
        doc: "mean bytes allocated between two guarded allocations (each on its own \
              page against an inaccessible guard page, a fault reported with its \
              stacks); 0 = off",
        apply: |c, v, _| {
            c.guard_sample = v;
            c.guard_sample_set = true;
        },
    },
    OptionSpec {
        name: "MEMX_GUARD_RATE",
        form: Form::Count,
        min: 0,
        max: 1_000_000,
        default: "20",
        doc: "most guarded allocations per second in the process, whatever the \
              allocation rate (0 = no limit)",
        apply: |c, v, _| c.guard_rate = v,
    },
    OptionSpec {
        name: "MEMX_GUARD_FROM",
        form: Form::Size,
        min: 0,
        max: 1 << 40,
        default: "32M",
        doc: "heap bytes mapped before the first guarded allocation, so that a small \
              process does not pay guarding's fixed cost (about 0.2-0.4 MiB); 0 when \
              MEMX_GUARD_SAMPLE is given, unless this is too",
        apply: |c, v, _| {
            c.guard_from = v;
            c.guard_from_set = true;
        },
    },
];

/// Parses `value` in `form`; `None` when it is not of that form or overflows.
pub fn parse(form: Form, value: &[u8]) -> Option<u64> {
    match form {
        Form::Bool => match value {
            b"1" | b"true" | b"yes" | b"on" | b"TRUE" | b"YES" | b"ON" => Some(1),
            b"0" | b"false" | b"no" | b"off" | b"FALSE" | b"NO" | b"OFF" => Some(0),
            _ => None,
        },
        Form::Count => parse_digits(value),
        Form::Path => {
            (!value.is_empty() && value.len() < Path::MAX && !value.contains(&0)).then_some(0)
        }
        Form::Signal => parse_signal(value),
        Form::Size => {
            let (digits, shift) = match value.last().map(u8::to_ascii_uppercase) {
                Some(b'K') => (&value[..value.len() - 1], 10),
                Some(b'M') => (&value[..value.len() - 1], 20),
                Some(b'G') => (&value[..value.len() - 1], 30),
                Some(b'T') => (&value[..value.len() - 1], 40),
                _ => (value, 0),
            };
            let n = parse_digits(digits)?;
            n.checked_mul(1u64 << shift)
        }
    }
}

/// Signal names glibc uses, without the SIG prefix, and their numbers.
const SIGNALS: &[(&[u8], i32)] = &[
    (b"HUP", libc::SIGHUP),
    (b"INT", libc::SIGINT),
    (b"QUIT", libc::SIGQUIT),
    (b"USR1", libc::SIGUSR1),
    (b"USR2", libc::SIGUSR2),
    (b"PIPE", libc::SIGPIPE),
    (b"ALRM", libc::SIGALRM),
    (b"TERM", libc::SIGTERM),
    (b"CHLD", libc::SIGCHLD),
    (b"CONT", libc::SIGCONT),
    (b"TSTP", libc::SIGTSTP),
    (b"TTIN", libc::SIGTTIN),
    (b"TTOU", libc::SIGTTOU),
    (b"URG", libc::SIGURG),
    (b"XCPU", libc::SIGXCPU),
    (b"XFSZ", libc::SIGXFSZ),
    (b"VTALRM", libc::SIGVTALRM),
    (b"PROF", libc::SIGPROF),
    (b"WINCH", libc::SIGWINCH),
    (b"IO", libc::SIGIO),
    (b"PWR", libc::SIGPWR),
    (b"SYS", libc::SIGSYS),
];

/// glibc's SIGRTMIN: the kernel's first real-time signal is 32, and glibc
/// keeps 32 (thread cancellation) and 33 (set*id broadcast) for itself.
pub const GLIBC_SIGRTMIN: u64 = 34;
/// The highest signal number on Linux.
const SIGRTMAX: u64 = 64;

/// The default dump signal, SIGRTMIN+10 (44). Why a real-time signal: the
/// classic ones belong to programs (PostgreSQL handles SIGUSR2 itself,
/// nginx upgrades its binary on it; SIGPROF is a CPU profiler's). Why +10:
/// clear of the low real-time signals programs and libraries take first
/// (SIGRTMIN, +1, … for their timers and old LinuxThreads), of those
/// counted down from SIGRTMAX by others, and of the ones systemd acts on
/// (+0…+7, +13…+30), in case memx is loaded into a service manager.
pub const DEFAULT_SIGNAL: u64 = GLIBC_SIGRTMIN + 10;

/// `SIGUSR2`, `USR2`, `SIGRTMIN+N`, `RTMIN+N`, `SIGRTMAX-N`, `RTMAX-N`
/// (any case) or a number up to 64; 0 means none. Signals the kernel or the
/// runtime own (KILL, STOP, SEGV, glibc's 32 and 33, ...) are not accepted.
fn parse_signal(value: &[u8]) -> Option<u64> {
    if let Some(n) = parse_digits(value) {
        return (n <= SIGRTMAX && !(32..GLIBC_SIGRTMIN).contains(&n)).then_some(n);
    }
    let mut upper = [0u8; 16];
    if value.len() > upper.len() {
        return None;
    }
    for (u, c) in upper.iter_mut().zip(value) {
        *u = c.to_ascii_uppercase();
    }
    let name = &upper[..value.len()];
    let name = name.strip_prefix(b"SIG").unwrap_or(name);
    if let Some(n) = parse_realtime(name) {
        return Some(n);
    }
    SIGNALS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| v as u64)
}

/// `RTMIN`, `RTMIN+N`, `RTMAX`, `RTMAX-N` (upper case, no SIG), in range.
fn parse_realtime(name: &[u8]) -> Option<u64> {
    let n = if let Some(rest) = name.strip_prefix(b"RTMIN") {
        match rest {
            [] => GLIBC_SIGRTMIN,
            [b'+', digits @ ..] => GLIBC_SIGRTMIN.checked_add(parse_digits(digits)?)?,
            _ => return None,
        }
    } else if let Some(rest) = name.strip_prefix(b"RTMAX") {
        match rest {
            [] => SIGRTMAX,
            [b'-', digits @ ..] => SIGRTMAX.checked_sub(parse_digits(digits)?)?,
            _ => return None,
        }
    } else {
        return None;
    };
    (GLIBC_SIGRTMIN..=SIGRTMAX).contains(&n).then_some(n)
}

fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add((c - b'0') as u64)?;
    }
    Some(v)
}

/// Builds a config from `(name, value)` pairs, reporting each problem through
/// `warn` as one line. Unknown `MEMX_*` names are reported too (a typo would
/// otherwise be silently ignored).
pub fn from_vars(
    mut each_var: impl FnMut(&mut dyn FnMut(&[u8], &[u8])),
    warn: &mut dyn FnMut(&[u8]),
) -> Config {
    let mut cfg = Config::DEFAULT;
    each_var(&mut |name, value| {
        let Some(spec) = OPTIONS.iter().find(|o| o.name.as_bytes() == name) else {
            if !is_known_elsewhere(name) {
                let mut line = FixedBuf::<256>::new();
                line.str("memx: unknown variable ")
                    .bytes(name)
                    .str(" ignored (see the README for MEMX_* options)\n");
                warn(line.as_bytes());
            }
            return;
        };
        match parse(spec.form, value) {
            Some(v) if v >= spec.min && v <= spec.max => (spec.apply)(&mut cfg, v, value),
            _ => {
                let mut line = FixedBuf::<320>::new();
                line.str("memx: ignoring ")
                    .str(spec.name)
                    .str("=")
                    .bytes(&value[..value.len().min(40)])
                    .str(": expected ")
                    .str(spec.form.describe());
                if spec.max < u64::MAX {
                    line.str(" (at most ").u64(spec.max).str(")");
                }
                if spec.default.is_empty() {
                    line.str("; left unset\n");
                } else {
                    line.str("; using the default ").str(spec.default).str("\n");
                }
                warn(line.as_bytes());
            }
        }
    });
    cfg
}

/// Variables read by other parts of memx (the `memx` command, test
/// harnesses) that the library itself ignores on purpose.
fn is_known_elsewhere(name: &[u8]) -> bool {
    matches!(name, b"MEMX_LIB" | b"MEMX_TEST_LIB")
}

struct Global(UnsafeCell<Config>);
// SAFETY: written only by `install`, during initialisation, before any other
// thread can observe the allocator as ready (init publishes with Release).
unsafe impl Sync for Global {}

static CONFIG: Global = Global(UnsafeCell::new(Config::DEFAULT));

/// The configuration in force.
#[inline]
pub fn get() -> &'static Config {
    // SAFETY: see `Global`: no writes happen after initialisation.
    unsafe { &*CONFIG.0.get() }
}

/// Reads the environment into the global config (once, from init).
///
/// # Safety
/// Must be called only during initialisation, by the initialising thread.
pub unsafe fn install() {
    let cfg = if crate::sys::secure_mode() {
        // As glibc ignores MALLOC_* in setuid programs: no env-driven behaviour.
        Config::DEFAULT
    } else {
        from_vars(|f| crate::sys::for_each_memx_var(f), &mut |l| {
            crate::sys::write_stderr(l)
        })
    };
    // SAFETY: the caller is the only thread running initialisation.
    unsafe { *CONFIG.0.get() = cfg };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(vars: &[(&str, &str)]) -> (Config, Vec<String>) {
        let mut lines = Vec::new();
        let cfg = from_vars(
            |f| {
                for (n, v) in vars {
                    f(n.as_bytes(), v.as_bytes())
                }
            },
            &mut |l| lines.push(String::from_utf8(l.to_vec()).unwrap()),
        );
        (cfg, lines)
    }

    #[test]
    fn sizes_parse_with_suffixes() {
        assert_eq!(parse(Form::Size, b"512"), Some(512));
        assert_eq!(parse(Form::Size, b"4k"), Some(4096));
        assert_eq!(parse(Form::Size, b"2M"), Some(2 << 20));
        assert_eq!(parse(Form::Size, b"1G"), Some(1 << 30));
        assert_eq!(parse(Form::Size, b""), None);
        assert_eq!(parse(Form::Size, b"M"), None);
        assert_eq!(parse(Form::Size, b"-1"), None);
        assert_eq!(parse(Form::Size, b"12Q"), None);
        assert_eq!(parse(Form::Size, b"99999999999999999999999"), None);
        assert_eq!(parse(Form::Size, b"17179869184G"), None);
    }

    #[test]
    fn good_values_apply_silently() {
        let (cfg, lines) = run(&[
            ("MEMX_RELEASE_RATE", "0"),
            ("MEMX_THREAD_CACHE_BYTES", "4M"),
            ("MEMX_STATS_AT_EXIT", "1"),
        ]);
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(cfg.release_rate_mib, 0);
        assert_eq!(cfg.thread_cache_bytes, 4 << 20);
        assert!(cfg.stats_at_exit);
    }

    #[test]
    fn guarding_starts_at_32m_unless_asked_for() {
        let from = |vars: &[(&str, &str)]| run(vars).0.guard_from_bytes();
        assert_eq!(from(&[]), 32 << 20);
        assert_eq!(from(&[("MEMX_GUARD_RATE", "5")]), 32 << 20);
        // Who sets the sample size wants guarding now, in a small process too.
        assert_eq!(from(&[("MEMX_GUARD_SAMPLE", "64K")]), 0);
        assert_eq!(
            from(&[("MEMX_GUARD_SAMPLE", "64K"), ("MEMX_GUARD_FROM", "1M")]),
            1 << 20
        );
        assert_eq!(from(&[("MEMX_GUARD_FROM", "0")]), 0);
    }

    #[test]
    fn each_bad_value_gives_one_line_and_the_default() {
        for (name, bad) in [
            ("MEMX_RELEASE_RATE", "abc"),
            ("MEMX_RELEASE_RATE", "-5"),
            ("MEMX_RELEASE_RATE", ""),
            ("MEMX_RELEASE_RATE", "99999999"),
            ("MEMX_THREAD_CACHE_BYTES", "12Q"),
            ("MEMX_THREAD_CACHE_BYTES", "99999999999999999999999"),
            ("MEMX_STATS_AT_EXIT", "maybe"),
            ("MEMX_HEAP_LIMIT", "lots"),
            ("MEMX_HEAP_LIMIT", "-1"),
            ("MEMX_HEAP_LIMIT", ""),
            ("MEMX_HEAP_LIMIT", "2P"),
            ("MEMX_HEAP_LIMIT", "99999999999999999999999"),
            ("MEMX_HEAP_LIMIT", "2048T"),
        ] {
            let (cfg, lines) = run(&[(name, bad)]);
            assert_eq!(cfg, Config::DEFAULT, "{name}={bad}");
            assert_eq!(lines.len(), 1, "{name}={bad}: {lines:?}");
            assert!(lines[0].contains(name) && lines[0].ends_with('\n'));
            assert_eq!(lines[0].matches('\n').count(), 1);
        }
    }

    #[test]
    fn heap_limit_forms() {
        for (v, want) in [
            ("0", 0),
            ("1048576", 1 << 20),
            ("512M", 512 << 20),
            ("512m", 512 << 20),
            ("2G", 2 << 30),
            ("1024T", 1 << 50),
        ] {
            let (cfg, lines) = run(&[("MEMX_HEAP_LIMIT", v)]);
            assert!(lines.is_empty(), "{v}: {lines:?}");
            assert_eq!(cfg.heap_limit, want, "{v}");
        }
        assert_eq!(Config::DEFAULT.heap_limit, 0, "no limit by default");
    }

    #[test]
    fn unknown_names_are_reported() {
        let (_, lines) = run(&[("MEMX_RELASE_RATE", "1"), ("MEMX_LIB", "x")]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("MEMX_RELASE_RATE"));
    }

    #[test]
    fn table_defaults_parse_to_config_default() {
        let mut cfg = Config::DEFAULT;
        for o in OPTIONS {
            if o.form == Form::Path {
                assert_eq!(o.default, "", "a path option defaults to unset");
                continue;
            }
            let v = parse(o.form, o.default.as_bytes()).unwrap();
            assert!(v >= o.min && v <= o.max, "{}", o.name);
            (o.apply)(&mut cfg, v, o.default.as_bytes());
        }
        // Giving the default explicitly is still giving it.
        let want = Config {
            thread_cache_bytes_set: true,
            guard_sample_set: true,
            guard_from_set: true,
            ..Config::DEFAULT
        };
        assert_eq!(cfg, want);
    }

    #[test]
    fn glibc_agrees_on_sigrtmin() {
        assert_eq!(libc::SIGRTMIN() as u64, GLIBC_SIGRTMIN);
        assert_eq!(libc::SIGRTMAX() as u64, SIGRTMAX);
        assert_eq!(Config::DEFAULT.profile_signal, 44);
    }

    #[test]
    fn profile_options() {
        let (cfg, lines) = run(&[
            ("MEMX_PROFILE", "/tmp/app"),
            ("MEMX_PROFILE_SAMPLE", "4K"),
            ("MEMX_PROFILE_SIGNAL", "usr1"),
            ("MEMX_PROFILE_AT_EXIT", "0"),
            ("MEMX_PROFILE_TIME_INTERVAL", "5"),
        ]);
        assert!(lines.is_empty(), "{lines:?}");
        assert_eq!(cfg.profile_prefix.as_bytes(), b"/tmp/app");
        assert_eq!(cfg.profile_sample, 4096);
        assert_eq!(cfg.profile_signal, libc::SIGUSR1 as u64);
        assert!(!cfg.profile_at_exit);
        assert_eq!(cfg.profile_time_interval, 5);
        for (v, want) in [
            ("SIGUSR2", Some(12)),
            ("0", Some(0)),
            ("12", Some(12)),
            ("SIGKILL", None),
            ("65", None),
            ("", None),
            ("SIGRTMIN+10", Some(44)),
            ("rtmin+3", Some(37)),
            ("RTMIN", Some(34)),
            ("SIGRTMAX-2", Some(62)),
            ("RTMAX", Some(64)),
            ("RTMIN+31", None),
            ("RTMAX-31", None),
            ("RTMIN-1", None),
            ("RTMIN+", None),
            ("32", None),
            ("33", None),
            ("44", Some(44)),
        ] {
            assert_eq!(parse(Form::Signal, v.as_bytes()), want, "{v}");
        }
        for (name, bad) in [
            ("MEMX_PROFILE", ""),
            ("MEMX_PROFILE_SAMPLE", "0"),
            ("MEMX_PROFILE_SIGNAL", "SIGNOPE"),
        ] {
            let (cfg, lines) = run(&[(name, bad)]);
            assert_eq!(cfg, Config::DEFAULT, "{name}={bad}");
            assert_eq!(lines.len(), 1, "{name}={bad}: {lines:?}");
        }
    }
}
