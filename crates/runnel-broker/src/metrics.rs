//! Counters and histograms the broker keeps for `/metrics`: request latency per API, and
//! bytes and records in and out per topic. Lock-free on the hot path except for the
//! first sight of a topic.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

pub use runnel_log::stats::{Histogram, LATENCY_BUCKETS_S};

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
    fn records_are_counted_across_batches() {
        let mut b = runnel_log::batch::build_batch(&[(None, Some(b"a")), (None, None)], 0);
        b.extend(runnel_log::batch::build_batch(&[(None, Some(b"c"))], 0));
        assert_eq!(records_in_batches(&b), 3);
        assert_eq!(records_in_batches(&b[..30]), 0);
    }
}
