//! Sales channels, region-level reservations and pickup availability.
//!
//! A region-level reservation is planned by the domain from the write side's current
//! levels and made as an ordinary reservation of the chosen keys. When a concurrent
//! checkout took planned stock first, the reservation is refused key-side and planned
//! again from fresh levels: each plan runs under its own idempotency key derived from the
//! client's, so a retry of the request walks the same keys, meets each recorded answer,
//! and never applies twice.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Json};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use stockflow_domain::sourcing::{
    Part, Place, Rules, Strategy, bundle, expand, lines_of, offers, source,
};
use stockflow_domain::{
    Channel, ChannelId, Command, IdempotencyKey, LocationGrant, LocationId, LocationKind, Refusal,
    Region, ReservationId, Reserve, Sku, StockKey, StockLevel,
};
use stockflow_storage::StoreError;
use utoipa::IntoParams;

use super::AppState;
use super::channels::{channel_of, queried_channel, recent_channel};
use super::commands::{Answered, reservation_of, respond, run_as};
use super::docs::{self, IdempotencyKeyHeader, SkuPath};
use super::extract::{CommandBody, PathParams, QueryParams, idempotency_key};
use super::model::*;
use super::queries::{Audience, cached};
use super::surrogate::Tags;
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult, Problem};

/// Plans one region-level reservation may make before it answers 409: each plan after
/// the first follows a checkout that won planned stock, so this many in a row is rare.
const MAX_PLANS: u32 = 16;

/// `{channel}` in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ChannelPath {
    /// Sales channel.
    #[param(schema_with = docs::channel)]
    pub channel: String,
}

/// `{channel}/availability/{sku}` in a path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct ChannelSkuPath {
    /// Sales channel.
    #[param(schema_with = docs::channel)]
    pub channel: String,
    /// SKU.
    #[param(schema_with = docs::sku)]
    pub sku: String,
}

/// `?region=&channel=` of the pickup query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PickupFilter {
    /// Only stores of this region.
    #[param(schema_with = docs::region)]
    pub region: Option<String>,
    /// Only the channel's stores, with its pickup thresholds.
    #[param(schema_with = docs::channel)]
    pub channel: Option<String>,
}

/// Creates or replaces a sales channel.
#[utoipa::path(put, path = "/v1/channels/{channel}", tag = "catalog",
    params(ChannelPath),
    request_body = ChannelRequest,
    responses((status = 200, body = ChannelResponse),
              (status = 403, body = Problem, description = "location_forbidden (a store's token listing another location)"),
              (status = 422, body = Problem, description = "duplicate_line (a location listed twice)")))]
pub(crate) async fn put_channel(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    PathParams(ChannelPath { channel }): PathParams<ChannelPath>,
    body: CommandBody<ChannelRequest>,
) -> ApiResult<Json<ChannelResponse>> {
    let channel = body.value.into_channel(ChannelId::parse(channel)?)?;
    // A store's token may only list its own locations: a channel decides where stock
    // is reserved.
    identity
        .location_grant()
        .check_all(channel.locations.iter().map(|l| &l.location))?;
    let saved = state.write.put_channel(channel).await?;
    state.channels.learn(saved.clone());
    Ok(Json(saved.into()))
}

/// A sales channel.
#[utoipa::path(get, path = "/v1/channels/{channel}", tag = "catalog",
    params(ChannelPath),
    responses((status = 200, body = ChannelResponse),
              (status = 404, body = Problem, description = "channel_not_found")))]
pub(crate) async fn get_channel(
    State(state): State<AppState>,
    PathParams(ChannelPath { channel }): PathParams<ChannelPath>,
) -> ApiResult<Json<ChannelResponse>> {
    Ok(Json(
        channel_of(&state, &ChannelId::parse(channel)?)
            .await?
            .into(),
    ))
}

/// Reserves lines at locations the platform chooses within a channel or region.
#[utoipa::path(post, path = "/v1/sourcing/reservations", tag = "commands",
    params(IdempotencyKeyHeader),
    request_body = SourcedReservationRequest,
    responses((status = 201, body = SourcedReservationResponse),
              (status = 404, body = Problem, description = "channel_not_found"),
              (status = 409, body = Problem, description = "insufficient_stock_in_region (with each line's stock in the candidates), insufficient_stock (every plan lost its stock to other checkouts), reservation_exists or request_in_progress"),
              (status = 422, body = Problem, description = "duplicate_line (a SKU twice), conflicting_fields (neither channel nor region), or idempotency_key_reused")))]
pub(crate) async fn reserve_sourced(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    body: CommandBody<SourcedReservationRequest>,
) -> ApiResult<Response> {
    let CommandBody { value, fingerprint } = body;
    let request = value.validate()?;
    let key = idempotency_key(&headers)?;
    // Without a client id, the id is derived from the caller's key and the request, so a
    // retry whose answer was lost finds its reservation whatever the stock is now, and a
    // re-plan can never make a second one (the id is taken).
    let derived = request.id.is_none();
    let id = match request.id {
        Some(id) => id,
        None => derived_id(&identity.scoped_key(key.clone()).to_string(), &fingerprint)?,
    };
    if derived && let Some(made) = state.write.reservation(&id).await? {
        return replay(made);
    }
    let bundles = state.bundles.snapshot();
    bundle::no_shared_components(&request.demands, &bundles)?;
    let channel = match &request.channel {
        Some(id) => Some(recent_channel(&state, id).await?),
        None => None,
    };
    let rules = Rules {
        strategy: request
            .strategy
            .or(channel.as_ref().map(|c| c.strategy))
            .unwrap_or(Strategy::FewestSplits),
        allow_split: request
            .allow_split
            .or(channel.as_ref().map(|c| c.allow_split))
            .unwrap_or(true),
    };
    let ttl = request.ttl_seconds.unwrap_or(state.reservation_ttl_seconds);
    // Bundles are planned as what each location can make of them, and reserved as their
    // components there.
    let skus: Vec<Sku> = request
        .demands
        .iter()
        .flat_map(|d| bundle::stock_skus(&d.sku, bundles.get(&d.sku)))
        .collect();
    let keys = candidate_keys(
        &state,
        channel.as_deref(),
        request.region.as_ref(),
        &skus,
        &identity.location_grant(),
    )
    .await?;
    let expanded_lines =
        |parts: &[Part]| expand(lines_of(parts), &bundles).map_or(usize::MAX, |l| l.len());
    let mut last_short = None;
    for attempt in 0..MAX_PLANS {
        let levels = load_levels(&state, &keys).await?;
        let places: Vec<Place<'_>> = levels
            .iter()
            .map(|(rank, level)| Place { rank: *rank, level })
            .collect();
        let offers = offers(
            &request.demands,
            &places,
            &bundles,
            request.channel.as_ref(),
        );
        let parts = source(&request.demands, &offers, rules, expanded_lines)?;
        let reserve = Reserve::new(id.clone(), lines_of(&parts), ttl, request.reference.clone())?
            .for_channel(request.channel.clone());
        let reserve = state.bundles.expand(reserve)?;
        let outcome = run_as(
            &state,
            &identity,
            &headers,
            plan_key(&key, attempt)?,
            fingerprint.clone(),
            || Ok(Command::Reserve(reserve)),
        )
        .await;
        match outcome {
            // A checkout took planned stock first (now, or in a run this retry repeats).
            Err(ApiError::Refused(refusal @ Refusal::InsufficientStock { .. })) => {
                metrics::counter!("stockflow_sourcing_replans_total").increment(1);
                last_short = Some(refusal);
                continue;
            }
            // The same request, sent again while this one ran, made it first.
            Err(ApiError::Refused(Refusal::ReservationExists(_))) if derived => {
                if let Some(made) = state.write.reservation(&id).await? {
                    return replay(made);
                }
                return Err(Refusal::ReservationExists(id).into());
            }
            Err(e) => return Err(e),
            Ok(outcome) => return answer(&state, outcome, parts, attempt + 1),
        }
    }
    // Every plan lost its stock to another checkout. A 409, not a 503: each plan's refusal
    // is recorded under its key, so a retry of this request would walk the same refusals.
    Err(last_short
        .unwrap_or(Refusal::InsufficientStock { lines: Vec::new() })
        .into())
}

/// The id of a reservation the client did not name: a digest of its caller-scoped key and
/// its request, so only a retry of this request derives it.
fn derived_id(scoped_key: &str, fingerprint: &str) -> ApiResult<ReservationId> {
    let digest = Sha256::digest(format!("{scoped_key}\n{fingerprint}").as_bytes());
    Ok(ReservationId::parse(format!(
        "src-{}",
        hex::encode(&digest[..16])
    ))?)
}

/// A retried request's reservation, answered as a replay (its plan is not kept).
fn replay(made: stockflow_domain::Reservation) -> ApiResult<Response> {
    let outcome = Answered {
        result: stockflow_domain::CommandResult::Reservation(made.clone()),
        replayed: true,
    };
    Ok(respond(
        StatusCode::CREATED,
        &outcome,
        SourcedReservationResponse {
            reservation: made.into(),
            sourcing: None,
            attempts: 0,
        },
    ))
}

fn answer(
    state: &AppState,
    outcome: Answered,
    parts: Vec<stockflow_domain::sourcing::Part>,
    attempts: u32,
) -> ApiResult<Response> {
    let reservation = reservation_of(outcome.result.clone())?;
    if !outcome.replayed {
        state.expiry.schedule(reservation.expires_at_ms);
    }
    let sourcing = (!outcome.replayed).then(|| parts.into_iter().map(Into::into).collect());
    Ok(respond(
        StatusCode::CREATED,
        &outcome,
        SourcedReservationResponse {
            reservation: reservation.into(),
            sourcing,
            attempts,
        },
    ))
}

/// The key plan `attempt` (0 first) runs under: the client's own for the first; for the
/// rest a digest of it with the attempt, so every retry of the request derives the same
/// keys in the same order, and no key a client would pick by hand collides with one.
fn plan_key(key: &IdempotencyKey, attempt: u32) -> ApiResult<IdempotencyKey> {
    if attempt == 0 {
        return Ok(key.clone());
    }
    let digest = Sha256::digest(key.as_str().as_bytes());
    Ok(IdempotencyKey::parse(format!(
        "plan.{}.{attempt}",
        hex::encode(&digest[..16])
    ))?)
}

/// The keys a plan may use, each with its location's rank: every location the read model
/// shows holding each SKU, within the channel (ranked by it) and region, where the caller
/// may reserve. Locations without a row never held the SKU, so they cannot give any.
async fn candidate_keys(
    state: &AppState,
    channel: Option<&Channel>,
    region: Option<&Region>,
    skus: &[Sku],
    grant: &LocationGrant,
) -> ApiResult<Vec<(usize, StockKey)>> {
    let mut keys = Vec::new();
    for sku in skus {
        for row in state.read.stock_by_sku(sku.as_str()).await? {
            if region.is_some_and(|r| r.as_str() != row.region) {
                continue;
            }
            let Ok(location) = LocationId::parse(row.location) else {
                continue;
            };
            let rank = match channel {
                Some(c) => match c.rank(&location) {
                    Some(rank) => rank,
                    None => continue,
                },
                None => 0,
            };
            if grant.permits(&location) {
                keys.push((rank, StockKey::new(sku.clone(), location)));
            }
        }
    }
    Ok(keys)
}

/// The write side's current level of each key (those never written are left out).
async fn load_levels(
    state: &AppState,
    keys: &[(usize, StockKey)],
) -> ApiResult<Vec<(usize, StockLevel)>> {
    let loads = keys.iter().map(|(rank, key)| async move {
        Ok::<_, StoreError>(state.write.stock_level(key).await?.map(|l| (*rank, l)))
    });
    Ok(futures::future::try_join_all(loads)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// The stores that can hand a SKU over now: available above their pickup threshold.
#[utoipa::path(get, path = "/v1/pickup/{sku}", tag = "queries",
    params(SkuPath, PickupFilter, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = PickupResponse), (status = 304, description = "Not modified"),
              (status = 404, body = Problem, description = "channel_not_found")))]
pub(crate) async fn pickup(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathParams(SkuPath { sku }): PathParams<SkuPath>,
    QueryParams(filter): QueryParams<PickupFilter>,
) -> ApiResult<Response> {
    let sku = Sku::parse(sku)?;
    let region = filter.region.map(Region::parse).transpose()?;
    let channel = queried_channel(&state, filter.channel).await?;
    let mut kinds: BTreeMap<String, bool> = BTreeMap::new();
    let mut stores = Vec::new();
    for row in state.read.stock_by_sku(sku.as_str()).await? {
        if region.as_ref().is_some_and(|r| r.as_str() != row.region) {
            continue;
        }
        let Ok(location) = LocationId::parse(row.location.clone()) else {
            continue;
        };
        let (rank, threshold) = match &channel {
            Some(c) => match (c.rank(&location), c.pickup_threshold(&location)) {
                (Some(rank), Some(threshold)) => (rank, threshold),
                _ => continue,
            },
            None => (0, 0),
        };
        // Without a channel, what any channel could take; with one, what it may.
        let available = row.available_to(channel.as_ref().map(|c| &c.id));
        if available <= threshold {
            continue;
        }
        let is_store = match kinds.get(&row.location) {
            Some(known) => *known,
            None => {
                let kind = state.write.location(&location).await?.map(|l| l.kind);
                let is_store = kind == Some(LocationKind::Store);
                kinds.insert(row.location.clone(), is_store);
                is_store
            }
        };
        if is_store {
            stores.push((
                rank,
                PickupStore {
                    location: row.location,
                    region: row.region,
                    available,
                    pickup_threshold: threshold,
                },
            ));
        }
    }
    // By channel priority; without a channel (every rank 0), most available first.
    stores.sort_by(|(ra, a), (rb, b)| {
        ra.cmp(rb)
            .then(b.available.cmp(&a.available))
            .then(a.location.cmp(&b.location))
    });
    let body = PickupResponse {
        sku: sku.to_string(),
        stores: stores.into_iter().map(|(_, s)| s).collect(),
    };
    // Also depends on the channel and the locations' kinds, which purge nothing.
    let tags = body
        .stores
        .iter()
        .fold(Tags::inexact().sku(&body.sku), |t, s| {
            t.location(&s.location)
        });
    cached(&state, &headers, &body, Audience::Everyone, tags)
}

/// What a channel may sell of a SKU: the sum over its locations.
#[utoipa::path(get, path = "/v1/channels/{channel}/availability/{sku}", tag = "queries",
    params(ChannelSkuPath, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = ChannelAvailabilityResponse), (status = 304, description = "Not modified"),
              (status = 404, body = Problem, description = "channel_not_found")))]
pub(crate) async fn channel_availability(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathParams(ChannelSkuPath { channel, sku }): PathParams<ChannelSkuPath>,
) -> ApiResult<Response> {
    let sku = Sku::parse(sku)?;
    let channel = channel_of(&state, &ChannelId::parse(channel)?).await?;
    // What the channel may take at each location: what is available there, less other
    // channels' ring-fences, within its cap (never below zero).
    let rows: BTreeMap<String, i64> = state
        .read
        .stock_by_sku(sku.as_str())
        .await?
        .into_iter()
        .map(|row| {
            let available = row.available_to(Some(&channel.id));
            (row.location, available)
        })
        .collect();
    let locations: Vec<ChannelLocationAvailability> = channel
        .locations
        .iter()
        .map(|l| ChannelLocationAvailability {
            location: l.location.to_string(),
            available: rows.get(l.location.as_str()).copied().unwrap_or(0),
        })
        .collect();
    let body = ChannelAvailabilityResponse {
        sku: sku.to_string(),
        channel: channel.id.to_string(),
        total_available: locations.iter().map(|l| l.available).sum(),
        locations,
    };
    // Also depends on the channel's settings, which purge nothing.
    let tags = Tags::inexact().sku(&body.sku);
    cached(&state, &headers, &body, Audience::Everyone, tags)
}
