//! The Fluvio adapter (client 0.50.1, servers 0.18.x), the design's default bus.
//!
//! - Producing: one topic producer whose partitioner is the project's own
//!   [`partition_for_key`] (the same function as Fluvio's default keyed partitioner, set
//!   explicitly so a change of default can never move SKUs), at-least-once delivery; an
//!   append waits for every record's partition and offset.
//! - Consuming: one stream per partition read, started at the offset asked for; a fetch at
//!   another offset starts a new stream there. The 0.50.1 client skips the rest of a batch
//!   when a fetch hits `max_bytes` (fluvio-community/fluvio#4627), so every fetch checks
//!   that offsets continue exactly and restarts its stream at the first missing one.
//! - The SPU answers a fetch with whole batches up to `max_bytes` and can cut the last one;
//!   a batch larger than `max_bytes` is never delivered at all. So producer batches are
//!   bounded ([`PRODUCER_BATCH_BYTES`]) and a consumer stream always asks for at least
//!   [`MIN_FETCH_BYTES`], which holds any batch of any event the API accepts.
//! - Admin: the topic is created when missing (if allowed) and its partition count checked.
//!   A partition's end offset comes from its last record, read from the SPU: the SC's
//!   partition status lags the SPU by seconds.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use fluvio::consumer::{ConsumerConfigExtBuilder, Record};
use fluvio::dataplane::link::ErrorCode;
use fluvio::{
    Fluvio, Offset, Partitioner, PartitionerConfig, TopicProducerConfigBuilder, TopicProducerPool,
};
use futures::{FutureExt, Stream, StreamExt};
use stockflow_domain::partition_for_key;

pub use crate::fetch::TopicState;
use crate::fetch::{Gathered, Readers};

mod admin;

use crate::port::{EventLog, LogRecord, NewRecord};
use crate::{BusError, Result};
use admin::{connect, ensure_topic_on, topic_partitions};
pub use admin::{delete_topic, ensure_topic};

/// Streams restarted within one fetch before it returns what it has.
const GAP_RETRIES: usize = 3;
/// Bytes the producer puts in one batch (a larger record gets a batch of its own).
pub const PRODUCER_BATCH_BYTES: usize = 16 * 1024;
/// The least a consumer stream asks for per fetch: more than a batch of the largest event
/// (request bodies are at most 64 KiB), so every fetch makes progress.
pub const MIN_FETCH_BYTES: i32 = 128 * 1024;

/// How to reach the cluster and which topic to use.
#[derive(Debug, Clone)]
pub struct FluvioConfig {
    /// The SC's public endpoint, `host:port`.
    pub endpoint: String,
    /// The region's topic.
    pub topic: String,
    /// Partitions the topic has (or is created with).
    pub partitions: u32,
    /// Replication factor of a topic this adapter creates.
    pub replication: u32,
    /// Create the topic when it is missing; otherwise a missing topic is a start-up error.
    pub create_topic: bool,
    /// Bytes a consumer stream asks the SPU for per fetch (at least [`MIN_FETCH_BYTES`]).
    pub max_fetch_bytes: i32,
    /// How long connecting and admin requests may take.
    pub request_timeout: Duration,
}

impl FluvioConfig {
    /// Defaults for a topic on the cluster at `endpoint`.
    pub fn new(endpoint: String, topic: String, partitions: u32) -> Self {
        Self {
            endpoint,
            topic,
            partitions,
            replication: 1,
            create_topic: true,
            max_fetch_bytes: 1 << 20,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// The Fluvio client's error, shown with its whole chain of causes (the client wraps
/// the cause that matters, a refused connection or a missing topic, in several contexts).
#[derive(Debug)]
struct FluvioFailure(anyhow::Error);

impl std::fmt::Display for FluvioFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for FluvioFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

fn failed(what: &str, e: anyhow::Error) -> BusError {
    BusError::fluvio(what, FluvioFailure(e))
}

async fn within<T>(
    config: &FluvioConfig,
    what: &str,
    f: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(config.request_timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(failed(what, e)),
        Err(_) => Err(BusError::TimedOut {
            what: format!("{what} (Fluvio at {})", config.endpoint),
            after: config.request_timeout,
        }),
    }
}

/// The project's partitioner, so a SKU's partition never depends on the client's default.
#[derive(Debug)]
struct SkuPartitioner;

impl Partitioner for SkuPartitioner {
    fn partition(&self, config: &PartitionerConfig, key: Option<&[u8]>, _value: &[u8]) -> u32 {
        partition_for_key(key.unwrap_or_default(), config.partition_count)
    }
}

type RecordStream = Pin<Box<dyn Stream<Item = std::result::Result<Record, ErrorCode>> + Send>>;

/// A stream positioned in one partition, and the offset its next record has.
struct Reader {
    stream: RecordStream,
    next: u64,
}

/// The region's topic on a Fluvio cluster.
pub struct FluvioEventLog {
    config: FluvioConfig,
    client: Arc<Fluvio>,
    producer: TopicProducerPool,
    readers: Readers<Reader>,
    /// Skips of the client this log noticed and re-read.
    skips: AtomicU64,
}

impl FluvioEventLog {
    /// Connects, checks (or creates) the topic and starts the producer.
    pub async fn connect(config: FluvioConfig) -> Result<Self> {
        if config.partitions == 0 {
            return Err(BusError::Settings {
                setting: "partitions",
                reason: "a topic needs at least one partition".into(),
            });
        }
        let client = connect(&config).await?;
        ensure_topic_on(&client, &config).await?;
        let producer_config = TopicProducerConfigBuilder::default()
            .partitioner(Arc::new(SkuPartitioner))
            .batch_size(PRODUCER_BATCH_BYTES)
            .linger(Duration::from_millis(1))
            .build()
            .map_err(|e| BusError::fluvio("Fluvio producer settings", e))?;
        let producer = within(
            &config,
            "start the producer",
            client.topic_producer_with_config(config.topic.clone(), producer_config),
        )
        .await?;
        let readers = Readers::new(config.partitions);
        Ok(Self {
            config,
            client: Arc::new(client),
            producer,
            readers,
            skips: AtomicU64::new(0),
        })
    }

    /// How often the client skipped records and this log re-read them (the 0.50.1 defect).
    pub fn skips_recovered(&self) -> u64 {
        self.skips.load(Ordering::Relaxed)
    }

    fn skipped(&self, partition: u32, expected: u64, got: u64) {
        tracing::warn!(
            partition,
            expected,
            got,
            "Fluvio skipped records; re-reading"
        );
        metrics::counter!("stockflow_bus_fluvio_skips_total").increment(1);
        self.skips.fetch_add(1, Ordering::Relaxed);
    }

    async fn stream_at(&self, partition: u32, offset: u64) -> Result<RecordStream> {
        let start = Offset::absolute(i64::try_from(offset).unwrap_or(i64::MAX))
            .map_err(|_| BusError::OffsetOutOfRange { offset })?;
        self.stream_from(partition, start, false).await
    }

    async fn stream_from(
        &self,
        partition: u32,
        start: Offset,
        only_existing: bool,
    ) -> Result<RecordStream> {
        let consumer = ConsumerConfigExtBuilder::default()
            .topic(self.config.topic.clone())
            .partition(partition)
            .offset_start(start)
            .max_bytes(self.config.max_fetch_bytes.max(MIN_FETCH_BYTES))
            .disable_continuous(only_existing)
            .build()
            .map_err(|e| BusError::fluvio("Fluvio consumer settings", e))?;
        let stream = within(
            &self.config,
            "start a consumer stream",
            self.client.consumer_with_config(consumer),
        )
        .await?;
        Ok(Box::pin(stream))
    }
}

fn to_record(partition: u32, r: &Record) -> LogRecord {
    LogRecord {
        partition,
        offset: u64::try_from(r.offset()).unwrap_or(0),
        key: r
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        value: r.value().to_vec(),
        timestamp_ms: r.timestamp(),
        // The 0.50 client reads and writes no record headers.
        headers: Vec::new(),
    }
}

#[async_trait]
impl EventLog for FluvioEventLog {
    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    fn identity(&self) -> String {
        format!("fluvio:{}", self.config.topic)
    }

    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<(u32, u64)>> {
        let mut outputs = Vec::with_capacity(records.len());
        for r in records {
            let output = self
                .producer
                .send(r.key.into_bytes(), r.value)
                .await
                .map_err(|e| failed("produce", e))?;
            outputs.push(output);
        }
        self.producer
            .flush()
            .await
            .map_err(|e| failed("flush the producer", e))?;
        let mut assigned = Vec::with_capacity(outputs.len());
        for output in outputs {
            let metadata = output
                .wait()
                .await
                .map_err(|e| BusError::fluvio("delivery", e))?;
            assigned.push((
                metadata.partition_id(),
                u64::try_from(metadata.offset()).unwrap_or(0),
            ));
        }
        Ok(assigned)
    }

    async fn fetch(
        &self,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<Vec<LogRecord>> {
        let mut guard = self.readers.lock(partition).await?;
        let deadline = tokio::time::Instant::now() + max_wait;
        for _ in 0..GAP_RETRIES {
            if guard.as_ref().is_none_or(|r| r.next != offset) {
                *guard = Some(Reader {
                    stream: self.stream_at(partition, offset).await?,
                    next: offset,
                });
            }
            let Some(reader) = guard.as_mut() else {
                return Ok(Vec::new());
            };
            let first = match tokio::time::timeout_at(deadline, reader.stream.next()).await {
                Err(_) => return Ok(Vec::new()),
                Ok(Some(Ok(r))) => to_record(partition, &r),
                Ok(Some(Err(code))) => {
                    *guard = None;
                    return Err(BusError::fluvio(
                        format!("reading partition {partition} of {}", self.config.topic),
                        code,
                    ));
                }
                Ok(None) => {
                    *guard = None;
                    return Err(BusError::StreamEnded { partition });
                }
            };
            if first.offset > offset {
                // The client skipped records: start a stream at the first missing one.
                self.skipped(partition, offset, first.offset);
                *guard = None;
                continue;
            }
            let mut out = Gathered::new(max_bytes);
            let mut expected = offset;
            let mut pending = Some(first);
            while let Some(record) = pending.take() {
                if record.offset < expected {
                    // Redelivered: already handed out.
                } else if record.offset > expected {
                    self.skipped(partition, expected, record.offset);
                    reader.next = u64::MAX;
                    break;
                } else {
                    expected += 1;
                    out.push(record);
                }
                if !out.has_room() {
                    break;
                }
                pending = match reader.stream.next().now_or_never() {
                    Some(Some(Ok(r))) => Some(to_record(partition, &r)),
                    _ => None,
                };
            }
            if reader.next != u64::MAX {
                reader.next = expected;
            }
            return Ok(out.into_records());
        }
        Ok(Vec::new())
    }

    async fn end_offset(&self, partition: u32) -> Result<u64> {
        if partition >= self.config.partitions {
            return Err(BusError::NoSuchPartition {
                partition,
                partitions: self.config.partitions,
            });
        }
        // The last record, if any, read from the SPU (the SC's status lags).
        let mut stream = self
            .stream_from(partition, Offset::from_end(1), true)
            .await?;
        match tokio::time::timeout(self.config.request_timeout, stream.next()).await {
            Ok(Some(Ok(last))) => Ok(u64::try_from(last.offset()).unwrap_or(0) + 1),
            Ok(None) => Ok(0),
            Ok(Some(Err(code))) => Err(BusError::fluvio("read the partition's end", code)),
            Err(_) => Err(BusError::TimedOut {
                what: format!("the end of partition {partition}"),
                after: self.config.request_timeout,
            }),
        }
    }

    async fn check_ready(&self) -> Result<()> {
        let mut config = self.config.clone();
        config.request_timeout = Duration::from_secs(2);
        match topic_partitions(&self.client, &config).await? {
            Some(_) => Ok(()),
            None => Err(BusError::TopicNotReady {
                topic: self.config.topic.clone(),
                state: "is not available".into(),
            }),
        }
    }
}
