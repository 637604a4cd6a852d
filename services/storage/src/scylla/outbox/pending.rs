//! Handing out pending entries and marking them published.
//!
//! A call reads the partitions this process committed to ("dirty") and those whose
//! entries it handed out but nobody marked yet; every so often it also reads every marker
//! of its shards (a full scan), which is how other writers' rows are found. A process that
//! commits itself lets full scans drift apart while they find nothing foreign.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::OutboxLog;
use super::fresh::FreshRow;
use super::markers::{
    Scanned, all_markers, drop_empty_markers, entry_id, micros, outbox_row_id, parse_entry_id,
    read_partitions, shard_of,
};
use crate::ports::OutboxEntry;
use crate::scylla::cql::query;
use crate::scylla::cql::rows::MarkerRow;
use crate::{Result, StoreError, now_ms};

/// How far apart full scans drift, in multiples of the scan interval, while they find
/// nothing that this process did not commit itself (and so already knew of).
const QUIET_SCAN_STRETCH: u32 = 10;
/// Most entries read from one partition per call, whatever the caller's limit.
const MAX_PER_PARTITION: usize = 10_000;

/// A partition as `(sku, location)`.
type Partition = (String, String);

impl OutboxLog {
    /// The partitions to read this call (taken from the dirty set), and whether every
    /// marker is read too.
    fn take_dirty(&self, owned: Option<&BTreeSet<u32>>) -> BTreeSet<Partition> {
        let mine = |sku: &str, location: &str| {
            owned.is_none_or(|o| {
                u32::try_from(shard_of(sku, location)).is_ok_and(|s| o.contains(&s))
            })
        };
        let mut dirty: BTreeSet<Partition> = self
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
                self.fresh.forget(s, l);
            }
            kept
        });
        dirty
    }

    /// Whether this call reads every marker: at the set interval, stretched while scans
    /// find only what this process committed itself (a process that commits knows its own
    /// partitions; a publisher that does not commit finds everything by scanning).
    fn full_scan_due(&self) -> bool {
        let scan_every = self
            .cursors
            .scan_every
            .lock()
            .map(|d| *d)
            .unwrap_or(super::FULL_SCAN_EVERY);
        let quiet = self.cursors.quiet_scans.load(Ordering::Relaxed);
        let interval = if self.commits_here() {
            scan_every * (1 + quiet.min(QUIET_SCAN_STRETCH - 1))
        } else {
            scan_every
        };
        self.cursors
            .last_full_scan
            .lock()
            .map(|mut last| {
                let due = last.is_none_or(|t| t.elapsed() >= interval);
                if due {
                    *last = Some(Instant::now());
                }
                due
            })
            .unwrap_or(true)
    }

    /// The rows kept for `marker`'s partition, when they can stand for a read after its
    /// cursor.
    fn remembered(
        &self,
        shard: i32,
        marker: &MarkerRow,
        after: &str,
        limit: usize,
    ) -> Option<Scanned> {
        let v = after.parse::<u64>().ok()?;
        let rows = self.fresh.after(&marker.sku, &marker.location, v, limit)?;
        let entry = |row: FreshRow| OutboxEntry {
            id: entry_id(&marker.sku, &marker.location, &outbox_row_id(row.version)),
            key: marker.sku.clone(),
            payload: row.payload,
            created_at_ms: row.created_at_ms,
        };
        Some(Scanned {
            shard,
            entries: rows.into_iter().map(entry).collect(),
            marker: marker.clone(),
            read_at_us: micros(now_ms()),
        })
    }

    /// Up to `limit` pending entries of the shards `owned` names (all when `None`), each
    /// partition's in version order.
    pub(crate) async fn pending(
        &self,
        owned: Option<&BTreeSet<u32>>,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>> {
        let per_partition = limit.clamp(1, MAX_PER_PARTITION);
        self.fresh.want();
        let dirty = self.take_dirty(owned);
        let full = self.full_scan_due();
        let known_here = if full { dirty.clone() } else { BTreeSet::new() };
        let mut targets: BTreeMap<Partition, (i32, MarkerRow)> = BTreeMap::new();
        if full {
            let marked = match all_markers(self, owned).await {
                Ok(marked) => marked,
                Err(e) => {
                    // What this call took stays to be read by the next one.
                    if let Ok(mut again) = self.dirty.lock() {
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
            let shard = shard_of(&sku, &location);
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
            let kept = (!full)
                .then(|| self.remembered(shard, &marker, &after, per_partition))
                .flatten();
            match kept {
                Some(scanned) => remembered.push(scanned),
                None => reads.push((shard, marker, after)),
            }
        }
        let per_partition_i32 = i32::try_from(per_partition).unwrap_or(i32::MAX);
        let mut scanned = read_partitions(self, reads, per_partition_i32).await;
        scanned.extend(remembered);
        drop_empty_markers(self, &scanned).await;
        if full {
            self.note_scan(&scanned, &known_here);
        }
        Ok(self.hand_out(scanned, limit, per_partition))
    }

    /// Counts a full scan as quiet when it found entries only in partitions this process
    /// committed to (before or during the call).
    fn note_scan(&self, scanned: &[Scanned], known_here: &BTreeSet<Partition>) {
        let foreign = self.dirty.lock().map_or(true, |committed_since| {
            scanned.iter().any(|s| {
                let partition = s.partition();
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

    /// Up to `limit` of the entries scanned; partitions with more pending than handed out
    /// are read again next call, and those handed out until they are marked published.
    fn hand_out(
        &self,
        scanned: Vec<Scanned>,
        limit: usize,
        per_partition: usize,
    ) -> Vec<OutboxEntry> {
        let mut entries = Vec::new();
        let mut handed_out = BTreeSet::new();
        let mut more = Vec::new();
        for s in scanned {
            if s.entries.is_empty() {
                continue;
            }
            let partition = s.partition();
            let room = limit.saturating_sub(entries.len());
            if s.entries.len() > room || s.entries.len() >= per_partition {
                more.push(partition.clone());
            }
            if room > 0 {
                handed_out.insert(partition);
            }
            // Each partition's entries stay in version order (row ids are zero-padded
            // versions); clocks of different writers are not comparable, so no global sort.
            entries.extend(s.entries.into_iter().take(room));
        }
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.extend(more);
        }
        if let Ok(mut unmarked) = self.cursors.unmarked.lock() {
            unmarked.extend(handed_out);
        }
        entries
    }

    /// Marks entries published: the entries of a partition that `pending` returned are a
    /// prefix of what it holds after the cursor, in order, so deleting up to the highest
    /// one removes exactly them.
    pub(crate) async fn mark_published(&self, ids: &[String]) -> Result<()> {
        let mut upto: BTreeMap<Partition, String> = BTreeMap::new();
        for id in ids {
            let (sku, location, row) =
                parse_entry_id(id).ok_or_else(|| StoreError::unknown("outbox id", id.as_str()))?;
            let slot = upto
                .entry((sku.to_string(), location.to_string()))
                .or_default();
            if row > slot.as_str() {
                *slot = row.to_string();
            }
        }
        let deletes = upto.iter().map(|((sku, location), row)| {
            query::exec(
                &self.session,
                "delete published outbox rows",
                &self.st.delete_outbox_upto,
                (sku.as_str(), location.as_str(), row.as_str()),
            )
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
                self.fresh.published(sku, location, version);
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

    /// How many entries wait, over every partition marked.
    pub(crate) async fn backlog(&self) -> Result<u64> {
        let targets = all_markers(self, None)
            .await?
            .into_iter()
            .map(|(shard, marker)| (shard, marker, String::new()))
            .collect();
        let scanned = read_partitions(self, targets, i32::MAX).await;
        Ok(scanned.iter().map(|s| s.entries.len() as u64).sum())
    }
}
