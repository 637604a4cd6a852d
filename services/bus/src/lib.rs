//! The event bus of a region: one topic, partitioned by SKU.
//!
//! Layout:
//! - [`port`]: the [`EventLog`] trait every bus adapter implements, and its records.
//! - [`kafka`]: the adapter for Apache Kafka and compatible brokers (Redpanda, managed
//!   Kafka), over librdkafka: an idempotent producer that picks partitions with the
//!   project's own partitioner, consumers assigned to explicit offsets, topic admin.
//! - [`fluvio`]: the adapter for Fluvio, the design's default bus: the project's
//!   partitioner on the producer, one stream per partition from an explicit offset, and a
//!   check that offsets continue exactly (the 0.50.1 client can skip records).
//! - [`error`]: the crate's one error enum.
//! - [`contract`]: the behaviour every adapter must show (for adapters' tests); the
//!   embedded log (in `stockflow-storage`, beside the other SQLite stores it shares its
//!   WAL machinery with) and the Kafka adapter both run it.

pub mod error;
mod fetch;
pub mod fluvio;
pub mod kafka;
pub mod port;

pub mod contract;

pub use error::{BusError, Result};
pub use fetch::TopicState;
pub use port::{EventLog, LogRecord, NewRecord};

pub use stockflow_domain::default_topic;
