//! `/metrics` in the Prometheus text format (version 0.0.4).
//!
//! Names follow `runnel_<thing>_<unit>`; counters end in `_total`.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use runnel_broker::SUPPORTED;
use runnel_log::PartitionId;

use crate::api::AppState;

/// One metric family being written.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn start(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

impl Family<'_> {
    /// The `_bucket` (cumulative, then `+Inf`), `_sum` and `_count` series of a histogram.
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &runnel_log::stats::Histogram) {
        let (buckets, count, sum) = h.snapshot();
        let bucket = format!("{name}_bucket");
        for (le, n) in buckets {
            let le = le.to_string();
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, n);
        }
        let mut inf = labels.to_vec();
        inf.push(("le", "+Inf"));
        self.sample(&bucket, &inf, count);
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count);
    }
}

/// Label values escape backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(crate) async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let b = &s.broker;
    let mut out = String::new();

    let name = "runnel_requests_total";
    let mut f = Family::start(&mut out, name, "counter", "Kafka requests served, by API.");
    let counts = b.requests();
    for api in SUPPORTED {
        let label = format!("{:?}", api.key);
        f.sample(name, &[("api", &label)], counts.get(api.key));
    }

    let name = "runnel_request_duration_seconds";
    let mut f = Family::start(
        &mut out,
        name,
        "histogram",
        "Time from a Kafka request's arrival to its answer, by API.",
    );
    for api in SUPPORTED {
        let Some(h) = b.metrics().latency(api.key as i16) else {
            continue;
        };
        let label = format!("{:?}", api.key);
        f.histogram(name, &[("api", &label)], h);
    }

    let name = "runnel_fsync_duration_seconds";
    let mut f = Family::start(
        &mut out,
        name,
        "histogram",
        "Duration of each fdatasync of a segment (group commit).",
    );
    f.histogram(name, &[], &b.log().stats().fsync);

    let stats = b.log().stats();
    for (name, help, value) in [
        (
            "runnel_quarantined_batches_total",
            "Damaged batches moved aside at recovery or stepped over by reads (see the log for file and position).",
            &stats.quarantined_batches,
        ),
        (
            "runnel_quarantined_bytes_total",
            "The bytes of those batches.",
            &stats.quarantined_bytes,
        ),
    ] {
        let mut f = Family::start(&mut out, name, "counter", help);
        f.sample(name, &[], value.load(std::sync::atomic::Ordering::Relaxed));
    }

    let topics = b.core().topic_metrics().topics();
    for (name, help, get) in [
        (
            "runnel_topic_bytes_in_total",
            "Batch bytes appended (Kafka and HTTP), per topic.",
            (|c: &runnel_core::counters::TopicCounters| &c.bytes_in)
                as fn(&runnel_core::counters::TopicCounters) -> &std::sync::atomic::AtomicU64,
        ),
        (
            "runnel_topic_records_in_total",
            "Records appended (Kafka and HTTP), per topic.",
            |c: &runnel_core::counters::TopicCounters| &c.records_in,
        ),
        (
            "runnel_topic_bytes_out_total",
            "Batch bytes sent to Kafka consumers, per topic.",
            |c: &runnel_core::counters::TopicCounters| &c.bytes_out,
        ),
        (
            "runnel_topic_records_out_total",
            "Records sent to Kafka consumers, per topic.",
            |c: &runnel_core::counters::TopicCounters| &c.records_out,
        ),
    ] {
        let mut f = Family::start(&mut out, name, "counter", help);
        for (topic, c) in &topics {
            f.sample(
                name,
                &[("topic", topic)],
                get(c).load(std::sync::atomic::Ordering::Relaxed),
            );
        }
    }

    let name = "runnel_connections";
    let mut f = Family::start(&mut out, name, "gauge", "Kafka connections open now.");
    f.sample(name, &[], b.connections());

    let mut partitions = Vec::new();
    for t in b.log().topics() {
        for p in t.partitions() {
            partitions.push((t.name().to_string(), p));
        }
    }
    partitions.sort_by(|a, b| (&a.0, a.1.id()).cmp(&(&b.0, b.1.id())));
    for (name, help, value) in [
        (
            "runnel_partition_size_bytes",
            "Bytes on disk per partition.",
            (|p: &runnel_log::Partition| p.size_bytes()) as fn(&runnel_log::Partition) -> u64,
        ),
        (
            "runnel_partition_high_watermark",
            "One past the last readable offset, per partition.",
            |p: &runnel_log::Partition| p.high_watermark().0,
        ),
        (
            "runnel_partition_log_start_offset",
            "First offset still in the log, per partition.",
            |p: &runnel_log::Partition| p.log_start_offset().0,
        ),
    ] {
        let mut f = Family::start(&mut out, name, "gauge", help);
        for (topic, p) in &partitions {
            let id = p.id().0.to_string();
            f.sample(name, &[("topic", topic), ("partition", &id)], value(p));
        }
    }

    let groups = b.groups();
    let listing = groups.read(|c| {
        c.list(&[])
            .into_iter()
            .map(|l| {
                let members = c.describe(&l.group_id).map_or(0, |d| d.members.len());
                (l.group_id, members)
            })
            .collect::<Vec<_>>()
    });
    let name = "runnel_group_members";
    let mut f = Family::start(&mut out, name, "gauge", "Members per consumer group.");
    for (g, members) in &listing {
        f.sample(name, &[("group", g)], members);
    }
    let name = "runnel_group_lag_records";
    let mut f = Family::start(
        &mut out,
        name,
        "gauge",
        "Records between a group's committed offset and the high watermark.",
    );
    for (g, _) in &listing {
        for ((topic, p), c) in groups.offsets.group(g) {
            let Ok(part) = b.log().partition(&topic, PartitionId(p.max(0) as u32)) else {
                continue;
            };
            let lag = (part.high_watermark().0 as i64 - c.offset).max(0);
            let id = p.to_string();
            f.sample(
                name,
                &[("group", g), ("topic", &topic), ("partition", &id)],
                lag,
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
