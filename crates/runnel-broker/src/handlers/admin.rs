//! Admin APIs: CreateTopics (19), DeleteTopics (20), DeleteRecords (21),
//! DescribeConfigs (32), AlterConfigs (33) and CreatePartitions (37).
//!
//! A manual replica assignment (CreateTopics, CreatePartitions) is checked as Kafka's
//! controller checks it, on a cluster of one broker: every partition's replicas must be
//! exactly this node ([`NODE_ID`]), so the replication factor is 1 throughout.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, BrokerId, CreatePartitionsRequest,
    CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteRecordsRequest,
    DeleteRecordsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest,
    DescribeConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use runnel_core::topics::{check_user_topic, is_internal};
use runnel_log::config::PARTITIONS_MAX;
use runnel_log::{LogError, Offset, PartitionId, TopicConfig};

use crate::broker::{Broker, str_bytes, topic_id, topic_name};
use crate::config::NODE_ID;
use crate::errors;

/// DescribeConfigs resource types (Kafka's `ConfigResource.Type`).
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Config sources (Kafka's `DescribeConfigsResponse.ConfigSource`).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

fn message(e: &impl std::fmt::Display) -> Option<kafka_protocol::protocol::StrBytes> {
    Some(str_bytes(&e.to_string()))
}

impl Broker {
    pub(crate) async fn create_topics(
        &self,
        req: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let mut resp = CreateTopicsResponse::default();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut r = CreatableTopicResult::default();
            r.name = topic_name(&name);
            let overrides = settings(t.configs.iter().map(|c| (&c.name, &c.value)));
            let outcome = match self.check_new_topic(&t, &overrides) {
                Err((e, msg)) => Err((e, msg)),
                Ok(partitions) if req.validate_only => Ok(partitions),
                Ok(partitions) => {
                    let log = self.log.clone();
                    let (n, o) = (name.clone(), overrides.clone());
                    self.blocking(move || log.create_topic(&n, partitions as u32, &o))
                        .await
                        .map(|_| partitions)
                        .map_err(|e| (errors::log_error(&e), e.to_string()))
                }
            };
            match outcome {
                Err((e, msg)) => {
                    r.error_code = e.code();
                    r.error_message = message(&msg);
                    r.num_partitions = -1;
                    r.replication_factor = -1;
                }
                Ok(partitions) => {
                    r.topic_id = topic_id(&self.cluster_id, &name);
                    r.num_partitions = partitions;
                    r.replication_factor = 1;
                    if version >= 5 {
                        r.configs = Some(self.creatable_configs(&overrides));
                    }
                }
            }
            resp.topics.push(r);
        }
        resp
    }

    /// Checks a topic to create, in Kafka's order (name, existence, partitions and
    /// replicas, settings); returns its partition count: the one asked for (-1 for the
    /// default), or as many as a manual assignment lists.
    fn check_new_topic(
        &self,
        t: &CreatableTopic,
        overrides: &BTreeMap<String, String>,
    ) -> Result<i32, (ResponseError, String)> {
        let name = t.name.0.as_str();
        check_user_topic(name).map_err(|e| (errors::topic_rule_error(&e), e.to_string()))?;
        if self.log.topic(name).is_some() {
            return Err((
                ResponseError::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        let partitions = if !t.assignments.is_empty() {
            assigned_partitions(t)?
        } else if t.num_partitions == -1 {
            // kafkajs sends -1 for "the default" even at v3, so -1 means default always.
            self.config.default_partitions as i32
        } else {
            t.num_partitions
        };
        let replication = t.replication_factor;
        if partitions < 1 || partitions as u32 > PARTITIONS_MAX {
            return Err((
                ResponseError::InvalidPartitions,
                format!("partitions must be between 1 and {PARTITIONS_MAX}"),
            ));
        }
        if replication != -1 && replication != 1 {
            return Err((
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {replication} is larger than the number of brokers: 1"),
            ));
        }
        let mut c = self.log.config().topic_defaults.clone();
        for (k, v) in overrides {
            c.set(k, v)
                .map_err(|e| (ResponseError::InvalidConfig, e.to_string()))?;
        }
        Ok(partitions)
    }

    fn creatable_configs(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Vec<CreatableTopicConfigs> {
        let mut c = self.log.config().topic_defaults.clone();
        for (k, v) in overrides {
            let _ = c.set(k, v);
        }
        c.entries()
            .into_iter()
            .map(|(k, v)| {
                let mut e = CreatableTopicConfigs::default();
                e.name = str_bytes(k);
                e.value = Some(str_bytes(&v));
                e.config_source = if overrides.contains_key(k) {
                    SOURCE_TOPIC
                } else {
                    SOURCE_DEFAULT
                };
                e
            })
            .collect()
    }

    pub(crate) async fn delete_topics(&self, req: DeleteTopicsRequest) -> DeleteTopicsResponse {
        let mut resp = DeleteTopicsResponse::default();
        // v6 names topics in `topics` (name or id); older versions in `topic_names`.
        let mut targets: Vec<(Option<String>, uuid::Uuid)> = req
            .topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect();
        targets.extend(
            req.topics
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
        );
        for (name, id) in targets {
            let mut r = DeletableTopicResult::default();
            let name = name.or_else(|| {
                self.log
                    .topics()
                    .iter()
                    .find(|t| topic_id(&self.cluster_id, t.name()) == id)
                    .map(|t| t.name().to_string())
            });
            let Some(name) = name else {
                r.topic_id = id;
                r.error_code = ResponseError::UnknownTopicId.code();
                resp.responses.push(r);
                continue;
            };
            r.name = Some(topic_name(&name));
            r.topic_id = topic_id(&self.cluster_id, &name);
            if is_internal(&name) {
                r.error_code = ResponseError::InvalidTopicException.code();
                r.error_message = Some(str_bytes(&format!(
                    "{name} is internal: delete groups instead"
                )));
                resp.responses.push(r);
                continue;
            }
            match self.delete_topic(&name).await {
                Ok(()) => {}
                Err(e) => {
                    r.error_code = errors::log_error(&e).code();
                    r.error_message = message(&e);
                }
            }
            resp.responses.push(r);
        }
        resp
    }

    pub(crate) async fn delete_records(&self, req: DeleteRecordsRequest) -> DeleteRecordsResponse {
        let log = self.log.clone();
        self.blocking(move || {
            let mut resp = DeleteRecordsResponse::default();
            for t in req.topics {
                let name = t.name.0.to_string();
                let mut tr = DeleteRecordsTopicResult::default();
                tr.name = topic_name(&name);
                for p in t.partitions {
                    let mut r = DeleteRecordsPartitionResult::default();
                    r.partition_index = p.partition_index;
                    r.low_watermark = -1;
                    if is_internal(&name) {
                        // Only the broker trims its own topics: one call here would
                        // erase every group's committed offsets (Kafka refuses it too).
                        r.error_code = ResponseError::InvalidTopicException.code();
                        tr.partitions.push(r);
                        continue;
                    }
                    let Ok(index) = PartitionId::try_from(p.partition_index) else {
                        r.error_code = ResponseError::UnknownTopicOrPartition.code();
                        tr.partitions.push(r);
                        continue;
                    };
                    let result = log.partition(&name, index).and_then(|part| {
                        // -1 means "up to the high watermark" (Kafka's HIGH_WATERMARK).
                        let before = if p.offset == -1 {
                            part.high_watermark()
                        } else {
                            Offset(p.offset.max(0) as u64)
                        };
                        if p.offset < -1 {
                            return Err(LogError::OffsetOutOfRange {
                                requested: Offset(0),
                                log_start: part.log_start_offset(),
                                high_watermark: part.high_watermark(),
                            });
                        }
                        part.delete_records(before)
                    });
                    match result {
                        Ok(start) => r.low_watermark = start.0 as i64,
                        Err(e) => r.error_code = errors::log_error(&e).code(),
                    }
                    tr.partitions.push(r);
                }
                resp.topics.push(tr);
            }
            resp
        })
        .await
    }

    /// Deletes a topic with everything kept about it: its offsets in every group, its
    /// producers' state, its metrics. Shared by DeleteTopics and the HTTP API.
    pub async fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        let core = self.core.clone();
        let n = name.to_string();
        self.blocking(move || core.delete_topic(&n)).await
    }

    /// AlterConfigs (33): replaces a topic's overrides with the given set, as Kafka's
    /// (non-incremental) AlterConfigs does. Values are validated before anything
    /// changes; `validate_only` stops there.
    pub(crate) async fn alter_configs(&self, req: AlterConfigsRequest) -> AlterConfigsResponse {
        let mut resp = AlterConfigsResponse::default();
        for res in req.resources {
            let mut r = AlterConfigsResourceResponse::default();
            r.resource_type = res.resource_type;
            r.resource_name = res.resource_name.clone();
            let name = res.resource_name.to_string();
            let refusal = if res.resource_type != RESOURCE_TOPIC {
                Some((
                    ResponseError::InvalidRequest,
                    "only topic settings can be changed".to_string(),
                ))
            } else if is_internal(&name) {
                Some((
                    ResponseError::InvalidTopicException,
                    format!("{name} is internal"),
                ))
            } else if let Some(topic) = self.log.topic(&name) {
                let set = settings(res.configs.iter().map(|c| (&c.name, &c.value)));
                let remove: Vec<String> = topic
                    .overrides()
                    .into_keys()
                    .filter(|k| !set.contains_key(k))
                    .collect();
                let log = self.log.clone();
                let validate_only = req.validate_only;
                let outcome = self
                    .blocking(move || {
                        if validate_only {
                            let mut all = log.config().topic_defaults.clone();
                            set.iter()
                                .try_for_each(|(k, v)| all.set(k, v).map(|_| ()))
                                .map_err(LogError::from)
                        } else {
                            log.alter_topic_config(&name, &set, &remove).map(|_| ())
                        }
                    })
                    .await;
                outcome
                    .err()
                    .map(|e| (errors::log_error(&e), e.to_string()))
            } else {
                Some((
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic {name:?} does not exist"),
                ))
            };
            if let Some((e, message)) = refusal {
                r.error_code = e.code();
                r.error_message = Some(str_bytes(&message));
            }
            resp.responses.push(r);
        }
        resp
    }

    pub(crate) fn describe_configs(
        &self,
        req: DescribeConfigsRequest,
        _version: i16,
    ) -> DescribeConfigsResponse {
        let mut resp = DescribeConfigsResponse::default();
        for res in req.resources {
            let mut r = DescribeConfigsResult::default();
            r.resource_type = res.resource_type;
            r.resource_name = res.resource_name.clone();
            let keys: Option<Vec<String>> = res
                .configuration_keys
                .map(|k| k.iter().map(|s| s.to_string()).collect());
            let wanted = |k: &str| keys.as_ref().is_none_or(|ks| ks.iter().any(|x| x == k));
            let entries: Vec<(&'static str, String, i8)> = match res.resource_type {
                RESOURCE_TOPIC => match self.log.topic(res.resource_name.as_str()) {
                    Some(t) => {
                        let overrides = t.overrides();
                        t.config()
                            .entries()
                            .into_iter()
                            .map(|(k, v)| {
                                let source = if overrides.contains_key(k) {
                                    SOURCE_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                };
                                (k, v, source)
                            })
                            .collect()
                    }
                    None => {
                        r.error_code = ResponseError::UnknownTopicOrPartition.code();
                        r.error_message =
                            message(&format!("unknown topic {}", res.resource_name.as_str()));
                        Vec::new()
                    }
                },
                RESOURCE_BROKER => broker_entries(&self.log.config().topic_defaults),
                other => {
                    r.error_code = ResponseError::InvalidRequest.code();
                    r.error_message = message(&format!("unsupported resource type {other}"));
                    Vec::new()
                }
            };
            r.configs = entries
                .into_iter()
                .filter(|(k, ..)| wanted(k))
                .map(|(k, v, source)| {
                    let mut e = DescribeConfigsResourceResult::default();
                    e.name = str_bytes(k);
                    e.value = Some(str_bytes(&v));
                    e.config_source = source;
                    e
                })
                .collect();
            resp.results.push(r);
        }
        resp
    }

    pub(crate) async fn create_partitions(
        &self,
        req: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let mut resp = CreatePartitionsResponse::default();
        for t in req.topics {
            let name = t.name.0.to_string();
            let mut r = CreatePartitionsTopicResult::default();
            r.name = topic_name(&name);
            let check = match self.log.topic(&name) {
                None => Err((
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {name:?}"),
                )),
                Some(topic) if t.count <= topic.partition_count() as i32 => Err((
                    ResponseError::InvalidPartitions,
                    format!(
                        "topic has {} partitions; the new count must be larger",
                        topic.partition_count()
                    ),
                )),
                Some(_) if t.count as u32 > PARTITIONS_MAX => Err((
                    ResponseError::InvalidPartitions,
                    format!("at most {PARTITIONS_MAX} partitions"),
                )),
                Some(topic) => match &t.assignments {
                    None => Ok(()),
                    Some(assignments) => {
                        let added = t.count as usize - topic.partition_count() as usize;
                        check_added_assignments(added, assignments.iter().map(|a| &a.broker_ids))
                    }
                },
            };
            let outcome = match check {
                Err(e) => Err(e),
                Ok(()) if req.validate_only => Ok(()),
                Ok(()) => {
                    let log = self.log.clone();
                    let (n, count) = (name.clone(), t.count as u32);
                    self.blocking(move || log.add_partitions(&n, count))
                        .await
                        .map_err(|e| (errors::log_error(&e), e.to_string()))
                }
            };
            if let Err((e, msg)) = outcome {
                r.error_code = e.code();
                r.error_message = message(&msg);
            }
            resp.results.push(r);
        }
        resp
    }
}

/// The partition count of a topic created with a manual assignment, if Kafka would
/// take the assignment: the counts beside it must be -1 (INVALID_REQUEST), partition
/// indexes must be 0 to n-1, each once, and every replica list valid
/// ([`check_replicas`]) (INVALID_REPLICA_ASSIGNMENT).
fn assigned_partitions(t: &CreatableTopic) -> Result<i32, (ResponseError, String)> {
    if t.replication_factor != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "a manual partition assignment was given, but the replication factor is not -1".into(),
        ));
    }
    if t.num_partitions != -1 {
        return Err((
            ResponseError::InvalidRequest,
            "a manual partition assignment was given, but the partition count is not -1".into(),
        ));
    }
    let mut indexes = BTreeSet::new();
    for a in &t.assignments {
        if !indexes.insert(a.partition_index) {
            return Err(bad_assignment(format!(
                "partition {} is assigned more than once",
                a.partition_index
            )));
        }
        check_replicas(&a.broker_ids)?;
    }
    let n = indexes.len() as i32;
    // n distinct indexes, in order: they are 0..n-1 exactly when the first and last are.
    if indexes.first() != Some(&0) || indexes.last() != Some(&(n - 1)) {
        return Err(bad_assignment(
            "partition indexes must be 0 to n-1, each once".into(),
        ));
    }
    Ok(n)
}

/// The assignment of partitions added by CreatePartitions, if Kafka would take it: one
/// replica list per added partition, each valid ([`check_replicas`]).
fn check_added_assignments<'a>(
    added: usize,
    assignments: impl ExactSizeIterator<Item = &'a Vec<BrokerId>>,
) -> Result<(), (ResponseError, String)> {
    if assignments.len() != added {
        return Err(bad_assignment(format!(
            "{added} partition(s) are added, but {} assignment(s) were given",
            assignments.len()
        )));
    }
    assignments.into_iter().try_for_each(|a| check_replicas(a))
}

/// One partition's replicas, as Kafka's controller checks them: not empty, every
/// broker known (here, only [`NODE_ID`]), none twice. The replication factor of a
/// valid list is then always 1, so every partition's agrees.
fn check_replicas(brokers: &[BrokerId]) -> Result<(), (ResponseError, String)> {
    let mut sorted: Vec<i32> = brokers.iter().map(|b| b.0).collect();
    sorted.sort_unstable();
    if sorted.is_empty() {
        return Err(bad_assignment("an assignment lists no replicas".into()));
    }
    if let Some(other) = sorted.iter().find(|b| **b != NODE_ID) {
        return Err(bad_assignment(format!(
            "an assignment names broker {other}, but the only broker is {NODE_ID}"
        )));
    }
    if sorted.len() > 1 {
        return Err(bad_assignment(format!(
            "an assignment names broker {NODE_ID} more than once"
        )));
    }
    Ok(())
}

fn bad_assignment(message: String) -> (ResponseError, String) {
    (ResponseError::InvalidReplicaAssignment, message)
}

/// Broker-level settings as DescribeConfigs shows them: the topic defaults, under
/// Kafka's broker-level names where they differ.
fn broker_entries(defaults: &TopicConfig) -> Vec<(&'static str, String, i8)> {
    defaults
        .entries()
        .into_iter()
        .map(|(k, v)| {
            let name = match k {
                "retention.ms" => "log.retention.ms",
                "retention.bytes" => "log.retention.bytes",
                "segment.bytes" => "log.segment.bytes",
                "segment.ms" => "log.roll.ms",
                "max.message.bytes" => "message.max.bytes",
                "index.interval.bytes" => "log.index.interval.bytes",
                "cleanup.policy" => "log.cleanup.policy",
                other => other,
            };
            (name, v, SOURCE_STATIC_BROKER)
        })
        .collect()
}

/// Settings named in a request, without those whose value is null.
fn settings<'a>(
    entries: impl Iterator<Item = (&'a StrBytes, &'a Option<StrBytes>)>,
) -> BTreeMap<String, String> {
    entries
        .filter_map(|(name, value)| value.as_ref().map(|v| (name.to_string(), v.to_string())))
        .collect()
}
