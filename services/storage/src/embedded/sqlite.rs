//! SQLite plumbing shared by the embedded stores: connection set-up and a reader pool.

use std::path::Path;
use std::sync::Arc;
use std::thread;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, oneshot};

use crate::error::Context;
use crate::{Result, StoreError};

/// How long a connection waits for another's lock before SQLite answers busy: longer than
/// any one commit or checkpoint takes.
pub(crate) const BUSY_TIMEOUT_MS: i64 = 5_000;
/// Page cache of a writer, KiB (negative means KiB to SQLite): the hot rows of a busy
/// store stay in memory.
const WRITER_CACHE_KIB: i64 = 32_000;
/// Prepared statements a writer keeps: every statement of its store, with room.
const WRITER_STATEMENT_CACHE: usize = 64;
/// Prepared statements a reader keeps.
const READER_STATEMENT_CACHE: usize = 32;

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
    let conn = Connection::open(path).what("open a database")?;
    // WAL lets readers run beside the writer; FULL fsyncs the WAL on every commit, which is
    // what makes an acknowledged command durable (group commit keeps it cheap).
    let synchronous = match durability {
        Durability::Durable => "FULL",
        Durability::Rebuildable => "NORMAL",
    };
    (|| {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", synchronous)?;
        conn.pragma_update(None, "busy_timeout", BUSY_TIMEOUT_MS)?;
        conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
        conn.pragma_update(None, "temp_store", "MEMORY")
    })()
    .what("configure a writer connection")?;
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENT_CACHE);
    conn.execute_batch(schema).what("create the schema")?;
    Ok(conn)
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .what("open a reader connection")?;
    conn.pragma_update(None, "busy_timeout", BUSY_TIMEOUT_MS)
        .what("configure a reader connection")?;
    conn.set_prepared_statement_cache_capacity(READER_STATEMENT_CACHE);
    Ok(conn)
}

/// Threads each reader pool runs, each with its own read-only connection.
const READER_THREADS: usize = 3;
/// Reads queued or running at once per pool; past this, callers wait (asynchronously).
const READER_QUEUE: usize = 256;

type ReadJob = Box<dyn FnOnce(Result<&Connection>) + Send>;

/// Read-only connections on threads of their own.
///
/// Every query runs on one of [`READER_THREADS`] threads, each owning a connection, never
/// on an async worker: a big scan, a cold page cache or a stalled disk then delays the
/// queries queued behind it, not the runtime (health checks, commands, timers). Admission
/// is bounded ([`READER_QUEUE`]): a flood of slow reads makes callers wait instead of piling
/// up work.
pub(crate) struct ReaderPool {
    jobs: crossbeam_channel::Sender<ReadJob>,
    admission: Arc<Semaphore>,
}

impl ReaderPool {
    pub(crate) fn new(path: &Path) -> Self {
        let (jobs, queue) = crossbeam_channel::unbounded::<ReadJob>();
        for i in 0..READER_THREADS {
            let (queue, path) = (queue.clone(), path.to_path_buf());
            let name = format!("sqlite-reader-{i}");
            // A pool without threads answers every read with an error (below), so a
            // failed spawn is reported where the read is made.
            if let Err(e) = thread::Builder::new()
                .name(name)
                .spawn(move || serve_reads(&path, &queue))
            {
                tracing::error!(error = %e, "cannot start a SQLite reader thread");
            }
        }
        Self {
            jobs,
            admission: Arc::new(Semaphore::new(READER_QUEUE)),
        }
    }

    /// Runs `f` on a reader thread and waits for its answer.
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let permit =
            self.admission
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| StoreError::Stopped {
                    worker: "the SQLite reader pool",
                })?;
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Box::new(move |conn: Result<&Connection>| {
                let _ = answer.send(conn.and_then(f));
                drop(permit);
            }))
            .map_err(|_| StoreError::Stopped {
                worker: "every SQLite reader thread",
            })?;
        answered.await.map_err(|_| StoreError::Stopped {
            worker: "a SQLite read (it panicked)",
        })?
    }
}

/// One reader thread: opens its connection on first use (again after a failure) and runs
/// reads until the pool is dropped.
fn serve_reads(path: &Path, queue: &crossbeam_channel::Receiver<ReadJob>) {
    let mut conn: Option<Connection> = None;
    while let Ok(job) = queue.recv() {
        if conn.is_none() {
            match open_reader(path) {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    job(Err(e));
                    continue;
                }
            }
        }
        let Some(c) = conn.as_ref() else { continue };
        // A panicking read answers nobody (its caller sees an error) and must not take the
        // thread with it; the connection is reopened, as its state is unknown.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(Ok(c)))).is_err() {
            conn = None;
        }
    }
}

pub(crate) fn poisoned<T>(_: std::sync::PoisonError<T>) -> StoreError {
    StoreError::Poisoned {
        what: "the writer connection",
    }
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
    let n: i64 = conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .what("count rows")?;
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

/// One durable connection behind a lock, for a store whose traffic is a few rows at a time
/// (webhook deliveries, import checkpoints): each call runs on it through [`blocking`].
pub(crate) struct LockedConnection(std::sync::Mutex<Connection>);

impl LockedConnection {
    /// Opens `path` durably, creating `schema`.
    pub(crate) fn open(path: &Path, schema: &str) -> Result<Self> {
        Ok(Self(std::sync::Mutex::new(open_writer(
            path,
            schema,
            Durability::Durable,
        )?)))
    }

    /// Runs `f` on the connection.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        blocking(|| {
            let mut conn = self.0.lock().map_err(poisoned)?;
            f(&mut conn)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// A slow read runs on a reader thread, not on an async worker: on a runtime with a
    /// single worker, timers keep firing while it runs, and it answers when done.
    #[test]
    fn a_slow_read_leaves_the_runtime_running() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slow.db");
        drop(open_writer(&path, "CREATE TABLE t (x INTEGER);", Durability::Durable).unwrap());
        let pool = ReaderPool::new(&path);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let slow = pool.read(|conn| {
                // Counting to a few million takes long enough to watch the runtime.
                conn.query_row(
                    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000000)
                     SELECT COUNT(*) FROM c",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .what("count")
            });
            tokio::pin!(slow);
            let (started, mut ticks) = (Instant::now(), 0);
            let counted = loop {
                tokio::select! {
                    counted = &mut slow => break counted.unwrap(),
                    _ = tokio::time::sleep(Duration::from_millis(5)) => ticks += 1,
                }
            };
            assert_eq!(counted, 5_000_000);
            let took = started.elapsed();
            // Inline, the read would have held the only worker: no tick at all.
            assert!(
                ticks as u128 * 5 * 4 >= took.as_millis(),
                "{ticks} ticks of 5 ms while the read took {took:?}"
            );
            assert!(ticks > 0);
        });
    }
}
