//! The Kafka transport: services on any Kafka-compatible cluster (`runnel serve`, Apache
//! Kafka, Redpanda) through librdkafka. Enabled by the `kafka` feature.
//!
//! The service code does not change between [`crate::embedded::Embedded`] and
//! [`Kafka`]: both implement [`Transport`], and only the guarantees below differ in
//! wording, not in kind.
//!
//! ## What is guaranteed
//!
//! - **Sending.** One idempotent producer serves every send (`enable.idempotence=true`,
//!   `acks=all`, `linger.ms=5`). [`Transport::send`] resolves once every record has been
//!   acknowledged by all in-sync replicas of its partition. Records to one partition are
//!   written in the order given, and the producer's own retries neither duplicate nor
//!   reorder them (idempotence, KIP-98). When `send` fails, some of its records may have
//!   been written: the runtime sends again, and the deterministic `ce_id` lets consumers
//!   drop the copies.
//! - **Partitioning.** A record without a partition goes where the murmur2 hash of its
//!   key puts it (`partitioner=murmur2_random`, the Java client's default), which is
//!   where [`runnel_core::partitioner::partition_for_key`] puts it on the embedded log.
//!   A record with neither partition nor key goes to any partition.
//! - **Consuming.** A group member delivers each assigned partition in offset order,
//!   from the group's committed offset (or the log start, `auto.offset.reset=earliest`).
//!   It never commits by itself (`enable.auto.commit=false`,
//!   `enable.auto.offset.store=false`): offsets move only through
//!   [`GroupConsumer::commit`] and [`GroupConsumer::revoked`], which the runtime calls
//!   only for records it has finished. Delivery is therefore at least once: a crash
//!   re-delivers everything after the last commit.
//! - **Rebalancing.** Eager, with the range assignor. Before partitions leave, the member
//!   delivers [`Delivery::Revoking`] and holds the rebalance (up to
//!   [`MemberOptions::rebalance_timeout`]) until the runtime answers; it then commits the
//!   final offsets synchronously and lets the rebalance go on, as a Java client commits
//!   in `onPartitionsRevoked`.
//!
//! Not guaranteed: exactly once. A member that misses the rebalance timeout loses its
//! partitions without the final commit, and their records are handled again elsewhere.
//!
//! ## How a group member runs
//!
//! librdkafka runs rebalance callbacks inside `poll`, on the thread that polls. So each
//! member is a dedicated thread that owns its `BaseConsumer` and talks to the async
//! side through two channels:
//!
//! ```text
//!  runtime's poller task                    member thread (owns the BaseConsumer)
//!  next()     <-- deliveries (bounded) ---  poll: Records, Assigned, Revoking
//!  commit()   --- commands ------------->   commit(Sync) between two polls
//!  revoked()  --- commands ------------->   pre_rebalance(Revoke) waits for it, commits
//!  close()    --- Close --------------->    unsubscribe, close (LeaveGroup), thread ends
//! ```
//!
//! Every record passes through that one thread, which also does librdkafka's own work
//! per record (the poll, and parsing the record's headers), so it only copies each
//! record's bytes into a chunk (`packed`); the runtime's poller task builds the
//! `Record`s from the chunks, on another core.
//!
//! Commits run on the member thread rather than on a blocking task sharing the consumer:
//! there they never interleave with a rebalance callback, so a commit only ever names
//! partitions the member owns at that moment (a late commit of a partition that already
//! moved would move its new owner's offset back). A commit that arrives while the thread
//! waits in the revoke callback is served from inside the callback, so the two sides
//! never wait on each other.
//!
//! ## Limits
//!
//! - While the runtime asks for no records (it has too many unfinished), the member
//!   thread keeps its batch and stops polling; past `max.poll.interval.ms` (the
//!   rebalance timeout) librdkafka leaves the group and the partitions move. Records are
//!   handled again, not lost.
//! - A member dropped without [`GroupConsumer::close`] stops polling and commits nothing,
//!   like a crash, but librdkafka still closes the consumer on destruction, which sends
//!   LeaveGroup for a dynamic member: its partitions move at once rather than after the
//!   session timeout. A static member (`instance_id`) sends no LeaveGroup (KIP-345), so
//!   it behaves exactly like a crashed one; for the same reason even its `close` leaves
//!   its partitions in place until the session times out (or it comes back).
//! - `committed` builds a short-lived consumer per call: meant for tools and tests, not
//!   for a hot path.
//! - librdkafka's defaults stand where this module sets nothing: for example a record
//!   that cannot be delivered fails its send after `message.timeout.ms` (300 s); set
//!   it lower through [`KafkaConfig::extra`] to fail sooner. Consumers set two fetch
//!   settings for throughput and latency (`fetch.queue.backoff.ms=10`,
//!   `fetch.wait.max.ms=100`), which `extra` overrides too.
//! - A consumed record's bytes (key, value, header values) are copied out of
//!   librdkafka into 64 KiB chunks shared by consecutive records, not one allocation
//!   each: a record held long (a slow handler, a parked retry) keeps its chunk alive,
//!   at most 64 KiB (or the record's own size, when larger) per record held.
//! - Sessions shorter than 6 s are raised to 6 s, Kafka's default
//!   `group.min.session.timeout.ms`, so one configuration works on every cluster.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::error::Error;
use crate::rng::SplitMix64;
use crate::transport::{
    BoxFuture, Delivery, GroupConsumer, MemberOptions, OutRecord, Reader, Record, Sent,
    TopicPartition, TopicSpec, Transport,
};
use packed::{Packed, Packer, Unpacker};

mod packed;

/// Records handed over per delivery, across partitions.
const DELIVERY_RECORDS_MAX: usize = 4_096;
/// Records a table reader hands over per poll (as many as the embedded transport's):
/// the table feeder writes what it gathered in one transaction, so larger polls mean
/// fewer commits.
const READ_RECORDS_MAX: usize = 16_384;
/// Once a record arrived and librdkafka's queue ran dry, how long the member thread
/// waits for more to add to the same delivery.
const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// One poll of the member thread while nothing arrives: it bounds how long a command
/// (commit, close) waits before the thread sees it.
const POLL_SLICE: Duration = Duration::from_millis(20);
/// While the delivery queue is full, how long the member thread waits for a command
/// before it tries the queue again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);
/// Deliveries queued between a member thread and the runtime.
const DELIVERIES_QUEUED_MAX: usize = 4;
/// Metadata, watermark, committed-offset and admin requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `ensure_topics` waits for new topics to show in the metadata.
const TOPIC_VISIBLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often `ensure_topics` asks for the metadata while it waits.
const TOPIC_VISIBLE_RETRY: Duration = Duration::from_millis(50);
/// How long a send waits for room in librdkafka's queue.
const QUEUE_FULL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `close` waits for the member thread to leave the group.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka's default `group.min.session.timeout.ms`: shorter sessions are refused there.
const SESSION_TIMEOUT_MIN: Duration = Duration::from_secs(6);
/// The longest heartbeat interval: a member learns of a rebalance at its next heartbeat.
const HEARTBEAT_INTERVAL_MAX: Duration = Duration::from_secs(1);
/// Consumers' `fetch.queue.backoff.ms`: see [`fetch_defaults`].
const FETCH_QUEUE_BACKOFF_MS: &str = "10";
/// Consumers' `fetch.wait.max.ms`: see [`fetch_defaults`].
const FETCH_WAIT_MAX_MS: &str = "100";
/// The producer's `linger.ms`: a little batching without a noticeable delay.
const LINGER_MS: u32 = 5;

const _: () = assert!(BATCH_WINDOW.as_millis() < POLL_SLICE.as_millis());
const _: () = assert!(HEARTBEAT_INTERVAL_MAX.as_millis() * 3 <= SESSION_TIMEOUT_MIN.as_millis());

/// Where the cluster is and how to talk to it.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`: `host:port[,host:port...]`.
    pub bootstrap: String,
    /// Starts every client id this transport gives librdkafka (`<prefix>-producer`,
    /// `<prefix>-<service>-<instance>`), so the broker's logs tell the process apart.
    pub client_id_prefix: String,
    /// librdkafka properties passed as they are to every client, after the transport's
    /// own, so they win: security (`security.protocol`, `sasl.*`, `ssl.*`), tuning.
    pub extra: Vec<(String, String)>,
}

impl KafkaConfig {
    /// A cluster at `bootstrap`, client ids starting with `runnel`, nothing extra.
    #[must_use]
    pub fn new(bootstrap: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            bootstrap: bootstrap.into(),
            client_id_prefix: "runnel".into(),
            extra: Vec::new(),
        }
    }

    /// A client configuration with the bootstrap servers and `client_id`.
    fn client(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap).set(
            "client.id",
            format!("{}-{client_id}", self.client_id_prefix),
        );
        c
    }

    /// Adds the user's properties last, so they override the transport's.
    fn finish(&self, c: &mut ClientConfig) {
        for (k, v) in &self.extra {
            c.set(k, v);
        }
    }
}

/// Shows the keys of `extra` but not their values, which may be secrets.
impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("client_id_prefix", &self.client_id_prefix)
            .field(
                "extra",
                &self
                    .extra
                    .iter()
                    .map(|(k, _)| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Services on a Kafka-compatible cluster.
pub struct Kafka {
    /// How to reach the cluster; every client is built from it.
    config: KafkaConfig,
    /// The one idempotent producer every send goes through.
    producer: FutureProducer,
    /// Creates topics, and answers metadata and watermark queries without creating
    /// topics (`allow.auto.create.topics=false`). Shared with blocking tasks.
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Random per transport: readers' throwaway group ids differ across processes.
    nonce: u64,
    /// Numbers readers within this transport.
    readers: AtomicU64,
}

impl fmt::Debug for Kafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kafka")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Kafka {
    /// Builds the producer and the admin client. librdkafka connects lazily and keeps
    /// reconnecting, so an unreachable cluster shows up as timeouts of the first calls
    /// (naming the bootstrap servers), not here; this fails only on configuration.
    pub fn connect(config: KafkaConfig) -> Result<Arc<Kafka>, Error> {
        if config.bootstrap.trim().is_empty() {
            return Err(Error::Config(
                "kafka bootstrap: no broker address given".into(),
            ));
        }
        let mut p = config.client("producer");
        p.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", LINGER_MS.to_string())
            .set("partitioner", "murmur2_random");
        config.finish(&mut p);
        let producer: FutureProducer = p
            .create()
            .map_err(|e| Error::Config(format!("kafka producer for {}: {e}", config.bootstrap)))?;
        let mut a = config.client("admin");
        a.set("allow.auto.create.topics", "false");
        config.finish(&mut a);
        let admin: AdminClient<DefaultClientContext> = a.create().map_err(|e| {
            Error::Config(format!("kafka admin client for {}: {e}", config.bootstrap))
        })?;
        Ok(Arc::new(Kafka {
            config,
            producer,
            admin: Arc::new(admin),
            nonce: SplitMix64::from_entropy().next_u64(),
            readers: AtomicU64::new(0),
        }))
    }

    /// The configuration it was built from.
    #[must_use]
    pub fn config(&self) -> &KafkaConfig {
        &self.config
    }

    /// Puts one record in librdkafka's queue, waiting (bounded) while the queue is full.
    async fn enqueue(&self, r: &OutRecord) -> Result<DeliveryFuture, Error> {
        let deadline = Instant::now() + QUEUE_FULL_TIMEOUT;
        loop {
            // The record borrows `r`; it is consumed or dropped before any await.
            let attempt = {
                let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&r.topic);
                if let Some(k) = &r.key {
                    rec = rec.key(k.as_slice());
                }
                if let Some(v) = &r.value {
                    rec = rec.payload(v.as_slice());
                }
                if let Some(p) = r.partition {
                    rec = rec.partition(p);
                }
                if !r.headers.is_empty() {
                    let mut h = OwnedHeaders::new_with_capacity(r.headers.len());
                    for (key, value) in &r.headers {
                        h = h.insert(Header {
                            key,
                            value: Some(value.as_slice()),
                        });
                    }
                    rec = rec.headers(h);
                }
                self.producer.send_result(rec).map_err(|(e, _)| e)
            };
            match attempt {
                Ok(delivery) => return Ok(delivery),
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull))
                    if Instant::now() < deadline =>
                {
                    // Earlier records leave the queue as the cluster acknowledges them.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err(e) => {
                    return Err(Error::Transport(format!("sending to {:?}: {e}", r.topic)));
                }
            }
        }
    }
}

/// Runs blocking librdkafka calls off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Transport(format!("kafka task failed: {e}")))
}

/// `topic`'s partition count, or `None` while the metadata does not show it.
fn partition_count<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
) -> Result<Option<usize>, Error> {
    let md = client
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(|e| Error::Transport(format!("metadata of topic {topic:?}: {e}")))?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len()))
}

/// Waits until every topic in `names` shows in the metadata, up to the deadline.
fn wait_visible<C: ClientContext>(client: &Client<C>, names: &[String]) -> Result<(), Error> {
    let deadline = Instant::now() + TOPIC_VISIBLE_TIMEOUT;
    for name in names {
        loop {
            match partition_count(client, name) {
                Ok(Some(_)) => break,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Ok(None) if Instant::now() >= deadline => {
                    return Err(Error::Transport(format!(
                        "topic {name:?} does not show in the metadata {TOPIC_VISIBLE_TIMEOUT:?} after it was created"
                    )));
                }
                Ok(None) | Err(_) => std::thread::sleep(TOPIC_VISIBLE_RETRY),
            }
        }
    }
    Ok(())
}

/// Fetch settings of every consumer (group members and readers), before the user's
/// `extra`. librdkafka's defaults stand except where they starve a consumer that keeps
/// up: once a partition's local queue holds `queued.min.messages` (100,000 records) or
/// `queued.max.messages.kbytes` (64 MiB), its next fetch waits `fetch.queue.backoff.ms`
/// (1 s by default), longer than a fast consumer takes to empty the queue.
/// `runnel bench consume` sets the same. `fetch.wait.max.ms` is the one `runnel bench
/// consume` uses: a quiet partition's new records arrive within 100 ms.
fn fetch_defaults(c: &mut ClientConfig) {
    c.set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
}

/// `Duration` as librdkafka's milliseconds, clamped to what it accepts.
fn ms(d: Duration) -> String {
    d.as_millis().min(i32::MAX as u128).to_string()
}

impl Transport for Kafka {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn ensure_topics<'a>(&'a self, topics: &'a [TopicSpec]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            for t in topics {
                runnel_core::topics::check_user_topic(&t.name)
                    .map_err(|e| Error::Config(format!("topic {:?}: {e}", t.name)))?;
            }
            if topics.is_empty() {
                return Ok(());
            }
            let specs: Vec<NewTopic<'_>> = topics
                .iter()
                .map(|t| {
                    let partitions = i32::try_from(t.partitions.max(1)).unwrap_or(i32::MAX);
                    // -1: the cluster's default replication factor (KIP-464).
                    let n = NewTopic::new(&t.name, partitions, TopicReplication::Fixed(-1));
                    if t.compacted {
                        n.set("cleanup.policy", "compact")
                    } else {
                        n
                    }
                })
                .collect();
            let options = AdminOptions::new()
                .request_timeout(Some(REQUEST_TIMEOUT))
                .operation_timeout(Some(REQUEST_TIMEOUT));
            let results = self
                .admin
                .create_topics(&specs, &options)
                .await
                .map_err(|e| {
                    Error::Transport(format!("creating topics on {}: {e}", self.config.bootstrap))
                })?;
            for r in results {
                match r {
                    Ok(name) => info!(topic = %name, "created topic"),
                    Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                    Err((name, code)) => {
                        return Err(Error::Transport(format!("creating topic {name:?}: {code}")));
                    }
                }
            }
            let admin = self.admin.clone();
            let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
            blocking(move || wait_visible(admin.inner(), &names)).await?
        })
    }

    fn watermarks<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<(i64, i64)>, Error>> {
        let admin = self.admin.clone();
        let topic = topic.to_string();
        Box::pin(async move {
            blocking(move || {
                let client = admin.inner();
                let n = partition_count(client, &topic)?
                    .ok_or_else(|| Error::Transport(format!("no topic {topic:?}")))?;
                (0..n as i32)
                    .map(|p| {
                        client
                            .fetch_watermarks(&topic, p, REQUEST_TIMEOUT)
                            .map_err(|e| {
                                Error::Transport(format!("watermarks of {topic}-{p}: {e}"))
                            })
                    })
                    .collect()
            })
            .await?
        })
    }

    fn send(&self, records: Vec<OutRecord>) -> BoxFuture<'_, Result<Vec<Sent>, Error>> {
        Box::pin(async move {
            // Everything is queued first, in order, so one round trip carries many
            // records; idempotence keeps each partition's order through retries.
            let mut pending = Vec::with_capacity(records.len());
            for r in &records {
                pending.push(self.enqueue(r).await?);
            }
            let mut sent = Vec::with_capacity(pending.len());
            for (r, delivery) in records.iter().zip(pending) {
                match delivery.await {
                    Ok(Ok(d)) => sent.push(Sent {
                        partition: d.partition,
                        offset: d.offset,
                    }),
                    Ok(Err((e, _))) => {
                        return Err(Error::Transport(format!("sending to {:?}: {e}", r.topic)));
                    }
                    Err(_) => {
                        return Err(Error::Transport(format!(
                            "sending to {:?}: the producer went away",
                            r.topic
                        )));
                    }
                }
            }
            Ok(sent)
        })
    }

    fn reader(&self, from: Vec<(TopicPartition, i64)>) -> Result<Box<dyn Reader>, Error> {
        let n = self.readers.fetch_add(1, Ordering::Relaxed);
        let group = format!(
            "{}-reader-{:016x}-{n}",
            self.config.client_id_prefix, self.nonce
        );
        let mut c = self.config.client("reader");
        // librdkafka wants a group id for some internals; this one never joins or
        // commits, so it never shows on the cluster.
        c.set("group.id", &group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        fetch_defaults(&mut c);
        self.config.finish(&mut c);
        let consumer: BaseConsumer = c
            .create()
            .map_err(|e| Error::Config(format!("kafka reader: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        for (tp, offset) in &from {
            tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))
                .map_err(|e| Error::Transport(format!("reading {tp} from {offset}: {e}")))?;
        }
        consumer.assign(&tpl).map_err(|e| {
            Error::Transport(format!(
                "assigning {} partitions to a reader: {e}",
                from.len()
            ))
        })?;
        Ok(Box::new(KafkaReader {
            inner: Arc::new(ReaderInner {
                consumer,
                packer: Mutex::new(Packer::default()),
            }),
            in_flight: None,
            unpacker: Unpacker::default(),
        }))
    }

    fn subscribe(
        &self,
        options: MemberOptions,
    ) -> BoxFuture<'_, Result<Box<dyn GroupConsumer>, Error>> {
        Box::pin(async move {
            let member = KafkaMember::start(&self.config, options)?;
            Ok(Box::new(member) as Box<dyn GroupConsumer>)
        })
    }

    fn committed<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(i32, i64)>, Error>> {
        let mut c = self.config.client("offsets");
        // A consumer that never subscribes: it reads the group's offsets (OffsetFetch)
        // without joining it.
        c.set("group.id", group).set("enable.auto.commit", "false");
        self.config.finish(&mut c);
        let admin = self.admin.clone();
        let (group, topic) = (group.to_string(), topic.to_string());
        Box::pin(async move {
            let consumer: BaseConsumer = c
                .create()
                .map_err(|e| Error::Config(format!("kafka offsets reader: {e}")))?;
            blocking(move || {
                let Some(n) = partition_count(admin.inner(), &topic)? else {
                    return Ok(Vec::new());
                };
                let mut tpl = TopicPartitionList::new();
                for p in 0..n as i32 {
                    tpl.add_partition(&topic, p);
                }
                let got = consumer
                    .committed_offsets(tpl, REQUEST_TIMEOUT)
                    .map_err(|e| {
                        Error::Transport(format!(
                            "committed offsets of group {group:?} on {topic:?}: {e}"
                        ))
                    })?;
                Ok(got
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect())
            })
            .await?
        })
    }
}

/// What a failed [`Unpacker::unpack`] means: a bug in this module, never bad input.
fn corrupt() -> Error {
    Error::Transport("kafka transport: a packed chunk does not hold whole records (a bug)".into())
}

/// Whether librdkafka says the consumer cannot go on.
fn is_fatal(e: &KafkaError) -> bool {
    matches!(e, KafkaError::MessageConsumptionFatal(_))
}

/// A consumer assigned partitions at given offsets, without a group.
struct KafkaReader {
    /// Shared with the blocking task that polls.
    inner: Arc<ReaderInner>,
    /// A poll whose caller went away before it ended: the next poll takes its records,
    /// so none are lost.
    in_flight: Option<tokio::task::JoinHandle<Result<Packed, Error>>>,
    /// Builds the records the blocking poll packed.
    unpacker: Unpacker,
}

/// What a reader's blocking poll needs.
struct ReaderInner {
    consumer: BaseConsumer,
    packer: Mutex<Packer>,
}

/// Takes the lock, even if a panic poisoned it (the data stays consistent: every
/// critical section is a push or a take).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits up to `wait` for a first record, then takes what is already there, up to the
/// delivery limit.
fn read_batch(inner: &ReaderInner, wait: Duration) -> Result<Packed, Error> {
    let deadline = Instant::now() + wait;
    let mut packer = lock(&inner.packer);
    while packer.len() < READ_RECORDS_MAX {
        let timeout = if packer.len() == 0 {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        match inner.consumer.poll(timeout) {
            Some(Ok(m)) => packer.push(&m),
            Some(Err(e)) if is_fatal(&e) => {
                return Err(Error::Transport(format!("reader: {e}")));
            }
            Some(Err(e)) => {
                debug!(%e, "reader: consumer error; librdkafka retries");
                if timeout.is_zero() {
                    break;
                }
            }
            None if packer.len() == 0 && Instant::now() < deadline => {}
            None => break,
        }
    }
    Ok(packer.take())
}

impl Reader for KafkaReader {
    fn poll(&mut self, wait: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>> {
        Box::pin(async move {
            let task = self.in_flight.get_or_insert_with(|| {
                let inner = self.inner.clone();
                tokio::task::spawn_blocking(move || read_batch(&inner, wait))
            });
            let done = task.await;
            self.in_flight = None;
            let packed =
                done.map_err(|e| Error::Transport(format!("reader task failed: {e}")))??;
            self.unpacker.unpack(packed).map_err(|_| corrupt())
        })
    }

    fn positions(&self) -> Vec<(TopicPartition, i64)> {
        if self.in_flight.is_some() {
            // A poll is under way: what it takes is not handed over yet.
            return Vec::new();
        }
        let Ok(list) = self.inner.consumer.position() else {
            return Vec::new();
        };
        list.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => {
                    Some((TopicPartition::new(e.topic(), e.partition()), o))
                }
                _ => None,
            })
            .collect()
    }
}

/// What the runtime's side asks of a member thread.
enum Command {
    /// Commit these offsets, answer when the cluster has.
    Commit(
        Vec<(TopicPartition, i64)>,
        oneshot::Sender<Result<(), Error>>,
    ),
    /// The answer to a [`Delivery::Revoking`]: the final offsets of the leaving
    /// partitions.
    Revoked(
        Vec<(TopicPartition, i64)>,
        oneshot::Sender<Result<(), Error>>,
    ),
    /// Leave the group and end. (Wakes a thread that waits for a command; the flag in
    /// [`Flags`] is what it acts on.)
    Close,
}

/// State both sides of a member read.
#[derive(Debug, Default)]
struct Flags {
    /// The member is ending (close or drop): callbacks stop waiting for the runtime.
    stopping: AtomicBool,
    /// It was dropped without close: behave like a crash, commit nothing.
    abandoned: AtomicBool,
}

/// The member's librdkafka context: what its rebalance callbacks need to reach the
/// runtime. Lives on the member thread; the mutexes are there because librdkafka wants
/// the context `Sync`, and are never contended.
struct Bridge {
    /// The group, for errors and logs.
    group: String,
    /// How long the revoke callback waits for the runtime's answer.
    rebalance_timeout: Duration,
    /// To the runtime: records, assignments, revocations, a fatal error.
    deliveries: mpsc::Sender<Result<Handed, Error>>,
    /// From the runtime: commits, the revocation answer, close.
    commands: Mutex<std_mpsc::Receiver<Command>>,
    /// Records polled and not yet handed over. Flushed before every Revoking and
    /// Assigned, so the runtime sees them in the order they were polled.
    batch: Mutex<Packer>,
    /// Shared with [`KafkaMember`].
    flags: Arc<Flags>,
}

/// What a member thread hands the runtime's side.
enum Handed {
    /// Records, to unpack there.
    Records(Packed),
    /// An assignment or a revocation.
    Delivery(Delivery),
}

/// What one look at the command channel found.
enum Served {
    /// Nothing came.
    Nothing,
    /// A command was served (a commit, or a stale answer).
    Handled,
    /// The answer to the revocation in progress.
    Revoked(
        Vec<(TopicPartition, i64)>,
        oneshot::Sender<Result<(), Error>>,
    ),
    /// The member is ending.
    Stop,
}

impl Bridge {
    fn stopping(&self) -> bool {
        self.flags.stopping.load(Ordering::SeqCst)
    }

    fn stop(&self) {
        self.flags.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits up to `wait` for one command and serves it. Only inside the revoke
    /// callback (`revoking`) is a revocation answer taken; anywhere else it is stale:
    /// the rebalance went on without it.
    fn serve(&self, consumer: &BaseConsumer<Bridge>, wait: Duration, revoking: bool) -> Served {
        if self.stopping() {
            return Served::Stop;
        }
        let received = {
            let commands = lock(&self.commands);
            if wait.is_zero() {
                commands
                    .try_recv()
                    .map_err(|e| matches!(e, TryRecvError::Disconnected))
            } else {
                commands
                    .recv_timeout(wait)
                    .map_err(|e| matches!(e, RecvTimeoutError::Disconnected))
            }
        };
        match received {
            Err(false) => Served::Nothing,
            // The handle is gone: `close` sent Close first, a drop set `abandoned`.
            Err(true) | Ok(Command::Close) => {
                self.stop();
                Served::Stop
            }
            Ok(Command::Commit(offsets, reply)) => {
                let _ = reply.send(commit_offsets(consumer, &self.group, offsets));
                Served::Handled
            }
            Ok(Command::Revoked(offsets, reply)) if revoking => Served::Revoked(offsets, reply),
            Ok(Command::Revoked(_, reply)) => {
                let _ = reply.send(Err(Error::Transport(format!(
                    "group {:?}: the rebalance went on after {:?} without the final commit",
                    self.group, self.rebalance_timeout
                ))));
                Served::Handled
            }
        }
    }

    /// Serves every command already queued; false when the member is ending.
    fn serve_queued(&self, consumer: &BaseConsumer<Bridge>) -> bool {
        loop {
            match self.serve(consumer, Duration::ZERO, false) {
                Served::Nothing => return true,
                Served::Handled => {}
                Served::Stop => return false,
                Served::Revoked(..) => unreachable!("answers are taken only while revoking"),
            }
        }
    }

    /// Hands `item` to the runtime, serving commands while the queue is full (the
    /// runtime may be waiting on a commit before it reads again). False when the member
    /// is ending or `deadline` passed first.
    fn forward(
        &self,
        consumer: &BaseConsumer<Bridge>,
        mut item: Result<Handed, Error>,
        deadline: Option<Instant>,
    ) -> bool {
        loop {
            match self.deliveries.try_send(item) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    self.stop();
                    return false;
                }
                Err(mpsc::error::TrySendError::Full(back)) => item = back,
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            match self.serve(consumer, QUEUE_FULL_WAIT, false) {
                Served::Stop => return false,
                Served::Nothing | Served::Handled => {}
                Served::Revoked(..) => unreachable!("answers are taken only while revoking"),
            }
        }
    }

    /// Hands over the records polled so far.
    fn flush(&self, consumer: &BaseConsumer<Bridge>, deadline: Option<Instant>) -> bool {
        let packed = lock(&self.batch).take();
        packed.is_empty() || self.forward(consumer, Ok(Handed::Records(packed)), deadline)
    }

    /// The eager revocation: hand the runtime what was polled and a Revoking, wait for
    /// its answer (serving commits meanwhile), commit the final offsets, return.
    fn revoke(&self, consumer: &BaseConsumer<Bridge>, tps: Vec<TopicPartition>) {
        let deadline = Instant::now() + self.rebalance_timeout;
        if !self.flush(consumer, Some(deadline))
            || !self.forward(
                consumer,
                Ok(Handed::Delivery(Delivery::Revoking(tps))),
                Some(deadline),
            )
        {
            if !self.stopping() {
                warn!(group = %self.group, "the runtime did not take the revocation in time; partitions move without a final commit");
            }
            return;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                warn!(group = %self.group, timeout = ?self.rebalance_timeout, "no answer to the revocation in time; partitions move without a final commit");
                return;
            }
            match self.serve(consumer, left, true) {
                Served::Revoked(offsets, reply) => {
                    let r = if consumer.assignment_lost() {
                        // The group already gave these partitions away: a commit now
                        // could move their new owner's offsets back.
                        Err(Error::Transport(format!(
                            "group {:?}: the assignment was lost; not committed",
                            self.group
                        )))
                    } else {
                        commit_offsets(consumer, &self.group, offsets)
                    };
                    if let Err(e) = &r {
                        debug!(group = %self.group, %e, "final commit before the rebalance");
                    }
                    let _ = reply.send(r);
                    return;
                }
                Served::Stop => return,
                Served::Nothing | Served::Handled => {}
            }
        }
    }
}

/// The partitions of a librdkafka list.
fn tps_of(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| TopicPartition::new(e.topic(), e.partition()))
        .collect()
}

/// librdkafka's own logs and errors go to `tracing`, with the group, so a member's
/// trouble (a missed poll interval, a lost coordinator) shows in the service's logs.
impl ClientContext for Bridge {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let group = &self.group;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(group, facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => warn!(group, facility, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(group, facility, "librdkafka: {message}");
            }
            RDKafkaLogLevel::Debug => debug!(group, facility, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // librdkafka reconnects and retries by itself; these say why it has to.
        warn!(group = %self.group, %error, reason, "librdkafka error");
    }
}

impl ConsumerContext for Bridge {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let tps = tps_of(tpl);
                // Ending, or nothing owned: there is nothing for the runtime to finish.
                if !self.stopping() && !tps.is_empty() {
                    self.revoke(consumer, tps);
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(group = %self.group, %e, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            if self.stopping() {
                return;
            }
            // Records of the new assignment come from later polls: Assigned goes first.
            if self.flush(consumer, None) {
                self.forward(
                    consumer,
                    Ok(Handed::Delivery(Delivery::Assigned(tps_of(tpl)))),
                    None,
                );
            }
        }
    }
}

/// Commits `offsets` for the group, synchronously, on the member thread. Only offsets of
/// partitions the member owns are sent: the others moved, and their new owner's offsets
/// must not move back. Those are named in an error after the rest is committed.
fn commit_offsets(
    consumer: &BaseConsumer<Bridge>,
    group: &str,
    offsets: Vec<(TopicPartition, i64)>,
) -> Result<(), Error> {
    if offsets.is_empty() {
        return Ok(());
    }
    let owned = consumer
        .assignment()
        .map_err(|e| Error::Transport(format!("group {group:?}: reading the assignment: {e}")))?;
    let mut tpl = TopicPartitionList::new();
    let mut moved = Vec::new();
    for (tp, offset) in offsets {
        if owned.find_partition(&tp.topic, tp.partition).is_none() {
            moved.push(tp.to_string());
            continue;
        }
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(offset))
            .map_err(|e| {
                Error::Transport(format!("group {group:?}: committing {tp} at {offset}: {e}"))
            })?;
    }
    if tpl.count() > 0 {
        consumer
            .commit(&tpl, CommitMode::Sync)
            .map_err(|e| Error::Transport(format!("group {group:?}: commit failed: {e}")))?;
    }
    if moved.is_empty() {
        Ok(())
    } else {
        Err(Error::Transport(format!(
            "group {group:?}: not committed, no longer owned: {}",
            moved.join(", ")
        )))
    }
}

/// Polls into the bridge's batch: up to [`POLL_SLICE`] for a first record, then what
/// arrives within [`BATCH_WINDOW`], up to [`DELIVERY_RECORDS_MAX`]. Rebalance callbacks
/// run inside these polls. What librdkafka already holds is taken without a timeout
/// (no clock reading per record); the window's clock runs only when it holds nothing.
fn gather(consumer: &BaseConsumer<Bridge>) -> Result<(), Error> {
    let bridge = consumer.context();
    let mut window_end: Option<Instant> = None;
    let mut timeout = POLL_SLICE;
    loop {
        match consumer.poll(timeout) {
            Some(Ok(m)) => {
                let mut batch = lock(&bridge.batch);
                batch.push(&m);
                if batch.len() >= DELIVERY_RECORDS_MAX {
                    return Ok(());
                }
                timeout = Duration::ZERO;
            }
            Some(Err(e)) if is_fatal(&e) => {
                return Err(Error::Transport(format!("group {:?}: {e}", bridge.group)));
            }
            Some(Err(e)) => {
                warn!(group = %bridge.group, %e, "consumer error; librdkafka retries");
                return Ok(());
            }
            // Nothing queued: wait for more while the window lasts.
            None if timeout.is_zero() => {
                let end = *window_end.get_or_insert_with(|| Instant::now() + BATCH_WINDOW);
                timeout = end.saturating_duration_since(Instant::now());
                if timeout.is_zero() {
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    }
}

/// The member thread: polls, hands over, serves commands between polls; at the end
/// leaves the group (close) or just stops (drop).
fn run_member(consumer: BaseConsumer<Bridge>) {
    let bridge = consumer.context().clone();
    while !bridge.stopping() && bridge.serve_queued(&consumer) {
        if let Err(e) = gather(&consumer) {
            if bridge.flush(&consumer, None) {
                bridge.forward(&consumer, Err(e), None);
            }
            break;
        }
        if !bridge.flush(&consumer, None) {
            break;
        }
    }
    bridge.stop();
    let abandoned = bridge.flags.abandoned.load(Ordering::SeqCst);
    if !abandoned {
        consumer.unsubscribe();
    }
    // librdkafka closes the consumer here: LeaveGroup (for a dynamic member), and a
    // last revoke callback, which no longer waits for the runtime.
    drop(consumer);
    debug!(group = %bridge.group, abandoned, "group member stopped");
}

/// The runtime's side of a group member.
struct KafkaMember {
    /// The group, for errors.
    group: String,
    /// To the member thread.
    commands: std_mpsc::Sender<Command>,
    /// From the member thread.
    deliveries: mpsc::Receiver<Result<Handed, Error>>,
    /// Builds the records the member thread packed.
    unpacker: Unpacker,
    /// Shared with the member thread.
    flags: Arc<Flags>,
    /// The member thread; `None` once `close` took it.
    thread: Option<JoinHandle<()>>,
}

impl KafkaMember {
    /// Builds the consumer, subscribes, and starts the member thread.
    fn start(config: &KafkaConfig, options: MemberOptions) -> Result<KafkaMember, Error> {
        let session = options.session_timeout.max(SESSION_TIMEOUT_MIN);
        let mut c = config.client(&options.client_id);
        c.set("group.id", &options.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "range")
            .set("session.timeout.ms", ms(session))
            .set(
                "heartbeat.interval.ms",
                ms((session / 3).min(HEARTBEAT_INTERVAL_MAX)),
            )
            // librdkafka's rebalance timeout in JoinGroup; it must not be below the session.
            .set(
                "max.poll.interval.ms",
                ms(options.rebalance_timeout.max(session)),
            );
        if let Some(id) = &options.instance_id {
            c.set("group.instance.id", id);
        }
        fetch_defaults(&mut c);
        config.finish(&mut c);
        let (deliveries_tx, deliveries) = mpsc::channel(DELIVERIES_QUEUED_MAX);
        let (commands, commands_rx) = std_mpsc::channel();
        let flags = Arc::new(Flags::default());
        let bridge = Bridge {
            group: options.group.clone(),
            rebalance_timeout: options.rebalance_timeout,
            deliveries: deliveries_tx,
            commands: Mutex::new(commands_rx),
            batch: Mutex::new(Packer::default()),
            flags: flags.clone(),
        };
        let group = &options.group;
        let consumer: BaseConsumer<Bridge> = c
            .create_with_context(bridge)
            .map_err(|e| Error::Config(format!("kafka consumer for group {group:?}: {e}")))?;
        let topics: Vec<&str> = options.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|e| {
            Error::Transport(format!("group {group:?}: subscribing to {topics:?}: {e}"))
        })?;
        let thread = std::thread::Builder::new()
            .name(format!("kafka-{group}"))
            .spawn(move || run_member(consumer))
            .map_err(|e| {
                Error::Transport(format!("group {group:?}: starting the member thread: {e}"))
            })?;
        Ok(KafkaMember {
            group: options.group,
            commands,
            deliveries,
            unpacker: Unpacker::default(),
            flags,
            thread: Some(thread),
        })
    }

    fn gone(&self) -> Error {
        Error::Transport(format!(
            "the consumer of group {:?} has stopped",
            self.group
        ))
    }

    /// Sends a command and waits for the member thread's answer.
    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), Error>>) -> Command,
    ) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(command(tx)).is_err() {
            return Err(self.gone());
        }
        rx.await.unwrap_or_else(|_| Err(self.gone()))
    }
}

impl GroupConsumer for KafkaMember {
    fn next(&mut self, idle: Duration) -> BoxFuture<'_, Result<Delivery, Error>> {
        Box::pin(async move {
            match tokio::time::timeout(idle, self.deliveries.recv()).await {
                Err(_) => Ok(Delivery::Idle),
                Ok(Some(Ok(Handed::Records(packed)))) => self
                    .unpacker
                    .unpack(packed)
                    .map(Delivery::Records)
                    .map_err(|_| corrupt()),
                Ok(Some(Ok(Handed::Delivery(d)))) => Ok(d),
                Ok(Some(Err(e))) => Err(e),
                Ok(None) => Err(self.gone()),
            }
        })
    }

    fn commit(&mut self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            if offsets.is_empty() {
                return Ok(());
            }
            self.ask(|reply| Command::Commit(offsets, reply)).await
        })
    }

    fn revoked(&mut self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.ask(|reply| Command::Revoked(offsets, reply)))
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        self.flags.stopping.store(true, Ordering::SeqCst);
        let _ = self.commands.send(Command::Close);
        // A thread waiting for room in the queue gives up at once.
        self.deliveries.close();
        let thread = self.thread.take();
        let group = self.group.clone();
        Box::pin(async move {
            let Some(thread) = thread else {
                return Ok(());
            };
            let joined = tokio::time::timeout(
                CLOSE_TIMEOUT,
                tokio::task::spawn_blocking(move || thread.join()),
            )
            .await;
            match joined {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(_))) => Err(Error::Transport(format!(
                    "group {group:?}: the member thread panicked"
                ))),
                Ok(Err(e)) => Err(Error::Transport(format!("group {group:?}: {e}"))),
                Err(_) => Err(Error::Transport(format!(
                    "group {group:?}: leaving took longer than {CLOSE_TIMEOUT:?}"
                ))),
            }
        })
    }
}

/// Without `close`: a crash as far as librdkafka allows. The thread stops polling and
/// commits nothing; it is not joined (a drop must not block).
impl Drop for KafkaMember {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.flags.abandoned.store(true, Ordering::SeqCst);
            self.flags.stopping.store(true, Ordering::SeqCst);
        }
    }
}
