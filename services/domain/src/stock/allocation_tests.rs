//! Allocations at one key: examples of fences and caps, and a property test that random
//! reservations, settlements and counts by random channels never overdraw a fence or a
//! cap, and that the key's per-channel holds always equal the channels' active lines.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::ids::{ChannelId, ReservationId};
use crate::policy::{Oversell, Settings};

fn level(on_hand: i64) -> StockLevel {
    StockLevel {
        on_hand,
        ..StockLevel::empty(
            Sku::parse("s").expect("sku"),
            LocationId::parse("l").expect("location"),
            Region::parse("r").expect("region"),
        )
    }
}

fn ch(name: &str) -> ChannelId {
    ChannelId::parse(name).expect("channel")
}

fn id(n: usize) -> ReservationId {
    ReservationId::parse(format!("r{n}")).expect("id")
}

fn allocated(mut l: StockLevel, channel: &str, fence: i64, cap: Option<Cap>) -> StockLevel {
    let a = Allocation::new(fence, cap).expect("valid");
    l.extras.allocations.insert(ch(channel), a);
    l
}

#[test]
fn a_fence_keeps_units_from_other_channels_and_reservations_without_one() {
    let l = allocated(level(10), "store", 4, None);
    let web = ch("web");
    assert_eq!(l.available_to(Some(&web)), 6);
    assert_eq!(l.available_to(None), 6);
    assert_eq!(l.available_to(Some(&ch("store"))), 10);
    assert!(l.reserve(7, &id(1), Some(&web)).is_err());
    assert!(l.reserve(7, &id(1), None).is_err());
    let (after, _) = l.reserve(6, &id(1), Some(&web)).expect("outside the fence");
    let store = ch("store");
    let (after, _) = after
        .level
        .reserve(4, &id(2), Some(&store))
        .expect("its own fence");
    assert_eq!(after.level.held_for(&store), 4);
    assert_eq!(after.level.available(), 0);
}

#[test]
fn the_fence_counts_what_its_channel_holds() {
    let store = ch("store");
    let l = allocated(level(10), "store", 4, None);
    let (held, _) = l.reserve(3, &id(1), Some(&store)).expect("fenced units");
    // Three of the four fenced units are held by the store: one is still kept.
    assert_eq!(held.level.fenced_from(None), 1);
    assert_eq!(held.level.available_to(None), 6);
    // Sold: on-hand drops, the fence stands over what is left.
    let sold = held
        .level
        .confirm(3, &id(1), Some(&store))
        .expect("confirmed");
    assert_eq!(sold.level.held_for(&store), 0);
    assert_eq!(sold.level.available_to(None), 3);
}

#[test]
fn a_cap_bounds_what_a_channel_holds_at_once() {
    let market = ch("market");
    let l = allocated(level(50), "market", 0, Some(Cap::Percent(20)));
    assert_eq!(l.cap_of(&market), Some(10));
    assert_eq!(l.available_to(Some(&market)), 10);
    let (a, _) = l.reserve(8, &id(1), Some(&market)).expect("within");
    assert!(a.level.reserve(3, &id(2), Some(&market)).is_err());
    let released = a.level.unreserve(8, &id(1), Some(&market));
    assert!(released.level.reserve(10, &id(2), Some(&market)).is_ok());
    // Other channels are not capped by it.
    assert!(l.reserve(50, &id(3), None).is_ok());
}

#[test]
fn under_backorder_no_channel_backorders_past_anothers_fenced_units() {
    let mut l = allocated(level(5), "store", 3, None);
    l.extras.policy = Settings {
        oversell: Some(Oversell::Backorder { limit: 10 }),
        ..Settings::default()
    };
    assert_eq!(l.reservable_to(None), 2);
    assert!(l.reserve(3, &id(1), None).is_err());
    let (taken, _) = l.reserve(3, &id(1), Some(&ch("store"))).expect("its fence");
    // The fence is held; the shelf left is the web's, and beyond it backorders.
    let (web, backordered) = taken.level.reserve(6, &id(2), None).expect("backorder");
    assert_eq!(backordered, 4);
    assert!(web.level.invariant_holds());
}

#[test]
fn track_only_keys_refuse_nothing() {
    let mut l = allocated(level(1), "store", 1, Some(Cap::Units(0)));
    l.extras.policy = Settings {
        oversell: Some(Oversell::TrackOnly),
        ..Settings::default()
    };
    assert!(l.reserve(5, &id(1), Some(&ch("store"))).is_ok());
    assert!(l.reserve(5, &id(1), None).is_ok());
}

#[test]
fn an_allocation_needs_a_fence_or_a_cap_within_bounds() {
    assert!(Allocation::new(0, None).is_err());
    assert!(Allocation::new(-1, None).is_err());
    assert!(Allocation::new(0, Some(Cap::Percent(101))).is_err());
    assert!(Allocation::new(0, Some(Cap::Units(0))).is_ok());
}

#[test]
fn a_key_holds_a_bounded_number_of_allocations() {
    let mut l = level(1);
    let a = Allocation::new(1, None).expect("valid");
    for i in 0..MAX_ALLOCATIONS {
        l = l
            .allocate(&ch(&format!("c{i}")), Some(a))
            .expect("room")
            .level;
    }
    assert!(l.allocate(&ch("one-more"), Some(a)).is_err());
    assert!(l.allocate(&ch("c0"), None).is_ok(), "removing always works");
}

/// One step of a random history at one key.
#[derive(Debug, Clone)]
enum Step {
    Reserve {
        channel: Option<usize>,
        qty: i64,
    },
    Settle {
        pick: usize,
        confirm: bool,
    },
    Count(i64),
    Allocate {
        channel: usize,
        fence: i64,
        cap: Option<i64>,
    },
}

const CHANNELS: usize = 3;

fn channel_of(i: usize) -> ChannelId {
    ch(&format!("c{i}"))
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (prop::option::of(0..CHANNELS), 1i64..8)
            .prop_map(|(channel, qty)| Step::Reserve { channel, qty }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, confirm)| Step::Settle { pick, confirm }),
        1 => (0i64..30).prop_map(Step::Count),
        1 => (0..CHANNELS, 0i64..8, prop::option::of(0i64..12))
            .prop_map(|(channel, fence, cap)| Step::Allocate { channel, fence, cap }),
    ]
}

fn policy() -> impl Strategy<Value = Oversell> {
    prop_oneof![
        Just(Oversell::Deny),
        (0i64..5).prop_map(|limit| Oversell::Backorder { limit })
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_accepted_reservation_overdraws_an_allocation(
        oversell in policy(),
        steps in prop::collection::vec(step(), 1..60),
    ) {
        let mut l = level(20);
        l.extras.policy = Settings { oversell: Some(oversell), ..Settings::default() };
        // Active lines: reservation id -> (channel, qty).
        let mut active: BTreeMap<usize, (Option<usize>, i64)> = BTreeMap::new();
        for (n, s) in steps.into_iter().enumerate() {
            match s {
                Step::Reserve { channel, qty } => {
                    let c = channel.map(channel_of);
                    let before = l.clone();
                    if let Ok((next, _)) = l.reserve(qty, &id(n), c.as_ref()) {
                        let after = next.level;
                        // Others' fenced units stay on the shelf (when they were there).
                        let fenced = before.fenced_from(c.as_ref());
                        let shelf_before = before.available().max(0);
                        prop_assert!(
                            fenced == 0
                                || shelf_before == 0
                                || after.available() >= fenced.min(shelf_before),
                            "took fenced units: {before:?} -> {after:?}"
                        );
                        if let Some(c) = &c && let Some(cap) = before.cap_of(c) {
                            prop_assert!(after.held_for(c) <= cap.max(before.held_for(c)));
                        }
                        active.insert(n, (channel, qty));
                        l = after;
                    }
                }
                Step::Settle { pick, confirm } => {
                    if active.is_empty() { continue; }
                    let key = *active.keys().nth(pick % active.len()).expect("an active line");
                    let (channel, qty) = active.remove(&key).expect("active");
                    let c = channel.map(channel_of);
                    l = if confirm {
                        match l.confirm(qty, &id(key), c.as_ref()) {
                            Ok(next) => next.level,
                            Err(_) => {
                                // Backordered: released instead.
                                l.unreserve(qty, &id(key), c.as_ref()).level
                            }
                        }
                    } else {
                        l.unreserve(qty, &id(key), c.as_ref()).level
                    };
                }
                Step::Count(on_hand) => {
                    l = l.next(|l| l.on_hand = on_hand).level;
                }
                Step::Allocate { channel, fence, cap } => {
                    let allocation = Allocation::new(fence, cap.map(Cap::Units)).ok();
                    l = l.allocate(&channel_of(channel), allocation).expect("room").level;
                }
            }
            // The key's holds are exactly the active lines, per channel.
            let mut expected: BTreeMap<ChannelId, i64> = BTreeMap::new();
            for (channel, qty) in active.values() {
                if let Some(c) = channel {
                    *expected.entry(channel_of(*c)).or_default() += qty;
                }
            }
            prop_assert_eq!(&l.extras.channel_held, &expected);
            prop_assert_eq!(l.reserved, active.values().map(|(_, q)| q).sum::<i64>());
            prop_assert!(l.invariant_holds(), "invariant broken: {l:?}");
        }
    }
}
