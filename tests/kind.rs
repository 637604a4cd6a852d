//! End-to-end on a kind cluster: apply the sample region, wait for `Available`, reserve and
//! confirm through the region's command API, watch availability change in its query API,
//! delete the region. Needs a kind cluster prepared by `just kind-up images deploy-deps
//! deploy`, so a Docker engine: ignored unless asked for (`just e2e` runs it with
//! `--ignored`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

struct PortForward(Child);

impl PortForward {
    fn start(service: &str, local: u16) -> Self {
        let child = Command::new("kubectl")
            .args([
                "port-forward",
                &format!("svc/{service}"),
                &format!("{local}:80"),
                "--address",
                "127.0.0.1",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl port-forward");
        std::thread::sleep(Duration::from_secs(2));
        Self(child)
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a kind cluster (a Docker engine): `just kind-up images deploy-deps deploy e2e`"]
async fn a_region_on_kind_serves_reservations_end_to_end() {
    let client = Client::try_default()
        .await
        .expect("a Kubernetes cluster from `just kind-up images deploy-deps deploy`");
    let gvk = GroupVersionKind::gvk("stockflow.dev", "v1alpha1", "InventoryRegion");
    let resource = ApiResource::from_gvk(&gvk);
    let regions: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let sample: Value =
        serde_yaml::from_str(include_str!("../config/samples/north.yaml")).expect("sample parses");
    regions
        .patch(
            "north",
            &PatchParams::apply("stockflow-e2e").force(),
            &Patch::Apply(&sample),
        )
        .await
        .expect("apply region");
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let r = regions.get("north").await.expect("region");
        let available = r.data["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Available" && c["status"] == "True")
        });
        if available {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "region not Available: {}",
            r.data["status"]
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    let _commands = PortForward::start("north-command-api", 18480);
    let _queries = PortForward::start("north-query-api", 18481);
    let http = reqwest::Client::new();
    let cmd = |path: &str| format!("http://127.0.0.1:18480{path}");
    let query = |path: &str| format!("http://127.0.0.1:18481{path}");
    http.put(cmd("/v1/locations/e2e-store"))
        .json(&json!({"region": "north", "kind": "store", "name": "E2E"}))
        .send()
        .await
        .unwrap();
    let r = http.post(cmd("/v1/adjustments")).header("idempotency-key", format!("e2e-{}", std::process::id()))
        .json(&json!({"sku": "E2E-1", "location": "e2e-store", "set_on_hand": 10, "reason": "cycle_count"})).send().await.unwrap();
    assert!(r.status().is_success());
    let r: Value = http.post(cmd("/v1/reservations")).header("idempotency-key", format!("e2e-r-{}", std::process::id()))
        .json(&json!({"lines": [{"sku": "E2E-1", "location": "e2e-store", "qty": 3}], "ttl_seconds": 600}))
        .send().await.unwrap().json().await.unwrap();
    let id = r["reservation_id"].as_str().unwrap().to_string();
    let r = http
        .post(cmd(&format!("/v1/reservations/{id}/confirm")))
        .header("idempotency-key", format!("e2e-c-{}", std::process::id()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let started = Instant::now();
    loop {
        let a: Value = http
            .get(query("/v1/availability/E2E-1"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or_default();
        if a["total_available"] == 7 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "availability did not follow: {a}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    regions
        .delete("north", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while regions.get_opt("north").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "region deletion stuck");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
