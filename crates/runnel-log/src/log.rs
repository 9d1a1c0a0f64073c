//! The log: a directory of topics, each with N partitions, plus the background thread
//! that runs interval flushes, retention and the cleaner.
//!
//! Layout of the data directory:
//!
//! ```text
//! <data>/.lock                       held (flock) while a log is open
//! <data>/clean-shutdown              present only between a clean close and the next open
//! <data>/topics/<topic>/topic.properties   partitions=N plus config overrides
//! <data>/topics/<topic>/<partition>/       segments, indexes, checkpoints
//! <data>/trash/                      topics being deleted (emptied on open)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::clock::{Clock, SystemClock};
use crate::config::{LogConfig, PARTITIONS_MAX, TopicConfig, validate_topic_name};
use crate::error::{LogError, Result};
use crate::files::FileCache;
use crate::io::{DirLock, OpenMode, StdStorage, Storage, create_dir_durable};
use crate::partition::{Env, Partition};
use crate::types::{PartitionId, TimestampMs};

const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
const LOCK_FILE: &str = ".lock";
const TOPIC_META_FILE: &str = "topic.properties";
/// How often the background thread wakes to run due interval flushes.
const MAINTENANCE_TICK: Duration = Duration::from_millis(20);

/// A topic: its settings and partitions.
#[derive(Debug)]
pub struct Topic {
    name: Arc<str>,
    dir: PathBuf,
    /// Settings set on this topic; everything else comes from the log's defaults.
    overrides: RwLock<BTreeMap<String, String>>,
    /// Defaults plus overrides, shared with every partition.
    config: Arc<RwLock<TopicConfig>>,
    partitions: RwLock<Vec<Arc<Partition>>>,
}

impl Topic {
    /// The topic's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The settings in force.
    #[must_use]
    pub fn config(&self) -> TopicConfig {
        read(&self.config).clone()
    }

    /// The settings set explicitly on this topic.
    #[must_use]
    pub fn overrides(&self) -> BTreeMap<String, String> {
        read(&self.overrides).clone()
    }

    /// All partitions, in order.
    #[must_use]
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        read(&self.partitions).clone()
    }

    /// Number of partitions.
    #[must_use]
    pub fn partition_count(&self) -> u32 {
        read(&self.partitions).len() as u32
    }

    /// One partition.
    #[must_use]
    pub fn partition(&self, id: PartitionId) -> Option<Arc<Partition>> {
        read(&self.partitions).get(id.0 as usize).cloned()
    }

    fn meta_bytes(&self, partitions: u32) -> Vec<u8> {
        let mut out = String::from(
            "# Runnel topic metadata. Written atomically; do not edit while running.\n",
        );
        out.push_str(&format!("partitions={partitions}\n"));
        for (k, v) in read(&self.overrides).iter() {
            out.push_str(&format!("{k}={v}\n"));
        }
        out.into_bytes()
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug)]
struct Inner {
    env: Arc<Env>,
    config: LogConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Topics being created: their names are taken, but they are not in `topics` until
    /// their files are durable. Creation does its I/O (an fsync per partition) without
    /// holding `topics`, which every produce and fetch reads.
    creating: Mutex<std::collections::BTreeSet<String>>,
    /// Held while partitions are added to a topic.
    adding_partitions: Mutex<()>,
    stop: Mutex<bool>,
    wake: Condvar,
    _lock: Box<dyn DirLock>,
}

/// The storage engine: topics of partitioned, durable, ordered logs of record batches.
///
/// Dropping a `Log` without [`Log::close`] is a crash as far as the disk is concerned:
/// the next open recovers.
#[derive(Debug)]
pub struct Log {
    inner: Arc<Inner>,
    worker: Option<JoinHandle<()>>,
    /// The cleaner runs on its own thread, so a long pass never delays interval flushes.
    cleaner: Option<JoinHandle<()>>,
}

/// A topic name held in [`Inner::creating`] while its creation runs; let go on drop.
struct Taken<'a>(&'a Mutex<std::collections::BTreeSet<String>>, &'a str);

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.1);
    }
}

impl Log {
    /// Opens (or creates) the log in `config.data_dir` on the real file system.
    pub fn open(config: LogConfig) -> Result<Log> {
        Log::open_with(config, Arc::new(StdStorage), Arc::new(SystemClock))
    }

    /// Opens the log on any storage and clock (simulated ones in tests).
    pub fn open_with(
        config: LogConfig,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
    ) -> Result<Log> {
        let data = config.data_dir.clone();
        // Durable before any topic is created in them: a topic directory made durable
        // in a `topics/` whose own entry is not would vanish with it at a power cut.
        for d in [data.join("topics"), data.join("trash")] {
            create_dir_durable(&*storage, &d)
                .map_err(|e| LogError::io("create directory", &d, e))?;
        }
        let lock_path = data.join(LOCK_FILE);
        let lock = storage
            .lock(&lock_path)
            .map_err(|source| LogError::Locked {
                path: lock_path,
                source,
            })?;
        let marker = data.join(CLEAN_SHUTDOWN_FILE);
        let clean = storage.exists(&marker);
        if clean {
            // From here on, a crash must be treated as one.
            storage
                .remove_file(&marker)
                .and_then(|()| storage.sync_dir(&data))
                .map_err(|e| LogError::io("remove", &marker, e))?;
        } else {
            info!(dir = %data.display(), "no clean-shutdown marker: recovering");
        }
        empty_trash(&*storage, &data.join("trash"));
        let env = Arc::new(Env {
            storage,
            clock,
            codec: config.batch_codec.clone(),
            cleaner_map_bytes_max: config.cleaner_map_bytes_max,
            files: FileCache::new(config.open_segment_files_max),
            recovery_events: Mutex::new(Vec::new()),
            stats: Arc::default(),
        });
        let inner = Arc::new(Inner {
            env,
            config,
            topics: RwLock::new(BTreeMap::new()),
            creating: Mutex::new(std::collections::BTreeSet::new()),
            adding_partitions: Mutex::new(()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            _lock: lock,
        });
        load_topics(&inner, clean)?;
        let (worker, cleaner) = if inner.config.background {
            let spawn = |name: &str, run: fn(&Inner)| {
                let inner = inner.clone();
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || run(&inner))
                    .map_err(|e| LogError::io("spawn thread", &data, e))
            };
            (
                Some(spawn("runnel-log-maintenance", maintenance_loop)?),
                Some(spawn("runnel-log-cleaner", cleaner_loop)?),
            )
        } else {
            (None, None)
        };
        Ok(Log {
            inner,
            worker,
            cleaner,
        })
    }

    /// What the log measured of itself (fsync latency).
    #[must_use]
    pub fn stats(&self) -> &crate::stats::LogStats {
        &self.inner.env.stats
    }

    /// The log's settings.
    #[must_use]
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Creates a topic with `partitions` partitions and the given setting overrides.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Arc<Topic>> {
        validate_topic_name(name).map_err(|reason| LogError::InvalidTopicName {
            name: name.to_string(),
            reason,
        })?;
        check_partition_count(partitions)?;
        let config = effective_config(&self.inner.config.topic_defaults, overrides)?;
        {
            let topics = read(&self.inner.topics);
            let mut creating = self
                .inner
                .creating
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if topics.contains_key(name) || !creating.insert(name.to_string()) {
                return Err(LogError::TopicExists(name.to_string()));
            }
        }
        // The name is taken until this returns, whatever happens below.
        let _taken = Taken(&self.inner.creating, name);
        let storage = &*self.inner.env.storage;
        let dir = self.inner.config.data_dir.join("topics").join(name);
        if storage.exists(&dir) {
            // Left by a creation that crashed before its metadata was written.
            storage
                .remove_dir_all(&dir)
                .map_err(|e| LogError::io("remove", &dir, e))?;
        }
        // The topic's entry in `topics/` is durable before its partitions' entries in
        // it, and those (in `Partition::create`) before the metadata file that commits
        // the creation: a topic acknowledged as created survives a power cut whole.
        create_dir_durable(storage, &dir).map_err(|e| LogError::io("create directory", &dir, e))?;
        let topic = Arc::new(Topic {
            name: name.into(),
            dir: dir.clone(),
            overrides: RwLock::new(overrides.clone()),
            config: Arc::new(RwLock::new(config)),
            partitions: RwLock::new(Vec::new()),
        });
        let created = (0..partitions)
            .map(|p| self.new_partition(&topic, p))
            .collect::<Result<Vec<_>>>()
            .and_then(|parts| {
                *write(&topic.partitions) = parts;
                // The metadata file is the commit point: without it, open discards the
                // directory.
                write_meta(storage, &topic, partitions)
            });
        if let Err(e) = created {
            // A failed creation must not be found by the next open of this disk: its
            // metadata may be there but not durable (a failed directory sync), and a
            // topic loaded from it could vanish at a power cut, data and all.
            if let Err(e) = storage.remove_dir_all(&dir) {
                warn!(topic = name, error = %e, "could not remove the directory of a failed topic creation");
            }
            return Err(e);
        }
        info!(topic = name, partitions, "created topic");
        write(&self.inner.topics).insert(name.to_string(), topic.clone());
        Ok(topic)
    }

    fn new_partition(&self, topic: &Topic, p: u32) -> Result<Arc<Partition>> {
        Partition::create(
            self.inner.env.clone(),
            topic.name.clone(),
            PartitionId(p),
            &topic.dir.join(p.to_string()),
            topic.config.clone(),
        )
        .map(Arc::new)
    }

    /// Deletes a topic and all its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let topic = write(&self.inner.topics)
            .remove(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        for p in topic.partitions() {
            p.mark_deleted();
        }
        let storage = &*self.inner.env.storage;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let trash = self
            .inner
            .config
            .data_dir
            .join("trash")
            .join(format!("{name}-{nanos}"));
        storage
            .rename(&topic.dir, &trash)
            .map_err(|e| LogError::io("move to trash", &topic.dir, e))?;
        // Until `topics/` is synced, a power cut brings the topic back whole (the
        // trash directory's entry for it is not durable either, so it is not half
        // there); the deletion is acknowledged anyway, as Kafka's is before its files go.
        if let Some(parent) = topic.dir.parent()
            && let Err(e) = storage.sync_dir(parent)
        {
            warn!(topic = name, error = %e, "could not make the topic's deletion durable; a power cut may bring it back");
        }
        if let Err(e) = storage.remove_dir_all(&trash) {
            warn!(path = %trash.display(), error = %e, "could not empty trash; it is retried on the next open");
        }
        info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Looks up a topic.
    #[must_use]
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        read(&self.inner.topics).get(name).cloned()
    }

    /// All topics, by name.
    #[must_use]
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        read(&self.inner.topics).values().cloned().collect()
    }

    /// Looks up a partition.
    pub fn partition(&self, topic: &str, id: PartitionId) -> Result<Arc<Partition>> {
        let t = self
            .topic(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))?;
        t.partition(id).ok_or_else(|| LogError::UnknownPartition {
            topic: topic.to_string(),
            partition: id,
        })
    }

    /// Changes a topic's overrides: `set` adds or replaces, `remove` reverts keys to the
    /// default. All values are validated before anything changes.
    pub fn alter_topic_config(
        &self,
        name: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<TopicConfig> {
        let topic = self
            .topic(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        let mut overrides = topic.overrides();
        for k in remove {
            overrides.remove(k);
        }
        overrides.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
        let config = effective_config(&self.inner.config.topic_defaults, &overrides)?;
        *write(&topic.overrides) = overrides;
        write_meta(&*self.inner.env.storage, &topic, topic.partition_count())?;
        *write(&topic.config) = config.clone();
        Ok(config)
    }

    /// Grows a topic to `total` partitions. Partitions are never removed.
    pub fn add_partitions(&self, name: &str, total: u32) -> Result<()> {
        let topic = self
            .topic(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        check_partition_count(total)?;
        // One addition at a time: two would create the same partition directories.
        let _adding = self
            .inner
            .adding_partitions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let current = topic.partition_count();
        if total <= current {
            return Err(LogError::InvalidPartitions {
                requested: total,
                reason: format!("the topic already has {current} partitions"),
            });
        }
        let storage = &*self.inner.env.storage;
        let mut added = Vec::new();
        for p in current..total {
            // Left by an addition that failed (or crashed) before the metadata file
            // committed it: nothing in it was ever part of the topic.
            let dir = topic.dir.join(p.to_string());
            if storage.exists(&dir) {
                storage
                    .remove_dir_all(&dir)
                    .map_err(|e| LogError::io("remove", &dir, e))?;
            }
            added.push(self.new_partition(&topic, p)?);
        }
        write_meta(storage, &topic, total)?;
        write(&topic.partitions).extend(added);
        Ok(())
    }

    /// What recovery did when this log was opened: cuts, removed segments, rebuilt
    /// indexes. Empty after a clean shutdown of a healthy log.
    #[must_use]
    pub fn recovery_events(&self) -> Vec<crate::recovery::RecoveryEvent> {
        self.inner
            .env
            .recovery_events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs one cleaner pass on every partition of `topic` now (a no-op unless its
    /// `cleanup.policy` compacts). Returns what each partition's pass did.
    pub fn compact_now(&self, topic: &str) -> Result<Vec<crate::cleaner::CleanStats>> {
        let t = self
            .topic(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))?;
        t.partitions().iter().map(|p| p.clean()).collect()
    }

    /// Runs retention on every partition now. Returns the number of segments deleted.
    pub fn apply_retention(&self) -> usize {
        apply_retention(&self.inner)
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<()> {
        for t in self.topics() {
            for p in t.partitions() {
                p.flush()?;
            }
        }
        Ok(())
    }

    /// Shuts down cleanly: stops the background thread, syncs every partition, writes
    /// the index files and the clean-shutdown marker. The next open skips recovery.
    pub fn close(mut self) -> Result<()> {
        self.stop_worker();
        for t in self.topics() {
            for p in t.partitions() {
                p.close()?;
            }
        }
        let data = &self.inner.config.data_dir;
        self.inner
            .env
            .storage
            .write_atomic(&data.join(CLEAN_SHUTDOWN_FILE), b"clean\n")
            .map_err(|e| LogError::io("write", data.join(CLEAN_SHUTDOWN_FILE), e))?;
        info!(dir = %data.display(), "log closed cleanly");
        Ok(())
    }

    fn stop_worker(&mut self) {
        *self.inner.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.inner.wake.notify_all();
        for w in [self.worker.take(), self.cleaner.take()]
            .into_iter()
            .flatten()
        {
            let _ = w.join();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        self.stop_worker();
    }
}

fn check_partition_count(n: u32) -> Result<()> {
    if n == 0 || n > PARTITIONS_MAX {
        return Err(LogError::InvalidPartitions {
            requested: n,
            reason: format!("must be between 1 and {PARTITIONS_MAX}"),
        });
    }
    Ok(())
}

fn effective_config(
    defaults: &TopicConfig,
    overrides: &BTreeMap<String, String>,
) -> Result<TopicConfig> {
    let mut c = defaults.clone();
    for (k, v) in overrides {
        c.set(k, v)?;
    }
    Ok(c)
}

fn write_meta(storage: &dyn Storage, topic: &Topic, partitions: u32) -> Result<()> {
    let path = topic.dir.join(TOPIC_META_FILE);
    storage
        .write_atomic(&path, &topic.meta_bytes(partitions))
        .map_err(|e| LogError::io("write", &path, e))
}

fn parse_meta(path: &Path, text: &str) -> Result<(u32, BTreeMap<String, String>)> {
    let corrupt = |reason: String| LogError::Corrupt {
        path: path.to_path_buf(),
        position: 0,
        reason,
    };
    let mut partitions = None;
    let mut overrides = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| corrupt(format!("line without '=': {line:?}")))?;
        if k == "partitions" {
            partitions = Some(
                v.parse()
                    .map_err(|_| corrupt(format!("bad partition count {v:?}")))?,
            );
        } else {
            overrides.insert(k.to_string(), v.to_string());
        }
    }
    let partitions = partitions.ok_or_else(|| corrupt("no partition count".into()))?;
    Ok((partitions, overrides))
}

fn load_topics(inner: &Arc<Inner>, clean: bool) -> Result<()> {
    let storage = &*inner.env.storage;
    let root = inner.config.data_dir.join("topics");
    // After a crash, what the process left in `topics/` and in each topic directory
    // (a creation, a deletion, metadata whose directory sync failed) is made durable
    // before it is relied on, as each partition does with its own directory.
    let sync_after_crash = |dir: &Path| {
        if clean {
            return Ok(());
        }
        storage
            .sync_dir(dir)
            .map_err(|e| LogError::io("sync directory", dir, e))
    };
    sync_after_crash(&root)?;
    let entries = storage
        .list_dir(&root)
        .map_err(|e| LogError::io("list", &root, e))?;
    let mut topics = write(&inner.topics);
    for e in entries.into_iter().filter(|e| e.is_dir) {
        let dir = root.join(&e.name);
        if validate_topic_name(&e.name).is_err() {
            warn!(dir = %dir.display(), "ignoring a directory that is not a topic");
            continue;
        }
        let meta = dir.join(TOPIC_META_FILE);
        if !storage.exists(&meta) {
            warn!(dir = %dir.display(), "removing a topic whose creation did not finish");
            storage
                .remove_dir_all(&dir)
                .map_err(|e| LogError::io("remove", &dir, e))?;
            continue;
        }
        sync_after_crash(&dir)?;
        let text = storage
            .open(&meta, OpenMode::Read)
            .and_then(|f| f.read_all())
            .map_err(|e| LogError::io("read", &meta, e))?;
        let (count, overrides) = parse_meta(&meta, &String::from_utf8_lossy(&text))?;
        let config = effective_config(&inner.config.topic_defaults, &overrides)?;
        let name: Arc<str> = e.name.as_str().into();
        let config = Arc::new(RwLock::new(config));
        let mut parts = Vec::with_capacity(count as usize);
        for p in 0..count {
            let pdir = dir.join(p.to_string());
            parts.push(Arc::new(Partition::open(
                inner.env.clone(),
                name.clone(),
                PartitionId(p),
                &pdir,
                config.clone(),
                clean,
            )?));
        }
        topics.insert(
            e.name.clone(),
            Arc::new(Topic {
                name,
                dir,
                overrides: RwLock::new(overrides),
                config,
                partitions: RwLock::new(parts),
            }),
        );
    }
    Ok(())
}

fn empty_trash(storage: &dyn Storage, trash: &Path) {
    let Ok(entries) = storage.list_dir(trash) else {
        return;
    };
    for e in entries {
        let p = trash.join(&e.name);
        let r = if e.is_dir {
            storage.remove_dir_all(&p)
        } else {
            storage.remove_file(&p)
        };
        if let Err(err) = r {
            warn!(path = %p.display(), error = %err, "could not empty trash");
        }
    }
}

fn all_partitions(inner: &Inner) -> Vec<Arc<Partition>> {
    read(&inner.topics)
        .values()
        .flat_map(|t| t.partitions())
        .collect()
}

fn apply_retention(inner: &Inner) -> usize {
    let now = inner.env.clock.now_ms();
    let mut deleted = 0;
    for p in all_partitions(inner) {
        match p.apply_retention(now) {
            Ok(n) => deleted += n,
            Err(e) => {
                error!(topic = p.topic(), partition = p.id().0, error = %e, "retention failed")
            }
        }
    }
    deleted
}

/// One cleaner pass over every partition of every compacted topic.
fn clean_compacted(inner: &Inner) {
    let topics: Vec<Arc<Topic>> = read(&inner.topics).values().cloned().collect();
    for t in topics {
        if !t.config().cleanup_policy.compacts() {
            continue;
        }
        for p in t.partitions() {
            if let Err(e) = p.clean() {
                error!(topic = p.topic(), partition = p.id().0, error = %e, "cleaning failed");
            }
        }
    }
}

/// Sleeps `timeout` or until the log stops; returns whether it stopped.
fn wait_or_stop(inner: &Inner, timeout: Duration) -> bool {
    let stop = inner.stop.lock().unwrap_or_else(|p| p.into_inner());
    let (stop, _) = inner
        .wake
        .wait_timeout_while(stop, timeout, |stop| !*stop)
        .unwrap_or_else(|p| p.into_inner());
    *stop
}

fn cleaner_loop(inner: &Inner) {
    while !wait_or_stop(inner, inner.config.cleaner_interval) {
        clean_compacted(inner);
    }
}

fn maintenance_loop(inner: &Inner) {
    let mut last_retention: TimestampMs = inner.env.clock.now_ms();
    loop {
        {
            let stop = inner.stop.lock().unwrap_or_else(|p| p.into_inner());
            let (stop, _) = inner
                .wake
                .wait_timeout(stop, MAINTENANCE_TICK)
                .unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
        }
        let now = inner.env.clock.now_ms();
        for p in all_partitions(inner) {
            if let Err(e) = p.flush_if_due(now) {
                error!(topic = p.topic(), partition = p.id().0, error = %e, "interval flush failed");
            }
            if let Err(e) = p.checkpoint_recovery_point(Some(now)) {
                warn!(topic = p.topic(), partition = p.id().0, error = %e, "could not write the recovery point; recovery will treat more of the log as a possible torn tail");
            }
        }
        if now.saturating_sub(last_retention)
            >= inner.config.retention_check_interval.as_millis() as i64
        {
            last_retention = now;
            apply_retention(inner);
        }
    }
}
