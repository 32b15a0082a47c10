//! The countdown's expiry and the requests that go past the lists: large
//! objects and sampled ones.
//!
//! Every allocation's size comes off the thread's countdown
//! (`ThreadCache::charge`); when it runs out, `countdown_expired` draws the
//! next interval, runs the periodic scavenge, and says whether the request
//! that crossed zero is a sample. Large objects (and aligned ones no class
//! can serve) go through the same countdown as small ones, so they are
//! sampled in proportion to their size. A sampled object gets a span of its
//! own, recorded by the profiler. This file is the allocation path's one
//! door into the profiler (`record_alloc`, `record_free`); the layers
//! below only keep the `profile::Sample` it returns.
//!
//! Owns: the per-thread sampler state and the profiler re-entry guard.
//! Must never: sample an allocation the profiler itself makes.

use super::registry::is_static;
use super::{current, sizing, ThreadCache};
use crate::guard;
use crate::large;
use crate::profile;
use crate::sampler;

/// One thread's sampling state (owner-only).
///
///   until_sample (in `ThreadCache`) counts down from `interval`
pub(super) struct Sampling {
    /// The thread's random sampling intervals.
    pub(super) sampler: sampler::Sampler,
    /// Length of the countdown now running (`until_sample` started there).
    pub(super) interval: usize,
    /// Bytes allocated since the last scavenge, counted at sample points.
    since_scavenge: usize,
    /// This thread is inside the profiler (stack capture may allocate).
    in_profiler: bool,
}

impl Sampling {
    pub(super) const fn new() -> Self {
        Sampling {
            sampler: sampler::Sampler::new(0),
            interval: 0,
            since_scavenge: 0,
            in_profiler: false,
        }
    }

    /// Seeds the sampler and starts the first countdown of `tc`.
    pub(super) fn start(&mut self, tc: &ThreadCache, seed: u64) {
        self.sampler = sampler::Sampler::new(seed);
        self.interval = self.sampler.next_interval();
        // SAFETY: owner-only state of a cache being created.
        unsafe { *tc.until_sample.get() = self.interval as isize };
    }
}

/// A fork child draws its own samples: with the parent's sampler state two
/// children forked alike would sample the same allocations (identical
/// dumps). A fixed seed (MEMX_PROFILE_SEED) is mixed with the child's pid.
pub(super) fn reseed_after_fork(t: &ThreadCache) {
    // SAFETY: owner-only state of this thread's cache (the fork child's
    // only thread).
    let s = unsafe { &mut t.cold().sampling };
    let pid = crate::sys::getpid() as u64;
    s.start(
        t,
        sampler::thread_seed(|| pid << 32, crate::sys::random_u64() ^ pid),
    );
}

/// The countdown crossed zero: draw the next interval, scavenge now and
/// then, and say what the allocation that crossed it is (a profiler
/// sample, a guarded allocation, or neither).
pub(super) fn countdown_expired(t: &ThreadCache) -> sampler::Event {
    // SAFETY: owner-only state of this thread's cache.
    let cold = unsafe { t.cold() };
    let s = &mut cold.sampling;
    // The interval that just ran out is (give or take the last request)
    // what the thread allocated since the previous expiry.
    s.since_scavenge += s.interval;
    // SAFETY: as above.
    let overshoot = unsafe { *t.until_sample.get() }.saturating_neg().max(0) as usize;
    let event = s.sampler.event_for(overshoot);
    s.interval = s.sampler.next_interval();
    // SAFETY: as above.
    unsafe { *t.until_sample.get() = s.interval as isize };
    if s.since_scavenge >= sampler::SCAVENGE_BYTES {
        let period = core::mem::take(&mut s.since_scavenge);
        sizing::scavenge(t, &mut cold.sizing, period);
    }
    event
}

/// A sampled object: a span of its own, recorded by the profiler. An
/// allocation made while this thread is already inside the profiler (the
/// unwinder's own) is not sampled again.
#[cold]
#[inline(never)]
pub(super) fn alloc_sampled(size: usize, align: usize) -> *mut u8 {
    if !enter_profiler() {
        return large::alloc(size, align);
    }
    let p = large::alloc(size, align);
    if !p.is_null() {
        // No allocator lock is held here: the profiler may take its own.
        if let Some(sample) = profile::record_alloc(p as usize, size) {
            large::set_sample(p, sample);
        }
    }
    leave_profiler();
    p
}

/// `free` of a large (or sampled) object: a sampled one's record goes back
/// to the profiler once its span is free.
pub(super) fn free_large(p: *mut u8) {
    if let Some(sample) = large::free(p, "free") {
        profile::record_free(sample);
    }
}

/// Large objects (and aligned ones no class can serve), after the countdown.
#[cold]
#[inline(never)]
pub fn alloc_large(size: usize, align: usize) -> *mut u8 {
    if size <= large::MAX_REQUEST && count_down_is_sample(size) {
        return alloc_sampled(size, align);
    }
    // The first request of a program may be large: initialise (as the
    // small path does before creating a cache).
    crate::init::ensure();
    large::alloc(size, align)
}

/// Takes `size` bytes off this thread's countdown; true when the request
/// that crossed zero is to be a profiler sample. For requests served
/// outside the fast path (large ones, and the Python allocator hook's,
/// which memx does not serve unless sampled); they are never guarded (a
/// large object is bigger than a guarded slot, and the hook's objects are
/// pymalloc's). A thread with no cache yet counts nothing.
pub fn count_down_is_sample(size: usize) -> bool {
    charge_countdown(size) && crossed_zero_is_sample()
}

/// The first half of `count_down_is_sample`, for a caller where every
/// instruction counts (the Python allocator hook, on each of pymalloc's
/// requests): takes `size` off the countdown; true when it crossed zero,
/// and then `crossed_zero_is_sample` (cold) says whether to sample.
#[inline(always)]
pub fn charge_countdown(size: usize) -> bool {
    let tc = current();
    // SAFETY: a live cache (not static) is this thread's own.
    !is_static(tc) && unsafe { ThreadCache::charge(tc, size) }
}

/// After `charge_countdown` said true on this thread: whether the request
/// that crossed zero is a profiler sample (the countdown is redrawn).
#[cold]
#[inline(never)]
pub fn crossed_zero_is_sample() -> bool {
    let tc = current();
    // SAFETY: `charge_countdown` found this thread's live cache.
    countdown_expired(unsafe { &*tc }) == sampler::Event::Profile
}

/// A sampled object of `size` bytes that the countdown chose elsewhere (the
/// Python allocator hook): a span of its own, recorded with the stack.
pub fn alloc_sampled_object(size: usize) -> *mut u8 {
    alloc_sampled(size, 1)
}

/// A guarded object (`guard`), or null to allocate normally. The stack
/// capture may allocate: an allocation made meanwhile is not guarded.
#[cold]
#[inline(never)]
pub(super) fn alloc_guarded(size: usize) -> *mut u8 {
    if !enter_profiler() {
        return core::ptr::null_mut();
    }
    let p = guard::alloc(size, true);
    leave_profiler();
    p
}

/// Frees a guarded object, with the free stack when this thread may take it.
#[cold]
#[inline(never)]
pub(super) fn free_guarded(p: *mut u8) {
    let capture = enter_profiler();
    guard::free(p, "free", capture);
    if capture {
        leave_profiler();
    }
}

/// Marks the calling thread as inside the profiler. False if it already is
/// (a re-entry: an allocation made by the profiler's own work, which must
/// not be recorded) or has no cache (no per-thread state to mark).
pub fn enter_profiler() -> bool {
    let tc = current();
    if is_static(tc) {
        return false;
    }
    // SAFETY: owner-only state of this thread's live cache.
    let s = unsafe { &mut (*tc).cold().sampling };
    !core::mem::replace(&mut s.in_profiler, true)
}

/// Ends what `enter_profiler` (returning true) began.
pub fn leave_profiler() {
    let tc = current();
    if !is_static(tc) {
        // SAFETY: owner-only state of this thread's live cache.
        unsafe { (*tc).cold().sampling.in_profiler = false };
    }
}
