//! Sales channels: which locations may fulfil a channel's orders (in priority order), how
//! its region-level lines are sourced, and the stock a store must keep before it offers a
//! SKU for pickup.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::{ChannelId, LocationId};
use crate::limits::MAX_LINE_QTY;
use crate::validation::ValidationError;

/// Locations one channel may list: a region's stores and warehouses, with room to spare.
pub const MAX_CHANNEL_LOCATIONS: usize = 256;

/// How the locations of a region-level line are chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The channel's order: the first location with stock gives what it has, then the next.
    #[default]
    Priority,
    /// One location that fills the whole order if any can, else as few as possible.
    FewestSplits,
    /// The location holding the most of each SKU first (evens stock out across a region).
    MostStock,
}

impl Strategy {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Priority => "priority",
            Strategy::FewestSplits => "fewest_splits",
            Strategy::MostStock => "most_stock",
        }
    }

    /// Parses the API spelling.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        match value {
            "priority" => Ok(Strategy::Priority),
            "fewest_splits" => Ok(Strategy::FewestSplits),
            "most_stock" => Ok(Strategy::MostStock),
            other => Err(ValidationError::new(
                "strategy",
                format!("must be priority, fewest_splits or most_stock, got {other:?}"),
            )),
        }
    }
}

/// One location a channel sells from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelLocation {
    /// The location.
    pub location: LocationId,
    /// Units a store keeps for its own counter: pickup is offered only above this.
    #[serde(default)]
    pub pickup_threshold: i64,
}

/// A sales channel: its locations by priority and its sourcing rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    /// The channel's id.
    pub id: ChannelId,
    /// Locations that may fulfil it, highest priority first.
    pub locations: Vec<ChannelLocation>,
    /// How region-level lines are sourced.
    pub strategy: Strategy,
    /// False: a region-level order comes from one location or not at all.
    pub allow_split: bool,
    /// Bumped by each change, so a reader can tell which definition it saw.
    pub version: u64,
}

impl Channel {
    /// Validates a channel definition (its version is the store's to assign).
    pub fn new(
        id: ChannelId,
        locations: Vec<ChannelLocation>,
        strategy: Strategy,
        allow_split: bool,
    ) -> Result<Self, ValidationError> {
        if locations.is_empty() || locations.len() > MAX_CHANNEL_LOCATIONS {
            return Err(ValidationError::new(
                "locations",
                format!(
                    "must list 1-{MAX_CHANNEL_LOCATIONS} locations, got {}",
                    locations.len()
                ),
            ));
        }
        let mut seen = BTreeSet::new();
        for (i, entry) in locations.iter().enumerate() {
            if !seen.insert(&entry.location) {
                return Err(ValidationError::duplicate(
                    format!("locations[{i}].location"),
                    format!("{} is listed twice", entry.location),
                ));
            }
            if !(0..=MAX_LINE_QTY).contains(&entry.pickup_threshold) {
                return Err(ValidationError::new(
                    format!("locations[{i}].pickup_threshold"),
                    format!("must be between 0 and {MAX_LINE_QTY}"),
                ));
            }
        }
        Ok(Self {
            id,
            locations,
            strategy,
            allow_split,
            version: 0,
        })
    }

    /// `self` as stored over `previous` (the stored definition of the same id, if any).
    pub fn revised(mut self, previous: Option<&Channel>) -> Self {
        self.version = previous.map_or(1, |p| p.version + 1);
        self
    }

    /// The priority of `location` in this channel (0 first), if the channel sells from it.
    pub fn rank(&self, location: &LocationId) -> Option<usize> {
        self.locations.iter().position(|l| &l.location == location)
    }

    /// The pickup threshold of `location`, if the channel sells from it.
    pub fn pickup_threshold(&self, location: &LocationId) -> Option<i64> {
        self.locations
            .iter()
            .find(|l| &l.location == location)
            .map(|l| l.pickup_threshold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: &str) -> ChannelLocation {
        ChannelLocation {
            location: LocationId::parse(id).expect("valid id"),
            pickup_threshold: 0,
        }
    }

    #[test]
    fn a_location_listed_twice_is_refused() {
        let id = ChannelId::parse("web").expect("valid id");
        let err = Channel::new(
            id,
            vec![at("a"), at("b"), at("a")],
            Strategy::Priority,
            true,
        )
        .expect_err("duplicate");
        assert_eq!(err.field, "locations[2].location");
    }

    #[test]
    fn versions_count_revisions() {
        let id = ChannelId::parse("web").expect("valid id");
        let first = Channel::new(id, vec![at("a")], Strategy::MostStock, false)
            .expect("valid")
            .revised(None);
        assert_eq!(first.version, 1);
        let second = first.clone().revised(Some(&first));
        assert_eq!(second.version, 2);
        assert_eq!(second.rank(&LocationId::parse("a").expect("id")), Some(0));
    }
}
