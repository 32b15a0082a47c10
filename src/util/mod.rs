//! Small building blocks with no dependencies: bit tricks, the intrusive
//! free-list link, and text formatting into a fixed buffer.
//!
//! Owns: nothing global. Must never: allocate, call libc, or panic on any
//! input (formatting truncates instead of failing).

pub mod fmt;

/// Rounds `n` up to a multiple of `align` (a power of two). Wraps on overflow;
/// callers check sizes against `large::MAX_REQUEST` first.
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

/// The second link of a batch's head object (objects are at least 16 bytes):
/// the next batch in a transfer cache, which is thus a stack of chains with
/// no array of its own. Encoded and checked like the first link.
///
/// # Safety
/// `head` heads a batch parked in a transfer cache (its second word holds
/// a batch link).
#[inline]
pub unsafe fn batch_link_checked(
    head: *mut FreeObject,
    key: usize,
) -> Result<*mut FreeObject, BadLink> {
    // SAFETY: the second word of a parked batch's head is a batch link.
    let next = (unsafe { *(head as *const usize).add(1) } ^ key) as *mut FreeObject;
    checked(head, next)
}

/// Stores `next` as the batch link of `head`.
///
/// # Safety
/// `head` heads a free batch the caller owns (its first 16 bytes are ours).
#[inline]
pub unsafe fn set_batch_link(head: *mut FreeObject, next: *mut FreeObject, key: usize) {
    // SAFETY: objects are at least 16 bytes and `head` is ours (caller).
    unsafe { *(head as *mut usize).add(1) = encode_link(next, key) };
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
