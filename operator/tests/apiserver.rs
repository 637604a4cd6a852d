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
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, CustomResourceExt, ResourceExt};
use serde_json::json;
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
            "deletionPolicy": policy
        }
    })
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
    // The operator's logs, shown for a failed test (RUST_LOG picks the level).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let ctx = Arc::new(Context::new(client.clone(), Some("test".into())));
    tokio::spawn(controller::run(ctx, Some(ns.to_string())))
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
    for role in ["command-api", "query-api", "publisher", "projector"] {
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
    for name in [
        "north-command-api",
        "north-query-api",
        "north-publisher",
        "north-projector",
    ] {
        let d = eventually(name, || async { deployments.get_opt(name).await.ok()? }).await;
        let owner = &d.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("InventoryRegion", "north", Some(true))
        );
    }
    for role in ["command-api", "query-api", "publisher", "projector"] {
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
