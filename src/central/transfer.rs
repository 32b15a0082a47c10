//! Transfer caches: per size class, a lock-free ring of whole batches (a
//! batch is an END-terminated chain of exactly `batch` free objects), in
//! front of the central list's spans. A batch freed by one thread reaches
//! another in O(1) without a lock: the producer/consumer pattern.
//!
//! Why no lock: a batch move is a handful of instructions, but with more
//! threads than CPUs a thread holding the class's lock was preempted, and
//! the other threads slept on it in the kernel. mimalloc-bench's
//! xmalloc-test (2 producers, 2 consumers of 64 B objects, 2 CPUs) made
//! 6.3 M batch moves in 5 s, 98% of them transfer-cache hits, and 300 K of
//! them found the class's lock held (futex sleeps and wake-ups).
//!
//! The ring is Vyukov's bounded multi-producer multi-consumer queue: each
//! slot carries a sequence number that says whose turn it is, so a push or
//! pop is one compare-and-swap on a position plus a store, and never
//! waits for another thread. A thread stopped between its CAS and its
//! store (preempted) makes only that slot look full or empty for a while:
//! others then fall back to the spans.
//!
//! Invariants (positions count up for ever, wrapping; SLOTS a power of two):
//!
//! ```text
//!   dequeue_pos ≤ enqueue_pos ≤ dequeue_pos + SLOTS
//!   slot i, position p ≡ i (mod SLOTS):
//!     seq(i) = p       free, for the push at p
//!     seq(i) = p + 1   holds the batch pushed at p, for the pop at p
//!   stored: seq(i) − i, so that zeroed memory is the empty ring
//! ```
//!
//! How many batches a class keeps is bounded by `capacity`, which starts at
//! TRANSFER_BYTES worth and doubles (up to TRANSFER_BYTES_MAX) each time a
//! push finds it full after another thread found it empty: producer and
//! consumer out of step. The bound is read without synchronisation: a race
//! lets it be passed by a batch or two, never past SLOTS.
//!
//! Owns: `TRANSFER`. Must never: follow a link of a batch it holds (the
//! thread caches check them when they pop), or block.

use crate::free_object::FreeObject;
use crate::size_class::{ClassInfo, CLASSES, NUM_CLASSES};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

/// Slots per ring: the most batches any class may keep.
pub const SLOTS: usize = 256;
const MASK: usize = SLOTS - 1;
const _: () = assert!(SLOTS.is_power_of_two());

/// Bytes of whole batches one class may keep at first: enough for a
/// producer/consumer pair in step to trade batches without touching
/// spans, small enough that 128 classes hold little memory.
const TRANSFER_BYTES: usize = 32 << 10;
/// What a class's capacity may grow to. Each batch that misses the cache
/// costs `batch` span updates on the way in and `batch` on the way out
/// (xmalloc-test: 197 instructions per object freed with 32 KiB, 155 with
/// 512 KiB, mimalloc 147, under callgrind).
const TRANSFER_BYTES_MAX: usize = 512 << 10;

/// Whether more than one thread caches objects. Only then can a batch freed
/// by one thread be wanted by another, which is what transfer caches are
/// for; in a single-threaded program they would only hold memory.
static SHARING: AtomicBool = AtomicBool::new(false);

/// Told by the thread caches whenever their number crosses one.
pub fn set_sharing(on: bool) {
    SHARING.store(on, Ordering::Relaxed);
}

/// Whether more than one thread caches objects (`SHARING`).
pub fn sharing() -> bool {
    SHARING.load(Ordering::Relaxed)
}

/// One cache line of its own, so pushers and poppers do not share one.
#[repr(align(64))]
struct Pos(AtomicUsize);

struct Slot {
    /// seq(i) − i (see the module's equations).
    seq: AtomicUsize,
    /// The batch's head, valid while seq(i) = p + 1.
    head: AtomicPtr<FreeObject>,
}

pub struct TransferCache {
    enqueue_pos: Pos,
    dequeue_pos: Pos,
    /// Batches this class may keep: 0 = not yet set (transfer_capacity),
    /// else between it and max_transfer_capacity.
    capacity: AtomicUsize,
    /// The thread (its `tls::get()` slot value) whose pop last found the
    /// ring empty since the capacity last grew; 0 = none. One thread that
    /// frees a burst it allocated itself is no hand-off between threads,
    /// and must not make the cache grow (it raised glibc-simple's peak RSS
    /// by 0.3 MiB).
    dry_by: AtomicUsize,
    slots: [Slot; SLOTS],
}

/// One ring per class.
pub static TRANSFER: [TransferCache; NUM_CLASSES] = [const { TransferCache::new() }; NUM_CLASSES];

/// How many whole batches class `k` may keep at first.
pub(super) fn transfer_capacity(k: &ClassInfo) -> usize {
    (TRANSFER_BYTES / (k.batch as usize * k.size as usize)).clamp(1, SLOTS)
}

/// The most whole batches class `k` may keep.
pub(super) fn max_transfer_capacity(k: &ClassInfo) -> usize {
    (TRANSFER_BYTES_MAX / (k.batch as usize * k.size as usize)).clamp(1, SLOTS)
}

/// Which thread is calling: its thread-local slot's value (its cache, or
/// a static cache shared by the threads that have none; never 0).
pub(super) fn this_thread() -> usize {
    crate::sys::tls::get() as usize
}

/// A whole batch of `class` if `n` is its batch size and its ring has one.
pub fn take_batch(class: usize, n: usize) -> Option<*mut FreeObject> {
    if n != CLASSES[class].batch as usize {
        return None;
    }
    let t = &TRANSFER[class];
    let head = t.pop();
    if head.is_none() {
        t.dry_by.store(this_thread(), Ordering::Relaxed);
    }
    head
}

/// Leaves the chain at `head` on `class`'s ring if it is a whole batch,
/// other threads cache objects, and the ring has room; false: the chain
/// is still the caller's.
///
/// # Safety
/// `head` starts an END-terminated chain of exactly `n` free objects of
/// `class`, given up by the caller if this returns true.
pub unsafe fn give_batch(class: usize, head: *mut FreeObject, n: usize) -> bool {
    let k = &CLASSES[class];
    if n != k.batch as usize || !sharing() {
        return false;
    }
    let t = &TRANSFER[class];
    t.has_room(k) && t.push(head)
}

impl TransferCache {
    pub const fn new() -> Self {
        TransferCache {
            enqueue_pos: Pos(AtomicUsize::new(0)),
            dequeue_pos: Pos(AtomicUsize::new(0)),
            capacity: AtomicUsize::new(0),
            dry_by: AtomicUsize::new(0),
            slots: [const {
                Slot {
                    seq: AtomicUsize::new(0),
                    head: AtomicPtr::new(core::ptr::null_mut()),
                }
            }; SLOTS],
        }
    }

    /// Batches held now (a snapshot: pushes and pops may be under way).
    pub fn len(&self) -> usize {
        let enq = self.enqueue_pos.0.load(Ordering::Relaxed);
        let deq = self.dequeue_pos.0.load(Ordering::Relaxed);
        enq.wrapping_sub(deq).min(SLOTS)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn seq(&self, i: usize) -> usize {
        self.slots[i].seq.load(Ordering::Acquire).wrapping_add(i)
    }

    fn set_seq(&self, i: usize, seq: usize) {
        self.slots[i]
            .seq
            .store(seq.wrapping_sub(i), Ordering::Release);
    }

    /// Whether one more batch fits under the capacity, growing it if full
    /// but another thread found the ring empty since it last grew.
    fn has_room(&self, k: &ClassInfo) -> bool {
        let mut cap = self.capacity.load(Ordering::Relaxed);
        if cap == 0 {
            cap = transfer_capacity(k);
            self.capacity.store(cap, Ordering::Relaxed);
        }
        if self.len() < cap {
            return true;
        }
        let dry_by = self.dry_by.load(Ordering::Relaxed);
        if dry_by == 0 || dry_by == this_thread() {
            return false;
        }
        self.dry_by.store(0, Ordering::Relaxed);
        let grown = (cap * 2).min(max_transfer_capacity(k));
        self.capacity.store(grown, Ordering::Relaxed);
        self.len() < grown
    }

    /// Appends a batch; false if the ring is full (the batch is still the
    /// caller's).
    fn push(&self, head: *mut FreeObject) -> bool {
        // A slot is free for the push at p when seq = p; a full slot (the
        // previous lap's batch) reads seq = p − SLOTS + 1.
        let Some((pos, i)) = self.claim(&self.enqueue_pos, 0) else {
            return false;
        };
        self.slots[i].head.store(head, Ordering::Relaxed);
        self.set_seq(i, pos.wrapping_add(1));
        true
    }

    /// Takes the oldest batch; None if there is none ready.
    pub fn pop(&self) -> Option<*mut FreeObject> {
        // A slot is ready for the pop at p when seq = p + 1; seq = p means
        // not pushed yet (or a push is between its CAS and its store).
        let (pos, i) = self.claim(&self.dequeue_pos, 1)?;
        let head = self.slots[i].head.load(Ordering::Relaxed);
        self.set_seq(i, pos.wrapping_add(SLOTS));
        Some(head)
    }

    /// Moves `at` on by one from a position p whose slot reads
    /// seq = p + `ready`, and returns p and the slot; None if the slot at
    /// `at` is not ready (seq behind: the ring is full or empty). A slot
    /// ahead means another thread took p first: read `at` again.
    fn claim(&self, at: &Pos, ready: usize) -> Option<(usize, usize)> {
        let mut pos = at.0.load(Ordering::Relaxed);
        loop {
            let i = pos & MASK;
            let dif = self.seq(i).wrapping_sub(pos.wrapping_add(ready)) as isize;
            if dif < 0 {
                return None;
            }
            if dif > 0 {
                pos = at.0.load(Ordering::Relaxed);
                continue;
            }
            match at.0.compare_exchange_weak(
                pos,
                pos.wrapping_add(1),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((pos, i)),
                Err(now) => pos = now,
            }
        }
    }

    /// The capacity starts over (malloc_trim emptied the ring).
    pub fn reset_capacity(&self) {
        self.capacity.store(0, Ordering::Relaxed);
        self.dry_by.store(0, Ordering::Relaxed);
    }

    /// In a fork child (one thread): a thread of the parent stopped
    /// between its CAS and its store left a slot that would look full or
    /// empty for ever, stalling the ring. Keeps the batches that were
    /// wholly pushed and rebuilds the ring around them; a batch in flight
    /// in another thread is lost with that thread, as any chain it held.
    ///
    /// # Safety
    /// No other thread touches the ring (the child's only thread).
    ///
    /// Every fork child runs this for all 129 rings, so a ring never used
    /// (both positions still 0) is left alone, and a slot already reading
    /// its starting value is not written: the rings' untouched pages stay
    /// unmapped in the child.
    pub unsafe fn rebuild_after_fork(&self) {
        let enq = self.enqueue_pos.0.load(Ordering::Relaxed);
        let mut pos = self.dequeue_pos.0.load(Ordering::Relaxed);
        if enq == 0 && pos == 0 {
            return;
        }
        let mut kept = [core::ptr::null_mut::<FreeObject>(); SLOTS];
        let mut n = 0;
        while pos != enq && n < SLOTS {
            let i = pos & MASK;
            if self.seq(i) == pos.wrapping_add(1) {
                kept[n] = self.slots[i].head.load(Ordering::Relaxed);
                n += 1;
            }
            pos = pos.wrapping_add(1);
        }
        for i in 0..SLOTS {
            if self.seq(i) != i {
                self.set_seq(i, i);
            }
        }
        self.enqueue_pos.0.store(0, Ordering::Relaxed);
        self.dequeue_pos.0.store(0, Ordering::Relaxed);
        for &head in &kept[..n] {
            self.push(head);
        }
    }
}

impl Default for TransferCache {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests;
