//! Channel allocations: `POST /v1/allocations` sets one channel's ring-fence and cap at
//! one key, a versioned, audited key change decided by the domain.

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use stockflow_domain::Command;

use super::AppState;
use super::channels::{channel_of, sells_from};
use super::commands::{run, stock_answer};
use super::docs::IdempotencyKeyHeader;
use super::extract::CommandBody;
use super::model::*;
use crate::auth::Identity;
use crate::error::{ApiResult, Problem};

/// Sets (or, with neither a fence above zero nor a cap, removes) a channel's ring-fence
/// and cap at one key: one version, one `allocation_changed` event. Reservations for other
/// channels (and for none) are refused the fenced units; the channel's own are refused
/// past its cap.
#[utoipa::path(post, path = "/v1/allocations", tag = "commands",
    params(IdempotencyKeyHeader),
    request_body = AllocationRequest,
    responses((status = 200, description = "The key's level, with each channel's share", body = StockLevelResponse),
              (status = 404, body = Problem, description = "channel_not_found or location_not_found"),
              (status = 409, body = Problem, description = "version_conflict, limit_reached (32 channels per key) or request_in_progress"),
              (status = 422, body = Problem, description = "conflicting_fields (the channel does not sell from the location; cap_units with cap_percent) or idempotency_key_reused")))]
pub(crate) async fn set_allocation(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: CommandBody<AllocationRequest>,
) -> ApiResult<Response> {
    let CommandBody { value, fingerprint } = body;
    let location = value.location()?;
    // Forbidden before anything is looked up: a caller outside the location learns nothing
    // of the channels.
    identity.location_grant().check(&location)?;
    let channel = channel_of(&state, &value.channel()?).await?;
    sells_from(&channel, &location, "location")?;
    let outcome = run(&state, &identity, &headers, fingerprint, || {
        Ok(Command::SetAllocation(value.into_command()?))
    })
    .await?;
    stock_answer(&outcome)
}
