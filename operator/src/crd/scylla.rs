//! The ScyllaDB keyspace of a region and how to reach it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// ScyllaDB connection of a region.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScyllaSpec {
    /// Contact points, `host:port`.
    #[schemars(length(min = 1, max = 32))]
    pub nodes: Vec<String>,
    /// Keyspace (a-z, 0-9, _; 1-48 characters). Without one, a new region gets
    /// `stockflow_<regionId>_<6 hex digits derived from its uid>` (`-` as `_`, the id cut
    /// to 31 characters), recorded in `status.keyspace` and kept from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 48), regex(pattern = r"^[a-z0-9_]+$"))]
    pub keyspace: Option<String>,
    /// Local datacenter.
    #[serde(default = "default_dc")]
    #[schemars(length(min = 1, max = 64))]
    pub local_dc: String,
    /// Replication factor in the local datacenter for a new keyspace.
    #[serde(default = "default_rf")]
    #[schemars(range(min = 1, max = 9))]
    pub replication_factor: u32,
    /// Secret with `username` and `password`, when authentication is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// TLS to the nodes (client encryption); their certificates must name their IPs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// TLS towards a cluster: the CA that signs its certificates, from a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Secret holding the CA certificate (PEM).
    #[schemars(length(min = 1, max = 253))]
    pub ca_secret: String,
    /// Key of the certificate in that Secret.
    #[serde(default = "default_ca_key")]
    #[schemars(length(min = 1, max = 253))]
    pub ca_key: String,
}

fn default_ca_key() -> String {
    "ca.crt".into()
}

fn default_dc() -> String {
    "datacenter1".into()
}

fn default_rf() -> u32 {
    3
}
