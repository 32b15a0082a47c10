//! Small building blocks with no dependencies: bit tricks, a fixed bit
//! set, and text formatting into a fixed buffer.
//!
//! Owns: nothing global. Must never: allocate, call libc, or panic on any
//! input (formatting truncates instead of failing).

pub mod bitset;
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
}
