//! The embedded read side: read models, consumer offsets and the DLQ in one SQLite file.
//!
//! Projection is idempotent and order-tolerant: an event is applied only if its version is
//! newer than the row's, and the region totals move by the difference between the row
//! before and after, so they always equal the sum of the rows whatever order or how often
//! events arrive.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use stockflow_domain::{Actor, BusEvent, CatalogEvent, StockEvent};

use super::sqlite::{
    Durability, ReaderPool, blocking, from_sql_u64, open_writer, poisoned, to_sql_u64,
};
use super::wal::{self, WalKeeper, WalPolicy};
use super::write::FaultInjection;
use crate::ports::{
    Batch, DeadLetter, InventoryRow, Movement, Provenance, ReadStore, RegionAvailability,
    SearchHit, SearchQuery,
};
use crate::{Result, StoreError, now_ms};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS inventory_by_sku_location (
    sku TEXT NOT NULL,
    location TEXT NOT NULL,
    region TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    version INTEGER NOT NULL,
    as_of_ms INTEGER NOT NULL,
    PRIMARY KEY (sku, location)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS availability_by_region (
    sku TEXT NOT NULL,
    region TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    locations INTEGER NOT NULL,
    as_of_ms INTEGER NOT NULL,
    PRIMARY KEY (sku, region)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS search_documents (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    version INTEGER NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS search_index USING fts5 (
    sku UNINDEXED, name, attributes, tokenize = 'unicode61'
);
CREATE TABLE IF NOT EXISTS consumer_offsets (
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (consumer, partition)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS stock_movements (
    sku TEXT NOT NULL,
    location TEXT NOT NULL,
    version INTEGER NOT NULL,
    kind TEXT NOT NULL,
    on_hand INTEGER NOT NULL,
    reserved INTEGER NOT NULL,
    reservation_id TEXT,
    reason TEXT,
    reference TEXT,
    actor_subject TEXT,
    actor_client_id TEXT,
    idempotency_key TEXT,
    occurred_at_ms INTEGER NOT NULL,
    bus_partition INTEGER,
    bus_offset INTEGER,
    projected_at_ms INTEGER,
    projected_by TEXT,
    PRIMARY KEY (sku, location, version)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS stock_movements_by_time ON stock_movements (occurred_at_ms);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    consumer TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at_ms INTEGER NOT NULL
);
"#;

/// The embedded read store.
pub struct SqliteReadStore {
    writer: Mutex<Connection>,
    readers: ReaderPool,
    wal: WalKeeper,
    faults: Arc<FaultInjection>,
}

/// The database's name in metrics and logs.
const DB_NAME: &str = "read";

impl SqliteReadStore {
    /// Opens `path`, creating the schema and checkpointing what a crashed process left in
    /// its WAL.
    pub fn open(path: &Path, policy: WalPolicy) -> Result<Self> {
        Self::open_with_faults(path, policy, Arc::default())
    }

    /// [`SqliteReadStore::open`], with `faults` injected.
    #[doc(hidden)]
    pub fn open_with_faults(
        path: &Path,
        policy: WalPolicy,
        faults: Arc<FaultInjection>,
    ) -> Result<Self> {
        let writer = open_writer(path, SCHEMA, Durability::Rebuildable)?;
        add_missing_columns(&writer)?;
        wal::configure_writer(&writer, &policy)?;
        wal::truncate(&writer, DB_NAME)?;
        Ok(Self {
            writer: Mutex::new(writer),
            readers: ReaderPool::new(path),
            wal: WalKeeper::start(path, DB_NAME, policy, || {
                open_writer(path, SCHEMA, Durability::Rebuildable)
            })?,
            faults,
        })
    }

    fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        blocking(|| {
            let mut conn = self.writer.lock().map_err(poisoned)?;
            // Immediate: a deferred transaction that reads before it writes cannot wait
            // for a checkpoint holding the write lock (SQLite answers SQLITE_BUSY at once,
            // bypassing the busy timeout, to break the deadlock); taking the lock first lets
            // it wait like any writer.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            self.wal.after_commit(&conn);
            Ok(out)
        })
    }
}

fn store_offset(conn: &Connection, consumer: &str, partition: u32, next: u64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO consumer_offsets (consumer, partition, next_offset) VALUES (?1, ?2, ?3)
         ON CONFLICT (consumer, partition) DO UPDATE SET next_offset = excluded.next_offset",
    )?
    .execute(params![consumer, partition, to_sql_u64(next)])?;
    Ok(())
}

/// Records the event in the movement history. Every version once, whatever order the
/// events arrive in: a re-delivered or older event changes nothing.
/// The provenance columns say where the event was read at its latest projection.
fn record_movement(conn: &Connection, e: &StockEvent, from: Option<&Provenance>) -> Result<()> {
    let m = Movement::of(e);
    let (subject, client_id) = match &m.actor {
        Some(a) => (Some(a.subject.as_str()), a.client_id.as_deref()),
        None => (None, None),
    };
    conn.prepare_cached(
        "INSERT INTO stock_movements (sku, location, version, kind, on_hand, reserved,
             reservation_id, reason, reference, actor_subject, actor_client_id, idempotency_key,
             occurred_at_ms, bus_partition, bus_offset, projected_at_ms, projected_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
         ON CONFLICT (sku, location, version) DO UPDATE SET
             bus_partition = coalesce(excluded.bus_partition, bus_partition),
             bus_offset = coalesce(excluded.bus_offset, bus_offset),
             projected_at_ms = coalesce(excluded.projected_at_ms, projected_at_ms),
             projected_by = coalesce(excluded.projected_by, projected_by)",
    )?
    .execute(params![
        m.sku,
        m.location,
        to_sql_u64(m.version),
        m.kind,
        m.on_hand,
        m.reserved,
        m.reservation_id,
        m.reason,
        m.reference,
        subject,
        client_id,
        m.idempotency_key,
        m.occurred_at_ms,
        from.map(|p| p.partition),
        from.map(|p| to_sql_u64(p.offset)),
        from.map(|p| p.projected_at_ms),
        from.map(|p| p.projected_by.as_str()),
    ])?;
    Ok(())
}

fn row_to_movement(r: &rusqlite::Row<'_>) -> rusqlite::Result<Movement> {
    let subject: Option<String> = r.get(9)?;
    let client_id: Option<String> = r.get(10)?;
    Ok(Movement {
        sku: r.get(0)?,
        location: r.get(1)?,
        version: from_sql_u64(r.get(2)?),
        kind: r.get(3)?,
        on_hand: r.get(4)?,
        reserved: r.get(5)?,
        reservation_id: r.get(6)?,
        reason: r.get(7)?,
        reference: r.get(8)?,
        actor: subject.map(|subject| Actor { subject, client_id }),
        idempotency_key: r.get(11)?,
        occurred_at_ms: r.get(12)?,
        projection: match (
            r.get(13)?,
            r.get::<_, Option<i64>>(14)?,
            r.get(15)?,
            r.get(16)?,
        ) {
            (Some(partition), Some(offset), Some(projected_at_ms), Some(projected_by)) => {
                Some(Provenance {
                    partition,
                    offset: from_sql_u64(offset),
                    projected_at_ms,
                    projected_by,
                })
            }
            _ => None,
        },
    })
}

fn apply_stock(conn: &Connection, e: &StockEvent, from: Option<&Provenance>) -> Result<()> {
    e.validate().map_err(StoreError::Corrupt)?;
    record_movement(conn, e, from)?;
    let before: Option<(String, i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT region, on_hand, reserved, version FROM inventory_by_sku_location WHERE sku = ?1 AND location = ?2",
        )?
        .query_row([e.sku.as_str(), e.location.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    if let Some((_, _, _, version)) = &before
        && from_sql_u64(*version) >= e.version
    {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO inventory_by_sku_location (sku, location, region, on_hand, reserved, version, as_of_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (sku, location) DO UPDATE SET region = excluded.region, on_hand = excluded.on_hand,
             reserved = excluded.reserved, version = excluded.version, as_of_ms = excluded.as_of_ms",
    )?
    .execute(params![
        e.sku.as_str(),
        e.location.as_str(),
        e.region.as_str(),
        e.on_hand,
        e.reserved,
        to_sql_u64(e.version),
        e.occurred_at_ms
    ])?;
    let mut totals = conn.prepare_cached(
        "INSERT INTO availability_by_region (sku, region, on_hand, reserved, locations, as_of_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (sku, region) DO UPDATE SET on_hand = on_hand + excluded.on_hand,
             reserved = reserved + excluded.reserved, locations = locations + excluded.locations,
             as_of_ms = max(as_of_ms, excluded.as_of_ms)",
    )?;
    let mut add = |region: &str, on_hand: i64, reserved: i64, locations: i64| {
        totals
            .execute(params![
                e.sku.as_str(),
                region,
                on_hand,
                reserved,
                locations,
                e.occurred_at_ms
            ])
            .map(drop)
    };
    let region = e.region.as_str();
    match before {
        // A location never changes region, but if a stale row says otherwise, move its
        // contribution rather than double-counting it.
        Some((old, on_hand, reserved, _)) if old != region => {
            add(&old, -on_hand, -reserved, -1)?;
            add(region, e.on_hand, e.reserved, 1)?;
        }
        Some((_, on_hand, reserved, _)) => {
            add(region, e.on_hand - on_hand, e.reserved - reserved, 0)?
        }
        None => add(region, e.on_hand, e.reserved, 1)?,
    }
    Ok(())
}

fn apply_catalog(conn: &Connection, e: &CatalogEvent) -> Result<()> {
    let version: Option<i64> = conn
        .prepare_cached("SELECT version FROM search_documents WHERE sku = ?1")?
        .query_row([e.sku.as_str()], |r| r.get(0))
        .optional()?;
    if version.is_some_and(|v| from_sql_u64(v) >= e.version) {
        return Ok(());
    }
    let attributes = serde_json::to_string(&e.attributes)?;
    conn.prepare_cached(
        "INSERT INTO search_documents (sku, name, attributes, version) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (sku) DO UPDATE SET name = excluded.name, attributes = excluded.attributes, version = excluded.version",
    )?
    .execute(params![e.sku.as_str(), e.name, attributes, to_sql_u64(e.version)])?;
    conn.prepare_cached("DELETE FROM search_index WHERE sku = ?1")?
        .execute([e.sku.as_str()])?;
    let text: Vec<&str> = e
        .attributes
        .iter()
        .flat_map(|(k, v)| [k.as_str(), v.as_str()])
        .collect();
    conn.prepare_cached("INSERT INTO search_index (sku, name, attributes) VALUES (?1, ?2, ?3)")?
        .execute(params![e.sku.as_str(), e.name, text.join(" ")])?;
    Ok(())
}

/// Applies `events`; `batch`, when they come from the log, says where each was read.
fn apply_all(conn: &Connection, events: &[BusEvent], batch: Option<&Batch<'_>>) -> Result<()> {
    let now = now_ms();
    for (index, event) in events.iter().enumerate() {
        match event {
            BusEvent::Stock(e) => {
                let from = batch.map(|b| b.provenance(index, now));
                apply_stock(conn, e, from.as_ref())?;
            }
            BusEvent::Catalog(e) => apply_catalog(conn, e)?,
        }
    }
    Ok(())
}

/// Adds the columns later versions introduced to a read database made by an earlier one
/// (SQLite has no `ADD COLUMN IF NOT EXISTS`).
fn add_missing_columns(conn: &Connection) -> Result<()> {
    let present: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('stock_movements')")?
        .query_map([], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    for (column, kind) in [
        ("bus_partition", "INTEGER"),
        ("bus_offset", "INTEGER"),
        ("projected_at_ms", "INTEGER"),
        ("projected_by", "TEXT"),
    ] {
        if !present.iter().any(|p| p == column) {
            conn.execute_batch(&format!(
                "ALTER TABLE stock_movements ADD COLUMN {column} {kind}"
            ))?;
        }
    }
    Ok(())
}

fn row_to_inventory(r: &rusqlite::Row<'_>) -> rusqlite::Result<InventoryRow> {
    let on_hand: i64 = r.get(3)?;
    let reserved: i64 = r.get(4)?;
    Ok(InventoryRow {
        sku: r.get(0)?,
        location: r.get(1)?,
        region: r.get(2)?,
        on_hand,
        reserved,
        available: on_hand - reserved,
        version: from_sql_u64(r.get(5)?),
        as_of_ms: r.get(6)?,
    })
}

const INVENTORY_COLUMNS: &str = "sku, location, region, on_hand, reserved, version, as_of_ms";

/// Turns user text into an FTS5 query: every word must match as a prefix. Only letters
/// and digits survive, so no user input can change the query's syntax.
fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(16)
        .map(|w| format!("\"{w}\"*"))
        .collect();
    (!terms.is_empty()).then(|| terms.join(" "))
}

#[async_trait]
impl ReadStore for SqliteReadStore {
    async fn project(&self, batch: Batch<'_>) -> Result<()> {
        self.faults.stall().await;
        if self.faults.take_projection_fault() {
            return Err(super::write::disk_full());
        }
        self.write(|tx| {
            apply_all(tx, batch.events, Some(&batch))?;
            store_offset(tx, batch.consumer, batch.partition, batch.next_offset())
        })
    }

    async fn replay(&self, events: &[BusEvent]) -> Result<()> {
        self.write(|tx| apply_all(tx, events, None))
    }

    async fn dead_letter(&self, letter: DeadLetter, next_offset: u64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO dead_letters (consumer, partition, offset, key, payload, error, attempts, failed_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                letter.consumer,
                letter.partition,
                to_sql_u64(letter.offset),
                letter.key,
                letter.payload,
                letter.error,
                letter.attempts,
                now_ms()
            ])?;
            store_offset(tx, &letter.consumer, letter.partition, next_offset)
        })
    }

    async fn offset(&self, consumer: &str, partition: u32) -> Result<u64> {
        let consumer = consumer.to_string();
        self.readers.read(move |conn| {
            let offset: Option<i64> = conn
                .prepare_cached(
                    "SELECT next_offset FROM consumer_offsets WHERE consumer = ?1 AND partition = ?2",
                )?
                .query_row(params![consumer, partition], |r| r.get(0))
                .optional()?;
            Ok(offset.map_or(0, from_sql_u64))
        })
        .await
    }

    async fn reset_offset(&self, consumer: &str, partition: u32, offset: u64) -> Result<()> {
        self.write(|tx| store_offset(tx, consumer, partition, offset))
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                "SELECT id, consumer, partition, offset, key, payload, error, attempts, failed_at_ms
                 FROM dead_letters ORDER BY id LIMIT ?1",
            )?;
                let rows = stmt.query_map([to_sql_u64(limit as u64)], |r| {
                    Ok(DeadLetter {
                        id: r.get(0)?,
                        consumer: r.get(1)?,
                        partition: r.get(2)?,
                        offset: from_sql_u64(r.get(3)?),
                        key: r.get(4)?,
                        payload: r.get(5)?,
                        error: r.get(6)?,
                        attempts: r.get(7)?,
                        failed_at_ms: r.get(8)?,
                    })
                })?;
                Ok(rows.collect::<std::result::Result<_, _>>()?)
            })
            .await
    }

    async fn remove_dead_letter(&self, id: i64) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM dead_letters WHERE id = ?1", [id])? == 1))
    }

    async fn purge_dead_letters(&self, before_ms: i64, limit: usize) -> Result<usize> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM dead_letters WHERE id IN (
                     SELECT id FROM dead_letters WHERE failed_at_ms < ?1 ORDER BY id LIMIT ?2)",
                rusqlite::params![before_ms, limit],
            )?)
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
        let limit = to_sql_u64(limit.clamp(1, 1000) as u64);
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT sku, location, version, kind, on_hand, reserved, reservation_id, reason,
                         reference, actor_subject, actor_client_id, idempotency_key, occurred_at_ms,
                         bus_partition, bus_offset, projected_at_ms, projected_by
                     FROM stock_movements WHERE sku = ?1 AND location = ?2 AND version > ?3
                     ORDER BY version LIMIT ?4",
                )?;
                let rows = stmt.query_map(
                    params![sku, location, to_sql_u64(after), limit],
                    row_to_movement,
                )?;
                Ok(rows.collect::<std::result::Result<_, _>>()?)
            })
            .await
    }

    async fn purge_movements(&self, before_ms: i64, limit: usize) -> Result<usize> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.write(|tx| {
            Ok(tx.execute(
                "DELETE FROM stock_movements WHERE (sku, location, version) IN (
                     SELECT sku, location, version FROM stock_movements
                     WHERE occurred_at_ms < ?1 ORDER BY occurred_at_ms LIMIT ?2)",
                rusqlite::params![before_ms, limit],
            )?)
        })
    }

    async fn dead_letter_count(&self) -> Result<u64> {
        self.readers
            .read(|conn| super::sqlite::count_rows(conn, "SELECT COUNT(*) FROM dead_letters"))
            .await
    }

    async fn stock_by_sku(&self, sku: &str) -> Result<Vec<InventoryRow>> {
        let sku = sku.to_string();
        self.readers.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INVENTORY_COLUMNS} FROM inventory_by_sku_location WHERE sku = ?1 ORDER BY location"
            ))?;
            let rows = stmt.query_map([sku], row_to_inventory)?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })
        .await
    }

    async fn stock_at(&self, sku: &str, location: &str) -> Result<Option<InventoryRow>> {
        let (sku, location) = (sku.to_string(), location.to_string());
        self.readers.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {INVENTORY_COLUMNS} FROM inventory_by_sku_location WHERE sku = ?1 AND location = ?2"
                ))?
                .query_row([sku, location], row_to_inventory)
                .optional()?)
        })
        .await
    }

    async fn availability(
        &self,
        sku: &str,
        region: Option<&str>,
    ) -> Result<Vec<RegionAvailability>> {
        let (sku, region) = (sku.to_string(), region.map(str::to_string));
        self.readers.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT sku, region, on_hand, reserved, locations, as_of_ms FROM availability_by_region
                 WHERE sku = ?1 AND (?2 IS NULL OR region = ?2) AND locations > 0 ORDER BY region",
            )?;
            let rows = stmt.query_map(params![sku, region], |r| {
                let on_hand: i64 = r.get(2)?;
                let reserved: i64 = r.get(3)?;
                Ok(RegionAvailability {
                    sku: r.get(0)?,
                    region: r.get(1)?,
                    on_hand,
                    reserved,
                    available: on_hand - reserved,
                    locations: from_sql_u64(r.get(4)?),
                    as_of_ms: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<std::result::Result<_, _>>()?)
        })
        .await
    }

    async fn search(&self, query: &SearchQuery) -> Result<Vec<SearchHit>> {
        let limit = to_sql_u64(query.limit.clamp(1, 200) as u64);
        let fts = fts_query(&query.text);
        let (region, in_stock) = (query.region.clone(), query.in_stock);
        self.readers
            .read(move |conn| {
                let availability =
                    "COALESCE((SELECT SUM(a.on_hand - a.reserved) FROM availability_by_region a
                 WHERE a.sku = d.sku AND (?2 IS NULL OR a.region = ?2)), 0)";
                let sql = match fts {
                    Some(_) => format!(
                        "SELECT d.sku, d.name, d.attributes, {availability} AS available
                     FROM search_index f JOIN search_documents d ON d.sku = f.sku
                     WHERE search_index MATCH ?1 AND (?3 = 0 OR available > 0)
                     ORDER BY f.rank, d.sku LIMIT ?4"
                    ),
                    None => format!(
                        "SELECT d.sku, d.name, d.attributes, {availability} AS available
                     FROM search_documents d WHERE ?1 IS NULL AND (?3 = 0 OR available > 0)
                     ORDER BY d.sku LIMIT ?4"
                    ),
                };
                let mut stmt = conn.prepare_cached(&sql)?;
                let rows = stmt.query_map(params![fts, region, in_stock, limit], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?;
                let mut hits = Vec::new();
                for row in rows {
                    let (sku, name, attributes, available) = row?;
                    let attributes: BTreeMap<String, String> = serde_json::from_str(&attributes)?;
                    hits.push(SearchHit {
                        sku,
                        name,
                        attributes,
                        available,
                    });
                }
                Ok(hits)
            })
            .await
    }

    async fn all_inventory(&self) -> Result<Vec<InventoryRow>> {
        self.readers
            .read(|conn| {
                let mut stmt = conn.prepare(&format!(
                "SELECT {INVENTORY_COLUMNS} FROM inventory_by_sku_location ORDER BY sku, location"
            ))?;
                let rows = stmt.query_map([], row_to_inventory)?;
                Ok(rows.collect::<std::result::Result<_, _>>()?)
            })
            .await
    }

    async fn check_ready(&self) -> Result<()> {
        self.readers
            .read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::fts_query;

    #[test]
    fn fts_query_keeps_only_words() {
        assert_eq!(
            fts_query("red  shoe-42"),
            Some("\"red\"* \"shoe\"* \"42\"*".into())
        );
        assert_eq!(fts_query("\" OR * NEAR("), Some("\"OR\"* \"NEAR\"*".into()));
        assert_eq!(fts_query("  ..  "), None);
    }
}
