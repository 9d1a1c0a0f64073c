//! Measurements the log takes of itself, for whoever exports metrics: fsync latency.
//! Plain atomics, no exporter: the HTTP crate turns them into Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`).
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative), then above the last.
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS_S
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(
            d.as_nanos().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
    }

    /// Cumulative counts per bound (as Prometheus wants them), the total count, and the
    /// sum in seconds.
    #[must_use]
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut running = 0;
        let cumulative = LATENCY_BUCKETS_S
            .iter()
            .enumerate()
            .map(|(i, b)| {
                running += self.buckets[i].load(Ordering::Relaxed);
                (*b, running)
            })
            .collect();
        (
            cumulative,
            self.count.load(Ordering::Relaxed),
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }
}

/// What the log measures.
#[derive(Debug, Default)]
pub struct LogStats {
    /// Duration of each `fdatasync` of a segment (group commits and flushes).
    pub fsync: Histogram,
    /// Damaged batches found below a recovery point or in a sealed segment, moved aside
    /// at open ([`crate::recovery::RecoveryEvent::Quarantined`]) or stepped over by reads.
    pub quarantined_batches: std::sync::atomic::AtomicU64,
    /// The bytes of those batches.
    pub quarantined_bytes: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_sum() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let (buckets, count, sum) = h.snapshot();
        assert_eq!(count, 3);
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[3], (0.005, 2));
        assert_eq!(buckets.last().unwrap().1, 2, "60 s is above every bound");
        assert!((sum - 60.0031).abs() < 1e-6);
    }
}
