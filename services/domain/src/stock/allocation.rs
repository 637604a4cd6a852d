//! Channel allocations at one key: a **ring-fence** keeps units of the key for one sales
//! channel (no other channel, and no reservation without a channel, may take them), a
//! **cap** bounds what one channel may hold at the key at once ("the marketplace may hold
//! at most 20% of DC-1").
//!
//! Both are decided here, on the key's own state, so they are exact under races on every
//! backend: the key counts the units each channel holds ([`Extras::channel_held`]), bumped
//! and dropped by the same change that reserves or settles the units.
//!
//! A fence is a standing quantity: the units its channel holds count against it, and a
//! sale does not use it up (the store keeps its fence of what is left). Fences bind
//! while units are on the shelf: under `backorder`, another channel may not backorder
//! while fenced units remain; a `track_only` key counts nothing and refuses nothing, so
//! neither fences nor caps bind there.
//!
//! [`Extras::channel_held`]: super::Extras::channel_held

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::StockLevel;
use crate::ids::ChannelId;
use crate::limits::MAX_LINE_QTY;
use crate::policy::Oversell;
use crate::refusal::{Answer, Refusal};
use crate::validation::ValidationError;

/// Allocations one key may hold: one per channel, a few channels per store.
pub const MAX_ALLOCATIONS: usize = 32;

/// The most a channel may hold at a key at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Cap {
    /// At most this many units.
    Units(i64),
    /// At most this share of on-hand, in percent (rounded down).
    Percent(i64),
}

/// One channel's allocation at one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Allocation {
    /// Units kept for the channel: no other channel may take them.
    #[serde(default)]
    pub ring_fence: i64,
    /// The most the channel may hold here at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<Cap>,
}

impl Allocation {
    /// Validates an allocation: a fence of 0–1,000,000 units, a cap of 0–1,000,000 units
    /// or 0–100 percent, and at least one of them.
    pub fn new(ring_fence: i64, cap: Option<Cap>) -> Result<Self, ValidationError> {
        if !(0..=MAX_LINE_QTY).contains(&ring_fence) {
            return Err(ValidationError::new(
                "ring_fence",
                format!("must be between 0 and {MAX_LINE_QTY}"),
            ));
        }
        match cap {
            Some(Cap::Units(n)) if !(0..=MAX_LINE_QTY).contains(&n) => {
                return Err(ValidationError::new(
                    "cap_units",
                    format!("must be between 0 and {MAX_LINE_QTY}"),
                ));
            }
            Some(Cap::Percent(p)) if !(0..=100).contains(&p) => {
                return Err(ValidationError::new(
                    "cap_percent",
                    "must be between 0 and 100",
                ));
            }
            _ => {}
        }
        if ring_fence == 0 && cap.is_none() {
            return Err(ValidationError::new(
                "ring_fence",
                "an allocation needs a ring_fence above 0, a cap, or both",
            ));
        }
        Ok(Self { ring_fence, cap })
    }
}

/// What one channel's allocation at a key amounts to now, as reads and events show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChannelShare {
    /// The channel.
    pub channel: ChannelId,
    /// Its allocation here, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation: Option<Allocation>,
    /// Units its active reservations hold here.
    pub held: i64,
    /// Units it may still reserve here: what is available, less other channels' fences,
    /// within its cap.
    pub available: i64,
}

/// What a reservation for one channel may take at a key, as the key's allocations say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Room {
    /// Units of other channels' ring-fences their channels do not hold.
    fenced: i64,
    /// Units the channel may still hold under its cap (`None`: no cap binds).
    cap: Option<i64>,
}

impl Room {
    /// The rule, once: over each allocated channel's `(channel, allocation, held)`.
    fn of<'a>(
        on_hand: i64,
        allocated: impl Iterator<Item = (&'a ChannelId, &'a Allocation, i64)>,
        channel: Option<&ChannelId>,
    ) -> Self {
        let mut room = Room {
            fenced: 0,
            cap: None,
        };
        for (c, a, held) in allocated {
            if Some(c) == channel {
                room.cap = a.cap.map(|cap| (cap.units(on_hand) - held).max(0));
            } else {
                room.fenced += (a.ring_fence - held).max(0);
            }
        }
        room
    }

    /// Units a reservation may take from `available` on the shelf within this room.
    fn shelf(self, available: i64) -> i64 {
        let unfenced = (available - self.fenced).max(0);
        self.cap.map_or(unfenced, |cap| unfenced.min(cap))
    }
}

impl Cap {
    /// The cap in units at a key holding `on_hand`.
    pub fn units(self, on_hand: i64) -> i64 {
        match self {
            Cap::Units(n) => n,
            Cap::Percent(p) => on_hand.max(0) * p / 100,
        }
    }
}

/// Units a reservation for `channel` (`None`: for no channel) may take from the shelf of a
/// key with `available` units, holding `on_hand`, whose channels' shares are `shares`:
/// what a read model answers from its row (the same rule the key decides by).
pub fn available_to_channel(
    available: i64,
    on_hand: i64,
    shares: &[ChannelShare],
    channel: Option<&ChannelId>,
) -> i64 {
    let allocated = shares
        .iter()
        .filter_map(|s| s.allocation.as_ref().map(|a| (&s.channel, a, s.held)));
    Room::of(on_hand, allocated, channel).shelf(available)
}

impl StockLevel {
    /// Units `channel`'s active reservations hold here.
    pub fn held_for(&self, channel: &ChannelId) -> i64 {
        self.extras.channel_held.get(channel).copied().unwrap_or(0)
    }

    fn room(&self, channel: Option<&ChannelId>) -> Room {
        let allocated = self
            .extras
            .allocations
            .iter()
            .map(|(c, a)| (c, a, self.held_for(c)));
        Room::of(self.on_hand, allocated, channel)
    }

    /// Units of other channels' ring-fences not held by them: what a reservation for
    /// `channel` (`None`: for no channel) may not take.
    pub fn fenced_from(&self, channel: Option<&ChannelId>) -> i64 {
        self.room(channel).fenced
    }

    /// The cap of `channel` here in units, if it has one (a percentage of on-hand now).
    pub fn cap_of(&self, channel: &ChannelId) -> Option<i64> {
        let cap = self.extras.allocations.get(channel)?.cap?;
        Some(cap.units(self.on_hand))
    }

    /// Units a reservation for `channel` (`None`: for no channel) may take from the shelf
    /// now: what channels are shown, less other channels' fences, within its cap.
    pub fn available_to(&self, channel: Option<&ChannelId>) -> i64 {
        self.room(channel).shelf(self.available())
    }

    /// Units one line for `channel` could hold here now: [`StockLevel::reservable`]
    /// within the channel's allocations.
    pub fn reservable_to(&self, channel: Option<&ChannelId>) -> i64 {
        let policy = self.reservable();
        if self.policy().oversell == Oversell::TrackOnly {
            return policy;
        }
        let room = self.room(channel);
        let mut reservable = policy;
        if room.fenced > 0 && self.available() > 0 {
            // Fenced units are on the shelf: no backorder past them.
            reservable = reservable.min((self.available() - room.fenced).max(0));
        }
        room.cap.map_or(reservable, |cap| reservable.min(cap))
    }

    /// Refuses a line of `qty` for `channel` that would take fenced units of another
    /// channel from the shelf or go past the channel's cap (the policy's own limit is
    /// checked by the caller). A `track_only` key refuses nothing.
    pub(super) fn within_allocations(&self, qty: i64, channel: Option<&ChannelId>) -> Answer<()> {
        if self.policy().oversell == Oversell::TrackOnly {
            return Ok(());
        }
        let room = self.room(channel);
        let from_shelf = qty.min(self.available().max(0));
        let unfenced = (self.available() - room.fenced).max(0);
        if from_shelf > unfenced || room.cap.is_some_and(|cap| qty > cap) {
            return Err(Refusal::InsufficientStock {
                lines: vec![self.short_line_to(qty, channel)],
            });
        }
        Ok(())
    }

    /// The line of a refusal asking `requested` here for `channel`.
    pub fn short_line_to(
        &self,
        requested: i64,
        channel: Option<&ChannelId>,
    ) -> crate::refusal::ShortLine {
        crate::refusal::ShortLine {
            available: self.available_to(channel),
            ..self.short_line(requested)
        }
    }

    /// Every channel with an allocation or a hold here, with what it may still take.
    pub fn channel_shares(&self) -> Vec<ChannelShare> {
        let mut channels: BTreeMap<&ChannelId, ()> = BTreeMap::new();
        channels.extend(self.extras.allocations.keys().map(|c| (c, ())));
        channels.extend(self.extras.channel_held.keys().map(|c| (c, ())));
        channels
            .into_keys()
            .map(|c| ChannelShare {
                channel: c.clone(),
                allocation: self.extras.allocations.get(c).copied(),
                held: self.held_for(c),
                available: self.available_to(Some(c)),
            })
            .collect()
    }

    /// Counts `qty` more units held for `channel` (none: nothing to count).
    pub(super) fn hold_for(&mut self, channel: Option<&ChannelId>, qty: i64) {
        if let Some(c) = channel {
            *self.extras.channel_held.entry(c.clone()).or_default() += qty;
        }
    }

    /// Counts `qty` units `channel` no longer holds (released, expired or sold).
    /// Saturates at zero, like `reserved`, for a state an older writer left.
    pub(super) fn unhold_for(&mut self, channel: Option<&ChannelId>, qty: i64) {
        let Some(c) = channel else { return };
        if let Some(held) = self.extras.channel_held.get_mut(c) {
            *held -= qty.min(*held);
            if *held == 0 {
                self.extras.channel_held.remove(c);
            }
        }
    }

    /// Sets (`Some`) or removes (`None`) `channel`'s allocation here.
    pub(crate) fn allocate(
        &self,
        channel: &ChannelId,
        allocation: Option<Allocation>,
    ) -> Answer<super::Next> {
        let known = self.extras.allocations.contains_key(channel);
        if allocation.is_some() && !known && self.extras.allocations.len() >= MAX_ALLOCATIONS {
            return Err(Refusal::LimitReached {
                what: format!("channel allocations at {}", self.key()),
                limit: MAX_ALLOCATIONS as u64,
            });
        }
        Ok(self.next(|l| match allocation {
            Some(a) => {
                l.extras.allocations.insert(channel.clone(), a);
            }
            None => {
                l.extras.allocations.remove(channel);
            }
        }))
    }
}
