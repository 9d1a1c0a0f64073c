//! Issue 11, topic administration Kafka has and Runnel lacked, end to end on a broker on
//! port 0:
//!
//! - CreateTopics and CreatePartitions with a manual replica assignment: accepted when
//!   it names only this broker (node 1), refused as Kafka refuses it otherwise
//!   (INVALID_REPLICA_ASSIGNMENT; INVALID_REQUEST when a count is also given).
//! - The topic setting `compression.type`: validated (INVALID_CONFIG), shown by
//!   DescribeConfigs, changed by AlterConfigs, and applied on append: what a producer
//!   sends in another codec is stored re-compressed, and reads back the same.
//!
//! confluent-kafka (tests/clients/python/topic_admin.py) drives what a real client does;
//! raw requests pin the edge cases and look at the stored batches' codecs.

mod common;

use bytes::Bytes;
use common::raw::Client;
use common::requests::{create_topic_request, fetch_request, produce_request, topic_name};
use common::{TempDir, TestBroker, python_scenario};
use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::create_partitions_request::{
    CreatePartitionsAssignment, CreatePartitionsTopic,
};
use kafka_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::{
    AlterConfigsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DescribeConfigsRequest, MetadataRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::RecordBatchDecoder;
use runnel_log::batch::{BatchHeader, build_batch, validate_stored};

const NONE: i16 = 0;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
const INVALID_CONFIG: i16 = 40;
const INVALID_REQUEST: i16 = 42;

const CREATE_TOPICS_V: i16 = 7;
const CREATE_PARTITIONS_V: i16 = 3;
const DESCRIBE_CONFIGS_V: i16 = 4;
const ALTER_CONFIGS_V: i16 = 2;
const METADATA_V: i16 = 12;
const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;

/// Kafka's codec ids.
const UNCOMPRESSED: u8 = 0;
const GZIP: u8 = 1;
const LZ4: u8 = 3;
const ZSTD: u8 = 4;

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A CreateTopics entry with a manual assignment: `assignment[i]` is `(partition index,
/// broker ids)`.
fn with_assignment(topic: &str, assignment: &[(i32, &[i32])]) -> CreatableTopic {
    let mut t = CreatableTopic::default();
    t.name = topic_name(topic);
    t.num_partitions = -1;
    t.replication_factor = -1;
    t.assignments = assignment
        .iter()
        .map(|(index, brokers)| {
            let mut a = CreatableReplicaAssignment::default();
            a.partition_index = *index;
            a.broker_ids = brokers.iter().map(|b| BrokerId(*b)).collect();
            a
        })
        .collect();
    t
}

/// Creates one topic; returns the error code and the partition count answered.
fn create(c: &mut Client, t: CreatableTopic, validate_only: bool) -> (i16, i32) {
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5_000;
    req.validate_only = validate_only;
    let r = c.call(&req, CREATE_TOPICS_V);
    (r.topics[0].error_code, r.topics[0].num_partitions)
}

fn create_with_configs(c: &mut Client, topic: &str, configs: &[(&str, &str)]) -> i16 {
    let r = c.call(&create_topic_request(topic, 1, configs), CREATE_TOPICS_V);
    r.topics[0].error_code
}

/// The partition count Metadata shows, `None` for an unknown topic.
fn partition_count(c: &mut Client, topic: &str) -> Option<usize> {
    let mut t = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default();
    t.name = Some(topic_name(topic));
    let mut req = MetadataRequest::default();
    req.topics = Some(vec![t]);
    req.allow_auto_topic_creation = false;
    let r = c.call(&req, METADATA_V);
    let t = &r.topics[0];
    (t.error_code == NONE).then_some(t.partitions.len())
}

/// Grows `topic` to `count` partitions with the given assignment; returns the error code.
fn create_partitions(
    c: &mut Client,
    topic: &str,
    count: i32,
    assignment: Option<&[&[i32]]>,
    validate_only: bool,
) -> i16 {
    let mut t = CreatePartitionsTopic::default();
    t.name = topic_name(topic);
    t.count = count;
    t.assignments = assignment.map(|a| {
        a.iter()
            .map(|brokers| {
                let mut x = CreatePartitionsAssignment::default();
                x.broker_ids = brokers.iter().map(|b| BrokerId(*b)).collect();
                x
            })
            .collect()
    });
    let mut req = CreatePartitionsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5_000;
    req.validate_only = validate_only;
    let r = c.call(&req, CREATE_PARTITIONS_V);
    r.results[0].error_code
}

/// A topic's `compression.type` as DescribeConfigs shows it.
fn described_compression(c: &mut Client, topic: &str) -> String {
    let mut res = DescribeConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = str_bytes(topic);
    res.configuration_keys = Some(vec![str_bytes("compression.type")]);
    let mut req = DescribeConfigsRequest::default();
    req.resources = vec![res];
    let r = c.call(&req, DESCRIBE_CONFIGS_V);
    let result = &r.results[0];
    assert_eq!(result.error_code, NONE, "{r:?}");
    assert_eq!(result.configs.len(), 1, "{r:?}");
    result.configs[0].value.as_ref().unwrap().to_string()
}

/// AlterConfigs on a topic (replaces its overrides); returns the error code.
fn alter(c: &mut Client, topic: &str, configs: &[(&str, &str)]) -> i16 {
    let mut res = AlterConfigsResource::default();
    res.resource_type = 2;
    res.resource_name = str_bytes(topic);
    res.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut a = AlterableConfig::default();
            a.name = str_bytes(k);
            a.value = Some(str_bytes(v));
            a
        })
        .collect();
    let mut req = AlterConfigsRequest::default();
    req.resources = vec![res];
    let r = c.call(&req, ALTER_CONFIGS_V);
    r.responses[0].error_code
}

/// Produces one batch to partition 0 of `topic`; returns the error code.
fn produce(c: &mut Client, topic: &str, batch: &[u8]) -> i16 {
    let r = c.call(&produce_request(topic, 0, batch, -1), PRODUCE_V);
    r.responses[0].partition_responses[0].error_code
}

/// Partition 0's stored batches from offset 0, as a Fetch that does not wait returns
/// them (at most 4 MiB).
fn fetch_raw(c: &mut Client, topic: &str) -> Bytes {
    let r = c.call(&fetch_request(topic, 0, 0, 4 << 20, 0), FETCH_V);
    let data = &r.responses[0].partitions[0];
    assert_eq!(data.error_code, NONE, "{topic}: {r:?}");
    data.records.clone().expect("records are never null")
}

/// What the stored batches of partition 0 say about themselves: `(codec, producer id,
/// record count)` each, every one checked whole (CRC-32C included).
fn stored_batches(c: &mut Client, topic: &str) -> Vec<(u8, i64, i32)> {
    let bytes = fetch_raw(c, topic);
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let h = BatchHeader::parse(rest).expect("a whole batch header");
        let (batch, after) = rest.split_at(h.total_bytes() as usize);
        validate_stored(batch).unwrap_or_else(|e| panic!("{topic}: stored batch: {e}"));
        out.push((h.compression(), h.producer_id(), h.record_count()));
        rest = after;
    }
    out
}

/// Every record value of partition 0, decoded by kafka-protocol (not Runnel's reader).
fn values(c: &mut Client, topic: &str) -> Vec<Vec<u8>> {
    let mut bytes = fetch_raw(c, topic);
    RecordBatchDecoder::decode_all(&mut bytes)
        .expect("fetched batches decode")
        .into_iter()
        .flat_map(|set| set.records)
        .map(|r| r.value.map(|v| v.to_vec()).unwrap_or_default())
        .collect()
}

#[test]
fn confluent_creates_topics_and_partitions_with_an_assignment_naming_only_this_broker() {
    let dir = TempDir::new("assignment-confluent");
    let b = TestBroker::start(&dir.0);
    let out = python_scenario("topic_admin.py", &[&b.bootstrap(), "replica_assignment"]);
    assert_eq!(out.trim(), "ok", "{out}");
    let mut c = Client::connect(&b);
    assert_eq!(partition_count(&mut c, "ra"), Some(5));
    assert_eq!(partition_count(&mut c, "ra-other"), None);
    b.stop();
}

#[test]
fn create_topics_with_an_assignment_follows_kafkas_rules() {
    let dir = TempDir::new("assignment-rules");
    let b = TestBroker::start(&dir.0);
    let mut c = Client::connect(&b);

    // Refused, each with Kafka's code: the assignment is the whole truth, so counts
    // given beside it are a malformed request; anything but [1] per partition, indexed
    // 0..n-1, is a bad assignment on this one-node cluster.
    let refusals: Vec<(&str, CreatableTopic, i16)> = vec![
        (
            "a partition count beside it",
            with_assignment("r1", &[(0, &[1])]).with_num_partitions(1),
            INVALID_REQUEST,
        ),
        (
            "a replication factor beside it",
            with_assignment("r2", &[(0, &[1])]).with_replication_factor(1),
            INVALID_REQUEST,
        ),
        (
            "an unknown broker",
            with_assignment("r3", &[(0, &[2])]),
            INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            "an unknown broker among known ones",
            with_assignment("r4", &[(0, &[1, 2])]),
            INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            "a broker twice",
            with_assignment("r5", &[(0, &[1, 1])]),
            INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            "no replicas",
            with_assignment("r6", &[(0, &[])]),
            INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            "a gap in partition indexes",
            with_assignment("r7", &[(0, &[1]), (2, &[1])]),
            INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            "a partition twice",
            with_assignment("r8", &[(0, &[1]), (0, &[1])]),
            INVALID_REPLICA_ASSIGNMENT,
        ),
        (
            "indexes not from 0",
            with_assignment("r9", &[(1, &[1])]),
            INVALID_REPLICA_ASSIGNMENT,
        ),
    ];
    for (what, t, code) in refusals {
        let topic = t.name.0.to_string();
        assert_eq!(create(&mut c, t, false), (code, -1), "{what}");
        assert_eq!(partition_count(&mut c, &topic), None, "{what}: not created");
    }

    // Accepted: as many partitions as the assignment lists, in any order.
    let shuffled = with_assignment("ok", &[(2, &[1]), (0, &[1]), (1, &[1])]);
    assert_eq!(create(&mut c, shuffled.clone(), true), (NONE, 3));
    assert_eq!(
        partition_count(&mut c, "ok"),
        None,
        "validate_only creates nothing"
    );
    assert_eq!(create(&mut c, shuffled, false), (NONE, 3));
    assert_eq!(partition_count(&mut c, "ok"), Some(3));
    b.stop();
}

#[test]
fn create_partitions_with_an_assignment_follows_kafkas_rules() {
    let dir = TempDir::new("assignment-grow");
    let b = TestBroker::start(&dir.0);
    let mut c = Client::connect(&b);
    assert_eq!(
        create(&mut c, with_assignment("g", &[(0, &[1])]), false),
        (NONE, 1)
    );

    let refusals: [(&str, i32, &[&[i32]]); 4] = [
        ("an unknown broker", 2, &[&[2]]),
        ("a broker twice", 2, &[&[1, 1]]),
        ("fewer assignments than new partitions", 3, &[&[1]]),
        ("more assignments than new partitions", 2, &[&[1], &[1]]),
    ];
    for (what, count, assignment) in refusals {
        assert_eq!(
            create_partitions(&mut c, "g", count, Some(assignment), false),
            INVALID_REPLICA_ASSIGNMENT,
            "{what}"
        );
        assert_eq!(partition_count(&mut c, "g"), Some(1), "{what}: not grown");
    }
    assert_eq!(
        create_partitions(&mut c, "g", 1, Some(&[]), false),
        INVALID_PARTITIONS,
        "the count must still grow"
    );
    assert_eq!(
        create_partitions(&mut c, "g", 3, Some(&[&[1], &[1]]), true),
        NONE
    );
    assert_eq!(
        partition_count(&mut c, "g"),
        Some(1),
        "validate_only grows nothing"
    );
    assert_eq!(
        create_partitions(&mut c, "g", 3, Some(&[&[1], &[1]]), false),
        NONE
    );
    assert_eq!(partition_count(&mut c, "g"), Some(3));
    b.stop();
}

#[test]
fn confluent_producers_batches_are_stored_in_the_topics_compression_type() {
    let dir = TempDir::new("compression-confluent");
    let b = TestBroker::start(&dir.0);
    let out = python_scenario("topic_admin.py", &[&b.bootstrap(), "compression_type"]);
    assert_eq!(out.trim(), "ok", "{out}");

    let mut c = Client::connect(&b);
    // topic, the codec every stored batch must have, whether the producer was idempotent
    let cases = [
        ("ct-zstd", ZSTD, false),
        ("ct-zstd-idem", ZSTD, true),
        ("ct-plain", UNCOMPRESSED, false),
        ("ct-lz4", LZ4, true),
        ("ct-producer", GZIP, false),
    ];
    for (topic, codec, idempotent) in cases {
        let batches = stored_batches(&mut c, topic);
        let records: i32 = batches.iter().map(|(_, _, n)| n).sum();
        assert_eq!(records, 200, "{topic}: {batches:?}");
        for (stored, producer_id, _) in batches {
            assert_eq!(stored, codec, "{topic}");
            assert_eq!(
                producer_id >= 0,
                idempotent,
                "{topic}: producer id {producer_id}"
            );
        }
    }
    b.stop();
}

#[test]
fn compression_type_is_validated_described_and_altered() {
    let dir = TempDir::new("compression-alter");
    let b = TestBroker::start(&dir.0);
    let mut c = Client::connect(&b);
    assert_eq!(
        create_with_configs(&mut c, "bad", &[("compression.type", "brotli")]),
        INVALID_CONFIG
    );
    assert_eq!(partition_count(&mut c, "bad"), None);

    assert_eq!(create_with_configs(&mut c, "t", &[]), NONE);
    assert_eq!(
        described_compression(&mut c, "t"),
        "producer",
        "Kafka's default"
    );
    let plain = build_batch(&[(Some(b"k"), Some(b"first"))], 1_000);
    assert_eq!(produce(&mut c, "t", &plain), NONE);

    assert_eq!(
        alter(&mut c, "t", &[("compression.type", "brotli")]),
        INVALID_CONFIG
    );
    assert_eq!(
        described_compression(&mut c, "t"),
        "producer",
        "a refusal changes nothing"
    );
    assert_eq!(alter(&mut c, "t", &[("compression.type", "gzip")]), NONE);
    assert_eq!(described_compression(&mut c, "t"), "gzip");
    let second = build_batch(&[(Some(b"k"), Some(b"second"))], 2_000);
    assert_eq!(produce(&mut c, "t", &second), NONE);

    let codecs: Vec<u8> = stored_batches(&mut c, "t").iter().map(|b| b.0).collect();
    assert_eq!(
        codecs,
        vec![UNCOMPRESSED, GZIP],
        "only appends after the change"
    );
    assert_eq!(
        values(&mut c, "t"),
        vec![b"first".to_vec(), b"second".to_vec()]
    );
    b.stop();
}

#[test]
fn a_fetch_too_old_for_zstd_gets_unsupported_compression_type_not_batches_it_cannot_read() {
    const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    let dir = TempDir::new("zstd-old-fetch");
    let b = TestBroker::start(&dir.0);
    let mut c = Client::connect(&b);
    assert_eq!(
        create_with_configs(&mut c, "squeezed", &[("compression.type", "zstd")]),
        NONE
    );
    let batch = build_batch(&[(Some(&b"k"[..]), Some(&b"v"[..]))], 1_000);
    assert_eq!(produce(&mut c, "squeezed", &batch), NONE);
    // Fetch v9 predates zstd (KIP-110): Kafka answers the partition with an error.
    let old = c.call(&fetch_request("squeezed", 0, 0, 1 << 20, 0), 9);
    let p = &old.responses[0].partitions[0];
    assert_eq!(p.error_code, UNSUPPORTED_COMPRESSION_TYPE, "{old:?}");
    assert!(p.records.as_ref().is_none_or(Bytes::is_empty));
    // v10 and later get the batch, stored zstd.
    assert_eq!(stored_batches(&mut c, "squeezed")[0].0, ZSTD);
}
