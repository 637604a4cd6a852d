//! The embedded write side: one writer thread, group commit, transactional outbox.
//!
//! Every mutation is a job sent to the writer thread. The thread takes every job waiting
//! (up to [`MAX_BATCH`]), runs them all in one `BEGIN IMMEDIATE` transaction and commits
//! once. A refused job (domain rule, idempotency) has written nothing; a job that fails
//! after writing rolls the batch back, and every job of it reruns in its own transaction.
//!
//! Durability is pipelined. The commit writes the WAL frames (no fsync) and hands the
//! batch's answers to the flusher thread, and the writer starts on the next batch at once.
//! The flusher fsyncs the WAL file — one fsync for every batch committed meanwhile — and
//! only then answers the callers and advances the *durable outbox watermark*. So a reply
//! means the stock row, reservation, outbox entries and idempotency record of that command
//! are on disk together, and the publisher never sees an outbox entry that a power loss
//! could still take back. Checkpoints run on their own thread so they never stall commits.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use stockflow_domain::{
    Location, LocationId, Reservation, ReservationId, Sku, SkuCatalog, StockKey, StockLevel,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::commands::{
    execute, load_level, load_location, load_reservation, mark_published, purge, put_location,
    put_sku, row_to_level,
};
use super::disk::Headroom;
use super::sqlite::{Durability, ReaderPool, count_rows, open_writer, to_sql_u64};
use super::wal::{self, WalKeeper, WalPolicy};
use crate::expiry;
use crate::ports::{
    CommandOutcome, CommandRequest, ExpiryRound, Outbox, OutboxEntry, Purge, WriteStore,
};
use crate::{Result, StoreError, now_ms};

/// Most jobs committed by one transaction.
const MAX_BATCH: usize = 512;
/// Jobs that may wait for the writer before callers are told to back off.
const QUEUE_DEPTH: usize = 8192;
/// The database's name in metrics and logs.
const DB_NAME: &str = "write";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS locations (
    id TEXT PRIMARY KEY,
    region TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS skus (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS stock (
    sku TEXT NOT NULL,
    location TEXT NOT NULL,
    region TEXT NOT NULL,
    on_hand INTEGER NOT NULL CHECK (on_hand >= 0),
    reserved INTEGER NOT NULL CHECK (reserved >= 0 AND reserved <= on_hand),
    version INTEGER NOT NULL,
    PRIMARY KEY (sku, location)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    reference TEXT,
    lines TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS reservations_active_by_expiry
    ON reservations (expires_at_ms) WHERE status = 'active';
CREATE INDEX IF NOT EXISTS reservations_final_by_age
    ON reservations (updated_at_ms) WHERE status != 'active';
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    result TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created_at_ms);
"#;

type Reply<T> = oneshot::Sender<Result<T>>;

enum Job {
    Execute(Box<CommandRequest>, Reply<CommandOutcome>),
    PutLocation(Location, Reply<Location>),
    PutSku(Sku, String, BTreeMap<String, String>, Reply<SkuCatalog>),
    MarkPublished(Vec<i64>, Reply<()>),
    Purge(Purge, i64, usize, Reply<usize>),
}

/// The embedded write store. Cheap to share behind an `Arc`.
pub struct SqliteWriteStore {
    jobs: mpsc::Sender<Job>,
    readers: ReaderPool,
    outbox_tick: watch::Receiver<u64>,
    /// Highest outbox id known to be on disk; the publisher reads no further.
    durable_outbox: Arc<AtomicI64>,
    /// Set when an fsync failed: the file's state on disk is unknown, so stop taking work.
    failed: Arc<OnceLock<String>>,
    /// Free space the data directory keeps to report ready.
    headroom: Headroom,
}

/// Faults a test can inject into the embedded write store, to prove it fails safe.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct FaultInjection {
    /// The next fsync of the WAL reports an I/O error (as Linux reports EIO once, and then
    /// lets the next fsync "succeed" over pages it has dropped).
    pub fail_next_fsync: AtomicBool,
    /// The next this many projections into the read store fail as a full disk does.
    pub fail_projections: AtomicU32,
    /// While set, projections into the read store hang (a stuck disk or lock).
    pub stall_projections: AtomicBool,
    /// Every WAL fsync takes this many milliseconds longer (a slow disk).
    pub slow_fsync_ms: AtomicU64,
}

impl FaultInjection {
    /// Waits while projections are stalled.
    pub(super) async fn stall(&self) {
        while self.stall_projections.load(Ordering::Acquire) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Whether this projection is to fail (and one fewer of the next will).
    pub(super) fn take_projection_fault(&self) -> bool {
        self.fail_projections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// The error SQLite gives when the disk is full (`SQLITE_FULL`).
pub(super) fn disk_full() -> StoreError {
    StoreError::Sqlite(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
        Some("database or disk is full".into()),
    ))
}

impl SqliteWriteStore {
    /// Opens `path`, creating the schema, and starts the writer, flusher and checkpointer
    /// threads.
    ///
    /// Whatever a crashed process left in the WAL is checkpointed (fsynced into the
    /// database file) first, so the durable outbox watermark taken below covers only what
    /// is on disk.
    pub fn open(path: &Path, policy: WalPolicy) -> Result<Self> {
        Self::open_with_faults(path, policy, Arc::default())
    }

    /// [`SqliteWriteStore::open`], with `faults` injected.
    #[doc(hidden)]
    pub fn open_with_faults(
        path: &Path,
        policy: WalPolicy,
        faults: Arc<FaultInjection>,
    ) -> Result<Self> {
        // Commits only write the WAL; the flusher's fsync makes them durable before anyone
        // is answered, and the WAL keeper (not the commit path) checkpoints.
        let conn = open_writer(path, SCHEMA, Durability::Rebuildable)?;
        wal::configure_writer(&conn, &policy)?;
        wal::truncate(&conn, DB_NAME)?;
        let wal_file = File::open(wal::wal_path(path))?;
        let seq: Option<i64> = conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let durable_outbox = Arc::new(AtomicI64::new(seq.unwrap_or(0)));
        let failed = Arc::new(OnceLock::new());
        let (jobs, rx) = mpsc::channel(QUEUE_DEPTH);
        let (tick_tx, outbox_tick) = watch::channel(0);
        let (flush_tx, flush_rx) = std_mpsc::channel();
        let flusher = Flusher {
            wal: wal_file,
            durable_outbox: durable_outbox.clone(),
            failed: failed.clone(),
            tick: tick_tx,
            faults,
        };
        let keeper = WalKeeper::start(path, DB_NAME, policy, || {
            open_writer(path, SCHEMA, Durability::Durable)
        })?;
        let writer_failed = failed.clone();
        thread::Builder::new()
            .name("stockflow-flush".into())
            .spawn(move || flusher.run(flush_rx))?;
        thread::Builder::new()
            .name("stockflow-writer".into())
            .spawn(move || {
                Writer {
                    conn,
                    flush: flush_tx,
                    wal: keeper,
                    failed: writer_failed,
                }
                .run(rx)
            })?;
        Ok(Self {
            jobs,
            readers: ReaderPool::new(path),
            outbox_tick,
            durable_outbox,
            failed,
            headroom: Headroom::of(path, policy.min_free_disk_bytes),
        })
    }

    async fn submit<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> Result<T> {
        if let Some(why) = self.failed.get() {
            return Err(StoreError::Unavailable(format!(
                "{why}; the store refuses writes until the process restarts"
            )));
        }
        let (tx, rx) = oneshot::channel();
        self.jobs.try_send(job(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                StoreError::Unavailable("write queue is full; retry shortly".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                StoreError::Unavailable("writer has stopped".into())
            }
        })?;
        rx.await
            .map_err(|_| StoreError::Unavailable("writer stopped before answering".into()))?
    }
}

#[async_trait]
impl WriteStore for SqliteWriteStore {
    async fn execute(&self, request: CommandRequest) -> Result<CommandOutcome> {
        self.submit(|tx| Job::Execute(Box::new(request), tx)).await
    }

    async fn put_location(&self, location: Location) -> Result<Location> {
        self.submit(|tx| Job::PutLocation(location, tx)).await
    }

    async fn put_sku(
        &self,
        sku: Sku,
        name: String,
        attributes: BTreeMap<String, String>,
    ) -> Result<SkuCatalog> {
        self.submit(|tx| Job::PutSku(sku, name, attributes, tx))
            .await
    }

    async fn location(&self, id: &LocationId) -> Result<Option<Location>> {
        let id = id.clone();
        self.readers
            .read(move |conn| load_location(conn, &id))
            .await
    }

    async fn reservation(&self, id: &ReservationId) -> Result<Option<Reservation>> {
        let id = id.clone();
        self.readers
            .read(move |conn| load_reservation(conn, &id))
            .await
    }

    async fn stock_level(&self, key: &StockKey) -> Result<Option<StockLevel>> {
        let key = key.clone();
        self.readers.read(move |conn| load_level(conn, &key)).await
    }

    async fn all_stock_levels(&self) -> Result<Vec<StockLevel>> {
        self.readers
            .read(|conn| {
                let mut stmt = conn.prepare(
                    "SELECT sku, location, region, on_hand, reserved, version FROM stock ORDER BY sku, location",
                )?;
                let rows = stmt.query_map([], row_to_level)?;
                rows.map(|r| r?).collect()
            })
            .await
    }

    async fn expire_due(&self, now_ms: i64, limit: usize) -> Result<ExpiryRound> {
        // The partial index `reservations_active_by_expiry` is the timer: the due rows
        // (one more than the limit tells whether the round is full), then the next
        // deadline, both read from the index alone.
        let (due, next) = self
            .readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, expires_at_ms FROM reservations WHERE status = 'active' AND expires_at_ms <= ?1 ORDER BY expires_at_ms LIMIT ?2",
                )?;
                let rows = stmt.query_map(params![now_ms, to_sql_u64(limit as u64 + 1)], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })?;
                let mut due = Vec::with_capacity(limit + 1);
                for row in rows {
                    let (id, at) = row?;
                    let id =
                        ReservationId::parse(id).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    due.push((id, at));
                }
                let next: Option<i64> = conn
                    .prepare_cached(
                        "SELECT MIN(expires_at_ms) FROM reservations WHERE status = 'active' AND expires_at_ms > ?1",
                    )?
                    .query_row([now_ms], |row| row.get(0))?;
                Ok((due, next))
            })
            .await?;
        let mut round = ExpiryRound::default();
        let mut due = due;
        if due.len() > limit {
            due.truncate(limit);
            round.full = true;
        }
        if let Some(at) = next {
            round.note_deadline(at);
        }
        // Concurrent commands share the writer's transactions: a batch per MAX_BATCH. The
        // index is the reservations table itself: nothing to tidy.
        expiry::expire_all(self, due, MAX_BATCH, &mut round, |_, _, found| async {
            found
        })
        .await;
        Ok(round)
    }

    async fn purge(&self, what: Purge, before_ms: i64, limit: usize) -> Result<usize> {
        self.submit(|tx| Job::Purge(what, before_ms, limit, tx))
            .await
    }

    async fn retained(&self) -> Result<Vec<(&'static str, u64)>> {
        self.readers
            .read(|conn| {
                Ok(vec![
                    (
                        "idempotency",
                        count_rows(conn, "SELECT COUNT(*) FROM idempotency")?,
                    ),
                    (
                        "final_reservations",
                        count_rows(
                            conn,
                            "SELECT COUNT(*) FROM reservations WHERE status != 'active'",
                        )?,
                    ),
                ])
            })
            .await
    }

    fn fatal_error(&self) -> Option<String> {
        self.failed.get().cloned()
    }

    async fn check_ready(&self) -> Result<()> {
        if let Some(why) = self.failed.get() {
            return Err(StoreError::Unavailable(why.clone()));
        }
        if self.jobs.is_closed() {
            return Err(StoreError::Unavailable("writer has stopped".into()));
        }
        self.headroom.check()?;
        self.readers
            .read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}

#[async_trait]
impl Outbox for SqliteWriteStore {
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let durable = self.durable_outbox.load(Ordering::Acquire);
        self.readers.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT id, key, payload, created_at_ms FROM outbox WHERE id <= ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![durable, to_sql_u64(limit as u64)], |row| {
                Ok(OutboxEntry {
                    id: row.get::<_, i64>(0)?.to_string(),
                    key: row.get(1)?,
                    payload: row.get(2)?,
                    created_at_ms: row.get(3)?,
                })
            })?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })
        .await
    }

    async fn mark_published(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids
            .iter()
            .map(|id| {
                id.parse::<i64>()
                    .map_err(|_| StoreError::Corrupt(format!("outbox id {id}")))
            })
            .collect::<Result<Vec<i64>>>()?;
        self.submit(|tx| Job::MarkPublished(ids, tx)).await
    }

    async fn backlog(&self) -> Result<u64> {
        self.readers
            .read(|conn| count_rows(conn, "SELECT COUNT(*) FROM outbox"))
            .await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.outbox_tick.clone()
    }
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    flush: std_mpsc::Sender<Committed>,
    /// Restarts the WAL between batches when it grows past its bound; its checkpointer
    /// thread stops with the writer.
    wal: WalKeeper,
    /// Set by the flusher when an fsync failed: nothing more is committed.
    failed: Arc<OnceLock<String>>,
}

/// A committed batch waiting for its fsync.
struct Committed {
    answers: Vec<Pending>,
    /// The outbox sequence after the commit.
    outbox_seq: i64,
}

/// The flusher thread: fsyncs the WAL, then answers and publishes.
struct Flusher {
    wal: File,
    durable_outbox: Arc<AtomicI64>,
    failed: Arc<OnceLock<String>>,
    tick: watch::Sender<u64>,
    faults: Arc<FaultInjection>,
}

impl Flusher {
    fn sync(&self) -> std::io::Result<()> {
        if self.faults.fail_next_fsync.swap(false, Ordering::AcqRel) {
            return Err(std::io::Error::other("injected fsync failure (EIO)"));
        }
        let slow = self.faults.slow_fsync_ms.load(Ordering::Acquire);
        if slow > 0 {
            std::thread::sleep(std::time::Duration::from_millis(slow));
        }
        // fsync is per file, not per descriptor: this covers every frame the writer's
        // connection wrote before the commits returned.
        self.wal.sync_data()
    }

    fn run(self, batches: std_mpsc::Receiver<Committed>) {
        while let Ok(first) = batches.recv() {
            let mut waiting = vec![first];
            waiting.extend(batches.try_iter());
            // Once an fsync has failed, no later fsync proves anything: Linux reports the
            // error once and may then "succeed" over pages it dropped (PostgreSQL's
            // fsyncgate). Every batch after it fails too, and the watermark never moves
            // past it, so nothing reported as failed is ever published.
            if let Some(why) = self.failed.get() {
                for answer in waiting.into_iter().flat_map(|c| c.answers) {
                    answer.fail(why).send();
                }
                continue;
            }
            let started = std::time::Instant::now();
            let synced = self.sync();
            metrics::histogram!("stockflow_wal_fsync_seconds")
                .record(started.elapsed().as_secs_f64());
            match synced {
                Ok(()) => {
                    let seq = waiting.iter().map(|c| c.outbox_seq).max().unwrap_or(0);
                    let before = self.durable_outbox.fetch_max(seq, Ordering::AcqRel);
                    for answer in waiting.into_iter().flat_map(|c| c.answers) {
                        answer.send();
                    }
                    if seq > before {
                        self.tick.send_modify(|n| *n = n.wrapping_add(1));
                    }
                }
                Err(e) => {
                    let why = format!("an fsync of the write-ahead log failed: {e}");
                    tracing::error!(error = %e, "fsync of the write-ahead log failed; refusing writes until restart");
                    metrics::counter!("stockflow_wal_fsync_failures_total").increment(1);
                    let why = self.failed.get_or_init(|| why);
                    for answer in waiting.into_iter().flat_map(|c| c.answers) {
                        answer.fail(why).send();
                    }
                }
            }
        }
    }
}

/// What running a job produced, before it is paired with the job's reply channel.
enum Done {
    Execute(Result<CommandOutcome>),
    Location(Result<Location>),
    Sku(Result<SkuCatalog>),
    Marked(Result<()>),
    Purged(Result<usize>),
}

impl Done {
    /// True for errors that may have left partial writes (SQL failures). Refusals by the
    /// domain or the idempotency check happen before a job writes anything.
    fn is_fatal(&self) -> bool {
        let fatal =
            |e: &StoreError| !matches!(e, StoreError::Domain(_) | StoreError::IdempotencyKeyReused);
        match self {
            Done::Execute(Err(e)) => fatal(e),
            Done::Location(Err(e)) => fatal(e),
            Done::Sku(Err(e)) => fatal(e),
            Done::Marked(Err(e)) => fatal(e),
            Done::Purged(Err(e)) => fatal(e),
            _ => false,
        }
    }

    /// Replaces a success with `err` when the transaction did not commit. A refusal too:
    /// it may have been recorded under its key, and an answer that a retry might not get
    /// again is not given.
    fn fail(self, err: &str) -> Self {
        let unavailable = || StoreError::Unavailable(format!("commit failed: {err}"));
        match self {
            Done::Execute(Ok(_) | Err(StoreError::Domain(_))) => Done::Execute(Err(unavailable())),
            Done::Location(Ok(_)) => Done::Location(Err(unavailable())),
            Done::Sku(Ok(_)) => Done::Sku(Err(unavailable())),
            Done::Marked(Ok(_)) => Done::Marked(Err(unavailable())),
            Done::Purged(Ok(_)) => Done::Purged(Err(unavailable())),
            other => other,
        }
    }
}

/// A job's answer, held until its batch is durable.
struct Pending {
    job: Job,
    done: Done,
}

impl Pending {
    fn fail(self, err: &str) -> Self {
        Pending {
            job: self.job,
            done: self.done.fail(err),
        }
    }

    fn send(self) {
        // A caller that gave up (timeout, disconnect) no longer listens; nothing to do.
        let mismatch = || StoreError::Unavailable("internal: answer of another job kind".into());
        let _ = match (self.job, self.done) {
            (Job::Execute(_, tx), Done::Execute(r)) => tx.send(r).map_err(drop),
            (Job::PutLocation(_, tx), Done::Location(r)) => tx.send(r).map_err(drop),
            (Job::PutSku(_, _, _, tx), Done::Sku(r)) => tx.send(r).map_err(drop),
            (Job::MarkPublished(_, tx), Done::Marked(r)) => tx.send(r).map_err(drop),
            (Job::Purge(.., tx), Done::Purged(r)) => tx.send(r).map_err(drop),
            (Job::Execute(_, tx), _) => tx.send(Err(mismatch())).map_err(drop),
            (Job::PutLocation(_, tx), _) => tx.send(Err(mismatch())).map_err(drop),
            (Job::PutSku(_, _, _, tx), _) => tx.send(Err(mismatch())).map_err(drop),
            (Job::MarkPublished(_, tx), _) => tx.send(Err(mismatch())).map_err(drop),
            (Job::Purge(.., tx), _) => tx.send(Err(mismatch())).map_err(drop),
        };
    }
}

/// Runs one job on `conn` inside the current transaction.
fn run_job(conn: &Connection, job: &Job, now: i64) -> Done {
    match job {
        Job::Execute(req, _) => Done::Execute(execute(conn, req, now)),
        Job::PutLocation(location, _) => Done::Location(put_location(conn, location.clone())),
        Job::PutSku(sku, name, attributes, _) => Done::Sku(put_sku(
            conn,
            sku.clone(),
            name.clone(),
            attributes.clone(),
            now,
        )),
        Job::MarkPublished(ids, _) => Done::Marked(mark_published(conn, ids)),
        Job::Purge(what, before, limit, _) => Done::Purged(purge(conn, *what, *before, *limit)),
    }
}

impl Writer {
    fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if let Some(why) = self.failed.get() {
                for job in batch.drain(..) {
                    refuse(job, why).send();
                }
                continue;
            }
            let size = batch.len();
            let started = std::time::Instant::now();
            let answers = self.commit_batch(batch.drain(..));
            let outbox_seq = self
                .conn
                .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
                .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)).optional())
                .ok()
                .flatten()
                .unwrap_or(0);
            metrics::histogram!("stockflow_write_batch_size").record(size as f64);
            metrics::histogram!("stockflow_write_batch_seconds")
                .record(started.elapsed().as_secs_f64());
            if self
                .flush
                .send(Committed {
                    answers,
                    outbox_seq,
                })
                .is_err()
            {
                tracing::error!("flusher stopped; writer stops");
                return;
            }
            // Between two transactions, so a restart sees no frame arrive while it runs.
            self.wal.after_commit(&self.conn);
        }
    }

    /// Runs a batch in one transaction. Jobs need no savepoints: every refusal happens
    /// before a job writes. If a job fails in a way that may have written part of its
    /// changes, the whole transaction rolls back and each job reruns in its own.
    fn commit_batch(&mut self, jobs: impl Iterator<Item = Job>) -> Vec<Pending> {
        let jobs: Vec<Job> = jobs.collect();
        let now = now_ms();
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => return refuse_all(jobs, &e.to_string()),
        };
        let done: Vec<Done> = jobs.iter().map(|job| run_job(&tx, job, now)).collect();
        if done.iter().any(Done::is_fatal) {
            drop(tx); // rolls back
            return jobs
                .into_iter()
                .map(|job| self.commit_alone(job, now))
                .collect();
        }
        let answers = jobs
            .into_iter()
            .zip(done)
            .map(|(job, done)| Pending { job, done });
        match tx.commit() {
            Ok(()) => answers.collect(),
            Err(e) => {
                let msg = e.to_string();
                tracing::error!(error = %msg, "write transaction failed to commit");
                answers.map(|a| a.fail(&msg)).collect()
            }
        }
    }

    fn commit_alone(&mut self, job: Job, now: i64) -> Pending {
        let tx = match self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
        {
            Ok(tx) => tx,
            Err(e) => return refuse(job, &e.to_string()),
        };
        let done = run_job(&tx, &job, now);
        if done.is_fatal() {
            drop(tx);
            return Pending { job, done };
        }
        match tx.commit() {
            Ok(()) => Pending { job, done },
            Err(e) => Pending { job, done }.fail(&e.to_string()),
        }
    }
}

fn refuse_all(jobs: Vec<Job>, msg: &str) -> Vec<Pending> {
    tracing::error!(error = %msg, "cannot begin write transaction");
    jobs.into_iter().map(|j| refuse(j, msg)).collect()
}

fn refuse(job: Job, msg: &str) -> Pending {
    let err = || StoreError::Unavailable(format!("cannot begin transaction: {msg}"));
    let done = match &job {
        Job::Execute(..) => Done::Execute(Err(err())),
        Job::PutLocation(..) => Done::Location(Err(err())),
        Job::PutSku(..) => Done::Sku(Err(err())),
        Job::MarkPublished(..) => Done::Marked(Err(err())),
        Job::Purge(..) => Done::Purged(Err(err())),
    };
    Pending { job, done }
}
