//! Central free lists on their own (no thread caches): ranges, spans
//! going back to the page heap. The transfer rings' tests are in
//! `transfer/tests.rs`.

use super::*;
use crate::size_class::{class_of, size_of};

fn chain_len(h: *mut FreeObject) -> usize {
    // SAFETY: chains from remove_range are END-terminated and encoded.
    unsafe { crate::free_object::chain_len(h, link_key()) }.unwrap()
}

#[test]
fn batches_round_trip_and_spans_return() {
    // A private list for class 40 (the global lists serve other tests).
    let class = 40;
    let k = CLASSES[class];
    let mut c = CentralFreeList::new(class);
    let mut got = Vec::new();
    for _ in 0..(k.objects as usize * 3 / k.batch as usize + 2) {
        let (h, n) = c.remove_range(k.batch as usize);
        assert_eq!(n, k.batch as usize);
        assert_eq!(chain_len(h), n);
        got.push((h, n));
    }
    // Objects are distinct and aligned.
    let mut addrs = Vec::new();
    for &(h, _) in &got {
        let mut p = h;
        while p != END {
            addrs.push(p as usize);
            // SAFETY: chain from remove_range.
            p = unsafe { crate::free_object::link(p, link_key()) };
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
        unsafe { c.insert_range(h, n) };
    }
    assert_eq!(c.spans, 0, "all spans went back to the page heap");
    assert_eq!(c.free_in_spans, 0);
}

#[test]
fn a_span_without_a_whole_object_left_leaves_the_list() {
    // A fork child can find a span half-updated by the interrupted
    // parent: here its never-used tail is shorter than an object.
    // remove_range used to spin on such a span for ever.
    let class = 5;
    let mut c = CentralFreeList::new(class);
    let (h, n) = c.remove_range(1);
    let s = c.nonempty.first();
    // SAFETY: a live span of this private list, under our ownership.
    unsafe { (*s).small.bump = (*s).small.limit - 8 };
    let (h2, n2) = c.remove_range(3);
    assert_eq!(n2, 3);
    // SAFETY: returning exactly what was taken.
    unsafe {
        c.insert_range(h, n);
        c.insert_range(h2, n2);
    }
}

/// Refills take never-used objects in whole cache lines: the chain ends on
/// a line boundary of the span's bump region, whatever `max` was, with at
/// most LINE_EXTRA objects more; `remove_range` takes exactly `max`.
#[test]
fn refills_take_never_used_objects_in_whole_lines() {
    let class = class_of(80);
    assert_eq!(CLASSES[class].size, 80);
    let mut c = CentralFreeList::new(class);
    let mut taken = Vec::new();
    for max in [1, 1, 3, 2, 5, 1] {
        let (h, n) = c.remove_lines(max);
        assert!(n >= max && n <= max + LINE_EXTRA, "max {max}: {n} objects");
        assert_eq!(chain_len(h), n);
        let s = c.nonempty.first();
        // SAFETY: a live span of this private list.
        assert_eq!(unsafe { (*s).small.bump } % 64, 0, "max {max}");
        taken.push((h, n));
    }
    let (h, n) = c.remove_range(1);
    assert_eq!(n, 1);
    taken.push((h, n));
    for (h, n) in taken {
        // SAFETY: returning what was taken.
        unsafe { c.insert_range(h, n) };
    }
    assert_eq!(c.spans, 0);
}

#[test]
fn every_central_list_knows_its_class() {
    for (c, list) in CENTRAL.iter().enumerate() {
        assert_eq!(list.lock().class as usize, c);
    }
}

#[test]
fn partial_ranges() {
    let class = 3;
    let mut c = CentralFreeList::new(class);
    let (h, n) = c.remove_range(5);
    assert_eq!(n, 5);
    // SAFETY: returning what was taken.
    unsafe { c.insert_range(h, n) };
    assert_eq!(c.spans, 0);
}

/// A chain whose members alternate between spans in runs of different
/// lengths (what a flush of objects from several spans looks like) goes
/// back run by run: every span's count ends right, and each span returns
/// to the page heap exactly when its last object does.
#[test]
fn chains_mixing_spans_go_back_in_runs() {
    let class = 30;
    let k = CLASSES[class];
    let key = link_key();
    let mut c = CentralFreeList::new(class);
    let per_span = k.objects as usize;
    // Three whole spans' worth, taken one object at a time.
    let mut objs: Vec<usize> = (0..3 * per_span)
        .map(|_| c.remove_range(1).0 as usize)
        .collect();
    assert_eq!(c.spans, 3);
    let span_of = |p: usize| span_of_object(class, p as *mut FreeObject).unwrap() as usize;
    let spans: Vec<usize> = {
        let mut v: Vec<usize> = objs.iter().map(|&p| span_of(p)).collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(spans.len(), 3);
    // Keep one object of the last span out, then interleave the rest:
    // runs of 1, 2, 3, ... objects taken from the spans in turn.
    let keep = objs.pop().unwrap();
    let mut by_span: Vec<Vec<usize>> = spans
        .iter()
        .map(|&s| objs.iter().copied().filter(|&p| span_of(p) == s).collect())
        .collect();
    let mut order = Vec::new();
    let mut run = 1;
    while by_span.iter().any(|v| !v.is_empty()) {
        for v in by_span.iter_mut() {
            let take = run.min(v.len());
            order.extend(v.drain(..take));
        }
        run += 1;
    }
    // Link them in that order (not a whole batch: it goes to the spans).
    let mut head = END;
    for &p in order.iter().rev() {
        // SAFETY: free objects of this private list, linked into a chain.
        unsafe { set_link(p as *mut FreeObject, head, key) };
        head = p as *mut FreeObject;
    }
    // SAFETY: `order.len()` free objects of `class`, linked from `head`.
    unsafe { c.insert_range(head, order.len()) };
    assert_eq!(c.spans, 1, "two spans wholly free, one holding `keep`");
    assert_eq!(c.free_in_spans, per_span - 1);
    // SAFETY: the last object out goes back; its span empties.
    unsafe {
        set_link(keep as *mut FreeObject, END, key);
        c.insert_range(keep as *mut FreeObject, 1);
    }
    assert_eq!(c.spans, 0);
    assert_eq!(c.free_in_spans, 0);
}
