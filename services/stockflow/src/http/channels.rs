//! The checks a request naming a sales channel passes first: the channel exists (404
//! `channel_not_found`) and sells from each location the request names (422).

use stockflow_domain::{Channel, ChannelId, LocationGrant, LocationId, ValidationError};

use super::AppState;
use crate::error::{ApiError, ApiResult};

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
    let channel = recent_channel(state, id).await?;
    for (i, location) in locations.iter().enumerate() {
        sells_from(&channel, location, &format!("lines[{i}].location"))?;
    }
    Ok(())
}

/// The channel a query's `channel` parameter names, if it names one: a valid id (422) of
/// a stored channel (404).
pub(crate) async fn queried_channel(
    state: &AppState,
    param: Option<String>,
) -> ApiResult<Option<Channel>> {
    match param.map(ChannelId::parse).transpose()? {
        Some(id) => Ok(Some(channel_of(state, &id).await?)),
        None => Ok(None),
    }
}

/// The stored channel `id`, or 404.
pub(crate) async fn channel_of(state: &AppState, id: &ChannelId) -> ApiResult<Channel> {
    state
        .write
        .channel(id)
        .await?
        .ok_or_else(|| ApiError::ChannelNotFound(id.to_string()))
}

/// The channel `id` as this process read it lately (within 2 s), or 404: for the checks on
/// the reservation path, which a definition a moment old serves as well.
pub(crate) async fn recent_channel(
    state: &AppState,
    id: &ChannelId,
) -> ApiResult<std::sync::Arc<Channel>> {
    state
        .channels
        .get(&*state.write, id)
        .await?
        .ok_or_else(|| ApiError::ChannelNotFound(id.to_string()))
}

pub(crate) fn sells_from(channel: &Channel, location: &LocationId, field: &str) -> ApiResult<()> {
    if channel.rank(location).is_none() {
        return Err(ValidationError::conflict(
            field,
            format!("channel {} does not sell from {location}", channel.id),
        )
        .into());
    }
    Ok(())
}
