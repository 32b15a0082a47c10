//! `ThreadCache`, its `FreeList`s and the fast paths of `malloc` and `free`.
//!
//! One cache per thread, reached through the initial-exec TLS slot. Per size
//! class a singly linked list of free objects and `avail`, the free slots
//! left before the list is full (max_len - len). Until a thread has a cache
//! its slot points at the static `EMPTY_CACHE` (every list empty, no slot
//! free), so both fast paths fail over to the slow path without a null check;
//! after the thread-exit flush it points at `EXITED_CACHE`, and the slow
//! path serves it straight from the central lists.
//!
//! Fast-path budget: malloc = TLS load, class lookup, pop, countdown; free =
//! page-map lookup (class in the entry), alignment check, push. No lock, no
//! atomic read-modify-write (the `Relaxed` atomics compile to plain moves and
//! exist so statistics may read other threads' list lengths). The countdown
//! `until_sample` is decremented by every allocation's size (`charge`, the
//! one place that does) and runs the sampler (profiler) or periodic work
//! when it crosses zero (`sampling`).
//!
//! Hardened lists: a free object's link is stored xor the process's random
//! key (`free_object::FreeObject`), and lists end in `free_object::END`, which is not
//! 16-aligned. The malloc fast path's one test `head & 15 != 0` thus sends
//! both an empty list and a link that decoded to garbage to the slow path,
//! which tells them apart and aborts on the latter. Cost: one xor per push
//! and per pop.
//!
//! Checked mode (`MEMX_CHECK=1`, `central::check`): lists keep a limit of 0,
//! so every malloc and free fails over to the slow path, which hands the
//! object to checked mode; the fast paths are the same code and cost the same.
//!
//! Refills and flushes go to this CPU's cache first (`cpu_cache`, where
//! rseq exists), then to the central lists.
//!
//! Files: this one (lists, fast paths), `slow` (refill, flush, overflow),
//! `sizing` (how long lists may grow: the thread's share of the global
//! budget), `sampling` (the countdown's expiry, large and sampled requests),
//! `registry` (creation, thread exit, fork, statistics' walk).
//!
//! Must never: allocate through anything but the central lists, block while
//! holding a central lock, write to the static EMPTY/EXITED caches, or read
//! or write a link except through the `free_object` link helpers.

mod registry;
mod sampling;
mod sizing;
mod slow;

pub use registry::{
    flush_current, for_each_cache, on_thread_exit, reclaim_after_fork, registry_lock,
};
pub use sampling::{
    alloc_large, alloc_sampled_object, charge_countdown, count_down_is_sample,
    crossed_zero_is_sample, enter_profiler, leave_profiler,
};
pub use sizing::{list_trips, set_budget, sleepy_periods, starved_objects, PER_THREAD_MAX};
pub use slow::malloc_checked;

use crate::free_object::{chain_prefix, link, set_link, FreeObject, END};
use crate::pagemap::{HIGH_BITS, PAGEMAP};
use crate::size_class::{medium_offset, size_of, tiny_offset, NUM_CLASSES};
use crate::sys::tls;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, Ordering::Relaxed};
use registry::Membership;
use sampling::Sampling;
use sizing::Sizing;
#[cfg(test)]
use {
    crate::free_object::link_key,
    crate::sampler,
    crate::size_class::{class_of, CLASSES},
    registry::is_static,
    sizing::*,
};

/// Longest a list may grow, in objects.
const MAX_LEN: u32 = 8192;

/// One class's free objects in one thread's cache. The methods below are
/// the only writers of `avail` and `max_len`, and keep, between calls:
///
///   avail = max_len − len      (len: objects on the chain from `head`)
///   0 ≤ len ≤ max_len + LINE_EXTRA,  max_len ≤ MAX_LEN
///
/// (a refill from the spans brings never-used objects in whole cache lines,
/// up to `central::LINE_EXTRA` past the limit: `avail` is then negative
/// until they are taken, and the list takes no free meanwhile)
/// except in the static caches, whose `avail` is far below zero (no room
/// ever) and whose lists never hold an object.
#[repr(C)]
pub struct FreeList {
    /// The first free object (links encoded with the cache's key), or END.
    head: AtomicPtr<FreeObject>,
    /// max_len - len: pushes left before the list overflows.
    avail: AtomicI32,
    /// The list's limit, set by `sizing` through `grow`/`shrink`.
    max_len: AtomicU32,
}

impl FreeList {
    const fn with_avail(avail: i32) -> Self {
        FreeList {
            head: AtomicPtr::new(END),
            avail: AtomicI32::new(avail),
            max_len: AtomicU32::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.head.load(Relaxed) == END
    }

    /// Objects on the list (readable from any thread, approximately).
    pub fn len(&self) -> usize {
        (self.max_len.load(Relaxed) as i64 - self.avail.load(Relaxed) as i64).max(0) as usize
    }

    fn max_len(&self) -> u32 {
        self.max_len.load(Relaxed)
    }

    /// A fingerprint of the list (its head and length): the same at two
    /// moments if nobody took or gave an object in between, and seldom the
    /// same otherwise (a length back where it was has a new head, unless
    /// the last object given was the last one taken).
    fn mark(&self) -> u32 {
        let head = self.head.load(Relaxed) as usize;
        ((head >> 4) as u32) ^ (self.len() as u32).rotate_left(16)
    }

    /// Room for one more push. Two loads on purpose in `push`: with this
    /// test they compile to a compare and a decrement in memory, one
    /// instruction fewer than a load, test, decrement and store.
    #[inline(always)]
    fn has_room(&self) -> bool {
        self.avail.load(Relaxed) > 0
    }

    /// Takes the head, a free object (the caller tested it is not END and
    /// is aligned).
    ///
    /// # Safety
    /// `head` is this list's head, a free object owned by it; `key` is the
    /// cache's key.
    #[inline(always)]
    unsafe fn pop(&self, head: *mut FreeObject, key: usize) -> *mut u8 {
        // SAFETY: `head` is a list member; its first word is the link
        // (checked by the next pop's alignment test).
        self.head.store(unsafe { link(head, key) }, Relaxed);
        self.avail.store(self.avail.load(Relaxed) + 1, Relaxed);
        head as *mut u8
    }

    /// Puts `obj` on the list (the caller checked `has_room`).
    ///
    /// # Safety
    /// `obj` starts a free object of this list's class, now the list's.
    #[inline(always)]
    unsafe fn push(&self, obj: *mut FreeObject, key: usize) {
        // The link first: `key` is then used before any store, which lets
        // the free fast path read it straight into its xor.
        // SAFETY: `obj` is a whole free object (caller).
        unsafe { set_link(obj, self.head.load(Relaxed), key) };
        self.head.store(obj, Relaxed);
        self.avail.store(self.avail.load(Relaxed) - 1, Relaxed);
    }

    /// Makes the chain of `n` objects at `head` the list (it was empty).
    fn install(&self, head: *mut FreeObject, n: usize) {
        self.head.store(head, Relaxed);
        self.avail.store(self.max_len() as i32 - n as i32, Relaxed);
    }

    /// Detaches the first `n` objects (fewer if the chain is shorter) as an
    /// END-terminated chain: its head and length, or None if there are none.
    ///
    /// Walks the chain itself rather than trusting `len`: in a fork child
    /// whose parent was interrupted by a signal mid-push or mid-pop, the
    /// counters can be one off (the chain is always END-terminated).
    fn detach(&self, class: usize, n: usize, key: usize) -> Option<(*mut FreeObject, usize)> {
        let head = self.head.load(Relaxed);
        if n == 0 || head == END {
            return None;
        }
        // SAFETY: list members form an END-terminated chain (links checked).
        let (tail, k) = crate::diag::link_or_abort(class, unsafe { chain_prefix(head, n, key) });
        // SAFETY: `tail` is a list member; cut the chain after it.
        unsafe {
            self.head.store(link(tail, key), Relaxed);
            set_link(tail, END, key);
        }
        self.avail
            .store(self.avail.load(Relaxed) + k as i32, Relaxed);
        Some((head, k))
    }

    /// Raises the limit by `add` (max_len + add ≤ MAX_LEN).
    fn grow(&self, add: u32) {
        self.max_len.store(self.max_len() + add, Relaxed);
        self.avail
            .store(self.avail.load(Relaxed) + add as i32, Relaxed);
    }

    /// Lowers the limit by `cut` (the caller flushed what no longer fits).
    fn shrink(&self, cut: u32) {
        self.max_len.store(self.max_len() - cut, Relaxed);
        self.avail
            .store(self.avail.load(Relaxed) - cut as i32, Relaxed);
    }

    /// Restores `avail` from a counted chain of `len` objects (fork child).
    fn recount(&self, len: usize) {
        self.avail
            .store(self.max_len() as i32 - len as i32, Relaxed);
    }
}

/// Owner-only bookkeeping, one part per concept; never read by other
/// threads.
struct Cold {
    /// How long the lists may grow: the thread's share of the budget.
    sizing: Sizing,
    /// The countdown's other half: the sampler and what expiry does.
    sampling: Sampling,
    /// The cache's place in the registry and its thread.
    member: Membership,
}

// Lists first: the fast paths address `lists[class]` with no extra offset.
#[repr(C, align(64))]
pub struct ThreadCache {
    /// List 0 stays empty with no room (limit 0): zero-byte and large
    /// requests, and frees of anything that is not a small object, find it
    /// and leave for the slow paths without a test of their own.
    lists: [FreeList; NUM_CLASSES],
    /// Bytes left before the next sample point; owner-only, and updated in
    /// place by `charge` (hence not atomic).
    until_sample: UnsafeCell<isize>,
    /// `central::link_key()`, set when the cache is created (0 in the static
    /// caches, which never push or pop).
    key: usize,
    /// The thread sleeps between bursts while the per-CPU layer is in use
    /// (`Sizing::sleeper`, set at each scavenge): its lists stay at limit 0,
    /// so both fast paths miss on every call, and the misses go straight to
    /// this CPU's single-object lists (`malloc_miss`, `free_miss`) rather
    /// than through the slow paths' checks. Only a hint: a refused pop or
    /// push falls through to the slow path, which decides as before.
    /// Owner-only; false in the static caches (never written).
    via_cpu: UnsafeCell<bool>,
    cold: UnsafeCell<Cold>,
}

// SAFETY: `cold` and `until_sample` are touched only by the owning thread
// (or by the fork child and the registry under its lock after the owner is
// gone); everything other threads read is atomic. Of the static caches only
// `avail` is ever written (by the free fast path, atomically).
unsafe impl Sync for ThreadCache {}

impl ThreadCache {
    const fn new() -> Self {
        Self::with_avail::<0>()
    }

    /// A static cache: no objects, and `avail` so far below zero that the
    /// free fast path's decrement-then-check never sees it non-negative.
    const fn new_static() -> Self {
        Self::with_avail::<{ i32::MIN / 2 }>()
    }

    const fn with_avail<const AVAIL: i32>() -> Self {
        ThreadCache {
            lists: [const { FreeList::with_avail(AVAIL) }; NUM_CLASSES],
            until_sample: UnsafeCell::new(0),
            key: 0,
            via_cpu: UnsafeCell::new(false),
            cold: UnsafeCell::new(Cold {
                sizing: Sizing::new(),
                sampling: Sampling::new(),
                member: Membership::new(),
            }),
        }
    }

    /// Bytes held in this cache's lists (approximate for other threads).
    pub fn held_bytes(&self) -> usize {
        (1..NUM_CLASSES)
            .map(|c| self.lists[c].len() * size_of(c))
            .sum()
    }

    /// Takes `size` off the countdown; true if it ran out. The one place
    /// the countdown is charged. Updated in memory first and checked
    /// after: one instruction pair on the fast path.
    ///
    /// # Safety
    /// `tc` is the calling thread's own live cache (never a static one).
    #[inline(always)]
    unsafe fn charge(tc: *const ThreadCache, size: usize) -> bool {
        // SAFETY: owner-only state of a live cache (caller).
        unsafe {
            let c = (*tc).until_sample.get();
            *c = (*c).wrapping_sub(size as isize);
            *c < 0
        }
    }

    /// Sets `via_cpu`. Owner only, on a live cache.
    fn set_via_cpu(&self, on: bool) {
        // SAFETY: owner-only state; a live cache (a scavenge's), never a
        // static one.
        unsafe { *self.via_cpu.get() = on };
    }

    /// The owner-only state.
    ///
    /// # Safety
    /// Called by the owner (or with the owner gone), with no other reference
    /// to the state alive.
    #[allow(clippy::mut_from_ref)]
    unsafe fn cold(&self) -> &mut Cold {
        // SAFETY: exclusive owner-only access (caller).
        unsafe { &mut *self.cold.get() }
    }
}

/// A new cache as `create` sets it up before it fills in the thread's own
/// fields: copied into each new cache's slot. Never written.
pub static FRESH_CACHE: ThreadCache = ThreadCache::new();
/// The cache of threads that have none yet. Never written.
pub static EMPTY_CACHE: ThreadCache = ThreadCache::new_static();
/// The cache of threads past their thread-exit flush.
pub static EXITED_CACHE: ThreadCache = ThreadCache::new_static();

// The TLS slot starts out naming EMPTY_CACHE in every thread.
tls::define_slot!(EMPTY_CACHE);

/// This thread's cache: its own, or a static one.
#[inline(always)]
fn current() -> *mut ThreadCache {
    tls::get() as *mut ThreadCache
}

// ---------------------------------------------------------------- fast paths

/// `malloc` for every size. Requests up to 1 KiB (most of them) find their
/// list at offset `(size + 15) & !15` with no table; larger ones go through
/// `malloc_medium`, which is the same pop after a table lookup (large ones
/// find list 0, always empty, and leave through the slow path).
#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    match tiny_offset(size) {
        Some(offset) => alloc_at(size, offset),
        None => malloc_medium(size),
    }
}

#[inline(always)]
fn malloc_medium(size: usize) -> *mut u8 {
    alloc_at(size, medium_offset(size))
}

const LIST_STRIDE: usize = core::mem::size_of::<FreeList>();
const _: () = assert!(LIST_STRIDE == 16, "list offsets are 16 x class");

/// The list at byte `offset` (16 × class) of cache `tc`.
///
/// # Safety
/// `offset` is 16 × c for a class c < NUM_CLASSES; `tc` is a live cache.
#[inline(always)]
unsafe fn list_at<'a>(tc: *const ThreadCache, offset: usize) -> &'a FreeList {
    // SAFETY: `lists` is the first field (repr(C)) and an array of 16-byte
    // lists, so the offset lands on list c (caller).
    unsafe { &*((tc as *const u8).add(offset) as *const FreeList) }
}

/// Pops an object from the list at `offset` for a request of `size`.
#[inline(always)]
fn alloc_at(size: usize, offset: usize) -> *mut u8 {
    let tc = current();
    // SAFETY: the slot holds a static cache or this thread's live cache, and
    // `offset` is 16 × class with class < NUM_CLASSES.
    let list = unsafe { list_at(tc, offset) };
    let head = list.head.load(Relaxed);
    // Empty (END) or a corrupt link (misaligned): the slow path decides.
    if head as usize & 15 != 0 {
        return malloc_miss(size, offset);
    }
    // Only live caches get here (static caches have no objects), so this
    // never writes to a shared static.
    // SAFETY: `tc` is this thread's own live cache (its list had an object).
    if unsafe { ThreadCache::charge(tc, size) } {
        return slow::malloc_slow(size, offset, Countdown::Expired);
    }
    // SAFETY: `head` is this list's head, a free object; `tc` is live.
    unsafe { list.pop(head, (*tc).key) }
}

/// `free` for every pointer; small objects never leave this function unless
/// their list is full.
#[inline(always)]
pub fn free(p: *mut u8) {
    let addr = p as usize;
    // One test for both "not 16-byte aligned" (a cheap misuse check) and
    // "above the page map's 48 bits".
    if addr & (HIGH_BITS | 15) != 0 {
        return slow::free_slow(p);
    }
    // Class 0 (large, sampled, free or not ours) finds list 0, which never
    // has room, so it needs no test of its own: free_overflow sends it on.
    let offset = PAGEMAP.lookup_low_addr(addr).list_offset();
    let tc = current();
    // SAFETY: the entry's class came from the page heap (< NUM_CLASSES).
    let list = unsafe { list_at(tc, offset) };
    // Static caches have no room (avail < 0), so they never get past here.
    if !list.has_room() {
        return free_miss(p, offset);
    }
    // `tc` is live: a static cache's avail is negative, so it never gets here.
    let obj = p as *mut FreeObject;
    // SAFETY: `p` starts an object of this class that the program gives back.
    unsafe { list.push(obj, (*tc).key) };
}

/// Where a request that reaches `malloc_slow` stands with the countdown.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Countdown {
    /// Not charged yet.
    Uncharged,
    /// Charged, and it ran out.
    Expired,
    /// Charged; it did not run out.
    Charged,
}

/// The malloc fast path's miss (empty list, or a link that decoded to
/// garbage). A thread that sleeps between bursts (`via_cpu`) takes the
/// object from its CPU's single-object list here: with 16 request threads
/// on 2 CPUs nearly every malloc came this way, and the slow path's checks
/// on the way cost a fifth of memx's time. Everything else, and a refused
/// pop, goes on to `malloc_slow`.
#[inline(never)]
fn malloc_miss(size: usize, offset: usize) -> *mut u8 {
    let tc = current();
    // SAFETY: the slot names this thread's live cache or a static one; a
    // static cache's `via_cpu` is false and never written.
    let via_cpu = unsafe { *(*tc).via_cpu.get() };
    // SAFETY: `offset` is 16 x class with class < NUM_CLASSES.
    if offset == 0 || !via_cpu || !unsafe { list_at(tc, offset) }.is_empty() {
        return slow::malloc_slow(size, offset, Countdown::Uncharged);
    }
    // SAFETY: only live caches set `via_cpu`, so `tc` is this thread's own.
    if unsafe { ThreadCache::charge(tc, size) } {
        return slow::malloc_slow(size, offset, Countdown::Expired);
    }
    // SAFETY: as above.
    let t = unsafe { &*tc };
    match crate::cpu_cache::pop_one(offset / LIST_STRIDE, t.key) {
        Some(obj) => {
            // SAFETY: owner-only state, read by its owner.
            unsafe { t.cold() }.sizing.starved_objects += 1;
            obj as *mut u8
        }
        None => slow::malloc_slow(size, offset, Countdown::Charged),
    }
}

/// The free fast path's miss (no room in the list, or not a small object):
/// as `malloc_miss`, a sleeping thread's object goes onto its CPU's
/// single-object list here, and everything else to `free_overflow`.
///
/// `free(NULL)` ends here, not three calls further in `free_slow`: programs
/// free slots that may be empty (mimalloc-bench's mstress makes 390 K such
/// calls per run, which took a fifth of memx's instructions there), and a
/// test on the fast path would cost every other free an instruction.
#[inline(never)]
fn free_miss(p: *mut u8, offset: usize) {
    if p.is_null() {
        return;
    }
    // SAFETY: the slot names this thread's live cache or a static one,
    // whose `via_cpu` is false and never written.
    let t = unsafe { &*current() };
    // SAFETY: as above.
    if offset != 0 && unsafe { *t.via_cpu.get() } {
        let obj = p as *mut FreeObject;
        // SAFETY: `p` starts a free object of class offset / 16 (its page-map
        // entry says so), the caller's to give.
        if unsafe { crate::cpu_cache::push_one(offset / LIST_STRIDE, obj, t.key) } {
            // SAFETY: `via_cpu` is set only in live caches: this is the owner.
            unsafe { t.cold() }.sizing.starved_objects += 1;
            return;
        }
    }
    slow::free_overflow(p, offset)
}

#[cfg(test)]
mod tests;
