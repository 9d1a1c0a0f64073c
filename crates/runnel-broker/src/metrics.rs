//! Histograms the broker keeps for `/metrics`: request latency per API. Bytes and
//! records per topic are counted by the core (`runnel_core::counters`), where every
//! front end appends.

use std::sync::Arc;

use runnel_log::stats::Histogram;

/// Everything the broker measures.
#[derive(Debug)]
pub struct BrokerMetrics {
    /// Shared, so a Produce's answer (which outlives the request's borrow) records too.
    latency: Arc<Vec<Histogram>>,
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        BrokerMetrics {
            latency: Arc::new((0..128).map(|_| Histogram::default()).collect()),
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
}
