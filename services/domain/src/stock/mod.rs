//! The stock aggregate of one `(sku, location)`: its quantities and their rules.
//!
//! `on_hand` (physical) = `available` + `reserved` + `damaged` + `quality_hold` +
//! `safety_stock`; `available` is derived ([`Quantities::available`]) and never stored.
//! `incoming` (purchase-order lines and transfers in transit) is not on hand.
//!
//! Invariants after every applied change: `reserved`, `damaged`, `quality_hold`,
//! `safety_stock` and every incoming line are non-negative; `|on_hand| <= MAX_ON_HAND`;
//! backordered units never exceed what `available` is short of
//! (`Σ backorders <= max(0, -available)`, restored by filling the oldest first); a command
//! decided under an oversell policy leaves `available` no lower than the policy allows,
//! unless it was already lower. Only a recorded fact (a sale at a till) or a `track_only`
//! key takes `on_hand` below zero. `version` starts at 0 for a key never written and grows
//! by exactly one per applied change.
//!
//! The rules themselves are in [`rules`], channels' allocations in [`allocation`]; the
//! stored extras in [`Extras`].

mod allocation;
#[cfg(test)]
mod allocation_tests;
mod rules;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use allocation::{Allocation, Cap, ChannelShare, MAX_ALLOCATIONS, available_to_channel};

use crate::ids::{ChannelId, LocationId, Region, ReservationId, Sku, StockKey};
use crate::limits::MAX_ON_HAND;
use crate::policy::{Policy, Settings};
use crate::quantity::{Backorder, Dated, Filled, Incoming, by_date};
use crate::refusal::{Answer, Refusal, ShortLine};

/// The quantities of a key, as events and read models carry them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quantities {
    /// Units physically present (negative only after an oversold fact).
    pub on_hand: i64,
    /// Units promised to active reservations.
    pub reserved: i64,
    /// Broken units.
    pub damaged: i64,
    /// Units held for inspection.
    pub quality_hold: i64,
    /// Units kept back from channels.
    pub safety_stock: i64,
}

impl Quantities {
    /// What is left to sell: the one place `available` is derived (the read models call
    /// it too). Negative when a policy or a recorded fact took more than there was.
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved - self.damaged - self.quality_hold - self.safety_stock
    }

    /// What channels are shown: never below zero.
    pub fn channel_available(&self) -> i64 {
        self.available().max(0)
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// What a key holds besides on-hand, reserved and its version: kept by the stores as one
/// document (a key without it reads as zeros and no policy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extras {
    /// Broken units.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub damaged: i64,
    /// Units held for inspection.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub quality_hold: i64,
    /// Units kept back from channels.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub safety_stock: i64,
    /// Open incoming lines (purchase orders, transfers in transit).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incoming: Vec<Incoming>,
    /// Backordered reservation units, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backorders: Vec<Backorder>,
    /// This location's policy override.
    #[serde(default, skip_serializing_if = "Settings::is_empty")]
    pub policy: Settings,
    /// Channels' ring-fences and caps here.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub allocations: BTreeMap<ChannelId, Allocation>,
    /// Units each channel's active reservations hold here (channels holding none are
    /// left out); what the allocations are decided against.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub channel_held: BTreeMap<ChannelId, i64>,
}

impl Extras {
    /// Whether there is nothing to keep (a key as it was before these states existed).
    pub fn is_empty(&self) -> bool {
        *self == Extras::default()
    }

    /// The stored form: `None` when empty, so a plain key costs nothing.
    pub fn to_stored(&self) -> Result<Option<String>, serde_json::Error> {
        if self.is_empty() {
            return Ok(None);
        }
        serde_json::to_string(self).map(Some)
    }

    /// Reads the stored form back (`None`: nothing stored).
    pub fn from_stored(stored: Option<&str>) -> Result<Self, serde_json::Error> {
        match stored {
            None | Some("") => Ok(Self::default()),
            Some(text) => serde_json::from_str(text),
        }
    }
}

/// The SKU's policy settings a store attaches to a level it loaded, so the decision sees
/// the effective policy. Not stored with the level and not part of its identity (equal
/// levels stay equal whatever is attached).
#[derive(Debug, Clone, Copy, Default)]
pub struct Attached(pub Option<Settings>);

impl PartialEq for Attached {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Attached {}

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
    /// The other states, incoming lines, backorders and the location's policy override.
    #[serde(default, skip_serializing_if = "Extras::is_empty")]
    pub extras: Extras,
    /// The SKU's policy, as the store found it for this decision.
    #[serde(skip)]
    pub sku_policy: Attached,
}

/// A level after a change, with the backorders the change filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Next {
    /// The level, one version up.
    pub level: StockLevel,
    /// Backordered units the change covered, oldest first.
    pub filled: Vec<Filled>,
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
            extras: Extras::default(),
            sku_policy: Attached::default(),
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

    /// This level with the SKU's policy `settings` attached.
    pub fn with_sku_policy(mut self, settings: Option<Settings>) -> Self {
        self.sku_policy = Attached(settings);
        self
    }

    /// The key of this level.
    pub fn key(&self) -> StockKey {
        StockKey::new(self.sku.clone(), self.location.clone())
    }

    /// The quantities.
    pub fn quantities(&self) -> Quantities {
        Quantities {
            on_hand: self.on_hand,
            reserved: self.reserved,
            damaged: self.extras.damaged,
            quality_hold: self.extras.quality_hold,
            safety_stock: self.extras.safety_stock,
        }
    }

    /// Units that can still be reserved (negative when oversold or backordered).
    pub fn available(&self) -> i64 {
        self.quantities().available()
    }

    /// What channels are shown.
    pub fn channel_available(&self) -> i64 {
        self.quantities().channel_available()
    }

    /// Units one reservation line could hold here now under the key's policy: what is
    /// available under `deny`, down to the backorder limit under `backorder`, and the
    /// largest line under `track_only`.
    pub fn reservable(&self) -> i64 {
        if self.extras.backorders.len() >= crate::limits::MAX_BACKORDERS {
            // A key holding as many backorders as it may takes no new one.
            return self.channel_available();
        }
        match self.policy().oversell {
            crate::policy::Oversell::Deny => self.channel_available(),
            crate::policy::Oversell::Backorder { limit } => (self.available() + limit).max(0),
            crate::policy::Oversell::TrackOnly => crate::limits::MAX_LINE_QTY,
        }
    }

    /// Units backordered, all reservations together.
    pub fn backordered(&self) -> i64 {
        self.extras.backorders.iter().map(|b| b.qty).sum()
    }

    /// Units backordered for reservation `id`.
    pub fn backordered_for(&self, id: &ReservationId) -> i64 {
        self.extras
            .backorders
            .iter()
            .filter(|b| b.reservation_id == *id)
            .map(|b| b.qty)
            .sum()
    }

    /// Units short that no policy accounts for: `available` below zero beyond the
    /// backordered units (what a recorded sale oversold).
    pub fn shortfall(&self) -> i64 {
        (-self.available() - self.backordered()).max(0)
    }

    /// Units expected, all sources together.
    pub fn incoming_total(&self) -> i64 {
        self.extras.incoming.iter().map(|i| i.qty).sum()
    }

    /// Units in transit from other locations.
    pub fn in_transit(&self) -> i64 {
        self.extras
            .incoming
            .iter()
            .filter(|i| i.in_transit())
            .map(|i| i.qty)
            .sum()
    }

    /// Units of transfer `id` in transit here.
    pub fn in_transit_of(&self, id: &crate::ids::TransferId) -> i64 {
        let source = crate::quantity::Source::Transfer(id.clone());
        self.extras
            .incoming
            .iter()
            .filter(|i| i.source == source)
            .map(|i| i.qty)
            .sum()
    }

    /// Incoming units by day, earliest first.
    pub fn incoming_by_date(&self) -> Vec<Dated> {
        by_date(&self.extras.incoming)
    }

    /// The policy this key decides under.
    pub fn policy(&self) -> Policy {
        let here = Some(&self.extras.policy).filter(|s| !s.is_empty());
        Policy::effective(here, self.sku_policy.0.as_ref())
    }

    /// Whether the quantities satisfy the aggregate's invariants (see the module docs).
    pub fn invariant_holds(&self) -> bool {
        let e = &self.extras;
        0 <= self.reserved
            && 0 <= e.damaged
            && 0 <= e.quality_hold
            && 0 <= e.safety_stock
            && self.on_hand.abs() <= MAX_ON_HAND
            && e.incoming.iter().all(|i| i.qty > 0)
            && e.backorders.iter().all(|b| b.qty > 0)
            && self.backordered() <= (-self.available()).max(0)
            && e.channel_held.values().all(|held| *held > 0)
            && e.channel_held.values().sum::<i64>() <= self.reserved
    }

    /// The refusal of asking `requested` of this key.
    pub(crate) fn short(&self, requested: i64) -> Refusal {
        Refusal::InsufficientStock {
            lines: vec![self.short_line(requested)],
        }
    }

    /// The line of a refusal asking `requested` here (what channels are shown available).
    pub fn short_line(&self, requested: i64) -> ShortLine {
        ShortLine {
            sku: self.sku.clone(),
            location: self.location.clone(),
            requested,
            available: self.channel_available(),
        }
    }

    /// The level one version up after `change`, with backorders filled from the oldest as
    /// far as `available` allows now.
    pub(crate) fn next(&self, change: impl FnOnce(&mut StockLevel)) -> Next {
        let mut level = StockLevel {
            version: self.version + 1,
            ..self.clone()
        };
        change(&mut level);
        let filled = level.fill_backorders();
        Next { level, filled }
    }

    /// Covers backordered units, oldest first, until no more are backordered than
    /// `available` is short of.
    fn fill_backorders(&mut self) -> Vec<Filled> {
        let cap = (-self.available()).max(0);
        let mut excess = self.backordered() - cap;
        let mut filled = Vec::new();
        for b in &mut self.extras.backorders {
            if excess <= 0 {
                break;
            }
            let qty = b.qty.min(excess);
            b.qty -= qty;
            excess -= qty;
            filled.push(Filled {
                reservation_id: b.reservation_id.clone(),
                qty,
            });
        }
        self.extras.backorders.retain(|b| b.qty > 0);
        filled
    }
}

#[cfg(test)]
mod tests;
