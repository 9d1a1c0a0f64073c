//! Opening a partition: find its segments, trust what was sealed, scan what may be torn.
//!
//! - Every partition records its **recovery point**: an offset below which everything
//!   was fsynced. A roll sets it to the new segment's base, the log's background thread
//!   moves it to the durable offset every second,
//!   a clean shutdown to the log end.
//! - After a **clean shutdown** (the log's marker file was present) every segment is
//!   loaded from its index files; only the bytes after the last index entry are walked.
//! - After a **crash**, segments below the recovery point's segment were synced and
//!   sealed when they rolled, so they load the same way. The rest are scanned batch by
//!   batch: framing, magic, counts, CRC-32C, and offsets (`baseOffset` and
//!   `batchLength` lie outside the CRC: a batch must start at or after the offset
//!   expected, end below the next segment's base, and a batch whose successor
//!   contradicts its `baseOffset` is the damaged one).
//! - A bad batch **below the recovery point** was written whole and fsynced, so its
//!   damage is bit rot, not a torn write: it is **quarantined**. Its bytes are copied to
//!   `<base>.<position>.quarantined` beside the segment, the segment is rewritten without
//!   them (the next valid batch is found by its length field or, when that is damaged
//!   too, byte by byte), the offsets it held are reported lost
//!   ([`RecoveryEvent::Quarantined`], an error log, the `quarantined` counters of
//!   [`crate::stats::LogStats`]), and every valid batch after it is kept. Readers step
//!   over the hole as over offsets compaction removed.
//! - A bad batch **at or above the recovery point** may be a torn tail: the file is cut
//!   there, later segments are deleted, and a warning names the file, the position and
//!   what was cut. Only unsynced, so unacknowledged, batches can lie there, save those
//!   acknowledged since the last checkpoint (at most one interval's worth).
//! - Offsets are never reused: a log that ends below its recovery point (acknowledged
//!   batches missing) has its end raised to it ([`RecoveryEvent::EndRaised`]).
//! - Index files that are missing or disagree with the data are rebuilt from it.
//! - A cleaner swap interrupted by a crash is finished (`<base>.log.swap`, committed) or
//!   discarded (`<base>.log.cleaned`, not committed) before anything is loaded; see
//!   [`crate::cleaner`].
//! - Segments trusted at open are not CRC-checked then (that would read every byte at
//!   every start); reads check every batch, and a damaged one found there is stepped
//!   over and counted, never served, never a consumer stuck in front of it.
//!
//! Nothing that fails its CRC is ever served: reads check every batch again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use std::sync::atomic::Ordering;

use tracing::{error, info, warn};

use crate::batch::{BatchHeader, HEADER_BYTES};
use crate::cleaner;
use crate::config::TopicConfig;
use crate::error::{LogError, Result};
use crate::io::{OpenMode, StorageFile, create_dir_durable};
use crate::partition::{Env, LOG_START_FILE, Partition, RECOVERY_POINT_FILE, Segment, State};
use crate::segment::{self, SegmentStats};
use crate::types::{Offset, PartitionId};

/// Something recovery did to the data on open, for operators and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryEvent {
    /// A segment was cut at the last valid batch.
    Cut {
        /// The segment file.
        path: PathBuf,
        /// Where the first invalid byte was; the file now ends here.
        position: u64,
        /// Bytes removed.
        bytes_cut: u64,
        /// Which check failed.
        reason: String,
    },
    /// Segments after a cut were deleted, so nothing after a hole is served.
    SegmentsRemoved {
        /// The partition directory.
        dir: PathBuf,
        /// How many segments.
        count: usize,
    },
    /// A damaged batch below the recovery point (fsynced, so not a torn write) was
    /// moved out of the segment: its bytes are kept in `quarantine_file`, the offsets
    /// it held are lost, and the valid batches after it stay.
    Quarantined {
        /// The segment file.
        path: PathBuf,
        /// Where the damaged bytes started.
        position: u64,
        /// How many bytes were moved aside.
        bytes: u64,
        /// The offsets lost: from the end of the last good batch to the start of the
        /// next one (or the recovery point, when nothing valid followed).
        lost: std::ops::Range<u64>,
        /// Where the bytes are.
        quarantine_file: PathBuf,
        /// Which check failed.
        reason: String,
    },
    /// The log ended below its recovery point (acknowledged offsets are missing): the
    /// log end was raised to the recovery point, so those offsets are never reused.
    EndRaised {
        /// The partition directory.
        dir: PathBuf,
        /// Where the data ended.
        from: u64,
        /// The recovery point.
        to: u64,
    },
    /// A segment's index files were missing or wrong and were rebuilt from its data.
    IndexRebuilt {
        /// The segment file.
        path: PathBuf,
    },
    /// A cleaner swap that committed before a crash was finished: the compacted copy
    /// replaced the segment.
    SwapFinished {
        /// The segment file.
        path: PathBuf,
    },
}

/// Reads an 8-byte offset checkpoint with its CRC; `None` if missing or damaged.
fn read_checkpoint(env: &Env, path: &Path) -> Option<Offset> {
    if !env.storage.exists(path) {
        return None;
    }
    let bytes = env
        .storage
        .open(path, OpenMode::Read)
        .ok()?
        .read_all()
        .ok()?;
    if bytes.len() != 12 {
        warn!(path = %path.display(), "ignoring a damaged checkpoint");
        return None;
    }
    let crc = u32::from_be_bytes(bytes[8..12].try_into().ok()?);
    if crc32c::crc32c(&bytes[..8]) != crc {
        warn!(path = %path.display(), "ignoring a checkpoint with a bad CRC");
        return None;
    }
    Some(Offset(u64::from_be_bytes(bytes[..8].try_into().ok()?)))
}

impl Partition {
    /// Creates a new, empty partition directory.
    pub(crate) fn create(
        env: Arc<Env>,
        topic: Arc<str>,
        id: PartitionId,
        dir: &Path,
        config: Arc<RwLock<TopicConfig>>,
    ) -> Result<Partition> {
        // The partition's entry in the topic directory is durable before the segment's
        // entry in it (`Segment::create`): otherwise a power cut could take the whole
        // directory, synced segment and all.
        create_dir_durable(&*env.storage, dir)
            .map_err(|e| LogError::io("create directory", dir, e))?;
        let seg = Segment::create(&env, dir, Offset(0))?;
        let state = State::new(vec![seg], Offset(0));
        Ok(Partition::from_parts(
            topic,
            id,
            dir.to_path_buf(),
            env,
            config,
            state,
        ))
    }

    /// Opens an existing partition directory, recovering as the module docs describe.
    pub(crate) fn open(
        env: Arc<Env>,
        topic: Arc<str>,
        id: PartitionId,
        dir: &Path,
        config: Arc<RwLock<TopicConfig>>,
        clean: bool,
    ) -> Result<Partition> {
        if !env.storage.exists(dir) {
            warn!(topic = %topic, partition = id.0, "partition directory missing; creating it empty");
            return Partition::create(env, topic, id, dir, config);
        }
        let interval = config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .index_interval_bytes;
        let storage = &*env.storage;
        let entries = storage
            .list_dir(dir)
            .map_err(|e| LogError::io("list", dir, e))?;
        let mut bases = Vec::new();
        for e in &entries {
            let path = dir.join(&e.name);
            if e.name.ends_with(".tmp") || e.name.ends_with(cleaner::CLEANED_SUFFIX) {
                // A temporary file, or a cleaned segment whose swap never committed.
                let _ = storage.remove_file(&path);
            } else if let Some(base) = segment::parse_log_name(&e.name) {
                bases.push(base);
            }
        }
        if !clean {
            // The process that crashed may have renamed or removed files here and
            // failed to sync the directory (a checkpoint, a retention deletion): what
            // it left is what this open will rely on, so it is made durable first, or
            // a later power cut could bring back a state older than the one served.
            storage
                .sync_dir(dir)
                .map_err(|e| LogError::io("sync directory", dir, e))?;
        }
        for e in &entries {
            if let Some(base) = finish_swap(&env, dir, &e.name)? {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        bases.dedup();
        // Everything below the recovery point was fsynced before the crash (or the
        // clean shutdown): damage there is quarantined, never a reason to cut.
        let durable = read_checkpoint(&env, &dir.join(RECOVERY_POINT_FILE)).unwrap_or(Offset(0));
        // Segments below this are trusted to be whole: loaded from their index files.
        let recovery_point = if clean { Offset(u64::MAX) } else { durable };
        let mut segments: Vec<Segment> = Vec::new();
        let mut rebuilt = Vec::new();
        for (k, &base) in bases.iter().enumerate() {
            let path = segment::log_path(dir, base);
            if let Some(prev) = segments.last()
                && base < prev.stats.next_offset
            {
                warn!(path = %path.display(), "segment overlaps the one before it; deleting it and all later segments");
                remove_segments(&env, dir, &bases[k..])?;
                break;
            }
            let mut file = storage
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| LogError::io("open segment", &path, e))?;
            let limit = bases.get(k + 1).copied().unwrap_or(Offset(u64::MAX));
            let sealed = base < recovery_point && (clean || k + 1 < bases.len());
            // The batches replayed after the last index entry are not CRC-checked, and
            // `lastOffsetDelta` is trusted there: a flipped bit in it must not move the
            // end past the next segment's base (the overlap check below would then
            // delete every later segment) nor, after a clean shutdown, past the log end
            // the shutdown recorded. Such a segment is scanned instead, and the damage
            // quarantined.
            let end_max = if clean && k + 1 == bases.len() && durable > Offset(0) {
                durable
            } else {
                limit
            };
            let loaded = if sealed {
                segment::load_indexed(storage, dir, &*file, base, interval)
                    .map_err(|e| LogError::io("read", &path, e))?
                    .filter(|s| {
                        s.next_offset <= end_max && s.next_offset.0 - base.0 <= u64::from(u32::MAX)
                    })
            } else {
                None
            };
            let (stats, cut) = match loaded {
                Some(stats) => (stats, false),
                None => {
                    if sealed {
                        info!(path = %path.display(), "rebuilding index files");
                        env.record(RecoveryEvent::IndexRebuilt { path: path.clone() });
                    }
                    rebuilt.push(base);
                    // Only where the recovery point is known: without it, a legitimate
                    // gap cannot be told from a damaged `baseOffset`.
                    let gap_max = if k + 1 == bases.len() && durable > Offset(0) {
                        durable
                    } else {
                        Offset(u64::MAX)
                    };
                    let span = SegmentSpan {
                        dir,
                        path: &path,
                        base,
                        limit,
                        gap_max,
                        interval,
                    };
                    let (stats, cut, new_file) = recover_segment(&env, &span, file, durable)?;
                    file = new_file;
                    (stats, cut)
                }
            };
            segments.push(Segment {
                stats,
                active_file: Some(file),
                created_ms: env.clock.now_ms(),
                serial: crate::partition::next_segment_serial(),
            });
            if cut && k + 1 < bases.len() {
                warn!(dir = %dir.display(), removed = bases.len() - k - 1, "deleting the segments after a corrupt batch: nothing after a hole is served");
                env.record(RecoveryEvent::SegmentsRemoved {
                    dir: dir.to_path_buf(),
                    count: bases.len() - k - 1,
                });
                remove_segments(&env, dir, &bases[k + 1..])?;
                break;
            }
        }
        if segments.is_empty() {
            let start = read_checkpoint(&env, &dir.join(LOG_START_FILE)).unwrap_or(Offset(0));
            segments.push(Segment::create(&env, dir, start)?);
        }
        let last = segments.len() - 1;
        if !clean && let Some(file) = &segments[last].active_file {
            // What survived a crash in the page cache but was never fsynced must be on
            // disk before it counts as durable (and the recovery point moves past it).
            file.sync_data().map_err(|e| {
                LogError::io("sync", segment::log_path(dir, segments[last].stats.base), e)
            })?;
        }
        let tail = &mut segments[last].stats;
        if tail.next_offset < durable && durable != Offset(u64::MAX) {
            warn!(dir = %dir.display(), end = tail.next_offset.0, recovery_point = durable.0, "the log ends below its recovery point: acknowledged offsets are missing; raising the log end so that they are never reused");
            env.record(RecoveryEvent::EndRaised {
                dir: dir.to_path_buf(),
                from: tail.next_offset.0,
                to: durable.0,
            });
            tail.next_offset = durable;
        }
        for s in &mut segments[..last] {
            s.active_file = None;
            if rebuilt.contains(&s.stats.base) {
                write_rebuilt_indexes(&env, dir, &s.stats);
            }
        }
        let end = segments[last].stats.next_offset;
        let first = segments[0].stats.base;
        let log_start = read_checkpoint(&env, &dir.join(LOG_START_FILE))
            .unwrap_or(first)
            .max(first)
            .min(end);
        let state = State::new(segments, log_start);
        let partition = Partition::from_parts(topic, id, dir.to_path_buf(), env, config, state);
        if !clean {
            // Everything recovered is durable now (the tail was synced above): the
            // recovery point moves to the end at once, so a gap recovery left (a
            // quarantined batch, a raised end) lies below it at the next open.
            partition.checkpoint_recovery_point(None)?;
        }
        Ok(partition)
    }
}

/// Finishes a cleaner swap that committed before a crash (see [`crate::cleaner`]):
/// `<base>.log.swap` replaces `<base>.log`, whose index files go first so that they are
/// rebuilt from the new data. Returns the segment's base if `name` was such a file.
fn finish_swap(env: &Env, dir: &Path, name: &str) -> Result<Option<Offset>> {
    let Some(log_name) = name.strip_suffix(cleaner::SWAP_SUFFIX) else {
        return Ok(None);
    };
    let Some(base) = segment::parse_log_name(log_name) else {
        return Ok(None);
    };
    let storage = &*env.storage;
    for p in [
        segment::index_path(dir, base),
        segment::time_index_path(dir, base),
    ] {
        if storage.exists(&p) {
            storage
                .remove_file(&p)
                .map_err(|e| LogError::io("delete index", &p, e))?;
        }
    }
    let (from, to) = (dir.join(name), segment::log_path(dir, base));
    storage
        .rename(&from, &to)
        .and_then(|()| storage.sync_dir(dir))
        .map_err(|e| LogError::io("rename", &from, e))?;
    info!(path = %to.display(), "finished swapping in a cleaned segment");
    env.record(RecoveryEvent::SwapFinished { path: to });
    Ok(Some(base))
}

/// A segment being recovered: where it is and which offsets it may hold.
struct SegmentSpan<'a> {
    dir: &'a Path,
    path: &'a Path,
    base: Offset,
    /// The next segment's base: the first offset this one may not hold.
    limit: Offset,
    /// The highest offset a batch may start at after a gap (see [`segment::scan`]).
    gap_max: Offset,
    interval: u32,
}

/// Scans a segment whose index cannot be trusted, batch by batch. A bad batch that
/// starts below `durable` was fsynced whole before the crash, so its damage is not a
/// torn write: it is quarantined ([`quarantine`]) and the valid batches after it are
/// kept. A bad batch from `durable` on may be a torn tail: the file is cut there.
/// Returns the segment's stats, whether it was cut, and its file (a new one when
/// batches were quarantined).
fn recover_segment(
    env: &Env,
    seg: &SegmentSpan<'_>,
    mut file: Arc<dyn StorageFile>,
    durable: Offset,
) -> Result<(SegmentStats, bool, Arc<dyn StorageFile>)> {
    let io_err = |e| LogError::io("recover", seg.path, e);
    loop {
        let len = file.len().map_err(io_err)?;
        let (mut stats, stop) =
            segment::scan(&*file, seg.base, seg.interval, seg.limit, seg.gap_max)
                .map_err(io_err)?;
        let Some(stop) = stop else {
            return Ok((stats, false, file));
        };
        if stats.next_offset >= durable {
            warn!(
                path = %seg.path.display(),
                position = stop.position,
                bytes_cut = len - stop.position,
                next_offset = stats.next_offset.0,
                reason = %stop.reason,
                "cutting the log at the last valid batch (a torn tail past the recovery point)"
            );
            file.set_len(stop.position)
                .and_then(|()| file.sync_data())
                .map_err(io_err)?;
            env.record(RecoveryEvent::Cut {
                path: seg.path.to_path_buf(),
                position: stop.position,
                bytes_cut: len - stop.position,
                reason: stop.reason,
            });
            return Ok((stats, true, file));
        }
        // The damaged batch's own length, when it is plausible, is the first guess for
        // where the next batch starts.
        let mut head = [0u8; HEADER_BYTES];
        let hint = (stop.position + HEADER_BYTES as u64 <= len)
            .then(|| file.read_exact_at(&mut head, stop.position))
            .transpose()
            .map_err(io_err)?
            .and_then(|()| BatchHeader::parse(&head).ok())
            .map(|h| stop.position + h.total_bytes());
        let next = segment::resync(
            &*file,
            seg.base,
            stop.position + 1,
            hint,
            stats.next_offset,
            seg.limit,
        )
        .map_err(io_err)?;
        let end = next.unwrap_or(len);
        let lost_to = match next {
            Some(q) => {
                file.read_exact_at(&mut head, q).map_err(io_err)?;
                BatchHeader::parse(&head).map_or(stats.next_offset, |h| h.base_offset())
            }
            None => durable.min(seg.limit),
        };
        let quarantine_file = quarantine(env, seg, &*file, stop.position, end)?;
        error!(
            path = %seg.path.display(),
            position = stop.position,
            bytes = end - stop.position,
            lost_from = stats.next_offset.0,
            lost_to = lost_to.0,
            reason = %stop.reason,
            quarantine_file = %quarantine_file.display(),
            "a damaged batch below the recovery point: quarantined; the batches after it are kept"
        );
        env.stats
            .quarantined_batches
            .fetch_add(1, Ordering::Relaxed);
        env.stats
            .quarantined_bytes
            .fetch_add(end - stop.position, Ordering::Relaxed);
        env.record(RecoveryEvent::Quarantined {
            path: seg.path.to_path_buf(),
            position: stop.position,
            bytes: end - stop.position,
            lost: stats.next_offset.0..lost_to.0.max(stats.next_offset.0),
            quarantine_file,
            reason: stop.reason,
        });
        if next.is_none() {
            // Nothing valid after it: the segment ends at the damage.
            file.set_len(stop.position)
                .and_then(|()| file.sync_data())
                .map_err(io_err)?;
            stats.next_offset = stats.next_offset.max(lost_to);
            return Ok((stats, false, file));
        }
        file = remove_range(env, seg, &*file, stop.position, end)?;
    }
}

/// Copies bytes `from..to` of a segment into a file of their own beside it
/// (`<base>.<position>.quarantined`), fsynced, so an operator can look at what was
/// lost. Returns its path.
fn quarantine(
    env: &Env,
    seg: &SegmentSpan<'_>,
    file: &dyn StorageFile,
    from: u64,
    to: u64,
) -> Result<PathBuf> {
    let path = seg
        .dir
        .join(format!("{:020}.{from}{QUARANTINE_SUFFIX}", seg.base.0));
    let out = env
        .storage
        .open(&path, OpenMode::CreateTruncate)
        .map_err(|e| LogError::io("create", &path, e))?;
    copy_range(file, &*out, from, to, 0).map_err(|e| LogError::io("quarantine", &path, e))?;
    out.sync_data()
        .and_then(|()| env.storage.sync_dir(seg.dir))
        .map_err(|e| LogError::io("sync", &path, e))?;
    Ok(path)
}

/// The ending of a quarantined batch's file: `<base>.<position>.quarantined`.
pub(crate) const QUARANTINE_SUFFIX: &str = ".quarantined";

/// Rewrites a segment without bytes `from..to`: the new copy is written and fsynced
/// beside it, then renamed over it (a crash before the rename leaves a `.cleaned` file,
/// which the next open deletes, and the segment as it was, which is recovered again).
/// Returns the new file.
fn remove_range(
    env: &Env,
    seg: &SegmentSpan<'_>,
    file: &dyn StorageFile,
    from: u64,
    to: u64,
) -> Result<Arc<dyn StorageFile>> {
    let storage = &*env.storage;
    let len = file.len().map_err(|e| LogError::io("read", seg.path, e))?;
    let mut name = seg.path.file_name().unwrap_or_default().to_os_string();
    name.push(cleaner::CLEANED_SUFFIX);
    let tmp = seg.path.with_file_name(name);
    let out = storage
        .open(&tmp, OpenMode::CreateTruncate)
        .map_err(|e| LogError::io("create", &tmp, e))?;
    copy_range(file, &*out, 0, from, 0)
        .and_then(|()| copy_range(file, &*out, to, len, from))
        .and_then(|()| out.sync_data())
        .map_err(|e| LogError::io("rewrite", &tmp, e))?;
    drop(out);
    for p in [
        segment::index_path(seg.dir, seg.base),
        segment::time_index_path(seg.dir, seg.base),
    ] {
        if storage.exists(&p) {
            storage
                .remove_file(&p)
                .map_err(|e| LogError::io("delete index", &p, e))?;
        }
    }
    storage
        .rename(&tmp, seg.path)
        .and_then(|()| storage.sync_dir(seg.dir))
        .map_err(|e| LogError::io("rename", &tmp, e))?;
    env.files.forget(seg.path);
    storage
        .open(seg.path, OpenMode::ReadWrite)
        .map_err(|e| LogError::io("open segment", seg.path, e))
}

/// Copies `from..to` of `src` to `dst` at `at`, a megabyte at a time.
fn copy_range(
    src: &dyn StorageFile,
    dst: &dyn StorageFile,
    from: u64,
    to: u64,
    at: u64,
) -> std::io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = Vec::new();
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(CHUNK);
        buf.resize(n as usize, 0);
        src.read_exact_at(&mut buf, pos)?;
        dst.write_all_at(&buf, at + (pos - from))?;
        pos += n;
    }
    Ok(())
}

/// Writes a rebuilt segment's index files, and syncs the directory so that their names
/// are durable too (else the next open after a power cut rebuilds them again). Only
/// logged when it fails: indexes that are missing are rebuilt.
fn write_rebuilt_indexes(env: &Env, dir: &Path, stats: &SegmentStats) {
    let mut sealed = stats.clone();
    sealed.seal();
    let written = sealed
        .write_indexes(&*env.storage, dir)
        .and_then(|()| env.storage.sync_dir(dir));
    if let Err(e) = written {
        warn!(dir = %dir.display(), error = %e, "could not write rebuilt index files");
    }
}

/// Deletes the segments after a hole (or an overlap) and makes their removal durable
/// before the partition opens: removed segments that came back at a power cut, after
/// appends have gone on from the hole, would put a hole in the log and serve what lay
/// after it, batches never acknowledged. The directory sync is the one error that stops
/// the open; a file that cannot be deleted is only logged, and is met again next open.
fn remove_segments(env: &Env, dir: &Path, bases: &[Offset]) -> Result<()> {
    for &b in bases {
        for p in [
            segment::log_path(dir, b),
            segment::index_path(dir, b),
            segment::time_index_path(dir, b),
        ] {
            if env.storage.exists(&p)
                && let Err(e) = env.storage.remove_file(&p)
            {
                warn!(path = %p.display(), error = %e, "could not delete");
            }
        }
    }
    env.storage
        .sync_dir(dir)
        .map_err(|e| LogError::io("sync directory", dir, e))
}
