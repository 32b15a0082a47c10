//! Per-CPU caches: a layer between the thread caches and the central lists,
//! bounded by CPUs rather than threads.
//!
//! Per possible CPU and size class, a block of `rseq::SLOTS` chains of free
//! objects (each chain END-terminated, as a thread cache's flush detached
//! it), pushed and popped whole in restartable sequences (`sys::rseq`): no
//! lock and no atomic read-modify-write, and any length of chain, which the
//! central transfer caches (whole batches only) cannot take. Beside the
//! chains, a list of single objects, pushed and popped one at a time by
//! threads whose own lists are at limit 0 (over budget, or asleep between
//! bursts): one section per object, where a chain of one took two
//! (many-threads at 256 and 1024 threads: 12-17% less CPU). A thread whose
//! list overflows leaves a chain here; the next thread on the same CPU that
//! runs dry takes it. With many more threads than CPUs (a thread-per-request
//! server) each thread's share of the cache budget is small, its lists
//! overflow and run dry on every burst, and without this layer every burst
//! went object by object through the contended central lists.
//!
//! Bounds, per CPU c and class k (`rseq`'s block equations, plus):
//!
//! ```text
//!   objects(c, k) + ones(c, k) ≤ cap(k) = max(1, MEMX_CPU_CACHE_BYTES / size(k))
//! ```
//!
//! so the layer holds at most Σ_k cap(k) × size(k) ≈ 129 × the option's
//! value per CPU that ever ran a thread of the process.
//!
//! The layer is in use only while the process has more threads with caches
//! than usable CPUs (`set_active`); with fewer, it adds nothing a thread's
//! own cache does not do, and holds memory away from the spans.
//!
//! Modes: `PerCpu` when glibc registered rseq and the option is above 0,
//! else `ThreadOnly` (valgrind, `GLIBC_TUNABLES=glibc.pthread.rseq=0`,
//! glibc < 2.35, `MEMX_CPU_CACHE_BYTES=0`): the thread caches then talk to
//! the central lists directly, as they did before this layer.
//!
//! Only a thread running on CPU c can touch c's blocks, so a CPU's cache is
//! drained (malloc_trim) by a thread on it: objects cached on CPUs the
//! process no longer runs on stay there, within the bound above.
//!
//! Owns: the blocks' mapping and the mode. Must never: write a block except
//! through `rseq::push`/`rseq::pop`, or hold a central lock while pushing.

use crate::central::CENTRAL;
use crate::free_object::{chain_prefix, link, set_link, FreeObject, END};
use crate::size_class::{size_of, NUM_CLASSES};
use crate::sys::{self, rseq};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering::Relaxed};

const _: () = assert!(NUM_CLASSES * rseq::BLOCK_BYTES <= 1 << rseq::CPU_SHIFT);

/// CPU 0's block array (null: mode `ThreadOnly`); CPU c's is at
/// `BASE + (c << CPU_SHIFT)`, for c < NCPU.
static BASE: AtomicPtr<u64> = AtomicPtr::new(core::ptr::null_mut());
/// The highest possible CPU number + 1.
static NCPU: AtomicU32 = AtomicU32::new(0);
/// Whether threads push and pop here: while the process has more threads
/// with caches than usable CPUs (`set_active`). With fewer, a thread has
/// a CPU to itself most of the time, and its flushes are better off in
/// the central lists, where wholly free spans go back to the page heap
/// (a single-threaded espresso peaked 1.3 MiB higher with the layer on).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Per class k: the most objects one CPU may hold, cap(k) =
/// max(1, MEMX_CPU_CACHE_BYTES / size(k)), set by `configure`, so that a
/// push or pop, which threads over budget make for every object, does not
/// divide.
static CAPS: [AtomicU32; NUM_CLASSES] = [const { AtomicU32::new(0) }; NUM_CLASSES];

/// The cache mode, as `malloc_stats` names it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    PerCpu,
    ThreadOnly,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::PerCpu => "per-CPU (rseq)",
            Mode::ThreadOnly => "thread caches only",
        }
    }
}

/// Sets the layer up at initialisation: maps the blocks of every possible
/// CPU (reserved, untouched pages cost nothing) if rseq is available and
/// `class_bytes` > 0.
pub fn configure(class_bytes: u64) {
    for (class, cap) in CAPS.iter().enumerate().skip(1) {
        let objects = (class_bytes / size_of(class) as u64).clamp(1, u32::MAX as u64);
        cap.store(objects as u32, Relaxed);
    }
    if class_bytes == 0 || !BASE.load(Relaxed).is_null() || !rseq::available() {
        return;
    }
    let Some(ncpu) = rseq::possible_cpus() else {
        return;
    };
    let p = sys::map((ncpu as usize) << rseq::CPU_SHIFT);
    if p.is_null() {
        return;
    }
    NCPU.store(ncpu, Relaxed);
    BASE.store(p as *mut u64, Relaxed);
}

pub fn mode() -> Mode {
    if BASE.load(Relaxed).is_null() {
        Mode::ThreadOnly
    } else {
        Mode::PerCpu
    }
}

/// Told by the thread registry whenever the number of threads with caches
/// changes: the layer is in use while they outnumber the usable CPUs.
pub fn set_active(threads: usize) {
    let on = threads > sys::usable_cpus();
    if ACTIVE.load(Relaxed) != on {
        ACTIVE.store(on, Relaxed);
    }
}

/// Whether threads push to and pop from the layer now.
#[inline]
pub fn active() -> bool {
    ACTIVE.load(Relaxed) && !BASE.load(Relaxed).is_null()
}

/// `block0`, or null while the layer is not in use.
#[inline]
fn active_block0(class: usize) -> *mut u64 {
    if !ACTIVE.load(Relaxed) {
        return core::ptr::null_mut();
    }
    block0(class)
}

/// Class `class`'s block of CPU 0 (null in mode `ThreadOnly`).
#[inline]
fn block0(class: usize) -> *mut u64 {
    let base = BASE.load(Relaxed);
    if base.is_null() {
        return base;
    }
    base.wrapping_byte_add(class * rseq::BLOCK_BYTES)
}

#[inline]
fn cap(class: usize) -> u64 {
    CAPS[class].load(Relaxed) as u64
}

/// Leaves the END-terminated chain of `n` objects of `class` at `head` on
/// this CPU's cache; false (the chain is still the caller's) if the mode is
/// `ThreadOnly` or the cache has no room.
///
/// # Safety
/// `head` starts a chain of exactly `n` free objects of `class`, linked
/// with the process's key and ending in END.
pub unsafe fn push(class: usize, head: *mut FreeObject, n: usize) -> bool {
    // SAFETY: the global blocks (or none); chain as the caller promises.
    unsafe {
        push_in(
            active_block0(class),
            NCPU.load(Relaxed),
            cap(class),
            head,
            n,
        )
    }
}

/// `push` onto the blocks at `b` (null: none) of `ncpu` CPUs.
///
/// # Safety
/// As `push`; `b` is null or a block array as `rseq::push` requires.
unsafe fn push_in(b: *mut u64, ncpu: u32, cap: u64, head: *mut FreeObject, n: usize) -> bool {
    if b.is_null() || n == 0 || n > u16::MAX as usize {
        return false;
    }
    let entry = head as u64 | (n as u64) << 48;
    // SAFETY: `b` is a block array written only through rseq (caller); the
    // chain's pointer fits in 48 bits (page map) and is handed over whole.
    unsafe { rseq::push(b, entry, n as u64, cap, ncpu) }
}

/// Leaves one free object of `class` on this CPU's single-object list;
/// false (it is still the caller's) if the layer is not in use or the list
/// is full.
///
/// # Safety
/// `obj` is a free object of `class`, the caller's to give.
pub unsafe fn push_one(class: usize, obj: *mut FreeObject, key: usize) -> bool {
    // SAFETY: the global blocks (or none), as the caller promises.
    unsafe {
        push_one_in(
            active_block0(class),
            NCPU.load(Relaxed),
            cap(class),
            obj,
            key,
        )
    }
}

/// `push_one` onto the blocks at `b` (null: none).
///
/// # Safety
/// As `push_one`; `b` is null or a block array as `rseq::push_one` requires.
unsafe fn push_one_in(b: *mut u64, ncpu: u32, cap: u64, obj: *mut FreeObject, key: usize) -> bool {
    // SAFETY: as the caller promises.
    !b.is_null() && unsafe { rseq::push_one(b, obj as *mut u64, key, cap, ncpu) }
}

/// Takes one object of `class` from this CPU's single-object list.
pub fn pop_one(class: usize, key: usize) -> Option<*mut FreeObject> {
    // SAFETY: the global blocks (or none), holding free objects of `class`
    // linked with the process's key.
    unsafe { pop_one_in(active_block0(class), NCPU.load(Relaxed), class, key) }
}

/// `pop_one` from the blocks at `b` (null: none).
///
/// # Safety
/// `b` is null or a block array as `rseq::pop_one` requires, holding free
/// objects of `class` linked with `key`.
unsafe fn pop_one_in(b: *mut u64, ncpu: u32, class: usize, key: usize) -> Option<*mut FreeObject> {
    if b.is_null() {
        return None;
    }
    // SAFETY: as the caller promises.
    match unsafe { rseq::pop_one(b, key, ncpu) } {
        0 => None,
        v if v & 15 != 0 => crate::diag::corrupt_free_list(
            class,
            crate::free_object::BadLink {
                at: 0,
                value: (v & !1) as usize,
            },
        ),
        v => Some(v as *mut FreeObject),
    }
}

/// Takes up to `max` (≥ 1) objects of `class` from this CPU's single-object
/// list as an END-terminated chain: its head and length. Refills come here
/// when the CPU has no chain: what threads at limit 0 freed would otherwise
/// sit on the list while refills went to the central lists (larson: 4.1 MB
/// left in the per-CPU caches against 1.9 MB with chains of one).
pub fn pop_ones(class: usize, max: usize, key: usize) -> Option<(*mut FreeObject, usize)> {
    // SAFETY: the global blocks (or none), as in `pop_one`.
    unsafe { pop_ones_in(active_block0(class), NCPU.load(Relaxed), class, max, key) }
}

/// `pop_ones` from the blocks at `b` (null: none).
///
/// # Safety
/// As `pop_one_in`.
unsafe fn pop_ones_in(
    b: *mut u64,
    ncpu: u32,
    class: usize,
    max: usize,
    key: usize,
) -> Option<(*mut FreeObject, usize)> {
    let mut head = END;
    let mut n = 0;
    while n < max {
        // SAFETY: as the caller promises.
        let Some(obj) = (unsafe { pop_one_in(b, ncpu, class, key) }) else {
            break;
        };
        // SAFETY: a popped object is ours.
        unsafe { set_link(obj, head, key) };
        head = obj;
        n += 1;
    }
    (n > 0).then_some((head, n))
}

/// Takes a chain of at most `max` (≥ 1) objects of `class` from this CPU's
/// cache: its head and length, END-terminated. A longer chain is cut; its
/// rest goes back (or, if the cache filled meanwhile, to the central list).
pub fn pop(class: usize, max: usize, key: usize) -> Option<(*mut FreeObject, usize)> {
    // SAFETY: the global blocks (or none), which hold only chains of free
    // objects of their class.
    unsafe {
        pop_in(
            active_block0(class),
            NCPU.load(Relaxed),
            cap(class),
            class,
            max,
            key,
        )
    }
}

/// `pop` from the blocks at `b` (null: none).
///
/// # Safety
/// `b` is null or a block array as `rseq::pop` requires, holding chains
/// of free objects of `class` linked with `key`.
unsafe fn pop_in(
    b: *mut u64,
    ncpu: u32,
    cap: u64,
    class: usize,
    max: usize,
    key: usize,
) -> Option<(*mut FreeObject, usize)> {
    if b.is_null() {
        return None;
    }
    // SAFETY: as the caller promises.
    let entry = unsafe { rseq::pop(b, ncpu) };
    if entry == 0 {
        return None;
    }
    let head = (entry & ((1 << 48) - 1)) as *mut FreeObject;
    let n = (entry >> 48) as usize;
    if n <= max {
        return Some((head, n));
    }
    // SAFETY: the chain popped is ours: `n` free objects of `class`.
    let (tail, k) = crate::diag::link_or_abort(class, unsafe { chain_prefix(head, max, key) });
    // SAFETY: `tail` is a member of our chain; cut after it. The rest goes
    // back where it came from, or to the central list if that filled.
    unsafe {
        let rest = link(tail, key);
        set_link(tail, END, key);
        if !push_in(b, ncpu, cap, rest, n - k) {
            CENTRAL[class].lock().insert_range(rest, n - k);
        }
    }
    Some((head, k))
}

/// Moves every chain cached on the calling thread's CPU to the central
/// lists (malloc_trim). If the thread migrates meanwhile, it drains some
/// of the new CPU's instead; both are correct.
pub fn drain_this_cpu() {
    for (class, central) in CENTRAL.iter().enumerate().skip(1) {
        // Also while the layer is idle: chains left from a busier time.
        // SAFETY: the global blocks (or none), as in `pop`.
        while let Some((head, n)) = unsafe {
            pop_in(
                block0(class),
                NCPU.load(Relaxed),
                cap(class),
                class,
                usize::MAX,
                0,
            )
        } {
            // SAFETY: a popped chain of `n` free objects of `class`.
            unsafe { central.lock().insert_range(head, n) };
        }
        let key = crate::free_object::link_key();
        // SAFETY: the global blocks (or none), as in `pop_one`.
        let ones =
            unsafe { pop_ones_in(block0(class), NCPU.load(Relaxed), class, usize::MAX, key) };
        if let Some((head, n)) = ones {
            // SAFETY: a chain of `n` free objects of `class`, just popped.
            unsafe { central.lock().insert_range(head, n) };
        }
    }
}

/// Bytes cached in every CPU's blocks (statistics; read racily, exact when
/// nothing moves).
pub fn held_bytes() -> usize {
    let base = BASE.load(Relaxed);
    if base.is_null() {
        return 0;
    }
    let mut bytes = 0;
    for cpu in 0..NCPU.load(Relaxed) as usize {
        for class in 1..NUM_CLASSES {
            let w = base.wrapping_byte_add((cpu << rseq::CPU_SHIFT) + class * rseq::BLOCK_BYTES);
            // SAFETY: a word of our mapping; a racy read of an aligned u64
            // through a volatile load sees some committed value.
            let word = unsafe { w.read_volatile() };
            bytes += (word >> 16) as usize * size_of(class);
            bytes += rseq::single_len(w) as usize * size_of(class);
        }
    }
    bytes
}

#[cfg(test)]
mod tests;
