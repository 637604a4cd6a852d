//! The bus crate's one error enum: each variant names what failed and keeps the client's
//! own error as its source, so callers can tell a bus that is down (retry) from a topic
//! that is wrong (fix the configuration) without reading messages.

use std::time::Duration;

/// Result with [`BusError`].
pub type Result<T, E = BusError> = std::result::Result<T, E>;

/// A client library's error, kept as the source of a [`BusError`].
pub type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// A Kafka client call failed (librdkafka's error kept as the source).
    #[error("{what}: {source}")]
    Kafka {
        /// What was being done.
        what: String,
        /// librdkafka's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A Fluvio client call failed.
    #[error("{what}: {source}")]
    Fluvio {
        /// What was being done.
        what: String,
        /// The Fluvio client's error.
        #[source]
        source: Source,
    },
    /// The bus gave no answer in time.
    #[error("{what}: no answer within {after:?}")]
    TimedOut {
        /// What was asked.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// The topic exists but cannot be used yet (partitions without a leader, not
    /// provisioned, deleted but still described).
    #[error("topic {topic} {state}")]
    TopicNotReady {
        /// The topic.
        topic: String,
        /// What is wrong with it now.
        state: String,
    },
    /// The topic is missing and this process may not create it.
    #[error(
        "topic {topic} does not exist on {bus} and topic creation is off (create it with {partitions} partitions, or allow creation)"
    )]
    TopicMissing {
        /// The topic.
        topic: String,
        /// Where it was looked for.
        bus: String,
        /// The partitions it should have.
        partitions: u32,
    },
    /// The topic's partition count is not the configured one.
    #[error(
        "topic {topic} has {found} partitions, not {expected}: the partition count is fixed once a topic holds events, since changing it would move SKUs between partitions"
    )]
    PartitionCountMismatch {
        /// The topic.
        topic: String,
        /// Partitions it has.
        found: u32,
        /// Partitions configured.
        expected: u32,
    },
    /// The bus refused to create or delete the topic.
    #[error("cannot {action} topic {topic}: {reason}")]
    TopicRefused {
        /// `create` or `delete`.
        action: &'static str,
        /// The topic.
        topic: String,
        /// The bus's answer.
        reason: String,
    },
    /// A partition the log does not have.
    #[error("no partition {partition}: the log has {partitions}")]
    NoSuchPartition {
        /// The partition asked for.
        partition: u32,
        /// Partitions the log has.
        partitions: u32,
    },
    /// An offset the bus cannot address.
    #[error("offset {offset} is out of range")]
    OffsetOutOfRange {
        /// The offset.
        offset: u64,
    },
    /// A setting that cannot work, found before any connection.
    #[error("{setting}: {reason}")]
    Settings {
        /// The setting (or client) concerned.
        setting: &'static str,
        /// Why it cannot work.
        reason: String,
    },
    /// A partition's read stream ended (the client closed it); reopened on the next read.
    #[error("the stream of partition {partition} ended")]
    StreamEnded {
        /// The partition.
        partition: u32,
    },
    /// The producer lost a delivery report (it was shutting down).
    #[error("the producer dropped a delivery")]
    DeliveryDropped,
    /// The embedded log's storage failed.
    #[error("embedded log: {source}")]
    Storage {
        /// Whether trying again may work (a busy or full disk, not a corrupt record).
        retryable: bool,
        /// The store's error.
        #[source]
        source: Source,
    },
    /// A blocking bus call panicked.
    #[error("a bus call panicked")]
    Panicked(#[source] tokio::task::JoinError),
}

impl BusError {
    /// A Kafka client error while doing `what`.
    pub fn kafka(what: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        BusError::Kafka {
            what: what.into(),
            source,
        }
    }

    /// A Fluvio client error while doing `what`.
    pub fn fluvio(what: impl Into<String>, source: impl Into<Source>) -> Self {
        BusError::Fluvio {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Whether the same operation may succeed if tried again.
    pub fn retryable(&self) -> bool {
        match self {
            BusError::Kafka { .. }
            | BusError::Fluvio { .. }
            | BusError::TimedOut { .. }
            | BusError::TopicNotReady { .. }
            | BusError::StreamEnded { .. }
            | BusError::DeliveryDropped
            | BusError::Panicked(_) => true,
            BusError::Storage { retryable, .. } => *retryable,
            BusError::TopicMissing { .. }
            | BusError::PartitionCountMismatch { .. }
            | BusError::TopicRefused { .. }
            | BusError::NoSuchPartition { .. }
            | BusError::OffsetOutOfRange { .. }
            | BusError::Settings { .. } => false,
        }
    }

    /// Whether the configuration is what is wrong (a missing topic, a partition count, a
    /// setting): retrying cannot help, and a process should stop and say so.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            BusError::TopicMissing { .. }
                | BusError::PartitionCountMismatch { .. }
                | BusError::Settings { .. }
        )
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            BusError::Storage { .. } => "storage",
            e if e.is_configuration() => "config",
            e if e.retryable() => "unavailable",
            _ => "refused",
        }
    }
}
