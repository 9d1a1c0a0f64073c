//! kcat 1.7.1 (librdkafka 2.0.2, Debian): the old librdkafka, with its feature probes.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use runnel_log::{Log, LogConfig, Offset, PartitionId};

const T: Duration = Duration::from_secs(60);

fn kcat_cmd(b: &TestBroker) -> Command {
    let mut c = Command::new(kcat());
    c.arg("-b").arg(b.bootstrap());
    c
}

fn produce(b: &TestBroker, topic: &str, args: &[&str], input: &str) {
    run_ok(
        kcat_cmd(b).args(["-P", "-t", topic]).args(args),
        input.as_bytes(),
        T,
    );
}

fn consume(b: &TestBroker, topic: &str, args: &[&str]) -> String {
    run_ok(
        kcat_cmd(b)
            .args(["-C", "-t", topic, "-o", "beginning", "-e", "-q"])
            .args(args),
        b"",
        T,
    )
}

#[test]
fn kcat_produces_with_auto_create_and_consumes_to_the_end() {
    let dir = TempDir::new("kcat-basic");
    let b = TestBroker::start(&dir.0);
    produce(&b, "new1", &[], "a\nb\nc\n");
    assert_eq!(consume(&b, "new1", &[]), "a\nb\nc\n");
    let meta = run_ok(kcat_cmd(&b).args(["-L", "-J"]), b"", T);
    assert!(meta.contains("\"topic\":\"new1\""), "{meta}");
    assert!(
        meta.contains(&format!("\"name\":\"{}\"", b.bootstrap())),
        "{meta}"
    );
    let listing = run_ok(kcat_cmd(&b).arg("-L"), b"", T);
    assert!(listing.contains("1 brokers:"), "{listing}");
    assert!(
        listing.contains("topic \"new1\" with 1 partitions"),
        "{listing}"
    );
}

#[test]
fn kcat_keys_headers_and_null_values_round_trip() {
    let dir = TempDir::new("kcat-keys");
    let b = TestBroker::start(&dir.0);
    produce(
        &b,
        "t1",
        &["-K:", "-H", "h1=v1", "-H", "h2=v2"],
        "k1:v1\nk2:v2\n",
    );
    // -Z sends an empty value as NULL.
    produce(&b, "t1", &["-K:", "-Z"], "k3:\n");
    let out = consume(&b, "t1", &["-Z", "-f", "%k|%s|%h|%o\n"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "k1|v1|h1=v1,h2=v2|0", "{out}");
    assert_eq!(lines[1], "k2|v2|h1=v1,h2=v2|1", "{out}");
    assert_eq!(lines[2], "k3|NULL||2", "{out}");
}

#[test]
fn kcat_compression_codecs_are_stored_as_sent_and_read_back() {
    let dir = TempDir::new("kcat-codecs");
    let b = TestBroker::start(&dir.0);
    let line = "runnel ".repeat(200);
    let input: String = (0..20).map(|i| format!("{i} {line}\n")).collect();
    // lz4 needs FindCoordinator (librdkafka < 2.11.1 gates it on the group APIs), which
    // lands with consumer groups; the other three are negotiated today.
    let codecs = [("gzip", 1u8), ("snappy", 2), ("zstd", 4)];
    for (codec, _) in codecs {
        produce(&b, &format!("z-{codec}"), &["-z", codec], &input);
        assert_eq!(consume(&b, &format!("z-{codec}"), &[]), input, "{codec}");
    }
    b.stop();
    let log = Log::open(LogConfig::new(&dir.0)).unwrap();
    for (codec, id) in codecs {
        let p = log
            .partition(&format!("z-{codec}"), PartitionId(0))
            .unwrap();
        let r = p.read(Offset(0), 1 << 20).unwrap();
        let h = runnel_log::batch::BatchHeader::parse(&r.bytes).unwrap();
        assert_eq!(
            h.compression(),
            id,
            "{codec} batches are stored compressed, as sent"
        );
    }
}

#[test]
fn kcat_list_offsets_earliest_latest_and_by_time() {
    let dir = TempDir::new("kcat-offsets");
    let b = TestBroker::start(&dir.0);
    produce(&b, "o", &[], "x\ny\nz\n");
    let q = run_ok(kcat_cmd(&b).args(["-Q", "-t", "o:0:0"]), b"", T);
    assert!(q.contains("offset 0"), "{q}");
    let tail = run_ok(
        kcat_cmd(&b).args(["-C", "-t", "o", "-o", "-1", "-e", "-q"]),
        b"",
        T,
    );
    assert_eq!(tail, "z\n");
    let future = run_ok(
        kcat_cmd(&b).args(["-Q", "-t", "o:0:99999999999999"]),
        b"",
        T,
    );
    assert!(future.contains("offset -1"), "{future}");
}

#[test]
fn kcat_acks_zero_keeps_the_connection_in_step() {
    let dir = TempDir::new("kcat-acks0");
    let b = TestBroker::start(&dir.0);
    let input: String = (0..500).map(|i| format!("m{i}\n")).collect();
    produce(&b, "a0", &["-X", "acks=0"], &input);
    // acks=0 gets no response; the producer's connection must not be confused by one.
    produce(&b, "a0", &["-X", "acks=0"], "last\n");
    let out = consume(&b, "a0", &[]);
    assert_eq!(out.lines().count(), 501, "{out}");
}
