//! Outbox rows this process committed, kept for its own publisher so it need not read them
//! back.
//!
//! Each stock change writes one outbox row whose id is the partition's new version, and
//! versions of a partition go up by exactly one per change. So when this process holds the
//! rows right after the last one it published there, with no gap between them, they are
//! exactly what a read after that cursor would find first: nothing else can sit between
//! two consecutive versions. Anything else (a gap, a catalog row, a partition this process
//! has no cursor for yet) is read, as before. A batch whose outcome is unknown, or a row
//! that finds no room, drops the partition's kept rows, so its next round is a read that
//! goes to the end of the partition. Rows are kept only once a publisher in this process
//! asked for them, and the whole set is bounded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Rows kept at most, over every partition (about 500 bytes each).
const MAX_ROWS: usize = 20_000;

/// A committed outbox row, as written.
#[derive(Debug, Clone)]
pub(crate) struct FreshRow {
    /// The partition version the row carries (its row id, zero-padded).
    pub version: u64,
    /// The serialized event.
    pub payload: Vec<u8>,
    /// When it was written, Unix milliseconds.
    pub created_at_ms: i64,
}

#[derive(Default)]
struct Kept {
    /// Each partition's rows, in version order.
    by_partition: HashMap<(String, String), Vec<FreshRow>>,
    rows: usize,
}

/// The rows kept, by partition.
#[derive(Default)]
pub(crate) struct FreshOutbox {
    /// Set by the first `pending` call: a process without a publisher keeps nothing.
    wanted: AtomicBool,
    kept: Mutex<Kept>,
}

impl FreshOutbox {
    /// A publisher reads this process's outbox from now on.
    pub fn want(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    pub fn wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Keeps `rows`, just committed to `(sku, location)` in version order.
    pub fn committed(&self, sku: &str, location: &str, rows: Vec<FreshRow>) {
        if rows.is_empty() || !self.wanted() {
            return;
        }
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        if kept.rows + rows.len() > MAX_ROWS {
            // The publisher is behind (or stopped): its reads find these rows instead. The
            // partition's older rows go too, or they would stand for a read that stops
            // short of these.
            drop(kept);
            self.forget(sku, location);
            return;
        }
        kept.rows += rows.len();
        let slot = kept
            .by_partition
            .entry((sku.to_string(), location.to_string()))
            .or_default();
        slot.extend(rows);
        // Commits of one partition may land out of order between tasks.
        slot.sort_by_key(|r| r.version);
    }

    /// Up to `limit` rows of `(sku, location)` after version `after`, when every row kept
    /// there follows it with no gap; `None` when the rows kept cannot stand for a read (one
    /// missing version may be another writer's, and rows after it must wait for it).
    pub fn after(
        &self,
        sku: &str,
        location: &str,
        after: u64,
        limit: usize,
    ) -> Option<Vec<FreshRow>> {
        let kept = self.kept.lock().ok()?;
        let rows = kept
            .by_partition
            .get(&(sku.to_string(), location.to_string()))?;
        let start = rows.iter().position(|r| r.version > after)?;
        let unbroken = rows[start..]
            .iter()
            .zip(after + 1..)
            .all(|(row, expected)| row.version == expected);
        unbroken.then(|| rows[start..].iter().take(limit).cloned().collect())
    }

    /// Drops the rows of `(sku, location)` up to version `upto`: they are published.
    pub fn published(&self, sku: &str, location: &str, upto: u64) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        let key = (sku.to_string(), location.to_string());
        let Some(rows) = kept.by_partition.get_mut(&key) else {
            return;
        };
        let before = rows.len();
        rows.retain(|r| r.version > upto);
        let removed = before - rows.len();
        if rows.is_empty() {
            kept.by_partition.remove(&key);
        }
        kept.rows -= removed;
    }

    /// Drops every row of `(sku, location)` (another publisher holds it now).
    pub fn forget(&self, sku: &str, location: &str) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        if let Some(rows) = kept
            .by_partition
            .remove(&(sku.to_string(), location.to_string()))
        {
            kept.rows -= rows.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(versions: &[u64]) -> Vec<FreshRow> {
        versions
            .iter()
            .map(|&version| FreshRow {
                version,
                payload: vec![u8::try_from(version).unwrap_or(0)],
                created_at_ms: 0,
            })
            .collect()
    }

    fn versions(found: Option<Vec<FreshRow>>) -> Option<Vec<u64>> {
        found.map(|rows| rows.into_iter().map(|r| r.version).collect())
    }

    #[test]
    fn nothing_is_kept_without_a_publisher() {
        let fresh = FreshOutbox::default();
        fresh.committed("s", "l", rows(&[1]));
        assert_eq!(versions(fresh.after("s", "l", 0, 10)), None);
    }

    #[test]
    fn rows_stand_for_a_read_only_right_after_the_cursor_and_without_gaps() {
        let fresh = FreshOutbox::default();
        fresh.want();
        fresh.committed("s", "l", rows(&[6, 7]));
        fresh.committed("s", "l", rows(&[5]));
        fresh.committed("s", "l", rows(&[9]));
        // Version 8 is missing: it may be another writer's, so the partition is read.
        assert_eq!(versions(fresh.after("s", "l", 4, 10)), None);
        fresh.committed("s", "l", rows(&[8]));
        assert_eq!(
            versions(fresh.after("s", "l", 4, 10)),
            Some(vec![5, 6, 7, 8, 9])
        );
        assert_eq!(versions(fresh.after("s", "l", 4, 2)), Some(vec![5, 6]));
        assert_eq!(versions(fresh.after("s", "l", 6, 10)), Some(vec![7, 8, 9]));
        // Version 4 was not seen here: it may be another writer's, unpublished.
        assert_eq!(versions(fresh.after("s", "l", 3, 10)), None);
        fresh.published("s", "l", 8);
        assert_eq!(versions(fresh.after("s", "l", 8, 10)), Some(vec![9]));
        assert_eq!(versions(fresh.after("other", "l", 0, 10)), None);
    }

    #[test]
    fn a_row_without_room_takes_its_partitions_kept_rows_with_it() {
        let fresh = FreshOutbox::default();
        fresh.want();
        fresh.committed("t", "l", rows(&[1]));
        let all: Vec<u64> = (1..MAX_ROWS as u64).collect();
        fresh.committed("s", "l", rows(&all));
        // Row 2 of t is not kept; row 1 alone would stand for a read that misses it.
        fresh.committed("t", "l", rows(&[2]));
        assert_eq!(versions(fresh.after("t", "l", 0, 10)), None);
    }

    #[test]
    fn published_and_forgotten_rows_free_their_room() {
        let fresh = FreshOutbox::default();
        fresh.want();
        let all: Vec<u64> = (1..=MAX_ROWS as u64).collect();
        fresh.committed("s", "l", rows(&all));
        // Full: a row not kept is read instead.
        fresh.committed("t", "l", rows(&[1]));
        assert_eq!(versions(fresh.after("t", "l", 0, 10)), None);
        fresh.published("s", "l", MAX_ROWS as u64 - 1);
        fresh.committed("t", "l", rows(&[1]));
        assert_eq!(versions(fresh.after("t", "l", 0, 10)), Some(vec![1]));
        fresh.forget("s", "l");
        fresh.forget("t", "l");
        assert_eq!(fresh.kept.lock().unwrap().rows, 0);
    }
}
