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
//! capacity from its own other lists.
//!
//! Must never: allocate through anything but the central lists, block while
//! holding a central lock, or write to the static EMPTY/EXITED caches.

use crate::central::CENTRAL;
use crate::diag;
use crate::large;
use crate::meta::Pool;
use crate::pagemap::PAGEMAP;
use crate::sampler;
use crate::size_class::{class_of, class_of_tiny, size_of, CLASSES, NUM_CLASSES};
use crate::sys::lock::Locked;
use crate::sys::tls;
use crate::util::{chain_tail, FreeObject};
use core::cell::UnsafeCell;
use core::sync::atomic::{
    AtomicI32, AtomicI64, AtomicIsize, AtomicPtr, AtomicU32, Ordering::Relaxed,
};

/// Longest a list may grow, in objects.
const MAX_LEN: u32 = 8192;
/// The most one thread may claim of the global budget.
pub const PER_THREAD_MAX: usize = 4 << 20;
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
    const fn new() -> Self {
        FreeList {
            head: AtomicPtr::new(core::ptr::null_mut()),
            avail: AtomicI32::new(0),
            max_len: AtomicU32::new(0),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.head.load(Relaxed).is_null()
    }

    /// Objects on the list (readable from any thread, approximately).
    pub fn len(&self) -> usize {
        (self.max_len.load(Relaxed) as i64 - self.avail.load(Relaxed) as i64).max(0) as usize
    }
}

/// Owner-only bookkeeping, never read by other threads.
struct Cold {
    /// Σ max_len × size over the lists, in bytes.
    capacity: usize,
    /// Bytes claimed from the global budget.
    limit: usize,
    overages: [u32; NUM_CLASSES],
    steal_cursor: usize,
    next: *mut ThreadCache,
    prev: *mut ThreadCache,
    tid: i64,
    sampler: sampler::Sampler,
}

// Lists first: the fast paths address `lists[class]` with no extra offset.
#[repr(C, align(64))]
pub struct ThreadCache {
    lists: [FreeList; NUM_CLASSES],
    until_sample: AtomicIsize,
    cold: UnsafeCell<Cold>,
}

// SAFETY: `cold` is touched only by the owning thread (or by the fork child
// and the registry under its lock after the owner is gone); everything other
// threads read is atomic. The static caches are never written.
unsafe impl Sync for ThreadCache {}

impl ThreadCache {
    const fn new() -> Self {
        ThreadCache {
            lists: [const { FreeList::new() }; NUM_CLASSES],
            until_sample: AtomicIsize::new(0),
            cold: UnsafeCell::new(Cold {
                capacity: 0,
                limit: 0,
                overages: [0; NUM_CLASSES],
                steal_cursor: 1,
                next: core::ptr::null_mut(),
                prev: core::ptr::null_mut(),
                tid: 0,
                sampler: sampler::Sampler::new(0),
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
pub static EMPTY_CACHE: ThreadCache = ThreadCache::new();
/// The cache of threads past their thread-exit flush. Never written.
pub static EXITED_CACHE: ThreadCache = ThreadCache::new();

fn is_static(tc: *const ThreadCache) -> bool {
    core::ptr::eq(tc, &EMPTY_CACHE) || core::ptr::eq(tc, &EXITED_CACHE)
}

// ---------------------------------------------------------------- fast paths

/// `malloc` for every size. Requests up to 1 KiB (most of them) take the
/// shortest path; others go through `malloc_medium`, which is the same pop
/// after a second table lookup.
#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    match class_of_tiny(size) {
        Some(class) => alloc_class(size, class),
        None => malloc_medium(size),
    }
}

#[inline(never)]
fn malloc_medium(size: usize) -> *mut u8 {
    let class = class_of(size);
    if class == 0 {
        return large::alloc(size, 1);
    }
    alloc_class(size, class)
}

/// Pops an object of `class` (1..NUM_CLASSES) for a request of `size`.
#[inline(always)]
fn alloc_class(size: usize, class: usize) -> *mut u8 {
    let tc = tls::get();
    // SAFETY: the slot holds a static cache or this thread's live cache, and
    // `class` < NUM_CLASSES by construction of the class table.
    let (list, countdown) = unsafe { ((*tc).lists.get_unchecked(class), &(*tc).until_sample) };
    let head = list.head.load(Relaxed);
    let left = countdown.load(Relaxed).wrapping_sub(size as isize);
    if head.is_null() || left < 0 {
        return malloc_slow(size, class);
    }
    countdown.store(left, Relaxed);
    // SAFETY: `head` is a free object owned by this list; its first word is
    // the link.
    list.head.store(unsafe { (*head).next }, Relaxed);
    list.avail.store(list.avail.load(Relaxed) + 1, Relaxed);
    head as *mut u8
}

/// `free` for every pointer; small objects never leave this function unless
/// their list is full.
#[inline(always)]
pub fn free(p: *mut u8) {
    let entry = PAGEMAP.lookup_addr(p as usize);
    let class = entry.class();
    if class == 0 || (p as usize) & 15 != 0 {
        return free_slow(p);
    }
    let tc = tls::get();
    // SAFETY: as in `malloc`; class < NUM_CLASSES since it came from a
    // page-map entry written by the page heap.
    let list = unsafe { (*tc).lists.get_unchecked(class) };
    let avail = list.avail.load(Relaxed) - 1;
    if avail < 0 {
        return free_overflow(p, class);
    }
    list.avail.store(avail, Relaxed);
    let obj = p as *mut FreeObject;
    // SAFETY: `p` is the start of an object of `class` that the program
    // gives back; it becomes a list member holding the link.
    unsafe { (*obj).next = list.head.load(Relaxed) };
    list.head.store(obj, Relaxed);
}

// ---------------------------------------------------------------- slow paths

#[cold]
#[inline(never)]
fn malloc_slow(size: usize, class: usize) -> *mut u8 {
    let tc = match current_or_create() {
        Some(tc) => tc,
        None => return central_alloc_one(class),
    };
    // SAFETY: a live cache owned by this thread.
    let t = unsafe { &*tc };
    let left = t.until_sample.load(Relaxed).wrapping_sub(size as isize);
    if left < 0 {
        // SAFETY: owner-only state of this thread's cache.
        let cold = unsafe { &mut *t.cold.get() };
        t.until_sample
            .store(cold.sampler.next_interval() as isize, Relaxed);
        if let Some(p) = sampler::on_sample_point(size) {
            return p;
        }
    } else {
        t.until_sample.store(left, Relaxed);
    }
    let list = &t.lists[class];
    let mut head = list.head.load(Relaxed);
    if head.is_null() {
        head = refill(t, class);
        if head.is_null() {
            return central_alloc_one(class);
        }
    }
    // SAFETY: `head` is a free object owned by this list.
    list.head.store(unsafe { (*head).next }, Relaxed);
    list.avail.store(list.avail.load(Relaxed) + 1, Relaxed);
    head as *mut u8
}

/// Fills an empty list from the central list; returns the new head.
fn refill(t: &ThreadCache, class: usize) -> *mut FreeObject {
    let k = &CLASSES[class];
    let list = &t.lists[class];
    let max_len = list.max_len.load(Relaxed);
    // Growing on underflow: this class is in demand.
    if max_len < MAX_LEN {
        grow(t, class);
    }
    let max_len = list.max_len.load(Relaxed);
    let want = (k.batch).min(max_len.max(1)) as usize;
    let (head, n) = CENTRAL[class].lock().remove_range(class, want);
    if n == 0 {
        return core::ptr::null_mut();
    }
    list.head.store(head, Relaxed);
    list.avail.store(max_len as i32 - n as i32, Relaxed);
    head
}

/// Raises `class`'s max_len by one batch if the thread's budget allows,
/// claiming more of the global budget or stealing from other lists.
fn grow(t: &ThreadCache, class: usize) {
    let k = &CLASSES[class];
    // SAFETY: owner-only state.
    let cold = unsafe { &mut *t.cold.get() };
    let cost = k.batch as usize * k.size as usize;
    if cold.capacity + cost > cold.limit && !claim(cold, cost) && !steal(t, cold, class, cost) {
        return;
    }
    let list = &t.lists[class];
    let add = k.batch.min(MAX_LEN - list.max_len.load(Relaxed));
    list.max_len
        .store(list.max_len.load(Relaxed) + add, Relaxed);
    list.avail
        .store(list.avail.load(Relaxed) + add as i32, Relaxed);
    cold.capacity += add as usize * k.size as usize;
}

/// Claims budget so `capacity + cost` fits the thread's limit.
fn claim(cold: &mut Cold, cost: usize) -> bool {
    let need = cold.capacity + cost - cold.limit;
    let step = need.div_ceil(CLAIM_STEP) * CLAIM_STEP;
    if cold.limit + step > PER_THREAD_MAX {
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
}

/// Moves the first `n` objects of a list to the central list.
fn flush(t: &ThreadCache, class: usize, n: usize) {
    if n == 0 {
        return;
    }
    let list = &t.lists[class];
    let head = list.head.load(Relaxed);
    // SAFETY: the list holds at least `n` objects (callers pass n <= len).
    let tail = unsafe { chain_tail(head, n) };
    // SAFETY: `tail` is a list member; cut the chain after it.
    unsafe {
        list.head.store((*tail).next, Relaxed);
        (*tail).next = core::ptr::null_mut();
    }
    list.avail
        .store(list.avail.load(Relaxed) + n as i32, Relaxed);
    // SAFETY: the chain holds exactly `n` free objects of `class`.
    unsafe { CENTRAL[class].lock().insert_range(class, head, n) };
}

#[cold]
#[inline(never)]
fn free_overflow(p: *mut u8, class: usize) {
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
        grow(t, class);
    } else if list.avail.load(Relaxed) <= 0 {
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
    unsafe { (*obj).next = list.head.load(Relaxed) };
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
        (*obj).next = core::ptr::null_mut();
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
            let cold = &mut *(*tc).cold.get();
            cold.tid = crate::sys::gettid();
            cold.sampler = sampler::Sampler::new(cold.tid as u64 ^ tc as u64);
            (*tc)
                .until_sample
                .store(cold.sampler.next_interval() as isize, Relaxed);
            cold.next = reg.head;
            if !reg.head.is_null() {
                (*(*reg.head).cold.get()).prev = tc;
            }
        }
        reg.head = tc;
        reg.count += 1;
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
    for class in 1..NUM_CLASSES {
        // Count the chain itself: in a fork child, the owner may have been
        // stopped between a pop and its `avail` update, so the counters can
        // be one off. The chain is always null-terminated.
        let mut n = 0;
        let mut p = t.lists[class].head.load(Relaxed);
        while !p.is_null() {
            n += 1;
            // SAFETY: list members are free objects holding a link.
            p = unsafe { (*p).next };
        }
        flush(t, class, n);
    }
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
        reg.pool.give(tc);
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
    let t = unsafe { &*tc };
    for class in 1..NUM_CLASSES {
        flush(t, class, t.lists[class].len());
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
            // SAFETY: our own cache; the tid changed in the child.
            unsafe { (*(*tc).cold.get()).tid = crate::sys::gettid() };
        }
        tc = next;
    }
}

#[cfg(test)]
mod tests;
