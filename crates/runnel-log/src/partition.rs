//! One partition: an ordered list of segments, the last of which takes appends.
//!
//! Concurrency: appends serialize on the partition's state lock (that is what orders
//! them) but fsync outside it. Durable appends then meet in [`Partition::sync_to`]: the
//! first waiter syncs the active segment on behalf of everyone who wrote before it
//! started, and the others wait on a condition variable. Appends that arrive while an
//! fsync runs share the next one. That is group commit.
//!
//! Visibility: readers see offsets below the high watermark. With `always` durability
//! the watermark moves only after an fsync, so no reader ever sees data a crash could
//! take back; with `interval` and `never` it moves right after the write.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};

use tokio::sync::watch;
use tracing::{error, warn};

use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::clock::Clock;
use crate::config::{Durability, TopicConfig};
use crate::error::{LogError, Result};
use crate::files::FileCache;
use crate::io::{OpenMode, Storage, StorageFile};
use crate::segment::{self, ChunkReader, SegmentStats};
use crate::types::{Offset, PartitionId, TimestampMs};

/// Largest amount one read fetches from disk at once, whatever the caller asks for.
pub const READ_BYTES_MAX: usize = 64 << 20;
/// The scratch buffer for appends keeps its capacity up to this size between appends.
const SCRATCH_KEEP_BYTES: usize = 4 << 20;
/// Name of the per-partition recovery checkpoint (see [`crate::recovery`]).
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";
/// Name of the per-partition log-start checkpoint, written by `delete_records`.
pub(crate) const LOG_START_FILE: &str = "log-start-offset";

/// What the log shares with every partition.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) clock: Arc<dyn Clock>,
    /// For the cleaner and the key check of compacted topics (see [`crate::codec`]).
    pub(crate) codec: Option<Arc<dyn crate::codec::BatchCodec>>,
    /// The cleaner's key-map budget per pass.
    pub(crate) cleaner_map_bytes_max: usize,
    pub(crate) files: FileCache,
    pub(crate) recovery_events: Mutex<Vec<crate::recovery::RecoveryEvent>>,
    pub(crate) stats: Arc<crate::stats::LogStats>,
}

impl Env {
    pub(crate) fn record(&self, event: crate::recovery::RecoveryEvent) {
        lock(&self.recovery_events).push(event);
    }
}

/// A segment as the partition holds it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) stats: SegmentStats,
    /// The open data file while this is the active segment; closed segments are read
    /// through the [`FileCache`], which bounds open handles.
    pub(crate) active_file: Option<Arc<dyn StorageFile>>,
    /// When the segment was opened, for `segment.ms`.
    pub(crate) created_ms: TimestampMs,
    /// Unique in this process: the cleaner swaps a rewrite in only if the segment it
    /// read is still there, not one that truncation and appends recreated at the same
    /// base offset.
    pub(crate) serial: u64,
}

/// The next [`Segment::serial`].
pub(crate) fn next_segment_serial() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Segment {
    /// Creates the empty data file of a new segment and makes its name durable.
    pub(crate) fn create(env: &Env, dir: &Path, base: Offset) -> Result<Segment> {
        let path = segment::log_path(dir, base);
        let file = env
            .storage
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| LogError::io("create segment", &path, e))?;
        env.storage
            .sync_dir(dir)
            .map_err(|e| LogError::io("sync directory", dir, e))?;
        Ok(Segment {
            stats: SegmentStats::empty(base),
            active_file: Some(file),
            created_ms: env.clock.now_ms(),
            serial: next_segment_serial(),
        })
    }

    pub(crate) fn file(&self, env: &Env, dir: &Path) -> Result<Arc<dyn StorageFile>> {
        match &self.active_file {
            Some(f) => Ok(f.clone()),
            None => {
                let path = segment::log_path(dir, self.stats.base);
                env.files
                    .get(&*env.storage, &path)
                    .map_err(|e| LogError::io("open segment", &path, e))
            }
        }
    }
}

/// The result of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset assigned to the batch's first record.
    pub base_offset: Offset,
    /// Offset of the batch's last record.
    pub last_offset: Offset,
    /// The partition's log start offset after the append.
    pub log_start_offset: Offset,
}

/// A batch that is written and has its offsets but may not be durable yet.
#[derive(Debug)]
#[must_use = "an append is acknowledged only after `wait`"]
pub struct Pending<'a> {
    partition: &'a Partition,
    ticket: AppendTicket,
}

impl Pending<'_> {
    /// The offsets the batch got.
    pub fn info(&self) -> AppendInfo {
        self.ticket.info
    }

    /// Blocks until the batch is durable as the topic's durability policy requires.
    pub fn wait(self) -> Result<AppendInfo> {
        self.partition.wait_durable(self.ticket)
    }

    /// Detaches the wait from the borrow of the partition, so that it can happen later or
    /// on another thread, with [`Partition::wait_durable`] on the same partition.
    pub fn into_ticket(self) -> AppendTicket {
        self.ticket
    }
}

/// A written batch's claim to durability, owned: see [`Pending::into_ticket`].
#[derive(Debug)]
#[must_use = "an append is acknowledged only after `Partition::wait_durable`"]
pub struct AppendTicket {
    info: AppendInfo,
    needs_sync: bool,
}

impl AppendTicket {
    /// The offsets the batch got.
    pub fn info(&self) -> AppendInfo {
        self.info
    }

    /// Whether waiting involves an fsync (the topic's durability is `always`).
    pub fn needs_sync(&self) -> bool {
        self.needs_sync
    }
}

/// The result of a read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReadResult {
    /// Whole batches, back to back, starting with the batch that contains the requested
    /// offset. Empty when the offset equals the high watermark.
    pub bytes: Vec<u8>,
    /// One past the last readable offset when the read began.
    pub high_watermark: Offset,
    /// First offset in the log when the read began.
    pub log_start_offset: Offset,
}

/// Where a batch is, as returned by [`Partition::offset_for_timestamp`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchSummary {
    /// The batch's first offset.
    pub base_offset: Offset,
    /// The batch's last offset.
    pub last_offset: Offset,
    /// The batch's largest timestamp.
    pub max_timestamp: TimestampMs,
}

#[derive(Debug)]
pub(crate) struct State {
    /// Never empty; the last one takes appends.
    pub(crate) segments: Vec<Segment>,
    pub(crate) log_start: Offset,
    pub(crate) deleted: bool,
    scratch: Vec<u8>,
}

impl State {
    pub(crate) fn new(segments: Vec<Segment>, log_start: Offset) -> Self {
        assert!(
            !segments.is_empty(),
            "a partition always has an active segment"
        );
        State {
            segments,
            log_start,
            deleted: false,
            scratch: Vec::new(),
        }
    }

    fn active(&self) -> &Segment {
        self.segments.last().expect("never empty")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("never empty")
    }

    pub(crate) fn log_end(&self) -> Offset {
        self.active().stats.next_offset
    }

    fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.stats.size).sum()
    }

    /// Index of the first segment with data at or after `offset`: the one holding it,
    /// or the next one across a gap. Gaps come from the cleaner, which may empty a
    /// segment or drop its last batches; `next_offset` never shrinks from one segment to
    /// the next, so a binary search finds the first candidate, and empty closed
    /// segments after it are skipped.
    fn segment_for(&self, offset: Offset) -> Option<usize> {
        let last = self.segments.len() - 1;
        let mut i = self
            .segments
            .partition_point(|s| s.stats.next_offset <= offset);
        while i < last && self.segments[i].stats.size == 0 {
            i += 1;
        }
        (i <= last).then_some(i)
    }
}

#[derive(Debug)]
struct SyncState {
    /// Everything below this offset is on disk.
    durable: Offset,
    /// Someone is running an fsync (or a truncation) right now.
    busy: bool,
    /// A truncation is under way: `durable` may be about to move down.
    truncating: bool,
    last_sync_ms: TimestampMs,
}

/// The recovery point last written to [`RECOVERY_POINT_FILE`], and when.
#[derive(Debug)]
struct RecoveryPoint {
    offset: Offset,
    written_ms: TimestampMs,
}

/// How often the log's background thread records a partition's durable offset as its
/// recovery point (when it moved). After a crash, everything below the recovery point is
/// known to have been fsynced, so damage there is bit rot, quarantined batch by batch;
/// only what lies above it can be a torn write, and only there does recovery cut. Kafka
/// checkpoints the same way, every `log.flush.offset.checkpoint.interval.ms` (60 s); one
/// second keeps the window of acknowledged batches that a flipped bit could still cut
/// short, for the price of one small atomic file write per partition per second.
pub const RECOVERY_POINT_INTERVAL_MS: i64 = 1_000;

/// A partition of a topic. Shared by `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct Partition {
    pub(crate) topic: Arc<str>,
    pub(crate) id: PartitionId,
    pub(crate) dir: PathBuf,
    pub(crate) env: Arc<Env>,
    config: Arc<RwLock<TopicConfig>>,
    pub(crate) state: Mutex<State>,
    /// One cleaner pass at a time, and what the passes learned (see [`crate::cleaner`]).
    pub(crate) cleaner: Mutex<crate::cleaner::CleanerState>,
    /// Closed segments whose base is below this were compacted by an earlier pass (in
    /// memory only: after a restart the first pass maps everything again). Truncation
    /// lowers it.
    pub(crate) cleaned_upto: std::sync::atomic::AtomicU64,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Taken around every write of [`RECOVERY_POINT_FILE`], after the state lock when
    /// both are held.
    recovery_point: Mutex<RecoveryPoint>,
    /// Damaged batches that reads met, by segment base and position: where the next
    /// valid batch starts.
    damaged: Mutex<std::collections::HashMap<(Offset, u64), u64>>,
    poison: OnceLock<String>,
    hwm: watch::Sender<Offset>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a partition lock is a bug that already surfaced; the data
    // the lock guards stays consistent because every update is completed before unlock.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Partition {
    pub(crate) fn from_parts(
        topic: Arc<str>,
        id: PartitionId,
        dir: PathBuf,
        env: Arc<Env>,
        config: Arc<RwLock<TopicConfig>>,
        state: State,
    ) -> Partition {
        let end = state.log_end();
        Partition {
            topic,
            id,
            dir,
            config,
            sync: Mutex::new(SyncState {
                durable: end,
                busy: false,
                truncating: false,
                last_sync_ms: env.clock.now_ms(),
            }),
            damaged: Mutex::new(std::collections::HashMap::new()),
            recovery_point: Mutex::new(RecoveryPoint {
                offset: Offset(0),
                written_ms: env.clock.now_ms(),
            }),
            env,
            state: Mutex::new(state),
            cleaner: Mutex::new(crate::cleaner::CleanerState::default()),
            cleaned_upto: std::sync::atomic::AtomicU64::new(0),
            synced: Condvar::new(),
            poison: OnceLock::new(),
            hwm: watch::Sender::new(end),
        }
    }

    /// The topic's name.
    #[must_use]
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// This partition's index.
    #[must_use]
    pub fn id(&self) -> PartitionId {
        self.id
    }

    /// The first offset still in the log.
    #[must_use]
    pub fn log_start_offset(&self) -> Offset {
        lock(&self.state).log_start
    }

    /// One past the last offset readers may see.
    #[must_use]
    pub fn high_watermark(&self) -> Offset {
        *self.hwm.borrow()
    }

    /// One past the last offset written (it may not be durable yet).
    #[must_use]
    pub fn log_end_offset(&self) -> Offset {
        lock(&self.state).log_end()
    }

    /// Bytes of data on disk.
    #[must_use]
    pub fn size_bytes(&self) -> u64 {
        lock(&self.state).size_bytes()
    }

    /// Number of segments.
    #[must_use]
    pub fn segment_count(&self) -> usize {
        lock(&self.state).segments.len()
    }

    /// A receiver that wakes whenever the high watermark moves (or the partition is
    /// deleted). Long-poll fetches wait on it; it costs nothing while idle.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<Offset> {
        self.hwm.subscribe()
    }

    /// Whether the partition's topic was deleted.
    #[must_use]
    pub fn is_deleted(&self) -> bool {
        lock(&self.state).deleted
    }

    /// The reason writes are refused, if a sync or write failed.
    #[must_use]
    pub fn poisoned(&self) -> Option<&str> {
        self.poison.get().map(String::as_str)
    }

    pub(crate) fn config(&self) -> TopicConfig {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn check_writable(&self, st: &State) -> Result<()> {
        if st.deleted {
            return Err(LogError::UnknownTopic(self.topic.to_string()));
        }
        self.check_poison()
    }

    fn poison_with(&self, op: &'static str, path: &Path, e: std::io::Error) -> LogError {
        let cause = format!("{op} {}: {e}", path.display());
        error!(topic = %self.topic, partition = self.id.0, %cause, "partition refuses writes from now on");
        let _ = self.poison.set(cause);
        LogError::io(op, path, e)
    }

    /// Appends one batch (RecordBatch v2 bytes) and returns the offsets it got.
    ///
    /// The batch is validated first; an invalid batch leaves the log unchanged. The log
    /// rewrites `baseOffset` and `partitionLeaderEpoch`, which the CRC does not cover.
    /// With `always` durability this returns only after the batch is fsynced.
    pub fn append(&self, batch: &[u8]) -> Result<AppendInfo> {
        self.append_deferred(batch)?.wait()
    }

    /// Like [`Partition::append`], but returns once the batch is written and ordered,
    /// before it is durable. The caller finishes with [`Pending::wait`], which is where the
    /// fsync (shared with other appenders) happens under `always` durability. Callers that
    /// must keep state in step with the log order (idempotent producer state) update it
    /// between the two steps.
    pub fn append_deferred(&self, batch: &[u8]) -> Result<Pending<'_>> {
        let cfg = self.config();
        let records = u64::from(batch::validate(batch, cfg.max_message_bytes)?.record_count);
        if cfg.cleanup_policy.compacts() {
            crate::cleaner::check_keys(batch, self.env.codec.as_deref())?;
        }
        let mut st = lock(&self.state);
        self.check_writable(&st)?;
        let now = self.env.clock.now_ms();
        if self.should_roll(&st, batch.len() as u64, records, now, &cfg) {
            self.roll(&mut st)?;
        }
        let base = st.log_end();
        let mut scratch = std::mem::take(&mut st.scratch);
        scratch.clear();
        scratch.extend_from_slice(batch);
        batch::rewrite_header(&mut scratch, base);
        let written = self.write_batch(&mut st, &scratch, cfg.index_interval_bytes);
        if scratch.capacity() <= SCRATCH_KEEP_BYTES {
            st.scratch = scratch;
        }
        written?;
        let needs_sync = cfg.durability == Durability::Always;
        if !needs_sync {
            self.publish(st.log_end());
        }
        Ok(Pending {
            partition: self,
            ticket: AppendTicket {
                info: AppendInfo {
                    base_offset: base,
                    last_offset: base.plus(records - 1),
                    log_start_offset: st.log_start,
                },
                needs_sync,
            },
        })
    }

    /// A ticket for a batch an earlier append wrote, covering `base..=last`: an
    /// idempotent retry is answered with the original's offsets once they are durable.
    pub fn ticket_through(&self, base: Offset, last: Offset) -> AppendTicket {
        AppendTicket {
            info: AppendInfo {
                base_offset: base,
                last_offset: last,
                log_start_offset: self.log_start_offset(),
            },
            needs_sync: self.config().durability == Durability::Always,
        }
    }

    /// Blocks until the batch behind `ticket`, which an append to this partition
    /// returned, is durable as the topic's durability policy requires. Several waits
    /// share one fsync (group commit).
    pub fn wait_durable(&self, ticket: AppendTicket) -> Result<AppendInfo> {
        if ticket.needs_sync {
            // Never wait for offsets the log does not hold (a ticket for a deleted and
            // recreated partition, say): no fsync could ever cover them.
            let target = ticket.info.last_offset.plus(1).min(self.log_end_offset());
            self.sync_to(target)?;
        }
        Ok(ticket.info)
    }

    fn should_roll(
        &self,
        st: &State,
        bytes: u64,
        records: u64,
        now: TimestampMs,
        cfg: &TopicConfig,
    ) -> bool {
        let active = st.active();
        let stats = &active.stats;
        if stats.size == 0 {
            return false;
        }
        let too_big = stats.size + bytes > cfg.segment_bytes;
        let too_old = now.saturating_sub(active.created_ms) >= cfg.segment_ms as i64;
        // Index entries hold offsets relative to the base as u32.
        let offsets_full = stats.next_offset.0 + records - stats.base.0 > u64::from(u32::MAX);
        too_big || too_old || offsets_full
    }

    fn write_batch(&self, st: &mut State, bytes: &[u8], index_interval_bytes: u32) -> Result<()> {
        let active = st.active_mut();
        let file = active
            .active_file
            .clone()
            .expect("the active segment is open");
        let pos = active.stats.size;
        if let Err(e) = file.write_all_at(bytes, pos) {
            let path = segment::log_path(&self.dir, active.stats.base);
            // Take back whatever part of the batch reached the file. If even that
            // fails, the file's tail is unknown: stop writing.
            if let Err(e2) = file.set_len(pos) {
                return Err(self.poison_with("truncate after failed write", &path, e2));
            }
            warn!(topic = %self.topic, partition = self.id.0, error = %e, "append failed; nothing was written");
            return Err(LogError::io("write", path, e));
        }
        let header = BatchHeader::parse(bytes).expect("validated");
        active.stats.record(&header, index_interval_bytes);
        Ok(())
    }

    /// Closes the active segment and opens a new one at the log end.
    fn roll(&self, st: &mut State) -> Result<()> {
        let storage = &*self.env.storage;
        let old_base = st.active().stats.base;
        let old_file = st.active().active_file.clone().expect("active is open");
        // The old segment must be durable before anything relies on the new one:
        // later syncs only cover the active file.
        if let Err(e) = old_file.sync_data() {
            return Err(self.poison_with("sync", &segment::log_path(&self.dir, old_base), e));
        }
        let new_base = st.log_end();
        // A segment file whose name may not be durable (its directory sync failed) must
        // not take appends, and is still there for the next roll to trip over (EEXIST):
        // the partition refuses writes from here, as after a failed data sync.
        let next = Segment::create(&self.env, &self.dir, new_base).inspect_err(|e| {
            let cause = e.to_string();
            error!(topic = %self.topic, partition = self.id.0, %cause, "partition refuses writes from now on");
            let _ = self.poison.set(cause);
        })?;
        let old = st.active_mut();
        old.stats.seal();
        // The directory sync makes the index files' names durable, so a restart after
        // a power cut loads them instead of scanning the segment again.
        let indexed = old
            .stats
            .write_indexes(storage, &self.dir)
            .and_then(|()| storage.sync_dir(&self.dir));
        if let Err(e) = indexed {
            warn!(topic = %self.topic, partition = self.id.0, error = %e, "could not write index files; they will be rebuilt on open");
        }
        old.active_file = None;
        st.segments.push(next);
        if let Err(e) = self.write_recovery_point(new_base) {
            warn!(topic = %self.topic, partition = self.id.0, error = %e, "could not write the recovery point; recovery will scan more");
        }
        Ok(())
    }

    /// Writes the recovery point: everything below `offset` is durable. Roll and
    /// truncation set it outright (truncation moves it down).
    fn write_recovery_point(&self, offset: Offset) -> std::io::Result<()> {
        let mut rp = lock(&self.recovery_point);
        self.write_checkpoint(RECOVERY_POINT_FILE, offset)?;
        rp.offset = offset;
        rp.written_ms = self.env.clock.now_ms();
        Ok(())
    }

    /// Records the durable offset as the recovery point if it moved since the last one
    /// and a second has passed (always, with `now == None`). The log's background
    /// thread calls this; the recovery module says what the point is for.
    pub fn checkpoint_recovery_point(&self, now: Option<TimestampMs>) -> Result<()> {
        if self.is_deleted() || self.poison.get().is_some() {
            return Ok(());
        }
        let mut rp = lock(&self.recovery_point);
        if let Some(now) = now
            && now.saturating_sub(rp.written_ms) < RECOVERY_POINT_INTERVAL_MS
        {
            return Ok(());
        }
        let durable = {
            let s = lock(&self.sync);
            if s.truncating {
                return Ok(());
            }
            s.durable
        };
        if durable <= rp.offset {
            return Ok(());
        }
        // Set before the write, so a failed write is retried after the same interval,
        // not on every maintenance tick: on a full disk every try logs a warning, and a
        // tick is 20 ms.
        rp.written_ms = self.env.clock.now_ms();
        self.write_checkpoint(RECOVERY_POINT_FILE, durable)
            .map_err(|e| LogError::io("write", self.dir.join(RECOVERY_POINT_FILE), e))?;
        rp.offset = durable;
        Ok(())
    }

    pub(crate) fn write_checkpoint(&self, name: &str, offset: Offset) -> std::io::Result<()> {
        let mut bytes = offset.0.to_be_bytes().to_vec();
        bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
        self.env.storage.write_atomic(&self.dir.join(name), &bytes)
    }

    /// Raises the high watermark to `hwm` (it never moves down here).
    fn publish(&self, hwm: Offset) {
        self.hwm.send_if_modified(|h| {
            let moved = hwm > *h;
            if moved {
                *h = hwm;
            }
            moved
        });
    }

    fn check_poison(&self) -> Result<()> {
        match self.poison.get() {
            Some(cause) => Err(LogError::Poisoned {
                topic: self.topic.to_string(),
                partition: self.id,
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Blocks until every offset below `target` is durable, running the fsync itself if
    /// nobody else is.
    fn sync_to(&self, target: Offset) -> Result<()> {
        let mut s = lock(&self.sync);
        loop {
            if s.durable >= target {
                return Ok(());
            }
            self.check_poison()?;
            if s.busy {
                s = self.synced.wait(s).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            s.busy = true;
            drop(s);
            let (file, upto, base) = {
                let st = lock(&self.state);
                let a = st.active();
                (
                    a.active_file.clone().expect("active is open"),
                    st.log_end(),
                    a.stats.base,
                )
            };
            let started = std::time::Instant::now();
            let result = file.sync_data();
            self.env.stats.fsync.observe(started.elapsed());
            s = lock(&self.sync);
            s.busy = false;
            self.synced.notify_all();
            match result {
                Ok(()) => {
                    s.last_sync_ms = self.env.clock.now_ms();
                    if upto > s.durable {
                        s.durable = upto;
                        self.publish(upto);
                    }
                }
                Err(e) => {
                    return Err(self.poison_with("sync", &segment::log_path(&self.dir, base), e));
                }
            }
        }
    }

    /// Makes everything written so far durable, whatever the durability policy.
    pub fn flush(&self) -> Result<()> {
        let end = self.log_end_offset();
        self.sync_to(end)
    }

    /// For `interval` durability: flushes when the interval has passed since the last
    /// sync and there is unsynced data. The log's background thread calls this.
    pub fn flush_if_due(&self, now: TimestampMs) -> Result<()> {
        let Durability::Interval(every) = self.config().durability else {
            return Ok(());
        };
        let end = self.log_end_offset();
        let due = {
            let s = lock(&self.sync);
            s.durable < end && now.saturating_sub(s.last_sync_ms) >= every.as_millis() as i64
        };
        if due { self.sync_to(end) } else { Ok(()) }
    }

    /// Reads whole batches starting with the one that contains `offset`, up to
    /// `max_bytes` in total, but always at least one batch even if it is larger.
    /// Every batch's CRC is checked; a corrupt batch is never returned.
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<ReadResult> {
        let mut bytes = Vec::new();
        let (high_watermark, log_start_offset) = self.read_into(offset, max_bytes, &mut bytes)?;
        Ok(ReadResult {
            bytes,
            high_watermark,
            log_start_offset,
        })
    }

    /// [`Partition::read`] into a caller's buffer, which is cleared first. A consumer
    /// that reuses one buffer reads without allocating. Returns the high watermark and
    /// the log start offset as of the read.
    pub fn read_into(
        &self,
        offset: Offset,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<(Offset, Offset)> {
        out.clear();
        let hwm = self.high_watermark();
        let (file, path, start_pos, start_offset, len, log_start, base, seg_end, limit) = {
            let st = lock(&self.state);
            if st.deleted {
                return Err(LogError::UnknownTopic(self.topic.to_string()));
            }
            if offset < st.log_start || offset > hwm {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    log_start: st.log_start,
                    high_watermark: hwm,
                });
            }
            let Some(i) = st.segment_for(offset).filter(|_| offset < hwm) else {
                return Ok((hwm, st.log_start));
            };
            let seg = &st.segments[i];
            let rel = offset.0.saturating_sub(seg.stats.base.0);
            let (start_rel, start) = seg
                .stats
                .index
                .floor(rel)
                .map_or((0, 0), |(r, p)| (u64::from(r), u64::from(p)));
            let path = segment::log_path(&self.dir, seg.stats.base);
            let limit = st.segments.get(i + 1).map(|s| s.stats.base);
            (
                seg.file(&self.env, &self.dir)?,
                path,
                start,
                seg.stats.base.plus(start_rel),
                seg.stats.size,
                st.log_start,
                seg.stats.base,
                seg.stats.next_offset,
                limit,
            )
        };
        let max_bytes = max_bytes.clamp(1, READ_BYTES_MAX);
        let view = SegmentView {
            file: &*file,
            path: &path,
            base,
            len,
            end: seg_end,
        };
        let (mut pos, mut expected) = (start_pos, start_offset);
        if pos > 0 && !self.index_entry_holds(&view, pos, expected)? {
            // The index file was damaged since it was checked (only its shape is, at
            // open): walk from the segment's start instead.
            (pos, expected) = (0, base);
        }
        // Each step passes one damaged batch: at most one per byte of the segment.
        while pos < len {
            match read_batches(&view, pos, expected, offset, hwm, max_bytes, out) {
                Err(LogError::Corrupt {
                    position, reason, ..
                }) => match self.step_over(&view, position, &reason)? {
                    Some(next) => {
                        // What the damaged batch held is unknown: any offset of the
                        // segment may follow it.
                        (pos, expected) = (next, base);
                    }
                    None => break,
                },
                done => {
                    done?;
                    if out.is_empty() {
                        break;
                    }
                    return Ok((hwm, log_start));
                }
            }
        }
        // Nothing valid is left in this segment at or after `offset` (damage moved aside
        // or stepped over at its end): go on in the next.
        match limit {
            Some(next) if next > offset => self.read_into(next, max_bytes, out),
            _ => Ok((hwm, log_start)),
        }
    }

    /// Whether the batch at `pos` (an offset index entry's position) starts exactly at
    /// `offset` (the entry's offset), as every entry promises. The first time one does
    /// not, it is logged: the segment's reads then walk from its start.
    fn index_entry_holds(&self, view: &SegmentView<'_>, pos: u64, offset: Offset) -> Result<bool> {
        let mut head = [0u8; HEADER_BYTES];
        if pos + HEADER_BYTES as u64 > view.len {
            return Ok(false);
        }
        view.file
            .read_exact_at(&mut head, pos)
            .map_err(|e| LogError::io("read", view.path, e))?;
        let h = BatchHeader::parse(&head).expect("length checked");
        let holds = h.magic() == batch::MAGIC_V2 && h.base_offset_raw() == offset.0 as i64;
        // Logged once per segment: the key's position is one no batch can have.
        if !holds
            && lock(&self.damaged)
                .insert((view.base, u64::MAX), 0)
                .is_none()
        {
            error!(topic = %self.topic, partition = self.id.0, path = %view.path.display(), position = pos, offset = offset.0, "the offset index does not match the segment; reads of this segment walk it from its start (delete the .index file to have it rebuilt at the next open)");
        }
        Ok(holds)
    }

    /// Where the next valid batch starts after a damaged one that a read met at
    /// `position` (a segment loaded without a full check, or bit rot since): the read
    /// steps over it, as over the offsets compaction removed, instead of failing on it
    /// forever. The first time, the damage is logged and counted as quarantined.
    /// `None` when nothing valid follows in this segment.
    fn step_over(
        &self,
        view: &SegmentView<'_>,
        position: u64,
        reason: &str,
    ) -> Result<Option<u64>> {
        let (file, path, base) = (view.file, view.path, view.base);
        // Where it led last time is checked again (one batch's CRC), never trusted: the
        // cleaner or a truncation may have rewritten the segment since.
        let known = lock(&self.damaged).get(&(base, position)).copied();
        let io_err = |e| LogError::io("read", path, e);
        let mut head = [0u8; HEADER_BYTES];
        let len = file.len().map_err(io_err)?;
        let hint = if known.is_some() {
            known
        } else if position + HEADER_BYTES as u64 <= len {
            file.read_exact_at(&mut head, position).map_err(io_err)?;
            BatchHeader::parse(&head)
                .ok()
                .map(|h| position + h.total_bytes())
        } else {
            None
        };
        let next =
            segment::resync(file, base, position + 1, hint, base, view.end).map_err(io_err)?;
        // Only a found batch is remembered: after the active segment's damage, later
        // appends may yet bring one.
        if let Some(next) = next
            && known != Some(next)
        {
            error!(topic = %self.topic, partition = self.id.0, path = %path.display(), position, bytes = next - position, %reason, "a damaged batch: reads step over it");
            self.env
                .stats
                .quarantined_batches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.env
                .stats
                .quarantined_bytes
                .fetch_add(next - position, std::sync::atomic::Ordering::Relaxed);
            lock(&self.damaged).insert((base, position), next);
        }
        Ok(next)
    }

    /// The first batch whose max timestamp is `>= ts`, among readable batches.
    pub fn offset_for_timestamp(&self, ts: TimestampMs) -> Result<Option<BatchSummary>> {
        let hwm = self.high_watermark();
        let mut i = 0;
        loop {
            let (file, path, start_pos, start_offset, len) = {
                let st = lock(&self.state);
                let found = st.segments[i.min(st.segments.len())..]
                    .iter()
                    .position(|s| s.stats.max_timestamp >= ts && s.stats.base < hwm);
                let Some(k) = found else {
                    return Ok(None);
                };
                i += k;
                let seg = &st.segments[i];
                let end_rel = seg.stats.next_offset.0 - seg.stats.base.0;
                let Some(rel) = seg.stats.time_index.scan_start(ts, end_rel) else {
                    i += 1;
                    continue;
                };
                let start = seg.stats.index.floor(rel).map_or(0, |(_, p)| u64::from(p));
                let path = segment::log_path(&self.dir, seg.stats.base);
                let start_offset = seg.stats.base.plus(rel).max(st.log_start);
                (
                    seg.file(&self.env, &self.dir)?,
                    path,
                    start,
                    start_offset,
                    seg.stats.size,
                )
            };
            let mut reader = ChunkReader::new(&*file, len, 64 << 10);
            let mut pos = start_pos;
            while let Some(head) = reader
                .get(pos, HEADER_BYTES)
                .map_err(|e| LogError::io("read", &path, e))?
            {
                let h = BatchHeader::parse(head).expect("length checked");
                if h.base_offset() >= hwm {
                    return Ok(None);
                }
                if h.last_offset() >= start_offset && h.max_timestamp() >= ts {
                    return Ok(Some(BatchSummary {
                        base_offset: h.base_offset(),
                        last_offset: h.last_offset(),
                        max_timestamp: h.max_timestamp(),
                    }));
                }
                if h.total_bytes() < HEADER_BYTES as u64 {
                    return Err(corrupt(&path, pos, "bad batch length".into()));
                }
                pos += h.total_bytes();
            }
            i += 1;
        }
    }

    /// The batch with the largest max timestamp (the first such, if several), among
    /// readable batches. Kafka's ListOffsets `MAX_TIMESTAMP` (-3) starts from it.
    pub fn max_timestamp_batch(&self) -> Result<Option<BatchSummary>> {
        let hwm = self.high_watermark();
        let (file, path, len, target, base) = {
            let st = lock(&self.state);
            let best = st
                .segments
                .iter()
                .filter(|s| s.stats.size > 0 && s.stats.base < hwm)
                .max_by_key(|s| (s.stats.max_timestamp, std::cmp::Reverse(s.stats.base)));
            let Some(seg) = best else {
                return Ok(None);
            };
            let path = segment::log_path(&self.dir, seg.stats.base);
            (
                seg.file(&self.env, &self.dir)?,
                path,
                seg.stats.size,
                seg.stats.max_timestamp,
                seg.stats.base,
            )
        };
        let mut found = None;
        self.walk_headers(&*file, &path, len, 0, |h| {
            if h.base_offset() >= hwm {
                return false;
            }
            if h.max_timestamp() == target && h.base_offset() >= base {
                found = Some(BatchSummary {
                    base_offset: h.base_offset(),
                    last_offset: h.last_offset(),
                    max_timestamp: h.max_timestamp(),
                });
                return false;
            }
            true
        })?;
        Ok(found)
    }

    /// Calls `f` with the header of every readable batch in the last `segments` segments,
    /// oldest first, until it returns `false`. Used to rebuild state kept beside the log
    /// (idempotent producer sequences) after a restart, without reading payloads.
    pub fn for_each_recent_header(
        &self,
        segments: usize,
        mut f: impl FnMut(&BatchHeader<'_>) -> bool,
    ) -> Result<()> {
        let hwm = self.high_watermark();
        let recent: Vec<(Arc<dyn StorageFile>, PathBuf, u64)> = {
            let st = lock(&self.state);
            let from = st.segments.len().saturating_sub(segments);
            st.segments[from..]
                .iter()
                .map(|s| {
                    Ok((
                        s.file(&self.env, &self.dir)?,
                        segment::log_path(&self.dir, s.stats.base),
                        s.stats.size,
                    ))
                })
                .collect::<Result<_>>()?
        };
        for (file, path, len) in recent {
            let mut go_on = true;
            self.walk_headers(&*file, &path, len, 0, |h| {
                go_on = h.base_offset() < hwm && f(h);
                go_on
            })?;
            if !go_on {
                break;
            }
        }
        Ok(())
    }

    fn walk_headers(
        &self,
        file: &dyn StorageFile,
        path: &Path,
        len: u64,
        mut pos: u64,
        mut f: impl FnMut(&BatchHeader<'_>) -> bool,
    ) -> Result<()> {
        let mut reader = ChunkReader::new(file, len, 64 << 10);
        while let Some(head) = reader
            .get(pos, HEADER_BYTES)
            .map_err(|e| LogError::io("read", path, e))?
        {
            let h = BatchHeader::parse(head).expect("length checked");
            if h.total_bytes() < HEADER_BYTES as u64 {
                return Err(corrupt(
                    path,
                    pos,
                    format!("bad batch length {}", h.batch_length()),
                ));
            }
            if !f(&h) {
                break;
            }
            pos += h.total_bytes();
        }
        Ok(())
    }

    /// Deletes old segments by `retention.ms` and `retention.bytes`, and segments wholly
    /// below the log start offset. The active segment is rolled first when it alone has
    /// expired, so quiet topics still shrink. Returns the number of segments deleted.
    pub fn apply_retention(&self, now: TimestampMs) -> Result<usize> {
        let cfg = self.config();
        let mut st = lock(&self.state);
        if st.deleted || self.poison.get().is_some() {
            return Ok(0);
        }
        let expired = |s: &SegmentStats| {
            cfg.cleanup_policy.deletes()
                && s.size > 0
                && cfg
                    .retention_ms
                    .is_some_and(|r| s.max_timestamp < now.saturating_sub(r as i64))
        };
        if expired(&st.active().stats) {
            self.roll(&mut st)?;
        }
        let over_size = |total: u64, s: &SegmentStats| {
            cfg.cleanup_policy.deletes() && cfg.retention_bytes.is_some_and(|r| total - s.size >= r)
        };
        self.remove_leading_segments(&mut st, |total, s| expired(s) || over_size(total, s))
    }

    /// Deletes closed segments from the front while `doomed(total bytes, segment)` says
    /// so, or while they lie wholly below the log start offset. Advances the log start.
    fn remove_leading_segments(
        &self,
        st: &mut State,
        doomed: impl Fn(u64, &SegmentStats) -> bool,
    ) -> Result<usize> {
        let mut total = st.size_bytes();
        let mut deleted = 0;
        while st.segments.len() > 1 {
            let first = &st.segments[0].stats;
            // A segment the cleaner emptied at the log start holds no records but keeps
            // the log start where it is: dropping it would move the start over offsets
            // consumers may still ask for.
            let emptied_at_start = first.size == 0 && first.base >= st.log_start;
            let below_start = first.next_offset <= st.log_start && !emptied_at_start;
            if !(below_start || doomed(total, first)) {
                break;
            }
            total -= first.size;
            let seg = st.segments.remove(0);
            self.remove_segment_files(seg.stats.base)?;
            st.log_start = st.log_start.max(st.segments[0].stats.base);
            deleted += 1;
        }
        // Without a directory sync, a power cut may bring deleted segments back. That
        // is harmless to recovery: they come back whole (data and indexes, as fsynced
        // when they rolled), at the front, and are loaded like any sealed segment. What
        // would move is the log start: `delete_records` checkpoints it before deleting,
        // so it holds (recovery takes the checkpoint, and the next retention pass deletes
        // the segments below it again); retention does not, so the start would move back
        // to segments already deleted. One directory sync per pass that deleted
        // something keeps it where it was, and a failure costs only that: logged.
        if deleted > 0
            && let Err(e) = self.env.storage.sync_dir(&self.dir)
        {
            warn!(topic = %self.topic, partition = self.id.0, error = %e, "could not make segment deletion durable; a power cut may bring the segments back");
        }
        Ok(deleted)
    }

    fn remove_segment_files(&self, base: Offset) -> Result<()> {
        let storage = &*self.env.storage;
        let log = segment::log_path(&self.dir, base);
        self.env.files.forget(&log);
        storage
            .remove_file(&log)
            .map_err(|e| LogError::io("delete segment", &log, e))?;
        for p in [
            segment::index_path(&self.dir, base),
            segment::time_index_path(&self.dir, base),
        ] {
            if storage.exists(&p) {
                storage
                    .remove_file(&p)
                    .map_err(|e| LogError::io("delete index", &p, e))?;
            }
        }
        Ok(())
    }

    /// Moves the log start offset up to `before` (Kafka's DeleteRecords), deleting
    /// segments that fall wholly below it. Returns the new log start offset.
    pub fn delete_records(&self, before: Offset) -> Result<Offset> {
        let hwm = self.high_watermark();
        let mut st = lock(&self.state);
        self.check_writable(&st)?;
        if before > hwm {
            return Err(LogError::OffsetOutOfRange {
                requested: before,
                log_start: st.log_start,
                high_watermark: hwm,
            });
        }
        // Checkpointed even when the start is already there: retention moves it without
        // a checkpoint, and its deletions may not be durable (a failed directory sync),
        // so an acknowledged `delete_records` must not rest on them.
        if before > Offset(0) {
            let start = before.max(st.log_start);
            self.write_checkpoint(LOG_START_FILE, start)
                .map_err(|e| LogError::io("write", self.dir.join(LOG_START_FILE), e))?;
        }
        if before > st.log_start {
            st.log_start = before;
            self.remove_leading_segments(&mut st, |_, _| false)?;
        }
        Ok(st.log_start)
    }

    /// Removes every batch at and after `offset`. When `offset` falls inside a batch,
    /// that whole batch goes too. The new log end is returned. Durable before it returns.
    /// On a compacted log the new end is one past the last batch kept, which lies below
    /// `offset` when `offset` falls in a gap the cleaner left.
    pub fn truncate_to(&self, offset: Offset) -> Result<Offset> {
        // Hold off syncs, so none publishes a watermark from before the cut.
        {
            let mut s = lock(&self.sync);
            while s.busy {
                s = self.synced.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            s.busy = true;
            s.truncating = true;
        }
        let result = self.truncate_locked(offset);
        let mut s = lock(&self.sync);
        s.busy = false;
        s.truncating = false;
        if let Ok(end) = result {
            s.durable = s.durable.min(end);
        }
        self.synced.notify_all();
        result
    }

    fn truncate_locked(&self, offset: Offset) -> Result<Offset> {
        let mut st = lock(&self.state);
        self.check_writable(&st)?;
        if offset >= st.log_end() {
            return Ok(st.log_end());
        }
        if offset < st.log_start {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: st.log_start,
                high_watermark: self.high_watermark(),
            });
        }
        let i = st.segment_for(offset).expect("offset is below the log end");
        let cut = batch_containing(&self.env, &self.dir, &st.segments[i], offset)?;
        // Segments that appends recreate above the cut have not been cleaned.
        self.cleaned_upto.fetch_min(
            st.segments[i].stats.base.0,
            std::sync::atomic::Ordering::SeqCst,
        );
        if cut < st.log_start {
            // Cutting the batch that straddles the log start would end the log before it
            // starts, and bring back records below the start.
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start: st.log_start,
                high_watermark: self.high_watermark(),
            });
        }
        while st.segments.len() > i + 1 {
            let seg = st.segments.pop().expect("len checked");
            self.remove_segment_files(seg.stats.base)?;
        }
        let dir = self.dir.clone();
        let seg = st.active_mut();
        let path = segment::log_path(&dir, seg.stats.base);
        let file = match seg.active_file.clone() {
            Some(f) => f,
            None => self
                .env
                .storage
                .open(&path, OpenMode::ReadWrite)
                .map_err(|e| LogError::io("open segment", &path, e))?,
        };
        let (kept, _) = segment::scan_until(
            &*file,
            seg.stats.base,
            self.config().index_interval_bytes,
            offset,
            Offset(u64::MAX),
            Offset(u64::MAX),
        )
        .map_err(|e| LogError::io("read", &path, e))?;
        file.set_len(kept.size)
            .and_then(|()| file.sync_data())
            .map_err(|e| self.poison_with("truncate", &path, e))?;
        self.env.files.forget(&path);
        for p in [
            segment::index_path(&dir, seg.stats.base),
            segment::time_index_path(&dir, seg.stats.base),
        ] {
            if self.env.storage.exists(&p) {
                let _ = self.env.storage.remove_file(&p);
            }
        }
        seg.stats = kept;
        seg.active_file = Some(file);
        let end = st.log_end();
        // Everything kept was synced: the recovery point is the new end.
        self.write_recovery_point(end)
            .map_err(|e| LogError::io("write", dir.join(RECOVERY_POINT_FILE), e))?;
        debug_assert!(st.log_start <= end);
        self.hwm.send_modify(|h| *h = (*h).min(end));
        Ok(end)
    }

    /// Syncs the active segment and writes its indexes, for a clean shutdown.
    pub(crate) fn close(&self) -> Result<()> {
        self.check_poison()?;
        self.flush()?;
        self.checkpoint_recovery_point(None)?;
        let mut st = lock(&self.state);
        let seg = st.active_mut();
        seg.stats.seal();
        // Durable before the log writes its clean-shutdown marker, which makes the next
        // open trust index files: else a power cut could leave an older file under the
        // name (one that a truncation removed, not durably) and the open would trust it.
        seg.stats
            .write_indexes(&*self.env.storage, &self.dir)
            .and_then(|()| self.env.storage.sync_dir(&self.dir))
            .map_err(|e| LogError::io("write index", &self.dir, e))
    }

    /// Marks the partition deleted: appends and reads fail, and waiters wake up.
    pub(crate) fn mark_deleted(&self) {
        let mut st = lock(&self.state);
        st.deleted = true;
        for s in &st.segments {
            self.env
                .files
                .forget(&segment::log_path(&self.dir, s.stats.base));
        }
        drop(st);
        self.hwm.send_modify(|_| {});
    }
}

/// The base offset of the batch in `seg` that holds `offset`.
fn batch_containing(env: &Env, dir: &Path, seg: &Segment, offset: Offset) -> Result<Offset> {
    let path = segment::log_path(dir, seg.stats.base);
    let file = seg.file(env, dir)?;
    let rel = offset.0.saturating_sub(seg.stats.base.0);
    let mut pos = seg.stats.index.floor(rel).map_or(0, |(_, p)| u64::from(p));
    let mut reader = ChunkReader::new(&*file, seg.stats.size, 64 << 10);
    while let Some(head) = reader
        .get(pos, HEADER_BYTES)
        .map_err(|e| LogError::io("read", &path, e))?
    {
        let h = BatchHeader::parse(head).expect("length checked");
        if h.last_offset() >= offset {
            return Ok(h.base_offset());
        }
        if h.total_bytes() < HEADER_BYTES as u64 {
            return Err(corrupt(&path, pos, "bad batch length".into()));
        }
        pos += h.total_bytes();
    }
    Ok(seg.stats.next_offset)
}

fn corrupt(path: &Path, position: u64, reason: String) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        position,
        reason,
    }
}

/// A segment as a read sees it: its file, its extent, and the offsets it holds (from
/// `base` up to `end`, its next offset).
struct SegmentView<'a> {
    file: &'a dyn StorageFile,
    path: &'a Path,
    base: Offset,
    len: u64,
    end: Offset,
}

impl SegmentView<'_> {
    /// Why a batch header at `pos` cannot be the next batch when `expected` is the next
    /// offset: its framing, or offsets the CRC does not cover (`baseOffset`), outside
    /// what this segment holds.
    fn header_problem(&self, h: &BatchHeader<'_>, pos: u64, expected: Offset) -> Option<String> {
        let total = h.total_bytes();
        if total < HEADER_BYTES as u64 || pos + total > self.len || h.magic() != batch::MAGIC_V2 {
            return Some(format!(
                "bad batch length {} or magic {}",
                h.batch_length(),
                h.magic()
            ));
        }
        segment::offset_problem(h, self.base, expected, self.end)
    }

    /// Whether the whole batch at `pos`, `total` bytes, passes its CRC.
    fn crc_ok(&self, pos: u64, total: u64) -> Result<bool> {
        let mut bytes = vec![0u8; total as usize];
        self.file
            .read_exact_at(&mut bytes, pos)
            .map_err(|e| LogError::io("read", self.path, e))?;
        let h = BatchHeader::parse(&bytes).expect("length checked");
        Ok(batch::check_header(&h).is_ok() && batch::check_crc(&h, &bytes).is_ok())
    }
}

/// The read path: skip to the batch holding `offset` (header reads only), then one
/// read of whole batches straight into `out`, checked in place and cut to the last
/// whole, valid batch below `hwm`. `expected` is the offset the batch at `pos` starts
/// at or after. Every batch is checked: CRC, and the fields the CRC does not cover
/// (length, magic, offsets in order and inside the segment). A damaged batch is
/// reported as [`LogError::Corrupt`] at its position (when a header does not fit, the
/// batch before it is blamed if its length or `baseOffset` explains the misfit), so the
/// caller can step over it.
fn read_batches(
    view: &SegmentView<'_>,
    mut pos: u64,
    mut expected: Offset,
    offset: Offset,
    hwm: Offset,
    max_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<()> {
    let path = view.path;
    let io_err = |e| LogError::io("read", path, e);
    let mut head = [0u8; HEADER_BYTES];
    let mut prev: Option<segment::Passed> = None;
    let first_total = loop {
        if pos + HEADER_BYTES as u64 > view.len {
            return Ok(());
        }
        view.file.read_exact_at(&mut head, pos).map_err(io_err)?;
        let h = BatchHeader::parse(&head).expect("length checked");
        if let Some(reason) = view.header_problem(&h, pos, expected) {
            // Landing on a bad header may be the previous batch's fault: a damaged
            // length (then its CRC fails too) or a damaged `baseOffset`.
            if let Some(p) = prev
                && (p.explains(&h) || !view.crc_ok(p.pos, p.total)?)
            {
                return Err(corrupt(
                    path,
                    p.pos,
                    format!("the batch after it: {reason}"),
                ));
            }
            return Err(corrupt(path, pos, reason));
        }
        if h.last_offset() >= offset {
            break h.total_bytes();
        }
        prev = Some(segment::Passed::of(&h, pos, expected));
        expected = h.last_offset().plus(1);
        pos += h.total_bytes();
    };
    let want = (max_bytes as u64).min(view.len - pos).max(first_total);
    out.resize(want as usize, 0);
    view.file.read_exact_at(out, pos).map_err(io_err)?;
    let mut end = 0usize;
    while end + HEADER_BYTES <= out.len() {
        let at = pos + end as u64;
        let h = BatchHeader::parse(&out[end..]).expect("length checked");
        let total = h.total_bytes() as usize;
        let problem = view.header_problem(&h, at, expected);
        if problem.is_none() && h.base_offset() >= hwm {
            break;
        }
        let mut checked = match problem {
            Some(reason) => Err(reason),
            None if end + total > out.len() => break,
            None => batch::check_header(&h)
                .and_then(|()| batch::check_crc(&h, &out[end..end + total]))
                .map_err(|e| e.to_string()),
        };
        // A batch that starts above the expected offset, followed by one that starts
        // where it should have ended: its own `baseOffset` is damaged.
        if checked.is_ok() && h.base_offset() > expected && end + total + HEADER_BYTES <= out.len()
        {
            let next = BatchHeader::parse(&out[end + total..]).expect("length checked");
            if segment::Passed::of(&h, at, expected).explains(&next) {
                checked = Err(format!(
                    "batch offset {} does not continue the log (expected {expected})",
                    h.base_offset_raw()
                ));
            }
        }
        if let Err(reason) = checked {
            if end == 0 {
                out.clear();
                return Err(corrupt(path, at, reason));
            }
            error!(path = %path.display(), position = at, %reason, "corrupt batch; serving only the batches before it");
            break;
        }
        expected = h.last_offset().plus(1);
        end += total;
    }
    out.truncate(end);
    Ok(())
}
