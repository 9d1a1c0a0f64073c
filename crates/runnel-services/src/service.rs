//! A service: a name (its consumer group), handlers by event type, tables, and how
//! failures are recovered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::contract::Event;
use crate::handler::{ErasedHandler, Handler, erase};
use crate::retry::Recoverability;
use crate::table::{Table, TableDef};
use crate::transport::TopicSpec;

/// Partitions of the topics a service creates, unless told otherwise.
pub const PARTITIONS_DEFAULT: u32 = 4;
/// Handler invocations in flight per instance, unless told otherwise.
pub const CONCURRENCY_DEFAULT: usize = 64;
/// How long one handler invocation may take before it counts as a transient failure.
pub const HANDLER_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// A service definition. Its name is its consumer group: copies of one service share
/// its partitions (competing consumers), different services each see every event.
pub struct Service<S = ()> {
    pub(crate) name: String,
    pub(crate) state: S,
    /// Handlers by (topic, event type).
    pub(crate) routes: BTreeMap<(String, String), ErasedHandler<S>>,
    pub(crate) tables: Vec<Arc<TableDef>>,
    pub(crate) recoverability: Recoverability,
    pub(crate) concurrency: usize,
    pub(crate) handler_timeout: Duration,
    pub(crate) partitions: u32,
    /// Topics to create at start: handled, emitted and table sources.
    pub(crate) topics: BTreeMap<String, TopicSpec>,
}

impl<S: Clone> Clone for Service<S> {
    fn clone(&self) -> Self {
        Service {
            name: self.name.clone(),
            state: self.state.clone(),
            routes: self.routes.clone(),
            tables: self.tables.clone(),
            recoverability: self.recoverability,
            concurrency: self.concurrency,
            handler_timeout: self.handler_timeout,
            partitions: self.partitions,
            topics: self.topics.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Service<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("routes", &self.routes.keys().collect::<Vec<_>>())
            .field(
                "tables",
                &self.tables.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Service<()> {
    /// A service named `name`, without state.
    #[must_use]
    pub fn new(name: &str) -> Service<()> {
        Service::with_state(name, ())
    }
}

impl<S: Clone + Send + Sync + 'static> Service<S> {
    /// A service named `name` whose handlers can take `State<S>`.
    #[must_use]
    pub fn with_state(name: &str, state: S) -> Service<S> {
        Service {
            name: name.to_string(),
            state,
            routes: BTreeMap::new(),
            tables: Vec::new(),
            recoverability: Recoverability::default(),
            concurrency: CONCURRENCY_DEFAULT,
            handler_timeout: HANDLER_TIMEOUT_DEFAULT,
            partitions: PARTITIONS_DEFAULT,
            topics: BTreeMap::new(),
        }
    }

    /// The service's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Handles every `E` with `handler`. One handler per event type.
    #[must_use]
    pub fn on<E: Event, Args: 'static>(mut self, handler: impl Handler<Args, S>) -> Self {
        self.routes
            .insert((E::TOPIC.to_string(), E::TYPE.to_string()), erase(handler));
        self.topic(E::TOPIC, false);
        self
    }

    /// Keeps a table built from topics; handlers read it through `TableRef<V>`.
    #[must_use]
    pub fn table<V: Serialize + DeserializeOwned + Send + Sync + 'static>(
        mut self,
        table: Table<V>,
    ) -> Self {
        let def = TableDef::from(table);
        for t in def.topics() {
            self.topic(t, false);
        }
        self.tables.push(Arc::new(def));
        self
    }

    /// Declares that the service emits `E`, so its topic exists before the first emit.
    #[must_use]
    pub fn emits<E: Event>(mut self) -> Self {
        self.topic(E::TOPIC, false);
        self
    }

    /// Declares `E`'s topic compacted (`cleanup.policy=compact`) when this service
    /// creates it: the latest event per key is kept, which suits upsert tables
    /// (`customerUpdated`) and not folds over history.
    #[must_use]
    pub fn compacted<E: Event>(mut self) -> Self {
        self.topic(E::TOPIC, true);
        self
    }

    /// How failures are retried, parked and dead-lettered.
    #[must_use]
    pub fn recoverability(mut self, r: Recoverability) -> Self {
        self.recoverability = r;
        self
    }

    /// Handler invocations in flight per instance (different keys; one key is always
    /// handled in order).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How long one invocation may take before it counts as a transient failure.
    #[must_use]
    pub fn handler_timeout(mut self, d: Duration) -> Self {
        self.handler_timeout = d;
        self
    }

    /// Partitions of the topics this service creates (existing topics keep theirs).
    #[must_use]
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n.max(1);
        for t in self.topics.values_mut() {
            t.partitions = self.partitions;
        }
        self
    }

    fn topic(&mut self, name: &str, compacted: bool) {
        let partitions = self.partitions;
        let t = self.topics.entry(name.to_string()).or_insert(TopicSpec {
            name: name.to_string(),
            partitions,
            compacted,
        });
        t.compacted |= compacted;
    }

    /// The topics its handlers consume.
    pub(crate) fn handled_topics(&self) -> Vec<String> {
        let mut t: Vec<String> = self.routes.keys().map(|(t, _)| t.clone()).collect();
        t.dedup();
        t
    }

    /// The dead-letter topic: `<service>.dlq`.
    #[must_use]
    pub fn dead_letter_topic(&self) -> String {
        dead_letter_topic(&self.name)
    }
}

/// The dead-letter topic of the service `name`.
#[must_use]
pub fn dead_letter_topic(name: &str) -> String {
    runnel_core::services::dead_letter_topic(name)
}
