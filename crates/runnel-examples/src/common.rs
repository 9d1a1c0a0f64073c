//! What every reference service shares: where it runs, and how it starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use runnel_services::http::ServiceApi;
use runnel_services::{Error, Runtime, ServiceHandle, Transport};
use tokio::task::JoinHandle;

/// Every reference service, by system: `(system, service, what it does)`.
pub const SERVICES: &[(&str, &str, &str)] = &[
    (
        "shop",
        "customers",
        "PUT /customers/{id}: states customerUpdated",
    ),
    ("shop", "orders", "POST /orders: states orderCreated"),
    (
        "shop",
        "notifications",
        "joins orders against its own customer table; notifies",
    ),
    (
        "shop",
        "loyalty",
        "points per order, added without changing anyone",
    ),
    (
        "coffee",
        "cashier",
        "POST /orders, POST /orders/{id}/payment",
    ),
    (
        "coffee",
        "barista",
        "makes the drinks in the queue (run several)",
    ),
    (
        "coffee",
        "counter",
        "GET /orders/{id}: each order's status, from the events",
    ),
    ("family", "daughter", "POST /cup/empty: states myCupIsEmpty"),
    (
        "family",
        "daddy",
        "refills the cup unless it is already full",
    ),
    (
        "family",
        "mummy",
        "refills the cup unless it is already full",
    ),
    ("family", "grandma", "joins later; refills too"),
];

/// Where a reference service runs.
#[derive(Clone, Debug)]
pub struct Env {
    /// The log: the embedded one, or a Kafka-compatible broker.
    pub transport: Arc<dyn Transport>,
    /// Where instances keep their tables.
    pub state_dir: PathBuf,
    /// Where the service's HTTP API listens (port 0 picks one).
    pub http: SocketAddr,
    /// The instance's name (several copies of one service need different names).
    pub instance: String,
    /// Service-specific settings (`--set name=value`), for example a barista's
    /// preparation times.
    pub settings: BTreeMap<String, String>,
}

impl Env {
    /// A setting parsed as `T`, or `default` when absent; a value that does not parse
    /// is a configuration error naming it.
    pub fn setting<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, Error> {
        match self.settings.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| Error::Config(format!("setting {name}={v:?} does not parse"))),
        }
    }

    /// The runtime for this environment. Sessions are Kafka's shortest (6 s), so a
    /// killed copy's partitions move to the others quickly.
    #[must_use]
    pub fn runtime(&self) -> Runtime {
        Runtime::new(self.transport.clone())
            .state_dir(self.state_dir.clone())
            .session_timeout(std::time::Duration::from_secs(6))
    }
}

/// A started service: its instance and its HTTP server.
#[derive(Debug)]
pub struct Running {
    /// The instance.
    pub handle: ServiceHandle,
    /// Where its HTTP API listens.
    pub http: SocketAddr,
    server: JoinHandle<std::io::Result<()>>,
    stop_http: tokio::sync::oneshot::Sender<()>,
}

impl Running {
    /// Serves `api` (with health and metrics for `handle`) on `env.http`.
    pub async fn serve(
        env: &Env,
        handle: ServiceHandle,
        api: ServiceApi,
    ) -> Result<Running, Error> {
        let bound = api
            .health(&handle)
            .bind(env.http)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", env.http)))?;
        let http = bound.local_addr();
        let (stop_http, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        Ok(Running {
            handle,
            http,
            server,
            stop_http,
        })
    }

    /// Stops gracefully: the HTTP server, then the instance (drain, commit, leave).
    pub async fn stop(self) -> Result<(), Error> {
        let _ = self.stop_http.send(());
        let _ = self.server.await;
        self.handle.stop().await
    }
}

/// Starts the reference service `name` (one of [`SERVICES`]).
pub async fn start(name: &str, env: &Env) -> Result<Running, Error> {
    match name {
        "customers" | "orders" | "notifications" | "loyalty" => crate::shop::start(name, env).await,
        "cashier" | "barista" | "counter" => crate::coffee::start(name, env).await,
        "daughter" | "daddy" | "mummy" | "grandma" => crate::family::start(name, env).await,
        other => Err(Error::Config(format!(
            "no reference service {other:?}; the services are: {}",
            SERVICES.iter().map(|s| s.1).collect::<Vec<_>>().join(", ")
        ))),
    }
}
