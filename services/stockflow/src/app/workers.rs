//! The background workers a process runs, spawned by what its configuration asks for:
//! retention, the publisher, expiry, webhook delivery and the projectors (with the
//! edge-cache purge that follows them), with the leases that split their shards among
//! replicas over a shared store and bus.

use stockflow_bus::EventLog;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{AppConfig, Backend, BusConfig, LocalData};
use crate::workers::leases::{self, LeaseConfig, Owned};
use crate::workers::projector::ProjectorHandle;
use crate::workers::{edge_purge, expirer, projector, publisher, retention, webhooks};

/// The spawned workers, in the stages a shutdown stops them in.
pub(super) struct Spawned {
    /// Stops everything that produces events (retention, publisher, expiry).
    pub producers: CancellationToken,
    pub producer_jobs: Vec<JoinHandle<()>>,
    /// Stops the projectors, which drain the log first.
    pub projecting: CancellationToken,
    pub projector_job: Option<JoinHandle<()>>,
    /// Stops the edge purge, once the projectors have drained (their last changes are
    /// purged too).
    pub purging: CancellationToken,
    pub purge_job: Option<JoinHandle<()>>,
    /// Releases the leases, once the workers using them have drained.
    pub releasing: CancellationToken,
    pub lease_jobs: Vec<JoinHandle<()>>,
}

/// Spawns the workers `config` asks for over `backend`.
pub(super) fn spawn(
    config: &AppConfig,
    backend: &Backend,
    expiry_handle: &expirer::ExpiryHandle,
    projector_handle: ProjectorHandle,
) -> Spawned {
    // Leases outlive the workers using them: released only once those have drained.
    let releasing = CancellationToken::new();
    let mut lease_jobs = Vec::new();
    // Replicas of one write store take turns at expiry, whatever the bus: the store is
    // what they share.
    let expiry_turn = match (&backend.leases, config.workers.expire) {
        (Some(store), true) => {
            let (turn, job) = leases::spawn(
                store.clone(),
                LeaseConfig::new(expirer::LEASE_GROUP, 1, config.member.clone()),
                releasing.clone(),
            );
            lease_jobs.push(job);
            (turn, expirer::RESCAN_SHARED)
        }
        _ => (leases::all_shards(1), expirer::RESCAN_ALONE),
    };
    // Replicas split the work only over a bus they share: with the embedded log each
    // process publishes everything it can see into its own log and projects all of it.
    let shared = match (&backend.leases, &config.bus) {
        (Some(store), BusConfig::Kafka(_) | BusConfig::Fluvio(_)) => Some(store.clone()),
        _ => None,
    };
    let mut owned = |group: String, shards: u32| -> Owned {
        match &shared {
            None => leases::all_shards(shards),
            Some(store) => {
                let (owned, job) = leases::spawn(
                    store.clone(),
                    LeaseConfig::new(group, shards, config.member.clone()),
                    releasing.clone(),
                );
                lease_jobs.push(job);
                owned
            }
        }
    };
    // Two stages: first everything that produces events, then the projectors, which drain
    // the log before they stop.
    let producers = CancellationToken::new();
    let projecting = CancellationToken::new();
    let workers = config.workers;
    let local_log = match &backend.local {
        LocalData::Embedded(b) => Some(b.log.clone()),
        LocalData::Log { log, .. } => Some(log.clone()),
        LocalData::Nothing => None,
    };
    let retention_targets = retention::Targets {
        write: backend.write.clone(),
        read: workers.project.then(|| backend.read.clone()),
        // Only a log this process reads from (one it publishes to and projects from).
        log: local_log
            .filter(|local| {
                backend
                    .log
                    .as_ref()
                    .is_some_and(|l| l.identity() == local.identity())
            })
            .map(|log| retention::LocalLog {
                consumer: workers.project.then(|| projector::consumer_for(&*log)),
                log,
            }),
    };
    let mut producer_jobs = vec![tokio::spawn(retention::run(
        retention_targets,
        config.retention,
        producers.clone(),
    ))];
    if let (true, Some(log)) = (workers.publish, &backend.log) {
        let shards = owned("publisher".into(), backend.outbox.shards());
        producer_jobs.push(tokio::spawn(publisher::run(
            backend.outbox.clone(),
            log.clone(),
            config.publisher.clone(),
            shards,
            producers.clone(),
        )));
    }
    if workers.expire {
        let (turn, rescan) = expiry_turn;
        producer_jobs.push(tokio::spawn(expirer::run(
            backend.write.clone(),
            expiry_handle.clone(),
            turn,
            rescan,
            producers.clone(),
        )));
    }
    let purging = CancellationToken::new();
    let mut purge_job = None;
    // Webhook delivery stops with the producers: its cursors are durable, so what it has
    // not delivered at shutdown is delivered after the restart.
    if let (true, Some(log)) = (workers.webhooks, &backend.log) {
        let store = &backend.webhooks;
        let partitions = owned(webhooks::lease_group(&**log), log.partitions());
        producer_jobs.push(tokio::spawn(webhooks::run(
            log.clone(),
            store.clone(),
            config.webhooks.clone(),
            partitions,
            producers.clone(),
        )));
    }
    let projector_job = match (workers.project, &backend.log) {
        (true, Some(log)) => {
            let partitions = owned(format!("projector:{}", log.identity()), log.partitions());
            let mut projector_config = config.projector.clone();
            projector_config.consumer = projector::consumer_for(&**log);
            projector_config.replica = config.member.clone();
            if let Some(purge) = &config.edge_cache.purge {
                let queue = edge_purge::PurgeQueue::new(purge.capacity);
                projector_config.edge_purge = Some(queue.clone());
                purge_job = Some(tokio::spawn(edge_purge::run(
                    queue,
                    purge.clone(),
                    purging.clone(),
                )));
            }
            Some(tokio::spawn(projector::run(
                log.clone(),
                backend.read.clone(),
                projector_config,
                projector_handle,
                partitions,
                projecting.clone(),
            )))
        }
        _ => None,
    };
    Spawned {
        producers,
        producer_jobs,
        projecting,
        projector_job,
        purging,
        purge_job,
        releasing,
        lease_jobs,
    }
}
