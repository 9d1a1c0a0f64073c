//! Typed errors. Each says what went wrong and carries what a caller needs to map it to
//! a protocol error code (the broker does that mapping in exactly one place).

use std::io;
use std::path::PathBuf;

use crate::types::{Offset, PartitionId};

/// A batch failed validation. The log is unchanged when an append returns one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than the header or the length field promise.
    #[error("truncated batch: needs {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the batch needs.
        needed: u64,
        /// Bytes that were there.
        available: u64,
    },
    /// More bytes than one batch: an append takes exactly one batch.
    #[error("expected exactly one batch of {batch_bytes} bytes, got {given} bytes")]
    TrailingBytes {
        /// Size of the first batch.
        batch_bytes: u64,
        /// Bytes given.
        given: u64,
    },
    /// The `batchLength` field is smaller than a header.
    #[error("invalid batch length field {length}")]
    BadLength {
        /// The length field.
        length: i32,
    },
    /// The batch is larger than the topic's `max.message.bytes`.
    #[error("batch of {bytes} bytes exceeds the limit of {max_bytes} bytes")]
    TooLarge {
        /// Size of the batch.
        bytes: u64,
        /// The limit in force.
        max_bytes: u32,
    },
    /// Not a v2 batch.
    #[error("unsupported batch magic {magic} (only magic 2 is stored)")]
    BadMagic {
        /// The magic byte found.
        magic: u8,
    },
    /// The CRC-32C does not match the bytes.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// `recordCount` is zero or negative.
    #[error("invalid record count {count}")]
    BadRecordCount {
        /// The count field.
        count: i32,
    },
    /// The records inside the batch do not match its header or their own lengths.
    #[error("malformed records: {reason}")]
    BadRecords {
        /// What is wrong.
        reason: &'static str,
    },
    /// A record without a key was sent to a compacted topic, where the key is what
    /// compaction keeps the latest value of (Kafka refuses these too).
    #[error("compacted topics accept only records with a key (record {index} has none)")]
    MissingKey {
        /// The record's index in the batch.
        index: u32,
    },
    /// `lastOffsetDelta + 1 != recordCount`.
    #[error("lastOffsetDelta {last_offset_delta} does not match recordCount {record_count}")]
    CountMismatch {
        /// The delta field.
        last_offset_delta: i32,
        /// The count field.
        record_count: i32,
    },
}

/// A configuration value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config {key}={value}: {reason}")]
pub struct ConfigError {
    /// The config key.
    pub key: String,
    /// The rejected value.
    pub value: String,
    /// Why it was rejected.
    pub reason: String,
}

/// Everything the log can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The batch was rejected; nothing was written.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// A config value was rejected.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An I/O operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What the log was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Stored data failed validation on read. It is never served.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the bad batch.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// An earlier fsync or write failed, so the partition refuses writes rather than
    /// pretend its data is safe. Restarting the log recovers what is on disk.
    #[error("partition {topic}-{partition} refuses writes after a failed sync or write: {cause}")]
    Poisoned {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: PartitionId,
        /// The original failure.
        cause: String,
    },
    /// The offset is outside `[log start, high watermark]`.
    #[error("offset {requested} is out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// First offset in the log.
        log_start: Offset,
        /// One past the last readable offset.
        high_watermark: Offset,
    },
    /// No such topic.
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    /// No such partition in an existing topic.
    #[error("topic {topic:?} has no partition {partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition asked for.
        partition: PartitionId,
    },
    /// The topic already exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The topic name is not legal.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName {
        /// The name given.
        name: String,
        /// Why it is not legal.
        reason: &'static str,
    },
    /// A partition count is out of range or would shrink the topic.
    #[error("invalid partition count {requested}: {reason}")]
    InvalidPartitions {
        /// The count asked for.
        requested: u32,
        /// Why it is rejected.
        reason: String,
    },
    /// Another process holds the data directory.
    #[error("data directory {path} is locked by another process: {source}")]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;
