//! Thread caches on real threads: objects survive round trips, lists stay
//! within their limits, and thread exit gives everything back.

use super::*;
use std::collections::HashSet;

#[test]
fn malloc_free_round_trip_all_classes() {
    for class in 1..NUM_CLASSES {
        let size = size_of(class);
        let mut ptrs = Vec::new();
        for i in 0..100 {
            let p = malloc(size);
            assert!(!p.is_null());
            assert_eq!(p as usize % 16, 0);
            // SAFETY: `p` holds `size` bytes.
            unsafe { core::ptr::write_bytes(p, (i % 251) as u8, size) };
            ptrs.push(p);
        }
        let set: HashSet<_> = ptrs.iter().collect();
        assert_eq!(
            set.len(),
            ptrs.len(),
            "class {class} handed out an object twice"
        );
        for (i, &p) in ptrs.iter().enumerate() {
            // SAFETY: as above.
            let s = unsafe { core::slice::from_raw_parts(p, size) };
            assert!(s.iter().all(|&b| b == (i % 251) as u8));
            free(p);
        }
    }
}

#[test]
fn list_lengths_stay_within_limits() {
    let class = class_of(48);
    let ptrs: Vec<_> = (0..20000).map(|_| malloc(48)).collect();
    for p in ptrs {
        free(p);
    }
    let tc = current();
    assert!(!is_static(tc));
    // SAFETY: this thread's own cache.
    let list = unsafe { &(*tc).lists[class] };
    assert!(list.avail.load(Relaxed) >= 0);
    assert!(list.len() <= MAX_LEN as usize);
    // SAFETY: owner-only state, read by the owner.
    let cold = unsafe { &(*(*tc).cold.get()).sizing };
    assert!(cold.capacity <= cold.limit.max(CLASSES[class].batch as usize * 48));
    assert!(cold.limit <= PER_THREAD_MAX);
}

#[test]
fn thread_exit_returns_cache_and_budget() {
    let before = BUDGET.load(Relaxed);
    let handles: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(|| {
                let ptrs: Vec<_> = (0..1000).map(|i| malloc(16 + i % 2000)).collect();
                for p in ptrs {
                    free(p);
                }
                assert!(!is_static(current()));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Budget claimed by the exited threads came back (other tests' threads
    // may hold some concurrently, so only check it did not leak wholesale).
    let after = BUDGET.load(Relaxed);
    assert!(
        after >= before - (PER_THREAD_MAX as i64) * 4,
        "{before} -> {after}"
    );
}

#[test]
fn cross_thread_frees() {
    let ptrs: Vec<usize> = (0..5000).map(|i| malloc(8 + i % 700) as usize).collect();
    std::thread::spawn(move || {
        for p in ptrs {
            free(p as *mut u8);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn large_objects() {
    let p = malloc(1 << 20);
    assert!(!p.is_null());
    assert_eq!(p as usize % crate::size_class::PAGE_SIZE, 0);
    // SAFETY: 1 MiB was allocated.
    unsafe { core::ptr::write_bytes(p, 1, 1 << 20) };
    free(p);
    assert!(malloc(usize::MAX / 2).is_null());
}

#[test]
fn cached_links_are_encoded_and_checked() {
    // Grow this thread's list for the class first.
    for _ in 0..4 {
        let warm: Vec<_> = (0..64).map(|_| malloc(64)).collect();
        warm.into_iter().for_each(free);
    }
    let a = malloc(64);
    let b = malloc(64);
    free(a);
    free(b);
    let tc = current();
    // SAFETY: this thread's own cache.
    let list = unsafe { &(*tc).lists[class_of(64)] };
    let head = list.head.load(Relaxed);
    assert_eq!(head as *mut u8, b);
    // SAFETY: `b` is a free object on our list; reading its link word.
    let raw = unsafe { (*head).next };
    assert_ne!(raw as *mut u8, a, "the link is not stored in the clear");
    // SAFETY: as above.
    let decoded = unsafe { crate::free_object::link(head, link_key()) };
    assert_eq!(decoded as *mut u8, a);
    // The same word written in the clear (a forged link) decodes misaligned:
    // the next pop would see it and abort.
    let forged = crate::free_object::encode_link(a as *mut FreeObject, 0) ^ link_key();
    assert!(!crate::free_object::is_valid_link(
        forged as *mut FreeObject
    ));
    assert_eq!(malloc(64), b);
    assert_eq!(malloc(64), a);
    free(a);
    free(b);
}

#[test]
fn a_foreign_object_is_not_this_threads_next_allocation() {
    // The cache-scratch pattern: a thread's first free of a class is an
    // object another thread allocated (its neighbours are that thread's).
    // Handing it straight back would share its cache line across threads.
    for size in [8, 24, 48, 200] {
        let foreign = malloc(size) as usize;
        std::thread::spawn(move || {
            free(foreign as *mut u8);
            let mine = malloc(size);
            assert_ne!(
                mine as usize, foreign,
                "size {size}: got the foreign object back"
            );
            // Later frees of the class are cached as usual.
            free(mine);
            assert_eq!(malloc(size), mine);
            free(mine);
        })
        .join()
        .unwrap();
    }
}

/// Runs `f` on a new thread with its own cache, capped at START_CAP.
fn with_fresh_cache(f: impl FnOnce(&ThreadCache, &mut Sizing) + Send + 'static) {
    std::thread::spawn(|| {
        free(malloc(64));
        let tc = current();
        // SAFETY: this thread's own cache; its owner-only state is touched
        // by this thread alone.
        let (t, cold) = unsafe { (&*tc, &mut (*(*tc).cold.get()).sizing) };
        cold.cap = START_CAP;
        f(t, cold);
    })
    .join()
    .unwrap();
}

#[test]
fn claims_stop_at_the_threads_cap() {
    with_fresh_cache(|_, cold| {
        let room = START_CAP - cold.capacity;
        assert!(!claim(cold, room + CLAIM_STEP), "claimed past the cap");
        assert!(claim(cold, room), "could not claim up to the cap");
        assert!(cold.limit <= START_CAP);
    });
}

#[test]
fn frequent_slow_trips_raise_the_cap_at_scavenge() {
    with_fresh_cache(|t, cold| {
        let period = sampler::SCAVENGE_BYTES;
        cold.refills = BUSY_TRIPS as u64;
        scavenge(t, cold, period);
        assert_eq!(cold.cap, START_CAP, "raised at the threshold");
        assert_eq!(cold.slow_trips(), 0, "the count restarts each period");
        // The rate counts, not the number: a long period (profiling's are
        // sums of random intervals) may hold more trips.
        cold.refills = BUSY_TRIPS as u64;
        cold.overflows = 1;
        scavenge(t, cold, 2 * period);
        assert_eq!(cold.cap, START_CAP, "raised below the rate");
        cold.refills = BUSY_TRIPS as u64;
        cold.overflows = 1;
        scavenge(t, cold, period);
        assert_eq!(cold.cap, 2 * START_CAP);
    });
}

/// Trips for large objects count by their bytes too: a few hundred trips
/// a period are far under BUSY_TRIPS, yet for 500 B objects they are one
/// allocation in 14.
#[test]
fn trips_for_a_share_of_the_bytes_raise_the_cap_at_scavenge() {
    // A heap big enough for the doubled cap (CAP_HEAP_SHARE): one large
    // object maps it, and the heap never unmaps.
    let big = malloc(CAP_HEAP_SHARE * 4 * START_CAP);
    free(big);
    with_fresh_cache(|t, cold| {
        let period = sampler::SCAVENGE_BYTES;
        cold.refills = 200;
        cold.trip_bytes = period / BUSY_SHARE;
        scavenge(t, cold, period);
        assert_eq!(cold.cap, START_CAP, "raised at the share");
        assert_eq!(cold.trip_bytes, 0, "the bytes restart each period");
        cold.refills = 200;
        cold.trip_bytes = period / BUSY_SHARE + 1;
        scavenge(t, cold, period);
        assert_eq!(cold.cap, 2 * START_CAP);
    });
}

/// A cap is doubled for trips' bytes only while it stays within
/// 1 / CAP_HEAP_SHARE of the heap mapped (1 / CAP_HEAP_SHARE_SHARED while
/// other threads cache objects too): a small program's trips are cheaper
/// than the pages a bigger cache would hold.
#[test]
fn the_heap_bounds_a_cap_raised_for_bytes() {
    let heap = CAP_HEAP_SHARE * 2 * START_CAP;
    assert!(share_may_double(START_CAP, heap, false));
    assert!(!share_may_double(START_CAP, heap - 1, false));
    assert!(!share_may_double(2 * START_CAP, heap, false));
    assert!(
        !share_may_double(START_CAP, 2 << 20, false),
        "espresso's 2 MiB heap"
    );
    // Other threads' caches: a larger share.
    let shared = CAP_HEAP_SHARE_SHARED * 2 * START_CAP;
    assert!(shared < heap);
    assert!(share_may_double(START_CAP, shared, true));
    assert!(!share_may_double(START_CAP, shared - 1, true));
    assert!(
        share_may_double(PER_THREAD_MAX / 2, 10 << 20, true),
        "larson's 10 MiB heap, 2 threads"
    );
    assert!(!share_may_double(PER_THREAD_MAX / 2, 10 << 20, false));
    // Trips by count (BUSY_TRIPS) still raise it in any heap.
    with_fresh_cache(|t, cold| {
        let period = sampler::SCAVENGE_BYTES;
        cold.cap = PER_THREAD_MAX / 2;
        cold.refills = (BUSY_TRIPS + 1) as u64;
        scavenge(t, cold, period);
        assert_eq!(
            cold.cap, PER_THREAD_MAX,
            "trips by count raise it whatever the heap"
        );
    });
}

/// A refill and an overflow each add their object's size to the period's
/// trip bytes.
#[test]
fn refills_and_overflows_count_their_object_bytes() {
    with_fresh_cache(|_, _| {
        // Read through the cache itself: malloc writes it behind the
        // closure's `&mut`.
        // SAFETY: this thread's own cache, read between its calls.
        let trip_bytes = || unsafe { (*(*current()).cold.get()).sizing.trip_bytes };
        let size = 1000;
        let class = class_of(size);
        let before = trip_bytes();
        let p = malloc(size);
        assert_eq!(
            trip_bytes(),
            before + CLASSES[class].size as usize,
            "a refill"
        );
        let batch = CLASSES[class].batch as usize;
        let more: Vec<_> = (0..4 * batch).map(|_| malloc(size)).collect();
        let before = trip_bytes();
        for &q in &more {
            free(q);
        }
        let trips = (trip_bytes() - before) / CLASSES[class].size as usize;
        assert!(
            trips >= 1,
            "freeing {} objects made no overflow",
            more.len()
        );
        free(p);
    });
}

/// In a busy period a scavenge does not take a list's limit below one
/// batch (tcmalloc's rule); in a quiet one it halves limits at a batch or
/// less, as before.
#[test]
fn a_busy_period_keeps_limits_at_a_batch() {
    assert_eq!(scavenge_cut(32, 32, true), 0);
    assert_eq!(scavenge_cut(20, 32, true), 0);
    assert_eq!(scavenge_cut(40, 32, true), 8);
    assert_eq!(scavenge_cut(96, 32, true), 32);
    assert_eq!(scavenge_cut(32, 32, false), 16);
    assert_eq!(scavenge_cut(96, 32, false), 32);
    with_fresh_cache(|t, cold| {
        let size = 1000;
        let class = class_of(size);
        let list = fill_unused_list(t, class, size, 8);
        let max_len = list.max_len();
        assert!(max_len >= 8 && max_len <= CLASSES[class].batch, "{max_len}");
        cold.dry = ClassSet::EMPTY;
        cold.trip_bytes = sampler::SCAVENGE_BYTES;
        scavenge(t, cold, sampler::SCAVENGE_BYTES);
        assert_eq!(list.max_len(), max_len, "the limit stays");
        assert_eq!(list.len(), 4, "half the objects still go back");
    });
}

/// A list that had objects to spare for a whole period gives half of them
/// back, and its limit halves even at a batch or less: with many classes in
/// use a little each (glibc-thread's random sizes), lists that kept one
/// batch each held 2 MiB per thread against a 250 KiB live set.
#[test]
fn a_list_that_never_ran_dry_halves_its_limit_at_scavenge() {
    with_fresh_cache(|t, cold| {
        let size = 1000;
        let class = class_of(size);
        let list = fill_unused_list(t, class, size, 8);
        let max_len = list.max_len();
        assert!(max_len >= 8 && max_len <= CLASSES[class].batch, "{max_len}");
        let capacity = cold.capacity;
        cold.dry = ClassSet::EMPTY;
        scavenge(t, cold, sampler::SCAVENGE_BYTES);
        assert_eq!(list.max_len(), max_len - max_len / 2);
        assert!(list.len() <= list.max_len() as usize);
        assert_eq!(list.len(), 4, "half the objects went back");
        // capacity = Σ max_len × size still holds.
        let sum: usize = (1..NUM_CLASSES)
            .map(|c| t.lists[c].max_len() as usize * CLASSES[c].size as usize)
            .sum();
        assert_eq!(cold.capacity, sum);
        assert!(cold.capacity <= capacity - (max_len / 2) as usize * CLASSES[class].size as usize);
        // A list that ran dry in the period keeps its limit.
        cold.dry.insert(class);
        scavenge(t, cold, sampler::SCAVENGE_BYTES);
        assert_eq!(list.max_len(), max_len - max_len / 2);
    });
}

/// With other threads about, a list of objects smaller than two cache lines
/// keeps its objects while it is in use, even if it never ran dry: halving
/// it sent them through the central lists to other threads every period,
/// and glibc-thread's two threads then wrote to the same cache lines (its
/// slow runs: 92 M iterations against 180 M). Once idle for a period, it
/// halves.
#[test]
fn a_list_of_small_objects_in_use_keeps_them_at_scavenge() {
    // Another thread with a cache for the whole test: with none, objects
    // given back could not reach another thread, and the list halves.
    let (ready_tx, ready) = std::sync::mpsc::channel();
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        free(malloc(64));
        ready_tx.send(()).unwrap();
        done_rx.recv().ok();
    });
    ready.recv().unwrap();
    with_fresh_cache(|t, cold| {
        let size = 48;
        let class = class_of(size);
        let mut spare = malloc(size);
        let list = fill_unused_list(t, class, size, 8);
        let max_len = list.max_len();
        cold.dry = ClassSet::EMPTY;
        for round in 0..4 {
            scavenge(t, cold, sampler::SCAVENGE_BYTES);
            assert_eq!((list.max_len(), list.len()), (max_len, 8), "round {round}");
            // The period's traffic: an object taken and another given back,
            // at the same length.
            let taken = malloc(size);
            free(spare);
            spare = taken;
        }
        scavenge(t, cold, sampler::SCAVENGE_BYTES);
        assert_eq!(list.len(), 8, "changed in the last period");
        scavenge(t, cold, sampler::SCAVENGE_BYTES);
        assert_eq!(list.len(), 4, "idle for a period");
        assert!(list.max_len() < max_len);
        free(spare);
    });
    done.send(()).unwrap();
    other.join().unwrap();
}

/// Raises `class`'s limit to at least `n`. The global budget is shared
/// with the other tests' threads (3 MiB with per-CPU caches on 2 CPUs), so
/// a claim may have to wait until they give theirs back.
fn grow_to(t: &ThreadCache, class: usize, n: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while t.lists[class].max_len() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "no budget for {n} objects"
        );
        let before = t.lists[class].max_len();
        grow_with(t, class, false);
        if t.lists[class].max_len() == before {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// Empties `class`'s list, raises its limit to at least `n` and leaves `n`
/// objects of `size` on it.
fn fill_unused_list(t: &ThreadCache, class: usize, size: usize, n: usize) -> &FreeList {
    let list = &t.lists[class];
    grow_to(t, class, n as u32);
    let ptrs: Vec<_> = (0..n).map(|_| malloc(size)).collect();
    slow::flush(t, class, list.len());
    for &p in &ptrs {
        // SAFETY: `p` is a live object of `class`, given up here; the
        // emptied list has room for `n` (its limit is at least `n`).
        unsafe { list.push(p as *mut FreeObject, t.key) };
    }
    list
}

/// A period of `blocked` voluntary switches in which the thread ran
/// `permille`/1000 of a 100 ms wall time.
fn period(blocked: u64, permille: u64) -> (Usage, Usage) {
    let start = Usage {
        switches: 40,
        cpu_us: 5_000,
        wall_us: 1_000_000,
    };
    let end = Usage {
        switches: start.switches + blocked,
        cpu_us: start.cpu_us + permille * 100,
        wall_us: start.wall_us + 100_000,
    };
    (start, end)
}

/// Sleeping between bursts takes both blocking often and running little:
/// a thread preempted among many busy ones runs little but rarely blocks,
/// and a producer waiting on a full ring blocks often but runs most of the
/// time.
#[test]
fn a_thread_sleeps_between_bursts_when_it_blocks_often_and_runs_little() {
    let slept = |blocked, permille| {
        let (a, b) = period(blocked, permille);
        a.slept_until(&b)
    };
    assert!(slept(35, 30), "a request thread (many-threads)");
    assert!(!slept(0, 150), "one of 16 busy threads on 2 CPUs (larson)");
    assert!(
        !slept(160, 600),
        "a producer on a condition variable (xmalloc-test)"
    );
    assert!(!slept(SLEEPS_PER_PERIOD - 1, 10), "too few blocks");
    assert!(slept(SLEEPS_PER_PERIOD, 1000 / IDLE_RATIO - 1));
    assert!(!slept(SLEEPS_PER_PERIOD, 1000 / IDLE_RATIO));
    // The counters only grow; a thread that read them wrapped (or a clock
    // that stood still) does not count as asleep.
    let (a, mut b) = period(35, 30);
    b.wall_us = a.wall_us;
    assert!(!a.slept_until(&b));
}

/// A sleeping thread's lists go empty at limit 0 and its claim goes back,
/// keeping capacity = Σ max_len × size and BUDGET + Σ limit constant.
#[test]
fn a_sleeping_thread_gives_its_whole_cache_back() {
    with_fresh_cache(|t, cold| {
        let before = sleepy_periods();
        for size in [32, 200, 1000] {
            let class = class_of(size);
            let ptrs: Vec<_> = (0..8).map(|_| malloc(size)).collect();
            ptrs.into_iter().for_each(free);
            assert!(!t.lists[class].is_empty(), "size {size}: nothing cached");
        }
        assert!(cold.limit > 0 && cold.capacity > 0);
        release_all(t, cold);
        for class in 1..NUM_CLASSES {
            assert_eq!(t.lists[class].max_len(), 0, "class {class}");
            assert_eq!(t.lists[class].len(), 0, "class {class}");
        }
        assert_eq!((cold.capacity, cold.limit), (0, 0));
        assert_eq!(cold.active, ClassSet::EMPTY);
        assert!(sleepy_periods() > before);
    });
}

/// A sleeping thread's misses (`via_cpu`) charge the countdown exactly
/// once, whether its CPU's single-object list serves them or the slow path
/// does (the layer may be idle in a test process), and its objects come
/// back whole.
#[test]
fn a_sleeping_threads_misses_charge_the_countdown_once() {
    with_fresh_cache(|t, cold| {
        release_all(t, cold);
        cold.sleeper = true;
        t.set_via_cpu(true);
        let until = || {
            // SAFETY: this thread's own countdown, read between its calls.
            unsafe { core::ptr::read_volatile(t.until_sample.get()) }
        };
        for size in [32, 200, 1000, 1000, 200, 32] {
            // SAFETY: as above; far from running out.
            unsafe { *t.until_sample.get() = 1 << 40 };
            let p = malloc(size);
            assert!(!p.is_null());
            assert_eq!(until(), (1 << 40) - size as isize, "size {size}");
            // SAFETY: `p` is a fresh object of `size` bytes.
            unsafe { core::ptr::write_bytes(p, 0xa5, size) };
            free(p);
        }
        t.set_via_cpu(false);
    });
}

/// The calling thread's (refills, overflows) since its last scavenge,
/// read afresh each time: malloc and free update them behind any
/// reference a test could hold.
fn own_trip_counts() -> (u64, u64) {
    // SAFETY: this thread's own cache, read between its calls.
    let sz = unsafe { &(*(*current()).cold.get()).sizing };
    // SAFETY: as above.
    unsafe {
        (
            core::ptr::read_volatile(&sz.refills),
            core::ptr::read_volatile(&sz.overflows),
        )
    }
}

/// Refills and overflows count as trips even when no central lock is
/// taken: a list still growing one object per overflow is as slow.
#[test]
fn every_slow_path_trip_counts_toward_the_cap() {
    std::thread::spawn(|| {
        free(malloc(64));
        let trips = || {
            let (refills, overflows) = own_trip_counts();
            refills + overflows
        };
        let size = 3000;
        let before = trips();
        let p = malloc(size);
        assert_eq!(trips(), before + 1, "a refill is a trip");
        let q = malloc(size);
        let refilled = trips();
        free(p);
        free(q);
        // The list's limit starts at one object and grows one at a time
        // (slow start), so a free finds it full and only grows it.
        assert!(trips() > refilled, "an overflow is a trip");
    })
    .join()
    .unwrap();
}

#[test]
fn contention_raises_the_cap_up_to_the_per_thread_max() {
    with_fresh_cache(|_, cold| {
        raise_cap(cold);
        assert_eq!(cold.cap, 2 * START_CAP);
        for _ in 0..100 {
            raise_cap(cold);
        }
        assert_eq!(cold.cap, PER_THREAD_MAX);
    });
}

#[test]
fn active_classes_are_exactly_those_with_a_limit() {
    std::thread::spawn(|| {
        free(malloc(16));
        let tc = current();
        let check = || {
            // SAFETY: this thread's own cache, owner-only state.
            let cold = unsafe { &(*(*tc).cold.get()).sizing };
            for class in 1..NUM_CLASSES {
                // SAFETY: as above.
                let max_len = unsafe { (*tc).lists[class].max_len.load(Relaxed) };
                let bit = cold.active.contains(class);
                assert_eq!(bit, max_len > 0, "class {class}, max_len {max_len}");
            }
        };
        let mut live = Vec::new();
        for i in 0..20000usize {
            live.push(malloc(16 + (i * 7919) % 40000));
            if i % 3 == 0 {
                free(live.swap_remove((i * 31) % live.len()));
            }
        }
        live.into_iter().for_each(free);
        check();
        // Shrinking every list to nothing clears every bit.
        // SAFETY: as above.
        let (t, cold) = unsafe { (&*tc, &mut (*(*tc).cold.get()).sizing) };
        for class in 1..NUM_CLASSES {
            while t.lists[class].max_len.load(Relaxed) > 0 {
                shrink(t, cold, class);
            }
        }
        check();
        assert_eq!(cold.active, ClassSet::EMPTY);
    })
    .join()
    .unwrap();
}

#[test]
fn list_zero_stays_empty_with_no_room() {
    std::thread::spawn(|| {
        let mut live = Vec::new();
        for i in 0..5000usize {
            live.push(malloc([0, 8, 300, 5000, 300 << 10][i % 5]));
        }
        live.into_iter().for_each(free);
        let tc = current();
        // SAFETY: this thread's own cache.
        let list = unsafe { &(*tc).lists[0] };
        assert!(list.is_empty());
        assert!(list.avail.load(Relaxed) <= 0);
        assert_eq!(list.max_len.load(Relaxed), 0);
    })
    .join()
    .unwrap();
}

#[test]
fn a_thread_that_only_frees_caches_whole_batches() {
    // The consumer of a producer/consumer pair never refills, so its lists
    // must grow on the free side, or each free goes to the spans alone.
    let size = 200;
    let class = class_of(size);
    let ptrs: Vec<usize> = (0..1000).map(|_| malloc(size) as usize).collect();
    std::thread::spawn(move || {
        for p in ptrs {
            free(p as *mut u8);
        }
        // SAFETY: this thread's own cache.
        let max_len = unsafe { (*current()).lists[class].max_len.load(Relaxed) };
        assert!(max_len >= CLASSES[class].batch, "max_len {max_len}");
    })
    .join()
    .unwrap();
}

#[test]
fn class_set_difference_in_order() {
    let (mut a, mut b) = (ClassSet::EMPTY, ClassSet::EMPTY);
    for c in [1, 5, 63, 64, 100, NUM_CLASSES - 1] {
        a.insert(c);
    }
    b.insert(5);
    b.insert(100);
    let got: Vec<_> = a.minus(b).collect();
    assert_eq!(got, [1, 63, 64, NUM_CLASSES - 1]);
    a.remove(64);
    assert!(!a.contains(64) && a.contains(63));
}

#[test]
fn class_set_next_from_wraps_around() {
    let mut a = ClassSet::EMPTY;
    assert_eq!(a.next_from(1), None);
    for c in [3, 64, NUM_CLASSES - 1] {
        a.insert(c);
    }
    assert_eq!(a.next_from(1), Some(3));
    assert_eq!(a.next_from(3), Some(3));
    assert_eq!(a.next_from(4), Some(64));
    assert_eq!(a.next_from(65), Some(NUM_CLASSES - 1));
    a.remove(NUM_CLASSES - 1);
    assert_eq!(a.next_from(65), Some(3), "wraps to the lowest");
    a.remove(3);
    assert_eq!(a.next_from(64), Some(64));
    assert_eq!(a.next_from(65), Some(64), "wraps within one word");
}

/// Stealing takes from the thread's other lists with a limit and from
/// nothing else, however far the cursor is from them.
#[test]
fn steal_takes_only_from_other_active_lists() {
    std::thread::spawn(|| {
        free(malloc(64));
        let tc = current();
        // SAFETY: this thread's own live cache.
        let t = unsafe { &*tc };
        let (a, b) = (class_of(48), class_of(2000));
        grow_to(t, b, 3);
        // SAFETY: owner-only state, no other reference to it alive now.
        let cold = unsafe { &mut (*t.cold.get()).sizing };
        let before = t.lists[b].max_len();
        assert!(before > 0 && cold.active.contains(b));
        cold.steal_cursor = b + 1;
        let cost = cold.limit - cold.capacity + size_of(b);
        assert!(steal(t, cold, a, cost), "list b had capacity to give");
        assert!(t.lists[b].max_len() < before);
        // Nothing else to take: fails without looping.
        let mut others = cold.active;
        others.remove(a);
        for c in others.minus(ClassSet::EMPTY).collect::<Vec<_>>() {
            while t.lists[c].max_len() > 0 {
                shrink(t, cold, c);
            }
        }
        assert!(!steal(t, cold, a, cold.limit - cold.capacity + 1));
    })
    .join()
    .unwrap();
}

/// malloc_stats counts refills and overflows apart, from each thread's
/// counts as published at its scavenges and at its exit.
#[test]
fn refills_and_overflows_are_counted_and_published() {
    std::thread::spawn(|| {
        free(malloc(64));
        let counts = own_trip_counts;
        let size = 3000;
        let (r0, o0) = counts();
        let p = malloc(size);
        assert_eq!(counts(), (r0 + 1, o0), "a refill, no overflow");
        let q = malloc(size);
        free(p);
        free(q);
        let (r1, o1) = counts();
        assert!(o1 > o0, "the list, at one object, overflowed");
        let (total_r, total_o) = list_trips();
        // SAFETY: this thread's own cache; no other reference is alive.
        publish_counts(unsafe { &mut (*(*current()).cold.get()).sizing });
        assert_eq!(counts(), (0, 0), "published counts restart");
        let (after_r, after_o) = list_trips();
        assert!(after_r >= total_r + r1 && after_o >= total_o + o1);
    })
    .join()
    .unwrap();
}

#[test]
fn trips_that_turn_move_half_a_list() {
    let mut sz = Sizing::new();
    // A consumer's overflows and a producer's refills go one way: batches.
    for _ in 0..10 {
        assert!(!turning(&mut sz, 5, false));
        assert!(!turning(&mut sz, 6, true));
    }
    // A turn makes the next moves halves; one repeat after two turns does
    // not undo that, two do.
    assert!(turning(&mut sz, 5, true), "refill after overflows");
    assert!(!turning(&mut sz, 5, true), "a repeat after one turn");
    assert!(turning(&mut sz, 5, false));
    assert!(turning(&mut sz, 5, true));
    assert!(turning(&mut sz, 5, true), "one repeat after two turns");
    assert!(!turning(&mut sz, 5, true), "two repeats");
    assert!(!turning(&mut sz, 6, true), "classes are apart");
    // What a trip moves: half of a limit of at most a batch, else as before.
    assert_eq!(refill_count(32, 32, true), 16);
    assert_eq!(refill_count(32, 5, true), 3);
    assert_eq!(refill_count(32, 0, true), 1);
    assert_eq!(refill_count(32, 32, false), 32);
    assert_eq!(refill_count(32, 64, true), 32);
    assert_eq!(flush_count(32, 32, 32, true), 16);
    assert_eq!(flush_count(1, 1, 32, true), 1);
    assert_eq!(flush_count(32, 32, 32, false), 32);
    assert_eq!(flush_count(64, 64, 32, true), 32);
}

/// A list held to one batch by its thread's cap, whose frees and mallocs
/// come in random order (a random walk between empty and full, as in
/// mimalloc-bench's larson), leaves the cache on under 1% of them (0.43%).
/// Refilled to the top and flushed to empty, as before `turning`, it did
/// on 1.6% (645 trips in these 40,000 events).
#[test]
fn a_random_walk_seldom_leaves_a_list_held_to_a_batch() {
    with_fresh_cache(|t, cold| {
        let size = 512;
        let class = class_of(size);
        let batch = CLASSES[class].batch;
        grow_to(t, class, batch);
        // No room to grow past a batch (a whole batch more), nor to steal
        // it from the one other list: the claim's unused part goes back,
        // and the cap stays at the claim against busy periods.
        let unused = cold.limit - cold.capacity;
        cold.limit -= unused;
        BUDGET.fetch_add(unused as i64, Relaxed);
        let cap = cold.limit;
        let hold_cap = || {
            // SAFETY: this thread's own cache, written between its calls.
            unsafe { core::ptr::write_volatile(&mut (*(*current()).cold.get()).sizing.cap, cap) }
        };
        hold_cap();
        let mut live: Vec<*mut u8> = (0..64).map(|_| malloc(size)).collect();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let (mut trips, mut last) = (0u64, own_trip_counts());
        let events = 40_000;
        for _ in 0..events {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            if rng & 1 == 0 && live.len() > 1 {
                let i = (rng >> 8) as usize % live.len();
                free(live.swap_remove(i));
            } else {
                live.push(malloc(size));
            }
            hold_cap();
            let now = own_trip_counts();
            // A scavenge restarts the counts.
            let (r, o) = if now.0 < last.0 || now.1 < last.1 {
                (0, 0)
            } else {
                last
            };
            trips += now.0 - r + now.1 - o;
            last = now;
        }
        assert!(
            t.lists[class].max_len() <= batch,
            "the list grew past a batch"
        );
        for p in live {
            free(p);
        }
        assert!(
            trips * 100 < events,
            "{trips} trips in {events} frees and mallocs"
        );
    });
}

/// A thread counts as busy (for the locks' spinning) once it has allocated
/// a scavenge period's bytes, and stops counting when it exits.
#[test]
fn a_thread_counts_as_busy_after_its_first_period_until_it_exits() {
    let busy_flag = || {
        // SAFETY: this thread's own live cache (it has allocated).
        unsafe { (*current()).cold() }.sizing.counted_busy
    };
    let (fresh, worked, busy) = std::thread::spawn(move || {
        free(malloc(16));
        let fresh = busy_flag();
        let step = 64 << 10;
        for _ in 0..(2 * sampler::SCAVENGE_BYTES / step + 1) {
            free(malloc(step));
        }
        (fresh, busy_flag(), registry::busy_and_count().0)
    })
    .join()
    .unwrap();
    assert!(!fresh, "a new thread is not busy");
    assert!(worked, "two periods' bytes make it busy");
    assert!(busy >= 1);
    let (busy, count) = registry::busy_and_count();
    assert!(
        busy <= count,
        "an exited thread still counted: {busy} > {count}"
    );
}

/// Locks spin for rptest's shape (two busy workers and a sleeping main
/// thread on two CPUs), not for xmalloc-test's (two producers, two
/// consumers that only free, and main) nor for more busy threads than CPUs.
#[test]
fn locks_spin_with_one_idle_thread_beside_busy_ones_but_not_more() {
    assert!(registry::spin_rule(1, 1, 2), "one thread");
    assert!(registry::spin_rule(2, 3, 2), "rptest: 2 busy + main");
    assert!(!registry::spin_rule(2, 5, 2), "xmalloc-test: 2 busy of 5");
    assert!(!registry::spin_rule(3, 3, 2), "3 busy threads on 2 CPUs");
    assert!(!registry::spin_rule(16, 17, 2), "larson, 16 threads");
    assert!(registry::spin_rule(8, 9, 16));
}
