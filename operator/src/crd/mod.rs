//! The `InventoryRegion` custom resource (group `stockflow.dev`, version `v1alpha1`).
//!
//! Validation lives in the schema (OpenAPI bounds and patterns), so the API server refuses
//! a bad spec with a clear message before the operator ever sees it.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod bus;
mod scylla;
mod security;

pub use bus::{
    BusSpec, FluvioEvents, FluvioSpec, KafkaSaslSpec, KafkaSecurityProtocol, KafkaSpec,
    SaslMechanism,
};
pub use scylla::{ScyllaSpec, TlsSpec};
pub use security::{ApiTlsSpec, AuthSpec, PrincipalsSecretSpec, SecretKeySpec, TracingSpec};

/// One stockflow region: its command API, query API, publisher and projectors over a
/// ScyllaDB keyspace and a topic on a Kafka or Fluvio bus.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "stockflow.dev",
    version = "v1alpha1",
    kind = "InventoryRegion",
    namespaced,
    status = "InventoryRegionStatus",
    shortname = "invreg",
    shortname = "ir",
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.regionId"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Available\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.auth) || (has(self.tls) && has(self.tls.principalsSecret)) || (has(self.insecureNoAuth) && self.insecureNoAuth)",
        "message": "authentication is required: set spec.auth (bearer tokens) or spec.tls.principalsSecret (mutual TLS with a principals list), or write spec.insecureNoAuth: true to serve the APIs to anyone who reaches them"
    },
    {
        "rule": "!(has(self.insecureNoAuth) && self.insecureNoAuth) || !(has(self.auth) || (has(self.tls) && has(self.tls.principalsSecret)))",
        "message": "spec.insecureNoAuth: true contradicts spec.auth and spec.tls.principalsSecret: remove it"
    }
]))]
pub struct InventoryRegionSpec {
    /// Region id used in events and read models (lowercase, 1-32 characters).
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub region_id: String,
    /// The stockflow image every role runs. The operator may be limited to images under
    /// given prefixes (`--allowed-image-prefix`); another image is refused.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// ScyllaDB connection.
    pub scylla: ScyllaSpec,
    /// The event bus: a Kafka or a Fluvio cluster, and the region's topic on it.
    pub bus: BusSpec,
    /// Replicas and resources per role.
    #[serde(default)]
    pub roles: RolesSpec,
    /// Seconds an unconfirmed reservation holds stock.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 1, max = 86400))]
    pub reservation_ttl_seconds: u32,
    /// What happens to the keyspace and topic when the region is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Bearer-token authentication of the region's APIs. A region needs it, or mutual TLS
    /// with a principals list (`tls.principalsSecret`), or `insecureNoAuth: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
    /// Serve the APIs without any authentication (`--insecure-no-auth`): anyone who reaches
    /// their Services may change any stock. Only when written explicitly, never with `auth`
    /// or `tls.principalsSecret`; the region then carries an `Insecure` condition and a
    /// Warning event.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_no_auth: bool,
    /// HTTPS for the region's APIs, optionally with client certificates (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTlsSpec>,
    /// OpenTelemetry traces of every role, exported over OTLP/HTTP. Without it no span is
    /// made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingSpec>,
}

fn default_ttl() -> u32 {
    900
}

/// Replicas and resources of every role.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolesSpec {
    /// The command API (writes).
    #[serde(default)]
    pub command_api: RoleSpec,
    /// The query API (reads).
    #[serde(default)]
    pub query_api: RoleSpec,
    /// The outbox publisher.
    #[serde(default)]
    pub publisher: RoleSpec,
    /// The projectors.
    #[serde(default)]
    pub projector: RoleSpec,
    /// Webhook delivery.
    #[serde(default)]
    pub webhooks: RoleSpec,
}

/// Replicas and resources of one role.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleSpec {
    /// Pods of this role.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Requests and limits of its container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

fn default_replicas() -> i32 {
    2
}

impl Default for RoleSpec {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            resources: None,
        }
    }
}

/// What happens to external resources when the region is deleted.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep the keyspace and topic (the default: data outlives its deployment).
    #[default]
    Retain,
    /// Drop the keyspace and delete the topic.
    Delete,
}

/// Observed state of a region.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryRegionStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available`, `Progressing`, `Degraded`, and `Insecure` (True while the APIs run
    /// without authentication).
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// `Migrating`, `RollingOut`, `Ready`, `Degraded` or `Paused`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Ready replicas per role.
    #[serde(default)]
    pub ready_replicas: std::collections::BTreeMap<String, i32>,
    /// Where the APIs are served inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// The keyspace the region uses: `spec.scylla.keyspace`, or the default chosen at its
    /// first reconciliation. Kept, so a default never changes under a running region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyspace: Option<String>,
    /// The topic the region uses: `spec.bus.topic`, or the default chosen at its first
    /// reconciliation. Kept, so a default never changes under a running region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}

/// In-cluster URLs of a region's APIs.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// Command API.
    pub command_api: String,
    /// Query API.
    pub query_api: String,
}

/// A status condition, as in `metav1.Condition`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Available`, `Progressing`, `Degraded` or `Insecure`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Time,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
