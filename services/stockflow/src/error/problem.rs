//! The problem document every error answers with (RFC 9457), and the closed list of its
//! `code`s, stated in the OpenAPI document as an enum.

use serde::Serialize;
use utoipa::ToSchema;

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
    /// Stable machine-readable code clients branch on.
    #[schema(schema_with = problem_code)]
    pub code: String,
}

/// Every `code` a problem document may carry. [`ApiError::code`] draws from this list (a
/// test walks every variant), and the document states it as the enum of `Problem.code`.
pub const PROBLEM_CODES: &[&str] = &[
    "invalid_request",
    "invalid_query",
    "invalid_path",
    "malformed_body",
    "duplicate_line",
    "conflicting_fields",
    "invalid_subscription",
    "idempotency_key_missing",
    "idempotency_key_reused",
    "request_in_progress",
    "payload_too_large",
    "unsupported_media_type",
    "not_found",
    "method_not_allowed",
    "unauthenticated",
    "invalid_token",
    "insufficient_scope",
    "location_forbidden",
    "store_forbidden",
    "principal_not_listed",
    "unsupported_encoding",
    "unsupported_transfer_coding",
    "headers_too_large",
    "queue_full",
    "cursor_expired",
    "rate_limited",
    "overloaded",
    "timeout",
    "not_ready",
    "storage_fault",
    "dead_letter_still_failing",
    "version_conflict",
    "insufficient_stock",
    "location_not_found",
    "reservation_not_found",
    "reservation_not_active",
    "reservation_exists",
    "location_region_immutable",
    "on_hand_conflict",
    "insufficient_quantity",
    "incoming_not_found",
    "limit_reached",
    "reservation_backordered",
    "record_mode_forbidden",
    "transfer_not_found",
    "transfer_exists",
    "transfer_status_conflict",
    "transfer_quantity_exceeded",
    "transfer_changed",
    "insufficient_stock_in_region",
    "channel_not_found",
    "bundle_not_found",
    "not_implemented",
    "unavailable",
    "internal",
];

fn problem_code() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .description(Some(
            "Stable machine-readable code clients branch on (insufficient_stock, version_conflict, ...)",
        ))
        .enum_values(Some(PROBLEM_CODES.iter().copied()))
        .build()
}
