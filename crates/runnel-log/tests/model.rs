//! Model-based property tests: random appends, reads, reopens (clean and crashed),
//! truncations, deletions and retention against a plain in-memory model.

mod common;

use std::collections::BTreeMap;

use common::*;
use proptest::prelude::*;
use runnel_log::sim::CrashMode;
use runnel_log::{Log, Offset, PartitionId, TopicConfig};

#[derive(Clone, Debug)]
enum Op {
    Append { records: usize, value_bytes: usize },
    Read { at: f64, max_bytes: usize },
    Reopen,
    Crash { seed: u64 },
    Truncate { at: f64 },
    DeleteRecords { at: f64 },
    Retention,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..6, 0usize..700).prop_map(|(records, value_bytes)| Op::Append { records, value_bytes }),
        3 => (0.0..1.0f64, 1usize..6000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Reopen),
        1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
        1 => (0.0..1.0f64).prop_map(|at| Op::Truncate { at }),
        1 => (0.0..1.0f64).prop_map(|at| Op::DeleteRecords { at }),
        1 => Just(Op::Retention),
    ]
}

/// The model: every batch still in the log, as (base offset, records, tag), plus the
/// log start offset.
#[derive(Default, Debug)]
struct Model {
    batches: Vec<(u64, u32, u8)>,
    log_start: u64,
    end: u64,
}

impl Model {
    fn pick(&self, at: f64) -> u64 {
        self.log_start + ((self.end - self.log_start) as f64 * at) as u64
    }
    /// Batches that hold an offset at or after `from`.
    fn from(&self, from: u64) -> Vec<(u64, u32, u8)> {
        self.batches
            .iter()
            .copied()
            .filter(|b| b.0 + u64::from(b.1) > from)
            .collect()
    }
}

fn check(log: &Log, model: &Model) {
    let p = log.partition("t", PartitionId(0)).unwrap();
    assert_eq!(p.log_end_offset(), Offset(model.end));
    assert_eq!(p.high_watermark(), Offset(model.end));
    assert_eq!(p.log_start_offset(), Offset(model.log_start));
    assert_eq!(
        read_all(log, "t", 0, model.log_start),
        model.from(model.log_start)
    );
}

fn run(ops: Vec<Op>, retention_bytes: Option<u64>) {
    let mut cfg = small_segments();
    cfg.retention_bytes = retention_bytes;
    let mut sim = Sim::new(cfg);
    let mut log = sim.open();
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let mut model = Model::default();
    let mut tag = 0u8;
    for op in ops {
        let p = log.partition("t", PartitionId(0)).unwrap();
        match op {
            Op::Append {
                records,
                value_bytes,
            } => {
                tag = tag.wrapping_add(1);
                let info = p.append(&batch(records, value_bytes, 0, tag)).unwrap();
                assert_eq!(info.base_offset, Offset(model.end));
                model.batches.push((model.end, records as u32, tag));
                model.end += records as u64;
            }
            Op::Read { at, max_bytes } => {
                let offset = model.pick(at);
                let got = split(&p.read(Offset(offset), max_bytes).unwrap().bytes);
                let want = model.from(offset);
                assert!(got.len() <= want.len() && got[..] == want[..got.len()]);
                assert_eq!(
                    got.is_empty(),
                    want.is_empty(),
                    "at least one batch unless at the end"
                );
            }
            Op::Reopen => {
                drop(p);
                log.close().unwrap();
                log = sim.open();
                assert!(
                    log.recovery_events().is_empty(),
                    "{:?}",
                    log.recovery_events()
                );
            }
            Op::Crash { seed } => {
                drop(p);
                drop(log);
                // Durability is `always`: every append returned after fsync, so a
                // power cut loses nothing.
                sim.crash(CrashMode::Torn { seed });
                log = sim.open();
            }
            Op::Truncate { at } => {
                let offset = model.pick(at);
                let result = p.truncate_to(Offset(offset));
                if offset >= model.end {
                    assert_eq!(result.unwrap(), Offset(model.end));
                } else {
                    let cut = model
                        .batches
                        .iter()
                        .find(|b| b.0 + u64::from(b.1) > offset)
                        .unwrap()
                        .0;
                    if cut < model.log_start {
                        // The batch straddles the log start: cutting it would leave a
                        // log that ends before it starts.
                        assert!(result.is_err());
                    } else {
                        assert_eq!(result.unwrap(), Offset(cut));
                        model.batches.retain(|b| b.0 < cut);
                        model.end = cut;
                    }
                }
            }
            Op::DeleteRecords { at } => {
                let offset = model.pick(at);
                p.delete_records(Offset(offset)).unwrap();
                model.log_start = model.log_start.max(offset);
                model
                    .batches
                    .retain(|b| b.0 + u64::from(b.1) > model.log_start);
            }
            Op::Retention => {
                log.apply_retention();
                let start = p.log_start_offset().0;
                assert!(start >= model.log_start);
                let unchanged = start == model.log_start;
                assert!(
                    unchanged || start == model.end || model.batches.iter().any(|b| b.0 == start),
                    "segment boundary"
                );
                model.log_start = start;
                model.batches.retain(|b| b.0 + u64::from(b.1) > start);
                if let Some(limit) = retention_bytes {
                    assert!(
                        p.size_bytes() <= limit + TopicConfig::default().max_message_bytes as u64
                    );
                }
            }
        }
        check(&log, &model);
    }
}

proptest! {
    #[test]
    fn the_log_behaves_like_the_model(ops in prop::collection::vec(op(), 1..60), limit in prop::option::of(4096u64..20_000)) {
        run(ops, limit);
    }

    /// Round trip: whatever batches go in come back, byte for byte but for the two
    /// fields the log rewrites.
    #[test]
    fn append_then_read_round_trips(values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..40)) {
        let sim = Sim::new(small_segments());
        let log = sim.open();
        log.create_topic("t", 1, &BTreeMap::new()).unwrap();
        let p = log.partition("t", PartitionId(0)).unwrap();
        let mut sent = Vec::new();
        for v in &values {
            let b = runnel_log::batch::build_batch(&[(None, Some(v))], 7);
            let info = p.append(&b).unwrap();
            sent.push((info.base_offset, b));
        }
        let mut next = Offset(0);
        let mut got = Vec::new();
        while next < p.high_watermark() {
            let r = p.read(next, 1000).unwrap();
            let mut bytes = &r.bytes[..];
            while !bytes.is_empty() {
                let h = runnel_log::batch::BatchHeader::parse(bytes).unwrap();
                let total = h.total_bytes() as usize;
                got.push((h.base_offset(), bytes[..total].to_vec()));
                next = h.last_offset().plus(1);
                bytes = &bytes[total..];
            }
        }
        prop_assert_eq!(got.len(), sent.len());
        for ((o1, stored), (o2, original)) in got.iter().zip(&sent) {
            prop_assert_eq!(o1, o2);
            prop_assert_eq!(&stored[16..], &original[16..]);
            prop_assert_eq!(&stored[8..12], &original[8..12]);
            prop_assert_eq!(&stored[12..16], &0i32.to_be_bytes()[..]);
        }
    }
}
