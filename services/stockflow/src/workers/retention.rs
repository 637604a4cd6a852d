//! Retention: keeps every growing table of a process's stores bounded, in small batches
//! off the commit path, and reports what each one holds.
//!
//! Idempotency records live as long as a key's documented lifetime; final reservations,
//! dead letters and the embedded log as long as configured. ScyllaDB's tables expire by
//! TTL, so there the write-store purges remove nothing; its dead letters are removed
//! here. Records of the embedded log are removed only below every consumer's offset.

use std::sync::Arc;
use std::time::Duration;

use stockflow_storage::embedded::SqliteEventLog;
use stockflow_storage::ports::{Purge, ReadStore, WriteStore};
use stockflow_storage::{Result, now_ms};
use tokio_util::sync::CancellationToken;

/// How long each kind of row is kept, and how retention runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Idempotency records: the lifetime of an Idempotency-Key.
    pub idempotency: Duration,
    /// Confirmed, released and expired reservations (`GET /v1/reservations/{id}` answers
    /// 404 afterwards, and the id may be used again).
    pub final_reservations: Duration,
    /// Dead letters not replayed.
    pub dead_letters: Duration,
    /// The movement history of the read side.
    pub movements: Duration,
    /// Records of the embedded event log, once every consumer has read them.
    pub log: Duration,
    /// The change feed store agents follow (ScyllaDB keeps it by its TTL, three days): a
    /// cursor older than this is answered "expired" and the agent loads the snapshot.
    pub change_feed: Duration,
    /// How often retention runs.
    pub every: Duration,
    /// Rows removed per batch: one batch holds the embedded writer for about a
    /// millisecond, so commands are never queued behind a large purge.
    pub batch: usize,
}

impl Default for Retention {
    fn default() -> Self {
        let day = Duration::from_secs(24 * 3600);
        Self {
            idempotency: Duration::from_secs(u64::from(
                stockflow_domain::IDEMPOTENCY_KEY_LIFETIME_SECS,
            )),
            // As long as a key: a retried confirm finds its reservation.
            final_reservations: day,
            dead_letters: 14 * day,
            movements: 90 * day,
            log: 7 * day,
            change_feed: 3 * day,
            every: Duration::from_secs(60),
            batch: 1000,
        }
    }
}

/// The local event log retention trims, and the consumer whose offsets bound it (`None`
/// when no process projects from it: only age counts then).
#[derive(Clone)]
pub struct LocalLog {
    /// The log.
    pub log: Arc<SqliteEventLog>,
    /// The projector's consumer name, if this process projects from the log.
    pub consumer: Option<String>,
}

/// What one process keeps bounded.
#[derive(Clone)]
pub struct Targets {
    /// Its write store (idempotency records, final reservations).
    pub write: Arc<dyn WriteStore>,
    /// Its read store, when this process writes dead letters.
    pub read: Option<Arc<dyn ReadStore>>,
    /// Its embedded event log, if it has one.
    pub log: Option<LocalLog>,
}

/// Runs retention every `retention.every` until `shutdown`.
pub async fn run(targets: Targets, retention: Retention, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(retention.every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        if let Err(e) = pass(&targets, &retention, &shutdown).await {
            tracing::warn!(error = %e, "retention pass failed; retrying at the next one");
        }
    }
}

/// One pass over every target; returns the rows removed.
pub async fn pass(
    targets: &Targets,
    retention: &Retention,
    shutdown: &CancellationToken,
) -> Result<usize> {
    let now = now_ms();
    let before = |keep: Duration| now - i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    let mut removed = 0;
    for (what, table, keep) in [
        (
            Purge::IdempotencyRecords,
            "idempotency",
            retention.idempotency,
        ),
        (
            Purge::FinalReservations,
            "final_reservations",
            retention.final_reservations,
        ),
    ] {
        let write = targets.write.clone();
        removed += in_batches(table, retention.batch, shutdown, || {
            let write = write.clone();
            async move { write.purge(what, before(keep), retention.batch).await }
        })
        .await?;
    }
    for (table, rows) in targets.write.retained().await? {
        metrics::gauge!("stockflow_retained_rows", "table" => table).set(rows as f64);
    }
    if let Some(read) = &targets.read {
        let cutoff = before(retention.dead_letters);
        removed += in_batches("dead_letters", retention.batch, shutdown, || {
            let read = read.clone();
            async move { read.purge_dead_letters(cutoff, retention.batch).await }
        })
        .await?;
        let cutoff = before(retention.movements);
        removed += in_batches("movements", retention.batch, shutdown, || {
            let read = read.clone();
            async move { read.purge_movements(cutoff, retention.batch).await }
        })
        .await?;
        let cutoff = before(retention.change_feed);
        removed += in_batches("change_feed", retention.batch, shutdown, || {
            let read = read.clone();
            async move { read.purge_changes(cutoff, retention.batch).await }
        })
        .await?;
        let held = read.dead_letter_count().await?;
        metrics::gauge!("stockflow_retained_rows", "table" => "dead_letters").set(held as f64);
    }
    if let Some(local) = &targets.log {
        removed += trim_log(
            local,
            targets.read.as_deref(),
            before(retention.log),
            retention,
            shutdown,
        )
        .await?;
        let held = local.log.record_count().await?;
        metrics::gauge!("stockflow_retained_rows", "table" => "log_records").set(held as f64);
    }
    Ok(removed)
}

/// Removes the log's records that are older than `before_ms` and below the consumer's
/// offset in each partition.
async fn trim_log(
    local: &LocalLog,
    read: Option<&dyn ReadStore>,
    before_ms: i64,
    retention: &Retention,
    shutdown: &CancellationToken,
) -> Result<usize> {
    use stockflow_bus::EventLog;
    let mut removed = 0;
    for partition in 0..local.log.partitions() {
        let below = match (&local.consumer, read) {
            (Some(consumer), Some(read)) => read.offset(consumer, partition).await?,
            _ => u64::MAX,
        };
        let log = local.log.clone();
        removed += in_batches("log_records", retention.batch, shutdown, || {
            let log = log.clone();
            async move { log.purge(partition, below, before_ms, retention.batch) }
        })
        .await?;
    }
    Ok(removed)
}

/// Repeats `purge` while it removes full batches, yielding between them.
async fn in_batches<F, Fut>(
    table: &'static str,
    batch: usize,
    shutdown: &CancellationToken,
    mut purge: F,
) -> Result<usize>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<usize>>,
{
    let mut total = 0;
    loop {
        let n = purge().await?;
        total += n;
        if n > 0 {
            metrics::counter!("stockflow_retention_removed_total", "table" => table)
                .increment(n as u64);
        }
        if n < batch || shutdown.is_cancelled() {
            break;
        }
        tokio::task::yield_now().await;
    }
    if total > 0 {
        tracing::info!(table, removed = total, "retention removed old rows");
    }
    Ok(total)
}
