//! The sales channels a process has read lately, so a reservation naming a channel checks
//! it without a store read per request. An entry is trusted for [`FRESH`]; a channel not
//! known here (or known too long ago) is read from the store, so one defined through
//! another replica is found at once, and a changed one within `FRESH`.
//!
//! Only the check that a channel sells from a location uses this copy; allocations are
//! decided by each key on its own state, so a stale copy never overdraws one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stockflow_domain::{Channel, ChannelId};
use stockflow_storage::ports::WriteStore;

/// How long a channel read from the store is trusted.
pub const FRESH: Duration = Duration::from_secs(2);

/// Channels read lately, with when.
#[derive(Debug, Default)]
pub struct ChannelCache {
    known: Mutex<HashMap<ChannelId, (Instant, Arc<Channel>)>>,
}

impl ChannelCache {
    /// The channel `id`: the copy read within [`FRESH`], else the store's (`None`: no such
    /// channel, never remembered, so a channel defined a moment later is found).
    pub async fn get(
        &self,
        write: &dyn WriteStore,
        id: &ChannelId,
    ) -> stockflow_storage::Result<Option<Arc<Channel>>> {
        if let Some(channel) = self.fresh(id) {
            return Ok(Some(channel));
        }
        let Some(channel) = write.channel(id).await? else {
            return Ok(None);
        };
        Ok(Some(self.learn(channel)))
    }

    /// Remembers `channel` as read (or stored) now.
    pub fn learn(&self, channel: Channel) -> Arc<Channel> {
        let channel = Arc::new(channel);
        if let Ok(mut known) = self.known.lock() {
            known.insert(channel.id.clone(), (Instant::now(), channel.clone()));
        }
        channel
    }

    fn fresh(&self, id: &ChannelId) -> Option<Arc<Channel>> {
        let known = self.known.lock().ok()?;
        let (at, channel) = known.get(id)?;
        (at.elapsed() < FRESH).then(|| channel.clone())
    }
}

#[cfg(test)]
mod tests {
    use stockflow_domain::sourcing::{ChannelLocation, Strategy};
    use stockflow_domain::{Location, LocationId, LocationKind, Region};
    use stockflow_storage::embedded::EmbeddedBackend;

    use super::*;

    fn channel(locations: &[&str]) -> Channel {
        let locations = locations
            .iter()
            .map(|l| ChannelLocation {
                location: LocationId::parse(*l).expect("id"),
                pickup_threshold: 0,
            })
            .collect();
        Channel::new(
            ChannelId::parse("web").expect("id"),
            locations,
            Strategy::Priority,
            true,
        )
        .expect("valid")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unknown_channel_is_read_at_once_and_a_known_one_kept_for_a_while() {
        let dir = tempfile::tempdir().expect("dir");
        let b = EmbeddedBackend::open(dir.path(), 1).expect("backend");
        for l in ["a", "b"] {
            let location = Location {
                id: LocationId::parse(l).expect("id"),
                region: Region::parse("north").expect("region"),
                kind: LocationKind::Store,
                name: l.into(),
            };
            b.write
                .put_location(location)
                .await
                .expect("stored")
                .expect("accepted");
        }
        let cache = ChannelCache::default();
        let id = ChannelId::parse("web").expect("id");
        assert!(cache.get(&*b.write, &id).await.expect("read").is_none());
        // Defined through "another replica" (straight to the store): found at once, since
        // a missing channel is never remembered.
        b.write.put_channel(channel(&["a"])).await.expect("stored");
        let seen = cache
            .get(&*b.write, &id)
            .await
            .expect("read")
            .expect("found");
        assert_eq!(seen.locations.len(), 1);
        // Changed elsewhere: this process keeps its copy while it is fresh.
        b.write
            .put_channel(channel(&["a", "b"]))
            .await
            .expect("stored");
        let kept = cache
            .get(&*b.write, &id)
            .await
            .expect("read")
            .expect("found");
        assert_eq!(kept.locations.len(), 1);
        // A change through this process is known at once.
        let learnt = cache.learn(channel(&["a", "b"]));
        assert_eq!(learnt.locations.len(), 2);
        assert_eq!(
            cache
                .get(&*b.write, &id)
                .await
                .expect("read")
                .expect("found")
                .locations
                .len(),
            2
        );
    }
}
