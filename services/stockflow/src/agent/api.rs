//! The agent's loopback API for the POS: the region's command contract for the store's
//! own locations (adjustments; reserve, confirm and release for click-and-collect), each
//! answered only after the command is committed to the agent's store; reads of the local
//! view (the region's state plus what the region has not acknowledged yet); and the
//! staff's endpoints (status, the quarantine, "send now").

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use stockflow_domain::{
    LocationId, MAX_LINE_QTY, MAX_LINES, Refusal, ReservationId, ShortLine, Sku, ValidationError,
};

use super::staff::{
    metrics, quarantine, quarantine_drop, quarantine_retry, readyz, status_json, status_page,
    sync_now,
};
pub use super::state::AgentState;
use super::store::{Effect, LocalReservation, NewCommand, Recorded};
use super::{AgentError, now_ms};
use crate::error::ApiError;
use crate::http::extract::CommandBody;

/// The routes.
pub fn router(state: AgentState) -> Router {
    Router::new()
        .route("/v1/adjustments", post(adjust))
        .route("/v1/reservations", post(reserve))
        .route("/v1/reservations/{id}/confirm", post(confirm))
        .route("/v1/reservations/{id}/release", post(release))
        .route("/v1/stock/{sku}", get(stock_of_sku))
        .route("/v1/stock/{sku}/{location}", get(stock_at))
        .route("/agent", get(status_page))
        .route("/agent/status", get(status_json))
        .route("/agent/quarantine", get(quarantine))
        .route("/agent/quarantine/{seq}/retry", post(quarantine_retry))
        .route("/agent/quarantine/{seq}/drop", post(quarantine_drop))
        .route("/agent/sync", post(sync_now))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

impl From<AgentError> for ApiError {
    fn from(e: AgentError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// The POS's Idempotency-Key, or 400.
fn origin_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let key = crate::http::extract::idempotency_key(headers)?;
    Ok(key.as_str().to_string())
}

impl AgentState {
    fn own(&self, location: &str) -> Result<(), ApiError> {
        if self.locations.contains(location) {
            Ok(())
        } else {
            Err(ApiError::LocationForbidden(location.to_string()))
        }
    }

    /// Refuses all but sales and returns when the store is nearly full.
    fn room_for(&self, essential: bool) -> Result<(), ApiError> {
        let used = self.store.disk_bytes();
        if !essential && used.saturating_mul(100) >= self.disk_cap_bytes.saturating_mul(95) {
            return Err(ApiError::QueueFull(format!(
                "the agent's store holds {used} of {} bytes; until the region takes the queue only sales and returns are accepted",
                self.disk_cap_bytes
            )));
        }
        Ok(())
    }

    /// Commits `command` to the agent's store (sales and returns even when it is nearly
    /// full) and wakes the forwarder.
    pub(super) async fn commit(&self, command: NewCommand) -> Result<Recorded, ApiError> {
        self.room_for(command.essential)?;
        let store = self.store.clone();
        let recorded = tokio::task::spawn_blocking(move || store.record(command, now_ms()))
            .await
            .map_err(|e| ApiError::Internal(format!("recording panicked: {e}")))??;
        if !recorded.replayed {
            self.wake.notify_one();
            metrics::counter!("stockflow_agent_commands_total").increment(1);
        }
        Ok(recorded)
    }

    async fn record(&self, command: NewCommand) -> Result<Response, ApiError> {
        let recorded = self.commit(command).await?;
        let mut response = (StatusCode::OK, Json(recorded.answer)).into_response();
        let headers = response.headers_mut();
        if recorded.replayed {
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        if let Ok(v) = HeaderValue::from_str(&recorded.seq.to_string()) {
            headers.insert(crate::auth::STORE_SEQ_HEADER, v);
        }
        Ok(response)
    }

    /// The local level of a key: the region's view plus every command it has not
    /// acknowledged yet, in order.
    fn level(&self, sku: &str, location: &str) -> Result<Value, ApiError> {
        let row = self.store.view(sku, location)?;
        let pending = self.store.pending_effects(sku, location)?;
        let (mut on_hand, mut reserved) = row.as_ref().map_or((0, 0), |r| (r.on_hand, r.reserved));
        for e in &pending {
            if let Some(count) = e.set_on_hand {
                on_hand = count;
            }
            on_hand += e.on_hand;
            reserved += e.reserved;
        }
        let now = now_ms();
        Ok(json!({
            "sku": sku,
            "location": location,
            "on_hand": on_hand,
            "reserved": reserved,
            // Channels never see a negative availability; a store may (a sale recorded
            // offline that the region will hold as oversold).
            "available": on_hand - reserved,
            "region_version": row.as_ref().map(|r| r.version),
            "region_as_of": row.as_ref().map(|r| crate::http::model::rfc3339(r.as_of_ms)),
            "region_age_ms": row.as_ref().map(|r| (now - r.as_of_ms).max(0)),
            "not_yet_acknowledged": pending.len(),
        }))
    }
}

/// `POST /v1/adjustments` on the agent (and a captured POS row).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdjustBody {
    pub(super) sku: String,
    pub(super) location: String,
    #[serde(default)]
    pub(super) delta: Option<i64>,
    #[serde(default)]
    pub(super) set_on_hand: Option<i64>,
    pub(super) reason: String,
    #[serde(default)]
    pub(super) reference: Option<String>,
}

/// The reasons a store records, and the region's spelling of each.
fn region_reason(reason: &str) -> Option<&'static str> {
    Some(match reason {
        "sale" => "sale",
        "return" => "return",
        "receipt" => "receipt",
        "count" | "cycle_count" => "cycle_count",
        "damage" => "damage",
        "correction" => "correction",
        "shrinkage" => "shrinkage",
        "write_off" => "write_off",
        _ => return None,
    })
}

async fn adjust(
    State(state): State<AgentState>,
    headers: HeaderMap,
    body: CommandBody<AdjustBody>,
) -> Result<Response, ApiError> {
    let origin = origin_key(&headers)?;
    let command = state.adjustment(body.value, format!("pos:{origin}"))?;
    state.record(command).await
}

impl AgentState {
    /// The command an adjustment records: checked as the region would, forwarded as a fact
    /// (`mode: record`), with its effect on the local view and the answer the POS gets.
    pub(super) fn adjustment(
        &self,
        b: AdjustBody,
        origin_key: String,
    ) -> Result<NewCommand, ApiError> {
        let sku = Sku::parse(b.sku)?;
        let location = LocationId::parse(b.location)?;
        self.own(location.as_str())?;
        let reason = region_reason(&b.reason).ok_or_else(|| {
            ValidationError::new(
                "reason",
                "must be sale, return, receipt, count, damage, correction, shrinkage or write_off",
            )
        })?;
        if let Some(reference) = &b.reference {
            stockflow_domain::command::validate_reference("reference", reference)?;
        }
        let (change, effect) = match (b.delta, b.set_on_hand) {
            (Some(d), None) if d != 0 && (-MAX_LINE_QTY..=MAX_LINE_QTY).contains(&d) => {
                (json!({"delta": d}), (d, None))
            }
            (None, Some(n)) if (0..=stockflow_domain::MAX_ON_HAND).contains(&n) => {
                (json!({"set_on_hand": n}), (0, Some(n)))
            }
            _ => {
                return Err(ValidationError::new(
                    "delta",
                    format!(
                        "give either delta (non-zero, -{MAX_LINE_QTY}..{MAX_LINE_QTY}) or set_on_hand (>= 0)"
                    ),
                )
                .into());
            }
        };
        // What the store records is a fact: the region applies it even below zero.
        let mut forwarded = json!({"sku": sku.as_str(), "location": location.as_str(),
            "reason": reason, "mode": "record"});
        if let (Some(map), Some(extra)) = (forwarded.as_object_mut(), change.as_object()) {
            map.extend(extra.clone());
            if let Some(reference) = &b.reference {
                map.insert("reference".into(), json!(reference));
            }
        }
        let effect = Effect {
            sku: sku.to_string(),
            location: location.to_string(),
            on_hand: effect.0,
            reserved: 0,
            set_on_hand: effect.1,
        };
        let mut answer = self.level(sku.as_str(), location.as_str())?;
        apply(&mut answer, &effect);
        Ok(NewCommand {
            origin_key,
            path: "/v1/adjustments".into(),
            body: forwarded,
            effects: vec![effect],
            answer,
            essential: matches!(reason, "sale" | "return"),
            reservation: None,
            remember_origin: false,
            refused: None,
        })
    }
}

/// Shows `effect` on a level answer (the answer the POS gets for its own command).
fn apply(level: &mut Value, effect: &Effect) {
    let on_hand = level["on_hand"].as_i64().unwrap_or(0);
    let reserved = level["reserved"].as_i64().unwrap_or(0);
    let on_hand = effect.set_on_hand.unwrap_or(on_hand) + effect.on_hand;
    let reserved = reserved + effect.reserved;
    level["on_hand"] = json!(on_hand);
    level["reserved"] = json!(reserved);
    level["available"] = json!(on_hand - reserved);
    level["not_yet_acknowledged"] = json!(level["not_yet_acknowledged"].as_u64().unwrap_or(0) + 1);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineBody {
    sku: String,
    location: String,
    qty: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    #[serde(default)]
    reservation_id: Option<String>,
    lines: Vec<LineBody>,
    #[serde(default)]
    ttl_seconds: Option<u64>,
    #[serde(default)]
    reference: Option<String>,
}

async fn reserve(
    State(state): State<AgentState>,
    headers: HeaderMap,
    body: CommandBody<ReserveBody>,
) -> Result<Response, ApiError> {
    let origin = origin_key(&headers)?;
    if let Some(replayed) = state.replay(&format!("pos:{origin}"))? {
        return Ok(replayed);
    }
    let b = body.value;
    let id = match b.reservation_id {
        Some(id) => ReservationId::parse(id)?,
        None => ReservationId::parse(uuid::Uuid::now_v7().to_string())?,
    };
    if b.lines.is_empty() || b.lines.len() > MAX_LINES {
        return Err(ValidationError::new("lines", format!("must hold 1-{MAX_LINES} lines")).into());
    }
    let mut lines = Vec::new();
    let mut short = Vec::new();
    for (i, line) in b.lines.into_iter().enumerate() {
        let sku = Sku::parse(line.sku)?;
        let location = LocationId::parse(line.location)?;
        state.own(location.as_str())?;
        if !(1..=MAX_LINE_QTY).contains(&line.qty) {
            return Err(ValidationError::new(
                format!("lines[{i}].qty"),
                format!("must be between 1 and {MAX_LINE_QTY}"),
            )
            .into());
        }
        // A click-and-collect hold needs the units on the shelf now, as far as the store
        // knows.
        let level = state.level(sku.as_str(), location.as_str())?;
        let available = level["available"].as_i64().unwrap_or(0);
        if line.qty > available {
            short.push(ShortLine {
                sku: sku.clone(),
                location: location.clone(),
                requested: line.qty,
                available,
            });
        }
        lines.push((sku.to_string(), location.to_string(), line.qty));
    }
    if !short.is_empty() {
        return Err(Refusal::InsufficientStock { lines: short }.into());
    }
    let mut forwarded = json!({
        "reservation_id": id.as_str(),
        "lines": lines.iter().map(|(s, l, q)| json!({"sku": s, "location": l, "qty": q})).collect::<Vec<_>>(),
    });
    if let Some(ttl) = b.ttl_seconds {
        forwarded["ttl_seconds"] = json!(ttl);
    }
    if let Some(reference) = b.reference {
        forwarded["reference"] = json!(reference);
    }
    let effects = lines
        .iter()
        .map(|(sku, location, qty)| Effect {
            sku: sku.clone(),
            location: location.clone(),
            on_hand: 0,
            reserved: *qty,
            set_on_hand: None,
        })
        .collect();
    let reservation = LocalReservation {
        id: id.to_string(),
        lines: lines.clone(),
        status: "active".into(),
    };
    let answer = json!({"reservation_id": id.as_str(), "status": "active",
        "lines": forwarded["lines"].clone(), "acknowledged_by_region": false});
    state
        .record(NewCommand {
            origin_key: format!("pos:{origin}"),
            path: "/v1/reservations".into(),
            body: forwarded,
            effects,
            answer,
            essential: false,
            reservation: Some(reservation),
            remember_origin: false,
            refused: None,
        })
        .await
}

async fn settle(
    state: AgentState,
    headers: HeaderMap,
    id: String,
    confirm: bool,
) -> Result<Response, ApiError> {
    let origin = origin_key(&headers)?;
    let id = ReservationId::parse(id)?;
    let reservation = state
        .store
        .reservation(id.as_str())?
        .ok_or_else(|| Refusal::ReservationNotFound(id.clone()))?;
    let (action, status) = if confirm {
        ("confirm", "confirmed")
    } else {
        ("release", "released")
    };
    let effects = reservation
        .lines
        .iter()
        .map(|(sku, location, qty)| Effect {
            sku: sku.clone(),
            location: location.clone(),
            on_hand: if confirm { -qty } else { 0 },
            reserved: -qty,
            set_on_hand: None,
        })
        .collect();
    let settled = LocalReservation {
        status: status.into(),
        ..reservation.clone()
    };
    let origin_key = format!("pos:{origin}");
    if let Some(replayed) = state.replay(&origin_key)? {
        return Ok(replayed);
    }
    if reservation.status != "active" {
        let status = match reservation.status.as_str() {
            "confirmed" => stockflow_domain::ReservationStatus::Confirmed,
            _ => stockflow_domain::ReservationStatus::Released,
        };
        return Err(Refusal::ReservationNotActive { id, status }.into());
    }
    let answer =
        json!({"reservation_id": id.as_str(), "status": status, "acknowledged_by_region": false});
    state
        .record(NewCommand {
            origin_key,
            path: format!("/v1/reservations/{id}/{action}"),
            body: json!({}),
            effects,
            answer,
            essential: confirm,
            reservation: Some(settled),
            remember_origin: false,
            refused: None,
        })
        .await
}

impl AgentState {
    /// The stored answer of `origin_key` as a replayed response, if it was recorded: a
    /// retry is answered before any rule is checked again (its own effect is already in
    /// the local view).
    fn replay(&self, origin_key: &str) -> Result<Option<Response>, ApiError> {
        let Some(answer) = self.store.answer_of(origin_key)? else {
            return Ok(None);
        };
        Ok(Some(
            (
                StatusCode::OK,
                [("idempotent-replayed", "true")],
                Json(answer),
            )
                .into_response(),
        ))
    }
}

async fn confirm(
    State(state): State<AgentState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    settle(state, headers, id, true).await
}

async fn release(
    State(state): State<AgentState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    settle(state, headers, id, false).await
}

async fn stock_at(
    State(state): State<AgentState>,
    Path((sku, location)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let sku = Sku::parse(sku)?;
    let location = LocationId::parse(location)?;
    state.own(location.as_str())?;
    Ok(Json(state.level(sku.as_str(), location.as_str())?))
}

async fn stock_of_sku(
    State(state): State<AgentState>,
    Path(sku): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let sku = Sku::parse(sku)?;
    let locations: Vec<Value> = state
        .locations
        .iter()
        .map(|l| state.level(sku.as_str(), l))
        .collect::<Result<_, _>>()?;
    Ok(Json(json!({"sku": sku.as_str(), "locations": locations})))
}
