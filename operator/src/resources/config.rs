//! The environment every role of a region reads: the ConfigMap of settings, the Secrets
//! read as env vars (credentials and CAs) and the Secrets mounted as files (certificates,
//! the JWKS, the principals), which kubelet refreshes in place.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, EnvVar, EnvVarSource, SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
};
use sha2::{Digest, Sha256};

use super::admission::authenticated;
use super::names::{keyspace, topic};
use super::{HTTP_PORT, config_name, meta};
use crate::crd::{FluvioEvents, InventoryRegion};

/// The bus settings every role reads from its environment.
fn bus_env(region: &InventoryRegion) -> Vec<(String, String)> {
    let bus = &region.spec.bus;
    let mut env = vec![
        ("STOCKFLOW_BUS_TOPIC".to_string(), topic(region)),
        (
            "STOCKFLOW_PARTITIONS".to_string(),
            bus.partitions.to_string(),
        ),
        (
            "STOCKFLOW_BUS_REPLICATION".to_string(),
            bus.replication.to_string(),
        ),
    ];
    if let Some(kafka) = &bus.kafka {
        env.push(("STOCKFLOW_BUS".into(), "kafka".into()));
        env.push(("STOCKFLOW_KAFKA_BROKERS".into(), kafka.brokers.join(",")));
        env.push((
            "STOCKFLOW_KAFKA_SECURITY_PROTOCOL".into(),
            kafka.security_protocol.as_str().into(),
        ));
        if let Some(sasl) = &kafka.sasl {
            env.push((
                "STOCKFLOW_KAFKA_SASL_MECHANISM".into(),
                sasl.mechanism.as_str().into(),
            ));
        }
    } else if let Some(fluvio) = &bus.fluvio {
        env.push(("STOCKFLOW_BUS".into(), "fluvio".into()));
        env.push(("STOCKFLOW_FLUVIO_ENDPOINT".into(), fluvio.endpoint.clone()));
        // Only when not the default: a region that keeps it is not rolled by an operator
        // upgrade that merely learned the setting.
        if fluvio.cloudevents != FluvioEvents::default() {
            env.push((
                "STOCKFLOW_FLUVIO_CLOUDEVENTS".into(),
                fluvio.cloudevents.as_str().into(),
            ));
        }
    }
    env
}

/// Settings every role reads from its environment.
pub fn config_data(region: &InventoryRegion) -> BTreeMap<String, String> {
    let s = &region.spec;
    let mut data = BTreeMap::from([
        ("STOCKFLOW_REGION".into(), s.region_id.clone()),
        ("STOCKFLOW_STORE".into(), "scylla".into()),
        ("STOCKFLOW_SCYLLA_NODES".into(), s.scylla.nodes.join(",")),
        ("STOCKFLOW_SCYLLA_KEYSPACE".into(), keyspace(region)),
        (
            "STOCKFLOW_SCYLLA_LOCAL_DC".into(),
            s.scylla.local_dc.clone(),
        ),
        (
            "STOCKFLOW_SCYLLA_REPLICATION".into(),
            format!("{}:{}", s.scylla.local_dc, s.scylla.replication_factor),
        ),
        (
            "STOCKFLOW_RESERVATION_TTL_SECONDS".into(),
            s.reservation_ttl_seconds.to_string(),
        ),
        ("STOCKFLOW_LISTEN".into(), format!("0.0.0.0:{HTTP_PORT}")),
        ("STOCKFLOW_LOG_JSON".into(), "true".into()),
    ]);
    if s.scylla.tls.is_some() {
        data.insert("STOCKFLOW_SCYLLA_TLS".into(), "true".into());
    }
    if let Some(auth) = &s.auth {
        data.insert("STOCKFLOW_AUTH_ISSUER".into(), auth.issuer.clone());
        data.insert("STOCKFLOW_AUTH_AUDIENCE".into(), auth.audience.clone());
        let jwks = match (&auth.jwks_url, &auth.jwks_secret) {
            (Some(url), _) => url.clone(),
            (None, Some(secret)) => format!("{JWKS_DIR}/{}", secret.key),
            // Refused by the CRD's validation rule; the roles then refuse to start.
            (None, None) => String::new(),
        };
        data.insert("STOCKFLOW_AUTH_JWKS".into(), jwks);
    }
    // Open only when the spec says so in so many words; a region with no authentication
    // at all is refused before anything is applied (and its roles would refuse to start).
    if s.insecure_no_auth && !authenticated(region) {
        data.insert("STOCKFLOW_INSECURE_NO_AUTH".into(), "true".into());
    }
    if let Some(tls) = &s.tls {
        data.insert("STOCKFLOW_TLS_CERT".into(), format!("{TLS_DIR}/tls.crt"));
        data.insert("STOCKFLOW_TLS_KEY".into(), format!("{TLS_DIR}/tls.key"));
        if tls.client_ca_secret.is_some() {
            data.insert(
                "STOCKFLOW_TLS_CLIENT_CA".into(),
                format!("{CLIENT_CA_DIR}/ca.crt"),
            );
        }
        if let Some(principals) = &tls.principals_secret {
            data.insert(
                "STOCKFLOW_MTLS_PRINCIPALS".into(),
                format!("{PRINCIPALS_DIR}/{}", principals.key),
            );
        }
    }
    if let Some(tracing) = &s.tracing {
        data.insert(
            "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
            tracing.otlp_endpoint.clone(),
        );
        data.insert("OTEL_TRACES_SAMPLER".into(), tracing.sampler.clone());
        data.insert(
            "OTEL_TRACES_SAMPLER_ARG".into(),
            tracing.sampler_arg.clone(),
        );
        // Each role names itself (stockflow-command-api, ...); the pod name (HOSTNAME)
        // is the replica.
        data.insert(
            "OTEL_RESOURCE_ATTRIBUTES".into(),
            format!("stockflow.region={}", s.region_id),
        );
    }
    data.extend(bus_env(region));
    data
}

/// Where the serving certificate's Secret is mounted.
const TLS_DIR: &str = "/etc/stockflow/tls";
/// Where the client CA's Secret is mounted.
const CLIENT_CA_DIR: &str = "/etc/stockflow/client-ca";
/// Where the JWKS Secret is mounted.
const JWKS_DIR: &str = "/etc/stockflow/jwks";
/// Where the mutual-TLS principals Secret is mounted.
const PRINCIPALS_DIR: &str = "/etc/stockflow/mtls-principals";

/// The Secrets a role reads as files (its serving certificate, the client CA, the
/// mutual-TLS principals, a JWKS), as read-only volumes and their mounts. Files, not env
/// vars: kubelet refreshes a mounted Secret when it changes, and the roles re-read the JWKS
/// and the principals.
pub(super) fn secret_volumes(region: &InventoryRegion) -> (Vec<Volume>, Vec<VolumeMount>) {
    let s = &region.spec;
    let mut wanted: Vec<(&str, &str, &str)> = Vec::new();
    if let Some(tls) = &s.tls {
        wanted.push(("tls", tls.secret_name.as_str(), TLS_DIR));
        if let Some(ca) = &tls.client_ca_secret {
            wanted.push(("client-ca", ca.as_str(), CLIENT_CA_DIR));
        }
        if let Some(principals) = &tls.principals_secret {
            wanted.push(("mtls-principals", principals.name.as_str(), PRINCIPALS_DIR));
        }
    }
    if let Some(secret) = s.auth.as_ref().and_then(|a| a.jwks_secret.as_ref()) {
        wanted.push(("jwks", secret.name.as_str(), JWKS_DIR));
    }
    wanted
        .into_iter()
        .map(|(name, secret, dir)| {
            let volume = Volume {
                name: name.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.into()),
                    optional: Some(false),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            };
            let mount = VolumeMount {
                name: name.into(),
                mount_path: dir.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            };
            (volume, mount)
        })
        .unzip()
}

/// The ConfigMap with [`config_data`].
pub fn config_map(region: &InventoryRegion) -> ConfigMap {
    ConfigMap {
        metadata: meta(region, config_name(region), None),
        data: Some(config_data(region)),
        ..ConfigMap::default()
    }
}

/// A short digest of what a pod's behaviour depends on, stamped on the pod template so a
/// config change rolls the pods.
pub fn config_hash(region: &InventoryRegion) -> String {
    let text = serde_json::to_string(&config_data(region)).unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..6])
}

/// An env var filled from a Secret's key; the pod does not start without it.
fn from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// Every secret a container needs, as env vars read from Secrets: the ScyllaDB and Kafka
/// credentials and CAs. The operator itself never reads a Secret.
pub(super) fn secret_env(region: &InventoryRegion) -> Vec<EnvVar> {
    let scylla = &region.spec.scylla;
    let mut env = Vec::new();
    if let Some(secret) = &scylla.credentials_secret {
        env.push(from_secret("STOCKFLOW_SCYLLA_USER", secret, "username"));
        env.push(from_secret("STOCKFLOW_SCYLLA_PASSWORD", secret, "password"));
    }
    if let Some(tls) = &scylla.tls {
        env.push(from_secret(
            "STOCKFLOW_SCYLLA_TLS_CA_PEM",
            &tls.ca_secret,
            &tls.ca_key,
        ));
    }
    if let Some(kafka) = &region.spec.bus.kafka {
        if let Some(sasl) = &kafka.sasl {
            let secret = &sasl.credentials_secret;
            env.push(from_secret(
                "STOCKFLOW_KAFKA_SASL_USERNAME",
                secret,
                "username",
            ));
            env.push(from_secret(
                "STOCKFLOW_KAFKA_SASL_PASSWORD",
                secret,
                "password",
            ));
        }
        if let Some(tls) = &kafka.tls {
            env.push(from_secret(
                "STOCKFLOW_KAFKA_CA_PEM",
                &tls.ca_secret,
                &tls.ca_key,
            ));
        }
    }
    env
}
