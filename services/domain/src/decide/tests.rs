//! Unit and property tests of the decisions: random command sequences never break an
//! invariant.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::command::{AdjustReason, OnHandChange, ReserveLine};
use crate::ids::{LocationId, Region, Sku, StockKey};

/// A tiny in-memory write side that applies decisions the way a store would.
#[derive(Default)]
struct Model {
    levels: BTreeMap<StockKey, StockLevel>,
    reservations: BTreeMap<ReservationId, Reservation>,
    events: Vec<StockEvent>,
    now: i64,
}

impl Model {
    fn level(&self, key: &StockKey) -> StockLevel {
        self.levels.get(key).cloned().unwrap_or_else(|| {
            StockLevel::empty(
                key.sku.clone(),
                key.location.clone(),
                Region::parse("north").unwrap(),
            )
        })
    }

    fn meta(&self) -> EventMeta {
        EventMeta {
            occurred_at_ms: self.now,
            ..EventMeta::default()
        }
    }

    fn write(&mut self, applied: Result<Applied, Refusal>) -> bool {
        let Ok(applied) = applied else { return false };
        assert_eq!(applied.levels.len(), applied.events.len());
        for (level, event) in applied.levels.iter().zip(&applied.events) {
            let before = self.level(&level.key());
            assert_eq!(level.version, before.version + 1, "one version per change");
            assert_eq!(event.version, level.version);
            assert_eq!(
                (event.on_hand, event.reserved),
                (level.on_hand, level.reserved)
            );
            self.levels.insert(level.key(), level.clone());
        }
        if let Some(r) = applied.reservation {
            self.reservations.insert(r.id.clone(), r);
        }
        self.events.extend(applied.events);
        true
    }

    fn apply(&mut self, op: &Op) -> bool {
        self.apply_as(op, &LocationGrant::Any)
    }

    /// Applies `op` for a caller holding `grant`.
    fn apply_as(&mut self, op: &Op, grant: &LocationGrant) -> bool {
        let meta = self.meta();
        match op {
            Op::Adjust { key, change } => {
                let key = key_of(*key);
                let Ok(cmd) =
                    Adjust::new(key.clone(), *change, AdjustReason::Correction, None, None)
                else {
                    return false;
                };
                let result = adjust(&self.level(&key), &cmd, grant, &meta);
                self.write(result)
            }
            Op::Reserve { id, lines, ttl } => {
                let lines: Vec<ReserveLine> = lines
                    .iter()
                    .map(|(k, qty)| {
                        let key = key_of(*k);
                        ReserveLine {
                            sku: key.sku,
                            location: key.location,
                            qty: *qty,
                        }
                    })
                    .collect();
                let id = ReservationId::parse(format!("r{id}")).unwrap();
                let Ok(cmd) = Reserve::new(id.clone(), lines, *ttl, None) else {
                    return false;
                };
                let levels: Vec<_> = cmd.lines.iter().map(|l| self.level(&l.key())).collect();
                let result = reserve(&levels, self.reservations.get(&id), &cmd, grant, &meta);
                self.write(result)
            }
            Op::Settle { id, how } => {
                let id = ReservationId::parse(format!("r{id}")).unwrap();
                let Some(r) = self.reservations.get(&id).cloned() else {
                    return false;
                };
                let levels: Vec<_> = r.lines.iter().map(|l| self.level(&l.key())).collect();
                let result = settle(*how, &r, &levels, grant, &meta);
                self.write(result)
            }
            Op::Tick(ms) => {
                self.now += ms;
                false
            }
        }
    }

    fn check_invariants(&self) {
        let mut held: BTreeMap<StockKey, i64> = BTreeMap::new();
        for r in self.reservations.values() {
            if r.status == ReservationStatus::Active {
                for line in &r.lines {
                    *held.entry(line.key()).or_default() += line.qty;
                }
            }
        }
        for (key, level) in &self.levels {
            assert!(level.invariant_holds(), "invariant broken: {level:?}");
            assert_eq!(
                level.reserved,
                held.get(key).copied().unwrap_or(0),
                "reserved equals what active reservations hold at {key:?}"
            );
            let events = self
                .events
                .iter()
                .filter(|e| e.sku == key.sku && e.location == key.location)
                .count();
            assert_eq!(level.version, events as u64, "one event per applied change");
        }
    }
}

fn key_of(k: u8) -> StockKey {
    StockKey::new(
        Sku::parse(format!("sku{}", k % 3)).unwrap(),
        LocationId::parse(format!("loc{}", k / 3)).unwrap(),
    )
}

#[derive(Debug, Clone)]
enum Op {
    Adjust {
        key: u8,
        change: OnHandChange,
    },
    Reserve {
        id: u8,
        lines: Vec<(u8, i64)>,
        ttl: u64,
    },
    Settle {
        id: u8,
        how: Settlement,
    },
    Tick(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..6;
    prop_oneof![
        (key.clone(), -20i64..40).prop_map(|(key, d)| Op::Adjust {
            key,
            change: OnHandChange::Delta(d)
        }),
        (key.clone(), 0i64..50).prop_map(|(key, n)| Op::Adjust {
            key,
            change: OnHandChange::SetOnHand(n)
        }),
        (
            0u8..12,
            prop::collection::vec((key, 1i64..15), 1..4),
            1u64..5
        )
            .prop_map(|(id, lines, ttl)| Op::Reserve { id, lines, ttl }),
        (
            0u8..12,
            prop_oneof![
                Just(Settlement::Confirm),
                Just(Settlement::Release),
                Just(Settlement::Expire)
            ]
        )
            .prop_map(|(id, how)| Op::Settle { id, how }),
        (0i64..3000).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_command_sequences_keep_every_invariant(
        ops in prop::collection::vec((op(), prop::option::of(0u8..2)), 1..80)
    ) {
        let mut model = Model::default();
        for (op, store) in &ops {
            let before_levels = model.levels.clone();
            let before_events = model.events.len();
            // `Some(n)`: a store's token, limited to location `loc<n>`.
            let grant = match store {
                Some(n) => LocationGrant::only([LocationId::parse(format!("loc{n}")).unwrap()]),
                None => LocationGrant::Any,
            };
            let applied = model.apply_as(op, &grant);
            if !applied {
                prop_assert_eq!(&model.levels, &before_levels, "a rejected command changes nothing");
                prop_assert_eq!(model.events.len(), before_events, "a rejected command yields no event");
            }
            for event in &model.events[before_events..] {
                prop_assert!(grant.permits(&event.location), "a change outside the grant: {:?}", event);
            }
            model.check_invariants();
        }
    }
}

#[test]
fn multi_line_reserve_is_all_or_nothing_and_names_short_lines() {
    let mut model = Model::default();
    assert!(model.apply(&Op::Adjust {
        key: 0,
        change: OnHandChange::Delta(5)
    }));
    assert!(model.apply(&Op::Adjust {
        key: 1,
        change: OnHandChange::Delta(1)
    }));
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
    assert!(model.apply(&Op::Adjust {
        key: 0,
        change: OnHandChange::Delta(5)
    }));
    assert!(model.apply(&Op::Reserve {
        id: 1,
        lines: vec![(0, 2)],
        ttl: 10
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
        assert!(model.apply(&Op::Adjust {
            key,
            change: OnHandChange::Delta(5)
        }));
    }
    // Keys 0 and 3 are at loc0 and loc1: a reservation over both, made centrally.
    assert!(model.apply(&Op::Reserve {
        id: 1,
        lines: vec![(0, 1), (3, 1)],
        ttl: 60
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
    forbidden(adjust(&model.level(&key_of(3)), &adj, &loc0, &meta).unwrap_err());
    forbidden(authorize(&Command::Adjust(adj), &loc0).unwrap_err());
    // The per-line steps of a key-by-key backend refuse too.
    let line = &r.lines[1];
    forbidden(reserve_line(&model.level(&key_of(3)), &r.id, 1, &loc0, None, &meta).unwrap_err());
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
