//! Growing: the heap from the OS, and a large span in place.
//!
//! Growth is carved from large address-space reservations so successive
//! growths are contiguous and coalesce. A large span grows into the free
//! span right after it, if there is one (realloc without a copy).
//!
//! Owns: the current reservation (`region_next..region_end`). Must never:
//! map memory except through `sys`.

use super::PageHeap;
use crate::pagemap::{Entry, PAGEMAP};
use crate::size_class::PAGE_SHIFT;
use crate::span::{Span, SpanState};
use crate::sys;

/// Address space is reserved in regions this large (untouched pages cost no
/// memory) so that successive growths are contiguous and coalesce; smaller
/// reservations are tried if the OS refuses.
const REGION_BYTES: usize = 1 << 30;
/// The heap grows by at least this much at a time (address space only:
/// pages cost memory when first touched).
const MIN_GROW_PAGES: usize = (2 << 20) >> PAGE_SHIFT;

impl PageHeap {
    /// Resizes a Large span in place to `npages`: grows into the free span
    /// right after it, or gives back its tail. False if it cannot grow.
    ///
    /// # Safety
    /// `s` is a live Large span owned by the caller.
    pub unsafe fn resize_large(&mut self, s: *mut Span, npages: usize) -> bool {
        // SAFETY: caller's promise.
        let (start, old) = unsafe { ((*s).start, (*s).npages) };
        if npages == old {
            return true;
        }
        if npages < old {
            let tail = self.split(s, npages);
            self.stats.large_bytes -= (old - npages) << PAGE_SHIFT;
            let now = self.release_clock();
            // SAFETY: `tail` was split off `s`; its pages are ours.
            unsafe {
                (*tail).free.released = false;
                (*tail).free.freed_at = now;
            }
            PAGEMAP.set_range(start + npages, old - npages, Entry::new(tail, 0));
            self.free_span_inner(tail, Some(now));
            return true;
        }
        let want = npages - old;
        let mut next = self.free_after(start + old, want);
        if next.is_null() {
            return false;
        }
        // SAFETY: `next` is a live Free span.
        if unsafe { (*next).free.released } {
            let charge = want << PAGE_SHIFT;
            if self.over_limit(charge) {
                // Releasing may merge `next` with released spans after it;
                // it still starts at `start + old`.
                if !self.make_room(charge) {
                    self.refuse(want);
                    return false;
                }
                next = self.free_after(start + old, want);
                if next.is_null() {
                    return false;
                }
            }
        }
        self.take_and_trim(next, want);
        // SAFETY: `s` is the caller's; `next` is ours and absorbed into it.
        unsafe {
            (*s).npages = npages;
            (*s).large.zeroed = false;
        }
        self.delete_span(next);
        self.stats.large_bytes += want << PAGE_SHIFT;
        PAGEMAP.set_range(start + old, want, Entry::new(s, 0));
        true
    }

    /// The Free span starting at page `at` if it has at least `npages`
    /// pages, else null.
    pub(super) fn free_after(&self, at: usize, npages: usize) -> *mut Span {
        let next = PAGEMAP.get(at).span();
        if next.is_null() {
            return next;
        }
        let (state, next_start, next_pages) =
            // SAFETY: a non-null entry points at a span struct; it is used
            // only if it is a Free span that starts at `at`.
            unsafe { ((*next).state, (*next).start, (*next).npages) };
        if state == SpanState::Free && next_start == at && next_pages >= npages {
            next
        } else {
            core::ptr::null_mut()
        }
    }

    /// Adds at least `npages` pages to the free lists, carved from the
    /// current address-space region (reserving a new one when it runs out).
    pub(super) fn grow(&mut self, npages: usize) -> bool {
        let pages = npages.max(MIN_GROW_PAGES);
        if self.region_end - self.region_next < pages && !self.reserve_region(pages) {
            return false;
        }
        let start = self.region_next;
        self.region_next += pages;
        self.add_fresh(start, pages);
        true
    }

    /// Reserves a new region of at least `pages` pages; what is left of the
    /// old one joins the free lists.
    pub(super) fn reserve_region(&mut self, pages: usize) -> bool {
        let want = (pages << PAGE_SHIFT).max(REGION_BYTES);
        let mut bytes = want;
        let p = loop {
            let p = sys::map_aligned(bytes, 2 << 20);
            if !p.is_null() {
                break p;
            }
            if bytes <= pages << PAGE_SHIFT {
                return false;
            }
            bytes = (bytes / 4).max(pages << PAGE_SHIFT);
        };
        let start = p as usize >> PAGE_SHIFT;
        let npages = bytes >> PAGE_SHIFT;
        if !PAGEMAP.ensure(start, npages) {
            sys::unmap(p, bytes);
            return false;
        }
        if self.region_end > self.region_next {
            let (s, n) = (self.region_next, self.region_end - self.region_next);
            self.add_fresh(s, n);
        }
        self.region_next = start;
        self.region_end = start + npages;
        true
    }

    /// Files never-touched pages as a released free span.
    pub(super) fn add_fresh(&mut self, start: usize, pages: usize) {
        self.stats.mapped += pages << PAGE_SHIFT;
        super::MAPPED_EVER.fetch_add(pages << PAGE_SHIFT, core::sync::atomic::Ordering::Relaxed);
        let s = self.new_span(start, pages);
        // SAFETY: `s` is fresh; untouched anonymous memory reads as zero and
        // is not resident, exactly what "released" means.
        unsafe { (*s).free.released = true };
        let s = self.coalesce(s);
        self.insert_free(s);
    }
}
