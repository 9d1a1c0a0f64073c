//! The operator commands (`runnel topic|produce|consume|group|dlq`). Each talks to any
//! Kafka-compatible broker through librdkafka, so they work against Apache Kafka and
//! Redpanda as well as Runnel.
//!
//! Exit codes: 0 success; 1 the broker refused or could not be reached; 2 bad usage
//! (clap's code for argument errors, also used for invalid values we check); 3 the topic
//! or group named does not exist (for `dlq`: the DLQ topic, or a DLQ offset).

pub mod consume;
pub mod dlq;
pub mod group;
pub mod produce;
pub mod topic;

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;

/// How long a command waits for the broker before giving up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the broker is.
#[derive(clap::Args, Debug, Clone)]
pub struct Connection {
    /// Kafka-compatible bootstrap address (Runnel, Apache Kafka, Redpanda).
    #[arg(
        long,
        short = 'b',
        default_value = "127.0.0.1:9092",
        env = "RUNNEL_BOOTSTRAP",
        global = true
    )]
    pub bootstrap: String,
}

impl Connection {
    /// A librdkafka configuration for this broker.
    pub fn config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap)
            .set("socket.timeout.ms", "10000")
            .set("log_level", "3");
        c
    }

    /// An admin client.
    pub fn admin(&self) -> Result<AdminClient<DefaultClientContext>, Failure> {
        self.config()
            .create()
            .map_err(|e| Failure::broker(self, "cannot create an admin client", e))
    }

    /// A consumer outside any group unless `group` is given; it never joins by itself.
    pub fn consumer(&self, group: Option<&str>) -> Result<BaseConsumer, Failure> {
        let mut c = self.config();
        c.set("group.id", group.unwrap_or("runnel-cli"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest");
        c.create()
            .map_err(|e| Failure::broker(self, "cannot create a consumer", e))
    }

    /// Cluster metadata, for all topics or one.
    pub fn metadata(&self, topic: Option<&str>) -> Result<Metadata, Failure> {
        let c = self.consumer(None)?;
        c.fetch_metadata(topic, REQUEST_TIMEOUT)
            .map_err(|e| Failure::broker(self, "cannot read metadata", e))
    }
}

/// Admin request options with the command's timeout.
pub fn admin_options() -> AdminOptions {
    AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT))
}

/// Why a command failed, with the exit code that says so.
#[derive(Debug)]
pub struct Failure {
    /// The message, saying what went wrong and what to do about it.
    pub message: String,
    /// The process exit code.
    pub code: u8,
}

impl Failure {
    /// The broker refused or could not be reached (exit 1).
    pub fn broker(conn: &Connection, what: &str, e: KafkaError) -> Failure {
        let hint = match e.rdkafka_error_code() {
            Some(RDKafkaErrorCode::BrokerTransportFailure)
            | Some(RDKafkaErrorCode::AllBrokersDown)
            | Some(RDKafkaErrorCode::OperationTimedOut) => format!(
                " (is a broker running at {}? start one with `runnel serve`, or pass --bootstrap)",
                conn.bootstrap
            ),
            _ => String::new(),
        };
        Failure {
            message: format!("{what}: {e}{hint}"),
            code: 1,
        }
    }

    /// A refusal the broker explained (exit 1).
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }

    /// Bad input from the user (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }

    /// The named topic or group does not exist (exit 3).
    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 3,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Prints the failure and turns it into the process exit code.
pub fn finish(command: &str, result: Result<(), Failure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("runnel {command}: {f}");
            ExitCode::from(f.code)
        }
    }
}

/// Splits `key=value`.
pub fn key_value(s: &str, what: &str) -> Result<(String, String), Failure> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| Failure::usage(format!("{what} {s:?}: expected KEY=VALUE")))
}

/// The partitions of `topic`, or "not found".
pub fn partitions_of(conn: &Connection, topic: &str) -> Result<Vec<i32>, Failure> {
    let md = conn.metadata(Some(topic))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| Failure::not_found(format!("topic {topic:?} does not exist")))?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(Failure::not_found(format!(
            "topic {topic:?} does not exist (see `runnel topic list`)"
        )));
    }
    let mut ps: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    ps.sort_unstable();
    Ok(ps)
}
