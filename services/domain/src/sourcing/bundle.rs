//! Bundles (kits): a SKU sold as a set of component SKUs. A bundle holds no stock of its
//! own: reserving it reserves its components at the same location, all or nothing, and
//! what a location can sell of it is the least its components allow.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::command::ReserveLine;
use crate::ids::{LocationId, Sku};
use crate::limits::MAX_LINE_QTY;
use crate::validation::ValidationError;

/// Components one bundle may have.
pub const MAX_COMPONENTS: usize = 20;
/// Units of one component per bundle at most.
pub const MAX_COMPONENT_QTY: i64 = 1000;

/// One component of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Component {
    /// The component SKU.
    pub sku: Sku,
    /// Units of it in one bundle.
    pub qty: i64,
}

/// A bundle and its components.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// The bundle's SKU.
    pub sku: Sku,
    /// Its components, each SKU once.
    pub components: Vec<Component>,
    /// Bumped by each change.
    pub version: u64,
}

impl Bundle {
    /// Validates a bundle definition against the bundles already defined (`others`): a
    /// bundle's components are plain SKUs, and a SKU that is some bundle's component cannot
    /// become a bundle, so reserving a bundle expands one level, always.
    pub fn new(
        sku: Sku,
        components: Vec<Component>,
        others: &BTreeMap<Sku, Bundle>,
    ) -> Result<Self, ValidationError> {
        if components.is_empty() || components.len() > MAX_COMPONENTS {
            return Err(ValidationError::new(
                "components",
                format!(
                    "must list 1-{MAX_COMPONENTS} components, got {}",
                    components.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, c) in components.iter().enumerate() {
            if !(1..=MAX_COMPONENT_QTY).contains(&c.qty) {
                return Err(ValidationError::new(
                    format!("components[{i}].qty"),
                    format!("must be between 1 and {MAX_COMPONENT_QTY}"),
                ));
            }
            if !seen.insert(&c.sku) {
                return Err(ValidationError::duplicate(
                    format!("components[{i}].sku"),
                    format!("{} is listed twice; merge the quantities", c.sku),
                ));
            }
            if c.sku == sku || others.contains_key(&c.sku) {
                return Err(ValidationError::conflict(
                    format!("components[{i}].sku"),
                    format!(
                        "{} is a bundle; a bundle's components are plain SKUs",
                        c.sku
                    ),
                ));
            }
        }
        if let Some(parent) = others
            .values()
            .find(|b| b.sku != sku && b.components.iter().any(|c| c.sku == sku))
        {
            return Err(ValidationError::conflict(
                "sku",
                format!(
                    "{sku} is a component of bundle {}; a bundle cannot be a component",
                    parent.sku
                ),
            ));
        }
        Ok(Self {
            sku,
            components,
            version: 0,
        })
    }

    /// `self` as stored over `previous` (the stored definition of the same SKU, if any).
    pub fn revised(mut self, previous: Option<&Bundle>) -> Self {
        self.version = previous.map_or(1, |p| p.version + 1);
        self
    }

    /// Bundles a location can sell, given each component's available units there.
    pub fn available(&self, component_available: impl Fn(&Sku) -> i64) -> i64 {
        self.components
            .iter()
            .map(|c| component_available(&c.sku).max(0) / c.qty)
            .min()
            .unwrap_or(0)
    }
}

/// The SKUs whose stock a line of `sku` takes: `bundle`'s components when `sku` is that
/// bundle, else `sku` itself.
pub fn stock_skus(sku: &Sku, bundle: Option<&Bundle>) -> Vec<Sku> {
    match bundle {
        Some(b) => b.components.iter().map(|c| c.sku.clone()).collect(),
        None => vec![sku.clone()],
    }
}

/// Refuses region-level `demands` naming a bundle beside another line that needs one of
/// its components (the component itself, or another bundle of it): the locations' offers
/// would count the same units twice.
pub fn no_shared_components(
    demands: &[super::Demand],
    bundles: &BTreeMap<Sku, Bundle>,
) -> Result<(), ValidationError> {
    let mut seen: BTreeMap<Sku, usize> = BTreeMap::new();
    for (i, demand) in demands.iter().enumerate() {
        for sku in stock_skus(&demand.sku, bundles.get(&demand.sku)) {
            if let Some(first) = seen.insert(sku.clone(), i) {
                return Err(ValidationError::conflict(
                    format!("lines[{i}].sku"),
                    format!(
                        "needs {sku}, which lines[{first}] needs too; order a bundle and its components in separate reservations"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Reservation lines with every bundle line replaced by its components at the same
/// location (units multiplied), and lines of one key merged, in first-seen order. Lines
/// that are valid alone but too large once expanded are a conflict (422), not bad input.
pub fn expand(
    lines: Vec<ReserveLine>,
    bundles: &BTreeMap<Sku, Bundle>,
) -> Result<Vec<ReserveLine>, ValidationError> {
    let mut merged: Vec<ReserveLine> = Vec::with_capacity(lines.len());
    let mut index: BTreeMap<(Sku, LocationId), usize> = BTreeMap::new();
    let mut add = |line: ReserveLine, field: String| -> Result<(), ValidationError> {
        match index.get(&(line.sku.clone(), line.location.clone())) {
            Some(&i) => {
                let total = merged[i].qty + line.qty;
                if total > MAX_LINE_QTY {
                    return Err(ValidationError::conflict(
                        field,
                        format!(
                            "holds more than {MAX_LINE_QTY} units of {} with its bundles' components",
                            line.sku
                        ),
                    ));
                }
                merged[i].qty = total;
            }
            None => {
                index.insert((line.sku.clone(), line.location.clone()), merged.len());
                merged.push(line);
            }
        }
        Ok(())
    };
    for (i, line) in lines.into_iter().enumerate() {
        match bundles.get(&line.sku) {
            None => add(line, format!("lines[{i}].qty"))?,
            Some(bundle) => {
                for c in &bundle.components {
                    let qty = line.qty.saturating_mul(c.qty);
                    if qty > MAX_LINE_QTY {
                        return Err(ValidationError::conflict(
                            format!("lines[{i}].qty"),
                            format!(
                                "{} bundles need {qty} units of {}, more than {MAX_LINE_QTY}",
                                line.qty, c.sku
                            ),
                        ));
                    }
                    let component = ReserveLine {
                        sku: c.sku.clone(),
                        location: line.location.clone(),
                        qty,
                    };
                    add(component, format!("lines[{i}].qty"))?;
                }
            }
        }
    }
    if merged.len() > crate::limits::MAX_LINES {
        return Err(ValidationError::conflict(
            "lines",
            format!(
                "the bundles' components make {} lines, more than {} in one reservation",
                merged.len(),
                crate::limits::MAX_LINES
            ),
        ));
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).expect("sku")
    }

    fn gift() -> Bundle {
        Bundle::new(
            sku("GIFT"),
            vec![
                Component {
                    sku: sku("MUG"),
                    qty: 1,
                },
                Component {
                    sku: sku("TEA"),
                    qty: 2,
                },
            ],
            &BTreeMap::new(),
        )
        .expect("valid")
        .revised(None)
    }

    #[test]
    fn a_bundle_line_becomes_its_components_merged_with_plain_lines() {
        let bundles = BTreeMap::from([(sku("GIFT"), gift())]);
        let at = LocationId::parse("s1").expect("location");
        let line = |s: &str, qty| ReserveLine {
            sku: sku(s),
            location: at.clone(),
            qty,
        };
        let lines = expand(vec![line("GIFT", 3), line("TEA", 1)], &bundles).expect("expands");
        assert_eq!(lines, vec![line("MUG", 3), line("TEA", 7)]);
    }

    #[test]
    fn availability_is_the_least_the_components_allow() {
        let b = gift();
        assert_eq!(b.available(|s| if s.as_str() == "MUG" { 10 } else { 7 }), 3);
        assert_eq!(b.available(|_| -4), 0);
    }

    #[test]
    fn bundles_nest_one_level_only() {
        let bundles = BTreeMap::from([(sku("GIFT"), gift())]);
        let nested = Bundle::new(
            sku("BIG"),
            vec![Component {
                sku: sku("GIFT"),
                qty: 1,
            }],
            &bundles,
        );
        assert_eq!(nested.expect_err("nested").field, "components[0].sku");
        let component_as_bundle = Bundle::new(
            sku("MUG"),
            vec![Component {
                sku: sku("CUP"),
                qty: 1,
            }],
            &bundles,
        );
        assert_eq!(component_as_bundle.expect_err("component").field, "sku");
    }
}
