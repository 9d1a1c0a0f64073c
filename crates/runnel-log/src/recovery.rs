//! Opening a partition: find its segments, trust what was sealed, scan what may be torn.
//!
//! - After a **clean shutdown** (the log's marker file was present) every segment is
//!   loaded from its index files; only the bytes after the last index entry are walked.
//! - After a **crash**, segments below the partition's recovery point were synced and
//!   sealed when they rolled, so they load the same way. Segments from the recovery point
//!   on are scanned batch by batch: framing, magic, counts, CRC-32C and offset order.
//!   The first bad batch ends the log: the file is cut there, later segments are deleted,
//!   and a warning names the file, the position and what was cut.
//! - Index files that are missing or disagree with the data are rebuilt from it.
//! - A cleaner swap interrupted by a crash is finished (`<base>.log.swap`, committed) or
//!   discarded (`<base>.log.cleaned`, not committed) before anything is loaded; see
//!   [`crate::cleaner`].
//!
//! Nothing that fails its CRC is ever served: reads check every batch again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tracing::{info, warn};

use crate::cleaner;
use crate::config::TopicConfig;
use crate::error::{LogError, Result};
use crate::io::OpenMode;
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
        env.storage
            .create_dir_all(dir)
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
        for e in &entries {
            if let Some(base) = finish_swap(&env, dir, &e.name)? {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        bases.dedup();
        let recovery_point = if clean {
            Offset(u64::MAX)
        } else {
            read_checkpoint(&env, &dir.join(RECOVERY_POINT_FILE)).unwrap_or(Offset(0))
        };
        let mut segments: Vec<Segment> = Vec::new();
        let mut rebuilt = Vec::new();
        for (k, &base) in bases.iter().enumerate() {
            let path = segment::log_path(dir, base);
            if let Some(prev) = segments.last()
                && base < prev.stats.next_offset
            {
                warn!(path = %path.display(), "segment overlaps the one before it; deleting it and all later segments");
                remove_segments(&env, dir, &bases[k..]);
                break;
            }
            let file = storage
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| LogError::io("open segment", &path, e))?;
            let sealed = base < recovery_point && (clean || k + 1 < bases.len());
            let loaded = if sealed {
                segment::load_indexed(storage, dir, &*file, base, interval)
                    .map_err(|e| LogError::io("read", &path, e))?
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
                    scan_and_cut(&env, &path, &*file, base, interval)?
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
                remove_segments(&env, dir, &bases[k + 1..]);
                break;
            }
        }
        if segments.is_empty() {
            let start = read_checkpoint(&env, &dir.join(LOG_START_FILE)).unwrap_or(Offset(0));
            segments.push(Segment::create(&env, dir, start)?);
        }
        let last = segments.len() - 1;
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
        Ok(Partition::from_parts(
            topic,
            id,
            dir.to_path_buf(),
            env,
            config,
            state,
        ))
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

/// Scans a segment and cuts it at the first bad batch. Returns whether it cut.
fn scan_and_cut(
    env: &Env,
    path: &Path,
    file: &dyn crate::io::StorageFile,
    base: Offset,
    interval: u32,
) -> Result<(SegmentStats, bool)> {
    let io_err = |e| LogError::io("recover", path, e);
    let len = file.len().map_err(io_err)?;
    let (stats, stop) = segment::scan(file, base, interval).map_err(io_err)?;
    let Some(stop) = stop else {
        return Ok((stats, false));
    };
    warn!(
        path = %path.display(),
        position = stop.position,
        bytes_cut = len - stop.position,
        next_offset = stats.next_offset.0,
        reason = %stop.reason,
        "cutting the log at the last valid batch"
    );
    file.set_len(stop.position)
        .and_then(|()| file.sync_data())
        .map_err(io_err)?;
    env.record(RecoveryEvent::Cut {
        path: path.to_path_buf(),
        position: stop.position,
        bytes_cut: len - stop.position,
        reason: stop.reason,
    });
    Ok((stats, true))
}

fn write_rebuilt_indexes(env: &Env, dir: &Path, stats: &SegmentStats) {
    let mut sealed = stats.clone();
    sealed.seal();
    if let Err(e) = sealed.write_indexes(&*env.storage, dir) {
        warn!(dir = %dir.display(), error = %e, "could not write rebuilt index files");
    }
}

fn remove_segments(env: &Env, dir: &Path, bases: &[Offset]) {
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
}
