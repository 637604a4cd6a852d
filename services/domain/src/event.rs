//! Events: the record of every applied change, published through the outbox to the bus.
//!
//! One applied change to one stock key yields exactly one [`StockEvent`], carrying the
//! key's new version and resulting quantities, so a projector can apply events idempotently
//! and out of order ("newer version wins") without ever reading the write side.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::actor::{Actor, StoreOrigin};
use crate::catalog::SkuCatalog;
use crate::command::AdjustReason;
use crate::idempotency::ScopedKey;
use crate::ids::{ChannelId, LocationId, Region, ReservationId, Sku, TransferId};
use crate::limits::MAX_ON_HAND;
use crate::policy::{self, Settings, Signal, SkuPolicy};
use crate::quantity::{Dated, Filled, PoLine, State, Target};
use crate::stock::{Allocation, ChannelShare, Next, Quantities, StockLevel};

/// What happened to a stock key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// On-hand changed by an adjustment.
    StockAdjusted,
    /// A recorded fact (a sale at a till) took `available` below zero beyond what is
    /// backordered: reservations at the key are at risk.
    StockOversold,
    /// Units moved between states.
    StockMoved,
    /// Units were held for a reservation.
    StockReserved,
    /// Held units were sold.
    ReservationConfirmed,
    /// Held units were given back by the client.
    ReservationReleased,
    /// Held units were given back because the TTL passed.
    ReservationExpired,
    /// A purchase-order line is expected (or was revised).
    IncomingExpected,
    /// A purchase-order line was closed.
    IncomingClosed,
    /// The location's policy override changed.
    PolicyChanged,
    /// Units of a transfer left this (source) key.
    TransferShipped,
    /// Units of a transfer are on their way to this (destination) key.
    TransferInTransit,
    /// Units of a transfer arrived at this key.
    TransferReceived,
    /// Units of a transfer never arrived at this key (closed short).
    TransferDiscrepancy,
    /// Units a transfer took out of this key came back: its shipment was undone before it
    /// completed.
    TransferReverted,
    /// A channel's allocation (ring-fence, cap) at this key was set, changed or removed.
    AllocationChanged,
}

impl EventKind {
    /// The wire spelling, also a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StockAdjusted => "stock_adjusted",
            EventKind::StockOversold => "stock_oversold",
            EventKind::StockMoved => "stock_moved",
            EventKind::StockReserved => "stock_reserved",
            EventKind::ReservationConfirmed => "reservation_confirmed",
            EventKind::ReservationReleased => "reservation_released",
            EventKind::ReservationExpired => "reservation_expired",
            EventKind::IncomingExpected => "incoming_expected",
            EventKind::IncomingClosed => "incoming_closed",
            EventKind::PolicyChanged => "policy_changed",
            EventKind::TransferShipped => "transfer_shipped",
            EventKind::TransferInTransit => "transfer_in_transit",
            EventKind::TransferReceived => "transfer_received",
            EventKind::TransferDiscrepancy => "transfer_discrepancy",
            EventKind::TransferReverted => "transfer_reverted",
            EventKind::AllocationChanged => "allocation_changed",
        }
    }

    /// Every kind, in the order the API lists them.
    pub const ALL: [EventKind; 16] = [
        EventKind::StockAdjusted,
        EventKind::StockOversold,
        EventKind::StockMoved,
        EventKind::StockReserved,
        EventKind::ReservationConfirmed,
        EventKind::ReservationReleased,
        EventKind::ReservationExpired,
        EventKind::IncomingExpected,
        EventKind::IncomingClosed,
        EventKind::PolicyChanged,
        EventKind::TransferShipped,
        EventKind::TransferInTransit,
        EventKind::TransferReceived,
        EventKind::TransferDiscrepancy,
        EventKind::TransferReverted,
        EventKind::AllocationChanged,
    ];
}

/// Units moved between states, as a move event records them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Moved {
    /// The state they left.
    pub from: State,
    /// Where they went.
    pub to: Target,
    /// How many.
    pub qty: i64,
}

/// A channel's allocation after an `allocation_changed` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AllocationChange {
    /// The channel.
    pub channel: ChannelId,
    /// Its allocation now; absent when it was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Allocation>,
}

/// What a change says about itself beyond the levels it left: set by the decision that
/// made it (each field only where it applies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Detail {
    /// The reservation involved.
    pub reservation_id: Option<ReservationId>,
    /// Why on-hand changed.
    pub reason: Option<AdjustReason>,
    /// External reference of the command.
    pub reference: Option<String>,
    /// Units short beyond backorders (an oversold fact).
    pub shortfall: Option<i64>,
    /// Active reservations holding stock at the key when it was oversold.
    pub reservations_at_risk: Vec<ReservationId>,
    /// A move between states.
    pub moved: Option<Moved>,
    /// The transfer involved.
    pub transfer_id: Option<TransferId>,
    /// The purchase-order line involved.
    pub purchase_order: Option<PoLine>,
    /// The location's policy override after a policy change.
    pub policy: Option<Settings>,
    /// Units of the reservation backordered by this hold.
    pub backordered: Option<i64>,
    /// A channel's allocation after an allocation change.
    pub allocation: Option<AllocationChange>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Context a caller attaches to the events of one command.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMeta {
    /// Who asked for the change, if a client did (expiry has no actor).
    pub actor: Option<Actor>,
    /// The command's idempotency key, if it came from a client.
    pub idempotency_key: Option<ScopedKey>,
    /// W3C `traceparent` of the request that caused the change.
    pub trace_context: Option<String>,
    /// When the change was decided, Unix milliseconds.
    pub occurred_at_ms: i64,
}

/// One applied change to one stock key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StockEvent {
    /// Unique and deterministic: `{sku}/{location}/{version}`, so a re-published event
    /// keeps its id.
    pub event_id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Region of the location.
    pub region: Region,
    /// SKU.
    pub sku: Sku,
    /// Location.
    pub location: LocationId,
    /// The key's version after the change.
    pub version: u64,
    /// On-hand after the change.
    pub on_hand: i64,
    /// Reserved after the change.
    pub reserved: i64,
    /// Damaged after the change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub damaged: i64,
    /// Held for inspection after the change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quality_hold: i64,
    /// Safety stock after the change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub safety_stock: i64,
    /// Available after the change, as derived from the states above (absent on events
    /// written before it was carried). May be negative: channels are shown zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// Units expected after the change, by day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incoming: Vec<Dated>,
    /// Of those, units in transit from other locations.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_transit: i64,
    /// Reservation units backordered after the change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backordered: i64,
    /// The reservation involved, if any.
    pub reservation_id: Option<ReservationId>,
    /// Why on-hand changed, for adjustments.
    pub reason: Option<AdjustReason>,
    /// External reference of the command.
    pub reference: Option<String>,
    /// Units short beyond backorders, for `stock_oversold`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<i64>,
    /// Active reservations holding stock at the key, for `stock_oversold`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations_at_risk: Vec<ReservationId>,
    /// The threshold the change crossed, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
    /// Units moved between states, for `stock_moved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<Moved>,
    /// The transfer involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<TransferId>,
    /// The purchase-order line involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_order: Option<PoLine>,
    /// Backordered units this change covered, oldest reservation first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filled: Vec<Filled>,
    /// The location's policy override, for `policy_changed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Settings>,
    /// Units of the reservation this hold backordered, for `stock_reserved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backordered_now: Option<i64>,
    /// The channel's allocation now, for `allocation_changed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<AllocationChange>,
    /// Each channel with an allocation or a hold at the key after the change: what it
    /// holds and may still take.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelShare>,
    /// The idempotency key of the command, in its caller's key space.
    pub idempotency_key: Option<ScopedKey>,
    /// Who asked for the change (audit); absent for expiry and for events written before
    /// actors were recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// When the change was decided, Unix milliseconds.
    pub occurred_at_ms: i64,
    /// W3C trace context of the causing request.
    pub trace_context: Option<String>,
}

impl StockEvent {
    /// The event of the change from `before` to `next` (already at its new version): the
    /// levels it left, the threshold it crossed (on what channels see) and the
    /// backorders it filled.
    pub fn of_change(
        kind: EventKind,
        before: &StockLevel,
        next: &Next,
        detail: Detail,
        meta: &EventMeta,
    ) -> Self {
        let level = &next.level;
        let signal = policy::crossed(
            before.channel_available(),
            level.channel_available(),
            level.policy().low_stock_threshold,
        );
        Self {
            signal,
            filled: next.filled.clone(),
            ..Self::for_level(kind, level, detail, meta)
        }
    }

    /// The event describing `level` (already at its new version).
    pub fn for_level(
        kind: EventKind,
        level: &StockLevel,
        detail: Detail,
        meta: &EventMeta,
    ) -> Self {
        let q = level.quantities();
        Self {
            event_id: format!("{}/{}/{}", level.sku, level.location, level.version),
            kind,
            region: level.region.clone(),
            sku: level.sku.clone(),
            location: level.location.clone(),
            version: level.version,
            on_hand: q.on_hand,
            reserved: q.reserved,
            damaged: q.damaged,
            quality_hold: q.quality_hold,
            safety_stock: q.safety_stock,
            available: Some(q.available()),
            incoming: level.incoming_by_date(),
            in_transit: level.in_transit(),
            backordered: level.backordered(),
            reservation_id: detail.reservation_id,
            reason: detail.reason,
            reference: detail.reference,
            shortfall: detail.shortfall,
            reservations_at_risk: detail.reservations_at_risk,
            signal: None,
            moved: detail.moved,
            transfer_id: detail.transfer_id,
            purchase_order: detail.purchase_order,
            filled: Vec::new(),
            policy: detail.policy,
            backordered_now: detail.backordered,
            allocation: detail.allocation,
            channels: level.channel_shares(),
            idempotency_key: meta.idempotency_key.clone(),
            actor: meta.actor.clone(),
            occurred_at_ms: meta.occurred_at_ms,
            trace_context: meta.trace_context.clone(),
        }
    }

    /// The quantities the event carries.
    pub fn quantities(&self) -> Quantities {
        Quantities {
            on_hand: self.on_hand,
            reserved: self.reserved,
            damaged: self.damaged,
            quality_hold: self.quality_hold,
            safety_stock: self.safety_stock,
        }
    }

    /// Checks what a projector relies on: a positive version and sane quantities (every
    /// state but on-hand non-negative; on-hand within its bound either way).
    pub fn validate(&self) -> Result<(), EventInvalid> {
        if self.version == 0 {
            return Err(EventInvalid::VersionZero);
        }
        let q = self.quantities();
        let states_ok =
            q.reserved >= 0 && q.damaged >= 0 && q.quality_hold >= 0 && q.safety_stock >= 0;
        if !states_ok || q.on_hand.abs() > MAX_ON_HAND || self.incoming.iter().any(|d| d.qty < 0) {
            return Err(EventInvalid::Quantities {
                on_hand: self.on_hand,
                reserved: self.reserved,
            });
        }
        Ok(())
    }
}

/// Why an event can never be projected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventInvalid {
    /// Versions start at 1.
    #[error("version must be at least 1")]
    VersionZero,
    /// The quantities break the stock invariant.
    #[error("quantities break the invariant: on_hand {on_hand} reserved {reserved}")]
    Quantities {
        /// On hand after the change.
        on_hand: i64,
        /// Reserved after the change.
        reserved: i64,
    },
}

/// A SKU's catalog data changed (feeds the search index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogEvent {
    /// `{sku}/catalog/{version}`.
    pub event_id: String,
    /// SKU.
    pub sku: Sku,
    /// Display name.
    pub name: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Catalog revision.
    pub version: u64,
    /// Unix milliseconds.
    pub occurred_at_ms: i64,
}

impl CatalogEvent {
    /// The event describing `catalog` (already at its new revision), decided at
    /// `occurred_at_ms`.
    pub fn of(catalog: &SkuCatalog, occurred_at_ms: i64) -> Self {
        Self {
            event_id: format!("{}/catalog/{}", catalog.sku, catalog.version),
            sku: catalog.sku.clone(),
            name: catalog.name.clone(),
            attributes: catalog.attributes.clone(),
            version: catalog.version,
            occurred_at_ms,
        }
    }
}

/// Everything that travels on the bus; the record key is always the SKU.
// Stock events are by far the most frequent and are serialized as soon as they are made:
// boxing them would cost an allocation on the hot path to save memory on the rare others.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stream", rename_all = "snake_case")]
pub enum BusEvent {
    /// A stock change.
    Stock(StockEvent),
    /// A catalog change.
    Catalog(CatalogEvent),
    /// A SKU's policy changed.
    Policy(PolicyEvent),
}

/// A SKU's policy changed (a location's override is a [`StockEvent`] of its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyEvent {
    /// `{sku}/policy/{version}`.
    pub event_id: String,
    /// SKU.
    pub sku: Sku,
    /// The settings now.
    pub settings: Settings,
    /// The policy's version.
    pub version: u64,
    /// External reference of the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Who changed it (audit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
    /// The command's idempotency key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<ScopedKey>,
    /// Unix milliseconds.
    pub occurred_at_ms: i64,
}

impl PolicyEvent {
    /// The event of `policy` (already at its new version), changed by `reference`.
    pub fn of(policy: &SkuPolicy, reference: Option<String>, meta: &EventMeta) -> Self {
        Self {
            event_id: format!("{}/policy/{}", policy.sku, policy.version),
            sku: policy.sku.clone(),
            settings: policy.settings,
            version: policy.version,
            reference,
            actor: meta.actor.clone(),
            idempotency_key: meta.idempotency_key.clone(),
            occurred_at_ms: meta.occurred_at_ms,
        }
    }
}

impl BusEvent {
    /// The record key: the SKU, so one SKU's events stay in order in one partition.
    pub fn key(&self) -> &Sku {
        match self {
            BusEvent::Stock(e) => &e.sku,
            BusEvent::Catalog(e) => &e.sku,
            BusEvent::Policy(e) => &e.sku,
        }
    }

    /// The event id.
    pub fn event_id(&self) -> &str {
        match self {
            BusEvent::Stock(e) => &e.event_id,
            BusEvent::Catalog(e) => &e.event_id,
            BusEvent::Policy(e) => &e.event_id,
        }
    }

    /// When the change happened, Unix milliseconds.
    pub fn occurred_at_ms(&self) -> i64 {
        match self {
            BusEvent::Stock(e) => e.occurred_at_ms,
            BusEvent::Catalog(e) => e.occurred_at_ms,
            BusEvent::Policy(e) => e.occurred_at_ms,
        }
    }

    /// The W3C `traceparent` of the write that caused the event; catalog changes carry
    /// none.
    pub fn trace_context(&self) -> Option<&str> {
        match self {
            BusEvent::Stock(e) => e.trace_context.as_deref(),
            BusEvent::Catalog(_) | BusEvent::Policy(_) => None,
        }
    }
}
