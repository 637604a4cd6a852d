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
use stockflow_operator::external::{External, async_trait_free::BoxFuture};
use tokio::sync::OnceCell;

/// Records keyspace drops and topic deletions instead of reaching a database or a bus.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<String>>);

impl Recorded {
    fn record(&self, what: String) -> BoxFuture<'_, stockflow_operator::Result<()>> {
        Box::pin(async move {
            self.0
                .lock()
                .map_err(|e| stockflow_operator::Error::External(e.to_string()))?
                .push(what);
            Ok(())
        })
    }

    fn taken(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().expect("not poisoned"))
    }
}

impl External for Recorded {
    fn drop_keyspace(
        &self,
        region: &InventoryRegion,
    ) -> BoxFuture<'_, stockflow_operator::Result<()>> {
        self.record(region.spec.scylla.keyspace.clone())
    }
    fn delete_topic(
        &self,
        region: &InventoryRegion,
    ) -> BoxFuture<'_, stockflow_operator::Result<()>> {
        self.record(format!(
            "topic:{}",
            stockflow_operator::resources::topic(region)
        ))
    }
}

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

fn region_json(name: &str, policy: &str) -> serde_json::Value {
    json!({
        "apiVersion": "stockflow.dev/v1alpha1",
        "kind": "InventoryRegion",
        "metadata": {"name": name},
        "spec": {
            "regionId": name,
            "image": "stockflow:1",
            "scylla": {"nodes": ["scylla:9042"], "keyspace": format!("{}_ks", name.replace('-', "_"))},
            "bus": {"kafka": {"brokers": ["kafka:9092"]}},
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
fn start_controller(
    client: &Client,
    ns: &str,
    external: Arc<dyn External>,
) -> tokio::task::JoinHandle<()> {
    let ctx = Arc::new(Context::new(client.clone(), Some("test".into()), external));
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
    let external = Arc::new(Recorded::default());
    let controller = start_controller(&client, ns, external.clone());
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    let region: InventoryRegion = serde_json::from_value(region_json("north", "Delete")).unwrap();
    regions
        .create(&PostParams::default(), &region)
        .await
        .expect("create region");

    // Children with owner references; the command API waits for the migration.
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
    for name in ["north-query-api", "north-publisher", "north-projector"] {
        let d = eventually(name, || async { deployments.get_opt(name).await.ok()? }).await;
        let owner = &d.owner_references()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("InventoryRegion", "north", Some(true))
        );
    }
    assert!(
        deployments
            .get_opt("north-command-api")
            .await
            .unwrap()
            .is_none(),
        "command API waits for the migration"
    );
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
        "north_ks"
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

    // The migration succeeds: the command API rolls out; simulated ready pods → Available.
    succeed_job(&client, ns, &job.name_any()).await;
    eventually("command api", || async {
        deployments.get_opt("north-command-api").await.ok()?
    })
    .await;
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

    // Deletion with policy Delete drops the keyspace and completes.
    regions
        .delete("north", &DeleteParams::default())
        .await
        .unwrap();
    eventually("region gone", || async {
        regions.get_opt("north").await.ok()?.is_none().then_some(())
    })
    .await;
    assert_eq!(
        external.taken(),
        ["north_ks", "topic:stockflow-north-stock-events"]
    );
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyspace_or_topic_that_another_region_names_is_never_removed() {
    let client = client().await;
    install_crd(&client).await;
    let ns = &format!("shared-{}", std::process::id());
    namespace(&client, ns).await;
    let external = Arc::new(Recorded::default());
    let controller = start_controller(&client, ns, external.clone());
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    for (name, policy) in [
        ("twin-a", "Delete"),
        ("twin-b", "Retain"),
        ("alone", "Delete"),
    ] {
        let mut body = region_json(name, policy);
        if name.starts_with("twin") {
            body["spec"]["scylla"]["keyspace"] = json!("shared_ks");
            body["spec"]["bus"]["topic"] = json!("shared-topic");
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
    for name in ["twin-a", "twin-b", "alone"] {
        regions
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        eventually("region gone", || async {
            regions.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    // twin-a's keyspace and topic were also twin-b's; twin-b retains; alone's go.
    assert_eq!(
        external.taken(),
        ["alone_ks", "topic:stockflow-alone-stock-events"]
    );
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_and_unreachable_keyspaces_never_block_deletion() {
    let client = client().await;
    install_crd(&client).await;
    let ns = &format!("deletion-{}", std::process::id());
    namespace(&client, ns).await;
    // The real clean-up, pointed at a ScyllaDB and a Kafka that do not exist: deletion still
    // completes.
    let controller = start_controller(
        &client,
        ns,
        Arc::new(stockflow_operator::external::Clusters),
    );
    let regions: Api<InventoryRegion> = Api::namespaced(client.clone(), ns);
    for (name, policy) in [("keep", "Retain"), ("gone", "Delete")] {
        let mut body = region_json(name, policy);
        body["spec"]["scylla"]["nodes"] = json!(["127.0.0.1:1"]);
        body["spec"]["bus"]["kafka"]["brokers"] = json!(["127.0.0.1:1"]);
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
        regions
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
        eventually("deleted", || async {
            regions.get_opt(name).await.ok()?.is_none().then_some(())
        })
        .await;
    }
    controller.abort();
}
