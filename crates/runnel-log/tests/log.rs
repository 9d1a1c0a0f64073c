//! Behaviour of the log through its public API, on the simulated file system.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use runnel_log::{
    BatchError, CleanupPolicy, Durability, LogError, Offset, PartitionId, TopicConfig,
};

fn part(log: &runnel_log::Log, t: &str) -> Arc<runnel_log::Partition> {
    log.partition(t, PartitionId(0)).unwrap()
}

#[test]
fn append_assigns_consecutive_offsets_and_reads_return_whole_batches() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    let a = p.append(&batch(3, 10, 5, 1)).unwrap();
    let b = p.append(&batch(2, 10, 6, 2)).unwrap();
    assert_eq!((a.base_offset, a.last_offset), (Offset(0), Offset(2)));
    assert_eq!((b.base_offset, b.last_offset), (Offset(3), Offset(4)));
    assert_eq!(p.high_watermark(), Offset(5));
    assert_eq!(p.log_end_offset(), Offset(5));
    // Reading offset 1 returns the batch that contains it, from its start.
    let r = p.read(Offset(1), 1 << 20).unwrap();
    assert_eq!(split(&r.bytes), vec![(0, 3, 1), (3, 2, 2)]);
    assert_eq!(r.high_watermark, Offset(5));
    // At the high watermark: empty, not an error.
    assert!(p.read(Offset(5), 1 << 20).unwrap().bytes.is_empty());
    // Past it: out of range.
    assert!(matches!(
        p.read(Offset(6), 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn read_returns_at_least_one_batch_even_when_larger_than_max_bytes() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    p.append(&batch(1, 5000, 1, 7)).unwrap();
    p.append(&batch(1, 5000, 1, 8)).unwrap();
    let r = p.read(Offset(0), 10).unwrap();
    assert_eq!(split(&r.bytes), vec![(0, 1, 7)]);
    let r = p.read(Offset(1), 10).unwrap();
    assert_eq!(split(&r.bytes), vec![(1, 1, 8)]);
}

#[test]
fn invalid_batches_get_typed_errors_and_leave_the_log_unchanged() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    p.append(&batch(1, 10, 1, 1)).unwrap();
    let good = batch(2, 10, 1, 2);

    let truncated = &good[..good.len() - 3];
    assert!(matches!(
        p.append(truncated),
        Err(LogError::Batch(BatchError::Truncated { .. }))
    ));

    let mut magic = good.clone();
    magic[16] = 1;
    assert!(matches!(
        p.append(&magic),
        Err(LogError::Batch(BatchError::BadMagic { magic: 1 }))
    ));

    let mut crc = good.clone();
    let last = crc.len() - 1;
    crc[last] ^= 1;
    assert!(matches!(
        p.append(&crc),
        Err(LogError::Batch(BatchError::BadCrc { .. }))
    ));

    let mut negative = good.clone();
    negative[57..61].copy_from_slice(&(-1i32).to_be_bytes());
    runnel_log::batch::seal_crc(&mut negative);
    assert!(matches!(
        p.append(&negative),
        Err(LogError::Batch(BatchError::BadRecordCount { count: -1 }))
    ));

    let huge = batch(1, 2 << 20, 1, 3);
    assert!(matches!(
        p.append(&huge),
        Err(LogError::Batch(BatchError::TooLarge { .. }))
    ));

    assert_eq!(p.log_end_offset(), Offset(1));
    assert_eq!(
        split(&p.read(Offset(0), 1 << 20).unwrap().bytes),
        vec![(0, 1, 1)]
    );
    // The log still works.
    assert_eq!(p.append(&good).unwrap().base_offset, Offset(1));
}

#[test]
fn segments_roll_by_size_and_reads_cross_them() {
    let sim = Sim::new(small_segments());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    for i in 0..40u8 {
        p.append(&batch(2, 300, i64::from(i), i)).unwrap();
    }
    assert!(p.segment_count() > 3, "segments: {}", p.segment_count());
    let got = read_all(&log, "t", 0, 0);
    assert_eq!(got.len(), 40);
    for (i, (base, count, tag)) in got.iter().enumerate() {
        assert_eq!((*base, *count, *tag), (2 * i as u64, 2, i as u8));
    }
    // Every offset maps to the batch that contains it, through the sparse index.
    for o in 0..80u64 {
        let r = p.read(Offset(o), 1).unwrap();
        assert_eq!(split(&r.bytes)[0].0, o - o % 2);
    }
}

#[test]
fn segments_roll_by_age() {
    let cfg = TopicConfig {
        segment_ms: 1000,
        ..TopicConfig::default()
    };
    let sim = Sim::new(cfg);
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    p.append(&batch(1, 10, 1, 1)).unwrap();
    p.append(&batch(1, 10, 1, 1)).unwrap();
    assert_eq!(p.segment_count(), 1);
    sim.clock.advance(1000);
    p.append(&batch(1, 10, 1, 1)).unwrap();
    assert_eq!(p.segment_count(), 2);
}

#[test]
fn offset_for_timestamp_finds_the_first_batch_at_or_after() {
    let sim = Sim::new(small_segments());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    // Timestamps are not monotonic: 10, 30, 20, 40, ... (batch i has ts 10*(i+1), with
    // every odd pair swapped).
    let mut ts = Vec::new();
    for i in 0..60i64 {
        let t = if i % 4 == 1 {
            (i + 2) * 10
        } else if i % 4 == 2 {
            i * 10
        } else {
            (i + 1) * 10
        };
        ts.push(t);
        p.append(&batch(1, 200, t, 0)).unwrap();
    }
    for target in [-5, 0, 10, 15, 20, 25, 30, 45, 200, 333, 600, 601, 10_000] {
        let want = ts.iter().position(|&t| t >= target);
        let got = p
            .offset_for_timestamp(target)
            .unwrap()
            .map(|b| b.base_offset.0 as usize);
        assert_eq!(got, want, "target {target}");
    }
    // The same answers after a clean reopen (from index files) and a crash (rebuilt).
    log.close().unwrap();
    let log = sim.open();
    let p = part(&log, "t");
    for target in [15, 333, 600] {
        let want = ts.iter().position(|&t| t >= target);
        let got = p
            .offset_for_timestamp(target)
            .unwrap()
            .map(|b| b.base_offset.0 as usize);
        assert_eq!(got, want, "target {target} after reopen");
    }
}

#[test]
fn retention_by_time_and_size_deletes_whole_old_segments() {
    let mut cfg = small_segments();
    cfg.retention_ms = Some(10_000);
    let sim = Sim::new(cfg);
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    let now = 1_000_000;
    for i in 0..30 {
        // The first 20 batches are old.
        let ts = if i < 20 { now - 50_000 } else { now };
        p.append(&batch(1, 400, ts, i as u8)).unwrap();
    }
    let segments = p.segment_count();
    let deleted = log.apply_retention();
    assert!(deleted > 0);
    assert_eq!(p.segment_count(), segments - deleted);
    let start = p.log_start_offset();
    assert!(start.0 > 0 && start.0 <= 20, "start {start}");
    assert!(matches!(
        p.read(Offset(0), 100),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(read_all(&log, "t", 0, start.0).len() as u64, 30 - start.0);

    // Size: keep at most ~2 segments of data.
    log.alter_topic_config(
        "t",
        &BTreeMap::from([("retention.bytes".into(), "8192".into())]),
        &[],
    )
    .unwrap();
    log.apply_retention();
    assert!(p.size_bytes() <= 8192 + 4096, "size {}", p.size_bytes());
    assert_eq!(p.log_end_offset(), Offset(30));
}

#[test]
fn retention_rolls_an_expired_active_segment_so_quiet_topics_shrink() {
    let cfg = TopicConfig {
        retention_ms: Some(1000),
        ..TopicConfig::default()
    };
    let sim = Sim::new(cfg);
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    p.append(&batch(5, 10, 1_000_000, 0)).unwrap();
    sim.clock.advance(5000);
    log.apply_retention();
    assert_eq!(p.log_start_offset(), Offset(5));
    assert_eq!(p.size_bytes(), 0);
    assert_eq!(
        p.append(&batch(1, 10, 1, 0)).unwrap().base_offset,
        Offset(5)
    );
}

#[test]
fn compact_only_topics_are_not_deleted_by_retention() {
    let mut cfg = small_segments();
    cfg.retention_ms = Some(1);
    cfg.cleanup_policy = CleanupPolicy::Compact;
    let sim = Sim::new(cfg);
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    for _ in 0..20 {
        p.append(&batch(1, 400, 0, 0)).unwrap();
    }
    assert_eq!(log.apply_retention(), 0);
    assert_eq!(p.log_start_offset(), Offset(0));
}

#[test]
fn delete_records_moves_the_log_start_and_survives_reopen() {
    let sim = Sim::new(small_segments());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    for i in 0..30 {
        p.append(&batch(1, 400, 0, i)).unwrap();
    }
    let before = p.segment_count();
    assert_eq!(p.delete_records(Offset(17)).unwrap(), Offset(17));
    assert!(p.segment_count() < before);
    assert!(matches!(
        p.read(Offset(16), 10),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(split(&p.read(Offset(17), 10).unwrap().bytes)[0].0, 17);
    assert!(matches!(
        p.delete_records(Offset(31)),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    drop(p);
    drop(log); // a crash, not a clean close
    let log = sim.open();
    assert_eq!(part(&log, "t").log_start_offset(), Offset(17));
}

#[test]
fn truncate_removes_the_tail_including_a_split_batch() {
    let sim = Sim::new(small_segments());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    for i in 0..30 {
        p.append(&batch(2, 400, 0, i)).unwrap();
    }
    // Offset 21 lies inside the batch [20, 21]: that batch goes too.
    assert_eq!(p.truncate_to(Offset(21)).unwrap(), Offset(20));
    assert_eq!(p.high_watermark(), Offset(20));
    assert_eq!(read_all(&log, "t", 0, 0).len(), 10);
    assert_eq!(
        p.append(&batch(1, 10, 0, 99)).unwrap().base_offset,
        Offset(20)
    );
    drop(p);
    drop(log);
    let log = sim.open();
    let got = read_all(&log, "t", 0, 0);
    assert_eq!(got.len(), 11);
    assert_eq!(got[10], (20, 1, 99));
}

#[test]
fn topics_and_their_config_survive_a_restart() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    let overrides = BTreeMap::from([
        ("retention.ms".to_string(), "60000".to_string()),
        ("runnel.durability".to_string(), "never".to_string()),
    ]);
    log.create_topic("orders", 3, &overrides).unwrap();
    log.create_topic("customers", 1, &no_overrides()).unwrap();
    log.partition("orders", PartitionId(2))
        .unwrap()
        .append(&batch(4, 10, 0, 0))
        .unwrap();
    log.add_partitions("customers", 2).unwrap();
    log.close().unwrap();

    let log = sim.open();
    assert!(
        log.recovery_events().is_empty(),
        "{:?}",
        log.recovery_events()
    );
    let names: Vec<String> = log.topics().iter().map(|t| t.name().to_string()).collect();
    assert_eq!(names, ["customers", "orders"]);
    let orders = log.topic("orders").unwrap();
    assert_eq!(orders.partition_count(), 3);
    assert_eq!(orders.config().retention_ms, Some(60_000));
    assert_eq!(orders.config().durability, Durability::Never);
    assert_eq!(orders.overrides(), overrides);
    assert_eq!(log.topic("customers").unwrap().partition_count(), 2);
    assert_eq!(
        log.partition("orders", PartitionId(2))
            .unwrap()
            .log_end_offset(),
        Offset(4)
    );
}

#[test]
fn topic_admin_errors_are_typed() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    assert!(matches!(
        log.create_topic("t", 1, &no_overrides()),
        Err(LogError::TopicExists(_))
    ));
    assert!(matches!(
        log.create_topic("a/b", 1, &no_overrides()),
        Err(LogError::InvalidTopicName { .. })
    ));
    assert!(matches!(
        log.create_topic("z", 0, &no_overrides()),
        Err(LogError::InvalidPartitions { .. })
    ));
    let bad = BTreeMap::from([("segment.bytes".to_string(), "nope".to_string())]);
    assert!(matches!(
        log.create_topic("z", 1, &bad),
        Err(LogError::Config(_))
    ));
    assert!(log.topic("z").is_none());
    assert!(matches!(
        log.add_partitions("t", 1),
        Err(LogError::InvalidPartitions { .. })
    ));
    assert!(matches!(
        log.partition("t", PartitionId(5)),
        Err(LogError::UnknownPartition { .. })
    ));
    assert!(matches!(
        log.delete_topic("nope"),
        Err(LogError::UnknownTopic(_))
    ));
}

#[test]
fn deleted_topics_are_gone_and_their_handles_refuse_work() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 2, &no_overrides()).unwrap();
    let p = part(&log, "t");
    p.append(&batch(1, 10, 0, 0)).unwrap();
    log.delete_topic("t").unwrap();
    assert!(log.topic("t").is_none());
    assert!(p.is_deleted());
    assert!(matches!(
        p.append(&batch(1, 10, 0, 0)),
        Err(LogError::UnknownTopic(_))
    ));
    assert!(
        sim.storage
            .files()
            .iter()
            .all(|f| !f.starts_with("/data/topics/t"))
    );
    // The name can be reused, starting from offset 0.
    log.create_topic("t", 1, &no_overrides()).unwrap();
    assert_eq!(
        part(&log, "t")
            .append(&batch(1, 10, 0, 0))
            .unwrap()
            .base_offset,
        Offset(0)
    );
}

#[test]
fn a_failed_fsync_poisons_the_partition() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    p.append(&batch(1, 10, 0, 0)).unwrap();
    sim.storage.fail_syncs_after(0);
    assert!(p.append(&batch(1, 10, 0, 0)).is_err());
    assert!(p.poisoned().is_some());
    sim.storage.fail_syncs_after(-1);
    // It does not pretend: later appends fail too, and the unsynced batch stays unseen.
    assert!(matches!(
        p.append(&batch(1, 10, 0, 0)),
        Err(LogError::Poisoned { .. })
    ));
    assert_eq!(p.high_watermark(), Offset(1));
    assert!(log.close().is_err());
}

#[test]
fn a_failed_directory_sync_at_roll_poisons_the_partition() {
    let sim = Sim::new(small_segments());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    let segments = p.segment_count();
    sim.storage.fail_dir_syncs(true);
    // Append until a roll needs the new segment's name made durable.
    let mut failed = None;
    for i in 0..100u8 {
        if let Err(e) = p.append(&batch(1, 300, 0, i)) {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.expect("a roll came and failed");
    assert!(failed.to_string().contains("sync directory"), "{failed}");
    assert!(p.poisoned().is_some());
    sim.storage.fail_dir_syncs(false);
    // Not EEXIST at every later roll, and not appends to a file whose name may be lost:
    // the partition says why it refuses writes.
    assert!(matches!(
        p.append(&batch(1, 300, 0, 0)),
        Err(LogError::Poisoned { .. })
    ));
    assert_eq!(p.segment_count(), segments);
}

#[test]
fn adding_partitions_again_after_a_failed_addition_works() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    // The new partition's directory is made, then the metadata write fails.
    sim.storage.fail_writes(true);
    assert!(log.add_partitions("t", 2).is_err());
    sim.storage.fail_writes(false);
    assert_eq!(log.topic("t").unwrap().partition_count(), 1);
    log.add_partitions("t", 2).unwrap();
    let p = log.partition("t", PartitionId(1)).unwrap();
    assert_eq!(
        p.append(&batch(1, 10, 0, 0)).unwrap().base_offset,
        Offset(0)
    );
}

#[test]
fn a_failed_write_leaves_nothing_behind() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    p.append(&batch(1, 10, 0, 0)).unwrap();
    sim.storage.fail_writes(true);
    assert!(matches!(
        p.append(&batch(1, 10, 0, 0)),
        Err(LogError::Io { .. })
    ));
    sim.storage.fail_writes(false);
    assert_eq!(
        p.append(&batch(1, 10, 0, 5)).unwrap().base_offset,
        Offset(1)
    );
    assert_eq!(read_all(&log, "t", 0, 0), vec![(0, 1, 0), (1, 1, 5)]);
}

#[test]
fn group_commit_shares_fsyncs_between_concurrent_appenders() {
    let sim = Sim::new(TopicConfig::default());
    let log = Arc::new(sim.open());
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let before = sim.storage.sync_count();
    let threads = 8;
    let per_thread = 200;
    std::thread::scope(|s| {
        for t in 0..threads {
            let log = log.clone();
            s.spawn(move || {
                let p = log.partition("t", PartitionId(0)).unwrap();
                for _ in 0..per_thread {
                    p.append(&batch(1, 100, 0, t)).unwrap();
                }
            });
        }
    });
    let syncs = sim.storage.sync_count() - before;
    let appends = (threads as u64) * per_thread;
    let p = part(&log, "t");
    assert_eq!(p.high_watermark(), Offset(appends));
    // Every append was acknowledged after a sync that covered it, and syncs never
    // outnumber appends. (How many are shared depends on scheduling; the benchmark
    // measures it.)
    assert!(syncs <= appends, "{syncs} syncs for {appends} appends");
    assert!(syncs >= 1);
}

#[test]
fn durability_never_makes_appends_visible_without_fsync() {
    let cfg = TopicConfig {
        durability: Durability::Never,
        ..TopicConfig::default()
    };
    let sim = Sim::new(cfg);
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    let before = sim.storage.sync_count();
    for _ in 0..10 {
        p.append(&batch(1, 10, 0, 0)).unwrap();
    }
    assert_eq!(sim.storage.sync_count(), before);
    assert_eq!(p.high_watermark(), Offset(10));
    p.flush().unwrap();
    assert_eq!(sim.storage.sync_count(), before + 1);
}

#[test]
fn durability_interval_flushes_when_due() {
    let cfg = TopicConfig {
        durability: "interval:100".parse().unwrap(),
        ..TopicConfig::default()
    };
    let sim = Sim::new(cfg);
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    let before = sim.storage.sync_count();
    p.append(&batch(1, 10, 0, 0)).unwrap();
    let now = runnel_log::Clock::now_ms(&*sim.clock);
    p.flush_if_due(now).unwrap();
    assert_eq!(sim.storage.sync_count(), before, "not due yet");
    p.flush_if_due(now + 100).unwrap();
    assert_eq!(sim.storage.sync_count(), before + 1);
    p.flush_if_due(now + 300).unwrap();
    assert_eq!(sim.storage.sync_count(), before + 1, "nothing new to sync");
}

#[test]
fn the_open_segment_file_budget_is_respected() {
    let mut cfg = common::config(small_segments());
    cfg.open_segment_files_max = 2;
    let storage = runnel_log::sim::SimStorage::new();
    let log = runnel_log::Log::open_with(cfg, Arc::new(storage), Arc::new(runnel_log::SystemClock))
        .unwrap();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    for i in 0..40 {
        p.append(&batch(1, 400, 0, i)).unwrap();
    }
    assert!(p.segment_count() > 4);
    // Reads across every closed segment still work with only two cached handles.
    assert_eq!(read_all(&log, "t", 0, 0).len(), 40);
}

#[tokio::test]
async fn the_high_watermark_notification_wakes_a_waiter() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = part(&log, "t");
    let mut rx = p.subscribe();
    let waiter = tokio::spawn(async move {
        rx.wait_for(|hwm| *hwm >= Offset(1))
            .await
            .map(|h| *h)
            .unwrap()
    });
    tokio::task::yield_now().await;
    p.append(&batch(1, 10, 0, 0)).unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("woken in time")
        .unwrap();
    assert_eq!(seen, Offset(1));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = std::env::temp_dir().join(format!("runnel-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let log = runnel_log::Log::open(runnel_log::LogConfig::new(&dir)).unwrap();
    let second = runnel_log::Log::open(runnel_log::LogConfig::new(&dir));
    assert!(matches!(second, Err(LogError::Locked { .. })), "{second:?}");
    log.close().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
