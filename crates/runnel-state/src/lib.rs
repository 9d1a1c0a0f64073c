//! Runnel's local state store: tables of bytes, and the source offsets that built them,
//! changed together in one atomic, durable write.
//!
//! A service that keeps a table built from topics (a customer table from `customers`)
//! reads records, folds them into the table and records how far it has read. Putting the
//! state and the offsets in the same [`WriteBatch`] makes them agree after any crash: on
//! restart the service asks [`Store::offsets`] where to resume and finds the table exactly
//! as it was after applying everything before those offsets, no more and no less.
//!
//! ```
//! # fn main() -> Result<(), runnel_state::StoreError> {
//! # let dir = std::env::temp_dir().join(format!("runnel-state-doc-{}", std::process::id()));
//! use runnel_state::{Store, WriteBatch};
//!
//! let store = Store::open(dir.join("customers.redb"))?;
//! let mut batch = WriteBatch::new();
//! batch.put("customers", b"c-17", br#"{"name":"Ada"}"#);
//! batch.set_offset("customers", "customer-events", 0, 43); // read up to offset 42
//! store.apply(&batch)?;
//!
//! assert_eq!(store.get("customers", b"c-17")?.as_deref(), Some(&br#"{"name":"Ada"}"#[..]));
//! assert_eq!(store.offsets("customers")?[&("customer-events".to_owned(), 0)], 43);
//! # drop(store); std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```
//!
//! # Boundary
//!
//! Bytes in, bytes out. This crate knows nothing of Kafka, transports, serde or the
//! services runtime: keys and values are opaque byte strings ordered bytewise, an offset
//! is a (scope, topic, partition) → next-offset entry and nothing more. Typed tables,
//! codecs and the decision of what to store belong to the services crate. The storage
//! engine (redb) stays private: no redb type appears in the public API.
//!
//! # Guarantees
//!
//! - [`Store::apply`] is one redb write transaction: all of a batch or none of it, on disk
//!   (fsynced) when it returns. Operations on one key apply in order; the last wins.
//! - Reads run on a snapshot of the last commit and never see part of a batch.
//! - [`Store::clear`] drops a table and its scope's offsets in one transaction.
//! - After a failed commit the store refuses writes ([`StoreError::Poisoned`]); reopening
//!   recovers the last commit that reached the disk.
//!
//! # Limits
//!
//! - One process at a time: redb locks the file, and a second [`Store::open`] fails with
//!   [`StoreError::InUse`]. Within a process, share one `Store` (it is `Send + Sync`).
//! - One writer at a time; concurrent `apply` calls queue. Each `apply` costs an fsync,
//!   so throughput comes from large batches, not many small ones.
//! - Table and scope names: 1 to [`TABLE_NAME_BYTES_MAX`] bytes, not starting with `__`
//!   (reserved for the store's own offsets table). Topics: 1 to [`TOPIC_NAME_BYTES_MAX`]
//!   bytes. Keys up to [`KEY_BYTES_MAX`], values up to [`VALUE_BYTES_MAX`]. Partitions and
//!   offsets are non-negative.
//! - Reads copy values out (`Vec<u8>`); there is no zero-copy read.
//! - Opening after a crash repairs the file, in time proportional to its size.
//! - No range deletes, no secondary indexes, no iteration over one consistent snapshot
//!   across several calls.
//!
//! # Why redb
//!
//! Pure Rust (no C++ build, unlike RocksDB), one file, copy-on-write B-trees with
//! checksummed commits, so a torn write can only lose the commit in flight, and snapshot
//! readers that do not block the writer. A table's length is kept in its root, so
//! [`Store::len`] is constant time. The price is write amplification: a commit copies
//! every B-tree page it touches, so upserts of keys scattered over a large table cost a
//! page each. Larger batches amortise it.
//!
//! # Why not fjall (measured 2026-12-01)
//!
//! fjall, an LSM tree, was tried behind this same API and passed every test here,
//! including the SIGKILL and model tests. It was not adopted because it did not win by the
//! margin a second on-disk format and a directory of files would have to earn (3x on
//! scattered keys). `benches/store.rs` (`cargo bench -p runnel-state --bench store`):
//! 300 batches of 1,000 100-byte upserts, both engines interleaved, four rounds each on the 2-core machine (under a load average of
//! about 3.5 from other builds, so rounds vary):
//!
//! | upserts per second                  | redb 4.1          | fjall 2.11        |
//! |-------------------------------------|-------------------|-------------------|
//! | scattered over 150,000 keys         | 37k to 54k (~43k) | 72k to 139k (~104k) |
//! | 10,000 keys (the usual table shape) | 104k to 154k (~135k) | 88k to 140k (~127k) |
//!
//! fjall was 1.3x to 3.1x faster on scattered keys (about 2.4x at the median) and no
//! faster on a small key space, which stays in redb's cache. Its time went to the memtable
//! skip list: nearly half of it in lookups and inserts. A third of it bought an exact
//! [`Store::len`]: an LSM tree cannot count its keys, so the fjall store kept a count per
//! table and had to ask, for each key of a batch, whether it was new. With that count
//! dropped (`len` would become a full scan), fjall reached about 120k on scattered keys.
//! One fsync of a batch costs about 2.8 ms on this disk, so neither engine is fsync-bound
//! at 1,000 upserts per batch; larger batches help both.
//!
//! Other costs of fjall, found on the way: every fjall 3 release not yanked needs Rust
//! 1.90, so only 2.11 fits the workspace's 1.89 (16 s to build from scratch, debug, lz4
//! off); fjall refuses empty keys (every key then needs a prefix byte, and
//! [`KEY_BYTES_MAX`] drops to 65,534); it does not lock its directory (the store had to
//! `flock` a file of its own); a table needs a partition of its own for `clear` to stay
//! one atomic batch, with a catalogue that maps names to partitions; a crash replays up to
//! 512 MiB of journal on open; and closing a keyspace waits for its background threads.
//! Worth another look if scattered upserts into large tables become the bottleneck, or
//! once the workspace moves to Rust 1.90 and fjall 3.

mod batch;
mod error;
mod names;
mod offsets;
mod store;

pub use batch::WriteBatch;
pub use error::{BoxError, StoreError};
pub use names::{KEY_BYTES_MAX, TABLE_NAME_BYTES_MAX, TOPIC_NAME_BYTES_MAX, VALUE_BYTES_MAX};
pub use store::{Entry, Store, StoreConfig};
