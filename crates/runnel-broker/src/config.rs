//! The broker's settings: a typed struct with defaults, one setter by name (shared by the
//! config file, the environment and the command line), and `validate()`.

use std::net::SocketAddr;
use std::path::PathBuf;

use runnel_log::Durability;
use runnel_log::config::PARTITIONS_MAX;

/// Kafka's `socket.request.max.bytes`: the largest request frame accepted. Larger frames
/// close the connection before their body is read.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 100 << 20;
/// Connections served at once; more are accepted and closed at once, so a flood cannot
/// exhaust file descriptors or memory.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// Connections served at once from one peer IP address (Kafka's `max.connections.per.ip`,
/// unlimited there): one misbehaving host cannot take every slot of `connections-max`.
/// A quarter of them by default, so at least four hosts always get in.
pub const CONNECTIONS_PER_IP_MAX_DEFAULT: usize = CONNECTIONS_MAX_DEFAULT / 4;
/// Kafka's `connections.max.idle.ms` (10 minutes there too): a connection that has no
/// request in progress for this long is closed, so silent sockets give their slot back.
pub const CONNECTION_IDLE_MS_MAX_DEFAULT: u32 = 600_000;
/// Once the first byte of a request frame has arrived, the whole frame must arrive
/// within this long (30 s, as Kafka's client-side `request.timeout.ms`), so a peer
/// cannot hold a partial frame and its buffer open forever.
pub const FRAME_READ_MS_MAX_DEFAULT: u32 = 30_000;
/// Kafka's broker `fetch.max.bytes` (55 MiB there too): the most record bytes one Fetch
/// response carries, whatever the request asks.
pub const FETCH_BYTES_MAX_DEFAULT: usize = 57_671_680;
/// Kafka's `offsets.retention.minutes` (7 days there too, since Kafka 2.0): a consumer
/// group without members for this long is forgotten and its committed offsets deleted.
pub const OFFSETS_RETENTION_MINUTES_DEFAULT: u32 = 10_080;
/// The broker's node id, the same in Metadata, FindCoordinator and leader fields.
pub const NODE_ID: i32 = 1;

/// Settings of `runnel serve`. Every field has a default; see [`BrokerConfig::KEYS`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Where the Kafka listener binds. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// The `host:port` clients are told to connect to (Metadata, FindCoordinator). When
    /// unset, the listen address (with the port actually bound).
    pub advertise: Option<String>,
    /// Where the log keeps its data.
    pub data_dir: PathBuf,
    /// Where the HTTP API will listen (used from the operations work on).
    pub http: SocketAddr,
    /// Partitions of topics created automatically or without an explicit count.
    pub default_partitions: u32,
    /// Whether Metadata requests create unknown topics, as Kafka's
    /// `auto.create.topics.enable` (on by default there too).
    pub auto_create_topics: bool,
    /// The durability default for topics (`runnel.durability`).
    pub durability: Durability,
    /// Largest request frame accepted.
    pub frame_bytes_max: usize,
    /// Connections served at once; more are accepted and closed at once.
    pub connections_max: usize,
    /// Connections served at once from one peer IP address (Kafka's
    /// `max.connections.per.ip`); more from that address are accepted and closed at
    /// once, with a warning, while the others are served on. Default 256.
    pub connections_per_ip_max: usize,
    /// Kafka's `connections.max.idle.ms`: a connection with no request in progress for
    /// this long is closed. A request in progress (a Fetch the broker is holding, a
    /// Produce waiting for its fsync) is not idle time. Default 600000 (10 minutes).
    pub connection_idle_ms_max: u32,
    /// How long a request frame may take to arrive once its first byte has: a slower
    /// frame closes the connection and frees its buffer. Default 30000 (30 s).
    pub frame_read_ms_max: u32,
    /// Kafka's broker `fetch.max.bytes`: the record bytes of one Fetch response at most.
    /// A request's `max_bytes` is capped by it, and `max_bytes` or
    /// `partition_max_bytes` of zero or less mean this cap. As in Kafka (KIP-74), the
    /// first batch is returned whole even when larger, so consumers make progress.
    /// Default 57671680 (55 MiB).
    pub fetch_bytes_max: usize,
    /// Log filter for the binary (`error`, `warn`, `info`, `debug`, `trace`).
    pub log_level: String,
    /// Kafka's `group.initial.rebalance.delay.ms`: how long a new group's first
    /// rebalance waits for more members.
    pub group_initial_rebalance_delay_ms: u32,
    /// Kafka's `group.min.session.timeout.ms`.
    pub group_session_timeout_ms_min: u32,
    /// Kafka's `group.max.session.timeout.ms`.
    pub group_session_timeout_ms_max: u32,
    /// Kafka's `offsets.retention.minutes`: a group that has had no members for this
    /// long (KIP-211: counted from when it became empty, or from its last commit when
    /// it has only offsets) is forgotten and its committed offsets are deleted, so
    /// groups do not pile up for ever. Default 10080 (7 days).
    pub offsets_retention_minutes: u32,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertise: None,
            data_dir: PathBuf::from("./runnel-data"),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            default_partitions: 1,
            auto_create_topics: true,
            durability: Durability::Always,
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX_DEFAULT,
            connection_idle_ms_max: CONNECTION_IDLE_MS_MAX_DEFAULT,
            frame_read_ms_max: FRAME_READ_MS_MAX_DEFAULT,
            fetch_bytes_max: FETCH_BYTES_MAX_DEFAULT,
            log_level: "info".into(),
            group_initial_rebalance_delay_ms: 3_000,
            group_session_timeout_ms_min: 6_000,
            group_session_timeout_ms_max: 1_800_000,
            offsets_retention_minutes: OFFSETS_RETENTION_MINUTES_DEFAULT,
        }
    }
}

/// A rejected setting, with what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {key}={value:?}: {reason}")]
pub struct BrokerConfigError {
    /// The setting's name.
    pub key: String,
    /// The rejected value.
    pub value: String,
    /// What would be accepted.
    pub reason: String,
}

fn bad(key: &str, value: &str, reason: impl Into<String>) -> BrokerConfigError {
    BrokerConfigError {
        key: key.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

impl BrokerConfig {
    /// Setting names, as used in the config file (`listen = 127.0.0.1:9092`), in the
    /// environment (`RUNNEL_LISTEN`) and as flags (`--listen`).
    pub const KEYS: &'static [&'static str] = &[
        "listen",
        "advertise",
        "data-dir",
        "http",
        "partitions",
        "auto-create-topics",
        "durability",
        "frame-bytes-max",
        "connections-max",
        "connections-per-ip-max",
        "connection-idle-ms-max",
        "frame-read-ms-max",
        "fetch-bytes-max",
        "log-level",
        "group-initial-rebalance-delay-ms",
        "group-min-session-timeout-ms",
        "group-max-session-timeout-ms",
        "offsets-retention-minutes",
    ];

    /// Sets one setting by name, checking its syntax.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), BrokerConfigError> {
        let v = value.trim();
        let addr = |what: &str| -> Result<SocketAddr, BrokerConfigError> {
            v.parse().map_err(|_| {
                bad(
                    key,
                    value,
                    format!("expected {what} as IP:PORT, e.g. 127.0.0.1:9092"),
                )
            })
        };
        let number = || -> Result<u64, BrokerConfigError> {
            v.parse()
                .map_err(|_| bad(key, value, "expected a whole number"))
        };
        let ms = |n: u64| -> Result<u32, BrokerConfigError> {
            u32::try_from(n)
                .ok()
                .filter(|n| *n <= i32::MAX as u32)
                .ok_or_else(|| bad(key, value, "too large"))
        };
        match key {
            "listen" => self.listen = addr("an address")?,
            "advertise" => self.advertise = (!v.is_empty()).then(|| v.to_string()),
            "data-dir" => self.data_dir = PathBuf::from(v),
            "http" => self.http = addr("an address")?,
            "partitions" => {
                self.default_partitions =
                    u32::try_from(number()?).map_err(|_| bad(key, value, "too large"))?;
            }
            "auto-create-topics" => {
                self.auto_create_topics = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(bad(key, value, "expected true or false")),
                };
            }
            "durability" => self.durability = v.parse().map_err(|e: String| bad(key, value, e))?,
            "frame-bytes-max" => self.frame_bytes_max = number()? as usize,
            "connections-max" => self.connections_max = number()? as usize,
            "connections-per-ip-max" => self.connections_per_ip_max = number()? as usize,
            "connection-idle-ms-max" => self.connection_idle_ms_max = ms(number()?)?,
            "frame-read-ms-max" => self.frame_read_ms_max = ms(number()?)?,
            "fetch-bytes-max" => self.fetch_bytes_max = number()? as usize,
            "log-level" => self.log_level = v.to_string(),
            "group-initial-rebalance-delay-ms" => {
                self.group_initial_rebalance_delay_ms = ms(number()?)?;
            }
            "group-min-session-timeout-ms" => self.group_session_timeout_ms_min = ms(number()?)?,
            "group-max-session-timeout-ms" => self.group_session_timeout_ms_max = ms(number()?)?,
            "offsets-retention-minutes" => {
                self.offsets_retention_minutes =
                    u32::try_from(number()?).map_err(|_| bad(key, value, "too large"))?;
            }
            _ => {
                return Err(bad(
                    key,
                    value,
                    format!("unknown setting; known: {}", Self::KEYS.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// Checks the relations and ranges `set` cannot check alone.
    pub fn validate(&self) -> Result<(), BrokerConfigError> {
        if self.default_partitions == 0 || self.default_partitions > PARTITIONS_MAX {
            return Err(bad(
                "partitions",
                &self.default_partitions.to_string(),
                format!("must be between 1 and {PARTITIONS_MAX}"),
            ));
        }
        if !(1024..=1 << 30).contains(&self.frame_bytes_max) {
            return Err(bad(
                "frame-bytes-max",
                &self.frame_bytes_max.to_string(),
                "must be between 1024 and 1073741824",
            ));
        }
        if self.connections_max == 0 || self.connections_max > 1_000_000 {
            return Err(bad(
                "connections-max",
                &self.connections_max.to_string(),
                "must be between 1 and 1000000",
            ));
        }
        if self.connections_per_ip_max == 0 || self.connections_per_ip_max > 1_000_000 {
            return Err(bad(
                "connections-per-ip-max",
                &self.connections_per_ip_max.to_string(),
                "must be between 1 and 1000000",
            ));
        }
        for (key, ms) in [
            ("connection-idle-ms-max", self.connection_idle_ms_max),
            ("frame-read-ms-max", self.frame_read_ms_max),
        ] {
            if ms == 0 {
                return Err(bad(
                    key,
                    &ms.to_string(),
                    "must be at least 1 (milliseconds)",
                ));
            }
        }
        // Kafka's floor for `fetch.max.bytes`; the ceiling keeps a response's size
        // inside an int32 frame with room for its headers.
        if !(1024..=1 << 30).contains(&self.fetch_bytes_max) {
            return Err(bad(
                "fetch-bytes-max",
                &self.fetch_bytes_max.to_string(),
                "must be between 1024 and 1073741824",
            ));
        }
        if self.group_session_timeout_ms_min > self.group_session_timeout_ms_max {
            return Err(bad(
                "group-min-session-timeout-ms",
                &self.group_session_timeout_ms_min.to_string(),
                "must not exceed group-max-session-timeout-ms",
            ));
        }
        // Kafka's range for `offsets.retention.minutes` (an int, at least 1).
        if self.offsets_retention_minutes == 0 || self.offsets_retention_minutes > i32::MAX as u32 {
            return Err(bad(
                "offsets-retention-minutes",
                &self.offsets_retention_minutes.to_string(),
                "must be between 1 and 2147483647 (minutes)",
            ));
        }
        if let Some(a) = &self.advertise {
            parse_host_port(a).map_err(|reason| bad("advertise", a, reason))?;
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str())
            && !self.log_level.contains('=')
        {
            return Err(bad(
                "log-level",
                &self.log_level,
                "expected error, warn, info, debug, trace or a filter like runnel_broker=debug",
            ));
        }
        Ok(())
    }
}

impl BrokerConfig {
    /// The group coordinator's settings.
    #[must_use]
    pub fn group_config(&self) -> runnel_group::Config {
        runnel_group::Config {
            session_timeout_ms_min: self.group_session_timeout_ms_min as i32,
            session_timeout_ms_max: self.group_session_timeout_ms_max as i32,
            initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms as i32,
            offsets_retention_ms: i64::from(self.offsets_retention_minutes) * 60_000,
            ..runnel_group::Config::default()
        }
    }
}

/// Splits `host:port`.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let port: u16 = port
        .parse()
        .map_err(|_| "the port must be a number from 1 to 65535")?;
    if host.is_empty() || port == 0 {
        return Err("expected HOST:PORT with a non-zero port".into());
    }
    Ok((
        host.trim_matches(|c| c == '[' || c == ']').to_string(),
        port,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_settable() {
        let mut c = BrokerConfig::default();
        for (k, v) in [
            ("listen", "127.0.0.1:0"),
            ("advertise", "localhost:19092"),
            ("data-dir", "/tmp/x"),
            ("http", "127.0.0.1:0"),
            ("partitions", "4"),
            ("auto-create-topics", "false"),
            ("durability", "interval:50"),
            ("frame-bytes-max", "2048"),
            ("connections-max", "10"),
            ("connections-per-ip-max", "5"),
            ("connection-idle-ms-max", "300"),
            ("frame-read-ms-max", "200"),
            ("fetch-bytes-max", "65536"),
            ("log-level", "debug"),
            ("group-initial-rebalance-delay-ms", "0"),
            ("group-min-session-timeout-ms", "1000"),
            ("group-max-session-timeout-ms", "60000"),
            ("offsets-retention-minutes", "1440"),
        ] {
            c.set(k, v).unwrap();
        }
        c.validate().unwrap();
        assert_eq!(c.default_partitions, 4);
        assert!(!c.auto_create_topics);
        assert_eq!(c.advertise.as_deref(), Some("localhost:19092"));
        assert_eq!(BrokerConfig::KEYS.len(), 18);
        assert_eq!(c.group_config().offsets_retention_ms, 86_400_000);
        assert_eq!(
            BrokerConfig::default().group_config().offsets_retention_ms,
            runnel_group::OFFSETS_RETENTION_MS_DEFAULT
        );
        assert_eq!(c.connections_per_ip_max, 5);
        assert_eq!(c.connection_idle_ms_max, 300);
        assert_eq!(c.frame_read_ms_max, 200);
        assert_eq!(c.fetch_bytes_max, 65536);
        assert_eq!(c.group_config().initial_rebalance_delay_ms, 0);
    }

    #[test]
    fn bad_values_say_what_is_expected() {
        let mut c = BrokerConfig::default();
        let e = c.set("listen", "nowhere").unwrap_err();
        assert!(e.to_string().contains("IP:PORT"), "{e}");
        assert!(c.set("durability", "sometimes").is_err());
        assert!(c.set("auto-create-topics", "yes").is_err());
        assert!(
            c.set("colour", "blue")
                .unwrap_err()
                .to_string()
                .contains("unknown setting")
        );
        c.set("partitions", "0").unwrap();
        assert!(c.validate().is_err());
        let mut c = BrokerConfig::default();
        c.set("advertise", "host-without-port").unwrap();
        assert!(c.validate().is_err());
        for (k, v) in [
            ("connections-per-ip-max", "0"),
            ("connection-idle-ms-max", "0"),
            ("frame-read-ms-max", "0"),
            ("fetch-bytes-max", "100"),
            ("offsets-retention-minutes", "0"),
            ("offsets-retention-minutes", "2147483648"),
        ] {
            let mut c = BrokerConfig::default();
            c.set(k, v).unwrap();
            let e = c.validate().unwrap_err();
            assert_eq!(e.key, k, "{e}");
        }
        assert!(c.set("connection-idle-ms-max", "4294967296").is_err());
    }
}
