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
//! independent of the profiler's samples, and work with the profiler off),
//! and a point is taken only once the heap has grown to MEMX_GUARD_FROM
//! (`heap_allows`) and if the last guarded allocation is at least
//! 1/MEMX_GUARD_RATE seconds old (`rate_allows`). Points are drawn per byte
//! so that every allocation has the same chance, but a guarded object costs
//! per object: two stack walks, an mprotect and a mapping that drops its
//! pages (a TLB shootdown on every CPU the process runs on). At 16 MiB,
//! larson (mimalloc-bench; 2 threads, about 20 GB/s allocated) guarded 900
//! objects a second and lost 10-15% of its throughput; 14 µs each single-
//! threaded, several times that with the other thread's CPU interrupted.
//!
//! Why wait for the heap: guarding has a fixed cost in resident memory
//! whatever the process's size: the first stack walks page in the unwind
//! tables of every library on the stack (libc's alone about 120 KiB, with
//! the kernel's fault-around), the unwinder's text, the pool's metadata and
//! the guarded objects' own pages. mimalloc-bench's glibc-simple peaked at
//! 2064 KiB with it and 1636 KiB without (glibc: 1396), espresso 3408
//! against 3236, glibc-thread 3080 against 2808 (medians of 3). From 32
//! MiB of heap that cost is about 1% of the process; below, a small
//! process is left unguarded unless MEMX_GUARD_SAMPLE is set explicitly.
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
use crate::page_heap;
use crate::sampler;
use crate::sys::{self, fault, lock::Lock, unwind};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use pool::{Freed, Trace};

/// Nanoseconds between two guarded allocations: 10^9 / MEMX_GUARD_RATE
/// (0: no limit). Written once by `configure`.
static SPACING_NS: AtomicU64 = AtomicU64::new(0);
/// The earliest CLOCK_MONOTONIC time (ns) of the next guarded allocation:
/// the last one's time + SPACING_NS.
static NEXT_NS: AtomicU64 = AtomicU64::new(0);
/// Heap bytes mapped before the first guarded allocation
/// (`Config::guard_from_bytes`). Written once by `configure`.
static FROM_BYTES: AtomicUsize = AtomicUsize::new(0);

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
    SPACING_NS.store(spacing_ns(cfg.guard_rate), Relaxed);
    FROM_BYTES.store(cfg.guard_from_bytes() as usize, Relaxed);
    sampler::set_guard_mean(cfg.guard_sample as usize);
}

/// Nanoseconds between guarded allocations at `per_second` (0: no limit).
fn spacing_ns(per_second: u64) -> u64 {
    1_000_000_000u64.checked_div(per_second).unwrap_or(0)
}

/// Whether the heap has grown enough for guarding (MEMX_GUARD_FROM): one
/// atomic load per guard point; `mapped_ever` only grows, so once true it
/// stays true.
fn heap_allows() -> bool {
    page_heap::mapped_ever() >= FROM_BYTES.load(Relaxed)
}

/// Whether a guard point may be taken now (MEMX_GUARD_RATE): one clock read
/// per guard point, which comes at most every few KiB allocated. Of two
/// threads at the same moment one wins; the other allocates normally.
fn rate_allows() -> bool {
    let spacing = SPACING_NS.load(Relaxed);
    if spacing == 0 {
        return true;
    }
    let (now, next) = (sys::now_ns(), NEXT_NS.load(Relaxed));
    now >= next
        && NEXT_NS
            .compare_exchange(next, now + spacing, Relaxed, Relaxed)
            .is_ok()
}

/// A guarded object of `size` bytes, or null when this one cannot be
/// guarded or the rate limit says not now (the caller allocates it
/// normally). `capture`: the thread may run the unwinder (its re-entry
/// guard is set).
pub fn alloc(size: usize, capture: bool) -> *mut u8 {
    if size > pool::SLOT_PAGES * sys::os_page_size() || !heap_allows() || !rate_allows() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_becomes_spacing() {
        assert_eq!(spacing_ns(0), 0);
        assert_eq!(spacing_ns(20), 50_000_000);
        assert_eq!(spacing_ns(1_000_000), 1_000);
    }

    #[test]
    fn one_guard_point_per_spacing() {
        // The only test that touches the limiter's statics.
        SPACING_NS.store(spacing_ns(1), Relaxed);
        NEXT_NS.store(0, Relaxed);
        assert!(rate_allows(), "the first point is taken");
        assert!(!rate_allows(), "a second within the second is not");
        // Its time has come: taken, and the next is a second further on.
        NEXT_NS.store(sys::now_ns(), Relaxed);
        assert!(rate_allows());
        assert!(!rate_allows());
        SPACING_NS.store(0, Relaxed);
        assert!(rate_allows() && rate_allows(), "0 = no limit");
    }
}
