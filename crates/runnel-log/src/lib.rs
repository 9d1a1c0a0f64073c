//! # runnel-log: Runnel's storage engine
//!
//! A durable, segmented, partitioned, append-only log of record batches, in the spirit of
//! Kafka's log but embedded and small.
//!
//! - **Topics** have N **partitions**; each partition is a list of **segments**
//!   (`<base offset>.log`) with a sparse offset index and a time index.
//! - A **batch** is stored exactly as a producer sent it, in Kafka's RecordBatch v2
//!   layout ([`batch`] documents the bytes). The log rewrites only the fields the CRC does
//!   not cover (`baseOffset`, `partitionLeaderEpoch`) and validates length, magic, record
//!   counts and CRC-32C. Compressed batches pass through untouched.
//! - **Durability** is per topic ([`Durability`]): `always` (the default) acknowledges an
//!   append only after fsync, with group commit; `interval(ms)`; or `never`.
//! - **Recovery** trusts only what was sealed or cleanly closed, scans the rest, and cuts
//!   a torn or corrupt tail at the last valid batch ([`recovery`]).
//! - **Retention** deletes whole segments by age and size; `delete_records` moves the log
//!   start offset.
//! - **Compaction** (`cleanup.policy=compact`, [`cleaner`]) keeps the latest record per
//!   key in closed segments, without moving offsets, with a bounded key map and a swap
//!   that recovery finishes or discards. Compacted topics refuse records without a key.
//!   Compressed batches are compacted through an injected [`BatchCodec`]; without one
//!   they are kept whole.
//!
//! ## Boundaries
//!
//! This crate knows nothing of the network or of Kafka's wire types: it sees a batch as
//! bytes plus a 61-byte header view; it looks inside records only to check uncompressed
//! ones on append, to check keys on compacted topics, and to compact. All file I/O goes through [`Storage`], so tests can cut the power with
//! [`sim::SimStorage`], at any single file operation if they like.
//!
//! ## Limits
//!
//! Every limit is a named constant in [`config`] with its reason: batch size
//! (`max.message.bytes`, 1 MiB by default), segment size (1 GiB, and at most 1 GiB so
//! that index positions fit in `u32`), index interval, open segment handles, partitions
//! per topic, topic name length, the cleaner's key-map memory per pass. Exceeding one is
//! an error value (or, for the cleaner, less cleaned per pass), never a panic.
//!
//! What is deliberately absent: replication (users who outgrow one machine move to a
//! Kafka cluster), transactions, codec crates (compression comes in through
//! [`BatchCodec`]), and the finer cleaner knobs (`min.cleanable.dirty.ratio`,
//! `min.compaction.lag.ms`; see [`cleaner`]).

pub mod batch;
pub mod cleaner;
mod clock;
pub mod codec;
pub mod config;
mod error;
mod files;
mod io;
mod log;
mod partition;
pub mod records;
pub mod recovery;
mod segment;
pub mod sim;
pub mod stats;
mod types;

pub use cleaner::CleanStats;
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{BatchCodec, CodecError};
pub use config::{CleanupPolicy, Durability, LogConfig, TopicConfig};
pub use error::{BatchError, ConfigError, LogError, Result};
pub use io::{DirEntry, DirLock, OpenMode, StdStorage, Storage, StorageFile};
pub use log::{Log, Topic};
pub use partition::{
    AppendInfo, AppendTicket, BatchSummary, Partition, Pending, READ_BYTES_MAX, ReadResult,
};
pub use types::{NegativePartition, Offset, PartitionId, Position, TimestampMs};
