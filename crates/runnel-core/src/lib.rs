//! # runnel-core: what every front end of Runnel shares
//!
//! The protocol-neutral layer between the storage engine (`runnel-log`) and the ways in:
//! the Kafka wire server (`runnel-broker`), the HTTP API (`runnel-http`) and the
//! embedded transport of the services toolkit. Each rule lives here once:
//!
//! - [`records`]: decoding stored batches (every codec, bounds-checked, headers
//!   included) and [`records::read`], the one reader that steps by batch end.
//! - [`encode`]: building uncompressed RecordBatch v2 batches with headers.
//! - [`partitioner`]: Kafka's murmur2, so keys land where Kafka clients put them.
//! - [`topics`]: internal topics and the names users may create and write.
//! - [`offsets`]: committed offsets, persisted in `__consumer_offsets`.
//! - [`groups`]: the consumer-group coordinator (`runnel-group`, sans-IO) wired to a
//!   clock and to parked requests; [`consumer_protocol`]: the subscription and
//!   assignment bytes of Kafka's `consumer` protocol.
//! - [`produce`]: Kafka's produce rules (codecs, control batches, idempotent sequences
//!   in [`producer_state`], producer ids in [`producers`]); [`counters`]: bytes and
//!   records in and out per topic.
//! - [`Core`]: holds the log, the groups, the producers and the counters; its
//!   [`Core::append`] (a batch as a client sent it) and [`Core::produce`] (records) are
//!   the only ways front ends write.
//!
//! ## Boundary
//!
//! Depends, among Runnel crates, on `runnel-log` and `runnel-group` only; never on
//! `runnel-broker` or `runnel-http` (`tests/boundary.rs` checks). Of `kafka-protocol`
//! it uses the compression codecs (`kafka_protocol::compression`) and nothing else: no
//! wire messages, no request or response types. Its errors are its own
//! ([`produce::ProduceError`], [`topics::TopicRuleError`], `runnel_log::LogError`);
//! front ends map them to Kafka error codes or HTTP statuses. Its only async pieces are
//! the group coordinator's parked JoinGroup/SyncGroup answers and ticker (tokio
//! channels and timers, no sockets).
//!
//! ## Limits
//!
//! Commit metadata is at most [`offsets::COMMIT_METADATA_BYTES_MAX`] bytes; producer
//! state keeps [`producer_state::PRODUCERS_PER_PARTITION_MAX`] producers per partition
//! and their last [`producer_state::BATCHES_REMEMBERED`] batches; batches are limited by
//! each topic's `max.message.bytes`, as the log checks on append.

pub mod consumer_protocol;
pub mod counters;
pub mod encode;
pub mod flows;
pub mod groups;
pub mod offsets;
pub mod partitioner;
pub mod produce;
pub mod producer_state;
pub mod producers;
pub mod records;
pub mod services;
mod shared;
pub mod topics;

pub use crate::produce::ProduceError;
pub use crate::shared::Core;

/// Wall-clock time in ms since the Unix epoch: commit times, batch timestamps, producer
/// activity.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
