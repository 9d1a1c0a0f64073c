//! Records packed where librdkafka hands them over, unpacked on the runtime's side.
//!
//! The thread that polls librdkafka is the transport's narrowest point: every record
//! passes through it one at a time, and librdkafka's own work (the poll, and parsing a
//! record's headers into a list on first access) happens there whatever we do. So that
//! thread does only what must happen there: [`Packer`] copies each record's bytes, as
//! they are, one record after another into a chunk. No allocation per record, no
//! reference count touched, no header name looked at. Building the runtime's
//! [`Record`]s ([`Unpacker`]: slicing keys, values and header values out of the chunk,
//! naming headers, allocating each record's header list) happens on the async side,
//! where the records are also dropped, so their memory is freed by the threads that
//! allocated it.
//!
//! A record's fields are slices of the chunk it was packed into: a record held long (a
//! slow handler, a parked retry) keeps its chunk alive, at most [`CHUNK`] (or the
//! record's own size, when larger) per record held.
//!
//! Layout of one record, integers little-endian: partition `i32`, offset `i64`,
//! timestamp `i64`, then the topic, the key and the value as fields, a header count
//! `u32` ([`UNREADABLE`] when the headers could not be read), and per header its name
//! and value as fields. A field is a length `u32` ([`field::NULL`] for null) and the bytes.

use std::ops::Range;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rdkafka::message::{BorrowedMessage, Headers as _, Message};

use crate::transport::field;
use crate::transport::{Headers, Record, TopicPartition, UNREADABLE_HEADERS, header_name};

/// The size of a chunk: a few hundred small records. Small enough that a record held
/// long keeps little else alive.
pub(super) const CHUNK: usize = 64 * 1024;

/// Below this much room left in its chunk, the next record starts a new chunk rather
/// than growing the current one.
const ROOM_MIN: usize = 4 * 1024;

/// The header count of a record whose headers could not be read: a header name that
/// is not UTF-8 makes rdkafka's header access panic (any producer can send one).
const UNREADABLE: u32 = u32::MAX;

/// The value of [`UNREADABLE_HEADERS`] on a record whose headers could not be read.
const UNREADABLE_REASON: &str = "a header name is not valid UTF-8";

/// Records copied out of librdkafka and not yet unpacked: whole records, in chunks.
#[derive(Debug, Default)]
pub(super) struct Packed {
    chunks: Vec<Bytes>,
    count: usize,
}

impl Packed {
    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Copies librdkafka's records into chunks (see the module's documentation).
#[derive(Debug, Default)]
pub(super) struct Packer {
    /// The chunk being filled: what follows the last sealed record.
    chunk: BytesMut,
    /// Bytes packed into the chunk's allocation so far, sealed or not.
    filled: usize,
    packed: Packed,
}

impl Packer {
    /// Records packed since the last [`take`](Self::take).
    pub(super) fn len(&self) -> usize {
        self.packed.count
    }

    /// Copies one record.
    pub(super) fn push(&mut self, m: &BorrowedMessage<'_>) {
        let fields = Fields {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
            key: m.key(),
            value: m.payload(),
        };
        self.pack(&fields, |c| {
            let mut n = 0;
            if let Some(headers) = m.headers() {
                for h in headers.iter() {
                    field::put(c, Some(h.key.as_bytes()));
                    field::put(c, h.value);
                    n += 1;
                }
            }
            n
        });
    }

    /// Packs one record; `headers` writes the header fields and answers how many. If it
    /// panics (rdkafka's header access on a name that is not UTF-8), the record is
    /// packed with its headers marked unreadable instead, and this thread goes on.
    fn pack(&mut self, f: &Fields<'_>, headers: impl FnOnce(&mut BytesMut) -> u32) {
        // A new chunk when this one is full, or has too little room left; a record larger
        // than the room grows the chunk, and the chunk then ends with it.
        if self.filled >= CHUNK || self.chunk.capacity() - self.chunk.len() < ROOM_MIN {
            self.seal();
            self.chunk = BytesMut::with_capacity(CHUNK);
            self.filled = 0;
        }
        let c = &mut self.chunk;
        let start = c.len();
        c.put_i32_le(f.partition);
        c.put_i64_le(f.offset);
        c.put_i64_le(f.timestamp_ms);
        field::put(c, Some(f.topic.as_bytes()));
        field::put(c, f.key);
        field::put(c, f.value);
        let count_at = c.len();
        c.put_u32_le(0);
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| headers(&mut *c)));
        match read {
            Ok(n) => c[count_at..count_at + 4].copy_from_slice(&n.to_le_bytes()),
            Err(_) => {
                c.truncate(count_at);
                c.put_u32_le(UNREADABLE);
            }
        }
        self.filled += c.len() - start;
        self.packed.count += 1;
    }

    /// Ends the chunk under way at the last record: later records start after it.
    fn seal(&mut self) {
        if !self.chunk.is_empty() {
            self.packed.chunks.push(self.chunk.split().freeze());
        }
    }

    /// The records packed so far.
    pub(super) fn take(&mut self) -> Packed {
        self.seal();
        std::mem::take(&mut self.packed)
    }
}

/// A record's fields other than its headers.
struct Fields<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

/// Builds records out of [`Packed`] chunks: one per consumer, which keeps the topic
/// names so a record costs no allocation for its topic.
#[derive(Debug, Default)]
pub(super) struct Unpacker {
    topics: Vec<Arc<str>>,
}

/// A chunk that does not hold what [`Packer`] writes: a bug, never input.
#[derive(Debug)]
pub(super) struct Corrupt;

impl Unpacker {
    /// The records of `packed`, in the order they were packed.
    pub(super) fn unpack(&mut self, packed: Packed) -> Result<Vec<Record>, Corrupt> {
        let mut out = Vec::with_capacity(packed.count);
        for chunk in &packed.chunks {
            let mut r = Reading { chunk, at: 0 };
            while r.at < chunk.len() {
                out.push(self.record(&mut r).ok_or(Corrupt)?);
            }
        }
        if out.len() == packed.count {
            Ok(out)
        } else {
            Err(Corrupt)
        }
    }

    fn record(&mut self, r: &mut Reading<'_>) -> Option<Record> {
        let partition = i32::from_le_bytes(r.array()?);
        let offset = i64::from_le_bytes(r.array()?);
        let timestamp_ms = i64::from_le_bytes(r.array()?);
        let topic = r.field()??;
        let topic = self.topic(&r.chunk[topic])?;
        let key = r.field()?.map(|k| r.chunk.slice(k));
        let value = r.field()?.map(|v| r.chunk.slice(v));
        let count = u32::from_le_bytes(r.array()?);
        let headers = if count == UNREADABLE {
            Headers::from(vec![(
                header_name(UNREADABLE_HEADERS),
                Some(Bytes::from_static(UNREADABLE_REASON.as_bytes())),
            )])
        } else {
            // The headers stay in the chunk, read where they lie when asked for: the
            // record holds the chunk once for all of them.
            Headers::block(r.chunk, &mut r.at, count)?
        };
        Some(Record {
            tp: TopicPartition { topic, partition },
            offset,
            timestamp_ms,
            key,
            value,
            headers,
        })
    }

    /// The topic named `name`, shared with the other records of this consumer.
    fn topic(&mut self, name: &[u8]) -> Option<Arc<str>> {
        if let Some(t) = self.topics.iter().find(|t| t.as_bytes() == name) {
            return Some(t.clone());
        }
        let t: Arc<str> = Arc::from(std::str::from_utf8(name).ok()?);
        self.topics.push(t.clone());
        Some(t)
    }
}

/// A position in one chunk.
struct Reading<'a> {
    chunk: &'a Bytes,
    at: usize,
}

impl Reading<'_> {
    fn take(&mut self, n: usize) -> Option<Range<usize>> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.chunk.len())?;
        let range = self.at..end;
        self.at = end;
        Some(range)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let range = self.take(N)?;
        self.chunk[range].try_into().ok()
    }

    /// A field: `Some(None)` for null, `None` when the chunk ends first.
    fn field(&mut self) -> Option<Option<Range<usize>>> {
        field::read(self.chunk, &mut self.at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record to pack: topic, partition, offset, key, value, headers.
    type Plain<'a> = (
        &'a str,
        i32,
        i64,
        Option<&'a [u8]>,
        Option<&'a [u8]>,
        Vec<(&'a str, Option<&'a [u8]>)>,
    );

    fn fields<'a>(
        topic: &'a str,
        offset: i64,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
    ) -> Fields<'a> {
        Fields {
            topic,
            partition: 0,
            offset,
            timestamp_ms: offset * 10,
            key,
            value,
        }
    }

    fn pack(p: &mut Packer, (topic, partition, offset, key, value, headers): Plain<'_>) {
        let f = Fields {
            partition,
            ..fields(topic, offset, key, value)
        };
        p.pack(&f, |c| {
            for (name, value) in &headers {
                field::put(c, Some(name.as_bytes()));
                field::put(c, *value);
            }
            u32::try_from(headers.len()).unwrap()
        });
    }

    fn check(r: &Record, (topic, partition, offset, key, value, headers): Plain<'_>) {
        assert_eq!(
            (&*r.tp.topic, r.tp.partition, r.offset, r.timestamp_ms),
            (topic, partition, offset, offset * 10)
        );
        assert_eq!((r.key.as_deref(), r.value.as_deref()), (key, value));
        let got: Vec<(&str, Option<&[u8]>)> = r.headers.iter().collect();
        assert_eq!(got, headers);
    }

    #[test]
    fn records_come_back_as_packed_nulls_and_empties_apart() {
        let records: Vec<Plain<'_>> = vec![
            (
                "orders",
                3,
                7,
                Some(b"k1"),
                Some(b"{\"a\":1}"),
                vec![("ce_type", Some(b"orderCreated")), ("custom", None)],
            ),
            ("orders", 3, 8, None, None, vec![]),
            (
                "payments",
                0,
                1,
                Some(b""),
                Some(b""),
                vec![("", Some(b""))],
            ),
        ];
        let mut p = Packer::default();
        for r in &records {
            pack(&mut p, r.clone());
        }
        assert_eq!(p.len(), 3);
        let mut u = Unpacker::default();
        let out = u.unpack(p.take()).unwrap();
        assert_eq!(out.len(), 3);
        for (r, want) in out.iter().zip(records) {
            check(r, want);
        }
        // The toolkit's names borrow statics; topics are shared between records.
        let pairs = out[0].headers.to_pairs();
        assert!(matches!(pairs[0].0, std::borrow::Cow::Borrowed(_)));
        assert!(matches!(pairs[1].0, std::borrow::Cow::Owned(_)));
        // The headers stay a block of the chunk: one reference per record.
        assert!(out[0].headers.held_in_one_buffer());
        assert!(Arc::ptr_eq(&out[0].tp.topic, &out[1].tp.topic));
        // Nothing is left behind: the next take is empty.
        assert!(p.take().is_empty());
        assert!(u.unpack(p.take()).unwrap().is_empty());
    }

    #[test]
    fn chunks_hold_whole_records_and_stay_small() {
        let mut p = Packer::default();
        let value = vec![9u8; 1000];
        let big = vec![5u8; CHUNK * 2];
        for i in 0..500 {
            let v = if i == 250 { &big[..] } else { &value[..] };
            pack(
                &mut p,
                (
                    "t",
                    0,
                    i,
                    Some(b"key"),
                    Some(v),
                    vec![("ce_id", Some(b"x"))],
                ),
            );
        }
        let packed = p.take();
        assert!(packed.chunks.len() > 1, "{} chunks", packed.chunks.len());
        // A chunk ends at the first record that fills it: at most one record past CHUNK.
        let over = packed
            .chunks
            .iter()
            .filter(|c| c.len() > CHUNK + 1_100)
            .count();
        assert_eq!(over, 1, "only the chunk with the large record is larger");
        assert!(
            packed
                .chunks
                .iter()
                .all(|c| c.len() <= CHUNK + big.len() + 100)
        );
        let out = Unpacker::default().unpack(packed).unwrap();
        assert_eq!(out.len(), 500);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.offset, i as i64);
            let want = if i == 250 { big.len() } else { value.len() };
            assert_eq!(r.value.as_ref().unwrap().len(), want);
        }
        // Small records share a chunk: a record's bytes point into a common buffer.
        let (a, b) = (
            out[0].value.as_ref().unwrap(),
            out[1].value.as_ref().unwrap(),
        );
        let gap = b.as_ptr() as usize - a.as_ptr() as usize;
        assert!(gap < 2 * value.len(), "{gap}");
    }

    #[test]
    fn headers_that_cannot_be_read_mark_the_record_and_the_next_goes_on() {
        let mut p = Packer::default();
        p.pack(&fields("t", 1, Some(b"k"), Some(b"v")), |c| {
            field::put(c, Some(b"half"));
            panic!("rdkafka's header access on a name that is not UTF-8");
        });
        pack(
            &mut p,
            ("t", 0, 2, None, Some(b"w"), vec![("ce_type", Some(b"x"))]),
        );
        let out = Unpacker::default().unpack(p.take()).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].value.as_deref(), Some(&b"v"[..]));
        assert_eq!(
            out[0].header(UNREADABLE_HEADERS),
            Some(UNREADABLE_REASON.as_bytes())
        );
        assert_eq!(out[0].headers.len(), 1);
        check(
            &out[1],
            ("t", 0, 2, None, Some(b"w"), vec![("ce_type", Some(b"x"))]),
        );
    }

    #[test]
    fn a_chunk_cut_short_is_refused_not_misread() {
        let mut p = Packer::default();
        pack(
            &mut p,
            ("t", 0, 1, Some(b"k"), Some(b"v"), vec![("a", Some(b"b"))]),
        );
        let whole = p.take().chunks.remove(0);
        let packed = |chunk: Bytes, count| Packed {
            chunks: vec![chunk],
            count,
        };
        assert_eq!(
            Unpacker::default()
                .unpack(packed(whole.clone(), 1))
                .unwrap()
                .len(),
            1
        );
        for cut in 1..whole.len() {
            let short = packed(whole.slice(..cut), 1);
            assert!(Unpacker::default().unpack(short).is_err(), "cut at {cut}");
        }
        // A count that does not match is refused too.
        assert!(Unpacker::default().unpack(packed(whole, 2)).is_err());
    }
}
