//! Sourcing from loaded stock levels: what each candidate key can give, stock on the
//! shelves first and only then what the keys' policies allow (backorders, track-only), and
//! the refusal when no plan fits.

use std::collections::BTreeMap;

use super::bundle::Bundle;
use super::plan::{Candidate, Demand, Part, Rules, plan};
use crate::command::ReserveLine;
use crate::ids::{ChannelId, LocationId, Sku};
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

/// What one location can give of one SKU (a plain SKU or a bundle) for a channel now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The SKU.
    pub sku: Sku,
    /// The location.
    pub location: LocationId,
    /// The location's rank (0 first).
    pub rank: usize,
    /// Units on the shelf the channel may take.
    pub shelf: i64,
    /// Units the keys' oversell policies accept in one line (at least `shelf`).
    pub reservable: i64,
}

impl Offer {
    /// What the key of `place` offers `channel`.
    pub fn of(place: &Place<'_>, channel: Option<&ChannelId>) -> Self {
        Self {
            sku: place.level.sku.clone(),
            location: place.level.location.clone(),
            rank: place.rank,
            shelf: place.level.available_to(channel),
            reservable: place.level.reservable_to(channel),
        }
    }

    /// What a location offers of `bundle` from its components' `places` (all at that
    /// location): the least each component allows. `None` when a component has no key
    /// there.
    pub fn of_bundle(
        bundle: &Bundle,
        places: &[Place<'_>],
        channel: Option<&ChannelId>,
    ) -> Option<Self> {
        let first = places.first()?;
        let (mut shelf, mut reservable) = (i64::MAX, i64::MAX);
        for c in &bundle.components {
            let place = places.iter().find(|p| p.level.sku == c.sku)?;
            shelf = shelf.min(place.level.available_to(channel).max(0) / c.qty);
            reservable = reservable.min(place.level.reservable_to(channel).max(0) / c.qty);
        }
        Some(Self {
            sku: bundle.sku.clone(),
            location: first.level.location.clone(),
            rank: first.rank,
            shelf,
            reservable,
        })
    }
}

/// What each location offers of each demanded SKU over `places` (the candidate keys): a
/// plain SKU's key as it is, a bundle (one of `bundles`) as the least its components at a
/// location allow.
pub fn offers(
    demands: &[Demand],
    places: &[Place<'_>],
    bundles: &BTreeMap<Sku, Bundle>,
    channel: Option<&ChannelId>,
) -> Vec<Offer> {
    let mut offers = Vec::new();
    for demand in demands {
        match bundles.get(&demand.sku) {
            None => offers.extend(
                places
                    .iter()
                    .filter(|p| p.level.sku == demand.sku)
                    .map(|p| Offer::of(p, channel)),
            ),
            Some(bundle) => {
                let mut at: BTreeMap<&LocationId, Vec<Place<'_>>> = BTreeMap::new();
                for p in places {
                    if bundle.components.iter().any(|c| c.sku == p.level.sku) {
                        at.entry(&p.level.location).or_default().push(p.clone());
                    }
                }
                offers.extend(
                    at.values()
                        .filter_map(|here| Offer::of_bundle(bundle, here, channel)),
                );
            }
        }
    }
    offers
}

/// Plans `demands` over `offers`: from units on the shelves when they suffice, so a region
/// never backorders at one store what another holds; else from what each key's oversell
/// policy accepts. Offers are what the channel may take (other channels' ring-fences, its
/// caps). Refused when neither fits in one reservation (`lines` counts the reservation
/// lines a plan needs).
pub fn source(
    demands: &[Demand],
    offers: &[Offer],
    rules: Rules,
    lines: impl Fn(&[Part]) -> usize,
) -> Answer<Vec<Part>> {
    let candidates = |capacity: fn(&Offer) -> i64| -> Vec<Candidate> {
        offers
            .iter()
            .map(|o| Candidate {
                sku: o.sku.clone(),
                location: o.location.clone(),
                rank: o.rank,
                capacity: capacity(o),
            })
            .collect()
    };
    // A plan split over more keys than one reservation may hold cannot be made.
    let fits = |parts: &Vec<Part>| lines(parts) <= MAX_LINES;
    if let Some(parts) = plan(demands, &candidates(|o| o.shelf), rules).filter(fits) {
        return Ok(parts);
    }
    if let Some(parts) = plan(demands, &candidates(|o| o.reservable), rules).filter(fits) {
        return Ok(parts);
    }
    let mut on_shelves: BTreeMap<&Sku, i64> = BTreeMap::new();
    for o in offers {
        *on_shelves.entry(&o.sku).or_default() += o.shelf;
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

    fn offers(places: &[Place<'_>]) -> Vec<Offer> {
        places.iter().map(|p| Offer::of(p, None)).collect()
    }

    fn count(parts: &[Part]) -> usize {
        lines_of(parts).len()
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
        let parts = source(&demand(3), &offers(&places), RULES, count).expect("a plan");
        assert_eq!(lines_of(&parts)[0].location.as_str(), "second");
        // Beyond the shelves, the backorder policy of the first location takes the rest.
        let parts = source(&demand(5), &offers(&places), RULES, count).expect("a plan");
        assert_eq!(parts[0].location.as_str(), "first");
    }

    #[test]
    fn a_location_offers_the_bundles_its_components_make() {
        use crate::sourcing::bundle::{Bundle, Component};
        let part = |sku: &str, on_hand| {
            let mut l = level("k", on_hand);
            l.sku = Sku::parse(sku).expect("sku");
            l
        };
        let (mug, tea) = (part("MUG", 5), part("TEA", 7));
        let component = |sku: &str, qty| Component {
            sku: Sku::parse(sku).expect("sku"),
            qty,
        };
        let kit = Bundle::new(
            Sku::parse("KIT").expect("sku"),
            vec![component("MUG", 1), component("TEA", 2)],
            &Default::default(),
        )
        .expect("bundle");
        let here = [
            Place {
                rank: 2,
                level: &mug,
            },
            Place {
                rank: 2,
                level: &tea,
            },
        ];
        let offer = Offer::of_bundle(&kit, &here, None).expect("both components here");
        assert_eq!((offer.sku.as_str(), offer.shelf, offer.rank), ("KIT", 3, 2));
        assert!(
            Offer::of_bundle(&kit, &here[..1], None).is_none(),
            "no tea here"
        );
    }

    #[test]
    fn a_region_short_says_what_its_shelves_hold() {
        let places = [Place {
            rank: 0,
            level: &level("only", 2),
        }];
        let refusal = source(&demand(3), &offers(&places), RULES, count).expect_err("short");
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
