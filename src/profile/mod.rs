//! The heap-sampling profiler: which stacks allocated the sampled objects,
//! which of them are still live, and dumps of that in pprof's legacy heap
//! format.
//!
//! The allocator calls in through this interface only:
//! - `configure(cfg)` during initialisation (must not allocate): turns
//!   sampling on (`sampler::set_mean`) when `MEMX_PROFILE` is set;
//! - `start()` from the library constructor (libc is ready): installs the
//!   dump signal's handler and starts the dump thread;
//! - `record_alloc(addr, size)` for each sampled object, with no allocator
//!   lock held; the returned record (null if not recorded) is kept on the
//!   object's span and handed back to `record_free` when it is freed;
//! - `at_exit()`, `fork_child()`, and `lock()` for the fork handler's order.
//!
//! Owns: the profiler's tables and its lock. Must never: allocate through
//! malloc, take an allocator lock while holding its own (it may take META's,
//! which comes after it in the order), or write a dump from a signal handler.

use crate::config::Config;
use crate::sys::lock::Lock;

static LOCK: Lock = Lock::new();

/// Whether profiling is on (MEMX_PROFILE set).
pub fn enabled() -> bool {
    false
}

pub fn configure(_cfg: &Config) {}

pub fn start() {}

pub fn record_alloc(_addr: usize, _size: usize) -> *mut u8 {
    core::ptr::null_mut()
}

pub fn record_free(_record: *mut u8) {}

pub fn at_exit() {}

pub fn fork_child() {}

pub fn lock() -> &'static Lock {
    &LOCK
}
