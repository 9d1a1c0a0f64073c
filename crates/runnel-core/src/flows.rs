//! Which client wrote to which topic, and which read from it, recently: what the
//! console's topology draws. Kafka requests carry a client id; the broker records each
//! Produce and Fetch here, by (client id, topic, direction). Bounded: at most
//! [`FLOWS_MAX`] flows; a new one beyond that replaces the one least recently seen.

use std::collections::HashMap;
use std::sync::Mutex;

/// The most flows remembered.
pub const FLOWS_MAX: usize = 1024;

/// A client id longer than this is cut (Kafka allows 32 KiB).
pub const CLIENT_ID_CHARS_MAX: usize = 128;

/// Which way the records went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// The client produced to the topic.
    Produce,
    /// The client fetched from the topic.
    Fetch,
}

/// One client's traffic to or from one topic since it was first seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The client id (cut to [`CLIENT_ID_CHARS_MAX`] characters).
    pub client_id: String,
    /// The topic.
    pub topic: String,
    /// Which way.
    pub direction: Direction,
    /// Batch bytes so far.
    pub bytes: u64,
    /// Records so far.
    pub records: u64,
    /// When last seen, ms since the Unix epoch.
    pub last_ms: i64,
}

type Key = (String, String, Direction);

/// The flows seen, bounded.
#[derive(Debug, Default)]
pub struct Flows {
    flows: Mutex<HashMap<Key, Flow>>,
    /// The group each client id last joined, and when: a member's reads stay its
    /// group's after it left. Bounded as the flows are.
    groups: Mutex<HashMap<String, (String, i64)>>,
}

impl Flows {
    /// Counts `bytes` and `records` of `client_id` to or from `topic`, now.
    pub fn record(
        &self,
        client_id: &str,
        topic: &str,
        direction: Direction,
        bytes: u64,
        records: u64,
    ) {
        self.record_at(client_id, topic, direction, bytes, records, crate::now_ms());
    }

    /// [`Flows::record`] at `now_ms`.
    pub fn record_at(
        &self,
        client_id: &str,
        topic: &str,
        direction: Direction,
        bytes: u64,
        records: u64,
        now_ms: i64,
    ) {
        let client: String = client_id.chars().take(CLIENT_ID_CHARS_MAX).collect();
        let key = (client, topic.to_string(), direction);
        let mut flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        if !flows.contains_key(&key) && flows.len() >= FLOWS_MAX {
            let oldest = flows
                .iter()
                .min_by_key(|(_, f)| f.last_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                flows.remove(&k);
            }
        }
        let flow = flows
            .entry(key)
            .or_insert_with_key(|(client, topic, direction)| Flow {
                client_id: client.clone(),
                topic: topic.clone(),
                direction: *direction,
                bytes: 0,
                records: 0,
                last_ms: now_ms,
            });
        flow.bytes = flow.bytes.saturating_add(bytes);
        flow.records = flow.records.saturating_add(records);
        flow.last_ms = flow.last_ms.max(now_ms);
    }

    /// The flows seen since `since_ms`, by topic, then client, then direction.
    #[must_use]
    pub fn since(&self, since_ms: i64) -> Vec<Flow> {
        let flows = self.flows.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Flow> = flows
            .values()
            .filter(|f| f.last_ms >= since_ms)
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            (&a.topic, &a.client_id, a.direction).cmp(&(&b.topic, &b.client_id, b.direction))
        });
        out
    }

    /// Remembers that `client_id` joined `group`.
    pub fn joined(&self, client_id: &str, group: &str) {
        let client: String = client_id.chars().take(CLIENT_ID_CHARS_MAX).collect();
        let now = crate::now_ms();
        let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        if !groups.contains_key(&client) && groups.len() >= FLOWS_MAX {
            let oldest = groups
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                groups.remove(&k);
            }
        }
        groups.insert(client, (group.to_string(), now));
    }

    /// The group `client_id` last joined, if it is remembered.
    #[must_use]
    pub fn group_of(&self, client_id: &str) -> Option<String> {
        self.groups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(client_id)
            .map(|(g, _)| g.clone())
    }

    /// Forgets a deleted topic's flows.
    pub fn forget_topic(&self, topic: &str) {
        self.flows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, t, _), _| t != topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_add_up_and_stay_bounded() {
        let f = Flows::default();
        f.record_at("p", "orders", Direction::Produce, 100, 2, 10);
        f.record_at("p", "orders", Direction::Produce, 50, 1, 20);
        f.record_at("c", "orders", Direction::Fetch, 150, 3, 15);
        let all = f.since(0);
        assert_eq!(all.len(), 2);
        let produced = all
            .iter()
            .find(|x| x.direction == Direction::Produce)
            .unwrap();
        assert_eq!(
            (produced.bytes, produced.records, produced.last_ms),
            (150, 3, 20)
        );
        assert_eq!(f.since(16).len(), 1, "only what was seen since");
        // Beyond the bound, the least recently seen goes.
        for i in 0..FLOWS_MAX as i64 {
            f.record_at(&format!("c{i}"), "t", Direction::Fetch, 1, 1, 100 + i);
        }
        let all = f.since(0);
        assert_eq!(all.len(), FLOWS_MAX);
        assert!(
            !all.iter().any(|x| x.client_id == "p"),
            "the oldest was replaced"
        );
        // Long client ids are cut.
        f.record_at(&"x".repeat(1000), "t", Direction::Produce, 1, 1, 5000);
        assert!(f.since(5000)[0].client_id.len() == CLIENT_ID_CHARS_MAX);
        f.forget_topic("t");
        assert!(f.since(0).iter().all(|x| x.topic != "t"));
        f.joined("barista-1", "baristas");
        f.joined("barista-1", "baristas-v2");
        assert_eq!(f.group_of("barista-1").as_deref(), Some("baristas-v2"));
        assert_eq!(f.group_of("nobody"), None);
    }
}
