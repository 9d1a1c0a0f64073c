//! Fetch (1): a real long poll.
//!
//! The broker gathers whole batches for every requested partition. If fewer than
//! `min_bytes` arrived and `max_wait_ms` has not passed, it waits on the partitions'
//! high-watermark notifications (never polling) and gathers again. Every requested
//! partition is answered, `records` is never null, and `session_id` stays 0: Runnel keeps
//! no fetch sessions (KIP-227), so clients send full requests.
//!
//! Sizes are bounded as in Kafka: the response carries at most the request's `max_bytes`,
//! itself capped by the broker's `fetch-bytes-max` (Kafka's `fetch.max.bytes`), and each
//! partition at most its `partition_max_bytes`, capped the same way; a `max_bytes` or
//! `partition_max_bytes` of zero or less means the broker's cap, never "unlimited". The
//! one exception is KIP-74's: the first batch of the first partition with data is
//! returned whole even if it is larger, so a consumer always makes progress.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse};
use runnel_log::{Log, LogError, Offset, PartitionId};
use tokio::sync::watch;

use crate::broker::{Broker, as_bytes, topic_name};
use crate::errors;
use crate::handlers::check_leader_epoch;

/// The longest a fetch is held, whatever the client asks: client request timeouts are
/// derived from `max_wait_ms`, and a parked fetch holds its connection.
pub const FETCH_WAIT_MS_MAX: i32 = 60_000;

#[derive(Clone, Debug)]
struct Want {
    topic: String,
    partitions: Vec<(i32, i64, i32, i32)>, // partition, fetch offset, max bytes, current leader epoch
}

impl Broker {
    pub(crate) async fn fetch(
        &self,
        req: FetchRequest,
        version: i16,
        client_id: &str,
    ) -> FetchResponse {
        let mut resp = FetchResponse::default();
        if req.session_id != 0 || req.session_epoch > 0 {
            resp.error_code = ResponseError::FetchSessionIdNotFound.code();
            return resp;
        }
        let wants: Arc<Vec<Want>> = Arc::new(
            req.topics
                .iter()
                .map(|t| Want {
                    topic: t.topic.0.to_string(),
                    partitions: t
                        .partitions
                        .iter()
                        .map(|p| {
                            (
                                p.partition,
                                p.fetch_offset,
                                p.partition_max_bytes,
                                p.current_leader_epoch,
                            )
                        })
                        .collect(),
                })
                .collect(),
        );
        let min_bytes = req.min_bytes.max(0) as usize;
        let cap = self.config.fetch_bytes_max;
        let max_bytes = bytes_limit(req.max_bytes, cap);
        let wait = Duration::from_millis(req.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
        let deadline = tokio::time::Instant::now() + wait;
        let mut shutdown = self.shutdown.clone();
        loop {
            // Subscribe before gathering, so an append between the two still wakes us.
            let mut watches = self.watches(&wants);
            let log = self.log.clone();
            let w = wants.clone();
            let (topics, total, failed) = self
                .blocking(move || gather(&log, &w, max_bytes, cap))
                .await;
            let done = total >= min_bytes
                || failed
                || tokio::time::Instant::now() >= deadline
                || *shutdown.borrow();
            if done || watches.is_empty() {
                if !done {
                    tokio::time::sleep_until(deadline).await;
                    continue;
                }
                let mut topics = topics;
                if version < ZSTD_FETCH_VERSION_MIN {
                    for p in topics.iter_mut().flat_map(|t| t.partitions.iter_mut()) {
                        refuse_zstd(p);
                    }
                }
                for t in &topics {
                    let counters = self.core.topic_counters(&t.topic.0);
                    let (mut flow_bytes, mut flow_records) = (0u64, 0u64);
                    for p in &t.partitions {
                        let bytes = p.records.as_ref().map_or(&[][..], |b| &b[..]);
                        let records = runnel_core::counters::records_in_batches(bytes);
                        flow_bytes += bytes.len() as u64;
                        flow_records += records;
                        counters
                            .bytes_out
                            .fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                        counters
                            .records_out
                            .fetch_add(records, std::sync::atomic::Ordering::Relaxed);
                    }
                    // A reader is on the picture even while nothing new comes.
                    self.core.flows().record(
                        client_id,
                        &t.topic.0,
                        runnel_core::flows::Direction::Fetch,
                        flow_bytes,
                        flow_records,
                    );
                }
                resp.responses = topics;
                return resp;
            }
            tokio::select! {
                () = any_changed(&mut watches) => {}
                () = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    fn watches(&self, wants: &[Want]) -> Vec<watch::Receiver<Offset>> {
        let mut out = Vec::new();
        for w in wants {
            let Some(t) = self.log.topic(&w.topic) else {
                continue;
            };
            for &(p, ..) in &w.partitions {
                if let Some(part) = PartitionId::try_from(p).ok().and_then(|id| t.partition(id)) {
                    let mut rx = part.subscribe();
                    rx.borrow_and_update();
                    out.push(rx);
                }
            }
        }
        out
    }
}

/// A size from the request, bounded by the broker's `cap`: zero or less (Kafka's
/// clients never send that; a hostile or broken one may) means the cap itself.
fn bytes_limit(requested: i32, cap: usize) -> usize {
    usize::try_from(requested)
        .ok()
        .filter(|n| *n > 0)
        .map_or(cap, |n| n.min(cap))
}

/// Resolves when any receiver sees a new value (or its partition goes away).
async fn any_changed(watches: &mut [watch::Receiver<Offset>]) {
    let mut futures: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = watches
        .iter_mut()
        .map(|rx| {
            Box::pin(async move { rx.changed().await.unwrap_or(()) })
                as Pin<Box<dyn Future<Output = ()> + Send>>
        })
        .collect();
    std::future::poll_fn(|cx| {
        for f in &mut futures {
            if f.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await;
}

/// Reads what is there now. Returns the topics, the bytes gathered, and whether any
/// partition answered with an error (which ends the wait, as in Kafka).
/// `max_bytes` bounds the whole response, `cap` each partition whose own limit is zero
/// or less.
fn gather(
    log: &Log,
    wants: &[Want],
    max_bytes: usize,
    cap: usize,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut total = 0usize;
    let mut failed = false;
    let mut topics = Vec::with_capacity(wants.len());
    for w in wants {
        let mut t = FetchableTopicResponse::default();
        t.topic = topic_name(&w.topic);
        for &(index, offset, partition_max, leader_epoch) in &w.partitions {
            let remaining = max_bytes.saturating_sub(total);
            let limit = bytes_limit(partition_max, cap).min(remaining);
            let p = fetch_partition(
                log,
                &w.topic,
                index,
                offset,
                leader_epoch,
                limit,
                total == 0,
            );
            if p.error_code != 0 {
                failed = true;
            }
            total += p.records.as_ref().map_or(0, Bytes::len);
            t.partitions.push(p);
        }
        topics.push(t);
    }
    (topics, total, failed)
}

/// The first Fetch version whose clients can read zstd batches (KIP-110).
const ZSTD_FETCH_VERSION_MIN: i16 = 10;

/// For a client too old for zstd (Fetch below v10), a partition whose answer holds a
/// zstd batch (a producer on v7+ or the topic's `compression.type`) answers
/// UNSUPPORTED_COMPRESSION_TYPE with no records, as Kafka does: the client could not
/// decode them.
fn refuse_zstd(p: &mut PartitionData) {
    let Some(records) = &p.records else {
        return;
    };
    let mut rest = &records[..];
    let mut zstd = false;
    while let Ok(h) = runnel_log::batch::BatchHeader::parse(rest) {
        zstd |= h.compression() == runnel_log::codec::CODEC_ZSTD;
        let Some(next) = rest.get(h.total_bytes() as usize..) else {
            break;
        };
        rest = next;
    }
    if zstd {
        p.records = Some(Bytes::new());
        p.error_code = ResponseError::UnsupportedCompressionType.code();
    }
}

/// One partition's answer: whole batches from `offset` up to `limit` bytes (the
/// partition's limit and what the response has left, whichever is smaller), or, when
/// `first`, at least one batch whatever its size.
fn fetch_partition(
    log: &Log,
    topic: &str,
    index: i32,
    offset: i64,
    leader_epoch: i32,
    limit: usize,
    first: bool,
) -> PartitionData {
    let mut p = PartitionData::default();
    p.partition_index = index;
    p.records = Some(Bytes::new());
    let fail = |mut p: PartitionData, e: ResponseError| {
        p.error_code = e.code();
        p
    };
    if let Err(e) = check_leader_epoch(leader_epoch) {
        return fail(p, e);
    }
    let partition = match PartitionId::try_from(index).map(|id| log.partition(topic, id)) {
        Ok(Ok(part)) => part,
        _ => return fail(p, ResponseError::UnknownTopicOrPartition),
    };
    let hwm = partition.high_watermark().0 as i64;
    p.high_watermark = hwm;
    p.last_stable_offset = hwm;
    p.log_start_offset = partition.log_start_offset().0 as i64;
    if offset < 0 {
        return fail(p, ResponseError::OffsetOutOfRange);
    }
    // KIP-74: the first partition with data returns at least one whole batch, however
    // large; later ones only what fits.
    if limit == 0 && !first {
        return p;
    }
    match partition.read(Offset(offset as u64), limit.max(1)) {
        Ok(r) => {
            p.high_watermark = r.high_watermark.0 as i64;
            p.last_stable_offset = p.high_watermark;
            p.log_start_offset = r.log_start_offset.0 as i64;
            if first || r.bytes.len() <= limit {
                p.records = Some(as_bytes(r.bytes));
            }
            p
        }
        Err(e @ LogError::OffsetOutOfRange { .. }) => fail(p, errors::log_error(&e)),
        Err(e) => fail(p, errors::log_error(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::bytes_limit;

    #[test]
    fn request_sizes_are_capped_and_zero_or_less_means_the_cap() {
        const CAP: usize = 1 << 20;
        assert_eq!(bytes_limit(0, CAP), CAP);
        assert_eq!(bytes_limit(-1, CAP), CAP);
        assert_eq!(bytes_limit(i32::MIN, CAP), CAP);
        assert_eq!(bytes_limit(1, CAP), 1);
        assert_eq!(bytes_limit(4096, CAP), 4096);
        assert_eq!(bytes_limit(i32::MAX, CAP), CAP);
    }
}
