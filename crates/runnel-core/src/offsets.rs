//! Committed offsets: kept in memory, persisted in the internal topic
//! `__consumer_offsets` before a commit is acknowledged, and read back at start-up.
//!
//! Each commit appends one batch (so a commit is all or nothing after a crash) of
//! records whose key names `(group, topic, partition)` and whose value is the commit, or
//! null for a deletion (a tombstone). The topic is created with `cleanup.policy=compact`
//! on first use; the latest record per key is the truth. Its durability is the broker's
//! default for data, so with `always` a commit is fsynced before it is acknowledged.
//!
//! Record layout (big-endian):
//!
//! | part  | bytes | field                                          |
//! |-------|-------|------------------------------------------------|
//! | key   | 1     | format version, 1                              |
//! |       | 2 + n | group id: length, UTF-8                        |
//! |       | 2 + n | topic: length, UTF-8                           |
//! |       | 4     | partition                                      |
//! | value | 1     | format version, 1                              |
//! |       | 8     | committed offset                               |
//! |       | 4     | committed leader epoch (-1: none)              |
//! |       | 8     | commit time, ms since the Unix epoch           |
//! |       | 2 + n | metadata: length, UTF-8                        |

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use runnel_log::batch::{KeyValue, build_batch};
use runnel_log::{Log, LogError, Partition, PartitionId};
use tracing::{info, warn};

use crate::records;
use crate::topics::OFFSETS_TOPIC;
/// Kafka's `offset.metadata.max.bytes`: longer commit metadata is refused.
pub const COMMIT_METADATA_BYTES_MAX: usize = 4096;
const FORMAT_VERSION: u8 = 1;
/// Bytes read per step when loading the offsets topic.
const LOAD_READ_BYTES: usize = 1 << 20;

/// What a group committed for one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The next offset the group will consume.
    pub offset: i64,
    /// The leader epoch of the record before it, or -1.
    pub leader_epoch: i32,
    /// The client's string, returned unchanged.
    pub metadata: String,
    /// When it was committed (ms since the Unix epoch).
    pub commit_ms: i64,
}

/// `(group, topic, partition)`.
pub type OffsetKey = (String, String, i32);

/// One change to a group's offsets: `(topic, partition)` and the new commit, or `None`
/// to delete it.
pub type OffsetChange = ((String, i32), Option<Committed>);

/// Committed offsets of every group.
#[derive(Debug)]
pub struct OffsetStore {
    log: Arc<Log>,
    /// Writers, one at a time, and the offsets topic's partition once it exists. Held
    /// across the append (and its fsync) and the map update, so the map follows the
    /// log's order. Readers never take it: a slow disk stalls commits, not OffsetFetch.
    writer: Mutex<Option<Arc<Partition>>>,
    /// The committed offsets. Taken only briefly, never across I/O.
    offsets: Mutex<BTreeMap<OffsetKey, Committed>>,
}

/// Takes a lock even if a panic poisoned it: every critical section leaves the data
/// whole.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl OffsetStore {
    /// Loads the offsets topic, if it exists.
    pub fn open(log: Arc<Log>) -> Result<OffsetStore, LogError> {
        let mut offsets = BTreeMap::new();
        let mut partition = None;
        if let Ok(p) = log.partition(OFFSETS_TOPIC, PartitionId(0)) {
            offsets = load(&p)?;
            info!(
                commits = offsets.len(),
                "loaded committed offsets from {OFFSETS_TOPIC}"
            );
            partition = Some(p);
        }
        Ok(OffsetStore {
            log,
            writer: Mutex::new(partition),
            offsets: Mutex::new(offsets),
        })
    }

    /// Persists `entries` for `group` (values, or `None` to delete), then applies them.
    /// Blocks until the batch is durable under the topic's policy.
    pub fn write(&self, group: &str, entries: &[OffsetChange]) -> Result<(), LogError> {
        self.write_locked(&mut lock(&self.writer), group, entries)
    }

    /// [`OffsetStore::write`] with the writer's lock held, so a caller can decide what
    /// to write and write it without a commit slipping in between.
    fn write_locked(
        &self,
        writer: &mut Option<Arc<Partition>>,
        group: &str,
        entries: &[OffsetChange],
    ) -> Result<(), LogError> {
        if entries.is_empty() {
            return Ok(());
        }
        let records: Vec<(Vec<u8>, Option<Vec<u8>>)> = entries
            .iter()
            .map(|((topic, partition), c)| {
                (
                    encode_key(group, topic, *partition),
                    c.as_ref().map(encode_value),
                )
            })
            .collect();
        let kvs: Vec<KeyValue<'_>> = records
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref()))
            .collect();
        let batch = build_batch(&kvs, crate::now_ms());
        let partition = self.partition(writer)?;
        partition.append(&batch)?;
        let mut offsets = lock(&self.offsets);
        for ((topic, partition), c) in entries {
            let key = (group.to_string(), topic.clone(), *partition);
            match c {
                Some(c) => offsets.insert(key, c.clone()),
                None => offsets.remove(&key),
            };
        }
        Ok(())
    }

    /// The offsets topic's partition, created on first use.
    fn partition(&self, writer: &mut Option<Arc<Partition>>) -> Result<Arc<Partition>, LogError> {
        if let Some(p) = writer {
            return Ok(p.clone());
        }
        let overrides = BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())]);
        let p = match self.log.create_topic(OFFSETS_TOPIC, 1, &overrides) {
            Ok(_) | Err(LogError::TopicExists(_)) => {
                self.log.partition(OFFSETS_TOPIC, PartitionId(0))?
            }
            Err(e) => return Err(e),
        };
        *writer = Some(p.clone());
        Ok(p)
    }

    /// What `group` committed for `topic`/`partition`.
    #[must_use]
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<Committed> {
        let key = (group.to_string(), topic.to_string(), partition);
        lock(&self.offsets).get(&key).cloned()
    }

    /// Everything `group` committed, by topic and partition.
    #[must_use]
    pub fn group(&self, group: &str) -> BTreeMap<(String, i32), Committed> {
        lock(&self.offsets)
            .range(range_of(group))
            .map(|((_, t, p), c)| ((t.clone(), *p), c.clone()))
            .collect()
    }

    /// Every group with at least one committed offset.
    #[must_use]
    pub fn groups(&self) -> BTreeSet<String> {
        lock(&self.offsets)
            .keys()
            .map(|(g, _, _)| g.clone())
            .collect()
    }

    /// When each group last committed (the latest `commit_ms` of its offsets): where
    /// its retention clock starts after a restart, when nothing else is known of it.
    #[must_use]
    pub fn last_commit_ms(&self) -> BTreeMap<String, i64> {
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        for ((g, _, _), c) in lock(&self.offsets).iter() {
            let at = last.entry(g.clone()).or_insert(c.commit_ms);
            *at = (*at).max(c.commit_ms);
        }
        last
    }

    /// Expires `group`'s offsets (`offsets.retention.minutes`): deletes, with
    /// tombstones, those committed before `committed_before_ms`, so they stay gone
    /// after a restart. Returns how many offsets the group still has: commits made
    /// after the coordinator decided to forget it, which are kept.
    ///
    /// Choosing and deleting happen under the writer's lock, so a commit racing the expiry is
    /// either older than the cut-off (and was allowed before the decision, which it
    /// would have prevented) or newer, and kept.
    pub fn expire_group(&self, group: &str, committed_before_ms: i64) -> Result<usize, LogError> {
        let mut writer = lock(&self.writer);
        let mut kept = 0;
        let mut expired = Vec::new();
        for ((_, t, p), c) in lock(&self.offsets).range(range_of(group)) {
            if c.commit_ms < committed_before_ms {
                expired.push(((t.clone(), *p), None));
            } else {
                kept += 1;
            }
        }
        self.write_locked(&mut writer, group, &expired)?;
        Ok(kept)
    }

    /// Deletes every offset of `group`.
    pub fn delete_group(&self, group: &str) -> Result<(), LogError> {
        let keys: Vec<_> = self.group(group).into_keys().map(|tp| (tp, None)).collect();
        self.write(group, &keys)
    }

    /// Deletes every group's offsets for `topic` (the topic was deleted).
    pub fn delete_topic(&self, topic: &str) -> Result<(), LogError> {
        let mut by_group: BTreeMap<String, Vec<OffsetChange>> = BTreeMap::new();
        for (g, t, p) in lock(&self.offsets).keys() {
            if t == topic {
                by_group
                    .entry(g.clone())
                    .or_default()
                    .push(((t.clone(), *p), None));
            }
        }
        for (group, entries) in by_group {
            self.write(&group, &entries)?;
        }
        Ok(())
    }
}

/// The keys of `group` in the ordered map.
fn range_of(group: &str) -> std::ops::RangeInclusive<OffsetKey> {
    let lo = (group.to_string(), String::new(), i32::MIN);
    let hi = (group.to_string(), "\u{10ffff}".repeat(256), i32::MAX);
    lo..=hi
}

fn load(p: &Partition) -> Result<BTreeMap<OffsetKey, Committed>, LogError> {
    let mut offsets = BTreeMap::new();
    let mut next = p.log_start_offset().0 as i64;
    let end = p.high_watermark().0 as i64;
    while next < end {
        let (records, after) = records::read(p, next, LOAD_READ_BYTES)?;
        if after <= next {
            warn!(
                offset = next,
                "undecodable batch in {OFFSETS_TOPIC}; offsets after it are not loaded"
            );
            break;
        }
        next = after;
        for r in records {
            let Some(key) = r.key.as_deref().and_then(decode_key) else {
                warn!(
                    offset = r.offset,
                    "skipping a record with an unknown key in {OFFSETS_TOPIC}"
                );
                continue;
            };
            match r.value.as_deref().map(decode_value) {
                None => {
                    offsets.remove(&key);
                }
                Some(Some(c)) => {
                    offsets.insert(key, c);
                }
                Some(None) => {
                    warn!(
                        offset = r.offset,
                        "skipping an undecodable commit in {OFFSETS_TOPIC}"
                    );
                }
            }
        }
    }
    Ok(offsets)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Group ids, topic names and metadata are all far below 64 KiB: callers check.
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

fn encode_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut k = vec![FORMAT_VERSION];
    put_str(&mut k, group);
    put_str(&mut k, topic);
    k.extend_from_slice(&partition.to_be_bytes());
    k
}

fn encode_value(c: &Committed) -> Vec<u8> {
    let mut v = vec![FORMAT_VERSION];
    v.extend_from_slice(&c.offset.to_be_bytes());
    v.extend_from_slice(&c.leader_epoch.to_be_bytes());
    v.extend_from_slice(&c.commit_ms.to_be_bytes());
    put_str(&mut v, &c.metadata);
    v
}

/// Reads big-endian fields off the front of a slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::from(u16::from_be_bytes(self.take::<2>()?));
        if self.0.len() < len {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        String::from_utf8(s.to_vec()).ok()
    }
}

fn decode_key(k: &[u8]) -> Option<OffsetKey> {
    let mut r = Reader(k);
    if r.take::<1>()? != [FORMAT_VERSION] {
        return None;
    }
    let group = r.string()?;
    let topic = r.string()?;
    let partition = i32::from_be_bytes(r.take::<4>()?);
    Some((group, topic, partition))
}

fn decode_value(v: &[u8]) -> Option<Committed> {
    let mut r = Reader(v);
    if r.take::<1>()? != [FORMAT_VERSION] {
        return None;
    }
    Some(Committed {
        offset: i64::from_be_bytes(r.take::<8>()?),
        leader_epoch: i32::from_be_bytes(r.take::<4>()?),
        commit_ms: i64::from_be_bytes(r.take::<8>()?),
        metadata: r.string()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let c = Committed {
            offset: 42,
            leader_epoch: -1,
            metadata: "ünïcode meta".into(),
            commit_ms: 1_700_000_000_000,
        };
        assert_eq!(decode_value(&encode_value(&c)), Some(c));
        let key = ("group".to_string(), "orders".to_string(), 7);
        assert_eq!(decode_key(&encode_key("group", "orders", 7)), Some(key));
        assert_eq!(decode_key(&[2, 0, 0]), None, "an unknown format is skipped");
        assert_eq!(decode_value(&[1, 0]), None, "a short value is skipped");
    }

    #[test]
    fn the_range_of_a_group_holds_its_keys_only() {
        let mut m = BTreeMap::new();
        for g in ["a", "ab", "b"] {
            m.insert((g.to_string(), "t".to_string(), 0), ());
            m.insert((g.to_string(), "zzz".to_string(), i32::MAX), ());
        }
        let keys: Vec<_> = m.range(range_of("a")).map(|(k, _)| k.0.clone()).collect();
        assert_eq!(keys, vec!["a", "a"]);
    }
}
