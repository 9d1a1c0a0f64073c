//! Wires the sans-IO group coordinator (`runnel-group`) to a clock, a lock, parked
//! requests as oneshot channels, and a ticker task that expires sessions, completes
//! delayed rebalances and deletes the committed offsets of groups the coordinator
//! forgets (`offsets.retention.minutes`). The broker's group APIs and the embedded
//! transport both drive it. Committed offsets live in [`OffsetStore`].
//!
//! The coordinator's clock is monotonic but starts at the wall-clock time the broker
//! started (ms since the Unix epoch), so a commit time from before a restart can be
//! placed on it: a group known only by its offsets counts its retention from its last
//! commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use runnel_group::{
    Config, Coordinator, GroupError, JoinRequest, JoinResponse, Output, ReplyTo, SyncRequest,
    SyncResponse, Time,
};
use tokio::sync::{Notify, oneshot, watch};
use tracing::{info, warn};

use crate::offsets::OffsetStore;

/// The ticker wakes at least this often, even when no deadline is due.
const TICK_MS_MAX: u64 = 1_000;

/// The coordinator, its clock and the requests parked on it.
#[derive(Debug)]
pub struct Groups {
    state: Mutex<State>,
    /// When the coordinator's clock read `start_ms`.
    epoch: Instant,
    /// The wall-clock time (ms since the Unix epoch) at `epoch`: the coordinator's
    /// clock is `start_ms` plus the monotonic time since.
    start_ms: u64,
    /// Deadlines may have moved: the ticker re-plans.
    changed: Notify,
    /// Committed offsets.
    pub offsets: OffsetStore,
}

#[derive(Debug)]
struct State {
    coordinator: Coordinator,
    waiting: HashMap<ReplyTo, oneshot::Sender<Output>>,
    next_reply: u64,
}

impl State {
    fn deliver(&mut self, out: Vec<Output>) {
        for o in out {
            let to = match &o {
                Output::Join(r, _) | Output::Sync(r, _) => *r,
            };
            if let Some(tx) = self.waiting.remove(&to) {
                // The client may have gone away meanwhile; nothing to do then.
                let _ = tx.send(o);
            }
        }
    }

    fn park(&mut self) -> (ReplyTo, oneshot::Receiver<Output>) {
        self.next_reply += 1;
        let r = ReplyTo(self.next_reply);
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(r, tx);
        (r, rx)
    }
}

impl Groups {
    /// A coordinator with `config`; `seed` makes member ids unpredictable.
    #[must_use]
    pub fn new(config: Config, seed: u64, offsets: OffsetStore) -> Groups {
        let mut coordinator = Coordinator::new(config, seed);
        let start_ms = crate::now_ms().max(0);
        // Groups known only by their offsets exist (Empty) after a restart, as in Kafka,
        // and their retention counts from their last commit (a commit time in the future
        // counts as now).
        for (g, last_ms) in offsets.last_commit_ms() {
            let _ = coordinator.ensure_group(&g, Time(last_ms.clamp(0, start_ms) as u64));
        }
        Groups {
            state: Mutex::new(State {
                coordinator,
                waiting: HashMap::new(),
                next_reply: 0,
            }),
            epoch: Instant::now(),
            start_ms: start_ms as u64,
            changed: Notify::new(),
            offsets,
        }
    }

    fn now(&self) -> Time {
        Time(self.start_ms + self.epoch.elapsed().as_millis() as u64)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the coordinator with the current time; answers any requests it
    /// completes.
    pub fn with<T>(&self, f: impl FnOnce(&mut Coordinator, Time, &mut Vec<Output>) -> T) -> T {
        let now = self.now();
        let mut out = Vec::new();
        let mut st = self.lock();
        let result = f(&mut st.coordinator, now, &mut out);
        st.deliver(out);
        drop(st);
        self.changed.notify_one();
        result
    }

    /// Reads the coordinator.
    pub fn read<T>(&self, f: impl FnOnce(&Coordinator) -> T) -> T {
        f(&self.lock().coordinator)
    }

    /// JoinGroup: answers now or when the rebalance completes. On shutdown a parked join is answered with COORDINATOR_NOT_AVAILABLE, so the client looks again.
    pub async fn join(
        &self,
        req: JoinRequest,
        shutdown: &mut watch::Receiver<bool>,
    ) -> JoinResponse {
        let member_id = req.member_id.clone();
        let rx = self.start(|c, now, r, out| c.join(now, r, req, out));
        match wait(rx, shutdown).await {
            Some(Output::Join(_, j)) => j,
            _ => JoinResponse {
                error: Some(GroupError::CoordinatorNotAvailable),
                generation_id: -1,
                member_id,
                ..JoinResponse::default()
            },
        }
    }

    /// SyncGroup: answers now or when the leader's assignment arrives.
    pub async fn sync(
        &self,
        req: SyncRequest,
        shutdown: &mut watch::Receiver<bool>,
    ) -> SyncResponse {
        let rx = self.start(|c, now, r, out| c.sync(now, r, req, out));
        match wait(rx, shutdown).await {
            Some(Output::Sync(_, s)) => s,
            _ => SyncResponse {
                error: Some(GroupError::CoordinatorNotAvailable),
                ..SyncResponse::default()
            },
        }
    }

    fn start(
        &self,
        f: impl FnOnce(&mut Coordinator, Time, ReplyTo, &mut Vec<Output>),
    ) -> oneshot::Receiver<Output> {
        let now = self.now();
        let mut out = Vec::new();
        let mut st = self.lock();
        let (r, rx) = st.park();
        f(&mut st.coordinator, now, r, &mut out);
        st.deliver(out);
        drop(st);
        self.changed.notify_one();
        rx
    }

    /// Expires sessions, completes rebalances on time and deletes the offsets of
    /// expired groups until `shutdown` turns true.
    pub async fn run_ticker(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            // Not `with`: its notification would wake this loop at once.
            let (next, expired, decided_ms) = {
                let now = self.now();
                // Read before the decision: every commit allowed after it is newer.
                let decided_ms = crate::now_ms();
                let mut out = Vec::new();
                let mut st = self.lock();
                let expired = st.coordinator.tick(now, &mut out);
                st.deliver(out);
                let next = st
                    .coordinator
                    .next_deadline()
                    .map(|d| d.0.saturating_sub(now.0));
                (next, expired, decided_ms)
            };
            if !expired.is_empty() {
                // Tombstones are appended (and fsynced) off the runtime's threads, as all
                // storage work, and without the coordinator's lock. The ticker waits for
                // them, so whoever awaits the ticker at shutdown knows they are done.
                let groups = self.clone();
                let (done, finished) = oneshot::channel();
                let deleting = move || {
                    groups.delete_expired(&expired, decided_ms);
                    let _ = done.send(());
                };
                match std::thread::Builder::new()
                    .name("runnel-offsets-expiry".into())
                    .spawn(deleting)
                {
                    Ok(_) => {
                        let _ = finished.await;
                    }
                    Err(error) => {
                        warn!(%error, "could not start a thread to delete expired offsets");
                    }
                }
            }
            let wait_ms = next.unwrap_or(TICK_MS_MAX).clamp(1, TICK_MS_MAX);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
                () = self.changed.notified() => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }
}

impl Groups {
    /// Deletes the committed offsets of groups the coordinator forgot at
    /// `decided_ms` (wall clock). A group that committed since, or whose offsets could
    /// not be deleted, is made known again with a fresh retention clock.
    fn delete_expired(&self, expired: &[String], decided_ms: i64) {
        for group in expired {
            let kept = match self.offsets.expire_group(group, decided_ms) {
                Ok(0) => {
                    info!(group = %group, "group empty for offsets.retention.minutes: forgotten, its committed offsets deleted");
                    continue;
                }
                Ok(kept) => kept,
                Err(error) => {
                    warn!(group = %group, %error, "could not delete an expired group's offsets; trying again after another retention period");
                    self.offsets.group(group).len()
                }
            };
            if kept > 0 {
                self.with(|c, now, _| {
                    let _ = c.ensure_group(group, now);
                });
            }
        }
    }
}

async fn wait(
    rx: oneshot::Receiver<Output>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<Output> {
    tokio::select! {
        o = rx => o.ok(),
        _ = shutdown.wait_for(|s| *s) => None,
    }
}
