//! Large objects: requests above the largest size class (and aligned
//! requests no class can serve), and sampled objects, get a span of their
//! own from the page heap. Every operation on such an object is here:
//! allocation, free, usable size, resize in place; checked mode's guard
//! pages, canaries and quarantine (`MEMX_CHECK=1`) are in `checked` (the
//! small-object checks are in `central::check`).
//!
//! A pointer is a live large object iff `live_large` finds its span: in
//! state `Large`, not quarantined, and its object (at `large.offset`, 0
//! outside checked mode) starting at the pointer, read under the heap lock.
//! The profiler's record of a sampled object sits on its span
//! (`span.large.sample`); this module only keeps it and hands it back on
//! free, it never calls the profiler.
//!
//! Owns: nothing; policy over `PageHeap`. Must never: be called with a
//! central lock held (it takes the page heap lock), or call the profiler.

pub mod checked;

use crate::central::check;
use crate::diag;
use crate::page_heap::{PageHeap, HEAP};
use crate::pagemap::PAGEMAP;
use crate::profile::Sample;
use crate::size_class::{PAGE_SHIFT, PAGE_SIZE};
use crate::span::{Span, SpanState};
use crate::sys;
use crate::util::div_ceil;

/// The largest request glibc accepts: PTRDIFF_MAX.
pub const MAX_REQUEST: usize = isize::MAX as usize;

/// The span of the live large object starting at `p`, or None (not ours,
/// not a large object, not its start, or freed already). The heap lock
/// (`_heap`) keeps the answer true while it is held.
fn live_large(_heap: &PageHeap, p: *mut u8) -> Option<*mut Span> {
    let s = PAGEMAP.lookup_addr(p as usize).span();
    let live = !s.is_null()
        // A non-null entry points at a span struct (perhaps Dead), which the
        // heap lock keeps from changing while we look.
        // SAFETY: reads of that live span struct's plain fields.
        && unsafe {
            (*s).state == SpanState::Large
                && !(*s).large.quarantined
                && (*s).addr() + (*s).large.offset == p as usize
        };
    live.then_some(s)
}

/// A span of at least `size` bytes whose start is aligned to `align` bytes
/// (a power of two; at least a page), or in checked mode an object between
/// guard pages (`checked`). Null with errno ENOMEM on overflow or
/// exhaustion. The caller has initialised the allocator (`init::ensure`).
#[cold]
#[inline(never)]
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    if check::enabled() {
        return checked::alloc(size, align);
    }
    let align_pages = (align / PAGE_SIZE).max(1);
    if size > MAX_REQUEST - PAGE_SIZE {
        sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    let npages = div_ceil(size.max(1), PAGE_SIZE);
    let s = HEAP.lock().alloc_aligned(npages, align_pages, 0);
    if s.is_null() {
        sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    // SAFETY: a fresh Large span, ours until its address is returned.
    unsafe {
        (*s).large.requested = size;
        ((*s).start << PAGE_SHIFT) as *mut u8
    }
}

/// Marks the object at `p` (just allocated by `alloc`, not yet handed out)
/// as sampled: its free hands `sample` back.
pub fn set_sample(p: *mut u8, sample: Sample) {
    let _heap = HEAP.lock();
    let s = PAGEMAP.lookup_addr(p as usize).span();
    // SAFETY: `p` was just allocated, so `s` is its live Large span; the
    // heap lock guards Large spans' fields.
    unsafe { (*s).large.sample = Some(sample) };
}

/// Frees a large object, aborting on a pointer that is not the start of a
/// live large object (including a second free of the same one), or, in
/// checked mode, on an overwritten canary; a checked object goes to the
/// quarantine. Returns the object's sample, if it was sampled, for the
/// caller to give back to the profiler.
pub fn free(p: *mut u8, call: &str) -> Option<Sample> {
    let mut heap = HEAP.lock();
    let Some(s) = live_large(&heap, p) else {
        drop(heap);
        freed_already(p, call);
        diag::invalid_pointer(
            call,
            p as usize,
            "double free, or not the start of an allocation",
        );
    };
    if check::enabled() {
        heap = checked::check(heap, s, p, call);
        // SAFETY: validated above as the live large object the caller frees.
        return unsafe {
            let sample = (*s).large.sample.take();
            checked::quarantine_span(&mut heap, s);
            sample
        };
    }
    // SAFETY: validated above as the live large object the caller frees
    // (the program frees it once; it cannot change while it is live).
    unsafe {
        let sample = (*s).large.sample.take();
        heap.free(s);
        sample
    }
}

/// Checked mode: aborts naming a double free (`free`) or a use after free
/// (any other `call`) if `p` is a freed object still in the quarantine.
/// Called without the heap lock; takes it.
fn freed_already(p: *mut u8, call: &str) {
    if !check::enabled() {
        return;
    }
    let found = checked::quarantined(&HEAP.lock(), p);
    let Some((bytes, n)) = found else { return };
    diag::check_failed(&diag::CheckFailure {
        what: if call == "free" {
            "double free"
        } else {
            "use after free"
        },
        call,
        ptr: p as usize,
        class: 0,
        slot: bytes,
        requested: Some(n),
        detail: "the object was freed already (it is in the quarantine)",
        offset: None,
        stack: &[],
    })
}

/// Usable bytes of the large object at `p` (aborts if it is not one): its
/// span, or in checked mode the request (the canary follows it).
pub fn usable_size(p: *mut u8, call: &str) -> usize {
    let heap = HEAP.lock();
    let Some(s) = live_large(&heap, p) else {
        drop(heap);
        freed_already(p, call);
        diag::invalid_pointer(call, p as usize, "not the start of an allocation")
    };
    // SAFETY: checked live above, under the lock.
    unsafe {
        if check::enabled() {
            (*s).large.requested
        } else {
            (*s).bytes()
        }
    }
}

/// Resizes the large object at `p` in place to hold `size` bytes, if the
/// pages after it are free (growth) or always (shrinking). The caller has
/// validated `p` as a live large object.
pub fn resize_in_place(p: *mut u8, size: usize) -> bool {
    let npages = div_ceil(size, PAGE_SIZE);
    let mut heap = HEAP.lock();
    let s = PAGEMAP.lookup_addr(p as usize).span();
    // SAFETY: the caller owns the live large object at `p`, whose span `s`
    // is; the heap lock is held.
    unsafe {
        // A sampled object keeps its recorded size: it moves instead, so the
        // profiler sees the old one freed and the new one allocated.
        if (*s).large.sample.is_some() {
            return false;
        }
        let ok = heap.resize_large(s, npages);
        if ok {
            (*s).large.requested = size;
        }
        ok
    }
}

/// Whether the large object at `p` is known to be all zero (fresh pages).
pub fn is_zeroed(p: *mut u8) -> bool {
    let s = PAGEMAP.lookup_addr(p as usize).span();
    // SAFETY: the caller has just allocated `p`, so its span is live.
    !s.is_null() && unsafe { (*s).large.zeroed }
}
