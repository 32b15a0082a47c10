//! Checked mode's large objects (`MEMX_CHECK=1`): each sits in its span
//! between inaccessible guard pages, and a freed one waits, inaccessible,
//! in a bounded quarantine before its span goes back to the page heap.
//! Sampled objects of a small size (the profiler's, which take a span of
//! their own too) get the canaries but no guard pages and no quarantine:
//! three system calls and dropped pages per sampled object made a sampled
//! program ten times slower (fork_threaded's children under
//! memx_check_stress ran past their 10 s).
//!
//! ```text
//!   [guard page][canary     ][object: n bytes][canary < a][guard page]
//!    PROT_NONE   underflow                      overflow    PROT_NONE
//!   ^ span start                                                span end ^
//! ```
//!
//! The object (aligned to a = max(16, its alignment)) ends less than a
//! bytes before the guard page at the span's end: an overflow past those
//! canary bytes faults at the guilty instruction; a smaller one is found by
//! the canary check on free. An underflow is found by the canary before the
//! object (checked on free), or faults in the guard page at the span's
//! start when it runs that far. Guard pages are OS pages (`mprotect`); if
//! the kernel refuses one (out of mappings), the canaries still stand.
//!
//! Unguarded, the object starts max(16, a) bytes into its span, after
//! canary bytes, and `CANARY_PAD` canary bytes (fewer if the span ends
//! first) follow it.
//!
//! A freed object's span is made inaccessible as a whole (its pages
//! dropped: `sys::close_pages`) and queued, FIFO, until the queue holds
//! more than `QUARANTINE_BYTES` or `QUARANTINE_SPANS`; the oldest is then
//! made accessible again and goes back to the page heap. A read or write
//! after free faults while the object is queued. Its span stays `Large`
//! (marked `quarantined`), so a second free is named a double free.
//!
//! Faults in these pages are claimed by `on_fault`, a hook of `sys::fault`
//! (the handler guarded sampling uses too), and reported in one line by
//! `diag::fault_found`; the handler then lets the fault repeat under the
//! program's own action, so the process dies of the signal.
//!
//! Owns: the quarantine. It is guarded by the page heap lock: every
//! function that touches it takes `&mut PageHeap`, which only that lock
//! hands out. Must never: run unless checked mode is on; allocate; take a
//! lock other than the page heap's.

use crate::central::check;
use crate::diag::{self, CheckFailure};
use crate::page_heap::{PageHeap, HEAP};
use crate::pagemap::PAGEMAP;
use crate::size_class::PAGE_SIZE;
use crate::span::{Span, SpanState};
use crate::sys::{self, fault, lock::LockedGuard};
use crate::util::div_ceil;
use core::cell::UnsafeCell;

/// Most bytes of spans the quarantine holds (their pages are dropped: this
/// bounds address space, not memory).
const QUARANTINE_BYTES: usize = 64 << 20;
/// Most spans it holds.
const QUARANTINE_SPANS: usize = 1024;

/// A FIFO ring of quarantined spans: `ring[(head + i) % QUARANTINE_SPANS]`
/// for i < len, oldest first; `bytes` = the sum of their bytes.
struct Quarantine {
    ring: [*mut Span; QUARANTINE_SPANS],
    head: usize,
    len: usize,
    bytes: usize,
}

struct Shared(UnsafeCell<Quarantine>);
// SAFETY: only touched through `quarantine`, under the page heap lock.
unsafe impl Sync for Shared {}

static QUARANTINE: Shared = Shared(UnsafeCell::new(Quarantine {
    ring: [core::ptr::null_mut(); QUARANTINE_SPANS],
    head: 0,
    len: 0,
    bytes: 0,
}));

/// The quarantine; `_heap` proves the page heap lock is held.
fn quarantine(_heap: &mut PageHeap) -> &mut Quarantine {
    // SAFETY: the page heap lock is held for as long as the borrow of
    // `_heap`, and nothing else touches QUARANTINE.
    unsafe { &mut *QUARANTINE.0.get() }
}

/// Canary bytes after an unguarded object (fewer where its span ends).
const CANARY_PAD: usize = 16;

/// The canary ranges `(before, after)` of a checked object at `p` of `n`
/// bytes in the span `[start, end)`: between the guard pages and the
/// object, or (unguarded) from the span's start, and `CANARY_PAD` after.
fn canaries(
    guarded: bool,
    (start, end): (usize, usize),
    p: usize,
    n: usize,
) -> ((usize, usize), (usize, usize)) {
    if guarded {
        let os = sys::os_page_size();
        ((start + os, p), (p + n, end - os))
    } else {
        ((start, p), (p + n, end.min(p + n + CANARY_PAD)))
    }
}

/// A checked large object of `size` bytes aligned to `align` (bytes), in
/// a span of its own between guard pages (unless it is small: a sampled
/// object). Null with errno ENOMEM on overflow or exhaustion.
pub fn alloc(size: usize, align: usize) -> *mut u8 {
    // Sampled objects (the only ones here that a class could hold) go
    // unguarded.
    let guarded = check::class_for(size, align) == 0;
    if guarded {
        fault::install(on_fault);
    }
    let a = align.max(16);
    let os = sys::os_page_size();
    let extra = if guarded { 2 * os } else { CANARY_PAD };
    let need = size
        .checked_add(a)
        .and_then(|b| b.checked_add(extra))
        .filter(|&b| b <= super::MAX_REQUEST);
    let Some(need) = need else {
        sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    let mut heap = HEAP.lock();
    let s = heap.alloc_aligned(div_ceil(need, PAGE_SIZE), 1, 0);
    if s.is_null() {
        drop(heap);
        sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    // SAFETY: a fresh Large span, ours until its object's address is
    // returned; its fields are set under the heap lock.
    let (start, end, p) = unsafe {
        let span = &mut *s;
        let (start, end) = (span.addr(), span.addr() + span.bytes());
        let p = if guarded {
            (end - os - size) & !(a - 1)
        } else {
            start + a
        };
        span.large.requested = size;
        span.large.offset = p - start;
        span.large.guarded = guarded;
        (start, end, p)
    };
    drop(heap);
    let (before, after) = canaries(guarded, (start, end), p, size);
    // SAFETY: both canary ranges lie inside the fresh span, outside the
    // object and the guard pages.
    unsafe {
        core::ptr::write_bytes(before.0 as *mut u8, check::CANARY, before.1 - before.0);
        core::ptr::write_bytes(after.0 as *mut u8, check::CANARY, after.1 - after.0);
    }
    if guarded {
        sys::protect_none(start as *mut u8, os);
        sys::protect_none((end - os) as *mut u8, os);
    }
    p as *mut u8
}

/// Aborts if the canaries around the live object `p` (span `s`) were
/// overwritten, naming `call` and, if sampled, the allocation stack.
/// Returns the lock it was handed, which the report gives up first.
pub(super) fn check<'a>(
    heap: LockedGuard<'a, PageHeap>,
    s: *mut Span,
    p: *mut u8,
    call: &str,
) -> LockedGuard<'a, PageHeap> {
    // SAFETY: the live Large span of `p`, under the heap lock.
    let (start, end, n, guarded) = unsafe {
        let l = &(*s).large;
        (
            (*s).addr(),
            (*s).addr() + (*s).bytes(),
            l.requested,
            l.guarded,
        )
    };
    let p = p as usize;
    let (b, a) = canaries(guarded, (start, end), p, n);
    // SAFETY: both ranges lie inside the live span, outside the object and
    // its guard pages.
    let (before, after) = unsafe {
        (
            core::slice::from_raw_parts(b.0 as *const u8, b.1 - b.0),
            core::slice::from_raw_parts(a.0 as *const u8, a.1 - a.0),
        )
    };
    let (what, detail, offset) = if let Some(i) = check::last_not(before, check::CANARY) {
        (
            "heap underflow",
            "the canary before the object was overwritten",
            i as isize - before.len() as isize,
        )
    } else if let Some(i) = check::first_not(after, check::CANARY) {
        (
            "heap overflow",
            "the canary after the object was overwritten",
            (n + i) as isize,
        )
    } else {
        return heap;
    };
    let mut frames = [0usize; 24];
    // SAFETY: as above; the sample lives until the object's free, after us.
    let stack = unsafe { (*s).large.sample.as_ref() }.map_or(&[][..], |r| r.stack());
    let depth = stack.len().min(frames.len());
    frames[..depth].copy_from_slice(&stack[..depth]);
    drop(heap);
    diag::check_failed(&CheckFailure {
        what,
        call,
        ptr: p,
        class: 0,
        slot: end - start,
        requested: Some(n),
        detail,
        offset: Some(offset),
        stack: &frames[..depth],
    })
}

/// Puts the span `s` of a freed checked object in the quarantine,
/// inaccessible, and sends the oldest spans on to the heap while it holds
/// too much; an unguarded one goes to the heap at once.
///
/// # Safety
/// `s` is the live Large span of an object the program has just freed.
pub unsafe fn quarantine_span(heap: &mut PageHeap, s: *mut Span) {
    // SAFETY: live and ours (caller), under the heap lock.
    let span = unsafe { &mut *s };
    if !span.large.guarded {
        // SAFETY: no object lives in it any more.
        return unsafe { heap.free(s) };
    }
    span.large.quarantined = true;
    sys::close_pages(span.addr() as *mut u8, span.bytes());
    let bytes = span.bytes();
    let q = quarantine(heap);
    if q.len == QUARANTINE_SPANS {
        // SAFETY: the ring is full: evict makes room.
        unsafe { evict_oldest(heap) };
    }
    let q = quarantine(heap);
    q.ring[(q.head + q.len) % QUARANTINE_SPANS] = s;
    q.len += 1;
    q.bytes += bytes;
    while quarantine(heap).bytes > QUARANTINE_BYTES && quarantine(heap).len > 1 {
        // SAFETY: the queue is not empty.
        unsafe { evict_oldest(heap) };
    }
}

/// Makes the oldest quarantined span accessible and frees it to the heap.
///
/// # Safety
/// The quarantine is not empty.
unsafe fn evict_oldest(heap: &mut PageHeap) {
    let q = quarantine(heap);
    let s = q.ring[q.head];
    q.head = (q.head + 1) % QUARANTINE_SPANS;
    q.len -= 1;
    // SAFETY: a quarantined Large span: ours, under the heap lock.
    let span = unsafe { &mut *s };
    q.bytes -= span.bytes();
    if !sys::open_pages(span.addr() as *mut u8, span.bytes()) {
        // Its pages stay inaccessible: the span can never be handed out
        // again, so it stays out of the heap (a leak, in checked mode only).
        return;
    }
    span.large.quarantined = false;
    // SAFETY: no object lives in it any more; its pages are accessible.
    unsafe { heap.free(s) };
}

/// If `p` is the object of a quarantined span (freed already): its span's
/// bytes and the request. The heap lock (`_heap`) keeps the answer true
/// while it is held.
pub fn quarantined(_heap: &PageHeap, p: *mut u8) -> Option<(usize, usize)> {
    let s = PAGEMAP.lookup_addr(p as usize).span();
    // SAFETY: a non-null entry points at a span struct; the heap lock keeps
    // a Large one from changing while we look.
    let span = unsafe { s.as_ref()? };
    let q = span.state == SpanState::Large
        && span.large.quarantined
        && span.addr() + span.large.offset == p as usize;
    q.then_some((span.bytes(), span.large.requested))
}

/// The Large span holding `addr`, read without a lock (from the fault
/// handler, which must not take one; a span changing meanwhile can at
/// worst misname the object in a report of a process that is dying).
fn large_span_at(addr: usize) -> Option<&'static Span> {
    let s = PAGEMAP.lookup_addr(addr).span();
    // SAFETY: a non-null entry points at a span struct, perhaps Dead, whose
    // fields stay readable metadata.
    let span = unsafe { s.as_ref()? };
    (span.state == SpanState::Large).then_some(span)
}

/// `sys::fault`'s hook: a fault in a checked large object's guard page or
/// in a quarantined span is reported (true); any other is not ours.
pub fn on_fault(sig: i32, addr: usize, pc: usize) -> bool {
    if !check::enabled() {
        return false;
    }
    let Some(span) = large_span_at(addr) else {
        return false;
    };
    if !span.large.guarded {
        return false;
    }
    let os = sys::os_page_size();
    let object = |s: &Span| {
        let p = s.addr() + s.large.offset;
        (p, p + s.large.requested)
    };
    let (p, e) = object(span);
    let in_low_guard = addr < span.addr() + os;
    let in_high_guard = addr >= span.addr() + span.bytes() - os;
    let mut target = span;
    if in_low_guard && span.addr() > 0 {
        // Nearer the end of the object below (an overflow of it)?
        if let Some(prev) = large_span_at(span.addr() - 1).filter(|p| p.large.guarded) {
            if addr - object(prev).1 < p - addr {
                target = prev;
            }
        }
    }
    if !span.large.quarantined && !in_low_guard && !in_high_guard {
        return false;
    }
    let (p, e) = if core::ptr::eq(target, span) {
        (p, e)
    } else {
        object(target)
    };
    let (what, detail, offset) = if target.large.quarantined {
        (
            "use after free",
            "the freed object (quarantined) was accessed",
            addr as isize - p as isize,
        )
    } else if addr >= e {
        (
            "heap overflow",
            "the guard page after the object was accessed",
            (addr - p) as isize,
        )
    } else {
        (
            "heap underflow",
            "the guard page before the object was accessed",
            addr as isize - p as isize,
        )
    };
    let stack = if target.large.quarantined {
        &[][..]
    } else {
        target.large.sample.as_ref().map_or(&[][..], |r| r.stack())
    };
    diag::fault_found(
        &CheckFailure {
            what,
            call: if sig == libc::SIGBUS {
                "SIGBUS"
            } else {
                "SIGSEGV"
            },
            ptr: p,
            class: 0,
            slot: target.bytes(),
            requested: Some(target.large.requested),
            detail,
            offset: Some(offset),
            stack,
        },
        addr,
        pc,
    );
    true
}
