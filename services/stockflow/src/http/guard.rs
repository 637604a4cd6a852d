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
use crate::auth::{AuthError, Authenticator, Identity, Scope};
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
    /// `None`: no authentication (every caller is [`Identity::anonymous`]).
    pub auth: Option<Arc<Authenticator>>,
    /// Per authenticated caller; anonymous callers share no bucket.
    pub rate_limit: Option<RateLimit>,
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
            rate_limit: None,
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

    fn rate_limit(&self, identity: &Identity) -> Result<(), ApiError> {
        let (Some(limiter), Some(key)) = (&self.limiter, identity.rate_key()) else {
            return Ok(());
        };
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }
}

/// The scope `method` on the route template `route` needs; `None` for open routes.
pub fn required_scope(method: &Method, route: &str) -> Option<Scope> {
    match route {
        "/healthz" | "/readyz" | "/openapi.json" => None,
        "/metrics" => Some(Scope::Admin),
        r if r.starts_with("/admin/") => Some(Scope::Admin),
        "/v1/locations/{location}" | "/v1/skus/{sku}" => Some(Scope::CatalogWrite),
        "/v1/adjustments" => Some(Scope::StockAdjust),
        "/v1/reservations" | "/v1/reservations/{id}/confirm" | "/v1/reservations/{id}/release" => {
            Some(Scope::StockReserve)
        }
        "/v1/reservations/{id}" if method == Method::GET => Some(Scope::StockRead),
        r if r.starts_with("/v1/") => Some(Scope::StockRead),
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
    let certificate = req.extensions().get::<super::tls::PeerSubject>().cloned();
    let scope = required_scope(req.method(), &route);
    if edge.config.client_certificate_required && certificate.is_none() && scope.is_some() {
        return ApiError::Unauthenticated(
            "this endpoint needs a client certificate signed by the region's client CA".into(),
        )
        .into_response();
    }
    let identity = match (&edge.config.auth, scope) {
        (None, _) => match certificate {
            Some(subject) => Identity::from_certificate(&subject.0),
            None => Identity::anonymous(),
        },
        (Some(_), None) => Identity::anonymous(),
        (Some(auth), Some(scope)) => {
            let authorization = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            match authorize(auth, authorization, scope).await {
                Ok(identity) => identity,
                Err(e) => return e.into_response(),
            }
        }
    };
    if let Err(e) = edge.rate_limit(&identity) {
        return e.into_response();
    }
    req.extensions_mut().insert(identity);
    match tokio::time::timeout(edge.config.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(edge.config.request_timeout).into_response(),
    }
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
        assert_eq!(
            required_scope(&get, "/v1/stock/{sku}"),
            Some(Scope::StockRead)
        );
        assert_eq!(required_scope(&get, "/v1/search"), Some(Scope::StockRead));
        assert_eq!(
            required_scope(&Method::PUT, "/v1/skus/{sku}"),
            Some(Scope::CatalogWrite)
        );
    }
}
