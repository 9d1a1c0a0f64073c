//! How many 100-byte upserts per second `apply` reaches with batches of 1,000, for two
//! shapes of table. It prints figures and asserts nothing about time:
//!
//! ```text
//! cargo bench -p runnel-state --bench store
//! ```

use std::time::Instant;

use runnel_state::{Store, WriteBatch};

const BATCH_OPS: u64 = 1_000;
const BATCHES: u64 = 300;
const VALUE_BYTES: usize = 100;

/// Applies `BATCHES` batches of `BATCH_OPS` upserts whose keys are scattered over `keys`
/// distinct keys, as a hash-partitioned topic would spread them, and prints the rate.
fn measure(label: &str, keys: u64) {
    let dir =
        std::env::temp_dir().join(format!("runnel-state-bench-{}-{keys}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Store::open(dir.join("state.redb")).unwrap();
    let value = [0x42u8; VALUE_BYTES];
    let mut batch = WriteBatch::new();
    let started = Instant::now();
    for number in 0..BATCHES {
        batch.clear();
        for i in 0..BATCH_OPS {
            let key = ((number * BATCH_OPS + i) * 7_919) % keys;
            batch.put("table", &key.to_be_bytes(), &value);
        }
        batch.set_offset("table", "topic", 0, i64::try_from(number + 1).unwrap());
        store.apply(&batch).unwrap();
    }
    let elapsed = started.elapsed();
    let upserts = BATCHES * BATCH_OPS;
    println!(
        "{label}: {upserts} upserts of {VALUE_BYTES} bytes in batches of {BATCH_OPS}: \
         {elapsed:.2?}, {:.0} upserts/s, {:.0} batches/s; {} distinct keys",
        upserts as f64 / elapsed.as_secs_f64(),
        BATCHES as f64 / elapsed.as_secs_f64(),
        store.len("table").unwrap(),
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // A large table: the second half of the run mostly replaces values written in the
    // first.
    measure("scattered, 150,000 keys", 150_000);
    // The usual table shape: a few thousand entities, each updated again and again.
    measure("small key space, 10,000 keys", 10_000);
}
