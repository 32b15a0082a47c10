//! `FixedBuf`: text built in a caller-provided stack buffer, for diagnostics
//! and reports written from inside malloc, where `format!` is forbidden.
//!
//! Must never: allocate or panic. Output that does not fit is truncated.

pub struct FixedBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> FixedBuf<N> {
    pub const fn new() -> Self {
        FixedBuf {
            buf: [0; N],
            len: 0,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&mut self, s: &[u8]) -> &mut Self {
        let n = s.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    pub fn u64(&mut self, mut v: u64) -> &mut Self {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(&tmp[i..])
    }

    pub fn usize(&mut self, v: usize) -> &mut Self {
        self.u64(v as u64)
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        if v < 0 {
            self.str("-");
        }
        self.u64(v.unsigned_abs())
    }

    /// Lower-case hex with a `0x` prefix, as `%p` prints pointers.
    pub fn hex(&mut self, v: u64) -> &mut Self {
        self.str("0x");
        self.hex_digits(v)
    }

    /// Lower-case hex without a prefix.
    pub fn hex_digits(&mut self, v: u64) -> &mut Self {
        let mut tmp = [0u8; 16];
        let mut i = tmp.len();
        let mut v = v;
        loop {
            i -= 1;
            tmp[i] = b"0123456789abcdef"[(v & 15) as usize];
            v >>= 4;
            if v == 0 {
                break;
            }
        }
        self.bytes(&tmp[i..])
    }

    /// Zero-pads a number to `width` digits (sequence numbers in names).
    pub fn u64_width_zero(&mut self, v: u64, width: usize) -> &mut Self {
        self.padded(v, width, "0")
    }

    pub const fn capacity() -> usize {
        N
    }

    /// Right-aligns a number in a field of `width` characters.
    pub fn u64_width(&mut self, v: u64, width: usize) -> &mut Self {
        self.padded(v, width, " ")
    }

    fn padded(&mut self, v: u64, width: usize, fill: &str) -> &mut Self {
        let mut digits = 1;
        let mut t = v;
        while t >= 10 {
            t /= 10;
            digits += 1;
        }
        for _ in digits..width {
            self.str(fill);
        }
        self.u64(v)
    }
}

impl<const N: usize> core::fmt::Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.str(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        let mut b = FixedBuf::<64>::new();
        b.u64(0)
            .str(" ")
            .u64(1234567890)
            .str(" ")
            .i64(-42)
            .str(" ")
            .hex(0xdead_beef);
        assert_eq!(b.as_bytes(), b"0 1234567890 -42 0xdeadbeef");
    }

    #[test]
    fn truncates_instead_of_panicking() {
        let mut b = FixedBuf::<4>::new();
        b.str("hello").u64(99);
        assert_eq!(b.as_bytes(), b"hell");
    }

    #[test]
    fn width() {
        let mut b = FixedBuf::<16>::new();
        b.u64_width(42, 5).u64_width(123456, 3);
        assert_eq!(b.as_bytes(), b"   42123456");
    }
}
