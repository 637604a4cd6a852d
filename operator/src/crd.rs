//! The `InventoryRegion` custom resource (group `stockflow.dev`, version `v1alpha1`).
//!
//! Validation lives in the schema (OpenAPI bounds and patterns), so the API server refuses
//! a bad spec with a clear message before the operator ever sees it.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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

/// Where the roles send their spans, and how many they keep.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TracingSpec {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector.observability:4318`
    /// (`/v1/traces` is appended).
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub otlp_endpoint: String,
    /// `OTEL_TRACES_SAMPLER`: `parentbased_traceidratio` (the default here, which follows
    /// the caller's decision and samples `samplerArg` of new traces), `always_on`,
    /// `traceidratio`, ...
    #[serde(default = "default_sampler")]
    pub sampler: String,
    /// `OTEL_TRACES_SAMPLER_ARG`: the share of new traces kept by a ratio sampler.
    #[serde(default = "default_sampler_arg")]
    pub sampler_arg: String,
}

fn default_sampler() -> String {
    "parentbased_traceidratio".into()
}

fn default_sampler_arg() -> String {
    "0.1".into()
}

/// HTTPS at the roles' port, from Secrets mounted into the pods (kubelet refreshes them
/// when they change; a new certificate is used by new connections after a restart).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.principalsSecret) || has(self.clientCaSecret)",
    "message": "tls.principalsSecret needs tls.clientCaSecret (the principals are client certificates that CA signs)"
}]))]
pub struct ApiTlsSpec {
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`) with the serving certificate.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// A Secret with the CA (key `ca.crt`) whose client certificates may call the APIs:
    /// mutual TLS. Requests without a certificate reach only `/healthz` and `/readyz` (the
    /// kubelet's probes); `principalsSecret` says what each certificate may do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub client_ca_secret: Option<String>,
    /// A Secret with the mutual-TLS principals (key `principals.json` unless named): which
    /// client certificate (by common name, DNS name or URI SAN) gets which scopes and
    /// locations. Mounted as a file in every role (`STOCKFLOW_MTLS_PRINCIPALS`), re-read
    /// when it changes. Needs `clientCaSecret`; counts as the region's authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principals_secret: Option<PrincipalsSecretSpec>,
}

/// The Secret key holding the mutual-TLS principals document.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrincipalsSecretSpec {
    /// The Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in it.
    #[serde(default = "default_principals_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_principals_key() -> String {
    "principals.json".into()
}

/// A key of a Secret.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySpec {
    /// The Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in it.
    #[serde(default = "default_jwks_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_jwks_key() -> String {
    "jwks.json".into()
}

/// How the region's APIs check bearer tokens (JWTs signed with RS256, ES256 or EdDSA).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.jwksUrl) != has(self.jwksSecret)",
    "message": "set exactly one of auth.jwksUrl and auth.jwksSecret"
}]))]
pub struct AuthSpec {
    /// The `iss` every token must carry.
    #[schemars(length(min = 1, max = 512))]
    pub issuer: String,
    /// An `aud` every token must include.
    #[schemars(length(min = 1, max = 512))]
    pub audience: String,
    /// The identity provider's JWKS (`jwks_uri`), re-read every 5 minutes and when a
    /// token names an unknown `kid`, so keys rotate without restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 8, max = 2048), regex(pattern = r"^https?://"))]
    pub jwks_url: Option<String>,
    /// A JWKS document kept in a Secret (key `jwks.json` unless named), for providers the
    /// pods cannot reach. Mounted as a file: kubelet refreshes it when the Secret changes,
    /// and the roles re-read it every 5 minutes, so keys rotate without restarts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_secret: Option<SecretKeySpec>,
}

fn default_ttl() -> u32 {
    900
}

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

/// The event bus of a region: exactly one of `kafka` or `fluvio`, and the topic.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.kafka) != has(self.fluvio)",
    "message": "set exactly one of bus.kafka and bus.fluvio"
}]))]
pub struct BusSpec {
    /// A Kafka cluster (Apache Kafka, Redpanda, a managed Kafka).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaSpec>,
    /// A Fluvio cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fluvio: Option<FluvioSpec>,
    /// Topic, created by the migration. Without one, a new region gets
    /// `stockflow-<regionId>-<6 hex digits derived from its uid>-stock-events`, recorded in
    /// `status.topic` and kept from then on (a region first reconciled by an older operator
    /// keeps `stockflow-<regionId>-stock-events`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
    )]
    pub topic: Option<String>,
    /// Partitions (events are keyed by SKU). Fixed once the topic exists.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    pub partitions: u32,
    /// Replication of the topic.
    #[serde(default = "default_replication")]
    #[schemars(range(min = 1, max = 5))]
    pub replication: u32,
}

/// A Kafka cluster.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.sasl) == (self.securityProtocol in ['SASL_PLAINTEXT', 'SASL_SSL'])",
        "message": "bus.kafka.sasl is required with securityProtocol SASL_PLAINTEXT or SASL_SSL, and only then"
    },
    {
        "rule": "!has(self.tls) || self.securityProtocol in ['SSL', 'SASL_SSL']",
        "message": "bus.kafka.tls needs securityProtocol SSL or SASL_SSL"
    }
]))]
pub struct KafkaSpec {
    /// Bootstrap brokers, `host:port`.
    #[schemars(length(min = 1, max = 32))]
    pub brokers: Vec<String>,
    /// How clients connect (managed Kafkas use `SASL_SSL`).
    #[serde(default)]
    pub security_protocol: KafkaSecurityProtocol,
    /// SASL credentials, with a SASL protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSaslSpec>,
    /// The CA of the brokers' certificates, with a TLS protocol (default: the image's
    /// system trust store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
}

/// Kafka's `security.protocol`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KafkaSecurityProtocol {
    /// No authentication, no encryption.
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL without TLS.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl KafkaSecurityProtocol {
    /// The spelling the binary reads (`--kafka-security-protocol`).
    pub fn as_str(self) -> &'static str {
        match self {
            KafkaSecurityProtocol::Plaintext => "PLAINTEXT",
            KafkaSecurityProtocol::Ssl => "SSL",
            KafkaSecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            KafkaSecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

/// SASL credentials for Kafka.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSaslSpec {
    /// How the password is proven.
    #[serde(default)]
    pub mechanism: SaslMechanism,
    /// Secret with `username` and `password`.
    #[schemars(length(min = 1, max = 253))]
    pub credentials_secret: String,
}

/// A SASL mechanism.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SaslMechanism {
    /// PLAIN (use it over TLS only).
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM-SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[default]
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The spelling the binary reads (`--kafka-sasl-mechanism`).
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A Fluvio cluster.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FluvioSpec {
    /// SC public endpoint, `host:port`.
    #[schemars(length(min = 1, max = 256))]
    pub endpoint: String,
}

fn default_partitions() -> u32 {
    8
}

fn default_replication() -> u32 {
    1
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
