//! Plumbing shared by the examples' tests: a hand-written HTTP/1.1 client (as in
//! runnel-services' tests/http.rs) and APIs served on 127.0.0.1:0.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;

use runnel_services::ServiceApi;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};

/// One HTTP/1.1 exchange on a fresh connection: status and body as JSON (null if none).
///
/// The request is written while the response is read, so a server that answers before
/// reading the whole body (a refusal) is still heard.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let mut s = TcpStream::connect(addr).await.expect("the server is up");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    request.extend_from_slice(body.as_bytes());
    let (mut rd, mut wr) = s.split();
    let write = async {
        let _ = wr.write_all(&request).await;
    };
    let read = async {
        let mut out = Vec::new();
        let _ = rd.read_to_end(&mut out).await;
        out
    };
    let ((), raw) = tokio::join!(write, read);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (
        status,
        serde_json::from_slice(&raw[split + 4..]).unwrap_or(Value::Null),
    )
}

/// `GET path`: status and body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    http(addr, "GET", path, None, "").await
}

/// `POST path` with `body` as `application/json`.
pub async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    http(
        addr,
        "POST",
        path,
        Some("application/json"),
        &body.to_string(),
    )
    .await
}

/// `PUT path` with `body` as `application/json`.
pub async fn put(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    http(
        addr,
        "PUT",
        path,
        Some("application/json"),
        &body.to_string(),
    )
    .await
}

/// Binds `api` on 127.0.0.1:0 and serves it until `shutdown` resolves.
async fn serve_until(
    api: ServiceApi,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let bound = api.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = bound.local_addr();
    (addr, tokio::spawn(bound.serve(shutdown)))
}

/// Serves `api` on 127.0.0.1:0 until the test ends.
pub async fn serve(api: ServiceApi) -> SocketAddr {
    serve_until(api, std::future::pending()).await.0
}

/// An API served on 127.0.0.1:0 until dropped or stopped.
pub struct Server {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(api: ServiceApi) -> Server {
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr, task) = serve_until(api, async {
            let _ = stopped.await;
        })
        .await;
        Server { addr, stop, task }
    }

    /// Stops the server and waits until its routes are dropped (they may hold an
    /// instance's table store open); returns how the server task ended.
    pub async fn shutdown(self) -> Result<std::io::Result<()>, JoinError> {
        let _ = self.stop.send(());
        self.task.await
    }

    /// Stops the server, asserting it ended cleanly.
    pub async fn stop(self) {
        self.shutdown().await.unwrap().unwrap();
    }
}
