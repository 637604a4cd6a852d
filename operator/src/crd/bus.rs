//! The event bus of a region: Kafka (with its security) or Fluvio, and the topic.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::TlsSpec;

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
    /// How events are written (Fluvio records carry no headers): `plain`, the event's JSON,
    /// or `structured`, a CloudEvents 1.0 structured-mode event around it. Set
    /// `structured` once every role of the region runs a version that reads it.
    #[serde(default)]
    pub cloudevents: FluvioEvents,
}

/// How events are written on Fluvio.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FluvioEvents {
    /// The event's JSON.
    #[default]
    Plain,
    /// A CloudEvents 1.0 structured-mode event around it.
    Structured,
}

impl FluvioEvents {
    /// The spelling the binary reads (`--fluvio-cloudevents`).
    pub fn as_str(self) -> &'static str {
        match self {
            FluvioEvents::Plain => "plain",
            FluvioEvents::Structured => "structured",
        }
    }
}

fn default_partitions() -> u32 {
    8
}

fn default_replication() -> u32 {
    1
}
