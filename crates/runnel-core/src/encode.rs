//! Building record batches: what the HTTP API and the embedded transport append.
//!
//! [`encode_batch`] writes an uncompressed RecordBatch v2 (magic 2), the format the log
//! stores, with headers, no producer id (-1: not idempotent) and its CRC-32C sealed, so
//! `runnel_log::batch::validate` accepts it as it accepts what Kafka clients send.
//!
//! [`recompress_batch`] stores a client's batch in another codec, for topics whose
//! `compression.type` is not the batch's (Kafka's `LogValidator` re-compresses too).

use std::borrow::Cow;

use runnel_log::batch::{
    BatchHeader, BuildRecord, HEADER_BYTES, LOG_OVERHEAD_BYTES, build_batch_records, seal_crc,
};
use runnel_log::records::{Deltas, walk_records_with};
use runnel_log::{BatchCodec, CodecError};

use crate::records::{KafkaCodecs, decompress};

/// One record to append.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewRecord {
    /// The key, `None` for null. Keyed records choose their partition by its hash.
    pub key: Option<Vec<u8>>,
    /// The value, `None` for null (a tombstone on a compacted topic).
    pub value: Option<Vec<u8>>,
    /// Headers in order; Kafka allows repeated keys. Values are never null here.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Create time in ms since the Unix epoch; `None` takes the batch's `now_ms`.
    pub timestamp_ms: Option<i64>,
}

/// An uncompressed RecordBatch v2 holding `records` in order, offsets 0, 1, 2, ... from
/// base offset 0 (the log writes the real base), timestamps as given or `now_ms`.
///
/// # Panics
///
/// If `records` is empty: a batch holds at least one record (Kafka's rule, and the
/// log's), so asking for an empty one is a bug of the caller.
#[must_use]
pub fn encode_batch(records: &[NewRecord], now_ms: i64) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let records: Vec<BuildRecord<'_>> = records
        .iter()
        .map(|r| BuildRecord {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_slice()))
                .collect(),
            timestamp: r.timestamp_ms.unwrap_or(now_ms),
        })
        .collect();
    build_batch_records(&records)
}

/// The bits of a batch's `attributes` that name its codec (0 none, 1 gzip, 2 snappy,
/// 3 lz4, 4 zstd).
const CODEC_BITS: i16 = 0x07;

/// `batch` (exactly one RecordBatch v2 whose CRC the caller checked, as
/// `runnel_log::batch::validate` does) with its records stored with `codec` (0 for
/// none, 1 gzip, 2 snappy, 3 lz4, 4 zstd) instead of its own.
///
/// Only the records section and what describes it change: `batchLength`, the codec
/// bits of `attributes` and the CRC-32C, recomputed. The records themselves are byte
/// for byte the same once decompressed (offset and timestamp deltas, keys, values,
/// headers), and so is every other header field: base offset and timestamp, max
/// timestamp, `lastOffsetDelta`, record count, producer id, epoch and base sequence
/// (an idempotent batch keeps its sequence range), and the other attribute bits
/// (timestamp type, transactional, control).
///
/// A compressed batch is decompressed to at most `limit_bytes` (the topic's
/// `runnel_log::codec::decompressed_bytes_max`), else [`CodecError::TooLarge`]; its
/// records must then walk as the header counts them, else [`CodecError::Invalid`], so
/// a CRC is never sealed over records nobody could read. A batch already in `codec` is
/// returned as it is.
pub fn recompress_batch(
    batch: &[u8],
    codec: u8,
    limit_bytes: usize,
) -> Result<Vec<u8>, CodecError> {
    let not_a_batch = |reason: &str| CodecError::Invalid {
        codec,
        reason: reason.to_string(),
    };
    let h = BatchHeader::parse(batch).map_err(|_| not_a_batch("not a record batch"))?;
    if h.total_bytes() != batch.len() as u64 {
        return Err(not_a_batch("not exactly one record batch"));
    }
    let from = h.compression();
    if from == codec {
        return Ok(batch.to_vec());
    }
    let payload = &batch[HEADER_BYTES..];
    let records: Cow<'_, [u8]> = match from {
        0 => Cow::Borrowed(payload),
        _ => Cow::Owned(decompress(from, payload, limit_bytes)?),
    };
    let deltas = Deltas::Increasing {
        last_offset_delta: h.last_offset_delta(),
    };
    walk_records_with(&records, h.record_count().max(0) as u32, deltas, |_| {}).map_err(|e| {
        CodecError::Invalid {
            codec: from,
            reason: format!("the records do not decode: {e}"),
        }
    })?;
    let packed = match codec {
        0 => records,
        _ => Cow::Owned(KafkaCodecs.compress(codec, &records)?),
    };
    let length = i32::try_from(HEADER_BYTES - LOG_OVERHEAD_BYTES + packed.len())
        .map_err(|_| not_a_batch("the re-compressed batch passes 2 GiB"))?;
    let attributes = (h.attributes() & !CODEC_BITS) | i16::from(codec);
    let mut out = Vec::with_capacity(HEADER_BYTES + packed.len());
    out.extend_from_slice(&batch[..HEADER_BYTES]);
    out.extend_from_slice(&packed);
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    seal_crc(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::records_of;
    use bytes::Bytes;
    use runnel_log::batch::{BatchHeader, validate};

    fn sample() -> Vec<NewRecord> {
        vec![
            NewRecord {
                key: Some(b"k".to_vec()),
                value: Some(b"v".to_vec()),
                headers: vec![
                    ("ce_type".into(), b"OrderPlaced".to_vec()),
                    ("ce_type".into(), Vec::new()),
                ],
                timestamp_ms: Some(5_000),
            },
            NewRecord::default(),
            NewRecord {
                key: Some(Vec::new()),
                value: Some(vec![0xff; 300]),
                headers: Vec::new(),
                timestamp_ms: Some(1_000),
            },
        ]
    }

    #[test]
    fn encoded_batches_read_back_through_records_of() {
        let batch = encode_batch(&sample(), 3_000);
        let (records, next) = records_of(&batch, 0);
        assert_eq!(next, 3);
        let got: Vec<_> = records
            .iter()
            .map(|r| (r.offset, r.timestamp, r.key.clone(), r.value.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    0,
                    5_000,
                    Some(Bytes::from_static(b"k")),
                    Some(Bytes::from_static(b"v"))
                ),
                (1, 3_000, None, None),
                (
                    2,
                    1_000,
                    Some(Bytes::new()),
                    Some(Bytes::from(vec![0xff; 300]))
                ),
            ]
        );
        assert_eq!(
            records[0].headers,
            vec![
                (
                    Bytes::from_static(b"ce_type"),
                    Some(Bytes::from_static(b"OrderPlaced"))
                ),
                (Bytes::from_static(b"ce_type"), Some(Bytes::new())),
            ]
        );
        assert!(records[1].headers.is_empty());
    }

    #[test]
    fn the_log_accepts_encoded_batches() {
        let batch = encode_batch(&sample(), 3_000);
        let info = validate(&batch, 1 << 20).unwrap();
        assert_eq!(info.record_count, 3);
        assert_eq!(info.max_timestamp, 5_000);
        let h = BatchHeader::parse(&batch).unwrap();
        assert_eq!((h.producer_id(), h.compression()), (-1, 0));
        assert_eq!(h.base_timestamp(), 1_000);
    }

    /// A batch of [`sample`] in `codec`, with producer fields, a log-append-time
    /// timestamp type, and a base offset and leader epoch a log would have written.
    fn idempotent_sample_in(codec: u8) -> Vec<u8> {
        let plain = encode_batch(&sample(), 3_000);
        let mut b = plain[..HEADER_BYTES].to_vec();
        match codec {
            0 => b.extend_from_slice(&plain[HEADER_BYTES..]),
            c => b.extend_from_slice(&KafkaCodecs.compress(c, &plain[HEADER_BYTES..]).unwrap()),
        }
        let length = (b.len() - LOG_OVERHEAD_BYTES) as i32;
        b[0..8].copy_from_slice(&41i64.to_be_bytes());
        b[8..12].copy_from_slice(&length.to_be_bytes());
        b[12..16].copy_from_slice(&7i32.to_be_bytes());
        b[21..23].copy_from_slice(&(0x08 | i16::from(codec)).to_be_bytes());
        b[43..51].copy_from_slice(&1234i64.to_be_bytes());
        b[51..53].copy_from_slice(&3i16.to_be_bytes());
        b[53..57].copy_from_slice(&17i32.to_be_bytes());
        seal_crc(&mut b);
        b
    }

    /// The records of a batch, uncompressed.
    fn raw_records(batch: &[u8]) -> Vec<u8> {
        let codec = BatchHeader::parse(batch).unwrap().compression();
        match codec {
            0 => batch[HEADER_BYTES..].to_vec(),
            c => decompress(c, &batch[HEADER_BYTES..], 1 << 20).unwrap(),
        }
    }

    #[test]
    fn recompressing_between_every_pair_of_codecs_keeps_records_and_header() {
        for from in 0..=4u8 {
            let original = idempotent_sample_in(from);
            validate(&original, 1 << 20).unwrap();
            for to in 0..=4u8 {
                let out = recompress_batch(&original, to, 1 << 20).unwrap();
                let info = validate(&out, 1 << 20)
                    .unwrap_or_else(|e| panic!("{from} -> {to}: the CRC and framing: {e}"));
                let (h, o) = (
                    BatchHeader::parse(&out).unwrap(),
                    BatchHeader::parse(&original).unwrap(),
                );
                assert_eq!(h.compression(), to, "{from} -> {to}");
                assert_eq!(h.attributes() & !CODEC_BITS, 0x08, "{from} -> {to}");
                let fields = |h: &BatchHeader<'_>| {
                    (
                        h.base_offset_raw(),
                        h.partition_leader_epoch(),
                        h.last_offset_delta(),
                        h.base_timestamp(),
                        h.max_timestamp(),
                        h.producer_id(),
                        h.producer_epoch(),
                        h.base_sequence(),
                        h.record_count(),
                    )
                };
                assert_eq!(fields(&h), fields(&o), "{from} -> {to}");
                assert_eq!((info.producer_id, info.base_sequence), (1234, 17));
                assert_eq!(info.record_count, 3);
                assert_eq!(raw_records(&out), raw_records(&original), "{from} -> {to}");
                assert_eq!(
                    records_of(&out, 0),
                    records_of(&original, 0),
                    "{from} -> {to}"
                );
                if from == to {
                    assert_eq!(out, original, "a batch in the codec already is kept");
                }
            }
        }
    }

    #[test]
    fn recompressing_is_bounded_by_the_decompression_limit() {
        let big = vec![NewRecord {
            value: Some(vec![0; 64 << 10]),
            ..NewRecord::default()
        }];
        let plain = encode_batch(&big, 0);
        let mut zstd = plain[..HEADER_BYTES].to_vec();
        zstd.extend_from_slice(&KafkaCodecs.compress(4, &plain[HEADER_BYTES..]).unwrap());
        let length = (zstd.len() - LOG_OVERHEAD_BYTES) as i32;
        zstd[8..12].copy_from_slice(&length.to_be_bytes());
        zstd[21..23].copy_from_slice(&4i16.to_be_bytes());
        seal_crc(&mut zstd);
        assert!(matches!(
            recompress_batch(&zstd, 1, 32 << 10),
            Err(CodecError::TooLarge { codec: 4, .. })
        ));
        assert!(recompress_batch(&zstd, 1, 1 << 20).is_ok());
    }

    #[test]
    fn records_that_do_not_walk_are_refused_not_resealed() {
        let mut lying = idempotent_sample_in(2);
        lying[57..61].copy_from_slice(&4i32.to_be_bytes()); // four records, three there
        lying[23..27].copy_from_slice(&3i32.to_be_bytes());
        seal_crc(&mut lying);
        for to in [0, 1, 4] {
            assert!(
                matches!(
                    recompress_batch(&lying, to, 1 << 20),
                    Err(CodecError::Invalid { codec: 2, .. })
                ),
                "to {to}"
            );
        }
        let original = idempotent_sample_in(0);
        assert!(recompress_batch(&original[..HEADER_BYTES + 3], 4, 1 << 20).is_err());
        assert!(
            recompress_batch(&original, 7, 1 << 20).is_err(),
            "no codec 7"
        );
    }

    #[test]
    #[should_panic(expected = "at least one record")]
    fn an_empty_batch_is_a_bug() {
        let _ = encode_batch(&[], 0);
    }
}
