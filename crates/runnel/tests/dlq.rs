//! `runnel dlq list|replay` end to end: dead letters written by hand with the headers a
//! runnel-services runtime puts on them, against a `runnel serve` on port 0.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Broker, TempDir};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// When the dead letters below were written: 2023-11-14T22:13:20.123Z.
const DEAD_AT_MS: i64 = 1_700_000_000_123;

struct Dlq {
    broker: Broker,
    _dir: TempDir,
}

/// A dead letter to write: the original record, and the error, kind, source
/// partition, source offset and attempts for its runnel_dlq_* headers.
struct Letter {
    key: Option<&'static [u8]>,
    value: &'static [u8],
    headers: &'static [(&'static str, &'static [u8])],
    dlq: [&'static str; 5],
}

/// A record as read back, owned.
#[derive(Debug)]
struct Record {
    partition: i32,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }
}

impl Dlq {
    /// A broker with topic `orders` (2 partitions) and `billing.dlq` holding three
    /// dead letters: offset 0 text from orders/1@41, offset 1 binary from orders/0@7
    /// with a two-line error, offset 2 with no key from orders/1@42.
    fn start(tag: &str) -> Dlq {
        let dir = TempDir::new(tag);
        let d = Dlq {
            broker: Broker::start(&dir.0),
            _dir: dir,
        };
        d.ok(&["topic", "create", "orders", "--partitions", "2"]);
        d.ok(&["topic", "create", "billing.dlq", "--partitions", "1"]);
        let letters = [
            Letter {
                key: Some(b"order-1"),
                value: b"{\"total\":-1}",
                headers: &[("trace", b"abc"), ("content-type", b"json")],
                dlq: ["invalid total", "permanent", "1", "41", "1"],
            },
            Letter {
                key: Some(b"order-2"),
                value: &[0xff, 0x00, 0x01],
                headers: &[("trace", b"def")],
                dlq: ["db down\nretry later", "transient", "0", "7", "5"],
            },
            Letter {
                key: None,
                value: b"plain",
                headers: &[],
                dlq: ["customer unknown", "not_yet", "1", "42", "3"],
            },
        ];
        let producer: BaseProducer = d.client().create().unwrap();
        for letter in letters {
            let [error, kind, partition, offset, attempts] = letter.dlq;
            let time = DEAD_AT_MS.to_string();
            let mut headers = OwnedHeaders::new();
            let dlq: [(&str, &[u8]); 8] = [
                ("runnel_dlq_error", error.as_bytes()),
                ("runnel_dlq_error_kind", kind.as_bytes()),
                ("runnel_dlq_topic", b"orders"),
                ("runnel_dlq_partition", partition.as_bytes()),
                ("runnel_dlq_offset", offset.as_bytes()),
                ("runnel_dlq_attempts", attempts.as_bytes()),
                ("runnel_dlq_service", b"billing"),
                ("runnel_dlq_time_ms", time.as_bytes()),
            ];
            for (k, v) in letter.headers.iter().chain(&dlq) {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(*v),
                });
            }
            let mut record = BaseRecord::<[u8], [u8]>::to("billing.dlq")
                .payload(letter.value)
                .headers(headers);
            if let Some(k) = letter.key {
                record = record.key(k);
            }
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
        d
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.broker.addr)
            .set("log_level", "3");
        c
    }

    /// Runs `runnel ARGS --bootstrap ADDR`, with a deadline.
    fn run(&self, args: &[&str]) -> Output {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(args)
            .args(["--bootstrap", &self.broker.addr])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().flush().unwrap();
        common::finish_within(child, Duration::from_secs(60), &format!("runnel {args:?}"))
    }

    /// Runs and expects success; returns standard output and standard error.
    fn ok(&self, args: &[&str]) -> (String, String) {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "runnel {args:?}: {}\n{err}",
            out.status
        );
        (String::from_utf8(out.stdout).unwrap(), err)
    }

    /// Runs and expects exit `code`; returns standard error.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(code), "runnel {args:?}: {err}");
        err
    }

    /// Every record of `topic` (all partitions), by partition then offset; reads up to
    /// the high watermarks seen first, with a deadline.
    fn records(&self, topic: &str) -> Vec<Record> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", "dlq-test")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut ends = BTreeMap::new();
        let mut tpl = TopicPartitionList::new();
        for p in md.topics()[0].partitions() {
            let (_, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                .unwrap();
            if high > 0 {
                ends.insert(p.id(), high);
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .unwrap();
            }
        }
        let mut out = Vec::new();
        if ends.is_empty() {
            return Vec::new();
        }
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ends.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{topic}: still waiting for {ends:?}"
            );
            let m = match consumer.poll(Duration::from_millis(200)) {
                None | Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(m) => m.unwrap(),
            };
            if m.offset() + 1 >= ends[&m.partition()] {
                ends.remove(&m.partition());
            }
            out.push((
                m.offset(),
                Record {
                    partition: m.partition(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: m
                        .headers()
                        .map(|hs| {
                            hs.iter()
                                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                                .collect()
                        })
                        .unwrap_or_default(),
                },
            ));
        }
        out.sort_by_key(|(o, r)| (r.partition, *o));
        out.into_iter().map(|(_, r)| r).collect()
    }
}

#[test]
fn list_prints_one_line_per_dead_letter_with_source_error_and_previews() {
    let d = Dlq::start("dlq-list");
    let (out, err) = d.ok(&["dlq", "list", "billing"]);
    assert!(err.contains("3 dead letter(s) in billing.dlq"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "a title and three rows:\n{out}");
    let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        cols(lines[0]),
        [
            "DLQ", "SOURCE", "ATTEMPTS", "KIND", "TIME", "KEY", "VALUE", "ERROR"
        ]
    );
    assert_eq!(
        cols(lines[1]),
        [
            "0",
            "orders/1@41",
            "1",
            "permanent",
            "2023-11-14T22:13:20.123Z",
            "order-1",
            "{\"total\":-1}",
            "invalid",
            "total"
        ]
    );
    // Binary values show as hex; a newline in the error stays on one line.
    assert!(lines[2].starts_with("1 "), "{out}");
    assert!(lines[2].contains("orders/0@7"), "{out}");
    assert!(lines[2].contains(" 0xff0001 "), "{out}");
    assert!(lines[2].ends_with("db down\\nretry later"), "{out}");
    assert!(lines[3].contains(" null "), "a null key: {out}");
    assert!(lines[3].contains("not_yet"), "{out}");

    let (limited, err) = d.ok(&["dlq", "list", "billing", "--limit", "2"]);
    assert_eq!(limited.lines().count(), 3, "{limited}");
    assert!(err.contains("--limit"), "{err}");
}

#[test]
fn list_as_json_carries_every_field_and_the_full_value() {
    let d = Dlq::start("dlq-json");
    let (out, _) = d.ok(&["dlq", "list", "billing", "--format", "json"]);
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{out}");
    let first = &rows[0];
    for (field, want) in [
        ("dlq_topic", serde_json::json!("billing.dlq")),
        ("dlq_partition", 0.into()),
        ("dlq_offset", 0.into()),
        ("dlq_position", "0".into()),
        ("service", "billing".into()),
        ("source_topic", "orders".into()),
        ("source_partition", 1.into()),
        ("source_offset", 41.into()),
        ("attempts", 1.into()),
        ("error_kind", "permanent".into()),
        ("error", "invalid total".into()),
        ("time_ms", DEAD_AT_MS.into()),
        ("time", "2023-11-14T22:13:20.123Z".into()),
        ("key", "order-1".into()),
        ("key_encoding", "utf8".into()),
        ("value", "{\"total\":-1}".into()),
        ("value_encoding", "utf8".into()),
    ] {
        assert_eq!(first[field], want, "{field} in {first}");
    }
    assert!(first["dlq_timestamp_ms"].is_i64(), "{first}");
    assert_eq!(
        first["headers"],
        serde_json::json!([
            {"name": "trace", "value": "abc", "encoding": "utf8"},
            {"name": "content-type", "value": "json", "encoding": "utf8"},
        ]),
        "only the original headers: the runnel_dlq_* ones are fields"
    );
    assert_eq!(rows[1]["value"], "/wAB", "0xff 0x00 0x01 in base64");
    assert_eq!(rows[1]["value_encoding"], "base64");
    assert_eq!(rows[1]["error"], "db down\nretry later");
    assert_eq!(rows[2]["key"], serde_json::Value::Null);
    assert_eq!(rows[2]["key_encoding"], serde_json::Value::Null);
}

#[test]
fn an_empty_dlq_is_success_and_a_missing_one_is_exit_3() {
    let d = Dlq::start("dlq-missing");
    d.ok(&["topic", "create", "idle.dlq", "--partitions", "1"]);
    let (out, err) = d.ok(&["dlq", "list", "idle"]);
    assert_eq!(out, "");
    assert!(err.contains("no dead letters in idle.dlq"), "{err}");
    let (out, err) = d.ok(&["dlq", "replay", "idle", "--all"]);
    assert_eq!(out, "");
    assert!(err.contains("nothing to replay"), "{err}");

    let err = d.fails(&["dlq", "list", "nosuch"], 3);
    assert!(err.contains("\"nosuch.dlq\""), "{err}");
    let err = d.fails(&["dlq", "replay", "nosuch", "--offset", "0"], 3);
    assert!(err.contains("\"nosuch.dlq\""), "{err}");
    let err = d.fails(&["dlq", "list", "billing.dlq"], 3);
    assert!(err.contains("without .dlq"), "{err}");
}

#[test]
fn replay_of_one_offset_republishes_it_to_its_source_without_dlq_headers() {
    let d = Dlq::start("dlq-replay-one");
    let (out, err) = d.ok(&["dlq", "replay", "billing", "--offset", "1"]);
    assert_eq!(out.trim(), "replayed billing.dlq@1 -> orders/0@0", "{out}");
    assert!(
        err.contains("stay in billing.dlq") && err.contains("dlq list billing"),
        "{err}"
    );
    let source = d.records("orders");
    assert_eq!(source.len(), 1, "{source:?}");
    let r = &source[0];
    assert_eq!(r.partition, 0, "back to the partition it came from");
    assert_eq!(r.key.as_deref(), Some(&b"order-2"[..]));
    assert_eq!(r.value.as_deref(), Some(&[0xff, 0x00, 0x01][..]));
    assert_eq!(
        r.headers,
        vec![
            ("trace".to_string(), Some(b"def".to_vec())),
            (
                "runnel_replayed_from".to_string(),
                Some(b"billing.dlq@1".to_vec())
            ),
        ]
    );
    // Kafka logs are append-only: the dead letter is still listed.
    let (listed, _) = d.ok(&["dlq", "list", "billing"]);
    assert_eq!(listed.lines().count(), 4, "{listed}");
    assert_eq!(d.records("billing.dlq").len(), 3);
}

#[test]
fn replay_all_republishes_every_dead_letter_in_dlq_order() {
    let d = Dlq::start("dlq-replay-all");
    let (out, _) = d.ok(&["dlq", "replay", "billing", "--all"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.contains("replayed billing.dlq@0 -> orders/1@0"),
        "{out}"
    );
    assert!(
        out.contains("replayed billing.dlq@2 -> orders/1@1"),
        "{out}"
    );
    let source = d.records("orders");
    let markers: Vec<&[u8]> = source
        .iter()
        .map(|r| r.header("runnel_replayed_from").unwrap())
        .collect();
    assert_eq!(
        markers,
        [&b"billing.dlq@1"[..], b"billing.dlq@0", b"billing.dlq@2"]
    );
    for r in &source {
        assert!(
            r.headers.iter().all(|(k, _)| !k.starts_with("runnel_dlq_")),
            "{r:?}"
        );
    }
    let first = &source[1];
    assert_eq!(first.key.as_deref(), Some(&b"order-1"[..]));
    assert_eq!(first.value.as_deref(), Some(&b"{\"total\":-1}"[..]));
    assert_eq!(first.header("trace"), Some(&b"abc"[..]));
    assert_eq!(first.header("content-type"), Some(&b"json"[..]));
    assert_eq!(source[2].key, None, "a null key stays null");
}

#[test]
fn dry_runs_and_missing_offsets_replay_nothing() {
    let d = Dlq::start("dlq-nothing");
    let (out, err) = d.ok(&["dlq", "replay", "billing", "--all", "--dry-run"]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.contains("would replay billing.dlq@1 -> orders/0"),
        "{out}"
    );
    assert!(err.contains("nothing was sent"), "{err}");

    let err = d.fails(&["dlq", "replay", "billing", "--offset", "0,7"], 3);
    assert!(
        err.contains("offset 7") && !err.contains("offset 0") && err.contains("0 to 2"),
        "names only the missing one and what the DLQ holds: {err}"
    );
    assert!(err.contains("nothing was replayed"), "{err}");
    let err = d.fails(&["dlq", "replay", "billing", "--offset", "3:0"], 3);
    assert!(err.contains("3:0"), "{err}");
    let err = d.fails(
        &[
            "dlq",
            "replay",
            "billing",
            "--all",
            "--to-topic",
            "no-such-topic",
        ],
        3,
    );
    assert!(err.contains("no-such-topic"), "{err}");
    d.fails(&["dlq", "replay", "billing"], 2);
    d.fails(&["dlq", "replay", "billing", "--offset", "x"], 2);
    d.fails(&["dlq", "replay", "billing", "--offset", "0", "--all"], 2);
    assert!(d.records("orders").is_empty(), "nothing was replayed");
}

#[test]
fn replay_to_another_topic_partitions_by_key() {
    let d = Dlq::start("dlq-to-topic");
    d.ok(&["topic", "create", "orders-retry", "--partitions", "3"]);
    let (out, _) = d.ok(&[
        "dlq",
        "replay",
        "billing",
        "--offset",
        "0",
        "--offset",
        "2",
        "--to-topic",
        "orders-retry",
    ]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(d.records("orders").is_empty());
    let moved = d.records("orders-retry");
    assert_eq!(moved.len(), 2, "{moved:?}");
    assert!(
        moved
            .iter()
            .any(|r| r.header("runnel_replayed_from") == Some(b"billing.dlq@0"))
    );
}
