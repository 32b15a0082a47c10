//! `PageHeap`: runs of 8 KiB pages. Hands out spans, takes them back,
//! coalesces free neighbours, and gives free pages back to the OS.
//!
//! Free spans sit in per-length lists (1..=128 pages) or, longer, in one
//! list searched best-fit; resident ("normal") and released spans are kept
//! apart so the heap prefers memory that is already resident, and only spans
//! of the same kind are merged (merging would otherwise cost a madvise or
//! lose track of which pages read as zero).
//!
//! Growth is carved from large address-space reservations so successive
//! growths are contiguous and coalesce.
//!
//! Release: resident free spans that have stayed free for RELEASE_AGE_NS are
//! given back with `madvise(MADV_DONTNEED)`, largest first, paid for by a
//! token bucket of `MEMX_RELEASE_RATE` MiB per second (one second's worth of
//! burst), checked at most every RELEASE_CHECK_NS when a span is freed;
//! `release_all` (malloc_trim) releases everything at once.
//!
//! Limit (`MEMX_HEAP_LIMIT`): the heap never *holds* more than the limit
//! from the OS, where held = mapped − free released = in-use spans + resident
//! free spans: what the process really pays for. Address space reserved
//! ahead (`REGION_BYTES`), never-touched pages and pages given back with
//! madvise do not count; neither does metadata (span structs, page map),
//! which lives outside the heap. Only handing out released (or fresh) pages
//! raises the held figure, so the check runs only then: a resident free span
//! of any size that fits is used first; failing that, resident free spans
//! too small to serve are released (largest first) to make room, if that
//! can be enough; otherwise the request fails (the caller returns NULL with
//! ENOMEM). The first failure prints one line to stderr and tells the
//! profiler (through `on_limit`: init passes `profile::limit_hit`, which is
//! called with HEAP held).
//!
//! Owns: free lists, the span pool, heap statistics, the limit's state.
//! Must never: be used without its lock (the global `HEAP`), call into
//! central lists, or allocate (the limit's report is a fixed buffer).

use crate::meta::Pool;
use crate::pagemap::{Entry, PAGEMAP};
use crate::size_class::PAGE_SHIFT;
use crate::span::{LargeFields, Span, SpanList, SpanState};
use crate::sys;
use crate::sys::lock::Locked;
use crate::util::fmt::FixedBuf;

const MAX_LIST: usize = 128;
/// A free span is released only after staying free this long: memory that
/// is freed and soon reused (the common case) never pays for a madvise and
/// the page faults that follow it.
const RELEASE_AGE_NS: u64 = 1_000_000_000;
/// Release is considered at most this often (it scans the free lists).
const RELEASE_CHECK_NS: u64 = 10_000_000;
/// Address space is reserved in regions this large (untouched pages cost no
/// memory) so that successive growths are contiguous and coalesce; smaller
/// reservations are tried if the OS refuses.
const REGION_BYTES: usize = 1 << 30;
/// The heap grows by at least this much at a time (address space only:
/// pages cost memory when first touched).
const MIN_GROW_PAGES: usize = (2 << 20) >> PAGE_SHIFT;

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
    large_normal: SpanList,
    large_released: SpanList,
    spans: Pool<Span>,
    pub stats: HeapStats,
    /// Release budget in bytes (may go negative: a large span is released
    /// whole and paid for afterwards).
    tokens: i64,
    last_refill_ns: u64,
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

    /// Whether `charge` more resident bytes would pass the limit.
    fn over_limit(&self, charge: usize) -> bool {
        self.limit != 0 && self.stats.held() + charge > self.limit
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
        for len in npages..=MAX_LIST {
            if !self.normal[len].is_empty() {
                return self.normal[len].first();
            }
            if released && !self.released[len].is_empty() {
                return self.released[len].first();
            }
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

    /// The heap limit stands in the way of serving `npages` pages from
    /// released memory (`charge` bytes would become resident): a resident
    /// free span that fits, else room made by releasing resident free spans
    /// and a released span (grown if need be). Null if neither works.
    #[cold]
    #[inline(never)]
    fn reuse_under_limit(&mut self, npages: usize, charge: usize) -> *mut Span {
        let s = self.find(npages, false);
        if !s.is_null() {
            return s;
        }
        if !self.make_room(charge) {
            return core::ptr::null_mut();
        }
        let s = self.find(npages, true);
        if !s.is_null() || !self.grow(npages) {
            return s;
        }
        self.find(npages, true)
    }

    /// Releases resident free spans, largest first, until `charge` more
    /// bytes fit under the limit. Releases nothing and returns false when
    /// even releasing every resident free page would not be enough.
    fn make_room(&mut self, charge: usize) -> bool {
        if self.stats.held() - self.stats.free_normal + charge > self.limit {
            return false;
        }
        while self.over_limit(charge) {
            let s = self.largest_normal();
            if s.is_null() || self.release_span(s) == 0 {
                return false;
            }
        }
        true
    }

    /// A request refused by the limit: counted; the first one is reported
    /// with one line on stderr and to the profiler.
    #[cold]
    #[inline(never)]
    fn refuse(&mut self, npages: usize) {
        self.stats.limit_hits += 1;
        if self.limit_reported {
            return;
        }
        self.limit_reported = true;
        let mut line = FixedBuf::<256>::new();
        line.str("memx: MEMX_HEAP_LIMIT reached: ")
            .usize(self.stats.held())
            .str(" bytes held of a limit of ")
            .usize(self.limit)
            .str("; a request for ")
            .usize(npages << PAGE_SHIFT)
            .str(" more bytes gets ENOMEM (reported once)\n");
        sys::write_stderr(line.as_bytes());
        if let Some(f) = self.on_limit {
            f();
        }
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

    /// Puts a Free span on its list and maps its first and last pages.
    fn insert_free(&mut self, s: *mut Span) {
        // SAFETY: `s` is live and on no list.
        let (npages, released, start) = unsafe { ((*s).npages, (*s).free.released, (*s).start) };
        // SAFETY: as above.
        unsafe { (*s).state = SpanState::Free };
        // SAFETY: `s` is on no list.
        unsafe { self.list_for(npages, released).push_front(s) };
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
        let bytes = npages << PAGE_SHIFT;
        if released {
            self.stats.free_released -= bytes;
        } else {
            self.stats.free_normal -= bytes;
        }
        self.stats.free_spans -= 1;
    }

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
            // SAFETY: `tail` was split off `s`; its pages are ours.
            unsafe { (*tail).free.released = false };
            PAGEMAP.set_range(start + npages, old - npages, Entry::new(tail, 0));
            self.free_span_inner(tail, Some(sys::now_ns()));
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
    fn free_after(&self, at: usize, npages: usize) -> *mut Span {
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

    /// Returns an in-use span to the heap.
    ///
    /// # Safety
    /// `s` is a live Small or Large span that nothing uses any more.
    pub unsafe fn free(&mut self, s: *mut Span) {
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
        let now = if self.rate_bytes_per_s > 0 {
            sys::now_ns()
        } else {
            0
        };
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

    /// Adds at least `npages` pages to the free lists, carved from the
    /// current address-space region (reserving a new one when it runs out).
    fn grow(&mut self, npages: usize) -> bool {
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
    fn reserve_region(&mut self, pages: usize) -> bool {
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
    fn add_fresh(&mut self, start: usize, pages: usize) {
        self.stats.mapped += pages << PAGE_SHIFT;
        let s = self.new_span(start, pages);
        // SAFETY: `s` is fresh; untouched anonymous memory reads as zero and
        // is not resident, exactly what "released" means.
        unsafe { (*s).free.released = true };
        let s = self.coalesce(s);
        self.insert_free(s);
    }

    fn refill_tokens(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.last_refill_ns).min(1_000_000_000);
        self.last_refill_ns = now;
        let add = (elapsed as u128 * self.rate_bytes_per_s as u128 / 1_000_000_000) as i64;
        self.tokens = (self.tokens + add).min(self.rate_bytes_per_s as i64);
    }

    /// Spends release tokens on resident spans free for RELEASE_AGE_NS.
    fn release_at_rate(&mut self, now: u64) {
        if now.saturating_sub(self.last_refill_ns) < RELEASE_CHECK_NS {
            return;
        }
        self.refill_tokens(now);
        while self.tokens > 0 && self.stats.free_normal > 0 {
            let victim = self.oldest_normal(now.saturating_sub(RELEASE_AGE_NS));
            if victim.is_null() {
                break;
            }
            let bytes = self.release_span(victim);
            self.tokens -= bytes as i64;
        }
    }

    /// The largest resident free span freed no later than `before`, or null.
    fn oldest_normal(&self, before: u64) -> *mut Span {
        let mut best: *mut Span = core::ptr::null_mut();
        let lists = self
            .normal
            .iter()
            .chain(core::iter::once(&self.large_normal));
        for s in lists.flat_map(|l| l.iter()) {
            // SAFETY: list members are live.
            let (freed, n) = unsafe { ((*s).free.freed_at, (*s).npages) };
            // SAFETY: `best` is a live member when non-null.
            if freed <= before && (best.is_null() || n > unsafe { (*best).npages }) {
                best = s;
            }
        }
        best
    }

    /// The largest resident free span, or null.
    fn largest_normal(&self) -> *mut Span {
        self.oldest_normal(u64::MAX)
    }

    /// Gives a resident free span's pages to the OS; returns its bytes.
    fn release_span(&mut self, s: *mut Span) -> usize {
        self.unlink_free(s);
        // SAFETY: `s` is a live Free span, now on no list.
        let (addr, bytes) = unsafe { ((*s).addr(), (*s).bytes()) };
        let ok = sys::release(addr as *mut u8, bytes);
        self.stats.release_calls += 1;
        if ok {
            self.stats.released_total += bytes as u64;
            // SAFETY: as above.
            unsafe { (*s).free.released = true };
        }
        let s = self.coalesce(s);
        self.insert_free(s);
        if ok {
            bytes
        } else {
            0
        }
    }

    /// Releases every resident free span (malloc_trim). Returns the bytes.
    pub fn release_all(&mut self) -> usize {
        let mut total = 0;
        loop {
            let s = self.largest_normal();
            if s.is_null() {
                break;
            }
            let n = self.release_span(s);
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    }

    /// Checks the heap's invariants (tests and debug builds).
    pub fn check_invariants(&self) {
        let mut normal = 0;
        let mut released = 0;
        let mut count = 0;
        let lists = self
            .normal
            .iter()
            .chain(self.released.iter())
            .chain([&self.large_normal, &self.large_released]);
        for list in lists {
            for s in list.iter() {
                // SAFETY: list members are live.
                let span = unsafe { &*s };
                assert_eq!(span.state, SpanState::Free);
                assert_eq!(PAGEMAP.get(span.start).span(), s);
                assert_eq!(PAGEMAP.get(span.end_page() - 1).span(), s);
                if span.free.released {
                    released += span.bytes();
                } else {
                    normal += span.bytes();
                }
                count += 1;
            }
        }
        assert_eq!(normal, self.stats.free_normal);
        assert_eq!(released, self.stats.free_released);
        assert_eq!(count, self.stats.free_spans);
        assert_eq!(
            self.stats.mapped,
            normal + released + self.stats.small_span_bytes + self.stats.large_bytes
        );
    }
}

#[cfg(test)]
mod tests;
