//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use runnel_log::batch::build_batch;
use runnel_log::sim::SimStorage;
use runnel_log::{Log, LogConfig, ManualClock, Offset, PartitionId, TopicConfig};

pub const DATA: &str = "/data";

/// A batch of `n` records with `value_bytes`-byte values, all at `ts`. The first value
/// byte is `tag`, so tests can tell batches apart.
pub fn batch(n: usize, value_bytes: usize, ts: i64, tag: u8) -> Vec<u8> {
    let mut value = vec![b'v'; value_bytes.max(1)];
    value[0] = tag;
    let recs: Vec<runnel_log::batch::KeyValue<'_>> = (0..n)
        .map(|_| (Some(&b"key"[..]), Some(&value[..])))
        .collect();
    build_batch(&recs, ts)
}

pub fn config(defaults: TopicConfig) -> LogConfig {
    let mut c = LogConfig::new(DATA);
    c.topic_defaults = defaults;
    c.background = false;
    c
}

pub struct Sim {
    pub storage: SimStorage,
    pub clock: Arc<ManualClock>,
    pub defaults: TopicConfig,
}

impl Sim {
    pub fn new(defaults: TopicConfig) -> Self {
        Sim {
            storage: SimStorage::new(),
            clock: Arc::new(ManualClock::new(1_000_000)),
            defaults,
        }
    }

    pub fn open(&self) -> Log {
        Log::open_with(
            config(self.defaults.clone()),
            Arc::new(self.storage.clone()),
            self.clock.clone(),
        )
        .expect("log opens")
    }

    /// Opens the log on the disk as a power cut would leave it.
    pub fn crash(&mut self, mode: runnel_log::sim::CrashMode) {
        self.storage = self.storage.power_cut(mode);
    }

    pub fn segment_files(&self, topic: &str, p: u32) -> Vec<PathBuf> {
        let dir = PathBuf::from(DATA)
            .join("topics")
            .join(topic)
            .join(p.to_string());
        self.storage
            .files()
            .into_iter()
            .filter(|f| {
                f.parent() == Some(dir.as_path()) && f.extension().is_some_and(|e| e == "log")
            })
            .collect()
    }
}

pub fn small_segments() -> TopicConfig {
    TopicConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        ..TopicConfig::default()
    }
}

pub fn no_overrides() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// Reads every batch from `from` to the high watermark; returns (base offset, record
/// count, first value byte) per batch.
pub fn read_all(log: &Log, topic: &str, p: u32, from: u64) -> Vec<(u64, u32, u8)> {
    let part = log.partition(topic, PartitionId(p)).unwrap();
    let mut out = Vec::new();
    let mut next = Offset(from);
    loop {
        let r = part.read(next, 64 * 1024).unwrap();
        if r.bytes.is_empty() {
            break;
        }
        for (base, count, tag) in split(&r.bytes) {
            if base + u64::from(count) > next.0 {
                out.push((base, count, tag));
                next = Offset(base + u64::from(count));
            }
        }
    }
    out
}

/// Splits concatenated batches into (base offset, record count, first value byte).
pub fn split(mut bytes: &[u8]) -> Vec<(u64, u32, u8)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let h = runnel_log::batch::BatchHeader::parse(bytes).unwrap();
        let total = h.total_bytes() as usize;
        runnel_log::batch::validate(&bytes[..total], u32::MAX).unwrap();
        out.push((
            h.base_offset().0,
            h.record_count() as u32,
            first_value_byte(&bytes[..total]),
        ));
        bytes = &bytes[total..];
    }
    out
}

/// The tag byte of a batch built by [`batch`]: records are
/// `len, attrs, tsDelta, offDelta, keyLen=3, "key", valueLen, value...`.
fn first_value_byte(b: &[u8]) -> u8 {
    let rec = &b[61..];
    // length varint (1 or 2 bytes for our sizes)
    let mut i = if rec[0] & 0x80 != 0 { 2 } else { 1 };
    i += 1 + 1 + 1; // attributes, timestamp delta 0, offset delta 0
    i += 1 + 3; // key length 3, "key"
    while rec[i] & 0x80 != 0 {
        i += 1;
    }
    rec[i + 1]
}

/// Each batch's position in a segment file's bytes.
pub fn batch_positions(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        out.push(pos);
        pos += runnel_log::batch::BatchHeader::parse(&bytes[pos..])
            .unwrap()
            .total_bytes() as usize;
    }
    out
}
