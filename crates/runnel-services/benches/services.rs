//! Handler and table throughput, beside the raw read rate of the same log in the same
//! run. Not a test: it prints figures for BENCHMARKS.md.
//!
//! ```sh
//! cargo bench -p runnel-services --bench services                    # embedded
//! cargo build --release -p runnel                                    # for the kafka raw rate
//! cargo bench -p runnel-services --bench services --features kafka   # and kafka
//! RUNNEL_BENCH_EVENTS=200000 cargo bench -p runnel-services --bench services
//! RUNNEL_BENCH_CASES=noop,table cargo bench ...                      # some cases only
//! ```
//!
//! Raw rates: on the embedded transport, the transport's own `Reader` reading every
//! record once; on the kafka transport, the real `runnel bench consume` (librdkafka) run
//! as a child process against a `runnel serve` process (both `target/release/runnel`,
//! or `RUNNEL_BIN`). Beside them on kafka, "rdkafka + headers": librdkafka alone reading
//! every record's headers (case `headers`). On kafka every figure is taken in a fresh
//! child process of this bench, and the topic is filled by another one.
//!
//! Handler and table rates are steady rates, from the first record done to the last,
//! as `runnel bench consume` counts from its assignment: a service's start-up (its
//! store opened, its group joined, its first fetch) is printed apart. A handler case
//! ends when every event was handled (`handled` in the instance's metrics; commits
//! follow within 500 ms), a table case when every event was applied to the table.

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

/// The steady rate of a service: from the first record it finished to the last (the
/// records done before the first look are left out), as `runnel bench consume` counts
/// from its assignment, after connecting. The start-up before it (the store opened,
/// the group joined, the first fetch) is printed apart, to standard error.
async fn run_service(rt: &Runtime, svc: Service, n: u64, table: bool) -> f64 {
    let started = Instant::now();
    let h = rt.start(svc, "bench").await.unwrap();
    let done = || {
        let m = h.metrics();
        if table { m.table_records } else { m.handled }
    };
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let now = done();
        if now > 0 && first.is_none() {
            first = Some((Instant::now(), now));
        }
        if now >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{:?}",
            h.metrics()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (at, before) = first.expect("records were done");
    let rate = (n - before) as f64 / at.elapsed().as_secs_f64();
    eprintln!(
        "  ({} start-up: {:.0} ms to its first record)",
        h.name(),
        (at - started).as_secs_f64() * 1e3
    );
    h.stop().await.unwrap();
    rate
}

fn report(transport: &str, raw_what: &str, n: u64, raw: f64, noop: f64, table: f64) {
    println!(
        "transport {transport}: {n} events of ~100 bytes, {PARTITIONS} partitions, {KEYS} keys"
    );
    println!("  {raw_what:<19} {raw:>12.0} events/s   1.00");
    println!(
        "  no-op handler       {noop:>12.0} events/s   {:.2} of raw",
        noop / raw
    );
    println!(
        "  table upsert        {table:>12.0} events/s   {:.2} of raw",
        table / raw
    );
}

/// The service of a handler case ("noop" or "table") and whether it is a table case.
fn service_of(case: &str) -> (Service, bool) {
    match case {
        "noop" => (
            Service::new("bench-noop")
                .on::<Tick, _>(noop)
                .concurrency(256),
            false,
        ),
        "table" => (
            Service::new("bench-table")
                .table(Table::<Last>::named("last").upsert::<Tick>(|e| Some(Last { n: e.n }))),
            true,
        ),
        other => panic!("no handler case {other:?}"),
    }
}

/// The no-op handler and the table upsert on `rt`: their rates, 0 for a case left out.
async fn handler_cases(rt: &Runtime, n: u64) -> (f64, f64) {
    let mut rates = [0.0; 2];
    for (rate, name) in rates.iter_mut().zip(["noop", "table"]) {
        if case(name) {
            let (svc, table) = service_of(name);
            *rate = run_service(rt, svc, n, table).await;
        }
    }
    (rates[0], rates[1])
}

async fn embedded(n: u64) {
    let dir = std::env::temp_dir().join(format!("runnel-bench-services-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let e = Embedded::open(EmbeddedConfig::new(dir.join("log"))).unwrap();
    let t: Arc<dyn Transport> = e.clone();
    fill(&*t, n).await;
    let raw = if case("raw") {
        raw_read(&*t, n).await
    } else {
        0.0
    };
    let rt = Runtime::new(t.clone()).state_dir(dir.join("state"));
    let (noop, table) = handler_cases(&rt, n).await;
    report("embedded", "raw read (Reader)", n, raw, noop, table);
    e.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `name` (a transport or a case) is to run: all unless `RUNNEL_BENCH_CASES`
/// lists some.
fn case(name: &str) -> bool {
    std::env::var("RUNNEL_BENCH_CASES").map_or(true, |v| {
        let listed: Vec<&str> = v.split(',').collect();
        let transports = ["embedded", "kafka"];
        let lists_kind = |kinds: &[&str]| listed.iter().any(|c| kinds.contains(c));
        // A list of only cases runs them on every transport, and the other way round.
        listed.contains(&name)
            || (transports.contains(&name) && !lists_kind(&transports))
            || (!transports.contains(&name) && !lists_kind(&["raw", "headers", "noop", "table"]))
    })
}

fn main() {
    let n = events();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    #[cfg(feature = "kafka")]
    if let Ok(what) = std::env::var(CHILD_ENV) {
        rt.block_on(kafka_child(&what, n));
        return;
    }
    if case("embedded") {
        rt.block_on(embedded(n));
    }
    #[cfg(feature = "kafka")]
    if case("kafka") {
        rt.block_on(kafka(n));
    }
}

/// The release binary: `runnel serve` for the broker, `runnel bench consume` for the raw
/// rate.
#[cfg(feature = "kafka")]
fn runnel_bin() -> String {
    std::env::var("RUNNEL_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/release/runnel").to_string()
    })
}

/// `runnel serve` as a process of its own, as it runs beside services in a deployment.
#[cfg(feature = "kafka")]
#[path = "../../runnel/tests/common/serve.rs"]
mod serve;

/// Set on a child process of this bench: what it is to do ("fill", "headers", "noop"
/// or "table"); the broker's address and a state directory come with it.
#[cfg(feature = "kafka")]
const CHILD_ENV: &str = "RUNNEL_BENCH_CHILD";
#[cfg(feature = "kafka")]
const BROKER_ENV: &str = "RUNNEL_BENCH_BROKER";
#[cfg(feature = "kafka")]
const STATE_ENV: &str = "RUNNEL_BENCH_STATE";

/// On the kafka transport every figure is taken in a process of its own, as the raw
/// rate is (`runnel bench consume`) and as services run in a deployment: the process
/// measured has done nothing else (with the topic filled in the measuring process, the
/// figures after it were lower; BENCHMARKS.md).
#[cfg(feature = "kafka")]
async fn kafka(n: u64) {
    let dir = std::env::temp_dir().join(format!("runnel-bench-broker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let broker = serve::Broker::start_bin(std::path::Path::new(&runnel_bin()), &dir.join("log"));
    child("fill", &broker.addr, n, &dir);
    let raw = if case("raw") {
        bench_consume(&broker.addr, n)
    } else {
        0.0
    };
    let mut rates = [0.0; 3];
    for (rate, name) in rates.iter_mut().zip(["headers", "noop", "table"]) {
        if case(name) {
            *rate = child(name, &broker.addr, n, &dir);
        }
    }
    let [headers, noop, table] = rates;
    report("kafka", "raw bench consume", n, raw, noop, table);
    println!(
        "  rdkafka + headers   {headers:>12.0} events/s   {:.2} of raw",
        headers / raw
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs this bench as a child process doing `what`; the rate it printed (0 for "fill").
#[cfg(feature = "kafka")]
fn child(what: &str, addr: &str, n: u64, dir: &std::path::Path) -> f64 {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, what)
        .env(BROKER_ENV, addr)
        .env(STATE_ENV, dir.join("state"))
        .env("RUNNEL_BENCH_EVENTS", n.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the {what} process failed: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("rate "))
        .map_or(0.0, |r| r.parse().unwrap())
}

/// A child process's work (see [`child`]): prints `rate R` for a measured case.
#[cfg(feature = "kafka")]
async fn kafka_child(what: &str, n: u64) {
    use runnel_services::{Kafka, KafkaConfig};
    let addr = std::env::var(BROKER_ENV).unwrap();
    if what == "headers" {
        println!("rate {}", headers_consume(&addr, n));
        return;
    }
    let k = Kafka::connect(KafkaConfig::new(addr.clone())).unwrap();
    let rate = match what {
        "fill" => {
            fill(&*k, n).await;
            return;
        }
        case => {
            let (svc, table) = service_of(case);
            let rt = Runtime::new(k.clone()).state_dir(std::env::var(STATE_ENV).unwrap());
            run_service(&rt, svc, n, table).await
        }
    };
    println!("rate {rate}");
}

/// librdkafka's consumer, in its own process, reading every record's key, value and
/// headers and doing nothing else: what any runtime on librdkafka pays before its own
/// work (librdkafka parses a record's headers into a list, allocating each, on first
/// access). Settings as `runnel bench consume`'s, and the transport's
/// `fetch.queue.backoff.ms` (librdkafka's 1 s default starves a consumer that keeps up
/// once its queue is full).
#[cfg(feature = "kafka")]
fn headers_consume(bootstrap: &str, n: u64) -> f64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "bench-headers")
        .set("fetch.queue.backoff.ms", "10")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .unwrap();
    // Connected before the clock starts, as `runnel bench consume` is.
    c.fetch_metadata(Some("ticks"), Duration::from_secs(10))
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset("ticks", p as i32, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let start = Instant::now();
    let (mut seen, mut bytes) = (0u64, 0usize);
    while seen < n {
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "read {seen} of {n}"
        );
        let Some(m) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        bytes += m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
        if let Some(h) = m.headers() {
            for h in h.iter() {
                bytes += h.key.len() + h.value.map_or(0, <[u8]>::len);
            }
        }
        seen += 1;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    assert!(bytes as u64 > n * 20, "every record's bytes were read");
    rate
}

/// `runnel bench consume` of the whole topic: its msgs/s.
#[cfg(feature = "kafka")]
fn bench_consume(bootstrap: &str, n: u64) -> f64 {
    let bin = runnel_bin();
    let out = std::process::Command::new(&bin)
        .args([
            "bench",
            "consume",
            "--bootstrap",
            bootstrap,
            "--topic",
            "ticks",
        ])
        .args(["--count", &n.to_string(), "--duration", "600"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin} (cargo build --release -p runnel): {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{bin} bench consume: {text}");
    // "consumed N messages, ... MB/s, R msgs/s; ..."
    let rate = text
        .split(" msgs/s")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {text:?}"));
    let consumed: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    assert_eq!(consumed, n, "bench consume read everything: {text}");
    rate
}
