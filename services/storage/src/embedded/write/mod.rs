//! The embedded write side: one writer thread, group commit, transactional outbox.
//!
//! Every mutation is a job ([`jobs`]) sent to the writer thread ([`writer`]), which
//! commits many per transaction; a reply means the stock row, reservation, outbox entries
//! and idempotency record of that command are on disk together. Reads go to a pool of
//! reader connections. What a command does inside the transaction is [`command`]'s; the
//! rows themselves are [`rows`]'s; the schema and the statements that name a status,
//! [`schema`]'s.

mod command;
mod jobs;
mod records;
mod rows;
mod schema;
mod writer;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::thread;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};
use stockflow_domain::sourcing::Bundle;
use stockflow_domain::{
    Answer, Channel, ChannelId, Location, LocationId, Reservation, ReservationId, Sku, SkuCatalog,
    StockKey, StockLevel, Transfer, TransferId,
};
use tokio::sync::{mpsc, oneshot, watch};

use super::disk::Headroom;
use super::faults::FaultInjection;
use super::sqlite::{Durability, ReaderPool, count_rows, open_writer, to_sql_u64};
use super::wal::{self, WalKeeper, WalPolicy};
use crate::error::Context;
use crate::expiry_rounds;
use crate::ports::{CommandRequest, Executed, ExpiryRound, Outbox, OutboxEntry, Purge, WriteStore};
use crate::{Result, StoreError};
use jobs::{Job, Reply};
use schema::SQL;
use writer::{Flusher, MAX_BATCH, Writer};

/// Jobs that may wait for the writer before callers are told to back off: 16 full batches,
/// a few hundred milliseconds of work.
const QUEUE_DEPTH: usize = 8192;
/// The database's name in metrics and logs.
const DB_NAME: &str = "write";

/// The embedded write store. Cheap to share behind an `Arc`.
pub struct SqliteWriteStore {
    jobs: mpsc::Sender<Job>,
    readers: ReaderPool,
    outbox_tick: watch::Receiver<u64>,
    /// Highest outbox id known to be on disk; the publisher reads no further.
    durable_outbox: Arc<AtomicI64>,
    /// Set when an fsync failed: the file's state on disk is unknown, so stop taking work.
    failed: Arc<OnceLock<Arc<StoreError>>>,
    /// Free space the data directory keeps to report ready.
    headroom: Headroom,
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

    /// [`SqliteWriteStore::open`], with `faults` injected (inert without the `test-hooks`
    /// feature).
    pub fn open_with_faults(
        path: &Path,
        policy: WalPolicy,
        faults: Arc<FaultInjection>,
    ) -> Result<Self> {
        // Commits only write the WAL; the flusher's fsync makes them durable before anyone
        // is answered, and the WAL keeper (not the commit path) checkpoints.
        let conn = open_writer(path, &SQL.schema, Durability::Rebuildable)?;
        schema::migrate(&conn)?;
        wal::configure_writer(&conn, &policy)?;
        wal::truncate(&conn, DB_NAME)?;
        let wal_file = File::open(wal::wal_path(path)).what("open the write-ahead log")?;
        let seq: Option<i64> = conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox'",
                [],
                |r| r.get(0),
            )
            .optional()
            .what("read the outbox sequence")?;
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
            open_writer(path, &SQL.schema, Durability::Durable)
        })?;
        let writer = Writer {
            conn,
            flush: flush_tx,
            wal: keeper,
            failed: failed.clone(),
        };
        thread::Builder::new()
            .name("stockflow-flush".into())
            .spawn(move || flusher.run(flush_rx))
            .what("start the flusher thread")?;
        thread::Builder::new()
            .name("stockflow-writer".into())
            .spawn(move || writer.run(rx))
            .what("start the writer thread")?;
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
            return Err(StoreError::Shared(why.clone()));
        }
        let (tx, rx) = oneshot::channel();
        self.jobs.try_send(job(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => StoreError::QueueFull {
                queue: "the write queue",
            },
            mpsc::error::TrySendError::Closed(_) => StoreError::Stopped {
                worker: "the writer",
            },
        })?;
        rx.await.map_err(|_| StoreError::Stopped {
            worker: "the writer (before answering)",
        })?
    }
}

#[async_trait]
impl WriteStore for SqliteWriteStore {
    async fn execute(&self, request: CommandRequest) -> Result<Executed> {
        self.submit(|tx| Job::Execute(Box::new(request), tx)).await
    }

    async fn put_location(&self, location: Location) -> Result<Answer<Location>> {
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
            .read(move |conn| rows::load_location(conn, &id))
            .await
    }

    async fn put_channel(&self, channel: Channel) -> Result<Channel> {
        self.submit(|tx| Job::PutChannel(channel, tx)).await
    }

    async fn channel(&self, id: &ChannelId) -> Result<Option<Channel>> {
        let id = id.clone();
        self.readers
            .read(move |conn| rows::load_definition(conn, "channels", id.as_str()))
            .await
    }

    async fn put_bundle(&self, bundle: Bundle) -> Result<Bundle> {
        self.submit(|tx| Job::PutBundle(bundle, tx)).await
    }

    async fn bundles(&self) -> Result<Vec<Bundle>> {
        self.readers
            .read(|conn| rows::load_definitions(conn, "bundles"))
            .await
    }

    async fn reservation(&self, id: &ReservationId) -> Result<Option<Reservation>> {
        let id = id.clone();
        self.readers
            .read(move |conn| rows::load_reservation(conn, &id))
            .await
    }

    async fn transfer(&self, id: &TransferId) -> Result<Option<Transfer>> {
        let id = id.clone();
        self.readers
            .read(move |conn| records::load_transfer(conn, &id))
            .await
    }

    async fn stock_level(&self, key: &StockKey) -> Result<Option<StockLevel>> {
        let key = key.clone();
        self.readers
            .read(move |conn| {
                rows::load_level(conn, &key)?
                    .map(|level| records::attach_sku_policy(conn, level))
                    .transpose()
            })
            .await
    }

    async fn all_stock_levels(&self) -> Result<Vec<StockLevel>> {
        self.readers.read(rows::all_levels).await
    }

    async fn all_skus(&self) -> Result<Vec<SkuCatalog>> {
        self.readers.read(rows::all_skus).await
    }

    async fn expire_due(&self, now_ms: i64, limit: usize) -> Result<ExpiryRound> {
        // The partial index `reservations_active_by_expiry` is the timer: the due rows
        // (one more than the limit tells whether the round is full), then the next
        // deadline, both read from the index alone.
        let (due, next) = self
            .readers
            .read(move |conn| {
                let rows: Vec<(String, i64)> = conn
                    .prepare_cached(&SQL.due)
                    .and_then(|mut s| {
                        s.query_map(params![now_ms, to_sql_u64(limit as u64 + 1)], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })?
                        .collect()
                    })
                    .what("scan due reservations")?;
                let due = rows
                    .into_iter()
                    .map(|(id, at)| {
                        ReservationId::parse(id)
                            .map(|id| (id, at))
                            .map_err(StoreError::corrupt("reservation id"))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let next: Option<i64> = conn
                    .prepare_cached(&SQL.next_deadline)
                    .and_then(|mut s| s.query_row([now_ms], |row| row.get(0)))
                    .what("read the next deadline")?;
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
        expiry_rounds::expire_all(self, due, MAX_BATCH, &mut round, |_, _, found| async {
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
                    ("final_reservations", count_rows(conn, &SQL.count_final)?),
                ])
            })
            .await
    }

    fn fatal_error(&self) -> Option<String> {
        self.failed.get().map(ToString::to_string)
    }

    async fn check_ready(&self) -> Result<()> {
        if let Some(why) = self.failed.get() {
            return Err(StoreError::Shared(why.clone()));
        }
        if self.jobs.is_closed() {
            return Err(StoreError::Stopped {
                worker: "the writer",
            });
        }
        self.headroom.check()?;
        self.readers
            .read(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .what("probe the write database")
            })
            .await
    }
}

#[async_trait]
impl Outbox for SqliteWriteStore {
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>> {
        let durable = self.durable_outbox.load(Ordering::Acquire);
        self.readers
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT id, key, payload, created_at_ms FROM outbox WHERE id <= ?1 ORDER BY id LIMIT ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![durable, to_sql_u64(limit as u64)], |row| {
                        Ok(OutboxEntry {
                            id: row.get::<_, i64>(0)?.to_string(),
                            key: row.get(1)?,
                            payload: row.get(2)?,
                            created_at_ms: row.get(3)?,
                        })
                    })?
                    .collect()
                })
                .what("read pending outbox entries")
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
                    .map_err(|_| StoreError::unknown("outbox id", id.as_str()))
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
