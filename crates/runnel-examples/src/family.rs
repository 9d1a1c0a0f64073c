//! # The family: "my cup is empty" (the second essay, Figure 4)
//!
//! The daughter does not ask anyone for anything: she states a fact, `myCupIsEmpty`.
//! Daddy and Mummy each hear every such fact, and whoever is available refills the cup
//! and states `cupRefilled`. Daddy is busy for a while (his service is stopped); when
//! he comes back he catches up on what he missed, sees from *his own* view of the cup
//! that it is no longer empty, and disregards the old statements. Grandma can join
//! later, with the same code under another name, and nobody changes anything.
//!
//! It is the smallest demonstration of fan-out (each parent is its own consumer group),
//! catch-up (a stopped service resumes from its committed offsets) and acting on a fact
//! in the light of current state (each parent's table of the cup).
//!
//! ## Picture
//!
//! ```text
//!  POST /cup/empty
//!        │
//!  ┌─────▼────┐  myCupIsEmpty {cup, seq}   ┌──────────────────────────────────┐
//!  │ daughter │ ─────────────────────────► │ topic "cup", key: cup id         │
//!  │  [view]  │ ◄───── her own view ────── │  myCupIsEmpty, cupRefilled       │
//!  └──────────┘  GET /cup                  └──────────────────────────────────┘
//!                                               │ every record to each group  ▲
//!                      ┌────────────────────────┼──────────────────┐          │
//!                      ▼                        ▼                  ▼          │
//!                ┌──────────┐            ┌──────────┐      ┌──────────────┐   │
//!                │  daddy   │            │  mummy   │      │   grandma    │   │
//!                │  [view]  │            │  [view]  │      │ [view] later │   │
//!                └──────────┘            └──────────┘      └──────────────┘   │
//!                      └─── cupRefilled {cup, seq, by}: whoever is free ──────┘
//!
//!  [view]: the service's own table of the cups, folded from the same topic.
//!  Each parent: GET /stats (what it decided), GET /cup (its view).
//! ```
//!
//! | service | HTTP | handles | emits | keeps |
//! |---|---|---|---|---|
//! | `daughter` | `POST /cup/empty`, `GET /cup`, `GET /cups`, `GET /cups/{id}` | nothing | `myCupIsEmpty` | her view of the cups |
//! | `daddy`, `mummy`, `grandma` | `GET /stats`, `GET /cup`, `GET /cups`, `GET /cups/{id}` | `myCupIsEmpty` | `cupRefilled` | their own view of the cups |
//!
//! ## Which emptiness a refill answers
//!
//! A cup runs empty many times, so "the cup is full now" needs to say *since when*. The
//! daughter numbers her cup's emptinesses: each `myCupIsEmpty` carries `seq` (1, 2, …)
//! and each `cupRefilled` echoes the `seq` it answers. Every service folds the `cup`
//! topic into a [`Cup`]: the latest emptiness stated (`seq`) and the latest answered
//! (`refilled_seq`, `refilled_by`); the cup is empty while `seq > refilled_seq`.
//!
//! The daughter picks the number from her own view: if her cup is still empty she is
//! *repeating herself* (the essay: "my daughter then repeats herself in the same
//! manner"), and says the same `seq` again; otherwise it is a new emptiness, `seq + 1`.
//! So a repeat is never mistaken for a new emptiness, and a parent who already refilled
//! it disregards the repeat. The daughter also remembers, in memory, what she said
//! last, because her table learns of her own statement a moment after she made it.
//!
//! ## The rule a parent follows
//!
//! On `myCupIsEmpty {cup, seq}` a parent looks at its own view of that cup:
//!
//! 1. a refill for `seq` or later is already there (Mummy's, or his own): the cup is no
//!    longer empty; **disregard** it, log it and count it;
//! 2. a later emptiness is there: this statement is superseded, and the later one will
//!    be handled in its turn (same key, same partition, in order); **disregard** it;
//! 3. otherwise wait `reaction_ms` (how quick this parent is), look again, and if still
//!    nobody answered, **refill**: emit `cupRefilled {cup, seq, by}`.
//!
//! Daddy's table is restored up to the end of the topic before he handles anything
//! (the toolkit's readiness), so after catch-up every refill Mummy made while he was
//! away is in his view, and he disregards every statement she answered: invariant 7.
//!
//! ## The race, honestly
//!
//! When two parents are both present and both see a fresh emptiness before either's
//! refill reaches the other's view, both refill it. Nothing here prevents that: there
//! is no lock, no leader, and no request between parents, which is the point of the
//! essay. The reaction delay (`reaction_ms`: Mummy 0, Daddy 300, Grandma 600 by
//! default) makes it unlikely (a slower parent looks again after the quicker one's
//! refill has usually reached his view), not impossible. When it happens the log shows
//! it: the second `cupRefilled` for one `seq` is counted in the cup's
//! `redundant_refills`, and the first one in the log is the one the view names. A demo
//! must not claim that a double refill cannot happen; it can say that the slower parent
//! usually finds the cup already full. (Making it impossible would take a claim step
//! that orders the parents through the log, at the cost of a round trip before every
//! refill.)
//!
//! ## Counts
//!
//! `GET /stats` on a parent counts what this process decided since it started: seen,
//! refilled, disregarded, and the most recent decisions with their reasons. They are
//! process memory, not facts, so a restarted process starts at zero (within one process
//! a restarted instance, as the test harness makes, keeps counting). Who refilled what
//! is a fact, in the `cup` topic, and shows in every view (`GET /cup`).
//!
//! ## Where this differs from the issue, and why
//!
//! - The issue does not say what happens when the daughter says it twice; the essay
//!   has her repeat herself. We follow the essay: a repeat is a statement about the same
//!   emptiness (the same `seq`), and the answer says `"repeat": true`.
//! - The essay names only `myCupIsEmpty` and says Daddy "notes that the cup is no longer
//!   empty", without saying how. The issue's `cupRefilled` is how: it is the fact in the
//!   log from which Daddy's own view learns it, with no question asked of Mummy.
//! - The essay says Daddy "can act upon it, and then disregard the event": we read that
//!   as acting on the current state, which means no refill, since Mummy already did it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runnel_services::http::ServiceApi;
use runnel_services::{
    Accepted, Command, CommandError, Emitter, Error, HandlerError, Meta, QueryInput, Service,
    ServiceHandle, State, Table, TableRef, Transport,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use crate::{Env, Running};

pub use events::{CupRefilled, MyCupIsEmpty};

/// The daughter: states that her cup is empty.
pub const DAUGHTER: &str = "daughter";
/// A parent who is sometimes busy chopping chicken.
pub const DADDY: &str = "daddy";
/// The other parent, usually the quickest.
pub const MUMMY: &str = "mummy";
/// Joins later, with the parents' code under her own name: extensibility.
pub const GRANDMA: &str = "grandma";
/// Every parent-like service, each its own consumer group.
pub const PARENTS: &[&str] = &[DADDY, MUMMY, GRANDMA];

/// The cup the daughter means when she names none.
pub const CUP_DEFAULT: &str = "cup";
/// Longest cup id: it is a partition key and a path segment, so keep it short.
pub const CUP_ID_BYTES_MAX: usize = 64;
/// Longest reaction delay: a handler that sleeps longer than the toolkit's handler
/// timeout (60 s) would be failed and retried, so stay well below it.
pub const REACTION_MS_MAX: u64 = 10_000;
/// Decisions `GET /stats` lists: enough to tell a story, bounded so memory is.
pub const DECISIONS_MAX: usize = 32;
/// Cups `GET /cups` lists at most: a family has few cups; the bound keeps the answer small.
pub const CUPS_LIST_MAX: usize = 100;

/// The family's facts. Both live on the `cup` topic, keyed by cup id, so every fact
/// about one cup is in one partition, in the order it happened.
pub mod events {
    use serde::{Deserialize, Serialize};

    /// The daughter's statement: "my cup is empty". A fact, not a request: it names
    /// nobody, and anyone who hears it decides what to do.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct MyCupIsEmpty {
        /// Which cup (the partition key).
        pub cup: String,
        /// Which emptiness of this cup, counting from 1; a repeat carries the same
        /// number, so nobody mistakes it for a new emptiness.
        pub seq: u64,
    }
    runnel_services::event!(MyCupIsEmpty, type = "myCupIsEmpty", topic = "cup", key = |e| e.cup.clone());

    /// A parent's statement: "I refilled the cup". It is how every other view learns
    /// that the cup is no longer empty.
    #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
    pub struct CupRefilled {
        /// Which cup (the partition key, the same as the statement it answers).
        pub cup: String,
        /// The emptiness it answers: the `seq` of the `myCupIsEmpty`.
        pub seq: u64,
        /// Who refilled it (the parent service's name), for the story and the views.
        pub by: String,
    }
    runnel_services::event!(CupRefilled, type = "cupRefilled", topic = "cup", key = |e| e.cup.clone());
}

// ---------------------------------------------------------------------------------------
// The cup, as every service sees it

/// Whether a cup is empty, as a view tells it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CupState {
    /// No emptiness is waiting for a refill (also: never emptied).
    #[default]
    Full,
    /// The latest emptiness has no refill yet.
    Empty,
}

/// One cup, folded from the `cup` topic. Every service keeps its own table of these:
/// the daughter's, Daddy's, Mummy's and Grandma's views agree once each has read the
/// same facts, and may briefly differ before that.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cup {
    /// Which cup.
    pub cup: String,
    /// Empty or full, derived from the two numbers below (stored so the JSON says it).
    pub state: CupState,
    /// The latest emptiness stated (0: never emptied).
    pub seq: u64,
    /// The latest emptiness answered by a refill (0: none yet).
    pub refilled_seq: u64,
    /// Who answered it: the first `cupRefilled` for it in the log.
    pub refilled_by: Option<String>,
    /// `myCupIsEmpty` statements read, repeats included.
    pub said_empty: u64,
    /// Refills read that answered an emptiness already answered: two parents acted at
    /// once (see the module docs on the race).
    pub redundant_refills: u64,
}

impl Cup {
    /// A cup nothing has been said about: full, never emptied.
    #[must_use]
    pub fn new(cup: &str) -> Cup {
        Cup {
            cup: cup.to_string(),
            ..Cup::default()
        }
    }

    /// Whether the latest emptiness waits for a refill.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seq > self.refilled_seq
    }

    /// Folds in a `myCupIsEmpty`.
    #[must_use]
    pub fn emptied(mut self, seq: u64) -> Cup {
        self.said_empty += 1;
        self.seq = self.seq.max(seq);
        self.settle()
    }

    /// Folds in a `cupRefilled`: the first refill of an emptiness answers it; any later
    /// one for the same (or an older) emptiness is redundant.
    #[must_use]
    pub fn refilled(mut self, seq: u64, by: &str) -> Cup {
        if seq > self.refilled_seq {
            self.refilled_seq = seq;
            self.refilled_by = Some(by.to_string());
            // A refill implies the emptiness, even if its statement was never read.
            self.seq = self.seq.max(seq);
        } else {
            self.redundant_refills += 1;
        }
        self.settle()
    }

    /// What the daughter says next about this cup: the same emptiness again while it is
    /// still empty (`repeat`), else a new one. `said` is the latest `seq` she stated
    /// that this view may not have read yet.
    #[must_use]
    pub fn next_statement(&self, said: u64) -> (u64, bool) {
        let latest = self.seq.max(said);
        if latest > self.refilled_seq {
            (latest, true)
        } else {
            (latest + 1, false)
        }
    }

    fn settle(mut self) -> Cup {
        self.state = if self.is_empty() {
            CupState::Empty
        } else {
            CupState::Full
        };
        debug_assert!(
            self.refilled_seq <= self.seq,
            "a refill answers a stated emptiness"
        );
        self
    }
}

/// The table every family service keeps: each cup's state, from the `cup` topic.
#[must_use]
pub fn cup_table() -> Table<Cup> {
    Table::named("cup")
        .fold::<MyCupIsEmpty>(|cup, e| Some(cup.unwrap_or_else(|| Cup::new(&e.cup)).emptied(e.seq)))
        .fold::<CupRefilled>(|cup, e| {
            Some(
                cup.unwrap_or_else(|| Cup::new(&e.cup))
                    .refilled(e.seq, &e.by),
            )
        })
}

/// Checks a cup id: it becomes a partition key and a URL path segment.
fn check_cup_id(cup: &str) -> Result<(), String> {
    if cup.is_empty() || cup.len() > CUP_ID_BYTES_MAX {
        return Err(format!(
            "a cup id has 1 to {CUP_ID_BYTES_MAX} characters; got {}",
            cup.len()
        ));
    }
    if let Some(c) = cup
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "a cup id uses letters, digits, '-', '_' and '.'; {cup:?} has {c:?}"
        ));
    }
    Ok(())
}

/// The queries every family service answers from its own view: `GET /cup` (the
/// default cup), `GET /cups/{id}` and `GET /cups`.
fn cup_queries(api: ServiceApi, view: &TableRef<Cup>) -> ServiceApi {
    let (one, all, default) = (view.clone(), view.clone(), view.clone());
    api.query("/cup", move |_q: QueryInput| {
        let view = default.clone();
        async move { cup_in(&view, CUP_DEFAULT) }
    })
    .query("/cups/{id}", move |q: QueryInput| {
        let view = one.clone();
        async move {
            let id = q.param("id")?;
            check_cup_id(id).map_err(CommandError::bad_request)?;
            cup_in(&view, id)
        }
    })
    .query("/cups", move |_q: QueryInput| {
        let view = all.clone();
        async move {
            let cups: Vec<Cup> = view
                .scan(None, CUPS_LIST_MAX)?
                .into_iter()
                .map(|(_, c)| c)
                .collect();
            Ok(json!({ "cups": cups }))
        }
    })
}

/// A cup from a view; one nothing was said about is full (never emptied).
fn cup_in(view: &TableRef<Cup>, id: &str) -> Result<Cup, CommandError> {
    Ok(view.get(id)?.unwrap_or_else(|| Cup::new(id)))
}

/// The cup table of a running instance; every family service declares one.
fn view_of(handle: &ServiceHandle) -> TableRef<Cup> {
    handle
        .table::<Cup>("cup")
        .expect("every family service declares the cup table")
}

// ---------------------------------------------------------------------------------------
// The daughter

/// `POST /cup/empty`: the daughter says her cup is empty. The body is JSON, `{}` for
/// the default cup or `{"cup": "id"}`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SayCupIsEmpty {
    /// Which cup; [`CUP_DEFAULT`] when absent. Unknown fields are refused, so a typo is
    /// a 400 rather than a statement about the wrong cup.
    #[serde(default = "default_cup")]
    pub cup: String,
}

fn default_cup() -> String {
    CUP_DEFAULT.to_string()
}

impl Command for SayCupIsEmpty {
    fn validate(&self) -> Result<(), String> {
        check_cup_id(&self.cup)
    }
}

/// The daughter's service: no handlers, only her view of the cups (so she knows
/// whether she is repeating herself, and so `GET /cup` answers from the facts).
#[must_use]
pub fn daughter_service() -> Service {
    Service::new(DAUGHTER)
        .table(cup_table())
        .emits::<MyCupIsEmpty>()
}

/// The daughter's HTTP API (health and metrics are added by [`Running::serve`]):
///
/// - `POST /cup/empty` `{"cup"?: id}` → 202 `{"id", "ids", "cup", "seq", "repeat"}`
///   once `myCupIsEmpty` is stored; 400/415/422 for bad input, and nothing is emitted;
/// - `GET /cup`, `GET /cups/{id}` → her view of a cup ([`Cup`] as JSON);
/// - `GET /cups` → `{"cups": [Cup, ..]}`.
///
/// # Panics
///
/// If `handle` is not an instance of [`daughter_service`] (it has no cup table).
#[must_use]
pub fn daughter_api(transport: Arc<dyn Transport>, handle: &ServiceHandle) -> ServiceApi {
    let view = view_of(handle);
    // What she said last per cup, which her table may not have read yet. Process
    // memory: after a restart her restored table already holds it.
    let said: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let statements = view.clone();
    let api = ServiceApi::new(transport, DAUGHTER).command::<SayCupIsEmpty, _, _>(
        "/cup/empty",
        move |cmd, out| {
            let (view, said) = (statements.clone(), said.clone());
            async move {
                let cup = view.get(&cmd.cup)?.unwrap_or_else(|| Cup::new(&cmd.cup));
                // One lock for the read and the update: two statements at once agree
                // on the number.
                let mut said = said.lock().unwrap_or_else(|p| p.into_inner());
                let last = said.get(&cmd.cup).copied().unwrap_or(0);
                let (seq, repeat) = cup.next_statement(last);
                out.emit(&MyCupIsEmpty {
                    cup: cmd.cup.clone(),
                    seq,
                });
                said.insert(cmd.cup.clone(), seq);
                info!(cup = %cmd.cup, seq, repeat, "my cup is empty");
                Ok(Accepted::with_body(
                    json!({ "cup": cmd.cup, "seq": seq, "repeat": repeat }),
                ))
            }
        },
    );
    cup_queries(api, &view)
}

// ---------------------------------------------------------------------------------------
// The parents

/// A parent: Daddy, Mummy or Grandma. One code, several names; the name is the
/// consumer group, so each parent hears every statement (fan-out).
#[derive(Clone, Debug)]
pub struct Parent {
    /// The service's name: its consumer group and the `by` of its refills.
    name: Arc<str>,
    /// How long this parent takes to react to a fresh emptiness before looking again
    /// and refilling: makes "who is quickest" a setting rather than luck.
    reaction: Duration,
    /// Counts and recent decisions, for `GET /stats`, and its own refills.
    memory: Arc<Mutex<Memory>>,
}

/// What a parent remembers in process memory.
#[derive(Debug, Default)]
struct Memory {
    stats: Stats,
    /// Per cup, the latest emptiness this parent refilled and the record (partition,
    /// offset) that made it: its own table reads its own refill only a moment later, and
    /// a repeat handled in between must not make it refill twice. The record lets a
    /// retry of that same statement (whose refill may not have been stored) refill again.
    mine: HashMap<String, (u64, (i32, i64))>,
}

/// What `GET /stats` on a parent answers: this process's decisions since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// The parent's name.
    pub parent: String,
    /// Its reaction delay.
    pub reaction_ms: u64,
    /// `myCupIsEmpty` statements decided on (refilled + disregarded).
    pub seen: u64,
    /// Statements it answered with a refill.
    pub refilled: u64,
    /// Statements it disregarded: the cup was already refilled, or a later emptiness
    /// was already stated.
    pub disregarded: u64,
    /// The latest decisions, oldest first (at most [`DECISIONS_MAX`]).
    pub recent: VecDeque<Decision>,
}

/// One decision a parent made about one statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The cup.
    pub cup: String,
    /// The emptiness stated.
    pub seq: u64,
    /// What it did.
    pub action: Action,
    /// Why, for people reading the story.
    pub why: String,
}

/// What a parent did about a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// It refilled the cup and said so.
    Refilled,
    /// It left the cup alone: no longer empty, or a later emptiness was stated.
    Disregarded,
}

/// A parent's judgement of a statement against its view.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    Refill,
    Disregard(String),
}

impl Parent {
    /// A parent named `name` who reacts after `reaction` (at most [`REACTION_MS_MAX`]).
    pub fn new(name: &str, reaction: Duration) -> Result<Parent, Error> {
        if name.is_empty() {
            return Err(Error::Config("a parent needs a name".into()));
        }
        if reaction > Duration::from_millis(REACTION_MS_MAX) {
            return Err(Error::Config(format!(
                "{name}: reaction_ms={} is above {REACTION_MS_MAX}",
                reaction.as_millis()
            )));
        }
        let stats = Stats {
            parent: name.to_string(),
            reaction_ms: u64::try_from(reaction.as_millis()).unwrap_or(REACTION_MS_MAX),
            ..Stats::default()
        };
        Ok(Parent {
            name: Arc::from(name),
            reaction,
            memory: Arc::new(Mutex::new(Memory {
                stats,
                mine: HashMap::new(),
            })),
        })
    }

    /// The parent's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counts and recent decisions.
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.memory().stats.clone()
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Judges `said` (read at `record`) against the view and its own refills.
    fn judge(
        &self,
        view: &TableRef<Cup>,
        said: &MyCupIsEmpty,
        record: (i32, i64),
    ) -> Result<Verdict, HandlerError> {
        if let Some((seq, by)) = self.memory().mine.get(&said.cup)
            && *seq >= said.seq
            && *by != record
        {
            return Ok(Verdict::Disregard(format!(
                "I already refilled it (emptiness {seq})"
            )));
        }
        let cup = view.get(&said.cup)?.unwrap_or_else(|| Cup::new(&said.cup));
        Ok(judge(&cup, said.seq))
    }

    fn decide(&self, said: &MyCupIsEmpty, action: Action, why: String, record: (i32, i64)) {
        let mut memory = self.memory();
        if action == Action::Refilled {
            // A retry of the same statement (its refill may not have been stored) refills
            // again under the same derived event id; count the decision once.
            let again = memory.mine.get(&said.cup) == Some(&(said.seq, record));
            memory.mine.insert(said.cup.clone(), (said.seq, record));
            if again {
                return;
            }
        }
        let stats = &mut memory.stats;
        stats.seen += 1;
        match action {
            Action::Refilled => stats.refilled += 1,
            Action::Disregarded => stats.disregarded += 1,
        }
        if stats.recent.len() == DECISIONS_MAX {
            stats.recent.pop_front();
        }
        stats.recent.push_back(Decision {
            cup: said.cup.clone(),
            seq: said.seq,
            action,
            why,
        });
    }
}

/// The rule of the module docs, on a view of the cup: disregard what is already
/// answered or superseded, refill the rest.
fn judge(cup: &Cup, seq: u64) -> Verdict {
    if cup.refilled_seq >= seq {
        let by = cup.refilled_by.as_deref().unwrap_or("someone");
        return Verdict::Disregard(format!(
            "the cup is no longer empty: {by} refilled it (emptiness {})",
            cup.refilled_seq
        ));
    }
    if cup.seq > seq {
        return Verdict::Disregard(format!(
            "superseded: the cup ran empty again since (emptiness {})",
            cup.seq
        ));
    }
    Verdict::Refill
}

/// `myCupIsEmpty`: refill, or disregard in the light of this parent's own view.
async fn hear_cup_is_empty(
    said: MyCupIsEmpty,
    meta: Meta,
    view: TableRef<Cup>,
    emit: Emitter,
    State(parent): State<Parent>,
) -> Result<(), HandlerError> {
    if said.seq == 0 {
        // Emptinesses count from 1: a 0 is a publisher's bug; dead-letter it.
        return Err(HandlerError::permanent(format!(
            "myCupIsEmpty for cup {:?} has seq 0; emptinesses count from 1",
            said.cup
        )));
    }
    let record = (meta.partition, meta.offset);
    let mut verdict = parent.judge(&view, &said, record)?;
    if verdict == Verdict::Refill && !parent.reaction.is_zero() {
        // Take a moment, then look again: a quicker parent may have answered meanwhile.
        tokio::time::sleep(parent.reaction).await;
        verdict = parent.judge(&view, &said, record)?;
    }
    match verdict {
        Verdict::Disregard(why) => {
            info!(
                parent = %parent.name, cup = %said.cup, seq = said.seq, %why,
                "disregarding myCupIsEmpty"
            );
            parent.decide(&said, Action::Disregarded, why, record);
        }
        Verdict::Refill => {
            emit.emit(&CupRefilled {
                cup: said.cup.clone(),
                seq: said.seq,
                by: parent.name.to_string(),
            });
            info!(parent = %parent.name, cup = %said.cup, seq = said.seq, "refilled the cup");
            let why = format!("the cup was empty (emptiness {}) in my view", said.seq);
            parent.decide(&said, Action::Refilled, why, record);
        }
    }
    Ok(())
}

/// A parent's service: its own view of the cups, and `myCupIsEmpty` handled by the rule
/// of the module docs. Daddy, Mummy and Grandma are this one function.
#[must_use]
pub fn parent_service(parent: &Parent) -> Service<Parent> {
    Service::with_state(parent.name(), parent.clone())
        .table(cup_table())
        .on::<MyCupIsEmpty, _>(hear_cup_is_empty)
        .emits::<CupRefilled>()
}

/// A parent's HTTP API (health and metrics are added by [`Running::serve`]):
///
/// - `GET /stats` → [`Stats`]: `{"parent", "reaction_ms", "seen", "refilled",
///   "disregarded", "recent": [{"cup", "seq", "action": "refilled"|"disregarded", "why"}]}`;
/// - `GET /cup`, `GET /cups/{id}`, `GET /cups` → the parent's own view of the cups.
///
/// # Panics
///
/// If `handle` is not an instance of [`parent_service`] (it has no cup table).
#[must_use]
pub fn parent_api(
    transport: Arc<dyn Transport>,
    handle: &ServiceHandle,
    parent: &Parent,
) -> ServiceApi {
    let view = view_of(handle);
    let p = parent.clone();
    let api = ServiceApi::new(transport, parent.name()).query("/stats", move |_q: QueryInput| {
        let stats = p.stats();
        async move { Ok(stats) }
    });
    cup_queries(api, &view)
}

/// The reaction delay a parent has unless `reaction_ms` says otherwise: Mummy is the
/// quickest, so with everyone home the story is the same each time (not guaranteed:
/// see the module docs on the race).
#[must_use]
pub fn reaction_ms_default(name: &str) -> u64 {
    match name {
        MUMMY => 0,
        DADDY => 300,
        _ => 600,
    }
}

// ---------------------------------------------------------------------------------------
// Starting

/// Starts the family service `name`: `daughter`, or a parent (`daddy`, `mummy`,
/// `grandma`) with the setting `reaction_ms` (see [`reaction_ms_default`]).
pub async fn start(name: &str, env: &Env) -> Result<Running, Error> {
    if name == DAUGHTER {
        let mut handle = env
            .runtime()
            .start(daughter_service(), &env.instance)
            .await?;
        handle.wait_ready().await?;
        let api = daughter_api(env.transport.clone(), &handle);
        return Running::serve(env, handle, api).await;
    }
    if !PARENTS.contains(&name) {
        return Err(Error::Config(format!(
            "no family service {name:?}; they are: {DAUGHTER}, {}",
            PARENTS.join(", ")
        )));
    }
    let reaction_ms = env.setting("reaction_ms", reaction_ms_default(name))?;
    let parent = Parent::new(name, Duration::from_millis(reaction_ms))?;
    let mut handle = env
        .runtime()
        .start(parent_service(&parent), &env.instance)
        .await?;
    handle.wait_ready().await?;
    let api = parent_api(env.transport.clone(), &handle, &parent);
    Running::serve(env, handle, api).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cup_is_empty_until_its_latest_emptiness_is_answered() {
        let cup = Cup::new("c").emptied(1);
        assert_eq!(cup.state, CupState::Empty);
        let cup = cup.refilled(1, "mummy");
        assert_eq!(cup.state, CupState::Full);
        assert_eq!(cup.refilled_by.as_deref(), Some("mummy"));
        let cup = cup.emptied(2);
        assert_eq!(
            (cup.state, cup.seq, cup.refilled_seq),
            (CupState::Empty, 2, 1)
        );
    }

    #[test]
    fn a_second_refill_of_one_emptiness_is_redundant_and_the_first_stays_named() {
        let cup = Cup::new("c")
            .emptied(1)
            .refilled(1, "mummy")
            .refilled(1, "daddy");
        assert_eq!(cup.refilled_by.as_deref(), Some("mummy"));
        assert_eq!(cup.redundant_refills, 1);
        assert_eq!(cup.state, CupState::Full);
    }

    #[test]
    fn the_daughter_repeats_herself_while_the_cup_is_empty() {
        let full = Cup::new("c");
        assert_eq!(full.next_statement(0), (1, false));
        // Her table has not read her own statement yet: what she said counts.
        assert_eq!(full.next_statement(1), (1, true));
        let empty = full.emptied(1);
        assert_eq!(empty.next_statement(1), (1, true));
        assert_eq!(empty.refilled(1, "mummy").next_statement(1), (2, false));
    }

    #[test]
    fn a_parent_disregards_answered_and_superseded_statements_and_refills_the_rest() {
        let answered = Cup::new("c").emptied(1).refilled(1, "mummy");
        assert!(matches!(judge(&answered, 1), Verdict::Disregard(why) if why.contains("mummy")));
        let again = answered.emptied(2);
        assert!(matches!(judge(&again, 1), Verdict::Disregard(_)));
        assert_eq!(judge(&again, 2), Verdict::Refill);
        // A view that has not read the statement yet still refills it.
        assert_eq!(judge(&Cup::new("c"), 1), Verdict::Refill);
    }

    #[test]
    fn cup_ids_are_short_plain_names() {
        assert!(check_cup_id("cup").is_ok());
        assert!(check_cup_id("kitchen.cup-2_b").is_ok());
        assert!(check_cup_id("").is_err());
        assert!(check_cup_id("a/b").is_err());
        assert!(check_cup_id(&"x".repeat(CUP_ID_BYTES_MAX + 1)).is_err());
    }
}
