//! Dead letters: what a service gave up on, in `<service>.dlq`, and how to send them
//! back to where they came from.
//!
//! A dead letter is the original record (key, value, headers) plus the headers in
//! [`crate::runtime::dlq_headers`]: the error, its kind, the source topic, partition
//! and offset, the attempts, the service and the time. `runnel dlq list|replay` does
//! the same against any Kafka-compatible broker.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::runtime::dlq_headers;
use crate::service::dead_letter_topic;
use crate::transport::{OutRecord, Record, TopicPartition, Transport};

/// The header a replayed record carries: `<service>.dlq@<offset>`.
pub const REPLAYED_FROM: &str = dlq_headers::REPLAYED_FROM;

/// One dead letter, parsed.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// Its offset in the dead-letter topic.
    pub offset: i64,
    /// Where the record came from.
    pub source: Option<(String, i32, i64)>,
    /// Why it was given up on.
    pub error: String,
    /// transient, permanent or not_yet.
    pub error_kind: String,
    /// How many times its handler ran.
    pub attempts: u32,
    /// The record as it is in the dead-letter topic.
    pub record: Record,
}

fn text(r: &Record, name: &str) -> Option<String> {
    r.header(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

impl DeadLetter {
    fn parse(record: Record) -> DeadLetter {
        let source = match (
            text(&record, dlq_headers::TOPIC),
            text(&record, dlq_headers::PARTITION).and_then(|p| p.parse().ok()),
            text(&record, dlq_headers::OFFSET).and_then(|o| o.parse().ok()),
        ) {
            (Some(t), Some(p), Some(o)) => Some((t, p, o)),
            _ => None,
        };
        DeadLetter {
            offset: record.offset,
            source,
            error: text(&record, dlq_headers::ERROR).unwrap_or_default(),
            error_kind: text(&record, dlq_headers::ERROR_KIND).unwrap_or_default(),
            attempts: text(&record, dlq_headers::ATTEMPTS)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            record,
        }
    }

    /// The record to send back: the original key, value and headers, without the
    /// dead-letter headers, marked with [`REPLAYED_FROM`].
    #[must_use]
    pub fn replay_record(&self, service: &str) -> Option<OutRecord> {
        let (topic, _, _) = self.source.as_ref()?;
        let headers = runnel_core::services::replay_headers(
            self.record.headers.iter(),
            &dead_letter_topic(service),
            self.offset,
        );
        Some(OutRecord {
            topic: topic.clone(),
            partition: None,
            key: self.record.key.as_ref().map(|k| k.to_vec()),
            value: self.record.value.as_ref().map(|v| v.to_vec()),
            headers,
        })
    }
}

/// Every dead letter of `service`, oldest first.
pub async fn list(transport: &dyn Transport, service: &str) -> Result<Vec<DeadLetter>, Error> {
    let topic = dead_letter_topic(service);
    let wm = transport.watermarks(&topic).await?;
    let mut out = Vec::new();
    for (p, (lo, hi)) in wm.into_iter().enumerate() {
        if hi <= lo {
            continue;
        }
        let mut reader = transport.reader(vec![(TopicPartition::new(&topic, p as i32), lo)])?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut next = lo;
        while next < hi {
            for r in reader.poll(Duration::from_millis(100)).await? {
                next = r.offset + 1;
                out.push(DeadLetter::parse(r));
            }
            if Instant::now() > deadline {
                return Err(Error::Transport(format!("reading {topic} timed out")));
            }
        }
    }
    Ok(out)
}

/// Sends the dead letters at `offsets` (all of them when `None`) back to their source
/// topics; returns how many were sent. An offset that is not a dead letter is an error,
/// and then nothing is sent.
pub async fn replay(
    transport: &dyn Transport,
    service: &str,
    offsets: Option<&[i64]>,
) -> Result<usize, Error> {
    let letters = list(transport, service).await?;
    let chosen: Vec<&DeadLetter> = match offsets {
        None => letters.iter().collect(),
        Some(wanted) => {
            let have: BTreeSet<i64> = letters.iter().map(|l| l.offset).collect();
            if let Some(missing) = wanted.iter().find(|o| !have.contains(o)) {
                return Err(Error::Config(format!(
                    "{} has no dead letter at offset {missing}",
                    dead_letter_topic(service)
                )));
            }
            letters
                .iter()
                .filter(|l| wanted.contains(&l.offset))
                .collect()
        }
    };
    let records: Vec<OutRecord> = chosen
        .iter()
        .map(|l| {
            l.replay_record(service).ok_or_else(|| {
                Error::Config(format!(
                    "the dead letter at offset {} does not name its source topic",
                    l.offset
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    let n = records.len();
    if n > 0 {
        transport.send(records).await?;
    }
    Ok(n)
}
