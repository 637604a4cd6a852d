//! `stockflow store-agent`: the process beside a store's POS that keeps the store selling
//! when the region cannot be reached. Every sale, return, receipt and count is committed to
//! the agent's own SQLite file before the POS gets its answer, forwarded to the region in
//! order per key with a stable Idempotency-Key (so every command is applied exactly once,
//! however often it is resent), and the store's stock is read from the region's change
//! feed plus what the region has not acknowledged yet.
//!
//! Layout:
//! - [`store`]: the agent's SQLite file: the command queue, the quarantine, the region's
//!   view of the store's stock and the feed cursor.
//! - [`region`]: the client of the region: commands with their keys, answers sorted into
//!   acknowledged, refused for good, or retry; the token file; the region's clock.
//! - [`forward`]: the queue drained in order per key, with backoff, jitter and a circuit
//!   breaker.
//! - [`feed`]: the region's change feed followed into the local view.
//! - [`state`]: what the handlers and tasks share.
//! - [`api`]: the loopback API for the POS; [`staff`]: the staff's endpoints.
//! - [`status`]: the status as JSON, metrics and an HTML page.
//! - [`capture`]: sales read from the POS's own PostgreSQL (logical replication).

pub mod api;
pub mod capture;
pub mod feed;
pub mod forward;
pub mod region;
pub mod staff;
pub mod state;
pub mod status;
pub mod store;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Why the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent's SQLite file failed.
    #[error("{what}: {source}")]
    Sqlite {
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored or received document does not decode.
    #[error("{what} does not decode: {source}")]
    Corrupt {
        /// What.
        what: String,
        /// The decoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// The filesystem failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The region answered what the agent cannot use.
    #[error("region: {0}")]
    Region(String),
    /// A setting is unusable.
    #[error("{0}")]
    Settings(String),
    /// The data directory is another agent's.
    #[error(transparent)]
    Locked(#[from] stockflow_storage::StoreError),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    stockflow_storage::now_ms()
}

/// What an agent needs.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The region's command API (`https://…`).
    pub region_url: String,
    /// The store.
    pub store_id: String,
    /// The store's locations.
    pub locations: BTreeSet<String>,
    /// The bearer token's file.
    pub token_file: Option<PathBuf>,
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// Where the POS reaches the agent (loopback).
    pub listen: SocketAddr,
    /// The longest a command may wait for the region: the region must keep idempotency
    /// records at least this long, which the agent checks.
    pub max_offline: Duration,
    /// The size the agent's store may take on disk.
    pub disk_cap_bytes: u64,
    /// How long acknowledged commands are kept before compaction.
    pub keep_acknowledged: Duration,
    /// How long one attempt waits for the region's answer.
    pub request_timeout: Duration,
    /// The POS's PostgreSQL to capture sales from, if the POS writes there.
    pub capture: Option<capture::postgres::PostgresCapture>,
    /// TLS to the region beyond the public roots: its CA, the store's client certificate.
    pub region_tls: region::RegionTls,
}

/// How often settled commands are compacted.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// A running agent.
pub struct RunningAgent {
    /// Where the POS reaches it.
    pub addr: SocketAddr,
    /// Its state (tests read the store).
    pub state: api::AgentState,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _lock: stockflow_storage::embedded::DataDirLock,
}

impl RunningAgent {
    /// Stops it (requests drain, the forwarder and the feed stop) and waits.
    pub async fn stop(self) -> Result<(), AgentError> {
        self.stop.cancel();
        self.wait().await
    }

    /// Waits until it stops.
    pub async fn wait(self) -> Result<(), AgentError> {
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(AgentError::Io {
                what: "serve the agent's API".into(),
                source,
            }),
            Err(e) => Err(AgentError::Settings(format!(
                "the agent's task panicked: {e}"
            ))),
        }
    }

    /// Cancelling it stops the agent.
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Starts the agent on `listener`: its store (one agent per data directory), the
/// forwarder, the feed follower, compaction and the API.
pub async fn start(
    config: AgentConfig,
    listener: tokio::net::TcpListener,
) -> Result<RunningAgent, AgentError> {
    if config.locations.is_empty() {
        return Err(AgentError::Settings(
            "a store agent needs the store's --locations".into(),
        ));
    }
    // The recorder first, so the counters of every task are kept from their first event.
    let _ = crate::telemetry::metrics_handle();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| AgentError::Io {
        what: format!("create {}", config.data_dir.display()),
        source,
    })?;
    let lock = stockflow_storage::embedded::DataDirLock::acquire(&config.data_dir)?;
    let store = store::AgentStore::open(&config.data_dir)?;
    let region = Arc::new(region::Region::new(
        &config.region_url,
        &config.store_id,
        config.token_file.clone(),
        config.request_timeout,
        &config.region_tls,
    )?);
    let addr = listener.local_addr().map_err(|source| AgentError::Io {
        what: "read the listen address".into(),
        source,
    })?;
    let stop = CancellationToken::new();
    let state = api::AgentState {
        store: store.clone(),
        store_id: config.store_id.clone(),
        locations: Arc::new(config.locations.clone()),
        link: Arc::new(forward::Link::default()),
        feed: Arc::new(Mutex::new(feed::FeedState::default())),
        region: region.clone(),
        wake: Arc::new(Notify::new()),
        disk_cap_bytes: config.disk_cap_bytes,
        started_ms: now_ms(),
        page_views: Arc::default(),
    };
    tokio::spawn(forward::run(
        store.clone(),
        region.clone(),
        state.link.clone(),
        state.wake.clone(),
        stop.clone(),
    ));
    tokio::spawn(feed::run(
        store.clone(),
        region.clone(),
        config.locations.iter().cloned().collect(),
        state.feed.clone(),
        stop.clone(),
    ));
    if let Some(pos) = config.capture.clone() {
        let columns = pos.columns.clone();
        let source = capture::postgres::PostgresSource::new(pos, store.clone(), stop.clone());
        tokio::spawn(capture::run(
            state.clone(),
            Box::new(source),
            columns,
            stop.clone(),
        ));
    }
    tokio::spawn(compact(store, config.keep_acknowledged, stop.clone()));
    tokio::spawn(learn_key_lifetime(
        region,
        state.link.clone(),
        config.max_offline,
        stop.clone(),
    ));
    let app = api::router(state.clone());
    let stopping = stop.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopping.cancelled().await })
            .await
    });
    tracing::info!(%addr, store = %config.store_id, region = %config.region_url, "store agent is serving");
    Ok(RunningAgent {
        addr,
        state,
        stop,
        task,
        _lock: lock,
    })
}

/// Reads how long the region keeps an Idempotency-Key (retrying until it answers) and
/// says so when that is shorter than the agent may hold a command.
async fn learn_key_lifetime(
    region: Arc<region::Region>,
    link: Arc<forward::Link>,
    max_offline: Duration,
    stop: CancellationToken,
) {
    let mut wait = Duration::from_secs(1);
    loop {
        match region.key_lifetime_seconds().await {
            Ok(secs) => {
                let lifetime = Duration::from_secs(secs);
                link.set_key_lifetime(lifetime);
                if lifetime < max_offline {
                    tracing::warn!(
                        region_keeps_s = secs,
                        agent_may_hold_s = max_offline.as_secs(),
                        "the region forgets Idempotency-Keys sooner than this store may sell offline: \
                         a command held longer is quarantined instead of resent"
                    );
                } else {
                    tracing::info!(
                        region_keeps_s = secs,
                        "the region keeps Idempotency-Keys long enough"
                    );
                }
                return;
            }
            Err(e) => tracing::debug!(error = %e, "cannot read the region's key lifetime yet"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(60));
    }
}

/// Removes acknowledged commands once they are `keep` old.
async fn compact(store: store::AgentStore, keep: Duration, stop: CancellationToken) {
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(COMPACT_EVERY) => {}
        }
        let store = store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            loop {
                let n = store.compact(now_ms() - keep_ms, 1000)?;
                removed += n;
                if n < 1000 {
                    return Ok::<_, AgentError>(removed);
                }
            }
        })
        .await;
        match result {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::debug!(removed = n, "compacted acknowledged commands"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot compact the agent's store"),
            Err(e) => tracing::warn!(error = %e, "compaction panicked"),
        }
    }
}
