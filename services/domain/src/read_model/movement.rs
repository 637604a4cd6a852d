//! The movement history: one [`Movement`] per event of a key — what happened, why, who
//! asked, and the levels it left. What older rows never had (the states beyond on-hand
//! and reserved, an oversold fact's shortfall, a move, a transfer...) is one
//! [`MovementDetail`] document, kept whole by the stores.

use serde::{Deserialize, Serialize};

use crate::event::{Actor, Moved, StockEvent, StoreOrigin};
use crate::policy::Settings;
use crate::quantity::{Filled, PoLine};
use crate::stock::Quantities;

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// What a movement says beyond its key, version, kind and the columns every row had.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementDetail {
    /// Damaged after the change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub damaged: i64,
    /// Held for inspection after the change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quality_hold: i64,
    /// Safety stock after the change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub safety_stock: i64,
    /// Reservation units backordered after the change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backordered: i64,
    /// Units expected after the change.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incoming: i64,
    /// Of those, units in transit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub in_transit: i64,
    /// Units short beyond backorders (`stock_oversold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<i64>,
    /// Active reservations holding stock at the key when it was oversold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reservations_at_risk: Vec<String>,
    /// The threshold the change crossed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Units moved between states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved: Option<Moved>,
    /// The transfer involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer_id: Option<String>,
    /// The purchase-order line involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_order: Option<PoLine>,
    /// Backordered units this change covered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filled: Vec<Filled>,
    /// The location's policy override after a policy change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Settings>,
    /// The store whose agent forwarded the command (kept here rather than beside the
    /// actor's columns, which every row had before stores were recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreOrigin>,
}

impl MovementDetail {
    /// The stored form: `None` when there is nothing to keep.
    pub fn to_stored(&self) -> Option<String> {
        if *self == MovementDetail::default() {
            return None;
        }
        serde_json::to_string(self).ok()
    }

    /// Reads the stored form back (absent on rows written before details were kept).
    pub fn from_stored(stored: Option<&str>) -> Result<Self, serde_json::Error> {
        match stored {
            None | Some("") => Ok(Self::default()),
            Some(text) => serde_json::from_str(text),
        }
    }
}

/// One change of one key in the movement history (audit): what happened, why, who asked,
/// and the levels it left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Movement {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// The key's version after the change.
    pub version: u64,
    /// The event type (`stock_adjusted`, `stock_reserved`, ...).
    pub kind: String,
    /// On hand after the change.
    pub on_hand: i64,
    /// Reserved after the change.
    pub reserved: i64,
    /// The reservation involved.
    pub reservation_id: Option<String>,
    /// Why on-hand changed (adjustments).
    pub reason: Option<String>,
    /// The command's external reference.
    pub reference: Option<String>,
    /// Who asked.
    pub actor: Option<Actor>,
    /// The client's Idempotency-Key, as the client sent it.
    pub idempotency_key: Option<String>,
    /// When, Unix milliseconds.
    pub occurred_at_ms: i64,
    /// Everything else the event said.
    pub detail: MovementDetail,
    /// Where the event was read from and who applied it, at its latest projection; absent
    /// for a replayed dead letter (and rows projected before this was recorded).
    pub projection: Option<Provenance>,
}

/// The bus record an event was projected from and the replica that applied it: the last
/// legs of one command's path (`stockflow trace`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The log partition.
    pub partition: u32,
    /// The record's offset in it.
    pub offset: u64,
    /// When the read models applied it, Unix milliseconds.
    pub projected_at_ms: i64,
    /// The projector replica (its lease member name: pod, pid, start).
    pub projected_by: String,
}

impl Movement {
    /// The movement an event records (its projection is told apart).
    pub fn of(e: &StockEvent) -> Self {
        Self {
            sku: e.sku.to_string(),
            location: e.location.to_string(),
            version: e.version,
            kind: e.kind.as_str().to_string(),
            on_hand: e.on_hand,
            reserved: e.reserved,
            reservation_id: e.reservation_id.as_ref().map(ToString::to_string),
            reason: e.reason.map(|r| r.as_str().to_string()),
            reference: e.reference.clone(),
            actor: e.actor.as_ref().map(|a| Actor {
                store: None,
                ..a.clone()
            }),
            idempotency_key: e.idempotency_key.as_ref().map(|k| k.key.to_string()),
            occurred_at_ms: e.occurred_at_ms,
            detail: MovementDetail {
                damaged: e.damaged,
                quality_hold: e.quality_hold,
                safety_stock: e.safety_stock,
                backordered: e.backordered,
                incoming: e.incoming.iter().map(|d| d.qty).sum(),
                in_transit: e.in_transit,
                shortfall: e.shortfall,
                reservations_at_risk: e
                    .reservations_at_risk
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                signal: e.signal.map(|s| s.as_str().to_string()),
                moved: e.moved,
                transfer_id: e.transfer_id.as_ref().map(ToString::to_string),
                purchase_order: e.purchase_order.clone(),
                filled: e.filled.clone(),
                policy: e.policy,
                store: e.actor.as_ref().and_then(|a| a.store.clone()),
            },
            projection: None,
        }
    }

    /// Available after the change (what channels were shown: never below zero).
    pub fn available(&self) -> i64 {
        let d = &self.detail;
        Quantities {
            on_hand: self.on_hand,
            reserved: self.reserved,
            damaged: d.damaged,
            quality_hold: d.quality_hold,
            safety_stock: d.safety_stock,
        }
        .channel_available()
    }
}
