//! The Fluvio topic: created when missing (if allowed), its partition count checked,
//! waited on until provisioned; deleted for good (a region's teardown).

use std::time::{Duration, Instant};

use fluvio::metadata::topic::{TopicResolution, TopicSpec};
use fluvio::{Fluvio, FluvioClusterConfig};

use super::{FluvioConfig, within};
use crate::fetch::TopicState;
use crate::{BusError, Result};

pub(super) async fn connect(config: &FluvioConfig) -> Result<Fluvio> {
    let cluster = FluvioClusterConfig::new(config.endpoint.clone());
    within(
        config,
        &format!("cannot connect to Fluvio at {}", config.endpoint),
        Fluvio::connect_with_config(&cluster),
    )
    .await
}

/// The partition count of the topic, or `None` when it does not exist.
pub(super) async fn topic_partitions(
    client: &Fluvio,
    config: &FluvioConfig,
) -> Result<Option<(u32, TopicResolution)>> {
    let admin = client.admin().await;
    let topics = within(
        config,
        "list topics",
        admin.list::<TopicSpec, String>(vec![config.topic.clone()]),
    )
    .await?;
    Ok(topics
        .into_iter()
        .find(|t| t.name == config.topic)
        .map(|t| (t.spec.partitions(), t.status.resolution)))
}

fn check_partitions(config: &FluvioConfig, found: u32) -> Result<()> {
    if found == config.partitions {
        return Ok(());
    }
    Err(BusError::PartitionCountMismatch {
        topic: config.topic.clone(),
        found,
        expected: config.partitions,
    })
}

/// Creates the topic when missing (if the config allows), checks its partition count and
/// waits until every partition is provisioned.
pub async fn ensure_topic(config: &FluvioConfig) -> Result<TopicState> {
    let client = connect(config).await?;
    ensure_topic_on(&client, config).await
}

pub(super) async fn ensure_topic_on(client: &Fluvio, config: &FluvioConfig) -> Result<TopicState> {
    let state = match topic_partitions(client, config).await? {
        Some((found, _)) => {
            check_partitions(config, found)?;
            TopicState::Existed
        }
        None if !config.create_topic => {
            return Err(BusError::TopicMissing {
                topic: config.topic.clone(),
                bus: config.endpoint.clone(),
                partitions: config.partitions,
            });
        }
        None => {
            let admin = client.admin().await;
            let spec = TopicSpec::new_computed(config.partitions, config.replication, None);
            within(
                config,
                "create topic",
                admin.create(config.topic.clone(), false, spec),
            )
            .await?;
            tracing::info!(topic = %config.topic, partitions = config.partitions, "created the Fluvio topic");
            TopicState::Created
        }
    };
    let deadline = Instant::now() + config.request_timeout;
    loop {
        match topic_partitions(client, config).await? {
            Some((_, TopicResolution::Provisioned)) => return Ok(state),
            Some((_, resolution)) if Instant::now() < deadline => {
                tracing::debug!(?resolution, "waiting for the topic's partitions");
            }
            other => {
                return Err(BusError::TopicNotReady {
                    topic: config.topic.clone(),
                    state: format!(
                        "is not provisioned after {:?}: {other:?}",
                        config.request_timeout
                    ),
                });
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deletes the topic; a missing topic is not an error.
pub async fn delete_topic(config: &FluvioConfig) -> Result<()> {
    let client = connect(config).await?;
    if topic_partitions(&client, config).await?.is_none() {
        return Ok(());
    }
    let admin = client.admin().await;
    within(
        config,
        "delete topic",
        admin.delete::<TopicSpec>(config.topic.clone()),
    )
    .await
}
