//! Log compaction (`cleanup.policy=compact`): the cleaner against a model, the codec
//! round trip, tombstones, the memory bound, concurrent readers, and power cuts at every
//! step of a pass.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use common::Sim;
use proptest::prelude::*;
use runnel_log::batch::{BatchHeader, HEADER_BYTES, KeyValue, build_batch, seal_crc};
use runnel_log::codec::decompressed_bytes_max;
use runnel_log::records::walk_records;
use runnel_log::recovery::RecoveryEvent;
use runnel_log::sim::CrashMode;
use runnel_log::{
    BatchCodec, BatchError, CleanupPolicy, Clock, CodecError, Log, LogError, Offset, Partition,
    PartitionId, TopicConfig,
};

/// Codec 1 for tests: a reversible transform with a marker, so a test can tell that the
/// cleaner decompressed and recompressed rather than copied bytes it could not read.
///
/// Codec 2 is codec 1 plus the decompressed length, as a big-endian `u64` after the
/// marker, which a test may set larger than the records: the codec then says
/// [`CodecError::TooLarge`] for any limit below it, as a real codec says for a
/// decompression bomb, without the test building one.
#[derive(Debug)]
struct XorCodec;

const MARK: &[u8] = b"XOR";

impl BatchCodec for XorCodec {
    fn decompress(
        &self,
        codec: u8,
        payload: &[u8],
        limit_bytes: usize,
    ) -> Result<Vec<u8>, CodecError> {
        let invalid = || CodecError::Invalid {
            codec,
            reason: "not codec 1 or 2 data".into(),
        };
        let body = payload.strip_prefix(MARK).ok_or_else(invalid)?;
        let (claimed, body) = match codec {
            1 => (body.len() as u64, body),
            2 => {
                let (len, body) = body.split_first_chunk::<8>().ok_or_else(invalid)?;
                (u64::from_be_bytes(*len), body)
            }
            _ => return Err(invalid()),
        };
        if claimed > limit_bytes as u64 {
            return Err(CodecError::TooLarge { codec, limit_bytes });
        }
        Ok(body.iter().map(|b| b ^ 0x5a).collect())
    }
    fn compress(&self, codec: u8, records: &[u8]) -> Result<Vec<u8>, CodecError> {
        let claimed = match codec {
            1 => Vec::new(),
            2 => (records.len() as u64).to_be_bytes().to_vec(),
            _ => {
                return Err(CodecError::Invalid {
                    codec,
                    reason: "unknown codec".into(),
                });
            }
        };
        Ok(MARK
            .iter()
            .copied()
            .chain(claimed)
            .chain(records.iter().map(|b| b ^ 0x5a))
            .collect())
    }
}

type Kv = (Option<Vec<u8>>, Option<Vec<u8>>);

/// A batch of `records` at `ts`, compressed with [`XorCodec`] when `codec` is 1.
fn kv_batch(records: &[Kv], ts: i64, codec: u8) -> Vec<u8> {
    let kvs: Vec<KeyValue<'_>> = records
        .iter()
        .map(|(k, v)| (k.as_deref(), v.as_deref()))
        .collect();
    let b = build_batch(&kvs, ts);
    if codec == 0 {
        return b;
    }
    let payload = XorCodec.compress(codec, &b[HEADER_BYTES..]).unwrap();
    with_payload(b, codec, &payload)
}

/// `batch` with its records section replaced by `payload`, marked as compressed with
/// `codec`, with its length and CRC made right.
fn with_payload(mut b: Vec<u8>, codec: u8, payload: &[u8]) -> Vec<u8> {
    b.truncate(HEADER_BYTES);
    b.extend_from_slice(payload);
    let length = (b.len() - 12) as i32;
    b[8..12].copy_from_slice(&length.to_be_bytes());
    let attributes = i16::from_be_bytes([b[21], b[22]]) | i16::from(codec);
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    seal_crc(&mut b);
    b
}

fn kv(key: &str, value: Option<&str>) -> Kv {
    (
        Some(key.as_bytes().to_vec()),
        value.map(|v| v.as_bytes().to_vec()),
    )
}

/// One record as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    offset: u64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    codec: u8,
}

/// Every record from the log start to the high watermark, as a consumer sees them
/// (records of the first batch below the log start are skipped). Each batch is checked
/// as stored, its records walked (decompressed with [`XorCodec`] if need be), and every
/// record must lie inside its batch's offset range.
fn read_records(p: &Partition) -> Result<Vec<Rec>, LogError> {
    let mut out = Vec::new();
    let mut next = p.log_start_offset();
    loop {
        let r = p.read(next, 16 << 10)?;
        if r.bytes.is_empty() {
            return Ok(out);
        }
        let mut bytes = &r.bytes[..];
        while !bytes.is_empty() {
            let h = BatchHeader::parse(bytes).unwrap();
            let total = h.total_bytes() as usize;
            let batch = &bytes[..total];
            runnel_log::batch::validate_stored(batch).expect("a served batch is valid");
            bytes = &bytes[total..];
            if h.last_offset() < next {
                continue;
            }
            let payload = match h.compression() {
                0 => batch[HEADER_BYTES..].to_vec(),
                // The test codec allocates only the records, whatever it claims.
                c => XorCodec
                    .decompress(c, &batch[HEADER_BYTES..], usize::MAX)
                    .unwrap(),
            };
            let base = h.base_offset().0;
            walk_records(&payload, h.record_count() as u32, |r| {
                let offset = base + r.offset_delta as u64;
                assert!(offset <= h.last_offset().0, "record outside its batch");
                if offset < next.0 {
                    return; // before the fetch position, as a consumer skips it
                }
                out.push(Rec {
                    offset,
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    codec: h.compression(),
                });
            })
            .expect("records walk");
            next = h.last_offset().plus(1);
        }
    }
}

fn compacted(delete_retention_ms: u64) -> TopicConfig {
    TopicConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        cleanup_policy: CleanupPolicy::Compact,
        retention_ms: None,
        delete_retention_ms,
        ..TopicConfig::default()
    }
}

fn open(sim: &Sim, codec: bool, map_bytes: usize) -> Log {
    let mut cfg = common::config(sim.defaults.clone());
    cfg.batch_codec = codec.then(|| Arc::new(XorCodec) as Arc<dyn BatchCodec>);
    cfg.cleaner_map_bytes_max = map_bytes;
    Log::open_with(cfg, Arc::new(sim.storage.clone()), sim.clock.clone()).expect("log opens")
}

fn part(log: &Log) -> Arc<Partition> {
    log.partition("t", PartitionId(0)).unwrap()
}

fn assert_offsets_grow(recs: &[Rec]) {
    for w in recs.windows(2) {
        assert!(
            w[0].offset < w[1].offset,
            "offsets must strictly grow: {w:?}"
        );
    }
}

/// Appends `rounds` rounds of one value for each of `keys` keys, several per batch.
fn fill(p: &Partition, keys: usize, rounds: usize, ts: i64, codec: u8) {
    for round in 0..rounds {
        for chunk in (0..keys).collect::<Vec<_>>().chunks(3) {
            let recs: Vec<Kv> = chunk
                .iter()
                .map(|k| kv(&format!("key-{k}"), Some(&format!("value-{k}-{round}"))))
                .collect();
            p.append(&kv_batch(&recs, ts, codec)).unwrap();
        }
    }
}

/// Compaction's promise, against every record ever written (`truth`, each with its
/// batch's timestamp): offsets grow; every record read was written, unchanged, at its
/// offset; every key's latest record is there, unless it is a tombstone past
/// `delete.retention.ms`, and then no record of that key is left at all.
fn assert_promise_kept(recs: &[Rec], truth: &[(Rec, i64)], now: i64, delete_retention_ms: u64) {
    assert_promise_kept_from(recs, truth, now, delete_retention_ms, 0);
}

/// [`assert_promise_kept`] for a log that starts at `log_start`: keys whose latest
/// record lies below it are gone with it.
fn assert_promise_kept_from(
    recs: &[Rec],
    truth: &[(Rec, i64)],
    now: i64,
    delete_retention_ms: u64,
    log_start: u64,
) {
    assert_offsets_grow(recs);
    assert!(
        recs.iter().all(|r| r.offset >= log_start),
        "a record below the log start"
    );
    let by_offset: HashMap<u64, &Rec> = truth.iter().map(|(r, _)| (r.offset, r)).collect();
    for r in recs {
        assert_eq!(
            by_offset.get(&r.offset),
            Some(&r),
            "only written records, unchanged"
        );
    }
    let present: std::collections::HashSet<u64> = recs.iter().map(|r| r.offset).collect();
    let mut latest: BTreeMap<&Vec<u8>, &(Rec, i64)> = BTreeMap::new();
    for t in truth {
        latest.insert(t.0.key.as_ref().unwrap(), t);
    }
    for (key, (rec, ts)) in latest {
        if present.contains(&rec.offset) || rec.offset < log_start {
            continue;
        }
        assert!(rec.value.is_none(), "latest value of {key:?} lost: {rec:?}");
        assert!(
            ts + delete_retention_ms as i64 <= now,
            "tombstone removed early: {rec:?}"
        );
        assert!(
            recs.iter().all(|r| r.key.as_ref() != Some(key)),
            "a value of {key:?} came back after its tombstone went"
        );
    }
}

fn latest_by_key(recs: &[Rec]) -> BTreeMap<Vec<u8>, Rec> {
    recs.iter()
        .map(|r| (r.key.clone().unwrap(), r.clone()))
        .collect()
}

#[test]
fn keyless_records_are_refused_on_compacted_topics_as_kafka_does() {
    let sim = Sim::new(compacted(1000));
    let log = open(&sim, true, 1 << 20);
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    for codec in [0, 1] {
        let b = kv_batch(&[kv("k", Some("v")), (None, Some(b"v".to_vec()))], 0, codec);
        match p.append(&b) {
            Err(LogError::Batch(BatchError::MissingKey { index: 1 })) => {}
            other => panic!("codec {codec}: expected MissingKey, got {other:?}"),
        }
    }
    assert_eq!(p.log_end_offset(), Offset(0));
    // Without a codec a compressed batch cannot be checked, and is accepted.
    drop(p);
    drop(log);
    let log = open(&sim, false, 1 << 20);
    let b = kv_batch(&[(None, Some(b"v".to_vec()))], 0, 1);
    part(&log).append(&b).unwrap();
    // A topic that deletes takes keyless records.
    log.create_topic("d", 1, &BTreeMap::new()).unwrap();
    let mut o = BTreeMap::new();
    o.insert("cleanup.policy".to_string(), "delete".to_string());
    log.alter_topic_config("d", &o, &[]).unwrap();
    log.partition("d", PartitionId(0))
        .unwrap()
        .append(&kv_batch(&[(None, Some(b"v".to_vec()))], 0, 0))
        .unwrap();
}

#[test]
fn compaction_keeps_the_latest_value_of_each_key_at_its_offset() {
    let sim = Sim::new(compacted(1000));
    let log = open(&sim, true, 1 << 20);
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    fill(&p, 10, 8, 0, 0);
    let before = read_records(&p).unwrap();
    let end = p.log_end_offset();
    let segments = p.segment_count();
    assert!(segments > 3);
    let stats = p.clean().unwrap();
    assert!(stats.segments_rewritten > 0 && stats.records_removed > 0);
    assert!(stats.bytes_after < stats.bytes_before);
    let after = read_records(&p).unwrap();
    assert_offsets_grow(&after);
    assert_eq!(p.log_end_offset(), end, "the log end does not move");
    assert_eq!(
        p.segment_count(),
        segments,
        "segments shrink, they are not merged"
    );
    // Every survivor is a record that was written, at its offset.
    let by_offset: HashMap<u64, &Rec> = before.iter().map(|r| (r.offset, r)).collect();
    for r in &after {
        assert_eq!(by_offset[&r.offset], r);
    }
    // Every key's latest value survives, and below the cleaned point each key is once.
    assert_eq!(latest_by_key(&after), latest_by_key(&before));
    let upto = stats.cleaned_upto.unwrap().0;
    let mut seen = std::collections::HashSet::new();
    for r in after.iter().filter(|r| r.offset < upto) {
        assert!(seen.insert(r.key.clone()), "key twice below {upto}: {r:?}");
    }
    // A second pass finds nothing to do; a clean reopen trusts the new index files.
    assert_eq!(p.clean().unwrap().segments_rewritten, 0);
    drop(p);
    log.close().unwrap();
    let log = open(&sim, true, 1 << 20);
    assert!(
        log.recovery_events().is_empty(),
        "{:?}",
        log.recovery_events()
    );
    assert_eq!(read_records(&part(&log)).unwrap(), after);
    // No cleaner leftovers.
    assert!(sim.storage.files().iter().all(|f| {
        let name = f.to_string_lossy();
        !name.ends_with(".cleaned") && !name.ends_with(".swap")
    }));
}

#[test]
fn compressed_batches_come_back_in_the_same_codec() {
    let sim = Sim::new(compacted(1000));
    let log = open(&sim, true, 1 << 20);
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    fill(&p, 6, 6, 0, 1);
    let before = read_records(&p).unwrap();
    assert!(before.iter().all(|r| r.codec == 1));
    let stats = p.clean().unwrap();
    assert!(stats.records_removed > 0);
    let after = read_records(&p).unwrap();
    assert!(after.len() < before.len());
    assert!(after.iter().all(|r| r.codec == 1), "rewritten in codec 1");
    assert_eq!(latest_by_key(&after), latest_by_key(&before));
}

#[test]
fn without_a_codec_compressed_batches_are_kept_whole() {
    let sim = Sim::new(compacted(1000));
    let log = open(&sim, false, 1 << 20);
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    fill(&p, 6, 6, 0, 1);
    let before = read_records(&p).unwrap();
    let stats = p.clean().unwrap();
    assert_eq!(stats.records_removed, 0);
    assert_eq!(read_records(&p).unwrap(), before);
    // Uncompressed batches are still compacted, and a compressed batch's keys shadow
    // nothing: the older uncompressed value of a key stays when its newer value is
    // in a batch the log cannot read.
    fill(&p, 6, 6, 0, 0);
    fill(&p, 6, 3, 0, 1);
    let before = read_records(&p).unwrap();
    let stats = p.clean().unwrap();
    assert!(stats.records_removed > 0);
    let after = read_records(&p).unwrap();
    assert_eq!(latest_by_key(&after), latest_by_key(&before));
    assert!(after.iter().any(|r| r.codec == 0));
}

/// The stored batch that holds `offset`, byte for byte.
fn stored_batch(p: &Partition, offset: u64) -> Vec<u8> {
    let bytes = p.read(Offset(offset), 1).unwrap().bytes;
    let total = BatchHeader::parse(&bytes).unwrap().total_bytes() as usize;
    bytes[..total].to_vec()
}

/// Issue 11 (decompression bombs): a batch whose records would decompress past the
/// topic's limit, or do not decompress at all, is kept by the cleaner exactly as it is,
/// never dropped, and a later pass does not try it again and again; a batch just within
/// the limit is compacted as usual.
#[test]
fn batches_past_the_decompression_limit_or_undecodable_are_kept_unchanged() {
    let sim = Sim::new(compacted(1000));
    let log = open(&sim, true, 1 << 20);
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    let limit = decompressed_bytes_max(log.topic("t").unwrap().config().max_message_bytes);
    let claiming = |records: &[Kv], claimed: usize| {
        let plain = kv_batch(records, 0, 0);
        let mut payload = XorCodec.compress(2, &plain[HEADER_BYTES..]).unwrap();
        payload[MARK.len()..MARK.len() + 8].copy_from_slice(&(claimed as u64).to_be_bytes());
        with_payload(plain, 2, &payload)
    };
    // Offsets 0-1: a "bomb" one byte past the limit; 2-3: a batch exactly at it; 4-5:
    // codec 1 bytes without the codec's marker, which do not decode.
    p.append(&claiming(
        &[kv("a", Some("old")), kv("b", Some("old"))],
        limit + 1,
    ))
    .unwrap();
    p.append(&claiming(
        &[kv("a", Some("old")), kv("c", Some("old"))],
        limit,
    ))
    .unwrap();
    let mut garbled = kv_batch(&[kv("a", Some("old")), kv("d", Some("old"))], 0, 1);
    garbled[HEADER_BYTES] ^= 0xff;
    seal_crc(&mut garbled);
    p.append(&garbled).unwrap();
    // Newer values of every key, so each old record above is superseded; enough of
    // them to close the segments holding the old ones.
    for round in 0..20 {
        let v = format!("new-{round}");
        let recs: Vec<Kv> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| kv(k, Some(&v)))
            .collect();
        p.append(&kv_batch(&recs, 0, 0)).unwrap();
    }
    let kept = [stored_batch(&p, 0), stored_batch(&p, 4)];
    assert!(
        p.segment_count() > 2,
        "the old batches are in closed segments"
    );

    let stats = p.clean().unwrap();
    assert!(stats.segments_rewritten > 0 && stats.records_removed > 0);
    assert_eq!(
        [stored_batch(&p, 0), stored_batch(&p, 4)],
        kept,
        "kept byte for byte"
    );
    // A batch within the limit is compacted: both its records were superseded, so it
    // is gone and a read at its offset starts at the next batch kept.
    let next = stored_batch(&p, 2);
    assert_eq!(BatchHeader::parse(&next).unwrap().base_offset(), Offset(4));
    // The next pass has nothing to do: no endless retry of what it cannot read.
    assert_eq!(p.clean().unwrap().segments_rewritten, 0);
    assert_eq!(stored_batch(&p, 0), kept[0]);
}

#[test]
fn tombstones_are_removed_after_delete_retention_ms() {
    let sim = Sim::new(compacted(10_000));
    let log = open(&sim, true, 1 << 20);
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    let now = sim.clock.now_ms();
    fill(&p, 4, 3, now, 0);
    p.append(&kv_batch(&[kv("key-1", None), kv("key-2", None)], now, 0))
        .unwrap();
    fill(&p, 1, 12, now, 0); // roll past the tombstones with key-0 only
    p.clean().unwrap();
    let recs = read_records(&p).unwrap();
    let k = |s: &str| Some(s.as_bytes().to_vec());
    for key in ["key-1", "key-2"] {
        let of_key: Vec<&Rec> = recs.iter().filter(|r| r.key == k(key)).collect();
        assert_eq!(of_key.len(), 1, "only the tombstone is left of {key}");
        assert_eq!(of_key[0].value, None);
    }
    sim.clock.advance(10_000);
    let stats = p.clean().unwrap();
    assert!(stats.records_removed >= 2, "{stats:?}");
    let recs = read_records(&p).unwrap();
    assert!(
        recs.iter()
            .all(|r| r.key != k("key-1") && r.key != k("key-2"))
    );
    assert!(recs.iter().any(|r| r.key == k("key-3")));
}

#[test]
fn a_small_key_map_cleans_a_prefix_per_pass_and_finishes_later() {
    let sim = Sim::new(compacted(1000));
    // About 40 keys fit; each segment holds about 20 distinct keys.
    let map_bytes = 40 * runnel_log::config::CLEANER_MAP_ENTRY_BYTES;
    let log = open(&sim, true, map_bytes);
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    for round in 0..3 {
        let recs: Vec<Kv> = (0..150)
            .map(|k| kv(&format!("k{k}"), Some(&format!("{round}"))))
            .collect();
        for c in recs.chunks(5) {
            p.append(&kv_batch(c, 0, 0)).unwrap();
        }
    }
    let before = read_records(&p).unwrap();
    let mut passes = 0;
    let mut last = None;
    loop {
        let s = p.clean().unwrap();
        let Some(upto) = s.cleaned_upto else {
            break; // nothing dirty is left
        };
        passes += 1;
        assert!(Some(upto) > last, "every pass gets further");
        assert!(passes < 100);
        last = Some(upto);
    }
    assert!(passes > 2, "the budget forced several passes ({passes})");
    let after = read_records(&p).unwrap();
    assert_eq!(latest_by_key(&after), latest_by_key(&before));
    assert_offsets_grow(&after);
}

#[test]
fn readers_during_cleaning_see_only_valid_batches_and_written_records() {
    let sim = Sim::new(compacted(1000));
    let log = Arc::new(open(&sim, true, 1 << 20));
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    fill(&p, 8, 4, 0, 0);
    let truth: HashMap<u64, Rec> = {
        // Values are unique per (key, round), so the model is the first read.
        read_records(&p)
            .unwrap()
            .into_iter()
            .map(|r| (r.offset, r))
            .collect()
    };
    let truth = Arc::new(std::sync::Mutex::new(truth));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        for _ in 0..2 {
            let (p, truth, stop) = (p.clone(), truth.clone(), stop.clone());
            s.spawn(move || {
                let mut reads = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) || reads < 5 {
                    // A reader may meet an error and retry; it must never get bad data.
                    let Ok(recs) = read_records(&p) else { continue };
                    reads += 1;
                    assert_offsets_grow(&recs);
                    let truth = truth.lock().unwrap();
                    for r in &recs {
                        if let Some(t) = truth.get(&r.offset) {
                            assert_eq!(t, r);
                        }
                    }
                }
            });
        }
        for round in 10..30 {
            let recs: Vec<Kv> = (0..8)
                .map(|k| kv(&format!("key-{k}"), Some(&format!("value-{k}-{round}"))))
                .collect();
            let info = p.append(&kv_batch(&recs, 0, 0)).unwrap();
            let mut t = truth.lock().unwrap();
            for (i, (k, v)) in recs.into_iter().enumerate() {
                let offset = info.base_offset.0 + i as u64;
                t.insert(
                    offset,
                    Rec {
                        offset,
                        key: k,
                        value: v,
                        codec: 0,
                    },
                );
            }
            drop(t);
            p.clean().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
}

#[test]
fn compaction_on_the_real_file_system_keeps_readers_and_reopens_cleanly() {
    let dir = std::env::temp_dir().join(format!("runnel-compaction-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || {
        let mut c = runnel_log::LogConfig::new(&dir);
        c.topic_defaults = compacted(1000);
        c.background = false;
        c.batch_codec = Some(Arc::new(XorCodec));
        c
    };
    let log = Log::open(config()).unwrap();
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    fill(&p, 8, 6, 0, 1);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Errors may happen across a swap; bad data may not (read_records
                // checks every batch and every record).
                if let Ok(recs) = read_records(&p) {
                    assert_offsets_grow(&recs);
                }
            }
        });
        for round in 0..20 {
            fill(&p, 8, 1, round, round as u8 % 2);
            p.clean().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    let before = read_records(&p).unwrap();
    drop(p);
    log.close().unwrap();
    let log = Log::open(config()).unwrap();
    assert!(
        log.recovery_events().is_empty(),
        "{:?}",
        log.recovery_events()
    );
    assert_eq!(read_records(&part(&log)).unwrap(), before);
    drop(log);
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("topics/t/0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cleaned") || n.ends_with(".swap"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncating_into_a_gap_ends_the_log_after_the_last_batch_kept() {
    let mut sim = Sim::new(compacted(1000));
    let log = open(&sim, true, 1 << 20);
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    // Each batch's first record is superseded by the next batch: gaps inside batches.
    for i in 0..60 {
        let recs = [
            kv("hot", Some(&format!("{i}"))),
            kv(&format!("cold-{i}"), Some("c")),
        ];
        p.append(&kv_batch(&recs, 0, 0)).unwrap();
    }
    p.clean().unwrap();
    let before = read_records(&p).unwrap();
    let present: std::collections::HashSet<u64> = before.iter().map(|r| r.offset).collect();
    let first = before[0].offset;
    let gap = (first..p.log_end_offset().0)
        .find(|o| !present.contains(o))
        .expect("compaction left a gap");
    let end = p.truncate_to(Offset(gap)).unwrap();
    assert!(end.0 <= gap);
    let kept: Vec<Rec> = before
        .iter()
        .filter(|r| r.offset < end.0)
        .cloned()
        .collect();
    assert_eq!(read_records(&p).unwrap(), kept);
    let info = p.append(&kv_batch(&[kv("new", Some("x"))], 0, 0)).unwrap();
    assert_eq!(info.base_offset, end);
    drop(p);
    drop(log);
    sim.crash(CrashMode::DropUnsynced);
    let log = open(&sim, true, 1 << 20);
    let p = part(&log);
    assert_eq!(p.log_end_offset(), end.plus(1));
    assert_eq!(read_records(&p).unwrap().len(), kept.len() + 1);
    p.clean().unwrap();
}

#[test]
fn the_background_thread_compacts_on_its_own() {
    let sim = Sim::new(compacted(1000));
    let mut cfg = common::config(sim.defaults.clone());
    cfg.background = true;
    cfg.cleaner_interval = std::time::Duration::from_millis(5);
    let log = Log::open_with(cfg, Arc::new(sim.storage.clone()), sim.clock.clone()).unwrap();
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    fill(&p, 10, 8, 0, 0);
    let size = p.size_bytes();
    // Wait on the condition, with a deadline: the cleaner thread runs every 5 ms.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while p.size_bytes() >= size {
        assert!(
            std::time::Instant::now() < deadline,
            "the cleaner never ran"
        );
        std::thread::yield_now();
    }
    drop(p);
    log.close().unwrap();
}

/// The heart of crash safety: cut the power before every single file operation of a
/// cleaner pass, recover, and check that nothing compaction must keep was lost.
#[test]
fn a_power_cut_at_every_step_of_a_pass_loses_nothing() {
    const RETENTION_MS: u64 = 1000;
    let sim = Sim::new(compacted(RETENTION_MS));
    let log = open(&sim, true, 1 << 20);
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = part(&log);
    let ts = sim.clock.now_ms();
    fill(&p, 7, 12, ts, 0);
    fill(&p, 5, 6, ts, 1);
    // Deletions of keys with values in earlier segments: they expire before the pass,
    // so a pass that swapped out of order could bring the old values back.
    p.append(&kv_batch(&[kv("key-4", None), kv("key-5", None)], ts, 0))
        .unwrap();
    fill(&p, 3, 8, ts, 0);
    let truth: Vec<(Rec, i64)> = read_records(&p)
        .unwrap()
        .into_iter()
        .map(|r| (r, ts))
        .collect();
    let end = p.log_end_offset();
    drop(p);
    log.close().unwrap();
    sim.clock.advance(RETENTION_MS as i64);
    let now = sim.clock.now_ms();
    let base = sim.storage.power_cut(CrashMode::DropUnsynced);
    let fresh = || {
        let mut s = Sim::new(compacted(RETENTION_MS));
        s.clock.set(now);
        s.storage = base.power_cut(CrashMode::DropUnsynced);
        s
    };

    // How many file operations one pass takes.
    let ops = {
        let s = fresh();
        let log = open(&s, true, 1 << 20);
        let before = s.storage.op_count();
        let stats = part(&log).clean().unwrap();
        assert!(stats.segments_rewritten > 2, "{stats:?}");
        let recs = read_records(&part(&log)).unwrap();
        assert!(
            recs.iter().all(|r| r.key != kv("key-5", None).0),
            "the tombstones expired in this pass"
        );
        s.storage.op_count() - before
    };
    assert!(ops > 20, "{ops} operations");
    let mut swaps_finished = 0;
    for n in 1..=ops {
        let mut s = fresh();
        let log = open(&s, true, 1 << 20);
        let mode = if n % 2 == 0 {
            CrashMode::DropUnsynced
        } else {
            CrashMode::Torn { seed: n }
        };
        s.storage.arm_power_cut(n, mode);
        part(&log).clean().unwrap();
        let cut = s.storage.take_power_cut().expect("the cut happened");
        drop(log);
        s.storage = cut;
        let swap_pending = s
            .storage
            .files()
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".swap"));
        swaps_finished += usize::from(swap_pending);
        let log = open(&s, true, 1 << 20);
        let finished = log
            .recovery_events()
            .iter()
            .any(|e| matches!(e, RecoveryEvent::SwapFinished { .. }));
        assert_eq!(
            finished,
            swap_pending,
            "cut {n}: {:?}",
            log.recovery_events()
        );
        let p = part(&log);
        assert_eq!(p.log_end_offset(), end, "cut {n}");
        let recs = read_records(&p).unwrap_or_else(|e| panic!("cut {n}: {e}"));
        assert_promise_kept(&recs, &truth, now, RETENTION_MS);
        assert!(
            s.storage.files().iter().all(|f| {
                let name = f.to_string_lossy();
                !name.ends_with(".cleaned") && !name.ends_with(".swap")
            }),
            "cut {n}: leftovers"
        );
        // The recovered log cleans and takes appends as usual.
        p.clean().unwrap();
        assert_promise_kept(&read_records(&p).unwrap(), &truth, now, RETENTION_MS);
        let info = p
            .append(&kv_batch(&[kv("after", Some("cut"))], now, 0))
            .unwrap();
        assert_eq!(info.base_offset, end);
    }
    assert!(swaps_finished > 0, "some cuts fell between commit and swap");
}

mod model {
    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Records as (key, tombstone?); key 255 means no key.
        Append {
            records: Vec<(u8, bool)>,
            codec: u8,
        },
        Tick {
            ms: i64,
        },
        Clean,
        Reopen,
        Crash {
            seed: u64,
        },
        DeleteRecords {
            at: f64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let record = (
            prop_oneof![30 => 0u8..8, 1 => Just(255u8)],
            prop::bool::weighted(0.15),
        );
        prop_oneof![
            8 => (prop::collection::vec(record, 1..6), prop_oneof![Just(0u8), Just(1u8)])
                .prop_map(|(records, codec)| Op::Append { records, codec }),
            2 => (0i64..1500).prop_map(|ms| Op::Tick { ms }),
            3 => Just(Op::Clean),
            1 => Just(Op::Reopen),
            1 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
            1 => (0.0..0.5f64).prop_map(|at| Op::DeleteRecords { at }),
        ]
    }

    const DELETE_RETENTION_MS: u64 = 2000;

    /// Every record ever appended, by offset, with its batch's timestamp and codec.
    #[derive(Default)]
    struct Model {
        records: Vec<(Rec, i64)>,
        end: u64,
        log_start: u64,
    }

    fn check(p: &Partition, model: &Model, now: i64) -> Vec<Rec> {
        assert_eq!(p.log_end_offset(), Offset(model.end));
        assert_eq!(p.high_watermark(), Offset(model.end));
        assert_eq!(p.log_start_offset(), Offset(model.log_start));
        let recs = read_records(p).unwrap();
        let start = model.log_start;
        assert_promise_kept_from(&recs, &model.records, now, DELETE_RETENTION_MS, start);
        recs
    }

    fn run(ops: Vec<Op>, small_map: bool) {
        let mut sim = Sim::new(compacted(DELETE_RETENTION_MS));
        let map_bytes = if small_map {
            12 * runnel_log::config::CLEANER_MAP_ENTRY_BYTES
        } else {
            1 << 20
        };
        let mut log = open(&sim, true, map_bytes);
        log.create_topic("t", 1, &BTreeMap::new()).unwrap();
        let mut model = Model::default();
        let mut tag = 0u32;
        for op in ops {
            let p = part(&log);
            let now = sim.clock.now_ms();
            match op {
                Op::Append { records, codec } => {
                    let recs: Vec<Kv> = records
                        .iter()
                        .map(|&(k, tombstone)| {
                            tag += 1;
                            let key = (k != 255).then(|| vec![b'k', k]);
                            let value = (!tombstone).then(|| format!("v{tag}").into_bytes());
                            (key, value)
                        })
                        .collect();
                    let result = p.append(&kv_batch(&recs, now, codec));
                    if records.iter().any(|r| r.0 == 255) {
                        assert!(matches!(
                            result,
                            Err(LogError::Batch(BatchError::MissingKey { .. }))
                        ));
                        continue;
                    }
                    let info = result.unwrap();
                    assert_eq!(info.base_offset, Offset(model.end));
                    for (i, (key, value)) in recs.into_iter().enumerate() {
                        let offset = model.end + i as u64;
                        model.records.push((
                            Rec {
                                offset,
                                key,
                                value,
                                codec,
                            },
                            now,
                        ));
                    }
                    model.end += records.len() as u64;
                }
                Op::Tick { ms } => sim.clock.advance(ms),
                Op::Clean => {
                    let stats = p.clean().unwrap();
                    if let Some(upto) = stats.cleaned_upto {
                        let recs = check(&p, &model, now);
                        let mut seen = std::collections::HashSet::new();
                        for r in recs.iter().filter(|r| r.offset < upto.0) {
                            assert!(seen.insert(r.key.clone()), "a key twice below {upto}");
                        }
                    }
                }
                Op::Reopen => {
                    drop(p);
                    log.close().unwrap();
                    log = open(&sim, true, map_bytes);
                    assert!(
                        log.recovery_events().is_empty(),
                        "{:?}",
                        log.recovery_events()
                    );
                }
                Op::DeleteRecords { at } => {
                    let before =
                        model.log_start + ((model.end - model.log_start) as f64 * at) as u64;
                    let start = p.delete_records(Offset(before)).unwrap();
                    assert!(start.0 >= before && start.0 >= model.log_start);
                    model.log_start = start.0;
                }
                Op::Crash { seed } => {
                    drop(p);
                    drop(log);
                    sim.crash(CrashMode::Torn { seed });
                    log = open(&sim, true, map_bytes);
                    let start = part(&log).log_start_offset().0;
                    assert!(start >= model.log_start);
                    model.log_start = start;
                }
            }
            check(&part(&log), &model, sim.clock.now_ms());
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn compaction_behaves_like_the_model(
            ops in prop::collection::vec(op(), 1..80),
            small_map in any::<bool>(),
        ) {
            run(ops, small_map);
        }
    }
}
