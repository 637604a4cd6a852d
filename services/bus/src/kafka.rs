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
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use stockflow_domain::partition_for_key;
use tokio::sync::Mutex;

use crate::port::{EventLog, LogRecord, NewRecord};
use crate::{BusError, Result};

mod security;
pub use security::{KafkaSecurity, SaslCredentials, SaslMechanism, SecurityProtocol};

/// Most records returned by one fetch, whatever `max_bytes` allows.
const MAX_FETCH_RECORDS: usize = 2000;

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

/// A topic as the admin calls found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    /// This call created it.
    Created,
    /// It existed with the expected partition count.
    Existed,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(BusError::Panicked)?
}

/// A client context that keeps the first errors librdkafka reported about the brokers, so
/// a failed start-up says *why* (authentication failed, certificate not trusted) instead
/// of only "metadata timed out". The first ones: later ones are summaries ("1/1 brokers
/// are down").
#[derive(Debug, Default)]
pub(crate) struct Diagnosed {
    errors: std::sync::Mutex<Vec<String>>,
}

impl Diagnosed {
    const KEPT: usize = 3;

    fn last_error(&self) -> Option<String> {
        let errors = self.errors.lock().ok()?;
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    fn remember(&self, message: &str) {
        if let Ok(mut errors) = self.errors.lock()
            && errors.len() < Self::KEPT
            && !errors.iter().any(|e| e == message)
        {
            errors.push(message.to_string());
        }
    }
}

// Never produces: only here for a client whose events `poll` serves.
impl rdkafka::producer::ProducerContext for Diagnosed {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl ClientContext for Diagnosed {
    // librdkafka reports a failed handshake or authentication as a log line from its
    // broker thread (facility FAIL), before any request fails.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error | L::Warning => {
                tracing::warn!(facility = fac, "librdkafka: {message}");
                self.remember(message);
            }
            L::Notice | L::Info => tracing::info!(facility = fac, "librdkafka: {message}"),
            L::Debug => tracing::debug!(facility = fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "Kafka client error");
        self.remember(reason);
    }
}

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
    readers: Vec<Mutex<Option<Reader>>>,
}

impl KafkaEventLog {
    /// The partition's low and high watermarks: its first offset held and the offset its
    /// next record will get.
    async fn watermarks(&self, partition: u32) -> Result<(u64, u64)> {
        let producer = self.producer.clone();
        let topic = self.config.topic.clone();
        let timeout = self.config.request_timeout;
        blocking(move || {
            let (low, high) = producer
                .client()
                .fetch_watermarks(&topic, partition as i32, timeout)
                .map_err(|e| BusError::kafka("read the partition's watermarks", e))?;
            Ok((
                u64::try_from(low).unwrap_or(0),
                u64::try_from(high).unwrap_or(0),
            ))
        })
        .await
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
        let readers = (0..config.partitions).map(|_| Mutex::new(None)).collect();
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
        let slot = self
            .readers
            .get(partition as usize)
            .ok_or(BusError::NoSuchPartition {
                partition,
                partitions: self.config.partitions,
            })?;
        let mut guard = slot.lock().await;
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
        let mut bytes = first.value.len();
        let mut out = vec![first];
        while bytes < max_bytes && out.len() < MAX_FETCH_RECORDS {
            match reader.consumer.recv().now_or_never() {
                Some(Ok(m)) => {
                    let r = to_record(partition, &m);
                    bytes += r.value.len();
                    out.push(r);
                }
                // An error after records: hand out what we have; the next fetch sees it.
                Some(Err(_)) | None => break,
            }
        }
        if let Some(last) = out.last() {
            reader.next = last.offset + 1;
        }
        Ok(out)
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
