//! The operator's region actually runs. Against the test command's real kube-apiserver,
//! Cassandra and Kafka: the generated CRD and the sample region `config/samples/local.yaml`
//! (with this run's names and the test command's ports) are applied; the operator reconciles; the local kubelet
//! ([`stockflow_e2e::kubelet`]) runs the migration Job and every Deployment replica as a
//! `stockflow` process with a read-only root filesystem. The region must become Available,
//! serve commands and queries, survive SIGKILLed workers, roll out a spec change, freeze
//! while paused, and be deleted under both deletion policies.

// A test: a failed call is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use stockflow_e2e::kubelet::{Kubelet, KubeletConfig};
use stockflow_e2e::{put_warehouse, required, stockflow_bin};
use stockflow_operator::controller::{self, Context};
use stockflow_operator::crd::InventoryRegion;

async fn client() -> Client {
    let kubeconfig = Kubeconfig::read_from(required("STOCKFLOW_KUBECONFIG")).unwrap();
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// Applies `crds/` as generated, and waits until it is served.
async fn install_crd(client: &Client) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crds/inventoryregions.stockflow.dev.yaml"
    ))
    .unwrap();
    let crd: CustomResourceDefinition = serde_yaml::from_str(&text).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &crd.name_any(),
        &PatchParams::apply("stockflow-region-test").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let name = crd.name_any();
    let established = await_condition(crds, &name, conditions::is_crd_established());
    tokio::time::timeout(Duration::from_secs(30), established)
        .await
        .unwrap()
        .unwrap();
}

/// Polls `check` every 250 ms until it gives a value; fails after `within`.
async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn condition(region: &InventoryRegion, type_: &str) -> Option<String> {
    region
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
}

/// Waits until the region's status describes its current generation and says Available.
async fn available(regions: &Api<InventoryRegion>, name: &str, kubelet: &Kubelet) {
    let what = format!("{name} Available at its generation");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let r = regions.get(name).await.unwrap();
        let current =
            r.status.as_ref().and_then(|s| s.observed_generation) == r.metadata.generation;
        if current
            && condition(&r, "Available").as_deref() == Some("True")
            && condition(&r, "Progressing").as_deref() == Some("False")
            && condition(&r, "Degraded").as_deref() == Some("False")
        {
            return;
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = kubelet
                .pods()
                .iter()
                .map(|p| {
                    format!(
                        "{} (ready {}, restarts {}):\n{}",
                        p.name,
                        p.ready,
                        p.restarts,
                        kubelet.log_tail(&p.name)
                    )
                })
                .collect();
            panic!(
                "timed out waiting for {what}: status {:?}\n{}",
                r.status,
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn post(client: &reqwest::Client, url: String, key: &str, body: Value) -> (u16, Value) {
    for _ in 0..50 {
        match client
            .post(&url)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() != 503 => {
                let status = r.status().as_u16();
                return (status, r.json().await.unwrap_or(Value::Null));
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    panic!("{url} never answered definitely");
}

/// The sample region `config/samples/local.yaml`, pointed at the test's servers.
fn sample(ns: &str, name: &str, keyspace: &str, nodes: &str, brokers: &str, policy: &str) -> Value {
    let region = named(
        include_str!("../config/samples/local.yaml"),
        (ns, name, keyspace),
        nodes,
        policy,
    );
    with_brokers(region, brokers)
}

/// A sample with this run's names, nodes and deletion policy.
fn named(yaml: &str, (ns, name, keyspace): (&str, &str, &str), nodes: &str, policy: &str) -> Value {
    let mut region: Value = serde_yaml::from_str(yaml).unwrap();
    region["metadata"] = json!({"name": name, "namespace": ns});
    let spec = &mut region["spec"];
    spec["regionId"] = json!(name);
    spec["scylla"]["nodes"] = json!(nodes.split(',').collect::<Vec<_>>());
    spec["scylla"]["keyspace"] = json!(keyspace);
    spec["scylla"]["replicationFactor"] = json!(1);
    spec["deletionPolicy"] = json!(policy);
    region
}

/// The region's Kafka brokers and a small topic; its other bus settings are kept.
fn with_brokers(mut region: Value, brokers: &str) -> Value {
    region["spec"]["bus"]["kafka"]["brokers"] = json!(brokers.split(',').collect::<Vec<_>>());
    region["spec"]["bus"]["partitions"] = json!(4);
    region["spec"]["bus"]["replication"] = json!(1);
    region
}

async fn keyspace_exists(nodes: &str, keyspace: &str) -> bool {
    let config = stockflow_storage::scylla::ScyllaConfig::new(
        nodes.split(',').map(str::to_string).collect(),
        keyspace.to_string(),
    );
    let session = stockflow_storage::scylla::connect(&config).await.unwrap();
    let rows = session
        .query_unpaged(
            "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (keyspace,),
        )
        .await
        .unwrap();
    rows.into_rows_result().unwrap().rows_num() > 0
}

#[allow(clippy::too_many_lines)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_region_runs_serves_rolls_out_pauses_and_is_deleted() {
    let nodes = required("STOCKFLOW_CQL_NODES");
    let brokers = required("STOCKFLOW_KAFKA_BROKERS");
    let client = client().await;
    install_crd(&client).await;
    let run = std::process::id();
    let ns = format!("region-{run}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let kubelet = Kubelet::start(
        client.clone(),
        KubeletConfig {
            namespace: ns.clone(),
            binary: stockflow_bin(),
            log_dir: logs.path().to_path_buf(),
        },
    );
    let ctx = Arc::new(Context::new(client.clone(), Some("region-test".into())));
    let operator = tokio::spawn(controller::run(ctx, Some(ns.clone())));

    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), &ns);
    let name = format!("north-{run}");
    let keyspace = format!("region_{run}");
    let body = sample(&ns, &name, &keyspace, &nodes, &brokers, "Delete");
    regions
        .patch(
            &name,
            &PatchParams::apply("region-test").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
    available(&regions, &name, &kubelet).await;
    assert!(
        keyspace_exists(&nodes, &keyspace).await,
        "the migration Job created the keyspace"
    );

    // Commands through the command API's processes, queries through the query API's.
    let http = reqwest::Client::new();
    let commands = kubelet.ready_pods(&format!("{name}-command-api"));
    let queries = kubelet.ready_pods(&format!("{name}-query-api"));
    assert_eq!(
        (commands.len(), queries.len()),
        (2, 2),
        "{:?}",
        kubelet.pods()
    );
    let command = |i: usize| format!("http://127.0.0.1:{}", commands[i % commands.len()].port);
    let query = format!("http://127.0.0.1:{}", queries[0].port);
    put_warehouse(&http, &command(0), "dc", "north").await;
    let skus = 6;
    for s in 0..skus {
        let (status, _) = post(&http, format!("{}/v1/adjustments", command(s)), &format!("init-{s}"),
            json!({"sku": format!("R{s}"), "location": "dc", "set_on_hand": 20, "reason": "cycle_count"})).await;
        assert_eq!(status, 200);
    }
    // A reservation without a TTL gets the region's reservationTtlSeconds (900 s).
    let (status, reservation) = post(
        &http,
        format!("{}/v1/reservations", command(0)),
        "ttl-default",
        json!({"lines": [{"sku": "R0", "location": "dc", "qty": 1}]}),
    )
    .await;
    assert_eq!(status, 201, "{reservation}");
    let ttl = |r: &Value| {
        let parse = |f: &str| {
            r[f].as_str()
                .unwrap()
                .parse::<k8s_openapi::jiff::Timestamp>()
                .unwrap()
        };
        (parse("expires_at") - parse("created_at")).get_seconds()
    };
    assert_eq!(ttl(&reservation), 900);

    // A load, with one publisher and one projector SIGKILLed midway (the kubelet restarts
    // them).
    let mut expected = vec![20i64; skus];
    expected[0] = 20;
    let mut held = vec![0i64; skus];
    held[0] = 1;
    for i in 0..60 {
        let s = i % skus;
        if i == 20 {
            for role in ["publisher", "projector"] {
                let pod = kubelet.ready_pods(&format!("{name}-{role}")).remove(0);
                kubelet.kill(&pod.name);
            }
        }
        if i % 3 == 0 {
            let (status, _) = post(&http, format!("{}/v1/reservations", command(i)), &format!("load-{i}"),
                json!({"lines": [{"sku": format!("R{s}"), "location": "dc", "qty": 1}], "ttl_seconds": 3600})).await;
            assert_eq!(status, 201);
            held[s] += 1;
        } else {
            let (status, _) = post(
                &http,
                format!("{}/v1/adjustments", command(i)),
                &format!("load-{i}"),
                json!({"sku": format!("R{s}"), "location": "dc", "delta": 1, "reason": "receipt"}),
            )
            .await;
            assert_eq!(status, 200);
            expected[s] += 1;
        }
    }
    for s in 0..skus {
        let want = (expected[s], held[s]);
        eventually(
            &format!("R{s} in the read model"),
            Duration::from_secs(60),
            || {
                let http = http.clone();
                let url = format!("{query}/v1/stock/R{s}/dc");
                async move {
                    let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                    (body["on_hand"].as_i64() == Some(want.0)
                        && body["reserved"].as_i64() == Some(want.1))
                    .then_some(())
                }
            },
        )
        .await;
    }
    let restarted = kubelet
        .pods()
        .into_iter()
        .filter(|p| {
            p.restarts > 0 && (p.owner.ends_with("-publisher") || p.owner.ends_with("-projector"))
        })
        .count();
    if restarted != 2 {
        let logs: Vec<String> = kubelet
            .pods()
            .iter()
            .filter(|p| p.restarts > 0)
            .map(|p| format!("{}:\n{}", p.name, kubelet.log_tail(&p.name)))
            .collect();
        panic!(
            "the kubelet restarted the 2 killed workers and only them: {:?}\n{}",
            kubelet.pods(),
            logs.join("\n")
        );
    }

    // A spec change rolls out: one more command API, a shorter default TTL.
    let generation = regions.get(&name).await.unwrap().metadata.generation;
    regions
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {
            "roles": {"commandApi": {"replicas": 3}}, "reservationTtlSeconds": 120}})),
        )
        .await
        .unwrap();
    eventually("a new generation", Duration::from_secs(10), || {
        let regions = regions.clone();
        let name = name.clone();
        async move { (regions.get(&name).await.ok()?.metadata.generation != generation).then_some(()) }
    })
    .await;
    available(&regions, &name, &kubelet).await;
    let commands = kubelet.ready_pods(&format!("{name}-command-api"));
    assert_eq!(commands.len(), 3, "{:?}", kubelet.pods());
    let (status, reservation) = post(
        &http,
        format!("http://127.0.0.1:{}/v1/reservations", commands[2].port),
        "ttl-rolled",
        json!({"lines": [{"sku": "R1", "location": "dc", "qty": 1}]}),
    )
    .await;
    assert_eq!(status, 201);
    assert_eq!(
        ttl(&reservation),
        120,
        "the rolled-out pods read the new TTL"
    );

    // Paused: spec changes wait.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    regions
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({
            "metadata": {"annotations": {"stockflow.dev/paused": "true"}},
            "spec": {"roles": {"queryApi": {"replicas": 3}}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let replicas = |d: Deployment| d.spec.and_then(|s| s.replicas);
    assert_eq!(
        replicas(deployments.get(&format!("{name}-query-api")).await.unwrap()),
        Some(2),
        "a paused region is frozen"
    );
    regions
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({
            "metadata": {"annotations": {"stockflow.dev/paused": null}}})),
        )
        .await
        .unwrap();
    available(&regions, &name, &kubelet).await;
    assert_eq!(kubelet.ready_pods(&format!("{name}-query-api")).len(), 3);

    // A second region, retained on deletion, with no replicas beyond its migration.
    let kept = format!("kept-{run}");
    let kept_keyspace = format!("kept_{run}");
    let mut body = sample(&ns, &kept, &kept_keyspace, &nodes, &brokers, "Retain");
    body["spec"]["roles"] = json!({"commandApi": {"replicas": 0}, "queryApi": {"replicas": 0},
        "publisher": {"replicas": 0}, "projector": {"replicas": 0}, "webhooks": {"replicas": 0}});
    regions
        .patch(
            &kept,
            &PatchParams::apply("region-test").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
    available(&regions, &kept, &kubelet).await;

    // A third region as managed services run: Kafka over SASL_SSL (SCRAM) and ScyllaDB over
    // TLS, every credential and CA from Secrets, which only the pods read. Its events go
    // through the broker's SASL_SSL listener, the only one these credentials open.
    let secure = format!("secure-{run}");
    let secure_keyspace = format!("secure_{run}");
    let tls_dir = std::path::PathBuf::from(required("STOCKFLOW_TEST_TLS_DIR"));
    let ca = std::fs::read_to_string(tls_dir.join("ca.pem")).unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
    for (secret, data) in [
        (
            "kafka-credentials",
            json!({"username": "stockflow", "password": "stockflow-secret"}),
        ),
        ("test-ca", json!({"ca.crt": ca})),
    ] {
        secrets
            .create(
                &PostParams::default(),
                // Labelled for regions: the operator mounts no other Secret.
                &serde_json::from_value(json!({"metadata": {"name": secret,
                    "labels": {"stockflow.dev/usage": "region"}}, "stringData": data}))
                .unwrap(),
            )
            .await
            .unwrap();
    }
    let sasl_brokers = required("STOCKFLOW_TEST_KAFKA_SASL_SSL_BROKERS");
    // config/samples/managed.yaml, with the test's servers, Secrets and one pod per role.
    let managed = named(
        include_str!("../config/samples/managed.yaml"),
        (&ns, &secure, &secure_keyspace),
        &nodes,
        "Delete",
    );
    let mut body = with_brokers(managed, &sasl_brokers);
    body["spec"]["scylla"]["localDc"] = json!("datacenter1");
    // The test Cassandra has no authentication; the Secret-sourced TLS CA stays.
    body["spec"]["scylla"]
        .as_object_mut()
        .unwrap()
        .remove("credentialsSecret");
    body["spec"]["scylla"]["tls"] = json!({"caSecret": "test-ca"});
    body["spec"]["bus"]["kafka"]["tls"] = json!({"caSecret": "test-ca"});
    // The test calls the APIs without tokens: open, said explicitly (the sample's `auth`
    // names an identity provider the test has not).
    let spec = body["spec"].as_object_mut().unwrap();
    spec.remove("auth");
    spec.insert("insecureNoAuth".into(), json!(true));
    body["spec"]["roles"] = json!({"commandApi": {"replicas": 1}, "queryApi": {"replicas": 1},
        "publisher": {"replicas": 1}, "projector": {"replicas": 1}, "webhooks": {"replicas": 1}});
    regions
        .patch(
            &secure,
            &PatchParams::apply("region-test").force(),
            &Patch::Apply(&body),
        )
        .await
        .unwrap();
    available(&regions, &secure, &kubelet).await;
    let command = format!(
        "http://127.0.0.1:{}",
        kubelet.ready_pods(&format!("{secure}-command-api"))[0].port
    );
    let query = format!(
        "http://127.0.0.1:{}",
        kubelet.ready_pods(&format!("{secure}-query-api"))[0].port
    );
    put_warehouse(&http, &command, "dc", "secure").await;
    let (status, _) = post(
        &http,
        format!("{command}/v1/adjustments"),
        "secure-init",
        json!({"sku": "S1", "location": "dc", "set_on_hand": 7, "reason": "cycle_count"}),
    )
    .await;
    assert_eq!(status, 200);
    eventually(
        "S1 in the secure region's read model (through SASL_SSL)",
        Duration::from_secs(60),
        || {
            let http = http.clone();
            let url = format!("{query}/v1/stock/S1/dc");
            async move {
                let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
                (body["on_hand"].as_i64() == Some(7)).then_some(())
            }
        },
    )
    .await;

    // The default topic carries the region's uid; the status says which one it is.
    let topic_name = regions
        .get(&name)
        .await
        .unwrap()
        .status
        .and_then(|s| s.topic)
        .unwrap();
    assert!(topic_name.starts_with(&format!("stockflow-{name}-")));

    // Deletion completes for every policy: Delete drops the keyspace and the topic (the
    // teardown Job, with the region's own credentials), Retain keeps its keyspace.
    for region in [&name, &kept, &secure] {
        regions
            .delete(region, &DeleteParams::default())
            .await
            .unwrap();
        eventually(
            &format!("{region} deleted"),
            Duration::from_secs(60),
            || {
                let regions = regions.clone();
                let region = region.clone();
                async move { regions.get_opt(&region).await.ok()?.is_none().then_some(()) }
            },
        )
        .await;
    }
    assert!(
        !keyspace_exists(&nodes, &keyspace).await,
        "Delete dropped the keyspace"
    );
    assert!(
        keyspace_exists(&nodes, &kept_keyspace).await,
        "Retain kept the keyspace"
    );
    assert!(
        !keyspace_exists(&nodes, &secure_keyspace).await,
        "the secure region's teardown dropped its keyspace over TLS"
    );
    let mut topic = stockflow_bus::kafka::KafkaConfig::new(
        brokers.split(',').map(str::to_string).collect(),
        topic_name,
        4,
    );
    topic.create_topic = false;
    assert!(
        matches!(
            stockflow_bus::kafka::ensure_topic(&topic).await,
            Err(stockflow_bus::BusError::TopicMissing { .. })
        ),
        "Delete deleted the topic"
    );
    operator.abort();
    drop(kubelet);
}
