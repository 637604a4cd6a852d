//! Pure builders: an `InventoryRegion` → the Kubernetes objects of its region. No I/O, so
//! every choice here is unit-tested; the controller only applies what these return.
//!
//! Layout: names and labels here; [`names`] the keyspace and topic a region uses;
//! [`admission`] what a region may reference (Secrets, images) and whether it
//! authenticates; [`config`] the environment every role reads (ConfigMap, Secret env vars
//! and volumes); [`workloads`] Deployments, Services and disruption budgets; [`jobs`] the
//! migration and teardown Jobs.

mod admission;
mod config;
mod jobs;
mod names;
mod workloads;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
pub use stockflow_domain::Role;

use crate::crd::{InventoryRegion, RoleSpec};

pub use admission::{authenticated, image_allowed, secret_references};
pub use config::{config_data, config_hash, config_map};
pub use jobs::{Teardown, migration_job, migration_job_name, teardown_job, teardown_job_name};
pub use names::{keyspace, topic, uid_suffix};
pub use workloads::{deployment, pdb, service};

/// Port every role serves HTTP (API, health, metrics) on.
pub const HTTP_PORT: i32 = 8080;

/// The replicas and resources the spec gives `role`.
fn role_spec(region: &InventoryRegion, role: Role) -> &RoleSpec {
    let roles = &region.spec.roles;
    match role {
        Role::CommandApi => &roles.command_api,
        Role::QueryApi => &roles.query_api,
        Role::Publisher => &roles.publisher,
        Role::Projector => &roles.projector,
        Role::Webhooks => &roles.webhooks,
    }
}

/// Name of the child object of `role`.
pub fn child_name(region: &InventoryRegion, role: Role) -> String {
    format!("{}-{}", region.name_any(), role.name())
}

/// Name of the ConfigMap.
pub fn config_name(region: &InventoryRegion) -> String {
    format!("{}-config", region.name_any())
}

/// Labels shared by every child; `role` adds the component.
pub fn labels(region: &InventoryRegion, role: Option<Role>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "stockflow".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), region.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "stockflow-operator".to_string(),
        ),
        (
            "stockflow.dev/region".to_string(),
            region.spec.region_id.clone(),
        ),
    ]);
    if let Some(role) = role {
        labels.insert("app.kubernetes.io/component".into(), role.name().into());
    }
    labels
}

fn selector(region: &InventoryRegion, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_string(), region.name_any()),
        (
            "app.kubernetes.io/component".to_string(),
            role.name().to_string(),
        ),
    ])
}

/// The controller owner reference every child carries, so it is garbage-collected with
/// the region and its changes re-trigger reconciliation.
pub fn owner(region: &InventoryRegion) -> Option<OwnerReference> {
    region.controller_owner_ref(&())
}

fn meta(region: &InventoryRegion, name: String, role: Option<Role>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: region.namespace(),
        labels: Some(labels(region, role)),
        owner_references: owner(region).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// In-cluster URL of an exposed role.
pub fn endpoint(region: &InventoryRegion, role: Role) -> String {
    format!(
        "http://{}.{}.svc",
        child_name(region, role),
        region.namespace().unwrap_or_else(|| "default".into())
    )
}

#[cfg(test)]
mod tests;
