//! The transfer ring alone, with stand-in batch heads (the ring never
//! follows them): order, bounds, the capacity rule, many threads at once,
//! and the repair a fork child makes.

use super::*;
use std::collections::HashSet;

fn token(n: usize) -> *mut FreeObject {
    (n * 16) as *mut FreeObject
}

#[test]
fn batches_come_out_in_order_and_the_ring_bounds_them() {
    let ring = Box::new(TransferCache::new());
    assert_eq!(ring.pop(), None, "a zeroed ring is empty");
    for lap in 0..3 {
        for i in 1..=SLOTS {
            assert!(ring.push(token(i + lap)), "lap {lap}: slot {i}");
        }
        assert_eq!(ring.len(), SLOTS);
        assert!(!ring.push(token(999)), "a full ring refuses");
        for i in 1..=SLOTS {
            assert_eq!(ring.pop(), Some(token(i + lap)));
        }
        assert_eq!(ring.pop(), None);
        assert_eq!(ring.len(), 0);
    }
}

#[test]
fn capacity_grows_only_after_another_thread_ran_it_dry() {
    let class = 4; // 64 B
    let k = &CLASSES[class];
    let ring = Box::new(TransferCache::new());
    let first = transfer_capacity(k);
    assert!(first < max_transfer_capacity(k));
    let fill = |ring: &TransferCache, to: usize| {
        while ring.len() < to {
            assert!(ring.push(token(1)));
        }
    };
    // Full, and never found empty: it keeps its size.
    assert!(ring.has_room(k));
    fill(&ring, first);
    assert!(!ring.has_room(k));
    assert_eq!(ring.capacity.load(Ordering::Relaxed), first);
    // This thread found it empty, then overflowed it itself: a burst,
    // not a hand-off.
    ring.dry_by.store(this_thread(), Ordering::Relaxed);
    assert!(!ring.has_room(k), "one thread's own burst does not grow it");
    // Another thread found it empty, this one overflows it: it doubles, once.
    ring.dry_by.store(this_thread() ^ 64, Ordering::Relaxed);
    assert!(ring.has_room(k));
    assert_eq!(ring.capacity.load(Ordering::Relaxed), 2 * first);
    fill(&ring, 2 * first);
    assert!(
        !ring.has_room(k),
        "no second doubling without running dry again"
    );
    // Never beyond the maximum.
    for _ in 0..20 {
        ring.dry_by.store(this_thread() ^ 64, Ordering::Relaxed);
        let cap = ring.capacity.load(Ordering::Relaxed);
        fill(&ring, cap);
        ring.has_room(k);
    }
    assert_eq!(
        ring.capacity.load(Ordering::Relaxed),
        max_transfer_capacity(k)
    );
    ring.reset_capacity();
    assert_eq!(
        ring.capacity.load(Ordering::Relaxed),
        0,
        "malloc_trim starts it over"
    );
}

/// Producers and consumers at once, more threads than this machine's CPUs
/// (preempted mid-operation): every batch pushed comes out exactly once.
#[test]
fn many_threads_lose_and_duplicate_nothing() {
    const THREADS: usize = 8;
    const EACH: usize = 20_000;
    let ring: &'static TransferCache = Box::leak(Box::new(TransferCache::new()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut kept = Vec::new();
                for i in 0..EACH {
                    let tok = token(t * EACH + i + 1);
                    if !ring.push(tok) {
                        kept.push(tok as usize);
                    }
                    if i % 3 != 0 {
                        if let Some(h) = ring.pop() {
                            got.push(h as usize);
                        }
                    }
                }
                (got, kept)
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for h in handles {
        let (got, kept) = h.join().unwrap();
        for v in got.into_iter().chain(kept) {
            assert!(seen.insert(v), "batch {v:#x} came out twice");
        }
    }
    while let Some(h) = ring.pop() {
        assert!(seen.insert(h as usize), "batch came out twice");
    }
    assert_eq!(seen.len(), THREADS * EACH, "batches were lost");
}

/// A thread of the parent stopped between its CAS and its store leaves a
/// slot that looks unpublished for ever: pops stop there and pushes fill
/// up behind it. The fork child's rebuild keeps every published batch.
#[test]
fn a_fork_child_rebuilds_a_ring_left_mid_push() {
    let ring = Box::new(TransferCache::new());
    assert!(ring.push(token(1)));
    assert!(ring.push(token(2)));
    // A push that took position 2 and never published it.
    ring.enqueue_pos.0.fetch_add(1, Ordering::Relaxed);
    for i in 4..=SLOTS {
        assert!(ring.push(token(i)));
    }
    assert_eq!(ring.pop(), Some(token(1)));
    assert_eq!(ring.pop(), Some(token(2)));
    assert_eq!(ring.pop(), None, "stuck at the unpublished slot");
    assert!(
        ring.push(token(1000)),
        "the two popped slots are free again"
    );
    assert!(ring.push(token(1001)));
    assert!(!ring.push(token(1002)), "and then it is full for ever");
    // SAFETY: no other thread uses this ring.
    unsafe { ring.rebuild_after_fork() };
    let mut out = Vec::new();
    while let Some(h) = ring.pop() {
        out.push(h as usize / 16);
    }
    let want: Vec<usize> = (4..=SLOTS).chain([1000, 1001]).collect();
    assert_eq!(out, want);
    assert!(
        ring.push(token(7)) && ring.pop() == Some(token(7)),
        "usable again"
    );
}
