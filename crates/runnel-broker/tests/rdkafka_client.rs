//! Rust `rdkafka` (vendored librdkafka): the long poll (answers when data arrives,
//! never spins) and a broker restart in the middle of a stream.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::ApiKey;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

fn producer(b: &str) -> BaseProducer {
    ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("linger.ms", "0")
        .create()
        .unwrap()
}

fn consumer(b: &str, topic: &str, from: Offset) -> BaseConsumer {
    consumer_waiting(b, topic, from, 500)
}

/// A consumer whose Fetches ask the broker to hold them up to `wait_ms`.
fn consumer_waiting(b: &str, topic: &str, from: Offset, wait_ms: u32) -> BaseConsumer {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", b)
        .set("group.id", "unused")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", wait_ms.to_string())
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "200")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, from).unwrap();
    c.assign(&tpl).unwrap();
    c
}

fn send(p: &BaseProducer, topic: &str, value: &str) {
    p.send(BaseRecord::<(), _>::to(topic).payload(value))
        .unwrap();
    p.flush(Duration::from_secs(10)).unwrap();
}

/// Polls until a message arrives or the deadline passes.
fn next(c: &BaseConsumer, within: Duration) -> Option<(i64, String)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        // Errors while the broker restarts are transient: librdkafka reconnects.
        if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
            let v = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            return Some((m.offset(), v));
        }
    }
    None
}

/// Behaviour, not speed: each Fetch asks the broker to hold it for 60 s, so a record
/// that arrives within the test's (generous) deadline proves the parked Fetch was
/// answered when the data came, not when its wait ran out; and an idle consumer costs a
/// few Fetches, not a stream of them.
#[test]
fn long_poll_answers_when_data_arrives_and_never_spins() {
    const WAIT_MS: u32 = 60_000;
    let dir = TempDir::new("rdk-longpoll");
    let b = TestBroker::start(&dir.0);
    let p = producer(&b.bootstrap());
    send(&p, "lp", "first");
    let c = consumer_waiting(&b.bootstrap(), "lp", Offset::Beginning, WAIT_MS);
    assert_eq!(next(&c, Duration::from_secs(20)).unwrap().1, "first");

    // Idle: the consumer's Fetch is parked at the high watermark. A broker that
    // answered at once would be asked hundreds of times in 2 s.
    let fetches_before = b.requests.get(ApiKey::Fetch);
    assert!(next(&c, Duration::from_secs(2)).is_none());
    let idle_fetches = b.requests.get(ApiKey::Fetch) - fetches_before;
    assert!(
        idle_fetches <= 10,
        "{idle_fetches} fetches in 2 s of idling: the consumer is spinning"
    );

    // Records appended while the Fetch is parked arrive long before its 60 s wait.
    for i in 0..3 {
        let value = format!("m{i}");
        send(&p, "lp", &value);
        let got = next(&c, Duration::from_secs(20))
            .expect("the parked Fetch is answered when data arrives");
        assert_eq!(got.1, value);
    }
}

#[test]
fn a_broker_restart_mid_stream_resumes_consumers_at_the_right_offset() {
    let dir = TempDir::new("rdk-restart");
    let b = TestBroker::start(&dir.0);
    let addr = b.addr;
    let p = producer(&b.bootstrap());
    for i in 0..100 {
        p.send(BaseRecord::<(), _>::to("rs").payload(&format!("v{i}")))
            .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
    let c = consumer(&b.bootstrap(), "rs", Offset::Beginning);
    for i in 0..60 {
        let (o, v) = next(&c, Duration::from_secs(20)).expect("record");
        assert_eq!((o, v), (i, format!("v{i}")));
    }
    // Restart on the same address while the clients stay up.
    b.stop();
    let b = TestBroker::start_with(&dir.0, |cfg| cfg.listen = addr);
    for i in 100..150 {
        p.send(BaseRecord::<(), _>::to("rs").payload(&format!("v{i}")))
            .unwrap();
    }
    p.flush(Duration::from_secs(30)).unwrap();
    for i in 60..150 {
        let (o, v) = next(&c, Duration::from_secs(30)).expect("record after restart");
        assert_eq!((o, v), (i, format!("v{i}")), "no gap, no duplicate");
    }
    drop(b);
}
