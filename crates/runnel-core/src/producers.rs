//! Producer ids and the idempotent producer state beside the log.
//!
//! Producer ids are never reused: they are handed out from blocks whose end is written
//! to `<data>/producer-ids` (with a CRC, atomically) before any id of the block is
//! given out. After a restart the next block starts where the file says.
//!
//! Sequence state per partition lives in [`PartitionProducers`]. It is rebuilt on first
//! use after a restart from the batch headers of the partition's last segments, so a
//! retried batch is still recognised as a duplicate across a restart.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use runnel_log::Partition;
use tracing::warn;

use crate::producer_state::{BatchSequence, BumpVerdict, IssuedProducers, PartitionProducers};

/// Ids handed out per write of `producer-ids`.
const PRODUCER_ID_BLOCK: i64 = 1000;
/// Segments scanned to rebuild producer state after a restart. Kafka snapshots this
/// state; scanning the newest segments bounds the work to about two segment sizes of
/// headers and keeps every producer active since the last roll.
const REBUILD_SEGMENTS: usize = 2;

/// One partition's producer state, shared by everything producing to it.
pub type SharedProducers = Arc<Mutex<PartitionProducers>>;

#[derive(Debug)]
struct IdBlock {
    path: PathBuf,
    next: i64,
    end: i64,
}

/// Producer ids and per-partition producer state.
#[derive(Debug)]
pub struct ProducerRegistry {
    ids: Mutex<IdBlock>,
    /// The current epoch of each id handed out, so only its holder can bump it.
    issued: Mutex<IssuedProducers>,
    partitions: Mutex<HashMap<(String, u32), SharedProducers>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read_block_end(path: &Path) -> i64 {
    let Ok(bytes) = std::fs::read(path) else {
        return 0;
    };
    if bytes.len() != 12 || crc32c::crc32c(&bytes[..8]).to_be_bytes() != bytes[8..12] {
        warn!(path = %path.display(), "producer id file is damaged; starting far past any id it could have handed out");
        return i64::MAX / 2;
    }
    i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"))
}

fn write_block_end(path: &Path, end: i64) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut bytes = end.to_be_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&bytes).to_be_bytes());
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &bytes)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl ProducerRegistry {
    /// Opens the registry; ids continue after the last block written in `data_dir`.
    /// Nothing is written until the first id is handed out.
    #[must_use]
    pub fn open(data_dir: &Path) -> Self {
        let path = data_dir.join("producer-ids");
        let end = read_block_end(&path);
        ProducerRegistry {
            ids: Mutex::new(IdBlock {
                path,
                next: end,
                end,
            }),
            issued: Mutex::new(IssuedProducers::default()),
            partitions: Mutex::new(HashMap::new()),
        }
    }

    /// A producer id never handed out before, even across restarts.
    pub fn allocate(&self) -> io::Result<i64> {
        let mut ids = lock(&self.ids);
        if ids.next >= ids.end {
            let end = ids.next + PRODUCER_ID_BLOCK;
            write_block_end(&ids.path, end)?;
            ids.end = end;
        }
        let id = ids.next;
        ids.next += 1;
        lock(&self.issued).issued(id, crate::now_ms());
        Ok(id)
    }

    /// KIP-360: the next epoch of `producer_id` for the producer holding `epoch`, or why
    /// not (see [`BumpVerdict`]).
    pub fn bump(&self, producer_id: i64, epoch: i16) -> BumpVerdict {
        let ids_below = lock(&self.ids).next;
        lock(&self.issued).bump(producer_id, epoch, ids_below, crate::now_ms())
    }

    /// The producer state of a partition, rebuilt from its recent batches on first use.
    pub fn for_partition(&self, p: &Partition) -> SharedProducers {
        let key = (p.topic().to_string(), p.id().0);
        if let Some(s) = lock(&self.partitions).get(&key) {
            return s.clone();
        }
        let mut state = PartitionProducers::default();
        let now = crate::now_ms();
        let rebuilt = p.for_each_recent_header(REBUILD_SEGMENTS, |h| {
            let seq = BatchSequence {
                producer_id: h.producer_id(),
                producer_epoch: h.producer_epoch(),
                base_sequence: h.base_sequence(),
                // The sequence range spans every offset of the batch: compaction lowers
                // `recordCount` but keeps `lastOffsetDelta`, as Kafka does.
                record_count: h.last_offset_delta().saturating_add(1),
            };
            state.record(&seq, h.base_offset().0, h.last_offset().0, now);
            true
        });
        if let Err(e) = rebuilt {
            warn!(topic = p.topic(), partition = p.id().0, error = %e, "could not rebuild producer state; duplicates from before the restart may not be recognised");
        }
        lock(&self.partitions)
            .entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(state)))
            .clone()
    }

    /// Forgets the state of a deleted topic.
    pub fn forget_topic(&self, topic: &str) {
        lock(&self.partitions).retain(|(t, _), _| t != topic);
    }
}
