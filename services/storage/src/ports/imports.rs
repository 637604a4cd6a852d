//! The port of bulk imports: a job per uploaded file, its progress as a checkpoint, and the
//! rows it refused. The rows themselves stay in the uploaded file; a job resumes from its
//! checkpoint after a restart, and the rows between the checkpoint and the crash run again
//! under the same idempotency keys, so none applies twice.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::Result;

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportStatus {
    /// Waiting for the worker (or for the process to start again).
    Queued,
    /// Rows are being applied.
    Running,
    /// Every row ran: applied, replayed or refused.
    Done,
}

impl ImportStatus {
    /// The name in the API and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ImportStatus::Queued => "queued",
            ImportStatus::Running => "running",
            ImportStatus::Done => "done",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        [Self::Queued, Self::Running, Self::Done]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// How far a job got: what is checkpointed together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportProgress {
    /// Rows done (the next row to run is `rows_done + 1`, rows count from 1).
    pub rows_done: u64,
    /// Where in the file that next row starts.
    pub next_byte: u64,
    /// Rows that changed something.
    pub applied: u64,
    /// Rows whose idempotency key had already run (a re-upload, or rows re-run after a
    /// restart): answered from the record, nothing applied again.
    pub replayed: u64,
    /// Rows refused (invalid, forbidden, or refused by the domain).
    pub failed: u64,
}

/// One import job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportJob {
    /// The job id.
    pub id: String,
    /// Who uploaded it, as the API records it (the rows run as this caller).
    pub owner: String,
    /// SHA-256 of the file, hex: the rows' idempotency keys derive from it.
    pub digest: String,
    /// Rows in the file.
    pub rows_total: u64,
    /// Bytes in the file.
    pub bytes: u64,
    /// Where it is.
    pub status: ImportStatus,
    /// How far it got.
    pub progress: ImportProgress,
    /// When it was uploaded, Unix milliseconds.
    pub created_at_ms: i64,
    /// When it finished, Unix milliseconds.
    pub finished_at_ms: Option<i64>,
}

/// A row the import refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRowError {
    /// The row, counted from 1 (the file's line number).
    pub row: u64,
    /// A problem code, as the API's problem documents name it.
    pub code: String,
    /// What was wrong.
    pub detail: String,
}

/// Import jobs and their checkpoints.
#[async_trait]
pub trait ImportStore: Send + Sync + 'static {
    /// Records a new job.
    async fn create_import(&self, job: &ImportJob) -> Result<()>;
    /// The job `id`, if any.
    async fn import(&self, id: &str) -> Result<Option<ImportJob>>;
    /// Jobs not done, oldest first (what a starting process resumes).
    async fn unfinished_imports(&self) -> Result<Vec<ImportJob>>;
    /// Stores `progress` and the rows refused since the last checkpoint in one step, and
    /// the status; a row recorded twice (re-run after a restart) is kept once.
    async fn checkpoint_import(
        &self,
        id: &str,
        status: ImportStatus,
        progress: ImportProgress,
        errors: &[ImportRowError],
        finished_at_ms: Option<i64>,
    ) -> Result<()>;
    /// At most `limit` refused rows after row `after`, in row order.
    async fn import_errors(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ImportRowError>>;
}

/// Uploaded files kept where every replica of a region reads them, so a job outlives the
/// process that received its file: chunks of [`PAYLOAD_CHUNK_BYTES`], numbered from 0.
/// Only a distributed backend has them; the embedded one keeps files in its data directory.
#[async_trait]
pub trait ImportPayloads: Send + Sync + 'static {
    /// Stores chunk `n` of job `id`'s file.
    async fn put_chunk(&self, id: &str, n: u32, data: &[u8]) -> Result<()>;
    /// Chunk `n` of job `id`'s file (`None`: past its end, or removed).
    async fn chunk(&self, id: &str, n: u32) -> Result<Option<Vec<u8>>>;
    /// Removes the `chunks` chunks of job `id`'s file (its job is done).
    async fn remove_payload(&self, id: &str, chunks: u32) -> Result<()>;
}

/// The size of a stored chunk of an uploaded file (the last one may be shorter).
pub const PAYLOAD_CHUNK_BYTES: usize = 1 << 20;
