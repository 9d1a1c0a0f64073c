//! Crash tests: power cuts, torn writes, flipped bits and damaged indexes, through the
//! simulated file system.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use runnel_log::recovery::RecoveryEvent;
use runnel_log::sim::CrashMode;
use runnel_log::{Offset, PartitionId, TopicConfig};

/// A tiny deterministic generator so each seed replays exactly.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn power_cut_at_random_points_keeps_every_acknowledged_batch() {
    let (mut torn_tails, mut lost_unacked) = (0, 0);
    for seed in 1..=40u64 {
        let mut rng = Rng(seed * 7919);
        let mut sim = Sim::new(small_segments());
        let log = Arc::new(sim.open());
        log.create_topic("t", 1, &no_overrides()).unwrap();
        let threads = 1 + rng.below(4) as usize;
        let per_thread = 5 + rng.below(30) as usize;
        let cut_after = rng.below((threads * per_thread) as u64) as usize;
        // Tags of batches whose append returned Ok, in completion order.
        let acked = Arc::new(Mutex::new(Vec::<u8>::new()));
        let done = Arc::new(AtomicUsize::new(0));
        let snapshot = std::thread::scope(|s| {
            for t in 0..threads {
                let (log, acked, done) = (log.clone(), acked.clone(), done.clone());
                s.spawn(move || {
                    let p = log.partition("t", PartitionId(0)).unwrap();
                    for i in 0..per_thread {
                        let tag = (t * per_thread + i) as u8;
                        p.append(&batch(1 + i % 3, 50 + 97 * i % 700, 0, tag))
                            .unwrap();
                        acked.lock().unwrap().push(tag);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
            // Cut the power once `cut_after` appends were acknowledged, while the
            // others are still writing.
            while done.load(Ordering::SeqCst) < cut_after {
                std::thread::yield_now();
            }
            let acked_before_cut = acked.lock().unwrap().clone();
            (
                acked_before_cut,
                sim.storage.power_cut(CrashMode::Torn { seed }),
            )
        });
        let (acked_before_cut, crashed) = snapshot;
        // The old log kept running on the old disk: its full order is the truth.
        let truth = read_all(&log, "t", 0, 0);
        drop(log);
        sim.storage = crashed;
        let log = sim.open();
        let recovered = read_all(&log, "t", 0, 0);
        torn_tails += usize::from(
            log.recovery_events()
                .iter()
                .any(|e| matches!(e, RecoveryEvent::Cut { .. })),
        );
        lost_unacked += usize::from(recovered.len() < truth.len());
        assert!(
            recovered.len() <= truth.len() && recovered[..] == truth[..recovered.len()],
            "seed {seed}: recovered log is not a prefix of what was written"
        );
        for tag in &acked_before_cut {
            assert!(
                recovered.iter().any(|b| b.2 == *tag),
                "seed {seed}: acknowledged batch {tag} lost"
            );
        }
        // The recovered log takes appends at the right offset.
        let p = log.partition("t", PartitionId(0)).unwrap();
        let end = recovered.last().map_or(0, |b| b.0 + u64::from(b.1));
        assert_eq!(
            p.append(&batch(1, 10, 0, 0)).unwrap().base_offset,
            Offset(end),
            "seed {seed}"
        );
    }
    // How often the cut landed mid-write depends on thread scheduling; the test below
    // tears tails deterministically.
    eprintln!("{torn_tails} torn tails cut, {lost_unacked} runs lost unacknowledged batches");
}

#[test]
fn power_cut_with_unsynced_data_recovers_a_clean_prefix() {
    let mut cfg = small_segments();
    cfg.durability = runnel_log::Durability::Never;
    let mut torn_tails = 0;
    for seed in 1..=30u64 {
        let mut sim = Sim::new(cfg.clone());
        let log = sim.open();
        log.create_topic("t", 1, &no_overrides()).unwrap();
        let p = log.partition("t", PartitionId(0)).unwrap();
        for i in 0..(10 + seed % 20) {
            p.append(&batch(
                1 + (i % 4) as usize,
                120 + 37 * i as usize % 300,
                0,
                i as u8,
            ))
            .unwrap();
        }
        let truth = read_all(&log, "t", 0, 0);
        sim.crash(CrashMode::Torn { seed });
        drop(p);
        drop(log);
        let log = sim.open();
        torn_tails += usize::from(
            log.recovery_events()
                .iter()
                .any(|e| matches!(e, RecoveryEvent::Cut { .. })),
        );
        let recovered = read_all(&log, "t", 0, 0);
        assert!(
            recovered[..] == truth[..recovered.len()],
            "seed {seed}: not a prefix"
        );
        // Sealed segments were synced when they rolled, so at most the active one is lost.
        assert!(truth.len() - recovered.len() <= 40, "seed {seed}");
    }
    assert!(
        torn_tails > 5,
        "only {torn_tails} of 30 power cuts tore a tail"
    );
}

#[test]
fn a_torn_final_write_is_cut_and_reported() {
    let mut sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = log.partition("t", PartitionId(0)).unwrap();
    for i in 0..5 {
        p.append(&batch(2, 100, 0, i)).unwrap();
    }
    drop(p);
    drop(log);
    sim.crash(CrashMode::DropUnsynced);
    let seg = sim.segment_files("t", 0).pop().unwrap();
    let mut bytes = sim.storage.file_bytes(&seg).unwrap();
    let good_len = bytes.len() as u64;
    let next = batch(2, 100, 0, 9);
    bytes.extend_from_slice(&next[..next.len() / 2]);
    sim.storage.set_file_bytes(&seg, bytes);

    let log = sim.open();
    let events = log.recovery_events();
    assert!(
        matches!(&events[..], [RecoveryEvent::Cut { path, position, bytes_cut, .. }]
            if *path == seg && *position == good_len && *bytes_cut == (next.len() / 2) as u64),
        "{events:?}"
    );
    assert_eq!(read_all(&log, "t", 0, 0).len(), 5);
    let p = log.partition("t", PartitionId(0)).unwrap();
    assert_eq!(
        p.append(&batch(1, 10, 0, 0)).unwrap().base_offset,
        Offset(10)
    );
}

/// Byte position of each batch in a segment file.
#[test]
fn a_flipped_bit_in_the_tail_segment_cuts_the_log_at_the_last_good_batch() {
    let mut sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = log.partition("t", PartitionId(0)).unwrap();
    for i in 0..20 {
        p.append(&batch(1, 200, 0, i)).unwrap();
    }
    drop(p);
    drop(log);
    sim.crash(CrashMode::DropUnsynced);
    let seg = sim.segment_files("t", 0).pop().unwrap();
    let positions = batch_positions(&sim.storage.file_bytes(&seg).unwrap());
    // A bit in the middle of batch 10's records.
    sim.storage.flip_bit(&seg, positions[10] + 100, 3);

    let log = sim.open();
    let events = log.recovery_events();
    assert!(
        matches!(&events[..], [RecoveryEvent::Cut { path, position, reason, .. }]
            if *path == seg && *position == positions[10] as u64 && reason.contains("CRC")),
        "{events:?}"
    );
    let got = read_all(&log, "t", 0, 0);
    assert_eq!(got.len(), 10);
    assert_eq!(
        log.partition("t", PartitionId(0)).unwrap().log_end_offset(),
        Offset(10)
    );
}

#[test]
fn a_hole_in_an_earlier_segment_removes_everything_after_it() {
    let mut sim = Sim::new(small_segments());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = log.partition("t", PartitionId(0)).unwrap();
    for i in 0..40 {
        p.append(&batch(1, 300, 0, i)).unwrap();
    }
    let segments = p.segment_count();
    assert!(segments >= 4);
    drop(p);
    drop(log);
    sim.crash(CrashMode::DropUnsynced);
    // Damage the last segment's predecessor and drop the recovery point, so recovery
    // must scan every segment (as after a crash before the first checkpoint).
    let files = sim.segment_files("t", 0);
    let victim = &files[files.len() - 2];
    let positions = batch_positions(&sim.storage.file_bytes(victim).unwrap());
    sim.storage.flip_bit(victim, positions[1] + 70, 0);
    let dir = victim.parent().unwrap().to_path_buf();
    sim.storage
        .set_file_bytes(&dir.join("recovery-point"), vec![0; 3]);

    let log = sim.open();
    let events = log.recovery_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RecoveryEvent::Cut { path, .. } if path == victim)),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, RecoveryEvent::SegmentsRemoved { count: 1, .. })),
        "{events:?}"
    );
    let p = log.partition("t", PartitionId(0)).unwrap();
    assert_eq!(p.segment_count(), segments - 1);
    let got = read_all(&log, "t", 0, 0);
    // Ordered, gapless, and ending right before the damaged batch.
    for (i, b) in got.iter().enumerate() {
        assert_eq!(b.0, i as u64);
    }
    assert_eq!(p.log_end_offset().0, got.len() as u64);
}

#[test]
fn a_corrupt_batch_in_a_sealed_segment_is_never_served_and_reads_step_over_it() {
    let (sim, first, positions) = closed_log(small_segments(), 40);
    // After a clean shutdown sealed segments are trusted at open, so only the read
    // path can catch this.
    sim.storage.flip_bit(&first, positions[2] + 80, 5);
    let log = sim.open();
    let p = log.partition("t", PartitionId(0)).unwrap();
    // Batches before it are served; the reader stops before the bad one.
    let r = p.read(Offset(0), 1 << 20).unwrap();
    assert_eq!(split(&r.bytes).len(), 2);
    // A read at the damaged batch steps over it, as over a compacted gap: a consumer is
    // never stuck there.
    let r = p.read(Offset(2), 1 << 20).unwrap();
    let got = split(&r.bytes);
    assert_eq!(got[0].0, 3, "{got:?}");
    assert_eq!(got[0].2, 3);
    let all: Vec<u64> = read_all(&log, "t", 0, 0).iter().map(|b| b.0).collect();
    let want: Vec<u64> = (0..40).filter(|&o| o != 2).collect();
    assert_eq!(all, want);
    let counted = log
        .stats()
        .quarantined_batches
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(counted, 1, "counted once, however often it is read");
}

#[test]
fn a_damaged_length_in_a_sealed_segment_is_stepped_over_too() {
    let (sim, first, positions) = closed_log(small_segments(), 40);
    // The last batch of the first segment, its length made huge: nothing valid follows
    // in that segment, so reads go on in the next one.
    let last = *positions.last().unwrap();
    sim.storage.flip_bit(&first, last + 8, 6);
    let log = sim.open();
    let all: Vec<u64> = read_all(&log, "t", 0, 0).iter().map(|b| b.0).collect();
    let lost = positions.len() as u64 - 1;
    let want: Vec<u64> = (0..40).filter(|&o| o != lost).collect();
    assert_eq!(all, want);
}

/// A log with topic "t" holding `batches` one-record batches, closed cleanly: the
/// simulation, the first segment's file and its batches' positions.
fn closed_log(config: TopicConfig, batches: u8) -> (Sim, PathBuf, Vec<usize>) {
    let sim = Sim::new(config);
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = log.partition("t", PartitionId(0)).unwrap();
    for i in 0..batches {
        p.append(&batch(1, 300, 0, i)).unwrap();
    }
    drop(p);
    log.close().unwrap();
    let first = sim.segment_files("t", 0).remove(0);
    let positions = batch_positions(&sim.storage.file_bytes(&first).unwrap());
    (sim, first, positions)
}

/// A closed log of 40 one-record batches in small segments, the first segment damaged
/// by `damage` (given the file and its batch positions) after a clean shutdown, so that
/// open trusts it and only reads can meet the damage. Returns the offsets read back.
fn read_back_after_damage(damage: impl FnOnce(&Sim, &std::path::Path, &[usize])) -> Vec<u64> {
    let (sim, first, positions) = closed_log(small_segments(), 40);
    assert!(positions.len() >= 6, "{positions:?}");
    damage(&sim, &first, &positions);
    let log = sim.open();
    let got = read_all(&log, "t", 0, 0);
    for (base, _, tag) in &got {
        assert_eq!(*base, u64::from(*tag), "served at the wrong offset");
    }
    got.iter().map(|b| b.0).collect()
}

#[test]
fn damaged_fields_outside_the_crc_in_a_trusted_segment_cost_only_their_batch() {
    // (batch, byte of its header, bit, what it does). baseOffset is bytes 0..8 and
    // batchLength bytes 8..12, big-endian; neither is covered by the CRC.
    let cases = [
        (
            2,
            7,
            0,
            "baseOffset up by one: the next batch contradicts it",
        ),
        (3, 7, 1, "baseOffset down by two: below the expected offset"),
        (2, 2, 4, "a high bit of baseOffset: far outside the segment"),
        (2, 11, 5, "batchLength longer, into the next batch"),
        (2, 11, 3, "batchLength longer or shorter by 8"),
    ];
    for (victim, byte, bit, what) in cases {
        let got =
            read_back_after_damage(|sim, f, pos| sim.storage.flip_bit(f, pos[victim] + byte, bit));
        let want: Vec<u64> = (0..40).filter(|&o| o != victim as u64).collect();
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn a_read_that_walks_past_a_damaged_length_blames_that_batch_not_where_it_lands() {
    // An index entry every few batches: a read walks the headers from the entry below
    // its offset, and open replays only what follows the last entry.
    let (sim, first, positions) = closed_log(
        TopicConfig {
            segment_bytes: 1 << 20,
            index_interval_bytes: 1000,
            ..TopicConfig::default()
        },
        30,
    );
    let seg = first;
    // batchLength + 512: a walk from batch 10 lands inside batch 12.
    sim.storage.flip_bit(&seg, positions[10] + 10, 1);
    let log = sim.open();
    assert!(
        log.recovery_events().is_empty(),
        "{:?}",
        log.recovery_events()
    );
    let p = log.partition("t", PartitionId(0)).unwrap();
    for want in (0..30u64).filter(|&o| o != 10) {
        let r = p.read(Offset(want), 1 << 20).unwrap();
        let got = split(&r.bytes);
        assert_eq!(got[0].0, want, "read at {want}: {got:?}");
    }
    let all: Vec<u64> = read_all(&log, "t", 0, 0).iter().map(|b| b.0).collect();
    assert_eq!(all, (0..30).filter(|&o| o != 10).collect::<Vec<_>>());
}

#[test]
fn an_index_whose_entries_point_into_the_middle_of_batches_is_not_believed() {
    let (sim, first, _) = closed_log(small_segments(), 40);
    // Well formed (entries grow, inside the file) but every position but the last moved
    // 20 bytes on: open checks a sealed segment's index by its shape and by replaying
    // from its last entry only.
    let index = first.with_extension("index");
    let mut bytes = sim.storage.file_bytes(&index).unwrap();
    assert!(bytes.len() >= 24, "the segment has index entries");
    let last = bytes.len() - 8;
    for e in bytes[..last].chunks_exact_mut(8) {
        let pos = u32::from_be_bytes(e[4..8].try_into().unwrap()) + 20;
        e[4..8].copy_from_slice(&pos.to_be_bytes());
    }
    sim.storage.set_file_bytes(&index, bytes);
    let log = sim.open();
    let p = log.partition("t", PartitionId(0)).unwrap();
    for o in 0..40u64 {
        let got = split(&p.read(Offset(o), 1).unwrap().bytes);
        assert_eq!(got[0].0, o, "read at {o}");
    }
    assert_eq!(read_all(&log, "t", 0, 0).len(), 40);
}

#[test]
fn missing_or_corrupt_index_files_are_rebuilt() {
    let sim = Sim::new(small_segments());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = log.partition("t", PartitionId(0)).unwrap();
    for i in 0..60 {
        p.append(&batch(1, 200, i64::from(i) * 10, i)).unwrap();
    }
    drop(p);
    log.close().unwrap();
    let logs = sim.segment_files("t", 0);
    assert!(logs.len() >= 4);
    let idx = |p: &PathBuf, ext: &str| p.with_extension(ext);
    let original: Vec<Vec<u8>> = logs
        .iter()
        .map(|l| sim.storage.file_bytes(&idx(l, "index")).unwrap())
        .collect();
    assert!(
        original.iter().any(|o| !o.is_empty()),
        "small segments have index entries"
    );
    // Missing, odd-sized, garbage, and a time index that promises too little.
    sim.storage.remove_file_for_test(&idx(&logs[0], "index"));
    sim.storage
        .set_file_bytes(&idx(&logs[1], "index"), vec![1, 2, 3]);
    sim.storage
        .set_file_bytes(&idx(&logs[2], "timeindex"), vec![0xff; 24]);
    sim.storage
        .set_file_bytes(&idx(&logs[3], "timeindex"), Vec::new());

    let log = sim.open();
    let rebuilt: Vec<PathBuf> = log
        .recovery_events()
        .into_iter()
        .filter_map(|e| match e {
            RecoveryEvent::IndexRebuilt { path } => Some(path),
            _ => None,
        })
        .collect();
    assert_eq!(rebuilt, logs[..4].to_vec());
    let got = read_all(&log, "t", 0, 0);
    assert_eq!(got.len(), 60);
    let p = log.partition("t", PartitionId(0)).unwrap();
    for o in 0..60u64 {
        assert_eq!(split(&p.read(Offset(o), 1).unwrap().bytes)[0].0, o);
        let found = p.offset_for_timestamp(o as i64 * 10 - 5).unwrap().unwrap();
        assert_eq!(found.base_offset, Offset(o));
    }
    // The rebuilt files equal what the appends wrote.
    for (l, o) in logs.iter().zip(&original).take(4) {
        assert_eq!(&sim.storage.file_bytes(&idx(l, "index")).unwrap(), o);
    }
}

#[test]
fn a_topic_whose_creation_did_not_finish_is_removed_on_open() {
    let sim = Sim::new(TopicConfig::default());
    drop(sim.open());
    use runnel_log::Storage;
    sim.storage
        .create_dir_all(std::path::Path::new("/data/topics/half/0"))
        .unwrap();
    sim.storage.set_file_bytes(
        std::path::Path::new("/data/topics/half/0/00000000000000000000.log"),
        Vec::new(),
    );
    let log = sim.open();
    assert!(log.topic("half").is_none());
    assert!(
        sim.storage
            .files()
            .iter()
            .all(|f| !f.starts_with("/data/topics/half"))
    );
    log.create_topic("half", 1, &no_overrides()).unwrap();
}

mod garbage {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever bytes a segment holds, opening never panics and reads serve only
        /// batches that pass every check.
        #[test]
        fn recovery_of_arbitrary_bytes_never_panics_or_serves_garbage(
            valid in 0usize..6,
            junk in prop::collection::vec(any::<u8>(), 0..400),
            flip in any::<prop::sample::Index>(),
        ) {
            let mut sim = Sim::new(TopicConfig::default());
            let log = sim.open();
            log.create_topic("t", 1, &no_overrides()).unwrap();
            let p = log.partition("t", PartitionId(0)).unwrap();
            for i in 0..valid {
                p.append(&batch(1 + i, 30, 0, i as u8)).unwrap();
            }
            drop(p);
            drop(log);
            sim.crash(CrashMode::DropUnsynced);
            let seg = sim.segment_files("t", 0).pop().unwrap();
            let mut bytes = sim.storage.file_bytes(&seg).unwrap();
            bytes.extend_from_slice(&junk);
            if !bytes.is_empty() && junk.len() % 3 == 0 {
                let i = flip.index(bytes.len());
                bytes[i] ^= 0x40;
            }
            sim.storage.set_file_bytes(&seg, bytes);
            let log = sim.open();
            let got = read_all(&log, "t", 0, 0);
            prop_assert!(got.len() <= valid);
            for (i, b) in got.iter().enumerate() {
                prop_assert_eq!(b.2, i as u8);
            }
            let p = log.partition("t", PartitionId(0)).unwrap();
            let end = got.last().map_or(0, |b| b.0 + u64::from(b.1));
            prop_assert_eq!(p.log_end_offset(), Offset(end));
        }
    }
}
