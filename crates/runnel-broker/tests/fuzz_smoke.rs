//! The bounded fuzz run of `Broker::handle_frame`, in every `cargo test`.
//!
//! 2000 generated frames, from a fixed seed, go to one broker over a temporary log:
//! (a) arbitrary bytes; (b) a valid request header for every advertised API key and
//! version, followed by a random body; (c) bit flips, truncations and extensions of real
//! encoded requests (Produce, Fetch, Metadata, ListOffsets, InitProducerId, ApiVersions).
//! Each answer is judged by `runnel_fuzz::check_outcome` (shared with the cargo-fuzz
//! target in `fuzz/`): no panic, `Silent` only for `acks=0`, and every response frame
//! well formed and decodable for its API and version. Afterwards the broker must still
//! answer Metadata correctly and serve a produce and a fetch.
//!
//! To explore beyond the fixed seed: `PROPTEST_RNG_SEED=<n> PROPTEST_CASES=<n> cargo test
//! -p runnel-broker --test fuzz_smoke`. For open-ended fuzzing see `fuzz/README.md`.

// As in the binary: a lying length prefix reserves address space, not memory.
#[global_allocator]
static ALLOC: runnel_alloc::LazyHuge = runnel_alloc::LazyHuge;

#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use harness::{Harness, check_outcome};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, BrokerId, FetchRequest, FetchResponse, InitProducerIdRequest,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse,
    ProducerId, RequestHeader, RequestKind, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use runnel_broker::Outcome;
use runnel_broker::{SUPPORTED, accepts};
use runnel_log::PartitionId;
use runnel_log::batch::{build_batch, seal_crc};

/// Cases per run, unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 2000;
/// The fixed seed, unless `PROPTEST_RNG_SEED` says otherwise: CI runs the same inputs
/// every time, so a failure reproduces.
const SEED: u64 = 0x7275_6e6e_656c;
/// A hang is a failure too; the run takes about 3 s in a debug build when healthy.
const RUN_DEADLINE: Duration = Duration::from_secs(120);
/// The topic the valid requests name; created with two partitions before the run.
const TOPIC: &str = "fuzz";

/// Which generator made a frame, and what it then requires of the answer.
#[derive(Clone, Debug)]
enum Kind {
    Bytes,
    /// A valid header of this API and version.
    Header(ApiKey, i16),
    Mutated,
}

#[derive(Clone, Debug)]
struct Case {
    kind: Kind,
    frame: Vec<u8>,
}

fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A request frame body (no size prefix): header, then the request at `version`.
fn encode<R: Request>(req: &R, version: i16, correlation_id: i32) -> Vec<u8> {
    let key = ApiKey::try_from(R::KEY).expect("known api key");
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("fuzz-smoke")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .expect("header encodes");
    req.encode(&mut buf, version).expect("request encodes");
    buf.to_vec()
}

fn produce(batch: &[u8], acks: i16) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(Bytes::copy_from_slice(batch));
    let mut t = TopicProduceData::default();
    t.name = topic_name(TOPIC);
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 1_000;
    r.topic_data = vec![t];
    r
}

fn fetch(offset: i64, max_wait_ms: i32) -> FetchRequest {
    let partitions = (0..2)
        .map(|i| {
            let mut p = FetchPartition::default();
            p.partition = i;
            p.fetch_offset = offset;
            p.partition_max_bytes = 1 << 16;
            p
        })
        .collect();
    let mut t = FetchTopic::default();
    t.topic = topic_name(TOPIC);
    t.partitions = partitions;
    let mut r = FetchRequest::default();
    r.replica_id = BrokerId(-1);
    r.max_wait_ms = max_wait_ms;
    r.min_bytes = 1;
    r.max_bytes = 1 << 20;
    r.topics = vec![t];
    r
}

fn metadata(topics: Option<&[&str]>) -> MetadataRequest {
    let mut r = MetadataRequest::default();
    r.topics = topics.map(|names| {
        names
            .iter()
            .map(|n| {
                let mut t = MetadataRequestTopic::default();
                t.name = Some(topic_name(n));
                t
            })
            .collect()
    });
    r.allow_auto_topic_creation = true;
    r
}

fn list_offsets(timestamp: i64) -> ListOffsetsRequest {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = timestamp;
    let mut t = ListOffsetsTopic::default();
    t.name = topic_name(TOPIC);
    t.partitions = vec![p];
    let mut r = ListOffsetsRequest::default();
    r.replica_id = BrokerId(-1);
    r.topics = vec![t];
    r
}

fn init_producer_id(producer_id: i64, epoch: i16) -> InitProducerIdRequest {
    let mut r = InitProducerIdRequest::default();
    r.transaction_timeout_ms = 60_000;
    r.producer_id = ProducerId(producer_id);
    r.producer_epoch = epoch;
    r
}

/// An idempotent batch (producer fields patched in, CRC resealed): mutations of its
/// header reach the sequence checks.
fn idempotent_batch(producer_id: i64, seq: i32) -> Vec<u8> {
    let mut b = build_batch(&[(Some(b"k"), Some(b"idempotent"))], 1_700_000_000_000);
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    seal_crc(&mut b);
    b
}

/// Real encoded requests, the seeds of generator (c).
fn valid_requests() -> Vec<Vec<u8>> {
    let batch = build_batch(
        &[(Some(b"key"), Some(b"value")), (None, Some(b"second"))],
        1_700_000_000_000,
    );
    vec![
        encode(&produce(&batch, -1), 3, 1),
        encode(&produce(&batch, 1), 9, 2),
        encode(&produce(&batch, 0), 9, 3),
        encode(&produce(&batch, -1), 11, 4),
        encode(&produce(&idempotent_batch(7, 0), -1), 9, 5),
        encode(&fetch(0, 500), 4, 6),
        encode(&fetch(0, 500), 12, 7),
        encode(&metadata(Some(&[])), 0, 8),
        encode(&metadata(Some(&[TOPIC, "fuzz-new"])), 4, 9),
        encode(&metadata(None), 12, 10),
        encode(&metadata(Some(&[TOPIC])), 12, 11),
        encode(&list_offsets(-1), 1, 12),
        encode(&list_offsets(-2), 7, 13),
        encode(&init_producer_id(-1, -1), 0, 14),
        encode(&init_producer_id(-1, -1), 4, 15),
        encode(&ApiVersionsRequest::default(), 0, 16),
        encode(&ApiVersionsRequest::default(), 3, 17),
    ]
}

/// (a) Arbitrary bytes.
fn arbitrary_bytes() -> impl Strategy<Value = Case> {
    prop::collection::vec(any::<u8>(), 0..300).prop_map(|frame| Case {
        kind: Kind::Bytes,
        frame,
    })
}

/// A body byte for noise bodies: zeros (empty arrays, empty strings, zero numbers), ones
/// and 0xff (null, -1) are as likely as uniform noise, so more bodies get past the first
/// length field.
fn body_byte() -> impl Strategy<Value = u8> {
    prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(0xffu8), 4 => any::<u8>()]
}

/// The encoding of the API's default request at `version` (empty when the codec cannot
/// encode it, or for an API not listed here): a body that decodes, for generator (b) to
/// perturb. The list covers what Runnel serves and what it is likely to serve next.
fn default_body(key: ApiKey, version: i16) -> Vec<u8> {
    macro_rules! default_request {
        ($($api:ident),* $(,)?) => {
            match key {
                $(ApiKey::$api => RequestKind::$api(Default::default()),)*
                _ => return Vec::new(),
            }
        };
    }
    let request = default_request!(
        Produce,
        Fetch,
        ListOffsets,
        Metadata,
        ApiVersions,
        CreateTopics,
        DeleteTopics,
        DeleteRecords,
        InitProducerId,
        OffsetForLeaderEpoch,
        DescribeConfigs,
        AlterConfigs,
        IncrementalAlterConfigs,
        CreatePartitions,
        FindCoordinator,
        JoinGroup,
        SyncGroup,
        Heartbeat,
        LeaveGroup,
        OffsetCommit,
        OffsetFetch,
        OffsetDelete,
        DescribeGroups,
        ListGroups,
        DeleteGroups,
        DescribeCluster,
    );
    let mut buf = BytesMut::new();
    match request.encode(&mut buf, version) {
        Ok(()) => buf.to_vec(),
        Err(_) => Vec::new(),
    }
}

/// (b) A valid header for an advertised API at any advertised version (below the served
/// minimum too), then a random body: either noise, or the API's default request with
/// bytes XOR-ed and appended (noise alone rarely gets past the first length field).
fn valid_header_random_body() -> impl Strategy<Value = Case> {
    (
        (any::<Index>(), any::<Index>(), any::<i32>()),
        prop::option::of("[a-z0-9.-]{0,12}"),
        prop::bool::ANY,
        prop::collection::vec(body_byte(), 0..200),
        prop::collection::vec((any::<Index>(), 1u8..=255), 0..4),
    )
        .prop_map(
            |((api, version, correlation_id), client_id, noise_only, noise, flips)| {
                let s = api.get(SUPPORTED);
                let span = usize::try_from(s.max - s.min + 1).expect("min <= max");
                let version = s.min + i16::try_from(version.index(span)).expect("small span");
                let header = RequestHeader::default()
                    .with_request_api_key(s.key as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(correlation_id)
                    .with_client_id(client_id.map(StrBytes::from_string));
                let mut buf = BytesMut::new();
                header
                    .encode(&mut buf, s.key.request_header_version(version))
                    .expect("header encodes");
                let mut body = if noise_only {
                    Vec::new()
                } else {
                    default_body(s.key, version)
                };
                if !body.is_empty() {
                    for (at, mask) in flips {
                        let i = at.index(body.len());
                        body[i] ^= mask;
                    }
                }
                let keep = if noise_only {
                    noise.len()
                } else {
                    noise.len() % 8
                };
                body.extend_from_slice(&noise[..keep]);
                buf.extend_from_slice(&body);
                Case {
                    kind: Kind::Header(s.key, version),
                    frame: buf.to_vec(),
                }
            },
        )
}

/// (c) A real request with up to 8 bytes XOR-ed, maybe cut short, maybe extended.
fn mutated_valid_request(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Case> {
    (
        any::<Index>(),
        prop::collection::vec((any::<Index>(), 1u8..=255), 0..8),
        prop::option::weighted(0.3, any::<Index>()),
        prop::collection::vec(any::<u8>(), 0..4),
    )
        .prop_map(move |(seed, flips, cut, extra)| {
            let mut frame = seed.get(&seeds).clone();
            for (at, mask) in flips {
                let i = at.index(frame.len());
                frame[i] ^= mask;
            }
            if let Some(cut) = cut {
                frame.truncate(cut.index(frame.len() + 1));
            }
            frame.extend_from_slice(&extra);
            Case {
                kind: Kind::Mutated,
                frame,
            }
        })
}

/// Answers counted per generator, to prove each one reaches the handlers.
#[derive(Default)]
struct Tally {
    responded: [Cell<u32>; 3],
    total: [Cell<u32>; 3],
}

impl Tally {
    fn add(&self, kind: &Kind, outcome: &Outcome) {
        let i = match kind {
            Kind::Bytes => 0,
            Kind::Header(..) => 1,
            Kind::Mutated => 2,
        };
        self.total[i].set(self.total[i].get() + 1);
        if matches!(outcome, Outcome::Respond(_) | Outcome::Silent) {
            self.responded[i].set(self.responded[i].get() + 1);
        }
    }
}

/// What (b) requires beyond the oracle: a version that is advertised but not served
/// closes the connection, except ApiVersions, which answers with the fallback.
fn check_header_case(key: ApiKey, version: i16, outcome: &Outcome) -> Result<(), String> {
    if accepts(key, version) {
        return Ok(());
    }
    match (key, outcome) {
        (ApiKey::ApiVersions, Outcome::Respond(_)) => Ok(()),
        (_, Outcome::Close(_)) => Ok(()),
        (_, other) => Err(format!(
            "{key:?} v{version} is not served, yet the answer was {other:?}"
        )),
    }
}

fn run_cases(h: &Harness, tally: &Tally) -> Result<(), String> {
    let mut config = Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        max_shrink_time: 20_000,
        ..Config::default()
    };
    if let Some(cases) = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        config.cases = cases;
    }
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    let strategy = prop_oneof![
        1 => arbitrary_bytes(),
        2 => valid_header_random_body(),
        2 => mutated_valid_request(valid_requests()),
    ];
    let mut runner = TestRunner::new(config);
    runner
        .run(&strategy, |case| {
            let outcome = h.handle(&case.frame);
            tally.add(&case.kind, &outcome);
            check_outcome(&case.frame, &outcome).map_err(TestCaseError::fail)?;
            if let Kind::Header(key, version) = case.kind {
                check_header_case(key, version, &outcome).map_err(TestCaseError::fail)?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())
}

/// Sends a valid request through the harness and decodes the response.
fn call<R: Request>(h: &Harness, req: &R, version: i16, correlation_id: i32) -> R::Response {
    let frame = encode(req, version, correlation_id);
    let Outcome::Respond(bytes) = h.handle(&frame) else {
        panic!("no response to a valid {:?}", ApiKey::try_from(R::KEY));
    };
    let mut buf = Bytes::from(bytes.to_vec()).slice(4..);
    let header = ResponseHeader::decode(
        &mut buf,
        <R::Response as HeaderVersion>::header_version(version),
    )
    .unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    <R::Response as Decodable>::decode(&mut buf, version).unwrap()
}

/// After the run: Metadata is answered correctly, and a record goes in and comes out.
fn assert_still_serving(h: &Harness) {
    let m: MetadataResponse = call(h, &metadata(Some(&[TOPIC])), 12, 9001);
    assert_eq!(m.brokers.len(), 1);
    assert_eq!(m.brokers[0].node_id, BrokerId(1));
    assert_eq!(m.controller_id, BrokerId(1));
    assert_eq!(
        m.cluster_id.as_ref().map(|c| c.as_str()),
        Some(h.broker().cluster_id())
    );
    assert_eq!(m.topics.len(), 1);
    let t = &m.topics[0];
    assert_eq!(t.error_code, 0, "{t:?}");
    assert_eq!(t.name.as_ref().map(|n| n.0.as_str()), Some(TOPIC));
    let indexes: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    assert_eq!(indexes, vec![0, 1]);
    assert!(t.partitions.iter().all(|p| p.leader_id == BrokerId(1)));

    let end = h
        .broker()
        .log()
        .partition(TOPIC, PartitionId(0))
        .unwrap()
        .log_end_offset()
        .0 as i64;
    let batch = build_batch(&[(None, Some(b"after the fuzz run"))], 1_700_000_000_000);
    let p: ProduceResponse = call(h, &produce(&batch, -1), 9, 9002);
    let part = &p.responses[0].partition_responses[0];
    assert_eq!((part.error_code, part.base_offset), (0, end), "{p:?}");
    let f: FetchResponse = call(h, &fetch(end, 0), 12, 9003);
    let mut records = f.responses[0].partitions[0].records.clone().unwrap();
    let values: Vec<Bytes> = RecordBatchDecoder::decode_all(&mut records)
        .unwrap()
        .into_iter()
        .flat_map(|s| s.records)
        .filter(|r| r.offset >= end)
        .filter_map(|r| r.value)
        .collect();
    assert_eq!(values, vec![Bytes::from_static(b"after the fuzz run")]);
}

/// The bounded fuzz run (about 3 s in a debug build). Its fixed seed once reached an
/// OffsetForLeaderEpoch body claiming a huge array, which aborted the process until
/// `runnel-alloc` made such reservations cost address space only (see `bad_input.rs`,
/// `tiny_frame_claiming_a_huge_array_closes_only_its_connection`).
#[test]
fn handle_frame_survives_fuzzed_frames_and_still_serves() {
    // The run happens on its own thread so that a hang fails the test at the deadline
    // instead of stalling the suite.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        let h = Harness::new("smoke").expect("the fuzz broker starts");
        h.broker()
            .log()
            .create_topic(TOPIC, 2, &BTreeMap::new())
            .expect("the fuzz topic is created");
        let tally = Tally::default();
        let result = run_cases(&h, &tally);
        if result.is_ok() {
            assert_still_serving(&h);
        }
        let counts: Vec<(u32, u32)> = (0..3)
            .map(|i| (tally.responded[i].get(), tally.total[i].get()))
            .collect();
        let _ = done_tx.send((result, counts));
    });
    let (result, counts) = match done_rx.recv_timeout(RUN_DEADLINE) {
        Ok(r) => r,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the fuzz run did not finish within {RUN_DEADLINE:?}: a request hangs")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The worker panicked outside a test case; surface its panic.
            match worker.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the worker always reports"),
            }
        }
    };
    worker.join().expect("the worker finished");
    if let Err(e) = result {
        panic!("{e}");
    }
    // Each generator must reach the handlers, or the run proves little: (a) mostly
    // closes, (b) and (c) must often produce a served request.
    let [bytes, headers, mutated] = [counts[0], counts[1], counts[2]];
    eprintln!("served/generated: bytes {bytes:?}, headers {headers:?}, mutated {mutated:?}");
    assert!(bytes.1 > 0, "no arbitrary-bytes cases ran");
    assert!(
        headers.0 * 5 >= headers.1,
        "valid headers were answered only {}/{} times",
        headers.0,
        headers.1
    );
    assert!(
        mutated.0 * 6 >= mutated.1,
        "mutated requests were answered only {}/{} times",
        mutated.0,
        mutated.1
    );
}

/// The seeds of generator (c), unmutated, are all served, and the oracle accepts the
/// answers: the harness and the oracle work, whatever the fuzz run finds.
#[test]
fn every_seed_request_is_served_and_its_answer_judged_well_formed() {
    let h = Harness::new("seeds").expect("the fuzz broker starts");
    h.broker()
        .log()
        .create_topic(TOPIC, 2, &BTreeMap::new())
        .expect("the fuzz topic is created");
    for (i, frame) in valid_requests().iter().enumerate() {
        let outcome = h.handle(frame);
        assert!(
            matches!(outcome, Outcome::Respond(_) | Outcome::Silent),
            "seed {i}: {outcome:?}"
        );
        if let Err(e) = check_outcome(frame, &outcome) {
            panic!("seed {i}: {e}");
        }
    }
    assert_still_serving(&h);
}

/// The oracle is only as good as what it rejects: a wrong size prefix, a wrong
/// correlation id, a short or overlong body, an unexplained Silent, a Close without a
/// reason.
#[test]
fn oracle_rejects_malformed_answers() {
    let h = Harness::new("oracle").expect("the fuzz broker starts");
    let request = encode(&ApiVersionsRequest::default(), 3, 77);
    let Outcome::Respond(good) = h.handle(&request) else {
        panic!("ApiVersions v3 is answered");
    };
    check_outcome(&request, &Outcome::Respond(good.clone())).expect("the real answer passes");

    let resized = |mut f: BytesMut| {
        let size = (f.len() - 4) as i32;
        f[..4].copy_from_slice(&size.to_be_bytes());
        f
    };
    let mut wrong_size = good.clone();
    wrong_size[3] ^= 1;
    let mut wrong_correlation = good.clone();
    wrong_correlation[7] ^= 1;
    let short = resized(BytesMut::from(&good[..good.len() - 1]));
    let mut long = good.clone();
    long.extend_from_slice(&[0]);
    let long = resized(long);
    let bad = [
        ("wrong size prefix", Outcome::Respond(wrong_size)),
        ("wrong correlation id", Outcome::Respond(wrong_correlation)),
        ("body cut short", Outcome::Respond(short)),
        ("byte after the body", Outcome::Respond(long)),
        ("Silent for ApiVersions", Outcome::Silent),
        ("Close without a reason", Outcome::Close(String::new())),
    ];
    for (what, outcome) in &bad {
        assert!(
            check_outcome(&request, outcome).is_err(),
            "the oracle accepted: {what}"
        );
    }
    let acks_1 = encode(&produce(&build_batch(&[(None, Some(b"v"))], 0), 1), 9, 78);
    assert!(
        check_outcome(&acks_1, &Outcome::Silent).is_err(),
        "Silent for acks=1"
    );
    let acks_0 = encode(&produce(&build_batch(&[(None, Some(b"v"))], 0), 0), 9, 79);
    check_outcome(&acks_0, &Outcome::Silent).expect("Silent for acks=0 passes");
    check_outcome(&request, &Outcome::Close("unsupported".into())).expect("a reasoned Close");
}
