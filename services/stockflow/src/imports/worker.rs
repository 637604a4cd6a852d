//! The import worker: takes queued jobs oldest first and applies their rows through the
//! command path ([`crate::http::commands::execute_as`]) as their uploader, a chunk at a
//! time. Within a chunk, rows of one `(sku, location)` run in file order on one lane and
//! lanes run side by side; a catalog row (SKU, location) runs alone, after everything
//! before it, so the adjustments after a location's row find the location. Each chunk ends
//! with a checkpoint: the next row, the counters and the refused rows, in one write.
//!
//! A shared token bucket paces every lane to `--import-rows-per-second`. Rows that failed
//! for a reason that passes (a store that is busy, a key being executed by another request)
//! are retried; a shutdown drops the chunk in flight without a checkpoint, and the next
//! start runs it again under the same keys.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use stockflow_storage::ports::{ImportJob, ImportRowError, ImportStatus};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio_util::sync::CancellationToken;

use super::rows::{self, Action, Row};
use super::{Imports, owner_of};
use crate::auth::{Identity, Scope};
use crate::error::{ApiError, ApiResult};
use crate::http::AppState;
use crate::http::commands::execute_as;

/// Rows per checkpoint.
const CHUNK_ROWS: usize = 1000;
/// Lanes a chunk's stock rows are spread over.
const LANES: usize = 16;
/// Attempts at a row whose failure passes, before it is recorded as refused.
const ATTEMPTS: u32 = 20;
/// How often the worker looks for jobs without being told.
const IDLE: Duration = Duration::from_secs(5);

/// What one row came to.
enum Outcome {
    Applied,
    Replayed,
    Refused(ApiError),
    /// The process is stopping: the row did not run to an answer.
    Stopped,
}

/// Runs queued jobs until `shutdown`.
pub async fn run(state: AppState, imports: Arc<Imports>, shutdown: CancellationToken) {
    let rate = NonZeroU32::new(imports.settings().rows_per_second).unwrap_or(NonZeroU32::MIN);
    // A burst of a twentieth of a second's rows at most: the default quota would let a full
    // second's worth through at once whenever the bucket is full, in front of checkouts.
    let burst = NonZeroU32::new(rate.get() / 20).unwrap_or(NonZeroU32::MIN);
    let limiter = Arc::new(RateLimiter::direct(
        Quota::per_second(rate).allow_burst(burst),
    ));
    // Jobs left by the previous run of the process first.
    imports.notify();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = imports.woken() => {}
            _ = tokio::time::sleep(IDLE) => {}
        }
        let jobs = match imports.store().unfinished_imports().await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list imports; retrying");
                continue;
            }
        };
        for job in jobs {
            let id = job.id.clone();
            // In a region of replicas, a job runs where its lease is held.
            let held = match imports.shared() {
                None => None,
                Some(shared) => match shared.hold(&id, &shutdown).await {
                    Ok(Some(held)) => Some(held),
                    Ok(None) => continue,
                    Err(e) => {
                        tracing::warn!(import = %id, error = %e, "cannot take an import's lease; retrying");
                        continue;
                    }
                },
            };
            // Read again under the lease: the replica that held it may have finished it.
            let job = if held.is_none() {
                job
            } else {
                match imports.store().import(&id).await {
                    Ok(Some(now)) if now.status != ImportStatus::Done => now,
                    Ok(_) => continue,
                    Err(e) => {
                        tracing::warn!(import = %id, error = %e, "cannot read an import; retrying");
                        continue;
                    }
                }
            };
            let stop = held.as_ref().map_or(&shutdown, |h| &h.stop);
            if let Err(e) = run_job(&state, &imports, &limiter, job, stop).await {
                tracing::warn!(import = %id, error = %e, "import interrupted; it resumes from its checkpoint");
            }
            drop(held);
            if shutdown.is_cancelled() {
                return;
            }
        }
    }
}

/// Applies `job` from its checkpoint to its end (or until `shutdown`).
async fn run_job(
    state: &AppState,
    imports: &Imports,
    limiter: &DefaultDirectRateLimiter,
    job: ImportJob,
    shutdown: &CancellationToken,
) -> ApiResult<()> {
    let store = imports.store();
    let Some(owner) = owner_of(&job) else {
        let detail = "the uploader's record cannot be read; upload the file again";
        return end_unrunnable(store, &job, 0, detail).await;
    };
    let file = match open_payload(imports, &job).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let detail = "the import's file is gone from the data directory; upload it again \
                          (rows that ran are answered from their records)";
            return end_unrunnable(store, &job, job.progress.rows_done + 1, detail).await;
        }
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "cannot open import {}: {e}",
                job.id
            )));
        }
    };
    let mut reader = BufReader::new(file);
    reader
        .seek(std::io::SeekFrom::Start(job.progress.next_byte))
        .await
        .map_err(|e| ApiError::Internal(format!("cannot seek in import {}: {e}", job.id)))?;
    tracing::info!(import = %job.id, from_row = job.progress.rows_done + 1, rows = job.rows_total, "applying an import");
    let mut progress = job.progress;
    store
        .checkpoint_import(&job.id, ImportStatus::Running, progress, &[], None)
        .await?;
    let mut line = Vec::new();
    loop {
        // One chunk: parse, apply, checkpoint.
        let mut parsed: Vec<(u64, Row)> = Vec::new();
        let mut refused: Vec<ImportRowError> = Vec::new();
        let (mut rows, mut bytes) = (0u64, 0u64);
        while parsed.len() + refused.len() < CHUNK_ROWS {
            let n = read_row(&mut reader, &mut line)
                .await
                .map_err(|e| ApiError::Internal(format!("cannot read import {}: {e}", job.id)))?;
            if n == 0 {
                break;
            }
            rows += 1;
            bytes += n as u64;
            let number = progress.rows_done + rows;
            match rows::parse(&line, number, &job.digest) {
                Ok(Some(row)) => parsed.push((number, row)),
                Ok(None) => {}
                Err(e) => refused.push(refusal(number, &e)),
            }
        }
        if rows == 0 {
            break;
        }
        let outcomes = apply_chunk(state, &owner, limiter, parsed, shutdown).await;
        let mut stopped = false;
        for (number, outcome) in outcomes {
            match outcome {
                Outcome::Applied => {
                    progress.applied += 1;
                    metrics::counter!("stockflow_import_rows_total", "outcome" => "applied")
                        .increment(1);
                }
                Outcome::Replayed => {
                    progress.replayed += 1;
                    metrics::counter!("stockflow_import_rows_total", "outcome" => "replayed")
                        .increment(1);
                }
                Outcome::Refused(e) => refused.push(refusal(number, &e)),
                Outcome::Stopped => stopped = true,
            }
        }
        if stopped || shutdown.is_cancelled() {
            // No checkpoint: the chunk runs again at the next start, answered from the
            // idempotency records where it had run.
            return Ok(());
        }
        progress.failed += refused.len() as u64;
        progress.rows_done += rows;
        progress.next_byte += bytes;
        refused.sort_by_key(|e| e.row);
        for e in &refused {
            metrics::counter!("stockflow_import_rows_total", "outcome" => "refused").increment(1);
            tracing::debug!(import = %job.id, row = e.row, code = %e.code, "import row refused");
        }
        store
            .checkpoint_import(&job.id, ImportStatus::Running, progress, &refused, None)
            .await?;
    }
    store
        .checkpoint_import(
            &job.id,
            ImportStatus::Done,
            progress,
            &[],
            Some(stockflow_storage::now_ms()),
        )
        .await?;
    // The rows are all answered: the file is not needed again (the job and its refused
    // rows stay readable).
    if let Err(e) = tokio::fs::remove_file(imports.payload(&job.id)).await {
        tracing::warn!(import = %job.id, error = %e, "cannot remove a finished import's file");
    }
    if let Some(shared) = imports.shared()
        && let Err(e) = shared.remove(&job.id, job.bytes).await
    {
        tracing::warn!(import = %job.id, error = %e, "cannot remove a finished import's stored file");
    }
    tracing::info!(import = %job.id, applied = progress.applied, replayed = progress.replayed, failed = progress.failed, "import done");
    Ok(())
}

/// Opens `job`'s file: on this replica's disk, or fetched from the keyspace where the
/// region shares its imports (`NotFound` when it is in neither).
async fn open_payload(imports: &Imports, job: &ImportJob) -> std::io::Result<tokio::fs::File> {
    let path = imports.payload(&job.id);
    match tokio::fs::File::open(&path).await {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let Some(shared) = imports.shared() else {
                return Err(e);
            };
            match shared.fetch(&job.id, job.bytes, &path).await {
                Ok(true) => tokio::fs::File::open(&path).await,
                Ok(false) => Err(e),
                Err(fetch) => Err(std::io::Error::other(fetch.to_string())),
            }
        }
        opened => opened,
    }
}

/// Ends a job that cannot run any further with one refused row saying why: recorded once,
/// never retried.
async fn end_unrunnable(
    store: &dyn stockflow_storage::ports::ImportStore,
    job: &ImportJob,
    row: u64,
    detail: &str,
) -> ApiResult<()> {
    let refused = [ImportRowError {
        row,
        code: "internal".into(),
        detail: detail.into(),
    }];
    let now = stockflow_storage::now_ms();
    store
        .checkpoint_import(
            &job.id,
            ImportStatus::Done,
            job.progress,
            &refused,
            Some(now),
        )
        .await?;
    Ok(())
}

/// Reads one line into `line` and answers the bytes it took from the file (0 at the end).
/// At most one byte more than a row may hold is kept: a longer line is read to its end but
/// not kept (its row is refused as too long), so no line fills memory, however long.
async fn read_row<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<usize> {
    line.clear();
    let mut consumed = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(consumed);
        }
        let (take, ends) = match available.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let room = (rows::MAX_ROW_BYTES + 1).saturating_sub(line.len());
        line.extend_from_slice(&available[..take.min(room)]);
        reader.consume(take);
        consumed += take;
        if ends {
            return Ok(consumed);
        }
    }
}

/// Runs one chunk's rows: stock rows on lanes by key, catalog rows alone, in file order
/// between them.
async fn apply_chunk(
    state: &AppState,
    owner: &Identity,
    limiter: &DefaultDirectRateLimiter,
    rows: Vec<(u64, Row)>,
    shutdown: &CancellationToken,
) -> Vec<(u64, Outcome)> {
    let mut out = Vec::with_capacity(rows.len());
    let mut segment: Vec<(u64, Row)> = Vec::new();
    for (number, row) in rows {
        if row.stock_key.is_some() {
            segment.push((number, row));
            continue;
        }
        out.extend(
            run_lanes(
                state,
                owner,
                limiter,
                std::mem::take(&mut segment),
                shutdown,
            )
            .await,
        );
        limiter.until_ready().await;
        out.push((number, apply(state, owner, row, shutdown).await));
    }
    out.extend(run_lanes(state, owner, limiter, segment, shutdown).await);
    out
}

/// Stock rows spread over lanes by key: one key's rows in order on one lane.
async fn run_lanes(
    state: &AppState,
    owner: &Identity,
    limiter: &DefaultDirectRateLimiter,
    rows: Vec<(u64, Row)>,
    shutdown: &CancellationToken,
) -> Vec<(u64, Outcome)> {
    if rows.is_empty() {
        return Vec::new();
    }
    let mut lanes: Vec<Vec<(u64, Row)>> = (0..LANES).map(|_| Vec::new()).collect();
    let mut lane_of: HashMap<(String, String), usize> = HashMap::new();
    for (number, row) in rows {
        let next = lane_of.len() % LANES;
        let lane = *lane_of
            .entry(row.stock_key.clone().unwrap_or_default())
            .or_insert(next);
        lanes[lane].push((number, row));
    }
    let runs = lanes.into_iter().map(|lane| async move {
        let mut done = Vec::with_capacity(lane.len());
        for (number, row) in lane {
            limiter.until_ready().await;
            done.push((number, apply(state, owner, row, shutdown).await));
        }
        done
    });
    futures::future::join_all(runs)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Runs one row to an answer, retrying failures that pass.
async fn apply(
    state: &AppState,
    owner: &Identity,
    row: Row,
    shutdown: &CancellationToken,
) -> Outcome {
    let mut attempt = 0;
    loop {
        if shutdown.is_cancelled() {
            return Outcome::Stopped;
        }
        attempt += 1;
        match apply_once(state, owner, &row).await {
            Ok(true) => return Outcome::Replayed,
            Ok(false) => return Outcome::Applied,
            Err(e) if passes(&e) && attempt < ATTEMPTS => {
                let pause = Duration::from_millis(20 * u64::from(attempt.min(10)));
                tokio::select! {
                    _ = shutdown.cancelled() => return Outcome::Stopped,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            Err(e) => return Outcome::Refused(e),
        }
    }
}

/// Runs `row` once; `Ok(true)` when its key had run before (nothing applied again).
async fn apply_once(state: &AppState, owner: &Identity, row: &Row) -> ApiResult<bool> {
    match &row.action {
        Action::Adjust(adjust) => {
            let answered = execute_as(
                state,
                owner,
                None,
                row.key.clone(),
                row.fingerprint.clone(),
                stockflow_domain::Command::Adjust(adjust.clone()),
                None,
            )
            .await?;
            Ok(answered.replayed)
        }
        Action::Location(location) => {
            if !owner.allows(Scope::CatalogWrite) {
                return Err(ApiError::InsufficientScope(Scope::CatalogWrite));
            }
            state.write.put_location(location.clone()).await??;
            Ok(false)
        }
        Action::Sku {
            sku,
            name,
            attributes,
        } => {
            if !owner.allows(Scope::CatalogWrite) {
                return Err(ApiError::InsufficientScope(Scope::CatalogWrite));
            }
            state
                .write
                .put_sku(sku.clone(), name.clone(), attributes.clone())
                .await?;
            Ok(false)
        }
    }
}

/// Whether a failure passes by itself (a busy or stopping store, a key another request is
/// executing right now), so the row is tried again rather than refused.
fn passes(e: &ApiError) -> bool {
    match e {
        ApiError::Store(s) => s.retryable(),
        ApiError::RequestInProgress | ApiError::Overloaded => true,
        ApiError::Refused(r) => matches!(r, stockflow_domain::Refusal::RequestInProgress),
        _ => false,
    }
}

fn refusal(row: u64, e: &ApiError) -> ImportRowError {
    ImportRowError {
        row,
        code: e.code().to_string(),
        detail: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_line_longer_than_a_row_is_read_to_its_end_but_not_kept() {
        let long = "x".repeat(rows::MAX_ROW_BYTES * 3);
        let text = format!("{{\"a\":1}}\n{long}\n\nlast");
        // A small buffer: lines span many fills.
        let mut reader = BufReader::with_capacity(7, text.as_bytes());
        let mut line = Vec::new();
        let mut seen = Vec::new();
        loop {
            let n = read_row(&mut reader, &mut line).await.unwrap();
            if n == 0 {
                break;
            }
            seen.push((n, line.len()));
        }
        assert_eq!(
            seen,
            vec![
                (8, 8),
                (long.len() + 1, rows::MAX_ROW_BYTES + 1),
                (1, 1),
                (4, 4)
            ]
        );
    }
}
