//! Channel allocations: `POST /v1/allocations` sets one channel's ring-fence and cap at
//! one key (a versioned, audited key change decided by the domain), and the check every
//! reservation naming a channel passes first: the channel exists and sells from each
//! line's location.

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use stockflow_domain::{Channel, ChannelId, Command, LocationGrant, LocationId, ValidationError};

use super::AppState;
use super::commands::{run, stock_answer};
use super::docs::IdempotencyKeyHeader;
use super::extract::CommandBody;
use super::model::*;
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult, Problem};

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

/// Refuses a reservation for `channel` (if any) with a line at a location the channel
/// does not sell from, or for a channel that does not exist; a line outside the caller's
/// `grant` first, before the channel is looked up.
pub(crate) async fn check_channel_lines(
    state: &AppState,
    grant: &LocationGrant,
    channel: Option<&ChannelId>,
    locations: &[LocationId],
) -> ApiResult<()> {
    let Some(id) = channel else { return Ok(()) };
    grant.check_all(locations.iter())?;
    let channel = channel_of(state, id).await?;
    for (i, location) in locations.iter().enumerate() {
        sells_from(&channel, location, &format!("lines[{i}].location"))?;
    }
    Ok(())
}

/// The stored channel `id`, or 404.
pub(crate) async fn channel_of(state: &AppState, id: &ChannelId) -> ApiResult<Channel> {
    state
        .write
        .channel(id)
        .await?
        .ok_or_else(|| ApiError::ChannelNotFound(id.to_string()))
}

fn sells_from(channel: &Channel, location: &LocationId, field: &str) -> ApiResult<()> {
    if channel.rank(location).is_none() {
        return Err(ValidationError::conflict(
            field,
            format!("channel {} does not sell from {location}", channel.id),
        )
        .into());
    }
    Ok(())
}
