//! Stopping: on ctrl-c or SIGTERM (or a storage fault), one time budget that fits the
//! pod's grace period is split into phases: requests drain, then what was committed is
//! published, then projected, then leases are released. A phase that overruns its share is
//! abandoned; the next process redoes its work from the outbox and the stored offsets.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use stockflow_storage::ports::WriteStore;
use tokio_util::sync::CancellationToken;

use super::AppError;

/// A time budget split into phases: `until(f)` is what is left until the fraction `f` of
/// the budget has passed (zero once it has).
pub(super) struct Budget {
    started: tokio::time::Instant,
    total: Duration,
}

impl Budget {
    pub(super) fn start(total: Duration) -> Self {
        Self {
            started: tokio::time::Instant::now(),
            total,
        }
    }

    pub(super) fn until(&self, fraction: f64) -> Duration {
        (self.started + self.total.mul_f64(fraction))
            .saturating_duration_since(tokio::time::Instant::now())
    }
}

/// Fail-stop: when the write store has stopped for good (a failed fsync), the process
/// shuts down and exits with an error, so its supervisor restarts it from what is on disk
/// instead of it serving on in a state nobody knows. Returns the reason, or `None` after
/// an ordinary shutdown.
pub(super) async fn fail_stop(
    write: Arc<dyn WriteStore>,
    shutdown: CancellationToken,
) -> Option<String> {
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

/// What serves HTTP until the stop.
pub(super) struct Serving {
    pub listener: tokio::net::TcpListener,
    pub app: axum::Router,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub connections: crate::http::server::ConnectionLimits,
    /// Set when the stop starts, so `/readyz` fails and load balancers drain this replica.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Cancelled to stop.
    pub stop: CancellationToken,
}

/// Serves until `serving.stop` is cancelled, then stops in phases within `timeout`.
pub(super) async fn serve_then_stop(
    serving: Serving,
    workers: super::workers::Spawned,
    fatal_watch: tokio::task::JoinHandle<Option<String>>,
    timeout: Duration,
    local: super::LocalData,
) -> Result<(), super::AppError> {
    let Serving {
        listener,
        app,
        tls,
        connections,
        draining,
        stop,
    } = serving;
    let super::workers::Spawned {
        producers,
        producer_jobs,
        projecting,
        projector_job,
        purging,
        purge_job,
        releasing,
        lease_jobs,
    } = workers;
    let shutdown_timeout = timeout;

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
    purging.cancel();
    if let Some(job) = purge_job
        && tokio::time::timeout(budget.until(0.9), job).await.is_err()
    {
        tracing::warn!("the edge purge did not finish in time; the edge TTL ends what it left");
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
}
