//! Reading records out of stored batches: decompression with the codecs Kafka defines,
//! a bounds-checked walk (`runnel_log::records`), so a batch that lies about its counts
//! costs only its bytes, and [`read`], the one loop that steps through a partition.
//!
//! Every decompression goes through one function with an output limit (`decode_into`,
//! behind [`decompress`] and [`decompressed_len`]): the decoders stream and stop as
//! soon as the output passes the limit, and snappy's length headers are checked before
//! anything is allocated. Callers pass the topic's
//! [`decompressed_bytes_max`](runnel_log::codec::decompressed_bytes_max); readers,
//! which do not know the topic's settings, pass
//! [`DECOMPRESSED_BYTES_CEILING`], the
//! largest limit a topic can have, so whatever was accepted reads back.
//!
//! Every reader steps by a batch's *end* (`baseOffset + lastOffsetDelta + 1`), never by
//! the last record's offset + 1: the cleaner may have removed a batch's last records,
//! and a reader that restarted at the last record kept would read it again, forever.
//!
//! Records read here are slices of the buffer they were read into ([`records_in`]): a
//! key, value or header value costs a reference count, not an allocation and a copy.
//! The walk stays bounds-checked; only what it accepted is sliced.

use std::io::{self, Read, Write};

use bytes::Bytes;
use runnel_log::batch::{BatchHeader, HEADER_BYTES};
use runnel_log::codec::DECOMPRESSED_BYTES_CEILING;
use runnel_log::records::walk_records;
use runnel_log::{CodecError, LogError, Offset, Partition};

/// One record as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its offset.
    pub offset: i64,
    /// Its timestamp (create time, or the batch's log-append time), ms since the epoch.
    pub timestamp: i64,
    /// The key, `None` for null.
    pub key: Option<Bytes>,
    /// The value, `None` for null.
    pub value: Option<Bytes>,
    /// The headers in order: key and value (`None` for null), as stored. Kafka says a
    /// key is UTF-8 but nothing checks it: decode it where it is shown or compared
    /// (slicing costs no allocation, so a reader that knows the names it expects
    /// compares bytes).
    pub headers: Vec<(Bytes, Option<Bytes>)>,
}

/// The records section of a compressed batch, decompressed (codec ids 1 gzip, 2 snappy,
/// 3 lz4, 4 zstd), if it decompresses to at most `limit_bytes`. Memory stays within
/// about the limit whatever the payload claims: decoding stops past it, with
/// [`CodecError::TooLarge`]. Bytes that do not decode are [`CodecError::Invalid`].
pub fn decompress(codec: u8, payload: &[u8], limit_bytes: usize) -> Result<Vec<u8>, CodecError> {
    // A guess for the common case (a few times the payload), never the claimed size.
    let guess = payload.len().saturating_mul(4).min(limit_bytes);
    let mut out = Vec::with_capacity(guess);
    decode_into(codec, payload, limit_bytes, &mut out)?;
    Ok(out)
}

/// How many bytes the records section of a compressed batch decompresses to, if at most
/// `limit_bytes`; as [`decompress`], but the output is counted and dropped as it comes,
/// so a check costs the decoders' buffers, not the records (snappy excepted: one block
/// at a time, within the limit).
pub fn decompressed_len(
    codec: u8,
    payload: &[u8],
    limit_bytes: usize,
) -> Result<usize, CodecError> {
    decode_into(codec, payload, limit_bytes, &mut io::sink())
}

/// The one decompression: decodes `payload` with `codec` into `out`, and returns how
/// many bytes it wrote, at most `limit_bytes`. Past the limit it stops (having written
/// at most `limit_bytes + 1`) and returns [`CodecError::TooLarge`].
fn decode_into(
    codec: u8,
    payload: &[u8],
    limit_bytes: usize,
    out: &mut impl Write,
) -> Result<usize, CodecError> {
    let invalid = |e: io::Error| CodecError::Invalid {
        codec,
        reason: e.to_string(),
    };
    match codec {
        // Kafka's producers write one gzip member; Java's GZIPInputStream reads several.
        1 => copy_capped(
            codec,
            flate2::read::MultiGzDecoder::new(payload),
            limit_bytes,
            out,
        ),
        2 => snappy_into(payload, limit_bytes, out),
        3 => {
            let mut decoder = lz4::Decoder::new(payload).map_err(invalid)?;
            let n = copy_capped(codec, &mut decoder, limit_bytes, out)?;
            // The decoder reads a cut frame as a short one: ask whether the frame ended.
            decoder.finish().1.map_err(invalid)?;
            Ok(n)
        }
        4 => {
            // A frame names its window size, which the decoder allocates, and may name
            // its content size: either past what the limit allows is refused on the claim.
            let window_log_max = zstd_window_log_max(limit_bytes);
            let claims = zstd_frame_claims(payload);
            if claims.content_bytes.is_some_and(|n| n > limit_bytes as u64)
                || claims
                    .window_bytes
                    .is_some_and(|n| n > 1u64 << window_log_max)
            {
                return Err(CodecError::TooLarge { codec, limit_bytes });
            }
            let mut decoder = zstd::stream::read::Decoder::with_buffer(payload).map_err(invalid)?;
            decoder.window_log_max(window_log_max).map_err(invalid)?;
            copy_capped(codec, decoder, limit_bytes, out)
        }
        _ => Err(CodecError::Invalid {
            codec,
            reason: "unknown codec".into(),
        }),
    }
}

/// The zstd window (log2) always allowed, whatever the limit: 8 MiB, what zstd's levels
/// up to 19 declare for a stream of unknown size (as producers' streaming encoders
/// write), and no more than the decompression floor.
const ZSTD_WINDOW_LOG_ALWAYS: u32 = 23;
/// zstd's largest window without the caller's consent (`ZSTD_WINDOWLOG_LIMIT_DEFAULT`,
/// 128 MiB), as a log2.
const ZSTD_WINDOW_LOG_DEFAULT_MAX: u32 = 27;
const _: () = assert!(1 << ZSTD_WINDOW_LOG_ALWAYS <= runnel_log::codec::DECOMPRESSED_BYTES_FLOOR);

/// The largest zstd window (log2) worth allocating for output of `limit_bytes`: the
/// limit rounded up to a power of two, within the bounds above.
fn zstd_window_log_max(limit_bytes: usize) -> u32 {
    let log = usize::BITS - limit_bytes.saturating_sub(1).leading_zeros();
    log.clamp(ZSTD_WINDOW_LOG_ALWAYS, ZSTD_WINDOW_LOG_DEFAULT_MAX)
}

/// What the header of a zstd payload's first frame claims (RFC 8878, 3.1.1.1).
#[derive(Debug, Default)]
struct ZstdClaims {
    /// `Frame_Content_Size`, when the frame gives it.
    content_bytes: Option<u64>,
    /// The window size, when the frame has a `Window_Descriptor` (else the window is the
    /// content size).
    window_bytes: Option<u64>,
}

/// Reads [`ZstdClaims`] from the start of `payload`; nothing for what is not a frame
/// header (the decoder then says what is wrong).
fn zstd_frame_claims(payload: &[u8]) -> ZstdClaims {
    const MAGIC: [u8; 4] = 0xFD2F_B528u32.to_le_bytes();
    const SINGLE_SEGMENT: u8 = 0x20;
    if !payload.starts_with(&MAGIC) {
        return ZstdClaims::default();
    }
    let content_bytes = zstd::zstd_safe::get_frame_content_size(payload)
        .ok()
        .flatten();
    let window_bytes = match payload.get(4..6) {
        Some(&[descriptor, window]) if descriptor & SINGLE_SEGMENT == 0 => {
            // Window_Descriptor: exponent (5 bits) and mantissa (3 bits).
            let base = 1u64 << (10 + u32::from(window >> 3));
            Some(base + base / 8 * u64::from(window & 7))
        }
        _ => None,
    };
    ZstdClaims {
        content_bytes,
        window_bytes,
    }
}

/// Copies what `decoder` produces into `out`, reading at most `limit_bytes + 1` bytes
/// of output from it: one past the limit tells "too large" from "exactly the limit".
fn copy_capped(
    codec: u8,
    decoder: impl Read,
    limit_bytes: usize,
    out: &mut impl Write,
) -> Result<usize, CodecError> {
    let cap = (limit_bytes as u64).saturating_add(1);
    let n = io::copy(&mut decoder.take(cap), out).map_err(|e| CodecError::Invalid {
        codec,
        reason: e.to_string(),
    })?;
    if n > limit_bytes as u64 {
        return Err(CodecError::TooLarge { codec, limit_bytes });
    }
    Ok(n as usize)
}

/// The 16-byte header of snappy-java's framing (`SnappyOutputStream`), which Kafka's
/// clients write: the magic, then version and compatible version (1 and 1).
const XERIAL_HEADER_BYTES: usize = 16;
/// The first 8 bytes of that header, the part snappy-java checks.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
/// Bytes of a xerial block's length prefix (big-endian).
const XERIAL_BLOCK_LENGTH_BYTES: usize = 4;

/// Snappy as Kafka's clients write it: snappy-java's framing (blocks of raw snappy,
/// each after a big-endian length), or raw snappy without it (as snappy-java reads
/// too). Each block's decoded length, which its header claims, is checked against what
/// is left of the limit before anything is allocated for it.
fn snappy_into(
    payload: &[u8],
    limit_bytes: usize,
    out: &mut impl Write,
) -> Result<usize, CodecError> {
    let mut block = Vec::new();
    if !payload.starts_with(XERIAL_MAGIC) {
        return snappy_block_into(payload, limit_bytes, &mut block, out);
    }
    let Some(mut rest) = payload.get(XERIAL_HEADER_BYTES..) else {
        return Err(snappy_invalid("a cut snappy-java header"));
    };
    let mut written = 0usize;
    while !rest.is_empty() {
        let Some((length, after)) = rest.split_first_chunk::<XERIAL_BLOCK_LENGTH_BYTES>() else {
            return Err(snappy_invalid("a cut snappy block length"));
        };
        let length = u32::from_be_bytes(*length) as usize;
        let Some((raw, after)) = after.split_at_checked(length) else {
            return Err(snappy_invalid("a snappy block longer than the payload"));
        };
        // What is left of the limit: past it, the block says TooLarge before allocating.
        written +=
            snappy_block_into(raw, limit_bytes - written, &mut block, out).map_err(
                |e| match e {
                    CodecError::TooLarge { codec, .. } => {
                        CodecError::TooLarge { codec, limit_bytes }
                    }
                    e => e,
                },
            )?;
        rest = after;
    }
    Ok(written)
}

/// Kafka's codec id for snappy.
const CODEC_SNAPPY: u8 = 2;

fn snappy_invalid(reason: impl Into<String>) -> CodecError {
    CodecError::Invalid {
        codec: CODEC_SNAPPY,
        reason: reason.into(),
    }
}

/// One raw snappy block into `out` through the scratch `block`, if its claimed length
/// is at most `limit_bytes` (checked before `block` grows to it).
fn snappy_block_into(
    raw: &[u8],
    limit_bytes: usize,
    block: &mut Vec<u8>,
    out: &mut impl Write,
) -> Result<usize, CodecError> {
    let len = snap::raw::decompress_len(raw).map_err(|e| snappy_invalid(e.to_string()))?;
    if len > limit_bytes {
        return Err(CodecError::TooLarge {
            codec: CODEC_SNAPPY,
            limit_bytes,
        });
    }
    block.clear();
    block.resize(len, 0);
    let n = snap::raw::Decoder::new()
        .decompress(raw, block)
        .map_err(|e| snappy_invalid(e.to_string()))?;
    out.write_all(&block[..n])
        .map_err(|e| snappy_invalid(e.to_string()))?;
    Ok(n)
}

/// Every record of the whole batches in `bytes` (as `Partition::read` returns them),
/// from `from` on, and the offset after the last batch read (`from` if none): where
/// the next read starts. That is the batch's end, not the last record's offset + 1,
/// because compaction may have removed a batch's last records. A batch that cannot be
/// read ends the list there.
///
/// Copies `bytes` once; [`records_in`] takes them as `Bytes` and copies nothing.
#[must_use]
pub fn records_of(bytes: &[u8], from: i64) -> (Vec<StoredRecord>, i64) {
    records_in(&Bytes::copy_from_slice(bytes), from)
}

/// [`records_of`] without copying: every key, value and header value is a slice of
/// `bytes` (or of the decompressed payload of its batch), so the records keep that
/// buffer alive until the last of them is dropped. Header names are copied (they are
/// `String`s, and short).
#[must_use]
pub fn records_in(bytes: &Bytes, from: i64) -> (Vec<StoredRecord>, i64) {
    let mut out = Vec::new();
    let mut next = from;
    let mut at = 0;
    while let Ok(h) = BatchHeader::parse(&bytes[at..]) {
        let end = at + (h.total_bytes() as usize).min(bytes.len() - at);
        let payload = bytes.slice((at + HEADER_BYTES).min(end)..end);
        let records = match h.compression() {
            0 => payload,
            // The topic's limit is not known here; what it accepted is within this one.
            codec => match decompress(codec, &payload, DECOMPRESSED_BYTES_CEILING) {
                Ok(d) => Bytes::from(d),
                Err(_) => break,
            },
        };
        let base = h.base_offset().0 as i64;
        // Records of a batch that turns out to be bad are taken back out.
        let kept = out.len();
        let slice = |s: &[u8]| records.slice_ref(s);
        let walked = walk_records(&records, h.record_count().max(0) as u32, |r| {
            let offset = base + i64::from(r.offset_delta);
            if offset < from {
                return;
            }
            // The walk checked the header count against the bytes there.
            let mut headers = Vec::with_capacity(r.header_count as usize);
            headers.extend(r.headers().map(|(k, v)| (slice(k), v.map(slice))));
            out.push(StoredRecord {
                offset,
                timestamp: if h.is_log_append_time() {
                    h.max_timestamp()
                } else {
                    h.base_timestamp().saturating_add(r.timestamp_delta)
                },
                key: r.key.map(slice),
                value: r.value.map(slice),
                headers,
            });
        });
        if walked.is_err() {
            out.truncate(kept);
            break;
        }
        next = next.max(h.last_offset().0 as i64 + 1);
        at = end;
    }
    (out, next)
}

/// Reads the records of `partition` from `from` on: whole batches up to about
/// `max_bytes` (at least one batch), and the offset to read from next, the end of the
/// last batch read. This is the one reader every caller uses (offset loading, the HTTP
/// API, live tails, ListOffsets, the embedded transport):
///
/// - it steps by batch end, so a batch the cleaner emptied of its last records never
///   stalls a reader;
/// - a read that returned only records below `from` (the rest of a batch `from` falls
///   into was compacted away, or whole batches were) goes on from the batch end instead
///   of returning nothing, so an empty answer means the high watermark was reached.
///
/// The next offset equals `from` when nothing could be read: at the high watermark, or
/// at a batch whose records cannot be decoded (then nothing after it is served, as with
/// [`records_of`]). Errors are the log's: a `from` below the log start (negative ones
/// included, reported as 0) or above the high watermark is
/// [`LogError::OffsetOutOfRange`].
pub fn read(
    partition: &Partition,
    from: i64,
    max_bytes: usize,
) -> Result<(Vec<StoredRecord>, i64), LogError> {
    if from < 0 {
        return Err(LogError::OffsetOutOfRange {
            requested: Offset(0),
            log_start: partition.log_start_offset(),
            high_watermark: partition.high_watermark(),
        });
    }
    let mut next = from;
    loop {
        let read = partition.read(Offset(next as u64), max_bytes)?;
        if read.bytes.is_empty() {
            return Ok((Vec::new(), next));
        }
        // The records are slices of this one buffer: no copy per key, value or header.
        let (records, end) = records_in(&Bytes::from(read.bytes), from);
        if !records.is_empty() || end <= next {
            return Ok((records, end.max(next)));
        }
        next = end;
        if next >= read.high_watermark.0 as i64 {
            return Ok((Vec::new(), next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_log::batch::build_batch;

    #[test]
    fn records_of_back_to_back_batches_from_an_offset() {
        let mut a = build_batch(&[(Some(b"k"), Some(b"v")), (None, None)], 1_000);
        let mut b = build_batch(&[(Some(b"x"), Some(b"y"))], 2_000);
        b[..8].copy_from_slice(&2i64.to_be_bytes());
        a.append(&mut b);
        let (all, next) = records_of(&a, 0);
        assert_eq!(next, 3);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(all[1].value, None);
        assert_eq!((all[2].offset, all[2].timestamp), (2, 2_000));
        assert_eq!(records_of(&a, 1).0.len(), 2);
        let whole = Bytes::from(a.clone());
        let (sliced, _) = records_in(&whole, 0);
        assert_eq!(sliced, all);
        let inside = whole.as_ptr_range();
        let key = sliced[0].key.as_ref().unwrap();
        assert!(
            inside.contains(&key.as_ptr()),
            "keys are slices of the read buffer, not copies"
        );
        assert_eq!(
            records_of(&a[..70], 0),
            (Vec::new(), 0),
            "a cut batch gives nothing"
        );
    }
}

/// Kafka's codecs for the log's cleaner and key checks (`runnel_log::BatchCodec`):
/// gzip, snappy, lz4 and zstd, so compacted topics compact compressed batches too and
/// write them back in the same codec. Compression goes through `kafka-protocol`,
/// decompression through [`decompress`] and its limit.
#[derive(Debug, Default)]
pub struct KafkaCodecs;

impl runnel_log::BatchCodec for KafkaCodecs {
    fn decompress(
        &self,
        codec: u8,
        payload: &[u8],
        limit_bytes: usize,
    ) -> Result<Vec<u8>, CodecError> {
        decompress(codec, payload, limit_bytes)
    }

    fn compress(&self, codec: u8, records: &[u8]) -> Result<Vec<u8>, CodecError> {
        use bytes::{BufMut, BytesMut};
        use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
        let mut out = BytesMut::new();
        let fill = |tmp: &mut BytesMut| {
            tmp.put_slice(records);
            Ok(())
        };
        let done = match codec {
            1 => Gzip::compress(&mut out, fill),
            2 => Snappy::compress(&mut out, fill),
            3 => Lz4::compress(&mut out, fill),
            4 => Zstd::compress(&mut out, fill),
            _ => {
                return Err(CodecError::Invalid {
                    codec,
                    reason: "unknown codec".into(),
                });
            }
        };
        done.map(|()| out.to_vec())
            .map_err(|e| CodecError::Invalid {
                codec,
                reason: format!("{e:#}"),
            })
    }
}

#[cfg(test)]
mod codec_tests {
    use super::*;
    use runnel_log::BatchCodec;

    #[test]
    fn every_codec_round_trips() {
        let records = b"some records, some records, some records".repeat(20);
        for codec in 1..=4 {
            let packed = KafkaCodecs.compress(codec, &records).unwrap();
            assert_ne!(packed, records, "codec {codec}");
            let limit = records.len();
            assert_eq!(
                KafkaCodecs.decompress(codec, &packed, limit).unwrap(),
                records
            );
            assert_eq!(
                KafkaCodecs.decompress(codec, &packed, limit - 1),
                Err(CodecError::TooLarge {
                    codec,
                    limit_bytes: limit - 1
                }),
                "one byte over the limit"
            );
        }
        assert!(KafkaCodecs.compress(7, b"x").is_err());
    }

    /// Counts what a decoder writes, and keeps none of it.
    #[derive(Default)]
    struct Counting(usize);

    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Issue 11: 16 MiB of zeros compresses to a few KiB in every codec. With a 1 MiB
    /// limit, the decoders stop one byte past it: the output is never made whole.
    #[test]
    fn a_decompression_bomb_is_refused_at_the_limit_in_every_codec() {
        const BOMB_BYTES: usize = 16 << 20;
        const LIMIT_BYTES: usize = 1 << 20;
        let zeros = vec![0u8; BOMB_BYTES];
        for codec in 1..=4 {
            let bomb = KafkaCodecs.compress(codec, &zeros).unwrap();
            assert!(
                bomb.len() < LIMIT_BYTES,
                "codec {codec}: {} bytes",
                bomb.len()
            );
            let mut seen = Counting::default();
            let refused = decode_into(codec, &bomb, LIMIT_BYTES, &mut seen);
            assert_eq!(
                refused,
                Err(CodecError::TooLarge {
                    codec,
                    limit_bytes: LIMIT_BYTES
                }),
                "codec {codec}"
            );
            assert!(
                seen.0 <= LIMIT_BYTES + 1,
                "codec {codec}: {} bytes came out past a limit of {LIMIT_BYTES}",
                seen.0
            );
            assert!(matches!(
                decompress(codec, &bomb, LIMIT_BYTES),
                Err(CodecError::TooLarge { .. })
            ));
            assert!(matches!(
                decompressed_len(codec, &bomb, LIMIT_BYTES),
                Err(CodecError::TooLarge { .. })
            ));
            // Within a limit that fits, the same bytes decompress.
            assert_eq!(decompressed_len(codec, &bomb, BOMB_BYTES), Ok(BOMB_BYTES));
        }
    }

    /// Raw snappy starts with the decoded length: one that claims 4 GiB is refused on
    /// that claim, before anything is allocated or decoded (the bytes after it are not
    /// even valid snappy).
    #[test]
    fn a_snappy_length_claim_past_the_limit_is_refused_before_allocating() {
        let claims_4_gib = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x01];
        assert_eq!(
            decompress(2, &claims_4_gib, 1 << 20),
            Err(CodecError::TooLarge {
                codec: 2,
                limit_bytes: 1 << 20
            })
        );
        // The same claim inside snappy-java's framing.
        let mut framed = XERIAL_MAGIC.to_vec();
        framed.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1]);
        framed.extend_from_slice(&(claims_4_gib.len() as u32).to_be_bytes());
        framed.extend_from_slice(&claims_4_gib);
        assert!(matches!(
            decompress(2, &framed, 1 << 20),
            Err(CodecError::TooLarge { .. })
        ));
    }

    /// A zstd frame that names its content size, or a window, past the limit is refused
    /// on the claim, before the decoder allocates the window or decodes anything.
    #[test]
    fn a_zstd_frame_claiming_too_much_is_refused_on_its_header() {
        let sized = zstd::bulk::compress(&vec![0u8; 16 << 20], 1).unwrap();
        assert_eq!(
            zstd_frame_claims(&sized).content_bytes,
            Some(16 << 20),
            "bulk frames name their size"
        );
        assert!(matches!(
            decompress(4, &sized, 1 << 20),
            Err(CodecError::TooLarge { .. })
        ));
        // Magic, a descriptor without single segment or size, a 2 GiB window, junk.
        let mut huge_window = 0xFD2F_B528u32.to_le_bytes().to_vec();
        huge_window.extend_from_slice(&[0x00, 21 << 3, 1, 2, 3]);
        assert_eq!(zstd_frame_claims(&huge_window).window_bytes, Some(1 << 31));
        assert!(matches!(
            decompress(4, &huge_window, 32 << 20),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn bytes_that_do_not_decode_are_invalid_not_a_panic() {
        let records = b"some records".repeat(50);
        for codec in 1..=4 {
            let packed = KafkaCodecs.compress(codec, &records).unwrap();
            for cut in [0, 1, packed.len() / 2, packed.len() - 1] {
                let r = decompress(codec, &packed[..cut], 1 << 20);
                assert!(
                    matches!(r, Err(CodecError::Invalid { .. })),
                    "codec {codec} cut at {cut}: {r:?}"
                );
            }
        }
        assert!(matches!(
            decompress(5, b"x", 1 << 20),
            Err(CodecError::Invalid { codec: 5, .. })
        ));
    }
}
