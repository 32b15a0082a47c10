//! How long a thread's lists may grow: the cache-sizing policy and the
//! global budget it draws on.
//!
//! List limits follow tcmalloc: a list's max_len starts at one batch when
//! first used, grows by a batch each time it runs empty (up to MAX_LEN),
//! and shrinks by a batch after repeated overflows. A trip moves a batch,
//! except on a list of at most a batch whose trips alternate between
//! refills and overflows: it is refilled or flushed to half (`turning`), as
//! jemalloc's thread caches are. All lists of a thread
//! together stay within the thread's claimed share of the global budget
//! `MEMX_THREAD_CACHE_BYTES`; a thread that cannot claim more steals
//! capacity from its own other lists, except while per-CPU caches are in
//! use (`cpu_cache`, threads outnumber CPUs): then its lists keep their limits and what overflows
//! goes to the CPU's cache, where the next thread on the CPU finds it.
//! With many more threads than CPUs the budget is soon spent, and
//! stealing then flushed and refilled partial chains on every burst. A thread claims at most START_CAP
//! until it finds a central lock held by another thread, or takes its slow
//! paths more than BUSY_TRIPS times per SCAVENGE_BYTES allocated or for
//! more than 1 / BUSY_SHARE of the bytes it allocated; each such event
//! doubles its cap, up to PER_THREAD_MAX. So caches grow where
//! they save slow-path trips and lock traffic (servers, big working sets),
//! and threads that take turns (Python's GIL) keep small ones.
//!
//! The equations (`Sizing`'s fields, `BUDGET`):
//!
//! ```text
//!   capacity ≤ limit ≤ cap ≤ PER_THREAD_MAX     per thread (capacity may
//!                                                pass limit by one step
//!                                                while budget is zero)
//!   BUDGET + Σ limit = MEMX_THREAD_CACHE_BYTES   over the live caches
//! ```
//!
//! Owns: `BUDGET`. Must never: change a list's `len`/`avail` except
//! through `FreeList`'s methods, or run on the fast path.

use super::slow::{flush, flush_to_central};
use super::{ThreadCache, MAX_LEN};
use crate::central::{CentralFreeList, CENTRAL, LINE_BYTES};
use crate::sampler;
use crate::size_class::{ClassInfo, CLASSES, NUM_CLASSES};
use crate::sys::lock::LockedGuard;
use crate::util::bitset::BitSet;
use core::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// The most one thread may claim of the global budget.
pub const PER_THREAD_MAX: usize = 2 << 20;
/// What a thread may claim until it meets contention or goes to its slow
/// paths often (BUSY_TRIPS). Without contention a
/// batch from the central list costs one uncontended lock, so a small
/// cache loses little speed, and threads that take turns (Python's GIL)
/// would otherwise each hold a full cache of idle objects.
pub(super) const START_CAP: usize = 256 << 10;
/// Slow-path trips (refills and overflows, wherever they were served) per
/// SCAVENGE_BYTES allocated above which the cache is too small for the
/// thread's working set, and its cap doubles (as on contention).
///
/// Every trip counts, not only those that took a central lock: a list
/// whose limit is still growing one object per overflow costs a slow-path
/// call each time without touching the central lists. Counting only
/// central trips let mimalloc-bench's larson (63 classes, random frees)
/// settle at 7% of frees overflowing and 124 allocator instructions per
/// malloc/free pair, against tcmalloc's 69 (callgrind); with every trip
/// counted and the cap doubling, 95. Measured with central trips at 256
/// KiB: a single-threaded churn of 8 B-1 KiB objects made 3,500 (and ran
/// 18% slower than with 2 MiB), pure-Python JSON work 750. At 500 larson
/// got to 75, but py-json's peak RSS rose 6% and 4 Python threads' 3%.
pub(super) const BUSY_TRIPS: usize = 1000;
/// Also busy: a period whose trips were for objects adding up to more than
/// 1 / BUSY_SHARE of the bytes it allocated: when those objects are like
/// the others, more than one allocation in BUSY_SHARE went past the cache.
/// BUSY_TRIPS alone rates trips per byte, which programs of larger objects
/// never reach: a 4 MiB period is 8,000 allocations of 500 B. Random frees
/// and allocations of 8-1000 B over 5,000 slots (larson's steady state)
/// took a slow path on 7% of them, 590 a period, and stayed at the 256 KiB
/// start cap (20-23 ns an operation, tcmalloc 14-15); espresso, 220 K trips
/// a run. Pure-Python JSON work, 750 trips of 32-64 B objects a period, is
/// about 1%.
pub(super) const BUSY_SHARE: usize = 32;
/// ... but a cap doubled for that reason stays within 1 / CAP_HEAP_SHARE of
/// the heap mapped so far: where the cache would be a large part of the
/// process, its trips are cheaper than its pages. espresso (2 MiB of heap,
/// 300 K trips a run at the start cap) peaked at 4.3 MiB with its cap
/// raised by bytes against 3.3 MiB without; larson's 2 threads map 10 MiB
/// and their caps may reach 1 MiB. The busy period's other effect (limits
/// kept at a batch, `scavenge_cut`) holds whatever the heap. With both,
/// medians of 5 interleaved runs: mimalloc-bench's rptest 3.2 -> 4.1 M
/// ops/s, larson-sized (suite arguments) 42.9 -> 47.4 (tcmalloc 5.6 and
/// 60.8), espresso's peak 3.2 -> 3.3 MiB.
pub(super) const CAP_HEAP_SHARE: usize = 8;
/// ... or 1 / CAP_HEAP_SHARE_SHARED of it while other threads cache objects
/// too (`central::sharing`): there a trip takes a lock other threads want
/// and hands objects, with their cache lines, between CPUs, while a lone
/// thread's cache saves it only uncontended trips and holds pages nobody
/// else can use. larson's threads (10 MiB of heap) then reach a 2 MiB cap,
/// not 1 MiB: with `turning`'s half moves, callgrind counted 1.63
/// instructions per instruction of larson's own work against 1.72 at 1 MiB
/// and tcmalloc's 1.67 (both rules at 1/4 raised espresso's peak from 3.2
/// to 4.0 MiB; glibc 2.3).
pub(super) const CAP_HEAP_SHARE_SHARED: usize = 4;
/// A thread sleeps between its bursts (`Sizing::sleeper`) when in one
/// scavenge period it blocked at least SLEEPS_PER_PERIOD times and ran
/// less than 1 / IDLE_RATIO of the period's wall time. Both, because each
/// alone also describes busy threads: one preempted among many on few CPUs
/// (16 larson threads on 2 CPUs ran 19% of their periods' time on average,
/// and rarely blocked), or one that waits on locks and condition variables
/// (in one xmalloc-test run, 500 periods blocked 8 times or more, 452 of
/// them about 160 times while running more than half the time, and none
/// ran under a tenth). Request threads that wait between bursts
/// (many-threads) blocked about 35 times a period and ran under 5% of it
/// in 704 of 710 such periods.
pub(super) const SLEEPS_PER_PERIOD: u64 = 8;
pub(super) const IDLE_RATIO: u64 = 10;
/// Budget is claimed from the global pool in steps of this much.
pub(super) const CLAIM_STEP: usize = 64 << 10;
/// Overflows tolerated before a list at more than one batch shrinks.
const MAX_OVERAGES: u32 = 3;

/// Unclaimed part of `MEMX_THREAD_CACHE_BYTES`: BUDGET + Σ limit over the
/// live caches equals it at all times.
pub(super) static BUDGET: AtomicI64 = AtomicI64::new(32 << 20);

/// Objects that threads over budget passed one at a time to and from the
/// per-CPU caches (`Sizing::starved`), as of each thread's last scavenge or
/// exit: `malloc_stats` shows it, a sign `MEMX_THREAD_CACHE_BYTES` is small
/// for the process's threads.
static STARVED_OBJECTS: AtomicU64 = AtomicU64::new(0);
/// Refills (a list ran empty) and overflows (a list was full, or had no
/// limit yet), as of each thread's last scavenge or exit. Each is a trip
/// past the thread cache, to the CPU's cache, the transfer ring or the
/// spans: what the fast paths cost is the ratio of these to all mallocs
/// and frees, and `malloc_stats` shows them so that a slow program can be
/// told apart from a program whose thread caches are too small for it
/// (mimalloc-bench's larson: 16-19 M trips in 5 s; its threads' lists, held
/// to a batch or less by the budget, refill and flush in turn).
static REFILLS: AtomicU64 = AtomicU64::new(0);
static OVERFLOWS: AtomicU64 = AtomicU64::new(0);
/// Scavenge periods after which a thread gave its whole cache back because
/// it had slept through them (`Sizing::sleeper`).
static SLEEPY_PERIODS: AtomicU64 = AtomicU64::new(0);

pub fn starved_objects() -> u64 {
    STARVED_OBJECTS.load(Relaxed)
}

/// (refills, overflows) of all threads, as of their last scavenge or exit.
pub fn list_trips() -> (u64, u64) {
    (REFILLS.load(Relaxed), OVERFLOWS.load(Relaxed))
}

/// Periods after which a thread gave its cache back for sleeping.
pub fn sleepy_periods() -> u64 {
    SLEEPY_PERIODS.load(Relaxed)
}

/// Adds the thread's counts since the last call to the global ones.
pub(super) fn publish_counts(sz: &mut Sizing) {
    for (count, total) in [
        (&mut sz.starved_objects, &STARVED_OBJECTS),
        (&mut sz.refills, &REFILLS),
        (&mut sz.overflows, &OVERFLOWS),
    ] {
        if *count > 0 {
            total.fetch_add(*count, Relaxed);
            *count = 0;
        }
    }
}

pub fn set_budget(bytes: u64) {
    BUDGET.store(bytes.min(i64::MAX as u64) as i64, Relaxed);
}

/// A set of size classes, one bit each.
pub(super) type ClassSet = BitSet<{ NUM_CLASSES.div_ceil(64) }>;

/// One thread's sizing state (owner-only).
///
///   capacity = Σ max_len × size over the lists
///   capacity ≤ limit ≤ cap ≤ PER_THREAD_MAX
pub(super) struct Sizing {
    /// Σ max_len × size over the lists, in bytes.
    pub(super) capacity: usize,
    /// Bytes claimed from the global budget (given back at thread exit).
    pub(super) limit: usize,
    /// The most this thread may claim: START_CAP, raised towards
    /// PER_THREAD_MAX on contention and on busy periods (`raise_cap`).
    pub(super) cap: usize,
    /// Per class: overflows of a list above one batch since it last shrank.
    overages: [u32; NUM_CLASSES],
    /// Per class: the list's recent trips (`turning`). TURN_SCORE bits: how
    /// often a trip went the other way from the one before (0-3: +2 on a
    /// turn, -1 on a repeat); LAST_WAS_REFILL, HAD_TRIP as named.
    turns: [u8; NUM_CLASSES],
    /// Per class: the list's `mark` as the last scavenge left it. The same
    /// mark at the next one: nobody used the list in the period (`scavenge`).
    scavenged_mark: [u32; NUM_CLASSES],
    /// The next class `steal` shrinks (round robin over 1..NUM_CLASSES).
    pub(super) steal_cursor: usize,
    /// Classes whose list ran empty since the last scavenge (bit per class).
    pub(super) dry: ClassSet,
    /// Classes whose list has a limit above zero, the only ones a scavenge
    /// visits: with large objects it runs every few hundred allocations.
    pub(super) active: ClassSet,
    /// A list at limit 0 could not grow while the per-CPU layer was in use
    /// (the budget is spent: many more threads than CPUs). Until the next
    /// scavenge, lists at limit 0 trade objects with this CPU's cache
    /// directly (`slow::starved_list`), without trying to grow each time.
    pub(super) starved: bool,
    /// Objects traded that way since the last scavenge (added to
    /// STARVED_OBJECTS at each scavenge and at thread exit).
    pub(super) starved_objects: u64,
    /// Refills and overflows since the last scavenge (added to REFILLS and
    /// OVERFLOWS likewise): together, the period's slow-path trips.
    pub(super) refills: u64,
    pub(super) overflows: u64,
    /// The sizes of the objects those trips were for, added up (one
    /// object a trip, whatever the batch moved): BUSY_SHARE's measure.
    pub(super) trip_bytes: usize,
    /// The thread's voluntary context switches, CPU time and the clock
    /// (µs) at its last scavenge while the per-CPU layer was in use (all 0:
    /// none since the layer was last idle).
    usage_at: Usage,
    /// The thread blocked at least SLEEPS_PER_PERIOD times in its last
    /// period while the per-CPU layer was in use (a request thread that
    /// waits between bursts): it holds no budget and its lists stay at
    /// limit 0, so its objects go to and come from its CPU's cache, where
    /// the next thread on that CPU finds them, until a period in which it
    /// did not sleep. A sleeping thread's own cache is memory nobody uses:
    /// 16 request threads on 2 CPUs held 4-5 MiB that way.
    pub(super) sleeper: bool,
    /// The registry counts this thread as busy (`registry::count_busy`):
    /// it has finished a scavenge period. Cleared by the registry when the
    /// cache is unregistered.
    pub(super) counted_busy: bool,
}

impl Sizing {
    pub(super) const fn new() -> Self {
        Sizing {
            capacity: 0,
            limit: 0,
            cap: START_CAP,
            overages: [0; NUM_CLASSES],
            turns: [0; NUM_CLASSES],
            scavenged_mark: [0; NUM_CLASSES],
            steal_cursor: 1,
            dry: ClassSet::EMPTY,
            active: ClassSet::EMPTY,
            starved: false,
            starved_objects: 0,
            refills: 0,
            overflows: 0,
            trip_bytes: 0,
            usage_at: Usage::ZERO,
            sleeper: false,
            counted_busy: false,
        }
    }

    /// Slow-path trips (refills and overflows) since the last scavenge.
    pub(super) fn slow_trips(&self) -> usize {
        (self.refills + self.overflows) as usize
    }
}

/// Gives back what the thread did not need lately: a list that never ran
/// empty since the last scavenge had objects to spare the whole time (the
/// slow-path stand-in for tcmalloc's low-water mark, which would cost the
/// fast path an instruction), so half of it goes back to the central list
/// and its limit drops (`scavenge_cut`: by a batch, or by half at a batch
/// or less, except in a busy period). Bursty
/// programs (Python) otherwise keep a burst's worth of every class cached
/// for good, and programs that use many classes a little each keep a batch
/// of each: glibc-thread's random sizes (16 B-32 KiB) left about 2 MiB per
/// thread in one-batch lists against a 250 KiB live set, and its peak RSS
/// was 3x glibc's (6.0 MB); halving such limits brought it to 3.2 MB at the
/// same speed. A class in steady use runs dry within a period and keeps its
/// limit. A thread that went to the central lists often in the period gets
/// a higher cap instead.
///
/// Except, while other threads cache objects too, a list of objects smaller
/// than two cache lines that is in use (its `FreeList::mark` moved): their
/// neighbours on the same lines are most likely this thread's live objects,
/// and halving the list every period sent them through the central lists to
/// the other threads. glibc-thread's two threads then wrote to the same
/// lines of 16-112 B objects (about 1,000 lines, each written by both
/// within microseconds thousands of times), and half its runs went at half
/// speed (92-97 M iterations against 177-189 M; mimalloc and jemalloc, whose
/// objects never change threads there, share no line). Larger objects share
/// at most their end lines; keeping their lists whole too raised the peak
/// RSS of mimalloc-bench's larson from 16 to 18 MiB (this rule: ours from
/// 8.2 to 8.8).
pub(super) fn scavenge(t: &ThreadCache, sz: &mut Sizing, period: usize) {
    super::registry::count_busy(sz);
    // Trips per SCAVENGE_BYTES allocated: with profiling on, periods vary
    // (they are sums of random sampling intervals).
    let busy_by_count = sz.slow_trips() * sampler::SCAVENGE_BYTES > BUSY_TRIPS * period;
    let busy_by_bytes = sz.trip_bytes * BUSY_SHARE > period;
    let (mapped, shared) = (crate::page_heap::mapped_ever(), crate::central::sharing());
    if busy_by_count || busy_by_bytes && share_may_double(sz.cap, mapped, shared) {
        raise_cap(sz);
    }
    let busy = busy_by_count || busy_by_bytes;
    sz.trip_bytes = 0;
    sz.starved = false;
    // Also restarts the period's trip count.
    publish_counts(sz);
    // Objects given back can reach another thread only if there is one.
    let shares_lines = crate::central::sharing();
    for class in sz.active.minus(sz.dry) {
        let list = &t.lists[class];
        let len = list.len();
        let mark = list.mark();
        let in_use = mark != core::mem::replace(&mut sz.scavenged_mark[class], mark);
        if len == 0 || in_use && shares_lines && (CLASSES[class].size as usize) < 2 * LINE_BYTES {
            continue;
        }
        flush_to_central(t, class, len.div_ceil(2));
        let cut = scavenge_cut(list.max_len(), CLASSES[class].batch, busy);
        shrink_by(t, sz, class, cut);
        sz.scavenged_mark[class] = list.mark();
    }
    sz.dry = ClassSet::EMPTY;
    sz.sleeper = slept_through(sz);
    if sz.sleeper {
        release_all(t, sz);
    }
    // Checked mode keeps every object to itself (`central::check`).
    t.set_via_cpu(sz.sleeper && !crate::central::check::enabled());
}

/// How much a scavenge lowers the limit `max_len` of a list that had
/// objects to spare all period: a batch, or half of it at a batch or less;
/// but in a busy period (the thread went past its cache often, see
/// BUSY_SHARE) never below one batch, as tcmalloc's scavenge. Halving
/// there sent the list back to slow start (one object more per trip) every
/// few periods: larson's steady state made 1.4 M trips in 20 M operations,
/// 1.2 M of them overflows; with this rule and the cap that busy periods
/// raise, 0.47 M (about 17 ns an operation, against 21).
pub(super) fn scavenge_cut(max_len: u32, batch: u32, busy: bool) -> u32 {
    if busy {
        max_len.saturating_sub(batch).min(batch)
    } else if max_len > batch {
        batch
    } else {
        max_len / 2
    }
}

/// What a thread did until a moment: blocked `switches` times, ran
/// `cpu_us` microseconds; `wall_us` is the moment.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Usage {
    pub(super) switches: u64,
    pub(super) cpu_us: u64,
    pub(super) wall_us: u64,
}

impl Usage {
    pub(super) const ZERO: Usage = Usage {
        switches: 0,
        cpu_us: 0,
        wall_us: 0,
    };

    fn now() -> Usage {
        let (switches, cpu_us) = crate::sys::thread_usage();
        Usage {
            switches,
            cpu_us,
            wall_us: crate::sys::now_ns() / 1000,
        }
    }

    /// Whether a thread that did `self` until `later` slept between bursts
    /// in the meantime (see SLEEPS_PER_PERIOD).
    pub(super) fn slept_until(&self, later: &Usage) -> bool {
        let blocked = later.switches.wrapping_sub(self.switches);
        let ran = later.cpu_us.wrapping_sub(self.cpu_us);
        let wall = later.wall_us.wrapping_sub(self.wall_us);
        blocked >= SLEEPS_PER_PERIOD && ran.saturating_mul(IDLE_RATIO) < wall
    }
}

/// Whether the thread slept through the period that ends now. With the
/// per-CPU layer idle it is not asked (no system call), and the first
/// period after that only starts the count.
fn slept_through(sz: &mut Sizing) -> bool {
    if !crate::cpu_cache::active() {
        sz.usage_at = Usage::ZERO;
        return false;
    }
    let now = Usage::now();
    let before = core::mem::replace(&mut sz.usage_at, now);
    before != Usage::ZERO && before.slept_until(&now)
}

/// Empties every list of the thread into its CPU's cache (or the central
/// lists), lowers their limits to 0 and gives its whole claim back.
pub(super) fn release_all(t: &ThreadCache, sz: &mut Sizing) {
    for class in sz.active.minus(ClassSet::EMPTY) {
        let max_len = t.lists[class].max_len();
        shrink_by(t, sz, class, max_len);
    }
    debug_assert_eq!(sz.capacity, 0);
    return_claim(sz);
    SLEEPY_PERIODS.fetch_add(1, Relaxed);
}

/// Raises `class`'s max_len (by one below a batch, else by a batch) if the
/// thread's budget allows, claiming more of the global budget, or, while
/// per-CPU caches are not in use, stealing from other lists.
pub(super) fn grow(t: &ThreadCache, class: usize) {
    grow_with(t, class, !crate::cpu_cache::active());
}

/// `grow`; with `may_steal` false, only within budget the thread can claim.
pub(super) fn grow_with(t: &ThreadCache, class: usize, may_steal: bool) {
    let k = &CLASSES[class];
    // SAFETY: owner-only state.
    let sz = &mut unsafe { t.cold() }.sizing;
    let list = &t.lists[class];
    let step = growth_step(k, list.max_len());
    let cost = step as usize * k.size as usize;
    let asleep = sz.sleeper && crate::cpu_cache::active();
    if asleep
        || sz.capacity + cost > sz.limit
            && !claim(sz, cost)
            && !(may_steal && steal(t, sz, class, cost))
    {
        sz.starved |= list.max_len() == 0 && crate::cpu_cache::active();
        return;
    }
    let add = step.min(MAX_LEN - list.max_len());
    list.grow(add);
    sz.active.insert(class);
    sz.capacity += add as usize * k.size as usize;
}

/// How much a list's max_len grows at a time. Slow start, as tcmalloc: a
/// class used now and then caches a few objects, not a whole batch, and a
/// busy one reaches a batch quickly. Except below 64 bytes: there objects
/// share cache lines, and one-object refills would hand neighbours on one
/// line to different threads (false sharing; the cache-thrash benchmark ran
/// at 3.8x glibc). A whole batch is a contiguous, line-aligned run.
fn growth_step(k: &ClassInfo, max_len: u32) -> u32 {
    if max_len < k.batch && k.size >= 64 {
        1
    } else {
        k.batch
    }
}

/// Claims budget so `capacity + cost` fits the thread's limit.
pub(super) fn claim(sz: &mut Sizing, cost: usize) -> bool {
    let need = sz.capacity + cost - sz.limit;
    let step = need.div_ceil(CLAIM_STEP) * CLAIM_STEP;
    if sz.limit + step > sz.cap {
        return false;
    }
    let mut left = BUDGET.load(Relaxed);
    loop {
        if left < step as i64 {
            return false;
        }
        match BUDGET.compare_exchange_weak(left, left - step as i64, Relaxed, Relaxed) {
            Ok(_) => break,
            Err(v) => left = v,
        }
    }
    sz.limit += step;
    true
}

/// Gives the thread's whole claim back to the budget (its lists are empty
/// and will not grow again: thread exit, or a thread gone in a fork child).
pub(super) fn give_back(sz: &mut Sizing) {
    publish_counts(sz);
    return_claim(sz);
    sz.capacity = 0;
}

/// Returns the thread's whole claim to the budget.
fn return_claim(sz: &mut Sizing) {
    BUDGET.fetch_add(sz.limit as i64, Relaxed);
    sz.limit = 0;
}

/// Shrinks other lists of this thread, round robin, until `cost` more
/// bytes fit. Visits only the lists with a limit (`active`): a thread that
/// uses one class (xmalloc-test's producers) found nothing to take on each
/// of its refills after scanning all 128 lists, 15 instructions per object.
pub(super) fn steal(t: &ThreadCache, sz: &mut Sizing, class: usize, cost: usize) -> bool {
    let mut others = sz.active;
    others.remove(class);
    while sz.capacity + cost > sz.limit {
        let Some(v) = others.next_from(sz.steal_cursor) else {
            return false;
        };
        sz.steal_cursor = if v + 1 >= NUM_CLASSES { 1 } else { v + 1 };
        if t.lists[v].max_len() > 0 {
            shrink(t, sz, v);
        }
        if t.lists[v].max_len() == 0 {
            others.remove(v);
        }
    }
    true
}

/// Lowers `class`'s max_len by one batch, flushing objects that no longer fit.
pub(super) fn shrink(t: &ThreadCache, sz: &mut Sizing, class: usize) {
    let cut = CLASSES[class].batch.min(t.lists[class].max_len());
    shrink_by(t, sz, class, cut);
}

/// Lowers `class`'s max_len by `cut` (at most max_len), flushing objects
/// that no longer fit.
fn shrink_by(t: &ThreadCache, sz: &mut Sizing, class: usize, cut: u32) {
    let k = &CLASSES[class];
    let list = &t.lists[class];
    let max_len = list.max_len();
    let len = list.len() as u32;
    let new_max = max_len - cut;
    if len > new_max {
        flush(t, class, (len - new_max) as usize);
    }
    list.shrink(cut);
    sz.capacity -= cut as usize * k.size as usize;
    if new_max == 0 {
        sz.active.remove(class);
    }
}

/// `class`'s central list, locked; a contended lock raises this thread's
/// cache cap (see START_CAP).
pub(super) fn central(t: &ThreadCache, class: usize) -> LockedGuard<'static, CentralFreeList> {
    let (guard, contended) = CENTRAL[class].lock_reporting();
    // SAFETY: owner-only state of the caller's own cache.
    let sz = &mut unsafe { t.cold() }.sizing;
    if contended {
        raise_cap(sz);
    }
    guard
}

/// Whether a busy period by BUSY_SHARE may double `cap`, with `mapped`
/// bytes of heap: 2 × cap ≤ mapped / CAP_HEAP_SHARE, or / CAP_HEAP_SHARE_SHARED
/// if `shared` (other threads cache objects too).
pub(super) fn share_may_double(cap: usize, mapped: usize, shared: bool) -> bool {
    let share = if shared {
        CAP_HEAP_SHARE_SHARED
    } else {
        CAP_HEAP_SHARE
    };
    2 * cap <= mapped / share
}

/// Doubles the thread's cap (up to PER_THREAD_MAX): a short-lived server
/// thread reaches the most it may hold three periods after it starts.
pub(super) fn raise_cap(sz: &mut Sizing) {
    sz.cap = (sz.cap * 2).min(PER_THREAD_MAX);
}

/// Records a trip of `class`'s list (a refill if `refill`, else an
/// overflow) and says whether its trips now turn: go one way, then the
/// other, as a list whose frees and mallocs come in random order (a random
/// walk between empty and full). Such a list should be left half full by a
/// trip (`refill_count`, `flush_count`), as jemalloc's thread caches fill
/// and flush to half: a full refill or a whole flush leaves it at the edge
/// it will cross next. For a walk over a limit of L objects the expected
/// time to the next trip is then about L/2 events rather than L²/8
/// (at L = 32: a trip on 1.6% of the events and half an object moved per
/// event, against 0.4% and 0.07 with half moves, simulated). A list whose
/// trips go one way (a producer's refills, a consumer's overflows) keeps
/// moving whole batches, which the transfer rings pass on in O(1).
///
/// Measured with callgrind on random frees and mallocs of 8-1000 B over
/// 5,000 slots (larson's steady state, one thread, 10 M of each): 1,158 M
/// instructions -> 1,051 M (tcmalloc 1,088 M, mimalloc 990 M), trips 719 K
/// -> 489 K (1,039 M and 437 K while a free that went around a list of
/// limit 0 counted as a trip direction, which `make_room` no longer does);
/// on mimalloc-bench's larson-sized, instructions per instruction of its
/// own work 1.81 -> 1.72 (tcmalloc 1.67).
pub(super) fn turning(sz: &mut Sizing, class: usize, refill: bool) -> bool {
    let t = sz.turns[class];
    let score = t & TURN_SCORE;
    let score = if t & HAD_TRIP == 0 {
        score
    } else if (t & LAST_WAS_REFILL != 0) != refill {
        (score + 2).min(TURN_SCORE)
    } else {
        score.saturating_sub(1)
    };
    sz.turns[class] = score | HAD_TRIP | if refill { LAST_WAS_REFILL } else { 0 };
    score >= 2
}

/// `Sizing::turns`' fields.
const TURN_SCORE: u8 = 3;
const LAST_WAS_REFILL: u8 = 4;
const HAD_TRIP: u8 = 8;

/// Whether a trip of a list whose trips turn (`turns`) and whose limit is
/// `max_len` moves half of it: only at a limit of at most a batch (above
/// that, a batch leaves the list half full or less already).
fn moves_half(turns: bool, max_len: u32, batch: u32) -> bool {
    turns && max_len <= batch
}

/// Objects a refill asks for: a batch (at most the limit, at least one),
/// or half the limit (`moves_half`).
pub(super) fn refill_count(batch: u32, max_len: u32, turns: bool) -> usize {
    let max_len = max_len.max(1);
    if moves_half(turns, max_len, batch) {
        max_len.div_ceil(2) as usize
    } else {
        batch.min(max_len) as usize
    }
}

/// Objects an overflow flushes from a full list of `len`: a batch (or all
/// of it if shorter), or half of it (`moves_half`).
pub(super) fn flush_count(len: usize, max_len: u32, batch: u32, turns: bool) -> usize {
    if moves_half(turns, max_len, batch) {
        (len / 2).max(1)
    } else {
        len.min(batch as usize)
    }
}

/// A full list (or one with limit 0) of `class` is about to take a freed
/// object: adjusts its limit and flushes as the policy says. False if the
/// object must go around the cache (straight to the central list).
pub(super) fn make_room(t: &ThreadCache, class: usize) -> bool {
    {
        // SAFETY: owner-only state (this borrow ends here).
        let sz = &mut unsafe { t.cold() }.sizing;
        sz.overflows += 1;
        sz.trip_bytes += CLASSES[class].size as usize;
    }
    let k = &CLASSES[class];
    let list = &t.lists[class];
    let max_len = list.max_len();
    if max_len == 0 {
        // This thread has not allocated from `class` lately (malloc's refill
        // would have raised the limit), so `p` most likely came from another
        // thread, whose neighbouring objects it shares cache lines with.
        // Caching it would make it this thread's next allocation (passive
        // false sharing: 4x glibc on cache-scratch). It goes back to its
        // span instead; the limit grows, so later frees are cached.
        grow(t, class);
        return false;
    }
    // Not above: the list was not full, it had no limit.
    // SAFETY: owner-only state (this borrow ends here).
    let turns = turning(&mut unsafe { t.cold() }.sizing, class, false);
    if !list.has_room() && max_len < k.batch {
        // Slow start on this side too (as tcmalloc): a thread that only
        // frees (a consumer) never refills, and at one object its every
        // free went to the spans one at a time. At a batch, its flushes are
        // whole batches, which the transfer cache passes on in O(1). Not
        // by shrinking its other lists, though: a consumer freeing every
        // class would only trade objects between them.
        grow_with(t, class, false);
    }
    if !list.has_room() {
        flush(
            t,
            class,
            flush_count(list.len(), list.max_len(), k.batch, turns),
        );
        // SAFETY: owner-only state.
        let sz = &mut unsafe { t.cold() }.sizing;
        if max_len > k.batch {
            sz.overages[class] += 1;
            if sz.overages[class] > MAX_OVERAGES {
                sz.overages[class] = 0;
                shrink(t, sz, class);
            }
        }
    }
    list.has_room()
}
