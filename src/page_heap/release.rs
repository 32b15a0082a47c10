//! Giving free pages back to the OS, and the heap limit.
//!
//! Release: resident free spans that have stayed free for RELEASE_AGE_NS are
//! given back with `madvise(MADV_DONTNEED)`, largest first, paid for by a
//! token bucket of `MEMX_RELEASE_RATE` MiB per second (one second's worth of
//! burst), checked at most every RELEASE_CHECK_NS when a span is freed;
//! `release_all` (malloc_trim) releases everything at once. Ages and rates
//! run on the release clock (`clock_after`), in which a pause of the heap
//! counts as IDLE_GAP_NS however long it was.
//!
//! Limit (`MEMX_HEAP_LIMIT`): the heap never *holds* more than the limit
//! from the OS, where held = mapped − free released = in-use spans + resident
//! free spans: what the process really pays for. Address space reserved
//! ahead (`REGION_BYTES`), never-touched pages and pages given back with
//! madvise do not count; neither does metadata (span structs, page map),
//! which lives outside the heap. Only handing out released (or fresh) pages
//! raises the held figure, so the check runs only then: a resident free span
//! of any size that fits is used first; failing that, resident free spans
//! too small to serve are released (largest first) to make room, if that
//! can be enough; otherwise the request fails (the caller returns NULL with
//! ENOMEM). The first failure prints one line to stderr and tells the
//! profiler (through `on_limit`: init passes `profile::limit_hit`, which is
//! called with HEAP held).
//!
//! Owns: nothing beyond `PageHeap`'s fields. Must never: allocate (the
//! limit's report is a fixed buffer).

use super::PageHeap;
use crate::size_class::PAGE_SHIFT;
use crate::span::Span;
use crate::sys;
use crate::util::fmt::FixedBuf;

/// A free span is released only after staying free this long: memory that
/// is freed and soon reused (the common case) never pays for a madvise and
/// the page faults that follow it.
const RELEASE_AGE_NS: u64 = 1_000_000_000;
/// Release is considered at most this often (it scans the free lists).
const RELEASE_CHECK_NS: u64 = 10_000_000;
/// The most a gap between two span frees adds to the release clock.
///
/// Why a pause does not age free spans: a program that works in phases
/// (rptest's threads sleep about two seconds between rounds; a service
/// between bursts of requests) needs again, when it resumes, the pages it
/// freed just before it paused. On wall time, every free span was past
/// RELEASE_AGE_NS at the first free after each pause, so that free released
/// them all (inside the program's next burst, with the heap locked over
/// the madvise), and the burst then faulted the pages back in: rptest made
/// 7.3 K page faults a run against 4.4 K with release off (medians of 9).
/// Memory that stays free through a second of the heap's own activity is
/// still released as before; a process that never frees again keeps its
/// last second's free pages either way, since release only runs when a
/// span is freed.
const IDLE_GAP_NS: u64 = 100_000_000;

/// The release clock after `wall_gap` ns of wall time since it last moved:
/// it advances with wall time, but by at most IDLE_GAP_NS at a time.
pub(super) fn clock_after(clock: u64, wall_gap: u64) -> u64 {
    clock + wall_gap.min(IDLE_GAP_NS)
}

impl PageHeap {
    /// Whether `charge` more resident bytes would pass the limit.
    pub(super) fn over_limit(&self, charge: usize) -> bool {
        self.limit != 0 && self.stats.held() + charge > self.limit
    }

    /// The heap limit stands in the way of serving `npages` pages from
    /// released memory (`charge` bytes would become resident): a resident
    /// free span that fits, else room made by releasing resident free spans
    /// and a released span (grown if need be). Null if neither works.
    #[cold]
    #[inline(never)]
    pub(super) fn reuse_under_limit(&mut self, npages: usize, charge: usize) -> *mut Span {
        let s = self.find(npages, false);
        if !s.is_null() {
            return s;
        }
        if !self.make_room(charge) {
            return core::ptr::null_mut();
        }
        let s = self.find(npages, true);
        if !s.is_null() || !self.grow(npages) {
            return s;
        }
        self.find(npages, true)
    }

    /// Releases resident free spans, largest first, until `charge` more
    /// bytes fit under the limit. Releases nothing and returns false when
    /// even releasing every resident free page would not be enough.
    pub(super) fn make_room(&mut self, charge: usize) -> bool {
        if self.stats.held() - self.stats.free_normal + charge > self.limit {
            return false;
        }
        while self.over_limit(charge) {
            let s = self.largest_normal();
            if s.is_null() || self.release_span(s) == 0 {
                return false;
            }
        }
        true
    }

    /// A request refused by the limit: counted; the first one is reported
    /// with one line on stderr and to the profiler.
    #[cold]
    #[inline(never)]
    pub(super) fn refuse(&mut self, npages: usize) {
        self.stats.limit_hits += 1;
        if self.limit_reported {
            return;
        }
        self.limit_reported = true;
        let mut line = FixedBuf::<256>::new();
        line.str("memx: MEMX_HEAP_LIMIT reached: ")
            .usize(self.stats.held())
            .str(" bytes held of a limit of ")
            .usize(self.limit)
            .str("; a request for ")
            .usize(npages << PAGE_SHIFT)
            .str(" more bytes gets ENOMEM (reported once)\n");
        sys::write_stderr(line.as_bytes());
        if let Some(f) = self.on_limit {
            f();
        }
    }

    /// Advances the release clock to the wall time now and returns it
    /// (0, and no clock read, while release is off).
    pub(super) fn release_clock(&mut self) -> u64 {
        if self.rate_bytes_per_s == 0 {
            return 0;
        }
        self.release_clock_at(sys::now_ns())
    }

    /// `release_clock` at wall time `wall` (ns; never before the last).
    pub(super) fn release_clock_at(&mut self, wall: u64) -> u64 {
        let gap = wall.saturating_sub(self.clock_wall_ns);
        self.clock_wall_ns = wall;
        self.clock_ns = clock_after(self.clock_ns, gap);
        self.clock_ns
    }

    pub(super) fn refill_tokens(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.last_refill_ns).min(1_000_000_000);
        self.last_refill_ns = now;
        let add = (elapsed as u128 * self.rate_bytes_per_s as u128 / 1_000_000_000) as i64;
        self.tokens = (self.tokens + add).min(self.rate_bytes_per_s as i64);
    }

    /// Spends release tokens on resident spans free for RELEASE_AGE_NS.
    pub(super) fn release_at_rate(&mut self, now: u64) {
        if now.saturating_sub(self.last_refill_ns) < RELEASE_CHECK_NS {
            return;
        }
        self.refill_tokens(now);
        // Nothing has been free for RELEASE_AGE_NS before the clock is that old.
        let Some(freed_by) = now.checked_sub(RELEASE_AGE_NS) else {
            return;
        };
        while self.tokens > 0 && self.stats.free_normal > 0 {
            let victim = self.oldest_normal(freed_by);
            if victim.is_null() {
                break;
            }
            let bytes = self.release_span(victim);
            self.tokens -= bytes as i64;
        }
    }

    /// The largest resident free span freed no later than `before`, or null.
    pub(super) fn oldest_normal(&self, before: u64) -> *mut Span {
        let mut best: *mut Span = core::ptr::null_mut();
        let lists = self
            .normal
            .iter()
            .chain(core::iter::once(&self.large_normal));
        for s in lists.flat_map(|l| l.iter()) {
            // SAFETY: list members are live.
            let (freed, n) = unsafe { ((*s).free.freed_at, (*s).npages) };
            // SAFETY: `best` is a live member when non-null.
            if freed <= before && (best.is_null() || n > unsafe { (*best).npages }) {
                best = s;
            }
        }
        best
    }

    /// The largest resident free span, or null.
    pub(super) fn largest_normal(&self) -> *mut Span {
        self.oldest_normal(u64::MAX)
    }

    /// Gives a resident free span's pages to the OS; returns its bytes.
    pub(super) fn release_span(&mut self, s: *mut Span) -> usize {
        self.unlink_free(s);
        // SAFETY: `s` is a live Free span, now on no list.
        let (addr, bytes) = unsafe { ((*s).addr(), (*s).bytes()) };
        let ok = sys::release(addr as *mut u8, bytes);
        self.stats.release_calls += 1;
        if ok {
            self.stats.released_total += bytes as u64;
            // SAFETY: as above.
            unsafe { (*s).free.released = true };
        }
        let s = self.coalesce(s);
        self.insert_free(s);
        if ok {
            bytes
        } else {
            0
        }
    }

    /// Releases every resident free span (malloc_trim). Returns the bytes.
    pub fn release_all(&mut self) -> usize {
        let mut total = 0;
        loop {
            let s = self.largest_normal();
            if s.is_null() {
                break;
            }
            let n = self.release_span(s);
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    }
}
