//! Large objects: requests above the largest size class (and aligned
//! requests no class can serve) get a span of their own from the page heap.
//!
//! Owns: nothing; policy over `PageHeap`. Must never: be called with a
//! central lock held (it takes the page heap lock).

use crate::central::check;
use crate::diag;
use crate::page_heap::HEAP;
use crate::pagemap::PAGEMAP;
use crate::profile;
use crate::size_class::{PAGE_SHIFT, PAGE_SIZE};
use crate::span::SpanState;
use crate::sys;
use crate::util::div_ceil;

/// The largest request glibc accepts: PTRDIFF_MAX.
pub const MAX_REQUEST: usize = isize::MAX as usize;

/// A span of at least `size` bytes whose start is aligned to `align_pages`
/// pages. Null with errno ENOMEM on overflow or exhaustion.
#[cold]
#[inline(never)]
pub fn alloc(size: usize, align_pages: usize) -> *mut u8 {
    if size > MAX_REQUEST - PAGE_SIZE {
        sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    crate::init::ensure();
    let npages = div_ceil(size.max(1), PAGE_SIZE);
    let s = HEAP.lock().alloc_aligned(npages, align_pages, 0);
    if s.is_null() {
        sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    // SAFETY: a fresh Large span, ours until its address is returned.
    let p = unsafe {
        (*s).requested = size;
        ((*s).start << PAGE_SHIFT) as *mut u8
    };
    if check::enabled() {
        check::arm_large(p, size);
    }
    p
}

/// A sampled allocation: a span of its own (whatever the size), recorded
/// by the profiler with the current stack, and marked so that its free
/// tells the profiler.
#[cold]
#[inline(never)]
pub fn alloc_sampled(size: usize, align_pages: usize) -> *mut u8 {
    let p = alloc(size, align_pages);
    if p.is_null() {
        return p;
    }
    // No allocator lock is held here: the profiler may take its own.
    let record = profile::record_alloc(p as usize, size);
    if !record.is_null() {
        let _heap = HEAP.lock();
        let s = PAGEMAP.lookup_addr(p as usize).span();
        // SAFETY: `p` was just allocated, so `s` is its live Large span; the
        // heap lock guards Large spans' fields.
        unsafe {
            (*s).sampled = true;
            (*s).sample = record;
        }
    }
    p
}

/// Frees a large object, aborting on a pointer that is not the start of a
/// live large object (including a second free of the same one).
pub fn free(p: *mut u8, call: &str) {
    let mut heap = HEAP.lock();
    let s = PAGEMAP.lookup_addr(p as usize).span();
    // SAFETY: a non-null entry points at a span struct (perhaps Dead); the
    // heap lock keeps it from changing while we look.
    let ok = !s.is_null() && unsafe { (*s).state == SpanState::Large && (*s).addr() == p as usize };
    if !ok {
        drop(heap);
        diag::invalid_pointer(
            call,
            p as usize,
            "double free, or not the start of an allocation",
        );
    }
    // SAFETY: validated above as the live large object the caller frees.
    let record = unsafe {
        let r = if (*s).sampled {
            (*s).sample
        } else {
            core::ptr::null_mut()
        };
        heap.free(s);
        r
    };
    drop(heap);
    if !record.is_null() {
        profile::record_free(record);
    }
}

/// Usable bytes of the large object at `p` (aborts if it is not one).
pub fn usable_size(p: *mut u8, call: &str) -> usize {
    let _heap = HEAP.lock();
    let s = PAGEMAP.lookup_addr(p as usize).span();
    // SAFETY: as in `free`.
    if !s.is_null() && unsafe { (*s).state == SpanState::Large && (*s).addr() == p as usize } {
        // SAFETY: checked live above, under the lock.
        return unsafe { (*s).bytes() };
    }
    drop(_heap);
    diag::invalid_pointer(call, p as usize, "not the start of an allocation")
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
        if (*s).sampled {
            return false;
        }
        let ok = heap.resize_large(s, npages);
        if ok {
            (*s).requested = size;
        }
        ok
    }
}

/// Whether the large object at `p` is known to be all zero (fresh pages).
pub fn is_zeroed(p: *mut u8) -> bool {
    let s = PAGEMAP.lookup_addr(p as usize).span();
    // SAFETY: the caller has just allocated `p`, so its span is live.
    !s.is_null() && unsafe { (*s).zeroed }
}
