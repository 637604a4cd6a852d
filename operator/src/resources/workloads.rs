//! The long-running objects of a region: one Deployment per role (non-root, read-only
//! root filesystem, probes, a config hash that rolls pods on a settings change), the
//! Services of the exposed roles, and disruption budgets for replicated ones.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, HTTPGetAction, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::{config_hash, secret_env, secret_volumes};
use super::{HTTP_PORT, Role, child_name, config_name, labels, meta, role_spec, selector};
use crate::crd::{InventoryRegion, RoleSpec};

/// The command API's scratch space for uploads being received (an import is at most 1 GiB).
const SCRATCH_SIZE: &str = "2Gi";

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

pub(super) fn container(
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

pub(super) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(65532),
        fs_group: Some(65532),
        ..PodSecurityContext::default()
    }
}

/// The Deployment of `role`.
pub fn deployment(region: &InventoryRegion, role: Role) -> Deployment {
    let spec = role_spec(region, role);
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
    let (mut volumes, mut mounts) = secret_volumes(region);
    if role == Role::CommandApi {
        // The root filesystem is read-only: an import's upload is staged in a scratch
        // volume (the file is then kept in the keyspace, where every replica reads it).
        volumes.push(Volume {
            name: "scratch".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: Some(Quantity(SCRATCH_SIZE.into())),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: "scratch".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        });
    }
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
    (role_spec(region, role).replicas > 1).then(|| PodDisruptionBudget {
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
