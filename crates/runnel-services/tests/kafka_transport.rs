//! The Kafka transport (rdkafka) against a real Runnel broker in-process on port 0:
//! sending and reading, watermarks, murmur2 partitioning, group membership with commits
//! and the eager revoke handshake, and a whole service end to end.
#![cfg(feature = "kafka")]

use std::time::{Duration, Instant};

use runnel_services::transport::{
    Delivery, GroupConsumer, MemberOptions, OutRecord, Record, TopicPartition, TopicSpec,
};
use runnel_services::{
    Emitter, HandlerError, Kafka, Runtime, Service, Table, TableRef, Transport, event,
};
use serde::{Deserialize, Serialize};

#[path = "common/mod.rs"]
mod common;
use common::{PATIENCE, TestBroker};

fn topic(name: &str, partitions: u32) -> TopicSpec {
    TopicSpec {
        name: name.into(),
        partitions,
        compacted: false,
    }
}

fn record(topic: &str, partition: Option<i32>, key: &str, value: &str) -> OutRecord {
    OutRecord {
        topic: topic.into(),
        partition,
        key: Some(key.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers: Vec::new(),
    }
}

fn member(group: &str, topics: &[&str], client: &str) -> MemberOptions {
    MemberOptions {
        group: group.into(),
        topics: topics.iter().map(|t| (*t).to_string()).collect(),
        client_id: client.into(),
        instance_id: None,
        session_timeout: Duration::from_secs(6),
        rebalance_timeout: Duration::from_secs(20),
    }
}

/// Reads from `transport` until `n` records came, or fails at the deadline.
async fn read_n(transport: &Kafka, from: Vec<(TopicPartition, i64)>, n: usize) -> Vec<Record> {
    let mut reader = transport.reader(from).unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} records",
            got.len()
        );
        got.extend(reader.poll(Duration::from_millis(200)).await.unwrap());
    }
    got
}

/// The member's deliveries until `pick` takes one; records and idles on the way are
/// passed to `pick` too.
async fn until<T>(
    member: &mut Box<dyn GroupConsumer>,
    what: &str,
    mut pick: impl FnMut(Delivery) -> Option<T>,
) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "no {what} within {PATIENCE:?}");
        let d = member.next(Duration::from_millis(200)).await.unwrap();
        if let Some(t) = pick(d) {
            return t;
        }
    }
}

async fn assigned(member: &mut Box<dyn GroupConsumer>) -> Vec<TopicPartition> {
    until(member, "assignment", |d| match d {
        Delivery::Assigned(tps) => Some(tps),
        Delivery::Revoking(tps) => panic!("revoking {tps:?} before any assignment"),
        _ => None,
    })
    .await
}

/// Collects records until `n` came; a revocation fails the test.
async fn records(member: &mut Box<dyn GroupConsumer>, n: usize) -> Vec<Record> {
    let mut got = Vec::new();
    until(member, "records", |d| match d {
        Delivery::Records(rs) => {
            got.extend(rs);
            (got.len() >= n).then_some(())
        }
        Delivery::Revoking(tps) => panic!("unexpected revocation of {tps:?}"),
        _ => None,
    })
    .await;
    got
}

fn offsets_of(records: &[Record], tp: &TopicPartition) -> Vec<i64> {
    records
        .iter()
        .filter(|r| &r.tp == tp)
        .map(|r| r.offset)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_records_read_back_with_keys_values_headers_and_tombstones() {
    let broker = TestBroker::start("roundtrip");
    let kafka = broker.kafka();
    kafka.ensure_topics(&[topic("rt", 3)]).await.unwrap();
    // A second call finds the topic there: not an error.
    kafka.ensure_topics(&[topic("rt", 3)]).await.unwrap();
    let mut with_headers = record("rt", Some(1), "k1", "v1");
    with_headers.headers = vec![
        ("ce_type".into(), b"thing".to_vec()),
        ("dup".into(), b"a".to_vec()),
        ("dup".into(), b"b".to_vec()),
    ];
    let tombstone = OutRecord {
        value: None,
        ..record("rt", Some(1), "k1", "")
    };
    let sent = kafka
        .send(vec![
            with_headers,
            tombstone,
            record("rt", Some(2), "k2", "v2"),
        ])
        .await
        .unwrap();
    let places: Vec<(i32, i64)> = sent.iter().map(|s| (s.partition, s.offset)).collect();
    assert_eq!(places, [(1, 0), (1, 1), (2, 0)]);

    let got = read_n(
        &kafka,
        vec![
            (TopicPartition::new("rt", 1), 0),
            (TopicPartition::new("rt", 2), 0),
        ],
        3,
    )
    .await;
    let p1: Vec<&Record> = got.iter().filter(|r| r.tp.partition == 1).collect();
    assert_eq!(p1.len(), 2);
    assert_eq!(p1[0].offset, 0);
    assert_eq!(p1[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(p1[0].value.as_deref(), Some(&b"v1"[..]));
    let headers: Vec<(&str, Option<&[u8]>)> = p1[0].headers.iter().collect();
    assert_eq!(
        headers,
        [
            ("ce_type", Some(&b"thing"[..])),
            ("dup", Some(&b"a"[..])),
            ("dup", Some(&b"b"[..]))
        ]
    );
    assert_eq!(p1[0].header("ce_type"), Some(&b"thing"[..]));
    assert!(p1[0].timestamp_ms > 0);
    assert_eq!(
        (p1[1].offset, p1[1].value.as_ref()),
        (1, None),
        "a tombstone"
    );
    let p2: Vec<&Record> = got.iter().filter(|r| r.tp.partition == 2).collect();
    assert_eq!(p2[0].value.as_deref(), Some(&b"v2"[..]));

    // A reader starts where it is told.
    let from_one = read_n(&kafka, vec![(TopicPartition::new("rt", 1), 1)], 1).await;
    assert_eq!(from_one[0].offset, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_is_created_with_cleanup_policy_compact() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;

    let broker = TestBroker::start("compacted");
    let kafka = broker.kafka();
    kafka
        .ensure_topics(&[
            TopicSpec {
                name: "table".into(),
                partitions: 2,
                compacted: true,
            },
            topic("stream", 1),
        ])
        .await
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.addr.to_string())
        .create()
        .unwrap();
    let described = admin
        .describe_configs(
            &[
                ResourceSpecifier::Topic("table"),
                ResourceSpecifier::Topic("stream"),
            ],
            &AdminOptions::new().request_timeout(Some(PATIENCE)),
        )
        .await
        .unwrap();
    let policies: Vec<Option<String>> = described
        .into_iter()
        .map(|r| {
            r.unwrap()
                .get("cleanup.policy")
                .and_then(|e| e.value.clone())
        })
        .collect();
    assert_eq!(
        policies,
        [Some("compact".to_string()), Some("delete".to_string())]
    );
    assert_eq!(kafka.watermarks("table").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_per_partition_and_no_topic_created_by_asking() {
    let broker = TestBroker::start("watermarks");
    let kafka = broker.kafka();
    kafka.ensure_topics(&[topic("wm", 3)]).await.unwrap();
    assert_eq!(kafka.watermarks("wm").await.unwrap(), [(0, 0); 3]);
    kafka
        .send(vec![
            record("wm", Some(0), "a", "1"),
            record("wm", Some(2), "b", "2"),
            record("wm", Some(2), "c", "3"),
        ])
        .await
        .unwrap();
    assert_eq!(
        kafka.watermarks("wm").await.unwrap(),
        [(0, 1), (0, 0), (0, 2)]
    );

    // The broker creates topics on Metadata requests by default; asking for the
    // watermarks of a missing topic must not create it.
    let missing = kafka.watermarks("missing").await.unwrap_err();
    assert!(missing.to_string().contains("missing"), "{missing}");
    assert!(kafka.watermarks("missing").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_in_the_partition_murmur2_gives_them_as_on_the_embedded_log() {
    let broker = TestBroker::start("murmur2");
    let kafka = broker.kafka();
    let partitions = 7;
    kafka
        .ensure_topics(&[topic("keys", partitions)])
        .await
        .unwrap();
    let keys = [
        "21",
        "foobar",
        "a",
        "order-1",
        "order-2",
        "customer-42",
        "c1",
        "",
        "ключ",
        "x y z",
        "a-little-bit-long-string",
    ];
    let sent = kafka
        .send(keys.iter().map(|k| record("keys", None, k, "v")).collect())
        .await
        .unwrap();
    for (key, s) in keys.iter().zip(&sent) {
        let expected = runnel_core::partitioner::partition_for_key(key.as_bytes(), partitions);
        assert_eq!(s.partition, expected as i32, "key {key:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_is_assigned_then_gets_records_in_offset_order() {
    let broker = TestBroker::start("assigned");
    let kafka = broker.kafka();
    kafka.ensure_topics(&[topic("g", 2)]).await.unwrap();
    let sends: Vec<OutRecord> = (0..10)
        .map(|i| record("g", Some(i % 2), &format!("k{i}"), &format!("v{i}")))
        .collect();
    kafka.send(sends).await.unwrap();

    let mut m = kafka
        .subscribe(member("assigned", &["g"], "m0"))
        .await
        .unwrap();
    let mut tps = assigned(&mut m).await;
    tps.sort();
    assert_eq!(
        tps,
        [TopicPartition::new("g", 0), TopicPartition::new("g", 1)]
    );
    let got = records(&mut m, 10).await;
    for tp in &tps {
        assert_eq!(offsets_of(&got, tp), [0, 1, 2, 3, 4], "{tp}");
    }
    // Nothing more: the member goes idle.
    until(&mut m, "idle", |d| {
        matches!(d, Delivery::Idle).then_some(())
    })
    .await;
    m.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_member_resumes_after_the_committed_offset() {
    let broker = TestBroker::start("resume");
    let kafka = broker.kafka();
    kafka.ensure_topics(&[topic("r", 1)]).await.unwrap();
    kafka
        .send(
            (0..6)
                .map(|i| record("r", Some(0), "k", &i.to_string()))
                .collect(),
        )
        .await
        .unwrap();
    let tp = TopicPartition::new("r", 0);

    let mut first = kafka
        .subscribe(member("resume", &["r"], "first"))
        .await
        .unwrap();
    assert_eq!(assigned(&mut first).await, std::slice::from_ref(&tp));
    assert_eq!(
        offsets_of(&records(&mut first, 6).await, &tp),
        [0, 1, 2, 3, 4, 5]
    );
    first.commit(vec![(tp.clone(), 3)]).await.unwrap();
    assert_eq!(kafka.committed("resume", "r").await.unwrap(), [(0, 3)]);
    first.close().await.unwrap();

    let mut second = kafka
        .subscribe(member("resume", &["r"], "second"))
        .await
        .unwrap();
    assert_eq!(assigned(&mut second).await, std::slice::from_ref(&tp));
    assert_eq!(offsets_of(&records(&mut second, 3).await, &tp), [3, 4, 5]);
    second.close().await.unwrap();
    assert!(kafka.committed("nobody", "r").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_member_commits_nothing_more_and_does_not_hold_the_group() {
    let broker = TestBroker::start("dropped");
    let kafka = broker.kafka();
    kafka.ensure_topics(&[topic("d", 1)]).await.unwrap();
    kafka
        .send(
            (0..4)
                .map(|i| record("d", Some(0), "k", &i.to_string()))
                .collect(),
        )
        .await
        .unwrap();
    let tp = TopicPartition::new("d", 0);
    // A long rebalance timeout: if the dropped member's last revoke callback waited
    // for an answer, the successor would wait that long.
    let slow = |client: &str| MemberOptions {
        rebalance_timeout: Duration::from_secs(120),
        ..member("dropped", &["d"], client)
    };

    let mut first = kafka.subscribe(slow("first")).await.unwrap();
    assert_eq!(assigned(&mut first).await, std::slice::from_ref(&tp));
    records(&mut first, 4).await;
    first.commit(vec![(tp.clone(), 2)]).await.unwrap();
    drop(first);

    let started = Instant::now();
    let mut second = kafka.subscribe(slow("second")).await.unwrap();
    assert_eq!(assigned(&mut second).await, std::slice::from_ref(&tp));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(offsets_of(&records(&mut second, 2).await, &tp), [2, 3]);
    assert_eq!(kafka.committed("dropped", "d").await.unwrap(), [(0, 2)]);
    second.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_splits_the_partitions_after_the_first_commits_at_revocation() {
    let broker = TestBroker::start("split");
    let kafka = broker.kafka();
    kafka.ensure_topics(&[topic("s", 4)]).await.unwrap();
    kafka
        .send(
            (0..8)
                .map(|i| record("s", Some(i % 4), "k", &i.to_string()))
                .collect(),
        )
        .await
        .unwrap();
    let all: Vec<TopicPartition> = (0..4).map(|p| TopicPartition::new("s", p)).collect();

    let mut a = kafka.subscribe(member("split", &["s"], "a")).await.unwrap();
    let mut owned = assigned(&mut a).await;
    owned.sort();
    assert_eq!(owned, all);
    let got = records(&mut a, 8).await;
    assert_eq!(got.len(), 8);

    let mut b = kafka.subscribe(member("split", &["s"], "b")).await.unwrap();
    // The first member hears of the rebalance at a heartbeat and must answer before the
    // group goes on: it has handled offset 0 of every partition.
    let mut revoking = until(&mut a, "revocation", |d| match d {
        Delivery::Revoking(tps) => Some(tps),
        _ => None,
    })
    .await;
    revoking.sort();
    assert_eq!(revoking, all);
    // The rebalance waits for the answer: meanwhile the newcomer gets nothing.
    let held = Instant::now() + Duration::from_secs(1);
    while Instant::now() < held {
        match b.next(Duration::from_millis(100)).await.unwrap() {
            Delivery::Idle => {}
            d => panic!("the newcomer got {d:?} before the revocation was answered"),
        }
    }
    a.revoked(all.iter().map(|tp| (tp.clone(), 1)).collect())
        .await
        .unwrap();

    let mut of_a = assigned(&mut a).await;
    let mut of_b = assigned(&mut b).await;
    assert_eq!((of_a.len(), of_b.len()), (2, 2), "{of_a:?} {of_b:?}");
    let mut union: Vec<TopicPartition> = of_a.iter().chain(&of_b).cloned().collect();
    union.sort();
    assert_eq!(union, all);
    of_a.sort();
    of_b.sort();

    // Both resume from the commit made at revocation.
    for (m, tps) in [(&mut a, &of_a), (&mut b, &of_b)] {
        let got = records(m, 2).await;
        for tp in tps {
            assert_eq!(offsets_of(&got, tp), [1], "{tp}");
        }
    }
    assert_eq!(
        kafka.committed("split", "s").await.unwrap(),
        [(0, 1), (1, 1), (2, 1), (3, 1)]
    );
    b.close().await.unwrap();
    a.close().await.unwrap();
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct CustomerUpdated {
    id: String,
    email: String,
}
event!(CustomerUpdated, type = "customerUpdated", topic = "customers", key = |e| e.id.clone());

#[derive(Clone, Debug, Serialize, Deserialize)]
struct OrderCreated {
    order: String,
    customer: String,
}
event!(OrderCreated, type = "orderCreated", topic = "orders", key = |e| e.order.clone());

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct NotificationSent {
    order: String,
    email: String,
}
event!(NotificationSent, type = "notificationSent", topic = "notifications", key = |e| e.order.clone());

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Customer {
    email: String,
}

async fn notify(
    order: OrderCreated,
    customers: TableRef<Customer>,
    emit: Emitter,
) -> Result<(), HandlerError> {
    let c = customers
        .get(&order.customer)?
        .ok_or_else(|| HandlerError::not_yet("customer unknown"))?;
    emit.emit(&NotificationSent {
        order: order.order,
        email: c.email,
    });
    Ok(())
}

fn notifications() -> Service {
    Service::new("notifications")
        .table(
            Table::<Customer>::named("customers").upsert::<CustomerUpdated>(|e| {
                Some(Customer {
                    email: e.email.clone(),
                })
            }),
        )
        .on::<OrderCreated, _>(notify)
        .emits::<NotificationSent>()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifications_service_restores_its_table_joins_and_emits_over_kafka() {
    let broker = TestBroker::start("service");
    let kafka = broker.kafka();
    let trace = runnel_services::TraceParent::new_root(&mut || 42);
    // The customer is there before the service starts: the table restores it.
    kafka
        .ensure_topics(&[TopicSpec {
            name: "customers".into(),
            partitions: 2,
            compacted: true,
        }])
        .await
        .unwrap();
    kafka
        .send(vec![runnel_services::event_record(
            &CustomerUpdated {
                id: "c1".into(),
                email: "a@x".into(),
            },
            "i1",
            "test",
            &trace,
        )])
        .await
        .unwrap();

    let rt = Runtime::new(kafka.clone())
        .state_dir(broker.dir.0.join("state"))
        .session_timeout(Duration::from_secs(6));
    let mut h = rt.start(notifications(), "0").await.unwrap();
    tokio::time::timeout(PATIENCE, h.wait_ready())
        .await
        .expect("ready in time")
        .unwrap();
    let customers = h.table::<Customer>("customers").unwrap();
    assert_eq!(
        customers.get("c1").unwrap(),
        Some(Customer {
            email: "a@x".into()
        })
    );

    kafka
        .send(vec![runnel_services::event_record(
            &OrderCreated {
                order: "o1".into(),
                customer: "c1".into(),
            },
            "i2",
            "test",
            &trace,
        )])
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while h.metrics().handled < 1 {
        assert!(Instant::now() < deadline, "not handled: {:?}", h.metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let wm = kafka.watermarks("notifications").await.unwrap();
    assert_eq!(wm.iter().map(|(_, h)| h).sum::<i64>(), 1);
    let from = wm
        .iter()
        .enumerate()
        .map(|(p, _)| (TopicPartition::new("notifications", p as i32), 0))
        .collect();
    let sent = read_n(&kafka, from, 1).await;
    let n: NotificationSent = runnel_services::decode(sent[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(
        n,
        NotificationSent {
            order: "o1".into(),
            email: "a@x".into()
        }
    );
    assert_eq!(sent[0].header("ce_type"), Some(&b"notificationSent"[..]));
    h.stop().await.unwrap();
    // Stopping committed what was handled.
    let committed: i64 = kafka
        .committed("notifications", "orders")
        .await
        .unwrap()
        .iter()
        .map(|(_, o)| o)
        .sum();
    assert_eq!(committed, 1);
}

async fn count_order(_o: OrderCreated) -> Result<(), HandlerError> {
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_name_that_is_not_utf8_is_dead_lettered_not_a_dead_consumer() {
    use std::io::Write;
    use std::os::unix::ffi::OsStrExt;
    let broker = TestBroker::start("badheader");
    let kafka = broker.kafka();
    kafka.ensure_topics(&[topic("orders", 1)]).await.unwrap();
    // kcat hands the header's bytes over as given: a name that is not UTF-8, which
    // rdkafka's header access panics on.
    let mut kcat = std::process::Command::new("kcat")
        .args([
            "-P",
            "-b",
            &broker.addr.to_string(),
            "-t",
            "orders",
            "-p",
            "0",
        ])
        .arg("-H")
        .arg(std::ffi::OsStr::from_bytes(b"\xff\xfe=v"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/test installs it)");
    kcat.stdin.take().unwrap().write_all(b"not json\n").unwrap();
    assert!(kcat.wait().unwrap().success());
    let trace = runnel_services::TraceParent::new_root(&mut || 7);
    kafka
        .send(vec![runnel_services::event_record(
            &OrderCreated {
                order: "o1".into(),
                customer: "c1".into(),
            },
            "good",
            "test",
            &trace,
        )])
        .await
        .unwrap();

    let rt = Runtime::new(kafka.clone())
        .state_dir(broker.dir.0.join("state"))
        .session_timeout(Duration::from_secs(6));
    let h = rt
        .start(
            Service::new("orders-seen").on::<OrderCreated, _>(count_order),
            "0",
        )
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while h.metrics().handled < 1 || h.metrics().dead_lettered < 1 {
        assert!(Instant::now() < deadline, "{:?}", h.metrics());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dead = read_n(
        &kafka,
        vec![(TopicPartition::new("orders-seen.dlq", 0), 0)],
        1,
    )
    .await;
    assert_eq!(dead[0].value.as_deref(), Some(&b"not json"[..]));
    let error = String::from_utf8_lossy(dead[0].header("runnel_dlq_error").unwrap()).into_owned();
    assert!(error.contains("not valid UTF-8"), "{error}");
    h.stop().await.unwrap();
}
