//! `runnel demo`: the essays' three systems, each service a separate process, and a
//! short scripted story for each that prints what happens as it happens, tagged with
//! the idea it shows. It exits 0 only if every invariant held.

mod coffee;
mod family;
mod http;
mod procs;
mod shop;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

use procs::Proc;

/// Runs the essays' systems as separate processes and tells their stories.
#[derive(clap::Args, Debug)]
#[command(after_help = "EXAMPLES:
    runnel demo                                  # every scenario, on a broker of its own
    runnel demo --scenario coffee
    runnel demo --bootstrap 127.0.0.1:9092       # on a broker you run (Runnel, Kafka, Redpanda)

Each service runs as `runnel example SERVICE`; their logs are kept in --data-dir.")]
pub struct DemoArgs {
    /// Which story: orders, coffee, family or all.
    #[arg(long, default_value = "all", value_parser = ["orders", "coffee", "family", "all"])]
    scenario: String,
    /// Run on this Kafka-compatible broker instead of starting one.
    #[arg(long, env = "RUNNEL_BOOTSTRAP", value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Where the broker, the services' state and their logs go [default: a new
    /// temporary directory, removed at the end unless --keep].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Keep the data directory (logs, state) after the demo.
    #[arg(long)]
    keep: bool,
    /// Where the started broker serves its HTTP API and web console, to watch the
    /// demo live [default: a free port on 127.0.0.1, printed at the start].
    #[arg(long, value_name = "HOST:PORT")]
    console: Option<std::net::SocketAddr>,
}

/// A port on 127.0.0.1 that nothing listens on now (the broker takes it a moment
/// later).
fn free_local_port() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// The essay ideas a line of the story can show.
#[derive(Clone, Copy, Debug)]
pub enum Idea {
    /// A fact is stated; nobody is asked to do anything.
    Event,
    /// Command (answered), event (stated), query (read from a view).
    CommandEventQuery,
    /// Each service owns a small part; none owns the process.
    NoOwner,
    /// The views agree in the end, not at once.
    EventualConsistency,
    /// A service that was down picks up where it left off.
    CatchUp,
    /// Copies of one service share its work.
    CompetingConsumers,
    /// Every interested service gets every event.
    FanOut,
    /// New subscribers join without anyone changing.
    Extensibility,
    /// Plumbing: what the demo itself does.
    Setup,
}

impl Idea {
    fn tag(self) -> &'static str {
        match self {
            Idea::Event => "event, not request",
            Idea::CommandEventQuery => "command, event, query",
            Idea::NoOwner => "no service owns the process",
            Idea::EventualConsistency => "eventual consistency",
            Idea::CatchUp => "catch-up after failure",
            Idea::CompetingConsumers => "competing consumers",
            Idea::FanOut => "fan-out",
            Idea::Extensibility => "extensibility",
            Idea::Setup => "setup",
        }
    }
}

/// Prints the story and keeps score of the invariants.
pub struct Story {
    started: Instant,
    scenario: &'static str,
    checks: Vec<(String, bool)>,
    summary: Vec<String>,
}

impl Story {
    fn new(scenario: &'static str) -> Story {
        println!("\n=== {scenario} ===");
        Story {
            started: Instant::now(),
            scenario,
            checks: Vec::new(),
            summary: Vec::new(),
        }
    }

    /// One line of the story.
    pub fn say(&self, idea: Idea, text: impl AsRef<str>) {
        println!(
            "{:>6.1}s  [{}]  {}",
            self.started.elapsed().as_secs_f64(),
            idea.tag(),
            text.as_ref()
        );
    }

    /// An invariant: printed, and counted for the exit code.
    pub fn check(&mut self, what: impl Into<String>, held: bool) {
        let what = what.into();
        println!(
            "{:>6.1}s  [{}]  {what}",
            self.started.elapsed().as_secs_f64(),
            if held {
                "invariant held"
            } else {
                "INVARIANT BROKEN"
            }
        );
        self.checks.push((what, held));
    }

    /// A line for the summary at the end.
    pub fn note(&mut self, line: impl Into<String>) {
        self.summary.push(line.into());
    }
}

/// What the stories share: the broker, the data directory, the processes.
pub struct Stage {
    /// The broker's address.
    pub bootstrap: String,
    dir: PathBuf,
    /// A client of the broker, for the lag figures.
    kafka: std::sync::Arc<runnel_services::Kafka>,
    rt: tokio::runtime::Runtime,
}

impl Stage {
    /// Waits until `group` has committed everything in `topics` (lag 0), up to `wait`;
    /// returns the lag it last saw.
    pub fn lag_caught_up(&self, group: &str, topics: &[&str], wait: Duration) -> i64 {
        use runnel_services::Transport;
        let lag = || -> i64 {
            self.rt.block_on(async {
                let mut total = 0;
                for t in topics {
                    let Ok(wm) = self.kafka.watermarks(t).await else {
                        return i64::MAX;
                    };
                    let Ok(committed) = self.kafka.committed(group, t).await else {
                        return i64::MAX;
                    };
                    for (p, (lo, hi)) in wm.iter().enumerate() {
                        let at = committed
                            .iter()
                            .find(|(cp, _)| *cp as usize == p)
                            .map_or(*lo, |(_, o)| *o);
                        total += (hi - at).max(0);
                    }
                }
                total
            })
        };
        let mut last = lag();
        let deadline = Instant::now() + wait;
        while last != 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            last = lag();
        }
        last
    }

    /// Starts `runnel example SERVICE` as its own process and waits until it serves.
    pub fn service(
        &self,
        service: &str,
        instance: &str,
        settings: &[(&str, &str)],
    ) -> anyhow::Result<Proc> {
        let data = self.dir.join(format!("{service}-{instance}"));
        let mut args = vec![
            "example".to_string(),
            service.to_string(),
            "--bootstrap".into(),
            self.bootstrap.clone(),
            "--data-dir".into(),
            data.display().to_string(),
            "--instance".into(),
            instance.to_string(),
            "--log-level".into(),
            "warn".into(),
        ];
        for (k, v) in settings {
            args.push("--set".into());
            args.push(format!("{k}={v}"));
        }
        let label = if instance == "0" {
            service.to_string()
        } else {
            format!("{service} {instance}")
        };
        Proc::start(
            &label,
            args,
            &self.dir.join(format!("{service}-{instance}.log")),
            "listening on",
        )
    }
}

/// Waits until `f` returns `Some`, up to `wait`.
pub fn eventually<T>(wait: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A JSON request to a service; errors become a story-ending error naming the call.
pub fn call(
    p: &Proc,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<http::Answer> {
    http::request(p.addr(), method, path, body.as_ref())
        .with_context(|| format!("{method} {path} on {}", p.label))
}

/// `runnel demo`.
pub fn run(args: DemoArgs) -> ExitCode {
    match demo(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("runnel demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: &DemoArgs) -> anyhow::Result<bool> {
    let temp = args.data_dir.is_none();
    let dir = args.data_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("runnel-demo-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!(
        "runnel demo: services run as separate processes; their logs are in {}",
        dir.display()
    );
    let mut broker = None;
    let bootstrap = match &args.bootstrap {
        Some(b) => b.clone(),
        None => {
            let console = match args.console {
                Some(a) => a,
                None => free_local_port().context("finding a free port for the console")?,
            };
            let p = Proc::start(
                "broker",
                vec![
                    "serve".into(),
                    "--listen".into(),
                    "127.0.0.1:0".into(),
                    "--http".into(),
                    console.to_string(),
                    "--data-dir".into(),
                    dir.join("broker").display().to_string(),
                    "--partitions".into(),
                    "4".into(),
                    "--group-initial-rebalance-delay-ms".into(),
                    "0".into(),
                ],
                &dir.join("broker.log"),
                "listening on",
            )?;
            let addr = p.addr().to_string();
            println!("runnel demo: a Runnel broker on {addr} (`runnel serve`)");
            println!("runnel demo: watch it in the web console: http://{console}/#/topology");
            broker = Some(p);
            addr
        }
    };
    let mut config = runnel_services::KafkaConfig::new(bootstrap.clone());
    config.client_id_prefix = "runnel-demo".into();
    let kafka = runnel_services::Kafka::connect(config).context("connecting to the broker")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime for the lag figures")?;
    let stage = Stage {
        bootstrap,
        dir: dir.clone(),
        kafka,
        rt,
    };
    let mut stories = Vec::new();
    let all = args.scenario == "all";
    if all || args.scenario == "orders" {
        stories.push(shop::run(&stage));
    }
    if all || args.scenario == "coffee" {
        stories.push(coffee::run(&stage));
    }
    if all || args.scenario == "family" {
        stories.push(family::run(&stage));
    }
    drop(broker);
    let mut ok = true;
    println!("\n=== summary ===");
    for s in stories {
        match s {
            Ok(story) => {
                let held = story.checks.iter().filter(|(_, h)| *h).count();
                println!(
                    "{}: {held} of {} invariants held ({:.0} s)",
                    story.scenario,
                    story.checks.len(),
                    story.started.elapsed().as_secs_f64()
                );
                for line in &story.summary {
                    println!("  {line}");
                }
                for (what, held) in &story.checks {
                    if !held {
                        println!("  BROKEN: {what}");
                    }
                }
                ok &= held == story.checks.len() && !story.checks.is_empty();
            }
            Err(e) => {
                println!("a story stopped: {e:#}");
                ok = false;
            }
        }
    }
    if temp && !args.keep && ok {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("logs and state kept in {}", dir.display());
    }
    println!(
        "{}",
        if ok {
            "every invariant held"
        } else {
            "some invariants did not hold"
        }
    );
    Ok(ok)
}
