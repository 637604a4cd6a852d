//! The embedded backend: every port over SQLite files in one data directory.
//!
//! - `write.db`: locations, SKUs, stock rows, reservations, outbox, idempotency records —
//!   written by one writer thread that commits many commands per fsync (group commit).
//! - `log.db`: the partitioned event log (the embedded twin of a Fluvio topic).
//! - `read.db`: the read models, consumer offsets and the DLQ.
//!
//! All three run in WAL mode. `write.db` and `log.db` fsync every commit: a command
//! acknowledged to a client is on disk, so it survives `kill -9` and power loss alike.
//! `read.db` is derived data; it fsyncs only at checkpoints and re-reads the log after a
//! power loss (its offsets commit with its rows).

mod log;
mod read;
mod sqlite;
mod write;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use log::SqliteEventLog;
pub use read::SqliteReadStore;
pub use write::SqliteWriteStore;

use crate::Result;

/// The three embedded stores of one data directory.
#[derive(Clone)]
pub struct EmbeddedBackend {
    /// Write side and outbox.
    pub write: Arc<SqliteWriteStore>,
    /// Event log.
    pub log: Arc<SqliteEventLog>,
    /// Read side.
    pub read: Arc<SqliteReadStore>,
}

impl EmbeddedBackend {
    /// Opens (creating if needed) the stores in `dir`, with a log of `partitions`
    /// partitions. Reopening with a different partition count is refused, since it would
    /// move SKUs between partitions.
    pub fn open(dir: &Path, partitions: u32) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            write: Arc::new(SqliteWriteStore::open(&dir.join("write.db"))?),
            log: Arc::new(SqliteEventLog::open(&dir.join("log.db"), partitions)?),
            read: Arc::new(SqliteReadStore::open(&dir.join("read.db"))?),
        })
    }
}
