//! The group APIs refuse bad requests with the right Kafka error codes, over raw TCP:
//! unknown members, wrong generations, empty group ids, session timeouts out of range,
//! commits to unknown topics, fenced static members, deletion of groups in use.

mod common;

use bytes::Bytes;
use common::raw::Client;
use common::requests::create_topic_request;
use common::{TempDir, TestBroker};
use kafka_protocol::messages::delete_groups_request::DeleteGroupsRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    CreateTopicsRequest, DeleteTopicsRequest, DescribeGroupsRequest, FindCoordinatorRequest,
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    OffsetCommitRequest, OffsetFetchRequest, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

const FIND_COORDINATOR_V: i16 = 3;
const JOIN_V: i16 = 5;
const SYNC_V: i16 = 3;
const HEARTBEAT_V: i16 = 3;
const LEAVE_V: i16 = 3;
const COMMIT_V: i16 = 7;
const FETCH_V: i16 = 7;
const DESCRIBE_V: i16 = 4;
const DELETE_V: i16 = 1;
const CREATE_TOPICS_V: i16 = 5;

// Error codes (the brief's §10).
const OFFSET_METADATA_TOO_LARGE: i16 = 12;
const INVALID_REQUEST: i16 = 42;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const ILLEGAL_GENERATION: i16 = 22;
const INVALID_GROUP_ID: i16 = 24;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const MEMBER_ID_REQUIRED: i16 = 79;
const FENCED_INSTANCE_ID: i16 = 82;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn group(v: &str) -> GroupId {
    GroupId(s(v))
}

fn join_request(group_id: &str, member_id: &str, instance: Option<&str>) -> JoinGroupRequest {
    let mut p = JoinGroupRequestProtocol::default();
    p.name = s("range");
    p.metadata = Bytes::from_static(b"subscription");
    let mut r = JoinGroupRequest::default();
    r.group_id = group(group_id);
    r.session_timeout_ms = 10_000;
    r.rebalance_timeout_ms = 10_000;
    r.member_id = s(member_id);
    r.group_instance_id = instance.map(s);
    r.protocol_type = s("consumer");
    r.protocols = vec![p];
    r
}

fn join(c: &mut Client, req: &JoinGroupRequest) -> JoinGroupResponse {
    c.call(req, JOIN_V)
}

/// A member of `group_id` through KIP-394 and a sync, alone in generation 1.
fn stable_member(c: &mut Client, group_id: &str, instance: Option<&str>) -> (String, i32) {
    let mut first = join(c, &join_request(group_id, "", instance));
    if instance.is_none() {
        assert_eq!(first.error_code, MEMBER_ID_REQUIRED);
        let id = first.member_id.to_string();
        first = join(c, &join_request(group_id, &id, None));
    }
    assert_eq!(first.error_code, 0, "{first:?}");
    let member = first.member_id.to_string();
    let mut a = SyncGroupRequestAssignment::default();
    a.member_id = s(&member);
    a.assignment = Bytes::from_static(b"everything");
    let mut sync = SyncGroupRequest::default();
    sync.group_id = group(group_id);
    sync.generation_id = first.generation_id;
    sync.member_id = s(&member);
    sync.group_instance_id = instance.map(s);
    sync.assignments = vec![a];
    let r = c.call(&sync, SYNC_V);
    assert_eq!(r.error_code, 0);
    assert_eq!(r.assignment, Bytes::from_static(b"everything"));
    (member, first.generation_id)
}

fn heartbeat(
    c: &mut Client,
    group_id: &str,
    member: &str,
    generation: i32,
    instance: Option<&str>,
) -> i16 {
    let mut h = HeartbeatRequest::default();
    h.group_id = group(group_id);
    h.member_id = s(member);
    h.generation_id = generation;
    h.group_instance_id = instance.map(s);
    c.call(&h, HEARTBEAT_V).error_code
}

fn commit(
    c: &mut Client,
    group_id: &str,
    member: &str,
    generation: i32,
    topic: &str,
    metadata: &str,
) -> i16 {
    let mut p = OffsetCommitRequestPartition::default();
    p.partition_index = 0;
    p.committed_offset = 3;
    p.committed_metadata = Some(s(metadata));
    let mut t = OffsetCommitRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = vec![p];
    let mut r = OffsetCommitRequest::default();
    r.group_id = group(group_id);
    r.generation_id_or_member_epoch = generation;
    r.member_id = s(member);
    r.topics = vec![t];
    let resp = c.call(&r, COMMIT_V);
    resp.topics[0].partitions[0].error_code
}

fn fetch_committed(c: &mut Client, group_id: &str, topic: &str) -> (i64, String) {
    let mut t = OffsetFetchRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partition_indexes = vec![0];
    let mut r = OffsetFetchRequest::default();
    r.group_id = group(group_id);
    r.topics = Some(vec![t]);
    let resp = c.call(&r, FETCH_V);
    assert_eq!(resp.error_code, 0);
    let p = &resp.topics[0].partitions[0];
    (
        p.committed_offset,
        p.metadata
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

/// Creates `name` with one partition; asserts it did not exist.
fn create_topic(c: &mut Client, name: &str) {
    let resp = c.call(&create_topic_request(name, 1, &[]), CREATE_TOPICS_V);
    assert_eq!(resp.topics[0].error_code, 0);
}

#[test]
fn joins_that_cannot_be_served_get_their_error_codes() {
    let dir = TempDir::new("group-join-errors");
    let b = TestBroker::start(&dir.0);
    let mut c = Client::connect(&b);

    assert_eq!(
        join(&mut c, &join_request("", "", None)).error_code,
        INVALID_GROUP_ID
    );
    let mut short = join_request("g", "", None);
    short.session_timeout_ms = 1_000;
    assert_eq!(join(&mut c, &short).error_code, INVALID_SESSION_TIMEOUT);
    let mut long = join_request("g", "", None);
    long.session_timeout_ms = i32::MAX;
    assert_eq!(join(&mut c, &long).error_code, INVALID_SESSION_TIMEOUT);
    assert_eq!(
        join(&mut c, &join_request("nobody-here", "ghost", None)).error_code,
        UNKNOWN_MEMBER_ID
    );

    // Transactions are not coordinated here: clients learn it at once.
    let mut find = FindCoordinatorRequest::default();
    find.key = s("txn");
    find.key_type = 1;
    assert_eq!(
        c.call(&find, FIND_COORDINATOR_V).error_code,
        COORDINATOR_NOT_AVAILABLE
    );
    let mut find = FindCoordinatorRequest::default();
    find.key = s("g");
    let found = c.call(&find, FIND_COORDINATOR_V);
    assert_eq!(
        (found.error_code, found.node_id.0, found.port),
        (0, 1, i32::from(b.addr.port()))
    );
    // v4+ is batched: one answer per key.
    let mut batched = FindCoordinatorRequest::default();
    batched.coordinator_keys = vec![s("g"), s("h"), s("")];
    let found = c.call(&batched, 4);
    let answers: Vec<(String, i16, i32)> = found
        .coordinators
        .iter()
        .map(|c| (c.key.to_string(), c.error_code, c.node_id.0))
        .collect();
    assert_eq!(
        answers,
        vec![
            ("g".into(), 0, 1),
            ("h".into(), 0, 1),
            (String::new(), INVALID_REQUEST, -1)
        ]
    );
}

#[test]
fn members_with_wrong_ids_or_generations_are_refused() {
    let dir = TempDir::new("group-member-errors");
    let b = TestBroker::start(&dir.0);
    let mut c = Client::connect(&b);
    let (member, generation) = stable_member(&mut c, "g", None);

    assert_eq!(heartbeat(&mut c, "g", &member, generation, None), 0);
    assert_eq!(
        heartbeat(&mut c, "g", &member, generation + 1, None),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        heartbeat(&mut c, "g", "ghost", generation, None),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        heartbeat(&mut c, "", &member, generation, None),
        INVALID_GROUP_ID
    );

    let mut sync = SyncGroupRequest::default();
    sync.group_id = group("g");
    sync.generation_id = generation + 5;
    sync.member_id = s(&member);
    assert_eq!(c.call(&sync, SYNC_V).error_code, ILLEGAL_GENERATION);

    let mut leave = LeaveGroupRequest::default();
    leave.group_id = group("g");
    let mut ghost = MemberIdentity::default();
    ghost.member_id = s("ghost");
    leave.members = vec![ghost];
    let r = c.call(&leave, LEAVE_V);
    assert_eq!(
        (r.error_code, r.members[0].error_code),
        (0, UNKNOWN_MEMBER_ID)
    );
}

#[test]
fn commits_are_checked_and_their_metadata_round_trips() {
    let dir = TempDir::new("group-commit-errors");
    let b = TestBroker::start(&dir.0);
    let mut c = Client::connect(&b);
    create_topic(&mut c, "orders");
    let (member, generation) = stable_member(&mut c, "g", None);

    assert_eq!(
        commit(&mut c, "g", &member, generation, "no-such-topic", ""),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        commit(&mut c, "g", &member, generation + 1, "orders", ""),
        ILLEGAL_GENERATION
    );
    assert_eq!(
        commit(&mut c, "g", "ghost", generation, "orders", ""),
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(commit(&mut c, "", "", -1, "orders", ""), INVALID_GROUP_ID);
    let huge = "m".repeat(4097);
    assert_eq!(
        commit(&mut c, "g", &member, generation, "orders", &huge),
        OFFSET_METADATA_TOO_LARGE
    );
    assert_eq!(
        fetch_committed(&mut c, "g", "orders"),
        (-1, String::new()),
        "nothing committed yet"
    );

    let meta = "ünïcode metadata, kept as sent";
    assert_eq!(commit(&mut c, "g", &member, generation, "orders", meta), 0);
    assert_eq!(
        fetch_committed(&mut c, "g", "orders"),
        (3, meta.to_string())
    );
    // assign()-style commits (generation -1) to a group without members are stored too.
    assert_eq!(commit(&mut c, "simple", "", -1, "orders", ""), 0);
    assert_eq!(fetch_committed(&mut c, "simple", "orders").0, 3);
    // A generation on a group that does not exist is refused.
    assert_eq!(
        commit(&mut c, "nonexistent", "m", 4, "orders", ""),
        ILLEGAL_GENERATION
    );

    // The offsets topic is the broker's own: clients can neither delete nor create it.
    let mut del = DeleteTopicsRequest::default();
    del.topic_names = vec![TopicName(s("__consumer_offsets"))];
    assert_eq!(
        c.call(&del, 4).responses[0].error_code,
        INVALID_TOPIC_EXCEPTION
    );
    let mut t = kafka_protocol::messages::create_topics_request::CreatableTopic::default();
    t.name = TopicName(s("__consumer_offsets"));
    t.num_partitions = 1;
    t.replication_factor = 1;
    let mut create = CreateTopicsRequest::default();
    create.topics = vec![t];
    assert_eq!(
        c.call(&create, CREATE_TOPICS_V).topics[0].error_code,
        INVALID_TOPIC_EXCEPTION
    );

    // Offsets go with their topic: a topic created again under the same name starts
    // with none.
    let mut del = DeleteTopicsRequest::default();
    del.topic_names = vec![TopicName(s("orders"))];
    assert_eq!(c.call(&del, 4).responses[0].error_code, 0);
    create_topic(&mut c, "orders");
    assert_eq!(fetch_committed(&mut c, "g", "orders"), (-1, String::new()));
    assert_eq!(fetch_committed(&mut c, "simple", "orders").0, -1);
}

#[test]
fn static_members_are_fenced_and_groups_in_use_are_not_deleted() {
    let dir = TempDir::new("group-static-errors");
    let b = TestBroker::start(&dir.0);
    let mut c = Client::connect(&b);
    let (member, generation) = stable_member(&mut c, "g", Some("instance-1"));
    // The instance comes back under a new member id: the old id is fenced.
    let again = join(&mut c, &join_request("g", "", Some("instance-1")));
    assert_eq!(again.error_code, 0);
    assert_eq!(
        again.generation_id, generation,
        "no rebalance for a returning static member"
    );
    assert_ne!(again.member_id.to_string(), member);
    assert_eq!(
        heartbeat(&mut c, "g", &member, generation, Some("instance-1")),
        FENCED_INSTANCE_ID
    );
    assert_eq!(
        heartbeat(
            &mut c,
            "g",
            &again.member_id,
            generation,
            Some("instance-1")
        ),
        0
    );

    let mut del = DeleteGroupsRequest::default();
    del.groups_names = vec![group("g"), group("never-was")];
    let r = c.call(&del, DELETE_V);
    let codes: Vec<i16> = r.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, vec![NON_EMPTY_GROUP, GROUP_ID_NOT_FOUND]);

    let mut describe = DescribeGroupsRequest::default();
    describe.groups = vec![group("g"), group("never-was")];
    let d = c.call(&describe, DESCRIBE_V);
    assert_eq!(d.groups[0].group_state.to_string(), "Stable");
    assert_eq!(d.groups[0].members.len(), 1);
    assert_eq!(
        d.groups[0].members[0]
            .group_instance_id
            .as_ref()
            .map(|s| s.to_string()),
        Some("instance-1".to_string())
    );
    assert_eq!(d.groups[1].group_state.to_string(), "Dead");
}

/// A consumer-protocol subscription (v0) to `topics`, as JoinGroup metadata.
fn subscription(topics: &[&str]) -> Bytes {
    use bytes::BufMut;
    use kafka_protocol::protocol::Encodable;
    let mut sub = kafka_protocol::messages::ConsumerProtocolSubscription::default();
    sub.topics = topics.iter().map(|t| s(t)).collect();
    let mut buf = bytes::BytesMut::new();
    buf.put_i16(0);
    sub.encode(&mut buf, 0).unwrap();
    buf.freeze()
}

fn offset_delete(c: &mut Client, group_id: &str, topic: &str) -> (i16, i16) {
    use kafka_protocol::messages::OffsetDeleteRequest;
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    let mut p = OffsetDeleteRequestPartition::default();
    p.partition_index = 0;
    let mut t = OffsetDeleteRequestTopic::default();
    t.name = TopicName(s(topic));
    t.partitions = vec![p];
    let mut r = OffsetDeleteRequest::default();
    r.group_id = group(group_id);
    r.topics = vec![t];
    let resp = c.call(&r, 0);
    let partition = resp
        .topics
        .first()
        .map_or(-1, |t| t.partitions[0].error_code);
    (resp.error_code, partition)
}

#[test]
fn offset_delete_keeps_the_offsets_of_subscribed_topics_only() {
    const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    let dir = TempDir::new("group-offset-delete");
    let b = TestBroker::start(&dir.0);
    let mut c = Client::connect(&b);
    create_topic(&mut c, "orders");
    create_topic(&mut c, "old");
    // A consumer subscribed to "orders", Stable in generation 1.
    let mut req = join_request("g", "", None);
    req.protocols[0].metadata = subscription(&["orders"]);
    let first = join(&mut c, &req);
    req.member_id = first.member_id.clone();
    let joined = join(&mut c, &req);
    assert_eq!(joined.error_code, 0);
    let member = joined.member_id.to_string();
    let mut sync = SyncGroupRequest::default();
    sync.group_id = group("g");
    sync.generation_id = joined.generation_id;
    sync.member_id = s(&member);
    assert_eq!(c.call(&sync, SYNC_V).error_code, 0);
    for topic in ["orders", "old"] {
        assert_eq!(
            commit(&mut c, "g", &member, joined.generation_id, topic, ""),
            0
        );
    }

    assert_eq!(
        offset_delete(&mut c, "g", "orders"),
        (0, GROUP_SUBSCRIBED_TO_TOPIC)
    );
    assert_eq!(offset_delete(&mut c, "g", "old"), (0, 0));
    assert_eq!(fetch_committed(&mut c, "g", "orders").0, 3);
    assert_eq!(fetch_committed(&mut c, "g", "old").0, -1, "gone");
    assert_eq!(offset_delete(&mut c, "nobody", "old").0, GROUP_ID_NOT_FOUND);

    // Metadata that is not a subscription counts as subscribed to everything.
    let (other, generation) = stable_member(&mut c, "opaque", None);
    assert_eq!(commit(&mut c, "opaque", &other, generation, "old", ""), 0);
    assert_eq!(
        offset_delete(&mut c, "opaque", "old"),
        (0, GROUP_SUBSCRIBED_TO_TOPIC)
    );
}

/// DeleteRecords on `__consumer_offsets` would erase every group's committed offsets at
/// the next start: Kafka refuses it (INVALID_TOPIC_EXCEPTION), and so does Runnel. A
/// negative partition index names no partition (it used to be clamped to 0).
#[test]
fn internal_topics_and_negative_partitions_are_refused_not_clamped() {
    use kafka_protocol::messages::DeleteRecordsRequest;
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    let dir = TempDir::new("delete-records-internal");
    let b = TestBroker::start(&dir.0);
    let mut c = Client::connect(&b);
    create_topic(&mut c, "orders");
    let (member, generation) = stable_member(&mut c, "g", None);
    assert_eq!(commit(&mut c, "g", &member, generation, "orders", ""), 0);
    let delete = |c: &mut Client, topic: &str, partition: i32| {
        let mut p = DeleteRecordsPartition::default();
        p.partition_index = partition;
        p.offset = -1;
        let mut t = DeleteRecordsTopic::default();
        t.name = TopicName(s(topic));
        t.partitions = vec![p];
        let mut req = DeleteRecordsRequest::default();
        req.topics = vec![t];
        req.timeout_ms = 5_000;
        c.call(&req, 2).topics[0].partitions[0].error_code
    };
    assert_eq!(
        delete(&mut c, "__consumer_offsets", 0),
        INVALID_TOPIC_EXCEPTION
    );
    assert_eq!(
        fetch_committed(&mut c, "g", "orders").0,
        3,
        "the commit is still there"
    );
    assert_eq!(delete(&mut c, "orders", -1), UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(delete(&mut c, "orders", 0), 0);

    // OffsetForLeaderEpoch for partition -1 used to answer for partition 0.
    use kafka_protocol::messages::OffsetForLeaderEpochRequest;
    use kafka_protocol::messages::offset_for_leader_epoch_request::{
        OffsetForLeaderPartition, OffsetForLeaderTopic,
    };
    let epoch = |c: &mut Client, partition: i32| {
        let mut p = OffsetForLeaderPartition::default();
        p.partition = partition;
        p.current_leader_epoch = -1;
        p.leader_epoch = 0;
        let mut t = OffsetForLeaderTopic::default();
        t.topic = TopicName(s("orders"));
        t.partitions = vec![p];
        let mut req = OffsetForLeaderEpochRequest::default();
        req.replica_id = kafka_protocol::messages::BrokerId(-1);
        req.topics = vec![t];
        let resp = c.call(&req, 3);
        let e = &resp.topics[0].partitions[0];
        (e.error_code, e.end_offset)
    };
    assert_eq!(epoch(&mut c, -1).0, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(
        epoch(&mut c, 0),
        (0, 0),
        "partition 0 still answers (an empty topic)"
    );
}
