//! The embedded event log: the twin of a Fluvio topic in one SQLite file, which keeps each
//! record's headers as a Kafka topic does ([`headers`]).
//!
//! Records are addressed by `(partition, offset)`, offsets are contiguous per partition
//! from 0, and a record's partition comes from [`partition_for_key`], the same function
//! Fluvio's producer uses, so a SKU lives in the same partition on either backend. It
//! implements the bus crate's [`EventLog`] port and passes its contract; it lives here
//! because it shares the SQLite and WAL machinery of the other embedded stores.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};
use stockflow_bus::{BusError, EventLog, LogRecord, NewRecord};
use stockflow_domain::partition_for_key;
use tokio::sync::watch;

mod headers;

use super::sqlite::{
    Durability, ReaderPool, blocking, count_rows, from_sql_u64, open_writer, poisoned, to_sql_u64,
};
use super::wal::{self, WalKeeper, WalPolicy};
use crate::error::Context;
use crate::{Result, StoreError, now_ms};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS log_meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    key TEXT NOT NULL,
    value BLOB NOT NULL,
    timestamp_ms INTEGER NOT NULL,
    headers TEXT,
    PRIMARY KEY (partition, offset)
) WITHOUT ROWID;
"#;

/// Most records returned by one fetch, whatever `max_bytes` allows.
const MAX_FETCH_RECORDS: i64 = 2000;

struct Appender {
    conn: Connection,
    /// Next offset of each partition; only the appender writes, so it can be cached.
    next: Vec<u64>,
}

/// The embedded event log.
pub struct SqliteEventLog {
    partitions: u32,
    /// Random at creation, so offsets stored for another log are never taken for ours.
    identity: i64,
    appender: Mutex<Appender>,
    readers: ReaderPool,
    tick: watch::Sender<u64>,
    wal: WalKeeper,
}

/// The database's name in metrics and logs.
const DB_NAME: &str = "log";

impl SqliteEventLog {
    /// Opens `path` with `partitions` partitions (fixed at creation), checkpointing what a
    /// crashed process left in its WAL.
    pub fn open(path: &Path, partitions: u32, policy: WalPolicy) -> Result<Self> {
        if partitions == 0 {
            return Err(StoreError::Config {
                setting: "partitions",
                reason: "a log needs at least one partition".into(),
            });
        }
        let conn = open_writer(path, SCHEMA, Durability::Durable)?;
        add_headers_column(&conn)?;
        wal::configure_writer(&conn, &policy)?;
        wal::truncate(&conn, DB_NAME)?;
        let stored: u32 = (|| {
            conn.execute(
                "INSERT OR IGNORE INTO log_meta (name, value) VALUES ('partitions', ?1)",
                [partitions],
            )?;
            conn.query_row(
                "SELECT value FROM log_meta WHERE name = 'partitions'",
                [],
                |r| r.get(0),
            )
        })()
        .what("read the log's partition count")?;
        if stored != partitions {
            return Err(StoreError::PartitionsFixed {
                path: path.to_path_buf(),
                stored,
                wanted: partitions,
            });
        }
        let identity: i64 = (|| {
            conn.execute(
                "INSERT OR IGNORE INTO log_meta (name, value) VALUES ('identity', random())",
                [],
            )?;
            conn.query_row(
                "SELECT value FROM log_meta WHERE name = 'identity'",
                [],
                |r| r.get(0),
            )
        })()
        .what("read the log's identity")?;
        let mut next = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let max: Option<i64> = conn
                .query_row(
                    "SELECT max(offset) FROM records WHERE partition = ?1",
                    [p],
                    |r| r.get(0),
                )
                .what("read a partition's last offset")?;
            // A restored backup whose copy of the log was cut keeps the cut's offset as a
            // floor: the read models may have consumed up to it.
            let floor: Option<i64> = conn
                .query_row(
                    "SELECT value FROM log_meta WHERE name = ?1",
                    [format!("floor:{p}")],
                    |r| r.get(0),
                )
                .optional()
                .what("read a partition's floor")?;
            let after_last = max.map_or(0, |m| from_sql_u64(m) + 1);
            next.push(after_last.max(floor.map_or(0, from_sql_u64)));
        }
        Ok(Self {
            partitions,
            identity,
            appender: Mutex::new(Appender { conn, next }),
            readers: ReaderPool::new(path),
            tick: watch::channel(0).0,
            wal: WalKeeper::start(path, DB_NAME, policy, || {
                open_writer(path, SCHEMA, Durability::Durable)
            })?,
        })
    }

    fn append_blocking(&self, records: &[NewRecord]) -> Result<Vec<(u32, u64)>> {
        let mut guard = self.appender.lock().map_err(poisoned)?;
        let Appender { conn, next } = &mut *guard;
        let mut assigned = Vec::with_capacity(records.len());
        let mut advanced = next.clone();
        (|| {
            // Immediate, like every writer here: the write lock is taken (and waited for)
            // at the start, never upgraded from a read.
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO records (partition, offset, key, value, timestamp_ms, headers) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?;
                let now = now_ms();
                for record in records {
                    let partition = partition_for_key(record.key.as_bytes(), self.partitions);
                    let slot = &mut advanced[partition as usize];
                    stmt.execute(params![
                        partition,
                        to_sql_u64(*slot),
                        record.key,
                        record.value,
                        now,
                        headers::encode(&record.headers)
                    ])?;
                    assigned.push((partition, *slot));
                    *slot += 1;
                }
            }
            tx.commit()
        })()
        .what("append records to the log")?;
        // Only after the commit: a failed append must not leave gaps in the offsets.
        *next = advanced;
        self.wal.after_commit(conn);
        Ok(assigned)
    }

    async fn read_records(
        &self,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<Vec<LogRecord>> {
        self.readers
            .read(move |conn| {
                (|| {
                    let mut stmt = conn.prepare_cached(
                        "SELECT offset, key, value, timestamp_ms, headers FROM records
                 WHERE partition = ?1 AND offset >= ?2 ORDER BY offset LIMIT ?3",
                    )?;
                    let mut rows =
                        stmt.query(params![partition, to_sql_u64(offset), MAX_FETCH_RECORDS])?;
                    let mut out = Vec::new();
                    let mut bytes = 0usize;
                    while let Some(row) = rows.next()? {
                        let value: Vec<u8> = row.get(2)?;
                        if !out.is_empty() && bytes + value.len() > max_bytes {
                            break;
                        }
                        bytes += value.len();
                        out.push(LogRecord {
                            partition,
                            offset: from_sql_u64(row.get(0)?),
                            key: row.get(1)?,
                            value,
                            timestamp_ms: row.get(3)?,
                            headers: headers::read(row, 4)?,
                        });
                    }
                    Ok::<_, rusqlite::Error>(out)
                })()
                .what("read log records")
            })
            .await
    }

    /// Removes the records of `partition` below `below` (the lowest offset any consumer
    /// still needs) that were appended before `before_ms`, at most `limit` of them, oldest
    /// first; returns how many. Only a prefix is ever removed, so offsets stay contiguous
    /// from [`EventLog::start_offset`]; a partition's last record is always kept.
    pub fn purge(&self, partition: u32, below: u64, before_ms: i64, limit: usize) -> Result<usize> {
        let guard = self.appender.lock().map_err(poisoned)?;
        // The last record of a partition stays: the next offset is recovered from it at
        // start-up, and must never go back.
        let Some(last) = guard
            .next
            .get(partition as usize)
            .and_then(|next| next.checked_sub(1))
        else {
            return Ok(0);
        };
        let below = below.min(last);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Through the appender's connection, off the async workers: one writer for the
        // whole file.
        let removed = blocking(|| -> rusqlite::Result<usize> {
            // The last offset of the prefix that is both consumed and old enough.
            let upto: Option<i64> = guard.conn.query_row(
                "SELECT MAX(offset) FROM (
                 SELECT offset FROM records WHERE partition = ?1 AND offset < ?2
                 ORDER BY offset LIMIT ?3
             ) AS prefix
             WHERE offset <= COALESCE((
                 SELECT MIN(offset) - 1 FROM records
                 WHERE partition = ?1 AND offset < ?2 AND timestamp_ms >= ?4
             ), ?2)",
                params![partition, to_sql_u64(below), limit, before_ms],
                |r| r.get(0),
            )?;
            let Some(upto) = upto else { return Ok(0) };
            guard.conn.execute(
                "DELETE FROM records WHERE partition = ?1 AND offset <= ?2",
                params![partition, upto],
            )
        })
        .what("purge log records")?;
        self.wal.after_commit(&guard.conn);
        Ok(removed)
    }

    /// How many records the log holds (a metric of what retention keeps).
    pub async fn record_count(&self) -> Result<u64> {
        self.readers
            .read(|conn| count_rows(conn, "SELECT COUNT(*) FROM records"))
            .await
    }

    /// Ticks after appends (tests wait on it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tick.subscribe()
    }
}

fn storage(e: StoreError) -> BusError {
    BusError::Storage {
        retryable: e.retryable(),
        source: Box::new(e),
    }
}

#[async_trait]
impl EventLog for SqliteEventLog {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn identity(&self) -> String {
        format!("embedded:{:016x}", self.identity)
    }

    async fn append(&self, records: Vec<NewRecord>) -> stockflow_bus::Result<Vec<(u32, u64)>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // The commit fsyncs; keep it off the async workers.
        let assigned = blocking(|| self.append_blocking(&records)).map_err(storage)?;
        self.tick.send_modify(|n| *n = n.wrapping_add(1));
        Ok(assigned)
    }

    async fn fetch(
        &self,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> stockflow_bus::Result<Vec<LogRecord>> {
        if partition >= self.partitions {
            return Err(BusError::NoSuchPartition {
                partition,
                partitions: self.partitions,
            });
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut tick = self.tick.subscribe();
        loop {
            // Mark the tick seen before reading, so an append in between wakes us.
            tick.borrow_and_update();
            let records = self
                .read_records(partition, offset, max_bytes)
                .await
                .map_err(storage)?;
            if !records.is_empty() {
                return Ok(records);
            }
            match tokio::time::timeout_at(deadline, tick.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return Ok(Vec::new()),
            }
        }
    }

    async fn end_offset(&self, partition: u32) -> stockflow_bus::Result<u64> {
        let guard = self.appender.lock().map_err(|e| storage(poisoned(e)))?;
        guard
            .next
            .get(partition as usize)
            .copied()
            .ok_or(BusError::NoSuchPartition {
                partition,
                partitions: self.partitions,
            })
    }

    async fn start_offset(&self, partition: u32) -> stockflow_bus::Result<u64> {
        let end = self.end_offset(partition).await?;
        let first: Option<i64> = self
            .readers
            .read(move |conn| {
                conn.query_row(
                    "SELECT MIN(offset) FROM records WHERE partition = ?1",
                    [partition],
                    |r| r.get(0),
                )
                .what("read a partition's first offset")
            })
            .await
            .map_err(storage)?;
        Ok(first.map_or(end, from_sql_u64))
    }

    fn keeps_headers(&self) -> bool {
        true
    }

    async fn check_ready(&self) -> stockflow_bus::Result<()> {
        Ok(())
    }
}

/// Adds the `headers` column to a log made before records kept headers (SQLite has no
/// `ADD COLUMN IF NOT EXISTS`); their records read back with none, as they were written.
pub(in crate::embedded) fn add_headers_column(conn: &Connection) -> Result<()> {
    let present: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('records') WHERE name = 'headers'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .what("read the log's columns")?
        > 0;
    if !present {
        conn.execute_batch("ALTER TABLE records ADD COLUMN headers TEXT")
            .what("add the log's headers column")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
