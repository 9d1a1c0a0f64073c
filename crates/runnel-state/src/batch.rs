//! `WriteBatch`: puts, deletes and offset moves, applied by `Store::apply` as one
//! transaction, in the order they were added.

use crate::StoreError;
use crate::names::{check_sizes, check_table, check_topic};

/// A set of changes that commit together or not at all.
///
/// Building a batch cannot fail; `Store::apply` checks every name, size and offset before
/// it writes anything, so an invalid batch changes nothing. Several operations on one key
/// apply in order: the last one wins. A batch can be reused after [`WriteBatch::clear`],
/// which keeps its buffers.
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    /// Distinct table and scope names in first-use order. Operations refer to them by
    /// index, so a thousand puts into one table hold its name once.
    names: Vec<String>,
    /// Keys, values and topics back to back. Operations refer to them by span, so a batch
    /// costs a few growing buffers rather than two allocations per operation.
    bytes: Vec<u8>,
    /// The operations in the order they were added; `apply` replays them in this order.
    ops: Vec<Op>,
}

/// One operation, pointing into the batch's `names` and `bytes`.
#[derive(Debug, Clone, Copy)]
enum Op {
    Put {
        table: usize,
        key: Span,
        value: Span,
    },
    Delete {
        table: usize,
        key: Span,
    },
    SetOffset {
        scope: usize,
        topic: Span,
        partition: i32,
        next: i64,
    },
}

/// A range of `WriteBatch::bytes`.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: usize,
    len: usize,
}

/// One operation as `Store::apply` sees it: names and bytes resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OpRef<'a> {
    /// Insert or replace `key` in `table` (the index is that of `WriteBatch::names`).
    Put {
        table: usize,
        key: &'a [u8],
        value: &'a [u8],
    },
    /// Remove `key` from `table`, if present.
    Delete { table: usize, key: &'a [u8] },
    /// Record `next` as the next offset to read for (`scope`, `topic`, `partition`).
    SetOffset {
        scope: &'a str,
        topic: &'a str,
        partition: i32,
        next: i64,
    },
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Inserts `key` into `table` with `value`, replacing any value it had. The table is
    /// created if it does not exist.
    pub fn put(&mut self, table: &str, key: &[u8], value: &[u8]) {
        let table = self.intern(table);
        let key = self.push_bytes(key);
        let value = self.push_bytes(value);
        self.ops.push(Op::Put { table, key, value });
    }

    /// Removes `key` from `table`; nothing happens if it is absent.
    pub fn delete(&mut self, table: &str, key: &[u8]) {
        let table = self.intern(table);
        let key = self.push_bytes(key);
        self.ops.push(Op::Delete { table, key });
    }

    /// Records that `scope` (usually a table name) has applied everything before `next` in
    /// `topic`'s `partition`: `next` is the offset to read after a restart.
    pub fn set_offset(&mut self, scope: &str, topic: &str, partition: i32, next: i64) {
        let scope = self.intern(scope);
        let topic = self.push_bytes(topic.as_bytes());
        self.ops.push(Op::SetOffset {
            scope,
            topic,
            partition,
            next,
        });
    }

    /// How many operations the batch holds.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Empties the batch, keeping its buffers for the next one.
    pub fn clear(&mut self) {
        self.names.clear();
        self.bytes.clear();
        self.ops.clear();
    }

    /// The distinct table and scope names, indexed as in [`OpRef`].
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// The operations in order.
    pub(crate) fn ops(&self) -> impl Iterator<Item = OpRef<'_>> {
        self.ops.iter().map(|op| match *op {
            Op::Put { table, key, value } => OpRef::Put {
                table,
                key: self.slice(key),
                value: self.slice(value),
            },
            Op::Delete { table, key } => OpRef::Delete {
                table,
                key: self.slice(key),
            },
            Op::SetOffset {
                scope,
                topic,
                partition,
                next,
            } => OpRef::SetOffset {
                scope: &self.names[scope],
                topic: std::str::from_utf8(self.slice(topic))
                    .expect("topics are pushed from a &str"),
                partition,
                next,
            },
        })
    }

    /// Checks every name, size and offset, so that `apply` either writes all or nothing.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        for op in self.ops() {
            match op {
                OpRef::Put { table, key, value } => {
                    let table = &self.names[table];
                    check_table("table", table)?;
                    check_sizes(table, key, Some(value))?;
                }
                OpRef::Delete { table, key } => {
                    let table = &self.names[table];
                    check_table("table", table)?;
                    check_sizes(table, key, None)?;
                }
                OpRef::SetOffset {
                    scope,
                    topic,
                    partition,
                    next,
                } => {
                    check_table("scope", scope)?;
                    check_topic(topic)?;
                    if partition < 0 || next < 0 {
                        return Err(StoreError::InvalidOffset {
                            scope: scope.to_owned(),
                            topic: topic.to_owned(),
                            partition,
                            next,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    fn intern(&mut self, name: &str) -> usize {
        // Batches touch one or a few tables: a linear search from the most recent name
        // beats hashing.
        if let Some(index) = self.names.iter().rposition(|known| known == name) {
            return index;
        }
        self.names.push(name.to_owned());
        self.names.len() - 1
    }

    fn push_bytes(&mut self, bytes: &[u8]) -> Span {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        Span {
            start,
            len: bytes.len(),
        }
    }

    fn slice(&self, span: Span) -> &[u8] {
        &self.bytes[span.start..span.start + span.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_come_back_in_order_with_names_interned() {
        let mut batch = WriteBatch::new();
        batch.put("a", b"k1", b"v1");
        batch.set_offset("a", "topic", 3, 10);
        batch.delete("b", b"k2");
        batch.put("a", b"k1", b"v2");
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.names(), ["a", "b"]);
        let ops: Vec<String> = batch.ops().map(|op| format!("{op:?}")).collect();
        assert_eq!(
            ops,
            [
                r#"Put { table: 0, key: [107, 49], value: [118, 49] }"#,
                r#"SetOffset { scope: "a", topic: "topic", partition: 3, next: 10 }"#,
                r#"Delete { table: 1, key: [107, 50] }"#,
                r#"Put { table: 0, key: [107, 49], value: [118, 50] }"#,
            ]
        );
        batch.clear();
        assert!(batch.is_empty());
        assert!(batch.names().is_empty());
    }

    #[test]
    fn validate_names_the_offending_part() {
        let mut batch = WriteBatch::new();
        batch.put("__offsets", b"k", b"v");
        assert!(matches!(
            batch.validate(),
            Err(StoreError::InvalidName { kind: "table", .. })
        ));

        let mut batch = WriteBatch::new();
        batch.set_offset("s", "t", -1, 0);
        assert!(matches!(
            batch.validate(),
            Err(StoreError::InvalidOffset { .. })
        ));

        let mut batch = WriteBatch::new();
        batch.set_offset("s", "", 0, 0);
        assert!(matches!(
            batch.validate(),
            Err(StoreError::InvalidName { kind: "topic", .. })
        ));
    }
}
