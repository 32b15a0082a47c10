//! The profiler's helper thread and what wakes it: the dump signal's
//! handler, dump requests from the allocation path (interval triggers, the
//! heap limit), the time interval, and the memory-statistics ticker.
//!
//! Requests are a flag word and a futex wake: async-signal-safe, never
//! blocking an allocating thread, and with no file descriptor the program
//! could see (a child that lists its descriptors sees only its own).
//! The helper thread must not keep a process alive whose own threads have
//! all exited (glibc ends a process with exit(0) when its last thread
//! exits): once the main thread has called pthread_exit, it checks every
//! half second, and ends the process the same way.
//! Owns: the request word, the previous signal action, the stats file name.
//! Must never: write a dump from the signal handler or from an allocating
//! thread.

use crate::config;
use crate::sys;
use crate::sys::io::{self, OldAction};
use crate::util::fmt::FixedBuf;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Non-zero when a dump is wanted (a bit per reason, for debugging).
static REQUEST: AtomicU32 = AtomicU32::new(0);
static STATS_ON: AtomicBool = AtomicBool::new(false);
static START_NS: AtomicU64 = AtomicU64::new(0);
/// `fn() -> [u64; 3]` (in use, cached, mapped), set by init; 0 = none.
static PROBE: AtomicUsize = AtomicUsize::new(0);

/// The signal action in place before ours, written once before our handler
/// is installed and only read after.
struct OldSlot(UnsafeCell<Option<OldAction>>);
// SAFETY: written once by `start` before the handler that reads it exists.
unsafe impl Sync for OldSlot {}
static OLD: OldSlot = OldSlot(UnsafeCell::new(None));

/// Why a dump is wanted.
pub const SIGNAL: u32 = 1;
pub const ALLOC_INTERVAL: u32 = 2;
pub const INUSE_INTERVAL: u32 = 4;
pub const HEAP_LIMIT: u32 = 8;
/// Not a dump: the main thread is exiting through pthread_exit.
const MAIN_EXITING: u32 = 16;
/// SIGTERM arrived: the exit dump, then the default action.
const TERMINATE: u32 = 32;

/// Whether the helper thread runs (set before our SIGTERM handler exists).
static HELPER: AtomicBool = AtomicBool::new(false);
/// SIGTERM's handler waits for CPython to finish starting (see catch_term).
static TERM_PENDING: AtomicBool = AtomicBool::new(false);
const TERM_POLL_MS: u64 = 20;
const TERM_WAIT_MS: u64 = 30_000;

/// How often, once the main thread has called pthread_exit, the helper
/// looks whether it is the last thread left.
const LIVENESS_MS: i32 = 500;

/// Reports the allocator's view for the stats file: in use, cached, mapped.
pub type StatsProbe = fn() -> [u64; 3];

pub fn set_stats_probe(f: StatsProbe) {
    PROBE.store(f as usize, Ordering::Relaxed);
}

/// Asks the helper thread for a dump; callable from any context, signal
/// handlers included.
pub fn request(reason: u32) {
    REQUEST.fetch_or(reason, Ordering::Release);
    io::futex_wake(&REQUEST);
}

/// The main thread is exiting through pthread_exit (its thread-exit
/// destructor runs): from now on the helper watches for being the last
/// thread. Only then does it read /proc, which opens a descriptor for a
/// moment; a program listing its descriptors never sees one otherwise.
pub fn main_thread_exiting() {
    request(MAIN_EXITING);
}

extern "C" fn on_signal(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    request(SIGNAL);
    // SAFETY: OLD was written before this handler was installed; chaining
    // passes on exactly what we received.
    unsafe {
        if let Some(old) = &*OLD.0.get() {
            old.chain(sig, info, ctx);
        }
    }
}

extern "C" fn on_term(sig: i32, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if HELPER.load(Ordering::Relaxed) {
        request(TERMINATE);
    } else {
        io::die_of(sig);
    }
}

/// SIGTERM (`kill`, multiprocessing's `Pool.terminate`) ends a process
/// without its destructors, so without the exit dump. Where the helper
/// thread runs and SIGTERM has its default action, memx catches it: the
/// helper writes the exit dump, then the process dies of SIGTERM as it
/// would have (the parent sees the same status), a dump's time later. Left
/// alone: a program that handles or ignores SIGTERM (its own handler,
/// installed later, replaces ours), SIGKILL (cannot be caught), and a
/// process without a helper thread (a signal handler cannot write a dump:
/// the thread it interrupted may hold the profiler's lock).
fn catch_term() {
    let c = config::get();
    if !c.profile_at_exit || !c.profile_sigterm || !HELPER.load(Ordering::Relaxed) {
        return;
    }
    if super::python::started().is_some() {
        // CPython reads every signal's action once while it starts, and
        // `signal.getsignal` reports what it read: a handler of ours seen
        // then would read as None (code that saves and restores it fails).
        // The helper installs it once the interpreter is up.
        TERM_PENDING.store(true, Ordering::Relaxed);
        io::futex_wake(&REQUEST);
        return;
    }
    install_term();
}

/// Our SIGTERM handler, if SIGTERM still has its default action; a handler
/// the program installed meanwhile (a race with this check) is put back.
fn install_term() {
    if !io::current_action(libc::SIGTERM).is_some_and(|a| a.is_default()) {
        return;
    }
    if let Some(old) = io::install_handler(libc::SIGTERM, on_term) {
        if !old.is_default() {
            io::restore_action(libc::SIGTERM, &old);
        }
    }
}

/// In a CPython process, while SIGTERM's handler waits for the interpreter
/// to finish starting: when to look next (every TERM_POLL_MS, for at most
/// TERM_WAIT_MS), or u64::MAX once done.
fn term_step(now: u64, since: u64) -> u64 {
    if !TERM_PENDING.load(Ordering::Relaxed) {
        return u64::MAX;
    }
    if super::python::started() == Some(true) {
        TERM_PENDING.store(false, Ordering::Relaxed);
        install_term();
        return u64::MAX;
    }
    if now.saturating_sub(since) > TERM_WAIT_MS * 1_000_000 {
        TERM_PENDING.store(false, Ordering::Relaxed);
        return u64::MAX;
    }
    now + TERM_POLL_MS * 1_000_000
}

/// Starts the helper thread (and the stats file), then installs the dump
/// signal's handler. Called once, from the library constructor.
pub fn start() {
    start_thread();
    catch_term();
    let sig = config::get().profile_signal as i32;
    if sig != 0 {
        // Record the previous action before ours is in place: a signal may
        // arrive as soon as it is.
        // SAFETY: no handler of ours is installed yet, so nothing reads OLD.
        unsafe { *OLD.0.get() = io::current_action(sig) };
        if io::install_handler(sig, on_signal).is_none() {
            sys::write_stderr(b"memx: cannot install the dump signal's handler\n");
        }
    }
}

/// Fork child: the parent's helper thread is not ours; start our own, with
/// a stats file of our own pid.
pub fn restart_in_child() {
    REQUEST.store(0, Ordering::Relaxed);
    start_thread();
}

/// Whether anything but the exit dump is asked for. Without a signal,
/// interval, stats or heap limit there is no helper thread at all: some
/// programs notice an extra thread (CPython 3.12+ warns on fork() in a
/// process with more than one).
fn thread_needed() -> bool {
    let c = config::get();
    c.profile_signal != 0
        || c.profile_alloc_interval != 0
        || c.profile_inuse_interval != 0
        || c.profile_time_interval != 0
        || c.stats_interval_ms != 0
        || c.heap_limit != 0
}

fn start_thread() {
    START_NS.store(sys::now_ns(), Ordering::Relaxed);
    if config::get().stats_interval_ms > 0 {
        open_stats_file();
    }
    let running = thread_needed() && io::spawn_thread(run);
    if thread_needed() && !running {
        sys::write_stderr(b"memx: cannot start the profiler's thread; dumps only at exit\n");
    }
    HELPER.store(running, Ordering::Relaxed);
}

fn elapsed_ms() -> u64 {
    (sys::now_ns() - START_NS.load(Ordering::Relaxed)) / 1_000_000
}

extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    let cfg = config::get();
    let dump_every = cfg.profile_time_interval.saturating_mul(1_000_000_000);
    let stats_every = cfg.stats_interval_ms.saturating_mul(1_000_000);
    let now = sys::now_ns();
    let mut next_dump = deadline(now, dump_every);
    let mut next_stats = if stats_every > 0 { now } else { u64::MAX };
    let mut next_liveness = u64::MAX;
    let mut next_term = u64::MAX;
    loop {
        let now = sys::now_ns();
        if next_term == u64::MAX && TERM_PENDING.load(Ordering::Relaxed) {
            next_term = now;
        }
        if now >= next_term {
            next_term = term_step(now, START_NS.load(Ordering::Relaxed));
        }
        if now >= next_liveness {
            next_liveness = now + LIVENESS_MS as u64 * 1_000_000;
            // The count still includes the exited main thread (a zombie).
            if io::thread_count() <= 2 && io::main_thread_exited() {
                // Every thread of the program has exited (pthread_exit):
                // end the process as glibc would have without us.
                io::exit(0);
            }
        }
        if now >= next_stats {
            write_stats_line();
            next_stats = deadline(next_stats.max(now.saturating_sub(stats_every)), stats_every);
        }
        if now >= next_dump {
            super::dump_now();
            next_dump = deadline(now, dump_every);
        }
        let request = REQUEST.swap(0, Ordering::Acquire);
        if request & MAIN_EXITING != 0 && next_liveness == u64::MAX {
            next_liveness = now;
        }
        if request & TERMINATE != 0 {
            super::at_exit();
            io::die_of(libc::SIGTERM);
        }
        if request & !MAIN_EXITING != 0 {
            super::dump_now();
        }
        if request != 0 {
            continue;
        }
        let wake = next_dump.min(next_stats).min(next_liveness).min(next_term);
        let timeout = if wake == u64::MAX {
            -1
        } else {
            (wake.saturating_sub(now) / 1_000_000).min(i32::MAX as u64) as i32
        };
        io::futex_wait(&REQUEST, 0, timeout);
    }
}

fn deadline(from: u64, every: u64) -> u64 {
    if every == 0 {
        u64::MAX
    } else {
        from.saturating_add(every)
    }
}

fn stats_path() -> super::dump::PathBuf {
    let mut path = super::dump::PathBuf::new();
    path.bytes(config::get().profile_prefix.as_bytes())
        .str(".")
        .u64(sys::getpid() as u64)
        .str(".stats\0");
    path
}

/// Creates `<prefix>.<pid>.stats` with its header. Each line after is
/// appended by opening and closing the file, so no descriptor of ours
/// stays open in the program.
fn open_stats_file() {
    let path = stats_path();
    match io::open_log(path.as_bytes(), true) {
        Ok(fd) => {
            let mut line = FixedBuf::<256>::new();
            line.str("# memx stats v1 pid=")
                .u64(sys::getpid() as u64)
                .str(" start_unix_ms=")
                .u64(io::unix_ms())
                .str("\n# time_ms in_use_bytes cached_bytes mapped_bytes rss_bytes\n");
            sys::write_fd(fd, line.as_bytes());
            io::close(fd);
            STATS_ON.store(true, Ordering::Relaxed);
        }
        Err(_) => {
            let mut line = FixedBuf::<400>::new();
            line.str("memx: cannot write the stats file ")
                .bytes(path.as_bytes().strip_suffix(b"\0").unwrap_or(b""))
                .str("; MEMX_STATS_INTERVAL ignored\n");
            sys::write_stderr(line.as_bytes());
        }
    }
}

fn append_stats(text: &[u8]) {
    if !STATS_ON.load(Ordering::Relaxed) {
        return;
    }
    if let Ok(fd) = io::open_log(stats_path().as_bytes(), false) {
        sys::write_fd(fd, text);
        io::close(fd);
    }
}

/// One line of the stats file: time, in use, cached, mapped, RSS.
pub fn write_stats_line() {
    let probe = PROBE.load(Ordering::Relaxed);
    if !STATS_ON.load(Ordering::Relaxed) || probe == 0 {
        return;
    }
    // SAFETY: PROBE holds only values stored by `set_stats_probe`, which
    // are `StatsProbe` function pointers.
    let probe: StatsProbe = unsafe { core::mem::transmute::<usize, StatsProbe>(probe) };
    let [in_use, cached, mapped] = probe();
    let mut line = FixedBuf::<160>::new();
    line.u64(elapsed_ms())
        .str(" ")
        .u64(in_use)
        .str(" ")
        .u64(cached)
        .str(" ")
        .u64(mapped)
        .str(" ")
        .usize(sys::rss_bytes())
        .str("\n");
    append_stats(line.as_bytes());
}

/// Marks a dump in the stats file, so plots can show when it was taken.
pub fn note_dump(path: &[u8]) {
    let mut line = FixedBuf::<400>::new();
    line.str("# dump ")
        .u64(elapsed_ms())
        .str(" ")
        .bytes(path)
        .str("\n");
    append_stats(line.as_bytes());
}
