//! Newtypes for the quantities a log mixes up easily: a record's number, a byte in a
//! file, a partition's index.

use std::fmt;

/// The number of a record in a partition. Offsets start at 0 and only grow.
///
/// Kafka carries offsets as `int64` on the wire; inside the log they are never negative,
/// so the broker converts (and rejects negatives) at its edge.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset `n` records later.
    #[must_use]
    pub fn plus(self, n: u64) -> Offset {
        Offset(self.0 + n)
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A byte position inside one segment file.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(pub u64);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The index of a partition within its topic, from 0.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(pub u32);

/// A partition index that names no partition: negative.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct NegativePartition(pub i32);

impl fmt::Display for NegativePartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "partition {} is negative", self.0)
    }
}

impl std::error::Error for NegativePartition {}

/// Partition indexes arrive as signed 32-bit integers (Kafka's wire type); converted
/// once, at the edge, and never clamped: a negative index names no partition.
impl TryFrom<i32> for PartitionId {
    type Error = NegativePartition;

    fn try_from(index: i32) -> Result<PartitionId, NegativePartition> {
        u32::try_from(index)
            .map(PartitionId)
            .map_err(|_| NegativePartition(index))
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Milliseconds since the Unix epoch, as Kafka timestamps are.
pub type TimestampMs = i64;
