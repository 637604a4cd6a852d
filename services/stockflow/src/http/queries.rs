//! The query API: read models only, with `ETag`, `Cache-Control`, surrogate keys for an
//! edge cache ([`super::surrogate`]) and conditional GETs.

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stockflow_domain::sourcing::{Bundle, bundle::stock_skus};
use stockflow_domain::{
    Channel, IdempotencyKey, LocationId, Region, ReservationId, Sku, ValidationError, read_model,
};
use stockflow_storage::StoreError;
use stockflow_storage::ports::{Movement, ReadStore};
use utoipa::IntoParams;

use super::AppState;
use super::docs::{self, SkuLocationPath, SkuPath};
use super::extract::{PathParams, QueryParams};
use super::model::*;
use super::surrogate::Tags;
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult, Problem};

/// Edge caches may serve a response for a second and revalidate in the background for two
/// more: stock moves fast, but a burst of identical reads should not reach the origin.
/// While the origin fails, a cache (or a client) may keep serving what it has for an hour
/// (`surrogate::STALE_IF_ERROR_SECS`): shoppers see slightly old stock instead of errors.
pub(super) const CACHE_CONTROL: &str =
    "public, max-age=1, stale-while-revalidate=2, stale-if-error=3600";

/// The answer to a caller limited to some locations is cut to them: no shared cache may
/// keep it for another caller.
const CACHE_CONTROL_PRIVATE: &str = "private, max-age=1";

/// Who may see an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Audience {
    /// Any caller with `stock:read` gets the same bytes.
    Everyone,
    /// Cut to one caller's locations.
    Caller,
}

impl Audience {
    fn of(identity: &Identity) -> Self {
        if identity.is_limited_to_locations() {
            Audience::Caller
        } else {
            Audience::Everyone
        }
    }
}

/// A store's token reads stock and movements only at its own locations (region
/// availability and search are for every `stock:read` caller).
fn readable_at(identity: &Identity, location: &LocationId) -> ApiResult<()> {
    if identity.may_read_at(location.as_str()) {
        Ok(())
    } else {
        Err(ApiError::LocationForbidden(location.to_string()))
    }
}

/// Serializes `body` with an `ETag` over its bytes, answering 304 when the client has it.
/// A response for everyone carries its surrogate keys `tags` (on a 304 too, so a cache that
/// revalidates keeps them); one cut to a caller carries none, as no shared cache keeps it.
pub(super) fn cached<T: Serialize>(
    state: &AppState,
    headers: &HeaderMap,
    body: &T,
    audience: Audience,
    tags: Tags,
) -> ApiResult<Response> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ApiError::Internal(format!("response does not serialize: {e}")))?;
    let digest = Sha256::digest(&bytes);
    let etag = format!("\"{}\"", hex::encode(&digest[..12]));
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().trim_start_matches("W/"))
        .any(|v| v == etag || v == "*");
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    match audience {
        Audience::Everyone => {
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_CONTROL),
            );
            tags.apply(h, state.edge_ttl_seconds);
        }
        Audience::Caller => {
            h.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(CACHE_CONTROL_PRIVATE),
            );
            h.insert(header::VARY, HeaderValue::from_static("authorization"));
        }
    }
    Ok(response)
}

/// Stock of a SKU at every location.
#[utoipa::path(get, path = "/v1/stock/{sku}", tag = "queries",
    params(SkuPath, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = SkuStockResponse, description = "With ETag and Cache-Control",
               headers(("ETag" = String, description = "Over the body's bytes"),
                       ("Cache-Control" = String, description = "public, max-age=1, stale-while-revalidate=2, stale-if-error=3600; private to a caller limited to locations"),
                       ("Surrogate-Key" = String, description = "Edge-cache tags (public answers only): stockflow, sku:<sku>, loc:<location>, region:<region>, search; purged when what they name changes"),
                       ("Cache-Tag" = String, description = "The same tags, comma-separated"),
                       ("Surrogate-Control" = String, description = "max-age for an edge cache the platform purges (with --edge-ttl-seconds)"))),
              (status = 304, description = "Not modified")))]
pub(crate) async fn stock_by_sku(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    PathParams(SkuPath { sku }): PathParams<SkuPath>,
) -> ApiResult<Response> {
    let sku = Sku::parse(sku)?;
    let mut rows = state.read.stock_by_sku(sku.as_str()).await?;
    rows.retain(|r| identity.may_read_at(&r.location));
    let as_of = rows.iter().map(|r| r.as_of_ms).max().map(rfc3339);
    let body = SkuStockResponse {
        sku: sku.to_string(),
        total_available: rows.iter().map(|r| r.available).sum(),
        locations: rows.into_iter().map(LocationStock::from).collect(),
        as_of,
    };
    let tags = body
        .locations
        .iter()
        .fold(Tags::exact().sku(&body.sku), |t, l| t.location(&l.location));
    cached(&state, &headers, &body, Audience::of(&identity), tags)
}

/// Stock of a SKU at one location.
#[utoipa::path(get, path = "/v1/stock/{sku}/{location}", tag = "queries",
    params(SkuLocationPath, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = LocationStock, headers(("ETag" = String, description = "Over the body's bytes"),
                       ("Cache-Control" = String, description = "public, max-age=1, stale-while-revalidate=2, stale-if-error=3600; private to a caller limited to locations"),
                       ("Surrogate-Key" = String, description = "Edge-cache tags (public answers only): stockflow, sku:<sku>, loc:<location>, region:<region>, search; purged when what they name changes"),
                       ("Cache-Tag" = String, description = "The same tags, comma-separated"),
                       ("Surrogate-Control" = String, description = "max-age for an edge cache the platform purges (with --edge-ttl-seconds)"))),
              (status = 304, description = "Not modified"),
              (status = 404, body = Problem, description = "not_found: no stock row for the key")))]
pub(crate) async fn stock_at(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    PathParams(SkuLocationPath { sku, location }): PathParams<SkuLocationPath>,
) -> ApiResult<Response> {
    let sku = Sku::parse(sku)?;
    let location = LocationId::parse(location)?;
    readable_at(&identity, &location)?;
    let row = state
        .read
        .stock_at(sku.as_str(), location.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no stock of {sku} at {location}")))?;
    let tags = Tags::exact()
        .sku(sku.as_str())
        .location(location.as_str())
        .region(&row.region);
    cached(
        &state,
        &headers,
        &LocationStock::from(row),
        Audience::of(&identity),
        tags,
    )
}

/// `?region=` of the availability query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RegionFilter {
    /// Only this region.
    #[param(schema_with = docs::region)]
    pub region: Option<String>,
}

/// `?region=&channel=` of the availability query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AvailabilityFilter {
    /// Only this region.
    #[param(schema_with = docs::region)]
    pub region: Option<String>,
    /// What this sales channel may take: only its locations, each counting other channels'
    /// ring-fences and the channel's cap.
    #[param(schema_with = docs::channel)]
    pub channel: Option<String>,
}

/// Available stock of a SKU summed per region (for one sales channel with `channel`).
#[utoipa::path(get, path = "/v1/availability/{sku}", tag = "queries",
    params(SkuPath, AvailabilityFilter, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = AvailabilityResponse, headers(("ETag" = String, description = "Over the body's bytes"),
                       ("Cache-Control" = String, description = "public, max-age=1, stale-while-revalidate=2, stale-if-error=3600; private to a caller limited to locations"),
                       ("Surrogate-Key" = String, description = "Edge-cache tags (public answers only): stockflow, sku:<sku>, loc:<location>, region:<region>, search; purged when what they name changes"),
                       ("Cache-Tag" = String, description = "The same tags, comma-separated"),
                       ("Surrogate-Control" = String, description = "max-age for an edge cache the platform purges (with --edge-ttl-seconds)"))),
              (status = 304, description = "Not modified"),
              (status = 404, body = Problem, description = "channel_not_found")))]
pub(crate) async fn availability(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathParams(SkuPath { sku }): PathParams<SkuPath>,
    QueryParams(filter): QueryParams<AvailabilityFilter>,
) -> ApiResult<Response> {
    let sku = Sku::parse(sku)?;
    let region = filter.region.map(Region::parse).transpose()?;
    let channel = super::channels::queried_channel(&state, filter.channel).await?;
    let bundle = state.bundles.snapshot().get(&sku).cloned();
    if channel.is_some() || bundle.is_some() {
        return derived_availability(&state, &headers, sku, region, channel, bundle).await;
    }
    let rows = state
        .read
        .availability(sku.as_str(), region.as_ref().map(Region::as_str))
        .await?;
    let body = AvailabilityResponse {
        sku: sku.to_string(),
        total_available: rows.iter().map(|r| r.available).sum(),
        regions: rows.into_iter().map(Into::into).collect(),
    };
    let tags = body
        .regions
        .iter()
        .fold(Tags::exact().sku(&body.sku), |t, r| t.region(&r.region));
    cached(&state, &headers, &body, Audience::Everyone, tags)
}

/// A SKU's availability per region summed here from location rows: for one channel (its
/// locations, each counting other channels' fences and its cap), and for a bundle (the
/// sets its components' rows make).
async fn derived_availability(
    state: &AppState,
    headers: &HeaderMap,
    sku: Sku,
    region: Option<Region>,
    channel: Option<Channel>,
    bundle: Option<Bundle>,
) -> ApiResult<Response> {
    let skus = stock_skus(&sku, bundle.as_ref());
    let rows = rows_of(state, &skus, region.as_ref(), channel.as_ref()).await?;
    let for_channel = channel.as_ref().map(|c| &c.id);
    let regions = match (&bundle, for_channel) {
        (Some(b), _) => read_model::bundle_regions(b, &rows, for_channel),
        (None, Some(c)) => read_model::channel_regions(sku.as_str(), &rows, c),
        (None, None) => Vec::new(),
    };
    let body = AvailabilityResponse {
        sku: sku.to_string(),
        total_available: regions.iter().map(|r| r.available).sum(),
        regions: regions.into_iter().map(Into::into).collect(),
    };
    // Also depends on the channel's locations and the bundle's composition, which purge
    // nothing.
    let tags = skus
        .iter()
        .fold(Tags::inexact().sku(&body.sku), |t, s| t.sku(s.as_str()));
    let tags = rows.iter().fold(tags, |t, r| t.location(&r.location));
    cached(state, headers, &body, Audience::Everyone, tags)
}

/// The stock rows of `skus` in `region` (if given), at the locations `channel` sells from
/// (if given).
pub(crate) async fn rows_of(
    state: &AppState,
    skus: &[Sku],
    region: Option<&Region>,
    channel: Option<&Channel>,
) -> ApiResult<Vec<read_model::InventoryRow>> {
    let mut rows = Vec::new();
    for sku in skus {
        rows.extend(
            state
                .read
                .stock_by_sku(sku.as_str())
                .await?
                .into_iter()
                .filter(|row| region.is_none_or(|r| r.as_str() == row.region))
                .filter(|row| channel.is_none_or(|c| sells_at(c, &row.location))),
        );
    }
    Ok(rows)
}

/// Whether `channel` sells from `location` (a row's location as stored).
fn sells_at(channel: &Channel, location: &str) -> bool {
    LocationId::parse(location.to_string()).is_ok_and(|l| channel.rank(&l).is_some())
}

/// Query string of the movement history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct MovementParams {
    // Stated inline rather than through `schema_with`, which would drop `required`; the
    // document test checks the pattern is the domain's `ID_PATTERN`.
    /// SKU: 1-64 characters of A-Z a-z 0-9 . _ : -
    #[param(
        pattern = "^[A-Za-z0-9._:-]+$",
        min_length = 1,
        max_length = 64,
        example = "SKU-1"
    )]
    pub sku: String,
    /// Location: 1-64 characters of A-Z a-z 0-9 . _ : -
    #[param(
        pattern = "^[A-Za-z0-9._:-]+$",
        min_length = 1,
        max_length = 64,
        example = "store-1"
    )]
    pub location: String,
    /// Only movements after this version (the `next_after` of the previous page).
    #[param(minimum = 0, maximum = 9_007_199_254_740_991_i64)]
    pub after: Option<u64>,
    /// At most this many movements (1–500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
    /// Only the movements of this reservation (`stockflow trace`). A filtered page reads
    /// at most 5,000 movements of the key: it may hold fewer than `limit` and still give a
    /// `next_after` to go on from.
    #[param(pattern = "^[A-Za-z0-9._:-]+$", min_length = 1, max_length = 64)]
    pub reservation_id: Option<String>,
    /// Only the movements of commands sent with this Idempotency-Key, by any caller (read
    /// like `reservation_id`).
    #[param(pattern = "^[A-Za-z0-9._:-]+$", min_length = 1, max_length = 64)]
    pub idempotency_key: Option<String>,
}

/// Movements a filtered page reads at most, so one request stays bounded on a key with
/// a long history; the caller goes on from `next_after`.
const FILTER_SCAN_BUDGET: usize = 5_000;
/// Movements read from the store at a time while filtering.
const FILTER_SCAN_PAGE: usize = 500;

/// Which movements of a key a page keeps.
#[derive(Debug, Default)]
struct MovementFilter {
    reservation_id: Option<ReservationId>,
    idempotency_key: Option<IdempotencyKey>,
}

impl MovementFilter {
    fn is_empty(&self) -> bool {
        self.reservation_id.is_none() && self.idempotency_key.is_none()
    }

    fn keeps(&self, m: &Movement) -> bool {
        self.reservation_id
            .as_ref()
            .is_none_or(|id| m.reservation_id.as_deref() == Some(id.as_str()))
            && self
                .idempotency_key
                .as_ref()
                .is_none_or(|key| m.idempotency_key.as_deref() == Some(key.as_str()))
    }
}

/// A page of `limit` movements above `after`, and where the next page starts (absent when
/// the history has been read to its end).
async fn movement_page(
    read: &dyn ReadStore,
    (sku, location): (&str, &str),
    after: u64,
    limit: usize,
    filter: &MovementFilter,
) -> Result<(Vec<Movement>, Option<u64>), StoreError> {
    if filter.is_empty() {
        let rows = read.movements(sku, location, after, limit).await?;
        let next = (rows.len() == limit).then(|| rows.last().map(|m| m.version));
        return Ok((rows, next.flatten()));
    }
    let (mut kept, mut scanned, mut cursor) = (Vec::new(), 0, after);
    loop {
        let rows = read
            .movements(sku, location, cursor, FILTER_SCAN_PAGE)
            .await?;
        let end_of_history = rows.len() < FILTER_SCAN_PAGE;
        for m in rows {
            scanned += 1;
            cursor = m.version;
            if filter.keeps(&m) {
                kept.push(m);
                if kept.len() == limit {
                    return Ok((kept, Some(cursor)));
                }
            }
        }
        if end_of_history {
            return Ok((kept, None));
        }
        if scanned >= FILTER_SCAN_BUDGET {
            return Ok((kept, Some(cursor)));
        }
    }
}

/// The change history of one `(sku, location)`, oldest first, paged by version: who asked,
/// what happened and why, under which Idempotency-Key, and the levels it left. Follows the
/// write side like every read model.
#[utoipa::path(get, path = "/v1/movements", tag = "queries",
    params(MovementParams, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = MovementsResponse, headers(("ETag" = String, description = "Over the body's bytes"),
                       ("Cache-Control" = String, description = "public, max-age=1, stale-while-revalidate=2, stale-if-error=3600; private to a caller limited to locations"),
                       ("Surrogate-Key" = String, description = "Edge-cache tags (public answers only): stockflow, sku:<sku>, loc:<location>, region:<region>, search; purged when what they name changes"),
                       ("Cache-Tag" = String, description = "The same tags, comma-separated"),
                       ("Surrogate-Control" = String, description = "max-age for an edge cache the platform purges (with --edge-ttl-seconds)"))),
              (status = 304, description = "Not modified")))]
pub(crate) async fn movements(
    State(state): State<AppState>,
    Extension(identity): Extension<Identity>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<MovementParams>,
) -> ApiResult<Response> {
    let sku = Sku::parse(p.sku)?;
    let location = LocationId::parse(p.location)?;
    readable_at(&identity, &location)?;
    let limit = p.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ValidationError::new("limit", "must be between 1 and 500").into());
    }
    let after = p.after.unwrap_or(0);
    if after > stockflow_domain::MAX_VERSION {
        return Err(ValidationError::new("after", "must be between 0 and 2^53-1").into());
    }
    let filter = MovementFilter {
        reservation_id: p.reservation_id.map(ReservationId::parse).transpose()?,
        idempotency_key: p.idempotency_key.map(IdempotencyKey::parse).transpose()?,
    };
    let (rows, next_after) = movement_page(
        state.read.as_ref(),
        (sku.as_str(), location.as_str()),
        after,
        limit,
        &filter,
    )
    .await?;
    let body = MovementsResponse {
        sku: sku.to_string(),
        location: location.to_string(),
        movements: rows.into_iter().map(MovementBody::from).collect(),
        next_after,
    };
    let tags = Tags::exact().sku(&body.sku).location(&body.location);
    cached(&state, &headers, &body, Audience::of(&identity), tags)
}
