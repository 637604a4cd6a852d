//! The read models, built from events by the functions here: both read stores call them
//! and only persist what they return, so a row means the same on every backend.
//!
//! - `inventory_by_sku_location`: one [`InventoryRow`] per key, as of its newest event
//!   ([`is_newer`] decides).
//! - `availability_by_region`: a [`RegionAvailability`] per SKU and region, summed over
//!   its locations' rows ([`RegionAvailability::over`]) or kept as running totals that
//!   [`region_changes`] move ([`RegionTotals`]).
//! - the movement history: one [`Movement`] per event ([`movement`]).
//!
//! `available` in every row is what channels are shown: each location's availability
//! clamped at zero (an oversold location offers nothing, and takes nothing from the
//! others), summed. `on_hand` shows the truth, negative after an oversold fact.

mod movement;

use serde::{Deserialize, Serialize};

pub use movement::{Movement, MovementDetail, Provenance};

use crate::event::StockEvent;
use crate::ids::ChannelId;
use crate::quantity::{Dated, add_days};
use crate::stock::{ChannelShare, Quantities, StockLevel};

/// Whether an event at `version` is newer than what a row at `stored` (`None`: no row)
/// reflects — the projector's rule, so applying events late, twice or out of order
/// converges on the newest.
pub fn is_newer(version: u64, stored: Option<u64>) -> bool {
    stored.is_none_or(|stored| version > stored)
}

/// What is expected at a key besides its quantities: backorders and incoming units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flow {
    /// Reservation units backordered.
    #[serde(default)]
    pub backordered: i64,
    /// Units in transit from other locations (also counted in `incoming`).
    #[serde(default)]
    pub in_transit: i64,
    /// Units expected, by day.
    #[serde(default)]
    pub incoming: Vec<Dated>,
    /// Each channel with an allocation or a hold at the key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelShare>,
}

impl Flow {
    /// The flow an event carries.
    pub fn of(e: &StockEvent) -> Self {
        Self {
            backordered: e.backordered,
            in_transit: e.in_transit,
            incoming: e.incoming.clone(),
            channels: e.channels.clone(),
        }
    }

    /// The stored form of `channels` (`None` when no channel has a share).
    pub fn channels_to_stored(&self) -> Option<String> {
        list_to_stored(&self.channels)
    }

    /// Reads the stored form of `channels` back (unreadable or absent: none).
    pub fn channels_from_stored(stored: Option<&str>) -> Vec<ChannelShare> {
        list_from_stored(stored)
    }

    /// The stored form of `incoming` (`None` when nothing is expected).
    pub fn incoming_to_stored(&self) -> Option<String> {
        list_to_stored(&self.incoming)
    }

    /// Reads the stored form of `incoming` back (unreadable or absent: nothing expected).
    pub fn incoming_from_stored(stored: Option<&str>) -> Vec<Dated> {
        list_from_stored(stored)
    }
}

/// A list kept in one text column: `None` when empty.
fn list_to_stored<T: Serialize>(list: &[T]) -> Option<String> {
    if list.is_empty() {
        return None;
    }
    serde_json::to_string(list).ok()
}

/// A list read back from its column (unreadable or absent: empty).
fn list_from_stored<T: serde::de::DeserializeOwned>(stored: Option<&str>) -> Vec<T> {
    stored
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default()
}

/// One row of `inventory_by_sku_location`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryRow {
    /// SKU.
    pub sku: String,
    /// Location.
    pub location: String,
    /// Region of the location.
    pub region: String,
    /// On hand (negative after an oversold fact).
    pub on_hand: i64,
    /// Reserved.
    pub reserved: i64,
    /// Damaged.
    #[serde(default)]
    pub damaged: i64,
    /// Held for inspection.
    #[serde(default)]
    pub quality_hold: i64,
    /// Safety stock.
    #[serde(default)]
    pub safety_stock: i64,
    /// What channels are shown: on hand minus every other state, never below zero.
    pub available: i64,
    /// Backorders and incoming units.
    #[serde(default)]
    pub flow: Flow,
    /// The write-side version this row reflects.
    pub version: u64,
    /// When the reflected change happened, Unix milliseconds.
    pub as_of_ms: i64,
}

impl InventoryRow {
    /// The row `e` leaves.
    pub fn of(e: &StockEvent) -> Self {
        Self::stored(
            (
                e.sku.to_string(),
                e.location.to_string(),
                e.region.to_string(),
            ),
            e.quantities(),
            Flow::of(e),
            e.version,
            e.occurred_at_ms,
        )
    }

    /// The row the write side's `level` stands for, as of `as_of_ms` (the moment it was
    /// read): what rebuilding the read models from the write side writes, the same row
    /// the level's latest event left.
    pub fn of_level(level: &StockLevel, as_of_ms: i64) -> Self {
        Self::stored(
            (
                level.sku.to_string(),
                level.location.to_string(),
                level.region.to_string(),
            ),
            level.quantities(),
            Flow {
                backordered: level.backordered(),
                in_transit: level.in_transit(),
                incoming: level.incoming_by_date(),
                channels: level.channel_shares(),
            },
            level.version,
            as_of_ms,
        )
    }

    /// A row as a store holds it (`(sku, location, region)`, quantities, flow, version),
    /// with what is derived.
    pub fn stored(
        (sku, location, region): (String, String, String),
        q: Quantities,
        flow: Flow,
        version: u64,
        as_of_ms: i64,
    ) -> Self {
        Self {
            sku,
            location,
            region,
            on_hand: q.on_hand,
            reserved: q.reserved,
            damaged: q.damaged,
            quality_hold: q.quality_hold,
            safety_stock: q.safety_stock,
            available: q.channel_available(),
            flow,
            version,
            as_of_ms,
        }
    }

    /// Units a reservation for `channel` could take here as of this row: what channels
    /// are shown, less other channels' unheld fences, within the channel's cap.
    pub fn available_to(&self, channel: Option<&ChannelId>) -> i64 {
        crate::stock::available_to_channel(
            self.quantities().available(),
            self.on_hand,
            &self.flow.channels,
            channel,
        )
    }

    /// The quantities of the row.
    pub fn quantities(&self) -> Quantities {
        Quantities {
            on_hand: self.on_hand,
            reserved: self.reserved,
            damaged: self.damaged,
            quality_hold: self.quality_hold,
            safety_stock: self.safety_stock,
        }
    }

    /// This row's share of its region's totals.
    pub fn share(&self) -> LocationShare {
        LocationShare {
            quantities: self.quantities(),
            flow: self.flow.clone(),
            as_of_ms: self.as_of_ms,
        }
    }
}

/// One location's share of a region's availability (a row of `availability_by_region`
/// where a store keeps one per location).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocationShare {
    /// The location's quantities.
    pub quantities: Quantities,
    /// Its backorders and incoming units.
    pub flow: Flow,
    /// When its newest change happened, Unix milliseconds.
    pub as_of_ms: i64,
}

/// One row of `availability_by_region`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionAvailability {
    /// SKU.
    pub sku: String,
    /// Region.
    pub region: String,
    /// Sums of each quantity over the region's locations.
    pub quantities: Quantities,
    /// What channels are shown: each location's availability (never below zero), summed.
    pub available: i64,
    /// Backorders and incoming units (by day) over the region.
    pub flow: Flow,
    /// Locations with a row for this SKU.
    pub locations: u64,
    /// Latest change reflected, Unix milliseconds.
    pub as_of_ms: i64,
}

impl RegionAvailability {
    /// The availability of `sku` in `region` over its locations' `shares`; `None` when
    /// no location of the region has a row.
    pub fn over(
        sku: &str,
        region: &str,
        shares: impl IntoIterator<Item = LocationShare>,
    ) -> Option<Self> {
        let totals = shares
            .into_iter()
            .fold(RegionTotals::none(), |totals, share| {
                totals.plus(&RegionTotals::of_share(&share, 1))
            });
        Self::of_totals(sku, region, totals)
    }

    /// The availability that running `totals` stand for; `None` when they count no
    /// location.
    pub fn of_totals(sku: &str, region: &str, totals: RegionTotals) -> Option<Self> {
        let locations = u64::try_from(totals.locations).ok().filter(|n| *n > 0)?;
        Some(Self {
            sku: sku.to_string(),
            region: region.to_string(),
            quantities: totals.quantities,
            available: totals.available,
            flow: totals.flow,
            locations,
            as_of_ms: totals.as_of_ms,
        })
    }
}

/// The availability of `sku` per region for `channel` over `rows` (the rows of the
/// locations the channel sells from): the sums of each location's quantities, with
/// `available` what the channel may take at each (other channels' fences and its cap
/// counted), summed.
pub fn channel_regions(
    sku: &str,
    rows: &[InventoryRow],
    channel: &ChannelId,
) -> Vec<RegionAvailability> {
    let mut by_region: std::collections::BTreeMap<&str, Vec<&InventoryRow>> =
        std::collections::BTreeMap::new();
    for row in rows {
        by_region.entry(row.region.as_str()).or_default().push(row);
    }
    by_region
        .into_iter()
        .filter_map(|(region, rows)| {
            let shares = rows.iter().map(|r| LocationShare {
                quantities: r.quantities(),
                flow: r.flow.clone(),
                as_of_ms: r.as_of_ms,
            });
            let mut totals = RegionAvailability::over(sku, region, shares)?;
            totals.available = rows.iter().map(|r| r.available_to(Some(channel))).sum();
            Some(totals)
        })
        .collect()
}

/// Sets of `bundle` each location can make from its components' `rows` (rows of other SKUs
/// are ignored), for `channel` (`None`: what any channel is shown): `(location, region,
/// sets)` for each location holding a row of every component, in location order.
pub fn bundle_sets(
    bundle: &crate::sourcing::Bundle,
    rows: &[InventoryRow],
    channel: Option<&ChannelId>,
) -> Vec<(String, String, i64)> {
    let mut at: std::collections::BTreeMap<&str, (&str, std::collections::BTreeMap<&str, i64>)> =
        std::collections::BTreeMap::new();
    for row in rows {
        if bundle.components.iter().any(|c| c.sku.as_str() == row.sku) {
            at.entry(row.location.as_str())
                .or_insert_with(|| (row.region.as_str(), Default::default()))
                .1
                .insert(row.sku.as_str(), row.available_to(channel));
        }
    }
    at.into_iter()
        .filter(|(_, (_, held))| held.len() == bundle.components.len())
        .map(|(location, (region, held))| {
            let sets = bundle.available(|sku| held.get(sku.as_str()).copied().unwrap_or(0));
            (location.to_string(), region.to_string(), sets)
        })
        .collect()
}

/// The availability of `bundle` per region from its components' `rows`, for `channel`: a
/// bundle holds no stock, so its quantities are zero and `available` counts the sets each
/// location's components make, summed; `locations` counts the locations making any.
pub fn bundle_regions(
    bundle: &crate::sourcing::Bundle,
    rows: &[InventoryRow],
    channel: Option<&ChannelId>,
) -> Vec<RegionAvailability> {
    let mut by_region: std::collections::BTreeMap<String, RegionAvailability> =
        std::collections::BTreeMap::new();
    for (location, region, sets) in bundle_sets(bundle, rows, channel) {
        let as_of_ms = rows
            .iter()
            .filter(|r| r.location == location)
            .map(|r| r.as_of_ms)
            .max()
            .unwrap_or(0);
        let totals = by_region
            .entry(region.clone())
            .or_insert_with(|| RegionAvailability {
                sku: bundle.sku.to_string(),
                region,
                quantities: Quantities::default(),
                available: 0,
                flow: Flow::default(),
                locations: 0,
                as_of_ms: i64::MIN,
            });
        totals.available += sets;
        totals.locations += u64::from(sets > 0);
        totals.as_of_ms = totals.as_of_ms.max(as_of_ms);
    }
    by_region.into_values().collect()
}

/// Units available over `regions`: what a search hit reports.
pub fn available_over(regions: &[RegionAvailability]) -> i64 {
    regions.iter().map(|r| r.available).sum()
}

/// Whether a SKU with `available` units counts as in stock (a search filter).
pub fn in_stock(available: i64) -> bool {
    available > 0
}

/// A region's running totals over its locations' rows, as a store that keeps sums holds
/// them; also the change one location's new row makes to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionTotals {
    /// Sums of each quantity.
    pub quantities: Quantities,
    /// Sum of each location's channel availability.
    pub available: i64,
    /// Sums of backorders and incoming units (by day).
    pub flow: Flow,
    /// Locations counted.
    pub locations: i64,
    /// Latest change reflected, Unix milliseconds.
    pub as_of_ms: i64,
}

impl RegionTotals {
    /// Totals of no location.
    pub fn none() -> Self {
        Self {
            quantities: Quantities::default(),
            available: 0,
            flow: Flow::default(),
            locations: 0,
            as_of_ms: i64::MIN,
        }
    }

    /// `sign` times one location's share (`sign` -1 takes it back), counting `sign`
    /// locations.
    fn of_share(share: &LocationShare, sign: i64) -> Self {
        let q = share.quantities;
        Self {
            quantities: Quantities {
                on_hand: sign * q.on_hand,
                reserved: sign * q.reserved,
                damaged: sign * q.damaged,
                quality_hold: sign * q.quality_hold,
                safety_stock: sign * q.safety_stock,
            },
            available: sign * q.channel_available(),
            flow: Flow {
                backordered: sign * share.flow.backordered,
                in_transit: sign * share.flow.in_transit,
                incoming: add_days(&[], &share.flow.incoming, sign),
                // Region totals keep no channel shares: a channel's availability in a
                // region is summed from its locations' rows.
                channels: Vec::new(),
            },
            locations: sign,
            as_of_ms: share.as_of_ms,
        }
    }

    /// These totals moved by `change`.
    pub fn plus(&self, change: &RegionTotals) -> Self {
        let (a, b) = (self.quantities, change.quantities);
        Self {
            quantities: Quantities {
                on_hand: a.on_hand + b.on_hand,
                reserved: a.reserved + b.reserved,
                damaged: a.damaged + b.damaged,
                quality_hold: a.quality_hold + b.quality_hold,
                safety_stock: a.safety_stock + b.safety_stock,
            },
            available: self.available + change.available,
            flow: Flow {
                backordered: self.flow.backordered + change.flow.backordered,
                in_transit: self.flow.in_transit + change.flow.in_transit,
                incoming: add_days(&self.flow.incoming, &change.flow.incoming, 1),
                channels: Vec::new(),
            },
            locations: self.locations + change.locations,
            as_of_ms: self.as_of_ms.max(change.as_of_ms),
        }
    }
}

/// How the totals of the regions involved change when one location's row goes from
/// `before` (`None`: no row yet) to `after`: `(region, change)` for each region touched.
/// A location never changes region, but if a stale row says otherwise its contribution
/// moves rather than being counted twice.
pub fn region_changes(
    before: Option<&InventoryRow>,
    after: &InventoryRow,
) -> Vec<(String, RegionTotals)> {
    let added = RegionTotals::of_share(&after.share(), 1);
    match before {
        Some(old) if old.region != after.region => {
            let mut gone = RegionTotals::of_share(&old.share(), -1);
            gone.as_of_ms = after.as_of_ms;
            vec![(old.region.clone(), gone), (after.region.clone(), added)]
        }
        Some(old) => {
            let mut moved = added.plus(&RegionTotals::of_share(&old.share(), -1));
            moved.locations = 0;
            moved.as_of_ms = after.as_of_ms;
            vec![(after.region.clone(), moved)]
        }
        None => vec![(after.region.clone(), added)],
    }
}

#[cfg(test)]
mod tests;
