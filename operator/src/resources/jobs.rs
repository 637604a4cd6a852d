//! The region's Jobs: `stockflow migrate` before the command API rolls out (named after
//! the image and keyspace settings, so a change of either runs a new one), and `stockflow
//! teardown` when a region whose policy is Delete goes away.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use super::names::keyspace;
use super::workloads::{container, pod_security};
use super::{labels, meta};
use crate::crd::InventoryRegion;

/// Name of the migration Job for the current image and keyspace settings: a change of
/// either runs a new migration before the command API rolls out.
pub fn migration_job_name(region: &InventoryRegion) -> String {
    let s = &region.spec;
    let key = format!(
        "{}|{}|{}|{}",
        s.image,
        keyspace(region),
        s.scylla.local_dc,
        s.scylla.replication_factor
    );
    format!(
        "{}-migrate-{}",
        region.name_any(),
        &hex::encode(Sha256::digest(key.as_bytes()))[..8]
    )
}

/// The migration Job (`stockflow migrate`).
pub fn migration_job(region: &InventoryRegion) -> Job {
    let mut labels = labels(region, None);
    labels.insert("app.kubernetes.io/component".into(), "migrate".into());
    Job {
        metadata: ObjectMeta {
            labels: Some(labels.clone()),
            ..meta(region, migration_job_name(region), None)
        },
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            ttl_seconds_after_finished: Some(7 * 24 * 3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(region, vec!["migrate".into()], None)],
                    restart_policy: Some("OnFailure".into()),
                    security_context: Some(pod_security()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Name of the teardown Job of a region being deleted.
pub fn teardown_job_name(region: &InventoryRegion) -> String {
    format!("{}-teardown", region.name_any())
}

/// What a teardown removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Teardown {
    /// Drop the keyspace.
    pub keyspace: bool,
    /// Delete the topic.
    pub topic: bool,
}

impl Teardown {
    /// The `stockflow teardown` arguments.
    pub fn args(self) -> Vec<String> {
        let mut args = vec!["teardown".to_string()];
        if self.keyspace {
            args.push("--drop-keyspace".into());
        }
        if self.topic {
            args.push("--delete-topic".into());
        }
        args
    }

    /// What a Job's arguments ask to remove.
    pub fn of(job: &Job) -> Self {
        let args = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.args.clone())
            .unwrap_or_default();
        Self {
            keyspace: args.iter().any(|a| a == "--drop-keyspace"),
            topic: args.iter().any(|a| a == "--delete-topic"),
        }
    }
}

/// The teardown Job (`stockflow teardown`): removes the keyspace and topic with the
/// region's own credentials, so the operator never needs to read Secrets. No owner
/// reference: it runs while its region is being deleted, and the operator deletes it once
/// it has ended.
pub fn teardown_job(region: &InventoryRegion, what: Teardown) -> Job {
    let mut labels = labels(region, None);
    labels.insert("app.kubernetes.io/component".into(), "teardown".into());
    Job {
        metadata: ObjectMeta {
            name: Some(teardown_job_name(region)),
            namespace: region.namespace(),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            // An unreachable cluster must not hold the region's deletion for long.
            active_deadline_seconds: Some(300),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(region, what.args(), None)],
                    restart_policy: Some("OnFailure".into()),
                    security_context: Some(pod_security()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}
