//! The runtime: runs service instances on a [`Transport`].
//!
//! An instance does, in order:
//! 1. creates the topics its service names (handled, emitted, table sources, and the
//!    dead-letter topic `<service>.dlq`);
//! 2. restores its tables up to the high watermarks it saw at start; only then is it
//!    *ready*, so handlers never join against a half-restored table;
//! 3. joins its consumer group and handles records.
//!
//! ## Delivery
//!
//! At least once. A partition's offset is committed only after every record before it
//! was handled (or dead-lettered), so a crash re-delivers, never skips. What a handler
//! emits is sent, and acknowledged by the log, before its record counts as handled.
//! Records of one key are handled one at a time in offset order; records of different
//! keys run concurrently up to the service's concurrency. A record that waits (retry
//! after a transient error, or parked because it is not yet possible) holds only its own
//! key; it also holds the partition's commit point, so after a crash everything from it
//! on is delivered again.
//!
//! ## Structure
//!
//! The group consumer lives in its own task (the *poller*) and takes one command at a
//! time (next, commit, revoked, close): the transports' calls need not be
//! cancellation-safe, and the worker loop never awaits the consumer directly. Handler
//! invocations are futures the worker polls itself, each behind `catch_unwind`, so a
//! panicking handler loses only its record's attempt, at most `concurrency` at a time:
//! the worker runs an invocation's first step (extractors, first poll of the handler)
//! as it starts it, and one that finishes there with nothing to emit (most do) is done
//! at once; the others go on in a `FuturesUnordered`. Retries and parks are timers on
//! the runtime's [`Clock`], so tests drive them with virtual time.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, HandlerError};
use crate::fxhash::FxHashMap;
use crate::handler::{Context, ErasedHandler, HeldRecord, Invocation, TableSet};
use crate::metadata::headers;
use crate::metrics::{Metrics, Snapshot};
use crate::ordering::PartitionTracker;
use crate::retry::{self, Decision};
use crate::rng::SplitMix64;
use crate::service::{Service, dead_letter_topic};
use crate::table::{Route, TableDef, TableRef};
use crate::transport::{
    Delivery, GroupConsumer, MemberOptions, OutRecord, Record, TopicPartition, TopicSpec,
    Transport, same_partition,
};

/// How long the poller waits for records before reporting idle, unless told otherwise.
const IDLE_POLL_DEFAULT: Duration = Duration::from_millis(200);
/// How often handled offsets are committed.
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
/// Records fetched but not finished, per instance, before fetching pauses.
const PENDING_RECORDS_MAX: usize = 20_000;
/// Records one round of the worker starts at most before it looks at its other work.
const START_BUDGET: usize = 4_096;
/// How often a table restore reports progress.
const RESTORE_PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// How long `start` waits for a state file that is still held in this process.
const STORE_OPEN_WAIT: Duration = Duration::from_secs(5);
/// How often an idle instance recomputes its lag figures.
const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How long a record whose dead letter could not be written waits before it is tried
/// again.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(30);
/// Dead-letter sends tried before the record is left pending for a later instance.
const DEAD_LETTER_SEND_ATTEMPTS: u32 = 10;

/// Headers a dead letter carries besides the original record's (their one home is
/// `runnel-core`, which the HTTP API reads them with too).
pub use runnel_core::services::dlq_headers;

/// How long stopping waits for an instance's last status to be stated.
const REPORTER_STOP_WAIT: Duration = Duration::from_secs(2);

/// Runs services on a transport.
#[derive(Clone, Debug)]
pub struct Runtime {
    transport: Arc<dyn Transport>,
    state_dir: PathBuf,
    clock: Arc<dyn Clock>,
    session_timeout: Duration,
    drain_timeout: Duration,
    idle_poll: Duration,
    /// Whether instances state their status on [`crate::status::STATUS_TOPIC`].
    status_reports: bool,
}

impl Runtime {
    /// A runtime on `transport`, keeping tables under `./runnel-state`.
    #[must_use]
    pub fn new(transport: Arc<dyn Transport>) -> Runtime {
        Runtime {
            transport,
            state_dir: PathBuf::from("runnel-state"),
            clock: Arc::new(SystemClock),
            session_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            idle_poll: IDLE_POLL_DEFAULT,
            status_reports: true,
        }
    }

    /// How long a poll waits for records before the instance counts as idle (the
    /// test harness polls faster).
    #[must_use]
    pub fn idle_poll(mut self, d: Duration) -> Runtime {
        self.idle_poll = d.max(Duration::from_millis(1));
        self
    }

    /// Where instances keep their tables: `<dir>/<service>/<instance>.redb`.
    #[must_use]
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Runtime {
        self.state_dir = dir.into();
        self
    }

    /// The clock retries and parking follow (a `ManualClock` in tests).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Runtime {
        self.clock = clock;
        self
    }

    /// How long an instance may go silent before its group moves its partitions.
    #[must_use]
    pub fn session_timeout(mut self, d: Duration) -> Runtime {
        self.session_timeout = d;
        self
    }

    /// How long a stop or a rebalance waits for running handlers.
    #[must_use]
    pub fn drain_timeout(mut self, d: Duration) -> Runtime {
        self.drain_timeout = d;
        self
    }

    /// Whether instances state their status on [`crate::status::STATUS_TOPIC`] (on by
    /// default; what Runnel's web console shows as services).
    #[must_use]
    pub fn status_reports(mut self, on: bool) -> Runtime {
        self.status_reports = on;
        self
    }

    /// The transport.
    #[must_use]
    pub fn transport(&self) -> &Arc<dyn Transport> {
        &self.transport
    }

    /// Starts one instance of `service`. `instance` names it (and its state file); two
    /// instances of one service in one state directory need different names.
    pub async fn start<S: Clone + Send + Sync + 'static>(
        &self,
        service: Service<S>,
        instance: &str,
    ) -> Result<ServiceHandle, Error> {
        service.recoverability.validate()?;
        let path = self
            .state_dir
            .join(&service.name)
            .join(format!("{instance}.redb"));
        let store = Arc::new(open_store(&path).await?);
        let mut tables = TableSet::default();
        for t in &service.tables {
            tables
                .by_type
                .insert(t.value_type, (t.reader)(store.clone(), t.name.clone()));
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = watch::channel(false);
        let has_tables = !service.tables.is_empty();
        let has_routes = !service.routes.is_empty();
        let handled_topics = service.handled_topics();
        let inst = Arc::new(Instance {
            name: Arc::from(service.name.as_str()),
            instance: instance.to_string(),
            runtime: self.clone(),
            store,
            tables: Arc::new(tables),
            metrics: Arc::new(Metrics::default()),
            status: Arc::new(Status::default()),
            service,
        });
        let reporter = self.status_reports.then(|| {
            tokio::spawn(
                crate::status::Reporter {
                    transport: self.transport.clone(),
                    service: inst.name.to_string(),
                    instance: instance.to_string(),
                    topics: handled_topics.clone(),
                    metrics: inst.metrics.clone(),
                    ready: ready_rx.clone(),
                    stop: stop_rx.clone(),
                }
                .run(),
            )
        });
        let span = info_span!("service", name = %inst.name, instance);
        let running = inst.clone();
        let task = tokio::spawn(
            async move {
                let r = running.run(stop_rx, ready_tx).await;
                if let Err(e) = &r {
                    error!(%e, "service instance stopped on an error");
                }
                r
            }
            .instrument(span),
        );
        Ok(ServiceHandle {
            stop: stop_tx,
            ready: ready_rx,
            task: Some(task),
            reporter,
            metrics: inst.metrics.clone(),
            status: inst.status.clone(),
            tables: inst.tables.clone(),
            name: inst.name.to_string(),
            instance: instance.to_string(),
            has_tables,
            has_routes,
            handled_topics,
        })
    }
}

/// Runs until Ctrl-C (or SIGTERM), then stops every instance gracefully: fetching
/// stops, running handlers finish (up to the drain timeout), offsets are committed, the
/// groups are left. A second Ctrl-C exits the process at once (status 130).
pub async fn run_until_signal(handles: Vec<ServiceHandle>) -> Result<(), Error> {
    wait_for_signal().await;
    info!("stopping; press Ctrl-C again to exit at once");
    tokio::spawn(async {
        wait_for_signal().await;
        warn!("second signal: exiting without finishing");
        std::process::exit(130);
    });
    let mut first_error = None;
    for h in handles {
        if let Err(e) = h.stop().await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Resolves on Ctrl-C or SIGTERM: what a service process stops on.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Opens an instance's store. A previous incarnation of the instance in this process
/// (a test's crash and restart) may still be letting go of the file for a moment; a
/// store held longer than that is an error that names the file.
async fn open_store(path: &std::path::Path) -> Result<runnel_state::Store, Error> {
    let deadline = Instant::now() + STORE_OPEN_WAIT;
    loop {
        match runnel_state::Store::open(path) {
            Ok(s) => return Ok(s),
            Err(runnel_state::StoreError::InUse { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(Error::Store(format!("{}: {e}", path.display()))),
        }
    }
}

/// A running instance.
#[derive(Debug)]
pub struct ServiceHandle {
    name: String,
    instance: String,
    stop: watch::Sender<bool>,
    ready: watch::Receiver<bool>,
    task: Option<JoinHandle<Result<(), Error>>>,
    /// States the instance's status; ends after the stopped one.
    reporter: Option<JoinHandle<()>>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    tables: Arc<TableSet>,
    has_tables: bool,
    has_routes: bool,
    handled_topics: Vec<String>,
}

impl ServiceHandle {
    /// The service's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The instance's name.
    #[must_use]
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Whether its tables have caught up (and it is handling records).
    #[must_use]
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// A receiver of readiness changes (for `/health/ready`).
    #[must_use]
    pub fn ready_watch(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Waits until it is ready, or fails if it stopped first.
    pub async fn wait_ready(&mut self) -> Result<(), Error> {
        if self.ready.wait_for(|r| *r).await.is_ok() {
            return Ok(());
        }
        match self.task.take() {
            Some(t) => match t.await {
                Ok(Ok(())) => Err(Error::Shutdown),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(Error::Transport(format!("service task failed: {e}"))),
            },
            None => Err(Error::Shutdown),
        }
    }

    /// Its counters.
    #[must_use]
    pub fn metrics(&self) -> Snapshot {
        self.metrics.snapshot()
    }

    /// Renders its counters in Prometheus' text format, for as long as anyone asks (an
    /// HTTP server may outlive the handle).
    pub fn metrics_renderer(&self) -> impl Fn() -> String + Send + Sync + 'static {
        let metrics = self.metrics.clone();
        let (name, instance) = (self.name.clone(), self.instance.clone());
        move || metrics.render(&name, &instance)
    }

    /// Its counters in Prometheus' text format.
    #[must_use]
    pub fn render_metrics(&self) -> String {
        self.metrics.render(&self.name, &self.instance)
    }

    /// A read handle on its table of `V`.
    #[must_use]
    pub fn table<V: serde::de::DeserializeOwned + Send + Sync + 'static>(
        &self,
        _name: &str,
    ) -> Option<TableRef<V>> {
        self.tables.get::<V>()
    }

    /// Whether it has nothing to do right now: no handler running, nothing fetched and
    /// not finished except records waiting for a retry or a park, everything handled
    /// committed, and the last poll found nothing new.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.status.idle.load(Ordering::SeqCst)
    }

    /// Polls that found the instance with nothing to do, and table polls that found
    /// nothing new: the test harness waits for both to move to know it is idle.
    #[must_use]
    pub fn idle_polls(&self) -> (u64, u64) {
        (
            self.status.idle_polls.load(Ordering::SeqCst),
            self.status.table_idle_polls.load(Ordering::SeqCst),
        )
    }

    /// Group assignments received so far, the partitions owned now, and whether it is
    /// a settled member (assigned and not revoking).
    #[must_use]
    pub fn assignment(&self) -> (u64, usize, bool) {
        (
            self.status.assignments.load(Ordering::SeqCst),
            self.status.owned.load(Ordering::SeqCst),
            self.status.joined.load(Ordering::SeqCst),
        )
    }

    /// Per owned partition, the offset after the last record fetched (partitions with
    /// nothing fetched since their assignment are absent).
    #[must_use]
    pub fn fetched(&self) -> HashMap<TopicPartition, i64> {
        self.status
            .fetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Per table source partition, the offset after the last record applied.
    #[must_use]
    pub fn applied(&self) -> HashMap<TopicPartition, i64> {
        self.status
            .applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The topics its handlers consume.
    #[must_use]
    pub fn handled_topics(&self) -> &[String] {
        &self.handled_topics
    }

    /// Whether it declares tables, and whether it handles records.
    #[must_use]
    pub fn shape(&self) -> (bool, bool) {
        (self.has_tables, self.has_routes)
    }

    /// Records waiting for a retry or parked.
    #[must_use]
    pub fn waiting(&self) -> usize {
        self.status.waiting.load(Ordering::SeqCst)
    }

    /// Whether it has stopped (after `stop`, a crash of its task, or an error).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops gracefully: stops fetching, lets running handlers finish (up to the drain
    /// timeout), commits, leaves the group.
    pub async fn stop(mut self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        let result = match self.task.take() {
            Some(t) => t
                .await
                .map_err(|e| Error::Transport(format!("service task failed: {e}"))),
            None => Ok(Ok(())),
        };
        // The last status says it stopped; not worth waiting long for.
        if let Some(r) = self.reporter.take() {
            let _ = tokio::time::timeout(REPORTER_STOP_WAIT, r).await;
        }
        result?
    }

    /// Stops at once, as a crash would: nothing more is committed and the group learns
    /// of it only when the session times out.
    pub fn kill(mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(r) = self.reporter.take() {
            r.abort();
        }
    }
}

impl Drop for ServiceHandle {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        if let Some(r) = self.reporter.take() {
            r.abort();
        }
    }
}

/// What `is_idle` and tests read.
#[derive(Debug, Default)]
struct Status {
    /// Polls that found nothing while nothing was running or committable.
    idle_polls: std::sync::atomic::AtomicU64,
    /// Table polls that found nothing.
    table_idle_polls: std::sync::atomic::AtomicU64,
    idle: AtomicBool,
    waiting: AtomicUsize,
    /// Assignments received so far.
    assignments: std::sync::atomic::AtomicU64,
    /// Partitions owned now (0 while rebalancing).
    owned: AtomicUsize,
    /// Between an assignment and the next revocation.
    joined: AtomicBool,
    /// Per owned partition, the offset after the last record fetched.
    fetched: std::sync::Mutex<HashMap<TopicPartition, i64>>,
    /// Per table source partition, the offset after the last record applied.
    applied: std::sync::Mutex<HashMap<TopicPartition, i64>>,
}

impl Status {
    fn note(map: &std::sync::Mutex<HashMap<TopicPartition, i64>>, tp: &TopicPartition, next: i64) {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(tp.clone()).or_insert(next);
        *e = (*e).max(next);
    }
}

/// One running instance.
struct Instance<S> {
    name: Arc<str>,
    instance: String,
    runtime: Runtime,
    service: Service<S>,
    store: Arc<runnel_state::Store>,
    tables: Arc<TableSet>,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
}

impl<S: Clone + Send + Sync + 'static> Instance<S> {
    async fn run(
        self: Arc<Self>,
        mut stop: watch::Receiver<bool>,
        ready: watch::Sender<bool>,
    ) -> Result<(), Error> {
        let transport = self.runtime.transport.clone();
        let mut topics: Vec<TopicSpec> = self.service.topics.values().cloned().collect();
        topics.push(TopicSpec {
            name: dead_letter_topic(&self.name),
            partitions: 1,
            compacted: false,
        });
        transport.ensure_topics(&topics).await?;

        // Tables first: handlers join against them.
        // The instance's own stop: the caller's stop, or a table feeder that failed
        // after the instance was ready (a table that no longer follows its topic must
        // not serve joins).
        let (halt_tx, halt) = watch::channel(false);
        let mut feeders = JoinSet::new();
        let mut table_ready = Vec::new();
        for t in &self.service.tables {
            let (tx, rx) = watch::channel(false);
            table_ready.push(rx);
            let feeder = TableFeeder {
                transport: transport.clone(),
                status: self.status.clone(),
                idle_poll: self.runtime.idle_poll,
                store: self.store.clone(),
                def: t.clone(),
                metrics: self.metrics.clone(),
            };
            feeders.spawn(feeder.run(tx, halt.clone()).in_current_span());
        }
        for mut r in table_ready {
            tokio::select! {
                res = async { r.wait_for(|r| *r).await.is_ok() } => {
                    if !res {
                        // The feeder ended before the table was ready: say why.
                        let _ = halt_tx.send(true);
                        let e = match feeders.join_next().await {
                            Some(Ok(Err(e))) => Err(e),
                            _ => Err(Error::Shutdown),
                        };
                        quiet(&mut feeders).await;
                        return e;
                    }
                }
                () = stopped(&mut stop) => {
                    let _ = halt_tx.send(true);
                    quiet(&mut feeders).await;
                    return Ok(());
                }
            }
        }
        info!("ready");
        let _ = ready.send(true);

        let this = self.clone();
        let worker_halt = halt.clone();
        let work = async move {
            if this.service.routes.is_empty() {
                this.status.idle.store(true, Ordering::SeqCst);
                stopped(&mut worker_halt.clone()).await;
                Ok(())
            } else {
                this.handle_records(worker_halt).await
            }
        };
        tokio::pin!(work);
        let mut feeder_error = None;
        let result = loop {
            tokio::select! {
                r = &mut work => break r,
                () = stopped(&mut stop), if !*halt.borrow() => {
                    let _ = halt_tx.send(true);
                }
                Some(done) = feeders.join_next(), if feeder_error.is_none() => {
                    let e = match done {
                        Ok(Ok(())) => continue,
                        Ok(Err(e)) => e,
                        Err(e) => Error::Store(format!("a table feeder failed: {e}")),
                    };
                    // Not ready any more; the worker drains, commits and leaves.
                    error!(%e, "a table stopped following its topic; stopping the instance");
                    let _ = ready.send(false);
                    let _ = halt_tx.send(true);
                    feeder_error = Some(e);
                }
            }
        };
        // Whatever ended the work, the instance is no longer ready, and its feeders stop
        // before the store is let go.
        let _ = ready.send(false);
        let _ = halt_tx.send(true);
        quiet(&mut feeders).await;
        match feeder_error {
            Some(e) => Err(e),
            None => result,
        }
    }

    async fn handle_records(self: Arc<Self>, stop: watch::Receiver<bool>) -> Result<(), Error> {
        let options = MemberOptions {
            group: self.name.to_string(),
            topics: self.service.handled_topics(),
            client_id: format!("{}-{}", self.name, self.instance),
            instance_id: None,
            session_timeout: self.runtime.session_timeout,
            rebalance_timeout: self.runtime.drain_timeout * 3,
        };
        let consumer = self.runtime.transport.subscribe(options).await?;
        let (cmd, rx) = mpsc::channel(4);
        let poller =
            tokio::spawn(poll_loop(consumer, rx, self.runtime.idle_poll).in_current_span());
        let mut routes: Routes<S> = FxHashMap::default();
        for ((topic, ty), h) in &self.service.routes {
            routes
                .entry(topic.clone())
                .or_default()
                .insert(ty.clone(), h.clone());
        }
        let mut worker = Worker {
            inst: self.clone(),
            routes,
            parts: FxHashMap::default(),
            scratch_starts: Vec::new(),
            running: FuturesUnordered::new(),
            timers: JoinSet::new(),
            cmd,
            generation: 0,
            rng: SplitMix64::from_entropy(),
            idle_seen: false,
            lag_updated: None,
        };
        let result = worker.run(stop).await;
        drop(worker);
        let _ = poller.await;
        result
    }
}

/// What the worker asks of the poller.
enum Cmd {
    Next(oneshot::Sender<Result<Delivery, Error>>),
    Commit(
        Vec<(TopicPartition, i64)>,
        oneshot::Sender<Result<(), Error>>,
    ),
    Revoked(
        Vec<(TopicPartition, i64)>,
        oneshot::Sender<Result<(), Error>>,
    ),
    Close(oneshot::Sender<Result<(), Error>>),
}

/// Owns the group consumer; runs one command at a time. If the worker goes away without
/// `Close` (a crash), the consumer is dropped without leaving its group.
async fn poll_loop(
    mut consumer: Box<dyn GroupConsumer>,
    mut rx: mpsc::Receiver<Cmd>,
    idle: Duration,
) {
    while let Some(cmd) = rx.recv().await {
        match cmd {
            Cmd::Next(tx) => {
                let _ = tx.send(consumer.next(idle).await);
            }
            Cmd::Commit(offsets, tx) => {
                let _ = tx.send(consumer.commit(offsets).await);
            }
            Cmd::Revoked(offsets, tx) => {
                let _ = tx.send(consumer.revoked(offsets).await);
            }
            Cmd::Close(tx) => {
                let _ = tx.send(consumer.close().await);
                return;
            }
        }
    }
}

/// One owned partition: what was fetched and where each record stands.
struct Part {
    tracker: PartitionTracker,
    /// The records fetched and not finished.
    records: Fetched,
    /// Failures so far per offset (retries and parks count separately in `decide`).
    attempts: FxHashMap<i64, u32>,
    /// The assignment this state belongs to: outcomes of older ones are ignored.
    generation: u64,
    /// The highest offset pushed: a transport that delivers a record twice within one
    /// assignment does not get it handled twice.
    last_pushed: i64,
}

impl Part {
    /// The record at `offset` is done: handled, dead-lettered or skipped.
    fn finish(&mut self, offset: i64) {
        self.tracker.done(offset);
        self.records.remove(offset);
        if !self.attempts.is_empty() {
            self.attempts.remove(&offset);
        }
    }
}

/// A partition's records fetched and not finished, in offset order: offsets grow from
/// fetch to fetch, so they are kept in a deque (looked up by place, read in memory
/// order) rather than a hash map (a cache miss per record).
#[derive(Default)]
struct Fetched {
    /// Offset and record; `None` once finished, until every record before it is too.
    slots: VecDeque<(i64, Option<HeldRecord>)>,
}

impl Fetched {
    /// Adds the record at `offset`, above every offset held.
    fn push(&mut self, offset: i64, record: HeldRecord) {
        debug_assert!(self.slots.back().is_none_or(|s| s.0 < offset));
        self.slots.push_back((offset, Some(record)));
    }

    /// Where `offset` is held. Offsets are usually contiguous: the place they would
    /// have then is tried first.
    fn place(&self, offset: i64) -> Option<usize> {
        let front = self.slots.front()?.0;
        let guess = usize::try_from(offset.checked_sub(front)?).ok()?;
        if self.slots.get(guess).is_some_and(|s| s.0 == offset) {
            return Some(guess);
        }
        self.slots.binary_search_by_key(&offset, |s| s.0).ok()
    }

    fn get(&self, offset: i64) -> Option<&HeldRecord> {
        self.slots[self.place(offset)?].1.as_ref()
    }

    /// Drops the record at `offset`, and every finished one at the front.
    fn remove(&mut self, offset: i64) {
        if let Some(i) = self.place(offset) {
            self.slots[i].1 = None;
        }
        while self.slots.front().is_some_and(|s| s.1.is_none()) {
            self.slots.pop_front();
        }
    }
}

/// The end of one handler invocation (or dead-letter send).
struct Outcome {
    tp: TopicPartition,
    offset: i64,
    generation: u64,
    result: OutcomeKind,
}

enum OutcomeKind {
    Handled { latency: Duration, emitted: usize },
    Failed(HandlerError),
    DeadLettered,
    DeadLetterFailed(String),
}

/// Where a handler stands after its first poll.
enum Step {
    Done(Result<(), HandlerError>),
    Pending(crate::transport::BoxFuture<'static, Result<(), HandlerError>>),
}

/// A panic in the work on a record: a transient failure of that record, so it is
/// retried and in the end dead-lettered like any other failure, never left stuck.
fn panicked(tp: &TopicPartition, offset: i64, panic: &(dyn std::any::Any + Send)) -> OutcomeKind {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    error!(%tp, offset, "a handler panicked: {what}");
    OutcomeKind::Failed(HandlerError::transient(format!(
        "the handler panicked: {what}"
    )))
}

/// A running invocation: its outcome, or the panic that ended it.
type Running = std::pin::Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A retry or park whose time has come.
struct Wake {
    tp: TopicPartition,
    offset: i64,
    generation: u64,
}

/// The service's handlers by topic, then event type.
type Routes<S> = FxHashMap<String, FxHashMap<String, ErasedHandler<S>>>;

struct Worker<S> {
    inst: Arc<Instance<S>>,
    /// The service's handlers by topic, then event type: looked up per record without
    /// building a key.
    routes: Routes<S>,
    parts: FxHashMap<TopicPartition, Part>,
    /// The records `start_runnable` picked and is starting (kept to reuse its
    /// allocation).
    scratch_starts: Vec<(TopicPartition, i64)>,
    /// Handler invocations and dead-letter sends, polled by the worker itself: no task
    /// spawn per record, and a handler that finishes on its first poll (most do) costs
    /// no wake-up. A panic ends only its own future.
    running: FuturesUnordered<Running>,
    timers: JoinSet<Wake>,
    cmd: mpsc::Sender<Cmd>,
    generation: u64,
    rng: SplitMix64,
    /// The last poll found nothing new.
    idle_seen: bool,
    /// When the lag figures were last computed (they cost a round trip per topic,
    /// during which no handler makes progress).
    lag_updated: Option<Instant>,
}

impl<S: Clone + Send + Sync + 'static> Worker<S> {
    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<(), Error> {
        let mut next: Option<oneshot::Receiver<Result<Delivery, Error>>> = None;
        let mut commit: Option<CommitInFlight> = None;
        let mut last_commit = Instant::now();
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let more = self.start_runnable();
            self.publish_status(next.is_some(), commit.is_some(), more);
            if next.is_none() && self.pending() < PENDING_RECORDS_MAX {
                let (tx, rx) = oneshot::channel();
                if self.cmd.send(Cmd::Next(tx)).await.is_err() {
                    return Err(Error::Transport("the group consumer stopped".into()));
                }
                next = Some(rx);
            }
            tokio::select! {
                () = stopped(&mut stop) => break,
                Some(done) = self.running.next(), if !self.running.is_empty() => {
                    self.on_outcome(done);
                    // Take every other one that is done too before looking around again.
                    while let Some(Some(done)) = self.running.next().now_or_never() {
                        self.on_outcome(done);
                    }
                }
                Some(Ok(w)) = self.timers.join_next(), if !self.timers.is_empty() => self.on_wake(&w),
                d = async { next.as_mut().expect("guarded").await }, if next.is_some() => {
                    next = None;
                    let d = d.map_err(|_| Error::Transport("the group consumer stopped".into()))??;
                    self.on_delivery(d, &mut commit).await?;
                }
                c = async { commit.as_mut().expect("guarded").reply.as_mut().await }, if commit.is_some() => {
                    let done = commit.take().expect("guarded");
                    self.on_committed(done.done, c);
                }
                _ = commit_tick.tick() => {}
                () = tokio::task::yield_now(), if more => {}
            }
            // Commit on a timer, and at once when the partition went quiet (so an idle
            // service has committed everything it handled).
            if commit.is_none() && (last_commit.elapsed() >= COMMIT_INTERVAL || self.idle_seen) {
                commit = self.start_commit().await;
                last_commit = Instant::now();
            }
        }
        self.shutdown(next, commit).await
    }

    /// Records held in memory: every record from a partition's oldest unfinished one
    /// to its last fetched, done or not (what one stuck record holds back), which is
    /// what fetching pauses on.
    fn pending(&self) -> usize {
        self.parts.values().map(|p| p.tracker.tracked()).sum()
    }

    fn publish_status(&self, polling: bool, committing: bool, more: bool) {
        let waiting = self.timers.len();
        let committable = self
            .parts
            .values()
            .any(|p| p.tracker.committable().is_some());
        // `start_runnable` ran just before: with nothing running and its budget not
        // spent (`more`), nothing can run.
        let idle =
            self.idle_seen && !more && self.running.is_empty() && !committable && !committing;
        let _ = polling;
        self.inst.status.waiting.store(waiting, Ordering::SeqCst);
        self.inst.status.idle.store(idle, Ordering::SeqCst);
    }

    /// Starts every record whose key is free, up to the concurrency limit.
    ///
    /// Partitions take turns, one record each. Invocations that finish on their first
    /// poll free their place at once, so one call may go through many records; it stops
    /// after `START_BUDGET` of them and answers `true` when there may be more, so that
    /// the worker looks at its other work (and lets other tasks run) in between.
    fn start_runnable(&mut self) -> bool {
        let limit = self.inst.service.concurrency;
        let mut batch = std::mem::take(&mut self.scratch_starts);
        let mut started = 0;
        let mut more = false;
        loop {
            let room = limit.saturating_sub(self.running.len());
            if room == 0 || self.parts.is_empty() {
                break;
            }
            if started >= START_BUDGET {
                more = true;
                break;
            }
            // Pick up to `room` records, going round the partitions.
            batch.clear();
            let mut progress = true;
            while progress && batch.len() < room {
                progress = false;
                for (tp, part) in &mut self.parts {
                    if batch.len() >= room {
                        break;
                    }
                    if let Some(offset) = part.tracker.next_runnable() {
                        batch.push((tp.clone(), offset));
                        progress = true;
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            started += batch.len();
            for (tp, offset) in batch.drain(..) {
                self.invoke(tp, offset);
            }
        }
        self.scratch_starts = batch;
        more
    }

    /// The handler of `record`'s type on its topic.
    fn route<'a>(routes: &'a Routes<S>, record: &Record) -> Option<&'a ErasedHandler<S>> {
        let of_topic = routes.get(&*record.tp.topic)?;
        match record.header(headers::CE_TYPE) {
            Some(t) => std::str::from_utf8(t).ok().and_then(|t| of_topic.get(t)),
            None => {
                // Records from producers that set no type (kcat, other tools): the
                // topic's handler, when it has exactly one.
                let mut handlers = of_topic.values();
                match (handlers.next(), handlers.next()) {
                    (Some(h), None) => Some(h),
                    _ => None,
                }
            }
        }
    }

    fn invoke(&mut self, tp: TopicPartition, offset: i64) {
        let part = self.parts.get_mut(&tp).expect("caller checked");
        let record = part
            .records
            .get(offset)
            .expect("tracked records are kept")
            .clone();
        let generation = part.generation;
        let attempt = part.attempts.get(&offset).copied().unwrap_or(0) + 1;
        // A transport marks a record whose headers it could not read with this one
        // header in place of them.
        if let Some(why) = (record.headers.len() == 1)
            .then(|| record.header(crate::transport::UNREADABLE_HEADERS))
            .flatten()
        {
            let why = String::from_utf8_lossy(why).into_owned();
            return self.on_outcome(Outcome {
                tp,
                offset,
                generation,
                result: OutcomeKind::Failed(HandlerError::permanent(format!(
                    "the record's headers cannot be read: {why}"
                ))),
            });
        }
        let seed = self.rng.next_u64();
        let Some(handler) = Self::route(&self.routes, &record) else {
            debug!(%tp, offset, "skipping a record of a type this service does not handle");
            self.inst
                .metrics
                .skipped_unknown
                .fetch_add(1, Ordering::Relaxed);
            self.finish(&tp, offset);
            return;
        };
        let inv = Arc::new(Invocation::new(
            record,
            attempt,
            self.inst.tables.clone(),
            self.inst.name.clone(),
            seed,
        ));
        // Building the span means parsing the record's headers for its type and trace;
        // skip that when no subscriber listens.
        let span = if tracing::enabled!(tracing::Level::INFO) {
            info_span!(
                "handle",
                topic = %tp.topic,
                partition = tp.partition,
                offset,
                event_type = %inv.meta().event_type,
                attempt,
                traceparent = %inv.trace(),
            )
        } else {
            tracing::Span::none()
        };
        let ctx = Context {
            inv: inv.clone(),
            state: self.inst.service.state.clone(),
        };
        let timeout = self.inst.service.handler_timeout;
        let started = Instant::now();
        // The first step here and now: the extractors (decoding the event) and the
        // handler's first poll, where most handlers finish. One that finished with
        // nothing to emit is done without a future of the runtime's own; the rest go on
        // in `running`.
        let first = {
            let _entered = span.enter();
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let mut fut = handler(&ctx);
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                match fut.as_mut().poll(&mut cx) {
                    std::task::Poll::Ready(r) => Step::Done(r),
                    std::task::Poll::Pending => Step::Pending(fut),
                }
            }))
        };
        drop(ctx);
        let step = match first {
            Ok(Step::Done(Ok(()))) if inv.nothing_emitted() => {
                let result = OutcomeKind::Handled {
                    latency: started.elapsed(),
                    emitted: 0,
                };
                return self.on_outcome(Outcome {
                    tp,
                    offset,
                    generation,
                    result,
                });
            }
            Ok(Step::Done(Err(e))) => {
                return self.on_outcome(Outcome {
                    tp,
                    offset,
                    generation,
                    result: OutcomeKind::Failed(e),
                });
            }
            Ok(step) => step,
            Err(panic) => {
                let result = panicked(&tp, offset, &*panic);
                return self.on_outcome(Outcome {
                    tp,
                    offset,
                    generation,
                    result,
                });
            }
        };
        let transport = self.inst.runtime.transport.clone();
        let (key_tp, key_offset) = (tp.clone(), offset);
        let work = async move {
            let result = match step {
                Step::Pending(fut) => within(fut, started, timeout).await,
                Step::Done(r) => r,
            };
            let result = match result {
                Ok(()) => {
                    let emitted =
                        std::mem::take(&mut *inv.emitted.lock().unwrap_or_else(|p| p.into_inner()));
                    let n = emitted.len();
                    match send_all(&*transport, emitted).await {
                        Ok(()) => OutcomeKind::Handled {
                            latency: started.elapsed(),
                            emitted: n,
                        },
                        Err(e) => OutcomeKind::Failed(HandlerError::transient(format!(
                            "sending emitted events: {e}"
                        ))),
                    }
                }
                Err(e) => OutcomeKind::Failed(e),
            };
            Outcome {
                tp,
                offset,
                generation,
                result,
            }
        };
        if span.is_disabled() {
            self.launch(key_tp, key_offset, generation, work);
        } else {
            self.launch(key_tp, key_offset, generation, work.instrument(span));
        }
    }

    /// Adds `f`, the work on the record at `tp`/`offset`, to the running invocations.
    /// A panic in it becomes a transient failure of that record, so it is retried and
    /// in the end dead-lettered like any other failure, never left stuck.
    ///
    /// `f` is polled once here, at once: most handlers finish on their first poll, and
    /// their outcome is taken without going through `running` (no task, no wake-up).
    /// One that does not finish moves to `running`, which polls it again at once with
    /// its own waker (the no-op waker of this first poll is never needed).
    fn launch(
        &mut self,
        tp: TopicPartition,
        offset: i64,
        generation: u64,
        f: impl Future<Output = Outcome> + Send + 'static,
    ) {
        let mut fut: Running = Box::pin(async move {
            match std::panic::AssertUnwindSafe(f).catch_unwind().await {
                Ok(o) => o,
                Err(panic) => {
                    let result = panicked(&tp, offset, &*panic);
                    Outcome {
                        tp,
                        offset,
                        generation,
                        result,
                    }
                }
            }
        });
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(o) => self.on_outcome(o),
            std::task::Poll::Pending => self.running.push(fut),
        }
    }

    /// The record at `offset` is done: handled, dead-lettered or skipped.
    fn finish(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(part) = self.parts.get_mut(tp) {
            part.finish(offset);
        }
    }

    fn on_outcome(&mut self, o: Outcome) {
        let Some(part) = self
            .parts
            .get_mut(&o.tp)
            .filter(|p| p.generation == o.generation)
        else {
            return; // the partition moved on meanwhile; its new owner handles it again
        };
        let m = &self.inst.metrics;
        match o.result {
            OutcomeKind::Handled { latency, emitted } => {
                m.handled.fetch_add(1, Ordering::Relaxed);
                if emitted > 0 {
                    m.emitted.fetch_add(emitted as u64, Ordering::Relaxed);
                }
                m.observe_latency(latency);
                part.finish(o.offset);
            }
            OutcomeKind::DeadLettered => {
                m.dead_lettered.fetch_add(1, Ordering::Relaxed);
                part.finish(o.offset);
            }
            OutcomeKind::DeadLetterFailed(e) => {
                // The record stays unfinished (its offset is not committed) and is tried
                // again later: its handler runs again, and gives up into the dead-letter
                // topic again if it still fails.
                error!(tp = %o.tp, offset = o.offset, %e, "cannot write the dead letter; trying the record again later");
                self.wake_after(o.tp, o.offset, o.generation, DEAD_LETTER_RETRY);
            }
            OutcomeKind::Failed(err) => {
                m.failed.fetch_add(1, Ordering::Relaxed);
                let part = self.parts.get_mut(&o.tp).expect("checked above");
                let attempt = part.attempts.entry(o.offset).or_insert(0);
                *attempt += 1;
                let attempt = *attempt;
                let mut rng = || self.rng.next_u64();
                match retry::decide(&self.inst.service.recoverability, &err, attempt, &mut rng) {
                    Decision::RetryAfter(d) => {
                        debug!(tp = %o.tp, offset = o.offset, attempt, delay = ?d, %err, "retrying");
                        m.retried.fetch_add(1, Ordering::Relaxed);
                        self.wake_after(o.tp, o.offset, o.generation, d);
                    }
                    Decision::Park(d) => {
                        debug!(tp = %o.tp, offset = o.offset, attempt, delay = ?d, %err, "parked");
                        m.parked.fetch_add(1, Ordering::Relaxed);
                        self.wake_after(o.tp, o.offset, o.generation, d);
                    }
                    Decision::DeadLetter { reason } => {
                        warn!(tp = %o.tp, offset = o.offset, attempt, %reason, "dead-lettering");
                        self.dead_letter(o.tp, o.offset, o.generation, &err, attempt);
                    }
                    Decision::Skip { reason } => {
                        warn!(tp = %o.tp, offset = o.offset, attempt, %reason, "giving up (dead letters are off)");
                        self.finish(&o.tp, o.offset);
                    }
                }
            }
        }
    }

    fn wake_after(&mut self, tp: TopicPartition, offset: i64, generation: u64, d: Duration) {
        let sleep = self.inst.runtime.clock.sleep(d);
        self.timers.spawn(async move {
            sleep.await;
            Wake {
                tp,
                offset,
                generation,
            }
        });
    }

    fn on_wake(&mut self, w: &Wake) {
        let current = self
            .parts
            .get(&w.tp)
            .is_some_and(|p| p.generation == w.generation && p.records.get(w.offset).is_some());
        if current {
            // Back in the queue, in offset order with its key, under the concurrency
            // limit: many records waking at once do not all run at once.
            if let Some(part) = self.parts.get_mut(&w.tp) {
                part.tracker.release(w.offset);
            }
        }
    }

    fn dead_letter(
        &mut self,
        tp: TopicPartition,
        offset: i64,
        generation: u64,
        err: &HandlerError,
        attempts: u32,
    ) {
        let part = self.parts.get(&tp).expect("caller checked");
        let record = part.records.get(offset).expect("tracked").clone();
        let mut hdrs: Vec<(String, Vec<u8>)> = record
            .headers
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.to_vec())))
            .collect();
        let kind = match err.kind() {
            crate::error::ErrorKind::Transient => "transient",
            crate::error::ErrorKind::Permanent => "permanent",
            crate::error::ErrorKind::NotYet => "not_yet",
        };
        for (k, v) in [
            (dlq_headers::ERROR, err.message().to_string()),
            (dlq_headers::ERROR_KIND, kind.to_string()),
            (dlq_headers::TOPIC, tp.topic.to_string()),
            (dlq_headers::PARTITION, tp.partition.to_string()),
            (dlq_headers::OFFSET, offset.to_string()),
            (dlq_headers::ATTEMPTS, attempts.to_string()),
            (dlq_headers::SERVICE, self.inst.name.to_string()),
            (
                dlq_headers::TIME_MS,
                crate::clock::unix_now_ms().to_string(),
            ),
        ] {
            hdrs.push((k.to_string(), v.into_bytes()));
        }
        let letter = OutRecord {
            topic: dead_letter_topic(&self.inst.name),
            partition: None,
            key: record.key.as_ref().map(|k| k.to_vec()),
            value: record.value.as_ref().map(|v| v.to_vec()),
            headers: hdrs,
        };
        let transport = self.inst.runtime.transport.clone();
        let key_tp = tp.clone();
        self.launch(key_tp, offset, generation, async move {
            let mut last = String::new();
            for i in 0..DEAD_LETTER_SEND_ATTEMPTS {
                match transport.send(vec![letter.clone()]).await {
                    Ok(_) => {
                        return Outcome {
                            tp,
                            offset,
                            generation,
                            result: OutcomeKind::DeadLettered,
                        };
                    }
                    Err(e) => last = e.to_string(),
                }
                tokio::time::sleep(Duration::from_millis(100 << i.min(6))).await;
            }
            Outcome {
                tp,
                offset,
                generation,
                result: OutcomeKind::DeadLetterFailed(last),
            }
        });
    }

    async fn on_delivery(
        &mut self,
        d: Delivery,
        commit: &mut Option<CommitInFlight>,
    ) -> Result<(), Error> {
        match d {
            Delivery::Records(records) => {
                self.idle_seen = false;
                // Before the positions move, so that nobody sees new positions with an
                // old "idle".
                self.inst.status.idle.store(false, Ordering::SeqCst);
                // Records come in runs of one partition: look it up once per run.
                let mut current: Option<(TopicPartition, Option<&mut Part>)> = None;
                for r in HeldRecord::each(records) {
                    let same = current
                        .as_ref()
                        .is_some_and(|(tp, _)| same_partition(tp, &r.tp));
                    if !same {
                        current = Some((r.tp.clone(), self.parts.get_mut(&r.tp)));
                    }
                    let Some((_, Some(part))) = current.as_mut() else {
                        continue;
                    };
                    if r.offset <= part.last_pushed {
                        continue;
                    }
                    part.last_pushed = r.offset;
                    part.tracker.push_key(r.offset, r.key.as_deref());
                    part.records.push(r.offset, r);
                }
                // Once per partition rather than per record: it takes a lock.
                for (tp, part) in &self.parts {
                    if part.last_pushed >= 0 {
                        Status::note(&self.inst.status.fetched, tp, part.last_pushed + 1);
                    }
                }
            }
            Delivery::Assigned(tps) => {
                if !self.parts.is_empty() {
                    // An assignment is the whole of it (eager rebalancing). Partitions
                    // still held here mean a revocation was missed (the member was
                    // dropped from its group while fetching was paused): finish what
                    // runs, then forget them; their new owners start from the last
                    // commit, so nothing is lost, and no key runs twice at once here.
                    warn!(
                        held = self.parts.len(),
                        "assigned without a revocation; dropping the partitions held"
                    );
                    self.drain().await;
                    self.parts.clear();
                    self.timers.abort_all();
                    self.inst
                        .status
                        .fetched
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear();
                }
                self.generation += 1;
                self.inst.status.owned.store(tps.len(), Ordering::SeqCst);
                self.inst.status.joined.store(true, Ordering::SeqCst);
                self.inst.status.assignments.fetch_add(1, Ordering::SeqCst);
                info!(partitions = ?tps.iter().map(ToString::to_string).collect::<Vec<_>>(), "assigned");
                for tp in tps {
                    self.parts.insert(
                        tp,
                        Part {
                            tracker: PartitionTracker::default(),
                            records: Fetched::default(),
                            attempts: FxHashMap::default(),
                            generation: self.generation,
                            last_pushed: -1,
                        },
                    );
                }
            }
            Delivery::Revoking(tps) => {
                self.inst.status.owned.store(0, Ordering::SeqCst);
                self.inst.status.joined.store(false, Ordering::SeqCst);
                // Let a commit in flight land first; then finish running handlers.
                if let Some(c) = commit.take() {
                    let r = c.reply.await;
                    self.on_committed(c.done, r);
                }
                self.drain().await;
                let offsets: Vec<(TopicPartition, i64)> = tps
                    .iter()
                    .filter_map(|tp| {
                        self.parts
                            .get(tp)
                            .and_then(|p| p.tracker.committable())
                            .map(|o| (tp.clone(), o))
                    })
                    .collect();
                debug!(partitions = tps.len(), "revoking");
                let (tx, rx) = oneshot::channel();
                if self.cmd.send(Cmd::Revoked(offsets, tx)).await.is_ok()
                    && let Ok(Err(e)) = rx.await
                {
                    debug!(%e, "commit at revocation");
                }
                let mut fetched = self
                    .inst
                    .status
                    .fetched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                for tp in &tps {
                    self.parts.remove(tp);
                    fetched.remove(tp);
                }
            }
            Delivery::Idle => {
                self.idle_seen = true;
                if self.running.is_empty() {
                    self.inst.status.idle_polls.fetch_add(1, Ordering::SeqCst);
                }
                if self.lag_updated.is_none_or(|t| t.elapsed() >= LAG_INTERVAL) {
                    self.update_lag().await;
                    self.lag_updated = Some(Instant::now());
                }
            }
        }
        Ok(())
    }

    /// Waits for running invocations to end, up to the drain timeout, then abandons the
    /// rest (their records stay uncommitted).
    async fn drain(&mut self) {
        let deadline = tokio::time::Instant::now() + self.inst.runtime.drain_timeout;
        while !self.running.is_empty() {
            tokio::select! {
                Some(done) = self.running.next() => self.on_outcome(done),
                () = tokio::time::sleep_until(deadline) => {
                    warn!(running = self.running.len(), "handlers still running at the drain deadline; their records will be handled again");
                    self.running = FuturesUnordered::new();
                    break;
                }
            }
        }
    }

    async fn start_commit(&mut self) -> Option<CommitInFlight> {
        let offsets: Vec<(TopicPartition, i64)> = self
            .parts
            .iter()
            .filter_map(|(tp, p)| p.tracker.committable().map(|o| (tp.clone(), o)))
            .collect();
        if offsets.is_empty() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        self.cmd.send(Cmd::Commit(offsets.clone(), tx)).await.ok()?;
        Some(CommitInFlight {
            done: offsets
                .into_iter()
                .map(|(tp, o)| (tp.clone(), o, self.parts[&tp].generation))
                .collect(),
            reply: Box::pin(rx),
        })
    }

    fn on_committed(
        &mut self,
        done: Vec<(TopicPartition, i64, u64)>,
        reply: Result<Result<(), Error>, oneshot::error::RecvError>,
    ) {
        match reply {
            Ok(Ok(())) => {
                self.inst.metrics.commits.fetch_add(1, Ordering::Relaxed);
                for (tp, offset, generation) in done {
                    if let Some(p) = self.parts.get_mut(&tp)
                        && p.generation == generation
                    {
                        p.tracker.mark_committed(offset);
                    }
                }
            }
            Ok(Err(e)) => debug!(%e, "commit refused; trying again later"),
            Err(_) => {}
        }
    }

    // `&mut`: the worker is `Send` but not `Sync` (its running futures are not).
    async fn update_lag(&mut self) {
        let mut lag = BTreeMap::new();
        let mut by_topic: BTreeMap<&str, Vec<(&TopicPartition, &Part)>> = BTreeMap::new();
        for (tp, p) in &self.parts {
            by_topic.entry(&tp.topic).or_default().push((tp, p));
        }
        for (topic, parts) in by_topic {
            let Ok(wm) = self.inst.runtime.transport.watermarks(topic).await else {
                continue;
            };
            for (tp, p) in parts {
                if let (Some((_, hw)), Some(at)) =
                    (wm.get(tp.partition as usize), p.tracker.committed())
                {
                    lag.insert(tp.to_string(), (hw - at).max(0));
                }
            }
        }
        self.inst.metrics.set_lag(lag);
    }

    async fn shutdown(
        &mut self,
        next: Option<oneshot::Receiver<Result<Delivery, Error>>>,
        commit: Option<CommitInFlight>,
    ) -> Result<(), Error> {
        info!("stopping: finishing running handlers");
        if let Some(c) = commit {
            let r = c.reply.await;
            self.on_committed(c.done, r);
        }
        if let Some(rx) = next {
            // The poller is busy with this; its records stay unhandled and uncommitted.
            let _ = rx.await;
        }
        self.timers.abort_all();
        self.drain().await;
        if let Some(c) = self.start_commit().await {
            let r = c.reply.await;
            self.on_committed(c.done, r);
        }
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Cmd::Close(tx)).await.is_ok()
            && let Ok(Err(e)) = rx.await
        {
            warn!(%e, "leaving the group");
        }
        info!("stopped");
        Ok(())
    }
}

/// Waits for every table feeder to end (they watch the instance's stop), logging
/// errors.
async fn quiet(feeders: &mut JoinSet<Result<(), Error>>) {
    while let Some(r) = feeders.join_next().await {
        if let Ok(Err(e)) = r {
            warn!(%e, "table feeder stopped on an error");
        }
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// A commit on its way, and what it commits.
struct CommitInFlight {
    done: Vec<(TopicPartition, i64, u64)>,
    reply: std::pin::Pin<Box<oneshot::Receiver<Result<(), Error>>>>,
}

/// `handler`'s result, or a transient failure once it has run `timeout` since `started`.
/// The first poll needs no timer: a handler that finishes on it (most do) never sets
/// one.
async fn within(
    handler: crate::transport::BoxFuture<'static, Result<(), HandlerError>>,
    started: Instant,
    timeout: Duration,
) -> Result<(), HandlerError> {
    let mut handler = handler;
    let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(r) = handler.as_mut().poll(cx) {
            return std::task::Poll::Ready(r);
        }
        let timer = timer.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep(
                timeout.saturating_sub(started.elapsed()),
            ))
        });
        timer.as_mut().poll(cx).map(|()| {
            Err(HandlerError::transient(format!(
                "the handler took longer than {timeout:?}"
            )))
        })
    })
    .await
}

async fn send_all(transport: &dyn Transport, records: Vec<OutRecord>) -> Result<(), Error> {
    if records.is_empty() {
        return Ok(());
    }
    transport.send(records).await.map(|_| ())
}

/// Restores and follows one table.
///
/// Reading and writing overlap: a reader task polls the source partitions into a
/// bounded channel while the feeder writes what it has gathered so far, in one store
/// transaction with the offsets it reaches. The longer a write takes, the more the next
/// one gathers (up to `TABLE_BATCH_RECORDS_MAX`), so under load a table pays one fsync
/// per tens of thousands of records, and when quiet each record is written at once.
struct TableFeeder {
    transport: Arc<dyn Transport>,
    status: Arc<Status>,
    idle_poll: Duration,
    store: Arc<runnel_state::Store>,
    def: Arc<TableDef>,
    metrics: Arc<Metrics>,
}

/// Records gathered into one table write, at most. A bound on the memory a write holds
/// and on how long it keeps the store busy.
const TABLE_BATCH_RECORDS_MAX: usize = 50_000;
/// Polls the table's reader task may be ahead of the writes.
const TABLE_POLLS_AHEAD_MAX: usize = 2;

/// One table write running on the blocking pool, and what it covers.
struct TableWrite {
    task: JoinHandle<Result<(), Error>>,
    /// Per partition, the offset after the last record in the write.
    reached: HashMap<TopicPartition, i64>,
    records: usize,
}

impl TableFeeder {
    async fn run(
        self,
        ready: watch::Sender<bool>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), Error> {
        let name = self.def.name.clone();
        let stored = {
            let store = self.store.clone();
            let n = name.clone();
            tokio::task::spawn_blocking(move || store.offsets(&n))
                .await
                .map_err(|e| Error::Store(e.to_string()))?
                .map_err(|e| Error::Store(e.to_string()))?
        };
        let mut from = Vec::new();
        let mut targets: HashMap<TopicPartition, i64> = HashMap::new();
        let mut behind: i64 = 0;
        for topic in self.def.topics() {
            let wm = self.transport.watermarks(topic).await?;
            for (p, (lo, hi)) in wm.iter().enumerate() {
                let tp = TopicPartition::new(topic, p as i32);
                let next = stored
                    .get(&(topic.to_string(), p as i32))
                    .copied()
                    .unwrap_or(*lo)
                    .max(*lo);
                if next < *hi {
                    targets.insert(tp.clone(), *hi);
                    behind += hi - next;
                }
                Status::note(&self.status.applied, &tp, next);
                from.push((tp, next));
            }
        }
        if targets.is_empty() {
            info!(table = %name, "table is up to date");
            let _ = ready.send(true);
        } else {
            info!(table = %name, records = behind, "restoring table");
        }
        let reader = self.transport.reader(from)?;
        let (polled_tx, mut polled) = mpsc::channel(TABLE_POLLS_AHEAD_MAX);
        let reading = tokio::spawn(
            read_table_sources(reader, self.idle_poll, polled_tx, stop.clone()).in_current_span(),
        );
        // Ends the reader task however this function returns.
        let _reading = AbortOnDrop(reading);
        let routes = Arc::new(self.def.routes());
        let mut gathered: Vec<Record> = Vec::new();
        let mut writing: Option<TableWrite> = None;
        let mut applied: i64 = 0;
        let mut last_report = Instant::now();
        loop {
            if writing.is_none() && !gathered.is_empty() {
                writing = Some(self.start_write(std::mem::take(&mut gathered), &routes));
            }
            let room = gathered.len() < TABLE_BATCH_RECORDS_MAX;
            tokio::select! {
                () = stopped(&mut stop) => return land(writing).await,
                done = async { (&mut writing.as_mut().expect("guarded").task).await }, if writing.is_some() => {
                    let w = writing.take().expect("guarded");
                    done.map_err(|e| Error::Store(e.to_string()))??;
                    for (tp, next) in &w.reached {
                        Status::note(&self.status.applied, tp, *next);
                    }
                    self.metrics
                        .table_records
                        .fetch_add(w.records as u64, Ordering::Relaxed);
                    if !targets.is_empty() {
                        applied += w.records as i64;
                        targets.retain(|tp, target| w.reached.get(tp).is_none_or(|r| r < target));
                        if targets.is_empty() {
                            info!(table = %name, records = applied, "table restored");
                            let _ = ready.send(true);
                        } else if last_report.elapsed() >= RESTORE_PROGRESS_INTERVAL {
                            info!(table = %name, applied, of = behind, "restoring table");
                            last_report = Instant::now();
                        }
                    }
                }
                got = polled.recv(), if room => {
                    let Polled { records, positions } = match got {
                        Some(Ok(p)) => p,
                        Some(Err(e)) => {
                            land(writing).await?;
                            return Err(e);
                        }
                        // The reader task ended without an error: it saw the stop.
                        None => return land(writing).await,
                    };
                    if records.is_empty() {
                        // Idle only once everything read is written too: the test
                        // harness takes this as "the table has caught up".
                        if writing.is_none() && gathered.is_empty() {
                            // A source whose tail holds no record (compaction removed
                            // it) is caught up once the reader stands at its target.
                            for (tp, at) in &positions {
                                Status::note(&self.status.applied, tp, *at);
                                if targets.get(tp).is_some_and(|target| at >= target) {
                                    targets.remove(tp);
                                }
                            }
                            if targets.is_empty() && !*ready.borrow() {
                                info!(table = %name, records = applied, "table restored");
                                let _ = ready.send(true);
                            }
                            self.status.table_idle_polls.fetch_add(1, Ordering::SeqCst);
                        }
                    } else if gathered.is_empty() {
                        gathered = records;
                    } else {
                        gathered.extend(records);
                    }
                }
            }
        }
    }

    /// Starts writing `records` to the table on the blocking pool.
    fn start_write(
        &self,
        records: Vec<Record>,
        routes: &Arc<HashMap<(&'static str, &'static str), Route>>,
    ) -> TableWrite {
        // Records come in runs of one partition: one entry per run, not per record.
        let mut reached = HashMap::new();
        let mut runs = records.iter().peekable();
        while let Some(r) = runs.next() {
            if runs
                .peek()
                .is_none_or(|next| !same_partition(&next.tp, &r.tp))
            {
                reached.insert(r.tp.clone(), r.offset + 1);
            }
        }
        let n = records.len();
        let store = self.store.clone();
        let table = self.def.name.clone();
        let routes = routes.clone();
        let metrics = self.metrics.clone();
        let task = tokio::task::spawn_blocking(move || {
            apply_table_batch(&store, &table, &routes, &records, &metrics)
        });
        TableWrite {
            task,
            reached,
            records: n,
        }
    }
}

/// Waits for a table write in flight, so that the store is quiet when the feeder ends.
async fn land(writing: Option<TableWrite>) -> Result<(), Error> {
    match writing {
        Some(w) => w.task.await.map_err(|e| Error::Store(e.to_string()))?,
        None => Ok(()),
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The table feeder's reader task: polls the sources and hands each poll over, empty
/// ones included (they tell the feeder the sources are quiet). Ends on stop, when the
/// feeder is gone, or after handing over an error.
async fn read_table_sources(
    mut reader: Box<dyn crate::transport::Reader>,
    idle_poll: Duration,
    polled: mpsc::Sender<Result<Polled, Error>>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let got = tokio::select! {
            r = reader.poll(idle_poll) => r,
            () = stopped(&mut stop) => return,
        };
        let failed = got.is_err();
        let got = got.map(|records| {
            // Where the reader stands matters when it has nothing more to hand over.
            let positions = if records.is_empty() {
                reader.positions()
            } else {
                Vec::new()
            };
            Polled { records, positions }
        });
        if polled.send(got).await.is_err() || failed {
            return;
        }
    }
}

/// One poll of a table's sources.
struct Polled {
    records: Vec<Record>,
    /// On an empty poll, the reader's position per partition.
    positions: Vec<(TopicPartition, i64)>,
}

/// Applies records to a table in one atomic write, with the offsets they reach.
///
/// Several records of one key within the batch are folded in memory (an overlay of the
/// batch's own writes), and only each key's final value is written: the store sees one
/// put or delete per key and one offset per partition, however many records the batch
/// holds. The outcome is the same as writing every record in order.
fn apply_table_batch(
    store: &runnel_state::Store,
    table: &str,
    routes: &HashMap<(&'static str, &'static str), Route>,
    records: &[Record],
    metrics: &Metrics,
) -> Result<(), Error> {
    // Looked up with borrowed names (the map is covariant in its keys' lifetimes).
    let routes: &HashMap<(&str, &str), Route> = routes;
    let mut overlay: HashMap<Bytes, Option<Vec<u8>>> = HashMap::new();
    let mut reached: Vec<(&TopicPartition, i64)> = Vec::new();
    // The route of the last record's type, and that type: records of one producer
    // mostly share theirs.
    let mut last_route: Option<(&TopicPartition, &[u8], &Route)> = None;
    for r in records {
        match reached
            .last_mut()
            .filter(|(tp, _)| same_partition(tp, &r.tp))
        {
            Some((_, next)) => *next = r.offset + 1,
            None => match reached.iter_mut().find(|(tp, _)| *tp == &r.tp) {
                Some((_, next)) => *next = r.offset + 1,
                None => reached.push((&r.tp, r.offset + 1)),
            },
        }
        let Some(key) = &r.key else {
            // As in Kafka Streams, a table ignores records without a key.
            metrics.table_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let Some(value) = r.value.as_deref() else {
            overlay.insert(key.clone(), None);
            continue;
        };
        let topic = &*r.tp.topic;
        let route = match r.header(headers::CE_TYPE) {
            Some(t) => match last_route {
                Some((tp, ty, route)) if Arc::ptr_eq(&tp.topic, &r.tp.topic) && ty == t => {
                    Some(route)
                }
                _ => {
                    let route = std::str::from_utf8(t)
                        .ok()
                        .and_then(|ty| routes.get(&(topic, ty)));
                    last_route = route.map(|route| (&r.tp, t, route));
                    route
                }
            },
            None => {
                let mut of_topic = routes.iter().filter(|((t, _), _)| *t == topic);
                match (of_topic.next(), of_topic.next()) {
                    (Some((_, route)), None) => Some(route),
                    _ => None,
                }
            }
        };
        let Some(route) = route else {
            continue;
        };
        let applied = if route.reads_current {
            let current = match overlay.get(key) {
                Some(v) => v.as_deref().map(Cow::Borrowed),
                None => store
                    .get(table, key)
                    .map_err(|e| Error::Store(format!("reading table {table}: {e}")))?
                    .map(Cow::Owned),
            };
            (route.apply)(current.as_deref(), value)
        } else {
            (route.apply)(None, value)
        };
        match applied {
            Ok(v) => {
                overlay.insert(key.clone(), v);
            }
            Err(e) => {
                metrics.table_errors.fetch_add(1, Ordering::Relaxed);
                warn!(table, tp = %r.tp, offset = r.offset, %e, "a table record cannot be applied; skipped");
            }
        }
    }
    let mut finals: Vec<(Bytes, Option<Vec<u8>>)> = overlay.into_iter().collect();
    // Key order: the store's B-tree takes sorted inserts best.
    finals.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
    let mut batch = runnel_state::WriteBatch::default();
    for (key, value) in &finals {
        match value {
            Some(v) => batch.put(table, key, v),
            None => batch.delete(table, key),
        }
    }
    for (tp, next) in reached {
        batch.set_offset(table, &tp.topic, tp.partition, next);
    }
    store
        .apply(&batch)
        .map_err(|e| Error::Store(format!("writing table {table}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: i64) -> HeldRecord {
        HeldRecord::each(vec![Record {
            tp: TopicPartition::new("t", 0),
            offset,
            timestamp_ms: 0,
            key: None,
            value: None,
            headers: crate::transport::Headers::new(),
        }])
        .next()
        .unwrap()
    }

    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    struct Set {
        key: String,
        n: i64,
    }
    crate::event!(Set, type = "set", topic = "nums", key = |e| e.key.clone());
    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    struct Add {
        key: String,
        n: i64,
    }
    crate::event!(Add, type = "add", topic = "nums", key = |e| e.key.clone());

    /// Two event types of one topic interleaved over two partitions: each record goes
    /// to its own route, and each partition's offset is the one after its last record.
    #[test]
    fn a_table_batch_routes_each_type_and_records_each_partitions_end() {
        let dir = std::env::temp_dir().join(format!(
            "runnel-services-table-batch-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = runnel_state::Store::open(dir.join("state.redb")).unwrap();
        let def = crate::table::TableDef::from(
            crate::Table::<i64>::named("sums")
                .upsert::<Set>(|e| Some(e.n))
                .fold::<Add>(|cur, e| Some(cur.unwrap_or(0) + e.n)),
        );
        let trace = crate::TraceParent::new_root(&mut || 7);
        let topic = TopicPartition::new("nums", 0).topic;
        let record = |partition, offset, out: crate::transport::OutRecord| Record {
            tp: TopicPartition {
                topic: topic.clone(),
                partition,
            },
            offset,
            timestamp_ms: 0,
            key: out.key.map(Bytes::from),
            value: out.value.map(Bytes::from),
            headers: out
                .headers
                .into_iter()
                .map(|(k, v)| (crate::transport::header_name(&k), Some(Bytes::from(v))))
                .collect(),
        };
        let set = |key: &str, n| crate::event_record(&Set { key: key.into(), n }, "i", "t", &trace);
        let add = |key: &str, n| crate::event_record(&Add { key: key.into(), n }, "i", "t", &trace);
        let records = vec![
            record(0, 10, set("a", 5)),
            record(0, 11, add("a", 2)),
            record(1, 3, add("b", 4)),
            record(1, 4, set("b", 1)),
            record(0, 12, add("a", 3)),
            record(1, 5, add("b", 6)),
        ];
        apply_table_batch(&store, "sums", &def.routes(), &records, &Metrics::default()).unwrap();
        let get = |key: &str| {
            store
                .get("sums", key.as_bytes())
                .unwrap()
                .map(|v| serde_json::from_slice::<i64>(&v).unwrap())
        };
        assert_eq!((get("a"), get("b")), (Some(10), Some(7)));
        let offsets = store.offsets("sums").unwrap();
        assert_eq!(offsets.get(&("nums".to_string(), 0)), Some(&13));
        assert_eq!(offsets.get(&("nums".to_string(), 1)), Some(&6));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn fetched_records_are_found_with_gaps_and_leave_from_the_front() {
        let mut f = Fetched::default();
        // Gaps, as compaction and transaction markers leave them.
        for o in [10, 11, 12, 15, 16, 20] {
            f.push(o, record(o));
        }
        for o in [10, 11, 12, 15, 16, 20] {
            assert_eq!(f.get(o).map(|r| r.offset), Some(o));
        }
        for absent in [0, 9, 13, 14, 17, 19, 21, i64::MIN, i64::MAX] {
            assert!(f.get(absent).is_none(), "{absent}");
        }
        // Finished out of order: held until everything before it is finished too.
        f.remove(12);
        assert!(f.get(12).is_none());
        assert_eq!(f.slots.len(), 6);
        f.remove(10);
        assert_eq!(f.slots.len(), 5);
        f.remove(11);
        assert_eq!(f.slots.front().map(|s| s.0), Some(15));
        assert_eq!(f.get(16).map(|r| r.offset), Some(16));
        // Removing what is not held changes nothing.
        f.remove(13);
        f.remove(99);
        assert_eq!(f.slots.len(), 3);
        for o in [15, 16, 20] {
            f.remove(o);
        }
        assert!(f.slots.is_empty());
        f.push(21, record(21));
        assert_eq!(f.get(21).map(|r| r.offset), Some(21));
    }
}
