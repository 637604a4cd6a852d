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
