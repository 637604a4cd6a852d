//! Property tests of the decisions: random sequences of adjust (checked and recorded),
//! move, reserve, confirm, release, expire, incoming lines and receipts, transfers
//! (create, ship, receive, cancel), policy changes and channel allocations (reserving for
//! a channel or none), by central callers and stores,
//! never break an invariant (see [`super::model`] for what is checked after every change
//! and every command).

use proptest::prelude::*;

use super::Settlement;
use super::model::{Model, Op, loc_of};
use crate::command::OnHandChange;
use crate::grant::LocationGrant;
use crate::policy::Oversell;
use crate::quantity::{State, Target};

/// Cases per property; each case is a sequence of up to [`MAX_OPS`] commands.
pub(super) const CASES: u32 = 1024;
/// Commands per case at most.
const MAX_OPS: usize = 80;

fn state() -> impl Strategy<Value = State> {
    prop_oneof![
        Just(State::Available),
        Just(State::Damaged),
        Just(State::QualityHold),
        Just(State::SafetyStock),
    ]
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![state().prop_map(Target::State), Just(Target::Gone)]
}

fn oversell() -> impl Strategy<Value = Oversell> {
    prop_oneof![
        Just(Oversell::Deny),
        (1i64..20).prop_map(|limit| Oversell::Backorder { limit }),
        Just(Oversell::TrackOnly),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0u8..6;
    prop_oneof![
        4 => (key.clone(), -20i64..40, any::<bool>()).prop_map(|(key, d, record)| Op::Adjust {
            key,
            change: OnHandChange::Delta(d),
            record,
        }),
        2 => (key.clone(), 0i64..50).prop_map(|(key, n)| Op::Adjust {
            key,
            change: OnHandChange::SetOnHand(n),
            record: false,
        }),
        2 => (key.clone(), state(), target(), 1i64..8)
            .prop_map(|(key, from, to, qty)| Op::Move { key, from, to, qty }),
        4 => (0u8..12, prop::collection::vec((key.clone(), 1i64..15), 1..4), 1u64..5, prop::option::of(0u8..2))
            .prop_map(|(id, lines, ttl, channel)| Op::Reserve { id, lines, ttl, channel }),
        1 => (key.clone(), 0u8..2, 0i64..10, prop::option::of(0i64..15))
            .prop_map(|(key, channel, fence, cap)| Op::Allocate { key, channel, fence, cap }),
        4 => (
            0u8..12,
            prop_oneof![
                Just(Settlement::Confirm),
                Just(Settlement::Release),
                Just(Settlement::Expire)
            ]
        )
            .prop_map(|(id, how)| Op::Settle { id, how }),
        1 => (0u8..3, prop::option::of(0u8..2), oversell())
            .prop_map(|(sku, location, oversell)| Op::Policy { sku, location, oversell }),
        1 => (key.clone(), 0u8..3, 1i64..20).prop_map(|(key, line, qty)| Op::Expect { key, line, qty }),
        2 => (key.clone(), 0u8..3, 1i64..20).prop_map(|(key, line, qty)| Op::Receipt { key, line, qty }),
        2 => (key.clone(), 0u8..3).prop_map(|(key, line)| Op::Close { key, line }),
        2 => (0u8..4, prop::collection::vec((0u8..3, 1i64..6), 1..3), any::<bool>())
            .prop_map(|(id, lines, reverse)| Op::Transfer { id, lines, reverse }),
        4 => (0u8..4).prop_map(|id| Op::Ship { id }),
        5 => (
            0u8..4,
            prop::collection::vec((0u8..3, 0i64..6, 0i64..2), 0..3),
            any::<bool>(),
            prop::bool::weighted(0.1),
        )
            .prop_map(|(id, take, close, over)| Op::Receive { id, take, close, over }),
        1 => (0u8..4).prop_map(|id| Op::Cancel { id }),
        2 => (0i64..3000).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_command_sequences_keep_every_invariant(
        ops in prop::collection::vec((op(), prop::option::of(0u8..2)), 1..MAX_OPS)
    ) {
        let mut model = Model::default();
        for (op, store) in &ops {
            let before_levels = model.levels.clone();
            let before_events = model.events.len();
            // `Some(n)`: a store's token, limited to location `loc<n>`.
            let grant = match store {
                Some(n) => LocationGrant::only([loc_of(*n)]),
                None => LocationGrant::Any,
            };
            let applied = model.apply_as(op, &grant);
            if !applied {
                prop_assert_eq!(&model.levels, &before_levels, "a rejected command changes nothing");
                prop_assert_eq!(model.events.len(), before_events, "a rejected command yields no event");
            }
            let recorded = matches!(op, crate::decide::model::Op::Adjust { record: true, .. });
            for event in &model.events[before_events..] {
                let store_key = LocationGrant::only([event.location.clone()]);
                let allowed = if recorded { &store_key } else { &grant };
                // A shipment changes its destination too: allowed by the grant at the source.
                let shipped = event.kind == crate::EventKind::TransferInTransit;
                prop_assert!(shipped || allowed.permits(&event.location), "a change outside the grant: {:?}", event);
                // Rebuilding the read models from the write side writes the row the key's
                // latest event left.
                let key = crate::StockKey { sku: event.sku.clone(), location: event.location.clone() };
                if let Some(level) = model.levels.get(&key).filter(|l| l.version == event.version) {
                    prop_assert_eq!(
                        crate::read_model::InventoryRow::of_level(level, event.occurred_at_ms),
                        crate::read_model::InventoryRow::of(event)
                    );
                }
            }
            model.check_invariants();
        }
    }
}

/// The property above would prove little if most commands were refused: over random
/// sequences, every kind of command is applied many times, oversold facts and backorders
/// happen, and transfers reach every status.
#[test]
fn random_sequences_apply_every_kind_of_command() {
    use std::collections::BTreeMap;

    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(op(), 1..MAX_OPS);
    let mut applied: BTreeMap<String, usize> = BTreeMap::new();
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for _ in 0..500 {
        let ops = strategy
            .new_tree(&mut runner)
            .expect("a sequence")
            .current();
        let mut model = Model::default();
        for op in &ops {
            let name = format!("{op:?}");
            let name = name
                .split([' ', '('])
                .next()
                .unwrap_or_default()
                .to_string();
            if model.apply(op) {
                *applied.entry(name).or_default() += 1;
            }
        }
        for e in &model.events {
            *kinds.entry(e.kind.as_str()).or_default() += 1;
        }
        model.check_invariants();
    }
    eprintln!("applied over 500 sequences: {applied:?}\nevents: {kinds:?}");
    for name in [
        "Adjust", "Move", "Reserve", "Settle", "Policy", "Allocate", "Expect", "Receipt", "Close",
        "Transfer", "Ship", "Receive", "Cancel",
    ] {
        let n = applied.get(name).copied().unwrap_or(0);
        assert!(n >= 20, "{name} applied only {n} times: {applied:?}");
    }
    for kind in crate::EventKind::ALL {
        let n = kinds.get(kind.as_str()).copied().unwrap_or(0);
        let needed = if kind == crate::EventKind::TransferReverted {
            0
        } else {
            5
        };
        assert!(n >= needed, "{} seen {n} times: {kinds:?}", kind.as_str());
    }
}
