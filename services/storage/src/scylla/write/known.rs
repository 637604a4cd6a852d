//! What this process last knew of each stock partition, so an uncontended command needs no
//! read before its conditional batch.
//!
//! Every change of a partition's level or reservation lines is written by a batch
//! conditioned on the level's version ([`super::partition`]), so a state known at version
//! `v` is still the stored state for as long as the stored version is `v`, and a batch
//! decided on it carries exactly that condition: a stale entry costs one batch that is not
//! applied (then the partition is read as before), never a wrong decision. Refusals and
//! "nothing to do" answers are never given from here; they are decided again on a read.
//!
//! Where another process keeps changing a key, its entries would go stale over and over and
//! each costs a Paxos round: a key whose known state turned out stale is read first for a
//! while ([`DISTRUST_FOR`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use stockflow_domain::{Reservation, StockKey, StockLevel};

/// How long a known state is used after it was last confirmed by a write or a read. Far
/// below any row's TTL (the shortest, a final line's, is a day), so nothing the store
/// drops by itself is still believed here.
const FRESH_FOR: Duration = Duration::from_secs(60);
/// How long a key whose known state was stale is read before every batch.
const DISTRUST_FOR: Duration = Duration::from_secs(10);
/// Keys remembered at most; past this, stale entries go first, then everything. With
/// [`MAX_LINES`] this bounds the memory to a few tens of MB even for large reservations.
const MAX_KEYS: usize = 10_000;
/// Lines remembered per key at most (a hot key sees many reservations); past this, the
/// key's lines are forgotten and read again when needed.
const MAX_LINES: usize = 16;

/// A partition's state as of one version.
#[derive(Debug, Clone)]
pub(crate) struct KnownState {
    /// The stored version the state is valid for (`None`: the partition was never written).
    pub expected: Option<u64>,
    /// The level at that version.
    pub level: StockLevel,
    /// Reservation lines known at that version: `Some` held here, `None` known absent.
    pub lines: BTreeMap<String, Option<Reservation>>,
}

// A stock level (with its extras) is what most of these carry; boxing it would add an
// allocation per command to save a few hundred bytes on short-lived values.
#[allow(clippy::large_enum_variant)]
enum Entry {
    Known { state: KnownState, at: Instant },
    Distrusted { until: Instant },
}

/// The known states of the partitions this process wrote or read.
#[derive(Default)]
pub(crate) struct KnownPartitions {
    entries: Mutex<HashMap<StockKey, Entry>>,
}

impl KnownPartitions {
    /// The state of `key` to decide on without reading, if one is known and trusted.
    pub(crate) fn get(&self, key: &StockKey) -> Option<KnownState> {
        let entries = self.entries.lock().ok()?;
        match entries.get(key)? {
            Entry::Known { state, at } if at.elapsed() < FRESH_FOR => Some(state.clone()),
            _ => None,
        }
    }

    /// Records the state of `key` as written by an applied batch or just read.
    pub(crate) fn put(&self, key: &StockKey, mut state: KnownState) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let now = Instant::now();
        if let Some(Entry::Distrusted { until }) = entries.get(key)
            && *until > now
        {
            return;
        }
        if state.lines.len() > MAX_LINES {
            state.lines.clear();
        }
        if entries.len() >= MAX_KEYS && !entries.contains_key(key) {
            entries.retain(|_, e| match e {
                Entry::Known { at, .. } => at.elapsed() < FRESH_FOR,
                Entry::Distrusted { until } => *until > now,
            });
            if entries.len() >= MAX_KEYS {
                entries.clear();
            }
        }
        entries.insert(key.clone(), Entry::Known { state, at: now });
    }

    /// Forgets `key`'s state: a batch decided on it was not applied, or its outcome is
    /// unknown. `stale` marks the state as outdated by another writer, so the key is read
    /// first for a while.
    pub(crate) fn forget(&self, key: &StockKey, stale: bool) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if stale {
            let until = Instant::now() + DISTRUST_FOR;
            entries.insert(key.clone(), Entry::Distrusted { until });
        } else {
            entries.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockflow_domain::{LocationId, Region, Sku};

    fn key() -> StockKey {
        StockKey::new(
            Sku::parse("SKU-1").expect("sku"),
            LocationId::parse("dc").expect("location"),
        )
    }

    fn state(version: u64) -> KnownState {
        let mut level = StockLevel::empty(
            Sku::parse("SKU-1").expect("sku"),
            LocationId::parse("dc").expect("location"),
            Region::parse("eu").expect("region"),
        );
        level.version = version;
        KnownState {
            expected: Some(version),
            level,
            lines: BTreeMap::new(),
        }
    }

    #[test]
    fn a_written_state_is_known_until_forgotten() {
        let known = KnownPartitions::default();
        assert!(known.get(&key()).is_none());
        known.put(&key(), state(3));
        assert_eq!(known.get(&key()).map(|s| s.expected), Some(Some(3)));
        known.forget(&key(), false);
        assert!(known.get(&key()).is_none());
        known.put(&key(), state(4));
        assert_eq!(known.get(&key()).map(|s| s.level.version), Some(4));
    }

    #[test]
    fn a_stale_key_is_read_first_for_a_while() {
        let known = KnownPartitions::default();
        known.put(&key(), state(3));
        known.forget(&key(), true);
        known.put(&key(), state(5));
        assert!(
            known.get(&key()).is_none(),
            "a key another writer changes is not decided on a remembered state"
        );
    }

    #[test]
    fn a_hot_key_forgets_its_lines_past_the_bound() {
        let known = KnownPartitions::default();
        let mut many = state(1);
        for i in 0..=MAX_LINES {
            many.lines.insert(format!("r{i}"), None);
        }
        known.put(&key(), many);
        let got = known.get(&key()).expect("level still known");
        assert!(got.lines.is_empty());
        assert_eq!(got.level.version, 1);
    }
}
