//! Guarded sampling (GWP-ASan style, `MEMX_GUARD_SAMPLE`): now and then an
//! allocation is placed on its own pages in the guarded pool (`pool`),
//! against an inaccessible guard page, and kept inaccessible for a while
//! after it is freed; an overflow, underflow or use after free of it then
//! faults at the guilty instruction, and memx's fault handler
//! (`sys::fault`) writes a report with its allocation and free stacks
//! (`report`).
//!
//! Which allocations: the thread cache's sampling countdown decides, at no
//! cost to the fast path (`sampler::Event::Guard`: guarded points form a
//! Poisson process over allocated bytes with mean MEMX_GUARD_SAMPLE,
//! independent of the profiler's samples, and work with the profiler off).
//!
//! The allocator calls in through: `configure` (init), `alloc` (at a guard
//! point, with the thread's re-entry guard set), `owns` / `free` /
//! `usable_size` (for pointers the page map does not know), and `lock`
//! (the fork handler). Owns: nothing beyond its submodules. Must never:
//! allocate through malloc, or be reached from the malloc/free fast paths.

mod elf;
mod pool;
mod report;

use crate::config::Config;
use crate::diag;
use crate::sampler;
use crate::sys::{fault, lock::Lock, unwind};
use pool::{Freed, Trace};

/// Turns guarded sampling on when MEMX_GUARD_SAMPLE is set (initialisation;
/// must not allocate).
pub fn configure(cfg: &Config) {
    // Not in the crate's unit tests: there memx's "own code" is the whole
    // test binary, and find_own_code would make every captured stack empty
    // (sys::unwind's own test relies on it not being called). The guarded
    // paths are tested through the preloaded library (cdylib-tests).
    if cfg.guard_sample == 0 || cfg!(test) {
        return;
    }
    // Reads memx's own program headers (no allocation): its frames are
    // dropped from the stacks from the first guarded object on.
    unwind::find_own_code();
    sampler::set_guard_mean(cfg.guard_sample as usize);
}

/// A guarded object of `size` bytes, or null when this one cannot be
/// guarded (the caller allocates it normally). `capture`: the thread may
/// run the unwinder (its re-entry guard is set).
pub fn alloc(size: usize, capture: bool) -> *mut u8 {
    if size > pool::SLOT_PAGES * crate::sys::os_page_size() {
        return core::ptr::null_mut();
    }
    let trace = if capture {
        Trace::capture()
    } else {
        Trace::EMPTY
    };
    pool::alloc(size, &trace, on_pool_ready)
}

/// Once, when the pool is first reserved: take over SIGSEGV and SIGBUS.
fn on_pool_ready() {
    fault::install(report::on_fault);
}

/// Whether `p` lies in the guarded pool (lock-free; false while unused).
#[inline]
pub fn owns(p: *const u8) -> bool {
    pool::owns(p as usize)
}

/// Frees the guarded object at `p` (`owns(p)`); a second free is reported
/// with its stacks, any other pointer is an invalid `call`. `capture` as
/// in `alloc`.
pub fn free(p: *mut u8, call: &str, capture: bool) {
    let trace = if capture {
        Trace::capture()
    } else {
        Trace::EMPTY
    };
    match pool::free(p as usize, &trace) {
        Freed::Ok => {}
        Freed::Twice(slot) => report::double_free(slot, p as usize),
        Freed::NotAnObject => diag::invalid_pointer(
            call,
            p as usize,
            "inside a guarded page, not the start of a live allocation",
        ),
    }
}

/// The requested size of the live guarded object at `p` (`owns(p)`).
pub fn usable_size(p: *mut u8, call: &str) -> usize {
    match pool::usable_size(p as usize) {
        Some(n) => n,
        None => diag::invalid_pointer(call, p as usize, "not the start of a live allocation"),
    }
}

/// The pool's lock, for the fork handler (a leaf, last in the order).
pub fn lock() -> &'static Lock {
    pool::lock()
}
