//! The broker: shared state plus request dispatch. Each API's handler lives in its own
//! module under `handlers/`; this file decodes, routes and encodes.

use std::future::Future;
use std::net::IpAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use runnel_log::Log;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::apis::{self, SUPPORTED};
use crate::config::{BrokerConfig, NODE_ID, parse_host_port};
use crate::frame::{CodecError, RequestPrefix, response_frame};
use runnel_core::Core;
use runnel_core::groups::Groups;

/// What the connection loop does after a request.
#[derive(Debug)]
pub enum Outcome {
    /// Send this frame.
    Respond(BytesMut),
    /// Send nothing (Produce with `acks=0`).
    Silent,
    /// Close the connection, as Kafka does for requests it cannot serve.
    Close(String),
}

/// What serving a request gives the connection loop: an outcome now, or one that
/// follows once the request's writes are durable.
pub enum Reply {
    /// The request is complete.
    Now(Outcome),
    /// A Produce whose batches are written and ordered: the outcome follows once they are
    /// durable. Later requests on the connection may start meanwhile; their effects
    /// come after this one's.
    Later(Pin<Box<dyn Future<Output = Outcome> + Send + 'static>>),
}

impl Reply {
    /// The outcome, waiting for it if it is not ready.
    pub async fn outcome(self) -> Outcome {
        match self {
            Reply::Now(o) => o,
            Reply::Later(f) => f.await,
        }
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Now(o) => f.debug_tuple("Now").field(o).finish(),
            Reply::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// Requests served, per API key: for metrics, and for tests that check the broker does
/// not make clients spin (a long poll that returned at once would multiply Fetches).
#[derive(Debug)]
pub struct RequestCounts([AtomicU64; 128]);

impl Default for RequestCounts {
    fn default() -> Self {
        RequestCounts(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl RequestCounts {
    fn add(&self, key: ApiKey) {
        if let Some(c) = self.0.get(key as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Requests of `key` served so far.
    #[must_use]
    pub fn get(&self, key: ApiKey) -> u64 {
        self.0
            .get(key as usize)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// The address clients are told to use.
#[derive(Clone, Debug)]
pub struct Node {
    /// Advertised host.
    pub host: String,
    /// Advertised port.
    pub port: i32,
}

/// Everything a request handler can reach.
#[derive(Debug)]
pub struct Broker {
    /// The protocol-neutral state: log, groups, producers, topic counters.
    pub(crate) core: Arc<Core>,
    /// The core's log, kept at hand for the handlers.
    pub(crate) log: Arc<Log>,
    pub(crate) config: BrokerConfig,
    pub(crate) node: Node,
    pub(crate) cluster_id: String,
    /// The core's group coordinator, kept at hand for the handlers.
    pub(crate) groups: Arc<Groups>,
    pub(crate) shutdown: watch::Receiver<bool>,
    requests: Arc<RequestCounts>,
    /// Kafka connections open now.
    pub(crate) connections: std::sync::atomic::AtomicUsize,
    pub(crate) metrics: crate::metrics::BrokerMetrics,
}

impl Broker {
    /// A broker over `log`. `bound_port` is the port the listener actually got, used when
    /// no advertised address is configured. `shutdown` turns true when the server stops;
    /// parked requests (long-poll fetches) then answer at once.
    pub fn new(
        log: Arc<Log>,
        config: BrokerConfig,
        bound_port: u16,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<Broker> {
        let node = match &config.advertise {
            Some(a) => {
                let (host, port) = parse_host_port(a).map_err(std::io::Error::other)?;
                Node {
                    host,
                    port: i32::from(port),
                }
            }
            None => Node {
                host: config.listen.ip().to_string(),
                port: i32::from(bound_port),
            },
        };
        let cluster_id = load_or_create_cluster_id(&config.data_dir)?;
        let seed = u64::from_be_bytes(random_bytes::<8>()?);
        let core =
            Core::new(log.clone(), config.group_config(), seed).map_err(std::io::Error::other)?;
        let groups = core.groups().clone();
        Ok(Broker {
            core,
            log,
            config,
            node,
            cluster_id,
            groups,
            shutdown,
            requests: Arc::default(),
            connections: std::sync::atomic::AtomicUsize::new(0),
            metrics: crate::metrics::BrokerMetrics::default(),
        })
    }

    /// The log behind the broker.
    #[must_use]
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The protocol-neutral core the broker adapts to Kafka's wire protocol: the HTTP
    /// API works on the same one.
    #[must_use]
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Requests served so far, per API.
    #[must_use]
    pub fn requests(&self) -> Arc<RequestCounts> {
        self.requests.clone()
    }

    /// The host and port clients are told to use.
    #[must_use]
    pub fn advertised(&self) -> &Node {
        &self.node
    }

    /// The settings it runs with.
    #[must_use]
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Turns true when shutdown begins, for services that stop with the broker.
    #[must_use]
    pub fn shutdown_watch(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// False once shutdown has begun.
    #[must_use]
    pub fn serving(&self) -> bool {
        !*self.shutdown.borrow()
    }

    /// Latency per API (bytes and records per topic are the core's).
    #[must_use]
    pub fn metrics(&self) -> &crate::metrics::BrokerMetrics {
        &self.metrics
    }

    /// Kafka connections open now.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// The group coordinator and committed offsets.
    #[must_use]
    pub fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    /// The stable cluster id reported in Metadata.
    #[must_use]
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Decodes, serves and encodes one request frame.
    pub async fn handle_frame(&self, frame: BytesMut) -> Outcome {
        self.serve_frame(frame).await.outcome().await
    }

    /// Like [`Broker::handle_frame`], but returns as soon as the request's effects are
    /// ordered: a Produce's response then waits on durability in [`Reply::Later`].
    pub async fn serve_frame(&self, frame: BytesMut) -> Reply {
        self.serve(frame, None).await
    }

    /// [`Broker::serve_frame`] for a request from `peer` (shown in DescribeGroups).
    pub async fn serve(&self, frame: BytesMut, peer: Option<IpAddr>) -> Reply {
        Reply::Now(match self.start_frame(frame, peer).await {
            Ok(reply) => return reply,
            Err(outcome) => outcome,
        })
    }

    async fn start_frame(&self, frame: BytesMut, peer: Option<IpAddr>) -> Result<Reply, Outcome> {
        let Some(prefix) = crate::frame::request_prefix(&frame) else {
            return Err(Outcome::Close("frame shorter than a request header".into()));
        };
        let Ok(key) = ApiKey::try_from(prefix.api_key) else {
            return Err(Outcome::Close(format!(
                "unknown api key {}",
                prefix.api_key
            )));
        };
        if key == ApiKey::ApiVersions && !apis::accepts(key, prefix.api_version) {
            // KIP-511: a newer ApiVersions gets a v0 answer with UNSUPPORTED_VERSION and
            // the list, so the client retries with a version both sides know.
            return Err(respond_api_versions_fallback(prefix));
        }
        if !apis::accepts(key, prefix.api_version) {
            return Err(Outcome::Close(format!(
                "unsupported version {} of {key:?}",
                prefix.api_version
            )));
        }
        let mut buf = frame.freeze();
        let header =
            match RequestHeader::decode(&mut buf, key.request_header_version(prefix.api_version)) {
                Ok(h) => h,
                Err(e) => return Err(Outcome::Close(format!("undecodable {key:?} header: {e:#}"))),
            };
        let request = match RequestKind::decode(key, &mut buf, prefix.api_version) {
            Ok(r) => r,
            Err(e) if key == ApiKey::ApiVersions => {
                debug!(error = %e, "undecodable ApiVersions body; answering with the v0 fallback");
                return Err(respond_api_versions_fallback(prefix));
            }
            Err(e) => {
                return Err(Outcome::Close(format!(
                    "undecodable {key:?} v{} body: {e:#}",
                    prefix.api_version
                )));
            }
        };
        self.requests.add(key);
        let started = std::time::Instant::now();
        if let RequestKind::Produce(r) = request {
            let client_id = header.client_id.as_deref().unwrap_or("");
            let in_flight = self.produce(r, prefix.api_version, client_id).await;
            let latencies = self.metrics.latencies();
            return Ok(Reply::Later(Box::pin(async move {
                let response = in_flight.finish().await.map(ResponseKind::Produce);
                if let Some(h) = latencies.get(key as usize) {
                    h.observe(started.elapsed());
                }
                outcome(prefix, key, response.as_ref())
            })));
        }
        let response = self.dispatch(&header, request, peer).await;
        if let Some(h) = self.metrics.latency(key as i16) {
            h.observe(started.elapsed());
        }
        Ok(Reply::Now(outcome(prefix, key, response.as_ref())))
    }

    async fn dispatch(
        &self,
        header: &RequestHeader,
        request: RequestKind,
        peer: Option<IpAddr>,
    ) -> Option<ResponseKind> {
        let v = header.request_api_version;
        Some(match request {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions_response(v)),
            RequestKind::Metadata(r) => ResponseKind::Metadata(self.metadata(r, v).await),
            RequestKind::Fetch(r) => {
                let client_id = header.client_id.as_deref().unwrap_or("");
                ResponseKind::Fetch(self.fetch(r, v, client_id).await)
            }
            RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(self.list_offsets(r, v).await),
            RequestKind::OffsetForLeaderEpoch(r) => {
                ResponseKind::OffsetForLeaderEpoch(self.offset_for_leader_epoch(r))
            }
            RequestKind::InitProducerId(r) => {
                ResponseKind::InitProducerId(self.init_producer_id(r))
            }
            RequestKind::CreateTopics(r) => {
                ResponseKind::CreateTopics(self.create_topics(r, v).await)
            }
            RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(self.delete_topics(r).await),
            RequestKind::DeleteRecords(r) => {
                ResponseKind::DeleteRecords(self.delete_records(r).await)
            }
            RequestKind::DescribeConfigs(r) => {
                ResponseKind::DescribeConfigs(self.describe_configs(r, v))
            }
            RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(self.alter_configs(r).await),
            RequestKind::CreatePartitions(r) => {
                ResponseKind::CreatePartitions(self.create_partitions(r).await)
            }
            RequestKind::FindCoordinator(r) => {
                ResponseKind::FindCoordinator(self.find_coordinator(r, v))
            }
            RequestKind::JoinGroup(r) => {
                let client_id = header.client_id.as_deref().unwrap_or("");
                // Kafka shows hosts as `/1.2.3.4`.
                let host = peer.map_or_else(String::new, |ip| format!("/{ip}"));
                ResponseKind::JoinGroup(self.join_group(r, v, client_id, &host).await)
            }
            RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(self.sync_group(r).await),
            RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(self.heartbeat(r)),
            RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(self.leave_group(r, v)),
            RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(self.offset_commit(r).await),
            RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(self.offset_fetch(r, v)),
            RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(self.offset_delete(r).await),
            RequestKind::DescribeGroups(r) => {
                ResponseKind::DescribeGroups(self.describe_groups(r, v))
            }
            RequestKind::ListGroups(r) => ResponseKind::ListGroups(self.list_groups(r, v)),
            RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(self.delete_groups(r).await),
            other => {
                // `apis::accepts` admitted it, so a handler must exist: a bug, not input.
                warn!(request = ?std::mem::discriminant(&other), "no handler for an advertised API");
                return None;
            }
        })
    }

    /// Runs blocking storage work off the async threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        match tokio::task::spawn_blocking(f).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// The ApiVersions answer: exactly the [`SUPPORTED`] table.
#[must_use]
pub fn api_versions_response(_version: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.api_keys = SUPPORTED
        .iter()
        .map(|s| {
            let mut a = kafka_protocol::messages::api_versions_response::ApiVersion::default();
            a.api_key = s.key as i16;
            a.min_version = s.min;
            a.max_version = s.max;
            a
        })
        .collect();
    r
}

fn respond_api_versions_fallback(prefix: RequestPrefix) -> Outcome {
    let mut body = api_versions_response(0);
    body.error_code = kafka_protocol::ResponseError::UnsupportedVersion.code();
    match response_frame(prefix.correlation_id, 0, |buf| Ok(body.encode(buf, 0)?)) {
        Ok(f) => Outcome::Respond(f),
        Err(e) => Outcome::Close(format!("internal error encoding ApiVersions: {e}")),
    }
}

/// The frame for `response`, or nothing to send.
fn outcome(prefix: RequestPrefix, key: ApiKey, response: Option<&ResponseKind>) -> Outcome {
    let Some(response) = response else {
        return Outcome::Silent;
    };
    match encode_response(prefix, key, response) {
        Ok(frame) => Outcome::Respond(frame),
        Err(e) => {
            warn!(api = ?key, version = prefix.api_version, error = %e, "could not encode a response");
            Outcome::Close(format!("internal error encoding {key:?}: {e}"))
        }
    }
}

fn encode_response(
    prefix: RequestPrefix,
    key: ApiKey,
    response: &ResponseKind,
) -> Result<BytesMut, CodecError> {
    let header_version = key.response_header_version(prefix.api_version);
    response_frame(prefix.correlation_id, header_version, |buf| {
        Ok(response.encode(buf, prefix.api_version)?)
    })
}

/// A topic name for the codec.
pub(crate) fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A string for the codec.
pub(crate) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// Kafka's cluster ids are 16 random bytes in URL-safe base64 without padding (22
/// characters). Runnel keeps its id in `<data>/cluster-id` so it survives restarts.
fn load_or_create_cluster_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("cluster-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if id.len() == 22 {
            return Ok(id);
        }
        warn!(path = %path.display(), "ignoring a malformed cluster id; writing a new one");
    }
    let id = base64_url(&random_bytes::<16>()?);
    std::fs::create_dir_all(data_dir)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{id}\n"))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

/// Bytes from the OS's random source.
pub(crate) fn random_bytes<const N: usize>() -> std::io::Result<[u8; N]> {
    use std::io::Read;
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A stable, non-zero topic id derived from the cluster id and the topic name, so every
/// restart reports the same id without storing one (FNV-1a, twice, with two seeds).
pub(crate) fn topic_id(cluster_id: &str, topic: &str) -> uuid::Uuid {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in cluster_id.bytes().chain([0]).chain(topic.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let hi = fnv(0xcbf2_9ce4_8422_2325);
    let lo = fnv(0x8422_2325_cbf2_9ce4) | 1;
    uuid::Uuid::from_u64_pair(hi, lo)
}

/// Read the request's bytes as the codec's `Bytes`.
pub(crate) fn as_bytes(v: Vec<u8>) -> Bytes {
    Bytes::from(v)
}

/// Wall-clock time in ms since the Unix epoch (commit times).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// This broker's node id as the codec's type.
pub(crate) fn node_id() -> kafka_protocol::messages::BrokerId {
    kafka_protocol::messages::BrokerId(NODE_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas() {
        let id = base64_url(&[0xff; 16]);
        assert_eq!(id.len(), 22);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(base64_url(b"Man"), "TWFu");
    }

    #[test]
    fn topic_ids_are_stable_and_distinct() {
        assert_eq!(topic_id("c", "orders"), topic_id("c", "orders"));
        assert_ne!(topic_id("c", "orders"), topic_id("c", "customers"));
        assert!(!topic_id("c", "x").is_nil());
    }
}
