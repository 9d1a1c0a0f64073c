//! `GET /api/v1/topics/{topic}/tail`: a live tail as server-sent events. Each record is
//! one event (`event: record`, JSON data). It waits on the partitions' high-watermark
//! notifications, never polls, and sends a comment every 15 s so proxies keep the
//! connection. At most [`TAILS_MAX`] tails run at once.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use runnel_log::{Offset, Partition};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::api::{ApiError, AppState};

/// Live tails served at once.
pub const TAILS_MAX: usize = 64;
/// Bytes read per partition per step.
const TAIL_READ_BYTES: usize = 256 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TailQuery {
    partition: Option<u32>,
    /// `latest` (default), `earliest`, or an offset (with `partition`).
    from: Option<String>,
}

struct Source {
    partition: Arc<Partition>,
    next: u64,
    hwm: watch::Receiver<Offset>,
}

struct Tail {
    sources: Vec<Source>,
    ready: VecDeque<Event>,
    _permit: OwnedSemaphorePermit,
    stopping: watch::Receiver<bool>,
}

pub(crate) fn tails() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(TAILS_MAX))
}

pub(crate) async fn tail(
    State(s): State<AppState>,
    Path(topic): Path<String>,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> Response {
    match open(&s, &topic, query) {
        Ok(t) => {
            let events = stream::unfold(t, next_event);
            Sse::new(events)
                .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
                .into_response()
        }
        Err(e) => e.into_response(),
    }
}

fn open(
    s: &AppState,
    topic: &str,
    query: Result<Query<TailQuery>, QueryRejection>,
) -> Result<Tail, ApiError> {
    let Query(q) = query?;
    let t = s
        .broker
        .log()
        .topic(topic)
        .ok_or_else(|| ApiError::no_topic(topic))?;
    let partitions: Vec<Arc<Partition>> = match q.partition {
        Some(p) => vec![t.partition(runnel_log::PartitionId(p)).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_partition",
                format!("topic {topic:?} has no partition {p}"),
            )
        })?],
        None => t.partitions(),
    };
    let from = q.from.as_deref().unwrap_or("latest");
    let offset: Option<u64> = match from {
        "latest" | "earliest" => None,
        n if q.partition.is_some() => Some(n.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "from={n:?}: expected latest, earliest or an offset"
            ))
        })?),
        n => {
            return Err(ApiError::bad_request(format!(
                "from={n:?}: an offset needs a partition; use latest or earliest"
            )));
        }
    };
    let permit = s.tails.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_tails",
            format!("{TAILS_MAX} live tails are open already"),
        )
    })?;
    let sources = partitions
        .into_iter()
        .map(|p| {
            let next = match (from, offset) {
                (_, Some(o)) => o,
                ("earliest", _) => p.log_start_offset().0,
                _ => p.high_watermark().0,
            };
            Source {
                hwm: p.subscribe(),
                partition: p,
                next,
            }
        })
        .collect();
    Ok(Tail {
        sources,
        ready: VecDeque::new(),
        _permit: permit,
        stopping: s.broker.shutdown_watch(),
    })
}

async fn next_event(mut t: Tail) -> Option<(Result<Event, Infallible>, Tail)> {
    loop {
        if let Some(e) = t.ready.pop_front() {
            return Some((Ok(e), t));
        }
        if *t.stopping.borrow() || t.sources.iter().any(|s| s.partition.is_deleted()) {
            return None; // shutting down, or the topic was deleted
        }
        // Mark every watch as seen before reading, so an append in between still wakes.
        for s in &mut t.sources {
            s.hwm.borrow_and_update();
        }
        let reads: Vec<(Arc<Partition>, u64)> = t
            .sources
            .iter()
            .filter(|s| s.next < s.partition.high_watermark().0)
            .map(|s| (s.partition.clone(), s.next))
            .collect();
        if !reads.is_empty() {
            let got = tokio::task::spawn_blocking(move || {
                reads
                    .into_iter()
                    .map(|(p, next)| {
                        let id = p.id();
                        let got = match runnel_core::records::read(&p, next as i64, TAIL_READ_BYTES)
                        {
                            Ok(got) => got,
                            // Retention passed the tail: go on from the log start.
                            Err(runnel_log::LogError::OffsetOutOfRange { .. }) => {
                                (Vec::new(), p.log_start_offset().0 as i64)
                            }
                            Err(_) => (Vec::new(), next as i64),
                        };
                        (id, got)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (id, (records, end)) in got {
                let Some(source) = t.sources.iter_mut().find(|s| s.partition.id() == id) else {
                    continue;
                };
                // The batch's end: compaction may have removed its last records.
                source.next = source.next.max(end as u64);
                for r in records {
                    let text = |b: &Option<bytes::Bytes>| {
                        b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned())
                    };
                    let data = json!({
                        "partition": id.0,
                        "offset": r.offset,
                        "timestamp": r.timestamp,
                        "key": text(&r.key),
                        "value": text(&r.value),
                    });
                    t.ready.push_back(
                        Event::default()
                            .event("record")
                            .id(format!("{}:{}", id.0, r.offset))
                            .data(data.to_string()),
                    );
                }
            }
            if !t.ready.is_empty() {
                continue;
            }
        }
        // Nothing new: wait for any partition's high watermark to move, or shutdown.
        let changed = futures_util::future::select_all(
            t.sources.iter_mut().map(|s| Box::pin(s.hwm.changed())),
        );
        tokio::select! {
            (result, _, _) = changed => {
                if result.is_err() {
                    return None; // the partition is gone (topic deleted)
                }
            }
            _ = t.stopping.changed() => {}
        }
    }
}
