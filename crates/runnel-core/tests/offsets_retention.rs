//! `offsets.retention.minutes` (issue 11, "groups that are never forgotten"): expired
//! offsets are deleted with tombstones, so they stay gone after a restart, and the
//! ticker deletes the offsets of groups the coordinator forgets.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use runnel_core::groups::Groups;
use runnel_core::offsets::{Committed, OffsetStore};
use runnel_log::{Log, LogConfig};
use tokio::sync::watch;

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> Dir {
    let dir = std::env::temp_dir().join(format!(
        "runnel-core-retention-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Dir(dir)
}

fn open(dir: &Dir) -> OffsetStore {
    let mut config = LogConfig::new(&dir.0);
    config.background = false;
    OffsetStore::open(Arc::new(Log::open(config).unwrap())).unwrap()
}

fn commit(offset: i64, commit_ms: i64) -> Option<Committed> {
    Some(Committed {
        offset,
        leader_epoch: -1,
        metadata: String::new(),
        commit_ms,
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn expired_offsets_stay_gone_after_a_reopen() {
    let dir = temp_dir("reopen");
    {
        let store = open(&dir);
        store
            .write(
                "g",
                &[
                    (("t".into(), 0), commit(10, 1_000)),
                    (("t".into(), 1), commit(11, 2_000)),
                    (("u".into(), 0), commit(12, 9_000)),
                ],
            )
            .unwrap();
        store
            .write("other", &[(("t".into(), 0), commit(5, 1_000))])
            .unwrap();
        assert_eq!(store.last_commit_ms()["g"], 9_000);
        // Commits before the cut-off go; one made after it stays.
        assert_eq!(store.expire_group("g", 5_000).unwrap(), 1);
        assert_eq!(store.get("g", "t", 0), None);
        assert_eq!(store.get("g", "t", 1), None);
        assert_eq!(store.expire_group("g", 5_000).unwrap(), 1, "idempotent");
    }
    let store = open(&dir);
    assert_eq!(store.get("g", "t", 0), None, "a tombstone keeps it gone");
    assert_eq!(store.get("g", "t", 1), None);
    assert_eq!(store.get("g", "u", 0).map(|c| c.offset), Some(12));
    assert_eq!(store.get("other", "t", 0).map(|c| c.offset), Some(5));
    assert_eq!(store.expire_group("g", 10_000).unwrap(), 0);
    assert!(!store.groups().contains("g"));
    drop(store);
    assert!(!open(&dir).groups().contains("g"));
}

/// After a restart a group known only by its offsets counts its retention from its last
/// commit; the ticker forgets it and deletes its offsets, and a restart does not bring
/// them back. A group that committed recently is kept.
#[tokio::test]
async fn the_ticker_deletes_offsets_of_groups_idle_past_the_retention() {
    let dir = temp_dir("ticker");
    let retention_ms = 60_000;
    let now = now_ms();
    {
        let store = open(&dir);
        store
            .write(
                "stale",
                &[(("t".into(), 0), commit(1, now - 2 * retention_ms))],
            )
            .unwrap();
        store
            .write("fresh", &[(("t".into(), 0), commit(2, now - 1_000))])
            .unwrap();
    }
    let config = runnel_group::Config {
        offsets_retention_ms: retention_ms,
        ..runnel_group::Config::default()
    };
    let groups = Arc::new(Groups::new(config, 1, open(&dir)));
    let (stop, rx) = watch::channel(false);
    let ticking = groups.clone();
    let ticker = tokio::spawn(async move { ticking.run_ticker(rx).await });

    let deadline = Instant::now() + Duration::from_secs(20);
    while groups.offsets.groups().contains("stale") {
        assert!(
            Instant::now() < deadline,
            "the stale group's offsets were not deleted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(groups.read(|c| c.state("stale")), None, "forgotten");
    assert!(groups.read(|c| c.state("fresh")).is_some(), "kept");
    assert_eq!(
        groups.offsets.get("fresh", "t", 0).map(|c| c.offset),
        Some(2)
    );
    stop.send(true).unwrap();
    ticker.await.unwrap();
    drop(groups);

    let store = open(&dir);
    assert_eq!(store.get("stale", "t", 0), None);
    assert_eq!(store.get("fresh", "t", 0).map(|c| c.offset), Some(2));
}
