//! `Store`: the redb file, its write path (`apply`, `clear`) and its read path.
//!
//! Concurrency and visibility: `Store` is `Send + Sync`. Writes (`apply`, `clear`) are
//! serialised by redb's single write transaction: a second writer waits for the first.
//! Every read runs in its own redb read transaction, a snapshot of the last commit, so it
//! never sees part of a batch and never blocks a writer. Two reads made one after the
//! other may see different commits; `scan` pages are therefore not one snapshot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{
    Database, DatabaseError, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableDefinition, TableError, TableHandle, WriteTransaction,
};
use tracing::{debug, warn};

use crate::batch::OpRef;
use crate::names::{RESERVED_PREFIX, check_table};
use crate::offsets::{self, OFFSETS_TABLE};
use crate::{StoreError, WriteBatch};

/// Every table, user or internal, maps bytes to bytes.
type Bytes = &'static [u8];
type WriteTable<'txn> = Table<'txn, Bytes, Bytes>;

fn definition(name: &str) -> TableDefinition<'_, Bytes, Bytes> {
    TableDefinition::new(name)
}

/// A key and its value, as `scan` returns them.
pub type Entry = (Vec<u8>, Vec<u8>);

/// How a store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Upper bound of redb's page cache, in bytes. Memory is taken as pages are touched, up
    /// to this. redb's own default is 1 GiB, too much for one of several services sharing
    /// a small machine; tables much larger than the cache read from the page cache of the
    /// operating system instead.
    pub cache_bytes_max: usize,
}

impl StoreConfig {
    /// The smallest cache accepted: below this redb thrashes on its own metadata.
    pub const CACHE_BYTES_MIN: usize = 1024 * 1024;

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.cache_bytes_max < Self::CACHE_BYTES_MIN {
            return Err(StoreError::InvalidConfig {
                field: "cache_bytes_max",
                reason: "must be at least 1 MiB",
            });
        }
        Ok(())
    }
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            cache_bytes_max: 64 * 1024 * 1024,
        }
    }
}

/// Tables of bytes and the offsets that built them, in one redb file.
pub struct Store {
    /// The redb database: one file, one write transaction at a time, snapshot readers.
    db: Database,
    /// The file, named in every error and log line.
    path: PathBuf,
    /// Set when a commit failed. The outcome of that commit on disk is unknown, so the
    /// store stops writing rather than pretend (a reopen recovers what the file holds).
    poisoned: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("poisoned", &self.poisoned.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store at `path` with the default [`StoreConfig`], creating the file and
    /// its parent directories if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        Store::open_with(path, &StoreConfig::default())
    }

    /// Opens the store at `path`, creating the file and its parent directories if needed.
    ///
    /// After a crash, opening repairs the file (redb walks it to rebuild its allocator
    /// state), which takes time proportional to the file's size. Fails with
    /// [`StoreError::InUse`] while another `Store` holds the file.
    pub fn open_with(path: impl AsRef<Path>, config: &StoreConfig) -> Result<Store, StoreError> {
        config.validate()?;
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: path.clone(),
                source,
            })?;
        }
        // redb takes an exclusive `flock` on the file; a second open, from this process or
        // another, gets `DatabaseAlreadyOpen` at once rather than waiting.
        let db = Database::builder()
            .set_cache_size(config.cache_bytes_max)
            .create(&path)
            .map_err(|error| match error {
                DatabaseError::DatabaseAlreadyOpen => StoreError::InUse { path: path.clone() },
                other => storage_error(&path, "open", None, other),
            })?;
        debug!(path = %path.display(), "state store opened");
        Ok(Store {
            db,
            path,
            poisoned: AtomicBool::new(false),
        })
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies `batch` in one write transaction: every operation in order, or none. When
    /// this returns `Ok` the batch is on disk (redb fsyncs on commit).
    ///
    /// An invalid batch (a bad name, an oversized key, a negative offset) is refused before
    /// anything is written. An empty batch does nothing and costs no fsync.
    pub fn apply(&self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.check_writable()?;
        batch.validate()?;
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write()?;
        self.write_ops(&txn, batch)?;
        self.commit(txn)
    }

    /// Drops `table`'s data and every offset of `scope` in one transaction, so the table
    /// can be rebuilt from the start of its topics.
    pub fn clear(&self, table: &str, scope: &str) -> Result<(), StoreError> {
        self.check_writable()?;
        check_table("table", table)?;
        check_table("scope", scope)?;
        let txn = self.begin_write()?;
        txn.delete_table(definition(table))
            .map_err(|e| self.error("clear", Some(table), e))?;
        {
            let mut table = txn
                .open_table(definition(OFFSETS_TABLE))
                .map_err(|e| self.error("clear offsets", None, e))?;
            let prefix = scope_prefix(scope);
            let mut keys = Vec::new();
            for entry in table
                .range(prefix.as_slice()..)
                .map_err(|e| self.error("clear offsets", None, e))?
            {
                let (key, _) = entry.map_err(|e| self.error("clear offsets", None, e))?;
                if !key.value().starts_with(&prefix) {
                    break;
                }
                keys.push(key.value().to_vec());
            }
            for key in keys {
                table
                    .remove(key.as_slice())
                    .map_err(|e| self.error("clear offsets", None, e))?;
            }
        }
        self.commit(txn)?;
        debug!(path = %self.path.display(), table, scope, "state table cleared");
        Ok(())
    }

    /// The value of `key` in `table`; `None` if either is absent.
    pub fn get(&self, table: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        check_table("table", table)?;
        let value = self.read(table, "get", |handle| {
            let value = handle
                .get(key)
                .map_err(|e| self.error("get", Some(table), e))?;
            Ok(value.map(|guard| guard.value().to_vec()))
        })?;
        Ok(value.flatten())
    }

    /// Up to `limit` entries of `table` in key order (bytewise), starting at `from`
    /// (inclusive) or at the first key. To read the next page, pass the last key returned
    /// with a `0` byte appended: the smallest key after it.
    pub fn scan(
        &self,
        table: &str,
        from: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        check_table("table", table)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let entries = self.read(table, "scan", |handle| {
            let range = match from {
                Some(from) => handle.range(from..),
                None => handle.range::<&[u8]>(..),
            }
            .map_err(|e| self.error("scan", Some(table), e))?;
            let mut entries = Vec::new();
            for entry in range.take(limit) {
                let (key, value) = entry.map_err(|e| self.error("scan", Some(table), e))?;
                entries.push((key.value().to_vec(), value.value().to_vec()));
            }
            Ok(entries)
        })?;
        Ok(entries.unwrap_or_default())
    }

    /// How many entries `table` holds (0 if it does not exist). Constant time.
    pub fn len(&self, table: &str) -> Result<u64, StoreError> {
        check_table("table", table)?;
        let len = self.read(table, "len", |handle| {
            handle.len().map_err(|e| self.error("len", Some(table), e))
        })?;
        Ok(len.unwrap_or(0))
    }

    /// Every offset recorded for `scope`: (topic, partition) to the next offset to read.
    pub fn offsets(&self, scope: &str) -> Result<BTreeMap<(String, i32), i64>, StoreError> {
        check_table("scope", scope)?;
        let prefix = scope_prefix(scope);
        let offsets =
            self.read(OFFSETS_TABLE, "read offsets", |handle| {
                let fail = |e| self.error("read offsets", None, e);
                let mut offsets = BTreeMap::new();
                for entry in handle.range(prefix.as_slice()..).map_err(fail)? {
                    let (key, value) = entry.map_err(fail)?;
                    let (key, value) = (key.value(), value.value());
                    if !key.starts_with(&prefix) {
                        break;
                    }
                    let (topic, partition, next) = offsets::decode(prefix.len(), key, value)
                        .map_err(|detail| StoreError::Corrupt {
                            path: self.path.clone(),
                            detail: format!("scope {scope:?}: {detail}"),
                        })?;
                    offsets.insert((topic, partition), next);
                }
                Ok(offsets)
            })?;
        Ok(offsets.unwrap_or_default())
    }

    /// The user tables, sorted. A table exists once a batch has put or deleted in it,
    /// until it is cleared.
    pub fn tables(&self) -> Result<Vec<String>, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.error("list tables", None, e))?;
        let mut names: Vec<String> = txn
            .list_tables()
            .map_err(|e| self.error("list tables", None, e))?
            .map(|handle| handle.name().to_owned())
            .filter(|name| !name.starts_with(RESERVED_PREFIX))
            .collect();
        names.sort_unstable();
        Ok(names)
    }

    fn write_ops(&self, txn: &WriteTransaction, batch: &WriteBatch) -> Result<(), StoreError> {
        let names = batch.names();
        // Each table is opened once per batch; redb allows many open at a time, one handle
        // per name.
        let mut tables: Vec<Option<WriteTable<'_>>> = names.iter().map(|_| None).collect();
        let mut offsets_table: Option<WriteTable<'_>> = None;
        let mut key = Vec::new();
        for op in batch.ops() {
            match op {
                OpRef::Put { table, key, value } => {
                    let name = names[table].as_str();
                    self.open_once(txn, &mut tables[table], name)?
                        .insert(key, value)
                        .map_err(|e| self.error("put", Some(name), e))?;
                }
                OpRef::Delete { table, key } => {
                    let name = names[table].as_str();
                    self.open_once(txn, &mut tables[table], name)?
                        .remove(key)
                        .map_err(|e| self.error("delete", Some(name), e))?;
                }
                OpRef::SetOffset {
                    scope,
                    topic,
                    partition,
                    next,
                } => {
                    offsets::encode_key(&mut key, scope, topic, partition);
                    self.open_once(txn, &mut offsets_table, OFFSETS_TABLE)?
                        .insert(key.as_slice(), offsets::encode_value(next).as_slice())
                        .map_err(|e| self.error("set offset", None, e))?;
                }
            }
        }
        Ok(())
    }

    fn open_once<'s, 'txn>(
        &self,
        txn: &'txn WriteTransaction,
        slot: &'s mut Option<WriteTable<'txn>>,
        name: &str,
    ) -> Result<&'s mut WriteTable<'txn>, StoreError> {
        match slot {
            Some(table) => Ok(table),
            None => {
                let table = txn
                    .open_table(definition(name))
                    .map_err(|e| self.error("open table", Some(name), e))?;
                Ok(slot.insert(table))
            }
        }
    }

    /// Runs `read` on `table` in a fresh read transaction; `None` if the table does not
    /// exist yet.
    fn read<R>(
        &self,
        table: &str,
        op: &'static str,
        read: impl FnOnce(&ReadOnlyTable<Bytes, Bytes>) -> Result<R, StoreError>,
    ) -> Result<Option<R>, StoreError> {
        let user_table = (table != OFFSETS_TABLE).then_some(table);
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.error(op, user_table, e))?;
        match txn.open_table(definition(table)) {
            Ok(handle) => read(&handle).map(Some),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(self.error(op, user_table, e)),
        }
    }

    fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        // Durability stays at redb's default, `Immediate`: commit returns after the fsync.
        self.db
            .begin_write()
            .map_err(|e| self.error("begin write", None, e))
    }

    fn commit(&self, txn: WriteTransaction) -> Result<(), StoreError> {
        txn.commit().map_err(|error| {
            self.poisoned.store(true, Ordering::Release);
            warn!(path = %self.path.display(), %error, "state store commit failed; refusing further writes");
            self.error("commit", None, error)
        })
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    fn error(
        &self,
        op: &'static str,
        table: Option<&str>,
        error: impl Into<redb::Error>,
    ) -> StoreError {
        storage_error(&self.path, op, table, error)
    }
}

fn storage_error(
    path: &Path,
    op: &'static str,
    table: Option<&str>,
    error: impl Into<redb::Error>,
) -> StoreError {
    StoreError::Storage {
        path: path.to_path_buf(),
        op,
        table: table.map(str::to_owned),
        source: Box::new(error.into()),
    }
}

fn scope_prefix(scope: &str) -> Vec<u8> {
    let mut prefix = Vec::new();
    offsets::encode_scope(&mut prefix, scope);
    prefix
}

// Services share one store between their handlers' threads.
const _: () = {
    const fn assert_shared<T: Send + Sync>() {}
    assert_shared::<Store>();
};

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;

    use super::*;

    /// An in-memory file whose fsync can be made to fail.
    #[derive(Debug)]
    struct FailingSync {
        inner: InMemoryBackend,
        fail: Arc<AtomicBool>,
    }

    impl StorageBackend for FailingSync {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            if self.fail.load(Ordering::Relaxed) {
                return Err(std::io::Error::other("injected fsync failure"));
            }
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.inner.write(offset, data)
        }
    }

    #[test]
    fn a_failed_fsync_poisons_the_store() {
        let fail = Arc::new(AtomicBool::new(false));
        let backend = FailingSync {
            inner: InMemoryBackend::new(),
            fail: Arc::clone(&fail),
        };
        let store = Store {
            db: Database::builder().create_with_backend(backend).unwrap(),
            path: PathBuf::from("memory"),
            poisoned: AtomicBool::new(false),
        };
        let mut batch = WriteBatch::new();
        batch.put("t", b"k", b"v1");
        store.apply(&batch).unwrap();

        fail.store(true, Ordering::Relaxed);
        batch.clear();
        batch.put("t", b"k", b"v2");
        let err = store.apply(&batch).unwrap_err();
        assert!(
            matches!(err, StoreError::Storage { op: "commit", .. }),
            "{err}"
        );

        // Even once the disk recovers, this store refuses writes; reads still work.
        fail.store(false, Ordering::Relaxed);
        assert!(matches!(
            store.apply(&batch),
            Err(StoreError::Poisoned { .. })
        ));
        assert!(matches!(
            store.clear("t", "t"),
            Err(StoreError::Poisoned { .. })
        ));
        assert!(store.len("t").is_ok());
    }
}
