//! Pure builders: an `InventoryRegion` → the Kubernetes objects of its region. No I/O, so
//! every choice here is unit-tested; the controller only applies what these return.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{InventoryRegion, RoleSpec};

/// The roles a region runs, each a Deployment of the same image.
pub const ROLES: [Role; 4] = [
    Role::CommandApi,
    Role::QueryApi,
    Role::Publisher,
    Role::Projector,
];

/// A stockflow role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Writes.
    CommandApi,
    /// Reads.
    QueryApi,
    /// Outbox → topic.
    Publisher,
    /// Topic → read models.
    Projector,
}

impl Role {
    /// The role's name, also the `stockflow` subcommand.
    pub fn name(self) -> &'static str {
        match self {
            Role::CommandApi => "command-api",
            Role::QueryApi => "query-api",
            Role::Publisher => "publisher",
            Role::Projector => "projector",
        }
    }

    /// Whether the role serves an HTTP API behind a Service.
    pub fn exposed(self) -> bool {
        matches!(self, Role::CommandApi | Role::QueryApi)
    }

    fn spec(self, region: &InventoryRegion) -> &RoleSpec {
        let roles = &region.spec.roles;
        match self {
            Role::CommandApi => &roles.command_api,
            Role::QueryApi => &roles.query_api,
            Role::Publisher => &roles.publisher,
            Role::Projector => &roles.projector,
        }
    }
}

/// Port every role serves HTTP (API, health, metrics) on.
pub const HTTP_PORT: i32 = 8080;

/// Name of the child object of `role`.
pub fn child_name(region: &InventoryRegion, role: Role) -> String {
    format!("{}-{}", region.name_any(), role.name())
}

/// Name of the ConfigMap.
pub fn config_name(region: &InventoryRegion) -> String {
    format!("{}-config", region.name_any())
}

/// Labels shared by every child; `role` adds the component.
pub fn labels(region: &InventoryRegion, role: Option<Role>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (
            "app.kubernetes.io/name".to_string(),
            "stockflow".to_string(),
        ),
        ("app.kubernetes.io/instance".to_string(), region.name_any()),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "stockflow-operator".to_string(),
        ),
        (
            "stockflow.dev/region".to_string(),
            region.spec.region_id.clone(),
        ),
    ]);
    if let Some(role) = role {
        labels.insert("app.kubernetes.io/component".into(), role.name().into());
    }
    labels
}

fn selector(region: &InventoryRegion, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".to_string(), region.name_any()),
        (
            "app.kubernetes.io/component".to_string(),
            role.name().to_string(),
        ),
    ])
}

/// The controller owner reference every child carries, so it is garbage-collected with
/// the region and its changes re-trigger reconciliation.
pub fn owner(region: &InventoryRegion) -> Option<OwnerReference> {
    region.controller_owner_ref(&())
}

fn meta(region: &InventoryRegion, name: String, role: Option<Role>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: region.namespace(),
        labels: Some(labels(region, role)),
        owner_references: owner(region).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

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
fn secret_volumes(region: &InventoryRegion) -> (Vec<Volume>, Vec<VolumeMount>) {
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
fn secret_env(region: &InventoryRegion) -> Vec<EnvVar> {
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

fn http_probe(path: &str, period: i32, https: bool) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            scheme: https.then(|| "HTTPS".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

fn container(
    region: &InventoryRegion,
    args: Vec<String>,
    resources: Option<&RoleSpec>,
) -> Container {
    Container {
        name: "stockflow".into(),
        image: Some(region.spec.image.clone()),
        args: Some(args),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_name(region),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        env: Some(secret_env(region)),
        resources: resources.and_then(|r| r.resources.clone()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        fs_group: Some(65532),
        ..PodSecurityContext::default()
    }
}

/// The Deployment of `role`.
pub fn deployment(region: &InventoryRegion, role: Role) -> Deployment {
    let spec = role.spec(region);
    let mut c = container(region, vec![role.name().into()], Some(spec));
    c.ports = Some(vec![ContainerPort {
        name: Some("http".into()),
        container_port: HTTP_PORT,
        ..ContainerPort::default()
    }]);
    // With mutual TLS the probes still pass: the handshake lets clients without a
    // certificate in, and the roles answer them on these two routes only.
    let https = region.spec.tls.is_some();
    c.readiness_probe = Some(http_probe("/readyz", 5, https));
    c.liveness_probe = Some(http_probe("/healthz", 10, https));
    let (volumes, mounts) = secret_volumes(region);
    if !mounts.is_empty() {
        c.volume_mounts = Some(mounts);
    }
    let mut template_labels = labels(region, Some(role));
    template_labels.extend(selector(region, role));
    Deployment {
        metadata: meta(region, child_name(region, role), Some(role)),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(region, role)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(template_labels),
                    annotations: Some(BTreeMap::from([
                        ("stockflow.dev/config-hash".to_string(), config_hash(region)),
                        ("prometheus.io/scrape".to_string(), "true".to_string()),
                        ("prometheus.io/port".to_string(), HTTP_PORT.to_string()),
                    ])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![c],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    security_context: Some(pod_security()),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The Service of an exposed role.
pub fn service(region: &InventoryRegion, role: Role) -> Service {
    Service {
        metadata: meta(region, child_name(region, role), Some(role)),
        spec: Some(ServiceSpec {
            selector: Some(selector(region, role)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// A PodDisruptionBudget for a role with more than one replica: voluntary evictions take
/// at most one pod at a time.
pub fn pdb(region: &InventoryRegion, role: Role) -> Option<PodDisruptionBudget> {
    (role.spec(region).replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(region, child_name(region, role), Some(role)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(region, role)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

/// Name of the migration Job for the current image and keyspace settings: a change of
/// either runs a new migration before the command API rolls out.
pub fn migration_job_name(region: &InventoryRegion) -> String {
    let s = &region.spec;
    let key = format!(
        "{}|{}|{}|{}",
        s.image,
        keyspace(region),
        s.scylla.local_dc,
        s.scylla.replication_factor
    );
    format!(
        "{}-migrate-{}",
        region.name_any(),
        &hex::encode(Sha256::digest(key.as_bytes()))[..8]
    )
}

/// The migration Job (`stockflow migrate`).
pub fn migration_job(region: &InventoryRegion) -> Job {
    let mut labels = labels(region, None);
    labels.insert("app.kubernetes.io/component".into(), "migrate".into());
    Job {
        metadata: ObjectMeta {
            labels: Some(labels.clone()),
            ..meta(region, migration_job_name(region), None)
        },
        spec: Some(JobSpec {
            backoff_limit: Some(6),
            ttl_seconds_after_finished: Some(7 * 24 * 3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(region, vec!["migrate".into()], None)],
                    restart_policy: Some("OnFailure".into()),
                    security_context: Some(pod_security()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// Name of the teardown Job of a region being deleted.
pub fn teardown_job_name(region: &InventoryRegion) -> String {
    format!("{}-teardown", region.name_any())
}

/// What a teardown removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Teardown {
    /// Drop the keyspace.
    pub keyspace: bool,
    /// Delete the topic.
    pub topic: bool,
}

impl Teardown {
    /// The `stockflow teardown` arguments.
    pub fn args(self) -> Vec<String> {
        let mut args = vec!["teardown".to_string()];
        if self.keyspace {
            args.push("--drop-keyspace".into());
        }
        if self.topic {
            args.push("--delete-topic".into());
        }
        args
    }

    /// What a Job's arguments ask to remove.
    pub fn of(job: &Job) -> Self {
        let args = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.args.clone())
            .unwrap_or_default();
        Self {
            keyspace: args.iter().any(|a| a == "--drop-keyspace"),
            topic: args.iter().any(|a| a == "--delete-topic"),
        }
    }
}

/// The teardown Job (`stockflow teardown`): removes the keyspace and topic with the
/// region's own credentials, so the operator never needs to read Secrets. No owner
/// reference: it runs while its region is being deleted, and the operator deletes it once
/// it has ended.
pub fn teardown_job(region: &InventoryRegion, what: Teardown) -> Job {
    let mut labels = labels(region, None);
    labels.insert("app.kubernetes.io/component".into(), "teardown".into());
    Job {
        metadata: ObjectMeta {
            name: Some(teardown_job_name(region)),
            namespace: region.namespace(),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            // An unreachable cluster must not hold the region's deletion for long.
            active_deadline_seconds: Some(300),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(region, what.args(), None)],
                    restart_policy: Some("OnFailure".into()),
                    security_context: Some(pod_security()),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// In-cluster URL of an exposed role.
pub fn endpoint(region: &InventoryRegion, role: Role) -> String {
    format!(
        "http://{}.{}.svc",
        child_name(region, role),
        region.namespace().unwrap_or_else(|| "default".into())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::region;

    #[test]
    fn every_child_is_owned_by_the_region_and_labelled() {
        let r = region("north");
        let owner = owner(&r).expect("owner reference");
        assert_eq!(owner.kind, "InventoryRegion");
        assert_eq!(owner.controller, Some(true));
        for role in ROLES {
            let d = deployment(&r, role);
            assert_eq!(
                d.metadata.owner_references.as_deref(),
                Some(std::slice::from_ref(&owner))
            );
            assert_eq!(
                d.metadata.name.as_deref(),
                Some(format!("north-{}", role.name()).as_str())
            );
            let spec = d.spec.expect("spec");
            assert_eq!(spec.replicas, Some(2));
            let template = spec.template.spec.expect("pod spec");
            assert_eq!(
                template.containers[0].args.as_deref(),
                Some(&[role.name().to_string()][..])
            );
            let selector = spec.selector.match_labels.expect("selector");
            let pod_labels = spec
                .template
                .metadata
                .and_then(|m| m.labels)
                .expect("labels");
            assert!(
                selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)),
                "selector matches the pods"
            );
        }
        assert_eq!(
            config_map(&r).metadata.owner_references.map(|o| o.len()),
            Some(1)
        );
        assert_eq!(
            migration_job(&r).metadata.owner_references.map(|o| o.len()),
            Some(1)
        );
    }

    #[test]
    fn a_region_without_auth_says_so_and_one_with_auth_passes_it_on() {
        let mut r = region("north");
        let open = config_data(&r);
        assert_eq!(open["STOCKFLOW_INSECURE_NO_AUTH"], "true");
        assert!(!open.contains_key("STOCKFLOW_AUTH_JWKS"));
        r.spec.insecure_no_auth = false;
        assert!(
            !config_data(&r).contains_key("STOCKFLOW_INSECURE_NO_AUTH"),
            "open only when the spec says so"
        );
        assert!(!authenticated(&r));
        r.spec.auth = Some(crate::crd::AuthSpec {
            issuer: "https://idp.example".into(),
            audience: "stockflow-north".into(),
            jwks_url: Some("https://idp.example/.well-known/jwks.json".into()),
            jwks_secret: None,
        });
        let secured = config_data(&r);
        assert!(!secured.contains_key("STOCKFLOW_INSECURE_NO_AUTH"));
        assert_eq!(secured["STOCKFLOW_AUTH_ISSUER"], "https://idp.example");
        assert_eq!(secured["STOCKFLOW_AUTH_AUDIENCE"], "stockflow-north");
        assert_eq!(
            secured["STOCKFLOW_AUTH_JWKS"],
            "https://idp.example/.well-known/jwks.json"
        );
        assert!(
            deployment(&r, Role::CommandApi)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
                .volumes
                .is_none(),
            "a JWKS URL mounts nothing"
        );
    }

    #[test]
    fn tracing_reaches_every_role_as_the_standard_otel_variables() {
        let mut r = region("north");
        let untraced = config_data(&r);
        assert!(
            !untraced.keys().any(|k| k.starts_with("OTEL_")),
            "off by default"
        );
        let hash = config_hash(&r);
        r.spec.tracing = Some(crate::crd::TracingSpec {
            otlp_endpoint: "http://otel-collector.observability:4318".into(),
            sampler: "parentbased_traceidratio".into(),
            sampler_arg: "0.25".into(),
        });
        let traced = config_data(&r);
        assert_eq!(
            traced["OTEL_EXPORTER_OTLP_ENDPOINT"],
            "http://otel-collector.observability:4318"
        );
        assert_eq!(traced["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
        assert_eq!(traced["OTEL_TRACES_SAMPLER_ARG"], "0.25");
        assert_eq!(traced["OTEL_RESOURCE_ATTRIBUTES"], "stockflow.region=north");
        assert_ne!(config_hash(&r), hash, "turning traces on rolls the pods");
    }

    #[test]
    fn a_jwks_secret_and_tls_secrets_are_mounted_as_files_the_roles_read() {
        let mut r = region("north");
        r.spec.auth = Some(crate::crd::AuthSpec {
            issuer: "https://idp.example".into(),
            audience: "stockflow-north".into(),
            jwks_url: None,
            jwks_secret: Some(crate::crd::SecretKeySpec {
                name: "north-jwks".into(),
                key: "keys.json".into(),
            }),
        });
        r.spec.tls = Some(crate::crd::ApiTlsSpec {
            secret_name: "north-tls".into(),
            client_ca_secret: Some("stores-ca".into()),
            principals_secret: None,
        });
        let data = config_data(&r);
        assert_eq!(data["STOCKFLOW_AUTH_JWKS"], "/etc/stockflow/jwks/keys.json");
        assert_eq!(data["STOCKFLOW_TLS_CERT"], "/etc/stockflow/tls/tls.crt");
        assert_eq!(data["STOCKFLOW_TLS_KEY"], "/etc/stockflow/tls/tls.key");
        assert_eq!(
            data["STOCKFLOW_TLS_CLIENT_CA"],
            "/etc/stockflow/client-ca/ca.crt"
        );
        let pod = deployment(&r, Role::QueryApi)
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let volumes: Vec<(String, String)> = pod
            .volumes
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.secret.unwrap().secret_name.unwrap()))
            .collect();
        assert_eq!(
            volumes,
            [
                ("tls".to_string(), "north-tls".to_string()),
                ("client-ca".to_string(), "stores-ca".to_string()),
                ("jwks".to_string(), "north-jwks".to_string()),
            ]
        );
        let c = &pod.containers[0];
        let mounts: Vec<(&str, bool)> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| (m.mount_path.as_str(), m.read_only == Some(true)))
            .collect();
        assert_eq!(
            mounts,
            [
                ("/etc/stockflow/tls", true),
                ("/etc/stockflow/client-ca", true),
                ("/etc/stockflow/jwks", true)
            ]
        );
        let probe = |p: &Option<Probe>| {
            p.as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .scheme
                .clone()
        };
        assert_eq!(probe(&c.readiness_probe).as_deref(), Some("HTTPS"));
        assert_eq!(probe(&c.liveness_probe).as_deref(), Some("HTTPS"));
        // Secrets reach the pods as mounts, never through the ConfigMap.
        assert!(
            data.values()
                .all(|v| !v.contains("north-tls") && !v.contains("north-jwks"))
        );
    }

    #[test]
    fn config_carries_the_connections_and_rolls_pods_when_it_changes() {
        let mut r = region("north");
        let data = config_data(&r);
        assert_eq!(data["STOCKFLOW_SCYLLA_KEYSPACE"], "north_ks");
        assert_eq!(
            data["STOCKFLOW_BUS_TOPIC"],
            format!("stockflow-north-{}-stock-events", uid_suffix(&r))
        );
        assert_eq!(data["STOCKFLOW_BUS"], "kafka");
        assert_eq!(data["STOCKFLOW_KAFKA_BROKERS"], "kafka:9092");
        assert!(!data.contains_key("STOCKFLOW_FLUVIO_ENDPOINT"));
        assert_eq!(data["STOCKFLOW_SCYLLA_REPLICATION"], "datacenter1:3");
        let before = config_hash(&r);
        r.spec.reservation_ttl_seconds = 60;
        assert_ne!(config_hash(&r), before);
    }

    #[test]
    fn only_apis_get_services_and_only_replicated_roles_get_budgets() {
        let mut r = region("north");
        r.spec.roles.publisher.replicas = 1;
        assert!(Role::CommandApi.exposed() && Role::QueryApi.exposed());
        assert!(!Role::Publisher.exposed() && !Role::Projector.exposed());
        assert!(pdb(&r, Role::Publisher).is_none());
        assert!(pdb(&r, Role::Projector).is_some());
        let svc = service(&r, Role::QueryApi);
        assert_eq!(svc.spec.and_then(|s| s.ports).map(|p| p[0].port), Some(80));
        assert_eq!(
            endpoint(&r, Role::QueryApi),
            "http://north-query-api.stores.svc"
        );
    }

    #[test]
    fn a_new_image_or_keyspace_means_a_new_migration() {
        let mut r = region("north");
        let first = migration_job_name(&r);
        r.spec.roles.query_api.replicas = 5;
        assert_eq!(migration_job_name(&r), first, "scaling needs no migration");
        r.spec.image = "stockflow:2".into();
        assert_ne!(migration_job_name(&r), first);
    }

    #[test]
    fn bus_and_tls_secrets_reach_every_container_as_env_from_secrets() {
        use crate::crd::{KafkaSaslSpec, KafkaSecurityProtocol, SaslMechanism, TlsSpec};
        let mut r = region("north");
        let kafka = r.spec.bus.kafka.as_mut().expect("kafka");
        kafka.security_protocol = KafkaSecurityProtocol::SaslSsl;
        kafka.sasl = Some(KafkaSaslSpec {
            mechanism: SaslMechanism::Plain,
            credentials_secret: "kafka-auth".into(),
        });
        kafka.tls = Some(TlsSpec {
            ca_secret: "kafka-ca".into(),
            ca_key: "ca.crt".into(),
        });
        r.spec.scylla.tls = Some(TlsSpec {
            ca_secret: "scylla-ca".into(),
            ca_key: "root.pem".into(),
        });
        let data = config_data(&r);
        assert_eq!(data["STOCKFLOW_KAFKA_SECURITY_PROTOCOL"], "SASL_SSL");
        assert_eq!(data["STOCKFLOW_KAFKA_SASL_MECHANISM"], "PLAIN");
        assert_eq!(data["STOCKFLOW_SCYLLA_TLS"], "true");
        assert!(
            data.values().all(|v| !v.contains("kafka-auth")),
            "no secret name or value in the ConfigMap"
        );
        let job = teardown_job(
            &r,
            Teardown {
                keyspace: true,
                topic: true,
            },
        );
        for containers in [
            deployment(&r, Role::Publisher)
                .spec
                .and_then(|s| s.template.spec),
            job.spec.clone().and_then(|s| s.template.spec),
        ] {
            let env = containers
                .map(|p| p.containers[0].env.clone().unwrap_or_default())
                .unwrap_or_default();
            let secret_of = |name: &str| {
                env.iter()
                    .find(|e| e.name == name)
                    .and_then(|e| e.value_from.as_ref())
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .map(|s| (s.name.clone(), s.key.clone()))
            };
            assert_eq!(
                secret_of("STOCKFLOW_KAFKA_SASL_PASSWORD"),
                Some(("kafka-auth".into(), "password".into()))
            );
            assert_eq!(
                secret_of("STOCKFLOW_KAFKA_CA_PEM"),
                Some(("kafka-ca".into(), "ca.crt".into()))
            );
            assert_eq!(
                secret_of("STOCKFLOW_SCYLLA_TLS_CA_PEM"),
                Some(("scylla-ca".into(), "root.pem".into()))
            );
        }
        assert_eq!(
            Teardown::of(&job),
            Teardown {
                keyspace: true,
                topic: true
            }
        );
        let only_topic = teardown_job(
            &r,
            Teardown {
                keyspace: false,
                topic: true,
            },
        );
        assert_eq!(
            Teardown::of(&only_topic).args(),
            ["teardown", "--delete-topic"]
        );
        assert!(
            only_topic.metadata.owner_references.is_none(),
            "a teardown outlives nothing: the operator deletes it"
        );
    }

    #[test]
    fn credentials_come_from_the_secret() {
        let mut r = region("north");
        r.spec.scylla.credentials_secret = Some("scylla-auth".into());
        let d = deployment(&r, Role::CommandApi);
        let env = d
            .spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].env.clone().unwrap_or_default())
            .unwrap_or_default();
        assert_eq!(env.len(), 2);
        assert!(env.iter().all(|e| {
            e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .is_some_and(|s| s.name == "scylla-auth")
        }));
    }

    #[test]
    fn a_principals_secret_is_mounted_in_every_role_and_named_by_its_env_var() {
        let mut r = region("north");
        r.spec.insecure_no_auth = false;
        r.spec.tls = Some(crate::crd::ApiTlsSpec {
            secret_name: "north-tls".into(),
            client_ca_secret: Some("stores-ca".into()),
            principals_secret: Some(crate::crd::PrincipalsSecretSpec {
                name: "north-principals".into(),
                key: "principals.json".into(),
            }),
        });
        assert!(
            authenticated(&r),
            "mutual TLS with principals authenticates"
        );
        let data = config_data(&r);
        assert_eq!(
            data["STOCKFLOW_MTLS_PRINCIPALS"],
            "/etc/stockflow/mtls-principals/principals.json"
        );
        assert!(!data.contains_key("STOCKFLOW_INSECURE_NO_AUTH"));
        for role in ROLES {
            let pod = deployment(&r, role).spec.unwrap().template.spec.unwrap();
            let volume = pod
                .volumes
                .unwrap()
                .into_iter()
                .find(|v| v.name == "mtls-principals")
                .unwrap_or_else(|| panic!("{role:?} has the principals volume"));
            let secret = volume.secret.unwrap();
            assert_eq!(secret.secret_name.as_deref(), Some("north-principals"));
            assert_eq!(secret.optional, Some(false));
            let mount = pod.containers[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .find(|m| m.name == "mtls-principals")
                .cloned()
                .unwrap_or_else(|| panic!("{role:?} mounts the principals"));
            assert_eq!(mount.mount_path, "/etc/stockflow/mtls-principals");
            assert_eq!(mount.read_only, Some(true));
        }
        // Another key of the Secret; the document rolls the pods when it moves.
        let hash = config_hash(&r);
        if let Some(p) = r
            .spec
            .tls
            .as_mut()
            .and_then(|t| t.principals_secret.as_mut())
        {
            p.key = "north.json".into();
        }
        assert_eq!(
            config_data(&r)["STOCKFLOW_MTLS_PRINCIPALS"],
            "/etc/stockflow/mtls-principals/north.json"
        );
        assert_ne!(config_hash(&r), hash);
        // Without the client CA the principals authenticate nobody (the CRD refuses it).
        if let Some(t) = r.spec.tls.as_mut() {
            t.client_ca_secret = None;
        }
        assert!(!authenticated(&r));
    }

    #[test]
    fn every_secret_a_region_names_is_listed_once_with_its_field() {
        use crate::crd::{KafkaSaslSpec, KafkaSecurityProtocol, SaslMechanism, TlsSpec};
        let mut r = region("north");
        assert!(secret_references(&r).is_empty());
        r.spec.scylla.credentials_secret = Some("scylla-auth".into());
        r.spec.scylla.tls = Some(TlsSpec {
            ca_secret: "shared-ca".into(),
            ca_key: "ca.crt".into(),
        });
        let kafka = r.spec.bus.kafka.as_mut().expect("kafka");
        kafka.security_protocol = KafkaSecurityProtocol::SaslSsl;
        kafka.sasl = Some(KafkaSaslSpec {
            mechanism: SaslMechanism::ScramSha512,
            credentials_secret: "kafka-auth".into(),
        });
        kafka.tls = Some(TlsSpec {
            ca_secret: "shared-ca".into(),
            ca_key: "ca.crt".into(),
        });
        r.spec.tls = Some(crate::crd::ApiTlsSpec {
            secret_name: "north-tls".into(),
            client_ca_secret: Some("stores-ca".into()),
            principals_secret: Some(crate::crd::PrincipalsSecretSpec {
                name: "north-principals".into(),
                key: "principals.json".into(),
            }),
        });
        r.spec.auth = Some(crate::crd::AuthSpec {
            issuer: "https://idp.example".into(),
            audience: "north".into(),
            jwks_url: None,
            jwks_secret: Some(crate::crd::SecretKeySpec {
                name: "north-jwks".into(),
                key: "jwks.json".into(),
            }),
        });
        let refs = secret_references(&r);
        let names: Vec<(&str, &str)> = refs.iter().map(|(f, n)| (*f, n.as_str())).collect();
        assert_eq!(
            names,
            [
                ("spec.scylla.credentialsSecret", "scylla-auth"),
                ("spec.scylla.tls.caSecret", "shared-ca"),
                ("spec.bus.kafka.sasl.credentialsSecret", "kafka-auth"),
                ("spec.tls.secretName", "north-tls"),
                ("spec.tls.clientCaSecret", "stores-ca"),
                ("spec.tls.principalsSecret", "north-principals"),
                ("spec.auth.jwksSecret", "north-jwks"),
            ]
        );
        // Every Secret a pod of the region reads is among them.
        let listed: Vec<String> = secret_references(&r).into_iter().map(|(_, n)| n).collect();
        for pod in [
            deployment(&r, Role::CommandApi).spec.unwrap().template.spec,
            migration_job(&r).spec.unwrap().template.spec,
        ] {
            let pod = pod.unwrap();
            let from_env = pod.containers[0]
                .env
                .iter()
                .flatten()
                .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|s| s.name.clone());
            let from_volumes = pod
                .volumes
                .iter()
                .flatten()
                .filter_map(|v| v.secret.as_ref()?.secret_name.clone());
            for name in from_env.chain(from_volumes) {
                assert!(listed.contains(&name), "{name} is checked");
            }
        }
    }

    #[test]
    fn images_are_allowed_by_prefix_and_any_image_without_prefixes() {
        let prefixes = vec![
            "registry.example.com/stockflow/".to_string(),
            "stockflow/stockflow:".to_string(),
        ];
        assert!(image_allowed("anything:1", &[]));
        assert!(image_allowed(
            "registry.example.com/stockflow/stockflow:1.2",
            &prefixes
        ));
        assert!(image_allowed("stockflow/stockflow:0.1.0", &prefixes));
        assert!(!image_allowed(
            "registry.example.com/other/stockflow:1",
            &prefixes
        ));
        assert!(!image_allowed(
            "evil.example.com/stockflow/stockflow:1",
            &prefixes
        ));
        assert!(!image_allowed("stockflow/stockflow-debug:1", &prefixes));
    }

    #[test]
    fn default_names_carry_the_uid_and_are_kept_once_recorded() {
        let mut a = region("north");
        a.spec.scylla.keyspace = None;
        let mut b = a.clone();
        b.metadata.namespace = Some("other".into());
        b.metadata.uid = Some("another-uid".into());
        // Two regions with the same regionId never pick the same default.
        assert_ne!(keyspace(&a), keyspace(&b));
        assert_ne!(topic(&a), topic(&b));
        assert_eq!(keyspace(&a), format!("stockflow_north_{}", uid_suffix(&a)));
        assert_eq!(
            topic(&a),
            format!("stockflow-north-{}-stock-events", uid_suffix(&a))
        );
        assert_eq!(uid_suffix(&a).len(), 6);
        // Explicit names are kept as written.
        let mut explicit = a.clone();
        explicit.spec.scylla.keyspace = Some("mine".into());
        explicit.spec.bus.topic = Some("my-topic".into());
        assert_eq!(
            (keyspace(&explicit), topic(&explicit)),
            ("mine".into(), "my-topic".into())
        );
        // What the status recorded wins over any default computed later.
        a.status = Some(crate::crd::InventoryRegionStatus {
            observed_generation: Some(1),
            keyspace: Some("recorded_ks".into()),
            topic: Some("recorded-topic".into()),
            ..Default::default()
        });
        assert_eq!(keyspace(&a), "recorded_ks");
        assert_eq!(topic(&a), "recorded-topic");
        assert_eq!(config_data(&a)["STOCKFLOW_BUS_TOPIC"], "recorded-topic");
        // A region an older operator reconciled (a status without names) keeps the old
        // default topic it already runs on.
        a.status = Some(crate::crd::InventoryRegionStatus {
            observed_generation: Some(4),
            ..Default::default()
        });
        assert_eq!(topic(&a), "stockflow-north-stock-events");
        // The longest region id still gives valid names.
        let mut long = region("north");
        long.spec.region_id = "a".repeat(32);
        long.spec.scylla.keyspace = None;
        assert!(keyspace(&long).len() <= 48, "{}", keyspace(&long));
        assert!(topic(&long).len() <= 63, "{}", topic(&long));
    }
}
