//! Refusals: every way a command can be turned down. A refusal is an answer, not a
//! failure: the command changed nothing and yielded no event, and (most kinds) the answer
//! is kept under the command's idempotency key like a success.

use serde::{Deserialize, Serialize};

use crate::ids::{LocationId, ReservationId, Sku};
use crate::reservation::ReservationStatus;

/// A command's answer: its result, or why it was refused.
pub type Answer<T> = Result<T, Refusal>;

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
/// idempotency key like a success (see [`crate::RecordedAnswer`]); the spelling is that of
/// the records already stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
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
    /// The idempotency key was used before for a different request.
    #[error("idempotency key was already used for a different request")]
    IdempotencyKeyReused,
    /// A request with the same idempotency key is being executed (by this or another
    /// process); the same request may be sent again later.
    #[error("a request with this idempotency key is in progress")]
    RequestInProgress,
}

impl Refusal {
    /// Whether this refusal is the command's answer, kept under its idempotency key so a
    /// retry gets it again even after the state changed (409 `insufficient_stock` stays
    /// 409 after a restock).
    ///
    /// Not kept: a command refused for the caller's grant
    /// ([`Refusal::LocationForbidden`]) — it says who asked, not what the stock allowed,
    /// and nothing of the command ran; kept, it would answer the key's later retries with
    /// 403 after the caller's grant was widened, unkept each retry is checked against the
    /// grant it carries. Nor the answers about the key itself
    /// ([`Refusal::IdempotencyKeyReused`], [`Refusal::RequestInProgress`]): the command
    /// never ran under it.
    pub fn is_recorded(&self) -> bool {
        !matches!(
            self,
            Refusal::LocationForbidden { .. }
                | Refusal::IdempotencyKeyReused
                | Refusal::RequestInProgress
        )
    }

    /// A stable, machine-readable code for API clients and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::VersionConflict { .. } => "version_conflict",
            Refusal::InsufficientStock { .. } => "insufficient_stock",
            Refusal::LocationNotFound(_) => "location_not_found",
            Refusal::ReservationNotFound(_) => "reservation_not_found",
            Refusal::ReservationNotActive { .. } => "reservation_not_active",
            Refusal::ReservationExists(_) => "reservation_exists",
            Refusal::LocationForbidden { .. } => "location_forbidden",
            Refusal::LocationRegionImmutable { .. } => "location_region_immutable",
            Refusal::IdempotencyKeyReused => "idempotency_key_reused",
            Refusal::RequestInProgress => "request_in_progress",
        }
    }
}
