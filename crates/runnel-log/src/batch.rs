//! The record batch: Kafka's RecordBatch v2 layout (magic 2), which is also the on-disk
//! format of a segment.
//!
//! The log treats a batch as bytes plus the 61-byte header described below. It never
//! looks inside the records, so compressed batches pass through untouched.
//!
//! | offset | size | field                | notes                                         |
//! |-------:|-----:|----------------------|-----------------------------------------------|
//! | 0      | 8    | baseOffset           | rewritten by the log on append                |
//! | 8      | 4    | batchLength          | bytes after this field                        |
//! | 12     | 4    | partitionLeaderEpoch | rewritten by the log on append (always 0)     |
//! | 16     | 1    | magic                | must be 2                                     |
//! | 17     | 4    | crc                  | CRC-32C of bytes 21..end                      |
//! | 21     | 2    | attributes           | bits 0-2 codec, 3 timestamp type, 4 txn, 5 control |
//! | 23     | 4    | lastOffsetDelta      | recordCount - 1 on append; kept by the cleaner |
//! | 27     | 8    | baseTimestamp        |                                               |
//! | 35     | 8    | maxTimestamp         | of the records kept, after the cleaner        |
//! | 43     | 8    | producerId           | -1 when not idempotent                        |
//! | 51     | 2    | producerEpoch        |                                               |
//! | 53     | 4    | baseSequence         |                                               |
//! | 57     | 4    | recordCount          |                                               |
//! | 61     | ...  | records              | compressed as a whole when the codec is not 0 |
//!
//! All integers are big-endian.

use crate::error::BatchError;
use crate::types::{Offset, TimestampMs};

/// Size of the fixed batch header.
pub const HEADER_BYTES: usize = 61;
/// `baseOffset` plus `batchLength`: the bytes that precede what `batchLength` counts.
pub const LOG_OVERHEAD_BYTES: usize = 12;
/// The only batch format the log stores.
pub const MAGIC_V2: u8 = 2;
/// The leader epoch written into every stored batch. A single node never changes leader,
/// so the epoch is constant; clients that validate offsets by epoch see a steady 0.
pub const LEADER_EPOCH: i32 = 0;

const CRC_START: usize = 21;

/// A zero-copy view of a batch header. Holding one proves at least [`HEADER_BYTES`]
/// bytes are present; it does not prove the batch is valid (see [`validate`]).
#[derive(Clone, Copy, Debug)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

macro_rules! be_field {
    ($name:ident, $ty:ty, $at:expr, $doc:expr) => {
        #[doc = $doc]
        #[must_use]
        pub fn $name(&self) -> $ty {
            const N: usize = std::mem::size_of::<$ty>();
            let mut raw = [0u8; N];
            raw.copy_from_slice(&self.bytes[$at..$at + N]);
            <$ty>::from_be_bytes(raw)
        }
    };
}

impl<'a> BatchHeader<'a> {
    /// Views the first [`HEADER_BYTES`] of `bytes` as a header.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, BatchError> {
        if bytes.len() < HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed: HEADER_BYTES as u64,
                available: bytes.len() as u64,
            });
        }
        Ok(BatchHeader { bytes })
    }

    be_field!(base_offset_raw, i64, 0, "The `baseOffset` field as stored.");
    be_field!(
        batch_length,
        i32,
        8,
        "The `batchLength` field: bytes after it."
    );
    be_field!(
        partition_leader_epoch,
        i32,
        12,
        "The `partitionLeaderEpoch` field."
    );
    be_field!(crc, u32, 17, "The stored CRC-32C.");
    be_field!(attributes, i16, 21, "The `attributes` bit field.");
    be_field!(last_offset_delta, i32, 23, "The `lastOffsetDelta` field.");
    be_field!(base_timestamp, i64, 27, "The first record's timestamp.");
    be_field!(
        max_timestamp,
        i64,
        35,
        "The largest record timestamp in the batch."
    );
    be_field!(producer_id, i64, 43, "The idempotent producer id, or -1.");
    be_field!(producer_epoch, i16, 51, "The producer epoch.");
    be_field!(
        base_sequence,
        i32,
        53,
        "The first record's sequence number, or -1."
    );
    be_field!(record_count, i32, 57, "The `recordCount` field.");

    /// The magic byte (format version).
    #[must_use]
    pub fn magic(&self) -> u8 {
        self.bytes[16]
    }

    /// The batch's first offset, as the log assigned it.
    #[must_use]
    pub fn base_offset(&self) -> Offset {
        Offset(self.base_offset_raw().max(0) as u64)
    }

    /// The batch's last offset.
    #[must_use]
    pub fn last_offset(&self) -> Offset {
        self.base_offset()
            .plus(self.last_offset_delta().max(0) as u64)
    }

    /// The batch's whole size on disk, from the length field (not checked against data).
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        (self.batch_length().max(0) as u64) + LOG_OVERHEAD_BYTES as u64
    }

    /// The compression codec: 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    #[must_use]
    pub fn compression(&self) -> u8 {
        (self.attributes() & 0x07) as u8
    }

    /// Whether this is a control batch (transaction markers).
    #[must_use]
    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }

    /// Whether the batch belongs to a transaction.
    #[must_use]
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }

    /// Whether the timestamps are broker append times (`LogAppendTime`).
    #[must_use]
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & 0x08 != 0
    }
}

/// What [`validate`] learned about a batch, for the caller's bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchInfo {
    /// Number of records in the batch.
    pub record_count: u32,
    /// Largest record timestamp.
    pub max_timestamp: TimestampMs,
    /// Total size in bytes, header included.
    pub total_bytes: u32,
    /// The producer id (-1 when not idempotent).
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
    /// The first record's sequence number.
    pub base_sequence: i32,
}

/// Checks that `bytes` holds exactly one well-formed v2 batch of at most `max_bytes`.
///
/// The checks run cheapest first: length, size limit, magic, record counts, then the
/// CRC-32C over bytes 21..end. The offset and leader-epoch fields are not checked
/// (the log rewrites them, and the CRC does not cover them).
pub fn validate(bytes: &[u8], max_bytes: u32) -> Result<BatchInfo, BatchError> {
    let (header, total) = check_framing(bytes, max_bytes)?;
    check_header(&header)?;
    check_dense_counts(&header)?;
    check_crc(&header, bytes)?;
    if header.compression() == 0 {
        // Compressed payloads are checked where they are decompressed (readers that
        // look inside), not on every append.
        crate::records::walk_records_with(
            &bytes[HEADER_BYTES..],
            header.record_count() as u32,
            crate::records::Deltas::Dense,
            |_| {},
        )?;
    }
    Ok(BatchInfo {
        record_count: header.record_count() as u32,
        max_timestamp: header.max_timestamp(),
        total_bytes: total as u32,
        producer_id: header.producer_id(),
        producer_epoch: header.producer_epoch(),
        base_sequence: header.base_sequence(),
    })
}

/// Checks a batch as read back from a log, the way the log's own readers do: framing,
/// magic, `0 < recordCount <= lastOffsetDelta + 1`, CRC-32C, and for an uncompressed
/// batch its records, whose offset deltas must strictly grow within `lastOffsetDelta`
/// (the cleaner leaves gaps). For tools and tests that inspect stored data.
pub fn validate_stored(bytes: &[u8]) -> Result<(), BatchError> {
    let (header, _) = check_framing(bytes, u32::MAX)?;
    check_header(&header)?;
    check_crc(&header, bytes)?;
    if header.compression() == 0 {
        let deltas = crate::records::Deltas::Increasing {
            last_offset_delta: header.last_offset_delta(),
        };
        crate::records::walk_records_with(
            &bytes[HEADER_BYTES..],
            header.record_count() as u32,
            deltas,
            |_| {},
        )?;
    }
    Ok(())
}

/// Length field, exactly one batch, and the size limit.
fn check_framing(bytes: &[u8], max_bytes: u32) -> Result<(BatchHeader<'_>, u64), BatchError> {
    let header = BatchHeader::parse(bytes)?;
    let length = header.batch_length();
    if length < (HEADER_BYTES - LOG_OVERHEAD_BYTES) as i32 {
        return Err(BatchError::BadLength { length });
    }
    let total = header.total_bytes();
    if total > bytes.len() as u64 {
        return Err(BatchError::Truncated {
            needed: total,
            available: bytes.len() as u64,
        });
    }
    if total < bytes.len() as u64 {
        return Err(BatchError::TrailingBytes {
            batch_bytes: total,
            given: bytes.len() as u64,
        });
    }
    if total > u64::from(max_bytes) {
        return Err(BatchError::TooLarge {
            bytes: total,
            max_bytes,
        });
    }
    Ok((header, total))
}

/// The header checks that need no payload, for a stored batch: magic 2, and
/// `0 < recordCount <= lastOffsetDelta + 1`. A batch the cleaner rewrote keeps its
/// `lastOffsetDelta` (so its offsets do not move) but holds fewer records.
pub(crate) fn check_header(header: &BatchHeader<'_>) -> Result<(), BatchError> {
    if header.magic() != MAGIC_V2 {
        return Err(BatchError::BadMagic {
            magic: header.magic(),
        });
    }
    let count = header.record_count();
    if count <= 0 {
        return Err(BatchError::BadRecordCount { count });
    }
    let delta = header.last_offset_delta();
    if i64::from(delta) + 1 < i64::from(count) {
        return Err(BatchError::CountMismatch {
            last_offset_delta: delta,
            record_count: count,
        });
    }
    Ok(())
}

/// The append rule on top of [`check_header`]: a producer's batch has no gaps, so
/// `lastOffsetDelta + 1 == recordCount`.
fn check_dense_counts(header: &BatchHeader<'_>) -> Result<(), BatchError> {
    let (count, delta) = (header.record_count(), header.last_offset_delta());
    if i64::from(delta) + 1 != i64::from(count) {
        return Err(BatchError::CountMismatch {
            last_offset_delta: delta,
            record_count: count,
        });
    }
    Ok(())
}

/// Verifies the CRC-32C of a complete batch (`bytes` is exactly the batch).
pub(crate) fn check_crc(header: &BatchHeader<'_>, bytes: &[u8]) -> Result<(), BatchError> {
    let actual = crc32c::crc32c(&bytes[CRC_START..]);
    if actual != header.crc() {
        return Err(BatchError::BadCrc {
            stored: header.crc(),
            computed: actual,
        });
    }
    Ok(())
}

/// Writes `base` into the `baseOffset` field and [`LEADER_EPOCH`] into
/// `partitionLeaderEpoch`. Neither is covered by the CRC.
pub(crate) fn rewrite_header(bytes: &mut [u8], base: Offset) {
    bytes[0..8].copy_from_slice(&(base.0 as i64).to_be_bytes());
    bytes[12..16].copy_from_slice(&LEADER_EPOCH.to_be_bytes());
}

/// Computes and stores the CRC of a batch whose other fields are final. Used by tests
/// and tools that build batches, and by the cleaner for the batches it rewrites.
pub fn seal_crc(bytes: &mut [u8]) {
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// A copy of `original` (a stored batch) with its records replaced by `payload`, which
/// holds `record_count` records whose largest timestamp is `max_timestamp`, and the CRC
/// recomputed. Everything else, `baseOffset`, `lastOffsetDelta` and `baseTimestamp`
/// included, is kept: this is how the cleaner rewrites a batch without moving any
/// offset (record timestamp and offset deltas stay relative to the same bases).
pub(crate) fn with_records(
    original: &[u8],
    record_count: i32,
    max_timestamp: TimestampMs,
    payload: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len());
    out.extend_from_slice(&original[..HEADER_BYTES]);
    out.extend_from_slice(payload);
    let length = (out.len() - LOG_OVERHEAD_BYTES) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    out[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    out[57..61].copy_from_slice(&record_count.to_be_bytes());
    seal_crc(&mut out);
    out
}

/// One record for [`build_batch`]: an optional key and an optional value (None is null).
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// One record for [`build_batch_records`].
#[derive(Clone, Debug, Default)]
pub struct BuildRecord<'a> {
    /// The key, `None` for null.
    pub key: Option<&'a [u8]>,
    /// The value, `None` for null.
    pub value: Option<&'a [u8]>,
    /// Headers in order (Kafka allows repeated names).
    pub headers: Vec<(&'a [u8], &'a [u8])>,
    /// Create time, ms since the Unix epoch.
    pub timestamp: TimestampMs,
}

/// An uncompressed RecordBatch v2 holding `records` in order: offsets 0, 1, 2, ... from
/// base offset 0 (the log writes the real base), no producer id, CRC-32C sealed. The
/// one batch builder: `build_batch` and the services' appends (runnel-core) use it.
///
/// # Panics
///
/// If `records` is empty (a batch holds at least one record) or would pass 2 GiB.
#[must_use]
pub fn build_batch_records(records: &[BuildRecord<'_>]) -> Vec<u8> {
    assert!(!records.is_empty(), "a batch holds at least one record");
    let count = i32::try_from(records.len()).expect("fewer than 2^31 records");
    // The base is the smallest timestamp, so every delta is non-negative.
    let base_ts = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut body = Vec::new();
    let mut rec = Vec::new();
    for (i, r) in records.iter().enumerate() {
        rec.clear();
        rec.push(0u8); // attributes: unused
        put_varint(&mut rec, r.timestamp.saturating_sub(base_ts));
        put_varint(&mut rec, i as i64); // offset delta
        put_bytes(&mut rec, r.key);
        put_bytes(&mut rec, r.value);
        put_varint(&mut rec, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut rec, Some(k));
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

/// A simple, uncompressed batch builder: enough for tests, benchmarks and tools.
///
/// Every record gets `base_timestamp`, and no headers ([`build_batch_records`] has them).
#[must_use]
pub fn build_batch(records: &[KeyValue<'_>], base_timestamp: TimestampMs) -> Vec<u8> {
    let records: Vec<BuildRecord<'_>> = records
        .iter()
        .map(|(key, value)| BuildRecord {
            key: *key,
            value: *value,
            headers: Vec::new(),
            timestamp: base_timestamp,
        })
        .collect();
    build_batch_records(&records)
}

fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
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

    fn sample() -> Vec<u8> {
        build_batch(&[(Some(b"k"), Some(b"v")), (None, Some(b"w"))], 1_000)
    }

    #[test]
    fn built_batch_validates_and_reports_fields() {
        let b = sample();
        let info = validate(&b, 1 << 20).unwrap();
        assert_eq!(info.record_count, 2);
        assert_eq!(info.max_timestamp, 1_000);
        assert_eq!(info.total_bytes as usize, b.len());
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.magic(), 2);
        assert_eq!(h.last_offset_delta(), 1);
        assert_eq!(h.compression(), 0);
        assert!(!h.is_control());
    }

    #[test]
    fn rewrite_does_not_break_the_crc() {
        let mut b = sample();
        rewrite_header(&mut b, Offset(1234));
        validate(&b, 1 << 20).unwrap();
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.base_offset(), Offset(1234));
        assert_eq!(h.last_offset(), Offset(1235));
        assert_eq!(h.partition_leader_epoch(), LEADER_EPOCH);
    }

    #[test]
    fn truncated_batch_is_rejected() {
        let b = sample();
        assert!(matches!(
            validate(&b[..30], 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&b[..b.len() - 1], 1 << 20),
            Err(BatchError::Truncated { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut b = sample();
        b.push(0);
        assert!(matches!(
            validate(&b, 1 << 20),
            Err(BatchError::TrailingBytes { .. })
        ));
    }

    #[test]
    fn wrong_magic_is_rejected() {
        let mut b = sample();
        b[16] = 1;
        assert_eq!(
            validate(&b, 1 << 20),
            Err(BatchError::BadMagic { magic: 1 })
        );
    }

    #[test]
    fn flipped_payload_bit_fails_the_crc() {
        let mut b = sample();
        let last = b.len() - 1;
        b[last] ^= 0x10;
        assert!(matches!(
            validate(&b, 1 << 20),
            Err(BatchError::BadCrc { .. })
        ));
    }

    #[test]
    fn oversized_batch_is_rejected_before_the_crc() {
        let b = sample();
        assert!(matches!(validate(&b, 10), Err(BatchError::TooLarge { .. })));
    }

    #[test]
    fn negative_and_mismatched_counts_are_rejected() {
        let mut b = sample();
        b[57..61].copy_from_slice(&(-3i32).to_be_bytes());
        seal_crc(&mut b);
        assert_eq!(
            validate(&b, 1 << 20),
            Err(BatchError::BadRecordCount { count: -3 })
        );
        let mut b = sample();
        b[23..27].copy_from_slice(&5i32.to_be_bytes());
        seal_crc(&mut b);
        assert!(matches!(
            validate(&b, 1 << 20),
            Err(BatchError::CountMismatch { .. })
        ));
    }

    #[test]
    fn nonsense_length_is_rejected() {
        let mut b = sample();
        b[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            validate(&b, 1 << 20),
            Err(BatchError::BadLength { .. })
        ));
    }

    #[test]
    fn a_compacted_batch_is_valid_stored_but_not_as_an_append() {
        let b = build_batch(&[(Some(b"a"), Some(b"1")), (Some(b"a"), Some(b"2"))], 5);
        let h = BatchHeader::parse(&b).unwrap();
        // Keep only the second record (delta 1): recordCount 1, lastOffsetDelta 1.
        let mut second = Vec::new();
        let mut i = 0;
        crate::records::walk_records(&b[HEADER_BYTES..], 2, |r| {
            if i == 1 {
                second = r.bytes.to_vec();
            }
            i += 1;
        })
        .unwrap();
        let c = with_records(&b, 1, 5, &second);
        let hc = BatchHeader::parse(&c).unwrap();
        assert_eq!(hc.record_count(), 1);
        assert_eq!(hc.last_offset_delta(), h.last_offset_delta());
        validate_stored(&c).unwrap();
        assert!(matches!(
            validate(&c, 1 << 20),
            Err(BatchError::CountMismatch { .. })
        ));
        // More records than lastOffsetDelta allows is never valid.
        let mut d = b.clone();
        d[23..27].copy_from_slice(&0i32.to_be_bytes());
        seal_crc(&mut d);
        assert!(validate_stored(&d).is_err());
    }
}
