//! The outbox of the ScyllaDB write store: found through markers, read in bounded slices
//! from where this process last published, deleted once published.
//!
//! Every batch that adds an outbox row was preceded by a marker naming its partition in
//! one of [`SHARDS`] marker partitions. Partitions this process committed to are read at
//! once (they are "dirty"); every [`FULL_SCAN_EVERY`] the markers of all shards are read
//! too, which finds what other processes committed and what a crash left behind. Each
//! partition is read concurrently, at most `limit` rows, after the last row this process
//! published there, so neither published rows nor their tombstones are read again.
//! Publishing deletes a partition's rows up to the last one published with one range
//! tombstone. A marker with nothing behind it is removed once it is older than
//! [`MARKER_GRACE_MS`] (a batch may still be in flight behind a younger one); the delete
//! carries a timestamp, so a marker written again meanwhile survives it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

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
/// How often every marker is read by default, beside the partitions this process wrote.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);
/// How far apart full scans drift, in multiples of the scan interval, while they find
/// nothing that this process did not commit itself (and so already knew of).
const QUIET_SCAN_STRETCH: u32 = 10;

/// What the publisher side of a store remembers between calls.
pub(super) struct OutboxCursors {
    /// The last row published from each partition by this process.
    published: Mutex<BTreeMap<(String, String), String>>,
    /// When every marker was last read.
    last_full_scan: Mutex<Option<Instant>>,
    /// How often every marker is read.
    scan_every: Mutex<Duration>,
    /// Full scans in a row that found nothing but what this process committed itself.
    quiet_scans: AtomicU32,
    /// Partitions whose entries `pending` handed out and nobody marked published yet: read
    /// again by the next call, as an outbox must until its entries are marked.
    unmarked: Mutex<BTreeSet<(String, String)>>,
}

impl Default for OutboxCursors {
    fn default() -> Self {
        Self {
            published: Mutex::default(),
            last_full_scan: Mutex::default(),
            scan_every: Mutex::new(FULL_SCAN_EVERY),
            quiet_scans: AtomicU32::new(0),
            unmarked: Mutex::default(),
        }
    }
}

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
    let rows: Vec<MarkerRow> = p
        .query("scan outbox markers", &p.st.markers, (shard,))
        .await?;
    Ok(rows.into_iter().map(|m| (shard, m)).collect())
}

async fn partition(
    p: &Partitions,
    shard: i32,
    marker: MarkerRow,
    after: String,
    limit: i32,
) -> Result<Scanned> {
    let read_at_us = now_ms() * 1000;
    let (sku, location) = (marker.sku.as_str(), marker.location.as_str());
    let rows: Vec<OutboxRow> = p
        .query(
            "read partition outbox",
            &p.st.outbox_after,
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
async fn read_partitions(
    p: &Partitions,
    targets: Vec<(i32, MarkerRow, String)>,
    per_partition: i32,
) -> Vec<Scanned> {
    let mut reads = futures::stream::iter(targets)
        .map(|(shard, marker, after)| async move {
            let partition_of = (marker.sku.clone(), marker.location.clone());
            partition(p, shard, marker, after, per_partition)
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
        && let Ok(mut dirty) = p.dirty.lock()
    {
        dirty.extend(failed);
    }
    out
}

/// Every marker of the shards `owned` names (all shards when `None`).
async fn all_markers(
    p: &Partitions,
    owned: Option<&BTreeSet<u32>>,
) -> Result<Vec<(i32, MarkerRow)>> {
    let mut marked = Vec::new();
    let wanted: Vec<i32> = (0..SHARDS)
        .filter(|s| owned.is_none_or(|o| u32::try_from(*s).is_ok_and(|s| o.contains(&s))))
        .collect();
    let mut shards = futures::stream::iter(wanted)
        .map(|shard| markers(p, shard))
        .buffer_unordered(SHARDS as usize);
    while let Some(found) = shards.next().await {
        marked.extend(found?);
    }
    Ok(marked)
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

impl ScyllaWriteStore {
    fn cursor(&self, sku: &str, location: &str) -> String {
        self.cursors
            .published
            .lock()
            .ok()
            .and_then(|c| c.get(&(sku.to_string(), location.to_string())).cloned())
            .unwrap_or_default()
    }
}

impl ScyllaWriteStore {
    /// How often `pending` reads every marker of its shards. A publisher in its own process
    /// learns of new entries only this way, so this bounds its publishing delay; each scan
    /// costs one read per shard and one per partition marked.
    pub fn scan_outbox_every(&self, every: Duration) {
        if let Ok(mut slot) = self.cursors.scan_every.lock() {
            *slot = every;
        }
    }

    async fn pending_shards(
        &self,
        owned: Option<&BTreeSet<u32>>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        let p = &*self.keys.partitions;
        let mine = |sku: &str, location: &str| {
            owned.is_none_or(|o| {
                u32::try_from(super::partition::shard_of(sku, location))
                    .is_ok_and(|s| o.contains(&s))
            })
        };
        let per_partition = i32::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000);
        p.fresh.want();
        let mut dirty: BTreeSet<(String, String)> = p
            .dirty
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default();
        if let Ok(mut unmarked) = self.cursors.unmarked.lock() {
            dirty.append(&mut unmarked);
        }
        // Partitions of shards another replica holds now are its to publish: its scans
        // find them through their markers.
        dirty.retain(|(s, l)| {
            let kept = mine(s, l);
            if !kept {
                p.fresh.forget(s, l);
            }
            kept
        });
        let scan_every = self
            .cursors
            .scan_every
            .lock()
            .map(|d| *d)
            .unwrap_or(FULL_SCAN_EVERY);
        // A process that commits knows its own partitions without scanning: there the scans
        // only find other writers' commits and a crashed run's leftovers, and they drift
        // apart while they find none. A publisher that does not commit (its own process,
        // in a region) finds everything by scanning, so it scans at the set interval.
        let commits_here = *p.tick.borrow() != 0;
        let quiet = self.cursors.quiet_scans.load(Ordering::Relaxed);
        let interval = if commits_here {
            scan_every * (1 + quiet.min(QUIET_SCAN_STRETCH - 1))
        } else {
            scan_every
        };
        let full = self
            .cursors
            .last_full_scan
            .lock()
            .map(|mut last| {
                let due = last.is_none_or(|t| t.elapsed() >= interval);
                if due {
                    *last = Some(Instant::now());
                }
                due
            })
            .unwrap_or(true);
        let known_here = if full { dirty.clone() } else { BTreeSet::new() };
        let mut targets: BTreeMap<(String, String), (i32, MarkerRow)> = BTreeMap::new();
        if full {
            let marked = match all_markers(p, owned).await {
                Ok(marked) => marked,
                Err(e) => {
                    // What this call took stays to be read by the next one.
                    if let Ok(mut again) = p.dirty.lock() {
                        again.extend(dirty);
                    }
                    return Err(e);
                }
            };
            for (shard, marker) in marked {
                targets.insert(
                    (marker.sku.clone(), marker.location.clone()),
                    (shard, marker),
                );
            }
        }
        for (sku, location) in dirty {
            let shard = super::partition::shard_of(&sku, &location);
            targets
                .entry((sku.clone(), location.clone()))
                .or_insert_with(|| {
                    // Never removed on this basis: its marker's age is unknown here.
                    let marker = MarkerRow {
                        sku,
                        location,
                        written: None,
                    };
                    (shard, marker)
                });
        }
        let mut remembered = Vec::new();
        let mut reads = Vec::new();
        for (shard, marker) in targets.into_values() {
            let after = self.cursor(&marker.sku, &marker.location);
            // A full scan reads every partition: it is how other writers' rows are found.
            let fresh = (!full)
                .then(|| after.parse::<u64>().ok())
                .flatten()
                .and_then(|v| {
                    p.fresh
                        .after(&marker.sku, &marker.location, v, per_partition as usize)
                });
            match fresh {
                Some(rows) => remembered.push(Scanned {
                    shard,
                    entries: rows
                        .into_iter()
                        .map(|row| OutboxEntry {
                            id: entry_id(
                                &marker.sku,
                                &marker.location,
                                &format!("{:020}", row.version),
                            ),
                            key: marker.sku.clone(),
                            payload: row.payload,
                            created_at_ms: row.created_at_ms,
                        })
                        .collect(),
                    marker,
                    read_at_us: now_ms() * 1000,
                }),
                None => reads.push((shard, marker, after)),
            }
        }
        let mut scanned = read_partitions(p, reads, per_partition).await;
        scanned.extend(remembered);
        drop_empty_markers(p, &scanned).await;
        if full {
            // Partitions committed to since this call took the dirty set are this process's
            // own too.
            let foreign = p.dirty.lock().map_or(true, |committed_since| {
                scanned.iter().any(|s| {
                    let partition = (s.marker.sku.clone(), s.marker.location.clone());
                    !s.entries.is_empty()
                        && !known_here.contains(&partition)
                        && !committed_since.contains(&partition)
                })
            });
            if foreign {
                self.cursors.quiet_scans.store(0, Ordering::Relaxed);
            } else {
                self.cursors.quiet_scans.fetch_add(1, Ordering::Relaxed);
            }
        }
        let mut entries = Vec::new();
        let mut handed_out = BTreeSet::new();
        let mut more = Vec::new();
        for s in scanned {
            if s.entries.is_empty() {
                continue;
            }
            let partition = (s.marker.sku.clone(), s.marker.location.clone());
            let room = limit.saturating_sub(entries.len());
            // A partition with more pending than this call returns is read again next time.
            if s.entries.len() > room || s.entries.len() >= per_partition as usize {
                more.push(partition.clone());
            }
            if room > 0 {
                handed_out.insert(partition);
            }
            // Each partition's entries stay in version order (row ids are zero-padded
            // versions); clocks of different writers are not comparable, so no global sort.
            entries.extend(s.entries.into_iter().take(room));
        }
        if let Ok(mut dirty) = p.dirty.lock() {
            dirty.extend(more);
        }
        if let Ok(mut unmarked) = self.cursors.unmarked.lock() {
            unmarked.extend(handed_out);
        }
        Ok(entries)
    }
}

#[async_trait]
impl Outbox for ScyllaWriteStore {
    fn shards(&self) -> u32 {
        u32::try_from(SHARDS).unwrap_or(1)
    }

    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.pending_shards(None, limit).await
    }

    async fn pending_in(&self, shards: &BTreeSet<u32>, limit: usize) -> Result<Vec<OutboxEntry>> {
        self.pending_shards(Some(shards), limit).await
    }

    async fn mark_published(&self, ids: &[String]) -> Result<()> {
        let p = &*self.keys.partitions;
        // The entries of a partition that `pending` returned are a prefix of what it holds
        // after the cursor, in order: deleting up to the highest one removes exactly them.
        let mut upto: BTreeMap<(String, String), String> = BTreeMap::new();
        for id in ids {
            let mut parts = id.split('\u{1f}');
            let (Some(sku), Some(location), Some(row)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(StoreError::Corrupt(format!("outbox id {id:?}")));
            };
            let slot = upto
                .entry((sku.to_string(), location.to_string()))
                .or_default();
            if row > slot.as_str() {
                *slot = row.to_string();
            }
        }
        let deletes = upto.iter().map(|((sku, location), row)| async move {
            p.session
                .execute_unpaged(
                    &p.st.delete_outbox_upto,
                    (sku.as_str(), location.as_str(), row.as_str()),
                )
                .await
                .map_err(|e| db_error("delete published outbox rows", e))
        });
        for result in futures::future::join_all(deletes).await {
            result?;
        }
        if let Ok(mut unmarked) = self.cursors.unmarked.lock() {
            for partition in upto.keys() {
                unmarked.remove(partition);
            }
        }
        for ((sku, location), row) in &upto {
            if let Ok(version) = row.parse::<u64>() {
                p.fresh.published(sku, location, version);
            }
        }
        if let Ok(mut published) = self.cursors.published.lock() {
            for (partition, row) in upto {
                let slot = published.entry(partition).or_default();
                if row > *slot {
                    *slot = row;
                }
            }
        }
        Ok(())
    }

    async fn backlog(&self) -> Result<u64> {
        let p = &*self.keys.partitions;
        let targets = all_markers(p, None)
            .await?
            .into_iter()
            .map(|(shard, marker)| (shard, marker, String::new()))
            .collect();
        let scanned = read_partitions(p, targets, i32::MAX).await;
        Ok(scanned.iter().map(|s| s.entries.len() as u64).sum())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.keys.partitions.tick.subscribe()
    }
}
