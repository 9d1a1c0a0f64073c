//! The TCP server: accept with a connection limit (overall and per peer address), one
//! task per connection that reads frames and answers them strictly in order, and
//! graceful shutdown.
//!
//! Nothing a peer does holds a connection slot forever: a connection with no request in
//! progress for `connection-idle-ms-max` is closed (Kafka's `connections.max.idle.ms`),
//! a frame must arrive whole within `frame-read-ms-max` of its first byte, and a response
//! the peer does not take within `connection-idle-ms-max` closes the connection too.
//!
//! Effects and answers keep request order; only the durability waits of consecutive
//! Produce requests overlap, which is what lets one producer's requests share an fsync.
//! A connection is one task (no hand-offs between tasks per request): it selects
//! between the next frame and the oldest pending answer.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use runnel_log::Log;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
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
    /// Connections open per peer address, for `connections-per-ip-max`.
    per_ip: Arc<PerIp>,
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
            per_ip: Arc::default(),
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
        let per_ip_max = self.broker.config.connections_per_ip_max;
        let Some(slot) = self.per_ip.take(peer.ip(), per_ip_max) else {
            warn!(%peer, limit = per_ip_max, "connection limit per address reached; closing the new connection");
            drop(stream);
            return;
        };
        let _ = stream.set_nodelay(true);
        let broker = self.broker.clone();
        tasks.spawn(async move {
            // Counted down on drop, so a panicking or aborted task is counted out too.
            let _open = OpenConnection::new(broker.clone());
            serve_connection(broker, stream, peer).await;
            drop(slot);
            drop(permit);
        });
    }
}

/// Open connections per peer address. An address leaves the map with its last
/// connection, so the map holds at most `connections-max` entries.
#[derive(Debug, Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    /// A slot for one more connection from `ip`, unless it has `max` open already.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        // An IPv4 peer on a dual-stack listener is one address, however it is written.
        let ip = ip.to_canonical();
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            if *n == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(IpSlot {
            table: self.clone(),
            ip,
        })
    }
}

/// One connection counted in [`PerIp`]; counted out on drop, as [`OpenConnection`].
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
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
///
/// Idle time is time with nothing in progress: no answer pending, no request being
/// served (a long-poll Fetch is served inside `broker.serve`, so it is never idle time),
/// and no frame begun; it counts from the last request or answer.
async fn serve_connection(broker: Arc<Broker>, stream: TcpStream, peer: SocketAddr) {
    debug!(%peer, "connection opened");
    let (read, write) = stream.into_split();
    let idle_max = Duration::from_millis(broker.config.connection_idle_ms_max.into());
    let frame_max = Duration::from_millis(broker.config.frame_read_ms_max.into());
    let mut write = Writer {
        half: write,
        peer,
        time_max: idle_max,
    };
    let mut frames = FrameReader::new(read, broker.config.frame_bytes_max);
    let mut shutdown = broker.shutdown.clone();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut last_active = Instant::now();
    let mut open = true;
    while open {
        let idle_until = pending.is_empty().then(|| last_active + idle_max);
        let event = tokio::select! {
            // Only the oldest is awaited: answers go out in order.
            outcome = async { pending.front_mut().expect("not empty").await }, if !pending.is_empty() => {
                Event::Answered(outcome)
            }
            frame = frames.next_within(idle_until, frame_max), if pending.len() < PIPELINE_DEPTH => {
                Event::Frame(frame)
            }
            _ = shutdown.changed() => Event::Shutdown,
        };
        open = match event {
            Event::Answered(outcome) => {
                pending.pop_front();
                let ok = answer(&mut write, outcome).await;
                if !ok {
                    pending.clear(); // nothing after a close is answered
                }
                ok
            }
            Event::Frame(Ok(Some(frame))) => {
                let is_produce =
                    request_prefix(&frame).is_some_and(|p| p.api_key == ApiKey::Produce as i16);
                if !is_produce && !drain(&mut pending, &mut write).await {
                    break;
                }
                match broker.serve(frame, Some(peer.ip())).await {
                    Reply::Later(answer) => {
                        pending.push_back(answer);
                        true
                    }
                    Reply::Now(outcome) => {
                        drain(&mut pending, &mut write).await && answer(&mut write, outcome).await
                    }
                }
            }
            Event::Frame(Ok(None)) => false,
            Event::Frame(Err(FrameError::Idle)) => {
                // Routine, as in Kafka: clients reconnect when they need to.
                debug!(%peer, idle_ms = idle_max.as_millis() as u64, "closing idle connection");
                false
            }
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
        last_active = Instant::now();
    }
    // Requests in flight are finished and answered, if the peer still listens.
    drain(&mut pending, &mut write).await;
    let _ = tokio::time::timeout(write.time_max, write.half.shutdown()).await;
    debug!(%peer, "connection closed");
}

/// A connection's write half, with the peer to log and how long one response may take
/// to leave: a peer that stops reading cannot hold its connection forever.
struct Writer {
    half: OwnedWriteHalf,
    peer: SocketAddr,
    time_max: Duration,
}

/// Sends one answer; false when the connection must close.
async fn answer(write: &mut Writer, outcome: Outcome) -> bool {
    let peer = write.peer;
    match outcome {
        Outcome::Respond(bytes) => {
            match tokio::time::timeout(write.time_max, write.half.write_all(&bytes)).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "could not write response");
                    false
                }
                Err(_) => {
                    warn!(%peer, bytes = bytes.len(), "response not taken in time; closing connection");
                    false
                }
            }
        }
        Outcome::Silent => true,
        Outcome::Close(reason) => {
            warn!(%peer, %reason, "closing connection");
            false
        }
    }
}

/// Answers every pending Produce, oldest first; false when the connection must close.
async fn drain(pending: &mut VecDeque<Pending>, write: &mut Writer) -> bool {
    while let Some(p) = pending.pop_front() {
        if !answer(write, p.await).await {
            pending.clear();
            return false;
        }
    }
    true
}
