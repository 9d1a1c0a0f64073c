//! # runnel-services: the toolkit for event-driven services
//!
//! A service states facts (events), subscribes to the facts it cares about, keeps the
//! local state it needs, can be down and catch up, and scales by running more copies.
//! Services never call each other. This crate is the library such a service is written
//! with, and the same service code runs in-process on the embedded log
//! ([`Embedded`]) or against any Kafka-compatible cluster (`kafka::Kafka`, feature
//! `kafka`).
//!
//! ## A complete service
//!
//! The essay's notification service: it keeps its *own* table of customers, built from
//! `customerUpdated`, and joins each `orderCreated` against it.
//!
//! ```no_run
//! use runnel_services::{Embedded, EmbeddedConfig, HandlerError, Runtime, Service, Table, TableRef};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct CustomerUpdated { id: String, email: String }
//! runnel_services::event!(CustomerUpdated, type = "customerUpdated", topic = "customers", key = |e| e.id.clone());
//!
//! #[derive(Serialize, Deserialize)]
//! struct OrderCreated { order: String, customer: String }
//! runnel_services::event!(OrderCreated, type = "orderCreated", topic = "orders", key = |e| e.order.clone());
//!
//! #[derive(Serialize, Deserialize)]
//! struct Customer { email: String }
//!
//! async fn notify(order: OrderCreated, customers: TableRef<Customer>) -> Result<(), HandlerError> {
//!     let Some(c) = customers.get(&order.customer)? else {
//!         return Err(HandlerError::not_yet("customer not seen yet")); // parked, tried again later
//!     };
//!     println!("order {} confirmed to {}", order.order, c.email);
//!     Ok(())
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let log = Embedded::open(EmbeddedConfig::new("./runnel-data"))?;
//!     let notifications = Service::new("notifications")
//!         .table(Table::<Customer>::named("customers")
//!             .upsert::<CustomerUpdated>(|e| Some(Customer { email: e.email.clone() })))
//!         .on::<OrderCreated, _>(notify);
//!     let running = Runtime::new(log).start(notifications, "0").await?;
//!     runnel_services::run_until_signal(vec![running]).await?; // Ctrl-C: drain, commit, leave
//!     Ok(())
//! }
//! ```
//!
//! Run two copies and they share the partitions of `orders` (the service's name is its
//! consumer group); start a `loyalty` service and it sees every order too.
//!
//! ## The pieces
//!
//! | piece | what |
//! |---|---|
//! | [`Event`], [`Command`], [`event!`], [`encode`], [`decode`] | typed contracts; JSON is the codec; several types may share a topic (dispatch by `ce_type`) |
//! | [`Service`], [`Handler`], extractors ([`Meta`], [`Emitter`], [`TableRef`], [`State`]) | a named service, handlers as plain `async fn`s |
//! | [`Table`], [`TableRef`] | local state built from topics, restored before the service is ready |
//! | [`Runtime`], [`ServiceHandle`], [`run_until_signal`] | polling, commits, retries, rebalances, shutdown |
//! | [`Transport`], [`Embedded`], `kafka::Kafka` | the log underneath: in-process, or any Kafka cluster |
//! | [`http::ServiceApi`] | commands, queries, `/health/live`, `/health/ready`, `/metrics` over HTTP |
//! | [`TestRuntime`] | the real runtime on a temporary log, with virtual time, crashes and rebalances |
//! | [`dlq`] | dead letters: list and replay |
//! | [`Metadata`], [`event_headers`], [`headers`], [`TraceParent`] | CloudEvents binary-mode headers and W3C trace context |
//! | [`derived_event_id`], [`fresh_event_id`], [`SeenIds`] | ids consumers de-duplicate on, and an in-memory de-duplicator |
//! | [`HandlerError`], [`ErrorKind`], [`Error`] | failures by what to do about them: transient, permanent, not yet |
//! | [`Recoverability`], [`Backoff`], [`decide`], [`Decision`] | retry with backoff, park, dead-letter |
//! | [`Clock`], [`SystemClock`], [`ManualClock`] | time that tests can advance by hand |
//! | [`PartitionTracker`] | per-key order within a partition, and the at-least-once commit point |
//!
//! ## Guarantees
//!
//! **Delivery is at least once, on both transports.** A partition's offset is committed
//! only once every record before it is done (handled, dead-lettered or skipped), so a
//! crash re-delivers what was unfinished, never skips it. Records of one key are handled
//! in offset order, one at a time; different keys of a partition run concurrently, up to
//! [`Service::concurrency`].
//!
//! **Emitted events are sent, and acknowledged by the log, before the input's offset can
//! be committed.** A crash in between re-handles the input and emits again; each emitted
//! event's `ce_id` is derived from the input (service, topic, partition, offset, index),
//! so the duplicate carries the same id and a consumer drops it ([`SeenIds`], or a
//! table keyed by the id). On the embedded log "acknowledged" means fsynced (with the
//! log's default durability); on Kafka it means `acks=all` with an idempotent producer,
//! so the producer's own retries add no duplicates.
//!
//! **Tables and their offsets are written in one atomic write**, so after a crash a
//! table resumes exactly where its state is: nothing applied twice, nothing skipped.
//! A service is ready only when its tables have caught up to the high watermarks seen
//! at start.
//!
//! Not provided: exactly-once across topics (Kafka transactions); handlers with side
//! effects outside the log should be idempotent, keyed by the event id.
//!
//! ## Boundary
//!
//! Never depends on `runnel-broker` and encodes no wire protocol itself: the embedded
//! transport stands on `runnel-core` and `runnel-log`, the Kafka transport on rdkafka. The
//! ordering, retry and metadata code does no I/O and reads no clock of its own: the
//! runtime feeds it the time ([`Clock`]) and randomness, which keeps it deterministic
//! under test.
//!
//! ## Limits
//!
//! Records held per instance: 20,000, counted from each partition's oldest unfinished
//! record (fetching pauses beyond it, so one stuck record cannot grow memory).
//! Handler time: 60 s by default ([`Service::handler_timeout`]), then a transient
//! failure. Concurrency: 64 invocations per instance by default. Table keys up to 64
//! KiB, values up to 16 MiB (the store's limits).

mod clock;
mod contract;
mod dedup;
pub mod dlq;
pub mod embedded;
mod error;
mod fxhash;
mod handler;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
mod metadata;
mod metrics;
mod ordering;
mod retry;
mod rfc3339;
mod rng;
pub mod runtime;
mod service;
pub mod status;
mod table;
pub mod testing;
mod trace;
pub mod transport;

pub use clock::{Clock, ManualClock, SystemClock};
pub use contract::{Command, DecodeError, Event, decode, encode};
pub use dedup::SeenIds;
pub use error::{Error, ErrorKind, HandlerError};
pub use metadata::{Metadata, derived_event_id, event_headers, fresh_event_id, headers};
pub use ordering::PartitionTracker;
pub use retry::{Backoff, Decision, Recoverability, decide};
pub use rng::SplitMix64;
pub use trace::TraceParent;

pub use embedded::{Embedded, EmbeddedConfig};
pub use handler::{Context, Emitter, FromContext, Handler, Meta, State, event_record};
pub use http::{
    Accepted, Bound, CommandError, CommandMethod, Outbox, Probe, QueryInput, ServiceApi,
};
#[cfg(feature = "kafka")]
pub use kafka::{Kafka, KafkaConfig};
pub use metrics::{Metrics, Snapshot};
pub use runtime::{Runtime, ServiceHandle, run_until_signal, wait_for_signal};
pub use service::{Service, dead_letter_topic};
pub use table::{Table, TableRef};
pub use testing::{InstanceId, TestRuntime};
pub use transport::Transport;
