//! Counters and histograms the broker keeps for `/metrics`: request latency per API, and
//! bytes and records in and out per topic. Lock-free on the hot path except for the
//! first sight of a topic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
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

/// Bytes and records written to and read from one topic over Kafka.
#[derive(Debug, Default)]
pub struct TopicCounters {
    /// Batch bytes appended.
    pub bytes_in: AtomicU64,
    /// Records appended.
    pub records_in: AtomicU64,
    /// Batch bytes sent to consumers.
    pub bytes_out: AtomicU64,
    /// Records sent to consumers (whole batches are sent; all their records count).
    pub records_out: AtomicU64,
}

/// Everything the broker measures.
#[derive(Debug)]
pub struct BrokerMetrics {
    /// Shared, so a Produce's answer (which outlives the request's borrow) records too.
    latency: Arc<Vec<Histogram>>,
    topics: RwLock<HashMap<String, Arc<TopicCounters>>>,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        BrokerMetrics {
            latency: Arc::new((0..128).map(|_| Histogram::default()).collect()),
            topics: RwLock::default(),
        }
    }
}

impl BrokerMetrics {
    /// The latency histogram of API `key`.
    #[must_use]
    pub fn latency(&self, key: i16) -> Option<&Histogram> {
        usize::try_from(key).ok().and_then(|k| self.latency.get(k))
    }

    /// All latency histograms, indexed by API key, for answers that complete later.
    #[must_use]
    pub fn latencies(&self) -> Arc<Vec<Histogram>> {
        self.latency.clone()
    }

    /// The counters of `topic`, created on first use.
    pub fn topic(&self, topic: &str) -> Arc<TopicCounters> {
        if let Some(c) = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(topic)
        {
            return c.clone();
        }
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(topic.to_string())
            .or_default()
            .clone()
    }

    /// Every topic's counters, sorted by name.
    #[must_use]
    pub fn topics(&self) -> Vec<(String, Arc<TopicCounters>)> {
        let mut all: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Forgets a deleted topic.
    pub fn forget_topic(&self, topic: &str) {
        self.topics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(topic);
    }
}

/// Sums the records of whole batches laid back to back (their headers' counts).
#[must_use]
pub fn records_in_batches(mut bytes: &[u8]) -> u64 {
    let mut n = 0u64;
    while let Ok(h) = runnel_log::batch::BatchHeader::parse(bytes) {
        n += u64::try_from(h.record_count()).unwrap_or(0);
        let len = (h.total_bytes() as usize).min(bytes.len());
        if len == 0 {
            break;
        }
        bytes = &bytes[len..];
    }
    n
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

    #[test]
    fn records_are_counted_across_batches() {
        let mut b = runnel_log::batch::build_batch(&[(None, Some(b"a")), (None, None)], 0);
        b.extend(runnel_log::batch::build_batch(&[(None, Some(b"c"))], 0));
        assert_eq!(records_in_batches(&b), 3);
        assert_eq!(records_in_batches(&b[..30]), 0);
    }
}
