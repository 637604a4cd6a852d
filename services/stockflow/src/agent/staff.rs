//! The staff's endpoints: the status (JSON, an HTML page, metrics), the quarantine and
//! its retry or drop, a nudge to send now, and readiness.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use serde_json::{Value, json};

use super::now_ms;
use super::state::AgentState;
use super::status::{self, Status};
use crate::error::ApiError;

fn status_of(state: &AgentState) -> Result<Status, ApiError> {
    Ok(status::collect(state)?)
}

pub(super) async fn status_json(State(state): State<AgentState>) -> Result<Json<Status>, ApiError> {
    Ok(Json(status_of(&state)?))
}

pub(super) async fn status_page(State(state): State<AgentState>) -> Result<Html<String>, ApiError> {
    state
        .page_views
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(Html(status::page(&status_of(&state)?)))
}

pub(super) async fn quarantine(State(state): State<AgentState>) -> Result<Json<Value>, ApiError> {
    let parked = state.store.quarantined(1000)?;
    Ok(Json(json!({"commands": parked})))
}

pub(super) async fn quarantine_retry(
    State(state): State<AgentState>,
    Path(seq): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    if !state.store.requeue(seq, now_ms())? {
        return Err(ApiError::NotFound(format!("no quarantined command #{seq}")));
    }
    state.wake.notify_one();
    Ok(Json(json!({"seq": seq, "state": "pending"})))
}

pub(super) async fn quarantine_drop(
    State(state): State<AgentState>,
    Path(seq): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    if !state.store.drop_quarantined(seq, now_ms())? {
        return Err(ApiError::NotFound(format!("no quarantined command #{seq}")));
    }
    Ok(Json(json!({"seq": seq, "state": "dropped"})))
}

pub(super) async fn sync_now(State(state): State<AgentState>) -> Result<Json<Value>, ApiError> {
    let woken = state.store.retry_all_now(now_ms())?;
    state.wake.notify_one();
    Ok(Json(json!({"sending": woken})))
}

pub(super) async fn readyz(State(state): State<AgentState>) -> Result<&'static str, ApiError> {
    // Ready as long as the store takes commands: the region being away is what the agent
    // is for.
    state.store.counts()?;
    Ok("ready")
}

pub(super) async fn metrics(State(state): State<AgentState>) -> Result<Response, ApiError> {
    let status = status_of(&state)?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        // The gauges of the status, then the counters the agent's tasks record.
        status::prometheus(&status) + &crate::telemetry::metrics_handle().render(),
    )
        .into_response())
}
