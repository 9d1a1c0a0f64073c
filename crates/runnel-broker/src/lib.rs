//! # runnel-broker: the Kafka wire server
//!
//! Makes a [`runnel_log::Log`] reachable over the Apache Kafka wire protocol, so that
//! librdkafka (kcat, confluent-kafka, `rdkafka`), kafka-python, aiokafka and kafkajs work
//! against Runnel unchanged. It is an adapter: what is not about the wire (reading
//! records, produce rules and idempotence, committed offsets, the group coordinator
//! behind a clock, topic rules) is `runnel-core`'s, shared with the HTTP API and the
//! embedded transport.
//!
//! Inside (private modules):
//!
//! - `frame`: `int32` size framing with a size limit, the raw request prefix.
//! - `apis`: the one table of implemented APIs and versions ([`SUPPORTED`]);
//!   ApiVersions is built from it, so only what is implemented is advertised.
//! - `broker`: decode, dispatch, encode. Handlers live in `handlers/`, one module per
//!   API family.
//! - `errors`: the one place where storage, produce and group errors become Kafka error
//!   codes.
//! - `server`: TCP accept with connection limits (overall and per address), idle and
//!   frame deadlines, strictly in-order request handling per connection, graceful
//!   shutdown.
//!
//! ## Public surface
//!
//! [`Server`] (bind, run), [`Broker`] (the state handlers reach, and one request frame
//! at a time for tests and the fuzzer), [`BrokerConfig`], [`BrokerMetrics`] (latency
//! per API) and the API table. Everything else is private.
//!
//! ## Boundaries
//!
//! This is the only crate that sees both Kafka's wire types and the storage engine. It
//! uses `kafka-protocol` for encoding and decoding and never re-computes a batch CRC:
//! batches are stored and served as producers sent them.
//!
//! ## Limits
//!
//! Request frames are limited by `frame-bytes-max` (100 MiB by default) and must arrive
//! whole within `frame-read-ms-max` (30 s) of their first byte; connections by
//! `connections-max` (1024), `connections-per-ip-max` (256) and
//! `connection-idle-ms-max` (10 minutes without a request in progress); fetch waits by
//! [`FETCH_WAIT_MS_MAX`], Fetch responses by `fetch-bytes-max` (55 MiB, the first batch
//! always whole), and batches by each topic's `max.message.bytes`.

mod apis;
mod broker;
mod config;
mod errors;
mod frame;
mod handlers;
mod metrics;
mod server;

pub use apis::{SUPPORTED, Supported, accepts};
pub use broker::{Broker, Node, Outcome, Reply, RequestCounts};
pub use config::{BrokerConfig, BrokerConfigError};
pub use frame::{RequestPrefix, request_prefix};
pub use handlers::fetch::FETCH_WAIT_MS_MAX;
pub use metrics::BrokerMetrics;
pub use server::Server;
