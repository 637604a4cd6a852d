//! Test fixtures: regions and child objects in known states.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use kube::api::ObjectMeta;

use crate::crd::{
    DeletionPolicy, FluvioSpec, InventoryRegion, InventoryRegionSpec, RolesSpec, ScyllaSpec,
};
use crate::resources::{self, Role};

/// A valid region named `name` in namespace `stores`, generation 1.
pub fn region(name: &str) -> InventoryRegion {
    let mut r = InventoryRegion::new(
        name,
        InventoryRegionSpec {
            region_id: name.into(),
            image: "stockflow:1".into(),
            scylla: ScyllaSpec {
                nodes: vec!["scylla:9042".into()],
                keyspace: format!("{name}_ks"),
                local_dc: "datacenter1".into(),
                replication_factor: 3,
                credentials_secret: None,
            },
            fluvio: FluvioSpec {
                endpoint: "fluvio-sc:9003".into(),
                topic: None,
                partitions: 8,
                replication: 1,
            },
            roles: RolesSpec::default(),
            reservation_ttl_seconds: 900,
            deletion_policy: DeletionPolicy::Retain,
        },
    );
    r.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("stores".into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    r
}

/// The Deployment of `role` as if `ready` replicas were up to date and ready.
pub fn ready_deployment(region: &InventoryRegion, role: Role, ready: i32) -> Deployment {
    let mut d = resources::deployment(region, role);
    d.metadata.generation = Some(1);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(ready),
        updated_replicas: Some(ready),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        ..DeploymentStatus::default()
    });
    d
}
