//! Kafka's consumer protocol: the bytes inside JoinGroup metadata (a `consumer` member's
//! subscription) and SyncGroup assignments, written by hand so that this crate needs no
//! wire types.
//!
//! Both are non-flexible Kafka structs behind an `int16` version. All integers are
//! big-endian; a string is an `int16` length and UTF-8; an array an `int32` count.
//!
//! | struct | versions | fields |
//! |---|---|---|
//! | Subscription | 0 | version, topics: array of string, user_data: nullable bytes |
//! | | 1 | + owned_partitions: array of (topic: string, partitions: array of int32) |
//! | | 2 | + generation_id: int32 |
//! | | 3 | + rack_id: nullable string |
//! | Assignment | 0–3 | version, assigned_partitions: array of (topic: string, partitions: array of int32), user_data: nullable bytes |
//!
//! Topics come first in every version, so reading stops after them and ignores what
//! follows, as Kafka's own readers allow newer versions. Every count is checked against
//! the bytes left before anything is allocated for it.

use bytes::{BufMut, Bytes, BytesMut};

/// The subscription to `topics`, as a consumer-protocol version 0 struct.
#[must_use]
pub fn encode_subscription(topics: &[String]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    put_count(&mut out, topics.len());
    for t in topics {
        put_string(&mut out, t);
    }
    out.put_i32(-1); // user_data: null
    out.freeze()
}

/// The topics of a consumer-protocol subscription (a `consumer` member's JoinGroup
/// metadata), any version; `None` when the bytes are not one.
#[must_use]
pub fn subscribed_topics(metadata: &Bytes) -> Option<Vec<String>> {
    let mut r = Reader(metadata);
    let _version = r.i16()?;
    let n = r.count(2)?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        topics.push(r.string()?);
    }
    Some(topics)
}

/// The assignment of `partitions` (by topic), as a consumer-protocol version 0 struct.
#[must_use]
pub fn encode_assignment(partitions: &[(String, Vec<i32>)]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    put_count(&mut out, partitions.len());
    for (topic, ps) in partitions {
        put_string(&mut out, topic);
        put_count(&mut out, ps.len());
        for p in ps {
            out.put_i32(*p);
        }
    }
    out.put_i32(-1); // user_data: null
    out.freeze()
}

/// The (topic, partition)s of a consumer-protocol assignment (the bytes a `consumer`
/// group's leader hands each member), any version; empty when they are not one.
#[must_use]
pub fn assigned_partitions(assignment: &Bytes) -> Vec<(String, i32)> {
    let read = || -> Option<Vec<(String, i32)>> {
        let mut r = Reader(assignment);
        let _version = r.i16()?;
        let topics = r.count(2 + 4)?;
        let mut out = Vec::new();
        for _ in 0..topics {
            let topic = r.string()?;
            let n = r.count(4)?;
            out.reserve(n);
            for _ in 0..n {
                out.push((topic.clone(), r.i32()?));
            }
        }
        Some(out)
    };
    read().unwrap_or_default()
}

fn put_count(out: &mut BytesMut, n: usize) {
    out.put_i32(i32::try_from(n).expect("fewer than 2^31 elements"));
}

fn put_string(out: &mut BytesMut, s: &str) {
    // Topic names are at most 249 bytes (`validate_topic_name`).
    let len = i16::try_from(s.len()).expect("a string below 32 KiB");
    out.put_i16(len);
    out.put_slice(s.as_bytes());
}

/// Big-endian fields off the front of a slice; `None` past the end.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }

    /// An array count whose elements take at least `min_bytes` each: a count the bytes
    /// left cannot hold is a lie, refused before anything is allocated for it.
    fn count(&mut self, min_bytes: usize) -> Option<usize> {
        let n = usize::try_from(self.i32()?).ok()?;
        (n <= self.0.len() / min_bytes).then_some(n)
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        if self.0.len() < len {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTp;
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition as OwnedTp;
    use kafka_protocol::messages::{
        ConsumerProtocolAssignment, ConsumerProtocolSubscription, TopicName,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn topic(s: &str) -> TopicName {
        TopicName(StrBytes::from_string(s.to_string()))
    }

    /// What kafka-protocol (Kafka's own schema) writes: the version, then the struct.
    fn with_version(version: i16, body: impl Encodable) -> Bytes {
        let mut out = BytesMut::new();
        out.put_i16(version);
        body.encode(&mut out, version).unwrap();
        out.freeze()
    }

    fn their_subscription(version: i16) -> Bytes {
        let mut s = ConsumerProtocolSubscription::default();
        s.topics = vec![
            StrBytes::from_static_str("orders"),
            StrBytes::from_static_str("ü"),
        ];
        s.user_data = Some(Bytes::from_static(b"data"));
        if version >= 1 {
            let mut owned = OwnedTp::default();
            owned.topic = topic("orders");
            owned.partitions = vec![0, 3];
            s.owned_partitions = vec![owned];
        }
        if version >= 2 {
            s.generation_id = 7;
        }
        if version >= 3 {
            s.rack_id = Some(StrBytes::from_static_str("rack-a"));
        }
        with_version(version, s)
    }

    fn their_assignment(version: i16) -> Bytes {
        let mut a = ConsumerProtocolAssignment::default();
        let mut one = AssignedTp::default();
        one.topic = topic("orders");
        one.partitions = vec![0, 2];
        let mut two = AssignedTp::default();
        two.topic = topic("payments");
        two.partitions = vec![1];
        a.assigned_partitions = vec![one, two];
        a.user_data = Some(Bytes::from_static(b"x"));
        with_version(version, a)
    }

    #[test]
    fn subscriptions_of_every_version_decode() {
        for version in 0..=3 {
            assert_eq!(
                subscribed_topics(&their_subscription(version)),
                Some(vec!["orders".to_string(), "ü".to_string()]),
                "version {version}"
            );
        }
    }

    #[test]
    fn assignments_of_every_version_decode() {
        for version in 0..=3 {
            assert_eq!(
                assigned_partitions(&their_assignment(version)),
                vec![
                    ("orders".to_string(), 0),
                    ("orders".to_string(), 2),
                    ("payments".to_string(), 1)
                ],
                "version {version}"
            );
        }
    }

    #[test]
    fn what_we_encode_is_what_kafka_encodes() {
        let topics = vec!["orders".to_string(), "ü".to_string()];
        let mut s = ConsumerProtocolSubscription::default();
        s.topics = topics
            .iter()
            .map(|t| StrBytes::from_string(t.clone()))
            .collect();
        assert_eq!(encode_subscription(&topics), with_version(0, s));

        let mut a = ConsumerProtocolAssignment::default();
        let mut tp = AssignedTp::default();
        tp.topic = topic("orders");
        tp.partitions = vec![0, 2];
        a.assigned_partitions = vec![tp];
        assert_eq!(
            encode_assignment(&[("orders".to_string(), vec![0, 2])]),
            with_version(0, a)
        );
    }

    #[test]
    fn garbage_and_lies_are_refused_without_allocating() {
        assert_eq!(subscribed_topics(&Bytes::from_static(&[0])), None);
        // Version 0, then two billion topics in six bytes.
        let lie = Bytes::from_static(&[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 1, b'a']);
        assert_eq!(subscribed_topics(&lie), None);
        assert!(assigned_partitions(&lie).is_empty());
        let sub = their_subscription(3);
        // version, count, "orders", "ü": 18 bytes before the rest.
        for cut in 0..18 {
            assert_eq!(subscribed_topics(&sub.slice(..cut)), None, "cut at {cut}");
        }
        let asg = their_assignment(0);
        // Everything but the user data (4 + 1 bytes) is needed.
        for cut in 0..asg.len() - 5 {
            assert!(
                assigned_partitions(&asg.slice(..cut)).is_empty(),
                "cut at {cut}"
            );
        }
    }
}
