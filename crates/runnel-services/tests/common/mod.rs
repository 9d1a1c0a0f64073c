//! Test support shared by the Kafka tests: a temporary directory and a Runnel broker
//! on port 0, in-process, as `runnel serve` runs it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use runnel_broker::{BrokerConfig, Server};
use runnel_log::{Log, LogConfig};
use runnel_services::{Kafka, KafkaConfig};

/// How long any one condition may take to come true.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "runnel-kafka-{tag}-{}-{}",
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

/// A Runnel broker on its own thread and runtime, as `runnel serve` runs it.
pub struct TestBroker {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub dir: TempDir,
}

impl TestBroker {
    pub fn start(tag: &str) -> TestBroker {
        let dir = TempDir::new(tag);
        let config = BrokerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.0.join("log"),
            // New groups form at once instead of waiting for stragglers.
            group_initial_rebalance_delay_ms: 0,
            ..BrokerConfig::default()
        };
        config.validate().unwrap();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let mut log_config = LogConfig::new(&config.data_dir);
            log_config.batch_codec = Some(Arc::new(runnel_core::records::KafkaCodecs));
            let log = Arc::new(Log::open(log_config).expect("log opens"));
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let server = Server::bind(config, log.clone()).await.expect("bind");
                addr_tx.send(server.local_addr().unwrap()).unwrap();
                server
                    .run(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv_timeout(PATIENCE).expect("the broker started");
        TestBroker {
            addr,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        }
    }

    pub fn kafka(&self) -> Arc<Kafka> {
        let mut config = KafkaConfig::new(self.addr.to_string());
        config.client_id_prefix = "kafka-transport-test".into();
        Kafka::connect(config).unwrap()
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
