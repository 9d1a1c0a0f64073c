//! SIGKILL a service process mid-stream, several times, then let it finish: every event
//! was handled at least once, and its table equals a rebuild from scratch.
//!
//! The test binary runs itself as the service process (`CRASH_CHILD_DIR` set): the child
//! opens the embedded log in that directory, runs a service with a table folded from
//! the topic and a handler that appends each event to `handled.log`, and exits 0 once
//! everything is handled and committed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_services::transport::TopicPartition;
use runnel_services::{
    Embedded, EmbeddedConfig, HandlerError, Runtime, Service, State, Table, Transport, event,
    event_record,
};
use serde::{Deserialize, Serialize};

const CHILD_ENV: &str = "CRASH_CHILD_DIR";
const EVENTS: u32 = 3_000;
const KEYS: u32 = 40;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Step {
    key: String,
    seq: u32,
}
event!(Step, type = "step", topic = "steps", key = |e| e.key.clone());

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct Total {
    count: u32,
    sum: u64,
}

fn fold(cur: Option<Total>, e: &Step) -> Option<Total> {
    let t = cur.unwrap_or(Total { count: 0, sum: 0 });
    Some(Total {
        count: t.count + 1,
        sum: t.sum + u64::from(e.seq),
    })
}

async fn handle(State(log): State<PathBuf>, step: Step) -> Result<(), HandlerError> {
    tokio::time::sleep(Duration::from_micros(300)).await;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(HandlerError::transient)?;
    // One write per line: concurrent handlers append to the same file.
    f.write_all(format!("{} {}\n", step.key, step.seq).as_bytes())
        .map_err(HandlerError::transient)?;
    Ok(())
}

fn service(dir: &Path) -> Service<PathBuf> {
    Service::with_state("counter", dir.join("handled.log"))
        .on::<Step, _>(handle)
        .table(Table::<Total>::named("totals").fold::<Step>(fold))
        .partitions(3)
        .concurrency(8)
}

fn open(dir: &Path) -> Arc<Embedded> {
    Embedded::open(EmbeddedConfig::new(dir.join("log"))).expect("open the log")
}

/// The child: run until everything is handled and committed.
async fn child(dir: PathBuf) {
    let embedded = open(&dir);
    let rt = Runtime::new(embedded.clone())
        .state_dir(dir.join("state"))
        .idle_poll(Duration::from_millis(20));
    let mut h = rt.start(service(&dir), "i0").await.expect("start");
    h.wait_ready().await.expect("ready");
    let t: Arc<dyn Transport> = embedded.clone();
    loop {
        let hw: i64 = t
            .watermarks("steps")
            .await
            .unwrap()
            .iter()
            .map(|(_, h)| h)
            .sum();
        let committed: i64 = t
            .committed("counter", "steps")
            .await
            .unwrap()
            .iter()
            .map(|(_, o)| o)
            .sum();
        if committed == hw && h.is_idle() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.stop().await.expect("stop");
    embedded.shutdown();
}

/// Shuts the log down and waits until this process has let go of it (the coordinator's
/// ticker holds it until it sees the stop), so that the service process can open it:
/// a data directory is locked by the process that has it open.
async fn release(embedded: Arc<Embedded>) {
    embedded.shutdown();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Arc::strong_count(embedded.core()) > 1 {
        assert!(Instant::now() < deadline, "the log was not released");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spawn_child(dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "sigkill_mid_stream_loses_nothing", "--nocapture"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("child.log"))
                .map_or_else(|_| Stdio::null(), Stdio::from),
        )
        .spawn()
        .expect("spawn the service process")
}

fn handled_lines(dir: &Path) -> Vec<(String, u32)> {
    let text = std::fs::read_to_string(dir.join("handled.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (k, s) = l.split_once(' ')?;
            Some((k.to_string(), s.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(PathBuf::from(dir)).await;
        return;
    }
    let dir = std::env::temp_dir().join(format!("runnel-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    // The history, written before the service first runs.
    {
        let embedded = open(&dir);
        embedded
            .ensure_topics(&[runnel_services::transport::TopicSpec {
                name: "steps".into(),
                partitions: 3,
                compacted: false,
            }])
            .await
            .unwrap();
        let trace = runnel_services::TraceParent::new_root(&mut || 7);
        let mut batch = Vec::new();
        for seq in 0..EVENTS {
            let e = Step {
                key: format!("k{}", seq % KEYS),
                seq,
            };
            batch.push(event_record(&e, &format!("e{seq}"), "test", &trace));
            if batch.len() == 500 {
                embedded.send(std::mem::take(&mut batch)).await.unwrap();
            }
        }
        embedded.send(batch).await.unwrap();
        release(embedded).await;
    }

    // Kill it three times, each time after more progress.
    for (round, at) in [300usize, 1_200, 2_100].into_iter().enumerate() {
        let mut c = spawn_child(&dir);
        let deadline = Instant::now() + Duration::from_secs(120);
        while handled_lines(&dir).len() < at {
            assert!(Instant::now() < deadline, "round {round}: no progress");
            if let Some(status) = c.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.join("child.log")).unwrap_or_default();
                panic!("round {round}: the service exited early: {status}\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        c.kill().unwrap(); // SIGKILL
        c.wait().unwrap();
    }
    // Then let it finish.
    let mut c = spawn_child(&dir);
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(s) = c.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            c.kill().unwrap();
            panic!("the last run did not finish");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.success(),
        "the last run failed: {status}\n{}",
        std::fs::read_to_string(dir.join("child.log")).unwrap_or_default()
    );

    // Every event was handled at least once.
    let handled: BTreeSet<(String, u32)> = handled_lines(&dir).into_iter().collect();
    let all: BTreeSet<(String, u32)> = (0..EVENTS)
        .map(|seq| (format!("k{}", seq % KEYS), seq))
        .collect();
    let missing: Vec<_> = all.difference(&handled).take(10).collect();
    assert!(missing.is_empty(), "never handled (first 10): {missing:?}");
    let extra: Vec<_> = handled.difference(&all).take(10).collect();
    assert!(extra.is_empty(), "handled but never published: {extra:?}");

    // The table equals a rebuild from scratch.
    let embedded = open(&dir);
    let mut rebuilt: BTreeMap<String, Total> = BTreeMap::new();
    let wm = embedded.watermarks("steps").await.unwrap();
    let from = (0..wm.len())
        .map(|p| (TopicPartition::new("steps", p as i32), 0))
        .collect();
    let mut reader = embedded.reader(from).unwrap();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < EVENTS {
        for r in reader.poll(Duration::from_millis(50)).await.unwrap() {
            let e: Step = runnel_services::decode(r.value.as_deref().unwrap()).unwrap();
            let cur = rebuilt.remove(&e.key);
            rebuilt.insert(e.key.clone(), fold(cur, &e).unwrap());
            seen += 1;
        }
        assert!(Instant::now() < deadline, "reading the topic back");
    }
    release(embedded).await;
    let store = runnel_state::Store::open(dir.join("state/counter/i0.redb")).unwrap();
    let stored: BTreeMap<String, Total> = store
        .scan("totals", None, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(k, v)| {
            (
                String::from_utf8(k).unwrap(),
                serde_json::from_slice(&v).unwrap(),
            )
        })
        .collect();
    assert_eq!(stored.len(), KEYS as usize);
    assert_eq!(stored, rebuilt, "the table equals a rebuild from scratch");
    let _ = std::fs::remove_dir_all(&dir);
}
