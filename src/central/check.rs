//! Checked mode (`MEMX_CHECK=1`): per-object checks for debugging.
//!
//! In checked mode thread caches never hold an object (their lists keep a
//! limit of 0), so both fast paths fail over to the slow path, which sends
//! every small object here, one at a time, under its class's central lock.
//! The fast paths themselves pay nothing for this mode.
//!
//! A small object of n requested bytes aligned to a (16 for malloc) takes
//! a slot of the class of h + n + 40, where h = max(64, a) is its header;
//! the program gets slot + h (so the slot's alignment carries over):
//!
//! ```text
//!   [0, h)              header: canary bytes, checked on free: underflow
//!   [h, h + n)          the program's bytes
//!   [h + n, slot - 8)   canary bytes (at least 32), checked on free: overflow
//!   [slot - 8, slot)    trailer: n | log2(h) << 56, xor the free-list key
//! ```
//!
//! A pointer whose header length (its distance from its slot's start)
//! differs from the trailer's is not an object: an invalid free.
//!
//! - Double free: a bitmap per span, one bit per object, set while the
//!   object is out. Freeing an object whose bit is clear aborts.
//! - Use after free: a freed slot is filled with `FREED` (byte 8 holds the
//!   old header's log2, so that a report names the old object) and waits
//!   in its class's quarantine, a FIFO of at most 64 objects and 1 MiB
//!   (`Quarantine`), before it goes back to its span: a write after free
//!   is found when it leaves the quarantine (the fill is checked), or, if
//!   it happens later, when the slot is handed out again (the fill and the
//!   free-list link then in its first word are checked). A dangling
//!   pointer does not alias the next object of its class at once.
//! - Objects with a span of their own (large and sampled ones) are
//!   `large::checked`'s: canaries before and after the object, guard pages
//!   around a large one and a quarantine once it is freed (faults are
//!   reported by its hook in `sys::fault`); a sampled object's failure
//!   also prints its allocation stack. Their double frees are caught by
//!   the always-on check in `large::free` (with `CANARY`, `first_not` and
//!   `last_not` from here).
//!
//! The mode is tested (`enabled`) once at each entry that behaves
//! differently, and nowhere else:
//! - `thread_cache::slow`: `malloc_slow` (after the sampling countdown) and
//!   `free_overflow` send small objects here (`alloc_small`, `free_small`);
//! - `large`: `alloc` and `free` go to `large::checked`, `usable_size`
//!   answers the request;
//! - `api`: `realloc` always moves, aligned allocation and
//!   `malloc_usable_size` of small objects come here (`usable_small`);
//! - `CentralFreeList::populate` gives each new span its bitmap.
//!
//! Owns: the span bitmaps (a pool per class) and the quarantines, under
//! the class's lock.
//! Must never: run unless checked mode is on; take the page heap lock while
//! holding a central lock other than through `release_to_span`/`populate`.

use super::{span_of_object, take_from_span, CentralFreeList, CENTRAL};
use crate::diag::{self, CheckFailure};
use crate::free_object::{link_key, FreeObject, END};
use crate::meta::META;
use crate::size_class::{class_for_aligned, class_of, CLASSES, NUM_CLASSES};
use crate::span::Span;

/// Bytes a checked object needs past its request: at least 32 canary bytes
/// (a write up to 32 bytes past the end lands in them, not in the next
/// slot) and the 8-byte trailer.
pub const EXTRA: usize = 40;
/// Canary bytes before an object (its header): a write up to 64 bytes
/// before it lands in them. An object aligned to more gets a header of its
/// alignment (a power of two: the trailer keeps its log2).
pub const HEADER: usize = 64;
/// The bytes after an object (canary).
pub const CANARY: u8 = 0xfd;
/// A freed object's bytes after its link.
pub const FREED: u8 = 0xdd;

/// Most objects a span holds (the 16-byte class in one 8 KiB page).
const MAX_OBJECTS: usize = 512;
const _: () = {
    let mut c = 1;
    while c < NUM_CLASSES {
        assert!(CLASSES[c].objects as usize <= MAX_OBJECTS);
        c += 1;
    }
};

/// One bit per object of a span: set while the object is out.
#[repr(C, align(16))]
pub struct Bits([u64; MAX_OBJECTS / 64]);

/// Whether checked mode is on. Read on slow paths only.
#[inline]
pub fn enabled() -> bool {
    crate::config::get().check
}

/// The first byte of `bytes` that is not `v`. Whole 64-byte chunks are
/// or-folded first (which the compiler vectorises), then 8-byte words;
/// only a word with a difference is looked into.
pub(crate) fn first_not(bytes: &[u8], v: u8) -> Option<usize> {
    let mut chunks = bytes.chunks_exact(64);
    let mut off = 0;
    for c in &mut chunks {
        if c.iter().fold(0u8, |acc, &b| acc | (b ^ v)) != 0 {
            return first_not_words(c, v).map(|i| off + i);
        }
        off += 64;
    }
    first_not_words(chunks.remainder(), v).map(|i| off + i)
}

/// The last byte of `bytes` that is not `v` (headers are short: a plain
/// scan from the end).
pub(crate) fn last_not(bytes: &[u8], v: u8) -> Option<usize> {
    bytes.iter().rposition(|&b| b != v)
}

fn first_not_words(bytes: &[u8], v: u8) -> Option<usize> {
    let pattern = u64::from_le_bytes([v; 8]);
    let mut words = bytes.chunks_exact(8);
    let mut off = 0;
    for w in &mut words {
        if let Some((word, _)) = w.split_first_chunk::<8>() {
            let diff = u64::from_le_bytes(*word) ^ pattern;
            if diff != 0 {
                return Some(off + (diff.trailing_zeros() / 8) as usize);
            }
        }
        off += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b != v)
        .map(|i| off + i)
}

impl CentralFreeList {
    /// A bitmap for a span this list is carving: from the class's pool,
    /// cleared. Null if the metadata arena is out of memory.
    pub(super) fn take_bits(&mut self) -> *mut Bits {
        let b = self.bits.take();
        if !b.is_null() {
            // SAFETY: a slot of the pool, exclusively ours.
            unsafe { b.write(Bits([0; MAX_OBJECTS / 64])) };
        }
        b
    }

    /// Gives a span's bitmap back when the span goes back to the heap.
    pub(super) fn give_bits(&mut self, span: &mut Span) {
        if !span.small.check_bits.is_null() {
            // SAFETY: taken from this pool by `take_bits`; the span, whose
            // objects are all back, no longer uses it.
            unsafe { self.bits.give(span.small.check_bits as *mut Bits) };
            span.small.check_bits = core::ptr::null_mut();
        }
    }

    /// One object for a request of `n` bytes behind a header of `head`
    /// bytes (`head + n + EXTRA` fits `class`), with its canaries and
    /// trailer written. Null if the OS refuses memory.
    pub fn checked_alloc(&mut self, n: usize, head: usize) -> *mut u8 {
        let class = self.class as usize;
        let size = CLASSES[class].size as usize;
        debug_assert!(head.is_power_of_two() && head >= HEADER);
        debug_assert!(head + n + EXTRA <= size);
        let key = link_key();
        let mut s = self.nonempty.first();
        if s.is_null() {
            s = self.populate();
            if s.is_null() {
                return core::ptr::null_mut();
            }
        }
        // SAFETY: a live Small span of this class on our list.
        let span = unsafe { &mut *s };
        let reused = span.small.freelist != END;
        // SAFETY: our span, under our lock; it is on the nonempty list, so
        // it has an object to give.
        let Some(obj) = (unsafe { take_from_span(span, class, key) }) else {
            diag::fatal(b"checked mode: a listed span had no free object");
        };
        self.free_in_spans -= 1;
        if super::is_dry(span, class) {
            // SAFETY: `s` is on our list.
            unsafe { self.nonempty.remove(s) };
            span.small.in_list = false;
        }
        let base = obj as *mut u8;
        // SAFETY: `obj` is a whole slot of `size` bytes of this span, out of
        // every list now and ours until returned.
        let slot = unsafe { core::slice::from_raw_parts_mut(base, size) };
        if reused {
            check_freed(slot, base as usize, class, "malloc", true);
        }
        let (word, bit) = bit_of(span, base, size);
        // SAFETY: every span this list carves in checked mode has a bitmap.
        let bits = unsafe { &mut (*(span.small.check_bits as *mut Bits)).0 };
        if bits[word] & bit != 0 {
            diag::fatal(b"checked mode: an object on a free list was marked allocated");
        }
        bits[word] |= bit;
        slot[..head].fill(CANARY);
        slot[head + n..size - 8].fill(CANARY);
        slot[size - 8..].copy_from_slice(&trailer(n, head).to_ne_bytes());
        // SAFETY: `head < size`: inside the slot.
        unsafe { base.add(head) }
    }

    /// Checks and frees the object at `p` of `class` (for `call`): aborts on
    /// a pointer that is not an object, a double free, or an overwritten
    /// canary.
    pub(crate) fn checked_free(&mut self, p: *mut u8, call: &str) {
        let live = self.checked_live(p, call);
        // SAFETY: the live object's slot, which the program gives back.
        let slot = unsafe { core::slice::from_raw_parts_mut(live.slot, live.size) };
        slot.fill(FREED);
        slot[8] = live.head.trailing_zeros() as u8;
        // SAFETY: `live.span` is the live Small span of the slot (checked).
        let span = unsafe { &mut *live.span };
        let (word, bit) = bit_of(span, live.slot, live.size);
        // SAFETY: checked spans have a bitmap.
        unsafe { (*(span.small.check_bits as *mut Bits)).0[word] &= !bit };
        let cap = Quarantine::capacity(live.size);
        if self.quarantine.len == cap {
            self.release_oldest(call);
        }
        if !self.quarantine.push(live.slot) {
            // No memory for the ring: back to its span now, unquarantined.
            // SAFETY: a free object of our class in its live span (still
            // counted out), our lock.
            unsafe { self.release_to_span(live.span, live.slot as *mut FreeObject, link_key()) };
        }
    }

    /// Sends the oldest quarantined object back to its span, after checking
    /// that nothing wrote to it since its free (for `call`).
    fn release_oldest(&mut self, call: &str) {
        let class = self.class as usize;
        let size = CLASSES[class].size as usize;
        let slot = self.quarantine.pop();
        // SAFETY: a freed slot of our class, ours while quarantined.
        let bytes = unsafe { core::slice::from_raw_parts(slot, size) };
        check_freed(bytes, slot as usize, class, call, false);
        let Some(s) = span_of_object(class, slot as *mut FreeObject) else {
            diag::fatal(b"checked mode: a quarantined object lost its span");
        };
        // SAFETY: a free object of `class` in its live span (its object
        // still counts as out), our lock.
        unsafe { self.release_to_span(s, slot as *mut FreeObject, link_key()) };
    }

    /// Bytes the program asked for at the live object `p` of `class`.
    pub fn checked_usable(&mut self, p: *mut u8, call: &str) -> usize {
        self.checked_live(p, call).n
    }

    /// Checks that `p` is a live checked object of `class` with its
    /// canaries and trailer intact, and describes it.
    fn checked_live(&mut self, p: *mut u8, call: &str) -> Live {
        let class = self.class as usize;
        let size = CLASSES[class].size as usize;
        let not_an_object = || -> ! {
            diag::invalid_pointer(call, p as usize, "not the start of an object");
        };
        let e = crate::pagemap::PAGEMAP.lookup_addr(p as usize);
        if e.span().is_null() || e.class() != class {
            not_an_object();
        }
        // SAFETY: a non-null entry points at a span struct (perhaps Dead,
        // whose fields are still readable metadata).
        let base = unsafe { (*e.span()).addr() };
        let index = (p as usize).wrapping_sub(base) / size;
        let slot_addr = base.wrapping_add(index * size);
        let head = p as usize - slot_addr;
        let Some(s) = span_of_object(class, slot_addr as *mut FreeObject) else {
            not_an_object();
        };
        if head < HEADER {
            not_an_object();
        }
        // SAFETY: a live Small span of our class, guarded by our lock.
        let span = unsafe { &mut *s };
        let fail =
            |what: &str, detail: &str, requested: Option<usize>, offset: Option<isize>| -> ! {
                diag::check_failed(&CheckFailure {
                    what,
                    call,
                    ptr: p as usize,
                    class,
                    slot: size,
                    requested,
                    detail,
                    offset,
                    stack: &[],
                })
            };
        // A free of a freed object is a double free; any other use of one
        // (realloc, malloc_usable_size) is a use after free.
        let freed = if call == "free" {
            "double free"
        } else {
            "use after free"
        };
        if span.small.check_bits.is_null() {
            fail(freed, "the object is not allocated", None, None);
        }
        let (word, bit) = bit_of(span, slot_addr as *mut u8, size);
        // SAFETY: checked spans have a bitmap, guarded by our lock.
        if unsafe { (*(span.small.check_bits as *mut Bits)).0[word] } & bit == 0 {
            fail(
                freed,
                "the object is not allocated (freed already)",
                None,
                None,
            );
        }
        // SAFETY: the slot of a live object, `size` bytes.
        let slot = unsafe { core::slice::from_raw_parts(slot_addr as *const u8, size) };
        let mut t = [0u8; 8];
        t.copy_from_slice(&slot[size - 8..]);
        let Some((n, stored_head)) = untrailer(usize::from_ne_bytes(t), size) else {
            fail(
                "heap overflow",
                "the size trailer after the object was overwritten",
                None,
                Some((size - 8 - head) as isize),
            );
        };
        if stored_head != head {
            not_an_object();
        }
        if let Some(off) = last_not(&slot[..head], CANARY) {
            fail(
                "heap underflow",
                "the canary before the object was overwritten",
                Some(n),
                Some(off as isize - head as isize),
            );
        }
        if let Some(off) = first_not(&slot[head + n..size - 8], CANARY) {
            fail(
                "heap overflow",
                "the canary after the object was overwritten",
                Some(n),
                Some((n + off) as isize),
            );
        }
        Live {
            span: s,
            slot: slot_addr as *mut u8,
            size,
            head,
            n,
        }
    }
}

/// Most freed objects a class keeps in quarantine.
const QUARANTINE_OBJECTS: usize = 64;
/// Most bytes of freed objects a class keeps in quarantine (at least one
/// object).
const QUARANTINE_BYTES: usize = 1 << 20;

/// A class's freed objects (their slots) not yet back in their spans,
/// oldest first: `ring[(head + i) % QUARANTINE_OBJECTS]` for i < len. Each
/// is filled with `FREED` (byte 8: its header's log2), its bit clear in its
/// span's bitmap (a free of it is a double free), and still counted out of
/// its span (so the span stays). Guarded by the class's lock.
///
/// The ring comes from the metadata arena at the first push: inline it made
/// every central list 528 bytes larger, and `CENTRAL` (initialised data, so
/// file-backed and faulted in whole) cost every process about 60 KiB of RSS
/// whether checked mode was on or not.
pub struct Quarantine {
    /// Null until the first push, then QUARANTINE_OBJECTS slots.
    ring: *mut *mut u8,
    head: usize,
    len: usize,
}

impl Quarantine {
    pub const fn new() -> Self {
        Quarantine {
            ring: core::ptr::null_mut(),
            head: 0,
            len: 0,
        }
    }

    /// Objects a class of `size`-byte slots keeps: len <= capacity.
    fn capacity(size: usize) -> usize {
        (QUARANTINE_BYTES / size).clamp(1, QUARANTINE_OBJECTS)
    }

    /// Queues `slot`; false (nothing queued) when the ring cannot be mapped.
    fn push(&mut self, slot: *mut u8) -> bool {
        debug_assert!(self.len < QUARANTINE_OBJECTS);
        if self.ring.is_null() {
            let bytes = QUARANTINE_OBJECTS * core::mem::size_of::<*mut u8>();
            self.ring = META.alloc(bytes, core::mem::align_of::<*mut u8>()) as *mut *mut u8;
            if self.ring.is_null() {
                return false;
            }
        }
        // SAFETY: the ring holds QUARANTINE_OBJECTS slots; the index is below.
        unsafe { *self.ring.add((self.head + self.len) % QUARANTINE_OBJECTS) = slot };
        self.len += 1;
        true
    }

    /// The oldest slot; the quarantine is not empty (so the ring exists).
    fn pop(&mut self) -> *mut u8 {
        debug_assert!(self.len > 0);
        // SAFETY: len > 0, so the ring was mapped; head < QUARANTINE_OBJECTS.
        let slot = unsafe { *self.ring.add(self.head) };
        self.head = (self.head + 1) % QUARANTINE_OBJECTS;
        self.len -= 1;
        slot
    }
}

impl Default for Quarantine {
    fn default() -> Self {
        Self::new()
    }
}

/// A live checked small object, as `checked_live` found it.
struct Live {
    span: *mut Span,
    slot: *mut u8,
    /// The slot's bytes (the class size).
    size: usize,
    /// Header bytes before the object: `object = slot + head`.
    head: usize,
    /// Bytes the program asked for.
    n: usize,
}

/// The trailer word of an object of `n` bytes behind `head` header bytes:
/// `n | log2(head) << 56`, xor the free-list key (so that a stray copy of
/// plain data does not pass for one).
fn trailer(n: usize, head: usize) -> usize {
    (n | (head.trailing_zeros() as usize) << 56) ^ link_key()
}

/// `(n, head)` from a trailer word of a `size`-byte slot, or None if the
/// word cannot be one (overwritten).
fn untrailer(word: usize, size: usize) -> Option<(usize, usize)> {
    let v = word ^ link_key();
    let (n, log) = (v & ((1 << 56) - 1), v >> 56);
    if !(6..=15).contains(&log) {
        return None;
    }
    let head = 1usize << log;
    (head + n + EXTRA <= size).then_some((n, head))
}

/// Checks a freed slot leaving the quarantine (`linked` false) or being
/// handed out again (true: its first word holds the free-list link,
/// checked by the list walk): byte 8 holds the log2 of the old object's
/// header, every other byte `FREED`. Aborts, naming `call`, the old object
/// and the offset of the first byte written after its free.
fn check_freed(slot: &[u8], base: usize, class: usize, call: &str, linked: bool) {
    let log = slot[8] as usize;
    let sane = (6..=15).contains(&log) && (1usize << log) < slot.len();
    let head = if sane { 1usize << log } else { HEADER };
    let first = if linked {
        None
    } else {
        first_not(&slot[..8], FREED)
    };
    let bad = if let Some(at) = first {
        Some(at)
    } else if sane {
        first_not(&slot[9..], FREED).map(|off| 9 + off)
    } else {
        Some(8)
    };
    let Some(at) = bad else { return };
    diag::check_failed(&CheckFailure {
        what: "use after free",
        call,
        ptr: base + head,
        class,
        slot: slot.len(),
        requested: None,
        detail: "the object was written after it was freed",
        offset: Some(at as isize - head as isize),
        stack: &[],
    })
}

/// The bitmap word and bit of object `p` in `span`.
fn bit_of(span: &Span, p: *mut u8, size: usize) -> (usize, u64) {
    let i = (p as usize - span.addr()) / size;
    (i / 64, 1 << (i % 64))
}

/// Header bytes before a checked object aligned to `align`.
pub fn header_for(align: usize) -> usize {
    align.max(HEADER)
}

/// The class a checked request of `size` bytes aligned to `align` takes
/// (room for the header, canary and trailer), or 0 if it needs a span of
/// its own.
pub fn class_for(size: usize, align: usize) -> usize {
    let need = size.saturating_add(EXTRA).saturating_add(header_for(align));
    if align <= 16 {
        class_of(need)
    } else {
        class_for_aligned(need, align)
    }
}

/// Checked `malloc` of a small request aligned to `align`: header, `n`
/// bytes and `EXTRA` from `class`.
pub fn alloc_small(class: usize, n: usize, align: usize) -> *mut u8 {
    let p = CENTRAL[class].lock().checked_alloc(n, header_for(align));
    if p.is_null() {
        crate::sys::set_errno(libc::ENOMEM);
    }
    p
}

/// Checked `free` of a small object.
pub fn free_small(class: usize, p: *mut u8, call: &str) {
    CENTRAL[class].lock().checked_free(p, call);
}

/// Bytes the program asked for at the live small object `p` of `class`
/// (aborts, naming `call`, if it is not one).
pub fn usable_small(class: usize, p: *mut u8, call: &str) -> usize {
    CENTRAL[class].lock().checked_usable(p, call)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_not_finds_the_first_other_byte() {
        let mut buf = [FREED; 300];
        assert_eq!(first_not(&buf, FREED), None);
        for at in [0, 1, 63, 64, 65, 130, 255, 256, 299] {
            buf[at] = 0;
            assert_eq!(first_not(&buf, FREED), Some(at), "at {at}");
            assert_eq!(first_not(&buf[..at], FREED), None);
            buf[at] = FREED;
        }
        assert_eq!(first_not(&[], CANARY), None);
    }

    #[test]
    fn last_not_finds_the_byte_nearest_the_end() {
        let mut buf = [CANARY; 64];
        assert_eq!(last_not(&buf, CANARY), None);
        buf[3] = 0;
        buf[40] = 0;
        assert_eq!(last_not(&buf, CANARY), Some(40));
    }

    #[test]
    fn the_trailer_keeps_the_request_and_header() {
        for (n, head, size) in [
            (0, 64, 112),
            (8, 64, 112),
            (100, 256, 512),
            (3072, 64, 3328),
        ] {
            assert_eq!(untrailer(trailer(n, head), size), Some((n, head)));
        }
        // Too big for the slot, or plain data: not a trailer.
        assert_eq!(untrailer(trailer(100, 64), 160), None);
        assert_eq!(untrailer(0xfdfd_fdfd_fdfd_fdfd, 4096), None);
    }

    #[test]
    fn the_quarantine_is_a_bounded_fifo() {
        assert_eq!(Quarantine::capacity(16), QUARANTINE_OBJECTS);
        assert_eq!(Quarantine::capacity(256 * 1024), 4);
        assert_eq!(Quarantine::capacity(4 << 20), 1);
        let mut q = Quarantine::new();
        let mut slots = [0u8; 3 * QUARANTINE_OBJECTS];
        let base = slots.as_mut_ptr();
        let p = |i: usize| base.wrapping_add(i);
        for i in 0..QUARANTINE_OBJECTS {
            assert!(q.push(p(i)));
        }
        // Wraps around the ring, oldest first.
        for i in 0..2 * QUARANTINE_OBJECTS {
            assert_eq!(q.pop(), p(i));
            assert!(q.push(p(QUARANTINE_OBJECTS + i)));
        }
        assert_eq!(q.len, QUARANTINE_OBJECTS);
    }
}
