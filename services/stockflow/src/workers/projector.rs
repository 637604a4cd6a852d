//! Projectors: one task per log partition this replica holds a lease on applies events to
//! the read models.
//!
//! - Offsets are stored with the read models in the same transaction (the inbox), so a
//!   restart resumes exactly where the last committed batch ended.
//! - Delivery is never trusted: offsets must be contiguous. A fetch that skips offsets
//!   (the Fluvio 0.50.1 client drops the rest of a batch at `max_bytes`) is cut at the gap
//!   and the next fetch starts from the first missing offset.
//! - A record that cannot be decoded, or fails `max_attempts` times, goes to the DLQ with
//!   its error and the partition moves on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockflow_bus::EventLog;
use stockflow_storage::ports::ReadStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::leases::{Owned, run_owned_partitions};

mod step;

use super::backoff;
use step::first_held;
pub use step::{Step, step};

/// Projector settings.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// Consumer name under which offsets are stored.
    pub consumer: String,
    /// This replica's name, recorded with every movement it projects.
    pub replica: String,
    /// Bytes asked for per fetch.
    pub max_bytes: usize,
    /// Attempts before a record goes to the DLQ.
    pub max_attempts: u32,
    /// How long one fetch waits for a record at the end of a partition (a long poll).
    pub idle_poll: Duration,
    /// Pause after a short batch, trading a few milliseconds of lag for fewer, larger
    /// read-model transactions under load.
    pub coalesce: Duration,
    /// Told what every committed batch changed, so the edge cache is purged only once the
    /// read models show the change (`--edge-purge-url`).
    pub edge_purge: Option<super::edge_purge::PurgeQueue>,
}

/// Batches shorter than this are followed by the coalescing pause.
const COALESCE_BELOW: u64 = 64;

/// How long a partition waits before re-reading a missing offset.
const GAP_PAUSE: Duration = Duration::from_millis(200);
/// How often a partition's lag behind the log's end is measured (one offset lookup).
const LAG_EVERY: Duration = Duration::from_secs(5);

impl Default for ProjectorConfig {
    fn default() -> Self {
        Self {
            consumer: "read-models".into(),
            replica: "local".into(),
            max_bytes: 1 << 20,
            max_attempts: 3,
            idle_poll: Duration::from_millis(200),
            coalesce: Duration::from_millis(5),
            edge_purge: None,
        }
    }
}

/// The consumer name under which the offsets of `log` are stored: tied to the log's
/// identity, so offsets stored for another log (a recreated data directory, another topic)
/// are never applied to this one.
pub fn consumer_for(log: &dyn EventLog) -> String {
    format!("read-models@{}", log.identity())
}

/// Lets the API ask running projectors to start again from offset 0.
#[derive(Clone)]
pub struct ProjectorHandle {
    replay: Arc<watch::Sender<u64>>,
}

impl Default for ProjectorHandle {
    fn default() -> Self {
        Self {
            replay: Arc::new(watch::channel(0).0),
        }
    }
}

impl ProjectorHandle {
    /// Every partition re-reads the log from its first offset.
    pub fn replay_from_start(&self) {
        self.replay.send_modify(|generation| *generation += 1);
    }
}

/// Runs one projector task per partition in `owned` until `shutdown`, starting and
/// stopping tasks as leases come and go.
pub async fn run(
    log: Arc<dyn EventLog>,
    read: Arc<dyn ReadStore>,
    config: ProjectorConfig,
    handle: ProjectorHandle,
    owned: Owned,
    shutdown: CancellationToken,
) {
    let partitions = log.partitions();
    run_owned_partitions(
        owned,
        partitions,
        &shutdown,
        "projecting",
        |partition, revoked| {
            tokio::spawn(run_partition(
                log.clone(),
                read.clone(),
                config.clone(),
                partition,
                handle.replay.subscribe(),
                shutdown.clone(),
                revoked,
            ))
        },
    )
    .await;
    tracing::info!("projectors stopped");
}

/// Projects one partition until `shutdown` (after catching up) or until its lease is
/// `revoked` (at once).
async fn run_partition(
    log: Arc<dyn EventLog>,
    read: Arc<dyn ReadStore>,
    config: ProjectorConfig,
    partition: u32,
    mut replay: watch::Receiver<u64>,
    shutdown: CancellationToken,
    revoked: CancellationToken,
) {
    let mut failures = 0u32;
    let mut next = loop {
        match read.offset(&config.consumer, partition).await {
            Ok(offset) => break offset,
            Err(e) => {
                failures += 1;
                tracing::warn!(partition, error = %e, "cannot read consumer offset; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff(failures)) => {}
                    _ = shutdown.cancelled() => return,
                    _ = revoked.cancelled() => return,
                }
            }
        }
    };
    if next == 0 {
        // Never projected: start where the log starts (retention may have removed the
        // oldest records; everything they did is in the records that follow).
        next = first_held(&*log, partition).await;
    }
    tracing::info!(partition, offset = next, "projecting a partition");
    let mut generation = *replay.borrow_and_update();
    let mut gap_since: Option<Instant> = None;
    let lag = LagGauge::new(partition);
    let mut lag_measured: Option<Instant> = None;
    // On shutdown, keep going until caught up with the log: the publisher stops first, so
    // everything it appended still reaches the read models.
    loop {
        if revoked.is_cancelled() {
            return;
        }
        if lag_measured.is_none_or(|at| at.elapsed() >= LAG_EVERY) {
            lag_measured = Some(Instant::now());
            lag.measure(&*log, next).await;
        }
        let requested = *replay.borrow();
        if requested != generation {
            generation = requested;
            next = first_held(&*log, partition).await;
            tracing::info!(partition, offset = next, "replaying the log from its start");
        }
        // Once draining, stop waiting for records that will not come.
        let wait = if shutdown.is_cancelled() {
            Duration::ZERO
        } else {
            config.idle_poll
        };
        let stepped = tokio::select! {
            stepped = step(&*log, &*read, &config, partition, next, wait) => stepped,
            Ok(()) = replay.changed() => continue,
            _ = revoked.cancelled() => return,
        };
        if !matches!(stepped, Ok(Step::Gap)) && gap_since.take().is_some() {
            metrics::gauge!("stockflow_projection_gap_seconds", "partition" => partition.to_string())
                .set(0.0);
        }
        match stepped {
            Ok(Step::Gap) => {
                // Re-read after a pause, not in a hot loop; a gap that stays is a stalled
                // read model, which the gauge (and its alert) makes visible.
                let since = *gap_since.get_or_insert_with(Instant::now);
                let stalled = since.elapsed();
                metrics::gauge!("stockflow_projection_gap_seconds", "partition" => partition.to_string())
                    .set(stalled.as_secs_f64());
                if stalled > Duration::from_secs(30) {
                    tracing::error!(
                        partition,
                        offset = next,
                        stalled_seconds = stalled.as_secs(),
                        "the record at this offset is missing from the log; the partition's read models are stalled"
                    );
                }
                if shutdown.is_cancelled() {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(GAP_PAUSE) => {}
                    _ = shutdown.cancelled() => {}
                    _ = revoked.cancelled() => return,
                }
            }
            Ok(Step::Advanced(to)) => {
                failures = 0;
                // A short batch means we are keeping up: let records accumulate briefly
                // so each read-model transaction carries more than a handful of events.
                if to - next < COALESCE_BELOW
                    && !config.coalesce.is_zero()
                    && !shutdown.is_cancelled()
                {
                    tokio::time::sleep(config.coalesce).await;
                }
                next = to;
            }
            Ok(Step::Idle) => {
                failures = 0;
                if shutdown.is_cancelled() {
                    break;
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(partition, offset = next, error = %e, "projection failed; retrying");
                if shutdown.is_cancelled() && failures > 3 {
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff(failures)) => {}
                    _ = shutdown.cancelled() => {}
                    _ = revoked.cancelled() => return,
                }
            }
        }
    }
}

/// `stockflow_consumer_lag_records{partition}`: records of the partition on the log not
/// yet projected. Reset to 0 when this replica lets the partition go, so a moved lease
/// leaves no stale figure behind.
struct LagGauge {
    gauge: metrics::Gauge,
    partition: u32,
}

impl LagGauge {
    fn new(partition: u32) -> Self {
        let gauge =
            metrics::gauge!("stockflow_consumer_lag_records", "partition" => partition.to_string());
        Self { gauge, partition }
    }

    /// Sets the gauge from the log's end offset; a bus that does not answer within a
    /// second keeps the last figure (its outage shows in `/readyz` and the publish metrics).
    async fn measure(&self, log: &dyn EventLog, next: u64) {
        match tokio::time::timeout(Duration::from_secs(1), log.end_offset(self.partition)).await {
            Ok(Ok(end)) => self.gauge.set(end.saturating_sub(next) as f64),
            Ok(Err(e)) => {
                tracing::debug!(partition = self.partition, error = %e, "cannot read the log's end offset");
            }
            Err(_) => {}
        }
    }
}

impl Drop for LagGauge {
    fn drop(&mut self) {
        self.gauge.set(0.0);
    }
}

#[cfg(test)]
mod tests;
