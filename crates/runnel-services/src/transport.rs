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

/// Whether `a` and `b` are the same partition, for records that come in runs of one:
/// the records of a run share their topic's name, so it is rarely compared.
pub(crate) fn same_partition(a: &TopicPartition, b: &TopicPartition) -> bool {
    a.partition == b.partition && (Arc::ptr_eq(&a.topic, &b.topic) || a.topic == b.topic)
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
/// transport over a block of bytes that holds them all as length-prefixed fields: then
/// the record holds one reference to the block, not one per header, and a header is
/// read where it lies when asked for, so a record whose headers nobody reads costs no
/// list of them.
#[derive(Clone, Default)]
pub struct Headers(HeaderList);

#[derive(Clone)]
enum HeaderList {
    /// Each value its own slice.
    Pairs(Vec<(HeaderName, Option<Bytes>)>),
    /// `count` headers one after another in `buf`, each a name field (never null) and
    /// a value field; checked when built.
    Block { buf: Bytes, count: u32 },
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

    /// The block of `count` headers that starts at `*at` in `buf` (see [`HeaderList`]),
    /// with `at` moved past it; `None` when `buf` does not hold that many.
    pub(crate) fn block(buf: &Bytes, at: &mut usize, count: u32) -> Option<Headers> {
        let start = *at;
        for _ in 0..count {
            field::read(buf, at)??;
            field::read(buf, at)?;
        }
        Some(Headers(HeaderList::Block {
            buf: buf.slice(start..*at),
            count,
        }))
    }

    /// How many there are.
    #[must_use]
    pub fn len(&self) -> usize {
        match &self.0 {
            HeaderList::Pairs(p) => p.len(),
            HeaderList::Block { count, .. } => *count as usize,
        }
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Each header's name and value, in order. Names are UTF-8, as Kafka says; a name
    /// that is not (no transport of this crate hands one over) reads as `"\u{fffd}"`.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_ {
        self.raw().map(|(name, value)| (name_text(name), value))
    }

    /// Each header's name as bytes and value.
    fn raw(&self) -> RawHeaders<'_> {
        match &self.0 {
            HeaderList::Pairs(p) => RawHeaders::Pairs(p.iter()),
            HeaderList::Block { buf, count } => RawHeaders::Block {
                buf,
                at: 0,
                left: *count,
            },
        }
    }

    /// The first header named `name` whose value is not null.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.raw()
            .find(|(n, v)| *n == name.as_bytes() && v.is_some())
            .and_then(|(_, v)| v)
    }

    /// Whether the headers are a block of bytes (rather than a list).
    #[cfg(test)]
    pub(crate) fn held_in_one_buffer(&self) -> bool {
        matches!(self.0, HeaderList::Block { .. })
    }

    /// Each header's name and value, the values as `Bytes` (shared, not copied).
    #[must_use]
    pub fn to_pairs(&self) -> Vec<(HeaderName, Option<Bytes>)> {
        match &self.0 {
            HeaderList::Pairs(p) => p.clone(),
            HeaderList::Block { buf, .. } => self
                .raw()
                .map(|(name, value)| (header_name_of(name), value.map(|v| buf.slice_ref(v))))
                .collect(),
        }
    }
}

/// A header name's bytes as text: UTF-8 as Kafka says, else a stand-in (never met from
/// the transports, which check or replace names that are not).
fn name_text(name: &[u8]) -> &str {
    std::str::from_utf8(name).unwrap_or("\u{fffd}")
}

/// Headers as their names' bytes and values.
enum RawHeaders<'a> {
    Pairs(std::slice::Iter<'a, (HeaderName, Option<Bytes>)>),
    Block { buf: &'a [u8], at: usize, left: u32 },
}

impl<'a> Iterator for RawHeaders<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            RawHeaders::Pairs(p) => p.next().map(|(n, v)| (n.as_bytes(), v.as_deref())),
            RawHeaders::Block { buf, at, left } => {
                *left = left.checked_sub(1)?;
                // Checked when the block was built: these reads succeed.
                let name = field::read(buf, at)??;
                let value = field::read(buf, at)?;
                Some((&buf[name], value.map(|v| &buf[v])))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match self {
            RawHeaders::Pairs(p) => p.len(),
            RawHeaders::Block { left, .. } => *left as usize,
        };
        (n, Some(n))
    }
}

/// The encoding of one field of bytes, as header blocks (and the kafka transport's
/// chunks) hold it: a length `u32`, little-endian ([`NULL`](field::NULL) for null),
/// then the bytes.
pub(crate) mod field {
    use std::ops::Range;

    use bytes::{BufMut, BytesMut};

    /// The length of a null field.
    pub(crate) const NULL: u32 = u32::MAX;

    /// Appends a field.
    ///
    /// # Panics
    ///
    /// If `bytes` is 4 GiB or more (callers hold far less: librdkafka receives at
    /// most 2 GiB in one response, `receive.message.max.bytes`).
    pub(crate) fn put(out: &mut BytesMut, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                out.put_u32_le(
                    u32::try_from(b.len())
                        .ok()
                        .filter(|&n| n != NULL)
                        .expect("a field under 4 GiB"),
                );
                out.put_slice(b);
            }
            None => out.put_u32_le(NULL),
        }
    }

    /// The field at `*at` in `buf`, with `at` moved past it: `Some(None)` for null,
    /// `None` when `buf` ends first.
    pub(crate) fn read(buf: &[u8], at: &mut usize) -> Option<Option<Range<usize>>> {
        let len_end = at.checked_add(4).filter(|&e| e <= buf.len())?;
        let len = u32::from_le_bytes(buf[*at..len_end].try_into().ok()?);
        if len == NULL {
            *at = len_end;
            return Some(None);
        }
        let end = len_end
            .checked_add(len as usize)
            .filter(|&e| e <= buf.len())?;
        *at = end;
        Some(Some(len_end..end))
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
        self.len() == other.len() && self.raw().eq(other.raw())
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
fn known_header_name(name: &[u8]) -> Option<&'static str> {
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
    fn headers_read_the_same_whether_listed_or_held_in_one_block() {
        let written: [(&str, Option<&[u8]>); 4] = [
            (headers::CE_TYPE, Some(b"thing")),
            ("dup", None),
            ("dup", Some(b"a")),
            ("empty", Some(b"")),
        ];
        let mut buf = bytes::BytesMut::from(&b"xy"[..]);
        for (name, value) in written {
            field::put(&mut buf, Some(name.as_bytes()));
            field::put(&mut buf, value);
        }
        buf.extend_from_slice(b"after");
        let buf = buf.freeze();
        let mut at = 2;
        let block = Headers::block(&buf, &mut at, 4).unwrap();
        assert_eq!(&buf[at..], b"after", "the block ends where its headers do");
        let pairs: Headers = written
            .iter()
            .map(|(n, v)| (header_name(n), v.map(Bytes::copy_from_slice)))
            .collect();
        assert!(block.held_in_one_buffer() && !pairs.held_in_one_buffer());
        assert_eq!(block, pairs);
        assert_eq!(block.len(), 4);
        let listed: Vec<_> = block.iter().collect();
        assert_eq!(listed, written);
        // The first one with a value, as `Record::header` says.
        assert_eq!(block.get("dup"), Some(&b"a"[..]));
        assert_eq!(block.get("missing"), None);
        assert_eq!(block.to_pairs(), pairs.to_pairs());
        assert!(matches!(block.to_pairs()[0].0, Cow::Borrowed(_)));
        assert_ne!(block, Headers::new());
        assert!(Headers::new().is_empty());
        // A block that is not whole is refused, wherever it is cut.
        for cut in 3..at {
            let short = buf.slice(..cut);
            assert!(Headers::block(&short, &mut 2, 4).is_none(), "cut at {cut}");
        }
        // A null name is refused.
        let mut null_name = bytes::BytesMut::new();
        field::put(&mut null_name, None);
        field::put(&mut null_name, Some(b"v"));
        assert!(Headers::block(&null_name.freeze(), &mut 0, 1).is_none());
        // A name that is not UTF-8 (no transport lets one through) reads as a stand-in.
        let mut odd = bytes::BytesMut::new();
        field::put(&mut odd, Some(b"\xff"));
        field::put(&mut odd, None);
        let odd = Headers::block(&odd.freeze(), &mut 0, 1).unwrap();
        assert_eq!(odd.iter().next(), Some(("\u{fffd}", None)));
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
