//! The lease keeper: holds a fair share of a group's shards (outbox shards for publishers,
//! topic partitions for projectors) and tells its worker which ones, as they change.
//!
//! Every round it sends a heartbeat, renews what it holds, counts the live members, and
//! then gives up shards above its share (so a new replica gets work) or takes free ones
//! below it (so a dead replica's shards move once their leases expire). A lease whose
//! renewal could not be confirmed is kept only while its last confirmed renewal still
//! covers it; a worker may briefly overlap with the next owner, which at-least-once
//! publishing and version-guarded projection make harmless.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockflow_storage::ports::LeaseStore;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The shards a worker holds now.
pub type Owned = watch::Receiver<BTreeSet<u32>>;

/// Runs one task per partition of `owned` (below `partitions`) until `shutdown`: starts
/// `spawn(partition, revoked)` for each partition this replica gains, cancels `revoked`
/// and waits for the task of each it loses, and at shutdown waits for every task. `what`
/// names the work in the log ("projecting", "delivering webhooks of").
pub async fn run_owned_partitions(
    mut owned: Owned,
    partitions: u32,
    shutdown: &CancellationToken,
    what: &'static str,
    mut spawn: impl FnMut(u32, CancellationToken) -> tokio::task::JoinHandle<()>,
) {
    let mut running: BTreeMap<u32, (CancellationToken, tokio::task::JoinHandle<()>)> =
        BTreeMap::new();
    loop {
        let wanted = owned.borrow_and_update().clone();
        let lost: Vec<u32> = running
            .keys()
            .copied()
            .filter(|p| !wanted.contains(p))
            .collect();
        for partition in lost {
            if let Some((revoked, task)) = running.remove(&partition) {
                revoked.cancel();
                let _ = task.await;
                tracing::info!(partition, "stopped {what} a partition");
            }
        }
        for &partition in &wanted {
            if running.contains_key(&partition) || partition >= partitions {
                continue;
            }
            let revoked = CancellationToken::new();
            let task = spawn(partition, revoked.clone());
            running.insert(partition, (revoked, task));
        }
        tokio::select! {
            Ok(()) = owned.changed() => {}
            _ = shutdown.cancelled() => break,
        }
    }
    for (_, (_, task)) in running {
        let _ = task.await;
    }
}

/// What to keep leases on.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The group, e.g. `publisher` or `projector:<topic>`.
    pub group: String,
    /// How many shards the group has.
    pub shards: u32,
    /// This replica's unique name.
    pub member: String,
    /// How long a lease lasts without renewal: how fast a dead replica's shards move.
    pub ttl: Duration,
    /// How often leases are renewed.
    pub renew_every: Duration,
}

/// How long a lease lasts without renewal: a dead replica's shards move to the others
/// within this, and a replica paused longer than it loses them.
pub const LEASE_TTL: Duration = Duration::from_secs(6);
/// How often a held lease is renewed: four renewals per TTL, so one or two slow store
/// round trips never let a live replica's lease lapse.
pub const LEASE_RENEW_EVERY: Duration = Duration::from_millis(1500);

impl LeaseConfig {
    /// Defaults: [`LEASE_TTL`] leases renewed every [`LEASE_RENEW_EVERY`].
    pub fn new(group: impl Into<String>, shards: u32, member: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            shards,
            member: member.into(),
            ttl: LEASE_TTL,
            renew_every: LEASE_RENEW_EVERY,
        }
    }
}

/// Every shard, for a process that is the only one doing the work. The set never changes
/// (its sender is gone, so `changed()` answers at once with an error: wait on something
/// else).
pub fn all_shards(shards: u32) -> Owned {
    watch::channel((0..shards).collect()).1
}

/// Starts keeping leases; the set of held shards is published on the returned channel.
/// Once `shutdown` is cancelled every lease is released and the set becomes empty.
pub fn spawn(
    store: Arc<dyn LeaseStore>,
    config: LeaseConfig,
    shutdown: CancellationToken,
) -> (Owned, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(BTreeSet::new());
    let task = tokio::spawn(keep(store, config, tx, shutdown));
    (rx, task)
}

/// The share each of `members` replicas should hold.
fn fair_share(shards: u32, members: usize) -> usize {
    let members = members.max(1);
    (shards as usize).div_ceil(members)
}

async fn keep(
    store: Arc<dyn LeaseStore>,
    config: LeaseConfig,
    tx: watch::Sender<BTreeSet<u32>>,
    shutdown: CancellationToken,
) {
    let ttl_secs = u32::try_from(config.ttl.as_secs().max(1)).unwrap_or(u32::MAX);
    // The last time each held lease was confirmed.
    let mut held: BTreeMap<u32, Instant> = BTreeMap::new();
    // Where this member starts looking for free shards, so members do not all race for 0.
    let start = stockflow_domain::partition_for_key(config.member.as_bytes(), config.shards.max(1));
    let mut every = tokio::time::interval(config.renew_every);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        if let Err(e) = store
            .heartbeat(&config.group, &config.member, ttl_secs)
            .await
        {
            tracing::warn!(group = %config.group, error = %e, "lease heartbeat failed");
        }
        for shard in held.keys().copied().collect::<Vec<_>>() {
            match store
                .renew(&config.group, shard, &config.member, ttl_secs)
                .await
            {
                Ok(true) => {
                    held.insert(shard, Instant::now());
                }
                Ok(false) => {
                    tracing::warn!(group = %config.group, shard, "lease lost to another replica");
                    held.remove(&shard);
                }
                Err(e) => {
                    let confirmed = held.get(&shard).copied().unwrap_or_else(Instant::now);
                    if confirmed.elapsed() + config.renew_every >= config.ttl {
                        tracing::warn!(group = %config.group, shard, error = %e, "cannot renew a lease before it expires; giving it up");
                        held.remove(&shard);
                    } else {
                        tracing::debug!(group = %config.group, shard, error = %e, "lease renewal failed; retrying");
                    }
                }
            }
        }
        let members = match store.members(&config.group).await {
            Ok(m) => m.len() + usize::from(!m.contains(&config.member)),
            // Unknown: keep what we hold, take nothing more.
            Err(_) => held.len().max(1),
        };
        let share = fair_share(config.shards, members);
        while held.len() > share {
            let Some((&shard, _)) = held.iter().next_back() else {
                break;
            };
            held.remove(&shard);
            if let Err(e) = store.release(&config.group, shard, &config.member).await {
                tracing::debug!(group = %config.group, shard, error = %e, "cannot release a lease; it will expire");
            }
        }
        for i in 0..config.shards {
            if held.len() >= share {
                break;
            }
            let shard = (start + i) % config.shards;
            if held.contains_key(&shard) {
                continue;
            }
            match store
                .acquire(&config.group, shard, &config.member, ttl_secs)
                .await
            {
                Ok(true) => {
                    held.insert(shard, Instant::now());
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(group = %config.group, shard, error = %e, "cannot take a lease");
                }
            }
        }
        let now: BTreeSet<u32> = held.keys().copied().collect();
        tx.send_if_modified(|current| {
            if *current == now {
                return false;
            }
            tracing::info!(group = %config.group, shards = ?now, members, "holding shards");
            metrics::gauge!("stockflow_leases_held", "group" => config.group.clone())
                .set(now.len() as f64);
            *current = now;
            true
        });
    }
    tx.send_replace(BTreeSet::new());
    for shard in held.into_keys() {
        if let Err(e) = store.release(&config.group, shard, &config.member).await {
            tracing::debug!(group = %config.group, shard, error = %e, "cannot release a lease at shutdown; it will expire");
        }
    }
    tracing::info!(group = %config.group, "leases released");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_covers_every_shard() {
        assert_eq!(fair_share(16, 1), 16);
        assert_eq!(fair_share(16, 2), 8);
        assert_eq!(fair_share(16, 3), 6);
        assert_eq!(fair_share(8, 0), 8);
        assert_eq!(fair_share(3, 5), 1);
    }
}
