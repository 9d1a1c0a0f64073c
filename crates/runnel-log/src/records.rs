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
    /// Added to the batch's base offset. In a batch as a producer sent it this is the
    /// record's index; after compaction gaps appear, but deltas still strictly grow.
    pub offset_delta: i32,
    /// The key, or `None` for null.
    pub key: Option<&'a [u8]>,
    /// The value, or `None` for null (a tombstone).
    pub value: Option<&'a [u8]>,
    /// How many headers the record has.
    pub header_count: u32,
    /// The headers section after its count, already walked with bounds checks: read it
    /// with [`RecordView::headers`].
    pub header_bytes: &'a [u8],
    /// The whole record, its length prefix included: what the cleaner copies when it
    /// keeps the record.
    pub bytes: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The record's headers in order: `(key, value)`, the value `None` for null. The walk
    /// that produced this view checked every length, so this never reads out of bounds
    /// and allocates nothing.
    #[must_use]
    pub fn headers(&self) -> Headers<'a> {
        Headers {
            rest: Cursor(self.header_bytes),
            remaining: self.header_count,
        }
    }
}

/// The headers of one record, from [`RecordView::headers`].
#[derive(Debug)]
pub struct Headers<'a> {
    rest: Cursor<'a>,
    remaining: u32,
}

impl<'a> Iterator for Headers<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // Checked by the walk; a failure here would mean the view was built by hand.
        let key = self.rest.nullable_bytes().ok()??;
        let value = self.rest.nullable_bytes().ok()?;
        Some((key, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining as usize))
    }
}

/// Which offset deltas a walk accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deltas {
    /// 0, 1, 2, ...: a batch as a producer builds it (checked on append).
    Dense,
    /// Strictly increasing, from 0 up to and including the batch's `lastOffsetDelta`: a
    /// batch the cleaner rewrote keeps its records' original deltas, with gaps.
    Increasing {
        /// The batch's `lastOffsetDelta`.
        last_offset_delta: i32,
    },
}

/// Walks the `expected` records of a stored batch's `payload`, calling `f` on each.
/// Fails if the payload holds more or fewer records, if a record does not end where its
/// length says, if a length points past the end, or if offset deltas do not strictly
/// increase from 0 or more. Batches the cleaner rewrote have gaps between deltas, so
/// this is the walk for anything read back from a log; appends use
/// [`walk_records_with`] and [`Deltas::Dense`].
pub fn walk_records<'a>(
    payload: &'a [u8],
    expected: u32,
    f: impl FnMut(&RecordView<'a>),
) -> Result<(), BatchError> {
    let last_offset_delta = i32::MAX;
    walk_records_with(
        payload,
        expected,
        Deltas::Increasing { last_offset_delta },
        f,
    )
}

/// [`walk_records`] with an explicit rule for offset deltas.
pub fn walk_records_with<'a>(
    payload: &'a [u8],
    expected: u32,
    deltas: Deltas,
    mut f: impl FnMut(&RecordView<'a>),
) -> Result<(), BatchError> {
    let mut r = Cursor(payload);
    let mut previous: i64 = -1;
    for index in 0..expected {
        let start = r.0;
        let length = r.varint()?;
        let length = usize::try_from(length).map_err(|_| bad("negative record length"))?;
        let mut rec = Cursor(r.take(length)?);
        let bytes = &start[..start.len() - r.0.len()];
        let _attributes = rec.take(1)?;
        let timestamp_delta = rec.varint()?;
        let offset_delta = rec.varint()?;
        match deltas {
            Deltas::Dense if offset_delta != i64::from(index) => {
                return Err(bad("record offset deltas must count up from 0"));
            }
            Deltas::Increasing { last_offset_delta }
                if offset_delta <= previous || offset_delta > i64::from(last_offset_delta) =>
            {
                return Err(bad(
                    "record offset deltas must grow and stay within lastOffsetDelta",
                ));
            }
            _ => {}
        }
        previous = offset_delta;
        let key = rec.nullable_bytes()?;
        let value = rec.nullable_bytes()?;
        let header_count = rec.varint()?;
        // Each header takes at least two bytes: a count beyond that is a lie.
        if header_count < 0 || header_count as usize > rec.0.len() / 2 {
            return Err(bad("header count does not fit the record"));
        }
        let header_bytes = rec.0;
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
            header_bytes,
            bytes,
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

#[derive(Debug)]
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

    /// The payload of `build_batch` with the second of three records cut out, as the
    /// cleaner leaves it: deltas 0 and 2.
    fn with_gap() -> Vec<u8> {
        let p = payload(&[
            (Some(b"a"), Some(b"1")),
            (Some(b"b"), None),
            (Some(b"c"), Some(b"3")),
        ]);
        let mut records = Vec::new();
        walk_records(&p, 3, |r| records.push(r.bytes.to_vec())).unwrap();
        [records[0].clone(), records[2].clone()].concat()
    }

    #[test]
    fn stored_batches_may_have_gaps_but_appends_may_not() {
        let gap = with_gap();
        let mut deltas = Vec::new();
        walk_records(&gap, 2, |r| deltas.push(r.offset_delta)).unwrap();
        assert_eq!(deltas, vec![0, 2]);
        let within = Deltas::Increasing {
            last_offset_delta: 2,
        };
        walk_records_with(&gap, 2, within, |_| {}).unwrap();
        let beyond = Deltas::Increasing {
            last_offset_delta: 1,
        };
        assert!(walk_records_with(&gap, 2, beyond, |_| {}).is_err());
        assert!(walk_records_with(&gap, 2, Deltas::Dense, |_| {}).is_err());
    }

    #[test]
    fn deltas_must_strictly_grow() {
        let one = payload(&[(Some(b"a"), Some(b"1"))]);
        let twice = [one.clone(), one].concat();
        assert!(walk_records(&twice, 2, |_| {}).is_err(), "a repeated delta");
    }

    #[test]
    fn headers_are_read_back_in_order() {
        // attributes, timestamp delta 0, offset delta 0, key null, value "v", 2 headers:
        // ("a", "1") and ("b", null).
        let rec = [0u8, 0, 0, 1, 2, b'v', 4, 2, b'a', 2, b'1', 2, b'b', 1];
        let mut p = vec![(rec.len() as u8) << 1];
        p.extend_from_slice(&rec);
        let mut seen = Vec::new();
        walk_records(&p, 1, |r| {
            assert_eq!(r.header_count, 2);
            seen.extend(r.headers());
        })
        .unwrap();
        assert_eq!(seen, vec![(&b"a"[..], Some(&b"1"[..])), (&b"b"[..], None)]);
    }

    #[test]
    fn a_record_view_carries_its_exact_bytes() {
        let p = payload(&[(Some(b"k"), Some(b"v")), (None, None)]);
        let mut all = Vec::new();
        walk_records(&p, 2, |r| all.extend_from_slice(r.bytes)).unwrap();
        assert_eq!(all, p);
    }
}
