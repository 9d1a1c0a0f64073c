//! The issue's measurement from outside, on the real binary: 200 acknowledged batches in
//! one partition, the broker SIGKILLed, one bit flipped in a batch in the middle of the
//! segment, a restart. Only that batch is lost: the 199 others are served, the log end
//! is where it was, and `/metrics` counts the quarantined batch.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Broker, TempDir, http_get, http_post};

const BATCHES: u64 = 200;

/// The offset in a 12-byte checkpoint file (8 bytes big-endian, then a CRC).
fn checkpoint(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

/// Each batch's position in a segment file.
fn batch_positions(bytes: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 12 <= bytes.len() {
        out.push(pos);
        let len = u32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        pos += 12 + len as usize;
    }
    out
}

#[test]
fn a_flipped_bit_after_kill_9_costs_one_batch_of_two_hundred() {
    let dir = TempDir::new("bitflip");
    let b = Broker::start(&dir.0);
    let (status, body) = http_post(
        &b.http,
        "/api/v1/topics",
        r#"{"name": "flips", "partitions": 1}"#,
    );
    assert!(status.contains(" 20"), "{status} {body}");
    // One request, one batch, acknowledged once fsynced.
    for i in 0..BATCHES {
        let (status, body) = http_post(
            &b.http,
            "/api/v1/topics/flips/records",
            &format!(r#"{{"records": [{{"value": "record {i}", "partition": 0}}]}}"#),
        );
        assert!(status.contains(" 20"), "{status} {body}");
    }
    // The background thread records the durable offset as the recovery point (every
    // second): wait for it to cover every batch.
    let partition = dir.0.join("topics").join("flips").join("0");
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint(&partition.join("recovery-point")) != Some(BATCHES) {
        assert!(
            Instant::now() < deadline,
            "recovery point {:?}",
            checkpoint(&partition.join("recovery-point"))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    b.kill9();

    let segment = partition.join("00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let positions = batch_positions(&bytes);
    assert_eq!(positions.len() as u64, BATCHES);
    // A bit inside batch 100's records.
    bytes[positions[100] + 70] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();

    let b = Broker::start(&dir.0);
    let (status, body) = http_get(
        &b.http,
        "/api/v1/topics/flips/partitions/0/records?offset=0&limit=1000",
    );
    assert!(status.contains(" 200"), "{status} {body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let offsets: Vec<u64> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (0..BATCHES).filter(|&o| o != 100).collect();
    assert_eq!(offsets, want);
    assert_eq!(page["high_watermark"].as_u64(), Some(BATCHES));
    let (_, metrics) = http_get(&b.http, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "runnel_quarantined_batches_total 1"),
        "{metrics}"
    );
    // The damaged bytes are kept beside the segment.
    let kept: Vec<_> = std::fs::read_dir(&partition)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".quarantined"))
        .collect();
    assert_eq!(kept.len(), 1);
    drop(b);
}
