//! The keyspace and topic a region uses: the spec's, the ones recorded in its status, or
//! defaults that carry a digest of the region's uid so two regions never pick the same
//! name by accident.

use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::crd::InventoryRegion;

/// Six hex digits derived from the region's uid: what makes a default keyspace or topic
/// name this region's own, so two regions never pick the same one by accident.
pub fn uid_suffix(region: &InventoryRegion) -> String {
    let uid = region.uid().unwrap_or_default();
    hex::encode(Sha256::digest(uid.as_bytes()))[..6].to_string()
}

/// Whether the region's status was written by an operator that predates recorded names
/// (it has an `observedGeneration` but no `status.topic`): such a region already runs on
/// the old default topic, which must not change under it.
fn reconciled_before_names_were_recorded(region: &InventoryRegion) -> bool {
    region
        .status
        .as_ref()
        .is_some_and(|s| s.observed_generation.is_some() && s.topic.is_none())
}

/// The keyspace of the region: the spec's, else the one recorded in its status at its
/// first reconciliation, else (a new region) `stockflow_<regionId>_<uid suffix>`.
pub fn keyspace(region: &InventoryRegion) -> String {
    if let Some(k) = &region.spec.scylla.keyspace {
        return k.clone();
    }
    if let Some(k) = region.status.as_ref().and_then(|s| s.keyspace.clone()) {
        return k;
    }
    // 10 + 31 + 1 + 6 = 48 characters at most, the CQL limit.
    let id: String = region
        .spec
        .region_id
        .replace('-', "_")
        .chars()
        .take(31)
        .collect();
    format!("stockflow_{id}_{}", uid_suffix(region))
}

/// The topic of the region: the spec's, else the one recorded in its status at its first
/// reconciliation, else `stockflow-<regionId>-<uid suffix>-stock-events` for a new region
/// (the binary's unsuffixed default, `stockflow-<regionId>-stock-events`, for one an older
/// operator already runs on).
pub fn topic(region: &InventoryRegion) -> String {
    if let Some(t) = &region.spec.bus.topic {
        return t.clone();
    }
    if let Some(t) = region.status.as_ref().and_then(|s| s.topic.clone()) {
        return t;
    }
    if reconciled_before_names_were_recorded(region) {
        return stockflow_domain::default_topic(&region.spec.region_id);
    }
    // At most 10 + 32 + 1 + 6 + 13 = 62 characters: a valid Fluvio and Kafka topic.
    format!(
        "stockflow-{}-{}-stock-events",
        region.spec.region_id,
        uid_suffix(region)
    )
}
