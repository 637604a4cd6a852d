//! Bulk imports: an NDJSON file of counts, adjustments, SKUs and locations, uploaded once
//! (`POST /v1/imports`), kept on disk, and applied row by row through the command path by
//! a worker of the process that received it ([`worker`]), at a bounded rate so checkout
//! traffic keeps its latency. The job's checkpoint and its refused rows are in the
//! [`ImportStore`]; the rows ([`rows`]) carry idempotency keys, so a restart that re-runs
//! rows after the last checkpoint, or the same file uploaded again, applies nothing twice.

pub mod rows;
pub mod shared;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use stockflow_domain::ScopedKey;
use stockflow_storage::ports::{ImportJob, ImportProgress, ImportStatus, ImportStore};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use crate::auth::{Identity, StoredIdentity};
use crate::error::{ApiError, ApiResult};

/// The largest file one import takes (a million rows is about 100 MiB).
pub const MAX_IMPORT_BYTES: u64 = 1 << 30;

/// How an import runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportSettings {
    /// Rows applied per second at most, over every job of the process.
    pub rows_per_second: u32,
}

impl Default for ImportSettings {
    fn default() -> Self {
        Self {
            rows_per_second: 2_000,
        }
    }
}

/// The imports of one process: where their files are, their store, and the worker's
/// doorbell; and in a region of several command API replicas, the files kept in the
/// keyspace and the jobs' leases ([`shared`]).
pub struct Imports {
    store: Arc<dyn ImportStore>,
    dir: PathBuf,
    wake: Notify,
    settings: ImportSettings,
    shared: Option<shared::Shared>,
}

/// What an upload came to: a new job, or the one an earlier upload with the same
/// Idempotency-Key made.
pub struct Received {
    /// The job.
    pub job: ImportJob,
    /// Whether the job was made by an earlier upload.
    pub replayed: bool,
}

impl Imports {
    /// Imports over `store`, their files in `dir` (created if missing), shared with the
    /// region's other replicas through `shared` if any.
    pub fn open(
        store: Arc<dyn ImportStore>,
        dir: PathBuf,
        settings: ImportSettings,
        shared: Option<shared::Shared>,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        // Uploads a crash cut short: no job names them, and a retry writes a new one.
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "partial") {
                let _ = std::fs::remove_file(&path);
            }
        }
        Ok(Self {
            store,
            dir,
            wake: Notify::new(),
            settings,
            shared,
        })
    }

    /// The store of jobs.
    pub fn store(&self) -> &dyn ImportStore {
        &*self.store
    }

    /// The settings.
    pub fn settings(&self) -> ImportSettings {
        self.settings
    }

    /// The shared half, in a region of several replicas.
    pub fn shared(&self) -> Option<&shared::Shared> {
        self.shared.as_ref()
    }

    /// Where job `id`'s rows are.
    pub fn payload(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.ndjson"))
    }

    /// Writes `body` to disk and queues it as a job of `owner`'s, under `key` (the job id
    /// derives from it, so a retried upload answers the job the first one made).
    pub async fn receive(
        &self,
        owner: &Identity,
        key: &ScopedKey,
        body: Body,
    ) -> ApiResult<Received> {
        let id = job_id(key);
        let partial = self
            .dir
            .join(format!("{id}.{}.partial", uuid::Uuid::now_v7().simple()));
        let written = write_body(&partial, body).await;
        let (digest, bytes, rows) = match written {
            Ok(done) => done,
            Err(e) => {
                let _ = tokio::fs::remove_file(&partial).await;
                return Err(e);
            }
        };
        if let Some(job) = self.store.import(&id).await? {
            let _ = tokio::fs::remove_file(&partial).await;
            if job.digest != digest {
                return Err(stockflow_domain::Refusal::IdempotencyKeyReused.into());
            }
            return Ok(Received {
                job,
                replayed: true,
            });
        }
        if rows == 0 {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(stockflow_domain::ValidationError::conflict(
                "body",
                "an import holds at least one row (NDJSON: one JSON object per line)",
            )
            .into());
        }
        tokio::fs::rename(&partial, self.payload(&id))
            .await
            .map_err(io_error("write an import file"))?;
        sync_dir(&self.dir).await;
        if let Some(shared) = &self.shared {
            // Before the job exists: any replica that sees the job finds its file.
            shared.upload(&id, &self.payload(&id)).await?;
        }
        let owner = serde_json::to_string(&owner.to_stored())
            .map_err(|e| ApiError::Internal(format!("cannot record the uploader: {e}")))?;
        let job = ImportJob {
            id,
            owner,
            digest,
            rows_total: rows,
            bytes,
            status: ImportStatus::Queued,
            progress: ImportProgress::default(),
            created_at_ms: stockflow_storage::now_ms(),
            finished_at_ms: None,
        };
        self.store.create_import(&job).await?;
        metrics::counter!("stockflow_imports_total").increment(1);
        self.wake.notify_one();
        Ok(Received {
            job,
            replayed: false,
        })
    }

    /// The job `id` if `caller` uploaded it (anyone else is told there is none).
    pub async fn job_of(&self, caller: &Identity, id: &str) -> ApiResult<ImportJob> {
        let missing = || ApiError::NotFound(format!("no import {id}"));
        let job = self.store.import(id).await?.ok_or_else(missing)?;
        let owner = owner_of(&job).ok_or_else(missing)?;
        if !owner.same_caller(caller) {
            return Err(missing());
        }
        Ok(job)
    }

    /// Tells the worker a job is waiting.
    pub(crate) fn notify(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// Who uploaded `job`, if the record can be read.
pub fn owner_of(job: &ImportJob) -> Option<Identity> {
    serde_json::from_str::<StoredIdentity>(&job.owner)
        .ok()
        .map(Identity::from_stored)
}

/// The job id of the upload under `key`: 128 bits of its digest.
fn job_id(key: &ScopedKey) -> String {
    let mut d = Sha256::new();
    d.update(b"import\n");
    d.update(key.to_string().as_bytes());
    hex::encode(&d.finalize()[..16])
}

/// Streams `body` into `path`, durably; answers its digest, size and line count (a last
/// line without a newline counts).
async fn write_body(path: &Path, body: Body) -> ApiResult<(String, u64, u64)> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(io_error("write an import file"))?;
    let mut digest = Sha256::new();
    let (mut bytes, mut lines, mut last) = (0u64, 0u64, b'\n');
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::MalformedBody(format!("could not read the body: {e}")))?;
        bytes += chunk.len() as u64;
        if bytes > MAX_IMPORT_BYTES {
            return Err(ApiError::PayloadTooLarge(
                usize::try_from(MAX_IMPORT_BYTES).unwrap_or(usize::MAX),
            ));
        }
        digest.update(&chunk);
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        if let Some(b) = chunk.last() {
            last = *b;
        }
        file.write_all(&chunk)
            .await
            .map_err(io_error("write an import file"))?;
    }
    if last != b'\n' {
        lines += 1;
    }
    file.sync_all()
        .await
        .map_err(io_error("write an import file"))?;
    Ok((hex::encode(digest.finalize()), bytes, lines))
}

/// Makes a rename in `dir` durable (best effort: some filesystems cannot sync a directory).
async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

/// A failed file operation on an import's file, named by `what`.
fn io_error(what: &'static str) -> impl Fn(std::io::Error) -> ApiError {
    move |source| ApiError::Store(stockflow_storage::StoreError::Io { what, source })
}
