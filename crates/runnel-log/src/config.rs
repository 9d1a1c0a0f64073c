//! Configuration: per-topic settings with a broker-wide default, and the limits.
//!
//! Topic settings use Kafka's names (`retention.ms`, `segment.bytes`, ...) so that
//! DescribeConfigs and the CLI speak the language Kafka users know. Runnel's own setting,
//! the durability policy, is `runnel.durability`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::BatchCodec;
use crate::error::ConfigError;

/// Largest batch a topic accepts by default: Kafka's `message.max.bytes` (1 MiB plus
/// the 12-byte log overhead). Larger batches get `BatchError::TooLarge`.
pub const MAX_MESSAGE_BYTES_DEFAULT: u32 = 1_048_588;
/// The ceiling for `max.message.bytes`: a batch must fit a fetch response and the
/// broker's frame limit with room to spare.
pub const MAX_MESSAGE_BYTES_LIMIT: u32 = 64 << 20;
/// Segment size at which a new segment starts, by default (Kafka's 1 GiB).
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Largest allowed `segment.bytes`. Index entries store positions as `u32`, so a segment
/// plus one batch must stay below 4 GiB.
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 30;
/// Smallest allowed `segment.bytes`: tiny segments are useful in tests, nonsense below.
pub const SEGMENT_BYTES_MIN: u64 = 1024;
/// Bytes of data between two sparse index entries (Kafka's `index.interval.bytes`).
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;
/// Open handles kept for closed segments; active segments are always open. Past this,
/// the least recently read handle is closed.
pub const OPEN_SEGMENT_FILES_MAX_DEFAULT: usize = 1024;
/// Most partitions a topic may have.
pub const PARTITIONS_MAX: u32 = 10_000;
/// Longest legal topic name (Kafka's limit).
pub const TOPIC_NAME_BYTES_MAX: usize = 249;
/// How long a tombstone outlives its batch by default before the cleaner removes it
/// (Kafka's `delete.retention.ms`, one day): consumers that lag less than this see it.
pub const DELETE_RETENTION_MS_DEFAULT: u64 = 24 * 3600 * 1000;
/// Memory for the cleaner's key map in one pass, by default (Kafka's
/// `log.cleaner.dedupe.buffer.size` is 128 MiB for all cleaner threads).
pub const CLEANER_MAP_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// What one key-map entry costs, counted generously: a 16-byte key hash and an 8-byte
/// offset, the hash table's control byte and load factor, and the slack of a table
/// that doubles when it grows.
pub const CLEANER_MAP_ENTRY_BYTES: usize = 64;

const _: () = assert!(SEGMENT_BYTES_LIMIT + MAX_MESSAGE_BYTES_LIMIT as u64 <= u32::MAX as u64);
const _: () = assert!(MAX_MESSAGE_BYTES_DEFAULT <= MAX_MESSAGE_BYTES_LIMIT);

/// When an appended batch is made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// An append returns only after its data is fsynced. Appends that arrive while an
    /// fsync runs share the next one (group commit).
    #[default]
    Always,
    /// Data is fsynced at least this often, by a background thread. A crash may lose
    /// up to this much acknowledged data.
    Interval(Duration),
    /// The OS decides when data reaches the disk. A crash may lose anything unsynced.
    Never,
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Durability::Always => f.write_str("always"),
            Durability::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            Durability::Never => f.write_str("never"),
        }
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Durability::Always),
            "never" => Ok(Durability::Never),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .ok_or("expected always, interval:MS or never")?;
                let ms: u64 = ms
                    .parse()
                    .map_err(|_| "interval:MS needs a whole number of milliseconds")?;
                if ms == 0 {
                    return Err("interval must be at least 1 ms".into());
                }
                Ok(Durability::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// What happens to old data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    /// Whole segments are deleted by age and size.
    #[default]
    Delete,
    /// Only the latest record per key is kept (see [`crate::cleaner`]).
    Compact,
    /// Both.
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether retention deletes segments.
    #[must_use]
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Whether the cleaner compacts the topic (and appends need keys).
    #[must_use]
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        })
    }
}

impl FromStr for CleanupPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts: Vec<&str> = s.split(',').map(str::trim).collect();
        parts.sort_unstable();
        parts.dedup();
        match parts.as_slice() {
            ["delete"] => Ok(CleanupPolicy::Delete),
            ["compact"] => Ok(CleanupPolicy::Compact),
            ["compact", "delete"] => Ok(CleanupPolicy::CompactDelete),
            _ => Err("expected delete, compact or compact,delete".into()),
        }
    }
}

/// `compression.type`: the codec a topic stores batches in (Kafka's topic setting).
///
/// The log itself never compresses: the append path of the embedder (runnel-core)
/// re-compresses a batch whose codec differs from the topic's before it reaches
/// [`crate::Partition`]. Here it is a setting like any other, named by codec id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CompressionType {
    /// Keep the codec the producer chose (Kafka's default).
    #[default]
    Producer,
    /// Store the records uncompressed.
    Uncompressed,
    /// gzip (codec 1).
    Gzip,
    /// snappy (codec 2).
    Snappy,
    /// lz4 (codec 3).
    Lz4,
    /// zstd (codec 4).
    Zstd,
}

impl CompressionType {
    /// The codec id batches are stored with (batch attributes bits 0-2: 0 none, 1 gzip,
    /// 2 snappy, 3 lz4, 4 zstd), or `None` for [`CompressionType::Producer`]: whatever
    /// the batch has.
    #[must_use]
    pub fn codec(self) -> Option<u8> {
        match self {
            CompressionType::Producer => None,
            CompressionType::Uncompressed => Some(0),
            CompressionType::Gzip => Some(1),
            CompressionType::Snappy => Some(2),
            CompressionType::Lz4 => Some(3),
            CompressionType::Zstd => Some(4),
        }
    }
}

impl fmt::Display for CompressionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompressionType::Producer => "producer",
            CompressionType::Uncompressed => "uncompressed",
            CompressionType::Gzip => "gzip",
            CompressionType::Snappy => "snappy",
            CompressionType::Lz4 => "lz4",
            CompressionType::Zstd => "zstd",
        })
    }
}

impl FromStr for CompressionType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // Kafka's values, lower case as Kafka's validator wants them.
        match s.trim() {
            "producer" => Ok(CompressionType::Producer),
            "uncompressed" => Ok(CompressionType::Uncompressed),
            "gzip" => Ok(CompressionType::Gzip),
            "snappy" => Ok(CompressionType::Snappy),
            "lz4" => Ok(CompressionType::Lz4),
            "zstd" => Ok(CompressionType::Zstd),
            _ => Err("expected producer, uncompressed, gzip, snappy, lz4 or zstd".into()),
        }
    }
}

/// Settings of one topic. Every field has a broker-wide default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    /// `runnel.durability`: when appends are fsynced.
    pub durability: Durability,
    /// `retention.ms`: segments whose newest record is older are deleted. `None` keeps
    /// data forever (Kafka's -1).
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: oldest segments are deleted while the partition is larger.
    /// `None` means no size limit (Kafka's -1, the default).
    pub retention_bytes: Option<u64>,
    /// `segment.bytes`: a segment this large is closed and a new one started.
    pub segment_bytes: u64,
    /// `segment.ms`: a segment this old is closed at the next append, so retention can
    /// delete it even on quiet topics.
    pub segment_ms: u64,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_message_bytes: u32,
    /// `index.interval.bytes`: data bytes between sparse index entries.
    pub index_interval_bytes: u32,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `delete.retention.ms`: on a compacted topic, how long after its batch's max
    /// timestamp a tombstone (null value) is kept, so that consumers see the deletion.
    pub delete_retention_ms: u64,
    /// `compression.type`: the codec batches are stored in; appends in another codec
    /// are re-compressed (by the embedder's append path, not the log).
    pub compression_type: CompressionType,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            durability: Durability::Always,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            segment_ms: 7 * 24 * 3600 * 1000,
            max_message_bytes: MAX_MESSAGE_BYTES_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: DELETE_RETENTION_MS_DEFAULT,
            compression_type: CompressionType::Producer,
        }
    }
}

/// The keys [`TopicConfig::set`] understands, in a stable order.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "delete.retention.ms",
    "index.interval.bytes",
    "max.message.bytes",
    "retention.bytes",
    "retention.ms",
    "runnel.durability",
    "segment.bytes",
    "segment.ms",
];

fn bad(key: &str, value: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn parse_in<T: FromStr + PartialOrd + fmt::Display>(
    key: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let v: T = value
        .trim()
        .parse()
        .map_err(|_| bad(key, value, "not a whole number"))?;
    if v < min || v > max {
        return Err(bad(key, value, format!("must be between {min} and {max}")));
    }
    Ok(v)
}

/// Kafka writes "no limit" as -1.
fn parse_limit(key: &str, value: &str) -> Result<Option<u64>, ConfigError> {
    if value.trim() == "-1" {
        return Ok(None);
    }
    parse_in(key, value, 0u64, i64::MAX as u64).map(Some)
}

fn show_limit(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_string(), |v| v.to_string())
}

impl TopicConfig {
    /// Sets one setting by its Kafka name, validating the value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        match key {
            "runnel.durability" => {
                self.durability = value.parse().map_err(|e: String| bad(key, value, e))?;
            }
            "retention.ms" => self.retention_ms = parse_limit(key, value)?,
            "retention.bytes" => self.retention_bytes = parse_limit(key, value)?,
            "segment.bytes" => {
                self.segment_bytes = parse_in(key, value, SEGMENT_BYTES_MIN, SEGMENT_BYTES_LIMIT)?;
            }
            "segment.ms" => self.segment_ms = parse_in(key, value, 1, i64::MAX as u64)?,
            "max.message.bytes" => {
                self.max_message_bytes = parse_in(key, value, 64, MAX_MESSAGE_BYTES_LIMIT)?;
            }
            "index.interval.bytes" => {
                self.index_interval_bytes = parse_in(key, value, 0, 1 << 30)?;
            }
            "cleanup.policy" => {
                self.cleanup_policy = value.parse().map_err(|e: String| bad(key, value, e))?;
            }
            "delete.retention.ms" => {
                self.delete_retention_ms = parse_in(key, value, 0, i64::MAX as u64)?;
            }
            "compression.type" => {
                self.compression_type = value.parse().map_err(|e: String| bad(key, value, e))?;
            }
            _ => return Err(bad(key, value, "unknown topic config key")),
        }
        Ok(())
    }

    /// Reads one setting by its Kafka name.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            "runnel.durability" => self.durability.to_string(),
            "retention.ms" => show_limit(self.retention_ms),
            "retention.bytes" => show_limit(self.retention_bytes),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "index.interval.bytes" => self.index_interval_bytes.to_string(),
            "cleanup.policy" => self.cleanup_policy.to_string(),
            "delete.retention.ms" => self.delete_retention_ms.to_string(),
            "compression.type" => self.compression_type.to_string(),
            _ => return None,
        })
    }

    /// Every setting as `(key, value)`, in [`TOPIC_CONFIG_KEYS`] order.
    #[must_use]
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|k| (*k, self.get(k).expect("every listed key is known")))
            .collect()
    }
}

/// Settings of the whole log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// Where topics live.
    pub data_dir: PathBuf,
    /// Defaults for topics created without explicit settings.
    pub topic_defaults: TopicConfig,
    /// Handles kept open for closed segments (see [`OPEN_SEGMENT_FILES_MAX_DEFAULT`]).
    pub open_segment_files_max: usize,
    /// How often the background thread runs retention. Kafka's
    /// `log.retention.check.interval.ms` defaults to 5 minutes.
    pub retention_check_interval: Duration,
    /// Whether to start the background thread (interval flushes, retention, cleaning).
    /// Tests that drive time by hand turn it off and call the maintenance methods
    /// themselves.
    pub background: bool,
    /// How often the background thread runs the cleaner over compacted topics (Kafka's
    /// `log.cleaner.backoff.ms` is 15 s).
    pub cleaner_interval: Duration,
    /// Memory for the cleaner's key map in one pass (see [`CLEANER_MAP_BYTES_MAX_DEFAULT`]).
    pub cleaner_map_bytes_max: usize,
    /// Decompresses and recompresses batches for the cleaner and the key check of
    /// compacted topics. `None`: compressed batches are kept whole (see [`crate::codec`]).
    pub batch_codec: Option<Arc<dyn BatchCodec>>,
}

impl LogConfig {
    /// Defaults, with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        LogConfig {
            data_dir: data_dir.into(),
            topic_defaults: TopicConfig::default(),
            open_segment_files_max: OPEN_SEGMENT_FILES_MAX_DEFAULT,
            retention_check_interval: Duration::from_secs(300),
            background: true,
            cleaner_interval: Duration::from_secs(15),
            cleaner_map_bytes_max: CLEANER_MAP_BYTES_MAX_DEFAULT,
            batch_codec: None,
        }
    }
}

/// Checks a topic name: `[a-zA-Z0-9._-]`, 1 to 249 characters, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err("the name is longer than 249 characters");
    }
    if name == "." || name == ".." {
        return Err("'.' and '..' are not allowed");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_parses_and_prints() {
        for s in ["always", "never", "interval:250"] {
            let d: Durability = s.parse().unwrap();
            assert_eq!(d.to_string(), s);
        }
        assert!("interval:0".parse::<Durability>().is_err());
        assert!("sometimes".parse::<Durability>().is_err());
    }

    #[test]
    fn every_key_round_trips() {
        let mut c = TopicConfig::default();
        c.set("retention.ms", "-1").unwrap();
        c.set("segment.bytes", "4096").unwrap();
        c.set("cleanup.policy", "delete,compact").unwrap();
        c.set("runnel.durability", "never").unwrap();
        c.set("delete.retention.ms", "1000").unwrap();
        c.set("compression.type", "zstd").unwrap();
        let mut d = TopicConfig::default();
        for (k, v) in c.entries() {
            d.set(k, &v).unwrap();
        }
        assert_eq!(c, d);
        assert_eq!(d.cleanup_policy, CleanupPolicy::CompactDelete);
        assert_eq!(d.compression_type, CompressionType::Zstd);
    }

    #[test]
    fn compression_type_takes_kafkas_values_and_names_the_rest() {
        let mut c = TopicConfig::default();
        assert_eq!(c.get("compression.type").as_deref(), Some("producer"));
        let codecs = [
            ("producer", None),
            ("uncompressed", Some(0)),
            ("gzip", Some(1)),
            ("snappy", Some(2)),
            ("lz4", Some(3)),
            ("zstd", Some(4)),
        ];
        for (value, codec) in codecs {
            c.set("compression.type", value).unwrap();
            assert_eq!(c.compression_type.codec(), codec, "{value}");
            assert_eq!(c.get("compression.type").as_deref(), Some(value));
        }
        for value in ["brotli", "none", "ZSTD", ""] {
            let e = c.set("compression.type", value).unwrap_err();
            assert_eq!(
                (e.key.as_str(), e.value.as_str()),
                ("compression.type", value)
            );
            assert!(e.to_string().contains("zstd"), "{e}");
        }
        assert_eq!(
            c.compression_type,
            CompressionType::Zstd,
            "refusals change nothing"
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        let mut c = TopicConfig::default();
        let e = c.set("segment.bytes", "12").unwrap_err();
        assert_eq!(e.key, "segment.bytes");
        assert!(e.to_string().contains("between"));
        assert!(c.set("no.such.key", "1").is_err());
        assert!(c.set("retention.ms", "soon").is_err());
        assert_eq!(c, TopicConfig::default());
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        for bad in ["", ".", "..", "a/b", "spaces no", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
