//! The page map: page number → span, for every page the heap has mapped.
//!
//! It answers `free(p)` and `malloc_usable_size(p)` with no header before
//! the object, and tells whether `p` is ours at all. A two-level radix tree
//! over 48-bit addresses: a static root of 2^17 slots (1 MiB, untouched pages
//! cost nothing) and leaves of 2^18 entries, each covering 2 GiB.
//!
//! An entry packs the span's address with its size class in the top byte
//! (user-space addresses fit in 47 bits), so the free fast path learns the
//! class from one load, without touching the span. Class 0 means "not an
//! ordinary small object" (large, sampled or free): the slow path decides.
//!
//! Owns: the tree. Reads are lock-free; writes happen with the page heap
//! lock held (or for pages of a span its writer owns exclusively).
//! Must never: free a leaf (a racing reader may hold it).

use crate::meta::META;
use crate::size_class::PAGE_SHIFT;
use crate::span::Span;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

const ADDR_BITS: usize = 48;
const LEAF_BITS: usize = 18;
const ROOT_BITS: usize = ADDR_BITS - PAGE_SHIFT - LEAF_BITS;
const ROOT_LEN: usize = 1 << ROOT_BITS;
const LEAF_LEN: usize = 1 << LEAF_BITS;
const CLASS_SHIFT: usize = 56;
/// Address bits no heap pointer has (the page map covers 48 bits).
pub const HIGH_BITS: usize = !((1usize << ADDR_BITS) - 1);

#[repr(C)]
struct Leaf {
    entries: [AtomicUsize; LEAF_LEN],
}

pub struct PageMap {
    root: [AtomicPtr<Leaf>; ROOT_LEN],
    leaves: AtomicUsize,
}

pub static PAGEMAP: PageMap = PageMap {
    root: [const { AtomicPtr::new(core::ptr::null_mut()) }; ROOT_LEN],
    leaves: AtomicUsize::new(0),
};

/// A page-map entry: a span pointer and its size class (0 if none).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Entry(pub usize);

impl Entry {
    pub const EMPTY: Entry = Entry(0);

    #[inline(always)]
    pub fn new(span: *mut Span, class: usize) -> Entry {
        debug_assert!((span as usize) >> CLASS_SHIFT == 0);
        Entry(span as usize | (class << CLASS_SHIFT))
    }

    #[inline(always)]
    pub fn class(self) -> usize {
        self.0 >> CLASS_SHIFT
    }

    /// 16 × class: the byte offset of the class's list in a thread cache
    /// (class << 56 is (16 × class) << 52, so this is one shift).
    #[inline(always)]
    pub fn list_offset(self) -> usize {
        self.0 >> (CLASS_SHIFT - 4)
    }

    #[inline(always)]
    pub fn span(self) -> *mut Span {
        (self.0 & ((1 << CLASS_SHIFT) - 1)) as *mut Span
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// EMPTY, out of line: an address in no leaf is not ours (the slow paths'
/// business), and marking it cold keeps the free fast path straight.
#[cold]
fn unmapped() -> Entry {
    Entry::EMPTY
}

impl PageMap {
    /// The entry for the page holding address `addr` (EMPTY if unmapped).
    #[inline(always)]
    pub fn lookup_addr(&self, addr: usize) -> Entry {
        if addr & HIGH_BITS != 0 {
            return Entry::EMPTY;
        }
        self.lookup_low_addr(addr)
    }

    /// The entry for `addr`, which the caller has checked to lie below
    /// 2^48 (`addr & HIGH_BITS == 0`): the free fast path, one compare less.
    #[inline(always)]
    pub fn lookup_low_addr(&self, addr: usize) -> Entry {
        debug_assert_eq!(addr & HIGH_BITS, 0);
        // SAFETY: addr < 2^48, so the root index is below ROOT_LEN.
        let leaf = unsafe { self.root.get_unchecked(addr >> (PAGE_SHIFT + LEAF_BITS)) }
            .load(Ordering::Acquire);
        if leaf.is_null() {
            return unmapped();
        }
        // SAFETY: leaves are never freed once published; the index is masked.
        Entry(unsafe {
            (*leaf).entries[(addr >> PAGE_SHIFT) & (LEAF_LEN - 1)].load(Ordering::Relaxed)
        })
    }

    /// The entry for page number `page` (EMPTY if unmapped).
    #[inline(always)]
    pub fn get(&self, page: usize) -> Entry {
        if page >> (ADDR_BITS - PAGE_SHIFT) != 0 {
            return Entry::EMPTY;
        }
        self.lookup_low_addr(page << PAGE_SHIFT)
    }

    /// Sets the entry of one page. `ensure` must have covered it.
    #[inline]
    pub fn set(&self, page: usize, e: Entry) {
        let leaf = self.root[page >> LEAF_BITS].load(Ordering::Acquire);
        debug_assert!(!leaf.is_null(), "page map leaf missing for page {page:#x}");
        // SAFETY: `ensure` published this leaf before the page was handed out.
        unsafe { (*leaf).entries[page & (LEAF_LEN - 1)].store(e.0, Ordering::Release) };
    }

    /// Sets the entries of `n` consecutive pages.
    pub fn set_range(&self, page: usize, n: usize, e: Entry) {
        for p in page..page + n {
            self.set(p, e);
        }
    }

    /// Makes sure leaves exist for pages `[page, page + n)`. Called with the
    /// page heap lock held (the only writer). False if metadata ran out.
    pub fn ensure(&self, page: usize, n: usize) -> bool {
        let first = page >> LEAF_BITS;
        let last = (page + n - 1) >> LEAF_BITS;
        if last >= ROOT_LEN {
            return false;
        }
        for i in first..=last {
            if self.root[i].load(Ordering::Acquire).is_null() {
                let leaf = META.alloc(core::mem::size_of::<Leaf>(), 4096) as *mut Leaf;
                if leaf.is_null() {
                    return false;
                }
                self.root[i].store(leaf, Ordering::Release);
                self.leaves.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    pub fn leaf_bytes(&self) -> usize {
        self.leaves.load(Ordering::Relaxed) * core::mem::size_of::<Leaf>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let span = 0x7f12_3456_7880usize as *mut Span;
        for class in [0usize, 1, 50, 96] {
            let e = Entry::new(span, class);
            assert_eq!(e.span(), span);
            assert_eq!(e.class(), class);
        }
    }

    #[test]
    fn set_and_get() {
        // A page range nobody else uses in tests: high in the address space.
        let page = (0x7e00_0000_0000usize) >> PAGE_SHIFT;
        assert_eq!(PAGEMAP.get(page), Entry::EMPTY);
        assert!(PAGEMAP.ensure(page, 3));
        let e = Entry::new(0x1000 as *mut Span, 7);
        PAGEMAP.set_range(page, 3, e);
        assert_eq!(PAGEMAP.get(page + 2), e);
        assert_eq!(PAGEMAP.lookup_addr((page << PAGE_SHIFT) + 5000), e);
        assert_eq!(PAGEMAP.get(page + 3), Entry::EMPTY);
        assert_eq!(PAGEMAP.lookup_addr(usize::MAX), Entry::EMPTY);
        assert_eq!(PAGEMAP.lookup_addr(1 << 50), Entry::EMPTY);
    }
}
