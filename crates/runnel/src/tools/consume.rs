//! `runnel consume`: read a topic from a chosen position, once or following it.

use std::collections::HashSet;
use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{Connection, Failure, REQUEST_TIMEOUT, partitions_of};

/// Output formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The value, one per line (with --key-separator: key, separator, value).
    Text,
    /// One JSON object per record: topic, partition, offset, timestamp, key, value, headers.
    Json,
    /// Partition, offset, key and value in hex.
    Hex,
}

/// Options of `runnel consume`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "POSITIONS (--from): earliest, latest, an offset (42), or a time:
  @1700000000000 (ms since the epoch) or 2026-11-23T10:00:00Z.

EXAMPLES:
    runnel consume orders                         # everything, then exit
    runnel consume orders --from latest --follow  # new records as they come
    runnel consume orders --group billing -n 10   # as a member of group billing
    runnel consume orders --format json --from @1700000000000"
)]
pub struct ConsumeArgs {
    /// The topic.
    pub topic: String,
    /// Where to start (ignored with --group when the group has committed offsets).
    #[arg(long, default_value = "earliest")]
    pub from: String,
    /// Only this partition.
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Keep waiting for new records instead of stopping at the end.
    #[arg(long, short = 'F')]
    pub follow: bool,
    /// Consume as a member of this group, committing what was printed.
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Print keys too, separated from the value by SEP (text format).
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
}

/// Runs `runnel consume`.
pub fn run(conn: &Connection, args: ConsumeArgs) -> Result<(), Failure> {
    let partitions = partitions_of(conn, &args.topic)?;
    if let Some(p) = args.partition
        && !partitions.contains(&p)
    {
        return Err(Failure::not_found(format!(
            "topic {:?} has no partition {p} (it has {})",
            args.topic,
            partitions.len()
        )));
    }
    let consumer = conn.consumer(args.group.as_deref())?;
    let start = parse_position(&args.from)?;
    let chosen: Vec<i32> = match args.partition {
        Some(p) => vec![p],
        None => partitions,
    };
    if args.group.is_some() {
        if args.partition.is_some() {
            return Err(Failure::usage("--partition and --group cannot be combined"));
        }
        consumer
            .subscribe(&[&args.topic])
            .map_err(|e| Failure::broker(conn, "cannot join the group", e))?;
    } else {
        let tpl = start_positions(conn, &consumer, &args.topic, &chosen, start)?;
        consumer
            .assign(&tpl)
            .map_err(|e| Failure::broker(conn, "cannot read the topic", e))?;
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut printed = 0u64;
    let mut at_end: HashSet<i32> = HashSet::new();
    // Without --follow, a group member stops once it has owned partitions and read to
    // their ends; if nothing arrives in a while, it stops too.
    let idle_limit = Duration::from_secs(10);
    let mut last_progress = Instant::now();
    loop {
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            if !args.follow && args.group.is_some() && last_progress.elapsed() > idle_limit {
                break;
            }
            continue;
        };
        match result {
            Ok(m) => {
                last_progress = Instant::now();
                at_end.remove(&m.partition());
                print(&mut out, &m, args.format, args.key_separator.as_deref())
                    .map_err(|e| Failure::refused(format!("cannot write output: {e}")))?;
                printed += 1;
                if args.group.is_some() {
                    let _ = consumer.store_offset_from_message(&m);
                    let _ = consumer.commit_message(&m, CommitMode::Async);
                }
            }
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                last_progress = Instant::now();
                at_end.insert(p);
                let owned = if args.group.is_some() {
                    consumer
                        .assignment()
                        .map(|a| a.count())
                        .unwrap_or(usize::MAX)
                } else {
                    chosen.len()
                };
                if !args.follow && owned > 0 && at_end.len() >= owned {
                    break;
                }
            }
            Err(e) => return Err(Failure::broker(conn, "consuming failed", e)),
        }
    }
    let _ = out.flush();
    if args.group.is_some() {
        let _ = consumer.commit_consumer_state(CommitMode::Sync);
    }
    Ok(())
}

/// A parsed `--from`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    Offset(i64),
    /// Milliseconds since the Unix epoch.
    Time(i64),
}

fn parse_position(s: &str) -> Result<Start, Failure> {
    match s {
        "earliest" | "beginning" => Ok(Start::Earliest),
        "latest" | "end" => Ok(Start::Latest),
        _ => {
            if let Some(ms) = s.strip_prefix('@') {
                return ms.parse().map(Start::Time).map_err(|_| bad_position(s));
            }
            if let Ok(n) = s.parse::<i64>() {
                return if n >= 0 {
                    Ok(Start::Offset(n))
                } else {
                    Err(bad_position(s))
                };
            }
            parse_datetime(s)
                .map(Start::Time)
                .ok_or_else(|| bad_position(s))
        }
    }
}

fn bad_position(s: &str) -> Failure {
    Failure::usage(format!(
        "--from {s:?}: expected earliest, latest, an offset, @MILLIS or a time like 2026-11-23T10:00:00Z"
    ))
}

/// `YYYY-MM-DDTHH:MM:SS[Z]` (UTC) to milliseconds since the epoch.
pub fn parse_datetime(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (
        t.next()??,
        t.next().flatten().unwrap_or(0),
        t.next().flatten().unwrap_or(0),
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000)
}

fn start_positions(
    conn: &Connection,
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    start: Start,
) -> Result<TopicPartitionList, Failure> {
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let offset = match start {
            Start::Earliest => Offset::Beginning,
            Start::Latest => Offset::End,
            Start::Offset(n) => Offset::Offset(n),
            Start::Time(ms) => Offset::Offset(ms),
        };
        tpl.add_partition_offset(topic, *p, offset)
            .map_err(|e| Failure::broker(conn, "bad position", e))?;
    }
    if let Start::Time(_) = start {
        tpl = consumer
            .offsets_for_times(tpl, REQUEST_TIMEOUT)
            .map_err(|e| Failure::broker(conn, "cannot look up offsets by time", e))?;
        // A time after the last record resolves to the end (-1), which `assign` reads
        // as "from the end".
    }
    Ok(tpl)
}

fn print(
    out: &mut impl Write,
    m: &BorrowedMessage<'_>,
    format: Format,
    key_separator: Option<&str>,
) -> std::io::Result<()> {
    match format {
        Format::Text => {
            if let Some(sep) = key_separator {
                out.write_all(m.key().unwrap_or_default())?;
                out.write_all(sep.as_bytes())?;
            }
            out.write_all(m.payload().unwrap_or_default())?;
            out.write_all(b"\n")
        }
        Format::Hex => writeln!(
            out,
            "{} {} {} {}",
            m.partition(),
            m.offset(),
            m.key().map_or_else(|| "null".into(), hex),
            m.payload().map_or_else(|| "null".into(), hex)
        ),
        Format::Json => {
            let text = |b: Option<&[u8]>| {
                b.map_or(serde_json::Value::Null, |b| {
                    serde_json::Value::String(String::from_utf8_lossy(b).into_owned())
                })
            };
            let mut headers = serde_json::Map::new();
            if let Some(hs) = m.headers() {
                for h in hs.iter() {
                    headers.insert(h.key.to_string(), text(h.value));
                }
            }
            let record = serde_json::json!({
                "topic": m.topic(),
                "partition": m.partition(),
                "offset": m.offset(),
                "timestamp": m.timestamp().to_millis(),
                "key": text(m.key()),
                "value": text(m.payload()),
                "headers": headers,
            });
            writeln!(out, "{record}")
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse() {
        assert_eq!(parse_position("earliest").unwrap(), Start::Earliest);
        assert_eq!(parse_position("latest").unwrap(), Start::Latest);
        assert_eq!(parse_position("42").unwrap(), Start::Offset(42));
        assert_eq!(
            parse_position("@1700000000000").unwrap(),
            Start::Time(1_700_000_000_000)
        );
        assert_eq!(
            parse_position("2023-11-14T22:13:20Z").unwrap(),
            Start::Time(1_700_000_000_000)
        );
        assert!(parse_position("-1").is_err());
        assert!(parse_position("yesterday").is_err());
        assert_eq!(parse_datetime("1970-01-01"), Some(0));
        assert_eq!(
            parse_datetime("2000-03-01T00:00:00Z"),
            Some(951_868_800_000)
        );
        assert_eq!(parse_datetime("2000-13-01"), None);
    }
}
