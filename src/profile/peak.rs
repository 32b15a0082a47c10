//! The peak profile: the sampled live heap as it was when the estimated
//! bytes in use were highest, written at exit as `<prefix>.<pid>.peak.heap`.
//!
//! Each time the estimate passes the last snapshot's by `1/GROWTH_DIV`, the
//! per-stack counters are copied (only stacks with live samples). The
//! number of snapshots is logarithmic in the peak (ln(peak/first) /
//! ln(1 + 1/GROWTH_DIV): ~220 from 1 MiB to 1 GiB), and the one kept is
//! within 1/GROWTH_DIV of the true peak: the estimate never passed
//! `next` after it, so peak < snapshot × (1 + 1/GROWTH_DIV).
//!
//! Owns: the snapshot and its marks. Must never: allocate through malloc
//! (the snapshot lives in the metadata arena, grown by doubling; an
//! outgrown buffer is not reused), or be used without the profiler's lock.

use super::table::{Counts, StackTable};
use crate::meta::META;

/// A new snapshot when the estimate grows by this fraction (1/32 = 3%).
const GROWTH_DIV: u64 = 32;

/// One stack's counters at the peak.
#[derive(Clone, Copy)]
pub struct Snap {
    pub bucket: *const super::table::Bucket,
    pub counts: Counts,
}

pub struct Peak {
    /// `len` entries valid; room for `cap` (len <= cap).
    snaps: *mut Snap,
    len: usize,
    cap: usize,
    /// Estimated bytes in use at the snapshot, and when (monotonic ns).
    pub bytes: u64,
    pub at_ns: u64,
    /// The estimate that triggers the next snapshot.
    next: u64,
}

// SAFETY: used only under the profiler's lock; the buffer lives in META.
unsafe impl Send for Peak {}

impl Peak {
    pub const fn new() -> Self {
        Peak {
            snaps: core::ptr::null_mut(),
            len: 0,
            cap: 0,
            bytes: 0,
            at_ns: 0,
            next: 0,
        }
    }

    /// The estimate of bytes in use is now `in_use` (after a sample was
    /// added to `table`): snapshots it if it is a new high by the margin.
    pub fn on_alloc(&mut self, in_use: u64, table: &StackTable, now_ns: impl FnOnce() -> u64) {
        if in_use < self.next || in_use == 0 {
            return;
        }
        if self.take(table) {
            self.bytes = in_use;
            self.at_ns = now_ns();
        }
        self.next = in_use + in_use / GROWTH_DIV;
    }

    /// Copies the counters of every stack with live samples; false when
    /// the arena is out of memory (the previous snapshot stays).
    fn take(&mut self, table: &StackTable) -> bool {
        let need = table.buckets();
        if need > self.cap {
            let cap = need.max(2 * self.cap).max(64);
            let p = META.alloc(cap * core::mem::size_of::<Snap>(), 16) as *mut Snap;
            if p.is_null() {
                return false;
            }
            self.snaps = p;
            self.cap = cap;
        }
        let mut n = 0;
        table.for_each(|b| {
            if b.counts.inuse() > 0 && n < self.cap {
                // SAFETY: `n < cap` slots fit in the buffer.
                unsafe {
                    self.snaps.add(n).write(Snap {
                        bucket: b,
                        counts: b.counts,
                    })
                };
                n += 1;
            }
        });
        self.len = n;
        true
    }

    /// The snapshot's entries (empty before the first).
    pub fn snaps(&self) -> &[Snap] {
        if self.snaps.is_null() {
            return &[];
        }
        // SAFETY: `take` wrote `len` entries into the buffer.
        unsafe { core::slice::from_raw_parts(self.snaps, self.len) }
    }
}

impl Default for Peak {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_heap_within_the_margin_and_snapshots_rarely() {
        let mut t = StackTable::new();
        let mut p = Peak::new();
        let mut live = Vec::new();
        let mut in_use = 0u64;
        let mut snaps = 0;
        // Grow to 1000 samples on stack A, free them, then 100 on B.
        for i in 0..1000u64 {
            live.push(t.insert(&[1, 2], 100));
            in_use += 100;
            let before = p.bytes;
            p.on_alloc(in_use, &t, || i);
            snaps += (p.bytes != before) as usize;
        }
        for r in live.drain(..) {
            // SAFETY: each live record of `t`, removed once.
            unsafe { t.remove(r) };
        }
        in_use = 0;
        for i in 0..100u64 {
            t.insert(&[3], 100);
            in_use += 100;
            p.on_alloc(in_use, &t, || 2000 + i);
        }
        assert!(
            p.bytes * (GROWTH_DIV + 1) / GROWTH_DIV >= 100_000,
            "{}",
            p.bytes
        );
        assert!(p.at_ns < 1000);
        let s = p.snaps();
        assert_eq!(s.len(), 1);
        // SAFETY: buckets are never freed.
        assert_eq!(unsafe { (*s[0].bucket).frames() }, &[1, 2]);
        assert_eq!(s[0].counts.inuse_bytes(), p.bytes);
        // Logarithmic: ln(1000) / ln(33/32) ≈ 225 at most.
        assert!(snaps < 230, "{snaps} snapshots");
    }
}
