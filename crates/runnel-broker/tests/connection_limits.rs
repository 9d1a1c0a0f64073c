//! Issue 11, "Nothing a client sends may exhaust the broker": the limits that keep one
//! peer from holding connection slots, buffers or response memory, against an in-process
//! broker on port 0 over raw loopback TCP.
//!
//! - `connection-idle-ms-max` (Kafka's `connections.max.idle.ms`): a connection with no
//!   request in progress is closed; a held long-poll Fetch is not idle time.
//! - `frame-read-ms-max`: a frame must arrive whole within the bound once it has begun.
//! - `connections-per-ip-max` (Kafka's `max.connections.per.ip`): extra connections from
//!   one address are closed, the others served on.
//! - `fetch-bytes-max` (Kafka's `fetch.max.bytes`): a Fetch asking for `max_bytes` or
//!   `partition_max_bytes` of zero or less gets at most the cap, and at least one batch.
//!
//! Each test checks the behaviour, never how fast it happened; every wait is bounded.

mod common;

use std::io::{ErrorKind, Read};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::raw::{Client, request_frame};
use common::requests::{create_topic, produce_request, topic_name};
use common::{TempDir, TestBroker};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiVersionsRequest, BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::records::RecordBatchDecoder;
use runnel_broker::BrokerConfig;
use runnel_log::batch::build_batch;

const NONE: i16 = 0;

const API_VERSIONS_V: i16 = 3;
const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;
const CREATE_TOPICS_V: i16 = 7;

/// How long a test waits for something the broker should do before giving up.
const PATIENCE: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------
// Harness.
// ---------------------------------------------------------------------------------------

/// A broker in its own directory; the broker stops before the directory is removed.
struct Fixture {
    broker: TestBroker,
    _dir: TempDir,
}

impl Fixture {
    fn start_with(tag: &str, tweak: impl FnOnce(&mut BrokerConfig)) -> Fixture {
        let dir = TempDir::new(tag);
        let broker = TestBroker::start_with(&dir.0, tweak);
        Fixture { broker, _dir: dir }
    }

    fn connect(&self) -> Client {
        Client::connect(&self.broker)
    }

    /// A connection that has been answered once, so it is known to be admitted.
    fn served_connection(&self) -> Client {
        let mut c = self.connect();
        assert_api_versions_ok(&mut c);
        c
    }

    /// A fresh connection is still served, and the broker stops cleanly.
    fn finish(self) {
        let mut c = self.connect();
        assert_api_versions_ok(&mut c);
        drop(c);
        self.broker.stop();
    }
}

fn assert_api_versions_ok(c: &mut Client) {
    let r = c.call(&ApiVersionsRequest::default(), API_VERSIONS_V);
    assert_eq!(r.error_code, NONE, "{r:?}");
}

/// Whether the broker has closed `c`, looking without waiting and without consuming:
/// end of stream or a reset is closed; bytes waiting, or none yet, is open.
fn closed_now(c: &Client) -> bool {
    c.stream.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1];
    let r = c.stream.peek(&mut buf);
    c.stream.set_nonblocking(false).unwrap();
    match r {
        Ok(n) => n == 0,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => true,
        Err(e) => panic!("unexpected socket error: {e}"),
    }
}

/// Whether a fresh connection gets an ApiVersions answer (false: the broker closed it).
fn admitted(f: &Fixture) -> bool {
    use std::io::Write;
    let mut c = f.connect();
    let frame = request_frame(&ApiVersionsRequest::default(), API_VERSIONS_V, 1);
    if c.stream.write_all(&frame).is_err() {
        return false;
    }
    let mut size = [0u8; 4];
    match c.stream.read_exact(&mut size) {
        Ok(()) => true,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ) =>
        {
            false
        }
        Err(e) => panic!("neither answered nor closed: {e}"),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn produce(c: &mut Client, topic: &str, partition: i32, batch: &[u8]) {
    let r = c.call(&produce_request(topic, partition, batch, -1), PRODUCE_V);
    let code = r.responses[0].partition_responses[0].error_code;
    assert_eq!(code, NONE, "{r:?}");
}

/// A Fetch of `partitions` of `topic` from offset 0.
fn fetch_request(
    topic: &str,
    partitions: &[i32],
    max_bytes: i32,
    partition_max_bytes: i32,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    let mut t = FetchTopic::default();
    t.topic = topic_name(topic);
    t.partitions = partitions
        .iter()
        .map(|&i| {
            let mut p = FetchPartition::default();
            p.partition = i;
            p.fetch_offset = 0;
            p.partition_max_bytes = partition_max_bytes;
            p
        })
        .collect();
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = min_bytes;
    req.max_bytes = max_bytes;
    req.topics = vec![t];
    req
}

/// The record bytes of one fetched partition, checked to be whole batches that decode;
/// returns how many batches.
fn whole_batches(p: &PartitionData) -> usize {
    assert_eq!(p.error_code, NONE, "{p:?}");
    let records = p.records.clone().expect("records are never null");
    let mut count = 0;
    let mut pos = 0usize;
    while pos < records.len() {
        let head = records
            .get(pos + 8..pos + 12)
            .expect("a whole batch header");
        let batch_length = i32::from_be_bytes(head.try_into().unwrap());
        pos += 12 + usize::try_from(batch_length).expect("a positive batch length");
        count += 1;
    }
    assert_eq!(pos, records.len(), "only whole batches are served");
    RecordBatchDecoder::decode_all(&mut records.clone()).expect("fetched batches decode");
    count
}

fn record_bytes(r: &FetchResponse) -> usize {
    r.responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.records.as_ref().map_or(0, Bytes::len))
        .sum()
}

// ---------------------------------------------------------------------------------------
// Idle connections.
// ---------------------------------------------------------------------------------------

/// A silent connection is closed after `connection-idle-ms-max`, while a connection that
/// keeps sending requests is served on, and one whose Fetch the broker holds for longer
/// than the idle limit is not idle: it gets its answer, and only then becomes idle.
#[test]
fn idle_connection_is_closed_but_active_and_long_polling_ones_are_not() {
    const IDLE_MS: u32 = 500;
    const HOLD_MS: i32 = 5_000;
    let f = Fixture::start_with("idle", |c| c.connection_idle_ms_max = IDLE_MS);
    let mut active = f.served_connection();
    create_topic(&mut active, "quiet", 1, &[], CREATE_TOPICS_V);

    let idle = f.served_connection();
    let mut polling = f.served_connection();
    polling.stream.set_read_timeout(Some(PATIENCE)).unwrap();
    // Nothing to read: the broker holds the Fetch until max_wait_ms.
    let held = polling.send(
        &fetch_request("quiet", &[0], 1 << 20, 1 << 20, HOLD_MS, 1),
        FETCH_V,
    );

    let deadline = Instant::now() + PATIENCE;
    while !closed_now(&idle) {
        assert!(
            Instant::now() < deadline,
            "a connection silent for {PATIENCE:?} is still open (idle limit {IDLE_MS} ms)"
        );
        assert_api_versions_ok(&mut active);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !closed_now(&polling),
        "the connection waiting on a held Fetch was closed as idle"
    );

    let r = polling.receive::<FetchRequest>(FETCH_V, held);
    assert_eq!(r.error_code, NONE, "{r:?}");
    assert_eq!(record_bytes(&r), 0, "{r:?}");
    // Answered and silent from now on: idle like any other.
    polling.expect_closed("a connection silent after its long poll was answered");
    // `active` fell silent while this test waited on the long poll, so it is gone too;
    // `finish` checks that new connections are served.
    drop(active);
    f.finish();
}

// ---------------------------------------------------------------------------------------
// Slow frames.
// ---------------------------------------------------------------------------------------

/// A frame announcing 1 MiB of which only a few bytes arrive is closed once
/// `frame-read-ms-max` has passed; so is one trickling in a byte at a time. Silence
/// before a frame's first byte is idle time, not frame time: a request sent late, in
/// two parts, is served.
#[test]
fn partial_frame_is_closed_after_the_frame_deadline() {
    const FRAME_MS: u32 = 1_000;
    let f = Fixture::start_with("frame-deadline", |c| c.frame_read_ms_max = FRAME_MS);
    let mut healthy = f.served_connection();

    let mut partial = f.connect();
    let mut head = (1i32 << 20).to_be_bytes().to_vec();
    head.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1, 0, 0]);
    partial.send_raw(&head);
    assert_api_versions_ok(&mut healthy);
    partial.expect_closed("a 1 MiB frame of which 10 bytes arrived");
    assert_api_versions_ok(&mut healthy);

    let mut trickle = f.connect();
    trickle.send_raw(&(1i32 << 20).to_be_bytes());
    let deadline = Instant::now() + PATIENCE;
    loop {
        use std::io::Write;
        // A write fails once the broker has closed the connection and reset it.
        if closed_now(&trickle) || trickle.stream.write_all(&[0]).is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a frame trickling in for {PATIENCE:?} is still being read (limit {FRAME_MS} ms)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_api_versions_ok(&mut healthy);

    let mut late = f.connect();
    std::thread::sleep(Duration::from_millis(u64::from(FRAME_MS) * 3 / 2));
    let frame = request_frame(&ApiVersionsRequest::default(), API_VERSIONS_V, 7);
    late.send_raw(&frame[..6]);
    std::thread::sleep(Duration::from_millis(50));
    late.send_raw(&frame[6..]);
    let r = late.receive::<ApiVersionsRequest>(API_VERSIONS_V, 7);
    assert_eq!(r.error_code, NONE, "{r:?}");
    f.finish();
}

// ---------------------------------------------------------------------------------------
// Connections per address.
// ---------------------------------------------------------------------------------------

/// Beyond `connections-per-ip-max` from one address, a new connection is closed at once;
/// the ones already open are served on, and a slot frees when one of them closes.
#[test]
fn connections_beyond_the_per_address_cap_are_refused() {
    const PER_IP: usize = 3;
    let f = Fixture::start_with("per-ip", |c| c.connections_per_ip_max = PER_IP);
    let mut open: Vec<Client> = (0..PER_IP).map(|_| f.served_connection()).collect();

    let mut extra = f.connect();
    extra.expect_closed("a connection beyond the per-address cap");
    assert!(
        !admitted(&f),
        "another connection beyond the cap was served"
    );
    for c in &mut open {
        assert_api_versions_ok(c);
    }

    // The broker counts a connection out once it sees it close.
    drop(open.pop());
    let deadline = Instant::now() + PATIENCE;
    while !admitted(&f) {
        assert!(
            Instant::now() < deadline,
            "no slot freed within {PATIENCE:?} of a connection closing"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for c in &mut open {
        assert_api_versions_ok(c);
    }
    drop(open);
    let deadline = Instant::now() + PATIENCE;
    while !admitted(&f) {
        assert!(Instant::now() < deadline, "slots not given back");
        std::thread::sleep(Duration::from_millis(20));
    }
    f.finish();
}

// ---------------------------------------------------------------------------------------
// Fetch size.
// ---------------------------------------------------------------------------------------

/// A Fetch whose `max_bytes` or `partition_max_bytes` is zero, negative or above
/// `fetch-bytes-max` gets at most the cap in records, filled with whole batches; and a
/// first batch larger than the cap still comes back whole (KIP-74), so consumers make
/// progress.
#[test]
fn fetch_is_bounded_by_fetch_bytes_max_and_returns_at_least_one_batch() {
    const CAP: usize = 64 << 10;
    const BATCHES: usize = 12;
    let f = Fixture::start_with("fetch-cap", |c| c.fetch_bytes_max = CAP);
    let mut c = f.served_connection();
    create_topic(&mut c, "full", 2, &[], CREATE_TOPICS_V);
    let value = vec![b'x'; 12 << 10];
    let batch = build_batch(&[(None, Some(&value[..]))], now_ms());
    for partition in 0..2 {
        for _ in 0..BATCHES {
            produce(&mut c, "full", partition, &batch);
        }
    }
    assert!(
        BATCHES * batch.len() > 2 * CAP,
        "each partition holds more than the cap"
    );

    for (max_bytes, partition_max) in [
        (0, i32::MAX),
        (-1, i32::MAX),
        (i32::MIN, i32::MAX),
        (i32::MAX, i32::MAX),
        (0, 0),
        (-1, -1),
        (i32::MAX, 0),
    ] {
        let req = fetch_request("full", &[0, 1], max_bytes, partition_max, 0, 0);
        let r = c.call(&req, FETCH_V);
        assert_eq!(r.error_code, NONE, "{r:?}");
        let what = format!("max_bytes {max_bytes}, partition_max_bytes {partition_max}");
        let parts = &r.responses[0].partitions;
        let batches: Vec<usize> = parts.iter().map(whole_batches).collect();
        let total = record_bytes(&r);
        assert!(
            total <= CAP,
            "{what}: {total} record bytes over the {CAP}-byte cap"
        );
        assert!(batches[0] >= 1, "{what}: not even one batch");
        // Filled up to the cap, not stopped after one batch.
        assert!(
            total + batch.len() > CAP,
            "{what}: only {total} bytes ({batches:?} batches) where {CAP} fit"
        );
    }

    // An explicit, smaller partition limit still holds.
    let req = fetch_request("full", &[0, 1], 0, (2 * batch.len()) as i32, 0, 0);
    let r = c.call(&req, FETCH_V);
    let batches: Vec<usize> = r.responses[0]
        .partitions
        .iter()
        .map(whole_batches)
        .collect();
    assert_eq!(batches, vec![2, 2], "{r:?}");

    create_topic(&mut c, "big", 1, &[], CREATE_TOPICS_V);
    let big_value = vec![b'y'; 2 * CAP];
    let big = build_batch(&[(None, Some(&big_value[..]))], now_ms());
    produce(&mut c, "big", 0, &big);
    produce(&mut c, "big", 0, &batch);
    for (max_bytes, partition_max) in [(0, 0), (-1, i32::MAX), (1024, 1024)] {
        let r = c.call(
            &fetch_request("big", &[0], max_bytes, partition_max, 0, 0),
            FETCH_V,
        );
        let p = &r.responses[0].partitions[0];
        assert_eq!(whole_batches(p), 1, "the first batch alone, whole");
        assert_eq!(p.records.as_ref().map(Bytes::len), Some(big.len()));
    }
    f.finish();
}
