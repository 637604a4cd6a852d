//! The command API: catalog upserts, adjustments and reservations; the shared `run` that
//! every command goes through (transfers use it from `transfers`).

use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use stockflow_domain::{Command, CommandResult, LocationId, Refusal, ReservationId, Sku};
use stockflow_storage::ports::{CommandRequest, IdempotencyToken};
use tracing::Instrument;

use super::AppState;
use super::docs::{IdempotencyKeyHeader, LocationPath, ReservationPath, SkuPath};
use super::extract::{
    CommandBody, OptionalBody, PathParams, idempotency_key, store_named, store_seq, trace_context,
};
use super::model::*;
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult, Problem};
use stockflow_telemetry::traces;

/// Creates or updates a location.
#[utoipa::path(put, path = "/v1/locations/{location}", tag = "catalog",
    params(LocationPath),
    request_body = LocationRequest,
    responses((status = 200, body = LocationResponse),
              (status = 409, body = Problem, description = "location_region_immutable")))]
pub(crate) async fn put_location(
    State(state): State<AppState>,
    PathParams(LocationPath { location: id }): PathParams<LocationPath>,
    body: CommandBody<LocationRequest>,
) -> ApiResult<Json<LocationResponse>> {
    let location = body.value.into_location(LocationId::parse(id)?)?;
    let saved = state.write.put_location(location).await??;
    Ok(Json(LocationResponse {
        location: saved.id.to_string(),
        region: saved.region.to_string(),
        kind: saved.kind.as_str().to_string(),
        name: saved.name,
    }))
}

/// Creates or updates a SKU's catalog data (feeds search).
#[utoipa::path(put, path = "/v1/skus/{sku}", tag = "catalog",
    params(SkuPath),
    request_body = SkuRequest,
    responses((status = 200, body = SkuResponse)))]
pub(crate) async fn put_sku(
    State(state): State<AppState>,
    PathParams(SkuPath { sku }): PathParams<SkuPath>,
    body: CommandBody<SkuRequest>,
) -> ApiResult<Json<SkuResponse>> {
    let sku = Sku::parse(sku)?;
    let (name, attributes) = body.value.validate()?;
    let saved = state.write.put_sku(sku, name, attributes).await?;
    Ok(Json(SkuResponse {
        sku: saved.sku.to_string(),
        name: saved.name,
        attributes: saved.attributes,
        version: saved.version,
    }))
}

/// What a command that ran answers the client: its result, and whether it is the answer
/// recorded by an earlier run.
pub(crate) struct Answered {
    pub(crate) result: CommandResult,
    pub(crate) replayed: bool,
}

/// Runs a command under the caller's idempotency key and records metrics.
pub(super) async fn run(
    state: &AppState,
    identity: &Identity,
    headers: &HeaderMap,
    fingerprint: String,
    command: impl FnOnce() -> ApiResult<Command>,
) -> ApiResult<Answered> {
    let key = idempotency_key(headers)?;
    run_as(state, identity, headers, key, fingerprint, command).await
}

/// Runs a command under `key` in the caller's key space (a request that runs several
/// commands derives one key per command from the client's).
pub(super) async fn run_as(
    state: &AppState,
    identity: &Identity,
    headers: &HeaderMap,
    key: stockflow_domain::IdempotencyKey,
    fingerprint: String,
    command: impl FnOnce() -> ApiResult<Command>,
) -> ApiResult<Answered> {
    let store = identity
        .store_origin(store_named(headers)?.as_ref(), store_seq(headers)?)
        .map_err(ApiError::StoreForbidden)?;
    let command = command()?;
    execute_as(
        state,
        identity,
        store,
        key,
        fingerprint,
        command,
        trace_context(headers),
    )
    .await
}

/// Runs `command` for `identity` under `key` in its key space: the one path every command
/// takes, from a request or from a bulk import's row.
pub(crate) async fn execute_as(
    state: &AppState,
    identity: &Identity,
    store: Option<stockflow_domain::StoreOrigin>,
    key: stockflow_domain::IdempotencyKey,
    fingerprint: String,
    command: Command,
    trace_context: Option<String>,
) -> ApiResult<Answered> {
    let key = identity.scoped_key(key);
    let name = command.name();
    let token = IdempotencyToken { key, fingerprint };
    let _guard = state.in_flight.enter(&token)?;
    let started = Instant::now();
    let request = |trace_context| CommandRequest {
        command,
        idempotency: Some(token),
        trace_context,
        actor: Some(identity.actor(store)),
        // A store's token acts only at its locations: checked by the domain where the
        // command is decided (403 `location_forbidden`).
        grant: identity.location_grant(),
    };
    let result = if traces::enabled() {
        // The events carry the write's span, so their publish and projection hang below it.
        let span = tracing::info_span!("store write", otel.name = %format!("execute {name}"), command = name);
        let request = request(traces::traceparent_of(&span));
        state.write.execute(request).instrument(span).await
    } else {
        state.write.execute(request(trace_context)).await
    };
    let outcome = match &result {
        Ok(executed) => match &executed.answer {
            Err(refusal) => refusal.code(),
            Ok(_) if executed.replayed => "replayed",
            Ok(_) => "applied",
        },
        Err(e) => e.metric_label(),
    };
    metrics::counter!("stockflow_commands_total", "command" => name, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("stockflow_command_duration_seconds", "command" => name)
        .record(started.elapsed().as_secs_f64());
    let executed = result?;
    Ok(Answered {
        result: executed.answer?,
        replayed: executed.replayed,
    })
}

pub(super) fn respond<T: serde::Serialize>(
    status: StatusCode,
    outcome: &Answered,
    body: T,
) -> Response {
    let mut response = (status, Json(body)).into_response();
    if outcome.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub(super) fn reservation_of(result: CommandResult) -> ApiResult<stockflow_domain::Reservation> {
    match result {
        CommandResult::Reservation(r) => Ok(r),
        // The fingerprint names the route, so a key's answer is of its route's kind.
        _ => Err(Refusal::IdempotencyKeyReused.into()),
    }
}

/// Changes on-hand by a delta or to a counted value.
#[utoipa::path(post, path = "/v1/adjustments", tag = "commands",
    params(IdempotencyKeyHeader),
    request_body = AdjustmentRequest,
    responses((status = 200, body = StockLevelResponse),
              (status = 403, body = Problem, description = "location_forbidden, or record_mode_forbidden (mode record from a token without a store's locations claim)"),
              (status = 404, body = Problem, description = "location_not_found"),
              (status = 409, body = Problem, description = "version_conflict, on_hand_conflict (with current_on_hand), insufficient_stock or request_in_progress")))]
pub(crate) async fn adjust(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: CommandBody<AdjustmentRequest>,
) -> ApiResult<Response> {
    let CommandBody { value, fingerprint } = body;
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        Ok(Command::Adjust(value.into_command()?))
    })
    .await?;
    stock_answer(&outcome)
}

/// Moves units between quantity states of one key (a broken unit to damaged, an
/// inspected one back to available, damaged ones gone as a write-off): one version, one
/// event.
#[utoipa::path(post, path = "/v1/moves", tag = "commands",
    params(IdempotencyKeyHeader),
    request_body = MoveRequest,
    responses((status = 200, body = StockLevelResponse),
              (status = 404, body = Problem, description = "location_not_found"),
              (status = 409, body = Problem, description = "insufficient_quantity (the source state holds fewer units; with state, requested, held) or request_in_progress")))]
pub(crate) async fn move_units(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: CommandBody<MoveRequest>,
) -> ApiResult<Response> {
    let CommandBody { value, fingerprint } = body;
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        Ok(Command::Move(value.into_command()?))
    })
    .await?;
    stock_answer(&outcome)
}

/// Sets a SKU's oversell policy and low-stock threshold, or (with `location`) a
/// location's override; a versioned, audited change (`policy_changed`).
#[utoipa::path(post, path = "/v1/policies", tag = "commands",
    params(IdempotencyKeyHeader),
    request_body = PolicyRequest,
    responses((status = 200, description = "The SKU's policy (without location) or the key's level (with location)", body = PolicyResponse),
              (status = 404, body = Problem, description = "location_not_found"),
              (status = 409, body = Problem, description = "policy_version_conflict, version_conflict or request_in_progress")))]
pub(crate) async fn set_policy(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: CommandBody<PolicyRequest>,
) -> ApiResult<Response> {
    let CommandBody { value, fingerprint } = body;
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        Ok(Command::SetPolicy(value.into_command()?))
    })
    .await?;
    match outcome.result.clone() {
        CommandResult::Policy(policy) => Ok(respond(
            StatusCode::OK,
            &outcome,
            PolicyResponse::from(policy),
        )),
        CommandResult::Stock(level) => Ok(respond(
            StatusCode::OK,
            &outcome,
            PolicyResponse::of_location(&level),
        )),
        _ => Err(Refusal::IdempotencyKeyReused.into()),
    }
}

/// Expects a purchase-order line at a location on a day (sent again: revised). Units
/// expected show as `incoming` by date in stock and availability.
#[utoipa::path(post, path = "/v1/incoming", tag = "commands",
    params(IdempotencyKeyHeader),
    request_body = IncomingRequest,
    responses((status = 200, body = StockLevelResponse),
              (status = 404, body = Problem, description = "location_not_found"),
              (status = 409, body = Problem, description = "limit_reached or request_in_progress")))]
pub(crate) async fn expect_incoming(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: CommandBody<IncomingRequest>,
) -> ApiResult<Response> {
    let CommandBody { value, fingerprint } = body;
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        Ok(Command::ExpectIncoming(value.into_command()?))
    })
    .await?;
    stock_answer(&outcome)
}

/// Closes a purchase-order line: what was not received stops being expected.
#[utoipa::path(post, path = "/v1/incoming/close", tag = "commands",
    params(IdempotencyKeyHeader),
    request_body = CloseIncomingRequest,
    responses((status = 200, body = StockLevelResponse),
              (status = 404, body = Problem, description = "location_not_found or incoming_not_found"),
              (status = 409, body = Problem, description = "request_in_progress")))]
pub(crate) async fn close_incoming(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: CommandBody<CloseIncomingRequest>,
) -> ApiResult<Response> {
    let CommandBody { value, fingerprint } = body;
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        Ok(Command::CloseIncoming(value.into_command()?))
    })
    .await?;
    stock_answer(&outcome)
}

/// The answer of a command on one key: its level.
pub(crate) fn stock_answer(outcome: &Answered) -> ApiResult<Response> {
    match outcome.result.clone() {
        CommandResult::Stock(level) => Ok(respond(
            StatusCode::OK,
            outcome,
            StockLevelResponse::from(level),
        )),
        _ => Err(Refusal::IdempotencyKeyReused.into()),
    }
}

/// Holds stock on one or more lines, all or nothing.
#[utoipa::path(post, path = "/v1/reservations", tag = "commands",
    params(IdempotencyKeyHeader),
    request_body = ReservationRequest,
    responses((status = 201, body = ReservationResponse),
              (status = 404, body = Problem, description = "location_not_found or channel_not_found"),
              (status = 409, body = Problem, description = "insufficient_stock (with the short lines; with a channel, what it may take past other channels' ring-fences and within its cap), reservation_exists or request_in_progress"),
              (status = 422, body = Problem, description = "duplicate_line (one (sku, location) twice), conflicting_fields (a line where the channel does not sell), or idempotency_key_reused")))]
pub(crate) async fn reserve(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: CommandBody<ReservationRequest>,
) -> ApiResult<Response> {
    let CommandBody { value, fingerprint } = body;
    let locations = value
        .lines
        .iter()
        .map(|l| LocationId::parse(l.location.clone()))
        .collect::<Result<Vec<_>, _>>();
    // A malformed line is the command's to refuse, with the field it names.
    if let (Ok(Some(channel)), Ok(locations)) = (value.channel(), &locations) {
        let grant = identity.location_grant();
        super::channels::check_channel_lines(&state, &grant, Some(&channel), locations).await?;
    }
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        let reserve = value.into_command(
            || uuid::Uuid::now_v7().to_string(),
            state.reservation_ttl_seconds,
        )?;
        // A bundle line holds its components at the same location.
        Ok(Command::Reserve(state.bundles.expand(reserve)?))
    })
    .await?;
    let reservation = reservation_of(outcome.result.clone())?;
    if !outcome.replayed {
        state.expiry.schedule(reservation.expires_at_ms);
    }
    Ok(respond(
        StatusCode::CREATED,
        &outcome,
        ReservationResponse::from(reservation),
    ))
}

async fn settle(
    state: AppState,
    identity: Identity,
    headers: HeaderMap,
    id: String,
    fingerprint: String,
    make: fn(ReservationId) -> Command,
) -> ApiResult<Response> {
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        Ok(make(ReservationId::parse(id)?))
    })
    .await?;
    let reservation = reservation_of(outcome.result.clone())?;
    Ok(respond(
        StatusCode::OK,
        &outcome,
        ReservationResponse::from(reservation),
    ))
}

/// Turns a reservation into a sale.
#[utoipa::path(post, path = "/v1/reservations/{id}/confirm", tag = "commands",
    params(ReservationPath, IdempotencyKeyHeader),
    responses((status = 200, body = ReservationResponse),
              (status = 404, body = Problem, description = "reservation_not_found"),
              (status = 409, body = Problem, description = "reservation_not_active or request_in_progress")))]
pub(crate) async fn confirm(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    PathParams(ReservationPath { id }): PathParams<ReservationPath>,
    body: OptionalBody,
) -> ApiResult<Response> {
    settle(state, identity, headers, id, body.fingerprint, |id| {
        Command::Confirm { id }
    })
    .await
}

/// Gives held stock back.
#[utoipa::path(post, path = "/v1/reservations/{id}/release", tag = "commands",
    params(ReservationPath, IdempotencyKeyHeader),
    responses((status = 200, body = ReservationResponse),
              (status = 404, body = Problem, description = "reservation_not_found"),
              (status = 409, body = Problem, description = "reservation_not_active or request_in_progress")))]
pub(crate) async fn release(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    PathParams(ReservationPath { id }): PathParams<ReservationPath>,
    body: OptionalBody,
) -> ApiResult<Response> {
    settle(state, identity, headers, id, body.fingerprint, |id| {
        Command::Release { id }
    })
    .await
}

/// A reservation as the write side holds it.
#[utoipa::path(get, path = "/v1/reservations/{id}", tag = "commands",
    params(ReservationPath),
    responses((status = 200, body = ReservationResponse),
              (status = 404, body = Problem, description = "reservation_not_found")))]
pub(crate) async fn get_reservation(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    PathParams(ReservationPath { id }): PathParams<ReservationPath>,
) -> ApiResult<Json<ReservationResponse>> {
    let id = ReservationId::parse(id)?;
    let reservation = state
        .write
        .reservation(&id)
        .await?
        .ok_or(Refusal::ReservationNotFound(id))?;
    // A store's token reads only reservations held entirely at its own locations.
    if let Some(line) = reservation
        .lines
        .iter()
        .find(|l| !identity.may_read_at(l.location.as_str()))
    {
        return Err(ApiError::LocationForbidden(line.location.to_string()));
    }
    Ok(Json(reservation.into()))
}
