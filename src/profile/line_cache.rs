//! The line numbers of Python frames already seen: `PyCode_Addr2Line`
//! walks a code object's line table from its start on every call (about
//! 2,900 instructions per frame on py_alloc.py under 3.11, half of a
//! sample's cost once the native walk stops at the interpreter), while a
//! program's samples keep landing on the same few hundred instructions.
//!
//! A direct-mapped table of `SLOTS` entries, keyed by the code object's
//! address and the instruction's offset in it. A code object freed and
//! another allocated at its address would inherit its lines; an entry
//! therefore also holds the code object's name and file name objects (a
//! new code object at the same address with the same name and file, at
//! the same offset, is the same function compiled again). The worst a
//! stale entry can do is name a wrong line: no pointer is kept or followed.
//!
//! Samples capture frames concurrently, without the profiler's lock: each
//! entry is a seqlock (odd `seq` = being written; a reader that sees the
//! sequence change, or an odd one, treats the entry as a miss), so a torn
//! entry is never read. Writers that collide skip the write.
//!
//! Owns: the table. Must never: allocate, wait, or dereference the
//! addresses it holds.

use core::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicUsize, Ordering};

/// Entries; a power of two. 1024 × 40 bytes, in .bss: pages are touched
/// only as entries are used.
const SLOTS: usize = 1024;

/// What identifies a Python instruction for its line number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub code: usize,
    pub name: usize,
    pub file: usize,
    pub offset: i32,
}

struct Entry {
    /// Even: stable; odd: a writer is filling the fields.
    seq: AtomicU32,
    offset: AtomicI32,
    code: AtomicUsize,
    name: AtomicUsize,
    file: AtomicUsize,
    line: AtomicI32,
}

impl Entry {
    const fn new() -> Self {
        Entry {
            seq: AtomicU32::new(0),
            offset: AtomicI32::new(0),
            code: AtomicUsize::new(0),
            name: AtomicUsize::new(0),
            file: AtomicUsize::new(0),
            line: AtomicI32::new(0),
        }
    }
}

pub struct LineCache {
    slots: [Entry; SLOTS],
}

impl LineCache {
    pub const fn new() -> Self {
        LineCache {
            slots: [const { Entry::new() }; SLOTS],
        }
    }

    fn slot(&self, k: &Key) -> &Entry {
        // Code objects are 8-byte aligned and hundreds of bytes apart;
        // offsets are even (2-byte code units).
        let h = (k.code >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (k.offset as usize >> 1);
        &self.slots[(h ^ (h >> 29)) & (SLOTS - 1)]
    }

    /// The line recorded for `k`, if its entry holds it.
    pub fn get(&self, k: &Key) -> Option<i32> {
        let e = self.slot(k);
        let s1 = e.seq.load(Ordering::Acquire);
        if s1 & 1 != 0 || s1 == 0 {
            return None;
        }
        let found = Key {
            code: e.code.load(Ordering::Relaxed),
            name: e.name.load(Ordering::Relaxed),
            file: e.file.load(Ordering::Relaxed),
            offset: e.offset.load(Ordering::Relaxed),
        };
        let line = e.line.load(Ordering::Relaxed);
        // The field loads happen before the second sequence load.
        fence(Ordering::Acquire);
        if e.seq.load(Ordering::Relaxed) != s1 || found != *k {
            return None;
        }
        Some(line)
    }

    /// Records `line` for `k`, replacing whatever its entry held; skipped
    /// if another thread is writing that entry.
    pub fn put(&self, k: &Key, line: i32) {
        let e = self.slot(k);
        let s = e.seq.load(Ordering::Relaxed);
        if s & 1 != 0
            || e.seq
                .compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // The odd sequence is visible before any field changes.
        fence(Ordering::Release);
        e.code.store(k.code, Ordering::Relaxed);
        e.name.store(k.name, Ordering::Relaxed);
        e.file.store(k.file, Ordering::Relaxed);
        e.offset.store(k.offset, Ordering::Relaxed);
        e.line.store(line, Ordering::Relaxed);
        // Never wraps to 0 in practice; 0 would only read as a miss.
        e.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: usize, offset: i32) -> Key {
        Key {
            code,
            name: 0x1000,
            file: 0x2000,
            offset,
        }
    }

    #[test]
    fn remembers_lines_and_misses_other_keys() {
        let c = LineCache::new();
        assert_eq!(c.get(&key(0x7000_0000, 10)), None);
        c.put(&key(0x7000_0000, 10), 42);
        assert_eq!(c.get(&key(0x7000_0000, 10)), Some(42));
        assert_eq!(c.get(&key(0x7000_0000, 12)), None);
        // Same address and offset, another function (a reused address).
        let mut other = key(0x7000_0000, 10);
        other.name = 0x3000;
        assert_eq!(c.get(&other), None);
        c.put(&other, 7);
        assert_eq!(c.get(&other), Some(7));
        assert_eq!(c.get(&key(0x7000_0000, 10)), None);
    }

    #[test]
    fn concurrent_writers_never_let_a_reader_see_a_mixed_entry() {
        // Writers fill one entry (same code and offset: same slot) with keys
        // whose name differs and whose line is that name; a torn entry would
        // pair one writer's name with another's line.
        let c = std::sync::Arc::new(LineCache::new());
        let keyed = |name: usize| Key {
            name,
            ..key(0x5000_0000, 4)
        };
        let writers: Vec<_> = (1..=3)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for i in 0..100_000usize {
                        let name = t * 1000 + i % 7;
                        c.put(&keyed(name), name as i32);
                    }
                })
            })
            .collect();
        let mut hits = 0;
        // A pass after the writers are done too: the entry then holds a
        // last write, so a reader that ran no pass meanwhile still sees one.
        loop {
            let done = writers.iter().all(|w| w.is_finished());
            for t in 1..=3usize {
                for j in 0..7 {
                    let name = t * 1000 + j;
                    if let Some(line) = c.get(&keyed(name)) {
                        assert_eq!(line, name as i32, "a torn entry");
                        hits += 1;
                    }
                }
            }
            if done {
                break;
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        assert!(hits > 0 || c.get(&keyed(3006)).is_some());
    }
}
