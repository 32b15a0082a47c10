//! Statistics: each component keeps its own counters; this module merges
//! them on demand into one `Stats` for `malloc_stats`, `mallinfo2` and the
//! exit report.
//!
//! Owns: no counters. Must never: be called with an allocator lock held (it
//! takes the registry, every central lock and the heap lock, one at a time).

use crate::central::{CENTRAL, TRANSFER};
use crate::meta::META;
use crate::page_heap::HEAP;
use crate::pagemap::PAGEMAP;
use crate::size_class::{size_of, CLASSES};
use crate::sys;
use crate::thread_cache;
use crate::util::fmt::FixedBuf;

#[derive(Clone, Copy, Default, Debug)]
pub struct Stats {
    /// Bytes the program holds (allocated and not freed).
    pub in_use: usize,
    pub thread_cache: usize,
    /// Free objects in the per-CPU caches.
    pub cpu_cache: usize,
    /// Free objects in central lists (spans and transfer caches).
    pub central: usize,
    /// Of which in transfer caches.
    pub transfer: usize,
    pub free_resident: usize,
    pub free_released: usize,
    pub mapped: usize,
    pub metadata: usize,
    pub large_bytes: usize,
    pub large_count: usize,
    pub small_span_bytes: usize,
    pub free_spans: usize,
    pub threads: usize,
    pub released_total: u64,
    pub release_calls: u64,
    /// Objects passed one at a time between per-CPU caches and threads
    /// over their cache budget (`thread_cache::starved_objects`).
    pub starved_objects: u64,
    /// Thread-cache lists that ran empty and that overflowed
    /// (`thread_cache::list_trips`).
    pub list_refills: u64,
    pub list_overflows: u64,
    /// Periods after which a thread that slept through them gave its cache
    /// back (`thread_cache::sleepy_periods`).
    pub sleepy_periods: u64,
}

pub fn collect() -> Stats {
    let mut s = Stats::default();
    let mut tc_bytes = 0;
    s.threads = thread_cache::for_each_cache(|tc| tc_bytes += tc.held_bytes());
    s.thread_cache = tc_bytes;
    s.cpu_cache = crate::cpu_cache::held_bytes();
    for (class, central) in CENTRAL.iter().enumerate().skip(1) {
        let in_spans = central.lock().free_in_spans;
        let in_transfer = TRANSFER[class].len() * CLASSES[class].batch as usize;
        s.central += (in_spans + in_transfer) * size_of(class);
        s.transfer += in_transfer * size_of(class);
    }
    let h = HEAP.lock().stats;
    s.free_resident = h.free_normal;
    s.free_released = h.free_released;
    s.mapped = h.mapped;
    s.large_bytes = h.large_bytes;
    s.large_count = h.large_count;
    s.small_span_bytes = h.small_span_bytes;
    s.free_spans = h.free_spans;
    s.released_total = h.released_total;
    s.release_calls = h.release_calls;
    s.starved_objects = thread_cache::starved_objects();
    (s.list_refills, s.list_overflows) = thread_cache::list_trips();
    s.sleepy_periods = thread_cache::sleepy_periods();
    s.metadata = META.mapped_bytes() + PAGEMAP.leaf_bytes();
    // Thread-cache lengths are read racily; clamp rather than underflow.
    s.in_use = (h.small_span_bytes + h.large_bytes)
        .saturating_sub(s.central + s.thread_cache + s.cpu_cache);
    s
}

fn line<const N: usize>(b: &mut FixedBuf<N>, label: &str, bytes: usize) {
    b.str("memx: ").str(label);
    for _ in label.len()..36 {
        b.str(" ");
    }
    b.u64_width(bytes as u64, 14)
        .str(" (")
        .u64_width((bytes >> 20) as u64, 6)
        .str(" MiB)\n");
}

/// The human report printed by `malloc_stats()` and `MEMX_STATS_AT_EXIT=1`.
pub fn write_report(fd: i32) {
    let s = collect();
    let mut b = FixedBuf::<2048>::new();
    b.str("memx: ------------------------------------------------------------\n");
    b.str("memx: malloc_stats (pid ")
        .u64(sys::getpid() as u64)
        .str(")\n");
    line(&mut b, "bytes in use by the program", s.in_use);
    line(&mut b, "bytes in thread caches", s.thread_cache);
    line(&mut b, "bytes in per-CPU caches", s.cpu_cache);
    line(&mut b, "bytes in central free lists", s.central);
    line(&mut b, "  of which in transfer caches", s.transfer);
    line(&mut b, "bytes in free pages (resident)", s.free_resident);
    line(&mut b, "bytes in free pages (released)", s.free_released);
    line(&mut b, "bytes mapped from the OS (heap)", s.mapped);
    line(&mut b, "bytes mapped for metadata", s.metadata);
    line(&mut b, "bytes in large objects", s.large_bytes);
    line(
        &mut b,
        "bytes released to the OS so far",
        s.released_total as usize,
    );
    line(&mut b, "resident set size (RSS)", sys::rss_bytes());
    b.str("memx: large objects ").usize(s.large_count);
    b.str(", free spans ").usize(s.free_spans);
    b.str(", threads with caches ").usize(s.threads);
    b.str(", madvise calls ").u64(s.release_calls).str("\n");
    b.str("memx: cache mode: ")
        .str(crate::cpu_cache::mode().name());
    if crate::cpu_cache::mode() == crate::cpu_cache::Mode::PerCpu {
        b.str(if crate::cpu_cache::active() {
            ", in use (more threads than CPUs)"
        } else {
            ", idle (no more threads than CPUs)"
        });
    }
    b.str("\n");
    b.str("memx: objects passed one at a time by threads over budget or asleep ")
        .u64(s.starved_objects)
        .str(" (MEMX_THREAD_CACHE_BYTES)\n");
    b.str("memx: thread caches given back by threads that slept between bursts ")
        .u64(s.sleepy_periods)
        .str("\n");
    b.str("memx: thread-cache lists run empty ")
        .u64(s.list_refills)
        .str(", overflowed ")
        .u64(s.list_overflows)
        .str(" (trips past the thread caches)\n");
    sys::write_fd(fd, b.as_bytes());
}

/// The names of the `malloc_stats` figures that `figures` writes, in its
/// order: space-separated, NUL-terminated (`memx_stats_names`, read by the
/// Python package's `memx.stats()`, so the names live here only).
pub const FIGURE_NAMES: &[u8] = b"in_use thread_cache cpu_cache central transfer free_resident \
free_released mapped metadata large_bytes released_total rss large_count free_spans \
threads release_calls starved_objects list_refills list_overflows sleepy_periods\0";

/// The `malloc_stats` report's figures as numbers (bytes, then counts), as
/// many as `out` holds; returns how many there are in all.
pub fn figures(out: &mut [u64]) -> usize {
    let s = collect();
    let all = [
        s.in_use as u64,
        s.thread_cache as u64,
        s.cpu_cache as u64,
        s.central as u64,
        s.transfer as u64,
        s.free_resident as u64,
        s.free_released as u64,
        s.mapped as u64,
        s.metadata as u64,
        s.large_bytes as u64,
        s.released_total,
        sys::rss_bytes() as u64,
        s.large_count as u64,
        s.free_spans as u64,
        s.threads as u64,
        s.release_calls,
        s.starved_objects,
        s.list_refills,
        s.list_overflows,
        s.sleepy_periods,
    ];
    for (o, v) in out.iter_mut().zip(all) {
        *o = v;
    }
    all.len()
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct MallInfo2 {
    pub arena: usize,
    pub ordblks: usize,
    pub smblks: usize,
    pub hblks: usize,
    pub hblkhd: usize,
    pub usmblks: usize,
    pub fsmblks: usize,
    pub uordblks: usize,
    pub fordblks: usize,
    pub keepcost: usize,
}

/// glibc's deprecated `struct mallinfo` (int fields).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct MallInfo {
    pub arena: i32,
    pub ordblks: i32,
    pub smblks: i32,
    pub hblks: i32,
    pub hblkhd: i32,
    pub usmblks: i32,
    pub fsmblks: i32,
    pub uordblks: i32,
    pub fordblks: i32,
    pub keepcost: i32,
}

/// mallinfo2 from our figures: `arena` = heap bytes mapped, `hblks/hblkhd` =
/// large objects, `uordblks` = in use, `fordblks` = everything else of the
/// heap (cached and free), `fsmblks` = bytes in caches, `ordblks` = free
/// spans, `keepcost` = free resident bytes malloc_trim could release.
pub fn mallinfo2() -> MallInfo2 {
    let s = collect();
    MallInfo2 {
        arena: s.mapped,
        ordblks: s.free_spans,
        smblks: 0,
        hblks: s.large_count,
        hblkhd: s.large_bytes,
        usmblks: 0,
        fsmblks: s.thread_cache + s.central,
        uordblks: s.in_use,
        fordblks: s.mapped - s.in_use.min(s.mapped),
        keepcost: s.free_resident,
    }
}

pub fn mallinfo() -> MallInfo {
    let m = mallinfo2();
    let c = |v: usize| v.min(i32::MAX as usize) as i32;
    MallInfo {
        arena: c(m.arena),
        ordblks: c(m.ordblks),
        smblks: c(m.smblks),
        hblks: c(m.hblks),
        hblkhd: c(m.hblkhd),
        usmblks: c(m.usmblks),
        fsmblks: c(m.fsmblks),
        uordblks: c(m.uordblks),
        fordblks: c(m.fordblks),
        keepcost: c(m.keepcost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_has_a_name() {
        let names = core::str::from_utf8(FIGURE_NAMES.strip_suffix(b"\0").unwrap()).unwrap();
        let mut out = [u64::MAX; 32];
        let n = figures(&mut out);
        assert_eq!(names.split(' ').count(), n, "{names}");
        assert!(out[n..].iter().all(|&v| v == u64::MAX));
        assert!(out[11] > 0, "rss, the 12th figure, is never 0");
        assert_eq!(names.split(' ').nth(11), Some("rss"));
    }
}
