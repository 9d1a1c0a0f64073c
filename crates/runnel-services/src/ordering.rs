//! Per-partition ordering and the commit point: the heart of at-least-once delivery.
//!
//! A partition's records are handled concurrently *across* keys and strictly in offset
//! order *within* a key. [`PartitionTracker`] decides which record may start next and
//! how far the partition's offset may be committed. It is a plain data structure: no
//! tokio, no clock; the runtime calls it from one task per partition.
//!
//! The rules, for one partition:
//!
//! - **Per-key order.** A record may start only when every earlier record with the same
//!   key is done. A record waiting for a retry or parked still holds its key, so later
//!   records of that key wait behind it while other keys go on.
//!   Keys are told apart by a 64-bit hash: two keys whose hashes collide are ordered as
//!   one key (never less order, only less concurrency).
//! - **Records without a key** are ordered among themselves as if they shared one key.
//!   Kafka gives them no order to keep, but a producer that sends unkeyed records one by
//!   one usually means them in that order, and running them one at a time is the safe
//!   reading.
//! - **The commit point** is one past the highest offset below which every tracked record
//!   is done (handled or dead-lettered). Committing it can never skip an unfinished
//!   record, so after a crash every unfinished record is fetched again: at least once.
//!
//! Lifecycle of a record: [`push`](PartitionTracker::push) (fetched) →
//! [`next_runnable`](PartitionTracker::next_runnable) (started) → either
//! [`done`](PartitionTracker::done), or [`release`](PartitionTracker::release) after a
//! retry or park wait, which makes it runnable again.
//!
//! **Bounds.** The tracker holds every record from the oldest unfinished one to the last
//! pushed, and does not limit that itself: the caller stops fetching while
//! [`tracked`](PartitionTracker::tracked) is at its limit (one long-parked record holds
//! back the commit point, and everything fetched after it stays tracked), and limits
//! concurrency by not calling `next_runnable` while [`in_flight`](PartitionTracker::in_flight)
//! is at its limit.
//!
//! Misuse (pushing offsets out of order, finishing a record that was not started) is a
//! bug in the runtime, not an input error, and panics.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::hash::Hasher;

use bytes::Bytes;

use crate::fxhash::{FxHashMap, FxHasher};

/// Empty key queues kept for reuse, at most: a key that comes and goes costs no
/// allocation.
const SPARE_QUEUES_MAX: usize = 1_024;

/// Where a tracked record is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Fetched, not yet handed to a handler (or released after a wait).
    Waiting,
    /// Handed to a handler, or waiting for a retry or a park to end.
    Started,
    /// Handled or given up on; kept only until every record before it is done too.
    Done,
}

/// One tracked record.
#[derive(Debug)]
struct Record {
    /// Where the record is in its life.
    state: State,
    /// Its key's hash, to find its queue in `keys`.
    key: u64,
}

/// A key's identity in the tracker: a 64-bit hash, with "no key" apart from every key.
fn key_hash(key: Option<&[u8]>) -> u64 {
    let Some(key) = key else {
        return 0;
    };
    let mut h = FxHasher::default();
    h.write_usize(key.len());
    h.write(key);
    // Fx mixes poorly in the low bits; spread the high ones down (murmur3's finalizer),
    // and keep 0 for "no key".
    let mut x = h.finish();
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x.max(1)
}

/// The unfinished records of one key, in offset order; never empty. Most keys have one
/// at a time, held without an allocation.
#[derive(Debug)]
enum KeyQueue {
    One(i64),
    Many(VecDeque<i64>),
}

/// The ordering and commit state of one partition.
#[derive(Debug, Default)]
pub struct PartitionTracker {
    /// Every record from the oldest unfinished one up to the last pushed, in offset order
    /// (offsets grow from push to push, so this is sorted; see [`Self::index`]). A
    /// prefix of done records is dropped as soon as it forms, moving `commit_point`.
    records: VecDeque<(i64, Record)>,
    /// For each key with unfinished records, their offsets in order; the front is the only
    /// one that may be started. Keys leave the map when their last record is done, so it
    /// holds at most as many keys as there are unfinished records.
    ///
    /// Keys are known by a 64-bit hash ([`key_hash`]), so the tracker keeps no copy of
    /// them. Two keys with the same hash share a queue: they are then handled one at a
    /// time, in offset order, like one key; order is never broken, only concurrency lost,
    /// and for that the hashes of two of a partition's pending keys must collide.
    keys: FxHashMap<u64, KeyQueue>,
    /// Emptied key queues, reused for new keys.
    spare: Vec<VecDeque<i64>>,
    /// Records that may start now: waiting, and first unfinished of their key (a min-heap
    /// of offsets; an offset is in it at most once, as only a waiting record is).
    runnable: BinaryHeap<Reverse<i64>>,
    /// One past the last record of the done prefix: the offset that may be committed.
    commit_point: Option<i64>,
    /// The last offset passed to `mark_committed`.
    committed: Option<i64>,
    /// The last offset pushed, to assert that offsets grow.
    last_pushed: Option<i64>,
    /// Records started and not done.
    in_flight: usize,
    /// Records pushed and not done.
    pending: usize,
}

impl PartitionTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a fetched record. Offsets must grow from push to push; gaps (compacted
    /// records, transaction markers) are fine.
    ///
    /// # Panics
    ///
    /// If `offset` is not above the last pushed offset.
    pub fn push(&mut self, offset: i64, key: Option<Vec<u8>>) {
        self.push_bytes(offset, key.map(Bytes::from));
    }

    /// [`push`](Self::push) with the key as the record's own `Bytes` (no copy).
    ///
    /// # Panics
    ///
    /// If `offset` is not above the last pushed offset.
    pub fn push_bytes(&mut self, offset: i64, key: Option<Bytes>) {
        self.push_key(offset, key.as_deref());
    }

    /// [`push`](Self::push) with the key borrowed: the tracker keeps only its hash.
    ///
    /// # Panics
    ///
    /// If `offset` is not above the last pushed offset.
    pub fn push_key(&mut self, offset: i64, key: Option<&[u8]>) {
        let key = key_hash(key);
        if let Some(last) = self.last_pushed {
            assert!(offset > last, "offset {offset} pushed after {last}");
        }
        self.last_pushed = Some(offset);
        match self.keys.entry(key) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(KeyQueue::One(offset));
                self.runnable.push(Reverse(offset));
            }
            std::collections::hash_map::Entry::Occupied(mut o) => match o.get_mut() {
                KeyQueue::Many(q) => q.push_back(offset),
                KeyQueue::One(first) => {
                    let mut q = self.spare.pop().unwrap_or_default();
                    q.push_back(*first);
                    q.push_back(offset);
                    o.insert(KeyQueue::Many(q));
                }
            },
        }
        self.records.push_back((
            offset,
            Record {
                state: State::Waiting,
                key,
            },
        ));
        self.pending += 1;
    }

    /// Starts and returns the lowest-offset record that may run now: not started, and no
    /// earlier record of its key unfinished. `None` if every unfinished record is started
    /// or waits behind its key.
    pub fn next_runnable(&mut self) -> Option<i64> {
        let Reverse(offset) = self.runnable.pop()?;
        let record = self.record_mut(offset);
        assert_eq!(
            record.state,
            State::Waiting,
            "runnable record {offset} not waiting"
        );
        record.state = State::Started;
        self.in_flight += 1;
        Some(offset)
    }

    /// Marks a started record finished: handled, dead-lettered or skipped. The next record
    /// of its key becomes runnable, and the commit point moves if this closes a gap.
    ///
    /// # Panics
    ///
    /// If the record is not tracked or not started.
    pub fn done(&mut self, offset: i64) {
        let record = self.record_mut(offset);
        assert_eq!(
            record.state,
            State::Started,
            "done({offset}) on a record not started"
        );
        record.state = State::Done;
        let key = record.key;
        self.in_flight -= 1;
        self.pending -= 1;

        let Some(queue) = self.keys.get_mut(&key) else {
            panic!("record {offset} has no key queue");
        };
        let first = match queue {
            KeyQueue::One(first) => *first,
            KeyQueue::Many(q) => q.pop_front().expect("key queues are never empty"),
        };
        assert_eq!(first, offset, "record {offset} finished out of key order");
        match queue {
            KeyQueue::Many(q) if !q.is_empty() => self.runnable.push(Reverse(q[0])),
            _ => {
                if let Some(KeyQueue::Many(q)) = self.keys.remove(&key)
                    && self.spare.len() < SPARE_QUEUES_MAX
                {
                    self.spare.push(q);
                }
            }
        }
        self.drop_done_prefix();
    }

    /// Puts a started record back, so that `next_runnable` hands it out again: used when
    /// its retry or park wait is over. Its key stays held meanwhile, since the record is
    /// still the first unfinished one of its key.
    ///
    /// # Panics
    ///
    /// If the record is not tracked or not started.
    pub fn release(&mut self, offset: i64) {
        let record = self.record_mut(offset);
        assert_eq!(
            record.state,
            State::Started,
            "release({offset}) on a record not started"
        );
        record.state = State::Waiting;
        self.in_flight -= 1;
        self.runnable.push(Reverse(offset));
    }

    /// The offset to commit next: one past the highest offset at or below which every
    /// tracked record is done. `None` if that has not moved since the last
    /// [`mark_committed`](Self::mark_committed).
    ///
    /// After everything pushed is done this is the last pushed offset + 1. Records the
    /// fetch skipped after it (trailing transaction markers) are not known here; they are
    /// re-read after a restart, which is harmless.
    pub fn committable(&self) -> Option<i64> {
        let point = self.commit_point?;
        match self.committed {
            Some(committed) if committed >= point => None,
            _ => Some(point),
        }
    }

    /// Notes that `offset` was committed, so `committable` answers `None` until the commit
    /// point passes it. Done records below the commit point are already dropped.
    pub fn mark_committed(&mut self, offset: i64) {
        self.committed = Some(self.committed.map_or(offset, |c| c.max(offset)));
    }

    /// The last offset passed to [`mark_committed`](Self::mark_committed), if any: where a
    /// restart would resume, for lag.
    pub fn committed(&self) -> Option<i64> {
        self.committed
    }

    /// Records started and not done: running, or waiting for a retry or park.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records pushed and not done.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Records held in memory: every record from the oldest unfinished one to the last
    /// pushed, done or not. This is what the caller bounds by pausing fetches.
    pub fn tracked(&self) -> usize {
        self.records.len()
    }

    /// Whether every pushed record is done.
    pub fn is_idle(&self) -> bool {
        self.pending == 0
    }

    /// The tracked record at `offset`.
    fn record_mut(&mut self, offset: i64) -> &mut Record {
        match self.index(offset) {
            Some(i) => &mut self.records[i].1,
            None => panic!("record {offset} is not tracked"),
        }
    }

    /// Where `offset` is in `records`: without gaps in the offsets (the usual case) at
    /// its distance from the first, else found by binary search.
    fn index(&self, offset: i64) -> Option<usize> {
        let first = self.records.front()?.0;
        let guess = usize::try_from(offset.checked_sub(first)?).ok()?;
        if self.records.get(guess).is_some_and(|(o, _)| *o == offset) {
            return Some(guess);
        }
        self.records.binary_search_by_key(&offset, |(o, _)| *o).ok()
    }

    /// Drops done records from the front, moving the commit point past them.
    fn drop_done_prefix(&mut self) {
        while let Some((offset, first)) = self.records.front() {
            if first.state != State::Done {
                break;
            }
            self.commit_point = Some(offset + 1);
            self.records.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(k: &str) -> Option<Vec<u8>> {
        Some(k.as_bytes().to_vec())
    }

    #[test]
    fn different_keys_run_concurrently_same_key_waits() {
        let mut t = PartitionTracker::new();
        t.push(0, key("a"));
        t.push(1, key("a"));
        t.push(2, key("b"));
        assert_eq!(t.next_runnable(), Some(0));
        assert_eq!(t.next_runnable(), Some(2), "b does not wait for a");
        assert_eq!(t.next_runnable(), None, "1 waits behind 0");
        assert_eq!(t.in_flight(), 2);
        t.done(0);
        assert_eq!(t.next_runnable(), Some(1));
    }

    #[test]
    fn records_without_a_key_are_ordered_like_one_key() {
        let mut t = PartitionTracker::new();
        t.push(0, None);
        t.push(1, None);
        t.push(2, key("x"));
        assert_eq!(t.next_runnable(), Some(0));
        assert_eq!(t.next_runnable(), Some(2));
        assert_eq!(t.next_runnable(), None);
        t.done(0);
        assert_eq!(t.next_runnable(), Some(1));
    }

    #[test]
    fn commit_point_waits_for_the_oldest_unfinished_record() {
        let mut t = PartitionTracker::new();
        for (offset, k) in [(10, "a"), (11, "b"), (12, "c")] {
            t.push(offset, key(k));
        }
        for _ in 0..3 {
            t.next_runnable();
        }
        t.done(11);
        t.done(12);
        assert_eq!(t.committable(), None, "10 is unfinished");
        assert_eq!(t.tracked(), 3);
        t.done(10);
        assert_eq!(t.committable(), Some(13));
        assert_eq!(t.tracked(), 0);
        assert!(t.is_idle());
    }

    #[test]
    fn committable_answers_none_until_it_moves_past_the_last_commit() {
        let mut t = PartitionTracker::new();
        assert_eq!(t.committable(), None, "nothing yet");
        assert_eq!(t.committed(), None);
        t.push(0, key("a"));
        t.push(1, key("a"));
        t.next_runnable();
        t.done(0);
        assert_eq!(t.committable(), Some(1));
        t.mark_committed(1);
        assert_eq!(t.committable(), None);
        t.next_runnable();
        t.done(1);
        assert_eq!(t.committable(), Some(2));
        t.mark_committed(2);
        t.mark_committed(1);
        assert_eq!(
            t.committable(),
            None,
            "an older commit does not move it back"
        );
        assert_eq!(t.committed(), Some(2));
    }

    #[test]
    fn gaps_in_offsets_commit_past_the_last_record() {
        let mut t = PartitionTracker::new();
        t.push(5, key("a"));
        t.push(9, key("b"));
        t.next_runnable();
        t.next_runnable();
        t.done(5);
        assert_eq!(t.committable(), Some(6));
        t.done(9);
        assert_eq!(t.committable(), Some(10));
    }

    #[test]
    fn a_parked_record_holds_its_key_but_not_others() {
        let mut t = PartitionTracker::new();
        t.push(0, key("customer-7"));
        t.push(1, key("customer-7"));
        t.push(2, key("customer-8"));
        assert_eq!(t.next_runnable(), Some(0));
        // The handler says "not yet": the record stays started while it is parked.
        assert_eq!(t.next_runnable(), Some(2));
        t.done(2);
        assert_eq!(t.next_runnable(), None);
        assert_eq!(t.pending(), 2);
        assert_eq!(t.committable(), None, "0 is parked");
        // The park is over.
        t.release(0);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.next_runnable(), Some(0));
        t.done(0);
        assert_eq!(t.committable(), Some(1));
        assert_eq!(t.next_runnable(), Some(1));
        t.done(1);
        assert_eq!(t.committable(), Some(3));
    }

    #[test]
    fn a_released_record_goes_before_later_records() {
        let mut t = PartitionTracker::new();
        t.push(0, key("a"));
        t.push(1, key("b"));
        assert_eq!(t.next_runnable(), Some(0));
        t.release(0);
        assert_eq!(t.next_runnable(), Some(0));
    }

    #[test]
    fn counts_follow_the_lifecycle() {
        let mut t = PartitionTracker::new();
        assert!(t.is_idle());
        t.push(0, key("a"));
        t.push(1, key("b"));
        assert_eq!((t.pending(), t.in_flight(), t.tracked()), (2, 0, 2));
        t.next_runnable();
        assert_eq!((t.pending(), t.in_flight(), t.tracked()), (2, 1, 2));
        t.done(0);
        assert_eq!((t.pending(), t.in_flight(), t.tracked()), (1, 0, 1));
        assert!(!t.is_idle());
    }

    #[test]
    fn finished_keys_leave_the_key_map() {
        let mut t = PartitionTracker::new();
        for offset in 0..100 {
            t.push(offset, key(&offset.to_string()));
        }
        while let Some(offset) = t.next_runnable() {
            t.done(offset);
        }
        assert!(t.keys.is_empty());
        assert!(t.records.is_empty());
        assert_eq!(t.committable(), Some(100));
    }

    #[test]
    #[should_panic(expected = "pushed after")]
    fn pushing_an_older_offset_is_a_bug() {
        let mut t = PartitionTracker::new();
        t.push(3, None);
        t.push(3, None);
    }

    #[test]
    #[should_panic(expected = "not started")]
    fn finishing_a_record_that_did_not_start_is_a_bug() {
        let mut t = PartitionTracker::new();
        t.push(0, None);
        t.done(0);
    }

    #[test]
    #[should_panic(expected = "not tracked")]
    fn finishing_an_unknown_record_is_a_bug() {
        PartitionTracker::new().done(7);
    }

    #[test]
    #[should_panic(expected = "not started")]
    fn releasing_a_waiting_record_is_a_bug() {
        let mut t = PartitionTracker::new();
        t.push(0, None);
        t.release(0);
    }

    /// One step of the model test.
    #[derive(Debug, Clone)]
    enum Op {
        /// Push the next offset (after a gap of `gap`) with key `key` (None = no key).
        Push { key: Option<u8>, gap: u8 },
        /// Call `next_runnable`.
        Start,
        /// Finish the `n`-th in-flight record (modulo their number).
        Done(usize),
        /// Release the `n`-th in-flight record.
        Release(usize),
        /// Commit whatever is committable.
        Commit,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (proptest::option::weighted(0.8, 0u8..4), 0u8..3)
                .prop_map(|(key, gap)| Op::Push { key, gap }),
            3 => Just(Op::Start),
            2 => any::<usize>().prop_map(Op::Done),
            1 => any::<usize>().prop_map(Op::Release),
            1 => Just(Op::Commit),
        ]
    }

    /// The obvious, slow model: a list of records with their state.
    #[derive(Default)]
    struct Model {
        /// (offset, key, state) in offset order, never dropped.
        records: Vec<(i64, Option<u8>, State)>,
        /// The last committed offset.
        committed: Option<i64>,
    }

    impl Model {
        fn expected_next(&self) -> Option<i64> {
            self.records
                .iter()
                .enumerate()
                .find_map(|(i, &(offset, key, state))| {
                    let blocked = self.records[..i]
                        .iter()
                        .any(|&(_, k, s)| k == key && s != State::Done);
                    (state == State::Waiting && !blocked).then_some(offset)
                })
        }

        fn set(&mut self, offset: i64, state: State) {
            let record = self.records.iter_mut().find(|r| r.0 == offset).unwrap();
            record.2 = state;
        }

        fn in_flight(&self) -> Vec<i64> {
            let started = self.records.iter().filter(|r| r.2 == State::Started);
            started.map(|r| r.0).collect()
        }

        fn first_unfinished(&self) -> Option<i64> {
            self.records
                .iter()
                .find(|r| r.2 != State::Done)
                .map(|r| r.0)
        }
    }

    fn bytes_key(key: Option<u8>) -> Option<Vec<u8>> {
        key.map(|k| vec![k])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn tracker_matches_the_model(ops in proptest::collection::vec(op(), 0..200)) {
            let mut t = PartitionTracker::new();
            let mut m = Model::default();
            let mut next_offset = 0i64;
            for op in ops {
                match op {
                    Op::Push { key, gap } => {
                        next_offset += i64::from(gap);
                        t.push(next_offset, bytes_key(key));
                        m.records.push((next_offset, key, State::Waiting));
                        next_offset += 1;
                    }
                    Op::Start => {
                        let started = t.next_runnable();
                        prop_assert_eq!(started, m.expected_next());
                        if let Some(offset) = started {
                            let key = m.records.iter().find(|r| r.0 == offset).unwrap().1;
                            // No other record of this key is started, and all earlier ones are done.
                            for &(o, k, s) in &m.records {
                                if k == key && o < offset {
                                    prop_assert_eq!(s, State::Done);
                                }
                                if k == key && o != offset {
                                    prop_assert_ne!(s, State::Started);
                                }
                            }
                            m.set(offset, State::Started);
                        }
                    }
                    Op::Done(n) | Op::Release(n) => {
                        let in_flight = m.in_flight();
                        if in_flight.is_empty() {
                            continue;
                        }
                        let offset = in_flight[n % in_flight.len()];
                        if matches!(op, Op::Done(_)) {
                            t.done(offset);
                            m.set(offset, State::Done);
                        } else {
                            t.release(offset);
                            m.set(offset, State::Waiting);
                        }
                    }
                    Op::Commit => {
                        if let Some(offset) = t.committable() {
                            t.mark_committed(offset);
                            m.committed = Some(offset);
                        }
                    }
                }
                // The commit point never passes an unfinished record, and never goes back.
                if let Some(point) = t.committable() {
                    if let Some(first) = m.first_unfinished() {
                        prop_assert!(point <= first, "commit point {point} passes unfinished {first}");
                    }
                    prop_assert!(m.committed.is_none_or(|c| point > c));
                    let done_below = m.records.iter().filter(|r| r.0 < point).all(|r| r.2 == State::Done);
                    prop_assert!(done_below);
                }
                prop_assert_eq!(t.in_flight(), m.in_flight().len());
                prop_assert_eq!(t.pending(), m.records.iter().filter(|r| r.2 != State::Done).count());
                prop_assert_eq!(t.is_idle(), t.pending() == 0);
            }

            // Drain: finish everything, in whatever order the tracker allows.
            for offset in m.in_flight() {
                t.done(offset);
                m.set(offset, State::Done);
            }
            while let Some(offset) = t.next_runnable() {
                t.done(offset);
                m.set(offset, State::Done);
            }
            prop_assert!(t.is_idle());
            prop_assert_eq!(t.tracked(), 0);
            let last = m.records.last().map(|r| r.0);
            match (last, m.committed) {
                (Some(last), Some(c)) if c == last + 1 => prop_assert_eq!(t.committable(), None),
                (Some(last), _) => prop_assert_eq!(t.committable(), Some(last + 1)),
                (None, _) => prop_assert_eq!(t.committable(), None),
            }
        }
    }
}
