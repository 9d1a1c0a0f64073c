//! # runnel-broker: the Kafka wire server
//!
//! Makes a [`runnel_log::Log`] reachable over the Apache Kafka wire protocol, so that
//! librdkafka (kcat, confluent-kafka, `rdkafka`), kafka-python, aiokafka and kafkajs work
//! against Runnel unchanged.
//!
//! - [`frame`]: `int32` size framing with a size limit, the raw request prefix.
//! - [`apis`]: the one table of implemented APIs and versions; ApiVersions is built from
//!   it, so only what is implemented is advertised.
//! - [`broker`]: decode, dispatch, encode. Handlers live in `handlers/`, one module per
//!   API family.
//! - [`errors`]: the one place where storage errors become Kafka error codes.
//! - [`server`]: TCP accept with a connection limit, strictly in-order request handling
//!   per connection, graceful shutdown.
//! - [`producer_state`]: idempotent producer sequences, sans-IO.
//! - [`groups`]: the consumer-group coordinator (`runnel-group`, sans-IO) wired to a
//!   clock and to parked requests; [`offset_store`]: committed offsets, persisted in
//!   the internal topic `__consumer_offsets`.
//!
//! ## Boundaries
//!
//! This is the only crate that sees both Kafka's wire types and the storage engine. It
//! uses `kafka-protocol` for encoding and decoding and never re-computes a batch CRC:
//! batches are stored and served as producers sent them.
//!
//! ## Limits
//!
//! Request frames are limited by `frame-bytes-max` (100 MiB by default), connections by
//! `connections-max` (1024), fetch waits by [`handlers::fetch::FETCH_WAIT_MS_MAX`], and
//! batches by each topic's `max.message.bytes`.

pub mod apis;
pub mod broker;
pub mod config;
pub mod errors;
pub mod frame;
pub mod groups;
pub mod handlers;
pub mod metrics;
pub mod offset_store;
pub mod producer_state;
pub mod records;
pub mod server;

pub use broker::{Broker, Outcome, Reply};
pub use config::{BrokerConfig, BrokerConfigError};
pub use server::Server;
