//! Refusals: every way a command can be turned down. A refusal is an answer, not a
//! failure: the command changed nothing and yielded no event, and (most kinds) the answer
//! is kept under the command's idempotency key like a success.

use serde::{Deserialize, Serialize};

use crate::ids::{LocationId, ReservationId, Sku, TransferId};
use crate::quantity::State;
use crate::reservation::ReservationStatus;
use crate::transfer::TransferStatus;

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

/// A region-level line no plan could fill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsourcedLine {
    /// The SKU of the line.
    pub sku: Sku,
    /// Units asked for.
    pub requested: i64,
    /// Units on the shelves of every candidate location together.
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
    /// No locations of the region (or channel) can fill the region-level lines together
    /// under the sourcing rules. Never recorded: nothing was decided on any key.
    #[error("no locations can fill {} region-level line(s)", lines.len())]
    InsufficientStockInRegion {
        /// Every line, with what the candidate locations hold of it together.
        lines: Vec<UnsourcedLine>,
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
    /// A count's `expected_on_hand` is not the on-hand stored now: someone changed the
    /// key while the clerk counted.
    #[error("on-hand of {sku}@{location} is {current}, not the {expected} the count started from")]
    OnHandConflict {
        /// SKU of the key.
        sku: Sku,
        /// Location of the key.
        location: LocationId,
        /// The on-hand the client expected.
        expected: i64,
        /// The on-hand stored now.
        current: i64,
    },
    /// A move asked more of a state than it holds.
    #[error("{sku}@{location} holds {held} {}, fewer than the {requested} asked", state.as_str())]
    StateShort {
        /// SKU of the key.
        sku: Sku,
        /// Location of the key.
        location: LocationId,
        /// The state the units were to leave.
        state: State,
        /// Units asked for.
        requested: i64,
        /// Units it holds (what channels may count on, for `available`).
        held: i64,
    },
    /// The purchase-order line named is not open at the key.
    #[error("{po_line} is not expected at {sku}@{location}")]
    IncomingNotFound {
        /// SKU of the key.
        sku: Sku,
        /// Location of the key.
        location: LocationId,
        /// The purchase-order line (`<order>#<line>`).
        po_line: String,
    },
    /// A bound on what one key or record keeps was reached.
    #[error("at most {limit} {what}")]
    LimitReached {
        /// What is bounded.
        what: String,
        /// The bound.
        limit: u64,
    },
    /// Units of the reservation are backordered: it cannot be confirmed before they
    /// arrive (it may be released).
    #[error("reservation {id} is still backordered")]
    ReservationBackordered {
        /// The reservation.
        id: ReservationId,
        /// The lines still waiting, with the units backordered (`requested`).
        lines: Vec<ShortLine>,
    },
    /// Only a store's token, acting at its own locations, records facts (`mode: record`).
    #[error("only a store token may record adjustments (mode record), at its own locations")]
    RecordModeForbidden,
    /// A store's token may not change what holds at every location (a SKU's own policy).
    #[error(
        "a store token may not change a SKU's policy at every location; set its own location's override"
    )]
    SkuWideForbidden,
    /// A SKU policy's `expected_version` is not its current version.
    #[error("policy of {sku} is at version {current}, not {expected}")]
    PolicyVersionConflict {
        /// The SKU.
        sku: Sku,
        /// The version the client expected.
        expected: u64,
        /// The version stored now.
        current: u64,
    },
    /// No transfer has this id.
    #[error("transfer {0} not found")]
    TransferNotFound(TransferId),
    /// A transfer with this id exists already.
    #[error("transfer {0} already exists")]
    TransferExists(TransferId),
    /// The transfer is not where the command needs it (ship and cancel need `created`,
    /// receive needs `in_transit`).
    #[error("transfer {id} is {status}")]
    TransferStatusConflict {
        /// The transfer.
        id: TransferId,
        /// Its status now.
        status: TransferStatus,
    },
    /// A receipt names more units of a SKU than are in transit (or a SKU not on the
    /// transfer).
    #[error(
        "transfer {id} has {outstanding} of {sku} in transit, fewer than the {requested} received"
    )]
    TransferQuantityExceeded {
        /// The transfer.
        id: TransferId,
        /// The SKU.
        sku: Sku,
        /// Units received in this command.
        requested: i64,
        /// Units in transit.
        outstanding: i64,
    },
    /// A step of a transfer was voided because the transfer changed meanwhile (a
    /// shipment undone while one of its steps was on its way); the command is retried.
    #[error("transfer {0} changed while this step was applied; retry")]
    TransferChanged(TransferId),
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
    /// ([`Refusal::LocationForbidden`], [`Refusal::RecordModeForbidden`]) — it says who asked, not what the stock allowed,
    /// and nothing of the command ran; kept, it would answer the key's later retries with
    /// 403 after the caller's grant was widened, unkept each retry is checked against the
    /// grant it carries. Nor the answers about the key itself
    /// ([`Refusal::IdempotencyKeyReused`], [`Refusal::RequestInProgress`]): the command
    /// never ran under it.
    pub fn is_recorded(&self) -> bool {
        !matches!(
            self,
            Refusal::LocationForbidden { .. }
                | Refusal::RecordModeForbidden
                | Refusal::SkuWideForbidden
                | Refusal::IdempotencyKeyReused
                | Refusal::RequestInProgress
                | Refusal::InsufficientStockInRegion { .. }
        )
    }

    /// A stable, machine-readable code for API clients and metric labels.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::VersionConflict { .. } => "version_conflict",
            Refusal::InsufficientStock { .. } => "insufficient_stock",
            Refusal::InsufficientStockInRegion { .. } => "insufficient_stock_in_region",
            Refusal::LocationNotFound(_) => "location_not_found",
            Refusal::ReservationNotFound(_) => "reservation_not_found",
            Refusal::ReservationNotActive { .. } => "reservation_not_active",
            Refusal::ReservationExists(_) => "reservation_exists",
            Refusal::LocationForbidden { .. } => "location_forbidden",
            Refusal::LocationRegionImmutable { .. } => "location_region_immutable",
            Refusal::OnHandConflict { .. } => "on_hand_conflict",
            Refusal::StateShort { .. } => "insufficient_quantity",
            Refusal::IncomingNotFound { .. } => "incoming_not_found",
            Refusal::LimitReached { .. } => "limit_reached",
            Refusal::ReservationBackordered { .. } => "reservation_backordered",
            Refusal::RecordModeForbidden => "record_mode_forbidden",
            Refusal::SkuWideForbidden => "location_forbidden",
            Refusal::PolicyVersionConflict { .. } => "version_conflict",
            Refusal::TransferNotFound(_) => "transfer_not_found",
            Refusal::TransferExists(_) => "transfer_exists",
            Refusal::TransferStatusConflict { .. } => "transfer_status_conflict",
            Refusal::TransferQuantityExceeded { .. } => "transfer_quantity_exceeded",
            Refusal::TransferChanged(_) => "transfer_changed",
            Refusal::IdempotencyKeyReused => "idempotency_key_reused",
            Refusal::RequestInProgress => "request_in_progress",
        }
    }
}
