//! Consumer groups with real clients: tests/clients/python/groups.py (confluent-kafka,
//! kafka-python, aiokafka) against a broker on port 0.

mod common;

use common::*;

fn scenario_on(b: &TestBroker, name: &str, args: &[&str]) {
    let boot = b.bootstrap();
    let mut all = vec![boot.as_str(), name];
    all.extend_from_slice(args);
    let out = python_scenario("groups.py", &all);
    assert_eq!(out.trim(), "ok", "{name}: {out}");
}

fn scenario(name: &str) {
    let dir = TempDir::new(name);
    let b = TestBroker::start(&dir.0);
    scenario_on(&b, name, &[]);
}

#[test]
fn competing_consumers_split_four_partitions_two_and_two() {
    scenario("competing");
}

#[test]
fn two_groups_each_receive_every_record() {
    scenario("fanout");
}

#[test]
fn a_graceful_leave_hands_all_partitions_to_the_survivor() {
    scenario("leave");
}

#[test]
fn a_sigkilled_consumer_is_replaced_after_its_session_from_its_commits() {
    scenario("crash");
}

#[test]
fn kip_345_a_static_member_restarts_without_a_rebalance() {
    scenario("static_membership");
}

#[test]
fn admin_lists_describes_and_deletes_groups_with_their_offsets() {
    scenario("admin_groups");
}

#[test]
fn a_restarted_consumer_resumes_from_its_commits_even_after_a_broker_restart() {
    let dir = TempDir::new("resume");
    let b = TestBroker::start(&dir.0);
    scenario_on(&b, "commit_and_close", &["resume"]);
    b.stop();
    let b = TestBroker::start(&dir.0);
    scenario_on(&b, "resume", &["resume"]);
}

#[test]
fn kafka_python_group_consumes_commits_and_resumes() {
    scenario("kafka_python_group");
}

#[test]
fn aiokafka_group_consumes_commits_and_resumes() {
    scenario("aiokafka_group");
}
