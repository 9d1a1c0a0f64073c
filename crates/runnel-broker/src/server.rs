//! The TCP server: accept with a connection limit, one task per connection that reads
//! frames and answers them strictly in order, and graceful shutdown.
//!
//! Effects and answers keep request order; only the durability waits of consecutive
//! Produce requests overlap, which is what lets one producer's requests share an fsync.
//! A connection is one task (no hand-offs between tasks per request): it selects
//! between the next frame and the oldest pending answer.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use runnel_log::Log;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::broker::{Broker, Outcome, Reply};
use crate::config::BrokerConfig;
use crate::frame::{FrameError, FrameReader, request_prefix};

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
            // Counted down on drop, so a panicking or aborted task is counted out too.
            let _open = OpenConnection::new(broker.clone());
            serve_connection(broker, stream, peer).await;
            drop(permit);
        });
    }
}

/// One open connection in `Broker::connections`, for as long as it lives.
struct OpenConnection(Arc<Broker>);

impl OpenConnection {
    fn new(broker: Arc<Broker>) -> Self {
        broker
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenConnection(broker)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0
            .connections
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A Produce's answer, waiting for its batches to be durable.
type Pending = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// What woke the connection loop.
enum Event {
    /// The oldest pending Produce is answered.
    Answered(Outcome),
    /// The next request frame (or the end of the stream, or a framing error).
    Frame(Result<Option<BytesMut>, FrameError>),
    /// The server is stopping.
    Shutdown,
}

/// One connection, one task: reads requests and starts them in order. A Produce is
/// started as soon as the Produce before it has appended, so consecutive requests of one
/// producer share fsyncs; its answer waits in `pending`, and answers leave strictly in
/// request order. Any other request first waits until everything before it is answered,
/// so it observes their effects exactly as if requests ran one at a time.
async fn serve_connection(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    debug!(%peer, "connection opened");
    let (read, mut write) = stream.into_split();
    let mut frames = FrameReader::new(read, broker.config.frame_bytes_max);
    let mut shutdown = broker.shutdown.clone();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut open = true;
    while open {
        let event = tokio::select! {
            // Only the oldest is awaited: answers go out in order.
            outcome = async { pending.front_mut().expect("not empty").await }, if !pending.is_empty() => {
                Event::Answered(outcome)
            }
            frame = frames.next(), if pending.len() < PIPELINE_DEPTH => Event::Frame(frame),
            _ = shutdown.changed() => Event::Shutdown,
        };
        open = match event {
            Event::Answered(outcome) => {
                pending.pop_front();
                let ok = answer(&mut write, outcome, peer).await;
                if !ok {
                    pending.clear(); // nothing after a close is answered
                }
                ok
            }
            Event::Frame(Ok(Some(frame))) => {
                let is_produce =
                    request_prefix(&frame).is_some_and(|p| p.api_key == ApiKey::Produce as i16);
                if !is_produce && !drain(&mut pending, &mut write, peer).await {
                    break;
                }
                match broker.serve(frame, Some(peer.ip())).await {
                    Reply::Later(answer) => {
                        pending.push_back(answer);
                        true
                    }
                    Reply::Now(outcome) => {
                        drain(&mut pending, &mut write, peer).await
                            && answer(&mut write, outcome, peer).await
                    }
                }
            }
            Event::Frame(Ok(None)) => false,
            Event::Frame(Err(FrameError::Io(e))) => {
                debug!(%peer, error = %e, "connection error");
                false
            }
            Event::Frame(Err(e)) => {
                warn!(%peer, error = %e, "closing connection");
                false
            }
            Event::Shutdown => false,
        } && !*shutdown.borrow();
    }
    // Requests in flight are finished and answered, if the peer still listens.
    drain(&mut pending, &mut write, peer).await;
    let _ = write.shutdown().await;
    debug!(%peer, "connection closed");
}

/// Sends one answer; false when the connection must close.
async fn answer(write: &mut OwnedWriteHalf, outcome: Outcome, peer: SocketAddr) -> bool {
    match outcome {
        Outcome::Respond(bytes) => match write.write_all(&bytes).await {
            Ok(()) => true,
            Err(e) => {
                debug!(%peer, error = %e, "could not write response");
                false
            }
        },
        Outcome::Silent => true,
        Outcome::Close(reason) => {
            warn!(%peer, %reason, "closing connection");
            false
        }
    }
}

/// Answers every pending Produce, oldest first; false when the connection must close.
async fn drain(
    pending: &mut VecDeque<Pending>,
    write: &mut OwnedWriteHalf,
    peer: SocketAddr,
) -> bool {
    while let Some(p) = pending.pop_front() {
        if !answer(write, p.await, peer).await {
            pending.clear();
            return false;
        }
    }
    true
}
