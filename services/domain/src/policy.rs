//! Oversell policies and stock-level thresholds: set per SKU, overridable per location,
//! and the signals a key gives when it crosses them.
//!
//! A key's effective policy is its location override, else its SKU's, else `deny` (the
//! behaviour before policies existed). Each field inherits on its own, so a location may
//! override the oversell mode and keep the SKU's low-stock threshold.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::Sku;
use crate::limits::{MAX_LINE_QTY, MAX_ON_HAND};
use crate::validation::ValidationError;

/// What a key does when a command asks for more than is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Oversell {
    /// Refuse (409 `insufficient_stock`): nothing is promised that is not there.
    Deny,
    /// Accept reservations beyond stock, down to `available = -limit`; the units beyond
    /// stock are backordered and filled first, in reservation order, as stock arrives.
    Backorder {
        /// How far below zero `available` may go, 1 to 1,000,000.
        limit: i64,
    },
    /// Never refuse for quantity: for SKUs sold without counting.
    TrackOnly,
}

impl Oversell {
    /// The wire spelling of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Oversell::Deny => "deny",
            Oversell::Backorder { .. } => "backorder",
            Oversell::TrackOnly => "track_only",
        }
    }

    /// Validates a mode and its limit as the API sends them.
    pub fn parse(mode: &str, limit: Option<i64>) -> Result<Self, ValidationError> {
        match (mode, limit) {
            ("deny", None) => Ok(Oversell::Deny),
            ("track_only", None) => Ok(Oversell::TrackOnly),
            ("backorder", Some(limit)) if (1..=MAX_LINE_QTY).contains(&limit) => {
                Ok(Oversell::Backorder { limit })
            }
            ("backorder", _) => Err(ValidationError::new(
                "backorder_limit",
                format!("backorder needs a backorder_limit of 1-{MAX_LINE_QTY}"),
            )),
            ("deny" | "track_only", Some(_)) => Err(ValidationError::new(
                "backorder_limit",
                "only the backorder mode takes a limit",
            )),
            _ => Err(ValidationError::new(
                "oversell",
                "must be one of deny, backorder, track_only",
            )),
        }
    }

    /// The backorder limit (0 unless backordering).
    pub fn limit(self) -> Option<i64> {
        match self {
            Oversell::Backorder { limit } => Some(limit),
            _ => None,
        }
    }

    /// How far below zero `available` may go after a command decided under this mode
    /// (`None`: no bound).
    pub fn floor(self) -> Option<i64> {
        match self {
            Oversell::Deny => Some(0),
            Oversell::Backorder { limit } => Some(-limit),
            Oversell::TrackOnly => None,
        }
    }
}

/// Policy fields as set at one level (a SKU, or a location's override); `None` inherits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Settings {
    /// The oversell mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oversell: Option<Oversell>,
    /// `low_stock` is signalled when available drops to this or below (but above zero).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_stock_threshold: Option<i64>,
}

impl Settings {
    /// Validates the fields of a policy command.
    pub fn new(
        oversell: Option<Oversell>,
        low_stock_threshold: Option<i64>,
    ) -> Result<Self, ValidationError> {
        if low_stock_threshold.is_some_and(|t| !(0..=MAX_ON_HAND).contains(&t)) {
            return Err(ValidationError::new(
                "low_stock_threshold",
                format!("must be between 0 and {MAX_ON_HAND}"),
            ));
        }
        Ok(Self {
            oversell,
            low_stock_threshold,
        })
    }

    /// Whether nothing is set (everything inherits).
    pub fn is_empty(&self) -> bool {
        self.oversell.is_none() && self.low_stock_threshold.is_none()
    }
}

/// The policy of a SKU, as its record keeps it (versioned: every change is a command).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkuPolicy {
    /// The SKU.
    pub sku: Sku,
    /// What it sets.
    pub settings: Settings,
    /// Changes so far, +1 per change.
    pub version: u64,
}

/// The policy a key decides under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Oversell mode.
    pub oversell: Oversell,
    /// Low-stock threshold, if any.
    pub low_stock_threshold: Option<i64>,
}

impl Policy {
    /// Today's behaviour: deny, no threshold.
    pub const DEFAULT: Policy = Policy {
        oversell: Oversell::Deny,
        low_stock_threshold: None,
    };

    /// A key's policy: its location's override, else its SKU's, field by field.
    pub fn effective(location: Option<&Settings>, sku: Option<&Settings>) -> Self {
        let pick = |f: fn(&Settings) -> Option<i64>| location.and_then(f).or(sku.and_then(f));
        Self {
            oversell: location
                .and_then(|s| s.oversell)
                .or(sku.and_then(|s| s.oversell))
                .unwrap_or(Oversell::Deny),
            low_stock_threshold: pick(|s| s.low_stock_threshold),
        }
    }
}

/// A threshold a key crossed with a change (decided on what channels see: availability
/// clamped at zero). One per change, the most telling: out of stock, else back in stock,
/// else low stock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Channels could sell some before, none now.
    OutOfStock,
    /// Channels could sell none before, some now.
    BackInStock,
    /// Available dropped to the low-stock threshold or below (and is above zero).
    LowStock,
}

impl Signal {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::OutOfStock => "out_of_stock",
            Signal::BackInStock => "back_in_stock",
            Signal::LowStock => "low_stock",
        }
    }
}

/// The signal of a change that took channel availability from `before` to `after`
/// (both clamped at zero) under `threshold`.
pub fn crossed(before: i64, after: i64, threshold: Option<i64>) -> Option<Signal> {
    if before > 0 && after == 0 {
        Some(Signal::OutOfStock)
    } else if before == 0 && after > 0 {
        Some(Signal::BackInStock)
    } else {
        let t = threshold?;
        (before > t && after <= t && after > 0).then_some(Signal::LowStock)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_inherit_one_by_one() {
        let sku = Settings {
            oversell: Some(Oversell::Backorder { limit: 5 }),
            low_stock_threshold: Some(3),
        };
        let here = Settings {
            oversell: Some(Oversell::TrackOnly),
            low_stock_threshold: None,
        };
        let p = Policy::effective(Some(&here), Some(&sku));
        assert_eq!(p.oversell, Oversell::TrackOnly);
        assert_eq!(p.low_stock_threshold, Some(3));
        assert_eq!(Policy::effective(None, None), Policy::DEFAULT);
    }

    #[test]
    fn signals_follow_the_crossing() {
        assert_eq!(crossed(3, 0, None), Some(Signal::OutOfStock));
        assert_eq!(crossed(0, 2, Some(5)), Some(Signal::BackInStock));
        assert_eq!(crossed(9, 4, Some(5)), Some(Signal::LowStock));
        assert_eq!(crossed(5, 4, Some(5)), None, "already low");
        assert_eq!(crossed(0, 0, Some(5)), None);
        assert_eq!(crossed(4, 9, Some(5)), None);
    }

    #[test]
    fn modes_parse_with_their_limit_only() {
        assert_eq!(Oversell::parse("deny", None), Ok(Oversell::Deny));
        assert_eq!(
            Oversell::parse("backorder", Some(10)),
            Ok(Oversell::Backorder { limit: 10 })
        );
        assert!(Oversell::parse("backorder", None).is_err());
        assert!(Oversell::parse("deny", Some(1)).is_err());
        assert!(Oversell::parse("maybe", None).is_err());
    }
}
