//! Routes and handlers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use runnel_broker::Broker;
use runnel_core::ProduceError;
use runnel_core::topics::{check_user_topic, is_internal};
use runnel_log::config::PARTITIONS_MAX;
use runnel_log::{CodecError, LogError, PartitionId};
use serde::Deserialize;
use serde_json::{Value, json};

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Most records one read returns.
pub const RECORDS_LIMIT_MAX: usize = 1000;
/// Most records one produce request takes.
const PRODUCE_RECORDS_MAX: usize = 10_000;
/// Bytes asked of the log per read step.
const READ_BYTES: usize = 1 << 20;

/// Every route, as (method, path) in the OpenAPI spelling: the OpenAPI description and
/// a test are checked against it.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/health/live"),
    ("get", "/health/ready"),
    ("get", "/metrics"),
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/overview"),
    ("get", "/api/v1/topology"),
    ("get", "/api/v1/services"),
    ("post", "/api/v1/services/{service}/dead-letters/replay"),
    ("get", "/api/v1/topics"),
    ("post", "/api/v1/topics"),
    ("get", "/api/v1/topics/{topic}"),
    ("delete", "/api/v1/topics/{topic}"),
    ("post", "/api/v1/topics/{topic}/records"),
    ("post", "/api/v1/topics/{topic}/config"),
    ("get", "/api/v1/topics/{topic}/tail"),
    (
        "get",
        "/api/v1/topics/{topic}/partitions/{partition}/records",
    ),
    ("get", "/api/v1/groups"),
    ("get", "/api/v1/groups/{group}"),
    ("delete", "/api/v1/groups/{group}"),
    ("post", "/api/v1/groups/{group}/offsets"),
    ("get", "/"),
    ("get", "/console.js"),
    ("get", "/console.css"),
];

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) broker: Arc<Broker>,
    /// When this API started serving: the overview's uptime.
    pub(crate) started: std::time::Instant,
    /// Live tails open (bounded).
    pub(crate) tails: Arc<tokio::sync::Semaphore>,
}

pub(crate) fn routes(broker: Arc<Broker>) -> Router {
    let state = AppState {
        broker,
        started: std::time::Instant::now(),
        tails: crate::tail::tails(),
    };
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/topology", get(topology))
        .route("/api/v1/services", get(services))
        .route(
            "/api/v1/services/{service}/dead-letters/replay",
            axum::routing::post(replay_dead_letter),
        )
        .route("/", get(crate::console::page))
        .route("/console.js", get(crate::console::script))
        .route("/console.css", get(crate::console::style))
        .route("/api/v1/topics", get(list_topics).post(create_topic))
        .route(
            "/api/v1/topics/{topic}",
            get(describe_topic).delete(delete_topic),
        )
        .route(
            "/api/v1/topics/{topic}/records",
            axum::routing::post(produce),
        )
        .route(
            "/api/v1/topics/{topic}/config",
            axum::routing::post(alter_config),
        )
        .route(
            "/api/v1/topics/{topic}/partitions/{partition}/records",
            get(read_records),
        )
        .route("/api/v1/topics/{topic}/tail", get(crate::tail::tail))
        .route("/api/v1/groups", get(list_groups))
        .route(
            "/api/v1/groups/{group}",
            get(describe_group).delete(delete_group),
        )
        .route(
            "/api/v1/groups/{group}/offsets",
            axum::routing::post(reset_offsets),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn(crate::console::same_origin))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// An error answer: `{"error": message, "code": code}` with `status`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub(crate) fn no_topic(topic: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_topic",
            format!("topic {topic:?} does not exist"),
        )
    }

    fn from_log(e: &LogError) -> ApiError {
        match e {
            LogError::UnknownTopic(t) => ApiError::no_topic(t),
            LogError::UnknownPartition { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_partition", e.to_string())
            }
            LogError::OffsetOutOfRange { .. } => ApiError::new(
                StatusCode::BAD_REQUEST,
                "offset_out_of_range",
                e.to_string(),
            ),
            LogError::TopicExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "topic_exists", e.to_string())
            }
            LogError::InvalidTopicName { .. }
            | LogError::InvalidPartitions { .. }
            | LogError::Config(_)
            | LogError::Batch(_) => ApiError::bad_request(e.to_string()),
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                e.to_string(),
            ),
        }
    }

    fn from_produce(e: &ProduceError) -> ApiError {
        match e {
            ProduceError::UnknownTopic { topic } => ApiError::no_topic(topic),
            ProduceError::UnknownPartition { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_partition", e.to_string())
            }
            ProduceError::Log(l) => ApiError::from_log(l),
            // Records that decompress past the topic's limit: too large, as Kafka says.
            ProduceError::Decompression(CodecError::TooLarge { .. }) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "records_too_large",
                e.to_string(),
            ),
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.message, "code": self.code}));
        (self.status, body).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> ApiError {
        let status = r.status();
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "bad_json"
        };
        ApiError::new(status, code, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> ApiError {
        ApiError::bad_request(r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> ApiError {
        ApiError::bad_request(r.body_text())
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// Runs blocking storage work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ApiResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("task failed: {e}"),
        )
    })
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        "no such route; see /api/v1/openapi.json",
    )
}

async fn live() -> Json<Value> {
    Json(json!({"status": "live"}))
}

async fn ready(State(s): State<AppState>) -> Response {
    if s.broker.serving() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the broker is shutting down",
        )
        .into_response()
    }
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::openapi())
}

async fn list_topics(State(s): State<AppState>) -> Json<Value> {
    let mut topics: Vec<Value> = s
        .broker
        .log()
        .topics()
        .iter()
        .map(|t| {
            let parts = t.partitions();
            let counters = s.broker.core().topic_counters(t.name());
            let total =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            json!({
                "name": t.name(),
                "partitions": parts.len(),
                "internal": is_internal(t.name()),
                // What the console's list shows, in one request for all topics.
                "end_offsets": parts.iter().map(|p| p.high_watermark().0).sum::<u64>(),
                "size_bytes": parts.iter().map(|p| p.size_bytes()).sum::<u64>(),
                "records_in": total(&counters.records_in),
                "records_out": total(&counters.records_out),
            })
        })
        .collect();
    topics.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(json!({ "topics": topics }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTopic {
    name: String,
    partitions: Option<u32>,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

async fn create_topic(
    State(s): State<AppState>,
    body: Result<Json<NewTopic>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Json(t) = body?;
    check_user_topic(&t.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let partitions = t.partitions.unwrap_or(s.broker.config().default_partitions);
    if partitions == 0 || partitions > PARTITIONS_MAX {
        return Err(ApiError::bad_request(format!(
            "partitions must be between 1 and {PARTITIONS_MAX}"
        )));
    }
    let log = s.broker.log().clone();
    let name = t.name.clone();
    blocking(move || log.create_topic(&name, partitions, &t.config))
        .await?
        .map_err(|e| ApiError::from_log(&e))?;
    Ok((StatusCode::CREATED, describe(&s, &t.name)?))
}

fn describe(s: &AppState, name: &str) -> ApiResult<Json<Value>> {
    let topic = s
        .broker
        .log()
        .topic(name)
        .ok_or_else(|| ApiError::no_topic(name))?;
    let partitions: Vec<Value> = topic
        .partitions()
        .iter()
        .map(|p| {
            json!({
                "partition": p.id().0,
                "log_start_offset": p.log_start_offset().0,
                "high_watermark": p.high_watermark().0,
                "size_bytes": p.size_bytes(),
            })
        })
        .collect();
    let overrides = topic.overrides();
    let config: BTreeMap<&str, Value> = topic
        .config()
        .entries()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                json!({"value": v, "overridden": overrides.contains_key(k)}),
            )
        })
        .collect();
    let counters = s.broker.core().topic_counters(name);
    let total = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    Ok(Json(json!({
        "name": name,
        "internal": is_internal(name),
        "partitions": partitions,
        "config": config,
        // Running totals since the broker started: a client that polls takes rates.
        "records_in": total(&counters.records_in),
        "bytes_in": total(&counters.bytes_in),
        "records_out": total(&counters.records_out),
        "bytes_out": total(&counters.bytes_out),
    })))
}

async fn describe_topic(
    State(s): State<AppState>,
    Path(topic): Path<String>,
) -> ApiResult<Json<Value>> {
    describe(&s, &topic)
}

async fn delete_topic(
    State(s): State<AppState>,
    Path(topic): Path<String>,
) -> ApiResult<StatusCode> {
    if is_internal(&topic) {
        return Err(ApiError::bad_request(format!(
            "{topic} is internal: delete groups instead"
        )));
    }
    s.broker
        .delete_topic(&topic)
        .await
        .map_err(|e| ApiError::from_log(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigChange {
    /// Settings to set on the topic.
    #[serde(default)]
    set: BTreeMap<String, String>,
    /// Settings to return to the broker's default.
    #[serde(default)]
    remove: Vec<String>,
}

/// Changes a topic's settings (Kafka's AlterConfigs for one topic, incrementally: what
/// is not named stays). Every value is checked before anything changes. Answers the
/// topic as `GET /api/v1/topics/{topic}` does.
async fn alter_config(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    body: Result<Json<ConfigChange>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(change) = body?;
    if is_internal(&topic) {
        return Err(ApiError::bad_request(format!(
            "{topic} is internal: its settings are the broker's"
        )));
    }
    let log = s.broker.log().clone();
    let name = topic.clone();
    blocking(move || log.alter_topic_config(&name, &change.set, &change.remove))
        .await?
        .map_err(|e| ApiError::from_log(&e))?;
    describe(&s, &topic)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceBody {
    records: Vec<RecordBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordBody {
    key: Option<String>,
    value: Option<String>,
    partition: Option<u32>,
    /// Header names and values, in the map's order.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Appends through the core, which applies the produce rules and picks each record's
/// partition (as given, by the key's murmur2 as Kafka clients do, or round robin).
async fn produce(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    body: Result<Json<ProduceBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    if body.records.is_empty() || body.records.len() > PRODUCE_RECORDS_MAX {
        return Err(ApiError::bad_request(format!(
            "records: between 1 and {PRODUCE_RECORDS_MAX} records per request"
        )));
    }
    let records: Vec<_> = body
        .records
        .into_iter()
        .map(|r| {
            let record = runnel_core::encode::NewRecord {
                key: r.key.map(String::into_bytes),
                value: r.value.map(String::into_bytes),
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect(),
                ..Default::default()
            };
            (r.partition, record)
        })
        .collect();
    let core = s.broker.core().clone();
    let placed = blocking(move || core.produce(&topic, records))
        .await?
        .map_err(|e| ApiError::from_produce(&e))?;
    let offsets: Vec<Value> = placed
        .into_iter()
        .map(|(p, offset)| json!({"partition": p, "offset": offset}))
        .collect();
    Ok(Json(json!({ "offsets": offsets })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Range {
    offset: Option<u64>,
    limit: Option<usize>,
    /// Without an offset: `oldest` (the default) or `newest` (the last `limit` records).
    from: Option<String>,
    /// Without an offset: the first batch with a record at or after this time (ms).
    timestamp: Option<i64>,
}

async fn read_records(
    State(s): State<AppState>,
    path: Result<Path<(String, u32)>, PathRejection>,
    range: Result<Query<Range>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Path((topic, partition)) = path?;
    let Query(range) = range?;
    let limit = range.limit.unwrap_or(100);
    if limit == 0 || limit > RECORDS_LIMIT_MAX {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {RECORDS_LIMIT_MAX}"
        )));
    }
    let part = s
        .broker
        .log()
        .partition(&topic, PartitionId(partition))
        .map_err(|e| ApiError::from_log(&e))?;
    let start = match (range.offset, range.timestamp, range.from.as_deref()) {
        (Some(offset), _, _) => offset,
        (None, Some(ts), _) => {
            let found = blocking({
                let part = part.clone();
                move || part.offset_for_timestamp(ts)
            })
            .await?
            .map_err(|e| ApiError::from_log(&e))?;
            found.map_or(part.high_watermark().0, |b| b.base_offset.0)
        }
        (None, None, None | Some("oldest")) => part.log_start_offset().0,
        (None, None, Some("newest")) => part
            .high_watermark()
            .0
            .saturating_sub(limit as u64)
            .max(part.log_start_offset().0),
        (None, None, Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "from must be oldest or newest, not {other:?}"
            )));
        }
    };
    // Offsets are i64 on every wire; a larger one is out of range, not clamped.
    let start = i64::try_from(start).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "offset_out_of_range",
            format!("offset {start} is beyond any offset"),
        )
    })?;
    let (records, next, high) = blocking(move || -> Result<_, LogError> {
        let mut out = Vec::new();
        let mut next = start;
        loop {
            let high = part.high_watermark().0 as i64;
            let (got, end) = runnel_core::records::read(&part, next, READ_BYTES)?;
            if end <= next {
                return Ok((out, next, high));
            }
            next = end;
            out.extend(got);
            if out.len() > limit {
                // Cut inside a batch: the next read starts after the last record given.
                out.truncate(limit);
                let after = out.last().map_or(next, |r| r.offset + 1);
                return Ok((out, after, high));
            }
            if out.len() == limit || next >= high {
                return Ok((out, next, high));
            }
        }
    })
    .await?
    .map_err(|e| ApiError::from_log(&e))?;
    let text = |b: &Option<bytes::Bytes>| {
        b.as_ref().map_or(Value::Null, |b| {
            Value::String(String::from_utf8_lossy(b).into_owned())
        })
    };
    // Bytes that are not UTF-8 also come as hex, so they can be shown as they are.
    let hex = |b: &Option<bytes::Bytes>| match b {
        Some(b) if std::str::from_utf8(b).is_err() => Value::String(to_hex(b)),
        _ => Value::Null,
    };
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            let headers: Vec<Value> = r
                .headers
                .iter()
                .map(|(k, v)| {
                    json!({"key": String::from_utf8_lossy(k), "value": text(v), "value_hex": hex(v)})
                })
                .collect();
            json!({
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": text(&r.key),
                "key_hex": hex(&r.key),
                "value": text(&r.value),
                "value_hex": hex(&r.value),
                "headers": headers,
            })
        })
        .collect();
    Ok(Json(json!({
        "records": records,
        "next_offset": next,
        "high_watermark": high,
    })))
}

/// Lower-case hex of `bytes`.
fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The broker at a glance: what the console's overview shows. The counters are totals
/// since start; a client that polls takes differences for rates.
async fn overview(State(s): State<AppState>) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let b = &s.broker;
    let topics = b.log().topics();
    let (mut partitions, mut disk_bytes) = (0u64, 0u64);
    for t in &topics {
        for p in t.partitions() {
            partitions += 1;
            disk_bytes += p.size_bytes();
        }
    }
    let (mut bytes_in, mut records_in, mut bytes_out, mut records_out) = (0u64, 0u64, 0u64, 0u64);
    for (_, c) in b.core().topic_metrics().topics() {
        bytes_in += c.bytes_in.load(Relaxed);
        records_in += c.records_in.load(Relaxed);
        bytes_out += c.bytes_out.load(Relaxed);
        records_out += c.records_out.load(Relaxed);
    }
    let groups = b.groups().read(|c| c.list(&[]).len());
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": u64::try_from(s.started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "data_dir": b.config().data_dir.display().to_string(),
        "disk_bytes": disk_bytes,
        "topics": topics.len(),
        "partitions": partitions,
        "groups": groups,
        "connections": b.connections(),
        "bytes_in": bytes_in,
        "records_in": records_in,
        "bytes_out": bytes_out,
        "records_out": records_out,
    }))
}

/// Deletes a group that has no members, with its committed offsets (Kafka's
/// DeleteGroups). A group known only by its committed offsets has those deleted.
async fn delete_group(
    State(s): State<AppState>,
    Path(group): Path<String>,
) -> ApiResult<StatusCode> {
    let groups = s.broker.groups().clone();
    let known = !groups.offsets.group(&group).is_empty();
    match groups.with(|c, _, _| c.delete(&group)) {
        Ok(()) => {}
        Err(runnel_group::GroupError::GroupIdNotFound) if known => {}
        Err(runnel_group::GroupError::NonEmptyGroup) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "group_not_empty",
                format!("group {group:?} has members: stop them first"),
            ));
        }
        Err(_) => return Err(unknown_group(&group)),
    }
    blocking(move || groups.offsets.delete_group(&group))
        .await?
        .map_err(|e| ApiError::from_log(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

fn unknown_group(group: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "unknown_group",
        format!("group {group:?} does not exist"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    /// The topic whose partitions move.
    topic: String,
    /// `earliest`, `latest`, `offset` or `timestamp`.
    to: String,
    /// The offset (for `offset`) or the time in ms (for `timestamp`).
    value: Option<i64>,
    /// Only say where each partition would move.
    #[serde(default)]
    dry_run: bool,
}

/// Moves a group's committed offsets on every partition of a topic, as
/// `kafka-consumer-groups --reset-offsets` does: to the earliest or latest offset, an
/// offset (kept within the log), or the first offset at a time. Only while the group
/// has no members (they would overwrite it); `dry_run` answers the plan and changes
/// nothing.
async fn reset_offsets(
    State(s): State<AppState>,
    Path(group): Path<String>,
    body: Result<Json<ResetBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    let Json(body) = body?;
    let groups = s.broker.groups().clone();
    let members = groups.read(|c| c.describe(&group).map(|d| d.members.len()));
    if !body.dry_run && members.is_some_and(|n| n > 0) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "group_not_empty",
            format!("group {group:?} has members: stop them before resetting its offsets"),
        ));
    }
    let topic = s
        .broker
        .log()
        .topic(&body.topic)
        .ok_or_else(|| ApiError::from_log(&LogError::UnknownTopic(body.topic.clone())))?;
    let (to, value) = (body.to.clone(), body.value);
    let needs_value = matches!(to.as_str(), "offset" | "timestamp");
    if !matches!(to.as_str(), "earliest" | "latest" | "offset" | "timestamp")
        || (needs_value && value.is_none())
    {
        return Err(ApiError::bad_request(
            "to must be earliest, latest, offset (with value) or timestamp (with value)",
        ));
    }
    let current = groups.offsets.group(&group);
    let partitions = topic.partitions();
    let name = body.topic.clone();
    let plan = blocking(move || -> Result<Vec<(i32, i64)>, LogError> {
        let mut plan = Vec::new();
        for p in partitions {
            let (start, end) = (p.log_start_offset().0 as i64, p.high_watermark().0 as i64);
            let target = match (to.as_str(), value) {
                ("earliest", _) => start,
                ("offset", Some(v)) => v.clamp(start, end),
                ("timestamp", Some(ts)) => p
                    .offset_for_timestamp(ts)?
                    .map_or(end, |b| (b.base_offset.0 as i64).max(start)),
                _ => end,
            };
            plan.push((p.id().0 as i32, target));
        }
        Ok(plan)
    })
    .await?
    .map_err(|e| ApiError::from_log(&e))?;
    if !body.dry_run {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let entries: Vec<runnel_core::offsets::OffsetChange> = plan
            .iter()
            .map(|(p, offset)| {
                (
                    (name.clone(), *p),
                    Some(runnel_core::offsets::Committed {
                        offset: *offset,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_ms: now,
                    }),
                )
            })
            .collect();
        let (g, store) = (group.clone(), groups.clone());
        blocking(move || store.offsets.write(&g, &entries))
            .await?
            .map_err(|e| ApiError::from_log(&e))?;
    }
    let offsets: Vec<Value> = plan
        .iter()
        .map(|(p, to)| {
            let from = current.get(&(name.clone(), *p)).map(|c| c.offset);
            json!({"topic": name, "partition": p, "from": from, "to": to})
        })
        .collect();
    Ok(Json(
        json!({"group": group, "dry_run": body.dry_run, "offsets": offsets}),
    ))
}

/// An instance whose last status is older than this is shown as gone (a running one
/// states its status every 5 s).
const SERVICE_SILENT_MS: i64 = 20_000;

/// Status records read back from the end of the status topic, per partition.
const STATUS_RECORDS_MAX: u64 = 10_000;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Records `from..` of `part`, at most up to its high watermark.
fn read_all(
    part: &runnel_log::Partition,
    from: i64,
) -> Result<Vec<runnel_core::records::StoredRecord>, LogError> {
    let mut out = Vec::new();
    let mut next = from;
    let end = part.high_watermark().0 as i64;
    while next < end {
        let (got, after) = runnel_core::records::read(part, next, READ_BYTES)?;
        if after <= next {
            break;
        }
        next = after;
        out.extend(got);
    }
    Ok(out)
}

/// The services built with the toolkit, as their instances state themselves on
/// `runnel.services` (the latest status of each instance; `up` unless it said it stopped
/// or went silent), with their dead-letter topics and how many records those hold.
async fn services(State(s): State<AppState>) -> ApiResult<Json<Value>> {
    let log = s.broker.log().clone();
    let latest = blocking(move || -> Result<BTreeMap<String, Value>, LogError> {
        let mut latest = BTreeMap::new();
        let Some(topic) = log.topic(runnel_core::services::STATUS_TOPIC) else {
            return Ok(latest);
        };
        for p in topic.partitions() {
            let from = p
                .high_watermark()
                .0
                .saturating_sub(STATUS_RECORDS_MAX)
                .max(p.log_start_offset().0);
            for r in read_all(&p, from as i64)? {
                let (Some(k), Some(v)) = (&r.key, &r.value) else {
                    continue;
                };
                if let Ok(status) = serde_json::from_slice::<Value>(v)
                    && status.is_object()
                {
                    latest.insert(String::from_utf8_lossy(k).into_owned(), status);
                }
            }
        }
        Ok(latest)
    })
    .await?
    .map_err(|e| ApiError::from_log(&e))?;
    let now = now_ms();
    let mut by_service: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, mut status) in latest {
        let Some(name) = status["service"].as_str().map(str::to_string) else {
            continue;
        };
        let at = status["at_ms"].as_i64().unwrap_or(0);
        let up = status["stopped"] != true && now - at < SERVICE_SILENT_MS;
        status["up"] = Value::Bool(up);
        by_service.entry(name).or_default().push(status);
    }
    let services: Vec<Value> = by_service
        .into_iter()
        .map(|(name, instances)| {
            let dlq = runnel_core::services::dead_letter_topic(&name);
            let dead_letters: Option<u64> = s.broker.log().topic(&dlq).map(|t| {
                t.partitions()
                    .iter()
                    .map(|p| p.high_watermark().0 - p.log_start_offset().0)
                    .sum()
            });
            let up = instances.iter().filter(|i| i["up"] == true).count();
            json!({
                "service": name,
                "instances": instances,
                "up": up,
                "dead_letter_topic": dlq,
                "dead_letters": dead_letters.unwrap_or(0),
            })
        })
        .collect();
    Ok(Json(json!({ "services": services })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    partition: u32,
    offset: i64,
}

/// Publishes a dead letter again to the topic it came from, as `runnel dlq replay`
/// does: the same key, value and headers, without the dead-letter headers, with
/// `runnel_replayed_from: <service>.dlq@<offset>`.
async fn replay_dead_letter(
    State(s): State<AppState>,
    Path(service): Path<String>,
    body: Result<Json<ReplayBody>, JsonRejection>,
) -> ApiResult<Json<Value>> {
    use runnel_core::services::dlq_headers;
    let Json(body) = body?;
    let dlq = runnel_core::services::dead_letter_topic(&service);
    let part = s
        .broker
        .log()
        .partition(&dlq, PartitionId(body.partition))
        .map_err(|e| ApiError::from_log(&e))?;
    let offset = body.offset;
    let record = blocking(move || -> Result<_, LogError> {
        let (got, _) = runnel_core::records::read(&part, offset, READ_BYTES)?;
        Ok(got.into_iter().find(|r| r.offset == offset))
    })
    .await?
    .map_err(|e| ApiError::from_log(&e))?
    .ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_record",
            format!(
                "{dlq} has no record at offset {offset} of partition {}",
                body.partition
            ),
        )
    })?;
    let header = |name: &str| {
        record
            .headers
            .iter()
            .find(|(k, _)| k == name.as_bytes())
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let Some(source) = header(dlq_headers::TOPIC) else {
        return Err(ApiError::bad_request(format!(
            "the record at {dlq}@{offset} has no {} header: not a dead letter",
            dlq_headers::TOPIC
        )));
    };
    let names: Vec<_> = record
        .headers
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k))
        .collect();
    let headers = runnel_core::services::replay_headers(
        names
            .iter()
            .zip(&record.headers)
            .map(|(k, (_, v))| (k.as_ref(), v.as_deref())),
        &dlq,
        offset,
    );
    let again = runnel_core::encode::NewRecord {
        key: record.key.as_ref().map(|k| k.to_vec()),
        value: record.value.as_ref().map(|v| v.to_vec()),
        headers,
        timestamp_ms: None,
    };
    let core = s.broker.core().clone();
    let topic = source.clone();
    let placed = blocking(move || core.produce(&topic, vec![(None, again)]))
        .await?
        .map_err(|e| ApiError::from_produce(&e))?;
    let (partition, at) = placed.first().copied().unwrap_or((0, -1));
    Ok(Json(
        json!({"topic": source, "partition": partition, "offset": at}),
    ))
}

/// How long a client stays on the topology after its last request.
const TOPOLOGY_WINDOW_MS: i64 = 10 * 60 * 1000;

/// Who writes to which topic and who reads it: the clients that produced or fetched in
/// the last [`TOPOLOGY_WINDOW_MS`] (with their running totals and when last seen, so a
/// client that polls can draw rates and fade what went quiet), and every group with
/// the topics it reads (assigned or committed) and its lag per topic.
async fn topology(State(s): State<AppState>) -> Json<Value> {
    let b = &s.broker;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let flow = |f: &runnel_core::flows::Flow| json!({"client_id": f.client_id, "topic": f.topic, "bytes": f.bytes, "records": f.records, "last_ms": f.last_ms});
    let flows = b.core().flows().since(now - TOPOLOGY_WINDOW_MS);
    let of = |d: runnel_core::flows::Direction| -> Vec<Value> {
        flows
            .iter()
            .filter(|f| f.direction == d)
            .map(flow)
            .collect()
    };
    let mut topics: Vec<String> = b
        .log()
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|t| !is_internal(t))
        .collect();
    topics.sort();
    let described = b.groups().read(|c| {
        c.list(&[])
            .into_iter()
            .filter_map(|l| c.describe(&l.group_id))
            .collect::<Vec<_>>()
    });
    let groups: Vec<Value> = described
        .iter()
        .map(|d| {
            let mut lag: BTreeMap<String, Option<i64>> = BTreeMap::new();
            for m in &d.members {
                for (t, _) in runnel_core::consumer_protocol::assigned_partitions(&m.assignment) {
                    lag.entry(t).or_insert(None);
                }
            }
            for ((topic, p), c) in b.groups().offsets.group(&d.group_id) {
                let end = b
                    .log()
                    .partition(&topic, PartitionId(p.max(0) as u32))
                    .map(|part| part.high_watermark().0 as i64)
                    .ok();
                let behind = end.map_or(0, |e| (e - c.offset).max(0));
                *lag.entry(topic).or_insert(None).get_or_insert(0) += behind;
            }
            // Current members, and readers that last joined this group (they may have
            // left it since, or be between rebalances).
            let mut clients: BTreeSet<String> =
                d.members.iter().map(|m| m.client_id.clone()).collect();
            for f in &flows {
                if f.direction == runnel_core::flows::Direction::Fetch
                    && b.core().flows().group_of(&f.client_id).as_deref() == Some(d.group_id.as_str())
                {
                    clients.insert(f.client_id.clone());
                }
            }
            json!({
                "group": d.group_id,
                "state": d.state.as_str(),
                "members": d.members.len(),
                "clients": clients,
                "topics": lag.iter().map(|(t, l)| json!({"topic": t, "lag": l})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({
        "now_ms": now,
        "topics": topics,
        "producers": of(runnel_core::flows::Direction::Produce),
        "fetchers": of(runnel_core::flows::Direction::Fetch),
        "groups": groups,
    }))
}

async fn list_groups(State(s): State<AppState>) -> Json<Value> {
    let groups: Vec<Value> = s.broker.groups().read(|c| {
        c.list(&[])
            .into_iter()
            .map(|l| {
                let members = c.describe(&l.group_id).map_or(0, |d| d.members.len());
                json!({
                    "group": l.group_id,
                    "state": l.state.as_str(),
                    "protocol_type": l.protocol_type,
                    "members": members,
                })
            })
            .collect()
    });
    Json(json!({ "groups": groups }))
}

async fn describe_group(
    State(s): State<AppState>,
    Path(group): Path<String>,
) -> ApiResult<Json<Value>> {
    let groups = s.broker.groups();
    // A group known only by its committed offsets (written without joining) is an
    // empty group, as Kafka lists it.
    let d = match groups.read(|c| c.describe(&group)) {
        Some(d) => d,
        None if !groups.offsets.group(&group).is_empty() => runnel_group::GroupDescription {
            group_id: group.clone(),
            state: runnel_group::GroupState::Empty,
            protocol_type: String::new(),
            protocol_name: String::new(),
            generation_id: 0,
            members: Vec::new(),
        },
        None => return Err(unknown_group(&group)),
    };
    let members: Vec<Value> = d
        .members
        .iter()
        .map(|m| {
            let assigned: Vec<Value> =
                runnel_core::consumer_protocol::assigned_partitions(&m.assignment)
                    .into_iter()
                    .map(|(t, p)| json!({"topic": t, "partition": p}))
                    .collect();
            json!({
                "member_id": m.member_id,
                "group_instance_id": m.group_instance_id,
                "client_id": m.client_id,
                "client_host": m.client_host,
                "assignment": assigned,
            })
        })
        .collect();
    let offsets: Vec<Value> = groups
        .offsets
        .group(&group)
        .into_iter()
        .map(|((topic, p), c)| {
            let end = s
                .broker
                .log()
                .partition(&topic, PartitionId(p.max(0) as u32))
                .map(|part| part.high_watermark().0 as i64)
                .ok();
            json!({
                "topic": topic,
                "partition": p,
                "committed": c.offset,
                "metadata": c.metadata,
                "end": end,
                "lag": end.map(|e| (e - c.offset).max(0)),
            })
        })
        .collect();
    Ok(Json(json!({
        "group": group,
        "state": d.state.as_str(),
        "protocol_type": d.protocol_type,
        "protocol": d.protocol_name,
        "generation": d.generation_id,
        "members": members,
        "offsets": offsets,
    })))
}
