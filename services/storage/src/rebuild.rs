//! Rebuilding the read models from the write side (`stockflow rebuild-read-models`): for a
//! lost or stale read table, or a keyspace restored from a snapshot whose read tables were
//! copied at other moments than its write tables. The bus cannot do it (its retention is
//! finite); the write side holds every key's current level and every SKU's catalog.
//!
//! Resumable: a checkpoint under the consumer [`REBUILD_CONSUMER`] counts the keys done
//! (plus one, so zero means no rebuild under way). A run that finds one continues after
//! the keys it counts instead of clearing again; writing a key twice is harmless (a row is
//! replaced only by a newer one). Keys come in `(sku, location)` order, so a key created
//! after an interrupted run began may sort before the checkpoint: its events reach the
//! read models the normal way, from the bus.
//!
//! What is not rebuilt: the movement history (it is the record of the events, kept from
//! the bus; movements past a key's write-side version are dropped) and the change feed's
//! past (each rebuilt row is recorded as a new change, so store agents converge).

use stockflow_domain::read_model::InventoryRow;
use stockflow_domain::{BusEvent, CatalogEvent};

use crate::Result;
use crate::now_ms;
use crate::ports::{ReadStore, WriteStore};

/// The consumer whose offset (partition 0) is a rebuild's checkpoint.
pub const REBUILD_CONSUMER: &str = "rebuild-read-models";

/// Keys written per step (and per checkpoint) by `stockflow rebuild-read-models`.
pub const PAGE: usize = 500;

/// Attempts of one step before a failure the store calls retryable (a write timeout on a
/// busy node) ends the run; each waits twice as long as the one before, from 200 ms.
const ATTEMPTS: u32 = 6;

/// Runs `step` again while it fails with an error worth retrying: every step of a rebuild
/// writes the same cells again (rows carry their version), so a retry is harmless.
async fn retrying<T, F, Fut>(mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut wait = std::time::Duration::from_millis(200);
    for _ in 1..ATTEMPTS {
        match step().await {
            Err(e) if e.retryable() => {
                tracing::warn!(error = %e, ?wait, "a rebuild step failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    step().await
}

/// How far a rebuild is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    /// Keys written so far (counting those a resumed run found done).
    pub keys_done: usize,
    /// Keys the write side holds.
    pub keys: usize,
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rebuilt {
    /// Keys the write side holds.
    pub keys: usize,
    /// Keys an interrupted run had done, which this one skipped.
    pub resumed_after: usize,
    /// SKUs whose catalog data went into search.
    pub skus: usize,
}

/// Rebuilds every stock read model and the search documents of `read` from `write`,
/// `page` keys at a time, reporting progress after each page; `stop_after` (tests of
/// resumption) ends the run, answering `None`, once that many keys are done, as if it had
/// been killed.
pub async fn rebuild_read_models(
    write: &dyn WriteStore,
    read: &dyn ReadStore,
    page: usize,
    stop_after: Option<usize>,
    mut progress: impl FnMut(RebuildProgress),
) -> Result<Option<Rebuilt>> {
    let levels = write.all_stock_levels().await?;
    let checkpoint = read.offset(REBUILD_CONSUMER, 0).await?;
    let resumed_after = match usize::try_from(checkpoint) {
        Ok(0) | Err(_) => {
            retrying(|| read.clear_stock_views()).await?;
            read.reset_offset(REBUILD_CONSUMER, 0, 1).await?;
            0
        }
        Ok(done_plus_one) => (done_plus_one - 1).min(levels.len()),
    };
    let as_of = now_ms();
    let mut done = resumed_after;
    for page in levels[resumed_after..].chunks(page.max(1)) {
        if stop_after.is_some_and(|limit| done >= limit) {
            return Ok(None);
        }
        let rows: Vec<InventoryRow> = page
            .iter()
            .map(|level| InventoryRow::of_level(level, as_of))
            .collect();
        retrying(|| read.restore_stock(&rows)).await?;
        done += page.len();
        read.reset_offset(REBUILD_CONSUMER, 0, done as u64 + 1)
            .await?;
        progress(RebuildProgress {
            keys_done: done,
            keys: levels.len(),
        });
    }
    let catalog: Vec<BusEvent> = write
        .all_skus()
        .await?
        .iter()
        .map(|sku| BusEvent::Catalog(CatalogEvent::of(sku, as_of)))
        .collect();
    for page in catalog.chunks(page.max(1)) {
        retrying(|| read.replay(page)).await?;
    }
    read.reset_offset(REBUILD_CONSUMER, 0, 0).await?;
    Ok(Some(Rebuilt {
        keys: levels.len(),
        resumed_after,
        skus: catalog.len(),
    }))
}
