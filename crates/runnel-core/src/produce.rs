//! The append path: Kafka's produce rules, applied once for every front end.
//!
//! The storage engine validates what any log needs (length, size limit, magic, counts,
//! CRC). On top, a produce must follow Kafka's rules: no control batches from clients,
//! a known codec (zstd only from Produce v7, KIP-110), idempotent batches with a
//! sequence, and idempotent sequences that continue the producer's (Kafka's
//! `ProducerStateEntry`, in [`crate::producer_state`]). [`check_produce_rules`] checks
//! the first; [`crate::Core::append`] checks all of them, appends and records the
//! producer's batch under the partition's producer lock, so a retry cannot slip in
//! between.
//!
//! Compressed batches are decompressed once on every topic, as Kafka's `LogValidator`
//! does ([`check_compressed_records`]): their records must decode, to at most the
//! topic's [`decompressed_bytes_max`]. The output is counted, not kept, so the check
//! costs CPU, not memory. It keeps decompression bombs out of every log, not only the
//! compacted ones the cleaner reads: readers that look inside (ListOffsets by time, the
//! HTTP API, the embedded transport) would otherwise stop at such a batch for good.
//!
//! A topic whose `compression.type` names a codec stores every batch in it: a batch in
//! another codec is re-compressed before it is appended ([`prepare_for_topic`], as
//! Kafka's `LogValidator` does), within the same decompression limit, which then also
//! serves as the check above. Its producer fields and record count do not change, so
//! idempotent sequences are checked on the re-compressed batch as on the original.

use std::borrow::Cow;

use runnel_log::batch::{BatchHeader, HEADER_BYTES, MAGIC_V2};
use runnel_log::codec::{CODEC_ZSTD, decompressed_bytes_max};
use runnel_log::{AppendTicket, CodecError, LogError, Offset, Partition};

use crate::producer_state::{BatchSequence, SequenceCheck, SequenceError};
use crate::producers::SharedProducers;

/// Codec ids Kafka defines (none, gzip, snappy, lz4, zstd); 5-7 are invalid.
const CODEC_MAX: u8 = CODEC_ZSTD;
/// zstd needs Produce v7 (KIP-110): older clients could not read it back.
const ZSTD_PRODUCE_VERSION_MIN: i16 = 7;
/// The produce version front ends that do not speak Kafka append with: every rule of
/// the newest version applies.
pub const PRODUCE_VERSION_LATEST: i16 = i16::MAX;

/// Why a produce was refused. Front ends map it: the broker to Kafka error codes
/// (`runnel-broker/src/errors.rs`), the HTTP API to statuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// Only Runnel writes internal topics (`crate::topics::is_internal`).
    #[error("{topic} is internal: only Runnel writes it")]
    InternalTopic {
        /// The topic named.
        topic: String,
    },
    /// No such topic.
    #[error("topic {topic:?} does not exist")]
    UnknownTopic {
        /// The topic named.
        topic: String,
    },
    /// The topic has no such partition.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// The topic named.
        topic: String,
        /// The partition named.
        partition: u32,
    },
    /// The batch breaks a rule about its records (Kafka's INVALID_RECORD).
    #[error("invalid record batch: {reason}")]
    InvalidRecord {
        /// Which rule.
        reason: &'static str,
    },
    /// The batch's header cannot be read (Kafka's CORRUPT_MESSAGE).
    #[error("corrupt record batch")]
    Corrupt,
    /// A codec id Kafka does not define, or zstd before Produce v7.
    #[error("unsupported compression codec {codec}")]
    UnsupportedCompression {
        /// The batch's codec id.
        codec: u8,
    },
    /// The records of a compressed batch do not decompress
    /// ([`CodecError::Invalid`], Kafka's CORRUPT_MESSAGE), or decompress to more than
    /// the topic's [`decompressed_bytes_max`] ([`CodecError::TooLarge`], Kafka's
    /// MESSAGE_TOO_LARGE: the batch is larger than the broker takes, measured
    /// uncompressed).
    #[error("compressed records refused: {0}")]
    Decompression(CodecError),
    /// An idempotent batch that does not continue its producer's sequence; carries the
    /// Kafka code ([`SequenceError::kafka_code`]).
    #[error(transparent)]
    Sequence(SequenceError),
    /// The log refused the append (size, validation, a poisoned partition, I/O).
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Checks Kafka's produce rules that the storage engine does not know about, on the
/// batch header alone. `produce_version` is the Produce API version the batch came with.
pub fn check_produce_rules(records: &[u8], produce_version: i16) -> Result<(), ProduceError> {
    if records.is_empty() {
        return Err(ProduceError::InvalidRecord { reason: "no batch" });
    }
    let h = BatchHeader::parse(records).map_err(|_| ProduceError::Corrupt)?;
    if h.magic() != MAGIC_V2 {
        return Err(ProduceError::InvalidRecord {
            reason: "only magic 2 batches are accepted",
        });
    }
    if h.is_control() {
        // Only brokers write control batches (transaction markers).
        return Err(ProduceError::InvalidRecord {
            reason: "clients may not write control batches",
        });
    }
    let codec = h.compression();
    if codec > CODEC_MAX || (codec == CODEC_ZSTD && produce_version < ZSTD_PRODUCE_VERSION_MIN) {
        return Err(ProduceError::UnsupportedCompression { codec });
    }
    if h.producer_id() >= 0 && h.base_sequence() < 0 {
        return Err(ProduceError::InvalidRecord {
            reason: "an idempotent batch needs a base sequence",
        });
    }
    Ok(())
}

/// Checks that the records of a compressed batch decompress, to at most
/// [`decompressed_bytes_max`]`(max_message_bytes)` (`max_message_bytes` is the topic's
/// `max.message.bytes`). Uncompressed batches pass; so do batches whose header cannot
/// be read ([`check_produce_rules`] refuses those).
///
/// The batch is validated as the log would first (size, counts, CRC), so bytes the log
/// refuses anyway are never decompressed, and are refused with the log's error.
/// Decompression stops at the limit and keeps nothing.
pub fn check_compressed_records(
    records: &[u8],
    max_message_bytes: u32,
) -> Result<(), ProduceError> {
    let codec = match BatchHeader::parse(records) {
        Ok(h) if h.compression() != 0 => h.compression(),
        _ => return Ok(()),
    };
    runnel_log::batch::validate(records, max_message_bytes).map_err(LogError::Batch)?;
    let payload = &records[HEADER_BYTES..];
    crate::records::decompressed_len(codec, payload, decompressed_bytes_max(max_message_bytes))
        .map_err(ProduceError::Decompression)?;
    Ok(())
}

/// The batch as a topic stores it. `max_message_bytes` is the topic's
/// `max.message.bytes`; `codec` the codec its `compression.type` names (`None` for
/// `producer`: the batch's own).
///
/// A batch already in that codec is checked ([`check_compressed_records`]) and kept. A
/// batch in another codec is validated as the log would (size, counts, CRC: a damaged
/// batch is refused, never sealed anew), then re-compressed
/// ([`crate::encode::recompress_batch`]), decompressing to at most
/// [`decompressed_bytes_max`]`(max_message_bytes)`. The log checks the result against
/// `max.message.bytes` again, as Kafka does after re-compressing (a batch may grow).
/// Batches whose header cannot be read are kept ([`check_produce_rules`] refuses them).
pub fn prepare_for_topic(
    records: &[u8],
    max_message_bytes: u32,
    codec: Option<u8>,
) -> Result<Cow<'_, [u8]>, ProduceError> {
    let from = BatchHeader::parse(records).map(|h| h.compression());
    match (from, codec) {
        (Ok(from), Some(to)) if from != to => {
            runnel_log::batch::validate(records, max_message_bytes).map_err(LogError::Batch)?;
            let limit = decompressed_bytes_max(max_message_bytes);
            crate::encode::recompress_batch(records, to, limit)
                .map(Cow::Owned)
                .map_err(ProduceError::Decompression)
        }
        _ => {
            check_compressed_records(records, max_message_bytes)?;
            Ok(Cow::Borrowed(records))
        }
    }
}

/// Checks and appends one partition's batch. `max_message_bytes` and `codec` are the
/// topic's `max.message.bytes` and `compression.type` (for [`prepare_for_topic`]).
/// `state` is the partition's producer state for an idempotent batch, `None` otherwise.
/// The ticket waits for durability.
pub(crate) fn append_checked(
    partition: &Partition,
    records: &[u8],
    produce_version: i16,
    max_message_bytes: u32,
    codec: Option<u8>,
    state: Option<SharedProducers>,
) -> Result<AppendTicket, ProduceError> {
    check_produce_rules(records, produce_version)?;
    // Before the producer lock: decompressing and compressing take time, and hold
    // nothing.
    let stored = prepare_for_topic(records, max_message_bytes, codec)?;
    let records = &*stored;
    let Some(state) = state else {
        return Ok(partition.append_deferred(records)?.into_ticket());
    };
    let h = BatchHeader::parse(records).expect("checked above");
    let seq = BatchSequence {
        producer_id: h.producer_id(),
        producer_epoch: h.producer_epoch(),
        base_sequence: h.base_sequence(),
        record_count: h.record_count(),
    };
    // The check, the write and the state update happen together, so a retry cannot slip
    // in between; the fsync wait happens later, shared with other appenders.
    let mut producers = state.lock().unwrap_or_else(|p| p.into_inner());
    match producers.check(&seq) {
        // A retry of a batch already written: the original's offsets, once durable.
        SequenceCheck::Duplicate {
            base_offset,
            last_offset,
        } => Ok(partition.ticket_through(Offset(base_offset), Offset(last_offset))),
        SequenceCheck::Reject(e) => Err(ProduceError::Sequence(e)),
        SequenceCheck::Append => {
            let pending = partition.append_deferred(records)?;
            let info = pending.info();
            producers.record(
                &seq,
                info.base_offset.0,
                info.last_offset.0,
                crate::now_ms(),
            );
            Ok(pending.into_ticket())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_log::batch::{build_batch, seal_crc};

    #[test]
    fn kafkas_rules_on_the_header() {
        let ok = build_batch(&[(None, Some(b"v"))], 0);
        assert!(check_produce_rules(&ok, 3).is_ok());
        assert!(matches!(
            check_produce_rules(&[], 3),
            Err(ProduceError::InvalidRecord { .. })
        ));
        assert!(matches!(
            check_produce_rules(&ok[..20], 3),
            Err(ProduceError::Corrupt)
        ));
        let with_attributes = |a: i16| {
            let mut b = ok.clone();
            b[21..23].copy_from_slice(&a.to_be_bytes());
            seal_crc(&mut b);
            b
        };
        assert!(matches!(
            check_produce_rules(&with_attributes(0x20), 3),
            Err(ProduceError::InvalidRecord { .. })
        ));
        assert!(matches!(
            check_produce_rules(&with_attributes(4), 6),
            Err(ProduceError::UnsupportedCompression { codec: 4 })
        ));
        assert!(check_produce_rules(&with_attributes(4), 7).is_ok());
        assert!(matches!(
            check_produce_rules(&with_attributes(5), 9),
            Err(ProduceError::UnsupportedCompression { codec: 5 })
        ));
        let mut idempotent = ok.clone();
        idempotent[43..51].copy_from_slice(&7i64.to_be_bytes());
        seal_crc(&mut idempotent);
        assert!(matches!(
            check_produce_rules(&idempotent, 3),
            Err(ProduceError::InvalidRecord { .. })
        ));
    }
}
