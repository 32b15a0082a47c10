//! `CentralFreeList`: one per size class, each behind its own lock. Moves
//! objects in batches to and from thread caches, carves new spans from the
//! page heap, and gives wholly free spans back to it.
//!
//! A transfer cache of whole batches (a batch is a linked chain of exactly
//! `batch` objects, stored by its head) sits in front of the spans, so a
//! batch freed by one thread reaches another thread in O(1), the pattern of
//! producer/consumer programs.
//!
//! Owns: the per-class lists and transfer caches. Lock order: a central lock
//! may be held while taking the page heap lock, never the reverse.
//! Must never: be reached from the fast path; hold two central locks at once.

use crate::diag;
use crate::page_heap::HEAP;
use crate::pagemap::PAGEMAP;
use crate::size_class::{ClassInfo, CLASSES, NUM_CLASSES};
use crate::span::{Span, SpanList, SpanState};
use crate::sys::lock::Locked;
use crate::util::FreeObject;
use core::sync::atomic::{AtomicBool, Ordering};

const TRANSFER_SLOTS: usize = 64;
/// Bytes of whole batches one class may park in its transfer cache: enough
/// for a producer/consumer pair to trade batches without touching spans,
/// small enough that 96 classes hold little memory.
const TRANSFER_BYTES: usize = 32 << 10;

pub struct CentralFreeList {
    /// Spans of this class with at least one free or never-used object.
    nonempty: SpanList,
    transfer: [*mut FreeObject; TRANSFER_SLOTS],
    ntransfer: usize,
    /// Spans of this class, and their objects not out (free or never used).
    pub spans: usize,
    pub free_in_spans: usize,
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

pub static CENTRAL: [Locked<CentralFreeList>; NUM_CLASSES] =
    [const { Locked::new(CentralFreeList::new()) }; NUM_CLASSES];

/// How many whole batches class `c` may keep in its transfer cache.
fn transfer_capacity(k: &ClassInfo) -> usize {
    (TRANSFER_BYTES / (k.batch as usize * k.size as usize)).clamp(1, TRANSFER_SLOTS)
}

impl Default for CentralFreeList {
    fn default() -> Self {
        Self::new()
    }
}

impl CentralFreeList {
    pub const fn new() -> Self {
        CentralFreeList {
            nonempty: SpanList::new(),
            transfer: [core::ptr::null_mut(); TRANSFER_SLOTS],
            ntransfer: 0,
            spans: 0,
            free_in_spans: 0,
        }
    }

    /// Objects held in the transfer cache.
    pub fn transfer_objects(&self, class: usize) -> usize {
        self.ntransfer * CLASSES[class].batch as usize
    }

    /// Takes up to `max` objects of `class` as a chain; returns its head and
    /// length (0 only if the OS refuses memory).
    pub fn remove_range(&mut self, class: usize, max: usize) -> (*mut FreeObject, usize) {
        let k = &CLASSES[class];
        if max == k.batch as usize && self.ntransfer > 0 {
            self.ntransfer -= 1;
            return (self.transfer[self.ntransfer], max);
        }
        let mut head: *mut FreeObject = core::ptr::null_mut();
        let mut n = 0;
        while n < max {
            let mut s = self.nonempty.first();
            if s.is_null() {
                s = self.populate(class);
                if s.is_null() {
                    break;
                }
            }
            // SAFETY: `s` is a live Small span of this class on our list.
            let span = unsafe { &mut *s };
            while n < max {
                let obj = if !span.freelist.is_null() {
                    let o = span.freelist;
                    // SAFETY: objects on a span's freelist hold a link.
                    span.freelist = unsafe { (*o).next };
                    o
                } else if span.bump < span.limit {
                    let o = span.bump as *mut FreeObject;
                    span.bump += k.size as usize;
                    o
                } else {
                    break;
                };
                // SAFETY: `obj` is a free object of this span, ours to link.
                unsafe { (*obj).next = head };
                head = obj;
                n += 1;
                span.allocated += 1;
                self.free_in_spans -= 1;
            }
            if span.freelist.is_null() && span.bump >= span.limit {
                // SAFETY: `s` is on our list.
                unsafe { self.nonempty.remove(s) };
                span.in_list = false;
            }
        }
        (head, n)
    }

    /// A new span for `class` from the page heap, on the nonempty list.
    fn populate(&mut self, class: usize) -> *mut Span {
        let k = &CLASSES[class];
        let s = HEAP.lock().alloc(k.pages as usize, class);
        if s.is_null() {
            return s;
        }
        // SAFETY: a fresh Small span, exclusively ours until listed.
        let span = unsafe { &mut *s };
        span.freelist = core::ptr::null_mut();
        span.allocated = 0;
        span.bump = span.addr();
        span.limit = span.addr() + k.objects as usize * k.size as usize;
        span.in_list = true;
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
    pub unsafe fn insert_range(&mut self, class: usize, head: *mut FreeObject, n: usize) {
        let k = &CLASSES[class];
        if n == k.batch as usize
            && self.ntransfer < transfer_capacity(k)
            && SHARING.load(Ordering::Relaxed)
        {
            self.transfer[self.ntransfer] = head;
            self.ntransfer += 1;
            return;
        }
        let mut obj = head;
        for _ in 0..n {
            // SAFETY: the chain has `n` objects (caller).
            let next = unsafe { (*obj).next };
            // SAFETY: `obj` is a free object of `class` (caller).
            unsafe { self.release_to_span(class, obj) };
            obj = next;
        }
    }

    /// Returns one object to its span; frees the span if it became empty.
    unsafe fn release_to_span(&mut self, class: usize, obj: *mut FreeObject) {
        let k = &CLASSES[class];
        let e = PAGEMAP.lookup_addr(obj as usize);
        let s = e.span();
        // Cheap misuse check, paid when objects leave a thread cache: the
        // pointer must be the start of an object of this class.
        let (state, base) = if s.is_null() {
            (SpanState::Dead, 0)
        } else {
            // SAFETY: a non-null entry points at a span struct (possibly
            // Dead, whose fields are still readable metadata).
            unsafe { ((*s).state, (*s).addr()) }
        };
        let valid = !s.is_null()
            && e.class() == class
            && state == SpanState::Small
            && (obj as usize)
                .wrapping_sub(base)
                .is_multiple_of(k.size as usize);
        if !valid {
            diag::invalid_pointer("free", obj as usize, "not the start of an object");
        }
        // SAFETY: validated above: a live Small span of our class, guarded
        // by our lock.
        let span = unsafe { &mut *s };
        // SAFETY: `obj` is a free object of this span.
        unsafe { (*obj).next = span.freelist };
        span.freelist = obj;
        span.allocated -= 1;
        self.free_in_spans += 1;
        if span.allocated == 0 {
            if span.in_list {
                // SAFETY: `s` is on our list.
                unsafe { self.nonempty.remove(s) };
            }
            span.in_list = false;
            self.spans -= 1;
            self.free_in_spans -= k.objects as usize;
            // SAFETY: every object of the span is back: nothing uses it.
            unsafe { HEAP.lock().free(s) };
        } else if !span.in_list {
            // SAFETY: `s` is on no list.
            unsafe { self.nonempty.push_front(s) };
            span.in_list = true;
        }
    }

    /// Empties the transfer cache into the spans (malloc_trim), so wholly
    /// free spans go back to the page heap.
    pub fn drain_transfer(&mut self, class: usize) {
        let batch = CLASSES[class].batch as usize;
        while self.ntransfer > 0 {
            self.ntransfer -= 1;
            let mut obj = self.transfer[self.ntransfer];
            for _ in 0..batch {
                // SAFETY: a stored batch is a chain of `batch` free objects.
                let next = unsafe { (*obj).next };
                // SAFETY: as above.
                unsafe { self.release_to_span(class, obj) };
                obj = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::size_of;

    fn chain_len(mut h: *mut FreeObject) -> usize {
        let mut n = 0;
        while !h.is_null() {
            n += 1;
            // SAFETY: chains from remove_range are null-terminated.
            h = unsafe { (*h).next };
        }
        n
    }

    #[test]
    fn batches_round_trip_and_spans_return() {
        set_sharing(true);
        // A private list for class 40 (the global lists serve other tests).
        let class = 40;
        let k = CLASSES[class];
        let mut c = CentralFreeList::new();
        let mut got = Vec::new();
        for _ in 0..(k.objects as usize * 3 / k.batch as usize + 2) {
            let (h, n) = c.remove_range(class, k.batch as usize);
            assert_eq!(n, k.batch as usize);
            assert_eq!(chain_len(h), n);
            got.push((h, n));
        }
        // Objects are distinct and aligned.
        let mut addrs = Vec::new();
        for &(h, _) in &got {
            let mut p = h;
            while !p.is_null() {
                addrs.push(p as usize);
                // SAFETY: chain from remove_range.
                p = unsafe { (*p).next };
            }
        }
        let total = addrs.len();
        addrs.sort();
        addrs.dedup();
        assert_eq!(addrs.len(), total);
        assert!(addrs.windows(2).all(|w| w[1] - w[0] >= size_of(class)));
        assert!(c.spans >= 3);
        for (h, n) in got {
            // SAFETY: returning exactly what was taken.
            unsafe { c.insert_range(class, h, n) };
        }
        c.drain_transfer(class);
        assert_eq!(c.spans, 0, "all spans went back to the page heap");
        assert_eq!(c.free_in_spans, 0);
    }

    #[test]
    fn partial_ranges() {
        let class = 3;
        let mut c = CentralFreeList::new();
        let (h, n) = c.remove_range(class, 5);
        assert_eq!(n, 5);
        // SAFETY: returning what was taken.
        unsafe { c.insert_range(class, h, n) };
        assert_eq!(c.spans, 0);
    }
}
