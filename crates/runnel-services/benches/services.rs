//! Handler and table throughput, beside the raw read rate of the same log in the same
//! run. Not a test: it prints figures for BENCHMARKS.md.
//!
//! ```sh
//! cargo bench -p runnel-services --bench services                    # embedded
//! cargo bench -p runnel-services --bench services --features kafka   # and kafka
//! RUNNEL_BENCH_EVENTS=200000 cargo bench -p runnel-services --bench services
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use runnel_services::transport::{TopicPartition, TopicSpec};
use runnel_services::{
    Embedded, EmbeddedConfig, HandlerError, Runtime, Service, Table, Transport, event, event_record,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Tick {
    key: String,
    n: u64,
}
event!(Tick, type = "tick", topic = "ticks", key = |e| e.key.clone());

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Last {
    n: u64,
}

const PARTITIONS: u32 = 4;
/// Distinct keys: a table of customers, not of events.
const KEYS: u64 = 10_000;

async fn noop(_t: Tick) -> Result<(), HandlerError> {
    Ok(())
}

fn events() -> u64 {
    std::env::var("RUNNEL_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000)
}

async fn fill(t: &dyn Transport, n: u64) {
    t.ensure_topics(&[TopicSpec {
        name: "ticks".into(),
        partitions: PARTITIONS,
        compacted: false,
    }])
    .await
    .unwrap();
    let trace = runnel_services::TraceParent::new_root(&mut || 1);
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..n {
        let e = Tick {
            key: format!("k{}", i % KEYS),
            n: i,
        };
        batch.push(event_record(&e, &format!("b{i}"), "bench", &trace));
        if batch.len() == 5_000 {
            t.send(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    if !batch.is_empty() {
        t.send(batch).await.unwrap();
    }
}

/// Reads every record once with the transport's reader: the ceiling for handlers.
async fn raw_read(t: &dyn Transport, n: u64) -> f64 {
    let from = (0..PARTITIONS)
        .map(|p| (TopicPartition::new("ticks", p as i32), 0))
        .collect();
    let mut reader = t.reader(from).unwrap();
    let start = Instant::now();
    let mut seen = 0;
    while seen < n {
        seen += reader.poll(Duration::from_millis(100)).await.unwrap().len() as u64;
        assert!(start.elapsed() < Duration::from_secs(600));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn run_service(rt: &Runtime, t: &dyn Transport, svc: Service, n: u64, table: bool) -> f64 {
    let start = Instant::now();
    let h = rt.start(svc, "bench").await.unwrap();
    loop {
        let done = if table {
            h.metrics().table_records >= n
        } else {
            let committed: i64 = t
                .committed(h.name(), "ticks")
                .await
                .unwrap()
                .iter()
                .map(|(_, o)| o)
                .sum();
            committed >= n as i64
        };
        if done {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "{:?}",
            h.metrics()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    h.stop().await.unwrap();
    rate
}

fn report(transport: &str, n: u64, raw: f64, noop: f64, table: f64) {
    println!(
        "transport {transport}: {n} events of ~100 bytes, {PARTITIONS} partitions, {KEYS} keys"
    );
    println!("  raw read            {raw:>12.0} events/s   1.00");
    println!(
        "  no-op handler       {noop:>12.0} events/s   {:.2} of raw",
        noop / raw
    );
    println!(
        "  table upsert        {table:>12.0} events/s   {:.2} of raw",
        table / raw
    );
}

async fn embedded(n: u64) {
    let dir = std::env::temp_dir().join(format!("runnel-bench-services-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let e = Embedded::open(EmbeddedConfig::new(dir.join("log"))).unwrap();
    let t: Arc<dyn Transport> = e.clone();
    fill(&*t, n).await;
    let raw = raw_read(&*t, n).await;
    let rt = Runtime::new(t.clone()).state_dir(dir.join("state"));
    let noop = run_service(
        &rt,
        &*t,
        Service::new("bench-noop")
            .on::<Tick, _>(noop)
            .concurrency(256),
        n,
        false,
    )
    .await;
    let table = run_service(
        &rt,
        &*t,
        Service::new("bench-table")
            .table(Table::<Last>::named("last").upsert::<Tick>(|e| Some(Last { n: e.n }))),
        n,
        true,
    )
    .await;
    report("embedded", n, raw, noop, table);
    e.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let n = events();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(embedded(n));
}
