//! Building record batches: what the HTTP API and the embedded transport append.
//!
//! [`encode_batch`] writes an uncompressed RecordBatch v2 (magic 2), the format the log
//! stores, with headers, no producer id (-1: not idempotent) and its CRC-32C sealed, so
//! `runnel_log::batch::validate` accepts it as it accepts what Kafka clients send.

use runnel_log::batch::{HEADER_BYTES, LOG_OVERHEAD_BYTES, MAGIC_V2, seal_crc};

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
    let count = i32::try_from(records.len()).expect("fewer than 2^31 records");
    let timestamp = |r: &NewRecord| r.timestamp_ms.unwrap_or(now_ms);
    // The base is the smallest timestamp, so every delta is non-negative.
    let base_ts = records.iter().map(timestamp).min().unwrap_or(now_ms);
    let max_ts = records.iter().map(timestamp).max().unwrap_or(now_ms);
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0u8); // attributes: unused
        put_varint(&mut rec, timestamp(r).saturating_sub(base_ts));
        put_varint(&mut rec, i as i64);
        put_bytes(&mut rec, r.key.as_deref());
        put_bytes(&mut rec, r.value.as_deref());
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut rec, Some(k.as_bytes()));
            put_bytes(&mut rec, Some(v));
        }
        put_varint(&mut body, rec.len() as i64);
        body.extend_from_slice(&rec);
    }
    let batch_length =
        i32::try_from(HEADER_BYTES - LOG_OVERHEAD_BYTES + body.len()).expect("a batch below 2 GiB");
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    out.extend_from_slice(&0i64.to_be_bytes()); // baseOffset: written by the log
    out.extend_from_slice(&batch_length.to_be_bytes());
    out.extend_from_slice(&(-1i32).to_be_bytes()); // partitionLeaderEpoch: written by the log
    out.push(MAGIC_V2);
    out.extend_from_slice(&0u32.to_be_bytes()); // crc, sealed below
    out.extend_from_slice(&0i16.to_be_bytes()); // attributes: no codec, create time
    out.extend_from_slice(&(count - 1).to_be_bytes()); // lastOffsetDelta
    out.extend_from_slice(&base_ts.to_be_bytes());
    out.extend_from_slice(&max_ts.to_be_bytes());
    out.extend_from_slice(&(-1i64).to_be_bytes()); // producerId: not idempotent
    out.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
    out.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(&body);
    seal_crc(&mut out);
    out
}

/// A zigzag varint, as Kafka's records use.
fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(out, -1),
        Some(b) => {
            put_varint(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
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
                    "ce_type".to_string(),
                    Some(Bytes::from_static(b"OrderPlaced"))
                ),
                ("ce_type".to_string(), Some(Bytes::new())),
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

    #[test]
    #[should_panic(expected = "at least one record")]
    fn an_empty_batch_is_a_bug() {
        let _ = encode_batch(&[], 0);
    }
}
