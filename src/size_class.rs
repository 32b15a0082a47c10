//! Size classes: the table {object size, pages per span, batch size} and the
//! request-size → class lookup used by the malloc fast path.
//!
//! Owns: constant tables computed at compile time. Must never: change at run
//! time (the fast path indexes these tables without checks).
//!
//! The classes: every 16 bytes up to 1 KiB (16 is the alignment every
//! object needs, so finer steps are impossible), then eight classes per
//! doubling up to 256 KiB. A request lands in the smallest class that holds
//! it, so the internal waste of a class of size s after a class of size p is
//! at most (s - p - 1) / s: at most 15/128 (11.7%) from 128 bytes up to
//! 1 KiB, below 1/9 (11.1%) above, and bounded by the 16-byte step below
//! 128 bytes. Each class's span is the smallest run of pages whose tail
//! (bytes left over after the last object) is at most 1/8 of the span.
//!
//! Why 16-byte steps to 1 KiB: class c of a request n <= 1 KiB is
//! (n + 15) / 16, so the fast path finds its list at byte offset
//! (n + 15) & !15 with no table at all.

/// The page heap's unit: 8 KiB pages, as tcmalloc.
pub const PAGE_SHIFT: usize = 13;
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;

/// Largest request served from a size class; larger ones get their own span.
pub const MAX_SMALL: usize = 256 * 1024;

/// Classes 1..NUM_CLASSES are real; class 0 means "not a small object".
pub const NUM_CLASSES: usize = 129;

const SMALL_LIMIT: usize = 1024;
const BIG_LUT_LEN: usize = MAX_SMALL / 128 + 1;

#[derive(Clone, Copy, Debug)]
pub struct ClassInfo {
    /// Object size in bytes (a multiple of 16).
    pub size: u32,
    /// Pages in one span of this class.
    pub pages: u32,
    /// Objects moved at once between a thread cache and the central list.
    pub batch: u32,
    /// Objects in one span.
    pub objects: u32,
    /// `u64::MAX / size + 1`, for `is_object_offset` (no division).
    pub div_magic: u64,
}

impl ClassInfo {
    /// Whether `offset` (from a span's start, below 2^32) is a multiple of
    /// the object size: the start of an object. A multiply instead of a
    /// division (tens of cycles), since the central lists test every object
    /// they take back under their lock (Lemire, Kaser and Kurz, "Faster
    /// remainder by direct computation", 2019: exact for 32-bit offsets).
    #[inline(always)]
    pub fn is_object_offset(&self, offset: usize) -> bool {
        offset >> 32 == 0 && (offset as u64).wrapping_mul(self.div_magic) < self.div_magic
    }
}

const fn class_sizes() -> [u32; NUM_CLASSES] {
    let mut sizes = [0u32; NUM_CLASSES];
    let mut i = 1;
    let mut s = 16;
    while s <= SMALL_LIMIT {
        sizes[i] = s as u32;
        i += 1;
        s += 16;
    }
    let mut base = SMALL_LIMIT;
    while base < MAX_SMALL {
        let step = base / 8;
        let mut k = 1;
        while k <= 8 {
            sizes[i] = (base + k * step) as u32;
            i += 1;
            k += 1;
        }
        base *= 2;
    }
    assert!(
        i == NUM_CLASSES,
        "NUM_CLASSES does not match the class rules"
    );
    sizes
}

const fn pages_for(size: usize) -> usize {
    let mut pages = size.div_ceil(PAGE_SIZE);
    loop {
        let span = pages * PAGE_SIZE;
        if (span % size) * 8 <= span {
            return pages;
        }
        pages += 1;
    }
}

const fn batch_for(size: usize) -> usize {
    let b = 64 * 1024 / size;
    if b < 2 {
        2
    } else if b > 32 {
        32
    } else {
        b
    }
}

const fn build_classes() -> [ClassInfo; NUM_CLASSES] {
    let sizes = class_sizes();
    let mut out = [ClassInfo {
        size: 0,
        pages: 0,
        batch: 0,
        objects: 0,
        div_magic: 0,
    }; NUM_CLASSES];
    let mut c = 1;
    while c < NUM_CLASSES {
        let size = sizes[c] as usize;
        let pages = pages_for(size);
        out[c] = ClassInfo {
            size: size as u32,
            pages: pages as u32,
            batch: batch_for(size) as u32,
            objects: (pages * PAGE_SIZE / size) as u32,
            div_magic: u64::MAX / size as u64 + 1,
        };
        c += 1;
    }
    out
}

/// The class table, indexed by class.
pub static CLASSES: [ClassInfo; NUM_CLASSES] = build_classes();

const fn smallest_class_for(n: usize) -> u8 {
    let sizes = class_sizes();
    let mut c = 1;
    while c < NUM_CLASSES {
        if sizes[c] as usize >= n {
            return c as u8;
        }
        c += 1;
    }
    0
}

/// Requests above 1 KiB, in 128-byte steps: the list offset (16 × class)
/// of their class, so the fast path indexes the thread cache directly.
const fn build_big_lut() -> [u16; BIG_LUT_LEN] {
    let mut lut = [0u16; BIG_LUT_LEN];
    let mut i = 0;
    while i < BIG_LUT_LEN {
        lut[i] = smallest_class_for(if i == 0 { 1 } else { i * 128 }) as u16 * 16;
        i += 1;
    }
    lut
}

static BIG_LUT: [u16; BIG_LUT_LEN] = build_big_lut();

/// The class for a request of `n` bytes, or 0 if `n > MAX_SMALL`.
#[inline(always)]
pub fn class_of(n: usize) -> usize {
    if n <= SMALL_LIMIT {
        ((n + 15) >> 4).max(1)
    } else if n <= MAX_SMALL {
        BIG_LUT[(n + 127) >> 7] as usize / 16
    } else {
        0
    }
}

/// For requests above 1 KiB: the byte offset of their class's list (16 ×
/// class), or 0 above MAX_SMALL (list 0 is always empty, so large requests
/// reach the slow path with no test of their own).
#[inline(always)]
pub fn medium_offset(n: usize) -> usize {
    debug_assert!(n > SMALL_LIMIT);
    if n <= MAX_SMALL {
        BIG_LUT[(n + 127) >> 7] as usize
    } else {
        0
    }
}

/// For requests of at most 1 KiB: the byte offset of their class's list in
/// an array of 16-byte list heads, i.e. 16 × class (0 for a zero-byte
/// request, whose list 0 is always empty so the slow path handles it).
#[inline(always)]
pub fn tiny_offset(n: usize) -> Option<usize> {
    (n <= SMALL_LIMIT).then_some((n + 15) & !15)
}

/// Object size of class `c` (1..NUM_CLASSES).
#[inline(always)]
pub fn size_of(c: usize) -> usize {
    CLASSES[c].size as usize
}

/// The smallest class whose objects are all aligned to `align` (a power of two
/// up to the page size) and hold `n` bytes, or 0 if there is none.
pub fn class_for_aligned(n: usize, align: usize) -> usize {
    if align > PAGE_SIZE {
        return 0;
    }
    let mut c = class_of(n);
    if c == 0 {
        return 0;
    }
    // Spans start on page boundaries, so an object at k * size is aligned to
    // `align` for every k iff size is a multiple of align.
    while c < NUM_CLASSES {
        if (CLASSES[c].size as usize).is_multiple_of(align) {
            return c;
        }
        c += 1;
    }
    0
}

/// Worst internal waste of class `c`, in parts per thousand: the share of the
/// object unused by the smallest request that lands in it, or the span tail,
/// whichever is larger.
pub fn worst_waste_permille(c: usize) -> usize {
    let size = size_of(c);
    let prev = if c == 1 { 0 } else { size_of(c - 1) };
    let internal = (size - prev - 1) * 1000 / size;
    let span = CLASSES[c].pages as usize * PAGE_SIZE;
    let tail = (span % size) * 1000 / span;
    internal.max(tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_offsets_without_division() {
        for k in &CLASSES[1..] {
            let span = k.pages as usize * PAGE_SIZE;
            let size = k.size as usize;
            for off in (0..span + 2 * size)
                .step_by(16)
                .chain([1, 8, size - 1, size + 1])
            {
                assert_eq!(
                    k.is_object_offset(off),
                    off % size == 0,
                    "size {size} offset {off}"
                );
            }
            assert!(!k.is_object_offset(1 << 32));
            assert!(!k.is_object_offset(usize::MAX - 15));
        }
    }

    #[test]
    #[allow(clippy::needless_range_loop)]
    fn table_invariants() {
        let mut prev = 0;
        for c in 1..NUM_CLASSES {
            let k = CLASSES[c];
            assert!(k.size as usize > prev, "class {c} not increasing");
            assert_eq!(k.size % 16, 0, "class {c} not 16-aligned");
            assert!(k.objects >= 1);
            assert!(k.batch >= 2 && k.batch <= 32);
            let span = k.pages as usize * PAGE_SIZE;
            assert!(
                (span % k.size as usize) * 8 <= span,
                "class {c} tail waste > 1/8"
            );
            assert_eq!(k.objects as usize, span / k.size as usize);
            prev = k.size as usize;
        }
        assert_eq!(prev, MAX_SMALL);
    }

    #[test]
    fn waste_is_bounded() {
        for c in 1..NUM_CLASSES {
            let w = worst_waste_permille(c);
            if size_of(c) >= 144 {
                assert!(w <= 125, "class {c} ({}) wastes {w}‰", size_of(c));
            } else {
                // Below 144 bytes the 16-byte step dominates.
                assert!(size_of(c) - size_of(c - 1).min(size_of(c)) <= 16 || c == 1);
            }
        }
    }

    #[test]
    fn lookup_is_smallest_fitting_class() {
        for n in 0..=MAX_SMALL {
            let c = class_of(n);
            assert!(c >= 1, "no class for {n}");
            assert!(size_of(c) >= n, "class {c} too small for {n}");
            if c > 1 {
                assert!(size_of(c - 1) < n.max(1), "class {c} not smallest for {n}");
            }
        }
        assert_eq!(class_of(MAX_SMALL + 1), 0);
        assert_eq!(class_of(usize::MAX / 2), 0);
    }

    #[test]
    fn aligned_classes() {
        for align in [16usize, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192] {
            for n in [0usize, 1, 100, 1000, 5000, 70000] {
                let c = class_for_aligned(n, align);
                assert!(c != 0, "{n} @ {align}");
                assert!(size_of(c) >= n && size_of(c).is_multiple_of(align));
            }
        }
        assert_eq!(class_for_aligned(10, 16384), 0);
    }
}
