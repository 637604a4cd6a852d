//! Admission before anything of a region is applied: it must authenticate its callers
//! (or say `insecureNoAuth`), run an allowed image, and reference only Secrets labelled
//! for regions. Read with metadata-only requests: the operator never reads a Secret's data.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use super::Context;
use crate::crd::InventoryRegion;
use crate::error::{Error, Result};
use crate::resources;
use crate::status::Refusal;
use crate::{SECRET_USAGE_LABEL, SECRET_USAGE_VALUE};

/// Whether the operator may act on `region`'s spec: it authenticates its callers (or says
/// `insecureNoAuth: true`; the CRD refuses anything else, but an object stored before that
/// rule is not re-validated), its image is allowed, and every Secret it names exists and is
/// labelled `stockflow.dev/usage: region`. Reads Secret metadata only.
pub async fn admission(region: &InventoryRegion, ctx: &Context) -> Result<Option<Refusal>> {
    if !resources::authenticated(region) && !region.spec.insecure_no_auth {
        return Ok(Some(Refusal {
            reason: "AuthenticationRequired",
            message: "the region has no authentication: set spec.auth or \
                      spec.tls.principalsSecret, or write spec.insecureNoAuth: true"
                .into(),
        }));
    }
    if !resources::image_allowed(&region.spec.image, &ctx.allowed_image_prefixes) {
        return Ok(Some(Refusal {
            reason: "ImageNotAllowed",
            message: format!(
                "image {} is not under an allowed prefix ({}); the operator runs no other image",
                region.spec.image,
                ctx.allowed_image_prefixes.join(", ")
            ),
        }));
    }
    let ns = region
        .namespace()
        .ok_or_else(|| Error::Invalid("InventoryRegion without a namespace".into()))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut missing = Vec::new();
    let mut unlabelled = Vec::new();
    for (field, name) in resources::secret_references(region) {
        // A metadata-only request (PartialObjectMetadata): the Secret's data never reaches
        // the operator.
        match secrets.get_metadata_opt(&name).await? {
            None => missing.push(format!("{name} ({field})")),
            Some(meta) => {
                let labelled = meta
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SECRET_USAGE_LABEL))
                    .is_some_and(|v| v == SECRET_USAGE_VALUE);
                if !labelled {
                    unlabelled.push(format!("{name} ({field})"));
                }
            }
        }
    }
    if !unlabelled.is_empty() {
        return Ok(Some(Refusal {
            reason: "SecretNotLabelled",
            message: format!(
                "Secret {} not labelled {SECRET_USAGE_LABEL}={SECRET_USAGE_VALUE}: a region \
                 mounts only Secrets meant for it (`kubectl label secret NAME \
                 {SECRET_USAGE_LABEL}={SECRET_USAGE_VALUE}`)",
                unlabelled.join(", ")
            ),
        }));
    }
    if !missing.is_empty() {
        return Ok(Some(Refusal {
            reason: "SecretNotFound",
            message: format!(
                "Secret {} not found in namespace {ns}; create it labelled \
                 {SECRET_USAGE_LABEL}={SECRET_USAGE_VALUE}",
                missing.join(", ")
            ),
        }));
    }
    Ok(None)
}
