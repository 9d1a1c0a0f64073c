//! The TCP server: accept with a connection limit, one task per connection that reads
//! frames and answers them strictly in order, and graceful shutdown.
//!
//! A connection is a reader and a writer joined by a bounded queue of replies. Effects
//! and answers keep request order; only the durability waits of consecutive Produce
//! requests overlap, which is what lets one producer's requests share an fsync.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use runnel_log::Log;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::broker::{Broker, Outcome, Reply};
use crate::config::BrokerConfig;
use crate::frame::{FrameError, read_frame, request_prefix};

/// Requests one connection may have started but not yet answered: Produces waiting
/// for durability behind each other. librdkafka keeps at most 5 in flight by default
/// (1,000,000 without idempotence), the Java client 5.
pub const PIPELINE_DEPTH: usize = 8;

/// How long shutdown waits for in-flight requests before closing connections anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// A bound Kafka listener, ready to serve.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    broker: Arc<Broker>,
    shutdown_tx: watch::Sender<bool>,
    connections: Arc<Semaphore>,
}

impl Server {
    /// Binds the listener (port 0 picks a free port) and prepares the broker over `log`.
    pub async fn bind(config: BrokerConfig, log: Arc<Log>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.listen).await?;
        let port = listener.local_addr()?.port();
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let connections = Arc::new(Semaphore::new(config.connections_max));
        let broker = Arc::new(Broker::new(log, config, port, shutdown_rx)?);
        Ok(Server {
            listener,
            broker,
            shutdown_tx,
            connections,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The broker behind the listener.
    #[must_use]
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Serves until `stop` resolves, then stops accepting, lets every connection finish
    /// the request it is serving (long polls answer at once), and returns.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let mut tasks = JoinSet::new();
        let groups = self.broker.groups().clone();
        let ticker_shutdown = self.shutdown_tx.subscribe();
        let ticker = tokio::spawn(async move { groups.run_ticker(ticker_shutdown).await });
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => self.admit(stream, peer, &mut tasks),
                    Err(e) => {
                        // Running out of file descriptors and the like: back off briefly
                        // rather than spin.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        info!("shutting down: no new connections; finishing requests in flight");
        let _ = self.shutdown_tx.send(true);
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            warn!("connections still busy after the grace period; closing them");
            tasks.abort_all();
        }
        let _ = ticker.await;
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr, tasks: &mut JoinSet<()>) {
        let Ok(permit) = self.connections.clone().try_acquire_owned() else {
            warn!(%peer, limit = self.broker.config.connections_max, "connection limit reached; closing the new connection");
            drop(stream);
            return;
        };
        let _ = stream.set_nodelay(true);
        let broker = self.broker.clone();
        tasks.spawn(async move {
            serve_connection(broker, stream, peer).await;
            drop(permit);
        });
    }
}

async fn serve_connection(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    debug!(%peer, "connection opened");
    let (read, write) = stream.into_split();
    let (replies_tx, replies_rx) = mpsc::channel(PIPELINE_DEPTH);
    let (done_tx, done_rx) = watch::channel(0u64);
    tokio::join!(
        read_requests(&broker, read, replies_tx, done_rx, peer),
        write_responses(write, replies_rx, done_tx, peer),
    );
    debug!(%peer, "connection closed");
}

/// Reads and starts requests in order. A Produce is started as soon as the Produce
/// before it has appended, so one producer's consecutive requests share fsyncs; any
/// other request waits until everything before it has been answered, so it observes
/// their effects exactly as if requests ran one at a time.
async fn read_requests(
    broker: &Broker,
    read: OwnedReadHalf,
    replies: mpsc::Sender<Reply>,
    mut answered: watch::Receiver<u64>,
    peer: SocketAddr,
) {
    let mut read = BufReader::with_capacity(64 << 10, read);
    let mut shutdown = broker.shutdown.clone();
    let max = broker.config.frame_bytes_max;
    let mut started = 0u64;
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut read, max) => f,
            _ = shutdown.changed() => break,
            () = replies.closed() => break,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(FrameError::Io(e)) => {
                debug!(%peer, error = %e, "connection error");
                break;
            }
            Err(e) => {
                warn!(%peer, error = %e, "closing connection");
                break;
            }
        };
        let is_produce =
            request_prefix(&frame).is_some_and(|p| p.api_key == ApiKey::Produce as i16);
        if !is_produce && answered.wait_for(|n| *n == started).await.is_err() {
            break; // the writer has stopped
        }
        let reply = broker.serve(frame, Some(peer.ip())).await;
        let closing = matches!(reply, Reply::Now(Outcome::Close(_)));
        if replies.send(reply).await.is_err() {
            break;
        }
        started += 1;
        if closing || *shutdown.borrow() {
            break;
        }
    }
}

/// Writes answers in request order, each once it is ready.
async fn write_responses(
    mut write: OwnedWriteHalf,
    mut replies: mpsc::Receiver<Reply>,
    answered: watch::Sender<u64>,
    peer: SocketAddr,
) {
    let mut n = 0u64;
    while let Some(reply) = replies.recv().await {
        match reply.outcome().await {
            Outcome::Respond(bytes) => {
                if let Err(e) = write.write_all(&bytes).await {
                    debug!(%peer, error = %e, "could not write response");
                    break;
                }
            }
            Outcome::Silent => {}
            Outcome::Close(reason) => {
                warn!(%peer, %reason, "closing connection");
                break;
            }
        }
        n += 1;
        answered.send_replace(n);
    }
    // Dropping the receiver stops the reader; replies not yet written are abandoned,
    // which is safe: none was acknowledged.
    drop(replies);
    let _ = write.shutdown().await;
}
