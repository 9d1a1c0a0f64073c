//! Metadata (3): brokers, controller, cluster id, topics; auto-creates topics.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse};
use runnel_core::topics::{check_user_topic, is_internal};
use runnel_log::{LogError, Topic};
use tracing::info;

use crate::broker::{Broker, node_id, str_bytes, topic_id, topic_name};
use crate::errors;

impl Broker {
    pub(crate) async fn metadata(&self, req: MetadataRequest, version: i16) -> MetadataResponse {
        let mut resp = MetadataResponse::default();
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = node_id();
        broker.host = str_bytes(&self.node.host);
        broker.port = self.node.port;
        resp.brokers = vec![broker];
        resp.cluster_id = Some(str_bytes(&self.cluster_id));
        resp.controller_id = node_id();
        if (8..=10).contains(&version) {
            // Not requested unless asked; Kafka's "not computed" marker is i32::MIN,
            // the codec's default. Nothing to set.
        }
        // v0: an empty list means all topics. v1+: null means all, [] means none.
        let wanted: Option<Vec<String>> = match req.topics {
            None => None,
            Some(t) if t.is_empty() && version == 0 => None,
            Some(t) => Some(
                t.into_iter()
                    .map(|t| t.name.map(|n| n.0.to_string()).unwrap_or_default())
                    .collect(),
            ),
        };
        // Metadata v0-3 have no flag: auto-creation applies, as in Kafka.
        let allow_create =
            self.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
        resp.topics = match wanted {
            None => self
                .log
                .topics()
                .iter()
                .map(|t| self.topic_metadata(t))
                .collect(),
            Some(names) => {
                let mut out = Vec::with_capacity(names.len());
                for name in names {
                    out.push(self.named_topic_metadata(&name, allow_create).await);
                }
                out
            }
        };
        resp
    }

    async fn named_topic_metadata(&self, name: &str, allow_create: bool) -> MetadataResponseTopic {
        if let Some(t) = self.log.topic(name) {
            return self.topic_metadata(&t);
        }
        match check_user_topic(name) {
            // Kafka answers an invalid name so, whether or not it may create topics.
            Err(e @ runnel_core::topics::TopicRuleError::InvalidName { .. }) => {
                return error_topic(name, errors::topic_rule_error(&e));
            }
            // An internal topic is never auto-created: it appears on first use.
            Err(_) => return error_topic(name, ResponseError::UnknownTopicOrPartition),
            Ok(()) if !allow_create => {
                return error_topic(name, ResponseError::UnknownTopicOrPartition);
            }
            Ok(()) => {}
        }
        match self.auto_create(name).await {
            Ok(t) => self.topic_metadata(&t),
            Err(e) => error_topic(name, errors::log_error(&e)),
        }
    }

    /// Creates a topic with the default partition count. A concurrent creation of the
    /// same topic is not an error: the winner's topic is returned.
    pub(crate) async fn auto_create(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        let log = self.log.clone();
        let partitions = self.config.default_partitions;
        let owned = name.to_string();
        let created = self
            .blocking(move || log.create_topic(&owned, partitions, &BTreeMap::new()))
            .await;
        match created {
            Ok(t) => {
                info!(topic = name, partitions, "auto-created topic");
                Ok(t)
            }
            Err(LogError::TopicExists(_)) => self
                .log
                .topic(name)
                .ok_or_else(|| LogError::UnknownTopic(name.into())),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn topic_metadata(&self, t: &Topic) -> MetadataResponseTopic {
        let mut topic = MetadataResponseTopic::default();
        topic.name = Some(topic_name(t.name()));
        topic.topic_id = topic_id(&self.cluster_id, t.name());
        topic.is_internal = is_internal(t.name());
        topic.partitions = (0..t.partition_count())
            .map(|p| {
                let mut part = MetadataResponsePartition::default();
                part.partition_index = p as i32;
                part.leader_id = node_id();
                part.leader_epoch = 0;
                part.replica_nodes = vec![node_id()];
                part.isr_nodes = vec![node_id()];
                part
            })
            .collect();
        topic
    }
}

fn error_topic(name: &str, e: ResponseError) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default();
    t.name = Some(topic_name(name));
    t.error_code = e.code();
    t
}
