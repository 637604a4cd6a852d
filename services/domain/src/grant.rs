//! Where a caller may change stock: a store's token names its own locations, and every
//! command it sends may touch only those.
//!
//! The check is part of the decision: a command that names its locations (adjust, reserve)
//! is checked on what it names, and a settlement (confirm, release) on the lines of the
//! reservation as the store loaded it for that very decision, so a reservation created or
//! changed by anyone in between is never settled unchecked.

use std::collections::BTreeSet;

use crate::ids::LocationId;
use crate::refusal::{Answer, Refusal};
use crate::reservation::Reservation;

/// The locations a caller may change stock at.
///
/// Deliberately without a `Default`: every command states its grant, so none runs with
/// [`LocationGrant::Any`] by omission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocationGrant {
    /// Any location: central systems, and internal commands (expiry).
    Any,
    /// Only these (a store's token); an empty set permits none.
    Only(BTreeSet<LocationId>),
}

impl LocationGrant {
    /// Only `locations`.
    pub fn only(locations: impl IntoIterator<Item = LocationId>) -> Self {
        Self::Only(locations.into_iter().collect())
    }

    /// Whether the caller is a store (its token names its locations): only a store records
    /// facts, and a store never changes what holds at every location.
    pub fn is_store(&self) -> bool {
        matches!(self, Self::Only(_))
    }

    /// Whether the caller may change stock at `location`.
    pub fn permits(&self, location: &LocationId) -> bool {
        match self {
            Self::Any => true,
            Self::Only(allowed) => allowed.contains(location),
        }
    }

    /// Refuses `location` unless permitted.
    pub fn check(&self, location: &LocationId) -> Answer<()> {
        if self.permits(location) {
            Ok(())
        } else {
            Err(Refusal::LocationForbidden {
                location: location.clone(),
            })
        }
    }

    /// Refuses the first of `locations` not permitted.
    pub fn check_all<'a>(&self, locations: impl IntoIterator<Item = &'a LocationId>) -> Answer<()> {
        locations.into_iter().try_for_each(|l| self.check(l))
    }

    /// Refuses `reservation` unless every one of its lines is at a permitted location: a
    /// caller settles a reservation only where it may change stock.
    pub fn check_reservation(&self, reservation: &Reservation) -> Answer<()> {
        self.check_all(reservation.lines.iter().map(|l| &l.location))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> LocationId {
        LocationId::parse(s).expect("valid location")
    }

    #[test]
    fn any_permits_everything_and_only_permits_its_set() {
        assert!(LocationGrant::Any.permits(&loc("s9")));
        let store = LocationGrant::only([loc("s1"), loc("s2")]);
        assert!(store.permits(&loc("s1")));
        assert_eq!(
            store.check_all([&loc("s2"), &loc("s3"), &loc("s4")]),
            Err(Refusal::LocationForbidden {
                location: loc("s3")
            }),
            "the first location outside the grant is named"
        );
        assert!(!LocationGrant::only([]).permits(&loc("s1")));
    }
}
