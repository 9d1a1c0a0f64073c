//! Issue 11, "the cleaner holds a file handle for every closed segment at once": a pass
//! over a compacted partition with many closed segments keeps at most the log's
//! open-file budget (`open_segment_files_max`) plus the one segment it is reading open.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use runnel_log::batch::build_batch;
use runnel_log::{
    CleanupPolicy, DirEntry, DirLock, Durability, Log, LogConfig, OpenMode, PartitionId,
    StdStorage, Storage, StorageFile, SystemClock, TopicConfig,
};

/// Live read handles on segment data files, and the most seen at once.
#[derive(Debug, Default)]
struct Counts {
    live: AtomicUsize,
    peak: AtomicUsize,
}

#[derive(Debug)]
struct Counted {
    inner: Arc<dyn StorageFile>,
    counts: Arc<Counts>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.counts.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl StorageFile for Counted {
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, pos)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

/// The real file system, counting read handles on `.log` files.
#[derive(Debug, Default)]
struct Counting {
    counts: Arc<Counts>,
}

impl Storage for Counting {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn StorageFile>> {
        let file = StdStorage.open(path, mode)?;
        if !matches!(mode, OpenMode::Read) || path.extension().is_none_or(|e| e != "log") {
            return Ok(file);
        }
        let live = self.counts.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.counts.peak.fetch_max(live, Ordering::SeqCst);
        Ok(Arc::new(Counted {
            inner: file,
            counts: self.counts.clone(),
        }))
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        StdStorage.create_dir_all(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<DirEntry>> {
        StdStorage.list_dir(path)
    }
    fn exists(&self, path: &Path) -> bool {
        StdStorage.exists(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdStorage.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        StdStorage.remove_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdStorage.rename(from, to)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        StdStorage.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        StdStorage.lock(path)
    }
}

#[test]
fn a_cleaner_pass_keeps_the_open_file_budget() {
    const BUDGET: usize = 4;
    let dir = std::env::temp_dir().join(format!("runnel-cleaner-handles-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = LogConfig::new(&dir);
    config.background = false;
    config.open_segment_files_max = BUDGET;
    config.topic_defaults = TopicConfig {
        segment_bytes: 1024,
        cleanup_policy: CleanupPolicy::Compact,
        durability: Durability::Never,
        retention_ms: None,
        ..TopicConfig::default()
    };
    let storage = Arc::new(Counting::default());
    let counts = storage.counts.clone();
    let log = Log::open_with(config, storage, Arc::new(SystemClock)).unwrap();
    log.create_topic("t", 1, &BTreeMap::new()).unwrap();
    let p = log.partition("t", PartitionId(0)).unwrap();
    // Ten keys written over and over: about 40 closed segments, each mostly superseded.
    for round in 0..400 {
        let key = format!("key-{}", round % 10);
        let value = format!("value-{round}-{}", "x".repeat(64));
        let batch = build_batch(&[(Some(key.as_bytes()), Some(value.as_bytes()))], 1_000);
        p.append(&batch).unwrap();
    }
    let segments = p.segment_count();
    assert!(segments > 4 * BUDGET, "only {segments} segments");

    counts
        .peak
        .store(counts.live.load(Ordering::SeqCst), Ordering::SeqCst);
    let stats = p.clean().unwrap();
    assert!(stats.segments_rewritten > BUDGET, "{stats:?}");
    let peak = counts.peak.load(Ordering::SeqCst);
    assert!(
        peak <= BUDGET + 1,
        "{peak} segment files open at once for {segments} segments (budget {BUDGET})"
    );
    drop(p);
    log.close().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
