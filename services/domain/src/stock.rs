//! The stock aggregate of one `(sku, location)` and its quantity rules.
//!
//! Invariant after every applied change: `0 <= reserved <= on_hand <= MAX_ON_HAND`.
//! `version` starts at 0 for a key never written and grows by exactly one per applied change.

use serde::{Deserialize, Serialize};

use crate::command::OnHandChange;
use crate::ids::{LocationId, Region, Sku, StockKey};
use crate::limits::MAX_ON_HAND;
use crate::refusal::{Answer, Refusal, ShortLine};

/// Units that can still be reserved out of `on_hand` when `reserved` are held: the one
/// place `available` is derived (the read models call it too).
pub fn available(on_hand: i64, reserved: i64) -> i64 {
    on_hand - reserved
}

/// Quantities of one SKU at one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockLevel {
    /// The SKU.
    pub sku: Sku,
    /// The location.
    pub location: LocationId,
    /// The location's region, copied so events and read models need no join.
    pub region: Region,
    /// Units physically present.
    pub on_hand: i64,
    /// Units promised to active reservations.
    pub reserved: i64,
    /// Applied changes so far.
    pub version: u64,
}

impl StockLevel {
    /// The state of a key that was never written.
    pub fn empty(sku: Sku, location: LocationId, region: Region) -> Self {
        Self {
            sku,
            location,
            region,
            on_hand: 0,
            reserved: 0,
            version: 0,
        }
    }

    /// The state of `key` as a store finds it never written: empty at a known location
    /// (`region` is the location's, `None` when the location is unknown), else refused.
    pub fn never_written(key: &StockKey, region: Option<Region>) -> Answer<Self> {
        match region {
            Some(region) => Ok(Self::empty(key.sku.clone(), key.location.clone(), region)),
            None => Err(Refusal::LocationNotFound(key.location.clone())),
        }
    }

    /// The key of this level.
    pub fn key(&self) -> StockKey {
        StockKey::new(self.sku.clone(), self.location.clone())
    }

    /// Units that can still be reserved.
    pub fn available(&self) -> i64 {
        available(self.on_hand, self.reserved)
    }

    /// Whether the quantities satisfy the aggregate's invariant.
    pub fn invariant_holds(&self) -> bool {
        0 <= self.reserved && self.reserved <= self.on_hand && self.on_hand <= MAX_ON_HAND
    }

    fn short(&self, requested: i64) -> Refusal {
        Refusal::InsufficientStock {
            lines: vec![ShortLine {
                sku: self.sku.clone(),
                location: self.location.clone(),
                requested,
                available: self.available(),
            }],
        }
    }

    fn next(&self, on_hand: i64, reserved: i64) -> StockLevel {
        StockLevel {
            on_hand,
            reserved,
            version: self.version + 1,
            ..self.clone()
        }
    }

    /// Changes on-hand; refused if it would go negative, below `reserved`, or above the cap.
    pub fn adjust(
        &self,
        change: OnHandChange,
        expected_version: Option<u64>,
    ) -> Result<StockLevel, Refusal> {
        if let Some(expected) = expected_version
            && expected != self.version
        {
            return Err(Refusal::VersionConflict {
                sku: self.sku.clone(),
                location: self.location.clone(),
                expected,
                current: self.version,
            });
        }
        let (on_hand, requested) = match change {
            OnHandChange::Delta(delta) => (self.on_hand + delta, delta),
            OnHandChange::SetOnHand(count) => (count, count - self.on_hand),
        };
        if on_hand < self.reserved || !(0..=MAX_ON_HAND).contains(&on_hand) {
            return Err(self.short(requested));
        }
        Ok(self.next(on_hand, self.reserved))
    }

    /// Holds `qty` units for a reservation; refused when fewer are available.
    pub fn reserve(&self, qty: i64) -> Result<StockLevel, Refusal> {
        if qty <= 0 || qty > self.available() {
            return Err(self.short(qty));
        }
        Ok(self.next(self.on_hand, self.reserved + qty))
    }

    /// Returns `qty` held units to availability (release or expiry).
    ///
    /// Saturates at zero so that a state written by an older, buggy writer can still be
    /// released; with the invariant intact this never saturates.
    pub fn unreserve(&self, qty: i64) -> StockLevel {
        self.next(self.on_hand, (self.reserved - qty).max(0))
    }

    /// Turns `qty` held units into a sale: both on-hand and reserved drop.
    pub fn confirm(&self, qty: i64) -> StockLevel {
        let qty = qty.min(self.reserved).max(0);
        self.next(self.on_hand - qty, self.reserved - qty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(on_hand: i64, reserved: i64) -> StockLevel {
        StockLevel {
            on_hand,
            reserved,
            ..StockLevel::empty(
                Sku::parse("s").unwrap(),
                LocationId::parse("l").unwrap(),
                Region::parse("r").unwrap(),
            )
        }
    }

    #[test]
    fn adjust_refuses_going_below_reserved() {
        let err = level(10, 8).adjust(OnHandChange::Delta(-3), None);
        assert!(matches!(err, Err(Refusal::InsufficientStock { .. })));
        let ok = level(10, 8).adjust(OnHandChange::Delta(-2), None);
        assert_eq!(ok.map(|l| (l.on_hand, l.version)), Ok((8, 1)));
    }

    #[test]
    fn adjust_checks_expected_version() {
        let err = level(10, 0).adjust(OnHandChange::SetOnHand(3), Some(4));
        assert!(matches!(
            err,
            Err(Refusal::VersionConflict { current: 0, .. })
        ));
    }

    #[test]
    fn reserve_confirm_release_keep_the_invariant() {
        let l = level(5, 0);
        let r = l.reserve(5).unwrap();
        assert_eq!(r.available(), 0);
        assert!(r.reserve(1).is_err());
        let c = r.confirm(2);
        assert_eq!((c.on_hand, c.reserved, c.version), (3, 3, 2));
        let u = c.unreserve(3);
        assert_eq!((u.on_hand, u.reserved, u.version), (3, 0, 3));
        assert!(u.invariant_holds());
    }
}
