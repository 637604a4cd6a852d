//! Order sourcing: sales channels, the strategies that choose which locations fill a
//! region-level reservation line, and bundles reserved as their components.
//!
//! A region-level reservation is planned here ([`plan::plan`]) and then made as an
//! ordinary reservation of the chosen keys, decided key by key under each key's policy:
//! sourcing never decides stock by itself, so it cannot oversell.

pub mod bundle;
pub mod channel;
pub mod plan;
pub mod source;

#[cfg(test)]
mod props;

pub use bundle::{Bundle, Component, expand};
pub use channel::{Channel, ChannelLocation, MAX_CHANNEL_LOCATIONS, Strategy};
pub use plan::{Candidate, Demand, Part, Rules, Step, plan};
pub use source::{Offer, Place, lines_of, offers, source};
