//! The test harness: real services on a real log, with virtual time.
//!
//! [`TestRuntime`] runs services with the production runtime, by default on the
//! embedded log in a temporary directory (real partitions, the real group coordinator,
//! durable offsets), and on any other [`Transport`] when given one: the conformance
//! suite runs the same scenarios over Kafka. It can publish events, run until every
//! instance is idle, crash and restart instances, add instances (a rebalance), advance
//! the virtual clock that retries and parking follow, and read back tables, emitted
//! events and dead letters.
//!
//! ```text
//! let mut t = TestRuntime::embedded().await?;
//! let n = t.start(notifications()).await?;          // waits until ready
//! t.publish(&CustomerUpdated { .. }).await?;
//! t.publish(&OrderCreated { .. }).await?;
//! t.run_until_idle().await?;
//! assert_eq!(t.events::<NotificationSent>().await?.len(), 1);
//! t.crash(n);                                         // like SIGKILL
//! t.restart(n).await?;                                // resumes from committed offsets
//! t.advance(Duration::from_secs(60));                 // fires retries and parks
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::clock::ManualClock;
use crate::contract::{self, Event};
use crate::embedded::{Embedded, EmbeddedConfig};
use crate::error::Error;
use crate::handler::event_record;
use crate::metadata::{fresh_event_id, headers};
use crate::metrics::Snapshot;
use crate::rng::SplitMix64;
use crate::runtime::{Runtime, ServiceHandle};
use crate::service::{Service, dead_letter_topic};
use crate::table::TableRef;
use crate::trace::TraceParent;
use crate::transport::{BoxFuture, Record, TopicPartition, Transport};

/// How long harness waits may take before they fail the test.
const WAIT_MAX: Duration = Duration::from_secs(60);
/// The harness's poll interval: idle is noticed quickly.
const IDLE_POLL: Duration = Duration::from_millis(20);

/// Starts an instance of one service: the service, captured with its state type.
type Starter =
    Arc<dyn Fn(Runtime, String) -> BoxFuture<'static, Result<ServiceHandle, Error>> + Send + Sync>;

/// Names one instance the harness runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub usize);

struct Slot {
    service: String,
    instance: String,
    start: Starter,
    handle: Option<ServiceHandle>,
}

/// Real services on a real log, with virtual time. See the module docs.
pub struct TestRuntime {
    dir: PathBuf,
    transport: Arc<dyn Transport>,
    embedded: Option<Arc<Embedded>>,
    clock: ManualClock,
    runtime: Runtime,
    slots: Vec<Slot>,
    /// Topics the harness has seen used, for the idle check.
    topics: std::sync::Mutex<std::collections::BTreeSet<String>>,
    published: AtomicU64,
}

impl std::fmt::Debug for TestRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRuntime")
            .field("dir", &self.dir)
            .field("transport", &self.transport.kind())
            .field("instances", &self.slots.len())
            .finish()
    }
}

fn temp_dir() -> PathBuf {
    let mut rng = SplitMix64::from_entropy();
    std::env::temp_dir().join(format!(
        "runnel-test-{}-{:016x}",
        std::process::id(),
        rng.next_u64()
    ))
}

impl TestRuntime {
    /// A harness on a fresh embedded log in a temporary directory (removed on drop).
    pub async fn embedded() -> Result<TestRuntime, Error> {
        let dir = temp_dir();
        let embedded = Embedded::open(EmbeddedConfig {
            session_timeout_min: Duration::from_millis(100),
            ..EmbeddedConfig::new(dir.join("log"))
        })?;
        let mut t = TestRuntime::on(embedded.clone(), dir);
        t.embedded = Some(embedded);
        Ok(t)
    }

    /// A harness on `transport`, keeping instance state under `dir` (removed on drop).
    #[must_use]
    pub fn on(transport: Arc<dyn Transport>, dir: PathBuf) -> TestRuntime {
        let clock = ManualClock::default();
        let runtime = Runtime::new(transport.clone())
            .state_dir(dir.join("state"))
            .clock(Arc::new(clock.clone()))
            .session_timeout(Duration::from_secs(6))
            .drain_timeout(Duration::from_secs(5))
            .idle_poll(IDLE_POLL)
            // Status records would be traffic of their own on the log under test.
            .status_reports(false);
        TestRuntime {
            dir,
            transport,
            embedded: None,
            clock,
            runtime,
            slots: Vec::new(),
            topics: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            published: AtomicU64::new(0),
        }
    }

    /// Changes the runtime the harness starts instances with (session timeouts, for
    /// example); the clock and state directory stay the harness's.
    pub fn configure(&mut self, f: impl FnOnce(Runtime) -> Runtime) {
        self.runtime = f(self.runtime.clone());
    }

    /// The transport.
    #[must_use]
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// The directory the harness owns.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The virtual clock retries and parking follow.
    #[must_use]
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// Starts the first instance of `service` and waits until it is ready.
    pub async fn start<S: Clone + Send + Sync + 'static>(
        &mut self,
        service: Service<S>,
    ) -> Result<InstanceId, Error> {
        {
            let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
            topics.extend(service.topics.keys().cloned());
            topics.insert(dead_letter_topic(&service.name));
        }
        let name = service.name.clone();
        let start: Starter = Arc::new(move |rt: Runtime, instance: String| {
            let s = service.clone();
            Box::pin(async move { rt.start(s, &instance).await })
        });
        self.launch(name, start).await
    }

    /// Starts one more instance of the service that `like` runs (its group rebalances).
    pub async fn add_instance(&mut self, like: InstanceId) -> Result<InstanceId, Error> {
        let (name, start) = {
            let s = &self.slots[like.0];
            (s.service.clone(), s.start.clone())
        };
        self.launch(name, start).await
    }

    async fn launch(&mut self, service: String, start: Starter) -> Result<InstanceId, Error> {
        let before: Vec<u64> = self
            .slots
            .iter()
            .filter(|s| s.service == service)
            .filter_map(|s| s.handle.as_ref())
            .map(|h| h.assignment().0)
            .collect();
        let id = self.launch_one(service.clone(), start).await?;
        // Wait for the group to settle: every copy, old and new, holds an assignment made
        // after the new one arrived.
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let copies: Vec<&ServiceHandle> = self
                .slots
                .iter()
                .filter(|s| s.service == service)
                .filter_map(|s| s.handle.as_ref())
                .collect();
            if !copies.last().is_some_and(|h| h.shape().1) {
                return Ok(id); // nothing to assign: a service without handlers
            }
            let settled = copies.iter().enumerate().all(|(i, h)| {
                let (n, _, joined) = h.assignment();
                joined && n > before.get(i).copied().unwrap_or(0)
            });
            if settled {
                return Ok(id);
            }
            if Instant::now() > deadline {
                return Err(Error::Transport(format!(
                    "the group {service} did not settle in {WAIT_MAX:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn launch_one(&mut self, service: String, start: Starter) -> Result<InstanceId, Error> {
        let n = self.slots.iter().filter(|s| s.service == service).count();
        let instance = format!("i{n}");
        let mut handle = start(self.runtime.clone(), instance.clone()).await?;
        tokio::time::timeout(WAIT_MAX, handle.wait_ready())
            .await
            .map_err(|_| Error::Transport(format!("{service} was not ready in {WAIT_MAX:?}")))??;
        self.slots.push(Slot {
            service,
            instance,
            start,
            handle: Some(handle),
        });
        Ok(InstanceId(self.slots.len() - 1))
    }

    /// The running instance `id`.
    ///
    /// # Panics
    /// If `id` is crashed or stopped: a test bug.
    #[must_use]
    pub fn handle(&self, id: InstanceId) -> &ServiceHandle {
        self.slots[id.0]
            .handle
            .as_ref()
            .expect("the instance is not running")
    }

    /// Stops `id` at once, as SIGKILL would: no commit, no leave; its partitions move
    /// when its session times out.
    pub fn crash(&mut self, id: InstanceId) {
        if let Some(h) = self.slots[id.0].handle.take() {
            h.kill();
        }
    }

    /// Stops `id` gracefully: running handlers finish, offsets are committed, the group
    /// is left.
    pub async fn stop(&mut self, id: InstanceId) -> Result<(), Error> {
        match self.slots[id.0].handle.take() {
            Some(h) => h.stop().await,
            None => Ok(()),
        }
    }

    /// Starts `id` again with the same name and state file, and waits until it is ready.
    pub async fn restart(&mut self, id: InstanceId) -> Result<(), Error> {
        self.crash(id);
        let slot = &self.slots[id.0];
        let mut handle = (slot.start)(self.runtime.clone(), slot.instance.clone()).await?;
        tokio::time::timeout(WAIT_MAX, handle.wait_ready())
            .await
            .map_err(|_| Error::Transport(format!("restart was not ready in {WAIT_MAX:?}")))??;
        self.slots[id.0].handle = Some(handle);
        Ok(())
    }

    /// Publishes `event` with fresh CloudEvents headers; returns its id.
    pub async fn publish<E: Event>(&self, event: &E) -> Result<String, Error> {
        let id = fresh_event_id("test");
        let mut rng = SplitMix64::from_entropy();
        let trace = TraceParent::new_root(&mut || rng.next_u64());
        self.note_topic(E::TOPIC);
        self.transport
            .send(vec![event_record(event, &id, "test", &trace)])
            .await?;
        self.published.fetch_add(1, Ordering::Relaxed);
        Ok(id)
    }

    /// Publishes raw bytes to `topic` with an event type header (or none): for
    /// records that do not decode, and for types nobody handles.
    pub async fn publish_raw(
        &self,
        topic: &str,
        key: &str,
        event_type: Option<&str>,
        value: &[u8],
    ) -> Result<(), Error> {
        self.note_topic(topic);
        let headers = event_type
            .map(|t| vec![(headers::CE_TYPE.to_string(), t.as_bytes().to_vec())])
            .unwrap_or_default();
        self.transport
            .send(vec![crate::transport::OutRecord {
                topic: topic.to_string(),
                partition: None,
                key: Some(key.as_bytes().to_vec()),
                value: Some(value.to_vec()),
                headers,
            }])
            .await?;
        Ok(())
    }

    fn note_topic(&self, topic: &str) {
        self.topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(topic.to_string());
    }

    async fn total_high_watermark(&self) -> Result<i64, Error> {
        let topics: Vec<String> = self
            .topics
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut sum = 0;
        for t in topics {
            if let Ok(wm) = self.transport.watermarks(&t).await {
                sum += wm.iter().map(|(_, h)| h).sum::<i64>();
            }
        }
        Ok(sum)
    }

    /// Waits until every running instance has handled and committed everything it can
    /// (records waiting on the virtual clock excepted), every partition its services
    /// read has been fetched to its high watermark, and no topic grows any more.
    pub async fn run_until_idle(&self) -> Result<(), Error> {
        let deadline = Instant::now() + WAIT_MAX;
        // Each instance must also report idle twice after this point: a retry or park
        // that the clock released just before may not have been picked up yet.
        let marks: Vec<(u64, u64)> = self.running().map(|h| h.idle_polls()).collect();
        loop {
            let before = self.total_high_watermark().await?;
            let polled = self.running().zip(&marks).all(|(h, (w, t))| {
                let (w2, t2) = h.idle_polls();
                let (tables, routes) = h.shape();
                (!routes || w2 >= w + 2) && (!tables || t2 >= t + 2)
            });
            if polled && self.caught_up().await? && self.total_high_watermark().await? == before {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Transport(format!(
                    "not idle after {WAIT_MAX:?}: {:?}",
                    self.running()
                        .map(|h| (h.name().to_string(), h.is_idle(), h.waiting(), h.metrics()))
                        .collect::<Vec<_>>()
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether every instance is quiet and has read everything there is.
    async fn caught_up(&self) -> Result<bool, Error> {
        // Each service's group as a whole has fetched every partition it reads.
        let mut groups: BTreeMap<&str, Vec<&ServiceHandle>> = BTreeMap::new();
        for h in self.running() {
            groups.entry(h.name()).or_default().push(h);
        }
        for (group, copies) in &groups {
            let mut fetched = std::collections::HashMap::new();
            for h in copies {
                for (tp, at) in h.fetched() {
                    let e = fetched.entry(tp).or_insert(at);
                    *e = (*e).max(at);
                }
            }
            for topic in copies[0].handled_topics() {
                let wm = self.transport.watermarks(topic).await?;
                let committed: BTreeMap<i32, i64> = self
                    .transport
                    .committed(group, topic)
                    .await?
                    .into_iter()
                    .collect();
                for (p, (lo, hi)) in wm.iter().enumerate() {
                    let tp = TopicPartition::new(topic, p as i32);
                    let at = fetched
                        .get(&tp)
                        .or(committed.get(&(p as i32)))
                        .copied()
                        .unwrap_or(*lo);
                    if at < *hi {
                        return Ok(false);
                    }
                }
            }
            // Tables: each instance applied everything of its sources.
            for h in copies.iter().filter(|h| h.shape().0) {
                for (tp, at) in h.applied() {
                    let wm = self.transport.watermarks(&tp.topic).await?;
                    if wm
                        .get(tp.partition as usize)
                        .is_some_and(|(_, hi)| at < *hi)
                    {
                        return Ok(false);
                    }
                }
            }
        }
        // Last: a worker turns "idle" off before it moves its positions, so idle read
        // after positions that reached the end means those records were handled.
        Ok(!self.running().any(|h| h.shape().1 && !h.is_idle()))
    }

    fn running(&self) -> impl Iterator<Item = &ServiceHandle> {
        self.slots.iter().filter_map(|s| s.handle.as_ref())
    }

    /// Advances virtual time: retries and parks that come due run.
    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    /// Every record of `topic`, in partition then offset order.
    pub async fn records(&self, topic: &str) -> Result<Vec<Record>, Error> {
        let wm = self.transport.watermarks(topic).await?;
        let from: Vec<(TopicPartition, i64)> = wm
            .iter()
            .enumerate()
            .filter(|(_, (lo, hi))| hi > lo)
            .map(|(p, (lo, _))| (TopicPartition::new(topic, p as i32), *lo))
            .collect();
        let mut want: BTreeMap<i32, i64> = wm
            .iter()
            .enumerate()
            .filter(|(_, (lo, hi))| hi > lo)
            .map(|(p, (_, hi))| (p as i32, *hi))
            .collect();
        let mut out = Vec::new();
        if want.is_empty() {
            return Ok(out);
        }
        let mut reader = self.transport.reader(from)?;
        let deadline = Instant::now() + WAIT_MAX;
        while !want.is_empty() {
            for r in reader.poll(Duration::from_millis(100)).await? {
                if let Some(hi) = want.get(&r.tp.partition)
                    && r.offset + 1 >= *hi
                {
                    want.remove(&r.tp.partition);
                }
                out.push(r);
            }
            if Instant::now() > deadline {
                return Err(Error::Transport(format!("reading {topic} timed out")));
            }
        }
        out.sort_by_key(|r| (r.tp.partition, r.offset));
        Ok(out)
    }

    /// Every `E` in its topic (other types there are left out).
    pub async fn events<E: Event>(&self) -> Result<Vec<E>, Error> {
        let records = self.records(E::TOPIC).await?;
        records
            .iter()
            .filter(|r| r.header(headers::CE_TYPE) == Some(E::TYPE.as_bytes()))
            .filter_map(|r| r.value.as_deref())
            .map(|v| contract::decode::<E>(v).map_err(Error::from))
            .collect()
    }

    /// The dead letters of `service`.
    pub async fn dead_letters(&self, service: &str) -> Result<Vec<Record>, Error> {
        self.records(&dead_letter_topic(service)).await
    }

    /// The table of `V` of instance `id`.
    #[must_use]
    pub fn table<V: DeserializeOwned + Send + Sync + 'static>(
        &self,
        id: InstanceId,
    ) -> Option<TableRef<V>> {
        self.handle(id).table::<V>("")
    }

    /// The counters of instance `id`.
    #[must_use]
    pub fn metrics(&self, id: InstanceId) -> Snapshot {
        self.handle(id).metrics()
    }

    /// Stops every instance gracefully and closes the log.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        for s in &mut self.slots {
            if let Some(h) = s.handle.take() {
                h.stop().await?;
            }
        }
        if let Some(e) = &self.embedded {
            e.shutdown();
        }
        Ok(())
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        for s in &mut self.slots {
            if let Some(h) = s.handle.take() {
                h.kill();
            }
        }
        if let Some(e) = &self.embedded {
            e.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
