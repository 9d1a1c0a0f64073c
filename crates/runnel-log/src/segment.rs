//! One segment: a file of contiguous batches plus its sparse offset and time indexes.
//!
//! Files, named by the segment's base offset as 20 decimal digits:
//! - `<base>.log`: batches, back to back, exactly as appended.
//! - `<base>.index`: entries of 8 bytes, `relative offset u32 BE | position u32 BE`.
//!   An entry is written for a batch when at least `index.interval.bytes` of data were
//!   appended since the previous entry; the first batch (position 0) has none.
//! - `<base>.timeindex`: entries of 12 bytes, `timestamp i64 BE | relative offset u32 BE`.
//!   An entry `(t, r)` promises that every batch before relative offset `r` has a max
//!   timestamp `<= t`. Entries are added at offset-index points when the running max grew,
//!   and once more when the segment is sealed, so the last entry holds the segment's
//!   largest timestamp.
//!
//! Index files are written when a segment is sealed (rolled or the log closed cleanly);
//! until then the indexes live in memory and recovery rebuilds them from the data.

use std::io;
use std::path::{Path, PathBuf};

use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::io::{OpenMode, Storage, StorageFile};
use crate::types::{Offset, TimestampMs};

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;
/// Bytes read at a time when walking a segment.
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// The largest batch [`resync`] will believe in: larger than any frame the broker
/// accepts, so a damaged length field cannot make it read (and allocate) gigabytes.
const RESYNC_BATCH_BYTES_MAX: u64 = 1 << 27;

/// The data file of the segment starting at `base`.
pub(crate) fn log_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.log", base.0))
}
pub(crate) fn index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.index", base.0))
}
pub(crate) fn time_index_path(dir: &Path, base: Offset) -> PathBuf {
    dir.join(format!("{:020}.timeindex", base.0))
}

/// Parses `<20 digits>.log` into a base offset.
pub(crate) fn parse_log_name(name: &str) -> Option<Offset> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(Offset)
}

/// Sparse map from relative offset to byte position.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    fn push(&mut self, rel: u32, pos: u32) {
        if let Some(&(r, p)) = self.entries.last() {
            assert!(rel > r && pos > p, "offset index must grow");
        }
        self.entries.push((rel, pos));
    }

    /// The last entry with relative offset `<= rel`, as `(rel, position)`.
    pub(crate) fn floor(&self, rel: u64) -> Option<(u32, u32)> {
        let i = self.entries.partition_point(|&(r, _)| u64::from(r) <= rel);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    fn truncate_from_position(&mut self, pos: u64) {
        self.entries.retain(|&(_, p)| u64::from(p) < pos);
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * OFFSET_ENTRY_BYTES);
        for (r, p) in &self.entries {
            out.extend_from_slice(&r.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    fn decode(bytes: &[u8], file_len: u64) -> Option<Self> {
        if !bytes.len().is_multiple_of(OFFSET_ENTRY_BYTES) {
            return None;
        }
        let mut index = OffsetIndex::default();
        for e in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let rel = u32::from_be_bytes(e[0..4].try_into().ok()?);
            let pos = u32::from_be_bytes(e[4..8].try_into().ok()?);
            let grows = index.last().is_none_or(|(r, p)| rel > r && pos > p);
            if !grows || pos == 0 || u64::from(pos) >= file_len {
                return None;
            }
            index.entries.push((rel, pos));
        }
        Some(index)
    }
}

/// Sparse map from timestamp to relative offset (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<(TimestampMs, u32)>,
}

impl TimeIndex {
    fn maybe_push(&mut self, ts: TimestampMs, rel: u32) {
        if ts == TimestampMs::MIN {
            return;
        }
        match self.entries.last() {
            Some(&(t, _)) if ts <= t => {}
            Some(&(_, r)) if rel < r => panic!("time index relative offsets must not shrink"),
            _ => self.entries.push((ts, rel)),
        }
    }

    /// The relative offset from which to scan for the first batch with max timestamp
    /// `>= ts`: every batch before it is older. `None` means the whole segment is older.
    pub(crate) fn scan_start(&self, ts: TimestampMs, end_rel: u64) -> Option<u64> {
        let i = self.entries.partition_point(|&(t, _)| t < ts);
        let start = i.checked_sub(1).map_or(0, |i| u64::from(self.entries[i].1));
        (start < end_rel).then_some(start)
    }

    fn last_timestamp(&self) -> TimestampMs {
        self.entries.last().map_or(TimestampMs::MIN, |e| e.0)
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * TIME_ENTRY_BYTES);
        for (t, r) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&r.to_be_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        if !bytes.len().is_multiple_of(TIME_ENTRY_BYTES) {
            return None;
        }
        let mut index = TimeIndex::default();
        for e in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let ts = i64::from_be_bytes(e[0..8].try_into().ok()?);
            let rel = u32::from_be_bytes(e[8..12].try_into().ok()?);
            let grows = index
                .entries
                .last()
                .is_none_or(|&(t, r)| ts > t && rel >= r);
            if !grows {
                return None;
            }
            index.entries.push((ts, rel));
        }
        Some(index)
    }
}

/// What the log knows about a segment's contents.
#[derive(Clone, Debug)]
pub(crate) struct SegmentStats {
    pub(crate) base: Offset,
    /// Bytes of valid batches; the next batch goes here.
    pub(crate) size: u64,
    /// One past the segment's last offset (`base` when empty).
    pub(crate) next_offset: Offset,
    pub(crate) index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    bytes_since_index: u64,
    /// Largest batch max timestamp, `i64::MIN` when empty.
    pub(crate) max_timestamp: TimestampMs,
}

impl SegmentStats {
    pub(crate) fn empty(base: Offset) -> Self {
        SegmentStats {
            base,
            size: 0,
            next_offset: base,
            index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            bytes_since_index: 0,
            max_timestamp: TimestampMs::MIN,
        }
    }

    fn rel(&self, offset: Offset) -> u32 {
        u32::try_from(offset.0 - self.base.0).expect("segment spans fewer than 2^32 offsets")
    }

    /// Accounts for a batch appended at `self.size`. Append and recovery both go
    /// through here, so a rebuilt index equals the one written during appends.
    pub(crate) fn record(&mut self, header: &BatchHeader<'_>, index_interval_bytes: u32) {
        let base = header.base_offset();
        assert!(
            base >= self.next_offset,
            "offsets must grow within a segment"
        );
        if self.size > 0 && self.bytes_since_index >= u64::from(index_interval_bytes) {
            let rel = self.rel(base);
            let pos = u32::try_from(self.size).expect("segment positions fit in u32");
            self.index.push(rel, pos);
            self.time_index.maybe_push(self.max_timestamp, rel);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index = self.bytes_since_index.saturating_add(header.total_bytes());
        self.size += header.total_bytes();
        self.next_offset = header.last_offset().plus(1);
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp());
    }

    /// Adds the closing time-index entry, so the index file alone tells the max.
    pub(crate) fn seal(&mut self) {
        let rel = self.rel(self.next_offset);
        self.time_index.maybe_push(self.max_timestamp, rel);
    }

    /// Writes both index files and syncs them.
    pub(crate) fn write_indexes(&self, storage: &dyn Storage, dir: &Path) -> io::Result<()> {
        for (path, bytes) in [
            (index_path(dir, self.base), self.index.encode()),
            (time_index_path(dir, self.base), self.time_index.encode()),
        ] {
            let f = storage.open(&path, OpenMode::CreateTruncate)?;
            f.write_all_at(&bytes, 0)?;
            f.sync_data()?;
        }
        Ok(())
    }
}

/// Buffered positional reads over a segment, bounded by a logical length.
pub(crate) struct ChunkReader<'a> {
    file: &'a dyn StorageFile,
    len: u64,
    chunk: usize,
    buf: Vec<u8>,
    buf_pos: u64,
}

impl<'a> ChunkReader<'a> {
    pub(crate) fn new(file: &'a dyn StorageFile, len: u64, chunk: usize) -> Self {
        ChunkReader {
            file,
            len,
            chunk,
            buf: Vec::new(),
            buf_pos: 0,
        }
    }

    /// `n` bytes at `pos`, or `None` if they extend past the logical length.
    pub(crate) fn get(&mut self, pos: u64, n: usize) -> io::Result<Option<&[u8]>> {
        if pos + n as u64 > self.len {
            return Ok(None);
        }
        let cached = pos >= self.buf_pos && pos + n as u64 <= self.buf_pos + self.buf.len() as u64;
        if !cached {
            let want = (n.max(self.chunk) as u64).min(self.len - pos) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.buf_pos = pos;
        }
        let at = (pos - self.buf_pos) as usize;
        Ok(Some(&self.buf[at..at + n]))
    }
}

/// Why a scan stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanStop {
    pub(crate) position: u64,
    pub(crate) reason: String,
}

/// Walks every batch of a segment, checking framing, magic, counts, CRC and offsets,
/// and rebuilds the segment's stats. Stops at the first bad batch. `limit` is the first
/// offset the segment may not hold (the next segment's base; `Offset(u64::MAX)` for the
/// last one). A batch may start above the offset expected (a gap: compaction, a
/// quarantined batch, a raised log end) only at or below `gap_max`: for the last
/// segment, the recovery point, which every such gap lies below once recovery rewrote
/// it; a gap above it is a damaged `baseOffset` that no later batch contradicts.
pub(crate) fn scan(
    file: &dyn StorageFile,
    base: Offset,
    index_interval_bytes: u32,
    limit: Offset,
    gap_max: Offset,
) -> io::Result<(SegmentStats, Option<ScanStop>)> {
    let (stats, stop) = scan_until(
        file,
        base,
        index_interval_bytes,
        Offset(u64::MAX),
        limit,
        gap_max,
    )?;
    match stop {
        // The batch before the stop is the one to blame: rescan up to it.
        Some(stop) if stop.position < stats.size => {
            let (stats, _) = scan_prefix(file, base, index_interval_bytes, stop.position)?;
            Ok((stats, Some(stop)))
        }
        stop => Ok((stats, stop)),
    }
}

/// The stats of the batches that lie wholly before byte `end`, which a previous scan
/// found valid.
fn scan_prefix(
    file: &dyn StorageFile,
    base: Offset,
    index_interval_bytes: u32,
    end: u64,
) -> io::Result<(SegmentStats, Option<ScanStop>)> {
    let mut stats = SegmentStats::empty(base);
    let mut reader = ChunkReader::new(file, end, SCAN_CHUNK_BYTES);
    while let Some(head) = reader.get(stats.size, HEADER_BYTES)? {
        let header = BatchHeader::parse(head).expect("header length checked");
        if stats.size + header.total_bytes() > end {
            break;
        }
        stats.record(&header, index_interval_bytes);
    }
    Ok((stats, None))
}

/// Why the batch `header` cannot follow the batches before it in a segment based at
/// `base` that may hold offsets below `limit`, when `expected` is the next offset.
/// `baseOffset` lies outside the CRC: a flipped bit there must be caught here, never
/// served, never allowed to move the log end.
pub(crate) fn offset_problem(
    header: &BatchHeader<'_>,
    base: Offset,
    expected: Offset,
    limit: Offset,
) -> Option<String> {
    let first = header.base_offset_raw();
    if first < expected.0 as i64 {
        return Some(format!(
            "batch offset {first} is below the expected {expected}"
        ));
    }
    let last = header.last_offset();
    if last.0 - base.0 >= u64::from(u32::MAX) || last >= limit {
        return Some(format!(
            "batch offsets {first}..={} lie outside the segment (base {base}, limit {limit})",
            last.0
        ));
    }
    None
}

/// A batch a scan or a read passed on its way: where it was, the offset expected before it, how
/// many offsets it spans, and whether it started above the expected offset (a gap).
#[derive(Clone, Copy)]
pub(crate) struct Passed {
    pub(crate) pos: u64,
    pub(crate) total: u64,
    expected: Offset,
    span: u64,
    gap: bool,
}

impl Passed {
    pub(crate) fn of(h: &BatchHeader<'_>, pos: u64, expected: Offset) -> Passed {
        Passed {
            pos,
            total: h.total_bytes(),
            expected,
            span: h.last_offset().0 - h.base_offset().0 + 1,
            gap: h.base_offset() > expected,
        }
    }

    /// Whether `h`, which does not fit after this batch, starts exactly where this one
    /// would have ended had it started where expected: then this batch's `baseOffset`
    /// (outside the CRC) is the damaged one.
    pub(crate) fn explains(&self, h: &BatchHeader<'_>) -> bool {
        self.gap && h.base_offset_raw() == self.expected.0.saturating_add(self.span) as i64
    }
}

/// Like [`scan`], but stops before the first batch whose last offset is `>= end`.
/// A stop's position may lie before the returned size: when a batch starts below the
/// expected offset exactly where its predecessor would have ended had that one started
/// at *its* expected offset, the predecessor's `baseOffset` is the damaged one, and the
/// stop names it.
pub(crate) fn scan_until(
    file: &dyn StorageFile,
    base: Offset,
    index_interval_bytes: u32,
    end: Offset,
    limit: Offset,
    gap_max: Offset,
) -> io::Result<(SegmentStats, Option<ScanStop>)> {
    let len = file.len()?;
    let mut stats = SegmentStats::empty(base);
    let mut reader = ChunkReader::new(file, len, SCAN_CHUNK_BYTES);
    // The batch before this one: blamed when this one contradicts its `baseOffset`.
    let mut last: Option<Passed> = None;
    while stats.size < len {
        let pos = stats.size;
        let stop = |reason: String| ScanStop {
            position: pos,
            reason,
        };
        let Some(head) = reader.get(pos, HEADER_BYTES)? else {
            return Ok((
                stats,
                Some(stop(format!(
                    "{} trailing bytes, not a whole header",
                    len - pos
                ))),
            ));
        };
        let header = BatchHeader::parse(head).expect("header length checked");
        let total = header.total_bytes();
        if header.batch_length() < (HEADER_BYTES - batch::LOG_OVERHEAD_BYTES) as i32 {
            return Ok((
                stats,
                Some(stop(format!("bad batch length {}", header.batch_length()))),
            ));
        }
        if let Some(reason) = offset_problem(&header, base, stats.next_offset, limit) {
            if let Some(p) = last
                && p.explains(&header)
            {
                let reason = format!(
                    "batch offset does not continue the log: expected {}, \
                     and the next batch starts where this one should have ended",
                    p.expected
                );
                return Ok((
                    stats,
                    Some(ScanStop {
                        position: p.pos,
                        reason,
                    }),
                ));
            }
            return Ok((stats, Some(stop(reason))));
        }
        if header.base_offset() > stats.next_offset && header.base_offset() > gap_max {
            let reason = format!(
                "batch offset {} leaves a gap after the expected {} above the recovery point {gap_max}",
                header.base_offset_raw(),
                stats.next_offset
            );
            return Ok((stats, Some(stop(reason))));
        }
        let Some(bytes) = reader.get(pos, total as usize)? else {
            return Ok((
                stats,
                Some(stop(format!(
                    "batch of {total} bytes cut short by the end of file"
                ))),
            ));
        };
        let header = BatchHeader::parse(bytes).expect("header length checked");
        if let Err(e) = batch::check_header(&header).and_then(|()| batch::check_crc(&header, bytes))
        {
            return Ok((stats, Some(stop(e.to_string()))));
        }
        if header.last_offset() >= end {
            break;
        }
        last = Some(Passed::of(&header, pos, stats.next_offset));
        stats.record(&header, index_interval_bytes);
    }
    Ok((stats, None))
}

/// Looks for the first valid batch at or after byte `from`: framing, magic, CRC, and
/// offsets from `min_offset` up to `limit`. Returns its position. Recovery uses it to
/// step over a damaged batch whose length field may itself be damaged: it tries the
/// position the damaged batch's length points to first, then every byte.
pub(crate) fn resync(
    file: &dyn StorageFile,
    base: Offset,
    from: u64,
    hint: Option<u64>,
    min_offset: Offset,
    limit: Offset,
) -> io::Result<Option<u64>> {
    let len = file.len()?;
    let mut reader = ChunkReader::new(file, len, SCAN_CHUNK_BYTES);
    let mut valid_at = |pos: u64| -> io::Result<bool> {
        let Some(head) = reader.get(pos, HEADER_BYTES)? else {
            return Ok(false);
        };
        let header = BatchHeader::parse(head).expect("header length checked");
        if header.magic() != batch::MAGIC_V2
            || header.total_bytes() > RESYNC_BATCH_BYTES_MAX
            || header.batch_length() < (HEADER_BYTES - batch::LOG_OVERHEAD_BYTES) as i32
            || offset_problem(&header, base, min_offset, limit).is_some()
        {
            return Ok(false);
        }
        let total = header.total_bytes();
        let Some(bytes) = reader.get(pos, total as usize)? else {
            return Ok(false);
        };
        let header = BatchHeader::parse(bytes).expect("header length checked");
        Ok(batch::check_header(&header).is_ok() && batch::check_crc(&header, bytes).is_ok())
    };
    if let Some(h) = hint
        && h >= from
        && valid_at(h)?
    {
        return Ok(Some(h));
    }
    let mut pos = from;
    while pos + HEADER_BYTES as u64 <= len {
        if valid_at(pos)? {
            return Ok(Some(pos));
        }
        pos += 1;
    }
    Ok(None)
}

/// Loads a segment that was sealed (or cleanly closed) from its index files, walking
/// only the batches after the last index entry. Returns `None` when the index files are
/// missing or disagree with the data; the caller then rebuilds them with [`scan`].
pub(crate) fn load_indexed(
    storage: &dyn Storage,
    dir: &Path,
    file: &dyn StorageFile,
    base: Offset,
    index_interval_bytes: u32,
) -> io::Result<Option<SegmentStats>> {
    let len = file.len()?;
    let read = |path: PathBuf| -> io::Result<Option<Vec<u8>>> {
        if !storage.exists(&path) {
            return Ok(None);
        }
        storage.open(&path, OpenMode::Read)?.read_all().map(Some)
    };
    let (Some(index_bytes), Some(time_bytes)) = (
        read(index_path(dir, base))?,
        read(time_index_path(dir, base))?,
    ) else {
        return Ok(None);
    };
    let (Some(index), Some(time_index)) = (
        OffsetIndex::decode(&index_bytes, len.max(1)),
        TimeIndex::decode(&time_bytes),
    ) else {
        return Ok(None);
    };
    // Replay from the last indexed batch: it is re-indexed exactly as during appends,
    // and every later batch must fit what the sealed indexes promise.
    let entries = index.entries.len();
    let ts_max = time_index.last_timestamp();
    let (start_rel, start_pos) = index.last().map_or((0, 0), |(r, p)| (r, u64::from(p)));
    let mut stats = SegmentStats {
        base,
        size: start_pos,
        next_offset: base.plus(u64::from(start_rel)),
        index,
        time_index,
        // Force the replayed first batch to be indexed again, as it was; the first
        // batch of a segment never is.
        bytes_since_index: if start_pos > 0 { u64::MAX } else { 0 },
        max_timestamp: ts_max,
    };
    stats.index.truncate_from_position(start_pos);
    let mut reader = ChunkReader::new(file, len, 64 << 10);
    while stats.size < len {
        let Some(head) = reader.get(stats.size, HEADER_BYTES)? else {
            return Ok(None);
        };
        let header = BatchHeader::parse(head).expect("header length checked");
        // The indexed batch starts exactly at its entry's offset. The first batch of a
        // segment may start above the base: the cleaner drops whole batches.
        let offset_ok = if stats.size == start_pos && start_pos > 0 {
            header.base_offset_raw() == stats.next_offset.0 as i64
        } else {
            header.base_offset_raw() >= stats.next_offset.0 as i64
        };
        let plausible = offset_ok
            && batch::check_header(&header).is_ok()
            && header.batch_length() >= (HEADER_BYTES - batch::LOG_OVERHEAD_BYTES) as i32
            && stats.size + header.total_bytes() <= len
            && header.max_timestamp() <= ts_max;
        if !plausible {
            return Ok(None);
        }
        stats.record(&header, index_interval_bytes);
        if stats.index.entries.len() > entries {
            return Ok(None);
        }
    }
    let complete = stats.index.entries.len() == entries && (len == 0 || ts_max != TimestampMs::MIN);
    Ok(complete.then_some(stats))
}
