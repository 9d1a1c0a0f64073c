//! The store's behaviour through its public API: round trips, batch order, scans, offsets,
//! clearing, names and the file lock.

mod common;

use std::collections::BTreeMap;

use common::TempDir;
use runnel_state::{Store, StoreConfig, StoreError, TABLE_NAME_BYTES_MAX, WriteBatch};

fn open(dir: &TempDir) -> Store {
    Store::open(dir.path().join("state.redb")).expect("open store")
}

fn apply(store: &Store, fill: impl FnOnce(&mut WriteBatch)) {
    let mut batch = WriteBatch::new();
    fill(&mut batch);
    store.apply(&batch).expect("apply");
}

#[test]
fn values_round_trip_and_survive_a_reopen() {
    let dir = TempDir::new("round-trip");
    let store = open(&dir);
    apply(&store, |b| {
        b.put("t", b"k1", b"v1");
        b.put("t", b"", b"empty key");
        b.put("t", b"k2", b"");
        b.put("u", b"k1", b"other table");
    });
    assert_eq!(store.get("t", b"k1").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(store.get("t", b"").unwrap(), Some(b"empty key".to_vec()));
    assert_eq!(store.get("t", b"k2").unwrap(), Some(Vec::new()));
    assert_eq!(
        store.get("u", b"k1").unwrap(),
        Some(b"other table".to_vec())
    );
    assert_eq!(store.get("t", b"absent").unwrap(), None);

    drop(store);
    let store = open(&dir);
    assert_eq!(store.get("t", b"k1").unwrap(), Some(b"v1".to_vec()));
    assert_eq!(store.len("t").unwrap(), 3);
}

#[test]
fn missing_tables_read_as_empty() {
    let dir = TempDir::new("missing");
    let store = open(&dir);
    assert_eq!(store.get("nope", b"k").unwrap(), None);
    assert_eq!(store.scan("nope", None, 10).unwrap(), Vec::new());
    assert_eq!(store.len("nope").unwrap(), 0);
    assert_eq!(store.offsets("nope").unwrap(), BTreeMap::new());
    assert_eq!(store.tables().unwrap(), Vec::<String>::new());
}

#[test]
fn last_write_wins_inside_a_batch() {
    let dir = TempDir::new("last-wins");
    let store = open(&dir);
    apply(&store, |b| {
        b.put("t", b"a", b"1");
        b.put("t", b"a", b"2");
        b.put("t", b"b", b"1");
        b.delete("t", b"b");
        b.delete("t", b"c");
        b.put("t", b"c", b"3");
        b.set_offset("t", "topic", 0, 5);
        b.set_offset("t", "topic", 0, 7);
    });
    assert_eq!(store.get("t", b"a").unwrap(), Some(b"2".to_vec()));
    assert_eq!(store.get("t", b"b").unwrap(), None);
    assert_eq!(store.get("t", b"c").unwrap(), Some(b"3".to_vec()));
    assert_eq!(store.offsets("t").unwrap()[&("topic".to_owned(), 0)], 7);
}

#[test]
fn delete_removes_and_tolerates_absent_keys() {
    let dir = TempDir::new("delete");
    let store = open(&dir);
    apply(&store, |b| {
        b.put("t", b"a", b"1");
        b.put("t", b"b", b"2");
    });
    apply(&store, |b| {
        b.delete("t", b"a");
        b.delete("t", b"never-there");
    });
    assert_eq!(store.get("t", b"a").unwrap(), None);
    assert_eq!(store.len("t").unwrap(), 1);
}

#[test]
fn scan_is_in_bytewise_key_order_and_pages() {
    let dir = TempDir::new("scan");
    let store = open(&dir);
    let keys: Vec<Vec<u8>> = vec![
        b"b".to_vec(),
        b"a".to_vec(),
        b"ab".to_vec(),
        vec![0xff],
        vec![0x00],
        b"a\0".to_vec(),
    ];
    apply(&store, |b| {
        for key in &keys {
            b.put("t", key, key);
        }
    });
    let mut sorted = keys.clone();
    sorted.sort();

    let all = store.scan("t", None, usize::MAX).unwrap();
    assert_eq!(
        all.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        sorted
    );
    assert!(all.iter().all(|(k, v)| k == v));

    // Page by two, each page starting just after the last key of the previous one.
    let mut paged = Vec::new();
    let mut from: Option<Vec<u8>> = None;
    loop {
        let page = store.scan("t", from.as_deref(), 2).unwrap();
        assert!(page.len() <= 2);
        let Some((last, _)) = page.last() else { break };
        let mut next = last.clone();
        next.push(0);
        from = Some(next);
        paged.extend(page.into_iter().map(|(k, _)| k));
    }
    assert_eq!(paged, sorted);

    assert_eq!(store.scan("t", Some(b"ab"), 1).unwrap()[0].0, b"ab"); // inclusive
    assert_eq!(store.scan("t", Some(b"aa"), 1).unwrap()[0].0, b"ab");
    assert!(store.scan("t", Some(&[0xff, 0]), 10).unwrap().is_empty());
    assert!(store.scan("t", None, 0).unwrap().is_empty());
}

#[test]
fn len_counts_entries() {
    let dir = TempDir::new("len");
    let store = open(&dir);
    apply(&store, |b| {
        for i in 0u32..100 {
            b.put("t", &i.to_be_bytes(), b"v");
        }
        b.put("t", &0u32.to_be_bytes(), b"replaced");
    });
    assert_eq!(store.len("t").unwrap(), 100);
    apply(&store, |b| b.delete("t", &7u32.to_be_bytes()));
    assert_eq!(store.len("t").unwrap(), 99);
}

#[test]
fn offsets_are_kept_per_scope() {
    let dir = TempDir::new("offsets");
    let store = open(&dir);
    apply(&store, |b| {
        b.set_offset("a", "orders", 0, 10);
        b.set_offset("a", "orders", 1, 11);
        b.set_offset("a", "customers", 0, 3);
        b.set_offset("ab", "orders", 0, 99);
        b.set_offset("b", "orders", 0, 1);
    });
    let expected: BTreeMap<(String, i32), i64> = [
        (("customers".to_owned(), 0), 3),
        (("orders".to_owned(), 0), 10),
        (("orders".to_owned(), 1), 11),
    ]
    .into();
    assert_eq!(store.offsets("a").unwrap(), expected);
    assert_eq!(store.offsets("ab").unwrap().len(), 1);
    assert_eq!(store.offsets("b").unwrap()[&("orders".to_owned(), 0)], 1);
    assert!(store.offsets("c").unwrap().is_empty());
    // Offsets do not show up as a table.
    assert_eq!(store.tables().unwrap(), Vec::<String>::new());
}

#[test]
fn clear_drops_a_table_and_its_scope_only() {
    let dir = TempDir::new("clear");
    let store = open(&dir);
    apply(&store, |b| {
        b.put("a", b"k", b"v");
        b.put("ab", b"k", b"v");
        b.set_offset("a", "orders", 0, 10);
        b.set_offset("ab", "orders", 0, 20);
    });
    assert_eq!(store.tables().unwrap(), ["a", "ab"]);

    store.clear("a", "a").unwrap();
    assert_eq!(store.get("a", b"k").unwrap(), None);
    assert_eq!(store.len("a").unwrap(), 0);
    assert!(store.offsets("a").unwrap().is_empty());
    assert_eq!(store.tables().unwrap(), ["ab"]);
    assert_eq!(store.get("ab", b"k").unwrap(), Some(b"v".to_vec()));
    assert_eq!(store.offsets("ab").unwrap().len(), 1);

    // Clearing what is not there is fine, and a cleared table can be rebuilt.
    store.clear("never", "never").unwrap();
    apply(&store, |b| b.put("a", b"k2", b"v2"));
    assert_eq!(
        store.scan("a", None, 10).unwrap(),
        [(b"k2".to_vec(), b"v2".to_vec())]
    );
}

#[test]
fn invalid_names_are_refused_and_change_nothing() {
    let dir = TempDir::new("names");
    let store = open(&dir);
    let long = "x".repeat(TABLE_NAME_BYTES_MAX + 1);
    for bad in ["", "__offsets", "__mine", long.as_str()] {
        let mut batch = WriteBatch::new();
        batch.put("good", b"k", b"v");
        batch.put(bad, b"k", b"v");
        let err = store.apply(&batch).unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidName { kind: "table", .. }),
            "{err}"
        );
        assert!(matches!(
            store.get(bad, b"k"),
            Err(StoreError::InvalidName { .. })
        ));
        assert!(matches!(
            store.offsets(bad),
            Err(StoreError::InvalidName { .. })
        ));
        assert!(matches!(
            store.clear(bad, "good"),
            Err(StoreError::InvalidName { .. })
        ));
    }
    assert_eq!(
        store.get("good", b"k").unwrap(),
        None,
        "a refused batch writes nothing"
    );

    let mut batch = WriteBatch::new();
    batch.set_offset("s", "t", 0, -1);
    let err = store.apply(&batch).unwrap_err();
    assert!(matches!(err, StoreError::InvalidOffset { .. }), "{err}");
}

#[test]
fn oversized_values_are_refused() {
    let dir = TempDir::new("too-large");
    let store = open(&dir);
    let mut batch = WriteBatch::new();
    batch.put("t", b"k", &vec![0; runnel_state::VALUE_BYTES_MAX + 1]);
    let err = store.apply(&batch).unwrap_err();
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
}

#[test]
fn a_second_open_says_the_store_is_in_use() {
    let dir = TempDir::new("in-use");
    let path = dir.path().join("state.redb");
    let store = Store::open(&path).unwrap();
    let err = Store::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::InUse { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("in use by another process"), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    drop(store);
    Store::open(&path).expect("reopens once the first store is dropped");
}

#[test]
fn open_creates_parent_directories() {
    let dir = TempDir::new("parents");
    let path = dir.path().join("a/b/c/state.redb");
    let store = Store::open(&path).unwrap();
    assert_eq!(store.path(), path);
    assert!(path.is_file());
}

#[test]
fn open_rejects_a_file_that_is_not_a_store() {
    let dir = TempDir::new("not-a-store");
    let path = dir.path().join("state.redb");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Store::open(&path).unwrap_err();
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(
        matches!(err, StoreError::Storage { op: "open", .. }),
        "{message}"
    );
}

#[test]
fn a_cleared_table_stays_cleared_after_a_reopen() {
    let dir = TempDir::new("clear-reopen");
    let store = open(&dir);
    apply(&store, |b| {
        b.put("a", b"k", b"v");
        b.put("b", b"k", b"v");
        b.set_offset("a", "orders", 0, 10);
    });
    store.clear("a", "a").unwrap();
    apply(&store, |b| b.put("a", b"k2", b"v2"));
    drop(store);

    let store = open(&dir);
    assert_eq!(store.tables().unwrap(), ["a", "b"]);
    assert_eq!(
        store.scan("a", None, 10).unwrap(),
        [(b"k2".to_vec(), b"v2".to_vec())]
    );
    assert_eq!(store.len("a").unwrap(), 1);
    assert!(store.offsets("a").unwrap().is_empty());
    assert_eq!(store.get("b", b"k").unwrap(), Some(b"v".to_vec()));
}

#[test]
fn keys_of_the_largest_size_are_stored() {
    let dir = TempDir::new("large-key");
    let store = open(&dir);
    let key = vec![7; runnel_state::KEY_BYTES_MAX];
    apply(&store, |b| b.put("t", &key, b"v"));
    assert_eq!(store.get("t", &key).unwrap(), Some(b"v".to_vec()));
    let mut batch = WriteBatch::new();
    batch.put("t", &[7; runnel_state::KEY_BYTES_MAX + 1], b"v");
    assert!(matches!(
        store.apply(&batch),
        Err(StoreError::TooLarge { what: "key", .. })
    ));
}

#[test]
fn config_is_validated() {
    let config = StoreConfig { cache_bytes_max: 1 };
    assert!(matches!(
        config.validate(),
        Err(StoreError::InvalidConfig { .. })
    ));
    assert!(StoreConfig::default().validate().is_ok());
}

#[test]
fn empty_batches_are_free() {
    let dir = TempDir::new("empty");
    let store = open(&dir);
    store.apply(&WriteBatch::new()).unwrap();
    assert!(store.tables().unwrap().is_empty());
}
