//! Bundles (kits): their definitions, and what their components allow per location.
//! Reserving a bundle is an ordinary reservation: the command API expands bundle lines
//! into their components ([`crate::app::bundles::BundleCatalog::expand`]).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use stockflow_domain::sourcing::Bundle;
use stockflow_domain::sourcing::bundle::stock_skus;
use stockflow_domain::{Region, Sku};

use super::AppState;
use super::docs::SkuPath;
use super::extract::{CommandBody, PathParams, QueryParams};
use super::model::*;
use super::queries::{Audience, RegionFilter, cached, rows_of};
use super::surrogate::Tags;
use crate::error::{ApiError, ApiResult, Problem};

/// Creates or replaces a bundle: a SKU sold as a set of component SKUs.
#[utoipa::path(put, path = "/v1/bundles/{sku}", tag = "catalog",
    params(SkuPath),
    request_body = BundleRequest,
    responses((status = 200, body = BundleResponse),
              (status = 422, body = Problem, description = "duplicate_line (a component twice), or conflicting_fields (a component is a bundle, or this SKU is a component)")))]
pub(crate) async fn put_bundle(
    State(state): State<AppState>,
    PathParams(SkuPath { sku }): PathParams<SkuPath>,
    body: CommandBody<BundleRequest>,
) -> ApiResult<Json<BundleResponse>> {
    let sku = Sku::parse(sku)?;
    let components = body.value.into_components()?;
    // Checked against the store's bundles, not this process's copy, which may lag.
    let others: BTreeMap<Sku, Bundle> = state
        .write
        .bundles()
        .await?
        .into_iter()
        .filter(|b| b.sku != sku)
        .map(|b| (b.sku.clone(), b))
        .collect();
    let bundle = Bundle::new(sku, components, &others)?;
    let saved = state.write.put_bundle(bundle).await?;
    state.bundles.learn(saved.clone());
    Ok(Json(saved.into()))
}

/// A bundle.
#[utoipa::path(get, path = "/v1/bundles/{sku}", tag = "catalog",
    params(SkuPath),
    responses((status = 200, body = BundleResponse),
              (status = 404, body = Problem, description = "bundle_not_found")))]
pub(crate) async fn get_bundle(
    State(state): State<AppState>,
    PathParams(SkuPath { sku }): PathParams<SkuPath>,
) -> ApiResult<Json<BundleResponse>> {
    Ok(Json(load_bundle(&state, &Sku::parse(sku)?).await?.into()))
}

async fn load_bundle(state: &AppState, sku: &Sku) -> ApiResult<Bundle> {
    state
        .write
        .bundles()
        .await?
        .into_iter()
        .find(|b| &b.sku == sku)
        .ok_or_else(|| ApiError::BundleNotFound(sku.to_string()))
}

/// What a bundle's components allow at each location: min over components of
/// ⌊available / qty⌋, from the stock read model.
#[utoipa::path(get, path = "/v1/bundles/{sku}/availability", tag = "queries",
    params(SkuPath, RegionFilter, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = BundleAvailabilityResponse), (status = 304, description = "Not modified"),
              (status = 404, body = Problem, description = "bundle_not_found")))]
pub(crate) async fn bundle_availability(
    State(state): State<AppState>,
    headers: HeaderMap,
    PathParams(SkuPath { sku }): PathParams<SkuPath>,
    QueryParams(filter): QueryParams<RegionFilter>,
) -> ApiResult<Response> {
    let bundle = load_bundle(&state, &Sku::parse(sku)?).await?;
    let region = filter.region.map(Region::parse).transpose()?;
    let components = stock_skus(&bundle.sku, Some(&bundle));
    let rows = rows_of(&state, &components, region.as_ref(), None).await?;
    let mut locations: Vec<BundleLocationAvailability> =
        stockflow_domain::read_model::bundle_sets(&bundle, &rows, None)
            .into_iter()
            .map(|(location, region, available)| BundleLocationAvailability {
                location,
                region,
                available,
            })
            .collect();
    locations.sort_by(|a, b| {
        b.available
            .cmp(&a.available)
            .then(a.location.cmp(&b.location))
    });
    let body = BundleAvailabilityResponse {
        sku: bundle.sku.to_string(),
        version: bundle.version,
        total_available: locations.iter().map(|l| l.available).sum(),
        locations,
    };
    // A component's stock change purges it; a change of the bundle's definition does not.
    let tags = bundle
        .components
        .iter()
        .fold(Tags::inexact().sku(&body.sku), |t, c| t.sku(c.sku.as_str()));
    cached(&state, &headers, &body, Audience::Everyone, tags)
}
