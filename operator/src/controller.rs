//! The controller: each `InventoryRegion` is reconciled into its children with server-side
//! apply; status is written back with server-side apply too.
//!
//! `reconcile` only routes: through the finalizer to [`apply`] or [`cleanup`]. Children carry
//! a controller owner reference, so they are garbage-collected with the region, and the
//! controller `.owns()` them, so deleting or editing one re-triggers reconciliation and
//! the drift is corrected.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::crd::{DeletionPolicy, InventoryRegion, InventoryRegionStatus};
use crate::error::{Error, Result};
use crate::resources::{self, Role, Teardown};
use crate::status::{self, JobState, Refusal};
use crate::{FIELD_MANAGER, FINALIZER, SECRET_USAGE_LABEL, SECRET_USAGE_VALUE};

/// What reconciliations share.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Kubernetes events on regions.
    pub recorder: Recorder,
    /// Image prefixes a region may run (`--allowed-image-prefix`); empty: any image.
    pub allowed_image_prefixes: Vec<String>,
}

impl Context {
    /// A context for `client`, reporting events as `instance`, allowing any image.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "stockflow-operator".into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            allowed_image_prefixes: Vec::new(),
        }
    }

    /// Only images starting with one of `prefixes` may run (none: any image).
    #[must_use]
    pub fn with_allowed_image_prefixes(mut self, prefixes: Vec<String>) -> Self {
        self.allowed_image_prefixes = prefixes;
        self
    }

    async fn event(&self, region: &InventoryRegion, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &region.object_ref(&())).await {
            tracing::warn!(error = %e, "cannot publish event");
        }
    }
}

/// Routes a region through the finalizer to [`apply`] or [`cleanup`].
#[tracing::instrument(
    name = "reconcile",
    skip_all,
    fields(
        otel.name = "reconcile InventoryRegion",
        region = %region.name_any(),
        namespace = region.namespace().as_deref().unwrap_or_default(),
        generation = region.metadata.generation.unwrap_or_default(),
        trace_id = tracing::field::Empty,
    )
)]
pub async fn reconcile(region: Arc<InventoryRegion>, ctx: Arc<Context>) -> Result<Action> {
    stockflow_telemetry::traces::record_trace_id(&tracing::Span::current());
    let started = Instant::now();
    let ns = region
        .namespace()
        .ok_or_else(|| Error::Invalid("InventoryRegion without a namespace".into()))?;
    let api: Api<InventoryRegion> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, region, |event| async {
        match event {
            Finalizer::Apply(region) => apply(&region, &ctx).await,
            Finalizer::Cleanup(region) => cleanup(&region, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    metrics::counter!("stockflow_operator_reconciliations_total").increment(1);
    metrics::histogram!("stockflow_operator_reconcile_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    result
}

/// Logs, counts and retries a failed reconciliation.
pub fn error_policy(region: Arc<InventoryRegion>, error: &Error, _ctx: Arc<Context>) -> Action {
    if let Error::Finalizer(e) = error
        && let kube::runtime::finalizer::Error::CleanupFailed(Error::TeardownRunning(job)) =
            e.as_ref()
    {
        // Not a failure: deletion waits for the teardown Job, which has no owner reference
        // to wake this region, so look again soon.
        tracing::debug!(region = %region.name_any(), %job, "waiting for the teardown job");
        return Action::requeue(Duration::from_secs(2));
    }
    tracing::warn!(region = %region.name_any(), %error, "reconcile failed");
    metrics::counter!("stockflow_operator_reconcile_errors_total", "error" => error.metric_label())
        .increment(1);
    Action::requeue(Duration::from_secs(10))
}

async fn apply_child<K>(client: &Client, ns: &str, obj: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope>
        + Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or_else(|| Error::Invalid("child without a name".into()))?;
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

async fn patch_status(
    client: &Client,
    region: &InventoryRegion,
    status: &InventoryRegionStatus,
) -> Result<()> {
    let ns = region.namespace().unwrap_or_default();
    let api: Api<InventoryRegion> = Api::namespaced(client.clone(), &ns);
    let body = json!({
        "apiVersion": "stockflow.dev/v1alpha1",
        "kind": "InventoryRegion",
        "status": status,
    });
    api.patch_status(
        &region.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Brings the region's children to the spec and reports their state.
pub async fn apply(region: &InventoryRegion, ctx: &Context) -> Result<Action> {
    let client = &ctx.client;
    let ns = region
        .namespace()
        .ok_or_else(|| Error::Invalid("InventoryRegion without a namespace".into()))?;
    if status::is_paused(region) {
        let status = status::paused(region);
        if region.status.as_ref() != Some(&status) {
            patch_status(client, region, &status).await?;
            ctx.event(
                region,
                EventType::Normal,
                "Paused",
                "reconciliation paused by the stockflow.dev/paused annotation".into(),
            )
            .await;
        }
        return Ok(Action::await_change());
    }
    let first_apply =
        region.status.as_ref().and_then(|s| s.observed_generation) != region.metadata.generation;
    let before = region.status.clone().unwrap_or_default();

    // Nothing is applied for a spec the operator refuses: it would run an image nobody
    // allowed, or mount Secrets not meant for a region, with the operator's privileges.
    if let Some(refusal) = admission(region, ctx).await? {
        let status = status::refused(region, &refusal, now());
        patch_status(client, region, &status).await?;
        let already = before
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True" && c.reason == refusal.reason);
        if first_apply || !already {
            ctx.event(region, EventType::Warning, refusal.reason, refusal.message)
                .await;
        }
        // Secrets are not watched (that would take list and watch on them): look again.
        return Ok(Action::requeue(Duration::from_secs(10)));
    }

    apply_child(client, &ns, &resources::config_map(region)).await?;
    for role in Role::REGION {
        if role.exposed() {
            apply_child(client, &ns, &resources::service(region, role)).await?;
        }
        let budgets: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        match resources::pdb(region, role) {
            Some(pdb) => {
                apply_child(client, &ns, &pdb).await?;
            }
            None => {
                // Scaled down to one replica: a budget would block node drains.
                let _ = budgets
                    .delete(&resources::child_name(region, role), &Default::default())
                    .await;
            }
        }
    }
    let job = apply_child(client, &ns, &resources::migration_job(region)).await?;
    let migration = JobState::of(Some(&job));
    let mut deployments = BTreeMap::new();
    for role in Role::REGION {
        // Every role waits for the schema and the topic the migration creates: started
        // earlier, each would only crash-loop until then. An existing Deployment keeps its
        // template until the new migration (a new image) has succeeded.
        if migration != JobState::Succeeded {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
            if let Some(existing) = api.get_opt(&resources::child_name(region, role)).await? {
                deployments.insert(role, existing);
            }
            continue;
        }
        let d = apply_child(client, &ns, &resources::deployment(region, role)).await?;
        deployments.insert(role, d);
    }
    let status = status::compute(region, &migration, &deployments, now());
    patch_status(client, region, &status).await?;

    if first_apply {
        ctx.event(
            region,
            EventType::Normal,
            "Applied",
            format!(
                "applied generation {} to its children",
                region.metadata.generation.unwrap_or(0)
            ),
        )
        .await;
    }
    let was = |t: &str| {
        before
            .conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    let is = |t: &str| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
    };
    if is("Available") && !was("Available") {
        ctx.event(
            region,
            EventType::Normal,
            "Available",
            "every role is rolled out and ready".into(),
        )
        .await;
    }
    if is(status::INSECURE) && (first_apply || !was(status::INSECURE)) {
        ctx.event(
            region,
            EventType::Warning,
            "InsecureNoAuth",
            "spec.insecureNoAuth is true: the region's APIs take every request without \
             authentication; set spec.auth or spec.tls.principalsSecret"
                .into(),
        )
        .await;
    }
    if is("Degraded") && !was("Degraded") {
        let message = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.event(region, EventType::Warning, "Degraded", message)
            .await;
    }
    Ok(if is("Available") {
        Action::requeue(Duration::from_secs(300))
    } else {
        Action::requeue(Duration::from_secs(15))
    })
}

/// Whether the operator may act on `region`'s spec: it authenticates its callers (or says
/// `insecureNoAuth: true`; the CRD refuses anything else, but an object stored before that
/// rule is not re-validated), its image is allowed, and every Secret it names exists and is
/// labelled `stockflow.dev/usage: region`. Reads Secret metadata only.
pub async fn admission(region: &InventoryRegion, ctx: &Context) -> Result<Option<Refusal>> {
    if !resources::authenticated(region) && !region.spec.insecure_no_auth {
        return Ok(Some(Refusal {
            reason: "AuthenticationRequired",
            message: "the region has no authentication: set spec.auth or \
                      spec.tls.principalsSecret, or write spec.insecureNoAuth: true"
                .into(),
        }));
    }
    if !resources::image_allowed(&region.spec.image, &ctx.allowed_image_prefixes) {
        return Ok(Some(Refusal {
            reason: "ImageNotAllowed",
            message: format!(
                "image {} is not under an allowed prefix ({}); the operator runs no other image",
                region.spec.image,
                ctx.allowed_image_prefixes.join(", ")
            ),
        }));
    }
    let ns = region
        .namespace()
        .ok_or_else(|| Error::Invalid("InventoryRegion without a namespace".into()))?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let mut missing = Vec::new();
    let mut unlabelled = Vec::new();
    for (field, name) in resources::secret_references(region) {
        // A metadata-only request (PartialObjectMetadata): the Secret's data never reaches
        // the operator.
        match secrets.get_metadata_opt(&name).await? {
            None => missing.push(format!("{name} ({field})")),
            Some(meta) => {
                let labelled = meta
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(SECRET_USAGE_LABEL))
                    .is_some_and(|v| v == SECRET_USAGE_VALUE);
                if !labelled {
                    unlabelled.push(format!("{name} ({field})"));
                }
            }
        }
    }
    if !unlabelled.is_empty() {
        return Ok(Some(Refusal {
            reason: "SecretNotLabelled",
            message: format!(
                "Secret {} not labelled {SECRET_USAGE_LABEL}={SECRET_USAGE_VALUE}: a region \
                 mounts only Secrets meant for it (`kubectl label secret NAME \
                 {SECRET_USAGE_LABEL}={SECRET_USAGE_VALUE}`)",
                unlabelled.join(", ")
            ),
        }));
    }
    if !missing.is_empty() {
        return Ok(Some(Refusal {
            reason: "SecretNotFound",
            message: format!(
                "Secret {} not found in namespace {ns}; create it labelled \
                 {SECRET_USAGE_LABEL}={SECRET_USAGE_VALUE}",
                missing.join(", ")
            ),
        }));
    }
    Ok(None)
}

/// Removes what lives outside Kubernetes, per the deletion policy, through the teardown
/// Job (`stockflow teardown`, with the region's own credentials). A keyspace or topic that
/// another region in the cluster also names is never removed. Deletion waits for the Job,
/// but never forever: a failed Job (its deadline is five minutes) is reported as a Warning
/// event and deletion proceeds, since a stuck finalizer would hold the namespace hostage.
pub async fn cleanup(region: &InventoryRegion, ctx: &Context) -> Result<Action> {
    let keyspace = resources::keyspace(region);
    let topic = resources::topic(region);
    if region.spec.deletion_policy == DeletionPolicy::Retain {
        ctx.event(
            region,
            EventType::Normal,
            "Retained",
            format!("keyspace {keyspace} and topic {topic} are retained"),
        )
        .await;
        return Ok(Action::await_change());
    }
    let ns = region
        .namespace()
        .ok_or_else(|| Error::Invalid("InventoryRegion without a namespace".into()))?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let name = resources::teardown_job_name(region);
    let Some(job) = jobs.get_opt(&name).await? else {
        let what = removable(region, ctx).await?;
        if !what.keyspace && !what.topic {
            return Ok(Action::await_change());
        }
        // The teardown Job runs the region's image with its Secrets: the same admission as
        // any other child, or a refused region could still run through its deletion.
        if let Some(refusal) = admission(region, ctx).await? {
            let note = format!(
                "{} is left in place: no teardown job for a refused spec ({}: {}); remove \
                 it by hand",
                describe(what, &keyspace, &topic),
                refusal.reason,
                refusal.message
            );
            ctx.event(region, EventType::Warning, "TeardownRefused", note)
                .await;
            return Ok(Action::await_change());
        }
        apply_child(&ctx.client, &ns, &resources::teardown_job(region, what)).await?;
        ctx.event(
            region,
            EventType::Normal,
            "TeardownStarted",
            format!("job {name} removes {}", describe(what, &keyspace, &topic)),
        )
        .await;
        return Err(Error::TeardownRunning(name));
    };
    let what = Teardown::of(&job);
    match JobState::of(Some(&job)) {
        JobState::Running => return Err(Error::TeardownRunning(name)),
        JobState::Succeeded => {
            if what.keyspace {
                ctx.event(
                    region,
                    EventType::Normal,
                    "KeyspaceDropped",
                    format!("dropped keyspace {keyspace}"),
                )
                .await;
            }
            if what.topic {
                ctx.event(
                    region,
                    EventType::Normal,
                    "TopicDeleted",
                    format!("deleted topic {topic}"),
                )
                .await;
            }
        }
        JobState::Failed(why) => {
            let note = format!(
                "could not remove {}: job {name} failed ({why}); see `kubectl logs job/{name}` \
                 and remove them by hand",
                describe(what, &keyspace, &topic)
            );
            ctx.event(region, EventType::Warning, "TeardownFailed", note)
                .await;
        }
    }
    // Ended: the Job goes (its pods with it) and the finalizer is released.
    let background = kube::api::DeleteParams::background();
    if let Err(e) = jobs.delete(&name, &background).await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        return Err(e.into());
    }
    Ok(Action::await_change())
}

/// What this region may remove: not a keyspace or topic that any other `InventoryRegion`
/// of the cluster names (any namespace, any deletion policy, being deleted or not), which
/// is reported. Names alone are compared: `10.0.0.1:9042` and `scylla.ns.svc:9042` may be
/// the same cluster, and no connection string can prove two clusters apart.
async fn removable(region: &InventoryRegion, ctx: &Context) -> Result<Teardown> {
    let others: Vec<InventoryRegion> = Api::<InventoryRegion>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|o| o.uid() != region.uid())
        .collect();
    let (keyspace_users, topic_users) = sharers(region, &others);
    let keyspace = resources::keyspace(region);
    let topic = resources::topic(region);
    for (users, what, reason) in [
        (
            &keyspace_users,
            format!("keyspace {keyspace}"),
            "KeyspaceShared",
        ),
        (&topic_users, format!("topic {topic}"), "TopicShared"),
    ] {
        if !users.is_empty() {
            let note = format!("{what} is kept: {} also name it", users.join(", "));
            ctx.event(region, EventType::Warning, reason, note).await;
        }
    }
    Ok(Teardown {
        keyspace: keyspace_users.is_empty(),
        topic: topic_users.is_empty(),
    })
}

/// The other regions (`namespace/name`) naming `region`'s keyspace, and those naming its
/// topic, by name alone.
pub fn sharers(region: &InventoryRegion, others: &[InventoryRegion]) -> (Vec<String>, Vec<String>) {
    let keyspace = resources::keyspace(region);
    let topic = resources::topic(region);
    let users = |same: &dyn Fn(&InventoryRegion) -> bool| {
        others
            .iter()
            .filter(|o| o.uid() != region.uid() && same(o))
            .map(|o| format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any()))
            .collect::<Vec<_>>()
    };
    (
        users(&|o| resources::keyspace(o) == keyspace),
        users(&|o| resources::topic(o) == topic),
    )
}

/// `keyspace k and topic t`, or one of them.
fn describe(what: Teardown, keyspace: &str, topic: &str) -> String {
    match (what.keyspace, what.topic) {
        (true, true) => format!("keyspace {keyspace} and topic {topic}"),
        (true, false) => format!("keyspace {keyspace}"),
        (false, true) => format!("topic {topic}"),
        (false, false) => "nothing".into(),
    }
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until the stream ends (shutdown), over every namespace or one.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let regions: Api<InventoryRegion> = scoped(&client, ns);
    if let Err(e) = regions.list(&ListParams::default().limit(1)).await {
        tracing::error!(error = %e, "InventoryRegion CRD is not installed or not readable; install crds/ first");
        return;
    }
    let owned =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=stockflow-operator");
    Controller::new(regions, watcher::Config::default().any_semantic())
        .owns(scoped::<Deployment>(&client, ns), owned.clone())
        .owns(scoped::<Service>(&client, ns), owned.clone())
        .owns(scoped::<ConfigMap>(&client, ns), owned.clone())
        .owns(scoped::<Job>(&client, ns), owned.clone())
        .owns(scoped::<PodDisruptionBudget>(&client, ns), owned)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile loop");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
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
        });
        same_topic.metadata.deletion_timestamp = Some(now());
        let unrelated = region("west");
        let (keyspace_users, topic_users) =
            sharers(&me, &[me.clone(), same_keyspace, same_topic, unrelated]);
        assert_eq!(keyspace_users, ["elsewhere/south"]);
        assert_eq!(topic_users, ["stores/east"]);
    }
}
