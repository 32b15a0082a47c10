//! Small building blocks with no dependencies: bit tricks, the intrusive
//! free-list link, and text formatting into a fixed buffer.
//!
//! Owns: nothing global. Must never: allocate, call libc, or panic on any
//! input (formatting truncates instead of failing).

pub mod fmt;

/// Rounds `n` up to a multiple of `align` (a power of two). Wraps on overflow;
/// callers check sizes against `api::MAX_REQUEST` first.
#[inline(always)]
pub const fn round_up(n: usize, align: usize) -> usize {
    (n.wrapping_add(align - 1)) & !(align - 1)
}

/// Ceiling division for page and object counts.
#[inline(always)]
pub const fn div_ceil(n: usize, d: usize) -> usize {
    n.div_ceil(d)
}

/// A free object's first word: the link to the next free object of the same
/// size class. Objects are at least 16 bytes, so the link always fits.
#[repr(C)]
pub struct FreeObject {
    pub next: *mut FreeObject,
}

/// Walks `n - 1` links from `head` and returns the last object of the chain.
///
/// # Safety
/// `head` must start a chain of at least `n >= 1` valid free objects.
#[inline]
pub unsafe fn chain_tail(head: *mut FreeObject, n: usize) -> *mut FreeObject {
    let mut p = head;
    for _ in 1..n {
        // SAFETY: the caller guarantees at least `n` linked objects.
        p = unsafe { (*p).next };
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_up_works() {
        assert_eq!(round_up(0, 16), 0);
        assert_eq!(round_up(1, 16), 16);
        assert_eq!(round_up(16, 16), 16);
        assert_eq!(round_up(17, 8192), 8192);
        assert_eq!(div_ceil(8193, 8192), 2);
    }

    #[test]
    fn chain_tail_walks_links() {
        let mut objs: [FreeObject; 4] = core::array::from_fn(|_| FreeObject {
            next: core::ptr::null_mut(),
        });
        let base = objs.as_mut_ptr();
        for i in 0..3 {
            // SAFETY: indices are within the 4-element array.
            unsafe { (*base.add(i)).next = base.add(i + 1) };
        }
        // SAFETY: the chain built above has 4 objects.
        assert_eq!(unsafe { chain_tail(base, 4) }, unsafe { base.add(3) });
        // SAFETY: as above.
        assert_eq!(unsafe { chain_tail(base, 1) }, base);
    }
}
