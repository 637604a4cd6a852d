//! The transfer saga's rules, state by state.

use super::*;
use crate::ids::{LocationId, Sku, TransferId};
use crate::quantity::Date;
use crate::transfer::TransferLine;

fn transfer() -> Transfer {
    Transfer {
        id: TransferId::parse("t-1").expect("id"),
        from: LocationId::parse("a").expect("id"),
        to: LocationId::parse("b").expect("id"),
        lines: vec![TransferLine {
            sku: Sku::parse("s").expect("sku"),
            qty: 3,
            received: 0,
            damaged: 0,
            missing: 0,
        }],
        expected_arrival: Date::parse("expected_arrival", "2026-12-24").expect("date"),
        status: TransferStatus::Created,
        reference: None,
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
        receipts: 0,
    }
}

#[test]
fn states_keep_their_stored_spelling() {
    let all = [
        TransferState::At(TransferStatus::Created),
        TransferState::At(TransferStatus::InTransit),
        TransferState::At(TransferStatus::Received),
        TransferState::At(TransferStatus::Cancelled),
        TransferState::Shipping,
        TransferState::Unshipping,
        TransferState::Delivering,
        TransferState::Receiving,
    ];
    for state in all {
        assert_eq!(TransferState::parse(&state.to_string()), Some(state));
    }
    assert_eq!(TransferState::parse("bogus"), None);
}

#[test]
fn every_move_raises_seq_and_an_attempt_keeps_its_name_to_the_end() {
    let created = TransferHeader::created(transfer(), "k:0");
    let shipping = created.begin_shipping("k:2", 2_000);
    assert_eq!((shipping.seq, shipping.attempt), (1, 1));
    let delivering = shipping.delivering(2_100);
    assert_eq!((delivering.seq, delivering.attempt), (2, 1));
    assert_eq!(delivering.shown().status, TransferStatus::InTransit);
    let delivered = delivering.delivered(2_200);
    assert_eq!(delivered.transfer.status, TransferStatus::InTransit);
    assert_eq!(delivered.seq, 3);
    let t = transfer();
    assert_eq!(step_guard(&t, 1, StepKind::Out), "t:t-1:1:out");
    assert_eq!(step_guard(&t, 4, StepKind::Receipt(2)), "t:t-1:4:r2");
}

#[test]
fn a_shipping_attempt_is_abandoned_only_once_idle_for_the_window() {
    let window = RecoveryWindow { ms: 1_000 };
    let shipping = TransferHeader::created(transfer(), "k:0").begin_shipping("k:1", 5_000);
    let any = LocationGrant::Any;
    assert_eq!(
        on_ship(&shipping, "k:1", &any, 9_000, window),
        Ok(OnShip::Resume)
    );
    assert_eq!(
        on_ship(&shipping, "k:2", &any, 5_999, window),
        Ok(OnShip::Busy)
    );
    assert_eq!(
        on_ship(&shipping, "k:2", &any, 6_000, window),
        Ok(OnShip::Abandon {
            seen_updated_at_ms: 5_000
        })
    );
    assert_eq!(
        on_recover(&shipping, 5_500, window),
        OnRecover::LookAgain(6_000)
    );
    assert_eq!(
        on_cancel(&shipping, "k:3", &any),
        Ok(OnCancel::Busy),
        "a shipment that may still fail is not cancelled from under it"
    );
}

#[test]
fn a_lost_fence_gives_back_unless_the_same_attempt_got_past_the_point_of_no_return() {
    let shipping = TransferHeader::created(transfer(), "k:0").begin_shipping("k:1", 5_000);
    let attempt = shipping.attempt;
    assert_eq!(
        after_lost_fence(&shipping.delivering(5_100), attempt),
        AfterLostFence::Made
    );
    assert_eq!(
        after_lost_fence(&shipping.unshipping(5_100), attempt),
        AfterLostFence::HelpRollBack
    );
    let received = shipping.delivering(5_100).delivered(5_150).begin_receiving(
        Vec::new(),
        transfer(),
        "k:9",
        5_200,
    );
    assert_eq!(
        after_lost_fence(&received, attempt),
        AfterLostFence::Made,
        "a receipt since does not make the shipment look like someone else's"
    );
    assert_eq!(received.receipt.as_ref().map(|r| r.attempt), Some(4));
    let any = LocationGrant::Any;
    let after = received.received(5_300).expect("a receipt under way");
    assert!(after.done_by("k:0") && after.done_by("k:1") && after.done_by("k:9"));
    assert_eq!(
        on_ship(&after, "k:1", &any, 5_400, RecoveryWindow { ms: 1_000 }),
        Ok(OnShip::AnswerAgain),
        "the shipment's retry answers again after a receipt"
    );
    assert_eq!(
        on_receive(&after, "k:9", &any),
        Ok(OnReceive::AnswerAgain),
        "a receipt's retry never applies twice"
    );
    let again = shipping.unshipping(5_100).unshipped(5_200);
    assert_eq!(after_lost_fence(&again, attempt), AfterLostFence::GiveBack);
    let other = again.begin_shipping("k:2", 5_300);
    assert_eq!(after_lost_fence(&other, attempt), AfterLostFence::GiveBack);
}

#[test]
fn receipts_and_cancels_see_the_status_clients_see() {
    let any = LocationGrant::Any;
    let created = TransferHeader::created(transfer(), "k:0");
    let refused = on_receive(&created.begin_shipping("k:1", 2), "k:2", &any);
    assert!(matches!(
        refused,
        Err(Refusal::TransferStatusConflict {
            status: TransferStatus::Created,
            ..
        })
    ));
    let delivering = created.begin_shipping("k:1", 2).delivering(3);
    assert_eq!(
        on_receive(&delivering, "k:2", &any),
        Ok(OnReceive::FinishFirst)
    );
    assert!(matches!(
        on_cancel(&delivering, "k:3", &any),
        Err(Refusal::TransferStatusConflict {
            status: TransferStatus::InTransit,
            ..
        })
    ));
}
