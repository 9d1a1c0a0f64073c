//! Each running instance states its own status, as a fact on the log like any other:
//! every [`STATUS_INTERVAL`] a record on the compacted topic [`STATUS_TOPIC`] keyed
//! `<service>/<instance>`, with its readiness, its counters, the topics it handles and
//! its dead-letter topic, and a last one marked `stopped` when it stops. Whoever reads
//! the topic (Runnel's web console) sees the services without asking any of them.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tracing::debug;

use crate::metrics::Metrics;
use crate::transport::{OutRecord, TopicSpec, Transport};

/// The compacted topic instances state their status on.
pub use runnel_core::services::STATUS_TOPIC;

/// How often a running instance states its status.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(5);

/// What one status record says (JSON).
#[derive(Debug, Serialize)]
struct StatusRecord<'a> {
    service: &'a str,
    instance: &'a str,
    transport: &'a str,
    ready: bool,
    stopped: bool,
    handled: u64,
    failed: u64,
    retried: u64,
    parked: u64,
    dead_lettered: u64,
    skipped_unknown: u64,
    emitted: u64,
    table_records: u64,
    topics: &'a [String],
    dead_letter_topic: String,
    at_ms: i64,
}

/// What a reporter needs of its instance.
pub(crate) struct Reporter {
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) service: String,
    pub(crate) instance: String,
    pub(crate) topics: Vec<String>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) ready: watch::Receiver<bool>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl Reporter {
    fn record(&self, stopped: bool) -> OutRecord {
        let m = self.metrics.snapshot();
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let status = StatusRecord {
            service: &self.service,
            instance: &self.instance,
            transport: self.transport.kind(),
            ready: *self.ready.borrow() && !stopped,
            stopped,
            handled: m.handled,
            failed: m.failed,
            retried: m.retried,
            parked: m.parked,
            dead_lettered: m.dead_lettered,
            skipped_unknown: m.skipped_unknown,
            emitted: m.emitted,
            table_records: m.table_records,
            topics: &self.topics,
            dead_letter_topic: crate::service::dead_letter_topic(&self.service),
            at_ms,
        };
        OutRecord {
            topic: STATUS_TOPIC.to_string(),
            partition: None,
            key: Some(format!("{}/{}", self.service, self.instance).into_bytes()),
            value: Some(serde_json::to_vec(&status).unwrap_or_default()),
            headers: Vec::new(),
        }
    }

    /// States the status now and every [`STATUS_INTERVAL`] until the instance stops,
    /// then once more, marked stopped. A failed send is only logged: the status is
    /// for people watching, never a reason to stop a service.
    pub(crate) async fn run(mut self) {
        let topic = TopicSpec {
            name: STATUS_TOPIC.to_string(),
            partitions: 1,
            compacted: true,
        };
        if let Err(e) = self.transport.ensure_topics(&[topic]).await {
            debug!(%e, "cannot create the status topic; not stating status");
            return;
        }
        loop {
            if let Err(e) = self.transport.send(vec![self.record(false)]).await {
                debug!(%e, "stating status failed");
            }
            // A change of readiness is stated at once; a dropped sender means the
            // instance is gone.
            let go_on = tokio::select! {
                () = tokio::time::sleep(STATUS_INTERVAL) => true,
                r = self.stop.changed() => r.is_ok() && !*self.stop.borrow(),
                r = self.ready.changed() => r.is_ok(),
            };
            if !go_on || *self.stop.borrow() {
                break;
            }
        }
        if let Err(e) = self.transport.send(vec![self.record(true)]).await {
            debug!(%e, "stating the final status failed");
        }
    }
}
