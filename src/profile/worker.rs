//! How dump requests are served, the clock thread, and the stats file.
//!
//! Requests (the dump signal, the interval triggers, the heap limit) are
//! served without a thread: the requesting context (a signal handler, or
//! the allocating thread) takes the profiler's lock if it is free, copies
//! the counts (as every dump does), lets go, and starts a detached
//! copy-on-write child that writes the dump from that copy
//! (sys::snapshot_child). A try-lock, a copy into fresh pages, one clone
//! and one wait are all async-signal-safe, so a program blocked in read(),
//! idle or asleep is served at once. If the lock is busy, the request is
//! left in PENDING and whoever holds the lock serves it when it lets go
//! (`serve_pending`, called after every unlock of the profiler's lock in
//! this process).
//!
//! Why not a helper thread, as before: a resident thread is seen by the
//! program. glibc's set*id calls replay on every pthread (`__nptl_setxid`),
//! and a launcher that dropped capabilities on its own thread first
//! (`setpriv --init-groups`) gets EPERM from ours and aborts; CPython 3.12+
//! warns on fork() in a process with threads. Why not start a thread when a
//! request comes: a signal handler cannot call pthread_create, and the
//! first allocation after a request may never come (a server blocked in
//! accept). Why not write the dump in the handler: the table may be
//! mid-update on the interrupted thread, and a dump takes milliseconds.
//!
//! A thread is still started for the clocks, MEMX_PROFILE_TIME_INTERVAL and
//! MEMX_STATS_INTERVAL, which need something that wakes up on its own
//! (a timer signal would interrupt the program's sleeps). The README says
//! not to combine them with a privilege-dropping launcher.
//! The clock thread must not keep a process alive whose own threads have
//! all exited (glibc ends a process with exit(0) when its last thread
//! exits): once the main thread has called pthread_exit, it checks every
//! half second, and ends the process the same way.
//! Owns: the pending requests, the wake word of the clock thread, the
//! previous signal action, the stats file name.
//! Must never: write a dump from the signal handler or from an allocating
//! thread, or wait for a lock from either.

use super::published;
use crate::sys;
use crate::sys::io::{self, OldAction};
use crate::sys::snapshot_child::{self, SpawnError};
use crate::util::fmt::FixedBuf;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Non-zero when a dump is wanted and not yet started (a bit per reason).
static PENDING: AtomicU32 = AtomicU32::new(0);
/// The clock thread's wake word (MAIN_EXITING).
static WAKE: AtomicU32 = AtomicU32::new(0);
/// Set in a dump writer: it serves nothing (it only writes its snapshot).
static IN_WRITER: AtomicBool = AtomicBool::new(false);
/// Whether a thread is serving requests (starting a writer).
static SERVING: AtomicBool = AtomicBool::new(false);
/// The sequence number and snapshot the next writer writes; set and
/// cleared by the thread that holds SERVING.
static WRITER_SEQ: AtomicU32 = AtomicU32::new(0);
struct TakenSlot(UnsafeCell<Option<super::dump::Taken>>);
// SAFETY: only the thread holding SERVING reads or writes it.
unsafe impl Sync for TakenSlot {}
static TAKEN: TakenSlot = TakenSlot(UnsafeCell::new(None));
static REPORTED_SPAWN_FAILURE: AtomicBool = AtomicBool::new(false);
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
/// A guarded-sampling fault: the process is about to die of it.
pub const CRASH: u32 = 32;

/// SIGTERM's handler waits for CPython to finish starting (see catch_term).
static TERM_PENDING: AtomicBool = AtomicBool::new(false);
/// SIGTERM arrived and its dump could not be started from the handler: the
/// profiler's lock was held (perhaps by the very thread the signal
/// interrupted, which can only let go once the handler returns) or the
/// exit dump was being written. Whoever finishes that work (the lock's
/// holder, once its writer is started; `at_exit`, once the exit dump is
/// written) ends the process with SIGTERM. Set before the dump is asked
/// for, so that a server that takes the request sees it.
static TERM_DEFERRED: AtomicBool = AtomicBool::new(false);

/// How often, once the main thread has called pthread_exit, the clock
/// thread looks whether it is the last thread left.
const LIVENESS_MS: i32 = 500;

/// Reports the allocator's view for the stats file: in use, cached, mapped.
pub type StatsProbe = fn() -> [u64; 3];

pub fn set_stats_probe(f: StatsProbe) {
    PROBE.store(f as usize, Ordering::Relaxed);
}

/// Asks for a dump; callable from any context (signal handlers, with
/// allocator locks held): it never waits.
pub fn request(reason: u32) {
    PENDING.fetch_or(reason, Ordering::SeqCst);
    serve_pending();
}

/// Starts a writer for the pending requests if the profiler's lock is free;
/// else its holder does, when it lets go. Cheap when nothing is pending.
///
/// The lock is held only while the counts are copied (as for any dump);
/// the fork that follows copies the process's page tables (~0.1 s per GiB
/// of private memory on the test machine) with no lock held, so only the
/// asking thread waits for it.
pub fn serve_pending() {
    if IN_WRITER.load(Ordering::Relaxed) {
        return;
    }
    while PENDING.load(Ordering::SeqCst) != 0 {
        // One server at a time: it loops until nothing is pending.
        if SERVING.swap(true, Ordering::SeqCst) {
            return;
        }
        let taken = {
            let Some(st) = super::STATE.try_lock() else {
                SERVING.store(false, Ordering::SeqCst);
                // The holder serves when it lets go (it reads PENDING and
                // SERVING after unlocking); unless it already did.
                if super::lock().is_locked() {
                    return;
                }
                continue;
            };
            if PENDING.swap(0, Ordering::SeqCst) == 0 {
                None
            } else {
                WRITER_SEQ.store(super::dump::take_seq(), Ordering::Relaxed);
                super::dump::take(&st)
            }
        };
        if let Some(taken) = taken {
            // SAFETY: SERVING is ours: no other thread touches TAKEN now.
            unsafe { *TAKEN.0.get() = Some(taken) };
            let spawned = snapshot_child::spawn(write_in_child);
            // SAFETY: as above; the writer has its own copy.
            if let Some(t) = unsafe { (*TAKEN.0.get()).take() } {
                t.discard();
            }
            match spawned {
                Ok(()) => published::count_dump(),
                Err(e) => spawn_failed(e),
            }
            die_if_terminated();
        }
        SERVING.store(false, Ordering::SeqCst);
    }
}

/// The writer: writes the copy its parent took, under the sequence number
/// the parent drew, and exits.
fn write_in_child() -> ! {
    IN_WRITER.store(true, Ordering::Relaxed);
    super::dump::reset_lock_in_writer();
    // SAFETY: the writer has one thread; this is its copy of TAKEN.
    let taken = unsafe { (*TAKEN.0.get()).take() };
    super::dump_now_as(WRITER_SEQ.load(Ordering::Relaxed), taken);
    snapshot_child::exit_now()
}

fn spawn_failed(e: SpawnError) {
    published::count_failed();
    if let SpawnError::Busy = e {
        // Another thread is starting a writer for the same snapshot moment.
        return;
    }
    if REPORTED_SPAWN_FAILURE.swap(true, Ordering::Relaxed) {
        return;
    }
    let mut line = FixedBuf::<200>::new();
    line.str("memx: cannot start the dump writer (clone: errno ");
    if let SpawnError::Clone(n) = e {
        line.u64(n as u64);
    }
    line.str("); no dump for this request (further failures are not reported)\n");
    sys::write_stderr(line.as_bytes());
}

/// Asks for a dump from a fault handler and waits for its writer: true
/// when one was started and has finished. False when the profiler's lock
/// was busy (its holder, perhaps the faulting thread, would serve the
/// request only after the process is gone) or no writer could be started.
pub fn dump_and_wait() -> bool {
    let before = published::dumps_started();
    request(CRASH);
    snapshot_child::wait_all();
    published::dumps_started() != before
}

/// The main thread is exiting through pthread_exit (its thread-exit
/// destructor runs): from now on the clock thread watches for being the
/// last thread. Only then does it read /proc, which opens a descriptor for
/// a moment; a program listing its descriptors never sees one otherwise.
pub fn main_thread_exiting() {
    WAKE.fetch_or(MAIN_EXITING, Ordering::Release);
    io::futex_wake(&WAKE);
}

extern "C" fn on_signal(sig: i32, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    published::count_handled();
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
    TERM_DEFERRED.store(true, Ordering::SeqCst);
    match super::exit_dump_progress() {
        super::ExitDump::Written => io::die_of(sig),
        // `at_exit` dies once the file is complete (this thread may be the
        // one writing it: waiting here would never end).
        super::ExitDump::Writing => return,
        super::ExitDump::NotStarted => {}
    }
    if dump_and_wait() {
        io::die_of(sig);
    }
    // The lock was busy: the request waits in PENDING for its holder (or a
    // server is mid-way), which starts the writer and then ends the process
    // (`die_if_terminated`). Otherwise no writer could be started at all.
    if PENDING.load(Ordering::SeqCst) != 0 || SERVING.load(Ordering::SeqCst) {
        return;
    }
    io::die_of(sig);
}

/// After a writer was started (or the exit dump written): if SIGTERM came
/// meanwhile and was deferred to us, waits for the writers and dies of it,
/// as the process would have without memx, a dump's time later.
pub fn die_if_terminated() {
    if TERM_DEFERRED.load(Ordering::SeqCst) {
        snapshot_child::wait_all();
        io::die_of(libc::SIGTERM);
    }
}

/// SIGTERM (`kill`, multiprocessing's `Pool.terminate`) ends a process
/// without its destructors, so without the exit dump. Where SIGTERM has its
/// default action, memx catches it: a dump writer writes the heap as it is
/// (the handler only takes a copy and waits, as for the dump signal), then
/// the process dies of SIGTERM as it would have (the parent sees the same
/// status), a dump's time later. Left alone: a program that handles or
/// ignores SIGTERM (its own handler, installed later, replaces ours), and
/// SIGKILL (cannot be caught).
fn catch_term() {
    let c = super::cfg();
    if !c.profile_at_exit || !c.profile_sigterm {
        return;
    }
    if super::python::started().is_some() {
        // CPython reads every signal's action once while it starts, and
        // `signal.getsignal` reports what it read: a handler of ours seen
        // then would read as None (code that saves and restores it fails).
        // The first sample after the interpreter is up installs it.
        TERM_PENDING.store(true, Ordering::Relaxed);
        return;
    }
    install_term();
}

/// From each sample: in a CPython process whose SIGTERM handler waits for
/// the interpreter to finish starting, installs it once it has.
pub fn poll_term() {
    if TERM_PENDING.load(Ordering::Relaxed)
        && super::python::started() == Some(true)
        && TERM_PENDING.swap(false, Ordering::Relaxed)
    {
        install_term();
    }
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

/// Starts the clock thread if a clock is set (and the stats file), then
/// installs the dump signal's handler (and SIGTERM's). Called once, from
/// the library constructor.
pub fn start() {
    snapshot_child::share_word();
    start_clock();
    catch_term();
    let sig = super::cfg().profile_signal as i32;
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

/// Fork child (the program's own fork): requests of the parent are the
/// parent's; the clock thread, if any, is not ours: start our own, with a
/// stats file of our own pid.
pub fn restart_in_child() {
    PENDING.store(0, Ordering::Relaxed);
    TERM_DEFERRED.store(false, Ordering::Relaxed);
    SERVING.store(false, Ordering::Relaxed);
    snapshot_child::forget_after_fork();
    snapshot_child::share_word();
    WAKE.store(0, Ordering::Relaxed);
    start_clock();
}

/// Whether a clock is set: only then is there a thread. Signals, interval
/// triggers and the heap limit need none.
fn clock_needed() -> bool {
    let c = super::cfg();
    c.profile_time_interval != 0 || c.stats_interval_ms != 0
}

fn start_clock() {
    START_NS.store(sys::now_ns(), Ordering::Relaxed);
    if super::cfg().stats_interval_ms > 0 {
        open_stats_file();
    }
    if clock_needed() && !io::spawn_thread(run) {
        sys::write_stderr(
            b"memx: cannot start the profiler's clock thread; no timed dumps or stats\n",
        );
    }
}

fn elapsed_ms() -> u64 {
    (sys::now_ns() - START_NS.load(Ordering::Relaxed)) / 1_000_000
}

extern "C" fn run(_: *mut libc::c_void) -> *mut libc::c_void {
    let cfg = super::cfg();
    let dump_every = cfg.profile_time_interval.saturating_mul(1_000_000_000);
    let stats_every = cfg.stats_interval_ms.saturating_mul(1_000_000);
    let now = sys::now_ns();
    let mut next_dump = deadline(now, dump_every);
    let mut next_stats = if stats_every > 0 { now } else { u64::MAX };
    let mut next_liveness = u64::MAX;
    loop {
        let now = sys::now_ns();
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
        let wake = WAKE.swap(0, Ordering::Acquire);
        if wake & MAIN_EXITING != 0 && next_liveness == u64::MAX {
            next_liveness = now;
        }
        if wake != 0 {
            continue;
        }
        let at = next_dump.min(next_stats).min(next_liveness);
        let timeout = if at == u64::MAX {
            -1
        } else {
            (at.saturating_sub(now) / 1_000_000).min(i32::MAX as u64) as i32
        };
        io::futex_wait(&WAKE, 0, timeout);
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
    path.bytes(super::cfg().profile_prefix.as_bytes())
        .str(".")
        .u64(published::pid() as u64)
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
                .u64(published::pid() as u64)
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
