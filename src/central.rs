//! `CentralFreeList`: one per size class, each behind its own lock. Moves
//! objects in batches to and from thread caches, carves new spans from the
//! page heap, and gives wholly free spans back to it.
//!
//! A transfer cache of whole batches (a batch is a linked chain of exactly
//! `batch` objects) sits in front of the spans, so a batch freed by one
//! thread reaches another thread in O(1), the pattern of producer/consumer
//! programs. It is a stack linked through each batch head's second word,
//! so a central list is a few words and the 129 of them share few pages.
//!
//! Every link in a free object is stored encoded with the process's random
//! key (`free_object::link_key`), and every link read here is
//! checked: a corrupt one aborts with `diag::corrupt_free_list`.
//!
//! Owns: the per-class lists and transfer caches. Lock
//! order: a central lock may be held while taking the page heap lock, never
//! the reverse.
//! Must never: be reached from the fast path; hold two central locks at once;
//! read or write a free object's link except through the `free_object` link helpers.

pub mod check;

use crate::diag;
use crate::free_object::{
    batch_link_checked, link_checked, link_key, set_batch_link, set_link, BadLink, FreeObject, END,
};
use crate::meta::Pool;
use crate::page_heap::HEAP;
use crate::pagemap::PAGEMAP;
use crate::size_class::{ClassInfo, CLASSES, NUM_CLASSES};
use crate::span::{Span, SpanList, SpanState};
use crate::sys::lock::Locked;
use core::sync::atomic::{AtomicBool, Ordering};

const TRANSFER_MAX: usize = 256;
/// Bytes of whole batches one class may park in its transfer cache at
/// first: enough for a producer/consumer pair in step to trade batches
/// without touching spans, small enough that 128 classes hold little memory.
const TRANSFER_BYTES: usize = 32 << 10;
/// What a class's transfer cache may grow to (doubling from TRANSFER_BYTES)
/// each time one thread overflows it after another ran it dry: the mark of
/// producer and consumer threads out of step, where each batch that misses it costs
/// `batch` span updates on the way in and `batch` on the way out
/// (mimalloc-bench's xmalloc-test hands 4096-object batches between
/// threads: 197 instructions per object freed with 32 KiB, 155 with 512 KiB,
/// mimalloc 147, under callgrind).
const TRANSFER_BYTES_MAX: usize = 512 << 10;

pub struct CentralFreeList {
    /// The size class this list serves (0 only for the unused list 0).
    class: u8,
    /// Spans of this class with at least one free or never-used object.
    nonempty: SpanList,
    /// The transfer cache: the top batch's head (END if none).
    transfer: *mut FreeObject,
    /// Batches in the transfer cache; ntransfer <= capacity.
    ntransfer: usize,
    /// Batches the transfer cache may hold: transfer_capacity(k) at first
    /// (0 = not yet set), doubled up to max_transfer_capacity(k) each time
    /// another thread overflows it after one ran it dry (`dry_by`).
    capacity: usize,
    /// The thread (its `tls::get()` slot value) whose batch-sized request
    /// last found the transfer cache empty since its capacity last grew;
    /// 0 = none. One thread that frees a burst it allocated itself is no
    /// hand-off between threads, and must not make the cache grow (it
    /// raised glibc-simple's peak RSS by 0.3 MiB).
    dry_by: usize,
    /// Spans of this class, and their objects not out (free or never used).
    pub spans: usize,
    pub free_in_spans: usize,
    /// Checked mode: bitmaps for this class's spans.
    bits: Pool<check::Bits>,
    /// Checked mode: freed objects waiting before they go back to their
    /// spans (`check::Quarantine`).
    quarantine: check::Quarantine,
}

// SAFETY: raw pointers are only followed with the list's lock held.
unsafe impl Send for CentralFreeList {}

/// Whether more than one thread caches objects. Only then can a batch freed
/// by one thread be wanted by another, which is what transfer caches are
/// for; in a single-threaded program they would only hold memory.
static SHARING: AtomicBool = AtomicBool::new(false);

/// Told by the thread caches whenever their number crosses one.
pub fn set_sharing(on: bool) {
    SHARING.store(on, Ordering::Relaxed);
}

/// Reads a link in a chain of `class`, aborting on a corrupt one.
///
/// # Safety
/// `obj` is a free object of `class`.
#[inline]
pub unsafe fn next_or_abort(class: usize, obj: *mut FreeObject, key: usize) -> *mut FreeObject {
    // SAFETY: as the caller promises.
    diag::link_or_abort(class, unsafe { link_checked(obj, key) })
}

/// One list per class, each knowing its class: `CENTRAL[c].class == c`.
pub static CENTRAL: [Locked<CentralFreeList>; NUM_CLASSES] = {
    let mut lists = [const { Locked::new(CentralFreeList::new(0)) }; NUM_CLASSES];
    let mut c = 1;
    while c < NUM_CLASSES {
        lists[c] = Locked::new(CentralFreeList::new(c));
        c += 1;
    }
    lists
};

/// How many whole batches class `c` may keep in its transfer cache at first.
fn transfer_capacity(k: &ClassInfo) -> usize {
    (TRANSFER_BYTES / (k.batch as usize * k.size as usize)).clamp(1, TRANSFER_MAX)
}

/// The most whole batches class `c`'s transfer cache may grow to.
fn max_transfer_capacity(k: &ClassInfo) -> usize {
    (TRANSFER_BYTES_MAX / (k.batch as usize * k.size as usize)).clamp(1, TRANSFER_MAX)
}

impl CentralFreeList {
    /// An empty list for `class` (< NUM_CLASSES).
    pub const fn new(class: usize) -> Self {
        CentralFreeList {
            class: class as u8,
            nonempty: SpanList::new(),
            transfer: END,
            ntransfer: 0,
            capacity: 0,
            dry_by: 0,
            spans: 0,
            free_in_spans: 0,
            bits: Pool::new(),
            quarantine: check::Quarantine::new(),
        }
    }

    /// Objects held in the transfer cache.
    pub fn transfer_objects(&self) -> usize {
        let class = self.class as usize;
        self.ntransfer * CLASSES[class].batch as usize
    }

    /// Takes up to `max` objects of `class` as a chain; returns its head and
    /// length (0 only if the OS refuses memory).
    pub fn remove_range(&mut self, max: usize) -> (*mut FreeObject, usize) {
        let class = self.class as usize;
        let k = &CLASSES[class];
        if max == k.batch as usize {
            if self.ntransfer > 0 {
                return (self.pop_batch(), max);
            }
            self.dry_by = this_thread();
        }
        let key = link_key();
        let mut head: *mut FreeObject = END;
        let mut n = 0;
        while n < max {
            let mut s = self.nonempty.first();
            if s.is_null() {
                s = self.populate();
                if s.is_null() {
                    break;
                }
            }
            // SAFETY: `s` is a live Small span of this class on our list.
            let span = unsafe { &mut *s };
            while n < max {
                // SAFETY: our span, under our lock.
                let Some(obj) = (unsafe { take_from_span(span, class, key) }) else {
                    break;
                };
                // SAFETY: `obj` is a free object of this span, ours to link.
                unsafe { set_link(obj, head, key) };
                head = obj;
                n += 1;
                self.free_in_spans -= 1;
            }
            if is_dry(span, class) {
                // SAFETY: `s` is on our list.
                unsafe { self.nonempty.remove(s) };
                span.small.in_list = false;
            }
        }
        (head, n)
    }

    /// A new span for `class` from the page heap, on the nonempty list.
    fn populate(&mut self) -> *mut Span {
        let class = self.class as usize;
        let k = &CLASSES[class];
        let s = HEAP.lock().alloc(k.pages as usize, class);
        if s.is_null() {
            return s;
        }
        // SAFETY: a fresh Small span, exclusively ours until listed.
        let span = unsafe { &mut *s };
        span.small.freelist = END;
        span.small.allocated = 0;
        span.small.bump = span.addr();
        span.small.limit = span.addr() + k.objects as usize * k.size as usize;
        span.small.check_bits = core::ptr::null_mut();
        if check::enabled() {
            let bits = self.take_bits();
            if bits.is_null() {
                // SAFETY: the span is ours and unused.
                unsafe { HEAP.lock().free(s) };
                return core::ptr::null_mut();
            }
            span.small.check_bits = bits as *mut u8;
        }
        span.small.in_list = true;
        // SAFETY: `s` is on no list.
        unsafe { self.nonempty.push_front(s) };
        self.spans += 1;
        self.free_in_spans += k.objects as usize;
        s
    }

    /// Takes back a chain of `n` objects of `class`.
    ///
    /// # Safety
    /// `head` starts a chain of exactly `n` objects of `class`, none in use.
    pub unsafe fn insert_range(&mut self, head: *mut FreeObject, n: usize) {
        let class = self.class as usize;
        let k = &CLASSES[class];
        if n == k.batch as usize && SHARING.load(Ordering::Relaxed) && self.transfer_room(k) {
            // SAFETY: `head` heads a free batch, now ours (caller).
            unsafe { set_batch_link(head, self.transfer, link_key()) };
            self.transfer = head;
            self.ntransfer += 1;
            return;
        }
        // SAFETY: as the caller promises.
        unsafe { self.release_chain(head, n) };
    }

    /// Returns each object of a chain to its span. Each object is checked
    /// (the start of an object of `class` in a live span) before its link
    /// is read, so a corrupt link aborts before it is followed.
    ///
    /// The chain is taken in runs: a member and those after it that lie in
    /// the same span go back with one splice (the run is already linked;
    /// only its tail's link changes), and a member is checked against the
    /// run's span with a range test instead of a page-map lookup. Objects
    /// freed in the order they were allocated (xmalloc-test's consumers,
    /// a thread-cache flush of a burst) come back in runs as long as a
    /// batch: xmalloc-test spent 42 of its 334 instructions per object in
    /// release_to_span, one object at a time.
    ///
    /// # Safety
    /// As `insert_range`.
    unsafe fn release_chain(&mut self, head: *mut FreeObject, n: usize) {
        let class = self.class as usize;
        let k = &CLASSES[class];
        let objects_end = k.objects as usize * k.size as usize;
        let key = link_key();
        let mut obj = head;
        let mut from = 0;
        let mut left = n;
        while left > 0 {
            let Some(s) = span_of_object(class, obj) else {
                if from == 0 {
                    // Cheap misuse check, paid when objects leave a thread
                    // cache: a pointer the program freed must be the start
                    // of an object of this class.
                    diag::invalid_pointer("free", obj as usize, "not the start of an object");
                }
                diag::corrupt_free_list(
                    class,
                    BadLink {
                        at: from,
                        value: obj as usize,
                    },
                );
            };
            // SAFETY: a live span of our class (just checked), under our lock.
            let base = unsafe { (*s).addr() };
            let run_head = obj;
            let mut run_tail = obj;
            let mut run = 1;
            left -= 1;
            // SAFETY: `obj` was checked to be an object of `class`.
            let mut next = unsafe { crate::free_object::link(obj, key) };
            while left > 0 {
                let offset = (next as usize).wrapping_sub(base);
                if offset >= objects_end || !k.is_object_offset(offset) {
                    break;
                }
                run_tail = next;
                run += 1;
                left -= 1;
                // SAFETY: `next` is an object of this span (checked above).
                next = unsafe { crate::free_object::link(next, key) };
            }
            // SAFETY: `run_head`..`run_tail` are `run` linked free objects of
            // span `s`, under our lock.
            unsafe { self.release_run(s, run_head, run_tail, run, key) };
            from = run_tail as usize;
            obj = next;
        }
    }

    /// Returns one object to its span `s`; frees the span if it became empty.
    ///
    /// # Safety
    /// `obj` is a free object of `class` in the live Small span `s` (see
    /// `span_of_object`), guarded by our lock.
    unsafe fn release_to_span(&mut self, s: *mut Span, obj: *mut FreeObject, key: usize) {
        // SAFETY: a run of one (caller).
        unsafe { self.release_run(s, obj, obj, 1, key) }
    }

    /// Returns a run of `count` free objects of span `s`, linked from `head`
    /// to `tail`, to the span; frees the span if it became empty.
    ///
    /// # Safety
    /// The run's objects are free objects of `class` in the live Small span
    /// `s`, linked head to tail, guarded by our lock.
    unsafe fn release_run(
        &mut self,
        s: *mut Span,
        head: *mut FreeObject,
        tail: *mut FreeObject,
        count: usize,
        key: usize,
    ) {
        let class = self.class as usize;
        let k = &CLASSES[class];
        // SAFETY: a live Small span of our class, guarded by our lock (caller).
        let span = unsafe { &mut *s };
        // SAFETY: `tail` is a free object of this span.
        unsafe { set_link(tail, span.small.freelist, key) };
        span.small.freelist = head;
        span.small.allocated -= count as u32;
        self.free_in_spans += count;
        if span.small.allocated == 0 {
            if span.small.in_list {
                // SAFETY: `s` is on our list.
                unsafe { self.nonempty.remove(s) };
            }
            span.small.in_list = false;
            self.spans -= 1;
            self.free_in_spans -= k.objects as usize;
            self.give_bits(span);
            // SAFETY: every object of the span is back: nothing uses it.
            unsafe { HEAP.lock().free(s) };
        } else if !span.small.in_list {
            // SAFETY: `s` is on no list.
            unsafe { self.nonempty.push_front(s) };
            span.small.in_list = true;
        }
    }

    /// Whether the transfer cache can take one more batch, growing its
    /// capacity if it is full but another thread ran it dry since it last
    /// grew (see TRANSFER_BYTES_MAX).
    fn transfer_room(&mut self, k: &ClassInfo) -> bool {
        if self.capacity == 0 {
            self.capacity = transfer_capacity(k);
        }
        if self.ntransfer < self.capacity {
            return true;
        }
        let dry_by = self.dry_by;
        if dry_by == 0 || dry_by == this_thread() {
            return false;
        }
        self.dry_by = 0;
        self.capacity = (self.capacity * 2).min(max_transfer_capacity(k));
        self.ntransfer < self.capacity
    }

    /// Takes the top batch off the transfer cache (not empty).
    fn pop_batch(&mut self) -> *mut FreeObject {
        let class = self.class as usize;
        let head = self.transfer;
        // SAFETY: `head` tops the transfer cache, so it holds a batch link.
        let next = diag::link_or_abort(class, unsafe { batch_link_checked(head, link_key()) });
        self.transfer = next;
        self.ntransfer -= 1;
        head
    }

    /// Empties the transfer cache into the spans (malloc_trim), so wholly
    /// free spans go back to the page heap.
    /// Its capacity starts over.
    pub fn drain_transfer(&mut self) {
        let class = self.class as usize;
        let batch = CLASSES[class].batch;
        while self.ntransfer > 0 {
            let obj = self.pop_batch();
            // SAFETY: a stored batch is a chain of `batch` free objects.
            unsafe { self.release_chain(obj, batch as usize) };
        }
        self.capacity = 0;
        self.dry_by = 0;
    }
}

/// Which thread is calling: its thread-local slot's value (its cache, or
/// a static cache shared by the threads that have none; never 0).
fn this_thread() -> usize {
    crate::sys::tls::get() as usize
}

/// The live Small span of `class` whose object starts at `obj`, or `None`
/// if `obj` is not the start of such an object (any address may be asked).
pub fn span_of_object(class: usize, obj: *mut FreeObject) -> Option<*mut Span> {
    let e = PAGEMAP.lookup_addr(obj as usize);
    let s = e.span();
    if s.is_null() || e.class() != class {
        return None;
    }
    // SAFETY: a non-null entry points at a span struct (possibly Dead,
    // whose fields are still readable metadata).
    let (state, base) = unsafe { ((*s).state, (*s).addr()) };
    let ok = state == SpanState::Small
        && CLASSES[class].is_object_offset((obj as usize).wrapping_sub(base));
    ok.then_some(s)
}

/// Whether `span` (of `class`) has no object left to give: exactly when
/// `take_from_span` returns `None`. The central lists take a span off their
/// nonempty list by this test, so a span stays listed only while it can
/// give: otherwise `remove_range` would spin on it for ever (as it did in
/// a fork child that saw a span half-updated by the interrupted parent).
pub fn is_dry(span: &Span, class: usize) -> bool {
    span.small.freelist == END && span.small.bump + CLASSES[class].size as usize > span.small.limit
}

/// Takes one object out of `span` (of `class`): from its free list, else
/// from its never-used tail; `None` if it has neither. A free-list link
/// must lead into the span's objects, or the list was corrupted.
///
/// # Safety
/// `span` is a live Small span of `class`, guarded by the caller's lock.
unsafe fn take_from_span(span: &mut Span, class: usize, key: usize) -> Option<*mut FreeObject> {
    if is_dry(span, class) {
        return None;
    }
    let obj = if span.small.freelist != END {
        let o = span.small.freelist;
        // SAFETY: objects on a span's free list hold a link.
        let next = unsafe { next_or_abort(class, o, key) };
        let base = span.addr();
        if next != END && (next as usize).wrapping_sub(base) >= span.small.limit - base {
            diag::corrupt_free_list(
                class,
                BadLink {
                    at: o as usize,
                    value: next as usize,
                },
            );
        }
        span.small.freelist = next;
        o
    } else {
        let o = span.small.bump as *mut FreeObject;
        span.small.bump += CLASSES[class].size as usize;
        o
    };
    span.small.allocated += 1;
    Some(obj)
}

#[cfg(test)]
mod tests;
