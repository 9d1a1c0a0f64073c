//! Event metadata: CloudEvents binary-mode Kafka headers, and the ids that let consumers
//! drop duplicates.
//!
//! An event's value is its JSON ([`encode`](crate::encode)); everything about it rides
//! in headers, as the CloudEvents Kafka protocol binding's *binary content mode*
//! describes (<https://github.com/cloudevents/spec/blob/v1.0.2/cloudevents/bindings/kafka-protocol-binding.md>):
//!
//! | header | value | notes |
//! |---|---|---|
//! | `ce_specversion` | `1.0` | |
//! | `ce_id` | the event id | [`derived_event_id`] or [`fresh_event_id`]; consumers de-duplicate on it |
//! | `ce_source` | the emitting service's name | |
//! | `ce_type` | [`Event::TYPE`](crate::Event::TYPE) | consumers dispatch on it |
//! | `ce_time` | RFC 3339 UTC with milliseconds, `2023-11-14T22:13:20.000Z` | |
//! | `ce_dataversion` | [`Event::VERSION`](crate::Event::VERSION) in decimal | a CloudEvents *extension attribute* of ours; a version is kept out of `ce_type` so that dispatch and schema evolution stay separate |
//! | `content-type` | `application/json` | the binding maps `datacontenttype` to this header |
//! | `traceparent` | W3C trace context | unprefixed, where OpenTelemetry's Kafka instrumentation looks; `ce_traceparent` (the CloudEvents tracing extension) is read too |
//!
//! Values are UTF-8. Reading is tolerant ([`Metadata::from_record`]): a record from a
//! producer that knows nothing of CloudEvents still yields metadata, with defaults.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::rfc3339;
use crate::rng::{SplitMix64, mix};
use crate::trace::TraceParent;

/// Header names and fixed values.
pub mod headers {
    /// The event's id; consumers de-duplicate on it.
    pub const CE_ID: &str = "ce_id";
    /// The event's type, for dispatch.
    pub const CE_TYPE: &str = "ce_type";
    /// The service that emitted the event.
    pub const CE_SOURCE: &str = "ce_source";
    /// When the event happened, RFC 3339.
    pub const CE_TIME: &str = "ce_time";
    /// The CloudEvents version the headers follow.
    pub const CE_SPECVERSION: &str = "ce_specversion";
    /// The schema version of the value, in decimal: our CloudEvents extension attribute
    /// `dataversion` (extension names are lowercase alphanumerics).
    pub const CE_DATAVERSION: &str = "ce_dataversion";
    /// The media type of the value.
    pub const CONTENT_TYPE: &str = "content-type";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace context as the CloudEvents distributed-tracing extension names it; read
    /// when [`TRACEPARENT`] is absent, never written.
    pub const CE_TRACEPARENT: &str = "ce_traceparent";
    /// The value of [`CE_SPECVERSION`].
    pub const SPEC_VERSION: &str = "1.0";
    /// The value of [`CONTENT_TYPE`]: JSON is the codec.
    pub const CONTENT_TYPE_JSON: &str = "application/json";
}

/// Everything known about a record besides its value: where it sits in the log, and
/// what its headers say about the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `ce_id`: the event's id, the key consumers de-duplicate on. Empty if absent.
    pub id: String,
    /// `ce_type`: what kind of event the value holds; the runtime dispatches on it. Empty
    /// if absent, which no handler matches.
    pub event_type: String,
    /// `ce_dataversion`: the value's schema version. 1 if absent or not a number, since
    /// every event starts at version 1.
    pub version: u32,
    /// `ce_source`: the service that emitted the event. Empty if absent.
    pub source: String,
    /// `ce_time` in milliseconds since the Unix epoch: when the event happened. The record
    /// timestamp if the header is absent or not RFC 3339.
    pub time_ms: i64,
    /// The trace the event belongs to; a handler's span continues it. `None` if absent or
    /// invalid, and the handler starts a new trace.
    pub traceparent: Option<TraceParent>,
    /// The topic the record was read from.
    pub topic: String,
    /// The partition the record was read from.
    pub partition: i32,
    /// The record's offset in its partition; with topic and partition it names the record,
    /// and derived event ids are built from it.
    pub offset: i64,
    /// The record's key, as the producer set it (the partition key of an [`Event`](crate::Event)).
    pub key: Option<Vec<u8>>,
    /// The record's timestamp (producer create time or broker append time), ms since the epoch.
    pub timestamp_ms: i64,
    /// Which delivery of this record to the handler this is, from 1; above 1 after a
    /// retry or a park. The runtime sets it; [`Metadata::from_record`] says 1.
    pub attempt: u32,
}

impl Metadata {
    /// The metadata of a record as read from a topic.
    ///
    /// Never fails: a header that is missing, null, not UTF-8 or malformed yields the
    /// field's default (see each field). When a header appears more than once, the last
    /// one wins, as with Kafka's `Headers.lastHeader`.
    pub fn from_record(
        topic: impl Into<String>,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        timestamp_ms: i64,
        headers: &[(String, Option<Vec<u8>>)],
    ) -> Self {
        let text = |name: &str| last_header(headers, name);
        let traceparent = text(headers::TRACEPARENT)
            .or_else(|| text(headers::CE_TRACEPARENT))
            .and_then(|value| TraceParent::parse(value.trim()));
        Self {
            id: text(headers::CE_ID).unwrap_or_default().to_owned(),
            event_type: text(headers::CE_TYPE).unwrap_or_default().to_owned(),
            version: text(headers::CE_DATAVERSION)
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(1),
            source: text(headers::CE_SOURCE).unwrap_or_default().to_owned(),
            time_ms: text(headers::CE_TIME)
                .and_then(|value| rfc3339::parse_ms(value.trim()))
                .unwrap_or(timestamp_ms),
            traceparent,
            topic: topic.into(),
            partition,
            offset,
            key: key.map(<[u8]>::to_vec),
            timestamp_ms,
            attempt: 1,
        }
    }
}

/// The value of the last header called `name`, if that value is present and UTF-8.
fn last_header<'a>(headers: &'a [(String, Option<Vec<u8>>)], name: &str) -> Option<&'a str> {
    let (_, value) = headers.iter().rev().find(|(n, _)| n == name)?;
    std::str::from_utf8(value.as_deref()?).ok()
}

/// The headers of an event about to be emitted, in the order listed in the module docs.
/// `time_ms` is written as RFC 3339 UTC with milliseconds.
pub fn event_headers(
    id: &str,
    event_type: &str,
    version: u32,
    source: &str,
    time_ms: i64,
    traceparent: &TraceParent,
) -> Vec<(String, Vec<u8>)> {
    let pairs = [
        (headers::CE_SPECVERSION, headers::SPEC_VERSION.to_owned()),
        (headers::CE_ID, id.to_owned()),
        (headers::CE_SOURCE, source.to_owned()),
        (headers::CE_TYPE, event_type.to_owned()),
        (headers::CE_TIME, rfc3339::format_ms(time_ms)),
        (headers::CE_DATAVERSION, version.to_string()),
        (headers::CONTENT_TYPE, headers::CONTENT_TYPE_JSON.to_owned()),
        (headers::TRACEPARENT, traceparent.to_string()),
    ];
    pairs
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.into_bytes()))
        .collect()
}

/// The id of the `index`-th event a service emits while handling the record at
/// `topic`/`partition`/`offset`: `<service>/<topic>-<partition>@<offset>#<index>`, for
/// example `notifications/orders-3@1042#0`.
///
/// The same input always gives the same id, so when a crash makes the service handle a
/// record again, the events it re-emits carry the ids of the first time and consumers can
/// drop them ([`SeenIds`](crate::SeenIds)). Since Kafka topic names hold only
/// `[a-zA-Z0-9._-]`, the id can be read back unambiguously: the topic starts after the
/// last `/`, and the partition follows the last `-` before `@`.
pub fn derived_event_id(
    service: &str,
    topic: &str,
    partition: i32,
    offset: i64,
    index: u32,
) -> String {
    format!("{service}/{topic}-{partition}@{offset}#{index}")
}

/// Counts ids made by [`fresh_event_id`] in this process.
static FRESH_IDS_MADE: AtomicU64 = AtomicU64::new(0);

/// A per-process random base, so two processes that start in the same millisecond with
/// the same counter still make different ids.
static FRESH_ID_SEED: OnceLock<u64> = OnceLock::new();

/// A new unique id for an event that has no input record to derive one from (an HTTP
/// command): `<service>/<time_ms>-<counter>-<16 hex digits>`, for example
/// `orders/1700000000000-7-9f2c4e0b1a3d5c68`.
///
/// The counter makes ids unique within a process, the random part across processes; the
/// time keeps them roughly sortable for people reading logs. It never contains `@`, so it
/// cannot equal a [`derived_event_id`].
pub fn fresh_event_id(service: &str) -> String {
    let seed = *FRESH_ID_SEED.get_or_init(|| SplitMix64::from_entropy().next_u64());
    let count = FRESH_IDS_MADE.fetch_add(1, Ordering::Relaxed);
    let random = mix(seed ^ mix(count));
    let time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("{service}/{time_ms}-{count}-{random:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn parent() -> TraceParent {
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap()
    }

    fn as_record(headers: Vec<(String, Vec<u8>)>) -> Vec<(String, Option<Vec<u8>>)> {
        headers.into_iter().map(|(n, v)| (n, Some(v))).collect()
    }

    fn header(name: &str, value: &str) -> (String, Option<Vec<u8>>) {
        (name.to_owned(), Some(value.as_bytes().to_vec()))
    }

    #[test]
    fn event_headers_are_cloudevents_binary_mode() {
        let headers = event_headers(
            "id-1",
            "orderCreated",
            2,
            "orders",
            1_700_000_000_000,
            &parent(),
        );
        let text: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), std::str::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(
            text,
            [
                ("ce_specversion", "1.0"),
                ("ce_id", "id-1"),
                ("ce_source", "orders"),
                ("ce_type", "orderCreated"),
                ("ce_time", "2023-11-14T22:13:20.000Z"),
                ("ce_dataversion", "2"),
                ("content-type", "application/json"),
                (
                    "traceparent",
                    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                ),
            ]
        );
    }

    #[test]
    fn metadata_reads_back_what_event_headers_wrote() {
        let headers = event_headers(
            "id-1",
            "orderCreated",
            3,
            "orders",
            1_700_000_000_123,
            &parent(),
        );
        let meta =
            Metadata::from_record("orders", 2, 99, Some(&b"o-1"[..]), 5, &as_record(headers));
        assert_eq!(
            meta,
            Metadata {
                id: "id-1".into(),
                event_type: "orderCreated".into(),
                version: 3,
                source: "orders".into(),
                time_ms: 1_700_000_000_123,
                traceparent: Some(parent()),
                topic: "orders".into(),
                partition: 2,
                offset: 99,
                key: Some(b"o-1".to_vec()),
                timestamp_ms: 5,
                attempt: 1,
            }
        );
    }

    #[test]
    fn a_record_without_headers_gets_defaults() {
        let meta = Metadata::from_record("t", 0, 7, None, 1234, &[]);
        assert_eq!(meta.id, "");
        assert_eq!(meta.event_type, "");
        assert_eq!(meta.version, 1);
        assert_eq!(meta.source, "");
        assert_eq!(meta.time_ms, 1234, "falls back to the record timestamp");
        assert_eq!(meta.traceparent, None);
        assert_eq!(meta.attempt, 1);
    }

    #[test]
    fn malformed_null_and_non_utf8_headers_get_defaults() {
        let headers = vec![
            (headers::CE_ID.to_owned(), None),
            (headers::CE_TYPE.to_owned(), Some(vec![0xff, 0xfe])),
            header(headers::CE_DATAVERSION, "two"),
            header(headers::CE_TIME, "yesterday"),
            header(headers::TRACEPARENT, "00-zz"),
        ];
        let meta = Metadata::from_record("t", 0, 0, None, 42, &headers);
        assert_eq!(meta.id, "");
        assert_eq!(meta.event_type, "");
        assert_eq!(meta.version, 1);
        assert_eq!(meta.time_ms, 42);
        assert_eq!(meta.traceparent, None);
    }

    #[test]
    fn the_last_duplicate_header_wins() {
        let headers = vec![header("ce_type", "first"), header("ce_type", "second")];
        assert_eq!(
            Metadata::from_record("t", 0, 0, None, 0, &headers).event_type,
            "second"
        );
    }

    #[test]
    fn a_trailing_null_duplicate_wins_like_kafka_last_header() {
        // Kafka's lastHeader returns the null one, so the field takes its default.
        let headers = vec![header("ce_id", "x"), ("ce_id".to_owned(), None)];
        assert_eq!(Metadata::from_record("t", 0, 0, None, 0, &headers).id, "");
    }

    #[test]
    fn the_cloudevents_tracing_extension_header_is_read_as_a_fallback() {
        let text = parent().to_string();
        let only_ce = vec![header(headers::CE_TRACEPARENT, &text)];
        assert_eq!(
            Metadata::from_record("t", 0, 0, None, 0, &only_ce).traceparent,
            Some(parent())
        );
        let other = "00-11111111111111111111111111111111-2222222222222222-00";
        let both = vec![
            header(headers::CE_TRACEPARENT, other),
            header(headers::TRACEPARENT, &text),
        ];
        assert_eq!(
            Metadata::from_record("t", 0, 0, None, 0, &both).traceparent,
            Some(parent())
        );
    }

    #[test]
    fn derived_ids_are_readable_and_stable() {
        assert_eq!(
            derived_event_id("notifications", "orders", 3, 1042, 0),
            "notifications/orders-3@1042#0"
        );
        assert_eq!(
            derived_event_id("a", "b-c", 1, 2, 3),
            derived_event_id("a", "b-c", 1, 2, 3)
        );
        assert_ne!(
            derived_event_id("a", "b", 1, 2, 0),
            derived_event_id("a", "b", 1, 2, 1)
        );
        assert_ne!(
            derived_event_id("a", "b", 1, 2, 0),
            derived_event_id("a", "b", 1, 3, 0)
        );
    }

    #[test]
    fn fresh_ids_are_unique_and_never_look_derived() {
        let ids: HashSet<String> = (0..20_000).map(|_| fresh_event_id("orders")).collect();
        assert_eq!(ids.len(), 20_000);
        for id in ids.iter().take(100) {
            assert!(id.starts_with("orders/"), "{id}");
            assert!(!id.contains('@'), "{id}");
        }
    }

    #[test]
    fn fresh_ids_are_unique_across_threads() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..2000).map(|_| fresh_event_id("s")).collect::<Vec<_>>())
            })
            .collect();
        let mut all = HashSet::new();
        for thread in threads {
            for id in thread.join().unwrap() {
                assert!(all.insert(id));
            }
        }
        assert_eq!(all.len(), 8000);
    }
}
