//! Unit tests of the builders: the children, their ownership, probes, services and
//! names; what configuration reaches the processes is [`config`]'s.

mod config;

use super::*;
use crate::fixtures::region;
use k8s_openapi::api::core::v1::{PodSpec, Probe, Volume, VolumeMount};

/// The pod template of `role`'s Deployment.
fn pod_of(r: &InventoryRegion, role: Role) -> PodSpec {
    deployment(r, role)
        .spec
        .expect("spec")
        .template
        .spec
        .expect("pod spec")
}

/// The pod's volume named `name`.
fn volume_named(pod: &PodSpec, name: &str) -> Option<Volume> {
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .cloned()
}

/// The first container's mount of volume `name`.
fn mount_named(pod: &PodSpec, name: &str) -> Option<VolumeMount> {
    pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == name)
        .cloned()
}

#[test]
fn every_child_is_owned_by_the_region_and_labelled() {
    let r = region("north");
    let owner = owner(&r).expect("owner reference");
    assert_eq!(owner.kind, "InventoryRegion");
    assert_eq!(owner.controller, Some(true));
    for role in Role::REGION {
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
    let volumes: Vec<String> = pod_of(&r, Role::CommandApi)
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    assert_eq!(
        volumes,
        ["scratch"],
        "a JWKS URL mounts nothing (the command API's scratch for uploads is its own)"
    );
}

#[test]
fn only_the_command_api_has_scratch_space_and_it_is_an_empty_dir_at_tmp() {
    let r = region("north");
    for role in Role::REGION {
        let pod = pod_of(&r, role);
        let scratch = volume_named(&pod, "scratch");
        assert_eq!(scratch.is_some(), role == Role::CommandApi, "{role}");
        if let Some(v) = scratch {
            assert!(v.empty_dir.is_some_and(|e| e.size_limit.is_some()));
            assert_eq!(
                mount_named(&pod, "scratch").map(|m| m.mount_path),
                Some("/tmp".to_string())
            );
        }
    }
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
