//! Events: the record of every applied change, published through the outbox to the bus.
//!
//! One applied change to one stock key yields exactly one [`StockEvent`], carrying the
//! key's new version and resulting quantities, so a projector can apply events idempotently
//! and out of order ("newer version wins") without ever reading the write side.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::SkuCatalog;
use crate::command::AdjustReason;
use crate::idempotency::ScopedKey;
use crate::ids::{LocationId, Region, ReservationId, Sku};
use crate::stock::StockLevel;

/// What happened to a stock key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// On-hand changed by an adjustment.
    StockAdjusted,
    /// Units were held for a reservation.
    StockReserved,
    /// Held units were sold.
    ReservationConfirmed,
    /// Held units were given back by the client.
    ReservationReleased,
    /// Held units were given back because the TTL passed.
    ReservationExpired,
}

impl EventKind {
    /// The wire spelling, also a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::StockAdjusted => "stock_adjusted",
            EventKind::StockReserved => "stock_reserved",
            EventKind::ReservationConfirmed => "reservation_confirmed",
            EventKind::ReservationReleased => "reservation_released",
            EventKind::ReservationExpired => "reservation_expired",
        }
    }
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The reservation involved, if any.
    pub reservation_id: Option<ReservationId>,
    /// Why on-hand changed, for adjustments.
    pub reason: Option<AdjustReason>,
    /// External reference of the command.
    pub reference: Option<String>,
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

/// The caller behind a change, as its credentials named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The token's subject (or a client certificate's common name); `anonymous` when the
    /// API runs without authentication.
    pub subject: String,
    /// The OAuth2 client the token was issued to, if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl StockEvent {
    /// The event describing `level` (already at its new version).
    pub fn for_level(
        kind: EventKind,
        level: &StockLevel,
        reservation_id: Option<ReservationId>,
        reason: Option<AdjustReason>,
        reference: Option<String>,
        meta: &EventMeta,
    ) -> Self {
        Self {
            event_id: format!("{}/{}/{}", level.sku, level.location, level.version),
            kind,
            region: level.region.clone(),
            sku: level.sku.clone(),
            location: level.location.clone(),
            version: level.version,
            on_hand: level.on_hand,
            reserved: level.reserved,
            reservation_id,
            reason,
            reference,
            idempotency_key: meta.idempotency_key.clone(),
            actor: meta.actor.clone(),
            occurred_at_ms: meta.occurred_at_ms,
            trace_context: meta.trace_context.clone(),
        }
    }

    /// Checks what a projector relies on: a positive version and sane quantities.
    pub fn validate(&self) -> Result<(), EventInvalid> {
        if self.version == 0 {
            return Err(EventInvalid::VersionZero);
        }
        if !(0 <= self.reserved && self.reserved <= self.on_hand) {
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stream", rename_all = "snake_case")]
pub enum BusEvent {
    /// A stock change.
    Stock(StockEvent),
    /// A catalog change.
    Catalog(CatalogEvent),
}

impl BusEvent {
    /// The record key: the SKU, so one SKU's events stay in order in one partition.
    pub fn key(&self) -> &Sku {
        match self {
            BusEvent::Stock(e) => &e.sku,
            BusEvent::Catalog(e) => &e.sku,
        }
    }

    /// The event id.
    pub fn event_id(&self) -> &str {
        match self {
            BusEvent::Stock(e) => &e.event_id,
            BusEvent::Catalog(e) => &e.event_id,
        }
    }

    /// When the change happened, Unix milliseconds.
    pub fn occurred_at_ms(&self) -> i64 {
        match self {
            BusEvent::Stock(e) => e.occurred_at_ms,
            BusEvent::Catalog(e) => e.occurred_at_ms,
        }
    }

    /// The W3C `traceparent` of the write that caused the event; catalog changes carry
    /// none.
    pub fn trace_context(&self) -> Option<&str> {
        match self {
            BusEvent::Stock(e) => e.trace_context.as_deref(),
            BusEvent::Catalog(_) => None,
        }
    }
}
