//! Choosing the locations of region-level lines: a pure function of the demand, the stock
//! each candidate location can give now, and the channel's rules — so the same state always
//! yields the same plan, on every backend and every replica.
//!
//! The plan is only a proposal: the reservation built from it is decided key by key like
//! any other, so a plan made from stock that a concurrent checkout took is refused there
//! and planned again from fresh levels. No plan ever oversells.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::channel::Strategy;
use crate::ids::{LocationId, Sku};

/// A region-level line: units of a SKU from wherever the strategy picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    /// The SKU.
    pub sku: Sku,
    /// Units wanted.
    pub qty: i64,
}

/// What one location can give of one SKU now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The SKU.
    pub sku: Sku,
    /// The location.
    pub location: LocationId,
    /// The location's priority (0 first): the channel's order, or any fixed order.
    pub rank: usize,
    /// Units it can give (never below zero).
    pub capacity: i64,
}

/// The rules a plan follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// How locations are chosen.
    pub strategy: Strategy,
    /// False: every line of the order from one location.
    pub allow_split: bool,
}

/// Why a location was chosen: the step of the strategy that picked it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// `priority`: the location at this rank gave what it had.
    Priority {
        /// Its rank in the channel (0 first).
        rank: usize,
    },
    /// `fewest_splits` (or no split allowed): the first location that fills every line.
    WholeOrder {
        /// Its rank in the channel (0 first).
        rank: usize,
    },
    /// `fewest_splits` when no location fills the whole order: the `pick`-th location
    /// chosen, the one covering the most units still missing.
    FewestSplits {
        /// 1 for the first location chosen.
        pick: usize,
        /// Units of the order it covers.
        covers: i64,
    },
    /// `most_stock`: the location holding the most of this SKU among those left.
    MostStock {
        /// What it could give.
        capacity: i64,
    },
    /// `most_stock` with no split allowed: the location holding the most of the order
    /// among those that fill every line.
    MostStockWhole {
        /// What it could give of the order's SKUs together.
        capacity: i64,
    },
}

impl Step {
    /// The step's name, as the API shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Priority { .. } => "priority",
            Step::WholeOrder { .. } => "whole_order",
            Step::FewestSplits { .. } => "fewest_splits",
            Step::MostStock { .. } => "most_stock",
            Step::MostStockWhole { .. } => "most_stock_whole_order",
        }
    }

    /// Why the location was chosen, in a sentence.
    pub fn explain(&self) -> String {
        match self {
            Step::Priority { rank } => {
                format!(
                    "priority {}: the first location in the channel's order with stock left",
                    rank + 1
                )
            }
            Step::WholeOrder { rank } => {
                format!(
                    "priority {}: the first location that fills the whole order",
                    rank + 1
                )
            }
            Step::FewestSplits { pick, covers } => format!(
                "location {pick} of the split: it covers {covers} of the units still missing, the most of any location left"
            ),
            Step::MostStock { capacity } => {
                format!("holds the most of this SKU among the locations left ({capacity})")
            }
            Step::MostStockWhole { capacity } => {
                format!("fills the whole order and holds the most of it ({capacity})")
            }
        }
    }
}

/// Units of a SKU taken from one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// The SKU.
    pub sku: Sku,
    /// The location chosen.
    pub location: LocationId,
    /// Units taken there.
    pub qty: i64,
    /// Why it was chosen.
    pub step: Step,
}

/// A location (its rank and id) and what it can give, by SKU.
type Offer<'a> = (&'a (usize, LocationId), &'a BTreeMap<Sku, i64>);

/// What each location can give, by SKU: candidates in a fixed order, whatever order they
/// came in, so ties always break the same way (rank, then location id).
struct Stock {
    /// `(rank, location)` → SKU → capacity.
    at: BTreeMap<(usize, LocationId), BTreeMap<Sku, i64>>,
}

impl Stock {
    fn new(candidates: &[Candidate]) -> Self {
        let mut at: BTreeMap<(usize, LocationId), BTreeMap<Sku, i64>> = BTreeMap::new();
        for c in candidates {
            let cap = at
                .entry((c.rank, c.location.clone()))
                .or_default()
                .entry(c.sku.clone())
                .or_default();
            *cap = (*cap).max(c.capacity.max(0));
        }
        Self { at }
    }

    fn capacity(skus: &BTreeMap<Sku, i64>, sku: &Sku) -> i64 {
        skus.get(sku).copied().unwrap_or(0)
    }

    /// Locations that can fill every demand by themselves, in rank order.
    fn whole(&self, demands: &[Demand]) -> impl Iterator<Item = (&(usize, LocationId), i64)> {
        self.at.iter().filter_map(move |(place, skus)| {
            let fills = demands
                .iter()
                .all(|d| Self::capacity(skus, &d.sku) >= d.qty);
            fills.then(|| {
                let held = demands.iter().map(|d| Self::capacity(skus, &d.sku)).sum();
                (place, held)
            })
        })
    }
}

/// Chooses where each demand's units come from, or `None` when the candidates cannot
/// cover the demand under `rules`. Demands name distinct SKUs.
///
/// Every plan fits: each part takes at most what its location can give, the parts of a
/// SKU add up to its demand exactly, and without splits every part is at one location.
pub fn plan(demands: &[Demand], candidates: &[Candidate], rules: Rules) -> Option<Vec<Part>> {
    if demands.iter().any(|d| d.qty <= 0) {
        return None;
    }
    let stock = Stock::new(candidates);
    if !rules.allow_split {
        return one_location(demands, &stock, rules.strategy);
    }
    match rules.strategy {
        Strategy::Priority => per_sku(
            demands,
            &stock,
            |_, _| 0,
            |(rank, _), _| Step::Priority { rank: *rank },
        ),
        Strategy::MostStock => per_sku(
            demands,
            &stock,
            |_, capacity| capacity,
            |_, capacity| Step::MostStock { capacity },
        ),
        Strategy::FewestSplits => match one_location(demands, &stock, Strategy::Priority) {
            Some(parts) => Some(parts),
            None => fewest_locations(demands, &stock),
        },
    }
}

/// The whole order from one location: the first in rank order, or under `most_stock` the
/// one holding the most of the order.
fn one_location(demands: &[Demand], stock: &Stock, strategy: Strategy) -> Option<Vec<Part>> {
    let ((_, location), step) = match strategy {
        Strategy::MostStock => {
            // Ties keep the first in rank order: `max_by_key` keeps the last, so reverse.
            let (place, held) = stock
                .whole(demands)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .max_by_key(|(_, held)| *held)?;
            (place, Step::MostStockWhole { capacity: held })
        }
        Strategy::Priority | Strategy::FewestSplits => {
            let (place, _) = stock.whole(demands).next()?;
            (place, Step::WholeOrder { rank: place.0 })
        }
    };
    Some(
        demands
            .iter()
            .map(|d| Part {
                sku: d.sku.clone(),
                location: location.clone(),
                qty: d.qty,
                step: step.clone(),
            })
            .collect(),
    )
}

/// Each SKU on its own: locations ordered by `weight` (highest first; ties in rank
/// order), each giving what it can until the demand is met.
fn per_sku(
    demands: &[Demand],
    stock: &Stock,
    weight: impl Fn(&(usize, LocationId), i64) -> i64,
    step: impl Fn(&(usize, LocationId), i64) -> Step,
) -> Option<Vec<Part>> {
    let mut parts = Vec::new();
    for demand in demands {
        let mut places: Vec<(&(usize, LocationId), i64)> = stock
            .at
            .iter()
            .map(|(place, skus)| (place, Stock::capacity(skus, &demand.sku)))
            .filter(|(_, capacity)| *capacity > 0)
            .collect();
        // Stable: equal weights stay in rank order.
        places.sort_by_key(|(place, capacity)| std::cmp::Reverse(weight(place, *capacity)));
        let mut missing = demand.qty;
        for (place, capacity) in places {
            if missing == 0 {
                break;
            }
            let take = capacity.min(missing);
            missing -= take;
            parts.push(Part {
                sku: demand.sku.clone(),
                location: place.1.clone(),
                qty: take,
                step: step(place, capacity),
            });
        }
        if missing > 0 {
            return None;
        }
    }
    Some(parts)
}

/// The order over as few locations as a greedy cover finds: each round takes the location
/// covering the most units still missing (ties in rank order), which is within a small
/// factor of the fewest possible and never worse than one location per SKU.
fn fewest_locations(demands: &[Demand], stock: &Stock) -> Option<Vec<Part>> {
    let mut missing: BTreeMap<&Sku, i64> = demands.iter().map(|d| (&d.sku, d.qty)).collect();
    let mut left: Vec<Offer<'_>> = stock.at.iter().collect();
    let mut parts = Vec::new();
    let mut pick = 0;
    while missing.values().any(|m| *m > 0) {
        let covers = |skus: &BTreeMap<Sku, i64>| -> i64 {
            missing
                .iter()
                .map(|(sku, m)| Stock::capacity(skus, sku).min(*m))
                .sum()
        };
        let (index, best) = left
            .iter()
            .enumerate()
            .map(|(i, (_, skus))| (i, covers(skus)))
            .fold(None, |best: Option<(usize, i64)>, (i, c)| match best {
                Some((_, b)) if b >= c => best,
                _ => Some((i, c)),
            })?;
        if best == 0 {
            return None;
        }
        let (place, skus) = left.remove(index);
        pick += 1;
        for demand in demands {
            let Some(m) = missing.get_mut(&demand.sku) else {
                continue;
            };
            let take = Stock::capacity(skus, &demand.sku).min(*m);
            if take > 0 {
                *m -= take;
                parts.push(Part {
                    sku: demand.sku.clone(),
                    location: place.1.clone(),
                    qty: take,
                    step: Step::FewestSplits { pick, covers: best },
                });
            }
        }
    }
    Some(parts)
}
