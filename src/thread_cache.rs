//! `ThreadCache` and the fast paths of `malloc` and `free`.
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
//! `until_sample` is decremented by every allocation's size and runs the
//! sampler (profiler) or periodic work when it crosses zero.
//!
//! List limits follow tcmalloc: a list's max_len starts at one batch when
//! first used, grows by a batch each time it runs empty (up to MAX_LEN),
//! and shrinks by a batch after repeated overflows. All lists of a thread
//! together stay within the thread's claimed share of the global budget
//! `MEMX_THREAD_CACHE_BYTES`; a thread that cannot claim more steals
//! capacity from its own other lists. A thread claims at most START_CAP
//! until it finds a central lock held by another thread, or goes to the
//! central lists more than BUSY_TRIPS times per SCAVENGE_BYTES allocated;
//! each such event raises its cap by CAP_STEP, up to PER_THREAD_MAX. So
//! caches grow where they save lock traffic (servers, big working sets),
//! and threads that take turns (Python's GIL) keep small ones.
//!
//! Hardened lists: a free object's link is stored xor the process's random
//! key (`central::link_key`, copied into each cache so the fast paths read
//! it next to the list), and lists end in `util::END`, which is not
//! 16-aligned. The malloc fast path's one test `head & 15 != 0` thus sends
//! both an empty list and a link that decoded to garbage to the slow path,
//! which tells them apart and aborts on the latter. Cost: one xor per push
//! and per pop.
//!
//! Checked mode (`MEMX_CHECK=1`, `central::check`): lists keep a limit of 0,
//! so every malloc and free fails over to the slow path, which hands small
//! objects to the checked central path one at a time; the fast paths are
//! the same code and cost the same.
//!
//! Must never: allocate through anything but the central lists, block while
//! holding a central lock, write to the static EMPTY/EXITED caches, or read
//! or write a link except through the `util` link helpers.

use crate::central::{check, link_key, CentralFreeList, CENTRAL};
use crate::diag;
use crate::large;
use crate::meta::Pool;
use crate::pagemap::{HIGH_BITS, PAGEMAP};
use crate::sampler;
use crate::size_class::{
    class_for_aligned, class_of, medium_offset, size_of, tiny_offset, ClassInfo, CLASSES,
    MAX_SMALL, NUM_CLASSES, PAGE_SIZE,
};
use crate::sys::lock::{Locked, LockedGuard};
use crate::sys::tls;
use crate::util::{chain_len, chain_prefix, link, set_link, BadLink, FreeObject, END};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicI32, AtomicI64, AtomicPtr, AtomicU32, Ordering::Relaxed};

/// Longest a list may grow, in objects.
const MAX_LEN: u32 = 8192;
/// The most one thread may claim of the global budget.
pub const PER_THREAD_MAX: usize = 2 << 20;
/// What a thread may claim until it meets contention. Without contention a
/// batch from the central list costs one uncontended lock, so a small
/// cache loses little speed, and threads that take turns (Python's GIL)
/// would otherwise each hold a full cache of idle objects.
const START_CAP: usize = 256 << 10;
/// How much each contended central lock raises the thread's cap.
const CAP_STEP: usize = 256 << 10;
/// Trips to the central lists per SCAVENGE_BYTES allocated above which the
/// cache is too small for the thread's working set, and its cap rises by
/// CAP_STEP too. Measured at 256 KiB: a
/// single-threaded churn of 8 B-1 KiB objects made 3,500 (and ran 18%
/// slower than with 2 MiB), pure-Python JSON work 750.
const BUSY_TRIPS: usize = 1000;
/// Budget is claimed from the global pool in steps of this much.
const CLAIM_STEP: usize = 64 << 10;
/// Overflows tolerated before a list at more than one batch shrinks.
const MAX_OVERAGES: u32 = 3;

#[repr(C)]
pub struct FreeList {
    head: AtomicPtr<FreeObject>,
    /// max_len - len: pushes left before the list overflows.
    avail: AtomicI32,
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
}

/// A set of size classes, one bit each.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct ClassSet([u64; NUM_CLASSES.div_ceil(64)]);

impl ClassSet {
    const EMPTY: ClassSet = ClassSet([0; NUM_CLASSES.div_ceil(64)]);

    fn insert(&mut self, class: usize) {
        self.0[class / 64] |= 1 << (class % 64);
    }

    fn remove(&mut self, class: usize) {
        self.0[class / 64] &= !(1 << (class % 64));
    }

    #[cfg(test)]
    fn contains(&self, class: usize) -> bool {
        self.0[class / 64] & (1 << (class % 64)) != 0
    }

    /// The classes in `self` and not in `other`, in order.
    fn minus(self, other: ClassSet) -> impl Iterator<Item = usize> {
        (0..self.0.len()).flat_map(move |w| {
            let mut bits = self.0[w] & !other.0[w];
            core::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let class = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(class)
            })
        })
    }
}

/// Owner-only bookkeeping, never read by other threads.
struct Cold {
    /// Σ max_len × size over the lists, in bytes.
    capacity: usize,
    /// Bytes claimed from the global budget.
    limit: usize,
    /// The most this thread may claim: START_CAP, raised towards
    /// PER_THREAD_MAX on contention and on busy periods (`raise_cap`).
    cap: usize,
    overages: [u32; NUM_CLASSES],
    steal_cursor: usize,
    next: *mut ThreadCache,
    prev: *mut ThreadCache,
    tid: i64,
    sampler: sampler::Sampler,
    /// Classes whose list ran empty since the last scavenge (bit per class).
    dry: ClassSet,
    /// Classes whose list has a limit above zero, the only ones a scavenge
    /// visits: with large objects it runs every few hundred allocations.
    active: ClassSet,
    /// Bytes allocated since the last scavenge, counted at sample points.
    since_scavenge: usize,
    /// Length of the countdown now running (`until_sample` started there).
    interval: usize,
    /// This thread is inside the profiler (stack capture may allocate).
    in_profiler: bool,
    /// Trips to the central lists (refills and flushes) since the last
    /// scavenge.
    central_trips: usize,
}

// Lists first: the fast paths address `lists[class]` with no extra offset.
#[repr(C, align(64))]
pub struct ThreadCache {
    /// List 0 stays empty with no room (limit 0): zero-byte and large
    /// requests, and frees of anything that is not a small object, find it
    /// and leave for the slow paths without a test of their own.
    lists: [FreeList; NUM_CLASSES],
    /// Bytes left before the next sample point; owner-only, and updated in
    /// place by the fast path (hence not atomic).
    until_sample: UnsafeCell<isize>,
    /// `central::link_key()`, set when the cache is created (0 in the static
    /// caches, which never push or pop).
    key: usize,
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
            cold: UnsafeCell::new(Cold {
                capacity: 0,
                limit: 0,
                cap: START_CAP,
                overages: [0; NUM_CLASSES],
                steal_cursor: 1,
                next: core::ptr::null_mut(),
                prev: core::ptr::null_mut(),
                tid: 0,
                sampler: sampler::Sampler::new(0),
                dry: ClassSet::EMPTY,
                active: ClassSet::EMPTY,
                since_scavenge: 0,
                interval: 0,
                in_profiler: false,
                central_trips: 0,
            }),
        }
    }

    /// Bytes held in this cache's lists (approximate for other threads).
    pub fn held_bytes(&self) -> usize {
        (1..NUM_CLASSES)
            .map(|c| self.lists[c].len() * size_of(c))
            .sum()
    }
}

/// The cache of threads that have none yet. Never written.
pub static EMPTY_CACHE: ThreadCache = ThreadCache::new_static();
/// The cache of threads past their thread-exit flush.
pub static EXITED_CACHE: ThreadCache = ThreadCache::new_static();

fn is_static(tc: *const ThreadCache) -> bool {
    core::ptr::eq(tc, &EMPTY_CACHE) || core::ptr::eq(tc, &EXITED_CACHE)
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
    let tc = tls::get();
    // SAFETY: the slot holds a static cache or this thread's live cache, and
    // `offset` is 16 × class with class < NUM_CLASSES.
    let list = unsafe { list_at(tc, offset) };
    let head = list.head.load(Relaxed);
    // Empty (END) or a corrupt link (misaligned): the slow path decides.
    if head as usize & 15 != 0 {
        return malloc_slow(size, offset, false);
    }
    // The countdown is updated in memory first and checked after: one
    // instruction pair. Only live caches get here (static caches have no
    // objects), so this never writes to a shared static.
    // SAFETY: `tc` is this thread's own live cache (its list had an object).
    let left = unsafe {
        let c = (*tc).until_sample.get();
        *c = (*c).wrapping_sub(size as isize);
        *c
    };
    if left < 0 {
        return malloc_slow(size, offset, true);
    }
    // SAFETY: `head` is a free object owned by this list; its first word is
    // the link (checked by the next pop's alignment test).
    list.head.store(unsafe { link(head, (*tc).key) }, Relaxed);
    list.avail.store(list.avail.load(Relaxed) + 1, Relaxed);
    head as *mut u8
}

/// `free` for every pointer; small objects never leave this function unless
/// their list is full.
#[inline(always)]
pub fn free(p: *mut u8) {
    let addr = p as usize;
    // One test for both "not 16-byte aligned" (a cheap misuse check) and
    // "above the page map's 48 bits".
    if addr & (HIGH_BITS | 15) != 0 {
        return free_slow(p);
    }
    // Class 0 (large, sampled, free or not ours) finds list 0, which never
    // has room, so it needs no test of its own: free_overflow sends it on.
    let offset = PAGEMAP.lookup_low_addr(addr).list_offset();
    let tc = tls::get();
    // SAFETY: the entry's class came from the page heap (< NUM_CLASSES).
    let list = unsafe { list_at(tc, offset) };
    // Static caches have no room (avail < 0), so they never get past here.
    // Two loads on purpose: they compile to a compare and a decrement in
    // memory, one instruction fewer than a load, test, decrement and store.
    if list.avail.load(Relaxed) <= 0 {
        return free_overflow(p, offset);
    }
    list.avail.store(list.avail.load(Relaxed) - 1, Relaxed);
    let obj = p as *mut FreeObject;
    // `tc` is live: a static cache's avail is negative, so it never gets here.
    // SAFETY: `p` starts an object of this class that the program gives back.
    unsafe { set_link(obj, list.head.load(Relaxed), (*tc).key) };
    list.head.store(obj, Relaxed);
}

// ---------------------------------------------------------------- slow paths

#[cold]
#[inline(never)]
/// `counted`: the fast path already took `size` off the countdown.
fn malloc_slow(size: usize, offset: usize, counted: bool) -> *mut u8 {
    // Large and zero-byte requests reach here through the always-empty list 0.
    if offset == 0 && size > MAX_SMALL {
        return alloc_large(size, 1);
    }
    let class = (offset / LIST_STRIDE).max(1);
    let tc = match current_or_create() {
        Some(tc) => tc,
        None if check::enabled() => return malloc_checked(size, 16),
        None => return central_alloc_one(class),
    };
    // SAFETY: a live cache owned by this thread.
    let t = unsafe { &*tc };
    // SAFETY: owner-only state of this thread's cache.
    let countdown = unsafe { &mut *t.until_sample.get() };
    if !counted {
        *countdown = countdown.wrapping_sub(size as isize);
    }
    if *countdown < 0 && countdown_expired(t) {
        // A sampled object gets a span of its own, marked sampled, so the
        // ordinary free path never looks anything up.
        return alloc_sampled(size, 1);
    }
    if check::enabled() {
        return malloc_checked(size, 16);
    }
    let list = &t.lists[class];
    let mut head = list.head.load(Relaxed);
    if head as usize & 15 != 0 {
        if head != END {
            // A link popped earlier decoded to garbage.
            diag::corrupt_free_list(
                class,
                BadLink {
                    at: 0,
                    value: head as usize,
                },
            );
        }
        head = refill(t, class);
        if head == END {
            return central_alloc_one(class);
        }
    }
    // SAFETY: `head` is a free object owned by this list.
    list.head.store(unsafe { link(head, t.key) }, Relaxed);
    list.avail.store(list.avail.load(Relaxed) + 1, Relaxed);
    head as *mut u8
}

/// The countdown crossed zero: draw the next interval, scavenge now and
/// then, and say whether the allocation that crossed it is a sample.
fn countdown_expired(t: &ThreadCache) -> bool {
    // SAFETY: owner-only state of this thread's cache.
    let cold = unsafe { &mut *t.cold.get() };
    // The interval that just ran out is (give or take the last request)
    // what the thread allocated since the previous expiry.
    cold.since_scavenge += cold.interval;
    cold.interval = cold.sampler.next_interval();
    // SAFETY: as above.
    unsafe { *t.until_sample.get() = cold.interval as isize };
    if cold.since_scavenge >= sampler::SCAVENGE_BYTES {
        let period = core::mem::take(&mut cold.since_scavenge);
        scavenge(t, cold, period);
    }
    sampler::mean() != 0
}

/// A sampled object: a span of its own, recorded by the profiler. An
/// allocation made while this thread is already inside the profiler (the
/// unwinder's own) is not sampled again.
#[cold]
#[inline(never)]
fn alloc_sampled(size: usize, align_pages: usize) -> *mut u8 {
    if !enter_profiler() {
        return large::alloc(size, align_pages);
    }
    let p = large::alloc_sampled(size, align_pages);
    leave_profiler();
    if check::enabled() && !p.is_null() {
        check::arm_large(p, size);
    }
    p
}

/// Large objects (and aligned ones no class can serve) go through the same
/// countdown as small ones, so they are sampled in proportion to their size.
#[cold]
#[inline(never)]
pub fn alloc_large(size: usize, align_pages: usize) -> *mut u8 {
    if size <= large::MAX_REQUEST && count_down_is_sample(size) {
        return alloc_sampled(size, align_pages);
    }
    let p = large::alloc(size, align_pages);
    if check::enabled() && !p.is_null() {
        check::arm_large(p, size);
    }
    p
}

/// Takes `size` bytes off this thread's countdown; true when the request
/// that crossed zero is to be sampled. For requests served outside the
/// fast path (large ones, and the Python allocator hook's, which memx does
/// not serve unless sampled). A thread with no cache yet counts nothing.
pub fn count_down_is_sample(size: usize) -> bool {
    let tc = tls::get();
    if is_static(tc) {
        return false;
    }
    // SAFETY: this thread's own live cache.
    let t = unsafe { &*tc };
    // SAFETY: owner-only state.
    let expired = unsafe {
        let c = t.until_sample.get();
        *c = (*c).wrapping_sub(size as isize);
        *c < 0
    };
    expired && countdown_expired(t)
}

/// A sampled object of `size` bytes that the countdown chose elsewhere (the
/// Python allocator hook): a span of its own, recorded with the stack.
pub fn alloc_sampled_object(size: usize) -> *mut u8 {
    alloc_sampled(size, 1)
}

/// Checked mode's `malloc` (and aligned allocation) for `size` bytes: a
/// small object with room for the canary and trailer, one at a time from
/// the central list (see `central::check`), or a large one with a canary.
pub fn malloc_checked(size: usize, align: usize) -> *mut u8 {
    let need = size.saturating_add(check::EXTRA);
    let class = if align <= 16 {
        class_of(need)
    } else {
        class_for_aligned(need, align)
    };
    if class == 0 {
        return alloc_large(size, (align / PAGE_SIZE).max(1));
    }
    check::alloc_small(class, size)
}

/// Fills an empty list from the central list; returns the new head.
fn refill(t: &ThreadCache, class: usize) -> *mut FreeObject {
    let k = &CLASSES[class];
    let list = &t.lists[class];
    // SAFETY: owner-only state.
    unsafe { (*t.cold.get()).dry.insert(class) };
    let max_len = list.max_len.load(Relaxed);
    // Growing on underflow: this class is in demand.
    if max_len < MAX_LEN {
        grow(t, class);
    }
    let max_len = list.max_len.load(Relaxed);
    let want = (k.batch).min(max_len.max(1)) as usize;
    let (head, n) = central(t, class).remove_range(class, want);
    if n == 0 {
        return END;
    }
    list.head.store(head, Relaxed);
    list.avail.store(max_len as i32 - n as i32, Relaxed);
    head
}

/// Gives back what the thread did not need lately: a list that never ran
/// empty since the last scavenge had objects to spare the whole time (the
/// slow-path stand-in for tcmalloc's low-water mark, which would cost the
/// fast path an instruction), so half of it goes back to the central list
/// and its limit drops by a batch. Bursty programs (Python) otherwise keep
/// a burst's worth of every class cached for good. A thread that went to
/// the central lists often in the period gets a higher cap instead.
fn scavenge(t: &ThreadCache, cold: &mut Cold, period: usize) {
    // Trips per SCAVENGE_BYTES allocated: with profiling on, periods vary
    // (they are sums of random sampling intervals).
    if cold.central_trips * sampler::SCAVENGE_BYTES > BUSY_TRIPS * period {
        raise_cap(cold);
    }
    cold.central_trips = 0;
    for class in cold.active.minus(cold.dry) {
        let list = &t.lists[class];
        let len = list.len();
        if len == 0 {
            continue;
        }
        flush(t, class, len.div_ceil(2));
        if list.max_len.load(Relaxed) > CLASSES[class].batch {
            shrink(t, cold, class);
        }
    }
    cold.dry = ClassSet::EMPTY;
}

/// Raises `class`'s max_len (by one below a batch, else by a batch) if the
/// thread's budget allows,
/// claiming more of the global budget or stealing from other lists.
fn grow(t: &ThreadCache, class: usize) {
    grow_with(t, class, true);
}

/// `grow`; with `may_steal` false, only within budget the thread can claim.
fn grow_with(t: &ThreadCache, class: usize, may_steal: bool) {
    let k = &CLASSES[class];
    // SAFETY: owner-only state.
    let cold = unsafe { &mut *t.cold.get() };
    let step = growth_step(k, t.lists[class].max_len.load(Relaxed));
    let cost = step as usize * k.size as usize;
    if cold.capacity + cost > cold.limit
        && !claim(cold, cost)
        && !(may_steal && steal(t, cold, class, cost))
    {
        return;
    }
    let list = &t.lists[class];
    let max_len = list.max_len.load(Relaxed);
    let add = step.min(MAX_LEN - max_len);
    list.max_len
        .store(list.max_len.load(Relaxed) + add, Relaxed);
    cold.active.insert(class);
    list.avail
        .store(list.avail.load(Relaxed) + add as i32, Relaxed);
    cold.capacity += add as usize * k.size as usize;
}

/// How much a list's max_len grows at a time. Slow start, as tcmalloc: a
/// class used now and then caches a few objects, not a whole batch, and a
/// busy one reaches a batch quickly. Except below 64 bytes: there objects
/// share cache lines, and one-object refills would hand neighbours on one
/// line to different threads (false sharing; the cache-thrash benchmark ran
/// at 3.8x glibc). A whole batch is a contiguous, line-aligned run.
fn growth_step(k: &ClassInfo, max_len: u32) -> u32 {
    if max_len < k.batch && k.size >= 64 {
        1
    } else {
        k.batch
    }
}

/// Claims budget so `capacity + cost` fits the thread's limit.
fn claim(cold: &mut Cold, cost: usize) -> bool {
    let need = cold.capacity + cost - cold.limit;
    let step = need.div_ceil(CLAIM_STEP) * CLAIM_STEP;
    if cold.limit + step > cold.cap {
        return false;
    }
    let mut left = BUDGET.load(Relaxed);
    loop {
        if left < step as i64 {
            return false;
        }
        match BUDGET.compare_exchange_weak(left, left - step as i64, Relaxed, Relaxed) {
            Ok(_) => break,
            Err(v) => left = v,
        }
    }
    cold.limit += step;
    true
}

/// Shrinks other lists of this thread until `cost` more bytes fit.
fn steal(t: &ThreadCache, cold: &mut Cold, class: usize, cost: usize) -> bool {
    for _ in 1..NUM_CLASSES {
        if cold.capacity + cost <= cold.limit {
            return true;
        }
        let v = cold.steal_cursor;
        cold.steal_cursor = if v + 1 >= NUM_CLASSES { 1 } else { v + 1 };
        if v != class && t.lists[v].max_len.load(Relaxed) > 0 {
            shrink(t, cold, v);
        }
    }
    cold.capacity + cost <= cold.limit
}

/// Lowers `class`'s max_len by one batch, flushing objects that no longer fit.
fn shrink(t: &ThreadCache, cold: &mut Cold, class: usize) {
    let k = &CLASSES[class];
    let list = &t.lists[class];
    let max_len = list.max_len.load(Relaxed);
    let cut = k.batch.min(max_len);
    let len = list.len() as u32;
    let new_max = max_len - cut;
    if len > new_max {
        flush(t, class, (len - new_max) as usize);
    }
    list.max_len.store(new_max, Relaxed);
    list.avail
        .store(list.avail.load(Relaxed) - cut as i32, Relaxed);
    cold.capacity -= cut as usize * k.size as usize;
    if new_max == 0 {
        cold.active.remove(class);
    }
}

/// `class`'s central list, locked; a contended lock raises this thread's
/// cache cap (see START_CAP).
fn central(t: &ThreadCache, class: usize) -> LockedGuard<'static, CentralFreeList> {
    let (guard, contended) = CENTRAL[class].lock_reporting();
    // SAFETY: owner-only state of the caller's own cache.
    let cold = unsafe { &mut *t.cold.get() };
    cold.central_trips += 1;
    if contended {
        raise_cap(cold);
    }
    guard
}

fn raise_cap(cold: &mut Cold) {
    cold.cap = (cold.cap + CAP_STEP).min(PER_THREAD_MAX);
}

/// Moves the first `n` objects of a list to the central list.
///
/// Walks the chain itself rather than trusting `n`: in a fork child whose
/// parent was interrupted by a signal mid-push or mid-pop, the counters can
/// be one off (the chain is always null-terminated).
fn flush(t: &ThreadCache, class: usize, n: usize) {
    let list = &t.lists[class];
    let head = list.head.load(Relaxed);
    if n == 0 || head == END {
        return;
    }
    // SAFETY: list members form an END-terminated chain (links checked).
    let (tail, k) = diag::link_or_abort(class, unsafe { chain_prefix(head, n, t.key) });
    // SAFETY: `tail` is a list member; cut the chain after it.
    unsafe {
        list.head.store(link(tail, t.key), Relaxed);
        set_link(tail, END, t.key);
    }
    list.avail
        .store(list.avail.load(Relaxed) + k as i32, Relaxed);
    // SAFETY: the chain holds exactly `k` free objects of `class`.
    unsafe { central(t, class).insert_range(class, head, k) };
}

#[cold]
#[inline(never)]
fn free_overflow(p: *mut u8, offset: usize) {
    if offset == 0 {
        return free_slow(p);
    }
    let class = offset / LIST_STRIDE;
    if check::enabled() {
        return check::free_small(class, p, "free");
    }
    let tc = match current_or_create() {
        Some(tc) => tc,
        None => return central_free_one(p, class),
    };
    // SAFETY: a live cache owned by this thread.
    let t = unsafe { &*tc };
    let k = &CLASSES[class];
    let list = &t.lists[class];
    let max_len = list.max_len.load(Relaxed);
    if max_len == 0 {
        // This thread has not allocated from `class` lately (malloc's refill
        // would have raised the limit), so `p` most likely came from another
        // thread, whose neighbouring objects it shares cache lines with.
        // Caching it would make it this thread's next allocation (passive
        // false sharing: 4x glibc on cache-scratch). It goes back to its
        // span instead; the limit grows, so later frees are cached.
        grow(t, class);
        return central_free_one(p, class);
    }
    if list.avail.load(Relaxed) <= 0 && max_len < k.batch {
        // Slow start on this side too (as tcmalloc): a thread that only
        // frees (a consumer) never refills, and at one object its every
        // free went to the spans one at a time. At a batch, its flushes are
        // whole batches, which the transfer cache passes on in O(1). Not
        // by shrinking its other lists, though: a consumer freeing every
        // class would only trade objects between them.
        grow_with(t, class, false);
    }
    if list.avail.load(Relaxed) <= 0 {
        let len = list.len();
        flush(t, class, len.min(k.batch as usize));
        // SAFETY: owner-only state.
        let cold = unsafe { &mut *t.cold.get() };
        if max_len > k.batch {
            cold.overages[class] += 1;
            if cold.overages[class] > MAX_OVERAGES {
                cold.overages[class] = 0;
                shrink(t, cold, class);
            }
        }
    }
    if list.avail.load(Relaxed) <= 0 {
        // No room even after flushing (a zero budget): go around the cache.
        return central_free_one(p, class);
    }
    let obj = p as *mut FreeObject;
    // SAFETY: `p` is a free object of `class`, now a list member.
    unsafe { set_link(obj, list.head.load(Relaxed), t.key) };
    list.head.store(obj, Relaxed);
    list.avail.store(list.avail.load(Relaxed) - 1, Relaxed);
}

/// `free` of anything that is not a small object with a class in its entry:
/// null, large or sampled objects, and pointers that are not ours.
#[cold]
#[inline(never)]
fn free_slow(p: *mut u8) {
    if p.is_null() {
        return;
    }
    let entry = PAGEMAP.lookup_addr(p as usize);
    if entry.is_empty() {
        diag::invalid_pointer("free", p as usize, "not allocated by memx");
    }
    if entry.class() != 0 {
        diag::invalid_pointer("free", p as usize, "not the start of an object");
    }
    if check::enabled() {
        check::check_large(p, "free");
    }
    large::free(p, "free");
}

fn central_alloc_one(class: usize) -> *mut u8 {
    let (head, n) = CENTRAL[class].lock().remove_range(class, 1);
    if n == 0 {
        crate::sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    head as *mut u8
}

fn central_free_one(p: *mut u8, class: usize) {
    let obj = p as *mut FreeObject;
    // SAFETY: `p` is a free object of `class`; a chain of one.
    unsafe {
        set_link(obj, END, link_key());
        CENTRAL[class].lock().insert_range(class, obj, 1);
    }
}

// ------------------------------------------------------ lifecycle & registry

struct Registry {
    head: *mut ThreadCache,
    count: usize,
    pool: Pool<ThreadCache>,
}

// SAFETY: the raw pointers are only followed with the registry lock held.
unsafe impl Send for Registry {}

static REGISTRY: Locked<Registry> = Locked::new(Registry {
    head: core::ptr::null_mut(),
    count: 0,
    pool: Pool::new(),
});

/// Unclaimed part of `MEMX_THREAD_CACHE_BYTES`.
static BUDGET: AtomicI64 = AtomicI64::new(32 << 20);

pub fn set_budget(bytes: u64) {
    BUDGET.store(bytes.min(i64::MAX as u64) as i64, Relaxed);
}

/// This thread's cache, creating it on first use; `None` for a thread past
/// its exit flush, or while the allocator cannot initialise.
fn current_or_create() -> Option<*mut ThreadCache> {
    let tc = tls::get();
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

/// The number of threads with caches changed to `count`.
fn threads_changed(count: usize) {
    crate::central::set_sharing(count > 1);
    crate::sys::lock::set_spinning(count <= crate::sys::usable_cpus());
}

fn create() -> *mut ThreadCache {
    let tc = {
        let mut reg = REGISTRY.lock();
        let tc = reg.pool.take();
        if tc.is_null() {
            return tc;
        }
        // SAFETY: a free slot from the pool, exclusively ours.
        unsafe {
            tc.write(ThreadCache::new());
            (*tc).key = link_key();
            let cold = &mut *(*tc).cold.get();
            cold.tid = crate::sys::gettid();
            let index = (cold.tid - crate::sys::getpid() as i64) as u64;
            let seed = sampler::thread_seed(index, cold.tid as u64 ^ tc as u64);
            cold.sampler = sampler::Sampler::new(seed);
            cold.interval = cold.sampler.next_interval();
            *(*tc).until_sample.get() = cold.interval as isize;
            cold.next = reg.head;
            if !reg.head.is_null() {
                (*(*reg.head).cold.get()).prev = tc;
            }
        }
        reg.head = tc;
        reg.count += 1;
        threads_changed(reg.count);
        tc
    };
    // Publish before arming the exit hook: pthread_setspecific may call
    // calloc, which must find this cache rather than recurse into create().
    tls::set(tc);
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
    flush_all(t);
    // SAFETY: exclusive use (caller).
    let cold = unsafe { &mut *t.cold.get() };
    BUDGET.fetch_add(cold.limit as i64, Relaxed);
    cold.limit = 0;
    cold.capacity = 0;
}

fn unregister(reg: &mut Registry, tc: *mut ThreadCache) {
    // SAFETY: `tc` is a registered cache; the registry lock is held.
    unsafe {
        let cold = &mut *(*tc).cold.get();
        if cold.prev.is_null() {
            reg.head = cold.next;
        } else {
            (*(*cold.prev).cold.get()).next = cold.next;
        }
        if !cold.next.is_null() {
            (*(*cold.next).cold.get()).prev = cold.prev;
        }
        reg.count -= 1;
        threads_changed(reg.count);
        reg.pool.give(tc);
    }
}

/// Marks the calling thread as inside the profiler. False if it already is
/// (a re-entry: an allocation made by the profiler's own work, which must
/// not be recorded) or has no cache (no per-thread state to mark).
pub fn enter_profiler() -> bool {
    let tc = tls::get();
    if is_static(tc) {
        return false;
    }
    // SAFETY: owner-only state of this thread's live cache.
    let cold = unsafe { &mut *(*tc).cold.get() };
    !core::mem::replace(&mut cold.in_profiler, true)
}

/// Ends what `enter_profiler` (returning true) began.
pub fn leave_profiler() {
    let tc = tls::get();
    if !is_static(tc) {
        // SAFETY: owner-only state of this thread's live cache.
        unsafe { (*(*tc).cold.get()).in_profiler = false };
    }
}

/// Thread exit: flush this thread's cache and leave the slot on EXITED, so
/// frees from later destructors (and glibc's own teardown) still work.
pub fn on_thread_exit() {
    let tc = tls::get();
    if is_static(tc) {
        return;
    }
    tls::set(&EXITED_CACHE as *const ThreadCache as *mut ThreadCache);
    // SAFETY: the owner is exiting and the slot no longer names `tc`.
    unsafe { drain(tc) };
    unregister(&mut REGISTRY.lock(), tc);
}

/// Gives back the calling thread's cached objects (malloc_trim).
pub fn flush_current() {
    let tc = tls::get();
    if is_static(tc) {
        return;
    }
    // SAFETY: this thread's own live cache.
    flush_all(unsafe { &*tc });
}

/// Moves every cached object of `t` to the central lists. Counts each chain
/// itself: in a fork child, the owner may have been stopped between a pop
/// and its `avail` update.
fn flush_all(t: &ThreadCache) {
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
            tc = (*(*tc).cold.get()).next;
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
    let me = tls::get();
    let mut reg = REGISTRY.lock();
    let mut tc = reg.head;
    while !tc.is_null() {
        // SAFETY: registry members are live; their owners no longer exist.
        let next = unsafe { (*(*tc).cold.get()).next };
        if tc != me {
            // SAFETY: nobody else uses `tc` in the child.
            unsafe { drain(tc) };
            unregister(&mut reg, tc);
        } else {
            // The tid changed in the child, and a signal handler that forked
            // may have interrupted this thread's own fast path: recount.
            // SAFETY: our own cache, used by no other thread in the child.
            unsafe {
                (*(*tc).cold.get()).tid = crate::sys::gettid();
                for (class, list) in (*tc).lists.iter().enumerate().skip(1) {
                    let len =
                        diag::link_or_abort(class, chain_len(list.head.load(Relaxed), (*tc).key))
                            as i32;
                    list.avail
                        .store(list.max_len.load(Relaxed) as i32 - len, Relaxed);
                }
            }
        }
        tc = next;
    }
}

#[cfg(test)]
mod tests;
