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
use k8s_openapi::api::core::v1::{ConfigMap, Service};
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

use crate::crd::{InventoryRegion, InventoryRegionStatus};
use crate::error::{Error, Result};
use crate::resources::{self, Role};
use crate::status::{self, JobState};
use crate::{FIELD_MANAGER, FINALIZER};

mod admission;
mod cleanup;

pub use admission::admission;
pub use cleanup::{cleanup, sharers};

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
mod tests;
