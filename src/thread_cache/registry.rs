//! The registry of live thread caches: creation on a thread's first slow
//! path, the flush at thread exit, reclaiming the caches of threads a fork
//! child does not have, and the walk statistics make.
//!
//! Owns: `REGISTRY` (the list of live caches and their pool). Must never:
//! follow another thread's cache without the registry lock, or touch a
//! cache whose owner is alive other than to read its atomics.

use super::sizing::give_back;
use super::slow::{flush, flush_to_central};
use super::{current, ThreadCache, EMPTY_CACHE, EXITED_CACHE, FRESH_CACHE};
use crate::diag;
use crate::free_object::chain_len;
use crate::free_object::link_key;
use crate::meta::Pool;
use crate::sampler;
use crate::sys::lock::Locked;
use crate::sys::tls;
use core::sync::atomic::Ordering::Relaxed;

/// A cache's place in the registry (owner-only; `next`/`prev` are changed
/// under the registry lock).
pub(super) struct Membership {
    /// Neighbours in the registry's doubly linked list (null at the ends).
    next: *mut ThreadCache,
    prev: *mut ThreadCache,
}

impl Membership {
    pub(super) const fn new() -> Self {
        Membership {
            next: core::ptr::null_mut(),
            prev: core::ptr::null_mut(),
        }
    }
}

struct Registry {
    /// The live caches, linked through `Membership`; `count` of them.
    head: *mut ThreadCache,
    count: usize,
    /// Of those, the caches whose thread has allocated at least one
    /// scavenge period's bytes (`Sizing::counted_busy`): busy ≤ count.
    busy: usize,
    /// Caches created so far (part of each new thread's sampler seed).
    created: u64,
    pool: Pool<ThreadCache>,
}

// SAFETY: the raw pointers are only followed with the registry lock held.
unsafe impl Send for Registry {}

static REGISTRY: Locked<Registry> = Locked::new(Registry {
    head: core::ptr::null_mut(),
    count: 0,
    busy: 0,
    created: 0,
    pool: Pool::new(),
});

pub(super) fn is_static(tc: *const ThreadCache) -> bool {
    core::ptr::eq(tc, &EMPTY_CACHE) || core::ptr::eq(tc, &EXITED_CACHE)
}

/// The registry links of `tc`.
///
/// # Safety
/// `tc` is a registered cache and the registry lock is held (or the
/// process is single-threaded).
unsafe fn member<'a>(tc: *mut ThreadCache) -> &'a mut Membership {
    // SAFETY: registry-owned part of a live cache (caller).
    unsafe { &mut (*tc).cold().member }
}

/// This thread's cache, creating it on first use; `None` for a thread past
/// its exit flush, or while the allocator cannot initialise. Inlined into
/// every slow path; `create` is not, since with it inlined each call set up
/// a 4 KiB stack frame (a new cache is built on the stack) and probed it.
#[inline]
pub(super) fn current_or_create() -> Option<*mut ThreadCache> {
    let tc = current();
    if !is_static(tc) {
        return Some(tc);
    }
    if core::ptr::eq(tc, &EXITED_CACHE) || !crate::init::ensure() {
        return None;
    }
    let tc = create();
    if tc.is_null() {
        return None;
    }
    Some(tc)
}

/// `Registry::count` changed (and with an exit, `Registry::busy`).
fn threads_changed(reg: &Registry) {
    crate::central::set_sharing(reg.count > 1);
    crate::cpu_cache::set_active(reg.count);
    spinning_changed(reg);
}

/// `Registry::busy` or `Registry::count` changed: tell the locks whether
/// to spin.
fn spinning_changed(reg: &Registry) {
    let cpus = crate::sys::usable_cpus();
    crate::sys::lock::set_spinning(spin_rule(reg.busy, reg.count, cpus));
}

/// Whether contended locks spin, with `busy` of `count` threads busy on
/// `cpus` CPUs.
///
/// Busy threads must not outnumber the CPUs: past that a lock's holder is
/// often preempted, and a waiter that spins burns the time slice the
/// holder needs (larson with 16 threads on 2 CPUs: 2.05 -> 1.87 s without
/// spinning). A thread that has allocated little is mostly blocked and
/// counts for nothing there: rptest's main thread sleeps while its two
/// workers run, and counting it turned spinning off for them; with a futex
/// sleep and wake on every contended central or heap lock they reached
/// 5.98 M ops/s, against 6.97 M when spinning (medians of 9).
///
/// At most one such idle thread is allowed for, though. With more, the
/// quiet threads are often a pipeline's other end: xmalloc-test's two
/// consumers only free, and spinning let its two producers run further
/// ahead of them, into the program's queue (peak RSS 9-12 -> 22-33 MiB).
pub(super) fn spin_rule(busy: usize, count: usize, cpus: usize) -> bool {
    busy <= cpus && count <= cpus + 1
}

/// (busy threads, threads with caches), for tests.
#[cfg(test)]
pub(super) fn busy_and_count() -> (usize, usize) {
    let reg = REGISTRY.lock();
    (reg.busy, reg.count)
}

/// The calling thread has just finished its first scavenge period: it
/// counts as busy from now until it exits.
pub(super) fn count_busy(sz: &mut super::sizing::Sizing) {
    if sz.counted_busy {
        return;
    }
    let mut reg = REGISTRY.lock();
    sz.counted_busy = true;
    reg.busy += 1;
    spinning_changed(&reg);
}

#[cold]
#[inline(never)]
fn create() -> *mut ThreadCache {
    let tc = {
        let mut reg = REGISTRY.lock();
        let tc = reg.pool.take();
        if tc.is_null() {
            return tc;
        }
        // SAFETY: a free slot from the pool, exclusively ours.
        unsafe {
            // From a static, not a temporary: a value built on the stack
            // gave this function a 4 KiB frame, one more page for a thread
            // on a new stack to fault in (glibc keeps only 40 MiB of exited
            // threads' stacks): mimalloc-bench's mleak, 50 K threads ten at
            // a time, made 90 K page faults against glibc's 60 K.
            core::ptr::copy_nonoverlapping(&FRESH_CACHE, tc, 1);
            (*tc).key = link_key();
            reg.created += 1;
            // The thread index (two system calls) only for a fixed seed.
            let index = || (crate::sys::gettid() - crate::sys::getpid() as i64) as u64;
            let seed = sampler::thread_seed(index, reg.created ^ (tc as u64).rotate_left(32));
            (*tc).cold().sampling.start(&*tc, seed);
            let m = member(tc);
            m.next = reg.head;
            if !reg.head.is_null() {
                member(reg.head).prev = tc;
            }
        }
        reg.head = tc;
        reg.count += 1;
        threads_changed(&reg);
        tc
    };
    // Publish before arming the exit hook: pthread_setspecific may call
    // calloc, which must find this cache rather than recurse into create().
    tls::set(tc as *mut u8);
    crate::init::arm_thread_exit(tc as *mut u8);
    tc
}

/// Flushes every list of `tc` to the central lists and returns its budget.
///
/// # Safety
/// No thread may use `tc` any more (its owner is exiting or gone).
unsafe fn drain(tc: *mut ThreadCache) {
    // SAFETY: exclusive use (caller).
    let t = unsafe { &*tc };
    flush_all(t, flush);
    // SAFETY: exclusive use (caller).
    give_back(&mut unsafe { t.cold() }.sizing);
}

fn unregister(reg: &mut Registry, tc: *mut ThreadCache) {
    // SAFETY: `tc` and its neighbours are registered caches; the registry
    // lock is held.
    unsafe {
        let m = member(tc);
        if m.prev.is_null() {
            reg.head = m.next;
        } else {
            member(m.prev).next = m.next;
        }
        if !m.next.is_null() {
            member(m.next).prev = m.prev;
        }
        reg.count -= 1;
        let sz = &mut (*tc).cold().sizing;
        if core::mem::take(&mut sz.counted_busy) {
            reg.busy -= 1;
        }
        threads_changed(reg);
        reg.pool.give(tc);
    }
}

/// Thread exit: flush this thread's cache and leave the slot on EXITED, so
/// frees from later destructors (and glibc's own teardown) still work.
pub fn on_thread_exit() {
    let tc = current();
    if is_static(tc) {
        return;
    }
    tls::set(&EXITED_CACHE as *const ThreadCache as *mut u8);
    // SAFETY: the owner is exiting and the slot no longer names `tc`.
    unsafe { drain(tc) };
    unregister(&mut REGISTRY.lock(), tc);
}

/// Gives back the calling thread's cached objects, and its CPU's, to the
/// central lists (malloc_trim).
pub fn flush_current() {
    let tc = current();
    if !is_static(tc) {
        // SAFETY: this thread's own live cache.
        flush_all(unsafe { &*tc }, flush_to_central);
    }
    crate::cpu_cache::drain_this_cpu();
}

/// Moves every cached object of `t` out with `flush` (to the CPU's cache
/// or the central lists). Counts each chain itself: in a fork child, the
/// owner may have been stopped between a pop and its `avail` update.
fn flush_all(t: &ThreadCache, flush: fn(&ThreadCache, usize, usize)) {
    for (class, list) in t.lists.iter().enumerate().skip(1) {
        // SAFETY: list members form an END-terminated chain.
        let n = diag::link_or_abort(class, unsafe { chain_len(list.head.load(Relaxed), t.key) });
        flush(t, class, n);
    }
}

/// Calls `f` for every live thread cache (statistics), registry lock held.
pub fn for_each_cache(mut f: impl FnMut(&ThreadCache)) -> usize {
    let reg = REGISTRY.lock();
    let mut tc = reg.head;
    while !tc.is_null() {
        // SAFETY: registered caches stay live while the lock is held.
        unsafe {
            f(&*tc);
            tc = member(tc).next;
        }
    }
    reg.count
}

/// Fork support: the registry lock, first in the global lock order.
pub fn registry_lock() -> &'static crate::sys::lock::Lock {
    REGISTRY.raw()
}

/// In a fork child: the other threads are gone, so their caches' objects
/// go back to the central lists.
///
/// # Safety
/// Single-threaded (fork child) with all locks reset.
pub unsafe fn reclaim_after_fork() {
    let me = current();
    let mut reg = REGISTRY.lock();
    let mut tc = reg.head;
    while !tc.is_null() {
        // SAFETY: registry members are live; their owners no longer exist.
        let next = unsafe { member(tc).next };
        if tc != me {
            // SAFETY: nobody else uses `tc` in the child.
            unsafe { drain(tc) };
            unregister(&mut reg, tc);
        } else {
            // A signal handler that forked may have interrupted this
            // thread's own fast path: recount.
            // SAFETY: our own cache, used by no other thread in the child.
            unsafe {
                super::sampling::reseed_after_fork(&*tc);
                for (class, list) in (*tc).lists.iter().enumerate().skip(1) {
                    let len =
                        diag::link_or_abort(class, chain_len(list.head.load(Relaxed), (*tc).key));
                    list.recount(len);
                }
            }
        }
        tc = next;
    }
}
