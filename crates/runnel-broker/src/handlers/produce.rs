//! Produce (0): the wire side of an append. The produce rules themselves (internal
//! topics, Kafka's header rules, idempotent sequences) are the core's
//! (`runnel_core::Core::append`); this module handles acks, transactions, parallelism
//! and the answer.
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

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use runnel_log::{AppendInfo, AppendTicket, Partition, PartitionId};

use crate::broker::{Broker, topic_name};
use crate::errors;

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
    pub(crate) async fn produce(
        &self,
        req: ProduceRequest,
        version: i16,
        client_id: &str,
    ) -> ProduceInFlight {
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
                // The wire's rules first; the produce rules are the core's.
                let early = if !valid_acks {
                    Some(ResponseError::InvalidRequiredAcks)
                } else if transactional {
                    Some(ResponseError::TransactionalIdAuthorizationFailed)
                } else {
                    None
                };
                if let Some(e) = early {
                    handles.push((index, Err(error_response(index, e))));
                    continue;
                }
                let partition = PartitionId::try_from(index)
                    .map_err(|_| ResponseError::UnknownTopicOrPartition)
                    .and_then(|p| {
                        self.core
                            .partition_for_append(&name, p.0)
                            .map_err(|e| errors::produce_error(&e))
                    });
                let partition = match partition {
                    Ok(p) => p,
                    Err(e) => {
                        handles.push((index, Err(error_response(index, e))));
                        continue;
                    }
                };
                let records = pd.records.unwrap_or_default();
                self.core.flows().record(
                    client_id,
                    &name,
                    runnel_core::flows::Direction::Produce,
                    records.len() as u64,
                    runnel_core::counters::records_in_batches(&records),
                );
                let core = self.core.clone();
                let append = tokio::task::spawn_blocking(move || {
                    let written = core
                        .append(&partition, &records, version)
                        .map_err(|e| errors::produce_error(&e));
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
