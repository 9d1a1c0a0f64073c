//! Idempotent producer state for one partition: Kafka's `ProducerStateEntry` and
//! `ProducerAppendInfo.checkSequence`, as a sans-IO state machine.
//!
//! For every producer id the partition remembers the epoch and, for the last
//! [`BATCHES_REMEMBERED`] batches, their sequence ranges and offsets. The caller asks
//! [`PartitionProducers::check`] what to do with a batch, appends it if told to, and
//! reports the offsets it got with [`PartitionProducers::record`]. Both must happen inside
//! the critical section that assigns offsets, or a retry could slip in between.
//!
//! ## Boundaries
//!
//! Std only: no I/O, no clock, no Kafka wire types. The caller passes the time in
//! (`now_ms`) and turns [`SequenceError::kafka_code`] into a response.
//!
//! ## Deliberately absent
//!
//! - Persistence. The caller rebuilds the state on start-up by feeding the log's batch
//!   headers to [`PartitionProducers::record`]; every field it needs is in the header.
//! - Transactions: no coordinator epoch, no open-transaction offsets, no control batches.
//!
//! ## Limits
//!
//! At most [`PRODUCERS_PER_PARTITION_MAX`] producers and [`BATCHES_REMEMBERED`] batches
//! each. A producer idle for `producer.id.expiration.ms`
//! ([`PRODUCER_ID_EXPIRATION_MS_DEFAULT`]) is forgotten by the next
//! [`PartitionProducers::record`] (least recently active first, so each record does
//! work only for producers it forgets), or when the caller runs
//! [`PartitionProducers::expire`]. Kafka removes them on a timer
//! (`producer.id.expiration.check.interval.ms`); here a partition nobody appends to
//! keeps its last producers until the next append, which bounds nothing less: its state
//! cannot grow without appends.

use std::collections::{BTreeMap, HashMap, VecDeque};

/// Batches remembered per producer for duplicate detection. Kafka's
/// `ProducerStateEntry.NUM_BATCHES_TO_RETAIN` is also 5: idempotent clients keep at most 5
/// requests in flight per partition, so a retry is always of one of the last 5 batches.
pub const BATCHES_REMEMBERED: usize = 5;

/// Producers remembered per partition; beyond it the least recently used one is
/// forgotten.
///
/// Kafka bounds producer state only by time (`producer.id.expiration.ms`, a day), so a
/// workload that starts a new idempotent producer per run (kafka-python 3 and the Java
/// client are idempotent by default) grows it for a day. At about 200 bytes a producer
/// (5 remembered batches plus map overhead) this caps a partition near 2 MB. The number
/// is far above the producers that write to one partition concurrently, so only churn is
/// evicted. An evicted producer that comes back with a sequence other than 0 gets
/// UNKNOWN_PRODUCER_ID and resets, exactly as after expiry; only a retry of a batch it had
/// already written then risks a duplicate. Redpanda bounds its producer table likewise.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

/// Kafka's `producer.id.expiration.ms` default: a producer silent for a day is forgotten.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 86_400_000;

const _: () = assert!(BATCHES_REMEMBERED > 0);
// Eviction must never remove the producer that was just recorded.
const _: () = assert!(PRODUCERS_PER_PARTITION_MAX > 0);
const _: () = assert!(PRODUCER_ID_EXPIRATION_MS_DEFAULT > 0);

/// Sequence numbers live in `0..=i32::MAX` and wrap from `i32::MAX` to 0.
const SEQUENCE_MODULUS: i64 = i32::MAX as i64 + 1;

/// The idempotence fields of one batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSequence {
    /// The producer id from InitProducerId; negative (-1) for a producer without
    /// idempotence, whose batches are never checked.
    pub producer_id: i64,
    /// The producer epoch; a higher one fences the producer's older instances.
    pub producer_epoch: i16,
    /// The sequence number of the batch's first record.
    pub base_sequence: i32,
    /// Records in the batch (the header's `lastOffsetDelta + 1`); gives the last sequence.
    pub record_count: i32,
}

impl BatchSequence {
    /// The sequence number of the batch's last record. Sequences wrap past `i32::MAX` to
    /// 0, as in Kafka's `DefaultRecordBatch.incrementSequence`.
    ///
    /// Meaningful only for a batch with `base_sequence >= 0` and `record_count >= 1`,
    /// which [`PartitionProducers::check`] requires of idempotent batches.
    #[must_use]
    pub fn last_sequence(&self) -> i32 {
        let last = i64::from(self.base_sequence) + i64::from(self.record_count) - 1;
        // In range by construction of the modulus, so the cast cannot truncate.
        last.rem_euclid(SEQUENCE_MODULUS) as i32
    }

    fn is_idempotent(&self) -> bool {
        self.producer_id >= 0
    }

    /// Kafka's `ProduceRequest` validation refuses these as INVALID_RECORD before the
    /// sequence check; repeating it here keeps `last_sequence` meaningful.
    fn has_valid_range(&self) -> bool {
        self.base_sequence >= 0 && self.record_count >= 1
    }
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it, then call [`PartitionProducers::record`] with the offsets it got.
    Append,
    /// Already appended: answer with the original offsets and append nothing.
    Duplicate {
        /// The first offset the batch got when it was appended.
        base_offset: u64,
        /// The last offset the batch got when it was appended.
        last_offset: u64,
    },
    /// Refuse it with this error.
    Reject(SequenceError),
}

/// Why an idempotent batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch does not continue the producer's sequence: a gap, or an old batch no
    /// longer remembered.
    #[error("out of order sequence number: expected {expected}, got {got}")]
    OutOfOrderSequence {
        /// The base sequence that would have been accepted.
        expected: i32,
        /// The batch's base sequence.
        got: i32,
    },
    /// The batch comes from an older instance of the producer, fenced by a newer epoch.
    #[error("producer epoch {got} is older than the current epoch {current}")]
    InvalidProducerEpoch {
        /// The epoch the partition last saw from this producer.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
    /// The partition has no state for this producer (never seen, expired or evicted) and
    /// the batch does not start a sequence at 0.
    #[error("unknown producer id {producer_id}")]
    UnknownProducerId {
        /// The batch's producer id.
        producer_id: i64,
    },
    /// An idempotent batch without a sequence range: a negative base sequence, or no
    /// records.
    #[error("idempotent batch without a valid sequence range")]
    InvalidSequence,
}

impl SequenceError {
    /// The Kafka error code to answer with.
    #[must_use]
    pub fn kafka_code(&self) -> i16 {
        match self {
            // OUT_OF_ORDER_SEQUENCE_NUMBER
            Self::OutOfOrderSequence { .. } => 45,
            // INVALID_PRODUCER_EPOCH: Kafka >= 2.7 answers Produce with it rather than
            // PRODUCER_FENCED (90), which clients treat as fatal.
            Self::InvalidProducerEpoch { .. } => 47,
            // UNKNOWN_PRODUCER_ID
            Self::UnknownProducerId { .. } => 59,
            // INVALID_RECORD, as Kafka's `ProduceRequest.validateRecords` answers for an
            // idempotent batch without a base sequence.
            Self::InvalidSequence => 87,
        }
    }
}

/// One remembered batch: Kafka's `BatchMetadata`.
#[derive(Debug, Clone, Copy)]
struct BatchMetadata {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
    last_offset: u64,
}

/// One producer's state: Kafka's `ProducerStateEntry`.
#[derive(Debug)]
struct ProducerEntry {
    /// The latest epoch seen; lower epochs are fenced.
    epoch: i16,
    /// This epoch's last batches, oldest first. Never empty: an entry exists only once a
    /// batch has been recorded, and a new epoch replaces the batches with its first one.
    batches: VecDeque<BatchMetadata>,
    /// When the producer last appended, for expiry.
    last_append_ms: i64,
    /// Its key in `PartitionProducers::by_recency`.
    recency: u64,
}

impl ProducerEntry {
    fn check(&self, batch: &BatchSequence) -> SequenceCheck {
        if batch.producer_epoch < self.epoch {
            return SequenceCheck::Reject(SequenceError::InvalidProducerEpoch {
                current: self.epoch,
                got: batch.producer_epoch,
            });
        }
        // A new epoch (KIP-360 bump, or a new InitProducerId for the same id) restarts
        // the sequence; Kafka's `checkSequence` requires 0.
        if batch.producer_epoch > self.epoch {
            return expect_base_sequence(0, batch);
        }
        if let Some(original) = self.duplicate_of(batch) {
            return SequenceCheck::Duplicate {
                base_offset: original.base_offset,
                last_offset: original.last_offset,
            };
        }
        expect_base_sequence(self.next_sequence(), batch)
    }

    /// Kafka's `batchWithSequenceRange`: the whole range must match, not just the start,
    /// so a batch split differently on retry is not mistaken for the original.
    fn duplicate_of(&self, batch: &BatchSequence) -> Option<&BatchMetadata> {
        let last_sequence = batch.last_sequence();
        self.batches
            .iter()
            .find(|b| b.first_sequence == batch.base_sequence && b.last_sequence == last_sequence)
    }

    fn next_sequence(&self) -> i32 {
        let last = self.batches.back().expect("an entry always holds a batch");
        next_sequence_after(last.last_sequence)
    }

    /// Kafka's `ProducerStateEntry.addBatch`: a different epoch replaces the remembered
    /// batches, and the oldest batch makes room for the newest.
    fn push(&mut self, epoch: i16, batch: BatchMetadata) {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.batches.clear();
        }
        if self.batches.len() == BATCHES_REMEMBERED {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        assert!(self.batches.len() <= BATCHES_REMEMBERED);
    }

    /// Kafka's `isProducerExpired` uses `>=`.
    fn is_expired(&self, now_ms: i64, expiration_ms: i64) -> bool {
        now_ms.saturating_sub(self.last_append_ms) >= expiration_ms
    }
}

fn next_sequence_after(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

fn expect_base_sequence(expected: i32, batch: &BatchSequence) -> SequenceCheck {
    if batch.base_sequence == expected {
        SequenceCheck::Append
    } else {
        SequenceCheck::Reject(SequenceError::OutOfOrderSequence {
            expected,
            got: batch.base_sequence,
        })
    }
}

/// A producer with no state may only start a sequence. Current Kafka accepts any
/// sequence here; Kafka before KIP-360 answered UNKNOWN_PRODUCER_ID, which librdkafka and
/// the Java client recover from by resetting their sequence. Accepting instead would turn
/// a retry from a forgotten producer into a silent duplicate.
fn check_unknown(batch: &BatchSequence) -> SequenceCheck {
    if batch.base_sequence == 0 {
        SequenceCheck::Append
    } else {
        SequenceCheck::Reject(SequenceError::UnknownProducerId {
            producer_id: batch.producer_id,
        })
    }
}

/// The idempotent producers of one partition.
#[derive(Debug)]
pub struct PartitionProducers {
    /// Each producer's state, by producer id.
    producers: HashMap<i64, ProducerEntry>,
    /// Producer ids by recency stamp, least recent first, so eviction finds its victim
    /// without scanning every producer. Holds exactly the ids in `producers`.
    by_recency: BTreeMap<u64, i64>,
    /// The next recency stamp. A counter rather than `now_ms`: a rebuild records a whole
    /// log with one `now_ms`, and the log's order is the order of use.
    next_recency: u64,
    /// Kafka's `producer.id.expiration.ms`: [`PartitionProducers::record`] forgets
    /// producers that have not appended for this long.
    expiration_ms: i64,
}

impl Default for PartitionProducers {
    fn default() -> Self {
        PartitionProducers::with_expiration_ms(PRODUCER_ID_EXPIRATION_MS_DEFAULT)
    }
}

impl PartitionProducers {
    /// No producers yet; `record` forgets those idle for `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`, [`PRODUCER_ID_EXPIRATION_MS_DEFAULT`] by default).
    #[must_use]
    pub fn with_expiration_ms(expiration_ms: i64) -> Self {
        // Zero would forget the producer just recorded.
        assert!(
            expiration_ms > 0,
            "expiration_ms {expiration_ms} must be positive"
        );
        PartitionProducers {
            producers: HashMap::new(),
            by_recency: BTreeMap::new(),
            next_recency: 0,
            expiration_ms,
        }
    }

    /// Decides what to do with a batch, changing nothing.
    #[must_use]
    pub fn check(&self, batch: &BatchSequence) -> SequenceCheck {
        if !batch.is_idempotent() {
            return SequenceCheck::Append;
        }
        if !batch.has_valid_range() {
            return SequenceCheck::Reject(SequenceError::InvalidSequence);
        }
        match self.producers.get(&batch.producer_id) {
            Some(entry) => entry.check(batch),
            None => check_unknown(batch),
        }
    }

    /// Records an appended batch (also used to rebuild state from the log's batch headers
    /// on restart).
    ///
    /// Ignores batches without a producer id and batches [`check`](Self::check) would
    /// call [`SequenceError::InvalidSequence`], so a rebuild never trips on them. Does not
    /// check the sequence: on a rebuild the log is the truth, as in Kafka's replication
    /// path. A batch with a different epoch (in live traffic, a newer one) replaces the
    /// producer's remembered batches. Producers idle for the expiration are forgotten,
    /// and beyond [`PRODUCERS_PER_PARTITION_MAX`] the least recently recorded one.
    pub fn record(
        &mut self,
        batch: &BatchSequence,
        base_offset: u64,
        last_offset: u64,
        now_ms: i64,
    ) {
        if !batch.is_idempotent() || !batch.has_valid_range() {
            return;
        }
        let recency = self.next_recency;
        self.next_recency += 1;
        let entry = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: batch.producer_epoch,
                batches: VecDeque::with_capacity(BATCHES_REMEMBERED),
                last_append_ms: now_ms,
                recency,
            });
        self.by_recency.remove(&entry.recency);
        self.by_recency.insert(recency, batch.producer_id);
        entry.recency = recency;
        entry.last_append_ms = now_ms;
        entry.push(
            batch.producer_epoch,
            BatchMetadata {
                first_sequence: batch.base_sequence,
                last_sequence: batch.last_sequence(),
                base_offset,
                last_offset,
            },
        );
        self.forget_idle(now_ms);
        self.evict_beyond_bound();
    }

    /// Forgets idle producers from the least recently active on, stopping at the first
    /// that is not idle: O(1) per producer forgotten. Recency follows `now_ms` unless the
    /// wall clock steps back, in which case a few idle producers wait for a later call
    /// (or [`PartitionProducers::expire`]), never a live one forgotten.
    fn forget_idle(&mut self, now_ms: i64) {
        while let Some((&recency, &producer_id)) = self.by_recency.first_key_value() {
            let entry = &self.producers[&producer_id];
            if !entry.is_expired(now_ms, self.expiration_ms) {
                break;
            }
            self.by_recency.remove(&recency);
            self.producers.remove(&producer_id);
        }
    }

    /// Forgets producers idle for `expiration_ms` or longer (Kafka's
    /// `producer.id.expiration.ms`; [`PRODUCER_ID_EXPIRATION_MS_DEFAULT`] by default).
    /// Returns how many were forgotten.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        assert!(expiration_ms >= 0, "negative expiration_ms {expiration_ms}");
        let before = self.producers.len();
        let by_recency = &mut self.by_recency;
        self.producers.retain(|_, entry| {
            let expired = entry.is_expired(now_ms, expiration_ms);
            if expired {
                by_recency.remove(&entry.recency);
            }
            !expired
        });
        assert_eq!(self.by_recency.len(), self.producers.len());
        before - self.producers.len()
    }

    /// How many producers are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    fn evict_beyond_bound(&mut self) {
        while self.producers.len() > PRODUCERS_PER_PARTITION_MAX {
            let (_, producer_id) = self
                .by_recency
                .pop_first()
                .expect("by_recency holds every producer");
            self.producers.remove(&producer_id);
        }
        assert_eq!(self.by_recency.len(), self.producers.len());
    }
}

/// Producer ids whose current epoch [`IssuedProducers`] remembers; beyond it the least
/// recently used is forgotten (its holder's next bump gets a new id, which is safe).
/// About 80 bytes each: a few MB at most.
pub const ISSUED_PRODUCERS_MAX: usize = 100_000;

const _: () = assert!(ISSUED_PRODUCERS_MAX > 0);

/// What InitProducerId answers a producer that names its id and epoch (KIP-360).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BumpVerdict {
    /// The caller holds the id's current epoch: it gets this one, the next.
    Bumped(i16),
    /// The id is not remembered (handed out before a restart, forgotten, or its epochs
    /// are used up): give a new id with epoch 0, as Kafka answers every InitProducerId
    /// without a transactional id.
    NewId,
    /// Not the id's current epoch: another instance holds the id (Kafka's fencing,
    /// INVALID_PRODUCER_EPOCH).
    Fenced,
    /// The id was never handed out (UNKNOWN_PRODUCER_ID).
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct IssuedEntry {
    epoch: i16,
    /// The epoch before the last bump: a retry of that bump, whose answer was lost, gets
    /// the same answer again (Kafka's `lastProducerEpoch`).
    previous: Option<i16>,
    last_used_ms: i64,
    recency: u64,
}

/// The epochs of the producer ids InitProducerId handed out, so that only the holder of
/// an id's current epoch can bump it. Without it any client could name any id: bump the
/// epoch of a producer it does not own, fencing it, or take an id never handed out,
/// which a later producer would then share.
///
/// Sans-IO: the caller says which ids were ever handed out (`ids_below`) and the time.
/// Bounded by [`ISSUED_PRODUCERS_MAX`] and by `expiration_ms` of disuse; a forgotten id
/// is answered with [`BumpVerdict::NewId`], never with a bump nobody can check.
#[derive(Debug)]
pub struct IssuedProducers {
    by_id: HashMap<i64, IssuedEntry>,
    /// Ids by recency stamp, least recently used first; holds exactly `by_id`'s keys.
    by_recency: BTreeMap<u64, i64>,
    next_recency: u64,
    expiration_ms: i64,
}

impl Default for IssuedProducers {
    fn default() -> Self {
        IssuedProducers::with_expiration_ms(PRODUCER_ID_EXPIRATION_MS_DEFAULT)
    }
}

impl IssuedProducers {
    /// Nothing issued yet; ids unused for `expiration_ms` are forgotten.
    #[must_use]
    pub fn with_expiration_ms(expiration_ms: i64) -> Self {
        assert!(
            expiration_ms > 0,
            "expiration_ms {expiration_ms} must be positive"
        );
        IssuedProducers {
            by_id: HashMap::new(),
            by_recency: BTreeMap::new(),
            next_recency: 0,
            expiration_ms,
        }
    }

    /// Remembers a new id, handed out with epoch 0.
    pub fn issued(&mut self, producer_id: i64, now_ms: i64) {
        self.touch(producer_id, 0, None, now_ms);
    }

    /// KIP-360: the producer holding `producer_id` at `epoch` asks for the next epoch.
    /// `ids_below` is the allocator's next id: no id at or above it was handed out.
    pub fn bump(
        &mut self,
        producer_id: i64,
        epoch: i16,
        ids_below: i64,
        now_ms: i64,
    ) -> BumpVerdict {
        self.forget_idle(now_ms);
        if producer_id < 0 || producer_id >= ids_below {
            return BumpVerdict::Unknown;
        }
        let Some(entry) = self.by_id.get(&producer_id).copied() else {
            return BumpVerdict::NewId;
        };
        if entry.previous == Some(epoch) {
            self.touch(producer_id, entry.epoch, entry.previous, now_ms);
            return BumpVerdict::Bumped(entry.epoch);
        }
        if entry.epoch != epoch {
            return BumpVerdict::Fenced;
        }
        // Epochs are i16 and the Java client moves to a new id before the last one.
        if epoch >= i16::MAX - 1 {
            self.forget(producer_id);
            return BumpVerdict::NewId;
        }
        self.touch(producer_id, epoch + 1, Some(epoch), now_ms);
        BumpVerdict::Bumped(epoch + 1)
    }

    /// How many ids are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no id is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    fn touch(&mut self, producer_id: i64, epoch: i16, previous: Option<i16>, now_ms: i64) {
        let recency = self.next_recency;
        self.next_recency += 1;
        let entry = IssuedEntry {
            epoch,
            previous,
            last_used_ms: now_ms,
            recency,
        };
        if let Some(old) = self.by_id.insert(producer_id, entry) {
            self.by_recency.remove(&old.recency);
        }
        self.by_recency.insert(recency, producer_id);
        while self.by_id.len() > ISSUED_PRODUCERS_MAX {
            let (_, oldest) = self.by_recency.pop_first().expect("holds every id");
            self.by_id.remove(&oldest);
        }
        assert_eq!(self.by_recency.len(), self.by_id.len());
    }

    fn forget(&mut self, producer_id: i64) {
        if let Some(old) = self.by_id.remove(&producer_id) {
            self.by_recency.remove(&old.recency);
        }
    }

    fn forget_idle(&mut self, now_ms: i64) {
        while let Some((&recency, &producer_id)) = self.by_recency.first_key_value() {
            let idle_ms = now_ms.saturating_sub(self.by_id[&producer_id].last_used_ms);
            if idle_ms < self.expiration_ms {
                break;
            }
            self.by_recency.remove(&recency);
            self.by_id.remove(&producer_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Issue 11: InitProducerId bumped the epoch of any id a client named.
    #[test]
    fn only_the_holder_of_an_ids_current_epoch_bumps_it() {
        let mut issued = IssuedProducers::with_expiration_ms(10_000);
        issued.issued(7, 0);
        let below = 8;
        assert_eq!(issued.bump(7, 0, below, 1), BumpVerdict::Bumped(1));
        assert_eq!(issued.bump(7, 1, below, 2), BumpVerdict::Bumped(2));
        // A retry of the last bump (its answer lost) gets the same answer.
        assert_eq!(issued.bump(7, 1, below, 3), BumpVerdict::Bumped(2));
        // An instance holding an older epoch, or a made-up one, is fenced.
        assert_eq!(issued.bump(7, 0, below, 4), BumpVerdict::Fenced);
        assert_eq!(issued.bump(7, 9, below, 4), BumpVerdict::Fenced);
        // Ids never handed out are unknown.
        assert_eq!(issued.bump(8, 0, below, 5), BumpVerdict::Unknown);
        assert_eq!(issued.bump(-5, 0, below, 5), BumpVerdict::Unknown);
        // Handed out but not remembered (before a restart): a new id, as Kafka answers.
        assert_eq!(issued.bump(3, 0, below, 5), BumpVerdict::NewId);
        // Unused for the expiration: forgotten.
        assert_eq!(issued.bump(7, 2, below, 10_003), BumpVerdict::NewId);
        assert!(issued.is_empty());
        // The last epochs move to a new id.
        issued.issued(1, 0);
        let mut epoch = 0;
        while let BumpVerdict::Bumped(next) = issued.bump(1, epoch, below, 0) {
            epoch = next;
        }
        assert_eq!(epoch, i16::MAX - 1);
    }

    #[test]
    fn issued_producers_stay_within_their_bound() {
        let mut issued = IssuedProducers::default();
        for id in 0..(ISSUED_PRODUCERS_MAX as i64 + 10) {
            issued.issued(id, 0);
        }
        assert_eq!(issued.len(), ISSUED_PRODUCERS_MAX);
        let below = ISSUED_PRODUCERS_MAX as i64 + 10;
        assert_eq!(
            issued.bump(0, 0, below, 0),
            BumpVerdict::NewId,
            "least recent went"
        );
        assert_eq!(issued.bump(below - 1, 0, below, 0), BumpVerdict::Bumped(1));
    }

    fn batch(
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        record_count: i32,
    ) -> BatchSequence {
        BatchSequence {
            producer_id,
            producer_epoch,
            base_sequence,
            record_count,
        }
    }

    /// Checks that `b` may be appended and records it at `base_offset`.
    fn append(state: &mut PartitionProducers, b: BatchSequence, base_offset: u64) -> (u64, u64) {
        assert_eq!(state.check(&b), SequenceCheck::Append, "{b:?}");
        let last_offset = base_offset + b.record_count as u64 - 1;
        state.record(&b, base_offset, last_offset, 0);
        (base_offset, last_offset)
    }

    fn out_of_order(expected: i32, got: i32) -> SequenceCheck {
        SequenceCheck::Reject(SequenceError::OutOfOrderSequence { expected, got })
    }

    /// Six batches of two records from producer 7, epoch 0: sequences 0..12, offsets
    /// 100..112.
    fn six_batches() -> (PartitionProducers, Vec<BatchSequence>) {
        let mut state = PartitionProducers::default();
        let sent: Vec<_> = (0..6).map(|i| batch(7, 0, i * 2, 2)).collect();
        for (i, b) in sent.iter().enumerate() {
            append(&mut state, *b, 100 + i as u64 * 2);
        }
        (state, sent)
    }

    #[test]
    fn duplicate_of_any_of_the_last_five_batches_returns_its_original_offsets() {
        let (state, sent) = six_batches();
        for (i, b) in sent.iter().enumerate().skip(1) {
            let base_offset = 100 + i as u64 * 2;
            let want = SequenceCheck::Duplicate {
                base_offset,
                last_offset: base_offset + 1,
            };
            assert_eq!(state.check(b), want, "{b:?}");
        }
    }

    #[test]
    fn sixth_oldest_batch_is_no_longer_a_duplicate_but_out_of_order() {
        let (state, sent) = six_batches();
        assert_eq!(state.check(&sent[0]), out_of_order(12, 0));
    }

    #[test]
    fn same_start_with_a_different_length_is_not_a_duplicate() {
        let (state, _) = six_batches();
        assert_eq!(state.check(&batch(7, 0, 10, 1)), out_of_order(12, 10));
    }

    #[test]
    fn gap_in_the_sequence_is_out_of_order() {
        let (state, _) = six_batches();
        assert_eq!(state.check(&batch(7, 0, 12, 1)), SequenceCheck::Append);
        assert_eq!(state.check(&batch(7, 0, 13, 1)), out_of_order(12, 13));
    }

    #[test]
    fn sequence_wraps_after_i32_max() {
        assert_eq!(batch(1, 0, i32::MAX, 1).last_sequence(), i32::MAX);
        assert_eq!(batch(1, 0, i32::MAX, 2).last_sequence(), 0);
        assert_eq!(batch(1, 0, i32::MAX - 1, 4).last_sequence(), 1);

        let mut state = PartitionProducers::default();
        // As rebuilt from the log: the producer is near the top of the range.
        state.record(&batch(1, 0, i32::MAX - 2, 2), 0, 1, 0);
        let across = batch(1, 0, i32::MAX, 3);
        append(&mut state, across, 2);
        assert_eq!(state.check(&batch(1, 0, 2, 1)), SequenceCheck::Append);
        assert_eq!(
            state.check(&batch(1, 0, i32::MAX, 3)),
            SequenceCheck::Duplicate {
                base_offset: 2,
                last_offset: 4
            }
        );
        assert_eq!(state.check(&batch(1, 0, 3, 1)), out_of_order(2, 3));
    }

    #[test]
    fn next_after_a_batch_ending_at_i32_max_is_zero() {
        let mut state = PartitionProducers::default();
        state.record(&batch(1, 0, i32::MAX - 1, 2), 0, 1, 0);
        assert_eq!(state.check(&batch(1, 0, 0, 1)), SequenceCheck::Append);
        assert_eq!(state.check(&batch(1, 0, 1, 1)), out_of_order(0, 1));
    }

    #[test]
    fn lower_epoch_is_fenced() {
        let mut state = PartitionProducers::default();
        append(&mut state, batch(7, 3, 0, 1), 0);
        let want =
            SequenceCheck::Reject(SequenceError::InvalidProducerEpoch { current: 3, got: 2 });
        assert_eq!(state.check(&batch(7, 2, 1, 1)), want);
        // Even a retry of a batch the fenced instance really wrote.
        assert_eq!(state.check(&batch(7, 2, 0, 1)), want);
    }

    #[test]
    fn new_epoch_must_start_at_zero() {
        let mut state = PartitionProducers::default();
        append(&mut state, batch(7, 0, 0, 5), 0);
        assert_eq!(state.check(&batch(7, 1, 5, 1)), out_of_order(0, 5));
        assert_eq!(state.check(&batch(7, 1, 0, 1)), SequenceCheck::Append);
    }

    #[test]
    fn new_epoch_forgets_the_old_epochs_batches() {
        let mut state = PartitionProducers::default();
        append(&mut state, batch(7, 0, 0, 1), 0);
        append(&mut state, batch(7, 0, 1, 1), 1);
        append(&mut state, batch(7, 1, 0, 2), 2);
        // Sequence 1 in epoch 1 continues nothing: epoch 1's batch ended at 1.
        assert_eq!(state.check(&batch(7, 1, 1, 1)), out_of_order(2, 1));
        assert_eq!(
            state.check(&batch(7, 1, 0, 2)),
            SequenceCheck::Duplicate {
                base_offset: 2,
                last_offset: 3
            }
        );
        assert_eq!(state.check(&batch(7, 1, 2, 1)), SequenceCheck::Append);
    }

    #[test]
    fn unknown_producer_with_nonzero_sequence() {
        let state = PartitionProducers::default();
        let want = SequenceCheck::Reject(SequenceError::UnknownProducerId { producer_id: 7 });
        assert_eq!(state.check(&batch(7, 0, 3, 1)), want);
        assert_eq!(state.check(&batch(7, 4, 0, 1)), SequenceCheck::Append);
    }

    #[test]
    fn non_idempotent_batches_pass_through() {
        let mut state = PartitionProducers::default();
        let plain = batch(-1, -1, -1, 3);
        assert_eq!(state.check(&plain), SequenceCheck::Append);
        state.record(&plain, 0, 2, 0);
        state.record(&plain, 0, 2, 0);
        assert!(state.is_empty());
        assert_eq!(state.check(&plain), SequenceCheck::Append);
    }

    #[test]
    fn idempotent_batch_without_a_sequence_range_is_an_invalid_record() {
        let mut state = PartitionProducers::default();
        let invalid = SequenceCheck::Reject(SequenceError::InvalidSequence);
        assert_eq!(state.check(&batch(7, 0, -1, 1)), invalid);
        assert_eq!(state.check(&batch(7, 0, 0, 0)), invalid);
        // Nor does a rebuild remember them (Kafka's control batches carry no sequence).
        state.record(&batch(7, 0, -1, 1), 0, 0, 0);
        assert!(state.is_empty());
    }

    #[test]
    fn kafka_codes_follow_the_protocol() {
        let codes = [
            (
                SequenceError::OutOfOrderSequence {
                    expected: 1,
                    got: 2,
                },
                45,
            ),
            (
                SequenceError::InvalidProducerEpoch { current: 1, got: 0 },
                47,
            ),
            (SequenceError::UnknownProducerId { producer_id: 7 }, 59),
            (SequenceError::InvalidSequence, 87),
        ];
        for (error, code) in codes {
            assert_eq!(error.kafka_code(), code, "{error}");
        }
    }

    #[test]
    fn rebuild_from_log_headers_recognises_retries_across_a_restart() {
        let mut state = PartitionProducers::default();
        for (i, b) in (0..3).map(|i| batch(9, 2, i * 4, 4)).enumerate() {
            let base_offset = 50 + i as u64 * 4;
            state.record(&b, base_offset, base_offset + 3, 1_000);
        }
        assert_eq!(
            state.check(&batch(9, 2, 4, 4)),
            SequenceCheck::Duplicate {
                base_offset: 54,
                last_offset: 57
            }
        );
        assert_eq!(state.check(&batch(9, 2, 12, 1)), SequenceCheck::Append);
    }

    #[test]
    fn expiry_forgets_idle_producers() {
        let mut state = PartitionProducers::default();
        state.record(&batch(1, 0, 0, 1), 0, 0, 1_000);
        state.record(&batch(2, 0, 0, 1), 1, 1, 5_000);
        // Kafka's `isProducerExpired`: idle for exactly the expiration is expired.
        assert_eq!(state.expire(10_999, 10_000), 0);
        assert_eq!(state.expire(11_000, 10_000), 1);
        assert_eq!(state.len(), 1);
        let forgotten = SequenceCheck::Reject(SequenceError::UnknownProducerId { producer_id: 1 });
        assert_eq!(state.check(&batch(1, 0, 1, 1)), forgotten);
        assert_eq!(state.check(&batch(2, 0, 1, 1)), SequenceCheck::Append);
        // Appending again keeps a producer alive.
        state.record(&batch(2, 0, 1, 1), 2, 2, 14_000);
        assert_eq!(state.expire(20_000, 10_000), 0);
        assert_eq!(state.expire(24_000, 10_000), 1);
        assert!(state.is_empty());
    }

    /// Issue 11: idempotent-producer state never expired unless someone called
    /// `expire`, and nothing did. `record` now forgets producers idle for
    /// `producer.id.expiration.ms` (Kafka's `>=`).
    #[test]
    fn record_forgets_producers_idle_for_the_expiration() {
        let mut state = PartitionProducers::with_expiration_ms(10_000);
        state.record(&batch(1, 0, 0, 1), 0, 0, 1_000);
        state.record(&batch(2, 0, 0, 1), 1, 1, 5_000);
        state.record(&batch(3, 0, 0, 1), 2, 2, 10_999);
        assert_eq!(state.len(), 3, "producer 1 is idle 9,999 ms: kept");
        state.record(&batch(3, 0, 1, 1), 3, 3, 11_000);
        assert_eq!(state.len(), 2, "producer 1 is idle 10,000 ms: forgotten");
        let forgotten = SequenceCheck::Reject(SequenceError::UnknownProducerId { producer_id: 1 });
        assert_eq!(state.check(&batch(1, 0, 1, 1)), forgotten);
        assert_eq!(state.check(&batch(2, 0, 1, 1)), SequenceCheck::Append);
        state.record(&batch(4, 0, 0, 1), 4, 4, 15_000);
        assert_eq!(state.len(), 2, "producer 2 went at 15,000");
        assert_eq!(state.check(&batch(3, 0, 2, 1)), SequenceCheck::Append);

        // The default is Kafka's day.
        let mut state = PartitionProducers::default();
        state.record(&batch(1, 0, 0, 1), 0, 0, 0);
        state.record(
            &batch(2, 0, 0, 1),
            1,
            1,
            PRODUCER_ID_EXPIRATION_MS_DEFAULT - 1,
        );
        assert_eq!(state.len(), 2);
        state.record(&batch(2, 0, 1, 1), 2, 2, PRODUCER_ID_EXPIRATION_MS_DEFAULT);
        assert_eq!(state.len(), 1);
    }

    /// A new producer per run, for ever: the state holds the producers of the last
    /// expiration period, not every producer ever seen.
    #[test]
    fn producer_churn_does_not_grow_the_state() {
        let mut state = PartitionProducers::with_expiration_ms(1_000);
        for id in 0..50_000i64 {
            state.record(&batch(id, 0, 0, 1), id as u64, id as u64, id * 10);
            assert!(state.len() <= 100, "{} producers at {id}", state.len());
        }
        assert_eq!(state.len(), 100);
    }

    #[test]
    fn memory_bound_evicts_least_recently_used() {
        let mut state = PartitionProducers::default();
        // One timestamp for all, as in a rebuild: recency is the order of recording.
        for id in 0..PRODUCERS_PER_PARTITION_MAX as i64 {
            state.record(&batch(id, 0, 0, 1), id as u64, id as u64, 0);
        }
        assert_eq!(state.len(), PRODUCERS_PER_PARTITION_MAX);
        // Producer 0 writes again, so producer 1 is now the least recently used.
        state.record(&batch(0, 0, 1, 1), 20_000, 20_000, 0);
        state.record(&batch(-1, -1, -1, 1), 20_001, 20_001, 0);
        let newcomer = PRODUCERS_PER_PARTITION_MAX as i64;
        state.record(&batch(newcomer, 0, 0, 1), 20_002, 20_002, 0);

        assert_eq!(state.len(), PRODUCERS_PER_PARTITION_MAX);
        let evicted = SequenceCheck::Reject(SequenceError::UnknownProducerId { producer_id: 1 });
        assert_eq!(state.check(&batch(1, 0, 1, 1)), evicted);
        assert_eq!(state.check(&batch(0, 0, 2, 1)), SequenceCheck::Append);
        assert_eq!(state.check(&batch(2, 0, 1, 1)), SequenceCheck::Append);
        assert_eq!(
            state.check(&batch(newcomer, 0, 1, 1)),
            SequenceCheck::Append
        );
    }

    // --- Model-based test -----------------------------------------------------------

    const PRODUCERS: usize = 3;
    /// Short enough that `Idle` ops make producers expire on their own within a run.
    const MODEL_EXPIRATION_MS: i64 = 60;

    #[derive(Debug, Clone)]
    enum Op {
        /// The producer sends its next batch.
        Send { producer: usize, records: i32 },
        /// The producer resends one of the batches it got appended, `back` from the
        /// latest; beyond the last five it is no longer recognised.
        Retry { producer: usize, back: usize },
        /// A batch whose base sequence is off by `skip` from the expected one.
        Gap {
            producer: usize,
            skip: i32,
            records: i32,
        },
        /// A batch from the producer's previous epoch: a zombie instance.
        Zombie { producer: usize, records: i32 },
        /// The producer bumps its epoch and restarts its sequence at 0.
        BumpEpoch { producer: usize },
        /// A batch from a producer without idempotence.
        Plain { records: i32 },
        /// Time passes.
        Idle { ms: i64 },
        /// Idle producers are expired.
        Expire { expiration_ms: i64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        let producer = 0..PRODUCERS;
        let records = 1i32..=4;
        prop_oneof![
            8 => (producer.clone(), records.clone()).prop_map(|(producer, records)| Op::Send { producer, records }),
            4 => (producer.clone(), 0usize..8).prop_map(|(producer, back)| Op::Retry { producer, back }),
            2 => (producer.clone(), -8i32..=8, records.clone()).prop_map(|(producer, skip, records)| Op::Gap { producer, skip, records }),
            1 => (producer.clone(), records.clone()).prop_map(|(producer, records)| Op::Zombie { producer, records }),
            1 => producer.prop_map(|producer| Op::BumpEpoch { producer }),
            1 => records.prop_map(|records| Op::Plain { records }),
            1 => (0i64..40).prop_map(|ms| Op::Idle { ms }),
            1 => (0i64..60).prop_map(|expiration_ms| Op::Expire { expiration_ms }),
        ]
    }

    /// What the broker should remember of one producer: every batch of the current
    /// epoch, unbounded, and when it last appended.
    #[derive(Debug, Clone)]
    struct ModelProducer {
        epoch: i16,
        appended: Vec<(BatchSequence, u64, u64)>,
        last_append_ms: i64,
    }

    /// Sequence arithmetic written out independently of the implementation's.
    fn model_last_sequence(b: &BatchSequence) -> i32 {
        let last = i64::from(b.base_sequence) + i64::from(b.record_count) - 1;
        let last = if last > i64::from(i32::MAX) {
            last - i64::from(i32::MAX) - 1
        } else {
            last
        };
        i32::try_from(last).unwrap()
    }

    fn model_verdict(model: &HashMap<i64, ModelProducer>, b: &BatchSequence) -> SequenceCheck {
        if b.producer_id < 0 {
            return SequenceCheck::Append;
        }
        if b.base_sequence < 0 || b.record_count < 1 {
            return SequenceCheck::Reject(SequenceError::InvalidSequence);
        }
        let Some(p) = model.get(&b.producer_id) else {
            return if b.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(SequenceError::UnknownProducerId {
                    producer_id: b.producer_id,
                })
            };
        };
        if b.producer_epoch < p.epoch {
            return SequenceCheck::Reject(SequenceError::InvalidProducerEpoch {
                current: p.epoch,
                got: b.producer_epoch,
            });
        }
        let expected = if b.producer_epoch > p.epoch {
            0
        } else {
            let recent = p.appended.iter().rev().take(5);
            for (old, base_offset, last_offset) in recent {
                if old.base_sequence == b.base_sequence
                    && model_last_sequence(old) == model_last_sequence(b)
                {
                    return SequenceCheck::Duplicate {
                        base_offset: *base_offset,
                        last_offset: *last_offset,
                    };
                }
            }
            let (last, _, _) = p.appended.last().unwrap();
            let last = model_last_sequence(last);
            if last == i32::MAX { 0 } else { last + 1 }
        };
        if b.base_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::Reject(SequenceError::OutOfOrderSequence {
                expected,
                got: b.base_sequence,
            })
        }
    }

    /// The client side: what each producer believes and has had appended.
    #[derive(Debug, Clone)]
    struct Client {
        epoch: i16,
        next_sequence: i32,
        appended: Vec<BatchSequence>,
    }

    fn client_batch(
        client: &Client,
        id: i64,
        base_sequence: i32,
        record_count: i32,
    ) -> BatchSequence {
        batch(id, client.epoch, base_sequence, record_count)
    }

    /// The batch an operation sends, if any; `BumpEpoch` and time only change state.
    fn batch_for(op: &Op, clients: &mut [Client], now_ms: &mut i64) -> Option<BatchSequence> {
        match *op {
            Op::Send { producer, records } => {
                let c = &clients[producer];
                Some(client_batch(c, producer as i64, c.next_sequence, records))
            }
            Op::Retry { producer, back } => {
                let sent = &clients[producer].appended;
                sent.len().checked_sub(back + 1).map(|i| sent[i])
            }
            Op::Gap {
                producer,
                skip,
                records,
            } => {
                let c = &clients[producer];
                Some(client_batch(
                    c,
                    producer as i64,
                    c.next_sequence.wrapping_add(skip),
                    records,
                ))
            }
            Op::Zombie { producer, records } => {
                let c = &clients[producer];
                let epoch = c.epoch.checked_sub(1)?;
                Some(batch(producer as i64, epoch, c.next_sequence, records))
            }
            Op::BumpEpoch { producer } => {
                clients[producer].epoch += 1;
                clients[producer].next_sequence = 0;
                None
            }
            Op::Plain { records } => Some(batch(-1, -1, -1, records)),
            Op::Idle { ms } => {
                *now_ms += ms;
                None
            }
            Op::Expire { .. } => None,
        }
    }

    fn model_record(
        model: &mut HashMap<i64, ModelProducer>,
        b: &BatchSequence,
        offsets: (u64, u64),
        now_ms: i64,
    ) {
        if b.producer_id < 0 {
            return;
        }
        let p = model.entry(b.producer_id).or_insert_with(|| ModelProducer {
            epoch: b.producer_epoch,
            appended: Vec::new(),
            last_append_ms: now_ms,
        });
        if p.epoch != b.producer_epoch {
            p.epoch = b.producer_epoch;
            p.appended.clear();
        }
        p.appended.push((*b, offsets.0, offsets.1));
        p.last_append_ms = now_ms;
        // Every append forgets the producers idle for the expiration.
        model.retain(|_, p| now_ms - p.last_append_ms < MODEL_EXPIRATION_MS);
    }

    fn run(starts: Vec<Option<i32>>, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let mut state = PartitionProducers::with_expiration_ms(MODEL_EXPIRATION_MS);
        let mut model = HashMap::new();
        let mut clients = vec![
            Client {
                epoch: 0,
                next_sequence: 0,
                appended: Vec::new()
            };
            PRODUCERS
        ];
        let mut log_end = 0u64;
        let mut now_ms = 0i64;
        // Some producers start near the top of the sequence range, as if rebuilt from a
        // log they had written to for a long time, so the run crosses the wrap.
        for (id, below_max) in starts.iter().enumerate() {
            let Some(below_max) = below_max else { continue };
            let seed = batch(id as i64, 0, i32::MAX - below_max, 1);
            state.record(&seed, log_end, log_end, now_ms);
            model_record(&mut model, &seed, (log_end, log_end), now_ms);
            clients[id].appended.push(seed);
            clients[id].next_sequence = next_sequence_after(model_last_sequence(&seed));
            log_end += 1;
        }
        for op in &ops {
            if let Op::Expire { expiration_ms } = *op {
                let before = model.len();
                model.retain(|_, p: &mut ModelProducer| now_ms - p.last_append_ms < expiration_ms);
                prop_assert_eq!(state.expire(now_ms, expiration_ms), before - model.len());
            }
            let Some(b) = batch_for(op, &mut clients, &mut now_ms) else {
                continue;
            };
            let verdict = state.check(&b);
            prop_assert_eq!(verdict, model_verdict(&model, &b), "{:?} with {:?}", op, b);
            if verdict != SequenceCheck::Append {
                continue;
            }
            let offsets = (log_end, log_end + b.record_count as u64 - 1);
            log_end = offsets.1 + 1;
            state.record(&b, offsets.0, offsets.1, now_ms);
            model_record(&mut model, &b, offsets, now_ms);
            if b.producer_id >= 0 {
                let c = &mut clients[b.producer_id as usize];
                c.appended.push(b);
                c.next_sequence = next_sequence_after(model_last_sequence(&b));
            }
            prop_assert_eq!(state.len(), model.len());
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn verdicts_match_a_model_of_sends_retries_and_gaps(
            starts in prop::collection::vec(prop::option::of(0i32..12), PRODUCERS),
            ops in prop::collection::vec(op(), 1..300),
        ) {
            run(starts, ops)?;
        }
    }
}
