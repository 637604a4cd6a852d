//! The embedded read side: read models, consumer offsets and the DLQ in one SQLite file.
//!
//! What a projection writes is built by the domain ([`project`]); reads are typed rows
//! ([`queries`]); the schema is [`schema`]'s. Offsets commit in the same transaction as
//! the rows they cover, and the batches of every partition waiting commit together
//! ([`group`]).

mod changes;
mod group;
mod project;
mod queries;
mod schema;

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use stockflow_domain::BusEvent;

use super::faults::FaultInjection;
use super::sqlite::{
    Durability, ReaderPool, blocking, count_rows, from_sql_u64, open_writer, poisoned, to_sql_u64,
};
use super::wal::{self, WalKeeper, WalPolicy};
use crate::error::Context;
use crate::ports::{
    Batch, ChangeSnapshot, Changes, ConsumerOffset, DeadLetter, ExportChunk, InventoryRow,
    Movement, ReadStore, RegionAvailability, SearchHit, SearchQuery,
};
use crate::{Result, now_ms};
use group::GroupCommit;
use schema::{SCHEMA, add_missing_columns, movements_as_rowid_table};

/// The database's name in metrics and logs.
const DB_NAME: &str = "read";
/// Most movements one page returns: a page of audit history, not a dump.
const MAX_MOVEMENTS_PAGE: usize = 1000;
/// Most rows one page of the change feed returns.
const MAX_CHANGES_PAGE: usize = 1000;
/// Most hits one search returns.
const MAX_SEARCH_HITS: usize = 200;

/// The embedded read store.
pub struct SqliteReadStore {
    // First, so the projection thread has stopped before the connection it uses closes.
    projections: GroupCommit,
    writer: Arc<ReadWriter>,
    readers: ReaderPool,
    faults: Arc<FaultInjection>,
}

/// The read database's one writing connection, shared by the projection thread and the
/// store's other writes.
struct ReadWriter {
    conn: Mutex<Connection>,
    wal: WalKeeper,
}

impl ReadWriter {
    /// Runs `f` in one transaction on the calling thread.
    fn transact<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(poisoned)?;
        // Immediate: a deferred transaction that reads before it writes cannot wait
        // for a checkpoint holding the write lock (SQLite answers SQLITE_BUSY at once,
        // bypassing the busy timeout, to break the deadlock); taking the lock first lets
        // it wait like any writer.
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .what("begin a read-model transaction")?;
        let out = f(&tx)?;
        tx.commit().what("commit a read-model transaction")?;
        self.wal.after_commit(&conn);
        Ok(out)
    }
}

impl SqliteReadStore {
    /// Opens `path`, creating the schema and checkpointing what a crashed process left in
    /// its WAL.
    pub fn open(path: &Path, policy: WalPolicy) -> Result<Self> {
        Self::open_with_faults(path, policy, Arc::default())
    }

    /// [`SqliteReadStore::open`], with `faults` injected (inert without the `test-hooks`
    /// feature).
    pub fn open_with_faults(
        path: &Path,
        policy: WalPolicy,
        faults: Arc<FaultInjection>,
    ) -> Result<Self> {
        let writer = open_writer(path, SCHEMA, Durability::Rebuildable)?;
        add_missing_columns(&writer)?;
        movements_as_rowid_table(&writer)?;
        writer
            .execute_batch(changes::SCHEMA)
            .what("create the change feed")?;
        wal::configure_writer(&writer, &policy)?;
        wal::truncate(&writer, DB_NAME)?;
        let writer = Arc::new(ReadWriter {
            conn: Mutex::new(writer),
            wal: WalKeeper::start(path, DB_NAME, policy, || {
                open_writer(path, SCHEMA, Durability::Rebuildable)
            })?,
        });
        Ok(Self {
            projections: GroupCommit::start(writer.clone())?,
            writer,
            readers: ReaderPool::new(path),
            faults,
        })
    }

    /// Runs `f` in one transaction, off the runtime's worker.
    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        blocking(|| self.writer.transact(f))
    }
}

fn store_offset(conn: &Connection, consumer: &str, partition: u32, next: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO consumer_offsets (consumer, partition, next_offset) VALUES (?1, ?2, ?3)
         ON CONFLICT (consumer, partition) DO UPDATE SET next_offset = excluded.next_offset",
    )
    .and_then(|mut s| s.execute(params![consumer, partition, to_sql_u64(next)]))
    .what("store a consumer offset")?;
    Ok(())
}

#[async_trait]
impl ReadStore for SqliteReadStore {
    async fn project(&self, batch: Batch<'_>) -> Result<()> {
        self.faults.stall().await;
        if self.faults.take_projection_fault() {
            return Err(FaultInjection::disk_full());
        }
        self.projections.project(&batch).await
    }

    async fn replay(&self, events: &[BusEvent]) -> Result<()> {
        self.write(|tx| project::apply_all(tx, events, None))
    }

    async fn clear_stock_views(&self) -> Result<()> {
        self.write(|tx| project::clear_stock_views(tx))
    }

    async fn restore_stock(&self, rows: &[InventoryRow]) -> Result<()> {
        self.write(|tx| project::restore_rows(tx, rows))
    }

    async fn dead_letter(&self, letter: DeadLetter, next_offset: u64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO dead_letters (consumer, partition, offset, key, payload, error, attempts, failed_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    letter.consumer,
                    letter.partition,
                    to_sql_u64(letter.offset),
                    letter.key,
                    letter.payload,
                    letter.error,
                    letter.attempts,
                    now_ms()
                ])
            })
            .what("write a dead letter")?;
            store_offset(tx, &letter.consumer, letter.partition, next_offset)
        })
    }

    async fn offset(&self, consumer: &str, partition: u32) -> Result<u64> {
        let consumer = consumer.to_string();
        self.readers
            .read(move |conn| {
                let offset: Option<i64> = conn
                    .prepare_cached(
                        "SELECT next_offset FROM consumer_offsets WHERE consumer = ?1 AND partition = ?2",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![consumer, partition], |r| r.get(0))
                            .optional()
                    })
                    .what("read a consumer offset")?;
                Ok(offset.map_or(0, from_sql_u64))
            })
            .await
    }

    async fn reset_offset(&self, consumer: &str, partition: u32, offset: u64) -> Result<()> {
        self.write(|tx| store_offset(tx, consumer, partition, offset))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.readers
            .read(move |conn| queries::dead_letters(conn, limit))
            .await
    }

    async fn remove_dead_letter(&self, id: i64) -> Result<bool> {
        self.write(|tx| {
            let removed = tx
                .execute("DELETE FROM dead_letters WHERE id = ?1", [id])
                .what("remove a dead letter")?;
            Ok(removed == 1)
        })
    }

    async fn purge_dead_letters(&self, before_ms: i64, limit: usize) -> Result<usize> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(|tx| {
            tx.execute(
                "DELETE FROM dead_letters WHERE id IN (
                     SELECT id FROM dead_letters WHERE failed_at_ms < ?1 ORDER BY id LIMIT ?2)",
                params![before_ms, limit],
            )
            .what("purge dead letters")
        })
    }

    async fn movements(
        &self,
        sku: &str,
        location: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Movement>> {
        let (sku, location) = (sku.to_string(), location.to_string());
        let limit = to_sql_u64(limit.clamp(1, MAX_MOVEMENTS_PAGE) as u64);
        self.readers
            .read(move |conn| queries::movements(conn, &sku, &location, after, limit))
            .await
    }

    async fn purge_movements(&self, before_ms: i64, limit: usize) -> Result<usize> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(|tx| {
            tx.execute(
                "DELETE FROM stock_movements WHERE (sku, location, version) IN (
                     SELECT sku, location, version FROM stock_movements
                     WHERE occurred_at_ms < ?1 ORDER BY occurred_at_ms LIMIT ?2)",
                params![before_ms, limit],
            )
            .what("purge movements")
        })
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        self.readers
            .read(|conn| count_rows(conn, "SELECT COUNT(*) FROM dead_letters"))
            .await
    }

    async fn stock_by_sku(&self, sku: &str) -> Result<Vec<InventoryRow>> {
        let sku = sku.to_string();
        self.readers
            .read(move |conn| queries::inventory(conn, "WHERE sku = ?1", [sku]))
            .await
    }

    async fn stock_at(&self, sku: &str, location: &str) -> Result<Option<InventoryRow>> {
        let (sku, location) = (sku.to_string(), location.to_string());
        self.readers
            .read(move |conn| {
                let rows =
                    queries::inventory(conn, "WHERE sku = ?1 AND location = ?2", [sku, location])?;
                Ok(rows.into_iter().next())
            })
            .await
    }

    async fn availability(
        &self,
        sku: &str,
        region: Option<&str>,
    ) -> Result<Vec<RegionAvailability>> {
        let (sku, region) = (sku.to_string(), region.map(str::to_string));
        self.readers
            .read(move |conn| queries::availability(conn, &sku, region.as_deref()))
            .await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        let limit = query.limit.clamp(1, MAX_SEARCH_HITS);
        let query = query.clone();
        self.readers
            .read(move |conn| queries::search(conn, &query, limit))
            .await
    }

    async fn all_inventory(&self) -> Result<Vec<InventoryRow>> {
        self.readers
            .read(|conn| queries::inventory(conn, "", []))
            .await
    }

    async fn consumer_offsets(&self) -> Result<Vec<ConsumerOffset>> {
        self.readers.read(queries::consumer_offsets).await
    }

    async fn export_stock(
        &self,
        region: Option<String>,
        sink: tokio::sync::mpsc::Sender<ExportChunk>,
    ) -> Result<()> {
        self.readers
            .read(move |conn| queries::export_stock(conn, region.as_deref(), &sink))
            .await
    }

    async fn changes(
        &self,
        locations: &[String],
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Changes> {
        let locations = locations.to_vec();
        let cursor = cursor.map(str::to_string);
        let limit = limit.clamp(1, MAX_CHANGES_PAGE);
        self.readers
            .read(move |conn| changes::page(conn, &locations, cursor.as_deref(), limit))
            .await
    }

    async fn change_snapshot(&self, locations: &[String]) -> Result<ChangeSnapshot> {
        let locations = locations.to_vec();
        self.readers
            .read(move |conn| changes::snapshot(conn, &locations))
            .await
    }

    async fn purge_changes(&self, before_ms: i64, limit: usize) -> Result<usize> {
        self.write(|tx| changes::purge(tx, before_ms, limit))
    }

    async fn check_ready(&self) -> Result<()> {
        self.projections.check_running()?;
        self.readers
            .read(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .what("probe the read database")
            })
            .await
    }
}
