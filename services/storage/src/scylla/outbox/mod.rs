//! The outbox of the ScyllaDB write store: found through markers, read in bounded slices
//! from where this process last published, deleted once published.
//!
//! Every batch that adds an outbox row is preceded by a marker naming its partition
//! ([`OutboxLog::mark`], [`markers`]). Partitions this process committed to are read at
//! once (they are "dirty"); every so often the markers of all shards are read too, which
//! finds what other processes committed and what a crash left behind ([`pending`]). Rows
//! this process committed are kept for its own publisher ([`fresh`]). Publishing deletes
//! a partition's rows up to the last one published with one range tombstone.

mod fresh;
mod markers;
mod pending;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use scylla::client::session::Session;
use stockflow_domain::StockKey;
use tokio::sync::watch;

pub(crate) use fresh::{FreshOutbox, FreshRow};
pub(crate) use markers::{SHARDS, outbox_row_id, shard_of};

use crate::scylla::cql::query;
use crate::scylla::cql::write_statements::WriteStatements;
use crate::{Result, now_ms};

/// A marker this process wrote for a partition less than this long ago is still there: the
/// publisher only deletes markers older than its grace period (15 s), so re-writing it
/// before every batch of a hot key would be wasted work.
const MARKER_FRESH_MS: i64 = 2_000;
/// Partitions whose marker times are remembered at most; past this, the stale ones go.
const MAX_REMEMBERED_MARKERS: usize = 100_000;
/// How often every marker is read by default, beside the partitions this process wrote.
const FULL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// What the publisher side remembers between calls.
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

/// This process's side of the outbox: what it committed (for its publisher) and what its
/// publisher has published.
pub(crate) struct OutboxLog {
    session: Arc<Session>,
    st: Arc<WriteStatements>,
    /// Ticks on every commit, for the publisher.
    tick: watch::Sender<u64>,
    /// When this process last wrote each partition's outbox marker.
    markers: Mutex<BTreeMap<(String, String), i64>>,
    /// Partitions this process committed outbox rows to since the publisher last looked:
    /// read at once, without waiting for a scan of every marker.
    dirty: Mutex<BTreeSet<(String, String)>>,
    /// The outbox rows this process committed, for its own publisher.
    fresh: FreshOutbox,
    cursors: OutboxCursors,
}

impl OutboxLog {
    pub(crate) fn new(session: Arc<Session>, st: Arc<WriteStatements>) -> Self {
        Self {
            session,
            st,
            tick: watch::channel(0).0,
            markers: Mutex::default(),
            dirty: Mutex::default(),
            fresh: FreshOutbox::default(),
            cursors: OutboxCursors::default(),
        }
    }

    /// The rows kept for this process's publisher.
    pub(crate) fn fresh(&self) -> &FreshOutbox {
        &self.fresh
    }

    /// Names `key`'s partition in the markers before its batch (unless this process did so
    /// a moment ago), so the publisher finds what the batch commits.
    pub(crate) async fn mark(&self, key: &StockKey) -> Result<()> {
        self.mark_partition(key.sku.as_str(), key.location.as_str())
            .await
    }

    /// [`OutboxLog::mark`] for any partition (a catalog's too).
    pub(crate) async fn mark_partition(&self, sku: &str, location: &str) -> Result<()> {
        let now = now_ms();
        let id = (sku.to_string(), location.to_string());
        if let Ok(markers) = self.markers.lock()
            && markers
                .get(&id)
                .is_some_and(|at| now - at < MARKER_FRESH_MS)
        {
            return Ok(());
        }
        query::exec(
            &self.session,
            "write outbox marker",
            &self.st.insert_marker,
            (shard_of(sku, location), sku, location, now),
        )
        .await?;
        if let Ok(mut markers) = self.markers.lock() {
            if markers.len() > MAX_REMEMBERED_MARKERS {
                markers.retain(|_, at| now - *at < MARKER_FRESH_MS);
            }
            markers.insert(id, now);
        }
        Ok(())
    }

    /// Notes a commit of outbox rows to a partition, for the publisher.
    pub(crate) fn committed(&self, sku: &str, location: &str) {
        if let Ok(mut dirty) = self.dirty.lock() {
            dirty.insert((sku.to_string(), location.to_string()));
        }
        self.tick.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Whether this process has committed anything (its publisher then knows its own
    /// partitions without scanning).
    fn commits_here(&self) -> bool {
        *self.tick.borrow() != 0
    }

    /// Ticks after commits.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }

    /// How often `pending` reads every marker of its shards.
    pub(crate) fn scan_every(&self, every: Duration) {
        if let Ok(mut slot) = self.cursors.scan_every.lock() {
            *slot = every;
        }
    }

    /// The row after which this process reads `(sku, location)`.
    fn cursor(&self, sku: &str, location: &str) -> String {
        self.cursors
            .published
            .lock()
            .ok()
            .and_then(|c| c.get(&(sku.to_string(), location.to_string())).cloned())
            .unwrap_or_default()
    }
}
