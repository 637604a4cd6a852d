//! The pure inventory domain of stockflow.
//!
//! Layout:
//! - [`ids`]: validated identifiers (SKU, location, reservation, idempotency key).
//! - [`stock`]: the stock aggregate of one `(sku, location)` and its quantity rules.
//! - [`reservation`]: reservations and their life cycle.
//! - [`command`]: the commands channels send, validated on construction.
//! - [`event`]: the events every applied change yields.
//! - [`grant`]: where a caller may change stock (a store's token: its own locations).
//! - [`decide`]: pure decisions: loaded state + command → new state + events, or a rejection.
//! - [`partition`]: the Fluvio-compatible key partitioner.
//! - [`role`]: the roles a region deploys (shared by the binary and the operator).
//! - [`error`]: the crate's one error enum.
//!
//! Nothing here does I/O, reads a clock or is async: callers pass `now` in, so every
//! decision is reproducible in tests and identical on every storage backend.

pub mod answer;
pub mod command;
pub mod decide;
pub mod error;
pub mod event;
pub mod grant;
pub mod ids;
pub mod partition;
pub mod reservation;
pub mod role;
pub mod stock;

pub use answer::{IDEMPOTENCY_KEY_LIFETIME_SECS, RecordedAnswer};
pub use command::{Adjust, AdjustReason, Command, OnHandChange, Reserve, ReserveLine};
pub use decide::{Applied, CommandResult};
pub use error::{DomainError, ShortLine, ValidationError, ValidationKind};
pub use event::{Actor, BusEvent, CatalogEvent, EventKind, EventMeta, StockEvent};
pub use grant::LocationGrant;
pub use ids::{ID_PATTERN, IdempotencyKey, LocationId, MAX_ID_LEN, Region, ReservationId, Sku};
pub use partition::{default_topic, partition_for_key};
pub use reservation::{Reservation, ReservationLine, ReservationStatus};
pub use role::Role;
pub use stock::{Location, LocationKind, SkuCatalog, StockKey, StockLevel};

/// Largest quantity one command line may move.
pub const MAX_LINE_QTY: i64 = 1_000_000;
/// Largest on-hand count a stock key may hold; keeps every sum far from i64 overflow.
pub const MAX_ON_HAND: i64 = 1_000_000_000_000;
/// Lines one reservation may hold.
pub const MAX_LINES: usize = 100;
/// Longest reservation TTL, in seconds (one day).
pub const MAX_TTL_SECONDS: u64 = 86_400;
/// Largest version a client may name in `expected_version`: 2^53 - 1, the largest integer
/// every JSON client (JavaScript's included) reads exactly.
pub const MAX_VERSION: u64 = (1 << 53) - 1;
