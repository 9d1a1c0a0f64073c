//! The `runnel` command. With no subcommand it serves, so `cargo run --release` starts
//! the broker on the defaults.

mod bench;
mod demo;
mod example;
mod histogram;
mod tools;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use runnel_broker::{BrokerConfig, Server};
use runnel_log::{Log, LogConfig};

// A peer's lying length prefix must not abort the broker: see runnel-alloc.
#[global_allocator]
static ALLOC: runnel_alloc::LazyHuge = runnel_alloc::LazyHuge;

#[derive(Parser, Debug)]
#[command(
    name = "runnel",
    version,
    about = "An event-streaming platform that speaks the Kafka protocol"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the broker (the default when no command is given).
    Serve(Box<ServeArgs>),
    /// Load generator for any Kafka-compatible broker: MB/s, msgs/s and latency.
    #[command(
        subcommand,
        after_help = "EXAMPLES:
    runnel bench produce --count 1000000 --message-bytes 1024 --partitions 8
    runnel bench consume --topic runnel-bench --count 1000000
    runnel bench e2e --rate-mb 20 --duration 20"
    )]
    Bench(BenchMode),
    /// Create, list, describe, delete and reconfigure topics.
    Topic {
        #[command(flatten)]
        conn: tools::Connection,
        #[command(subcommand)]
        cmd: tools::topic::TopicCommand,
    },
    /// Write records from standard input or a file.
    Produce {
        #[command(flatten)]
        conn: tools::Connection,
        #[command(flatten)]
        args: tools::produce::ProduceArgs,
    },
    /// Read records: from the start, the end, an offset or a time; once or following.
    Consume {
        #[command(flatten)]
        conn: tools::Connection,
        #[command(flatten)]
        args: tools::consume::ConsumeArgs,
    },
    /// List, describe, delete consumer groups and reset their offsets.
    Group {
        #[command(flatten)]
        conn: tools::Connection,
        #[command(subcommand)]
        cmd: tools::group::GroupCommand,
    },
    /// Run one service of the reference system (the essays' shop, coffee shop, family).
    Example(example::ExampleArgs),
    /// Run the essays' systems as separate processes and tell their stories.
    Demo(demo::DemoArgs),
    /// List a service's dead letters (`<SERVICE>.dlq`) and replay them to their source.
    Dlq {
        #[command(flatten)]
        conn: tools::Connection,
        #[command(subcommand)]
        cmd: tools::dlq::DlqCommand,
    },
}

#[derive(Subcommand, Debug)]
enum BenchMode {
    /// Produce messages and report acknowledgement latency.
    Produce(bench::BenchArgs),
    /// Read a topic from the beginning (no group) and report throughput.
    Consume(bench::BenchArgs),
    /// Produce (optionally at --rate-mb) while consuming; report end-to-end latency.
    E2e(bench::BenchArgs),
}

/// Settings come from the config file, then the environment, then these flags; later
/// ones win. Every flag also reads `RUNNEL_<NAME>` from the environment.
#[derive(clap::Args, Debug, Default)]
#[command(after_help = "EXAMPLES:
    runnel serve
    runnel serve --listen 127.0.0.1:0 --data-dir /tmp/runnel --durability never
    RUNNEL_PARTITIONS=4 runnel serve --advertise kafka.local:9092

CONFIG FILE (--config): one `key = value` per line with the flag names as keys,
for example `listen = 127.0.0.1:9092`; `#` starts a comment.")]
struct ServeArgs {
    /// Config file to read first.
    #[arg(long, env = "RUNNEL_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// Kafka listener address; port 0 picks a free port [default: 127.0.0.1:9092]
    #[arg(long, env = "RUNNEL_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Address given to clients in metadata [default: the listen address]
    #[arg(long, env = "RUNNEL_ADVERTISE", value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Data directory [default: ./runnel-data]
    #[arg(long, env = "RUNNEL_DATA_DIR", value_name = "DIR")]
    data_dir: Option<String>,
    /// HTTP API address: REST, /metrics and /health; port 0 picks a free port [default: 127.0.0.1:8080]
    #[arg(long, env = "RUNNEL_HTTP", value_name = "ADDR")]
    http: Option<String>,
    /// Partitions of auto-created topics [default: 1]
    #[arg(long, env = "RUNNEL_PARTITIONS", value_name = "N")]
    partitions: Option<String>,
    /// Create unknown topics on Metadata requests: true or false [default: true]
    #[arg(long, env = "RUNNEL_AUTO_CREATE_TOPICS", value_name = "BOOL")]
    auto_create_topics: Option<String>,
    /// When appends are fsynced: always, interval:MS or never [default: always]
    #[arg(long, env = "RUNNEL_DURABILITY", value_name = "POLICY")]
    durability: Option<String>,
    /// Largest request frame in bytes [default: 104857600]
    #[arg(long, env = "RUNNEL_FRAME_BYTES_MAX", value_name = "BYTES")]
    frame_bytes_max: Option<String>,
    /// Connections served at once [default: 1024]
    #[arg(long, env = "RUNNEL_CONNECTIONS_MAX", value_name = "N")]
    connections_max: Option<String>,
    /// Connections served at once from one peer IP address, like Kafka's
    /// max.connections.per.ip [default: 256]
    #[arg(long, env = "RUNNEL_CONNECTIONS_PER_IP_MAX", value_name = "N")]
    connections_per_ip_max: Option<String>,
    /// Close a connection with no request in progress for this long, like Kafka's
    /// connections.max.idle.ms [default: 600000]
    #[arg(long, env = "RUNNEL_CONNECTION_IDLE_MS_MAX", value_name = "MS")]
    connection_idle_ms_max: Option<String>,
    /// Close a connection whose request frame does not arrive whole within this long
    /// of its first byte [default: 30000]
    #[arg(long, env = "RUNNEL_FRAME_READ_MS_MAX", value_name = "MS")]
    frame_read_ms_max: Option<String>,
    /// Record bytes in one Fetch response at most (the first batch always whole), like
    /// Kafka's fetch.max.bytes [default: 57671680]
    #[arg(long, env = "RUNNEL_FETCH_BYTES_MAX", value_name = "BYTES")]
    fetch_bytes_max: Option<String>,
    /// Log level: error, warn, info, debug, trace, or a filter [default: info]
    #[arg(long, env = "RUNNEL_LOG_LEVEL", value_name = "LEVEL")]
    log_level: Option<String>,
    /// How long a new consumer group waits for more members before its first
    /// rebalance completes [default: 3000]
    #[arg(
        long,
        env = "RUNNEL_GROUP_INITIAL_REBALANCE_DELAY_MS",
        value_name = "MS"
    )]
    group_initial_rebalance_delay_ms: Option<String>,
    /// Shortest consumer session timeout accepted [default: 6000]
    #[arg(long, env = "RUNNEL_GROUP_MIN_SESSION_TIMEOUT_MS", value_name = "MS")]
    group_min_session_timeout_ms: Option<String>,
    /// Longest consumer session timeout accepted [default: 1800000]
    #[arg(long, env = "RUNNEL_GROUP_MAX_SESSION_TIMEOUT_MS", value_name = "MS")]
    group_max_session_timeout_ms: Option<String>,
    /// Forget a consumer group, and delete its committed offsets, once it has had no
    /// members this long, like Kafka's offsets.retention.minutes [default: 10080]
    #[arg(long, env = "RUNNEL_OFFSETS_RETENTION_MINUTES", value_name = "MINUTES")]
    offsets_retention_minutes: Option<String>,
}

impl ServeArgs {
    fn flags(&self) -> [(&'static str, &Option<String>); 18] {
        [
            ("listen", &self.listen),
            ("advertise", &self.advertise),
            ("data-dir", &self.data_dir),
            ("http", &self.http),
            ("partitions", &self.partitions),
            ("auto-create-topics", &self.auto_create_topics),
            ("durability", &self.durability),
            ("frame-bytes-max", &self.frame_bytes_max),
            ("connections-max", &self.connections_max),
            ("connections-per-ip-max", &self.connections_per_ip_max),
            ("connection-idle-ms-max", &self.connection_idle_ms_max),
            ("frame-read-ms-max", &self.frame_read_ms_max),
            ("fetch-bytes-max", &self.fetch_bytes_max),
            ("log-level", &self.log_level),
            (
                "group-initial-rebalance-delay-ms",
                &self.group_initial_rebalance_delay_ms,
            ),
            (
                "group-min-session-timeout-ms",
                &self.group_min_session_timeout_ms,
            ),
            (
                "group-max-session-timeout-ms",
                &self.group_max_session_timeout_ms,
            ),
            ("offsets-retention-minutes", &self.offsets_retention_minutes),
        ]
    }

    /// File, then environment and flags (clap has already merged those two).
    fn to_config(&self) -> anyhow::Result<BrokerConfig> {
        let mut config = BrokerConfig::default();
        if let Some(path) = &self.config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            for (n, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let (k, v) = line.split_once('=').with_context(|| {
                    format!("{}:{}: expected `key = value`", path.display(), n + 1)
                })?;
                config
                    .set(k.trim(), v.trim())
                    .with_context(|| format!("{}:{}", path.display(), n + 1))?;
            }
        }
        for (key, value) in self.flags() {
            if let Some(v) = value {
                config.set(key, v)?;
            }
        }
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => *args,
        Some(Command::Bench(mode)) => return run_bench(mode),
        Some(Command::Topic { conn, cmd }) => {
            return run_tool("topic", || tools::topic::run_blocking(&conn, cmd));
        }
        Some(Command::Produce { conn, args }) => {
            return run_tool("produce", || tools::produce::run(&conn, args));
        }
        Some(Command::Consume { conn, args }) => {
            return run_tool("consume", || tools::consume::run(&conn, args));
        }
        Some(Command::Group { conn, cmd }) => {
            return run_tool("group", || tools::group::run_blocking(&conn, cmd));
        }
        Some(Command::Dlq { conn, cmd }) => {
            return run_tool("dlq", || tools::dlq::run(&conn, cmd));
        }
        Some(Command::Demo(args)) => {
            init_tracing("warn");
            return demo::run(args);
        }
        Some(Command::Example(args)) => {
            init_tracing(&args.log_level);
            return example::run(args);
        }
        None => ServeArgs::default_from_env(),
    };
    let config = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("runnel: {e:#}");
            return ExitCode::from(2);
        }
    };
    init_tracing(&config.log_level);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runnel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl ServeArgs {
    /// `runnel` with no subcommand: the same settings as `runnel serve`, from the
    /// environment only.
    fn default_from_env() -> ServeArgs {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            args: ServeArgs,
        }
        Only::parse_from(["runnel"]).args
    }
}

/// Runs an operator command that needs the broker address.
fn run_tool(name: &str, f: impl FnOnce() -> Result<(), tools::Failure>) -> ExitCode {
    init_tracing("error");
    tools::finish(name, f())
}

fn run_bench(mode: BenchMode) -> ExitCode {
    init_tracing("warn");
    let result = (|| -> anyhow::Result<()> {
        let args = match &mode {
            BenchMode::Produce(a) | BenchMode::Consume(a) | BenchMode::E2e(a) => a,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        match mode {
            BenchMode::Produce(ref a) | BenchMode::E2e(ref a) => {
                rt.block_on(bench::ensure_topic(a))?
            }
            BenchMode::Consume(_) => {}
        }
        match mode {
            BenchMode::Produce(_) => println!("{}", bench::produce(args)?.line("produced", "ack")),
            BenchMode::Consume(_) => {
                let never = std::sync::atomic::AtomicU64::new(0);
                println!(
                    "{}",
                    bench::consume(args, false, &never)?.line("consumed", "end-to-end")
                );
            }
            BenchMode::E2e(_) => {
                let (p, c) = bench::end_to_end(args)?;
                println!("{}", p.line("produced", "ack"));
                println!("{}", c.line("consumed", "end-to-end"));
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runnel bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn serve(config: BrokerConfig) -> anyhow::Result<()> {
    let mut log_config = LogConfig::new(&config.data_dir);
    log_config.topic_defaults.durability = config.durability;
    // Compaction and the key check of compacted topics look inside compressed batches.
    log_config.batch_codec = Some(Arc::new(runnel_core::records::KafkaCodecs));
    let log = Arc::new(Log::open(log_config).with_context(|| {
        format!(
            "cannot open the data directory {}",
            config.data_dir.display()
        )
    })?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("runnel")
        .build()
        .context("cannot start the async runtime")?;
    let data_dir = config.data_dir.clone();
    let http_addr = config.http;
    runtime.block_on(async {
        let server = Server::bind(config, log.clone())
            .await
            .context("cannot bind the Kafka listener")?;
        let addr = server.local_addr()?;
        let stop = shutdown_signal()?;
        // The HTTP API stops when the broker does.
        let broker = server.broker().clone();
        let mut stopping = broker.shutdown_watch();
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let http = tokio::spawn(runnel_http::serve(
            broker,
            http_addr,
            bound_tx,
            async move {
                let _ = stopping.wait_for(|s| *s).await;
            },
        ));
        let http_bound = match bound_rx.await {
            Ok(a) => a,
            Err(_) => {
                let e = http.await.map_err(anyhow::Error::from)?.err();
                return Err(anyhow::anyhow!(
                    "cannot bind the HTTP API on {http_addr}: {}",
                    e.map_or_else(|| "unknown error".to_string(), |e| e.to_string())
                ));
            }
        };
        let node = server.broker().advertised();
        say(&format!(
            "runnel: Kafka API listening on {addr} (advertised as {}:{}), data in {}",
            node.host,
            node.port,
            data_dir.display()
        ));
        say(&format!(
            "runnel: HTTP API on http://{http_bound} (metrics at /metrics)"
        ));
        server.run(stop).await;
        if let Ok(Err(e)) = http.await {
            tracing::warn!(error = %e, "the HTTP API stopped with an error");
        }
        anyhow::Ok(())
    })?;
    drop(runtime);
    match Arc::try_unwrap(log) {
        Ok(log) => log.close().context("clean shutdown failed")?,
        Err(log) => {
            log.flush().context("flush at shutdown failed")?;
            tracing::warn!(
                "the log is still shared at shutdown; flushed without the clean-shutdown marker"
            );
        }
    }
    say("runnel: stopped cleanly");
    Ok(())
}

/// Prints a status line. A closed standard output (the reader went away) is not a
/// reason for the broker to stop, as `println!` would make it.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when the future is first polled, so a signal that arrives right after the startup
/// line is already caught.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    })
}
