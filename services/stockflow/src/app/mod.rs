//! Wiring: the ports one process runs over ([`backend`]), its workers, and HTTP, for the
//! embedded platform of `stockflow dev` (everything in one process) and for each role of a
//! region; with a shutdown that drains requests before stopping the workers
//! ([`shutdown`]).

mod backend;
pub mod bundles;
pub mod channels;
mod edge;
mod shutdown;
mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use stockflow_storage::embedded::WalPolicy;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::extract::InFlight;
use crate::http::{AppState, Routes, Services, router};
use crate::telemetry::metrics_handle;
use crate::workers::expirer;
use crate::workers::projector::{ProjectorConfig, ProjectorHandle};
use crate::workers::publisher::PublisherConfig;
use crate::workers::retention::Retention;

pub use backend::{Backend, BusConfig, LocalData, StoreConfig, open_backend};
use edge::start_edge;
pub use shutdown::shutdown_signal;
use shutdown::{Serving, fail_stop};

/// Settings of the platform `stockflow dev` runs, or of one role of a region.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// Where the SQLite files (or, with ScyllaDB and the embedded bus, the event log) live.
    pub data_dir: PathBuf,
    /// Which stores to use.
    pub store: StoreConfig,
    /// Which bus to use.
    pub bus: BusConfig,
    /// Which routes this process serves.
    pub routes: Routes,
    /// This replica's name in leases (unique per process).
    pub member: String,
    /// How often a ScyllaDB outbox is scanned for entries other processes committed.
    pub outbox_scan_every: Option<Duration>,
    /// The TTL of a reservation whose request names none.
    pub reservation_ttl_seconds: u64,
    /// Partitions of the event log (fixed when the data directory is created).
    pub partitions: u32,
    /// Publisher settings.
    pub publisher: PublisherConfig,
    /// Projector settings.
    pub projector: ProjectorConfig,
    /// Webhook delivery settings.
    pub webhooks: crate::workers::webhooks::WebhookConfig,
    /// How long each growing table keeps its rows.
    pub retention: Retention,
    /// Which background workers this process runs.
    pub workers: Workers,
    /// Bounds of the embedded databases' write-ahead logs.
    pub wal: WalPolicy,
    /// The most a graceful shutdown may take, from the signal to the exit: under the pod's
    /// termination grace period (30 s), so the kubelet never has to kill a draining process.
    pub shutdown_timeout: Duration,
    /// Authentication, rate limits, concurrency and deadlines at the HTTP edge.
    pub security: Security,
    /// The edge cache in front of the query API: its TTL and the purge worker.
    pub edge_cache: EdgeCache,
    /// How bulk imports run.
    pub imports: crate::imports::ImportSettings,
    /// Faults tests inject into the embedded write store.
    #[doc(hidden)]
    pub faults: Arc<stockflow_storage::embedded::FaultInjection>,
}

/// What the HTTP edge enforces; see [`crate::http::guard`].
#[derive(Debug, Clone)]
pub struct Security {
    /// `None`: no authentication.
    pub auth: Option<crate::auth::AuthSettings>,
    /// Per authenticated caller.
    pub rate_limit: Option<crate::http::guard::RateLimit>,
    /// Requests served at once.
    pub max_concurrent: usize,
    /// The most one request may take.
    pub request_timeout: Duration,
    /// HTTPS (and mutual TLS with a client CA); `None`: plain HTTP.
    pub tls: Option<crate::http::tls::TlsSettings>,
    /// Mutual TLS without bearer tokens: the file granting each client certificate its
    /// scopes and locations.
    pub mtls_principals: Option<std::path::PathBuf>,
    /// Whether anonymous callers (a platform without authentication) are rate limited,
    /// one bucket per client address.
    pub limit_anonymous: bool,
    /// Open connections, header and idle deadlines.
    pub connections: crate::http::server::ConnectionLimits,
}

impl Default for Security {
    fn default() -> Self {
        let open = crate::http::guard::EdgeConfig::open();
        Self {
            auth: None,
            rate_limit: None,
            max_concurrent: open.max_concurrent,
            request_timeout: open.request_timeout,
            tls: None,
            mtls_principals: None,
            limit_anonymous: open.limit_anonymous,
            connections: crate::http::server::ConnectionLimits::default(),
        }
    }
}

/// The edge cache in front of the query API (`--edge-*`); off unless configured.
#[derive(Debug, Clone, Default)]
pub struct EdgeCache {
    /// `Surrogate-Control: max-age` on exact query responses (the query API's side).
    pub ttl_seconds: Option<u32>,
    /// Purge (and warm) the cache after projection (the projector's side).
    pub purge: Option<crate::workers::edge_purge::PurgeConfig>,
}

/// The background workers a process runs. `stockflow dev` runs all; the roles of a
/// distributed deployment split them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workers {
    /// Outbox → event log.
    pub publish: bool,
    /// Event log → read models.
    pub project: bool,
    /// Reservation expiry.
    pub expire: bool,
    /// Webhook delivery (event log → subscribers).
    pub webhooks: bool,
}

impl Workers {
    /// Every worker.
    pub const ALL: Workers = Workers {
        publish: true,
        project: true,
        expire: true,
        webhooks: true,
    };
    /// None (an API-only process).
    pub const NONE: Workers = Workers {
        publish: false,
        project: false,
        expire: false,
        webhooks: false,
    };
}

impl AppConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            store: StoreConfig::Embedded,
            bus: BusConfig::Embedded,
            routes: Routes::ALL,
            member: default_member(),
            outbox_scan_every: None,
            reservation_ttl_seconds: 900,
            partitions: 8,
            publisher: PublisherConfig::default(),
            projector: ProjectorConfig::default(),
            webhooks: Default::default(),
            retention: Retention::default(),
            workers: Workers::ALL,
            wal: WalPolicy::default(),
            security: Security::default(),
            edge_cache: EdgeCache::default(),
            imports: Default::default(),
            faults: Arc::default(),
            shutdown_timeout: Duration::from_secs(25),
        }
    }
}

/// The imports of a process that serves commands (`None` for the other roles).
fn open_imports(
    config: &AppConfig,
    backend: &Backend,
) -> Result<Option<Arc<crate::imports::Imports>>, AppError> {
    if !config.routes.commands {
        return Ok(None);
    }
    let shared = match (&backend.import_payloads, &backend.leases) {
        (Some(payloads), Some(leases)) => Some(crate::imports::shared::Shared::new(
            payloads.clone(),
            leases.clone(),
            config.member.clone(),
        )),
        _ => None,
    };
    // A role over ScyllaDB has no data directory: uploads are staged in a scratch
    // directory of its own (the files are kept in the keyspace).
    let dir = if config.data_dir.as_os_str().is_empty() {
        std::env::temp_dir().join(format!("stockflow-imports-{}", std::process::id()))
    } else {
        config.data_dir.join("imports")
    };
    Ok(Some(Arc::new(crate::imports::Imports::open(
        backend.imports.clone(),
        dir,
        config.imports,
        shared,
    )?)))
}

/// A name for this process among the replicas of a role: host name and pid, plus a
/// random suffix so a restarted process never inherits its predecessor's leases.
pub fn default_member() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &suffix[suffix.len() - 8..]
    )
}

/// Why the platform could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The stores could not be opened.
    #[error("cannot open the stores: {0}")]
    Store(#[from] stockflow_storage::StoreError),
    /// The bus could not be opened.
    #[error("cannot open the bus: {0}")]
    Bus(#[from] stockflow_bus::BusError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
    /// TLS could not be set up (certificate, key, client CA).
    #[error("tls: {0}")]
    Tls(#[from] crate::http::tls::TlsError),
    /// Authentication could not be set up (the JWKS, the settings).
    #[error("authentication: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// A store stopped for good (a failed fsync); the process must restart from disk.
    #[error("stopped after a storage fault: {0}")]
    Fatal(String),
    /// The platform's task panicked.
    #[error("the platform's task panicked")]
    Panicked(#[source] tokio::task::JoinError),
}

/// A platform started by [`start`].
pub struct Running {
    /// Where HTTP is served.
    pub addr: SocketAddr,
    /// The stores (tests inspect them).
    pub backend: Backend,
    /// Idempotency keys in flight (tests hold one to provoke `request_in_progress`).
    pub in_flight: Arc<InFlight>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), AppError>>,
}

impl Running {
    /// Starts a graceful shutdown and waits for it.
    pub async fn stop(self) -> Result<(), AppError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Waits until the platform stops (after [`Running::shutdown_token`] is cancelled).
    pub async fn wait(self) -> Result<(), AppError> {
        self.task.await.map_err(AppError::Panicked)?
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// Opens the data directory, starts the workers and serves HTTP on `listener`.
pub async fn start(config: AppConfig, listener: TcpListener) -> Result<Running, AppError> {
    let backend = open_backend(&config).await?;
    let addr = listener.local_addr()?;
    let expiry_handle = expirer::ExpiryHandle::default();
    let projector_handle = ProjectorHandle::default();
    let draining = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(InFlight::default());
    let shutdown = CancellationToken::new();
    let edge = start_edge(&config.security, &shutdown).await?;
    let tls = match &config.security.tls {
        Some(settings) => Some(crate::http::tls::acceptor(settings)?),
        None => None,
    };
    let state = AppState::new(Services {
        write: backend.write.clone(),
        outbox: backend.outbox.clone(),
        read: backend.read.clone(),
        in_flight: in_flight.clone(),
        expiry: expiry_handle.clone(),
        projector: projector_handle.clone(),
        metrics: metrics_handle(),
        draining: draining.clone(),
        bus: backend.log.clone(),
        webhooks: backend.webhooks.clone(),
        reservation_ttl_seconds: config.reservation_ttl_seconds,
        edge,
        bundles: bundles::BundleCatalog::start(backend.write.clone(), shutdown.clone()).await,
        channels: Default::default(),
        edge_ttl_seconds: config.edge_cache.ttl_seconds,
        imports: open_imports(&config, &backend)?,
    });
    if let Some(imports) = &state.imports {
        tokio::spawn(crate::imports::worker::run(
            state.clone(),
            imports.clone(),
            shutdown.clone(),
        ));
    }
    let workers = workers::spawn(&config, &backend, &expiry_handle, projector_handle);
    let fatal_watch = tokio::spawn(fail_stop(backend.write.clone(), shutdown.clone()));
    let shutdown_timeout = config.shutdown_timeout;
    let connections = config.security.connections;
    let app = router(state, config.routes);
    let stop = shutdown.clone();
    let local = backend.local.clone();
    let task = tokio::spawn(shutdown::serve_then_stop(
        Serving {
            listener,
            app,
            tls,
            connections,
            draining: draining.clone(),
            stop,
        },
        workers,
        fatal_watch,
        shutdown_timeout,
        local,
    ));
    tracing::info!(%addr, member = %config.member, "stockflow is serving");
    Ok(Running {
        addr,
        backend,
        in_flight,
        shutdown,
        task,
    })
}
