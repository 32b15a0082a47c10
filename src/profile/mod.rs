//! The heap-sampling profiler: which stacks allocated the sampled objects,
//! which of them are still live, and dumps of that in pprof's legacy heap
//! format.
//!
//! The allocator calls in through this interface only:
//! - `configure(cfg)` during initialisation (must not allocate): keeps
//!   `cfg`, from which every profiler setting is read (`cfg()`), and turns
//!   sampling on (`sampler::set_mean`) when `MEMX_PROFILE` is set;
//! - `start()` from the library constructor (libc is ready): installs the
//!   dump signal's handler (and starts the clock thread when a clock is set);
//! - `record_alloc(addr, size)` for each sampled object, with no allocator
//!   lock held and the thread's re-entry guard set; the returned `Sample`
//!   (None if not recorded) is kept on the object's span and handed back to
//!   `record_free` when it is freed. Both are called from one place,
//!   `thread_cache::sampling`; the layers below only keep the `Sample`;
//! - `limit_hit()` (passed by init to the page heap as its hook),
//!   `thread_exiting()`, `at_exit()`, `at_fast_exit()` (`_exit`),
//!   `fork_child()`, `after_fork_parent()`
//!   (serves requests that came while the fork handlers held every lock),
//!   and `lock()` for the fork handler's order.
//!
//! Layers: `table` (stacks and live records) ← `dump` (files) ← `worker`
//! (requests, dump writers, clock thread, stats file) ← this interface;
//! `published` (what `memx snapshot` reads) beside them.
//! Owns: the profiler's state and its lock. Must never: allocate through
//! malloc, take an allocator lock while holding its own (it may take META's,
//! which comes after it in the order), or write a dump from a signal handler.

mod debug_offsets;
mod dump;
mod line_cache;
mod peak;
mod process;
pub mod published;
pub mod pyhook;
pub mod python;
pub mod table;
mod worker;

use crate::config::Config;
use crate::sampler;
use crate::sys::lock::{Lock, Locked};
use crate::sys::unwind;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, Ordering};
use table::{StackTable, MAX_DEPTH};
pub use worker::StatsProbe;

/// Native frames captured per sample (Python frames come on top).
const NATIVE_DEPTH: usize = 64;

/// Estimated bytes allocated and in use (unsampled from the samples), and
/// the marks at which the interval triggers fire next.
#[derive(Default)]
struct Triggers {
    allocated: u64,
    in_use: u64,
    next_alloc_dump: u64,
    next_inuse_dump: u64,
}

impl Triggers {
    /// Counts a sample standing for `est` bytes; the dump reason, if one of
    /// the interval triggers fires.
    fn on_alloc(&mut self, est: u64, cfg: &Config) -> Option<u32> {
        self.allocated += est;
        self.in_use += est;
        let mut reason = None;
        if cfg.profile_alloc_interval > 0 && self.allocated >= self.next_alloc_dump {
            self.next_alloc_dump = self.allocated + cfg.profile_alloc_interval;
            reason = Some(worker::ALLOC_INTERVAL);
        }
        if cfg.profile_inuse_interval > 0 && self.in_use >= self.next_inuse_dump {
            // The new high-water mark plus the interval.
            self.next_inuse_dump = self.in_use + cfg.profile_inuse_interval;
            reason = Some(worker::INUSE_INTERVAL);
        }
        reason
    }

    fn on_free(&mut self, est: u64) {
        self.in_use = self.in_use.saturating_sub(est);
    }
}

pub(crate) struct State {
    table: StackTable,
    pyframes: python::FrameTable,
    triggers: Triggers,
    peak: peak::Peak,
}

pub(crate) static STATE: Locked<State> = Locked::new(State {
    table: StackTable::new(),
    pyframes: python::FrameTable::new(),
    triggers: Triggers {
        allocated: 0,
        in_use: 0,
        next_alloc_dump: 0,
        next_inuse_dump: 0,
    },
    peak: peak::Peak::new(),
});

/// When profiling was configured (monotonic ns): the peak's time origin.
static START_NS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Nanoseconds from the start of profiling to `t`.
fn since_start(t: u64) -> u64 {
    t.saturating_sub(START_NS.load(Ordering::Relaxed))
}

static ENABLED: AtomicBool = AtomicBool::new(false);
/// The process the profiler works for: set by `start` and in a fork child.
/// A vfork child (or a raw clone sharing our memory) has another pid: it
/// must not write our dumps or flags.
static OWN_PID: AtomicI32 = AtomicI32::new(0);
/// The last stats line and exit dump: FINAL_NONE, then FINAL_WRITING by
/// the one thread that writes them, then FINAL_DONE. Another thread's exit
/// (`_exit` while the helper writes the SIGTERM dump) waits for the file.
static FINAL: AtomicU32 = AtomicU32::new(FINAL_NONE);
const FINAL_NONE: u32 = 0;
const FINAL_WRITING: u32 = 1;
const FINAL_DONE: u32 = 2;
/// Where the exit dump is, for SIGTERM's handler.
pub(crate) enum ExitDump {
    NotStarted,
    Writing,
    Written,
}

pub(crate) fn exit_dump_progress() -> ExitDump {
    match FINAL.load(Ordering::SeqCst) {
        FINAL_NONE => ExitDump::NotStarted,
        FINAL_WRITING => ExitDump::Writing,
        _ => ExitDump::Written,
    }
}

/// How long an exit waits for another thread's final dump: the same thread
/// re-entering (a signal handler) must not wait forever.
const FINAL_WAIT_MS: i32 = 5000;

/// The configuration `configure` was given: every profiler setting is read
/// from it (null until then: the defaults).
static CONFIG: AtomicPtr<Config> = AtomicPtr::new(core::ptr::null_mut());
static DEFAULTS: Config = Config::DEFAULT;

/// The profiler's configuration (what `configure` was given).
pub(crate) fn cfg() -> &'static Config {
    let c = CONFIG.load(Ordering::Acquire);
    if c.is_null() {
        return &DEFAULTS;
    }
    // SAFETY: `configure` stored a `&'static Config`, never written after.
    unsafe { &*c }
}

/// Whether profiling is on (MEMX_PROFILE set).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns sampling on when MEMX_PROFILE is set. Runs during initialisation.
pub fn configure(cfg: &'static Config) {
    CONFIG.store(cfg as *const Config as *mut Config, Ordering::Release);
    published::set(cfg);
    if cfg.profile_prefix.is_empty() {
        if cfg.stats_interval_ms > 0 {
            crate::sys::write_stderr(
                b"memx: MEMX_STATS_INTERVAL needs MEMX_PROFILE (the file prefix); ignored\n",
            );
        }
        return;
    }
    {
        let mut st = STATE.lock();
        st.triggers.next_alloc_dump = cfg.profile_alloc_interval;
        st.triggers.next_inuse_dump = cfg.profile_inuse_interval;
    }
    START_NS.store(crate::sys::now_ns(), Ordering::Relaxed);
    sampler::set_seed(cfg.profile_seed);
    sampler::set_mean(cfg.profile_sample as usize);
    ENABLED.store(true, Ordering::Relaxed);
}

/// Where the stats file's numbers come from (set by init before `start`).
pub fn set_stats_probe(f: StatsProbe) {
    worker::set_stats_probe(f);
}

/// From the library constructor: finds memx's own code (to drop its frames),
/// warms the unwinder up, and installs the signal handler (and the clock
/// thread if a clock is set).
pub fn start() {
    if !enabled() {
        return;
    }
    OWN_PID.store(crate::sys::getpid(), Ordering::Relaxed);
    unwind::find_own_code();
    // The unwinder's first call may set up lazy state (and allocate); do it
    // now, outside any allocation.
    let mut frames = [0usize; 4];
    unwind::backtrace(&mut frames);
    python::detect();
    pyhook::detect();
    worker::start();
}

/// The profiler's record of one live sampled object, kept on its span
/// until the object is freed and handed back to `record_free`.
pub struct Sample(core::ptr::NonNull<table::Record>);

impl Sample {
    /// The object's allocation stack, innermost frame first.
    pub fn stack(&self) -> &[usize] {
        // SAFETY: a record lives until `record_free` takes its `Sample`;
        // its bucket's frames never change.
        unsafe { self.0.as_ref() }.bucket().frames()
    }
}

// SAFETY: a `Sample` is only followed by whoever holds its object's span
// (under the heap lock) or by `record_free` under the profiler's lock.
unsafe impl Send for Sample {}

/// Records a sampled object of `size` bytes with the calling stack. The
/// caller holds no allocator lock and has set the thread's re-entry guard.
/// None if profiling is off or the table is full.
pub fn record_alloc(_addr: usize, size: usize) -> Option<Sample> {
    if !enabled() {
        return None;
    }
    let mut native = [0usize; NATIVE_DEPTH];
    let depth = unwind::backtrace_until(&mut native, native_stop());
    let mut py = [python::PyFrame::default(); python::MAX_FRAMES];
    let npy = python::capture(&mut py);
    pyhook::maybe_install();
    // With no Python frames, stitching copies the native stack as it is.
    let mut words = [0usize; MAX_DEPTH];
    let len = python::stitch(&native[..depth], &py[..npy], &mut words);
    let est = estimate(size, sampler::mean());
    let (record, reason) = {
        let mut st = STATE.lock();
        for w in &mut words[..len] {
            if *w & python::TAG == python::TAG {
                let id = st.pyframes.intern(&py[*w & !python::TAG]).unwrap_or(0);
                *w = python::TAG | id as usize;
            }
        }
        let record = st.table.insert(&words[..len], size);
        let reason = if record.is_null() {
            None
        } else {
            let r = st.triggers.on_alloc(est, cfg());
            let State {
                table,
                triggers,
                peak,
                ..
            } = &mut *st;
            peak.on_alloc(triggers.in_use, table, crate::sys::now_ns);
            r
        };
        (record, reason)
    };
    match reason {
        Some(r) => worker::request(r),
        None => worker::serve_pending(),
    }
    worker::poll_term();
    core::ptr::NonNull::new(record).map(Sample)
}

/// Where a sample's native walk ends: in a Python process, after the
/// innermost call of the evaluation function (the Python frames read from
/// the thread state stand for everything outside it; `stitch` appends the
/// outer calls' frames), unless MEMX_PROFILE_NATIVE asks for every frame.
/// A thread running no Python code never meets that function and is walked
/// whole. The outer native frames are most of a Python stack (median 16
/// native frames per sample before, on py_alloc.py under 3.11) and libgcc
/// spends its time per frame.
fn native_stop() -> (usize, usize) {
    if cfg().profile_native {
        return (0, 0);
    }
    python::eval_range().unwrap_or((0, 0))
}

/// The sampled object whose record this is was freed.
pub fn record_free(sample: Sample) {
    {
        let mut st = STATE.lock();
        // SAFETY: `sample` came from `record_alloc` (its span kept it) and
        // its object is freed exactly once.
        let size = unsafe { st.table.remove(sample.0.as_ptr()) };
        st.triggers.on_free(estimate(size, sampler::mean()));
    }
    // A request that found the lock held is served by its holder.
    worker::serve_pending();
}

/// Writes a dump now (clock thread, exit, `dump_for_caller`), marking it in
/// the stats file; its path, None if it could not be written.
fn dump_now() -> Option<dump::PathBuf> {
    dump_now_as(dump::take_seq(), None)
}

/// Writes dump number `seq` (also in a dump writer, with its number and
/// snapshot taken by the process that asked).
fn dump_now_as(seq: u32, taken: Option<dump::Taken>) -> Option<dump::PathBuf> {
    let path = dump::write(seq, taken)?;
    worker::note_dump(path.as_bytes());
    Some(path)
}

/// A dump written now by the calling thread (`memx_dump`, which the Python
/// package calls), so it is on disk when this returns. Its path goes into
/// `out`, NUL-terminated. Returns the path's length; 0 when profiling is
/// off; -1 when the dump could not be written (stderr said why) or `out`
/// cannot hold the path.
pub fn dump_for_caller(out: &mut [u8]) -> isize {
    if !enabled() {
        return 0;
    }
    let Some(path) = dump_now() else {
        return -1;
    };
    let p = path.as_bytes();
    if p.len() >= out.len() {
        return -1;
    }
    out[..p.len()].copy_from_slice(p);
    out[p.len()] = 0;
    p.len() as isize
}

/// A guarded-sampling fault is about to end the process: a dump writer
/// (a copy-on-write child, see `worker`) writes the heap as it is, and the
/// faulting thread waits for it, so that `memx report` shows the heap at
/// the crash. True if one was written. Never writes from the faulting
/// thread itself (see the module rules).
pub fn dump_at_crash() -> bool {
    enabled() && worker::dump_and_wait()
}

/// The heap limit was hit for the first time: dump "what filled the heap".
pub fn limit_hit() {
    if enabled() {
        worker::request(worker::HEAP_LIMIT);
    }
}

/// A thread's exit destructor ran: if it is the process's main thread
/// (pthread_exit from main), other threads, and ours, live on.
pub fn thread_exiting() {
    // Asked only while profiling: two system calls at every thread's exit
    // were a tenth of those a short thread made (mimalloc-bench's mleak).
    if enabled() && crate::sys::gettid() == crate::sys::getpid() as i64 {
        worker::main_thread_exiting();
    }
}

/// From the library destructor: the last stats line and the exit dump.
pub fn at_exit() {
    if !enabled() {
        return;
    }
    let claimed = FINAL.compare_exchange(
        FINAL_NONE,
        FINAL_WRITING,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    if claimed.is_err() {
        let mut waited = 0;
        while FINAL.load(Ordering::Acquire) == FINAL_WRITING && waited < FINAL_WAIT_MS {
            crate::sys::io::futex_wait(&FINAL, FINAL_WRITING, 10);
            waited += 10;
        }
        return;
    }
    worker::write_stats_line();
    if cfg().profile_at_exit {
        dump_now();
        dump::write_peak();
    }
    // Dumps asked for before exit are complete when the process ends.
    crate::sys::snapshot_child::wait_all();
    FINAL.store(FINAL_DONE, Ordering::SeqCst);
    crate::sys::io::futex_wake(&FINAL);
    // SIGTERM came while the exit dump was being written.
    worker::die_if_terminated();
}

/// The process leaves through `_exit` (`os._exit`, multiprocessing's fork
/// and forkserver workers), skipping the library destructor: the same last
/// stats line and exit dump, from the process that owns them only. The
/// caller (not inside the profiler already) is any thread, possibly in a
/// signal handler that interrupted `record_free` on this very thread: if the
/// profiler's lock stays taken for 100 ms there is no dump rather than a
/// deadlock (other threads hold it for microseconds).
pub fn at_fast_exit() {
    if !enabled() || OWN_PID.load(Ordering::Relaxed) != crate::sys::getpid() {
        return;
    }
    let tick = AtomicU32::new(0);
    for _ in 0..100 {
        if !STATE.raw().is_locked() {
            at_exit();
            return;
        }
        crate::sys::io::futex_wait(&tick, 0, 1);
    }
}

/// Fork child (single-threaded, locks reset): own dump numbering,
/// clock thread and stats file; the inherited table stays (its live
/// samples are live in the child too).
pub fn fork_child() {
    published::set_pid();
    if enabled() {
        OWN_PID.store(crate::sys::getpid(), Ordering::Relaxed);
        FINAL.store(FINAL_NONE, Ordering::Relaxed);
        dump::reset_after_fork();
        worker::restart_in_child();
    }
}

pub fn lock() -> &'static Lock {
    STATE.raw()
}

/// The fork parent let go of every lock: serve what came meanwhile.
pub fn after_fork_parent() {
    if enabled() {
        worker::serve_pending();
    }
}

/// Bytes a sample of `size` stands for, when one is taken per `mean` bytes
/// on average: size / P(sampled) = size / (1 − e^(−size/mean)).
pub fn estimate(size: usize, mean: usize) -> u64 {
    if mean == 0 {
        return size as u64;
    }
    let x = size as f64 / mean as f64;
    (size as f64 / one_minus_exp_neg(x)) as u64
}

/// 1 − e^(−x) for x > 0, without libm (no_std): a series where it is
/// small, else e^(−x) by halving-range reduction.
fn one_minus_exp_neg(x: f64) -> f64 {
    if x >= 40.0 {
        return 1.0;
    }
    if x < 0.5 {
        // x − x²/2! + x³/3! − …, alternating and fast-converging here.
        let (mut term, mut sum) = (x, x);
        for n in 2..16 {
            term *= -x / n as f64;
            sum += term;
        }
        return sum;
    }
    const LN2: f64 = core::f64::consts::LN_2;
    let k = (x / LN2) as u64;
    let r = x - k as f64 * LN2;
    let (mut term, mut e) = (1.0f64, 1.0f64);
    for n in 1..20 {
        term *= -r / n as f64;
        e += term;
    }
    let two_to_minus_k = f64::from_bits((1023 - k) << 52);
    1.0 - e * two_to_minus_k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_minus_exp_neg_matches_std() {
        for &x in &[
            1e-9, 1e-4, 0.01, 0.3, 0.49, 0.5, 0.7, 1.0, 2.5, 10.0, 39.0, 50.0,
        ] {
            let want = -f64::exp_m1(-x);
            let got = one_minus_exp_neg(x);
            assert!((got - want).abs() <= want * 1e-12, "x={x}: {got} vs {want}");
        }
    }

    #[test]
    fn estimates_unsample_small_and_large_objects() {
        // A 1 KiB sample at 512 KiB stands for ~512.5 KiB of allocation.
        let e = estimate(1024, 512 << 10);
        assert!((524_000..=525_500).contains(&e), "{e}");
        // Far above the mean, every object is sampled: it stands for itself.
        assert_eq!(estimate(64 << 20, 512 << 10), 64 << 20);
        assert_eq!(estimate(100, 0), 100);
    }

    #[test]
    fn interval_triggers_fire_once_per_interval() {
        let cfg = Config {
            profile_alloc_interval: 1000,
            profile_inuse_interval: 500,
            ..Config::DEFAULT
        };
        let mut t = Triggers {
            next_alloc_dump: 1000,
            next_inuse_dump: 500,
            ..Triggers::default()
        };
        assert_eq!(t.on_alloc(400, &cfg), None);
        assert_eq!(t.on_alloc(200, &cfg), Some(worker::INUSE_INTERVAL));
        t.on_free(600);
        // In use went down: the high-water mark (600 + 500) is not reached.
        assert_eq!(t.on_alloc(500, &cfg), Some(worker::ALLOC_INTERVAL));
        assert_eq!(t.on_alloc(100, &cfg), None);
        assert_eq!(t.on_alloc(500, &cfg), Some(worker::INUSE_INTERVAL));
    }
}
