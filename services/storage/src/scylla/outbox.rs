//! The outbox of the ScyllaDB write store: found through markers, read in bounded slices,
//! deleted once published.
//!
//! Every batch that adds an outbox row was preceded by a marker naming its partition in
//! one of [`SHARDS`] marker partitions. A scan reads the markers of all shards at once and
//! then, concurrently, at most `limit` rows of each marked partition: published rows are
//! deleted, so what a partition holds is what is pending, and nothing is read twice. A
//! marker with nothing behind it is removed once it is older than [`MARKER_GRACE_MS`] (a
//! batch may still be in flight behind a younger one); the delete carries a timestamp, so
//! a marker written again meanwhile survives it.

use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::watch;

use super::ScyllaWriteStore;
use super::cql::db_error;
use super::partition::{Partitions, SHARDS};
use super::statements::{MarkerRow, OutboxRow};
use crate::ports::{Outbox, OutboxEntry};
use crate::{Result, StoreError, now_ms};

/// Markers younger than this are never deleted: their batch may still be in flight.
const MARKER_GRACE_MS: i64 = 15_000;
/// Partitions read at once by a scan.
const SCAN_CONCURRENCY: usize = 32;

/// An outbox entry's id: the partition and the row.
fn entry_id(sku: &str, location: &str, row_id: &str) -> String {
    format!("{sku}\u{1f}{location}\u{1f}{row_id}")
}

/// A marked partition as a scan found it.
struct Scanned {
    shard: i32,
    marker: MarkerRow,
    read_at_us: i64,
    entries: Vec<OutboxEntry>,
}

async fn markers(p: &Partitions, shard: i32) -> Result<Vec<(i32, MarkerRow)>> {
    let rows = p
        .session
        .execute_unpaged(&p.st.markers, (shard,))
        .await
        .map_err(|e| db_error("scan outbox markers", e))?
        .into_rows_result()
        .map_err(|e| StoreError::Database(format!("scan outbox markers: {e}")))?;
    rows.rows::<MarkerRow>()
        .map_err(|e| StoreError::Database(e.to_string()))?
        .map(|r| {
            r.map(|m| (shard, m))
                .map_err(|e| StoreError::Database(e.to_string()))
        })
        .collect()
}

async fn partition(p: &Partitions, shard: i32, marker: MarkerRow, limit: i32) -> Result<Scanned> {
    let read_at_us = now_ms() * 1000;
    let rows = p
        .session
        .execute_unpaged(
            &p.st.partition_outbox,
            (marker.sku.as_str(), marker.location.as_str(), limit),
        )
        .await
        .map_err(|e| db_error("read partition outbox", e))?
        .into_rows_result()
        .map_err(|e| StoreError::Database(format!("read partition outbox: {e}")))?;
    let mut entries = Vec::new();
    for row in rows
        .rows::<OutboxRow>()
        .map_err(|e| StoreError::Database(e.to_string()))?
    {
        let row = row.map_err(|e| StoreError::Database(e.to_string()))?;
        entries.push(OutboxEntry {
            id: entry_id(&marker.sku, &marker.location, &row.row_id),
            key: marker.sku.clone(),
            payload: row.payload.unwrap_or_default(),
            created_at_ms: row.created_at.unwrap_or(0),
        });
    }
    Ok(Scanned {
        shard,
        marker,
        read_at_us,
        entries,
    })
}

/// Every marked partition with up to `per_partition` of its pending entries.
async fn scan(p: &Partitions, per_partition: i32) -> Result<Vec<Scanned>> {
    let mut marked = Vec::new();
    let mut shards = futures::stream::iter(0..SHARDS)
        .map(|shard| markers(p, shard))
        .buffer_unordered(SHARDS as usize);
    while let Some(found) = shards.next().await {
        marked.extend(found?);
    }
    let mut reads = futures::stream::iter(marked)
        .map(|(shard, marker)| partition(p, shard, marker, per_partition))
        .buffer_unordered(SCAN_CONCURRENCY);
    let mut out = Vec::new();
    while let Some(read) = reads.next().await {
        match read {
            Ok(scanned) => out.push(scanned),
            // One unreadable partition must not stop the others from publishing.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a partition's outbox; skipped this round")
            }
        }
    }
    Ok(out)
}

/// Removes the markers of partitions that had nothing pending and are old enough.
async fn drop_empty_markers(p: &Partitions, scanned: &[Scanned]) {
    for s in scanned.iter().filter(|s| s.entries.is_empty()) {
        let written = s.marker.written.unwrap_or(i64::MAX);
        let cutoff = s.read_at_us - MARKER_GRACE_MS * 1000;
        if written >= cutoff {
            continue;
        }
        if let Err(e) = p
            .session
            .execute_unpaged(
                &p.st.delete_marker,
                (
                    cutoff,
                    s.shard,
                    s.marker.sku.as_str(),
                    s.marker.location.as_str(),
                ),
            )
            .await
        {
            tracing::debug!(error = %e, "cannot delete an outbox marker; the next scan retries");
        }
    }
}

#[async_trait]
impl Outbox for ScyllaWriteStore {
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let p = &*self.keys.partitions;
        let per_partition = i32::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000);
        let scanned = scan(p, per_partition).await?;
        drop_empty_markers(p, &scanned).await;
        // Each partition's entries stay in version order (row ids are zero-padded
        // versions); clocks of different writers are not comparable, so no global sort.
        let mut entries: Vec<OutboxEntry> = scanned.into_iter().flat_map(|s| s.entries).collect();
        entries.truncate(limit);
        Ok(entries)
    }

    async fn mark_published(&self, ids: &[String]) -> Result<()> {
        let p = &*self.keys.partitions;
        let deletes = ids.iter().map(|id| async move {
            let mut parts = id.split('\u{1f}');
            let (Some(sku), Some(location), Some(row)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(StoreError::Corrupt(format!("outbox id {id:?}")));
            };
            p.session
                .execute_unpaged(&p.st.delete_outbox, (sku, location, row))
                .await
                .map_err(|e| db_error("delete published outbox row", e))?;
            Ok(())
        });
        for result in futures::future::join_all(deletes).await {
            result?;
        }
        Ok(())
    }

    async fn backlog(&self) -> Result<u64> {
        let scanned = scan(&self.keys.partitions, i32::MAX).await?;
        Ok(scanned.iter().map(|s| s.entries.len() as u64).sum())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.keys.partitions.tick.subscribe()
    }
}
