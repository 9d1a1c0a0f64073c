//! Issue 11, the topic setting `compression.type` on `Core`'s append path, on a real
//! log: batches in another codec are stored re-compressed, idempotent ones keep their
//! sequences, and nothing is laundered (a damaged batch stays refused, a re-compressed
//! one stays within `max.message.bytes`).

mod common;
use common::{Fixture, fixture};

use std::collections::BTreeMap;
use std::sync::Arc;

use runnel_core::ProduceError;
use runnel_core::encode::NewRecord;
use runnel_core::producer_state::SequenceError;
use runnel_core::records::{KafkaCodecs, read};
use runnel_log::batch::{BatchHeader, HEADER_BYTES, build_batch, seal_crc, validate_stored};
use runnel_log::{AppendInfo, BatchCodec, BatchError, LogError, Offset, Partition};

use runnel_log::codec::CODEC_ZSTD as ZSTD;
const PRODUCE_V: i16 = 9;

fn topic(f: &Fixture, name: &str, settings: &[(&str, &str)]) -> Arc<Partition> {
    let overrides: BTreeMap<String, String> = settings
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    f.core.log().create_topic(name, 1, &overrides).unwrap();
    f.core.partition_for_append(name, 0).unwrap()
}

/// An uncompressed idempotent batch of two records from producer 9, epoch 0.
fn idempotent(sequence: i32) -> Vec<u8> {
    let mut b = build_batch(&[(Some(b"k"), Some(b"v")), (None, Some(b"w"))], 1_000);
    b[43..51].copy_from_slice(&9i64.to_be_bytes());
    b[51..53].copy_from_slice(&0i16.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    seal_crc(&mut b);
    b
}

/// Appends through `Core::append` and waits until the batch is durable (readable).
fn append(f: &Fixture, p: &Arc<Partition>, batch: &[u8]) -> Result<AppendInfo, ProduceError> {
    let ticket = f.core.append(p, batch, PRODUCE_V)?;
    Ok(p.wait_durable(ticket)?)
}

/// `(codec, producer id, base sequence, record count)` of every stored batch.
fn stored(p: &Partition) -> Vec<(u8, i64, i32, i32)> {
    let bytes = p.read(Offset(0), 1 << 20).unwrap().bytes;
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let h = BatchHeader::parse(rest).unwrap();
        let (batch, after) = rest.split_at(h.total_bytes() as usize);
        validate_stored(batch).unwrap();
        out.push((
            h.compression(),
            h.producer_id(),
            h.base_sequence(),
            h.record_count(),
        ));
        rest = after;
    }
    out
}

#[test]
fn an_idempotent_batch_is_stored_recompressed_and_its_retry_is_still_a_retry() {
    let f = fixture("ct-idempotent");
    let p = topic(&f, "t", &[("compression.type", "zstd")]);
    let first = append(&f, &p, &idempotent(0)).unwrap();
    let retry = append(&f, &p, &idempotent(0)).unwrap();
    assert_eq!(
        retry.base_offset, first.base_offset,
        "a retry gets its offsets"
    );
    assert_eq!(p.log_end_offset().0, 2, "and is not written twice");
    assert!(matches!(
        f.core.append(&p, &idempotent(5), PRODUCE_V),
        Err(ProduceError::Sequence(
            SequenceError::OutOfOrderSequence { .. }
        ))
    ));
    append(&f, &p, &idempotent(2)).unwrap();
    assert_eq!(stored(&p), vec![(ZSTD, 9, 0, 2), (ZSTD, 9, 2, 2)]);
    let (records, next) = read(&p, 0, 1 << 20).unwrap();
    assert_eq!(next, 4);
    let values: Vec<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(
        values,
        ["v", "w", "v", "w"].map(|v| bytes::Bytes::from(v.as_bytes()))
    );
    assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(records[0].timestamp, 1_000);
}

#[test]
fn producer_keeps_the_codec_and_a_codec_stores_every_append_path_in_it() {
    let f = fixture("ct-paths");
    let keep = topic(&f, "keep", &[]);
    let gzip = topic(&f, "gzip", &[("compression.type", "gzip")]);
    let mut zstd_batch = build_batch(&[(None, Some(b"z"))], 0);
    let packed = KafkaCodecs
        .compress(ZSTD, &zstd_batch[HEADER_BYTES..])
        .unwrap();
    zstd_batch.truncate(HEADER_BYTES);
    zstd_batch.extend_from_slice(&packed);
    let length = (zstd_batch.len() - 12) as i32;
    zstd_batch[8..12].copy_from_slice(&length.to_be_bytes());
    zstd_batch[21..23].copy_from_slice(&i16::from(ZSTD).to_be_bytes());
    seal_crc(&mut zstd_batch);

    for p in [&keep, &gzip] {
        append(&f, p, &zstd_batch).unwrap();
    }
    // Records from the HTTP API and the embedded transport go through the same rule.
    let record = NewRecord {
        value: Some(b"http".to_vec()),
        ..NewRecord::default()
    };
    f.core.produce("gzip", vec![(None, record)]).unwrap();
    assert_eq!(stored(&keep), vec![(ZSTD, -1, -1, 1)]);
    assert_eq!(stored(&gzip), vec![(1, -1, -1, 1), (1, -1, -1, 1)]);
    let values: Vec<_> = read(&gzip, 0, 1 << 20)
        .unwrap()
        .0
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(values, [&b"z"[..], &b"http"[..]]);
}

#[test]
fn a_damaged_batch_is_refused_not_resealed() {
    let f = fixture("ct-damaged");
    let p = topic(&f, "t", &[("compression.type", "lz4")]);
    let mut damaged = idempotent(0);
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    assert!(matches!(
        f.core.append(&p, &damaged, PRODUCE_V),
        Err(ProduceError::Log(LogError::Batch(
            BatchError::BadCrc { .. }
        )))
    ));
    assert_eq!(p.log_end_offset().0, 0);
}

#[test]
fn a_batch_that_grows_past_max_message_bytes_when_recompressed_is_refused() {
    let f = fixture("ct-grows");
    let p = topic(
        &f,
        "t",
        &[
            ("compression.type", "uncompressed"),
            ("max.message.bytes", "1024"),
        ],
    );
    let value = vec![b'x'; 4096];
    let plain = build_batch(&[(None, Some(&value))], 0);
    let mut gzip = plain[..HEADER_BYTES].to_vec();
    gzip.extend_from_slice(&KafkaCodecs.compress(1, &plain[HEADER_BYTES..]).unwrap());
    let length = (gzip.len() - 12) as i32;
    gzip[8..12].copy_from_slice(&length.to_be_bytes());
    gzip[21..23].copy_from_slice(&1i16.to_be_bytes());
    seal_crc(&mut gzip);
    assert!(gzip.len() < 1024, "it fits as sent: {} bytes", gzip.len());
    assert!(matches!(
        f.core.append(&p, &gzip, PRODUCE_V),
        Err(ProduceError::Log(LogError::Batch(
            BatchError::TooLarge { .. }
        )))
    ));
    assert_eq!(p.log_end_offset().0, 0);
}
