//! Test fixtures: regions and child objects in known states.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use kube::api::ObjectMeta;

use crate::crd::{
    BusSpec, DeletionPolicy, InventoryRegion, InventoryRegionSpec, KafkaSpec, RolesSpec, ScyllaSpec,
};
use crate::resources::{self, Role};

/// A valid region named `name` in namespace `stores`, generation 1 (open: it says
/// `insecureNoAuth: true`).
pub fn region(name: &str) -> InventoryRegion {
    let mut r = InventoryRegion::new(
        name,
        InventoryRegionSpec {
            region_id: name.into(),
            image: "stockflow:1".into(),
            scylla: ScyllaSpec {
                nodes: vec!["scylla:9042".into()],
                keyspace: Some(format!("{name}_ks")),
                local_dc: "datacenter1".into(),
                replication_factor: 3,
                credentials_secret: None,
                tls: None,
            },
            bus: BusSpec {
                kafka: Some(KafkaSpec {
                    brokers: vec!["kafka:9092".into()],
                    security_protocol: Default::default(),
                    sasl: None,
                    tls: None,
                }),
                fluvio: None,
                topic: None,
                partitions: 8,
                replication: 1,
            },
            roles: RolesSpec::default(),
            reservation_ttl_seconds: 900,
            deletion_policy: DeletionPolicy::Retain,
            auth: None,
            insecure_no_auth: true,
            tls: None,
            tracing: None,
        },
    );
    r.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("stores".into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        ..ObjectMeta::default()
    };
    r
}

/// The Deployment of `role` as if `ready` replicas were up to date and ready.
pub fn ready_deployment(region: &InventoryRegion, role: Role, ready: i32) -> Deployment {
    let mut d = resources::deployment(region, role);
    d.metadata.generation = Some(1);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(ready),
        updated_replicas: Some(ready),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        ..DeploymentStatus::default()
    });
    d
}

/// A mocked API server for reconcile tests (as in kube-rs/controller-rs): each scenario
/// names the calls it expects, in order, and answers them.
pub mod mock {
    use http::{Request, Response};
    use kube::client::Body;
    use kube::{Client, ResourceExt};
    use tower_test::mock::{self, Handle};

    use crate::crd::InventoryRegion;

    /// Calls a reconcile may make.
    pub enum Call {
        /// JSON patch adding the finalizer to the region.
        AddFinalizer,
        /// Server-side apply of the region's status; the check sees the body.
        PatchStatus(fn(&serde_json::Value)),
        /// An event published about the region.
        PublishEvent(&'static str),
    }

    /// A client whose requests go to the returned handle.
    pub fn client() -> (Client, Handle<Request<Body>, Response<Body>>) {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "stores"), handle)
    }

    /// Answers `calls` in order, then fails on any further request.
    pub async fn serve(
        mut handle: Handle<Request<Body>, Response<Body>>,
        region: InventoryRegion,
        calls: Vec<Call>,
    ) {
        for call in calls {
            let (request, send) = handle.next_request().await.expect("a request");
            let method = request.method().to_string();
            let path = request.uri().path().to_string();
            let body = request.into_body().collect_bytes().await.expect("body");
            let name = region.name_any();
            match call {
                Call::AddFinalizer => {
                    assert_eq!(method, "PATCH");
                    assert_eq!(
                        path,
                        format!(
                            "/apis/stockflow.dev/v1alpha1/namespaces/stores/inventoryregions/{name}"
                        )
                    );
                    let patch: serde_json::Value =
                        serde_json::from_slice(&body).expect("json patch");
                    assert!(
                        patch.to_string().contains("stockflow.dev/cleanup"),
                        "{patch}"
                    );
                    let mut r = region.clone();
                    r.metadata.finalizers = Some(vec![crate::FINALIZER.into()]);
                    send.send_response(
                        Response::builder()
                            .body(Body::from(serde_json::to_vec(&r).expect("json")))
                            .expect("response"),
                    );
                }
                Call::PatchStatus(check) => {
                    assert_eq!(method, "PATCH");
                    assert_eq!(
                        path,
                        format!(
                            "/apis/stockflow.dev/v1alpha1/namespaces/stores/inventoryregions/{name}/status"
                        )
                    );
                    let patch: serde_json::Value = serde_json::from_slice(&body).expect("json");
                    check(&patch);
                    send.send_response(
                        Response::builder()
                            .body(Body::from(serde_json::to_vec(&region).expect("json")))
                            .expect("response"),
                    );
                }
                Call::PublishEvent(reason) => {
                    assert!(
                        path.starts_with("/apis/events.k8s.io/v1/namespaces/stores/events"),
                        "{method} {path}"
                    );
                    let event: serde_json::Value = serde_json::from_slice(&body).expect("event");
                    assert_eq!(event["reason"], reason);
                    send.send_response(
                        Response::builder()
                            .body(Body::from(body.to_vec()))
                            .expect("response"),
                    );
                }
            }
        }
    }
}
