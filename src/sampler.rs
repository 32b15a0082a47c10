//! Bytes until the next sample: exponentially distributed gaps (a Poisson
//! process over allocated bytes, as google's tcmalloc samples), so every byte
//! has the same chance of being sampled and large objects are caught in
//! proportion to their size.
//!
//! Owns: the mean intervals (profiler samples and guarded allocations, 0 =
//! off) and the per-thread draw. The same countdown paces periodic work
//! while both are off, and never runs longer than IDLE_INTERVAL.
//!
//! Two kinds of sample points share one countdown: profiler samples (mean
//! MEMX_PROFILE_SAMPLE) and guarded allocations (mean MEMX_GUARD_SAMPLE).
//! Two independent Poisson processes over the same bytes are one Poisson
//! process of the summed rate whose points are each of one kind or the
//! other with probability in proportion to the rates; so each draw picks
//! the gap at the summed rate and, at once, the kind of the point it ends
//! at (`Sampler::event`). A gap longer than IDLE_INTERVAL is cut there with
//! no point at its end: the process is memoryless, so the next draw starts
//! it afresh with the same law.
//! Must never: allocate, or use floating-point functions from libm (this
//! module computes its own logarithm).

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The countdown's period when profiling is off: the slow path still runs
/// this often, and the thread cache scavenges its idle lists then.
pub const IDLE_INTERVAL: usize = SCAVENGE_BYTES;

/// Bytes a thread allocates between two scavenges of its cache.
pub const SCAVENGE_BYTES: usize = 4 << 20;

/// Mean bytes between samples; 0 while profiling is off.
static MEAN: AtomicUsize = AtomicUsize::new(0);

/// Mean bytes between guarded allocations; 0 while guarded sampling is off.
static GUARD_MEAN: AtomicUsize = AtomicUsize::new(0);

/// What the allocation that ends a countdown is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// Nothing (periodic work only).
    None,
    /// A profiler sample.
    Profile,
    /// A guarded allocation.
    Guard,
}

/// A fixed seed for every thread's draws (MEMX_PROFILE_SEED; 0 = random).
static SEED: AtomicU64 = AtomicU64::new(0);

pub fn set_seed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
}

/// The seed of a thread's draws: random (`random`) unless a fixed seed is
/// set, which makes a single-threaded program's samples reproducible; then
/// `thread_index()` (0 for the main thread) tells threads apart. A
/// function, since working the index out may take system calls.
pub fn thread_seed(thread_index: impl FnOnce() -> u64, random: u64) -> u64 {
    match SEED.load(Ordering::Relaxed) {
        0 => random,
        s => s ^ thread_index().wrapping_mul(0x9e37_79b9_7f4a_7c15),
    }
}

pub fn set_mean(bytes: usize) {
    MEAN.store(bytes, Ordering::Relaxed);
}

pub fn mean() -> usize {
    MEAN.load(Ordering::Relaxed)
}

pub fn set_guard_mean(bytes: usize) {
    GUARD_MEAN.store(bytes, Ordering::Relaxed);
}

pub fn guard_mean() -> usize {
    GUARD_MEAN.load(Ordering::Relaxed)
}

/// Per-thread random state (xorshift64*).
#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    state: u64,
    /// The kind of the point the last drawn interval ends at.
    event: Event,
}

impl Sampler {
    pub const fn new(seed: u64) -> Self {
        // splitmix64 of the seed: nearby seeds give unrelated streams. Never
        // zero: xorshift would stay at zero.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Sampler {
            state: if z == 0 { 1 } else { z },
            event: Event::None,
        }
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Bytes to allocate before the next sample point, at most
    /// IDLE_INTERVAL; `event` then says what the point is.
    pub fn next_interval(&mut self) -> usize {
        self.next_interval_with(mean(), guard_mean())
    }

    fn next_interval_with(&mut self, profile: usize, guard: usize) -> usize {
        let rate = |m: usize| if m == 0 { 0.0 } else { 1.0 / m as f64 };
        let (p, g) = (rate(profile), rate(guard));
        self.event = Event::None;
        if p + g == 0.0 {
            return IDLE_INTERVAL;
        }
        // One mean alone is used as it is (the same draws as before guarded
        // sampling existed, for seeded runs).
        let combined = match (profile, guard) {
            (m, 0) | (0, m) => m as f64,
            _ => 1.0 / (p + g),
        };
        let gap = self.draw_f64(combined);
        if gap > IDLE_INTERVAL as f64 {
            return IDLE_INTERVAL;
        }
        self.event = if g == 0.0 {
            Event::Profile
        } else if p == 0.0 || self.uniform() * (p + g) < g {
            Event::Guard
        } else {
            Event::Profile
        };
        (gap as usize).max(1)
    }

    /// The kind of point the interval drawn last ends at.
    pub fn event(&self) -> Event {
        self.event
    }

    /// The kind of the allocation that crossed the countdown, whose bytes
    /// ran `overshoot` past the point: a guard point yields to a profiler
    /// point in those bytes, so that every allocation is a profiler sample
    /// with exactly the chance it has without guarded sampling (1 -
    /// e^(-size/mean)), which the profiler's estimates assume.
    pub fn event_for(&mut self, overshoot: usize) -> Event {
        self.event_for_with(overshoot, mean())
    }

    fn event_for_with(&mut self, overshoot: usize, profile: usize) -> Event {
        if self.event == Event::Guard
            && profile != 0
            && overshoot > 0
            && self.draw_f64(profile as f64) < overshoot as f64
        {
            return Event::Profile;
        }
        self.event
    }

    /// Uniform in (0, 1] from 53 random bits.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn draw_f64(&mut self, mean: f64) -> f64 {
        -ln(self.uniform()) * mean
    }

    /// An exponential variate with the given mean (at least 1).
    pub fn draw(&mut self, mean: usize) -> usize {
        let v = self.draw_f64(mean as f64);
        if v >= (isize::MAX / 2) as f64 {
            isize::MAX as usize / 2
        } else {
            (v as usize).max(1)
        }
    }
}

/// Natural logarithm for x in (0, 1], accurate to about 1e-7 relative.
pub fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // Mantissa m in [1, 2).
    let m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    // ln(m) = 2 atanh(t), t = (m - 1) / (m + 1) in [0, 1/3).
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let series = t
        * (2.0
            + t2 * (2.0 / 3.0
                + t2 * (2.0 / 5.0 + t2 * (2.0 / 7.0 + t2 * (2.0 / 9.0 + t2 * (2.0 / 11.0))))));
    exp as f64 * core::f64::consts::LN_2 + series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_is_accurate() {
        for &x in &[1.0, 0.5, 0.25, 0.1, 0.9, 1e-9, 0.333, 0.7777] {
            let err = (ln(x) - std_ln(x)).abs();
            assert!(
                err < 1e-7 * (1.0 + std_ln(x).abs()),
                "ln({x}): {} vs {}",
                ln(x),
                std_ln(x)
            );
        }
    }

    fn std_ln(x: f64) -> f64 {
        x.ln()
    }

    #[test]
    fn draws_are_exponential_with_the_mean() {
        let mut s = Sampler::new(42);
        let mean = 512 * 1024;
        let n = 200_000;
        let mut sum = 0f64;
        let mut above = 0;
        for _ in 0..n {
            let v = s.draw(mean);
            sum += v as f64;
            if v > mean {
                above += 1;
            }
        }
        let avg = sum / n as f64;
        assert!((avg / mean as f64 - 1.0).abs() < 0.02, "mean {avg}");
        // P(X > mean) = 1/e for an exponential distribution.
        let frac = above as f64 / n as f64;
        assert!((frac - (-1f64).exp()).abs() < 0.01, "tail {frac}");
    }

    #[test]
    fn two_kinds_of_points_keep_their_own_rates() {
        let mut s = Sampler::new(7);
        let (profile, guard) = (256 << 10, 1 << 20);
        let (mut bytes, mut profiles, mut guards) = (0usize, 0usize, 0usize);
        for _ in 0..400_000 {
            bytes += s.next_interval_with(profile, guard);
            match s.event() {
                Event::Profile => profiles += 1,
                Event::Guard => guards += 1,
                Event::None => {}
            }
        }
        let per = |n: usize| bytes as f64 / n as f64;
        assert!(
            (per(profiles) / profile as f64 - 1.0).abs() < 0.03,
            "{}",
            per(profiles)
        );
        assert!(
            (per(guards) / guard as f64 - 1.0).abs() < 0.03,
            "{}",
            per(guards)
        );
    }

    #[test]
    fn big_allocations_are_profiled_as_often_as_without_guards() {
        // 1 MiB allocations, profile mean 512 KiB: sampled with probability
        // 1 - e^-2 = 0.8647, with or without guard points around.
        let mut s = Sampler::new(11);
        let (profile, guard, size) = (512usize << 10, 1usize << 20, 1isize << 20);
        let (mut left, mut sampled, n) = (0isize, 0usize, 200_000);
        for _ in 0..n {
            left -= size;
            if left < 0 {
                if s.event_for_with((-left) as usize, profile) == Event::Profile {
                    sampled += 1;
                }
                left = s.next_interval_with(profile, guard) as isize;
            }
        }
        let frac = sampled as f64 / n as f64;
        assert!((frac - (1.0 - (-2f64).exp())).abs() < 0.01, "{frac}");
    }

    #[test]
    fn long_gaps_are_cut_at_the_idle_interval_with_no_point() {
        let mut s = Sampler::new(3);
        let mean = 64 << 20;
        let (mut bytes, mut guards) = (0usize, 0usize);
        for _ in 0..200_000 {
            let gap = s.next_interval_with(0, mean);
            assert!(gap <= IDLE_INTERVAL);
            bytes += gap;
            guards += (s.event() == Event::Guard) as usize;
        }
        let per = bytes as f64 / guards as f64;
        assert!((per / mean as f64 - 1.0).abs() < 0.05, "{per}");
    }

    #[test]
    fn off_means_idle_interval() {
        let mut s = Sampler::new(1);
        assert_eq!(mean(), 0);
        assert_eq!(s.next_interval(), IDLE_INTERVAL);
        assert_eq!(s.event(), Event::None);
    }
}
