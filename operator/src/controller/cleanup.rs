//! Deletion of a region: with `deletionPolicy: Delete`, a teardown Job removes its keyspace
//! and topic (with the region's own credentials), except a name any other region in the
//! cluster also uses; the finalizer is released when the Job has ended.

use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::{Context, admission, apply_child};
use crate::crd::{DeletionPolicy, InventoryRegion};
use crate::error::{Error, Result};
use crate::resources::{self, Teardown};
use crate::status::JobState;

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
