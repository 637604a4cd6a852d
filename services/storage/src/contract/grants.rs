//! Location grants: a store's token changes stock only at its own locations, checked
//! where each command is decided.

use std::sync::Arc;

use stockflow_domain::{
    Command, LocationGrant, OnHandChange, Refusal, ReservationId, ReservationStatus,
};

use super::*;
use crate::ports::{CommandRequest, Outbox, WriteStore};

/// A store's token (a grant of some locations) changes stock only there, checked where the
/// command is decided: an adjustment or reservation naming another location, and the
/// confirm or release of a reservation held elsewhere (made by another caller), are refused
/// with `location_forbidden` and change nothing; an unknown reservation is still not found;
/// the refusal is not kept under the key, so a caller whose grant was widened runs it.
pub(crate) async fn write_store_location_grant_contract<S: WriteStore + Outbox>(store: Arc<S>) {
    store
        .put_location(location("g1", "north"))
        .await
        .unwrap()
        .unwrap();
    store
        .put_location(location("g2", "south"))
        .await
        .unwrap()
        .unwrap();
    for (s, l) in [("gs", "g1"), ("gs", "g2"), ("gt", "g2")] {
        store
            .exec(plain(adjust(s, l, OnHandChange::Delta(10), None)))
            .await
            .unwrap();
    }
    let store_1 = LocationGrant::only([loc("g1")]);
    let as_grant = |command: Command, k: &str, grant: &LocationGrant| CommandRequest {
        grant: grant.clone(),
        ..keyed(command, k, k)
    };
    // Another caller (a central one) reserves at g2, over both stores, and at g1.
    for (id, lines) in [
        ("central-g2", vec![("gs", "g2", 1)]),
        ("central-both", vec![("gs", "g1", 2), ("gt", "g2", 2)]),
        ("central-g1", vec![("gs", "g1", 1)]),
        ("central-done", vec![("gt", "g2", 1)]),
    ] {
        store
            .exec(keyed(reserve(id, &lines, 600), id, id))
            .await
            .unwrap();
    }
    store
        .exec(plain(Command::Release {
            id: ReservationId::parse("central-done").unwrap(),
        }))
        .await
        .unwrap();
    let levels = store.all_stock_levels().await.unwrap();
    let events = stock_events(&*store).await.len();
    let id = |s: &str| ReservationId::parse(s).unwrap();
    let forbidden_at = |l: &str| Refusal::LocationForbidden { location: loc(l) };
    let refused: Vec<(&str, Command, Refusal)> = vec![
        (
            "adjust-g2",
            adjust("gs", "g2", OnHandChange::Delta(-5), None),
            forbidden_at("g2"),
        ),
        // Whether g9 exists is none of this caller's business.
        (
            "adjust-g9",
            adjust("gs", "g9", OnHandChange::Delta(1), None),
            forbidden_at("g9"),
        ),
        (
            "reserve-g2",
            reserve("store-g2", &[("gs", "g2", 1)], 600),
            forbidden_at("g2"),
        ),
        (
            "reserve-both",
            reserve("store-both", &[("gs", "g1", 1), ("gt", "g2", 1)], 600),
            forbidden_at("g2"),
        ),
        // Forbidden before `reservation_exists` and `insufficient_stock`.
        (
            "reserve-taken",
            reserve("central-g2", &[("gs", "g2", 500)], 600),
            forbidden_at("g2"),
        ),
        (
            "confirm-g2",
            Command::Confirm {
                id: id("central-g2"),
            },
            forbidden_at("g2"),
        ),
        (
            "release-g2",
            Command::Release {
                id: id("central-g2"),
            },
            forbidden_at("g2"),
        ),
        // Allowed at one of its lines only: the whole reservation is refused.
        (
            "confirm-both",
            Command::Confirm {
                id: id("central-both"),
            },
            forbidden_at("g2"),
        ),
        (
            "release-both",
            Command::Release {
                id: id("central-both"),
            },
            forbidden_at("g2"),
        ),
        // Forbidden before `reservation_not_active`: its status is not told either.
        (
            "release-done",
            Command::Release {
                id: id("central-done"),
            },
            forbidden_at("g2"),
        ),
    ];
    for (k, command, refusal) in &refused {
        let err = store
            .exec(as_grant(command.clone(), k, &store_1))
            .await
            .unwrap_err();
        assert_eq!(&err, refusal, "{k}");
    }
    assert_eq!(
        store.all_stock_levels().await.unwrap(),
        levels,
        "a refused command changes no level, no version"
    );
    assert_eq!(
        stock_events(&*store).await.len(),
        events,
        "a refused command yields no event"
    );
    for (r, status) in [
        ("central-g2", ReservationStatus::Active),
        ("central-both", ReservationStatus::Active),
        ("central-done", ReservationStatus::Released),
    ] {
        let found = store.reservation(&id(r)).await.unwrap().expect(r);
        assert_eq!(found.status, status, "{r}");
    }
    for r in ["store-g2", "store-both"] {
        assert!(store.reservation(&id(r)).await.unwrap().is_none(), "{r}");
    }

    // An unknown reservation is not found, for this caller as for any other.
    for command in [
        Command::Confirm { id: id("ghost") },
        Command::Release { id: id("ghost") },
    ] {
        let err = store
            .exec(as_grant(command, "ghost", &store_1))
            .await
            .unwrap_err();
        assert_eq!(err.code(), "reservation_not_found");
    }

    // At its own locations the store acts as anyone: its own reservation, and another
    // caller's held at g1.
    store
        .exec(as_grant(
            reserve("store-g1", &[("gs", "g1", 3)], 600),
            "store-g1",
            &store_1,
        ))
        .await
        .unwrap();
    let out = store
        .exec(as_grant(
            Command::Confirm {
                id: id("central-g1"),
            },
            "confirm-g1",
            &store_1,
        ))
        .await
        .unwrap();
    assert_eq!(
        reservation_of(out.result).status,
        ReservationStatus::Confirmed
    );
    let out = store
        .exec(as_grant(
            adjust("gs", "g1", OnHandChange::Delta(1), None),
            "adjust-g1",
            &store_1,
        ))
        .await
        .unwrap();
    assert_eq!(out.events, 1);

    // The refusal was not kept: the same keys from the caller once its grant covers both
    // stores run (and apply once).
    let both = LocationGrant::only([loc("g1"), loc("g2")]);
    for k in ["release-both", "adjust-g2"] {
        let (_, command, _) = refused.iter().find(|(r, ..)| *r == k).expect(k);
        let first = store
            .exec(as_grant(command.clone(), k, &both))
            .await
            .unwrap();
        assert!(!first.replayed && first.events > 0, "{k} ran");
        let again = store
            .exec(as_grant(command.clone(), k, &both))
            .await
            .unwrap();
        assert!(again.replayed, "{k} is kept once it ran");
    }
    assert_eq!(
        store
            .reservation(&id("central-both"))
            .await
            .unwrap()
            .expect("central-both")
            .status,
        ReservationStatus::Released
    );
    assert_holds_match(
        &*store,
        &[
            "central-g2",
            "central-both",
            "central-g1",
            "central-done",
            "store-g1",
        ],
    )
    .await;
}
