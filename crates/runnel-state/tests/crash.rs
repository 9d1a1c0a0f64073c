//! Atomicity across a crash: a child process applies batches that each put a batch's keys
//! and move the offset, and is SIGKILLed at a random moment. After every kill the store
//! must hold exactly the batches before its stored offset: state and offset agree.
//!
//! The child is this test binary run again with `CHILD_ENV` set, filtered to
//! `child_applies_batches_until_killed`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::TempDir;
use runnel_state::{Store, WriteBatch};

/// Set in the child's environment to the store's path.
const CHILD_ENV: &str = "RUNNEL_STATE_CRASH_CHILD";
const CHILD_TEST: &str = "child_applies_batches_until_killed";
const TABLE: &str = "state";
const TOPIC: &str = "source";
/// Keys each batch puts.
const KEYS_PER_BATCH: u64 = 100;
/// Bytes in each value.
const VALUE_BYTES: usize = 100;
/// How many times the child is killed.
const KILLS: u32 = 5;
/// The longest the child runs before it is killed.
const RUN_MS_MAX: u64 = 2_000;
/// A child that outlives its kill by this much is a bug in the test.
const BATCHES_MAX: u64 = 1_000_000;

fn key(batch: u64, index: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&batch.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

fn value(batch: u64, index: u64) -> Vec<u8> {
    let seed = batch.wrapping_mul(31).wrapping_add(index);
    (0..VALUE_BYTES)
        .map(|i| (seed as usize + i) as u8)
        .collect()
}

/// The next batch to write: the stored offset, or 0 on a fresh store.
fn stored_offset(store: &Store) -> u64 {
    let offsets = store.offsets(TABLE).expect("read offsets");
    assert!(offsets.len() <= 1, "one source partition only: {offsets:?}");
    offsets
        .get(&(TOPIC.to_owned(), 0))
        .map_or(0, |&next| u64::try_from(next).expect("non-negative offset"))
}

#[test]
fn child_applies_batches_until_killed() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return; // Only the crash test runs this, in a child process.
    };
    let store = Store::open(&path).expect("child: open store");
    let mut batch = WriteBatch::new();
    // Resume where the state is, as a service would.
    for number in stored_offset(&store)..BATCHES_MAX {
        batch.clear();
        for index in 0..KEYS_PER_BATCH {
            batch.put(TABLE, &key(number, index), &value(number, index));
        }
        batch.put(TABLE, b"last", &number.to_be_bytes());
        let next = i64::try_from(number + 1).expect("small");
        batch.set_offset(TABLE, TOPIC, 0, next);
        store.apply(&batch).expect("child: apply");
    }
}

/// Checks that the store holds exactly the batches before its stored offset; returns it.
fn check_state_matches_offset(store: &Store) -> u64 {
    let next = stored_offset(store);
    let expected_len = next * KEYS_PER_BATCH + u64::from(next > 0);
    assert_eq!(store.len(TABLE).unwrap(), expected_len, "offset {next}");
    if next > 0 {
        let last = store
            .get(TABLE, b"last")
            .unwrap()
            .expect("last batch marker");
        assert_eq!(last, (next - 1).to_be_bytes(), "offset {next}");
    }
    // Every key of every batch before the offset, in order, with its value; nothing after.
    let mut from: Option<Vec<u8>> = None;
    let mut expected = (0..next).flat_map(|b| (0..KEYS_PER_BATCH).map(move |i| (b, i)));
    loop {
        let page = store.scan(TABLE, from.as_deref(), 1_000).unwrap();
        let Some((last_key, _)) = page.last() else {
            break;
        };
        let mut after = last_key.clone();
        after.push(0);
        from = Some(after);
        for (k, v) in page {
            if k == b"last" {
                continue;
            }
            let (b, i) = expected
                .next()
                .unwrap_or_else(|| panic!("key {k:?} beyond offset {next}"));
            assert_eq!(k, key(b, i), "offset {next}");
            assert_eq!(v, value(b, i), "offset {next}, batch {b}, key {i}");
        }
    }
    assert!(
        expected.next().is_none(),
        "keys missing below offset {next}"
    );
    next
}

/// A small xorshift generator: the kill times need to vary, not to be good randomness.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn sigkill_mid_batch_leaves_state_and_offsets_in_agreement() {
    let dir = TempDir::new("crash");
    let path = dir.path().join("state.redb");
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("seed {seed}");
    let exe = std::env::current_exe().unwrap();
    let mut progress = Vec::new();
    for kill in 0..KILLS {
        let run_ms = 100 + next_random(&mut seed) % (RUN_MS_MAX - 100);
        let mut child = Command::new(&exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let deadline = Instant::now() + Duration::from_millis(run_ms);
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).ok();
                panic!("kill {kill}: child exited early with {status}: {stderr}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().expect("SIGKILL child");
        child.wait().expect("reap child");

        let store = Store::open(&path).expect("reopen after kill");
        let next = check_state_matches_offset(&store);
        println!("kill {kill} after {run_ms} ms: offset {next}");
        progress.push(next);
    }
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "offsets went backwards: {progress:?}"
    );
    assert!(
        *progress.last().unwrap() > 0,
        "the child never committed a batch"
    );
}
