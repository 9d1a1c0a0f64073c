//! Handlers are plain `async fn`s whose arguments are typed extractors, as in axum.
//!
//! ```text
//! async fn notify(
//!     order: OrderCreated,              // the event, decoded (any `Event`)
//!     meta: Meta,                       // its metadata: id, type, partition, offset, trace
//!     customers: TableRef<Customer>,    // a read-only view of one of the service's tables
//!     emit: Emitter,                    // events to send once the handler succeeds
//!     State(app): State<App>,           // the service's state
//! ) -> Result<(), HandlerError> { … }
//! ```
//!
//! A handler never commits. What it emits is sent after it returns `Ok`, before the
//! input's offset can be committed; a failed attempt emits nothing.

use std::any::{Any, TypeId, type_name};
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::{Arc, Mutex, OnceLock};

use crate::contract::{self, Event};
use crate::error::HandlerError;
use crate::metadata::{self, Metadata};
use crate::table::TableRef;
use crate::trace::TraceParent;
use crate::transport::{BoxFuture, OutRecord, Record, same_partition};

/// A fetched record, held through the run of its partition's records it came in: the
/// records of a run share one allocation and one reference count, so holding a record
/// costs no allocation of its own.
///
/// A record held long (a slow handler, a parked retry, a record waiting behind its key)
/// keeps its run alive: records of its own partition, inside the partition's tracked
/// window (which the runtime bounds anyway) but for at most one run before it (one
/// delivery: 4,096 records on the toolkit's transports). Holding the whole delivery
/// instead would let one parked record per delivery keep thousands of other
/// partitions' records alive each.
#[derive(Clone)]
pub(crate) struct HeldRecord {
    run: Arc<Vec<Record>>,
    at: usize,
}

impl HeldRecord {
    /// Each record of `delivery`, in order, held by runs of one partition.
    pub(crate) fn each(mut delivery: Vec<Record>) -> impl Iterator<Item = HeldRecord> {
        let mut runs = Vec::new();
        while let Some(last) = delivery.last() {
            let start = delivery
                .iter()
                .rposition(|r| !same_partition(&r.tp, &last.tp))
                .map_or(0, |i| i + 1);
            let run = if start == 0 {
                std::mem::take(&mut delivery)
            } else {
                delivery.split_off(start)
            };
            runs.push(Arc::new(run));
        }
        runs.into_iter().rev().flat_map(|run| {
            (0..run.len()).map(move |at| HeldRecord {
                run: run.clone(),
                at,
            })
        })
    }
}

impl Deref for HeldRecord {
    type Target = Record;

    fn deref(&self) -> &Record {
        &self.run[self.at]
    }
}

/// Everything one handler invocation can reach.
pub struct Context<S> {
    pub(crate) inv: Arc<Invocation>,
    pub(crate) state: S,
}

/// The parts of an invocation that do not depend on the state type.
///
/// Metadata and trace are built on first use: a handler that takes neither (nor emits)
/// costs no header parsing, and with no tracing subscriber listening nobody else asks.
pub(crate) struct Invocation {
    pub(crate) record: HeldRecord,
    /// Which delivery of the record this is, from 1.
    attempt: u32,
    /// The record's metadata, from its headers.
    meta: OnceLock<Metadata>,
    /// The service's tables, by the type of their values.
    pub(crate) tables: Arc<TableSet>,
    pub(crate) service: Arc<str>,
    /// What the handler emitted; sent by the runtime when the handler succeeds.
    pub(crate) emitted: Mutex<Vec<OutRecord>>,
    /// The trace this invocation continues: a child of the record's, or a new root.
    trace: OnceLock<TraceParent>,
    /// Span ids (and the trace id of a new root).
    rng: Mutex<crate::rng::SplitMix64>,
}

impl Invocation {
    /// An invocation of `record`; `seed` seeds its span ids.
    pub(crate) fn new(
        record: HeldRecord,
        attempt: u32,
        tables: Arc<TableSet>,
        service: Arc<str>,
        seed: u64,
    ) -> Invocation {
        Invocation {
            record,
            attempt,
            meta: OnceLock::new(),
            tables,
            service,
            emitted: Mutex::new(Vec::new()),
            trace: OnceLock::new(),
            rng: Mutex::new(crate::rng::SplitMix64::new(seed)),
        }
    }

    /// The record's metadata.
    pub(crate) fn meta(&self) -> &Metadata {
        self.meta.get_or_init(|| {
            let r = &self.record;
            let headers: Vec<(String, Option<Vec<u8>>)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_ref().map(|b| b.to_vec())))
                .collect();
            let mut meta = Metadata::from_record(
                r.tp.topic.to_string(),
                r.tp.partition,
                r.offset,
                r.key.as_deref(),
                r.timestamp_ms,
                &headers,
            );
            meta.attempt = self.attempt;
            meta
        })
    }

    /// Whether the handler emitted nothing (so far).
    pub(crate) fn nothing_emitted(&self) -> bool {
        self.emitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// The trace this invocation continues.
    pub(crate) fn trace(&self) -> &TraceParent {
        self.trace.get_or_init(|| {
            let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
            let mut next = || rng.next_u64();
            match &self.meta().traceparent {
                Some(t) => t.child(&mut next),
                None => TraceParent::new_root(&mut next),
            }
        })
    }
}

/// The service's tables, reachable by their value type.
#[derive(Default)]
pub(crate) struct TableSet {
    pub(crate) by_type: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for TableSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableSet")
            .field("tables", &self.by_type.len())
            .finish()
    }
}

impl TableSet {
    pub(crate) fn get<V: 'static + Send + Sync>(&self) -> Option<TableRef<V>> {
        self.by_type
            .get(&TypeId::of::<V>())
            .and_then(|t| t.clone().downcast::<TableRef<V>>().ok())
            .map(|t| (*t).clone())
    }
}

impl<S: Clone> Context<S> {
    /// The record being handled.
    #[must_use]
    pub fn record(&self) -> &Record {
        &self.inv.record
    }
}

/// Something a handler can take as an argument.
pub trait FromContext<S>: Sized {
    /// Builds the argument; an error fails the attempt with that error.
    fn from_context(ctx: &Context<S>) -> Result<Self, HandlerError>;
}

impl<S, E: Event> FromContext<S> for E {
    fn from_context(ctx: &Context<S>) -> Result<Self, HandlerError> {
        let value =
            ctx.inv.record.value.as_deref().ok_or_else(|| {
                HandlerError::permanent(format!("a {} record has no value", E::TYPE))
            })?;
        contract::decode::<E>(value).map_err(HandlerError::from)
    }
}

/// The metadata of the record being handled.
#[derive(Clone, Debug)]
pub struct Meta(pub Metadata);

impl Deref for Meta {
    type Target = Metadata;
    fn deref(&self) -> &Metadata {
        &self.0
    }
}

impl<S> FromContext<S> for Meta {
    fn from_context(ctx: &Context<S>) -> Result<Self, HandlerError> {
        Ok(Meta(ctx.inv.meta().clone()))
    }
}

/// The service's state, as given to `Service::with_state`.
#[derive(Clone, Debug)]
pub struct State<T>(pub T);

impl<S: Clone> FromContext<S> for State<S> {
    fn from_context(ctx: &Context<S>) -> Result<Self, HandlerError> {
        Ok(State(ctx.state.clone()))
    }
}

impl<S, V: 'static + Send + Sync> FromContext<S> for TableRef<V> {
    fn from_context(ctx: &Context<S>) -> Result<Self, HandlerError> {
        ctx.inv.tables.get::<V>().ok_or_else(|| {
            HandlerError::permanent(format!(
                "service {} declares no table of {}",
                ctx.inv.service,
                type_name::<V>()
            ))
        })
    }
}

/// Emits events from a handler. Each gets a deterministic id derived from the input
/// record and its place among the emitted events, so a consumer can drop the
/// duplicates that a crash between sending and committing produces.
#[derive(Clone)]
pub struct Emitter {
    inv: Arc<Invocation>,
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emitter")
            .field("service", &self.inv.service)
            .finish()
    }
}

impl Emitter {
    /// Queues `event` for sending once the handler succeeds; returns its id.
    pub fn emit<E: Event>(&self, event: &E) -> String {
        let mut emitted = self.inv.emitted.lock().unwrap_or_else(|p| p.into_inner());
        let index = emitted.len() as u32;
        let r = &self.inv.record;
        let id = metadata::derived_event_id(
            &self.inv.service,
            &r.tp.topic,
            r.tp.partition,
            r.offset,
            index,
        );
        let parent = self.inv.trace();
        let trace = {
            let mut rng = self.inv.rng.lock().unwrap_or_else(|p| p.into_inner());
            parent.child(&mut || rng.next_u64())
        };
        emitted.push(event_record(event, &id, &self.inv.service, &trace));
        id
    }
}

impl<S> FromContext<S> for Emitter {
    fn from_context(ctx: &Context<S>) -> Result<Self, HandlerError> {
        Ok(Emitter {
            inv: ctx.inv.clone(),
        })
    }
}

/// The record that carries `event`, with its CloudEvents headers.
#[must_use]
pub fn event_record<E: Event>(event: &E, id: &str, source: &str, trace: &TraceParent) -> OutRecord {
    OutRecord {
        topic: E::TOPIC.to_string(),
        partition: None,
        key: Some(event.key().into_bytes()),
        value: Some(contract::encode(event)),
        headers: metadata::event_headers(
            id,
            E::TYPE,
            E::VERSION,
            source,
            crate::clock::unix_now_ms(),
            trace,
        ),
    }
}

/// An async function that handles one event type.
pub trait Handler<Args, S>: Clone + Send + Sync + 'static {
    /// Extracts the arguments and runs the function.
    fn call(&self, ctx: &Context<S>) -> BoxFuture<'static, Result<(), HandlerError>>;
}

macro_rules! impl_handler {
    ($($arg:ident),*) => {
        #[allow(non_snake_case, unused_variables)]
        impl<F, Fut, S, $($arg,)*> Handler<($($arg,)*), S> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
            $($arg: FromContext<S> + Send + 'static,)*
        {
            fn call(&self, ctx: &Context<S>) -> BoxFuture<'static, Result<(), HandlerError>> {
                $(
                    let $arg = match $arg::from_context(ctx) {
                        Ok(v) => v,
                        Err(e) => return Box::pin(async move { Err(e) }),
                    };
                )*
                let f = self.clone();
                Box::pin(async move { f($($arg),*).await })
            }
        }
    };
}

impl_handler!();
impl_handler!(A1);
impl_handler!(A1, A2);
impl_handler!(A1, A2, A3);
impl_handler!(A1, A2, A3, A4);
impl_handler!(A1, A2, A3, A4, A5);
impl_handler!(A1, A2, A3, A4, A5, A6);
impl_handler!(A1, A2, A3, A4, A5, A6, A7);

/// A handler with its types erased, as the runtime stores it.
pub(crate) type ErasedHandler<S> =
    Arc<dyn Fn(&Context<S>) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

pub(crate) fn erase<H, Args, S>(h: H) -> ErasedHandler<S>
where
    H: Handler<Args, S>,
    Args: 'static,
    S: 'static,
{
    let _ = PhantomData::<Args>;
    Arc::new(move |ctx: &Context<S>| h.call(ctx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Headers, TopicPartition};

    #[test]
    fn held_records_share_their_run_and_outlive_each_other() {
        // Runs of one partition, as transports deliver them: p0, p1, p1, p0.
        let delivery: Vec<Record> = [(0, 0), (1, 0), (1, 1), (0, 1)]
            .into_iter()
            .map(|(partition, offset)| Record {
                tp: TopicPartition::new("t", partition),
                offset,
                timestamp_ms: 0,
                key: None,
                value: Some(bytes::Bytes::from(format!("v{partition}-{offset}"))),
                headers: Headers::new(),
            })
            .collect();
        let held: Vec<HeldRecord> = HeldRecord::each(delivery).collect();
        let order: Vec<_> = held.iter().map(|r| (r.tp.partition, r.offset)).collect();
        assert_eq!(
            order,
            [(0, 0), (1, 0), (1, 1), (0, 1)],
            "in the order delivered"
        );
        let shared = |a: usize, b: usize| Arc::ptr_eq(&held[a].run, &held[b].run);
        assert!(shared(1, 2), "one allocation for a run");
        assert!(
            !shared(0, 1) && !shared(2, 3) && !shared(0, 3),
            "one per run"
        );
        // One record kept after the others are gone still reads whole, and keeps only
        // its own run.
        let kept = held.into_iter().nth(2).unwrap();
        assert_eq!(kept.value.as_deref(), Some(&b"v1-1"[..]));
        assert_eq!(Arc::strong_count(&kept.run), 1);
        assert_eq!(kept.run.len(), 2);
        assert!(HeldRecord::each(Vec::new()).next().is_none());
    }
}
