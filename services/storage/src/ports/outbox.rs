//! The outbox's port: what the publisher drains, at least once.

use std::collections::BTreeSet;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::Result;

/// One outbox entry waiting to be published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Opaque position in the outbox, used to mark it published.
    pub id: String,
    /// The record key (the SKU).
    pub key: String,
    /// The serialized [`BusEvent`].
    pub payload: Vec<u8>,
    /// When the change happened, Unix milliseconds.
    pub created_at_ms: i64,
}

/// The transactional outbox, drained by the publisher (at least once).
///
/// An outbox is split into [`Outbox::shards`] shards, so several publisher replicas can
/// share it: each reads only the shards it holds a lease on. A key's entries are always in
/// one shard, so one publisher at a time keeps them in order.
#[async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// How many shards the outbox has (1 when one publisher does all the work).
    fn shards(&self) -> u32 {
        1
    }
    /// The oldest unpublished entries, at most `limit`, in commit order per key.
    async fn pending(&self, limit: usize) -> Result<Vec<OutboxEntry>>;
    /// [`Outbox::pending`], restricted to the entries of `shards`.
    async fn pending_in(&self, shards: &BTreeSet<u32>, limit: usize) -> Result<Vec<OutboxEntry>> {
        if shards.contains(&0) {
            self.pending(limit).await
        } else {
            Ok(Vec::new())
        }
    }
    /// Marks entries published; marking an already-marked entry is a no-op.
    async fn mark_published(&self, ids: &[String]) -> Result<()>;
    /// How many entries wait to be published.
    async fn backlog(&self) -> Result<u64>;
    /// Ticks after commits that wrote outbox entries. A hint for low latency: the
    /// publisher marks the value seen before it reads, and still polls on a timer.
    fn subscribe(&self) -> watch::Receiver<u64>;
}
