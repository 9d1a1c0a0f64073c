//! The records inside a batch: a bounds-checked walk over an uncompressed payload (the
//! bytes after the 61-byte header, or what decompressing them gave).
//!
//! Record layout (varints are zigzag-encoded, as in Kafka):
//!
//! | field            | type                      |
//! |------------------|---------------------------|
//! | length           | varint: bytes that follow |
//! | attributes       | int8 (unused)             |
//! | timestampDelta   | varlong                   |
//! | offsetDelta      | varint                    |
//! | keyLength, key   | varint (-1: null), bytes  |
//! | valueLength, val | varint (-1: null), bytes  |
//! | headers count    | varint                    |
//! | headers          | key (varint length, bytes), value (varint length, -1: null, bytes) |
//!
//! Every count and length is checked against the bytes actually there before it is
//! used, so a batch that lies about its contents is refused without allocating for the
//! lie.

use crate::error::BatchError;

/// One record, borrowed from the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Added to the batch's base timestamp.
    pub timestamp_delta: i64,
    /// Added to the batch's base offset; equals the record's index in the batch.
    pub offset_delta: i32,
    /// The key, or `None` for null.
    pub key: Option<&'a [u8]>,
    /// The value, or `None` for null (a tombstone).
    pub value: Option<&'a [u8]>,
    /// How many headers the record has.
    pub header_count: u32,
}

/// Walks the `expected` records of `payload`, calling `f` on each. Fails if the payload
/// holds more or fewer records, if a record does not end where its length says, if a
/// length points past the end, or if offset deltas are not 0, 1, 2, ...
pub fn walk_records<'a>(
    payload: &'a [u8],
    expected: u32,
    mut f: impl FnMut(&RecordView<'a>),
) -> Result<(), BatchError> {
    let mut r = Cursor(payload);
    for index in 0..expected {
        let length = r.varint()?;
        let length = usize::try_from(length).map_err(|_| bad("negative record length"))?;
        let mut rec = Cursor(r.take(length)?);
        let _attributes = rec.take(1)?;
        let timestamp_delta = rec.varint()?;
        let offset_delta = rec.varint()?;
        if offset_delta != i64::from(index) {
            return Err(bad("record offset deltas must count up from 0"));
        }
        let key = rec.nullable_bytes()?;
        let value = rec.nullable_bytes()?;
        let header_count = rec.varint()?;
        // Each header takes at least two bytes: a count beyond that is a lie.
        if header_count < 0 || header_count as usize > rec.0.len() / 2 {
            return Err(bad("header count does not fit the record"));
        }
        for _ in 0..header_count {
            rec.nullable_bytes()?
                .ok_or_else(|| bad("null header key"))?;
            rec.nullable_bytes()?;
        }
        if !rec.0.is_empty() {
            return Err(bad("record longer than its fields"));
        }
        f(&RecordView {
            timestamp_delta,
            offset_delta: offset_delta as i32,
            key,
            value,
            header_count: header_count as u32,
        });
    }
    if !r.0.is_empty() {
        return Err(bad("bytes after the last record"));
    }
    Ok(())
}

fn bad(reason: &'static str) -> BatchError {
    BatchError::BadRecords { reason }
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BatchError> {
        if n > self.0.len() {
            return Err(bad("a length points past the end of the batch"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    /// A zigzag varint of at most 10 bytes.
    fn varint(&mut self) -> Result<i64, BatchError> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = *self.0.first().ok_or_else(|| bad("truncated varint"))?;
            self.0 = &self.0[1..];
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((raw >> 1) as i64 ^ -((raw & 1) as i64));
            }
        }
        Err(bad("varint longer than 10 bytes"))
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, BatchError> {
        match self.varint()? {
            -1 => Ok(None),
            n if n >= 0 => Ok(Some(self.take(n as usize)?)),
            _ => Err(bad("negative length")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{HEADER_BYTES, build_batch};

    fn payload(records: &[crate::batch::KeyValue<'_>]) -> Vec<u8> {
        build_batch(records, 1_000)[HEADER_BYTES..].to_vec()
    }

    #[test]
    fn walks_what_the_builder_wrote() {
        let p = payload(&[
            (Some(b"k"), Some(b"v")),
            (None, None),
            (Some(b""), Some(b"x")),
        ]);
        let mut seen = Vec::new();
        walk_records(&p, 3, |r| seen.push((r.offset_delta, r.key, r.value))).unwrap();
        assert_eq!(
            seen,
            vec![
                (0, Some(&b"k"[..]), Some(&b"v"[..])),
                (1, None, None),
                (2, Some(&b""[..]), Some(&b"x"[..]))
            ]
        );
    }

    #[test]
    fn lying_counts_are_refused() {
        let p = payload(&[(Some(b"k"), Some(b"v"))]);
        assert!(
            walk_records(&p, 2, |_| {}).is_err(),
            "fewer records than claimed"
        );
        let two = payload(&[(None, None), (None, None)]);
        assert!(
            walk_records(&two, 1, |_| {}).is_err(),
            "more records than claimed"
        );
        // One record claiming i32::MAX headers (zigzag varint fe ff ff ff 0f).
        let rec = [0u8, 0, 0, 1, 1, 0xfe, 0xff, 0xff, 0xff, 0x0f];
        let mut lie = vec![(rec.len() as u8) << 1];
        lie.extend_from_slice(&rec);
        assert_eq!(
            walk_records(&lie, 1, |_| {}),
            Err(BatchError::BadRecords {
                reason: "header count does not fit the record"
            })
        );
    }

    #[test]
    fn truncations_never_panic() {
        let p = payload(&[(Some(b"key"), Some(b"value")), (None, Some(b"v2"))]);
        for cut in 0..p.len() {
            assert!(walk_records(&p[..cut], 2, |_| {}).is_err(), "cut at {cut}");
        }
    }
}
