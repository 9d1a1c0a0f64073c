//! `runnel bench`: a load generator on librdkafka that works against any
//! Kafka-compatible address (Runnel, Apache Kafka, Redpanda).
//!
//! Every run is bounded by a message count or a duration, whichever comes first.
//! Payloads start with the send time in microseconds, so a consumer can measure
//! end-to-end latency without clock games (both sides run on this machine).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::histogram::Histogram;

/// Options shared by the bench commands.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Kafka-compatible bootstrap address.
    #[arg(long, default_value = "127.0.0.1:9092", env = "RUNNEL_BOOTSTRAP")]
    pub bootstrap: String,
    /// Topic to use; created with --partitions if missing.
    #[arg(long, default_value = "runnel-bench")]
    pub topic: String,
    /// Partitions when the topic is created.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// Value size in bytes (at least 8: the send time is stored in the first 8).
    #[arg(long, default_value_t = 1024)]
    pub message_bytes: usize,
    /// Stop after this many messages.
    #[arg(long, default_value_t = 1_000_000)]
    pub count: u64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Producer acks: all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
    /// Produce at most this many MB/s (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate_mb: f64,
    /// Producer linger.ms.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u32,
    /// Extra librdkafka settings, repeatable: --set key=value.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Report {
    /// Messages that completed.
    pub messages: u64,
    /// Payload bytes that completed.
    pub bytes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Latencies in microseconds (acknowledgement, or end to end).
    pub latency: Histogram,
    /// Failed messages.
    pub errors: u64,
}

impl Report {
    /// One line: MB/s, msgs/s, latency quantiles.
    pub fn line(&self, what: &str, latency_kind: &str) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "{what} {} messages, {:.1} MB in {:.2} s: {:.1} MB/s, {:.0} msgs/s; {latency_kind} latency p50 {}, p99 {}, p999 {}{}",
            self.messages,
            self.bytes as f64 / 1e6,
            secs,
            self.bytes as f64 / 1e6 / secs,
            self.messages as f64 / secs,
            fmt_micros(self.latency.quantile(0.5)),
            fmt_micros(self.latency.quantile(0.99)),
            fmt_micros(self.latency.quantile(0.999)),
            if self.errors > 0 {
                format!("; {} errors", self.errors)
            } else {
                String::new()
            },
        )
    }
}

fn fmt_micros(us: u64) -> String {
    if us >= 1000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{us} µs")
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// librdkafka's settings: `defaults`, then the user's `--set`s over them.
fn client_config(args: &BenchArgs, defaults: &[(&str, &str)]) -> anyhow::Result<ClientConfig> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &args.bootstrap);
    for (k, v) in defaults {
        c.set(*k, *v);
    }
    for kv in &args.set {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--set {kv:?}: expected KEY=VALUE"))?;
        c.set(k, v);
    }
    Ok(c)
}

fn progress(args: &BenchArgs, verb: &str) -> ProgressBar {
    let bar = ProgressBar::new(args.count);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{verb} {{bar:30}} {{pos}}/{{len}} msgs {{per_sec}} ({{elapsed}}, stops by {:.0}s)",
            args.duration
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Creates the topic if it does not exist.
pub async fn ensure_topic(args: &BenchArgs) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(args, &[])?
        .create()
        .context("cannot create an admin client")?;
    let topic = NewTopic::new(&args.topic, args.partitions, TopicReplication::Fixed(1));
    let results = admin
        .create_topics(
            &[topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .with_context(|| format!("cannot create topic {} at {}", args.topic, args.bootstrap))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => bail!("cannot create topic {t}: {e}"),
        }
    }
    Ok(())
}

struct Acks {
    latency: Mutex<Histogram>,
    done: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
}

struct Ctx(Arc<Acks>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Self::DeliveryOpaque) {
        match result {
            Ok(m) => {
                let us = sent.elapsed().as_micros() as u64;
                self.0
                    .latency
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .record(us);
                self.0
                    .bytes
                    .fetch_add(m.payload_len() as u64, Ordering::Relaxed);
            }
            Err(_) => {
                self.0.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.0.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Produces `count` messages (or for `duration`), reporting acknowledgement latency.
pub fn produce(args: &BenchArgs) -> anyhow::Result<Report> {
    if args.message_bytes < 8 {
        bail!("--message-bytes must be at least 8 (the send time is stored in the payload)");
    }
    let acks = Arc::new(Acks {
        latency: Mutex::new(Histogram::default()),
        done: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        errors: AtomicU64::new(0),
    });
    let producer: ThreadedProducer<Ctx> = client_config(args, &[])?
        .set("acks", &args.acks)
        .set("compression.type", &args.compression)
        .set("linger.ms", args.linger_ms.to_string())
        .set("queue.buffering.max.kbytes", "1048576")
        .create_with_context(Ctx(acks.clone()))
        .context("cannot create the producer")?;
    let bar = progress(args, "produce");
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    let mut payload = vec![b'x'; args.message_bytes];
    let mut sent = 0u64;
    while sent < args.count && Instant::now() < deadline {
        if args.rate_mb > 0.0 {
            let allowed = args.rate_mb * 1e6 * start.elapsed().as_secs_f64();
            if (sent * args.message_bytes as u64) as f64 > allowed {
                std::thread::sleep(Duration::from_micros(200));
                continue;
            }
        }
        payload[..8].copy_from_slice(&now_micros().to_be_bytes());
        let key = (sent % 1024).to_be_bytes();
        let mut record = BaseRecord::with_opaque_to(&args.topic, Box::new(Instant::now()))
            .payload(&payload[..])
            .key(&key[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => bail!("produce failed: {e}"),
            }
        }
        sent += 1;
        if sent.is_multiple_of(4096) {
            bar.set_position(acks.done.load(Ordering::Relaxed));
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flush failed")?;
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let latency = acks
        .latency
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok(Report {
        messages: acks.done.load(Ordering::Relaxed) - acks.errors.load(Ordering::Relaxed),
        bytes: acks.bytes.load(Ordering::Relaxed),
        elapsed,
        latency,
        errors: acks.errors.load(Ordering::Relaxed),
    })
}

/// Reads the topic from the beginning of every partition, without a group, reporting
/// end-to-end latency from the send times in the payloads.
pub fn consume(args: &BenchArgs, from_end: bool, stop_early: &AtomicU64) -> anyhow::Result<Report> {
    // librdkafka's default `fetch.queue.backoff.ms` (1 s) stalls a consumer that keeps
    // up: once a partition's local queue holds `queued.min.messages` (100,000 records)
    // or `queued.max.messages.kbytes` (64 MiB), its next fetch waits a whole second,
    // however soon the queue empties. Reading 500,000 small records, that cut the rate
    // to less than half in some runs and not in others (BENCHMARKS.md, "Services").
    let consumer: BaseConsumer = client_config(args, &[("fetch.queue.backoff.ms", "10")])?
        .set("group.id", "runnel-bench")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .context("cannot create the consumer")?;
    let metadata = consumer
        .fetch_metadata(Some(&args.topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read metadata of {}", args.topic))?;
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        bail!("topic {} has no partitions (does it exist?)", args.topic);
    }
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(
            &args.topic,
            p,
            if from_end {
                Offset::End
            } else {
                Offset::Beginning
            },
        )?;
    }
    consumer.assign(&tpl)?;
    let bar = progress(args, "consume");
    let mut report = Report::default();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.duration);
    while report.messages < args.count
        && Instant::now() < deadline
        && stop_early.load(Ordering::Relaxed) == 0
    {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => {
                report.errors += 1;
                tracing::debug!(error = %e, "consume error");
            }
            Some(Ok(m)) => {
                let payload = m.payload().unwrap_or_default();
                if payload.len() >= 8 {
                    let sent = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
                    report.latency.record(now_micros().saturating_sub(sent));
                }
                report.messages += 1;
                report.bytes += payload.len() as u64;
                if report.messages.is_multiple_of(4096) {
                    bar.set_position(report.messages);
                }
            }
        }
    }
    report.elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(report)
}

/// Produces at a rate while a consumer in the same process reads from the end, and
/// reports both sides: the end-to-end latency is the consumer's.
pub fn end_to_end(args: &BenchArgs) -> anyhow::Result<(Report, Report)> {
    let stop = AtomicU64::new(0);
    std::thread::scope(|s| {
        let consumer = s.spawn(|| consume(args, true, &stop));
        // Let the consumer get its assignment and end offsets first.
        std::thread::sleep(Duration::from_secs(2));
        let produced = produce(args);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(1, Ordering::Relaxed);
        let consumed = consumer
            .join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))?;
        Ok((produced?, consumed?))
    })
}
