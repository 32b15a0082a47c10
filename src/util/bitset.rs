//! `BitSet`: a fixed set of small integers (0..64 × WORDS), one bit each.
//! The thread caches keep size classes in it, the page heap the lengths of
//! its non-empty free lists.
//!
//! Owns: nothing. Must never: allocate (it is plain words, copied freely).

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BitSet<const WORDS: usize>([u64; WORDS]);

impl<const WORDS: usize> BitSet<WORDS> {
    pub const EMPTY: Self = BitSet([0; WORDS]);

    pub fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }

    pub fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }

    /// Inserts `i` if `on`, else removes it.
    pub fn set(&mut self, i: usize, on: bool) {
        if on {
            self.insert(i);
        } else {
            self.remove(i);
        }
    }

    pub fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// The members of `self` or `other`.
    pub fn union(mut self, other: Self) -> Self {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        self
    }

    /// The least member ≥ `from`, if any.
    pub fn first_from(&self, from: usize) -> Option<usize> {
        let mut w = from / 64;
        let mut mask = !0u64 << (from % 64);
        while w < WORDS {
            let bits = self.0[w] & mask;
            if bits != 0 {
                return Some(w * 64 + bits.trailing_zeros() as usize);
            }
            w += 1;
            mask = !0;
        }
        None
    }

    /// The first member at or after `from`, wrapping around to the lowest;
    /// None if the set is empty.
    pub fn next_from(&self, from: usize) -> Option<usize> {
        self.first_from(from).or_else(|| self.first_from(0))
    }

    /// The members of `self` not in `other`, in order.
    pub fn minus(self, other: Self) -> impl Iterator<Item = usize> {
        (0..WORDS).flat_map(move |w| {
            let mut bits = self.0[w] & !other.0[w];
            core::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let i = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(i)
            })
        })
    }
}
