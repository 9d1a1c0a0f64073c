//! Building record batches: what the HTTP API and the embedded transport append.
//!
//! [`encode_batch`] writes an uncompressed RecordBatch v2 (magic 2), the format the log
//! stores, with headers, no producer id (-1: not idempotent) and its CRC-32C sealed, so
//! `runnel_log::batch::validate` accepts it as it accepts what Kafka clients send.

use runnel_log::batch::{BuildRecord, build_batch_records};

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
