//! The domain's one error enum: every way a command can be refused.

use serde::{Deserialize, Serialize};

use crate::ids::{LocationId, ReservationId, Sku};
use crate::reservation::ReservationStatus;

/// A field that failed validation, with a message a client developer can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, as named in the API.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
    /// What kind of rule the field broke.
    #[serde(default)]
    pub kind: ValidationKind,
}

/// Which rule a field broke: its own shape, or its relation to the other fields.
///
/// The API answers the two differently (400 and 422) because a schema can state the first
/// but not the second: every field of a reservation naming one `(sku, location)` twice is
/// valid on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidationKind {
    /// The value itself is out of its range, too long, or of the wrong characters.
    #[default]
    Shape,
    /// The value repeats another one that must be unique (a reservation's line keys).
    Duplicate,
}

impl ValidationError {
    /// A validation error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
            kind: ValidationKind::Shape,
        }
    }

    /// `field` repeats a value that must be unique.
    pub fn duplicate(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: ValidationKind::Duplicate,
            ..Self::new(field, message)
        }
    }
}

/// One line a reservation or adjustment could not satisfy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShortLine {
    /// The SKU of the line.
    pub sku: Sku,
    /// The location of the line.
    pub location: LocationId,
    /// What the line asked for (units to reserve, or the on-hand change).
    pub requested: i64,
    /// What was available to it.
    pub available: i64,
}

/// Why a command was refused. A refused command changes nothing and yields no event.
///
/// Serializable because a refusal is an answer: it is stored under the command's
/// idempotency key like a success (see [`crate::RecordedAnswer`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainError {
    /// The command is malformed.
    #[error("invalid command: {0}")]
    Invalid(#[from] ValidationError),
    /// The client's `expected_version` is not the current one.
    #[error("version conflict on {sku}@{location}: expected {expected}, current {current}")]
    VersionConflict {
        /// SKU of the key.
        sku: Sku,
        /// Location of the key.
        location: LocationId,
        /// The version the client expected.
        expected: u64,
        /// The version stored now.
        current: u64,
    },
    /// Not enough stock (or on-hand would drop below zero or below what is reserved).
    #[error("insufficient stock on {} line(s)", lines.len())]
    InsufficientStock {
        /// Every line that could not be satisfied.
        lines: Vec<ShortLine>,
    },
    /// The location was never defined.
    #[error("location {0} not found")]
    LocationNotFound(LocationId),
    /// No reservation has this id.
    #[error("reservation {0} not found")]
    ReservationNotFound(ReservationId),
    /// The reservation was already confirmed, released or expired.
    #[error("reservation {id} is {status}, not active")]
    ReservationNotActive {
        /// The reservation.
        id: ReservationId,
        /// Its current status.
        status: ReservationStatus,
    },
    /// A reservation with this id exists already.
    #[error("reservation {0} already exists")]
    ReservationExists(ReservationId),
    /// The caller may not change stock at this location: a store's token acting at another
    /// store's location, or settling a reservation held there.
    #[error("this caller may not change stock at location {location}")]
    LocationForbidden {
        /// The first location of the command outside the caller's grant.
        location: LocationId,
    },
    /// A location's region cannot move: read models aggregate stock by region.
    #[error("location {location} belongs to region {current}; its region cannot change")]
    LocationRegionImmutable {
        /// The location.
        location: LocationId,
        /// Its region now.
        current: String,
    },
}

impl DomainError {
    /// Whether this refusal is the command's answer, kept under its idempotency key so a
    /// retry gets it again even after the state changed (409 `insufficient_stock` stays
    /// 409 after a restock). A malformed command never executed: nothing is recorded and
    /// a corrected retry with the same key is not a different request's replay.
    ///
    /// Nor is a command refused for the caller's grant ([`DomainError::LocationForbidden`])
    /// recorded: it says who asked, not what the stock allowed, and nothing of the command
    /// ran. Kept, it would answer the key's later retries with 403 after the caller's grant
    /// was widened; unkept, each retry is checked against the grant it carries.
    pub fn is_recorded(&self) -> bool {
        !matches!(
            self,
            DomainError::Invalid(_) | DomainError::LocationForbidden { .. }
        )
    }

    /// A stable, machine-readable code for API clients and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Invalid(_) => "invalid_request",
            DomainError::VersionConflict { .. } => "version_conflict",
            DomainError::InsufficientStock { .. } => "insufficient_stock",
            DomainError::LocationNotFound(_) => "location_not_found",
            DomainError::ReservationNotFound(_) => "reservation_not_found",
            DomainError::ReservationNotActive { .. } => "reservation_not_active",
            DomainError::ReservationExists(_) => "reservation_exists",
            DomainError::LocationForbidden { .. } => "location_forbidden",
            DomainError::LocationRegionImmutable { .. } => "location_region_immutable",
        }
    }
}
