//! A small log-linear latency histogram: constant memory, about 1.5% relative error,
//! enough for p50/p99/p999 of a benchmark without keeping every sample.

/// Sub-buckets per power of two: relative error about 1/64.
const SUB_BUCKETS: usize = 64;
/// Powers of two covered: 1 µs up to 2^40 µs.
const OCTAVES: usize = 40;

/// Counts of latencies in microseconds.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; SUB_BUCKETS * OCTAVES],
            total: 0,
            max: 0,
        }
    }
}

fn bucket(v: u64) -> usize {
    if v < SUB_BUCKETS as u64 {
        return v as usize;
    }
    let octave = 63 - v.leading_zeros() as usize; // >= 6
    let shift = octave - 6;
    let sub = ((v >> shift) as usize) - SUB_BUCKETS;
    ((octave - 5) * SUB_BUCKETS + sub).min(SUB_BUCKETS * OCTAVES - 1)
}

fn bucket_low(i: usize) -> u64 {
    if i < SUB_BUCKETS {
        return i as u64;
    }
    let octave = i / SUB_BUCKETS + 5;
    let sub = (i % SUB_BUCKETS) as u64;
    (SUB_BUCKETS as u64 + sub) << (octave - 6)
}

impl Histogram {
    /// Records one latency.
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    /// The latency at quantile `q` (0..=1), in microseconds; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_low(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 100_000u64.min(h.quantile(1.0)));
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for v in [0u64, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 1 << 35] {
            let b = bucket(v);
            assert!(b >= last);
            assert!(bucket_low(b) <= v);
            last = b;
        }
    }
}
