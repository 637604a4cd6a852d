//! Finding and reading what waits in the outbox: the marker table names every partition
//! with outbox rows, one of [`SHARDS`] marker partitions each; a partition's rows are read
//! after the last one this process published there.

use std::collections::BTreeSet;

use futures::StreamExt;

use super::OutboxLog;
use crate::ports::OutboxEntry;
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{MarkerRow, OutboxRow};
use crate::{Result, now_ms};

/// Outbox marker shards; the publisher scans each, and replicas split them by lease.
pub(crate) const SHARDS: i32 = 16;
/// Markers younger than this are never deleted: their batch may still be in flight.
const MARKER_GRACE_MS: i64 = 15_000;
/// Partitions read at once by a scan.
const SCAN_CONCURRENCY: usize = 32;
/// Microseconds per millisecond: marker write times are in microseconds.
const MICROS_PER_MILLI: i64 = 1_000;

/// The marker shard of partition `(sku, location)`.
pub(crate) fn shard_of(sku: &str, location: &str) -> i32 {
    let h =
        stockflow_domain::partition_for_key(format!("{sku}/{location}").as_bytes(), SHARDS as u32);
    i32::try_from(h).unwrap_or(0)
}

/// An outbox row's id: the version it carries, zero-padded so rows sort by it.
pub(crate) fn outbox_row_id(version: u64) -> String {
    format!("{version:020}")
}

/// An outbox entry's id: the partition and the row.
pub(super) fn entry_id(sku: &str, location: &str, row_id: &str) -> String {
    format!("{sku}\u{1f}{location}\u{1f}{row_id}")
}

/// The partition and row an entry id names.
pub(super) fn parse_entry_id(id: &str) -> Option<(&str, &str, &str)> {
    let mut parts = id.split('\u{1f}');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

/// A marked partition as a scan found it.
pub(super) struct Scanned {
    pub shard: i32,
    pub marker: MarkerRow,
    pub read_at_us: i64,
    pub entries: Vec<OutboxEntry>,
}

impl Scanned {
    /// The partition's `(sku, location)`.
    pub(super) fn partition(&self) -> (String, String) {
        (self.marker.sku.clone(), self.marker.location.clone())
    }
}

/// The time `ms` in the unit of write times.
pub(super) fn micros(ms: i64) -> i64 {
    ms * MICROS_PER_MILLI
}

async fn markers(log: &OutboxLog, shard: i32) -> Result<Vec<(i32, MarkerRow)>> {
    let rows: Vec<MarkerRow> = query::rows(
        &log.session,
        "scan outbox markers",
        &log.st.markers,
        (shard,),
    )
    .await?;
    Ok(rows.into_iter().map(|m| (shard, m)).collect())
}

async fn partition(
    log: &OutboxLog,
    shard: i32,
    marker: MarkerRow,
    after: String,
    limit: i32,
) -> Result<Scanned> {
    let read_at_us = micros(now_ms());
    let (sku, location) = (marker.sku.as_str(), marker.location.as_str());
    let rows: Vec<OutboxRow> = query::rows(
        &log.session,
        "read partition outbox",
        &log.st.outbox_after,
        (sku, location, after, limit),
    )
    .await?;
    let entries = rows
        .into_iter()
        .map(|row| OutboxEntry {
            id: entry_id(sku, location, &row.row_id),
            key: marker.sku.clone(),
            payload: row.payload.unwrap_or_default(),
            created_at_ms: row.created_at.unwrap_or(0),
        })
        .collect();
    Ok(Scanned {
        shard,
        marker,
        read_at_us,
        entries,
    })
}

/// Reads `targets` (each after its cursor), up to `per_partition` entries each. A partition
/// that cannot be read is marked dirty, so the next call reads it again.
pub(super) async fn read_partitions(
    log: &OutboxLog,
    targets: Vec<(i32, MarkerRow, String)>,
    per_partition: i32,
) -> Vec<Scanned> {
    let mut reads = futures::stream::iter(targets)
        .map(|(shard, marker, after)| async move {
            let partition_of = (marker.sku.clone(), marker.location.clone());
            partition(log, shard, marker, after, per_partition)
                .await
                .map_err(|e| (partition_of, e))
        })
        .buffer_unordered(SCAN_CONCURRENCY);
    let mut out = Vec::new();
    let mut failed = Vec::new();
    while let Some(read) = reads.next().await {
        match read {
            Ok(scanned) => out.push(scanned),
            // One unreadable partition must not stop the others from publishing.
            Err((partition, e)) => {
                tracing::warn!(error = %e, "cannot read a partition's outbox; skipped this round");
                failed.push(partition);
            }
        }
    }
    if !failed.is_empty()
        && let Ok(mut dirty) = log.dirty.lock()
    {
        dirty.extend(failed);
    }
    out
}

/// Every marker of the shards `owned` names (all shards when `None`).
pub(super) async fn all_markers(
    log: &OutboxLog,
    owned: Option<&BTreeSet<u32>>,
) -> Result<Vec<(i32, MarkerRow)>> {
    let mut marked = Vec::new();
    let wanted: Vec<i32> = (0..SHARDS)
        .filter(|s| owned.is_none_or(|o| u32::try_from(*s).is_ok_and(|s| o.contains(&s))))
        .collect();
    let mut shards = futures::stream::iter(wanted)
        .map(|shard| markers(log, shard))
        .buffer_unordered(SHARDS as usize);
    while let Some(found) = shards.next().await {
        marked.extend(found?);
    }
    Ok(marked)
}

/// Removes the markers of partitions that had nothing pending and are old enough; the
/// delete carries a timestamp, so a marker written again meanwhile survives it.
pub(super) async fn drop_empty_markers(log: &OutboxLog, scanned: &[Scanned]) {
    for s in scanned.iter().filter(|s| s.entries.is_empty()) {
        let written = s.marker.written.unwrap_or(i64::MAX);
        let cutoff = s.read_at_us - micros(MARKER_GRACE_MS);
        if written >= cutoff {
            continue;
        }
        let values = (
            cutoff,
            s.shard,
            s.marker.sku.as_str(),
            s.marker.location.as_str(),
        );
        if let Err(e) = query::exec(
            &log.session,
            "delete an outbox marker",
            &log.st.delete_marker,
            values,
        )
        .await
        {
            tracing::debug!(error = %e, "cannot delete an outbox marker; the next scan retries");
        }
    }
}
