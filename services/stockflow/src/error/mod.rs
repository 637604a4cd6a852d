//! The service's one error type and its single mapping to HTTP: RFC 9457
//! `application/problem+json` with a stable `code` clients can branch on. A domain
//! [`Refusal`] (an answer: 4xx) and a [`StoreError`] (a failure: 503 when retryable, else
//! 500) are mapped here and nowhere else.
//!
//! 5xx bodies stay generic; the real cause goes to the log.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use stockflow_domain::{Refusal, ValidationError, ValidationKind};
use stockflow_storage::StoreError;

mod problem;
pub use problem::{PROBLEM_CODES, Problem};

/// Result with [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

/// Every way a request can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a field is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// 422: a webhook subscription that is well-formed JSON but cannot be served (a URL
    /// that is not http(s), an unknown event type, an invalid filter value).
    #[error(transparent)]
    InvalidSubscription(ValidationError),
    /// 400: the body is not JSON, or not the expected shape.
    #[error("{0}")]
    MalformedBody(String),
    /// 400: a query parameter is missing, unknown or not of its type.
    #[error("{0}")]
    InvalidQuery(String),
    /// 400: a path segment is not of its type (or not valid percent-encoded UTF-8).
    #[error("{0}")]
    InvalidPath(String),
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
    /// 404: no sales channel has this id.
    #[error("channel {0} not found")]
    ChannelNotFound(String),
    /// 404: no bundle has this SKU.
    #[error("bundle {0} not found")]
    BundleNotFound(String),
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
    /// 403: mutual TLS without bearer tokens, and the principals file names no entry for
    /// this client certificate.
    #[error("client certificate {0} is not listed among the region's principals")]
    PrincipalNotListed(String),
    /// 415: the body is compressed (or otherwise encoded) with a coding we do not decode.
    #[error("Content-Encoding {0} is not supported: send the body uncompressed")]
    UnsupportedEncoding(String),
    /// 501: the body uses a transfer coding besides `chunked` (RFC 9112 section 6.1).
    #[error("Transfer-Encoding {0} is not supported: only chunked is")]
    UnsupportedTransferCoding(String),
    /// 410: the change feed no longer holds what follows the cursor.
    #[error(
        "the change feed no longer holds what follows this cursor; load {snapshot} and follow from its cursor"
    )]
    CursorExpired {
        /// The snapshot to load.
        snapshot: String,
    },
    /// 507: the store agent's queue is nearly full; only sales and returns are taken.
    #[error("{0}")]
    QueueFull(String),
    /// 431: too many header fields, or too many bytes of them.
    #[error("{0}")]
    HeadersTooLarge(String),
    /// 403: the token may not act at this location.
    #[error("this token may not change stock at location {0}")]
    LocationForbidden(String),
    /// 403: the command says it comes from a store the credentials are not.
    #[error(transparent)]
    StoreForbidden(crate::auth::StoreMismatch),
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
    /// 503 on `/readyz`: a dependency does not answer, or the process is draining.
    #[error("{0}")]
    NotReady(String),
    /// 503 on `/healthz`: the write store stopped for good (after a failed fsync).
    #[error("{0}; the process is exiting to restart from disk")]
    StorageFault(String),
    /// 409: a replayed dead letter fails again.
    #[error("dead letter {id} still fails: {error}")]
    DeadLetterStillFailing {
        /// The letter.
        id: i64,
        /// Why it fails.
        error: String,
    },
    /// 500: a bug (a panic, a response that does not serialize); the cause is logged.
    #[error("{0}")]
    Internal(String),
    /// 4xx: the command was refused (by the domain, or for its idempotency key).
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// 503 or 500: the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// Status, stable code and title.
    fn classify(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            ApiError::Invalid(v) if v.kind == ValidationKind::Duplicate => {
                (S::UNPROCESSABLE_ENTITY, "duplicate_line", "Duplicate line")
            }
            ApiError::Invalid(v) if v.kind == ValidationKind::Conflict => (
                S::UNPROCESSABLE_ENTITY,
                "conflicting_fields",
                "Conflicting fields",
            ),
            ApiError::Invalid(_) => (S::BAD_REQUEST, "invalid_request", "Invalid request"),
            ApiError::InvalidSubscription(_) => (
                S::UNPROCESSABLE_ENTITY,
                "invalid_subscription",
                "Invalid subscription",
            ),
            ApiError::InvalidQuery(_) => (S::BAD_REQUEST, "invalid_query", "Invalid query"),
            ApiError::InvalidPath(_) => (S::BAD_REQUEST, "invalid_path", "Invalid path"),
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
            ApiError::ChannelNotFound(_) => {
                (S::NOT_FOUND, "channel_not_found", "Channel not found")
            }
            ApiError::BundleNotFound(_) => (S::NOT_FOUND, "bundle_not_found", "Bundle not found"),
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
            ApiError::StoreForbidden(_) => (S::FORBIDDEN, "store_forbidden", "Store not allowed"),
            ApiError::PrincipalNotListed(_) => (
                S::FORBIDDEN,
                "principal_not_listed",
                "Client certificate not authorized",
            ),
            ApiError::UnsupportedEncoding(_) => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                "Unsupported content encoding",
            ),
            ApiError::UnsupportedTransferCoding(_) => (
                S::NOT_IMPLEMENTED,
                "unsupported_transfer_coding",
                "Unsupported transfer coding",
            ),
            ApiError::CursorExpired { .. } => (S::GONE, "cursor_expired", "Cursor expired"),
            ApiError::QueueFull(_) => (S::INSUFFICIENT_STORAGE, "queue_full", "Queue full"),
            ApiError::HeadersTooLarge(_) => (
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "Request header fields too large",
            ),
            ApiError::RateLimited { .. } => {
                (S::TOO_MANY_REQUESTS, "rate_limited", "Too many requests")
            }
            ApiError::Overloaded => (S::SERVICE_UNAVAILABLE, "overloaded", "Overloaded"),
            ApiError::Timeout(_) => (S::GATEWAY_TIMEOUT, "timeout", "Request timed out"),
            ApiError::NotReady(_) => (S::SERVICE_UNAVAILABLE, "not_ready", "Not ready"),
            ApiError::StorageFault(_) => (S::SERVICE_UNAVAILABLE, "storage_fault", "Storage fault"),
            ApiError::DeadLetterStillFailing { .. } => (
                S::CONFLICT,
                "dead_letter_still_failing",
                "Dead letter still failing",
            ),
            ApiError::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
            ApiError::Refused(e) => match e {
                Refusal::VersionConflict { .. } => (S::CONFLICT, e.code(), "Version conflict"),
                Refusal::InsufficientStock { .. } => (S::CONFLICT, e.code(), "Insufficient stock"),
                Refusal::InsufficientStockInRegion { .. } => {
                    (S::CONFLICT, e.code(), "Insufficient stock in region")
                }
                Refusal::LocationNotFound(_) => (S::NOT_FOUND, e.code(), "Location not found"),
                Refusal::ReservationNotFound(_) => {
                    (S::NOT_FOUND, e.code(), "Reservation not found")
                }
                Refusal::ReservationNotActive { .. } => {
                    (S::CONFLICT, e.code(), "Reservation not active")
                }
                Refusal::ReservationExists(_) => (S::CONFLICT, e.code(), "Reservation exists"),
                Refusal::LocationRegionImmutable { .. } => {
                    (S::CONFLICT, e.code(), "Location region is fixed")
                }
                Refusal::LocationForbidden { .. } => {
                    (S::FORBIDDEN, e.code(), "Location not allowed")
                }
                Refusal::IdempotencyKeyReused => {
                    (S::UNPROCESSABLE_ENTITY, e.code(), "Idempotency-Key reused")
                }
                Refusal::RequestInProgress => (S::CONFLICT, e.code(), "Request in progress"),
                Refusal::OnHandConflict { .. } => (S::CONFLICT, e.code(), "On-hand changed"),
                Refusal::StateShort { .. } => (S::CONFLICT, e.code(), "Not enough in that state"),
                Refusal::IncomingNotFound { .. } => {
                    (S::NOT_FOUND, e.code(), "Purchase-order line not found")
                }
                Refusal::LimitReached { .. } => (S::CONFLICT, e.code(), "Limit reached"),
                Refusal::ReservationBackordered { .. } => {
                    (S::CONFLICT, e.code(), "Reservation backordered")
                }
                Refusal::RecordModeForbidden => (S::FORBIDDEN, e.code(), "Recording not allowed"),
                Refusal::SkuWideForbidden => {
                    (S::FORBIDDEN, e.code(), "SKU-wide policy not allowed")
                }
                Refusal::PolicyVersionConflict { .. } => {
                    (S::CONFLICT, e.code(), "Policy version conflict")
                }
                Refusal::TransferNotFound(_) => (S::NOT_FOUND, e.code(), "Transfer not found"),
                Refusal::TransferExists(_) => (S::CONFLICT, e.code(), "Transfer exists"),
                Refusal::TransferStatusConflict { .. } => {
                    (S::CONFLICT, e.code(), "Transfer status conflict")
                }
                Refusal::TransferQuantityExceeded { .. } => {
                    (S::CONFLICT, e.code(), "More than in transit")
                }
                Refusal::TransferChanged(_) => (S::CONFLICT, e.code(), "Transfer changed"),
            },
            ApiError::Store(StoreError::Unsupported { .. }) => (
                S::NOT_IMPLEMENTED,
                "not_implemented",
                "Not implemented on this backend",
            ),
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
            ApiError::Invalid(v) | ApiError::InvalidSubscription(v) => {
                Some(json!({ "field": v.field }))
            }
            ApiError::Refused(Refusal::VersionConflict {
                expected, current, ..
            }) => Some(json!({ "expected_version": expected, "current_version": current })),
            ApiError::Refused(Refusal::InsufficientStock { lines }) => {
                Some(json!({ "lines": lines }))
            }
            ApiError::Refused(Refusal::InsufficientStockInRegion { lines }) => {
                Some(json!({ "lines": lines }))
            }
            ApiError::Refused(Refusal::ReservationNotActive { status, .. }) => {
                Some(json!({ "reservation_status": status }))
            }
            ApiError::Refused(Refusal::TransferStatusConflict { status, .. }) => {
                Some(json!({ "transfer_status": status }))
            }
            ApiError::Refused(Refusal::TransferQuantityExceeded {
                sku,
                requested,
                outstanding,
                ..
            }) => Some(json!({ "sku": sku, "requested": requested, "outstanding": outstanding })),
            // A count refused because on-hand moved names the value it moved to, so the
            // clerk can recount from there.
            ApiError::Refused(Refusal::OnHandConflict {
                expected, current, ..
            }) => Some(json!({ "expected_on_hand": expected, "current_on_hand": current })),
            ApiError::Refused(Refusal::StateShort {
                state,
                requested,
                held,
                ..
            }) => Some(json!({ "state": state, "requested": requested, "held": held })),
            ApiError::Refused(Refusal::PolicyVersionConflict {
                expected, current, ..
            }) => Some(json!({ "expected_version": expected, "current_version": current })),
            ApiError::Refused(Refusal::ReservationBackordered { lines, .. }) => {
                Some(json!({ "lines": lines }))
            }
            ApiError::InsufficientScope(scope) => Some(json!({ "scope": scope.as_str() })),
            ApiError::CursorExpired { snapshot } => Some(json!({ "snapshot": snapshot })),
            ApiError::LocationForbidden(location) => Some(json!({ "location": location })),
            ApiError::StoreForbidden(m) => Some(json!({ "store": m.said, "token_store": m.held })),
            ApiError::Refused(Refusal::LocationForbidden { location }) => {
                Some(json!({ "location": location }))
            }
            _ => None,
        }
    }
}

/// An RFC 9457 `application/problem+json` response; `code` also names the problem type.
/// Every problem the service answers is built here.
fn problem(
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
        let detail = if matches!(
            self,
            ApiError::Overloaded
                | ApiError::Timeout(_)
                | ApiError::NotReady(_)
                | ApiError::StorageFault(_)
                | ApiError::UnsupportedTransferCoding(_)
                | ApiError::QueueFull(_)
        ) {
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
            ApiError::UnsupportedEncoding(_) => {
                // RFC 9110 section 12.5.3: say which codings are accepted.
                headers.insert(
                    header::ACCEPT_ENCODING,
                    HeaderValue::from_static("identity"),
                );
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests;
