//! The quantity rules of one key.

use super::*;
use crate::command::{Adjust, AdjustReason, OnHandChange};
use crate::ids::{PurchaseOrderId, TransferId};
use crate::policy::{Oversell, Settings};
use crate::quantity::{Date, PoLine, State, Target};

fn level(on_hand: i64, reserved: i64) -> StockLevel {
    StockLevel {
        on_hand,
        reserved,
        ..StockLevel::empty(
            Sku::parse("s").expect("sku"),
            LocationId::parse("l").expect("location"),
            Region::parse("r").expect("region"),
        )
    }
}

fn adjust(change: OnHandChange, expected: Option<u64>) -> Adjust {
    Adjust::new(
        StockKey::new(
            Sku::parse("s").expect("sku"),
            LocationId::parse("l").expect("location"),
        ),
        change,
        AdjustReason::Correction,
        None,
        expected,
    )
    .expect("valid")
}

fn id(s: &str) -> ReservationId {
    ReservationId::parse(s).expect("id")
}

fn with_policy(mut l: StockLevel, oversell: Oversell) -> StockLevel {
    l.extras.policy = Settings {
        oversell: Some(oversell),
        low_stock_threshold: None,
    };
    l
}

#[test]
fn adjust_refuses_going_below_reserved() {
    let err = level(10, 8).adjust(&adjust(OnHandChange::Delta(-3), None));
    assert!(matches!(err, Err(Refusal::InsufficientStock { .. })));
    let ok = level(10, 8).adjust(&adjust(OnHandChange::Delta(-2), None));
    assert_eq!(ok.map(|n| (n.level.on_hand, n.level.version)), Ok((8, 1)));
}

#[test]
fn adjust_checks_expected_version_and_on_hand() {
    let err = level(10, 0).adjust(&adjust(OnHandChange::SetOnHand(3), Some(4)));
    assert!(matches!(
        err,
        Err(Refusal::VersionConflict { current: 0, .. })
    ));
    let count = adjust(OnHandChange::SetOnHand(3), None)
        .expecting_on_hand(9)
        .expect("guard");
    assert_eq!(
        level(10, 0).adjust(&count).map(|_| ()),
        Err(Refusal::OnHandConflict {
            sku: Sku::parse("s").expect("sku"),
            location: LocationId::parse("l").expect("location"),
            expected: 9,
            current: 10,
        })
    );
    let recorded = count.recorded();
    assert!(
        level(10, 0).adjust(&recorded).is_ok(),
        "a fact ignores the guard"
    );
}

#[test]
fn a_recorded_sale_goes_below_zero_and_channels_see_zero() {
    let sale = adjust(OnHandChange::Delta(-3), Some(99)).recorded();
    let next = level(2, 1).adjust(&sale).expect("a fact is applied");
    assert_eq!(next.level.on_hand, -1);
    assert_eq!(next.level.available(), -2);
    assert_eq!(next.level.channel_available(), 0);
    assert_eq!(next.level.shortfall(), 2);
    assert!(next.level.invariant_holds());
}

#[test]
fn states_are_part_of_on_hand_and_moves_need_the_source() {
    let l = level(10, 2);
    let damaged = l
        .move_units(State::Available, Target::State(State::Damaged), 3)
        .expect("move");
    assert_eq!(
        (damaged.level.available(), damaged.level.extras.damaged),
        (5, 3)
    );
    let err = damaged
        .level
        .move_units(State::QualityHold, Target::State(State::Available), 1);
    assert!(matches!(err, Err(Refusal::StateShort { held: 0, .. })));
    let gone = damaged
        .level
        .move_units(State::Damaged, Target::Gone, 3)
        .expect("write-off");
    assert_eq!((gone.level.on_hand, gone.level.extras.damaged), (7, 0));
    assert_eq!(gone.level.available(), 5);
    assert!(
        gone.level
            .move_units(State::Available, Target::State(State::SafetyStock), 6)
            .is_err(),
        "available holds 5"
    );
}

#[test]
fn backorders_fill_in_reservation_order_as_stock_arrives() {
    let l = with_policy(level(2, 0), Oversell::Backorder { limit: 10 });
    let (a, b) = l
        .reserve(5, &id("a"), None)
        .expect("beyond stock, within the limit");
    assert_eq!(b, 3);
    let (b2, n) = a.level.reserve(4, &id("b"), None).expect("again");
    assert_eq!(n, 4);
    assert_eq!(b2.level.available(), -7);
    assert!(
        b2.level.reserve(4, &id("c"), None).is_err(),
        "beyond the limit"
    );
    let receipt = b2
        .level
        .adjust(&adjust(OnHandChange::Delta(5), None))
        .expect("receipt");
    assert_eq!(
        receipt
            .filled
            .iter()
            .map(|f| (f.reservation_id.as_str(), f.qty))
            .collect::<Vec<_>>(),
        vec![("a", 3), ("b", 2)],
        "the oldest first"
    );
    assert_eq!(receipt.level.backordered_for(&id("b")), 2);
    assert!(matches!(
        receipt.level.confirm(4, &id("b"), None),
        Err(Refusal::ReservationBackordered { .. })
    ));
    assert!(receipt.level.confirm(5, &id("a"), None).is_ok());
    let released = receipt.level.unreserve(4, &id("b"), None);
    assert_eq!(released.level.backordered(), 0);
    assert!(released.level.invariant_holds());
}

#[test]
fn purchase_order_lines_are_received_in_parts_and_closed() {
    let po = PoLine {
        purchase_order: PurchaseOrderId::parse("po-1").expect("id"),
        line: 1,
    };
    let day = Date::parse("d", "2026-12-12").expect("date");
    let expected = level(0, 0).expect(&po, day, 10).expect("expect");
    assert_eq!(expected.level.incoming_total(), 10);
    let receipt = adjust(OnHandChange::Delta(4), None);
    let receipt = Adjust {
        reason: AdjustReason::Receipt,
        ..receipt
    }
    .receiving(po.clone())
    .expect("receipt");
    let part = expected.level.adjust(&receipt).expect("partial");
    assert_eq!((part.level.on_hand, part.level.incoming_total()), (4, 6));
    let closed = part.level.close_incoming(&po).expect("close");
    assert_eq!(closed.level.incoming_total(), 0);
    assert!(matches!(
        closed.level.adjust(&receipt),
        Err(Refusal::IncomingNotFound { .. })
    ));
}

#[test]
fn transfers_move_on_hand_into_transit_and_back() {
    let t = TransferId::parse("t1").expect("id");
    let day = Date::parse("d", "2026-12-12").expect("date");
    let source = level(5, 0);
    assert!(source.ship_out(6).is_err());
    let out = source.ship_out(5).expect("ship");
    assert_eq!(out.level.on_hand, 0);
    let dest = level(0, 0).add_in_transit(&t, day, 5);
    assert_eq!(dest.level.in_transit(), 5);
    let got = dest.level.receive_transfer(&t, 3, 1);
    assert_eq!(
        (
            got.level.on_hand,
            got.level.extras.damaged,
            got.level.in_transit()
        ),
        (4, 1, 1)
    );
    let lost = got.level.lose_in_transit(&t, 1);
    assert_eq!(lost.level.in_transit(), 0);
    assert_eq!(lost.level.version, 3);
}

#[test]
fn extras_are_stored_only_when_set() {
    assert_eq!(Extras::default().to_stored().map_err(|_| ()), Ok(None));
    let e = Extras {
        damaged: 2,
        ..Extras::default()
    };
    let stored = e.to_stored().expect("encode").expect("something to store");
    assert_eq!(Extras::from_stored(Some(&stored)).expect("decode"), e);
    assert_eq!(Extras::from_stored(None).expect("none"), Extras::default());
}
