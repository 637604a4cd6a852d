//! The query API: read models only, with `ETag`, `Cache-Control` and conditional GETs.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stockflow_domain::{LocationId, Region, Sku, ValidationError};
use stockflow_storage::ports::SearchQuery;
use utoipa::IntoParams;

use super::AppState;
use super::model::*;
use crate::error::{ApiError, ApiResult, Problem};

/// Edge caches may serve a response for a second and revalidate in the background for two
/// more: stock moves fast, but a burst of identical reads should not reach the origin.
const CACHE_CONTROL: &str = "public, max-age=1, stale-while-revalidate=2";

/// Serializes `body` with an `ETag` over its bytes, answering 304 when the client has it.
fn cached<T: Serialize>(headers: &HeaderMap, body: &T) -> ApiResult<Response> {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ApiError::Store(stockflow_storage::StoreError::Corrupt(e.to_string())))?;
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
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(CACHE_CONTROL),
    );
    Ok(response)
}

/// Stock of a SKU at every location.
#[utoipa::path(get, path = "/v1/stock/{sku}", tag = "queries",
    params(("sku" = String, Path), ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = SkuStockResponse, description = "With ETag and Cache-Control"),
              (status = 304, description = "Not modified"), (status = 400, body = Problem)))]
pub async fn stock_by_sku(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(sku): Path<String>,
) -> ApiResult<Response> {
    let sku = Sku::parse(sku)?;
    let rows = state.read.stock_by_sku(sku.as_str()).await?;
    let as_of = rows.iter().map(|r| r.as_of_ms).max().map(rfc3339);
    let body = SkuStockResponse {
        sku: sku.to_string(),
        total_available: rows.iter().map(|r| r.available).sum(),
        locations: rows.into_iter().map(LocationStock::from).collect(),
        as_of,
    };
    cached(&headers, &body)
}

/// Stock of a SKU at one location.
#[utoipa::path(get, path = "/v1/stock/{sku}/{location}", tag = "queries",
    params(("sku" = String, Path), ("location" = String, Path), ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = LocationStock), (status = 304, description = "Not modified"),
              (status = 404, body = Problem)))]
pub async fn stock_at(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((sku, location)): Path<(String, String)>,
) -> ApiResult<Response> {
    let sku = Sku::parse(sku)?;
    let location = LocationId::parse(location)?;
    let row = state
        .read
        .stock_at(sku.as_str(), location.as_str())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no stock of {sku} at {location}")))?;
    cached(&headers, &LocationStock::from(row))
}

/// `?region=` of the availability query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RegionFilter {
    /// Only this region.
    pub region: Option<String>,
}

/// Available stock of a SKU summed per region.
#[utoipa::path(get, path = "/v1/availability/{sku}", tag = "queries",
    params(("sku" = String, Path), RegionFilter),
    responses((status = 200, body = AvailabilityResponse), (status = 304, description = "Not modified"),
              (status = 400, body = Problem)))]
pub async fn availability(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(sku): Path<String>,
    query: Result<Query<RegionFilter>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let sku = Sku::parse(sku)?;
    let Query(filter) = query.map_err(|e| ApiError::MalformedBody(e.body_text()))?;
    let region = filter.region.map(Region::parse).transpose()?;
    let rows = state
        .read
        .availability(sku.as_str(), region.as_ref().map(Region::as_str))
        .await?;
    let body = AvailabilityResponse {
        sku: sku.to_string(),
        total_available: rows.iter().map(|r| r.available).sum(),
        regions: rows.into_iter().map(Into::into).collect(),
    };
    cached(&headers, &body)
}

/// Query string of a search.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Words matched (as prefixes) against name and attributes.
    pub q: String,
    /// Only SKUs with available stock.
    #[serde(default)]
    pub in_stock: bool,
    /// Count availability in this region only.
    pub region: Option<String>,
    /// At most this many hits (1–100, default 20).
    pub limit: Option<usize>,
}

/// Catalog text search, filterable by stock.
#[utoipa::path(get, path = "/v1/search", tag = "queries", params(SearchParams),
    responses((status = 200, body = SearchResponse), (status = 304, description = "Not modified"),
              (status = 400, body = Problem)))]
pub async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<SearchParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(p) = query.map_err(|e| ApiError::MalformedBody(e.body_text()))?;
    if p.q.chars().count() > 200 {
        return Err(ValidationError::new("q", "at most 200 characters").into());
    }
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ValidationError::new("limit", "must be between 1 and 100").into());
    }
    let region = p.region.map(Region::parse).transpose()?;
    let hits = state
        .read
        .search(&SearchQuery {
            text: p.q.clone(),
            in_stock: p.in_stock,
            region: region.map(String::from),
            limit,
        })
        .await?;
    let body = SearchResponse {
        query: p.q,
        hits: hits.into_iter().map(Into::into).collect(),
    };
    cached(&headers, &body)
}
