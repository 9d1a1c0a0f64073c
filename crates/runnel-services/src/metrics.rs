//! Counters of one service instance, rendered in Prometheus' text format by the
//! service's `/metrics`. Names follow `runnel_service_<thing>_total`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the handler latency buckets, in seconds.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
];

/// What one instance has done so far.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records whose handler succeeded.
    pub handled: AtomicU64,
    /// Handler attempts that failed (each retry that fails counts again).
    pub failed: AtomicU64,
    /// Retries scheduled after transient failures.
    pub retried: AtomicU64,
    /// Times a record was parked (`NotYet`).
    pub parked: AtomicU64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: AtomicU64,
    /// Records skipped: an event type this service does not handle.
    pub skipped_unknown: AtomicU64,
    /// Events emitted by handlers.
    pub emitted: AtomicU64,
    /// Records applied to tables.
    pub table_records: AtomicU64,
    /// Table records that could not be applied (logged and skipped).
    pub table_errors: AtomicU64,
    /// Commits that went through.
    pub commits: AtomicU64,
    latency: Histogram,
    /// Lag per partition, as last computed: high watermark minus the committed point.
    lag: Mutex<BTreeMap<String, i64>>,
}

/// Handler latencies: plain atomics, so that the worker records one without a lock.
#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket (not cumulative).
    counts: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    /// The sum, in nanoseconds.
    sum_ns: AtomicU64,
}

/// A copy of the counters, for tests and tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Records handled.
    pub handled: u64,
    /// Failed attempts.
    pub failed: u64,
    /// Retries scheduled.
    pub retried: u64,
    /// Times parked.
    pub parked: u64,
    /// Records dead-lettered.
    pub dead_lettered: u64,
    /// Records of unknown types skipped.
    pub skipped_unknown: u64,
    /// Events emitted.
    pub emitted: u64,
    /// Table records applied.
    pub table_records: u64,
}

impl Metrics {
    /// Adds one handler latency.
    pub fn observe_latency(&self, d: Duration) {
        let s = d.as_secs_f64();
        let h = &self.latency;
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| s <= *b) {
            h.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        h.count.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        h.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Replaces the lag figures.
    pub fn set_lag(&self, lag: BTreeMap<String, i64>) {
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = lag;
    }

    /// The counters now.
    #[must_use]
    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            handled: g(&self.handled),
            failed: g(&self.failed),
            retried: g(&self.retried),
            parked: g(&self.parked),
            dead_lettered: g(&self.dead_lettered),
            skipped_unknown: g(&self.skipped_unknown),
            emitted: g(&self.emitted),
            table_records: g(&self.table_records),
        }
    }

    /// Prometheus text for this instance, labelled with `service` and `instance`.
    #[must_use]
    pub fn render(&self, service: &str, instance: &str) -> String {
        let mut out = String::new();
        let labels = format!("service=\"{service}\",instance=\"{instance}\"");
        let counters: [(&str, &str, &AtomicU64); 10] = [
            ("handled", "records whose handler succeeded", &self.handled),
            ("failed", "handler attempts that failed", &self.failed),
            (
                "retried",
                "retries scheduled after transient failures",
                &self.retried,
            ),
            (
                "parked",
                "times a record was parked until later",
                &self.parked,
            ),
            (
                "dead_lettered",
                "records sent to the dead-letter topic",
                &self.dead_lettered,
            ),
            (
                "skipped_unknown",
                "records of event types this service does not handle",
                &self.skipped_unknown,
            ),
            ("emitted", "events emitted by handlers", &self.emitted),
            (
                "table_records",
                "records applied to tables",
                &self.table_records,
            ),
            (
                "table_errors",
                "table records that could not be applied",
                &self.table_errors,
            ),
            ("commits", "offset commits", &self.commits),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(out, "# HELP runnel_service_{name}_total Number of {help}.");
            let _ = writeln!(out, "# TYPE runnel_service_{name}_total counter");
            let _ = writeln!(
                out,
                "runnel_service_{name}_total{{{labels}}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let h = &self.latency;
        let count = h.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP runnel_service_handler_seconds Handler latency."
        );
        let _ = writeln!(out, "# TYPE runnel_service_handler_seconds histogram");
        let mut cumulative = 0;
        for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
            cumulative += h.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "runnel_service_handler_seconds_bucket{{{labels},le=\"{b}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "runnel_service_handler_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
            count.max(cumulative)
        );
        let _ = writeln!(
            out,
            "runnel_service_handler_seconds_sum{{{labels}}} {}",
            h.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "runnel_service_handler_seconds_count{{{labels}}} {}",
            count.max(cumulative)
        );
        let lag = self.lag.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            out,
            "# HELP runnel_service_lag_records Records not yet committed, per partition."
        );
        let _ = writeln!(out, "# TYPE runnel_service_lag_records gauge");
        for (tp, l) in lag.iter() {
            let _ = writeln!(
                out,
                "runnel_service_lag_records{{{labels},partition=\"{tp}\"}} {l}"
            );
        }
        out
    }
}
