//! kafkajs 2.2, driven by tests/clients/node/scenarios.js against a broker on port 0.

mod common;

use common::*;

fn scenario(name: &str) {
    let dir = TempDir::new(name);
    let b = TestBroker::start_with(&dir.0, |c| c.default_partitions = 1);
    let out = node_scenario("scenarios.js", &[&b.bootstrap(), name]);
    assert_eq!(out.trim(), "ok", "{name}: {out}");
}

#[test]
fn kafkajs_idempotent_keys_headers_nulls_gzip_and_offsets_by_time() {
    scenario("roundtrip");
}

#[test]
fn kafkajs_acks_zero_gets_no_response_and_lands_in_order() {
    scenario("acks0");
}

#[test]
fn kafkajs_admin_creates_lists_grows_describes_and_deletes() {
    scenario("admin");
}

#[test]
fn kafkajs_competing_consumers_split_four_partitions_two_and_two() {
    scenario("competing");
}
