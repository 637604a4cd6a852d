//! Operations endpoints: health, readiness, metrics, the OpenAPI document, and the admin
//! endpoints for dead letters and projection replay.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use stockflow_domain::BusEvent;
use stockflow_storage::ports::DeadLetter;
use utoipa::{OpenApi, ToSchema};

use super::AppState;
use crate::error::{ApiError, ApiResult, Problem, problem};

/// Liveness: the process serves HTTP and its write store has not stopped for good (after a
/// failed fsync it answers 503 until the process, which is shutting down, exits).
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200), (status = 503, body = Problem)))]
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.write.fatal_error() {
        None => "ok".into_response(),
        Some(why) => problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_fault",
            "Storage fault",
            &format!("{why}; the process is exiting to restart from disk"),
            None,
        ),
    }
}

/// Readiness: the stores (and the bus, where this process uses one) answer and the process
/// is not draining.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200), (status = 503, body = Problem)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return not_ready("shutting down");
    }
    if let Err(e) = state.write.check_ready().await {
        return not_ready(&format!("write store: {e}"));
    }
    if let Err(e) = state.read.check_ready().await {
        return not_ready(&format!("read store: {e}"));
    }
    if let Some(bus) = &state.bus
        && let Err(e) = bus.check_ready().await
    {
        return not_ready(&format!("bus: {e}"));
    }
    (StatusCode::OK, "ready").into_response()
}

fn not_ready(reason: &str) -> Response {
    problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        "Not ready",
        reason,
        None,
    )
}

/// Prometheus metrics in the text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
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
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200)))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(super::ApiDoc::openapi())
}

/// A dead letter as listed by the admin API.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterBody {
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
pub async fn dead_letters(State(state): State<AppState>) -> ApiResult<Json<Vec<DeadLetterBody>>> {
    let letters = state.read.dead_letters(1000).await?;
    Ok(Json(letters.into_iter().map(Into::into).collect()))
}

/// Re-applies a dead letter (after a fix); removes it when it applies. Idempotent: the
/// projection ignores versions it already holds.
#[utoipa::path(post, path = "/admin/dead-letters/{id}/replay", tag = "operations",
    params(("id" = i64, Path)),
    responses((status = 200), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn replay_dead_letter(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> ApiResult<Response> {
    let letters = state.read.dead_letters(100_000).await?;
    let letter = letters
        .into_iter()
        .find(|l| l.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
    let event: BusEvent = match serde_json::from_str(&letter.payload) {
        Ok(event) => event,
        Err(e) => return Ok(still_failing(id, &format!("payload does not decode: {e}"))),
    };
    if let Err(e) = state.read.replay(std::slice::from_ref(&event)).await {
        return Ok(still_failing(id, &e.to_string()));
    }
    state.read.remove_dead_letter(id).await?;
    metrics::counter!("stockflow_dead_letters_replayed_total").increment(1);
    Ok(Json(json!({ "id": id, "replayed": true })).into_response())
}

fn still_failing(id: i64, error: &str) -> Response {
    problem(
        StatusCode::CONFLICT,
        "dead_letter_still_failing",
        "Dead letter still failing",
        &format!("dead letter {id} still fails: {error}"),
        None,
    )
}

/// Re-reads the whole event log into the read models. Harmless by construction: every
/// event older than what a row holds is ignored.
#[utoipa::path(post, path = "/admin/projections/replay", tag = "operations",
    responses((status = 202)))]
pub async fn replay_projections(State(state): State<AppState>) -> Response {
    state.projector.replay_from_start();
    (StatusCode::ACCEPTED, Json(json!({ "replaying": true }))).into_response()
}
