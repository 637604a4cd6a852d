//! Keeps the write-ahead log of each embedded database bounded.
//!
//! A `PASSIVE` checkpoint copies WAL frames into the database file without blocking anyone,
//! but SQLite only *restarts* the WAL from its beginning when a write transaction starts at
//! a moment when every frame has been copied and no reader still uses the WAL. A writer that
//! never pauses never meets that moment, so with passive checkpoints alone the file only
//! grows (140 MB/s under a reserve load).
//!
//! So each database gets two cooperating parts:
//! - a **checkpointer thread** with its own connection runs `PASSIVE` checkpoints in a loop.
//!   It does the bulk of the copying off the commit path and watches how many frames the WAL
//!   holds; past [`WalPolicy::restart_above_bytes`] it asks for a restart.
//! - the **writer** (the one thread or lock that commits to the database) calls
//!   [`WalKeeper::after_commit`] after each commit. When a restart was asked for, it runs a
//!   `RESTART` checkpoint itself, between two transactions: no new frame can arrive while it
//!   runs, the passive checkpointer has already copied most frames, and readers only hold
//!   snapshots for the length of one query, so the pause is short and bounded. The next
//!   commit then writes from the start of the WAL, reusing the file's blocks (cheaper to
//!   fsync than fresh ones); `journal_size_limit` caps what a burst leaves behind.
//! - when no frame has arrived for [`WalPolicy::truncate_when_idle_for`], the checkpointer
//!   truncates the WAL to zero bytes, so a quiet database gives its disk space back.
//!
//! Checkpoints never weaken durability: SQLite fsyncs the WAL before it copies frames and the
//! database file before it lets the WAL restart, so nothing that was committed (acknowledged
//! or not yet) can be lost by a checkpoint.
//!
//! [`truncate`] runs a `TRUNCATE` checkpoint: at start-up (after a crash, before serving) and
//! at a clean shutdown, so a stopped data directory holds no WAL.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use crate::Result;
use crate::error::Context;

/// When the WAL of a database is restarted, and how large its file may stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPolicy {
    /// A WAL holding more than this many bytes of frames is restarted after the next commit.
    pub restart_above_bytes: u64,
    /// The WAL file is cut to this size when it restarts (`journal_size_limit`). Above the
    /// restart bound, so that under steady load the file is reused rather than cut and
    /// regrown: overwriting allocated blocks makes every WAL fsync cheaper.
    pub keep_bytes: u64,
    /// Pause between passive checkpoints while frames arrive.
    pub busy_interval: Duration,
    /// Pause between passive checkpoints while the database is quiet.
    pub idle_interval: Duration,
    /// After this long without a new frame, the WAL is truncated to zero bytes.
    pub truncate_when_idle_for: Duration,
    /// Below this much free space on the data directory's filesystem the write store
    /// reports not ready (`/readyz` answers 503), so load balancers move traffic away
    /// before commands start failing with a full disk: each WAL may grow to `keep_bytes`.
    pub min_free_disk_bytes: u64,
}

impl Default for WalPolicy {
    /// Measured under a reserve+confirm load of ~140 MB/s of frames on two cores: restarts
    /// every ~0.5 s cost 2–10 ms each and keep the file under ~100 MiB; a busier
    /// checkpointer or a file cut at every restart costs throughput (see `bench-wal.sh`).
    fn default() -> Self {
        Self {
            restart_above_bytes: 64 << 20,
            keep_bytes: 128 << 20,
            busy_interval: Duration::from_millis(100),
            idle_interval: Duration::from_millis(250),
            truncate_when_idle_for: Duration::from_secs(1),
            min_free_disk_bytes: 256 << 20,
        }
    }
}

/// How a checkpoint waits for others; see SQLite's `wal_checkpoint` pragma.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Copy what can be copied without waiting for anyone.
    Passive,
    /// Copy everything, wait for readers to leave the WAL, restart it from its beginning.
    Restart,
    /// As `Restart`, and truncate the WAL file to zero bytes.
    Truncate,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Passive => "passive",
            Mode::Restart => "restart",
            Mode::Truncate => "truncate",
        }
    }
}

/// What one checkpoint found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// Another connection held a lock the checkpoint needed, so it did not finish.
    pub busy: bool,
    /// Frames in the WAL (-1 if the database is not in WAL mode).
    pub wal_frames: i64,
    /// Frames of those already copied into the database file.
    pub checkpointed_frames: i64,
}

/// Runs one checkpoint on `conn` and records it in the metrics of database `db`.
pub(crate) fn checkpoint(conn: &Connection, db: &'static str, mode: Mode) -> Result<Checkpoint> {
    let started = Instant::now();
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Restart => "PRAGMA wal_checkpoint(RESTART)",
        Mode::Truncate => "PRAGMA wal_checkpoint(TRUNCATE)",
    };
    let result = conn.query_row(sql, [], |r| {
        Ok(Checkpoint {
            busy: r.get::<_, i64>(0)? != 0,
            wal_frames: r.get(1)?,
            checkpointed_frames: r.get(2)?,
        })
    });
    let outcome = match &result {
        Ok(c) if c.busy => "busy",
        Ok(_) => "complete",
        Err(_) => "error",
    };
    metrics::counter!("stockflow_sqlite_checkpoints_total", "db" => db, "mode" => mode.as_str(), "outcome" => outcome)
        .increment(1);
    if mode != Mode::Passive {
        metrics::histogram!("stockflow_sqlite_checkpoint_seconds", "db" => db, "mode" => mode.as_str())
            .record(started.elapsed().as_secs_f64());
    }
    let c = result.what("checkpoint a write-ahead log")?;
    if c.wal_frames >= 0 {
        metrics::gauge!("stockflow_sqlite_wal_frames", "db" => db).set(c.wal_frames as f64);
        metrics::gauge!("stockflow_sqlite_wal_checkpointed_frames", "db" => db)
            .set(c.checkpointed_frames as f64);
    }
    Ok(c)
}

/// A WAL frame's header, bytes: each frame is this header and one page.
const FRAME_HEADER_BYTES: u64 = 24;
/// SQLite's default page size, assumed if the page size cannot be read as a number.
const DEFAULT_PAGE_BYTES: u64 = 4096;

/// How long [`truncate`] keeps retrying a checkpoint that another connection's checkpoint
/// is in the way of.
const TRUNCATE_PATIENCE: Duration = Duration::from_secs(5);
/// Pause between two tries of [`truncate`]: a checkpoint of a bounded WAL takes about this.
const TRUNCATE_RETRY: Duration = Duration::from_millis(10);

/// Copies every frame into the database file and truncates the WAL to zero bytes. Waits
/// (up to the connection's busy timeout) for readers and writers, and retries while the
/// checkpointer thread's own checkpoint runs (SQLite answers busy at once then, without
/// waiting); fails if it cannot finish, because callers rely on the WAL being empty
/// afterwards.
pub(crate) fn truncate(conn: &Connection, db: &'static str) -> Result<()> {
    let started = Instant::now();
    while checkpoint(conn, db, Mode::Truncate)?.busy {
        if started.elapsed() >= TRUNCATE_PATIENCE {
            return Err(crate::StoreError::CheckpointBusy { db });
        }
        thread::sleep(TRUNCATE_RETRY);
    }
    if let Some(path) = conn.path() {
        record_wal_size(db, &wal_path(Path::new(path)));
    }
    Ok(())
}

/// The WAL file of the database at `db`.
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

fn record_wal_size(db: &'static str, wal: &Path) {
    // A missing WAL file is an empty one.
    let bytes = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
    metrics::gauge!("stockflow_sqlite_wal_bytes", "db" => db).set(bytes as f64);
}

/// Sets the pragmas the writer of a database needs under this scheme: no checkpoint on the
/// commit path (the keeper does them) and a size the WAL file returns to when it restarts.
pub(crate) fn configure_writer(conn: &Connection, policy: &WalPolicy) -> Result<()> {
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .and_then(|()| {
            conn.pragma_update(
                None,
                "journal_size_limit",
                i64::try_from(policy.keep_bytes).unwrap_or(i64::MAX),
            )
        })
        .what("configure the write-ahead log")
}

/// Longest a WAL restart or an idle truncation waits for readers (and holds writers off).
const RESTART_WAIT: Duration = Duration::from_millis(100);
/// The busy timeout of writer connections outside those waits.
const WRITER_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `f` with `conn`'s busy timeout set to `wait`, then restores the writers' default.
fn with_busy_timeout<T>(conn: &Connection, wait: Duration, f: impl FnOnce() -> T) -> T {
    if let Err(e) = conn.busy_timeout(wait) {
        tracing::warn!(error = %e, "cannot shorten the busy timeout");
    }
    let out = f();
    if let Err(e) = conn.busy_timeout(WRITER_BUSY_TIMEOUT) {
        tracing::warn!(error = %e, "cannot restore the busy timeout");
    }
    out
}

/// State shared by a database's checkpointer thread and its writer.
struct Shared {
    db: &'static str,
    /// Set by the checkpointer when the WAL is over the bound; taken by the writer.
    restart_wanted: AtomicBool,
}

/// The WAL keeper of one database: owns its checkpointer thread (stopped when the keeper
/// is dropped) and tells the writer when to restart the WAL.
pub(crate) struct WalKeeper {
    shared: Arc<Shared>,
    /// Dropping it wakes and stops the checkpointer thread.
    _stop: std_mpsc::Sender<()>,
}

impl std::fmt::Debug for WalKeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalKeeper")
            .field("db", &self.shared.db)
            .finish()
    }
}

impl WalKeeper {
    /// Starts the checkpointer of the database at `path` (named `db` in metrics and logs),
    /// on a connection of its own opened by `open`.
    pub(crate) fn start(
        path: &Path,
        db: &'static str,
        policy: WalPolicy,
        open: impl FnOnce() -> Result<Connection>,
    ) -> Result<Self> {
        let conn = open()?;
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .what("read the page size")?;
        let frame_bytes =
            u64::try_from(page_size).unwrap_or(DEFAULT_PAGE_BYTES) + FRAME_HEADER_BYTES;
        let restart_above_frames = (policy.restart_above_bytes / frame_bytes).max(1);
        let shared = Arc::new(Shared {
            db,
            restart_wanted: AtomicBool::new(false),
        });
        let (stop, stopped) = std_mpsc::channel::<()>();
        let checkpointer = Checkpointer {
            conn,
            shared: shared.clone(),
            wal: wal_path(path),
            restart_above_frames,
            policy,
        };
        thread::Builder::new()
            .name(format!("stockflow-ckpt-{db}"))
            .spawn(move || checkpointer.run(stopped))
            .what("start a checkpointer thread")?;
        Ok(Self {
            shared,
            _stop: stop,
        })
    }

    /// Called by the writer right after a commit, on its own connection and with no
    /// transaction open: restarts the WAL if the checkpointer asked for it.
    ///
    /// The restart waits for readers at most [`RESTART_WAIT`]: a reader that holds an old
    /// snapshot longer must not stall every write. A busy restart is simply asked for again
    /// by the checkpointer's next look.
    pub(crate) fn after_commit(&self, conn: &Connection) {
        if !self.shared.restart_wanted.swap(false, Ordering::AcqRel) {
            return;
        }
        let restarted = with_busy_timeout(conn, RESTART_WAIT, || {
            checkpoint(conn, self.shared.db, Mode::Restart)
        });
        match restarted {
            Ok(c) if c.busy => {
                tracing::debug!(db = self.shared.db, "WAL restart found readers; will retry");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(db = self.shared.db, error = %e, "WAL restart failed; will retry")
            }
        }
    }
}

/// The checkpointer thread of one database.
struct Checkpointer {
    conn: Connection,
    shared: Arc<Shared>,
    wal: PathBuf,
    restart_above_frames: u64,
    policy: WalPolicy,
}

impl Checkpointer {
    fn run(self, stopped: std_mpsc::Receiver<()>) {
        let mut pause = Duration::ZERO;
        let mut last_version = None;
        let mut quiet_since = Instant::now();
        loop {
            match stopped.recv_timeout(pause) {
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                // The keeper was dropped.
                _ => return,
            }
            let c = match checkpoint(&self.conn, self.shared.db, Mode::Passive) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(db = self.shared.db, error = %e, "checkpoint failed; will retry");
                    pause = self.policy.idle_interval;
                    continue;
                }
            };
            record_wal_size(self.shared.db, &self.wal);
            if u64::try_from(c.wal_frames).unwrap_or(0) > self.restart_above_frames {
                self.shared.restart_wanted.store(true, Ordering::Release);
            }
            // `data_version` moves whenever another connection commits, even when SQLite
            // restarted the WAL by itself and the frame count looks unchanged.
            let version: Option<i64> = self
                .conn
                .query_row("PRAGMA data_version", [], |r| r.get(0))
                .ok();
            let all_copied = c.checkpointed_frames >= c.wal_frames;
            if version != last_version || !all_copied {
                quiet_since = Instant::now();
                last_version = version;
                pause = self.policy.busy_interval;
                continue;
            }
            pause = self.policy.idle_interval;
            let wal_bytes = std::fs::metadata(&self.wal).map(|m| m.len()).unwrap_or(0);
            if wal_bytes > 0 && quiet_since.elapsed() >= self.policy.truncate_when_idle_for {
                // Nothing written for a while: give the disk space back. Every frame is
                // already copied, so this holds writers off for an instant at most.
                let truncated = with_busy_timeout(&self.conn, RESTART_WAIT, || {
                    checkpoint(&self.conn, self.shared.db, Mode::Truncate)
                });
                if let Err(e) = truncated {
                    tracing::warn!(db = self.shared.db, error = %e, "truncating the WAL failed; will retry");
                }
                record_wal_size(self.shared.db, &self.wal);
            }
        }
    }
}
