//! Reading records out of stored batches: decompression with the codecs Kafka defines,
//! a bounds-checked walk (`runnel_log::records`), so a batch that lies about its counts
//! costs only its bytes, and [`read`], the one loop that steps through a partition.
//!
//! Every reader steps by a batch's *end* (`baseOffset + lastOffsetDelta + 1`), never by
//! the last record's offset + 1: the cleaner may have removed a batch's last records,
//! and a reader that restarted at the last record kept would read it again, forever.
//!
//! Records read here are slices of the buffer they were read into ([`records_in`]): a
//! key, value or header value costs a reference count, not an allocation and a copy.
//! The walk stays bounds-checked; only what it accepted is sliced.

use bytes::Bytes;
use runnel_log::batch::{BatchHeader, HEADER_BYTES};
use runnel_log::records::walk_records;
use runnel_log::{LogError, Offset, Partition};

/// One record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (create time, or the batch's log-append time), ms since the epoch.
    pub timestamp: i64,
    /// The key, `None` for null.
    pub key: Option<Bytes>,
    /// The value, `None` for null.
    pub value: Option<Bytes>,
    /// The headers in order: key (UTF-8; invalid bytes replaced) and value (`None` for
    /// null).
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// The records section of a compressed batch, decompressed (codec ids 1 gzip, 2 snappy,
/// 3 lz4, 4 zstd); `None` if it cannot be.
#[must_use]
pub fn decompress(codec: u8, payload: &[u8]) -> Option<Bytes> {
    decompress_bytes(codec, Bytes::copy_from_slice(payload))
}

/// [`decompress`] of a payload already in a `Bytes` (a slice of a read), without copying
/// it first.
fn decompress_bytes(codec: u8, mut input: Bytes) -> Option<Bytes> {
    use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};
    let all = |b: &mut Bytes| Ok(b.split_to(b.len()));
    let out = match codec {
        1 => Gzip::decompress(&mut input, all),
        2 => Snappy::decompress(&mut input, all),
        3 => Lz4::decompress(&mut input, all),
        4 => Zstd::decompress(&mut input, all),
        _ => return None,
    };
    out.ok()
}

/// Every record of the whole batches in `bytes` (as `Partition::read` returns them),
/// from `from` on, and the offset after the last batch read (`from` if none): where
/// the next read starts. That is the batch's end, not the last record's offset + 1,
/// because compaction may have removed a batch's last records. A batch that cannot be
/// read ends the list there.
///
/// Copies `bytes` once; [`records_in`] takes them as `Bytes` and copies nothing.
#[must_use]
pub fn records_of(bytes: &[u8], from: i64) -> (Vec<StoredRecord>, i64) {
    records_in(&Bytes::copy_from_slice(bytes), from)
}

/// [`records_of`] without copying: every key, value and header value is a slice of
/// `bytes` (or of the decompressed payload of its batch), so the records keep that
/// buffer alive until the last of them is dropped. Header names are copied (they are
/// `String`s, and short).
#[must_use]
pub fn records_in(bytes: &Bytes, from: i64) -> (Vec<StoredRecord>, i64) {
    let mut out = Vec::new();
    let mut next = from;
    let mut at = 0;
    while let Ok(h) = BatchHeader::parse(&bytes[at..]) {
        let end = at + (h.total_bytes() as usize).min(bytes.len() - at);
        let payload = bytes.slice((at + HEADER_BYTES).min(end)..end);
        let records = match h.compression() {
            0 => payload,
            codec => match decompress_bytes(codec, payload) {
                Some(d) => d,
                None => break,
            },
        };
        let base = h.base_offset().0 as i64;
        // Records of a batch that turns out to be bad are taken back out.
        let kept = out.len();
        let slice = |s: &[u8]| records.slice_ref(s);
        let walked = walk_records(&records, h.record_count().max(0) as u32, |r| {
            let offset = base + i64::from(r.offset_delta);
            if offset < from {
                return;
            }
            // The walk checked the header count against the bytes there.
            let mut headers = Vec::with_capacity(r.header_count as usize);
            headers.extend(
                r.headers()
                    .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), v.map(slice))),
            );
            out.push(StoredRecord {
                offset,
                timestamp: if h.is_log_append_time() {
                    h.max_timestamp()
                } else {
                    h.base_timestamp().saturating_add(r.timestamp_delta)
                },
                key: r.key.map(slice),
                value: r.value.map(slice),
                headers,
            });
        });
        if walked.is_err() {
            out.truncate(kept);
            break;
        }
        next = next.max(h.last_offset().0 as i64 + 1);
        at = end;
    }
    (out, next)
}

/// Reads the records of `partition` from `from` on: whole batches up to about
/// `max_bytes` (at least one batch), and the offset to read from next, the end of the
/// last batch read. This is the one reader every caller uses (offset loading, the HTTP
/// API, live tails, ListOffsets, the embedded transport):
///
/// - it steps by batch end, so a batch the cleaner emptied of its last records never
///   stalls a reader;
/// - a read that returned only records below `from` (the rest of a batch `from` falls
///   into was compacted away, or whole batches were) goes on from the batch end instead
///   of returning nothing, so an empty answer means the high watermark was reached.
///
/// The next offset equals `from` when nothing could be read: at the high watermark, or
/// at a batch whose records cannot be decoded (then nothing after it is served, as with
/// [`records_of`]). Errors are the log's: a `from` below the log start (negative ones
/// included, reported as 0) or above the high watermark is
/// [`LogError::OffsetOutOfRange`].
pub fn read(
    partition: &Partition,
    from: i64,
    max_bytes: usize,
) -> Result<(Vec<StoredRecord>, i64), LogError> {
    if from < 0 {
        return Err(LogError::OffsetOutOfRange {
            requested: Offset(0),
            log_start: partition.log_start_offset(),
            high_watermark: partition.high_watermark(),
        });
    }
    let mut next = from;
    loop {
        let read = partition.read(Offset(next as u64), max_bytes)?;
        if read.bytes.is_empty() {
            return Ok((Vec::new(), next));
        }
        // The records are slices of this one buffer: no copy per key, value or header.
        let (records, end) = records_in(&Bytes::from(read.bytes), from);
        if !records.is_empty() || end <= next {
            return Ok((records, end.max(next)));
        }
        next = end;
        if next >= read.high_watermark.0 as i64 {
            return Ok((Vec::new(), next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_log::batch::build_batch;

    #[test]
    fn records_of_back_to_back_batches_from_an_offset() {
        let mut a = build_batch(&[(Some(b"k"), Some(b"v")), (None, None)], 1_000);
        let mut b = build_batch(&[(Some(b"x"), Some(b"y"))], 2_000);
        b[..8].copy_from_slice(&2i64.to_be_bytes());
        a.append(&mut b);
        let (all, next) = records_of(&a, 0);
        assert_eq!(next, 3);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(all[1].value, None);
        assert_eq!((all[2].offset, all[2].timestamp), (2, 2_000));
        assert_eq!(records_of(&a, 1).0.len(), 2);
        let whole = Bytes::from(a.clone());
        let (sliced, _) = records_in(&whole, 0);
        assert_eq!(sliced, all);
        let inside = whole.as_ptr_range();
        let key = sliced[0].key.as_ref().unwrap();
        assert!(
            inside.contains(&key.as_ptr()),
            "keys are slices of the read buffer, not copies"
        );
        assert_eq!(
            records_of(&a[..70], 0),
            (Vec::new(), 0),
            "a cut batch gives nothing"
        );
    }
}

/// Kafka's codecs for the log's cleaner and key checks (`runnel_log::BatchCodec`):
/// gzip, snappy, lz4 and zstd through `kafka-protocol`, so compacted topics compact
/// compressed batches too and write them back in the same codec.
#[derive(Debug, Default)]
pub struct KafkaCodecs;

impl runnel_log::BatchCodec for KafkaCodecs {
    fn decompress(&self, codec: u8, payload: &[u8]) -> Result<Vec<u8>, runnel_log::CodecError> {
        decompress(codec, payload)
            .map(|b| b.to_vec())
            .ok_or_else(|| runnel_log::CodecError {
                codec,
                reason: "cannot decompress".into(),
            })
    }

    fn compress(&self, codec: u8, records: &[u8]) -> Result<Vec<u8>, runnel_log::CodecError> {
        use bytes::{BufMut, BytesMut};
        use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
        let mut out = BytesMut::new();
        let fill = |tmp: &mut BytesMut| {
            tmp.put_slice(records);
            Ok(())
        };
        let done = match codec {
            1 => Gzip::compress(&mut out, fill),
            2 => Snappy::compress(&mut out, fill),
            3 => Lz4::compress(&mut out, fill),
            4 => Zstd::compress(&mut out, fill),
            _ => {
                return Err(runnel_log::CodecError {
                    codec,
                    reason: "unknown codec".into(),
                });
            }
        };
        done.map(|()| out.to_vec())
            .map_err(|e| runnel_log::CodecError {
                codec,
                reason: format!("{e:#}"),
            })
    }
}

#[cfg(test)]
mod codec_tests {
    use super::*;
    use runnel_log::BatchCodec;

    #[test]
    fn every_codec_round_trips() {
        let records = b"some records, some records, some records".repeat(20);
        for codec in 1..=4 {
            let packed = KafkaCodecs.compress(codec, &records).unwrap();
            assert_ne!(packed, records, "codec {codec}");
            assert_eq!(KafkaCodecs.decompress(codec, &packed).unwrap(), records);
        }
        assert!(KafkaCodecs.compress(7, b"x").is_err());
    }
}
