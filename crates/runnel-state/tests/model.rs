//! A model-based test: random batches of puts, deletes and offset moves (and the odd
//! clear) applied to the store and to a pair of `BTreeMap`s must read back the same.

mod common;

use std::collections::BTreeMap;

use common::TempDir;
use proptest::prelude::*;
use runnel_state::{Store, WriteBatch};

const TABLES: [&str; 2] = ["a", "b"];
const TOPICS: [&str; 2] = ["x", "y"];

#[derive(Debug, Clone)]
enum Op {
    Put {
        table: usize,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        table: usize,
        key: Vec<u8>,
    },
    SetOffset {
        scope: usize,
        topic: usize,
        partition: i32,
        next: i64,
    },
}

#[derive(Debug, Clone)]
enum Step {
    Apply(Vec<Op>),
    /// Clear table `n` and the scope of the same name.
    Clear(usize),
}

/// Keys from a small space so that batches hit the same keys again.
fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..4, 0..3)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..TABLES.len(), key(), prop::collection::vec(any::<u8>(), 0..16))
            .prop_map(|(table, key, value)| Op::Put { table, key, value }),
        2 => (0..TABLES.len(), key()).prop_map(|(table, key)| Op::Delete { table, key }),
        1 => (0..TABLES.len(), 0..TOPICS.len(), 0i32..3, 0i64..1_000)
            .prop_map(|(scope, topic, partition, next)| Op::SetOffset { scope, topic, partition, next }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        9 => prop::collection::vec(op(), 0..20).prop_map(Step::Apply),
        1 => (0..TABLES.len()).prop_map(Step::Clear),
    ]
}

#[derive(Default)]
struct Model {
    tables: [BTreeMap<Vec<u8>, Vec<u8>>; 2],
    offsets: [BTreeMap<(String, i32), i64>; 2],
}

impl Model {
    fn apply(&mut self, ops: &[Op], batch: &mut WriteBatch) {
        batch.clear();
        for op in ops {
            match op {
                Op::Put { table, key, value } => {
                    self.tables[*table].insert(key.clone(), value.clone());
                    batch.put(TABLES[*table], key, value);
                }
                Op::Delete { table, key } => {
                    self.tables[*table].remove(key);
                    batch.delete(TABLES[*table], key);
                }
                Op::SetOffset {
                    scope,
                    topic,
                    partition,
                    next,
                } => {
                    self.offsets[*scope].insert((TOPICS[*topic].to_owned(), *partition), *next);
                    batch.set_offset(TABLES[*scope], TOPICS[*topic], *partition, *next);
                }
            }
        }
    }

    fn check(&self, store: &Store) -> Result<(), TestCaseError> {
        for (n, name) in TABLES.iter().enumerate() {
            let entries: Vec<_> = self.tables[n].clone().into_iter().collect();
            prop_assert_eq!(&store.scan(name, None, usize::MAX).unwrap(), &entries);
            prop_assert_eq!(store.len(name).unwrap(), entries.len() as u64);
            for (key, value) in &entries {
                prop_assert_eq!(store.get(name, key).unwrap(), Some(value.clone()));
            }
            prop_assert_eq!(&store.offsets(name).unwrap(), &self.offsets[n]);
        }
        Ok(())
    }
}

proptest! {
    // Each batch costs an fsync: keep the case count modest.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_a_btreemap_model(steps in prop::collection::vec(step(), 1..12)) {
        let dir = TempDir::new("model");
        let path = dir.path().join("state.redb");
        let store = Store::open(&path).unwrap();
        let mut model = Model::default();
        let mut batch = WriteBatch::new();
        for step in &steps {
            match step {
                Step::Apply(ops) => {
                    model.apply(ops, &mut batch);
                    store.apply(&batch).unwrap();
                }
                Step::Clear(n) => {
                    model.tables[*n].clear();
                    model.offsets[*n].clear();
                    store.clear(TABLES[*n], TABLES[*n]).unwrap();
                }
            }
            model.check(&store)?;
        }
        // What was acknowledged is what a reopen finds.
        drop(store);
        let reopened = Store::open(&path).unwrap();
        model.check(&reopened)?;
    }
}
