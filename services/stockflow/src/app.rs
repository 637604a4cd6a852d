//! Wiring: the embedded platform of `stockflow dev` — stores, workers and HTTP in one
//! process — with a shutdown that drains requests before stopping the workers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stockflow_bus::EventLog;
use stockflow_bus::fluvio::{FluvioConfig, FluvioEventLog};
use stockflow_bus::kafka::{KafkaConfig, KafkaEventLog};
use stockflow_storage::embedded::{
    DataDirLock, EmbeddedBackend, SqliteEventLog, WalPolicy, checkpoint_file,
};
use stockflow_storage::ports::{LeaseStore, Outbox, ReadStore, WriteStore};
use stockflow_storage::scylla::{self, Replication, ScyllaBackend, ScyllaConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::extract::InFlight;
use crate::http::{AppState, Routes, router};
use crate::telemetry::metrics_handle;
use crate::workers::leases::{self, LeaseConfig, Owned};
use crate::workers::projector::{ProjectorConfig, ProjectorHandle};
use crate::workers::publisher::PublisherConfig;
use crate::workers::retention::{self, Retention};
use crate::workers::{expiry, projector, publisher};

/// Where the write and read sides live.
// Built once at start-up: the size of the ScyllaDB variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// SQLite files in the data directory.
    Embedded,
    /// A ScyllaDB (or Cassandra) cluster.
    Scylla {
        /// Connection settings.
        config: ScyllaConfig,
        /// Create the keyspace and apply the schema when missing (dev only).
        create: Option<(Replication, Option<bool>)>,
    },
}

/// Which event log carries the events from the publisher to the projectors.
#[derive(Debug, Clone)]
pub enum BusConfig {
    /// The SQLite log in the data directory (one process only).
    Embedded,
    /// A Kafka topic.
    Kafka(KafkaConfig),
    /// A Fluvio topic.
    Fluvio(FluvioConfig),
}

/// The ports of one running platform.
#[derive(Clone)]
pub struct Backend {
    /// Write side.
    pub write: Arc<dyn WriteStore>,
    /// Its outbox.
    pub outbox: Arc<dyn Outbox>,
    /// Read side.
    pub read: Arc<dyn ReadStore>,
    /// Event log, when this process publishes or projects.
    pub log: Option<Arc<dyn EventLog>>,
    /// Leases that split the work among replicas of a shared bus; `None` with the embedded
    /// store.
    pub leases: Option<Arc<dyn LeaseStore>>,
    /// The SQLite files this process holds in its data directory.
    pub local: LocalData,
}

/// The SQLite files a process keeps in its data directory, which it alone may open.
#[derive(Clone)]
pub enum LocalData {
    /// Every store is embedded.
    Embedded(EmbeddedBackend),
    /// Only the event log is local (the write and read sides are on ScyllaDB).
    Log {
        /// Held while the process runs.
        lock: Arc<DataDirLock>,
        /// The log's database file.
        path: PathBuf,
        /// The log.
        log: Arc<SqliteEventLog>,
    },
    /// Nothing: every store and the bus are servers (a read-only root filesystem is fine).
    Nothing,
}

impl LocalData {
    /// Folds every WAL back into its database at a clean shutdown, so nothing is left to
    /// recover at the next start.
    pub fn checkpoint(&self) -> Result<(), stockflow_storage::StoreError> {
        match self {
            LocalData::Embedded(b) => b.checkpoint_all(),
            LocalData::Log { path, .. } => checkpoint_file(path, "log"),
            LocalData::Nothing => Ok(()),
        }
    }
}

/// Opens the stores and the bus `config` names.
pub async fn open_backend(config: &AppConfig) -> Result<Backend, AppError> {
    let needs_log = config.workers.publish || config.workers.project;
    let remote: Option<Arc<dyn EventLog>> = match (&config.bus, needs_log) {
        (BusConfig::Kafka(k), true) => Some(Arc::new(KafkaEventLog::connect(k.clone()).await?)),
        (BusConfig::Fluvio(f), true) => Some(Arc::new(FluvioEventLog::connect(f.clone()).await?)),
        _ => None,
    };
    match &config.store {
        StoreConfig::Embedded => {
            let b = EmbeddedBackend::open_with_faults(
                &config.data_dir,
                config.partitions,
                config.wal,
                config.faults.clone(),
            )?;
            let log = match remote {
                Some(remote) => Some(remote),
                None => Some(b.log.clone() as Arc<dyn EventLog>),
            };
            Ok(Backend {
                write: b.write.clone(),
                outbox: b.write.clone(),
                read: b.read.clone(),
                log,
                leases: None,
                local: LocalData::Embedded(b),
            })
        }
        StoreConfig::Scylla {
            config: scylla_config,
            create,
        } => {
            if let Some((replication, tablets)) = create {
                let session = scylla::connect(scylla_config).await?;
                scylla::migrate(&session, &scylla_config.keyspace, replication, *tablets).await?;
            }
            let b = ScyllaBackend::open(scylla_config).await?;
            if let Some(every) = config.outbox_scan_every {
                b.write.scan_outbox_every(every);
            }
            let (log, local) = match (&config.bus, needs_log) {
                (BusConfig::Embedded, true) => {
                    std::fs::create_dir_all(&config.data_dir)?;
                    let lock = Arc::new(DataDirLock::acquire(&config.data_dir)?);
                    let path = config.data_dir.join("log.db");
                    let log = Arc::new(SqliteEventLog::open(&path, config.partitions, config.wal)?);
                    (
                        Some(log.clone() as Arc<dyn EventLog>),
                        LocalData::Log { lock, path, log },
                    )
                }
                _ => (remote, LocalData::Nothing),
            };
            Ok(Backend {
                write: b.write.clone(),
                outbox: b.write,
                read: b.read,
                log,
                leases: Some(b.leases),
                local,
            })
        }
    }
}

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
    /// Projector settings.
    pub projector: ProjectorConfig,
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
}

impl Workers {
    /// Every worker.
    pub const ALL: Workers = Workers {
        publish: true,
        project: true,
        expire: true,
    };
    /// None (an API-only process).
    pub const NONE: Workers = Workers {
        publish: false,
        project: false,
        expire: false,
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
            projector: ProjectorConfig::default(),
            retention: Retention::default(),
            workers: Workers::ALL,
            wal: WalPolicy::default(),
            security: Security::default(),
            faults: Arc::default(),
            shutdown_timeout: Duration::from_secs(25),
        }
    }
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
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(AppError::Io(std::io::Error::other(e))),
        }
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

/// The edge `security` asks for; its JWKS refresh and bucket pruning run until `shutdown`.
async fn start_edge(
    security: &Security,
    shutdown: &CancellationToken,
) -> Result<Arc<crate::http::guard::Edge>, AppError> {
    let auth = match &security.auth {
        Some(settings) => {
            Some(crate::auth::Authenticator::start(settings.clone(), shutdown.clone()).await?)
        }
        None => None,
    };
    let principals = match &security.mtls_principals {
        Some(path) => Some(Arc::new(crate::auth::Principals::load(path)?)),
        None => None,
    };
    let edge = crate::http::guard::Edge::new(crate::http::guard::EdgeConfig {
        auth,
        principals,
        limit_anonymous: security.limit_anonymous,
        rate_limit: security.rate_limit,
        max_concurrent: security.max_concurrent,
        request_timeout: security.request_timeout,
        client_certificate_required: security
            .tls
            .as_ref()
            .is_some_and(|tls| tls.client_ca.is_some()),
    });
    let pruned = edge.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => pruned.forget_idle_callers(),
            }
        }
    });
    Ok(edge)
}

/// Opens the data directory, starts the workers and serves HTTP on `listener`.
pub async fn start(config: AppConfig, listener: TcpListener) -> Result<Running, AppError> {
    let backend = open_backend(&config).await?;
    let addr = listener.local_addr()?;
    let expiry_handle = expiry::ExpiryHandle::default();
    let projector_handle = ProjectorHandle::default();
    let draining = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(InFlight::default());
    let shutdown = CancellationToken::new();
    let edge = start_edge(&config.security, &shutdown).await?;
    let tls = match &config.security.tls {
        Some(settings) => Some(crate::http::tls::acceptor(settings)?),
        None => None,
    };
    let state = AppState {
        write: backend.write.clone(),
        outbox: backend.outbox.clone(),
        read: backend.read.clone(),
        in_flight: in_flight.clone(),
        expiry: expiry_handle.clone(),
        projector: projector_handle.clone(),
        metrics: metrics_handle(),
        draining: draining.clone(),
        bus: backend.log.clone(),
        reservation_ttl_seconds: config.reservation_ttl_seconds,
        edge,
    };
    // Leases outlive the workers using them: released only once those have drained.
    let releasing = CancellationToken::new();
    let mut lease_jobs = Vec::new();
    // Replicas of one write store take turns at expiry, whatever the bus: the store is
    // what they share.
    let expiry_turn = match (&backend.leases, config.workers.expire) {
        (Some(store), true) => {
            let (turn, job) = leases::spawn(
                store.clone(),
                LeaseConfig::new(expiry::LEASE_GROUP, 1, config.member.clone()),
                releasing.clone(),
            );
            lease_jobs.push(job);
            (turn, expiry::RESCAN_SHARED)
        }
        _ => (leases::all_shards(1), expiry::RESCAN_ALONE),
    };
    // Replicas split the work only over a bus they share: with the embedded log each
    // process publishes everything it can see into its own log and projects all of it.
    let shared = match (&backend.leases, &config.bus) {
        (Some(store), BusConfig::Kafka(_) | BusConfig::Fluvio(_)) => Some(store.clone()),
        _ => None,
    };
    let mut owned = |group: String, shards: u32| -> Owned {
        match &shared {
            None => leases::all_shards(shards),
            Some(store) => {
                let (owned, job) = leases::spawn(
                    store.clone(),
                    LeaseConfig::new(group, shards, config.member.clone()),
                    releasing.clone(),
                );
                lease_jobs.push(job);
                owned
            }
        }
    };
    // Two stages: first everything that produces events, then the projectors, which drain
    // the log before they stop.
    let producers = CancellationToken::new();
    let projecting = CancellationToken::new();
    let workers = config.workers;
    let local_log = match &backend.local {
        LocalData::Embedded(b) => Some(b.log.clone()),
        LocalData::Log { log, .. } => Some(log.clone()),
        LocalData::Nothing => None,
    };
    let retention_targets = retention::Targets {
        write: backend.write.clone(),
        read: workers.project.then(|| backend.read.clone()),
        // Only a log this process reads from (one it publishes to and projects from).
        log: local_log
            .filter(|local| {
                backend
                    .log
                    .as_ref()
                    .is_some_and(|l| l.identity() == local.identity())
            })
            .map(|log| retention::LocalLog {
                consumer: workers.project.then(|| projector::consumer_for(&*log)),
                log,
            }),
    };
    let mut producer_jobs = vec![tokio::spawn(retention::run(
        retention_targets,
        config.retention,
        producers.clone(),
    ))];
    if let (true, Some(log)) = (workers.publish, &backend.log) {
        let shards = owned("publisher".into(), backend.outbox.shards());
        producer_jobs.push(tokio::spawn(publisher::run(
            backend.outbox.clone(),
            log.clone(),
            PublisherConfig::default(),
            shards,
            producers.clone(),
        )));
    }
    if workers.expire {
        let (turn, rescan) = expiry_turn;
        producer_jobs.push(tokio::spawn(expiry::run(
            backend.write.clone(),
            expiry_handle.clone(),
            turn,
            rescan,
            producers.clone(),
        )));
    }
    let projector_job = match (workers.project, &backend.log) {
        (true, Some(log)) => {
            let partitions = owned(format!("projector:{}", log.identity()), log.partitions());
            let mut projector_config = config.projector.clone();
            projector_config.consumer = projector::consumer_for(&**log);
            projector_config.replica = config.member.clone();
            Some(tokio::spawn(projector::run(
                log.clone(),
                backend.read.clone(),
                projector_config,
                projector_handle,
                partitions,
                projecting.clone(),
            )))
        }
        _ => None,
    };
    let fatal_watch = tokio::spawn(fail_stop(backend.write.clone(), shutdown.clone()));
    let shutdown_timeout = config.shutdown_timeout;
    let connections = config.security.connections;
    let app = router(state, config.routes);
    let stop = shutdown.clone();
    let local = backend.local.clone();
    let task = tokio::spawn(async move {
        let drain = draining.clone();
        let requested = stop.clone();
        let mut server = tokio::spawn(async move {
            let stopped = async move {
                stop.cancelled().await;
                drain.store(true, Ordering::Relaxed);
                tracing::info!("shutting down: draining requests");
            };
            crate::http::server::serve(listener, app, tls, connections, stopped).await
        });
        // Shutdown has one budget that fits the pod's grace period: requests drain first,
        // then what was committed is published, then projected, then leases are released.
        // A phase that overruns its share is abandoned (what it left is redone by the next
        // process: nothing acknowledged lives only in memory).
        let served = tokio::select! {
            served = &mut server => served,
            () = requested.cancelled() => {
                let budget = Budget::start(shutdown_timeout);
                match tokio::time::timeout(budget.until(0.4), &mut server).await {
                    Ok(served) => served,
                    Err(_) => {
                        tracing::warn!("requests still open at the end of their share of the shutdown; closing them");
                        server.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        let served = served.unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let budget = Budget::start(shutdown_timeout.mul_f64(0.6));
        producers.cancel();
        for job in producer_jobs {
            if tokio::time::timeout(budget.until(0.5), job).await.is_err() {
                tracing::warn!("a worker did not stop within its share of the shutdown");
            }
        }
        projecting.cancel();
        if let Some(job) = projector_job
            && tokio::time::timeout(budget.until(0.85), job).await.is_err()
        {
            tracing::warn!(
                "the projectors did not catch up within their share of the shutdown; the next start resumes from the stored offsets"
            );
        }
        releasing.cancel();
        for job in lease_jobs {
            if tokio::time::timeout(budget.until(1.0), job).await.is_err() {
                tracing::warn!("leases were not released in time; they will expire");
            }
        }
        if let Ok(Some(why)) = fatal_watch.await {
            // No checkpoint: after a failed fsync the page cache is not to be trusted.
            tracing::error!("stopped after a storage fault");
            return Err(AppError::Fatal(why));
        }
        // Nothing writes any more: leave no WAL behind.
        let local = local.clone();
        match tokio::task::spawn_blocking(move || local.checkpoint()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot checkpoint the data directory at shutdown")
            }
            Err(e) => tracing::warn!(error = %e, "checkpoint at shutdown panicked"),
        }
        tracing::info!("stopped");
        served.map_err(AppError::from)
    });
    tracing::info!(%addr, member = %config.member, "stockflow is serving");
    Ok(Running {
        addr,
        backend,
        in_flight,
        shutdown,
        task,
    })
}

/// A time budget split into phases: `until(f)` is what is left until the fraction `f` of
/// the budget has passed (zero once it has).
struct Budget {
    started: tokio::time::Instant,
    total: Duration,
}

impl Budget {
    fn start(total: Duration) -> Self {
        Self {
            started: tokio::time::Instant::now(),
            total,
        }
    }

    fn until(&self, fraction: f64) -> Duration {
        (self.started + self.total.mul_f64(fraction))
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

/// Fail-stop: when the write store has stopped for good (a failed fsync), the process
/// shuts down and exits with an error, so its supervisor restarts it from what is on disk
/// instead of it serving on in a state nobody knows. Returns the reason, or `None` after
/// an ordinary shutdown.
async fn fail_stop(write: Arc<dyn WriteStore>, shutdown: CancellationToken) -> Option<String> {
    let mut every = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return write.fatal_error(),
            _ = every.tick() => {
                if let Some(why) = write.fatal_error() {
                    tracing::error!(%why, "the write store stopped for good; shutting down so the process restarts from disk");
                    shutdown.cancel();
                    return Some(why);
                }
            }
        }
    }
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
