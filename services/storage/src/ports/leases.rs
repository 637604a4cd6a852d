//! The lease port: shards of a piece of work (outbox shards, topic partitions), each held
//! by one live replica at a time.

use async_trait::async_trait;

use crate::Result;

/// Leases that give each shard of a piece of work (outbox shards, topic partitions) to one
/// live replica at a time. A lease expires `ttl` after it was last taken or renewed, so
/// the shards of a replica that died move to the others.
#[async_trait]
pub trait LeaseStore: Send + Sync + 'static {
    /// Takes `shard` of `group` for `owner` if nobody holds it; true when `owner` holds it
    /// now.
    async fn acquire(&self, group: &str, shard: u32, owner: &str, ttl_secs: u32) -> Result<bool>;
    /// Extends `owner`'s lease; false when it lost the lease (expired and taken by another).
    async fn renew(&self, group: &str, shard: u32, owner: &str, ttl_secs: u32) -> Result<bool>;
    /// Gives `shard` up if `owner` holds it.
    async fn release(&self, group: &str, shard: u32, owner: &str) -> Result<()>;
    /// Records that `member` is alive and competing for `group`'s shards, for `ttl`.
    async fn heartbeat(&self, group: &str, member: &str, ttl_secs: u32) -> Result<()>;
    /// The members of `group` that sent a heartbeat within its `ttl`.
    async fn members(&self, group: &str) -> Result<Vec<String>>;
}
