//! Free objects and the links between them: every free list of the heap
//! (thread caches, transfer caches, spans) is a chain of `FreeObject`s.
//! Hardening lives here, in one place: a link is stored xor the process's
//! random key (`link_key`), a decoded link must be END or an aligned user
//! address (`is_valid_link`), and the chain walks check each link they
//! follow (`BadLink` names the first bad one; `diag` aborts on it).
//!
//! Owns: the key. Must never: allocate, or read or write a heap object's
//! link other than through these helpers.

use core::sync::atomic::{AtomicUsize, Ordering};

/// A free object's first word: the link to the next free object of the same
/// size class. Objects are at least 16 bytes, so the link always fits.
///
/// Heap free lists (thread caches, central lists, transfer caches) never
/// touch `next` directly: a link is stored encoded (`link`/`set_link`), so a
/// heap overflow or a write through a dangling pointer cannot plant a chosen
/// pointer in a list without knowing the process's random key. Decoding
/// garbage gives a random word, which is 15 times in 16 not 16-aligned and
/// caught by `is_valid_link` (or the malloc fast path's alignment test).
/// The metadata arena's pools (not user memory) use `next` plainly.
#[repr(C)]
pub struct FreeObject {
    pub next: *mut FreeObject,
}

/// The end of every chain, and the head of an empty list. Not 16-aligned,
/// so the malloc fast path's one test `head & 15 != 0` catches both an
/// empty list and a corrupt (misaligned) link; never dereferenceable.
pub const END: *mut FreeObject = usize::MAX as *mut FreeObject;

/// Bits no object address has: above the 48-bit user address space, or
/// below 16-byte alignment.
const BAD_LINK_BITS: usize = !((1usize << 48) - 1) | 15;

/// Whether a decoded link can be what a list holds: `END`, or a non-null,
/// 16-aligned user-space address.
#[inline(always)]
pub fn is_valid_link(p: *mut FreeObject) -> bool {
    p == END || (p as usize & BAD_LINK_BITS == 0 && !p.is_null())
}

/// A link word as stored: the next pointer xor the key (see `FreeObject`).
#[inline(always)]
pub fn encode_link(next: *mut FreeObject, key: usize) -> usize {
    next as usize ^ key
}

/// Reads `obj`'s link, decoded with `key`, unchecked (the malloc fast path,
/// whose next pop tests it).
///
/// # Safety
/// `obj` is a free object (it holds a link word).
#[inline(always)]
pub unsafe fn link(obj: *mut FreeObject, key: usize) -> *mut FreeObject {
    // SAFETY: `obj` holds a link word (caller).
    (unsafe { (*obj).next } as usize ^ key) as *mut FreeObject
}

/// Stores `next` as `obj`'s link, encoded with `key`.
///
/// # Safety
/// `obj` is a free object the caller owns (its first word is ours).
#[inline(always)]
pub unsafe fn set_link(obj: *mut FreeObject, next: *mut FreeObject, key: usize) {
    // SAFETY: `obj` is ours to write (caller).
    unsafe { (*obj).next = encode_link(next, key) as *mut FreeObject };
}

/// A link that failed `is_valid_link`: the object holding it (or null for
/// a list head) and the decoded value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadLink {
    pub at: usize,
    pub value: usize,
}

/// Reads and checks `obj`'s link.
///
/// # Safety
/// As `link`.
#[inline]
pub unsafe fn link_checked(obj: *mut FreeObject, key: usize) -> Result<*mut FreeObject, BadLink> {
    // SAFETY: as `link` (caller).
    checked(obj, unsafe { link(obj, key) })
}

/// `next`, a link read from `at`, if it passes `is_valid_link`.
#[inline]
fn checked(at: *mut FreeObject, next: *mut FreeObject) -> Result<*mut FreeObject, BadLink> {
    if is_valid_link(next) {
        Ok(next)
    } else {
        Err(BadLink {
            at: at as usize,
            value: next as usize,
        })
    }
}

/// Walks an `END`-terminated chain from `head` (not `END`) for at most
/// `n >= 1` objects; returns the last one reached and how many that is
/// (fewer than `n` if the chain ends first). Every link is checked,
/// `head` included.
///
/// # Safety
/// `head` starts an `END`-terminated chain of free objects encoded with
/// `key` (a corrupt link is reported, not followed).
#[inline]
pub unsafe fn chain_prefix(
    head: *mut FreeObject,
    n: usize,
    key: usize,
) -> Result<(*mut FreeObject, usize), BadLink> {
    if head == END || !is_valid_link(head) {
        return Err(BadLink {
            at: 0,
            value: head as usize,
        });
    }
    let mut p = head;
    let mut k = 1;
    while k < n {
        // SAFETY: `p` is a checked chain member (caller), so it holds a link.
        let next = unsafe { link_checked(p, key) }?;
        if next == END {
            break;
        }
        p = next;
        k += 1;
    }
    Ok((p, k))
}

/// Length of an `END`-terminated chain (0 for `END`), checking every link.
///
/// # Safety
/// `head` is `END` or starts an `END`-terminated chain encoded with `key`.
pub unsafe fn chain_len(mut head: *mut FreeObject, key: usize) -> Result<usize, BadLink> {
    if !is_valid_link(head) {
        return Err(BadLink {
            at: 0,
            value: head as usize,
        });
    }
    let mut n = 0;
    while head != END {
        n += 1;
        // SAFETY: checked chain members hold a link (caller).
        head = unsafe { link_checked(head, key) }?;
    }
    Ok(n)
}

/// The key every free-list link is encoded with; 0 until first used.
static LINK_KEY: AtomicUsize = AtomicUsize::new(0);

/// The process's free-list key: random, drawn on first use (before any
/// link exists), never 0 in its low four bits (so a link overwritten with
/// zeros or with a plain pointer decodes misaligned), and never changed
/// after (a fork child keeps it, as it keeps the lists).
#[inline]
pub fn link_key() -> usize {
    let k = LINK_KEY.load(Ordering::Relaxed);
    if k != 0 {
        return k;
    }
    new_link_key()
}

#[cold]
#[inline(never)]
fn new_link_key() -> usize {
    let mut k = crate::sys::random_u64() as usize;
    if k & 15 == 0 {
        k |= 9;
    }
    match LINK_KEY.compare_exchange(0, k, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => k,
        Err(winner) => winner,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: usize = 0x5a5a_1234_9876_abcd;

    /// N 16-byte objects, 16-aligned as the heap's are.
    #[repr(C, align(16))]
    struct Objects<const N: usize>([[usize; 2]; N]);

    impl<const N: usize> Objects<N> {
        fn new() -> Self {
            Objects([[0; 2]; N])
        }
    }

    #[test]
    fn chain_prefix_walks_links_and_stops_at_the_end() {
        let mut objs = Objects::<4>::new();
        let base = objs.0.as_mut_ptr() as *mut FreeObject;
        // 16-byte objects: every second word.
        let obj = |i: usize| base.wrapping_add(2 * i);
        // SAFETY: indices are within the array; each object is ours.
        unsafe {
            for i in 0..3 {
                set_link(obj(i), obj(i + 1), KEY);
            }
            set_link(obj(3), END, KEY);
            assert_eq!(link(obj(0), KEY), obj(1));
            assert_ne!((*obj(0)).next, obj(1), "links are stored encoded");
            assert_eq!(chain_prefix(obj(0), 4, KEY), Ok((obj(3), 4)));
            assert_eq!(chain_prefix(obj(0), 1, KEY), Ok((obj(0), 1)));
            assert_eq!(chain_prefix(obj(0), 9, KEY), Ok((obj(3), 4)));
            assert_eq!(chain_len(obj(0), KEY), Ok(4));
            assert_eq!(chain_len(END, KEY), Ok(0));
        }
    }

    #[test]
    fn forged_link_is_detected() {
        let mut objs = Objects::<2>::new();
        let base = objs.0.as_mut_ptr() as *mut FreeObject;
        let (a, b) = (base, base.wrapping_add(2));
        // SAFETY: both objects are ours.
        unsafe {
            set_link(a, b, KEY);
            set_link(b, END, KEY);
            // An overflow writes a plain pointer (or zeros) over b's link:
            // decoded with the key, it is not a valid link.
            (*b).next = a;
            assert_eq!(
                chain_len(a, KEY),
                Err(BadLink {
                    at: b as usize,
                    value: a as usize ^ KEY
                })
            );
            (*b).next = core::ptr::null_mut();
            assert!(link_checked(b, KEY).is_err());
            assert!(chain_prefix(a, 5, KEY).is_err());
        }
        assert!(!is_valid_link(core::ptr::null_mut()));
        assert!(is_valid_link(END));
    }
}
