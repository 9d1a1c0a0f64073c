//! `runnel example SERVICE`: one service of the reference system, alone, on a
//! Kafka-compatible broker (`--bootstrap`) or on an embedded log of its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use runnel_services::{Embedded, EmbeddedConfig, Kafka, KafkaConfig, Transport};

/// Runs one reference service until Ctrl-C or SIGTERM.
#[derive(clap::Args, Debug)]
#[command(after_help = "SERVICES:
    shop:    customers, orders, notifications, loyalty
    coffee:  cashier, barista, counter
    family:  daughter, daddy, mummy, grandma

EXAMPLES:
    runnel serve &                                   # a broker for several services
    runnel example customers --bootstrap 127.0.0.1:9092 --http 127.0.0.1:8081
    runnel example orders --bootstrap 127.0.0.1:9092 --http 127.0.0.1:8082
    runnel example notifications --bootstrap 127.0.0.1:9092
    runnel example barista --bootstrap 127.0.0.1:9092 --instance b2 --set prep.frappuccino_ms=3000
    runnel example daddy                             # alone, on an embedded log in --data-dir

The service prints `listening on http://ADDR` once it is ready; `runnel demo` runs
them all and tells the essays' stories.")]
pub struct ExampleArgs {
    /// The service to run (see SERVICES below).
    service: String,
    /// A Kafka-compatible broker (Runnel, Apache Kafka, Redpanda). Without it the service
    /// runs on an embedded log in --data-dir, which one process owns at a time.
    #[arg(long, env = "RUNNEL_BOOTSTRAP", value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Where the service keeps its tables (and its embedded log without --bootstrap).
    #[arg(long, default_value = "./runnel-example-data", value_name = "DIR")]
    data_dir: PathBuf,
    /// Where its HTTP API listens: commands, queries, /health, /metrics; port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    http: SocketAddr,
    /// The instance's name; copies of one service need different names.
    #[arg(long, default_value = "0", value_name = "NAME")]
    instance: String,
    /// A service setting, for example `prep.frappuccino_ms=3000`; repeatable.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    settings: Vec<String>,
    /// Log level (error, warn, info, debug, trace).
    #[arg(long, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,
}

/// `runnel example`.
pub fn run(args: ExampleArgs) -> ExitCode {
    if !runnel_examples::SERVICES
        .iter()
        .any(|(_, name, _)| *name == args.service)
    {
        eprintln!(
            "runnel example: no service {:?}; run `runnel example --help` for the list",
            args.service
        );
        return ExitCode::from(2);
    }
    let mut settings = BTreeMap::new();
    for s in &args.settings {
        let Some((k, v)) = s.split_once('=') else {
            eprintln!("runnel example: --set takes NAME=VALUE, not {s:?}");
            return ExitCode::from(2);
        };
        settings.insert(k.to_string(), v.to_string());
    }
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
        .and_then(|rt| rt.block_on(serve(args, settings)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runnel example: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ExampleArgs, settings: BTreeMap<String, String>) -> anyhow::Result<()> {
    let transport: Arc<dyn Transport> = match &args.bootstrap {
        Some(b) => {
            let mut config = KafkaConfig::new(b.clone());
            config.client_id_prefix = format!("runnel-example-{}", args.service);
            Kafka::connect(config).with_context(|| format!("connecting to {b}"))?
        }
        None => Embedded::open(EmbeddedConfig::new(args.data_dir.join("log")))
            .with_context(|| format!("opening the log in {}", args.data_dir.display()))?,
    };
    let env = runnel_examples::Env {
        transport,
        state_dir: args.data_dir.join("state"),
        http: args.http,
        instance: args.instance.clone(),
        settings,
    };
    let running = runnel_examples::start(&args.service, &env)
        .await
        .with_context(|| format!("starting {}", args.service))?;
    // One line that a driver (runnel demo, a script) can wait for.
    println!(
        "{} ({}) ready; listening on http://{}",
        args.service, args.instance, running.http
    );
    runnel_services::wait_for_signal().await;
    tracing::info!("stopping: finishing running handlers; Ctrl-C again exits at once");
    tokio::spawn(async {
        runnel_services::wait_for_signal().await;
        std::process::exit(130);
    });
    running.stop().await.context("stopping")?;
    Ok(())
}
