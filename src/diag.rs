//! Diagnostics that end the process: one clear line on stderr, then abort.
//!
//! Owns: nothing. Must never: allocate (the heap may be the thing broken).

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
