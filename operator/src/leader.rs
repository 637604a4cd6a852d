//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator replicas can run
//! and only one reconciles. The leader renews every few seconds; a replica that cannot
//! renew exits, and Kubernetes restarts it as a follower.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

/// Seconds a lease stays valid without renewal.
const LEASE_SECONDS: i32 = 15;
/// Renewal period.
const RENEW_EVERY: Duration = Duration::from_secs(5);

/// Holds the lease `name` in `namespace` as `identity`.
pub struct LeaderLease {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl LeaderLease {
    /// A lease handle.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
        }
    }

    fn spec(&self, transitions: i32) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Tries once to take or renew the lease; true when we hold it.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let age = Timestamp::now().as_second() - t.0.as_second();
            age > i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS))
        });
        if !mine && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let mut next = self.spec(transitions);
        if mine {
            next.acquire_time = spec.acquire_time;
        }
        lease.spec = Some(next);
        // replace() sends the resourceVersion we read: a concurrent taker makes us lose.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    tracing::info!(identity = %self.identity, "leading");
                    return;
                }
                Ok(false) => tracing::debug!("another replica leads; waiting"),
                Err(e) => tracing::warn!(error = %e, "cannot read the leader lease"),
            }
            tokio::time::sleep(RENEW_EVERY).await;
        }
    }

    /// Renews until renewal fails; returns when leadership is lost.
    pub async fn keep(&self) {
        let mut failures = 0;
        loop {
            tokio::time::sleep(RENEW_EVERY).await;
            match self.try_acquire().await {
                Ok(true) => failures = 0,
                Ok(false) => return,
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "cannot renew the leader lease");
                    if failures * RENEW_EVERY.as_secs()
                        >= u64::try_from(LEASE_SECONDS).unwrap_or(15)
                    {
                        return;
                    }
                }
            }
        }
    }
}
