//! The profiler's helper thread and what wakes it: the dump signal's
//! handler, dump requests from the allocation path (interval triggers, the
//! heap limit), the time interval, and the memory-statistics ticker.
//!
//! Requests travel through a non-blocking pipe: writing one byte is
//! async-signal-safe and never blocks an allocating thread.
//! Owns: the pipe, the previous signal action, the stats file.
//! Must never: write a dump from the signal handler or from an allocating
//! thread, or let a broken pipe (a program that closed our descriptors)
//! turn into a busy loop.

use crate::config;
use crate::sys;
use crate::sys::io::{self, OldAction, Wait};
use crate::util::fmt::FixedBuf;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicUsize, Ordering};

static READ_FD: AtomicI32 = AtomicI32::new(-1);
static WRITE_FD: AtomicI32 = AtomicI32::new(-1);
static STATS_FD: AtomicI32 = AtomicI32::new(-1);
static START_NS: AtomicU64 = AtomicU64::new(0);
/// `fn() -> [u64; 3]` (in use, cached, mapped), set by init; 0 = none.
static PROBE: AtomicUsize = AtomicUsize::new(0);

/// The signal action in place before ours, written once before our handler
/// is installed and only read after.
struct OldSlot(UnsafeCell<Option<OldAction>>);
// SAFETY: written once by `start` before the handler that reads it exists.
unsafe impl Sync for OldSlot {}
static OLD: OldSlot = OldSlot(UnsafeCell::new(None));

/// Why a dump is wanted (the byte sent through the pipe).
pub const SIGNAL: u8 = b'S';
pub const ALLOC_INTERVAL: u8 = b'A';
pub const INUSE_INTERVAL: u8 = b'I';
pub const HEAP_LIMIT: u8 = b'L';

/// Reports the allocator's view for the stats file: in use, cached, mapped.
pub type StatsProbe = fn() -> [u64; 3];

pub fn set_stats_probe(f: StatsProbe) {
    PROBE.store(f as usize, Ordering::Relaxed);
}

/// Asks the helper thread for a dump; callable from any context.
pub fn request(reason: u8) {
    let fd = WRITE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        io::poke(fd, reason);
    }
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

/// Starts the helper thread (and the stats file), then installs the dump
/// signal's handler. Called once, from the library constructor.
pub fn start() {
    START_NS.store(sys::now_ns(), Ordering::Relaxed);
    start_thread();
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

/// Fork child: the parent's pipe and thread are not ours; start our own,
/// with a stats file of our own pid.
pub fn restart_in_child() {
    for fd in [&READ_FD, &WRITE_FD, &STATS_FD] {
        let old = fd.swap(-1, Ordering::Relaxed);
        if old >= 0 {
            io::close(old);
        }
    }
    START_NS.store(sys::now_ns(), Ordering::Relaxed);
    start_thread();
}

fn start_thread() {
    let cfg = config::get();
    if cfg.stats_interval_ms > 0 {
        open_stats_file();
    }
    let Some((r, w)) = io::pipe() else {
        sys::write_stderr(b"memx: cannot create the profiler's pipe; dumps only at exit\n");
        return;
    };
    READ_FD.store(r, Ordering::Relaxed);
    WRITE_FD.store(w, Ordering::Relaxed);
    if !io::spawn_thread(run) {
        sys::write_stderr(b"memx: cannot start the profiler's thread; dumps only at exit\n");
        WRITE_FD.store(-1, Ordering::Relaxed);
        READ_FD.store(-1, Ordering::Relaxed);
        io::close(r);
        io::close(w);
    }
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
    let mut fd = READ_FD.load(Ordering::Relaxed);
    loop {
        let now = sys::now_ns();
        if now >= next_stats {
            write_stats_line();
            next_stats = deadline(next_stats.max(now.saturating_sub(stats_every)), stats_every);
        }
        if now >= next_dump {
            super::dump_now();
            next_dump = deadline(now, dump_every);
        }
        let wake = next_dump.min(next_stats);
        let timeout = if wake == u64::MAX {
            -1
        } else {
            (wake.saturating_sub(now) / 1_000_000).min(i32::MAX as u64) as i32
        };
        match io::wait_readable(fd, if fd < 0 && timeout < 0 { 1000 } else { timeout }) {
            Wait::Readable => {
                let mut bytes = [0u8; 64];
                if io::read_fd(fd, &mut bytes) > 0 {
                    super::dump_now();
                } else {
                    fd = -1;
                }
            }
            Wait::Broken => fd = -1,
            Wait::Timeout => {}
        }
    }
}

fn deadline(from: u64, every: u64) -> u64 {
    if every == 0 {
        u64::MAX
    } else {
        from.saturating_add(every)
    }
}

fn open_stats_file() {
    let mut path = super::dump::PathBuf::new();
    path.bytes(config::get().profile_prefix.as_bytes())
        .str(".")
        .u64(sys::getpid() as u64)
        .str(".stats\0");
    match io::create_log(path.as_bytes()) {
        Ok(fd) => {
            let mut line = FixedBuf::<256>::new();
            line.str("# memx stats v1 pid=")
                .u64(sys::getpid() as u64)
                .str(" start_unix_ms=")
                .u64(io::unix_ms())
                .str("\n# time_ms in_use_bytes cached_bytes mapped_bytes rss_bytes\n");
            sys::write_fd(fd, line.as_bytes());
            STATS_FD.store(fd, Ordering::Relaxed);
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

/// One line of the stats file: time, in use, cached, mapped, RSS.
pub fn write_stats_line() {
    let fd = STATS_FD.load(Ordering::Relaxed);
    let probe = PROBE.load(Ordering::Relaxed);
    if fd < 0 || probe == 0 {
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
    sys::write_fd(fd, line.as_bytes());
}

/// Marks a dump in the stats file, so plots can show when it was taken.
pub fn note_dump(path: &[u8]) {
    let fd = STATS_FD.load(Ordering::Relaxed);
    if fd < 0 {
        return;
    }
    let mut line = FixedBuf::<400>::new();
    line.str("# dump ")
        .u64(elapsed_ms())
        .str(" ")
        .bytes(path)
        .str("\n");
    sys::write_fd(fd, line.as_bytes());
}
