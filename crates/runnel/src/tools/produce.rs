//! `runnel produce`: records from standard input or a file, one per line.

use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::ClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::{Connection, Failure, key_value};

/// Options of `runnel produce`.
#[derive(clap::Args, Debug)]
#[command(after_help = "INPUT: one record per line.
  text (default): the line is the value; with --key-separator, `key<SEP>value`.
  --json: each line is an object {\"key\": .., \"value\": .., \"headers\": {..}, \"partition\": n};
          key and value may be strings, other JSON (written as JSON text) or null.

EXAMPLES:
    printf 'order-1:{\"total\":12}\\n' | runnel produce orders --key-separator :
    runnel produce orders --file orders.jsonl --json
    echo hello | runnel produce greetings --header source=cli --acks 1")]
pub struct ProduceArgs {
    /// The topic.
    pub topic: String,
    /// Read from this file instead of standard input (shows a progress bar).
    #[arg(long, short = 'f')]
    pub file: Option<std::path::PathBuf>,
    /// Split each line at the first SEP into key and value.
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header added to every record, repeatable: --header source=cli
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Lines are JSON objects.
    #[arg(long)]
    pub json: bool,
    /// Write to this partition (default: by key, or spread when there is none).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Acknowledgement: all, 1 or 0.
    #[arg(long, default_value = "all")]
    pub acks: String,
    /// Compression: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value = "none")]
    pub compression: String,
}

/// Counts deliveries and keeps the first error.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

struct Ctx(Arc<Deliveries>);

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.0.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.0.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// One record to send.
#[derive(Debug)]
struct Record {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    partition: Option<i32>,
}

/// Runs `runnel produce`.
pub fn run(conn: &Connection, args: ProduceArgs) -> Result<(), Failure> {
    if !["all", "1", "0", "-1"].contains(&args.acks.as_str()) {
        return Err(Failure::usage("--acks must be all, 1 or 0"));
    }
    let fixed_headers = args
        .headers
        .iter()
        .map(|h| key_value(h, "--header").map(|(k, v)| (k, Some(v.into_bytes()))))
        .collect::<Result<Vec<_>, _>>()?;
    super::partitions_of(conn, &args.topic)?;
    let deliveries = Arc::new(Deliveries::default());
    let producer: BaseProducer<Ctx> = conn
        .config()
        .set("acks", &args.acks)
        .set("compression.type", &args.compression)
        .set("linger.ms", "5")
        .create_with_context(Ctx(deliveries.clone()))
        .map_err(|e| Failure::broker(conn, "cannot create a producer", e))?;

    let (input, bar): (Box<dyn Read>, Option<ProgressBar>) = match &args.file {
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| Failure::usage(format!("cannot open {}: {e}", path.display())))?;
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let bar = ProgressBar::new(len).with_style(
                ProgressStyle::with_template(
                    "produce {bar:30} {bytes}/{total_bytes} {bytes_per_sec} ({eta} left)",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            (Box::new(bar.wrap_read(file)), Some(bar))
        }
        None => (Box::new(std::io::stdin()), None),
    };
    let mut sent = 0u64;
    for (n, line) in BufReader::new(input).lines().enumerate() {
        let line = line.map_err(|e| Failure::usage(format!("cannot read input: {e}")))?;
        if line.is_empty() {
            continue;
        }
        let mut record = if args.json {
            parse_json(&line).map_err(|e| Failure::usage(format!("line {}: {e}", n + 1)))?
        } else {
            parse_text(&line, args.key_separator.as_deref())
        };
        record.headers.extend(fixed_headers.iter().cloned());
        let partition = args.partition.or(record.partition);
        send(&producer, &args.topic, &record, partition)
            .map_err(|e| Failure::refused(format!("line {}: {e}", n + 1)))?;
        sent += 1;
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| Failure::broker(conn, "records not acknowledged", e))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let failed = deliveries.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = deliveries
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        return Err(Failure::refused(format!(
            "{failed} of {sent} records failed; first error: {first}"
        )));
    }
    eprintln!("produced {sent} records to {}", args.topic);
    Ok(())
}

fn send(
    producer: &BaseProducer<Ctx>,
    topic: &str,
    r: &Record,
    partition: Option<i32>,
) -> Result<(), String> {
    let mut headers = OwnedHeaders::new();
    for (k, v) in &r.headers {
        headers = headers.insert(Header {
            key: k,
            value: v.as_deref(),
        });
    }
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).headers(headers);
    if let Some(k) = &r.key {
        record = record.key(k);
    }
    if let Some(v) = &r.value {
        record = record.payload(v);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    // A full local queue is back-pressure: serve deliveries and try again.
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => {
                producer.poll(Duration::ZERO);
                return Ok(());
            }
            Err((e, back))
                if e.rdkafka_error_code() == Some(rdkafka::error::RDKafkaErrorCode::QueueFull) =>
            {
                producer.poll(Duration::from_millis(50));
                record = back;
            }
            Err((e, _)) => return Err(e.to_string()),
        }
    }
}

fn parse_text(line: &str, separator: Option<&str>) -> Record {
    let (key, value) = match separator.and_then(|sep| line.split_once(sep)) {
        Some((k, v)) => (Some(k.as_bytes().to_vec()), v),
        None => (None, line),
    };
    Record {
        key,
        value: Some(value.as_bytes().to_vec()),
        headers: Vec::new(),
        partition: None,
    }
}

/// A JSON field as bytes: strings as their text, null as null, anything else as JSON.
fn json_bytes(v: Option<&serde_json::Value>) -> Option<Vec<u8>> {
    match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.as_bytes().to_vec()),
        Some(other) => Some(other.to_string().into_bytes()),
    }
}

fn parse_json(line: &str) -> Result<Record, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let obj = v
        .as_object()
        .ok_or("expected an object like {\"key\": \"k\", \"value\": \"v\"}")?;
    if let Some(unknown) = obj
        .keys()
        .find(|k| !["key", "value", "headers", "partition"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field {unknown:?} (known: key, value, headers, partition)"
        ));
    }
    let headers = match obj.get("headers") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Object(h)) => h
            .iter()
            .map(|(k, v)| (k.clone(), json_bytes(Some(v))))
            .collect(),
        Some(_) => return Err("headers must be an object of strings".into()),
    };
    let partition = match obj.get("partition") {
        None | Some(serde_json::Value::Null) => None,
        Some(p) => Some(
            p.as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .filter(|p| *p >= 0)
                .ok_or("partition must be a non-negative number")?,
        ),
    };
    Ok(Record {
        key: json_bytes(obj.get("key")),
        value: json_bytes(obj.get("value")),
        headers,
        partition,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_split_at_the_first_separator() {
        let r = parse_text("k:v:w", Some(":"));
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v:w"[..]));
        let r = parse_text("no separator", Some(":"));
        assert_eq!(r.key, None);
    }

    #[test]
    fn json_lines_carry_keys_values_headers_and_nulls() {
        let r = parse_json(r#"{"key":"k","value":{"total":12},"headers":{"h":"x"},"partition":2}"#)
            .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(r.value.as_deref(), Some(&br#"{"total":12}"#[..]));
        assert_eq!(r.headers, vec![("h".to_string(), Some(b"x".to_vec()))]);
        assert_eq!(r.partition, Some(2));
        let tomb = parse_json(r#"{"key":"k","value":null}"#).unwrap();
        assert_eq!(tomb.value, None);
        assert!(parse_json("[1]").is_err());
        assert!(
            parse_json(r#"{"valu":"typo"}"#)
                .unwrap_err()
                .contains("unknown field")
        );
    }
}
