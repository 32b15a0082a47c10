//! C semantics, written once: errno, overflow, alignment rules, and the
//! glibc behaviours programs rely on (`realloc(p, 0)` frees and returns
//! NULL, `free` keeps errno, `posix_memalign` leaves errno alone, ...).
//!
//! Owns: nothing. Must never: call the exported symbols (that would go
//! through the PLT and could reach another allocator); everything here calls
//! `thread_cache` and `large` directly.

use crate::central::{check, CENTRAL, TRANSFER};
use crate::diag;
use crate::large::{self, MAX_REQUEST};
use crate::page_heap::HEAP;
use crate::pagemap::PAGEMAP;
use crate::size_class::{class_for_aligned, class_of, size_of, CLASSES};
use crate::sys;
use crate::thread_cache;

#[inline(always)]
pub fn malloc(size: usize) -> *mut u8 {
    thread_cache::malloc(size)
}

/// Keeps errno, as glibc promises since 2.33: the only calls below that
/// may set it (madvise) save and restore it in `sys`.
#[inline(always)]
pub fn free(p: *mut u8) {
    thread_cache::free(p)
}

pub fn calloc(n: usize, size: usize) -> *mut u8 {
    let Some(total) = n.checked_mul(size) else {
        sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    let p = malloc(total);
    if p.is_null() {
        return p;
    }
    if class_of(total) == 0 && large::is_zeroed(p) {
        return p;
    }
    // SAFETY: `p` holds at least `total` writable bytes.
    unsafe { core::ptr::write_bytes(p, 0, total) };
    p
}

/// Usable size of a live object, aborting (naming `call`) on a pointer that
/// is not the start of one of ours.
pub fn usable_size_checked(p: *mut u8, call: &str) -> usize {
    let e = PAGEMAP.lookup_addr(p as usize);
    if e.is_empty() {
        if crate::guard::owns(p) {
            return crate::guard::usable_size(p, call);
        }
        diag::invalid_pointer(call, p as usize, "not allocated by memx");
    }
    let class = e.class();
    if class == 0 {
        return large::usable_size(p, call);
    }
    if check::enabled() {
        return check::usable_small(class, p, call);
    }
    // SAFETY: a non-empty entry with a class points at its live Small span
    // (the program holds an object in it, so it cannot be freed meanwhile).
    let base = unsafe { (*e.span()).addr() };
    if !CLASSES[class].is_object_offset(p as usize - base) {
        diag::invalid_pointer(call, p as usize, "not the start of an object");
    }
    size_of(class)
}

pub fn malloc_usable_size(p: *mut u8) -> usize {
    if p.is_null() {
        return 0;
    }
    usable_size_checked(p, "malloc_usable_size")
}

/// Growth hysteresis for `realloc`: a block that must move to grow by less
/// than 1/REALLOC_GROW_DIV of its usable size gets at least that much more.
/// Without it a buffer grown in small steps (exact-size appends, CPython's
/// x1.125 lists) moves at every class step (8 per doubling above 1 KiB, every
/// 16 B below) and each move copies the whole old block: realloc_grow copied
/// 2.7 GB where tcmalloc (which uses 1/4) copied 1.1 GB. 1/6 copies 1.5 GB
/// for +2.5% peak RSS there; 1/4 copied 1.1 GB for +5.4%.
const REALLOC_GROW_DIV: usize = 6;

/// A small block stays put when shrunk by less than 1/REALLOC_KEEP_DIV of its
/// usable size, even into a smaller class. This is what keeps a block that
/// the growth hysteresis over-allocated in place for the requests it was
/// made for: they land in a class below the block's, but above 3/4 of it
/// (1/6 more, rounded up to a class, is at most ~1.31 × the old size).
const REALLOC_KEEP_DIV: usize = 4;

/// # Safety
/// `p` is null or a live allocation of ours (checked cheaply; a bad pointer
/// aborts when detected).
pub unsafe fn realloc(p: *mut u8, size: usize) -> *mut u8 {
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // glibc: realloc(p, 0) frees p and returns NULL.
        free(p);
        return core::ptr::null_mut();
    }
    let old = usable_size_checked(p, "realloc");
    if check::enabled() {
        // Checked mode always moves: the canary and trailer follow the
        // request, and a stale pointer to the old block stays detectable.
        let q = malloc(size);
        if !q.is_null() {
            // SAFETY: both blocks are live and distinct; `min` fits both.
            unsafe { core::ptr::copy_nonoverlapping(p, q, old.min(size)) };
            free(p);
        }
        return q;
    }
    let class = class_of(size);
    let old_class = class_of(old);
    // Stay in place when the new size lands in the same class or shrinks
    // the block by less than a quarter, or for a large object that would
    // not shrink by more than half. `size <= old`: a large span (aligned or
    // sampled) below MAX_SMALL has a whole number of pages, which need not
    // be its class's size.
    if (class != 0
        && old <= crate::size_class::MAX_SMALL
        && size <= old
        && (class == old_class || size > old - old / REALLOC_KEEP_DIV))
        || (class == 0 && old > crate::size_class::MAX_SMALL && size <= old && size > old / 2)
    {
        return p;
    }
    if class == 0 && old > crate::size_class::MAX_SMALL && large::resize_in_place(p, size) {
        return p;
    }
    let floor = old + old / REALLOC_GROW_DIV;
    let q = if size > old && size < floor {
        // A small request stays small: past MAX_SMALL it would become a
        // large span of its own.
        let want = if size <= crate::size_class::MAX_SMALL {
            floor.min(crate::size_class::MAX_SMALL)
        } else {
            floor
        };
        malloc_at_least(want, size)
    } else {
        malloc(size)
    };
    if q.is_null() {
        return q;
    }
    // SAFETY: both blocks are live and distinct; `min(old, size)` fits both.
    unsafe { core::ptr::copy_nonoverlapping(p, q, old.min(size)) };
    free(p);
    q
}

/// `malloc(want)`, or `malloc(size)` (`size <= want`) if that fails; errno
/// is left as if only the call that decided the result had run.
fn malloc_at_least(want: usize, size: usize) -> *mut u8 {
    let saved = sys::errno();
    let q = malloc(want);
    if !q.is_null() {
        return q;
    }
    sys::set_errno(saved);
    malloc(size)
}

/// # Safety
/// As `realloc`.
pub unsafe fn reallocarray(p: *mut u8, n: usize, size: usize) -> *mut u8 {
    match n.checked_mul(size) {
        // SAFETY: the caller's promise about `p` carries over.
        Some(total) => unsafe { realloc(p, total) },
        None => {
            sys::set_errno(libc::ENOMEM);
            core::ptr::null_mut()
        }
    }
}

/// Aligned allocation for a power-of-two `align`.
fn alloc_aligned(align: usize, size: usize) -> *mut u8 {
    debug_assert!(align.is_power_of_two());
    if align <= 16 {
        return malloc(size);
    }
    if size > MAX_REQUEST || align > MAX_REQUEST / 2 {
        sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    }
    if check::enabled() {
        return thread_cache::malloc_checked(size, align);
    }
    let class = class_for_aligned(size, align);
    if class != 0 {
        return malloc(size_of(class));
    }
    thread_cache::alloc_large(size, align)
}

/// glibc's memalign: a non-power-of-two alignment is rounded up.
pub fn memalign(align: usize, size: usize) -> *mut u8 {
    let align = if align.is_power_of_two() {
        align
    } else {
        match align.checked_next_power_of_two() {
            Some(a) => a,
            None => {
                sys::set_errno(libc::EINVAL);
                return core::ptr::null_mut();
            }
        }
    };
    alloc_aligned(align, size)
}

/// C11 aligned_alloc as glibc >= 2.38: the alignment must be a power of two.
pub fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
    if !align.is_power_of_two() {
        sys::set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    alloc_aligned(align, size)
}

/// POSIX: EINVAL unless `align` is a power of two multiple of
/// `sizeof(void *)`; ENOMEM when out of memory; errno is left untouched.
///
/// # Safety
/// `out` is valid for writing a pointer.
pub unsafe fn posix_memalign(out: *mut *mut u8, align: usize, size: usize) -> i32 {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<usize>()) {
        return libc::EINVAL;
    }
    let saved = sys::errno();
    let p = alloc_aligned(align, size);
    sys::set_errno(saved);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller passes a valid out-pointer (POSIX contract).
    unsafe { *out = p };
    0
}

pub fn valloc(size: usize) -> *mut u8 {
    alloc_aligned(sys::os_page_size(), size)
}

pub fn pvalloc(size: usize) -> *mut u8 {
    let page = sys::os_page_size();
    let Some(rounded) = size.max(1).checked_add(page - 1) else {
        sys::set_errno(libc::ENOMEM);
        return core::ptr::null_mut();
    };
    alloc_aligned(page, rounded & !(page - 1))
}

/// Returns free memory to the OS: this thread's cache, the transfer caches,
/// then every free page. 1 if any memory was released.
pub fn malloc_trim(_pad: usize) -> i32 {
    thread_cache::flush_current();
    for (central, ring) in CENTRAL.iter().zip(TRANSFER.iter()).skip(1) {
        central.lock().drain_transfer(ring);
    }
    let released = HEAP.lock().release_all();
    (released > 0) as i32
}

/// glibc's mallopt parameters. memx accepts them (returns 1) and keeps its
/// own policy: its caches and release rate are set through MEMX_* instead.
pub fn mallopt(param: i32, _value: i32) -> i32 {
    const M_MXFAST: i32 = 1;
    const M_ARENA_MAX: i32 = -8;
    (M_ARENA_MAX..=M_MXFAST).contains(&param) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_grown_in_small_steps_moves_rarely() {
        let mut n = 1000;
        let mut p = malloc(n);
        // SAFETY: `p` holds `n` bytes.
        unsafe { core::ptr::write_bytes(p, 7, n) };
        let mut moves = 0;
        while n < 200_000 {
            n += 64;
            // SAFETY: `p` is live and ours.
            let q = unsafe { realloc(p, n) };
            assert!(!q.is_null());
            if q != p {
                moves += 1;
            }
            // SAFETY: the first 1000 bytes were written and carried over.
            assert!(unsafe { core::slice::from_raw_parts(q, 1000) }
                .iter()
                .all(|&b| b == 7));
            p = q;
        }
        // Each move grows by at least 1/REALLOC_GROW_DIV: at most
        // log(200) / log(7/6) = 34 moves (moving at every size class, as
        // before the floor, took about 60).
        assert!(moves <= 35, "{moves} moves");
        free(p);
    }

    #[test]
    fn a_small_block_shrunk_by_less_than_a_quarter_stays() {
        for size in [100, 1000, 5000, 100_000] {
            let p = malloc(size);
            let old = malloc_usable_size(p);
            // SAFETY: `p` is live and ours.
            let q = unsafe { realloc(p, old - old / REALLOC_KEEP_DIV + 1) };
            assert_eq!(q, p, "size {size}");
            // SAFETY: as above; a shrink to a tenth moves to a smaller class.
            let r = unsafe { realloc(q, old / 10) };
            assert_ne!(r, q, "size {size}");
            free(r);
        }
    }
}
