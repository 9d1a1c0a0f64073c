//! The operator commands end to end: `runnel topic|produce|consume|group` against a
//! `runnel serve` on port 0, checking output and exit codes.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Broker, TempDir};

struct Tools {
    broker: Broker,
    _dir: TempDir,
}

impl Tools {
    fn start(tag: &str) -> Tools {
        let dir = TempDir::new(tag);
        Tools {
            broker: Broker::start(&dir.0),
            _dir: dir,
        }
    }

    /// Runs `runnel ARGS --bootstrap ADDR` with `stdin`, with a deadline.
    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(args)
            .args(["--bootstrap", &self.broker.addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        common::finish_within(child, Duration::from_secs(60), &format!("runnel {args:?}"))
    }

    /// Runs and expects success; returns standard output.
    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "runnel {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit `code`; returns standard error.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args, "");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "runnel {args:?}: {err}");
        err
    }
}

#[test]
fn topics_are_created_listed_described_reconfigured_and_deleted() {
    let b = Tools::start("topics");
    let out = b.ok(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
        ],
        "",
    );
    assert!(out.contains("created topic orders"), "{out}");
    let err = b.fails(&["topic", "create", "orders"], 1);
    assert!(err.contains("already exists"), "{err}");
    let err = b.fails(&["topic", "create", "bad name!"], 1);
    assert!(err.contains("bad name!"), "{err}");
    let err = b.fails(&["topic", "create", "x", "--config", "novalue"], 2);
    assert!(err.contains("KEY=VALUE"), "{err}");

    let list = b.ok(&["topic", "list"], "");
    assert!(
        list.lines()
            .any(|l| l.starts_with("orders") && l.trim_end().ends_with('3')),
        "{list}"
    );

    let describe = b.ok(&["topic", "describe", "orders"], "");
    assert!(describe.contains("3 partitions"), "{describe}");
    assert!(describe.contains("*retention.ms = 3600000"), "{describe}");

    b.ok(
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=60000",
        ],
        "",
    );
    b.ok(
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "segment.ms=3600000",
        ],
        "",
    );
    let describe = b.ok(&["topic", "describe", "orders"], "");
    assert!(
        describe.contains("*retention.ms = 60000"),
        "earlier changes kept: {describe}"
    );
    assert!(describe.contains("*segment.ms = 3600000"), "{describe}");
    let err = b.fails(
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=soon",
        ],
        1,
    );
    assert!(err.contains("retention.ms"), "{err}");

    b.ok(&["topic", "delete", "orders"], "");
    b.fails(&["topic", "describe", "orders"], 3);
    b.fails(&["topic", "delete", "orders"], 3);
}

#[test]
fn produce_and_consume_in_every_format() {
    let b = Tools::start("records");
    b.ok(&["topic", "create", "events", "--partitions", "1"], "");
    b.ok(
        &[
            "produce",
            "events",
            "--key-separator",
            ":",
            "--header",
            "source=test",
        ],
        "a:1\nb:2\n\nc:3\n",
    );
    b.ok(
        &["produce", "events", "--json"],
        "{\"key\":\"d\",\"value\":{\"n\":4},\"headers\":{\"h\":\"x\"}}\n{\"key\":\"e\",\"value\":null}\n",
    );
    let err = b.run(&["produce", "events", "--json"], "not json\n");
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("line 1"));

    let text = b.ok(&["consume", "events", "--key-separator", "="], "");
    assert_eq!(text, "a=1\nb=2\nc=3\nd={\"n\":4}\ne=\n");
    let json = b.ok(
        &["consume", "events", "--format", "json", "--count", "1"],
        "",
    );
    assert!(json.contains("\"key\":\"a\""), "{json}");
    assert!(json.contains("\"headers\":{\"source\":\"test\"}"), "{json}");
    let tomb = b.ok(
        &["consume", "events", "--format", "json", "--from", "4"],
        "",
    );
    assert!(tomb.contains("\"value\":null"), "{tomb}");
    let hex = b.ok(
        &[
            "consume", "events", "--format", "hex", "--from", "2", "-n", "1",
        ],
        "",
    );
    assert_eq!(hex.trim(), "0 2 63 33");
    let late = b.ok(&["consume", "events", "--from", "@4102444800000"], "");
    assert_eq!(late, "", "a time after every record starts at the end");
    let all = b.ok(
        &[
            "consume",
            "events",
            "--from",
            "2000-01-01T00:00:00Z",
            "-n",
            "2",
        ],
        "",
    );
    assert_eq!(all, "1\n2\n");
    b.fails(&["consume", "events", "--from", "yesterday"], 2);
    b.fails(&["consume", "missing"], 3);
    b.fails(&["consume", "events", "--partition", "7"], 3);
}

#[test]
fn groups_are_listed_described_reset_and_deleted() {
    let b = Tools::start("groups");
    b.ok(&["topic", "create", "jobs", "--partitions", "2"], "");
    b.ok(
        &["produce", "jobs", "--key-separator", ":"],
        "k1:one\nk2:two\nk3:three\nk4:four\n",
    );
    // A group member reads everything and commits as it goes.
    let read = b.ok(&["consume", "jobs", "--group", "workers"], "");
    assert_eq!(read.lines().count(), 4, "{read}");

    let list = b.ok(&["group", "list"], "");
    assert!(
        list.lines()
            .any(|l| l.starts_with("workers") && l.contains("Empty")),
        "{list}"
    );
    let describe = b.ok(&["group", "describe", "workers"], "");
    let lags: Vec<&str> = describe
        .lines()
        .filter(|l| l.starts_with("jobs"))
        .map(|l| l.split_whitespace().nth(4).unwrap())
        .collect();
    assert_eq!(lags, vec!["0", "0"], "{describe}");

    let plan = b.ok(
        &[
            "group",
            "reset-offsets",
            "workers",
            "--topic",
            "jobs",
            "--to-earliest",
        ],
        "",
    );
    assert!(plan.contains("dry run"), "{plan}");
    let unchanged = b.ok(&["group", "describe", "workers"], "");
    assert_eq!(unchanged, describe, "a dry run changes nothing");
    b.ok(
        &[
            "group",
            "reset-offsets",
            "workers",
            "--topic",
            "jobs",
            "--to-earliest",
            "--execute",
        ],
        "",
    );
    let again = b.ok(&["consume", "jobs", "--group", "workers"], "");
    assert_eq!(again.lines().count(), 4, "re-read after the reset: {again}");
    b.ok(
        &[
            "group",
            "reset-offsets",
            "workers",
            "--topic",
            "jobs",
            "--shift-by",
            "-1",
            "--execute",
        ],
        "",
    );
    let last = b.ok(&["consume", "jobs", "--group", "workers"], "");
    assert_eq!(last.lines().count(), 2, "one per partition: {last}");
    b.fails(&["group", "reset-offsets", "workers", "--topic", "jobs"], 2);
    // The other targets, shown as dry runs: NEW is the last column.
    let new_offsets = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["group", "reset-offsets", "workers", "--topic", "jobs"];
        all.extend_from_slice(args);
        b.ok(&all, "")
            .lines()
            .filter(|l| l.starts_with("jobs"))
            .map(|l| l.split_whitespace().last().unwrap().to_string())
            .collect()
    };
    let ends: Vec<String> = describe
        .lines()
        .filter(|l| l.starts_with("jobs"))
        .map(|l| l.split_whitespace().nth(3).unwrap().to_string())
        .collect();
    assert_eq!(new_offsets(&["--to-latest"]), ends);
    assert_eq!(new_offsets(&["--to-offset", "1"]), vec!["1", "1"]);
    assert_eq!(
        new_offsets(&["--to-offset", "99"]),
        ends,
        "clamped to the end"
    );
    assert_eq!(
        new_offsets(&["--to-datetime", "2000-01-01T00:00:00Z"]),
        vec!["0", "0"]
    );
    assert_eq!(new_offsets(&["--to-datetime", "@4102444800000"]), ends);

    b.ok(&["group", "delete", "workers"], "");
    b.fails(&["group", "describe", "workers"], 3);
    b.fails(&["group", "delete", "workers"], 3);
}

#[test]
fn metrics_count_what_kafka_clients_wrote_and_read() {
    let b = Tools::start("metrics");
    b.ok(&["topic", "create", "counted", "--partitions", "1"], "");
    b.ok(&["produce", "counted"], "one\ntwo\nthree\n");
    assert_eq!(b.ok(&["consume", "counted"], ""), "one\ntwo\nthree\n");
    let (status, text) = common::http_get(&b.broker.http, "/metrics");
    assert!(status.contains("200"), "{status}");
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
    };
    assert_eq!(
        value(r#"runnel_topic_records_in_total{topic="counted"}"#),
        3.0
    );
    assert_eq!(
        value(r#"runnel_topic_records_out_total{topic="counted"}"#),
        3.0
    );
    assert!(value(r#"runnel_topic_bytes_in_total{topic="counted"}"#) > 0.0);
    assert!(value(r#"runnel_request_duration_seconds_count{api="Produce"}"#) >= 1.0);
    assert!(
        value("runnel_fsync_duration_seconds_count") >= 1.0,
        "acks=all fsyncs"
    );
    assert!(value(r#"runnel_requests_total{api="Fetch"}"#) >= 1.0);
    assert_eq!(
        value(r#"runnel_partition_high_watermark{topic="counted",partition="0"}"#),
        3.0
    );
}

#[test]
fn consume_follow_waits_for_new_records() {
    let b = Tools::start("follow");
    b.ok(&["topic", "create", "stream", "--partitions", "1"], "");
    b.ok(&["produce", "stream"], "old\n");
    let follower = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["consume", "stream", "--from", "1", "--follow", "-n", "2"])
        .args(["--bootstrap", &b.broker.addr])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It starts after "old" (offset 0) and must wait for what comes next.
    b.ok(&["produce", "stream"], "new 1\nnew 2\n");
    let out = common::finish_within(
        follower,
        Duration::from_secs(30),
        "the follower stopping at --count",
    );
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "new 1\nnew 2\n");
}

#[test]
fn an_unreachable_broker_is_named_with_a_hint() {
    let out = Command::new(env!("CARGO_BIN_EXE_runnel"))
        .args(["topic", "list", "--bootstrap", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("127.0.0.1:1") && err.contains("runnel serve"),
        "{err}"
    );
}
