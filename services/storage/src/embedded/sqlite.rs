//! SQLite plumbing shared by the embedded stores: connection set-up and a reader pool.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OpenFlags};

use crate::{Result, StoreError};

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// fsync on every commit: survives power loss. For the write side and the log, whose
    /// contents exist nowhere else.
    Durable,
    /// fsync only at checkpoints: survives a process crash, and after a power loss the
    /// newest commits may be missing but the file stays consistent. For the read side,
    /// which stores its offsets in the same transactions and simply re-reads the log.
    Rebuildable,
}

/// Opens a read-write connection in WAL mode.
pub(crate) fn open_writer(path: &Path, schema: &str, durability: Durability) -> Result<Connection> {
    let conn = Connection::open(path)?;
    // WAL lets readers run beside the writer; FULL fsyncs the WAL on every commit, which is
    // what makes an acknowledged command durable (group commit keeps it cheap).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let synchronous = match durability {
        Durability::Durable => "FULL",
        Durability::Rebuildable => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.set_prepared_statement_cache_capacity(64);
    conn.execute_batch(schema)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// Read-only connections, handed out one per query.
///
/// Queries run inline on the caller's thread: a point lookup in WAL mode takes a few
/// microseconds and never waits for the writer, less than a hop to a blocking pool costs.
pub(crate) struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReaderPool {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `f` on an idle connection, opening one if none is idle.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = self.idle.lock().map_err(poisoned)?.pop();
        let conn = match conn {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&conn);
        let mut idle = self.idle.lock().map_err(poisoned)?;
        if idle.len() < 16 {
            idle.push(conn);
        }
        result
    }
}

pub(crate) fn poisoned<T>(_: std::sync::PoisonError<T>) -> StoreError {
    StoreError::Unavailable("a previous operation panicked while holding the connection".into())
}

/// u64 → i64 for SQLite, which stores signed integers; versions and offsets never get near
/// 2^63.
pub(crate) fn to_sql_u64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// i64 from SQLite → u64; negative values never get written.
pub(crate) fn from_sql_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The number `sql` (a `SELECT COUNT(*) ...`) counts.
pub(crate) fn count_rows(conn: &Connection, sql: &str) -> Result<u64> {
    let n: i64 = conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?;
    Ok(from_sql_u64(n))
}

/// Runs blocking work (an fsyncing commit) without stalling other tasks on this worker:
/// `block_in_place` on the multi-threaded runtime, inline elsewhere (single-threaded test
/// runtimes, where there is nobody to stall).
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
