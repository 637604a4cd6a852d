//! Bodies of the queries: stock, availability, movements and search.

use std::collections::BTreeMap;

use serde::Serialize;
use stockflow_domain::read_model::Flow;
use stockflow_storage::ports::{InventoryRow, Movement, RegionAvailability, SearchHit};
use utoipa::ToSchema;

use super::rfc3339;

/// One location's stock in the read model.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LocationStock {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Region of the location.
    pub region: String,
    /// On hand: the truth, negative after a recorded sale took more than there was.
    pub on_hand: i64,
    /// Reserved.
    pub reserved: i64,
    /// Broken units (on hand, never sold).
    pub damaged: i64,
    /// Units held for inspection.
    pub quality_hold: i64,
    /// Units kept back from channels.
    pub safety_stock: i64,
    /// What channels are offered: on hand minus every other state, never below zero.
    pub available: i64,
    /// Reservation units accepted beyond stock under a backorder policy.
    pub backordered: i64,
    /// Units in transit from other locations (also counted in `incoming`).
    pub in_transit: i64,
    /// Units expected (purchase orders, transfers), by day, earliest first.
    pub incoming: Vec<IncomingBody>,
    /// Each channel with an allocation or a hold here: its ring-fence and cap, what it
    /// holds and what it may still take.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<super::ChannelShareBody>,
    /// The write-side version reflected.
    pub version: u64,
    /// When that change happened (RFC 3339).
    pub as_of: String,
}

/// Units expected on one day.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IncomingBody {
    /// The day (YYYY-MM-DD).
    pub date: String,
    /// Units expected that day.
    pub qty: i64,
}

fn incoming(flow: &Flow) -> Vec<IncomingBody> {
    flow.incoming
        .iter()
        .map(|d| IncomingBody {
            date: d.date.to_string(),
            qty: d.qty,
        })
        .collect()
}

impl From<InventoryRow> for LocationStock {
    fn from(r: InventoryRow) -> Self {
        Self {
            incoming: incoming(&r.flow),
            channels: r.flow.channels.into_iter().map(Into::into).collect(),
            sku: r.sku,
            location: r.location,
            region: r.region,
            on_hand: r.on_hand,
            reserved: r.reserved,
            damaged: r.damaged,
            quality_hold: r.quality_hold,
            safety_stock: r.safety_stock,
            available: r.available,
            backordered: r.flow.backordered,
            in_transit: r.flow.in_transit,
            version: r.version,
            as_of: rfc3339(r.as_of_ms),
        }
    }
}

/// `GET /v1/stock/{sku}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SkuStockResponse {
    /// SKU.
    pub sku: String,
    /// Every location with a stock row.
    pub locations: Vec<LocationStock>,
    /// Sum of available over the locations.
    pub total_available: i64,
    /// Newest change reflected (RFC 3339), absent when there is no row.
    pub as_of: Option<String>,
}

/// One region's availability.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RegionAvailabilityBody {
    /// Region.
    pub region: String,
    /// On hand summed over the region's locations.
    pub on_hand: i64,
    /// Reserved, summed.
    pub reserved: i64,
    /// Damaged, summed.
    pub damaged: i64,
    /// Held for inspection, summed.
    pub quality_hold: i64,
    /// Safety stock, summed.
    pub safety_stock: i64,
    /// What channels are offered: each location's availability (never below zero), summed.
    pub available: i64,
    /// Backordered reservation units, summed.
    pub backordered: i64,
    /// Units in transit to the region's locations, summed.
    pub in_transit: i64,
    /// Units expected by day over the region (what a checkout shows as "available from").
    pub incoming: Vec<IncomingBody>,
    /// Locations with a stock row.
    pub locations: u64,
    /// Newest change reflected (RFC 3339).
    pub as_of: String,
}

impl From<RegionAvailability> for RegionAvailabilityBody {
    fn from(r: RegionAvailability) -> Self {
        let q = r.quantities;
        Self {
            incoming: incoming(&r.flow),
            region: r.region,
            on_hand: q.on_hand,
            reserved: q.reserved,
            damaged: q.damaged,
            quality_hold: q.quality_hold,
            safety_stock: q.safety_stock,
            available: r.available,
            backordered: r.flow.backordered,
            in_transit: r.flow.in_transit,
            locations: r.locations,
            as_of: rfc3339(r.as_of_ms),
        }
    }
}

/// `GET /v1/availability/{sku}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AvailabilityResponse {
    /// SKU.
    pub sku: String,
    /// Per region.
    pub regions: Vec<RegionAvailabilityBody>,
    /// Sum over the listed regions.
    pub total_available: i64,
}

/// Who asked for a change.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ActorBody {
    /// The token's subject (a client certificate's common name with mutual TLS alone;
    /// `anonymous` without authentication).
    pub subject: String,
    /// The OAuth2 client the token was issued to.
    pub client_id: Option<String>,
    /// The store whose agent forwarded the command (its token's `store_id`).
    pub store_id: Option<String>,
    /// The agent's sequence number of the command, to line movements up with the store's log.
    pub store_seq: Option<u64>,
}

/// One change of a key.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MovementBody {
    /// The key's version after the change.
    pub version: u64,
    /// `stock_adjusted`, `stock_oversold`, `stock_moved`, `stock_reserved`,
    /// `reservation_confirmed`, `reservation_released`, `reservation_expired`,
    /// `incoming_expected`, `incoming_closed`, `policy_changed` or a `transfer_*` kind.
    pub kind: String,
    /// On hand after the change.
    pub on_hand: i64,
    /// Reserved after the change.
    pub reserved: i64,
    /// Damaged after the change.
    pub damaged: i64,
    /// Held for inspection after the change.
    pub quality_hold: i64,
    /// Safety stock after the change.
    pub safety_stock: i64,
    /// What channels were offered after the change (never below zero).
    pub available: i64,
    /// Backordered reservation units after the change.
    pub backordered: i64,
    /// For `stock_oversold`: units short beyond backorders.
    pub shortfall: Option<i64>,
    /// For `stock_oversold`: the active reservations holding stock at the key.
    pub reservations_at_risk: Vec<String>,
    /// The stock level the change crossed: `out_of_stock`, `back_in_stock` or `low_stock`.
    pub signal: Option<String>,
    /// For `stock_moved`: the state the units left.
    pub moved_from: Option<String>,
    /// For `stock_moved`: where they went (a state, or `gone`).
    pub moved_to: Option<String>,
    /// For `stock_moved`: how many.
    pub moved_qty: Option<i64>,
    /// The transfer involved.
    pub transfer_id: Option<String>,
    /// The purchase-order line involved (expected, received against, closed).
    pub purchase_order: Option<PurchaseOrderLineBody>,
    /// The reservation involved.
    pub reservation_id: Option<String>,
    /// Why on-hand changed (adjustments).
    pub reason: Option<String>,
    /// The command's external reference.
    pub reference: Option<String>,
    /// Who asked; absent for expiry.
    pub actor: Option<ActorBody>,
    /// The Idempotency-Key the client sent.
    pub idempotency_key: Option<String>,
    /// When (RFC 3339).
    pub occurred_at: String,
    /// Where the read models read the event from the bus and which projector replica
    /// applied it, when (its latest projection); absent for a replayed dead letter.
    pub projection: Option<ProjectionBody>,
}

/// A purchase-order line.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PurchaseOrderLineBody {
    /// Purchase order.
    pub purchase_order: String,
    /// Its line.
    pub line: u32,
}

/// The bus record a movement was projected from.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProjectionBody {
    /// Partition of the region's topic.
    pub partition: u32,
    /// Offset of the record in it.
    pub offset: u64,
    /// When the read models applied it (RFC 3339).
    pub projected_at: String,
    /// The projector replica (pod name, pid and start).
    pub projected_by: String,
}

impl From<Movement> for MovementBody {
    fn from(m: Movement) -> Self {
        let available = m.available();
        let d = m.detail;
        let store = d.store;
        Self {
            damaged: d.damaged,
            quality_hold: d.quality_hold,
            safety_stock: d.safety_stock,
            available,
            backordered: d.backordered,
            shortfall: d.shortfall,
            reservations_at_risk: d.reservations_at_risk,
            signal: d.signal,
            moved_from: d.moved.map(|x| x.from.as_str().to_string()),
            moved_to: d.moved.map(|x| x.to.as_str().to_string()),
            moved_qty: d.moved.map(|x| x.qty),
            transfer_id: d.transfer_id,
            purchase_order: d.purchase_order.map(|po| PurchaseOrderLineBody {
                purchase_order: po.purchase_order.to_string(),
                line: po.line,
            }),
            version: m.version,
            kind: m.kind,
            on_hand: m.on_hand,
            reserved: m.reserved,
            reservation_id: m.reservation_id,
            reason: m.reason,
            reference: m.reference,
            actor: m.actor.map(|a| ActorBody {
                subject: a.subject,
                client_id: a.client_id,
                store_id: store.as_ref().map(|s| s.id.clone()),
                store_seq: store.as_ref().and_then(|s| s.seq),
            }),
            idempotency_key: m.idempotency_key,
            occurred_at: rfc3339(m.occurred_at_ms),
            projection: m.projection.map(|p| ProjectionBody {
                partition: p.partition,
                offset: p.offset,
                projected_at: rfc3339(p.projected_at_ms),
                projected_by: p.projected_by,
            }),
        }
    }
}

/// `GET /v1/movements`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MovementsResponse {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Oldest first.
    pub movements: Vec<MovementBody>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next_after: Option<u64>,
}

/// One search hit.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchHitBody {
    /// SKU.
    pub sku: String,
    /// Display name.
    pub name: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Available units (in the region, if one was given).
    pub available: i64,
}

impl From<SearchHit> for SearchHitBody {
    fn from(h: SearchHit) -> Self {
        Self {
            sku: h.sku,
            name: h.name,
            attributes: h.attributes,
            available: h.available,
        }
    }
}

/// `GET /v1/search`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SearchResponse {
    /// The query text.
    pub query: String,
    /// Hits, best first.
    pub hits: Vec<SearchHitBody>,
}
