//! [`Core`]: the state every front end shares, and the two ways to append.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use runnel_log::batch::BatchHeader;
use runnel_log::{AppendTicket, Log, LogError, Partition, PartitionId};

use crate::counters::{TopicCounters, TopicMetrics, records_in_batches};
use crate::encode::{NewRecord, encode_batch};
use crate::groups::Groups;
use crate::offsets::OffsetStore;
use crate::partitioner::partition_for_key;
use crate::produce::{PRODUCE_VERSION_LATEST, ProduceError, append_checked};
use crate::producers::ProducerRegistry;
use crate::topics::is_internal;

/// The log, the consumer groups with their committed offsets, the idempotent producers'
/// state and the per-topic counters: what the broker, the HTTP API and the embedded
/// transport all work on. One per process, shared as `Arc<Core>`.
#[derive(Debug)]
pub struct Core {
    /// The storage engine; topics and partitions are read through it directly.
    log: Arc<Log>,
    /// The group coordinator and committed offsets. An `Arc` because the coordinator's
    /// ticker task holds it too.
    groups: Arc<Groups>,
    /// Producer ids and each partition's idempotent sequences: appends check them.
    producers: ProducerRegistry,
    /// Bytes and records in (counted by [`Core::append`]) and out, per topic.
    topic_metrics: TopicMetrics,
    flows: crate::flows::Flows,
    /// Spreads keyless records without a partition over the partitions.
    round_robin: AtomicU32,
}

impl Core {
    /// The core over `log`: loads committed offsets (`__consumer_offsets`), then starts
    /// the group coordinator with `group_config`; `seed` makes member ids unpredictable.
    /// Producer ids continue after those handed out before, from `<data>/producer-ids`.
    pub fn new(
        log: Arc<Log>,
        group_config: runnel_group::Config,
        seed: u64,
    ) -> Result<Arc<Core>, LogError> {
        let offsets = OffsetStore::open(log.clone())?;
        let groups = Arc::new(Groups::new(group_config, seed, offsets));
        let producers = ProducerRegistry::open(&log.config().data_dir);
        Ok(Arc::new(Core {
            log,
            groups,
            producers,
            topic_metrics: TopicMetrics::default(),
            flows: crate::flows::Flows::default(),
            round_robin: AtomicU32::new(0),
        }))
    }

    /// The log.
    #[must_use]
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// The group coordinator (run its ticker with [`Groups::run_ticker`]).
    #[must_use]
    pub fn groups(&self) -> &Arc<Groups> {
        &self.groups
    }

    /// Committed offsets.
    #[must_use]
    pub fn offsets(&self) -> &OffsetStore {
        &self.groups.offsets
    }

    /// Producer ids and idempotent producer state.
    #[must_use]
    pub fn producers(&self) -> &ProducerRegistry {
        &self.producers
    }

    /// Bytes and records in and out, per topic.
    #[must_use]
    pub fn topic_metrics(&self) -> &TopicMetrics {
        &self.topic_metrics
    }

    /// Which clients wrote to and read from which topics recently (the front ends that
    /// know client ids record them).
    pub fn flows(&self) -> &crate::flows::Flows {
        &self.flows
    }

    /// The counters of `topic`, created on first use.
    pub fn topic_counters(&self, topic: &str) -> Arc<TopicCounters> {
        self.topic_metrics.topic(topic)
    }

    /// The partition a client may append to: not of an internal topic, and existing.
    pub fn partition_for_append(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Partition>, ProduceError> {
        if is_internal(topic) {
            return Err(ProduceError::InternalTopic {
                topic: topic.to_string(),
            });
        }
        self.log
            .partition(topic, PartitionId(partition))
            .map_err(|e| match e {
                LogError::UnknownTopic(_) => ProduceError::UnknownTopic {
                    topic: topic.to_string(),
                },
                LogError::UnknownPartition { .. } => ProduceError::UnknownPartition {
                    topic: topic.to_string(),
                    partition,
                },
                e => ProduceError::Log(e),
            })
    }

    /// Appends a batch as a client sent it, with every produce rule: not to an internal
    /// topic, Kafka's header rules for `produce_version`, and idempotent sequences (a
    /// retry of one of a producer's last batches gets its original offsets). A batch in
    /// another codec than the one the topic's `compression.type` names is stored
    /// re-compressed ([`crate::produce::prepare_for_topic`]). Blocks for the write, not
    /// for durability: wait with `Partition::wait_durable` on the ticket. Counts the
    /// batch's bytes (as sent) and records in.
    pub fn append(
        &self,
        partition: &Arc<Partition>,
        batch: &[u8],
        produce_version: i16,
    ) -> Result<AppendTicket, ProduceError> {
        if is_internal(partition.topic()) {
            return Err(ProduceError::InternalTopic {
                topic: partition.topic().to_string(),
            });
        }
        let idempotent = BatchHeader::parse(batch).is_ok_and(|h| h.producer_id() >= 0);
        let state = idempotent.then(|| self.producers.for_partition(partition));
        // A deleted topic has no settings; the append refuses it anyway.
        let (max_message_bytes, codec) = self.log.topic(partition.topic()).map_or(
            (runnel_log::config::MAX_MESSAGE_BYTES_DEFAULT, None),
            |t| {
                let c = t.config();
                (c.max_message_bytes, c.compression_type.codec())
            },
        );
        let ticket = append_checked(
            partition,
            batch,
            produce_version,
            max_message_bytes,
            codec,
            state,
        )?;
        let counters = self.topic_metrics.topic(partition.topic());
        counters
            .bytes_in
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        counters
            .records_in
            .fetch_add(records_in_batches(batch), Ordering::Relaxed);
        Ok(ticket)
    }

    /// Produces `records` to `topic` and returns each record's `(partition, offset)`, in
    /// order. A record's partition is the one given, else its key's (Kafka's murmur2,
    /// [`partition_for_key`]), else the next in round robin. Each partition gets one
    /// uncompressed batch; this returns once every batch is durable under the topic's
    /// policy. Blocks.
    ///
    /// Partitions are appended one after another: if one refuses, the batches appended
    /// before it stay, as with a Kafka Produce that fails on some partitions.
    pub fn produce(
        &self,
        topic: &str,
        records: Vec<(Option<u32>, NewRecord)>,
    ) -> Result<Vec<(u32, i64)>, ProduceError> {
        if is_internal(topic) {
            return Err(ProduceError::InternalTopic {
                topic: topic.to_string(),
            });
        }
        let t = self
            .log
            .topic(topic)
            .ok_or_else(|| ProduceError::UnknownTopic {
                topic: topic.to_string(),
            })?;
        let n = t.partition_count();
        let mut by_partition: BTreeMap<u32, (Vec<usize>, Vec<NewRecord>)> = BTreeMap::new();
        let total = records.len();
        for (i, (partition, r)) in records.into_iter().enumerate() {
            let p = match (partition, &r.key) {
                (Some(p), _) if p < n => p,
                (Some(p), _) => {
                    return Err(ProduceError::UnknownPartition {
                        topic: topic.to_string(),
                        partition: p,
                    });
                }
                (None, Some(k)) => partition_for_key(k, n),
                (None, None) => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
            };
            let entry = by_partition.entry(p).or_default();
            entry.0.push(i);
            entry.1.push(r);
        }
        let now = crate::now_ms();
        let mut appended = Vec::with_capacity(by_partition.len());
        for (p, (indexes, batch_records)) in by_partition {
            let part =
                t.partition(PartitionId(p))
                    .ok_or_else(|| ProduceError::UnknownPartition {
                        topic: topic.to_string(),
                        partition: p,
                    })?;
            let batch = encode_batch(&batch_records, now);
            let ticket = self.append(&part, &batch, PRODUCE_VERSION_LATEST)?;
            appended.push((part, ticket, indexes));
        }
        let mut out = vec![(0, 0); total];
        // Every batch is written before the first wait, so their fsyncs can group.
        for (part, ticket, indexes) in appended {
            let info = part.wait_durable(ticket)?;
            for (k, i) in indexes.into_iter().enumerate() {
                out[i] = (part.id().0, info.base_offset.0 as i64 + k as i64);
            }
        }
        Ok(out)
    }

    /// Deletes a topic with everything kept about it: its offsets in every group, its
    /// producers' state, its counters. Blocks.
    pub fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        self.log.delete_topic(name)?;
        self.groups.offsets.delete_topic(name)?;
        self.producers.forget_topic(name);
        self.topic_metrics.forget_topic(name);
        self.flows.forget_topic(name);
        Ok(())
    }
}
