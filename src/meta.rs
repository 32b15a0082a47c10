//! The metadata arena: memory for the allocator's own structures (spans,
//! thread caches, page-map leaves), mapped from the OS apart from the heap it
//! describes, and never returned.
//!
//! Owns: the arena's bump region and its byte count. Must never: use the
//! global allocator or hand out memory from the user heap.

use crate::free_object::FreeObject;
use crate::sys;
use crate::sys::lock::Lock;
use crate::util::round_up;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};

const CHUNK: usize = 1 << 20;

struct Bump {
    cur: usize,
    end: usize,
}

pub struct MetaArena {
    lock: Lock,
    bump: UnsafeCell<Bump>,
    mapped: AtomicUsize,
}

// SAFETY: `bump` is only touched with `lock` held.
unsafe impl Sync for MetaArena {}

pub static META: MetaArena = MetaArena {
    lock: Lock::new(),
    bump: UnsafeCell::new(Bump { cur: 0, end: 0 }),
    mapped: AtomicUsize::new(0),
};

impl MetaArena {
    /// Zeroed memory for `size` bytes aligned to `align` (a power of two up
    /// to the OS page size), or null when the OS refuses.
    pub fn alloc(&self, size: usize, align: usize) -> *mut u8 {
        if size >= CHUNK / 4 {
            let bytes = round_up(size, sys::os_page_size());
            let p = sys::map(bytes);
            if !p.is_null() {
                self.mapped.fetch_add(bytes, Ordering::Relaxed);
            }
            return p;
        }
        let _g = self.lock.lock();
        // SAFETY: the lock is held, so this is the only reference to `bump`.
        let bump = unsafe { &mut *self.bump.get() };
        let mut start = round_up(bump.cur, align);
        if bump.cur == 0 || start + size > bump.end {
            let p = sys::map(CHUNK);
            if p.is_null() {
                return p;
            }
            self.mapped.fetch_add(CHUNK, Ordering::Relaxed);
            bump.cur = p as usize;
            bump.end = p as usize + CHUNK;
            start = round_up(bump.cur, align);
        }
        bump.cur = start + size;
        start as *mut u8
    }

    pub fn mapped_bytes(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Fork support: the arena lock in the global lock order.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }
}

/// A free list of recycled `T` slots carved from the arena. Not locked
/// itself: each pool lives inside a structure whose lock guards it.
pub struct Pool<T> {
    free: *mut FreeObject,
    _t: PhantomData<T>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Pool<T> {
    pub const fn new() -> Self {
        Pool {
            free: core::ptr::null_mut(),
            _t: PhantomData,
        }
    }

    /// A slot for one `T` (contents unspecified: the caller writes a fresh
    /// value), or null if the OS refuses memory.
    pub fn take(&mut self) -> *mut T {
        const { assert!(core::mem::size_of::<T>() >= core::mem::size_of::<FreeObject>()) };
        let p = self.free;
        if !p.is_null() {
            // SAFETY: every slot on the list was given back through `give`
            // and holds a link in its first word.
            self.free = unsafe { (*p).next };
            return p as *mut T;
        }
        META.alloc(
            core::mem::size_of::<T>(),
            core::mem::align_of::<T>().max(16),
        ) as *mut T
    }

    /// Returns a slot for reuse.
    ///
    /// # Safety
    /// `p` came from `take` on this pool and is no longer used.
    pub unsafe fn give(&mut self, p: *mut T) {
        let obj = p as *mut FreeObject;
        // SAFETY: the slot is at least one word and unused (caller's promise).
        unsafe { (*obj).next = self.free };
        self.free = obj;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arena_hands_out_aligned_zeroed_disjoint_memory() {
        let a = META.alloc(40, 16) as usize;
        let b = META.alloc(100, 64) as usize;
        assert!(a != 0 && b != 0);
        assert_eq!(a % 16, 0);
        assert_eq!(b % 64, 0);
        assert!(b >= a + 40 || a >= b + 100);
        // SAFETY: 100 bytes were allocated at b.
        let s = unsafe { core::slice::from_raw_parts(b as *const u8, 100) };
        assert!(s.iter().all(|&x| x == 0));
        let big = META.alloc(2 << 20, 16);
        assert!(!big.is_null());
    }

    #[test]
    fn pool_recycles() {
        let mut pool: Pool<[u64; 4]> = Pool::new();
        let a = pool.take();
        // SAFETY: `a` came from this pool.
        unsafe { pool.give(a) };
        assert_eq!(pool.take(), a);
        assert_ne!(pool.take(), a);
    }
}
