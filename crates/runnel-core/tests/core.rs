//! `Core` end to end on a real log in a temporary directory: the produce path (partition
//! choice, rules, idempotence) and the one reader over compacted batches.

mod common;
use common::fixture;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use runnel_core::ProduceError;
use runnel_core::encode::NewRecord;
use runnel_core::partitioner::partition_for_key;
use runnel_core::producer_state::SequenceError;
use runnel_core::records::read;
use runnel_core::topics::OFFSETS_TOPIC;
use runnel_log::batch::{build_batch, seal_crc};
use runnel_log::{Log, LogConfig, PartitionId};

fn record(key: Option<&str>, value: &str) -> NewRecord {
    NewRecord {
        key: key.map(|k| k.as_bytes().to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers: vec![("ce_type".into(), b"Test".to_vec())],
        timestamp_ms: Some(1_000),
    }
}

#[test]
fn produce_places_records_as_kafka_clients_do_and_reads_them_back() {
    let f = fixture("produce");
    f.core.log().create_topic("t", 3, &BTreeMap::new()).unwrap();
    let placed = f
        .core
        .produce(
            "t",
            vec![
                (None, record(Some("customer-1"), "a")),
                (Some(2), record(None, "b")),
                (None, record(Some("customer-1"), "c")),
            ],
        )
        .unwrap();
    let keyed = partition_for_key(b"customer-1", 3);
    assert_eq!(placed[0].0, keyed);
    assert_eq!(
        placed[2],
        (keyed, placed[0].1 + 1),
        "one batch per partition"
    );
    assert_eq!(placed[1].0, 2);

    let p = f.core.log().partition("t", PartitionId(keyed)).unwrap();
    let (records, next) = read(&p, 0, 1 << 20).unwrap();
    assert_eq!(next, p.high_watermark().0 as i64);
    let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
    let mut want = vec![Bytes::from_static(b"a"), Bytes::from_static(b"c")];
    if keyed == 2 {
        want.insert(1, Bytes::from_static(b"b"));
    }
    assert_eq!(values, want);
    assert_eq!(
        records[0].headers,
        vec![(
            Bytes::from_static(b"ce_type"),
            Some(Bytes::from_static(b"Test"))
        )]
    );
    let counters = f.core.topic_counters("t");
    assert_eq!(
        counters
            .records_in
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );
}

#[test]
fn produce_refuses_internal_unknown_and_missing_partitions() {
    let f = fixture("refuse");
    f.core.log().create_topic("t", 1, &BTreeMap::new()).unwrap();
    let one = || vec![(None, record(None, "x"))];
    assert!(matches!(
        f.core.produce(OFFSETS_TOPIC, one()),
        Err(ProduceError::InternalTopic { .. })
    ));
    assert!(matches!(
        f.core.produce("nope", one()),
        Err(ProduceError::UnknownTopic { .. })
    ));
    assert!(matches!(
        f.core.produce("t", vec![(Some(1), record(None, "x"))]),
        Err(ProduceError::UnknownPartition { partition: 1, .. })
    ));
    assert_eq!(f.core.produce("t", Vec::new()).unwrap(), Vec::new());
}

/// An idempotent batch from producer 9, epoch 0, starting at `sequence`.
fn idempotent(sequence: i32) -> Vec<u8> {
    let mut b = build_batch(&[(None, Some(b"v")), (None, Some(b"w"))], 0);
    b[43..51].copy_from_slice(&9i64.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    seal_crc(&mut b);
    b
}

#[test]
fn append_recognises_retries_and_refuses_gaps() {
    let f = fixture("idempotent");
    f.core.log().create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = f.core.partition_for_append("t", 0).unwrap();
    let first = f.core.append(&p, &idempotent(0), 9).unwrap().info();
    let retry = f.core.append(&p, &idempotent(0), 9).unwrap().info();
    assert_eq!(
        retry.base_offset, first.base_offset,
        "a retry gets its offsets"
    );
    assert_eq!(p.log_end_offset().0, 2, "and is not written twice");
    assert!(matches!(
        f.core.append(&p, &idempotent(5), 9),
        Err(ProduceError::Sequence(
            SequenceError::OutOfOrderSequence { .. }
        ))
    ));
    assert!(matches!(
        f.core.partition_for_append(OFFSETS_TOPIC, 0),
        Err(ProduceError::InternalTopic { .. })
    ));
}

#[test]
fn the_reader_steps_over_records_the_cleaner_removed() {
    let f = fixture("compacted");
    let overrides = BTreeMap::from([
        ("cleanup.policy".to_string(), "compact".to_string()),
        ("segment.bytes".to_string(), "1024".to_string()),
    ]);
    f.core.log().create_topic("c", 1, &overrides).unwrap();
    let p = f.core.log().partition("c", PartitionId(0)).unwrap();
    let pad = vec![b'x'; 300];
    // Offsets 0 ("a") and 1 ("b"), then "b" again and again: the cleaner keeps "a" at
    // offset 0 and removes offset 1 from the first batch, whose end stays 2.
    p.append(&build_batch(
        &[(Some(b"a"), Some(&pad)), (Some(b"b"), Some(&pad))],
        0,
    ))
    .unwrap();
    for _ in 0..10 {
        p.append(&build_batch(&[(Some(b"b"), Some(&pad))], 0))
            .unwrap();
    }
    p.clean().unwrap();
    let mut all = Vec::new();
    let mut next = 0;
    while next < p.high_watermark().0 as i64 {
        let (got, after) = read(&p, next, 1 << 20).unwrap();
        assert!(after > next, "every read moves on");
        all.extend(got);
        next = after;
    }
    assert_eq!(all[0].offset, 0);
    assert!(all[1].offset > 1, "offset 1 was compacted away");
    // From offset 1, one batch per read: the first read holds only offset 0, below
    // `from`, and the reader goes on instead of answering nothing.
    let (got, next) = read(&p, 1, 1).unwrap();
    assert!(!got.is_empty(), "stepped over the emptied tail of a batch");
    assert!(got.iter().all(|r| r.offset > 1));
    assert!(next > got.last().unwrap().offset);
    // At the high watermark: nothing, and the same offset.
    let end = p.high_watermark().0 as i64;
    assert_eq!(read(&p, end, 1).unwrap(), (Vec::new(), end));
}

#[test]
fn committed_offsets_survive_a_reopen() {
    let f = fixture("offsets");
    let commit = runnel_core::offsets::Committed {
        offset: 42,
        leader_epoch: -1,
        metadata: "m".into(),
        commit_ms: 1,
    };
    f.core
        .offsets()
        .write("g", &[(("t".into(), 0), Some(commit.clone()))])
        .unwrap();
    let reopened = runnel_core::offsets::OffsetStore::open(f.core.log().clone()).unwrap();
    assert_eq!(reopened.get("g", "t", 0), Some(commit));
}

#[test]
fn a_damaged_batch_in_the_offsets_topic_costs_its_commits_not_the_start() {
    let dir = std::env::temp_dir().join(format!("runnel-core-damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let open = || {
        let mut config = LogConfig::new(&dir);
        config.background = false;
        Arc::new(Log::open(config).unwrap())
    };
    let commit = |offset| runnel_core::offsets::Committed {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_ms: 1,
    };
    let log = open();
    let store = runnel_core::offsets::OffsetStore::open(log.clone()).unwrap();
    for (i, group) in ["a", "b", "c"].into_iter().enumerate() {
        store
            .write(group, &[(("t".into(), 0), Some(commit(i as i64)))])
            .unwrap();
    }
    drop(store);
    Arc::try_unwrap(log).unwrap().close().unwrap();
    // Flip a bit inside the second commit's batch (group "b"). After a clean shutdown
    // the segment is trusted at open; the damage is met when the store loads.
    let seg = dir
        .join("topics")
        .join(OFFSETS_TOPIC)
        .join("0")
        .join("00000000000000000000.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let first = runnel_log::batch::BatchHeader::parse(&bytes)
        .unwrap()
        .total_bytes() as usize;
    bytes[first + 70] ^= 0x10;
    std::fs::write(&seg, &bytes).unwrap();

    let store = runnel_core::offsets::OffsetStore::open(open()).unwrap();
    assert_eq!(store.get("a", "t", 0), Some(commit(0)));
    assert_eq!(store.get("b", "t", 0), None, "the damaged commit is lost");
    assert_eq!(store.get("c", "t", 0), Some(commit(2)));
    let _ = std::fs::remove_dir_all(&dir);
}
