//! Damage below the recovery point costs the batch it hits, nothing more: the batch is
//! quarantined, the valid batches after it are kept, offsets are never reused. Only a
//! torn tail past the recovery point is cut (`crash.rs`).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use runnel_log::recovery::RecoveryEvent;
use runnel_log::sim::CrashMode;
use runnel_log::{Log, Offset, PartitionId, TopicConfig};

const BATCHES: u64 = 200;

/// A log with `BATCHES` one-record batches in one partition, acknowledged (fsynced) and
/// covered by the recovery point, then a power cut. Returns the simulation, the segment
/// file and each batch's position in it.
fn acknowledged_log() -> (Sim, PathBuf, Vec<usize>) {
    let mut sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = log.partition("t", PartitionId(0)).unwrap();
    for i in 0..BATCHES {
        p.append(&batch(1, 100, 0, i as u8)).unwrap();
    }
    // What the background thread does every second.
    p.checkpoint_recovery_point(None).unwrap();
    drop(p);
    drop(log);
    sim.crash(CrashMode::DropUnsynced);
    let seg = sim.segment_files("t", 0).pop().unwrap();
    let positions = batch_positions(&sim.storage.file_bytes(&seg).unwrap());
    assert_eq!(positions.len() as u64, BATCHES);
    (sim, seg, positions)
}

fn quarantined(log: &Log) -> Vec<(u64, std::ops::Range<u64>, PathBuf)> {
    log.recovery_events()
        .into_iter()
        .filter_map(|e| match e {
            RecoveryEvent::Quarantined {
                position,
                lost,
                quarantine_file,
                ..
            } => Some((position, lost, quarantine_file)),
            _ => None,
        })
        .collect()
}

/// Every batch but `lost` is read back in order, with its own offset and tag; the log
/// end is where it was; the next append gets the next offset.
fn assert_all_but(log: &Log, lost: &[u64]) {
    let got = read_all(log, "t", 0, 0);
    let want: Vec<(u64, u32, u8)> = (0..BATCHES)
        .filter(|i| !lost.contains(i))
        .map(|i| (i, 1, i as u8))
        .collect();
    assert_eq!(got, want);
    let p = log.partition("t", PartitionId(0)).unwrap();
    assert_eq!(p.log_end_offset(), Offset(BATCHES));
    let info = p.append(&batch(1, 10, 0, 0xEE)).unwrap();
    assert_eq!(
        info.base_offset,
        Offset(BATCHES),
        "offsets are never reused"
    );
}

fn flip(sim: &Sim, seg: &Path, byte: usize, bit: u8) {
    sim.storage.flip_bit(seg, byte, bit);
}

#[test]
fn a_flipped_bit_in_the_records_costs_only_that_batch() {
    let (sim, seg, positions) = acknowledged_log();
    let original = sim.storage.file_bytes(&seg).unwrap();
    flip(&sim, &seg, positions[100] + 70, 2);
    let log = sim.open();
    let q = quarantined(&log);
    assert_eq!(q.len(), 1, "{:?}", log.recovery_events());
    let (position, lost, file) = &q[0];
    assert_eq!(*position, positions[100] as u64);
    assert_eq!(*lost, 100..101);
    // The damaged bytes are kept aside, exactly the batch's.
    let kept = sim.storage.file_bytes(file).unwrap();
    assert_eq!(kept.len(), positions[101] - positions[100]);
    assert_eq!(kept[..70], original[positions[100]..positions[100] + 70]);
    assert_eq!(
        log.stats()
            .quarantined_batches
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    assert_all_but(&log, &[100]);
}

#[test]
fn recovery_after_a_quarantine_finds_nothing_more_to_do() {
    let (mut sim, seg, positions) = acknowledged_log();
    flip(&sim, &seg, positions[50] + 80, 0);
    let log = sim.open();
    assert_eq!(quarantined(&log).len(), 1);
    drop(log);
    sim.crash(CrashMode::DropUnsynced);
    let log = sim.open();
    assert!(quarantined(&log).is_empty(), "{:?}", log.recovery_events());
    assert_all_but(&log, &[50]);
}

#[test]
fn a_high_bit_flipped_in_base_offset_is_caught_not_a_panic_or_a_jump() {
    for bit_of_offset in [63u32, 40, 32] {
        let (sim, seg, positions) = acknowledged_log();
        // baseOffset is the first 8 bytes, big-endian, outside the CRC.
        let byte = positions[120] + 7 - (bit_of_offset / 8) as usize;
        flip(&sim, &seg, byte, (bit_of_offset % 8) as u8);
        let log = sim.open();
        let q = quarantined(&log);
        assert_eq!(
            q.len(),
            1,
            "bit {bit_of_offset}: {:?}",
            log.recovery_events()
        );
        assert_eq!(q[0].1, 120..121);
        assert_all_but(&log, &[120]);
    }
}

#[test]
fn a_low_bit_flipped_in_base_offset_blames_that_batch_not_the_next() {
    // Up (a gap that the next batch contradicts) and down (below the expected offset).
    for (batch_no, bit) in [(64usize, 3u8), (71, 0)] {
        let (sim, seg, positions) = acknowledged_log();
        flip(&sim, &seg, positions[batch_no] + 7, bit);
        let log = sim.open();
        let q = quarantined(&log);
        assert_eq!(q.len(), 1, "{:?}", log.recovery_events());
        assert_eq!(q[0].0, positions[batch_no] as u64);
        assert_all_but(&log, &[batch_no as u64]);
    }
}

#[test]
fn a_damaged_length_field_is_stepped_over_by_finding_the_next_batch() {
    let (sim, seg, positions) = acknowledged_log();
    // batchLength is bytes 8..12, outside the CRC: make it point into the next batch.
    flip(&sim, &seg, positions[30] + 11, 4);
    let log = sim.open();
    let q = quarantined(&log);
    assert_eq!(q.len(), 1, "{:?}", log.recovery_events());
    assert_eq!(q[0].1, 30..31);
    assert_all_but(&log, &[30]);
}

#[test]
fn two_damaged_batches_cost_two_batches() {
    let (sim, seg, positions) = acknowledged_log();
    flip(&sim, &seg, positions[10] + 90, 1);
    flip(&sim, &seg, positions[150] + 90, 6);
    let log = sim.open();
    assert_eq!(quarantined(&log).len(), 2, "{:?}", log.recovery_events());
    assert_all_but(&log, &[10, 150]);
}

#[test]
fn a_damaged_last_batch_keeps_its_offset_taken() {
    let (sim, seg, positions) = acknowledged_log();
    flip(&sim, &seg, positions[BATCHES as usize - 1] + 70, 5);
    let log = sim.open();
    let q = quarantined(&log);
    assert_eq!(q.len(), 1, "{:?}", log.recovery_events());
    assert_eq!(q[0].1, BATCHES - 1..BATCHES);
    assert_all_but(&log, &[BATCHES - 1]);
}

#[test]
fn acknowledged_batches_that_vanished_are_never_given_out_again() {
    let (sim, seg, positions) = acknowledged_log();
    // The disk lost the last 20 batches, though the recovery point covers them.
    let mut bytes = sim.storage.file_bytes(&seg).unwrap();
    bytes.truncate(positions[180]);
    sim.storage.set_file_bytes(&seg, bytes);
    let log = sim.open();
    assert!(
        log.recovery_events()
            .iter()
            .any(|e| matches!(e, RecoveryEvent::EndRaised { from: 180, to, .. } if *to == BATCHES)),
        "{:?}",
        log.recovery_events()
    );
    assert_all_but(&log, &(180..BATCHES).collect::<Vec<_>>());
}

#[test]
fn damage_past_the_recovery_point_is_a_torn_tail_and_is_cut() {
    let mut sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = log.partition("t", PartitionId(0)).unwrap();
    for i in 0..50u8 {
        p.append(&batch(1, 100, 0, i)).unwrap();
    }
    p.checkpoint_recovery_point(None).unwrap();
    for i in 50..60u8 {
        p.append(&batch(1, 100, 0, i)).unwrap();
    }
    drop(p);
    drop(log);
    sim.crash(CrashMode::DropUnsynced);
    let seg = sim.segment_files("t", 0).pop().unwrap();
    let positions = batch_positions(&sim.storage.file_bytes(&seg).unwrap());
    flip(&sim, &seg, positions[55] + 70, 1);
    let log = sim.open();
    assert!(quarantined(&log).is_empty());
    assert!(
        log.recovery_events()
            .iter()
            .any(|e| matches!(e, RecoveryEvent::Cut { position, .. } if *position == positions[55] as u64)),
        "{:?}",
        log.recovery_events()
    );
    assert_eq!(read_all(&log, "t", 0, 0).len(), 55);
}

#[test]
fn a_clean_shutdown_records_the_recovery_point() {
    let sim = Sim::new(TopicConfig::default());
    let log = sim.open();
    log.create_topic("t", 1, &no_overrides()).unwrap();
    let p = log.partition("t", PartitionId(0)).unwrap();
    for i in 0..BATCHES {
        p.append(&batch(1, 100, 0, i as u8)).unwrap();
    }
    drop(p);
    log.close().unwrap();
    let seg = sim.segment_files("t", 0).pop().unwrap();
    let positions = batch_positions(&sim.storage.file_bytes(&seg).unwrap());
    // A damaged active segment after a clean shutdown: its index disagrees, it is
    // scanned, and the damage lies below the recovery point the shutdown wrote.
    flip(&sim, &seg, positions[199] + 8, 0);
    let log = sim.open();
    assert_eq!(quarantined(&log).len(), 1, "{:?}", log.recovery_events());
    assert_all_but(&log, &[199]);
}
