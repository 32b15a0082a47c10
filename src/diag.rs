//! Diagnostics that end the process: one clear line on stderr, then abort.
//!
//! Owns: nothing. Must never: allocate (the heap may be the thing broken).

use crate::free_object::BadLink;
use crate::size_class::size_of;
use crate::sys;
use crate::util::fmt::FixedBuf;

/// An internal failure memx cannot recover from.
#[cold]
pub fn fatal(what: &[u8]) -> ! {
    let mut line = FixedBuf::<256>::new();
    line.str("memx: fatal: ").bytes(what).str("\n");
    sys::write_stderr(line.as_bytes());
    sys::abort()
}

/// A pointer handed to `call` that memx did not hand out, or no longer owns.
/// Named like glibc's `free(): invalid pointer`.
#[cold]
#[inline(never)]
pub fn invalid_pointer(call: &str, ptr: usize, why: &str) -> ! {
    let mut line = FixedBuf::<256>::new();
    line.str("memx: ")
        .str(call)
        .str("(): invalid pointer ")
        .hex(ptr as u64)
        .str(" (")
        .str(why)
        .str(")\n");
    sys::write_stderr(line.as_bytes());
    sys::abort()
}

/// A free-list link that decodes to something no list can hold: the heap
/// was written after an object's end or through a dangling pointer.
#[cold]
#[inline(never)]
pub fn corrupt_free_list(class: usize, bad: BadLink) -> ! {
    let mut line = FixedBuf::<256>::new();
    line.str("memx: corrupt free list (size class ")
        .usize(class)
        .str(", ")
        .usize(size_of(class))
        .str("-byte objects): link ")
        .hex(bad.value as u64);
    if bad.at != 0 {
        line.str(" in free object ").hex(bad.at as u64);
    }
    line.str(" (heap overflow or use after free)\n");
    sys::write_stderr(line.as_bytes());
    sys::abort()
}

/// The value of a checked free-list walk, or the abort for its bad link.
#[inline]
pub fn link_or_abort<T>(class: usize, r: Result<T, BadLink>) -> T {
    match r {
        Ok(v) => v,
        Err(bad) => corrupt_free_list(class, bad),
    }
}

/// What checked mode (`MEMX_CHECK=1`) found wrong with one object.
pub struct CheckFailure<'a> {
    /// "double free", "heap overflow", "heap underflow", "use after free".
    pub what: &'a str,
    /// The call that found it: "free", "malloc", "realloc", ...
    pub call: &'a str,
    pub ptr: usize,
    /// Size class (0: an object with a span of its own, large or sampled).
    pub class: usize,
    /// Bytes of the object's slot (class size, or span bytes).
    pub slot: usize,
    /// Bytes the program asked for, when known.
    pub requested: Option<usize>,
    pub detail: &'a str,
    /// Offset from `ptr` of the first bad byte (negative: before the
    /// object), when there is one.
    pub offset: Option<isize>,
    /// The allocation stack, when the object was sampled by the profiler.
    pub stack: &'a [usize],
}

/// Reports a checked-mode failure: one line (and a second with the
/// allocation stack of a sampled object), then abort.
#[cold]
#[inline(never)]
pub fn check_failed(f: &CheckFailure) -> ! {
    let mut line = FixedBuf::<1024>::new();
    line.str("memx: ")
        .str(f.what)
        .str(" detected in ")
        .str(f.call)
        .str("(): object ");
    check_tail(&mut line, f, None);
    sys::abort()
}

/// Reports a checked-mode failure found by a fault at `addr` (instruction
/// `pc`; `f.call` names the signal) in the same shape as `check_failed`,
/// without ending the process: the fault handler does that.
#[cold]
#[inline(never)]
pub fn fault_found(f: &CheckFailure, addr: usize, pc: usize) {
    let mut line = FixedBuf::<1024>::new();
    line.str("memx: ")
        .str(f.what)
        .str(" detected by ")
        .str(f.call)
        .str(" at instruction ")
        .hex(pc as u64)
        .str(": object ");
    check_tail(&mut line, f, Some(addr));
}

/// The object, the detail and the stack of a report; writes it all.
fn check_tail(line: &mut FixedBuf<1024>, f: &CheckFailure, addr: Option<usize>) {
    line.hex(f.ptr as u64)
        .str(" (size class ")
        .usize(f.class)
        .str(", ")
        .usize(f.slot)
        .str(if f.class == 0 {
            "-byte span"
        } else {
            "-byte objects"
        });
    if let Some(n) = f.requested {
        line.str(", ").usize(n).str(" bytes requested");
    }
    line.str("): ").str(f.detail);
    if let Some(off) = f.offset {
        line.str(" at offset ").i64(off as i64);
    }
    if let Some(a) = addr {
        line.str(" (address ").hex(a as u64).str(")");
    }
    line.str("\n");
    if !f.stack.is_empty() {
        line.str("memx: allocated at");
        for &pc in f.stack {
            line.str(" ").hex(pc as u64);
        }
        line.str("\n");
    }
    sys::write_stderr(line.as_bytes());
}
