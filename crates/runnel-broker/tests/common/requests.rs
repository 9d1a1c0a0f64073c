//! Request builders shared by the raw-protocol tests: one topic, one partition, the
//! fields the tests set spelled out once. The Kafka API version stays with each test:
//! builders return the request for `Client::call`, and helpers that call take it.

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, FetchRequest, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::raw::Client;

const NONE: i16 = 0;
const TOPIC_ALREADY_EXISTS: i16 = 36;

pub fn topic_name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A CreateTopics of one topic, replication factor 1, with `configs` as its overrides.
pub fn create_topic_request(
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> CreateTopicsRequest {
    let mut t = CreatableTopic::default();
    t.name = topic_name(topic);
    t.num_partitions = partitions;
    t.replication_factor = 1;
    t.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = StrBytes::from_string((*k).to_string());
            c.value = Some(StrBytes::from_string((*v).to_string()));
            c
        })
        .collect();
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![t];
    req.timeout_ms = 5_000;
    req
}

/// Creates `topic` by CreateTopics at `version`; asserts it was created or already exists.
pub fn create_topic(
    c: &mut Client,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
    version: i16,
) {
    let r = c.call(&create_topic_request(topic, partitions, configs), version);
    let code = r.topics[0].error_code;
    assert!(code == NONE || code == TOPIC_ALREADY_EXISTS, "{r:?}");
}

/// A Produce of one batch to one partition.
pub fn produce_request(topic: &str, partition: i32, batch: &[u8], acks: i16) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = partition;
    p.records = Some(Bytes::copy_from_slice(batch));
    let mut t = TopicProduceData::default();
    t.name = topic_name(topic);
    t.partition_data = vec![p];
    let mut req = ProduceRequest::default();
    req.acks = acks;
    req.timeout_ms = 5_000;
    req.topic_data = vec![t];
    req
}

/// A Fetch of one partition from `offset`, as a consumer (replica -1) with no minimum:
/// `max_bytes` bounds both the partition and the response.
pub fn fetch_request(
    topic: &str,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    max_wait_ms: i32,
) -> FetchRequest {
    let mut p = FetchPartition::default();
    p.partition = partition;
    p.fetch_offset = offset;
    p.partition_max_bytes = max_bytes;
    let mut t = FetchTopic::default();
    t.topic = topic_name(topic);
    t.partitions = vec![p];
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.max_wait_ms = max_wait_ms;
    req.min_bytes = 0;
    req.max_bytes = max_bytes;
    req.topics = vec![t];
    req
}

/// The values of every record of `partition` from `offset` on, by a Fetch (`version`)
/// that does not wait; the answer must carry no error.
pub fn fetch_values(
    c: &mut Client,
    topic: &str,
    partition: i32,
    offset: i64,
    version: i16,
) -> Vec<Vec<u8>> {
    use kafka_protocol::records::RecordBatchDecoder;
    let r = c.call(
        &fetch_request(topic, partition, offset, 1 << 20, 0),
        version,
    );
    assert_eq!(r.error_code, 0, "{r:?}");
    let data = &r.responses[0].partitions[0];
    assert_eq!(data.error_code, 0, "{r:?}");
    let mut records = data.records.clone().expect("records are never null");
    RecordBatchDecoder::decode_all(&mut records)
        .expect("fetched batches decode")
        .into_iter()
        .flat_map(|set| set.records)
        .filter(|r| r.offset >= offset)
        .map(|r| r.value.map(|v| v.to_vec()).unwrap_or_default())
        .collect()
}

/// A consumer's ListOffsets for one partition at `timestamp` (-1: the log end, -2: the
/// log start, else the first offset at or after that time).
pub fn list_offsets_request(
    topic: &str,
    partition: i32,
    timestamp: i64,
) -> kafka_protocol::messages::ListOffsetsRequest {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{BrokerId, ListOffsetsRequest};
    let mut p = ListOffsetsPartition::default();
    p.partition_index = partition;
    p.timestamp = timestamp;
    let mut t = ListOffsetsTopic::default();
    t.name = topic_name(topic);
    t.partitions = vec![p];
    let mut req = ListOffsetsRequest::default();
    req.replica_id = BrokerId(-1);
    req.topics = vec![t];
    req
}

/// A partition's log end offset, from ListOffsets (v7) with the LATEST timestamp; the
/// answer must carry no error.
pub fn log_end(c: &mut Client, topic: &str, partition: i32) -> i64 {
    let r = c.call(&list_offsets_request(topic, partition, -1), 7);
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{r:?}");
    p.offset
}
