//! The embedded backend: every port over SQLite files in one data directory.
//!
//! - `write.db`: locations, SKUs, stock rows, reservations, outbox, idempotency records —
//!   written by one writer thread that commits many commands per fsync (group commit).
//! - `log.db`: the partitioned event log (the embedded twin of a Fluvio topic).
//! - `read.db`: the read models, consumer offsets and the DLQ.
//! - `webhooks.db`: webhook subscriptions, their cursors and dead letters.
//! - `imports.db`: bulk import jobs, their checkpoints and refused rows (the uploaded files
//!   of unfinished jobs are in `imports/`).
//!
//! All three run in WAL mode. `write.db` and `log.db` fsync every commit: a command
//! acknowledged to a client is on disk, so it survives `kill -9` and power loss alike.
//! `read.db` is derived data; it fsyncs only at checkpoints and re-reads the log after a
//! power loss (its offsets commit with its rows).
//!
//! Each WAL is kept bounded by its own checkpointer ([`wal`]), and one process at a time
//! holds the directory ([`lock`]); [`backup`] copies a served directory consistently. The rooms: `write` (the write store and its writer
//! threads), `read` (the read store), `log` (the event log), `sqlite` (connections and the
//! reader pool), `disk` (free-space readiness), `faults` (test hooks, inert in release).

pub mod backup;
mod disk;
mod faults;
mod imports;
mod lock;
mod log;
mod read;
mod sqlite;
mod wal;
mod webhooks;
mod write;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use faults::FaultInjection;
pub use imports::SqliteImportStore;
pub use lock::{DataDirLock, LOCK_FILE};
pub use log::SqliteEventLog;
pub use read::SqliteReadStore;
pub use wal::WalPolicy;
pub use webhooks::SqliteWebhookStore;
pub use write::SqliteWriteStore;

use crate::Result;
use crate::error::Context;

/// File names of the databases in a data directory, with their names in metrics.
const DATABASES: [(&str, &str); 3] = [
    ("write.db", "write"),
    ("log.db", "log"),
    ("read.db", "read"),
];

/// The three embedded stores of one data directory.
#[derive(Clone)]
pub struct EmbeddedBackend {
    /// Write side and outbox.
    pub write: Arc<SqliteWriteStore>,
    /// Event log.
    pub log: Arc<SqliteEventLog>,
    /// Read side.
    pub read: Arc<SqliteReadStore>,
    /// Webhook subscriptions and their delivery state (`webhooks.db`).
    pub webhooks: Arc<SqliteWebhookStore>,
    /// Bulk import jobs and their checkpoints (`imports.db`).
    pub imports: Arc<SqliteImportStore>,
    /// Held while any clone of the backend lives.
    lock: Arc<DataDirLock>,
}

impl EmbeddedBackend {
    /// Opens (creating if needed) the stores in `dir`, with a log of `partitions`
    /// partitions. Reopening with a different partition count is refused, since it would
    /// move SKUs between partitions.
    ///
    /// Refused while another process (or another backend in this one) has `dir` open.
    pub fn open(dir: &Path, partitions: u32) -> Result<Self> {
        Self::open_with(dir, partitions, WalPolicy::default())
    }

    /// [`EmbeddedBackend::open`] with the WAL bounds of `policy`.
    pub fn open_with(dir: &Path, partitions: u32, policy: WalPolicy) -> Result<Self> {
        Self::open_with_faults(dir, partitions, policy, Arc::default())
    }

    /// [`EmbeddedBackend::open_with`], with `faults` injected into the write and read stores
    /// (inert without the `test-hooks` feature).
    pub fn open_with_faults(
        dir: &Path,
        partitions: u32,
        policy: WalPolicy,
        faults: Arc<FaultInjection>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).what("create the data directory")?;
        let lock = Arc::new(DataDirLock::acquire(dir)?);
        Ok(Self {
            write: Arc::new(SqliteWriteStore::open_with_faults(
                &dir.join("write.db"),
                policy,
                faults.clone(),
            )?),
            log: Arc::new(SqliteEventLog::open(
                &dir.join("log.db"),
                partitions,
                policy,
            )?),
            read: Arc::new(SqliteReadStore::open_with_faults(
                &dir.join("read.db"),
                policy,
                faults,
            )?),
            webhooks: Arc::new(SqliteWebhookStore::open(&dir.join("webhooks.db"))?),
            imports: Arc::new(SqliteImportStore::open(&dir.join("imports.db"))?),
            lock,
        })
    }

    /// Copies every WAL into its database and truncates it, so a stopped directory holds no
    /// WAL. Called at a clean shutdown, once nothing writes any more; the stores stay usable.
    pub fn checkpoint_all(&self) -> Result<()> {
        let mut first_error = None;
        for (file, db) in DATABASES {
            if let Err(e) = checkpoint_file(&self.lock.dir().join(file), db) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Truncates the WAL of the database at `path` on a connection of its own, waiting for its
/// writer and readers to step aside.
pub fn checkpoint_file(path: &Path, db: &'static str) -> Result<()> {
    let conn = rusqlite::Connection::open(path).what("open a database to checkpoint")?;
    conn.pragma_update(None, "busy_timeout", sqlite::BUSY_TIMEOUT_MS)
        .what("configure a checkpoint connection")?;
    wal::truncate(&conn, db)
}
