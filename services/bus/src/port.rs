//! The event-log port: a durable log partitioned by record key, addressed by
//! `(partition, offset)`.
//!
//! Shaped after what Kafka, Fluvio and the embedded SQLite log all offer: appends are
//! confirmed with the partition and offset each record got, reads are long polls from an
//! explicit offset (the consumer keeps its offsets itself, with its read models), and the
//! partition of a record is [`stockflow_domain::partition_for_key`] of its key on every
//! adapter, so a SKU lands in the same partition whichever bus carries it.

use std::time::Duration;

use async_trait::async_trait;

use crate::Result;

/// A record to append to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// Partitioning key (the SKU).
    pub key: String,
    /// Payload.
    pub value: Vec<u8>,
    /// Record headers (the CloudEvents `ce_*` attributes and the W3C `traceparent` of the
    /// change), for consumers that read them there; kept only where the bus has headers
    /// ([`EventLog::keeps_headers`]), so nothing of ours depends on them: the payload
    /// carries the same.
    pub headers: Vec<(String, String)>,
}

impl NewRecord {
    /// A record without headers.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            headers: Vec::new(),
        }
    }
}

/// A record read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Partition it lives in.
    pub partition: u32,
    /// Its offset in the partition.
    pub offset: u64,
    /// Partitioning key.
    pub key: String,
    /// Payload.
    pub value: Vec<u8>,
    /// When it was appended, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Its headers (none where the bus keeps none).
    pub headers: Vec<(String, String)>,
}

/// A durable log partitioned by record key.
#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Number of partitions.
    fn partitions(&self) -> u32;
    /// Names this log for the offsets consumers store: two logs with the same identity
    /// hold the same records at the same offsets.
    fn identity(&self) -> String;
    /// Whether appended headers are stored and read back (Kafka, the embedded log); where
    /// not (Fluvio 0.50, whose records have no headers) they are dropped.
    fn keeps_headers(&self) -> bool {
        false
    }
    /// Appends records durably (acknowledged by the bus); returns each record's
    /// `(partition, offset)`. Records of one key keep their order.
    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<(u32, u64)>>;
    /// Records of `partition` from `offset` on, up to about `max_bytes` of payload (at
    /// least one record if any), waiting up to `max_wait` for the first one.
    ///
    /// Callers must not assume every offset is delivered: a client may skip records
    /// (Fluvio 0.50.1 at `max_bytes`), so a consumer checks that offsets are contiguous.
    async fn fetch(
        &self,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Vec<LogRecord>>;
    /// The offset the next record of `partition` will get.
    async fn end_offset(&self, partition: u32) -> Result<u64>;
    /// The first offset of `partition` still held: retention removes what is older, so a
    /// consumer reading the whole log starts here, not at 0.
    async fn start_offset(&self, _partition: u32) -> Result<u64> {
        Ok(0)
    }
    /// Succeeds when the log answers (for `/readyz`).
    async fn check_ready(&self) -> Result<()>;
}
