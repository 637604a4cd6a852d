//! The embedded import store: jobs, checkpoints and refused rows in `imports.db`, a file of
//! its own so an import's bookkeeping never queues behind the write side's group commits.
//! Durable: a checkpoint that went backwards after a power loss would only re-run rows,
//! which their idempotency keys answer from the record.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};

use super::sqlite::{LockedConnection, from_sql_u64, to_sql_u64};
use crate::error::Context;
use crate::ports::{ImportJob, ImportProgress, ImportRowError, ImportStatus, ImportStore};
use crate::{Result, StoreError};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS imports (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    digest TEXT NOT NULL,
    rows_total INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    status TEXT NOT NULL,
    rows_done INTEGER NOT NULL,
    next_byte INTEGER NOT NULL,
    applied INTEGER NOT NULL,
    replayed INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    finished_at_ms INTEGER
);
CREATE TABLE IF NOT EXISTS import_errors (
    import_id TEXT NOT NULL,
    row INTEGER NOT NULL,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (import_id, row)
) WITHOUT ROWID;
"#;

const COLUMNS: &str = "id, owner, digest, rows_total, bytes, status, rows_done, next_byte, \
    applied, replayed, failed, created_at_ms, finished_at_ms";

/// The embedded import store (one connection: a checkpoint every thousand rows or so).
pub struct SqliteImportStore {
    conn: LockedConnection,
}

impl SqliteImportStore {
    /// Opens `path`, creating the schema.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            conn: LockedConnection::open(path, SCHEMA)?,
        })
    }
}

fn job_row(row: &Row<'_>) -> rusqlite::Result<ImportJob> {
    let status: String = row.get(5)?;
    Ok(ImportJob {
        id: row.get(0)?,
        owner: row.get(1)?,
        digest: row.get(2)?,
        rows_total: from_sql_u64(row.get(3)?),
        bytes: from_sql_u64(row.get(4)?),
        // A status this version does not know is left alone rather than resumed.
        status: ImportStatus::parse(&status).unwrap_or(ImportStatus::Done),
        progress: ImportProgress {
            rows_done: from_sql_u64(row.get(6)?),
            next_byte: from_sql_u64(row.get(7)?),
            applied: from_sql_u64(row.get(8)?),
            replayed: from_sql_u64(row.get(9)?),
            failed: from_sql_u64(row.get(10)?),
        },
        created_at_ms: row.get(11)?,
        finished_at_ms: row.get(12)?,
    })
}

#[async_trait]
impl ImportStore for SqliteImportStore {
    async fn create_import(&self, job: &ImportJob) -> Result<()> {
        let p = job.progress;
        self.conn.with(|conn| {
            conn.execute(
                &format!("INSERT INTO imports ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
                params![
                    job.id,
                    job.owner,
                    job.digest,
                    to_sql_u64(job.rows_total),
                    to_sql_u64(job.bytes),
                    job.status.as_str(),
                    to_sql_u64(p.rows_done),
                    to_sql_u64(p.next_byte),
                    to_sql_u64(p.applied),
                    to_sql_u64(p.replayed),
                    to_sql_u64(p.failed),
                    job.created_at_ms,
                    job.finished_at_ms
                ],
            )
            .what("store an import")?;
            Ok(())
        })
    }

    async fn import(&self, id: &str) -> Result<Option<ImportJob>> {
        self.conn.with(|conn| {
            conn.query_row(
                &format!("SELECT {COLUMNS} FROM imports WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()
            .what("read an import")
        })
    }

    async fn unfinished_imports(&self) -> Result<Vec<ImportJob>> {
        self.conn.with(|conn| {
            let mut s = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM imports WHERE status != 'done' ORDER BY created_at_ms, id"
                ))
                .what("list unfinished imports")?;
            s.query_map([], job_row)
                .and_then(|rows| rows.collect())
                .what("list unfinished imports")
        })
    }

    async fn checkpoint_import(
        &self,
        id: &str,
        status: ImportStatus,
        progress: ImportProgress,
        errors: &[ImportRowError],
        finished_at_ms: Option<i64>,
    ) -> Result<()> {
        self.conn.with(|conn| {
            let tx = conn.transaction().what("begin an import checkpoint")?;
            for e in errors {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO import_errors (import_id, row, code, detail) VALUES (?1, ?2, ?3, ?4)",
                )
                .and_then(|mut s| s.execute(params![id, to_sql_u64(e.row), e.code, e.detail]))
                .what("record a refused import row")?;
            }
            let n = tx
                .prepare_cached(
                    "UPDATE imports SET status = ?2, rows_done = ?3, next_byte = ?4, applied = ?5,
                       replayed = ?6, failed = ?7, finished_at_ms = ?8 WHERE id = ?1",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        id,
                        status.as_str(),
                        to_sql_u64(progress.rows_done),
                        to_sql_u64(progress.next_byte),
                        to_sql_u64(progress.applied),
                        to_sql_u64(progress.replayed),
                        to_sql_u64(progress.failed),
                        finished_at_ms
                    ])
                })
                .what("checkpoint an import")?;
            if n == 0 {
                return Err(StoreError::Invariant {
                    what: "checkpoint an import",
                    detail: format!("no import {id}"),
                });
            }
            tx.commit().what("commit an import checkpoint")?;
            Ok(())
        })
    }

    async fn import_errors(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ImportRowError>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.conn.with(|conn| {
            let mut s = conn
                .prepare_cached(
                    "SELECT row, code, detail FROM import_errors WHERE import_id = ?1 AND row > ?2
                       ORDER BY row LIMIT ?3",
                )
                .what("read refused import rows")?;
            s.query_map(params![id, to_sql_u64(after), limit], |r| {
                Ok(ImportRowError {
                    row: from_sql_u64(r.get(0)?),
                    code: r.get(1)?,
                    detail: r.get(2)?,
                })
            })
            .and_then(|rows| rows.collect())
            .what("read refused import rows")
        })
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread")]
    async fn passes_the_import_contract_and_keeps_it_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("imports.db");
        let store = super::SqliteImportStore::open(&path).unwrap();
        crate::contract::imports::run(&store).await;
        drop(store);
        let store = super::SqliteImportStore::open(&path).unwrap();
        let kept = crate::ports::ImportStore::import(&store, "a")
            .await
            .unwrap();
        assert_eq!(kept.map(|j| j.progress.rows_done), Some(4));
    }
}
