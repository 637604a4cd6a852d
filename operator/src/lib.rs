//! The stockflow operator: `InventoryRegion` → a running region.
//!
//! Layout:
//! - [`crd`]: the custom resource and its schema.
//! - [`resources`]: pure builders of the child objects.
//! - [`status`]: pure status computation (conditions, phase).
//! - [`controller`]: reconcile (server-side apply), finalizer clean-up, events.
//! - [`leader`]: Lease-based leader election.
//! - [`reference`]: the field reference rendered from the CRD's schema.
//! - [`error`]: the crate's one error enum.

pub mod controller;
pub mod crd;
pub mod error;
pub mod leader;
pub mod reference;
pub mod resources;
pub mod status;

#[cfg(test)]
pub(crate) mod fixtures;

pub use error::{Error, Result};

/// Field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "stockflow-operator";
/// Finalizer guarding external clean-up.
pub const FINALIZER: &str = "stockflow.dev/cleanup";
/// Annotation that stops reconciliation of a region when `"true"`.
pub const PAUSED_ANNOTATION: &str = "stockflow.dev/paused";
/// Label a Secret must carry (with [`SECRET_USAGE_VALUE`]) before a region may mount it.
pub const SECRET_USAGE_LABEL: &str = "stockflow.dev/usage";
/// Value of [`SECRET_USAGE_LABEL`] on a Secret meant for regions.
pub const SECRET_USAGE_VALUE: &str = "region";

/// The CRD as YAML, exactly as `crds/` holds it.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&crd::InventoryRegion::crd())
}
