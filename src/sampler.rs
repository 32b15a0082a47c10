//! Bytes until the next sample: exponentially distributed gaps (a Poisson
//! process over allocated bytes, as google's tcmalloc samples), so every byte
//! has the same chance of being sampled and large objects are caught in
//! proportion to their size.
//!
//! Owns: the mean interval (0 = profiling off) and the per-thread draw. The
//! same countdown paces periodic work while profiling is off.
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

/// A fixed seed for every thread's draws (MEMX_PROFILE_SEED; 0 = random).
static SEED: AtomicU64 = AtomicU64::new(0);

pub fn set_seed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
}

/// The seed of a thread's draws: random (its id and cache address) unless
/// a fixed seed is set, which makes a single-threaded program's samples
/// reproducible (`thread_index` is 0 for the main thread).
pub fn thread_seed(thread_index: u64, random: u64) -> u64 {
    match SEED.load(Ordering::Relaxed) {
        0 => random,
        s => s ^ thread_index.wrapping_mul(0x9e37_79b9_7f4a_7c15),
    }
}

pub fn set_mean(bytes: usize) {
    MEAN.store(bytes, Ordering::Relaxed);
}

pub fn mean() -> usize {
    MEAN.load(Ordering::Relaxed)
}

/// Per-thread random state (xorshift64*).
#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    state: u64,
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

    /// Bytes to allocate before the next sample point.
    pub fn next_interval(&mut self) -> usize {
        let mean = mean();
        if mean == 0 {
            return IDLE_INTERVAL;
        }
        self.draw(mean)
    }

    /// An exponential variate with the given mean (at least 1).
    pub fn draw(&mut self, mean: usize) -> usize {
        // u uniform in (0, 1] from 53 random bits.
        let u = ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
        let v = -ln(u) * mean as f64;
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
    fn off_means_idle_interval() {
        let mut s = Sampler::new(1);
        assert_eq!(mean(), 0);
        assert_eq!(s.next_interval(), IDLE_INTERVAL);
    }
}
