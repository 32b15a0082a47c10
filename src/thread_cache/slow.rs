//! The slow paths of small objects: a list ran empty (refill from the
//! central list), a list is full (flush to it), the countdown ran out, or
//! the thread has no cache yet. Everything here is `#[cold]` or reached
//! only from cold code; the lists change only through `FreeList`'s methods
//! and their limits only through `sizing`.
//!
//! Must never: run on the fast path, or hold a central lock while calling
//! into anything that could take another one.

use super::registry::current_or_create;
use super::sampling::{
    alloc_guarded, alloc_large, alloc_sampled, countdown_expired, free_guarded, free_large,
};
use super::sizing::{self, central};
use super::{Countdown, ThreadCache, LIST_STRIDE, MAX_LEN};
use crate::central::{self, check, CENTRAL};
use crate::cpu_cache;
use crate::diag;
use crate::free_object::{link_key, set_link, BadLink, FreeObject, END};
use crate::guard;
use crate::pagemap::PAGEMAP;
use crate::sampler;
use crate::size_class::{CLASSES, MAX_SMALL};

/// `countdown`: whether the fast path already took `size` off the
/// countdown, and whether that ran it out.
#[cold]
#[inline(never)]
pub(super) fn malloc_slow(size: usize, offset: usize, countdown: Countdown) -> *mut u8 {
    // Large and zero-byte requests reach here through the always-empty list 0.
    if offset == 0 && size > MAX_SMALL {
        return alloc_large(size, 16);
    }
    let class = (offset / LIST_STRIDE).max(1);
    let tc = current_or_create();
    if let Some(tc) = tc {
        let expired = match countdown {
            Countdown::Expired => true,
            Countdown::Charged => false,
            // SAFETY: this thread's own live cache.
            Countdown::Uncharged => unsafe { ThreadCache::charge(tc, size) },
        };
        // SAFETY: as above.
        if expired {
            // SAFETY: as above.
            match countdown_expired(unsafe { &*tc }) {
                // A sampled object gets a span of its own, marked sampled,
                // so the ordinary free path never looks anything up.
                sampler::Event::Profile => return alloc_sampled(size, 16),
                sampler::Event::Guard => {
                    let p = alloc_guarded(size);
                    if !p.is_null() {
                        return p;
                    }
                }
                sampler::Event::None => {}
            }
        }
    }
    if check::enabled() {
        return malloc_checked(size, 16);
    }
    let Some(tc) = tc else {
        return central_alloc_one(class);
    };
    // SAFETY: a live cache owned by this thread.
    let t = unsafe { &*tc };
    let list = &t.lists[class];
    let mut head = list.head.load(core::sync::atomic::Ordering::Relaxed);
    if head as usize & 15 != 0 {
        if head != END {
            // A link popped earlier decoded to garbage.
            diag::corrupt_free_list(
                class,
                BadLink {
                    at: 0,
                    value: head as usize,
                },
            );
        }
        if starved_list(t, class) {
            let one = cpu_cache::pop_one(class, t.key);
            if let Some(obj) = one.or_else(|| cpu_cache::pop(class, 1, t.key).map(|c| c.0)) {
                // SAFETY: owner-only state.
                unsafe { t.cold() }.sizing.starved_objects += 1;
                return obj as *mut u8;
            }
        }
        head = refill(t, class);
        if head == END {
            return central_alloc_one(class);
        }
    }
    // SAFETY: `head` is this list's head, a free object.
    unsafe { list.pop(head, t.key) }
}

/// Checked mode's `malloc` (and aligned allocation) for `size` bytes: a
/// small object with room for the canary and trailer, one at a time from
/// the central list (see `central::check`), or a large one with a canary.
pub fn malloc_checked(size: usize, align: usize) -> *mut u8 {
    match check::class_for(size, align) {
        0 => alloc_large(size, align),
        class => check::alloc_small(class, size, align),
    }
}

/// Whether `class`'s list is at limit 0 in a thread that could not grow
/// one lately (`Sizing::starved`): its objects then come from and go to
/// this CPU's cache one at a time, skipping the growth attempt that would
/// fail again. With 1024 threads on 2 CPUs nearly every malloc and free
/// of most threads came this way (25 M of 26 M mallocs in many-threads).
fn starved_list(t: &ThreadCache, class: usize) -> bool {
    // SAFETY: owner-only state.
    t.lists[class].max_len() == 0 && unsafe { t.cold() }.sizing.starved && cpu_cache::active()
}

/// Fills an empty list from the central list; returns the new head.
fn refill(t: &ThreadCache, class: usize) -> *mut FreeObject {
    let k = &CLASSES[class];
    let list = &t.lists[class];
    // SAFETY: owner-only state.
    let sz = &mut unsafe { t.cold() }.sizing;
    sz.dry.insert(class);
    sz.refills += 1;
    sz.trip_bytes += k.size as usize;
    let turns = sizing::turning(sz, class, true);
    // Growing on underflow: this class is in demand.
    if list.max_len() < MAX_LEN {
        sizing::grow(t, class);
    }
    let want = sizing::refill_count(k.batch, list.max_len(), turns);
    let from_cpu = cpu_cache::pop(class, want, t.key);
    let (head, n) = match from_cpu.or_else(|| cpu_cache::pop_ones(class, want, t.key)) {
        Some(chain) => chain,
        None => match central::take_batch(class, want) {
            Some(batch) => (batch, want),
            None => central(t, class).remove_lines(want),
        },
    };
    if n == 0 {
        return END;
    }
    list.install(head, n);
    head
}

/// Moves the first `n` objects of a list to this CPU's cache, or if it has
/// no room (or there is none) to the central list.
pub(super) fn flush(t: &ThreadCache, class: usize, n: usize) {
    flush_via(t, class, n, true);
}

/// Moves the first `n` objects of a list to the central list, past the
/// CPU's cache and the transfer ring: memory given back (scavenge,
/// malloc_trim) should reach the spans, whose wholly free pages can then go
/// back to the OS.
pub(super) fn flush_to_central(t: &ThreadCache, class: usize, n: usize) {
    flush_via(t, class, n, false);
}

/// Detaches the first `n` objects of a list and hands them on: if
/// `cpu_first`, to this CPU's cache or else the class's transfer ring
/// (whole batches); otherwise, or if neither takes them, to the central
/// list's spans.
fn flush_via(t: &ThreadCache, class: usize, n: usize, cpu_first: bool) {
    let Some((head, k)) = t.lists[class].detach(class, n, t.key) else {
        return;
    };
    // SAFETY: the chain holds exactly `k` free objects of `class`; a
    // refused push leaves it ours.
    if cpu_first && unsafe { cpu_cache::push(class, head, k) } {
        return;
    }
    // SAFETY: as above.
    if cpu_first && unsafe { central::give_batch(class, head, k) } {
        return;
    }
    // SAFETY: as above.
    unsafe { central(t, class).insert_range(head, k) };
}

#[cold]
#[inline(never)]
pub(super) fn free_overflow(p: *mut u8, offset: usize) {
    if offset == 0 {
        return free_slow(p);
    }
    let class = offset / LIST_STRIDE;
    if check::enabled() {
        return check::free_small(class, p, "free");
    }
    let Some(tc) = current_or_create() else {
        return central_free_one(p, class);
    };
    // SAFETY: a live cache owned by this thread.
    let t = unsafe { &*tc };
    if starved_list(t, class) {
        // SAFETY: owner-only state.
        unsafe { t.cold() }.sizing.starved_objects += 1;
        return cpu_or_central_free_one(p, class);
    }
    if !sizing::make_room(t, class) {
        // An object most likely from another thread (the list's limit
        // could grow from 0 just now): back to its span. Or no room even
        // after flushing (the budget is spent, as with many more threads
        // than CPUs): this CPU's cache.
        if t.lists[class].max_len() > 0 {
            return central_free_one(p, class);
        }
        return cpu_or_central_free_one(p, class);
    }
    let obj = p as *mut FreeObject;
    // SAFETY: `p` is a free object of `class`, now a list member.
    unsafe { t.lists[class].push(obj, t.key) };
}

/// `free` of anything that is not a small object with a class in its entry:
/// large or sampled objects, and pointers that are not ours. Never null:
/// `free_miss` returns on it, and the fast path's own way here is for
/// misaligned or high pointers.
#[cold]
#[inline(never)]
pub(super) fn free_slow(p: *mut u8) {
    debug_assert!(!p.is_null(), "free(NULL) ends in free_miss");
    let entry = PAGEMAP.lookup_addr(p as usize);
    if entry.is_empty() {
        if guard::owns(p) {
            return free_guarded(p);
        }
        diag::invalid_pointer("free", p as usize, "not allocated by memx");
    }
    if entry.class() != 0 {
        diag::invalid_pointer("free", p as usize, "not the start of an object");
    }
    free_large(p);
}

fn central_alloc_one(class: usize) -> *mut u8 {
    let (head, n) = CENTRAL[class].lock().remove_range(1);
    if n == 0 {
        crate::sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    head as *mut u8
}

/// One object past the thread's cache: onto this CPU's cache, whose next
/// user on this CPU takes it (no other CPU's cache lines are involved), or
/// back to its span.
/// (A chain of one is not tried after a refused `push_one`: the block's cap
/// counts chains and single objects together, so it would be refused too.)
fn cpu_or_central_free_one(p: *mut u8, class: usize) {
    // SAFETY: `p` is a free object of `class`, given up by the caller.
    if !unsafe { cpu_cache::push_one(class, p as *mut FreeObject, link_key()) } {
        central_free_one(p, class);
    }
}

pub(super) fn central_free_one(p: *mut u8, class: usize) {
    let obj = p as *mut FreeObject;
    // SAFETY: `p` is a free object of `class`; a chain of one.
    unsafe {
        set_link(obj, END, link_key());
        CENTRAL[class].lock().insert_range(obj, 1);
    }
}
