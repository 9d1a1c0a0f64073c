//! `StoreError`: what can go wrong, with the store's path or the offending name in every
//! message.
//!
//! redb's own error types stay private (they ride along as a boxed `source`), so a redb
//! upgrade never changes this crate's public surface.

use std::path::PathBuf;

/// A boxed error from the storage engine, kept opaque on purpose (see the module doc).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything `Store` can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The file is locked by another `Store`, in this process or another one.
    #[error(
        "state store {path}: in use by another process (or already open in this one); \
         only one Store may hold the file at a time"
    )]
    InUse {
        /// The store's file.
        path: PathBuf,
    },

    /// The directory that should hold the file could not be created.
    #[error("state store {path}: cannot create its directory: {source}")]
    CreateDir {
        /// The store's file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },

    /// The storage engine failed: I/O, a corrupt file, a lost lock.
    #[error("state store {path}: {op}{}: {source}", on_table(table))]
    Storage {
        /// The store's file.
        path: PathBuf,
        /// What the store was doing ("open", "commit", "read", ...).
        op: &'static str,
        /// The user table involved, if one was.
        table: Option<String>,
        /// redb's error.
        #[source]
        source: BoxError,
    },

    /// A table or scope name breaks the naming rules.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// "table", "scope" or "topic".
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A `StoreConfig` setting is out of range.
    #[error("invalid store config: {field} {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A key or value is larger than the store accepts.
    #[error("{what} of {bytes} bytes for table {table:?} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The table it was meant for.
        table: String,
        /// "key" or "value".
        what: &'static str,
        /// Its size.
        bytes: usize,
        /// The limit it exceeds.
        max: usize,
    },

    /// A partition or offset is negative.
    #[error(
        "offset {next} for scope {scope:?}, topic {topic:?}, partition {partition}: \
         partitions and offsets must not be negative"
    )]
    InvalidOffset {
        /// The scope it was set for.
        scope: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The next offset to read.
        next: i64,
    },

    /// An earlier commit failed, so this `Store` refuses further writes.
    #[error(
        "state store {path}: refusing writes after a failed commit; \
         reopen the store to continue from what is on disk"
    )]
    Poisoned {
        /// The store's file.
        path: PathBuf,
    },

    /// A record in the offsets table does not decode: a bug, or a file from elsewhere.
    #[error("state store {path}: corrupt offset record: {detail}")]
    Corrupt {
        /// The store's file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

fn on_table(table: &Option<String>) -> String {
    match table {
        Some(name) => format!(" on table {name:?}"),
        None => String::new(),
    }
}

// Errors cross threads and outlive the store (habit 5).
const _: () = {
    const fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_error::<StoreError>();
};
