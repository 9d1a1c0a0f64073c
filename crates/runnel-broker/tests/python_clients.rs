//! confluent-kafka (librdkafka 2.16), kafka-python 3 and aiokafka, driven by
//! tests/clients/python/scenarios.py against a broker on port 0.

mod common;

use common::*;

fn scenario(name: &str) {
    let dir = TempDir::new(name);
    let b = TestBroker::start_with(&dir.0, |c| c.default_partitions = 1);
    let out = python_scenario("scenarios.py", &[&b.bootstrap(), name]);
    assert_eq!(out.trim(), "ok", "{name}: {out}");
}

#[test]
fn confluent_keys_headers_nulls_and_every_codec_round_trip() {
    scenario("confluent_roundtrip");
}

#[test]
fn confluent_idempotent_producer_delivers_each_record_once_in_order() {
    scenario("confluent_idempotent");
}

#[test]
fn confluent_watermarks_and_offsets_for_times_inside_a_compressed_batch() {
    scenario("confluent_offsets");
}

#[test]
fn confluent_admin_create_describe_grow_delete_records_and_delete() {
    scenario("confluent_admin");
}

#[test]
fn kafka_python_idempotent_default_producer_round_trips_with_gzip() {
    scenario("kafka_python_roundtrip");
}

#[test]
fn kafka_python_snappy_lz4_and_zstd_round_trip() {
    scenario("kafka_python_snappy_lz4");
}

#[test]
fn kafka_python_admin_creates_lists_and_deletes() {
    scenario("kafka_python_admin");
}

#[test]
fn aiokafka_produces_and_consumes() {
    scenario("aiokafka_roundtrip");
}

#[test]
fn confluent_reads_a_compacted_topic_with_each_keys_latest_value() {
    scenario("confluent_compacted");
}
