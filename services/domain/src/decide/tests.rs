//! Unit tests of the decisions; the properties are in [`super::props`].

use super::model::{Model, Op, key_of};
use super::*;
use crate::command::{Adjust, AdjustReason, OnHandChange, Reserve, ReserveLine};
use crate::event::EventKind;
use crate::ids::ReservationId;
use crate::reservation::{Reservation, ReservationStatus};

fn receipt(key: u8, n: i64) -> Op {
    Op::Adjust {
        key,
        change: OnHandChange::Delta(n),
        record: false,
    }
}

#[test]
fn multi_line_reserve_is_all_or_nothing_and_names_short_lines() {
    let mut model = Model::default();
    assert!(model.apply(&receipt(0, 5)));
    assert!(model.apply(&receipt(1, 1)));
    let levels = vec![model.level(&key_of(0)), model.level(&key_of(1))];
    let cmd = Reserve::new(
        ReservationId::parse("r").unwrap(),
        vec![
            ReserveLine {
                sku: key_of(0).sku,
                location: key_of(0).location,
                qty: 2,
            },
            ReserveLine {
                sku: key_of(1).sku,
                location: key_of(1).location,
                qty: 3,
            },
        ],
        60,
        None,
    )
    .unwrap();
    let err = reserve(&levels, None, &cmd, &LocationGrant::Any, &model.meta()).unwrap_err();
    let Refusal::InsufficientStock { lines } = err else {
        panic!("{err:?}")
    };
    assert_eq!(lines.len(), 1);
    assert_eq!((lines[0].requested, lines[0].available), (3, 1));
}

#[test]
fn confirm_after_ttl_is_refused_and_expire_before_ttl_changes_nothing() {
    let mut model = Model::default();
    assert!(model.apply(&receipt(0, 5)));
    assert!(model.apply(&Op::Reserve {
        id: 1,
        lines: vec![(0, 2)],
        ttl: 10,
        channel: None,
    }));
    let r = model.reservations.values().next().unwrap().clone();
    let levels = vec![model.level(&key_of(0))];
    let any = LocationGrant::Any;
    let early = settle(Settlement::Expire, &r, &levels, &any, &model.meta()).unwrap();
    assert!(early.levels.is_empty() && early.events.is_empty());
    model.now += 10_000;
    let err = settle(Settlement::Confirm, &r, &levels, &any, &model.meta()).unwrap_err();
    assert_eq!(err.code(), "reservation_not_active");
    let expired = settle(Settlement::Expire, &r, &levels, &any, &model.meta()).unwrap();
    assert_eq!(expired.events[0].kind, EventKind::ReservationExpired);
    assert_eq!(expired.levels[0].reserved, 0);
}

/// A store's token acts only at its own locations, and that refusal comes before every
/// other answer: the caller learns nothing about the stock or the reservation it may not
/// touch (not its quantities, not whether it is still active).
#[test]
fn a_grant_refuses_first_and_changes_nothing() {
    let mut model = Model::default();
    for key in [0, 3] {
        assert!(model.apply(&receipt(key, 5)));
    }
    // Keys 0 and 3 are at loc0 and loc1: a reservation over both, made centrally.
    assert!(model.apply(&Op::Reserve {
        id: 1,
        lines: vec![(0, 1), (3, 1)],
        ttl: 60,
        channel: None,
    }));
    let loc0 = LocationGrant::only([key_of(0).location]);
    let forbidden = |e: Refusal| {
        assert_eq!(
            e,
            Refusal::LocationForbidden {
                location: key_of(3).location
            }
        );
        assert!(!e.is_recorded(), "nothing ran: not kept under the key");
    };
    let meta = model.meta();
    let r = model.reservations.values().next().unwrap().clone();
    let levels: Vec<_> = r.lines.iter().map(|l| model.level(&l.key())).collect();
    for how in [Settlement::Confirm, Settlement::Release] {
        forbidden(settle(how, &r, &levels, &loc0, &meta).unwrap_err());
    }
    // Even once it is no longer active, or its TTL has passed.
    let done = Reservation {
        status: ReservationStatus::Confirmed,
        ..r.clone()
    };
    forbidden(settle(Settlement::Release, &done, &levels, &loc0, &meta).unwrap_err());
    forbidden(settlement(Settlement::Confirm, &r, &loc0, r.expires_at_ms + 1).unwrap_err());
    // A reserve naming a location outside the grant: before `reservation_exists` and
    // before the short line it would also be.
    let cmd = Reserve::new(
        r.id.clone(),
        vec![
            ReserveLine {
                sku: key_of(0).sku,
                location: key_of(0).location,
                qty: 1,
            },
            ReserveLine {
                sku: key_of(3).sku,
                location: key_of(3).location,
                qty: 500,
            },
        ],
        60,
        None,
    )
    .unwrap();
    let lv = vec![model.level(&key_of(0)), model.level(&key_of(3))];
    forbidden(reserve(&lv, Some(&r), &cmd, &loc0, &meta).unwrap_err());
    forbidden(authorize(&Command::Reserve(cmd.clone()), &loc0).unwrap_err());
    let adj = Adjust::new(
        key_of(3),
        OnHandChange::Delta(-100),
        AdjustReason::Damage,
        None,
        Some(42),
    )
    .unwrap();
    forbidden(adjust(&model.level(&key_of(3)), &adj, &loc0, &[], &meta).unwrap_err());
    forbidden(authorize(&Command::Adjust(adj), &loc0).unwrap_err());
    // The per-line steps of a key-by-key backend refuse too.
    let line = &r.lines[1];
    forbidden(
        reserve_line(
            &model.level(&key_of(3)),
            Hold {
                id: &r.id,
                qty: 1,
                channel: None,
            },
            &loc0,
            None,
            &meta,
        )
        .unwrap_err(),
    );
    forbidden(
        settle_line(
            Settlement::Confirm,
            &r,
            line,
            &model.level(&key_of(3)),
            &loc0,
            &meta,
        )
        .unwrap_err(),
    );
    // A settlement names no location: only its loaded reservation can be checked.
    assert_eq!(
        authorize(&Command::Confirm { id: r.id.clone() }, &loc0),
        Ok(())
    );
    // At its own location the store acts as anyone would.
    let both = LocationGrant::only([key_of(0).location, key_of(3).location]);
    let confirmed = settle(Settlement::Confirm, &r, &levels, &both, &meta).unwrap();
    assert_eq!(confirmed.events.len(), 2);
}
