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

/// Walks a null-terminated chain from `head` (non-null) for at most `n >= 1`
/// objects; returns the last one reached and how many that is (fewer than
/// `n` if the chain ends first).
///
/// # Safety
/// `head` must start a null-terminated chain of valid free objects.
#[inline]
pub unsafe fn chain_prefix(head: *mut FreeObject, n: usize) -> (*mut FreeObject, usize) {
    let mut p = head;
    let mut k = 1;
    while k < n {
        // SAFETY: `p` is a chain member (caller), so it holds a link.
        let next = unsafe { (*p).next };
        if next.is_null() {
            break;
        }
        p = next;
        k += 1;
    }
    (p, k)
}

/// Length of a null-terminated chain.
///
/// # Safety
/// `head` is null or starts a null-terminated chain of valid free objects.
pub unsafe fn chain_len(mut head: *mut FreeObject) -> usize {
    let mut n = 0;
    while !head.is_null() {
        n += 1;
        // SAFETY: chain members hold a link (caller).
        head = unsafe { (*head).next };
    }
    n
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
    fn chain_prefix_walks_links_and_stops_at_the_end() {
        let mut objs: [FreeObject; 4] = core::array::from_fn(|_| FreeObject {
            next: core::ptr::null_mut(),
        });
        let base = objs.as_mut_ptr();
        for i in 0..3 {
            // SAFETY: indices are within the 4-element array.
            unsafe { (*base.add(i)).next = base.add(i + 1) };
        }
        // SAFETY: the chain built above has 4 objects, null-terminated.
        unsafe {
            assert_eq!(chain_prefix(base, 4), (base.add(3), 4));
            assert_eq!(chain_prefix(base, 1), (base, 1));
            assert_eq!(chain_prefix(base, 9), (base.add(3), 4));
            assert_eq!(chain_len(base), 4);
            assert_eq!(chain_len(core::ptr::null_mut()), 0);
        }
    }
}
