//! The HTTP API: routes, shared state, middleware and the OpenAPI document.
//!
//! Modules: `commands` (write side), `transfers` (the transfer commands), `queries` (read
//! models), `surrogate` (edge-cache tags), `ops` (health, metrics, admin), `model` (JSON
//! shapes), `extract` (bodies, idempotency keys), `guard` (who is calling, limits),
//! `protocol` (framing checks before routing), `server` (connections), `tls` (HTTPS),
//! `spans` (the request's trace span), `webhooks` (subscriptions).

pub(crate) mod allocations;
pub(crate) mod bulk;
pub(crate) mod bundles;
pub(crate) mod changes;
pub(crate) mod channels;
pub(crate) mod commands;
pub(crate) mod docs;
pub mod extract;
pub mod guard;
pub(crate) mod model;
pub(crate) mod openapi;
pub(crate) mod ops;
mod protocol;
pub(crate) mod queries;
pub(crate) mod search;
pub mod server;
pub(crate) mod sourcing;
mod spans;
pub(crate) mod surrogate;
pub mod tls;
pub(crate) mod transfers;
pub(crate) mod webhooks;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use stockflow_bus::EventLog;
use stockflow_storage::ports::{Outbox, ReadStore, WriteStore};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::workers::expirer::ExpiryHandle;
use crate::workers::projector::ProjectorHandle;
use extract::{InFlight, MAX_BODY_BYTES};
use openapi::EdgeDocs;

/// What every handler can reach: the [`Services`] behind one `Arc`, so the clone axum
/// makes of the state for every request is one reference count, not one per service
/// (those atomics, bounced between cores, were 4% of the server's CPU under load).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Shares `services` with every handler.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The stores, workers' handles and settings the handlers use.
pub struct Services {
    /// The write side.
    pub write: Arc<dyn WriteStore>,
    /// The outbox (for the backlog gauge).
    pub outbox: Arc<dyn Outbox>,
    /// The read side.
    pub read: Arc<dyn ReadStore>,
    /// Idempotency keys being executed now.
    pub in_flight: Arc<InFlight>,
    /// Schedules expiry of new reservations.
    pub expiry: ExpiryHandle,
    /// Triggers projection replays.
    pub projector: ProjectorHandle,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Set when shutdown starts, so `/readyz` fails and load balancers drain us.
    pub draining: Arc<AtomicBool>,
    /// The event log, when this process publishes or projects (`/readyz` checks it).
    pub bus: Option<Arc<dyn EventLog>>,
    /// The TTL of a reservation whose request names none.
    pub reservation_ttl_seconds: u64,
    /// Authentication, limits and deadlines at the edge.
    pub edge: Arc<guard::Edge>,
    /// The bundles reservations expand.
    pub bundles: Arc<crate::app::bundles::BundleCatalog>,
    /// Channels read lately (the check that a channel sells from a location).
    pub channels: Arc<crate::app::channels::ChannelCache>,
    /// How long an edge cache the platform purges may keep an exact query response
    /// (`Surrogate-Control`); `None`: no such header, the edge follows `Cache-Control`.
    pub edge_ttl_seconds: Option<u32>,
    /// Webhook subscriptions.
    pub webhooks: Arc<dyn stockflow_storage::ports::WebhookStore>,
    /// Bulk imports; `None` in a process that serves no commands.
    pub imports: Option<Arc<crate::imports::Imports>>,
}

/// Which groups of routes a process serves. Health, readiness, metrics and the OpenAPI
/// document are always served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routes {
    /// Commands, catalog writes and reservation reads (the write side).
    pub commands: bool,
    /// Read-model queries.
    pub queries: bool,
    /// Dead-letter administration.
    pub dead_letters: bool,
    /// Projection replay: only where the projectors run.
    pub projection_replay: bool,
}

impl Routes {
    /// Everything (`stockflow dev`).
    pub const ALL: Routes = Routes {
        commands: true,
        queries: true,
        dead_letters: true,
        projection_replay: true,
    };
    /// The command API.
    pub const COMMANDS: Routes = Routes {
        commands: true,
        ..Routes::NONE
    };
    /// The query API, with the dead-letter administration.
    pub const QUERIES: Routes = Routes {
        queries: true,
        dead_letters: true,
        ..Routes::NONE
    };
    /// A projector: operations and projection replay.
    pub const PROJECTOR: Routes = Routes {
        projection_replay: true,
        ..Routes::NONE
    };
    /// Operations endpoints only (the publisher).
    pub const NONE: Routes = Routes {
        commands: false,
        queries: false,
        dead_letters: false,
        projection_replay: false,
    };
}

/// The OpenAPI document, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(title = "stockflow", description = "Retail inventory: command and query API of one region.\n\n\
        Idempotency: every POST under /v1 needs an Idempotency-Key (1-64 characters of \
        [A-Za-z0-9._:-]) standing for one request; another body under the same key is refused \
        with 422 idempotency_key_reused. Once a command ran, every retry of its key within 24 \
        hours gets the same answer and applies nothing again: a success (header \
        idempotent-replayed: true) or a refusal (a 409 insufficient_stock stays 409 after a \
        restock). Requests refused before they ran (400, 503, 409 request_in_progress) record \
        nothing; retry a 503 or 504 with the same key. Keys are scoped per caller (the token's \
        issuer and subject).\n\n\
        Authentication: a bearer JWT with the scope each operation lists (see the bearer \
        security scheme).\n\n\
        Tracing: a W3C traceparent (and tracestate) header is continued: with trace export \
        on, the request, its store write and the publish and projection of its events are \
        spans of the caller's trace."),
    paths(
        commands::put_location, commands::put_sku, commands::adjust, commands::move_units,
        commands::set_policy, commands::expect_incoming, commands::close_incoming,
        commands::reserve, allocations::set_allocation, sourcing::put_channel, sourcing::get_channel,
        sourcing::reserve_sourced, sourcing::pickup, sourcing::channel_availability,
        bundles::put_bundle, bundles::get_bundle, bundles::bundle_availability,
        commands::confirm, commands::release, commands::get_reservation,
        transfers::create_transfer, transfers::ship_transfer, transfers::receive_transfer,
        transfers::cancel_transfer, transfers::get_transfer,
        queries::stock_by_sku, queries::stock_at, queries::availability, search::search, queries::movements,
        changes::changes, changes::snapshot,
        ops::healthz, ops::readyz, ops::metrics, ops::openapi, ops::asyncapi, ops::dead_letters,
        ops::replay_dead_letter, ops::replay_projections,
        webhooks::create, webhooks::list, webhooks::get_one, webhooks::delete, webhooks::enable,
        webhooks::dead_letters, webhooks::replay,
        bulk::upload, bulk::get_import, bulk::import_errors, bulk::export_stock,
    ),
    components(schemas(crate::error::Problem, ops::ReplayedBody, ops::ReplayingBody,
        // Named by the line arrays of the transfer bodies (`schema_with`), which register
        // nothing themselves.
        model::TransferLineBody, model::ReceiveLineBody,
        // Named by the adjustment body, documented by hand (`docs::adjustment`).
        model::PurchaseOrderLine,
        // Named by the line arrays of the channel and sourced-reservation bodies.
        model::ChannelLocationBody, model::SourcedLineBody, model::ComponentBody)),
    modifiers(&EdgeDocs),
    tags(
        (name = "commands", description = "Write side: every POST needs an Idempotency-Key"),
        (name = "queries", description = "Read models, cacheable, with ETag"),
        (name = "catalog", description = "Locations and SKU catalog data"),
        (name = "operations", description = "Health, metrics and administration"),
        (name = "webhooks", description = "Webhook subscriptions: signed deliveries (Standard Webhooks) of the region's events"),
    )
)]
pub(crate) struct ApiDoc;

fn command_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/locations/{location}", put(commands::put_location))
        .route("/v1/skus/{sku}", put(commands::put_sku))
        .route("/v1/adjustments", post(commands::adjust))
        .route("/v1/moves", post(commands::move_units))
        .route("/v1/policies", post(commands::set_policy))
        .route("/v1/allocations", post(allocations::set_allocation))
        .route("/v1/incoming", post(commands::expect_incoming))
        .route("/v1/incoming/close", post(commands::close_incoming))
        .route(
            "/v1/channels/{channel}",
            put(sourcing::put_channel).get(sourcing::get_channel),
        )
        .route("/v1/sourcing/reservations", post(sourcing::reserve_sourced))
        .route(
            "/v1/bundles/{sku}",
            put(bundles::put_bundle).get(bundles::get_bundle),
        )
        .route("/v1/reservations", post(commands::reserve))
        .route("/v1/reservations/{id}", get(commands::get_reservation))
        .route("/v1/reservations/{id}/confirm", post(commands::confirm))
        .route("/v1/reservations/{id}/release", post(commands::release))
        .route("/v1/transfers", post(transfers::create_transfer))
        .route("/v1/transfers/{id}", get(transfers::get_transfer))
        .route("/v1/transfers/{id}/ship", post(transfers::ship_transfer))
        .route(
            "/v1/transfers/{id}/receive",
            post(transfers::receive_transfer),
        )
        .route(
            "/v1/transfers/{id}/cancel",
            post(transfers::cancel_transfer),
        )
        .route(
            "/v1/subscriptions",
            post(webhooks::create).get(webhooks::list),
        )
        .route(
            "/v1/subscriptions/{id}",
            get(webhooks::get_one).delete(webhooks::delete),
        )
        .route("/v1/subscriptions/{id}/enable", post(webhooks::enable))
        .route(
            "/v1/subscriptions/{id}/dead-letters",
            get(webhooks::dead_letters),
        )
        .route(
            "/v1/subscriptions/{id}/dead-letters/replay",
            post(webhooks::replay),
        )
        .route("/v1/imports", post(bulk::upload))
        .route("/v1/imports/{id}", get(bulk::get_import))
        .route("/v1/imports/{id}/errors", get(bulk::import_errors))
}

fn query_routes() -> Router<AppState> {
    Router::new()
        .route("/v1/stock/{sku}", get(queries::stock_by_sku))
        .route("/v1/stock/{sku}/{location}", get(queries::stock_at))
        .route("/v1/availability/{sku}", get(queries::availability))
        .route("/v1/pickup/{sku}", get(sourcing::pickup))
        .route(
            "/v1/bundles/{sku}/availability",
            get(bundles::bundle_availability),
        )
        .route(
            "/v1/channels/{channel}/availability/{sku}",
            get(sourcing::channel_availability),
        )
        .route("/v1/search", get(search::search))
        .route("/v1/movements", get(queries::movements))
        .route("/v1/changes", get(changes::changes))
        .route("/v1/changes/snapshot", get(changes::snapshot))
        .route("/v1/exports/stock", get(bulk::export_stock))
}

fn dead_letter_routes() -> Router<AppState> {
    Router::new()
        .route("/admin/dead-letters", get(ops::dead_letters))
        .route(
            "/admin/dead-letters/{id}/replay",
            post(ops::replay_dead_letter),
        )
}

/// The routes `routes` selects on one router.
pub fn router(state: AppState, routes: Routes) -> Router {
    let mut app = Router::new()
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .route("/asyncapi.json", get(ops::asyncapi));
    if routes.commands {
        app = app.merge(command_routes());
    }
    if routes.queries {
        app = app.merge(query_routes());
    }
    if routes.dead_letters {
        app = app.merge(dead_letter_routes());
    }
    if routes.projection_replay {
        app = app.route("/admin/projections/replay", post(ops::replay_projections));
    }
    app.route_layer(middleware::from_fn_with_state(state.clone(), guard::guard))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), record_http))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn(protocol::check))
        .layer(middleware::from_fn(spans::server_span))
        .layer(TraceLayer::new_for_http())
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("a handler panicked".into()).into_response()
        }))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Counts requests and their latency by route template (never by raw path, which would
/// explode label cardinality).
async fn record_http(State(_): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("stockflow_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("stockflow_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
