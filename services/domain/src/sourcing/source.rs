//! Sourcing from loaded stock levels: what each candidate key can give, stock on the
//! shelves first and only then what the keys' policies allow (backorders, track-only), and
//! the refusal when no plan fits.

use std::collections::BTreeMap;

use super::plan::{Candidate, Demand, Part, Rules, plan};
use crate::command::ReserveLine;
use crate::ids::{ChannelId, Sku};
use crate::limits::MAX_LINES;
use crate::refusal::{Answer, Refusal, UnsourcedLine};
use crate::stock::StockLevel;

/// A key a region-level line may be reserved at, with its location's priority (0 first).
#[derive(Debug, Clone)]
pub struct Place<'a> {
    /// The location's rank in the channel (or any fixed order).
    pub rank: usize,
    /// The key's current level, as the write side holds it.
    pub level: &'a StockLevel,
}

/// Plans `demands` for `channel` over `places`: from units on the shelves when they
/// suffice, so a region never backorders at one store what another holds; else from what
/// each key's oversell policy accepts. Either way within the keys' allocations (other
/// channels' ring-fences, the channel's caps). Refused when neither fits in one
/// reservation.
pub fn source(
    demands: &[Demand],
    places: &[Place<'_>],
    rules: Rules,
    channel: Option<&ChannelId>,
) -> Answer<Vec<Part>> {
    let candidates = |capacity: fn(&StockLevel, Option<&ChannelId>) -> i64| -> Vec<Candidate> {
        places
            .iter()
            .map(|p| Candidate {
                sku: p.level.sku.clone(),
                location: p.level.location.clone(),
                rank: p.rank,
                capacity: capacity(p.level, channel),
            })
            .collect()
    };
    // A plan split over more keys than one reservation may hold cannot be made.
    let fits = |parts: &Vec<Part>| lines_of(parts).len() <= MAX_LINES;
    if let Some(parts) = plan(demands, &candidates(StockLevel::available_to), rules).filter(fits) {
        return Ok(parts);
    }
    if let Some(parts) = plan(demands, &candidates(StockLevel::reservable_to), rules).filter(fits) {
        return Ok(parts);
    }
    let mut on_shelves: BTreeMap<&Sku, i64> = BTreeMap::new();
    for p in places {
        *on_shelves.entry(&p.level.sku).or_default() += p.level.available_to(channel);
    }
    Err(Refusal::InsufficientStockInRegion {
        lines: demands
            .iter()
            .map(|d| UnsourcedLine {
                sku: d.sku.clone(),
                requested: d.qty,
                available: on_shelves.get(&d.sku).copied().unwrap_or(0),
            })
            .collect(),
    })
}

/// The reservation lines of a plan: one per `(sku, location)`.
pub fn lines_of(parts: &[Part]) -> Vec<ReserveLine> {
    let mut lines: BTreeMap<(Sku, crate::ids::LocationId), i64> = BTreeMap::new();
    for part in parts {
        *lines
            .entry((part.sku.clone(), part.location.clone()))
            .or_default() += part.qty;
    }
    lines
        .into_iter()
        .map(|((sku, location), qty)| ReserveLine { sku, location, qty })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{LocationId, Region};
    use crate::policy::{Oversell, Settings};
    use crate::sourcing::channel::Strategy;

    fn level(location: &str, on_hand: i64) -> StockLevel {
        let mut level = StockLevel::empty(
            Sku::parse("A").expect("sku"),
            LocationId::parse(location).expect("location"),
            Region::parse("north").expect("region"),
        );
        level.on_hand = on_hand;
        level
    }

    fn demand(qty: i64) -> Vec<Demand> {
        vec![Demand {
            sku: Sku::parse("A").expect("sku"),
            qty,
        }]
    }

    const RULES: Rules = Rules {
        strategy: Strategy::Priority,
        allow_split: true,
    };

    #[test]
    fn shelves_come_before_backorders() {
        let mut backordering = level("first", 0);
        backordering.extras.policy = Settings {
            oversell: Some(Oversell::Backorder { limit: 10 }),
            ..Settings::default()
        };
        let stocked = level("second", 3);
        let places = [
            Place {
                rank: 0,
                level: &backordering,
            },
            Place {
                rank: 1,
                level: &stocked,
            },
        ];
        let parts = source(&demand(3), &places, RULES, None).expect("a plan");
        assert_eq!(lines_of(&parts)[0].location.as_str(), "second");
        // Beyond the shelves, the backorder policy of the first location takes the rest.
        let parts = source(&demand(5), &places, RULES, None).expect("a plan");
        assert_eq!(parts[0].location.as_str(), "first");
    }

    #[test]
    fn a_region_short_says_what_its_shelves_hold() {
        let places = [Place {
            rank: 0,
            level: &level("only", 2),
        }];
        let refusal = source(&demand(3), &places, RULES, None).expect_err("short");
        assert_eq!(
            refusal,
            Refusal::InsufficientStockInRegion {
                lines: vec![UnsourcedLine {
                    sku: Sku::parse("A").expect("sku"),
                    requested: 3,
                    available: 2,
                }]
            }
        );
    }
}
