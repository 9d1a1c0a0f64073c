//! A tiny pseudo-random generator for ids, span ids and jitter.
//!
//! None of these need cryptographic strength; they need to differ between processes and
//! calls, and to be reproducible in tests. SplitMix64 is a handful of lines, passes
//! BigCrush, and spares the crate a `rand` dependency. Everything that takes randomness
//! takes `&mut impl FnMut() -> u64`, so a test can pass a counter or a fixed seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The 64-bit golden ratio, SplitMix64's increment: consecutive states are far apart.
const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// Distinguishes generators seeded in the same nanosecond of one process.
static SEEDS_MADE: AtomicU64 = AtomicU64::new(0);

/// The SplitMix64 generator (Steele, Lea and Flood, 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    /// Advanced by [`GOLDEN_GAMMA`] on each draw; the output is a mix of it.
    state: u64,
}

impl SplitMix64 {
    /// A generator that yields the same sequence for the same `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A generator seeded from the wall clock, the process id and a per-process counter, so
    /// two generators made at the same moment, in one process or two, differ.
    pub fn from_entropy() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let made = SEEDS_MADE.fetch_add(1, Ordering::Relaxed);
        let pid = u64::from(std::process::id());
        Self::new(mix(nanos) ^ mix(pid.rotate_left(32) ^ made))
    }

    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }
}

/// SplitMix64's output function: a bijection that scatters nearby inputs.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform fraction in `[0, 1)` from one draw: the top 53 bits fill an `f64` mantissa.
pub(crate) fn unit_fraction(draw: u64) -> f64 {
    (draw >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn known_first_output_for_seed_zero() {
        // The reference implementation's first output for seed 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
    }

    #[test]
    fn entropy_seeded_generators_differ() {
        let firsts: HashSet<u64> = (0..1000)
            .map(|_| SplitMix64::from_entropy().next_u64())
            .collect();
        assert_eq!(firsts.len(), 1000);
    }

    #[test]
    fn unit_fraction_stays_in_range() {
        assert_eq!(unit_fraction(0), 0.0);
        assert!(unit_fraction(u64::MAX) < 1.0);
        let mut rng = SplitMix64::new(7);
        let mean = (0..10_000)
            .map(|_| unit_fraction(rng.next_u64()))
            .sum::<f64>()
            / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }
}
