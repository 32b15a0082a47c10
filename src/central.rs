//! `CentralFreeList`: one per size class, each behind its own lock. Moves
//! objects in batches to and from thread caches, carves new spans from the
//! page heap, and gives wholly free spans back to it.
//!
//! A lock-free transfer cache of whole batches (`transfer`) sits in front
//! of the spans, so a batch freed by one thread reaches another thread in
//! O(1), the pattern of producer/consumer programs; callers try it before
//! they take the lock.
//!
//! Every link in a free object is stored encoded with the process's random
//! key (`free_object::link_key`), and every link read here is
//! checked: a corrupt one aborts with `diag::corrupt_free_list`.
//!
//! Owns: the per-class lists. Lock
//! order: a central lock may be held while taking the page heap lock, never
//! the reverse.
//! Must never: be reached from the fast path; hold two central locks at once;
//! read or write a free object's link except through the `free_object` link helpers.

pub mod check;
pub mod transfer;

pub use transfer::{give_batch, set_sharing, sharing, take_batch, TRANSFER};

use crate::diag;
use crate::free_object::{link_checked, link_key, set_link, BadLink, FreeObject, END};
use crate::meta::Pool;
use crate::page_heap::HEAP;
use crate::pagemap::PAGEMAP;
use crate::size_class::{CLASSES, NUM_CLASSES};
use crate::span::{Span, SpanList, SpanState};
use crate::sys::lock::Locked;

pub struct CentralFreeList {
    /// The size class this list serves (0 only for the unused list 0).
    class: u8,
    /// Spans of this class with at least one free or never-used object.
    nonempty: SpanList,
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

impl CentralFreeList {
    /// An empty list for `class` (< NUM_CLASSES).
    pub const fn new(class: usize) -> Self {
        CentralFreeList {
            class: class as u8,
            nonempty: SpanList::new(),
            spans: 0,
            free_in_spans: 0,
            bits: Pool::new(),
            quarantine: check::Quarantine::new(),
        }
    }

    /// Takes up to `max` objects of `class` as a chain; returns its head and
    /// length (0 only if the OS refuses memory).
    pub fn remove_range(&mut self, max: usize) -> (*mut FreeObject, usize) {
        self.remove(max, false)
    }

    /// `remove_range` for a thread cache's refill: never-used objects
    /// (from a span's bump region) come in whole cache lines, so the chain
    /// may hold up to `LINE_EXTRA` objects more than `max`. Two threads
    /// refilling a class of 80 B one object at a time in step (glibc's
    /// bench-malloc-thread runs the same random sequence in each thread)
    /// were otherwise handed neighbours that share a line, and every write
    /// to them bounced the line between the cores: half the iterations in
    /// about half the runs, for as long as the objects lived.
    pub fn remove_lines(&mut self, max: usize) -> (*mut FreeObject, usize) {
        self.remove(max, true)
    }

    fn remove(&mut self, max: usize, whole_lines: bool) -> (*mut FreeObject, usize) {
        let class = self.class as usize;
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
            loop {
                let obj = if n < max {
                    // SAFETY: our span, under our lock.
                    unsafe { take_from_span(span, class, key) }
                } else if whole_lines && span.small.bump % LINE_BYTES != 0 {
                    // The bump region's next object shares a line with the
                    // last one taken: it goes too (a line is 64 B; classes
                    // are multiples of 16).
                    // SAFETY: as above.
                    unsafe { take_from_bump(span, class) }
                } else {
                    None
                };
                let Some(obj) = obj else {
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

    /// Takes back a chain of `n` objects of `class`, each to its span.
    ///
    /// # Safety
    /// `head` starts a chain of exactly `n` objects of `class`, none in use.
    pub unsafe fn insert_range(&mut self, head: *mut FreeObject, n: usize) {
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

    /// Empties the transfer cache into the spans (malloc_trim), so wholly
    /// free spans go back to the page heap.
    /// Its capacity starts over.
    pub fn drain_transfer(&mut self, ring: &transfer::TransferCache) {
        let class = self.class as usize;
        let batch = CLASSES[class].batch;
        while let Some(obj) = ring.pop() {
            // SAFETY: a stored batch is a chain of `batch` free objects.
            unsafe { self.release_chain(obj, batch as usize) };
        }
        ring.reset_capacity();
    }
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
    let o = span.small.freelist;
    if o == END {
        // SAFETY: as the caller promises.
        return unsafe { take_from_bump(span, class) };
    }
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
    span.small.allocated += 1;
    Some(o)
}

/// Cache-line size, for `remove_lines` and the thread caches' scavenge.
pub const LINE_BYTES: usize = 64;
/// Most objects `remove_lines` adds to a chain: a run of objects of a
/// class (a multiple of 16 B) ends on a line boundary within 4 objects.
pub const LINE_EXTRA: usize = LINE_BYTES / 16 - 1;

/// Takes the next never-used object of `span` (of `class`), if any.
///
/// # Safety
/// As `take_from_span`.
unsafe fn take_from_bump(span: &mut Span, class: usize) -> Option<*mut FreeObject> {
    let size = CLASSES[class].size as usize;
    if span.small.bump + size > span.small.limit {
        return None;
    }
    let o = span.small.bump as *mut FreeObject;
    span.small.bump += size;
    span.small.allocated += 1;
    Some(o)
}

#[cfg(test)]
mod tests;
