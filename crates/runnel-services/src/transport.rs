//! The one seam between the runtime and a log: [`Transport`].
//!
//! Two implementations are first-class: [`crate::embedded::Embedded`] (in-process, on
//! `runnel-core` and `runnel-log`) and, with the `kafka` feature, `kafka::Kafka`
//! (rdkafka, against any Kafka-compatible cluster). The runtime sees only this module's
//! types, and the conformance suite (`tests/conformance.rs`) runs the same scenarios on
//! both.
//!
//! ## Contract
//!
//! - [`Transport::send`] resolves once every record is acknowledged by the log (durable
//!   on the embedded log; `acks=all` with idempotence on Kafka), and records to one
//!   partition keep the order given.
//! - A [`GroupConsumer`] is one member of a consumer group. It delivers the records of
//!   the partitions assigned to it, in offset order per partition, from the group's
//!   committed offset (or the log start when there is none). It never commits by
//!   itself: the runtime commits through [`GroupConsumer::commit`], and only offsets
//!   whose records were all handled.
//! - Before partitions move to another member, [`GroupConsumer::next`] returns
//!   [`Delivery::Revoking`]; the runtime finishes the work it started on them and
//!   answers with [`GroupConsumer::revoked`], carrying the final offsets to commit. Only
//!   then does the rebalance go on (Kafka's eager protocol, with the commit in
//!   `onPartitionsRevoked`).
//! - A [`Reader`] reads assigned partitions without a group (tables restore from it).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::error::Error;
use crate::metadata::headers;
use crate::runtime::dlq_headers;

/// A boxed, sendable future: the trait is object-safe so runtimes hold `Arc<dyn Transport>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A topic and a partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
}

impl TopicPartition {
    /// `topic`/`partition`.
    #[must_use]
    pub fn new(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from(topic),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// One record as a transport delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Where it lives.
    pub tp: TopicPartition,
    /// Its offset.
    pub offset: i64,
    /// Its timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// Its key; `None` for null.
    pub key: Option<Bytes>,
    /// Its value; `None` for null (a tombstone on a compacted topic).
    pub value: Option<Bytes>,
    /// Its headers, in order; a header value may be null.
    pub headers: Headers,
}

/// A record's headers, in order: each a name and a value (`None` for null).
///
/// Built from a list of `(name, value)` pairs (`From`, `FromIterator`), or by a
/// transport over one buffer that holds every value: then the values are places in
/// that buffer and the record holds one reference to it, not one per header. (Each
/// reference is an atomic count shared by every record cut from the same chunk; ten
/// per record, taken on one core and dropped on another, cost the kafka transport
/// about a fifth of its throughput.)
#[derive(Clone, Default)]
pub struct Headers(HeaderList);

#[derive(Clone)]
enum HeaderList {
    /// Each value its own slice.
    Pairs(Vec<(HeaderName, Option<Bytes>)>),
    /// Values as `(start, len)` places in `buf`.
    Places {
        buf: Bytes,
        entries: Vec<(HeaderName, Option<(u32, u32)>)>,
    },
}

impl Default for HeaderList {
    fn default() -> Self {
        HeaderList::Pairs(Vec::new())
    }
}

impl Headers {
    /// No headers.
    #[must_use]
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Headers whose values are places in `buf` (`(start, len)`, `None` for null).
    ///
    /// # Panics
    ///
    /// If a place is not inside `buf` (a bug of the transport that built it).
    pub(crate) fn over(buf: Bytes, entries: Vec<(HeaderName, Option<(u32, u32)>)>) -> Headers {
        for (name, place) in &entries {
            if let Some((start, len)) = place {
                assert!(
                    (*start as usize).saturating_add(*len as usize) <= buf.len(),
                    "header {name}: a value outside its buffer"
                );
            }
        }
        Headers(HeaderList::Places { buf, entries })
    }

    /// How many there are.
    #[must_use]
    pub fn len(&self) -> usize {
        match &self.0 {
            HeaderList::Pairs(p) => p.len(),
            HeaderList::Places { entries, .. } => entries.len(),
        }
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each header's name and value, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_ {
        (0..self.len()).map(|i| self.at(i))
    }

    /// The header at place `i` (below [`len`](Self::len)).
    fn at(&self, i: usize) -> (&str, Option<&[u8]>) {
        match &self.0 {
            HeaderList::Pairs(p) => (&*p[i].0, p[i].1.as_deref()),
            HeaderList::Places { buf, entries } => {
                let (name, place) = &entries[i];
                let value = place.map(|(start, len)| &buf[start as usize..][..len as usize]);
                (&**name, value)
            }
        }
    }

    /// The first header named `name` whose value is not null.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, v)| *n == name && v.is_some())
            .and_then(|(_, v)| v)
    }

    /// Whether the values are places in one buffer (rather than a slice each).
    #[cfg(test)]
    pub(crate) fn held_in_one_buffer(&self) -> bool {
        matches!(self.0, HeaderList::Places { .. })
    }

    /// Each header's name and value, the values as `Bytes` (shared, not copied).
    #[must_use]
    pub fn to_pairs(&self) -> Vec<(HeaderName, Option<Bytes>)> {
        match &self.0 {
            HeaderList::Pairs(p) => p.clone(),
            HeaderList::Places { buf, entries } => entries
                .iter()
                .map(|(name, place)| {
                    let value =
                        place.map(|(start, len)| buf.slice(start as usize..(start + len) as usize));
                    (name.clone(), value)
                })
                .collect(),
        }
    }
}

impl From<Vec<(HeaderName, Option<Bytes>)>> for Headers {
    fn from(pairs: Vec<(HeaderName, Option<Bytes>)>) -> Headers {
        Headers(HeaderList::Pairs(pairs))
    }
}

impl FromIterator<(HeaderName, Option<Bytes>)> for Headers {
    fn from_iter<I: IntoIterator<Item = (HeaderName, Option<Bytes>)>>(iter: I) -> Headers {
        Headers::from(iter.into_iter().collect::<Vec<_>>())
    }
}

/// Equal when the names and values are, in order, however they are held.
impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(n, v)| (n, v.map(String::from_utf8_lossy))),
            )
            .finish()
    }
}

/// A header's name. The names the toolkit writes (the CloudEvents ones, `traceparent`,
/// `content-type`, the dead-letter ones) borrow a static string, so a transport reading
/// a record spends no allocation on them; any other name is owned. Build one with
/// [`header_name`].
pub type HeaderName = Cow<'static, str>;

/// The header a transport puts on a record in place of headers it could not read (a
/// header name that is not UTF-8: librdkafka's Rust binding cannot hand it over). Its
/// value says why; the runtime dead-letters such a record at once, as one that does
/// not decode.
pub const UNREADABLE_HEADERS: &str = "runnel_unreadable_headers";

/// `name` as a [`HeaderName`]: one of the toolkit's own names borrows its static,
/// another is copied.
#[must_use]
pub fn header_name(name: &str) -> HeaderName {
    match known_header_name(name.as_bytes()) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_owned()),
    }
}

/// The toolkit's own header names (see [`header_name`]).
const KNOWN_HEADER_NAMES: [&str; 20] = [
    UNREADABLE_HEADERS,
    headers::CE_ID,
    headers::CE_TYPE,
    headers::CE_SOURCE,
    headers::CE_TIME,
    headers::CE_SPECVERSION,
    headers::CE_DATAVERSION,
    headers::CONTENT_TYPE,
    headers::TRACEPARENT,
    headers::CE_TRACEPARENT,
    dlq_headers::ERROR,
    dlq_headers::ERROR_KIND,
    dlq_headers::TOPIC,
    dlq_headers::PARTITION,
    dlq_headers::OFFSET,
    dlq_headers::ATTEMPTS,
    dlq_headers::SERVICE,
    dlq_headers::TIME_MS,
    dlq_headers::REPLAYED_FROM,
    "tracestate",
];

/// A header name as stored (Kafka says UTF-8; nothing checks it) as a [`HeaderName`]:
/// one of the toolkit's own names borrows its static without a UTF-8 check; another is
/// copied, with bytes that are not UTF-8 replaced.
#[must_use]
pub fn header_name_of(name: &[u8]) -> HeaderName {
    match known_header_name(name) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(String::from_utf8_lossy(name).into_owned()),
    }
}

/// `name` as one of the toolkit's own header names, compared as bytes (no UTF-8 check
/// needed for a name that matches).
pub(crate) fn known_header_name(name: &[u8]) -> Option<&'static str> {
    KNOWN_HEADER_NAMES
        .iter()
        .find(|k| k.as_bytes() == name)
        .copied()
}

impl Record {
    /// The first header named `name` whose value is not null.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }
}

/// A record to send.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutRecord {
    /// The topic.
    pub topic: String,
    /// The partition; `None` picks one by the key (Kafka's murmur2, so the key lands
    /// where Java and librdkafka clients put it), or any partition without a key.
    pub partition: Option<i32>,
    /// The key.
    pub key: Option<Vec<u8>>,
    /// The value; `None` sends a tombstone.
    pub value: Option<Vec<u8>>,
    /// The headers.
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Where a sent record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sent {
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// A topic to create when it is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    /// Its name.
    pub name: String,
    /// Partitions when created; an existing topic keeps its own.
    pub partitions: u32,
    /// `cleanup.policy=compact`: the latest record per key is kept (tables' sources).
    pub compacted: bool,
}

/// What a group member's [`GroupConsumer::next`] hands the runtime.
#[derive(Debug)]
pub enum Delivery {
    /// Records, in offset order within each partition.
    Records(Vec<Record>),
    /// These partitions are now this member's; records follow.
    Assigned(Vec<TopicPartition>),
    /// These partitions are leaving: finish their work, then call
    /// [`GroupConsumer::revoked`] with their final offsets.
    Revoking(Vec<TopicPartition>),
    /// Nothing arrived for a while (the runtime uses it to commit and look around).
    Idle,
}

/// How a member joins its group.
#[derive(Clone, Debug)]
pub struct MemberOptions {
    /// The group: the service's name.
    pub group: String,
    /// The topics it subscribes to.
    pub topics: Vec<String>,
    /// The client id the broker shows (service name and instance).
    pub client_id: String,
    /// KIP-345 static membership: a restarted instance with the same id takes its
    /// partitions back without a rebalance.
    pub instance_id: Option<String>,
    /// How long the member may go silent before the group drops it.
    pub session_timeout: Duration,
    /// How long a rebalance waits for members to rejoin.
    pub rebalance_timeout: Duration,
}

/// One member of a consumer group.
pub trait GroupConsumer: Send {
    /// The next delivery; [`Delivery::Idle`] when nothing arrived within about
    /// `idle`.
    fn next(&mut self, idle: Duration) -> BoxFuture<'_, Result<Delivery, Error>>;

    /// Commits `offsets` (the next offset to read, per partition) for the group.
    fn commit(&mut self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'_, Result<(), Error>>;

    /// Answers a [`Delivery::Revoking`]: commits the final offsets of the partitions
    /// that leave (best effort: a rebalance may already have fenced this member), and
    /// lets the rebalance go on.
    fn revoked(&mut self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'_, Result<(), Error>>;

    /// Leaves the group, so its partitions move at once rather than after the session
    /// timeout. A consumer that is dropped without `close` behaves like a crashed one.
    fn close(self: Box<Self>) -> BoxFuture<'static, Result<(), Error>>;
}

/// Reads partitions directly, without a group.
pub trait Reader: Send {
    /// Records from the assigned partitions, or none after about `wait`.
    fn poll(&mut self, wait: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>>;

    /// Per partition, the offset of the next record this reader would hand over (past
    /// the end of the last batch read, so past offsets compaction removed). Partitions
    /// whose position is not known yet are left out. Tables use it to know they caught
    /// up when the log's tail holds no record.
    fn positions(&self) -> Vec<(TopicPartition, i64)>;
}

/// A log the runtime can run services on.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// `embedded` or `kafka`, for logs and metrics.
    fn kind(&self) -> &'static str;

    /// Creates the topics that are missing.
    fn ensure_topics<'a>(&'a self, topics: &'a [TopicSpec]) -> BoxFuture<'a, Result<(), Error>>;

    /// Each partition's `(log start, high watermark)`, in partition order.
    fn watermarks<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<(i64, i64)>, Error>>;

    /// Sends records and resolves when the log has acknowledged every one of them.
    fn send(&self, records: Vec<OutRecord>) -> BoxFuture<'_, Result<Vec<Sent>, Error>>;

    /// A reader of `from`: each partition with the offset to start at.
    fn reader(&self, from: Vec<(TopicPartition, i64)>) -> Result<Box<dyn Reader>, Error>;

    /// Joins a consumer group.
    fn subscribe(
        &self,
        options: MemberOptions,
    ) -> BoxFuture<'_, Result<Box<dyn GroupConsumer>, Error>>;

    /// What `group` has committed for `topic`'s partitions (partition, next offset).
    fn committed<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(i32, i64)>, Error>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_read_the_same_whether_sliced_or_held_in_one_buffer() {
        let buf = Bytes::from_static(b"xthingab");
        let places = Headers::over(
            buf.clone(),
            vec![
                (header_name(headers::CE_TYPE), Some((1, 5))),
                (header_name("dup"), None),
                (header_name("dup"), Some((6, 1))),
                (header_name("empty"), Some((8, 0))),
            ],
        );
        let pairs = Headers::from(vec![
            (
                header_name(headers::CE_TYPE),
                Some(Bytes::from_static(b"thing")),
            ),
            (header_name("dup"), None),
            (header_name("dup"), Some(Bytes::from_static(b"a"))),
            (header_name("empty"), Some(Bytes::new())),
        ]);
        assert!(places.held_in_one_buffer() && !pairs.held_in_one_buffer());
        assert_eq!(places, pairs);
        assert_eq!(places.len(), 4);
        let listed: Vec<_> = places.iter().collect();
        assert_eq!(
            listed,
            [
                ("ce_type", Some(&b"thing"[..])),
                ("dup", None),
                ("dup", Some(&b"a"[..])),
                ("empty", Some(&b""[..])),
            ]
        );
        // The first one with a value, as `Record::header` says.
        assert_eq!(places.get("dup"), Some(&b"a"[..]));
        assert_eq!(places.get("missing"), None);
        assert_eq!(places.to_pairs(), pairs.to_pairs());
        assert_ne!(places, Headers::new());
        assert!(Headers::new().is_empty());
        let caught = std::panic::catch_unwind(|| {
            Headers::over(buf.clone(), vec![(header_name("x"), Some((5, 4)))])
        });
        assert!(caught.is_err(), "a place outside the buffer is refused");
    }

    #[test]
    fn the_toolkits_header_names_borrow_and_others_are_owned() {
        for name in [headers::CE_TYPE, headers::TRACEPARENT, dlq_headers::ERROR] {
            let n = header_name(name);
            assert!(matches!(n, Cow::Borrowed(_)), "{name}");
            assert_eq!(n, name);
        }
        let other = header_name("x-tenant");
        assert!(matches!(other, Cow::Owned(_)));
        assert_eq!(other, "x-tenant");
        assert!(matches!(
            header_name_of(b"ce_type"),
            Cow::Borrowed("ce_type")
        ));
        let other = header_name_of(b"x-\xfftenant");
        assert!(matches!(other, Cow::Owned(_)));
        assert_eq!(other, "x-\u{fffd}tenant");
    }
}
