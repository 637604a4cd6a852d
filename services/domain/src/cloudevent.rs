//! The CloudEvents 1.0 attributes of every bus event: its stable `type`, its `source`,
//! `subject`, `id` and `time`, decided here once so the publisher's headers, the AsyncAPI
//! document and the tests all read the same table.
//!
//! A `type` names what happened and to what, `dev.stockflow.<noun>.<verb>.v1`; it never
//! changes once published (a change of payload shape is a new `.v2` type beside it), which
//! is why the spelling is written out per kind instead of derived from the Rust names.

use crate::event::{BusEvent, EventKind};

/// The CloudEvents version every event declares (`specversion`).
pub const SPEC_VERSION: &str = "1.0";

/// The media type of every event's data: the JSON of the [`BusEvent`].
pub const DATA_CONTENT_TYPE: &str = "application/json";

/// The type of an event, one per distinct thing that happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A change to one stock key (its data is a [`crate::StockEvent`] of this kind).
    Stock(EventKind),
    /// A SKU's catalog data changed ([`crate::CatalogEvent`]).
    Catalog,
    /// A SKU's policy changed ([`crate::PolicyEvent`]).
    SkuPolicy,
}

/// Which variant of [`BusEvent`] carries an [`EventType`], as its data spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// `"stream": "stock"`, with `"type"` naming the kind.
    Stock(EventKind),
    /// `"stream": "catalog"`.
    Catalog,
    /// `"stream": "policy"`.
    Policy,
}

impl Stream {
    /// The value of the data's `stream` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stock(_) => "stock",
            Stream::Catalog => "catalog",
            Stream::Policy => "policy",
        }
    }
}

impl EventType {
    /// Every type, stock kinds first in [`EventKind::ALL`] order.
    pub fn all() -> Vec<EventType> {
        EventKind::ALL
            .into_iter()
            .map(EventType::Stock)
            .chain([EventType::Catalog, EventType::SkuPolicy])
            .collect()
    }

    /// The CloudEvents `type`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Stock(kind) => match kind {
                EventKind::StockAdjusted => "dev.stockflow.stock.adjusted.v1",
                EventKind::StockOversold => "dev.stockflow.stock.oversold.v1",
                EventKind::StockMoved => "dev.stockflow.stock.moved.v1",
                EventKind::StockReserved => "dev.stockflow.stock.reserved.v1",
                EventKind::ReservationConfirmed => "dev.stockflow.reservation.confirmed.v1",
                EventKind::ReservationReleased => "dev.stockflow.reservation.released.v1",
                EventKind::ReservationExpired => "dev.stockflow.reservation.expired.v1",
                EventKind::IncomingExpected => "dev.stockflow.incoming.expected.v1",
                EventKind::IncomingClosed => "dev.stockflow.incoming.closed.v1",
                EventKind::PolicyChanged => "dev.stockflow.location-policy.changed.v1",
                EventKind::TransferShipped => "dev.stockflow.transfer.shipped.v1",
                EventKind::TransferInTransit => "dev.stockflow.transfer.in-transit.v1",
                EventKind::TransferReceived => "dev.stockflow.transfer.received.v1",
                EventKind::TransferDiscrepancy => "dev.stockflow.transfer.discrepancy.v1",
                EventKind::TransferReverted => "dev.stockflow.transfer.reverted.v1",
                EventKind::AllocationChanged => "dev.stockflow.allocation.changed.v1",
            },
            EventType::Catalog => "dev.stockflow.catalog.changed.v1",
            EventType::SkuPolicy => "dev.stockflow.sku-policy.changed.v1",
        }
    }

    /// The type spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::all().into_iter().find(|t| t.as_str() == text)
    }

    /// Where the type's data says what it is.
    pub fn stream(self) -> Stream {
        match self {
            EventType::Stock(kind) => Stream::Stock(kind),
            EventType::Catalog => Stream::Catalog,
            EventType::SkuPolicy => Stream::Policy,
        }
    }

    /// What the `subject` names: the stock key, or the SKU for SKU-wide events.
    pub fn subject_form(self) -> &'static str {
        match self {
            EventType::Stock(_) => "{sku}/{location}",
            EventType::Catalog | EventType::SkuPolicy => "{sku}",
        }
    }
}

/// The context attributes of one event, except `specversion` and `datacontenttype`,
/// which are the same on every event ([`SPEC_VERSION`], [`DATA_CONTENT_TYPE`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes<'a> {
    /// `id`: the event id, deterministic, so a republished event carries the same one and
    /// consumers deduplicate on `source` + `id`.
    pub id: &'a str,
    /// `source`: a URI-reference naming where it happened: the region for stock changes,
    /// the catalog or the policies for SKU-wide ones.
    pub source: String,
    /// `type`.
    pub event_type: EventType,
    /// `subject`: `{sku}/{location}`, or `{sku}` for SKU-wide events.
    pub subject: String,
    /// `time`, Unix milliseconds: when the change was decided.
    pub time_ms: i64,
}

impl BusEvent {
    /// The event's type.
    pub fn event_type(&self) -> EventType {
        match self {
            BusEvent::Stock(e) => EventType::Stock(e.kind),
            BusEvent::Catalog(_) => EventType::Catalog,
            BusEvent::Policy(_) => EventType::SkuPolicy,
        }
    }

    /// The event's CloudEvents attributes.
    pub fn cloud_event(&self) -> Attributes<'_> {
        let (source, subject) = match self {
            BusEvent::Stock(e) => (
                format!("/stockflow/regions/{}", e.region),
                format!("{}/{}", e.sku, e.location),
            ),
            BusEvent::Catalog(e) => ("/stockflow/catalog".to_string(), e.sku.to_string()),
            BusEvent::Policy(e) => ("/stockflow/policies".to_string(), e.sku.to_string()),
        };
        Attributes {
            id: self.event_id(),
            source,
            event_type: self.event_type(),
            subject,
            time_ms: self.occurred_at_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_event_has_its_own_stable_type() {
        let all = EventType::all();
        // Every stock kind, plus the two SKU-wide streams.
        assert_eq!(all.len(), EventKind::ALL.len() + 2);
        let spelled: BTreeSet<&str> = all.iter().map(|t| t.as_str()).collect();
        assert_eq!(
            spelled.len(),
            all.len(),
            "two kinds share a type: {spelled:?}"
        );
        for t in &all {
            let text = t.as_str();
            let parts: Vec<&str> = text.split('.').collect();
            assert_eq!(parts.len(), 5, "{text}: dev.stockflow.<noun>.<verb>.v1");
            assert_eq!(&parts[..2], ["dev", "stockflow"], "{text}");
            assert_eq!(parts[4], "v1", "{text}");
            assert!(
                parts[2..4].iter().all(
                    |p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                ),
                "{text}"
            );
            assert_eq!(EventType::parse(text), Some(*t));
        }
        assert_eq!(
            EventType::Stock(EventKind::StockAdjusted).as_str(),
            "dev.stockflow.stock.adjusted.v1"
        );
        assert_eq!(
            EventType::Stock(EventKind::StockReserved).as_str(),
            "dev.stockflow.stock.reserved.v1"
        );
        assert_eq!(EventType::parse("dev.stockflow.stock.adjusted.v2"), None);
    }

    /// Serializes a sample of each stream and checks the data names the type's stream and
    /// kind the way [`EventType::stream`] says.
    #[test]
    fn the_data_of_each_type_names_its_stream_and_kind() {
        for t in EventType::all() {
            let event = sample(t);
            assert_eq!(event.event_type(), t);
            let json = serde_json::to_value(&event).unwrap_or_default();
            assert_eq!(json["stream"], t.stream().as_str(), "{}", t.as_str());
            if let Stream::Stock(kind) = t.stream() {
                assert_eq!(json["type"], kind.as_str(), "{}", t.as_str());
            }
        }
    }

    #[test]
    fn attributes_name_the_key_the_region_and_the_decision_time() {
        let stock = sample(EventType::Stock(EventKind::StockReserved));
        let a = stock.cloud_event();
        assert_eq!(a.id, "SKU-1/store-7/3");
        assert_eq!(a.source, "/stockflow/regions/north");
        assert_eq!(a.subject, "SKU-1/store-7");
        assert_eq!(a.time_ms, 1_764_000_000_123);
        assert_eq!(a.event_type.as_str(), "dev.stockflow.stock.reserved.v1");
        let catalog = sample(EventType::Catalog);
        let catalog = catalog.cloud_event();
        assert_eq!(
            (
                catalog.id,
                catalog.subject.as_str(),
                catalog.source.as_str()
            ),
            ("SKU-1/catalog/2", "SKU-1", "/stockflow/catalog")
        );
        let policy = sample(EventType::SkuPolicy);
        let policy = policy.cloud_event();
        assert_eq!(
            (policy.id, policy.subject.as_str(), policy.source.as_str()),
            ("SKU-1/policy/4", "SKU-1", "/stockflow/policies")
        );
    }

    fn sample(t: EventType) -> BusEvent {
        use crate::event::{CatalogEvent, PolicyEvent, StockEvent};
        let sku = crate::Sku::parse("SKU-1").unwrap_or_else(|e| panic!("{e}"));
        let at = 1_764_000_000_123;
        match t {
            EventType::Stock(kind) => BusEvent::Stock(StockEvent {
                event_id: "SKU-1/store-7/3".into(),
                kind,
                region: crate::Region::parse("north").unwrap_or_else(|e| panic!("{e}")),
                sku,
                location: crate::LocationId::parse("store-7").unwrap_or_else(|e| panic!("{e}")),
                version: 3,
                on_hand: 10,
                reserved: 2,
                damaged: 0,
                quality_hold: 0,
                safety_stock: 0,
                available: Some(8),
                incoming: Vec::new(),
                in_transit: 0,
                backordered: 0,
                reservation_id: None,
                reason: None,
                reference: None,
                shortfall: None,
                reservations_at_risk: Vec::new(),
                signal: None,
                moved: None,
                transfer_id: None,
                purchase_order: None,
                filled: Vec::new(),
                policy: None,
                backordered_now: None,
                allocation: None,
                channels: Vec::new(),
                idempotency_key: None,
                actor: None,
                occurred_at_ms: at,
                trace_context: None,
            }),
            EventType::Catalog => BusEvent::Catalog(CatalogEvent {
                event_id: "SKU-1/catalog/2".into(),
                sku,
                name: "One".into(),
                attributes: Default::default(),
                version: 2,
                occurred_at_ms: at,
            }),
            EventType::SkuPolicy => BusEvent::Policy(PolicyEvent {
                event_id: "SKU-1/policy/4".into(),
                sku,
                settings: Default::default(),
                version: 4,
                reference: None,
                actor: None,
                idempotency_key: None,
                occurred_at_ms: at,
            }),
        }
    }
}
