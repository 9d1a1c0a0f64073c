//! One connection, many requests in flight: Produces overlap their durability waits, yet
//! effects and answers keep request order, and a request of another kind sees every
//! Produce before it.

mod common;

use common::raw::Client;
use common::requests::{list_offsets_request, produce_request, topic_name};
use common::*;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ListOffsetsRequest, MetadataRequest, ProduceRequest};
use runnel_log::batch::build_batch;

const METADATA_V: i16 = 4;
const PRODUCE_V: i16 = 9;
const LIST_OFFSETS_V: i16 = 7;

fn produce(topic: &str, acks: i16, value: &[u8]) -> ProduceRequest {
    let batch = build_batch(&[(None, Some(value))], 1_700_000_000_000);
    produce_request(topic, 0, &batch, acks)
}

#[test]
fn pipelined_produces_answer_in_order_and_a_later_list_offsets_sees_them_all() {
    let dir = TempDir::new("pipelining");
    let b = TestBroker::start_with(&dir.0, |c| c.default_partitions = 1);
    let topic = "pipelined";
    let mut c = Client::connect(&b);

    // Metadata creates the topic, as it does for clients.
    let mut t = MetadataRequestTopic::default();
    t.name = Some(topic_name(topic));
    let mut m = MetadataRequest::default();
    m.topics = Some(vec![t]);
    m.allow_auto_topic_creation = true;
    assert_eq!(c.call(&m, METADATA_V).topics[0].error_code, 0);

    // 20 Produces (one with acks=0, which gets no answer), then a ListOffsets, all
    // written before anything is read.
    const N: usize = 20;
    const SILENT: usize = 7;
    let mut sent = Vec::new();
    for i in 0..N {
        let acks = if i == SILENT { 0 } else { -1 };
        let value = format!("record {i}");
        sent.push(c.send(&produce(topic, acks, value.as_bytes()), PRODUCE_V));
    }
    let list = c.send(&list_offsets_request(topic, 0, -1), LIST_OFFSETS_V);

    for (i, correlation_id) in sent.into_iter().enumerate() {
        if i == SILENT {
            continue;
        }
        // `receive` checks the correlation id: answers keep request order.
        let r = c.receive::<ProduceRequest>(PRODUCE_V, correlation_id);
        let p = &r.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        assert_eq!(p.base_offset, i as i64, "appends keep request order");
    }
    let r = c.receive::<ListOffsetsRequest>(LIST_OFFSETS_V, list);
    assert_eq!(
        r.topics[0].partitions[0].offset, N as i64,
        "a request after Produces sees all of them durable"
    );
}
