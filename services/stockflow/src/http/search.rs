//! Catalog search: text matched against names and attributes, with what each hit has
//! available — counted by the read store, or here for a sales channel (its locations, other
//! channels' ring-fences, its cap) and for bundles (the sets their components make).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde::Deserialize;
use stockflow_domain::sourcing::bundle::stock_skus;
use stockflow_domain::{Region, Sku, ValidationError, read_model};
use stockflow_storage::ports::SearchQuery;
use utoipa::IntoParams;

use super::AppState;
use super::docs;
use super::extract::QueryParams;
use super::model::*;
use super::queries::{Audience, cached, rows_of};
use super::surrogate::Tags;
use crate::error::{ApiResult, Problem};

/// Query string of a search.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// Words matched (as prefixes) against name and attributes; at most 200 characters.
    #[param(max_length = 200)]
    pub q: String,
    /// Only SKUs with available stock.
    #[serde(default)]
    pub in_stock: bool,
    /// Count availability in this region only.
    #[param(schema_with = docs::region)]
    pub region: Option<String>,
    /// Count what this sales channel may take: its locations only, other channels'
    /// ring-fences and its cap counted. With `in_stock`, among the 100 best text matches.
    #[param(schema_with = docs::channel)]
    pub channel: Option<String>,
    /// At most this many hits (1–100, default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<usize>,
}

/// Catalog text search, filterable by stock.
#[utoipa::path(get, path = "/v1/search", tag = "queries",
    params(SearchParams, ("If-None-Match" = Option<String>, Header)),
    responses((status = 200, body = SearchResponse, headers(("ETag" = String, description = "Over the body's bytes"),
                       ("Cache-Control" = String, description = "public, max-age=1, stale-while-revalidate=2, stale-if-error=3600; private to a caller limited to locations"),
                       ("Surrogate-Key" = String, description = "Edge-cache tags (public answers only): stockflow, sku:<sku>, loc:<location>, region:<region>, search; purged when what they name changes"),
                       ("Cache-Tag" = String, description = "The same tags, comma-separated"),
                       ("Surrogate-Control" = String, description = "Never sent: a search can change without a purge of its tags"))),
              (status = 304, description = "Not modified"),
              (status = 404, body = Problem, description = "channel_not_found")))]
pub(crate) async fn search(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<SearchParams>,
) -> ApiResult<Response> {
    if p.q.chars().count() > docs::MAX_QUERY_CHARS {
        return Err(ValidationError::new("q", "at most 200 characters").into());
    }
    let limit = p.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ValidationError::new("limit", "must be between 1 and 100").into());
    }
    let region = p.region.map(Region::parse).transpose()?;
    let channel = super::channels::queried_channel(&state, p.channel).await?;
    // A bundle holds no stock row of its own: its sets are counted from its components'
    // rows here, so the store's in-stock filter would drop it. With a channel or bundles
    // the hits are recounted, and filtered here among the 100 best text matches.
    let bundles = state.bundles.snapshot();
    let recount = channel.is_some() || !bundles.is_empty();
    let mut hits = state
        .read
        .search(&SearchQuery {
            text: p.q.clone(),
            in_stock: p.in_stock && !recount,
            region: region.as_ref().map(|r| r.to_string()),
            limit: if recount && p.in_stock { 100 } else { limit },
        })
        .await?;
    if recount {
        for hit in &mut hits {
            let sku = Sku::parse(hit.sku.clone())?;
            let bundle = bundles.get(&sku);
            if bundle.is_none() && channel.is_none() {
                continue;
            }
            let skus = stock_skus(&sku, bundle);
            let rows = rows_of(&state, &skus, region.as_ref(), channel.as_ref()).await?;
            let for_channel = channel.as_ref().map(|c| &c.id);
            hit.available = match bundle {
                Some(b) => read_model::bundle_sets(b, &rows, for_channel)
                    .iter()
                    .map(|(_, _, sets)| sets)
                    .sum(),
                None => rows.iter().map(|r| r.available_to(for_channel)).sum(),
            };
        }
        if p.in_stock {
            hits.retain(|h| read_model::in_stock(h.available));
        }
        hits.truncate(limit);
    }
    let body = SearchResponse {
        query: p.q,
        hits: hits.into_iter().map(Into::into).collect(),
    };
    let tags = body
        .hits
        .iter()
        .fold(Tags::approximate(), |t, hit| t.sku(&hit.sku));
    cached(&state, &headers, &body, Audience::Everyone, tags)
}
