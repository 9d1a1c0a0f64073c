//! # runnel-http: the HTTP API
//!
//! Served by `runnel serve` (`--http`, default `127.0.0.1:8080`) over the same state as
//! the Kafka listener: the log, the group coordinator and committed offsets.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/health/live` | the process answers |
//! | GET | `/health/ready` | the broker serves Kafka requests |
//! | GET | `/metrics` | Prometheus text format |
//! | GET | `/api/v1/topics` | topics with partition counts |
//! | POST | `/api/v1/topics` | create: `{"name", "partitions"?, "config"?: {..}}` |
//! | GET | `/api/v1/topics/{topic}` | partitions with offsets and sizes, settings |
//! | DELETE | `/api/v1/topics/{topic}` | delete |
//! | POST | `/api/v1/topics/{topic}/config` | change settings: `{"set"?: {..}, "remove"?: [..]}` |
//! | POST | `/api/v1/topics/{topic}/records` | produce: `{"records": [{"key"?, "value"?, "partition"?, "headers"?: {..}}]}` |
//! | GET | `/api/v1/topics/{topic}/partitions/{p}/records?offset=&limit=&from=&timestamp=` | read a range (with headers; bytes that are not UTF-8 also as hex) |
//! | GET | `/api/v1/topics/{topic}/tail?partition=&from=` | live tail, server-sent events |
//! | GET | `/api/v1/groups` | groups with state and members |
//! | GET | `/api/v1/groups/{group}` | members, assignments, committed offsets and lag |
//! | DELETE | `/api/v1/groups/{group}` | delete a group without members, and its offsets |
//! | POST | `/api/v1/groups/{group}/offsets` | reset offsets: `{"topic", "to", "value"?, "dry_run"?}` |
//! | GET | `/api/v1/overview` | version, uptime, data directory, disk, counts, totals in and out |
//! | GET | `/api/v1/topology` | recent producers and readers by client id, groups with their topics |
//! | GET | `/api/v1/services` | services' instances as they state themselves, dead-letter counts |
//! | POST | `/api/v1/services/{service}/dead-letters/replay` | replay a dead letter: `{"partition", "offset"}` |
//! | GET | `/api/v1/openapi.json` | the OpenAPI description of these routes |
//! | GET | `/`, `/console.js`, `/console.css` | the web console |
//!
//! Errors are JSON, `{"error": "what went wrong", "code": "short_name"}`, with a fitting
//! status. Request bodies are limited to [`BODY_BYTES_MAX`]; reads to
//! [`RECORDS_LIMIT_MAX`] records.
//!
//! ## Boundary
//!
//! It uses the broker's façade, the core's API (`runnel_core`: produce, the record
//! reader, topic rules, groups and offsets) and the log's; it never speaks the Kafka
//! protocol and repeats none of the core's rules. Keys and values travel as UTF-8
//! strings (null for none); records whose bytes are not UTF-8 are shown with
//! replacement characters, and also as hex. Requests that change state from a browser
//! on another origin are refused (the `Origin` header must name this host).

mod api;
mod console;
mod metrics;
mod openapi;
mod tail;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use runnel_broker::Broker;

pub use api::{BODY_BYTES_MAX, RECORDS_LIMIT_MAX, ROUTES};
pub use openapi::openapi;
pub use tail::TAILS_MAX;

/// The whole API over `broker`.
pub fn router(broker: Arc<Broker>) -> Router {
    api::routes(broker)
}

/// Serves the API on `addr` until `stop` resolves. Returns the address bound (port 0
/// picks a free one) through `bound` as soon as it listens.
pub async fn serve(
    broker: Arc<Broker>,
    addr: SocketAddr,
    bound: tokio::sync::oneshot::Sender<SocketAddr>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let _ = bound.send(listener.local_addr()?);
    axum::serve(listener, router(broker))
        .with_graceful_shutdown(stop)
        .await
}
