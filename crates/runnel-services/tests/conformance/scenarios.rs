//! The scenarios, each a function of a fresh harness.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_services::runtime::dlq_headers;
use runnel_services::{
    Backoff, Emitter, HandlerError, Meta, Recoverability, Service, State, Table, TableRef,
    TestRuntime, derived_event_id, dlq, event, headers,
};
use serde::{Deserialize, Serialize};

/// A keyed event with a sequence number per key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub key: String,
    pub seq: u32,
}
event!(Step, type = "step", topic = "steps", key = |e| e.key.clone());

/// What a scenario's handler saw, shared with the test.
#[derive(Clone, Default)]
pub struct Seen {
    /// (key, seq) in the order handled.
    pub log: Arc<Mutex<Vec<(String, u32)>>>,
    /// Failures still to inject per key.
    pub fail: Arc<Mutex<BTreeMap<String, u32>>>,
    /// Whether "not yet" keys may now go through.
    pub open: Arc<AtomicBool>,
    pub calls: Arc<AtomicU32>,
}

impl Seen {
    fn handled(&self) -> Vec<(String, u32)> {
        self.log.lock().unwrap().clone()
    }

    fn distinct(&self) -> BTreeSet<(String, u32)> {
        self.handled().into_iter().collect()
    }
}

async fn record(State(seen): State<Seen>, step: Step) -> Result<(), HandlerError> {
    seen.calls.fetch_add(1, Ordering::SeqCst);
    seen.log.lock().unwrap().push((step.key, step.seq));
    Ok(())
}

fn recorder(name: &str, seen: &Seen) -> Service<Seen> {
    Service::with_state(name, seen.clone())
        .on::<Step, _>(record)
        .partitions(4)
}

async fn publish_steps(t: &TestRuntime, keys: u32, per_key: u32) {
    for seq in 0..per_key {
        for k in 0..keys {
            t.publish(&Step {
                key: format!("k{k}"),
                seq,
            })
            .await
            .unwrap();
        }
    }
}

fn all_steps(keys: u32, per_key: u32) -> BTreeSet<(String, u32)> {
    (0..keys)
        .flat_map(|k| (0..per_key).map(move |s| (format!("k{k}"), s)))
        .collect()
}

pub async fn per_key_order(mut t: TestRuntime) {
    let seen = Seen::default();
    async fn jittery(State(seen): State<Seen>, step: Step) -> Result<(), HandlerError> {
        // Later records of other keys overtake this one; its own key must wait.
        let pause = u64::from((step.seq * 7 + step.key.len() as u32 * 3) % 4);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        seen.log.lock().unwrap().push((step.key, step.seq));
        Ok(())
    }
    let svc = Service::with_state("ordered", seen.clone())
        .on::<Step, _>(jittery)
        .partitions(2)
        .concurrency(16);
    t.start(svc).await.unwrap();
    publish_steps(&t, 12, 15).await;
    t.run_until_idle().await.unwrap();
    let handled = seen.handled();
    assert_eq!(seen.distinct(), all_steps(12, 15));
    let mut last: BTreeMap<String, u32> = BTreeMap::new();
    for (k, s) in handled {
        if let Some(prev) = last.get(&k) {
            assert!(s > *prev, "key {k}: {s} handled after {prev}");
        }
        last.insert(k, s);
    }
    t.shutdown().await.unwrap();
}

pub async fn group_split_and_fan_out(mut t: TestRuntime) {
    let a = Seen::default();
    let b = Seen::default();
    let a1 = t.start(recorder("split-a", &a)).await.unwrap();
    let a2 = t.add_instance(a1).await.unwrap();
    let b1 = t.start(recorder("fan-b", &b)).await.unwrap();
    publish_steps(&t, 40, 3).await;
    t.run_until_idle().await.unwrap();
    let want = all_steps(40, 3);
    assert_eq!(a.distinct(), want, "the group of two saw every event");
    assert_eq!(b.distinct(), want, "another service saw every event too");
    let (h1, h2) = (t.metrics(a1).handled, t.metrics(a2).handled);
    assert!(h1 > 0 && h2 > 0, "both copies took a share: {h1} and {h2}");
    assert!(t.metrics(b1).handled >= 120);
    t.shutdown().await.unwrap();
}

pub async fn commit_and_resume_after_a_crash(mut t: TestRuntime) {
    let seen = Seen::default();
    let i = t.start(recorder("resumer", &seen)).await.unwrap();
    publish_steps(&t, 10, 5).await;
    t.run_until_idle().await.unwrap();
    assert_eq!(seen.distinct(), all_steps(10, 5));
    t.crash(i);
    // Published while the service is down: nothing waits for it.
    for k in 0..10 {
        t.publish(&Step {
            key: format!("k{k}"),
            seq: 5,
        })
        .await
        .unwrap();
    }
    t.restart(i).await.unwrap();
    t.run_until_idle().await.unwrap();
    assert_eq!(
        seen.distinct(),
        all_steps(10, 6),
        "caught up after the restart"
    );
    let handled = seen.handled();
    for s in all_steps(10, 5) {
        let n = handled.iter().filter(|h| **h == s).count();
        assert_eq!(
            n, 1,
            "{s:?} was committed before the crash and handled once"
        );
    }
    t.shutdown().await.unwrap();
}

pub async fn rebalance_while_handling(mut t: TestRuntime) {
    let seen = Seen::default();
    async fn slow(State(seen): State<Seen>, step: Step) -> Result<(), HandlerError> {
        tokio::time::sleep(Duration::from_millis(3)).await;
        seen.log.lock().unwrap().push((step.key, step.seq));
        Ok(())
    }
    let svc = Service::with_state("rebalancer", seen.clone())
        .on::<Step, _>(slow)
        .partitions(4)
        .concurrency(4);
    let i1 = t.start(svc).await.unwrap();
    publish_steps(&t, 20, 10).await;
    // A second copy joins while the first is busy: the group rebalances mid-stream.
    let i2 = t.add_instance(i1).await.unwrap();
    publish_steps(&t, 20, 2).await;
    t.run_until_idle().await.unwrap();
    let mut want = all_steps(20, 10);
    want.extend(all_steps(20, 2));
    assert_eq!(seen.distinct(), want, "every event handled at least once");
    assert!(t.metrics(i2).handled > 0, "the new copy took partitions");
    t.shutdown().await.unwrap();
}

fn quick_retries() -> Recoverability {
    Recoverability::default()
        .with_retries_max(3)
        .with_backoff(Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
            multiplier: 2.0,
            jitter: 0.0,
        })
        .with_park_interval(Duration::from_secs(10))
        .with_park_attempts_max(5)
}

async fn flaky(State(seen): State<Seen>, step: Step) -> Result<(), HandlerError> {
    {
        let mut fail = seen.fail.lock().unwrap();
        if let Some(n) = fail.get_mut(&step.key)
            && *n > 0
        {
            *n -= 1;
            return Err(HandlerError::transient("the mail server is down"));
        }
    }
    seen.log.lock().unwrap().push((step.key, step.seq));
    Ok(())
}

pub async fn retries_with_backoff(mut t: TestRuntime) {
    let seen = Seen::default();
    seen.fail.lock().unwrap().insert("k0".into(), 2);
    let svc = Service::with_state("retrier", seen.clone())
        .on::<Step, _>(flaky)
        .recoverability(quick_retries());
    let i = t.start(svc).await.unwrap();
    t.publish(&Step {
        key: "k0".into(),
        seq: 0,
    })
    .await
    .unwrap();
    t.publish(&Step {
        key: "k1".into(),
        seq: 0,
    })
    .await
    .unwrap();
    t.run_until_idle().await.unwrap();
    assert_eq!(
        seen.handled(),
        vec![("k1".to_string(), 0)],
        "k0 waits, k1 does not"
    );
    assert_eq!(t.metrics(i).retried, 1);
    // Backoff 1 s, then 2 s: nothing happens before the virtual clock gets there.
    t.advance(Duration::from_millis(999));
    t.run_until_idle().await.unwrap();
    assert_eq!(t.metrics(i).retried, 1);
    t.advance(Duration::from_millis(1));
    t.run_until_idle().await.unwrap();
    assert_eq!(t.metrics(i).retried, 2, "second failure, second retry");
    t.advance(Duration::from_secs(2));
    t.run_until_idle().await.unwrap();
    assert!(seen.handled().contains(&("k0".to_string(), 0)));
    assert_eq!(t.metrics(i).failed, 2);
    assert_eq!(t.metrics(i).dead_lettered, 0);
    t.shutdown().await.unwrap();
}

async fn needs_open(State(seen): State<Seen>, step: Step) -> Result<(), HandlerError> {
    if step.key == "late" && !seen.open.load(Ordering::SeqCst) {
        return Err(HandlerError::not_yet("the customer is not known yet"));
    }
    seen.log.lock().unwrap().push((step.key, step.seq));
    Ok(())
}

pub async fn parking_holds_only_its_key(mut t: TestRuntime) {
    let seen = Seen::default();
    let svc = Service::with_state("parker", seen.clone())
        .on::<Step, _>(needs_open)
        .partitions(1)
        .recoverability(quick_retries());
    let i = t.start(svc).await.unwrap();
    t.publish(&Step {
        key: "late".into(),
        seq: 0,
    })
    .await
    .unwrap();
    t.publish(&Step {
        key: "late".into(),
        seq: 1,
    })
    .await
    .unwrap();
    t.publish(&Step {
        key: "other".into(),
        seq: 0,
    })
    .await
    .unwrap();
    t.run_until_idle().await.unwrap();
    assert_eq!(
        seen.handled(),
        vec![("other".to_string(), 0)],
        "one partition, yet only the parked key waits"
    );
    assert_eq!(t.metrics(i).parked, 1);
    t.advance(Duration::from_secs(10));
    t.run_until_idle().await.unwrap();
    assert_eq!(t.metrics(i).parked, 2, "parked again: still not known");
    seen.open.store(true, Ordering::SeqCst);
    t.advance(Duration::from_secs(10));
    t.run_until_idle().await.unwrap();
    assert_eq!(
        seen.handled(),
        vec![
            ("other".to_string(), 0),
            ("late".to_string(), 0),
            ("late".to_string(), 1)
        ],
        "the parked key goes through in order once possible"
    );
    t.shutdown().await.unwrap();
}

async fn poison_aware(State(seen): State<Seen>, step: Step) -> Result<(), HandlerError> {
    if step.key == "poison" && !seen.open.load(Ordering::SeqCst) {
        return Err(HandlerError::permanent("cannot ship to the moon"));
    }
    seen.log.lock().unwrap().push((step.key, step.seq));
    Ok(())
}

pub async fn dead_letters_and_replay(mut t: TestRuntime) {
    let seen = Seen::default();
    let svc = Service::with_state("lettered", seen.clone())
        .on::<Step, _>(poison_aware)
        .recoverability(quick_retries());
    let i = t.start(svc).await.unwrap();
    t.publish(&Step {
        key: "poison".into(),
        seq: 0,
    })
    .await
    .unwrap();
    t.publish(&Step {
        key: "fine".into(),
        seq: 0,
    })
    .await
    .unwrap();
    t.run_until_idle().await.unwrap();
    assert_eq!(seen.handled(), vec![("fine".to_string(), 0)]);
    assert_eq!(t.metrics(i).dead_lettered, 1);
    let letters = t.dead_letters("lettered").await.unwrap();
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    let h = |n: &str| String::from_utf8(l.header(n).unwrap().to_vec()).unwrap();
    assert_eq!(h(dlq_headers::ERROR), "cannot ship to the moon");
    assert_eq!(h(dlq_headers::ERROR_KIND), "permanent");
    assert_eq!(h(dlq_headers::TOPIC), "steps");
    assert_eq!(h(dlq_headers::ATTEMPTS), "1");
    assert_eq!(h(dlq_headers::SERVICE), "lettered");
    assert_eq!(
        h(headers::CE_TYPE),
        "step",
        "the original headers ride along"
    );
    assert_eq!(l.key.as_deref(), Some(&b"poison"[..]));
    // The bug is fixed; send it back.
    seen.open.store(true, Ordering::SeqCst);
    let listed = dlq::list(t.transport().as_ref(), "lettered").await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].error_kind, "permanent");
    let err = dlq::replay(t.transport().as_ref(), "lettered", Some(&[99])).await;
    assert!(err.is_err(), "an offset that is no dead letter is refused");
    let n = dlq::replay(
        t.transport().as_ref(),
        "lettered",
        Some(&[listed[0].offset]),
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
    t.run_until_idle().await.unwrap();
    assert!(seen.handled().contains(&("poison".to_string(), 0)));
    t.shutdown().await.unwrap();
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Total {
    pub steps: u32,
    pub last: u32,
}

fn totals() -> Table<Total> {
    Table::<Total>::named("totals").fold::<Step>(|cur, e| {
        let steps = cur.map_or(0, |c| c.steps) + 1;
        Some(Total { steps, last: e.seq })
    })
}

pub async fn table_restore_and_readiness(mut t: TestRuntime) {
    // The history exists before the service does.
    let svc = || Service::new("tabler").table(totals()).partitions(3);
    t.start(Service::new("creator").emits::<Step>().partitions(3))
        .await
        .unwrap();
    publish_steps(&t, 50, 20).await;
    let i = t.start(svc()).await.unwrap();
    // Ready means caught up to what was there at start: the table is whole at once.
    let table = t.table::<Total>(i).unwrap();
    assert_eq!(table.len().unwrap(), 50);
    assert_eq!(
        table.get("k7").unwrap(),
        Some(Total {
            steps: 20,
            last: 19
        })
    );
    let applied = t.metrics(i).table_records;
    assert_eq!(applied, 1000);
    drop(table);
    // A crash and restart resume from the offsets stored with the state: nothing is
    // applied twice.
    t.crash(i);
    publish_steps(&t, 50, 1).await;
    t.restart(i).await.unwrap();
    let table = t.table::<Total>(i).unwrap();
    assert_eq!(table.get("k7").unwrap(), Some(Total { steps: 21, last: 0 }));
    assert_eq!(
        t.metrics(i).table_records,
        50,
        "only the new records were applied"
    );
    drop(table);
    t.shutdown().await.unwrap();
}

pub async fn undecodable_and_unknown_records(mut t: TestRuntime) {
    let seen = Seen::default();
    let i = t.start(recorder("strict", &seen)).await.unwrap();
    t.publish_raw("steps", "bad", Some("step"), b"{not json")
        .await
        .unwrap();
    t.publish_raw("steps", "x", Some("somethingElse"), b"{}")
        .await
        .unwrap();
    t.publish(&Step {
        key: "good".into(),
        seq: 0,
    })
    .await
    .unwrap();
    t.run_until_idle().await.unwrap();
    let m = t.metrics(i);
    assert_eq!(
        m.dead_lettered, 1,
        "a record that does not decode is a dead letter"
    );
    assert_eq!(m.failed, 1, "and is not retried");
    assert_eq!(
        m.skipped_unknown, 1,
        "an unknown type is skipped and counted"
    );
    assert_eq!(seen.handled(), vec![("good".to_string(), 0)]);
    t.shutdown().await.unwrap();
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Echo {
    pub key: String,
    pub seq: u32,
}
event!(Echo, type = "echo", topic = "echoes", key = |e| e.key.clone());

async fn echo(step: Step, meta: Meta, emit: Emitter) -> Result<(), HandlerError> {
    let id = emit.emit(&Echo {
        key: step.key.clone(),
        seq: step.seq,
    });
    assert_eq!(
        id,
        derived_event_id("echoer", &meta.topic, meta.partition, meta.offset, 0)
    );
    Ok(())
}

pub async fn emitted_events_carry_ids_derived_from_the_input(mut t: TestRuntime) {
    let i = t
        .start(Service::new("echoer").on::<Step, _>(echo).emits::<Echo>())
        .await
        .unwrap();
    publish_steps(&t, 3, 2).await;
    t.run_until_idle().await.unwrap();
    assert_eq!(t.metrics(i).emitted, 6);
    let steps = t.records("steps").await.unwrap();
    let echoes = t.records("echoes").await.unwrap();
    let ids: BTreeSet<String> = echoes
        .iter()
        .map(|r| String::from_utf8(r.header(headers::CE_ID).unwrap().to_vec()).unwrap())
        .collect();
    let want: BTreeSet<String> = steps
        .iter()
        .map(|r| derived_event_id("echoer", "steps", r.tp.partition, r.offset, 0))
        .collect();
    assert_eq!(ids, want);
    // The trace goes on: each echo continues its step's trace.
    for e in &echoes {
        let tp = String::from_utf8(e.header(headers::TRACEPARENT).unwrap().to_vec()).unwrap();
        let trace = &tp[3..35];
        assert!(
            steps.iter().any(|s| s
                .header(headers::TRACEPARENT)
                .is_some_and(|h| String::from_utf8_lossy(h)[3..35] == *trace)),
            "echo trace {tp} continues a step's trace"
        );
    }
    t.shutdown().await.unwrap();
}

pub async fn graceful_stop_commits_and_leaves(mut t: TestRuntime) {
    let seen = Seen::default();
    let i = t.start(recorder("stopper", &seen)).await.unwrap();
    publish_steps(&t, 8, 4).await;
    t.run_until_idle().await.unwrap();
    t.stop(i).await.unwrap();
    let committed: i64 = t
        .transport()
        .committed("stopper", "steps")
        .await
        .unwrap()
        .iter()
        .map(|(_, o)| o)
        .sum();
    assert_eq!(committed, 32, "every handled record is committed at stop");
    // A new copy starts after the committed offsets: nothing is handled twice.
    t.restart(i).await.unwrap();
    t.run_until_idle().await.unwrap();
    assert_eq!(seen.handled().len(), 32);
    let _: Option<TableRef<Total>> = None;
    t.shutdown().await.unwrap();
}

async fn panics_on_boom(State(seen): State<Seen>, step: Step) -> Result<(), HandlerError> {
    if step.key == "boom" {
        panic!("a bug in the handler");
    }
    seen.log.lock().unwrap().push((step.key, step.seq));
    Ok(())
}

pub async fn a_panicking_handler_is_retried_then_dead_lettered(mut t: TestRuntime) {
    let seen = Seen::default();
    let svc = Service::with_state("panicky", seen.clone())
        .on::<Step, _>(panics_on_boom)
        .partitions(1)
        .recoverability(quick_retries().with_retries_max(1));
    let i = t.start(svc).await.unwrap();
    t.publish(&Step {
        key: "boom".into(),
        seq: 0,
    })
    .await
    .unwrap();
    t.publish(&Step {
        key: "calm".into(),
        seq: 0,
    })
    .await
    .unwrap();
    t.run_until_idle().await.unwrap();
    assert_eq!(
        seen.handled(),
        vec![("calm".to_string(), 0)],
        "the panic holds only its key"
    );
    assert_eq!(
        t.metrics(i).retried,
        1,
        "a panic is a transient failure: retried"
    );
    t.advance(Duration::from_secs(1));
    t.run_until_idle().await.unwrap();
    assert_eq!(
        t.metrics(i).dead_lettered,
        1,
        "then dead-lettered, not stuck"
    );
    let letters = t.dead_letters("panicky").await.unwrap();
    let error = String::from_utf8(letters[0].header(dlq_headers::ERROR).unwrap().to_vec()).unwrap();
    assert!(error.contains("panicked"), "{error}");
    let committed: i64 = t
        .transport()
        .committed("panicky", "steps")
        .await
        .unwrap()
        .iter()
        .map(|(_, o)| o)
        .sum();
    assert_eq!(committed, 2, "the partition's commit point moved past it");
    t.shutdown().await.unwrap();
}
