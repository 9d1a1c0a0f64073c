//! One connection, many requests in flight: Produces overlap their durability waits, yet
//! effects and answers keep request order, and a request of another kind sees every
//! Produce before it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use runnel_log::batch::build_batch;

const METADATA_V: i16 = 4;
const PRODUCE_V: i16 = 9;
const LIST_OFFSETS_V: i16 = 7;

fn frame(key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("pipelining-test"));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut out = (buf.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&buf);
    out
}

fn produce(topic: &str, acks: i16, value: &[u8]) -> ProduceRequest {
    let mut p = PartitionProduceData::default();
    p.index = 0;
    p.records = Some(Bytes::from(build_batch(
        &[(None, Some(value))],
        1_700_000_000_000,
    )));
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partition_data = vec![p];
    let mut r = ProduceRequest::default();
    r.acks = acks;
    r.timeout_ms = 5000;
    r.topic_data = vec![t];
    r
}

fn latest(topic: &str) -> ListOffsetsRequest {
    let mut p = ListOffsetsPartition::default();
    p.partition_index = 0;
    p.timestamp = -1;
    let mut t = ListOffsetsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut r = ListOffsetsRequest::default();
    r.replica_id = kafka_protocol::messages::BrokerId(-1);
    r.topics = vec![t];
    r
}

/// Reads one response frame: its correlation id and body.
fn read_response(s: &mut TcpStream, key: ApiKey, version: i16) -> (i32, Bytes) {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, key.response_header_version(version)).unwrap();
    (header.correlation_id, body)
}

#[test]
fn pipelined_produces_answer_in_order_and_a_later_list_offsets_sees_them_all() {
    let dir = TempDir::new("pipelining");
    let b = TestBroker::start_with(&dir.0, |c| c.default_partitions = 1);
    let topic = "pipelined";
    let mut s = TcpStream::connect(b.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    // Metadata creates the topic, as it does for clients.
    let mut t = MetadataRequestTopic::default();
    t.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
    let mut m = MetadataRequest::default();
    m.topics = Some(vec![t]);
    m.allow_auto_topic_creation = true;
    s.write_all(&frame(ApiKey::Metadata, METADATA_V, -1, &m))
        .unwrap();
    let (correlation, mut body) = read_response(&mut s, ApiKey::Metadata, METADATA_V);
    assert_eq!(correlation, -1);
    let meta = MetadataResponse::decode(&mut body, METADATA_V).unwrap();
    assert_eq!(meta.topics[0].error_code, 0);

    // 20 Produces (one with acks=0, which gets no answer), then a ListOffsets, all
    // written before reading anything.
    const N: i32 = 20;
    let mut out = Vec::new();
    for i in 0..N {
        let acks = if i == 7 { 0 } else { -1 };
        let value = format!("record {i}");
        out.extend(frame(
            ApiKey::Produce,
            PRODUCE_V,
            i,
            &produce(topic, acks, value.as_bytes()),
        ));
    }
    out.extend(frame(
        ApiKey::ListOffsets,
        LIST_OFFSETS_V,
        N,
        &latest(topic),
    ));
    s.write_all(&out).unwrap();

    for i in (0..N).filter(|i| *i != 7) {
        let (correlation, mut body) = read_response(&mut s, ApiKey::Produce, PRODUCE_V);
        assert_eq!(correlation, i, "answers keep request order");
        let r = ProduceResponse::decode(&mut body, PRODUCE_V).unwrap();
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.base_offset, i64::from(i), "appends keep request order");
    }
    let (correlation, mut body) = read_response(&mut s, ApiKey::ListOffsets, LIST_OFFSETS_V);
    assert_eq!(correlation, N);
    let r = ListOffsetsResponse::decode(&mut body, LIST_OFFSETS_V).unwrap();
    assert_eq!(
        r.topics[0].partitions[0].offset,
        i64::from(N),
        "a request after Produces sees all of them durable"
    );
}
