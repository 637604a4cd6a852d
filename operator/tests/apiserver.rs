//! The operator against a real kube-apiserver (built from the k8s.io/kubernetes Go module,
//! over kine). There are no kubelets: the tests check what the operator writes and set the
//! children's status themselves.
//!
//! Needs `STOCKFLOW_KUBECONFIG` (scripts/test.sh starts the API server and sets it);
//! skipped with a message otherwise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, CustomResourceExt, ResourceExt};
use serde_json::json;
use stockflow_domain::Role;
use stockflow_operator::controller::{self, Context};
use stockflow_operator::crd::InventoryRegion;
use tokio::sync::OnceCell;

/// A client of the test command's kube-apiserver. These tests are the operator's proof
/// against a real API server, so a missing one fails them instead of skipping.
async fn client() -> Client {
    let path = std::env::var("STOCKFLOW_KUBECONFIG").expect(
        "STOCKFLOW_KUBECONFIG is unset: run ./scripts/test.sh, which starts a kube-apiserver and sets it",
    );
    let kubeconfig = Kubeconfig::read_from(path).expect("kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

/// Installs the CRD once per test binary, the way `crds/` would.
async fn install_crd(client: &Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let crd = InventoryRegion::crd();
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("stockflow-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("the API server accepts the generated CRD");
        let name = crd.name_any();
        let established = await_condition(crds, &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(30), established)
            .await
            .expect("CRD established")
            .expect("watch");
    })
    .await;
}

async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let _ = api.create(&PostParams::default(), &ns).await;
}

/// A keyspace of this test run only: regions left by an earlier run on the same API server
/// would otherwise share it, and a shared keyspace is never dropped.
fn keyspace(name: &str) -> String {
    format!("{}_ks_{}", name.replace('-', "_"), std::process::id())
}

fn region_json(name: &str, policy: &str) -> serde_json::Value {
    json!({
        "apiVersion": "stockflow.dev/v1alpha1",
        "kind": "InventoryRegion",
        "metadata": {"name": name},
        "spec": {
            "regionId": name,
            "image": "stockflow:1",
            "scylla": {"nodes": ["scylla:9042"], "keyspace": keyspace(name)},
            // A bus of this run only, for the same reason as the keyspace.
            "bus": {"kafka": {"brokers": [format!("kafka-{}:9092", std::process::id())]}},
            "deletionPolicy": policy,
            // Open, as these tests need no callers; the tests of authentication drop it.
            "insecureNoAuth": true
        }
    })
}

/// The roles a region deploys, as its Deployments are named.
fn roles() -> [&'static str; Role::REGION.len()] {
    Role::REGION.map(Role::name)
}

/// Polls until `check` passes or 30 s elapse.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A controller for one namespace, so tests running side by side stay apart.
fn start_controller(client: &Client, ns: &str) -> tokio::task::JoinHandle<()> {
    start_controller_allowing(client, ns, Vec::new())
}

/// A controller for one namespace that runs only images under `prefixes` (none: any).
fn start_controller_allowing(
    client: &Client,
    ns: &str,
    prefixes: Vec<String>,
) -> tokio::task::JoinHandle<()> {
    // The operator's logs, shown for a failed test (RUST_LOG picks the level).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let ctx = Arc::new(
        Context::new(client.clone(), Some("test".into())).with_allowed_image_prefixes(prefixes),
    );
    tokio::spawn(controller::run(ctx, Some(ns.to_string())))
}

/// Creates an Opaque Secret with `data`, labelled for regions or not.
async fn secret(client: &Client, ns: &str, name: &str, data: serde_json::Value, labelled: bool) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let labels = if labelled {
        json!({"stockflow.dev/usage": "region"})
    } else {
        json!({})
    };
    let body = json!({"metadata": {"name": name, "labels": labels}, "stringData": data});
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).expect("secret"),
        )
        .await
        .expect("create secret");
}

/// The condition `type_` of a region's status, if any.
fn condition(region: &InventoryRegion, type_: &str) -> Option<stockflow_operator::crd::Condition> {
    region
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// `(type, reason, note)` of every event about `region`.
async fn events(client: &Client, ns: &str, region: &str) -> Vec<(String, String, String)> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(region))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Waits for a Warning event `reason` about `region` and returns its note.
async fn warning(client: &Client, ns: &str, region: &str, reason: &str) -> String {
    eventually(&format!("{reason} warning on {region}"), || async {
        events(client, ns, region)
            .await
            .into_iter()
            .find(|(t, r, _)| t == "Warning" && r == reason)
            .map(|(_, _, note)| note)
    })
    .await
}

async fn set_ready(client: &Client, ns: &str, name: &str, replicas: i32) {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = api.get(name).await.expect("deployment");
    let generation = d.metadata.generation.unwrap_or(1);
    let status = json!({"status": {"observedGeneration": generation, "replicas": replicas, "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("deployment status");
}

async fn succeed_job(client: &Client, ns: &str, name: &str) {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {"succeeded": 1, "startTime": now, "completionTime": now,
    "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
        {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
    ]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("job status");
}

/// Plays the kubelet for a region's teardown Job: waits for it, ends it with `outcome`
/// (`Complete` or `Failed`), and returns its arguments.
async fn end_teardown(client: &Client, ns: &str, region: &str, outcome: &str) -> Vec<String> {
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let name = format!("{region}-teardown");
    let job = eventually("teardown job", || async { api.get_opt(&name).await.ok()? }).await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = if outcome == "Complete" {
        json!({"status": {"succeeded": 1, "startTime": now, "completionTime": now,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastProbeTime": now, "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastProbeTime": now, "lastTransitionTime": now}
        ]}})
    } else {
        json!({"status": {"failed": 1, "startTime": now,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"},
            {"type": "Failed", "status": "True", "lastProbeTime": now, "lastTransitionTime": now, "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}
        ]}})
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("teardown job status");
    job.spec
        .and_then(|s| s.template.spec)
        .and_then(|p| p.containers.into_iter().next())
        .and_then(|c| c.args)
        .unwrap_or_default()
}

/// Asks for a region's deletion.
async fn delete_region(client: &Client, ns: &str, name: &str) {
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    regions
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete region");
}

/// Waits until a region is gone, and its teardown Job with it.
async fn gone(client: &Client, ns: &str, name: &str) {
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job = format!("{name}-teardown");
    eventually("region and teardown job gone", || async {
        let region_gone = regions.get_opt(name).await.ok()?.is_none();
        // A deleted Job lingers until its own finalizers run; deletion requested is enough.
        let job_gone = jobs
            .get_opt(&job)
            .await
            .ok()?
            .is_none_or(|j| j.metadata.deletion_timestamp.is_some());
        (region_gone && job_gone).then_some(())
    })
    .await;
}

async fn event_reasons(client: &Client, ns: &str, region: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    events
        .list(&Default::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(region))
        .filter_map(|e| e.reason)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_refuses_invalid_specs_with_the_schema_message() {
    let client = client().await;
    install_crd(&client).await;
    let ns = &format!("invalid-{}", std::process::id());
    namespace(&client, ns).await;
    let api: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    let cases = [
        (json!({"regionId": "Bad_Region"}), "spec.regionId"),
        (
            json!({"reservationTtlSeconds": 0}),
            "spec.reservationTtlSeconds",
        ),
        (
            json!({"bus": {"kafka": {"brokers": ["x:9092"]}, "partitions": 5000}}),
            "spec.bus.partitions",
        ),
        (
            json!({"bus": {"kafka": {"brokers": ["x:9092"]}, "fluvio": {"endpoint": "y:9003"}}}),
            "exactly one of bus.kafka and bus.fluvio",
        ),
        (
            json!({"bus": {"partitions": 4}}),
            "exactly one of bus.kafka and bus.fluvio",
        ),
        (
            json!({"scylla": {"nodes": [], "keyspace": "k"}}),
            "spec.scylla.nodes",
        ),
        (json!({"deletionPolicy": "Shred"}), "spec.deletionPolicy"),
        (
            json!({"bus": {"kafka": {"brokers": ["x:9092"], "securityProtocol": "SASL_SSL"}}}),
            "bus.kafka.sasl is required",
        ),
        (
            json!({"bus": {"kafka": {"brokers": ["x:9092"], "sasl": {"credentialsSecret": "s"}}}}),
            "bus.kafka.sasl is required",
        ),
        (
            json!({"bus": {"kafka": {"brokers": ["x:9092"], "tls": {"caSecret": "ca"}}}}),
            "bus.kafka.tls needs securityProtocol",
        ),
        (
            json!({"bus": {"kafka": {"brokers": ["x:9092"], "securityProtocol": "TLS"}}}),
            "securityProtocol",
        ),
        // Authentication is required: auth, or mutual TLS with principals, or an explicit
        // insecureNoAuth: true.
        (
            json!({"insecureNoAuth": false}),
            "authentication is required",
        ),
        (
            json!({"insecureNoAuth": false, "tls": {"secretName": "tls", "clientCaSecret": "ca"}}),
            "authentication is required",
        ),
        (
            json!({"auth": {"issuer": "https://idp", "audience": "a", "jwksUrl": "https://idp/jwks"}}),
            "spec.insecureNoAuth: true contradicts",
        ),
        (
            json!({"insecureNoAuth": false, "tls": {"secretName": "tls", "principalsSecret": {"name": "p"}}}),
            "tls.principalsSecret needs tls.clientCaSecret",
        ),
    ];
    for (i, (patch, field)) in cases.into_iter().enumerate() {
        let mut body = region_json(&format!("bad-{i}"), "Retain");
        for (k, v) in patch.as_object().unwrap() {
            body["spec"][k] = v.clone();
        }
        let region: InventoryRegion = match serde_json::from_value(body.clone()) {
            Ok(r) => r,
            // Some invalid values do not even parse on our side; send them raw.
            Err(_) => {
                let raw: Api<kube::core::DynamicObject> = Api::namespaced_with(
                    client.clone(),
                    ns,
                    &kube::core::ApiResource::erase::<InventoryRegion>(&()),
                );
                let obj: kube::core::DynamicObject = serde_json::from_value(body).unwrap();
                let err = raw
                    .create(&PostParams::default(), &obj)
                    .await
                    .unwrap_err()
                    .to_string();
                assert!(err.contains(field), "case {i}: {err}");
                continue;
            }
        };
        let err = api
            .create(&PostParams::default(), &region)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(field), "case {i}: expected {field} in {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_reconciles_rolls_out_follows_edits_and_is_deleted_cleanly() {
    let client = client().await;
    install_crd(&client).await;
    let ns = &format!("lifecycle-{}", std::process::id());
    namespace(&client, ns).await;
    let controller = start_controller(&client, ns);
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    let region: InventoryRegion = serde_json::from_value(region_json("north", "Delete")).unwrap();
    regions
        .create(&PostParams::default(), &region)
        .await
        .expect("create region");

    // Children with owner references; every role waits for the migration (schema and
    // topic), which would otherwise only crash-loop.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job = eventually("migration job", || async {
        jobs.list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    for role in roles() {
        assert!(
            deployments
                .get_opt(&format!("north-{role}"))
                .await
                .unwrap()
                .is_none(),
            "{role} waits for the migration"
        );
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    assert!(
        services
            .get_opt("north-command-api")
            .await
            .unwrap()
            .is_some()
    );
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    assert_eq!(
        configs.get("north-config").await.unwrap().data.unwrap()["STOCKFLOW_SCYLLA_KEYSPACE"],
        keyspace("north")
    );
    let r = eventually("status", || async {
        regions
            .get("north")
            .await
            .ok()
            .filter(|r| r.status.is_some())
    })
    .await;
    assert_eq!(
        r.status.as_ref().unwrap().phase.as_deref(),
        Some("Migrating")
    );
    assert!(r.finalizers().iter().any(|f| f == "stockflow.dev/cleanup"));

    // The migration succeeds: every role rolls out; simulated ready pods → Available.
    succeed_job(&client, ns, &job.name_any()).await;
    for role in roles() {
        let name = &format!("north-{role}");
        let d = eventually(name, || async { deployments.get_opt(name).await.ok()? }).await;
        let owner = &d.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("InventoryRegion", "north", Some(true))
        );
    }
    for role in roles() {
        set_ready(&client, ns, &format!("north-{role}"), 2).await;
    }
    let r = eventually("Available", || async {
        let r = regions.get("north").await.ok()?;
        let available = r
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True");
        available.then_some(r)
    })
    .await;
    let status = r.status.clone().unwrap();
    let cond = |t: &str| {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .status
            .clone()
    };
    assert_eq!(
        (cond("Available"), cond("Progressing"), cond("Degraded")),
        ("True".into(), "False".into(), "False".into())
    );
    assert_eq!(status.observed_generation, r.metadata.generation);
    assert_eq!(
        status.endpoints.unwrap().query_api,
        format!("http://north-query-api.{ns}.svc")
    );
    let available_since = r
        .status
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap()
        .last_transition_time
        .clone();

    // Editing the spec updates the children and bumps observedGeneration. (Condition times
    // have one-second resolution: let a second pass so the transition is visible.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let patch = json!({"spec": {"roles": {"queryApi": {"replicas": 5}}}});
    regions
        .patch("north", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("scaled query api", || async {
        let d = deployments.get("north-query-api").await.ok()?;
        (d.spec?.replicas == Some(5)).then_some(())
    })
    .await;
    eventually("observedGeneration", || async {
        let r = regions.get("north").await.ok()?;
        (r.status?.observed_generation == r.metadata.generation).then_some(())
    })
    .await;
    let r = regions.get("north").await.unwrap();
    let still = r
        .status
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap()
        .clone();
    assert_eq!(still.status, "False", "scaling up is a rollout in progress");
    assert_ne!(still.last_transition_time, available_since);

    // A deleted child comes back.
    deployments
        .delete("north-publisher", &DeleteParams::default())
        .await
        .unwrap();
    eventually("recreated publisher", || async {
        let d = deployments.get_opt("north-publisher").await.ok()??;
        d.metadata.deletion_timestamp.is_none().then_some(())
    })
    .await;

    // Paused: spec changes are not applied.
    regions
        .patch(
            "north",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"stockflow.dev/paused": "true"}}})),
        )
        .await
        .unwrap();
    eventually("paused", || async {
        (regions.get("north").await.ok()?.status?.phase.as_deref() == Some("Paused")).then_some(())
    })
    .await;
    regions
        .patch(
            "north",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"roles": {"queryApi": {"replicas": 7}}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        deployments
            .get("north-query-api")
            .await
            .unwrap()
            .spec
            .unwrap()
            .replicas,
        Some(5),
        "paused regions are frozen"
    );
    regions
        .patch(
            "north",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {"stockflow.dev/paused": null}}})),
        )
        .await
        .unwrap();
    eventually("unpaused rollout", || async {
        (deployments
            .get("north-query-api")
            .await
            .ok()?
            .spec?
            .replicas
            == Some(7))
        .then_some(())
    })
    .await;

    // Deletion with policy Delete runs the teardown Job (the region's credentials, not the
    // operator's) and completes once it has.
    delete_region(&client, ns, "north").await;
    let args = end_teardown(&client, ns, "north", "Complete").await;
    assert_eq!(args, ["teardown", "--drop-keyspace", "--delete-topic"]);
    gone(&client, ns, "north").await;
    let reasons = event_reasons(&client, ns, "north").await;
    for reason in ["TeardownStarted", "KeyspaceDropped", "TopicDeleted"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} in {reasons:?}"
        );
    }
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyspace_or_topic_that_another_region_names_is_never_removed() {
    let client = client().await;
    install_crd(&client).await;
    let ns = &format!("shared-{}", std::process::id());
    namespace(&client, ns).await;
    let controller = start_controller(&client, ns);
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    for (name, policy) in [
        ("twin-a", "Delete"),
        ("twin-b", "Retain"),
        ("alone", "Delete"),
    ] {
        let mut body = region_json(name, policy);
        if name.starts_with("twin") {
            body["spec"]["scylla"]["keyspace"] = json!(keyspace("shared"));
            body["spec"]["bus"]["topic"] = json!(format!("shared-topic-{}", std::process::id()));
        }
        let region: InventoryRegion = serde_json::from_value(body).unwrap();
        regions
            .create(&PostParams::default(), &region)
            .await
            .unwrap();
        eventually("finalizer", || async {
            regions
                .get(name)
                .await
                .ok()?
                .finalizers()
                .iter()
                .any(|f| f == "stockflow.dev/cleanup")
                .then_some(())
        })
        .await;
    }
    // twin-a's keyspace and topic are also twin-b's: no teardown at all.
    delete_region(&client, ns, "twin-a").await;
    gone(&client, ns, "twin-a").await;
    let reasons = event_reasons(&client, ns, "twin-a").await;
    assert!(reasons.iter().any(|r| r == "KeyspaceShared"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "TopicShared"), "{reasons:?}");
    assert!(
        !reasons.iter().any(|r| r == "TeardownStarted"),
        "{reasons:?}"
    );
    // twin-b retains; alone's keyspace and topic go.
    delete_region(&client, ns, "twin-b").await;
    gone(&client, ns, "twin-b").await;
    delete_region(&client, ns, "alone").await;
    let args = end_teardown(&client, ns, "alone", "Complete").await;
    assert_eq!(args, ["teardown", "--drop-keyspace", "--delete-topic"]);
    gone(&client, ns, "alone").await;
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_regions_and_failed_teardowns_never_block_deletion() {
    let client = client().await;
    install_crd(&client).await;
    let ns = &format!("deletion-{}", std::process::id());
    namespace(&client, ns).await;
    let controller = start_controller(&client, ns);
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    for (name, policy) in [("keep", "Retain"), ("gone", "Delete")] {
        let region: InventoryRegion = serde_json::from_value(region_json(name, policy)).unwrap();
        regions
            .create(&PostParams::default(), &region)
            .await
            .unwrap();
        eventually("finalizer", || async {
            regions
                .get(name)
                .await
                .ok()?
                .finalizers()
                .iter()
                .any(|f| f == "stockflow.dev/cleanup")
                .then_some(())
        })
        .await;
        delete_region(&client, ns, name).await;
        if policy == "Delete" {
            // The cluster is unreachable: the Job fails at its deadline; deletion goes on
            // and says what was left behind.
            end_teardown(&client, ns, name, "Failed").await;
        }
        gone(&client, ns, name).await;
    }
    let reasons = event_reasons(&client, ns, "gone").await;
    assert!(reasons.iter().any(|r| r == "TeardownFailed"), "{reasons:?}");
    assert!(
        event_reasons(&client, ns, "keep")
            .await
            .iter()
            .any(|r| r == "Retained")
    );
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_needs_authentication_and_an_open_one_is_flagged_insecure() {
    let client = client().await;
    install_crd(&client).await;
    let ns = &format!("auth-{}", std::process::id());
    namespace(&client, ns).await;
    let controller = start_controller(&client, ns);
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);

    // No auth, no principals, no insecureNoAuth: the API server refuses it (CEL).
    let mut closed = region_json("closed", "Retain");
    closed["spec"]
        .as_object_mut()
        .unwrap()
        .remove("insecureNoAuth");
    let err = regions
        .create(
            &PostParams::default(),
            &serde_json::from_value(closed).unwrap(),
        )
        .await
        .expect_err("a region without authentication is refused");
    assert!(
        err.to_string().contains("authentication is required"),
        "{err}"
    );

    // Written open on purpose: accepted, served, and flagged.
    let open: InventoryRegion = serde_json::from_value(region_json("open", "Retain")).unwrap();
    regions.create(&PostParams::default(), &open).await.unwrap();
    let r = eventually("Insecure condition", || async {
        let r = regions.get("open").await.ok()?;
        condition(&r, "Insecure").is_some().then_some(r)
    })
    .await;
    let insecure = condition(&r, "Insecure").unwrap();
    assert_eq!(
        (insecure.status.as_str(), insecure.reason.as_str()),
        ("True", "InsecureNoAuth")
    );
    assert_eq!(
        condition(&r, "Degraded").map(|c| c.status).as_deref(),
        Some("False"),
        "open is a warning, not a failure"
    );
    let note = warning(&client, ns, "open", "InsecureNoAuth").await;
    assert!(note.contains("without authentication"), "{note}");
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let data = eventually("open config", || async {
        configs.get("open-config").await.ok()?.data
    })
    .await;
    assert_eq!(data["STOCKFLOW_INSECURE_NO_AUTH"], "true");

    // Mutual TLS with a principals list is authentication: no insecureNoAuth needed, the
    // principals file is mounted in every role and named by STOCKFLOW_MTLS_PRINCIPALS.
    for name in ["mtls-tls", "mtls-ca", "mtls-principals"] {
        secret(&client, ns, name, json!({"x": "y"}), true).await;
    }
    let mut mtls = region_json("mtls", "Retain");
    let spec = mtls["spec"].as_object_mut().unwrap();
    spec.remove("insecureNoAuth");
    spec.insert(
        "tls".into(),
        json!({"secretName": "mtls-tls", "clientCaSecret": "mtls-ca",
            "principalsSecret": {"name": "mtls-principals"}}),
    );
    regions
        .create(
            &PostParams::default(),
            &serde_json::from_value(mtls).unwrap(),
        )
        .await
        .expect("mutual TLS with principals is authentication");
    let data = eventually("mtls config", || async {
        configs.get("mtls-config").await.ok()?.data
    })
    .await;
    assert_eq!(
        data["STOCKFLOW_MTLS_PRINCIPALS"],
        "/etc/stockflow/mtls-principals/principals.json"
    );
    assert!(!data.contains_key("STOCKFLOW_INSECURE_NO_AUTH"));
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job = eventually("mtls migration job", || async {
        jobs.list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|j| j.name_any().starts_with("mtls-migrate-"))
    })
    .await;
    succeed_job(&client, ns, &job.name_any()).await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    for role in roles() {
        let name = format!("mtls-{role}");
        let d = eventually(&name, || async { deployments.get_opt(&name).await.ok()? }).await;
        let pod = d.spec.unwrap().template.spec.unwrap();
        let volume = pod
            .volumes
            .unwrap_or_default()
            .into_iter()
            .find(|v| v.name == "mtls-principals")
            .expect("principals volume");
        assert_eq!(
            volume.secret.unwrap().secret_name.as_deref(),
            Some("mtls-principals")
        );
        let mounted =
            pod.containers[0].volume_mounts.iter().flatten().any(|m| {
                m.mount_path == "/etc/stockflow/mtls-principals" && m.read_only == Some(true)
            });
        assert!(mounted, "{role} mounts the principals read-only");
    }
    let r = eventually("mtls status", || async {
        let r = regions.get("mtls").await.ok()?;
        condition(&r, "Insecure").is_some().then_some(r)
    })
    .await;
    assert_eq!(condition(&r, "Insecure").unwrap().status, "False");
    assert!(
        !events(&client, ns, "mtls")
            .await
            .iter()
            .any(|(_, reason, _)| reason == "InsecureNoAuth")
    );
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_any_other_region_uses_is_never_removed_whatever_its_connection_strings() {
    let client = client().await;
    install_crd(&client).await;
    let run = std::process::id();
    let ns = &format!("names-{run}");
    let other_ns = &format!("names-other-{run}");
    namespace(&client, ns).await;
    namespace(&client, other_ns).await;
    let controller = start_controller(&client, ns);
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    let others: Api<InventoryRegion> = Api::namespaced(client.clone(), other_ns);
    let shared_keyspace = format!("names_ks_{run}");
    let shared_topic = format!("names-topic-{run}");

    // In another namespace, reconciled by nobody here: a Retain region naming the same
    // keyspace through a Service name, and a region being deleted (held by a finalizer)
    // naming the same topic on a Fluvio endpoint.
    let mut retained = region_json("names-retained", "Retain");
    retained["spec"]["scylla"] = json!({"nodes": ["scylla-client.scylla.svc.cluster.local:9042"], "keyspace": shared_keyspace});
    retained["spec"]["bus"]["topic"] = json!(format!("names-elsewhere-{run}"));
    others
        .create(
            &PostParams::default(),
            &serde_json::from_value(retained).unwrap(),
        )
        .await
        .unwrap();
    let mut leaving = region_json("names-leaving", "Delete");
    leaving["metadata"]["finalizers"] = json!(["example.com/hold"]);
    leaving["spec"]["bus"] =
        json!({"fluvio": {"endpoint": "fluvio-sc-public.fluvio:9003"}, "topic": shared_topic});
    others
        .create(
            &PostParams::default(),
            &serde_json::from_value(leaving).unwrap(),
        )
        .await
        .unwrap();
    others
        .delete("names-leaving", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        others
            .get("names-leaving")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    // Here: a Delete region on an IP address and another broker string, same names.
    let mut mine = region_json("names-mine", "Delete");
    mine["spec"]["scylla"] = json!({"nodes": ["10.0.0.1:9042"], "keyspace": shared_keyspace});
    mine["spec"]["bus"] = json!({"kafka": {"brokers": ["10.0.0.2:9092"]}, "topic": shared_topic});
    regions
        .create(
            &PostParams::default(),
            &serde_json::from_value(mine).unwrap(),
        )
        .await
        .unwrap();
    eventually("finalizer", || async {
        regions
            .get("names-mine")
            .await
            .ok()?
            .finalizers()
            .iter()
            .any(|f| f == "stockflow.dev/cleanup")
            .then_some(())
    })
    .await;
    delete_region(&client, ns, "names-mine").await;
    gone(&client, ns, "names-mine").await;
    let seen = events(&client, ns, "names-mine").await;
    let note = |reason: &str| {
        seen.iter()
            .find(|(t, r, _)| t == "Warning" && r == reason)
            .map(|(_, _, n)| n.clone())
            .unwrap_or_else(|| panic!("{reason} in {seen:?}"))
    };
    assert!(
        note("KeyspaceShared").contains(&format!("{other_ns}/names-retained")),
        "{seen:?}"
    );
    assert!(
        note("TopicShared").contains(&format!("{other_ns}/names-leaving")),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|(_, r, _)| r == "TeardownStarted"),
        "no teardown job may drop the other regions' keyspace or topic: {seen:?}"
    );
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    assert!(jobs.get_opt("names-mine-teardown").await.unwrap().is_none());

    // Default names are the region's own: two regions with the same regionId get
    // different ones, recorded in status.
    let mut twins = Vec::new();
    for (api, namespace) in [(&regions, ns), (&others, other_ns)] {
        let mut body = region_json("names-default", "Delete");
        body["spec"]["scylla"]
            .as_object_mut()
            .unwrap()
            .remove("keyspace");
        body["metadata"]["namespace"] = json!(namespace);
        api.create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
        twins.push(api.get("names-default").await.unwrap());
    }
    let (a, b) = (&twins[0], &twins[1]);
    let names = |r: &InventoryRegion| {
        (
            stockflow_operator::resources::keyspace(r),
            stockflow_operator::resources::topic(r),
        )
    };
    assert_ne!(names(a).0, names(b).0);
    assert_ne!(names(a).1, names(b).1);
    let recorded = eventually("names recorded in status", || async {
        let s = regions.get("names-default").await.ok()?.status?;
        Some((s.keyspace?, s.topic?))
    })
    .await;
    assert_eq!(recorded, names(a));
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let data = eventually("config", || async {
        configs.get("names-default-config").await.ok()?.data
    })
    .await;
    assert_eq!(data["STOCKFLOW_SCYLLA_KEYSPACE"], recorded.0);
    assert_eq!(data["STOCKFLOW_BUS_TOPIC"], recorded.1);
    // Alone with its names: its teardown removes both.
    delete_region(&client, ns, "names-default").await;
    let args = end_teardown(&client, ns, "names-default", "Complete").await;
    assert_eq!(args, ["teardown", "--drop-keyspace", "--delete-topic"]);
    gone(&client, ns, "names-default").await;

    // Release what this test held.
    others
        .patch(
            "names-leaving",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    for name in ["names-retained", "names-default"] {
        let _ = others.delete(name, &DeleteParams::default()).await;
    }
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlabelled_secrets_and_unlisted_images_are_refused_and_nothing_is_applied() {
    let client = client().await;
    install_crd(&client).await;
    let ns = &format!("admission-{}", std::process::id());
    namespace(&client, ns).await;
    let controller = start_controller_allowing(
        &client,
        ns,
        vec![
            "stockflow:".into(),
            "registry.example.com/stockflow/".into(),
        ],
    );
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    let configs: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let services: Api<Service> = Api::namespaced(client.clone(), ns);

    // A Secret of the namespace that is not meant for regions.
    secret(
        &client,
        ns,
        "payroll-db",
        json!({"username": "u", "password": "p"}),
        false,
    )
    .await;
    let mut body = region_json("nosy", "Delete");
    body["spec"]["scylla"]["credentialsSecret"] = json!("payroll-db");
    regions
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    let r = eventually("refused", || async {
        let r = regions.get("nosy").await.ok()?;
        condition(&r, "Degraded")
            .filter(|c| c.status == "True")
            .map(|_| r)
    })
    .await;
    let degraded = condition(&r, "Degraded").unwrap();
    assert_eq!(degraded.reason, "SecretNotLabelled");
    assert!(degraded.message.contains("payroll-db"), "{degraded:?}");
    assert_eq!(
        r.status.as_ref().unwrap().phase.as_deref(),
        Some("Degraded")
    );
    let note = warning(&client, ns, "nosy", "SecretNotLabelled").await;
    assert!(note.contains("payroll-db"), "{note}");
    assert!(configs.get_opt("nosy-config").await.unwrap().is_none());
    assert!(
        services
            .get_opt("nosy-command-api")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing applied"
    );

    // Labelled for regions: applied (the operator looks again by itself).
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets
        .patch(
            "payroll-db",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"stockflow.dev/usage": "region"}}})),
        )
        .await
        .unwrap();
    eventually("applied once labelled", || async {
        configs.get_opt("nosy-config").await.ok()??;
        let r = regions.get("nosy").await.ok()?;
        (condition(&r, "Degraded")?.status == "False").then_some(())
    })
    .await;
    let job = eventually("migration job", || async {
        jobs.list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let env = job.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap_or_default();
    assert!(env.iter().any(|e| {
        e.value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .is_some_and(|s| s.name == "payroll-db")
    }));

    // A Secret that does not exist is refused too (it could be created later, unlabelled).
    let mut body = region_json("ghost", "Retain");
    body["spec"]["scylla"]["credentialsSecret"] = json!("not-there");
    regions
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    let note = warning(&client, ns, "ghost", "SecretNotFound").await;
    assert!(note.contains("not-there"), "{note}");
    assert!(configs.get_opt("ghost-config").await.unwrap().is_none());

    // An image outside the allow-list: refused, nothing applied, and its deletion runs no
    // teardown Job with that image either.
    let mut body = region_json("miner", "Delete");
    body["spec"]["image"] = json!("registry.example.com/stockflow-evil/miner:1");
    regions
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    let note = warning(&client, ns, "miner", "ImageNotAllowed").await;
    assert!(
        note.contains("registry.example.com/stockflow-evil/miner:1"),
        "{note}"
    );
    let r = regions.get("miner").await.unwrap();
    assert_eq!(
        condition(&r, "Degraded").map(|c| c.reason).as_deref(),
        Some("ImageNotAllowed")
    );
    assert!(configs.get_opt("miner-config").await.unwrap().is_none());
    delete_region(&client, ns, "miner").await;
    gone(&client, ns, "miner").await;
    let seen = events(&client, ns, "miner").await;
    assert!(
        seen.iter()
            .any(|(t, r, _)| t == "Warning" && r == "TeardownRefused"),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|(_, r, _)| r == "TeardownStarted"),
        "{seen:?}"
    );

    // An allowed image is applied.
    let mut body = region_json("listed", "Retain");
    body["spec"]["image"] = json!("registry.example.com/stockflow/stockflow:2");
    regions
        .create(
            &PostParams::default(),
            &serde_json::from_value(body).unwrap(),
        )
        .await
        .unwrap();
    eventually("listed config", || async {
        configs.get_opt("listed-config").await.ok()?
    })
    .await;
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_samples_pass_the_crds_validation() {
    let client = client().await;
    install_crd(&client).await;
    let ns = &format!("samples-{}", std::process::id());
    namespace(&client, ns).await;
    let api: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    for (file, yaml) in [
        (
            "local.yaml",
            include_str!("../../config/samples/local.yaml"),
        ),
        (
            "north.yaml",
            include_str!("../../config/samples/north.yaml"),
        ),
        (
            "managed.yaml",
            include_str!("../../config/samples/managed.yaml"),
        ),
    ] {
        let mut region: InventoryRegion = serde_yaml::from_str(yaml).expect(file);
        region.metadata.namespace = Some(ns.clone());
        api.create(
            &PostParams {
                dry_run: true,
                field_manager: None,
            },
            &region,
        )
        .await
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}
