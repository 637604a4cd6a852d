//! Edge-cache purge: after the projector has applied a batch, purge the SKUs it changed
//! from the edge cache by surrogate key, then hand them to the warmer
//! ([`super::edge_warm`]).
//!
//! Why here and not at the command API: purging before the read model reflects a change
//! lets the next miss refetch the old answer and keep it for the edge TTL. The projector
//! reports what it applied ([`PurgeQueue::applied`]) only after its read-model write
//! committed, so in a region the projector role runs this worker.
//!
//! - Never blocks projection: `applied` only merges keys into a set under a mutex. The set
//!   coalesces (a SKU changed 50 times in a second is purged once) and is bounded: when it
//!   would hold more than its capacity, the keys are dropped and the next purge empties
//!   the whole cache ([`crate::http::surrogate::ALL_TAG`]). Dropping keys would leave
//!   stale objects for the whole edge TTL; purging everything costs hit ratio for a
//!   moment and is only needed when the edge is far behind anyway.
//! - One `PURGE` per SKU (`xkey-purge: sku:<sku>`, the sample VCL's contract), several at
//!   a time over kept-alive connections: the cache answers how many objects each purge
//!   removed, which tells the warmer which SKUs were cached (read since their last purge)
//!   and are worth fetching again.
//! - A purge that still fails after a few attempts puts its SKU back in the set, retried
//!   with backoff: a change is never forgotten while the process lives. Keys pending at a
//!   crash are lost; the edge TTL bounds how long their objects stay stale.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use stockflow_domain::BusEvent;
use stockflow_storage::now_ms;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::backoff;
use super::edge_warm::{self, WarmBatch};
use crate::http::surrogate::{ALL_TAG, sku_tag};

/// The header the sample VCL (`config/samples/varnish/stockflow.vcl`) purges by.
pub const PURGE_HEADER: &str = "xkey-purge";
/// The header the sample VCL answers with the number of objects it purged.
const PURGED_HEADER: &str = "x-purged";

/// Settings of the purge worker (`--edge-purge-url` and friends).
#[derive(Debug, Clone)]
pub struct PurgeConfig {
    /// Where `PURGE` requests go (the cache itself, e.g. `http://127.0.0.1:16081/`).
    pub purge_url: String,
    /// The cache's base URL for warming GETs; `None`: no warming.
    pub warm_url: Option<String>,
    /// SKUs warmed per purge batch at most (the most cached first).
    pub warm_max: usize,
    /// Distinct SKUs the queue holds before it overflows into a purge of everything.
    pub capacity: usize,
    /// How long a purge request may take.
    pub timeout: Duration,
    /// Attempts per SKU before it goes back into the queue.
    pub attempts: u32,
    /// Purges in flight at once.
    pub concurrency: usize,
    /// Pause after a wake-up so changes arriving together are purged together.
    pub linger: Duration,
}

impl PurgeConfig {
    /// Defaults for a cache at `purge_url`, warmed through the same address.
    pub fn new(purge_url: String) -> Self {
        Self {
            warm_url: Some(purge_url.clone()),
            purge_url,
            warm_max: 64,
            capacity: 10_000,
            timeout: Duration::from_secs(2),
            attempts: 3,
            concurrency: 8,
            linger: Duration::from_millis(5),
        }
    }
}

/// What the projector applied and the edge has not yet been told about.
#[derive(Debug, Default)]
struct Pending {
    /// SKU → the locations whose stock changed (empty for catalog and policy changes).
    skus: BTreeMap<String, BTreeSet<String>>,
    /// Keys were dropped: purge everything.
    overflowed: bool,
    /// When the oldest pending change was committed (Unix ms), for the lag metric.
    oldest_ms: Option<i64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.skus.is_empty() && !self.overflowed
    }

    fn note(&mut self, sku: &str, location: Option<&str>, at_ms: i64, capacity: usize) {
        self.oldest_ms = Some(self.oldest_ms.map_or(at_ms, |o| o.min(at_ms)));
        if self.overflowed {
            return;
        }
        if !self.skus.contains_key(sku) && self.skus.len() >= capacity {
            self.skus.clear();
            self.overflowed = true;
            metrics::counter!("stockflow_edge_purge_overflows_total").increment(1);
            return;
        }
        let locations = self.skus.entry(sku.to_string()).or_default();
        if let Some(location) = location {
            locations.insert(location.to_string());
        }
    }
}

/// The bounded, coalescing hand-off from the projectors to the purge worker.
#[derive(Debug, Clone)]
pub struct PurgeQueue {
    inner: Arc<QueueInner>,
}

#[derive(Debug)]
struct QueueInner {
    pending: Mutex<Pending>,
    wake: Notify,
    capacity: usize,
}

impl PurgeQueue {
    /// A queue holding at most `capacity` distinct SKUs.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(QueueInner {
                pending: Mutex::new(Pending::default()),
                wake: Notify::new(),
                capacity: capacity.max(1),
            }),
        }
    }

    /// Records what a committed projection changed; never waits on the edge.
    pub fn applied(&self, events: &[BusEvent]) {
        if events.is_empty() {
            return;
        }
        {
            let mut pending = self.lock();
            for event in events {
                let location = match event {
                    BusEvent::Stock(e) => Some(e.location.as_str()),
                    BusEvent::Catalog(_) | BusEvent::Policy(_) => None,
                };
                pending.note(
                    event.key().as_str(),
                    location,
                    event.occurred_at_ms(),
                    self.inner.capacity,
                );
            }
            metrics::gauge!("stockflow_edge_purge_queue").set(pending.skus.len() as f64);
        }
        self.inner.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // The set stays consistent whatever panicked while holding it.
        self.inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> Pending {
        let taken = std::mem::take(&mut *self.lock());
        metrics::gauge!("stockflow_edge_purge_queue").set(0.0);
        taken
    }

    /// Puts back what could not be purged, merged with what arrived meanwhile.
    fn restore(&self, failed: BTreeMap<String, BTreeSet<String>>, overflowed: bool, at: i64) {
        let mut pending = self.lock();
        if overflowed {
            pending.skus.clear();
            pending.overflowed = true;
        }
        for (sku, locations) in failed {
            pending.note(&sku, None, at, self.inner.capacity);
            if let Some(set) = pending.skus.get_mut(&sku) {
                set.extend(locations);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The SKUs waiting for a purge (tests).
    #[cfg(test)]
    pub(crate) fn pending_skus(&self) -> Vec<String> {
        self.lock().skus.keys().cloned().collect()
    }
}

/// Purges what `queue` collects until `shutdown`, then makes one last attempt.
pub async fn run(queue: PurgeQueue, config: PurgeConfig, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(config.timeout)
        .pool_max_idle_per_host(config.concurrency)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the edge-cache client; edge purging is off");
            return;
        }
    };
    let (warm_tx, warm_job) = match &config.warm_url {
        Some(base) if config.warm_max > 0 => {
            let (tx, rx) = mpsc::channel::<WarmBatch>(8);
            let job = tokio::spawn(edge_warm::run(
                client.clone(),
                base.clone(),
                rx,
                shutdown.clone(),
            ));
            (Some(tx), Some(job))
        }
        _ => (None, None),
    };
    tracing::info!(url = %config.purge_url, warm = ?config.warm_url, "purging the edge cache after projection");
    let mut failures = 0u32;
    loop {
        let stopping = shutdown.is_cancelled();
        if !stopping && queue.is_empty() {
            tokio::select! {
                _ = queue.inner.wake.notified() => {}
                _ = shutdown.cancelled() => {}
            }
            if !shutdown.is_cancelled() {
                tokio::time::sleep(config.linger).await;
            }
        }
        let batch = queue.take();
        if batch.is_empty() {
            if stopping || shutdown.is_cancelled() {
                break;
            }
            continue;
        }
        let failed = purge_batch(&client, &config, batch, warm_tx.as_ref()).await;
        if stopping {
            break;
        }
        match failed {
            None => failures = 0,
            Some((skus, overflowed)) => {
                failures += 1;
                queue.restore(skus, overflowed, now_ms());
                tokio::select! {
                    _ = tokio::time::sleep(backoff(failures + 4)) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        }
    }
    drop(warm_tx);
    if let Some(job) = warm_job {
        let _ = job.await;
    }
    tracing::info!("edge purging stopped");
}

/// Purges `batch`; what could not be purged (and whether that was "everything") comes back.
async fn purge_batch(
    client: &reqwest::Client,
    config: &PurgeConfig,
    batch: Pending,
    warm: Option<&mpsc::Sender<WarmBatch>>,
) -> Option<(BTreeMap<String, BTreeSet<String>>, bool)> {
    let Pending {
        skus,
        overflowed,
        oldest_ms,
    } = batch;
    if overflowed {
        // Everything goes; nothing is warmed (the batch that overflowed is no guide).
        return match purge(client, config, ALL_TAG).await {
            Ok(_) => {
                observe_lag(oldest_ms);
                None
            }
            Err(Undelivered) => Some((BTreeMap::new(), true)),
        };
    }
    let results = futures::stream::iter(skus)
        .map(|(sku, locations)| async move {
            let purged = purge(client, config, &sku_tag(&sku)).await;
            (sku, locations, purged)
        })
        .buffer_unordered(config.concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut failed = BTreeMap::new();
    let mut cached = Vec::new();
    for (sku, locations, purged) in results {
        match purged {
            Ok(Some(0)) => {}
            // A cache that does not say how many objects went is warmed anyway, last.
            Ok(objects) => cached.push((objects.unwrap_or(0), sku, locations)),
            Err(Undelivered) => {
                failed.insert(sku, locations);
            }
        }
    }
    if failed.is_empty() {
        observe_lag(oldest_ms);
    }
    if let Some(tx) = warm
        && !cached.is_empty()
    {
        // The SKUs with the most cached objects were read the most since their last purge.
        cached.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        cached.truncate(config.warm_max);
        let batch = WarmBatch {
            skus: cached.into_iter().map(|(_, s, l)| (s, l)).collect(),
        };
        if tx.try_send(batch).is_err() {
            // The warmer is behind: those SKUs are fetched by their next shopper instead.
            metrics::counter!("stockflow_edge_warm_skipped_total").increment(1);
        }
    }
    (!failed.is_empty()).then_some((failed, false))
}

/// One `PURGE` of `tag` with retries; the number of objects the cache removed, when it
/// says.
async fn purge(
    client: &reqwest::Client,
    config: &PurgeConfig,
    tag: &str,
) -> Result<Option<u64>, Undelivered> {
    let method = reqwest::Method::from_bytes(b"PURGE").map_err(|_| Undelivered)?;
    for attempt in 1..=config.attempts.max(1) {
        let started = Instant::now();
        let sent = client
            .request(method.clone(), &config.purge_url)
            .header(PURGE_HEADER, tag)
            .send()
            .await;
        metrics::histogram!("stockflow_edge_purge_seconds").record(started.elapsed().as_secs_f64());
        let error = match sent {
            Ok(r) if r.status().is_success() => {
                metrics::counter!("stockflow_edge_purges_total", "result" => "ok").increment(1);
                let objects = r
                    .headers()
                    .get(PURGED_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok());
                metrics::counter!("stockflow_edge_purged_objects_total")
                    .increment(objects.unwrap_or(0));
                return Ok(objects);
            }
            Ok(r) => format!("the cache answered {}", r.status()),
            Err(e) => e.to_string(),
        };
        metrics::counter!("stockflow_edge_purges_total", "result" => "failed").increment(1);
        tracing::warn!(%tag, attempt, %error, "edge purge failed");
        if attempt < config.attempts {
            tokio::time::sleep(backoff(attempt + 3)).await;
        }
    }
    Err(Undelivered)
}

/// Every attempt of a purge failed (each was logged and counted).
#[derive(Debug)]
struct Undelivered;

/// `stockflow_edge_purge_lag_seconds`: from the oldest change's commit to its purge.
fn observe_lag(oldest_ms: Option<i64>) {
    if let Some(at) = oldest_ms {
        metrics::histogram!("stockflow_edge_purge_lag_seconds")
            .record((now_ms() - at).max(0) as f64 / 1000.0);
    }
}

#[cfg(test)]
mod tests;
