//! Lazy initialisation, the thread-exit hook and fork handling.
//!
//! ld.so calls malloc before any constructor of ours could run, so the
//! allocator initialises on first use: an atomic state machine (UNINIT →
//! BUSY → READY). The core step (configuration, the thread-exit key) calls
//! nothing that allocates; the fork handlers are registered after READY is
//! published, because `pthread_atfork` itself may call malloc. Another
//! thread arriving during BUSY waits; the initialising thread re-entering
//! (impossible by construction, but cheap to survive) is served without a
//! thread cache.
//!
//! Fork: `prepare` takes every allocator lock in the global order (registry,
//! central lists by class, page heap, metadata) so the child inherits
//! consistent structures; `parent` releases them; `child` resets them and
//! reclaims the caches of threads that do not exist in the child. A
//! single-threaded process skips the locking (as glibc does), so fork from a
//! signal handler that interrupted malloc cannot deadlock.
//!
//! Owns: the init state, the thread-exit key. Must never: allocate during
//! the core step, or take a lock out of the global order.

use crate::central::{CENTRAL, TRANSFER};
use crate::config;
use crate::meta::META;
use crate::page_heap::HEAP;
use crate::profile;
use crate::sys;
use crate::thread_cache;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU8, Ordering};

const UNINIT: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNINIT);
static INIT_TID: AtomicI64 = AtomicI64::new(0);
static EXIT_KEY: AtomicU32 = AtomicU32::new(0);
static EXIT_KEY_OK: AtomicBool = AtomicBool::new(false);
static FORK_LOCKED: AtomicBool = AtomicBool::new(false);

/// Whether initialisation has finished.
pub fn is_ready() -> bool {
    STATE.load(Ordering::Acquire) == READY
}

/// Initialises the allocator if needed. False only when called recursively
/// by the initialising thread before initialisation finished.
#[inline]
pub fn ensure() -> bool {
    STATE.load(Ordering::Acquire) == READY || ensure_slow()
}

#[cold]
#[inline(never)]
fn ensure_slow() -> bool {
    loop {
        match STATE.compare_exchange(UNINIT, BUSY, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => {
                INIT_TID.store(sys::gettid(), Ordering::Relaxed);
                core_init();
                STATE.store(READY, Ordering::Release);
                late_init();
                return true;
            }
            Err(READY) => return true,
            Err(_) => {
                if INIT_TID.load(Ordering::Relaxed) == sys::gettid() {
                    return false;
                }
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            }
        }
    }
}

fn core_init() {
    // SAFETY: we are the only thread in initialisation (state BUSY).
    unsafe { config::install() };
    let cfg = config::get();
    {
        let mut heap = HEAP.lock();
        heap.set_release_rate(cfg.release_rate_mib);
        heap.set_limit(cfg.heap_limit as usize, Some(profile::limit_hit));
    }
    profile::configure(cfg);
    crate::guard::configure(cfg);
    crate::cpu_cache::configure(cfg.cpu_cache_bytes);
    thread_cache::set_budget(thread_cache_budget(cfg));
    if let Some(key) = sys::create_thread_key(thread_exit_destructor) {
        EXIT_KEY.store(key, Ordering::Relaxed);
        EXIT_KEY_OK.store(true, Ordering::Release);
    }
}

/// Where per-CPU caches exist, the thread caches' default budget is
/// bounded by CPUs, not threads: 1 MiB per usable CPU and 1 MiB more for
/// a thread that waits on the others (a pool's main thread, which keeps
/// its claim while it waits), at least one full thread cache
/// (PER_THREAD_MAX). Threads beyond it cache in their CPU's cache.
/// Without the bound, 16 request threads sleeping between bursts on 2 CPUs
/// held 18 MiB of idle caches (glibc's whole heap: 7 MiB); at 2 MiB per
/// CPU they peaked at 7.7 MiB, at 1 MiB at 6 MiB (since threads that sleep
/// give their caches back: 4 MiB per CPU 9.5 MiB, 3 MiB in all 6.0, 2 MiB
/// in all 5.2, glibc 6.6). The extra MiB is for mimalloc-bench's mstress
/// (2 workers, 8 B-100 KiB): at 2 MiB in all one worker's cap took most of
/// it and the other's lists stayed short; medians of 25 interleaved runs
/// gave 0.098 s at 2 MiB, 0.084 s at 3 MiB, 0.085 s at 8 MiB, and
/// mimalloc 0.085 s.
fn thread_cache_budget(cfg: &config::Config) -> u64 {
    if cfg.thread_cache_bytes_set || crate::cpu_cache::mode() != crate::cpu_cache::Mode::PerCpu {
        return cfg.thread_cache_bytes;
    }
    let by_cpus = (sys::usable_cpus() as u64 + 1) << 20;
    by_cpus
        .max(thread_cache::PER_THREAD_MAX as u64)
        .min(cfg.thread_cache_bytes)
}

fn late_init() {
    sys::at_fork(fork_prepare, fork_parent, fork_child);
}

/// Arms the thread-exit destructor for the calling thread.
pub fn arm_thread_exit(value: *mut u8) {
    if EXIT_KEY_OK.load(Ordering::Acquire) {
        sys::set_thread_key(EXIT_KEY.load(Ordering::Relaxed), value);
    }
}

unsafe extern "C" fn thread_exit_destructor(_value: *mut libc::c_void) {
    thread_cache::on_thread_exit();
    profile::thread_exiting();
}

/// Every allocator lock, in the global order.
fn for_each_lock(mut f: impl FnMut(&sys::lock::Lock)) {
    f(thread_cache::registry_lock());
    for c in CENTRAL.iter() {
        f(c.raw());
    }
    f(HEAP.raw());
    f(profile::lock());
    f(META.lock());
    f(crate::guard::lock());
}

unsafe extern "C" fn fork_prepare() {
    if sys::single_threaded() {
        FORK_LOCKED.store(false, Ordering::Relaxed);
        return;
    }
    for_each_lock(|l| l.lock_forever());
    FORK_LOCKED.store(true, Ordering::Relaxed);
}

unsafe extern "C" fn fork_parent() {
    if FORK_LOCKED.load(Ordering::Relaxed) {
        // SAFETY: `fork_prepare` took every lock on this thread.
        for_each_lock(|l| unsafe { l.unlock_raw() });
    }
    profile::after_fork_parent();
}

unsafe extern "C" fn fork_child() {
    // SAFETY: the child has one thread; whoever held a lock is gone (or is
    // this thread, which took them all in prepare).
    for_each_lock(|l| unsafe { l.reset() });
    for ring in TRANSFER.iter() {
        // SAFETY: the child's only thread.
        unsafe { ring.rebuild_after_fork() };
    }
    // SAFETY: single-threaded with every lock free.
    unsafe { thread_cache::reclaim_after_fork() };
    profile::fork_child();
}

/// `_exit`/`_Exit`: the profiler's exit dump (the destructors that would
/// write it do not run), then libc's `_exit`. Not from a thread already
/// inside the profiler (a signal handler that interrupted a sample).
pub fn fast_exit(code: i32) -> ! {
    if STATE.load(Ordering::Acquire) == READY && thread_cache::enter_profiler() {
        profile::at_fast_exit();
        thread_cache::leave_profiler();
    }
    sys::io::exit_now(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_is_bounded_by_cpus_only_with_cpu_caches() {
        ensure();
        let cfg = config::Config::DEFAULT;
        let budget = thread_cache_budget(&cfg);
        if crate::cpu_cache::mode() == crate::cpu_cache::Mode::PerCpu {
            let cpus = sys::usable_cpus() as u64;
            assert_eq!(
                budget,
                ((cpus + 1) << 20)
                    .max(thread_cache::PER_THREAD_MAX as u64)
                    .min(32 << 20)
            );
        } else {
            assert_eq!(budget, 32 << 20);
        }
        let given = config::Config {
            thread_cache_bytes: 1 << 30,
            thread_cache_bytes_set: true,
            ..cfg
        };
        assert_eq!(thread_cache_budget(&given), 1 << 30);
    }
}
