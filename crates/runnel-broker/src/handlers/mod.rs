//! One module per API family. Each adds methods to [`crate::broker::Broker`].

pub mod admin;
pub mod commits;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod offsets;
pub mod produce;
pub mod producers;

use kafka_protocol::ResponseError;

/// Leader-epoch fencing for Fetch v9+, ListOffsets v4+ and OffsetForLeaderEpoch: a
/// single node keeps epoch 0 forever, so -1 (no check) and 0 pass, a higher epoch is
/// unknown to us, and a lower one cannot happen.
pub(crate) fn check_leader_epoch(current_leader_epoch: i32) -> Result<(), ResponseError> {
    match current_leader_epoch {
        -1 | 0 => Ok(()),
        e if e > 0 => Err(ResponseError::UnknownLeaderEpoch),
        _ => Err(ResponseError::FencedLeaderEpoch),
    }
}
