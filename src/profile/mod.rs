//! The heap-sampling profiler: which stacks allocated the sampled objects,
//! which of them are still live, and dumps of that in pprof's legacy heap
//! format.
//!
//! The allocator calls in through this interface only:
//! - `configure(cfg)` during initialisation (must not allocate): turns
//!   sampling on (`sampler::set_mean`) when `MEMX_PROFILE` is set;
//! - `start()` from the library constructor (libc is ready): installs the
//!   dump signal's handler and starts the helper thread;
//! - `record_alloc(addr, size)` for each sampled object, with no allocator
//!   lock held and the thread's re-entry guard set; the returned record
//!   (null if not recorded) is kept on the object's span and handed back to
//!   `record_free` when it is freed;
//! - `limit_hit()`, `at_exit()`, `fork_child()`, and `lock()` for the fork
//!   handler's order.
//!
//! Layers: `table` (stacks and live records) ← `dump` (files) ← `worker`
//! (signal, helper thread, stats file) ← this interface.
//! Owns: the profiler's state and its lock. Must never: allocate through
//! malloc, take an allocator lock while holding its own (it may take META's,
//! which comes after it in the order), or write a dump from a signal handler.

mod debug_offsets;
mod dump;
mod peak;
pub mod pyhook;
pub mod python;
pub mod table;
mod worker;

use crate::config::{self, Config};
use crate::sampler;
use crate::sys::lock::{Lock, Locked};
use crate::sys::unwind;
use core::sync::atomic::{AtomicBool, Ordering};
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

/// Whether profiling is on (MEMX_PROFILE set).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns sampling on when MEMX_PROFILE is set. Runs during initialisation.
pub fn configure(cfg: &Config) {
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
/// warms the unwinder up, and starts the helper thread and signal handler.
pub fn start() {
    if !enabled() {
        return;
    }
    unwind::find_own_code();
    // The unwinder's first call may set up lazy state (and allocate); do it
    // now, outside any allocation.
    let mut frames = [0usize; 4];
    unwind::backtrace(&mut frames);
    python::detect();
    pyhook::detect();
    worker::start();
}

/// Records a sampled object of `size` bytes with the calling stack. The
/// caller holds no allocator lock and has set the thread's re-entry guard.
pub fn record_alloc(_addr: usize, size: usize) -> *mut u8 {
    if !enabled() {
        return core::ptr::null_mut();
    }
    let mut native = [0usize; NATIVE_DEPTH];
    let depth = unwind::backtrace(&mut native);
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
            let r = st.triggers.on_alloc(est, config::get());
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
    if let Some(r) = reason {
        worker::request(r);
    }
    record as *mut u8
}

/// The sampled object whose record this is was freed.
pub fn record_free(record: *mut u8) {
    let mut st = STATE.lock();
    // SAFETY: `record` came from `record_alloc` (its span kept it) and its
    // object is freed exactly once.
    let size = unsafe { st.table.remove(record as *mut table::Record) };
    st.triggers.on_free(estimate(size, sampler::mean()));
}

/// Writes a dump now (helper thread, exit), marking it in the stats file.
fn dump_now() {
    if let Some(path) = dump::write(dump::Kind::Now) {
        worker::note_dump(path.as_bytes());
    }
}

/// The heap limit was hit for the first time: dump "what filled the heap".
pub fn limit_hit() {
    if enabled() {
        worker::request(worker::HEAP_LIMIT);
    }
}

/// A thread's exit destructor ran; `main` if it is the process's main
/// thread (pthread_exit from main: other threads, and ours, live on).
pub fn thread_exiting(main: bool) {
    if main && enabled() {
        worker::main_thread_exiting();
    }
}

/// From the library destructor: the last stats line and the exit dump.
pub fn at_exit() {
    if !enabled() {
        return;
    }
    worker::write_stats_line();
    if config::get().profile_at_exit {
        dump_now();
        dump::write(dump::Kind::Peak);
    }
}

/// Fork child (single-threaded, locks reset): own dump numbering,
/// helper thread and stats file; the inherited table stays (its live
/// samples are live in the child too).
pub fn fork_child() {
    if enabled() {
        dump::reset_after_fork();
        worker::restart_in_child();
    }
}

pub fn lock() -> &'static Lock {
    STATE.raw()
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
