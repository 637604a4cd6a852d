//! Operations endpoints: health, readiness, metrics, the OpenAPI document, and the admin
//! endpoints for dead letters and projection replay.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stockflow_storage::ports::DeadLetter;
use utoipa::ToSchema;

use super::AppState;
use super::docs::DeadLetterPath;
use super::extract::PathParams;
use crate::error::{ApiError, ApiResult, Problem};
use crate::events::structured;

/// Liveness: the process serves HTTP and its write store has not stopped for good (after a
/// failed fsync it answers 503 until the process, which is shutting down, exits).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = String, content_type = "text/plain"),
              (status = 503, body = Problem, description = "storage_fault")))]
pub(crate) async fn healthz(State(state): State<AppState>) -> ApiResult<&'static str> {
    match state.write.fatal_error() {
        None => Ok("ok"),
        Some(why) => Err(ApiError::StorageFault(why.to_string())),
    }
}

/// Readiness: the stores (and the bus, where this process uses one) answer and the process
/// is not draining.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = String, content_type = "text/plain"),
              (status = 503, body = Problem, description = "not_ready")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<&'static str> {
    let not_ready = ApiError::NotReady;
    if state.draining.load(Ordering::Relaxed) {
        return Err(not_ready("shutting down".into()));
    }
    if let Err(e) = state.edge.ready() {
        return Err(not_ready(format!("authentication: {e}")));
    }
    if let Err(e) = state.write.check_ready().await {
        return Err(not_ready(format!("write store: {e}")));
    }
    if let Err(e) = state.read.check_ready().await {
        return Err(not_ready(format!("read store: {e}")));
    }
    if let Some(bus) = &state.bus
        && let Err(e) = bus.check_ready().await
    {
        return Err(not_ready(format!("bus: {e}")));
    }
    Ok("ready")
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, body = String, content_type = "text/plain")))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    // Scraping never scans the outbox: the publisher keeps `stockflow_outbox_backlog`.
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// The OpenAPI description of this API, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, body = Object, description = "OpenAPI 3.1 document")))]
pub(crate) async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}

/// The AsyncAPI description of the events this region publishes, generated from the code.
#[utoipa::path(get, path = "/asyncapi.json", tag = "operations",
    responses((status = 200, body = Object, description = "AsyncAPI 3.0 document of the region's topic")))]
pub(crate) async fn asyncapi() -> Json<serde_json::Value> {
    Json(crate::events::asyncapi::document())
}

/// A dead letter as listed by the admin API.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterBody {
    /// DLQ id.
    pub id: i64,
    /// Consumer that gave up.
    pub consumer: String,
    /// Partition of the record.
    pub partition: u32,
    /// Offset of the record.
    pub offset: u64,
    /// Record key.
    pub key: String,
    /// Payload, as text.
    pub payload: String,
    /// Last error.
    pub error: String,
    /// Attempts made.
    pub attempts: u32,
}

impl From<DeadLetter> for DeadLetterBody {
    fn from(d: DeadLetter) -> Self {
        Self {
            id: d.id,
            consumer: d.consumer,
            partition: d.partition,
            offset: d.offset,
            key: d.key,
            payload: d.payload,
            error: d.error,
            attempts: d.attempts,
        }
    }
}

/// Events the projector could not apply.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "operations",
    responses((status = 200, body = [DeadLetterBody])))]
pub(crate) async fn dead_letters(
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<DeadLetterBody>>> {
    let letters = state.read.dead_letters(1000).await?;
    Ok(Json(letters.into_iter().map(Into::into).collect()))
}

/// Re-applies a dead letter (after a fix); removes it when it applies. Idempotent: the
/// projection ignores versions it already holds.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/replay", tag = "operations",
    params(DeadLetterPath),
    responses((status = 200, body = ReplayedBody),
              (status = 404, body = Problem, description = "not_found: no dead letter with this id"),
              (status = 409, body = Problem, description = "dead_letter_still_failing")))]
pub(crate) async fn replay_dead_letter(
    State(state): State<AppState>,
    PathParams(DeadLetterPath { id }): PathParams<DeadLetterPath>,
) -> ApiResult<Json<ReplayedBody>> {
    let letters = state.read.dead_letters(100_000).await?;
    let letter = letters
        .into_iter()
        .find(|l| l.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
    let still_failing = |error: String| ApiError::DeadLetterStillFailing { id, error };
    // The record's value as it was: a structured CloudEvent on a Fluvio topic that writes
    // them, the bare event elsewhere.
    let event = structured::event_of(letter.payload.as_bytes())
        .map_err(|e| still_failing(format!("payload does not decode: {e}")))?;
    state
        .read
        .replay(std::slice::from_ref(&event))
        .await
        .map_err(|e| still_failing(e.to_string()))?;
    state.read.remove_dead_letter(id).await?;
    metrics::counter!("stockflow_dead_letters_replayed_total").increment(1);
    Ok(Json(ReplayedBody { id, replayed: true }))
}

/// The answer of a dead letter's replay.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReplayedBody {
    /// The letter, now removed.
    pub id: i64,
    /// Always true.
    pub replayed: bool,
}

/// The answer of a projection replay.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ReplayingBody {
    /// Always true: the projectors re-read the log in the background.
    pub replaying: bool,
}

/// Re-reads the whole event log into the read models. Harmless by construction: every
/// event older than what a row holds is ignored.
#[utoipa::path(post, path = "/admin/projections/replay", tag = "operations",
    responses((status = 202, body = ReplayingBody)))]
pub(crate) async fn replay_projections(
    State(state): State<AppState>,
) -> (StatusCode, Json<ReplayingBody>) {
    state.projector.replay_from_start();
    (
        StatusCode::ACCEPTED,
        Json(ReplayingBody { replaying: true }),
    )
}
