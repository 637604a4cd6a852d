//! Unit tests of the controller's pure parts.

use std::sync::Arc;

use super::*;
use crate::crd::DeletionPolicy;
use crate::fixtures::mock::{self, Call};
use crate::fixtures::region;

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context::new(client, Some("test".into())))
}

#[tokio::test]
async fn a_new_region_gets_the_finalizer_first() {
    let (client, handle) = mock::client();
    let r = region("north");
    let server = tokio::spawn(mock::serve(handle, r.clone(), vec![Call::AddFinalizer]));
    let action = reconcile(Arc::new(r), context(client))
        .await
        .expect("reconcile");
    assert_eq!(action, Action::await_change());
    server.await.expect("scenario");
}

/// Spans exported by a test's tracer provider.
#[derive(Debug, Clone, Default)]
struct Exported(Arc<std::sync::Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanExporter for Exported {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().expect("not poisoned").extend(batch);
        Ok(())
    }
}

#[tokio::test]
async fn a_reconcile_is_a_span_naming_its_region_and_trace() {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    let exported = Exported::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exported.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("operator"));
    let subscriber = tracing_subscriber::registry().with(layer);
    let (client, handle) = mock::client();
    let r = region("north");
    let server = tokio::spawn(mock::serve(handle, r.clone(), vec![Call::AddFinalizer]));
    {
        let _traced = tracing::subscriber::set_default(subscriber);
        // Another test's thread may have hit reconcile's span first, with no subscriber, and
        // cached that nobody wants it; ask every callsite again now that one does.
        tracing::callsite::rebuild_interest_cache();
        reconcile(Arc::new(r), context(client))
            .await
            .expect("reconcile");
    }
    server.await.expect("scenario");
    let spans = exported.0.lock().expect("not poisoned");
    let span = spans
        .iter()
        .find(|s| s.name == "reconcile InventoryRegion")
        .unwrap_or_else(|| panic!("a reconcile span among {spans:#?}"));
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute("region").as_deref(), Some("north"));
    assert_eq!(attribute("namespace").as_deref(), Some("stores"));
    assert_eq!(
        attribute("trace_id"),
        Some(span.span_context.trace_id().to_string()),
        "its log lines name the exported trace"
    );
}

#[tokio::test]
async fn a_paused_region_only_reports_that_it_is_paused() {
    let (client, handle) = mock::client();
    let mut r = region("north");
    r.metadata.finalizers = Some(vec![crate::FINALIZER.into()]);
    r.metadata.annotations =
        Some([(crate::PAUSED_ANNOTATION.to_string(), "true".to_string())].into());
    let server = tokio::spawn(mock::serve(
        handle,
        r.clone(),
        vec![
            Call::PatchStatus(|patch| assert_eq!(patch["status"]["phase"], "Paused")),
            Call::PublishEvent("Paused"),
        ],
    ));
    let action = reconcile(Arc::new(r), context(client))
        .await
        .expect("reconcile");
    assert_eq!(action, Action::await_change());
    server.await.expect("scenario: no child was applied");
}

#[tokio::test]
async fn an_image_outside_the_allow_list_is_refused_and_nothing_is_applied() {
    let (client, handle) = mock::client();
    let mut r = region("north");
    r.metadata.finalizers = Some(vec![crate::FINALIZER.into()]);
    r.spec.image = "evil.example.com/miner:1".into();
    let server = tokio::spawn(mock::serve(
        handle,
        r.clone(),
        vec![
            Call::PatchStatus(|patch| {
                let degraded = patch["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| cs.iter().find(|c| c["type"] == "Degraded"))
                    .cloned()
                    .unwrap_or_default();
                assert_eq!(degraded["status"], "True");
                assert_eq!(degraded["reason"], "ImageNotAllowed");
                assert!(
                    degraded["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("evil.example.com/miner:1")),
                    "{degraded}"
                );
            }),
            Call::PublishEvent("ImageNotAllowed"),
        ],
    ));
    let ctx = Arc::new(
        Context::new(client, Some("test".into()))
            .with_allowed_image_prefixes(vec!["stockflow:".into()]),
    );
    let action = reconcile(Arc::new(r), ctx).await.expect("reconcile");
    assert_eq!(action, Action::requeue(Duration::from_secs(10)));
    server
        .await
        .expect("scenario: no child was applied, no Secret was read");
}

#[tokio::test]
async fn a_region_without_any_authentication_is_refused() {
    let (client, handle) = mock::client();
    let mut r = region("north");
    r.metadata.finalizers = Some(vec![crate::FINALIZER.into()]);
    r.spec.insecure_no_auth = false;
    let server = tokio::spawn(mock::serve(
        handle,
        r.clone(),
        vec![
            Call::PatchStatus(|patch| {
                assert_eq!(patch["status"]["phase"], "Degraded");
                assert!(patch.to_string().contains("AuthenticationRequired"));
            }),
            Call::PublishEvent("AuthenticationRequired"),
        ],
    ));
    reconcile(Arc::new(r), context(client))
        .await
        .expect("reconcile");
    server.await.expect("scenario: no child was applied");
}

#[test]
fn any_other_region_naming_the_keyspace_or_topic_shares_it_whatever_its_nodes() {
    let mut me = region("north");
    me.spec.scylla.nodes = vec!["10.0.0.1:9042".into()];
    me.spec.bus.topic = Some("orders".into());
    let mut same_keyspace = region("south");
    same_keyspace.metadata.namespace = Some("elsewhere".into());
    same_keyspace.spec.scylla.keyspace = me.spec.scylla.keyspace.clone();
    same_keyspace.spec.scylla.nodes = vec!["scylla.db.svc:9042".into()];
    same_keyspace.spec.deletion_policy = DeletionPolicy::Retain;
    let mut same_topic = region("east");
    same_topic.spec.bus.topic = Some("orders".into());
    same_topic.spec.bus.kafka = None;
    same_topic.spec.bus.fluvio = Some(crate::crd::FluvioSpec {
        endpoint: "fluvio:9003".into(),
        cloudevents: crate::crd::FluvioEvents::Plain,
    });
    same_topic.metadata.deletion_timestamp = Some(now());
    let unrelated = region("west");
    let (keyspace_users, topic_users) =
        sharers(&me, &[me.clone(), same_keyspace, same_topic, unrelated]);
    assert_eq!(keyspace_users, ["elsewhere/south"]);
    assert_eq!(topic_users, ["stores/east"]);
}
