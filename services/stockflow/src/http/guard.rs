//! The edge of every request: a global concurrency limit, authentication and the scope
//! each route needs, a token bucket per caller, and a deadline. Handlers find the caller's
//! [`Identity`] in the request's extensions.
//!
//! A request cut off by its deadline may still have run: its command is answered the same
//! to a retry with the same `Idempotency-Key`, which the 504 says.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::Semaphore;

use super::AppState;
use super::server::ClientAddr;
use crate::auth::{AuthError, Authenticator, Identity, PeerCertificate, Principals, Scope};
use crate::error::ApiError;

/// A token bucket per caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: NonZeroU32,
    /// Requests allowed at once above the sustained rate.
    pub burst: NonZeroU32,
}

/// The edge's settings.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Bearer tokens; with neither this nor `principals`, every caller is
    /// [`Identity::unauthenticated`].
    pub auth: Option<Arc<Authenticator>>,
    /// Mutual TLS without bearer tokens: what each client certificate may do. A
    /// certificate it does not name is refused.
    pub principals: Option<Arc<Principals>>,
    /// Per caller: each authenticated caller has its own bucket, anonymous callers one per
    /// client address.
    pub rate_limit: Option<RateLimit>,
    /// Whether anonymous callers are rate limited too (off only for `stockflow dev` open
    /// on loopback, where every caller is a local process: its benches and tests).
    pub limit_anonymous: bool,
    /// Requests served at once; more are refused with 503 rather than queued.
    pub max_concurrent: usize,
    /// The most one request may take.
    pub request_timeout: Duration,
    /// Mutual TLS: every guarded route needs a client certificate of the client CA. The
    /// handshake accepts clients without one, so health probes (a kubelet presents no
    /// certificate) still reach `/healthz` and `/readyz`.
    pub client_certificate_required: bool,
}

impl EdgeConfig {
    /// No authentication, no rate limit, 4,096 requests at once, 30 s each.
    pub fn open() -> Self {
        Self {
            auth: None,
            principals: None,
            rate_limit: None,
            limit_anonymous: false,
            max_concurrent: 4096,
            request_timeout: Duration::from_secs(30),
            client_certificate_required: false,
        }
    }
}

/// The edge's state, shared by every request.
pub struct Edge {
    config: EdgeConfig,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    in_flight: Semaphore,
}

impl std::fmt::Debug for Edge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Edge")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Edge {
    /// The edge `config` describes.
    pub fn new(config: EdgeConfig) -> Arc<Self> {
        let limiter = config
            .rate_limit
            .map(|r| RateLimiter::keyed(Quota::per_second(r.per_second).allow_burst(r.burst)));
        Arc::new(Self {
            in_flight: Semaphore::new(config.max_concurrent),
            limiter,
            config,
        })
    }

    /// Forgets buckets of callers that went quiet, so memory follows active callers only.
    pub fn forget_idle_callers(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn rate_limit(&self, identity: &Identity, anonymous: bool) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if anonymous && !self.config.limit_anonymous {
            return Ok(());
        }
        limiter
            .check_key(&identity.rate_key().to_string())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                // Rounded up, and never 0: `Retry-After: 0` invites an immediate retry
                // that the bucket refuses again.
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                ApiError::RateLimited {
                    retry_after_secs: secs.max(1),
                }
            })
    }

    /// `Err` while the edge cannot check credentials yet (its JWKS never loaded).
    pub fn ready(&self) -> Result<(), crate::auth::AuthError> {
        match &self.config.auth {
            Some(auth) => auth.ready(),
            None => Ok(()),
        }
    }
}

/// The longest an import upload may take to arrive (1 GiB at about 1 MiB/s).
const UPLOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The scope `method` on the route template `route` needs; `None` for open routes.
pub fn required_scope(method: &Method, route: &str) -> Option<Scope> {
    match route {
        "/healthz" | "/readyz" | "/openapi.json" | "/asyncapi.json" => None,
        "/metrics" => Some(Scope::Admin),
        r if r.starts_with("/admin/") => Some(Scope::Admin),
        "/v1/locations/{location}" | "/v1/skus/{sku}" => Some(Scope::CatalogWrite),
        "/v1/channels/{channel}" | "/v1/bundles/{sku}" if method == Method::PUT => {
            Some(Scope::CatalogWrite)
        }
        r if r.starts_with("/v1/subscriptions") => Some(Scope::WebhooksManage),
        "/v1/adjustments" | "/v1/moves" | "/v1/policies" | "/v1/allocations" | "/v1/incoming"
        | "/v1/incoming/close" => Some(Scope::StockAdjust),
        // An import's rows are adjustments (its catalog rows need catalog:write too,
        // checked per row); its progress is its uploader's.
        "/v1/imports" | "/v1/imports/{id}" | "/v1/imports/{id}/errors" => Some(Scope::StockAdjust),
        // Transfers move on-hand between locations: an adjustment's scope.
        "/v1/transfers"
        | "/v1/transfers/{id}/ship"
        | "/v1/transfers/{id}/receive"
        | "/v1/transfers/{id}/cancel" => Some(Scope::StockAdjust),
        "/v1/reservations"
        | "/v1/sourcing/reservations"
        | "/v1/reservations/{id}/confirm"
        | "/v1/reservations/{id}/release" => Some(Scope::StockReserve),
        "/v1/reservations/{id}" if method == Method::GET => Some(Scope::StockRead),
        r if r.starts_with("/v1/") && method == Method::GET => Some(Scope::StockRead),
        // A write this table does not name needs the admin scope: a new write route is
        // closed until it is given its scope here, never open to readers.
        r if r.starts_with("/v1/") => Some(Scope::Admin),
        // Unknown routes answer 404 whoever asks.
        _ => None,
    }
}

/// The middleware: limits, then who is calling, then the deadline around the handler.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let edge = state.edge.clone();
    let Ok(_permit) = edge.in_flight.try_acquire() else {
        return ApiError::Overloaded.into_response();
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let client = req.extensions().get::<ClientAddr>().map(|a| a.0.ip());
    let certificate = req.extensions().get::<PeerCertificate>().cloned();
    let scope = required_scope(req.method(), &route);
    if edge.config.client_certificate_required && certificate.is_none() && scope.is_some() {
        return ApiError::Unauthenticated(
            "this endpoint needs a client certificate signed by the region's client CA".into(),
        )
        .into_response();
    }
    let authenticates = edge.config.auth.is_some() || edge.config.principals.is_some();
    let (identity, anonymous) = match scope {
        // Open routes (probes, the document): nobody needs to say who they are, and on a
        // platform that authenticates, nobody gets anything there.
        None if authenticates => (Identity::nobody(client), true),
        None => (Identity::unauthenticated(client), true),
        Some(scope) => match (&edge.config.auth, &edge.config.principals) {
            // Both: a request with a bearer token is judged by it; one with only a client
            // certificate (a system calling over mutual TLS) by the principals file.
            (Some(_), Some(principals))
                if !req.headers().contains_key(header::AUTHORIZATION) && certificate.is_some() =>
            {
                match grant_of(principals, certificate.as_ref(), scope) {
                    Ok(identity) => (identity, false),
                    Err(e) => return e.into_response(),
                }
            }
            (Some(auth), _) => {
                let authorization = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok());
                match authorize(auth, authorization, scope).await {
                    Ok(identity) => (identity, false),
                    Err(e) => return e.into_response(),
                }
            }
            (None, Some(principals)) => match grant_of(principals, certificate.as_ref(), scope) {
                Ok(identity) => (identity, false),
                Err(e) => return e.into_response(),
            },
            (None, None) => (Identity::unauthenticated(client), true),
        },
    };
    if let Err(e) = edge.rate_limit(&identity, anonymous) {
        return e.into_response();
    }
    req.extensions_mut().insert(identity);
    // An upload takes as long as its bytes take to arrive; everything else gets the
    // request deadline.
    let deadline = if route == "/v1/imports" && req.method() == Method::POST {
        edge.config.request_timeout.max(UPLOAD_DEADLINE)
    } else {
        edge.config.request_timeout
    };
    match tokio::time::timeout(deadline, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(deadline).into_response(),
    }
}

/// The identity the principals file grants `certificate`, if it holds `scope`.
fn grant_of(
    principals: &Principals,
    certificate: Option<&PeerCertificate>,
    scope: Scope,
) -> Result<Identity, ApiError> {
    let Some(certificate) = certificate else {
        return Err(ApiError::Unauthenticated(
            "this endpoint needs a client certificate signed by the region's client CA".into(),
        ));
    };
    let grant = principals
        .grant(certificate)
        .ok_or_else(|| ApiError::PrincipalNotListed(certificate.display_name().to_string()))?;
    let identity = Identity::from_principal(grant);
    if !identity.allows(scope) {
        return Err(ApiError::InsufficientScope(scope));
    }
    Ok(identity)
}

async fn authorize(
    auth: &Authenticator,
    authorization: Option<&str>,
    scope: Scope,
) -> Result<Identity, ApiError> {
    let identity = auth
        .authenticate(authorization)
        .await
        .map_err(|e| match e {
            AuthError::Missing => ApiError::Unauthenticated(e.to_string()),
            AuthError::KeysUnavailable(_) => ApiError::NotReady(e.to_string()),
            other => ApiError::InvalidToken(other.to_string()),
        })?;
    if !identity.allows(scope) {
        return Err(ApiError::InsufficientScope(scope));
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_needs_the_scope_the_docs_give_it() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(required_scope(&get, "/healthz"), None);
        assert_eq!(required_scope(&get, "/readyz"), None);
        assert_eq!(required_scope(&get, "/openapi.json"), None);
        assert_eq!(required_scope(&get, "/asyncapi.json"), None);
        assert_eq!(required_scope(&get, "/metrics"), Some(Scope::Admin));
        assert_eq!(
            required_scope(&get, "/admin/dead-letters"),
            Some(Scope::Admin)
        );
        assert_eq!(
            required_scope(&post, "/v1/adjustments"),
            Some(Scope::StockAdjust)
        );
        assert_eq!(
            required_scope(&post, "/v1/reservations"),
            Some(Scope::StockReserve)
        );
        assert_eq!(
            required_scope(&post, "/v1/reservations/{id}/confirm"),
            Some(Scope::StockReserve)
        );
        assert_eq!(
            required_scope(&get, "/v1/reservations/{id}"),
            Some(Scope::StockRead)
        );
        for route in [
            "/v1/transfers",
            "/v1/transfers/{id}/ship",
            "/v1/transfers/{id}/receive",
            "/v1/transfers/{id}/cancel",
        ] {
            assert_eq!(required_scope(&post, route), Some(Scope::StockAdjust));
        }
        assert_eq!(
            required_scope(&get, "/v1/transfers/{id}"),
            Some(Scope::StockRead)
        );
        assert_eq!(
            required_scope(&get, "/v1/stock/{sku}"),
            Some(Scope::StockRead)
        );
        assert_eq!(required_scope(&get, "/v1/search"), Some(Scope::StockRead));
        assert_eq!(
            required_scope(&Method::PUT, "/v1/skus/{sku}"),
            Some(Scope::CatalogWrite)
        );
        assert_eq!(
            required_scope(&post, "/v1/allocations"),
            Some(Scope::StockAdjust)
        );
    }

    #[test]
    fn no_documented_write_is_open_to_a_reader_or_left_to_the_admin_fallback() {
        let document = crate::http::openapi::document();
        let paths = document["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for method in ["post", "put", "delete", "patch"] {
                if item.get(method).is_none() || path.starts_with("/admin/") {
                    continue;
                }
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let scope = required_scope(&m, path);
                assert!(
                    !matches!(scope, None | Some(Scope::StockRead) | Some(Scope::Admin)),
                    "{method} {path} needs {scope:?}: give it its own scope"
                );
            }
        }
    }
}
