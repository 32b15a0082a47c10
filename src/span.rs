//! `Span`: a run of pages and what it holds, and `SpanList`, an intrusive
//! doubly linked list of spans.
//!
//! A span is in exactly one state; the fields of one state are grouped in
//! that state's struct (`free`, `small`, `large`) and mean nothing in the
//! others:
//! - `Free`: in the page heap's free lists; its first and last pages map to it.
//!   `free.released` iff its pages were given back to the OS (they read as
//!   zero).
//! - `Taken`: off the free lists, about to become Small or Large (or to be
//!   absorbed by a neighbour); on no list. Not Free, so coalescing leaves it
//!   alone.
//! - `Small`: carved into objects of `class`; every page maps to it. Objects
//!   are either out (`small.allocated` counts them: in thread caches,
//!   transfer caches or the program), on `small.freelist`, or never used yet
//!   in `[small.bump, small.limit)`, so `allocated + |freelist| +
//!   (limit − bump) / size = objects per span`; `allocated == 0` iff the
//!   span can go back to the heap.
//! - `Large`: one object (a large or sampled allocation) starting at the
//!   span's first byte (`large.offset` bytes in, in checked mode); every
//!   page maps to it with class 0.
//! - `Dead`: the struct is in the span pool, describing nothing.
//!
//! Owns: no global state. Must never: be touched without the lock of the
//! structure that holds it (page heap for Free/Taken/Large, central list for
//! Small).

use crate::free_object::FreeObject;
use crate::profile::Sample;
use crate::size_class::PAGE_SHIFT;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum SpanState {
    Free,
    Taken,
    Small,
    Large,
    Dead,
}

/// What only a `Free` span means (also carried through `Taken`, where
/// `released` says whether the pages still read as zero).
#[derive(Default)]
pub struct FreeFields {
    /// The pages were given back to the OS and read as zero.
    pub released: bool,
    /// When the span was freed (ns), for release ordering.
    pub freed_at: u64,
}

/// What only a `Small` span means (set by the central list carving it).
pub struct SmallFields {
    /// On the central list's list of spans with free objects.
    pub in_list: bool,
    /// Objects currently out of the span.
    pub allocated: u32,
    /// Objects returned to the span (`END`-terminated, links encoded; see
    /// `free_object::FreeObject`).
    pub freelist: *mut FreeObject,
    /// The never-used tail `[bump, limit)`.
    pub bump: usize,
    pub limit: usize,
    /// Checked mode (`MEMX_CHECK=1`): the bitmap of objects out
    /// (`central::check`); null otherwise.
    pub check_bits: *mut u8,
}

impl SmallFields {
    pub const fn new() -> Self {
        SmallFields {
            in_list: false,
            allocated: 0,
            freelist: crate::free_object::END,
            bump: 0,
            limit: 0,
            check_bits: core::ptr::null_mut(),
        }
    }
}

impl Default for SmallFields {
    fn default() -> Self {
        Self::new()
    }
}

/// What only a `Large` span means (reset when a span becomes Large).
#[derive(Default)]
pub struct LargeFields {
    /// The object's bytes are known to be zero (fresh pages; for calloc).
    pub zeroed: bool,
    /// The profiler's record, iff the object is sampled.
    pub sample: Option<Sample>,
    /// Bytes the program asked for (offset + requested ≤ the span's bytes).
    pub requested: usize,
    /// Where the object starts: `object = addr() + offset`; 0 except in
    /// checked mode, whose objects sit between guard pages
    /// (`large::checked`).
    pub offset: usize,
    /// Checked mode: the span's first and last OS pages are guard pages
    /// (inaccessible), and the freed object goes to the quarantine.
    pub guarded: bool,
    /// Checked mode: the object was freed and its span waits, inaccessible,
    /// in the quarantine (`large::checked`); it is no live object.
    pub quarantined: bool,
}

impl LargeFields {
    pub const fn new() -> Self {
        LargeFields {
            zeroed: false,
            sample: None,
            requested: 0,
            offset: 0,
            guarded: false,
            quarantined: false,
        }
    }
}

#[repr(C)]
pub struct Span {
    /// Links on the one list the span is on (a free list, or a central
    /// list's nonempty list), null when on none.
    pub next: *mut Span,
    pub prev: *mut Span,
    /// First page number (address >> PAGE_SHIFT).
    pub start: usize,
    pub npages: usize,
    pub state: SpanState,
    /// Small spans: their size class; 0 otherwise.
    pub class: u8,
    pub free: FreeFields,
    pub small: SmallFields,
    pub large: LargeFields,
}

impl Span {
    pub const fn new(start: usize, npages: usize) -> Span {
        Span {
            next: core::ptr::null_mut(),
            prev: core::ptr::null_mut(),
            start,
            npages,
            state: SpanState::Free,
            class: 0,
            free: FreeFields {
                released: false,
                freed_at: 0,
            },
            small: SmallFields::new(),
            large: LargeFields::new(),
        }
    }

    #[inline]
    pub fn addr(&self) -> usize {
        self.start << PAGE_SHIFT
    }

    #[inline]
    pub fn bytes(&self) -> usize {
        self.npages << PAGE_SHIFT
    }

    /// One past the last page.
    #[inline]
    pub fn end_page(&self) -> usize {
        self.start + self.npages
    }

    #[inline]
    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.addr() && addr < self.addr() + self.bytes()
    }
}

/// A doubly linked list of spans through their `next`/`prev` fields.
pub struct SpanList {
    head: *mut Span,
    len: usize,
}

impl Default for SpanList {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanList {
    pub const fn new() -> Self {
        SpanList {
            head: core::ptr::null_mut(),
            len: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.head.is_null()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn first(&self) -> *mut Span {
        self.head
    }

    /// # Safety
    /// `s` is a live span on no list.
    pub unsafe fn push_front(&mut self, s: *mut Span) {
        // SAFETY: `s` is live and unlinked (caller); `head` is a live member.
        unsafe {
            (*s).prev = core::ptr::null_mut();
            (*s).next = self.head;
            if !self.head.is_null() {
                (*self.head).prev = s;
            }
        }
        self.head = s;
        self.len += 1;
    }

    /// # Safety
    /// `s` is a member of this list.
    pub unsafe fn remove(&mut self, s: *mut Span) {
        // SAFETY: `s` and its neighbours are live members of this list.
        unsafe {
            let (prev, next) = ((*s).prev, (*s).next);
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            (*s).next = core::ptr::null_mut();
            (*s).prev = core::ptr::null_mut();
        }
        self.len -= 1;
    }

    /// Removes and returns the first span, or null.
    pub fn pop_front(&mut self) -> *mut Span {
        let s = self.head;
        if !s.is_null() {
            // SAFETY: `s` is the head, hence a member.
            unsafe { self.remove(s) };
        }
        s
    }

    /// Iterates the members (the list must not change meanwhile).
    pub fn iter(&self) -> impl Iterator<Item = *mut Span> + '_ {
        let mut cur = self.head;
        core::iter::from_fn(move || {
            if cur.is_null() {
                return None;
            }
            let s = cur;
            // SAFETY: members are live while the list is borrowed.
            cur = unsafe { (*s).next };
            Some(s)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_push_remove_pop() {
        let mut spans: Vec<Span> = (0..4).map(|i| Span::new(i * 10, 1)).collect();
        let p: Vec<*mut Span> = spans.iter_mut().map(|s| s as *mut Span).collect();
        let mut l = SpanList::new();
        for &s in &p {
            // SAFETY: fresh spans on no list.
            unsafe { l.push_front(s) };
        }
        assert_eq!(l.len(), 4);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![p[3], p[2], p[1], p[0]]);
        // SAFETY: p[2] is a member.
        unsafe { l.remove(p[2]) };
        // SAFETY: p[0] is a member (the tail).
        unsafe { l.remove(p[0]) };
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![p[3], p[1]]);
        assert_eq!(l.pop_front(), p[3]);
        assert_eq!(l.pop_front(), p[1]);
        assert!(l.pop_front().is_null());
        assert!(l.is_empty());
    }

    #[test]
    fn geometry() {
        let s = Span::new(3, 2);
        assert_eq!(s.addr(), 3 << PAGE_SHIFT);
        assert_eq!(s.bytes(), 2 << PAGE_SHIFT);
        assert!(s.contains((4 << PAGE_SHIFT) + 100));
        assert!(!s.contains(5 << PAGE_SHIFT));
    }
}
