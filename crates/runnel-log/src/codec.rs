//! Compression, injected: the storage engine depends on no codec crate.
//!
//! The log stores compressed batches as producers sent them and never looks inside on
//! the append path. Two features do look inside: the cleaner (compaction keeps the
//! latest record per key) and the key check of compacted topics. For compressed batches
//! they ask the [`BatchCodec`] given in [`crate::LogConfig::batch_codec`]. Without one,
//! compressed batches are kept whole by the cleaner (never compacted) and are not
//! checked for keys; uncompressed batches are handled either way.

use std::fmt;

/// An error from a codec: a codec it does not know, or bytes that do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("codec {codec}: {reason}")]
pub struct CodecError {
    /// The codec id (batch attributes bits 0-2).
    pub codec: u8,
    /// What went wrong.
    pub reason: String,
}

/// Compresses and decompresses the records section of a batch.
///
/// `codec` is the batch's codec id (1 gzip, 2 snappy, 3 lz4, 4 zstd in Kafka). The
/// cleaner writes a rewritten batch back with the codec it was read with, so
/// `decompress(c, &compress(c, r)?)` must give back `r`.
pub trait BatchCodec: Send + Sync + fmt::Debug {
    /// The records of a batch whose records section is `payload`, compressed with `codec`.
    fn decompress(&self, codec: u8, payload: &[u8]) -> Result<Vec<u8>, CodecError>;
    /// `records` (records back to back, uncompressed) compressed with `codec`.
    fn compress(&self, codec: u8, records: &[u8]) -> Result<Vec<u8>, CodecError>;
}
