//! The one place where storage and domain errors become Kafka error codes.

use kafka_protocol::ResponseError;
use runnel_core::ProduceError;
use runnel_core::topics::TopicRuleError;
use runnel_group::GroupError;
use runnel_log::{BatchError, CodecError, LogError};

/// The Kafka error for a refused produce (the core's produce rules).
#[must_use]
pub fn produce_error(e: &ProduceError) -> ResponseError {
    match e {
        ProduceError::InternalTopic { .. } => ResponseError::InvalidTopicException,
        ProduceError::UnknownTopic { .. } | ProduceError::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        ProduceError::InvalidRecord { .. } => ResponseError::InvalidRecord,
        ProduceError::Corrupt => ResponseError::CorruptMessage,
        ProduceError::UnsupportedCompression { .. } => ResponseError::UnsupportedCompressionType,
        ProduceError::Sequence(s) => {
            ResponseError::try_from_code(s.kafka_code()).unwrap_or(ResponseError::InvalidRecord)
        }
        ProduceError::Log(l) => log_error(l),
        ProduceError::Decompression(c) => codec_error(c),
        _ => ResponseError::UnknownServerError,
    }
}

/// The Kafka error for compressed records refused on produce. Records that decompress
/// past the limit are MESSAGE_TOO_LARGE, what Kafka answers for a batch over
/// `max.message.bytes`: the batch is too large, counted uncompressed. It is not
/// retriable (CORRUPT_MESSAGE is, so a client would resend the batch until its delivery
/// timeout), and the Java client answers it by splitting the batch. Records that do not
/// decode are CORRUPT_MESSAGE, as in Kafka's `LogValidator`.
fn codec_error(e: &CodecError) -> ResponseError {
    match e {
        CodecError::TooLarge { .. } => ResponseError::MessageTooLarge,
        _ => ResponseError::CorruptMessage,
    }
}

/// The Kafka error for a topic users may not create, write, alter or delete.
#[must_use]
pub fn topic_rule_error(_e: &TopicRuleError) -> ResponseError {
    // Both an invalid name and an internal topic are Kafka's INVALID_TOPIC_EXCEPTION.
    ResponseError::InvalidTopicException
}

/// The Kafka error for a storage error.
#[must_use]
pub fn log_error(e: &LogError) -> ResponseError {
    match e {
        LogError::Batch(b) => batch_error(b),
        LogError::Config(_) => ResponseError::InvalidConfig,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::UnknownTopic(_) | LogError::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        LogError::TopicExists(_) => ResponseError::TopicAlreadyExists,
        LogError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        LogError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
        // The partition cannot take writes (a failed fsync) or its data is damaged:
        // Kafka answers KAFKA_STORAGE_ERROR for a log directory that failed.
        LogError::Poisoned { .. } | LogError::Corrupt { .. } | LogError::Io { .. } => {
            ResponseError::KafkaStorageError
        }
        _ => ResponseError::UnknownServerError,
    }
}

/// The Kafka error for a commit (or an offset deletion) whose append to
/// `__consumer_offsets` failed, as Kafka's group coordinator maps it: a storage failure
/// is NOT_COORDINATOR (clients look the coordinator up again and retry, where
/// KAFKA_STORAGE_ERROR on a commit is an unexpected error to the Java client), an
/// oversized batch INVALID_COMMIT_OFFSET_SIZE, a missing offsets partition
/// COORDINATOR_NOT_AVAILABLE.
#[must_use]
pub fn commit_error(e: &LogError) -> ResponseError {
    match log_error(e) {
        ResponseError::KafkaStorageError => ResponseError::NotCoordinator,
        ResponseError::MessageTooLarge
        | ResponseError::RecordListTooLarge
        | ResponseError::InvalidFetchSize => ResponseError::InvalidCommitOffsetSize,
        ResponseError::UnknownTopicOrPartition => ResponseError::CoordinatorNotAvailable,
        other => other,
    }
}

/// The Kafka error for a rejected batch (Kafka's `LogValidator` choices).
#[must_use]
pub fn batch_error(e: &BatchError) -> ResponseError {
    match e {
        BatchError::TooLarge { .. } => ResponseError::MessageTooLarge,
        BatchError::Truncated { .. } | BatchError::BadLength { .. } | BatchError::BadCrc { .. } => {
            ResponseError::CorruptMessage
        }
        BatchError::BadMagic { .. }
        | BatchError::TrailingBytes { .. }
        | BatchError::BadRecordCount { .. }
        | BatchError::CountMismatch { .. } => ResponseError::InvalidRecord,
        _ => ResponseError::InvalidRecord,
    }
}

/// The Kafka error for a refusal of the group coordinator.
#[must_use]
pub fn group_error(e: GroupError) -> ResponseError {
    match e {
        GroupError::InvalidGroupId => ResponseError::InvalidGroupId,
        GroupError::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        GroupError::UnknownMemberId => ResponseError::UnknownMemberId,
        GroupError::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        GroupError::MemberIdRequired => ResponseError::MemberIdRequired,
        GroupError::FencedInstanceId => ResponseError::FencedInstanceId,
        GroupError::IllegalGeneration => ResponseError::IllegalGeneration,
        GroupError::RebalanceInProgress => ResponseError::RebalanceInProgress,
        GroupError::NonEmptyGroup => ResponseError::NonEmptyGroup,
        GroupError::GroupIdNotFound => ResponseError::GroupIdNotFound,
        GroupError::GroupMaxSizeReached => ResponseError::GroupMaxSizeReached,
        GroupError::CoordinatorNotAvailable => ResponseError::CoordinatorNotAvailable,
        _ => ResponseError::UnknownServerError,
    }
}

/// The error code of an optional group error (0 for none).
#[must_use]
pub fn group_code(e: Option<GroupError>) -> i16 {
    e.map_or(0, |e| group_error(e).code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_errors_map_to_the_codes_clients_expect() {
        let pairs = [
            (GroupError::IllegalGeneration, 22),
            (GroupError::InconsistentGroupProtocol, 23),
            (GroupError::InvalidGroupId, 24),
            (GroupError::UnknownMemberId, 25),
            (GroupError::InvalidSessionTimeout, 26),
            (GroupError::RebalanceInProgress, 27),
            (GroupError::NonEmptyGroup, 68),
            (GroupError::GroupIdNotFound, 69),
            (GroupError::MemberIdRequired, 79),
            (GroupError::GroupMaxSizeReached, 81),
            (GroupError::FencedInstanceId, 82),
        ];
        for (e, code) in pairs {
            assert_eq!(group_error(e).code(), code, "{e:?}");
        }
        assert_eq!(group_code(None), 0);
    }

    #[test]
    fn produce_refusals_map_to_the_codes_clients_expect() {
        use runnel_core::producer_state::SequenceError;
        let pairs = [
            (ProduceError::InternalTopic { topic: "t".into() }, 17),
            (ProduceError::UnknownTopic { topic: "t".into() }, 3),
            (ProduceError::InvalidRecord { reason: "" }, 87),
            (ProduceError::Corrupt, 2),
            (ProduceError::UnsupportedCompression { codec: 5 }, 76),
            (
                ProduceError::Sequence(SequenceError::OutOfOrderSequence {
                    expected: 1,
                    got: 3,
                }),
                45,
            ),
            (
                ProduceError::Sequence(SequenceError::UnknownProducerId { producer_id: 1 }),
                59,
            ),
        ];
        for (e, code) in pairs {
            assert_eq!(produce_error(&e).code(), code, "{e:?}");
        }
    }

    #[test]
    fn storage_errors_map_to_the_codes_clients_expect() {
        assert_eq!(log_error(&LogError::UnknownTopic("t".into())).code(), 3);
        assert_eq!(
            log_error(&LogError::Batch(BatchError::BadCrc {
                stored: 1,
                computed: 2
            }))
            .code(),
            2
        );
        assert_eq!(
            log_error(&LogError::Batch(BatchError::TooLarge {
                bytes: 2,
                max_bytes: 1
            }))
            .code(),
            10
        );
        assert_eq!(
            log_error(&LogError::Batch(BatchError::BadMagic { magic: 1 })).code(),
            87
        );
        assert_eq!(log_error(&LogError::TopicExists("t".into())).code(), 36);
        assert_eq!(
            log_error(&LogError::InvalidTopicName {
                name: "a b".into(),
                reason: ""
            })
            .code(),
            17
        );
    }
}
