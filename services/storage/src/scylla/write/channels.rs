//! Sales channels on ScyllaDB: one row each, its definition as JSON, revised by a
//! conditional write on its version so two concurrent changes never both count as the
//! same revision.

use stockflow_domain::{Channel, ChannelId};

use super::backoff::{MAX_ATTEMPTS, jitter};
use super::partition::Partitions;
use crate::scylla::cql::query;
use crate::scylla::cql::rows::ChannelRow;
use crate::{Result, StoreError};

/// A channel, if defined.
pub(super) async fn channel(p: &Partitions, id: &ChannelId) -> Result<Option<Channel>> {
    let row: Option<ChannelRow> = query::first(
        &p.session,
        "load channel",
        &p.st.get_channel,
        (id.as_str(),),
    )
    .await?;
    row.and_then(|r| r.body)
        .map(|body| serde_json::from_str(&body).map_err(StoreError::corrupt("channel")))
        .transpose()
}

/// Stores `channel` as the next revision of its id, retrying while others revise it.
pub(super) async fn put_channel(p: &Partitions, channel: Channel) -> Result<Channel> {
    for attempt in 0..MAX_ATTEMPTS {
        let current = self::channel(p, &channel.id).await?;
        let revised = channel.clone().revised(current.as_ref());
        let body = serde_json::to_string(&revised).map_err(StoreError::encode("channel"))?;
        let version = version_of(&revised)?;
        let id = revised.id.as_str();
        let lwt = match &current {
            None => {
                query::lwt(
                    &p.session,
                    "create channel",
                    &p.st.create_channel,
                    (id, version, body.as_str()),
                )
                .await?
            }
            Some(previous) => {
                query::lwt(
                    &p.session,
                    "revise channel",
                    &p.st.revise_channel,
                    (version, body.as_str(), id, version_of(previous)?),
                )
                .await?
            }
        };
        if lwt.applied {
            return Ok(revised);
        }
        tokio::time::sleep(jitter(attempt)).await;
    }
    Err(StoreError::Contention {
        on: format!("channel {}", channel.id),
    })
}

fn version_of(channel: &Channel) -> Result<i64> {
    i64::try_from(channel.version).map_err(|_| StoreError::Invariant {
        what: "revise a channel",
        detail: format!("revision {} is out of range", channel.version),
    })
}
