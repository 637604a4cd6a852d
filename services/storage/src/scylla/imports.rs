//! Bulk import jobs on ScyllaDB (schema version 16): the job row and its checkpoints, the
//! refused rows by row number, and the uploaded file in chunks, so any command API replica
//! runs a job another received (the worker holds a lease on it while it runs).
//!
//! A checkpoint writes the refused rows first (one partition, one unlogged batch) and the
//! job's progress after: a crash between the two re-runs rows whose refusals are already
//! kept, and the row number keeps each once.

use std::sync::Arc;

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::{DeserializeRow, SerializeRow};

use super::cql::errors::cql;
use super::cql::query;
use super::cql::values::{bigint, int};
use crate::ports::{
    ImportJob, ImportPayloads, ImportProgress, ImportRowError, ImportStatus, ImportStore,
};
use crate::{Result, StoreError};

const JOB_COLUMNS: &str = "id, owner, digest, rows_total, bytes, status, rows_done, next_byte, \
    applied, replayed, failed, created_at_ms, finished_at_ms";

struct Statements {
    create: PreparedStatement,
    get: PreparedStatement,
    all: PreparedStatement,
    checkpoint: PreparedStatement,
    put_error: PreparedStatement,
    errors: PreparedStatement,
    put_chunk: PreparedStatement,
    chunk: PreparedStatement,
    drop_chunk: PreparedStatement,
}

/// [`ImportStore`] and [`ImportPayloads`] over a ScyllaDB keyspace.
pub struct ScyllaImportStore {
    session: Arc<Session>,
    st: Statements,
}

/// A job row (and what a new one is written with).
#[derive(DeserializeRow, SerializeRow)]
struct JobRow {
    id: String,
    owner: Option<String>,
    digest: Option<String>,
    rows_total: Option<i64>,
    bytes: Option<i64>,
    status: Option<String>,
    rows_done: Option<i64>,
    next_byte: Option<i64>,
    applied: Option<i64>,
    replayed: Option<i64>,
    failed: Option<i64>,
    created_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
}

/// A refused row.
#[derive(DeserializeRow)]
struct ErrorRow {
    row: i64,
    code: Option<String>,
    detail: Option<String>,
}

/// A chunk of a file.
#[derive(DeserializeRow)]
struct ChunkRow {
    data: Option<Vec<u8>>,
}

fn big(value: u64) -> Result<i64> {
    bigint("store an import", value)
}

fn small(value: Option<i64>) -> u64 {
    u64::try_from(value.unwrap_or(0)).unwrap_or(0)
}

impl JobRow {
    fn of(job: &ImportJob) -> Result<Self> {
        let p = job.progress;
        Ok(Self {
            id: job.id.clone(),
            owner: Some(job.owner.clone()),
            digest: Some(job.digest.clone()),
            rows_total: Some(big(job.rows_total)?),
            bytes: Some(big(job.bytes)?),
            status: Some(job.status.as_str().to_string()),
            rows_done: Some(big(p.rows_done)?),
            next_byte: Some(big(p.next_byte)?),
            applied: Some(big(p.applied)?),
            replayed: Some(big(p.replayed)?),
            failed: Some(big(p.failed)?),
            created_at_ms: Some(job.created_at_ms),
            finished_at_ms: job.finished_at_ms,
        })
    }

    fn job(self) -> ImportJob {
        ImportJob {
            id: self.id,
            owner: self.owner.unwrap_or_default(),
            digest: self.digest.unwrap_or_default(),
            rows_total: small(self.rows_total),
            bytes: small(self.bytes),
            // A status this version does not know is left alone rather than resumed.
            status: self
                .status
                .as_deref()
                .and_then(ImportStatus::parse)
                .unwrap_or(ImportStatus::Done),
            progress: ImportProgress {
                rows_done: small(self.rows_done),
                next_byte: small(self.next_byte),
                applied: small(self.applied),
                replayed: small(self.replayed),
                failed: small(self.failed),
            },
            created_at_ms: self.created_at_ms.unwrap_or(0),
            finished_at_ms: self.finished_at_ms,
        }
    }
}

impl ScyllaImportStore {
    /// Prepares the statements.
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self> {
        let ks = keyspace;
        let s = &session;
        let p = |cql: String| query::prepare(s, cql);
        let marks = JOB_COLUMNS
            .split(", ")
            .map(|c| format!(":{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let st = Statements {
            create: p(format!("INSERT INTO {ks}.import_jobs ({JOB_COLUMNS}) VALUES ({marks})")).await?,
            get: p(format!("SELECT {JOB_COLUMNS} FROM {ks}.import_jobs WHERE id = ?")).await?,
            all: p(format!("SELECT {JOB_COLUMNS} FROM {ks}.import_jobs")).await?,
            checkpoint: p(format!("UPDATE {ks}.import_jobs SET status = ?, rows_done = ?, next_byte = ?, applied = ?, replayed = ?, failed = ?, finished_at_ms = ? WHERE id = ? IF EXISTS")).await?,
            put_error: p(format!("INSERT INTO {ks}.import_errors (import_id, row, code, detail) VALUES (?, ?, ?, ?)")).await?,
            errors: p(format!("SELECT row, code, detail FROM {ks}.import_errors WHERE import_id = ? AND row > ? LIMIT ?")).await?,
            put_chunk: p(format!("INSERT INTO {ks}.import_payloads (import_id, chunk, data) VALUES (?, ?, ?)")).await?,
            chunk: p(format!("SELECT data FROM {ks}.import_payloads WHERE import_id = ? AND chunk = ?")).await?,
            drop_chunk: p(format!("DELETE FROM {ks}.import_payloads WHERE import_id = ? AND chunk = ?")).await?,
        };
        Ok(Self { session, st })
    }
}

fn chunk_no(n: u32) -> Result<i32> {
    int("store an import's file chunk", n)
}

#[async_trait]
impl ImportStore for ScyllaImportStore {
    async fn create_import(&self, job: &ImportJob) -> Result<()> {
        query::exec(
            &self.session,
            "store an import",
            &self.st.create,
            JobRow::of(job)?,
        )
        .await
    }

    async fn import(&self, id: &str) -> Result<Option<ImportJob>> {
        let row: Option<JobRow> =
            query::first(&self.session, "read an import", &self.st.get, (id,)).await?;
        Ok(row.map(JobRow::job))
    }

    async fn unfinished_imports(&self) -> Result<Vec<ImportJob>> {
        let rows: Vec<JobRow> = query::scan(&self.session, "list imports", &self.st.all).await?;
        let mut jobs: Vec<ImportJob> = rows
            .into_iter()
            .map(JobRow::job)
            .filter(|j| j.status != ImportStatus::Done)
            .collect();
        jobs.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(jobs)
    }

    async fn checkpoint_import(
        &self,
        id: &str,
        status: ImportStatus,
        progress: ImportProgress,
        errors: &[ImportRowError],
        finished_at_ms: Option<i64>,
    ) -> Result<()> {
        if !errors.is_empty() {
            let mut batch = Batch::new(BatchType::Unlogged);
            let mut values = Vec::with_capacity(errors.len());
            for e in errors {
                batch.append_statement(self.st.put_error.clone());
                values.push((id, big(e.row)?, e.code.as_str(), e.detail.as_str()));
            }
            self.session
                .batch(&batch, values)
                .await
                .map_err(cql("record refused import rows"))?;
        }
        let values = (
            status.as_str(),
            big(progress.rows_done)?,
            big(progress.next_byte)?,
            big(progress.applied)?,
            big(progress.replayed)?,
            big(progress.failed)?,
            finished_at_ms,
            id,
        );
        let applied = query::lwt(
            &self.session,
            "checkpoint an import",
            &self.st.checkpoint,
            values,
        )
        .await?
        .applied;
        if !applied {
            return Err(StoreError::Invariant {
                what: "checkpoint an import",
                detail: format!("no import {id}"),
            });
        }
        Ok(())
    }

    async fn import_errors(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ImportRowError>> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows: Vec<ErrorRow> = query::rows(
            &self.session,
            "read refused import rows",
            &self.st.errors,
            (id, big(after)?, limit),
        )
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| ImportRowError {
                row: small(Some(r.row)),
                code: r.code.unwrap_or_default(),
                detail: r.detail.unwrap_or_default(),
            })
            .collect())
    }
}

#[async_trait]
impl ImportPayloads for ScyllaImportStore {
    async fn put_chunk(&self, id: &str, n: u32, data: &[u8]) -> Result<()> {
        let values = (id, chunk_no(n)?, data);
        query::exec(
            &self.session,
            "store an import's file",
            &self.st.put_chunk,
            values,
        )
        .await
    }

    async fn chunk(&self, id: &str, n: u32) -> Result<Option<Vec<u8>>> {
        let row: Option<ChunkRow> = query::first(
            &self.session,
            "read an import's file",
            &self.st.chunk,
            (id, chunk_no(n)?),
        )
        .await?;
        Ok(row.and_then(|r| r.data))
    }

    async fn remove_payload(&self, id: &str, chunks: u32) -> Result<()> {
        for n in 0..chunks {
            let values = (id, chunk_no(n)?);
            query::exec(
                &self.session,
                "remove an import's file",
                &self.st.drop_chunk,
                values,
            )
            .await?;
        }
        Ok(())
    }
}
