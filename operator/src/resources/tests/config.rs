//! What reaches the roles' processes: the ConfigMap's settings, and the Secrets and their
//! fields as environment variables and mounted files.

use super::*;
use crate::crd::{KafkaSaslSpec, KafkaSecurityProtocol, SaslMechanism, TlsSpec};

/// `r`'s Kafka over SASL_SSL with `mechanism`, its credentials in the Secret `kafka-auth`,
/// and the brokers' CA at `ca.crt` of `ca_secret`.
fn kafka_over_sasl_ssl(r: &mut InventoryRegion, mechanism: SaslMechanism, ca_secret: &str) {
    let kafka = r.spec.bus.kafka.as_mut().expect("kafka");
    kafka.security_protocol = KafkaSecurityProtocol::SaslSsl;
    kafka.sasl = Some(KafkaSaslSpec {
        mechanism,
        credentials_secret: "kafka-auth".into(),
    });
    kafka.tls = Some(TlsSpec {
        ca_secret: ca_secret.into(),
        ca_key: "ca.crt".into(),
    });
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
fn bus_and_tls_secrets_reach_every_container_as_env_from_secrets() {
    let mut r = region("north");
    kafka_over_sasl_ssl(&mut r, SaslMechanism::Plain, "kafka-ca");
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
    let mut r = region("north");
    assert!(secret_references(&r).is_empty());
    r.spec.scylla.credentials_secret = Some("scylla-auth".into());
    r.spec.scylla.tls = Some(TlsSpec {
        ca_secret: "shared-ca".into(),
        ca_key: "ca.crt".into(),
    });
    kafka_over_sasl_ssl(&mut r, SaslMechanism::ScramSha512, "shared-ca");
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
