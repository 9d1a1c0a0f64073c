//! ListOffsets (2) and OffsetForLeaderEpoch (23).

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    ListOffsetsRequest, ListOffsetsResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse,
};
use runnel_log::{BatchSummary, Log, LogError, Partition, PartitionId};

use crate::broker::{Broker, topic_name};
use crate::errors;
use crate::handlers::check_leader_epoch;

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

impl Broker {
    pub(crate) async fn list_offsets(
        &self,
        req: ListOffsetsRequest,
        version: i16,
    ) -> ListOffsetsResponse {
        let log = self.log.clone();
        self.blocking(move || {
            let mut resp = ListOffsetsResponse::default();
            for t in req.topics {
                let name = t.name.0.to_string();
                let mut tr = ListOffsetsTopicResponse::default();
                tr.name = topic_name(&name);
                for p in t.partitions {
                    let mut r = list_partition(
                        &log,
                        &name,
                        p.partition_index,
                        p.timestamp,
                        p.current_leader_epoch,
                    );
                    if version < 4 {
                        // The field exists from v4; the codec refuses a non-default value below.
                        r.leader_epoch = -1;
                    }
                    tr.partitions.push(r);
                }
                resp.topics.push(tr);
            }
            resp
        })
        .await
    }

    pub(crate) fn offset_for_leader_epoch(
        &self,
        req: OffsetForLeaderEpochRequest,
    ) -> OffsetForLeaderEpochResponse {
        let mut resp = OffsetForLeaderEpochResponse::default();
        for t in req.topics {
            let name = t.topic.0.to_string();
            let mut tr = OffsetForLeaderTopicResult::default();
            tr.topic = topic_name(&name);
            for p in t.partitions {
                let mut e = EpochEndOffset::default();
                e.partition = p.partition;
                e.leader_epoch = -1;
                e.end_offset = -1;
                let part = PartitionId::try_from(p.partition)
                    .ok()
                    .and_then(|id| self.log.partition(&name, id).ok());
                match (part, check_leader_epoch(p.current_leader_epoch)) {
                    (None, _) => e.error_code = ResponseError::UnknownTopicOrPartition.code(),
                    (_, Err(err)) => e.error_code = err.code(),
                    // Epoch 0 is the only epoch: it ends at the log end, which is never
                    // below a committed offset (so librdkafka sees no truncation).
                    (Some(part), Ok(())) if p.leader_epoch == 0 => {
                        e.leader_epoch = 0;
                        e.end_offset = part.high_watermark().0 as i64;
                    }
                    // Kafka answers (-1, -1) for an epoch it never had.
                    (Some(_), Ok(())) => {}
                }
                tr.partitions.push(e);
            }
            resp.topics.push(tr);
        }
        resp
    }
}

fn list_partition(
    log: &Log,
    topic: &str,
    index: i32,
    timestamp: i64,
    leader_epoch: i32,
) -> ListOffsetsPartitionResponse {
    let mut r = ListOffsetsPartitionResponse::default();
    r.partition_index = index;
    r.timestamp = -1;
    r.offset = -1;
    r.leader_epoch = 0;
    if let Err(e) = check_leader_epoch(leader_epoch) {
        r.error_code = e.code();
        return r;
    }
    let part = match PartitionId::try_from(index).map(|id| log.partition(topic, id)) {
        Ok(Ok(p)) => p,
        _ => {
            r.error_code = ResponseError::UnknownTopicOrPartition.code();
            return r;
        }
    };
    let found = match timestamp {
        LATEST => Ok(Some((-1, part.high_watermark().0 as i64))),
        EARLIEST => Ok(Some((-1, part.log_start_offset().0 as i64))),
        MAX_TIMESTAMP => part
            .max_timestamp_batch()
            .and_then(|b| record_at(&part, b, None)),
        ts if ts >= 0 => part
            .offset_for_timestamp(ts)
            .and_then(|b| record_at(&part, b, Some(ts))),
        _ => {
            r.error_code = ResponseError::InvalidRequest.code();
            return r;
        }
    };
    match found {
        Ok(Some((ts, offset))) => {
            r.timestamp = ts;
            r.offset = offset;
        }
        Ok(None) => {}
        Err(e) => r.error_code = errors::log_error(&e).code(),
    }
    r
}

/// Finds the record inside `batch`: the first with timestamp `>= ts`, or (for `None`)
/// the first with the batch's max timestamp. The records come from the core's reader
/// (`runnel_core::records::read`: decompressed, walked with bounds checks), so a batch
/// that lies about its counts costs nothing but its own bytes. Returns
/// `(timestamp, offset)`.
fn record_at(
    part: &Partition,
    batch: Option<BatchSummary>,
    ts: Option<i64>,
) -> Result<Option<(i64, i64)>, LogError> {
    let Some(batch) = batch else {
        return Ok(None);
    };
    let target = ts.unwrap_or(batch.max_timestamp);
    // The answer at batch granularity: a correct lower bound when the records cannot be
    // read (a codec this build lacks, a malformed payload).
    let fallback = Some((batch.max_timestamp, batch.base_offset.0 as i64));
    let base = batch.base_offset.0 as i64;
    // One batch: the read returns at least the one holding `base`.
    let (records, _) = runnel_core::records::read(part, base, 1)?;
    let log_start = part.log_start_offset().0 as i64;
    let hit = records
        .iter()
        .filter(|r| r.offset <= batch.last_offset.0 as i64 && r.offset >= log_start)
        .find(|r| match ts {
            Some(_) => r.timestamp >= target,
            None => r.timestamp == target,
        })
        .map(|r| (r.timestamp, r.offset));
    Ok(hit.or(fallback))
}
