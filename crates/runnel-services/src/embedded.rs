//! The embedded transport: services in one process on `runnel-core` and `runnel-log`,
//! with real partitions, the real group coordinator (`runnel-group`, the same state
//! machine the broker runs) and committed offsets that survive restarts (the same
//! `__consumer_offsets` the broker keeps). No broker, no sockets.
//!
//! A data directory belongs to one process at a time; the instances of services that
//! share it run in that process (the test harness, demos, single-machine deployments).
//! To spread services over processes or machines, run them on the Kafka transport
//! against `runnel serve` or any Kafka cluster: the service code does not change.
//!
//! Group membership follows Kafka's classic protocol as a client does: JoinGroup (with
//! the KIP-394 member id round trip), the leader computes a range assignment of the
//! subscribed topics' partitions, SyncGroup, then a heartbeat task. When a heartbeat
//! learns of a rebalance, the next [`GroupConsumer::next`] returns
//! [`Delivery::Revoking`] with every owned partition (eager rebalancing).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use runnel_core::Core;
use runnel_core::encode::NewRecord;
use runnel_group::{GroupError, JoinRequest, JoinedMember, MemberRef, Protocol, SyncRequest};
use runnel_log::{Log, LogConfig, LogError, Partition, PartitionId};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::error::Error;
use crate::transport::{
    BoxFuture, Delivery, GroupConsumer, MemberOptions, OutRecord, Reader, Record, Sent,
    TopicPartition, TopicSpec, Transport, header_name_of,
};

/// Bytes read from one partition per poll.
const READ_BYTES_MAX: usize = 1 << 20;
/// Records handed over per delivery of a group consumer, across partitions: the
/// runtime's worker takes them in at once, and pauses fetching above its own limit.
const DELIVERY_RECORDS_MAX: usize = 4_096;
/// Records handed over per poll of a [`Reader`] (table restores): the feeder gathers
/// polls into one store write, so fewer, larger polls cost less per record.
const READER_RECORDS_MAX: usize = 16_384;
/// JoinGroup/SyncGroup round trips before giving up on a join.
const JOIN_ATTEMPTS_MAX: usize = 50;
/// The assignor this transport's members speak.
const ASSIGNOR: &str = "range";

/// Settings of the embedded log and its group coordinator.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Where the log lives.
    pub data_dir: PathBuf,
    /// Shortest session a member may ask for. Kafka's 6 s floor makes a crashed
    /// instance's partitions move slowly; tests and demos use less.
    pub session_timeout_min: Duration,
    /// How long a new group waits for more members before its first assignment.
    pub initial_rebalance_delay: Duration,
}

impl EmbeddedConfig {
    /// Defaults for a data directory: 500 ms minimum sessions, no initial delay.
    #[must_use]
    pub fn new(data_dir: impl Into<PathBuf>) -> EmbeddedConfig {
        EmbeddedConfig {
            data_dir: data_dir.into(),
            session_timeout_min: Duration::from_millis(500),
            initial_rebalance_delay: Duration::ZERO,
        }
    }
}

/// Services on an in-process log.
#[derive(Debug)]
pub struct Embedded {
    core: Arc<Core>,
    /// Turns true on [`Embedded::shutdown`]: parked joins answer and the ticker ends.
    stop: watch::Sender<bool>,
}

impl Embedded {
    /// Opens (or creates) the log in `config.data_dir` and starts the group
    /// coordinator's ticker on the current tokio runtime.
    pub fn open(config: EmbeddedConfig) -> Result<Arc<Embedded>, Error> {
        let mut log_config = LogConfig::new(&config.data_dir);
        log_config.batch_codec = Some(Arc::new(runnel_core::records::KafkaCodecs));
        let log = Log::open(log_config).map_err(|e| {
            Error::Transport(format!(
                "cannot open the log in {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let groups = runnel_group::Config {
            session_timeout_ms_min: i32::try_from(config.session_timeout_min.as_millis())
                .unwrap_or(i32::MAX),
            initial_rebalance_delay_ms: i32::try_from(config.initial_rebalance_delay.as_millis())
                .unwrap_or(i32::MAX),
            ..runnel_group::Config::default()
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let core = Core::new(Arc::new(log), groups, seed)
            .map_err(|e| Error::Transport(format!("cannot load committed offsets: {e}")))?;
        Ok(Embedded::from_core(core))
    }

    /// Runs on a `Core` someone else opened (for example inside `runnel serve`).
    #[must_use]
    pub fn from_core(core: Arc<Core>) -> Arc<Embedded> {
        let (stop, rx) = watch::channel(false);
        let ticking = core.clone();
        tokio::spawn(async move { ticking.groups().run_ticker(rx).await });
        Arc::new(Embedded { core, stop })
    }

    /// The core under this transport.
    #[must_use]
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Stops the coordinator's ticker and answers parked joins; syncs the log.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.core.log().flush() {
            warn!(%e, "flushing the embedded log at shutdown");
        }
    }

    fn partitions_of(&self, topic: &str) -> Vec<Arc<Partition>> {
        self.core
            .log()
            .topic(topic)
            .map(|t| t.partitions())
            .unwrap_or_default()
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn log_error(what: &str, e: &LogError) -> Error {
    Error::Transport(format!("{what}: {e}"))
}

/// Runs blocking log work off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Transport(format!("log task failed: {e}")))
}

impl Transport for Embedded {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn ensure_topics<'a>(&'a self, topics: &'a [TopicSpec]) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            for t in topics {
                runnel_core::topics::check_user_topic(&t.name)
                    .map_err(|e| Error::Config(format!("topic {:?}: {e}", t.name)))?;
                let mut overrides = BTreeMap::new();
                if t.compacted {
                    overrides.insert("cleanup.policy".to_string(), "compact".to_string());
                }
                match self
                    .core
                    .log()
                    .create_topic(&t.name, t.partitions.max(1), &overrides)
                {
                    Ok(_) => info!(topic = %t.name, partitions = t.partitions, "created topic"),
                    Err(LogError::TopicExists(_)) => {}
                    Err(e) => return Err(log_error(&format!("creating topic {:?}", t.name), &e)),
                }
            }
            Ok(())
        })
    }

    fn watermarks<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, Result<Vec<(i64, i64)>, Error>> {
        Box::pin(async move {
            let t = self
                .core
                .log()
                .topic(topic)
                .ok_or_else(|| Error::Transport(format!("no topic {topic:?}")))?;
            Ok(t.partitions()
                .iter()
                .map(|p| (p.log_start_offset().0 as i64, p.high_watermark().0 as i64))
                .collect())
        })
    }

    fn send(&self, records: Vec<OutRecord>) -> BoxFuture<'_, Result<Vec<Sent>, Error>> {
        Box::pin(async move {
            // One produce per topic, each record's place remembered.
            let mut by_topic: BTreeMap<String, Vec<(usize, Option<u32>, NewRecord)>> =
                BTreeMap::new();
            let n = records.len();
            for (i, r) in records.into_iter().enumerate() {
                let partition = match r.partition {
                    Some(p) => Some(u32::try_from(p).map_err(|_| {
                        Error::Transport(format!("partition {p} of {:?} is negative", r.topic))
                    })?),
                    None => None,
                };
                by_topic.entry(r.topic).or_default().push((
                    i,
                    partition,
                    NewRecord {
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                        timestamp_ms: None,
                    },
                ));
            }
            let mut out = vec![
                Sent {
                    partition: -1,
                    offset: -1
                };
                n
            ];
            for (topic, recs) in by_topic {
                let places: Vec<usize> = recs.iter().map(|(i, _, _)| *i).collect();
                let batch: Vec<(Option<u32>, NewRecord)> =
                    recs.into_iter().map(|(_, p, r)| (p, r)).collect();
                let core = self.core.clone();
                let t = topic.clone();
                let sent = blocking(move || core.produce(&t, batch))
                    .await?
                    .map_err(|e| Error::Transport(format!("sending to {topic:?}: {e}")))?;
                for (i, (p, o)) in places.into_iter().zip(sent) {
                    out[i] = Sent {
                        partition: p as i32,
                        offset: o,
                    };
                }
            }
            Ok(out)
        })
    }

    fn reader(&self, from: Vec<(TopicPartition, i64)>) -> Result<Box<dyn Reader>, Error> {
        let mut parts = Vec::with_capacity(from.len());
        for (tp, offset) in from {
            let p = self
                .core
                .log()
                .partition(&tp.topic, PartitionId(tp.partition.max(0) as u32))
                .map_err(|e| log_error(&format!("reading {tp}"), &e))?;
            parts.push(Fetching::new(tp, p, offset));
        }
        Ok(Box::new(EmbeddedReader { parts, rotate: 0 }))
    }

    fn subscribe(
        &self,
        options: MemberOptions,
    ) -> BoxFuture<'_, Result<Box<dyn GroupConsumer>, Error>> {
        Box::pin(async move {
            let consumer = EmbeddedConsumer {
                core: self.core.clone(),
                stop: self.stop.subscribe(),
                options,
                member_id: String::new(),
                generation: -1,
                joined: false,
                owned: Vec::new(),
                rotate: 0,
                rebalance: Arc::new(Signal::default()),
                heartbeat: None,
            };
            Ok(Box::new(consumer) as Box<dyn GroupConsumer>)
        })
    }

    fn committed<'a>(
        &'a self,
        group: &'a str,
        topic: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(i32, i64)>, Error>> {
        Box::pin(async move {
            let n = self.partitions_of(topic).len() as i32;
            Ok((0..n)
                .filter_map(|p| {
                    self.core
                        .offsets()
                        .get(group, topic, p)
                        .map(|c| (p, c.offset))
                })
                .collect())
        })
    }
}

/// One partition being read: where, the next offset to read from the log, and what was
/// read but not yet handed over.
#[derive(Debug)]
struct Fetching {
    tp: TopicPartition,
    partition: Arc<Partition>,
    /// The offset the next read of the log starts at: after the last batch read.
    next: i64,
    /// Records read and not yet handed over, in offset order. A read returns whole
    /// batches up to `READ_BYTES_MAX`, often more than a delivery has room for; the rest
    /// waits here rather than being decoded again by the next read. They are slices of
    /// the read buffer, so holding them costs that buffer, not a copy.
    buffered: VecDeque<Record>,
    /// Wakes when the high watermark moves.
    hw: watch::Receiver<runnel_log::Offset>,
}

impl Fetching {
    fn new(tp: TopicPartition, partition: Arc<Partition>, next: i64) -> Fetching {
        let hw = partition.subscribe();
        Fetching {
            tp,
            partition,
            next,
            buffered: VecDeque::new(),
            hw,
        }
    }

    /// Records from `next` on, up to `room`.
    fn fetch(&mut self, room: usize, out: &mut Vec<Record>) -> Result<(), Error> {
        if self.buffered.is_empty() {
            self.read()?;
        }
        let take = room.min(self.buffered.len());
        out.extend(self.buffered.drain(..take));
        Ok(())
    }

    /// Reads the next batches of the log into `buffered`.
    fn read(&mut self) -> Result<(), Error> {
        let start = self.partition.log_start_offset().0 as i64;
        if self.next < start {
            // Retention removed what this reader has not seen: start at the log start,
            // as a Kafka consumer with auto.offset.reset=earliest does.
            warn!(tp = %self.tp, from = self.next, to = start, "records were deleted before they were read; skipping to the log start");
            self.next = start;
        }
        if self.next >= self.partition.high_watermark().0 as i64 {
            return Ok(());
        }
        let (records, next) =
            runnel_core::records::read(&self.partition, self.next, READ_BYTES_MAX)
                .map_err(|e| log_error(&format!("reading {}", self.tp), &e))?;
        self.buffered.extend(records.into_iter().map(|r| {
            Record {
                tp: self.tp.clone(),
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (header_name_of(&k), v))
                    .collect(),
            }
        }));
        // Continue after the last batch, which may end past the last record kept by
        // compaction.
        self.next = self.next.max(next);
        Ok(())
    }
}

/// Reads from every partition in turn, starting one further each time, up to `max`
/// records.
fn fetch_all(parts: &mut [Fetching], rotate: &mut usize, max: usize) -> Result<Vec<Record>, Error> {
    let mut out = Vec::new();
    let n = parts.len();
    for i in 0..n {
        let room = max - out.len();
        if room == 0 {
            break;
        }
        parts[(*rotate + i) % n].fetch(room, &mut out)?;
    }
    if n > 0 {
        *rotate = (*rotate + 1) % n;
    }
    Ok(out)
}

/// Waits until a partition's high watermark moves, `extra` fires, or `wait` passes.
async fn wait_for_data(parts: &mut [Fetching], extra: Option<&Notify>, wait: Duration) {
    let mut changes: Vec<_> = parts.iter_mut().map(|p| Box::pin(p.hw.changed())).collect();
    let any = async {
        if changes.is_empty() {
            std::future::pending::<()>().await;
        } else {
            let _ = futures_util::future::select_all(changes.iter_mut()).await;
        }
    };
    let notified = async {
        match extra {
            Some(n) => n.notified().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = any => {}
        () = notified => {}
        () = tokio::time::sleep(wait) => {}
    }
}

#[derive(Debug)]
struct EmbeddedReader {
    parts: Vec<Fetching>,
    /// The partition the next poll reads first, so that none is always served last.
    rotate: usize,
}

impl Reader for EmbeddedReader {
    fn poll(&mut self, wait: Duration) -> BoxFuture<'_, Result<Vec<Record>, Error>> {
        Box::pin(async move {
            let got = fetch_all(&mut self.parts, &mut self.rotate, READER_RECORDS_MAX)?;
            if !got.is_empty() {
                return Ok(got);
            }
            wait_for_data(&mut self.parts, None, wait).await;
            fetch_all(&mut self.parts, &mut self.rotate, READER_RECORDS_MAX)
        })
    }

    fn positions(&self) -> Vec<(TopicPartition, i64)> {
        self.parts
            .iter()
            .map(|f| {
                (
                    f.tp.clone(),
                    f.buffered.front().map_or(f.next, |r| r.offset),
                )
            })
            .collect()
    }
}

/// Set by the heartbeat task when the member must rejoin.
#[derive(Debug, Default)]
struct Signal {
    raised: AtomicBool,
    notify: Notify,
}

impl Signal {
    fn raise(&self) {
        self.raised.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// One member of a group on the embedded coordinator.
#[derive(Debug)]
struct EmbeddedConsumer {
    core: Arc<Core>,
    stop: watch::Receiver<bool>,
    options: MemberOptions,
    member_id: String,
    generation: i32,
    joined: bool,
    owned: Vec<Fetching>,
    /// The owned partition the next delivery reads first, so that none is always last.
    rotate: usize,
    rebalance: Arc<Signal>,
    heartbeat: Option<JoinHandle<()>>,
}

impl Drop for EmbeddedConsumer {
    fn drop(&mut self) {
        // A dropped member stops heartbeating, as a crashed process does; the group
        // drops it when its session times out.
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

impl EmbeddedConsumer {
    fn member_ref(&self) -> MemberRef {
        MemberRef {
            group_id: self.options.group.clone(),
            member_id: self.member_id.clone(),
            group_instance_id: self.options.instance_id.clone(),
            generation_id: self.generation,
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Joins and syncs; on success, owns the assigned partitions at their committed
    /// offsets.
    async fn join(&mut self) -> Result<Vec<TopicPartition>, Error> {
        let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
        for _ in 0..JOIN_ATTEMPTS_MAX {
            if self.stopped() {
                return Err(Error::Shutdown);
            }
            let req = JoinRequest {
                group_id: self.options.group.clone(),
                member_id: self.member_id.clone(),
                group_instance_id: self.options.instance_id.clone(),
                client_id: self.options.client_id.clone(),
                client_host: "/embedded".to_string(),
                session_timeout_ms: ms(self.options.session_timeout),
                rebalance_timeout_ms: ms(self.options.rebalance_timeout),
                protocol_type: "consumer".to_string(),
                protocols: vec![Protocol {
                    name: ASSIGNOR.to_string(),
                    metadata: runnel_core::consumer_protocol::encode_subscription(
                        &self.options.topics,
                    ),
                }],
                require_known_member_id: true,
            };
            let joined = self.core.groups().join(req, &mut self.stop).await;
            match joined.error {
                None => {}
                Some(GroupError::MemberIdRequired) => {
                    self.member_id = joined.member_id;
                    continue;
                }
                Some(GroupError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(GroupError::RebalanceInProgress) => continue,
                Some(GroupError::CoordinatorNotAvailable) if self.stopped() => {
                    return Err(Error::Shutdown);
                }
                Some(e) => {
                    return Err(Error::Transport(format!(
                        "joining group {:?}: {e:?}",
                        self.options.group
                    )));
                }
            }
            self.member_id = joined.member_id.clone();
            self.generation = joined.generation_id;
            let assignments = if joined.leader == self.member_id {
                self.assign(&joined.members)
            } else {
                Vec::new()
            };
            let synced = self
                .core
                .groups()
                .sync(
                    SyncRequest {
                        group_id: self.options.group.clone(),
                        generation_id: self.generation,
                        member_id: self.member_id.clone(),
                        group_instance_id: self.options.instance_id.clone(),
                        protocol_type: Some("consumer".to_string()),
                        protocol_name: joined.protocol_name.clone(),
                        assignments,
                    },
                    &mut self.stop,
                )
                .await;
            match synced.error {
                None => {}
                Some(GroupError::RebalanceInProgress | GroupError::IllegalGeneration) => continue,
                Some(GroupError::UnknownMemberId) => {
                    self.member_id.clear();
                    continue;
                }
                Some(GroupError::CoordinatorNotAvailable) if self.stopped() => {
                    return Err(Error::Shutdown);
                }
                Some(e) => {
                    return Err(Error::Transport(format!(
                        "syncing group {:?}: {e:?}",
                        self.options.group
                    )));
                }
            }
            let assigned = runnel_core::consumer_protocol::assigned_partitions(&synced.assignment);
            return Ok(self.own(assigned));
        }
        Err(Error::Transport(format!(
            "group {:?} did not settle after {JOIN_ATTEMPTS_MAX} joins",
            self.options.group
        )))
    }

    /// The leader's range assignment: per topic, each subscribed member (in member order)
    /// gets a contiguous run of partitions, the first ones one more when they do not
    /// divide evenly.
    fn assign(&self, members: &[JoinedMember]) -> Vec<(String, bytes::Bytes)> {
        let mut by_topic: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for m in members {
            let topics =
                runnel_core::consumer_protocol::subscribed_topics(&m.metadata).unwrap_or_default();
            for t in topics {
                by_topic.entry(t).or_default().push(&m.member_id);
            }
        }
        let mut plan: BTreeMap<&str, Vec<(String, Vec<i32>)>> = members
            .iter()
            .map(|m| (m.member_id.as_str(), Vec::new()))
            .collect();
        for (topic, mut subscribers) in by_topic {
            subscribers.sort_unstable();
            let Some(t) = self.core.log().topic(&topic) else {
                continue;
            };
            let n = t.partition_count() as usize;
            let k = subscribers.len();
            let (each, extra) = (n / k, n % k);
            let mut next = 0;
            for (i, m) in subscribers.into_iter().enumerate() {
                let count = each + usize::from(i < extra);
                let parts: Vec<i32> = (next..next + count).map(|p| p as i32).collect();
                next += count;
                if !parts.is_empty() {
                    plan.entry(m).or_default().push((topic.clone(), parts));
                }
            }
        }
        plan.into_iter()
            .map(|(m, a)| {
                (
                    m.to_string(),
                    runnel_core::consumer_protocol::encode_assignment(&a),
                )
            })
            .collect()
    }

    /// Takes the assigned partitions at the group's committed offsets and starts
    /// heartbeating.
    fn own(&mut self, assigned: Vec<(String, i32)>) -> Vec<TopicPartition> {
        let mut owned = Vec::new();
        let mut seen = BTreeSet::new();
        for (topic, p) in assigned {
            if !seen.insert((topic.clone(), p)) {
                continue;
            }
            let Ok(partition) = self
                .core
                .log()
                .partition(&topic, PartitionId(p.max(0) as u32))
            else {
                warn!(
                    topic,
                    partition = p,
                    "assigned a partition that does not exist"
                );
                continue;
            };
            let next = self
                .core
                .offsets()
                .get(&self.options.group, &topic, p)
                .map_or(partition.log_start_offset().0 as i64, |c| c.offset);
            owned.push(Fetching::new(
                TopicPartition::new(&topic, p),
                partition,
                next,
            ));
        }
        let tps: Vec<TopicPartition> = owned.iter().map(|f| f.tp.clone()).collect();
        debug!(group = %self.options.group, member = %self.member_id, generation = self.generation, partitions = ?tps, "joined");
        self.owned = owned;
        self.joined = true;
        self.rebalance = Arc::new(Signal::default());
        self.start_heartbeat();
        tps
    }

    fn start_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let core = self.core.clone();
        let member = self.member_ref();
        let signal = self.rebalance.clone();
        let every = (self.options.session_timeout / 4)
            .clamp(Duration::from_millis(20), Duration::from_secs(1));
        self.heartbeat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let beat = core.groups().with(|c, now, _| c.heartbeat(now, &member));
                if let Err(e) = beat {
                    debug!(group = %member.group_id, member = %member.member_id, error = ?e, "heartbeat: rejoining");
                    signal.raise();
                    return;
                }
            }
        }));
    }

    fn stop_heartbeat(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }

    async fn write_offsets(&self, offsets: Vec<(TopicPartition, i64)>) -> Result<(), Error> {
        if offsets.is_empty() {
            return Ok(());
        }
        let member = self.member_ref();
        self.core
            .groups()
            .with(|c, now, _| c.commit_allowed(now, &member))
            .map_err(|e| {
                Error::Transport(format!(
                    "commit for group {:?} refused: {e:?}",
                    member.group_id
                ))
            })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let changes: Vec<runnel_core::offsets::OffsetChange> = offsets
            .into_iter()
            .map(|(tp, offset)| {
                (
                    (tp.topic.to_string(), tp.partition),
                    Some(runnel_core::offsets::Committed {
                        offset,
                        leader_epoch: -1,
                        metadata: String::new(),
                        commit_ms: now,
                    }),
                )
            })
            .collect();
        let core = self.core.clone();
        let group = member.group_id;
        blocking(move || core.offsets().write(&group, &changes))
            .await?
            .map_err(|e| log_error("writing committed offsets", &e))
    }
}

impl GroupConsumer for EmbeddedConsumer {
    fn next(&mut self, idle: Duration) -> BoxFuture<'_, Result<Delivery, Error>> {
        Box::pin(async move {
            if self.stopped() {
                return Err(Error::Shutdown);
            }
            if !self.joined {
                let tps = self.join().await?;
                return Ok(Delivery::Assigned(tps));
            }
            if self.rebalance.raised.load(Ordering::SeqCst) {
                let tps = self.owned.iter().map(|f| f.tp.clone()).collect();
                return Ok(Delivery::Revoking(tps));
            }
            let got = fetch_all(&mut self.owned, &mut self.rotate, DELIVERY_RECORDS_MAX)?;
            if !got.is_empty() {
                return Ok(Delivery::Records(got));
            }
            let signal = self.rebalance.clone();
            wait_for_data(&mut self.owned, Some(&signal.notify), idle).await;
            if signal.raised.load(Ordering::SeqCst) {
                let tps = self.owned.iter().map(|f| f.tp.clone()).collect();
                return Ok(Delivery::Revoking(tps));
            }
            let got = fetch_all(&mut self.owned, &mut self.rotate, DELIVERY_RECORDS_MAX)?;
            Ok(if got.is_empty() {
                Delivery::Idle
            } else {
                Delivery::Records(got)
            })
        })
    }

    fn commit(&mut self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(self.write_offsets(offsets))
    }

    fn revoked(&mut self, offsets: Vec<(TopicPartition, i64)>) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let committed = self.write_offsets(offsets).await;
            if let Err(e) = &committed {
                // Another member may already own these partitions; it starts from the
                // last commit that went through, so records are handled again, not lost.
                debug!(%e, "final commit before rebalance refused");
            }
            self.stop_heartbeat();
            self.owned.clear();
            self.joined = false;
            Ok(())
        })
    }

    fn close(mut self: Box<Self>) -> BoxFuture<'static, Result<(), Error>> {
        Box::pin(async move {
            self.stop_heartbeat();
            if self.member_id.is_empty() {
                return Ok(());
            }
            let group = self.options.group.clone();
            let me = vec![(self.member_id.clone(), self.options.instance_id.clone())];
            let left = self
                .core
                .groups()
                .with(|c, now, out| c.leave(now, &group, &me, out));
            if let Err(e) = left {
                debug!(group, error = ?e, "leaving the group");
            }
            Ok(())
        })
    }
}
