//! `runnel dlq list|replay`: the records a service gave up on, and putting them back.
//!
//! A service built on runnel-services publishes a record it gives up on to
//! `<service>.dlq`, with the original key, value and headers plus the `runnel_dlq_*`
//! headers below. `list` reads that topic from the start to its end as it was when the
//! command started (records dead-lettered meanwhile wait for the next run). `replay`
//! re-publishes chosen dead letters to the topic they came from.
//!
//! Replaying never removes a dead letter: Kafka logs are append-only, so the DLQ keeps
//! it and a later `list` still shows it. Each replayed record carries
//! `runnel_replayed_from = <service>.dlq@<offset>`, so replaying twice is visible
//! downstream as two records with the same marker.
//!
//! A DLQ offset is written `N` for partition 0 (the runtime creates DLQs with one
//! partition) and `P:N` for any other partition; `list` prints, `--offset` accepts
//! and `runnel_replayed_from` carries that same form.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use super::{Connection, Failure, REQUEST_TIMEOUT, partitions_of};

/// The headers a dead letter carries besides the original record's: the services
/// runtime writes them, so their names have one home there.
pub use runnel_services::runtime::dlq_headers as header;

/// Characters of a value shown by `list` in text format.
const VALUE_PREVIEW_CHARS_MAX: usize = 40;
/// Characters of a key shown by `list` in text format.
const KEY_PREVIEW_CHARS_MAX: usize = 24;

/// The dead-letter commands.
#[derive(clap::Subcommand, Debug)]
#[command(
    after_help = "A service that gives up on a record publishes it to <SERVICE>.dlq with its key,
value and headers, plus runnel_dlq_* headers saying why, from where and when.

EXAMPLES:
    runnel dlq list billing                      # what billing gave up on, and why
    runnel dlq list billing --format json        # every field, full values
    runnel dlq replay billing --offset 3         # back to its source topic
    runnel dlq replay billing --all --dry-run    # what --all would send, and where"
)]
pub enum DlqCommand {
    /// Print a service's dead letters: from the start of `<SERVICE>.dlq` to its end.
    #[command(
        after_help = "TEXT COLUMNS: the DLQ offset (N, or P:N outside partition 0), where the
record came from (topic/partition@offset), handler attempts, error kind, when it
was dead-lettered, a key and value preview (non-UTF-8 bytes as 0x..), and the error.

JSON (--format json): one object per line with dlq_topic, dlq_partition, dlq_offset,
dlq_position (as --offset takes it), dlq_timestamp_ms, service, source_topic,
source_partition, source_offset, attempts, error_kind, error, time_ms, time (RFC 3339),
key, value (in full), headers (the original ones, in order). key, value and each
header value are a string with an encoding beside it (key_encoding, value_encoding,
encoding): \"utf8\" when the bytes are UTF-8, else \"base64\" (standard, padded);
null stays null.

EXAMPLES:
    runnel dlq list billing
    runnel dlq list billing --format json --limit 10
    runnel dlq list billing --format json | jq -r 'select(.error_kind == \"transient\") | .dlq_position'

Exit 3 when billing.dlq does not exist; an empty DLQ is exit 0."
    )]
    List(ListArgs),
    /// Re-publish dead letters to the topic they came from.
    #[command(
        after_help = "Each chosen dead letter goes back to its source topic (the runnel_dlq_topic
header, or --to-topic) with its original key, value and headers, without the
runnel_dlq_* headers and with runnel_replayed_from = <SERVICE>.dlq@<offset>. It goes
to the partition it came from when that topic still has it (so per-key order holds
whatever partitioner first wrote it), otherwise by key. The producer is idempotent
with acks=all.

Replaying does NOT remove anything from the DLQ: Kafka logs are append-only, so a
later `runnel dlq list` still shows the dead letter. Replaying it again publishes it
again; consumers can tell by runnel_replayed_from.

Every chosen offset is checked before anything is sent: an offset that is not in the
DLQ is exit 3 and nothing is replayed.

EXAMPLES:
    runnel dlq replay billing --offset 3                 # one dead letter
    runnel dlq replay billing --offset 3 --offset 7,9    # several
    runnel dlq replay billing --all --dry-run            # show what would go where
    runnel dlq replay billing --all --to-topic orders-retry"
    )]
    Replay(ReplayArgs),
}

/// Output formats of `list`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One aligned line per dead letter, with previews.
    Text,
    /// One JSON object per dead letter, with every field and the full value.
    Json,
}

/// Options of `runnel dlq list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// The service whose dead letters to show (reads `<SERVICE>.dlq`).
    pub service: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Show at most this many (the oldest first).
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<u64>,
}

/// Options of `runnel dlq replay`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["offsets", "all"])))]
pub struct ReplayArgs {
    /// The service whose dead letters to replay (reads `<SERVICE>.dlq`).
    pub service: String,
    /// DLQ offsets to replay, as `list` shows them (N, or P:N); repeatable or comma-separated.
    // One value per flag (not `num_args = 1..`), so `--offset 3 billing` cannot read
    // the service as an offset.
    #[arg(long = "offset", value_name = "OFFSET", value_delimiter = ',')]
    pub offsets: Vec<String>,
    /// Replay every dead letter in the DLQ.
    #[arg(long, conflicts_with = "offsets")]
    pub all: bool,
    /// Publish to this topic instead of each record's source topic.
    #[arg(long, value_name = "TOPIC")]
    pub to_topic: Option<String>,
    /// Show what would be replayed and where; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs a dead-letter command.
pub fn run(conn: &Connection, cmd: DlqCommand) -> Result<(), Failure> {
    match cmd {
        DlqCommand::List(args) => list(conn, &args),
        DlqCommand::Replay(args) => replay(conn, &args),
    }
}

/// The dead-letter topic of a service, as runnel-services names it.
fn dlq_topic(service: &str) -> String {
    format!("{service}.dlq")
}

/// Where a dead letter sits in the DLQ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    partition: i32,
    offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.partition == 0 {
            write!(f, "{}", self.offset)
        } else {
            write!(f, "{}:{}", self.partition, self.offset)
        }
    }
}

/// `N` (partition 0) or `P:N`.
fn parse_position(s: &str) -> Result<Position, Failure> {
    let bad = || {
        Failure::usage(format!(
            "--offset {s:?}: expected a DLQ offset as `runnel dlq list` shows it (N, or PARTITION:N)"
        ))
    };
    let (partition, offset) = match s.trim().split_once(':') {
        Some((p, o)) => (p.parse().map_err(|_| bad())?, o.parse().map_err(|_| bad())?),
        None => (0, s.trim().parse().map_err(|_| bad())?),
    };
    if partition < 0 || offset < 0 {
        return Err(bad());
    }
    Ok(Position { partition, offset })
}

/// A dead letter as read from the DLQ, owned.
#[derive(Clone, Debug)]
struct DeadLetter {
    at: Position,
    /// The DLQ record's own timestamp.
    timestamp_ms: Option<i64>,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    /// Every header, in order; Kafka allows a name more than once.
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl DeadLetter {
    fn of(m: &impl Message) -> DeadLetter {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        DeadLetter {
            at: Position {
                partition: m.partition(),
                offset: m.offset(),
            },
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// A dead-letter header as text; the last one wins if repeated.
    fn text(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.text(name).and_then(|t| t.trim().parse().ok())
    }

    /// The headers the record had before it was dead-lettered.
    fn original_headers(&self) -> impl Iterator<Item = &(String, Option<Vec<u8>>)> {
        self.headers
            .iter()
            .filter(|(k, _)| !k.starts_with(header::PREFIX))
    }
}

fn list(conn: &Connection, args: &ListArgs) -> Result<(), Failure> {
    let topic = dlq_topic(&args.service);
    let partitions = dlq_partitions(conn, &args.service)?;
    let consumer = conn.consumer(None)?;
    let ends = watermarks(conn, &consumer, &topic, &partitions)?;
    let spans = ends
        .iter()
        .map(|(p, (_, high))| (*p, Offset::Beginning, *high))
        .collect();
    let letters = read(conn, &consumer, &topic, spans, args.limit)?;
    if letters.is_empty() {
        eprintln!("no dead letters in {topic}");
        return Ok(());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = match args.format {
        Format::Text => print_text(&mut out, &letters),
        Format::Json => letters
            .iter()
            .try_for_each(|d| writeln!(out, "{}", to_json(&topic, d))),
    };
    written
        .and_then(|()| out.flush())
        .map_err(|e| Failure::refused(format!("cannot write output: {e}")))?;
    // The watermarks bound what the DLQ holds (the difference counts offsets, not
    // records, so it is an upper bound).
    let held: i64 = ends.values().map(|(low, high)| high - low).sum();
    let limited = args
        .limit
        .is_some_and(|n| letters.len() as u64 >= n && held > letters.len() as i64);
    eprintln!(
        "{} dead letter(s) in {topic}{}",
        letters.len(),
        if limited {
            " (stopped at --limit; there are more)"
        } else {
            ""
        }
    );
    Ok(())
}

/// The DLQ's partitions, or exit 3 with a hint.
fn dlq_partitions(conn: &Connection, service: &str) -> Result<Vec<i32>, Failure> {
    let topic = dlq_topic(service);
    partitions_of(conn, &topic).map_err(|f| {
        if f.code != 3 {
            return f;
        }
        let hint = if service.ends_with(".dlq") {
            " (pass the service name, without .dlq)"
        } else {
            " (a service creates it when it starts; see `runnel topic list`)"
        };
        Failure::not_found(format!(
            "service {service:?} has no dead-letter topic {topic:?}{hint}"
        ))
    })
}

/// (low, high) watermarks per partition.
fn watermarks(
    conn: &Connection,
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, (i64, i64)>, Failure> {
    partitions
        .iter()
        .map(|p| {
            consumer
                .fetch_watermarks(topic, *p, REQUEST_TIMEOUT)
                .map(|w| (*p, w))
                .map_err(|e| Failure::broker(conn, "cannot read the DLQ's offsets", e))
        })
        .collect()
}

/// Reads `(partition, from, until)` spans (`until` exclusive, the high watermark seen
/// at the start, so a busy DLQ cannot keep the command running), at most `limit`
/// records, ordered by partition then offset.
fn read(
    conn: &Connection,
    consumer: &BaseConsumer,
    topic: &str,
    spans: Vec<(i32, Offset, i64)>,
    limit: Option<u64>,
) -> Result<Vec<DeadLetter>, Failure> {
    let mut until: BTreeMap<i32, i64> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, from, end) in spans {
        let empty = match from {
            Offset::Offset(o) => o >= end,
            _ => end <= 0,
        };
        if empty {
            continue;
        }
        tpl.add_partition_offset(topic, p, from)
            .map_err(|e| Failure::broker(conn, "bad DLQ position", e))?;
        until.insert(p, end);
    }
    let mut letters = Vec::new();
    if until.is_empty() {
        return Ok(letters);
    }
    consumer
        .assign(&tpl)
        .map_err(|e| Failure::broker(conn, "cannot read the DLQ", e))?;
    let mut last_progress = Instant::now();
    while !until.is_empty() && limit.is_none_or(|n| (letters.len() as u64) < n) {
        if last_progress.elapsed() > REQUEST_TIMEOUT {
            return Err(Failure::refused(format!(
                "reading {topic} stalled: nothing arrived for {}s before its end",
                REQUEST_TIMEOUT.as_secs()
            )));
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        last_progress = Instant::now();
        match result {
            Ok(m) => {
                let end = until.get(&m.partition()).copied();
                if end.is_some_and(|end| m.offset() < end) {
                    letters.push(DeadLetter::of(&m));
                }
                if end.is_some_and(|end| m.offset() + 1 >= end) {
                    until.remove(&m.partition());
                }
            }
            Err(KafkaError::PartitionEOF(p)) => {
                until.remove(&p);
            }
            Err(e) => return Err(Failure::broker(conn, "reading the DLQ failed", e)),
        }
    }
    letters.sort_by_key(|d| d.at);
    Ok(letters)
}

fn print_text(out: &mut impl Write, letters: &[DeadLetter]) -> std::io::Result<()> {
    let rows: Vec<[String; 8]> = letters
        .iter()
        .map(|d| {
            let or_dash = |s: Option<String>| s.unwrap_or_else(|| "-".into());
            let source = format!(
                "{}/{}@{}",
                or_dash(d.text(header::TOPIC)),
                or_dash(d.text(header::PARTITION)),
                or_dash(d.text(header::OFFSET))
            );
            [
                d.at.to_string(),
                source,
                or_dash(d.text(header::ATTEMPTS)),
                or_dash(d.text(header::ERROR_KIND)),
                d.number(header::TIME_MS)
                    .map_or_else(|| "-".into(), rfc3339),
                preview(d.key.as_deref(), KEY_PREVIEW_CHARS_MAX),
                preview(d.value.as_deref(), VALUE_PREVIEW_CHARS_MAX),
                printable(&or_dash(d.text(header::ERROR))),
            ]
        })
        .collect();
    let titles = [
        "DLQ", "SOURCE", "ATTEMPTS", "KIND", "TIME", "KEY", "VALUE", "ERROR",
    ];
    let mut widths = titles.map(|t| t.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 8]| -> std::io::Result<()> {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        writeln!(out, "{}", s.trim_end())
    };
    line(out, titles)?;
    for row in &rows {
        line(out, row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

/// One line of `list --format json`.
fn to_json(topic: &str, d: &DeadLetter) -> serde_json::Value {
    let (key, key_encoding) = encoded(d.key.as_deref());
    let (value, value_encoding) = encoded(d.value.as_deref());
    let headers: Vec<serde_json::Value> = d
        .original_headers()
        .map(|(name, v)| {
            let (value, encoding) = encoded(v.as_deref());
            serde_json::json!({"name": name, "value": value, "encoding": encoding})
        })
        .collect();
    let time_ms: Option<i64> = d.number(header::TIME_MS);
    serde_json::json!({
        "dlq_topic": topic,
        "dlq_partition": d.at.partition,
        "dlq_offset": d.at.offset,
        "dlq_position": d.at.to_string(),
        "dlq_timestamp_ms": d.timestamp_ms,
        "service": d.text(header::SERVICE),
        "source_topic": d.text(header::TOPIC),
        "source_partition": d.number::<i32>(header::PARTITION),
        "source_offset": d.number::<i64>(header::OFFSET),
        "attempts": d.number::<u64>(header::ATTEMPTS),
        "error_kind": d.text(header::ERROR_KIND),
        "error": d.text(header::ERROR),
        "time_ms": time_ms,
        "time": time_ms.map(rfc3339),
        "key": key,
        "key_encoding": key_encoding,
        "value": value,
        "value_encoding": value_encoding,
        "headers": headers,
    })
}

/// Bytes as JSON: the text and "utf8" when they are UTF-8, else base64 and "base64";
/// absent bytes are null twice.
fn encoded(b: Option<&[u8]>) -> (serde_json::Value, serde_json::Value) {
    use serde_json::Value;
    match b {
        None => (Value::Null, Value::Null),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Value::from(s), Value::from("utf8")),
            Err(_) => (Value::from(base64(b)), Value::from("base64")),
        },
    }
}

/// Standard base64 with padding (RFC 4648 section 4).
fn base64(b: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, x)| n | u32::from(*x) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A short, printable, single-line view of some bytes: text with control characters
/// escaped, or `0x` and hex when not UTF-8; `…` marks a cut.
fn preview(b: Option<&[u8]>, chars_max: usize) -> String {
    let Some(b) = b else {
        return "null".into();
    };
    if b.is_empty() {
        return "\"\"".into();
    }
    let full = match std::str::from_utf8(b) {
        Ok(s) => printable(s),
        Err(_) => {
            let shown = &b[..b.len().min(chars_max / 2)];
            let mut hex: String = shown.iter().map(|x| format!("{x:02x}")).collect();
            if shown.len() < b.len() {
                hex.push('…');
            }
            return format!("0x{hex}");
        }
    };
    if full.chars().count() <= chars_max {
        return full;
    }
    let mut cut: String = full.chars().take(chars_max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Text on one line: control characters (newlines, tabs, escapes) written as `\n`,
/// `\t`, `\u{1b}`, so a value cannot break the table or drive the terminal.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// Milliseconds since the epoch as RFC 3339 in UTC, with milliseconds.
fn rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    // The civil date of a day number (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000
    )
}

/// One dead letter to re-publish, checked and resolved.
struct Replay {
    letter: DeadLetter,
    topic: String,
    /// The source partition when the target still has it; otherwise by key.
    partition: Option<i32>,
    /// `<service>.dlq@<position>`.
    marker: String,
}

fn replay(conn: &Connection, args: &ReplayArgs) -> Result<(), Failure> {
    let wanted: BTreeSet<Position> = args
        .offsets
        .iter()
        .map(|s| parse_position(s))
        .collect::<Result<_, _>>()?;
    let topic = dlq_topic(&args.service);
    let partitions = dlq_partitions(conn, &args.service)?;
    let consumer = conn.consumer(None)?;
    let ends = watermarks(conn, &consumer, &topic, &partitions)?;
    let letters = if args.all {
        let spans = ends
            .iter()
            .map(|(p, (_, high))| (*p, Offset::Beginning, *high))
            .collect();
        read(conn, &consumer, &topic, spans, None)?
    } else {
        chosen(conn, &consumer, &topic, &ends, &wanted)?
    };
    if letters.is_empty() {
        eprintln!("no dead letters in {topic}: nothing to replay");
        return Ok(());
    }
    let plan = plan(conn, &args.service, letters, args.to_topic.as_deref())?;
    if args.dry_run {
        for r in &plan {
            println!("would replay {} -> {}", r.marker, destination(r, None));
        }
        eprintln!(
            "dry run: {} dead letter(s) would be replayed; nothing was sent",
            plan.len()
        );
        return Ok(());
    }
    let delivered = send(conn, &plan)?;
    for (r, at) in plan.iter().zip(&delivered) {
        println!("replayed {} -> {}", r.marker, destination(r, Some(*at)));
    }
    eprintln!(
        "replayed {} dead letter(s); they stay in {topic} (Kafka logs are append-only), \
         so `runnel dlq list {}` still shows them",
        plan.len(),
        args.service
    );
    Ok(())
}

/// `topic/partition@offset` once delivered; before, the partition or "(by key)".
fn destination(r: &Replay, delivered: Option<(i32, i64)>) -> String {
    match (delivered, r.partition) {
        (Some((p, o)), _) => format!("{}/{p}@{o}", r.topic),
        (None, Some(p)) => format!("{}/{p}", r.topic),
        (None, None) => format!("{} (partitioned by key)", r.topic),
    }
}

/// Reads exactly the `wanted` dead letters, or names those that are not in the DLQ.
fn chosen(
    conn: &Connection,
    consumer: &BaseConsumer,
    topic: &str,
    ends: &BTreeMap<i32, (i64, i64)>,
    wanted: &BTreeSet<Position>,
) -> Result<Vec<DeadLetter>, Failure> {
    // Per partition, read from the first wanted offset to past the last: a DLQ is
    // small, and one span per partition is one fetch stream rather than one per offset.
    let mut spans: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for w in wanted {
        if let Some((low, high)) = ends.get(&w.partition)
            && (*low..*high).contains(&w.offset)
        {
            let span = spans.entry(w.partition).or_insert((w.offset, w.offset + 1));
            span.0 = span.0.min(w.offset);
            span.1 = span.1.max(w.offset + 1);
        }
    }
    let spans = spans
        .into_iter()
        .map(|(p, (from, until))| (p, Offset::Offset(from), until))
        .collect();
    let letters: Vec<DeadLetter> = read(conn, consumer, topic, spans, None)?
        .into_iter()
        .filter(|d| wanted.contains(&d.at))
        .collect();
    let found: BTreeSet<Position> = letters.iter().map(|d| d.at).collect();
    let missing: Vec<String> = wanted.difference(&found).map(Position::to_string).collect();
    if missing.is_empty() {
        return Ok(letters);
    }
    let held: Vec<String> = ends
        .iter()
        .map(|(p, (low, high))| match (p, low < high) {
            (_, false) => format!("partition {p} is empty"),
            (0, true) => format!("offsets {low} to {}", high - 1),
            (_, true) => format!("partition {p} holds {low} to {}", high - 1),
        })
        .collect();
    Err(Failure::not_found(format!(
        "no dead letter at offset {} in {topic} ({}; see `runnel dlq list`); nothing was replayed",
        missing.join(", "),
        held.join("; ")
    )))
}

/// Resolves where each dead letter goes, checking every one before anything is sent.
fn plan(
    conn: &Connection,
    service: &str,
    letters: Vec<DeadLetter>,
    to_topic: Option<&str>,
) -> Result<Vec<Replay>, Failure> {
    let dlq = dlq_topic(service);
    let mut targets: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    let mut plan = Vec::with_capacity(letters.len());
    for letter in letters {
        let topic = match to_topic {
            Some(t) => t.to_string(),
            None => letter.text(header::TOPIC).ok_or_else(|| {
                Failure::usage(format!(
                    "the dead letter at {dlq}@{} has no {} header: name a topic with --to-topic; \
                     nothing was replayed",
                    letter.at,
                    header::TOPIC
                ))
            })?,
        };
        if !targets.contains_key(&topic) {
            let ps = partitions_of(conn, &topic).map_err(|f| Failure {
                message: format!("cannot replay to {topic:?}: {f}; nothing was replayed"),
                code: f.code,
            })?;
            targets.insert(topic.clone(), ps);
        }
        // Back to the partition it came from keeps it in order with its key's other
        // records, whichever partitioner first wrote them; --to-topic is another
        // topic, whose partitions mean nothing to the source's.
        let partition = letter
            .number::<i32>(header::PARTITION)
            .filter(|p| to_topic.is_none() && targets[&topic].contains(p));
        plan.push(Replay {
            marker: format!("{dlq}@{}", letter.at),
            letter,
            topic,
            partition,
        });
    }
    Ok(plan)
}

/// What became of one replayed record: its (partition, offset), or why it failed;
/// `None` until the broker answers.
type Delivered = Option<Result<(i32, i64), String>>;

/// What became of each record, by its index in the plan.
struct Deliveries(Arc<Mutex<Vec<Delivered>>>);

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = usize;
    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = all.get_mut(index) {
            *slot = Some(outcome);
        }
    }
}

/// Sends the plan in order with an idempotent producer; all must be acknowledged.
fn send(conn: &Connection, plan: &[Replay]) -> Result<Vec<(i32, i64)>, Failure> {
    let results = Arc::new(Mutex::new(vec![None; plan.len()]));
    // murmur2_random is the Java client's partitioner, for records partitioned by key.
    let producer: BaseProducer<Deliveries> = conn
        .config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .create_with_context(Deliveries(results.clone()))
        .map_err(|e| Failure::broker(conn, "cannot create a producer", e))?;
    for (i, r) in plan.iter().enumerate() {
        let mut headers = OwnedHeaders::new();
        for (k, v) in r
            .letter
            .original_headers()
            .filter(|(k, _)| k != header::REPLAYED_FROM)
        {
            headers = headers.insert(Header {
                key: k,
                value: v.as_deref(),
            });
        }
        headers = headers.insert(Header {
            key: header::REPLAYED_FROM,
            value: Some(r.marker.as_bytes()),
        });
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&r.topic, i).headers(headers);
        if let Some(k) = &r.letter.key {
            record = record.key(k);
        }
        if let Some(v) = &r.letter.value {
            record = record.payload(v);
        }
        if let Some(p) = r.partition {
            record = record.partition(p);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                // A full local queue is back-pressure: serve deliveries and try again.
                Err((e, back))
                    if e.rdkafka_error_code()
                        == Some(rdkafka::error::RDKafkaErrorCode::QueueFull) =>
                {
                    producer.poll(Duration::from_millis(50));
                    record = back;
                }
                Err((e, _)) => {
                    return Err(Failure::refused(format!("cannot replay {}: {e}", r.marker)));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| Failure::broker(conn, "replayed records not acknowledged", e))?;
    let results = results.lock().unwrap_or_else(|p| p.into_inner());
    let mut delivered = Vec::with_capacity(plan.len());
    let mut failed = Vec::new();
    for (r, outcome) in plan.iter().zip(results.iter()) {
        match outcome {
            Some(Ok(at)) => delivered.push(*at),
            Some(Err(e)) => failed.push(format!("{}: {e}", r.marker)),
            None => failed.push(format!("{}: no acknowledgement", r.marker)),
        }
    }
    if failed.is_empty() {
        return Ok(delivered);
    }
    Err(Failure::refused(format!(
        "{} of {} dead letters were not replayed ({}); the others were",
        failed.len(),
        plan.len(),
        failed.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_as_list_prints_them() {
        let p = |partition, offset| Position { partition, offset };
        assert_eq!(parse_position("7").unwrap(), p(0, 7));
        assert_eq!(parse_position("2:7").unwrap(), p(2, 7));
        assert_eq!(p(0, 7).to_string(), "7");
        assert_eq!(p(2, 7).to_string(), "2:7");
        for bad in ["-1", "x", "1:", ":1", "1:-2", ""] {
            assert_eq!(parse_position(bad).unwrap_err().code, 2, "{bad:?}");
        }
    }

    #[test]
    fn header_names_share_the_prefix_a_replay_drops() {
        for h in [
            header::ERROR,
            header::ERROR_KIND,
            header::TOPIC,
            header::PARTITION,
            header::OFFSET,
            header::ATTEMPTS,
            header::SERVICE,
            header::TIME_MS,
        ] {
            assert!(h.starts_with(header::PREFIX), "{h}");
        }
        assert!(!header::REPLAYED_FROM.starts_with(header::PREFIX));
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in cases {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn times_print_as_rfc_3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339(951_868_800_000), "2000-03-01T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        let back = super::super::consume::parse_datetime("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(rfc3339(back), "2026-11-23T10:00:00.000Z");
    }

    #[test]
    fn previews_are_short_single_lines() {
        assert_eq!(preview(None, 10), "null");
        assert_eq!(preview(Some(b""), 10), "\"\"");
        assert_eq!(preview(Some(b"a\nb\tc"), 10), "a\\nb\\tc");
        assert_eq!(preview(Some(b"\x1b[31mred"), 20), "\\u{1b}[31mred");
        assert_eq!(preview(Some(b"abcdefghijkl"), 5), "abcd…");
        assert_eq!(preview(Some("ééééé".as_bytes()), 5), "ééééé");
        assert_eq!(preview(Some(&[0xff, 0x00]), 10), "0xff00");
        assert_eq!(preview(Some(&[0xff; 8]), 6), "0xffffff…");
    }

    #[test]
    fn json_encodes_bytes_as_text_or_base64_and_keeps_original_headers() {
        let d = DeadLetter {
            at: Position {
                partition: 0,
                offset: 3,
            },
            timestamp_ms: Some(5),
            key: Some(b"k".to_vec()),
            value: Some(vec![0xff, 0xfe]),
            headers: vec![
                ("h".into(), Some(b"x".into())),
                ("h".into(), None),
                (header::TOPIC.into(), Some(b"orders".into())),
                (header::PARTITION.into(), Some(b"1".into())),
                (header::ATTEMPTS.into(), Some(b"4".into())),
                (header::TIME_MS.into(), Some(b"0".into())),
            ],
        };
        let j = to_json("svc.dlq", &d);
        assert_eq!(j["key"], "k");
        assert_eq!(j["key_encoding"], "utf8");
        assert_eq!(j["value"], "//4=");
        assert_eq!(j["value_encoding"], "base64");
        assert_eq!(j["source_topic"], "orders");
        assert_eq!(j["source_partition"], 1);
        assert_eq!(j["source_offset"], serde_json::Value::Null);
        assert_eq!(j["attempts"], 4);
        assert_eq!(j["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(j["dlq_position"], "3");
        assert_eq!(
            j["headers"],
            serde_json::json!([
                {"name": "h", "value": "x", "encoding": "utf8"},
                {"name": "h", "value": null, "encoding": null},
            ])
        );
    }
}
