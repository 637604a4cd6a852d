//! The command API's transfers: create, ship, receive (in parts), cancel, and read one
//! back from the write side. Every rule is the domain's (`decide::transfer`); these
//! handlers parse, run the command under its `Idempotency-Key` and answer the transfer.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use serde::Deserialize;
use stockflow_domain::{Command, CommandResult, Refusal, Transfer, TransferId};
use utoipa::IntoParams;

use super::AppState;
use super::commands::{Answered, respond, run};
use super::docs::IdempotencyKeyHeader;
use super::extract::{CommandBody, OptionalBody, PathParams};
use super::model::{ReceiveTransferRequest, TransferRequest, TransferResponse, transfer_id};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult, Problem};

/// `{id}` of a transfer in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct TransferPath {
    /// Transfer id.
    #[param(schema_with = transfer_id)]
    pub id: String,
}

fn transfer_of(outcome: &Answered) -> ApiResult<Transfer> {
    match &outcome.result {
        CommandResult::Transfer(t) => Ok(t.clone()),
        // The fingerprint names the route, so a key's answer is of its route's kind.
        _ => Err(Refusal::IdempotencyKeyReused.into()),
    }
}

fn answer(status: StatusCode, outcome: &Answered) -> ApiResult<Response> {
    let transfer = transfer_of(outcome)?;
    Ok(respond(status, outcome, TransferResponse::from(transfer)))
}

/// Creates a transfer between two locations; nothing moves until it ships.
#[utoipa::path(post, path = "/v1/transfers", tag = "commands",
    params(IdempotencyKeyHeader),
    request_body = TransferRequest,
    responses((status = 201, body = TransferResponse),
              (status = 403, body = Problem, description = "location_forbidden (a store's token may create transfers only from its own locations)"),
              (status = 404, body = Problem, description = "location_not_found (from or to)"),
              (status = 409, body = Problem, description = "transfer_exists or request_in_progress"),
              (status = 422, body = Problem, description = "duplicate_line (a SKU twice), conflicting_fields (to is from), or idempotency_key_reused")))]
pub(crate) async fn create_transfer(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: CommandBody<TransferRequest>,
) -> ApiResult<Response> {
    let CommandBody { value, fingerprint } = body;
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        Ok(Command::CreateTransfer(value.into_command()?))
    })
    .await?;
    answer(StatusCode::CREATED, &outcome)
}

/// Runs the command `make` builds for the transfer in the path, with no body.
async fn on_transfer(
    state: AppState,
    identity: Identity,
    headers: HeaderMap,
    id: String,
    fingerprint: String,
    make: fn(TransferId) -> Command,
) -> ApiResult<Response> {
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        Ok(make(TransferId::parse(id)?))
    })
    .await?;
    answer(StatusCode::OK, &outcome)
}

/// Ships a transfer, all lines or none: each line's units leave the source's on-hand
/// (`transfer_shipped`) and are in transit to the destination, counted in its `incoming`
/// on the expected day (`transfer_in_transit`).
#[utoipa::path(post, path = "/v1/transfers/{id}/ship", tag = "commands",
    params(TransferPath, IdempotencyKeyHeader),
    responses((status = 200, body = TransferResponse),
              (status = 403, body = Problem, description = "location_forbidden (a store's token ships only from its own locations)"),
              (status = 404, body = Problem, description = "transfer_not_found"),
              (status = 409, body = Problem, description = "insufficient_stock (with the short lines; nothing shipped), transfer_status_conflict (not created: shipped, received or cancelled) or request_in_progress")))]
pub(crate) async fn ship_transfer(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    PathParams(TransferPath { id }): PathParams<TransferPath>,
    body: OptionalBody,
) -> ApiResult<Response> {
    on_transfer(state, identity, headers, id, body.fingerprint, |id| {
        Command::ShipTransfer { id }
    })
    .await
}

/// Receives (some of) a shipped transfer at its destination: good units become
/// available, damaged ones land in `damaged` (`transfer_received`). Receipts may come in
/// parts. The transfer closes when every unit is accounted for, or with `close`: what
/// never arrived leaves the destination's in-transit as a discrepancy movement of its own
/// (`transfer_discrepancy`, reason shrinkage).
#[utoipa::path(post, path = "/v1/transfers/{id}/receive", tag = "commands",
    params(TransferPath, IdempotencyKeyHeader),
    request_body = ReceiveTransferRequest,
    responses((status = 200, body = TransferResponse),
              (status = 403, body = Problem, description = "location_forbidden (a store's token receives only at its own locations)"),
              (status = 404, body = Problem, description = "transfer_not_found"),
              (status = 409, body = Problem, description = "transfer_status_conflict (not in transit), transfer_quantity_exceeded (more than is outstanding, or a SKU the transfer lacks) or request_in_progress")))]
pub(crate) async fn receive_transfer(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    PathParams(TransferPath { id }): PathParams<TransferPath>,
    body: CommandBody<ReceiveTransferRequest>,
) -> ApiResult<Response> {
    let CommandBody { value, fingerprint } = body;
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        Ok(Command::ReceiveTransfer(
            value.into_command(TransferId::parse(id)?)?,
        ))
    })
    .await?;
    answer(StatusCode::OK, &outcome)
}

/// Cancels a transfer that has not shipped; nothing had moved.
#[utoipa::path(post, path = "/v1/transfers/{id}/cancel", tag = "commands",
    params(TransferPath, IdempotencyKeyHeader),
    responses((status = 200, body = TransferResponse),
              (status = 403, body = Problem, description = "location_forbidden (a store's token cancels only transfers from its own locations)"),
              (status = 404, body = Problem, description = "transfer_not_found"),
              (status = 409, body = Problem, description = "transfer_status_conflict (already shipped, received or cancelled) or request_in_progress")))]
pub(crate) async fn cancel_transfer(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    PathParams(TransferPath { id }): PathParams<TransferPath>,
    body: OptionalBody,
) -> ApiResult<Response> {
    on_transfer(state, identity, headers, id, body.fingerprint, |id| {
        Command::CancelTransfer { id }
    })
    .await
}

/// A transfer as the write side holds it.
#[utoipa::path(get, path = "/v1/transfers/{id}", tag = "commands",
    params(TransferPath),
    responses((status = 200, body = TransferResponse),
              (status = 404, body = Problem, description = "transfer_not_found")))]
pub(crate) async fn get_transfer(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    PathParams(TransferPath { id }): PathParams<TransferPath>,
) -> ApiResult<Json<TransferResponse>> {
    let id = TransferId::parse(id)?;
    let transfer = state
        .write
        .transfer(&id)
        .await?
        .ok_or(Refusal::TransferNotFound(id))?;
    // A store's token reads the transfers it takes part in: from or to one of its
    // locations (the receiving store must see what is coming).
    if !identity.may_read_at(transfer.from.as_str()) && !identity.may_read_at(transfer.to.as_str())
    {
        return Err(ApiError::LocationForbidden(transfer.from.to_string()));
    }
    Ok(Json(transfer.into()))
}
