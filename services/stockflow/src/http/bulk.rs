//! Bulk loads in and out: `POST /v1/imports` takes an NDJSON file and answers a job at
//! once (the rows run in the import worker, [`crate::imports`]); `GET /v1/imports/{id}`
//! and `.../errors` follow it. `GET /v1/exports/stock` streams the stock rows of a region
//! (NDJSON or CSV) with the bus offsets they reflect, so a consumer can load them and then
//! follow the topic from there.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use stockflow_domain::Region;
use stockflow_storage::ports::{ConsumerOffset, ExportChunk, ImportJob};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::docs::{self, IdempotencyKeyHeader};
use super::extract::{PathParams, QueryParams, idempotency_key};
use super::model::{LocationStock, rfc3339};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult, Problem};
use crate::imports::Imports;

/// NDJSON's media type.
const NDJSON: &str = "application/x-ndjson";
/// Refused rows per page unless asked for fewer.
const DEFAULT_ERRORS: usize = 1000;
/// The most refused rows one page gives.
const MAX_ERRORS: usize = 10_000;

/// `{id}` of an import in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ImportPath {
    /// Import id.
    #[param(schema_with = docs::import_id)]
    pub id: String,
}

/// Paging of refused rows.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ImportErrorsParams {
    /// Rows after this row number (default 0: from the first).
    #[param(minimum = 0, maximum = 4294967295_u64)]
    pub after: Option<u64>,
    /// At most this many rows (1-10000, default 1000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

/// The stock export's query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportParams {
    /// Only this region (default: every region).
    #[param(schema_with = docs::region)]
    pub region: Option<String>,
    /// `ndjson` (default) or `csv`.
    #[param(pattern = "^(ndjson|csv)$")]
    pub format: Option<String>,
}

/// An import job as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportResponse {
    /// Import id.
    pub id: String,
    /// `queued`, `running` or `done`.
    #[schema(pattern = "^(queued|running|done)$")]
    pub status: String,
    /// Rows (lines) in the file.
    pub rows_total: u64,
    /// Rows done: applied, replayed, refused or blank.
    pub rows_done: u64,
    /// Rows that changed something.
    pub applied: u64,
    /// Rows whose idempotency key had run before: nothing applied again.
    pub replayed: u64,
    /// Rows refused (`GET /v1/imports/{id}/errors` says why).
    pub failed: u64,
    /// Bytes in the file.
    pub bytes: u64,
    /// SHA-256 of the file, hex: rows without an `idempotency_key` get keys from it.
    pub digest: String,
    /// When it was uploaded (RFC 3339).
    pub created_at: String,
    /// When its last row ran (RFC 3339).
    pub finished_at: Option<String>,
}

impl From<&ImportJob> for ImportResponse {
    fn from(j: &ImportJob) -> Self {
        Self {
            id: j.id.clone(),
            status: j.status.as_str().into(),
            rows_total: j.rows_total,
            rows_done: j.progress.rows_done,
            applied: j.progress.applied,
            replayed: j.progress.replayed,
            failed: j.progress.failed,
            bytes: j.bytes,
            digest: j.digest.clone(),
            created_at: rfc3339(j.created_at_ms),
            finished_at: j.finished_at_ms.map(rfc3339),
        }
    }
}

/// One refused row (a line of the errors NDJSON).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ImportErrorLine {
    /// The row, counted from 1 (the file's line).
    pub row: u64,
    /// The problem code the same request would have got.
    pub code: String,
    /// What was wrong.
    pub detail: String,
}

const CSV_HEADER: &str = "sku,location,region,on_hand,reserved,damaged,quality_hold,safety_stock,available,backordered,in_transit,version,as_of\n";

/// The CSV line of a row (the NDJSON line's fields but `incoming`): ids are
/// `[A-Za-z0-9._:-]` and times RFC 3339, so nothing needs quoting.
fn csv_line(r: &LocationStock) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
        r.sku,
        r.location,
        r.region,
        r.on_hand,
        r.reserved,
        r.damaged,
        r.quality_hold,
        r.safety_stock,
        r.available,
        r.backordered,
        r.in_transit,
        r.version,
        r.as_of
    )
}

fn imports(state: &AppState) -> ApiResult<&Arc<Imports>> {
    // Only a process serving commands runs imports (and only it routes them here).
    state.imports.as_ref().ok_or(ApiError::Store(
        stockflow_storage::StoreError::Unsupported {
            backend: "a role that serves no commands",
            command: "bulk import",
        },
    ))
}

/// Uploads an NDJSON file of rows (`location`, `sku`, `count`, `adjustment`; one JSON
/// object per line) and answers its job at once; the rows run in the background through
/// the command path, each under its own idempotency key, so uploading the same file
/// again applies nothing twice.
#[utoipa::path(post, path = "/v1/imports", tag = "commands",
    params(IdempotencyKeyHeader),
    request_body(content = String, content_type = "application/x-ndjson",
        description = "One row per line, e.g. {\"type\":\"count\",\"sku\":\"MUG\",\"location\":\"store-1\",\"on_hand\":40}"),
    responses((status = 202, body = ImportResponse, headers(("Location" = String, description = "The job"))),
              (status = 200, body = ImportResponse, description = "The job an earlier upload under the same Idempotency-Key made"),
              (status = 413, body = Problem, description = "payload_too_large (1 GiB at most)"),
              (status = 409, body = Problem, description = "request_in_progress (an upload under the same key is still arriving)"),
              (status = 415, body = Problem, description = "unsupported_media_type (send application/x-ndjson)"),
              (status = 422, body = Problem, description = "conflicting_fields (no rows) or idempotency_key_reused (another file under the same key)"),
              (status = 501, body = Problem, description = "not_implemented (a process that serves no commands)")))]
pub(crate) async fn upload(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let imports = imports(&state)?;
    let is_ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == NDJSON || v == "application/jsonl" || v == "application/x-jsonlines"
        })
        .unwrap_or(false);
    if !is_ndjson {
        return Err(ApiError::UnsupportedMediaType);
    }
    let key = identity.scoped_key(idempotency_key(&headers)?);
    // One upload per key at a time, as for every command: a second one while the first
    // is still arriving is told so (409 request_in_progress), never raced.
    let _guard = state
        .in_flight
        .enter(&stockflow_storage::ports::IdempotencyToken {
            key: key.clone(),
            fingerprint: String::new(),
        })?;
    let received = imports.receive(&identity, &key, body).await?;
    let status = if received.replayed {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = (status, Json(ImportResponse::from(&received.job))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/imports/{}", received.job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    if received.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// An import's progress (its uploader's only).
#[utoipa::path(get, path = "/v1/imports/{id}", tag = "commands",
    params(ImportPath),
    responses((status = 200, body = ImportResponse),
              (status = 404, body = Problem, description = "not_found")))]
pub(crate) async fn get_import(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    PathParams(ImportPath { id }): PathParams<ImportPath>,
) -> ApiResult<Json<ImportResponse>> {
    let job = imports(&state)?.job_of(&identity, &id).await?;
    Ok(Json(ImportResponse::from(&job)))
}

/// The rows an import refused, in row order, as NDJSON (`{row, code, detail}` per line).
#[utoipa::path(get, path = "/v1/imports/{id}/errors", tag = "commands",
    params(ImportPath, ImportErrorsParams),
    responses((status = 200, content_type = "application/x-ndjson", body = ImportErrorLine,
               description = "One refused row per line"),
              (status = 404, body = Problem, description = "not_found")))]
pub(crate) async fn import_errors(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    PathParams(ImportPath { id }): PathParams<ImportPath>,
    QueryParams(params): QueryParams<ImportErrorsParams>,
) -> ApiResult<Response> {
    let imports = imports(&state)?;
    let job = imports.job_of(&identity, &id).await?;
    let after = params.after.unwrap_or(0);
    if after > u64::from(u32::MAX) {
        return Err(ApiError::InvalidQuery(format!(
            "after: {after} is above the last row a file can hold"
        )));
    }
    let limit = params.limit.unwrap_or(DEFAULT_ERRORS);
    if !(1..=MAX_ERRORS).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit: {limit} is not 1-{MAX_ERRORS}"
        )));
    }
    let errors = imports.store().import_errors(&job.id, after, limit).await?;
    let mut body = Vec::new();
    for e in errors {
        let line = ImportErrorLine {
            row: e.row,
            code: e.code,
            detail: e.detail,
        };
        serde_json::to_writer(&mut body, &line)
            .map_err(|e| ApiError::Internal(format!("cannot write an error line: {e}")))?;
        body.push(b'\n');
    }
    Ok(([(header::CONTENT_TYPE, NDJSON)], body).into_response())
}

/// Streams the stock rows of a region (or all) as NDJSON or CSV, in (sku, location)
/// order. `Stockflow-Offsets` names the projector's next offset per partition when the
/// rows were read: every event before them is in the rows, and a consumer that follows
/// the topic from there skips each event at or below its row's `version`.
#[utoipa::path(get, path = "/v1/exports/stock", tag = "queries",
    params(ExportParams),
    responses((status = 200, content(
                  (LocationStock = "application/x-ndjson"),
                  (String = "text/csv")),
               headers(("Stockflow-Offsets" = String,
                        description = "`<consumer>;<partition>=<next offset>,...` per consumer, `|`-separated"))),
              (status = 400, body = Problem, description = "invalid_query")))]
pub(crate) async fn export_stock(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    QueryParams(params): QueryParams<ExportParams>,
) -> ApiResult<Response> {
    let region = params
        .region
        .map(|r| Region::parse(r).map(|r| r.to_string()))
        .transpose()?;
    let csv = match params.format.as_deref() {
        None | Some("ndjson") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::InvalidQuery(format!(
                "format: {other:?} is not ndjson or csv"
            )));
        }
    };
    let (sink, mut chunks) = tokio::sync::mpsc::channel::<ExportChunk>(4);
    let read = state.read.clone();
    let reading = tokio::spawn(async move { read.export_stock(region, sink).await });
    let offsets = match chunks.recv().await {
        Some(ExportChunk::Offsets(offsets)) => offsets,
        _ => {
            // The reader stopped before its first chunk: say why.
            return match reading.await {
                Ok(Err(e)) => Err(e.into()),
                _ => Err(ApiError::Internal(
                    "the export stopped before it began".into(),
                )),
            };
        }
    };
    let stream = export_body(Export {
        chunks,
        identity,
        csv,
        header_pending: csv,
        reading: Some(reading),
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(if csv { "text/csv" } else { NDJSON }),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&offsets_header(&offsets)) {
        headers.insert("stockflow-offsets", value);
    }
    Ok(response)
}

/// `read-models@log;0=12,1=40|other;0=3`.
fn offsets_header(offsets: &[ConsumerOffset]) -> String {
    let mut out = String::new();
    let mut current: Option<&str> = None;
    for o in offsets {
        if current != Some(o.consumer.as_str()) {
            if current.is_some() {
                out.push('|');
            }
            out.push_str(&o.consumer);
            out.push(';');
            current = Some(&o.consumer);
        } else {
            out.push(',');
        }
        out.push_str(&format!("{}={}", o.partition, o.next_offset));
    }
    out
}

/// What the export body's stream carries from one line batch to the next.
struct Export {
    chunks: tokio::sync::mpsc::Receiver<ExportChunk>,
    identity: Identity,
    csv: bool,
    header_pending: bool,
    reading: Option<tokio::task::JoinHandle<stockflow_storage::Result<()>>>,
}

/// The body: the rows the caller may read, as lines. A read error ends the body with an
/// error, so the client sees a broken transfer, never a silently short export.
fn export_body(export: Export) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::unfold(export, |mut export| async move {
        if export.header_pending {
            export.header_pending = false;
            return Some((Ok(Bytes::from_static(CSV_HEADER.as_bytes())), export));
        }
        loop {
            match export.chunks.recv().await {
                Some(ExportChunk::Rows(rows)) => {
                    let mut buf = Vec::with_capacity(rows.len() * 160);
                    for row in rows {
                        if !export.identity.may_read_at(&row.location) {
                            continue;
                        }
                        let line = LocationStock::from(row);
                        if export.csv {
                            buf.extend_from_slice(csv_line(&line).as_bytes());
                        } else if let Err(e) = serde_json::to_writer(&mut buf, &line) {
                            return Some((Err(std::io::Error::other(e)), export));
                        } else {
                            buf.push(b'\n');
                        }
                    }
                    if !buf.is_empty() {
                        return Some((Ok(Bytes::from(buf)), export));
                    }
                }
                Some(ExportChunk::Offsets(_)) => {}
                None => {
                    let reading = export.reading.take()?;
                    let failure = match reading.await {
                        Ok(Ok(())) => return None,
                        Ok(Err(e)) => std::io::Error::other(e.to_string()),
                        Err(e) => std::io::Error::other(e.to_string()),
                    };
                    tracing::warn!(error = %failure, "a stock export stopped early");
                    return Some((Err(failure), export));
                }
            }
        }
    })
}
