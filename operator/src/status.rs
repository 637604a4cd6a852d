//! Pure status computation: what the children report → conditions, phase, endpoints.
//!
//! Rollout done means `Available=True, Progressing=False, Degraded=False`. A condition's
//! `lastTransitionTime` moves only when its status really changes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::crd::{Condition, Endpoints, InventoryRegion, InventoryRegionStatus};
use crate::resources::{self, Role};

/// How a Job (the migration, the teardown) is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not finished yet.
    Running,
    /// Succeeded: the command API may roll out.
    Succeeded,
    /// Gave up (backoff limit): the region is degraded.
    Failed(String),
}

impl JobState {
    /// Reads a Job's status.
    pub fn of(job: Option<&Job>) -> Self {
        let Some(status) = job.and_then(|j| j.status.as_ref()) else {
            return JobState::Running;
        };
        if status.succeeded.unwrap_or(0) > 0 {
            return JobState::Succeeded;
        }
        let failed = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Failed" && c.status == "True");
        match failed {
            Some(c) => JobState::Failed(c.message.clone().unwrap_or_else(|| "job failed".into())),
            None => JobState::Running,
        }
    }
}

/// Ready replicas of a Deployment, and whether its rollout of the current spec is done.
pub fn rollout(deployment: Option<&Deployment>) -> (i32, bool) {
    let Some(d) = deployment else {
        return (0, false);
    };
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = &d.status else {
        return (0, desired == 0);
    };
    let ready = status.ready_replicas.unwrap_or(0);
    let current = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    // As `kubectl rollout status` decides: every replica runs the new template (no old pod
    // is left), and enough of them are available.
    let done = current
        && updated >= desired
        && status.replicas.unwrap_or(0) <= updated
        && ready >= desired
        && status.available_replicas.unwrap_or(0) >= desired;
    (ready, done)
}

fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

/// The status of `region` given its Job and Deployments (by role).
pub fn compute(
    region: &InventoryRegion,
    migration: &JobState,
    deployments: &BTreeMap<Role, Deployment>,
    now: Time,
) -> InventoryRegionStatus {
    let previous = region
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    let generation = region.metadata.generation;
    let mut ready_replicas = BTreeMap::new();
    let mut pending = Vec::new();
    for role in Role::REGION {
        let (ready, done) = rollout(deployments.get(&role));
        ready_replicas.insert(role.name().to_string(), ready);
        if !done {
            pending.push(role.name());
        }
    }
    let (available, progressing, degraded, phase, message) = match migration {
        JobState::Failed(msg) => (
            false,
            false,
            true,
            "Degraded",
            format!("schema migration failed: {msg}"),
        ),
        JobState::Running => (
            false,
            true,
            false,
            "Migrating",
            "waiting for the schema migration job".to_string(),
        ),
        JobState::Succeeded if pending.is_empty() => (
            true,
            false,
            false,
            "Ready",
            "every role is rolled out and ready".to_string(),
        ),
        JobState::Succeeded => (
            false,
            true,
            false,
            "RollingOut",
            format!("waiting for {}", pending.join(", ")),
        ),
    };
    let conditions = vec![
        condition(
            &previous,
            "Available",
            available,
            if available {
                "RolloutComplete"
            } else {
                "RolloutPending"
            },
            message.clone(),
            generation,
            &now,
        ),
        condition(
            &previous,
            "Progressing",
            progressing,
            if progressing { phase } else { "Settled" },
            message.clone(),
            generation,
            &now,
        ),
        condition(
            &previous,
            "Degraded",
            degraded,
            if degraded {
                "MigrationFailed"
            } else {
                "Healthy"
            },
            message,
            generation,
            &now,
        ),
    ];
    let mut conditions = conditions;
    conditions.push(insecure(region, &previous, &now));
    InventoryRegionStatus {
        observed_generation: generation,
        conditions,
        phase: Some(phase.into()),
        ready_replicas,
        endpoints: Some(Endpoints {
            command_api: resources::endpoint(region, Role::CommandApi),
            query_api: resources::endpoint(region, Role::QueryApi),
        }),
        keyspace: Some(resources::keyspace(region)),
        topic: Some(resources::topic(region)),
    }
}

/// The `Insecure` condition: True while the spec runs the APIs without authentication
/// (`insecureNoAuth: true`). A warning beside `Available`/`Progressing`/`Degraded`, which
/// keep their meaning: an open region that rolled out is Available and not Degraded.
pub fn insecure(region: &InventoryRegion, previous: &[Condition], now: &Time) -> Condition {
    let open = !resources::authenticated(region);
    let (reason, message) = if open && !region.spec.insecure_no_auth {
        (
            "NoAuthentication",
            "the spec names no authentication (stored before the CRD required it): nothing new \
             is applied until it sets spec.auth, spec.tls.principalsSecret or \
             spec.insecureNoAuth: true"
                .to_string(),
        )
    } else if open {
        (
            "InsecureNoAuth",
            "spec.insecureNoAuth is true: the APIs take every request without authentication; \
             set spec.auth or spec.tls.principalsSecret"
                .to_string(),
        )
    } else if region.spec.auth.is_some() {
        ("BearerTokens", "callers present bearer tokens".to_string())
    } else {
        (
            "MutualTLSPrincipals",
            "callers present client certificates listed in spec.tls.principalsSecret".to_string(),
        )
    };
    condition(
        previous,
        INSECURE,
        open,
        reason,
        message,
        region.metadata.generation,
        now,
    )
}

/// Type of the condition that flags a region serving without authentication.
pub const INSECURE: &str = "Insecure";

/// Why the operator refused to apply a region's spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// CamelCase reason, also the Warning event's: `AuthenticationRequired`,
    /// `ImageNotAllowed`, `SecretNotLabelled`, `SecretNotFound`.
    pub reason: &'static str,
    /// What was refused and how to fix it, naming the image or Secrets.
    pub message: String,
}

/// The status of a region whose spec the operator refused: `Degraded` with the refusal's
/// reason, not `Progressing` (nothing new is applied until the spec or the Secrets change),
/// `Available` as it was (the children of an earlier generation keep running).
pub fn refused(region: &InventoryRegion, refusal: &Refusal, now: Time) -> InventoryRegionStatus {
    let before = region.status.clone().unwrap_or_default();
    let previous = before.conditions.clone();
    let generation = region.metadata.generation;
    let available = previous
        .iter()
        .find(|c| c.type_ == "Available")
        .cloned()
        .unwrap_or_else(|| {
            condition(
                &previous,
                "Available",
                false,
                "RolloutPending",
                "nothing is applied until the spec is accepted".into(),
                generation,
                &now,
            )
        });
    let conditions = vec![
        available,
        condition(
            &previous,
            "Progressing",
            false,
            "Refused",
            refusal.message.clone(),
            generation,
            &now,
        ),
        condition(
            &previous,
            "Degraded",
            true,
            refusal.reason,
            refusal.message.clone(),
            generation,
            &now,
        ),
        insecure(region, &previous, &now),
    ];
    InventoryRegionStatus {
        observed_generation: generation,
        conditions,
        phase: Some("Degraded".into()),
        keyspace: Some(resources::keyspace(region)),
        topic: Some(resources::topic(region)),
        ..before
    }
}

/// The status of a paused region: conditions kept, phase `Paused` (and the names the region
/// uses recorded, as in every status the operator writes).
pub fn paused(region: &InventoryRegion) -> InventoryRegionStatus {
    let mut status = region.status.clone().unwrap_or_default();
    status.phase = Some("Paused".into());
    status.keyspace = Some(resources::keyspace(region));
    status.topic = Some(resources::topic(region));
    status
}

/// Whether the region carries `stockflow.dev/paused: "true"`.
pub fn is_paused(region: &InventoryRegion) -> bool {
    region
        .annotations()
        .get(crate::PAUSED_ANNOTATION)
        .is_some_and(|v| v == "true")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ready_deployment, region};
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    fn get<'a>(s: &'a InventoryRegionStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn a_region_moves_from_migrating_to_ready() {
        let mut r = region("north");
        let none = BTreeMap::new();
        let s = compute(&r, &JobState::Running, &none, at(1));
        assert_eq!(s.phase.as_deref(), Some("Migrating"));
        assert_eq!(get(&s, "Progressing").status, "True");
        let s = compute(&r, &JobState::Succeeded, &none, at(2));
        assert_eq!(s.phase.as_deref(), Some("RollingOut"));
        r.status = Some(s);
        let all: BTreeMap<Role, Deployment> = Role::REGION
            .iter()
            .map(|role| (*role, ready_deployment(&r, *role, 2)))
            .collect();
        let s = compute(&r, &JobState::Succeeded, &all, at(3));
        assert_eq!(s.phase.as_deref(), Some("Ready"));
        assert_eq!(
            (
                get(&s, "Available").status.as_str(),
                get(&s, "Progressing").status.as_str(),
                get(&s, "Degraded").status.as_str()
            ),
            ("True", "False", "False")
        );
        assert_eq!(s.ready_replicas["command-api"], 2);
        assert_eq!(s.observed_generation, Some(1));
    }

    #[test]
    fn last_transition_time_moves_only_on_a_transition() {
        let mut r = region("north");
        let s1 = compute(&r, &JobState::Running, &BTreeMap::new(), at(10));
        r.status = Some(s1.clone());
        let s2 = compute(&r, &JobState::Running, &BTreeMap::new(), at(20));
        assert_eq!(get(&s2, "Progressing").last_transition_time, at(10));
        let s3 = compute(
            &r,
            &JobState::Failed("boom".into()),
            &BTreeMap::new(),
            at(30),
        );
        assert_eq!(get(&s3, "Degraded").last_transition_time, at(30));
        assert_eq!(
            get(&s3, "Available").last_transition_time,
            at(10),
            "Available stayed False"
        );
        assert!(get(&s3, "Degraded").message.contains("boom"));
    }

    #[test]
    fn a_stale_deployment_status_is_not_a_finished_rollout() {
        let r = region("north");
        let mut d = ready_deployment(&r, Role::QueryApi, 2);
        d.metadata.generation = Some(3);
        assert_eq!(rollout(Some(&d)), (2, false));
    }

    #[test]
    fn an_open_region_is_flagged_insecure_without_being_degraded() {
        let r = region("north");
        let all: BTreeMap<Role, Deployment> = Role::REGION
            .iter()
            .map(|role| (*role, ready_deployment(&r, *role, 2)))
            .collect();
        let s = compute(&r, &JobState::Succeeded, &all, at(1));
        let insecure = get(&s, INSECURE);
        assert_eq!(
            (insecure.status.as_str(), insecure.reason.as_str()),
            ("True", "InsecureNoAuth")
        );
        assert_eq!(
            (
                get(&s, "Available").status.as_str(),
                get(&s, "Progressing").status.as_str(),
                get(&s, "Degraded").status.as_str()
            ),
            ("True", "False", "False"),
            "Available/Progressing/Degraded keep their meaning"
        );
        let mut secured = region("north");
        secured.spec.insecure_no_auth = false;
        secured.spec.auth = Some(crate::crd::AuthSpec {
            issuer: "https://idp.example".into(),
            audience: "north".into(),
            jwks_url: Some("https://idp.example/jwks.json".into()),
            jwks_secret: None,
        });
        let s = compute(&secured, &JobState::Succeeded, &all, at(1));
        assert_eq!(get(&s, INSECURE).status, "False");
    }

    #[test]
    fn every_status_records_the_names_the_region_uses() {
        let mut r = region("north");
        r.spec.scylla.keyspace = None;
        let s = compute(&r, &JobState::Running, &BTreeMap::new(), at(1));
        assert_eq!(s.keyspace, Some(resources::keyspace(&r)));
        assert_eq!(s.topic, Some(resources::topic(&r)));
        let refusal = Refusal {
            reason: "ImageNotAllowed",
            message: "image x is not allowed".into(),
        };
        let s = refused(&r, &refusal, at(2));
        assert_eq!(s.topic, Some(resources::topic(&r)));
        assert_eq!(paused(&r).topic, Some(resources::topic(&r)));
    }

    #[test]
    fn a_refused_spec_is_degraded_with_its_reason_and_keeps_availability() {
        let mut r = region("north");
        let all: BTreeMap<Role, Deployment> = Role::REGION
            .iter()
            .map(|role| (*role, ready_deployment(&r, *role, 2)))
            .collect();
        r.status = Some(compute(&r, &JobState::Succeeded, &all, at(1)));
        r.metadata.generation = Some(2);
        let refusal = Refusal {
            reason: "SecretNotLabelled",
            message: "Secret creds (spec.scylla.credentialsSecret) not labelled".into(),
        };
        let s = refused(&r, &refusal, at(5));
        let degraded = get(&s, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "SecretNotLabelled")
        );
        assert!(degraded.message.contains("creds"));
        assert_eq!(degraded.last_transition_time, at(5));
        assert_eq!(get(&s, "Progressing").status, "False");
        assert_eq!(
            get(&s, "Available").status,
            "True",
            "the earlier generation's pods still serve"
        );
        assert_eq!(s.observed_generation, Some(2));
        assert_eq!(s.phase.as_deref(), Some("Degraded"));
    }
}
