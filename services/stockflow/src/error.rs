//! The service's one error type and its single mapping to HTTP: RFC 9457
//! `application/problem+json` with a stable `code` clients can branch on.
//!
//! 5xx bodies stay generic; the real cause goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use stockflow_domain::{DomainError, ValidationError};
use stockflow_storage::StoreError;
use utoipa::ToSchema;

/// Result with [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a field is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// 400: the body is not JSON, or not the expected shape.
    #[error("{0}")]
    MalformedBody(String),
    /// 400: a POST came without an `Idempotency-Key`.
    #[error("the Idempotency-Key header is required on every POST")]
    MissingIdempotencyKey,
    /// 409: a request with the same key is still running.
    #[error("a request with this Idempotency-Key is still in progress; retry later")]
    RequestInProgress,
    /// 413: the body exceeds the limit.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: the body is declared as something other than JSON.
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    /// 404: nothing at this address.
    #[error("{0}")]
    NotFound(String),
    /// 405: the endpoint exists but not with this method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// 401: no credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// 401: credentials that do not hold (signature, algorithm, issuer, audience, time).
    #[error("{0}")]
    InvalidToken(String),
    /// 403: the token lacks the route's scope.
    #[error("this endpoint needs the {0} scope")]
    InsufficientScope(crate::auth::Scope),
    /// 403: the token may not act at this location.
    #[error("this token may not change stock at location {0}")]
    LocationForbidden(String),
    /// 429: the caller's token bucket is empty.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited {
        /// Seconds until a request would be accepted.
        retry_after_secs: u64,
    },
    /// 503: too many requests at once.
    #[error("too many requests at once; retry shortly with the same Idempotency-Key")]
    Overloaded,
    /// 504: the request ran out of time.
    #[error(
        "the request took longer than {0:?} and was cut off; it may have run: retry with the same Idempotency-Key to get its outcome"
    )]
    Timeout(std::time::Duration),
    /// From the domain or the store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        ApiError::Store(StoreError::Domain(e))
    }
}

/// The RFC 9457 problem document, as documented in the OpenAPI description.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this request.
    pub detail: String,
    /// Stable machine-readable code (`insufficient_stock`, `version_conflict`, ...).
    pub code: String,
}

impl ApiError {
    /// Status, stable code and title.
    fn classify(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Invalid(_) => (S::BAD_REQUEST, "invalid_request", "Invalid request"),
            ApiError::MalformedBody(_) => {
                (S::BAD_REQUEST, "malformed_body", "Malformed request body")
            }
            ApiError::MissingIdempotencyKey => (
                S::BAD_REQUEST,
                "idempotency_key_missing",
                "Idempotency-Key required",
            ),
            ApiError::RequestInProgress => {
                (S::CONFLICT, "request_in_progress", "Request in progress")
            }
            ApiError::PayloadTooLarge(_) => (
                S::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            ApiError::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            ApiError::NotFound(_) => (S::NOT_FOUND, "not_found", "Not found"),
            ApiError::MethodNotAllowed => (
                S::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            ApiError::Unauthenticated(_) => (
                S::UNAUTHORIZED,
                "unauthenticated",
                "Authentication required",
            ),
            ApiError::InvalidToken(_) => (S::UNAUTHORIZED, "invalid_token", "Invalid token"),
            ApiError::InsufficientScope(_) => {
                (S::FORBIDDEN, "insufficient_scope", "Insufficient scope")
            }
            ApiError::LocationForbidden(_) => {
                (S::FORBIDDEN, "location_forbidden", "Location not allowed")
            }
            ApiError::RateLimited { .. } => {
                (S::TOO_MANY_REQUESTS, "rate_limited", "Too many requests")
            }
            ApiError::Overloaded => (S::SERVICE_UNAVAILABLE, "overloaded", "Overloaded"),
            ApiError::Timeout(_) => (S::GATEWAY_TIMEOUT, "timeout", "Request timed out"),
            ApiError::Store(StoreError::Domain(e)) => match e {
                DomainError::Invalid(_) => (S::BAD_REQUEST, e.code(), "Invalid request"),
                DomainError::VersionConflict { .. } => (S::CONFLICT, e.code(), "Version conflict"),
                DomainError::InsufficientStock { .. } => {
                    (S::CONFLICT, e.code(), "Insufficient stock")
                }
                DomainError::LocationNotFound(_) => (S::NOT_FOUND, e.code(), "Location not found"),
                DomainError::ReservationNotFound(_) => {
                    (S::NOT_FOUND, e.code(), "Reservation not found")
                }
                DomainError::ReservationNotActive { .. } => {
                    (S::CONFLICT, e.code(), "Reservation not active")
                }
                DomainError::ReservationExists(_) => (S::CONFLICT, e.code(), "Reservation exists"),
                DomainError::LocationRegionImmutable { .. } => {
                    (S::CONFLICT, e.code(), "Location region is fixed")
                }
            },
            ApiError::Store(StoreError::IdempotencyKeyReused) => (
                S::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency-Key reused",
            ),
            ApiError::Store(StoreError::InProgress) => {
                (S::CONFLICT, "request_in_progress", "Request in progress")
            }
            ApiError::Store(e) if e.retryable() => {
                (S::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable")
            }
            ApiError::Store(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }

    /// The stable code, also used as a metric label.
    pub fn code(&self) -> &'static str {
        self.classify().1
    }

    /// Extra members of the problem document for errors that carry data.
    fn extensions(&self) -> Option<Value> {
        match self {
            ApiError::Invalid(v) | ApiError::Store(StoreError::Domain(DomainError::Invalid(v))) => {
                Some(json!({ "field": v.field }))
            }
            ApiError::Store(StoreError::Domain(DomainError::VersionConflict {
                expected,
                current,
                ..
            })) => Some(json!({ "expected_version": expected, "current_version": current })),
            ApiError::Store(StoreError::Domain(DomainError::InsufficientStock { lines })) => {
                Some(json!({ "lines": lines }))
            }
            ApiError::Store(StoreError::Domain(DomainError::ReservationNotActive {
                status,
                ..
            })) => Some(json!({ "reservation_status": status })),
            ApiError::InsufficientScope(scope) => Some(json!({ "scope": scope.as_str() })),
            ApiError::LocationForbidden(location) => Some(json!({ "location": location })),
            _ => None,
        }
    }
}

/// An RFC 9457 `application/problem+json` response; `code` also names the problem type.
/// Every problem the service answers is built here.
pub fn problem(
    status: StatusCode,
    code: &str,
    title: &str,
    detail: &str,
    extensions: Option<Value>,
) -> Response {
    let mut body = json!({
        "type": format!("https://stockflow.dev/problems/{}", code.replace('_', "-")),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
        "code": code,
    });
    if let (Some(Value::Object(extra)), Value::Object(map)) = (extensions, &mut body) {
        map.extend(extra);
    }
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.classify();
        let detail = if matches!(self, ApiError::Overloaded | ApiError::Timeout(_)) {
            self.to_string()
        } else if status.is_server_error() {
            tracing::error!(error = %self, code, "request failed");
            match status {
                StatusCode::SERVICE_UNAVAILABLE => {
                    "the service is busy or starting; retry with the same Idempotency-Key"
                        .to_string()
                }
                _ => "an internal error occurred; it has been logged".to_string(),
            }
        } else {
            self.to_string()
        };
        let mut response = problem(status, code, title, &detail, self.extensions());
        let headers = response.headers_mut();
        match &self {
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unauthenticated(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ApiError::InsufficientScope(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"insufficient_scope\""),
                );
            }
            _ => {}
        }
        response
    }
}
