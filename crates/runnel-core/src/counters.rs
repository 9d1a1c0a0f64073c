//! Bytes and records in and out per topic, counted where they happen: on append (every
//! front end appends through [`crate::Core`]) and by the readers that serve consumers.
//! Lock-free on the hot path except for the first sight of a topic.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};

/// Bytes and records written to and read from one topic.
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

/// The counters of every topic seen, by name.
#[derive(Debug, Default)]
pub struct TopicMetrics {
    topics: RwLock<HashMap<String, Arc<TopicCounters>>>,
}

impl TopicMetrics {
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
