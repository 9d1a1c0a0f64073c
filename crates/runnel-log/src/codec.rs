//! Compression, injected: the storage engine depends on no codec crate.
//!
//! The log stores compressed batches as producers sent them and never looks inside on
//! the append path. Two features do look inside: the cleaner (compaction keeps the
//! latest record per key) and the key check of compacted topics. For compressed batches
//! they ask the [`BatchCodec`] given in [`crate::LogConfig::batch_codec`]. Without one,
//! compressed batches are kept whole by the cleaner (never compacted) and are not
//! checked for keys; uncompressed batches are handled either way.
//!
//! Every decompression has an output limit ([`decompressed_bytes_max`]): a few KiB of
//! zstd can expand to tens of GiB, and a batch that sits in a compacted segment would
//! be decompressed again by every cleaner pass, at every restart.

use std::fmt;

use crate::config::MAX_MESSAGE_BYTES_LIMIT;

/// A batch's codec, attribute bits 0-2: none.
pub const CODEC_NONE: u8 = 0;
/// gzip.
pub const CODEC_GZIP: u8 = 1;
/// snappy.
pub const CODEC_SNAPPY: u8 = 2;
/// lz4.
pub const CODEC_LZ4: u8 = 3;
/// zstd (Produce v7+, Fetch v10+: KIP-110).
pub const CODEC_ZSTD: u8 = 4;

/// Decompressed bytes allowed per byte of a topic's `max.message.bytes`.
///
/// Why 32: the records of real batches compress 2 to 10 times (JSON, logs), rarely past
/// 20; 32 leaves room for very repetitive data while keeping what one batch can cost in
/// memory to a small multiple of what the topic already accepts on the wire (32 MiB
/// for the default 1 MiB). A producer whose batch is refused for this (Kafka's
/// MESSAGE_TOO_LARGE) can send smaller batches; the Java client splits them itself.
pub const DECOMPRESSED_BYTES_PER_MESSAGE_BYTE: usize = 32;

/// The least a decompression may produce, whatever `max.message.bytes` is.
///
/// Why: a topic with a tiny `max.message.bytes` must still take an ordinary compressed
/// batch; 8 MiB is cheap for one batch at a time and far below what a bomb needs.
pub const DECOMPRESSED_BYTES_FLOOR: usize = 8 << 20;

/// The most any decompression may produce, whatever `max.message.bytes` is; the limit
/// used where the topic's setting is not at hand (readers, the key check of appends),
/// so that whatever a topic accepted reads back, even after its `max.message.bytes` was
/// lowered.
///
/// Why 256 MiB: it is the limit of a topic of 8 MiB batches; beyond that, the memory of
/// one batch in flight would be a sizeable part of a small broker's.
pub const DECOMPRESSED_BYTES_CEILING: usize = 256 << 20;

const _: () = assert!(DECOMPRESSED_BYTES_FLOOR <= DECOMPRESSED_BYTES_CEILING);
// A batch as large as the topic allows, stored uncompressed, is never over the limit.
const _: () = assert!(MAX_MESSAGE_BYTES_LIMIT as usize <= DECOMPRESSED_BYTES_CEILING);

/// The most the records of one batch may decompress to on a topic whose
/// `max.message.bytes` is `max_message_bytes`:
/// `max_message_bytes * 32`, at least [`DECOMPRESSED_BYTES_FLOOR`] and at most
/// [`DECOMPRESSED_BYTES_CEILING`]. It grows with `max_message_bytes`, so a batch within
/// one topic's limit is within the limit of every topic with a larger setting.
#[must_use]
pub fn decompressed_bytes_max(max_message_bytes: u32) -> usize {
    (max_message_bytes as usize)
        .saturating_mul(DECOMPRESSED_BYTES_PER_MESSAGE_BYTE)
        .clamp(DECOMPRESSED_BYTES_FLOOR, DECOMPRESSED_BYTES_CEILING)
}

/// An error from a codec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// A codec it does not know, or bytes that do not decode (or encode).
    #[error("codec {codec}: {reason}")]
    Invalid {
        /// The codec id (batch attributes bits 0-2).
        codec: u8,
        /// What went wrong.
        reason: String,
    },
    /// The records would decompress to more than the limit; decoding stopped there.
    #[error("codec {codec}: the records decompress to more than {limit_bytes} bytes")]
    TooLarge {
        /// The codec id (batch attributes bits 0-2).
        codec: u8,
        /// The limit that was passed.
        limit_bytes: usize,
    },
}

impl CodecError {
    /// The codec id the error is about.
    #[must_use]
    pub fn codec(&self) -> u8 {
        match self {
            CodecError::Invalid { codec, .. } | CodecError::TooLarge { codec, .. } => *codec,
        }
    }
}

/// Compresses and decompresses the records section of a batch.
///
/// `codec` is the batch's codec id (1 gzip, 2 snappy, 3 lz4, 4 zstd in Kafka). The
/// cleaner writes a rewritten batch back with the codec it was read with, so
/// `decompress(c, &compress(c, r)?, limit)` must give back `r` when `r.len() <= limit`.
pub trait BatchCodec: Send + Sync + fmt::Debug {
    /// The records of a batch whose records section is `payload`, compressed with `codec`,
    /// if they are at most `limit_bytes` long; else [`CodecError::TooLarge`].
    ///
    /// An implementation must stop decoding as soon as the output passes `limit_bytes`
    /// (and must not allocate for a length the payload claims before checking it): the
    /// payload comes from clients, and a small one can claim or expand to gigabytes.
    fn decompress(
        &self,
        codec: u8,
        payload: &[u8],
        limit_bytes: usize,
    ) -> Result<Vec<u8>, CodecError>;
    /// `records` (records back to back, uncompressed) compressed with `codec`.
    fn compress(&self, codec: u8, records: &[u8]) -> Result<Vec<u8>, CodecError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_MESSAGE_BYTES_DEFAULT;

    #[test]
    fn the_limit_follows_max_message_bytes_between_floor_and_ceiling() {
        assert_eq!(decompressed_bytes_max(64), DECOMPRESSED_BYTES_FLOOR);
        assert_eq!(
            decompressed_bytes_max(MAX_MESSAGE_BYTES_DEFAULT),
            MAX_MESSAGE_BYTES_DEFAULT as usize * DECOMPRESSED_BYTES_PER_MESSAGE_BYTE
        );
        assert_eq!(
            decompressed_bytes_max(MAX_MESSAGE_BYTES_LIMIT),
            DECOMPRESSED_BYTES_CEILING
        );
        assert_eq!(decompressed_bytes_max(u32::MAX), DECOMPRESSED_BYTES_CEILING);
    }
}
