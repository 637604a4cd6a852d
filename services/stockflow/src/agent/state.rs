//! What the agent's handlers and tasks share: the store, the link to the region, the
//! feed's progress, and the settings the API checks.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::feed::FeedState;
use super::forward::Link;
use super::region::Region;
use super::store::AgentStore;

/// What the handlers share.
#[derive(Clone)]
pub struct AgentState {
    /// The agent's store.
    pub store: AgentStore,
    /// The store this agent serves.
    pub store_id: String,
    /// Its locations: commands elsewhere are refused.
    pub locations: Arc<BTreeSet<String>>,
    /// The link to the region.
    pub link: Arc<Link>,
    /// The change feed's progress.
    pub feed: Arc<Mutex<FeedState>>,
    /// The region (its clock offset).
    pub region: Arc<Region>,
    /// Wakes the forwarder after a new command.
    pub wake: Arc<Notify>,
    /// The size the store may take on disk: past 80% the status warns, past 95% only
    /// sales and returns are taken.
    pub disk_cap_bytes: u64,
    /// When the agent started, Unix ms.
    pub started_ms: i64,
    /// Times the status page was served (it reloads itself; tests count the reloads).
    pub page_views: Arc<std::sync::atomic::AtomicU64>,
}
