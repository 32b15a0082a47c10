//! `PageHeap`: runs of 8 KiB pages. Hands out spans, takes them back,
//! coalesces free neighbours, and gives free pages back to the OS.
//!
//! Free spans sit in per-length lists (1..=128 pages) or, longer, in one
//! list searched best-fit; resident ("normal") and released spans are kept
//! apart so the heap prefers memory that is already resident, and only spans
//! of the same kind are merged (merging would otherwise cost a madvise or
//! lose track of which pages read as zero).
//!
//! Growth (`grow`) and giving pages back (`release`: by age and rate, and
//! under `MEMX_HEAP_LIMIT`) are in the files below this one.
//!
//! Owns: free lists, the span pool, heap statistics, the limit's state.
//! Must never: be used without its lock (the global `HEAP`), call into
//! central lists, or allocate (the limit's report is a fixed buffer).

use crate::meta::Pool;
use crate::pagemap::{Entry, PAGEMAP};
use crate::size_class::PAGE_SHIFT;
use crate::span::{LargeFields, Span, SpanList, SpanState};
use crate::sys::lock::Locked;
use crate::util::bitset::BitSet;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Free spans up to this many pages have a list per length.
const MAX_LIST: usize = 128;
/// Words of a `Lengths` bitmap: one bit per list length 0..=MAX_LIST.
const LENGTH_WORDS: usize = (MAX_LIST + 1).div_ceil(64);

/// Which per-length lists are non-empty, one bit per length, so `find`
/// reaches the shortest fitting list in a few word tests instead of
/// testing up to 128 lists (xmalloc-test, whose spans free and coalesce
/// all the time, spent 13 instructions per object there).
type Lengths = BitSet<LENGTH_WORDS>;

#[derive(Clone, Copy, Default, Debug)]
pub struct HeapStats {
    /// Bytes mapped from the OS for the heap.
    pub mapped: usize,
    /// Free bytes still resident.
    pub free_normal: usize,
    /// Free bytes given back to the OS.
    pub free_released: usize,
    /// Bytes in small-object spans.
    pub small_span_bytes: usize,
    /// Bytes in large spans, and their count.
    pub large_bytes: usize,
    pub large_count: usize,
    /// Number of free spans.
    pub free_spans: usize,
    /// Total bytes ever released to the OS, and madvise calls.
    pub released_total: u64,
    pub release_calls: u64,
    /// Requests refused because of `MEMX_HEAP_LIMIT`.
    pub limit_hits: u64,
}

impl HeapStats {
    /// Bytes held from the OS: mapped minus free released, that is in-use
    /// spans plus resident free spans. What `MEMX_HEAP_LIMIT` bounds.
    pub fn held(&self) -> usize {
        self.mapped - self.free_released
    }
}

pub struct PageHeap {
    normal: [SpanList; MAX_LIST + 1],
    released: [SpanList; MAX_LIST + 1],
    /// bit n of normal_lengths ⇔ normal[n] is non-empty; the same for
    /// released_lengths and released[n] (kept by insert_free/unlink_free,
    /// the only places that change those lists).
    normal_lengths: Lengths,
    released_lengths: Lengths,
    large_normal: SpanList,
    large_released: SpanList,
    spans: Pool<Span>,
    pub stats: HeapStats,
    /// Release budget in bytes (may go negative: a large span is released
    /// whole and paid for afterwards).
    tokens: i64,
    /// Release-clock time of the last refill of `tokens`.
    last_refill_ns: u64,
    /// The release clock (`release::clock_after`): wall time with every
    /// pause in span frees cut to IDLE_GAP_NS; `clock_wall_ns` is the wall
    /// time it last advanced at. Free spans' `freed_at` read on it.
    clock_ns: u64,
    clock_wall_ns: u64,
    rate_bytes_per_s: u64,
    /// The current address-space region: pages `[region_next, region_end)`
    /// are reserved and not yet handed to the free lists.
    region_next: usize,
    region_end: usize,
    /// Heap limit in bytes (0: none); init sets it from `MEMX_HEAP_LIMIT`.
    limit: usize,
    /// The first refusal has been reported.
    limit_reported: bool,
    /// Told of the first refusal (init passes the profiler's `limit_hit`,
    /// so the heap never calls up into the profiler itself).
    on_limit: Option<fn()>,
}

// SAFETY: raw span pointers are only followed with the heap's lock held.
unsafe impl Send for PageHeap {}

pub static HEAP: Locked<PageHeap> = Locked::new(PageHeap::new());

/// Bytes ever mapped for heaps: Σ `stats.mapped` over every `PageHeap` (the
/// library has one, `HEAP`; unit tests add their own). Readable without
/// the lock, for guarded sampling's start (`guard`, `MEMX_GUARD_FROM`).
/// Only grows (the heap never unmaps), in steps of at least 2 MiB.
static MAPPED_EVER: AtomicUsize = AtomicUsize::new(0);

/// `MAPPED_EVER` (lock-free, may lag a growth in progress).
pub fn mapped_ever() -> usize {
    MAPPED_EVER.load(Relaxed)
}

impl Default for PageHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl PageHeap {
    pub const fn new() -> Self {
        PageHeap {
            normal: [const { SpanList::new() }; MAX_LIST + 1],
            released: [const { SpanList::new() }; MAX_LIST + 1],
            normal_lengths: Lengths::EMPTY,
            released_lengths: Lengths::EMPTY,
            large_normal: SpanList::new(),
            large_released: SpanList::new(),
            spans: Pool::new(),
            stats: HeapStats {
                mapped: 0,
                free_normal: 0,
                free_released: 0,
                small_span_bytes: 0,
                large_bytes: 0,
                large_count: 0,
                free_spans: 0,
                released_total: 0,
                release_calls: 0,
                limit_hits: 0,
            },
            tokens: 0,
            last_refill_ns: 0,
            clock_ns: 0,
            clock_wall_ns: 0,
            rate_bytes_per_s: 64 << 20,
            region_next: 0,
            region_end: 0,
            limit: 0,
            limit_reported: false,
            on_limit: None,
        }
    }

    /// Sets the heap limit in bytes (0: none), and who hears of the first
    /// request it refuses (called with the heap lock held).
    pub fn set_limit(&mut self, bytes: usize, on_limit: Option<fn()>) {
        self.limit = bytes;
        self.on_limit = on_limit;
    }

    pub fn set_release_rate(&mut self, mib_per_s: u64) {
        self.rate_bytes_per_s = mib_per_s.saturating_mul(1 << 20);
    }

    /// A span of `npages` pages in state `Small` of `class` (class > 0) or
    /// `Large` (class == 0), with every page mapped to it. Null when the OS
    /// refuses memory.
    pub fn alloc(&mut self, npages: usize, class: usize) -> *mut Span {
        let s = self.take_free(npages, npages);
        if s.is_null() {
            return s;
        }
        self.mark_in_use(s, class);
        s
    }

    /// Like `alloc`, with the span's first byte aligned to `align_pages`
    /// pages (a power of two).
    pub fn alloc_aligned(&mut self, npages: usize, align_pages: usize, class: usize) -> *mut Span {
        if align_pages <= 1 {
            return self.alloc(npages, class);
        }
        let Some(total) = npages.checked_add(align_pages - 1) else {
            return core::ptr::null_mut();
        };
        // Only the `npages` kept become resident: the trimmed ends stay free
        // and keep their release status.
        let s = self.take_free(total, npages);
        if s.is_null() {
            return s;
        }
        // SAFETY: `s` is a live span just taken from the free lists.
        let start = unsafe { (*s).start };
        let aligned = (start + align_pages - 1) & !(align_pages - 1);
        let mut s = s;
        if aligned > start {
            let rest = self.split(s, aligned - start);
            self.free_span_inner(s, None);
            s = rest;
        }
        // SAFETY: `s` is live.
        if unsafe { (*s).npages } > npages {
            let tail = self.split(s, npages);
            self.free_span_inner(tail, None);
        }
        self.mark_in_use(s, class);
        s
    }

    fn mark_in_use(&mut self, s: *mut Span, class: usize) {
        // SAFETY: `s` is live and owned by this (locked) heap.
        let span = unsafe { &mut *s };
        span.state = if class == 0 {
            SpanState::Large
        } else {
            SpanState::Small
        };
        span.class = class as u8;
        span.large = LargeFields::new();
        span.large.zeroed = span.free.released;
        span.free.released = false;
        if class == 0 {
            self.stats.large_bytes += span.bytes();
            self.stats.large_count += 1;
        } else {
            self.stats.small_span_bytes += span.bytes();
        }
        PAGEMAP.set_range(span.start, span.npages, Entry::new(s, class));
    }

    /// Takes a free span of at least `npages` pages off the free lists
    /// (growing the heap if needed) and trims it to exactly `npages`.
    /// `charge` pages of it will become resident if it is released memory;
    /// null if that would pass the heap limit.
    fn take_free(&mut self, npages: usize, charge: usize) -> *mut Span {
        if npages == 0 || npages > (1usize << (47 - PAGE_SHIFT)) {
            return core::ptr::null_mut();
        }
        let mut s = self.find(npages, true);
        // SAFETY: `s` is a live free span when non-null.
        let from_released = s.is_null() || unsafe { (*s).free.released };
        if from_released && self.over_limit(charge << PAGE_SHIFT) {
            s = self.reuse_under_limit(npages, charge << PAGE_SHIFT);
            if s.is_null() {
                self.refuse(npages);
                return s;
            }
        }
        if s.is_null() {
            if !self.grow(npages) {
                return core::ptr::null_mut();
            }
            s = self.find(npages, true);
            if s.is_null() {
                return s;
            }
        }
        self.take_and_trim(s, npages);
        s
    }

    /// Takes the free span `s` off its list and trims it to `npages` (at
    /// most its length), the rest going back to the free lists. `s` ends
    /// Taken: off the free lists it must stop looking Free, or a
    /// neighbour's coalescing could grab it (or a piece split from it)
    /// while it is on no list; the caller gives it its final state.
    fn take_and_trim(&mut self, s: *mut Span, npages: usize) {
        self.unlink_free(s);
        // SAFETY: `s` is live and now on no list, the caller's.
        unsafe { (*s).state = SpanState::Taken };
        // SAFETY: as above.
        if unsafe { (*s).npages } > npages {
            let rest = self.split(s, npages);
            self.insert_free(rest);
        }
    }

    /// Smallest-fitting free span, resident before released at each length
    /// (resident only unless `released`).
    fn find(&self, npages: usize, released: bool) -> *mut Span {
        let fitting = if released {
            self.normal_lengths.union(self.released_lengths)
        } else {
            self.normal_lengths
        };
        if let Some(len) = fitting.first_from(npages) {
            if !self.normal[len].is_empty() {
                return self.normal[len].first();
            }
            return self.released[len].first();
        }
        let mut best: *mut Span = core::ptr::null_mut();
        let kinds = if released { 2 } else { 1 };
        for list in [&self.large_normal, &self.large_released]
            .into_iter()
            .take(kinds)
        {
            for s in list.iter() {
                // SAFETY: members of the heap's lists are live.
                let (n, start) = unsafe { ((*s).npages, (*s).start) };
                if n >= npages {
                    // SAFETY: `best` is a live member when non-null.
                    let better = best.is_null()
                        || unsafe {
                            n < (*best).npages || (n == (*best).npages && start < (*best).start)
                        };
                    if better {
                        best = s;
                    }
                }
            }
            if !best.is_null() {
                break;
            }
        }
        best
    }

    /// Splits `s` after its first `n` pages; returns the new second part,
    /// in the same state and release status, on no list.
    fn split(&mut self, s: *mut Span, n: usize) -> *mut Span {
        let rest = self.new_span(0, 0);
        // SAFETY: `s` and `rest` are live; `rest` is fresh.
        unsafe {
            (*rest).start = (*s).start + n;
            (*rest).npages = (*s).npages - n;
            (*rest).state = (*s).state;
            (*rest).free.released = (*s).free.released;
            (*rest).free.freed_at = (*s).free.freed_at;
            (*s).npages = n;
        }
        rest
    }

    fn new_span(&mut self, start: usize, npages: usize) -> *mut Span {
        let s = self.spans.take();
        if s.is_null() {
            // Metadata exhausted: nothing sane is left to do.
            crate::diag::fatal(b"out of memory for span metadata");
        }
        // SAFETY: `s` is a free slot from the pool.
        unsafe { s.write(Span::new(start, npages)) };
        s
    }

    fn delete_span(&mut self, s: *mut Span) {
        // SAFETY: `s` is live and on no list; marking it Dead lets a stale
        // page-map entry be recognised.
        unsafe {
            (*s).state = SpanState::Dead;
            self.spans.give(s);
        }
    }

    fn list_for(&mut self, npages: usize, released: bool) -> &mut SpanList {
        match (npages <= MAX_LIST, released) {
            (true, false) => &mut self.normal[npages],
            (true, true) => &mut self.released[npages],
            (false, false) => &mut self.large_normal,
            (false, true) => &mut self.large_released,
        }
    }

    /// Brings the length bitmaps up to date with list (npages, released).
    fn note_length(&mut self, npages: usize, released: bool) {
        if npages > MAX_LIST {
            return;
        }
        let (list, bits) = if released {
            (&self.released[npages], &mut self.released_lengths)
        } else {
            (&self.normal[npages], &mut self.normal_lengths)
        };
        bits.set(npages, !list.is_empty());
    }

    /// Puts a Free span on its list and maps its first and last pages.
    fn insert_free(&mut self, s: *mut Span) {
        // SAFETY: `s` is live and on no list.
        let (npages, released, start) = unsafe { ((*s).npages, (*s).free.released, (*s).start) };
        // SAFETY: as above.
        unsafe { (*s).state = SpanState::Free };
        // SAFETY: `s` is on no list.
        unsafe { self.list_for(npages, released).push_front(s) };
        self.note_length(npages, released);
        let bytes = npages << PAGE_SHIFT;
        if released {
            self.stats.free_released += bytes;
        } else {
            self.stats.free_normal += bytes;
        }
        self.stats.free_spans += 1;
        PAGEMAP.set(start, Entry::new(s, 0));
        PAGEMAP.set(start + npages - 1, Entry::new(s, 0));
    }

    fn unlink_free(&mut self, s: *mut Span) {
        // SAFETY: `s` is a live Free span on its list.
        let (npages, released) = unsafe { ((*s).npages, (*s).free.released) };
        // SAFETY: as above.
        unsafe { self.list_for(npages, released).remove(s) };
        self.note_length(npages, released);
        let bytes = npages << PAGE_SHIFT;
        if released {
            self.stats.free_released -= bytes;
        } else {
            self.stats.free_normal -= bytes;
        }
        self.stats.free_spans -= 1;
    }

    /// Returns an in-use span to the heap.
    ///
    /// # Safety
    /// `s` is a live Small or Large span that nothing uses any more.
    pub unsafe fn free(&mut self, s: *mut Span) {
        let now = self.release_clock();
        // SAFETY: as the caller promises.
        unsafe { self.free_on_clock(s, now) }
    }

    /// `free` at release-clock time `now` (`release_clock`).
    ///
    /// # Safety
    /// As `free`.
    unsafe fn free_on_clock(&mut self, s: *mut Span, now: u64) {
        // SAFETY: `s` is a live Small or Large span owned by the caller.
        let span = unsafe { &mut *s };
        debug_assert!(matches!(span.state, SpanState::Small | SpanState::Large));
        if span.state == SpanState::Large {
            self.stats.large_bytes -= span.bytes();
            self.stats.large_count -= 1;
        } else {
            self.stats.small_span_bytes -= span.bytes();
        }
        // Interior pages must stop naming a class: a stale pointer then
        // reaches the slow path instead of a thread cache.
        PAGEMAP.set_range(span.start, span.npages, Entry::new(s, 0));
        span.free.released = false;
        span.free.freed_at = now;
        self.free_span_inner(s, Some(now));
    }

    /// Marks `s` Free, merges it with free neighbours of the same release
    /// status, and files it.
    /// `now` (when given) lets the release policy run.
    fn free_span_inner(&mut self, s: *mut Span, now: Option<u64>) {
        // SAFETY: `s` is live and on no list.
        unsafe { (*s).state = SpanState::Free };
        let s = self.coalesce(s);
        self.insert_free(s);
        if let Some(now) = now {
            if self.rate_bytes_per_s > 0 {
                self.release_at_rate(now);
            }
        }
    }

    fn coalesce(&mut self, s: *mut Span) -> *mut Span {
        // SAFETY: `s` is live; neighbours found through the page map are
        // checked to be Free spans that really adjoin `s` before use.
        unsafe {
            let released = (*s).free.released;
            if (*s).start > 0 {
                let prev = PAGEMAP.get((*s).start - 1).span();
                if !prev.is_null()
                    && (*prev).state == SpanState::Free
                    && (*prev).free.released == released
                    && (*prev).end_page() == (*s).start
                {
                    self.unlink_free(prev);
                    (*s).start = (*prev).start;
                    (*s).npages += (*prev).npages;
                    // The merged span counts as old as its oldest part, so a
                    // small fresh neighbour does not keep old pages resident.
                    (*s).free.freed_at = (*s).free.freed_at.min((*prev).free.freed_at);
                    self.delete_span(prev);
                }
            }
            let next = PAGEMAP.get((*s).end_page()).span();
            if !next.is_null()
                && (*next).state == SpanState::Free
                && (*next).free.released == released
                && (*next).start == (*s).end_page()
            {
                self.unlink_free(next);
                (*s).npages += (*next).npages;
                (*s).free.freed_at = (*s).free.freed_at.min((*next).free.freed_at);
                self.delete_span(next);
            }
        }
        s
    }
}

mod grow;
mod release;

#[cfg(test)]
mod tests;
