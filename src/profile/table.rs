//! The table of sampled stacks: each distinct stack stored once (a hash
//! table in the metadata arena) with its cumulative allocated and freed
//! samples, and one `Record` per live sampled object pointing at its stack.
//!
//! Invariants: a bucket's frames never change after it is inserted, and
//! buckets are never freed, so a dump may read frames without the lock;
//! in use = allocs − frees (per bucket and in the totals), and every live
//! record points at a bucket whose allocs > frees.
//! Owns: buckets, records. Must never: allocate through malloc (all memory
//! comes from META), or be used without the profiler's lock.

use crate::meta::{Pool, META};

/// Most words in a stack: 64 native frames and up to 64 Python frames
/// (deeper stacks keep their innermost frames).
pub const MAX_DEPTH: usize = 128;
const HEADS: usize = 1 << 14;

/// Raw sample counts (not unsampled: pprof does that from the rate).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Counts {
    pub allocs: u64,
    pub alloc_bytes: u64,
    pub frees: u64,
    pub free_bytes: u64,
}

impl Counts {
    pub fn inuse(&self) -> u64 {
        self.allocs - self.frees
    }

    pub fn inuse_bytes(&self) -> u64 {
        self.alloc_bytes - self.free_bytes
    }

    fn add(&mut self, size: usize) {
        self.allocs += 1;
        self.alloc_bytes += size as u64;
    }

    fn sub(&mut self, size: usize) {
        self.frees += 1;
        self.free_bytes += size as u64;
    }
}

/// One distinct stack. Allocated with room for `depth` frames after it.
#[repr(C)]
pub struct Bucket {
    chain: *mut Bucket,
    /// Every bucket, newest first (what dumps walk).
    older: *mut Bucket,
    hash: u64,
    depth: usize,
    pub counts: Counts,
}

impl Bucket {
    /// The stack, innermost frame first.
    pub fn frames(&self) -> &[usize] {
        // SAFETY: `insert` allocated `depth` frames right after the header
        // and wrote them before publishing the bucket; they never change.
        unsafe {
            let p = (self as *const Bucket).add(1) as *const usize;
            core::slice::from_raw_parts(p, self.depth)
        }
    }
}

/// A live sampled object.
pub struct Record {
    bucket: *mut Bucket,
    size: usize,
}

impl Record {
    pub fn bucket(&self) -> &Bucket {
        // SAFETY: records always point at a published, never-freed bucket.
        unsafe { &*self.bucket }
    }
}

pub struct StackTable {
    heads: *mut *mut Bucket,
    newest: *mut Bucket,
    buckets: usize,
    records: Pool<Record>,
    pub totals: Counts,
}

// SAFETY: the table is only used under the profiler's lock; its pointers
// refer to metadata-arena memory that is never freed.
unsafe impl Send for StackTable {}

impl Default for StackTable {
    fn default() -> Self {
        Self::new()
    }
}

impl StackTable {
    pub const fn new() -> Self {
        StackTable {
            heads: core::ptr::null_mut(),
            newest: core::ptr::null_mut(),
            buckets: 0,
            records: Pool::new(),
            totals: Counts {
                allocs: 0,
                alloc_bytes: 0,
                frees: 0,
                free_bytes: 0,
            },
        }
    }

    pub fn buckets(&self) -> usize {
        self.buckets
    }

    /// Records a sampled object of `size` bytes allocated from `frames`;
    /// null when the arena is out of memory (the sample is then dropped).
    pub fn insert(&mut self, frames: &[usize], size: usize) -> *mut Record {
        let frames = &frames[..frames.len().min(MAX_DEPTH)];
        let b = self.find_or_add(frames);
        if b.is_null() {
            return b as *mut Record;
        }
        let r = self.records.take();
        if r.is_null() {
            return r;
        }
        // SAFETY: `b` is a published bucket; `r` is a fresh slot from the pool.
        unsafe {
            (*b).counts.add(size);
            r.write(Record { bucket: b, size });
        }
        self.totals.add(size);
        r
    }

    /// The sampled object of `r` was freed; returns its size.
    ///
    /// # Safety
    /// `r` came from `insert` on this table and is not used again.
    pub unsafe fn remove(&mut self, r: *mut Record) -> usize {
        // SAFETY: the caller's promise: a live record of this table.
        let (b, size) = unsafe { ((*r).bucket, (*r).size) };
        // SAFETY: records point at published buckets; `r` goes back to its pool.
        unsafe {
            (*b).counts.sub(size);
            self.records.give(r);
        }
        self.totals.sub(size);
        size
    }

    /// Calls `f` for every bucket, newest first.
    pub fn for_each(&self, mut f: impl FnMut(&Bucket)) {
        let mut b = self.newest;
        while !b.is_null() {
            // SAFETY: the `older` chain links published buckets only.
            let r = unsafe { &*b };
            f(r);
            b = r.older;
        }
    }

    fn find_or_add(&mut self, frames: &[usize]) -> *mut Bucket {
        if self.heads.is_null() {
            let bytes = HEADS * core::mem::size_of::<*mut Bucket>();
            self.heads = META.alloc(bytes, 64) as *mut *mut Bucket;
            if self.heads.is_null() {
                return core::ptr::null_mut();
            }
        }
        let h = hash(frames);
        // SAFETY: `heads` has HEADS zero-initialised slots.
        let head = unsafe { self.heads.add(h as usize % HEADS) };
        // SAFETY: as above; chains link published buckets only.
        let mut b = unsafe { *head };
        while !b.is_null() {
            // SAFETY: a published bucket.
            let r = unsafe { &*b };
            if r.hash == h && r.frames() == frames {
                return b;
            }
            b = r.chain;
        }
        let bytes = core::mem::size_of::<Bucket>() + core::mem::size_of_val(frames);
        let b = META.alloc(bytes, 16) as *mut Bucket;
        if b.is_null() {
            return b;
        }
        // SAFETY: `b` has room for the header and `frames.len()` words; it is
        // filled before it becomes reachable from `heads` or `newest`.
        unsafe {
            b.write(Bucket {
                chain: *head,
                older: self.newest,
                hash: h,
                depth: frames.len(),
                counts: Counts::default(),
            });
            let dst = b.add(1) as *mut usize;
            core::ptr::copy_nonoverlapping(frames.as_ptr(), dst, frames.len());
            *head = b;
        }
        self.newest = b;
        self.buckets += 1;
        b
    }
}

fn hash(frames: &[usize]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ frames.len() as u64;
    for &f in frames {
        h = (h ^ f as u64).wrapping_mul(0x0000_0100_0000_01b3);
        h ^= h >> 29;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_stack_is_stored_once_and_counts_balance() {
        let mut t = StackTable::new();
        let a = [1usize, 2, 3];
        let b = [1usize, 2, 4];
        let r1 = t.insert(&a, 100);
        let r2 = t.insert(&a, 50);
        let r3 = t.insert(&b, 7);
        assert_eq!(t.buckets(), 2);
        // SAFETY: r2 came from `insert` and is not used again.
        assert_eq!(unsafe { t.remove(r2) }, 50);
        let mut seen = Vec::new();
        t.for_each(|b| seen.push((b.frames().to_vec(), b.counts)));
        assert_eq!(seen.len(), 2);
        let (_, ca) = seen.iter().find(|(f, _)| f == &a).unwrap();
        assert_eq!(
            (ca.allocs, ca.alloc_bytes, ca.inuse(), ca.inuse_bytes()),
            (2, 150, 1, 100)
        );
        assert_eq!((t.totals.inuse(), t.totals.inuse_bytes()), (2, 107));
        // SAFETY: the remaining live records, each removed once.
        unsafe {
            t.remove(r1);
            t.remove(r3);
        }
        assert_eq!((t.totals.inuse(), t.totals.allocs), (0, 3));
    }

    #[test]
    fn deep_stacks_keep_their_innermost_frames() {
        let mut t = StackTable::new();
        let deep: Vec<usize> = (0..200).collect();
        let r = t.insert(&deep, 1);
        // SAFETY: a live record of `t`.
        let got = unsafe { (*r).bucket().frames().to_vec() };
        assert_eq!(got, deep[..MAX_DEPTH].to_vec());
    }

    #[test]
    fn many_distinct_stacks_are_all_found_again() {
        let mut t = StackTable::new();
        for i in 0..50_000usize {
            t.insert(&[i, i * 7], 8);
        }
        for i in 0..50_000usize {
            t.insert(&[i, i * 7], 8);
        }
        assert_eq!(t.buckets(), 50_000);
        let mut n = 0;
        t.for_each(|b| {
            assert_eq!(b.counts.allocs, 2);
            n += 1;
        });
        assert_eq!(n, 50_000);
    }
}
