//! Page heap against a model: random allocations and frees of spans, with
//! the heap's invariants and the model's (no overlap, every page mapped to
//! its span, memory reused) checked after every step.

use super::*;
use crate::size_class::PAGE_SIZE;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn check_live(live: &[(*mut Span, usize)]) {
    let mut ranges: Vec<(usize, usize)> = live
        .iter()
        // SAFETY: live spans are owned by the test.
        .map(|&(s, _)| unsafe { ((*s).start, (*s).end_page()) })
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert!(w[0].1 <= w[1].0, "live spans overlap: {w:?}");
    }
    for &(s, n) in live {
        // SAFETY: as above.
        let span = unsafe { &*s };
        assert_eq!(span.npages, n);
        assert!(matches!(span.state, SpanState::Large | SpanState::Small));
        for p in [span.start, span.start + n / 2, span.end_page() - 1] {
            assert_eq!(PAGEMAP.get(p).span(), s);
        }
    }
}

#[test]
fn random_against_model() {
    let mut heap = PageHeap::new();
    heap.set_release_rate(0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut live: Vec<(*mut Span, usize)> = Vec::new();
    for step in 0..20000 {
        if live.is_empty() || rng.below(100) < 55 {
            let n = match rng.below(10) {
                0 => 129 + rng.below(400) as usize,
                1..=3 => 1 + rng.below(128) as usize,
                _ => 1 + rng.below(8) as usize,
            };
            let class = if rng.below(2) == 0 {
                0
            } else {
                1 + rng.below(96) as usize
            };
            let s = if rng.below(8) == 0 {
                let align = 1usize << rng.below(6);
                let s = heap.alloc_aligned(n, align, class);
                // SAFETY: fresh span.
                assert_eq!(unsafe { (*s).start } % align, 0);
                s
            } else {
                heap.alloc(n, class)
            };
            assert!(!s.is_null());
            // SAFETY: fresh span.
            assert_eq!(PAGEMAP.get(unsafe { (*s).start }).class(), class);
            live.push((s, n));
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (s, _) = live.swap_remove(i);
            // SAFETY: a live span of this heap that the test no longer uses.
            unsafe { heap.free(s) };
        }
        if step % 97 == 0 {
            heap.check_invariants();
            check_live(&live);
        }
    }
    heap.check_invariants();
    check_live(&live);
    for (s, _) in live.drain(..) {
        // SAFETY: a live span of this heap that the test no longer uses.
        unsafe { heap.free(s) };
    }
    heap.check_invariants();
    // Everything is free: all mapped memory sits in the free lists, and
    // coalescing has rebuilt large spans.
    assert_eq!(
        heap.stats.free_normal + heap.stats.free_released,
        heap.stats.mapped
    );
    let mapped = heap.stats.mapped;
    let s = heap.alloc(200, 0);
    assert_eq!(
        heap.stats.mapped, mapped,
        "a free 200-page run should exist after coalescing"
    );
    // SAFETY: a live span of this heap that the test no longer uses.
    unsafe { heap.free(s) };
    heap.check_invariants();
}

#[test]
fn lengths_find_the_least_set_length_from_a_start() {
    let (mut a, mut b) = (Lengths::EMPTY, Lengths::EMPTY);
    assert_eq!(a.union(b).first_from(1), None);
    a.set(70, true);
    b.set(5, true);
    assert_eq!(a.union(b).first_from(1), Some(5));
    assert_eq!(a.union(b).first_from(6), Some(70));
    assert_eq!(a.first_from(1), Some(70));
    a.set(MAX_LIST, true);
    assert_eq!(a.union(b).first_from(71), Some(MAX_LIST));
    assert_eq!(a.union(b).first_from(MAX_LIST + 1), None);
    a.set(70, false);
    assert_eq!(a.first_from(6), Some(MAX_LIST));
}

#[test]
fn reuse_instead_of_growth() {
    let mut heap = PageHeap::new();
    heap.set_release_rate(0);
    let mut spans = Vec::new();
    for _ in 0..100 {
        spans.push(heap.alloc(16, 0));
    }
    let mapped = heap.stats.mapped;
    for s in spans.drain(..) {
        // SAFETY: a live span of this heap that the test no longer uses.
        unsafe { heap.free(s) };
    }
    for _ in 0..100 {
        spans.push(heap.alloc(16, 0));
    }
    assert_eq!(heap.stats.mapped, mapped);
    for s in spans.drain(..) {
        // SAFETY: a live span of this heap that the test no longer uses.
        unsafe { heap.free(s) };
    }
    heap.check_invariants();
}

#[test]
fn release_all_gives_back_and_memory_reads_zero() {
    let mut heap = PageHeap::new();
    heap.set_release_rate(0);
    let s = heap.alloc(64, 0);
    // SAFETY: the span's 64 pages are mapped and owned by the test.
    let mem = unsafe { core::slice::from_raw_parts_mut((*s).addr() as *mut u8, 64 * PAGE_SIZE) };
    mem.fill(0xAB);
    // SAFETY: a live span of this heap that the test no longer uses.
    unsafe { heap.free(s) };
    assert!(heap.stats.free_normal >= 64 * PAGE_SIZE);
    let released = heap.release_all();
    assert!(released >= 64 * PAGE_SIZE);
    assert_eq!(heap.stats.free_normal, 0);
    assert_eq!(heap.release_all(), 0);
    heap.check_invariants();
    let s2 = heap.alloc(64, 0);
    // SAFETY: as above.
    let span = unsafe { &*s2 };
    assert!(span.large.zeroed);
    // SAFETY: the span's pages are mapped.
    let mem = unsafe { core::slice::from_raw_parts(span.addr() as *const u8, 64 * PAGE_SIZE) };
    assert!(mem.iter().all(|&b| b == 0));
    // SAFETY: a live span of this heap that the test no longer uses.
    unsafe { heap.free(s2) };
}

const MS: u64 = 1_000_000;

/// Frees `s` at wall time `wall` ns (the heap's clocks start at 0).
fn free_at(heap: &mut PageHeap, s: *mut Span, wall: u64) {
    let now = heap.release_clock_at(wall);
    // SAFETY: callers pass live spans of this heap that they no longer use.
    unsafe { heap.free_on_clock(s, now) };
}

/// One page taken and freed every `step` ns from `from` to `to`: a heap
/// at work.
fn keep_busy(heap: &mut PageHeap, from: u64, to: u64, step: u64) {
    let mut wall = from;
    while wall <= to {
        let s = heap.alloc(1, 0);
        free_at(heap, s, wall);
        wall += step;
    }
}

/// Pages of the span the release tests watch.
const WATCHED: usize = 256;

/// A heap releasing at 1 GiB/s, with a WATCHED-page span freed at wall
/// time 0.
fn heap_with_span_freed_at_zero() -> PageHeap {
    let mut heap = PageHeap::new();
    heap.set_release_rate(1024);
    let a = heap.alloc(WATCHED, 0);
    free_at(&mut heap, a, 0);
    heap
}

/// Whether the watched span has gone back to the OS.
fn watched_span_released(heap: &PageHeap) -> bool {
    heap.stats.released_total >= (WATCHED * PAGE_SIZE) as u64
}

#[test]
fn release_waits_for_age_then_happens_at_rate() {
    let mut heap = heap_with_span_freed_at_zero();
    keep_busy(&mut heap, 50 * MS, 950 * MS, 50 * MS);
    assert_eq!(
        heap.stats.released_total, 0,
        "memory free for less than a second stays resident"
    );
    keep_busy(&mut heap, 1000 * MS, 1100 * MS, 50 * MS);
    assert!(
        watched_span_released(&heap),
        "the span free for a second of work went back"
    );
    heap.check_invariants();
}

#[test]
fn a_pause_does_not_age_free_spans() {
    assert_eq!(super::release::clock_after(7, 5), 12);
    assert!(super::release::clock_after(0, 3_000 * MS) < 1_000 * MS);
    let mut heap = heap_with_span_freed_at_zero();
    // Five seconds with no span freed, then a burst of work.
    keep_busy(&mut heap, 5_000 * MS, 5_500 * MS, 10 * MS);
    assert_eq!(
        heap.stats.released_total, 0,
        "a span freed just before a pause is still resident after it"
    );
    keep_busy(&mut heap, 5_500 * MS, 6_500 * MS, 10 * MS);
    assert!(
        watched_span_released(&heap),
        "a second of work after the pause released it"
    );
    heap.check_invariants();
}

#[test]
fn growth_is_contiguous_and_coalesces() {
    let mut heap = PageHeap::new();
    heap.set_release_rate(0);
    let spans: Vec<_> = (0..8).map(|_| heap.alloc(300, 0)).collect();
    for &s in &spans {
        // SAFETY: live spans that the test no longer uses.
        unsafe { heap.free(s) };
    }
    let mapped = heap.stats.mapped;
    // Everything freed coalesces into runs long enough for one big span.
    let big = heap.alloc(2000, 0);
    assert_eq!(
        heap.stats.mapped, mapped,
        "8 x 300 pages freed must serve 2000 pages"
    );
    // SAFETY: as above.
    unsafe { heap.free(big) };
    heap.check_invariants();
}

#[test]
fn large_spans_resize_in_place() {
    let mut heap = PageHeap::new();
    heap.set_release_rate(0);
    // A fresh heap carves `a` from the front of its first mapping, so the
    // pages right after it are free.
    let a = heap.alloc(10, 0);
    // SAFETY: `a` is a live Large span of this heap.
    unsafe {
        assert!(heap.resize_large(a, 15));
        assert_eq!((*a).npages, 15);
        assert_eq!(PAGEMAP.get((*a).start + 14).span(), a);
        assert_eq!(heap.stats.large_bytes, 15 * PAGE_SIZE);
        heap.check_invariants();
        assert!(heap.resize_large(a, 4));
        assert_eq!((*a).npages, 4);
        assert_eq!(heap.stats.large_bytes, 4 * PAGE_SIZE);
        heap.check_invariants();
        let b = heap.alloc(300, 0);
        assert!(
            !heap.resize_large(a, 100_000),
            "cannot grow past the mapping"
        );
        heap.free(b);
        heap.free(a);
    }
    heap.check_invariants();
}

/// A private heap limited to `bytes`, releasing nothing on its own (so
/// what it holds moves only with the test's own calls).
fn limited_heap(bytes: usize) -> PageHeap {
    let mut heap = PageHeap::new();
    heap.set_release_rate(0);
    heap.set_limit(bytes, None);
    heap
}

/// Bytes in live and resident free spans: what the limit bounds.
fn held_by_parts(heap: &PageHeap) -> usize {
    heap.stats.small_span_bytes + heap.stats.large_bytes + heap.stats.free_normal
}

#[test]
fn limit_bounds_held_bytes_and_memory_is_reused_after_free() {
    let mut heap = limited_heap(4 << 20);
    let mut spans = Vec::new();
    loop {
        let s = heap.alloc(16, 0);
        assert_eq!(heap.stats.held(), held_by_parts(&heap));
        assert!(heap.stats.held() <= 4 << 20, "held {}", heap.stats.held());
        if s.is_null() {
            break;
        }
        spans.push(s);
        assert!(spans.len() <= 32, "the limit was not enforced");
    }
    assert_eq!(spans.len(), 32, "4 MiB holds 32 spans of 128 KiB");
    assert_eq!(heap.stats.limit_hits, 1);
    // Address space reserved ahead does not count, but it is there.
    assert!(heap.stats.mapped >= heap.stats.held());
    assert!(
        heap.alloc(1, 3).is_null(),
        "one more page is past the limit too"
    );
    assert_eq!(heap.stats.limit_hits, 2);
    for s in spans.drain(..) {
        // SAFETY: a live span of this heap that the test no longer uses.
        unsafe { heap.free(s) };
    }
    heap.check_invariants();
    assert_eq!(heap.stats.held(), 4 << 20, "freed pages stay resident");
    // Freed memory serves the same requests again, at no charge.
    for _ in 0..32 {
        let s = heap.alloc(16, 0);
        assert!(
            !s.is_null(),
            "memory freed under the limit must be reusable"
        );
        spans.push(s);
    }
    assert_eq!(heap.stats.held(), 4 << 20);
    for s in spans.drain(..) {
        // SAFETY: as above.
        unsafe { heap.free(s) };
    }
    // malloc_trim gives it all back; nothing is held any more.
    heap.release_all();
    assert_eq!(heap.stats.held(), 0);
    heap.check_invariants();
}

#[test]
fn limit_releases_small_free_spans_to_serve_a_larger_one() {
    let mut heap = limited_heap(128 * PAGE_SIZE);
    let spans: Vec<_> = (0..128).map(|_| heap.alloc(1, 0)).collect();
    assert!(spans.iter().all(|s| !s.is_null()));
    assert_eq!(heap.stats.held(), 128 * PAGE_SIZE);
    assert!(heap.alloc(1, 0).is_null());
    // Every other page freed: 64 resident free pages, none adjacent to
    // another, so none can serve more than one page.
    let mut live = Vec::new();
    for (i, &s) in spans.iter().enumerate() {
        if i % 2 == 0 {
            // SAFETY: a live span of this heap that the test no longer uses.
            unsafe { heap.free(s) };
        } else {
            live.push(s);
        }
    }
    assert_eq!(heap.stats.free_normal, 64 * PAGE_SIZE);
    // A single page reuses a resident one: no release, no growth of held.
    let one = heap.alloc(1, 0);
    assert!(!one.is_null());
    assert_eq!(heap.stats.free_normal, 63 * PAGE_SIZE);
    assert_eq!(heap.stats.released_total, 0);
    // 32 pages: no resident run fits; 32 resident pages are released to
    // make room, and the span comes from released memory.
    let big = heap.alloc(32, 0);
    assert!(!big.is_null(), "releasing free pages must make room");
    assert_eq!(heap.stats.released_total, 32 * PAGE_SIZE as u64);
    assert_eq!(heap.stats.held(), 128 * PAGE_SIZE);
    assert_eq!(heap.stats.held(), held_by_parts(&heap));
    heap.check_invariants();
    // 40 more pages cannot fit even if every free page went back: refused
    // without releasing anything.
    let hits = heap.stats.limit_hits;
    let resident = heap.stats.free_normal;
    assert!(heap.alloc(40, 0).is_null());
    assert!(heap.alloc_aligned(40, 8, 0).is_null());
    assert_eq!(heap.stats.limit_hits, hits + 2);
    assert_eq!(
        heap.stats.free_normal, resident,
        "a hopeless request releases nothing"
    );
    // An aligned request is charged only for the pages it keeps.
    let aligned = heap.alloc_aligned(16, 16, 0);
    assert!(!aligned.is_null());
    // SAFETY: a fresh span.
    assert_eq!(unsafe { (*aligned).start } % 16, 0);
    assert!(heap.stats.held() <= 128 * PAGE_SIZE);
    heap.check_invariants();
    // SAFETY: live spans of this heap that the test no longer uses.
    unsafe {
        heap.free(aligned);
        heap.free(big);
        heap.free(one);
        for s in live {
            heap.free(s);
        }
    }
    heap.check_invariants();
}

#[test]
fn limit_applies_to_growing_a_large_span_in_place() {
    let mut heap = limited_heap(128 * PAGE_SIZE);
    let a = heap.alloc(10, 0);
    // SAFETY: `a` is a live Large span of this heap.
    unsafe {
        assert!(heap.resize_large(a, 100));
        assert_eq!(heap.stats.held(), 100 * PAGE_SIZE);
        assert!(!heap.resize_large(a, 129), "growing past the limit");
        assert_eq!((*a).npages, 100);
        assert!(heap.resize_large(a, 128));
        assert!(heap.resize_large(a, 50));
        // The 78 pages given back stay resident and count; growing into
        // them again costs nothing.
        assert_eq!(heap.stats.held(), 128 * PAGE_SIZE);
        assert!(heap.resize_large(a, 128));
        heap.check_invariants();
        heap.free(a);
    }
    heap.check_invariants();
}

#[test]
fn limit_model_random() {
    // Random spans under a limit: held never passes it, a refusal happens
    // only when the request really cannot fit, and the books balance.
    let limit = 2048 * PAGE_SIZE;
    let mut heap = limited_heap(limit);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut live: Vec<(*mut Span, usize)> = Vec::new();
    let mut refused = 0;
    for step in 0..20000 {
        if live.is_empty() || rng.below(100) < 60 {
            let n = match rng.below(10) {
                0 => 129 + rng.below(300) as usize,
                1..=3 => 1 + rng.below(128) as usize,
                _ => 1 + rng.below(8) as usize,
            };
            let in_use: usize = live.iter().map(|&(_, n)| n * PAGE_SIZE).sum();
            let resident_fits = !heap.find(n, false).is_null();
            let s = heap.alloc(n, 0);
            // Refused exactly when no resident free span fits and the
            // request does not fit beside the in-use pages even with every
            // resident free page released.
            let should_refuse = !resident_fits && in_use + n * PAGE_SIZE > limit;
            assert_eq!(
                s.is_null(),
                should_refuse,
                "{n} pages, {in_use} bytes in use"
            );
            if s.is_null() {
                refused += 1;
            } else {
                live.push((s, n));
            }
        } else {
            let i = rng.below(live.len() as u64) as usize;
            let (s, _) = live.swap_remove(i);
            // SAFETY: a live span of this heap that the test no longer uses.
            unsafe { heap.free(s) };
        }
        assert!(heap.stats.held() <= limit);
        if step % 97 == 0 {
            heap.check_invariants();
            check_live(&live);
            assert_eq!(heap.stats.held(), held_by_parts(&heap));
        }
    }
    assert!(refused > 0, "the model never reached the limit");
    assert_eq!(heap.stats.limit_hits, refused);
    for (s, _) in live.drain(..) {
        // SAFETY: as above.
        unsafe { heap.free(s) };
    }
    heap.check_invariants();
}

impl PageHeap {
    /// Checks the heap's invariants.
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
        for len in 0..=MAX_LIST {
            assert_eq!(
                self.normal_lengths.contains(len),
                !self.normal[len].is_empty(),
                "{len}"
            );
            assert_eq!(
                self.released_lengths.contains(len),
                !self.released[len].is_empty(),
                "{len}"
            );
        }
        assert_eq!(count, self.stats.free_spans);
        assert_eq!(
            self.stats.mapped,
            normal + released + self.stats.small_span_bytes + self.stats.large_bytes
        );
    }
}
