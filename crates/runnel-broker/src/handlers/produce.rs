//! Produce (0): validate each partition's batch, check idempotent sequences, append.
//!
//! A Produce runs in two steps. `Broker::produce` validates and appends: when it
//! returns, every batch has its offsets and the log order is fixed. The returned
//! `ProduceInFlight` then waits until those batches are durable and builds the
//! response. The connection loop starts the next request between the two steps, so the
//! fsyncs of consecutive requests from one producer overlap (see `server.rs`).
//!
//! Partitions of one request are appended in parallel on the blocking pool. The response
//! lists every requested partition. With `acks=0` nothing is sent back: the client reads
//! no response, and sending one would break correlation.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use runnel_log::batch::BatchHeader;
use runnel_log::{AppendInfo, AppendTicket, Offset, Partition, PartitionId};

use crate::broker::{Broker, topic_name};
use crate::errors;
use crate::handlers::producers::{SharedProducers, now_ms};
use crate::offset_store::OFFSETS_TOPIC;
use crate::producer_state::{BatchSequence, SequenceCheck};

/// Codec ids Kafka defines (none, gzip, snappy, lz4, zstd); 5-7 are invalid.
const CODEC_MAX: u8 = 4;
const CODEC_ZSTD: u8 = 4;
/// zstd needs Produce v7 (KIP-110): older clients could not read it back.
const ZSTD_PRODUCE_VERSION_MIN: i16 = 7;

/// A Produce whose batches are written and ordered, waiting to be durable.
#[derive(Debug)]
#[must_use = "the response is ready only after `finish`"]
pub(crate) struct ProduceInFlight {
    acks: i16,
    response: ProduceResponse,
    /// Partitions still waiting: where their answer goes, and what they wait for.
    waits: Vec<DurableWait>,
}

/// One partition's wait for durability, already under way: it starts as soon as the
/// batch is appended, so the fsyncs of consecutive requests on other partitions overlap
/// instead of queueing behind the answers before them.
#[derive(Debug)]
struct DurableWait {
    topic: usize,
    partition: usize,
    index: i32,
    durable: Durable,
}

#[derive(Debug)]
enum Durable {
    /// Nothing to wait for (`interval` or `never` durability).
    Now(AppendInfo),
    /// The fsync wait, on the blocking pool.
    Pending(tokio::task::JoinHandle<Result<AppendInfo, runnel_log::LogError>>),
}

impl DurableWait {
    fn start(topic: usize, partition: usize, log: Arc<Partition>, ticket: AppendTicket) -> Self {
        let index = log.id().0 as i32;
        let durable = if ticket.needs_sync() {
            Durable::Pending(tokio::task::spawn_blocking(move || {
                log.wait_durable(ticket)
            }))
        } else {
            Durable::Now(ticket.info())
        };
        DurableWait {
            topic,
            partition,
            index,
            durable,
        }
    }
}

impl ProduceInFlight {
    /// Waits until every appended batch is durable, then builds the response (none for
    /// `acks=0`).
    pub(crate) async fn finish(self) -> Option<ProduceResponse> {
        let ProduceInFlight {
            acks,
            mut response,
            waits,
        } = self;
        for w in waits {
            let result = match w.durable {
                Durable::Now(info) => Ok(info),
                Durable::Pending(join) => match join.await {
                    Ok(r) => r,
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                },
            };
            response.responses[w.topic].partition_responses[w.partition] = match result {
                Ok(info) => ok_response(w.index, info),
                Err(e) => error_response(w.index, errors::log_error(&e)),
            };
        }
        (acks != 0).then_some(response)
    }
}

impl Broker {
    /// Validates and appends every batch of the request, in parallel across partitions.
    /// When this returns, the batches have their offsets; durability is `finish`'s job.
    pub(crate) async fn produce(&self, req: ProduceRequest, version: i16) -> ProduceInFlight {
        let acks = req.acks;
        let valid_acks = matches!(acks, -1..=1);
        let transactional = req
            .transactional_id
            .as_ref()
            .is_some_and(|t| !t.0.is_empty());
        let mut jobs = Vec::new();
        for topic in req.topic_data {
            let name = topic.name.0.to_string();
            let mut handles = Vec::new();
            for pd in topic.partition_data {
                let index = pd.index;
                let early = if !valid_acks {
                    Some(ResponseError::InvalidRequiredAcks)
                } else if name == OFFSETS_TOPIC {
                    // Only the broker writes committed offsets.
                    Some(ResponseError::InvalidTopicException)
                } else if transactional {
                    Some(ResponseError::TransactionalIdAuthorizationFailed)
                } else {
                    None
                };
                if let Some(e) = early {
                    handles.push((index, Err(error_response(index, e))));
                    continue;
                }
                let partition = self
                    .log
                    .partition(&name, PartitionId(index.max(0) as u32))
                    .ok()
                    .filter(|_| index >= 0);
                let Some(partition) = partition else {
                    handles.push((
                        index,
                        Err(error_response(
                            index,
                            ResponseError::UnknownTopicOrPartition,
                        )),
                    ));
                    continue;
                };
                let records = pd.records.unwrap_or_default();
                let state = self.producers_for(&partition, &records);
                let counters = self.metrics.topic(&name);
                let append = tokio::task::spawn_blocking(move || {
                    let written = produce_partition(&partition, &records, version, state);
                    if written.is_ok() {
                        counters
                            .bytes_in
                            .fetch_add(records.len() as u64, Ordering::Relaxed);
                        counters.records_in.fetch_add(
                            crate::metrics::records_in_batches(&records),
                            Ordering::Relaxed,
                        );
                    }
                    (partition, written)
                });
                handles.push((index, Ok(append)));
            }
            jobs.push((name, handles));
        }
        let mut response = ProduceResponse::default();
        let mut waits = Vec::new();
        for (t, (name, handles)) in jobs.into_iter().enumerate() {
            let mut topic = TopicProduceResponse::default();
            topic.name = topic_name(&name);
            for (p, (index, h)) in handles.into_iter().enumerate() {
                let answer = match h {
                    Err(early) => early,
                    Ok(join) => match join.await {
                        Ok((_, Err(refused))) => error_response(index, refused),
                        Ok((log, Ok(ticket))) => {
                            waits.push(DurableWait::start(t, p, log, ticket));
                            // Replaced by `finish`.
                            error_response(index, ResponseError::RequestTimedOut)
                        }
                        Err(e) => std::panic::resume_unwind(e.into_panic()),
                    },
                };
                topic.partition_responses.push(answer);
            }
            response.responses.push(topic);
        }
        ProduceInFlight {
            acks,
            response,
            waits,
        }
    }

    /// The producer state lock for an idempotent batch, `None` otherwise.
    fn producers_for(
        &self,
        partition: &Arc<Partition>,
        records: &Bytes,
    ) -> Option<SharedProducers> {
        let h = BatchHeader::parse(records).ok()?;
        (h.producer_id() >= 0).then(|| self.producers.for_partition(partition))
    }
}

fn error_response(index: i32, e: ResponseError) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = index;
    p.error_code = e.code();
    p.base_offset = -1;
    p
}

fn ok_response(index: i32, info: AppendInfo) -> PartitionProduceResponse {
    let mut p = PartitionProduceResponse::default();
    p.index = index;
    p.base_offset = info.base_offset.0 as i64;
    p.log_append_time_ms = -1;
    p.log_start_offset = info.log_start_offset.0 as i64;
    p
}

/// Checks Kafka's produce rules that the storage engine does not know about.
fn check_produce_rules(records: &[u8], version: i16) -> Result<(), ResponseError> {
    if records.is_empty() {
        return Err(ResponseError::InvalidRecord);
    }
    let h = BatchHeader::parse(records).map_err(|_| ResponseError::CorruptMessage)?;
    if h.magic() != runnel_log::batch::MAGIC_V2 {
        return Err(ResponseError::InvalidRecord);
    }
    if h.is_control() {
        // Only brokers write control batches (transaction markers).
        return Err(ResponseError::InvalidRecord);
    }
    let codec = h.compression();
    if codec > CODEC_MAX || (codec == CODEC_ZSTD && version < ZSTD_PRODUCE_VERSION_MIN) {
        return Err(ResponseError::UnsupportedCompressionType);
    }
    if h.producer_id() >= 0 && h.base_sequence() < 0 {
        return Err(ResponseError::InvalidRecord);
    }
    Ok(())
}

/// Validates and appends one partition's batch. `Ok` holds the wait for durability,
/// `Err` the refusal.
fn produce_partition(
    partition: &Partition,
    records: &[u8],
    version: i16,
    state: Option<SharedProducers>,
) -> Result<AppendTicket, ResponseError> {
    check_produce_rules(records, version)?;
    let refused = |e: runnel_log::LogError| errors::log_error(&e);
    let Some(state) = state else {
        return Ok(partition
            .append_deferred(records)
            .map_err(refused)?
            .into_ticket());
    };
    let h = BatchHeader::parse(records).expect("checked above");
    let seq = BatchSequence {
        producer_id: h.producer_id(),
        producer_epoch: h.producer_epoch(),
        base_sequence: h.base_sequence(),
        record_count: h.record_count(),
    };
    // The check, the write and the state update happen together, so a retry cannot slip
    // in between; the fsync wait happens later, shared with other appenders.
    let mut producers = state.lock().unwrap_or_else(|p| p.into_inner());
    match producers.check(&seq) {
        // A retry of a batch already written: the original's offsets, once durable.
        SequenceCheck::Duplicate {
            base_offset,
            last_offset,
        } => Ok(partition.ticket_through(Offset(base_offset), Offset(last_offset))),
        SequenceCheck::Reject(e) => {
            Err(ResponseError::try_from_code(e.kafka_code())
                .unwrap_or(ResponseError::InvalidRecord))
        }
        SequenceCheck::Append => {
            let pending = partition.append_deferred(records).map_err(refused)?;
            let info = pending.info();
            producers.record(&seq, info.base_offset.0, info.last_offset.0, now_ms());
            Ok(pending.into_ticket())
        }
    }
}
