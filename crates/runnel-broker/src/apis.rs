//! The API versions Runnel implements: the single source for ApiVersions, so the broker
//! advertises exactly what it dispatches.

use kafka_protocol::messages::ApiKey;

/// One implemented API: its key, the range advertised, and the lowest version actually
/// accepted (Produce advertises from 0 but accepts from 3, see below).
#[derive(Clone, Copy, Debug)]
pub struct Supported {
    /// The API.
    pub key: ApiKey,
    /// Lowest advertised version.
    pub min: i16,
    /// Highest advertised version.
    pub max: i16,
    /// Lowest version decoded and served.
    pub accept_min: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> Supported {
    Supported {
        key,
        min,
        max,
        accept_min: min,
    }
}

/// Everything Runnel serves, with version ranges from the protocol brief
/// (`shared/reference/kafka-protocol.md` §3). Minimums stay low because librdkafka before
/// 2.11.1 enables features only when a range *contains* one specific old version.
pub const SUPPORTED: &[Supported] = &[
    // Produce advertises v0 so that librdkafka < 2.11.1 compresses (KAFKA-18659), but
    // only v3+ (RecordBatch v2) is decoded: no client sends older versions to a broker
    // whose Produce range reaches 3 and Fetch range reaches 4.
    Supported {
        key: ApiKey::Produce,
        min: 0,
        max: 11,
        accept_min: 3,
    },
    // v13+ replace topic names with topic ids.
    api(ApiKey::Fetch, 4, 12),
    api(ApiKey::ListOffsets, 1, 7),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::InitProducerId, 0, 4),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    // Consumer groups (the classic protocol).
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::FindCoordinator, 0, 4),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
];

/// The entry for `key`, if Runnel implements it.
#[must_use]
pub fn supported(key: ApiKey) -> Option<&'static Supported> {
    SUPPORTED.iter().find(|s| s.key == key)
}

/// Whether `version` of `key` is decoded and served.
#[must_use]
pub fn accepts(key: ApiKey, version: i16) -> bool {
    supported(key).is_some_and(|s| (s.accept_min..=s.max).contains(&version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_range_is_within_what_the_codec_supports() {
        for s in SUPPORTED {
            let codec = s.key.valid_versions();
            assert!(s.min <= s.max, "{:?}: min > max breaks aiokafka", s.key);
            assert!(
                s.accept_min >= codec.min && s.max <= codec.max,
                "{:?} outside {codec:?}",
                s.key
            );
            assert!(s.accept_min >= s.min);
        }
    }

    #[test]
    fn librdkafka_feature_probes_find_their_versions() {
        // rdkafka_feature.c (< 2.11.1): MSGVER2 needs Produce 3 and Fetch 4; ZSTD needs
        // Produce 7 and Fetch 10; OFFSET_TIME needs ListOffsets 1; IDEMPOTENT_PRODUCER
        // needs InitProducerId 0; and compression needs Produce 0 (KAFKA-18659).
        let has = |k, v| supported(k).is_some_and(|s| (s.min..=s.max).contains(&v));
        assert!(has(ApiKey::Produce, 0) && has(ApiKey::Produce, 3) && has(ApiKey::Produce, 7));
        assert!(has(ApiKey::Fetch, 4) && has(ApiKey::Fetch, 10));
        assert!(has(ApiKey::ListOffsets, 1));
        assert!(has(ApiKey::InitProducerId, 0));
        assert!(!accepts(ApiKey::Produce, 2));
        assert!(accepts(ApiKey::Produce, 3));
    }
}
