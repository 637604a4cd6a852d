//! The Kafka adapter (Apache Kafka, Redpanda, managed Kafka) over librdkafka.
//!
//! - Producing: one idempotent producer (`acks=all`, `enable.idempotence=true`), so a
//!   retried send never duplicates or reorders records of a partition. Each record's
//!   partition is [`partition_for_key`] of its SKU, set explicitly: Kafka's own
//!   partitioner (murmur2) would put a SKU elsewhere than Fluvio or the embedded log.
//! - Consuming: one consumer per partition read, `assign()`ed at the offset asked for. No
//!   group membership and no commits: offsets live with the read models. A fetch at another
//!   offset than the reader's position re-assigns it there. `auto.offset.reset=error`, so an
//!   offset the broker no longer holds is an error, never a silent jump.
//! - Admin: the topic is created when missing (if allowed) and its partition count checked,
//!   because a different count would move SKUs between partitions.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use stockflow_domain::partition_for_key;

pub use crate::fetch::TopicState;
use crate::fetch::{Gathered, Readers};
use crate::port::{EventLog, LogRecord, NewRecord};
use crate::{BusError, Result};

mod admin;
mod diagnosed;
mod security;

pub use admin::{delete_topic, ensure_topic};
pub use security::{KafkaSecurity, SaslCredentials, SaslMechanism, SecurityProtocol};

/// How to reach the brokers and which topic to use.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// The region's topic.
    pub topic: String,
    /// Partitions the topic has (or is created with).
    pub partitions: u32,
    /// Replication factor of a topic this adapter creates.
    pub replication: u16,
    /// Create the topic when it is missing; otherwise a missing topic is a start-up error.
    pub create_topic: bool,
    /// Protocol, SASL credentials and CA.
    pub security: KafkaSecurity,
    /// Extra librdkafka settings (`linger.ms`, `client.id`, ...), applied last so they win.
    pub options: Vec<(String, String)>,
    /// How long admin and metadata requests may take.
    pub request_timeout: Duration,
}

impl KafkaConfig {
    /// Defaults for a topic on `brokers`.
    pub fn new(brokers: Vec<String>, topic: String, partitions: u32) -> Self {
        Self {
            brokers,
            topic,
            partitions,
            replication: 1,
            create_topic: true,
            security: KafkaSecurity::default(),
            options: Vec::new(),
            request_timeout: Duration::from_secs(10),
        }
    }

    /// The shared settings, then `role`'s, then the caller's options (which win).
    fn client_config(&self, role: &[(&str, &str)]) -> Result<ClientConfig> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            // Recover from a broker restart in about a second, not the default ~10 s.
            .set("reconnect.backoff.max.ms", "1000")
            .set("socket.keepalive.enable", "true");
        for (k, v) in self.security.settings()? {
            c.set(k, v);
        }
        for (k, v) in role {
            c.set(*k, *v);
        }
        for (k, v) in &self.options {
            c.set(k, v);
        }
        Ok(c)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(BusError::Panicked)?
}

/// How long, and how often, a read of watermarks waits for a partition's new leader.
const LEADER_WAIT: Duration = Duration::from_millis(250);
const LEADER_WAIT_TRIES: u32 = 40;

/// Whether `e` says the partition has no leader right now (it will have one shortly).
fn leader_moving(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(RDKafkaErrorCode::NotLeaderForPartition | RDKafkaErrorCode::LeaderNotAvailable)
    )
}

/// A consumer assigned to one partition, and the offset its next record has.
struct Reader {
    consumer: StreamConsumer,
    next: u64,
}

/// The region's topic on a Kafka cluster.
pub struct KafkaEventLog {
    config: KafkaConfig,
    producer: FutureProducer,
    /// One slot per partition: a reader is created when the partition is first fetched.
    readers: Readers<Reader>,
}

impl KafkaEventLog {
    /// The partition's low and high watermarks: its first offset held and the offset its
    /// next record will get.
    async fn watermarks(&self, partition: u32) -> Result<(u64, u64)> {
        let mut attempt = 0;
        loop {
            let producer = self.producer.clone();
            let topic = self.config.topic.clone();
            let timeout = self.config.request_timeout;
            let answer = blocking(move || {
                Ok(producer
                    .client()
                    .fetch_watermarks(&topic, partition as i32, timeout))
            })
            .await?;
            match answer {
                Ok((low, high)) => {
                    return Ok((
                        u64::try_from(low).unwrap_or(0),
                        u64::try_from(high).unwrap_or(0),
                    ));
                }
                // A partition between leaders (a topic just created, a broker restarting)
                // has one again within moments.
                Err(e) if leader_moving(&e) && attempt < LEADER_WAIT_TRIES => {
                    attempt += 1;
                    tokio::time::sleep(LEADER_WAIT).await;
                }
                Err(e) => return Err(BusError::kafka("read the partition's watermarks", e)),
            }
        }
    }

    /// Checks (or creates) the topic and starts the producer.
    pub async fn connect(config: KafkaConfig) -> Result<Self> {
        if config.brokers.is_empty() {
            return Err(BusError::Settings {
                setting: "brokers",
                reason: "no Kafka brokers given".into(),
            });
        }
        if config.partitions == 0 {
            return Err(BusError::Settings {
                setting: "partitions",
                reason: "a topic needs at least one partition".into(),
            });
        }
        ensure_topic(&config).await?;
        let producer: FutureProducer = config
            .client_config(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                // A millisecond of lingering lets one publish batch share produce requests.
                ("linger.ms", "1"),
                ("message.timeout.ms", "30000"),
                ("queue.buffering.max.messages", "200000"),
            ])?
            .create()
            .map_err(|e| BusError::kafka("Kafka producer settings", e))?;
        let readers = Readers::new(config.partitions);
        Ok(Self {
            config,
            producer,
            readers,
        })
    }

    fn reader(&self, partition: u32, offset: u64) -> Result<StreamConsumer> {
        let group = format!("stockflow-reader-{}", self.config.topic);
        let consumer: StreamConsumer = self
            .config
            .client_config(&[
                // Required by librdkafka for a consumer, never used: nothing joins or commits.
                ("group.id", &group),
                ("enable.auto.commit", "false"),
                ("enable.auto.offset.store", "false"),
                ("auto.offset.reset", "error"),
                ("enable.partition.eof", "false"),
                ("fetch.wait.max.ms", "100"),
            ])?
            .create()
            .map_err(|e| BusError::kafka("Kafka consumer settings", e))?;
        assign(&consumer, &self.config.topic, partition, offset)?;
        Ok(consumer)
    }
}

fn assign(consumer: &StreamConsumer, topic: &str, partition: u32, offset: u64) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    let offset = i64::try_from(offset).map_err(|_| BusError::OffsetOutOfRange { offset })?;
    tpl.add_partition_offset(topic, partition as i32, Offset::Offset(offset))
        .map_err(|e| BusError::kafka("assign partition", e))?;
    consumer
        .assign(&tpl)
        .map_err(|e| BusError::kafka("assign partition", e))
}

fn to_record(partition: u32, m: &impl Message) -> LogRecord {
    LogRecord {
        partition,
        offset: u64::try_from(m.offset()).unwrap_or(0),
        key: m
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default(),
        value: m.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = h.value.map(String::from_utf8_lossy).unwrap_or_default();
                        (h.key.to_string(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

fn to_headers(headers: &[(String, String)]) -> Option<OwnedHeaders> {
    (!headers.is_empty()).then(|| {
        headers.iter().fold(
            OwnedHeaders::new_with_capacity(headers.len()),
            |all, (key, value)| {
                all.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            },
        )
    })
}

#[async_trait]
impl EventLog for KafkaEventLog {
    fn partitions(&self) -> u32 {
        self.config.partitions
    }

    fn identity(&self) -> String {
        format!("kafka:{}", self.config.topic)
    }

    fn keeps_headers(&self) -> bool {
        true
    }

    async fn append(&self, records: Vec<NewRecord>) -> Result<Vec<(u32, u64)>> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in &records {
            let partition = partition_for_key(r.key.as_bytes(), self.config.partitions);
            let mut record = FutureRecord::to(&self.config.topic)
                .partition(partition as i32)
                .key(r.key.as_str())
                .payload(r.value.as_slice());
            if let Some(headers) = to_headers(&r.headers) {
                record = record.headers(headers);
            }
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    // The local queue is full: wait for deliveries to drain it.
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => return Err(BusError::kafka("produce", e)),
                }
            }
        }
        let mut assigned = Vec::with_capacity(deliveries.len());
        for delivery in futures::future::join_all(deliveries).await {
            match delivery {
                Ok(Ok(d)) => assigned.push((
                    u32::try_from(d.partition).unwrap_or(0),
                    u64::try_from(d.offset).unwrap_or(0),
                )),
                Ok(Err((e, _))) => return Err(BusError::kafka("delivery", e)),
                Err(_) => {
                    return Err(BusError::DeliveryDropped);
                }
            }
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
        match guard.as_mut() {
            Some(reader) if reader.next == offset => {}
            Some(reader) => {
                assign(&reader.consumer, &self.config.topic, partition, offset)?;
                reader.next = offset;
            }
            None => {
                *guard = Some(Reader {
                    consumer: self.reader(partition, offset)?,
                    next: offset,
                });
            }
        }
        let Some(reader) = guard.as_mut() else {
            return Ok(Vec::new());
        };
        let first = match tokio::time::timeout(max_wait, reader.consumer.recv()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(Ok(m)) => to_record(partition, &m),
            Ok(Err(e)) => {
                // Start over at the next fetch with a fresh assignment.
                *guard = None;
                return Err(BusError::kafka(
                    format!(
                        "reading partition {partition} of {} at offset {offset}",
                        self.config.topic
                    ),
                    e,
                ));
            }
        };
        let mut out = Gathered::new(max_bytes);
        out.push(first);
        while out.has_room() {
            match reader.consumer.recv().now_or_never() {
                Some(Ok(m)) => out.push(to_record(partition, &m)),
                // An error after records: hand out what we have; the next fetch sees it.
                Some(Err(_)) | None => break,
            }
        }
        if let Some(next) = out.next_offset() {
            reader.next = next;
        }
        Ok(out.into_records())
    }

    async fn end_offset(&self, partition: u32) -> Result<u64> {
        Ok(self.watermarks(partition).await?.1)
    }

    async fn start_offset(&self, partition: u32) -> Result<u64> {
        Ok(self.watermarks(partition).await?.0)
    }

    async fn check_ready(&self) -> Result<()> {
        let producer = self.producer.clone();
        let topic = self.config.topic.clone();
        blocking(move || {
            let metadata = producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(2))
                .map_err(|e| BusError::kafka("Kafka metadata", e))?;
            let known: HashMap<&str, usize> = metadata
                .topics()
                .iter()
                .filter(|t| t.error().is_none())
                .map(|t| (t.name(), t.partitions().len()))
                .collect();
            if known.contains_key(topic.as_str()) {
                Ok(())
            } else {
                Err(BusError::TopicNotReady {
                    topic,
                    state: "is not available".into(),
                })
            }
        })
        .await
    }
}
