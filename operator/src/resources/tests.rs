//! Unit tests of the builders.

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
    let pod = pod_of(&r, Role::QueryApi);
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
    // On Fluvio, the events' form travels with the endpoint.
    let mut on_fluvio = r.clone();
    on_fluvio.spec.bus.kafka = None;
    on_fluvio.spec.bus.fluvio = Some(crate::crd::FluvioSpec {
        endpoint: "fluvio:9003".into(),
        cloudevents: crate::crd::FluvioEvents::Structured,
    });
    let fluvio = config_data(&on_fluvio);
    assert_eq!(fluvio["STOCKFLOW_BUS"], "fluvio");
    assert_eq!(fluvio["STOCKFLOW_FLUVIO_CLOUDEVENTS"], "structured");
    assert!(!fluvio.contains_key("STOCKFLOW_KAFKA_BROKERS"));
    // The default is left out, so regions that keep it are not rolled by this setting.
    if let Some(f) = on_fluvio.spec.bus.fluvio.as_mut() {
        f.cloudevents = crate::crd::FluvioEvents::Plain;
    }
    assert!(!config_data(&on_fluvio).contains_key("STOCKFLOW_FLUVIO_CLOUDEVENTS"));
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
    for role in Role::REGION {
        let pod = pod_of(&r, role);
        let volume = volume_named(&pod, "mtls-principals")
            .unwrap_or_else(|| panic!("{role:?} has the principals volume"));
        let secret = volume.secret.unwrap();
        assert_eq!(secret.secret_name.as_deref(), Some("north-principals"));
        assert_eq!(secret.optional, Some(false));
        let mount = mount_named(&pod, "mtls-principals")
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
