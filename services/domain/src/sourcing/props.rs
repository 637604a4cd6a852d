//! Property tests of the sourcing strategies: for random stock over a few locations and
//! random orders, every plan fits the stock, covers each demand exactly, keeps to one
//! location when splits are not allowed, is the same whatever order the candidates come
//! in, and is found whenever one exists (brute force over small cases says so).

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::channel::Strategy as Sourcing;
use super::plan::{Candidate, Demand, Part, Rules, plan};
use crate::ids::{LocationId, Sku};

const LOCATIONS: usize = 5;
const SKUS: usize = 3;

fn sku(i: usize) -> Sku {
    Sku::parse(format!("S{i}")).expect("valid sku")
}

fn location(i: usize) -> LocationId {
    LocationId::parse(format!("L{i}")).expect("valid location")
}

fn strategy() -> impl Strategy<Value = Sourcing> {
    prop_oneof![
        Just(Sourcing::Priority),
        Just(Sourcing::FewestSplits),
        Just(Sourcing::MostStock),
    ]
}

/// Capacities `[location][sku]`, an order (qty per SKU, 0 = not ordered) and the rules.
fn case() -> impl Strategy<Value = (Vec<Vec<i64>>, Vec<i64>, Rules)> {
    (
        prop::collection::vec(prop::collection::vec(0i64..6, SKUS), 1..=LOCATIONS),
        prop::collection::vec(0i64..10, SKUS),
        strategy(),
        any::<bool>(),
    )
        .prop_filter("an order names a SKU", |(_, order, _, _)| {
            order.iter().any(|q| *q > 0)
        })
        .prop_map(|(stock, order, strategy, allow_split)| {
            (
                stock,
                order,
                Rules {
                    strategy,
                    allow_split,
                },
            )
        })
}

fn candidates(stock: &[Vec<i64>]) -> Vec<Candidate> {
    stock
        .iter()
        .enumerate()
        .flat_map(|(l, caps)| {
            caps.iter().enumerate().map(move |(s, cap)| Candidate {
                sku: sku(s),
                location: location(l),
                rank: l,
                capacity: *cap,
            })
        })
        .collect()
}

fn demands(order: &[i64]) -> Vec<Demand> {
    order
        .iter()
        .enumerate()
        .filter(|(_, q)| **q > 0)
        .map(|(s, q)| Demand {
            sku: sku(s),
            qty: *q,
        })
        .collect()
}

/// Whether any plan exists: with splits, each SKU's total stock covers it; without, one
/// location covers every SKU.
fn feasible(stock: &[Vec<i64>], order: &[i64], allow_split: bool) -> bool {
    if allow_split {
        (0..SKUS).all(|s| stock.iter().map(|caps| caps[s]).sum::<i64>() >= order[s])
    } else {
        stock
            .iter()
            .any(|caps| (0..SKUS).all(|s| caps[s] >= order[s]))
    }
}

fn check_fits(stock: &[Vec<i64>], order: &[i64], rules: Rules, parts: &[Part]) {
    let mut taken: BTreeMap<(LocationId, Sku), i64> = BTreeMap::new();
    for part in parts {
        assert!(part.qty > 0, "a part takes at least one unit: {part:?}");
        *taken
            .entry((part.location.clone(), part.sku.clone()))
            .or_default() += part.qty;
    }
    for ((loc, s), qty) in &taken {
        let l: usize = loc.as_str()[1..].parse().expect("L<n>");
        let si: usize = s.as_str()[1..].parse().expect("S<n>");
        assert!(
            *qty <= stock[l][si],
            "{loc} gives {qty} of {s}, holds {}",
            stock[l][si]
        );
    }
    for (si, want) in order.iter().enumerate() {
        let got: i64 = parts
            .iter()
            .filter(|p| p.sku == sku(si))
            .map(|p| p.qty)
            .sum();
        assert_eq!(got, *want, "demand of {} covered exactly", sku(si));
    }
    if !rules.allow_split {
        let places: std::collections::BTreeSet<_> = parts.iter().map(|p| &p.location).collect();
        assert_eq!(
            places.len(),
            1,
            "no split allowed: one location, got {places:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn a_plan_fits_covers_exactly_and_exists_whenever_one_can(
        (stock, order, rules) in case()
    ) {
        let planned = plan(&demands(&order), &candidates(&stock), rules);
        match planned {
            Some(parts) => check_fits(&stock, &order, rules, &parts),
            None => prop_assert!(
                !feasible(&stock, &order, rules.allow_split),
                "no plan found though one exists"
            ),
        }
    }

    #[test]
    fn the_same_state_gives_the_same_plan_in_any_order(
        (stock, order, rules) in case(),
        seed in any::<u64>(),
    ) {
        let mut shuffled = candidates(&stock);
        // A deterministic shuffle: rotate and reverse by the seed.
        let len = shuffled.len();
        shuffled.rotate_left((seed as usize) % len);
        if seed % 2 == 0 {
            shuffled.reverse();
        }
        prop_assert_eq!(
            plan(&demands(&order), &candidates(&stock), rules),
            plan(&demands(&order), &shuffled, rules)
        );
    }

    #[test]
    fn fewest_splits_uses_one_location_whenever_one_fills_the_order(
        (stock, order, _) in case()
    ) {
        let rules = Rules { strategy: Sourcing::FewestSplits, allow_split: true };
        if feasible(&stock, &order, false) {
            let parts = plan(&demands(&order), &candidates(&stock), rules).expect("a plan");
            let places: std::collections::BTreeSet<_> = parts.iter().map(|p| &p.location).collect();
            prop_assert_eq!(places.len(), 1);
        }
    }
}

#[test]
fn priority_takes_the_channel_order_and_most_stock_the_fullest() {
    let stock = vec![vec![2, 0, 0], vec![9, 0, 0], vec![4, 0, 0]];
    let order = vec![5, 0, 0];
    let by = |strategy| {
        plan(
            &demands(&order),
            &candidates(&stock),
            Rules {
                strategy,
                allow_split: true,
            },
        )
        .expect("a plan")
        .into_iter()
        .map(|p| (p.location.to_string(), p.qty))
        .collect::<Vec<_>>()
    };
    assert_eq!(
        by(Sourcing::Priority),
        vec![("L0".to_string(), 2), ("L1".to_string(), 3)]
    );
    assert_eq!(by(Sourcing::MostStock), vec![("L1".to_string(), 5)]);
    assert_eq!(by(Sourcing::FewestSplits), vec![("L1".to_string(), 5)]);
}
