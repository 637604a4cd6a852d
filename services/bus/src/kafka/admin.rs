//! The topic: created when missing (if allowed), its partition count checked (a different
//! count would move SKUs between partitions), every partition waited on for a leader; and
//! deleted for good (a region's teardown).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::producer::{BaseProducer, Producer};

use super::diagnosed::Diagnosed;
use super::{KafkaConfig, TopicState, blocking};
use crate::{BusError, Result};

/// A client for metadata requests whose events are polled, so a failure can name its cause.
fn metadata_client(config: &KafkaConfig) -> Result<Arc<BaseProducer<Diagnosed>>> {
    config
        .client_config(&[])?
        .create_with_context(Diagnosed::default())
        .map(Arc::new)
        .map_err(|e| BusError::kafka("Kafka client settings", e))
}

fn admin(config: &KafkaConfig) -> Result<Arc<AdminClient<DefaultClientContext>>> {
    config
        .client_config(&[])?
        .create()
        .map(Arc::new)
        .map_err(|e| BusError::kafka("Kafka client settings", e))
}

/// A topic as the metadata describes it.
#[derive(Debug, Clone, Copy)]
struct TopicMetadata {
    partitions: u32,
    /// Every partition has a leader (a new topic's leaders take a moment to be elected).
    led: bool,
}

/// The topic's metadata, or `None` when the brokers do not know it.
async fn topic_partitions(
    probe: Arc<BaseProducer<Diagnosed>>,
    config: &KafkaConfig,
) -> Result<Option<TopicMetadata>> {
    let topic = config.topic.clone();
    let brokers = config.brokers.join(",");
    let timeout = config.request_timeout;
    blocking(move || {
        let metadata = probe
            .client()
            .fetch_metadata(Some(&topic), timeout)
            .map_err(|e| {
                // Serve the client's pending events: the broker threads' log lines.
                probe.poll(Duration::from_millis(50));
                let cause = probe
                    .context()
                    .last_error()
                    .map(|c| format!(" (broker errors: {c})"))
                    .unwrap_or_default();
                BusError::kafka(
                    format!(
                        "cannot read topic metadata from Kafka brokers {brokers} within {timeout:?}{cause}"
                    ),
                    e,
                )
            })?;
        let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match t.error().map(RDKafkaErrorCode::from) {
            None => Ok(Some(TopicMetadata {
                partitions: u32::try_from(t.partitions().len()).unwrap_or(u32::MAX),
                led: t
                    .partitions()
                    .iter()
                    .all(|p| p.error().is_none() && p.leader() >= 0),
            })),
            Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
            Some(code) => Err(BusError::TopicNotReady {
                topic,
                state: format!("has no usable metadata: {code}"),
            }),
        }
    })
    .await
}

/// Creates the topic when missing (if the config allows), checks its partition count, and
/// waits until every partition has a leader.
pub async fn ensure_topic(config: &KafkaConfig) -> Result<TopicState> {
    let admin = admin(config)?;
    let probe = metadata_client(config)?;
    let state = match topic_partitions(probe.clone(), config).await? {
        Some(found) => {
            check_partitions(config, found.partitions)?;
            TopicState::Existed
        }
        None => create_topic(&admin, config).await?,
    };
    let deadline = std::time::Instant::now() + config.request_timeout;
    loop {
        match topic_partitions(probe.clone(), config).await? {
            Some(found) if found.led => {
                check_partitions(config, found.partitions)?;
                return Ok(state);
            }
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => {
                return Err(BusError::TopicNotReady {
                    topic: config.topic.clone(),
                    state: format!(
                        "has no leader for every partition after {:?}: {other:?}",
                        config.request_timeout
                    ),
                });
            }
        }
    }
}

async fn create_topic(
    admin: &AdminClient<DefaultClientContext>,
    config: &KafkaConfig,
) -> Result<TopicState> {
    if !config.create_topic {
        return Err(BusError::TopicMissing {
            topic: config.topic.clone(),
            bus: config.brokers.join(","),
            partitions: config.partitions,
        });
    }
    let partitions = i32::try_from(config.partitions).map_err(|_| BusError::Settings {
        setting: "partitions",
        reason: format!("{} is more than Kafka allows", config.partitions),
    })?;
    let topic = NewTopic::new(
        &config.topic,
        partitions,
        TopicReplication::Fixed(i32::from(config.replication)),
    );
    let options = AdminOptions::new()
        .operation_timeout(Some(config.request_timeout))
        .request_timeout(Some(config.request_timeout));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|e| BusError::kafka("create topic", e))?;
    let mut state = TopicState::Created;
    for result in results {
        match result {
            Ok(_) => {}
            // Someone else created it meanwhile: it is checked like any existing topic.
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => state = TopicState::Existed,
            Err((topic, code)) => {
                return Err(BusError::TopicRefused {
                    action: "create",
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    if state == TopicState::Created {
        tracing::info!(topic = %config.topic, partitions = config.partitions, "created the Kafka topic");
    }
    Ok(state)
}

fn check_partitions(config: &KafkaConfig, found: u32) -> Result<()> {
    if found == config.partitions {
        return Ok(());
    }
    Err(BusError::PartitionCountMismatch {
        topic: config.topic.clone(),
        found,
        expected: config.partitions,
    })
}

/// Deletes the topic, returning once the brokers no longer describe it; a missing topic is
/// not an error.
pub async fn delete_topic(config: &KafkaConfig) -> Result<()> {
    let admin = admin(config)?;
    let options = AdminOptions::new()
        .operation_timeout(Some(config.request_timeout))
        .request_timeout(Some(config.request_timeout));
    let results = admin
        .delete_topics(&[config.topic.as_str()], &options)
        .await
        .map_err(|e| BusError::kafka("delete topic", e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => {
                return Err(BusError::TopicRefused {
                    action: "delete",
                    topic,
                    reason: code.to_string(),
                });
            }
        }
    }
    // The controller acknowledges a deletion before every broker's metadata forgets the
    // topic; return only once it is gone, so whoever deletes it (a region's clean-up, a
    // test) does not find it again.
    let probe = metadata_client(config)?;
    let deadline = tokio::time::Instant::now() + config.request_timeout;
    while topic_partitions(probe.clone(), config).await?.is_some() {
        if tokio::time::Instant::now() >= deadline {
            return Err(BusError::TopicNotReady {
                topic: config.topic.clone(),
                state: format!(
                    "was deleted but the brokers still describe it after {:?}",
                    config.request_timeout
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
