//! The read models, built from events by the functions here: both read stores call them
//! and only persist what they return, so a row means the same on every backend.
//!
//! - `inventory_by_sku_location`: one [`InventoryRow`] per key, as of its newest event
//!   ([`is_newer`] decides).
//! - `availability_by_region`: a [`RegionAvailability`] per SKU and region, summed over
//!   its locations' rows ([`RegionAvailability::over`]) or kept as running totals that
//!   [`region_changes`] move ([`RegionTotals`]).
//! - the movement history: one [`Movement`] per event.

use serde::{Deserialize, Serialize};

use crate::event::{Actor, StockEvent};
use crate::stock::available;

/// Whether an event at `version` is newer than what a row at `stored` (`None`: no row)
/// reflects — the projector's rule, so applying events late, twice or out of order
/// converges on the newest.
pub fn is_newer(version: u64, stored: Option<u64>) -> bool {
    stored.is_none_or(|stored| version > stored)
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
    /// On hand.
    pub on_hand: i64,
    /// Reserved.
    pub reserved: i64,
    /// On hand minus reserved.
    pub available: i64,
    /// The write-side version this row reflects.
    pub version: u64,
    /// When the reflected change happened, Unix milliseconds.
    pub as_of_ms: i64,
}

impl InventoryRow {
    /// The row `e` leaves.
    pub fn of(e: &StockEvent) -> Self {
        Self::stored(
            e.sku.to_string(),
            e.location.to_string(),
            e.region.to_string(),
            e.on_hand,
            e.reserved,
            e.version,
            e.occurred_at_ms,
        )
    }

    /// A row as a store holds it (quantities and version), with what is derived.
    pub fn stored(
        sku: String,
        location: String,
        region: String,
        on_hand: i64,
        reserved: i64,
        version: u64,
        as_of_ms: i64,
    ) -> Self {
        Self {
            sku,
            location,
            region,
            on_hand,
            reserved,
            available: available(on_hand, reserved),
            version,
            as_of_ms,
        }
    }
}

/// One location's share of a region's availability (a row of `availability_by_region`
/// where a store keeps one per location).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocationShare {
    /// On hand at the location.
    pub on_hand: i64,
    /// Reserved there.
    pub reserved: i64,
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
    /// Sum of on hand over the region's locations.
    pub on_hand: i64,
    /// Sum of reserved.
    pub reserved: i64,
    /// Sum of available.
    pub available: i64,
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
            .fold(RegionTotals::NONE, |totals, share| {
                totals.plus(RegionTotals {
                    on_hand: share.on_hand,
                    reserved: share.reserved,
                    locations: 1,
                    as_of_ms: share.as_of_ms,
                })
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
            on_hand: totals.on_hand,
            reserved: totals.reserved,
            available: available(totals.on_hand, totals.reserved),
            locations,
            as_of_ms: totals.as_of_ms,
        })
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegionTotals {
    /// Sum of on hand.
    pub on_hand: i64,
    /// Sum of reserved.
    pub reserved: i64,
    /// Locations counted.
    pub locations: i64,
    /// Latest change reflected, Unix milliseconds.
    pub as_of_ms: i64,
}

impl RegionTotals {
    /// Totals of no location.
    pub const NONE: Self = Self {
        on_hand: 0,
        reserved: 0,
        locations: 0,
        as_of_ms: i64::MIN,
    };

    /// These totals moved by `change`.
    pub fn plus(self, change: RegionTotals) -> Self {
        Self {
            on_hand: self.on_hand + change.on_hand,
            reserved: self.reserved + change.reserved,
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
    let change = |on_hand, reserved, locations| RegionTotals {
        on_hand,
        reserved,
        locations,
        as_of_ms: after.as_of_ms,
    };
    match before {
        Some(old) if old.region != after.region => vec![
            (old.region.clone(), change(-old.on_hand, -old.reserved, -1)),
            (
                after.region.clone(),
                change(after.on_hand, after.reserved, 1),
            ),
        ],
        Some(old) => vec![(
            after.region.clone(),
            change(
                after.on_hand - old.on_hand,
                after.reserved - old.reserved,
                0,
            ),
        )],
        None => vec![(
            after.region.clone(),
            change(after.on_hand, after.reserved, 1),
        )],
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
            actor: e.actor.clone(),
            idempotency_key: e.idempotency_key.as_ref().map(|k| k.key.to_string()),
            occurred_at_ms: e.occurred_at_ms,
            projection: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(region: &str, on_hand: i64, reserved: i64, at: i64) -> InventoryRow {
        InventoryRow::stored(
            "s".into(),
            "l".into(),
            region.into(),
            on_hand,
            reserved,
            1,
            at,
        )
    }

    #[test]
    fn newer_versions_win_and_a_missing_row_takes_anything() {
        assert!(is_newer(1, None));
        assert!(is_newer(3, Some(2)));
        assert!(!is_newer(2, Some(2)));
        assert!(!is_newer(1, Some(2)));
    }

    #[test]
    fn running_totals_equal_the_sum_of_the_rows_whatever_the_order() {
        let first = row("north", 10, 2, 5);
        let second = row("north", 7, 1, 9);
        let mut totals = RegionTotals::NONE;
        for (_, change) in region_changes(None, &first) {
            totals = totals.plus(change);
        }
        for (_, change) in region_changes(Some(&first), &second) {
            totals = totals.plus(change);
        }
        let shown = RegionAvailability::of_totals("s", "north", totals).expect("one location");
        let summed = RegionAvailability::over(
            "s",
            "north",
            [LocationShare {
                on_hand: 7,
                reserved: 1,
                as_of_ms: 9,
            }],
        );
        assert_eq!(Some(shown.clone()), summed);
        assert_eq!((shown.available, shown.locations), (6, 1));
        let moved = region_changes(Some(&second), &row("south", 7, 1, 12));
        assert_eq!(moved.len(), 2, "a stale region gives its share back");
        assert_eq!(RegionAvailability::over("s", "x", []), None);
    }
}
