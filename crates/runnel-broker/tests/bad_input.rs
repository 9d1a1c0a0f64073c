//! Bad input over raw TCP, against an in-process broker on port 0.
//!
//! Each test sends one kind of bad input and checks that the broker answers what the
//! protocol brief (`shared/reference/kafka-protocol.md` §2.2, §3.2, §6) allows: an error
//! code, the ApiVersions fallback, or closing *that* connection, while another
//! connection opened before it keeps being served. Every test ends by producing and
//! fetching a record on a fresh connection, and by checking that no broker thread
//! panicked (a panic inside a connection task would otherwise look like a clean close).
//!
//! Requests are built with `kafka-protocol`'s client half; batches with
//! `runnel_log::batch::build_batch`, then corrupted by hand. Every read has a deadline.

mod common;

use std::net::Shutdown;
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Buf;
use common::raw::{Client, framed, request_frame};
use common::requests::{
    create_topic, fetch_values, list_offsets_request, log_end, produce_request, topic_name,
};
use common::{TempDir, TestBroker};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, InitProducerIdRequest, MetadataRequest,
    MetadataResponse, ProduceRequest, ProducerId, ResponseHeader,
};
use kafka_protocol::protocol::Decodable;
use runnel_broker::SUPPORTED;
use runnel_log::batch::{KeyValue, build_batch, seal_crc};

// Error codes, as numbered in the brief's §10.
const NONE: i16 = 0;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_REQUIRED_ACKS: i16 = 21;
const UNSUPPORTED_VERSION: i16 = 35;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const INVALID_RECORD: i16 = 87;

// The versions the tests speak: what current librdkafka and kafka-python negotiate.
const API_VERSIONS_V: i16 = 3;
const METADATA_V: i16 = 12;
const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;
const LIST_OFFSETS_V: i16 = 7;
const INIT_PRODUCER_ID_V: i16 = 4;
const CREATE_TOPICS_V: i16 = 7;

// ---------------------------------------------------------------------------------------
// Harness: a broker that must not panic, and a blocking client with deadlines.
// ---------------------------------------------------------------------------------------

/// Panics seen on threads that are not test threads: the broker's runtime thread is
/// unnamed and its workers are `tokio-runtime-worker`. Tokio swallows a panic in a
/// connection task (the server never inspects the join result), so count them here.
static BROKER_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_broker_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            let on_broker_thread = thread.name().is_none_or(|n| n.starts_with("tokio"));
            if on_broker_thread {
                BROKER_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// A broker in its own directory. Field order is drop order: the broker stops before
/// its directory is removed.
struct Fixture {
    broker: TestBroker,
    _dir: TempDir,
}

impl Fixture {
    fn start(tag: &str) -> Fixture {
        Self::start_with(tag, |_| {})
    }

    fn start_with(tag: &str, tweak: impl FnOnce(&mut runnel_broker::BrokerConfig)) -> Fixture {
        count_broker_panics();
        let dir = TempDir::new(tag);
        let broker = TestBroker::start_with(&dir.0, tweak);
        Fixture { broker, _dir: dir }
    }

    fn connect(&self) -> Client {
        Client::connect(&self.broker)
    }

    /// A connection that has already been answered once, so it is known to be served.
    fn healthy_connection(&self) -> Client {
        let mut c = self.connect();
        assert_api_versions_ok(&mut c);
        c
    }

    /// The broker still takes a record and serves it back, on a fresh connection; no
    /// broker thread panicked; and it stops cleanly.
    fn finish(self) {
        let mut c = self.connect();
        let topic = "survivor";
        create_topic(&mut c, topic, 1, &[], CREATE_TOPICS_V);
        let before = log_end(&mut c, topic, 0);
        let batch = build_batch(&[(Some(b"k"), Some(b"still serving"))], now_ms());
        let p = produce_one(&mut c, topic, 0, &batch, -1);
        assert_eq!(p.error_code, NONE, "{p:?}");
        assert_eq!(p.base_offset, before);
        let values = fetch_values(&mut c, topic, 0, before, FETCH_V);
        assert_eq!(values, vec![b"still serving".to_vec()]);
        assert_eq!(
            BROKER_PANICS.load(Ordering::SeqCst),
            0,
            "a broker thread panicked (see the output above)"
        );
        self.broker.stop();
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------
// Request builders and one-call helpers.
// ---------------------------------------------------------------------------------------

fn assert_api_versions_ok(c: &mut Client) {
    let r = c.call(&ApiVersionsRequest::default(), API_VERSIONS_V);
    assert_eq!(r.error_code, NONE);
    assert!(
        r.api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::Produce as i16),
        "{r:?}"
    );
}

fn metadata(c: &mut Client, topic: &str, auto_create: bool) -> MetadataResponse {
    let mut t = MetadataRequestTopic::default();
    t.name = Some(topic_name(topic));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = auto_create;
    c.call(&req, METADATA_V)
}

/// Produces one batch to one partition and returns that partition's answer.
fn produce_one(
    c: &mut Client,
    topic: &str,
    partition: i32,
    batch: &[u8],
    acks: i16,
) -> PartitionProduceResponse {
    let r = c.call(&produce_request(topic, partition, batch, acks), PRODUCE_V);
    assert_eq!(r.responses.len(), 1, "{r:?}");
    assert_eq!(r.responses[0].name.0.as_str(), topic);
    let parts = &r.responses[0].partition_responses;
    assert_eq!(parts.len(), 1, "{r:?}");
    assert_eq!(parts[0].index, partition);
    parts[0].clone()
}

fn init_producer_id(c: &mut Client, producer_id: i64, epoch: i16) -> (i64, i16) {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = None;
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(producer_id);
    req.producer_epoch = epoch;
    let r = c.call(&req, INIT_PRODUCER_ID_V);
    assert_eq!(r.error_code, NONE, "{r:?}");
    (r.producer_id.0, r.producer_epoch)
}

/// A valid batch of `records`, stamped as idempotent: `build_batch` writes -1 into the
/// producer fields, so set them (bytes 43..57, covered by the CRC) and reseal.
fn idempotent_batch(records: &[KeyValue<'_>], producer_id: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let mut b = build_batch(records, now_ms());
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    seal_crc(&mut b);
    b
}

fn small_batch(value: &[u8]) -> Vec<u8> {
    build_batch(&[(None, Some(value))], now_ms())
}

/// A Produce frame whose body is exactly `body_bytes` long: the value grows until the
/// encoded request reaches the length (the size varints stay 2 bytes in this range).
fn produce_frame_of(topic: &str, body_bytes: usize, correlation_id: i32) -> Vec<u8> {
    let mut value_len = body_bytes / 2;
    for _ in 0..8 {
        let batch = small_batch(&vec![b'x'; value_len]);
        let frame = request_frame(
            &produce_request(topic, 0, &batch, -1),
            PRODUCE_V,
            correlation_id,
        );
        let body = frame.len() - 4;
        if body == body_bytes {
            return frame;
        }
        value_len = (value_len as isize + body_bytes as isize - body as isize) as usize;
    }
    panic!("could not build a Produce frame of exactly {body_bytes} bytes");
}

// ---------------------------------------------------------------------------------------
// Framing.
// ---------------------------------------------------------------------------------------

/// Frames that cannot be requests: the size prefix is negative, smaller than a request
/// header, or absurd; or the body is not a request of any known API.
#[test]
fn garbage_frames_close_only_their_own_connection() {
    let f = Fixture::start("garbage");
    let mut healthy = f.healthy_connection();
    let garbage: &[(&str, Vec<u8>)] = &[
        ("negative size", vec![0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4]),
        ("size -1", vec![0xff, 0xff, 0xff, 0xff]),
        ("size 0", vec![0, 0, 0, 0]),
        ("size 3, below a request prefix", vec![0, 0, 0, 3, 0, 18, 0]),
        (
            "absurd size, beyond the frame limit",
            vec![0x7f, 0xff, 0xff, 0xff, 0, 18, 0, 3],
        ),
        (
            "random bytes with an unknown api key",
            framed(&[
                0x7f, 0x3a, 0x91, 0x0c, 0x55, 0xe2, 0x17, 0xc8, 0x03, 0x9d, 0x44, 0xfe,
            ]),
        ),
        (
            "Metadata header whose client id runs past the frame",
            framed(&[0, 3, 0, 4, 0, 0, 0, 9, 0x7f, 0xff, b'a']),
        ),
    ];
    for (what, bytes) in garbage {
        let mut bad = f.connect();
        bad.send_raw(bytes);
        bad.expect_closed(what);
        assert_api_versions_ok(&mut healthy);
    }
    f.finish();
}

/// A frame that announces 100 bytes and sends 10 keeps only its own connection waiting;
/// when the client half-closes, the broker closes that connection and answers nothing.
#[test]
fn truncated_frame_closes_its_connection_on_half_close_and_blocks_no_other() {
    let f = Fixture::start("truncated");
    let mut healthy = f.healthy_connection();
    let mut bad = f.connect();
    let mut partial = 100i32.to_be_bytes().to_vec();
    partial.extend_from_slice(&[0, 18, 0, 3, 0, 0, 0, 1, 0, 0]);
    bad.send_raw(&partial);
    // While the broker waits for the other 90 bytes, other connections are served.
    assert_api_versions_ok(&mut healthy);
    let m = metadata(&mut healthy, "truncated-neighbour", true);
    assert_eq!(m.topics[0].error_code, NONE, "{m:?}");
    bad.stream.shutdown(Shutdown::Write).unwrap();
    bad.expect_closed("frame cut short by a half-close");
    assert_api_versions_ok(&mut healthy);
    f.finish();
}

/// `frame_bytes_max` is Kafka's `socket.request.max.bytes`: a frame of exactly the limit
/// is served, one byte more closes the connection before its body is used.
#[test]
fn frame_over_frame_bytes_max_closes_its_connection() {
    const LIMIT: usize = 1024;
    let f = Fixture::start_with("frame-limit", |c| c.frame_bytes_max = LIMIT);
    let mut healthy = f.healthy_connection();
    create_topic(&mut healthy, "limited", 1, &[], CREATE_TOPICS_V);

    let at_limit = produce_frame_of("limited", LIMIT, 1000);
    let mut ok = f.connect();
    ok.send_raw(&at_limit);
    let r = ok.receive::<ProduceRequest>(PRODUCE_V, 1000);
    assert_eq!(r.responses[0].partition_responses[0].error_code, NONE);

    let over = produce_frame_of("limited", LIMIT + 1, 1001);
    let mut bad = f.connect();
    bad.send_raw(&over);
    bad.expect_closed("frame one byte over the limit");

    let mut huge = f.connect();
    huge.send_raw(&(64i32 << 20).to_be_bytes());
    huge.expect_closed("a 64 MiB frame announced to a 1 KiB limit");

    assert_api_versions_ok(&mut healthy);
    assert_eq!(log_end(&mut healthy, "limited", 0), 1);
    f.finish();
}

/// Every array element takes at least one byte, so a frame of a few bytes that claims
/// two billion elements is malformed: the broker must close that connection, as for any
/// undecodable body. Found by `fuzz_smoke`: kafka-protocol 0.18 decodes an array by
/// `Vec::with_capacity(length from the wire)` (`protocol/types.rs`, `Array::decode` and
/// `CompactArray::decode`), so the allocation fails and aborts the whole process: one
/// unauthenticated 14-byte request stops the broker.
#[test]
fn tiny_frame_claiming_a_huge_array_closes_only_its_connection() {
    let f = Fixture::start("huge-array");
    let mut healthy = f.healthy_connection();
    let claims: [(&str, Vec<u8>); 2] = [
        (
            "Metadata v0 with 2^31-1 topics",
            framed(&[0, 3, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff]),
        ),
        (
            "Metadata v12 with a compact array of 2^31-2 topics",
            framed(&[
                0, 3, 0, 12, 0, 0, 0, 2, 0xff, 0xff, 0, 0xff, 0xff, 0xff, 0xff, 0x07,
            ]),
        ),
    ];
    for (what, bytes) in &claims {
        let mut bad = f.connect();
        bad.send_raw(bytes);
        bad.expect_closed(what);
        assert_api_versions_ok(&mut healthy);
    }
    f.finish();
}

// ---------------------------------------------------------------------------------------
// API keys and versions.
// ---------------------------------------------------------------------------------------

/// Brief §2.2: an unknown api key, or one Runnel does not serve, closes the connection,
/// as Kafka does; no error response is sent.
#[test]
fn unknown_or_unserved_api_key_closes_the_connection() {
    let f = Fixture::start("unknown-key");
    let mut healthy = f.healthy_connection();
    // Key 9999 is no Kafka API. Header v1: key, version, correlation id, null client id.
    let unknown = framed(&[0x27, 0x0f, 0, 0, 0, 0, 0, 7, 0xff, 0xff]);
    // AddPartitionsToTxn (24) v0 is a real API that Runnel does not advertise.
    let unserved = framed(&[0, 24, 0, 0, 0, 0, 0, 8, 0xff, 0xff, 0, 0]);
    for (what, bytes) in [
        ("api key 9999", unknown),
        ("AddPartitionsToTxn v0", unserved),
    ] {
        let mut bad = f.connect();
        bad.send_raw(&bytes);
        bad.expect_closed(what);
        assert_api_versions_ok(&mut healthy);
    }
    f.finish();
}

/// Brief §2.2 and §2.3: a version outside what is served closes the connection. Produce
/// v0-v2 are advertised (for librdkafka's compression probe) but not served.
#[test]
fn unsupported_version_of_a_known_api_closes_the_connection() {
    let f = Fixture::start("bad-version");
    let mut healthy = f.healthy_connection();

    let mut bad = f.connect();
    let mut req = MetadataRequest::default();
    req.topics = None;
    bad.send(&req, 13); // Runnel serves Metadata 0..=12
    bad.expect_closed("Metadata v13");

    let mut bad = f.connect();
    // Control case: Produce v3 is served on the same connection.
    let served = bad.send(&produce_request("t", 0, &small_batch(b"v"), -1), 3);
    let r = bad.receive::<ProduceRequest>(3, served);
    assert_eq!(
        r.responses[0].partition_responses[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    bad.send_raw(&framed(&[0, 0, 0, 2, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff]));
    bad.expect_closed("Produce v2 (advertised, not served)");

    let mut bad = f.connect();
    bad.send_raw(&framed(&[0, 1, 0, 3, 0, 0, 0, 6, 0xff, 0xff])); // Fetch v3 < min 4
    bad.expect_closed("Fetch v3");

    assert_api_versions_ok(&mut healthy);
    f.finish();
}

fn expect_api_versions_fallback(c: &mut Client, correlation_id: i32) {
    let mut frame = c.read_frame();
    // The fallback has a v0 header (correlation id only) and a v0 body.
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    let body = ApiVersionsResponse::decode(&mut frame, 0).expect("a v0 ApiVersions body");
    assert_eq!(frame.remaining(), 0, "bytes after the v0 body");
    assert_eq!(body.error_code, UNSUPPORTED_VERSION);
    let advertised: Vec<(i16, i16, i16)> = SUPPORTED
        .iter()
        .map(|s| (s.key as i16, s.min, s.max))
        .collect();
    let listed: Vec<(i16, i16, i16)> = body
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    assert_eq!(
        listed, advertised,
        "the fallback lists every advertised API"
    );
    assert!(listed.contains(&(ApiKey::ApiVersions as i16, 0, 4)));
}

/// KIP-511 and brief §2.2: ApiVersions newer than served gets a v0 response with
/// UNSUPPORTED_VERSION (35) and the API list, and the connection stays open so the client
/// can retry at a version both know.
#[test]
fn api_versions_v7_gets_the_v0_fallback_and_the_connection_stays_open() {
    let f = Fixture::start("api-versions-v7");
    let mut c = f.connect();
    // Header v2: key 18, version 7, correlation 42, client id "x", no tags; then a v3+
    // style body: two compact strings and no tags.
    c.send_raw(&framed(&[
        0, 18, 0, 7, 0, 0, 0, 42, 0, 1, b'x', 0, 2, b'c', 2, b'1', 0,
    ]));
    expect_api_versions_fallback(&mut c, 42);
    assert_api_versions_ok(&mut c);
    f.finish();
}

/// An ApiVersions of a served version whose body does not decode gets the same
/// fallback: librdkafka then retries with v0 (brief §2.2, "don't validate").
#[test]
fn undecodable_api_versions_body_gets_the_v0_fallback() {
    let f = Fixture::start("api-versions-garbled");
    let mut c = f.connect();
    // v3, header v2, then a compact string whose varint length never ends.
    c.send_raw(&framed(&[0, 18, 0, 3, 0, 0, 0, 43, 0xff, 0xff, 0, 0xff]));
    expect_api_versions_fallback(&mut c, 43);
    assert_api_versions_ok(&mut c);
    f.finish();
}

// ---------------------------------------------------------------------------------------
// Produce validation (brief §3.2).
// ---------------------------------------------------------------------------------------

/// Metadata answers INVALID_TOPIC_EXCEPTION (17) for an illegal name. Produce never
/// creates topics, so, like Kafka's `KafkaApis.handleProduceRequest` (which checks only
/// that the partition exists), it answers UNKNOWN_TOPIC_OR_PARTITION (3).
#[test]
fn invalid_topic_name_is_invalid_topic_in_metadata_and_unknown_in_produce() {
    let f = Fixture::start("invalid-name");
    let mut c = f.healthy_connection();
    let too_long = "x".repeat(250);
    for bad in ["bad topic!", "..", "", too_long.as_str(), "ünïcode"] {
        let m = metadata(&mut c, bad, true);
        assert_eq!(
            m.topics[0].error_code, INVALID_TOPIC_EXCEPTION,
            "Metadata {bad:?}"
        );
        let p = produce_one(&mut c, bad, 0, &small_batch(b"v"), -1);
        assert_eq!(
            p.error_code, UNKNOWN_TOPIC_OR_PARTITION,
            "Produce {bad:?}: {p:?}"
        );
        assert_eq!(p.base_offset, -1);
    }
    f.finish();
}

#[test]
fn corrupt_or_truncated_batch_gets_corrupt_message() {
    let f = Fixture::start("crc");
    let mut c = f.healthy_connection();
    create_topic(&mut c, "crc", 1, &[], CREATE_TOPICS_V);
    let good = small_batch(b"payload");

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x20;
    let p = produce_one(&mut c, "crc", 0, &flipped, -1);
    assert_eq!(p.error_code, CORRUPT_MESSAGE, "flipped payload bit: {p:?}");

    let mut bad_crc = good.clone();
    bad_crc[17] ^= 0xff;
    let p = produce_one(&mut c, "crc", 0, &bad_crc, -1);
    assert_eq!(p.error_code, CORRUPT_MESSAGE, "flipped CRC byte: {p:?}");

    let truncated = &good[..good.len() - 3];
    let p = produce_one(&mut c, "crc", 0, truncated, -1);
    assert_eq!(p.error_code, CORRUPT_MESSAGE, "truncated batch: {p:?}");

    assert_eq!(log_end(&mut c, "crc", 0), 0, "nothing was appended");
    let p = produce_one(&mut c, "crc", 0, &good, -1);
    assert_eq!((p.error_code, p.base_offset), (NONE, 0));
    f.finish();
}

#[test]
fn batch_over_max_message_bytes_gets_message_too_large() {
    let f = Fixture::start("too-large");
    let mut c = f.healthy_connection();
    create_topic(
        &mut c,
        "small",
        1,
        &[("max.message.bytes", "1024")],
        CREATE_TOPICS_V,
    );
    let big = small_batch(&[b'x'; 2000]);
    let p = produce_one(&mut c, "small", 0, &big, -1);
    assert_eq!(p.error_code, MESSAGE_TOO_LARGE, "{p:?}");
    assert_eq!(log_end(&mut c, "small", 0), 0);
    let p = produce_one(&mut c, "small", 0, &small_batch(&[b'x'; 900]), -1);
    assert_eq!(p.error_code, NONE, "a batch under the limit: {p:?}");
    f.finish();
}

#[test]
fn invalid_acks_gets_invalid_required_acks_for_every_partition() {
    let f = Fixture::start("acks");
    let mut c = f.healthy_connection();
    create_topic(&mut c, "acks", 2, &[], CREATE_TOPICS_V);
    for acks in [5, 2, -2, i16::MIN] {
        let mut req = produce_request("acks", 0, &small_batch(b"v"), acks);
        let mut second = req.topic_data[0].partition_data[0].clone();
        second.index = 1;
        req.topic_data[0].partition_data.push(second);
        let r = c.call(&req, PRODUCE_V);
        let codes: Vec<(i32, i16)> = r.responses[0]
            .partition_responses
            .iter()
            .map(|p| (p.index, p.error_code))
            .collect();
        assert_eq!(
            codes,
            vec![(0, INVALID_REQUIRED_ACKS), (1, INVALID_REQUIRED_ACKS)],
            "acks={acks}"
        );
    }
    assert_eq!(log_end(&mut c, "acks", 0), 0);
    assert_eq!(log_end(&mut c, "acks", 1), 0);
    f.finish();
}

/// Brief §1 and §3.2: only magic 2 is stored; anything else is INVALID_RECORD (87). The
/// magic byte is not covered by the CRC, so the batch is otherwise valid.
#[test]
fn batch_with_magic_other_than_2_gets_invalid_record() {
    let f = Fixture::start("magic");
    let mut c = f.healthy_connection();
    create_topic(&mut c, "magic", 1, &[], CREATE_TOPICS_V);
    for magic in [0u8, 1, 3, 0xff] {
        let mut b = small_batch(b"v");
        b[16] = magic;
        let p = produce_one(&mut c, "magic", 0, &b, -1);
        assert_eq!(p.error_code, INVALID_RECORD, "magic {magic}: {p:?}");
    }
    assert_eq!(log_end(&mut c, "magic", 0), 0);
    f.finish();
}

#[test]
fn unknown_topic_or_partition_without_auto_create_gets_unknown_topic_or_partition() {
    let f = Fixture::start_with("no-auto-create", |c| c.auto_create_topics = false);
    let mut c = f.healthy_connection();
    let p = produce_one(&mut c, "nowhere", 0, &small_batch(b"v"), -1);
    assert_eq!(p.error_code, UNKNOWN_TOPIC_OR_PARTITION, "{p:?}");
    let m = metadata(&mut c, "nowhere", true);
    assert_eq!(
        m.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "auto-creation is off even when the client allows it"
    );
    let p = produce_one(&mut c, "nowhere", 0, &small_batch(b"v"), -1);
    assert_eq!(p.error_code, UNKNOWN_TOPIC_OR_PARTITION, "still unknown");

    create_topic(&mut c, "somewhere", 1, &[], CREATE_TOPICS_V);
    for partition in [1, 7, -1, i32::MAX, i32::MIN] {
        let p = produce_one(&mut c, "somewhere", partition, &small_batch(b"v"), -1);
        assert_eq!(
            p.error_code, UNKNOWN_TOPIC_OR_PARTITION,
            "partition {partition}: {p:?}"
        );
    }
    assert_eq!(log_end(&mut c, "somewhere", 0), 0);
    f.finish();
}

/// A batch with a valid CRC whose counts are lies: the header claims `i32::MAX` records
/// (with a matching `lastOffsetDelta`), or its one record claims `i32::MAX` headers.
/// Found by this suite: such a batch used to be stored, and ListOffsets by timestamp
/// then decoded it with a decoder that reserves capacity for the claimed counts, which
/// aborted the process (after every restart, too). Now the records of an uncompressed
/// batch are walked on append and the lie is refused as INVALID_RECORD; ListOffsets
/// walks records with bounds checks too.
#[test]
fn batches_with_lying_counts_are_refused_and_list_offsets_survives() {
    let f = Fixture::start("lying-counts");
    let mut c = f.healthy_connection();
    // One record: attributes 0, timestamp delta 0, offset delta 0, null key, null value,
    // and a header count of i32::MAX (zigzag varint fe ff ff ff 0f).
    let record = [0u8, 0, 0, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f];
    let mut headers_lie = vec![(record.len() as u8) << 1];
    headers_lie.extend_from_slice(&record);
    let headers_lie = batch_from_records(&headers_lie, 1);
    let count_lie = batch_from_records(&build_batch(&[(None, Some(b"v"))], 0)[61..], i32::MAX);
    for (topic, batch) in [("count-lie", count_lie), ("headers-lie", headers_lie)] {
        create_topic(&mut c, topic, 1, &[], CREATE_TOPICS_V);
        let p = produce_one(&mut c, topic, 0, &batch, -1);
        assert_eq!(p.error_code, INVALID_RECORD, "{topic}: {p:?}");
        let r = c.call(&list_offsets_request(topic, 0, 0), LIST_OFFSETS_V);
        assert_eq!(r.topics[0].partitions.len(), 1, "{topic}: {r:?}");
    }
    f.finish();
}

/// A batch header (timestamp 0, not idempotent) over `records`, claiming `count`
/// records, with a correct length and CRC.
fn batch_from_records(records: &[u8], count: i32) -> Vec<u8> {
    let mut b = build_batch(&[(None, None)], 0)[..61].to_vec();
    b.extend_from_slice(records);
    let length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&length.to_be_bytes());
    b[23..27].copy_from_slice(&(count - 1).to_be_bytes());
    b[57..61].copy_from_slice(&count.to_be_bytes());
    seal_crc(&mut b);
    b
}

/// Brief §2.5: the client reads no response to `acks=0`, so the next frame on the
/// connection must answer the next request.
#[test]
fn acks_0_produce_gets_no_response() {
    let f = Fixture::start("acks0");
    let mut c = f.healthy_connection();
    create_topic(&mut c, "quiet", 1, &[], CREATE_TOPICS_V);
    let silent = c.send(
        &produce_request("quiet", 0, &small_batch(b"v"), 0),
        PRODUCE_V,
    );
    let next = c.send(&ApiVersionsRequest::default(), API_VERSIONS_V);
    let r = c.receive::<ApiVersionsRequest>(API_VERSIONS_V, next);
    assert_ne!(silent, next);
    assert_eq!(r.error_code, NONE);
    // The silent produce was still appended (requests are served in order).
    assert_eq!(log_end(&mut c, "quiet", 0), 1);
    f.finish();
}

// ---------------------------------------------------------------------------------------
// Idempotent produce over the raw protocol (brief §6).
// ---------------------------------------------------------------------------------------

const TWO: &[KeyValue<'static>] = &[(Some(b"a"), Some(b"1")), (Some(b"b"), Some(b"2"))];

#[test]
fn idempotent_retry_of_the_same_batch_returns_the_original_offset() {
    let f = Fixture::start("idem-dup");
    let mut c = f.healthy_connection();
    create_topic(&mut c, "idem", 1, &[], CREATE_TOPICS_V);
    let (pid, epoch) = init_producer_id(&mut c, -1, -1);
    assert!(pid >= 0);
    assert_eq!(epoch, 0);

    let first = idempotent_batch(TWO, pid, epoch, 0);
    let p = produce_one(&mut c, "idem", 0, &first, -1);
    assert_eq!((p.error_code, p.base_offset), (NONE, 0), "{p:?}");
    let p = produce_one(&mut c, "idem", 0, &first, -1);
    assert_eq!(
        (p.error_code, p.base_offset),
        (NONE, 0),
        "a duplicate answers with the original offset: {p:?}"
    );
    assert_eq!(
        log_end(&mut c, "idem", 0),
        2,
        "the duplicate was not appended"
    );

    let second = idempotent_batch(TWO, pid, epoch, 2);
    let p = produce_one(&mut c, "idem", 0, &second, -1);
    assert_eq!((p.error_code, p.base_offset), (NONE, 2), "{p:?}");
    // The first batch is still among the last five: still a duplicate.
    let p = produce_one(&mut c, "idem", 0, &first, -1);
    assert_eq!((p.error_code, p.base_offset), (NONE, 0), "{p:?}");
    assert_eq!(log_end(&mut c, "idem", 0), 4);
    assert_eq!(fetch_values(&mut c, "idem", 0, 0, FETCH_V).len(), 4);
    f.finish();
}

#[test]
fn idempotent_sequence_gap_gets_out_of_order_sequence_number() {
    let f = Fixture::start("idem-gap");
    let mut c = f.healthy_connection();
    create_topic(&mut c, "gap", 1, &[], CREATE_TOPICS_V);
    let (pid, epoch) = init_producer_id(&mut c, -1, -1);
    let p = produce_one(&mut c, "gap", 0, &idempotent_batch(TWO, pid, epoch, 0), -1);
    assert_eq!(p.error_code, NONE, "{p:?}");

    // Sequences 0 and 1 are written; 5 skips 2..4.
    let p = produce_one(&mut c, "gap", 0, &idempotent_batch(TWO, pid, epoch, 5), -1);
    assert_eq!(p.error_code, OUT_OF_ORDER_SEQUENCE_NUMBER, "{p:?}");
    assert_eq!(log_end(&mut c, "gap", 0), 2);

    // The rejection left the state intact: the right next sequence is accepted.
    let p = produce_one(&mut c, "gap", 0, &idempotent_batch(TWO, pid, epoch, 2), -1);
    assert_eq!((p.error_code, p.base_offset), (NONE, 2), "{p:?}");
    f.finish();
}

/// KIP-360: InitProducerId with the current id and epoch bumps the epoch (as
/// `handlers/producers.rs` implements); the older epoch is then fenced with
/// INVALID_PRODUCER_EPOCH (47), which Kafka >= 2.7 answers to Produce.
#[test]
fn idempotent_batch_from_an_older_epoch_gets_invalid_producer_epoch() {
    let f = Fixture::start("idem-epoch");
    let mut c = f.healthy_connection();
    create_topic(&mut c, "epoch", 1, &[], CREATE_TOPICS_V);
    let (pid, old) = init_producer_id(&mut c, -1, -1);
    let p = produce_one(&mut c, "epoch", 0, &idempotent_batch(TWO, pid, old, 0), -1);
    assert_eq!(p.error_code, NONE, "{p:?}");

    let (same_pid, new) = init_producer_id(&mut c, pid, old);
    assert_eq!(
        (same_pid, new),
        (pid, old + 1),
        "the epoch bump keeps the id"
    );
    let p = produce_one(&mut c, "epoch", 0, &idempotent_batch(TWO, pid, new, 0), -1);
    assert_eq!((p.error_code, p.base_offset), (NONE, 2), "{p:?}");

    let p = produce_one(&mut c, "epoch", 0, &idempotent_batch(TWO, pid, old, 2), -1);
    assert_eq!(p.error_code, INVALID_PRODUCER_EPOCH, "{p:?}");
    assert_eq!(log_end(&mut c, "epoch", 0), 4);
    f.finish();
}

// ---------------------------------------------------------------------------------------
// All of it at once.
// ---------------------------------------------------------------------------------------

/// Every kind of bad input above against one broker, each frame on its own connection
/// and the bad produces on one shared connection; the broker then still serves a good
/// produce and fetch (in `finish`), and nothing panicked.
#[test]
fn broker_still_produces_and_fetches_after_a_barrage_of_bad_input() {
    let f = Fixture::start("barrage");
    let mut healthy = f.healthy_connection();
    let frames: Vec<Vec<u8>> = vec![
        vec![0xff, 0xff, 0xff, 0xff],
        vec![0, 0, 0, 3, 0, 0, 0],
        vec![0x7f, 0xff, 0xff, 0xff],
        framed(&[0x27, 0x0f, 0, 0, 0, 0, 0, 7, 0xff, 0xff]),
        framed(&[0, 0, 0, 2, 0, 0, 0, 5, 0xff, 0xff]),
        framed(&[0, 3, 0, 13, 0, 0, 0, 5, 0xff, 0xff]),
        framed(&[0, 0, 0, 9, 0, 0, 0, 5, 0, 0, 0, 0xff]),
        framed(&[0, 1, 0, 12, 0, 0, 0, 5, 0xff, 0xff, 0, 0xff, 0xff, 0xff]),
    ];
    for bytes in &frames {
        let mut bad = f.connect();
        bad.send_raw(bytes);
        bad.expect_closed(&format!("{bytes:02x?}"));
    }
    let mut c = f.connect();
    create_topic(&mut c, "barrage", 1, &[], CREATE_TOPICS_V);
    let good = small_batch(b"v");
    let mut corrupt = good.clone();
    corrupt[good.len() - 1] ^= 1;
    let mut magic = good.clone();
    magic[16] = 1;
    let bad_produces: Vec<(Vec<u8>, i16)> = vec![
        (corrupt, -1),
        (magic, 1),
        (good.clone(), 7),
        (good[..20].to_vec(), -1),
        (Vec::new(), -1),
    ];
    for (batch, acks) in &bad_produces {
        let p = produce_one(&mut c, "barrage", 0, batch, *acks);
        assert_ne!(p.error_code, NONE, "acks={acks} {batch:02x?}: {p:?}");
    }
    assert_eq!(log_end(&mut c, "barrage", 0), 0);
    assert_api_versions_ok(&mut healthy);
    f.finish();
}
