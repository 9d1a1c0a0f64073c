//! The end-to-end harness: a broker in-process on port 0, and third-party clients run
//! as child processes with deadlines.
#![allow(dead_code)]

pub mod raw;
pub mod requests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use runnel_broker::{BrokerConfig, Server};
use runnel_log::{Log, LogConfig};

// As in the binary: a lying length prefix reserves address space, not memory.
#[global_allocator]
static ALLOC: runnel_alloc::LazyHuge = runnel_alloc::LazyHuge;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "runnel-e2e-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running broker. Dropping it shuts it down cleanly.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub requests: Arc<runnel_broker::RequestCounts>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub config: BrokerConfig,
}

impl TestBroker {
    /// Starts a broker on 127.0.0.1:0 with data in `data_dir`.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with(data_dir, |_| {})
    }

    pub fn start_with(data_dir: &Path, tweak: impl FnOnce(&mut BrokerConfig)) -> Self {
        Self::launch(data_dir, tweak, Arc::new(runnel_log::StdStorage))
    }

    /// Starts a broker whose log does its file I/O through `storage` (a test's slow or
    /// failing disk).
    pub fn start_on(data_dir: &Path, storage: Arc<dyn runnel_log::Storage>) -> Self {
        Self::launch(data_dir, |_| {}, storage)
    }

    fn launch(
        data_dir: &Path,
        tweak: impl FnOnce(&mut BrokerConfig),
        storage: Arc<dyn runnel_log::Storage>,
    ) -> Self {
        let mut config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data_dir.to_path_buf(),
            // New groups form at once instead of waiting for stragglers.
            group_initial_rebalance_delay_ms: 0,
            ..BrokerConfig::default()
        };
        tweak(&mut config);
        config.validate().unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let cfg = config.clone();
        let thread = std::thread::spawn(move || {
            let mut log_config = LogConfig::new(&cfg.data_dir);
            log_config.topic_defaults.durability = cfg.durability;
            log_config.batch_codec = Some(Arc::new(runnel_core::records::KafkaCodecs));
            // Compaction shows within a test's patience.
            log_config.cleaner_interval = Duration::from_millis(200);
            let log = Arc::new(
                Log::open_with(log_config, storage, Arc::new(runnel_log::SystemClock))
                    .expect("log opens"),
            );
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let server = Server::bind(cfg, log.clone()).await.expect("bind");
                addr_tx
                    .send((server.local_addr().unwrap(), server.broker().requests()))
                    .unwrap();
                server
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
            drop(rt);
            match Arc::try_unwrap(log) {
                Ok(log) => log.close().expect("clean close"),
                Err(_) => panic!("log still shared after shutdown"),
            }
        });
        let (addr, requests) = addr_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("broker started");
        TestBroker {
            addr,
            requests,
            data_dir: data_dir.to_path_buf(),
            stop: Some(stop_tx),
            thread: Some(thread),
            config,
        }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// Stops cleanly (the clean-shutdown marker is written).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take()
            && let Err(e) = t.join()
            && !std::thread::panicking()
        {
            std::panic::resume_unwind(e);
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A tool the test command installs; a clear failure (never a silent skip) when absent.
pub fn tool(path: &Path) -> PathBuf {
    assert!(
        path.exists(),
        "{} is missing: run scripts/test (or scripts/install-test-tools) to install the test clients",
        path.display()
    );
    path.to_path_buf()
}

pub fn python() -> PathBuf {
    tool(&repo_root().join(".venv/bin/python"))
}

pub fn kcat() -> PathBuf {
    let p = PathBuf::from("/usr/bin/kcat");
    tool(&p)
}

pub fn node() -> PathBuf {
    let p = which("node").expect("node is missing: run scripts/test to install the test clients");
    tool(&repo_root().join("tests/clients/node/node_modules/kafkajs/package.json"));
    p
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Runs a command with stdin, killing it after `timeout`. Returns its output.
pub fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let timed_out = child.try_wait().unwrap().is_none();
    if timed_out {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    assert!(
        !timed_out,
        "{cmd:?} timed out after {timeout:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command and asserts success; returns stdout.
pub fn run_ok(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> String {
    let out = run(cmd, stdin, timeout);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Python client scenario from tests/clients/python.
pub fn python_scenario(script: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/clients/python").join(script))
        .args(args);
    run_ok(&mut cmd, b"", Duration::from_secs(120))
}

/// A kafkajs scenario from tests/clients/node.
pub fn node_scenario(script: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(node());
    cmd.current_dir(repo_root().join("tests/clients/node"))
        .arg(script)
        .args(args);
    run_ok(&mut cmd, b"", Duration::from_secs(120))
}
