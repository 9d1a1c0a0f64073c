//! Produce (0): validate each partition's batch, check idempotent sequences, append.
//!
//! Partitions of one request are appended in parallel on the blocking pool, so their
//! fsyncs overlap. The response lists every requested partition. With `acks=0` nothing
//! is sent back: the client reads no response, and sending one would break correlation.

use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use runnel_log::batch::BatchHeader;
use runnel_log::{AppendInfo, Partition, PartitionId};

use crate::broker::{Broker, topic_name};
use crate::errors;
use crate::handlers::producers::{SharedProducers, now_ms};
use crate::producer_state::{BatchSequence, SequenceCheck};

/// Codec ids Kafka defines (none, gzip, snappy, lz4, zstd); 5-7 are invalid.
const CODEC_MAX: u8 = 4;
const CODEC_ZSTD: u8 = 4;
/// zstd needs Produce v7 (KIP-110): older clients could not read it back.
const ZSTD_PRODUCE_VERSION_MIN: i16 = 7;

impl Broker {
    pub(crate) async fn produce(
        &self,
        req: ProduceRequest,
        version: i16,
    ) -> Option<ProduceResponse> {
        let acks = req.acks;
        let mut resp = ProduceResponse::default();
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
                } else if transactional {
                    Some(ResponseError::TransactionalIdAuthorizationFailed)
                } else {
                    None
                };
                if let Some(e) = early {
                    handles.push(Err(error_response(index, e)));
                    continue;
                }
                let partition = self
                    .log
                    .partition(&name, PartitionId(index.max(0) as u32))
                    .ok()
                    .filter(|_| index >= 0);
                let Some(partition) = partition else {
                    handles.push(Err(error_response(
                        index,
                        ResponseError::UnknownTopicOrPartition,
                    )));
                    continue;
                };
                let records = pd.records.unwrap_or_default();
                let state = self.producers_for(&partition, &records);
                handles.push(Ok(tokio::task::spawn_blocking(move || {
                    produce_partition(&partition, index, &records, version, state)
                })));
            }
            jobs.push((name, handles));
        }
        for (name, handles) in jobs {
            let mut t = TopicProduceResponse::default();
            t.name = topic_name(&name);
            for h in handles {
                let p = match h {
                    Err(early) => early,
                    Ok(join) => match join.await {
                        Ok(p) => p,
                        Err(e) => std::panic::resume_unwind(e.into_panic()),
                    },
                };
                t.partition_responses.push(p);
            }
            resp.responses.push(t);
        }
        (acks != 0).then_some(resp)
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

fn produce_partition(
    partition: &Partition,
    index: i32,
    records: &[u8],
    version: i16,
    state: Option<SharedProducers>,
) -> PartitionProduceResponse {
    if let Err(e) = check_produce_rules(records, version) {
        return error_response(index, e);
    }
    let Some(state) = state else {
        return match partition.append(records) {
            Ok(info) => ok_response(index, info),
            Err(e) => error_response(index, errors::log_error(&e)),
        };
    };
    let h = BatchHeader::parse(records).expect("checked above");
    let seq = BatchSequence {
        producer_id: h.producer_id(),
        producer_epoch: h.producer_epoch(),
        base_sequence: h.base_sequence(),
        record_count: h.record_count(),
    };
    // The check, the write and the state update happen together, so a retry cannot slip
    // in between; the fsync wait happens after, shared with other appenders.
    let pending = {
        let mut producers = state.lock().unwrap_or_else(|p| p.into_inner());
        match producers.check(&seq) {
            SequenceCheck::Duplicate { base_offset, .. } => {
                let mut p = error_response(index, ResponseError::UnknownServerError);
                p.error_code = 0;
                p.base_offset = base_offset as i64;
                p.log_append_time_ms = -1;
                p.log_start_offset = partition.log_start_offset().0 as i64;
                return p;
            }
            SequenceCheck::Reject(e) => {
                let code = ResponseError::try_from_code(e.kafka_code())
                    .unwrap_or(ResponseError::InvalidRecord);
                return error_response(index, code);
            }
            SequenceCheck::Append => match partition.append_deferred(records) {
                Ok(pending) => {
                    let info = pending.info();
                    producers.record(&seq, info.base_offset.0, info.last_offset.0, now_ms());
                    pending
                }
                Err(e) => return error_response(index, errors::log_error(&e)),
            },
        }
    };
    match pending.wait() {
        Ok(info) => ok_response(index, info),
        Err(e) => error_response(index, errors::log_error(&e)),
    }
}
