//! Committed offsets: OffsetCommit (8), OffsetFetch (9) and OffsetDelete (47). The group
//! coordinator decides whether a commit may proceed; `runnel_core::offsets` keeps it.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse,
};
use runnel_group::{GroupError, GroupState, MemberRef};
use runnel_log::PartitionId;

use crate::broker::{Broker, str_bytes, topic_name};
use crate::errors::{commit_error, group_error};
use runnel_core::offsets::{COMMIT_METADATA_BYTES_MAX, Committed};

/// Each partition's refusal, if any.
type PartitionAnswers = Vec<(i32, Option<ResponseError>)>;

/// One group's requested partitions (`None`: all it committed), by topic.
type Wanted = Option<Vec<(String, Vec<i32>)>>;

/// A group's committed offsets as OffsetFetch reports them, by topic.
type Fetched = Vec<(String, Vec<(i32, Option<Committed>)>)>;

impl Broker {
    pub(crate) async fn offset_commit(&self, req: OffsetCommitRequest) -> OffsetCommitResponse {
        let group = req.group_id.0.to_string();
        let member = MemberRef {
            group_id: group.clone(),
            member_id: req.member_id.to_string(),
            group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
            generation_id: req.generation_id_or_member_epoch,
        };
        let allowed = self.groups.with(|c, now, _| c.commit_allowed(now, &member));
        let now_ms = crate::broker::now_ms();
        // Each partition's answer, and the commits to write.
        let mut answers: Vec<(String, PartitionAnswers)> = Vec::new();
        let mut writes = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut parts = Vec::new();
            for p in t.partitions {
                let error = match &allowed {
                    Err(e) => Some(group_error(*e)),
                    Ok(()) if !self.partition_exists(&name, p.partition_index) => {
                        Some(ResponseError::UnknownTopicOrPartition)
                    }
                    Ok(()) => {
                        let metadata = p
                            .committed_metadata
                            .as_ref()
                            .map(|m| m.to_string())
                            .unwrap_or_default();
                        if metadata.len() > COMMIT_METADATA_BYTES_MAX {
                            Some(ResponseError::OffsetMetadataTooLarge)
                        } else {
                            let c = Committed {
                                offset: p.committed_offset,
                                leader_epoch: p.committed_leader_epoch,
                                metadata,
                                commit_ms: now_ms,
                            };
                            writes.push(((name.clone(), p.partition_index), Some(c)));
                            None
                        }
                    }
                };
                parts.push((p.partition_index, error));
            }
            answers.push((name, parts));
        }
        // Persisted before the answer: a commit acknowledged is a commit kept.
        let groups = self.groups.clone();
        let written = self
            .blocking(move || groups.offsets.write(&group, &writes))
            .await;
        let mut resp = OffsetCommitResponse::default();
        for (name, parts) in answers {
            let mut t = OffsetCommitResponseTopic::default();
            t.name = topic_name(&name);
            for (index, error) in parts {
                let mut p = OffsetCommitResponsePartition::default();
                p.partition_index = index;
                p.error_code = match (&written, error) {
                    (_, Some(refused)) => refused.code(),
                    (Err(e), None) => commit_error(e).code(),
                    (Ok(()), None) => 0,
                };
                t.partitions.push(p);
            }
            resp.topics.push(t);
        }
        resp
    }

    fn partition_exists(&self, topic: &str, partition: i32) -> bool {
        partition >= 0
            && self
                .log
                .partition(topic, PartitionId(partition as u32))
                .is_ok()
    }

    pub(crate) fn offset_fetch(
        &self,
        req: OffsetFetchRequest,
        version: i16,
    ) -> OffsetFetchResponse {
        let mut resp = OffsetFetchResponse::default();
        if version >= 8 {
            for g in req.groups {
                let wanted: Wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes))
                        .collect()
                });
                let mut out = OffsetFetchResponseGroup::default();
                match self.fetch_committed(&g.group_id.0, wanted) {
                    Err(e) => out.error_code = group_error(e).code(),
                    Ok(topics) => {
                        out.topics = topics
                            .into_iter()
                            .map(|(name, parts)| {
                                let mut t = OffsetFetchResponseTopics::default();
                                t.name = topic_name(&name);
                                t.partitions = parts
                                    .into_iter()
                                    .map(|(index, c)| {
                                        let mut p = OffsetFetchResponsePartitions::default();
                                        p.partition_index = index;
                                        (
                                            p.committed_offset,
                                            p.committed_leader_epoch,
                                            p.metadata,
                                        ) = committed_fields(c);
                                        p
                                    })
                                    .collect();
                                t
                            })
                            .collect();
                    }
                }
                out.group_id = g.group_id;
                resp.groups.push(out);
            }
            return resp;
        }
        let wanted: Wanted = req.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes))
                .collect()
        });
        match self.fetch_committed(&req.group_id.0, wanted) {
            // The top-level error exists from v2; before it, per partition.
            Err(e) => resp.error_code = group_error(e).code(),
            Ok(topics) => {
                resp.topics = topics
                    .into_iter()
                    .map(|(name, parts)| {
                        let mut t = OffsetFetchResponseTopic::default();
                        t.name = topic_name(&name);
                        t.partitions = parts
                            .into_iter()
                            .map(|(index, c)| {
                                let mut p = OffsetFetchResponsePartition::default();
                                p.partition_index = index;
                                (p.committed_offset, p.committed_leader_epoch, p.metadata) =
                                    committed_fields(c);
                                p
                            })
                            .collect();
                        t
                    })
                    .collect();
            }
        }
        resp
    }

    /// What a group committed for the wanted partitions (all it has, for `None`).
    fn fetch_committed(&self, group: &str, wanted: Wanted) -> Result<Fetched, GroupError> {
        if group.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let store = &self.groups.offsets;
        Ok(match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(name, parts)| {
                    let got = parts
                        .into_iter()
                        .map(|p| (p, store.get(group, &name, p)))
                        .collect();
                    (name, got)
                })
                .collect(),
            None => {
                let mut by_topic: Fetched = Vec::new();
                for ((topic, p), c) in store.group(group) {
                    match by_topic.last_mut() {
                        Some((t, parts)) if *t == topic => parts.push((p, Some(c))),
                        _ => by_topic.push((topic, vec![(p, Some(c))])),
                    }
                }
                by_topic
            }
        })
    }

    pub(crate) async fn offset_delete(&self, req: OffsetDeleteRequest) -> OffsetDeleteResponse {
        let group = req.group_id.0.to_string();
        let mut resp = OffsetDeleteResponse::default();
        let state = self.groups.read(|c| c.state(&group));
        let group_error = match state {
            _ if group.is_empty() => Some(ResponseError::InvalidGroupId),
            None => Some(ResponseError::GroupIdNotFound),
            Some(_) => None,
        };
        if let Some(e) = group_error {
            resp.error_code = e.code();
            return resp;
        }
        // As in Kafka, offsets of topics the members subscribe to stay. Subscriptions are
        // read from `consumer` members' metadata; a group of another protocol type, or
        // one whose metadata does not decode, counts as subscribed to every topic.
        let subscribed: Option<std::collections::BTreeSet<String>> =
            if state == Some(GroupState::Empty) {
                Some(std::collections::BTreeSet::new())
            } else {
                self.groups
                    .read(|c| c.describe(&group))
                    .filter(|d| d.protocol_type == "consumer")
                    .and_then(|d| {
                        d.members
                            .iter()
                            .map(|m| runnel_core::consumer_protocol::subscribed_topics(&m.metadata))
                            .collect::<Option<Vec<_>>>()
                    })
                    .map(|all| all.into_iter().flatten().collect())
            };
        let mut deletes = Vec::new();
        for t in req.topics {
            let name = t.name.0.to_string();
            let busy = subscribed.as_ref().is_none_or(|s| s.contains(&name));
            let mut out = OffsetDeleteResponseTopic::default();
            out.name = t.name;
            for p in t.partitions {
                let mut r = OffsetDeleteResponsePartition::default();
                r.partition_index = p.partition_index;
                if busy {
                    r.error_code = ResponseError::GroupSubscribedToTopic.code();
                } else if !self.partition_exists(&name, p.partition_index) {
                    r.error_code = ResponseError::UnknownTopicOrPartition.code();
                } else {
                    deletes.push(((name.clone(), p.partition_index), None));
                }
                out.partitions.push(r);
            }
            resp.topics.push(out);
        }
        let groups = self.groups.clone();
        if let Err(e) = self
            .blocking(move || groups.offsets.write(&group, &deletes))
            .await
        {
            resp.error_code = commit_error(&e).code();
        }
        resp
    }
}

/// Offset, leader epoch and metadata as OffsetFetch reports them; a partition without a
/// commit gets offset -1 and empty metadata, without an error.
fn committed_fields(
    c: Option<Committed>,
) -> (i64, i32, Option<kafka_protocol::protocol::StrBytes>) {
    match c {
        Some(c) => (c.offset, c.leader_epoch, Some(str_bytes(&c.metadata))),
        None => (-1, -1, Some(str_bytes(""))),
    }
}
