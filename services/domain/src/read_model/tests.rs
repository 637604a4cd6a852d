//! The read-model builders: running totals equal the sums of the rows whatever the order,
//! and channels never see a negative availability.

use super::*;
use crate::quantity::Date;

fn row(region: &str, on_hand: i64, reserved: i64, at: i64) -> InventoryRow {
    InventoryRow::stored(
        ("s".into(), "l".into(), region.into()),
        Quantities {
            on_hand,
            reserved,
            ..Quantities::default()
        },
        Flow::default(),
        1,
        at,
    )
}

fn share(on_hand: i64, reserved: i64, at: i64) -> LocationShare {
    row("north", on_hand, reserved, at).share()
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
    let mut totals = RegionTotals::none();
    for (_, change) in region_changes(None, &first) {
        totals = totals.plus(&change);
    }
    for (_, change) in region_changes(Some(&first), &second) {
        totals = totals.plus(&change);
    }
    let shown = RegionAvailability::of_totals("s", "north", totals).expect("one location");
    let summed = RegionAvailability::over("s", "north", [share(7, 1, 9)]);
    assert_eq!(Some(shown.clone()), summed);
    assert_eq!((shown.available, shown.locations), (6, 1));
    let moved = region_changes(Some(&second), &row("south", 7, 1, 12));
    assert_eq!(moved.len(), 2, "a stale region gives its share back");
    assert_eq!(RegionAvailability::over("s", "x", []), None);
}

#[test]
fn an_oversold_location_offers_nothing_and_takes_nothing_from_the_others() {
    let oversold = row("north", -1, 1, 5);
    assert_eq!(oversold.available, 0);
    let region = RegionAvailability::over("s", "north", [oversold.share(), share(4, 1, 6)])
        .expect("two locations");
    assert_eq!(region.available, 3, "0 + 3, not -2 + 3");
    assert_eq!(region.quantities.on_hand, 3, "on hand shows the truth");
    let mut totals = RegionTotals::none();
    for (_, c) in region_changes(None, &oversold) {
        totals = totals.plus(&c);
    }
    let healed = row("north", 5, 1, 7);
    for (_, c) in region_changes(Some(&oversold), &healed) {
        totals = totals.plus(&c);
    }
    assert_eq!(totals.available, 4);
}

#[test]
fn incoming_sums_by_day_across_locations_and_changes() {
    let day = |s: &str| Date::parse("d", s).expect("date");
    let with = |incoming: Vec<(&str, i64)>| {
        let mut r = row("north", 0, 0, 1);
        r.flow.incoming = incoming
            .into_iter()
            .map(|(d, qty)| crate::quantity::Dated { date: day(d), qty })
            .collect();
        r
    };
    let before = with(vec![("2026-12-12", 5)]);
    let after = with(vec![("2026-12-12", 2), ("2026-12-20", 1)]);
    let mut totals = RegionTotals::none();
    for (_, c) in region_changes(None, &before) {
        totals = totals.plus(&c);
    }
    for (_, c) in region_changes(Some(&before), &after) {
        totals = totals.plus(&c);
    }
    assert_eq!(totals.flow.incoming, after.flow.incoming);
    let summed =
        RegionAvailability::over("s", "north", [after.share(), after.share()]).expect("rows");
    assert_eq!(summed.flow.incoming[0].qty, 4);
}
