//! Issue 11, decompression bombs, end to end: an in-process broker on port 0, raw
//! Produce requests. A compressed batch whose records decompress past the topic's limit
//! (`runnel_log::codec::decompressed_bytes_max` of its `max.message.bytes`) is refused
//! with MESSAGE_TOO_LARGE, on compacted and deleting topics alike; records that do not
//! decompress are CORRUPT_MESSAGE; nothing of either is stored; and the broker goes on
//! serving, the same connection included.
//!
//! The bomb is 32 MiB of zeros in zstd (a few KiB on the wire) against a topic of
//! `max.message.bytes=65536`, whose limit is the 8 MiB floor: four times over, so the
//! broker decodes at most 8 MiB of it.

mod common;

use common::TestBroker;
use common::raw::Client;
use common::requests::{create_topic, fetch_values, log_end, produce_request};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use runnel_core::records::KafkaCodecs;
use runnel_log::BatchCodec;
use runnel_log::batch::{HEADER_BYTES, build_batch, seal_crc};
use runnel_log::codec::decompressed_bytes_max;

const NONE: i16 = 0;
const CORRUPT_MESSAGE: i16 = 2;
const MESSAGE_TOO_LARGE: i16 = 10;

const PRODUCE_V: i16 = 9;
const FETCH_V: i16 = 12;
const CREATE_TOPICS_V: i16 = 7;

/// Kafka's codec id for zstd.
const ZSTD: u8 = 4;
/// The topics' `max.message.bytes`: small, so a modest bomb is past the limit.
const MAX_MESSAGE_BYTES: u32 = 64 << 10;
/// What the bomb expands to.
const BOMB_BYTES: usize = 32 << 20;

/// Produces one batch to partition 0 of `topic` and returns the partition's answer.
fn produce(c: &mut Client, topic: &str, batch: &[u8]) -> PartitionProduceResponse {
    let r = c.call(&produce_request(topic, 0, batch, -1), PRODUCE_V);
    r.responses[0].partition_responses[0].clone()
}

/// A one-record batch (key `k`) whose records section is replaced by `payload`, marked
/// as zstd, with its length and CRC made right.
fn zstd_batch(payload: &[u8]) -> Vec<u8> {
    let mut b = build_batch(&[(Some(b"k"), Some(b"v"))], 0);
    b.truncate(HEADER_BYTES);
    b.extend_from_slice(payload);
    let length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = i16::from_be_bytes([b[21], b[22]]) | i16::from(ZSTD);
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    seal_crc(&mut b);
    b
}

/// A well-formed zstd batch of `value` under key `k`, as a producer sends it.
fn normal_batch(value: &[u8]) -> Vec<u8> {
    let plain = build_batch(&[(Some(b"k"), Some(value))], 0);
    zstd_batch(&KafkaCodecs.compress(ZSTD, &plain[HEADER_BYTES..]).unwrap())
}

#[test]
fn a_decompression_bomb_is_refused_and_the_broker_keeps_serving() {
    let dir = common::TempDir::new("decompression");
    let broker = TestBroker::start(&dir.0);
    let mut c = Client::connect(&broker);
    let max = MAX_MESSAGE_BYTES.to_string();
    create_topic(
        &mut c,
        "compacted",
        1,
        &[("cleanup.policy", "compact"), ("max.message.bytes", &max)],
        CREATE_TOPICS_V,
    );
    create_topic(
        &mut c,
        "deleting",
        1,
        &[("max.message.bytes", &max)],
        CREATE_TOPICS_V,
    );

    let bomb = zstd_batch(&KafkaCodecs.compress(ZSTD, &vec![0u8; BOMB_BYTES]).unwrap());
    assert!(
        bomb.len() < MAX_MESSAGE_BYTES as usize,
        "the bomb is within max.message.bytes on the wire: {} bytes",
        bomb.len()
    );
    assert!(BOMB_BYTES > decompressed_bytes_max(MAX_MESSAGE_BYTES));
    let garbage = zstd_batch(b"\x28\xb5\x2f\xfd not a zstd frame at all");

    for topic in ["compacted", "deleting"] {
        let refused = produce(&mut c, topic, &bomb);
        assert_eq!(
            refused.error_code, MESSAGE_TOO_LARGE,
            "{topic}: {refused:?}"
        );
        let refused = produce(&mut c, topic, &garbage);
        assert_eq!(refused.error_code, CORRUPT_MESSAGE, "{topic}: {refused:?}");
        assert_eq!(log_end(&mut c, topic, 0), 0, "{topic}: nothing was stored");

        // The same connection is still served, and a normal compressed batch goes in.
        let ok = produce(&mut c, topic, &normal_batch(b"after the bomb"));
        assert_eq!(ok.error_code, NONE, "{topic}: {ok:?}");
        assert_eq!(ok.base_offset, 0, "{topic}");
        assert_eq!(
            fetch_values(&mut c, topic, 0, 0, FETCH_V),
            vec![b"after the bomb".to_vec()]
        );
    }
    // And so is a new connection.
    let mut fresh = Client::connect(&broker);
    assert_eq!(log_end(&mut fresh, "compacted", 0), 1);
    broker.stop();
}
