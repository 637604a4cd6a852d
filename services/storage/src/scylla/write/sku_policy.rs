//! A SKU's own policy on ScyllaDB: one partition per SKU (`~policy`) holds the settings,
//! the outbox row of each change and the change's applied-command row, written by one
//! conditional batch `IF version = <loaded>` like a key's. Every decision on a key of the
//! SKU reads it ([`Partitions::sku_policy`]).

use scylla::statement::batch::{Batch, BatchType};
use stockflow_domain::decide;
use stockflow_domain::{
    BusEvent, CommandResult, EventMeta, LocationGrant, RecordedAnswer, SetPolicy, Sku,
};

use super::backoff::{MAX_ATTEMPTS, jitter};
use super::partition::Partitions;
use super::partition::op::{CmdGuard, StoredAnswer};
use crate::scylla::cql::errors::{cql, outcome_unknown};
use crate::scylla::cql::query;
use crate::scylla::cql::rows::{PayloadWrite, SkuPolicyBatchRow, SkuPolicyWrite};
use crate::scylla::cql::values::bigint;
use crate::scylla::cql::write_statements::SKU_POLICY;
use crate::scylla::outbox::outbox_row_id;
use crate::stop::{Ran, Step};
use crate::{StoreError, now_ms};

/// Sets `cmd.sku`'s own policy: decided by the domain on the stored one, written with its
/// event and its applied-command row, retried while other writers change it at once. A
/// retried command finds its applied-command row and gets the stored answer.
pub(super) async fn set(
    p: &Partitions,
    cmd: &SetPolicy,
    guard: CmdGuard,
    grant: &LocationGrant,
    meta: &EventMeta,
) -> Step<Ran> {
    for attempt in 0..MAX_ATTEMPTS {
        let ids = [guard.id.as_str().to_string()];
        let (current, stored) = tokio::join!(
            p.sku_policy(&cmd.sku),
            p.cmds_in((cmd.sku.as_str(), SKU_POLICY), &ids, false)
        );
        if let Some(stored) = stored?.get(guard.id.as_str()) {
            return stored.replay_for(&guard);
        }
        let current = current?;
        let applied = decide::set_sku_policy(current.as_ref(), cmd, grant, meta)?;
        let events = applied.event_count();
        let Some((policy, event)) = applied.policy else {
            return Err(StoreError::Invariant {
                what: "set a SKU's policy",
                detail: "the decision changed no policy".into(),
            }
            .into());
        };
        let expected = current.map(|c| version(c.version)).transpose()?;
        let result = CommandResult::Policy(policy.clone());
        let now = now_ms();
        let sku = cmd.sku.to_string();
        let rows = [
            SkuPolicyBatchRow::Policy(SkuPolicyWrite {
                settings: serde_json::to_string(&policy.settings)
                    .map_err(StoreError::encode("SKU policy"))?,
                version: version(policy.version)?,
                sku: sku.clone(),
                expected,
            }),
            SkuPolicyBatchRow::Payload(PayloadWrite {
                sku: sku.clone(),
                location: SKU_POLICY.to_string(),
                row_id: outbox_row_id(policy.version),
                payload: serde_json::to_vec(&BusEvent::Policy(event))
                    .map_err(StoreError::encode("policy event"))?,
                created_at: now,
            }),
            SkuPolicyBatchRow::Payload(StoredAnswer::row(
                &guard,
                RecordedAnswer::Accepted(result.clone()),
                (&sku, SKU_POLICY),
                now,
            )?),
        ];
        if write(p, &cmd.sku, &rows).await? {
            return Ok(Ran {
                result,
                events,
                replayed: false,
            });
        }
        // Another change won (or the outcome is unknown): the next attempt reads both the
        // policy and this command's applied-command row again.
        tokio::time::sleep(jitter(attempt)).await;
    }
    Err(StoreError::Contention {
        on: format!("the policy of {}", cmd.sku),
    }
    .into())
}

/// A stored version as CQL's bigint.
fn version(v: u64) -> Result<i64, StoreError> {
    bigint("set a SKU's policy version", v)
}

/// Sends the batch; whether it applied (`false` also when the outcome is unknown).
async fn write(p: &Partitions, sku: &Sku, rows: &[SkuPolicyBatchRow]) -> Result<bool, StoreError> {
    p.outbox.mark_partition(sku.as_str(), SKU_POLICY).await?;
    let mut batch = Batch::new(BatchType::Logged);
    batch.append_statement(p.st.write_sku_policy.clone());
    batch.append_statement(p.st.insert_outbox.clone());
    batch.append_statement(p.st.insert_cmd.clone());
    match p.session.batch(&batch, rows).await {
        Ok(result) => {
            let applied = query::applied("SKU policy batch", result)?.applied;
            if applied {
                p.outbox.committed(sku.as_str(), SKU_POLICY);
            }
            Ok(applied)
        }
        Err(e) if outcome_unknown(&e) => Ok(false),
        Err(e) => Err(cql("SKU policy batch")(e)),
    }
}
