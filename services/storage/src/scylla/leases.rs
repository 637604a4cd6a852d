//! Leases on ScyllaDB: one row per `(group, shard)`, taken with `IF NOT EXISTS`, renewed
//! and released with `IF owner = ?`, and expiring by TTL when the owner stops renewing.
//!
//! Every lease is its own partition, so renewing many shards never queues Paxos rounds
//! behind each other. A timed-out LWT is reported as an error: the caller keeps a lease
//! only as long as its last confirmed renewal allows.

use std::sync::Arc;

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;

use super::cql::query::{self, Lwt};
use super::cql::rows::MemberRow;
use crate::ports::LeaseStore;
use crate::{Result, StoreError, now_ms};

struct Statements {
    acquire: PreparedStatement,
    renew: PreparedStatement,
    release: PreparedStatement,
    heartbeat: PreparedStatement,
    members: PreparedStatement,
}

/// [`LeaseStore`] over a ScyllaDB keyspace (schema version 3).
pub struct ScyllaLeaseStore {
    session: Arc<Session>,
    st: Statements,
}

fn shard_value(shard: u32) -> Result<i32> {
    i32::try_from(shard).map_err(|_| StoreError::Config {
        setting: "lease shard",
        reason: format!("shard {shard} is out of range"),
    })
}

fn ttl_value(ttl: u32) -> i32 {
    i32::try_from(ttl.max(1)).unwrap_or(i32::MAX)
}

impl ScyllaLeaseStore {
    /// Prepares the statements.
    pub async fn new(session: Arc<Session>, keyspace: &str) -> Result<Self> {
        let ks = keyspace;
        let s = &session;
        let p = |cql: String| query::prepare(s, cql);
        let st = Statements {
            acquire: p(format!("INSERT INTO {ks}.leases (group_name, shard, owner) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?")).await?,
            renew: p(format!("UPDATE {ks}.leases USING TTL ? SET owner = ? WHERE group_name = ? AND shard = ? IF owner = ?")).await?,
            release: p(format!("DELETE FROM {ks}.leases WHERE group_name = ? AND shard = ? IF owner = ?")).await?,
            heartbeat: p(format!("INSERT INTO {ks}.lease_members (group_name, member, seen) VALUES (?, ?, ?) USING TTL ?")).await?,
            members: p(format!("SELECT member FROM {ks}.lease_members WHERE group_name = ?")).await?,
        };
        Ok(Self { session, st })
    }

    async fn conditional(
        &self,
        what: &'static str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Lwt> {
        query::lwt(&self.session, what, st, values).await
    }
}

#[async_trait]
impl LeaseStore for ScyllaLeaseStore {
    async fn acquire(&self, group: &str, shard: u32, owner: &str, ttl_secs: u32) -> Result<bool> {
        let taken = self
            .conditional(
                "take a lease",
                &self.st.acquire,
                (group, shard_value(shard)?, owner, ttl_value(ttl_secs)),
            )
            .await?;
        // Not applied: the row that exists is returned. Ours when an earlier attempt whose
        // answer was lost did take it.
        Ok(taken.applied || taken.owner.as_deref() == Some(owner))
    }

    async fn renew(&self, group: &str, shard: u32, owner: &str, ttl_secs: u32) -> Result<bool> {
        self.conditional(
            "renew a lease",
            &self.st.renew,
            (
                ttl_value(ttl_secs),
                owner,
                group,
                shard_value(shard)?,
                owner,
            ),
        )
        .await
        .map(|renewed| renewed.applied)
    }

    async fn release(&self, group: &str, shard: u32, owner: &str) -> Result<()> {
        self.conditional(
            "release a lease",
            &self.st.release,
            (group, shard_value(shard)?, owner),
        )
        .await?;
        Ok(())
    }

    async fn heartbeat(&self, group: &str, member: &str, ttl_secs: u32) -> Result<()> {
        query::exec(
            &self.session,
            "lease heartbeat",
            &self.st.heartbeat,
            (group, member, now_ms(), ttl_value(ttl_secs)),
        )
        .await
    }

    async fn members(&self, group: &str) -> Result<Vec<String>> {
        let rows: Vec<MemberRow> = query::rows(
            &self.session,
            "list lease members",
            &self.st.members,
            (group,),
        )
        .await?;
        Ok(rows.into_iter().map(|r| r.member).collect())
    }
}
