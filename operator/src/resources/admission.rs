//! What a region may reference before anything of it is applied: whether it
//! authenticates its callers, which Secrets it would mount (each must be labelled for
//! regions), and whether its image is allowed.

use crate::crd::InventoryRegion;

/// Whether the region's APIs authenticate callers: bearer tokens (`auth`) or mutual TLS
/// with a principals list.
pub fn authenticated(region: &InventoryRegion) -> bool {
    let s = &region.spec;
    s.auth.is_some()
        || s.tls
            .as_ref()
            .is_some_and(|t| t.principals_secret.is_some() && t.client_ca_secret.is_some())
}

/// Every Secret the region's pods would read, with the spec field that names it, in spec
/// order (each Secret once, at its first field).
pub fn secret_references(region: &InventoryRegion) -> Vec<(&'static str, String)> {
    let s = &region.spec;
    let mut refs: Vec<(&'static str, String)> = Vec::new();
    let mut add = |field: &'static str, name: &str| {
        if !refs.iter().any(|(_, n)| n == name) {
            refs.push((field, name.to_string()));
        }
    };
    if let Some(name) = &s.scylla.credentials_secret {
        add("spec.scylla.credentialsSecret", name);
    }
    if let Some(tls) = &s.scylla.tls {
        add("spec.scylla.tls.caSecret", &tls.ca_secret);
    }
    if let Some(kafka) = &s.bus.kafka {
        if let Some(sasl) = &kafka.sasl {
            add(
                "spec.bus.kafka.sasl.credentialsSecret",
                &sasl.credentials_secret,
            );
        }
        if let Some(tls) = &kafka.tls {
            add("spec.bus.kafka.tls.caSecret", &tls.ca_secret);
        }
    }
    if let Some(tls) = &s.tls {
        add("spec.tls.secretName", &tls.secret_name);
        if let Some(ca) = &tls.client_ca_secret {
            add("spec.tls.clientCaSecret", ca);
        }
        if let Some(p) = &tls.principals_secret {
            add("spec.tls.principalsSecret", &p.name);
        }
    }
    if let Some(jwks) = s.auth.as_ref().and_then(|a| a.jwks_secret.as_ref()) {
        add("spec.auth.jwksSecret", &jwks.name);
    }
    refs
}

/// Whether `image` is under one of `prefixes` (none: every image is).
pub fn image_allowed(image: &str, prefixes: &[String]) -> bool {
    prefixes.is_empty() || prefixes.iter().any(|p| image.starts_with(p.as_str()))
}
