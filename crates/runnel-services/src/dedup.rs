//! De-duplication for consumers: "have I seen this event id before?"
//!
//! Delivery is at-least-once, so a consumer may see an event twice: its own crash makes it
//! handle a record again, and a producer's crash makes it re-emit events, which then carry
//! the same deterministic `ce_id` ([`derived_event_id`](crate::derived_event_id)).
//! [`SeenIds`] remembers the last ids in memory, which covers redeliveries close together
//! (the common case: a restart re-reads from the last commit). It forgets on restart and
//! beyond its capacity; a durable variant keyed in a table covers those (it lives with the
//! tables).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// The last `capacity` event ids seen, forgetting the oldest first.
#[derive(Debug, Clone)]
pub struct SeenIds {
    /// How many ids are remembered; bounds memory.
    capacity: usize,
    /// The remembered ids, for lookup.
    ids: HashSet<Arc<str>>,
    /// The same ids in the order first seen, to know which to forget.
    order: VecDeque<Arc<str>>,
}

impl SeenIds {
    /// Remembers up to `capacity` ids. With 0 it remembers nothing, and every id is new.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            ids: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
        }
    }

    /// `true` the first time `id` is seen (handle the event), `false` while it is
    /// remembered (a duplicate: skip it). Seeing a remembered id again does not refresh
    /// it: ids are forgotten in the order first seen, since a duplicate arrives within a
    /// redelivery window of the original, not of the previous duplicate.
    pub fn first_time(&mut self, id: &str) -> bool {
        if self.capacity == 0 {
            return true;
        }
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        let id: Arc<str> = Arc::from(id);
        self.ids.insert(id.clone());
        self.order.push_back(id);
        true
    }

    /// Whether `id` is remembered, without recording it.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// How many ids are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most ids remembered at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_duplicate_is_reported_once_seen() {
        let mut seen = SeenIds::new(10);
        assert!(seen.first_time("orders/orders-0@1#0"));
        assert!(!seen.first_time("orders/orders-0@1#0"));
        assert!(seen.first_time("orders/orders-0@1#1"));
        assert_eq!(seen.len(), 2);
    }

    #[test]
    fn the_oldest_id_is_forgotten_first() {
        let mut seen = SeenIds::new(2);
        assert!(seen.first_time("a"));
        assert!(seen.first_time("b"));
        assert!(!seen.first_time("a"), "a duplicate does not refresh a");
        assert!(seen.first_time("c"));
        assert!(!seen.contains("a"));
        assert!(seen.contains("b") && seen.contains("c"));
        assert_eq!(seen.len(), 2);
        assert!(seen.first_time("a"), "forgotten, so new again");
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let mut seen = SeenIds::new(0);
        assert!(seen.first_time("a"));
        assert!(seen.first_time("a"));
        assert!(seen.is_empty());
        assert_eq!(seen.capacity(), 0);
    }

    #[test]
    fn a_huge_capacity_does_not_allocate_up_front() {
        let seen = SeenIds::new(usize::MAX);
        assert!(seen.is_empty());
    }

    proptest! {
        #[test]
        fn matches_a_fifo_window(capacity in 0usize..8, ids in proptest::collection::vec(0u8..12, 0..200)) {
            let mut seen = SeenIds::new(capacity);
            let mut window: VecDeque<u8> = VecDeque::new();
            for id in ids {
                let expected = !window.contains(&id);
                prop_assert_eq!(seen.first_time(&id.to_string()), expected);
                if expected && capacity > 0 {
                    if window.len() == capacity {
                        window.pop_front();
                    }
                    window.push_back(id);
                }
                prop_assert_eq!(seen.len(), window.len());
                prop_assert!(seen.len() <= capacity);
            }
        }
    }
}
