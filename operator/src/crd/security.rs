//! How a region's APIs meet their callers: HTTPS and mutual TLS (with the principals a
//! client certificate is granted), bearer-token authentication, and trace export.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
