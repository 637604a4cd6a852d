//! The trace of a command: joining the write side and the read models, and its text.

use super::*;

fn movement(version: u64, kind: &str, projected: bool) -> Value {
    let mut m = json!({
        "version": version, "kind": kind, "on_hand": 10, "reserved": 2,
        "reservation_id": "r-1", "idempotency_key": "k-1",
        "actor": {"subject": "checkout", "client_id": null},
        "occurred_at": "2026-12-03T11:00:00.100Z",
    });
    if projected {
        m["projection"] = json!({
            "partition": 3, "offset": 41,
            "projected_at": "2026-12-03T11:00:00.117Z", "projected_by": "projector-0-7-1",
        });
    }
    m
}

fn reservation(status: &str) -> Value {
    json!({
        "reservation_id": "r-1", "status": status, "reference": "order-9",
        "created_at": "2026-12-03T11:00:00.100Z", "updated_at": "2026-12-03T11:00:01Z",
        "expires_at": "2026-12-03T11:15:00Z",
        "lines": [{"sku": "SKU-1", "location": "store-1", "qty": 2},
                  {"sku": "SKU-1", "location": "store-1", "qty": 2}],
    })
}

#[test]
fn a_projected_reservation_shows_its_record_replica_and_lag() {
    let keys = [KeyTrace {
        sku: "SKU-1".into(),
        location: "store-1".into(),
        qty: Some(2),
        movements: vec![movement(7, "stock_reserved", true)],
    }];
    let text = render(Some(&reservation("active")), &keys);
    assert!(
        text.contains("reservation r-1: active (reference order-9)"),
        "{text}"
    );
    assert!(
        text.contains("v7 stock_reserved  on hand 10, reserved 2"),
        "{text}"
    );
    assert!(text.contains("by checkout, Idempotency-Key k-1"), "{text}");
    assert!(text.contains("published  partition 3, offset 41"), "{text}");
    assert!(text.contains("(+17 ms)  by projector-0-7-1"), "{text}");
    assert!(!text.contains("not in the read models"), "{text}");
}

#[test]
fn a_settled_reservation_the_read_models_lag_behind_is_named() {
    let keys = [KeyTrace {
        sku: "SKU-1".into(),
        location: "store-1".into(),
        qty: Some(2),
        movements: vec![movement(7, "stock_reserved", true)],
    }];
    let text = render(Some(&reservation("confirmed")), &keys);
    assert!(
        text.contains(
            "reservation_confirmed: committed on the write side, not in the read models yet"
        ),
        "{text}"
    );
}

#[test]
fn a_movement_without_provenance_says_so() {
    let keys = [KeyTrace {
        sku: "SKU-1".into(),
        location: "store-1".into(),
        qty: None,
        movements: vec![movement(3, "stock_adjusted", false)],
    }];
    let text = render(None, &keys);
    assert!(text.contains("v3 stock_adjusted"), "{text}");
    assert!(text.contains("no record of where from"), "{text}");
}

#[test]
fn repeated_lines_of_one_key_are_traced_once_with_their_sum() {
    assert_eq!(
        lines(&reservation("active")),
        vec![("SKU-1".to_string(), "store-1".to_string(), 4)]
    );
}
