//! The HTTP face of a service: commands in, queries out, health and metrics.
//!
//! ```text
//! let api = ServiceApi::new(transport, "orders")
//!     .health(&handle)                                   // /health/ready, /metrics
//!     .command::<PlaceOrder, _, _>("/orders", |cmd, out| async move {
//!         out.emit(&OrderPlaced { order: cmd.order, amount_cents: cmd.amount_cents });
//!         Ok(Accepted::new())                            // 202 {"id": .., "ids": [..]}
//!     })
//!     .query("/orders/{id}", move |q| {
//!         let orders = orders.clone();                   // a TableRef<Order>
//!         async move { orders.get(q.param("id")?)?.ok_or_else(|| CommandError::not_found("no such order")) }
//!     });
//! api.serve("127.0.0.1:8080".parse()?, ctrl_c).await?;
//! ```
//!
//! ## Routes
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/health/live` | 200 `{"live": true}` while the server runs |
//! | GET | `/health/ready` | 200 `{"ready": true}` once every registered instance is ready (its tables caught up); else 503 naming the others |
//! | GET | `/metrics` | every registered instance's counters, Prometheus text |
//! | POST (or PUT, PATCH, DELETE with [`ServiceApi::command_with`]) | a command path | 202 `{"id", "ids", ..}` after the events are stored |
//! | GET | a [`ServiceApi::query`] path | 200 with the query's JSON |
//!
//! ## A command's life
//!
//! 1. The body must be JSON (`Content-Type: application/json` or `application/*+json`;
//!    else 415) of at most [`BODY_BYTES_MAX`] bytes (else 413) that deserializes into the
//!    command type (else 400 with serde's message: malformed and mistyped bodies alike).
//! 2. [`Command::validate`] (an `Err` is 422 with its message).
//! 3. The command's function runs with an [`Outbox`]; [`Outbox::emit`] only queues.
//! 4. If it returns `Ok`, every queued event goes to the log in one [`Transport::send`],
//!    and only once the log acknowledged them does the answer go out, with their ids. A
//!    [`CommandError`] answers with its status and nothing is emitted; a failed send is
//!    503 `not_stored`, and the events may or may not be stored.
//!
//! From step 3 on the command runs in its own task: a client that hangs up does not
//! cut a command in half between its side effects and its events, and a panic in it is
//! a 500 rather than a dropped connection.
//!
//! Ids are fresh ([`fresh_event_id`]), so a client that retries after a 503 or a lost
//! answer emits new events; a command that must be idempotent checks a client-chosen id
//! against a table and answers 409 (the essays' "conflict").
//!
//! ## Errors
//!
//! Every error is JSON `{"error": message, "code": code}` (the shape of the broker's HTTP API): unknown paths are 404
//! `no_route`, wrong methods 405 `method_not_allowed` (with `Allow`), and the codes above.
//!
//! ## Why `query` and not plain axum handlers
//!
//! A [`ServiceApi::query`] function sees a [`QueryInput`] and returns
//! `Result<impl Serialize, CommandError>`: service code names no axum type, and every
//! service answers bad input in the same shape. What a query cannot express (streams,
//! other media types) goes in [`ServiceApi::routes`], a plain `axum::Router` that shares
//! the fallbacks and the body limit.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::http::header::{CONTENT_TYPE, HeaderMap};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, post, put};
use axum::{Json, Router};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::contract::{Command, Event};
use crate::error::{ErrorKind, HandlerError};
use crate::handler::event_record;
use crate::metadata::{fresh_event_id, headers};
use crate::rng::SplitMix64;
use crate::runtime::ServiceHandle;
use crate::trace::TraceParent;
use crate::transport::{OutRecord, Transport};

/// Largest request body accepted, unless [`ServiceApi::body_bytes_max`] says otherwise.
pub const BODY_BYTES_MAX: usize = 1 << 20;
/// Most events one command may emit: they go to the log in one send, and the answer
/// lists every id.
pub const EVENTS_PER_COMMAND_MAX: usize = 1000;

/// Prometheus' text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Builds a service's HTTP API. See the module docs.
#[derive(Debug)]
pub struct ServiceApi {
    /// Where command events go, and what `ce_source` names.
    shared: Arc<Shared>,
    /// Commands, queries and the user's own routes so far.
    router: Router,
    /// Instances `/health/ready` and `/metrics` report on.
    probes: Vec<Probe>,
    /// Applies to every route, the user's included.
    body_bytes_max: usize,
}

/// What every command handler needs.
#[derive(Debug)]
struct Shared {
    transport: Arc<dyn Transport>,
    /// `ce_source` of emitted events, and the service label in logs.
    source: Arc<str>,
}

impl ServiceApi {
    /// An API whose commands send their events on `transport`, as `source` (the
    /// service's name: it becomes the events' `ce_source` and prefixes their ids).
    #[must_use]
    pub fn new(transport: Arc<dyn Transport>, source: &str) -> ServiceApi {
        ServiceApi {
            shared: Arc::new(Shared {
                transport,
                source: Arc::from(source),
            }),
            router: Router::new(),
            probes: Vec::new(),
            body_bytes_max: BODY_BYTES_MAX,
        }
    }

    /// Reports on `handle` in `/health/ready` (ready once its tables caught up, not
    /// ready once it stopped) and in `/metrics`. Call it once per instance served.
    #[must_use]
    pub fn health(self, handle: &ServiceHandle) -> ServiceApi {
        self.probe(Probe::of(handle))
    }

    /// Reports on anything that has a readiness and metrics: a [`Probe`].
    #[must_use]
    pub fn probe(mut self, probe: Probe) -> ServiceApi {
        self.probes.push(probe);
        self
    }

    /// The largest request body accepted, on every route (413 beyond it).
    #[must_use]
    pub fn body_bytes_max(mut self, bytes: usize) -> ServiceApi {
        self.body_bytes_max = bytes;
        self
    }

    /// `POST path` runs the command `C` through `f`; see the module docs for the
    /// answers. `f` gets the validated command and an [`Outbox`] for its events, and
    /// returns what to answer ([`Accepted`]) or why not ([`CommandError`]).
    ///
    /// # Panics
    ///
    /// If `path` is not a valid axum path or already has a POST route: a bug in the
    /// service's wiring, found at start.
    #[must_use]
    pub fn command<C, F, Fut>(self, path: &str, f: F) -> ServiceApi
    where
        C: Command,
        F: Fn(C, Outbox) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Accepted, CommandError>> + Send + 'static,
    {
        self.command_with(CommandMethod::Post, path, move |c, _, out| f(c, out))
    }

    /// A command on `method` whose function also sees the path and query parameters:
    /// `PUT /customers/{id}`, `POST /orders/{id}/payment`. Otherwise as
    /// [`ServiceApi::command`].
    ///
    /// # Panics
    ///
    /// If `path` is not a valid axum path or already has a route for `method`.
    #[must_use]
    pub fn command_with<C, F, Fut>(mut self, method: CommandMethod, path: &str, f: F) -> ServiceApi
    where
        C: Command,
        F: Fn(C, QueryInput, Outbox) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<Accepted, CommandError>> + Send + 'static,
    {
        let shared = self.shared.clone();
        let route: Arc<str> = Arc::from(path);
        let handler = move |params: Result<Path<HashMap<String, String>>, PathRejection>,
                            query: Result<Query<Vec<(String, String)>>, QueryRejection>,
                            uri: Uri,
                            headers: HeaderMap,
                            body: Result<Bytes, BytesRejection>| {
            let (shared, route, f) = (shared.clone(), route.clone(), f.clone());
            async move {
                let input = match (params, query) {
                    (Ok(Path(path)), Ok(Query(query))) => QueryInput { path, query, uri },
                    (Err(e), _) => return ApiError::bad_request(e.body_text()).into_response(),
                    (_, Err(e)) => return ApiError::bad_request(e.body_text()).into_response(),
                };
                run_command::<C, _, Fut>(
                    shared,
                    route,
                    move |c, out| f(c, input, out),
                    headers,
                    body,
                )
                .await
            }
        };
        let routed = match method {
            CommandMethod::Post => post(handler),
            CommandMethod::Put => put(handler),
            CommandMethod::Patch => patch(handler),
            CommandMethod::Delete => delete(handler),
        };
        self.router = self.router.route(path, routed);
        self
    }

    /// `GET path` answers 200 with `f`'s value as JSON, or its [`CommandError`]. Path
    /// parameters (`/customers/{id}`) and query parameters reach `f` in a
    /// [`QueryInput`]. Table reads (`TableRef::get`) convert with `?`.
    ///
    /// # Panics
    ///
    /// If `path` is not a valid axum path or already has a GET route.
    #[must_use]
    pub fn query<F, Fut, R>(mut self, path: &str, f: F) -> ServiceApi
    where
        F: Fn(QueryInput) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<R, CommandError>> + Send + 'static,
        R: Serialize,
    {
        let handler = move |params: Result<Path<HashMap<String, String>>, PathRejection>,
                            query: Result<Query<Vec<(String, String)>>, QueryRejection>,
                            uri: Uri| {
            let f = f.clone();
            async move {
                let input = match (params, query) {
                    (Ok(Path(path)), Ok(Query(query))) => QueryInput { path, query, uri },
                    (Err(e), _) => return ApiError::bad_request(e.body_text()).into_response(),
                    (_, Err(e)) => return ApiError::bad_request(e.body_text()).into_response(),
                };
                // Its own task, as a command: a panic is a 500, not a dropped connection.
                match tokio::spawn(async move { f(input).await.map(|v| Json(v).into_response()) })
                    .await
                {
                    Ok(Ok(response)) => response,
                    Ok(Err(e)) => e.into_response(),
                    Err(e) => {
                        warn!(%e, "a query's task failed");
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "internal",
                            "the query failed",
                        )
                        .into_response()
                    }
                }
            }
        };
        self.router = self.router.route(path, get(handler));
        self
    }

    /// Adds plain axum routes (state already applied, `Router::with_state`), for what
    /// [`ServiceApi::query`] cannot express. They get the JSON 404 and 405 answers and
    /// the body limit too.
    ///
    /// # Panics
    ///
    /// If a path overlaps one already routed, as `Router::merge` does.
    #[must_use]
    pub fn routes(mut self, routes: Router) -> ServiceApi {
        self.router = self.router.merge(routes);
        self
    }

    /// The finished router: the service's routes, health, metrics, the JSON fallbacks
    /// and the body limit.
    pub fn router(self) -> Router {
        let probes: Arc<[Probe]> = self.probes.into();
        let ready_probes = probes.clone();
        self.router
            .route(
                "/health/live",
                get(|| async { Json(json!({"live": true})) }),
            )
            .route(
                "/health/ready",
                get(move || std::future::ready(ready(&ready_probes))),
            )
            .route(
                "/metrics",
                get(move || std::future::ready(metrics(&probes))),
            )
            .fallback(|| async {
                ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route")
            })
            .method_not_allowed_fallback(|| async {
                ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "this route does not take that method; see the Allow header",
                )
            })
            .layer(DefaultBodyLimit::max(self.body_bytes_max))
    }

    /// Binds `addr` (port 0 picks a free port; [`Bound::local_addr`] says which) without
    /// serving yet.
    pub async fn bind(self, addr: SocketAddr) -> std::io::Result<Bound> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        Ok(Bound {
            source: self.shared.source.clone(),
            listener,
            local_addr,
            router: self.router(),
        })
    }

    /// Binds `addr`, logs the address, and serves until `shutdown` resolves; then
    /// stops accepting and lets requests in flight finish.
    pub async fn serve(
        self,
        addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.bind(addr).await?.serve(shutdown).await
    }
}

/// A bound listener with its router, ready to serve.
#[derive(Debug)]
pub struct Bound {
    source: Arc<str>,
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    router: Router,
}

impl Bound {
    /// The address bound: with port 0, the port the system picked.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then lets requests in flight finish.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        info!(service = %self.source, addr = %self.local_addr, "serving HTTP");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
        info!(service = %self.source, "HTTP server stopped");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Commands

/// Queues a command's events. Clone it freely within the command; what is queued is
/// sent only once the command's function returns `Ok`.
#[derive(Clone, Debug)]
pub struct Outbox {
    inner: Arc<Mutex<OutboxInner>>,
}

#[derive(Debug)]
struct OutboxInner {
    /// `ce_source`, and the prefix of fresh ids.
    source: Arc<str>,
    /// The span events are children of: the caller's `traceparent`, or a new root.
    trace: TraceParent,
    /// Span ids of the events.
    rng: SplitMix64,
    records: Vec<OutRecord>,
    ids: Vec<String>,
    /// Set when the command's function returned; emitting after that is a bug.
    closed: bool,
}

impl Outbox {
    fn new(source: Arc<str>, incoming: Option<TraceParent>) -> Outbox {
        let mut rng = SplitMix64::from_entropy();
        let trace = incoming.unwrap_or_else(|| TraceParent::new_root(&mut || rng.next_u64()));
        Outbox {
            inner: Arc::new(Mutex::new(OutboxInner {
                source,
                trace,
                rng,
                records: Vec::new(),
                ids: Vec::new(),
                closed: false,
            })),
        }
    }

    /// Queues `event` with a fresh id and the request's trace; returns the id.
    ///
    /// # Panics
    ///
    /// If called after the command's function returned (from a task it left behind):
    /// the event could be neither sent nor reported.
    pub fn emit<E: Event>(&self, event: &E) -> String {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        assert!(
            !inner.closed,
            "Outbox::emit({}) after the command answered: the event would be lost",
            E::TYPE
        );
        let id = fresh_event_id(&inner.source);
        let trace = {
            let OutboxInner { trace, rng, .. } = &mut *inner;
            trace.child(&mut || rng.next_u64())
        };
        let record = event_record(event, &id, &inner.source, &trace);
        inner.records.push(record);
        inner.ids.push(id.clone());
        id
    }

    /// Closes the outbox and takes what it queued.
    fn close(&self) -> (Vec<OutRecord>, Vec<String>) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.closed = true;
        (
            std::mem::take(&mut inner.records),
            std::mem::take(&mut inner.ids),
        )
    }
}

/// What a command answers once its events are stored: 202 (or the status given) with
/// `{"id": first event id or null, "ids": [every id]}` and the body's fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    status: StatusCode,
    body: Map<String, Value>,
}

impl Default for Accepted {
    fn default() -> Accepted {
        Accepted::new()
    }
}

impl Accepted {
    /// 202 with the event ids only.
    #[must_use]
    pub fn new() -> Accepted {
        Accepted {
            status: StatusCode::ACCEPTED,
            body: Map::new(),
        }
    }

    /// 202 with `body` too: its fields when it is a JSON object (`id` and `ids` stay
    /// the events'), else under `"result"`.
    #[must_use]
    pub fn with_body(body: impl Serialize) -> Accepted {
        Accepted::new().body(body)
    }

    /// Another 2xx status with `body`, for a command that answers synchronously (a
    /// payment: paid or declined): `with_status(200, json!({"paid": true}))`.
    ///
    /// # Panics
    ///
    /// If `status` is not 2xx, or is 204 or 205 (which have no body): a refusal is a
    /// [`CommandError`], and then nothing is emitted.
    #[must_use]
    pub fn with_status(status: u16, body: impl Serialize) -> Accepted {
        assert!(
            (200..300).contains(&status) && status != 204 && status != 205,
            "Accepted::with_status({status}): an accepted command answers 2xx with a body; refuse with CommandError"
        );
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        Accepted {
            status,
            ..Accepted::new()
        }
        .body(body)
    }

    fn body(mut self, body: impl Serialize) -> Accepted {
        match serde_json::to_value(body) {
            Ok(Value::Object(m)) => self.body = m,
            Ok(Value::Null) => {}
            Ok(other) => {
                self.body.insert("result".into(), other);
            }
            Err(e) => {
                // Only a map with non-string keys or a failing hand-written Serialize
                // gets here; say so rather than answer half a body.
                warn!(%e, "a command's answer body does not serialize");
                self.body
                    .insert("result_error".into(), Value::String(e.to_string()));
            }
        }
        self
    }

    fn into_response(self, ids: Vec<String>) -> Response {
        let mut body = self.body;
        body.insert(
            "id".into(),
            ids.first()
                .map_or(Value::Null, |id| Value::String(id.clone())),
        );
        body.insert(
            "ids".into(),
            Value::Array(ids.into_iter().map(Value::String).collect()),
        );
        (self.status, Json(Value::Object(body))).into_response()
    }
}

/// Why a command (or a query) is refused: a status, a short code and a message for the
/// caller. Nothing is emitted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} ({status}): {message}")]
pub struct CommandError {
    status: u16,
    code: String,
    message: String,
}

impl CommandError {
    /// A refusal with `status` (4xx, or 5xx for the service's own trouble), `code`
    /// (short, snake_case: what a client branches on) and `message` (for people).
    ///
    /// # Panics
    ///
    /// If `status` is not 4xx or 5xx.
    pub fn new(status: u16, code: &str, message: impl std::fmt::Display) -> CommandError {
        assert!(
            (400..600).contains(&status),
            "CommandError::new({status}): a refusal is 4xx or 5xx"
        );
        CommandError {
            status,
            code: code.to_string(),
            message: message.to_string(),
        }
    }

    /// 400 `bad_request`: the input makes no sense.
    pub fn bad_request(message: impl std::fmt::Display) -> CommandError {
        CommandError::new(400, "bad_request", message)
    }

    /// 404 `not_found`: what the command or query names does not exist.
    pub fn not_found(message: impl std::fmt::Display) -> CommandError {
        CommandError::new(404, "not_found", message)
    }

    /// 409 `conflict`: the command clashes with the current state (already done, sold
    /// out).
    pub fn conflict(message: impl std::fmt::Display) -> CommandError {
        CommandError::new(409, "conflict", message)
    }

    /// 422 `invalid_command`: well-formed, but not acceptable.
    pub fn unprocessable(message: impl std::fmt::Display) -> CommandError {
        CommandError::new(422, "invalid_command", message)
    }

    /// The HTTP status.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The short code.
    #[must_use]
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A failed table read: a transient one is 503 (try again), a permanent one 500.
impl From<HandlerError> for CommandError {
    fn from(e: HandlerError) -> CommandError {
        match e.kind() {
            ErrorKind::Transient | ErrorKind::NotYet => {
                CommandError::new(503, "unavailable", e.message())
            }
            ErrorKind::Permanent => CommandError::new(500, "internal", e.message()),
        }
    }
}

impl IntoResponse for CommandError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        error_body(status, &self.code, &self.message)
    }
}

/// A command from the request to the answer; see the module docs.
async fn run_command<C, F, Fut>(
    shared: Arc<Shared>,
    route: Arc<str>,
    f: F,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response
where
    C: Command,
    F: FnOnce(C, Outbox) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Accepted, CommandError>> + Send + 'static,
{
    if !is_json(&headers) {
        return ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "a command is JSON: send Content-Type: application/json",
        )
        .into_response();
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => {
            let status = r.status();
            let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "body_too_large"
            } else {
                "bad_body"
            };
            return ApiError::new(status, code, r.body_text()).into_response();
        }
    };
    let command: C = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string())
                .into_response();
        }
    };
    if let Err(message) = command.validate() {
        return ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_command", message)
            .into_response();
    }
    let incoming = headers
        .get(headers::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let outbox = Outbox::new(shared.source.clone(), incoming);
    let span = info_span!("command", service = %shared.source, route = %route);
    // Its own task: a client hanging up must not cut the command between its side
    // effects and its events, and a panic becomes a 500 (see the module docs).
    let task = tokio::spawn(
        async move {
            let answer = f(command, outbox.clone()).await;
            let (records, ids) = outbox.close();
            let accepted = answer?;
            store(&*shared.transport, records).await?;
            debug!(events = ids.len(), "command accepted");
            Ok::<_, CommandError>(accepted.into_response(ids))
        }
        .instrument(span),
    );
    match task.await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => e.into_response(),
        Err(e) => {
            warn!(%route, %e, "a command's task failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the command failed; see the service's log",
            )
            .into_response()
        }
    }
}

/// The HTTP methods a command can take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandMethod {
    /// `POST`: create, or an action (`/orders`, `/orders/{id}/payment`).
    Post,
    /// `PUT`: set a whole resource (`/customers/{id}`).
    Put,
    /// `PATCH`: change part of a resource.
    Patch,
    /// `DELETE`: remove a resource.
    Delete,
}

/// Sends a command's events; refuses more than [`EVENTS_PER_COMMAND_MAX`].
async fn store(transport: &dyn Transport, records: Vec<OutRecord>) -> Result<(), CommandError> {
    if records.len() > EVENTS_PER_COMMAND_MAX {
        warn!(
            events = records.len(),
            max = EVENTS_PER_COMMAND_MAX,
            "a command emitted too many events; none sent"
        );
        return Err(CommandError::new(
            500,
            "too_many_events",
            format!(
                "the command emitted {} events, more than {EVENTS_PER_COMMAND_MAX}; nothing was emitted",
                records.len()
            ),
        ));
    }
    if records.is_empty() {
        return Ok(());
    }
    transport.send(records).await.map(|_| ()).map_err(|e| {
        warn!(%e, "sending a command's events failed");
        CommandError::new(
            503,
            "not_stored",
            format!("sending the events failed ({e}); they may or may not be stored"),
        )
    })
}

/// Whether the request says its body is JSON: `application/json` or
/// `application/<something>+json`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

// ---------------------------------------------------------------------------------------
// Queries

/// What a query function sees: path parameters by name, query parameters.
#[derive(Clone, Debug)]
pub struct QueryInput {
    path: HashMap<String, String>,
    /// In request order; a name given twice keeps both.
    query: Vec<(String, String)>,
    uri: Uri,
}

impl QueryInput {
    /// The path parameter `name` (`{id}` in `/customers/{id}`), percent-decoded.
    ///
    /// A name the route does not have is a 500 `no_such_parameter`: a bug in the
    /// service's wiring.
    pub fn param(&self, name: &str) -> Result<&str, CommandError> {
        self.path.get(name).map(String::as_str).ok_or_else(|| {
            CommandError::new(
                500,
                "no_such_parameter",
                format!("the route has no path parameter {name:?}"),
            )
        })
    }

    /// The last value of the query parameter `name`, if given.
    #[must_use]
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The query string as a `T` (`struct Page { from: Option<String>, limit: usize }`);
    /// 400 when it does not fit.
    pub fn query_as<T: DeserializeOwned>(&self) -> Result<T, CommandError> {
        Query::<T>::try_from_uri(&self.uri)
            .map(|Query(t)| t)
            .map_err(|e| CommandError::bad_request(e.body_text()))
    }
}

// ---------------------------------------------------------------------------------------
// Health and metrics

/// Metrics rendering, shared by the clones of a [`Probe`].
type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// What `/health/ready` and `/metrics` read from one running instance.
#[derive(Clone)]
pub struct Probe {
    /// `service/instance`, named in a 503.
    label: String,
    /// True once ready; a closed channel means the instance stopped.
    ready: watch::Receiver<bool>,
    /// Its Prometheus text, or `None` when it has none to share.
    metrics: RenderMetrics,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("label", &self.label)
            .field("ready", &*self.ready.borrow())
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// A probe of anything: `label` names it in a 503, `ready` is its readiness (a
    /// closed channel counts as stopped), `metrics` renders its Prometheus text.
    pub fn new(
        label: impl Into<String>,
        ready: watch::Receiver<bool>,
        metrics: impl Fn() -> String + Send + Sync + 'static,
    ) -> Probe {
        Probe {
            label: label.into(),
            ready,
            metrics: Arc::new(metrics),
        }
    }

    /// A probe of an instance: live readiness and its counters.
    #[must_use]
    pub fn of(handle: &ServiceHandle) -> Probe {
        let render = handle.metrics_renderer();
        Probe::new(label_of(handle), handle.ready_watch(), render)
    }

    /// Whether it is ready: said so, and not stopped since.
    fn is_ready(&self) -> bool {
        *self.ready.borrow() && self.ready.has_changed().is_ok()
    }
}

fn label_of(handle: &ServiceHandle) -> String {
    format!("{}/{}", handle.name(), handle.instance())
}

fn ready(probes: &[Probe]) -> Response {
    let waiting: Vec<&str> = probes
        .iter()
        .filter(|p| !p.is_ready())
        .map(|p| p.label.as_str())
        .collect();
    if waiting.is_empty() {
        return Json(json!({"ready": true})).into_response();
    }
    let body = json!({
        "error": format!("not ready (tables restoring, or stopped): {}", waiting.join(", ")),
        "code": "not_ready",
        "ready": false,
        "not_ready": waiting,
    });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

fn metrics(probes: &[Probe]) -> Response {
    let mut texts = Vec::with_capacity(probes.len());
    for p in probes {
        texts.push((p.metrics)());
    }
    let body = merge_metrics(&texts);
    ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], body).into_response()
}

/// Joins several instances' Prometheus texts into one: each family's `# HELP` and
/// `# TYPE` once, then its samples from every text. The text format forbids a family
/// appearing twice, so plain concatenation of two instances would not parse.
fn merge_metrics(texts: &[String]) -> String {
    // Families in first-seen order; their header lines and samples.
    let mut order: Vec<String> = Vec::new();
    let mut families: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    let mut comments = Vec::new();
    for text in texts {
        let mut current: Option<String> = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let family = if let Some(rest) = line
                .strip_prefix("# HELP ")
                .or_else(|| line.strip_prefix("# TYPE "))
            {
                let name = rest.split_whitespace().next().unwrap_or("").to_string();
                current = Some(name.clone());
                Some((name, true))
            } else if line.starts_with('#') {
                comments.push(line.to_string());
                None
            } else {
                // A sample belongs to the family declared last (a histogram's `_bucket`
                // lines follow its TYPE); without one, to its own name.
                let name = current
                    .clone()
                    .unwrap_or_else(|| line.split(['{', ' ']).next().unwrap_or("").to_string());
                Some((name, false))
            };
            let Some((name, header)) = family else {
                continue;
            };
            let entry = families.entry(name.clone()).or_insert_with(|| {
                order.push(name);
                (Vec::new(), Vec::new())
            });
            if !header {
                entry.1.push(line.to_string());
            } else if !entry.0.iter().any(|h| h == line) {
                entry.0.push(line.to_string());
            }
        }
    }
    let mut out = String::new();
    for line in comments {
        out.push_str(&line);
        out.push('\n');
    }
    for name in order {
        let (header, samples) = &families[&name];
        for line in header.iter().chain(samples) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Errors

/// An error answer of the HTTP layer itself.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_body(self.status, self.code, &self.message)
    }
}

/// The one shape of every error: `{"error": message, "code": code}` (the shape of the broker's HTTP API).
fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": message, "code": code}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::transport::{BoxFuture, GroupConsumer, MemberOptions, Reader, Sent, TopicSpec};
    use axum::body::Body;
    use axum::http::{Method, Request};
    use http_body_util::BodyExt;
    use serde::Deserialize;
    use tower::ServiceExt;

    /// Keeps what is sent; fails sends while `fail` is set.
    #[derive(Debug, Default)]
    struct FakeLog {
        sent: Mutex<Vec<OutRecord>>,
        sends: std::sync::atomic::AtomicUsize,
        fail: std::sync::atomic::AtomicBool,
    }

    impl FakeLog {
        fn sent(&self) -> Vec<OutRecord> {
            self.sent.lock().unwrap().clone()
        }
    }

    impl Transport for FakeLog {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn ensure_topics<'a>(&'a self, _: &'a [TopicSpec]) -> BoxFuture<'a, Result<(), Error>> {
            Box::pin(async { Ok(()) })
        }
        fn watermarks<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<(i64, i64)>, Error>> {
            Box::pin(async { Ok(Vec::new()) })
        }
        fn send(&self, records: Vec<OutRecord>) -> BoxFuture<'_, Result<Vec<Sent>, Error>> {
            Box::pin(async move {
                self.sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(Error::Transport("the log is down".into()));
                }
                let mut sent = self.sent.lock().unwrap();
                let out = records
                    .iter()
                    .map(|_| Sent {
                        partition: 0,
                        offset: sent.len() as i64,
                    })
                    .collect();
                sent.extend(records);
                Ok(out)
            })
        }
        fn reader(
            &self,
            _: Vec<(crate::transport::TopicPartition, i64)>,
        ) -> Result<Box<dyn Reader>, Error> {
            Err(Error::Transport("no reader".into()))
        }
        fn subscribe(
            &self,
            _: MemberOptions,
        ) -> BoxFuture<'_, Result<Box<dyn GroupConsumer>, Error>> {
            Box::pin(async { Err(Error::Transport("no groups".into())) })
        }
        fn committed<'a>(
            &'a self,
            _: &'a str,
            _: &'a str,
        ) -> BoxFuture<'a, Result<Vec<(i32, i64)>, Error>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct OrderPlaced {
        order: String,
        amount_cents: u64,
    }
    crate::event!(OrderPlaced, type = "orderPlaced", topic = "orders", key = |e| e.order.clone());

    #[derive(Debug, Deserialize)]
    struct PlaceOrder {
        order: String,
        amount_cents: u64,
        #[serde(default)]
        copies: u32,
    }
    impl Command for PlaceOrder {
        fn validate(&self) -> Result<(), String> {
            if self.amount_cents == 0 {
                return Err("amount_cents must be positive".into());
            }
            Ok(())
        }
    }

    #[derive(Debug, Deserialize)]
    struct Pay {
        cents: u64,
    }
    impl Command for Pay {}

    fn api(log: &Arc<FakeLog>) -> Router {
        ServiceApi::new(log.clone(), "orders")
            .command::<PlaceOrder, _, _>("/orders", |cmd, out| async move {
                if cmd.order == "taken" {
                    out.emit(&OrderPlaced {
                        order: cmd.order,
                        amount_cents: 1,
                    });
                    return Err(CommandError::conflict("order taken exists"));
                }
                if cmd.order == "boom" {
                    panic!("a bug in the command");
                }
                for _ in 0..cmd.copies.max(1) {
                    out.emit(&OrderPlaced {
                        order: cmd.order.clone(),
                        amount_cents: cmd.amount_cents,
                    });
                }
                Ok(Accepted::with_body(
                    json!({"order": cmd.order, "id": "not mine"}),
                ))
            })
            .command::<Pay, _, _>("/payments", |cmd, _out| async move {
                Ok(Accepted::with_status(
                    200,
                    json!({"paid": cmd.cents < 1000}),
                ))
            })
            .query("/orders/{id}", |q| async move {
                let id = q.param("id")?;
                if id == "o1" {
                    Ok(json!({"order": id, "verbose": q.query("verbose")}))
                } else {
                    Err(CommandError::not_found(format!("no order {id}")))
                }
            })
            .query("/panics", |_q| async move {
                if true {
                    panic!("a bug in the query");
                }
                Ok(json!(null))
            })
            .query("/wrong/{id}", |q| async move {
                q.param("nope").map(str::to_string)
            })
            .query("/page", |q| async move {
                #[derive(Deserialize)]
                struct Page {
                    limit: u32,
                }
                let p: Page = q.query_as()?;
                Ok(json!({"limit": p.limit}))
            })
            .body_bytes_max(1024)
            .router()
    }

    async fn call(
        router: Router,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: &str,
        extra: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            req = req.header(CONTENT_TYPE, ct);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = router
            .oneshot(req.body(Body::from(body.to_string())).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, headers, value)
    }

    async fn post_json(router: Router, uri: &str, body: &str) -> (StatusCode, Value) {
        let (s, _, v) = call(
            router,
            Method::POST,
            uri,
            Some("application/json"),
            body,
            &[],
        )
        .await;
        (s, v)
    }

    fn header<'a>(r: &'a OutRecord, name: &str) -> &'a str {
        let v = r
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .unwrap();
        std::str::from_utf8(v).unwrap()
    }

    #[tokio::test]
    async fn command_sends_its_events_then_answers_202_with_their_ids() {
        let log = Arc::new(FakeLog::default());
        let (status, body) = post_json(
            api(&log),
            "/orders",
            r#"{"order":"o1","amount_cents":250,"copies":2}"#,
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let sent = log.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(
            log.sends.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "one send for all"
        );
        let ids: Vec<&str> = sent.iter().map(|r| header(r, headers::CE_ID)).collect();
        assert_eq!(body["ids"], json!(ids));
        assert_eq!(
            body["id"],
            json!(ids[0]),
            "the events' id wins over the body's"
        );
        assert_eq!(body["order"], "o1");
        assert_ne!(ids[0], ids[1]);
        assert!(ids[0].starts_with("orders/"), "{}", ids[0]);
        let r = &sent[0];
        assert_eq!(r.topic, "orders");
        assert_eq!(r.key.as_deref(), Some(&b"o1"[..]));
        assert_eq!(header(r, headers::CE_TYPE), "orderPlaced");
        assert_eq!(header(r, headers::CE_SOURCE), "orders");
        let event: OrderPlaced = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        assert_eq!(
            event,
            OrderPlaced {
                order: "o1".into(),
                amount_cents: 250
            }
        );
        // A new root trace, shared by the command's events, with a span each.
        let t0 = TraceParent::parse(header(&sent[0], headers::TRACEPARENT)).unwrap();
        let t1 = TraceParent::parse(header(&sent[1], headers::TRACEPARENT)).unwrap();
        assert_eq!(t0.trace_id(), t1.trace_id());
        assert_ne!(t0.parent_id(), t1.parent_id());
    }

    #[tokio::test]
    async fn commands_take_other_methods_and_see_the_path() {
        let log = Arc::new(FakeLog::default());
        let router = ServiceApi::new(log.clone(), "orders")
            .command_with::<Pay, _, _>(
                CommandMethod::Put,
                "/orders/{id}/payment",
                |cmd, q, _out| async move {
                    let id = q.param("id")?.to_string();
                    Ok(Accepted::with_status(
                        200,
                        json!({"order": id, "paid": cmd.cents < 1000}),
                    ))
                },
            )
            .router();
        let (status, _, body) = call(
            router.clone(),
            Method::PUT,
            "/orders/o7/payment",
            Some("application/json"),
            r#"{"cents":5}"#,
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["order"], "o7");
        assert_eq!(body["paid"], true);
        let (status, _, body) = call(
            router,
            Method::POST,
            "/orders/o7/payment",
            Some("application/json"),
            r#"{"cents":5}"#,
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{body}");
    }

    #[tokio::test]
    async fn command_continues_the_callers_traceparent() {
        let log = Arc::new(FakeLog::default());
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (status, _, _) = call(
            api(&log),
            Method::POST,
            "/orders",
            Some("application/json; charset=utf-8"),
            r#"{"order":"o1","amount_cents":1}"#,
            &[("traceparent", incoming)],
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let tp = TraceParent::parse(header(&log.sent()[0], headers::TRACEPARENT)).unwrap();
        let caller = TraceParent::parse(incoming).unwrap();
        assert_eq!(tp.trace_id(), caller.trace_id());
        assert_ne!(tp.parent_id(), caller.parent_id(), "a span of its own");
    }

    #[tokio::test]
    async fn bad_input_is_a_4xx_with_a_json_error_and_emits_nothing() {
        let log = Arc::new(FakeLog::default());
        let cases: [(Option<&str>, String, StatusCode, &str); 7] = [
            (
                Some("application/json"),
                "{not json".into(),
                StatusCode::BAD_REQUEST,
                "bad_json",
            ),
            (
                Some("application/json"),
                String::new(),
                StatusCode::BAD_REQUEST,
                "bad_json",
            ),
            (
                Some("application/json"),
                r#"{"order":"o1","amount_cents":"lots"}"#.into(),
                StatusCode::BAD_REQUEST,
                "bad_json",
            ),
            (
                Some("application/json"),
                r#"{"order":"o1","amount_cents":0}"#.into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_command",
            ),
            (
                Some("text/plain"),
                r#"{"order":"o1","amount_cents":1}"#.into(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                None,
                r#"{"order":"o1","amount_cents":1}"#.into(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                Some("application/json"),
                format!(r#"{{"order":"{}","amount_cents":1}}"#, "x".repeat(2000)),
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
            ),
        ];
        for (ct, body, want, code) in cases {
            let (status, _, v) = call(api(&log), Method::POST, "/orders", ct, &body, &[]).await;
            assert_eq!(status, want, "{ct:?} {v}");
            assert_eq!(v["code"], code, "{v}");
            assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        }
        let (_, v) = post_json(
            api(&log),
            "/orders",
            r#"{"order":"o1","amount_cents":"lots"}"#,
        )
        .await;
        assert!(
            v["error"].as_str().unwrap().contains("invalid type"),
            "serde's message: {v}"
        );
        let (_, v) = post_json(api(&log), "/orders", r#"{"order":"o1","amount_cents":0}"#).await;
        assert_eq!(v["error"], "amount_cents must be positive");
        assert!(log.sent().is_empty());
        assert_eq!(log.sends.load(std::sync::atomic::Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_refused_command_emits_nothing_even_what_it_queued() {
        let log = Arc::new(FakeLog::default());
        let (status, v) = post_json(
            api(&log),
            "/orders",
            r#"{"order":"taken","amount_cents":1}"#,
        )
        .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            v,
            json!({"error": "order taken exists", "code": "conflict"})
        );
        assert!(log.sent().is_empty());
    }

    #[tokio::test]
    async fn a_failed_send_is_503_and_says_the_events_may_be_stored() {
        let log = Arc::new(FakeLog::default());
        log.fail.store(true, std::sync::atomic::Ordering::SeqCst);
        let (status, v) =
            post_json(api(&log), "/orders", r#"{"order":"o1","amount_cents":1}"#).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["code"], "not_stored");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("may or may not be stored"),
            "{v}"
        );
    }

    #[tokio::test]
    async fn a_panicking_command_is_a_500_json_error() {
        let log = Arc::new(FakeLog::default());
        let (status, v) =
            post_json(api(&log), "/orders", r#"{"order":"boom","amount_cents":1}"#).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(v["code"], "internal");
        assert!(log.sent().is_empty());
    }

    #[tokio::test]
    async fn a_synchronous_command_answers_its_own_status() {
        let log = Arc::new(FakeLog::default());
        let (status, v) = post_json(api(&log), "/payments", r#"{"cents":5}"#).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v, json!({"paid": true, "id": null, "ids": []}));
    }

    #[test]
    #[should_panic(expected = "answers 2xx")]
    fn accepted_refuses_a_4xx() {
        let _ = Accepted::with_status(404, json!({}));
    }

    #[test]
    fn accepted_puts_a_non_object_body_under_result() {
        let a = Accepted::with_body(7);
        assert_eq!(a.body.get("result"), Some(&json!(7)));
        assert_eq!(Accepted::with_body(()).body, Map::new());
    }

    #[test]
    fn a_table_read_failure_maps_to_503_or_500() {
        assert_eq!(
            CommandError::from(HandlerError::transient("busy")).status(),
            503
        );
        assert_eq!(
            CommandError::from(HandlerError::permanent("corrupt")).status(),
            500
        );
    }

    #[tokio::test]
    async fn queries_answer_200_404_and_read_parameters() {
        let log = Arc::new(FakeLog::default());
        let (status, _, v) = call(
            api(&log),
            Method::GET,
            "/orders/o1?verbose=yes",
            None,
            "",
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v, json!({"order": "o1", "verbose": "yes"}));
        let (status, _, v) = call(api(&log), Method::GET, "/orders/o2", None, "", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v, json!({"error": "no order o2", "code": "not_found"}));
        let (status, _, v) = call(api(&log), Method::GET, "/page?limit=5", None, "", &[]).await;
        assert_eq!((status, v), (StatusCode::OK, json!({"limit": 5})));
        let (status, _, v) = call(api(&log), Method::GET, "/page?limit=many", None, "", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(v["code"], "bad_request");
        let (status, _, v) = call(api(&log), Method::GET, "/wrong/x", None, "", &[]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(v["code"], "no_such_parameter");
        let (status, _, v) = call(api(&log), Method::GET, "/panics", None, "", &[]).await;
        assert_eq!(
            (status, &v["code"]),
            (StatusCode::INTERNAL_SERVER_ERROR, &json!("internal"))
        );
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_get_json_errors() {
        let log = Arc::new(FakeLog::default());
        let (status, _, v) = call(api(&log), Method::GET, "/nope", None, "", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["code"], "no_route");
        let (status, headers, v) = call(api(&log), Method::GET, "/orders", None, "", &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["code"], "method_not_allowed");
        assert_eq!(headers.get("allow").unwrap(), "POST");
        let (status, _, v) = call(api(&log), Method::DELETE, "/health/live", None, "", &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["code"], "method_not_allowed");
    }

    #[tokio::test]
    async fn plain_routes_share_the_fallbacks_and_the_body_limit() {
        let log = Arc::new(FakeLog::default());
        let extra = Router::new().route("/echo", post(|b: Bytes| async move { b }));
        let router = ServiceApi::new(log.clone(), "orders")
            .routes(extra)
            .body_bytes_max(8)
            .router();
        let (status, _, v) = call(router.clone(), Method::POST, "/echo", None, "1234", &[]).await;
        assert_eq!((status, v), (StatusCode::OK, json!(1234)));
        let (status, _, _) = call(
            router.clone(),
            Method::POST,
            "/echo",
            None,
            "123456789",
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let (status, _, v) = call(router, Method::GET, "/echo", None, "", &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["code"], "method_not_allowed");
    }

    #[tokio::test]
    async fn ready_waits_for_every_probe_and_notices_a_stopped_one() {
        let log = Arc::new(FakeLog::default());
        let (a_tx, a_rx) = watch::channel(false);
        let (b_tx, b_rx) = watch::channel(true);
        let router = ServiceApi::new(log, "orders")
            .probe(Probe::new("orders/a", a_rx, String::new))
            .probe(Probe::new("orders/b", b_rx, String::new))
            .router();
        let get_ready = || call(router.clone(), Method::GET, "/health/ready", None, "", &[]);
        let (status, _, v) = get_ready().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["code"], "not_ready");
        assert_eq!(v["not_ready"], json!(["orders/a"]));
        a_tx.send(true).unwrap();
        let (status, _, v) = get_ready().await;
        assert_eq!((status, v), (StatusCode::OK, json!({"ready": true})));
        drop(b_tx); // the instance stopped
        let (status, _, v) = get_ready().await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["not_ready"], json!(["orders/b"]));
        let (status, _, v) = call(router, Method::GET, "/health/live", None, "", &[]).await;
        assert_eq!((status, v), (StatusCode::OK, json!({"live": true})));
    }

    #[tokio::test]
    async fn metrics_merge_instances_into_one_valid_text() {
        let log = Arc::new(FakeLog::default());
        let text = |i: &'static str| {
            move || {
                format!(
                    "# HELP runnel_service_handled_total Number of records.\n\
                     # TYPE runnel_service_handled_total counter\n\
                     runnel_service_handled_total{{instance=\"{i}\"}} 1\n\
                     # HELP runnel_service_handler_seconds Latency.\n\
                     # TYPE runnel_service_handler_seconds histogram\n\
                     runnel_service_handler_seconds_bucket{{instance=\"{i}\",le=\"+Inf\"}} 0\n\
                     runnel_service_handler_seconds_count{{instance=\"{i}\"}} 0\n"
                )
            }
        };
        let (_tx, rx) = watch::channel(true);
        let router = ServiceApi::new(log, "orders")
            .probe(Probe::new("orders/a", rx.clone(), text("a")))
            .probe(Probe::new("orders/b", rx, text("b")))
            .router();
        let (status, headers, v) = call(router, Method::GET, "/metrics", None, "", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers.get(CONTENT_TYPE).unwrap(), METRICS_CONTENT_TYPE);
        let body = v.as_str().unwrap();
        let want = "# HELP runnel_service_handled_total Number of records.\n\
                    # TYPE runnel_service_handled_total counter\n\
                    runnel_service_handled_total{instance=\"a\"} 1\n\
                    runnel_service_handled_total{instance=\"b\"} 1\n\
                    # HELP runnel_service_handler_seconds Latency.\n\
                    # TYPE runnel_service_handler_seconds histogram\n\
                    runnel_service_handler_seconds_bucket{instance=\"a\",le=\"+Inf\"} 0\n\
                    runnel_service_handler_seconds_count{instance=\"a\"} 0\n\
                    runnel_service_handler_seconds_bucket{instance=\"b\",le=\"+Inf\"} 0\n\
                    runnel_service_handler_seconds_count{instance=\"b\"} 0\n";
        assert_eq!(body, want);
    }

    #[test]
    fn json_content_types() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(CONTENT_TYPE, v.parse().unwrap());
            is_json(&m)
        };
        assert!(h("application/json"));
        assert!(h("Application/JSON; charset=utf-8"));
        assert!(h("application/cloudevents+json"));
        assert!(!h("text/json"));
        assert!(!h("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[tokio::test]
    #[should_panic(expected = "after the command answered")]
    async fn emitting_after_the_answer_is_a_bug() {
        let out = Outbox::new(Arc::from("orders"), None);
        let _ = out.close();
        out.emit(&OrderPlaced {
            order: "late".into(),
            amount_cents: 1,
        });
    }

    #[tokio::test]
    async fn bind_on_port_zero_reports_the_port() {
        let log = Arc::new(FakeLog::default());
        let bound = ServiceApi::new(log, "orders")
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        assert_ne!(bound.local_addr().port(), 0);
        bound.serve(async {}).await.unwrap();
    }
}
