//! Wiring: the embedded platform of `stockflow dev` — stores, workers and HTTP in one
//! process — with a shutdown that drains requests before stopping the workers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use stockflow_storage::embedded::EmbeddedBackend;
use stockflow_storage::now_ms;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::extract::InFlight;
use crate::http::{AppState, router};
use crate::telemetry::metrics_handle;
use crate::workers::projector::{ProjectorConfig, ProjectorHandle};
use crate::workers::publisher::PublisherConfig;
use crate::workers::{expiry, projector, publisher};

/// Settings of the embedded platform.
#[derive(Debug, Clone)]
pub struct DevConfig {
    /// Where the SQLite files live.
    pub data_dir: PathBuf,
    /// Partitions of the event log (fixed when the data directory is created).
    pub partitions: u32,
    /// Projector settings.
    pub projector: ProjectorConfig,
    /// How long idempotency records are kept.
    pub idempotency_ttl: Duration,
}

impl DevConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        Self {
            data_dir,
            partitions: 8,
            projector: ProjectorConfig::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Why the platform could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The stores could not be opened.
    #[error("cannot open the data directory: {0}")]
    Store(#[from] stockflow_storage::StoreError),
    /// The HTTP server failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

/// A platform started by [`start`].
pub struct Running {
    /// Where HTTP is served.
    pub addr: SocketAddr,
    /// The stores (tests inspect them).
    pub backend: EmbeddedBackend,
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

/// Opens the data directory, starts the workers and serves HTTP on `listener`.
pub async fn start(config: DevConfig, listener: TcpListener) -> Result<Running, AppError> {
    let backend = EmbeddedBackend::open(&config.data_dir, config.partitions)?;
    let addr = listener.local_addr()?;
    let (expiry_handle, expiry_rx) = expiry::channel();
    let projector_handle = ProjectorHandle::default();
    let draining = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(InFlight::default());
    let state = AppState {
        write: backend.write.clone(),
        outbox: backend.write.clone(),
        read: backend.read.clone(),
        in_flight: in_flight.clone(),
        expiry: expiry_handle,
        projector: projector_handle.clone(),
        metrics: metrics_handle(),
        draining: draining.clone(),
    };
    let shutdown = CancellationToken::new();
    let workers = CancellationToken::new();
    let jobs = vec![
        tokio::spawn(publisher::run(
            backend.write.clone(),
            backend.log.clone(),
            PublisherConfig::default(),
            workers.clone(),
        )),
        tokio::spawn(projector::run(
            backend.log.clone(),
            backend.read.clone(),
            config.projector.clone(),
            projector_handle,
            workers.clone(),
        )),
        tokio::spawn(expiry::run(
            backend.write.clone(),
            expiry_rx,
            workers.clone(),
        )),
        tokio::spawn(purge_idempotency(
            backend.clone(),
            config.idempotency_ttl,
            workers.clone(),
        )),
    ];
    let app = router(state);
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let drain = draining.clone();
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                stop.cancelled().await;
                drain.store(true, Ordering::Relaxed);
                tracing::info!("shutting down: draining requests");
            })
            .await;
        // Requests are done; let the workers publish and project what they committed.
        workers.cancel();
        for job in jobs {
            if tokio::time::timeout(Duration::from_secs(10), job)
                .await
                .is_err()
            {
                tracing::warn!("a worker did not stop within 10 s");
            }
        }
        tracing::info!("stopped");
        served.map_err(AppError::from)
    });
    tracing::info!(%addr, data_dir = %config.data_dir.display(), "stockflow dev is serving");
    Ok(Running {
        addr,
        backend,
        in_flight,
        shutdown,
        task,
    })
}

async fn purge_idempotency(backend: EmbeddedBackend, ttl: Duration, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                let before = now_ms() - i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
                match backend.write.purge_idempotency(before).await {
                    Ok(n) if n > 0 => tracing::info!(purged = n, "expired idempotency records removed"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot purge idempotency records"),
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
