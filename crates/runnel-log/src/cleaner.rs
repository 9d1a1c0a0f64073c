//! Log compaction: the cleaner keeps the latest record per key in closed segments.
//!
//! A pass over one partition (`cleanup.policy=compact` or `compact,delete`):
//!
//! 1. **Map.** Walk the *dirty* closed segments (those not compacted by an earlier pass)
//!    from the oldest, recording `hash(key) -> latest offset`. The map has a byte budget
//!    ([`crate::LogConfig::cleaner_map_bytes_max`]); it takes whole segments only, and
//!    stops before the first segment that would not fit. The rest waits for the next
//!    pass, as with Kafka's cleaner.
//! 2. **Rewrite.** Every closed segment from the first up to the last mapped one is
//!    rewritten into `<base>.log.cleaned`: a record is kept when no later offset holds
//!    its key in the map. A kept tombstone (null value) is dropped once its batch's max
//!    timestamp is more than `delete.retention.ms` old. A batch keeps its `baseOffset`,
//!    `lastOffsetDelta`, `baseTimestamp`, producer fields and codec; only `recordCount`,
//!    `maxTimestamp` (now of the records kept), the records, `batchLength` and the CRC
//!    change, so offsets never move (gaps appear). Kept records are copied byte for byte. A
//!    batch with no record left is dropped. A segment in which nothing changes is not
//!    rewritten.
//! 3. **Swap**, segment by segment, oldest first, each atomic (see below). The active
//!    segment is never touched; the partition's state lock is held only for the swap.
//!
//! Why a crash between two swaps is safe: a record is dropped only for a later record of
//! the same key in the same pass's range, which is kept (it is the latest) or is a
//! tombstone old enough to go. Swapping oldest first means that whenever the segment
//! holding a removed tombstone is swapped, every older segment already is, so no older
//! value of its key comes back.
//!
//! The swap of one segment, and how recovery ([`crate::recovery`]) settles a crash:
//!
//! | step | action                                                | a crash after it         |
//! |------|-------------------------------------------------------|--------------------------|
//! | 1    | write and fsync `<base>.log.cleaned`; fsync the dir   | `.cleaned` is deleted    |
//! | 2    | rename `.cleaned` to `<base>.log.swap`; fsync the dir | **commit**: 3, 4 redone  |
//! | 3    | delete `<base>.index`, `<base>.timeindex`             | 4 is redone              |
//! | 4    | rename `.swap` over `<base>.log`; fsync the dir       | indexes are rebuilt      |
//! | 5    | write and fsync the new index files; fsync the dir    | nothing to do            |
//!
//! Readers that took the old file's handle before step 4 keep reading the old file
//! (an open handle outlives a rename over its name); the handle cache forgets the name
//! under the same lock as the swap, so later readers open the new file with the new
//! sizes and indexes.
//!
//! Memory: the key map (at most `cleaner_map_bytes_max`, counted at
//! [`CLEANER_MAP_ENTRY_BYTES`] per key), plus one read chunk (1 MiB) and one batch with
//! its rewrite at a time. If not even the first dirty segment fits the map, the pass
//! does nothing and says so. File handles: one closed segment's at a time, taken through
//! the log's handle cache (its open-file budget) when the pass reaches the segment, not
//! every closed segment's at the start.
//!
//! Compressed batches are decompressed and written back with the same codec through the
//! [`BatchCodec`] in [`crate::LogConfig::batch_codec`]. Without one (or for a payload
//! the codec refuses), a compressed batch is kept whole and its keys are not mapped, so
//! it neither loses records nor shadows older ones. Control batches are kept whole.
//!
//! Decompression is capped at the topic's [`decompressed_bytes_max`] (from
//! `max.message.bytes`): a batch whose records would pass it (a decompression bomb, or
//! a batch written when the topic allowed larger ones) is kept whole the same way, with
//! a warning per segment, and the pass goes on. So a bomb costs each pass at most the
//! limit in memory, and is never dropped, never retried in a loop, never a panic.
//!
//! Simplified, stated:
//! - no `min.cleanable.dirty.ratio`: a pass runs whenever a closed segment is dirty, or
//!   a tombstone a pass kept has expired; no `min.compaction.lag.ms`;
//! - a tombstone's `delete.retention.ms` counts from its batch's max timestamp, not from
//!   the pass that first saw it (Kafka's KIP-534 horizon), so a tombstone with an old
//!   client timestamp may go at the first pass;
//! - which segments were cleaned is remembered in memory only: the first pass after a
//!   restart maps everything again;
//! - cleaned segments are not merged: they shrink but do not become fewer;
//! - a batch with no record left is dropped, header and all; Kafka keeps an empty batch
//!   as the last one of its producer, for idempotence state;
//! - as in Kafka, records without a key met by the cleaner (written before the topic
//!   became compacted) are removed.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tracing::{info, warn};

use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::codec::{BatchCodec, CodecError, DECOMPRESSED_BYTES_CEILING, decompressed_bytes_max};
use crate::config::{CLEANER_MAP_ENTRY_BYTES, TopicConfig};
use crate::error::{BatchError, LogError, Result};
use crate::io::{OpenMode, StorageFile};
use crate::partition::{Partition, lock};
use crate::records::{Deltas, RecordView, walk_records_with};
use crate::segment::{self, ChunkReader, SegmentStats};
use crate::types::{Offset, TimestampMs};

/// Suffix of a cleaned segment being written (step 1 of the swap).
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";
/// Suffix of a cleaned segment that is committed but not yet in place (step 2).
pub(crate) const SWAP_SUFFIX: &str = ".swap";
/// Bytes read at a time from the segment being cleaned.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// What the cleaner remembers between passes over one partition.
#[derive(Debug, Default)]
pub(crate) struct CleanerState {
    /// The earliest time a tombstone the last pass kept may be removed.
    tombstones_due_ms: Option<TimestampMs>,
}

/// What one cleaner pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CleanStats {
    /// Segments rewritten and swapped in.
    pub segments_rewritten: usize,
    /// Records removed (superseded values, expired tombstones, keyless records).
    pub records_removed: u64,
    /// Bytes of the rewritten segments before the pass.
    pub bytes_before: u64,
    /// Bytes of the rewritten segments after the pass.
    pub bytes_after: u64,
    /// Every closed segment below this offset is compacted; `None` when the pass did
    /// nothing (not a compacted topic, nothing dirty, or the map could not take even
    /// one segment).
    pub cleaned_upto: Option<Offset>,
}

impl CleanStats {
    fn add(&mut self, other: &Rewrite) {
        self.segments_rewritten += 1;
        self.records_removed += other.records_removed;
        self.bytes_before += other.bytes_before;
        self.bytes_after += other.stats.size;
    }
}

/// A closed segment as the pass saw it when it started. No file handle: a pass over a
/// partition with thousands of segments would hold them all open at once
/// ([`Partition::closed_file`] opens one when it is needed).
struct Closed {
    serial: u64,
    base: Offset,
    size: u64,
    /// One past its last offset.
    end: Offset,
}

/// A rewritten segment, written and fsynced as `<base>.log.cleaned`.
struct Rewrite {
    stats: SegmentStats,
    records_removed: u64,
    bytes_before: u64,
}

type KeyMap = HashMap<u128, u64>;

/// A 128-bit hash of a key (two SipHash-1-3 runs with fixed, different prefixes). As
/// with Kafka's MD5 map, a collision could make one key shadow another; at 128 bits
/// that is not a practical risk. The map lives for one pass, so the hash need not be
/// stable across versions.
fn key_hash(key: &[u8]) -> u128 {
    let mut a = DefaultHasher::new();
    key.hash(&mut a);
    let mut b = DefaultHasher::new();
    0x9e37_79b9_u32.hash(&mut b);
    key.hash(&mut b);
    (u128::from(a.finish()) << 64) | u128::from(b.finish())
}

/// The uncompressed records of a batch: `Ok(None)` if the log does not look inside (a
/// control batch, or a compressed one without a codec), an error if `codec` cannot
/// decompress the records within `limit_bytes`.
fn records_of<'a>(
    header: &BatchHeader<'_>,
    bytes: &'a [u8],
    codec: Option<&dyn BatchCodec>,
    limit_bytes: usize,
) -> Result<Option<std::borrow::Cow<'a, [u8]>>, CodecError> {
    if header.is_control() {
        return Ok(None);
    }
    let payload = &bytes[HEADER_BYTES..];
    match (header.compression(), codec) {
        (0, _) => Ok(Some(std::borrow::Cow::Borrowed(payload))),
        (c, Some(codec)) => codec
            .decompress(c, payload, limit_bytes)
            .map(|r| Some(std::borrow::Cow::Owned(r))),
        (_, None) => Ok(None),
    }
}

/// Walks the records of a stored batch, with the stored-batch rule for offset deltas.
fn walk<'a>(
    header: &BatchHeader<'_>,
    records: &'a [u8],
    f: impl FnMut(&RecordView<'a>),
) -> Result<(), BatchError> {
    let deltas = Deltas::Increasing {
        last_offset_delta: header.last_offset_delta(),
    };
    walk_records_with(records, header.record_count() as u32, deltas, f)
}

/// Refuses a batch for a compacted topic if a record has no key (Kafka's
/// INVALID_RECORD). Compressed batches are checked only when a codec is configured and
/// decodes them; control batches are not checked.
///
/// The topic's settings are not at hand here, so decompression is capped at
/// [`DECOMPRESSED_BYTES_CEILING`], the largest limit any topic has: front ends check
/// the topic's own [`decompressed_bytes_max`] before they append (runnel-core's produce
/// path does). A batch over the ceiling is refused as malformed rather than appended
/// unchecked.
pub(crate) fn check_keys(bytes: &[u8], codec: Option<&dyn BatchCodec>) -> Result<(), BatchError> {
    let header = BatchHeader::parse(bytes)?;
    let records = match records_of(&header, bytes, codec, DECOMPRESSED_BYTES_CEILING) {
        Ok(Some(records)) => records,
        Ok(None) | Err(CodecError::Invalid { .. }) => return Ok(()),
        Err(_) => {
            return Err(BatchError::BadRecords {
                reason: "the records decompress to more than the broker's limit",
            });
        }
    };
    let mut missing = None;
    let mut index = 0;
    walk(&header, &records, |r| {
        if r.key.is_none() && missing.is_none() {
            missing = Some(index);
        }
        index += 1;
    })?;
    match missing {
        Some(index) => Err(BatchError::MissingKey { index }),
        None => Ok(()),
    }
}

/// Calls `f(batch bytes, header)` for every batch of a closed segment, reading
/// at most one chunk (or one batch) at a time. A batch that fails its checks (its CRC,
/// and the offsets the CRC does not cover: in order, inside the segment) ends the pass
/// with [`LogError::Corrupt`]: the cleaner never writes from damaged data.
fn for_each_batch(
    file: &dyn StorageFile,
    path: &Path,
    seg: &Closed,
    mut f: impl FnMut(&[u8], &BatchHeader<'_>) -> Result<()>,
) -> Result<()> {
    let len = seg.size;
    let mut expected = seg.base;
    let mut reader = ChunkReader::new(file, len, READ_CHUNK_BYTES);
    let mut pos = 0u64;
    let corrupt = |pos: u64, reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        position: pos,
        reason,
    };
    while pos < len {
        let io = |e| LogError::io("read", path, e);
        let head = reader
            .get(pos, HEADER_BYTES)
            .map_err(io)?
            .ok_or_else(|| corrupt(pos, "a partial header at the end".into()))?;
        let total = BatchHeader::parse(head)
            .expect("length checked")
            .total_bytes();
        if total < HEADER_BYTES as u64 {
            return Err(corrupt(pos, "bad batch length".into()));
        }
        let bytes = reader
            .get(pos, total as usize)
            .map_err(io)?
            .ok_or_else(|| corrupt(pos, "a batch cut short".into()))?;
        let header = BatchHeader::parse(bytes).expect("length checked");
        batch::check_header(&header)
            .and_then(|()| batch::check_crc(&header, bytes))
            .map_err(|e| corrupt(pos, e.to_string()))?;
        if header.base_offset_raw() < expected.0 as i64
            || header.last_offset() >= seg.end
            || header.last_offset().0 - seg.base.0 >= u64::from(u32::MAX)
        {
            return Err(corrupt(
                pos,
                format!(
                    "batch offsets {}..={} out of order or outside {expected}..{}",
                    header.base_offset_raw(),
                    header.last_offset().0,
                    seg.end
                ),
            ));
        }
        f(bytes, &header)?;
        expected = header.last_offset().plus(1);
        pos += total;
    }
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

impl Partition {
    /// Runs one cleaner pass now (see [`crate::cleaner`]): a no-op unless the topic's
    /// `cleanup.policy` compacts. The log's background thread calls this every
    /// `cleaner_interval`; tests and tools call it directly.
    pub fn clean(&self) -> Result<CleanStats> {
        let cfg = self.config();
        if !cfg.cleanup_policy.compacts() {
            return Ok(CleanStats::default());
        }
        let mut cleaner = lock(&self.cleaner);
        let now = self.env.clock.now_ms();
        let upto = Offset(self.cleaned_upto.load(Ordering::SeqCst));
        let tombstones_due = cleaner.tombstones_due_ms.is_some_and(|t| t <= now);
        let (closed, active_base) = {
            let st = lock(&self.state);
            if st.deleted || self.poisoned().is_some() {
                return Ok(CleanStats::default());
            }
            let n = st.segments.len() - 1;
            let dirty = st.segments[..n].iter().any(|s| s.stats.base >= upto);
            if !dirty && !tombstones_due {
                // Nothing to do: return before taking any file handle.
                return Ok(CleanStats::default());
            }
            let closed: Vec<Closed> = st.segments[..n]
                .iter()
                .map(|s| Closed {
                    serial: s.serial,
                    base: s.stats.base,
                    size: s.stats.size,
                    end: s.stats.next_offset,
                })
                .collect();
            (closed, st.segments[n].stats.base)
        };
        let first_dirty = closed.partition_point(|s| s.base < upto);
        let limit_bytes = decompressed_bytes_max(cfg.max_message_bytes);
        let (map, mapped) = self.build_map(&closed[first_dirty..], limit_bytes)?;
        if mapped == 0 && first_dirty < closed.len() {
            warn!(topic = %self.topic, partition = self.id.0, "the cleaner's key map cannot hold one segment; raise cleaner_map_bytes_max");
            if !tombstones_due {
                return Ok(CleanStats::default());
            }
        }
        // Segments below `first_dirty` hold each key at most once already: with an empty
        // map, rewriting them only drops expired tombstones.
        let end = first_dirty + mapped;
        if end == 0 {
            return Ok(CleanStats::default());
        }
        let mut stats = CleanStats::default();
        let mut due: Option<TimestampMs> = None;
        for seg in &closed[..end] {
            let Some(source) = self.closed_file(seg)? else {
                // Retention or truncation removed it under the pass: stop, as below.
                return Ok(stats);
            };
            let Some(rewrite) = self.rewrite(seg, &*source, &map, now, &cfg, &mut due)? else {
                continue;
            };
            if self.swap(seg, &rewrite)? {
                stats.add(&rewrite);
            } else {
                // Retention or truncation changed the segments under the pass: stop,
                // the next pass starts from what is there.
                return Ok(stats);
            }
        }
        // Everything before the first segment the pass did not map is compacted now.
        let cleaned = closed.get(end).map_or(active_base, |s| s.base);
        self.cleaned_upto.fetch_max(cleaned.0, Ordering::SeqCst);
        cleaner.tombstones_due_ms = due;
        stats.cleaned_upto = Some(cleaned);
        if stats.segments_rewritten > 0 {
            info!(
                topic = %self.topic,
                partition = self.id.0,
                segments = stats.segments_rewritten,
                records_removed = stats.records_removed,
                bytes_before = stats.bytes_before,
                bytes_after = stats.bytes_after,
                "compacted"
            );
        }
        Ok(stats)
    }

    /// Maps `hash(key) -> latest offset` over whole segments from the start of `dirty`,
    /// within the byte budget. Returns the map and how many segments it covers. Batches
    /// that do not decompress within `limit_bytes` are not mapped (the rewrite keeps
    /// them whole, and warns).
    fn build_map(&self, dirty: &[Closed], limit_bytes: usize) -> Result<(KeyMap, usize)> {
        let entries_max = (self.env.cleaner_map_bytes_max / CLEANER_MAP_ENTRY_BYTES).max(1);
        let codec = self.env.codec.as_deref();
        let mut map = KeyMap::new();
        let mut mapped = 0;
        for seg in dirty {
            // Stage the segment's keys apart, so a segment that does not fit leaves the
            // map as it was; the two together never pass the budget.
            let mut staged = KeyMap::new();
            let mut full = false;
            let path = segment::log_path(&self.dir, seg.base);
            let Some(source) = self.closed_file(seg)? else {
                // Gone under the pass (retention): map what came before it.
                break;
            };
            for_each_batch(&*source, &path, seg, |bytes, header| {
                let Ok(Some(records)) = records_of(header, bytes, codec, limit_bytes) else {
                    return Ok(());
                };
                let base = header.base_offset().0;
                // A payload that does not walk is kept whole by the rewrite; skip it.
                let _ = walk(header, &records, |r| {
                    let Some(key) = r.key else { return };
                    let h = key_hash(key);
                    if !staged.contains_key(&h) && map.len() + staged.len() >= entries_max {
                        full = true;
                        return;
                    }
                    staged.insert(h, base + r.offset_delta as u64);
                });
                Ok(())
            })?;
            if full {
                break;
            }
            map.extend(staged);
            mapped += 1;
        }
        Ok((map, mapped))
    }

    /// Writes the compacted copy of `seg` as `<base>.log.cleaned` and fsyncs it, or
    /// returns `None` if compaction would change nothing.
    fn rewrite(
        &self,
        seg: &Closed,
        source: &dyn StorageFile,
        map: &KeyMap,
        now: TimestampMs,
        cfg: &TopicConfig,
        due: &mut Option<TimestampMs>,
    ) -> Result<Option<Rewrite>> {
        let storage = &*self.env.storage;
        let codec = self.env.codec.as_deref();
        let path = segment::log_path(&self.dir, seg.base);
        let cleaned_path = with_suffix(&path, CLEANED_SUFFIX);
        let mut out: Option<Arc<dyn StorageFile>> = None;
        let mut stats = SegmentStats::empty(seg.base);
        let mut removed = 0u64;
        let limit_bytes = decompressed_bytes_max(cfg.max_message_bytes);
        let mut unreadable = Unreadable::default();
        let written = for_each_batch(source, &path, seg, |bytes, header| {
            let horizon = header
                .max_timestamp()
                .saturating_add(cfg.delete_retention_ms.min(i64::MAX as u64) as i64);
            let kept = compact_batch(header, bytes, map, codec, limit_bytes, horizon <= now);
            let (new_bytes, dropped, keeps_tombstone) = match kept {
                Kept::Whole { tombstone } => {
                    (Some(std::borrow::Cow::Borrowed(bytes)), 0, tombstone)
                }
                Kept::Unreadable(error) => {
                    unreadable.note(header.base_offset(), error);
                    (Some(std::borrow::Cow::Borrowed(bytes)), 0, false)
                }
                Kept::Rewritten {
                    bytes,
                    dropped,
                    tombstone,
                } => (bytes.map(std::borrow::Cow::Owned), dropped, tombstone),
            };
            if keeps_tombstone {
                *due = Some(due.map_or(horizon, |d| d.min(horizon)));
            }
            removed += dropped;
            if dropped > 0 && out.is_none() {
                // The first change: start the new file with everything kept so far.
                let f = storage
                    .open(&cleaned_path, OpenMode::CreateTruncate)
                    .map_err(|e| LogError::io("create", &cleaned_path, e))?;
                copy_prefix(source, &*f, stats.size)
                    .map_err(|e| LogError::io("write", &cleaned_path, e))?;
                out = Some(f);
            }
            if let Some(b) = new_bytes {
                if let Some(f) = &out {
                    f.write_all_at(&b, stats.size)
                        .map_err(|e| LogError::io("write", &cleaned_path, e))?;
                }
                let h = BatchHeader::parse(&b).expect("a whole batch");
                stats.record(&h, cfg.index_interval_bytes);
            }
            Ok(())
        });
        if let Some((offset, error)) = &unreadable.first {
            warn!(
                topic = %self.topic,
                partition = self.id.0,
                segment = seg.base.0,
                batches = unreadable.count,
                first_offset = offset.0,
                %error,
                "batches that cannot be decompressed within the limit are kept whole, not compacted"
            );
        }
        if let Err(e) = written {
            if out.is_some() {
                let _ = storage.remove_file(&cleaned_path);
            }
            return Err(e);
        }
        let Some(file) = out else {
            return Ok(None);
        };
        file.sync_data()
            .map_err(|e| LogError::io("sync", &cleaned_path, e))?;
        storage
            .sync_dir(&self.dir)
            .map_err(|e| LogError::io("sync directory", &self.dir, e))?;
        stats.seal();
        Ok(Some(Rewrite {
            stats,
            records_removed: removed,
            bytes_before: seg.size,
        }))
    }

    /// A read handle on `seg`, through the log's handle cache, if it is still a closed
    /// segment of the size the pass saw (only the cleaner, which this pass holds,
    /// rewrites closed segments, so it is the same file); `None` once retention or
    /// truncation removed it.
    fn closed_file(&self, seg: &Closed) -> Result<Option<Arc<dyn StorageFile>>> {
        let st = lock(&self.state);
        let last = st.segments.len() - 1;
        let found = st.segments[..last]
            .iter()
            .find(|s| s.serial == seg.serial && s.stats.size == seg.size);
        match found.filter(|_| !st.deleted) {
            Some(s) => s.file(&self.env, &self.dir).map(Some),
            None => Ok(None),
        }
    }

    /// Puts a rewritten segment in place under the state lock (steps 2 to 5 of the swap
    /// in the module docs). Returns `false`, discarding the rewrite, if the segment is no
    /// longer a closed segment of the size the pass read.
    fn swap(&self, seg: &Closed, rewrite: &Rewrite) -> Result<bool> {
        let storage = &*self.env.storage;
        let path = segment::log_path(&self.dir, seg.base);
        let cleaned = with_suffix(&path, CLEANED_SUFFIX);
        let swap = with_suffix(&path, SWAP_SUFFIX);
        let mut st = lock(&self.state);
        let last = st.segments.len() - 1;
        let found = st.segments[..last]
            .iter()
            .position(|s| s.serial == seg.serial && s.stats.size == seg.size);
        let Some(i) = found.filter(|_| !st.deleted) else {
            let _ = storage.remove_file(&cleaned);
            return Ok(false);
        };
        let sync_dir = || {
            storage
                .sync_dir(&self.dir)
                .map_err(|e| LogError::io("sync directory", &self.dir, e))
        };
        storage
            .rename(&cleaned, &swap)
            .map_err(|e| LogError::io("rename", &cleaned, e))?;
        sync_dir()?;
        // Committed: from here on recovery finishes the swap if we do not.
        for p in [
            segment::index_path(&self.dir, seg.base),
            segment::time_index_path(&self.dir, seg.base),
        ] {
            if storage.exists(&p) {
                storage
                    .remove_file(&p)
                    .map_err(|e| LogError::io("delete index", &p, e))?;
            }
        }
        storage
            .rename(&swap, &path)
            .map_err(|e| LogError::io("rename", &swap, e))?;
        // The name now holds the new file: memory must say so before anything can fail.
        self.env.files.forget(&path);
        st.segments[i].stats = rewrite.stats.clone();
        sync_dir()?;
        // Step 5; the directory sync makes the new index files' names durable, so the
        // next open loads them rather than rebuilding them from the data.
        let indexed = rewrite
            .stats
            .write_indexes(storage, &self.dir)
            .and_then(|()| storage.sync_dir(&self.dir));
        if let Err(e) = indexed {
            warn!(topic = %self.topic, partition = self.id.0, error = %e, "could not write index files of a cleaned segment; they will be rebuilt on open");
        }
        Ok(true)
    }
}

/// Copies the first `len` bytes of `from` into `to`, in bounded chunks.
fn copy_prefix(from: &dyn StorageFile, to: &dyn StorageFile, len: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK_BYTES.min(len as usize)];
    let mut pos = 0u64;
    while pos < len {
        let n = ((len - pos) as usize).min(buf.len());
        from.read_exact_at(&mut buf[..n], pos)?;
        to.write_all_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

/// The batches of one segment that the codec could not decompress within the limit, for
/// one warning per segment rather than one per batch.
#[derive(Default)]
struct Unreadable {
    /// How many there were.
    count: u64,
    /// The first one's base offset and why it could not be read.
    first: Option<(Offset, CodecError)>,
}

impl Unreadable {
    fn note(&mut self, base: Offset, error: CodecError) {
        self.count += 1;
        self.first.get_or_insert((base, error));
    }
}

/// What compaction keeps of one batch.
enum Kept {
    /// The batch unchanged (nothing to drop, or the log does not look inside); whether
    /// it holds a tombstone, which expires later.
    Whole { tombstone: bool },
    /// The batch unchanged because the codec failed on it or its records would pass the
    /// decompression limit: kept as it is, never dropped.
    Unreadable(CodecError),
    /// Some records dropped: the rewritten batch (`None` if no record is left).
    Rewritten {
        bytes: Option<Vec<u8>>,
        dropped: u64,
        /// Whether a tombstone was kept (it expires later).
        tombstone: bool,
    },
}

/// Applies the keep rule to one batch: a record stays if it has a key, no later offset
/// in `map` holds that key, and it is not a tombstone past its horizon. Records are
/// decompressed up to `limit_bytes`.
fn compact_batch(
    header: &BatchHeader<'_>,
    bytes: &[u8],
    map: &KeyMap,
    codec: Option<&dyn BatchCodec>,
    limit_bytes: usize,
    tombstones_expired: bool,
) -> Kept {
    let whole = Kept::Whole { tombstone: false };
    let records = match records_of(header, bytes, codec, limit_bytes) {
        Ok(Some(records)) => records,
        Ok(None) => return whole,
        Err(e) => return Kept::Unreadable(e),
    };
    let base = header.base_offset().0;
    let mut kept = Vec::with_capacity(records.len());
    let (mut count, mut dropped, mut tombstone) = (0i32, 0u64, false);
    // With log-append time every record has the batch's time; otherwise the new max is
    // that of the records kept, as Kafka's cleaner computes it.
    let mut max_timestamp = if header.is_log_append_time() {
        header.max_timestamp()
    } else {
        TimestampMs::MIN
    };
    let walked = walk(header, &records, |r| {
        let offset = base + r.offset_delta as u64;
        let latest = r
            .key
            .is_some_and(|k| map.get(&key_hash(k)).is_none_or(|&latest| offset >= latest));
        let keep = latest && (r.value.is_some() || !tombstones_expired);
        if keep {
            kept.extend_from_slice(r.bytes);
            count += 1;
            if !header.is_log_append_time() {
                let ts = header.base_timestamp().saturating_add(r.timestamp_delta);
                max_timestamp = max_timestamp.max(ts);
            }
            tombstone |= r.value.is_none();
        } else {
            dropped += 1;
        }
    });
    if walked.is_err() {
        return whole;
    }
    if dropped == 0 {
        return Kept::Whole { tombstone };
    }
    if count == 0 {
        return Kept::Rewritten {
            bytes: None,
            dropped,
            tombstone: false,
        };
    }
    let payload = match (header.compression(), codec) {
        (0, _) => kept,
        (c, Some(codec)) => match codec.compress(c, &kept) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "could not recompress a batch; keeping it whole");
                return whole;
            }
        },
        (_, None) => return whole,
    };
    Kept::Rewritten {
        bytes: Some(batch::with_records(bytes, count, max_timestamp, &payload)),
        dropped,
        tombstone,
    }
}
