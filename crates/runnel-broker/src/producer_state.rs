//! Idempotent producer state for one partition, sans-IO: Kafka's `ProducerStateEntry`
//! and `ProducerAppendInfo.checkSequence`.
//!
//! For every producer id the partition remembers the epoch and the sequence ranges and
//! offsets of the last [`BATCHES_REMEMBERED`] batches. A retried batch is recognised and
//! answered with its original offsets; a gap or a stale epoch is refused.

use std::collections::{HashMap, VecDeque};

/// Kafka keeps the last five batches per producer, matching the client's limit of five
/// in-flight requests per connection with idempotence.
pub const BATCHES_REMEMBERED: usize = 5;
/// Producers remembered per partition. Beyond it the least recently active is forgotten,
/// so a flood of short-lived producers cannot grow memory without bound; a forgotten
/// producer that comes back gets UNKNOWN_PRODUCER_ID and resets, as after expiry.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;
/// Kafka's `producer.id.expiration.ms`: a day of silence and a producer is forgotten.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 86_400_000;

/// The idempotence fields of one batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSequence {
    /// The producer id, or -1 for a producer without idempotence.
    pub producer_id: i64,
    /// The producer epoch.
    pub producer_epoch: i16,
    /// The first record's sequence number.
    pub base_sequence: i32,
    /// Records in the batch.
    pub record_count: i32,
}

impl BatchSequence {
    /// The last record's sequence number. Sequences wrap from `i32::MAX` to 0, as in
    /// Kafka's `DefaultRecordBatch.incrementSequence`.
    #[must_use]
    pub fn last_sequence(&self) -> i32 {
        wrap_add(self.base_sequence, self.record_count.max(1) - 1)
    }
}

fn wrap_add(seq: i32, n: i32) -> i32 {
    let sum = i64::from(seq) + i64::from(n);
    (sum % (i64::from(i32::MAX) + 1)) as i32
}

/// What to do with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it, then call [`PartitionProducers::record`] with the offsets it got.
    Append,
    /// Already appended: answer with the original offsets and append nothing.
    Duplicate {
        /// The batch's original first offset.
        base_offset: u64,
        /// The batch's original last offset.
        last_offset: u64,
    },
    /// Refuse it with this error.
    Reject(SequenceError),
}

/// Why a batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch does not follow the producer's last sequence.
    #[error("out of order sequence: expected {expected}, got {got}")]
    OutOfOrderSequence {
        /// The sequence that would have been accepted.
        expected: i32,
        /// The batch's base sequence.
        got: i32,
    },
    /// The producer's epoch is older than the one the partition has seen.
    #[error("producer epoch {got} is older than the current {current}")]
    InvalidProducerEpoch {
        /// The epoch the partition knows.
        current: i16,
        /// The batch's epoch.
        got: i16,
    },
    /// The partition knows nothing of this producer and the batch does not start at 0.
    #[error("unknown producer id {producer_id}")]
    UnknownProducerId {
        /// The producer id.
        producer_id: i64,
    },
    /// An idempotent batch without a sequence.
    #[error("idempotent batch without a base sequence")]
    InvalidSequence,
}

impl SequenceError {
    /// The Kafka error code: OUT_OF_ORDER_SEQUENCE_NUMBER (45), INVALID_PRODUCER_EPOCH
    /// (47), UNKNOWN_PRODUCER_ID (59), INVALID_RECORD (87).
    #[must_use]
    pub fn kafka_code(&self) -> i16 {
        match self {
            SequenceError::OutOfOrderSequence { .. } => 45,
            SequenceError::InvalidProducerEpoch { .. } => 47,
            SequenceError::UnknownProducerId { .. } => 59,
            SequenceError::InvalidSequence => 87,
        }
    }
}

#[derive(Debug, Clone)]
struct Remembered {
    first_seq: i32,
    last_seq: i32,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug, Clone)]
struct Producer {
    epoch: i16,
    batches: VecDeque<Remembered>,
    last_active_ms: i64,
}

/// The idempotent producers of one partition.
#[derive(Debug, Default)]
pub struct PartitionProducers {
    producers: HashMap<i64, Producer>,
}

impl PartitionProducers {
    /// Decides what to do with a batch, changing nothing.
    #[must_use]
    pub fn check(&self, batch: &BatchSequence) -> SequenceCheck {
        if batch.producer_id < 0 {
            return SequenceCheck::Append;
        }
        if batch.base_sequence < 0 {
            return SequenceCheck::Reject(SequenceError::InvalidSequence);
        }
        let Some(p) = self.producers.get(&batch.producer_id) else {
            return if batch.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(SequenceError::UnknownProducerId {
                    producer_id: batch.producer_id,
                })
            };
        };
        if batch.producer_epoch < p.epoch {
            return SequenceCheck::Reject(SequenceError::InvalidProducerEpoch {
                current: p.epoch,
                got: batch.producer_epoch,
            });
        }
        if batch.producer_epoch > p.epoch {
            // A new epoch starts its sequences again.
            return if batch.base_sequence == 0 {
                SequenceCheck::Append
            } else {
                SequenceCheck::Reject(SequenceError::OutOfOrderSequence {
                    expected: 0,
                    got: batch.base_sequence,
                })
            };
        }
        let last = batch.last_sequence();
        if let Some(r) = p
            .batches
            .iter()
            .find(|r| r.first_seq == batch.base_sequence && r.last_seq == last)
        {
            return SequenceCheck::Duplicate {
                base_offset: r.base_offset,
                last_offset: r.last_offset,
            };
        }
        let expected = p.batches.back().map_or(0, |r| wrap_add(r.last_seq, 1));
        if batch.base_sequence == expected {
            SequenceCheck::Append
        } else {
            SequenceCheck::Reject(SequenceError::OutOfOrderSequence {
                expected,
                got: batch.base_sequence,
            })
        }
    }

    /// Records an appended batch (also used to rebuild state from the log's batch
    /// headers on restart). Batches without a producer id are ignored.
    pub fn record(
        &mut self,
        batch: &BatchSequence,
        base_offset: u64,
        last_offset: u64,
        now_ms: i64,
    ) {
        if batch.producer_id < 0 || batch.base_sequence < 0 {
            return;
        }
        if !self.producers.contains_key(&batch.producer_id)
            && self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
        {
            self.evict_least_recently_active();
        }
        let p = self
            .producers
            .entry(batch.producer_id)
            .or_insert_with(|| Producer {
                epoch: batch.producer_epoch,
                batches: VecDeque::new(),
                last_active_ms: now_ms,
            });
        if batch.producer_epoch != p.epoch {
            p.epoch = batch.producer_epoch;
            p.batches.clear();
        }
        p.last_active_ms = now_ms;
        if p.batches.len() == BATCHES_REMEMBERED {
            p.batches.pop_front();
        }
        p.batches.push_back(Remembered {
            first_seq: batch.base_sequence,
            last_seq: batch.last_sequence(),
            base_offset,
            last_offset,
        });
    }

    /// Forgets producers idle for longer than `expiration_ms`. Returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers
            .retain(|_, p| now_ms.saturating_sub(p.last_active_ms) <= expiration_ms);
        before - self.producers.len()
    }

    /// Producers remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    fn evict_least_recently_active(&mut self) {
        if let Some(id) = self
            .producers
            .iter()
            .min_by_key(|(_, p)| p.last_active_ms)
            .map(|(id, _)| *id)
        {
            self.producers.remove(&id);
        }
    }
}
