//! The pure inventory domain of stockflow: every rule lives here, once. Stores load state,
//! ask these functions, and persist the answer.
//!
//! Layout, from the bottom floor up (a module imports only those above it in this list):
//! - [`validation`], [`limits`]: field errors and the bounds every command keeps.
//! - [`ids`]: validated identifiers and the stock key.
//! - [`quantity`]: quantity states, dates, incoming lines and backorders.
//! - [`policy`]: oversell policies and stock-level thresholds.
//! - [`idempotency`]: keys scoped per caller, and how long their answers are kept.
//! - [`reservation`]: reservations, their life cycle and predicates.
//! - [`transfer`]: transfers between locations as records.
//! - [`refusal`]: every way a command is turned down (an answer, not a failure).
//! - [`command`]: the commands channels send, validated on construction.
//! - [`stock`]: the stock aggregate of one `(sku, location)` and its quantity rules.
//! - [`catalog`]: locations (with their region) and SKUs.
//! - [`event`]: the events every applied change yields.
//! - [`cloudevent`]: each event's CloudEvents type, source, subject, id and time.
//! - [`answer`]: what a command answers, and how it is kept under its key.
//! - [`grant`]: where a caller may change stock (a store's token: its own locations).
//! - [`decide`]: pure decisions: loaded state + command → new state + events, or a refusal.
//! - [`sourcing`]: sales channels, and the strategies that choose where region-level lines
//!   are reserved.
//! - [`saga`]: the states of a reservation made partition by partition, and their rules.
//! - [`transfer_saga`]: the states of a transfer shipped and received key by key.
//! - [`claim`]: claims on the keys of commands that span partitions.
//! - [`read_model`]: read-model rows built from events, for every read store.
//! - [`partition`]: the Fluvio-compatible key partitioner.
//! - [`role`]: the roles a region deploys (shared by the binary and the operator).
//! - [`webhook`]: webhook subscriptions: validation, filters, retries, signatures.
//!
//! Nothing here does I/O, reads a clock or is async: callers pass `now` in, so every
//! decision is reproducible in tests and identical on every storage backend.

pub mod actor;
pub mod answer;
pub mod catalog;
pub mod claim;
pub mod cloudevent;
pub mod command;
pub mod decide;
pub mod event;
pub mod grant;
pub mod idempotency;
pub mod ids;
pub mod limits;
pub mod partition;
pub mod policy;
pub mod quantity;
pub mod read_model;
pub mod refusal;
pub mod reservation;
pub mod role;
pub mod saga;
pub mod sourcing;
pub mod stock;
pub mod transfer;
pub mod transfer_saga;
pub mod validation;
pub mod webhook;

pub use answer::{CommandResult, RecordedAnswer};
pub use catalog::{Location, LocationKind, SkuCatalog};
pub use cloudevent::{EventType, Stream};
pub use command::{
    Adjust, AdjustReason, CloseIncoming, Command, CreateTransfer, ExpectIncoming, Mode, Move,
    OnHandChange, ReceiveLine, ReceiveTransfer, Reserve, ReserveLine, SetAllocation, SetPolicy,
    TransferLineRequest,
};
pub use decide::Applied;
pub use event::{
    Actor, BusEvent, CatalogEvent, Detail, EventInvalid, EventKind, EventMeta, Moved, PolicyEvent,
    StockEvent, StoreOrigin,
};
pub use grant::LocationGrant;
pub use idempotency::{CallerTag, IDEMPOTENCY_KEY_LIFETIME_SECS, ScopedKey};
pub use ids::ChannelId;
pub use ids::{
    ID_PATTERN, IdempotencyKey, LocationId, MAX_ID_LEN, PurchaseOrderId, Region, ReservationId,
    Sku, StockKey, StoreId, TransferId,
};
pub use limits::{MAX_LINE_QTY, MAX_LINES, MAX_ON_HAND, MAX_TTL_SECONDS, MAX_VERSION};
pub use partition::{default_topic, partition_for_key};
pub use policy::{Oversell, Policy, Settings, Signal, SkuPolicy};
pub use quantity::{Backorder, Date, Dated, Filled, Incoming, PoLine, Source, State, Target};
pub use refusal::{Answer, Refusal, ShortLine, UnsourcedLine};
pub use reservation::{Reservation, ReservationLine, ReservationStatus};
pub use role::Role;
pub use sourcing::{Channel, ChannelLocation};
pub use stock::{Allocation, Cap, ChannelShare, Extras, Quantities, StockLevel};
pub use transfer::{Transfer, TransferLine, TransferStatus};
pub use validation::{ValidationError, ValidationKind};
